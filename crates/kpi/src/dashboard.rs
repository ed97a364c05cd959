//! The dashboard: one page over HTTP on a port of its own, with its HTML,
//! script and styles compiled into the binary (nothing is fetched from
//! anywhere else), showing the waterfall with targets against actuals, the
//! bottleneck, the flow/cohort toggle, a split and the plan for a revenue
//! target.
//!
//! It is a client of kpi's gRPC API like any other: every number on the page
//! is what `GetFunnel`, `GetAttainment`, `GetBottleneck` and
//! `PlanFromRevenue` answer, so the page and the RPCs cannot disagree. The
//! page reads `/api/dashboard` and `/api/plan`, JSON shaped for it.

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use themodel_proto::common::v1::Money;
use themodel_proto::kpi::v1 as pb;
use themodel_proto::kpi::v1::kpi_service_client::KpiServiceClient;
use themodel_runtime::telemetry::PeerChannel;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const PAGE: &str = include_str!("../dashboard/index.html");

/// Why a period has no bottleneck, when GetBottleneck names none.
pub const NO_BOTTLENECK: &str =
    "no factor has both an actual and a plan to compare: set targets for the period, or a baseline with history";

type Kpi = KpiServiceClient<PeerChannel>;

/// Serves the dashboard on `listener`, reading kpi at `kpi`, until `shutdown`.
pub async fn serve(listener: TcpListener, kpi: Kpi, shutdown: CancellationToken) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/api/dashboard", get(dashboard))
        .route("/api/plan", get(plan))
        .with_state(kpi);
    tracing::info!(addr = %listener.local_addr()?, "dashboard serving");
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
    Ok(())
}

/// The page's view of a period.
#[derive(Debug, Deserialize)]
struct ViewQuery {
    #[serde(default)]
    start_date: String,
    #[serde(default)]
    end_date: String,
    /// `flow` (the default) or `cohort`.
    #[serde(default)]
    view: String,
    /// A dimension's name as the contract spells it without its prefix
    /// (`source`, `inside_sales_rep`, ...); empty for none.
    #[serde(default)]
    split_by: String,
    /// An IANA time zone; empty for the deployment's.
    #[serde(default)]
    time_zone: String,
}

/// A gRPC refusal as the page shows it: the status's message, with 400 for
/// the caller's mistakes and 502 for everything else.
fn refused(status: &tonic::Status) -> Response {
    let code = match status.code() {
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition | tonic::Code::NotFound => {
            StatusCode::BAD_REQUEST
        }
        _ => StatusCode::BAD_GATEWAY,
    };
    (code, json_body(&json!({ "error": status.message() }))).into_response()
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, json_body(&json!({ "error": message }))).into_response()
}

fn json_body(v: &Value) -> impl IntoResponse + use<> {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string())
}

/// A view by its short name: `flow` (also the default, empty) or `cohort`.
pub fn view(text: &str) -> Result<pb::View, String> {
    match text {
        "" | "flow" => Ok(pb::View::Flow),
        "cohort" => Ok(pb::View::Cohort),
        other => Err(format!("view {other:?}: one of flow, cohort")),
    }
}

fn dimension(text: &str) -> Result<pb::Dimension, String> {
    if text.is_empty() {
        return Ok(pb::Dimension::Unspecified);
    }
    pb::Dimension::from_str_name(&format!("DIMENSION_{}", text.to_ascii_uppercase()))
        .filter(|d| *d != pb::Dimension::Unspecified)
        .ok_or_else(|| format!("split_by {text:?}: one of {}", DIMENSIONS.join(", ")))
}

/// The dimensions a split can be by, as the page names them.
const DIMENSIONS: [&str; 11] = [
    "source",
    "campaign",
    "channel",
    "industry",
    "company_size_band",
    "job_title_class",
    "definition_version",
    "inside_sales_rep",
    "inside_sales_team",
    "account_executive",
    "customer_success_manager",
];

/// One stage of the waterfall, as the page and `themodel report` show it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// The page's key for the stage (`promising_leads`).
    pub key: &'static str,
    pub label: &'static str,
    pub stage: pb::Stage,
    pub count: i64,
    /// The rate into the stage from the one above (none for visitors).
    pub rate: Option<f64>,
    /// What the domain calls that rate ("acquisition rate"); empty for visitors.
    pub rate_name: &'static str,
}

