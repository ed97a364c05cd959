//! The layer in front of every service: a limit on calls in flight, beyond
//! which a call is refused at once with RESOURCE_EXHAUSTED and a retry hint
//! (never queued without bound), and the gRPC status of an oversized
//! request.
//!
//! Health checks and reflection are never refused: a Kubernetes probe that
//! fails under load would restart a pod that is merely busy. The event
//! stream keeps its own bound (kpi's long polls are parked most of the time).
//!
//! Oversized requests: tonic refuses a message above the decoding limit
//! before reading it, but reports OUT_OF_RANGE; the gRPC spec says
//! RESOURCE_EXHAUSTED. Its refusal of a unary request is a trailers-only
//! response, so the status is in the headers, where this layer corrects it.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tower::{Layer, Service};

use crate::error::ApiError;

/// Limits calls in flight per service.
#[derive(Debug, Clone)]
pub struct ShedLayer {
    permits: Arc<Semaphore>,
}

impl ShedLayer {
    /// At most `max_in_flight` calls at once (health and reflection aside).
    pub fn new(max_in_flight: usize) -> Self {
        ShedLayer { permits: Arc::new(Semaphore::new(max_in_flight.max(1))) }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Shed<S> {
        Shed { inner, permits: self.permits.clone() }
    }
}

/// See [`ShedLayer`].
#[derive(Debug, Clone)]
pub struct Shed<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

/// How long a refused caller is told to wait.
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// Calls the limit does not count: probes, and the event stream, which
/// bounds its readers itself ([`crate::events`]).
fn exempt(path: &str) -> bool {
    crate::auth::is_open(path) || path.starts_with("/themodel.common.v1.EventStreamService/")
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Shed<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: http_body::Body + Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<ResBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let permit: Option<OwnedSemaphorePermit> = if exempt(req.uri().path()) {
            None
        } else {
            match self.permits.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    let status = Status::from(ApiError::overloaded("this service", RETRY_AFTER));
                    return Box::pin(async move { Ok(refuse(req.into_body(), status).await) });
                }
            }
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut response = fut.await?;
            drop(permit);
            oversize_is_resource_exhausted(&mut response);
            Ok(response)
        })
    }
}

/// Most of a refused request read before answering, and how long it may take.
const READ_OFF_BYTES: usize = 64 * 1024;
const READ_OFF_TIME: Duration = Duration::from_millis(20);

/// The answer to a call refused before it reached its handler, sent once
/// the request has been read off (see [`read_off`]).
pub(crate) async fn refuse<B: http_body::Body, R: Default>(body: B, status: Status) -> Response<R> {
    read_off(body).await;
    status.into_http()
}

/// Reads a refused request to its end (within bounds) and drops it.
///
/// Answering while the request is still arriving ends the HTTP/2 stream with
/// a reset, and the server closes a connection after 1,024 such resets (its
/// guard against reset floods): under a long burst of refusals, calls that
/// had been accepted on that connection then failed with "broken pipe"
/// (UNKNOWN). A unary request is small and mostly arrived already.
async fn read_off<B: http_body::Body>(body: B) {
    let mut body = std::pin::pin!(body);
    let mut read = 0;
    let _ = tokio::time::timeout(READ_OFF_TIME, async {
        while read < READ_OFF_BYTES {
            match std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, bytes::Buf::remaining),
                Some(Err(_)) | None => break,
            }
        }
    })
    .await;
}

/// tonic's "decoded message length too large" (OUT_OF_RANGE) as RESOURCE_EXHAUSTED.
fn oversize_is_resource_exhausted<B>(response: &mut Response<B>) {
    let headers = response.headers_mut();
    let too_large = headers.get("grpc-status").is_some_and(|s| s.as_bytes() == b"11")
        && headers.get("grpc-message").is_some_and(|m| {
            let m = m.as_bytes();
            m.windows(b"message%20length%20too%20large".len()).any(|w| w == b"message%20length%20too%20large")
                || m.windows(b"message length too large".len()).any(|w| w == b"message length too large")
        });
    if too_large {
        headers.insert("grpc-status", HeaderValue::from_static("8"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversize_status_is_corrected() {
        let mut r = Status::out_of_range(
            "Error, decoded message length too large: found 10485760 bytes, the limit is: 4194304 bytes",
        )
        .into_http::<()>();
        oversize_is_resource_exhausted(&mut r);
        assert_eq!(r.headers()["grpc-status"], "8");
        let mut other = Status::out_of_range("page 9 of 3").into_http::<()>();
        oversize_is_resource_exhausted(&mut other);
        assert_eq!(other.headers()["grpc-status"], "11", "other OUT_OF_RANGE untouched");
    }

    #[test]
    fn probes_are_never_refused() {
        assert!(exempt("/grpc.health.v1.Health/Check"));
        assert!(exempt("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"));
        assert!(!exempt("/themodel.marketing.v1.MarketingService/GetLead"));
    }
}
