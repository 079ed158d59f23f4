//! `interview_webhooks.v1.WebhookSettings` through a tonic client.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use interview_webhooks::pb;
use serde_json::json;
use tonic::Code;
use tonic_types::StatusExt as _;

use crate::common::{Backend, TestServer};
use crate::settings_rest::auth_columns;

both_backends!(
    update_then_get,
    field_violations,
    update_mask,
    not_found_and_other_accounts,
    unauthenticated,
    signing_secret,
);

fn webhook(url: &str) -> pb::Webhook {
    pb::Webhook {
        status: Some(true),
        url: Some(url.to_owned()),
        ..Default::default()
    }
}

/// Only the `start` webhook, enabled at `url`.
fn start_only(url: &str) -> pb::Webhooks {
    pb::Webhooks {
        start: Some(webhook(url)),
        ..Default::default()
    }
}

/// Only the `submission` webhook, enabled at `url`.
fn submission_only(url: &str) -> pb::Webhooks {
    pb::Webhooks {
        submission: Some(webhook(url)),
        ..Default::default()
    }
}

fn apikey(key: &str, value: &str) -> pb::WebhookAuth {
    pb::WebhookAuth {
        r#type: "apikey".to_owned(),
        status: None,
        apikey: Some(pb::ApiKeyAuth {
            key: key.to_owned(),
            value: value.to_owned(),
        }),
        basic: None,
    }
}

fn update(id: i64, webhooks: pb::Webhooks) -> pb::UpdateWebhooksRequest {
    pb::UpdateWebhooksRequest {
        ai_interview_id: id,
        webhooks: Some(webhooks),
        update_mask: None,
    }
}

fn get(id: i64) -> pb::GetWebhooksRequest {
    pb::GetWebhooksRequest {
        ai_interview_id: id,
    }
}

/// The field paths of an `INVALID_ARGUMENT`'s `BadRequest`, sorted.
#[track_caller]
fn violated_fields(status: &tonic::Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let bad = status
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("no BadRequest detail: {status:?}"));
    let mut fields: Vec<_> = bad
        .field_violations
        .iter()
        .map(|v| {
            assert!(!v.description.is_empty(), "{} has no description", v.field);
            v.field.clone()
        })
        .collect();
    fields.sort();
    fields
}

