//! The server binary as operators run it: killed with SIGKILL mid-burst, and two processes
//! sharing one PostgreSQL database.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use interview_webhooks::pb;
use interview_webhooks::pb::webhook_events_client::WebhookEventsClient;
use serde_json::json;
use tokio::sync::Mutex;
use tonic::transport::Channel;

use crate::common::{ApiKey, Backend, SETTINGS_PATH, TestDatabase};
use crate::receiver::Receiver;

/// A `serve` process; killed (SIGKILL) when dropped.
struct Server {
    child: Child,
    grpc: SocketAddr,
    http: SocketAddr,
    /// The bootstrap key, when this start created it.
    key: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

impl Server {
    async fn start(database_url: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (grpc, http) = (free_addr(), free_addr());
        let child = Command::new(env!("CARGO_BIN_EXE_interview-webhooks"))
            .args(["serve", "--database-url", database_url])
            .args([
                "--grpc-addr",
                &grpc.to_string(),
                "--http-addr",
                &http.to_string(),
            ])
            .args([
                "--allow-private-webhook-targets",
                "--retry-schedule",
                "200ms,500ms,1s,1s,2s",
            ])
            .args([
                "--delivery-timeout",
                "2s",
                "--delivery-connect-timeout",
                "1s",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the server binary");
        // Owned from here on, so that a failing test kills it too.
        let mut server = Server {
            child,
            grpc,
            http,
            key: None,
        };

        // The first line on stdout, if any, is the bootstrap key; it comes before serving.
        let stdout = server.child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });

        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = client.get(format!("http://{http}/healthz")).send().await;
            if matches!(ok, Ok(r) if r.status() == 200) {
                break;
            }
            assert!(
                server.child.try_wait().unwrap().is_none(),
                "the server exited while starting"
            );
            assert!(Instant::now() < deadline, "the server did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server.key = rx.try_recv().ok();
        server
    }

    async fn events(
        &self,
        key: &str,
    ) -> WebhookEventsClient<tonic::service::interceptor::InterceptedService<Channel, ApiKey>> {
        let channel = Channel::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
        WebhookEventsClient::with_interceptor(channel, ApiKey::new(Some(key)))
    }

    async fn configure(&self, key: &str, url: &str) {
        let (status, body) = put_start(self.http, key, 1, url).await;
        assert_eq!(status, 200, "{body}");
    }
}

fn publish_request(n: usize) -> pb::PublishEventRequest {
    let mut fields = std::collections::BTreeMap::new();
    fields.insert(
        "n".to_owned(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::NumberValue(n as f64)),
        },
    );
    pb::PublishEventRequest {
        ai_interview_id: 1,
        event: pb::Event::Start.into(),
        data: Some(prost_types::Struct { fields }),
        idempotency_key: Some(format!("event-{n}")),
    }
}

/// For each event number seen by the receiver, the webhook-ids it arrived with.
fn arrivals(receiver: &Receiver) -> HashMap<u64, HashSet<String>> {
    let mut seen: HashMap<u64, HashSet<String>> = HashMap::new();
    for r in receiver.received("/h") {
        let n = r.json()["data"]["n"].as_u64().expect("data.n");
        seen.entry(n)
            .or_default()
            .insert(r.header("webhook-id").to_owned());
    }
    seen
}

both_backends!(kill_9_mid_burst_loses_nothing);

async fn kill_9_mid_burst_loses_nothing(backend: Backend) {
    const EVENTS: usize = 200;
    let database = TestDatabase::create(backend).await;
    let receiver = Receiver::start().await;
    let first = Server::start(&database.url).await;
    let key = first
        .key
        .clone()
        .expect("a bootstrap key on the first start");
    first.configure(&key, &receiver.url("/h")).await;

    // Eight publishers share the burst; the server is killed once half is acknowledged.
    let acked = Arc::new(Mutex::new(HashMap::<usize, String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let first = Arc::new(std::sync::Mutex::new(Some(first)));
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let server = first.lock().unwrap().as_ref().unwrap().grpc;
        let (acked, count, key, first) = (acked.clone(), count.clone(), key.clone(), first.clone());
        tasks.push(tokio::spawn(async move {
            let channel = Channel::from_shared(format!("http://{server}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut client =
                WebhookEventsClient::with_interceptor(channel, ApiKey::new(Some(&key)));
            for n in (worker..EVENTS).step_by(8) {
                if let Ok(reply) = client.publish_event(publish_request(n)).await {
                    let id = reply.into_inner().delivery.expect("queued").id;
                    acked.lock().await.insert(n, id);
                    if count.fetch_add(1, Ordering::SeqCst) + 1 == EVENTS / 2 {
                        // SIGKILL: no shutdown, no flush, in-flight attempts cut off.
                        drop(first.lock().unwrap().take());
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    assert!(
        acked.len() >= EVENTS / 2 && acked.len() < EVENTS,
        "killed too late: {}",
        acked.len()
    );

    // Restart on the same database; publish again what was never acknowledged (the same
    // idempotency keys, so anything committed but unacknowledged is not queued twice).
    let second = Server::start(&database.url).await;
    assert!(
        second.key.is_none(),
        "a restart must not create another key"
    );
    let mut client = second.events(&key).await;
    for n in (0..EVENTS).filter(|n| !acked.contains_key(n)) {
        client
            .publish_event(publish_request(n))
            .await
            .expect("publish after restart");
    }

    let seen = receiver
        .wait_until(Duration::from_secs(90), || {
            let seen = arrivals(&receiver);
            (seen.len() == EVENTS).then_some(seen)
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "only {} of {EVENTS} events arrived",
                arrivals(&receiver).len()
            )
        });

    for (n, id) in &acked {
        let ids = &seen[&(*n as u64)];
        assert_eq!(
            ids.len(),
            1,
            "event {n} arrived under several webhook-ids: {ids:?}"
        );
        assert!(
            ids.contains(id),
            "acknowledged event {n} arrived as {ids:?}, not {id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_deliver_each_event_once() {
    crate::common::run(two_processes_share_the_work, Backend::Postgres).await;
}

async fn two_processes_share_the_work(backend: Backend) {
    const EVENTS: usize = 500;
    let database = TestDatabase::create(backend).await;
    let receiver = Receiver::start().await;
    // Both start at once on an empty database: migrations and the first account must happen
    // once, so exactly one of them prints a key.
    let (a, b) = tokio::join!(Server::start(&database.url), Server::start(&database.url));
    let keys: Vec<String> = [&a.key, &b.key].into_iter().flatten().cloned().collect();
    assert_eq!(keys.len(), 1, "expected one bootstrap key, got {keys:?}");
    let key = keys[0].clone();
    a.configure(&key, &receiver.url("/h")).await;

    // Publish alternately to both, from several tasks at once.
    let mut tasks = Vec::new();
    for worker in 0..10 {
        let mut client = if worker % 2 == 0 {
            a.events(&key).await
        } else {
            b.events(&key).await
        };
        tasks.push(tokio::spawn(async move {
            for n in (worker..EVENTS).step_by(10) {
                client
                    .publish_event(publish_request(n))
                    .await
                    .expect("publish");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    receiver
        .wait_until(Duration::from_secs(60), || {
            (arrivals(&receiver).len() == EVENTS).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("only {} of {EVENTS} arrived", arrivals(&receiver).len()));
    // Give a duplicate, if any, time to show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let requests = receiver.received("/h").len();
    assert_eq!(
        requests,
        EVENTS,
        "{} duplicate deliveries",
        requests - EVENTS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_updating_rows_in_opposite_orders_never_fail() {
    crate::common::run(crossing_updates, Backend::Postgres).await;
}

/// Clients of two processes update the same interviews in opposite orders, so the processes'
/// group commits take row locks in opposite orders and PostgreSQL picks deadlock victims. A
/// victim must be retried inside the service, never surface as an error.
async fn crossing_updates(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let (a, b) = tokio::join!(Server::start(&database.url), Server::start(&database.url));
    let key = [&a.key, &b.key]
        .into_iter()
        .flatten()
        .next()
        .unwrap()
        .clone();
    for id in 1..=4 {
        assert_eq!(
            put_start(a.http, &key, id, "https://example.com/0").await.0,
            200
        );
    }

    let mut tasks = Vec::new();
    for client in 0..12 {
        let server = if client % 2 == 0 { a.http } else { b.http };
        let order: Vec<i64> = if client % 4 < 2 {
            vec![1, 2, 3, 4]
        } else {
            vec![4, 3, 2, 1]
        };
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for round in 0..25 {
                for id in &order {
                    let url = format!("https://example.com/{round}");
                    let (status, body) = put_start(server, &key, *id, &url).await;
                    if status != 200 {
                        failures.push((status, body));
                    }
                }
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} of 1200 updates failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
}

/// Points interview `id`'s `start` webhook at `url` through the REST adapter of the server
/// at `server`; the answer's status and body.
async fn put_start(server: SocketAddr, key: &str, id: i64, url: &str) -> (u16, String) {
    let body = json!({"ai_interview_id": id,
        "webhooks": {"start": {"status": true, "url": url}}});
    let reply = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .put(format!("http://{server}{SETTINGS_PATH}"))
        .header("apiKey", key)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (reply.status().as_u16(), reply.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_one_sqlite_file_refuses_to_start() {
    crate::common::run(second_sqlite_server, Backend::Sqlite).await;
}

/// The delivery worker of a SQLite server takes over every lease it finds at start, so a
/// second server on the same file would send in-flight events twice: it must not start.
async fn second_sqlite_server(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let first = Server::start(&database.url).await;

    // The same path, and a symlink to the same file.
    let file = database
        .url
        .strip_prefix("sqlite://")
        .expect("a sqlite:// URL");
    let link = format!("{file}-link.db");
    std::os::unix::fs::symlink(file, &link).unwrap();
    for url in [database.url.clone(), format!("sqlite://{link}")] {
        let (grpc, http) = (free_addr(), free_addr());
        let second = tokio::process::Command::new(env!("CARGO_BIN_EXE_interview-webhooks"))
            .args(["serve", "--database-url", &url])
            .args([
                "--grpc-addr",
                &grpc.to_string(),
                "--http-addr",
                &http.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        // A second server that did start would serve until killed (dropping it kills it).
        let output = tokio::time::timeout(Duration::from_secs(15), second)
            .await
            .unwrap_or_else(|_| panic!("a second server started on {url}"))
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "a second server started");
        assert!(
            stderr.contains("another interview-webhooks server is serving"),
            "{stderr}"
        );
    }

    // Once the first is gone the file can be served again.
    drop(first);
    let again = Server::start(&database.url).await;
    assert!(again.key.is_none());
}
