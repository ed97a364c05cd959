//! A month of the revenue chain, then the exact funnel the flow rules of docs/domain.md give for it.

use themodel_e2e::{TestSuite, ts};
use themodel_proto::customersuccess::v1 as cs;
use themodel_proto::insidesales::v1 as is;
use themodel_proto::kpi::v1 as kpi;
use themodel_proto::marketing::v1 as mk;

use crate::flows::*;

/// Drives: ada won and renewed; dan won and churned; bob recycled by inside
/// sales (timing); kim a student (excluded); carl's opportunity lost (recycled).
/// Returns the suite for further checks.
pub async fn november(t: &TestSuite) {
    // Anonymous visits: four visitors in November, one on Oct 31 (outside).
    visit(t, "cookie-ada", "2026-11-02T08:00:00Z").await;
    visit(t, "cookie-ada", "2026-11-03T08:00:00Z").await;
    visit(t, "cookie-bob", "2026-11-02T08:30:00Z").await;
    visit(t, "cookie-kim", "2026-11-04T08:00:00Z").await;
    visit(t, "cookie-carl", "2026-11-05T08:00:00Z").await;
    visit(t, "cookie-zed", "2026-10-31T23:59:59Z").await;

    // ada: identified from her visits, won, renewed.
    let mut ada = lead("ada", "2026-11-03T09:00:00Z");
    ada.visitor_id = "cookie-ada".into();
    let captured = capture(t, ada).await;
    assert_eq!(captured.touch_count, 2, "anonymous visits join the lead");
    assert_eq!(captured.behaviour_score, 6, "two product-page views");
    assert_eq!(captured.status, mk::LeadStatus::Nurturing as i32);
    assert!(quote_request(t, "ada", "2026-11-03T09:30:00Z").await.handed_over);
    let queued = in_queue(t, "ada").await;
    assert_eq!(queued.score, 55 + 6 + 25);
    qualify(t, "ada", bant_all(), "2026-11-04T10:00:00Z").await;
    let converted = convert(t, "ada", "opp-ada", "2026-11-04T10:30:00Z").await;
    assert!(converted.quality, "all four BANT conditions: a quality opportunity");
    opportunity(t, "opp-ada").await;
    walk_to_approval(t, "opp-ada", "2026-11-10T10:00:00Z").await;
    close_won(t, "opp-ada", "acct-ada", "2026-11-12T10:00:00Z").await;
    let acct = account(t, "acct-ada").await;
    assert_eq!(acct.status, cs::AccountStatus::Active as i32);
    assert_eq!(acct.contract_value.unwrap().units, 1_200_000);
    let renewed = t
        .customer_success
        .clone()
        .record_renewal(cs::RecordRenewalRequest {
            request_id: "renew-ada".into(),
            account_id: "acct-ada".into(),
            term_months: 0,
            contract_value: None,
            occurred_at: ts("2026-11-20T10:00:00Z"),
        })
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(renewed.renewals, 1);
    assert_eq!(renewed.term_ends_at, ts("2028-11-12T10:00:00Z"), "a 12-month term renewed for 12 more");

    // dan: captured without a visit, won, churned.
    win(t, "dan", "2026-11-06").await;
    t.customer_success
        .clone()
        .record_churn(cs::RecordChurnRequest {
            request_id: "churn-dan".into(),
            account_id: "acct-dan".into(),
            reason: "no_adoption".into(),
            note: "never onboarded".into(),
            occurred_at: ts("2026-11-25T10:00:00Z"),
        })
        .await
        .unwrap();

    // bob: handed over, then recycled by inside sales: timing is 3 months away.
    let mut bob = lead("bob", "2026-11-02T09:00:00Z");
    bob.visitor_id = "cookie-bob".into();
    capture(t, bob).await;
    quote_request(t, "bob", "2026-11-02T09:10:00Z").await;
    in_queue(t, "bob").await;
    t.inside_sales
        .clone()
        .recycle_lead(is::RecycleLeadRequest {
            request_id: "recycle-bob".into(),
            lead_id: "bob".into(),
            reason: "timing".into(),
            timing_months: 3,
            note: "budget cycle starts in February".into(),
            occurred_at: ts("2026-11-03T10:00:00Z"),
        })
        .await
        .unwrap();
    let bob = lead_status(t, "bob", mk::LeadStatus::Recycled).await;
    assert_eq!(bob.recycle_reason, "timing");
    assert_eq!(bob.behaviour_score, 0, "recycled leads restart their behaviour score");

    // kim: a student, excluded at capture and never handed over.
    let mut kim = lead("kim", "2026-11-04T09:00:00Z");
    kim.visitor_id = "cookie-kim".into();
    kim.relationship = mk::Relationship::Student as i32;
    let kim = capture(t, kim).await;
    assert_eq!(kim.status, mk::LeadStatus::Excluded as i32);
    assert_eq!(kim.exclusion_reason, "student");
    assert!(!quote_request(t, "kim", "2026-11-04T09:30:00Z").await.handed_over);

    // carl: converted (need and timeline only: not a quality opportunity), lost.
    let mut carl = lead("carl", "2026-11-05T09:00:00Z");
    carl.visitor_id = "cookie-carl".into();
    capture(t, carl).await;
    quote_request(t, "carl", "2026-11-05T09:30:00Z").await;
    in_queue(t, "carl").await;
    let nt = themodel_proto::common::v1::Bant { need: true, timeline: true, ..Default::default() };
    qualify(t, "carl", nt, "2026-11-05T10:00:00Z").await;
    assert!(!convert(t, "carl", "opp-carl", "2026-11-05T10:30:00Z").await.quality);
    opportunity(t, "opp-carl").await;
    close_lost(t, "opp-carl", "lost_price", "2026-11-15T10:00:00Z").await;
    let carl = lead_status(t, "carl", mk::LeadStatus::Recycled).await;
    assert_eq!(carl.recycle_reason, "lost_price");
}

