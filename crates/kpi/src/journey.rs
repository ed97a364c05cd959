//! A lead's journey: every fact kpi has read about one lead, from capture to
//! renewal, and what the journey adds to the funnel (docs/domain.md, "KPIs").
//!
//! The four streams are read independently, so a lead's conversion can be
//! read before its capture. Counts are therefore derived from journeys, not
//! from events: when a fact joins a journey, the journey's old contribution
//! is taken out of the aggregates and its new one put in. Whatever order the
//! streams are read in, the aggregates end as the sum of the journeys'
//! contributions. Until its capture is read, a lead's events count in the
//! totals and under the empty value of every captured dimension. A lead's
//! counts are filed under its latest owners: when a lead changes hands, all
//! of them move (a converted lead no longer changes hands in inside sales).
//!
//! No SQL here: [`crate::store`] keeps journeys and aggregates.

use std::collections::HashMap;

use themodel_quality::{Definition, Phase, TitleMatch};

use themodel_runtime::time::Micros;

use crate::domain::{self, Amount, Capture, Metric, MoneyKind, Role, StayStep};
use crate::span::{self, utc_day};
use crate::velocity::{Stage, Stay};

/// What a funnel can be split by: facts of the lead as captured, and the
/// people who own it along the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dimension {
    Source,
    Campaign,
    Channel,
    Industry,
    CompanySizeBand,
    JobTitleClass,
    DefinitionVersion,
    InsideSalesRep,
    InsideSalesTeam,
    AccountExecutive,
    CustomerSuccessManager,
}

impl Dimension {
    /// The dimensions a capture gives, in the order a journey keeps them.
    pub const CAPTURED: [Dimension; 7] = [
        Dimension::Source,
        Dimension::Campaign,
        Dimension::Channel,
        Dimension::Industry,
        Dimension::CompanySizeBand,
        Dimension::JobTitleClass,
        Dimension::DefinitionVersion,
    ];

    /// The owners a journey keeps, in order after the captured ones.
    pub const OWNED: [Dimension; 4] = [
        Dimension::InsideSalesRep,
        Dimension::InsideSalesTeam,
        Dimension::AccountExecutive,
        Dimension::CustomerSuccessManager,
    ];

    /// Every dimension: the captured ones, then the owned ones.
    pub fn all() -> impl Iterator<Item = Dimension> {
        Dimension::CAPTURED.into_iter().chain(Dimension::OWNED)
    }

    /// The name aggregates are stored under.
    pub fn code(self) -> &'static str {
        match self {
            Dimension::Source => "source",
            Dimension::Campaign => "campaign",
            Dimension::Channel => "channel",
            Dimension::Industry => "industry",
            Dimension::CompanySizeBand => "company_size_band",
            Dimension::JobTitleClass => "job_title_class",
            Dimension::DefinitionVersion => "definition_version",
            Dimension::InsideSalesRep => "inside_sales_rep",
            Dimension::InsideSalesTeam => "inside_sales_team",
            Dimension::AccountExecutive => "account_executive",
            Dimension::CustomerSuccessManager => "customer_success_manager",
        }
    }
}

/// The journey as stored (encoded with prost; the tags are the storage
/// format). Times are microseconds since the Unix epoch.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Journey {
    /// When the lead was captured; unset until its capture is read.
    #[prost(int64, optional, tag = "1")]
    pub captured_at: Option<i64>,
    /// The captured split values, in [`Dimension::CAPTURED`]'s order (empty
    /// until captured).
    #[prost(string, repeated, tag = "2")]
    pub dims: Vec<String>,
    /// Classed never-buy: at capture, or later (`excluded_at`).
    #[prost(bool, tag = "3")]
    pub excluded: bool,
    /// Each hand-over to inside sales.
    #[prost(int64, repeated, tag = "4")]
    pub promoted: Vec<i64>,
    /// Each conversion into an opportunity.
    #[prost(int64, repeated, tag = "5")]
    pub opportunities: Vec<i64>,
    /// Each deal won.
    #[prost(int64, repeated, tag = "6")]
    pub wins: Vec<i64>,
    /// Each deal lost.
    #[prost(int64, repeated, tag = "7")]
    pub losses: Vec<i64>,
    /// Renewals of accounts this lead's deal opened (the flow view counts a
    /// renewal under the account's original lead).
    #[prost(int64, repeated, tag = "8")]
    pub renewals: Vec<i64>,
    /// Churns of accounts this lead's deal opened.
    #[prost(int64, repeated, tag = "9")]
    pub churns: Vec<i64>,
    /// The first renewal of an account this lead's won deal went into,
    /// after it did (the cohort view's "retained").
    #[prost(int64, optional, tag = "10")]
    pub retained_at: Option<i64>,
    /// The first churn of such an account, after the deal went into it.
    #[prost(int64, optional, tag = "11")]
    pub churned_at: Option<i64>,
    /// Money the lead's deals moved: won, opened or expanded an account,
    /// and the value lost when an account its deal opened churned.
    #[prost(message, repeated, tag = "12")]
    pub money: Vec<MoneyFact>,
    /// Each time the lead went back to marketing.
    #[prost(message, repeated, tag = "13")]
    pub recycles: Vec<RecycleFact>,
    /// The visitor id the lead identified as at capture (empty if none).
    #[prost(string, tag = "14")]
    pub visitor_id: String,
    /// Who owns the lead now.
    #[prost(message, optional, tag = "15")]
    pub owners: Option<Owners>,
    /// Each conversion into a quality opportunity (all four BANT
    /// conditions confirmed).
    #[prost(int64, repeated, tag = "16")]
    pub quality_opportunities: Vec<i64>,
    /// When a lead captured as a prospect was classed never-buy later
    /// (marketing's reclassification or inside sales' disqualification);
    /// unset for a lead excluded at capture.
    #[prost(int64, optional, tag = "17")]
    pub excluded_at: Option<i64>,
    /// Why the lead is excluded (empty if it is not).
    #[prost(string, tag = "18")]
    pub exclusion_reason: String,
    /// Each stay in inside sales' queue, in the order they began.
    #[prost(message, repeated, tag = "19")]
    pub queue: Vec<QueueFact>,
    /// Each opportunity made of the lead, with its phases.
    #[prost(message, repeated, tag = "20")]
    pub deals: Vec<DealFact>,
}

