//! The REST adapter for legacy callers and load balancers.
//!
//! It maps the documented JSON onto the same proto requests the gRPC server takes and calls the
//! same service code in the same process: no rule is checked here that the service does not
//! check itself. What is HTTP's alone lives here: the body limit, the content type, the method,
//! JSON syntax and field types, and the `apiKey` header.

mod events;
mod json;
mod settings;

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::error::{Error, FieldViolation};
use crate::service::App;
use crate::service::auth::AccountId;

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Header that carries the API key (matched case-insensitively, as HTTP requires).
pub const API_KEY_HEADER: &str = "apikey";

/// The REST routes.
pub fn router(app: App) -> Router {
    let webhooks = settings::routes();
    let router = Router::new()
        .route("/ai-interviews/settings/webhooks/", webhooks.clone())
        .route("/ai-interviews/settings/webhooks", webhooks)
        .route("/healthz", get(healthz));
    events::add_routes(router)
        .fallback(not_found)
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            crate::server::REQUEST_TIMEOUT,
        ))
        .with_state(app)
}

/// `{"status":"ok"}` while the database answers a read and takes a write; 503 otherwise.
async fn healthz(axum::extract::State(app): axum::extract::State<App>) -> Response {
    match app.settings.check_health().await {
        Ok(()) => Json(json!({"status": "ok"})).into_response(),
        // The cause is in the server's log (the error's own mapping logs it); a probe only
        // needs to know that this instance should not get traffic.
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database does not answer reads and writes; see the server's log",
        )
        .into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed here"),
    )
    .with_field(
        "method",
        "use PUT to update and GET to read /ai-interviews/settings/webhooks/; POST for the \
         actions under it",
    )
}

/// An error as the REST adapter answers it:
/// `{"status":"error","message":"...","errors":[{"field":"...","message":"..."}]}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    errors: Vec<FieldViolation>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            errors: Vec::new(),
        }
    }

    fn invalid(field: &str, message: impl Into<String>) -> Self {
        Error::invalid(field, message).into()
    }

    /// Names the request part at fault, for errors that are not about a body field.
    fn with_field(mut self, field: &str, message: impl Into<String>) -> Self {
        self.errors.push(FieldViolation::new(field, message));
        self
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        Self {
            status: err.http_status(),
            message: err.to_string(),
            errors: err.violations().to_vec(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let errors: Vec<_> = self
            .errors
            .iter()
            .map(|v| json!({"field": v.field, "message": v.description}))
            .collect();
        let body = json!({"status": "error", "message": self.message, "errors": errors});
        (self.status, Json(body)).into_response()
    }
}

/// The account of the request's `apiKey` header.
async fn account(app: &App, headers: &HeaderMap) -> Result<AccountId, ApiError> {
    // A header that is not text cannot be a key of ours; say "invalid", not "missing".
    let presented = headers
        .get(API_KEY_HEADER)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    Ok(app.auth.authenticate(presented).await?)
}

/// `ai_interview_id` from the query string, if given.
fn query_interview_id(query: &Query<HashMap<String, String>>) -> Result<Option<i64>, ApiError> {
    match query.get("ai_interview_id") {
        None => Ok(None),
        Some(raw) => json::parse_interview_id(raw)
            .map(Some)
            .ok_or_else(|| ApiError::invalid("ai_interview_id", json::INTERVIEW_ID_HINT)),
    }
}

/// Reads a JSON request body into `T`: checks the content type and size, then parses strictly
/// (unknown fields, wrong types and lists in place of objects are refused, naming the field).
async fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<T, ApiError> {
    require_json(headers)?;
    let bytes = read_body(headers, body).await?;
    Ok(json::parse_without_lists(&bytes)?)
}

/// Refuses a body that is not JSON. A missing `Content-Type` is taken as JSON, since legacy
/// callers' scripts often omit it.
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported content type: send the body as JSON with `Content-Type: \
             application/json`",
        )
        .with_field("Content-Type", "must be application/json"))
    }
}

/// Reads the body, refusing one over [`MAX_BODY_BYTES`].
async fn read_body(
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<axum::body::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body too large: the limit is {MAX_BODY_BYTES} bytes"),
        )
        .with_field("body", format!("at most {MAX_BODY_BYTES} bytes"))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    // Past the declared length check the only way to fail here is a chunked body that grows
    // over the limit (or a client that vanishes, which never sees the answer anyway).
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| too_large())
}
