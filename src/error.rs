//! The one error type shared by both transports.
//!
//! Service code returns [`Error`]; the gRPC layer turns it into a `tonic::Status` (with a
//! `google.rpc.BadRequest` for field problems) and the REST adapter into an HTTP status and
//! JSON body, both following the canonical gRPC↔HTTP table. Messages are written for the
//! caller: they name the field and the fix, and never carry a secret or a raw database message.
//! Internal causes are logged once, where they are converted, and replaced by a generic text.

/// One problem with one field of a request, e.g. `webhooks.start.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Dotted path of the field, as in the REST body.
    pub field: String,
    /// What is wrong and how to fix it.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Everything a call can fail with, as the caller should see it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; every violation is listed.
    #[error("{}", summarize(.0))]
    InvalidArgument(Vec<FieldViolation>),

    /// No API key, or one that is unknown or revoked.
    #[error("{0}")]
    Unauthenticated(&'static str),

    /// The thing does not exist for this caller's account.
    #[error("{0}")]
    NotFound(String),

    /// The request conflicts with the current state (HTTP 409).
    #[error("{0}")]
    Conflict(String),

    /// The request is well-formed but not allowed in the current state.
    #[error("{0}")]
    FailedPrecondition(String),

    /// The database cannot be reached or is overloaded; the call may be retried.
    #[error("the service is temporarily unavailable, retry shortly")]
    Unavailable,

    /// A bug or an unexpected state. The cause has been logged, not shown.
    #[error("internal error")]
    Internal,
}

impl Error {
    /// A single field violation.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// The settings of an interview the caller cannot see.
    pub fn interview_not_found(ai_interview_id: i64) -> Self {
        Error::NotFound(format!(
            "AI interview {ai_interview_id} has no webhook settings; \
             create them with UpdateWebhooks (PUT /ai-interviews/settings/webhooks/)"
        ))
    }

    /// The gRPC code of this error.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            Error::InvalidArgument(_) => tonic::Code::InvalidArgument,
            Error::Unauthenticated(_) => tonic::Code::Unauthenticated,
            Error::NotFound(_) => tonic::Code::NotFound,
            Error::Conflict(_) => tonic::Code::Aborted,
            Error::FailedPrecondition(_) => tonic::Code::FailedPrecondition,
            Error::Unavailable => tonic::Code::Unavailable,
            Error::Internal => tonic::Code::Internal,
        }
    }

    /// The HTTP status of this error, from the canonical gRPC mapping.
    pub fn http_status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Error::InvalidArgument(_) => S::BAD_REQUEST,
            Error::Unauthenticated(_) => S::UNAUTHORIZED,
            Error::NotFound(_) => S::NOT_FOUND,
            Error::Conflict(_) => S::CONFLICT,
            Error::FailedPrecondition(_) => S::BAD_REQUEST,
            Error::Unavailable => S::SERVICE_UNAVAILABLE,
            Error::Internal => S::INTERNAL_SERVER_ERROR,
        }
    }

    /// The field violations, empty for other kinds.
    pub fn violations(&self) -> &[FieldViolation] {
        match self {
            Error::InvalidArgument(v) => v,
            _ => &[],
        }
    }
}

fn summarize(violations: &[FieldViolation]) -> String {
    match violations {
        [] => "invalid request".to_owned(),
        [one] => format!("{}: {}", one.field, one.description),
        [first, rest @ ..] => format!(
            "{}: {} (and {} more problem{})",
            first.field,
            first.description,
            rest.len(),
            if rest.len() == 1 { "" } else { "s" }
        ),
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        use tonic_types::{ErrorDetails, StatusExt};

        let code = err.grpc_code();
        let message = err.to_string();
        match err {
            Error::InvalidArgument(violations) => {
                let violations: Vec<_> = violations
                    .into_iter()
                    .map(|v| tonic_types::FieldViolation::new(v.field, v.description))
                    .collect();
                tonic::Status::with_error_details(
                    code,
                    message,
                    ErrorDetails::with_bad_request(violations),
                )
            }
            _ => tonic::Status::new(code, message),
        }
    }
}

/// Database failures: connection trouble is retryable, the rest is a bug. The cause is logged
/// here, once; the caller sees only the generic text.
impl From<diesel::result::Error> for Error {
    fn from(err: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as K, Error as D};
        match &err {
            D::NotFound => Error::Internal,
            D::DatabaseError(K::ClosedConnection | K::SerializationFailure, _) => {
                tracing::warn!(error = %kind_of(&err), "database unavailable");
                Error::Unavailable
            }
            D::DatabaseError(K::Unknown, info) if is_contention(info.message()) => {
                tracing::warn!(error = %kind_of(&err), "database contention");
                Error::Unavailable
            }
            _ => {
                tracing::error!(error = %kind_of(&err), "database error");
                Error::Internal
            }
        }
    }
}

impl From<diesel::r2d2::PoolError> for Error {
    fn from(_: diesel::r2d2::PoolError) -> Self {
        tracing::warn!("no database connection could be had");
        Error::Unavailable
    }
}

/// Lock conflicts that go away when retried: SQLite's busy lock, PostgreSQL's deadlock victim
/// and lock timeout.
fn is_contention(message: &str) -> bool {
    [
        "database is locked",
        "database is busy",
        "deadlock detected",
        "lock timeout",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// What went wrong, for the log. A database message names tables and constraints but not row
/// values (PostgreSQL keeps those in the detail, which is left out).
fn kind_of(err: &diesel::result::Error) -> String {
    use diesel::result::Error as D;
    match err {
        D::DatabaseError(kind, info) => format!("{kind:?}: {}", info.message()),
        other => other.to_string(),
    }
}