/// A stay in inside sales' queue.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueueFact {
    #[prost(int64, tag = "1")]
    pub accepted_at: i64,
    /// When first contact was due (unset: not said).
    #[prost(int64, optional, tag = "2")]
    pub due_at: Option<i64>,
    #[prost(int64, optional, tag = "3")]
    pub first_contact_at: Option<i64>,
    /// When it left the queue (unset: still there).
    #[prost(int64, optional, tag = "4")]
    pub ended_at: Option<i64>,
}

/// An opportunity of the lead.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DealFact {
    #[prost(string, tag = "1")]
    pub opportunity_id: String,
    #[prost(int64, tag = "2")]
    pub opened_at: i64,
    /// The open phases it entered, in order (the first at opening).
    #[prost(message, repeated, tag = "3")]
    pub phases: Vec<PhaseFact>,
    /// When it was won or lost (unset: open).
    #[prost(int64, optional, tag = "4")]
    pub closed_at: Option<i64>,
}

/// An open phase entered.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PhaseFact {
    /// The phase's name, as [`Phase::name`] gives it.
    #[prost(string, tag = "1")]
    pub phase: String,
    #[prost(int64, tag = "2")]
    pub at: i64,
}

/// The owners of a lead: the latest each department gave (empty: none).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Owners {
    #[prost(string, tag = "1")]
    pub inside_sales_rep: String,
    #[prost(string, tag = "2")]
    pub inside_sales_team: String,
    #[prost(string, tag = "3")]
    pub account_executive: String,
    #[prost(string, tag = "4")]
    pub customer_success_manager: String,
}

/// A recycle in a journey.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RecycleFact {
    #[prost(int64, tag = "1")]
    pub at: i64,
    #[prost(string, tag = "2")]
    pub reason: String,
}

/// An amount in a journey.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MoneyFact {
    /// A [`MoneyKind`] code.
    #[prost(string, tag = "1")]
    pub kind: String,
    #[prost(int64, tag = "2")]
    pub at: i64,
    #[prost(string, tag = "3")]
    pub currency: String,
    #[prost(int64, tag = "4")]
    pub units: i64,
    #[prost(int32, tag = "5")]
    pub nanos: i32,
}

/// The values of a capture's split dimensions. The company-size band and
/// the job-title class are those of the definition version the lead was
/// captured with (`definition`, when kpi has it).
pub fn dims(capture: &Capture, definition: Option<&Definition>) -> Vec<String> {
    Dimension::CAPTURED
        .iter()
        .map(|d| match d {
            Dimension::Source => capture.source.clone(),
            Dimension::Campaign => capture.campaign.clone(),
            Dimension::Channel => capture.channel.clone(),
            Dimension::Industry => capture.industry.trim().to_lowercase(),
            Dimension::CompanySizeBand => definition.map(|d| size_band(d, capture.company_size)).unwrap_or_default(),
            Dimension::JobTitleClass => definition.map(|d| title_class(d, &capture.job_title)).unwrap_or_default(),
            Dimension::DefinitionVersion => capture.definition_version.to_string(),
            Dimension::InsideSalesRep
            | Dimension::InsideSalesTeam
            | Dimension::AccountExecutive
            | Dimension::CustomerSuccessManager => String::new(),
        })
        .collect()
}

/// A company size's band in `d`, as "50-249" or, for the top band, "1000+";
/// empty for an unknown size (0).
pub fn size_band(d: &Definition, size: i32) -> String {
    if size <= 0 {
        return String::new();
    }
    let bands = &d.attribute.company_size_bands;
    let lowest = bands.iter().map(|b| b.0).min();
    let (from, to) = match d.size_band(size) {
        Some(i) => {
            let min = bands[i].0;
            (min, bands.iter().map(|b| b.0).filter(|&m| m > min).min())
        }
        None => (1, lowest),
    };
    match to {
        Some(to) => format!("{from}-{}", to - 1),
        None => format!("{from}+"),
    }
}

/// A job title's class in `d`: the first word of the title rule it meets
/// ("ceo" for a rule that starts with it), "other" when it meets none, empty
/// when there is no title.
pub fn title_class(d: &Definition, title: &str) -> String {
    match d.title_rule(title) {
        TitleMatch::Rule(i) => rule_class(d, i),
        TitleMatch::Other => OTHER_TITLE.into(),
        TitleMatch::Blank => String::new(),
    }
}

/// The class of a title no rule meets.
pub const OTHER_TITLE: &str = "other";

/// The class of the titles job-title rule `i` of `d` meets: its first word,
/// lower-cased.
pub fn rule_class(d: &Definition, i: usize) -> String {
    d.attribute.job_title_rules[i].0.first().map(|w| w.to_lowercase()).unwrap_or_default()
}

impl Journey {
    /// Records the capture. A second capture of the same lead (which the
    /// stream does not publish) would replace the first.
    pub fn capture(&mut self, at: i64, capture: &Capture, definition: Option<&Definition>) {
        self.captured_at = Some(at);
        if capture.excluded {
            self.excluded = true;
            self.excluded_at = None;
            self.exclusion_reason = capture.exclusion_reason.clone();
        }
        self.visitor_id = capture.visitor_id.clone();
        self.dims = dims(capture, definition);
    }

    /// Records an event of the lead counted at its time.
    pub fn reach(&mut self, metric: Metric, at: i64) {
        match metric {
            Metric::Promising => self.promoted.push(at),
            Metric::Opportunities => self.opportunities.push(at),
            Metric::QualityOpportunities => self.quality_opportunities.push(at),
            Metric::Wins => self.wins.push(at),
            Metric::Losses => self.losses.push(at),
            Metric::Retained => self.renewals.push(at),
            Metric::Churned => self.churns.push(at),
            // Counted from the journey, not reached by an event of their own.
            Metric::Leads
            | Metric::ExcludedLeads
            | Metric::Recycled
            | Metric::ReEntries
            | Metric::RecycledOpportunities
            | Metric::RecycledWins => {}
        }
    }

