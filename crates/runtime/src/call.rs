//! What the runtime keeps of an incoming mutating call: its idempotency key,
//! its deadline, its trace context, and who made it (for the audit log).

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use tonic::metadata::MetadataMap;

use crate::auth::{self, Principal};
use crate::error::ApiError;
use crate::idempotency;
use crate::telemetry;

/// A mutating call on its way to the writer.
#[derive(Debug, Clone, Default)]
pub struct Call {
    /// AIP-155 key; `None` when the caller sent no `request_id`.
    pub(crate) key: Option<idempotency::Key>,
    /// When the caller stops waiting (`grpc-timeout`); work not started by
    /// then is not done.
    pub(crate) deadline: Option<Instant>,
    /// W3C `traceparent` of the call, kept with any hand-over it causes.
    pub(crate) trace: String,
    /// Who called (`None` on a service without a keyring).
    pub(crate) caller: Option<Arc<Principal>>,
    /// The full gRPC method.
    pub(crate) method: String,
    pub(crate) request_id: String,
    /// The record the call names, when the handler knows it before the
    /// step runs (the step can name it instead: [`crate::Done::about`]).
    pub(crate) about: String,
}

impl Call {
    /// A call to `method` (the full gRPC path) carrying `request_id`.
    pub fn new<T: Message>(request: &tonic::Request<T>, method: &str, request_id: &str) -> Result<Call, ApiError> {
        if request_id.len() > 128 {
            return Err(ApiError::field("request_id", "must be at most 128 characters"));
        }
        Ok(Call {
            key: idempotency::Key::new(method, request_id, request.get_ref()),
            request_id: request_id.to_owned(),
            ..Call::streaming(request, method)
        })
    }

    /// Names the record the call is about: the audit log's `record`, and
    /// the subject of its stored response (which erasing that record's
    /// person scrubs).
    pub fn about(mut self, record: impl Into<String>) -> Call {
        self.about = record.into();
        self
    }

    /// A call without a request id of its own (a client stream, whose
    /// messages each become a unit): who made it, and its method.
    pub fn streaming<T>(request: &tonic::Request<T>, method: &str) -> Call {
        Call {
            deadline: deadline(request.metadata()),
            trace: telemetry::current_traceparent(request.metadata()),
            caller: auth::caller(request).cloned(),
            method: method.to_owned(),
            ..Call::default()
        }
    }

    /// Whether the caller's deadline has passed.
    pub fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// How long before its caller's deadline a call that waits answers, so the
/// caller gets the answer (or why there is none) rather than its own timeout.
const ANSWER_MARGIN: Duration = Duration::from_millis(50);

/// When a call that waits (a long poll, a read waiting for a consistency
/// token) must answer: the caller's deadline less a margin, never before
/// now; `None` when the caller set no deadline.
pub fn answer_by(metadata: &MetadataMap) -> Option<Instant> {
    let d = deadline(metadata)?;
    Some(d.checked_sub(ANSWER_MARGIN).unwrap_or(d).max(Instant::now()))
}

/// The deadline a `grpc-timeout` header sets, counted from now.
pub fn deadline(metadata: &MetadataMap) -> Option<Instant> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    parse_timeout(value).map(|d| Instant::now() + d)
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("5000u"), Some(Duration::from_micros(5000)));
        for bad in ["", "m", "100", "100x", "123456789S", "-1S"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }
}
