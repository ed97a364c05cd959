//! BANT gates (docs/domain.md, "Inside sales") and field-sales phase exit criteria ("Field sales").

use serde::{Deserialize, Serialize};

use crate::Definition;

/// BANT qualification: which conditions are confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Bant {
    pub budget: bool,
    pub authority: bool,
    pub need: bool,
    pub timeline: bool,
}

impl Bant {
    /// All four conditions confirmed: a quality opportunity (cooperative KPI).
    pub fn is_complete(self) -> bool {
        self.budget && self.authority && self.need && self.timeline
    }
}

/// One BANT condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BantCondition {
    Budget,
    Authority,
    Need,
    Timeline,
}

impl BantCondition {
    pub fn name(self) -> &'static str {
        match self {
            BantCondition::Budget => "budget",
            BantCondition::Authority => "authority",
            BantCondition::Need => "need",
            BantCondition::Timeline => "timeline",
        }
    }
}

/// The BANT conditions a gate requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BantRequirement {
    pub budget: bool,
    pub authority: bool,
    pub need: bool,
    pub timeline: bool,
}

impl BantRequirement {
    pub const ALL: BantRequirement = BantRequirement { budget: true, authority: true, need: true, timeline: true };

    pub fn only(conditions: &[BantCondition]) -> Self {
        let mut r = BantRequirement::default();
        for c in conditions {
            match c {
                BantCondition::Budget => r.budget = true,
                BantCondition::Authority => r.authority = true,
                BantCondition::Need => r.need = true,
                BantCondition::Timeline => r.timeline = true,
            }
        }
        r
    }

    /// The required conditions `bant` does not confirm; empty when the gate passes.
    pub fn missing(self, bant: Bant) -> Vec<BantCondition> {
        [
            (self.budget && !bant.budget, BantCondition::Budget),
            (self.authority && !bant.authority, BantCondition::Authority),
            (self.need && !bant.need, BantCondition::Need),
            (self.timeline && !bant.timeline, BantCondition::Timeline),
        ]
        .into_iter()
        .filter_map(|(miss, c)| miss.then_some(c))
        .collect()
    }
}

/// Opportunity phases (商談フェーズ). The first five are open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Phase {
    PreOpportunity,
    IssueRecognition,
    Evaluation,
    Negotiation,
    Approval,
    Won,
    Lost,
}

impl Phase {
    pub const OPEN: [Phase; 5] =
        [Phase::PreOpportunity, Phase::IssueRecognition, Phase::Evaluation, Phase::Negotiation, Phase::Approval];

    pub fn is_open(self) -> bool {
        !matches!(self, Phase::Won | Phase::Lost)
    }

    /// The phase number of docs/domain.md, "Field sales" (won and lost are both 6).
    pub fn number(self) -> i32 {
        match self {
            Phase::PreOpportunity => 1,
            Phase::IssueRecognition => 2,
            Phase::Evaluation => 3,
            Phase::Negotiation => 4,
            Phase::Approval => 5,
            Phase::Won | Phase::Lost => 6,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Phase::PreOpportunity => "PRE_OPPORTUNITY",
            Phase::IssueRecognition => "ISSUE_RECOGNITION",
            Phase::Evaluation => "EVALUATION",
            Phase::Negotiation => "NEGOTIATION",
            Phase::Approval => "APPROVAL",
            Phase::Won => "WON",
            Phase::Lost => "LOST",
        }
    }

    pub fn from_name(name: &str) -> Option<Phase> {
        [Phase::Won, Phase::Lost].into_iter().chain(Phase::OPEN).find(|p| p.name() == name)
    }
}

/// Exit criteria of one phase: the BANT conditions confirmed before leaving it forward.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseExit {
    pub phase: Phase,
    pub requires: BantRequirement,
}

/// Why a phase move is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhaseMoveRefused {
    #[error("the opportunity is closed ({})", .0.name())]
    Closed(Phase),
    #[error("{} is not an open phase; close the opportunity instead", .0.name())]
    NotOpen(Phase),
    #[error("the opportunity is already in {}", .0.name())]
    Same(Phase),
    #[error("phases advance one step at a time: {} cannot jump to {}", .from.name(), .to.name())]
    Jump { from: Phase, to: Phase },
    #[error("{} exit criteria not met: missing {}", .phase.name(), names(.missing))]
    ExitCriteria { phase: Phase, missing: Vec<BantCondition> },
}

fn names(c: &[BantCondition]) -> String {
    c.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
}

