//! The harness every integration test uses: a real server on loopback, backed by a database of
//! its own, and the clients to talk to it.
//!
//! [`TestServer::start`] creates a fresh database for one test (SQLite: a file in a temporary
//! directory; PostgreSQL: a new schema `t_<random>` inside `TEST_POSTGRES_URL`), runs the
//! migrations through `server::prepare` exactly as `serve` does, binds gRPC and HTTP on
//! `127.0.0.1:0` and returns once both answer. Dropping it stops the server and removes the
//! database.
//!
//! Each test is an `async fn(Backend)`; [`both_backends!`] turns it into a module with a
//! `sqlite` and a `postgres` test. The `postgres` one skips with a note when `TEST_POSTGRES_URL`
//! is unset, and fails instead when `CI` is set, so CI cannot silently test one backend only.

// Not every test module uses every helper.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use interview_webhooks::pb::webhook_settings_client::WebhookSettingsClient;
use interview_webhooks::server::{self, Options};
use interview_webhooks::storage::{self, DatabaseUrl, DbConnection};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Environment variable naming the PostgreSQL server the `postgres` tests use, e.g.
/// `postgres://postgres@127.0.0.1:5432/test`.
pub const POSTGRES_ENV: &str = "TEST_POSTGRES_URL";

/// The REST path of the settings resource.
pub const SETTINGS_PATH: &str = "/ai-interviews/settings/webhooks/";

/// How long one test may take before it fails instead of hanging the suite.
const TEST_TIMEOUT: Duration = Duration::from_secs(180);

/// How long the server may take to answer after start, or to stop after the signal.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Expands to a module named after the test function, holding a `sqlite` and a `postgres`
/// test that run it on each backend: `settings_rest::partial_updates::sqlite`.
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::common::run(super::$name, $crate::common::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    $crate::common::run(super::$name, $crate::common::Backend::Postgres).await;
                }
            }
        )+
    };
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh schema in `TEST_POSTGRES_URL`.
    Postgres,
}

/// Runs one test body on `backend`, with a timeout; skips (or, under `CI`, fails) a
/// PostgreSQL test when no server is configured.
pub async fn run<F, Fut>(test: F, backend: Backend)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()>,
{
    init_tracing();
    if backend == Backend::Postgres && postgres_base_url().is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{POSTGRES_ENV} is not set but CI is: the PostgreSQL half of the suite would be \
             skipped"
        );
        eprintln!("SKIPPED (PostgreSQL): set {POSTGRES_ENV}=postgres://USER@HOST:PORT/DB to run");
        return;
    }
    tokio::time::timeout(TEST_TIMEOUT, test(backend))
        .await
        .expect("the test did not finish in time");
}

/// `TEST_POSTGRES_URL`, when set and not empty.
pub fn postgres_base_url() -> Option<String> {
    std::env::var(POSTGRES_ENV)
        .ok()
        .filter(|u| !u.trim().is_empty())
}

/// Server logs, shown for failing tests; `RUST_LOG` picks the level (default `warn`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A fresh, empty database for one test, removed when dropped.
pub struct TestDatabase {
    /// Its `--database-url`.
    pub url: String,
    store: Store,
}

enum Store {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { base_url: String, schema: String },
}

impl TestDatabase {
    /// SQLite: a file in a new temporary directory. PostgreSQL: a new schema in
    /// `TEST_POSTGRES_URL`, selected through the URL's `search_path`.
    pub async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                TestDatabase {
                    url,
                    store: Store::Sqlite(dir),
                }
            }
            Backend::Postgres => {
                let base_url = postgres_base_url().expect("checked by `run`");
                let schema = format!("t_{:016x}", rand::random::<u64>());
                let url = with_search_path(&base_url, &schema);

                let (base, name) = (base_url.clone(), schema.clone());
                tokio::task::spawn_blocking(move || {
                    use diesel::Connection as _;
                    use diesel::connection::SimpleConnection as _;
                    let mut conn = diesel::PgConnection::establish(&base)
                        .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_ENV}: {e}"));
                    conn.batch_execute(&format!("CREATE SCHEMA {name}"))
                        .expect("create the test schema");
                })
                .await
                .unwrap();
                TestDatabase {
                    url,
                    store: Store::Postgres { base_url, schema },
                }
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Store::Postgres { base_url, schema } = &self.store else {
            return;
        };
        // Best effort: the server's pooled connections are idle, so nothing holds a lock; the
        // timeout keeps a surprise from hanging the suite.
        use diesel::Connection as _;
        use diesel::connection::SimpleConnection as _;
        if let Ok(mut conn) = diesel::PgConnection::establish(base_url) {
            let _ = conn.batch_execute(&format!(
                "SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS {schema} CASCADE"
            ));
        }
    }
}

