//! `themodel-bench`: starts the whole suite in this process (SQLite under a
//! temporary directory, ephemeral ports), then over real gRPC:
//! 1. captures `--leads` leads,
//! 2. sends RecordTouch (or, with `--batch N`, RecordTouches of N touches)
//!    from `--concurrency` concurrent callers for `--seconds`, and reports
//!    touches per second and call latency percentiles,
//! 3. records `--visits` anonymous visits from `--visitors` visitors, spread
//!    over the year 2026, from the same callers,
//! 4. waits until kpi has applied every event, then calls GetFunnel
//!    `--funnel-calls` times for a month and for the whole range, one call
//!    after another, and reports its latency percentiles.
//!
//! Run it optimised: `cargo run --release -p themodel-bench -- --seconds 10`.

#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use clap::Parser;
use themodel::{ServiceName, Suite, SuiteOptions};
use themodel_proto::kpi::v1 as kpi;
use themodel_proto::kpi::v1::kpi_service_client::KpiServiceClient;
use themodel_proto::marketing::v1 as mk;
use themodel_proto::marketing::v1::marketing_service_client::MarketingServiceClient;
use tonic::transport::Channel;

#[derive(Parser)]
struct Args {
    /// Leads to capture before the touch load.
    #[arg(long, default_value_t = 1000)]
    leads: usize,
    /// Concurrent RecordTouch callers.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Length of the touch load.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// GetFunnel calls after the load.
    #[arg(long, default_value_t = 2000)]
    funnel_calls: usize,
    /// Touches per call: 1 uses RecordTouch, more uses RecordTouches.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Anonymous visits to record after the touch load.
    #[arg(long, default_value_t = 20_000)]
    visits: usize,
    /// Distinct visitors those visits come from.
    #[arg(long, default_value_t = 5_000)]
    visitors: usize,
    /// gRPC connections the callers share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(name: &str, lat: Vec<Duration>, elapsed: Duration) {
    report_items(name, lat, elapsed, 1);
}

/// Prints calls, items (calls x per_call) per second, and call latency.
fn report_items(name: &str, mut lat: Vec<Duration>, elapsed: Duration, per_call: usize) {
    lat.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name:<13} {:>8} calls {:>10.0} items/s   p50 {:>7.3} ms   p99 {:>7.3} ms   max {:>7.3} ms",
        lat.len(),
        (lat.len() * per_call) as f64 / elapsed.as_secs_f64(),
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default()),
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let mut options = SuiteOptions::ephemeral(dir.path());
    options.poll_interval = Duration::from_millis(100);
    let suite = Suite::start(options).await?;
    let channels: Vec<Channel> = (0..args.connections.max(1))
        .map(|_| Channel::from_shared(suite.url(ServiceName::Marketing)).map(|e| e.connect_lazy()))
        .collect::<Result<_, _>>()?;

    let started = Instant::now();
    let mut m = MarketingServiceClient::new(channels[0].clone());
    let mut lat = Vec::with_capacity(args.leads);
    for n in 0..args.leads {
        let t = Instant::now();
        m.capture_lead(mk::CaptureLeadRequest {
            request_id: format!("bench-capture-{n}"),
            lead_id: format!("bench-{n}"),
            email: format!("bench-{n}@bench.example"),
            company_size: 40,
            industry: "retail".into(),
            job_title: "analyst".into(),
            source: "web_form".into(),
            ..Default::default()
        })
        .await?;
        lat.push(t.elapsed());
    }
    report("CaptureLead", lat, started.elapsed());

    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for c in 0..args.concurrency.max(1) {
        let mut m = MarketingServiceClient::new(channels[c % channels.len()].clone());
        let leads = args.leads.max(1);
        let batch = args.batch.max(1);
        callers.spawn(async move {
            let mut lat = Vec::new();
            let mut n = 0usize;
            while Instant::now() < deadline {
                let lead = |k: usize| format!("bench-{}", (c * 7919 + n * batch + k) % leads);
                let t = Instant::now();
                let ok = if batch == 1 {
                    m.record_touch(mk::RecordTouchRequest {
                        request_id: format!("bench-touch-{c}-{n}"),
                        lead_id: lead(0),
                        kind: mk::TouchKind::EmailOpen as i32,
                        ..Default::default()
                    })
                    .await
                    .is_ok()
                } else {
                    let touches = (0..batch)
                        .map(|k| mk::TouchInput {
                            lead_id: lead(k),
                            kind: mk::TouchKind::EmailOpen as i32,
                            ..Default::default()
                        })
                        .collect();
                    m.record_touches(mk::RecordTouchesRequest { request_id: format!("bench-touches-{c}-{n}"), touches })
                        .await
                        .is_ok()
                };
                if ok {
                    lat.push(t.elapsed());
                }
                n += 1;
            }
            lat
        });
    }
    let mut lat = Vec::new();
    while let Some(part) = callers.join_next().await {
        lat.extend(part?);
    }
    let name = if args.batch > 1 { "RecordTouches" } else { "RecordTouch" };
    report_items(name, lat, started.elapsed(), args.batch.max(1));

    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    let callers_n = args.concurrency.max(1);
    for c in 0..callers_n {
        let mut m = MarketingServiceClient::new(channels[c % channels.len()].clone());
        let (visits, visitors) = (args.visits, args.visitors.max(1) as u64);
        callers.spawn(async move {
            let mut lat = Vec::new();
            for n in (c..visits).step_by(callers_n) {
                // A fixed scatter of visitors over the days of 2026.
                let h = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let day = (h >> 40) % 365;
                let t = Instant::now();
                m.record_visit(mk::RecordVisitRequest {
                    request_id: format!("bench-visit-{n}"),
                    visitor_id: format!("visitor-{}", (h >> 8) % visitors),
                    page: "/pricing".into(),
                    occurred_at: Some(prost_types::Timestamp {
                        // 1_767_225_600 is 2026-01-01T00:00:00Z.
                        seconds: 1_767_225_600 + day as i64 * 86_400 + (h % 86_400) as i64,
                        nanos: 0,
                    }),
                    ..Default::default()
                })
                .await?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        });
    }
    let mut lat = Vec::new();
    while let Some(part) = callers.join_next().await {
        lat.extend(part??);
    }
    if !lat.is_empty() {
        report("RecordVisit", lat, started.elapsed());
    }

    let mut k = KpiServiceClient::new(Channel::from_shared(suite.url(ServiceName::Kpi))?.connect_lazy());
    let started = Instant::now();
    let whole = kpi::GetFunnelRequest { start_date: "2000-01-01".into(), end_date: "2100-01-01".into() };
    let f = suite.settled_funnel(whole.clone(), Duration::from_secs(600)).await?;
    println!(
        "kpi          caught up in {:.1} s: {} leads, {} visitors",
        started.elapsed().as_secs_f64(),
        f.leads,
        f.visitors
    );
    let month = kpi::GetFunnelRequest { start_date: "2026-06-01".into(), end_date: "2026-07-01".into() };
    for (name, req) in [("GetFunnel 1mo", month), ("GetFunnel all", whole)] {
        let started = Instant::now();
        let mut lat = Vec::with_capacity(args.funnel_calls);
        for _ in 0..args.funnel_calls {
            let t = Instant::now();
            k.get_funnel(req.clone()).await?;
            lat.push(t.elapsed());
        }
        report(name, lat, started.elapsed());
    }
    suite.shutdown().await
}