    /// Records that the lead was classed never-buy after its capture. A
    /// lead is excluded once; a later exclusion changes nothing.
    pub fn exclude(&mut self, at: i64, reason: &str) {
        if !self.excluded {
            self.excluded = true;
            self.excluded_at = Some(at);
            self.exclusion_reason = reason.to_owned();
        }
    }

    /// Records a step of the lead's stays with inside and field sales. Each
    /// department's events arrive in the order it recorded them, so a step
    /// applies to the latest stay it can.
    pub fn stay(&mut self, at: i64, step: &StayStep) {
        let open_queue = self.queue.iter_mut().rev().find(|q| q.ended_at.is_none());
        match step {
            StayStep::Queued { due } => {
                self.queue.push(QueueFact { accepted_at: at, due_at: *due, first_contact_at: None, ended_at: None })
            }
            StayStep::FirstContact => {
                if let Some(q) = open_queue.filter(|q| q.first_contact_at.is_none()) {
                    q.first_contact_at = Some(at);
                }
            }
            StayStep::LeftQueue => {
                if let Some(q) = open_queue {
                    q.ended_at = Some(at);
                }
            }
            StayStep::DealOpened { opportunity } => {
                if !self.deals.iter().any(|d| &d.opportunity_id == opportunity) {
                    self.deals.push(DealFact {
                        opportunity_id: opportunity.clone(),
                        opened_at: at,
                        phases: vec![PhaseFact { phase: Phase::PreOpportunity.name().to_owned(), at }],
                        closed_at: None,
                    });
                }
            }
            StayStep::PhaseEntered { opportunity, phase } => {
                if let Some(d) = self.deals.iter_mut().find(|d| &d.opportunity_id == opportunity) {
                    d.phases.push(PhaseFact { phase: phase.name().to_owned(), at });
                }
            }
            StayStep::DealClosed { opportunity } => {
                if let Some(d) = self.deals.iter_mut().find(|d| &d.opportunity_id == opportunity) {
                    d.closed_at.get_or_insert(at);
                }
            }
        }
    }

    /// The lead's stays in each stage (docs/domain.md, "Velocity").
    pub fn stays(&self) -> Vec<Stay> {
        let stay = |stage, start, end| Stay { stage, start, end, due: None, first_contact: None };
        let mut stays = Vec::new();
        // With marketing: from the capture, and from each recycle, until the
        // next hand-over (or the exclusion). A lead excluded at capture is
        // never nurtured.
        if let Some(captured) = self.captured_at.filter(|_| !self.excluded_at_capture()) {
            // At the same moment a stay begins before it ends.
            #[derive(PartialEq, Eq, PartialOrd, Ord)]
            enum Mark {
                Begins,
                HandedOver,
                Excluded,
            }
            let mut marks = vec![(captured, Mark::Begins)];
            marks.extend(self.recycles.iter().map(|r| (r.at, Mark::Begins)));
            marks.extend(self.promoted.iter().map(|&at| (at, Mark::HandedOver)));
            marks.extend(self.excluded_at.map(|at| (at, Mark::Excluded)));
            marks.sort();
            let mut since = None;
            for (at, mark) in marks {
                let excluded = mark == Mark::Excluded;
                match (mark, since) {
                    (Mark::Begins, None) => since = Some(at),
                    (Mark::HandedOver | Mark::Excluded, Some(start)) => {
                        stays.push(stay(Stage::Nurture, start, Some(at)));
                        since = None;
                    }
                    _ => {}
                }
                if excluded {
                    break;
                }
            }
            if let Some(start) = since {
                stays.push(stay(Stage::Nurture, start, None));
            }
        }
        stays.extend(self.queue.iter().map(|q| Stay {
            due: q.due_at,
            first_contact: q.first_contact_at,
            ..stay(Stage::InsideSales, q.accepted_at, q.ended_at)
        }));
        for d in &self.deals {
            stays.push(stay(Stage::FieldSales, d.opened_at, d.closed_at));
            let phases: Vec<(Phase, i64)> = d
                .phases
                .iter()
                .filter_map(|p| Some((Phase::OPEN.into_iter().find(|o| o.name() == p.phase)?, p.at)))
                .collect();
            for (i, &(phase, at)) in phases.iter().enumerate() {
                let left = phases.get(i + 1).map(|&(_, next)| next).or(d.closed_at);
                stays.push(stay(Stage::Phase(phase), at, left));
            }
        }
        stays
    }

    /// Whether the lead was classed never-buy when it was captured.
    pub fn excluded_at_capture(&self) -> bool {
        self.excluded && self.excluded_at.is_none()
    }

    /// When the lead was classed never-buy: at capture or later (`None`:
    /// it is not, or its capture is not read yet).
    pub fn exclusion(&self) -> Option<i64> {
        if self.excluded { self.excluded_at.or(self.captured_at) } else { None }
    }

    /// Records that the lead went back to marketing. Recycles move no
    /// count; the journey shows them.
    pub fn recycle(&mut self, at: i64, reason: &str) {
        self.recycles.push(RecycleFact { at, reason: reason.to_owned() });
    }

    /// Records who owns the lead now (the latest owner is the one its
    /// counts are filed under).
    pub fn own(&mut self, role: Role, owner: &str, team: &str) {
        let owners = self.owners.get_or_insert_with(Owners::default);
        match role {
            Role::InsideSalesRep => {
                owners.inside_sales_rep = owner.to_owned();
                owners.inside_sales_team = team.to_owned();
            }
            Role::AccountExecutive => owners.account_executive = owner.to_owned(),
            Role::CustomerSuccessManager => owners.customer_success_manager = owner.to_owned(),
        }
    }

