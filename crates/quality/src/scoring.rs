//! Lead score = attribute score + behaviour score (docs/domain.md, "Marketing"), and the
//! never-buy classification.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Definition;

/// A kind of digital behaviour. The names are the wire names (`QUOTE_REQUEST`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TouchKind {
    PageView,
    ProductPageView,
    EmailOpen,
    EmailClick,
    VideoView,
    ContentDownload,
    WebinarAttended,
    SeminarAttended,
    TrialSignup,
    CatalogueRequest,
    Inquiry,
    QuoteRequest,
    FormSubmission,
}

impl TouchKind {
    pub const ALL: [TouchKind; 13] = [
        TouchKind::PageView,
        TouchKind::ProductPageView,
        TouchKind::EmailOpen,
        TouchKind::EmailClick,
        TouchKind::VideoView,
        TouchKind::ContentDownload,
        TouchKind::WebinarAttended,
        TouchKind::SeminarAttended,
        TouchKind::TrialSignup,
        TouchKind::CatalogueRequest,
        TouchKind::Inquiry,
        TouchKind::QuoteRequest,
        TouchKind::FormSubmission,
    ];

    /// The wire name, e.g. `QUOTE_REQUEST`.
    pub fn name(self) -> &'static str {
        match self {
            TouchKind::PageView => "PAGE_VIEW",
            TouchKind::ProductPageView => "PRODUCT_PAGE_VIEW",
            TouchKind::EmailOpen => "EMAIL_OPEN",
            TouchKind::EmailClick => "EMAIL_CLICK",
            TouchKind::VideoView => "VIDEO_VIEW",
            TouchKind::ContentDownload => "CONTENT_DOWNLOAD",
            TouchKind::WebinarAttended => "WEBINAR_ATTENDED",
            TouchKind::SeminarAttended => "SEMINAR_ATTENDED",
            TouchKind::TrialSignup => "TRIAL_SIGNUP",
            TouchKind::CatalogueRequest => "CATALOGUE_REQUEST",
            TouchKind::Inquiry => "INQUIRY",
            TouchKind::QuoteRequest => "QUOTE_REQUEST",
            TouchKind::FormSubmission => "FORM_SUBMISSION",
        }
    }

    pub fn from_name(name: &str) -> Option<TouchKind> {
        TouchKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// What a lead is to us, as the capturing form or person said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Relationship {
    #[default]
    Prospect,
    Partner,
    Competitor,
    Student,
}

/// The facts about a lead that the definition scores and classifies.
#[derive(Debug, Clone, Default)]
pub struct LeadFacts<'a> {
    pub email: &'a str,
    pub company_size: i32,
    pub industry: &'a str,
    pub job_title: &'a str,
    pub relationship: Relationship,
}

/// A lead's score under one definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Score {
    pub attribute: i32,
    pub behaviour: i32,
}

impl Score {
    pub fn total(self) -> i32 {
        self.attribute + self.behaviour
    }
}

/// Why a lead is in the never-buy class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExclusionReason {
    Partner,
    Competitor,
    Student,
}

impl ExclusionReason {
    pub fn code(self) -> &'static str {
        match self {
            ExclusionReason::Partner => "partner",
            ExclusionReason::Competitor => "competitor",
            ExclusionReason::Student => "student",
        }
    }
}

/// The class a lead falls in at acquisition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classification {
    Prospect,
    Excluded(ExclusionReason),
}

/// A lead's class under a definition, from its facts and scored touches
/// alone (what people decided about it aside): see [`Definition::class`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeadClass {
    Nurturing,
    Promising,
    NeverBuy,
}

/// What [`Definition::title_rule`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TitleMatch {
    /// The rule at this index of `attribute.job_title_rules`.
    Rule(usize),
    /// A title no rule matches.
    Other,
    /// No title.
    Blank,
}

fn email_domain(email: &str) -> String {
    email.rsplit_once('@').map(|(_, d)| d.trim().to_lowercase()).unwrap_or_default()
}

