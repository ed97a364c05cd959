//! Bounds: times stay within years 1970-9999 on the way in and out, reasons
//! are the definition's (an unknown one is refused with the accepted list),
//! and an oversize message is refused as RESOURCE_EXHAUSTED.

use themodel_e2e::{TestSuite, ts};
use themodel_proto::customersuccess::v1 as cs;
use themodel_proto::fieldsales::v1 as fs;
use themodel_proto::insidesales::v1 as is;
use themodel_proto::marketing::v1 as mk;
use tonic::Code;
use tonic_types::StatusExt;

use crate::flows::*;

fn violations(s: &tonic::Status) -> Vec<(String, String)> {
    s.get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| (v.field.clone(), v.description.clone())).collect())
        .unwrap_or_default()
}

fn fields(s: &tonic::Status) -> Vec<String> {
    violations(s).into_iter().map(|(f, _)| f).collect()
}

/// The latest second a timestamp may carry: 9999-12-31T23:59:59Z.
const LAST_SECOND: i64 = 253_402_300_799;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn times_outside_years_1970_to_9999_are_refused_and_never_produced() {
    let t = TestSuite::start().await;
    let mut m = t.marketing.clone();

    for (name, at) in [
        ("year 10000", prost_types::Timestamp { seconds: LAST_SECOND + 1, nanos: 0 }),
        ("negative nanos", prost_types::Timestamp { seconds: 1_800_000_000, nanos: -1 }),
        ("a second of nanos", prost_types::Timestamp { seconds: 1_800_000_000, nanos: 1_000_000_000 }),
        ("far past", prost_types::Timestamp { seconds: i64::MIN, nanos: 0 }),
    ] {
        let mut req = lead("t", "2026-11-02T09:00:00Z");
        req.occurred_at = Some(at);
        let err = m.capture_lead(req).await.unwrap_err();
        assert_eq!((err.code(), fields(&err)), (Code::InvalidArgument, vec!["occurred_at".to_owned()]), "{name}");
    }
    let err = m.get_lead(mk::GetLeadRequest { lead_id: "t".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "a refused capture stores nothing");

    // The last valid second is taken.
    let mut req = lead("t", "2026-11-02T09:00:00Z");
    req.occurred_at = Some(prost_types::Timestamp { seconds: LAST_SECOND, nanos: 999_999_999 });
    assert_eq!(capture(&t, req).await.captured_at.unwrap().seconds, LAST_SECOND);

    // A deal won in 9995: a ten-year term would end after 9999 and is refused
    // on the field; a three-year one is taken.
    let day = "9995-06-01";
    capture(&t, lead("late", &format!("{day}T09:00:00Z"))).await;
    assert!(quote_request(&t, "late", &format!("{day}T09:30:00Z")).await.handed_over);
    in_queue(&t, "late").await;
    qualify(&t, "late", bant_all(), &format!("{day}T10:00:00Z")).await;
    convert(&t, "late", "opp-late", &format!("{day}T10:30:00Z")).await;
    opportunity(&t, "opp-late").await;
    walk_to_approval(&t, "opp-late", &format!("{day}T11:00:00Z")).await;
    let mut won = fs::CloseWonRequest {
        request_id: "won-late".into(),
        opportunity_id: "opp-late".into(),
        contract_value: Some(yen(1_000)),
        term_months: 120,
        account_id: "acct-late".into(),
        occurred_at: ts(&format!("{day}T12:00:00Z")),
    };
    let err = t.field_sales.clone().close_won(won.clone()).await.unwrap_err();
    assert_eq!((err.code(), fields(&err)), (Code::InvalidArgument, vec!["term_months".to_owned()]));
    won.request_id = "won-late-2".into();
    won.term_months = 36;
    t.field_sales.clone().close_won(won).await.unwrap();
    let a = account(&t, "acct-late").await;
    assert_eq!(a.term_ends_at, ts("9998-06-01T12:00:00Z"));

    // Renewals run on from the term's end; one that would pass 9999 is a
    // precondition failure and changes nothing.
    let mut c = t.customer_success.clone();
    let renew = |id: &str, months: i32| cs::RecordRenewalRequest {
        request_id: id.into(),
        account_id: "acct-late".into(),
        term_months: months,
        contract_value: None,
        occurred_at: ts("9998-01-01T00:00:00Z"),
    };
    let err = c.record_renewal(renew("renew-120", 120)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("9999-12-31"), "{}", err.message());
    let after = c.get_account(cs::GetAccountRequest { account_id: "acct-late".into() }).await.unwrap();
    assert_eq!(after.into_inner().account.unwrap(), a, "the refused renewal changed nothing");
    let renewed = c.record_renewal(renew("renew-18", 18)).await.unwrap().into_inner().account.unwrap();
    assert_eq!((renewed.term_ends_at, renewed.renewals), (ts("9999-12-01T12:00:00Z"), 1));
    let err = c.record_renewal(renew("renew-1", 1)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "9999-12-01 plus a month is past the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_reason_is_refused_with_the_accepted_ones() {
    let t = TestSuite::start().await;
    capture(&t, lead("r", "2026-11-02T09:00:00Z")).await;
    quote_request(&t, "r", "2026-11-02T09:30:00Z").await;
    in_queue(&t, "r").await;

    let mut inside = t.inside_sales.clone();
    let recycle = |reason: &str, months: i32| is::RecycleLeadRequest {
        request_id: format!("recycle-{reason}-{months}"),
        lead_id: "r".into(),
        reason: reason.into(),
        timing_months: months,
        note: String::new(),
        occurred_at: ts("2026-11-03T09:00:00Z"),
    };
    let err = inside.recycle_lead(recycle("later", 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let (field, description) = violations(&err).pop().unwrap();
    assert_eq!(field, "reason");
    for accepted in ["not_contacted", "timing", "no_budget", "no_need"] {
        assert!(description.contains(accepted), "{accepted} missing from: {description}");
    }
    // Exactly as listed: case is not folded.
    let err = inside.recycle_lead(recycle("TIMING", 3)).await.unwrap_err();
    assert_eq!(fields(&err), ["reason"]);
    let err = inside.recycle_lead(recycle("no_budget", 3)).await.unwrap_err();
    assert_eq!(fields(&err), ["timing_months"], "months belong to the timing reason only");
    let item = inside.get_queue_item(is::GetQueueItemRequest { lead_id: "r".into() }).await.unwrap();
    assert_eq!(item.into_inner().item.unwrap().status, is::QueueStatus::Open as i32, "nothing refused took effect");

    qualify(&t, "r", bant_all(), "2026-11-03T10:00:00Z").await;
    convert(&t, "r", "opp-r", "2026-11-03T10:30:00Z").await;
    opportunity(&t, "opp-r").await;
    let mut field = t.field_sales.clone();
    let lost = |reason: &str| fs::CloseLostRequest {
        request_id: format!("lost-{reason}"),
        opportunity_id: "opp-r".into(),
        reason: reason.into(),
        note: String::new(),
        occurred_at: ts("2026-11-04T10:00:00Z"),
    };
    // Not silently mapped to lost_other, and not accepted as written.
    let err = field.close_lost(lost("competitor")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let (field_name, description) = violations(&err).pop().unwrap();
    assert_eq!(field_name, "reason");
    for accepted in ["lost_to_competitor", "lost_price", "lost_other"] {
        assert!(description.contains(accepted), "{accepted} missing from: {description}");
    }
    assert_eq!(opportunity(&t, "opp-r").await.phase, fs::Phase::PreOpportunity as i32);
    let o = field.close_lost(lost("lost_to_competitor")).await.unwrap().into_inner().opportunity.unwrap();
    assert_eq!((o.phase, o.lost_reason.as_str()), (fs::Phase::Lost as i32, "lost_to_competitor"));
    let l = lead_status(&t, "r", mk::LeadStatus::Recycled).await;
    assert_eq!(l.recycle_reason, "lost_to_competitor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversize_message_is_refused_as_resource_exhausted() {
    let t = TestSuite::start().await;
    let mut req = lead("big", "2026-11-02T09:00:00Z");
    req.name = "x".repeat(5 << 20);
    let err = t.marketing.clone().capture_lead(req).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    let mut batch = mk::RecordTouchesRequest { request_id: "big".into(), touches: Vec::new() };
    batch.touches =
        vec![mk::TouchInput { lead_id: "big".into(), kind: 1, detail: "y".repeat(2048), occurred_at: None }; 3_000];
    let err = t.marketing.clone().record_touches(batch).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    // The service is unharmed.
    capture(&t, lead("big", "2026-11-02T09:00:00Z")).await;
}
