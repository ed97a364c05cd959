//! Field sales' rules: an opportunity's walk through the six phases,
//! gated by the shared definition's exit criteria, and its close. Each step
//! returns the events it causes and the hand-overs it makes; no SQL, no gRPC
//! clients.

use themodel_proto::common::v1::AssignmentRule;
use themodel_proto::customersuccess::v1::{AcceptWonDealRequest, ErasePersonRequest};
use themodel_proto::fieldsales::v1 as pb;
use themodel_proto::marketing::v1::RecycleLeadRequest;
use themodel_quality::{BantRecord, Definition, Phase, PhaseMoveRefused, ReasonRefused};
use themodel_runtime::Effects;
use themodel_runtime::outbox::Handover;
use themodel_runtime::owners::{self, Owner};
use themodel_runtime::time::{Micros, to_timestamp};
use themodel_runtime::wire::enums::phase_to_proto;
use themodel_runtime::wire::{department_to_proto, money_to_proto};
use themodel_values::{AccountId, Department, LeadId, Money, OpportunityId, Term, time};

/// Field sales' effects: its events and hand-overs.
pub type Out = Effects<pb::FieldSalesEvent>;

/// One move in the stage history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseChange {
    pub from: Phase,
    pub to: Phase,
    pub at: Micros,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Opportunity {
    pub opportunity_id: OpportunityId,
    pub lead_id: LeadId,
    pub company: String,
    pub contact_name: String,
    pub contact_email: String,
    pub source: String,
    pub phase: Phase,
    pub bant: BantRecord,
    pub estimated_value: Option<Money>,
    pub contract_value: Option<Money>,
    pub term: Option<Term>,
    pub account_id: Option<AccountId>,
    pub lost_reason: String,
    pub quality: bool,
    pub opened_at: Micros,
    pub closed_at: Option<Micros>,
    pub definition_version: i64,
    pub history: Vec<PhaseChange>,
    /// The account executive who owns it.
    pub owner: Option<Owner>,
    /// The inside-sales rep who converted the lead (empty: unassigned).
    pub handed_over_by: String,
    /// When the contact was erased ([`Opportunity::erase`]).
    pub erased_at: Option<Micros>,
}

/// An opportunity handed over by inside sales.
#[derive(Debug, Clone)]
pub struct IncomingOpportunity {
    pub opportunity_id: OpportunityId,
    pub lead_id: LeadId,
    pub company: String,
    pub contact_name: String,
    pub contact_email: String,
    pub source: String,
    pub bant: BantRecord,
    pub estimated_value: Option<Money>,
    pub quality: bool,
    pub definition_version: i64,
    pub occurred_at: Micros,
    pub handed_over_by: String,
}

/// A validated win.
#[derive(Debug, Clone)]
pub struct Win {
    pub value: Money,
    pub term: Term,
    pub account_id: AccountId,
    pub at: Micros,
}

/// Why field sales refuses a step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Move(#[from] PhaseMoveRefused),
    #[error("a deal is won from PHASE_APPROVAL; the opportunity is in {}", phase_to_proto(*.0).as_str_name())]
    NotInApproval(Phase),
    #[error("the opportunity is already closed ({})", phase_to_proto(*.0).as_str_name())]
    Closed(Phase),
    #[error("a {0}-month term from then would end after 9999-12-31")]
    TermPastEnd(u32),
    #[error(transparent)]
    Reason(#[from] ReasonRefused),
}

fn event(at: Micros, e: pb::field_sales_event::Event) -> pb::FieldSalesEvent {
    pb::FieldSalesEvent { occurred_at: Some(to_timestamp(at)), event: Some(e) }
}

