//! Webhook delivery, end to end: the real server delivers to a receiver on loopback.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac as _};
use interview_webhooks::delivery::{DeliveryOptions, RetrySchedule};
use interview_webhooks::domain::url_guard::TargetPolicy;
use interview_webhooks::pb;
use interview_webhooks::pb::webhook_events_client::WebhookEventsClient;
use interview_webhooks::server::Options;
use serde_json::json;
use sha2::Sha256;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::common::{ApiKey, Backend, TestServer};
use crate::receiver::{Answer, Receiver};

type EventsClient = WebhookEventsClient<InterceptedService<Channel, ApiKey>>;

const WAIT: Duration = Duration::from_secs(20);

/// Short waits so that retries happen within a test.
fn fast(allow_private: bool) -> Options {
    Options {
        policy: TargetPolicy { allow_private },
        delivery: DeliveryOptions {
            schedule: RetrySchedule::parse("200ms,200ms,200ms").unwrap(),
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            poll_interval: Duration::from_millis(100),
            ..DeliveryOptions::default()
        },
    }
}

async fn start(backend: Backend) -> TestServer {
    TestServer::start_with(backend, fast(true)).await
}

async fn events(server: &TestServer) -> EventsClient {
    WebhookEventsClient::with_interceptor(
        server.channel().await,
        ApiKey::new(Some(&server.api_key)),
    )
}

async fn configure(server: &TestServer, body: serde_json::Value) {
    let reply = server.put(&body.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

/// Points the interview's `start` webhook at `url`, enabled, with no auth.
async fn configure_start(server: &TestServer, ai_interview_id: i64, url: &str) {
    let body = json!({"ai_interview_id": ai_interview_id,
        "webhooks": {"start": {"status": true, "url": url}}});
    configure(server, body).await;
}

async fn publish(
    client: &mut EventsClient,
    ai_interview_id: i64,
    event: pb::Event,
    data: serde_json::Value,
    key: Option<&str>,
) -> pb::PublishEventResponse {
    client
        .publish_event(pb::PublishEventRequest {
            ai_interview_id,
            event: event.into(),
            data: Some(to_struct(data)),
            idempotency_key: key.map(str::to_owned),
        })
        .await
        .expect("PublishEvent")
        .into_inner()
}

async fn publish_id(client: &mut EventsClient, id: i64, event: pb::Event) -> String {
    let reply = publish(client, id, event, json!({}), None).await;
    reply.delivery.expect("the event was queued").id
}

fn to_struct(v: serde_json::Value) -> prost_types::Struct {
    let serde_json::Value::Object(map) = v else {
        panic!("data must be an object")
    };
    prost_types::Struct {
        fields: map.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
    }
}

fn to_value(v: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(to_value).collect(),
        }),
        obj @ serde_json::Value::Object(_) => Kind::StructValue(to_struct(obj)),
    };
    prost_types::Value { kind: Some(kind) }
}

async fn signing_secret(server: &TestServer, id: i64) -> String {
    server
        .grpc()
        .await
        .get_signing_secret(pb::GetSigningSecretRequest {
            ai_interview_id: id,
        })
        .await
        .unwrap()
        .into_inner()
        .secret
}

/// How many of the `v1,` signatures in `header` verify under `secret`, computed here the way
/// the Standard Webhooks specification tells receivers to.
fn verifying_signatures(
    secret: &str,
    id: &str,
    timestamp: &str,
    body: &str,
    header: &str,
) -> usize {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    header.split(' ').filter(|s| *s == expected).count()
}

async fn delivery(client: &mut EventsClient, id: &str) -> pb::Delivery {
    client
        .get_delivery(pb::GetDeliveryRequest { id: id.to_owned() })
        .await
        .unwrap()
        .into_inner()
}

