//! Targets per period and the chain rule (docs/domain.md, "Targets"): each
//! department's target is the next one's input, so upstream targets can be
//! derived from a downstream one with the trailing rates. Pure arithmetic;
//! no SQL, no gRPC.

use std::collections::BTreeMap;

use crate::domain::{Counts, Rate, Rates};
use crate::planning::input_needed;

/// A stage a count target is set on, in the chain's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    Visitors,
    Leads,
    Promising,
    Opportunities,
    Wins,
    Retained,
}

impl Stage {
    /// The department whose output the stage is.
    pub fn department(self) -> &'static str {
        match self {
            Stage::Visitors | Stage::Leads | Stage::Promising => "marketing",
            Stage::Opportunities => "inside-sales",
            Stage::Wins => "field-sales",
            Stage::Retained => "customer-success",
        }
    }

    /// The stage as a message names it.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Visitors => "visitors",
            Stage::Leads => "leads",
            Stage::Promising => "promising leads",
            Stage::Opportunities => "opportunities",
            Stage::Wins => "wins",
            Stage::Retained => "retained",
        }
    }

    /// The rate that turns this stage's count into the next stage's, and
    /// its name: visitors → leads (acquisition), leads → opportunities,
    /// opportunities → wins, wins → retained (renewal). The chain rule
    /// divides by it; local optimisation watches it fall.
    pub fn next_rate(self) -> Option<(RateOf, &'static str)> {
        let next: (RateOf, &'static str) = match self {
            Stage::Visitors => (|r| r.acquisition, "acquisition"),
            Stage::Leads => (|r| r.opportunity, "opportunity"),
            Stage::Opportunities => (|r| r.win, "win"),
            Stage::Wins => (|r| r.renewal, "renewal"),
            Stage::Promising | Stage::Retained => return None,
        };
        Some(next)
    }

    /// The stage's flow count.
    pub fn actual(self, c: &Counts) -> i64 {
        match self {
            Stage::Visitors => c.visitors,
            Stage::Leads => c.leads,
            Stage::Promising => c.promising_leads,
            Stage::Opportunities => c.opportunities,
            Stage::Wins => c.wins,
            Stage::Retained => c.retained,
        }
    }
}

/// A target in a set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    pub count: i64,
    /// `None`: given. `Some(rate)`: derived with the rate from this stage to
    /// the one below (`Some(None)` for wins derived from revenue).
    pub derived: Option<Option<Rate>>,
}

/// Picks one rate.
pub type RateOf = fn(&Rates<Rate>) -> Option<Rate>;

/// The chain above wins, from wins up.
const UPSTREAM: [Stage; 3] = [Stage::Opportunities, Stage::Leads, Stage::Visitors];

/// The targets of a set: the `given` ones, and — with `derive` — each stage
/// of the chain above the lowest given one that is not given itself, by
/// [`input_needed`]. Wins are derived from `wins_from_revenue` (the
/// revenue target over the average deal) when not given. `Err` names the
/// rate that is unknown (or zero) in the window.
pub fn derive(
    given: &BTreeMap<Stage, i64>,
    wins_from_revenue: Option<i64>,
    rates: &Rates<Rate>,
) -> Result<BTreeMap<Stage, Target>, String> {
    let mut out: BTreeMap<Stage, Target> =
        given.iter().map(|(&stage, &count)| (stage, Target { count, derived: None })).collect();
    let mut below = match (given.get(&Stage::Wins), wins_from_revenue) {
        (Some(&wins), _) => Some(wins),
        (None, Some(wins)) => {
            out.insert(Stage::Wins, Target { count: wins, derived: Some(None) });
            Some(wins)
        }
        (None, None) => None,
    };
    for stage in UPSTREAM {
        if let Some(&count) = given.get(&stage) {
            below = Some(count);
            continue;
        }
        let Some(n) = below else { continue };
        let Some((rate_of, name)) = stage.next_rate() else { continue };
        let rate = rate_of(rates);
        let count =
            input_needed(n, rate, name).map_err(|why| format!("{why}: give the {} target itself", stage.name()))?;
        out.insert(stage, Target { count, derived: rate.map(Some) });
        below = Some(count);
    }
    Ok(out)
}

/// The share of `capacity` left idle when `received` came in:
/// max(0, capacity − received) / capacity (`capacity` above 0).
pub fn idle(capacity: i64, received: i64) -> f64 {
    capacity.saturating_sub(received).max(0) as f64 / capacity as f64
}

/// The volume targets local optimisation looks at: those whose output the
/// next stage turns into something ([`Stage::next_rate`]), the department's
/// own input (visitors) aside (docs/domain.md, "Local optimisation").
pub const WATCHED: [Stage; 3] = [Stage::Leads, Stage::Opportunities, Stage::Wins];

/// A department met its volume target while the next stage's rate on its
/// output fell below the baseline's (both rates known).
pub fn locally_optimised(target: i64, actual: i64, rate: Option<Rate>, baseline: Option<Rate>) -> bool {
    actual >= target && matches!((rate, baseline), (Some(r), Some(b)) if r.below(b))
}

/// How far along a period is: `elapsed` of `days` business days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub elapsed: i64,
    pub days: i64,
}

