//! A hand-over the receiver refuses for good becomes a dead letter after the
//! configured tries, the hand-overs behind it still arrive, and an operator
//! lists, retries and drops it. Amounts are never wrapped on the way.

use prost::{Message, Name};
use themodel_e2e::{Svc, TestSuite, eventually, ts};
use themodel_proto::common::v1 as common;
use themodel_proto::common::v1::{Money, OutboxEvent};
use themodel_proto::customersuccess::v1 as cs;
use themodel_proto::fieldsales::v1 as fs;
use tonic::Code;

use crate::flows::*;

/// Drives a lead to APPROVAL and closes it won for `value` into `account_id`.
async fn won_deal(t: &TestSuite, id: &str, account_id: &str, value: Money) {
    capture(t, lead(id, "2026-11-02T09:00:00Z")).await;
    quote_request(t, id, "2026-11-02T09:30:00Z").await;
    in_queue(t, id).await;
    qualify(t, id, bant_all(), "2026-11-02T10:00:00Z").await;
    let opp = format!("opp-{id}");
    convert(t, id, &opp, "2026-11-02T10:30:00Z").await;
    opportunity(t, &opp).await;
    walk_to_approval(t, &opp, "2026-11-03T10:00:00Z").await;
    t.field_sales
        .clone()
        .close_won(fs::CloseWonRequest {
            request_id: format!("won-{id}"),
            opportunity_id: opp,
            contract_value: Some(value),
            term_months: 12,
            account_id: account_id.into(),
            occurred_at: ts("2026-11-04T10:00:00Z"),
        })
        .await
        .unwrap();
}

fn money(code: &str, units: i64) -> Money {
    Money { currency_code: code.into(), units, nanos: 0 }
}

async fn dead_letters(t: &TestSuite) -> Vec<common::Handover> {
    let req = common::ListDeadLettersRequest::default();
    t.outbox(Svc::FieldSales).list_dead_letters(req).await.unwrap().into_inner().dead_letters
}

