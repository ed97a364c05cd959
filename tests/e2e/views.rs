//! The funnel's two views and its splits, on a small history whose numbers
//! are worked out by hand below from the rules in docs/domain.md.

use std::time::Duration;

use themodel_e2e::{TestSuite, ts};
use themodel_proto::customersuccess::v1 as cs;
use themodel_proto::kpi::v1 as kpi;
use themodel_proto::marketing::v1 as mk;
use tonic::Code;
use tonic_types::StatusExt;

use crate::flows::*;

/// early (web_form): captured Oct 20, converted Oct 21, won Nov 5, renewed Dec 1.
/// fair (trade_show): captured Oct 25, converted Nov 3, lost Nov 20.
/// late (web_form): captured Nov 2, converted Nov 3, won Nov 12, churned Dec 5.
/// kim (trade_show): a student captured Nov 4, excluded.
pub async fn autumn(t: &TestSuite) {
    let deal = async |id: &str, source: &str, captured: &str, converted: &str| {
        to_approval(t, id, source, captured, converted).await
    };
    deal("early", "web_form", "2026-10-20", "2026-10-21").await;
    close_won(t, "opp-early", "acct-early", "2026-11-05T10:00:00Z").await;
    account(t, "acct-early").await;
    deal("fair", "trade_show", "2026-10-25", "2026-11-03").await;
    close_lost(t, "opp-fair", "lost_price", "2026-11-20T10:00:00Z").await;
    deal("late", "web_form", "2026-11-02", "2026-11-03").await;
    close_won(t, "opp-late", "acct-late", "2026-11-12T10:00:00Z").await;
    account(t, "acct-late").await;
    let mut kim = lead("kim", "2026-11-04T09:00:00Z");
    kim.source = "trade_show".into();
    kim.relationship = mk::Relationship::Student as i32;
    capture(t, kim).await;

    let mut c = t.customer_success.clone();
    c.record_renewal(cs::RecordRenewalRequest {
        request_id: "renew-early".into(),
        account_id: "acct-early".into(),
        occurred_at: ts("2026-12-01T10:00:00Z"),
        ..Default::default()
    })
    .await
    .unwrap();
    c.record_churn(cs::RecordChurnRequest {
        request_id: "churn-late".into(),
        account_id: "acct-late".into(),
        reason: "no_adoption".into(),
        note: String::new(),
        occurred_at: ts("2026-12-05T10:00:00Z"),
    })
    .await
    .unwrap();
}

/// Captures lead `id` from `source` on day `captured`, hands it over,
/// converts it into opportunity `opp-{id}` on day `converted` and walks that
/// to the approval phase.
pub async fn to_approval(t: &TestSuite, id: &str, source: &str, captured: &str, converted: &str) {
    let mut req = lead(id, &format!("{captured}T09:00:00Z"));
    req.source = source.into();
    capture(t, req).await;
    assert!(quote_request(t, id, &format!("{captured}T09:30:00Z")).await.handed_over);
    in_queue(t, id).await;
    qualify(t, id, bant_all(), &format!("{converted}T10:00:00Z")).await;
    convert(t, id, &format!("opp-{id}"), &format!("{converted}T10:30:00Z")).await;
    opportunity(t, &format!("opp-{id}")).await;
    walk_to_approval(t, &format!("opp-{id}"), &format!("{converted}T11:00:00Z")).await;
}

async fn funnel(t: &TestSuite, req: kpi::GetFunnelRequest) -> kpi::GetFunnelResponse {
    t.suite.settled_funnel_response(req, Duration::from_secs(20)).await.unwrap()
}

fn period(start: &str, end: &str, view: kpi::View) -> kpi::GetFunnelRequest {
    kpi::GetFunnelRequest { start_date: start.into(), end_date: end.into(), view: view as i32, ..Default::default() }
}

