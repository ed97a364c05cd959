//! The shared quality-lead definitions (docs/domain.md, "The shared definition") and
//! the one implementation of every rule they contain: lead scoring, never-buy
//! exclusion, the promising-lead threshold, BANT gates, phase exit criteria,
//! recycle reasons and follow-up SLAs.
//!
//! Every service links this crate and evaluates the same [`Definition`] the kpi
//! service publishes, so a "lead" means the same thing everywhere. The crate is
//! pure: no I/O, no clock, no async. It must never grow a dependency on gRPC or
//! SQL; callers convert at their edges.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod bant;
mod reasons;
mod scoring;

pub use bant::{Bant, BantCondition, BantRecord, BantRequirement, Phase, PhaseExit, PhaseMoveRefused};
pub use reasons::{ReasonRefused, RecycleReason};
pub use scoring::{Classification, ExclusionReason, LeadClass, LeadFacts, Relationship, Score, TitleMatch, TouchKind};

/// One version of the shared definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Definition {
    /// Set by the kpi service when the definition is published; 1 is the built-in default.
    pub version: i64,
    pub attribute: AttributeScoring,
    pub behaviour: BehaviourScoring,
    /// Score (attribute + behaviour) at which a lead is promising and handed over.
    pub promising_threshold: i32,
    pub exclusion: Exclusion,
    /// BANT conditions inside sales must confirm to convert a lead.
    pub opportunity_requires: BantRequirement,
    /// Exit criteria of the field-sales phases.
    pub phase_exits: Vec<PhaseExit>,
    /// Reasons inside sales may recycle a lead with.
    pub recycle_reasons: Vec<RecycleReason>,
    /// Reasons field sales may close a deal lost with; each is also the
    /// lead's recycle track in marketing.
    pub lost_reasons: Vec<String>,
    /// Never-buy reasons: inside sales disqualifies a lead with one of them,
    /// and marketing reclassifies a lead it finds to be never-buy with one.
    /// Definitions stored before the list existed read as the default list.
    #[serde(default = "default_never_buy_reasons")]
    pub never_buy_reasons: Vec<String>,
    /// Hours from hand-over to first contact, per lead source.
    pub follow_up_sla_hours: BTreeMap<String, i32>,
    pub default_follow_up_sla_hours: i32,
    /// A recycled lead's behaviour score restarts from zero.
    pub recycle_resets_behaviour: bool,
}

/// Fit with the ideal customer: company size, industry, job title.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeScoring {
    /// `(min_employees, points)`; the highest band at or below the size wins.
    pub company_size_bands: Vec<(i32, i32)>,
    /// Lower-case industry → points.
    pub industry_points: BTreeMap<String, i32>,
    pub other_industry_points: i32,
    /// `(words, points)`; the first rule with a word in the lower-cased title wins.
    pub job_title_rules: Vec<(Vec<String>, i32)>,
    pub other_title_points: i32,
    pub max: i32,
}

/// Buying intent from digital behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BehaviourScoring {
    /// Points per touch, by kind.
    pub touch_points: BTreeMap<TouchKind, i32>,
    pub max: i32,
}

/// Rules that put a lead in the never-buy class.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Exclusion {
    pub competitor_domains: Vec<String>,
    pub partner_domains: Vec<String>,
    pub student_domain_suffixes: Vec<String>,
    pub student_title_words: Vec<String>,
}

/// Why a definition cannot be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidDefinition {
    /// The offending field, as a path into the definition.
    pub field: String,
    pub message: String,
}

pub(crate) fn invalid(field: &str, message: impl Into<String>) -> InvalidDefinition {
    InvalidDefinition { field: field.to_owned(), message: message.into() }
}

