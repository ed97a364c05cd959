//! Attribute calibration (docs/domain.md, "Attribute calibration"): how
//! much each attribute value lifts the opportunity, win and renewal rates
//! of the leads that carry it, and the attribute points a definition would
//! give each value if its points followed the opportunity lift. No SQL.

use themodel_quality::Definition;

use crate::domain::{Counts, Rate};
use crate::journey::{Dimension, OTHER_TITLE, rule_class, size_band};

/// The dimensions calibrated: the three the attribute score weighs, and the
/// lead source (shown, never scored).
pub const DIMENSIONS: [Dimension; 4] =
    [Dimension::Industry, Dimension::CompanySizeBand, Dimension::JobTitleClass, Dimension::Source];

/// A value's rates as multiples of the baseline's; each `None` when either
/// rate is absent or the baseline's is zero.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Lifts {
    pub opportunity: Option<f64>,
    pub win: Option<f64>,
    pub renewal: Option<f64>,
}

pub fn lifts(value: &Counts, baseline: &Counts) -> Lifts {
    let (v, b) = (value.exact_rates(), baseline.exact_rates());
    let lift = |v: Option<Rate>, b: Option<Rate>| v?.relative_to(b?);
    Lifts {
        opportunity: lift(v.opportunity, b.opportunity),
        win: lift(v.win, b.win),
        renewal: lift(v.renewal, b.renewal),
    }
}

/// Where a value's points sit in a definition.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// `attribute.industry_points[value]`. An industry the definition does
    /// not list scores as "other"; calibrating it gives it an entry.
    Industry(String),
    SizeBand(usize),
    TitleRule(usize),
    OtherTitle,
}

/// The entry of `d` a split value names; `None` for values the score does
/// not weigh (a source, an unknown size or title, a band `d` does not have).
fn entry(d: &Definition, dim: Dimension, value: &str) -> Option<Entry> {
    let a = &d.attribute;
    match dim {
        Dimension::Industry if !value.is_empty() => Some(Entry::Industry(value.to_owned())),
        // The band whose own smallest size is labelled `value`.
        Dimension::CompanySizeBand => (0..a.company_size_bands.len())
            .find(|&i| size_band(d, a.company_size_bands[i].0.max(1)) == value)
            .map(Entry::SizeBand),
        Dimension::JobTitleClass if value == OTHER_TITLE => Some(Entry::OtherTitle),
        Dimension::JobTitleClass => {
            (0..a.job_title_rules.len()).find(|&i| rule_class(d, i) == value).map(Entry::TitleRule)
        }
        _ => None,
    }
}

fn points(d: &Definition, e: &Entry) -> i32 {
    let a = &d.attribute;
    match e {
        Entry::Industry(v) => a.industry_points.get(v).copied().unwrap_or(a.other_industry_points),
        Entry::SizeBand(i) => a.company_size_bands[*i].1,
        Entry::TitleRule(i) => a.job_title_rules[*i].1,
        Entry::OtherTitle => a.other_title_points,
    }
}

fn set_points(d: &mut Definition, e: &Entry, p: i32) {
    let a = &mut d.attribute;
    match e {
        Entry::Industry(v) => {
            a.industry_points.insert(v.clone(), p);
        }
        Entry::SizeBand(i) => a.company_size_bands[*i].1 = p,
        Entry::TitleRule(i) => a.job_title_rules[*i].1 = p,
        Entry::OtherTitle => a.other_title_points = p,
    }
}

/// One calibrated value.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub dimension: Dimension,
    pub value: String,
    pub counts: Counts,
    pub lifts: Lifts,
    /// The points `d` gives the value (`None`: not scored).
    pub points: Option<i32>,
    /// The points proposed (`None`: not scored, or too few leads to say).
    pub proposed: Option<i32>,
}

