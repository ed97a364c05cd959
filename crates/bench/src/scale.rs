//! `themodel-bench scale`: kpi alone, fed synthetic typed event streams for
//! a given number of leads, then read at 8 concurrent callers.
//!
//! Four stand-in department services serve `EventStreamService` from a
//! generator (no database behind them): per lead, marketing's capture and a
//! hand-over or a visit; inside sales' acceptance and a conversion or a
//! first contact; field sales' deal and its win or loss; customer success'
//! account and its renewal. kpi reads them from zero as it would after
//! `--rebuild`, which gives the rebuild rate; then the waterfall (both
//! views, splits, a month and a year), the bottleneck and the plan are
//! timed. Run for several lead counts, the latencies show whether a read's
//! cost depends on how many leads there are.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use prost::{Message, Name};
use prost_types::{Any, Timestamp};
use themodel::ServiceName;
use themodel_proto::common::v1 as common;
use themodel_proto::common::v1::event_stream_service_server::{EventStreamService, EventStreamServiceServer};
use themodel_proto::customersuccess::v1 as cs;
use themodel_proto::fieldsales::v1 as fs;
use themodel_proto::insidesales::v1 as is;
use themodel_proto::kpi::v1 as kpi;
use themodel_proto::kpi::v1::kpi_service_client::KpiServiceClient;
use themodel_proto::marketing::v1 as mk;
use themodel_runtime::auth::Credential;
use themodel_runtime::telemetry::peer_channel;
use themodel_runtime::{Clock, Peers, ServiceConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::load;

/// The first capture: 2025-01-01T00:00:00Z. Captures are spread evenly over
/// the year that follows.
const FIRST: i64 = 1_735_689_600;
const YEAR: i64 = 365 * 86_400;
const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;

const SOURCES: [&str; 6] = ["web_form", "trade_show", "seminar", "download", "referral", "ads"];

/// Which of the four streams.
#[derive(Debug, Clone, Copy)]
enum Stream {
    Marketing,
    InsideSales,
    FieldSales,
    CustomerSuccess,
}

/// Every event of one stream for `leads` leads, made on demand: each lead
/// that reaches the stream has two events in it, in lead order.
#[derive(Debug, Clone, Copy)]
struct Generator {
    stream: Stream,
    leads: u64,
}

/// Of every 10 leads, 4 are handed over (0-3), 2 of those converted (0-1);
/// of the converted, those in even tens are won and open an account.
fn handed_over(lead: u64) -> bool {
    lead % 10 < 4
}

fn converted(lead: u64) -> bool {
    lead % 10 < 2
}

fn won(lead: u64) -> bool {
    converted(lead) && (lead / 10).is_multiple_of(2)
}

impl Generator {
    /// How many leads reach the stream (the rules above; a test holds
    /// this and [`Generator::lead`] to them).
    fn len(self) -> u64 {
        let n = self.leads;
        match self.stream {
            Stream::Marketing => n,
            Stream::InsideSales => n / 10 * 4 + (n % 10).min(4),
            Stream::FieldSales => n / 10 * 2 + (n % 10).min(2),
            Stream::CustomerSuccess => n / 20 * 2 + (n % 20).min(2),
        }
    }

    fn head(self) -> i64 {
        2 * self.len() as i64
    }

    /// The `k`-th lead to reach the stream.
    fn lead(self, k: u64) -> u64 {
        match self.stream {
            Stream::Marketing => k,
            Stream::InsideSales => k / 4 * 10 + k % 4,
            Stream::FieldSales => k / 2 * 10 + k % 2,
            Stream::CustomerSuccess => k / 2 * 20 + k % 2,
        }
    }

    /// The event at `seq` (from 1).
    fn event(self, seq: i64) -> common::Event {
        let k = (seq - 1) as u64 / 2;
        let second = seq % 2 == 0;
        let i = self.lead(k);
        let id = format!("lead-{i}");
        let captured = FIRST + (i as i128 * YEAR as i128 / self.leads.max(1) as i128) as i64;
        let at = |offset: i64| Some(Timestamp { seconds: captured + offset, nanos: 0 });
        let yen = Some(common::Money { currency_code: "JPY".into(), units: 1_200_000, nanos: 0 });
        let opportunity = format!("opp-{i}");
        let account = format!("acct-{i}");
        let (occurred, any) = match self.stream {
            Stream::Marketing => {
                use mk::marketing_event::Event as M;
                let event = match (second, handed_over(i)) {
                    (false, _) => M::LeadCaptured(mk::LeadCaptured {
                        lead_id: id.clone(),
                        source: SOURCES[i as usize % SOURCES.len()].into(),
                        campaign: format!("campaign-{}", i % 40),
                        industry: "software".into(),
                        company_size: 500,
                        job_title: "CTO".into(),
                        definition_version: 1,
                        ..Default::default()
                    }),
                    (true, true) => M::LeadPromoted(mk::LeadPromoted { lead_id: id.clone(), ..Default::default() }),
                    (true, false) => M::VisitRecorded(mk::VisitRecorded {
                        visit_id: format!("visit-{i}"),
                        visitor_id: format!("visitor-{}", i / 2),
                        ..Default::default()
                    }),
                };
                let offset = if second { HOUR } else { 0 };
                (at(offset), pack(&mk::MarketingEvent { occurred_at: at(offset), event: Some(event) }))
            }
            Stream::InsideSales => {
                use is::inside_sales_event::Event as I;
                let (offset, event) = match (second, converted(i)) {
                    (false, _) => (
                        HOUR,
                        I::LeadAccepted(is::LeadAccepted {
                            lead_id: id.clone(),
                            owner_id: format!("rep-{}", i % 20),
                            team: format!("team-{}", i % 3),
                            ..Default::default()
                        }),
                    ),
                    (true, true) => (
                        2 * DAY,
                        I::OpportunityConverted(is::OpportunityConverted {
                            opportunity_id: opportunity.clone(),
                            lead_id: id.clone(),
                            quality: i.is_multiple_of(3),
                            ..Default::default()
                        }),
                    ),
                    (true, false) => (
                        3 * HOUR,
                        I::ActivityLogged(is::ActivityLogged {
                            lead_id: id.clone(),
                            activity_id: format!("call-{i}"),
                            first_contact: true,
                            ..Default::default()
                        }),
                    ),
                };
                (at(offset), pack(&is::InsideSalesEvent { occurred_at: at(offset), event: Some(event) }))
            }
            Stream::FieldSales => {
                use fs::field_sales_event::Event as F;
                let (offset, event) = match (second, won(i)) {
                    (false, _) => (
                        2 * DAY,
                        F::OpportunityOpened(fs::OpportunityOpened {
                            opportunity_id: opportunity.clone(),
                            lead_id: id.clone(),
                            owner_id: format!("ae-{}", i % 7),
                            ..Default::default()
                        }),
                    ),
                    (true, true) => (
                        20 * DAY,
                        F::OpportunityWon(fs::OpportunityWon {
                            opportunity_id: opportunity.clone(),
                            lead_id: id.clone(),
                            account_id: account.clone(),
                            contract_value: yen.clone(),
                            term_months: 12,
                            ..Default::default()
                        }),
                    ),
                    (true, false) => (
                        20 * DAY,
                        F::OpportunityLost(fs::OpportunityLost {
                            opportunity_id: opportunity.clone(),
                            lead_id: id.clone(),
                            reason: "lost_price".into(),
                            ..Default::default()
                        }),
                    ),
                };
                (at(offset), pack(&fs::FieldSalesEvent { occurred_at: at(offset), event: Some(event) }))
            }
            Stream::CustomerSuccess => {
                use cs::customer_success_event::Event as C;
                let (offset, event) = if second {
                    (
                        385 * DAY,
                        C::RenewalRecorded(cs::RenewalRecorded {
                            account_id: account.clone(),
                            term_months: 12,
                            contract_value: yen.clone(),
                            renewals: 1,
                            ..Default::default()
                        }),
                    )
                } else {
                    (
                        20 * DAY,
                        C::AccountOpened(cs::AccountOpened {
                            account_id: account.clone(),
                            opportunity_id: opportunity.clone(),
                            lead_id: id.clone(),
                            contract_value: yen.clone(),
                            term_months: 12,
                            owner_id: format!("csm-{}", i % 5),
                            ..Default::default()
                        }),
                    )
                };
                (at(offset), pack(&cs::CustomerSuccessEvent { occurred_at: at(offset), event: Some(event) }))
            }
        };
        common::Event { seq, recorded_at: occurred, event: Some(any) }
    }
}

fn pack<M: Message + Name>(m: &M) -> Any {
    Any { type_url: M::type_url(), value: m.encode_to_vec() }
}

#[tonic::async_trait]
impl EventStreamService for Generator {
    async fn list_events(
        &self,
        request: Request<common::ListEventsRequest>,
    ) -> Result<Response<common::ListEventsResponse>, Status> {
        let req = request.into_inner();
        let head = self.head();
        let first = req.after_seq.max(0) + 1;
        let last = (req.after_seq.max(0) + i64::from(req.page_size.clamp(1, 10_000))).min(head);
        if first > head {
            // At the head: nothing will come, answer after a short wait.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let events = (first..=last).map(|seq| self.event(seq)).collect();
        Ok(Response::new(common::ListEventsResponse {
            events,
            head_seq: head,
            stream_id: format!("bench-{:?}-{}", self.stream, self.leads),
        }))
    }
}

/// Serves `generator` on a free local port.
async fn serve(generator: Generator, stop: CancellationToken) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EventStreamServiceServer::new(generator))
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned()),
    );
    Ok(format!("http://{addr}"))
}