/// The built-in never-buy reasons: the three classes the capture rules
/// find (partner, competitor, student) and a company that can never fit.
pub fn default_never_buy_reasons() -> Vec<String> {
    strings(&["partner", "competitor", "student", "no_fit"])
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

impl Default for Definition {
    /// Version 1: the built-in definition every fresh installation starts from.
    fn default() -> Self {
        use TouchKind::*;
        Definition {
            version: 1,
            attribute: AttributeScoring {
                company_size_bands: vec![(1, 0), (10, 5), (50, 12), (250, 20), (1000, 25)],
                industry_points: [
                    ("software", 15),
                    ("saas", 15),
                    ("it", 15),
                    ("information technology", 15),
                    ("internet", 12),
                    ("manufacturing", 12),
                    ("financial services", 12),
                    ("finance", 12),
                    ("retail", 8),
                    ("healthcare", 8),
                    ("logistics", 8),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
                other_industry_points: 4,
                job_title_rules: vec![
                    (
                        strings(&[
                            "ceo",
                            "cto",
                            "cfo",
                            "coo",
                            "cio",
                            "cmo",
                            "chief",
                            "president",
                            "founder",
                            "owner",
                            "vp",
                            "vice president",
                            "head",
                            "director",
                            "社長",
                            "取締役",
                            "部長",
                            "本部長",
                        ]),
                        20,
                    ),
                    (strings(&["manager", "lead", "課長", "マネージャー"]), 12),
                ],
                other_title_points: 4,
                max: 60,
            },
            behaviour: BehaviourScoring {
                touch_points: [
                    (PageView, 1),
                    (ProductPageView, 3),
                    (EmailOpen, 1),
                    (EmailClick, 2),
                    (VideoView, 2),
                    (ContentDownload, 5),
                    (WebinarAttended, 8),
                    (SeminarAttended, 8),
                    (TrialSignup, 15),
                    (CatalogueRequest, 10),
                    (Inquiry, 20),
                    (QuoteRequest, 25),
                    (FormSubmission, 3),
                ]
                .into_iter()
                .collect(),
                max: 40,
            },
            promising_threshold: 65,
            exclusion: Exclusion {
                competitor_domains: vec![],
                partner_domains: vec![],
                student_domain_suffixes: strings(&[".edu", ".ac.jp", ".ac.uk", ".edu.au"]),
                student_title_words: strings(&["student", "intern", "学生"]),
            },
            opportunity_requires: BantRequirement { budget: false, authority: false, need: true, timeline: true },
            phase_exits: vec![
                PhaseExit { phase: Phase::PreOpportunity, requires: BantRequirement::only(&[BantCondition::Need]) },
                PhaseExit {
                    phase: Phase::IssueRecognition,
                    requires: BantRequirement::only(&[BantCondition::Need, BantCondition::Budget]),
                },
                PhaseExit { phase: Phase::Evaluation, requires: BantRequirement::ALL },
            ],
            recycle_reasons: vec![
                RecycleReason::new("not_contacted", false),
                RecycleReason::new("timing", true),
                RecycleReason::new("no_budget", false),
                RecycleReason::new("no_need", false),
            ],
            lost_reasons: strings(&[
                "lost_to_competitor",
                "lost_price",
                "lost_no_decision",
                "lost_timing",
                "lost_no_budget",
                "lost_other",
            ]),
            never_buy_reasons: default_never_buy_reasons(),
            follow_up_sla_hours: [
                ("quote_request", 2),
                ("inquiry", 4),
                ("trial", 8),
                ("web_form", 24),
                ("content_download", 48),
                ("webinar", 48),
                ("seminar", 48),
                ("referral", 24),
                ("ads", 48),
                ("trade_show", 72),
                ("web", 24),
                ("chat", 4),
                ("email", 48),
                ("sns", 48),
                ("outbound", 24),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
            default_follow_up_sla_hours: 48,
            recycle_resets_behaviour: true,
        }
    }
}

/// Entries a list of a definition may have.
pub const MAX_ENTRIES: usize = 1_000;
/// Characters a word, name or domain of a definition may have.
pub const MAX_TEXT: usize = 200;

impl Definition {
    /// Checks the rules that make a definition usable. The one the domain insists
    /// on: attribute fit weighs more than behaviour.
    pub fn validate(&self) -> Result<(), InvalidDefinition> {
        let a = &self.attribute;
        let b = &self.behaviour;
        if a.max <= 0 {
            return Err(invalid("attribute.max", "must be positive"));
        }
        if b.max < 0 {
            return Err(invalid("behaviour.max", "must not be negative"));
        }
        if b.max >= a.max {
            return Err(invalid(
                "behaviour.max",
                "attribute score must weigh more than behaviour score (behaviour.max < attribute.max)",
            ));
        }
        let negative = a.company_size_bands.iter().any(|(m, p)| *m < 0 || *p < 0)
            || a.industry_points.values().any(|p| *p < 0)
            || a.job_title_rules.iter().any(|(_, p)| *p < 0)
            || a.other_industry_points < 0
            || a.other_title_points < 0;
        if negative {
            return Err(invalid("attribute", "points and bands must not be negative"));
        }
        if a.job_title_rules.iter().any(|(words, _)| words.is_empty() || words.iter().any(|w| w.trim().is_empty())) {
            return Err(invalid("attribute.job_title_rules", "every rule needs at least one non-empty word"));
        }
        if b.touch_points.values().any(|p| *p < 0) {
            return Err(invalid("behaviour.touch_points", "points must not be negative"));
        }
        if self.promising_threshold <= 0 || self.promising_threshold > a.max + b.max {
            return Err(invalid(
                "promising_threshold",
                format!("must be between 1 and attribute.max + behaviour.max ({})", a.max + b.max),
            ));
        }
        reasons::validate(&self.recycle_reasons, &self.lost_reasons, &self.never_buy_reasons)?;
        if self.default_follow_up_sla_hours <= 0 {
            return Err(invalid("default_follow_up_sla_hours", "must be positive"));
        }
        if self.follow_up_sla_hours.values().any(|h| *h <= 0) {
            return Err(invalid("follow_up_sla_hours", "hours must be positive"));
        }
        if let Some(source) = self.follow_up_sla_hours.keys().find(|s| !themodel_values::is_code(s)) {
            return Err(invalid("follow_up_sla_hours", format!("{source:?} is not a source code")));
        }
        self.validate_exclusion()?;
        self.validate_sizes()?;
        let mut seen = Vec::new();
        for exit in &self.phase_exits {
            if !exit.phase.is_open() {
                return Err(invalid("phase_exits", "exit criteria apply to open phases only"));
            }
            if seen.contains(&exit.phase) {
                return Err(invalid("phase_exits", format!("{} is listed twice", exit.phase.name())));
            }
            seen.push(exit.phase);
        }
        Ok(())
    }

    /// The never-buy rules must single leads out: a blank entry would match
    /// too much (a blank domain suffix ends every address, so every lead
    /// would be excluded) and an address is not a domain.
    fn validate_exclusion(&self) -> Result<(), InvalidDefinition> {
        let ex = &self.exclusion;
        let domains = [
            ("exclusion.competitor_domains", &ex.competitor_domains),
            ("exclusion.partner_domains", &ex.partner_domains),
            ("exclusion.student_domain_suffixes", &ex.student_domain_suffixes),
        ];
        for (field, list) in domains {
            if let Some(d) =
                list.iter().find(|d| d.trim().is_empty() || d.contains('@') || d.contains(char::is_whitespace))
            {
                return Err(invalid(
                    field,
                    format!(
                        "{d:?} is not a domain: entries are non-empty domains without '@' or spaces (a blank suffix would exclude every lead)"
                    ),
                ));
            }
        }
        if ex.student_title_words.iter().any(|w| w.trim().is_empty()) {
            return Err(invalid("exclusion.student_title_words", "words must not be blank"));
        }
        Ok(())
    }

    /// A definition is read by every service on every decision: lists and
    /// words are bounded ([`MAX_ENTRIES`], [`MAX_TEXT`]).
    fn validate_sizes(&self) -> Result<(), InvalidDefinition> {
        let a = &self.attribute;
        let ex = &self.exclusion;
        let lists = [
            ("attribute.company_size_bands", a.company_size_bands.len()),
            ("attribute.industry_points", a.industry_points.len()),
            ("attribute.job_title_rules", a.job_title_rules.len()),
            ("exclusion.competitor_domains", ex.competitor_domains.len()),
            ("exclusion.partner_domains", ex.partner_domains.len()),
            ("exclusion.student_domain_suffixes", ex.student_domain_suffixes.len()),
            ("exclusion.student_title_words", ex.student_title_words.len()),
            ("follow_up_sla_hours", self.follow_up_sla_hours.len()),
            ("recycle_reasons", self.recycle_reasons.len()),
            ("lost_reasons", self.lost_reasons.len()),
            ("never_buy_reasons", self.never_buy_reasons.len()),
        ];
        if let Some((field, n)) = lists.into_iter().find(|(_, n)| *n > MAX_ENTRIES) {
            return Err(invalid(field, format!("has {n} entries; at most {MAX_ENTRIES}")));
        }
        let rule_words = a.job_title_rules.iter().flat_map(|(words, _)| words);
        if a.job_title_rules.iter().any(|(words, _)| words.len() > MAX_ENTRIES) {
            return Err(invalid("attribute.job_title_rules", format!("a rule has more than {MAX_ENTRIES} words")));
        }
        let texts = [
            ("attribute.industry_points", a.industry_points.keys().collect::<Vec<_>>()),
            ("attribute.job_title_rules", rule_words.collect()),
            ("exclusion.competitor_domains", ex.competitor_domains.iter().collect()),
            ("exclusion.partner_domains", ex.partner_domains.iter().collect()),
            ("exclusion.student_domain_suffixes", ex.student_domain_suffixes.iter().collect()),
            ("exclusion.student_title_words", ex.student_title_words.iter().collect()),
            ("follow_up_sla_hours", self.follow_up_sla_hours.keys().collect()),
            ("lost_reasons", self.lost_reasons.iter().collect()),
            ("never_buy_reasons", self.never_buy_reasons.iter().collect()),
        ];
        for (field, list) in texts {
            if let Some(t) = list.iter().find(|t| t.chars().count() > MAX_TEXT) {
                return Err(invalid(
                    field,
                    format!("{:?}… is longer than {MAX_TEXT} characters", t.chars().take(20).collect::<String>()),
                ));
            }
        }
        Ok(())
    }

    /// Hours inside sales has for first contact with a lead from `source`
    /// (validated positive when the definition was published).
    pub fn follow_up_sla_hours(&self, source: &str) -> u32 {
        let hours = self.follow_up_sla_hours.get(source).copied().unwrap_or(self.default_follow_up_sla_hours);
        u32::try_from(hours).unwrap_or(0)
    }

    /// Whether a score makes a lead promising.
    pub fn is_promising(&self, score: Score) -> bool {
        score.total() >= self.promising_threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_definition_is_valid() {
        Definition::default().validate().expect("built-in definition must validate");
    }

    #[test]
    fn behaviour_may_not_outweigh_attribute() {
        let mut d = Definition::default();
        d.behaviour.max = d.attribute.max;
        assert_eq!(d.validate().unwrap_err().field, "behaviour.max");
    }

    #[test]
    fn threshold_must_be_reachable() {
        let mut d = Definition::default();
        d.promising_threshold = d.attribute.max + d.behaviour.max + 1;
        assert_eq!(d.validate().unwrap_err().field, "promising_threshold");
        d.promising_threshold = 0;
        assert_eq!(d.validate().unwrap_err().field, "promising_threshold");
    }

    #[test]
    fn phase_exit_listed_once() {
        let mut d = Definition::default();
        d.phase_exits.push(d.phase_exits[0].clone());
        assert_eq!(d.validate().unwrap_err().field, "phase_exits");
    }

    #[test]
    fn exclusion_rules_that_would_match_everyone_are_refused() {
        let mut d = Definition::default();
        d.exclusion.student_domain_suffixes.push(String::new());
        let err = d.validate().unwrap_err();
        assert_eq!(err.field, "exclusion.student_domain_suffixes");
        assert!(err.message.contains("every lead"), "{err:?}");
        let mut d = Definition::default();
        d.exclusion.competitor_domains.push("rival@rival.example".into());
        assert_eq!(d.validate().unwrap_err().field, "exclusion.competitor_domains");
        let mut d = Definition::default();
        d.exclusion.student_title_words.push("  ".into());
        assert_eq!(d.validate().unwrap_err().field, "exclusion.student_title_words");
    }

    #[test]
    fn absurdly_large_definitions_are_refused() {
        let mut d = Definition::default();
        d.exclusion.partner_domains = (0..=MAX_ENTRIES).map(|i| format!("p{i}.example")).collect();
        let err = d.validate().unwrap_err();
        assert_eq!(err.field, "exclusion.partner_domains");
        assert!(err.message.contains("1001 entries"), "{err:?}");
        let mut d = Definition::default();
        d.attribute.industry_points.insert("x".repeat(MAX_TEXT + 1), 3);
        assert_eq!(d.validate().unwrap_err().field, "attribute.industry_points");
        let mut d = Definition::default();
        d.attribute.job_title_rules[0].0 = vec!["w".into(); MAX_ENTRIES + 1];
        assert_eq!(d.validate().unwrap_err().field, "attribute.job_title_rules");
    }

    #[test]
    fn sla_by_source_with_default() {
        let d = Definition::default();
        assert_eq!(d.follow_up_sla_hours("quote_request"), 2);
        assert_eq!(d.follow_up_sla_hours("trade_show"), 72);
        assert_eq!(d.follow_up_sla_hours("carrier_pigeon"), 48);
    }

    #[test]
    fn definition_round_trips_through_json() {
        let d = Definition::default();
        let json = serde_json::to_string(&d).expect("serialise");
        let back: Definition = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(d, back);
    }

    #[test]
    fn definitions_stored_before_never_buy_reasons_read_the_default_list() {
        let mut json: serde_json::Value = serde_json::to_value(Definition::default()).expect("serialise");
        json.as_object_mut().expect("object").remove("never_buy_reasons");
        let back: Definition = serde_json::from_value(json).expect("deserialise");
        assert_eq!(back.never_buy_reasons, ["partner", "competitor", "student", "no_fit"]);
    }

    #[test]
    fn never_buy_reasons_are_the_definitions() {
        let d = Definition::default();
        assert_eq!(d.check_never_buy_reason("student"), Ok(()));
        assert_eq!(
            d.check_never_buy_reason("rude").unwrap_err().to_string(),
            "\"rude\" is not a reason of definition version 1; accepted: partner, competitor, student, no_fit"
        );
        let mut d = Definition::default();
        d.never_buy_reasons.clear();
        assert_eq!(d.validate().unwrap_err().field, "never_buy_reasons");
    }
}
