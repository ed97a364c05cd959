//! Recycle and lost reasons: the definition lists them, and only those are
//! accepted, each exactly as listed (docs/domain.md: classify the reason, then put
//! the lead on that reason's content track).

use serde::{Deserialize, Serialize};
use themodel_values::is_code;

use crate::{Definition, InvalidDefinition, invalid};

/// A reason inside sales may recycle a lead with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecycleReason {
    /// The code, e.g. `timing`; also the lead's track in marketing.
    pub code: String,
    /// A recycle with this reason says in how many months the timing is
    /// right (1-60); with any other reason that number is refused.
    pub requires_timing_months: bool,
}

impl RecycleReason {
    pub fn new(code: &str, requires_timing_months: bool) -> Self {
        RecycleReason { code: code.to_owned(), requires_timing_months }
    }
}

/// Why a reason is refused. The message lists what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReasonRefused {
    #[error("{reason:?} is not a reason of definition version {version}; accepted: {}", accepted.join(", "))]
    Unknown { reason: String, version: i64, accepted: Vec<String> },
    #[error("reason {0} needs timing_months: months until the timing is right, 1-60")]
    TimingMonthsRequired(String),
    #[error("timing_months is only for a reason that needs it ({}); {reason} does not", needing.join(", "))]
    TimingMonthsNotAllowed { needing: Vec<String>, reason: String },
}

impl Definition {
    /// Checks an inside-sales recycle: the reason is one of
    /// `recycle_reasons`, and `timing_months` is given (1-60) exactly when
    /// its rule requires it.
    pub fn check_recycle(&self, reason: &str, timing_months: i32) -> Result<(), ReasonRefused> {
        let rule = self.recycle_reasons.iter().find(|r| r.code == reason).ok_or_else(|| ReasonRefused::Unknown {
            reason: shown(reason),
            version: self.version,
            accepted: self.recycle_reasons.iter().map(|r| r.code.clone()).collect(),
        })?;
        match (rule.requires_timing_months, timing_months) {
            (true, 1..=60) | (false, 0) => Ok(()),
            (true, _) => Err(ReasonRefused::TimingMonthsRequired(rule.code.clone())),
            (false, _) => Err(ReasonRefused::TimingMonthsNotAllowed {
                needing: self
                    .recycle_reasons
                    .iter()
                    .filter(|r| r.requires_timing_months)
                    .map(|r| r.code.clone())
                    .collect(),
                reason: rule.code.clone(),
            }),
        }
    }

    /// Checks a never-buy reason (a disqualification or a reclassification):
    /// one of `never_buy_reasons`, as listed.
    pub fn check_never_buy_reason(&self, reason: &str) -> Result<(), ReasonRefused> {
        self.check_listed(&self.never_buy_reasons, reason)
    }

    /// Checks a field-sales lost reason: one of `lost_reasons`, as listed.
    pub fn check_lost_reason(&self, reason: &str) -> Result<(), ReasonRefused> {
        self.check_listed(&self.lost_reasons, reason)
    }

    fn check_listed(&self, listed: &[String], reason: &str) -> Result<(), ReasonRefused> {
        if listed.iter().any(|r| r == reason) {
            Ok(())
        } else {
            Err(ReasonRefused::Unknown { reason: shown(reason), version: self.version, accepted: listed.to_vec() })
        }
    }
}

/// The refused text as quoted back: at most 64 characters, so a hostile
/// megabyte does not come back in the error.
fn shown(reason: &str) -> String {
    match reason.char_indices().nth(64) {
        Some((end, _)) => format!("{}…", &reason[..end]),
        None => reason.to_owned(),
    }
}

/// Both lists are non-empty, of codes, without repeats.
pub(crate) fn validate(
    recycle: &[RecycleReason],
    lost: &[String],
    never_buy: &[String],
) -> Result<(), InvalidDefinition> {
    let check = |field: &str, codes: Vec<&str>| {
        if codes.is_empty() {
            return Err(invalid(field, "needs at least one reason"));
        }
        for (i, code) in codes.iter().enumerate() {
            if !is_code(code) {
                return Err(invalid(field, format!("{code:?} is not a code of lower-case letters, digits and '_'")));
            }
            if codes[..i].contains(code) {
                return Err(invalid(field, format!("{code} is listed twice")));
            }
        }
        Ok(())
    };
    check("recycle_reasons", recycle.iter().map(|r| r.code.as_str()).collect())?;
    check("lost_reasons", lost.iter().map(String::as_str).collect())?;
    check("never_buy_reasons", never_buy.iter().map(String::as_str).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycle_reasons_follow_the_definition() {
        let d = Definition::default();
        assert_eq!(d.check_recycle("no_budget", 0), Ok(()));
        assert_eq!(d.check_recycle("timing", 3), Ok(()));
        assert_eq!(d.check_recycle("timing", 0), Err(ReasonRefused::TimingMonthsRequired("timing".into())));
        assert_eq!(d.check_recycle("timing", 61), Err(ReasonRefused::TimingMonthsRequired("timing".into())));
        assert!(matches!(d.check_recycle("no_need", 2), Err(ReasonRefused::TimingMonthsNotAllowed { .. })));
        let unknown = d.check_recycle("bored", 0).unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "\"bored\" is not a reason of definition version 1; accepted: not_contacted, timing, no_budget, no_need"
        );
    }

    #[test]
    fn lost_reasons_are_taken_as_listed_never_mapped() {
        let d = Definition::default();
        assert_eq!(d.check_lost_reason("lost_price"), Ok(()));
        for near_miss in ["price", "competitor", "lost_", "Lost_Price", " lost_price"] {
            let e = d.check_lost_reason(near_miss).unwrap_err();
            assert!(e.to_string().contains("accepted: lost_to_competitor, lost_price"), "{e}");
        }
    }

    #[test]
    fn a_long_refused_reason_is_quoted_short() {
        let d = Definition::default();
        let e = d.check_lost_reason(&"é".repeat(100_000)).unwrap_err();
        assert!(e.to_string().len() < 400, "{e}");
        assert!(e.to_string().contains("accepted: lost_to_competitor"), "{e}");
    }

    #[test]
    fn reason_lists_are_validated() {
        let mut d = Definition::default();
        d.lost_reasons.clear();
        assert_eq!(d.validate().unwrap_err().field, "lost_reasons");
        let mut d = Definition::default();
        d.recycle_reasons.push(RecycleReason::new("timing", false));
        assert_eq!(d.validate().unwrap_err().field, "recycle_reasons");
        let mut d = Definition::default();
        d.recycle_reasons.push(RecycleReason::new("No Budget", false));
        assert_eq!(d.validate().unwrap_err().field, "recycle_reasons");
    }
}