impl Opportunity {
    /// Opens an opportunity in phase 1 (pre-opportunity), owned by the
    /// account executive the round-robin rule gave it (if any).
    pub fn open(o: IncomingOpportunity, handover_id: &str, owner: Option<Owner>) -> (Opportunity, Out) {
        let opp = Opportunity {
            opportunity_id: o.opportunity_id,
            lead_id: o.lead_id,
            company: o.company,
            contact_name: o.contact_name,
            contact_email: o.contact_email,
            source: o.source,
            phase: Phase::PreOpportunity,
            bant: o.bant,
            estimated_value: o.estimated_value,
            contract_value: None,
            term: None,
            account_id: None,
            lost_reason: String::new(),
            quality: o.quality,
            opened_at: o.occurred_at,
            closed_at: None,
            definition_version: o.definition_version,
            history: Vec::new(),
            owner,
            handed_over_by: o.handed_over_by,
            erased_at: None,
        };
        let (owner_id, team) = owners::fields(opp.owner.as_ref());
        let rule = if opp.owner.is_some() { AssignmentRule::RoundRobin } else { AssignmentRule::Unspecified };
        let out = Out::default().event(event(
            opp.opened_at,
            pb::field_sales_event::Event::OpportunityOpened(pb::OpportunityOpened {
                opportunity_id: opp.opportunity_id.to_string(),
                lead_id: opp.lead_id.to_string(),
                quality: opp.quality,
                source: opp.source.clone(),
                estimated_value: opp.estimated_value.as_ref().map(money_to_proto),
                handover_id: handover_id.to_owned(),
                definition_version: opp.definition_version,
                owner_id,
                team,
                assignment_rule: rule as i32,
                handed_over_by: opp.handed_over_by.clone(),
            }),
        ));
        (opp, out)
    }

    /// Gives the open opportunity to `owner`; nothing changes (and no
    /// event) when they own it already.
    pub fn assign(&mut self, owner: Owner, at: Micros) -> Result<Out, Refused> {
        if !self.phase.is_open() {
            return Err(Refused::Closed(self.phase));
        }
        let Some(previous_owner_id) = owners::reassign(&mut self.owner, owner) else {
            return Ok(Out::default());
        };
        let (owner_id, team) = owners::fields(self.owner.as_ref());
        Ok(Out::default().event(event(
            at,
            pb::field_sales_event::Event::OpportunityAssigned(pb::OpportunityAssigned {
                opportunity_id: self.opportunity_id.to_string(),
                lead_id: self.lead_id.to_string(),
                owner_id,
                team,
                previous_owner_id,
                assignment_rule: AssignmentRule::Requested as i32,
            }),
        )))
    }

    fn move_to(&mut self, to: Phase, at: Micros) -> PhaseChange {
        let change = PhaseChange { from: self.phase, to, at };
        self.history.push(change.clone());
        self.phase = to;
        change
    }

    /// Moves to another open phase; a new BANT, if given, counts for the exit criteria.
    pub fn advance(
        &mut self,
        to: Phase,
        bant: Option<BantRecord>,
        at: Micros,
        def: &Definition,
    ) -> Result<Out, Refused> {
        let candidate = bant.unwrap_or_else(|| self.bant.clone());
        def.check_phase_move(self.phase, to, candidate.bant)?;
        self.bant = candidate;
        self.definition_version = def.version;
        let change = self.move_to(to, at);
        Ok(Out::default().event(event(
            at,
            pb::field_sales_event::Event::PhaseChanged(pb::PhaseChanged {
                opportunity_id: self.opportunity_id.to_string(),
                from_phase: phase_to_proto(change.from) as i32,
                to_phase: phase_to_proto(change.to) as i32,
                definition_version: def.version,
                lead_id: self.lead_id.to_string(),
            }),
        )))
    }