async fn update_then_get(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let mut client = srv.grpc().await;

    let stored = client
        .update_webhooks(update(
            5,
            pb::Webhooks {
                start: Some(webhook("https://example.com/start")),
                submission: None,
                auth: Some(apikey("X-Webhook-Key", "grpc-secret")),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.ai_interview_id, 5);
    let webhooks = stored.webhooks.clone().unwrap();
    assert_eq!(webhooks.start, Some(webhook("https://example.com/start")));
    assert_eq!(webhooks.submission, None);
    let auth = webhooks.auth.unwrap();
    assert_eq!(auth.r#type, "apikey");
    assert_eq!(auth.status, Some(true), "auth.status defaults to true");
    assert_eq!(
        auth.apikey,
        Some(pb::ApiKeyAuth {
            key: "X-Webhook-Key".to_owned(),
            value: "********".to_owned(),
        })
    );
    assert!(stored.create_time.is_some() && stored.update_time.is_some());

    let got = client.get_webhooks(get(5)).await.unwrap().into_inner();
    assert_eq!(
        got, stored,
        "GetWebhooks returns what UpdateWebhooks returned"
    );
    assert_eq!(
        auth_columns(&srv, 5).await.2.as_deref(),
        Some("grpc-secret")
    );

    // The REST adapter shows the same settings.
    assert_eq!(
        srv.get_data(5).await,
        json!({
            "ai_interview_id": 5,
            "webhooks": {
                "start": {"status": true, "url": "https://example.com/start"},
                "auth": {
                    "type": "apikey",
                    "status": true,
                    "apikey": {"key": "X-Webhook-Key", "value": "********"}
                }
            }
        })
    );

    // A partial update keeps the rest and moves update_time, not create_time.
    let later = client
        .update_webhooks(update(5, submission_only("https://example.com/submission")))
        .await
        .unwrap()
        .into_inner();
    let webhooks = later.webhooks.unwrap();
    assert_eq!(webhooks.start, Some(webhook("https://example.com/start")));
    assert_eq!(
        webhooks.submission,
        Some(webhook("https://example.com/submission"))
    );
    assert!(webhooks.auth.is_some());
    assert_eq!(later.create_time, stored.create_time);
    let (t0, t1) = (stored.update_time.unwrap(), later.update_time.unwrap());
    assert!((t1.seconds, t1.nanos) >= (t0.seconds, t0.nanos));
}

async fn field_violations(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let mut client = srv.grpc().await;
    client
        .update_webhooks(update(9, start_only("https://example.com/start")))
        .await
        .unwrap();
    let before = client.get_webhooks(get(9)).await.unwrap().into_inner();

    let cases: Vec<(&str, pb::UpdateWebhooksRequest, Vec<&str>)> = vec![
        (
            "nothing to update",
            update(9, pb::Webhooks::default()),
            vec!["webhooks"],
        ),
        (
            "ftp URL",
            update(9, start_only("ftp://example.com/x")),
            vec!["webhooks.start.url"],
        ),
        (
            "metadata URL",
            update(9, submission_only("http://169.254.169.254/latest")),
            vec!["webhooks.submission.url"],
        ),
        (
            "status left out",
            update(
                9,
                pb::Webhooks {
                    start: Some(pb::Webhook {
                        status: None,
                        url: Some("https://example.com/s".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
            vec!["webhooks.start.status"],
        ),
        (
            "bad header name and CRLF value",
            update(
                9,
                pb::Webhooks {
                    auth: Some(apikey("X Bad Key", "a\r\nb")),
                    ..Default::default()
                },
            ),
            vec!["webhooks.auth.apikey.key", "webhooks.auth.apikey.value"],
        ),
        (
            "unknown type",
            update(
                9,
                pb::Webhooks {
                    auth: Some(pb::WebhookAuth {
                        r#type: "oauth".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
            vec!["webhooks.auth.type"],
        ),
        (
            "zero interview id and a bad URL",
            update(0, start_only("not a url")),
            vec!["ai_interview_id", "webhooks.start.url"],
        ),
    ];
    for (case, request, expected) in cases {
        let status = client.update_webhooks(request).await.unwrap_err();
        assert_eq!(violated_fields(&status), expected, "{case}");
        let after = client.get_webhooks(get(9)).await.unwrap().into_inner();
        assert_eq!(after, before, "{case} changed the settings");
    }

    let status = client.get_webhooks(get(-1)).await.unwrap_err();
    assert_eq!(violated_fields(&status), ["ai_interview_id"]);
}

async fn update_mask(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let mut client = srv.grpc().await;
    client
        .update_webhooks(update(
            12,
            pb::Webhooks {
                start: Some(webhook("https://example.com/start")),
                auth: Some(apikey("X-Key", "v")),
                ..Default::default()
            },
        ))
        .await
        .unwrap();

    let mask = |paths: &[&str]| {
        Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        })
    };

    // Listed but unset: removed (AIP-134), the same as REST's `"auth": null`.
    let stored = client
        .update_webhooks(pb::UpdateWebhooksRequest {
            ai_interview_id: 12,
            webhooks: Some(pb::Webhooks::default()),
            update_mask: mask(&["webhooks.auth"]),
        })
        .await
        .unwrap()
        .into_inner();
    let webhooks = stored.webhooks.unwrap();
    assert_eq!(webhooks.auth, None);
    assert_eq!(webhooks.start, Some(webhook("https://example.com/start")));
    assert_eq!(auth_columns(&srv, 12).await, (None, None, None, None, None));

    // Set but not listed: ignored.
    let stored = client
        .update_webhooks(pb::UpdateWebhooksRequest {
            ai_interview_id: 12,
            webhooks: Some(pb::Webhooks {
                start: Some(webhook("https://example.com/ignored")),
                submission: Some(webhook("https://example.com/submission")),
                ..Default::default()
            }),
            update_mask: mask(&["webhooks.submission"]),
        })
        .await
        .unwrap()
        .into_inner();
    let webhooks = stored.webhooks.unwrap();
    assert_eq!(webhooks.start, Some(webhook("https://example.com/start")));
    assert_eq!(
        webhooks.submission,
        Some(webhook("https://example.com/submission"))
    );

    let status = client
        .update_webhooks(pb::UpdateWebhooksRequest {
            ai_interview_id: 12,
            webhooks: Some(pb::Webhooks::default()),
            update_mask: mask(&["webhooks.nope"]),
        })
        .await
        .unwrap_err();
    assert!(violated_fields(&status).contains(&"update_mask".to_owned()));
}

async fn not_found_and_other_accounts(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let mut mine = srv.grpc().await;
    let other_key = srv.create_key("acme").await;
    let mut theirs = srv.grpc_with_key(Some(&other_key)).await;

    let status = mine.get_webhooks(get(3)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    mine.update_webhooks(update(3, start_only("https://example.com/mine")))
        .await
        .unwrap();
    let stored = mine.get_webhooks(get(3)).await.unwrap().into_inner();

    for status in [
        theirs.get_webhooks(get(3)).await.unwrap_err(),
        theirs
            .get_signing_secret(pb::GetSigningSecretRequest { ai_interview_id: 3 })
            .await
            .unwrap_err(),
        theirs
            .rotate_signing_secret(pb::RotateSigningSecretRequest { ai_interview_id: 3 })
            .await
            .unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }

    theirs
        .update_webhooks(update(3, start_only("https://example.com/theirs")))
        .await
        .unwrap();
    assert_eq!(
        mine.get_webhooks(get(3)).await.unwrap().into_inner(),
        stored
    );
    let their_start = theirs.get_webhooks(get(3)).await.unwrap().into_inner();
    assert_eq!(
        their_start.webhooks.unwrap().start,
        Some(webhook("https://example.com/theirs"))
    );
}

async fn unauthenticated(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let mut wrong_secret = srv.api_key.clone();
    wrong_secret.push('x');

    for key in [None, Some("nonsense"), Some(wrong_secret.as_str())] {
        let mut client = srv.grpc_with_key(key).await;
        let status = client.get_webhooks(get(1)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{key:?}: {status:?}");
        let status = client
            .update_webhooks(update(1, start_only("https://example.com/s")))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{key:?}: {status:?}");
    }
    let status = srv.grpc().await.get_webhooks(get(1)).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::NotFound,
        "an unauthenticated update stored something"
    );
}

async fn signing_secret(backend: Backend) {
    let srv = TestServer::start(backend).await;
    let mut client = srv.grpc().await;
    let get_secret = |id| pb::GetSigningSecretRequest {
        ai_interview_id: id,
    };

    let status = client.get_signing_secret(get_secret(4)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    client
        .update_webhooks(update(4, start_only("https://example.com/start")))
        .await
        .unwrap();
    let first = client
        .get_signing_secret(get_secret(4))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.ai_interview_id, 4);
    let key = first
        .secret
        .strip_prefix("whsec_")
        .unwrap_or_else(|| panic!("not a whsec_ secret: {}", first.secret));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key)
        .expect("base64 after whsec_");
    assert!(
        bytes.len() >= 24,
        "a {}-byte signing key is too short",
        bytes.len()
    );
    assert_eq!(first.previous_expire_time, None);

    // Stable until rotated, and unaffected by settings changes.
    client
        .update_webhooks(update(4, submission_only("https://example.com/sub")))
        .await
        .unwrap();
    let again = client
        .get_signing_secret(get_secret(4))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.secret, first.secret);

    // Another interview has its own.
    client
        .update_webhooks(update(6, start_only("https://example.com/start")))
        .await
        .unwrap();
    let other = client
        .get_signing_secret(get_secret(6))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(other.secret, first.secret);

    let rotated = client
        .rotate_signing_secret(pb::RotateSigningSecretRequest { ai_interview_id: 4 })
        .await
        .unwrap()
        .into_inner();
    assert!(rotated.secret.starts_with("whsec_"));
    assert_ne!(rotated.secret, first.secret);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let expires = rotated
        .previous_expire_time
        .expect("the previous secret's end");
    let in_hours = (expires.seconds - now.as_secs() as i64) as f64 / 3600.0;
    assert!(
        (23.9..=24.1).contains(&in_hours),
        "previous secret ends in {in_hours} h"
    );
    let current = client
        .get_signing_secret(get_secret(4))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(current.secret, rotated.secret);

    let status = client
        .rotate_signing_secret(pb::RotateSigningSecretRequest {
            ai_interview_id: 99,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}
