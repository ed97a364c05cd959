//! Trace continuity, in a test binary of its own because it installs the
//! process-wide tracer: a hand-over delivered only after its receiver comes
//! back is still in the trace of the request that made it.

#![allow(clippy::unwrap_used)]

use opentelemetry::trace::{TraceId, TracerProvider as _};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use themodel_e2e::{Svc, TestSuite, eventually, ts};
use themodel_proto::common::v1::{Bant, Money};
use themodel_proto::fieldsales::v1 as fs;
use themodel_proto::insidesales::v1 as is;
use themodel_proto::marketing::v1 as mk;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The trace the caller starts, as its own tracing would.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn install() -> InMemorySpanExporter {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test"))).init();
    exporter
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes.iter().find(|KeyValue { key: k, .. }| k.as_str() == key).map(|kv| &kv.value)
}

/// Finished spans whose `rpc` attribute is `rpc`.
fn spans_of(exporter: &InMemorySpanExporter, rpc: &str) -> Vec<SpanData> {
    let all = exporter.get_finished_spans().unwrap();
    all.into_iter().filter(|s| attribute(s, "rpc").is_some_and(|v| v.as_str() == rpc)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hand_over_delivered_after_the_receiver_restarts_continues_the_callers_trace() {
    let exporter = install();
    let mut t = TestSuite::start().await;

    let lead = mk::CaptureLeadRequest {
        request_id: "capture".into(),
        lead_id: "traced".into(),
        email: "traced@corp.example".into(),
        name: "Traced".into(),
        company: "Traced Inc".into(),
        company_size: 500,
        industry: "software".into(),
        job_title: "CTO".into(),
        source: "web_form".into(),
        occurred_at: ts("2026-11-02T09:00:00Z"),
        ..Default::default()
    };
    t.marketing.clone().capture_lead(lead).await.unwrap();
    let quote = mk::RecordTouchRequest {
        request_id: "quote".into(),
        lead_id: "traced".into(),
        kind: mk::TouchKind::QuoteRequest as i32,
        detail: "/quote".into(),
        occurred_at: ts("2026-11-02T09:30:00Z"),
    };
    assert!(t.marketing.clone().record_touch(quote).await.unwrap().into_inner().handed_over);
    let mut inside = t.inside_sales.clone();
    eventually("the lead in inside sales' queue", || {
        let mut c = inside.clone();
        async move { c.get_queue_item(is::GetQueueItemRequest { lead_id: "traced".into() }).await.ok() }
    })
    .await;
    inside
        .record_bant(is::RecordBantRequest {
            request_id: "bant".into(),
            lead_id: "traced".into(),
            bant: Some(Bant { budget: true, authority: true, need: true, timeline: true, ..Default::default() }),
            occurred_at: ts("2026-11-02T10:00:00Z"),
        })
        .await
        .unwrap();

    // Field sales is down when the caller converts, in its own trace.
    t.suite.stop(Svc::FieldSales).await.unwrap();
    let mut convert = tonic::Request::new(is::ConvertToOpportunityRequest {
        request_id: "convert".into(),
        lead_id: "traced".into(),
        opportunity_id: "opp-traced".into(),
        estimated_value: Some(Money { currency_code: "JPY".into(), units: 1_000_000, nanos: 0 }),
        note: String::new(),
        occurred_at: ts("2026-11-02T11:00:00Z"),
    });
    convert.metadata_mut().insert("traceparent", TRACEPARENT.parse().unwrap());
    inside.convert_to_opportunity(convert).await.unwrap();
    eventually("a delivery attempt fails while field sales is down", || async {
        let s = t.outbox_stats(Svc::InsideSales, "field-sales").await;
        (s.failed_attempts > 0).then_some(())
    })
    .await;

    t.suite.restart(Svc::FieldSales).await.unwrap();
    t.wait_serving().await;
    eventually("the opportunity in field sales", || {
        let mut c = t.field_sales.clone();
        async move { c.get_opportunity(fs::GetOpportunityRequest { opportunity_id: "opp-traced".into() }).await.ok() }
    })
    .await;

    let trace_id = TraceId::from_hex(TRACE_ID).unwrap();
    let converted = spans_of(&exporter, "/themodel.insidesales.v1.InsideSalesService/ConvertToOpportunity");
    assert_eq!(converted.len(), 1);
    assert_eq!(converted[0].span_context.trace_id(), trace_id, "the server span joins the caller's trace");

    // The accepted delivery, and every attempt before it, in the caller's
    // trace; the receiver's server span is a child of the attempt that
    // reached it.
    let accepted = eventually("the receiver's span is exported", || {
        let spans = spans_of(&exporter, "/themodel.fieldsales.v1.FieldSalesService/AcceptOpportunity");
        let server: Vec<_> = spans.iter().filter(|s| s.name == "grpc").cloned().collect();
        async move { (!server.is_empty()).then_some(server) }
    })
    .await;
    assert_eq!(accepted.len(), 1, "delivered once");
    assert_eq!(accepted[0].span_context.trace_id(), trace_id, "the delivery continues the caller's trace");
    let attempts: Vec<SpanData> = spans_of(&exporter, "/themodel.fieldsales.v1.FieldSalesService/AcceptOpportunity")
        .into_iter()
        .filter(|s| s.name == "hand-over")
        .collect();
    assert!(attempts.len() >= 2, "at least one failed attempt and the delivery: {}", attempts.len());
    assert!(attempts.iter().all(|s| s.span_context.trace_id() == trace_id));
    assert!(attempts.iter().any(|a| a.span_context.span_id() == accepted[0].parent_span_id));
    t.suite.shutdown().await.unwrap();
}
