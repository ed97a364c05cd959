//! The dashboard page, loaded in a real headless Chromium, shows what the
//! RPCs answer; `themodel report` prints the same waterfall.

use std::path::Path;
use std::time::Duration;

use themodel_e2e::TestSuite;
use themodel_proto::kpi::v1 as kpi;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::chain::november;

const CHROMIUM: &str = "/usr/bin/chromium";

/// The page's DOM once its script has run, as Chromium renders it headless.
async fn rendered(url: String) -> String {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--virtual-time-budget=15000",
                "--dump-dom",
                &url,
            ])
            .output()
            .expect("chromium runs");
        assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8 DOM")
    })
    .await
    .unwrap()
}

/// The text of the cell `field` in the row whose `attribute` is `value`.
fn cell(dom: &str, attribute: &str, value: &str, field: &str) -> Option<String> {
    let row_start = dom.find(&format!("{attribute}=\"{value}\""))?;
    let row = &dom[row_start..];
    let row = &row[..row.find("</tr>")?];
    let at = row.find(&format!("data-field=\"{field}\""))?;
    let text = &row[at..];
    let text = &text[text.find('>')? + 1..];
    Some(text[..text.find('<')?].to_owned())
}

/// The class of the row whose `data-stage` is `stage`.
fn row_tag(dom: &str, stage: &str) -> Option<String> {
    let at = dom.find(&format!("data-stage=\"{stage}\""))?;
    let open = dom[..at].rfind("<tr")?;
    Some(dom[open..at + dom[at..].find('>')?].to_owned())
}

