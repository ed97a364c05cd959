//! Hand-overs survive a receiver that is down, and KPIs survive restarts.

use themodel_e2e::{Svc, TestSuite, eventually};
use themodel_proto::fieldsales::v1 as fs;
use themodel_proto::kpi::v1 as kpi;

use crate::chain::{assert_november_funnel, november};
use crate::flows::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hand_overs_to_a_stopped_receiver_arrive_exactly_once() {
    let mut t = TestSuite::start().await;
    receiver_down_then_up(&mut t).await;
}

/// Field sales is down while inside sales converts three leads; once it is
/// back, each opportunity exists exactly once and the KPIs count three.
pub async fn receiver_down_then_up(t: &mut TestSuite) {
    let leads = ["h1", "h2", "h3"];
    for id in leads {
        capture(t, lead(id, "2026-11-02T09:00:00Z")).await;
        quote_request(t, id, "2026-11-02T09:30:00Z").await;
        in_queue(t, id).await;
        qualify(t, id, bant_all(), "2026-11-02T10:00:00Z").await;
    }

    // Field sales goes down; inside sales keeps converting.
    t.suite.stop(Svc::FieldSales).await.unwrap();
    for id in leads {
        convert(t, id, &format!("opp-{id}"), "2026-11-02T11:00:00Z").await;
    }
    // The relay tries, fails against the closed port, and keeps all three.
    let backlog = eventually("deliveries to field sales fail while it is down", || async {
        let s = t.outbox_stats(Svc::InsideSales, "field-sales").await;
        (s.failed_attempts >= 3).then_some(s)
    })
    .await;
    assert_eq!((backlog.pending, backlog.delivered, backlog.dead_letters), (3, 0, 0));
    assert!(backlog.oldest_pending_age.is_some());

    t.suite.restart(Svc::FieldSales).await.unwrap();
    t.wait_serving().await;
    for id in leads {
        let o = opportunity(t, &format!("opp-{id}")).await;
        assert_eq!(o.lead_id, id);
    }
    let done = eventually("the backlog to field sales is delivered", || async {
        let s = t.outbox_stats(Svc::InsideSales, "field-sales").await;
        (s.pending == 0).then_some(s)
    })
    .await;
    assert_eq!((done.delivered, done.dead_letters, done.failed_attempts), (3, 0, 0));

    // Nothing is left to retry, so nothing can arrive twice later: each
    // hand-over arrived exactly once.
    let all = t
        .field_sales
        .clone()
        .list_opportunities(fs::ListOpportunitiesRequest { page_size: 100, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.opportunities.len(), 3, "each hand-over arrived exactly once");
    let f = t.settled_funnel("2026-11-01", "2026-12-01").await;
    assert_eq!((f.leads, f.opportunities), (3, 3));
    let opened_events = t.head(Svc::FieldSales).await;
    assert_eq!(opened_events, 3, "field sales recorded three openings, no duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kpi_restart_and_rebuild_from_zero_change_nothing() {
    let mut t = TestSuite::start().await;
    november(&t).await;
    assert_november_funnel(&t.settled_funnel("2026-11-01", "2026-12-01").await);

    // Restart: the stored cursors pick up where they were; nothing counted twice.
    t.suite.restart(Svc::Kpi).await.unwrap();
    t.wait_serving().await;
    assert_november_funnel(&t.settled_funnel("2026-11-01", "2026-12-01").await);

    // Rebuilt from the streams (kpi forgets every count and reads each
    // stream again from its start), the numbers are the same.
    t.suite.rebuild_kpi().await.unwrap();
    t.wait_serving().await;
    assert_november_funnel(&t.settled_funnel("2026-11-01", "2026-12-01").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replaced_database_is_a_new_stream_that_kpi_reads_from_its_start() {
    let mut t = TestSuite::start().await;
    for id in ["r1", "r2", "r3"] {
        capture(&t, lead(id, "2026-11-02T09:00:00Z")).await;
    }
    let before = t.settled_funnel("2026-11-01", "2026-12-01").await;
    assert_eq!(before.leads, 3);
    let old = before.sources.iter().find(|s| s.service == "marketing").unwrap().clone();
    assert_eq!(old.applied_seq, 3);
    assert!(!old.stream_id.is_empty());

    // Marketing loses its database and starts on an empty one.
    t.suite.stop(Svc::Marketing).await.unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(t.data_dir().join(format!("marketing.db{suffix}")));
    }
    t.suite.restart(Svc::Marketing).await.unwrap();
    t.wait_serving().await;
    capture(&t, lead("r4", "2026-11-03T09:00:00Z")).await;

    // Seq 1 of the new stream is not seq 1 of the old: kpi must read it.
    // Read as is: the test's tokens still name the old stream's seq 3.
    let f = eventually("kpi reads the new marketing stream", || {
        let mut kpi = t.kpi_as_is();
        let old = old.clone();
        async move {
            let req = kpi::GetFunnelRequest {
                start_date: "2026-11-01".into(),
                end_date: "2026-12-01".into(),
                ..Default::default()
            };
            let f = kpi.get_funnel(req).await.ok()?.into_inner().funnel?;
            let m = f.sources.iter().find(|s| s.service == "marketing")?;
            (m.stream_id != old.stream_id && m.applied_seq == 1).then_some(f)
        }
    })
    .await;
    assert_eq!(f.leads, 4, "three from the old stream, one from the new, none twice");

    // And a restart of kpi does not read either stream again.
    t.suite.restart(Svc::Kpi).await.unwrap();
    t.wait_serving().await;
    assert_eq!(t.settled_funnel("2026-11-01", "2026-12-01").await.leads, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sender_that_crashes_with_hand_overs_pending_delivers_them_after_restart() {
    let mut t = TestSuite::start().await;
    for id in ["k1", "k2"] {
        capture(&t, lead(id, "2026-11-02T09:00:00Z")).await;
        quote_request(&t, id, "2026-11-02T09:30:00Z").await;
        in_queue(&t, id).await;
        qualify(&t, id, bant_all(), "2026-11-02T10:00:00Z").await;
    }
    t.suite.stop(Svc::FieldSales).await.unwrap();
    for id in ["k1", "k2"] {
        convert(&t, id, &format!("opp-{id}"), "2026-11-02T11:00:00Z").await;
    }
    // Both conversions are committed with their hand-overs pending, and a
    // delivery has already failed.
    eventually("the hand-overs are pending after a failed delivery", || async {
        let s = t.outbox_stats(Svc::InsideSales, "field-sales").await;
        (s.pending == 2 && s.failed_attempts > 0).then_some(())
    })
    .await;

    // Inside sales dies without draining; its hand-overs exist only in its
    // outbox. Field sales comes back while the sender is still dead.
    t.suite.kill(Svc::InsideSales).await;
    t.suite.restart(Svc::FieldSales).await.unwrap();
    t.suite.restart(Svc::InsideSales).await.unwrap();
    t.wait_serving().await;
    for id in ["k1", "k2"] {
        opportunity(&t, &format!("opp-{id}")).await;
    }
    let done = eventually("the outbox drains after the restart", || async {
        let s = t.outbox_stats(Svc::InsideSales, "field-sales").await;
        (s.pending == 0).then_some(s)
    })
    .await;
    assert_eq!((done.delivered, done.dead_letters), (2, 0));
    let all = t.field_sales.clone().list_opportunities(fs::ListOpportunitiesRequest::default()).await.unwrap();
    assert_eq!(all.into_inner().opportunities.len(), 2, "each exactly once");
    assert_eq!(t.head(Svc::FieldSales).await, 2, "two openings recorded, no duplicates");
    let f = t.settled_funnel("2026-11-01", "2026-12-01").await;
    assert_eq!(f.opportunities, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_reports_not_serving_before_it_stops() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    // A grace period far longer than a health check takes, so the poll below
    // cannot miss it on a slow machine.
    let mut t = TestSuite::start_with(|o| o.shutdown_grace = std::time::Duration::from_secs(3)).await;
    let channel = t.channel(Svc::Kpi);
    let health = HealthClient::new(channel);
    let check = HealthCheckRequest { service: "themodel.kpi.v1.KpiService".into() };
    let status = |mut health: HealthClient<_>, check| async move {
        health.check(check).await.ok().map(|r| r.into_inner().status)
    };
    assert_eq!(status(health.clone(), check.clone()).await, Some(ServingStatus::Serving as i32));
    let started = std::time::Instant::now();
    let (stopped, ()) = tokio::join!(t.suite.stop(Svc::Kpi), async {
        eventually("health turns NOT_SERVING during the grace period", || {
            let (health, check) = (health.clone(), check.clone());
            async move { (status(health, check).await == Some(ServingStatus::NotServing as i32)).then_some(()) }
        })
        .await;
        // Still answering: the grace period is for callers to notice.
        assert!(started.elapsed() < std::time::Duration::from_secs(3));
    });
    stopped.unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_secs(3), "the service waited out its grace period");
}

/// A client holding streams open (a health watch, an ingest stream) does not
/// keep a stopping service alive: both end with UNAVAILABLE once the grace
/// period is over, and the service stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_streams_end_when_the_service_stops() {
    use themodel_proto::marketing::v1 as mk;
    use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let mut t = TestSuite::start_with(|o| o.shutdown_grace = std::time::Duration::from_millis(300)).await;
    let mut health = HealthClient::new(t.channel(Svc::Marketing));
    let watch = HealthCheckRequest { service: "themodel.marketing.v1.MarketingService".into() };
    let mut watching = health.watch(watch).await.unwrap().into_inner();
    assert_eq!(watching.message().await.unwrap().unwrap().status, ServingStatus::Serving as i32);
    // An ingest stream whose client never finishes sending.
    let (_sending, rx) = tokio::sync::mpsc::channel::<mk::IngestBehaviourRequest>(1);
    let mut acks = t.marketing.clone().ingest_behaviour(ReceiverStream::new(rx)).await.unwrap().into_inner();

    let stopped = tokio::time::timeout(std::time::Duration::from_secs(10), t.suite.stop(Svc::Marketing)).await;
    stopped.expect("the service stopped although streams were open").unwrap();

    // The watcher heard NOT_SERVING, then the stream ended with UNAVAILABLE.
    let mut heard = Vec::new();
    let end = loop {
        match watching.message().await {
            Ok(Some(m)) => heard.push(m.status),
            Ok(None) => break None,
            Err(status) => break Some(status.code()),
        }
    };
    assert_eq!(heard, vec![ServingStatus::NotServing as i32]);
    assert_eq!(end, Some(tonic::Code::Unavailable));
    let ingest_end = acks.message().await.unwrap_err();
    assert_eq!(ingest_end.code(), tonic::Code::Unavailable, "{ingest_end:?}");
}
