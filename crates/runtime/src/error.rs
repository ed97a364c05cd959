//! The one table from failures to gRPC statuses.
//!
//! Each service's domain errors convert into [`ApiError`]; only this module
//! builds a `tonic::Status`. Caller faults carry details the caller can act on
//! (`google.rpc.BadRequest` field violations, `PreconditionFailure`);
//! unexpected failures are logged once with their cause chain and reach the
//! caller as a bare INTERNAL.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// A failure as the API reports it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; each violation names a field.
    #[error("invalid argument")]
    InvalidArgument(Vec<FieldViolation>),
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is well formed but the entity's state does not allow it.
    #[error("{description}")]
    FailedPrecondition { kind: &'static str, subject: String, description: String },
    /// A concurrent request got there first; retrying is safe.
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
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
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if crate::db::is_unique_violation(&e) {
            return ApiError::Aborted("a concurrent request changed the same data; retry".to_owned());
        }
        ApiError::Internal(anyhow::Error::new(e).context("database"))
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        match e {
            ApiError::InvalidArgument(violations) => {
                let message =
                    violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; ");
                Status::with_error_details(
                    Code::InvalidArgument,
                    format!("invalid argument: {message}"),
                    ErrorDetails::with_bad_request(violations),
                )
            }
            ApiError::NotFound { what, id } => Status::not_found(format!("{what} {id:?} not found")),
            ApiError::AlreadyExists(m) => Status::already_exists(m),
            ApiError::FailedPrecondition { kind, subject, description } => Status::with_error_details(
                Code::FailedPrecondition,
                description.clone(),
                ErrorDetails::with_precondition_failure_violation(kind, subject, description),
            ),
            ApiError::Aborted(m) => Status::aborted(m),
            ApiError::Unavailable(m) => Status::unavailable(m),
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "request failed");
                Status::internal("internal error")
            }
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
}