/// Points a PostgreSQL URL at `schema`: every table, the migrations' included, lands there.
fn with_search_path(base: &str, schema: &str) -> String {
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}options=-csearch_path%3D{schema}")
}

/// A running server and the database behind it.
pub struct TestServer {
    /// The backend in use.
    pub backend: Backend,
    /// Where gRPC answers (changes only if `restart` cannot bind the same port again).
    pub grpc_addr: SocketAddr,
    /// Where the REST adapter answers.
    pub http_addr: SocketAddr,
    /// The `--database-url` of this test's database.
    pub database_url: String,
    /// The key `prepare` created for the bootstrap account.
    pub api_key: String,
    /// An HTTP client for the REST adapter.
    pub http: reqwest::Client,
    options: Options,
    running: Option<Running>,
    _database: TestDatabase,
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// A REST answer: status and the body exactly as sent.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// The body text.
    pub body: String,
}

impl Reply {
    /// The body as JSON; panics with the text when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    /// The `field` of every entry of an error body's `errors`.
    pub fn error_fields(&self) -> Vec<String> {
        let json = self.json();
        assert_eq!(json["status"], "error", "not an error body: {}", self.body);
        json["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("`errors` is not a list: {}", self.body))
            .iter()
            .map(|e| {
                e["field"]
                    .as_str()
                    .expect("each error has a field")
                    .to_owned()
            })
            .collect()
    }
}

/// Adds the `apikey` metadata to every call (or leaves it out, for `None`).
#[derive(Clone)]
pub struct ApiKey(Option<tonic::metadata::AsciiMetadataValue>);

impl ApiKey {
    /// Sends `key`, which need not be valid.
    pub fn new(key: Option<&str>) -> Self {
        ApiKey(key.map(|k| k.parse().expect("an ASCII key")))
    }
}

impl tonic::service::Interceptor for ApiKey {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(key) = &self.0 {
            req.metadata_mut().insert("apikey", key.clone());
        }
        Ok(req)
    }
}

/// A `WebhookSettings` client that sends an API key.
pub type SettingsClient = WebhookSettingsClient<InterceptedService<Channel, ApiKey>>;

