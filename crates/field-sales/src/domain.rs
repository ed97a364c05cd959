//! Field sales' rules: an opportunity's walk through the six phases of
//! DOMAIN.md §5, gated by the shared definition's exit criteria, and its close.
//! No SQL, no gRPC.

use serde::{Deserialize, Serialize};
use themodel_quality::{Definition, Phase, PhaseMoveRefused};
use themodel_runtime::time::Micros;
use themodel_runtime::values::{BantRecord, Money};

/// One move in the stage history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseChange {
    pub from: Phase,
    pub to: Phase,
    pub at: Micros,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Opportunity {
    pub opportunity_id: String,
    pub lead_id: String,
    pub company: String,
    pub contact_name: String,
    pub contact_email: String,
    pub source: String,
    pub phase: Phase,
    pub bant: BantRecord,
    pub estimated_value: Option<Money>,
    pub contract_value: Option<Money>,
    pub term_months: i32,
    pub account_id: String,
    pub lost_reason: String,
    pub quality: bool,
    pub opened_at: Micros,
    pub closed_at: Option<Micros>,
    pub definition_version: i64,
    pub history: Vec<PhaseChange>,
}

/// An opportunity handed over by inside sales.
#[derive(Debug, Clone)]
pub struct IncomingOpportunity {
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

/// The won account handed to customer success.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WonDealHandover {
    pub account_id: String,
    pub opportunity_id: String,
    pub lead_id: String,
    pub company: String,
    pub contact_name: String,
    pub contact_email: String,
    pub contract_value: Money,
    pub term_months: i32,
    pub occurred_at: Micros,
}

/// A lost deal's lead, sent back to marketing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecycleHandover {
    pub lead_id: String,
    pub reason: String,
    pub note: String,
    pub occurred_at: Micros,
}

/// Why field sales refuses a step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Move(#[from] PhaseMoveRefused),
    #[error("a deal is won from APPROVAL; the opportunity is in {}", .0.name())]
    NotInApproval(Phase),
    #[error("the opportunity is already closed ({})", .0.name())]
    Closed(Phase),
}

impl Opportunity {
    /// Opens an opportunity in phase 1 (pre-opportunity).
    pub fn open(o: IncomingOpportunity) -> Opportunity {
        Opportunity {
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
            term_months: 0,
            account_id: String::new(),
            lost_reason: String::new(),
            quality: o.quality,
            opened_at: o.occurred_at,
            closed_at: None,
            definition_version: o.definition_version,
            history: Vec::new(),
        }
    }

    fn move_to(&mut self, to: Phase, at: Micros) {
        self.history.push(PhaseChange { from: self.phase, to, at });
        self.phase = to;
    }

    /// Moves to another open phase; a new BANT, if given, counts for the exit criteria.
    pub fn advance(
        &mut self,
        to: Phase,
        bant: Option<BantRecord>,
        at: Micros,
        def: &Definition,
    ) -> Result<Phase, Refused> {
        let candidate = bant.unwrap_or_else(|| self.bant.clone());
        def.check_phase_move(self.phase, to, candidate.bant)?;
        let from = self.phase;
        self.bant = candidate;
        self.definition_version = def.version;
        self.move_to(to, at);
        Ok(from)
    }

    /// Closes won from APPROVAL (whose exit criteria must hold).
    pub fn close_won(
        &mut self,
        value: Money,
        term_months: i32,
        account_id: &str,
        at: Micros,
        def: &Definition,
    ) -> Result<(), Refused> {
        if !self.phase.is_open() {
            return Err(Refused::Closed(self.phase));
        }
        if self.phase != Phase::Approval {
            return Err(Refused::NotInApproval(self.phase));
        }
        def.check_exit(Phase::Approval, self.bant.bant)?;
        self.contract_value = Some(value);
        self.term_months = term_months;
        self.account_id = account_id.to_owned();
        self.closed_at = Some(at);
        self.definition_version = def.version;
        self.move_to(Phase::Won, at);
        Ok(())
    }

    /// Closes lost from any open phase. Returns the recycle track the lead goes
    /// back to marketing on (see `Definition::lost_deal_track`).
    pub fn close_lost(&mut self, reason: &str, at: Micros, def: &Definition) -> Result<String, Refused> {
        if !self.phase.is_open() {
            return Err(Refused::Closed(self.phase));
        }
        self.lost_reason = reason.to_owned();
        self.closed_at = Some(at);
        self.move_to(Phase::Lost, at);
        Ok(def.lost_deal_track(reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use themodel_quality::Bant;

    fn opp(bant: Bant) -> Opportunity {
        Opportunity::open(IncomingOpportunity {
            opportunity_id: "opp-1".into(),
            lead_id: "lead-1".into(),
            company: "Corp".into(),
            contact_name: "Ada".into(),
            contact_email: "ada@corp.example".into(),
            source: "web_form".into(),
            bant: BantRecord { bant, ..Default::default() },
            estimated_value: None,
            quality: bant.is_complete(),
            definition_version: 1,
            occurred_at: 100,
        })
    }

    const ALL: Bant = Bant { budget: true, authority: true, need: true, timeline: true };

    fn yen(units: i64) -> Money {
        Money { currency_code: "JPY".into(), units, nanos: 0 }
    }

    #[test]
    fn walks_all_phases_to_won() {
        let def = Definition::default();
        let mut o = opp(ALL);
        for to in [Phase::IssueRecognition, Phase::Evaluation, Phase::Negotiation, Phase::Approval] {
            o.advance(to, None, 200, &def).expect("exit criteria met");
        }
        o.close_won(yen(1_200_000), 12, "acct-1", 300, &def).expect("won from approval");
        assert_eq!(o.phase, Phase::Won);
        assert_eq!(o.history.len(), 5);
        assert_eq!(o.close_lost("lost_price", 400, &def), Err(Refused::Closed(Phase::Won)));
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
        assert_eq!(o.close_won(yen(1), 12, "a", 2, &def), Err(Refused::NotInApproval(Phase::PreOpportunity)));
        assert_eq!(o.phase, Phase::PreOpportunity, "a refused step changes nothing");
    }

    #[test]
    fn lost_keeps_the_reason_and_picks_the_recycle_track() {
        let def = Definition::default();
        let mut o = opp(ALL);
        assert_eq!(o.close_lost("price", 2, &def), Ok("lost_price".to_owned()));
        assert_eq!(o.lost_reason, "price");
        assert_eq!(o.phase, Phase::Lost);
        assert_eq!(o.closed_at, Some(2));
        assert_eq!(o.close_lost("price", 3, &def), Err(Refused::Closed(Phase::Lost)));
    }
}
