//! The delivery log, redelivery, test events and the signing secret, for legacy callers.
//!
//! | method | path (a trailing `/` is optional) | what |
//! |---|---|---|
//! | GET | `/ai-interviews/settings/webhooks/deliveries/?ai_interview_id=N[&state=failed][&page_size=50][&page_token=T]` | deliveries, newest first |
//! | GET | `/ai-interviews/settings/webhooks/deliveries/{id}/` | one delivery with its attempts |
//! | POST | `/ai-interviews/settings/webhooks/deliveries/{id}/redeliver/` | queue it again |
//! | POST | `/ai-interviews/settings/webhooks/test/` `{"ai_interview_id": N, "event": "start"}` | send a test event now |
//! | GET | `/ai-interviews/settings/webhooks/secret/?ai_interview_id=N` | the signing secret |
//! | POST | `/ai-interviews/settings/webhooks/secret/rotate/` `{"ai_interview_id": N}` | rotate it |

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{MethodRouter, get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::json::INTERVIEW_ID_HINT;
use super::{ApiError, account, json_body, query_interview_id};
use crate::error::Error;
use crate::pb;
use crate::service::App;

const BASE: &str = "/ai-interviews/settings/webhooks";

/// Adds the routes, each with and without its trailing slash.
pub fn add_routes(router: Router<App>) -> Router<App> {
    let routes: [(&str, MethodRouter<App>); 5] = [
        ("/deliveries", get(list)),
        ("/deliveries/{id}", get(get_one)),
        ("/deliveries/{id}/redeliver", post(redeliver)),
        ("/test", post(send_test)),
        ("/secret", get(secret)),
    ];
    let mut router = router;
    for (path, route) in routes {
        let route = route.fallback(super::method_not_allowed);
        router = router
            .route(&format!("{BASE}{path}"), route.clone())
            .route(&format!("{BASE}{path}/"), route);
    }
    let rotate = post(rotate_secret).fallback(super::method_not_allowed);
    router
        .route(&format!("{BASE}/secret/rotate"), rotate.clone())
        .route(&format!("{BASE}/secret/rotate/"), rotate)
}

async fn list(
    State(app): State<App>,
    query: Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let account = account(&app, &headers).await?;
    let id = required_query_id(&query)?;
    let state = match query
        .get("state")
        .map(|s| s.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") => pb::DeliveryState::Unspecified,
        Some("pending") => pb::DeliveryState::Pending,
        Some("succeeded") => pb::DeliveryState::Succeeded,
        Some("failed") => pb::DeliveryState::Failed,
        Some("cancelled") => pb::DeliveryState::Cancelled,
        Some(_) => {
            return Err(ApiError::invalid(
                "state",
                "one of pending, succeeded, failed, cancelled",
            ));
        }
    };
    let page_size = match query.get("page_size") {
        None => 0,
        Some(n) => n
            .parse::<i32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| ApiError::invalid("page_size", "a positive integer, at most 200"))?,
    };

    let page = app
        .events
        .list(
            account,
            pb::ListDeliveriesRequest {
                ai_interview_id: id,
                state: state.into(),
                page_size,
                page_token: query.get("page_token").cloned().unwrap_or_default(),
            },
        )
        .await?;
    let deliveries: Vec<Value> = page.deliveries.iter().map(delivery_json).collect();
    Ok(Json(json!({
        "status": "success",
        "data": {"deliveries": deliveries, "next_page_token": page.next_page_token},
    })))
}

async fn get_one(
    State(app): State<App>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let account = account(&app, &headers).await?;
    let id = delivery_id(path)?;
    let delivery = app.events.get(account, id).await?;
    Ok(Json(
        json!({"status": "success", "data": delivery_json(&delivery)}),
    ))
}