impl TestServer {
    /// A server on a fresh database of `backend`, with default options (private webhook
    /// targets refused).
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, Options::default()).await
    }

    /// A server on a fresh database of `backend`, with `options`.
    pub async fn start_with(backend: Backend, options: Options) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let database = TestDatabase::create(backend).await;
        let database_url = database.url.clone();
        let url = DatabaseUrl::parse(&database_url).expect("a valid database URL");
        let (db, key) = server::prepare(&url).await.expect("prepare the database");
        let api_key = key.expect("an empty database gets a bootstrap key");

        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut server = TestServer {
            backend,
            grpc_addr: grpc.local_addr().unwrap(),
            http_addr: http.local_addr().unwrap(),
            database_url,
            api_key,
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("an HTTP client"),
            options,
            running: None,
            _database: database,
        };
        server.spawn(db, grpc, http).await;
        server
    }

    async fn spawn(&mut self, db: storage::Db, grpc: TcpListener, http: TcpListener) {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(
            db,
            self.options.clone(),
            grpc,
            http,
            async move {
                let _ = stopped.await;
            },
        ));
        self.running = Some(Running { stop, task });
        self.wait_ready().await;
    }

    /// Polls `/healthz` and the gRPC health service until both answer.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(running) = &self.running
                && running.task.is_finished()
            {
                let running = self.running.take().unwrap();
                panic!(
                    "the server stopped while starting: {:?}",
                    running.task.await
                );
            }
            if self.http_ready().await && self.grpc_ready().await {
                return;
            }
            assert!(Instant::now() < deadline, "the server did not become ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn http_ready(&self) -> bool {
        let reply = self.http.get(self.url("/healthz")).send().await;
        matches!(reply, Ok(r) if r.status() == 200)
    }

    /// Whether gRPC health reports `WebhookSettings` as SERVING.
    pub async fn grpc_ready(&self) -> bool {
        use tonic_health::pb::HealthCheckRequest;
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::health_client::HealthClient;

        let Ok(channel) = Channel::from_shared(format!("http://{}", self.grpc_addr))
            .unwrap()
            .connect()
            .await
        else {
            return false;
        };
        let request = HealthCheckRequest {
            service: "interview_webhooks.v1.WebhookSettings".to_owned(),
        };
        matches!(
            HealthClient::new(channel).check(request).await,
            Ok(r) if r.get_ref().status == ServingStatus::Serving as i32
        )
    }

    /// Stops the server gracefully (as SIGTERM would) and starts it again on the same
    /// database, on the same ports when they can be bound again.
    pub async fn restart(&mut self) {
        self.stop().await;

        let url = DatabaseUrl::parse(&self.database_url).unwrap();
        let (db, key) = server::prepare(&url)
            .await
            .expect("prepare the database again");
        assert!(
            key.is_none(),
            "a second start must not create another bootstrap key"
        );

        let grpc = rebind(self.grpc_addr).await;
        let http = rebind(self.http_addr).await;
        self.grpc_addr = grpc.local_addr().unwrap();
        self.http_addr = http.local_addr().unwrap();
        self.spawn(db, grpc, http).await;
    }

    /// Restarts on the same database with other options.
    pub async fn restart_with(&mut self, options: Options) {
        self.options = options;
        self.restart().await;
    }

    /// Signals shutdown and waits until `run` has returned; panics if it returned an error.
    pub async fn stop(&mut self) {
        let Running { stop, task } = self.running.take().expect("the server is running");
        let _ = stop.send(());
        tokio::time::timeout(READY_TIMEOUT, task)
            .await
            .expect("the server did not stop in time after the shutdown signal")
            .expect("the server task panicked")
            .expect("the server stopped with an error");
    }

    /// `http://127.0.0.1:PORT` of the REST adapter.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// The REST URL of `path_and_query`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.base_url())
    }

    /// A gRPC channel to the server.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc_addr))
            .unwrap()
            .connect()
            .await
            .expect("connect to the gRPC server")
    }

    /// A `WebhookSettings` client that sends the bootstrap account's key.
    pub async fn grpc(&self) -> SettingsClient {
        self.grpc_with_key(Some(&self.api_key)).await
    }

    /// A `WebhookSettings` client that sends `key` (or none).
    pub async fn grpc_with_key(&self, key: Option<&str>) -> SettingsClient {
        WebhookSettingsClient::with_interceptor(self.channel().await, ApiKey::new(key))
    }

    /// Creates a key for the account `account` (created if new) and returns it.
    pub async fn create_key(&self, account: &str) -> String {
        let account = account.to_owned();
        self.db(move |conn| {
            storage::accounts::create_key(conn, &account, storage::now_ms()).unwrap()
        })
        .await
    }

    /// Runs `f` on a connection of its own to the test's database, off the async threads,
    /// for checks that look below the API.
    pub async fn db<T, F>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> T + Send + 'static,
    {
        let url = DatabaseUrl::parse(&self.database_url).unwrap();
        tokio::task::spawn_blocking(move || {
            let mut conn = url.connect().expect("connect to the test database");
            f(&mut conn)
        })
        .await
        .expect("the database closure panicked")
    }

    /// Sends `request` and reads the whole answer.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("the REST request was answered");
        let status = response.status().as_u16();
        let body = response.text().await.expect("a readable body");
        Reply { status, body }
    }

    /// `PUT /ai-interviews/settings/webhooks/` with `body` as JSON and the bootstrap key.
    pub async fn put(&self, body: &str) -> Reply {
        self.put_as(&self.api_key, "", body).await
    }

    /// `PUT` with `key`, a query string (`""` or `"?ai_interview_id=7"`) and `body` as JSON.
    pub async fn put_as(&self, key: &str, query: &str, body: &str) -> Reply {
        let request = self
            .http
            .put(self.url(&format!("{SETTINGS_PATH}{query}")))
            .header("apiKey", key)
            .header("Content-Type", "application/json")
            .body(body.to_owned());
        self.send(request).await
    }

    /// `GET` of one interview's settings with the bootstrap key.
    pub async fn get(&self, ai_interview_id: i64) -> Reply {
        self.get_as(&self.api_key, ai_interview_id).await
    }

    /// `GET` of one interview's settings with `key`.
    pub async fn get_as(&self, key: &str, ai_interview_id: i64) -> Reply {
        let url = self.url(&format!(
            "{SETTINGS_PATH}?ai_interview_id={ai_interview_id}"
        ));
        self.send(self.http.get(url).header("apiKey", key)).await
    }

    /// The `data` of a successful GET; panics on any other answer.
    pub async fn get_data(&self, ai_interview_id: i64) -> serde_json::Value {
        let reply = self.get(ai_interview_id).await;
        assert_eq!(reply.status, 200, "GET {ai_interview_id}: {}", reply.body);
        let mut json = reply.json();
        assert_eq!(json["status"], "success", "{}", reply.body);
        json["data"].take()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(Running { stop, task }) = self.running.take() {
            let _ = stop.send(());
            task.abort();
        }
    }
}

/// Binds `addr` again after a stop, or any free loopback port when it is taken meanwhile.
async fn rebind(addr: SocketAddr) -> TcpListener {
    match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(_) => TcpListener::bind("127.0.0.1:0").await.unwrap(),
    }
}

/// The exact body of every successful PUT.
pub const PUT_SUCCESS: &str = r#"{"status":"success","message":"Webhooks updated successfully"}"#;
