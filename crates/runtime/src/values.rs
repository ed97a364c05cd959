//! Value types several services exchange: money and a BANT record with notes.
//! Parsed from the wire here, once.

use serde::{Deserialize, Serialize};
use themodel_proto::common::v1 as pb;
use themodel_quality::Bant;

use crate::validate::Violations;

/// An amount of money, never negative (`units` + `nanos` / 10^9).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Money {
    pub currency_code: String,
    pub units: i64,
    pub nanos: i32,
}

impl Money {
    /// Parses a required or optional amount; `None` when absent.
    pub fn parse(v: &mut Violations, field: &str, m: Option<&pb::Money>, required: bool) -> Option<Money> {
        let Some(m) = m else {
            if required {
                v.add(field, "is required");
            }
            return None;
        };
        let code = m.currency_code.trim().to_uppercase();
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            v.add(&format!("{field}.currency_code"), "must be a three-letter ISO 4217 code such as JPY or USD");
        }
        if m.units < 0 || m.nanos < 0 {
            v.add(field, "must not be negative");
        }
        if m.nanos >= 1_000_000_000 {
            v.add(&format!("{field}.nanos"), "must be below 1,000,000,000");
        }
        Some(Money { currency_code: code, units: m.units, nanos: m.nanos })
    }

    pub fn to_proto(&self) -> pb::Money {
        pb::Money { currency_code: self.currency_code.clone(), units: self.units, nanos: self.nanos }
    }
}

/// BANT flags and what the prospect said about each.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BantRecord {
    pub bant: Bant,
    pub budget_note: String,
    pub authority_note: String,
    pub need_note: String,
    pub timeline_note: String,
}

impl BantRecord {
    pub fn parse(v: &mut Violations, field: &str, b: &pb::Bant) -> BantRecord {
        let note = |v: &mut Violations, name: &str, s: &str| v.optional(&format!("{field}.{name}"), s, 2000);
        BantRecord {
            bant: Bant { budget: b.budget, authority: b.authority, need: b.need, timeline: b.timeline },
            budget_note: note(v, "budget_note", &b.budget_note),
            authority_note: note(v, "authority_note", &b.authority_note),
            need_note: note(v, "need_note", &b.need_note),
            timeline_note: note(v, "timeline_note", &b.timeline_note),
        }
    }

    pub fn to_proto(&self) -> pb::Bant {
        pb::Bant {
            budget: self.bant.budget,
            authority: self.bant.authority,
            need: self.bant.need,
            timeline: self.bant.timeline,
            budget_note: self.budget_note.clone(),
            authority_note: self.authority_note.clone(),
            need_note: self.need_note.clone(),
            timeline_note: self.timeline_note.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_rules() {
        let mut v = Violations::new();
        let m =
            Money::parse(&mut v, "value", Some(&pb::Money { currency_code: "jpy".into(), units: 5, nanos: 0 }), true);
        assert_eq!(m.expect("parsed").currency_code, "JPY");
        assert!(v.finish().is_ok());
        let mut v = Violations::new();
        Money::parse(&mut v, "value", Some(&pb::Money { currency_code: "YEN!".into(), units: -1, nanos: 0 }), true);
        assert!(v.finish().is_err());
        let mut v = Violations::new();
        assert_eq!(Money::parse(&mut v, "value", None, true), None);
        assert!(v.finish().is_err());
    }
}