/// A funnel's stages, top to bottom.
pub fn waterfall(f: &pb::Funnel) -> [Step; 6] {
    let step = |key, label, stage, count, rate, rate_name| Step { key, label, stage, count, rate, rate_name };
    [
        step("visitors", "Visitors", pb::Stage::Visitors, f.visitors, None, ""),
        step("leads", "Leads", pb::Stage::Leads, f.leads, f.acquisition_rate, "acquisition rate"),
        step(
            "promising_leads",
            "Promising leads",
            pb::Stage::PromisingLeads,
            f.promising_leads,
            f.promising_rate,
            "promising rate",
        ),
        step(
            "opportunities",
            "Opportunities",
            pb::Stage::Opportunities,
            f.opportunities,
            f.opportunity_rate,
            "opportunity rate",
        ),
        step("wins", "Wins", pb::Stage::Wins, f.wins, f.win_rate, "win rate"),
        step("retained", "Retained", pb::Stage::Retained, f.retained, f.renewal_rate, "renewal rate"),
    ]
}

/// The key of the stage whose row a bottleneck factor belongs to: a count
/// factor to its stage, a rate to the stage it leads into.
pub fn factor_stage(f: pb::Factor) -> Option<&'static str> {
    Some(match f {
        pb::Factor::Visitors => "visitors",
        pb::Factor::Leads | pb::Factor::AcquisitionRate => "leads",
        pb::Factor::OpportunityRate => "opportunities",
        pb::Factor::WinRate => "wins",
        pb::Factor::Unspecified => return None,
    })
}

/// An enum value's name without its type prefix, lower case
/// (`FACTOR_WIN_RATE` → `win_rate`).
pub fn short_name(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_ascii_lowercase()
}

fn money(m: Option<&Money>) -> Value {
    m.map_or(Value::Null, |m| json!({ "currency_code": m.currency_code, "units": m.units, "nanos": m.nanos }))
}

async fn dashboard(State(kpi): State<Kpi>, query: Result<Query<ViewQuery>, QueryRejection>) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(rejected) => return bad_request(rejected.body_text()),
    };
    let (view, split_by) = match (view(&q.view), dimension(&q.split_by)) {
        (Ok(v), Ok(d)) => (v, d),
        (Err(e), _) | (_, Err(e)) => return bad_request(e),
    };
    let (start_date, end_date) = (q.start_date.clone(), q.end_date.clone());
    let funnel = kpi
        .clone()
        .get_funnel(pb::GetFunnelRequest {
            start_date: start_date.clone(),
            end_date: end_date.clone(),
            view: view as i32,
            split_by: split_by as i32,
            time_zone: q.time_zone.clone(),
            ..Default::default()
        })
        .await;
    let funnel = match funnel {
        Ok(r) => r.into_inner(),
        Err(status) => return refused(&status),
    };
    let total = funnel.funnel.clone().unwrap_or_default();

    // Targets and the bottleneck are for the flow of the period; a period
    // without a target set simply shows none.
    let attainment = kpi
        .clone()
        .get_attainment(pb::GetAttainmentRequest {
            start_date: start_date.clone(),
            end_date: end_date.clone(),
            time_zone: q.time_zone.clone(),
            ..Default::default()
        })
        .await;
    let attainment = match attainment {
        Ok(r) => Some(r.into_inner()),
        Err(status) if status.code() == tonic::Code::NotFound => None,
        Err(status) => return refused(&status),
    };
    let bottleneck = kpi
        .clone()
        .get_bottleneck(pb::GetBottleneckRequest {
            start_date: start_date.clone(),
            end_date: end_date.clone(),
            time_zone: q.time_zone.clone(),
            ..Default::default()
        })
        .await;

    let target = |stage: pb::Stage| {
        attainment
            .as_ref()
            .and_then(|a| a.stages.iter().find(|s| s.stage == stage as i32))
            .map(|s| (s.target, s.attainment))
    };
    let bottleneck_json = match &bottleneck {
        Ok(b) if b.get_ref().bottleneck == pb::Factor::Unspecified as i32 => json!({ "unknown": NO_BOTTLENECK }),
        Ok(b) => {
            let b = b.get_ref();
            let factor = pb::Factor::try_from(b.bottleneck).unwrap_or_default();
            json!({
                "factor": short_name(factor.as_str_name(), "FACTOR_"),
                "stage": factor_stage(factor),
                "problem": short_name(pb::Problem::try_from(b.problem).unwrap_or_default().as_str_name(), "PROBLEM_"),
                "basis": short_name(pb::PlanBasis::try_from(b.basis).unwrap_or_default().as_str_name(), "PLAN_BASIS_"),
                "actual_wins": b.actual_wins,
                "planned_wins": b.planned_wins,
            })
        }
        Err(status) => json!({ "unknown": status.message() }),
    };
    let stages: Vec<Value> = waterfall(&total)
        .iter()
        .map(|step| {
            let (target, attainment) = target(step.stage).unzip();
            json!({
                "stage": step.key,
                "label": step.label,
                "actual": step.count,
                "target": target,
                "attainment": attainment,
                "rate": step.rate,
                "rate_label": step.rate_name,
            })
        })
        .collect();
    let splits: Vec<Value> = funnel
        .splits
        .iter()
        .map(|s| {
            let f = s.funnel.clone().unwrap_or_default();
            let by_stage: serde_json::Map<String, Value> =
                waterfall(&f).iter().map(|step| (step.key.to_owned(), json!(step.count))).collect();
            json!({ "value": s.value, "counts": by_stage })
        })
        .collect();
    let revenue: Vec<Value> = total
        .revenue
        .iter()
        .map(|r| {
            json!({
                "currency_code": r.currency_code,
                "won": money(r.won.as_ref()),
                "new_business": money(r.new_business.as_ref()),
                "expansion": money(r.expansion.as_ref()),
                "churned": money(r.churned.as_ref()),
            })
        })
        .collect();
    let sources: Vec<Value> = total
        .sources
        .iter()
        .map(|s| json!({ "service": s.service, "applied_seq": s.applied_seq, "lag_events": s.lag_events, "error": s.error }))
        .collect();
    let body = json!({
        "period": {
            "start_date": total.start_date,
            "end_date": total.end_date,
            "time_zone": total.time_zone,
            "view": short_name(view.as_str_name(), "VIEW_"),
        },
        "stages": stages,
        "revenue": revenue,
        "bottleneck": bottleneck_json,
        "targets_version": attainment.as_ref().and_then(|a| a.targets.as_ref()).map(|t| t.version),
        "split_by": (split_by != pb::Dimension::Unspecified).then(|| short_name(split_by.as_str_name(), "DIMENSION_")),
        "splits": splits,
        "dimensions": DIMENSIONS,
        "sources": sources,
    });
    json_body(&body).into_response()
}

