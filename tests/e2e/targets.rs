//! Targets per period: versions, the chain rule, and attainment, on the
//! autumn history (see `views.rs`) with the suite's clock at 2027-01-15.

use themodel_e2e::TestSuite;
use themodel_proto::common::v1::{Department, Money};
use themodel_proto::kpi::v1 as kpi;
use tonic::Code;
use tonic_types::StatusExt;

use crate::flows::*;
use crate::views::autumn;

fn jpy(units: i64) -> Option<Money> {
    Some(yen(units))
}

fn stage(stage: kpi::Stage, count: i64) -> kpi::StageTarget {
    kpi::StageTarget { stage: stage as i32, count }
}

/// January 2027, named as the month of a day in it.
fn january(request_id: &str) -> kpi::SetTargetsRequest {
    kpi::SetTargetsRequest {
        request_id: request_id.into(),
        start_date: "2027-01-10".into(),
        period_unit: kpi::PeriodUnit::Month as i32,
        set_by: "vp-revenue".into(),
        ..Default::default()
    }
}

/// (stage, department, count, derived)
fn targets(set: &kpi::TargetSet) -> Vec<(i32, &str, i64, bool)> {
    set.targets.iter().map(|t| (t.stage, t.department.as_str(), t.count, t.derived)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn targets_derived_by_the_chain_rule_versioned_and_attained() {
    let t = TestSuite::start().await;
    autumn(&t).await;
    targets_after_autumn(&t).await;
}

/// The targets scenario, on a suite that has run [`autumn`].
pub async fn targets_after_autumn(t: &TestSuite) {
    // Two January leads so far (the clock reads January 15).
    for id in ["jan-1", "jan-2"] {
        capture(t, lead(id, "2027-01-05T09:00:00Z")).await;
    }
    t.settled_funnel("2026-10-01", "2027-02-01").await;
    let mut k = t.kpi.clone();

    // 12M yen at 1.2M a deal is 10 wins. Over October and November (2 won
    // of 3 closed, 3 opportunities from 4 leads) that needs 15
    // opportunities and 20 leads; no visitors were tracked, so the visitors
    // target cannot be derived: refused, naming the rate.
    let mut req = january("jan-v1");
    req.revenue = jpy(12_000_000);
    req.average_deal_size = jpy(1_200_000);
    req.derive_upstream = true;
    req.trailing_start_date = "2026-10-01".into();
    req.trailing_end_date = "2026-12-01".into();
    let err = k.set_targets(req.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("acquisition rate"), "{}", err.message());

    // With marketing's visitors target given, the rest follows.
    req.targets = vec![stage(kpi::Stage::Visitors, 2000)];
    let v1 = k.set_targets(req.clone()).await.unwrap().into_inner().targets.unwrap();
    assert_eq!((v1.start_date.as_str(), v1.end_date.as_str(), v1.version), ("2027-01-01", "2027-02-01", 1));
    assert_eq!(
        targets(&v1),
        [
            (kpi::Stage::Visitors as i32, "marketing", 2000, false),
            (kpi::Stage::Leads as i32, "marketing", 20, true),
            (kpi::Stage::Opportunities as i32, "inside-sales", 15, true),
            (kpi::Stage::Wins as i32, "field-sales", 10, true),
        ]
    );
    assert_eq!(v1.targets[2].rate, Some(2.0 / 3.0), "opportunities = ⌈wins / win rate⌉");
    assert_eq!((v1.set_by.as_str(), v1.trailing_start_date.as_str()), ("vp-revenue", "2026-10-01"));
    // The same request again is the same version, not a second one.
    let again = k.set_targets(req).await.unwrap().into_inner().targets.unwrap();
    assert_eq!(again, v1);

    // A second version replaces it: inside sales' lead target raised, and
    // customer success' renewals added.
    let mut req = january("jan-v2");
    req.targets = vec![stage(kpi::Stage::Leads, 25), stage(kpi::Stage::Retained, 3)];
    req.note = "more leads".into();
    let v2 = k.set_targets(req).await.unwrap().into_inner().targets.unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(
        targets(&v2),
        [
            (kpi::Stage::Leads as i32, "marketing", 25, false),
            (kpi::Stage::Retained as i32, "customer-success", 3, false)
        ]
    );

    // Every version, newest first, a page at a time.
    let list = |page_token: String| {
        let mut k = k.clone();
        let req = kpi::ListTargetsRequest {
            start_date: "2027-01-01".into(),
            end_date: "2027-02-01".into(),
            page_size: 1,
            page_token,
            ..Default::default()
        };
        async move { k.list_targets(req).await.unwrap().into_inner() }
    };
    let first = list(String::new()).await;
    assert_eq!(first.targets, [v2]);
    let second = list(first.next_page_token).await;
    assert_eq!(second.targets, [v1]);
    assert_eq!(second.next_page_token, "");

    // January so far: 15 of 31 days; 2 leads of 25, where a steady pace
    // would have reached 25 × 15/31.
    let a = k
        .get_attainment(kpi::GetAttainmentRequest {
            start_date: "2027-01-01".into(),
            end_date: "2027-02-01".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.targets.as_ref().map(|s| s.version), Some(2));
    assert_eq!((a.elapsed_days, a.period_days), (15, 31));
    let leads = &a.stages[0];
    assert_eq!((leads.target, leads.actual), (25, 2));
    assert!((leads.attainment - 0.08).abs() < 1e-12);
    assert!((leads.expected - 25.0 * 15.0 / 31.0).abs() < 1e-9);
    assert!(!leads.on_pace);
    assert_eq!(a.revenue, None, "version 2 has no revenue target");

    // November, over: wins and revenue met, opportunities short.
    let november = kpi::SetTargetsRequest {
        request_id: "nov".into(),
        start_date: "2026-11-01".into(),
        end_date: "2026-12-01".into(),
        targets: vec![stage(kpi::Stage::Leads, 4), stage(kpi::Stage::Opportunities, 3), stage(kpi::Stage::Wins, 2)],
        revenue: jpy(2_400_000),
        ..Default::default()
    };
    k.set_targets(november).await.unwrap();
    let a = k
        .get_attainment(kpi::GetAttainmentRequest {
            start_date: "2026-11-15".into(),
            period_unit: kpi::PeriodUnit::Month as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((a.elapsed_days, a.period_days), (30, 30));
    let got: Vec<_> = a.stages.iter().map(|s| (s.department.as_str(), s.actual, s.on_pace)).collect();
    assert_eq!(got, [("marketing", 2, false), ("inside-sales", 2, false), ("field-sales", 2, true)]);
    let revenue = a.revenue.unwrap();
    assert_eq!((revenue.actual, revenue.attainment, revenue.on_pace), (jpy(2_400_000), 1.0, true));
    assert_eq!(revenue.expected, jpy(2_400_000));

    // November's bottleneck, against its targets: 4 leads planned at 3/4
    // converted and 2/3 won is 2 wins; 2 leads came, converted and won as
    // planned or better: too few came in.
    let nov = kpi::GetBottleneckRequest {
        start_date: "2026-11-01".into(),
        end_date: "2026-12-01".into(),
        ..Default::default()
    };
    let b = k.get_bottleneck(nov.clone()).await.unwrap().into_inner();
    assert_eq!((b.basis, b.targets_version), (kpi::PlanBasis::Targets as i32, 1));
    assert_eq!((b.bottleneck, b.problem), (kpi::Factor::Leads as i32, kpi::Problem::Volume as i32));
    let ratios: Vec<f64> = b.factors.iter().map(|f| f.ratio.unwrap()).collect();
    assert!((ratios[0] - 0.5).abs() < 1e-12 && (ratios[1] - 4.0 / 3.0).abs() < 1e-12, "{ratios:?}");
    assert!((b.planned_wins.unwrap() - 2.0).abs() < 1e-12, "the planned wins are the wins target");
    assert_eq!(b.baseline_start_date, "");
    // A baseline asked for is used instead.
    let against_october = kpi::GetBottleneckRequest {
        baseline_start_date: "2026-10-01".into(),
        baseline_end_date: "2026-11-01".into(),
        ..nov
    };
    let b = k.get_bottleneck(against_october).await.unwrap().into_inner();
    assert_eq!((b.basis, b.baseline_start_date.as_str()), (kpi::PlanBasis::Baseline as i32, "2026-10-01"));

    // Version 2 of November, with capacities: inside sales could take 2 × 2
    // promising leads and got 1; field sales 1 × 2 opportunities and got 2;
    // customer success 1 × 5 won deals and got 2.
    let capacity = |department: Department, owners, items_per_owner| kpi::Capacity {
        department: department as i32,
        owners,
        items_per_owner,
    };
    let november = kpi::SetTargetsRequest {
        request_id: "nov-2".into(),
        start_date: "2026-11-01".into(),
        end_date: "2026-12-01".into(),
        targets: vec![stage(kpi::Stage::Leads, 2), stage(kpi::Stage::Opportunities, 2), stage(kpi::Stage::Wins, 2)],
        capacities: vec![
            capacity(Department::InsideSales, 2, 2),
            capacity(Department::FieldSales, 1, 2),
            capacity(Department::CustomerSuccess, 1, 5),
        ],
        ..Default::default()
    };
    k.set_targets(november).await.unwrap();
    // Against the first half of November: the month's opportunities target
    // was met while the win rate on them fell from 2/2 to 2/3.
    let a = k
        .get_attainment(kpi::GetAttainmentRequest {
            start_date: "2026-11-01".into(),
            period_unit: kpi::PeriodUnit::Month as i32,
            baseline_start_date: "2026-11-01".into(),
            baseline_end_date: "2026-11-16".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let starvation: Vec<_> =
        a.starvation.iter().map(|s| (s.capacity, s.received, s.idle_capacity, s.starved)).collect();
    assert_eq!(starvation, [(4, 1, 0.75, true), (2, 2, 0.0, false), (5, 2, 0.6, true)]);
    let received: Vec<i32> = a.starvation.iter().map(|s| s.received_stage).collect();
    assert_eq!(received, [kpi::Stage::PromisingLeads, kpi::Stage::Opportunities, kpi::Stage::Wins].map(|s| s as i32));
    let local: Vec<_> = a
        .local_optimisation
        .iter()
        .map(|l| (l.next_rate.as_str(), l.target_met, l.rate, l.baseline_rate, l.locally_optimised))
        .collect();
    assert_eq!(
        local,
        [
            ("opportunity", true, Some(1.0), Some(1.0), false),
            ("win", true, Some(2.0 / 3.0), Some(1.0), true),
            ("renewal", true, None, None, false),
        ]
    );
    assert_eq!((a.baseline_start_date.as_str(), a.baseline_end_date.as_str()), ("2026-11-01", "2026-11-16"));

    // A period without targets has no attainment.
    let err = k
        .get_attainment(kpi::GetAttainmentRequest {
            start_date: "2026-12-01".into(),
            end_date: "2027-01-01".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_targets_are_refused_field_by_field() {
    let t = TestSuite::start().await;
    let mut k = t.kpi.clone();
    let fields = |e: tonic::Status| -> Vec<String> {
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        e.get_error_details().bad_request().unwrap().field_violations.iter().map(|v| v.field.clone()).collect()
    };
    let err = k.set_targets(january("nothing")).await.unwrap_err();
    assert_eq!(fields(err), ["targets"]);

    let mut req = january("bad");
    req.targets = vec![
        stage(kpi::Stage::Unspecified, 5),
        stage(kpi::Stage::Wins, 0),
        stage(kpi::Stage::Leads, 10),
        stage(kpi::Stage::Leads, 12),
    ];
    req.average_deal_size = jpy(1_000);
    req.trailing_start_date = "2026-10-01".into();
    req.set_by = "x".repeat(201);
    let err = k.set_targets(req).await.unwrap_err();
    let details = err.get_error_details().bad_request().unwrap().field_violations.clone();
    assert!(details[0].description.contains("STAGE_RETAINED"), "{details:?}");
    assert_eq!(
        fields(err),
        [
            "targets[0].stage",
            "targets[1].count",
            "targets[3].stage",
            "average_deal_size",
            "trailing_start_date",
            "set_by"
        ]
    );

    let mut req = january("many");
    req.targets = vec![stage(kpi::Stage::Leads, 1); 10_000];
    let v = fields(k.set_targets(req).await.unwrap_err());
    assert_eq!(v[0], "targets");
    assert!(v.len() <= 7, "the list is refused for its length, not entry by entry: {} violations", v.len());

    // Capacities: a receiving department once each, with sensible numbers.
    let mut req = january("capacity");
    req.targets = vec![stage(kpi::Stage::Leads, 10)];
    let capacity = |department: Department, owners, items_per_owner| kpi::Capacity {
        department: department as i32,
        owners,
        items_per_owner,
    };
    req.capacities = vec![
        capacity(Department::Marketing, 1, 1),
        capacity(Department::FieldSales, 0, 1),
        capacity(Department::FieldSales, 1, 2_000_000_000),
    ];
    let err = k.set_targets(req).await.unwrap_err();
    let details = err.get_error_details().bad_request().unwrap().field_violations.clone();
    assert!(details[0].description.contains("DEPARTMENT_CUSTOMER_SUCCESS"), "{details:?}");
    assert_eq!(
        fields(err),
        [
            "capacities[0].department",
            "capacities[1].owners",
            "capacities[2].department",
            "capacities[2].items_per_owner"
        ]
    );

    // Deriving wins from revenue needs the deal size, in the same currency.
    let mut req = january("derive");
    req.revenue = jpy(1_000_000);
    req.derive_upstream = true;
    assert_eq!(fields(k.set_targets(req.clone()).await.unwrap_err()), ["average_deal_size"]);
    req.average_deal_size = Some(Money { currency_code: "USD".into(), units: 100, nanos: 0 });
    assert_eq!(fields(k.set_targets(req).await.unwrap_err()), ["average_deal_size.currency_code"]);

    // Nothing was set by any of it.
    let list = k
        .list_targets(kpi::ListTargetsRequest {
            start_date: "2027-01-01".into(),
            end_date: "2027-02-01".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.targets, []);
}
