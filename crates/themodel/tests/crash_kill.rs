//! The five services as separate `themodel serve` processes, on SQLite, with
//! leads driven through the whole chain by clients that retry every call
//! with the same `request_id`, while services are SIGKILLed at random and
//! started again. Afterwards every lead, queue item, opportunity, account
//! and KPI count must match what the clients did: nothing lost, nothing
//! doubled. The number of kills survived is written to
//! `<target>/tmp/crash-kill.txt` (and printed with `--nocapture`).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost_types::Timestamp;
use rand::Rng;
use themodel_proto::common::v1::event_stream_service_client::EventStreamServiceClient;
use themodel_proto::common::v1::{Bant, ListEventsRequest, Money};
use themodel_proto::customersuccess::v1 as cs;
use themodel_proto::customersuccess::v1::customer_success_service_client::CustomerSuccessServiceClient;
use themodel_proto::fieldsales::v1 as fs;
use themodel_proto::fieldsales::v1::field_sales_service_client::FieldSalesServiceClient;
use themodel_proto::insidesales::v1 as is;
use themodel_proto::insidesales::v1::inside_sales_service_client::InsideSalesServiceClient;
use themodel_proto::kpi::v1 as kpi;
use themodel_proto::kpi::v1::kpi_service_client::KpiServiceClient;
use themodel_proto::marketing::v1 as mk;
use themodel_proto::marketing::v1::marketing_service_client::MarketingServiceClient;
use themodel_runtime::auth::{self, LocalTokens};
use themodel_runtime::telemetry::{PeerChannel, peer_channel};
use tonic::{Code, Status};

/// Leads driven at least, and at most (one page of each list); between the
/// two, the drivers keep taking new leads until the last kill.
const LEADS: usize = 80;
const MAX_LEADS: usize = 400;
const DRIVERS: usize = 8;
const MIN_KILLS: usize = 20;
const SERVICES: [&str; 5] = ["marketing", "inside-sales", "field-sales", "customer-success", "kpi"];

/// One service process and how to start it again.
struct Process {
    args: Vec<String>,
    log: PathBuf,
    child: Child,
}

impl Process {
    fn spawn(args: Vec<String>, log: PathBuf) -> Process {
        let child = start(&args, &log);
        Process { args, log, child }
    }

    /// SIGKILL, then the same command again on the same port and database.
    fn kill_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.child = start(&self.args, &self.log);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[String], log: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_themodel"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn ts(s: &str) -> Option<Timestamp> {
    Some(s.parse().unwrap())
}

fn yen(units: i64) -> Money {
    Money { currency_code: "JPY".into(), units, nanos: 0 }
}

/// Statuses a retry with the same request id can get past while a service
/// is down or restarting, or while a hand-over has not arrived yet.
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::NotFound
    )
}

/// Calls until the call succeeds, as a client that retries with the same
/// request would; any other refusal fails the test.
async fn retry<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        match call().await {
            Ok(answer) => return answer.into_inner(),
            Err(s) if retryable(s.code()) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            Err(s) => panic!("{what}: {s:?}"),
        }
    }
}

/// A closure that makes one call on a clone of `client`, for [`retry`].
macro_rules! call {
    ($client:expr, $method:ident, $request:expr) => {
        || {
            let (mut client, request) = ($client.clone(), $request.clone());
            async move { client.$method(request).await }
        }
    };
}

#[derive(Clone)]
struct Clients {
    marketing: MarketingServiceClient<PeerChannel>,
    inside_sales: InsideSalesServiceClient<PeerChannel>,
    field_sales: FieldSalesServiceClient<PeerChannel>,
    customer_success: CustomerSuccessServiceClient<PeerChannel>,
    kpi: KpiServiceClient<PeerChannel>,
}