impl Progress {
    /// Today (`today`, a business day) in the period `[start, end)`: the days
    /// up to and including today, from 0 before it to all after it.
    pub fn of((start, end): (i64, i64), today: i64) -> Progress {
        Progress { elapsed: (today + 1 - start).clamp(0, end - start), days: end - start }
    }

    /// The part of `target` a steady pace reaches by now.
    pub fn expected(self, target: f64) -> f64 {
        target * self.elapsed as f64 / self.days as f64
    }

    /// [`Progress::expected`] of an amount in nanos, exactly (rounded down).
    pub fn expected_nanos(self, target: i128) -> i128 {
        target * i128::from(self.elapsed) / i128::from(self.days)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(win: (i64, i64), opportunity: (i64, i64), acquisition: Option<(i64, i64)>) -> Rates<Rate> {
        Rates {
            win: Rate::of(win.0, win.1),
            opportunity: Rate::of(opportunity.0, opportunity.1),
            acquisition: acquisition.and_then(|(n, d)| Rate::of(n, d)),
            promising: None,
            quality: None,
            renewal: None,
            churn: None,
        }
    }

    fn counts(t: &BTreeMap<Stage, Target>) -> Vec<(Stage, i64, bool)> {
        t.iter().map(|(s, t)| (*s, t.count, t.derived.is_some())).collect()
    }

    #[test]
    fn upstream_targets_follow_from_a_revenue_target() {
        // 10 wins from revenue; win rate 2/3, 3 opportunities in 4 leads, 1 lead in 50 visitors.
        let t = derive(&BTreeMap::new(), Some(10), &rates((2, 3), (3, 4), Some((1, 50)))).unwrap();
        assert_eq!(
            counts(&t),
            [
                (Stage::Visitors, 1000, true),
                (Stage::Leads, 20, true),
                (Stage::Opportunities, 15, true),
                (Stage::Wins, 10, true)
            ]
        );
        assert_eq!(t[&Stage::Wins].derived, Some(None), "wins come from revenue, not a rate");
        assert_eq!(t[&Stage::Opportunities].derived, Some(Rate::of(2, 3)));
    }

    #[test]
    fn a_given_target_is_kept_and_what_is_above_derives_from_it() {
        let given = BTreeMap::from([(Stage::Wins, 10), (Stage::Leads, 30), (Stage::Retained, 4)]);
        let t = derive(&given, Some(99), &rates((1, 2), (1, 3), Some((1, 10)))).unwrap();
        assert_eq!(
            counts(&t),
            [
                (Stage::Visitors, 300, true),
                (Stage::Leads, 30, false),
                (Stage::Opportunities, 20, true),
                (Stage::Wins, 10, false),
                (Stage::Retained, 4, false)
            ],
            "wins given win over revenue; leads given are kept; visitors come from them"
        );
        // Nothing below leads given: only what is above them is derived.
        let t = derive(&BTreeMap::from([(Stage::Leads, 30)]), None, &rates((1, 2), (1, 3), Some((1, 10)))).unwrap();
        assert_eq!(counts(&t), [(Stage::Visitors, 300, true), (Stage::Leads, 30, false)]);
    }

    #[test]
    fn an_unknown_rate_is_refused_not_guessed() {
        let e = derive(&BTreeMap::from([(Stage::Wins, 5)]), None, &rates((1, 2), (1, 3), None)).unwrap_err();
        assert!(e.contains("acquisition rate"), "{e}");
        let e = derive(&BTreeMap::from([(Stage::Wins, 5)]), None, &rates((0, 2), (1, 3), None)).unwrap_err();
        assert!(e.contains("win rate"), "{e}");
    }

    #[test]
    fn progress_through_a_period() {
        let nov = (100, 130);
        assert_eq!(Progress::of(nov, 99), Progress { elapsed: 0, days: 30 });
        assert_eq!(Progress::of(nov, 100), Progress { elapsed: 1, days: 30 }, "today counts");
        assert_eq!(Progress::of(nov, 114).expected(30.0), 15.0);
        assert_eq!(Progress::of(nov, 114).expected_nanos(30_000_000_001), 15_000_000_000, "rounded down");
        assert_eq!(Progress::of(nov, 400), Progress { elapsed: 30, days: 30 });
    }

    #[test]
    fn idle_capacity_and_local_optimisation() {
        assert_eq!((idle(4, 1), idle(2, 2), idle(2, 5)), (0.75, 0.0, 0.0), "more than capacity leaves nothing idle");
        assert_eq!(idle(i64::MAX, -1), 1.0, "never overflows");
        let (two_thirds, one) = (Rate::of(2, 3), Rate::of(2, 2));
        assert!(locally_optimised(2, 2, two_thirds, one), "met, and the rate fell");
        assert!(!locally_optimised(3, 2, two_thirds, one), "not met");
        assert!(!locally_optimised(2, 2, one, two_thirds), "the rate rose");
        assert!(!locally_optimised(2, 2, Rate::of(4, 4), one), "the same rate, exactly");
        assert!(!locally_optimised(2, 2, None, one), "an unknown rate proves nothing");
    }
}
