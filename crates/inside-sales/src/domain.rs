//! Inside sales' rules: the call list, the first-contact SLA, the BANT gate,
//! and the three ways a lead leaves the queue (converted, recycled,
//! disqualified). Each step returns the events it causes and the hand-overs
//! it makes; no SQL, no gRPC clients.

use themodel_proto::common::v1 as common;
use themodel_proto::fieldsales::v1::{AcceptOpportunityRequest, ErasePersonRequest};
use themodel_proto::insidesales::v1 as pb;
use themodel_proto::marketing::v1::{ExcludeLeadRequest, RecycleLeadRequest};
use themodel_quality::{BantCondition, BantRecord, Definition, ReasonRefused};
use themodel_runtime::Effects;
use themodel_runtime::outbox::Handover;
use themodel_runtime::owners::{self, Owner, Roster};
use themodel_runtime::time::{Micros, to_timestamp};
use themodel_runtime::wire::{bant_to_proto, department_to_proto, money_to_proto};
use themodel_values::{Code, Department, Email, LeadId, Money, OpportunityId, time};

/// Inside sales' effects: its events and hand-overs.
pub type Out = Effects<pb::InsideSalesEvent>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Open,
    Converted,
    Recycled,
    Disqualified,
}

impl Status {
    pub const ALL: [Status; 4] = [Status::Open, Status::Converted, Status::Recycled, Status::Disqualified];

    pub fn code(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Converted => "converted",
            Status::Recycled => "recycled",
            Status::Disqualified => "disqualified",
        }
    }

    pub fn from_code(code: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.code() == code)
    }
}

/// A lead handed over by marketing (the hand-over request, validated).
#[derive(Debug, Clone)]
pub struct IncomingLead {
    pub lead_id: LeadId,
    pub email: Email,
    pub name: String,
    pub company: String,
    pub company_size: i32,
    pub industry: String,
    pub job_title: String,
    pub source: Code,
    pub campaign: String,
    pub channel: Option<Code>,
    pub score: i32,
    pub definition_version: i64,
    pub handed_over_at: Micros,
    /// When marketing erased the person (contact fields then empty).
    pub erased_at: Option<Micros>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueItem {
    pub lead_id: LeadId,
    pub email: Email,
    pub name: String,
    pub company: String,
    pub company_size: i32,
    pub industry: String,
    pub job_title: String,
    pub source: Code,
    pub campaign: String,
    pub channel: Option<Code>,
    pub score: i32,
    pub status: Status,
    pub handed_over_at: Micros,
    pub follow_up_due_at: Micros,
    pub first_contact_at: Option<Micros>,
    pub bant: Option<BantRecord>,
    pub activity_count: i32,
    pub opportunity_id: Option<OpportunityId>,
    pub recycle_reason: String,
    pub disqualify_reason: String,
    pub definition_version: i64,
    /// The rep who owns the lead.
    pub owner: Option<Owner>,
    /// When the person was erased ([`QueueItem::erase`]).
    pub erased_at: Option<Micros>,
}

/// Why inside sales refuses a step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("lead {lead} is {} and no longer in the queue", status.code())]
    NotOpen { lead: LeadId, status: Status },
    #[error("BANT must be recorded before converting lead {0}")]
    NoBant(LeadId),
    #[error("BANT conditions required to convert lead {lead} are not confirmed: {}", names(missing))]
    MissingBant { lead: LeadId, missing: Vec<BantCondition> },
    #[error(transparent)]
    Reason(#[from] ReasonRefused),
}

fn names(c: &[BantCondition]) -> String {
    c.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
}

fn event(at: Micros, e: pb::inside_sales_event::Event) -> pb::InsideSalesEvent {
    pb::InsideSalesEvent { occurred_at: Some(to_timestamp(at)), event: Some(e) }
}

/// A validated conversion.
#[derive(Debug, Clone)]
pub struct Conversion {
    pub opportunity_id: OpportunityId,
    pub estimated_value: Option<Money>,
    pub note: String,
    pub at: Micros,
}

impl QueueItem {
    /// A lead enters the queue with a follow-up deadline from the
    /// definition's SLA for its source. A lead that comes back after
    /// recycling reopens, keeping its activity history.
    /// `owner` is the rep it goes to, and how they were chosen (see
    /// [`QueueItem::returning_owner`]).
    pub fn accept(
        lead: IncomingLead,
        existing: Option<&QueueItem>,
        handover_id: &str,
        def: &Definition,
        owner: Option<(Owner, common::AssignmentRule)>,
    ) -> (QueueItem, Out) {
        let sla = def.follow_up_sla_hours(lead.source.as_str());
        let due = time::add_hours_capped(lead.handed_over_at, sla);
        let item = QueueItem {
            lead_id: lead.lead_id,
            email: lead.email,
            name: lead.name,
            company: lead.company,
            company_size: lead.company_size,
            industry: lead.industry,
            job_title: lead.job_title,
            source: lead.source,
            campaign: lead.campaign,
            channel: lead.channel,
            score: lead.score,
            status: Status::Open,
            handed_over_at: lead.handed_over_at,
            follow_up_due_at: due,
            first_contact_at: None,
            bant: None,
            activity_count: existing.map_or(0, |e| e.activity_count),
            opportunity_id: None,
            recycle_reason: String::new(),
            disqualify_reason: String::new(),
            definition_version: lead.definition_version,
            owner: owner.as_ref().map(|(o, _)| o.clone()),
            erased_at: lead.erased_at.or(existing.and_then(|e| e.erased_at)),
        };
        let (owner_id, team) = owners::fields(item.owner.as_ref());
        let out = Out::default().event(event(
            item.handed_over_at,
            pb::inside_sales_event::Event::LeadAccepted(pb::LeadAccepted {
                lead_id: item.lead_id.to_string(),
                source: item.source.to_string(),
                score: item.score,
                follow_up_due_at: Some(to_timestamp(due)),
                follow_up_sla_hours: i32::try_from(sla).unwrap_or(i32::MAX),
                handover_id: handover_id.to_owned(),
                definition_version: item.definition_version,
                reopened: existing.is_some(),
                owner_id,
                team,
                assignment_rule: owner.map_or(common::AssignmentRule::Unspecified, |(_, rule)| rule) as i32,
            }),
        ));
        (item, out)
    }

