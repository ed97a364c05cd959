//! The plan back from revenue and the bottleneck, on small histories whose
//! answers are worked out by hand.

use themodel_e2e::TestSuite;
use themodel_proto::common::v1::Money;
use themodel_proto::kpi::v1 as kpi;
use tonic::Code;
use tonic_types::StatusExt;

use crate::flows::*;
use crate::views::autumn;

fn jpy(units: i64) -> Option<Money> {
    Some(yen(units))
}

fn plan_request() -> kpi::PlanFromRevenueRequest {
    kpi::PlanFromRevenueRequest {
        revenue_target: jpy(12_000_000),
        average_deal_size: jpy(1_200_000),
        start_date: "2027-01-01".into(),
        end_date: "2027-02-01".into(),
        trailing_start_date: "2026-10-01".into(),
        trailing_end_date: "2026-12-01".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_plan_back_from_a_revenue_target() {
    let t = TestSuite::start().await;
    autumn(&t).await;
    t.settled_funnel("2026-10-01", "2026-12-01").await;
    let mut k = t.kpi.clone();

    // October and November: 4 leads, 3 opportunities, 2 wins and 1 loss, no
    // visits. 12M at 1.2M a deal is 10 wins; at a win rate of 2/3 that is
    // ⌈15⌉ opportunities; at 3/4 opportunities per lead, 20 leads; with no
    // visitors the acquisition rate is unknown, and so are the visitors.
    let p = k.plan_from_revenue(plan_request()).await.unwrap().into_inner();
    let needed: Vec<_> = p.stages.iter().map(|s| (s.stage, s.needed)).collect();
    assert_eq!(
        needed,
        [
            (kpi::Stage::Wins as i32, Some(10)),
            (kpi::Stage::Opportunities as i32, Some(15)),
            (kpi::Stage::Leads as i32, Some(20)),
            (kpi::Stage::Visitors as i32, None),
        ]
    );
    assert_eq!(p.stages[1].rate, Some(2.0 / 3.0));
    assert_eq!(p.stages[1].rate_source, kpi::RateSource::Trailing as i32);
    assert!(p.stages[3].unknown_reason.contains("acquisition rate is unknown"), "{:?}", p.stages[3]);
    // Run-rate: 2 wins in 61 days is 2 × 31/61 in January.
    let wins = &p.stages[0];
    assert!((wins.run_rate - 2.0 * 31.0 / 61.0).abs() < 1e-9);
    assert!((wins.gap.unwrap() - (10.0 - 2.0 * 31.0 / 61.0)).abs() < 1e-9);
    assert_eq!(p.stages[3].gap, None);
    assert_eq!((p.start_date.as_str(), p.end_date.as_str()), ("2027-01-01", "2027-02-01"));
    // The same plan, its period named as the month of a day in it.
    let by_month = kpi::PlanFromRevenueRequest {
        start_date: "2027-01-20".into(),
        end_date: String::new(),
        period_unit: kpi::PeriodUnit::Month as i32,
        ..plan_request()
    };
    assert_eq!(k.plan_from_revenue(by_month).await.unwrap().into_inner(), p);

    // Given rates replace trailing ones.
    let mut req = plan_request();
    req.acquisition_rate = Some(0.1);
    req.win_rate = Some(0.5);
    let p = k.plan_from_revenue(req).await.unwrap().into_inner();
    let needed: Vec<_> = p.stages.iter().map(|s| s.needed).collect();
    assert_eq!(needed, [Some(10), Some(20), Some(27), Some(270)], "⌈20 × 4/3⌉ = 27, ⌈27 / 0.1⌉ = 270");
    assert_eq!(p.stages[3].rate_source, kpi::RateSource::Given as i32);

    // The window defaults to the 90 days before the period.
    let mut req = plan_request();
    req.trailing_start_date = String::new();
    req.trailing_end_date = String::new();
    let p = k.plan_from_revenue(req).await.unwrap().into_inner();
    assert_eq!((p.trailing_start_date.as_str(), p.trailing_end_date.as_str()), ("2026-10-03", "2027-01-01"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plan_refuses_what_it_cannot_compute_with() {
    let t = TestSuite::start().await;
    let mut k = t.kpi.clone();
    let fields = |e: tonic::Status| {
        assert_eq!(e.code(), Code::InvalidArgument);
        e.get_error_details().bad_request().map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
    };
    let mut req = plan_request();
    req.revenue_target = None;
    req.average_deal_size = Some(Money { currency_code: "USD".into(), units: 0, nanos: 0 });
    req.win_rate = Some(1.5);
    req.opportunity_rate = Some(f64::NAN);
    req.trailing_end_date = String::new();
    let err = k.plan_from_revenue(req).await.unwrap_err();
    assert_eq!(
        fields(err),
        Some(vec![
            "revenue_target".to_owned(),
            "average_deal_size".into(),
            "trailing_end_date".into(),
            "win_rate".into(),
            "opportunity_rate".into(),
        ])
    );
    let mut req = plan_request();
    req.average_deal_size = Some(Money { currency_code: "USD".into(), units: 1000, nanos: 0 });
    assert_eq!(
        fields(k.plan_from_revenue(req).await.unwrap_err()),
        Some(vec!["average_deal_size.currency_code".to_owned()])
    );
    // More wins than a counter holds.
    let mut req = plan_request();
    req.revenue_target = jpy(i64::MAX);
    req.average_deal_size = Some(Money { currency_code: "JPY".into(), units: 0, nanos: 1 });
    assert_eq!(fields(k.plan_from_revenue(req).await.unwrap_err()), Some(vec!["revenue_target".to_owned()]));
}

/// October: four leads, two converted, one won and one lost. November: four
/// leads, one converted and won. December: nothing.
async fn two_months(t: &TestSuite) {
    let convert_and_close = async |id: &str, day: &str, won: bool| {
        in_queue(t, id).await;
        qualify(t, id, bant_all(), &format!("{day}T10:00:00Z")).await;
        let opp = format!("opp-{id}");
        convert(t, id, &opp, &format!("{day}T10:30:00Z")).await;
        opportunity(t, &opp).await;
        if won {
            walk_to_approval(t, &opp, &format!("{day}T11:00:00Z")).await;
            close_won(t, &opp, &format!("acct-{id}"), &format!("{day}T12:00:00Z")).await;
        } else {
            close_lost(t, &opp, "lost_price", &format!("{day}T12:00:00Z")).await;
        }
    };
    for (month, n) in [("2026-10", 4), ("2026-11", 4)] {
        for i in 0..n {
            let id = format!("{month}-{i}");
            capture(t, lead(&id, &format!("{month}-0{}T09:00:00Z", i + 1))).await;
            quote_request(t, &id, &format!("{month}-0{}T09:30:00Z", i + 1)).await;
        }
    }
    convert_and_close("2026-10-0", "2026-10-10", true).await;
    convert_and_close("2026-10-1", "2026-10-11", false).await;
    convert_and_close("2026-11-0", "2026-11-10", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bottleneck_is_a_rate_or_a_volume_problem() {
    let t = TestSuite::start().await;
    two_months(&t).await;
    t.settled_funnel("2026-10-01", "2027-01-01").await;
    let mut k = t.kpi.clone();
    let bottleneck = |start: &str, end: &str, base_start: &str, base_end: &str| {
        let mut k = k.clone();
        let req = kpi::GetBottleneckRequest {
            start_date: start.into(),
            end_date: end.into(),
            baseline_start_date: base_start.into(),
            baseline_end_date: base_end.into(),
            ..Default::default()
        };
        async move { k.get_bottleneck(req).await.unwrap().into_inner() }
    };

    // November against October: as many leads (4 against 4 × 30/31), but
    // one in four converted where two did: a rate problem in inside sales.
    let nov = bottleneck("2026-11-01", "2026-12-01", "2026-10-01", "2026-11-01").await;
    let factors: Vec<_> = nov.factors.iter().map(|f| f.factor).collect();
    assert_eq!(
        factors,
        [kpi::Factor::Leads as i32, kpi::Factor::OpportunityRate as i32, kpi::Factor::WinRate as i32],
        "no visitors tracked: the chain starts at leads"
    );
    assert_eq!(nov.bottleneck, kpi::Factor::OpportunityRate as i32);
    assert_eq!(nov.problem, kpi::Problem::Rate as i32);
    let ratio = |r: &kpi::GetBottleneckResponse, i: usize| r.factors[i].ratio.unwrap();
    assert!((ratio(&nov, 0) - 31.0 / 30.0).abs() < 1e-9);
    assert!((ratio(&nov, 1) - 0.5).abs() < 1e-9);
    assert!((ratio(&nov, 2) - 2.0).abs() < 1e-9, "won 1 of 1 against 1 of 2");
    // The arithmetic: actual 4 × 1/4 × 1 = 1 expected win, planned
    // (4 × 30/31) × 2/4 × 1/2; the ratios multiply to their quotient.
    assert!((nov.actual_wins.unwrap() - 1.0).abs() < 1e-9);
    assert!((nov.planned_wins.unwrap() - 30.0 / 31.0).abs() < 1e-9);
    let product: f64 = nov.factors.iter().map(|f| f.ratio.unwrap()).product();
    assert!((product - nov.actual_wins.unwrap() / nov.planned_wins.unwrap()).abs() < 1e-9);

    // December against November: no leads at all — a volume problem, and
    // the rates of an empty month are absent, not 0.
    let dec = bottleneck("2026-12-01", "2027-01-01", "2026-11-01", "2026-12-01").await;
    assert_eq!(dec.bottleneck, kpi::Factor::Leads as i32);
    assert_eq!(dec.problem, kpi::Problem::Volume as i32);
    assert_eq!(dec.factors[1].actual, None);
    assert_eq!(dec.factors[1].ratio, None);

    // October against itself meets plan: no bottleneck.
    let oct = bottleneck("2026-10-01", "2026-11-01", "2026-10-01", "2026-11-01").await;
    assert_eq!((oct.bottleneck, oct.problem), (kpi::Factor::Unspecified as i32, kpi::Problem::Unspecified as i32));

    let err = k
        .get_bottleneck(kpi::GetBottleneckRequest {
            start_date: "2026-12-01".into(),
            end_date: "2026-11-01".into(),
            baseline_start_date: "2026-10-01".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let fields: Vec<_> =
        err.get_error_details().bad_request().unwrap().field_violations.iter().map(|v| v.field.clone()).collect();
    assert_eq!(fields, ["end_date", "baseline_end_date"]);
}