impl Definition {
    /// Fit with the ideal target, capped at `attribute.max`.
    pub fn attribute_score(&self, lead: &LeadFacts<'_>) -> i32 {
        let a = &self.attribute;
        let size = self.size_band(lead.company_size).map_or(0, |i| a.company_size_bands[i].1);
        let industry = lead.industry.trim().to_lowercase();
        let industry = if industry.is_empty() {
            0
        } else {
            a.industry_points.get(&industry).copied().unwrap_or(a.other_industry_points)
        };
        let title = match self.title_rule(lead.job_title) {
            TitleMatch::Rule(i) => a.job_title_rules[i].1,
            TitleMatch::Other => a.other_title_points,
            TitleMatch::Blank => 0,
        };
        (size + industry + title).min(a.max)
    }

    /// The company-size band `size` falls in (an index into
    /// `attribute.company_size_bands`): the highest band whose minimum is at
    /// or below it. `None` for an unknown size (0) or one below every band.
    pub fn size_band(&self, size: i32) -> Option<usize> {
        let bands = &self.attribute.company_size_bands;
        (size > 0).then(|| (0..bands.len()).filter(|&i| bands[i].0 <= size).max_by_key(|&i| bands[i].0)).flatten()
    }

    /// Which job-title rule a title meets: the first with a word in the
    /// lower-cased title.
    pub fn title_rule(&self, job_title: &str) -> TitleMatch {
        let title = job_title.trim().to_lowercase();
        if title.is_empty() {
            return TitleMatch::Blank;
        }
        self.attribute
            .job_title_rules
            .iter()
            .position(|(words, _)| words.iter().any(|w| title_has_word(&title, &lowercase(w))))
            .map_or(TitleMatch::Other, TitleMatch::Rule)
    }

    /// Intent from behaviour: points per touch, by kind, capped at `behaviour.max`.
    pub fn behaviour_score(&self, touches: &BTreeMap<TouchKind, i32>) -> i32 {
        let raw: i64 = touches
            .iter()
            .map(|(kind, n)| i64::from(self.behaviour.touch_points.get(kind).copied().unwrap_or(0)) * i64::from(*n))
            .sum();
        raw.min(i64::from(self.behaviour.max)) as i32
    }

    pub fn score(&self, lead: &LeadFacts<'_>, touches: &BTreeMap<TouchKind, i32>) -> Score {
        Score { attribute: self.attribute_score(lead), behaviour: self.behaviour_score(touches) }
    }

    /// Partners, competitors and students are the never-buy class (docs/domain.md, "Marketing").
    pub fn classify(&self, lead: &LeadFacts<'_>) -> Classification {
        use ExclusionReason::*;
        match lead.relationship {
            Relationship::Partner => return Classification::Excluded(Partner),
            Relationship::Competitor => return Classification::Excluded(Competitor),
            Relationship::Student => return Classification::Excluded(Student),
            Relationship::Prospect => {}
        }
        let ex = &self.exclusion;
        let domain = email_domain(lead.email);
        if ex.competitor_domains.iter().any(|d| d.eq_ignore_ascii_case(&domain)) {
            return Classification::Excluded(Competitor);
        }
        if ex.partner_domains.iter().any(|d| d.eq_ignore_ascii_case(&domain)) {
            return Classification::Excluded(Partner);
        }
        if ex.student_domain_suffixes.iter().any(|s| domain.ends_with(&*lowercase(s))) {
            return Classification::Excluded(Student);
        }
        let title = lead.job_title.to_lowercase();
        if ex.student_title_words.iter().any(|w| title_has_word(&title, &lowercase(w))) {
            return Classification::Excluded(Student);
        }
        Classification::Prospect
    }

