//! The legacy REST contract (`put-ai-interview-webhooks.rst`) as a caller sees it.

use diesel::prelude::*;
use interview_webhooks::pb;
use serde_json::{Value, json};

use crate::common::{Backend, PUT_SUCCESS, Reply, SETTINGS_PATH, TestServer};

both_backends!(
    document_examples,
    get_data_is_a_put_body,
    partial_updates,
    url_required_only_when_enabled,
    masked_secret_keeps_the_stored_secret,
    switching_auth_type_drops_the_other_secrets,
    interview_id_forms,
    unauthenticated,
    other_accounts_interviews_are_not_found,
    bad_inputs_change_nothing,
    oversized_bodies,
    get_errors,
    healthz,
    healthz_fails_when_the_database_takes_no_writes,
);

/// The three bodies of the document, verbatim.
const DOC_FULL: &str = r#"{
  "webhooks": {
    "start": { "status": true, "url": "https://example.com/webhook/start" },
    "submission": { "status": true, "url": "https://example.com/webhook/submission" },
    "auth": {
      "type": "basic",
      "basic": { "username": "user", "password": "pass" }
    }
  }
}"#;

const DOC_APIKEY: &str = r#"{
  "webhooks": {
    "submission": { "status": true, "url": "https://example.com/webhook/submission" },
    "auth": {
      "type": "apikey",
      "apikey": { "key": "X-Webhook-Key", "value": "my-secret-key" }
    }
  }
}"#;

const DOC_BASIC: &str = r#"{
  "webhooks": {
    "start": { "status": true, "url": "https://example.com/webhook/start" },
    "auth": {
      "type": "basic",
      "basic": { "username": "webhook-user", "password": "webhook-pass" }
    }
  }
}"#;

/// A document body with `ai_interview_id` added at the top level, as the document's
/// parameter table lists it.
fn with_id(body: &str, id: i64) -> String {
    let mut json: Value = serde_json::from_str(body).unwrap();
    json.as_object_mut()
        .unwrap()
        .insert("ai_interview_id".to_owned(), json!(id));
    json.to_string()
}

#[track_caller]
fn assert_success(reply: &Reply) {
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, PUT_SUCCESS),
        "expected the documented success answer"
    );
}

async fn put_ok(srv: &TestServer, body: &str) {
    let reply = srv.put(body).await;
    assert_success(&reply);
}

/// The auth columns of the bootstrap account's row for one interview, read straight from the
/// database: `(auth_type, apikey_key, apikey_value, basic_username, basic_password)`.
pub type AuthColumns = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

pub async fn auth_columns(srv: &TestServer, ai_interview_id: i64) -> AuthColumns {
    use interview_webhooks::storage::schema::accounts;
    use interview_webhooks::storage::schema::webhook_settings::dsl as ws;
    let mut rows: Vec<AuthColumns> = srv
        .db(move |conn| {
            ws::webhook_settings
                .inner_join(accounts::table)
                .filter(accounts::name.eq(interview_webhooks::server::BOOTSTRAP_ACCOUNT))
                .filter(ws::ai_interview_id.eq(ai_interview_id))
                .select((
                    ws::auth_type,
                    ws::apikey_key,
                    ws::apikey_value,
                    ws::basic_username,
                    ws::basic_password,
                ))
                .load(conn)
                .unwrap()
        })
        .await;
    assert_eq!(rows.len(), 1, "one row for interview {ai_interview_id}");
    rows.pop().unwrap()
}

fn some(s: &str) -> Option<String> {
    Some(s.to_owned())
}

/// What a caller can observe of one interview: the REST GET and the gRPC message, whose
/// `update_time` moves on every stored change.
async fn snapshot(srv: &TestServer, id: i64) -> (Reply, Result<pb::InterviewWebhooks, String>) {
    let rest = srv.get(id).await;
    let grpc = srv
        .grpc()
        .await
        .get_webhooks(pb::GetWebhooksRequest {
            ai_interview_id: id,
        })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| format!("{:?}", s.code()));
    (rest, grpc)
}

#[track_caller]
fn assert_same(
    before: &(Reply, Result<pb::InterviewWebhooks, String>),
    after: &(Reply, Result<pb::InterviewWebhooks, String>),
    case: &str,
) {
    assert_eq!(
        (before.0.status, &before.0.body),
        (after.0.status, &after.0.body),
        "{case}: the REST GET changed"
    );
    assert_eq!(before.1, after.1, "{case}: the stored settings changed");
}

