//! `themodel report`: the waterfall in a terminal, from the same RPCs the
//! dashboard page reads.

use std::fmt::Write;

use themodel_kpi::dashboard::{NO_BOTTLENECK, factor_stage, short_name, waterfall};
use themodel_proto::kpi::v1 as pb;
use themodel_proto::kpi::v1::kpi_service_client::KpiServiceClient;
use themodel_runtime::telemetry::PeerChannel;

/// Reads the funnel (and the bottleneck, for the flow view) of `req`'s
/// period from kpi and renders it.
pub async fn report(kpi: &mut KpiServiceClient<PeerChannel>, req: pb::GetFunnelRequest) -> anyhow::Result<String> {
    let funnel = kpi.get_funnel(req.clone()).await?.into_inner().funnel.unwrap_or_default();
    let bottleneck = if req.view == pb::View::Cohort as i32 {
        None
    } else {
        let b = pb::GetBottleneckRequest {
            start_date: req.start_date,
            end_date: req.end_date,
            period_unit: req.period_unit,
            fiscal_year_start_month: req.fiscal_year_start_month,
            ..Default::default()
        };
        Some(kpi.get_bottleneck(b).await.map(tonic::Response::into_inner).map_err(|s| s.message().to_owned()))
    };
    Ok(render(&funnel, bottleneck.as_ref()))
}

/// The waterfall as text: each stage's count with a bar, the rate into it,
/// and the bottleneck marked.
pub fn render(f: &pb::Funnel, bottleneck: Option<&Result<pb::GetBottleneckResponse, String>>) -> String {
    let view = short_name(pb::View::try_from(f.view).unwrap_or_default().as_str_name(), "VIEW_");
    let factor = match bottleneck {
        Some(Ok(b)) => pb::Factor::try_from(b.bottleneck).unwrap_or_default(),
        _ => pb::Factor::Unspecified,
    };
    let steps = waterfall(f);
    let top = steps.iter().map(|s| s.count).max().unwrap_or(0).max(1);
    let mut out = String::new();
    let _ = writeln!(out, "{view} view, {} to {} ({})", f.start_date, f.end_date, f.time_zone);
    for step in steps {
        let width = usize::try_from(step.count.saturating_mul(40) / top).unwrap_or(0);
        let rate = match step.rate {
            Some(r) => format!("{:>6.1}% {}", r * 100.0, step.rate_name),
            None if step.rate_name.is_empty() => String::new(),
            None => format!("{:>7} {}", "–", step.rate_name),
        };
        let mark = if factor_stage(factor) == Some(step.key) { "  <- bottleneck" } else { "" };
        let _ = writeln!(out, "{:<16} {:>9}  {:<40}  {rate}{mark}", step.label, step.count, "#".repeat(width));
    }
    for r in &f.revenue {
        let units = |m: &Option<themodel_proto::common::v1::Money>| m.as_ref().map_or(0, |m| m.units);
        let _ = writeln!(
            out,
            "Revenue {}: won {}, expansion {}, churned {}",
            r.currency_code,
            units(&r.won),
            units(&r.expansion),
            units(&r.churned)
        );
    }
    match bottleneck {
        Some(Ok(_)) if factor == pb::Factor::Unspecified => {
            let _ = writeln!(out, "Bottleneck: not known ({NO_BOTTLENECK})");
        }
        Some(Ok(b)) => {
            let name = |s: &str, prefix: &str| short_name(s, prefix).replace('_', " ");
            let _ = writeln!(
                out,
                "Bottleneck: {}, a {} problem",
                name(factor.as_str_name(), "FACTOR_"),
                name(pb::Problem::try_from(b.problem).unwrap_or_default().as_str_name(), "PROBLEM_"),
            );
        }
        Some(Err(why)) => {
            let _ = writeln!(out, "Bottleneck: not known ({why})");
        }
        None => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_waterfall_shows_counts_rates_and_the_bottleneck() {
        let f = pb::Funnel {
            view: pb::View::Flow as i32,
            start_date: "2026-11-01".into(),
            end_date: "2026-12-01".into(),
            time_zone: "UTC".into(),
            visitors: 100,
            leads: 20,
            acquisition_rate: Some(0.2),
            opportunities: 5,
            wins: 1,
            win_rate: Some(0.2),
            ..Default::default()
        };
        let b = pb::GetBottleneckResponse {
            bottleneck: pb::Factor::WinRate as i32,
            problem: pb::Problem::Rate as i32,
            ..Default::default()
        };
        let text = render(&f, Some(&Ok(b)));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "flow view, 2026-11-01 to 2026-12-01 (UTC)");
        assert!(lines[1].starts_with("Visitors               100  ########################################"));
        assert!(lines[2].contains("  20.0% acquisition rate"), "{}", lines[2]);
        assert!(lines[5].ends_with("win rate  <- bottleneck"), "{}", lines[5]);
        assert!(lines[4].contains("– opportunity rate"), "an absent rate is a dash: {}", lines[4]);
        assert_eq!(lines.last(), Some(&"Bottleneck: win rate, a rate problem"));
    }
}