async fn redeliver(
    State(app): State<App>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let account = account(&app, &headers).await?;
    let id = delivery_id(path)?;
    let delivery = app.events.redeliver(account, id).await?;
    Ok(Json(json!({
        "status": "success",
        "message": "Delivery queued again",
        "data": delivery_json(&delivery),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestBody {
    #[serde(default, deserialize_with = "super::json::interview_id")]
    ai_interview_id: Option<i64>,
    #[serde(default)]
    event: Option<String>,
}

async fn send_test(
    State(app): State<App>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let account = account(&app, &headers).await?;
    let body: TestBody = json_body(&headers, body).await?;

    let event = match body.event.as_deref() {
        Some("start") => pb::Event::Start,
        Some("submission") => pb::Event::Submission,
        _ => {
            return Err(ApiError::invalid(
                "event",
                "required: `start` or `submission`",
            ));
        }
    };
    let id = required_body_id(body.ai_interview_id)?;
    let out = app
        .events
        .send_test(
            account,
            pb::SendTestEventRequest {
                ai_interview_id: id,
                event: event.into(),
            },
        )
        .await?;
    Ok(Json(json!({
        "status": "success",
        "data": {
            "success": out.success,
            "attempt": out.attempt.as_ref().map(attempt_json),
        },
    })))
}

async fn secret(
    State(app): State<App>,
    query: Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let account = account(&app, &headers).await?;
    let id = required_query_id(&query)?;
    let secret = app
        .settings
        .signing_secret(
            account,
            pb::GetSigningSecretRequest {
                ai_interview_id: id,
            },
        )
        .await?;
    Ok(Json(
        json!({"status": "success", "data": secret_json(&secret)}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    #[serde(default, deserialize_with = "super::json::interview_id")]
    ai_interview_id: Option<i64>,
}

async fn rotate_secret(
    State(app): State<App>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let account = account(&app, &headers).await?;
    let body: RotateBody = json_body(&headers, body).await?;
    let id = required_body_id(body.ai_interview_id)?;
    let secret = app
        .settings
        .rotate_signing_secret(
            account,
            pb::RotateSigningSecretRequest {
                ai_interview_id: id,
            },
        )
        .await?;
    Ok(Json(json!({
        "status": "success",
        "message": "Signing secret rotated; the previous one keeps signing for 24 hours",
        "data": secret_json(&secret),
    })))
}

/// The `{id}` of a delivery path; a path that cannot be read is answered in our error shape.
fn delivery_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(id)| id)
        .map_err(|_| ApiError::invalid("id", "not a delivery id; ids look like msg_0123abcd..."))
}

fn required_query_id(query: &Query<HashMap<String, String>>) -> Result<i64, ApiError> {
    query_interview_id(query)?.ok_or_else(|| {
        Error::invalid(
            "ai_interview_id",
            "required in the query string, e.g. ?ai_interview_id=42",
        )
        .into()
    })
}

fn required_body_id(id: Option<i64>) -> Result<i64, ApiError> {
    id.ok_or_else(|| ApiError::invalid("ai_interview_id", INTERVIEW_ID_HINT))
}

fn time(t: &Option<prost_types::Timestamp>) -> Value {
    t.as_ref()
        .map_or(Value::Null, |t| Value::String(t.to_string()))
}

fn attempt_json(a: &pb::Attempt) -> Value {
    json!({
        "time": time(&a.time),
        "duration_ms": a.duration_ms,
        "http_status": (a.http_status != 0).then_some(a.http_status),
        "error": (!a.error.is_empty()).then_some(&a.error),
        "response_body": a.response_body,
    })
}

fn delivery_json(d: &pb::Delivery) -> Value {
    let event = match pb::Event::try_from(d.event) {
        Ok(pb::Event::Submission) => "submission",
        _ => "start",
    };
    let state = pb::DeliveryState::try_from(d.state)
        .map(|s| s.as_str_name().to_ascii_lowercase())
        .unwrap_or_default();
    json!({
        "id": d.id,
        "ai_interview_id": d.ai_interview_id,
        "event": event,
        "state": state,
        "created_at": time(&d.create_time),
        "next_attempt_at": time(&d.next_attempt_time),
        "attempt_count": d.attempt_count,
        "last_error": (!d.last_error.is_empty()).then_some(&d.last_error),
        "attempts": d.attempts.iter().map(attempt_json).collect::<Vec<_>>(),
    })
}

fn secret_json(s: &pb::SigningSecret) -> Value {
    json!({
        "ai_interview_id": s.ai_interview_id,
        "secret": s.secret,
        "created_at": time(&s.create_time),
        "previous_expires_at": time(&s.previous_expire_time),
    })
}
