//! Serving one service: its routes plus the standard health service and
//! server reflection (v1 and v1alpha: grpcurl 1.8 speaks only v1alpha), on a
//! listener the caller bound, until a shutdown token fires.
//!
//! Tests and production take the same path: the caller binds (port 0 in
//! tests), builds the service, and cancels the token to stop. On shutdown,
//! health turns NOT_SERVING first; after the grace period the server stops
//! accepting, lets in-flight calls finish, and ends every response stream
//! still open (a health watch, an ingest stream) with UNAVAILABLE, so no
//! client holding a stream keeps the process from exiting.

use std::future::Future;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::auth::AuthLayer;
use crate::consistency::TokenLayer;
use crate::shed::ShedLayer;
use crate::telemetry;

/// Name of the event-stream service every service also serves.
pub const EVENT_STREAM: &str = "themodel.common.v1.EventStreamService";
/// Name of the outbox service every service also serves.
pub const OUTBOX: &str = "themodel.common.v1.OutboxService";
/// Name of the audit-log service every service also serves.
pub const AUDIT: &str = "themodel.common.v1.AuditService";

/// How a server sheds load and stops.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time between reporting NOT_SERVING and refusing new connections.
    pub grace: Duration,
    /// Calls in flight beyond which calls are refused.
    pub max_in_flight: usize,
}

/// Serves `routes` (whose gRPC service names are `names`) on `listener`
/// (TLS only when `tls` is given), letting in only the callers `auth`
/// admits and stamping every answer with the service's consistency token.
///
/// `health_only`, when given, also serves the health service alone, in
/// plaintext and open to all: Kubernetes' gRPC probes speak neither TLS
/// nor tokens, and the probe should still see NOT_SERVING when the
/// service drains. It stops when the main listener stops.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listener: TcpListener,
    health_only: Option<TcpListener>,
    tls: Option<ServerTlsConfig>,
    routes: Routes,
    names: &[&'static str],
    Limits { grace, max_in_flight }: Limits,
    tokens: TokenLayer,
    auth: AuthLayer,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in names {
        reporter.set_service_status(*name, ServingStatus::Serving).await;
    }
    // The descriptor set also describes google.rpc's error details, so a
    // client such as grpcurl can print the BadRequest or RetryInfo of an error.
    let reflection = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(themodel_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health");
        for name in names {
            b = b.with_service_name(*name);
        }
        b
    };
    let v1 = reflection().build_v1().context("building reflection v1")?;
    let v1alpha = reflection().build_v1alpha().context("building reflection v1alpha")?;
    let probes = health.clone();
    let routes = routes.add_service(health).add_service(v1).add_service(v1alpha);

    let names: Vec<&'static str> = names.to_vec();
    let draining = CancellationToken::new();
    let end_streams = EndStreamsLayer { draining: draining.clone() };
    let probe_port = health_only.map(|listener| {
        let stop = draining.clone();
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let server = Server::builder()
            .layer(EndStreamsLayer { draining: stop.clone() })
            .add_service(probes)
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned());
        tokio::spawn(server)
    });
    let signal = async move {
        shutdown.cancelled().await;
        reporter.set_service_status("", ServingStatus::NotServing).await;
        for name in &names {
            reporter.set_service_status(*name, ServingStatus::NotServing).await;
        }
        tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down: health is NOT_SERVING");
        tokio::time::sleep(grace).await;
        draining.cancel();
    };
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut server = Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls).context("setting up TLS")?;
    }
    server
        .trace_fn(telemetry::request_span)
        .layer(end_streams)
        .layer(auth)
        .layer(ShedLayer::new(max_in_flight))
        .layer(tokens)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, signal)
        .await
        .context("serving gRPC")?;
    if let Some(port) = probe_port {
        port.await.context("the health port's task")?.context("serving the health port")?;
    }
    Ok(())
}

/// Ends response streams once the server drains (see the module docs).
#[derive(Debug, Clone)]
struct EndStreamsLayer {
    draining: CancellationToken,
}

impl<S> tower::Layer<S> for EndStreamsLayer {
    type Service = EndStreams<S>;

    fn layer(&self, inner: S) -> EndStreams<S> {
        EndStreams { inner, draining: self.draining.clone() }
    }
}

#[derive(Debug, Clone)]
struct EndStreams<S> {
    inner: S,
    draining: CancellationToken,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for EndStreams<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Ending<ResBody>>;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let answer = self.inner.call(req);
        let draining = self.draining.clone();
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| Ending {
                inner: body,
                draining: Box::pin(draining.cancelled_owned()),
                ended: false,
            }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that, once the server drains, ends with UNAVAILABLE
    /// instead of waiting for more (what it has ready is sent first).
    struct Ending<B> {
        #[pin]
        inner: B,
        draining: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
        ended: bool,
    }
}

impl<B: http_body::Body> http_body::Body for Ending<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.draining.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        *this.ended = true;
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("14"));
        trailers.insert("grpc-message", http::HeaderValue::from_static("the%20service%20is%20shutting%20down"));
        Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("received SIGINT"),
        _ = term => tracing::info!("received SIGTERM"),
    }
}