/// Polls a delivery until its first attempt is recorded.
async fn first_attempt(client: &mut EventsClient, id: &str) -> pb::Attempt {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(a) = delivery(client, id).await.attempts.first() {
            return a.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no attempt recorded for {id}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls a delivery until it leaves PENDING.
async fn settled(client: &mut EventsClient, id: &str) -> pb::Delivery {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let d = delivery(client, id).await;
        if d.state != pb::DeliveryState::Pending as i32 {
            return d;
        }
        assert!(std::time::Instant::now() < deadline, "still pending: {d:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

both_backends!(
    both_events_arrive_signed_with_basic_auth,
    apikey_auth_is_sent_as_configured,
    a_failed_attempt_is_retried_with_the_same_webhook_id,
    a_receiver_that_never_answers_does_not_hold_up_others,
    redirects_are_not_followed,
    gone_disables_the_webhook,
    private_targets_are_checked_when_connecting,
    an_idempotency_key_creates_one_delivery,
    redeliver_sends_again_with_the_same_id,
    a_test_event_is_sent_now_and_reported,
    rotation_signs_with_both_secrets,
    disabling_cancels_what_is_queued,
    a_corrected_password_applies_to_the_next_retry,
    publishing_to_a_disabled_webhook_says_why,
    shutdown_lets_an_attempt_in_flight_finish,
    old_finished_deliveries_are_purged,
    events_that_find_the_worker_busy_are_delivered_once,
    a_410_from_a_replaced_url_leaves_the_new_one_enabled,
    the_first_attempt_uses_settings_changed_after_the_publish,
    a_nul_in_the_answer_is_recorded,
    a_retry_sooner_than_the_poll_is_made_on_time,
);

async fn both_events_arrive_signed_with_basic_auth(backend: Backend) {
    let server = start(backend).await;
    let receiver = Receiver::start().await;
    configure(&server, json!({
        "ai_interview_id": 42,
        "webhooks": {
            "start": {"status": true, "url": receiver.url("/start")},
            "submission": {"status": true, "url": receiver.url("/submission?team=7")},
            "auth": {"type": "basic", "basic": {"username": "hook-user", "password": "pa:ss wörd"}},
        },
    }))
    .await;
    let mut client = events(&server).await;

    let started = publish(
        &mut client,
        42,
        pb::Event::Start,
        json!({"candidate": "ada"}),
        None,
    )
    .await;
    let submitted = publish(
        &mut client,
        42,
        pb::Event::Submission,
        json!({"score": 9}),
        None,
    )
    .await;
    let started_id = started.delivery.unwrap().id;
    let submitted_id = submitted.delivery.unwrap().id;

    let start = receiver.wait_for("/start", 1, WAIT).await.remove(0);
    let submission = receiver.wait_for("/submission", 1, WAIT).await.remove(0);

    let body = start.json();
    assert_eq!(body["type"], "ai_interview.started");
    assert_eq!(
        body["data"],
        json!({"candidate": "ada", "ai_interview_id": 42})
    );
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(submission.json()["type"], "ai_interview.submitted");
    assert_eq!(submission.json()["data"]["score"], 9);
    assert_eq!(submission.path, "/submission?team=7");

    assert_eq!(start.header("content-type"), "application/json");
    assert!(
        start
            .header("user-agent")
            .starts_with("interview-webhooks/")
    );
    assert_eq!(start.header("webhook-id"), started_id);
    assert_eq!(submission.header("webhook-id"), submitted_id);
    let expected = format!("Basic {}", STANDARD.encode("hook-user:pa:ss wörd"));
    assert_eq!(start.header("authorization"), expected);

    let secret = signing_secret(&server, 42).await;
    for r in [&start, &submission] {
        let ok = verifying_signatures(
            &secret,
            r.header("webhook-id"),
            r.header("webhook-timestamp"),
            &r.body,
            r.header("webhook-signature"),
        );
        assert_eq!(ok, 1, "signature does not verify: {:?}", r.headers);
    }

    let d = settled(&mut client, &started_id).await;
    assert_eq!(d.state, pb::DeliveryState::Succeeded as i32);
    assert_eq!(d.attempts.len(), 1);
    assert_eq!(d.attempts[0].http_status, 200);
}

async fn apikey_auth_is_sent_as_configured(backend: Backend) {
    let server = start(backend).await;
    let receiver = Receiver::start().await;
    configure(&server, json!({
        "ai_interview_id": 1,
        "webhooks": {
            "submission": {"status": true, "url": receiver.url("/s")},
            "auth": {"type": "apikey", "apikey": {"key": "X-Webhook-Key", "value": "my-secret-key"}},
        },
    }))
    .await;
    let mut client = events(&server).await;
    publish_id(&mut client, 1, pb::Event::Submission).await;

    let got = receiver.wait_for("/s", 1, WAIT).await.remove(0);
    assert_eq!(got.header("x-webhook-key"), "my-secret-key");
    assert!(got.headers.get("authorization").is_none());

    // With auth.status false the header is no longer sent.
    configure(
        &server,
        json!({
            "ai_interview_id": 1,
            "webhooks": {"auth": {"type": "apikey", "status": false,
                                  "apikey": {"key": "X-Webhook-Key", "value": "********"}}},
        }),
    )
    .await;
    publish_id(&mut client, 1, pb::Event::Submission).await;
    let got = receiver.wait_for("/s", 2, WAIT).await.remove(1);
    assert!(
        got.headers.get("x-webhook-key").is_none(),
        "{:?}",
        got.headers
    );
}

async fn a_failed_attempt_is_retried_with_the_same_webhook_id(backend: Backend) {
    let server = start(backend).await;
    let receiver = Receiver::start().await;
    receiver.script("/h", [Answer::Status(500), Answer::Status(200)]);
    configure_start(&server, 5, &receiver.url("/h")).await;
    let mut client = events(&server).await;
    let id = publish_id(&mut client, 5, pb::Event::Start).await;

    let got = receiver.wait_for("/h", 2, WAIT).await;
    assert_eq!(got[0].header("webhook-id"), id);
    assert_eq!(got[1].header("webhook-id"), id);
    assert_eq!(
        got[0].body, got[1].body,
        "every attempt sends the same body"
    );

    let d = settled(&mut client, &id).await;
    assert_eq!(d.state, pb::DeliveryState::Succeeded as i32);
    let statuses: Vec<i32> = d.attempts.iter().map(|a| a.http_status).collect();
    assert_eq!(statuses, vec![500, 200]);
    assert_eq!(d.attempts[0].error, "receiver answered HTTP 500");
    assert_eq!(d.attempt_count, 2);

    // Once the schedule is spent the delivery fails and says why.
    receiver.script("/h", std::iter::repeat_n(Answer::Status(503), 4));
    let id = publish_id(&mut client, 5, pb::Event::Start).await;
    let d = settled(&mut client, &id).await;
    assert_eq!(d.state, pb::DeliveryState::Failed as i32);
    assert_eq!(d.attempts.len(), 4, "the first attempt and three retries");
}

async fn a_receiver_that_never_answers_does_not_hold_up_others(backend: Backend) {
    let server = start(backend).await;
    let receiver = Receiver::start().await;
    receiver.script("/slow", std::iter::repeat_n(Answer::Hang, 10));
    configure_start(&server, 1, &receiver.url("/slow")).await;
    configure_start(&server, 2, &receiver.url("/fast")).await;
    let mut client = events(&server).await;

    let slow = publish_id(&mut client, 1, pb::Event::Start).await;
    receiver.wait_for("/slow", 1, WAIT).await;
    let started = std::time::Instant::now();
    publish_id(&mut client, 2, pb::Event::Start).await;
    receiver.wait_for("/fast", 1, WAIT).await;
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "the fast receiver waited for the hanging one: {:?}",
        started.elapsed()
    );

    // The hanging attempt is cut off by the 1 s timeout and recorded as such.
    let a = first_attempt(&mut client, &slow).await;
    assert_eq!(a.http_status, 0);
    assert!(a.error.contains("timed out"), "{a:?}");
    assert!(a.duration_ms < 5_000, "{a:?}");
}

async fn redirects_are_not_followed(backend: Backend) {
    let server = start(backend).await;
    let receiver = Receiver::start().await;
    receiver.script(
        "/moved",
        std::iter::repeat_n(
            Answer::WithHeader(302, "location", receiver.url("/elsewhere")),
            4,
        ),
    );
    configure_start(&server, 3, &receiver.url("/moved")).await;
    let mut client = events(&server).await;
    let id = publish_id(&mut client, 3, pb::Event::Start).await;

    let d = settled(&mut client, &id).await;
    assert_eq!(d.state, pb::DeliveryState::Failed as i32);
    assert_eq!(d.attempts[0].http_status, 302);
    assert!(
        d.attempts[0].error.contains("redirects are not followed"),
        "{d:?}"
    );
    assert!(receiver.received("/elsewhere").is_empty());
}

async fn gone_disables_the_webhook(backend: Backend) {
    let server = start(backend).await;
    let receiver = Receiver::start().await;
    receiver.script("/gone", [Answer::Status(410)]);
    configure_start(&server, 9, &receiver.url("/gone")).await;
    let mut client = events(&server).await;
    let id = publish_id(&mut client, 9, pb::Event::Start).await;

    let d = settled(&mut client, &id).await;
    assert_eq!(d.state, pb::DeliveryState::Failed as i32);
    assert_eq!(d.attempts.len(), 1, "410 is not retried");

    let stored = server.get_data(9).await;
    assert_eq!(stored["webhooks"]["start"]["status"], false);
    assert!(
        stored["webhooks"]["start"]["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("410"),
        "{stored}"
    );
    let again = publish(&mut client, 9, pb::Event::Start, json!({}), None).await;
    assert!(again.delivery.is_none());
    assert!(again.skipped_reason.contains("disabled"), "{again:?}");

    // The GET's data, sent back as is, is a valid update and turns the webhook on again.
    let mut body = stored.clone();
    body["webhooks"]["start"]["status"] = json!(true);
    configure(&server, body).await;
    assert!(
        server.get_data(9).await["webhooks"]["start"]
            .get("disabled_reason")
            .is_none()
    );
}

async fn private_targets_are_checked_when_connecting(backend: Backend) {
    // Without the flag, `localhost` and metadata addresses are refused when stored.
    let strict = TestServer::start_with(backend, fast(false)).await;
    let receiver = Receiver::start().await;
    for url in [receiver.localhost_url("/h"), receiver.url("/h")] {
        let body =
            json!({"ai_interview_id": 1, "webhooks": {"start": {"status": true, "url": url}}});
        let reply = strict.put(&body.to_string()).await;
        assert_eq!(reply.status, 400, "{url} was accepted");
        assert_eq!(reply.error_fields(), vec!["webhooks.start.url"]);
    }
    drop(strict);

    // With the flag, loopback is fine but cloud metadata is not.
    let mut server = TestServer::start_with(backend, fast(true)).await;
    let metadata = json!({"ai_interview_id": 1,
        "webhooks": {"start": {"status": true, "url": "http://169.254.169.254/latest"}}});
    assert_eq!(server.put(&metadata.to_string()).await.status, 400);
    configure_start(&server, 1, &receiver.localhost_url("/h")).await;
    let mut client = events(&server).await;
    publish_id(&mut client, 1, pb::Event::Start).await;
    receiver.wait_for("/h", 1, WAIT).await;

    // Stored names, delivered by a server without the flag: each resolves to loopback, so the
    // attempt is refused at connect time and nothing arrives. `localhost` is refused by name;
    // the machine's own host name (in /etc/hosts) shows the check on the resolved address.
    let mut names = vec![receiver.localhost_url("/h")];
    if let Some(host) = loopback_host_name() {
        let url = format!(
            "http://{host}:{}/h",
            receiver.localhost_url("").rsplit(':').next().unwrap()
        );
        configure_start(&server, 2, &url).await;
        names.push(url);
    } else {
        eprintln!(
            "NOTE: no host name resolving to loopback besides localhost; checked localhost only"
        );
    }
    server.restart_with(fast(false)).await;
    let mut client = events(&server).await;
    for (n, url) in names.iter().enumerate() {
        let id = publish_id(&mut client, n as i64 + 1, pb::Event::Start).await;
        let attempt = first_attempt(&mut client, &id).await;
        assert_eq!(attempt.http_status, 0, "{url}");
        assert!(attempt.error.contains("loopback"), "{url}: {attempt:?}");
    }
    assert_eq!(
        receiver.received("/h").len(),
        1,
        "a refused attempt reached the receiver"
    );
}

/// A name other than `localhost` that resolves only to loopback addresses, if the machine has
/// one (its own host name usually does, through /etc/hosts).
fn loopback_host_name() -> Option<String> {
    use std::net::ToSocketAddrs as _;
    let name = std::fs::read_to_string("/etc/hostname")
        .ok()?
        .trim()
        .to_owned();
    if name.is_empty() || name.contains('.') && name.ends_with(".localhost") || name == "localhost"
    {
        return None;
    }
    let addrs: Vec<_> = (name.as_str(), 80).to_socket_addrs().ok()?.collect();
    (!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())).then_some(name)
}

async fn an_idempotency_key_creates_one_delivery(backend: Backend) {
    let server = start(backend).await;
    let receiver = Receiver::start().await;
    configure(
        &server,
        json!({"ai_interview_id": 4,
        "webhooks": {"submission": {"status": true, "url": receiver.url("/s")}}}),
    )
    .await;
    let mut client = events(&server).await;

    let first = publish(
        &mut client,
        4,
        pb::Event::Submission,
        json!({"n": 1}),
        Some("k-1"),
    )
    .await;
    let second = publish(
        &mut client,
        4,
        pb::Event::Submission,
        json!({"n": 2}),
        Some("k-1"),
    )
    .await;
    let other = publish(
        &mut client,
        4,
        pb::Event::Submission,
        json!({"n": 3}),
        Some("k-2"),
    )
    .await;
    let first = first.delivery.unwrap().id;
    assert_eq!(second.delivery.unwrap().id, first);
    assert_ne!(other.delivery.unwrap().id, first);

    // The key names one event: reusing it for another is refused, not answered with the first.
    let err = client
        .publish_event(pb::PublishEventRequest {
            ai_interview_id: 5,
            event: pb::Event::Submission.into(),
            data: None,
            idempotency_key: Some("k-1".into()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Aborted, "{err:?}");
    assert!(
        err.message().contains("idempotency_key"),
        "{}",
        err.message()
    );

    receiver.wait_for("/s", 2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ns: Vec<i64> = receiver
        .received("/s")
        .iter()
        .map(|r| r.json()["data"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns.len(), 2, "{ns:?}");
    assert!(
        ns.contains(&1) && ns.contains(&3) && !ns.contains(&2),
        "{ns:?}"
    );
}

async fn redeliver_sends_again_with_the_same_id(backend: Backend) {
    let server = start(backend).await;
    let receiver = Receiver::start().await;
    configure_start(&server, 6, &receiver.url("/h")).await;
    let mut client = events(&server).await;
    let id = publish_id(&mut client, 6, pb::Event::Start).await;
    settled(&mut client, &id).await;

    // Over REST, as a legacy caller would.
    let reply = server
        .send(
            server
                .http
                .post(server.url(&format!(
                    "/ai-interviews/settings/webhooks/deliveries/{id}/redeliver/"
                )))
                .header("apiKey", &server.api_key),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["data"]["state"], "pending");

    let got = receiver.wait_for("/h", 2, WAIT).await;
    assert_eq!(got[1].header("webhook-id"), id);
    let d = settled(&mut client, &id).await;
    assert_eq!(d.attempts.len(), 2);

    // Another account cannot see or redeliver it.
    let stranger = server.create_key("other").await;
    let reply = server
        .send(
            server
                .http
                .get(server.url(&format!("/ai-interviews/settings/webhooks/deliveries/{id}")))
                .header("apiKey", &stranger),
        )
        .await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    let list = "/ai-interviews/settings/webhooks/deliveries/?ai_interview_id=6";
    let reply = server
        .send(
            server
                .http
                .get(server.url(list))
                .header("apiKey", &stranger),
        )
        .await;
    assert_eq!(
        reply.status, 404,
        "another account's log must look absent: {}",
        reply.body
    );
    let reply = server
        .send(
            server
                .http
                .get(server.url(list))
                .header("apiKey", &server.api_key),
        )
        .await;
    assert_eq!(
        reply.json()["data"]["deliveries"].as_array().unwrap().len(),
        1
    );

    // While an attempt is under way, a redelivery would send the event twice at once.
    receiver.script("/h", [Answer::Slow(Duration::from_millis(800))]);
    client
        .redeliver_delivery(pb::RedeliverDeliveryRequest { id: id.clone() })
        .await
        .unwrap();
    receiver.wait_for("/h", 3, WAIT).await;
    let err = client
        .redeliver_delivery(pb::RedeliverDeliveryRequest { id: id.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Aborted, "{err:?}");
}

async fn a_test_event_is_sent_now_and_reported(backend: Backend) {
    let server = start(backend).await;
    let receiver = Receiver::start().await;
    receiver.script("/t", [Answer::Status(202), Answer::Status(500)]);
    configure(
        &server,
        json!({"ai_interview_id": 8,
        "webhooks": {"start": {"status": false, "url": receiver.url("/t")}}}),
    )
    .await;
    let mut client = events(&server).await;

    let reply = client
        .send_test_event(pb::SendTestEventRequest {
            ai_interview_id: 8,
            event: pb::Event::Start.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reply.success);
    assert_eq!(reply.attempt.unwrap().http_status, 202);
    let got = receiver.received("/t");
    assert_eq!(got.len(), 1, "sent before the reply");
    assert_eq!(got[0].json()["data"]["test"], true);
    assert!(got[0].header("webhook-id").starts_with("msg_test_"));

    let reply = server
        .send(
            server
                .http
                .post(server.url("/ai-interviews/settings/webhooks/test/"))
                .header("apiKey", &server.api_key)
                .header("Content-Type", "application/json")
                .body(r#"{"ai_interview_id": 8, "event": "start"}"#),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["data"]["success"], false);
    assert_eq!(reply.json()["data"]["attempt"]["http_status"], 500);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        receiver.received("/t").len(),
        2,
        "a test event is never retried"
    );
}

async fn rotation_signs_with_both_secrets(backend: Backend) {
    let server = start(backend).await;
    let receiver = Receiver::start().await;
    configure_start(&server, 2, &receiver.url("/h")).await;
    let old = signing_secret(&server, 2).await;
    let rotated = server
        .grpc()
        .await
        .rotate_signing_secret(pb::RotateSigningSecretRequest { ai_interview_id: 2 })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(rotated.secret, old);
    assert!(rotated.previous_expire_time.is_some());
    assert_eq!(signing_secret(&server, 2).await, rotated.secret);

    let mut client = events(&server).await;
    publish_id(&mut client, 2, pb::Event::Start).await;
    let got = receiver.wait_for("/h", 1, WAIT).await.remove(0);
    let header = got.header("webhook-signature");
    assert_eq!(header.split(' ').count(), 2, "{header}");
    for secret in [&old, &rotated.secret] {
        let ok = verifying_signatures(
            secret,
            got.header("webhook-id"),
            got.header("webhook-timestamp"),
            &got.body,
            header,
        );
        assert_eq!(ok, 1, "no signature under {}", &secret[..10]);
    }
}

async fn disabling_cancels_what_is_queued(backend: Backend) {
    let server = start(backend).await;
    let receiver = Receiver::start().await;
    receiver.script("/h", std::iter::repeat_n(Answer::Status(500), 10));
    configure_start(&server, 7, &receiver.url("/h")).await;
    let mut client = events(&server).await;
    let id = publish_id(&mut client, 7, pb::Event::Start).await;
    receiver.wait_for("/h", 1, WAIT).await;

    configure(
        &server,
        json!({"ai_interview_id": 7, "webhooks": {"start": {"status": false}}}),
    )
    .await;
    let d = settled(&mut client, &id).await;
    assert_eq!(d.state, pb::DeliveryState::Cancelled as i32, "{d:?}");
    assert!(d.last_error.contains("disabled"), "{d:?}");
}

async fn a_corrected_password_applies_to_the_next_retry(backend: Backend) {
    let server = start(backend).await;
    let receiver = Receiver::start().await;
    // The receiver refuses the first two attempts; meanwhile the password is corrected.
    receiver.script("/h", [Answer::Status(401), Answer::Status(401)]);
    configure(
        &server,
        json!({"ai_interview_id": 3, "webhooks": {
        "start": {"status": true, "url": receiver.url("/h")},
        "auth": {"type": "basic", "basic": {"username": "u", "password": "wrong"}}}}),
    )
    .await;
    let mut client = events(&server).await;
    let id = publish_id(&mut client, 3, pb::Event::Start).await;
    receiver.wait_for("/h", 1, WAIT).await;
    configure(
        &server,
        json!({"ai_interview_id": 3, "webhooks": {
        "auth": {"type": "basic", "basic": {"username": "u", "password": "right"}}}}),
    )
    .await;

    let got = receiver.wait_for("/h", 3, WAIT).await;
    let right = format!("Basic {}", STANDARD.encode("u:right"));
    assert_eq!(got[2].header("authorization"), right);
    assert_eq!(
        settled(&mut client, &id).await.state,
        pb::DeliveryState::Succeeded as i32
    );
}

async fn publishing_to_a_disabled_webhook_says_why(backend: Backend) {
    let server = start(backend).await;
    configure_start(&server, 11, "https://example.com/h").await;
    let mut client = events(&server).await;

    let reply = publish(&mut client, 11, pb::Event::Submission, json!({}), None).await;
    assert!(reply.delivery.is_none());
    assert_eq!(
        reply.skipped_reason,
        "the submission webhook is disabled or unset"
    );
    let reply = publish(&mut client, 12, pb::Event::Start, json!({}), None).await;
    assert!(
        reply.skipped_reason.contains("no webhook settings"),
        "{reply:?}"
    );

    let err = client
        .publish_event(pb::PublishEventRequest {
            ai_interview_id: 11,
            event: 0,
            data: None,
            idempotency_key: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("event"), "{}", err.message());
}

async fn shutdown_lets_an_attempt_in_flight_finish(backend: Backend) {
    let mut server = start(backend).await;
    let receiver = Receiver::start().await;
    receiver.script("/slow", [Answer::Slow(Duration::from_millis(700))]);
    configure_start(&server, 1, &receiver.url("/slow")).await;
    let mut client = events(&server).await;
    let id = publish_id(&mut client, 1, pb::Event::Start).await;
    receiver.wait_for("/slow", 1, WAIT).await;

    // The receiver is still answering when the server is told to stop (as by SIGTERM).
    server.restart().await;
    let mut client = events(&server).await;
    let d = settled(&mut client, &id).await;
    assert_eq!(d.state, pb::DeliveryState::Succeeded as i32, "{d:?}");
    assert_eq!(
        d.attempts.len(),
        1,
        "the in-flight attempt finished and was recorded: {d:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.received("/slow").len(),
        1,
        "nothing was sent twice"
    );
}

async fn old_finished_deliveries_are_purged(backend: Backend) {
    use diesel::prelude::*;
    use interview_webhooks::storage::deliveries;
    use interview_webhooks::storage::now_ms;
    use interview_webhooks::storage::schema::{deliveries as d, delivery_attempts as a};

    let server = start(backend).await;
    let receiver = Receiver::start().await;
    configure_start(&server, 1, &receiver.url("/h")).await;
    let mut client = events(&server).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = publish_id(&mut client, 1, pb::Event::Start).await;
        settled(&mut client, &id).await;
        ids.push(id);
    }
    let [old, waiting, recent] = <[String; 3]>::try_from(ids.clone()).unwrap();

    // `old` finished long ago; `waiting` is as old but still pending; `recent` just finished.
    let (purged, left, orphans) = server
        .db(move |conn| {
            let long_ago = now_ms() - 40 * 24 * 3600 * 1000;
            diesel::update(d::table.filter(d::id.eq_any([&old, &waiting])))
                .set(d::updated_at.eq(long_ago))
                .execute(conn)
                .unwrap();
            diesel::update(d::table.filter(d::id.eq(&waiting)))
                .set((
                    d::state.eq("pending"),
                    d::next_attempt_at.eq(now_ms() + 3_600_000),
                ))
                .execute(conn)
                .unwrap();

            let purged =
                deliveries::purge_finished(conn, now_ms() - 30 * 24 * 3600 * 1000, 100).unwrap();
            let left: Vec<String> = d::table.select(d::id).load(conn).unwrap();
            let orphans: i64 = a::table
                .filter(a::delivery_id.eq(&old))
                .count()
                .get_result(conn)
                .unwrap();
            (purged, left, orphans)
        })
        .await;
    assert_eq!(purged, 1);
    assert!(!left.contains(&ids[0]), "{left:?}");
    assert!(left.contains(&ids[1]) && left.contains(&recent), "{left:?}");
    assert_eq!(orphans, 0, "attempts of a purged delivery remain");
}

/// With one attempt at a time the worker's queue holds 4 events; a burst of 30 to a slow
/// receiver overflows it, and the overflow is committed unleased and claimed from the outbox.
/// Every event must still arrive exactly once and be recorded as one successful attempt.
async fn events_that_find_the_worker_busy_are_delivered_once(backend: Backend) {
    const EVENTS: usize = 30;
    let mut options = fast(true);
    options.delivery.concurrency = 1;
    let server = TestServer::start_with(backend, options).await;
    let receiver = Receiver::start().await;
    receiver.script(
        "/h",
        std::iter::repeat_n(Answer::Slow(Duration::from_millis(50)), EVENTS),
    );
    configure_start(&server, 21, &receiver.url("/h")).await;

    let mut client = events(&server).await;
    let mut ids = Vec::new();
    for n in 0..EVENTS {
        let reply = publish(&mut client, 21, pb::Event::Start, json!({"n": n}), None).await;
        ids.push(reply.delivery.expect("queued").id);
    }

    let got = receiver.wait_for("/h", EVENTS, WAIT).await;
    let mut seen: Vec<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    seen.sort_unstable();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(seen, expected, "each event once, under its own webhook-id");

    for id in &ids {
        let d = settled(&mut client, id).await;
        assert_eq!(d.state, pb::DeliveryState::Succeeded as i32, "{d:?}");
        assert_eq!(d.attempts.len(), 1, "{d:?}");
    }
    // Nothing arrives late as a second copy.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received("/h").len(), EVENTS);
}

/// The old URL answers 410 while the user is already pointing the webhook elsewhere: the 410
/// must not switch off the new URL.
async fn a_410_from_a_replaced_url_leaves_the_new_one_enabled(backend: Backend) {
    let server = start(backend).await;
    let receiver = Receiver::start().await;
    receiver.script(
        "/old",
        [Answer::SlowStatus(Duration::from_millis(500), 410)],
    );
    configure_start(&server, 31, &receiver.url("/old")).await;
    let mut client = events(&server).await;
    let id = publish_id(&mut client, 31, pb::Event::Start).await;
    receiver.wait_for("/old", 1, WAIT).await;
    configure_start(&server, 31, &receiver.url("/new")).await;

    let d = settled(&mut client, &id).await;
    assert_eq!(d.state, pb::DeliveryState::Failed as i32, "{d:?}");
    let stored = server.get_data(31).await;
    assert_eq!(stored["webhooks"]["start"]["status"], true, "{stored}");
    assert!(stored["webhooks"]["start"].get("disabled_reason").is_none());
}

/// While the worker is busy with another receiver, the user disables one webhook and moves
/// another: the queued events must see that, not the settings of the moment they were
/// published.
async fn the_first_attempt_uses_settings_changed_after_the_publish(backend: Backend) {
    let mut options = fast(true);
    options.delivery.concurrency = 1;
    let server = TestServer::start_with(backend, options).await;
    let receiver = Receiver::start().await;
    receiver.script("/blocker", [Answer::Slow(Duration::from_millis(400))]);
    for (id, path) in [(41, "/blocker"), (42, "/to-disable"), (43, "/before")] {
        configure_start(&server, id, &receiver.url(path)).await;
    }
    let mut client = events(&server).await;
    publish_id(&mut client, 41, pb::Event::Start).await;
    receiver.wait_for("/blocker", 1, WAIT).await;
    let disabled = publish_id(&mut client, 42, pb::Event::Start).await;
    let moved = publish_id(&mut client, 43, pb::Event::Start).await;

    // The single slot is still taken by the blocker.
    configure(
        &server,
        json!({"ai_interview_id": 42, "webhooks": {"start": {"status": false}}}),
    )
    .await;
    configure_start(&server, 43, &receiver.url("/after")).await;

    let d = settled(&mut client, &disabled).await;
    assert_eq!(d.state, pb::DeliveryState::Cancelled as i32, "{d:?}");
    let d = settled(&mut client, &moved).await;
    assert_eq!(d.state, pb::DeliveryState::Succeeded as i32, "{d:?}");
    assert_eq!(receiver.received("/after").len(), 1);
    assert!(receiver.received("/before").is_empty());
    assert!(receiver.received("/to-disable").is_empty());
}

/// PostgreSQL refuses NUL in text: a receiver answering with one must not make the outcome
/// impossible to record (the event would be sent again forever).
async fn a_nul_in_the_answer_is_recorded(backend: Backend) {
    let server = start(backend).await;
    let receiver = Receiver::start().await;
    receiver.script("/nul", [Answer::WithBody(200, "ok\0nul")]);
    configure_start(&server, 51, &receiver.url("/nul")).await;
    let mut client = events(&server).await;
    let id = publish_id(&mut client, 51, pb::Event::Start).await;

    let d = settled(&mut client, &id).await;
    assert_eq!(d.state, pb::DeliveryState::Succeeded as i32, "{d:?}");
    assert_eq!(d.attempts.len(), 1, "{d:?}");
    assert_eq!(d.attempts[0].response_body, "ok\u{FFFD}nul");
    assert_eq!(receiver.received("/nul").len(), 1);
}

/// The worker polls the outbox every `poll_interval` (here 5 s); a retry due in 300 ms must
/// not wait for the next poll.
async fn a_retry_sooner_than_the_poll_is_made_on_time(backend: Backend) {
    let mut options = fast(true);
    options.delivery.schedule = RetrySchedule::parse("300ms").unwrap();
    options.delivery.poll_interval = Duration::from_secs(5);
    let server = TestServer::start_with(backend, options).await;
    let receiver = Receiver::start().await;
    receiver.script("/h", [Answer::Status(500)]);
    configure_start(&server, 61, &receiver.url("/h")).await;
    let mut client = events(&server).await;
    // Let the worker's first poll pass, so that the next one is about 5 s away.
    tokio::time::sleep(Duration::from_millis(200)).await;
    publish_id(&mut client, 61, pb::Event::Start).await;

    receiver.wait_for("/h", 1, WAIT).await;
    let first = std::time::Instant::now();
    receiver.wait_for("/h", 2, WAIT).await;
    let gap = first.elapsed();
    assert!(
        gap < Duration::from_secs(2),
        "the retry came {gap:?} after the first attempt"
    );
}
