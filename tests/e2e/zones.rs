//! Periods read in the time zone each request names: one history, read in
//! zones an hour, half an hour and three quarters of an hour off UTC (and
//! across a daylight-saving change), against counts worked out here from the
//! events' moments.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use themodel_e2e::{Svc, TestSuite};
use themodel_proto::kpi::v1 as kpi;
use tonic::Code;
use tonic_types::StatusExt;

use crate::flows::*;

/// Leads (id, captured at, handed over at); each lead's source is its id.
const LEADS: [(&str, &str, Option<&str>); 9] = [
    ("l1", "2026-10-31T18:40:00Z", Some("2026-11-01T10:00:00Z")),
    ("l2", "2026-10-31T23:50:00Z", None),
    ("l3", "2026-11-01T00:10:00Z", None),
    // Midnight in New York on the day its clocks go back.
    ("l4", "2026-11-01T04:00:00Z", None),
    ("l5", "2026-11-15T12:00:00Z", Some("2026-11-15T13:00:00Z")),
    ("l6", "2026-11-30T18:20:00Z", Some("2026-11-30T19:00:00Z")),
    ("l7", "2026-11-30T23:00:00Z", Some("2026-12-01T02:00:00Z")),
    ("l8", "2026-12-01T03:30:00Z", None),
    ("l9", "2026-12-01T11:00:00Z", None),
];

/// Visits (visitor, at); l1 came as v1.
const VISITS: [(&str, &str); 8] = [
    ("v1", "2026-10-31T20:00:00Z"),
    ("v1", "2026-11-10T10:00:00Z"),
    ("v2", "2026-11-30T19:00:00Z"),
    ("v3", "2026-12-01T04:00:00Z"),
    ("v4", "2026-11-01T00:05:00Z"),
    ("v4", "2026-11-01T23:55:00Z"),
    ("v5", "2026-11-15T10:00:00Z"),
    ("v5", "2026-11-30T22:00:00Z"),
];

const ZONES: [&str; 6] =
    ["UTC", "Asia/Kolkata", "America/New_York", "Asia/Kathmandu", "Pacific/Chatham", "America/St_Johns"];

