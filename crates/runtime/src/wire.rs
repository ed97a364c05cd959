//! Conversions between the wire messages both sides of a hand-over share
//! (money, BANT) and the value types, in one place.

use themodel_proto::common::v1 as pb;
use themodel_quality::{Bant, BantRecord};
use themodel_values::{Currency, Money};

use crate::validate::Violations;

/// An optional amount: `None` when absent. A malformed amount is a violation
/// on `field` (or its `currency_code` / `nanos`).
pub fn money(v: &mut Violations, field: &str, m: Option<&pb::Money>) -> Option<Money> {
    let m = m?;
    let currency = v.parse(&format!("{field}.currency_code"), Currency::parse(&m.currency_code))?;
    v.parse(field, Money::new(currency, m.units, m.nanos))
}

/// A required amount.
pub fn required_money(v: &mut Violations, field: &str, m: Option<&pb::Money>) -> Option<Money> {
    if m.is_none() {
        v.add(field, "is required");
    }
    money(v, field, m)
}

pub fn money_to_proto(m: &Money) -> pb::Money {
    pb::Money { currency_code: m.currency().to_string(), units: m.units(), nanos: m.nanos() }
}

/// BANT flags and notes; each note at most 2,000 characters.
pub fn bant(v: &mut Violations, field: &str, b: &pb::Bant) -> BantRecord {
    let mut note = |name: &str, s: &str| v.text(&format!("{field}.{name}"), s, 2000);
    BantRecord {
        budget_note: note("budget_note", &b.budget_note),
        authority_note: note("authority_note", &b.authority_note),
        need_note: note("need_note", &b.need_note),
        timeline_note: note("timeline_note", &b.timeline_note),
        bant: Bant { budget: b.budget, authority: b.authority, need: b.need, timeline: b.timeline },
    }
}

pub fn bant_to_proto(b: &BantRecord) -> pb::Bant {
    pb::Bant {
        budget: b.bant.budget,
        authority: b.bant.authority,
        need: b.bant.need,
        timeline: b.bant.timeline,
        budget_note: b.budget_note.clone(),
        authority_note: b.authority_note.clone(),
        need_note: b.need_note.clone(),
        timeline_note: b.timeline_note.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_rules() {
        let mut v = Violations::new();
        let m = money(&mut v, "value", Some(&pb::Money { currency_code: "jpy".into(), units: 5, nanos: 0 }));
        assert_eq!(m.map(|m| m.currency().to_string()), Some("JPY".to_owned()));
        assert!(v.finish().is_ok());
        let mut v = Violations::new();
        money(&mut v, "value", Some(&pb::Money { currency_code: "YEN!".into(), units: -1, nanos: 0 }));
        required_money(&mut v, "other", None);
        match v.finish() {
            Err(crate::ApiError::InvalidArgument(vs)) => {
                assert_eq!(vs.iter().map(|f| f.field.as_str()).collect::<Vec<_>>(), ["value.currency_code", "other"])
            }
            other => panic!("{other:?}"),
        }
    }
}

/// The enums the shared definition names, between the quality crate and the wire.
pub mod enums {
    use themodel_proto::fieldsales::v1 as fs;
    use themodel_proto::marketing::v1 as mk;
    use themodel_quality::{Phase, TouchKind};

    pub fn touch_kind_to_proto(k: TouchKind) -> mk::TouchKind {
        match k {
            TouchKind::PageView => mk::TouchKind::PageView,
            TouchKind::ProductPageView => mk::TouchKind::ProductPageView,
            TouchKind::EmailOpen => mk::TouchKind::EmailOpen,
            TouchKind::EmailClick => mk::TouchKind::EmailClick,
            TouchKind::VideoView => mk::TouchKind::VideoView,
            TouchKind::ContentDownload => mk::TouchKind::ContentDownload,
            TouchKind::WebinarAttended => mk::TouchKind::WebinarAttended,
            TouchKind::SeminarAttended => mk::TouchKind::SeminarAttended,
            TouchKind::TrialSignup => mk::TouchKind::TrialSignup,
            TouchKind::CatalogueRequest => mk::TouchKind::CatalogueRequest,
            TouchKind::Inquiry => mk::TouchKind::Inquiry,
            TouchKind::QuoteRequest => mk::TouchKind::QuoteRequest,
            TouchKind::FormSubmission => mk::TouchKind::FormSubmission,
        }
    }

    /// `None` for TOUCH_KIND_UNSPECIFIED or a number no kind has.
    pub fn touch_kind_from_proto(k: i32) -> Option<TouchKind> {
        TouchKind::ALL.into_iter().find(|t| touch_kind_to_proto(*t) as i32 == k)
    }

    pub fn phase_to_proto(p: Phase) -> fs::Phase {
        match p {
            Phase::PreOpportunity => fs::Phase::PreOpportunity,
            Phase::IssueRecognition => fs::Phase::IssueRecognition,
            Phase::Evaluation => fs::Phase::Evaluation,
            Phase::Negotiation => fs::Phase::Negotiation,
            Phase::Approval => fs::Phase::Approval,
            Phase::Won => fs::Phase::Won,
            Phase::Lost => fs::Phase::Lost,
        }
    }

    /// `None` for PHASE_UNSPECIFIED or a number no phase has.
    pub fn phase_from_proto(p: i32) -> Option<Phase> {
        Phase::OPEN.into_iter().chain([Phase::Won, Phase::Lost]).find(|q| phase_to_proto(*q) as i32 == p)
    }

    /// The wire names of the touch kinds, for error messages.
    pub fn touch_kind_names() -> String {
        TouchKind::ALL.into_iter().map(|k| touch_kind_to_proto(k).as_str_name()).collect::<Vec<_>>().join(", ")
    }
}

/// Departments on the wire.
pub fn department_to_proto(d: themodel_values::Department) -> pb::Department {
    use themodel_values::Department::*;
    match d {
        Marketing => pb::Department::Marketing,
        InsideSales => pb::Department::InsideSales,
        FieldSales => pb::Department::FieldSales,
        CustomerSuccess => pb::Department::CustomerSuccess,
    }
}

/// `None` for DEPARTMENT_UNSPECIFIED or a number no department has.
pub fn department_from_proto(d: i32) -> Option<themodel_values::Department> {
    themodel_values::Department::ALL.into_iter().find(|x| department_to_proto(*x) as i32 == d)
}
