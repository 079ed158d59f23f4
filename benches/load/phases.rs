//! What each phase sends, and the checks that make a wrong answer count as an error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use interview_webhooks::pb;
use interview_webhooks::pb::webhook_events_client::WebhookEventsClient;
use interview_webhooks::pb::webhook_settings_client::WebhookSettingsClient;
use tokio::task::JoinSet;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use super::drive::{self, Plan, Stats};
use super::receiver::{Receiver, Seen};

/// Interviews the settings phases spread their requests over.
pub const INTERVIEWS: u64 = 1_000;

/// First interview id of the delivery phase (one interview per publisher).
const DELIVERY_INTERVIEWS: i64 = 2_000_001;

/// The most published events not yet seen by the receiver, per publisher: enough to keep
/// every delivery slot busy (8x more measured the same events/s), small enough that the
/// publish-to-arrival latency says more than the length of the queue.
const BACKLOG_PER_PUBLISHER: usize = 4;

/// How long, at most, the deliveries still queued after the phase may take to arrive.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How many delivered events of a round are looked up in the delivery log.
const RECORD_SAMPLE: usize = 64;

/// How long after the drain their outcomes may take to be written.
const RECORD_TIMEOUT: Duration = Duration::from_secs(10);

/// The document's main PUT body, with the interview id the REST adapter also takes.
const REST_BODY: &str = r#"{
  "ai_interview_id": ID,
  "webhooks": {
    "start": { "status": true, "url": "https://example.com/webhook/start" },
    "submission": { "status": true, "url": "https://example.com/webhook/submission" },
    "auth": {
      "type": "basic",
      "basic": { "username": "user", "password": "pass" }
    }
  }
}"#;

/// The exact success answer of the REST PUT.
const REST_OK: &str = r#"{"status":"success","message":"Webhooks updated successfully"}"#;

/// gRPC connections to one server and the API key its calls carry.
#[derive(Clone)]
pub struct Grpc {
    channels: Vec<Channel>,
    key: MetadataValue<Ascii>,
}

impl Grpc {
    /// Calls over `channels`, worker `w` on channel `w % len`, with `api_key`.
    pub fn new(channels: Vec<Channel>, api_key: &str) -> Result<Self, String> {
        let key = api_key
            .parse()
            .map_err(|_| "the API key is not valid metadata".to_owned())?;
        Ok(Self { channels, key })
    }

    fn channel(&self, worker: usize) -> Channel {
        self.channels[worker % self.channels.len()].clone()
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        req.metadata_mut().insert("apikey", self.key.clone());
        req
    }
}