    /// Closes won from APPROVAL (whose exit criteria must hold) and hands the
    /// account over to customer success.
    pub fn close_won(&mut self, win: &Win, def: &Definition) -> Result<Out, Refused> {
        if !self.phase.is_open() {
            return Err(Refused::Closed(self.phase));
        }
        if self.phase != Phase::Approval {
            return Err(Refused::NotInApproval(self.phase));
        }
        def.check_exit(Phase::Approval, self.bant.bant)?;
        if time::add_months(win.at, win.term.months()).is_none() {
            return Err(Refused::TermPastEnd(win.term.months()));
        }
        self.contract_value = Some(win.value);
        self.term = Some(win.term);
        self.account_id = Some(win.account_id.clone());
        self.closed_at = Some(win.at);
        self.definition_version = def.version;
        self.move_to(Phase::Won, win.at);
        let handover = Handover::new(AcceptWonDealRequest {
            request_id: String::new(),
            account_id: win.account_id.to_string(),
            opportunity_id: self.opportunity_id.to_string(),
            lead_id: self.lead_id.to_string(),
            company: self.company.clone(),
            contact_name: self.contact_name.clone(),
            contact_email: self.contact_email.clone(),
            contract_value: Some(money_to_proto(&win.value)),
            term_months: win.term.months_i32(),
            occurred_at: Some(to_timestamp(win.at)),
        });
        let mut out = Out::default().event(event(
            win.at,
            pb::field_sales_event::Event::OpportunityWon(pb::OpportunityWon {
                opportunity_id: self.opportunity_id.to_string(),
                lead_id: self.lead_id.to_string(),
                account_id: win.account_id.to_string(),
                contract_value: Some(money_to_proto(&win.value)),
                term_months: win.term.months_i32(),
                quality: self.quality,
                handover_id: handover.id.clone(),
                definition_version: def.version,
            }),
        ));
        out.push_handover(handover);
        Ok(out)
    }

    /// Closes lost from any open phase, with one of the definition's lost
    /// reasons, and sends the lead back to marketing on that reason's track.
    pub fn close_lost(&mut self, reason: &str, note: &str, at: Micros, def: &Definition) -> Result<Out, Refused> {
        if !self.phase.is_open() {
            return Err(Refused::Closed(self.phase));
        }
        def.check_lost_reason(reason)?;
        let lost_in = self.phase;
        self.lost_reason = reason.to_string();
        self.closed_at = Some(at);
        self.definition_version = def.version;
        self.move_to(Phase::Lost, at);
        let handover = Handover::new(RecycleLeadRequest {
            request_id: String::new(),
            lead_id: self.lead_id.to_string(),
            reason: reason.to_string(),
            sender: department_to_proto(Department::FieldSales) as i32,
            timing_months: 0,
            note: note.to_owned(),
            occurred_at: Some(to_timestamp(at)),
        });
        let mut out = Out::default().event(event(
            at,
            pb::field_sales_event::Event::OpportunityLost(pb::OpportunityLost {
                opportunity_id: self.opportunity_id.to_string(),
                lead_id: self.lead_id.to_string(),
                reason: reason.to_string(),
                phase: phase_to_proto(lost_in) as i32,
                quality: self.quality,
                handover_id: handover.id.clone(),
                definition_version: def.version,
            }),
        ));
        out.push_handover(handover);
        Ok(out)
    }