    /// Whether a hand-over made at `handed_over_at` changes this item. A
    /// lead comes back only through a later hand-over: after inside sales
    /// recycled it, or after its opportunity was lost and marketing nurtured
    /// it again. Anything else (a repeat of an earlier hand-over, a lead
    /// still open here, a disqualified one) is acknowledged without effect:
    /// a converted lead is never reopened by a stale hand-over, so one
    /// hand-over can never become two opportunities.
    pub fn takes_hand_over(&self, handed_over_at: Micros) -> bool {
        match self.status {
            Status::Recycled | Status::Converted => handed_over_at > self.handed_over_at,
            Status::Open | Status::Disqualified => false,
        }
    }

    /// The rep a lead coming back (handed over again) keeps: its owner,
    /// while still on `roster`.
    pub fn returning_owner(existing: Option<&QueueItem>, roster: &Roster) -> Option<Owner> {
        existing.and_then(|e| e.owner.clone()).filter(|o| roster.keeps(o))
    }

    /// Gives the open lead to `owner`; nothing changes (and no event) when
    /// they own it already.
    pub fn assign(&mut self, owner: Owner, at: Micros) -> Result<Out, Refused> {
        self.ensure_open()?;
        let Some(previous_owner_id) = owners::reassign(&mut self.owner, owner) else {
            return Ok(Out::default());
        };
        let (owner_id, team) = owners::fields(self.owner.as_ref());
        Ok(Out::default().event(event(
            at,
            pb::inside_sales_event::Event::LeadAssigned(pb::LeadAssigned {
                lead_id: self.lead_id.to_string(),
                owner_id,
                team,
                previous_owner_id,
                assignment_rule: common::AssignmentRule::Requested as i32,
            }),
        )))
    }

    fn ensure_open(&self) -> Result<(), Refused> {
        if self.status == Status::Open {
            Ok(())
        } else {
            Err(Refused::NotOpen { lead: self.lead_id.clone(), status: self.status })
        }
    }

    /// Logs an activity; the first since the latest hand-over is the first contact.
    pub fn log_activity(
        &mut self,
        activity_id: &str,
        kind: pb::ActivityKind,
        outcome: pb::ActivityOutcome,
        at: Micros,
    ) -> Out {
        self.activity_count = self.activity_count.saturating_add(1);
        let first_contact = self.first_contact_at.is_none();
        if first_contact {
            self.first_contact_at = Some(at);
        }
        Out::default().event(event(
            at,
            pb::inside_sales_event::Event::ActivityLogged(pb::ActivityLogged {
                lead_id: self.lead_id.to_string(),
                activity_id: activity_id.to_owned(),
                kind: kind as i32,
                outcome: outcome as i32,
                first_contact,
                sla_met: if first_contact { self.sla_met() } else { None },
            }),
        ))
    }

