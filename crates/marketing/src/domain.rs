//! Marketing's rules: a lead's life from capture through nurturing to
//! hand-over, and back again when it is recycled. No SQL, no gRPC.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use themodel_quality::{Classification, Definition, LeadFacts, Relationship, Score, TouchKind};
use themodel_runtime::time::Micros;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Nurturing,
    HandedOver,
    Excluded,
    Recycled,
}

impl Status {
    pub fn code(self) -> &'static str {
        match self {
            Status::Nurturing => "nurturing",
            Status::HandedOver => "handed_over",
            Status::Excluded => "excluded",
            Status::Recycled => "recycled",
        }
    }

    pub fn from_code(code: &str) -> Option<Status> {
        [Status::Nurturing, Status::HandedOver, Status::Excluded, Status::Recycled]
            .into_iter()
            .find(|s| s.code() == code)
    }
}

pub fn relationship_code(r: Relationship) -> &'static str {
    match r {
        Relationship::Prospect => "prospect",
        Relationship::Partner => "partner",
        Relationship::Competitor => "competitor",
        Relationship::Student => "student",
    }
}

pub fn relationship_from_code(code: &str) -> Relationship {
    match code {
        "partner" => Relationship::Partner,
        "competitor" => Relationship::Competitor,
        "student" => Relationship::Student,
        _ => Relationship::Prospect,
    }
}

/// A validated capture.
#[derive(Debug, Clone)]
pub struct NewLead {
    pub lead_id: String,
    pub email: String,
    pub name: String,
    pub company: String,
    pub company_size: i32,
    pub industry: String,
    pub job_title: String,
    pub source: String,
    pub campaign: String,
    pub visitor_id: String,
    pub relationship: Relationship,
    pub captured_at: Micros,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Lead {
    pub lead_id: String,
    pub email: String,
    pub name: String,
    pub company: String,
    pub company_size: i32,
    pub industry: String,
    pub job_title: String,
    pub source: String,
    pub campaign: String,
    pub visitor_id: String,
    pub relationship: Relationship,
    pub status: Status,
    pub exclusion_reason: String,
    pub score: Score,
    /// Touches that count toward the behaviour score (since the last recycle).
    pub scored_touches: BTreeMap<TouchKind, i32>,
    pub touch_count: i32,
    pub definition_version: i64,
    pub recycle_reason: String,
    pub captured_at: Micros,
    pub handed_over_at: Option<Micros>,
}

/// Why marketing refuses a step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the lead is excluded ({0}) and is never handed over")]
    Excluded(String),
    #[error("the lead is already with inside sales")]
    AlreadyHandedOver,
}

/// What inside sales receives when a lead is handed over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadHandover {
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

impl Lead {
    /// Captures a lead: classifies it, scores it with its earlier anonymous
    /// behaviour, and hands it over if it is already promising. Returns whether
    /// it was handed over.
    pub fn capture(new: NewLead, prior: BTreeMap<TouchKind, i32>, def: &Definition) -> (Lead, bool) {
        let touch_count = prior.values().sum();
        let mut lead = Lead {
            lead_id: new.lead_id,
            email: new.email,
            name: new.name,
            company: new.company,
            company_size: new.company_size,
            industry: new.industry,
            job_title: new.job_title,
            source: new.source,
            campaign: new.campaign,
            visitor_id: new.visitor_id,
            relationship: new.relationship,
            status: Status::Nurturing,
            exclusion_reason: String::new(),
            score: Score::default(),
            scored_touches: prior,
            touch_count,
            definition_version: def.version,
            recycle_reason: String::new(),
            captured_at: new.captured_at,
            handed_over_at: None,
        };
        if let Classification::Excluded(reason) = def.classify(&lead.facts()) {
            lead.status = Status::Excluded;
            lead.exclusion_reason = reason.code().to_owned();
        }
        lead.rescore(def);
        let handed_over = lead.promote_if_promising(def, new.captured_at);
        (lead, handed_over)
    }

