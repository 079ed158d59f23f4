//! `PUT` and `GET /ai-interviews/settings/webhooks/`.

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::{MethodRouter, get};
use serde_json::json;

use super::json::{PutBody, WebhooksBody};
use super::{ApiError, account, json_body, query_interview_id};
use crate::error::Error;
use crate::pb;
use crate::service::App;

/// The methods of the settings resource; any other answers 405.
pub fn routes() -> MethodRouter<App> {
    get(get_webhooks)
        .put(put_webhooks)
        .fallback(super::method_not_allowed)
}

async fn put_webhooks(
    State(app): State<App>,
    query: Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let account = account(&app, &headers).await?;
    let body: PutBody = json_body(&headers, body).await?;

    let from_query = query_interview_id(&query)?;
    let id = match (body.ai_interview_id, from_query) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::invalid(
                "ai_interview_id",
                "given in both the body and the query string, with different values; send one",
            ));
        }
        (a, b) => a.or(b),
    };

    let request = body.into_proto(id.unwrap_or(0));
    app.settings.update(account, request).await?;
    Ok(Json(json!({
        "status": "success",
        "message": "Webhooks updated successfully",
    })))
}

async fn get_webhooks(
    State(app): State<App>,
    query: Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let account = account(&app, &headers).await?;
    let id = query_interview_id(&query)?.ok_or_else(|| {
        Error::invalid(
            "ai_interview_id",
            "required in the query string, e.g. ?ai_interview_id=42",
        )
    })?;

    let stored = app
        .settings
        .get(
            account,
            pb::GetWebhooksRequest {
                ai_interview_id: id,
            },
        )
        .await?;
    let webhooks = WebhooksBody::from_proto(stored.webhooks.unwrap_or_default());
    Ok(Json(json!({
        "status": "success",
        "data": {"ai_interview_id": stored.ai_interview_id, "webhooks": webhooks},
    })))
}
