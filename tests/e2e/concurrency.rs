//! Concurrent writes to one entity lose nothing.

use themodel_e2e::TestSuite;
use themodel_proto::marketing::v1 as mk;

use crate::flows::*;

/// Fires `n` touches at one lead at once; every one must count.
pub async fn concurrent_touches_on_one_lead(t: &TestSuite, n: usize) {
    let mut req = lead("busy", "2026-11-02T09:00:00Z");
    req.company_size = 0;
    capture(t, req).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..n {
        let mut m = t.marketing.clone();
        calls.spawn(async move {
            m.record_touch(mk::RecordTouchRequest {
                request_id: format!("busy-{i}"),
                lead_id: "busy".into(),
                kind: mk::TouchKind::EmailOpen as i32,
                ..Default::default()
            })
            .await
        });
    }
    while let Some(r) = calls.join_next().await {
        r.unwrap().unwrap();
    }
    let l = t
        .marketing
        .clone()
        .get_lead(mk::GetLeadRequest { lead_id: "busy".into() })
        .await
        .unwrap()
        .into_inner()
        .lead
        .unwrap();
    assert_eq!(l.touch_count as usize, n, "no touch lost to a concurrent one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_touches_all_count() {
    let t = TestSuite::start().await;
    concurrent_touches_on_one_lead(&t, 40).await;
}
