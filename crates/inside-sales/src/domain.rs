//! Inside sales' rules: the call list, first-contact SLA, BANT gate, and the
//! three ways a lead leaves the queue (converted, recycled, disqualified).
//! No SQL, no gRPC.

use serde::{Deserialize, Serialize};
use themodel_quality::{BantCondition, Definition};
use themodel_runtime::time::{HOUR, Micros};
use themodel_runtime::values::{BantRecord, Money};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Open,
    Converted,
    Recycled,
    Disqualified,
}

impl Status {
    pub fn code(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Converted => "converted",
            Status::Recycled => "recycled",
            Status::Disqualified => "disqualified",
        }
    }

    pub fn from_code(code: &str) -> Option<Status> {
        [Status::Open, Status::Converted, Status::Recycled, Status::Disqualified].into_iter().find(|s| s.code() == code)
    }
}

/// A lead handed over by marketing (the hand-over's payload, validated).
#[derive(Debug, Clone)]
pub struct IncomingLead {
    pub lead_id: String,
    pub email: String,
    pub name: String,
    pub company: String,
    pub company_size: i32,
    pub industry: String,
    pub job_title: String,
    pub source: String,
    pub score: i32,
    pub definition_version: i64,
    pub handed_over_at: Micros,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueItem {
    pub lead_id: String,
    pub email: String,
    pub name: String,
    pub company: String,
    pub company_size: i32,
    pub industry: String,
    pub job_title: String,
    pub source: String,
    pub score: i32,
    pub status: Status,
    pub handed_over_at: Micros,
    pub follow_up_due_at: Micros,
    pub first_contact_at: Option<Micros>,
    pub bant: Option<BantRecord>,
    pub activity_count: i32,
    pub opportunity_id: String,
    pub recycle_reason: String,
    pub definition_version: i64,
}

/// Why inside sales refuses a step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("lead is {} and no longer in the queue", .0.code())]
    NotOpen(Status),
    #[error("BANT must be recorded before converting")]
    NoBant,
    #[error("BANT conditions required to convert are not confirmed: {}", names(.0))]
    MissingBant(Vec<BantCondition>),
}

fn names(c: &[BantCondition]) -> String {
    c.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
}

/// The opportunity handed to field sales.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpportunityHandover {
    pub opportunity_id: String,
    pub lead_id: String,
    pub company: String,
    pub contact_name: String,
    pub contact_email: String,
    pub source: String,
    pub bant: BantRecord,
    pub estimated_value: Option<Money>,
    pub quality: bool,
    pub definition_version: i64,
    pub occurred_at: Micros,
}

/// A lead sent back to marketing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecycleHandover {
    pub lead_id: String,
    pub reason: String,
    pub timing_months: i32,
    pub note: String,
    pub occurred_at: Micros,
}

impl QueueItem {
    /// A lead enters the queue with a follow-up deadline from the definition's
    /// SLA for its source. A lead that comes back after recycling reopens.
    pub fn accept(lead: IncomingLead, existing: Option<QueueItem>, def: &Definition) -> QueueItem {
        let due = lead.handed_over_at + i64::from(def.follow_up_sla_hours(&lead.source)) * HOUR;
        let activity_count = existing.as_ref().map_or(0, |e| e.activity_count);
        QueueItem {
            lead_id: lead.lead_id,
            email: lead.email,
            name: lead.name,
            company: lead.company,
            company_size: lead.company_size,
            industry: lead.industry,
            job_title: lead.job_title,
            source: lead.source,
            score: lead.score,
            status: Status::Open,
            handed_over_at: lead.handed_over_at,
            follow_up_due_at: due,
            first_contact_at: None,
            bant: None,
            activity_count,
            opportunity_id: String::new(),
            recycle_reason: String::new(),
            definition_version: lead.definition_version,
        }
    }

    fn ensure_open(&self) -> Result<(), Refused> {
        if self.status == Status::Open { Ok(()) } else { Err(Refused::NotOpen(self.status)) }
    }

    /// Logs an activity; returns whether it was the first contact.
    pub fn log_activity(&mut self, at: Micros) -> bool {
        self.activity_count += 1;
        if self.first_contact_at.is_none() {
            self.first_contact_at = Some(at);
            true
        } else {
            false
        }
    }

    pub fn record_bant(&mut self, bant: BantRecord) -> Result<(), Refused> {
        self.ensure_open()?;
        self.bant = Some(bant);
        Ok(())
    }

