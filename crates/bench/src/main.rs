//! `themodel-bench`: one run measures the suite against a bare tonic echo
//! server started beside it in the same process, on the same machine:
//!
//! 1. echo, then CaptureLead, RecordTouch, RecordVisit and GetLead, each at
//!    `--concurrency` callers for `--seconds`: throughput and its ratio to echo;
//! 2. streaming ingest (`IngestBehaviour`, `--streams` streams of `--batch`
//!    touches per message, with event ids): touches per second, checked
//!    afterwards (every lead's touch count equals the touches it was sent, a
//!    repeated message is all duplicates), against the rate of inserting the
//!    same rows into the same kind of SQLite database through the same driver;
//! 3. GetFunnel latency at 8 concurrent callers, over a month and all time;
//!    then freshness: while `--concurrency` callers capture leads, how long
//!    after a capture's answer kpi counts it (a read with the capture's
//!    consistency token waits for exactly that);
//! 4. overload: the suite restarted alone in a child process on the data
//!    the phases above left, warmed up with `--concurrency` callers of
//!    RecordTouch, then `--overload-callers` callers from another process
//!    for `--overload-seconds`: refusals, and the suite process's resident
//!    memory before, at its peak and 10 s after.
//!
//! `themodel-bench scale` measures kpi alone at 10k, 100k and 1M leads (see
//! the `scale` module).
//!
//! Run it optimised: `cargo run --release -p themodel-bench`.

#![allow(clippy::print_stdout)]

mod load;
mod scale;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use load::{Stats, closed_loop};
use themodel::{ADMIN, ServiceName, Suite, SuiteOptions};
use themodel_proto::kpi::v1 as kpi;
use themodel_proto::kpi::v1::kpi_service_client::KpiServiceClient;
use themodel_proto::marketing::v1 as mk;
use themodel_proto::marketing::v1::marketing_service_client::MarketingServiceClient;
use themodel_runtime::auth::Credential;
use themodel_runtime::telemetry::{PeerChannel, peer_channel};

/// The same allocator as the `themodel` binary, so the suite is measured as it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod echo {
    tonic::include_proto!("themodel.bench.v1");
}

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Length of each throughput phase.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent callers in the throughput phases.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// gRPC connections the callers share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Leads the touch, read and ingest phases pick from (the first captured);
    /// 0 means every lead captured.
    #[arg(long, default_value_t = 2000)]
    active_leads: usize,
    /// Ingest streams.
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// Touches per ingest message.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Distinct visitors in the visit phase.
    #[arg(long, default_value_t = 20_000)]
    visitors: u64,
    /// GetFunnel calls per period.
    #[arg(long, default_value_t = 2000)]
    funnel_calls: usize,
    /// Callers in the overload burst (0 skips it).
    #[arg(long, default_value_t = 2000)]
    overload_callers: usize,
    /// Length of the overload burst.
    #[arg(long, default_value_t = 20)]
    overload_seconds: u64,
    /// Phases to run, comma-separated: echo, capture, touch, visit, get,
    /// ingest, funnel, freshness, overload (capture always runs: the others
    /// need its leads).
    #[arg(long, default_value = "echo,capture,touch,visit,get,ingest,funnel,freshness,overload")]
    phases: String,
}

#[derive(Subcommand)]
enum Mode {
    /// The overload burst's callers (run by the bench in a second process).
    OverloadClient {
        #[arg(long)]
        addr: String,
        /// The file holding the token to call with.
        #[arg(long)]
        token_file: std::path::PathBuf,
        #[arg(long)]
        callers: usize,
        #[arg(long)]
        seconds: u64,
        /// A file of the lead ids to touch, one per line.
        #[arg(long)]
        leads: std::path::PathBuf,
    },
    /// kpi alone, fed synthetic event streams of `--leads` leads (each
    /// count in turn): its rebuild rate, then read latencies at 8 callers.
    Scale {
        /// Lead counts, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
        leads: Vec<u64>,
        /// Calls of each kind of read, per caller.
        #[arg(long, default_value_t = 250)]
        calls: u64,
    },
    /// The suite on an existing data directory, alone in its process (run
    /// by the bench for the overload burst, so its memory is the suite's
    /// own): prints marketing's address, runs until stdin closes.
    Suite {
        #[arg(long)]
        data_dir: std::path::PathBuf,
    },
}