/// One scale run per count in `leads`: the rebuild, then `calls` reads of
/// each kind at 8 concurrent callers.
pub async fn run(leads: &[u64], calls: u64) -> anyhow::Result<()> {
    for &n in leads {
        one(n, calls).await?;
    }
    Ok(())
}

async fn one(n: u64, calls: u64) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let streams = [Stream::Marketing, Stream::InsideSales, Stream::FieldSales, Stream::CustomerSuccess]
        .map(|stream| Generator { stream, leads: n });
    let total: i64 = streams.iter().map(|g| g.head()).sum();
    let mut urls = Vec::new();
    for g in streams {
        urls.push(serve(g, stop.clone()).await?);
    }
    let dir = tempfile::tempdir()?;
    let mut config = ServiceConfig::new(format!("sqlite://{}", dir.path().join("kpi.db").display()));
    config.peers = Peers {
        marketing: Some(urls[0].clone()),
        inside_sales: Some(urls[1].clone()),
        field_sales: Some(urls[2].clone()),
        customer_success: Some(urls[3].clone()),
        kpi: None,
    };
    config.poll_interval = Duration::from_millis(100);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let kpi_url = format!("http://{}", listener.local_addr()?);
    let started = Instant::now();
    let task = tokio::spawn(ServiceName::Kpi.run(config, Clock::system(), listener, stop.clone()));
    let channel = peer_channel(&kpi_url, &Credential::none())?;
    let mut k = KpiServiceClient::new(channel.clone());

    // The rebuild: until every stream is applied to its head.
    let year = |view: kpi::View| kpi::GetFunnelRequest {
        start_date: "2025-01-01".into(),
        end_date: "2026-01-01".into(),
        view: view as i32,
        ..Default::default()
    };
    let f = loop {
        if let Ok(r) = k.get_funnel(year(kpi::View::Flow)).await {
            let f = r.into_inner().funnel.unwrap_or_default();
            let applied: i64 = f.sources.iter().map(|s| s.applied_seq).sum();
            if applied >= total {
                break f;
            }
        }
        anyhow::ensure!(!task.is_finished(), "kpi stopped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = started.elapsed();
    println!(
        "{n:>9} leads: kpi rebuilt {total} events in {:.1} s: {:.0} events/s ({} leads, {} wins counted)",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64(),
        f.leads,
        f.wins
    );

    let month =
        kpi::GetFunnelRequest { start_date: "2025-06-01".into(), end_date: "2025-07-01".into(), ..Default::default() };
    let funnels = [
        ("flow, 1 month", month.clone()),
        ("flow, 1 year", year(kpi::View::Flow)),
        ("cohort, 1 year", year(kpi::View::Cohort)),
        (
            "flow, 1 year by source",
            kpi::GetFunnelRequest { split_by: kpi::Dimension::Source as i32, ..year(kpi::View::Flow) },
        ),
        (
            "cohort, 1 year by rep",
            kpi::GetFunnelRequest { split_by: kpi::Dimension::InsideSalesRep as i32, ..year(kpi::View::Cohort) },
        ),
        ("flow, 1 year, Kolkata", kpi::GetFunnelRequest { time_zone: "Asia/Kolkata".into(), ..year(kpi::View::Flow) }),
        (
            "cohort, 1 month, as of, Kolkata",
            kpi::GetFunnelRequest {
                view: kpi::View::Cohort as i32,
                as_of_date: "2025-06-20".into(),
                time_zone: "Asia/Kolkata".into(),
                ..month.clone()
            },
        ),
    ];
    for (name, req) in funnels {
        let ch = channel.clone();
        let stats = load::fixed_calls(8, calls, move |_, _| {
            let mut k = KpiServiceClient::new(ch.clone());
            let req = req.clone();
            async move { k.get_funnel(req).await.map(|_| ()) }
        })
        .await;
        stats.print(&format!("  GetFunnel {name}"), None);
    }
    let ch = channel.clone();
    let stats = load::fixed_calls(8, calls, move |_, _| {
        let mut k = KpiServiceClient::new(ch.clone());
        let req = kpi::GetBottleneckRequest {
            start_date: "2025-10-01".into(),
            end_date: "2025-11-01".into(),
            ..Default::default()
        };
        async move { k.get_bottleneck(req).await.map(|_| ()) }
    })
    .await;
    stats.print("  GetBottleneck 1 month", None);
    let ch = channel.clone();
    let stats = load::fixed_calls(8, calls, move |_, _| {
        let mut k = KpiServiceClient::new(ch.clone());
        let yen = |units| Some(common::Money { currency_code: "JPY".into(), units, nanos: 0 });
        let req = kpi::PlanFromRevenueRequest {
            revenue_target: yen(120_000_000),
            average_deal_size: yen(1_200_000),
            start_date: "2026-01-01".into(),
            end_date: "2026-04-01".into(),
            ..Default::default()
        };
        async move { k.plan_from_revenue(req).await.map(|_| ()) }
    })
    .await;
    stats.print("  PlanFromRevenue", None);

    stop.cancel();
    task.await??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `lead` has events in `stream`.
    fn reached_by(stream: Stream, lead: u64) -> bool {
        match stream {
            Stream::Marketing => true,
            Stream::InsideSales => handed_over(lead),
            Stream::FieldSales => converted(lead),
            Stream::CustomerSuccess => won(lead),
        }
    }

    #[test]
    fn each_stream_holds_exactly_the_leads_that_reach_it_in_order() {
        for leads in [0, 1, 9, 10, 19, 20, 21, 137] {
            for stream in [Stream::Marketing, Stream::InsideSales, Stream::FieldSales, Stream::CustomerSuccess] {
                let g = Generator { stream, leads };
                let listed: Vec<u64> = (0..g.len()).map(|k| g.lead(k)).collect();
                let reaching: Vec<u64> = (0..leads).filter(|&i| reached_by(stream, i)).collect();
                assert_eq!(listed, reaching, "{stream:?}, {leads} leads");
            }
        }
    }
}