    /// The lead's value of each dimension, in [`Dimension::all`]'s order.
    /// Until its capture is read the captured ones are empty.
    pub fn values(&self) -> Vec<String> {
        let mut values = if self.captured_at.is_some() && self.dims.len() == Dimension::CAPTURED.len() {
            self.dims.clone()
        } else {
            vec![String::new(); Dimension::CAPTURED.len()]
        };
        let owners = self.owners.clone().unwrap_or_default();
        values.extend(Dimension::OWNED.map(|d| match d {
            Dimension::InsideSalesRep => owners.inside_sales_rep.clone(),
            Dimension::InsideSalesTeam => owners.inside_sales_team.clone(),
            Dimension::AccountExecutive => owners.account_executive.clone(),
            Dimension::CustomerSuccessManager => owners.customer_success_manager.clone(),
            _ => String::new(),
        }));
        values
    }

    /// The lead's value of `dim` (see [`Journey::values`]).
    pub fn value(&self, dim: Dimension) -> String {
        Dimension::all().zip(self.values()).find(|(d, _)| *d == dim).map(|(_, v)| v).unwrap_or_default()
    }

    /// Records money the lead's deal moved.
    pub fn money(&mut self, kind: MoneyKind, at: i64, amount: &Amount) {
        self.money.push(MoneyFact {
            kind: kind.code().to_owned(),
            at,
            currency: amount.currency.clone(),
            units: amount.units,
            nanos: amount.nanos,
        });
    }

    /// Records a renewal or churn of an account this lead's deal went into
    /// (`opening`: the deal that opened it, under which the account's
    /// renewals, churns and lost value are counted in the flow view).
    pub fn account(&mut self, metric: Metric, at: i64, opening: bool, lost: Option<&Amount>) {
        if opening {
            self.reach(metric, at);
            if let Some(amount) = lost {
                self.money(MoneyKind::Churned, at, amount);
            }
        }
        let first = match metric {
            Metric::Retained => &mut self.retained_at,
            Metric::Churned => &mut self.churned_at,
            _ => return,
        };
        first.get_or_insert(at);
    }

    /// What the journey adds to the aggregates and facts, at the moments
    /// things happened.
    pub fn contribution(&self) -> Contribution {
        let mut flow = Vec::new();
        let mut cohort = Vec::new();
        if let Some(captured) = self.captured_at {
            flow.push((Metric::Leads, captured));
            // The flow view's excluded leads are those of the period's
            // leads that are classed never-buy, whenever that was found: a
            // subset of the leads, so valid leads = leads - excluded leads.
            if self.excluded {
                flow.push((Metric::ExcludedLeads, captured));
            }
        }
        let lists = [
            (Metric::Promising, &self.promoted),
            (Metric::Opportunities, &self.opportunities),
            (Metric::QualityOpportunities, &self.quality_opportunities),
            (Metric::Wins, &self.wins),
            (Metric::Losses, &self.losses),
            (Metric::Retained, &self.renewals),
            (Metric::Churned, &self.churns),
        ];
        for (metric, times) in lists {
            flow.extend(times.iter().map(|&at| (metric, at)));
        }
        // What came after a recycle: each hand-over, conversion and win
        // that follows the lead's first recycle.
        let first_recycle = self.recycles.iter().map(|r| r.at).min();
        let after_recycle = [
            (Metric::ReEntries, &self.promoted),
            (Metric::RecycledOpportunities, &self.opportunities),
            (Metric::RecycledWins, &self.wins),
        ];
        flow.extend(self.recycles.iter().map(|r| (Metric::Recycled, r.at)));
        if let Some(recycled) = first_recycle {
            for (metric, times) in after_recycle {
                flow.extend(times.iter().filter(|&&at| at > recycled).map(|&at| (metric, at)));
            }
        }
        // Per recycle reason, the recycles as a cohort: what each recycle
        // was followed by (the first hand-over, conversion and win after it).
        let mut reasons = Vec::new();
        for r in &self.recycles {
            reasons.push((r.reason.clone(), r.at, Metric::Recycled, r.at));
            for (metric, times) in after_recycle {
                if let Some(next) = times.iter().copied().filter(|&at| at > r.at).min() {
                    reasons.push((r.reason.clone(), r.at, metric, next));
                }
            }
        }
        if let Some(captured) = self.captured_at {
            let mut reached = |metric, at: Option<i64>| {
                if let Some(at) = at {
                    // A fact dated before the capture counts as reached at
                    // the capture: the lead was in the cohort by then.
                    cohort.push((metric, captured, at.max(captured)));
                }
            };
            reached(Metric::Leads, Some(captured));
            reached(Metric::ExcludedLeads, self.exclusion());
            let first = |times: &Vec<i64>| times.iter().copied().min();
            reached(Metric::Promising, first(&self.promoted));
            reached(Metric::Opportunities, first(&self.opportunities));
            reached(Metric::QualityOpportunities, first(&self.quality_opportunities));
            reached(Metric::Wins, first(&self.wins));
            reached(Metric::Losses, first(&self.losses));
            reached(Metric::Retained, self.retained_at);
            reached(Metric::Churned, self.churned_at);
            reached(Metric::Recycled, first_recycle);
            for (metric, times) in after_recycle {
                let next = first_recycle.and_then(|r| times.iter().copied().filter(|&at| at > r).min());
                reached(metric, next);
            }
        }
        let money = self
            .money
            .iter()
            .filter_map(|m| {
                let kind = MoneyKind::from_code(&m.kind)?;
                Some((kind, m.at, m.currency.clone(), m.units, m.nanos))
            })
            .collect();
        Contribution {
            values: self.values(),
            flow,
            cohort,
            captured_at: self.captured_at,
            money,
            reasons,
            stays: self.stays(),
        }
    }
}

/// What a step of a journey was, in the order steps of the same moment are
/// listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StepKind {
    Captured,
    Promoted,
    Converted,
    Won,
    Lost,
    Recycled,
    Excluded,
    AccountOpened,
    AccountExpanded,
    Renewed,
    Churned,
}

/// One step of a journey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub kind: StepKind,
    pub at: i64,
    /// A recycle's or an exclusion's reason.
    pub reason: String,
    /// What a step that moved money moved.
    pub amount: Option<Amount>,
}

