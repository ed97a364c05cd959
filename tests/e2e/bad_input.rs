//! Bad input gets the right status and names the field; nothing is stored.

use themodel_e2e::{Svc, TestSuite, ts};
use themodel_proto::fieldsales::v1 as fs;
use themodel_proto::insidesales::v1 as is;
use themodel_proto::kpi::v1 as kpi;
use themodel_proto::marketing::v1 as mk;
use tonic::Code;
use tonic_types::StatusExt;

use crate::flows::*;

fn fields(s: &tonic::Status) -> Vec<String> {
    s.get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_refused_with_the_right_code_and_field() {
    let t = TestSuite::start().await;
    let mut m = t.marketing.clone();

    // Missing e-mail and source, negative size: every fault reported at once.
    let mut req = lead("x", "2026-11-02T09:00:00Z");
    req.email = String::new();
    req.source = String::new();
    req.company_size = -1;
    let err = m.capture_lead(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(fields(&err), ["email", "company_size", "source"]);

    let mut req = lead("x", "2026-11-02T09:00:00Z");
    req.email = "not-an-email".into();
    assert_eq!(fields(&m.capture_lead(req).await.unwrap_err()), ["email"]);

    let mut req = lead("x", "2026-11-02T09:00:00Z");
    req.request_id = "before-1970".into();
    req.occurred_at = Some(prost_types::Timestamp { seconds: -86_400, nanos: 0 });
    assert_eq!(fields(&m.capture_lead(req).await.unwrap_err()), ["occurred_at"]);

    let err = m.get_lead(mk::GetLeadRequest { lead_id: "nobody".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = m
        .record_touch(mk::RecordTouchRequest {
            request_id: "t".into(),
            lead_id: "nobody".into(),
            kind: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = m
        .record_touch(mk::RecordTouchRequest {
            request_id: "t2".into(),
            lead_id: "nobody".into(),
            kind: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["kind"]);

    // Inside sales: converting without BANT is a precondition failure.
    capture(&t, lead("gate", "2026-11-02T09:00:00Z")).await;
    quote_request(&t, "gate", "2026-11-02T09:30:00Z").await;
    in_queue(&t, "gate").await;
    let err = t
        .inside_sales
        .clone()
        .convert_to_opportunity(is::ConvertToOpportunityRequest {
            request_id: "c".into(),
            lead_id: "gate".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let err = t
        .inside_sales
        .clone()
        .recycle_lead(is::RecycleLeadRequest {
            request_id: "r".into(),
            lead_id: "gate".into(),
            reason: "timing".into(),
            timing_months: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["timing_months"]);

    // Field sales: a phase jump, a negative amount, an unknown phase.
    qualify(&t, "gate", bant_all(), "2026-11-02T10:00:00Z").await;
    convert(&t, "gate", "opp-gate", "2026-11-02T10:30:00Z").await;
    opportunity(&t, "opp-gate").await;
    let err = advance(&t, "opp-gate", fs::Phase::Negotiation, "2026-11-03T10:00:00Z").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("one step at a time"), "{}", err.message());
    let err = t
        .field_sales
        .clone()
        .advance_phase(fs::AdvancePhaseRequest {
            request_id: "a".into(),
            opportunity_id: "opp-gate".into(),
            to_phase: 42,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["to_phase"]);
    let err = t
        .field_sales
        .clone()
        .close_won(fs::CloseWonRequest {
            request_id: "w".into(),
            opportunity_id: "opp-gate".into(),
            contract_value: Some(yen(-5)),
            term_months: 12,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["contract_value"]);
    let err = t
        .field_sales
        .clone()
        .close_won(fs::CloseWonRequest {
            request_id: "w2".into(),
            opportunity_id: "opp-gate".into(),
            contract_value: Some(yen(5)),
            term_months: 12,
            occurred_at: ts("2026-11-04T10:00:00Z"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "won only from APPROVAL");
    let o = opportunity(&t, "opp-gate").await;
    assert_eq!(o.phase, fs::Phase::PreOpportunity as i32, "refused steps changed nothing");

    // KPI: bad periods.
    let mut k = t.kpi.clone();
    let err = k
        .get_funnel(kpi::GetFunnelRequest {
            start_date: "2026-13-01".into(),
            end_date: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["start_date", "end_date"]);
    let err = k
        .get_funnel(kpi::GetFunnelRequest {
            start_date: "2026-11-02".into(),
            end_date: "2026-11-01".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["end_date"]);

    // Nothing refused was recorded: one lead, one opportunity.
    let f = t.settled_funnel("2026-11-01", "2026-12-01").await;
    assert_eq!((f.leads, f.opportunities, f.wins), (1, 1, 0));
    assert!(t.head(Svc::CustomerSuccess).await == 0);
}