    /// Never-buy when the exclusion rules class the lead so; otherwise
    /// promising when its score reaches the threshold; otherwise nurturing.
    pub fn class(&self, lead: &LeadFacts<'_>, touches: &BTreeMap<TouchKind, i32>) -> LeadClass {
        match self.classify(lead) {
            Classification::Excluded(_) => LeadClass::NeverBuy,
            Classification::Prospect if self.is_promising(self.score(lead, touches)) => LeadClass::Promising,
            Classification::Prospect => LeadClass::Nurturing,
        }
    }
}

/// `s` lower-cased, without a copy when it is already (as a definition's
/// words usually are: this runs for every rule word of every lead scored).
fn lowercase(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase() || !b.is_ascii()) {
        std::borrow::Cow::Owned(s.to_lowercase())
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// Whether `word` stands in `title` as a word of its own ("vp" in "vp sales",
/// not in "mvp"). Words of non-ASCII scripts, written without spaces, match
/// anywhere.
fn title_has_word(title: &str, word: &str) -> bool {
    if word.is_empty() {
        return false;
    }
    if !word.is_ascii() {
        return title.contains(word);
    }
    title.match_indices(word).any(|(i, _)| {
        let before = title[..i].chars().next_back();
        let after = title[i + word.len()..].chars().next();
        let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_ascii_alphanumeric());
        boundary(before) && boundary(after)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(size: i32, industry: &'a str, title: &'a str) -> LeadFacts<'a> {
        LeadFacts { email: "a@example.com", company_size: size, industry, job_title: title, ..Default::default() }
    }

    #[test]
    fn attribute_score_table() {
        let d = Definition::default();
        let cases = [
            (facts(500, "Software", "CTO"), 20 + 15 + 20),
            (facts(5000, "software", "VP Engineering"), 25 + 15 + 20),
            (facts(60, "retail", "Marketing Manager"), 12 + 8 + 12),
            (facts(0, "", ""), 0),
            (facts(3, "farming", "clerk"), 4 + 4), // size band 1-9 scores 0
            (facts(20, "", "MVP of nothing"), 5 + 4),
            (facts(300, "manufacturing", "営業部長"), 20 + 12 + 20),
        ];
        for (f, want) in cases {
            assert_eq!(d.attribute_score(&f), want, "{f:?}");
        }
    }

    #[test]
    fn classes_follow_exclusion_then_the_threshold() {
        let d = Definition::default();
        let none = BTreeMap::new();
        let fit = facts(500, "software", "CTO");
        assert_eq!(d.class(&fit, &none), LeadClass::Nurturing, "fit alone stays under 65");
        let engaged = BTreeMap::from([(TouchKind::QuoteRequest, 1)]);
        assert!(d.is_promising(d.score(&fit, &engaged)));
        assert_eq!(d.class(&fit, &engaged), LeadClass::Promising);
        let student = LeadFacts { relationship: Relationship::Student, ..fit };
        assert_eq!(d.class(&student, &engaged), LeadClass::NeverBuy, "exclusion wins over any score");
        let mut stricter = d.clone();
        stricter.promising_threshold = d.score(&fit, &engaged).total() + 1;
        assert_eq!(stricter.class(&fit, &engaged), LeadClass::Nurturing);
    }

    #[test]
    fn attribute_score_is_capped() {
        let mut d = Definition::default();
        d.attribute.max = 30;
        assert_eq!(d.attribute_score(&facts(5000, "software", "ceo")), 30);
    }

    #[test]
    fn behaviour_score_sums_and_caps() {
        let d = Definition::default();
        let mut t = BTreeMap::new();
        assert_eq!(d.behaviour_score(&t), 0);
        t.insert(TouchKind::PageView, 3);
        t.insert(TouchKind::ContentDownload, 1);
        assert_eq!(d.behaviour_score(&t), 3 + 5);
        t.insert(TouchKind::QuoteRequest, 2);
        assert_eq!(d.behaviour_score(&t), 40, "capped at behaviour.max");
    }

    #[test]
    fn attribute_outweighs_behaviour_by_default() {
        let d = Definition::default();
        let all: BTreeMap<_, _> = TouchKind::ALL.into_iter().map(|k| (k, 100)).collect();
        let ideal = facts(10_000, "software", "ceo");
        assert!(d.behaviour_score(&all) < d.attribute_score(&ideal));
    }

    #[test]
    fn threshold_needs_fit_and_intent() {
        let d = Definition::default();
        let fit = facts(500, "software", "cto"); // 55
        let none = BTreeMap::new();
        assert!(!d.is_promising(d.score(&fit, &none)), "fit alone is not buying intent");
        let quote = BTreeMap::from([(TouchKind::QuoteRequest, 1)]);
        assert!(d.is_promising(d.score(&fit, &quote)));
        let poor = facts(0, "", "");
        let everything: BTreeMap<_, _> = TouchKind::ALL.into_iter().map(|k| (k, 10)).collect();
        assert!(!d.is_promising(d.score(&poor, &everything)), "behaviour alone never promotes");
    }

    #[test]
    fn exclusion_table() {
        let mut d = Definition::default();
        d.exclusion.competitor_domains.push("rival.example".into());
        d.exclusion.partner_domains.push("reseller.example".into());
        let cases = [
            ("a@corp.example", "CTO", Relationship::Prospect, Classification::Prospect),
            ("a@corp.example", "CTO", Relationship::Student, Classification::Excluded(ExclusionReason::Student)),
            ("a@corp.example", "", Relationship::Partner, Classification::Excluded(ExclusionReason::Partner)),
            ("a@corp.example", "", Relationship::Competitor, Classification::Excluded(ExclusionReason::Competitor)),
            ("a@Rival.Example", "", Relationship::Prospect, Classification::Excluded(ExclusionReason::Competitor)),
            ("a@reseller.example", "", Relationship::Prospect, Classification::Excluded(ExclusionReason::Partner)),
            ("kim@cs.stanford.edu", "", Relationship::Prospect, Classification::Excluded(ExclusionReason::Student)),
            ("t@u-tokyo.ac.jp", "", Relationship::Prospect, Classification::Excluded(ExclusionReason::Student)),
            (
                "x@corp.example",
                "Summer Intern",
                Relationship::Prospect,
                Classification::Excluded(ExclusionReason::Student),
            ),
            (
                "x@corp.example",
                "Student Success Lead",
                Relationship::Prospect,
                Classification::Excluded(ExclusionReason::Student),
            ),
            ("x@corp.example", "Internal Audit", Relationship::Prospect, Classification::Prospect),
        ];
        for (email, title, rel, want) in cases {
            let f = LeadFacts { email, job_title: title, relationship: rel, ..Default::default() };
            assert_eq!(d.classify(&f), want, "{email} / {title} / {rel:?}");
        }
    }

    #[test]
    fn a_definitions_words_match_whatever_their_case() {
        let mut d = Definition::default();
        d.attribute.job_title_rules.insert(0, (vec!["Chief Growth".into()], 7));
        d.exclusion.student_title_words.push("WERKSTUDENT".into());
        d.exclusion.student_domain_suffixes.push(".Uni.Example".into());
        assert_eq!(d.title_rule("chief growth officer"), TitleMatch::Rule(0));
        let f = |email, job_title| LeadFacts { email, job_title, ..Default::default() };
        let student = Classification::Excluded(ExclusionReason::Student);
        assert_eq!(d.classify(&f("a@corp.example", "Werkstudent Sales")), student);
        assert_eq!(d.classify(&f("a@cs.uni.example", "")), student);
        assert_eq!(d.classify(&f("a@corp.example", "Werkstudenten-Betreuer")), Classification::Prospect);
    }

    #[test]
    fn touch_kind_names_round_trip() {
        for k in TouchKind::ALL {
            assert_eq!(TouchKind::from_name(k.name()), Some(k));
        }
        assert_eq!(TouchKind::from_name("NOPE"), None);
    }
}