/// A plain HTTP/1.0 GET: the status line and the body.
async fn get(url: &str, path: &str) -> (String, String) {
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes()).await.unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_in_a_browser_shows_what_the_rpcs_answer() {
    let t = TestSuite::start().await;
    november(&t).await;
    let mut k = t.kpi.clone();
    k.set_targets(kpi::SetTargetsRequest {
        request_id: "nov-targets".into(),
        start_date: "2026-11-01".into(),
        end_date: "2026-12-01".into(),
        set_by: "vp-revenue".into(),
        targets: [(kpi::Stage::Leads, 6), (kpi::Stage::Opportunities, 4), (kpi::Stage::Wins, 3)]
            .map(|(stage, count)| kpi::StageTarget { stage: stage as i32, count })
            .into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let period = |split_by: kpi::Dimension| kpi::GetFunnelRequest {
        start_date: "2026-11-01".into(),
        end_date: "2026-12-01".into(),
        split_by: split_by as i32,
        ..Default::default()
    };
    let answer = k.get_funnel(period(kpi::Dimension::Source)).await.unwrap().into_inner();
    let f = answer.funnel.clone().unwrap();
    let attainment = k
        .get_attainment(kpi::GetAttainmentRequest {
            start_date: "2026-11-01".into(),
            end_date: "2026-12-01".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let bottleneck = k
        .get_bottleneck(kpi::GetBottleneckRequest {
            start_date: "2026-11-01".into(),
            end_date: "2026-12-01".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    let base = t.suite.dashboard_url().expect("the suite serves the dashboard");
    // The JSON behind the page refuses what it does not know, listing what it does.
    let (status, body) = get(&base, "/api/dashboard?start_date=2026-11-01&end_date=2026-12-01&view=sideways").await;
    assert!(status.contains("400"), "{status}");
    assert!(body.contains("one of flow, cohort"), "{body}");
    let (status, body) = get(&base, "/api/dashboard?start_date=2026-11-01&end_date=2026-12-01&split_by=colour").await;
    assert!(status.contains("400") && body.contains("one of source, campaign"), "{status} {body}");

    // A query that does not parse is refused in JSON the page can show.
    let (status, body) = get(&base, "/api/plan?revenue=lots&deal_size=1&currency=JPY").await;
    assert!(status.contains("400") && body.starts_with("{\"error\":"), "{status} {body}");
    // The plan behind the page's form is PlanFromRevenue's.
    let plan = k
        .plan_from_revenue(kpi::PlanFromRevenueRequest {
            revenue_target: Some(themodel_proto::common::v1::Money {
                currency_code: "JPY".into(),
                units: 2_400_000,
                nanos: 0,
            }),
            average_deal_size: Some(themodel_proto::common::v1::Money {
                currency_code: "JPY".into(),
                units: 1_200_000,
                nanos: 0,
            }),
            start_date: "2026-12-01".into(),
            end_date: "2027-01-01".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (status, body) = get(
        &base,
        "/api/plan?start_date=2026-12-01&end_date=2027-01-01&revenue=2400000&deal_size=1200000&currency=JPY",
    )
    .await;
    assert!(status.contains("200"), "{status} {body}");
    for s in &plan.stages {
        let stage = kpi::Stage::try_from(s.stage).unwrap().as_str_name().trim_start_matches("STAGE_").to_lowercase();
        let needed = s.needed.map_or("null".to_owned(), |n| n.to_string());
        assert!(body.contains(&format!("\"needed\":{needed}")), "{stage}: {body}");
        assert!(body.contains(&format!("\"stage\":\"{stage}\"")), "{stage}: {body}");
    }
    assert_eq!(plan.stages.iter().find(|s| s.stage == kpi::Stage::Wins as i32).unwrap().needed, Some(2));

    if !Path::new(CHROMIUM).exists() {
        assert!(std::env::var_os("CI").is_none(), "CI installs chromium; {CHROMIUM} is missing");
        eprintln!("skipping the browser half: {CHROMIUM} is not installed");
        return;
    }
    let dom = rendered(format!("{base}?start_date=2026-11-01&end_date=2026-12-01&split_by=source")).await;
    assert!(dom.contains("data-ready=\"1\""), "the page finished loading: {dom}");
    for (stage, count) in [
        ("visitors", f.visitors),
        ("leads", f.leads),
        ("promising_leads", f.promising_leads),
        ("opportunities", f.opportunities),
        ("wins", f.wins),
        ("retained", f.retained),
    ] {
        assert_eq!(cell(&dom, "data-stage", stage, "actual"), Some(count.to_string()), "{stage}");
    }
    assert_eq!((f.leads, f.opportunities, f.wins), (5, 3, 2), "the November chain");
    for (stage, name) in
        [(kpi::Stage::Leads, "leads"), (kpi::Stage::Opportunities, "opportunities"), (kpi::Stage::Wins, "wins")]
    {
        let target = attainment.stages.iter().find(|s| s.stage == stage as i32).unwrap().target;
        assert_eq!(cell(&dom, "data-stage", name, "target"), Some(target.to_string()), "{name}");
    }
    assert_eq!(cell(&dom, "data-stage", "wins", "target").as_deref(), Some("3"));
    assert_eq!(cell(&dom, "data-stage", "wins", "rate").as_deref(), Some("66.7% win rate"));
    // The bottleneck the RPC names is the highlighted row.
    let limiting = match kpi::Factor::try_from(bottleneck.bottleneck).unwrap() {
        kpi::Factor::Visitors => "visitors",
        kpi::Factor::Leads | kpi::Factor::AcquisitionRate => "leads",
        kpi::Factor::OpportunityRate => "opportunities",
        kpi::Factor::WinRate => "wins",
        kpi::Factor::Unspecified => panic!("no bottleneck named: {bottleneck:?}"),
    };
    for stage in ["visitors", "leads", "opportunities", "wins"] {
        let highlighted = row_tag(&dom, stage).unwrap().contains("bottleneck");
        assert_eq!(highlighted, stage == limiting, "{stage}: {:?}", row_tag(&dom, stage));
    }
    // The split by source, one row per value, as GetFunnel splits it.
    assert!(!answer.splits.is_empty());
    for s in &answer.splits {
        let leads = s.funnel.as_ref().unwrap().leads;
        assert_eq!(cell(&dom, "data-value", &s.value, "leads"), Some(leads.to_string()), "source {}", s.value);
    }

    // The cohort toggle reads the cohort view.
    let cohort = k
        .get_funnel(kpi::GetFunnelRequest { view: kpi::View::Cohort as i32, ..period(kpi::Dimension::Unspecified) })
        .await
        .unwrap()
        .into_inner()
        .funnel
        .unwrap();
    let dom = rendered(format!("{base}?start_date=2026-11-01&end_date=2026-12-01&view=cohort")).await;
    assert!(dom.contains("cohort view, 2026-11-01 to 2026-12-01"), "{dom}");
    assert_eq!(cell(&dom, "data-stage", "wins", "actual"), Some(cohort.wins.to_string()));

    // `themodel report` prints the same waterfall.
    let mut client =
        themodel_proto::kpi::v1::kpi_service_client::KpiServiceClient::new(t.channel(themodel_e2e::Svc::Kpi));
    let text = tokio::time::timeout(
        Duration::from_secs(20),
        themodel::report::report(&mut client, period(kpi::Dimension::Unspecified)),
    )
    .await
    .unwrap()
    .unwrap();
    let count = |label: &str| {
        let line = text.lines().find(|l| l.starts_with(label)).unwrap();
        line[label.len()..].split_whitespace().next().unwrap().parse::<i64>().unwrap()
    };
    assert_eq!(
        [count("Visitors"), count("Leads"), count("Opportunities"), count("Wins"), count("Retained")],
        [f.visitors, f.leads, f.opportunities, f.wins, f.retained],
        "{text}"
    );
    let label = match limiting {
        "visitors" => "Visitors",
        "leads" => "Leads",
        "opportunities" => "Opportunities",
        _ => "Wins",
    };
    let marked: Vec<&str> = text.lines().filter(|l| l.ends_with("<- bottleneck")).collect();
    assert!(marked.len() == 1 && marked[0].starts_with(label), "{text}");
}