async fn document_examples(backend: Backend) {
    let srv = TestServer::start(backend).await;

    put_ok(&srv, &with_id(DOC_FULL, 1)).await;
    assert_eq!(
        srv.get_data(1).await,
        json!({
            "ai_interview_id": 1,
            "webhooks": {
                "start": {"status": true, "url": "https://example.com/webhook/start"},
                "submission": {"status": true, "url": "https://example.com/webhook/submission"},
                "auth": {
                    "type": "basic",
                    "status": true,
                    "basic": {"username": "user", "password": "********"}
                }
            }
        })
    );

    put_ok(&srv, &with_id(DOC_APIKEY, 2)).await;
    assert_eq!(
        srv.get_data(2).await,
        json!({
            "ai_interview_id": 2,
            "webhooks": {
                "submission": {"status": true, "url": "https://example.com/webhook/submission"},
                "auth": {
                    "type": "apikey",
                    "status": true,
                    "apikey": {"key": "X-Webhook-Key", "value": "********"}
                }
            }
        })
    );

    put_ok(&srv, &with_id(DOC_BASIC, 3)).await;
    assert_eq!(
        srv.get_data(3).await,
        json!({
            "ai_interview_id": 3,
            "webhooks": {
                "start": {"status": true, "url": "https://example.com/webhook/start"},
                "auth": {
                    "type": "basic",
                    "status": true,
                    "basic": {"username": "webhook-user", "password": "********"}
                }
            }
        })
    );

    // The secrets were stored as sent, and no response carried them.
    assert_eq!(auth_columns(&srv, 1).await.4, some("pass"));
    assert_eq!(auth_columns(&srv, 2).await.2, some("my-secret-key"));
    assert_eq!(auth_columns(&srv, 3).await.4, some("webhook-pass"));
    for id in 1..=3 {
        let reply = srv.get(id).await;
        for secret in ["\"pass\"", "my-secret-key", "webhook-pass"] {
            assert!(
                !reply.body.contains(secret),
                "GET leaked a secret: {}",
                reply.body
            );
        }
    }
}

async fn get_data_is_a_put_body(backend: Backend) {
    let srv = TestServer::start(backend).await;
    put_ok(&srv, &with_id(DOC_FULL, 10)).await;
    put_ok(&srv, &with_id(DOC_APIKEY, 11)).await;

    for id in [10, 11] {
        let before = snapshot(&srv, id).await;
        let data = srv.get_data(id).await;

        // Sent back as it came, masks included: accepted, and the settings read the same.
        put_ok(&srv, &data.to_string()).await;
        let after = snapshot(&srv, id).await;
        assert_eq!(
            before.0.body, after.0.body,
            "a GET's data sent back changed the settings"
        );
    }
    assert_eq!(auth_columns(&srv, 10).await.4, some("pass"));
    assert_eq!(auth_columns(&srv, 11).await.2, some("my-secret-key"));
}

async fn partial_updates(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let start = json!({"status": true, "url": "https://example.com/start"});
    let submission = json!({"status": true, "url": "https://example.com/submission"});

    put_ok(
        &srv,
        r#"{"ai_interview_id": 7, "webhooks": {"start": {"status": true, "url": "https://example.com/start"}}}"#,
    )
    .await;
    assert_eq!(srv.get_data(7).await["webhooks"], json!({"start": start}));

    put_ok(
        &srv,
        r#"{"ai_interview_id": 7, "webhooks": {"submission": {"status": true, "url": "https://example.com/submission"}}}"#,
    )
    .await;
    assert_eq!(
        srv.get_data(7).await["webhooks"],
        json!({"start": start, "submission": submission})
    );

    put_ok(
        &srv,
        r#"{"ai_interview_id": 7, "webhooks": {"auth": {"type": "apikey", "apikey": {"key": "X-Key", "value": "k1"}}}}"#,
    )
    .await;
    let auth =
        json!({"type": "apikey", "status": true, "apikey": {"key": "X-Key", "value": "********"}});
    assert_eq!(
        srv.get_data(7).await["webhooks"],
        json!({"start": start, "submission": submission, "auth": auth})
    );

    // A webhook update without `auth` keeps the stored auth.
    put_ok(
        &srv,
        r#"{"ai_interview_id": 7, "webhooks": {"start": {"status": true, "url": "https://example.com/start2"}}}"#,
    )
    .await;
    let start2 = json!({"status": true, "url": "https://example.com/start2"});
    assert_eq!(
        srv.get_data(7).await["webhooks"],
        json!({"start": start2, "submission": submission, "auth": auth})
    );
    assert_eq!(auth_columns(&srv, 7).await.2, some("k1"));

    // `auth.status` false keeps the credentials but switches them off.
    put_ok(
        &srv,
        r#"{"ai_interview_id": 7, "webhooks": {"auth": {"type": "apikey", "status": false, "apikey": {"key": "X-Key", "value": "********"}}}}"#,
    )
    .await;
    assert_eq!(srv.get_data(7).await["webhooks"]["auth"]["status"], false);
    assert_eq!(auth_columns(&srv, 7).await.2, some("k1"));

    // `"auth": null` removes the auth, keeps the webhooks, and leaves no secret behind.
    put_ok(
        &srv,
        r#"{"ai_interview_id": 7, "webhooks": {"auth": null}}"#,
    )
    .await;
    assert_eq!(
        srv.get_data(7).await["webhooks"],
        json!({"start": start2, "submission": submission})
    );
    assert_eq!(auth_columns(&srv, 7).await, (None, None, None, None, None));

    // Disabling without a URL keeps the stored URL; enabling again without one reuses it.
    put_ok(
        &srv,
        r#"{"ai_interview_id": 7, "webhooks": {"start": {"status": false}}}"#,
    )
    .await;
    assert_eq!(
        srv.get_data(7).await["webhooks"]["start"],
        json!({"status": false, "url": "https://example.com/start2"})
    );
    put_ok(
        &srv,
        r#"{"ai_interview_id": 7, "webhooks": {"start": {"status": true}}}"#,
    )
    .await;
    assert_eq!(srv.get_data(7).await["webhooks"]["start"], start2);
}