impl Journey {
    /// What happened to the lead, in time order.
    pub fn steps(&self) -> Vec<Step> {
        let step = |kind, at| Step { kind, at, reason: String::new(), amount: None };
        let mut steps: Vec<Step> = self.captured_at.map(|at| step(StepKind::Captured, at)).into_iter().collect();
        let lists = [
            (StepKind::Promoted, &self.promoted),
            (StepKind::Converted, &self.opportunities),
            (StepKind::Won, &self.wins),
            (StepKind::Lost, &self.losses),
            (StepKind::Renewed, &self.renewals),
            (StepKind::Churned, &self.churns),
        ];
        for (kind, times) in lists {
            steps.extend(times.iter().map(|&at| step(kind, at)));
        }
        steps.extend(self.recycles.iter().map(|r| Step { reason: r.reason.clone(), ..step(StepKind::Recycled, r.at) }));
        if let Some(at) = self.exclusion() {
            steps.push(Step { reason: self.exclusion_reason.clone(), ..step(StepKind::Excluded, at) });
        }
        for m in &self.money {
            let amount = Amount { currency: m.currency.clone(), units: m.units, nanos: m.nanos };
            // A win's and a churn's amounts belong to the step of that
            // moment; opening and expanding an account are steps of their own.
            let kind = match MoneyKind::from_code(&m.kind) {
                Some(MoneyKind::Won) => StepKind::Won,
                Some(MoneyKind::Churned) => StepKind::Churned,
                Some(MoneyKind::NewBusiness) => {
                    steps.push(Step { amount: Some(amount), ..step(StepKind::AccountOpened, m.at) });
                    continue;
                }
                Some(MoneyKind::Expansion) => {
                    steps.push(Step { amount: Some(amount), ..step(StepKind::AccountExpanded, m.at) });
                    continue;
                }
                None => continue,
            };
            if let Some(s) = steps.iter_mut().find(|s| s.kind == kind && s.at == m.at && s.amount.is_none()) {
                s.amount = Some(amount);
            }
        }
        steps.sort_by_key(|s| (s.at, s.kind));
        steps
    }
}

/// What one journey adds to the aggregates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Contribution {
    /// The lead's value of each dimension, in [`Dimension::all`]'s order.
    pub values: Vec<String>,
    /// Flow events: what, when.
    pub flow: Vec<(Metric, Micros)>,
    /// Cohort stages reached: what, the capture, when first reached (never
    /// before the capture).
    pub cohort: Vec<(Metric, Micros, Micros)>,
    /// When the lead was captured (`None` until read): the cohort its
    /// money counts in.
    pub captured_at: Option<Micros>,
    /// Revenue: what, when, currency, units, nanos (kept per amount, not in
    /// [`Deltas`]: sums are made when read).
    pub money: Vec<(MoneyKind, Micros, String, i64, i32)>,
    /// Recycles as cohorts per reason: reason, the recycle, what it was
    /// followed by ([`Metric::Recycled`] for itself), when.
    pub reasons: Vec<(String, Micros, Metric, Micros)>,
    /// Stays in each stage (kept one row each, like the money).
    pub stays: Vec<Stay>,
}

/// The pseudo-dimension recycles are counted under per reason, in the
/// cohort aggregates only: a lead recycled twice has two reasons, so
/// reasons are not a split of leads.
pub const RECYCLE_REASON: &str = "recycle_reason";

/// The pseudo-dimension the totals are counted under (with the value "").
pub const TOTALS: &str = "";

/// A count of a run of UTC days (see [`crate::span`]): dimension
/// ([`TOTALS`] for the totals), value, the run's width and first day, what
/// is counted.
pub type RunKey<'a> = (&'static str, &'a str, i64, i64, Metric);
/// A cohort count by day reached, for cohorts "as of" a day: dimension,
/// value, UTC day of the capture, stage, UTC day reached.
pub type ReachedKey<'a> = (&'static str, &'a str, i64, Metric, i64);
/// A revenue sum of a run of days: how the amounts are dated ([`DATED`] or
/// [`CAPTURED`]), dimension, value, the run's width and first day, the
/// kind and the currency.
pub type MoneyKey<'a> = (&'static str, &'static str, &'a str, i64, i64, MoneyKind, &'a str);

/// Revenue summed by the day each amount is dated: the flow view.
pub const DATED: &str = "dated";
/// Revenue summed by the day its lead was captured: the cohort view.
pub const CAPTURED: &str = "captured";

/// Sums of contributions, added and taken away: what a page of events does
/// to the stored aggregates.
///
/// A page adds and takes away each of its leads' contributions under the
/// totals and eleven dimensions, for each width of run: about a hundred sums
/// per lead. So the sums are keyed by small copyable keys (the dimension by
/// its place in a fixed list, each value by a number the page gives it) in
/// hash maps with a fast hash; they are named and sorted once, when written.
#[derive(Debug, Default)]
pub struct Deltas {
    /// The numbers of the values; the dimensions' places are in [`SERIES`].
    values: Values,
    flow: Sums<Run, i64>,
    cohort: Sums<Run, i64>,
    reached: Sums<Reached, i64>,
    money: Sums<MoneyRun, i128>,
}

type Sums<K, N> = HashMap<K, N, foldhash::fast::RandomState>;
/// [`RunKey`] with the dimension and value numbered (see [`SERIES`], [`Values`]).
type Run = (u8, u32, i64, i64, Metric);
/// [`ReachedKey`] with the dimension and value numbered.
type Reached = (u8, u32, i64, Metric, i64);
/// [`MoneyKey`] numbered, and dated by capture (`true`) or not.
type MoneyRun = (bool, u8, u32, i64, i64, MoneyKind, u32);

/// What sums are filed under, by place: [`TOTALS`], each dimension in
/// [`Dimension::all`]'s order, and [`RECYCLE_REASON`].
static SERIES: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    std::iter::once(TOTALS).chain(Dimension::all().map(Dimension::code)).chain([RECYCLE_REASON]).collect()
});

/// The place of [`RECYCLE_REASON`] in [`SERIES`].
const RECYCLE_SERIES: u8 = 1 + Dimension::CAPTURED.len() as u8 + Dimension::OWNED.len() as u8;

/// The dimension values (and currencies) a page's sums are filed under,
/// each stored once.
#[derive(Debug, Default)]
struct Values {
    ids: HashMap<String, u32, foldhash::fast::RandomState>,
    names: Vec<String>,
}