impl Definition {
    /// BANT conditions missing for inside sales to convert a lead; empty if it may.
    pub fn missing_for_opportunity(&self, bant: Bant) -> Vec<BantCondition> {
        self.opportunity_requires.missing(bant)
    }

    /// Whether an open opportunity may move from `from` to `to` with this BANT.
    /// Forward moves go one step and need the exit criteria of `from`; backward
    /// moves to any earlier open phase are free.
    pub fn check_phase_move(&self, from: Phase, to: Phase, bant: Bant) -> Result<(), PhaseMoveRefused> {
        if !from.is_open() {
            return Err(PhaseMoveRefused::Closed(from));
        }
        if !to.is_open() {
            return Err(PhaseMoveRefused::NotOpen(to));
        }
        if from == to {
            return Err(PhaseMoveRefused::Same(to));
        }
        if to < from {
            return Ok(());
        }
        if to.number() != from.number() + 1 {
            return Err(PhaseMoveRefused::Jump { from, to });
        }
        self.check_exit(from, bant)
    }

    /// Whether the exit criteria of `phase` are met (also used to close won from APPROVAL).
    pub fn check_exit(&self, phase: Phase, bant: Bant) -> Result<(), PhaseMoveRefused> {
        let missing =
            self.phase_exits.iter().find(|e| e.phase == phase).map(|e| e.requires.missing(bant)).unwrap_or_default();
        if missing.is_empty() { Ok(()) } else { Err(PhaseMoveRefused::ExitCriteria { phase, missing }) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Bant = Bant { budget: false, authority: false, need: false, timeline: false };
    const ALL: Bant = Bant { budget: true, authority: true, need: true, timeline: true };

    #[test]
    fn opportunity_gate_by_default_needs_need_and_timeline() {
        let d = Definition::default();
        assert_eq!(d.missing_for_opportunity(NONE), vec![BantCondition::Need, BantCondition::Timeline]);
        let nt = Bant { need: true, timeline: true, ..NONE };
        assert!(d.missing_for_opportunity(nt).is_empty());
        assert!(!nt.is_complete());
        assert!(ALL.is_complete());
    }

    #[test]
    fn phase_moves() {
        use Phase::*;
        let d = Definition::default();
        let need = Bant { need: true, ..NONE };
        let need_budget = Bant { need: true, budget: true, ..NONE };
        let cases: [(Phase, Phase, Bant, Result<(), PhaseMoveRefused>); 10] = [
            (PreOpportunity, IssueRecognition, need, Ok(())),
            (
                PreOpportunity,
                IssueRecognition,
                NONE,
                Err(PhaseMoveRefused::ExitCriteria { phase: PreOpportunity, missing: vec![BantCondition::Need] }),
            ),
            (PreOpportunity, Evaluation, ALL, Err(PhaseMoveRefused::Jump { from: PreOpportunity, to: Evaluation })),
            (IssueRecognition, Evaluation, need_budget, Ok(())),
            (
                Evaluation,
                Negotiation,
                need_budget,
                Err(PhaseMoveRefused::ExitCriteria {
                    phase: Evaluation,
                    missing: vec![BantCondition::Authority, BantCondition::Timeline],
                }),
            ),
            (Evaluation, Negotiation, ALL, Ok(())),
            (Negotiation, Approval, NONE, Ok(())),
            (Approval, PreOpportunity, NONE, Ok(())),
            (Won, Approval, ALL, Err(PhaseMoveRefused::Closed(Won))),
            (Approval, Won, ALL, Err(PhaseMoveRefused::NotOpen(Won))),
        ];
        for (from, to, bant, want) in cases {
            assert_eq!(d.check_phase_move(from, to, bant), want, "{from:?} -> {to:?}");
        }
        assert_eq!(d.check_phase_move(Evaluation, Evaluation, ALL), Err(PhaseMoveRefused::Same(Evaluation)));
    }

    #[test]
    fn phase_names_round_trip() {
        for p in Phase::OPEN.into_iter().chain([Phase::Won, Phase::Lost]) {
            assert_eq!(Phase::from_name(p.name()), Some(p));
        }
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
    /// Removes what the prospect said (the notes are about a person, the
    /// flags are the qualification): what erasing the person leaves.
    pub fn clear_notes(&mut self) {
        for note in [&mut self.budget_note, &mut self.authority_note, &mut self.need_note, &mut self.timeline_note] {
            note.clear();
        }
    }
}