async fn url_required_only_when_enabled(backend: Backend) {
    let srv = TestServer::start(backend).await;

    let reply = srv
        .put(r#"{"ai_interview_id": 8, "webhooks": {"start": {"status": true}}}"#)
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.error_fields(), ["webhooks.start.url"]);
    assert_eq!(
        srv.get(8).await.status,
        404,
        "a refused update created settings"
    );

    let reply = srv
        .put(r#"{"ai_interview_id": 8, "webhooks": {"submission": {"status": true, "url": ""}}}"#)
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.error_fields(), ["webhooks.submission.url"]);

    // `status` is required whenever a webhook object is sent.
    let reply = srv
        .put(r#"{"ai_interview_id": 8, "webhooks": {"start": {"url": "https://example.com/s"}}}"#)
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.error_fields(), ["webhooks.start.status"]);

    // A disabled webhook needs no URL.
    put_ok(
        &srv,
        r#"{"ai_interview_id": 8, "webhooks": {"start": {"status": false}}}"#,
    )
    .await;
    assert_eq!(
        srv.get_data(8).await["webhooks"],
        json!({"start": {"status": false}})
    );
}

async fn masked_secret_keeps_the_stored_secret(backend: Backend) {
    let srv = TestServer::start(backend).await;

    put_ok(&srv, &with_id(DOC_APIKEY, 20)).await;
    put_ok(
        &srv,
        r#"{"ai_interview_id": 20, "webhooks": {"auth": {"type": "apikey", "apikey": {"key": "X-Renamed", "value": "********"}}}}"#,
    )
    .await;
    assert_eq!(
        auth_columns(&srv, 20).await,
        (
            some("apikey"),
            some("X-Renamed"),
            some("my-secret-key"),
            None,
            None
        )
    );

    put_ok(&srv, &with_id(DOC_BASIC, 21)).await;
    put_ok(
        &srv,
        r#"{"ai_interview_id": 21, "webhooks": {"auth": {"type": "basic", "basic": {"username": "renamed", "password": "********"}}}}"#,
    )
    .await;
    assert_eq!(
        auth_columns(&srv, 21).await,
        (
            some("basic"),
            None,
            None,
            some("renamed"),
            some("webhook-pass")
        )
    );

    // A new value replaces the stored one.
    put_ok(
        &srv,
        r#"{"ai_interview_id": 21, "webhooks": {"auth": {"type": "basic", "basic": {"username": "renamed", "password": "new-pass"}}}}"#,
    )
    .await;
    assert_eq!(auth_columns(&srv, 21).await.4, some("new-pass"));

    // The mask cannot stand for a secret that was never stored.
    let reply = srv
        .put(r#"{"ai_interview_id": 22, "webhooks": {"auth": {"type": "apikey", "apikey": {"key": "X-Key", "value": "********"}}}}"#)
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.error_fields(), ["webhooks.auth.apikey.value"]);
    assert_eq!(srv.get(22).await.status, 404);
}