impl Values {
    fn id(&mut self, value: &str) -> u32 {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let id = u32::try_from(self.names.len()).expect("fewer than 2^32 values in a page");
        self.names.push(value.to_owned());
        self.ids.insert(value.to_owned(), id);
        id
    }

    fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }
}

/// Each run a day's sums go into: one per width.
fn day_runs(day: i64) -> impl Iterator<Item = (i64, i64)> {
    span::WIDTHS.into_iter().map(move |w| (w, span::run_start(day, w)))
}

impl Deltas {
    /// Adds `c` (`sign` 1) or takes it away (`sign` -1), under the totals and
    /// under each dimension's value.
    pub fn add(&mut self, c: &Contribution, sign: i64) {
        let totals = self.values.id("");
        let mut series = Vec::with_capacity(1 + c.values.len());
        series.push((0u8, totals));
        for (place, v) in (1u8..RECYCLE_SERIES).zip(&c.values) {
            series.push((place, self.values.id(v)));
        }
        for &(metric, at) in &c.flow {
            for (width, start) in day_runs(utc_day(at)) {
                for &(dim, value) in &series {
                    *self.flow.entry((dim, value, width, start, metric)).or_insert(0) += sign;
                }
            }
        }
        // Each recycle is a cohort of its own, under its reason.
        let reasons: Vec<_> = c
            .reasons
            .iter()
            .map(|(reason, recycled, metric, reached)| {
                ((RECYCLE_SERIES, self.values.id(reason)), *metric, *recycled, *reached)
            })
            .collect();
        let own = c
            .cohort
            .iter()
            .flat_map(|&(metric, captured, reached)| series.iter().map(move |&s| (s, metric, captured, reached)));
        for ((dim, value), metric, entered, reached) in own.chain(reasons) {
            let (entered, reached) = (utc_day(entered), utc_day(reached));
            for (width, start) in day_runs(entered) {
                *self.cohort.entry((dim, value, width, start, metric)).or_insert(0) += sign;
            }
            *self.reached.entry((dim, value, entered, metric, reached)).or_insert(0) += sign;
        }
        for (kind, at, currency, units, nanos) in &c.money {
            let amount = domain::total_nanos(*units, i64::from(*nanos)) * i128::from(sign);
            let currency = self.values.id(currency);
            let dated = std::iter::once((false, *at));
            for (captured, day) in dated.chain(c.captured_at.map(|at| (true, at))).map(|(h, at)| (h, utc_day(at))) {
                for (width, start) in day_runs(day) {
                    for &(dim, value) in &series {
                        *self.money.entry((captured, dim, value, width, start, *kind, currency)).or_insert(0) += amount;
                    }
                }
            }
        }
    }

    /// Drops the keys whose additions and removals cancelled out.
    pub fn settle(&mut self) {
        self.flow.retain(|_, n| *n != 0);
        self.cohort.retain(|_, n| *n != 0);
        self.reached.retain(|_, n| *n != 0);
        self.money.retain(|_, n| *n != 0);
    }

    /// The flow sums' changes, in key order (so concurrent writers of the
    /// same rows take their locks in one order).
    pub fn flow(&self) -> Vec<(RunKey<'_>, i64)> {
        sorted(&self.flow, |(dim, value, width, start, metric)| {
            (SERIES[usize::from(dim)], self.values.name(value), width, start, metric)
        })
    }

    /// The cohort sums' changes (by the day each cohort was entered), in
    /// key order.
    pub fn cohort(&self) -> Vec<(RunKey<'_>, i64)> {
        sorted(&self.cohort, |(dim, value, width, start, metric)| {
            (SERIES[usize::from(dim)], self.values.name(value), width, start, metric)
        })
    }

    /// The changes of the cohort counts by day reached, in key order.
    pub fn reached(&self) -> Vec<(ReachedKey<'_>, i64)> {
        sorted(&self.reached, |(dim, value, entered, metric, reached)| {
            (SERIES[usize::from(dim)], self.values.name(value), entered, metric, reached)
        })
    }

    /// The revenue sums' changes, in key order.
    pub fn money(&self) -> Vec<(MoneyKey<'_>, i128)> {
        sorted(&self.money, |(captured, dim, value, width, start, kind, currency)| {
            let how = if captured { CAPTURED } else { DATED };
            (how, SERIES[usize::from(dim)], self.values.name(value), width, start, kind, self.values.name(currency))
        })
    }
}

