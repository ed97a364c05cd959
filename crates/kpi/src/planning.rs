//! Managing by the chain: the plan back from a revenue target, and the
//! bottleneck of a period (docs/domain.md, "Managing by the chain"). Pure
//! arithmetic on flow counts; no SQL, no gRPC.
//!
//! Rates are kept as exact fractions, so that "opportunities needed =
//! ⌈wins / win rate⌉" is exact for a trailing rate (3 wins at a win rate of
//! 3/10 need exactly 10 opportunities, where floating point says 10.000…02
//! and rounds up to 11).

use crate::domain::{Counts, Rate, div_ceil};

/// ⌈target / deal⌉ for two positive amounts in the same unit (nanos):
/// the wins a revenue target needs. `None` if past i64.
pub fn wins_for(target_nanos: i128, deal_nanos: i128) -> Option<i64> {
    (deal_nanos > 0).then(|| i64::try_from(div_ceil(target_nanos, deal_nanos)).ok()).flatten()
}

/// Where a plan's rate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateSource {
    Given,
    Trailing,
}

/// One stage of a plan, from wins upwards.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanStage {
    /// How many the stage needs; `None` when unknown.
    pub needed: Option<i64>,
    /// The rate from this stage to the one below it (none for wins).
    pub rate: Option<(Rate, RateSource)>,
    /// Why `needed` is unknown.
    pub unknown: Option<String>,
}

/// The rates a plan works with, each given or trailing (`None`: absent).
#[derive(Debug, Clone, Copy)]
pub struct PlanRates {
    pub win: Option<(Rate, RateSource)>,
    pub opportunity: Option<(Rate, RateSource)>,
    pub acquisition: Option<(Rate, RateSource)>,
}

/// The chain rule for one stage: what it must bring for `below` of the
/// stage under it at `rate` (named `name`), ⌈below / rate⌉ — or why no
/// number can be given: the rate is absent or 0, or the number is past i64.
pub fn input_needed(below: i64, rate: Option<Rate>, name: &str) -> Result<i64, String> {
    match rate {
        None => Err(format!("the {name} rate is unknown (nothing to divide by in the trailing window)")),
        Some(r) if r.is_zero() => Err(format!("the {name} rate is 0: no number is enough")),
        Some(r) => r.input_for(below).ok_or_else(|| "the number needed is too large".to_owned()),
    }
}

/// Wins, opportunities, leads and visitors needed for `wins` wins: each
/// stage is the next one's need divided by the rate between them, rounded
/// up. A stage whose rate is absent or zero makes it, and every stage above
/// it, unknown.
pub fn plan(wins: i64, rates: PlanRates) -> [PlanStage; 4] {
    let wins_stage = PlanStage { needed: Some(wins), rate: None, unknown: None };
    let step = |below: &PlanStage, rate: Option<(Rate, RateSource)>, name: &str| {
        let Some(n) = below.needed else {
            return PlanStage { needed: None, rate, unknown: below.unknown.clone() };
        };
        match input_needed(n, rate.map(|(r, _)| r), name) {
            Ok(needed) => PlanStage { needed: Some(needed), rate, unknown: None },
            Err(why) => PlanStage { needed: None, rate, unknown: Some(why) },
        }
    };
    let opportunities = step(&wins_stage, rates.win, "win");
    let leads = step(&opportunities, rates.opportunity, "opportunity");
    let visitors = step(&leads, rates.acquisition, "acquisition");
    [wins_stage, opportunities, leads, visitors]
}

/// A factor of the chain's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factor {
    Visitors,
    Leads,
    AcquisitionRate,
    OpportunityRate,
    WinRate,
}

impl Factor {
    /// Too few in (a volume problem) rather than too few through (a rate problem).
    pub fn is_volume(self) -> bool {
        matches!(self, Factor::Visitors | Factor::Leads)
    }
}

/// One factor, actual against plan.
#[derive(Debug, Clone, PartialEq)]
pub struct FactorCheck {
    pub factor: Factor,
    pub actual: Option<f64>,
    pub plan: Option<f64>,
    /// actual / plan, when both are known and the plan is not 0.
    pub ratio: Option<f64>,
}

/// The bottleneck analysis of a period.
#[derive(Debug, Clone, PartialEq)]
pub struct Bottleneck {
    /// In the chain's order, volume first.
    pub factors: Vec<FactorCheck>,
    /// The factor with the smallest ratio below 1 (the most upstream one on
    /// a tie); `None` when none is below plan.
    pub bottleneck: Option<Factor>,
    /// The product of the factors: expected wins (opportunities × win rate).
    pub actual_wins: Option<f64>,
    pub planned_wins: Option<f64>,
}