    /// Erases the contact (marketing's erasure, handed on by inside
    /// sales): contact name and e-mail, and the BANT notes, are removed;
    /// the opportunity keeps its id, company, phase, values and history. A
    /// won deal has the erasure handed on to customer success. Erasing
    /// again does nothing.
    pub fn erase(&mut self, at: Micros) -> Out {
        if self.erased_at.is_some() {
            return Out::default();
        }
        self.contact_name.clear();
        self.contact_email.clear();
        self.bant.clear_notes();
        self.erased_at = Some(at);
        let mut out = Out::default();
        if let Some(account) = &self.account_id {
            out.push_handover(Handover::new(ErasePersonRequest {
                request_id: String::new(),
                account_id: account.to_string(),
                lead_id: self.lead_id.to_string(),
            }));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use themodel_quality::Bant;
    use themodel_values::Currency;

    use super::*;

    fn opp(bant: Bant) -> Opportunity {
        Opportunity::open(
            IncomingOpportunity {
                opportunity_id: OpportunityId::parse("opp-1").expect("id"),
                lead_id: LeadId::parse("lead-1").expect("id"),
                company: "Corp".into(),
                contact_name: "Ada".into(),
                contact_email: "ada@corp.example".into(),
                source: "web_form".into(),
                bant: BantRecord { bant, ..Default::default() },
                estimated_value: None,
                quality: bant.is_complete(),
                definition_version: 1,
                occurred_at: 100,
                handed_over_by: "aki".into(),
            },
            "ho-1",
            None,
        )
        .0
    }

    const ALL: Bant = Bant { budget: true, authority: true, need: true, timeline: true };

    fn win(units: i64, at: Micros) -> Win {
        Win {
            value: Money::new(Currency::parse("JPY").expect("code"), units, 0).expect("amount"),
            term: Term::parse(12).expect("term"),
            account_id: AccountId::parse("acct-1").expect("id"),
            at,
        }
    }

    #[test]
    fn walks_all_phases_to_won() {
        let def = Definition::default();
        let mut o = opp(ALL);
        for to in [Phase::IssueRecognition, Phase::Evaluation, Phase::Negotiation, Phase::Approval] {
            o.advance(to, None, 200, &def).expect("exit criteria met");
        }
        let out = o.close_won(&win(1_200_000, 300), &def).expect("won from approval");
        assert_eq!(out.handovers[0].destination, "customer-success");
        assert_eq!(o.phase, Phase::Won);
        assert_eq!(o.history.len(), 5);
        assert_eq!(o.close_lost("lost_price", "", 400, &def), Err(Refused::Closed(Phase::Won)));
    }

    #[test]
    fn evaluation_needs_all_four_bant() {
        let def = Definition::default();
        let mut o = opp(Bant { need: true, budget: true, ..Default::default() });
        o.advance(Phase::IssueRecognition, None, 1, &def).expect("need is there");
        o.advance(Phase::Evaluation, None, 2, &def).expect("need and budget are there");
        assert!(matches!(
            o.advance(Phase::Negotiation, None, 3, &def),
            Err(Refused::Move(PhaseMoveRefused::ExitCriteria { .. }))
        ));
        let full = BantRecord { bant: ALL, ..Default::default() };
        o.advance(Phase::Negotiation, Some(full), 4, &def).expect("BANT agreed in the move");
        assert!(o.bant.bant.is_complete());
    }

    #[test]
    fn no_skipping_and_won_only_from_approval() {
        let def = Definition::default();
        let mut o = opp(ALL);
        assert!(matches!(
            o.advance(Phase::Negotiation, None, 1, &def),
            Err(Refused::Move(PhaseMoveRefused::Jump { .. }))
        ));
        assert_eq!(o.close_won(&win(1, 2), &def), Err(Refused::NotInApproval(Phase::PreOpportunity)));
        assert_eq!(o.phase, Phase::PreOpportunity, "a refused step changes nothing");
    }

    #[test]
    fn a_term_past_the_end_of_time_is_refused() {
        let def = Definition::default();
        let mut o = opp(ALL);
        for to in [Phase::IssueRecognition, Phase::Evaluation, Phase::Negotiation, Phase::Approval] {
            o.advance(to, None, 200, &def).expect("exit criteria met");
        }
        assert_eq!(o.close_won(&win(1, time::MAX - 1), &def), Err(Refused::TermPastEnd(12)));
        assert_eq!(o.phase, Phase::Approval);
    }

    #[test]
    fn lost_reasons_are_the_definitions_and_are_kept_as_given() {
        let def = Definition::default();
        let mut o = opp(ALL);
        let e = o.close_lost("competitor", "", 2, &def).unwrap_err();
        assert!(e.to_string().contains("accepted: lost_to_competitor"), "{e}");
        assert_eq!(o.phase, Phase::PreOpportunity, "refused, not mapped to lost_other");
        let out = o.close_lost("lost_price", "too dear", 3, &def).expect("listed");
        assert_eq!(o.lost_reason, "lost_price");
        assert_eq!(o.phase, Phase::Lost);
        assert_eq!(out.handovers[0].destination, "marketing");
    }
}
