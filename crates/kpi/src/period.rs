//! Calendar periods of business days: the day, ISO week, month, quarter or
//! year around a date, with quarters and years counted from the fiscal
//! year's first month (docs/domain.md, "KPIs"). Days are days since
//! 1970-01-01, as everywhere in kpi.

use chrono::{Datelike, Months};

use crate::domain::{date_of, day_of};

/// A calendar unit a period can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Day,
    /// Monday to Sunday (ISO 8601).
    Week,
    Month,
    /// Three months, the first starting with the fiscal year.
    Quarter,
    /// Twelve months from the fiscal year's first month.
    Year,
}

/// The period `[start, end)` of `unit` that contains `day`; quarters and
/// years start in `fiscal_start_month` (1–12). `None` for a month outside
/// 1–12 or a date past the calendar's range.
pub fn around(day_in: i64, unit: Unit, fiscal_start_month: u32) -> Option<(i64, i64)> {
    if !(1..=12).contains(&fiscal_start_month) {
        return None;
    }
    let d = date_of(day_in)?;
    let months = |n: u32| -> Option<(i64, i64)> {
        // Months since the fiscal year's start, within the calendar year's frame.
        let offset = (d.month() + 12 - fiscal_start_month) % 12;
        let first_of_month = d.with_day(1)?;
        let start = first_of_month.checked_sub_months(Months::new(offset % n))?;
        let end = start.checked_add_months(Months::new(n))?;
        Some((day_of(start), day_of(end)))
    };
    match unit {
        Unit::Day => Some((day_in, day_in.checked_add(1)?)),
        Unit::Week => {
            let start = day_in - i64::from(d.weekday().num_days_from_monday());
            Some((start, start + 7))
        }
        Unit::Month => months(1),
        Unit::Quarter => months(3),
        Unit::Year => months(12),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{format_day, parse_day};

    fn period(on: &str, unit: Unit, fy: u32) -> (String, String) {
        let (s, e) = around(parse_day(on).unwrap(), unit, fy).unwrap();
        (format_day(s), format_day(e))
    }

    fn pair(s: &str, e: &str) -> (String, String) {
        (s.to_owned(), e.to_owned())
    }

    #[test]
    fn calendar_units() {
        assert_eq!(period("2026-11-24", Unit::Day, 1), pair("2026-11-24", "2026-11-25"));
        assert_eq!(period("2026-11-24", Unit::Week, 1), pair("2026-11-23", "2026-11-30"), "a Tuesday's Monday");
        assert_eq!(period("2026-11-29", Unit::Week, 1), pair("2026-11-23", "2026-11-30"), "Sunday ends the week");
        assert_eq!(period("2026-11-30", Unit::Week, 1), pair("2026-11-30", "2026-12-07"));
        assert_eq!(period("2026-12-31", Unit::Week, 1), pair("2026-12-28", "2027-01-04"), "across a year");
        assert_eq!(period("2026-02-14", Unit::Month, 1), pair("2026-02-01", "2026-03-01"));
        assert_eq!(period("2026-11-24", Unit::Quarter, 1), pair("2026-10-01", "2027-01-01"));
        assert_eq!(period("2026-11-24", Unit::Year, 1), pair("2026-01-01", "2027-01-01"));
    }

    #[test]
    fn fiscal_quarters_and_years() {
        // A fiscal year from April (common in Japan): Q1 Apr–Jun, ..., Q4 Jan–Mar.
        assert_eq!(period("2026-11-24", Unit::Quarter, 4), pair("2026-10-01", "2027-01-01"));
        assert_eq!(period("2027-02-10", Unit::Quarter, 4), pair("2027-01-01", "2027-04-01"));
        assert_eq!(period("2026-04-01", Unit::Year, 4), pair("2026-04-01", "2027-04-01"));
        assert_eq!(period("2027-03-31", Unit::Year, 4), pair("2026-04-01", "2027-04-01"));
        // From February: quarters Feb–Apr, May–Jul, Aug–Oct, Nov–Jan.
        assert_eq!(period("2026-11-24", Unit::Quarter, 2), pair("2026-11-01", "2027-02-01"));
        assert_eq!(period("2027-01-31", Unit::Quarter, 2), pair("2026-11-01", "2027-02-01"));
        assert_eq!(period("2026-01-15", Unit::Year, 2), pair("2025-02-01", "2026-02-01"));
        // Weeks and months do not depend on the fiscal year.
        assert_eq!(period("2026-11-24", Unit::Month, 4), period("2026-11-24", Unit::Month, 1));
    }

    #[test]
    fn out_of_range_is_none() {
        assert_eq!(around(0, Unit::Quarter, 0), None);
        assert_eq!(around(0, Unit::Quarter, 13), None);
        assert_eq!(around(i64::MAX, Unit::Day, 1), None);
        assert_eq!(around(i64::MIN, Unit::Week, 1), None);
    }
}
