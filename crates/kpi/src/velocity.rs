//! Velocity: how long leads and deals stay in each stage and field-sales
//! phase, how old the open stays are, and inside sales' first contacts
//! against the follow-up deadline (docs/domain.md, "Velocity").
//!
//! A journey yields its [`Stay`]s ([`crate::journey::Journey::stays`]); the
//! store keeps them one row each with the lead's split values, and a read
//! summarises the rows of a period here. No SQL, no I/O.

use std::time::Duration;

use themodel_quality::Phase;

/// Where a stay is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// With marketing: capture (or a recycle) until hand-over or exclusion.
    Nurture,
    /// With inside sales: hand-over until converted, recycled or disqualified.
    InsideSales,
    /// With field sales: opened until won or lost.
    FieldSales,
    /// In one open field-sales phase.
    Phase(Phase),
}

impl Stage {
    /// Every stage, in the order a response lists them.
    pub fn all() -> impl Iterator<Item = Stage> {
        [Stage::Nurture, Stage::InsideSales, Stage::FieldSales].into_iter().chain(Phase::OPEN.map(Stage::Phase))
    }

    /// The name rows are stored under.
    pub fn code(self) -> &'static str {
        match self {
            Stage::Nurture => "nurture",
            Stage::InsideSales => "inside_sales",
            Stage::FieldSales => "field_sales",
            Stage::Phase(Phase::PreOpportunity) => "pre_opportunity",
            Stage::Phase(Phase::IssueRecognition) => "issue_recognition",
            Stage::Phase(Phase::Evaluation) => "evaluation",
            Stage::Phase(Phase::Negotiation) => "negotiation",
            Stage::Phase(Phase::Approval) => "approval",
            Stage::Phase(Phase::Won) => "won",
            Stage::Phase(Phase::Lost) => "lost",
        }
    }

    pub fn from_code(code: &str) -> Option<Stage> {
        Stage::all().find(|s| s.code() == code)
    }
}

/// One stay of a lead or deal in a stage. Times are microseconds since the
/// Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stay {
    pub stage: Stage,
    pub start: i64,
    /// `None` while open.
    pub end: Option<i64>,
    /// For inside sales: the follow-up deadline, and the first contact.
    pub due: Option<i64>,
    pub first_contact: Option<i64>,
}

/// Quantile `q` (0–1) of sorted values, linear between the closest ranks
/// (numpy's default): `None` for no values.
pub fn quantile(sorted: &[i64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = q * last as f64;
    let i = rank.floor() as usize;
    let f = rank - i as f64;
    let low = sorted[i] as f64;
    Some(match sorted.get(i + 1) {
        Some(&high) if f > 0.0 => low + f * (high as f64 - low),
        _ => low,
    })
}

/// Microseconds as a duration, rounded to the nanosecond (negative ones,
/// which clock skew between services could give, as zero).
pub fn micros_to_duration(micros: f64) -> Duration {
    Duration::from_nanos((micros * 1000.0).round().max(0.0) as u64)
}

/// Median, 90th percentile and count of some durations (microseconds).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spread {
    values: Vec<i64>,
}

impl Spread {
    pub fn push(&mut self, micros: i64) {
        self.values.push(micros);
    }

    pub fn count(&self) -> i64 {
        self.values.len() as i64
    }

    /// `(median, p90, max)`, each `None` without values.
    pub fn summary(&mut self) -> (Option<Duration>, Option<Duration>, Option<Duration>) {
        self.values.sort_unstable();
        let at = |q| quantile(&self.values, q).map(micros_to_duration);
        (at(0.5), at(0.9), self.values.last().map(|&m| micros_to_duration(m as f64)))
    }
}

/// One stage's figures over a period.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageFigures {
    /// Lengths of the stays that ended in the period.
    pub exits: Spread,
    /// Ages of the stays open at the as-of moment.
    pub open: Spread,
}

/// The follow-up SLA over a period.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FollowUp {
    /// Times from hand-over to the first contacts made in the period.
    pub first_contacts: Spread,
    pub within_sla: i64,
    pub awaiting: i64,
    pub overdue: i64,
}

/// Everything a velocity read reports for one group of leads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Velocity {
    pub stages: std::collections::BTreeMap<Stage, StageFigures>,
    pub follow_up: FollowUp,
}

impl Velocity {
    /// A stay that ended in the period.
    pub fn exit(&mut self, stage: Stage, start: i64, end: i64) {
        self.stages.entry(stage).or_default().exits.push(end - start);
    }

    /// A stay open at `as_of`; for inside sales, `due` and `first_contact`
    /// say whether it still awaits its first contact and is overdue.
    pub fn open(&mut self, stay: &Stay, as_of: i64) {
        self.stages.entry(stay.stage).or_default().open.push(as_of - stay.start);
        if stay.stage == Stage::InsideSales && stay.first_contact.is_none_or(|c| c > as_of) {
            self.follow_up.awaiting += 1;
            if stay.due.is_some_and(|d| d < as_of) {
                self.follow_up.overdue += 1;
            }
        }
    }

    /// A first contact made in the period, `start` being the hand-over.
    pub fn first_contact(&mut self, start: i64, contact: i64, due: Option<i64>) {
        self.follow_up.first_contacts.push(contact - start);
        if due.is_some_and(|d| contact <= d) {
            self.follow_up.within_sla += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_linear_between_ranks() {
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[7], 0.9), Some(7.0));
        assert_eq!(quantile(&[1, 2, 3, 4], 0.5), Some(2.5), "the mean of the middle two");
        assert_eq!(quantile(&[1, 2, 3], 0.5), Some(2.0));
        // numpy.percentile([10, 20, 30, 40, 50], 90) == 46.0
        assert_eq!(quantile(&[10, 20, 30, 40, 50], 0.9), Some(46.0));
        assert_eq!(micros_to_duration(1.5), Duration::from_nanos(1500));
        assert_eq!(micros_to_duration(-3.0), Duration::ZERO);
    }

    #[test]
    fn open_stays_age_and_await_first_contact() {
        let mut v = Velocity::default();
        let stay =
            |first_contact| Stay { stage: Stage::InsideSales, start: 100, end: None, due: Some(150), first_contact };
        v.open(&stay(None), 200);
        v.open(&stay(Some(120)), 200);
        v.open(&stay(Some(300)), 200);
        assert_eq!((v.follow_up.awaiting, v.follow_up.overdue), (2, 2), "a contact after as_of is not yet made");
        let figures = v.stages.get_mut(&Stage::InsideSales).expect("stage");
        assert_eq!(figures.open.summary().0, Some(Duration::from_micros(100)));
        v.first_contact(100, 150, Some(150));
        v.first_contact(100, 151, Some(150));
        assert_eq!((v.follow_up.first_contacts.count(), v.follow_up.within_sla), (2, 1), "at the deadline is within");
    }

    #[test]
    fn stage_codes_round_trip() {
        for stage in Stage::all() {
            assert_eq!(Stage::from_code(stage.code()), Some(stage));
        }
        assert_eq!(Stage::all().count(), 8);
    }
}
