//! Owners: inside sales' roster, round-robin and reassignment, the call list
//! per rep, and the cooperative KPIs per rep and team that follow from them.

use std::time::Duration;

use themodel::{ServiceName, SuiteOptions};
use themodel_e2e::{TestSuite, ts};
use themodel_proto::common::v1::Bant;
use themodel_proto::customersuccess::v1 as cs;
use themodel_proto::fieldsales::v1 as fs;
use themodel_proto::insidesales::v1 as is;
use themodel_proto::kpi::v1 as kpi;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::flows::*;

async fn assign(
    t: &TestSuite,
    request_id: &str,
    lead_id: &str,
    owner_id: &str,
) -> Result<is::QueueItem, tonic::Status> {
    t.inside_sales
        .clone()
        .assign_lead(is::AssignLeadRequest {
            request_id: request_id.into(),
            lead_id: lead_id.into(),
            owner_id: owner_id.into(),
            occurred_at: ts("2026-11-02T12:00:00Z"),
        })
        .await
        .map(|r| r.into_inner().item.unwrap())
}

async fn queue_of(t: &TestSuite, owner_id: &str) -> Vec<String> {
    let req = is::ListQueueRequest { owner_id: owner_id.into(), ..Default::default() };
    let items = t.inside_sales.clone().list_queue(req).await.unwrap().into_inner().items;
    items.into_iter().map(|i| i.lead_id).collect()
}

/// (value, opportunities, quality opportunities, wins, losses, quality rate, win rate)
type RepRow = (String, i64, i64, i64, i64, Option<f64>, Option<f64>);

async fn per(t: &TestSuite, split_by: kpi::Dimension) -> (kpi::Funnel, Vec<RepRow>) {
    let req = kpi::GetFunnelRequest {
        start_date: "2026-11-01".into(),
        end_date: "2026-12-01".into(),
        split_by: split_by as i32,
        ..Default::default()
    };
    let r = t.suite.settled_funnel_response(req, Duration::from_secs(20)).await.unwrap();
    let rows = r
        .splits
        .iter()
        .map(|s| {
            let f = s.funnel.as_ref().unwrap();
            (s.value.clone(), f.opportunities, f.quality_opportunities, f.wins, f.losses, f.quality_rate, f.win_rate)
        })
        .collect();
    (r.funnel.unwrap(), rows)
}

