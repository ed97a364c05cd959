//! The layer in front of every service: a limit on calls in flight, beyond
//! which a call is refused at once with RESOURCE_EXHAUSTED and a retry hint
//! (never queued without bound), and the gRPC status of an oversized
//! request.
//!
//! Health checks and reflection are never refused: a Kubernetes probe that
//! fails under load would restart a pod that is merely busy.
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

fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Shed<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
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
                    return Box::pin(std::future::ready(Ok(status.into_http())));
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