async fn switching_auth_type_drops_the_other_secrets(backend: Backend) {
    let srv = TestServer::start(backend).await;

    put_ok(&srv, &with_id(DOC_FULL, 30)).await;
    assert_eq!(
        auth_columns(&srv, 30).await,
        (some("basic"), None, None, some("user"), some("pass"))
    );

    put_ok(
        &srv,
        r#"{"ai_interview_id": 30, "webhooks": {"auth": {"type": "apikey", "apikey": {"key": "X-Webhook-Key", "value": "k"}}}}"#,
    )
    .await;
    assert_eq!(
        auth_columns(&srv, 30).await,
        (some("apikey"), some("X-Webhook-Key"), some("k"), None, None)
    );

    // The basic password is gone for good: its mask no longer stands for anything.
    let before = snapshot(&srv, 30).await;
    let reply = srv
        .put(r#"{"ai_interview_id": 30, "webhooks": {"auth": {"type": "basic", "basic": {"username": "user", "password": "********"}}}}"#)
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.error_fields(), ["webhooks.auth.basic.password"]);
    assert_same(
        &before,
        &snapshot(&srv, 30).await,
        "masked password after a switch",
    );

    put_ok(
        &srv,
        r#"{"ai_interview_id": 30, "webhooks": {"auth": {"type": "basic", "basic": {"username": "u2", "password": "p2"}}}}"#,
    )
    .await;
    assert_eq!(
        auth_columns(&srv, 30).await,
        (some("basic"), None, None, some("u2"), some("p2"))
    );
}