/// The November funnel of [`november`], computed by hand from the flow rules of docs/domain.md.
pub fn assert_november_funnel(f: &kpi::Funnel) {
    assert_eq!(f.view, kpi::View::Flow as i32);
    assert_eq!(f.time_zone, "UTC");
    assert_eq!(f.visitors, 4, "ada, bob, kim, carl (zed visited in October)");
    assert_eq!(f.leads, 5, "ada, bob, kim, carl, dan");
    assert_eq!(f.excluded_leads, 1, "kim");
    assert_eq!(f.valid_leads, 4);
    assert_eq!(f.opportunities, 3, "ada, dan, carl");
    assert_eq!(f.wins, 2);
    assert_eq!(f.losses, 1);
    assert_eq!(f.retained, 1);
    assert_eq!(f.churned, 1);
    assert_eq!(f.acquisition_rate, Some(5.0 / 4.0));
    assert_eq!(f.opportunity_rate, Some(3.0 / 5.0));
    assert_eq!(f.win_rate, Some(2.0 / 3.0));
    assert_eq!(f.renewal_rate, Some(0.5));
    assert_eq!(f.churn_rate, Some(0.5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_chain_from_visit_to_renewal_gives_the_exact_funnel() {
    let t = TestSuite::start().await;
    november(&t).await;
    let f = t.settled_funnel("2026-11-01", "2026-12-01").await;
    assert_november_funnel(&f);

    // October holds only zed's visit: no leads, so every lead-based rate is absent.
    let oct = t.settled_funnel("2026-10-01", "2026-11-01").await;
    assert_eq!((oct.visitors, oct.leads, oct.wins), (1, 0, 0));
    assert_eq!(oct.acquisition_rate, Some(0.0));
    assert_eq!(oct.opportunity_rate, None);
    assert_eq!(oct.win_rate, None);
    assert_eq!(oct.renewal_rate, None);
    assert_eq!(oct.churn_rate, None);

    // A period splits on days: the first week only.
    let week = t.settled_funnel("2026-11-01", "2026-11-08").await;
    assert_eq!((week.visitors, week.leads, week.opportunities, week.wins, week.losses), (4, 5, 3, 1, 0));

    // Shutting the suite down is clean.
    t.suite.shutdown().await.unwrap();
}

/// Visits imported out of order, visitors returning on other days: for every
/// period between the dates below, `visitors` is the distinct count a user
/// works out by hand from the same list.
pub async fn returning_visitors(t: &TestSuite) {
    let visits = [
        ("v1", "2026-03-10"),
        ("v2", "2026-03-03"),
        ("v1", "2026-03-02"),
        ("v3", "2026-03-20"),
        ("v1", "2026-03-20"),
        ("v2", "2026-03-12"),
        ("v4", "2026-02-27"),
        ("v1", "2026-03-05"),
        ("v3", "2026-03-01"),
        ("v2", "2026-03-03"),
        ("v5", "2026-03-12"),
    ];
    for (visitor, day) in visits {
        visit(t, visitor, &format!("{day}T10:00:00Z")).await;
    }
    // Spot checks first, then every period between the dates.
    assert_eq!(t.settled_funnel("2026-03-01", "2026-04-01").await.visitors, 4, "v1, v2, v3, v5");
    assert_eq!(
        t.settled_funnel("2026-03-11", "2026-03-21").await.visitors,
        4,
        "v2, v5 on the 12th; v1, v3 on the 20th"
    );
    assert_eq!(t.settled_funnel("2026-03-04", "2026-03-10").await.visitors, 1, "v1 on the 5th");
    let dates = [
        "2026-02-01",
        "2026-02-28",
        "2026-03-01",
        "2026-03-02",
        "2026-03-03",
        "2026-03-05",
        "2026-03-06",
        "2026-03-11",
        "2026-03-12",
        "2026-03-13",
        "2026-03-20",
        "2026-03-21",
    ];
    for (i, start) in dates.iter().enumerate() {
        for end in &dates[i + 1..] {
            let mut seen: Vec<&str> =
                visits.iter().filter(|(_, day)| day >= start && day < end).map(|(v, _)| *v).collect();
            seen.sort_unstable();
            seen.dedup();
            let f = t.settled_funnel(start, end).await;
            assert_eq!(f.visitors, seen.len() as i64, "[{start}, {end}): {seen:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn visitors_are_distinct_over_any_period() {
    let t = TestSuite::start().await;
    returning_visitors(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn periods_are_read_in_the_business_time_zone() {
    let t = TestSuite::start_with(|o| o.time_zone = "Asia/Tokyo".into()).await;
    // 20:00 UTC on Nov 30 is already Dec 1 in Tokyo.
    capture(&t, lead("late", "2026-11-30T20:00:00Z")).await;
    let nov = t.settled_funnel("2026-11-01", "2026-12-01").await;
    let dec = t.settled_funnel("2026-12-01", "2027-01-01").await;
    assert_eq!(nov.time_zone, "Asia/Tokyo");
    assert_eq!((nov.leads, dec.leads), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_a_call_hands_over_is_there_when_the_call_returns() {
    use themodel_proto::fieldsales::v1 as fs;

    let t = TestSuite::start().await;
    capture(&t, lead("quick", "2026-11-02T09:00:00Z")).await;
    assert!(quote_request(&t, "quick", "2026-11-02T09:30:00Z").await.handed_over);
    // No polling from here on: each hand-over is delivered before the call answers.
    let item =
        t.inside_sales.clone().get_queue_item(is::GetQueueItemRequest { lead_id: "quick".into() }).await.unwrap();
    assert_eq!(item.into_inner().item.unwrap().status, is::QueueStatus::Open as i32);
    qualify(&t, "quick", bant_all(), "2026-11-02T10:00:00Z").await;
    convert(&t, "quick", "opp-quick", "2026-11-02T10:30:00Z").await;
    walk_to_approval(&t, "opp-quick", "2026-11-03T10:00:00Z").await;
    close_won(&t, "opp-quick", "acct-quick", "2026-11-04T10:00:00Z").await;
    let acct = t.customer_success.clone().get_account(cs::GetAccountRequest { account_id: "acct-quick".into() }).await;
    assert_eq!(acct.unwrap().into_inner().account.unwrap().opportunity_id, "opp-quick");
    // And the funnel read right after the last write already counts it.
    let f = t
        .kpi
        .clone()
        .get_funnel(kpi::GetFunnelRequest {
            start_date: "2026-11-01".into(),
            end_date: "2026-12-01".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .funnel
        .unwrap();
    assert_eq!((f.leads, f.opportunities, f.wins), (1, 1, 1));
    let o =
        t.field_sales.clone().get_opportunity(fs::GetOpportunityRequest { opportunity_id: "opp-quick".into() }).await;
    assert_eq!(o.unwrap().into_inner().opportunity.unwrap().history.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_deal_for_an_account_expands_it() {
    let t = TestSuite::start().await;
    win(&t, "first", "2026-11-02").await;
    // Another contact at the same customer buys an add-on: same account id.
    capture(&t, lead("second", "2026-11-09T09:00:00Z")).await;
    quote_request(&t, "second", "2026-11-09T09:30:00Z").await;
    qualify(&t, "second", bant_all(), "2026-11-09T10:00:00Z").await;
    convert(&t, "second", "opp-second", "2026-11-09T10:30:00Z").await;
    walk_to_approval(&t, "opp-second", "2026-11-10T10:00:00Z").await;
    close_won(&t, "opp-second", "acct-first", "2026-11-11T10:00:00Z").await;
    let a = account(&t, "acct-first").await;
    assert_eq!(a.contract_value.unwrap().units, 2_400_000, "1.2M + 1.2M");
    assert_eq!(a.opportunity_id, "opp-second");
    assert_eq!(a.status, cs::AccountStatus::Active as i32);
    let f = t.settled_funnel("2026-11-01", "2026-12-01").await;
    assert_eq!((f.opportunities, f.wins), (2, 2));
}
