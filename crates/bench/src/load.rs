//! The bench's load drivers and checks.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use themodel_proto::marketing::v1 as mk;
use themodel_proto::marketing::v1::marketing_service_client::MarketingServiceClient;
use themodel_runtime::auth::Credential;
use themodel_runtime::db::{Db, Script};
use themodel_runtime::telemetry::{PeerChannel, peer_channel};
use tokio::sync::mpsc;

use crate::echo;

/// Outcomes of a load phase.
#[derive(Debug, Default)]
pub struct Stats {
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
}

impl Stats {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency of successful calls at `p` (0..1).
    pub fn percentile(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }

    fn merge(&mut self, other: Stats) {
        self.ok += other.ok;
        for (code, n) in other.errors {
            *self.errors.entry(code).or_insert(0) += n;
        }
        self.latencies.extend(other.latencies);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A spread of lead indexes that every caller walks differently.
pub fn spread(caller: usize, n: u64, len: usize) -> usize {
    ((caller as u64).wrapping_mul(7919).wrapping_add(n.wrapping_mul(104_729)) % len as u64) as usize
}

async fn drive<F, Fut>(concurrency: usize, until: impl Fn(u64) -> bool + Send + Sync + 'static, call: F) -> Stats
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send,
{
    let call = Arc::new(call);
    let until = Arc::new(until);
    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for c in 0..concurrency.max(1) {
        let (call, until) = (call.clone(), until.clone());
        callers.spawn(async move {
            let mut s = Stats::default();
            let mut n = 0u64;
            while !until(n) {
                let t = Instant::now();
                match call(c, n).await {
                    Ok(()) => {
                        s.ok += 1;
                        s.latencies.push(t.elapsed());
                    }
                    Err(status) => *s.errors.entry(format!("{:?}", status.code())).or_insert(0) += 1,
                }
                n += 1;
            }
            s
        });
    }
    let mut total = Stats::default();
    while let Some(part) = callers.join_next().await {
        if let Ok(part) = part {
            total.merge(part);
        }
    }
    total.elapsed = started.elapsed();
    total.latencies.sort_unstable();
    total
}

/// `concurrency` callers calling `call` back to back for `duration`.
pub async fn closed_loop<F, Fut>(concurrency: usize, duration: Duration, call: F) -> Stats
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send,
{
    let deadline = Instant::now() + duration;
    drive(concurrency, move |_| Instant::now() >= deadline, call).await
}

/// `concurrency` callers making `calls` calls each.
pub async fn fixed_calls<F, Fut>(concurrency: usize, calls: u64, call: F) -> Stats
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send,
{
    drive(concurrency, move |n| n >= calls, call).await
}

/// Starts a bare tonic echo server on a free port; returns its URL.
pub async fn start_echo() -> anyhow::Result<String> {
    struct Echo;

    #[tonic::async_trait]
    impl echo::echo_service_server::EchoService for Echo {
        async fn echo(
            &self,
            request: tonic::Request<echo::EchoRequest>,
        ) -> Result<tonic::Response<echo::EchoResponse>, tonic::Status> {
            Ok(tonic::Response::new(echo::EchoResponse { payload: request.into_inner().payload }))
        }
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(echo::echo_service_server::EchoServiceServer::new(Echo))
            .serve_with_incoming(incoming),
    );
    Ok(format!("http://{addr}"))
}

/// Streaming ingest's outcome.
pub struct Ingest {
    pub touches: u64,
    pub rate: f64,
    pub p50: Duration,
    pub p99: Duration,
}

/// Messages a stream has on the wire before it waits for an acknowledgement.
const IN_FLIGHT: usize = 4;

fn touch_message(
    stream: usize,
    first: u64,
    batch: usize,
    leads: &[String],
) -> (mk::IngestBehaviourRequest, Vec<usize>) {
    let mut items = Vec::with_capacity(batch);
    let mut targets = Vec::with_capacity(batch);
    for k in 0..batch as u64 {
        let seq = first + k;
        let i = spread(stream, seq, leads.len());
        targets.push(i);
        items.push(mk::BehaviourItem {
            event_id: format!("s{stream}-{seq:012}"),
            behaviour: Some(mk::behaviour_item::Behaviour::Touch(mk::TouchInput {
                lead_id: leads[i].clone(),
                kind: mk::TouchKind::EmailOpen as i32,
                ..Default::default()
            })),
        });
    }
    (mk::IngestBehaviourRequest { items }, targets)
}

/// `streams` ingest streams sending `batch`-touch messages for `duration`.
pub async fn ingest(
    channels: &[PeerChannel],
    leads: &Arc<Vec<String>>,
    sent: &Arc<Vec<AtomicU64>>,
    streams: usize,
    batch: usize,
    duration: Duration,
) -> anyhow::Result<Ingest> {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..streams.max(1) {
        let mut client = MarketingServiceClient::new(channels[s % channels.len()].clone());
        let (leads, sent) = (leads.clone(), sent.clone());
        tasks.spawn(async move {
            let (tx, rx) = mpsc::channel(IN_FLIGHT);
            let mut acks = client
                .ingest_behaviour(tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx))
                .await?
                .into_inner();
            let mut pending: VecDeque<(Instant, Vec<usize>)> = VecDeque::new();
            let (mut next, mut touches, mut latencies) = (0u64, 0u64, Vec::new());
            loop {
                while pending.len() < IN_FLIGHT && Instant::now() < deadline {
                    let (msg, targets) = touch_message(s, next, batch, &leads);
                    next += batch as u64;
                    tx.send(msg).await?;
                    pending.push_back((Instant::now(), targets));
                }
                let Some((at, targets)) = pending.pop_front() else { break };
                let ack = acks.message().await?.ok_or_else(|| anyhow::anyhow!("ingest stream ended early"))?;
                anyhow::ensure!(ack.rejected.is_empty(), "rejected: {:?}", ack.rejected.first());
                anyhow::ensure!(
                    ack.acknowledged as u64 == next - (pending.len() * batch) as u64,
                    "acknowledged out of order"
                );
                latencies.push(at.elapsed());
                touches += u64::try_from(ack.recorded).unwrap_or(0);
                for i in targets {
                    sent[i].fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok((touches, latencies))
        });
    }
    let (mut touches, mut latencies) = (0, Vec::new());
    while let Some(part) = tasks.join_next().await {
        let (t, l) = part??;
        touches += t;
        latencies.extend(l);
    }
    latencies.sort_unstable();
    let elapsed = started.elapsed();
    Ok(Ingest {
        touches,
        rate: touches as f64 / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
    })
}

/// Every sampled lead's touch count equals the touches acknowledged to it.
pub async fn check_scores(channel: &PeerChannel, leads: &[String], sent: &[AtomicU64]) -> anyhow::Result<usize> {
    let mut m = MarketingServiceClient::new(channel.clone());
    let step = (leads.len() / 200).max(1);
    let mut checked = 0;
    for i in (0..leads.len()).step_by(step) {
        let lead = m.get_lead(mk::GetLeadRequest { lead_id: leads[i].clone() }).await?.into_inner().lead;
        let count = lead.map_or(-1, |l| i64::from(l.touch_count));
        let want = i64::try_from(sent[i].load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        anyhow::ensure!(count == want, "lead {} has {count} touches, {want} were acknowledged", leads[i]);
        checked += 1;
    }
    Ok(checked)
}

/// Sends stream 0's first message again on a new stream: every item is a duplicate.
pub async fn repeat_message(channel: &PeerChannel, leads: &[String], batch: usize) -> anyhow::Result<i32> {
    let (msg, _) = touch_message(0, 0, batch, leads);
    let mut client = MarketingServiceClient::new(channel.clone());
    let mut acks = client.ingest_behaviour(tonic::codegen::tokio_stream::iter([msg])).await?.into_inner();
    let ack = acks.message().await?.ok_or_else(|| anyhow::anyhow!("no acknowledgement"))?;
    anyhow::ensure!(ack.recorded == 0, "{} items of a repeated message were recorded again", ack.recorded);
    Ok(ack.duplicates)
}

/// Rows per second of inserting, into a fresh SQLite database through the
/// same driver and connection settings, the rows ingest stores per touch (a
/// touch row and its event row), `batch` touches per transaction.
pub async fn raw_insert_rate(batch: usize, touches: u64) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let db = Db::connect(&format!("sqlite://{}/raw.db", dir.path().display())).await?;
    for ddl in [
        "CREATE TABLE touches (lead_id TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL, \
         occurred_at BIGINT NOT NULL, event_id TEXT)",
        "CREATE UNIQUE INDEX touches_by_event ON touches (event_id) WHERE event_id IS NOT NULL",
        "CREATE TABLE events (seq BIGINT PRIMARY KEY, recorded_at BIGINT NOT NULL, type_url TEXT NOT NULL, \
         payload BYTEA NOT NULL)",
    ] {
        sqlx::query(ddl).execute(db.writer()).await?;
    }
    let mut conn = db.open_writer().await?;
    let started = Instant::now();
    let mut done = 0u64;
    while done < touches {
        let rows: Vec<(i64, String, String, Vec<u8>)> = (done..done + batch as u64)
            .map(|n| (n as i64 + 1, format!("b0-{}", n % 2000), format!("raw-{n:012}"), vec![7u8; 90]))
            .collect();
        // The way the suite's writer runs a batch: its own connection, one
        // script for the inserts and the commit.
        sqlx::Executor::execute(&mut conn, "BEGIN IMMEDIATE").await?;
        let mut script = Script::new(&db);
        script.insert_rows(
            "INSERT INTO touches (lead_id, kind, detail, occurred_at, event_id)",
            5,
            "",
            &rows,
            |q, (seq, lead, event, _)| {
                q.bind(lead.as_str()).bind("EMAIL_OPEN").bind("").bind(*seq).bind(event.as_str())
            },
        );
        script.insert_rows(
            "INSERT INTO events (seq, recorded_at, type_url, payload)",
            4,
            "",
            &rows,
            |q, (seq, _, _, payload)| {
                q.bind(*seq)
                    .bind(*seq)
                    .bind("type.googleapis.com/themodel.marketing.v1.MarketingEvent")
                    .bind(payload.as_slice())
            },
        );
        script.push("COMMIT", |q| q);
        script.run(&mut conn).await?;
        done += batch as u64;
    }
    let rate = done as f64 / started.elapsed().as_secs_f64();
    db.close().await;
    Ok(rate)
}

/// The overload burst: `callers` callers sending RecordTouch to `leads`
/// (ids, one per line) for `seconds` over 16 connections; prints what came
/// back and how fast.
pub async fn overload_client(
    addr: &str,
    credential: &Credential,
    callers: usize,
    seconds: u64,
    leads: &std::path::Path,
) -> anyhow::Result<()> {
    let leads: Vec<String> = std::fs::read_to_string(leads)?.lines().map(str::to_owned).collect();
    anyhow::ensure!(!leads.is_empty(), "no lead ids to touch");
    let chans: Vec<PeerChannel> = (0..16).map(|_| peer_channel(addr, credential)).collect::<anyhow::Result<_>>()?;
    let refusals = Arc::new(std::sync::Mutex::new(Vec::new()));
    let refused = refusals.clone();
    let stats = closed_loop(callers, Duration::from_secs(seconds), move |c, n| {
        let mut m = MarketingServiceClient::new(chans[c % chans.len()].clone());
        let req = mk::RecordTouchRequest {
            request_id: format!("burst-{c}-{n}"),
            lead_id: leads[spread(c, n, leads.len())].clone(),
            kind: mk::TouchKind::EmailOpen as i32,
            ..Default::default()
        };
        let refused = refused.clone();
        async move {
            let t = Instant::now();
            let r = m.record_touch(req).await.map(|_| ());
            if let Err(s) = &r
                && s.code() == tonic::Code::ResourceExhausted
            {
                refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(t.elapsed());
                // A well-behaved client backs off as the refusal asks.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            r
        }
    })
    .await;
    let mut refusals = std::mem::take(&mut *refusals.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    refusals.sort_unstable();
    println!(
        "{:<22} {callers} callers for {seconds} s: {} accepted ({:.0}/s, p99 {:.1} ms){}",
        "overload",
        stats.ok,
        stats.rate(),
        stats.percentile(0.99).as_secs_f64() * 1e3,
        crate::codes(&stats.errors),
    );
    println!(
        "{:<22} {} refusals: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        "  refusals",
        refusals.len(),
        percentile(&refusals, 0.5).as_secs_f64() * 1e3,
        percentile(&refusals, 0.99).as_secs_f64() * 1e3,
        refusals.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    Ok(())
}
