//! A webhook receiver on loopback, inside the bench process: it answers every `POST` with 200
//! at once and notes what arrived. The `delivery` and `bare_post` phases hit the same handler,
//! so the receiver's own cost is the same on both sides of that ratio.
//!
//! Each arrival carries `webhook-id` and a body whose `data.sent_us` is when the publisher
//! sent it (microseconds since [`Receiver::epoch`]); the receiver counts first arrivals,
//! duplicates, and the end-to-end latency of arrivals inside the measured window.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// What the receiver saw.
pub struct Seen {
    /// When `sent_us` counts from.
    pub epoch: Instant,
    window: Mutex<Option<(Instant, Instant)>>,
    ids: Mutex<HashSet<String>>,
    /// First arrivals of an id.
    pub arrivals: AtomicU64,
    /// Arrivals of an id seen before.
    pub duplicates: AtomicU64,
    /// Arrivals that were not a well-formed event.
    pub malformed: AtomicU64,
    in_window: Mutex<Vec<u32>>,
    /// One permit per first arrival: lets publishers keep a bounded backlog.
    pub delivered: Semaphore,
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it saw.
    pub seen: Arc<Seen>,
    stop: CancellationToken,
}

impl Receiver {
    /// Starts a receiver on a free loopback port.
    pub async fn start(epoch: Instant) -> Result<Self, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("receiver bind: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let seen = Arc::new(Seen {
            epoch,
            window: Mutex::new(None),
            ids: Mutex::new(HashSet::new()),
            arrivals: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            in_window: Mutex::new(Vec::new()),
            delivered: Semaphore::new(0),
        });

        let stop = CancellationToken::new();
        let app = Router::new()
            .route("/hook/{id}", post(receive))
            .with_state(seen.clone());
        let server =
            axum::serve(listener, app).with_graceful_shutdown(stop.clone().cancelled_owned());
        tokio::spawn(async move {
            if let Err(e) = server.await {
                eprintln!("receiver stopped: {e}");
            }
        });
        Ok(Self { addr, seen, stop })
    }

    /// The URL of this receiver for one interview.
    pub fn url(&self, ai_interview_id: i64) -> String {
        format!("http://{}/hook/{ai_interview_id}", self.addr)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Seen {
    /// Arrivals between `from` and `to` are timed.
    pub fn set_window(&self, from: Instant, to: Instant) {
        *self.window.lock().unwrap() = Some((from, to));
    }

    /// Latencies (µs, publish to arrival) of the first arrivals inside the window, taken
    /// (the next window starts empty).
    pub fn take_window_latencies(&self) -> Vec<u32> {
        std::mem::take(&mut *self.in_window.lock().unwrap())
    }

    /// Whether `id` has arrived.
    pub fn has(&self, id: &str) -> bool {
        self.ids.lock().unwrap().contains(id)
    }

    /// Microseconds since the epoch, for `sent_us`.
    pub fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

async fn receive(State(seen): State<Arc<Seen>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let arrived = Instant::now();
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok());
    let sent_us = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.pointer("/data/sent_us")
                .and_then(serde_json::Value::as_u64)
        });
    let (Some(id), Some(sent_us)) = (id, sent_us) else {
        seen.malformed.fetch_add(1, Ordering::Relaxed);
        return StatusCode::OK;
    };

    if !seen.ids.lock().unwrap().insert(id.to_owned()) {
        seen.duplicates.fetch_add(1, Ordering::Relaxed);
        return StatusCode::OK;
    }
    seen.arrivals.fetch_add(1, Ordering::Relaxed);
    seen.delivered.add_permits(1);

    let window = *seen.window.lock().unwrap();
    if let Some((from, to)) = window
        && (from..to).contains(&arrived)
    {
        let sent = seen.epoch + Duration::from_micros(sent_us);
        let latency = super::drive::micros_of(arrived.saturating_duration_since(sent));
        seen.in_window.lock().unwrap().push(latency);
    }
    StatusCode::OK
}
