//! Velocity and the follow-up SLA on a small history worked out by hand:
//! how long stays in each stage and phase last, how old the open ones are,
//! and first contacts against the deadline.

use std::time::Duration;

use themodel_e2e::{TestSuite, eventually, ts};
use themodel_proto::kpi::v1 as kpi;
use themodel_proto::marketing::v1 as mk;
use tonic::Code;

use crate::flows::*;

const HOUR: u64 = 3600;

fn hours(h: f64) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(Duration::from_secs_f64(h * HOUR as f64)).ok()
}

/// v1 runs the whole way: captured Oct 1 09:00, handed over 09:30, first
/// contact 12:30 (3 h; web_form's deadline is 24 h), converted Oct 2 09:30,
/// through the phases on Oct 3 09:30, won Oct 10 09:30.
/// v2: handed over Oct 2 09:00, first contact Oct 4 09:00 (48 h, late).
/// v3: handed over Oct 5 09:00, never contacted.
/// v4: captured Oct 20 09:00 from a seminar, still nurtured.
pub async fn history(t: &TestSuite) {
    capture(t, lead("v1", "2026-10-01T09:00:00Z")).await;
    assert!(quote_request(t, "v1", "2026-10-01T09:30:00Z").await.handed_over);
    in_queue(t, "v1").await;
    qualify(t, "v1", bant_all(), "2026-10-01T12:30:00Z").await;
    convert(t, "v1", "opp-v1", "2026-10-02T09:30:00Z").await;
    opportunity(t, "opp-v1").await;
    walk_to_approval(t, "opp-v1", "2026-10-03T09:30:00Z").await;
    close_won(t, "opp-v1", "acct-v1", "2026-10-10T09:30:00Z").await;

    for (id, handed_over) in [("v2", "2026-10-02T09:00:00Z"), ("v3", "2026-10-05T09:00:00Z")] {
        capture(t, lead(id, "2026-10-01T09:00:00Z")).await;
        assert!(quote_request(t, id, handed_over).await.handed_over);
        in_queue(t, id).await;
    }
    qualify(t, "v2", bant_all(), "2026-10-04T09:00:00Z").await;
    capture(t, mk::CaptureLeadRequest { source: "seminar".into(), ..lead("v4", "2026-10-20T09:00:00Z") }).await;
}

async fn velocity(t: &TestSuite, start: &str, end: &str, split: kpi::Dimension) -> kpi::GetVelocityResponse {
    let req = kpi::GetVelocityRequest {
        start_date: start.into(),
        end_date: end.into(),
        split_by: split as i32,
        ..Default::default()
    };
    t.kpi.clone().get_velocity(req).await.unwrap().into_inner()
}

fn stage(v: &kpi::Velocity, stage: kpi::VelocityStage) -> kpi::StageVelocity {
    v.stages.iter().find(|s| s.stage == stage as i32).cloned().unwrap()
}

/// (exits, median, p90, open, median age, p90 age, oldest age)
type Figures = (
    i64,
    Option<prost_types::Duration>,
    Option<prost_types::Duration>,
    i64,
    Option<prost_types::Duration>,
    Option<prost_types::Duration>,
    Option<prost_types::Duration>,
);

fn figures(s: &kpi::StageVelocity) -> Figures {
    (s.exits, s.median_time, s.p90_time, s.open, s.median_age, s.p90_age, s.oldest_age)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn time_in_each_stage_ageing_and_the_follow_up_sla() {
    let t = TestSuite::start().await;
    history(&t).await;
    assert_velocity(&t).await;
}

pub async fn assert_velocity(t: &TestSuite) {
    // Wait until kpi has read the win (the last thing v1 did).
    eventually("kpi has read v1's win", || async move {
        let v = velocity(t, "2026-10-01", "2026-11-01", kpi::Dimension::Unspecified).await;
        (stage(v.velocity.as_ref()?, kpi::VelocityStage::FieldSales).exits == 1).then_some(())
    })
    .await;

    let october = velocity(t, "2026-10-01", "2026-11-01", kpi::Dimension::Unspecified).await;
    assert_eq!(october.as_of, ts("2026-11-01T00:00:00Z"), "open stays are aged at the period's end");
    let v = october.velocity.unwrap();
    use kpi::VelocityStage as S;
    let none = None;
    // Nurture ended after 0.5 h, 24 h and 96 h; v4 is open since Oct 20 09:00.
    assert_eq!(
        figures(&stage(&v, S::Nurture)),
        (3, hours(24.0), hours(24.0 + 0.8 * 72.0), 1, hours(279.0), hours(279.0), hours(279.0))
    );
    // Inside sales: v1 left after 24 h; v2 (711 h) and v3 (639 h) are open.
    assert_eq!(
        figures(&stage(&v, S::InsideSales)),
        (1, hours(24.0), hours(24.0), 2, hours(675.0), hours(639.0 + 0.9 * 72.0), hours(711.0))
    );
    assert_eq!(figures(&stage(&v, S::FieldSales)), (1, hours(192.0), hours(192.0), 0, none, none, none));
    assert_eq!(figures(&stage(&v, S::PreOpportunity)), (1, hours(24.0), hours(24.0), 0, none, none, none));
    for phase in [S::IssueRecognition, S::Evaluation, S::Negotiation] {
        assert_eq!(figures(&stage(&v, phase)), (1, hours(0.0), hours(0.0), 0, none, none, none), "{phase:?}");
    }
    assert_eq!(figures(&stage(&v, S::Approval)), (1, hours(168.0), hours(168.0), 0, none, none, none));
    // First contacts: v1 after 3 h (in time), v2 after 48 h (late); v3
    // still awaits its first contact and is past its deadline.
    let f = v.follow_up.unwrap();
    assert_eq!((f.first_contacts, f.within_sla, f.sla_attainment), (2, 1, Some(0.5)));
    assert_eq!((f.median_time_to_first_contact, f.p90_time_to_first_contact), (hours(25.5), hours(3.0 + 0.9 * 45.0)));
    assert_eq!((f.awaiting_first_contact, f.overdue), (1, 1));

    // Split by source: v4 is the seminar's.
    let split = velocity(t, "2026-10-01", "2026-11-01", kpi::Dimension::Source).await;
    let values: Vec<&str> = split.splits.iter().map(|s| s.value.as_str()).collect();
    assert_eq!(values, ["seminar", "web_form"]);
    let seminar = split.splits[0].velocity.clone().unwrap();
    assert_eq!((stage(&seminar, S::Nurture).exits, stage(&seminar, S::Nurture).open), (0, 1));
    let web = split.splits[1].velocity.clone().unwrap();
    assert_eq!((stage(&web, S::Nurture).exits, stage(&web, S::Nurture).open), (3, 0));
    assert_eq!(split.velocity.unwrap(), v, "the totals do not depend on the split");

    // An empty period: no quantiles, no attainment (never 0).
    let september = velocity(t, "2026-09-01", "2026-10-01", kpi::Dimension::Unspecified).await.velocity.unwrap();
    assert!(september.stages.iter().all(|s| s.exits == 0 && s.median_time.is_none() && s.open == 0));
    assert_eq!(september.follow_up.unwrap().sla_attainment, None);

    // Bad input names the field.
    let bad = kpi::GetVelocityRequest { start_date: "2026-10-01".into(), split_by: 99, ..Default::default() };
    let err = t.kpi.clone().get_velocity(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<String> = tonic_types::StatusExt::get_error_details(&err)
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert_eq!(fields, ["end_date", "split_by"]);
}