/// `sums` with their keys made by `key`, in key order.
fn sorted<K: Copy, N: Copy, Out: Ord>(sums: &Sums<K, N>, key: impl Fn(K) -> Out) -> Vec<(Out, N)> {
    let mut out: Vec<_> = sums.iter().map(|(&k, &n)| (key(k), n)).collect();
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::StayStep;
    use crate::domain::parse_day;
    use std::collections::{BTreeMap, BTreeSet};

    const DAY: i64 = 86_400_000_000;

    #[test]
    fn sums_are_filed_under_each_dimension_by_name_and_recycles_under_their_reason() {
        let values: Vec<String> = Dimension::all().map(|d| format!("{}-value", d.code())).collect();
        let c = Contribution {
            values: values.clone(),
            cohort: vec![(Metric::Leads, 10 * DAY, 10 * DAY)],
            reasons: vec![("timing".into(), 11 * DAY, Metric::Recycled, 11 * DAY)],
            ..Default::default()
        };
        let mut deltas = Deltas::default();
        deltas.add(&c, 1);
        let filed: BTreeMap<&str, BTreeSet<&str>> =
            deltas.reached().into_iter().fold(BTreeMap::new(), |mut m, ((dim, value, ..), _)| {
                m.entry(dim).or_default().insert(value);
                m
            });
        let mut expected: BTreeMap<&str, BTreeSet<&str>> =
            Dimension::all().zip(&values).map(|(d, v)| (d.code(), BTreeSet::from([v.as_str()]))).collect();
        expected.insert(TOTALS, BTreeSet::from([""]));
        expected.insert(RECYCLE_REASON, BTreeSet::from(["timing"]));
        assert_eq!(filed, expected);
    }

    fn day(s: &str) -> i64 {
        parse_day(s).expect("date")
    }

    fn at(s: &str) -> i64 {
        day(s) * DAY + 10 * 3_600_000_000
    }

    fn capture() -> Capture {
        Capture {
            source: "web_form".into(),
            campaign: "autumn".into(),
            channel: "ads".into(),
            industry: " Software ".into(),
            company_size: 120,
            job_title: "VP Sales".into(),
            definition_version: 1,
            excluded: false,
            exclusion_reason: String::new(),
            visitor_id: "v-1".into(),
        }
    }

    #[test]
    fn stays_in_each_stage_and_phase() {
        use crate::velocity::Stage;
        use themodel_quality::Phase;
        let mut j = Journey::default();
        j.capture(10, &capture(), None);
        j.reach(Metric::Promising, 20);
        j.stay(20, &StayStep::Queued { due: Some(30) });
        j.stay(25, &StayStep::FirstContact);
        j.stay(26, &StayStep::FirstContact);
        j.recycle(40, "timing");
        j.stay(40, &StayStep::LeftQueue);
        j.reach(Metric::Promising, 50);
        j.stay(50, &StayStep::Queued { due: None });
        j.stay(60, &StayStep::LeftQueue);
        let opportunity = "o1".to_owned();
        j.stay(60, &StayStep::DealOpened { opportunity: opportunity.clone() });
        j.stay(70, &StayStep::PhaseEntered { opportunity: opportunity.clone(), phase: Phase::IssueRecognition });
        j.stay(80, &StayStep::PhaseEntered { opportunity: opportunity.clone(), phase: Phase::PreOpportunity });
        j.stay(90, &StayStep::DealClosed { opportunity });
        let stays: Vec<_> = j.stays().into_iter().map(|s| (s.stage, s.start, s.end, s.first_contact)).collect();
        assert_eq!(
            stays,
            [
                (Stage::Nurture, 10, Some(20), None),
                (Stage::Nurture, 40, Some(50), None),
                (Stage::InsideSales, 20, Some(40), Some(25)),
                (Stage::InsideSales, 50, Some(60), None),
                (Stage::FieldSales, 60, Some(90), None),
                (Stage::Phase(Phase::PreOpportunity), 60, Some(70), None),
                (Stage::Phase(Phase::IssueRecognition), 70, Some(80), None),
                (Stage::Phase(Phase::PreOpportunity), 80, Some(90), None),
            ],
            "a recycle starts a new nurture; a move back starts a new stay in the phase"
        );

        let mut excluded = Journey::default();
        excluded.capture(10, &capture(), None);
        excluded.exclude(15, "student");
        assert_eq!(excluded.stays().into_iter().map(|s| (s.start, s.end)).collect::<Vec<_>>(), [(10, Some(15))]);
        let mut at_capture = Journey::default();
        at_capture.capture(10, &Capture { excluded: true, ..capture() }, None);
        assert!(at_capture.stays().is_empty(), "a lead excluded at capture is never nurtured");
    }

    #[test]
    fn a_lead_excluded_later_counts_under_its_capture_in_flow_and_from_then_in_cohort() {
        let mut j = Journey::default();
        j.capture(at("2026-10-01"), &capture(), Some(&Definition::default()));
        j.reach(Metric::Promising, at("2026-10-02"));
        j.exclude(at("2026-11-10"), "student");
        j.exclude(at("2026-11-20"), "partner");
        let c = j.contribution();
        assert!(c.flow.contains(&(Metric::ExcludedLeads, at("2026-10-01"))));
        assert!(c.cohort.contains(&(Metric::ExcludedLeads, at("2026-10-01"), at("2026-11-10"))));
        let steps: Vec<_> = j.steps().into_iter().map(|s| (s.kind, s.reason)).collect();
        assert_eq!(
            steps,
            [
                (StepKind::Captured, String::new()),
                (StepKind::Promoted, String::new()),
                (StepKind::Excluded, "student".into())
            ],
            "excluded once, with the first reason"
        );

        let mut at_capture = Journey::default();
        at_capture.capture(
            at("2026-10-01"),
            &Capture { excluded: true, exclusion_reason: "competitor".into(), ..capture() },
            None,
        );
        assert_eq!(at_capture.exclusion(), Some(at("2026-10-01")));
    }

    #[test]
    fn dimensions_of_a_capture() {
        let d = Definition::default();
        assert_eq!(
            dims(&capture(), Some(&d)),
            ["web_form", "autumn", "ads", "software", "50-249", "ceo", "1"].map(String::from)
        );
        assert_eq!(size_band(&d, 0), "");
        assert_eq!(size_band(&d, 1), "1-9");
        assert_eq!(size_band(&d, 999), "250-999");
        assert_eq!(size_band(&d, 5000), "1000+");
        assert_eq!(title_class(&d, ""), "");
        assert_eq!(title_class(&d, "gardener"), "other");
        let mut high = d.clone();
        high.attribute.company_size_bands = vec![(10, 5), (100, 10)];
        assert_eq!(size_band(&high, 3), "1-9", "below every band");
        assert_eq!(dims(&capture(), None)[4], "", "no band without the definition");
    }

    #[test]
    fn contribution_of_a_whole_journey() {
        let mut j = Journey::default();
        j.capture(at("2026-11-02"), &capture(), Some(&Definition::default()));
        j.reach(Metric::Promising, at("2026-11-03"));
        j.reach(Metric::Opportunities, at("2026-11-05"));
        j.reach(Metric::Losses, at("2026-11-20"));
        j.reach(Metric::Promising, at("2026-12-01"));
        j.reach(Metric::Opportunities, at("2026-12-02"));
        j.reach(Metric::Wins, at("2026-12-10"));
        j.account(Metric::Retained, at("2027-12-10"), true, None);
        j.account(Metric::Retained, at("2028-12-10"), true, None);
        let c = j.contribution();
        let flow = |m| c.flow.iter().filter(|(metric, _)| *metric == m).count();
        assert_eq!(flow(Metric::Promising), 2, "the flow view counts every hand-over");
        assert_eq!(flow(Metric::Opportunities), 2);
        assert_eq!(flow(Metric::Retained), 2);
        let cohort: Vec<_> = c.cohort.iter().map(|&(m, captured, reached)| (m, captured, reached)).collect();
        let c0 = at("2026-11-02");
        assert_eq!(
            cohort,
            vec![
                (Metric::Leads, c0, c0),
                (Metric::Promising, c0, at("2026-11-03")),
                (Metric::Opportunities, c0, at("2026-11-05")),
                (Metric::Wins, c0, at("2026-12-10")),
                (Metric::Losses, c0, at("2026-11-20")),
                (Metric::Retained, c0, at("2027-12-10")),
            ],
            "the cohort view counts the lead once per stage, when it first got there"
        );
    }

    #[test]
    fn money_is_kept_per_amount_day_and_currency() {
        let yen = |units| Amount { currency: "JPY".into(), units, nanos: 0 };
        let mut j = Journey::default();
        j.capture(at("2026-11-02"), &capture(), Some(&Definition::default()));
        j.money(MoneyKind::Won, at("2026-11-10"), &yen(1_200_000));
        j.account(Metric::Churned, at("2027-01-10"), false, Some(&yen(1_200_000)));
        assert_eq!(j.money.len(), 1, "an account's lost value is filed under the lead that opened it");
        j.account(Metric::Churned, at("2027-01-10"), true, Some(&Amount { nanos: 500_000_000, ..yen(7) }));
        let c = j.contribution();
        assert_eq!(
            c.money,
            [
                (MoneyKind::Won, at("2026-11-10"), "JPY".to_owned(), 1_200_000, 0),
                (MoneyKind::Churned, at("2027-01-10"), "JPY".to_owned(), 7, 500_000_000),
            ]
        );
        assert_eq!(c.values[0], "web_form", "filed under the lead's values");
    }

    #[test]
    fn steps_in_time_order_with_their_reasons_and_amounts() {
        let yen = |units| Amount { currency: "JPY".into(), units, nanos: 0 };
        let mut j = Journey::default();
        // Read out of order: the win before the capture.
        j.reach(Metric::Wins, at("2026-12-10"));
        j.money(MoneyKind::Won, at("2026-12-10"), &yen(1_200_000));
        j.capture(at("2026-11-02"), &capture(), Some(&Definition::default()));
        j.recycle(at("2026-11-20"), "timing");
        j.reach(Metric::Opportunities, at("2026-12-02"));
        j.money(MoneyKind::NewBusiness, at("2026-12-10"), &yen(1_200_000));
        let steps: Vec<_> = j.steps().into_iter().map(|s| (s.kind, s.reason, s.amount.map(|a| a.units))).collect();
        assert_eq!(
            steps,
            [
                (StepKind::Captured, String::new(), None),
                (StepKind::Recycled, "timing".into(), None),
                (StepKind::Converted, String::new(), None),
                (StepKind::Won, String::new(), Some(1_200_000)),
                (StepKind::AccountOpened, String::new(), Some(1_200_000)),
            ]
        );
        assert_eq!(j.visitor_id, "v-1");
    }

    #[test]
    fn a_journey_read_out_of_order_ends_at_the_same_aggregates() {
        let d = Definition::default();
        let facts = [
            (0, at("2026-11-02")),
            (1, at("2026-11-03")),
            (2, at("2026-11-04")),
            (3, at("2026-11-20")),
            (4, at("2027-11-20")),
            (5, at("2026-11-03")),
        ];
        let apply = |j: &mut Journey, (kind, t): (i32, i64)| match kind {
            0 => j.capture(t, &capture(), Some(&d)),
            1 => j.reach(Metric::Opportunities, t),
            2 => j.reach(Metric::Wins, t),
            3 => j.account(Metric::Churned, t, false, None),
            4 => j.account(Metric::Retained, t, true, None),
            _ => {
                j.own(Role::InsideSalesRep, "aki", "east");
                j.own(Role::AccountExecutive, "dan", "north");
                j.own(Role::CustomerSuccessManager, "cy", "care");
            }
        };
        let run = |order: &[usize]| {
            let mut deltas = Deltas::default();
            let mut j = Journey::default();
            for &i in order {
                let before = j.contribution();
                apply(&mut j, facts[i]);
                deltas.add(&before, -1);
                deltas.add(&j.contribution(), 1);
            }
            deltas.settle();
            deltas
        };
        let in_order = run(&[0, 5, 1, 2, 3, 4]);
        let reversed = run(&[4, 3, 2, 1, 5, 0]);
        assert_eq!(in_order.flow(), reversed.flow());
        assert_eq!(in_order.cohort(), reversed.cohort());
        assert_eq!(in_order.reached(), reversed.reached());
        let flow: BTreeMap<_, _> = in_order.flow().into_iter().collect();
        let cohort: BTreeMap<_, _> = in_order.cohort().into_iter().collect();
        assert!(flow.keys().all(|(dim, value, ..)| dim.is_empty() || !value.is_empty()));
        assert_eq!(flow.get(&("source", "web_form", 1, day("2026-11-03"), Metric::Opportunities)), Some(&1));
        assert_eq!(
            flow.get(&("inside_sales_rep", "aki", 1, day("2026-11-04"), Metric::Wins)),
            Some(&1),
            "filed under the lead's rep"
        );
        // The same in each wider run holding the day.
        let run = |w| span::run_start(day("2026-11-04"), w);
        for w in [8, 64] {
            assert_eq!(flow.get(&("inside_sales_rep", "aki", w, run(w), Metric::Wins)), Some(&1));
        }
        assert_eq!(flow.keys().filter(|k| k.4 == Metric::Wins).count(), 12 * span::WIDTHS.len());
        let reached: BTreeMap<_, _> = in_order.reached().into_iter().collect();
        assert_eq!(reached.get(&("", "", day("2026-11-02"), Metric::Churned, day("2026-11-20"))), Some(&1));
        assert_eq!(cohort.get(&("", "", 1, day("2026-11-02"), Metric::Churned)), Some(&1));
        assert_eq!(in_order.money(), reversed.money());
    }
}