/// `n` connections to `url`, each presenting `credential`.
fn channels(url: &str, n: usize, credential: &Credential) -> anyhow::Result<Vec<PeerChannel>> {
    (0..n.max(1)).map(|_| peer_channel(url, credential)).collect()
}

/// A capture of a lead that scores below the promising threshold, so the
/// touch phases never hand it over (hand-overs are measured by the tests).
fn capture(id: &str) -> mk::CaptureLeadRequest {
    // Spread over sources and campaigns, so that the funnel's splits have
    // values to group.
    const SOURCES: [&str; 6] = ["web_form", "trade_show", "seminar", "download", "referral", "ads"];
    let n = id.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b)));
    mk::CaptureLeadRequest {
        campaign: format!("campaign-{}", n % 40),
        request_id: format!("capture-{id}"),
        lead_id: id.to_owned(),
        email: format!("{id}@bench.example"),
        company_size: 40,
        industry: "retail".into(),
        job_title: "analyst".into(),
        source: SOURCES[n % SOURCES.len()].into(),
        ..Default::default()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Resident memory of process `pid` now and at its peak since the last reset, in MiB.
fn rss(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn reset_peak_rss(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.mode {
        Some(Mode::OverloadClient { addr, token_file, callers, seconds, leads }) => {
            return load::overload_client(&addr, &Credential::from_file(&token_file)?, callers, seconds, &leads).await;
        }
        Some(Mode::Suite { data_dir }) => return serve(data_dir).await,
        Some(Mode::Scale { leads, calls }) => return scale::run(&leads, calls).await,
        None => {}
    }
    let dir = tempfile::tempdir()?;
    let mut options = SuiteOptions::ephemeral(dir.path());
    options.poll_interval = Duration::from_millis(100);
    let suite = Suite::start(options).await?;
    let marketing_url = suite.url(ServiceName::Marketing);
    let admin = suite.credential(ADMIN)?;
    let marketing = channels(&marketing_url, args.connections, &admin)?;
    let phase = Duration::from_secs(args.seconds);
    let conc = args.concurrency;
    let run = |p: &str| args.phases.split(',').any(|x| x.trim() == p);
    println!("themodel-bench: {conc} callers over {} connections, {} s per phase", args.connections, args.seconds);

    // The yardstick, measured right before each phase it is compared with:
    // on a shared machine the rate drifts between phases.
    let echo_url = load::start_echo().await?;
    let echo_channels = channels(&echo_url, args.connections, &Credential::none())?;
    let echo = |label: &'static str| {
        let echo_channels = echo_channels.clone();
        let enabled = run("echo");
        async move {
            if !enabled {
                return None;
            }
            let stats = closed_loop(conc, phase, move |c, _| {
                let mut client =
                    echo::echo_service_client::EchoServiceClient::new(echo_channels[c % echo_channels.len()].clone());
                async move { client.echo(echo::EchoRequest { payload: vec![7; 96] }).await.map(|_| ()) }
            })
            .await;
            stats.print(&format!("  echo before {label}"), None);
            Some(stats.rate())
        }
    };
    let echo_rps = echo("CaptureLead").await;

    // Captures: every call a new lead.
    let leads: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let captured = leads.clone();
    let chans = marketing.clone();
    let stats = closed_loop(conc, phase, move |c, n| {
        let mut m = MarketingServiceClient::new(chans[c % chans.len()].clone());
        let id = format!("b{c}-{n}");
        let captured = captured.clone();
        async move {
            m.capture_lead(capture(&id)).await?;
            captured.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(id);
            Ok(())
        }
    })
    .await;
    stats.print("CaptureLead", echo_rps);
    let mut leads = std::mem::take(&mut *leads.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    anyhow::ensure!(!leads.is_empty(), "no lead was captured");
    if args.active_leads > 0 {
        leads.truncate(args.active_leads);
    }
    let leads: Arc<Vec<String>> = Arc::new(leads);
    // Touches sent to each lead (counted when acknowledged), to check scores after.
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..leads.len()).map(|_| AtomicU64::new(0)).collect());

    let echo_rps = if run("touch") { echo("RecordTouch").await } else { None };
    let (chans, ids, counts) = (marketing.clone(), leads.clone(), sent.clone());
    let stats = if !run("touch") {
        Stats::default()
    } else {
        closed_loop(conc, phase, move |c, n| {
            let mut m = MarketingServiceClient::new(chans[c % chans.len()].clone());
            let i = load::spread(c, n, ids.len());
            let req = mk::RecordTouchRequest {
                request_id: format!("touch-{c}-{n}"),
                lead_id: ids[i].clone(),
                kind: mk::TouchKind::EmailOpen as i32,
                ..Default::default()
            };
            let counts = counts.clone();
            async move {
                m.record_touch(req).await?;
                counts[i].fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        })
        .await
    };
    if run("touch") {
        stats.print("RecordTouch", echo_rps);
    }

    let echo_rps = if run("visit") { echo("RecordVisit").await } else { None };
    let (chans, visitors) = (marketing.clone(), args.visitors.max(1));
    let stats = if !run("visit") {
        Stats::default()
    } else {
        closed_loop(conc, phase, move |c, n| {
            let mut m = MarketingServiceClient::new(chans[c % chans.len()].clone());
            // A fixed scatter of visitors over the days of 2026.
            let h = ((c as u64) << 40 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let req = mk::RecordVisitRequest {
                request_id: format!("visit-{c}-{n}"),
                visitor_id: format!("visitor-{}", (h >> 8) % visitors),
                page: "/pricing".into(),
                // 1_767_225_600 is 2026-01-01T00:00:00Z.
                occurred_at: Some(prost_types::Timestamp {
                    seconds: 1_767_225_600 + ((h >> 40) % 365) as i64 * 86_400 + (h % 86_400) as i64,
                    nanos: 0,
                }),
                ..Default::default()
            };
            async move { m.record_visit(req).await.map(|_| ()) }
        })
        .await
    };
    if run("visit") {
        stats.print("RecordVisit", echo_rps);
    }

    let echo_rps = if run("get") { echo("GetLead").await } else { None };
    let (chans, ids) = (marketing.clone(), leads.clone());
    let stats = if !run("get") {
        Stats::default()
    } else {
        closed_loop(conc, phase, move |c, n| {
            let mut m = MarketingServiceClient::new(chans[c % chans.len()].clone());
            let req = mk::GetLeadRequest { lead_id: ids[load::spread(c, n, ids.len())].clone() };
            async move { m.get_lead(req).await.map(|_| ()) }
        })
        .await
    };
    if run("get") {
        stats.print("GetLead", echo_rps);
    }

    // Streaming ingest.
    if run("ingest") {
        let ingest = load::ingest(&marketing, &leads, &sent, args.streams, args.batch, phase).await?;
        let raw = load::raw_insert_rate(args.batch, ingest.touches.max(args.batch as u64 * 20)).await?;
        println!(
            "{:<22} {:>10} touches {:>10.0} touches/s   {:.2}x raw inserts ({raw:.0} touches/s inserted raw: a touch row and an event row each)   \
         p50 {:>7.3} ms   p99 {:>7.3} ms per {}-touch message",
            "IngestBehaviour",
            ingest.touches,
            ingest.rate,
            ingest.rate / raw,
            ms(ingest.p50),
            ms(ingest.p99),
            args.batch,
        );
        let checked = load::check_scores(&marketing[0], &leads, &sent).await?;
        println!("{:<22} {checked} leads' touch counts equal the touches acknowledged to them", "  scores current");
        let dup = load::repeat_message(&marketing[0], &leads, args.batch).await?;
        println!(
            "{:<22} a repeated {}-touch message: {dup} duplicates, 0 recorded",
            "  duplicates ignored", args.batch
        );
    }

    // GetFunnel at 8 concurrent callers, once kpi has caught up.
    if run("funnel") {
        let whole = kpi::GetFunnelRequest {
            start_date: "2000-01-01".into(),
            end_date: "2100-01-01".into(),
            ..Default::default()
        };
        let started = Instant::now();
        let f = suite.settled_funnel(whole.clone(), Duration::from_secs(600)).await?;
        println!(
            "{:<22} caught up in {:.1} s: {} leads, {} visitors",
            "kpi",
            started.elapsed().as_secs_f64(),
            f.leads,
            f.visitors
        );
        let kpi_channel = peer_channel(&suite.url(ServiceName::Kpi), &admin)?;
        // The month the leads were captured in (now: captures carry no time).
        use chrono::{Datelike, Months};
        let first = chrono::Utc::now().date_naive().with_day(1).unwrap_or_default();
        let month = kpi::GetFunnelRequest {
            start_date: first.to_string(),
            end_date: (first + Months::new(1)).to_string(),
            ..Default::default()
        };
        let cohort = kpi::GetFunnelRequest { view: kpi::View::Cohort as i32, ..month.clone() };
        let by_source = kpi::GetFunnelRequest { split_by: kpi::Dimension::Source as i32, ..month.clone() };
        let cohort_by_campaign = kpi::GetFunnelRequest { split_by: kpi::Dimension::Campaign as i32, ..cohort.clone() };
        for (name, req) in [
            ("GetFunnel 1 month", month),
            ("GetFunnel all time", whole),
            ("  cohort, 1 month", cohort),
            ("  flow by source", by_source),
            ("  cohort by campaign", cohort_by_campaign),
        ] {
            let per_caller = (args.funnel_calls / 8).max(1) as u64;
            let ch = kpi_channel.clone();
            let stats = load::fixed_calls(8, per_caller, move |_, _| {
                let mut k = KpiServiceClient::new(ch.clone());
                let req = req.clone();
                async move { k.get_funnel(req).await.map(|_| ()) }
            })
            .await;
            stats.print(name, None);
        }
    }

    // Event-to-KPI freshness: while `conc` callers capture leads flat out,
    // a probe captures one more and at once asks kpi for the funnel with
    // the token the capture answered with; the read waits inside kpi until
    // the capture is counted, so its latency is how stale kpi was.
    if run("freshness") {
        let chans = marketing.clone();
        let background = tokio::spawn(closed_loop(conc, phase, move |c, n| {
            let mut m = MarketingServiceClient::new(chans[c % chans.len()].clone());
            let id = format!("f{c}-{n}");
            async move { m.capture_lead(capture(&id)).await.map(|_| ()) }
        }));
        let mut m = MarketingServiceClient::new(marketing[0].clone());
        let mut k = KpiServiceClient::new(peer_channel(&suite.url(ServiceName::Kpi), &admin)?);
        let today = chrono::Utc::now().date_naive();
        let day = kpi::GetFunnelRequest {
            start_date: today.to_string(),
            end_date: (today + chrono::Days::new(1)).to_string(),
            ..Default::default()
        };
        let end = Instant::now() + phase;
        let mut waits = Vec::new();
        while Instant::now() < end {
            let answer = m.capture_lead(capture(&format!("probe-{}", waits.len()))).await?;
            let mut req = tonic::Request::new(day.clone());
            if let Some(token) = answer.metadata().get(themodel_runtime::consistency::HEADER) {
                req.metadata_mut().insert(themodel_runtime::consistency::HEADER, token.clone());
            }
            let began = Instant::now();
            k.get_funnel(req).await?;
            waits.push(began.elapsed());
        }
        let load = background.await?;
        waits.sort();
        let at = |p: f64| waits[((waits.len() as f64 * p) as usize).min(waits.len() - 1)];
        println!(
            "{:<22} {:>10.0} captures/s meanwhile; a capture is counted by kpi p50 {:>7.3} ms   p99 {:>7.3} ms   max {:>7.3} ms after its answer ({} probes)",
            "freshness",
            load.rate(),
            ms(at(0.5)),
            ms(at(0.99)),
            ms(at(1.0)),
            waits.len()
        );
    }

    suite.shutdown().await?;
    if run("overload") && args.overload_callers > 0 {
        overload(dir.path(), &args, &leads).await?;
    }
    Ok(())
}

/// [`Mode::Suite`].
async fn serve(data_dir: std::path::PathBuf) -> anyhow::Result<()> {
    let mut options = SuiteOptions::ephemeral(data_dir);
    options.poll_interval = Duration::from_millis(100);
    let suite = Suite::start(options).await?;
    println!("{}", suite.url(ServiceName::Marketing));
    // Block-buffered when piped: the parent waits for this line.
    std::io::Write::flush(&mut std::io::stdout())?;
    tokio::task::spawn_blocking(|| std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new())).await??;
    suite.shutdown().await
}

/// The overload burst, against the suite alone in a process of its own on
/// the data the other phases left, so the memory measured is the suite's:
/// first warmed up with the throughput phases' touch load (its caches
/// full), then the burst from a third process, then ten quiet seconds.
async fn overload(data_dir: &std::path::Path, args: &Args, leads: &Arc<Vec<String>>) -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt;
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(&exe)
        .arg("suite")
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or_else(|| anyhow::anyhow!("the suite process exited at once"))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let url = tokio::io::BufReader::new(stdout)
        .lines()
        .next_line()
        .await?
        .ok_or_else(|| anyhow::anyhow!("the suite process did not start"))?;

    let token_file = data_dir.join("tokens").join(format!("{ADMIN}.token"));
    let chans = channels(&url, args.connections, &Credential::from_file(&token_file)?)?;
    let ids = leads.clone();
    let warm = closed_loop(args.concurrency, Duration::from_secs(args.seconds), move |c, n| {
        let mut m = MarketingServiceClient::new(chans[c % chans.len()].clone());
        let req = mk::RecordTouchRequest {
            request_id: format!("warm-{c}-{n}"),
            lead_id: ids[load::spread(c, n, ids.len())].clone(),
            kind: mk::TouchKind::EmailOpen as i32,
            ..Default::default()
        };
        async move { m.record_touch(req).await.map(|_| ()) }
    })
    .await;
    anyhow::ensure!(warm.ok > 0, "the suite process accepted no touch while warming up");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The burst touches the leads the warm-up did: the pipeline's working set.
    let ids_file = data_dir.join("burst-leads.txt");
    std::fs::write(&ids_file, leads.join("\n"))?;
    let (before, _) = rss(pid);
    reset_peak_rss(pid);
    let out = tokio::process::Command::new(&exe)
        .args(["overload-client", "--addr", &url])
        .arg("--token-file")
        .arg(&token_file)
        .args(["--callers", &args.overload_callers.to_string()])
        .args(["--seconds", &args.overload_seconds.to_string()])
        .arg("--leads")
        .arg(&ids_file)
        .output()
        .await?;
    let (during, peak) = rss(pid);
    anyhow::ensure!(out.status.success(), "overload client failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut after = during;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = rss(pid).0;
    }
    print!("{}", String::from_utf8_lossy(&out.stdout));
    println!(
        "{:<22} suite process RSS warmed up {before:.0} MiB, peak {peak:.0} MiB, 10 s after {after:.0} MiB ({:+.0}%)",
        "  memory",
        (after - before) / before * 100.0
    );
    drop(child.stdin.take());
    child.wait().await?;
    Ok(())
}

/// Codes by count, for a report line.
pub fn codes(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = errors.iter().map(|(c, n)| format!("{c} {n}")).collect();
    format!("   errors: {}", parts.join(", "))
}

impl Stats {
    fn print(&self, name: &str, echo: Option<f64>) {
        let ratio = echo.map(|e| format!("{:.2}x echo", self.rate() / e)).unwrap_or_default();
        println!(
            "{name:<22} {:>10} calls {:>10.0} calls/s {ratio:>11}   p50 {:>7.3} ms   p99 {:>7.3} ms{}",
            self.ok,
            self.rate(),
            ms(self.percentile(0.50)),
            ms(self.percentile(0.99)),
            codes(&self.errors),
        );
    }
}