    /// Converts to an opportunity if the definition's BANT gate passes.
    /// Returns whether it is a quality opportunity (all four confirmed).
    pub fn convert(&mut self, opportunity_id: &str, def: &Definition) -> Result<bool, Refused> {
        self.ensure_open()?;
        let bant = self.bant.as_ref().ok_or(Refused::NoBant)?.bant;
        let missing = def.missing_for_opportunity(bant);
        if !missing.is_empty() {
            return Err(Refused::MissingBant(missing));
        }
        self.status = Status::Converted;
        self.opportunity_id = opportunity_id.to_owned();
        self.definition_version = def.version;
        Ok(bant.is_complete())
    }

    pub fn recycle(&mut self, reason: &str) -> Result<(), Refused> {
        self.ensure_open()?;
        self.status = Status::Recycled;
        self.recycle_reason = reason.to_owned();
        Ok(())
    }

    pub fn disqualify(&mut self, reason: &str) -> Result<(), Refused> {
        self.ensure_open()?;
        self.status = Status::Disqualified;
        self.recycle_reason = reason.to_owned();
        Ok(())
    }

    /// Whether first contact came within the follow-up SLA (None until contacted).
    pub fn sla_met(&self) -> Option<bool> {
        self.first_contact_at.map(|t| t <= self.follow_up_due_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use themodel_quality::Bant;

    fn incoming(source: &str) -> IncomingLead {
        IncomingLead {
            lead_id: "lead-1".into(),
            email: "a@corp.example".into(),
            name: "A".into(),
            company: "Corp".into(),
            company_size: 100,
            industry: "software".into(),
            job_title: "CTO".into(),
            source: source.into(),
            score: 70,
            definition_version: 1,
            handed_over_at: 1_000,
        }
    }

    fn bant(budget: bool, authority: bool, need: bool, timeline: bool) -> BantRecord {
        BantRecord { bant: Bant { budget, authority, need, timeline }, ..Default::default() }
    }

    #[test]
    fn follow_up_deadline_follows_the_source_sla() {
        let def = Definition::default();
        let quote = QueueItem::accept(incoming("quote_request"), None, &def);
        assert_eq!(quote.follow_up_due_at, 1_000 + 2 * HOUR);
        let show = QueueItem::accept(incoming("trade_show"), None, &def);
        assert_eq!(show.follow_up_due_at, 1_000 + 72 * HOUR);
    }

    #[test]
    fn first_contact_and_sla() {
        let def = Definition::default();
        let mut item = QueueItem::accept(incoming("quote_request"), None, &def);
        assert_eq!(item.sla_met(), None);
        assert!(item.log_activity(1_000 + 3 * HOUR));
        assert!(!item.log_activity(1_000 + 4 * HOUR));
        assert_eq!(item.sla_met(), Some(false));
        assert_eq!(item.activity_count, 2);
    }

    #[test]
    fn conversion_gate() {
        let def = Definition::default();
        let mut item = QueueItem::accept(incoming("web_form"), None, &def);
        assert_eq!(item.convert("opp-1", &def), Err(Refused::NoBant));
        item.record_bant(bant(true, true, true, false)).expect("open");
        assert_eq!(item.convert("opp-1", &def), Err(Refused::MissingBant(vec![BantCondition::Timeline])));
        item.record_bant(bant(false, false, true, true)).expect("open");
        assert_eq!(item.convert("opp-1", &def), Ok(false), "converted, not a quality opportunity");
        assert_eq!(item.status, Status::Converted);
        assert_eq!(item.convert("opp-2", &def), Err(Refused::NotOpen(Status::Converted)));
        assert_eq!(item.recycle("timing"), Err(Refused::NotOpen(Status::Converted)));
    }

    #[test]
    fn quality_opportunity_has_all_four() {
        let def = Definition::default();
        let mut item = QueueItem::accept(incoming("web_form"), None, &def);
        item.record_bant(bant(true, true, true, true)).expect("open");
        assert_eq!(item.convert("opp-1", &def), Ok(true));
    }

    #[test]
    fn recycled_lead_reopens_when_handed_over_again() {
        let def = Definition::default();
        let mut item = QueueItem::accept(incoming("web_form"), None, &def);
        item.log_activity(2_000);
        item.recycle("no_budget").expect("open");
        let again = QueueItem::accept(incoming("web_form"), Some(item), &def);
        assert_eq!(again.status, Status::Open);
        assert_eq!(again.first_contact_at, None, "a new hand-over gets a new SLA clock");
        assert_eq!(again.activity_count, 1, "activity history is kept");
    }
}
