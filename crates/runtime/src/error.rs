//! The one table from failures to gRPC statuses.
//!
//! Each service's domain refusals convert into [`ApiError`]; only this module
//! builds a `tonic::Status`. Caller faults carry details the caller can act
//! on (`google.rpc.BadRequest` field violations, `PreconditionFailure`,
//! `RetryInfo`); unexpected failures are logged once with their cause chain
//! and reach the caller as a bare INTERNAL. A busy or unreachable database is
//! UNAVAILABLE (retryable), never INTERNAL.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// A failure as the API reports it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; each violation names a field.
    #[error("invalid argument: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    #[error("{what} {id:?} not found")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is well formed but the entity's state does not allow it.
    #[error("{description}")]
    FailedPrecondition { kind: &'static str, subject: String, description: String },
    /// The caller is known but may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// A concurrent request got there first; retrying is safe.
    #[error("{0}")]
    Aborted(String),
    /// Too much work queued: refused at once; retrying after `retry_after` is safe.
    #[error("{message}")]
    ResourceExhausted { message: String, retry_after: Duration },
    /// The caller's deadline passed before the work started; it was not done.
    #[error("the deadline passed before the request was executed; it was not applied")]
    DeadlineExceeded,
    /// The database or a peer cannot be reached right now; retrying is safe.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

fn describe(violations: &[FieldViolation]) -> String {
    violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; ")
}

impl ApiError {
    pub fn field(field: impl Into<String>, description: impl Into<String>) -> Self {
        ApiError::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    pub fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        ApiError::NotFound { what, id: id.into() }
    }

    pub fn precondition(kind: &'static str, subject: impl Into<String>, description: impl Into<String>) -> Self {
        ApiError::FailedPrecondition { kind, subject: subject.into(), description: description.into() }
    }

    pub fn overloaded(what: &str, retry_after: Duration) -> Self {
        ApiError::ResourceExhausted {
            message: format!("{what} is at capacity; retry after {} ms", retry_after.as_millis()),
            retry_after,
        }
    }

    /// The gRPC code this error is sent with.
    pub fn code(&self) -> Code {
        match self {
            ApiError::InvalidArgument(_) => Code::InvalidArgument,
            ApiError::NotFound { .. } => Code::NotFound,
            ApiError::AlreadyExists(_) => Code::AlreadyExists,
            ApiError::FailedPrecondition { .. } => Code::FailedPrecondition,
            ApiError::PermissionDenied(_) => Code::PermissionDenied,
            ApiError::Aborted(_) => Code::Aborted,
            ApiError::ResourceExhausted { .. } => Code::ResourceExhausted,
            ApiError::DeadlineExceeded => Code::DeadlineExceeded,
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::Internal(_) => Code::Internal,
        }
    }

    /// The same error again, for a second caller waiting on one outcome.
    /// Internal causes are not cloned; the copy is a bare INTERNAL.
    pub fn duplicate(&self) -> ApiError {
        match self {
            ApiError::InvalidArgument(v) => ApiError::InvalidArgument(v.clone()),
            ApiError::NotFound { what, id } => ApiError::NotFound { what, id: id.clone() },
            ApiError::AlreadyExists(m) => ApiError::AlreadyExists(m.clone()),
            ApiError::FailedPrecondition { kind, subject, description } => {
                ApiError::FailedPrecondition { kind, subject: subject.clone(), description: description.clone() }
            }
            ApiError::PermissionDenied(m) => ApiError::PermissionDenied(m.clone()),
            ApiError::Aborted(m) => ApiError::Aborted(m.clone()),
            ApiError::ResourceExhausted { message, retry_after } => {
                ApiError::ResourceExhausted { message: message.clone(), retry_after: *retry_after }
            }
            ApiError::DeadlineExceeded => ApiError::DeadlineExceeded,
            ApiError::Unavailable(m) => ApiError::Unavailable(m.clone()),
            ApiError::Internal(_) => ApiError::Internal(anyhow::anyhow!("the same request failed")),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if crate::db::is_unique_violation(&e) {
            return ApiError::Aborted("a concurrent request changed the same data; retry".to_owned());
        }
        match e {
            sqlx::Error::PoolTimedOut => ApiError::Unavailable("the database is busy; retry".to_owned()),
            sqlx::Error::PoolClosed => ApiError::Unavailable("the service is shutting down; retry".to_owned()),
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                tracing::warn!(error = %e, "database unreachable");
                ApiError::Unavailable("the database cannot be reached; retry".to_owned())
            }
            e => ApiError::Internal(anyhow::Error::new(e).context("database")),
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        match e {
            ApiError::InvalidArgument(violations) => {
                let message = format!("invalid argument: {}", describe(&violations));
                Status::with_error_details(Code::InvalidArgument, message, ErrorDetails::with_bad_request(violations))
            }
            ApiError::FailedPrecondition { kind, subject, description } => Status::with_error_details(
                Code::FailedPrecondition,
                description.clone(),
                ErrorDetails::with_precondition_failure_violation(kind, subject, description),
            ),
            ApiError::ResourceExhausted { message, retry_after } => Status::with_error_details(
                Code::ResourceExhausted,
                message,
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "request failed");
                Status::internal("internal error")
            }
            other => Status::new(other.code(), other.to_string()),
        }
    }
}

/// Result of an API call.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_violations_reach_the_caller() {
        let status = Status::from(ApiError::field("email", "is required"));
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let bad = details.bad_request().expect("bad request details");
        assert_eq!(bad.field_violations[0].field, "email");
    }

    #[test]
    fn internal_errors_do_not_leak() {
        let status = Status::from(ApiError::Internal(anyhow::anyhow!("password=hunter2")));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("hunter2"));
    }

    #[test]
    fn overload_says_when_to_retry() {
        let status = Status::from(ApiError::overloaded("the writer", Duration::from_millis(100)));
        assert_eq!(status.code(), Code::ResourceExhausted);
        let retry = status.get_error_details().retry_info().cloned().expect("retry info");
        assert_eq!(retry.retry_delay, Some(Duration::from_millis(100)));
    }

    #[test]
    fn a_busy_pool_is_unavailable_not_internal() {
        assert_eq!(ApiError::from(sqlx::Error::PoolTimedOut).code(), Code::Unavailable);
    }
}
