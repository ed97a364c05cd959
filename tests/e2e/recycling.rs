//! Recycling KPIs: recycles, re-entries, and what recycled leads became,
//! in total (both views of the funnel) and per recycle reason.

use std::time::Duration;

use themodel_e2e::{TestSuite, ts};
use themodel_proto::insidesales::v1 as is;
use themodel_proto::kpi::v1 as kpi;
use themodel_proto::marketing::v1 as mk;
use tonic::Code;
use tonic_types::StatusExt;

use crate::flows::*;
use crate::views::to_approval;

async fn recycle(t: &TestSuite, lead_id: &str, reason: &str, months: i32, at: &str) {
    t.inside_sales
        .clone()
        .recycle_lead(is::RecycleLeadRequest {
            request_id: rid(&["recycle", lead_id]),
            lead_id: lead_id.into(),
            reason: reason.into(),
            timing_months: months,
            note: String::new(),
            occurred_at: ts(at),
        })
        .await
        .unwrap();
}

/// All captured Oct 1 and handed over:
/// r1 recycled Oct 5 for timing; back Nov 3, converted Nov 4, won Nov 10.
/// r2 recycled Oct 6 for no_budget; never back.
/// r3 converted Oct 2, lost Oct 20 on price (recycled so); back Nov 5.
pub async fn history(t: &TestSuite) {
    for id in ["r1", "r2"] {
        capture(t, lead(id, "2026-10-01T09:00:00Z")).await;
        assert!(quote_request(t, id, "2026-10-01T09:30:00Z").await.handed_over);
        in_queue(t, id).await;
    }
    recycle(t, "r1", "timing", 3, "2026-10-05T10:00:00Z").await;
    recycle(t, "r2", "no_budget", 0, "2026-10-06T10:00:00Z").await;
    to_approval(t, "r3", "web_form", "2026-10-01", "2026-10-02").await;
    close_lost(t, "opp-r3", "lost_price", "2026-10-20T10:00:00Z").await;
    for id in ["r1", "r2", "r3"] {
        lead_status(t, id, mk::LeadStatus::Recycled).await;
    }

    assert!(quote_request(t, "r1", "2026-11-03T09:00:00Z").await.handed_over, "r1 is warm again");
    in_queue(t, "r1").await;
    qualify(t, "r1", bant_all(), "2026-11-04T10:00:00Z").await;
    convert(t, "r1", "opp-r1-2", "2026-11-04T10:30:00Z").await;
    opportunity(t, "opp-r1-2").await;
    walk_to_approval(t, "opp-r1-2", "2026-11-05T10:00:00Z").await;
    close_won(t, "opp-r1-2", "acct-r1", "2026-11-10T10:00:00Z").await;
    assert!(quote_request(t, "r3", "2026-11-05T09:00:00Z").await.handed_over, "r3 is warm again");
    in_queue(t, "r3").await;
}

async fn funnel(t: &TestSuite, start: &str, end: &str, view: kpi::View) -> kpi::Funnel {
    let req = kpi::GetFunnelRequest {
        start_date: start.into(),
        end_date: end.into(),
        view: view as i32,
        ..Default::default()
    };
    t.suite.settled_funnel_response(req, Duration::from_secs(20)).await.unwrap().funnel.unwrap()
}

/// (recycled, re-entries, recycled opportunities, recycled wins)
fn recycling(f: &kpi::Funnel) -> (i64, i64, i64, i64) {
    (f.recycled, f.re_entries, f.recycled_opportunities, f.recycled_wins)
}

async fn reasons(t: &TestSuite, as_of: &str) -> Vec<(String, i64, i64, i64, i64, Option<f64>)> {
    let req = kpi::GetRecyclingRequest {
        start_date: "2026-10-01".into(),
        period_unit: kpi::PeriodUnit::Month as i32,
        as_of_date: as_of.into(),
        ..Default::default()
    };
    let r = t.kpi.clone().get_recycling(req).await.unwrap().into_inner();
    assert_eq!((r.start_date.as_str(), r.end_date.as_str()), ("2026-10-01", "2026-11-01"));
    r.reasons.into_iter().map(|r| (r.reason, r.recycled, r.re_entered, r.converted, r.won, r.re_entry_rate)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recycled_leads_by_reason_and_what_they_became() {
    let t = TestSuite::start().await;
    history(&t).await;
    assert_recycling(&t).await;
}

pub async fn assert_recycling(t: &TestSuite) {
    // Flow: October recycled three times; November saw two come back, one
    // converted and won.
    assert_eq!(recycling(&funnel(t, "2026-10-01", "2026-11-01", kpi::View::Flow).await), (3, 0, 0, 0));
    let nov = funnel(t, "2026-11-01", "2026-12-01", kpi::View::Flow).await;
    assert_eq!(recycling(&nov), (0, 2, 1, 1));
    assert_eq!((nov.promising_leads, nov.opportunities, nov.wins), (2, 1, 1), "re-entries are hand-overs too");
    // Cohort: of October's leads, three were recycled, two came back, one
    // was converted and won afterwards.
    assert_eq!(recycling(&funnel(t, "2026-10-01", "2026-11-01", kpi::View::Cohort).await), (3, 2, 1, 1));

    // Per reason, October's recycles followed up.
    let s = |r: &str| r.to_owned();
    assert_eq!(
        reasons(t, "").await,
        [
            (s("lost_price"), 1, 1, 0, 0, Some(1.0)),
            (s("no_budget"), 1, 0, 0, 0, Some(0.0)),
            (s("timing"), 1, 1, 1, 1, Some(1.0)),
        ]
    );
    // As of the end of October nothing had come back yet.
    assert_eq!(
        reasons(t, "2026-10-31").await,
        [
            (s("lost_price"), 1, 0, 0, 0, Some(0.0)),
            (s("no_budget"), 1, 0, 0, 0, Some(0.0)),
            (s("timing"), 1, 0, 0, 0, Some(0.0)),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_recycling_request_names_its_fields() {
    let t = TestSuite::start().await;
    let err = t
        .kpi
        .clone()
        .get_recycling(kpi::GetRecyclingRequest {
            start_date: "2026-10-01".into(),
            as_of_date: "yesterday".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<String> =
        err.get_error_details().bad_request().unwrap().field_violations.iter().map(|v| v.field.clone()).collect();
    assert_eq!(fields, ["end_date", "as_of_date"]);
}