fn status(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// `grpc.health.v1.Health/Check` with an empty request: the echo baseline (on the echo
/// server) and, on the real server, what its own stack costs before any of our code runs.
pub async fn health(grpc: &Grpc, plan: Plan) -> Stats {
    let grpc = grpc.clone();
    drive::run(plan, move |worker, _| {
        let mut client = HealthClient::new(grpc.channel(worker));
        let req = grpc.request(HealthCheckRequest::default());
        async move {
            let answer = client.check(req).await.map_err(status)?.into_inner();
            // 1 is SERVING.
            if answer.status != 1 {
                return Err(format!("health answered {}", answer.status));
            }
            Ok(())
        }
    })
    .await
}

fn update_start(ai_interview_id: i64, url: String) -> pb::UpdateWebhooksRequest {
    pb::UpdateWebhooksRequest {
        ai_interview_id,
        webhooks: Some(pb::Webhooks {
            start: Some(pb::Webhook {
                status: Some(true),
                url: Some(url),
                ..Default::default()
            }),
            ..Default::default()
        }),
        update_mask: None,
    }
}

/// Sets `start` of each interview in `ids` (untimed set-up), `concurrency` at a time.
pub async fn configure(
    grpc: &Grpc,
    concurrency: usize,
    ids: Vec<(i64, String)>,
) -> Result<(), String> {
    let ids = Arc::new(ids);
    let mut tasks = JoinSet::new();
    for worker in 0..concurrency {
        let grpc = grpc.clone();
        let ids = ids.clone();
        tasks.spawn(async move {
            let mut client = WebhookSettingsClient::new(grpc.channel(worker));
            for (id, url) in ids.iter().skip(worker).step_by(concurrency) {
                let req = grpc.request(update_start(*id, url.clone()));
                client.update_webhooks(req).await.map_err(status)?;
            }
            Ok::<_, String>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// The settings interviews, each with a `start` webhook.
pub fn seed() -> Vec<(i64, String)> {
    (1..=INTERVIEWS as i64)
        .map(|id| (id, "https://hooks.example.com/start/0".to_owned()))
        .collect()
}

/// `GetWebhooks` across the seeded interviews.
pub async fn grpc_get(grpc: &Grpc, plan: Plan) -> Stats {
    let grpc = grpc.clone();
    drive::run(plan, move |worker, seq| {
        let mut client = WebhookSettingsClient::new(grpc.channel(worker));
        let id = (seq % INTERVIEWS + 1) as i64;
        let req = grpc.request(pb::GetWebhooksRequest {
            ai_interview_id: id,
        });
        async move {
            let got = client.get_webhooks(req).await.map_err(status)?.into_inner();
            if got.ai_interview_id != id {
                return Err(format!("asked for {id}, got {}", got.ai_interview_id));
            }
            Ok(())
        }
    })
    .await
}

/// `UpdateWebhooks` changing `start.url` across the seeded interviews.
pub async fn grpc_update(grpc: &Grpc, plan: Plan) -> Stats {
    let grpc = grpc.clone();
    drive::run(plan, move |worker, seq| {
        let mut client = WebhookSettingsClient::new(grpc.channel(worker));
        let id = (seq % INTERVIEWS + 1) as i64;
        let url = format!("https://hooks.example.com/start/{seq}");
        let req = grpc.request(update_start(id, url.clone()));
        async move {
            let got = client
                .update_webhooks(req)
                .await
                .map_err(status)?
                .into_inner();
            let stored = got.webhooks.and_then(|w| w.start).and_then(|s| s.url);
            if stored.as_deref() != Some(url.as_str()) {
                return Err(format!("sent start.url {url}, the answer has {stored:?}"));
            }
            Ok(())
        }
    })
    .await
}

/// An HTTP/1.1 client that never uses a proxy.
pub fn http_client(concurrency: usize) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(concurrency)
        .timeout(drive::REQUEST_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())
}

/// The document's PUT across the seeded interviews, through the REST adapter.
pub async fn rest_put(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    api_key: &str,
    plan: Plan,
) -> Stats {
    let http = http.clone();
    let url = format!("http://{addr}/ai-interviews/settings/webhooks/");
    let api_key = api_key.to_owned();
    drive::run(plan, move |_, seq| {
        let id = seq % INTERVIEWS + 1;
        let req = http
            .put(&url)
            .header("apiKey", &api_key)
            .header("content-type", "application/json")
            .body(REST_BODY.replace("ID", &id.to_string()));
        async move {
            let resp = req.send().await.map_err(|e| e.to_string())?;
            let code = resp.status();
            let body = resp.bytes().await.map_err(|e| e.to_string())?;
            if code != reqwest::StatusCode::OK || body != REST_OK.as_bytes() {
                return Err(format!("{code}: {}", String::from_utf8_lossy(&body)));
            }
            Ok(())
        }
    })
    .await
}

/// The body a webhook delivery carries, stamped for the receiver.
fn event_body(seq: u64, sent_us: u64) -> String {
    let data = format!(r#"{{"seq":{seq},"sent_us":{sent_us},"ai_interview_id":1}}"#);
    format!(r#"{{"type":"ai_interview.started","timestamp":"2026-01-01T00:00:00Z","data":{data}}}"#)
}

/// Plain POSTs of an event-shaped body to `receiver`: the delivery baseline.
pub async fn bare_post(http: &reqwest::Client, receiver: &Receiver, plan: Plan) -> Stats {
    let http = http.clone();
    let url = receiver.url(1);
    let seen = receiver.seen.clone();
    drive::run(plan, move |_, seq| {
        let req = http
            .post(&url)
            .header("content-type", "application/json")
            .header("webhook-id", format!("bare_{seq}"))
            .body(event_body(seq, seen.now_us()));
        async move {
            let resp = req.send().await.map_err(|e| e.to_string())?;
            let code = resp.status();
            resp.bytes().await.map_err(|e| e.to_string())?;
            if !code.is_success() {
                return Err(format!("receiver answered {code}"));
            }
            Ok(())
        }
    })
    .await
}

fn publish_request(
    grpc: &Grpc,
    id: i64,
    seq: u64,
    sent_us: u64,
) -> tonic::Request<pb::PublishEventRequest> {
    let number = |n: u64| prost_types::Value {
        kind: Some(prost_types::value::Kind::NumberValue(n as f64)),
    };
    let data = prost_types::Struct {
        fields: [("seq", seq), ("sent_us", sent_us)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), number(v)))
            .collect(),
    };
    grpc.request(pb::PublishEventRequest {
        ai_interview_id: id,
        event: pb::Event::Start as i32,
        data: Some(data),
        idempotency_key: None,
    })
}

/// The delivery id of a publish, or why there is none.
fn delivery_id(answer: pb::PublishEventResponse) -> Result<String, String> {
    match answer.delivery {
        Some(d) if answer.skipped_reason.is_empty() => Ok(d.id),
        _ => Err(format!("nothing queued: {}", answer.skipped_reason)),
    }
}

/// Events published with `PublishEvent` to webhooks at a local receiver, one interview per
/// publisher, each publisher with at most [`BACKLOG_PER_PUBLISHER`] events not yet delivered.
/// Measured as first arrivals per second at the receiver, with the latency from publish to
/// arrival; every published event must arrive, once.
pub struct DeliveryBench {
    grpc: Grpc,
    seen: Arc<Seen>,
    seq: Arc<AtomicU64>,
}

impl DeliveryBench {
    /// Points one interview per publisher at `receiver` and checks that one event goes
    /// through. `Ok(Err(why))` when delivery is not there to measure.
    pub async fn setup(
        grpc: &Grpc,
        receiver: &Receiver,
        concurrency: usize,
    ) -> Result<Result<Self, String>, String> {
        let ids: Vec<(i64, String)> = (0..concurrency as i64)
            .map(|i| {
                (
                    DELIVERY_INTERVIEWS + i,
                    receiver.url(DELIVERY_INTERVIEWS + i),
                )
            })
            .collect();
        configure(grpc, concurrency, ids).await?;
        let seen = receiver.seen.clone();

        let mut client = WebhookEventsClient::new(grpc.channel(0));
        let probe = publish_request(grpc, DELIVERY_INTERVIEWS, 0, seen.now_us());
        let probe_id = match client.publish_event(probe).await {
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                return Ok(Err("PublishEvent not implemented".to_owned()));
            }
            Err(s) => return Err(format!("PublishEvent: {}", status(s))),
            Ok(answer) => delivery_id(answer.into_inner())?,
        };
        let deadline = Instant::now() + drive::REQUEST_TIMEOUT;
        while !seen.has(&probe_id) {
            if Instant::now() > deadline {
                return Err(format!(
                    "the first event was not delivered within {:?}",
                    drive::REQUEST_TIMEOUT
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        seen.delivered
            .add_permits(BACKLOG_PER_PUBLISHER * concurrency);
        Ok(Ok(Self {
            grpc: grpc.clone(),
            seen,
            seq: Arc::new(AtomicU64::new(1)),
        }))
    }

    /// One measured slice, then the drain: returns the deliveries (every kind of error
    /// counted: failed publishes, events missing after [`DRAIN_TIMEOUT`], duplicates,
    /// malformed arrivals) and the publish calls (whose latency includes waiting for room in
    /// the backlog).
    pub async fn round(&self, plan: Plan) -> (Stats, Stats) {
        let seen = &self.seen;
        let before = (
            seen.arrivals.load(Ordering::Relaxed),
            seen.duplicates.load(Ordering::Relaxed),
            seen.malformed.load(Ordering::Relaxed),
        );
        let published = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        seen.set_window(start + plan.warmup, start + plan.warmup + plan.measure);

        let publishes = {
            let grpc = self.grpc.clone();
            let seen = seen.clone();
            let published = published.clone();
            let seq = self.seq.clone();
            drive::run(plan, move |worker, _| {
                let mut client = WebhookEventsClient::new(grpc.channel(worker));
                let id = DELIVERY_INTERVIEWS + worker as i64;
                let (grpc, seen, published) = (grpc.clone(), seen.clone(), published.clone());
                let n = seq.fetch_add(1, Ordering::Relaxed);
                async move {
                    let room = seen.delivered.acquire().await.map_err(|e| e.to_string())?;
                    room.forget();
                    let req = publish_request(&grpc, id, n, seen.now_us());
                    let answer = client.publish_event(req).await.map_err(|s| {
                        seen.delivered.add_permits(1);
                        status(s)
                    })?;
                    let delivery = delivery_id(answer.into_inner())?;
                    published.lock().unwrap().push(delivery);
                    Ok(())
                }
            })
            .await
        };

        // Let what is still queued arrive, then check that every event did.
        let all = std::mem::take(&mut *published.lock().unwrap());
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while seen.arrivals.load(Ordering::Relaxed) - before.0 < all.len() as u64
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let mut delivered = Stats::from_latencies(seen.take_window_latencies(), plan.measure);
        delivered.errors = publishes.errors;
        delivered.error_samples = (publishes.error_samples.iter())
            .map(|m| format!("publish: {m}"))
            .collect();
        let missing = all.iter().filter(|id| !seen.has(id)).count();
        let unrecorded = self.unrecorded(&all).await;
        let duplicates = seen.duplicates.load(Ordering::Relaxed) - before.1;
        let malformed = seen.malformed.load(Ordering::Relaxed) - before.2;
        let problems = [
            (
                missing as u64,
                format!("not delivered within {DRAIN_TIMEOUT:?} of the end"),
            ),
            (duplicates, "delivered more than once".to_owned()),
            (
                unrecorded,
                "arrived but not recorded as succeeded in the delivery log".to_owned(),
            ),
            (
                malformed,
                "arrived without webhook-id or data.sent_us".to_owned(),
            ),
        ];
        for (count, message) in problems {
            for _ in 0..count {
                delivered.record_error(message.clone());
            }
        }
        (delivered, publishes)
    }

    /// How many of a sample of `published` (every event when few) the delivery log does not
    /// show as succeeded once their outcomes had time to be written: an arrival only counts
    /// if the service also knows it was delivered.
    async fn unrecorded(&self, published: &[String]) -> u64 {
        let step = (published.len() / RECORD_SAMPLE).max(1);
        let mut client = WebhookEventsClient::new(self.grpc.channel(0));
        let deadline = Instant::now() + RECORD_TIMEOUT;
        let mut unrecorded = 0;
        for id in published.iter().step_by(step) {
            loop {
                let req = self.grpc.request(pb::GetDeliveryRequest { id: id.clone() });
                let state = match client.get_delivery(req).await {
                    Ok(d) => d.into_inner().state,
                    Err(_) => pb::DeliveryState::Unspecified as i32,
                };
                if state == pb::DeliveryState::Succeeded as i32 {
                    break;
                }
                if Instant::now() > deadline {
                    unrecorded += 1;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        unrecorded
    }
}