/// (leads, excluded, promising, opportunities, wins, losses, retained, churned)
fn stages(f: &kpi::Funnel) -> (i64, i64, i64, i64, i64, i64, i64, i64) {
    (f.leads, f.excluded_leads, f.promising_leads, f.opportunities, f.wins, f.losses, f.retained, f.churned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flow_and_cohort_views_of_the_same_history() {
    let t = TestSuite::start().await;
    autumn(&t).await;
    assert_autumn_views(&t).await;
    assert_autumn_periods(&t).await;
}

/// (currency, won, new business, expansion, churned), in whole units and nanos.
type RevenueRow = (String, (i64, i32), (i64, i32), (i64, i32), (i64, i32));

fn revenue(f: &kpi::Funnel) -> Vec<RevenueRow> {
    let m = |m: &Option<themodel_proto::common::v1::Money>| m.as_ref().map_or((0, 0), |m| (m.units, m.nanos));
    f.revenue
        .iter()
        .map(|r| (r.currency_code.clone(), m(&r.won), m(&r.new_business), m(&r.expansion), m(&r.churned)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revenue_per_currency_new_expansion_and_churned() {
    let t = TestSuite::start().await;
    autumn(&t).await;
    // Two more November deals: one expands early's account, one in dollars.
    to_approval(&t, "more", "web_form", "2026-11-06", "2026-11-07").await;
    close_won(&t, "opp-more", "acct-early", "2026-11-20T10:00:00Z").await;
    to_approval(&t, "usd", "trade_show", "2026-11-06", "2026-11-07").await;
    t.field_sales
        .clone()
        .close_won(themodel_proto::fieldsales::v1::CloseWonRequest {
            request_id: "won-usd".into(),
            opportunity_id: "opp-usd".into(),
            contract_value: Some(themodel_proto::common::v1::Money {
                currency_code: "USD".into(),
                units: 50_000,
                nanos: 500_000_000,
            }),
            term_months: 12,
            account_id: "acct-usd".into(),
            occurred_at: ts("2026-11-21T10:00:00Z"),
        })
        .await
        .unwrap();
    account(&t, "acct-usd").await;

    let jpy = |won, new, expansion, churned| ("JPY".to_owned(), (won, 0), (new, 0), (expansion, 0), (churned, 0));
    let usd = ("USD".to_owned(), (50_000, 500_000_000), (50_000, 500_000_000), (0, 0), (0, 0));
    let mut req = period("2026-11-01", "2026-12-01", kpi::View::Flow);
    req.split_by = kpi::Dimension::Source as i32;
    let nov = funnel(&t, req).await;
    // Early, late and more won 1.2M yen each; early's and late's deals opened
    // accounts, more's expanded early's. Currencies are never added.
    assert_eq!(revenue(nov.funnel.as_ref().unwrap()), [jpy(3_600_000, 2_400_000, 1_200_000, 0), usd.clone()]);
    let row = |value: &str| nov.splits.iter().find(|s| s.value == value).and_then(|s| s.funnel.clone()).unwrap();
    assert_eq!(revenue(&row("web_form")), [jpy(3_600_000, 2_400_000, 1_200_000, 0)]);
    assert_eq!(revenue(&row("trade_show")), std::slice::from_ref(&usd));
    // December: late's account churned with its 1.2M.
    let dec = funnel(&t, period("2026-12-01", "2027-01-01", kpi::View::Flow)).await;
    assert_eq!(revenue(dec.funnel.as_ref().unwrap()), [jpy(0, 0, 0, 1_200_000)]);

    // The cohort view: what November's leads (late, more, usd) brought,
    // whenever it came. Late's account churning in December counts against
    // them; early's October lead and its money do not.
    let mut req = period("2026-11-01", "2026-12-01", kpi::View::Cohort);
    req.split_by = kpi::Dimension::Source as i32;
    let cohort = funnel(&t, req).await;
    let jpy_nov = jpy(2_400_000, 1_200_000, 1_200_000, 1_200_000);
    assert_eq!(revenue(cohort.funnel.as_ref().unwrap()), [jpy_nov.clone(), usd.clone()]);
    let row = |value: &str| cohort.splits.iter().find(|s| s.value == value).and_then(|s| s.funnel.clone()).unwrap();
    assert_eq!(revenue(&row("web_form")), [jpy_nov]);
    assert_eq!(revenue(&row("trade_show")), std::slice::from_ref(&usd));
    // As of the end of November the churn had not happened.
    let mut req = period("2026-11-01", "2026-12-01", kpi::View::Cohort);
    req.as_of_date = "2026-11-30".into();
    let before_churn = funnel(&t, req).await;
    assert_eq!(revenue(before_churn.funnel.as_ref().unwrap()), [jpy(2_400_000, 1_200_000, 1_200_000, 0), usd]);
    // October's cohort is early alone: won in November, whenever it was.
    let october = funnel(&t, period("2026-10-01", "2026-11-01", kpi::View::Cohort)).await;
    assert_eq!(revenue(october.funnel.as_ref().unwrap()), [jpy(1_200_000, 1_200_000, 0, 0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leads_journey_from_capture_to_renewal() {
    let t = TestSuite::start().await;
    autumn(&t).await;
    t.settled_funnel("2026-10-01", "2027-01-01").await;
    let mut k = t.kpi.clone();
    let journey = |id: &str| {
        let mut k = k.clone();
        let req = kpi::GetJourneyRequest { lead_id: id.into(), ..Default::default() };
        async move { k.get_journey(req).await.unwrap().into_inner() }
    };
    // (kind, UTC day number, reason, amount's units)
    type Step = (i32, i64, String, Option<i64>);
    let steps = |j: &kpi::GetJourneyResponse| -> Vec<Step> {
        j.steps
            .iter()
            .map(|s| {
                let day = s.occurred_at.as_ref().map(|t| t.seconds.div_euclid(86_400)).unwrap_or_default();
                (s.kind, day, s.reason.clone(), s.amount.as_ref().map(|m| m.units))
            })
            .collect()
    };
    let step = |kind: kpi::JourneyStepKind, day: &str, reason: &str, amount: Option<i64>| {
        let day = ts(&format!("{day}T00:00:00Z")).unwrap().seconds / 86_400;
        (kind as i32, day, reason.to_owned(), amount)
    };
    use kpi::JourneyStepKind as K;

    // Early: captured, handed over, converted, won into an account that renewed.
    let early = journey("early").await;
    assert_eq!(
        steps(&early),
        [
            step(K::Captured, "2026-10-20", "", None),
            step(K::Promoted, "2026-10-20", "", None),
            step(K::Converted, "2026-10-21", "", None),
            step(K::Won, "2026-11-05", "", Some(1_200_000)),
            step(K::AccountOpened, "2026-11-05", "", Some(1_200_000)),
            step(K::Renewed, "2026-12-01", "", None),
        ]
    );
    let source = early.dimensions.iter().find(|d| d.dimension == kpi::Dimension::Source as i32).unwrap();
    assert_eq!(source.value, "web_form");
    let every: Vec<i32> = early.dimensions.iter().map(|d| d.dimension).collect();
    let enum_order: Vec<i32> = (1..).map_while(|n| kpi::Dimension::try_from(n).ok().map(|_| n)).collect();
    assert_eq!(every, enum_order, "every dimension, in order");
    // Fair: lost, and back to marketing on the lost reason's track.
    let fair = steps(&journey("fair").await);
    assert_eq!(fair[3..], [step(K::Lost, "2026-11-20", "", None), step(K::Recycled, "2026-11-20", "lost_price", None)]);
    // Late: its account churned with its value.
    let late = steps(&journey("late").await);
    assert_eq!(late.last(), Some(&step(K::Churned, "2026-12-05", "", Some(1_200_000))));

    let err =
        k.get_journey(kpi::GetJourneyRequest { lead_id: "nobody".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = k.get_journey(kpi::GetJourneyRequest { lead_id: String::new(), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

/// [`autumn`]'s flow funnel over periods named by their unit.
async fn assert_autumn_periods(t: &TestSuite) {
    let by_unit = |on: &str, unit: kpi::PeriodUnit, fiscal: i32| {
        let req = kpi::GetFunnelRequest {
            start_date: on.into(),
            period_unit: unit as i32,
            fiscal_year_start_month: fiscal,
            ..Default::default()
        };
        async move { funnel(t, req).await.funnel.unwrap() }
    };
    let bounds = |f: &kpi::Funnel| (f.start_date.clone(), f.end_date.clone());
    let dates = |s: &str, e: &str| (s.to_owned(), e.to_owned());

    // The month around Nov 17 is November.
    let month = by_unit("2026-11-17", kpi::PeriodUnit::Month, 0).await;
    assert_eq!(bounds(&month), dates("2026-11-01", "2026-12-01"));
    assert_eq!(stages(&month), (2, 1, 1, 2, 2, 1, 0, 0), "as for [2026-11-01, 2026-12-01)");
    // Tuesday Nov 3's week runs Monday Nov 2 to Sunday Nov 8: late and kim
    // captured, fair and late converted, early won on the 5th.
    let week = by_unit("2026-11-03", kpi::PeriodUnit::Week, 0).await;
    assert_eq!(bounds(&week), dates("2026-11-02", "2026-11-09"));
    assert_eq!(stages(&week), (2, 1, 1, 2, 1, 0, 0, 0));
    // The calendar quarter, and the same quarter of a year starting in April
    // (its third), hold October to December: all four leads.
    for fiscal in [0, 4] {
        let q = by_unit("2026-11-17", kpi::PeriodUnit::Quarter, fiscal).await;
        assert_eq!(bounds(&q), dates("2026-10-01", "2027-01-01"));
        assert_eq!(stages(&q), (4, 1, 3, 3, 2, 1, 1, 1));
    }
    // A year starting in February has its quarter from November to
    // January: October's two leads are not in it.
    let q = by_unit("2026-11-17", kpi::PeriodUnit::Quarter, 2).await;
    assert_eq!(bounds(&q), dates("2026-11-01", "2027-02-01"));
    assert_eq!(q.leads, 2);
    let year = by_unit("2027-03-31", kpi::PeriodUnit::Year, 4).await;
    assert_eq!(bounds(&year), dates("2026-04-01", "2027-04-01"));
    assert_eq!(year.leads, 4);
}

/// The flow and cohort funnels of [`autumn`], worked out by hand.
pub async fn assert_autumn_views(t: &TestSuite) {
    let flow = |start, end| funnel(t, period(start, end, kpi::View::Flow));
    let cohort = |start, end| funnel(t, period(start, end, kpi::View::Cohort));

    // Flow, November: what happened in November, whoever it happened to.
    let nov = flow("2026-11-01", "2026-12-01").await.funnel.unwrap();
    assert_eq!(nov.view, kpi::View::Flow as i32);
    assert_eq!(stages(&nov), (2, 1, 1, 2, 2, 1, 0, 0), "late and kim captured; fair and late converted");
    assert_eq!(nov.promising_rate, Some(0.5));
    assert_eq!(nov.win_rate, Some(2.0 / 3.0));
    assert_eq!(nov.renewal_rate, None, "no renewal or churn in November");
    let dec = flow("2026-12-01", "2027-01-01").await.funnel.unwrap();
    assert_eq!(stages(&dec), (0, 0, 0, 0, 0, 0, 1, 1));
    // Early's and late's deals, 1.2M yen each, opened accounts in November;
    // late's churned in December.
    let yen = |units| (units, 0);
    assert_eq!(revenue(&nov), [("JPY".to_owned(), yen(2_400_000), yen(2_400_000), yen(0), yen(0))]);
    assert_eq!(revenue(&dec), [("JPY".to_owned(), yen(0), yen(0), yen(0), yen(1_200_000))]);
    assert_eq!(dec.opportunity_rate, None, "no leads: absent, not 0");

    // Cohort, October: early and fair, followed to the end.
    let oct = cohort("2026-10-01", "2026-11-01").await.funnel.unwrap();
    assert_eq!(oct.view, kpi::View::Cohort as i32);
    assert_eq!(oct.as_of_date, "");
    assert_eq!(stages(&oct), (2, 0, 2, 2, 1, 1, 1, 0));
    assert_eq!(oct.opportunity_rate, Some(1.0));
    assert_eq!(oct.win_rate, Some(0.5));
    assert_eq!(oct.renewal_rate, Some(1.0));
    // The November cohort: late won then churned, kim excluded.
    let nov = cohort("2026-11-01", "2026-12-01").await.funnel.unwrap();
    assert_eq!(stages(&nov), (2, 1, 1, 1, 1, 0, 0, 1));
    assert_eq!(nov.churn_rate, Some(1.0));

    // The October cohort as it stood on earlier days.
    let as_of = |day: &str| {
        let mut req = period("2026-10-01", "2026-11-01", kpi::View::Cohort);
        req.as_of_date = day.into();
        funnel(t, req)
    };
    let oct_20 = as_of("2026-10-20").await.funnel.unwrap();
    assert_eq!(oct_20.as_of_date, "2026-10-20");
    assert_eq!(stages(&oct_20), (1, 0, 1, 0, 0, 0, 0, 0), "fair is captured on the 25th");
    let nov_4 = as_of("2026-11-04").await.funnel.unwrap();
    assert_eq!(stages(&nov_4), (2, 0, 2, 2, 0, 0, 0, 0));
    assert_eq!(nov_4.win_rate, None, "nothing closed yet");
    let nov_10 = as_of("2026-11-10").await.funnel.unwrap();
    assert_eq!(stages(&nov_10), (2, 0, 2, 2, 1, 0, 0, 0));
    assert_eq!(nov_10.win_rate, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_split_files_every_count_under_the_leads_value() {
    let mut t = TestSuite::start().await;
    autumn(&t).await;
    let cohort = assert_autumn_splits(&t).await;
    let edges = read_from_the_facts(&t).await;

    // Rebuilt from the streams (kpi forgets every count and reads each
    // stream again from its start), the numbers are the same. The facts
    // were written event by event, as owners came and went; rebuilt, they
    // are written a whole stream at a time: the reads that use them agree.
    t.suite.rebuild_kpi().await.unwrap();
    t.wait_serving().await;
    assert_eq!(assert_autumn_splits(&t).await, cohort);
    let rebuilt = read_from_the_facts(&t).await;
    for (before, after) in edges.iter().zip(&rebuilt) {
        assert_eq!(before, after);
    }
    assert_eq!(edges.len(), rebuilt.len());
}

/// Reads of [`autumn`] that use each lead's facts besides the sums: both
/// views (and a cohort as of a day) in Asia/Kolkata, whose days start at
/// 18:30 UTC, split by source and by each owner; and the stays' velocity,
/// split the same ways.
async fn read_from_the_facts(t: &TestSuite) -> Vec<String> {
    let splits = [
        kpi::Dimension::Source,
        kpi::Dimension::InsideSalesRep,
        kpi::Dimension::AccountExecutive,
        kpi::Dimension::CustomerSuccessManager,
    ];
    let mut out = Vec::new();
    for split in splits {
        for (view, as_of) in [(kpi::View::Flow, ""), (kpi::View::Cohort, ""), (kpi::View::Cohort, "2026-11-10")] {
            let mut req = period("2026-10-01", "2026-12-15", view);
            req.split_by = split as i32;
            req.time_zone = "Asia/Kolkata".into();
            req.as_of_date = as_of.into();
            let mut f = funnel(t, req).await;
            // Where the streams stand is not a number of the history.
            f.funnel.as_mut().unwrap().sources.clear();
            out.push(format!("{split:?} {view:?} {as_of}: {f:?}"));
        }
        let req = kpi::GetVelocityRequest {
            start_date: "2026-10-01".into(),
            end_date: "2026-12-15".into(),
            time_zone: "Asia/Kolkata".into(),
            split_by: split as i32,
            ..Default::default()
        };
        let mut v = t.kpi.clone().get_velocity(req).await.unwrap().into_inner();
        // Open items' ages are taken at the read's moment.
        v.as_of = None;
        let velocities = v.splits.iter_mut().filter_map(|s| s.velocity.as_mut()).chain(v.velocity.as_mut());
        for stage in velocities.flat_map(|v| v.stages.iter_mut()) {
            (stage.median_age, stage.p90_age, stage.oldest_age) = (None, None, None);
        }
        out.push(format!("{split:?} velocity: {v:?}"));
    }
    out
}

/// [`autumn`] split by its leads' facts, worked out by hand; returns the
/// cohort view split by source.
pub async fn assert_autumn_splits(t: &TestSuite) -> kpi::GetFunnelResponse {
    let split = |view, dim: kpi::Dimension| {
        let mut req = period("2026-10-01", "2026-12-01", view);
        req.split_by = dim as i32;
        funnel(t, req)
    };

    let flow = split(kpi::View::Flow, kpi::Dimension::Source).await;
    assert_eq!(flow.split_by, kpi::Dimension::Source as i32);
    let values: Vec<&str> = flow.splits.iter().map(|s| s.value.as_str()).collect();
    assert_eq!(values, ["trade_show", "web_form"]);
    let row = |r: &kpi::GetFunnelResponse, value: &str| {
        r.splits.iter().find(|s| s.value == value).and_then(|s| s.funnel.clone()).unwrap()
    };
    let web = row(&flow, "web_form");
    assert_eq!(stages(&web), (2, 0, 2, 2, 2, 0, 0, 0), "early and late: captured, converted, won");
    assert_eq!((web.visitors, web.acquisition_rate), (0, None), "visitors are not split");
    assert_eq!(stages(&row(&flow, "trade_show")), (2, 1, 1, 1, 0, 1, 0, 0));
    // The rows add up to the totals.
    let total = flow.funnel.unwrap();
    let sum = flow.splits.iter().map(|s| stages(s.funnel.as_ref().unwrap())).fold((0, 0, 0, 0, 0, 0, 0, 0), add);
    assert_eq!(sum, stages(&total));

    // The cohort view split by source answers "which source's leads renew".
    let cohort = split(kpi::View::Cohort, kpi::Dimension::Source).await;
    let web = row(&cohort, "web_form");
    assert_eq!(stages(&web), (2, 0, 2, 2, 2, 0, 1, 1));
    assert_eq!(web.renewal_rate, Some(0.5));
    assert_eq!(row(&cohort, "trade_show").opportunity_rate, Some(0.5));

    // Dimensions the definition derives: every lead is a 500-person
    // company (band 250-999) with a CTO (the executives' rule, "ceo").
    let bands = split(kpi::View::Cohort, kpi::Dimension::CompanySizeBand).await;
    assert_eq!(bands.splits.iter().map(|s| s.value.as_str()).collect::<Vec<_>>(), ["250-999"]);
    let titles = split(kpi::View::Flow, kpi::Dimension::JobTitleClass).await;
    assert_eq!(titles.splits.iter().map(|s| s.value.as_str()).collect::<Vec<_>>(), ["ceo"]);
    let versions = split(kpi::View::Flow, kpi::Dimension::DefinitionVersion).await;
    assert_eq!(versions.splits.iter().map(|s| s.value.as_str()).collect::<Vec<_>>(), ["1"]);
    cohort
}

fn add(
    a: (i64, i64, i64, i64, i64, i64, i64, i64),
    b: (i64, i64, i64, i64, i64, i64, i64, i64),
) -> (i64, i64, i64, i64, i64, i64, i64, i64) {
    (a.0 + b.0, a.1 + b.1, a.2 + b.2, a.3 + b.3, a.4 + b.4, a.5 + b.5, a.6 + b.6, a.7 + b.7)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_view_split_and_as_of_are_refused_with_the_accepted_values() {
    let t = TestSuite::start().await;
    let mut k = t.kpi.clone();
    let refused = |req: kpi::GetFunnelRequest| {
        let mut k = k.clone();
        async move {
            let err = k.get_funnel(req).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument);
            err.get_error_details()
                .bad_request()
                .map(|b| b.field_violations.iter().map(|v| (v.field.clone(), v.description.clone())).collect())
                .unwrap_or_else(Vec::new)
        }
    };
    let mut req = period("2026-11-01", "2026-12-01", kpi::View::Flow);
    req.view = 7;
    req.split_by = 42;
    let v = refused(req).await;
    assert_eq!(v.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(), ["view", "split_by"]);
    assert!(v[0].1.contains("VIEW_COHORT") && v[1].1.contains("DIMENSION_SOURCE"), "{v:?}");

    // A period named by its unit takes one date, a known unit, and a month.
    let mut req = period("2026-11-01", "2026-12-01", kpi::View::Flow);
    req.period_unit = kpi::PeriodUnit::Month as i32;
    req.fiscal_year_start_month = 13;
    let v = refused(req).await;
    assert_eq!(v.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(), ["fiscal_year_start_month", "end_date"]);
    let mut req = period("2026-11-01", "", kpi::View::Flow);
    req.period_unit = 9;
    let v = refused(req).await;
    assert_eq!(v[0].0, "period_unit");
    assert!(v[0].1.contains("PERIOD_UNIT_QUARTER"), "{v:?}");

    let mut req = period("2026-11-01", "2026-12-01", kpi::View::Flow);
    req.as_of_date = "2026-11-15".into();
    assert_eq!(refused(req).await[0].0, "as_of_date", "as_of_date is the cohort view's");
    let mut req = period("2026-11-01", "2026-12-01", kpi::View::Cohort);
    req.as_of_date = "15/11/2026".into();
    assert_eq!(refused(req).await[0].0, "as_of_date");

    // An empty period's rates are absent in both views.
    for view in [kpi::View::Flow, kpi::View::Cohort] {
        let f = k.get_funnel(period("2030-01-01", "2030-02-01", view)).await.unwrap().into_inner();
        let f = f.funnel.unwrap();
        assert_eq!((f.leads, f.opportunity_rate, f.win_rate, f.promising_rate), (0, None, None, None));
    }
}