    pub fn record_bant(&mut self, bant: BantRecord, at: Micros) -> Result<Out, Refused> {
        self.ensure_open()?;
        let flags = bant.bant;
        self.bant = Some(bant);
        Ok(Out::default().event(event(
            at,
            pb::inside_sales_event::Event::BantRecorded(pb::BantRecorded {
                lead_id: self.lead_id.to_string(),
                budget: flags.budget,
                authority: flags.authority,
                need: flags.need,
                timeline: flags.timeline,
            }),
        )))
    }

    /// Converts to an opportunity if the definition's BANT gate passes and
    /// hands it to field sales. Returns whether it is a quality opportunity
    /// (all four conditions confirmed).
    pub fn convert(&mut self, c: &Conversion, def: &Definition) -> Result<(bool, Out), Refused> {
        self.ensure_open()?;
        let record = self.bant.clone().ok_or_else(|| Refused::NoBant(self.lead_id.clone()))?;
        let missing = def.missing_for_opportunity(record.bant);
        if !missing.is_empty() {
            return Err(Refused::MissingBant { lead: self.lead_id.clone(), missing });
        }
        let quality = record.bant.is_complete();
        self.status = Status::Converted;
        self.opportunity_id = Some(c.opportunity_id.clone());
        self.definition_version = def.version;
        let (owner_id, team) = owners::fields(self.owner.as_ref());
        let handover = Handover::new(AcceptOpportunityRequest {
            request_id: String::new(),
            opportunity_id: c.opportunity_id.to_string(),
            lead_id: self.lead_id.to_string(),
            company: self.company.clone(),
            contact_name: self.name.clone(),
            contact_email: self.email.to_string(),
            source: self.source.to_string(),
            bant: Some(bant_to_proto(&record)),
            estimated_value: c.estimated_value.as_ref().map(money_to_proto),
            quality,
            definition_version: def.version,
            occurred_at: Some(to_timestamp(c.at)),
            handed_over_by: self.owner.as_ref().map(|o| o.id.to_string()).unwrap_or_default(),
        });
        let mut out = Out::default().event(event(
            c.at,
            pb::inside_sales_event::Event::OpportunityConverted(pb::OpportunityConverted {
                opportunity_id: c.opportunity_id.to_string(),
                lead_id: self.lead_id.to_string(),
                quality,
                source: self.source.to_string(),
                estimated_value: c.estimated_value.as_ref().map(money_to_proto),
                handover_id: handover.id.clone(),
                definition_version: def.version,
                owner_id,
                team,
            }),
        ));
        out.push_handover(handover);
        Ok((quality, out))
    }

    /// Sends the lead back to marketing with one of the definition's reasons.
    pub fn recycle(
        &mut self,
        reason: &str,
        timing_months: i32,
        note: &str,
        at: Micros,
        def: &Definition,
    ) -> Result<Out, Refused> {
        self.ensure_open()?;
        def.check_recycle(reason, timing_months)?;
        self.status = Status::Recycled;
        self.recycle_reason = reason.to_string();
        let handover = Handover::new(RecycleLeadRequest {
            request_id: String::new(),
            lead_id: self.lead_id.to_string(),
            reason: reason.to_string(),
            sender: department_to_proto(Department::InsideSales) as i32,
            timing_months,
            note: note.to_owned(),
            occurred_at: Some(to_timestamp(at)),
        });
        let mut out = Out::default().event(event(
            at,
            pb::inside_sales_event::Event::LeadRecycled(pb::LeadRecycled {
                lead_id: self.lead_id.to_string(),
                reason: reason.to_string(),
                timing_months,
                handover_id: handover.id.clone(),
                definition_version: def.version,
            }),
        ));
        out.push_handover(handover);
        Ok(out)
    }

    /// The lead is never-buy after all: it leaves the queue, and marketing
    /// is told (ExcludeLead) so that it is never handed over again.
    pub fn disqualify(&mut self, reason: &Code, at: Micros, def: &Definition) -> Result<Out, Refused> {
        self.ensure_open()?;
        def.check_never_buy_reason(reason.as_str())?;
        self.status = Status::Disqualified;
        self.disqualify_reason = reason.to_string();
        let handover = Handover::new(ExcludeLeadRequest {
            request_id: String::new(),
            lead_id: self.lead_id.to_string(),
            reason: reason.to_string(),
            sender: department_to_proto(Department::InsideSales) as i32,
            note: String::new(),
            occurred_at: Some(to_timestamp(at)),
        });
        let mut out = Out::default().event(event(
            at,
            pb::inside_sales_event::Event::LeadDisqualified(pb::LeadDisqualified {
                lead_id: self.lead_id.to_string(),
                reason: reason.to_string(),
                handover_id: handover.id.clone(),
                definition_version: def.version,
            }),
        ));
        out.push_handover(handover);
        Ok(out)
    }

