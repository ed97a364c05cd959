//! Marketing's rules: a lead's life from capture through nurturing to
//! hand-over, back again when it is recycled, and the anonymous visitor it
//! was before. Every step returns the events it causes and the hand-overs it
//! makes ([`Effects`]); nothing here touches SQL or gRPC clients. The events
//! and the hand-over request are the contract's messages, used as plain data.

use std::collections::BTreeMap;

use themodel_proto::insidesales::v1::{AcceptLeadRequest, ErasePersonRequest};
use themodel_proto::marketing::v1 as pb;
use themodel_quality::{Classification, Definition, LeadFacts, ReasonRefused, Relationship, Score, TouchKind};
use themodel_runtime::Effects;
use themodel_runtime::outbox::Handover;
use themodel_runtime::time::{Micros, to_timestamp};
use themodel_runtime::wire::{department_to_proto, enums::touch_kind_to_proto};
use themodel_values::{Code, Department, Email, LeadId, VisitorId};

/// Marketing's effects: its events and hand-overs.
pub type Out = Effects<pb::MarketingEvent>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Nurturing,
    HandedOver,
    Excluded,
    Recycled,
}

impl Status {
    pub const ALL: [Status; 4] = [Status::Nurturing, Status::HandedOver, Status::Excluded, Status::Recycled];