/// Periods between these dates hold whole UTC days, runs of 8 and of 64
/// days (the first and the last date are months away from the events).
const DATES: [&str; 9] = [
    "2026-06-01",
    "2026-10-31",
    "2026-11-01",
    "2026-11-02",
    "2026-11-15",
    "2026-11-30",
    "2026-12-01",
    "2026-12-02",
    "2027-03-01",
];

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn date(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

/// The date the moment `s` falls on in `zone`.
fn local(s: &str, zone: &str) -> NaiveDate {
    at(s).with_timezone(&zone.parse::<Tz>().unwrap()).date_naive()
}

/// What each count should be, from the events' local dates.
struct Expected {
    /// Leads captured in the period, per source.
    leads: BTreeMap<String, i64>,
    /// Hand-overs in the period.
    promising: i64,
    visitors: i64,
}

fn expected(zone: &str, start: &str, end: &str) -> Expected {
    let within = |s: &str| (date(start)..date(end)).contains(&local(s, zone));
    let leads = LEADS.iter().filter(|(_, c, _)| within(c)).map(|(id, ..)| ((*id).to_owned(), 1)).collect();
    let promising = LEADS.iter().filter(|(.., p)| p.is_some_and(within)).count() as i64;
    let visitors: BTreeSet<&str> = VISITS.iter().filter(|(_, v)| within(v)).map(|(id, _)| *id).collect();
    Expected { leads, promising, visitors: visitors.len() as i64 }
}

/// The cohort of `[start, end)`: (leads, handed over by the end of `as_of`).
fn expected_cohort(zone: &str, start: &str, end: &str, as_of: Option<&str>) -> (i64, i64) {
    let within = |s: &str| (date(start)..date(end)).contains(&local(s, zone));
    let by_then = |s: &str| as_of.is_none_or(|d| local(s, zone) <= date(d));
    let cohort: Vec<_> = LEADS.iter().filter(|(_, c, _)| within(c) && by_then(c)).collect();
    let handed_over = cohort.iter().filter(|(.., p)| p.is_some_and(by_then)).count() as i64;
    (cohort.len() as i64, handed_over)
}

fn request(zone: &str, start: &str, end: &str) -> kpi::GetFunnelRequest {
    kpi::GetFunnelRequest {
        start_date: start.into(),
        end_date: end.into(),
        time_zone: zone.into(),
        split_by: kpi::Dimension::Source as i32,
        ..Default::default()
    }
}

pub async fn history(t: &TestSuite) {
    for (id, captured, handed_over) in LEADS {
        let mut req = lead(id, captured);
        req.source = id.into();
        if id == "l1" {
            req.visitor_id = "v1".into();
        }
        capture(t, req).await;
        if let Some(when) = handed_over {
            assert!(quote_request(t, id, when).await.handed_over, "{id} handed over");
        }
    }
    for (visitor, when) in VISITS {
        visit(t, visitor, when).await;
    }
}

/// [`history`] read in each of [`ZONES`].
pub async fn assert_every_zone(t: &TestSuite) {
    // Settled once; every read below is of the same counts.
    t.settled_funnel("2026-11-01", "2026-12-01").await;
    for zone in ZONES {
        assert_every_period(t, Some(zone), zone).await;
    }
}

/// Every period between [`DATES`], in `zone` (`None`: the request names
/// none), against [`expected`] in `expected_zone`.
async fn assert_every_period(t: &TestSuite, zone: Option<&str>, expected_zone: &str) {
    let mut k = t.kpi.clone();
    for (i, start) in DATES.iter().enumerate() {
        for end in &DATES[i + 1..] {
            let what = format!("[{start}, {end}) in {expected_zone}");
            let e = expected(expected_zone, start, end);
            let flow = k.get_funnel(request(zone.unwrap_or(""), start, end)).await.unwrap().into_inner();
            let total = flow.funnel.unwrap();
            assert_eq!(total.time_zone, expected_zone, "{what}");
            assert_eq!(total.leads, e.leads.len() as i64, "{what}: leads");
            assert_eq!(total.promising_leads, e.promising, "{what}: promising leads");
            assert_eq!(total.visitors, e.visitors, "{what}: visitors");
            let split: BTreeMap<String, i64> = flow
                .splits
                .iter()
                .map(|s| (s.value.clone(), s.funnel.as_ref().unwrap().leads))
                .filter(|(_, leads)| *leads > 0)
                .collect();
            assert_eq!(split, e.leads, "{what}: which leads");

            for as_of in [None, Some(*start), DATES.get(i + 1).copied()] {
                let mut req = request(zone.unwrap_or(""), start, end);
                req.view = kpi::View::Cohort as i32;
                req.as_of_date = as_of.unwrap_or_default().into();
                let f = k.get_funnel(req).await.unwrap().into_inner().funnel.unwrap();
                assert_eq!(
                    (f.leads, f.promising_leads),
                    expected_cohort(expected_zone, start, end, as_of),
                    "{what}, cohort as of {as_of:?}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_request_reads_its_days_in_the_time_zone_it_names() {
    let mut t = TestSuite::start().await;
    history(&t).await;
    assert_every_zone(&t).await;

    // November in Kolkata is [Oct 31 18:30, Nov 30 18:30) UTC: l1 and l2
    // are in it, and l6 (23:50 on Nov 30 there); l7 is not.
    let nov = t.kpi.clone().get_funnel(request("Asia/Kolkata", "2026-11-01", "2026-12-01")).await.unwrap();
    let values: Vec<String> = nov.into_inner().splits.into_iter().map(|s| s.value).collect();
    assert_eq!(values, ["l1", "l2", "l3", "l4", "l5", "l6"]);

    // The journey's first visit, on the date of the zone asked for.
    let journey = |zone: &str| {
        let req = kpi::GetJourneyRequest { lead_id: "l1".into(), time_zone: zone.into() };
        let mut k = t.kpi.clone();
        async move { k.get_journey(req).await.unwrap().into_inner() }
    };
    assert_eq!(journey("").await.first_visit_date, "2026-10-31");
    let kolkata = journey("Asia/Kolkata").await;
    assert_eq!((kolkata.first_visit_date.as_str(), kolkata.time_zone.as_str()), ("2026-11-01", "Asia/Kolkata"));

    // A deployment in another zone reads its requests without a zone in
    // it, from the same stored counts: nothing is rebuilt.
    t.suite.set_time_zone("Asia/Kathmandu");
    t.suite.restart(Svc::Kpi).await.unwrap();
    t.wait_serving().await;
    assert_every_period(&t, None, "Asia/Kathmandu").await;
    assert_every_period(&t, Some("America/St_Johns"), "America/St_Johns").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_time_zone_is_refused_on_every_read_that_takes_one() {
    let t = TestSuite::start().await;
    let mut k = t.kpi.clone();
    let zone = "Mars/Olympus_Mons";
    // November in `zone`, through one period RPC.
    macro_rules! november_in {
        ($rpc:ident, $request:ident, $zone:expr) => {
            k.$rpc(kpi::$request {
                start_date: "2026-11-01".into(),
                end_date: "2026-12-01".into(),
                time_zone: $zone.into(),
                ..Default::default()
            })
            .await
            .unwrap_err()
        };
    }
    let refusals = [
        november_in!(get_funnel, GetFunnelRequest, zone),
        november_in!(get_velocity, GetVelocityRequest, zone),
        november_in!(get_retention, GetRetentionRequest, zone),
        november_in!(get_recycling, GetRecyclingRequest, zone),
        november_in!(get_bottleneck, GetBottleneckRequest, zone),
        november_in!(plan_from_revenue, PlanFromRevenueRequest, zone),
        november_in!(get_attribute_calibration, GetAttributeCalibrationRequest, zone),
        k.get_journey(kpi::GetJourneyRequest { lead_id: "l1".into(), time_zone: zone.into() }).await.unwrap_err(),
        // Lower case is not the IANA name.
        november_in!(get_funnel, GetFunnelRequest, "asia/kolkata"),
    ];
    for status in refusals {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let violations = status.get_details_bad_request().expect("field violations").field_violations;
        let zone = violations.iter().find(|v| v.field == "time_zone").expect("a time_zone violation");
        assert!(zone.description.contains("IANA name such as UTC"), "{}", zone.description);
    }
}
