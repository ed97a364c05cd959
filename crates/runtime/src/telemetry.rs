//! Telemetry, set up once per process: structured logs through `tracing`, and
//! OpenTelemetry traces exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set (nothing is exported otherwise). W3C trace context travels in gRPC
//! metadata: servers extract it ([`request_span`]), clients inject it
//! ([`InjectTraceContext`]), so one trace follows a lead across services.

use anyhow::Context as _;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::service::Interceptor;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, fmt};

/// Flushes exported spans when dropped.
#[derive(Debug, Default)]
pub struct TelemetryGuard(Option<SdkTracerProvider>);

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take()
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "flushing traces failed");
        }
    }
}

/// Installs the global subscriber. `RUST_LOG` filters (default `info`);
/// `json` selects one JSON object per line (what a log pipeline wants).
pub fn init(service_name: &str, json: bool) -> anyhow::Result<TelemetryGuard> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,h2=warn,hyper=warn,tower=warn,opentelemetry=warn"));

    let provider = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => {
            let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?;
            let resource = opentelemetry_sdk::Resource::builder().with_service_name(service_name.to_owned()).build();
            Some(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
        }
        _ => None,
    };
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("themodel")));
    let json_layer = json.then(|| fmt::layer().json().with_current_span(true));
    let text_layer = (!json).then(fmt::layer);
    // A second init (tests start many services in one process) keeps the first.
    let _ = tracing_subscriber::registry().with(filter).with(otel).with(json_layer).with(text_layer).try_init();
    if let Some(p) = &provider {
        opentelemetry::global::set_tracer_provider(p.clone());
    }
    Ok(TelemetryGuard(provider))
}

/// The span of one incoming gRPC request, child of the caller's trace if the
/// request carries a W3C `traceparent`.
pub fn request_span(req: &http::Request<()>) -> tracing::Span {
    let span = tracing::info_span!("grpc", rpc = %req.uri().path(), otel.kind = "server");
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(req.headers())));
    let _ = span.set_parent(parent);
    span
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (MetadataKey::from_bytes(key.as_bytes()), MetadataValue::try_from(value.as_str())) {
            self.0.insert(k, v);
        }
    }
}

/// The W3C `traceparent` to continue from later (a hand-over made by this
/// call): the current span's when tracing is exported, else the one the
/// caller sent, else empty.
pub fn current_traceparent(incoming: &MetadataMap) -> String {
    let cx = tracing::Span::current().context();
    let mut carrier = std::collections::HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    carrier
        .remove("traceparent")
        .or_else(|| incoming.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned))
        .unwrap_or_default()
}

/// Makes `span` a child of the trace `traceparent` names (if any).
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    if traceparent.is_empty() {
        return;
    }
    let carrier = std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
    let _ = span.set_parent(parent);
}

/// Puts `span`'s trace context into outgoing metadata; when tracing is not
/// exported (no context), passes `traceparent` on unchanged.
pub fn inject(span: &tracing::Span, traceparent: &str, metadata: &mut MetadataMap) {
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut MetadataInjector(metadata)));
    if !metadata.contains_key("traceparent")
        && !traceparent.is_empty()
        && let Ok(v) = MetadataValue::try_from(traceparent)
    {
        metadata.insert("traceparent", v);
    }
}

/// Client interceptor that puts the current trace context, and the
/// caller's credential, into the request metadata.
#[derive(Debug, Clone, Default)]
pub struct InjectTraceContext {
    credential: crate::auth::Credential,
}

impl Interceptor for InjectTraceContext {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let cx = tracing::Span::current().context();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut MetadataInjector(request.metadata_mut()))
        });
        self.credential.apply(request.metadata_mut());
        Ok(request)
    }
}

/// A lazily connecting channel to a peer, with trace-context injection and
/// the caller's credential.
pub type PeerChannel = tonic::service::interceptor::InterceptedService<tonic::transport::Channel, InjectTraceContext>;

/// Connects lazily to `addr` (`http://host:port`, or `https://` for TLS
/// with the credential's TLS, else the public web roots), presenting
/// `credential`: the first call dials, and a broken connection is
/// re-dialled by the next call.
pub fn peer_channel(addr: &str, credential: &crate::auth::Credential) -> anyhow::Result<PeerChannel> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(addr.to_owned())?
        .connect_timeout(std::time::Duration::from_secs(3))
        .timeout(std::time::Duration::from_secs(15))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(std::time::Duration::from_secs(30));
    if endpoint.uri().scheme() == Some(&http::uri::Scheme::HTTPS) {
        let tls = credential.tls().cloned().unwrap_or_else(crate::tls::client_with_web_roots);
        endpoint = endpoint.tls_config(tls).with_context(|| format!("TLS for {addr}"))?;
    }
    let inject = InjectTraceContext { credential: credential.clone() };
    Ok(tonic::service::interceptor::InterceptedService::new(endpoint.connect_lazy(), inject))
}