    pub fn code(self) -> &'static str {
        match self {
            Status::Nurturing => "nurturing",
            Status::HandedOver => "handed_over",
            Status::Excluded => "excluded",
            Status::Recycled => "recycled",
        }
    }

    pub fn from_code(code: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.code() == code)
    }

    pub fn to_proto(self) -> pb::LeadStatus {
        match self {
            Status::Nurturing => pb::LeadStatus::Nurturing,
            Status::HandedOver => pb::LeadStatus::HandedOver,
            Status::Excluded => pb::LeadStatus::Excluded,
            Status::Recycled => pb::LeadStatus::Recycled,
        }
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

pub fn relationship_from_code(code: &str) -> Option<Relationship> {
    [Relationship::Prospect, Relationship::Partner, Relationship::Competitor, Relationship::Student]
        .into_iter()
        .find(|r| relationship_code(*r) == code)
}

fn relationship_to_proto(r: Relationship) -> pb::Relationship {
    match r {
        Relationship::Prospect => pb::Relationship::Prospect,
        Relationship::Partner => pb::Relationship::Partner,
        Relationship::Competitor => pb::Relationship::Competitor,
        Relationship::Student => pb::Relationship::Student,
    }
}

/// A validated capture.
#[derive(Debug, Clone)]
pub struct NewLead {
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
    pub visitor_id: Option<VisitorId>,
    pub relationship: Relationship,
    pub captured_at: Micros,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Lead {
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
    pub visitor_id: Option<VisitorId>,
    pub relationship: Relationship,
    pub status: Status,
    pub exclusion_reason: String,
    pub score: Score,
    /// Touches that count toward the behaviour score (since the last recycle).
    pub scored_touches: BTreeMap<TouchKind, i32>,
    pub touch_count: i32,
    pub definition_version: i64,
    pub recycle_reason: String,
    pub recycled_by: Option<Department>,
    pub captured_at: Micros,
    pub handed_over_at: Option<Micros>,
    pub recycled_at: Option<Micros>,
    /// The latest note given with a hand-over, recycle or exclusion.
    pub note: String,
    /// When the person was erased ([`Lead::erase`]).
    pub erased_at: Option<Micros>,
}

/// Why marketing refuses a step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("lead {0} is excluded ({1}) and is never handed over")]
    Excluded(LeadId, String),
    #[error("lead {0} is already with inside sales")]
    AlreadyHandedOver(LeadId),
    #[error("lead {0} is with inside sales: disqualify it there (DisqualifyLead), which excludes it here too")]
    HeldByInsideSales(LeadId),
    #[error(transparent)]
    Reason(#[from] ReasonRefused),
}

/// An anonymous visitor, and the lead it identified as (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visitor {
    pub visitor_id: VisitorId,
    /// The most recently captured lead with this visitor id, and when.
    pub lead: Option<(LeadId, Micros)>,
    /// Visits while anonymous (not yet joined to a lead).
    pub page_views: i32,
    pub product_views: i32,
}

/// A validated visit.
#[derive(Debug, Clone)]
pub struct Visit {
    pub visitor_id: VisitorId,
    pub page: String,
    pub product_page: bool,
    pub channel: Option<Code>,
    pub campaign: String,
    pub at: Micros,
}

/// A validated touch.
#[derive(Debug, Clone)]
pub struct Touch {
    pub lead_id: LeadId,
    pub kind: TouchKind,
    pub detail: String,
    pub at: Micros,
}

impl Visitor {
    pub fn new(visitor_id: VisitorId) -> Visitor {
        Visitor { visitor_id, lead: None, page_views: 0, product_views: 0 }
    }

    /// A visit while anonymous is remembered, to join the lead at capture.
    pub fn visit_anonymously(&mut self, product_page: bool) {
        if product_page {
            self.product_views = self.product_views.saturating_add(1);
        } else {
            self.page_views = self.page_views.saturating_add(1);
        }
    }

    /// The visitor identifies as `lead`: its anonymous visits are handed to
    /// the lead (as touches), and later visits are the lead's. With imported
    /// history the latest capture wins.
    pub fn identify(&mut self, lead: &LeadId, captured_at: Micros) -> BTreeMap<TouchKind, i32> {
        let prior: BTreeMap<TouchKind, i32> =
            [(TouchKind::PageView, self.page_views), (TouchKind::ProductPageView, self.product_views)]
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .collect();
        self.page_views = 0;
        self.product_views = 0;
        if self.lead.as_ref().is_none_or(|(_, at)| captured_at >= *at) {
            self.lead = Some((lead.clone(), captured_at));
        }
        prior
    }
}

impl Visit {
    /// The event for this visit (`lead`: the visitor's lead, if any).
    pub fn recorded(&self, visit_id: &str, lead: Option<&LeadId>, event_id: &str) -> pb::MarketingEvent {
        event(
            self.at,
            pb::marketing_event::Event::VisitRecorded(pb::VisitRecorded {
                visit_id: visit_id.to_owned(),
                visitor_id: self.visitor_id.to_string(),
                page: self.page.clone(),
                product_page: self.product_page,
                channel: self.channel.as_ref().map(Code::to_string).unwrap_or_default(),
                campaign: self.campaign.clone(),
                lead_id: lead.map(LeadId::to_string).unwrap_or_default(),
                event_id: event_id.to_owned(),
            }),
        )
    }

    /// The touch a visit is on a known lead.
    pub fn as_touch(&self, lead_id: LeadId) -> Touch {
        let kind = if self.product_page { TouchKind::ProductPageView } else { TouchKind::PageView };
        Touch { lead_id, kind, detail: self.page.clone(), at: self.at }
    }
}

fn event(at: Micros, e: pb::marketing_event::Event) -> pb::MarketingEvent {
    pb::MarketingEvent { occurred_at: Some(to_timestamp(at)), event: Some(e) }
}

impl Lead {
    /// Captures a lead: classifies it, scores it with its anonymous visits
    /// (`prior`), and hands it over if it is already promising.
    pub fn capture(new: NewLead, prior: BTreeMap<TouchKind, i32>, def: &Definition) -> (Lead, Out) {
        let joined_visits: i32 = prior.values().sum();
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
            channel: new.channel,
            visitor_id: new.visitor_id,
            relationship: new.relationship,
            status: Status::Nurturing,
            exclusion_reason: String::new(),
            score: Score::default(),
            scored_touches: prior,
            touch_count: joined_visits,
            definition_version: def.version,
            recycle_reason: String::new(),
            recycled_by: None,
            captured_at: new.captured_at,
            handed_over_at: None,
            recycled_at: None,
            note: String::new(),
            erased_at: None,
        };
        if let Classification::Excluded(reason) = def.classify(&lead.facts()) {
            lead.status = Status::Excluded;
            lead.exclusion_reason = reason.code().to_owned();
        }
        lead.score = def.score(&lead.facts(), &lead.scored_touches);
        let mut out = Out::default().event(event(
            lead.captured_at,
            pb::marketing_event::Event::LeadCaptured(pb::LeadCaptured {
                lead_id: lead.lead_id.to_string(),
                visitor_id: lead.visitor_id.as_ref().map(VisitorId::to_string).unwrap_or_default(),
                source: lead.source.to_string(),
                campaign: lead.campaign.clone(),
                channel: lead.channel.as_ref().map(Code::to_string).unwrap_or_default(),
                industry: lead.industry.clone(),
                company_size: lead.company_size,
                job_title: lead.job_title.clone(),
                relationship: relationship_to_proto(lead.relationship) as i32,
                excluded: lead.status == Status::Excluded,
                exclusion_reason: lead.exclusion_reason.clone(),
                attribute_score: lead.score.attribute,
                behaviour_score: lead.score.behaviour,
                score: lead.score.total(),
                joined_visits,
                definition_version: def.version,
            }),
        ));
        let at = lead.captured_at;
        out.append(lead.promote_if_promising(def, at));
        (lead, out)
    }

    pub fn facts(&self) -> LeadFacts<'_> {
        LeadFacts {
            email: self.email.as_str(),
            company_size: self.company_size,
            industry: &self.industry,
            job_title: &self.job_title,
            relationship: self.relationship,
        }
    }

    /// Scores the lead by `def`. The attribute score depends only on the
    /// lead's facts and the definition, and a version never changes, so it
    /// is recomputed only when the version moved; behaviour is recounted.
    fn rescore(&mut self, def: &Definition) {
        if self.definition_version == def.version {
            self.score.behaviour = def.behaviour_score(&self.scored_touches);
        } else {
            self.score = def.score(&self.facts(), &self.scored_touches);
            self.definition_version = def.version;
        }
    }

    /// Records one touch and rescores; hands the lead over if that made it
    /// promising. `event_id` is a pipeline's id for the touch, if any.
    pub fn touch(&mut self, touch: &Touch, event_id: &str, def: &Definition) -> Out {
        let n = self.scored_touches.entry(touch.kind).or_insert(0);
        *n = n.saturating_add(1);
        self.touch_count = self.touch_count.saturating_add(1);
        self.rescore(def);
        let mut out = Out::default().event(event(
            touch.at,
            pb::marketing_event::Event::TouchRecorded(pb::TouchRecorded {
                lead_id: self.lead_id.to_string(),
                kind: touch_kind_to_proto(touch.kind) as i32,
                detail: touch.detail.clone(),
                behaviour_score: self.score.behaviour,
                score: self.score.total(),
                event_id: event_id.to_owned(),
                definition_version: def.version,
            }),
        ));
        out.append(self.promote_if_promising(def, touch.at));
        out
    }

    /// Whether the lead is with inside sales.
    pub fn handed_over(&self) -> bool {
        self.status == Status::HandedOver
    }

    /// A nurtured or recycled lead whose score reaches the threshold goes to
    /// inside sales. Excluded leads never do; handed-over ones already have.
    fn promote_if_promising(&mut self, def: &Definition, at: Micros) -> Out {
        let eligible = matches!(self.status, Status::Nurturing | Status::Recycled);
        if eligible && def.is_promising(self.score) { self.promote(at, None, def) } else { Out::default() }
    }

    fn promote(&mut self, at: Micros, note: Option<&str>, def: &Definition) -> Out {
        self.status = Status::HandedOver;
        self.handed_over_at = Some(at);
        if let Some(note) = note {
            self.note = note.to_owned();
        }
        let handover = Handover::new(AcceptLeadRequest {
            request_id: String::new(),
            lead_id: self.lead_id.to_string(),
            email: self.email.to_string(),
            name: self.name.clone(),
            company: self.company.clone(),
            job_title: self.job_title.clone(),
            source: self.source.to_string(),
            score: self.score.total(),
            definition_version: self.definition_version,
            handed_over_at: Some(to_timestamp(at)),
            company_size: self.company_size,
            industry: self.industry.clone(),
            campaign: self.campaign.clone(),
            channel: self.channel.as_ref().map(Code::to_string).unwrap_or_default(),
            erased_at: self.erased_at.map(to_timestamp),
        });
        let mut out = Out::default().event(event(
            at,
            pb::marketing_event::Event::LeadPromoted(pb::LeadPromoted {
                lead_id: self.lead_id.to_string(),
                score: self.score.total(),
                source: self.source.to_string(),
                manual: note.is_some(),
                handover_id: handover.id.clone(),
                definition_version: def.version,
            }),
        ));
        out.push_handover(handover);
        out
    }

    /// Hands the lead over on marketing's judgement, whatever its score.
    pub fn hand_over_now(&mut self, at: Micros, note: &str, def: &Definition) -> Result<Out, Refused> {
        match self.status {
            Status::Excluded => Err(Refused::Excluded(self.lead_id.clone(), self.exclusion_reason.clone())),
            Status::HandedOver => Err(Refused::AlreadyHandedOver(self.lead_id.clone())),
            Status::Nurturing | Status::Recycled => Ok(self.promote(at, Some(note), def)),
        }
    }

    /// The lead comes back to nurturing on its reason's track. An excluded
    /// lead stays excluded (the reason is still kept).
    pub fn recycle(
        &mut self,
        reason: &Code,
        sender: Department,
        timing_months: i32,
        note: &str,
        at: Micros,
        def: &Definition,
    ) -> Out {
        self.recycle_reason = reason.to_string();
        self.recycled_by = Some(sender);
        self.recycled_at = Some(at);
        self.note = note.to_owned();
        let reopened = self.status != Status::Excluded;
        if reopened {
            self.status = Status::Recycled;
            if def.recycle_resets_behaviour {
                self.scored_touches.clear();
            }
            self.rescore(def);
        }
        Out::default().event(event(
            at,
            pb::marketing_event::Event::LeadRecycled(pb::LeadRecycled {
                lead_id: self.lead_id.to_string(),
                reason: reason.to_string(),
                sender: department_to_proto(sender) as i32,
                timing_months,
                behaviour_score: self.score.behaviour,
                definition_version: def.version,
                reopened,
            }),
        ))
    }

    /// The lead is found to be never-buy after its capture: it ends
    /// excluded and is never handed over again. Marketing reclassifies only
    /// a lead it holds; inside sales' disqualification (`sender`) is taken
    /// whatever marketing's status, since the lead was with inside sales.
    /// A lead already excluded stays as it is, and nothing is published.
    /// Marketing's own reason must be one of the definition's never-buy
    /// reasons; inside sales checked its reason against the definition it
    /// applied (a receiver refusing it would only make a dead letter).
    pub fn exclude(
        &mut self,
        reason: &Code,
        sender: Department,
        note: &str,
        at: Micros,
        def: &Definition,
    ) -> Result<Out, Refused> {
        if sender == Department::Marketing {
            def.check_never_buy_reason(reason.as_str())?;
        }
        let previous = self.status;
        match (previous, sender) {
            (Status::Excluded, _) => return Ok(Out::default()),
            (Status::HandedOver, Department::Marketing) => {
                return Err(Refused::HeldByInsideSales(self.lead_id.clone()));
            }
            _ => {}
        }
        self.status = Status::Excluded;
        self.exclusion_reason = reason.to_string();
        self.note = note.to_owned();
        Ok(Out::default().event(event(
            at,
            pb::marketing_event::Event::LeadExcluded(pb::LeadExcluded {
                lead_id: self.lead_id.to_string(),
                reason: reason.to_string(),
                sender: department_to_proto(sender) as i32,
                previous_status: previous.to_proto() as i32,
                definition_version: def.version,
            }),
        )))
    }

    /// Erases the person: their e-mail address and name, and the notes
    /// about them, are removed; the lead keeps its id, company,
    /// dimensions, scores and history, which is what every KPI counts. A
    /// lead that went to inside sales has the erasure handed on (inside
    /// sales hands it further down the chain). Erasing again does nothing.
    pub fn erase(&mut self, at: Micros) -> Out {
        if self.erased_at.is_some() {
            return Out::default();
        }
        self.email = Email::erased();
        self.name.clear();
        self.note.clear();
        self.erased_at = Some(at);
        let mut out = Out::default().event(event(
            at,
            pb::marketing_event::Event::LeadErased(pb::LeadErased { lead_id: self.lead_id.to_string() }),
        ));
        if self.handed_over_at.is_some() {
            out.push_handover(Handover::new(ErasePersonRequest {
                request_id: String::new(),
                lead_id: self.lead_id.to_string(),
            }));
        }
        out
    }

    /// The identity of the lead's address: [`Email::key`], or, once the
    /// person is erased, a key of the lead's own that frees the address
    /// for a new lead.
    pub fn email_key(&self) -> String {
        match self.erased_at {
            Some(_) => format!("erased:{}", self.lead_id),
            None => self.email.key(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_lead(title: &str, relationship: Relationship) -> NewLead {
        NewLead {
            lead_id: LeadId::parse("lead-1").expect("id"),
            email: Email::parse("ada@corp.example").expect("email"),
            name: "Ada".into(),
            company: "Corp".into(),
            company_size: 500,
            industry: "software".into(),
            job_title: title.into(),
            source: Code::parse("web_form").expect("code"),
            campaign: String::new(),
            channel: None,
            visitor_id: None,
            relationship,
            captured_at: 10,
        }
    }

    fn touch(kind: TouchKind, at: Micros) -> Touch {
        Touch { lead_id: LeadId::parse("lead-1").expect("id"), kind, detail: String::new(), at }
    }

    fn promoted(out: &Out) -> bool {
        out.events.iter().any(|e| matches!(e.event, Some(pb::marketing_event::Event::LeadPromoted(_))))
    }

    #[test]
    fn fit_lead_is_handed_over_once_intent_shows() {
        let def = Definition::default();
        let (mut lead, out) = Lead::capture(new_lead("CTO", Relationship::Prospect), BTreeMap::new(), &def);
        assert!(!promoted(&out) && out.handovers.is_empty());
        assert_eq!(lead.status, Status::Nurturing);
        assert_eq!(lead.score.attribute, 55);
        assert!(!promoted(&lead.touch(&touch(TouchKind::PageView, 11), "", &def)));
        let out = lead.touch(&touch(TouchKind::QuoteRequest, 12), "", &def);
        assert!(promoted(&out));
        assert_eq!(out.handovers.len(), 1);
        let sent = &out.handovers[0];
        assert_eq!(sent.destination, "inside-sales");
        assert_eq!(lead.status, Status::HandedOver);
        assert_eq!(lead.handed_over_at, Some(12));
        assert!(lead.touch(&touch(TouchKind::Inquiry, 13), "", &def).handovers.is_empty(), "handed over only once");
    }

    #[test]
    fn a_new_definition_rescores_fit_at_the_next_touch() {
        let def = Definition::default();
        let (mut lead, _) = Lead::capture(new_lead("CTO", Relationship::Prospect), BTreeMap::new(), &def);
        let before = lead.score.attribute;
        lead.touch(&touch(TouchKind::PageView, 11), "", &def);
        assert_eq!((lead.score.attribute, lead.definition_version), (before, 1));
        let mut next = def.clone();
        next.version = 2;
        next.attribute.other_title_points = 0;
        next.attribute.job_title_rules.clear();
        lead.touch(&touch(TouchKind::PageView, 12), "", &next);
        assert!(lead.score.attribute < before, "titles count for nothing in version 2");
        assert_eq!(lead.definition_version, 2);
        assert_eq!(lead.score, next.score(&lead.facts(), &lead.scored_touches));
    }

    #[test]
    fn events_carry_dimensions_not_personal_data() {
        let def = Definition::default();
        let (_, out) = Lead::capture(new_lead("CTO", Relationship::Prospect), BTreeMap::new(), &def);
        let Some(pb::marketing_event::Event::LeadCaptured(c)) = &out.events[0].event else { panic!("{out:?}") };
        assert_eq!((c.source.as_str(), c.industry.as_str(), c.company_size), ("web_form", "software", 500));
        let debug = format!("{out:?}");
        assert!(!debug.contains("ada@corp.example") && !debug.contains("Ada"), "{debug}");
    }

    #[test]
    fn anonymous_visits_join_the_lead_at_capture() {
        let def = Definition::default();
        let mut visitor = Visitor::new(VisitorId::parse("cookie").expect("id"));
        for _ in 0..4 {
            visitor.visit_anonymously(true);
        }
        let prior = visitor.identify(&LeadId::parse("lead-1").expect("id"), 10);
        assert_eq!((visitor.page_views, visitor.product_views), (0, 0));
        let (lead, out) = Lead::capture(new_lead("CTO", Relationship::Prospect), prior, &def);
        assert_eq!(lead.score.behaviour, 12);
        assert_eq!(lead.touch_count, 4);
        assert!(promoted(&out), "55 + 12 reaches 65");
    }

    #[test]
    fn the_latest_capture_owns_the_visitor() {
        let mut visitor = Visitor::new(VisitorId::parse("cookie").expect("id"));
        let (a, b) = (LeadId::parse("a").expect("id"), LeadId::parse("b").expect("id"));
        visitor.identify(&a, 20);
        visitor.identify(&b, 10);
        assert_eq!(visitor.lead, Some((a, 20)), "an older capture imported later does not take over");
    }

    #[test]
    fn students_are_excluded_and_never_handed_over() {
        let def = Definition::default();
        let (mut lead, _) = Lead::capture(new_lead("CTO", Relationship::Student), BTreeMap::new(), &def);
        assert_eq!(lead.status, Status::Excluded);
        assert_eq!(lead.exclusion_reason, "student");
        assert!(lead.touch(&touch(TouchKind::QuoteRequest, 11), "", &def).handovers.is_empty());
        assert_eq!(lead.status, Status::Excluded);
    }

    #[test]
    fn manual_hand_over() {
        let def = Definition::default();
        let (mut lead, _) = Lead::capture(new_lead("", Relationship::Prospect), BTreeMap::new(), &def);
        assert!(!def.is_promising(lead.score));
        assert_eq!(lead.hand_over_now(20, "called in", &def).expect("nurturing lead").handovers.len(), 1);
        assert_eq!((lead.status, lead.handed_over_at), (Status::HandedOver, Some(20)));
        assert!(matches!(lead.hand_over_now(21, "", &def), Err(Refused::AlreadyHandedOver(_))));
        let (mut student, _) = Lead::capture(new_lead("", Relationship::Student), BTreeMap::new(), &def);
        assert!(matches!(student.hand_over_now(22, "", &def), Err(Refused::Excluded(..))));
    }

    #[test]
    fn a_lead_found_never_buy_later_is_excluded_once_and_never_handed_over() {
        let def = Definition::default();
        let student = Code::parse("student").expect("code");
        let (mut nurtured, _) = Lead::capture(new_lead("", Relationship::Prospect), BTreeMap::new(), &def);
        let rude = Code::parse("rude").expect("code");
        assert!(matches!(
            nurtured.exclude(&rude, Department::Marketing, "", 20, &def),
            Err(Refused::Reason(ReasonRefused::Unknown { .. }))
        ));
        assert_eq!(nurtured.exclude(&student, Department::Marketing, "", 20, &def).expect("held").events.len(), 1);
        assert_eq!((nurtured.status, nurtured.exclusion_reason.as_str()), (Status::Excluded, "student"));
        let partner = Code::parse("partner").expect("code");
        assert!(nurtured.exclude(&partner, Department::Marketing, "", 21, &def).expect("no-op").events.is_empty());
        assert_eq!(nurtured.exclusion_reason, "student");
        assert!(nurtured.touch(&touch(TouchKind::QuoteRequest, 22), "", &def).handovers.is_empty());

        let (mut handed, _) = Lead::capture(new_lead("CTO", Relationship::Prospect), BTreeMap::new(), &def);
        handed.touch(&touch(TouchKind::QuoteRequest, 11), "", &def);
        assert!(matches!(
            handed.exclude(&student, Department::Marketing, "", 20, &def),
            Err(Refused::HeldByInsideSales(_))
        ));
        assert_eq!(
            handed
                .exclude(&student, Department::InsideSales, "from the call", 20, &def)
                .expect("disqualified")
                .events
                .len(),
            1
        );
        assert_eq!(handed.status, Status::Excluded);
    }

    #[test]
    fn recycled_lead_needs_new_behaviour_to_come_back() {
        let def = Definition::default();
        let (mut lead, _) = Lead::capture(new_lead("CTO", Relationship::Prospect), BTreeMap::new(), &def);
        lead.touch(&touch(TouchKind::QuoteRequest, 11), "", &def);
        let timing = Code::parse("timing").expect("code");
        let out = lead.recycle(&timing, Department::InsideSales, 3, "call in spring", 12, &def);
        let Some(pb::marketing_event::Event::LeadRecycled(recycled)) = &out.events[0].event else {
            panic!("a recycle publishes LeadRecycled: {out:?}");
        };
        assert_eq!(recycled.reason, "timing");
        assert_eq!(lead.note, "call in spring", "the sender's note is kept, on the lead");
        assert_eq!((lead.status, lead.score.behaviour), (Status::Recycled, 0));
        assert_eq!(lead.recycled_by, Some(Department::InsideSales));
        assert!(lead.touch(&touch(TouchKind::PageView, 13), "", &def).handovers.is_empty());
        assert_eq!(lead.touch(&touch(TouchKind::TrialSignup, 14), "", &def).handovers.len(), 1);
        assert_eq!(lead.status, Status::HandedOver);
        assert_eq!(lead.recycle_reason, "timing");
    }
}
