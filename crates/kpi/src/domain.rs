//! The KPI rules: which event moves which count, the business day an event
//! falls on, and the funnel formulas of DOMAIN.md §8. No SQL, no gRPC.

use chrono::{DateTime, NaiveDate};
use chrono_tz::Tz;
use themodel_runtime::time::Micros;

/// The services whose streams kpi reads, by name.
pub const SOURCES: [&str; 4] = ["marketing", "inside-sales", "field-sales", "customer-success"];

/// Flow counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    Leads,
    ExcludedLeads,
    Opportunities,
    Wins,
    Losses,
    Retained,
    Churned,
}

impl Metric {
    pub const ALL: [Metric; 7] = [
        Metric::Leads,
        Metric::ExcludedLeads,
        Metric::Opportunities,
        Metric::Wins,
        Metric::Losses,
        Metric::Retained,
        Metric::Churned,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Metric::Leads => "leads",
            Metric::ExcludedLeads => "excluded_leads",
            Metric::Opportunities => "opportunities",
            Metric::Wins => "wins",
            Metric::Losses => "losses",
            Metric::Retained => "retained",
            Metric::Churned => "churned",
        }
    }

    pub fn from_code(code: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.code() == code)
    }
}

/// What one event does to the numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Count(Metric),
    Visit(String),
}

/// The effects of an event from `source` of type `kind` (payload as JSON).
pub fn effects(source: &str, kind: &str, subject_id: &str, payload: &serde_json::Value) -> Vec<Effect> {
    match (source, kind) {
        ("marketing", "visit_recorded") => vec![Effect::Visit(subject_id.to_owned())],
        ("marketing", "lead_captured") => {
            if payload.get("excluded").and_then(serde_json::Value::as_bool).unwrap_or(false) {
                vec![Effect::Count(Metric::Leads), Effect::Count(Metric::ExcludedLeads)]
            } else {
                vec![Effect::Count(Metric::Leads)]
            }
        }
        ("inside-sales", "opportunity_converted") => vec![Effect::Count(Metric::Opportunities)],
        ("field-sales", "opportunity_won") => vec![Effect::Count(Metric::Wins)],
        ("field-sales", "opportunity_lost") => vec![Effect::Count(Metric::Losses)],
        ("customer-success", "renewal_recorded") => vec![Effect::Count(Metric::Retained)],
        ("customer-success", "churn_recorded") => vec![Effect::Count(Metric::Churned)],
        _ => Vec::new(),
    }
}

/// A business time zone: an IANA name.
pub fn parse_time_zone(name: &str) -> Option<Tz> {
    name.parse().ok()
}

const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");

/// Days since 1970-01-01 of the date `at` falls on in `tz`.
pub fn business_day(at: Micros, tz: Tz) -> i64 {
    let utc = DateTime::from_timestamp_micros(at).unwrap_or_default();
    (utc.with_timezone(&tz).date_naive() - EPOCH).num_days()
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date.
pub fn parse_day(s: &str) -> Option<i64> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().map(|d| (d - EPOCH).num_days())
}

/// Flow counts for a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub visitors: i64,
    pub leads: i64,
    pub excluded_leads: i64,
    pub opportunities: i64,
    pub wins: i64,
    pub losses: i64,
    pub retained: i64,
    pub churned: i64,
}

impl Counts {
    pub fn add(&mut self, metric: Metric, n: i64) {
        let slot = match metric {
            Metric::Leads => &mut self.leads,
            Metric::ExcludedLeads => &mut self.excluded_leads,
            Metric::Opportunities => &mut self.opportunities,
            Metric::Wins => &mut self.wins,
            Metric::Losses => &mut self.losses,
            Metric::Retained => &mut self.retained,
            Metric::Churned => &mut self.churned,
        };
        *slot += n;
    }
}

/// The rates of DOMAIN.md §8; `None` when the denominator is zero.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rates {
    pub acquisition: Option<f64>,
    pub opportunity: Option<f64>,
    pub win: Option<f64>,
    pub renewal: Option<f64>,
    pub churn: Option<f64>,
}

fn ratio(num: i64, den: i64) -> Option<f64> {
    (den != 0).then(|| num as f64 / den as f64)
}

impl Counts {
    pub fn valid_leads(&self) -> i64 {
        self.leads - self.excluded_leads
    }

    pub fn rates(&self) -> Rates {
        Rates {
            acquisition: ratio(self.leads, self.visitors),
            opportunity: ratio(self.opportunities, self.leads),
            win: ratio(self.wins, self.wins + self.losses),
            renewal: ratio(self.retained, self.retained + self.churned),
            churn: ratio(self.churned, self.retained + self.churned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formulas() {
        let c = Counts {
            visitors: 10,
            leads: 4,
            excluded_leads: 1,
            opportunities: 2,
            wins: 1,
            losses: 3,
            retained: 3,
            churned: 1,
        };
        let r = c.rates();
        assert_eq!(r.acquisition, Some(0.4));
        assert_eq!(r.opportunity, Some(0.5));
        assert_eq!(r.win, Some(0.25));
        assert_eq!(r.renewal, Some(0.75));
        assert_eq!(r.churn, Some(0.25));
        assert_eq!(c.valid_leads(), 3);
    }

    #[test]
    fn zero_denominators_are_absent() {
        let r = Counts::default().rates();
        assert_eq!(r, Rates::default());
        let c = Counts { leads: 3, ..Default::default() };
        assert_eq!(c.rates().acquisition, None, "leads without visitors: no acquisition rate");
        assert_eq!(c.rates().opportunity, Some(0.0), "a zero numerator is a real 0");
    }

    #[test]
    fn effects_table() {
        let cases = [
            ("marketing", "visit_recorded", json!({}), vec![Effect::Visit("v1".into())]),
            ("marketing", "lead_captured", json!({"excluded": false}), vec![Effect::Count(Metric::Leads)]),
            (
                "marketing",
                "lead_captured",
                json!({"excluded": true}),
                vec![Effect::Count(Metric::Leads), Effect::Count(Metric::ExcludedLeads)],
            ),
            ("marketing", "touch_recorded", json!({}), vec![]),
            ("inside-sales", "opportunity_converted", json!({}), vec![Effect::Count(Metric::Opportunities)]),
            ("field-sales", "opportunity_opened", json!({}), vec![]),
            ("field-sales", "opportunity_won", json!({}), vec![Effect::Count(Metric::Wins)]),
            ("field-sales", "opportunity_lost", json!({}), vec![Effect::Count(Metric::Losses)]),
            ("customer-success", "renewal_recorded", json!({}), vec![Effect::Count(Metric::Retained)]),
            ("customer-success", "churn_recorded", json!({}), vec![Effect::Count(Metric::Churned)]),
        ];
        for (source, kind, payload, want) in cases {
            assert_eq!(effects(source, kind, "v1", &payload), want, "{source}/{kind}");
        }
    }

    #[test]
    fn business_days_follow_the_time_zone() {
        // 2026-11-01T20:00:00Z is still Nov 1 in UTC but Nov 2 in Tokyo.
        let at = 1_793_563_200_000_000;
        let utc = business_day(at, chrono_tz::UTC);
        let tokyo = business_day(at, parse_time_zone("Asia/Tokyo").expect("known zone"));
        assert_eq!(utc, parse_day("2026-11-01").expect("date"));
        assert_eq!(tokyo, utc + 1);
        assert_eq!(parse_day("2026-13-01"), None);
        assert_eq!(parse_time_zone("Mars/Olympus"), None);
    }
}