/// The plan back from a revenue target, as the page asks for it.
#[derive(Debug, Deserialize)]
struct PlanQuery {
    #[serde(default)]
    start_date: String,
    #[serde(default)]
    end_date: String,
    /// Whole units of `currency`.
    revenue: i64,
    deal_size: i64,
    currency: String,
    /// An IANA time zone; empty for the deployment's.
    #[serde(default)]
    time_zone: String,
}

async fn plan(State(kpi): State<Kpi>, query: Result<Query<PlanQuery>, QueryRejection>) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(rejected) => return bad_request(rejected.body_text()),
    };
    let amount = |units| Some(Money { currency_code: q.currency.clone(), units, nanos: 0 });
    let answer = kpi
        .clone()
        .plan_from_revenue(pb::PlanFromRevenueRequest {
            revenue_target: amount(q.revenue),
            average_deal_size: amount(q.deal_size),
            start_date: q.start_date.clone(),
            end_date: q.end_date.clone(),
            time_zone: q.time_zone.clone(),
            ..Default::default()
        })
        .await;
    let plan = match answer {
        Ok(r) => r.into_inner(),
        Err(status) => return refused(&status),
    };
    let stages: Vec<Value> = plan
        .stages
        .iter()
        .map(|s| {
            json!({
                "stage": short_name(pb::Stage::try_from(s.stage).unwrap_or_default().as_str_name(), "STAGE_"),
                "needed": s.needed,
                "rate": s.rate,
                "run_rate": s.run_rate,
                "gap": s.gap,
                "unknown_reason": s.unknown_reason,
            })
        })
        .collect();
    json_body(&json!({
        "start_date": plan.start_date,
        "end_date": plan.end_date,
        "trailing_start_date": plan.trailing_start_date,
        "trailing_end_date": plan.trailing_end_date,
        "stages": stages,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dimension_the_page_offers_is_in_the_contract_and_unknown_ones_are_refused() {
        for name in DIMENSIONS {
            assert_ne!(dimension(name), Ok(pb::Dimension::Unspecified), "{name}");
            assert!(dimension(name).is_ok(), "{name}");
        }
        let err = dimension("colour").unwrap_err();
        assert!(err.contains("one of source, campaign"), "{err}");
        assert_eq!(
            dimension("unspecified").unwrap_err(),
            dimension("colour").unwrap_err().replace("colour", "unspecified")
        );
        assert!(view("sideways").unwrap_err().contains("one of flow, cohort"));
    }
}