/// One lead from capture to a won deal and its account.
async fn drive(c: &Clients, id: &str) {
    let day = "2026-10-05";
    let capture = mk::CaptureLeadRequest {
        request_id: format!("capture-{id}"),
        lead_id: id.into(),
        email: format!("{id}@corp.example"),
        name: id.into(),
        company: format!("{id} Inc"),
        company_size: 500,
        industry: "software".into(),
        job_title: "CTO".into(),
        source: "web_form".into(),
        relationship: mk::Relationship::Prospect as i32,
        occurred_at: ts(&format!("{day}T09:00:00Z")),
        ..Default::default()
    };
    retry("capture", call!(c.marketing, capture_lead, capture)).await;
    let quote = mk::RecordTouchRequest {
        request_id: format!("quote-{id}"),
        lead_id: id.into(),
        kind: mk::TouchKind::QuoteRequest as i32,
        detail: "/quote".into(),
        occurred_at: ts(&format!("{day}T09:30:00Z")),
    };
    let touched = retry("quote request", call!(c.marketing, record_touch, quote)).await;
    assert!(touched.handed_over, "{id} handed over on its quote request");
    let bant = is::RecordBantRequest {
        request_id: format!("bant-{id}"),
        lead_id: id.into(),
        bant: Some(Bant { budget: true, authority: true, need: true, timeline: true, ..Default::default() }),
        occurred_at: ts(&format!("{day}T10:00:00Z")),
    };
    retry("BANT (once the lead has arrived)", call!(c.inside_sales, record_bant, bant)).await;
    let convert = is::ConvertToOpportunityRequest {
        request_id: format!("convert-{id}"),
        lead_id: id.into(),
        opportunity_id: format!("opp-{id}"),
        estimated_value: Some(yen(1_000_000)),
        note: String::new(),
        occurred_at: ts(&format!("{day}T10:30:00Z")),
    };
    retry("convert", call!(c.inside_sales, convert_to_opportunity, convert)).await;
    for (n, to) in [fs::Phase::IssueRecognition, fs::Phase::Evaluation, fs::Phase::Negotiation, fs::Phase::Approval]
        .into_iter()
        .enumerate()
    {
        let advance = fs::AdvancePhaseRequest {
            request_id: format!("advance-{id}-{n}"),
            opportunity_id: format!("opp-{id}"),
            to_phase: to as i32,
            bant: None,
            occurred_at: ts(&format!("{day}T11:0{n}:00Z")),
        };
        retry("advance (once the opportunity has arrived)", call!(c.field_sales, advance_phase, advance)).await;
    }
    let won = fs::CloseWonRequest {
        request_id: format!("won-{id}"),
        opportunity_id: format!("opp-{id}"),
        contract_value: Some(yen(1_200_000)),
        term_months: 12,
        account_id: format!("acct-{id}"),
        occurred_at: ts(&format!("{day}T12:00:00Z")),
    };
    retry("close won", call!(c.field_sales, close_won, won)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_lost_or_doubled_across_sigkills() {
    let dir = tempfile::tempdir().unwrap();
    let tokens_dir = dir.path().join("tokens");
    let tokens = LocalTokens::ensure(&tokens_dir, &auth::suite_identities()).unwrap();
    let ports: Vec<u16> = SERVICES.iter().map(|_| free_port()).collect();
    let url = |i: usize| format!("http://127.0.0.1:{}", ports[i]);

    let mut processes = Vec::new();
    for (i, name) in SERVICES.into_iter().enumerate() {
        let mut args = vec![
            "serve".to_owned(),
            name.to_owned(),
            format!("--listen=127.0.0.1:{}", ports[i]),
            format!("--database-url=sqlite://{}", dir.path().join(format!("{name}.db")).display()),
            format!("--keyring={}", LocalTokens::keyring_path(&tokens_dir).display()),
            format!("--token-file={}", tokens_dir.join(format!("{name}-service.token")).display()),
            "--poll-interval-ms=50".to_owned(),
            "--definition-refresh-secs=1".to_owned(),
        ];
        for (j, peer) in SERVICES.into_iter().enumerate() {
            if j != i {
                args.push(format!("--{peer}-addr={}", url(j)));
            }
        }
        processes.push(Mutex::new(Process::spawn(args, dir.path().join(format!("{name}.log")))));
    }
    let processes = Arc::new(processes);

    let admin = tokens.credential(auth::ADMIN).unwrap();
    let channel = |i: usize| peer_channel(&url(i), &admin).unwrap();
    let clients = Clients {
        marketing: MarketingServiceClient::new(channel(0)),
        inside_sales: InsideSalesServiceClient::new(channel(1)),
        field_sales: FieldSalesServiceClient::new(channel(2)),
        customer_success: CustomerSuccessServiceClient::new(channel(3)),
        kpi: KpiServiceClient::new(channel(4)),
    };

    // The killer: a random service every 150-450 ms, until the drivers are
    // done; they keep taking new leads until MIN_KILLS kills have happened,
    // so every kill lands while leads move through the chain.
    let done = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicUsize::new(0));
    let killer = {
        let (processes, done, kills) = (processes.clone(), done.clone(), kills.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                let (pause, victim) = {
                    let mut rng = rand::rng();
                    (rng.random_range(150..450), rng.random_range(0..SERVICES.len()))
                };
                tokio::time::sleep(Duration::from_millis(pause)).await;
                let processes = processes.clone();
                tokio::task::spawn_blocking(move || processes[victim].lock().unwrap().kill_and_restart())
                    .await
                    .unwrap();
                kills.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    let next = Arc::new(AtomicUsize::new(0));
    let mut drivers = tokio::task::JoinSet::new();
    for _ in 0..DRIVERS {
        let (clients, next, kills) = (clients.clone(), next.clone(), kills.clone());
        drivers.spawn(async move {
            loop {
                if next.load(Ordering::SeqCst) >= LEADS && kills.load(Ordering::SeqCst) >= MIN_KILLS {
                    return;
                }
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= MAX_LEADS {
                    return;
                }
                // Past the first LEADS, the leads left are spread over the
                // kills still due: lead n waits for its share of them, so a
                // machine where restarts are slow still gets MIN_KILLS kills
                // before the last lead starts.
                let due = (n.saturating_sub(LEADS) * MIN_KILLS).div_ceil(MAX_LEADS - LEADS);
                while kills.load(Ordering::SeqCst) < due {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                drive(&clients, &format!("ck-{n}")).await;
            }
        });
    }
    while let Some(joined) = drivers.join_next().await {
        joined.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    killer.await.unwrap();
    let survived = kills.load(Ordering::SeqCst);
    // Every lead a driver took was driven to the end.
    let driven = next.load(Ordering::SeqCst).min(MAX_LEADS);

    // Every lead reached every department exactly once.
    let accounts_opened = retry("accounts", || {
        let mut c = clients.customer_success.clone();
        async move {
            let page = c.list_accounts(cs::ListAccountsRequest { page_size: 500, ..Default::default() }).await?;
            match page.get_ref().accounts.len() {
                n if n < driven => Err(Status::not_found(format!("{n} accounts so far"))),
                _ => Ok(page),
            }
        }
    })
    .await
    .accounts;
    assert_eq!(accounts_opened.len(), driven, "one account per won deal");
    for a in &accounts_opened {
        assert_eq!(a.contract_value, Some(yen(1_200_000)), "{} counted once", a.account_id);
    }
    let all_leads = mk::ListLeadsRequest { page_size: 500, ..Default::default() };
    let leads = retry("leads", call!(clients.marketing, list_leads, all_leads)).await.leads;
    assert_eq!(leads.len(), driven);
    assert!(leads.iter().all(|l| l.status == mk::LeadStatus::HandedOver as i32));
    let converted =
        is::ListQueueRequest { page_size: 500, status: is::QueueStatus::Converted as i32, ..Default::default() };
    let converted = retry("queue", call!(clients.inside_sales, list_queue, converted)).await.items;
    assert_eq!(converted.len(), driven);
    let all_opportunities = fs::ListOpportunitiesRequest { page_size: 500, ..Default::default() };
    let opportunities =
        retry("opportunities", call!(clients.field_sales, list_opportunities, all_opportunities)).await.opportunities;
    assert_eq!(opportunities.len(), driven, "one opportunity per lead");
    let mut by_lead: Vec<&str> = opportunities.iter().map(|o| o.lead_id.as_str()).collect();
    by_lead.sort_unstable();
    by_lead.dedup();
    assert_eq!(by_lead.len(), driven);

    // kpi, once it has applied every event the four streams hold.
    let mut heads = Vec::new();
    for (i, name) in SERVICES.iter().take(4).enumerate() {
        let stream = EventStreamServiceClient::new(channel(i));
        let req = ListEventsRequest { after_seq: 0, page_size: 1, wait: None };
        let head = retry("stream head", call!(stream, list_events, req)).await.head_seq;
        heads.push((*name, head));
    }
    let october =
        kpi::GetFunnelRequest { start_date: "2026-10-01".into(), end_date: "2026-11-01".into(), ..Default::default() };
    let funnel = retry("kpi caught up", || {
        let (mut k, req, heads) = (clients.kpi.clone(), october.clone(), heads.clone());
        async move {
            let answer = k.get_funnel(req).await?;
            let f = answer.get_ref().funnel.clone().unwrap_or_default();
            let applied = |name: &str| f.sources.iter().find(|s| s.service == name).map(|s| s.applied_seq);
            if heads.iter().all(|(name, head)| applied(name) >= Some(*head)) {
                Ok(answer)
            } else {
                Err(Status::unavailable(format!("kpi at {:?}, heads {heads:?}", f.sources)))
            }
        }
    })
    .await
    .funnel
    .unwrap();
    let n = driven as i64;
    assert_eq!(
        (funnel.leads, funnel.promising_leads, funnel.opportunities, funnel.wins),
        (n, n, n, n),
        "kpi counts each lead once"
    );

    let summary = format!(
        "crash-kill: {driven} leads through the chain, {survived} SIGKILLs of {} survived; nothing lost or doubled",
        SERVICES.join(", ")
    );
    println!("{summary}");
    std::fs::write(Path::new(env!("CARGO_TARGET_TMPDIR")).join("crash-kill.txt"), format!("{summary}\n")).unwrap();
    assert!(survived >= MIN_KILLS, "{survived} kills while {driven} leads went through");
    drop(processes);
}
