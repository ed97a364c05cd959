//! kpi follows the streams by itself: no read calls a department service, a
//! consistency token gives read-your-writes, and the lag per stream shows.

use std::time::{Duration, Instant};

use themodel_e2e::{Svc, TestSuite, eventually};
use themodel_proto::common::v1 as common;
use themodel_proto::common::v1::event_stream_service_client::EventStreamServiceClient;
use themodel_proto::kpi::v1 as kpi;
use themodel_runtime::consistency::HEADER;
use tonic::Code;

use crate::flows::*;

fn november() -> kpi::GetFunnelRequest {
    kpi::GetFunnelRequest { start_date: "2026-11-01".into(), end_date: "2026-12-01".into(), ..Default::default() }
}

/// GetFunnel for November carrying `token` (none when empty).
async fn funnel_with(t: &TestSuite, token: &str) -> Result<kpi::Funnel, tonic::Status> {
    let mut req = tonic::Request::new(november());
    if !token.is_empty() {
        req.metadata_mut().insert(HEADER, token.parse().unwrap());
    }
    Ok(t.kpi_as_is().get_funnel(req).await?.into_inner().funnel.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_answers_with_a_token_that_a_kpi_read_waits_for() {
    let t = TestSuite::start().await;
    let mut marketing = t.marketing.clone();
    let mut last = String::new();
    for i in 0..20 {
        let answer = marketing.capture_lead(lead(&format!("tok-{i}"), "2026-11-02T09:00:00Z")).await.unwrap();
        last = answer.metadata().get(HEADER).unwrap().to_str().unwrap().to_owned();
    }
    assert_eq!(last, "marketing:20", "the stream's head after the twentieth capture");
    // Read with the token right after the write: all twenty are counted.
    assert_eq!(funnel_with(&t, &last).await.unwrap().leads, 20);

    // A hand-over delivered before the call answered adds its receiver's token.
    let answer = t
        .marketing
        .clone()
        .record_touch(themodel_proto::marketing::v1::RecordTouchRequest {
            request_id: rid(&["touch", "tok-0"]),
            lead_id: "tok-0".into(),
            kind: themodel_proto::marketing::v1::TouchKind::QuoteRequest as i32,
            detail: String::new(),
            occurred_at: themodel_e2e::ts("2026-11-02T09:30:00Z"),
        })
        .await
        .unwrap();
    assert!(answer.get_ref().handed_over);
    let token = answer.metadata().get(HEADER).unwrap().to_str().unwrap().to_owned();
    let inside_sales = token.split(',').find_map(|t| t.strip_prefix("inside-sales:")).map(|s| s.parse::<i64>());
    assert!(matches!(inside_sales, Some(Ok(seq)) if seq >= 1), "{token}");
    let f = funnel_with(&t, &token).await.unwrap();
    assert_eq!(f.promising_leads, 1, "the promotion and the hand-over are both counted");
    let applied = |name: &str| f.sources.iter().find(|s| s.service == name).unwrap().applied_seq;
    assert_eq!(applied("inside-sales"), inside_sales.unwrap().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_token_kpi_catches_up_on_its_own_and_reports_no_lag() {
    let t = TestSuite::start().await;
    for i in 0..5 {
        capture(&t, lead(&format!("own-{i}"), "2026-11-02T09:00:00Z")).await;
    }
    // No timer poll in between: the long poll wakes on the commit.
    let f = eventually("kpi counts the five captures", || async {
        let f = funnel_with(&t, "").await.ok()?;
        (f.leads == 5).then_some(f)
    })
    .await;
    let m = f.sources.iter().find(|s| s.service == "marketing").unwrap();
    assert_eq!((m.applied_seq, m.head_seq, m.lag_events), (5, 5, 0));
    assert_eq!(m.lag, Some(prost_types::Duration::default()));
    assert!(m.error.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_do_not_call_a_service_that_is_down() {
    let mut t = TestSuite::start().await;
    capture(&t, lead("up", "2026-11-02T09:00:00Z")).await;
    assert_eq!(funnel_with(&t, &t.tokens()).await.unwrap().leads, 1);
    t.suite.stop(Svc::Marketing).await.unwrap();
    for _ in 0..5 {
        let began = Instant::now();
        let f = funnel_with(&t, "").await.unwrap();
        assert_eq!(f.leads, 1, "what was counted stays counted");
        assert!(began.elapsed() < Duration::from_millis(500), "answered without waiting for marketing");
    }
    // A token kpi cannot reach while marketing is down is answered, before
    // the caller's deadline, with how far kpi got.
    let mut req = tonic::Request::new(november());
    req.metadata_mut().insert(HEADER, "marketing:2".parse().unwrap());
    req.set_timeout(Duration::from_millis(500));
    let began = Instant::now();
    let err = t.kpi_as_is().get_funnel(req).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("marketing up to seq 1"), "{}", err.message());
    assert!(began.elapsed() < Duration::from_secs(2));

    t.suite.restart(Svc::Marketing).await.unwrap();
    t.wait_serving().await;
    capture(&t, lead("back", "2026-11-02T10:00:00Z")).await;
    assert_eq!(funnel_with(&t, &t.tokens()).await.unwrap().leads, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_tokens_are_refused_with_the_accepted_forms() {
    let t = TestSuite::start().await;
    for (token, says) in [
        ("marketing", "<stream>:<seq>"),
        ("marketing:-3", "<stream>:<seq>"),
        ("warehouse:4", "one of marketing, inside-sales, field-sales, customer-success, kpi"),
    ] {
        let err = funnel_with(&t, token).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{token}");
        let violations =
            tonic_types::StatusExt::get_error_details(&err).bad_request().unwrap().field_violations.clone();
        assert_eq!(violations[0].field, HEADER);
        assert!(violations[0].description.contains(says), "{token}: {}", violations[0].description);
    }
    // kpi's own token needs no wait.
    assert_eq!(funnel_with(&t, "kpi:99").await.unwrap().leads, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_poll_answers_when_the_next_event_is_committed() {
    let t = TestSuite::start().await;
    let mut stream = EventStreamServiceClient::new(t.channel(Svc::Marketing));
    let wait = |ms: i64| Some(prost_types::Duration { seconds: ms / 1000, nanos: ((ms % 1000) * 1_000_000) as i32 });

    // Nothing comes: an empty page once the wait is over.
    let began = Instant::now();
    let req = common::ListEventsRequest { after_seq: 0, page_size: 10, wait: wait(300) };
    let page = stream.list_events(req).await.unwrap().into_inner();
    assert!(page.events.is_empty());
    assert!(began.elapsed() >= Duration::from_millis(290), "{:?}", began.elapsed());

    // A capture during a 30 s wait ends it with the capture.
    let mut waiting = stream.clone();
    let poll = tokio::spawn(async move {
        let began = Instant::now();
        let req = common::ListEventsRequest { after_seq: 0, page_size: 10, wait: wait(30_000) };
        (waiting.list_events(req).await.unwrap().into_inner(), began.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    capture(&t, lead("woken", "2026-11-02T09:00:00Z")).await;
    let (page, took) = poll.await.unwrap();
    assert_eq!(page.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1]);
    assert!(took < Duration::from_secs(5), "{took:?}");

    // A wait that is not a duration is refused.
    let req = common::ListEventsRequest {
        after_seq: 0,
        page_size: 10,
        wait: Some(prost_types::Duration { seconds: -1, nanos: 0 }),
    };
    assert_eq!(stream.list_events(req).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_shuts_down_promptly_with_a_long_poll_open() {
    let mut t = TestSuite::start().await;
    let mut stream = EventStreamServiceClient::new(t.channel(Svc::Marketing));
    let poll = tokio::spawn(async move {
        let req = common::ListEventsRequest {
            after_seq: 0,
            page_size: 10,
            wait: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        };
        stream.list_events(req).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let began = Instant::now();
    t.suite.stop(Svc::Marketing).await.unwrap();
    assert!(began.elapsed() < Duration::from_secs(5), "stopped in {:?}", began.elapsed());
    // The open poll was answered (empty), not cut.
    assert!(poll.await.unwrap().unwrap().into_inner().events.is_empty());
}