/// The proposal's rule: a scored value with at least `min_sample` leads
/// and a known opportunity lift gets its points times that lift, rounded
/// and kept within 0 and `attribute.max`. Returns the rows with their
/// proposals and `d` with the proposed points (its version unchanged: a
/// draft to publish).
pub fn propose(
    d: &Definition,
    rows: Vec<(Dimension, String, Counts)>,
    baseline: &Counts,
    min_sample: i64,
) -> (Vec<Row>, Definition) {
    let mut draft = d.clone();
    let rows = rows
        .into_iter()
        .map(|(dimension, value, counts)| {
            let lifts = lifts(&counts, baseline);
            let entry = entry(d, dimension, &value);
            let current = entry.as_ref().map(|e| points(d, e));
            let proposed = match (&entry, current, lifts.opportunity) {
                (Some(e), Some(p), Some(lift)) if counts.leads >= min_sample => {
                    let proposed = (f64::from(p) * lift).round().clamp(0.0, f64::from(d.attribute.max)) as i32;
                    set_points(&mut draft, e, proposed);
                    Some(proposed)
                }
                _ => None,
            };
            Row { dimension, value, counts, lifts, points: current, proposed }
        })
        .collect();
    (rows, draft)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(leads: i64, opportunities: i64) -> Counts {
        Counts { leads, opportunities, ..Default::default() }
    }

    #[test]
    fn points_follow_the_opportunity_lift_of_values_with_enough_leads() {
        let d = Definition::default();
        let baseline = counts(100, 20);
        let software = d.attribute.industry_points["software"];
        let rows = vec![
            (Dimension::Industry, "software".to_owned(), counts(40, 12)),
            (Dimension::Industry, "fishing".to_owned(), counts(30, 3)),
            (Dimension::Industry, "mining".to_owned(), counts(5, 5)),
            (Dimension::Source, "web_form".to_owned(), counts(60, 12)),
            (Dimension::JobTitleClass, "other".to_owned(), counts(50, 0)),
        ];
        let (rows, draft) = propose(&d, rows, &baseline, 30);
        assert_eq!(rows[0].lifts.opportunity, Some(1.5));
        assert_eq!(rows[0].proposed, Some((f64::from(software) * 1.5).round().min(f64::from(d.attribute.max)) as i32));
        assert_eq!(
            (rows[1].points, rows[1].proposed),
            (
                Some(d.attribute.other_industry_points),
                Some((f64::from(d.attribute.other_industry_points) * 0.5).round() as i32)
            )
        );
        assert_eq!(
            draft.attribute.industry_points.get("fishing"),
            rows[1].proposed.as_ref(),
            "an unlisted industry gets an entry"
        );
        assert_eq!(rows[2].proposed, None, "5 leads are too few");
        assert!(!draft.attribute.industry_points.contains_key("mining"));
        assert_eq!((rows[3].points, rows[3].proposed), (None, None), "a source is not scored");
        assert_eq!(rows[4].proposed, Some(0));
        assert_eq!(draft.attribute.other_title_points, 0);
        assert_eq!(draft.version, d.version);
        draft.validate().expect("the draft can be published");
    }

    #[test]
    fn lifts_are_absent_without_a_baseline_rate() {
        let none = lifts(&counts(10, 2), &counts(10, 0));
        assert_eq!(none.opportunity, None, "a baseline of zero lifts nothing");
        assert_eq!(lifts(&counts(0, 0), &counts(10, 2)).opportunity, None);
    }

    #[test]
    fn size_bands_and_title_classes_name_their_entries() {
        let d = Definition::default();
        let band = size_band(&d, 120);
        assert!(entry(&d, Dimension::CompanySizeBand, &band).is_some(), "{band}");
        assert_eq!(entry(&d, Dimension::CompanySizeBand, &band), d.size_band(120).map(Entry::SizeBand));
        let class = crate::journey::title_class(&d, "CEO");
        assert_eq!(entry(&d, Dimension::CompanySizeBand, "7-8"), None, "not a band of the definition");
        assert_eq!(entry(&d, Dimension::JobTitleClass, &class), Some(Entry::TitleRule(0)));
        assert_eq!(entry(&d, Dimension::JobTitleClass, ""), None);
    }
}