async fn interview_id_forms(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let start = r#"{"start": {"status": true, "url": "https://example.com/s"}}"#;

    // In the query string only.
    let reply = srv
        .put_as(
            &srv.api_key,
            "?ai_interview_id=40",
            &format!(r#"{{"webhooks": {start}}}"#),
        )
        .await;
    assert_success(&reply);
    assert_eq!(srv.get_data(40).await["ai_interview_id"], 40);

    // As a string of digits (proto3 JSON for 64-bit integers).
    put_ok(
        &srv,
        &format!(r#"{{"ai_interview_id": "42", "webhooks": {start}}}"#),
    )
    .await;
    assert_eq!(srv.get_data(42).await["ai_interview_id"], 42);

    // In both places with the same value.
    let reply = srv
        .put_as(
            &srv.api_key,
            "?ai_interview_id=43",
            &format!(r#"{{"ai_interview_id": 43, "webhooks": {start}}}"#),
        )
        .await;
    assert_success(&reply);
    assert_eq!(srv.get_data(43).await["ai_interview_id"], 43);

    // The largest positive 64-bit integer round-trips.
    put_ok(
        &srv,
        &format!(r#"{{"ai_interview_id": 9223372036854775807, "webhooks": {start}}}"#),
    )
    .await;
    assert_eq!(
        srv.get_data(i64::MAX).await["ai_interview_id"],
        json!(i64::MAX)
    );

    // Without the trailing slash, and without a Content-Type (legacy scripts omit it).
    let request = srv
        .http
        .put(srv.url("/ai-interviews/settings/webhooks?ai_interview_id=44"))
        .header("apiKey", &srv.api_key)
        .body(format!(r#"{{"webhooks": {start}}}"#));
    assert_success(&srv.send(request).await);
    let request = srv
        .http
        .get(srv.url("/ai-interviews/settings/webhooks?ai_interview_id=44"))
        .header("apiKey", &srv.api_key);
    assert_eq!(srv.send(request).await.status, 200);
}

async fn unauthenticated(backend: Backend) {
    let srv = TestServer::start(backend).await;
    put_ok(&srv, &with_id(DOC_FULL, 50)).await;
    let before = snapshot(&srv, 50).await;

    let revoked = srv.create_key("default").await;
    let revoked_id = revoked.split('_').nth(1).unwrap().to_owned();
    let done = srv
        .db(move |conn| {
            interview_webhooks::storage::accounts::revoke_key(conn, &revoked_id, 1).unwrap()
        })
        .await;
    assert!(done, "the key was revoked");

    // The right key id with a wrong secret.
    let mut tampered = srv.api_key.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });

    let body = r#"{"ai_interview_id": 50, "webhooks": {"start": {"status": false}}}"#;
    for key in [
        None,
        Some(""),
        Some("nonsense"),
        Some(tampered.as_str()),
        Some(revoked.as_str()),
    ] {
        let mut put = srv
            .http
            .put(srv.url(SETTINGS_PATH))
            .header("Content-Type", "application/json")
            .body(body);
        let mut get = srv
            .http
            .get(srv.url(&format!("{SETTINGS_PATH}?ai_interview_id=50")));
        if let Some(key) = key {
            put = put.header("apiKey", key);
            get = get.header("apiKey", key);
        }
        for reply in [srv.send(put).await, srv.send(get).await] {
            assert_eq!(reply.status, 401, "key {key:?}: {}", reply.body);
            let json = reply.json();
            assert_eq!(json["status"], "error");
            assert!(
                json["message"].as_str().unwrap().contains("API key"),
                "{}",
                reply.body
            );
        }
    }
    assert_same(&before, &snapshot(&srv, 50).await, "unauthenticated PUT");
}

async fn other_accounts_interviews_are_not_found(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let other = srv.create_key("acme").await;
    put_ok(&srv, &with_id(DOC_FULL, 60)).await;
    let mine = snapshot(&srv, 60).await;

    let reply = srv.get_as(&other, 60).await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    assert_eq!(reply.json()["status"], "error");

    // The other account's PUT creates its own settings and leaves these alone.
    let reply = srv.put_as(&other, "", &with_id(DOC_APIKEY, 60)).await;
    assert_success(&reply);
    assert_same(&mine, &snapshot(&srv, 60).await, "another account's PUT");
    let theirs = srv.get_as(&other, 60).await.json();
    assert_eq!(theirs["data"]["webhooks"]["auth"]["type"], "apikey");
    assert!(theirs["data"]["webhooks"].get("start").is_none());
}

/// One bad request: what to send and the field the answer must name.
struct Bad {
    case: &'static str,
    method: reqwest::Method,
    query: &'static str,
    content_type: Option<&'static str>,
    body: String,
    status: u16,
    /// The field `errors` must name; `None` for answers about the request as a whole.
    field: Option<&'static str>,
}

fn bad(case: &'static str, body: impl Into<String>, field: &'static str) -> Bad {
    Bad {
        case,
        method: reqwest::Method::PUT,
        query: "",
        content_type: Some("application/json"),
        body: body.into(),
        status: 400,
        field: Some(field),
    }
}

/// A body for interview 70 with `webhooks` set to `webhooks`.
fn for_70(webhooks: &str) -> String {
    format!(r#"{{"ai_interview_id": 70, "webhooks": {webhooks}}}"#)
}

fn bad_inputs() -> Vec<Bad> {
    let start = |url: &str| {
        for_70(&format!(
            r#"{{"start": {{"status": true, "url": "{url}"}}}}"#
        ))
    };
    let auth = |auth: &str| for_70(&format!(r#"{{"auth": {auth}}}"#));
    let valid_start = r#"{"status": true, "url": "https://example.com/new"}"#;
    vec![
        bad("empty webhooks", for_70("{}"), "webhooks"),
        bad(
            "misspelt submission",
            for_70(r#"{"submision": {"status": true, "url": "https://example.com/s"}}"#),
            "webhooks.submision",
        ),
        bad(
            "status as a string",
            for_70(r#"{"start": {"status": "true", "url": "https://example.com/s"}}"#),
            "webhooks.start.status",
        ),
        bad(
            "ftp URL",
            start("ftp://example.com/x"),
            "webhooks.start.url",
        ),
        bad("not a URL", start("not a url"), "webhooks.start.url"),
        bad(
            "port 0",
            start("https://example.com:0/h"),
            "webhooks.start.url",
        ),
        bad(
            "a 5 KiB API key value",
            auth(&format!(
                r#"{{"type": "apikey", "apikey": {{"key": "X-K", "value": "{}"}}}}"#,
                "v".repeat(5000)
            )),
            "webhooks.auth.apikey.value",
        ),
        bad(
            "a 2 KiB password",
            auth(&format!(
                r#"{{"type": "basic", "basic": {{"username": "u", "password": "{}"}}}}"#,
                "p".repeat(2000)
            )),
            "webhooks.auth.basic.password",
        ),
        bad(
            "URL with user:password",
            start("https://user:pw@example.com/h"),
            "webhooks.start.url",
        ),
        bad(
            "loopback URL",
            start("http://127.0.0.1/h"),
            "webhooks.start.url",
        ),
        bad(
            "metadata URL",
            start("http://169.254.169.254/latest"),
            "webhooks.start.url",
        ),
        bad(
            "localhost URL",
            start("http://localhost:8080/h"),
            "webhooks.start.url",
        ),
        bad(
            "private IPv6 URL",
            start("http://[::ffff:10.0.0.1]/h"),
            "webhooks.start.url",
        ),
        bad(
            "URL over 2048 characters",
            start(&format!("https://example.com/{}", "a".repeat(2048))),
            "webhooks.start.url",
        ),
        bad(
            "auth without type",
            auth(r#"{"apikey": {"key": "X-Key", "value": "v"}}"#),
            "webhooks.auth.type",
        ),
        bad(
            "unknown auth type",
            auth(r#"{"type": "oauth"}"#),
            "webhooks.auth.type",
        ),
        bad(
            "apikey type with only basic",
            auth(r#"{"type": "apikey", "basic": {"username": "u", "password": "p"}}"#),
            "webhooks.auth.apikey",
        ),
        bad(
            "header name with spaces",
            auth(r#"{"type": "apikey", "apikey": {"key": "X Bad Key", "value": "v"}}"#),
            "webhooks.auth.apikey.key",
        ),
        bad(
            "header that frames the request",
            auth(r#"{"type": "apikey", "apikey": {"key": "Content-Length", "value": "5"}}"#),
            "webhooks.auth.apikey.key",
        ),
        bad(
            "header value with CRLF",
            auth(r#"{"type": "apikey", "apikey": {"key": "X-Key", "value": "a\r\nX-Evil: 1"}}"#),
            "webhooks.auth.apikey.value",
        ),
        bad(
            "username with a colon",
            auth(r#"{"type": "basic", "basic": {"username": "a:b", "password": "p"}}"#),
            "webhooks.auth.basic.username",
        ),
        bad(
            "empty username",
            auth(r#"{"type": "basic", "basic": {"username": "", "password": "p"}}"#),
            "webhooks.auth.basic.username",
        ),
        bad(
            "unknown auth field",
            auth(r#"{"type": "basic", "basic": {"username": "u", "pasword": "p"}}"#),
            "webhooks.auth.basic.pasword",
        ),
        bad(
            "missing interview id",
            format!(r#"{{"webhooks": {{"start": {valid_start}}}}}"#),
            "ai_interview_id",
        ),
        bad(
            "interview id not digits",
            format!(r#"{{"ai_interview_id": "abc", "webhooks": {{"start": {valid_start}}}}}"#),
            "ai_interview_id",
        ),
        bad(
            "interview id zero",
            format!(r#"{{"ai_interview_id": 0, "webhooks": {{"start": {valid_start}}}}}"#),
            "ai_interview_id",
        ),
        bad(
            "interview id negative",
            format!(r#"{{"ai_interview_id": -70, "webhooks": {{"start": {valid_start}}}}}"#),
            "ai_interview_id",
        ),
        bad(
            "interview id fractional",
            format!(r#"{{"ai_interview_id": 70.5, "webhooks": {{"start": {valid_start}}}}}"#),
            "ai_interview_id",
        ),
        bad(
            "interview id over 64 bits",
            format!(
                r#"{{"ai_interview_id": 9223372036854775808, "webhooks": {{"start": {valid_start}}}}}"#
            ),
            "ai_interview_id",
        ),
        bad(
            "malformed JSON",
            r#"{"ai_interview_id": 70, "webhooks": {"#,
            "body",
        ),
        bad("not an object", "[]", "body"),
        // serde would read these lists as structs, field by field.
        bad(
            "list as the body",
            format!(r#"[70, {{"start": {valid_start}}}]"#),
            "body",
        ),
        bad(
            "list as webhooks",
            for_70(&format!("[{valid_start}]")),
            "webhooks",
        ),
        bad(
            "list as a webhook",
            for_70(r#"{"start": [true, "https://example.com/new"]}"#),
            "webhooks.start",
        ),
        bad(
            "null webhook",
            for_70(&format!(
                r#"{{"start": null, "submission": {valid_start}}}"#
            )),
            "webhooks.start",
        ),
        bad("empty body", "", "body"),
        Bad {
            query: "?ai_interview_id=71",
            ..bad(
                "different ids in body and query",
                for_70(&format!(r#"{{"start": {valid_start}}}"#)),
                "ai_interview_id",
            )
        },
        Bad {
            query: "?ai_interview_id=abc",
            ..bad(
                "query id not digits",
                for_70(&format!(r#"{{"start": {valid_start}}}"#)),
                "ai_interview_id",
            )
        },
        // One good change beside a bad one: nothing of the request is applied.
        bad(
            "good start, bad submission",
            for_70(&format!(
                r#"{{"start": {valid_start}, "submission": {{"status": "yes"}}}}"#
            )),
            "webhooks.submission.status",
        ),
        bad(
            "good start, masked secret of a type never stored",
            for_70(&format!(
                r#"{{"start": {valid_start}, "auth": {{"type": "basic", "basic": {{"username": "u", "password": "********"}}}}}}"#
            )),
            "webhooks.auth.basic.password",
        ),
        Bad {
            content_type: Some("text/plain"),
            status: 415,
            field: None,
            ..bad(
                "text/plain",
                for_70(&format!(r#"{{"start": {valid_start}}}"#)),
                "",
            )
        },
        Bad {
            content_type: Some("application/x-www-form-urlencoded"),
            status: 415,
            field: None,
            ..bad("form body", "ai_interview_id=70", "")
        },
        Bad {
            method: reqwest::Method::POST,
            status: 405,
            field: None,
            ..bad(
                "POST",
                for_70(&format!(r#"{{"start": {valid_start}}}"#)),
                "",
            )
        },
        Bad {
            method: reqwest::Method::DELETE,
            query: "?ai_interview_id=70",
            status: 405,
            field: None,
            ..bad("DELETE", "", "")
        },
        Bad {
            method: reqwest::Method::PATCH,
            status: 405,
            field: None,
            ..bad(
                "PATCH",
                for_70(&format!(r#"{{"start": {valid_start}}}"#)),
                "",
            )
        },
    ]
}

async fn bad_inputs_change_nothing(backend: Backend) {
    let srv = TestServer::start(backend).await;
    put_ok(&srv, &with_id(DOC_APIKEY, 70)).await;
    put_ok(
        &srv,
        r#"{"ai_interview_id": 70, "webhooks": {"start": {"status": false}}}"#,
    )
    .await;

    let before = snapshot(&srv, 70).await;
    let untouched = snapshot(&srv, 71).await;
    assert_eq!(untouched.0.status, 404);

    for bad in bad_inputs() {
        let mut request = srv
            .http
            .request(
                bad.method.clone(),
                srv.url(&format!("{SETTINGS_PATH}{}", bad.query)),
            )
            .header("apiKey", &srv.api_key)
            .body(bad.body.clone());
        if let Some(content_type) = bad.content_type {
            request = request.header("Content-Type", content_type);
        }
        let reply = srv.send(request).await;

        assert_eq!(reply.status, bad.status, "{}: {}", bad.case, reply.body);
        let json = reply.json();
        assert_eq!(json["status"], "error", "{}: {}", bad.case, reply.body);
        assert!(
            !json["message"].as_str().unwrap_or("").is_empty(),
            "{}: no message",
            bad.case
        );
        if let Some(field) = bad.field {
            assert!(
                reply.error_fields().iter().any(|f| f == field),
                "{}: expected an error naming `{field}`: {}",
                bad.case,
                reply.body
            );
        }
        // Never echo a secret or a URL's credentials back.
        for secret in ["pw@", "X-Evil", "my-secret-key"] {
            assert!(
                !reply.body.contains(secret),
                "{}: echoed {secret}",
                bad.case
            );
        }

        assert_same(&before, &snapshot(&srv, 70).await, bad.case);
        assert_same(&untouched, &snapshot(&srv, 71).await, bad.case);
    }
    assert_eq!(auth_columns(&srv, 70).await.2, some("my-secret-key"));

    // Every problem is listed at once.
    let reply = srv
        .put(&for_70(
            r#"{"start": {"status": true, "url": "ftp://example.com/x"}, "auth": {"type": "oauth"}}"#,
        ))
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let mut fields = reply.error_fields();
    fields.sort();
    assert_eq!(fields, ["webhooks.auth.type", "webhooks.start.url"]);
    assert_same(&before, &snapshot(&srv, 70).await, "two problems");
}

/// Sends a raw HTTP/1.1 request and reads the answer, tolerating a server that answers (and
/// closes) before the whole body was written, as it may for an oversized body.
async fn raw_request(srv: &TestServer, head: String, body: Vec<u8>) -> Reply {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let stream = tokio::net::TcpStream::connect(srv.http_addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let write = tokio::spawn(async move {
        let _ = writer.write_all(head.as_bytes()).await;
        let _ = writer.write_all(&body).await;
        let _ = writer.flush().await;
        writer
    });

    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
        if let Some(reply) = parse_response(&answer) {
            write.abort();
            return reply;
        }
    }
    write.abort();
    parse_response(&answer)
        .unwrap_or_else(|| panic!("no complete answer: {}", String::from_utf8_lossy(&answer)))
}

/// A complete HTTP/1.1 answer with a `content-length`, or `None` while more is needed.
fn parse_response(bytes: &[u8]) -> Option<Reply> {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    (body.len() >= length).then(|| Reply {
        status,
        body: body[..length].to_owned(),
    })
}

async fn oversized_bodies(backend: Backend) {
    let srv = TestServer::start(backend).await;
    put_ok(&srv, &with_id(DOC_BASIC, 80)).await;
    let before = snapshot(&srv, 80).await;

    // A valid body that is simply too large: 1 MiB of URL path.
    let body = for_70("{}").replace(
        "{}",
        &format!(
            r#"{{"start": {{"status": true, "url": "https://example.com/{}"}}}}"#,
            "a".repeat(1024 * 1024)
        ),
    );
    let body = body.replace("\"ai_interview_id\": 70", "\"ai_interview_id\": 80");
    let host = srv.http_addr;
    let key = &srv.api_key;

    let head = format!(
        "PUT {SETTINGS_PATH} HTTP/1.1\r\nHost: {host}\r\napiKey: {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let reply = raw_request(&srv, head, body.clone().into_bytes()).await;
    assert_eq!(reply.status, 413, "declared length: {}", reply.body);
    assert_eq!(reply.json()["status"], "error");

    // The same body chunked, so the size is only known while reading.
    let mut chunked = Vec::new();
    for chunk in body.as_bytes().chunks(16 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = format!(
        "PUT {SETTINGS_PATH} HTTP/1.1\r\nHost: {host}\r\napiKey: {key}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let reply = raw_request(&srv, head, chunked).await;
    assert_eq!(reply.status, 413, "chunked: {}", reply.body);
    assert_eq!(reply.json()["status"], "error");

    assert_same(&before, &snapshot(&srv, 80).await, "oversized body");

    // Just under the limit still works (the URL limit is what refuses it then).
    let near = for_70(&format!(
        r#"{{"start": {{"status": true, "url": "https://example.com/"}}, "pad": "{}"}}"#,
        " ".repeat(60 * 1024)
    ));
    let reply = srv.put(&near).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.error_fields(), ["webhooks.pad"]);
}

async fn get_errors(backend: Backend) {
    let srv = TestServer::start(backend).await;

    let reply = srv.get(90).await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    assert_eq!(reply.json()["status"], "error");

    for query in [
        "",
        "?ai_interview_id=",
        "?ai_interview_id=abc",
        "?ai_interview_id=0",
    ] {
        let request = srv
            .http
            .get(srv.url(&format!("{SETTINGS_PATH}{query}")))
            .header("apiKey", &srv.api_key);
        let reply = srv.send(request).await;
        assert_eq!(reply.status, 400, "{query}: {}", reply.body);
        assert_eq!(reply.error_fields(), ["ai_interview_id"], "{query}");
    }

    let reply = srv.send(srv.http.get(srv.url("/no/such/path"))).await;
    assert_eq!(reply.status, 404, "{}", reply.body);
}

async fn healthz(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let reply = srv.send(srv.http.get(srv.url("/healthz"))).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["status"], "ok");
}

/// A database that still reads but refuses writes (here a trigger stands in for a full disk
/// or a read-only replica) must take the instance out of rotation.
async fn healthz_fails_when_the_database_takes_no_writes(backend: Backend) {
    use diesel::connection::SimpleConnection as _;

    let srv = TestServer::start(backend).await;
    let refuse = match backend {
        Backend::Sqlite => {
            "CREATE TRIGGER refuse_insert BEFORE INSERT ON health_probe \
             BEGIN SELECT RAISE(ABORT, 'simulated: no space left'); END; \
             CREATE TRIGGER refuse_update BEFORE UPDATE ON health_probe \
             BEGIN SELECT RAISE(ABORT, 'simulated: no space left'); END;"
        }
        Backend::Postgres => {
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'simulated: no space left'; END $$; \
             CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON health_probe \
             FOR EACH ROW EXECUTE FUNCTION refuse();"
        }
    };
    srv.db(move |conn| conn.batch_execute(refuse).unwrap())
        .await;
    // A write that succeeded within the last second stands for a new one.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    let reply = srv.send(srv.http.get(srv.url("/healthz"))).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.json()["status"], "error");
    // gRPC health follows within its 5 s period.
    assert!(
        grpc_serving_becomes(&srv, false).await,
        "gRPC health still SERVING"
    );

    // Once writes go through again, so does the check.
    let allow = match backend {
        Backend::Sqlite => "DROP TRIGGER refuse_insert; DROP TRIGGER refuse_update;",
        Backend::Postgres => "DROP TRIGGER refuse ON health_probe;",
    };
    srv.db(move |conn| conn.batch_execute(allow).unwrap()).await;
    let reply = srv.send(srv.http.get(srv.url("/healthz"))).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        grpc_serving_becomes(&srv, true).await,
        "gRPC health not SERVING again"
    );
}

/// Polls gRPC health for up to 12 s until SERVING is `serving`.
async fn grpc_serving_becomes(srv: &TestServer, serving: bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(12);
    while std::time::Instant::now() < deadline {
        if srv.grpc_ready().await == serving {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}
