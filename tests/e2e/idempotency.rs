//! AIP-155: the same request_id twice returns the first result and changes nothing.

use themodel_e2e::{Svc, TestSuite};
use themodel_proto::marketing::v1 as mk;
use tonic::Code;
use tonic_types::StatusExt;

use crate::flows::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeating_a_request_returns_the_first_result_and_changes_nothing() {
    let t = TestSuite::start().await;
    let mut m = t.marketing.clone();

    let req = lead("idem", "2026-11-02T09:00:00Z");
    let first = m.capture_lead(req.clone()).await.unwrap().into_inner();
    let again = m.capture_lead(req.clone()).await.unwrap().into_inner();
    assert_eq!(first, again);
    assert!(!again.already_existed, "the replay is the first answer, not a second capture");

    let touch = mk::RecordTouchRequest {
        request_id: "touch-once".into(),
        lead_id: "idem".into(),
        kind: mk::TouchKind::ContentDownload as i32,
        detail: "whitepaper".into(),
        occurred_at: None,
    };
    let a = m.record_touch(touch.clone()).await.unwrap().into_inner();
    let b = m.record_touch(touch.clone()).await.unwrap().into_inner();
    assert_eq!(a, b, "the same touch, even without occurred_at");
    assert_eq!(b.lead.unwrap().touch_count, 1);

    // The same id for a different request is refused, naming the field.
    let mut other = req.clone();
    other.email = "someone.else@corp.example".into();
    let err = m.capture_lead(other).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let details = err.get_error_details();
    assert_eq!(details.bad_request().unwrap().field_violations[0].field, "request_id");

    // A hand-over receiver deduplicates on the hand-over id the same way.
    let listed = m.list_leads(mk::ListLeadsRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.leads.len(), 1);
    let f = t.settled_funnel("2026-11-01", "2026-12-01").await;
    assert_eq!(f.leads, 1);
    assert_eq!(t.head(Svc::Marketing).await, 2, "one capture and one touch event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_capture_of_the_same_email_is_the_same_lead() {
    let t = TestSuite::start().await;
    capture(&t, lead("dup", "2026-11-02T09:00:00Z")).await;
    let mut again = lead("dup", "2026-11-03T09:00:00Z");
    again.request_id = "capture-dup-2".into();
    again.lead_id = String::new();
    let resp = t.marketing.clone().capture_lead(again).await.unwrap().into_inner();
    assert!(resp.already_existed);
    let l = resp.lead.unwrap();
    assert_eq!(l.lead_id, "dup");
    assert_eq!(l.touch_count, 1, "the repeat form fill is a touch");
    let f = t.settled_funnel("2026-11-01", "2026-12-01").await;
    assert_eq!(f.leads, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_rpcs_page_with_tokens() {
    let t = TestSuite::start().await;
    for i in 0..5 {
        capture(&t, lead(&format!("p{i}"), &format!("2026-11-0{}T09:00:00Z", i + 1))).await;
    }
    let mut m = t.marketing.clone();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = m
            .list_leads(mk::ListLeadsRequest { page_size: 2, page_token: token, status: 0 })
            .await
            .unwrap()
            .into_inner();
        assert!(page.leads.len() <= 2);
        seen.extend(page.leads.into_iter().map(|l| l.lead_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ["p4", "p3", "p2", "p1", "p0"], "newest first, each once");
    let bad = m
        .list_leads(mk::ListLeadsRequest { page_size: 2, page_token: "nonsense".into(), status: 0 })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_ids_are_scoped_per_rpc() {
    let t = TestSuite::start().await;
    let mut m = t.marketing.clone();
    let mut req = lead("scoped", "2026-11-02T09:00:00Z");
    req.request_id = "1".into();
    m.capture_lead(req).await.unwrap();
    let touch = mk::RecordTouchRequest {
        request_id: "1".into(),
        lead_id: "scoped".into(),
        kind: mk::TouchKind::EmailClick as i32,
        ..Default::default()
    };
    let r = m.record_touch(touch).await.unwrap().into_inner();
    assert_eq!(r.lead.unwrap().touch_count, 1, "the same id on another RPC is another request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn marketing_can_hand_over_a_lead_on_its_own_judgement() {
    let t = TestSuite::start().await;
    let mut m = t.marketing.clone();
    let mut req = lead("manual", "2026-11-02T09:00:00Z");
    req.job_title = String::new();
    req.company_size = 0;
    req.industry = String::new();
    let l = capture(&t, req).await;
    assert_eq!(l.score, 0);
    let hand = mk::HandOverLeadRequest {
        request_id: "manual-1".into(),
        lead_id: "manual".into(),
        note: "called sales directly".into(),
        occurred_at: themodel_e2e::ts("2026-11-02T10:00:00Z"),
    };
    let l = m.hand_over_lead(hand.clone()).await.unwrap().into_inner().lead.unwrap();
    assert_eq!(l.status, mk::LeadStatus::HandedOver as i32);
    assert_eq!(m.hand_over_lead(hand).await.unwrap().into_inner().lead.unwrap(), l, "replayed, not refused");
    let item = in_queue(&t, "manual").await;
    assert_eq!(item.handed_over_at, themodel_e2e::ts("2026-11-02T10:00:00Z"));
    let again =
        mk::HandOverLeadRequest { request_id: "manual-2".into(), lead_id: "manual".into(), ..Default::default() };
    assert_eq!(m.hand_over_lead(again).await.unwrap_err().code(), Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn touches_in_a_batch_are_all_or_nothing() {
    let t = TestSuite::start().await;
    let mut m = t.marketing.clone();
    capture(&t, lead("b1", "2026-11-02T09:00:00Z")).await;
    capture(&t, lead("b2", "2026-11-02T09:00:00Z")).await;
    let touch = |lead: &str, kind: mk::TouchKind| mk::TouchInput {
        lead_id: lead.into(),
        kind: kind as i32,
        detail: String::new(),
        occurred_at: themodel_e2e::ts("2026-11-02T10:00:00Z"),
    };
    let batch = mk::RecordTouchesRequest {
        request_id: "batch-1".into(),
        touches: vec![
            touch("b1", mk::TouchKind::PageView),
            touch("b2", mk::TouchKind::PageView),
            touch("b1", mk::TouchKind::QuoteRequest),
        ],
    };
    let r = m.record_touches(batch.clone()).await.unwrap().into_inner();
    assert_eq!(r.recorded, 3);
    assert_eq!(r.handed_over_lead_ids, ["b1"]);
    assert_eq!(m.record_touches(batch).await.unwrap().into_inner(), r, "replayed");
    in_queue(&t, "b1").await;

    // One unknown lead fails the whole batch; nothing of it is kept.
    let bad = mk::RecordTouchesRequest {
        request_id: "batch-2".into(),
        touches: vec![touch("b2", mk::TouchKind::EmailOpen), touch("nobody", mk::TouchKind::EmailOpen)],
    };
    assert_eq!(m.record_touches(bad).await.unwrap_err().code(), Code::NotFound);
    let invalid = mk::RecordTouchesRequest {
        request_id: "batch-3".into(),
        touches: vec![touch("b2", mk::TouchKind::EmailOpen), touch("b2", mk::TouchKind::Unspecified)],
    };
    let err = m.record_touches(invalid).await.unwrap_err();
    assert_eq!(err.get_error_details().bad_request().unwrap().field_violations[0].field, "touches[1].kind");
    let b2 = m.get_lead(mk::GetLeadRequest { lead_id: "b2".into() }).await.unwrap().into_inner().lead.unwrap();
    assert_eq!(b2.touch_count, 1, "only the first batch's touch");
}