/// The outbox events in field sales' stream, in order.
async fn outbox_events(t: &TestSuite) -> Vec<common::outbox_event::Event> {
    let mut stream = themodel_proto::common::v1::event_stream_service_client::EventStreamServiceClient::new(
        t.channel(Svc::FieldSales),
    );
    let page =
        stream.list_events(common::ListEventsRequest { after_seq: 0, page_size: 5000, wait: None }).await.unwrap();
    page.into_inner()
        .events
        .into_iter()
        .filter_map(|e| e.event)
        .filter(|any| any.type_url == OutboxEvent::type_url())
        .filter_map(|any| OutboxEvent::decode(any.value.as_slice()).ok()?.event)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_hand_over_becomes_a_dead_letter_and_the_rest_still_arrive() {
    let t = TestSuite::start_with(|o| o.dead_letter_after = 2).await;
    dead_letter_lifecycle(&t).await;
}

/// The scenario, on a fresh suite whose hand-overs die after two refusals.
pub async fn dead_letter_lifecycle(t: &TestSuite) {
    won_deal(t, "yen", "acct-shared", money("JPY", 1_200_000)).await;
    account(t, "acct-shared").await;
    // A second deal for the same account in another currency: customer
    // success refuses it (FAILED_PRECONDITION), every time.
    won_deal(t, "usd", "acct-shared", money("USD", 10_000)).await;
    // A deal made after it, for another account, is not held back.
    won_deal(t, "later", "acct-later", money("JPY", 500_000)).await;
    assert_eq!(account(t, "acct-later").await.opportunity_id, "opp-later");

    let dead = eventually("the refused hand-over is a dead letter", || async {
        let dead = dead_letters(t).await;
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead.len(), 1);
    let letter = &dead[0];
    assert_eq!(letter.destination, "customer-success");
    assert_eq!(letter.method, "/themodel.customersuccess.v1.CustomerSuccessService/AcceptWonDeal");
    assert_eq!((letter.subject_id.as_str(), letter.attempts), ("acct-shared", 2));
    assert_eq!(letter.last_error_code, "FAILED_PRECONDITION");
    assert_eq!(letter.state, common::HandoverState::Dead as i32);
    let request = letter.request.as_ref().unwrap();
    let sent = cs::AcceptWonDealRequest::decode(request.value.as_slice()).unwrap();
    assert_eq!((sent.opportunity_id.as_str(), sent.request_id.as_str()), ("opp-usd", letter.handover_id.as_str()));
    let shared = account(t, "acct-shared").await;
    assert_eq!(shared.contract_value, Some(money("JPY", 1_200_000)), "the refused deal changed nothing");

    let to_cs = t.outbox_stats(Svc::FieldSales, "customer-success").await;
    assert_eq!((to_cs.dead_letters, to_cs.delivered, to_cs.pending), (1, 2, 0));

    // Retry: back in line, attempts from zero; refused again, dead again.
    let retry =
        common::RetryDeadLetterRequest { request_id: "retry-1".into(), handover_id: letter.handover_id.clone() };
    let retried = t.outbox(Svc::FieldSales).retry_dead_letter(retry.clone()).await.unwrap().into_inner();
    let again = t.outbox(Svc::FieldSales).retry_dead_letter(retry).await.unwrap().into_inner();
    assert_eq!(retried, again, "a repeated retry is answered from the first");
    let h = retried.handover.unwrap();
    assert_eq!((h.state, h.attempts), (common::HandoverState::Pending as i32, 0));
    eventually("tried again and dead again", || async {
        let dead = dead_letters(t).await;
        (dead.len() == 1 && dead[0].attempts == 2).then_some(())
    })
    .await;

    // Drop: given up on for good, and no longer a dead letter to retry.
    let drop = common::DropDeadLetterRequest {
        request_id: "drop-1".into(),
        handover_id: letter.handover_id.clone(),
        reason: "the customer pays in JPY; re-entered by hand".into(),
    };
    let dropped = t.outbox(Svc::FieldSales).drop_dead_letter(drop).await.unwrap().into_inner();
    assert_eq!(dropped.handover.unwrap().state, common::HandoverState::Dropped as i32);
    assert!(dead_letters(t).await.is_empty());
    let retry =
        common::RetryDeadLetterRequest { request_id: "retry-2".into(), handover_id: letter.handover_id.clone() };
    let err = t.outbox(Svc::FieldSales).retry_dead_letter(retry).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // Each step is in field sales' stream.
    use common::outbox_event::Event as E;
    let kinds: Vec<&str> = outbox_events(t)
        .await
        .iter()
        .map(|e| match e {
            E::DeadLettered(_) => "dead",
            E::Retried(_) => "retried",
            E::Dropped(_) => "dropped",
        })
        .collect();
    assert_eq!(kinds, ["dead", "retried", "dead", "dropped"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expansion_that_would_overflow_is_refused_never_wrapped() {
    let t = TestSuite::start_with(|o| o.dead_letter_after = 2).await;
    overflow_is_refused(&t).await;
}

/// The scenario, on a fresh suite.
pub async fn overflow_is_refused(t: &TestSuite) {
    won_deal(t, "max1", "acct-max", money("JPY", i64::MAX)).await;
    assert_eq!(account(t, "acct-max").await.contract_value, Some(money("JPY", i64::MAX)));
    won_deal(t, "max2", "acct-max", money("JPY", i64::MAX)).await;
    let dead = eventually("the overflowing deal is a dead letter", || async {
        let dead = dead_letters(t).await;
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead[0].last_error_code, "FAILED_PRECONDITION");
    assert!(dead[0].last_error.contains("largest amount"), "{}", dead[0].last_error);
    let a = account(t, "acct-max").await;
    assert_eq!(a.contract_value, Some(money("JPY", i64::MAX)), "not wrapped to a negative amount");
    assert_eq!(a.expansions, 0);
    // Both wins count: the deals were won; the account just could not take the second.
    let f = t.settled_funnel("2026-11-01", "2026-12-01").await;
    assert_eq!(f.wins, 2);
    // Their revenue is summed exactly: twice the largest amount is past what
    // Money holds, so it is given as the largest, and kpi keeps counting.
    let largest = Some(common::Money { currency_code: "JPY".into(), units: i64::MAX, nanos: 999_999_999 });
    let r = &f.revenue[0];
    assert_eq!((r.won.clone(), r.new_business.clone()), (largest, Some(money("JPY", i64::MAX))));
    assert!(f.sources.iter().all(|s| s.error.is_empty()), "{:?}", f.sources);
}