/// What each factor of a period is held against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    pub visitors: f64,
    pub leads: f64,
    pub acquisition: Option<f64>,
    pub opportunity: Option<f64>,
    pub win: Option<f64>,
}

impl Plan {
    /// A baseline window's flow: its rates, and its volume scaled by `scale`
    /// (the period's length over the window's).
    pub fn baseline(b: &Counts, scale: f64) -> Plan {
        let r = b.rates();
        Plan {
            visitors: b.visitors as f64 * scale,
            leads: b.leads as f64 * scale,
            acquisition: r.acquisition,
            opportunity: r.opportunity,
            win: r.win,
        }
    }

    /// A period's targets: their volumes, and the rates between them (the
    /// win rate the targets imply is wins per opportunity).
    pub fn targets(visitors: Option<i64>, leads: i64, opportunities: i64, wins: i64) -> Plan {
        let ratio = |num: i64, den: i64| (den > 0).then(|| num as f64 / den as f64);
        Plan {
            visitors: visitors.unwrap_or(0) as f64,
            leads: leads as f64,
            acquisition: visitors.and_then(|v| ratio(leads, v)),
            opportunity: ratio(opportunities, leads),
            win: ratio(wins, opportunities),
        }
    }
}

/// Compares the period's factors (`actual`, its flow counts) with `plan`.
///
/// wins = visitors × acquisition rate × opportunity rate × win rate, where
/// the product is the wins the period's opportunities are expected to bring
/// (opportunities × win rate). When neither the period nor the plan has
/// visitors, the chain starts at leads: wins = leads × opportunity rate ×
/// win rate.
pub fn bottleneck(actual: &Counts, plan: &Plan) -> Bottleneck {
    let by_visitors = actual.visitors > 0 || plan.visitors > 0.0;
    let a = actual.rates();
    let mut factors = Vec::new();
    if by_visitors {
        factors.push((Factor::Visitors, Some(actual.visitors as f64), Some(plan.visitors)));
        factors.push((Factor::AcquisitionRate, a.acquisition, plan.acquisition));
    } else {
        factors.push((Factor::Leads, Some(actual.leads as f64), Some(plan.leads)));
    }
    factors.push((Factor::OpportunityRate, a.opportunity, plan.opportunity));
    factors.push((Factor::WinRate, a.win, plan.win));
    let factors: Vec<FactorCheck> = factors
        .into_iter()
        .map(|(factor, actual, plan)| {
            let ratio = match (actual, plan) {
                (Some(a), Some(p)) if p > 0.0 => Some(a / p),
                _ => None,
            };
            FactorCheck { factor, actual, plan, ratio }
        })
        .collect();
    let bottleneck = factors
        .iter()
        .filter_map(|f| f.ratio.filter(|r| *r < 1.0).map(|r| (f.factor, r)))
        .fold(None, |worst: Option<(Factor, f64)>, (factor, r)| match worst {
            Some((_, w)) if w <= r => worst,
            _ => Some((factor, r)),
        })
        .map(|(factor, _)| factor);
    let product = |pick: fn(&FactorCheck) -> Option<f64>| factors.iter().map(pick).product::<Option<f64>>();
    Bottleneck { actual_wins: product(|f| f.actual), planned_wins: product(|f| f.plan), bottleneck, factors }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trailing(num: i64, den: i64) -> Option<(Rate, RateSource)> {
        Rate::of(num, den).map(|r| (r, RateSource::Trailing))
    }

    #[test]
    fn a_plan_divides_up_the_chain_exactly() {
        // 10,000,000 of revenue at 1,000,000 a deal: 10 wins. Win rate 3/10,
        // opportunity rate 1/4, acquisition rate 1/50.
        let wins = wins_for(10_000_000 * 1_000_000_000, 1_000_000 * 1_000_000_000).unwrap();
        assert_eq!(wins, 10);
        let rates = PlanRates { win: trailing(3, 10), opportunity: trailing(25, 100), acquisition: trailing(2, 100) };
        let p = plan(wins, rates);
        let needed: Vec<_> = p.iter().map(|s| s.needed).collect();
        assert_eq!(needed, [Some(10), Some(34), Some(136), Some(6800)], "⌈10/0.3⌉ = 34, ⌈34/0.25⌉ = 136, ⌈136/0.02⌉");
        // Exactness: 3 wins at 3/10 need 10, not 11.
        assert_eq!(Rate::of(3, 10).unwrap().input_for(3), Some(10));
        assert_eq!(Rate::given(0.3).input_for(3), Some(10), "a given 0.3 is 3/10");
        assert_eq!(wins_for(2_500_000_001, 1_000_000_000), Some(3), "a part of a deal is a whole win");
    }

    #[test]
    fn an_unknown_rate_makes_every_stage_above_it_unknown() {
        let rates = PlanRates { win: trailing(1, 2), opportunity: None, acquisition: trailing(1, 10) };
        let p = plan(5, rates);
        assert_eq!(p.iter().map(|s| s.needed).collect::<Vec<_>>(), [Some(5), Some(10), None, None]);
        assert!(p[2].unknown.as_deref().unwrap().contains("opportunity rate is unknown"));
        assert_eq!(p[3].unknown, p[2].unknown, "the visitors are unknown for the same reason");
        let zero = plan(5, PlanRates { win: trailing(0, 7), ..rates });
        assert_eq!(zero[1].needed, None);
        assert!(zero[1].unknown.as_deref().unwrap().contains("0"));
        let huge = plan(i64::MAX, PlanRates { win: trailing(1, 2), ..rates });
        assert_eq!(huge[1].needed, None, "past i64 is unknown, not wrapped");
    }

    fn counts(visitors: i64, leads: i64, opportunities: i64, wins: i64, losses: i64) -> Counts {
        Counts { visitors, leads, opportunities, wins, losses, ..Counts::default() }
    }

    #[test]
    fn a_rate_problem() {
        // Same traffic and leads as the baseline; inside sales converts half as well.
        let b = bottleneck(&counts(1000, 100, 10, 4, 4), &Plan::baseline(&counts(1000, 100, 20, 8, 8), 1.0));
        assert_eq!(b.bottleneck, Some(Factor::OpportunityRate));
        assert!(!Factor::OpportunityRate.is_volume());
        let ratios: Vec<_> = b.factors.iter().map(|f| f.ratio).collect();
        assert_eq!(ratios, [Some(1.0), Some(1.0), Some(0.5), Some(1.0)]);
        // The arithmetic shows: the product of the ratios is actual / planned.
        assert_eq!(b.actual_wins, Some(5.0), "10 opportunities × 4/8");
        assert_eq!(b.planned_wins, Some(10.0));
    }

    #[test]
    fn a_volume_problem_against_a_longer_baseline() {
        // The baseline is three times as long: 3,000 visitors in it are 1,000
        // a period. The period had 600, converting as well as ever.
        let b = bottleneck(&counts(600, 60, 15, 5, 5), &Plan::baseline(&counts(3000, 300, 75, 25, 25), 1.0 / 3.0));
        assert_eq!(b.bottleneck, Some(Factor::Visitors));
        assert!(Factor::Visitors.is_volume());
        assert!((b.factors[0].ratio.unwrap() - 0.6).abs() < 1e-12);
    }

    #[test]
    fn no_bottleneck_when_every_factor_meets_plan_and_leads_start_the_chain_without_visitors() {
        let b = bottleneck(&counts(0, 50, 10, 5, 5), &Plan::baseline(&counts(0, 50, 10, 5, 5), 1.0));
        assert_eq!(
            b.factors.iter().map(|f| f.factor).collect::<Vec<_>>(),
            [Factor::Leads, Factor::OpportunityRate, Factor::WinRate]
        );
        assert_eq!(b.bottleneck, None);
        // Nothing closed in the period: the win rate is absent, never 0.
        let b = bottleneck(&counts(0, 50, 10, 0, 0), &Plan::baseline(&counts(0, 50, 10, 5, 5), 1.0));
        assert_eq!(b.factors[2].actual, None);
        assert_eq!(b.actual_wins, None);
    }

    #[test]
    fn against_targets_the_plan_is_the_targets_chain() {
        // Targets: 2,000 visitors → 40 leads → 10 opportunities → 4 wins.
        // Actual: the visitors came and converted to leads as planned, but
        // inside sales made 6 opportunities of 40 leads.
        let plan = Plan::targets(Some(2000), 40, 10, 4);
        let b = bottleneck(&counts(2000, 40, 6, 3, 3), &plan);
        assert_eq!(b.bottleneck, Some(Factor::OpportunityRate));
        assert_eq!(b.planned_wins, Some(4.0), "the product of the targets' factors is the wins target");
        assert!((b.factors[2].ratio.unwrap() - 0.6).abs() < 1e-12);
        // Without a visitors target the chain starts at leads.
        let b = bottleneck(&counts(0, 20, 5, 2, 2), &Plan::targets(None, 40, 10, 4));
        assert_eq!(b.factors[0].factor, Factor::Leads);
        assert_eq!(b.bottleneck, Some(Factor::Leads));
    }
}