    /// Whether first contact came within the follow-up SLA (None until contacted).
    pub fn sla_met(&self) -> Option<bool> {
        self.first_contact_at.map(|t| t <= self.follow_up_due_at)
    }

    pub fn bant_proto(&self) -> common::Bant {
        self.bant.as_ref().map(bant_to_proto).unwrap_or_default()
    }

    /// Erases the person (marketing's erasure, handed on): their e-mail
    /// address and name, and the BANT notes, are removed; the
    /// item keeps its id, company, dimensions, status and history. The
    /// notes of its activities are the store's to clear. Each opportunity
    /// the lead became (`opportunities`: every conversion) has the erasure
    /// handed on to field sales. Erasing again does nothing.
    pub fn erase(&mut self, at: Micros, opportunities: &[OpportunityId]) -> Out {
        if self.erased_at.is_some() {
            return Out::default();
        }
        self.email = Email::erased();
        self.name.clear();
        if let Some(b) = &mut self.bant {
            b.clear_notes();
        }
        self.erased_at = Some(at);
        let mut out = Out::default();
        let all: std::collections::BTreeSet<&OpportunityId> =
            opportunities.iter().chain(&self.opportunity_id).collect();
        for id in all {
            out.push_handover(Handover::new(ErasePersonRequest {
                request_id: String::new(),
                opportunity_id: id.to_string(),
                lead_id: self.lead_id.to_string(),
            }));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use themodel_quality::Bant;
    use themodel_values::time::HOUR;

    use super::*;

    fn incoming(source: &str) -> IncomingLead {
        IncomingLead {
            lead_id: LeadId::parse("lead-1").expect("id"),
            email: Email::parse("a@corp.example").expect("email"),
            name: "A".into(),
            company: "Corp".into(),
            company_size: 100,
            industry: "software".into(),
            job_title: "CTO".into(),
            source: Code::parse(source).expect("code"),
            campaign: String::new(),
            channel: None,
            score: 70,
            definition_version: 1,
            handed_over_at: 1_000,
            erased_at: None,
        }
    }

    fn bant(budget: bool, authority: bool, need: bool, timeline: bool) -> BantRecord {
        BantRecord { bant: Bant { budget, authority, need, timeline }, ..Default::default() }
    }

    fn conversion(id: &str) -> Conversion {
        Conversion {
            opportunity_id: OpportunityId::parse(id).expect("id"),
            estimated_value: None,
            note: String::new(),
            at: 5_000,
        }
    }

    #[test]
    fn follow_up_deadline_follows_the_source_sla() {
        let def = Definition::default();
        let (quote, _) = QueueItem::accept(incoming("quote_request"), None, "ho-1", &def, None);
        assert_eq!(quote.follow_up_due_at, 1_000 + 2 * HOUR);
        let (show, _) = QueueItem::accept(incoming("trade_show"), None, "ho-2", &def, None);
        assert_eq!(show.follow_up_due_at, 1_000 + 72 * HOUR);
    }

    #[test]
    fn first_contact_and_sla() {
        let def = Definition::default();
        let (mut item, _) = QueueItem::accept(incoming("quote_request"), None, "ho", &def, None);
        assert_eq!(item.sla_met(), None);
        let call = (pb::ActivityKind::Call, pb::ActivityOutcome::Connected);
        let out = item.log_activity("ac-1", call.0, call.1, 1_000 + 3 * HOUR);
        let Some(pb::inside_sales_event::Event::ActivityLogged(a)) = &out.events[0].event else { panic!() };
        assert_eq!((a.first_contact, a.sla_met), (true, Some(false)));
        item.log_activity("ac-2", call.0, call.1, 1_000 + 4 * HOUR);
        assert_eq!(item.activity_count, 2);
    }

    #[test]
    fn only_a_later_hand_over_brings_a_lead_back() {
        let def = Definition::default();
        let (mut item, _) = QueueItem::accept(incoming("web_form"), None, "ho", &def, None);
        let (earlier, same, later) = (999, 1_000, 1_001);
        assert!(!item.takes_hand_over(later), "open: a second hand-over changes nothing");
        for status in [Status::Converted, Status::Recycled] {
            item.status = status;
            assert!(!item.takes_hand_over(earlier), "{status:?}: a stale hand-over");
            assert!(!item.takes_hand_over(same), "{status:?}: the same hand-over again");
            assert!(item.takes_hand_over(later), "{status:?}: handed over again after it came back to marketing");
        }
        item.status = Status::Disqualified;
        assert!(!item.takes_hand_over(later), "a disqualified lead never comes back");
    }

    #[test]
    fn conversion_gate_and_hand_over() {
        let def = Definition::default();
        let (mut item, _) = QueueItem::accept(incoming("web_form"), None, "ho", &def, None);
        assert!(matches!(item.convert(&conversion("opp-1"), &def), Err(Refused::NoBant(_))));
        item.record_bant(bant(true, true, true, false), 2_000).expect("open");
        assert!(
            matches!(item.convert(&conversion("opp-1"), &def), Err(Refused::MissingBant { missing, .. }) if missing == vec![BantCondition::Timeline])
        );
        item.record_bant(bant(false, false, true, true), 3_000).expect("open");
        let (quality, out) = item.convert(&conversion("opp-1"), &def).expect("gate passes");
        assert!(!quality, "not all four: not a quality opportunity");
        assert_eq!(out.handovers.len(), 1);
        assert_eq!(out.handovers[0].destination, "field-sales");
        assert_eq!(item.status, Status::Converted);
        assert!(matches!(
            item.convert(&conversion("opp-2"), &def),
            Err(Refused::NotOpen { status: Status::Converted, .. })
        ));
    }

    #[test]
    fn recycle_reasons_come_from_the_definition() {
        let def = Definition::default();
        let (mut item, _) = QueueItem::accept(incoming("web_form"), None, "ho", &def, None);
        let e = item.recycle("bored", 0, "", 2_000, &def).unwrap_err();
        assert!(e.to_string().contains("accepted: not_contacted, timing, no_budget, no_need"), "{e}");
        assert_eq!(item.status, Status::Open, "a refused recycle changes nothing");
        let e = item.recycle("Timing", 3, "", 2_000, &def).unwrap_err();
        assert!(e.to_string().contains("\"Timing\" is not a reason"), "exactly as listed: {e}");
        assert!(item.recycle("timing", 0, "", 2_000, &def).is_err(), "timing needs months");
        let out = item.recycle("timing", 3, "", 2_000, &def).expect("valid");
        assert_eq!(out.handovers[0].destination, "marketing");
        assert_eq!(item.status, Status::Recycled);
    }

    #[test]
    fn recycled_lead_reopens_when_handed_over_again() {
        let def = Definition::default();
        let (mut item, _) = QueueItem::accept(incoming("web_form"), None, "ho-1", &def, None);
        item.log_activity("ac", pb::ActivityKind::Call, pb::ActivityOutcome::NoAnswer, 2_000);
        item.recycle("no_budget", 0, "", 3_000, &def).expect("open");
        let (again, _) = QueueItem::accept(incoming("web_form"), Some(&item), "ho-2", &def, None);
        assert_eq!(again.status, Status::Open);
        assert_eq!(again.first_contact_at, None, "a new hand-over gets a new SLA clock");
        assert_eq!(again.activity_count, 1, "activity history is kept");
    }

    #[test]
    fn a_returning_lead_keeps_its_rep_while_they_are_on_the_roster() {
        let def = Definition::default();
        let roster: Roster = "east/aki, west/chika".parse().expect("roster");
        let aki = roster.owner("aki").expect("member");
        let (mut item, _) = QueueItem::accept(incoming("web_form"), None, "ho-1", &def, None);
        let out = item.assign(aki.clone(), 1_500).expect("open");
        assert_eq!(out.events.len(), 1);
        assert!(item.assign(aki.clone(), 1_600).expect("open").events.is_empty(), "already theirs: no event");
        item.recycle("no_budget", 0, "", 3_000, &def).expect("open");
        assert_eq!(QueueItem::returning_owner(Some(&item), &roster), Some(aki.clone()));
        let smaller: Roster = "west/chika".parse().expect("roster");
        assert_eq!(QueueItem::returning_owner(Some(&item), &smaller), None, "aki left: round-robin again");
        assert!(matches!(item.assign(aki, 4_000), Err(Refused::NotOpen { .. })));
    }
}