    pub fn facts(&self) -> LeadFacts<'_> {
        LeadFacts {
            email: &self.email,
            company_size: self.company_size,
            industry: &self.industry,
            job_title: &self.job_title,
            relationship: self.relationship,
        }
    }

    fn rescore(&mut self, def: &Definition) {
        self.score = def.score(&self.facts(), &self.scored_touches);
        self.definition_version = def.version;
    }

    /// Records one touch and rescores; returns whether the lead was handed over now.
    pub fn touch(&mut self, kind: TouchKind, at: Micros, def: &Definition) -> bool {
        *self.scored_touches.entry(kind).or_insert(0) += 1;
        self.touch_count += 1;
        self.rescore(def);
        self.promote_if_promising(def, at)
    }

    /// A nurtured or recycled lead whose score reaches the threshold goes to
    /// inside sales. Excluded leads never do; handed-over ones already have.
    fn promote_if_promising(&mut self, def: &Definition, at: Micros) -> bool {
        let eligible = matches!(self.status, Status::Nurturing | Status::Recycled);
        if eligible && def.is_promising(self.score) {
            self.status = Status::HandedOver;
            self.handed_over_at = Some(at);
            true
        } else {
            false
        }
    }

    /// Hands the lead over on marketing's judgement, whatever its score.
    pub fn hand_over_now(&mut self, at: Micros) -> Result<(), Refused> {
        match self.status {
            Status::Excluded => Err(Refused::Excluded(self.exclusion_reason.clone())),
            Status::HandedOver => Err(Refused::AlreadyHandedOver),
            Status::Nurturing | Status::Recycled => {
                self.status = Status::HandedOver;
                self.handed_over_at = Some(at);
                Ok(())
            }
        }
    }

    /// The lead comes back to nurturing with a reason (DOMAIN.md §3 recycling).
    /// An excluded lead stays excluded.
    pub fn recycle(&mut self, reason: &str, def: &Definition) {
        self.recycle_reason = reason.to_owned();
        if self.status == Status::Excluded {
            return;
        }
        self.status = Status::Recycled;
        if def.recycle_resets_behaviour {
            self.scored_touches.clear();
        }
        self.rescore(def);
    }

    pub fn handover(&self) -> LeadHandover {
        LeadHandover {
            lead_id: self.lead_id.clone(),
            email: self.email.clone(),
            name: self.name.clone(),
            company: self.company.clone(),
            company_size: self.company_size,
            industry: self.industry.clone(),
            job_title: self.job_title.clone(),
            source: self.source.clone(),
            score: self.score.total(),
            definition_version: self.definition_version,
            handed_over_at: self.handed_over_at.unwrap_or(self.captured_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_lead(title: &str, relationship: Relationship) -> NewLead {
        NewLead {
            lead_id: "lead-1".into(),
            email: "ada@corp.example".into(),
            name: "Ada".into(),
            company: "Corp".into(),
            company_size: 500,
            industry: "software".into(),
            job_title: title.into(),
            source: "web_form".into(),
            campaign: String::new(),
            visitor_id: String::new(),
            relationship,
            captured_at: 10,
        }
    }

    #[test]
    fn fit_lead_is_handed_over_once_intent_shows() {
        let def = Definition::default();
        let (mut lead, handed) = Lead::capture(new_lead("CTO", Relationship::Prospect), BTreeMap::new(), &def);
        assert!(!handed);
        assert_eq!(lead.status, Status::Nurturing);
        assert_eq!(lead.score.attribute, 55);
        assert!(!lead.touch(TouchKind::PageView, 11, &def));
        assert!(lead.touch(TouchKind::QuoteRequest, 12, &def));
        assert_eq!(lead.status, Status::HandedOver);
        assert_eq!(lead.handed_over_at, Some(12));
        assert!(!lead.touch(TouchKind::Inquiry, 13, &def), "handed over only once");
    }

    #[test]
    fn prior_anonymous_behaviour_counts_at_capture() {
        let def = Definition::default();
        let prior = BTreeMap::from([(TouchKind::ProductPageView, 4)]);
        let (lead, handed) = Lead::capture(new_lead("CTO", Relationship::Prospect), prior, &def);
        assert_eq!(lead.score.behaviour, 12);
        assert_eq!(lead.touch_count, 4);
        assert!(handed);
    }

    #[test]
    fn students_are_excluded_and_never_handed_over() {
        let def = Definition::default();
        let (mut lead, handed) = Lead::capture(new_lead("CTO", Relationship::Student), BTreeMap::new(), &def);
        assert!(!handed);
        assert_eq!(lead.status, Status::Excluded);
        assert_eq!(lead.exclusion_reason, "student");
        assert!(!lead.touch(TouchKind::QuoteRequest, 11, &def));
        assert_eq!(lead.status, Status::Excluded);
    }

    #[test]
    fn manual_hand_over() {
        let def = Definition::default();
        let (mut lead, _) = Lead::capture(new_lead("", Relationship::Prospect), BTreeMap::new(), &def);
        assert!(!def.is_promising(lead.score));
        lead.hand_over_now(20).expect("nurturing lead");
        assert_eq!((lead.status, lead.handed_over_at), (Status::HandedOver, Some(20)));
        assert_eq!(lead.hand_over_now(21), Err(Refused::AlreadyHandedOver));
        let (mut student, _) = Lead::capture(new_lead("", Relationship::Student), BTreeMap::new(), &def);
        assert_eq!(student.hand_over_now(22), Err(Refused::Excluded("student".into())));
    }

    #[test]
    fn recycled_lead_needs_new_behaviour_to_come_back() {
        let def = Definition::default();
        let (mut lead, _) = Lead::capture(new_lead("CTO", Relationship::Prospect), BTreeMap::new(), &def);
        assert!(lead.touch(TouchKind::QuoteRequest, 11, &def));
        lead.recycle("timing", &def);
        assert_eq!(lead.status, Status::Recycled);
        assert_eq!(lead.score.behaviour, 0);
        assert!(!lead.touch(TouchKind::PageView, 12, &def));
        assert!(lead.touch(TouchKind::TrialSignup, 13, &def));
        assert_eq!(lead.status, Status::HandedOver);
        assert_eq!(lead.recycle_reason, "timing");
    }
}
