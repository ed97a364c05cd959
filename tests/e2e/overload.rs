//! Overload and deadlines: beyond its limit a service refuses at once with a
//! retryable RESOURCE_EXHAUSTED and a retry hint, refused calls leave nothing
//! behind, probes are never refused, and a call whose deadline has passed is
//! not executed.

use std::time::Duration;

use themodel_e2e::{Svc, TestSuite};
use themodel_proto::marketing::v1 as mk;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

use crate::flows::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn beyond_the_limit_calls_are_refused_at_once_and_leave_nothing_behind() {
    let t = TestSuite::start_with(|o| o.max_in_flight = 4).await;
    const CALLERS: usize = 400;

    // Several connections, as many client processes would open.
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let channel = t.channel(Svc::Marketing);
            mk::marketing_service_client::MarketingServiceClient::new(channel)
        })
        .collect();
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..CALLERS {
        let mut c = clients[n % clients.len()].clone();
        calls.spawn(async move { (n, c.capture_lead(lead(&format!("burst-{n}"), "2026-11-02T09:00:00Z")).await) });
    }
    let health = HealthClient::new(t.channel(Svc::Marketing));
    let probe = tokio::spawn(async move {
        let mut health = health;
        health.check(HealthCheckRequest { service: String::new() }).await.map(|r| r.into_inner().status)
    });

    let (mut accepted, mut refused) = (Vec::new(), Vec::new());
    while let Some(joined) = calls.join_next().await {
        let (n, result) = joined.unwrap();
        match result {
            Ok(_) => accepted.push(n),
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "call {n}: {status:?}");
                let hint = status.get_error_details().retry_info().and_then(|r| r.retry_delay);
                assert!(hint.is_some_and(|d| d > Duration::ZERO), "call {n} has a retry hint: {status:?}");
                refused.push(n);
            }
        }
    }
    assert_eq!(probe.await.unwrap().unwrap(), ServingStatus::Serving as i32, "probes are never refused");
    assert!(!refused.is_empty(), "{CALLERS} callers against a limit of 4 meet a refusal");
    assert!(!accepted.is_empty());

    // Accepted calls stored their lead; refused ones stored nothing, and the
    // same request, retried, is taken once.
    let mut m = t.marketing.clone();
    for &n in &accepted {
        m.get_lead(mk::GetLeadRequest { lead_id: format!("burst-{n}") }).await.unwrap();
    }
    for &n in &refused {
        let err = m.get_lead(mk::GetLeadRequest { lead_id: format!("burst-{n}") }).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "refused call {n} left nothing");
        capture_when_admitted(&t, lead(&format!("burst-{n}"), "2026-11-02T09:00:00Z")).await;
    }
    let f = t.settled_funnel("2026-11-01", "2026-12-01").await;
    assert_eq!(f.leads, CALLERS as i64, "every lead once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_whose_deadline_has_passed_is_not_executed() {
    use sqlx::Connection;
    let t = TestSuite::start().await;
    let mut m = t.marketing.clone();
    capture(&t, lead("early", "2026-11-02T09:00:00Z")).await;

    // Another process holds marketing's write lock, so the writer waits
    // inside its transaction past the caller's deadline.
    let url = format!("sqlite://{}", t.data_dir().join("marketing.db").display());
    let mut blocker = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut blocker).await.unwrap();
    let mut req = tonic::Request::new(lead("late", "2026-11-02T09:00:00Z"));
    req.set_timeout(Duration::from_millis(300));
    let err = m.capture_lead(req).await.unwrap_err();
    assert!(matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled), "{err:?}");
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();

    // The next write goes through the same writer: once it has landed, the
    // late one would have too, had it been executed.
    capture(&t, lead("on-time", "2026-11-02T09:00:00Z")).await;
    let err = m.get_lead(mk::GetLeadRequest { lead_id: "late".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "the expired call was not executed");

    // With time to spare the same request is executed.
    let mut req = tonic::Request::new(lead("late", "2026-11-02T09:00:00Z"));
    req.set_timeout(Duration::from_secs(10));
    m.capture_lead(req).await.unwrap();
}

/// Thousands of refusals on one connection: HTTP/2 servers close a
/// connection that resets too many streams, so a refusal sent while its
/// request was still arriving (a reset) would, after enough of them, fail the
/// calls that had been accepted on that connection with a transport error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_run_of_refusals_leaves_the_connection_working() {
    let t = TestSuite::start_with(|o| o.max_in_flight = 1).await;
    capture_when_admitted(&t, lead("read-me", "2026-11-02T09:00:00Z")).await;
    const REFUSALS: u64 = 30_000;
    let channel = t.channel(Svc::Marketing);
    let client = mk::marketing_service_client::MarketingServiceClient::new(channel);
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (mut c, refused) = (client.clone(), refused.clone());
        callers.spawn(async move {
            let mut accepted = 0u64;
            while refused.load(std::sync::atomic::Ordering::Relaxed) < REFUSALS {
                match c.get_lead(mk::GetLeadRequest { lead_id: "read-me".into() }).await {
                    Ok(_) => accepted += 1,
                    Err(s) if s.code() == Code::ResourceExhausted => {
                        refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(s) => return Err(s),
                }
            }
            Ok(accepted)
        });
    }
    let mut accepted = 0;
    while let Some(joined) = callers.join_next().await {
        accepted += joined.unwrap().expect("only RESOURCE_EXHAUSTED refusals, never a broken connection");
    }
    assert!(accepted > 0, "some calls were accepted between the refusals");
}

/// Captures a lead as a well-behaved client does under a tight limit: a
/// refusal is retried after the hinted delay. The suite's own calls (kpi
/// reading marketing's events) count against the limit too, so even a single
/// test caller can meet a refusal.
async fn capture_when_admitted(t: &TestSuite, req: mk::CaptureLeadRequest) {
    let mut m = t.marketing.clone();
    for _ in 0..100 {
        match m.capture_lead(req.clone()).await {
            Ok(_) => return,
            Err(s) if s.code() == Code::ResourceExhausted => {
                let hint = s.get_error_details().retry_info().and_then(|r| r.retry_delay);
                tokio::time::sleep(hint.unwrap_or(Duration::from_millis(100))).await;
            }
            Err(s) => panic!("capture {}: {s:?}", req.lead_id),
        }
    }
    panic!("capture {} was refused 100 times in a row", req.lead_id);
}