/// Inside sales' roster in [`reps_and_their_kpis`].
pub fn roster(o: &mut SuiteOptions) {
    o.owners.insert(ServiceName::InsideSales, "east/aki, east/ben, west/chika".parse().unwrap());
    o.owners.insert(ServiceName::FieldSales, "north/dan, south/eve".parse().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_robin_reassignment_and_cooperative_kpis_per_rep_and_team() {
    let t = TestSuite::start_with(roster).await;
    reps_and_their_kpis(&t).await;
}

/// Four leads round the roster, one moved, converted (one without full
/// BANT) and closed; the KPIs per rep and per team.
pub async fn reps_and_their_kpis(t: &TestSuite) {
    // Four leads handed over one after the other go round the roster.
    let mut owners = Vec::new();
    for id in ["a1", "a2", "a3", "a4"] {
        capture(t, lead(id, "2026-11-02T09:00:00Z")).await;
        assert!(quote_request(t, id, "2026-11-02T09:30:00Z").await.handed_over);
        let item = in_queue(t, id).await;
        owners.push((item.owner_id, item.team));
    }
    let want: Vec<(String, String)> = [("aki", "east"), ("ben", "east"), ("chika", "west"), ("aki", "east")]
        .map(|(o, t)| (o.into(), t.into()))
        .into();
    assert_eq!(owners, want);

    // Reassignment: a rep on the roster, replayed by request_id; anyone
    // else is refused with the roster.
    let moved = assign(t, "give-a4", "a4", "chika").await.unwrap();
    assert_eq!((moved.owner_id.as_str(), moved.team.as_str()), ("chika", "west"));
    assert_eq!(assign(t, "give-a4", "a4", "chika").await.unwrap(), moved, "replayed");
    let refused = assign(t, "give-a4-zed", "a4", "zed").await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let violations = refused.get_details_bad_request().unwrap().field_violations;
    assert_eq!(violations[0].field, "owner_id");
    assert!(violations[0].description.contains("one of aki, ben, chika"), "{}", violations[0].description);
    assert_eq!(assign(t, "give-a1-empty", "a1", "").await.unwrap_err().code(), Code::InvalidArgument);

    // The call list per rep.
    assert_eq!(queue_of(t, "chika").await, ["a3", "a4"]);
    assert_eq!(queue_of(t, "aki").await, ["a1"]);
    assert_eq!(queue_of(t, "").await.len(), 4, "everyone's");

    // a2 is converted without budget and authority: not a quality
    // opportunity. Account executives get the opportunities in turn.
    let mut aes = Vec::new();
    let partial = Bant { need: true, timeline: true, ..Default::default() };
    for (id, bant) in [("a1", bant_all()), ("a2", partial), ("a3", bant_all()), ("a4", bant_all())] {
        qualify(t, id, bant, "2026-11-03T10:00:00Z").await;
        let converted = convert(t, id, &format!("opp-{id}"), "2026-11-03T10:30:00Z").await;
        assert_eq!(converted.item.unwrap().owner_id, owners_after_move(id));
        let opened = opportunity(t, &format!("opp-{id}")).await;
        assert_eq!(opened.handed_over_by, owners_after_move(id), "field sales knows who handed it over");
        aes.push(opened.owner_id);
        if id == "a2" {
            // Field sales confirms budget and authority before the first exit.
            let req = fs::AdvancePhaseRequest {
                request_id: "a2-budget".into(),
                opportunity_id: "opp-a2".into(),
                to_phase: fs::Phase::IssueRecognition as i32,
                bant: Some(bant_all()),
                occurred_at: ts("2026-11-04T09:00:00Z"),
            };
            t.field_sales.clone().advance_phase(req).await.unwrap();
            for to in [fs::Phase::Evaluation, fs::Phase::Negotiation, fs::Phase::Approval] {
                advance(t, "opp-a2", to, "2026-11-04T10:00:00Z").await.unwrap();
            }
        } else {
            walk_to_approval(t, &format!("opp-{id}"), "2026-11-04T10:00:00Z").await;
        }
    }
    assert_eq!(aes, ["dan", "eve", "dan", "eve"]);
    let moved = assign_opportunity(t, "give-opp-a3", "opp-a3", "eve").await.unwrap();
    assert_eq!((moved.owner_id.as_str(), moved.team.as_str()), ("eve", "south"));
    let refused = assign_opportunity(t, "give-opp-a3-zed", "opp-a3", "zed").await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    close_won(t, "opp-a1", "acct-a1", "2026-11-10T10:00:00Z").await;
    close_won(t, "opp-a2", "acct-a2", "2026-11-11T10:00:00Z").await;
    close_lost(t, "opp-a3", "lost_price", "2026-11-12T10:00:00Z").await;
    close_won(t, "opp-a4", "acct-a4", "2026-11-13T10:00:00Z").await;

    let converted = assign(t, "give-a1-late", "a1", "ben").await.unwrap_err();
    assert_eq!(converted.code(), Code::FailedPrecondition, "a converted lead stays with the rep who converted it");
    let closed = assign_opportunity(t, "give-opp-a1-late", "opp-a1", "eve").await.unwrap_err();
    assert_eq!(closed.code(), Code::FailedPrecondition, "a closed deal stays with the executive who closed it");
    let req = fs::ListOpportunitiesRequest { owner_id: "eve".into(), ..Default::default() };
    let eves = t.field_sales.clone().list_opportunities(req).await.unwrap().into_inner().opportunities;
    let eves: Vec<&str> = eves.iter().map(|o| o.opportunity_id.as_str()).collect();
    assert_eq!(eves, ["opp-a4", "opp-a3", "opp-a2"]);
    let req =
        fs::ListOpportunitiesRequest { owner_id: "eve".into(), phase: fs::Phase::Lost as i32, ..Default::default() };
    let lost = t.field_sales.clone().list_opportunities(req).await.unwrap().into_inner().opportunities;
    assert_eq!(lost.len(), 1);

    // Per rep: what each handed over, how much of it was quality, and how
    // much of it field sales won.
    let (total, reps) = per(t, kpi::Dimension::InsideSalesRep).await;
    assert_eq!((total.opportunities, total.quality_opportunities, total.quality_rate), (4, 3, Some(0.75)));
    assert_eq!(
        reps,
        [
            ("aki".into(), 1, 1, 1, 0, Some(1.0), Some(1.0)),
            ("ben".into(), 1, 0, 1, 0, Some(0.0), Some(1.0)),
            ("chika".into(), 2, 2, 1, 1, Some(1.0), Some(0.5)),
        ]
    );
    let (_, teams) = per(t, kpi::Dimension::InsideSalesTeam).await;
    assert_eq!(
        teams,
        [("east".into(), 2, 1, 2, 0, Some(0.5), Some(1.0)), ("west".into(), 2, 2, 1, 1, Some(1.0), Some(0.5))]
    );

    // Per account executive: what each closed.
    let (_, executives) = per(t, kpi::Dimension::AccountExecutive).await;
    assert_eq!(
        executives,
        [
            ("dan".into(), 1, 1, 1, 0, Some(1.0), Some(1.0)),
            ("eve".into(), 3, 2, 2, 1, Some(2.0 / 3.0), Some(2.0 / 3.0))
        ]
    );

    // The journey names the rep.
    let journey = t
        .kpi
        .clone()
        .get_journey(kpi::GetJourneyRequest { lead_id: "a4".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let rep = journey.dimensions.iter().find(|d| d.dimension == kpi::Dimension::InsideSalesRep as i32).unwrap();
    assert_eq!(rep.value, "chika");
}

async fn assign_opportunity(
    t: &TestSuite,
    request_id: &str,
    opportunity_id: &str,
    owner_id: &str,
) -> Result<fs::Opportunity, tonic::Status> {
    let req = fs::AssignOpportunityRequest {
        request_id: request_id.into(),
        opportunity_id: opportunity_id.into(),
        owner_id: owner_id.into(),
        occurred_at: ts("2026-11-04T12:00:00Z"),
    };
    t.field_sales.clone().assign_opportunity(req).await.map(|r| r.into_inner().opportunity.unwrap())
}

/// Who converts each lead of the scenario: its round-robin rep, but a4 was
/// moved to chika.
fn owners_after_move(id: &str) -> &'static str {
    match id {
        "a1" => "aki",
        "a2" => "ben",
        _ => "chika",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_roster_leads_wait_unassigned_and_any_rep_may_be_named() {
    let t = TestSuite::start().await;
    capture(&t, lead("solo", "2026-11-02T09:00:00Z")).await;
    assert!(quote_request(&t, "solo", "2026-11-02T09:30:00Z").await.handed_over);
    let item = in_queue(&t, "solo").await;
    assert_eq!((item.owner_id.as_str(), item.team.as_str()), ("", ""));
    let item = assign(&t, "give-solo", "solo", "zed").await.unwrap();
    assert_eq!((item.owner_id.as_str(), item.team.as_str()), ("zed", ""));
    assert_eq!(assign(&t, "give-solo-bad", "solo", "no spaces").await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(assign(&t, "give-ghost", "ghost", "zed").await.unwrap_err().code(), Code::NotFound);
    let req = is::ListQueueRequest { owner_id: "no spaces".into(), ..Default::default() };
    let err = t.inside_sales.clone().list_queue(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.get_details_bad_request().unwrap().field_violations[0].field, "owner_id");
}

/// Customer success' roster in [`managers_and_their_books`].
pub fn managers(o: &mut SuiteOptions) {
    o.owners.insert(ServiceName::CustomerSuccess, "care/cy, care/dee".parse().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn customer_success_managers_own_accounts_and_their_retention() {
    let t = TestSuite::start_with(managers).await;
    managers_and_their_books(&t).await;
}

async fn assign_account(
    t: &TestSuite,
    request_id: &str,
    account_id: &str,
    owner_id: &str,
) -> Result<cs::Account, Status> {
    let req = cs::AssignAccountRequest {
        request_id: request_id.into(),
        account_id: account_id.into(),
        owner_id: owner_id.into(),
        occurred_at: ts("2026-11-20T12:00:00Z"),
    };
    t.customer_success.clone().assign_account(req).await.map(|r| r.into_inner().account.unwrap())
}

async fn book_of(t: &TestSuite, owner_id: &str, status: cs::AccountStatus) -> Vec<String> {
    let req = cs::ListAccountsRequest { owner_id: owner_id.into(), status: status as i32, ..Default::default() };
    let accounts = t.customer_success.clone().list_accounts(req).await.unwrap().into_inner().accounts;
    accounts.into_iter().map(|a| a.account_id).collect()
}

/// The accounts of [`crate::retention::accounts`] go round the managers;
/// acct-c is moved to dee; the KPIs per manager.
pub async fn managers_and_their_books(t: &TestSuite) {
    crate::retention::accounts(t).await;
    let mut owners = Vec::new();
    for id in ["a", "b", "c", "d", "e"] {
        let a = account(t, &format!("acct-{id}")).await;
        owners.push(format!("{}/{}", a.team, a.owner_id));
    }
    // d's expansion kept its manager.
    assert_eq!(owners, ["care/cy", "care/dee", "care/cy", "care/dee", "care/cy"]);

    let moved = assign_account(t, "give-c", "acct-c", "dee").await.unwrap();
    assert_eq!((moved.owner_id.as_str(), moved.team.as_str()), ("dee", "care"));
    assert_eq!(assign_account(t, "give-c", "acct-c", "dee").await.unwrap(), moved, "replayed");
    let refused = assign_account(t, "give-c-zed", "acct-c", "zed").await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let violations = refused.get_details_bad_request().unwrap().field_violations;
    assert!(violations[0].description.contains("one of cy, dee"), "{}", violations[0].description);
    let churned = assign_account(t, "give-b", "acct-b", "cy").await.unwrap_err();
    assert_eq!(churned.code(), Code::FailedPrecondition, "a churned account keeps the manager it churned with");
    assert_eq!(assign_account(t, "give-ghost", "acct-ghost", "cy").await.unwrap_err().code(), Code::NotFound);

    // Each manager's book, newest first, and by status.
    assert_eq!(book_of(t, "dee", cs::AccountStatus::Unspecified).await, ["acct-d", "acct-c", "acct-b"]);
    assert_eq!(book_of(t, "dee", cs::AccountStatus::Churned).await, ["acct-b"]);
    assert_eq!(book_of(t, "cy", cs::AccountStatus::Unspecified).await, ["acct-e", "acct-a"]);

    // November's funnel per manager: every lead whose deal went into an
    // account is filed under its manager (d2 under d's, dee).
    let req = kpi::GetFunnelRequest {
        start_date: "2026-11-01".into(),
        end_date: "2026-12-01".into(),
        split_by: kpi::Dimension::CustomerSuccessManager as i32,
        ..Default::default()
    };
    let r = t.suite.settled_funnel_response(req, Duration::from_secs(20)).await.unwrap();
    let rows: Vec<(&str, i64, i64, i64, Option<f64>)> = r
        .splits
        .iter()
        .map(|s| {
            let f = s.funnel.as_ref().unwrap();
            (s.value.as_str(), f.wins, f.retained, f.churned, f.renewal_rate)
        })
        .collect();
    assert_eq!(rows, [("cy", 1, 1, 0, Some(1.0)), ("dee", 1, 1, 1, Some(0.5))]);

    // Retention per manager: cy kept a (renewed up), dee lost b, shrank c
    // and grew d.
    let req = kpi::GetRetentionRequest {
        start_date: "2026-11-01".into(),
        period_unit: kpi::PeriodUnit::Month as i32,
        split_by: kpi::Dimension::CustomerSuccessManager as i32,
        ..Default::default()
    };
    let r = t.kpi.clone().get_retention(req).await.unwrap().into_inner();
    let rows: Vec<(&str, i64, i64, [i64; 5])> = r
        .splits
        .iter()
        .map(|s| {
            let r = s.retention.as_ref().unwrap();
            let m = &r.revenue[0];
            let units = [&m.start_arr, &m.churned, &m.contraction, &m.expansion, &m.end_arr]
                .map(|m| m.as_ref().map_or(0, |m| m.units));
            (s.value.as_str(), r.accounts_at_start, r.churned_accounts, units)
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("cy", 1, 0, [1_200_000, 0, 0, 300_000, 2_700_000]),
            ("dee", 3, 1, [3_600_000, 1_200_000, 300_000, 1_200_000, 3_300_000])
        ]
    );
}
