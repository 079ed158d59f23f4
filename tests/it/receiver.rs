//! A webhook receiver for the delivery tests: an HTTP server on loopback that records every
//! request and answers from a per-path script (then 200).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::sync::Notify;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    /// Path and query.
    pub path: String,
    /// Every header.
    pub headers: HeaderMap,
    /// The body text.
    pub body: String,
}

impl Received {
    /// A header's value as text; panics when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .to_str()
            .unwrap()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// This status, empty body.
    Status(u16),
    /// A status with one extra header.
    WithHeader(u16, &'static str, String),
    /// Never answers (until the client gives up).
    Hang,
    /// Answers 200 after a while.
    Slow(Duration),
    /// Answers this status after a while.
    SlowStatus(Duration, u16),
    /// This status with this body.
    WithBody(u16, &'static str),
}

#[derive(Default)]
struct Inner {
    log: Vec<Received>,
    script: HashMap<String, VecDeque<Answer>>,
}

/// The receiver; stops when dropped.
#[derive(Clone)]
pub struct Receiver {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    arrived: Arc<Notify>,
    _task: Arc<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Receiver {
    /// Starts a receiver on `127.0.0.1:0`.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let arrived = Arc::new(Notify::new());
        let app = axum::Router::new()
            .fallback(record)
            .with_state((inner.clone(), arrived.clone()));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            addr,
            inner,
            arrived,
            _task: Arc::new(AbortOnDrop(task)),
        }
    }

    /// The URL of `path` on this receiver (`http://127.0.0.1:PORT/path`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The same URL spelled with the name `localhost`.
    pub fn localhost_url(&self, path: &str) -> String {
        format!("http://localhost:{}{path}", self.addr.port())
    }

    /// Queues answers for requests to `path` (its path part, without the query).
    pub fn script(&self, path: &str, answers: impl IntoIterator<Item = Answer>) {
        let mut inner = self.inner.lock().unwrap();
        inner
            .script
            .entry(path.to_owned())
            .or_default()
            .extend(answers);
    }

    /// Every request so far to `path` (path part only).
    pub fn received(&self, path: &str) -> Vec<Received> {
        let inner = self.inner.lock().unwrap();
        inner
            .log
            .iter()
            .filter(|r| r.path.split('?').next() == Some(path))
            .cloned()
            .collect()
    }

    /// Waits until `path` got at least `n` requests, or panics after `timeout`.
    pub async fn wait_for(&self, path: &str, n: usize, timeout: Duration) -> Vec<Received> {
        self.wait_until(timeout, || {
            let got = self.received(path);
            (got.len() >= n).then_some(got)
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "{path} got {} of {n} requests in {timeout:?}",
                self.received(path).len()
            )
        })
    }

    /// Waits until `check` returns something, up to `timeout`.
    pub async fn wait_until<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.arrived.notified();
            if let Some(found) = check() {
                return Some(found);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), notified).await;
        }
    }
}

type Shared = (Arc<Mutex<Inner>>, Arc<Notify>);

async fn record(
    State((inner, arrived)): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let answer = {
        let mut inner = inner.lock().unwrap();
        inner.log.push(Received {
            path,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        inner
            .script
            .get_mut(uri.path())
            .and_then(VecDeque::pop_front)
            .unwrap_or(Answer::Status(200))
    };
    arrived.notify_waiters();

    match answer {
        Answer::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Answer::WithHeader(code, name, value) => {
            (StatusCode::from_u16(code).unwrap(), [(name, value)]).into_response()
        }
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
        Answer::Slow(after) => {
            tokio::time::sleep(after).await;
            StatusCode::OK.into_response()
        }
        Answer::WithBody(code, body) => (StatusCode::from_u16(code).unwrap(), body).into_response(),
        Answer::SlowStatus(after, code) => {
            tokio::time::sleep(after).await;
            StatusCode::from_u16(code).unwrap().into_response()
        }
    }
}
