//! The `interview-webhooks` binary as an operator uses it: `serve`, `migrate`, `api-keys`.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::common::{Backend, SETTINGS_PATH, TestDatabase, TestServer};

both_backends!(
    serve_bootstraps_once_and_stops_on_sigterm,
    api_keys_commands
);

const BIN: &str = env!("CARGO_BIN_EXE_interview-webhooks");

/// Runs the binary to completion; returns (success, stdout, stderr).
async fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("INTERVIEW_WEBHOOKS_DATABASE_URL")
        .kill_on_drop(true)
        .output()
        .await
        .expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn looks_like_key(s: &str) -> bool {
    s.starts_with("iwk_") && s.len() > 40 && !s.contains(char::is_whitespace)
}

/// A `serve` child on ephemeral ports, with the stdout it printed and its REST address,
/// read from the `serving` log line.
struct Serve {
    child: Child,
    stdout: String,
    stderr: String,
    http_addr: String,
}

async fn serve(database_url: &str) -> Serve {
    let mut child = Command::new(BIN)
        .args(["serve", "--database-url", database_url])
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("serve starts");

    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    let http_addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            seen.push_str(&line);
            seen.push('\n');
            if let Some(addr) = field(&line, "http.addr=") {
                return addr;
            }
        }
        panic!("serve exited before serving: {seen}");
    })
    .await
    .expect("serve logged its addresses");
    // Keep draining stderr so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });

    // Whatever serve prints on stdout comes before it serves.
    let mut stdout = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_millis(200), out.next_line()).await
    {
        stdout.push_str(&line);
        stdout.push('\n');
    }
    Serve {
        child,
        stdout,
        stderr: seen,
        http_addr,
    }
}

fn field(line: &str, name: &str) -> Option<String> {
    let start = line.find(name)? + name.len();
    Some(
        line[start..]
            .split_whitespace()
            .next()?
            .trim_end_matches(',')
            .to_owned(),
    )
}

impl Serve {
    /// SIGTERM, then the exit status.
    async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("still running");
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .unwrap();
        assert!(sent.success());
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("serve stops after SIGTERM")
            .unwrap()
    }
}

async fn get_status(http_addr: &str, key: &str) -> u16 {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    client
        .get(format!(
            "http://{http_addr}{SETTINGS_PATH}?ai_interview_id=1"
        ))
        .header("apiKey", key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn serve_bootstraps_once_and_stops_on_sigterm(backend: Backend) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = TestDatabase::create(backend).await;

    let first = serve(&db.url).await;
    let key = first.stdout.trim().to_owned();
    assert!(
        looks_like_key(&key),
        "stdout is not the key alone: {:?}",
        first.stdout
    );
    assert!(
        first.stderr.contains("will not be shown again"),
        "{}",
        first.stderr
    );
    assert!(!first.stderr.contains(&key), "the key was logged");
    assert_eq!(
        get_status(&first.http_addr, &key).await,
        404,
        "the key works"
    );
    assert_eq!(get_status(&first.http_addr, "iwk_nope").await, 401);
    assert!(first.terminate().await.success(), "SIGTERM is a clean exit");

    let second = serve(&db.url).await;
    assert_eq!(second.stdout, "", "a second serve must not print a key");
    assert_eq!(
        get_status(&second.http_addr, &key).await,
        404,
        "the key still works"
    );
    assert!(second.terminate().await.success());
}

async fn api_keys_commands(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let url = srv.database_url.as_str();

    let (ok, stdout, stderr) = cli(&[
        "api-keys",
        "create",
        "--account",
        "acme",
        "--database-url",
        url,
    ])
    .await;
    assert!(ok, "{stderr}");
    let key = stdout.trim_end_matches('\n');
    assert!(
        looks_like_key(key),
        "stdout is not the key alone: {stdout:?}"
    );
    assert_eq!(
        srv.get_as(key, 1).await.status,
        404,
        "the new key authenticates"
    );
    let key_id = key.split('_').nth(1).unwrap();
    let bootstrap_id = srv.api_key.split('_').nth(1).unwrap();

    let (ok, stdout, stderr) = cli(&["api-keys", "list", "--database-url", url]).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(key_id) && stdout.contains("acme"),
        "{stdout}"
    );
    assert!(
        stdout.contains(bootstrap_id) && stdout.contains("default"),
        "{stdout}"
    );
    let secret = &key[key.len() - 20..];
    assert!(!stdout.contains(secret), "list shows a secret: {stdout}");

    let (ok, stdout, _) = cli(&[
        "api-keys",
        "list",
        "--account",
        "acme",
        "--database-url",
        url,
    ])
    .await;
    assert!(ok);
    assert!(
        stdout.contains(key_id) && !stdout.contains(bootstrap_id),
        "{stdout}"
    );

    // Revoked before its first use (a key already in use is trusted for a few more seconds).
    let (ok, fresh, _) = cli(&[
        "api-keys",
        "create",
        "--account",
        "acme",
        "--database-url",
        url,
    ])
    .await;
    assert!(ok);
    let fresh = fresh.trim();
    let fresh_id = fresh.split('_').nth(1).unwrap();
    let (ok, _, stderr) = cli(&["api-keys", "revoke", fresh_id, "--database-url", url]).await;
    assert!(ok, "{stderr}");
    assert_eq!(
        srv.get_as(fresh, 1).await.status,
        401,
        "a revoked key is refused"
    );
    let (ok, _, _) = cli(&["api-keys", "revoke", fresh_id, "--database-url", url]).await;
    assert!(!ok, "revoking twice is an error");

    let (ok, _, stderr) = cli(&["migrate", "--database-url", url]).await;
    assert!(ok, "migrate on a migrated database: {stderr}");
}
