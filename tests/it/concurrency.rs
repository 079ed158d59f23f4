//! Concurrent partial updates of one interview must all persist: none may overwrite another's
//! part with what it read before the other committed.

use interview_webhooks::pb;
use serde_json::json;
use tokio::task::JoinSet;

use crate::common::{Backend, PUT_SUCCESS, TestServer};

both_backends!(concurrent_partial_updates_all_persist);

const INTERVIEWS: i64 = 50;

/// One concurrent request's outcome, described for the failure message.
type Outcome = Result<(), String>;

fn rest_put(srv: &TestServer, body: serde_json::Value) -> impl Future<Output = Outcome> + use<> {
    let request = srv
        .http
        .put(srv.url(crate::common::SETTINGS_PATH))
        .header("apiKey", &srv.api_key)
        .header("Content-Type", "application/json")
        .body(body.to_string());
    async move {
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        if status == 200 && text == PUT_SUCCESS {
            Ok(())
        } else {
            Err(format!("REST {status}: {text}"))
        }
    }
}

fn grpc_update(
    client: &crate::common::SettingsClient,
    id: i64,
    webhooks: pb::Webhooks,
) -> impl Future<Output = Outcome> + use<> {
    let mut client = client.clone();
    async move {
        client
            .update_webhooks(pb::UpdateWebhooksRequest {
                ai_interview_id: id,
                webhooks: Some(webhooks),
                update_mask: None,
            })
            .await
            .map(|_| ())
            .map_err(|s| format!("gRPC {:?}: {}", s.code(), s.message()))
    }
}

fn url(id: i64, part: &str, round: u32) -> String {
    format!("https://example.com/{id}/{part}/{round}")
}

async fn all_succeed(tasks: &mut JoinSet<(i64, &'static str, Outcome)>) {
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (id, what, outcome) = done.expect("a request task panicked");
        if let Err(e) = outcome {
            failures.push(format!("interview {id} {what}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "concurrent updates failed: {failures:#?}"
    );
}

async fn concurrent_partial_updates_all_persist(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let client = srv.grpc().await;

    // Round 1: each interview is created by two racing requests, one sending only `start`,
    // the other only `submission`; transports alternate so both paths race each other.
    let mut tasks = JoinSet::new();
    for id in 1..=INTERVIEWS {
        let start = json!({"ai_interview_id": id, "webhooks": {
            "start": {"status": true, "url": url(id, "start", 1)}}});
        let submission = pb::Webhooks {
            submission: Some(pb::Webhook {
                status: Some(true),
                url: Some(url(id, "submission", 1)),
                ..Default::default()
            }),
            ..Default::default()
        };
        if id % 2 == 0 {
            let (a, b) = (rest_put(&srv, start), grpc_update(&client, id, submission));
            tasks.spawn(async move { (id, "start", a.await) });
            tasks.spawn(async move { (id, "submission", b.await) });
        } else {
            let submission = json!({"ai_interview_id": id, "webhooks": {
                "submission": {"status": true, "url": url(id, "submission", 1)}}});
            let (a, b) = (rest_put(&srv, start), rest_put(&srv, submission));
            tasks.spawn(async move { (id, "submission", b.await) });
            tasks.spawn(async move { (id, "start", a.await) });
        }
    }
    all_succeed(&mut tasks).await;

    // Round 2: existing rows, three racing parts each.
    for id in 1..=INTERVIEWS {
        let start = json!({"ai_interview_id": id, "webhooks": {
            "start": {"status": true, "url": url(id, "start", 2)}}});
        let submission = json!({"ai_interview_id": id, "webhooks": {
            "submission": {"status": false, "url": url(id, "submission", 2)}}});
        let auth = pb::Webhooks {
            auth: Some(pb::WebhookAuth {
                r#type: "basic".to_owned(),
                status: None,
                apikey: None,
                basic: Some(pb::BasicAuth {
                    username: format!("user{id}"),
                    password: "pw".to_owned(),
                }),
            }),
            ..Default::default()
        };
        let (a, b, c) = (
            rest_put(&srv, start),
            rest_put(&srv, submission),
            grpc_update(&client, id, auth),
        );
        tasks.spawn(async move { (id, "start", a.await) });
        tasks.spawn(async move { (id, "auth", c.await) });
        tasks.spawn(async move { (id, "submission", b.await) });
    }
    all_succeed(&mut tasks).await;

    let mut lost = Vec::new();
    for id in 1..=INTERVIEWS {
        let expected = json!({
            "start": {"status": true, "url": url(id, "start", 2)},
            "submission": {"status": false, "url": url(id, "submission", 2)},
            "auth": {
                "type": "basic",
                "status": true,
                "basic": {"username": format!("user{id}"), "password": "********"}
            }
        });
        let got = srv.get_data(id).await["webhooks"].take();
        if got != expected {
            lost.push(format!("interview {id}: {got}"));
        }
    }
    assert!(lost.is_empty(), "updates were lost: {lost:#?}");
}
