//! Business time: microseconds since the Unix epoch, kept inside the years
//! the services accept, so no computed time ever leaves the range a
//! protobuf `Timestamp` (and every JSON client) can represent.

use chrono::{DateTime, Months};

/// Microseconds since 1970-01-01T00:00:00Z.
pub type Micros = i64;

/// The earliest business time accepted: 1970-01-01T00:00:00Z. KPIs bucket
/// facts by business day counted from 1970, so earlier facts are refused.
pub const MIN: Micros = 0;
/// The latest business time accepted or produced: 9999-12-31T23:59:59.999999Z.
pub const MAX: Micros = 253_402_300_799_999_999;

pub const SECOND: Micros = 1_000_000;
pub const HOUR: Micros = 3_600 * SECOND;

/// Whether `t` is inside [`MIN`, `MAX`].
pub fn in_range(t: Micros) -> bool {
    (MIN..=MAX).contains(&t)
}

/// `at` plus `months` calendar months (UTC), the day clamped to the end of
/// a shorter month (Jan 31 + 1 month = Feb 28/29). `None` when the result
/// would fall after [`MAX`].
pub fn add_months(at: Micros, months: u32) -> Option<Micros> {
    let start = DateTime::from_timestamp_micros(at)?;
    let end = start.checked_add_months(Months::new(months))?.timestamp_micros();
    in_range(end).then_some(end)
}

/// `at` plus `hours`, or [`MAX`] when that would be later (a deadline past
/// the end of the accepted range is as good as none).
pub fn add_hours_capped(at: Micros, hours: u32) -> Micros {
    at.saturating_add(i64::from(hours) * HOUR).min(MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_clamp_the_day_and_stop_at_the_end_of_time() {
        let jan31 = DateTime::parse_from_rfc3339("2026-01-31T10:00:00Z").expect("time").timestamp_micros();
        let feb28 = DateTime::parse_from_rfc3339("2026-02-28T10:00:00Z").expect("time").timestamp_micros();
        assert_eq!(add_months(jan31, 1), Some(feb28));
        let late = DateTime::parse_from_rfc3339("9990-01-01T00:00:00Z").expect("time").timestamp_micros();
        assert!(add_months(late, 119).is_some());
        assert_eq!(add_months(late, 120), None, "year 10000 is never produced");
        assert_eq!(add_months(MAX, 0), Some(MAX));
    }

    #[test]
    fn hours_cap_at_the_end_of_time() {
        assert_eq!(add_hours_capped(0, 2), 2 * HOUR);
        assert_eq!(add_hours_capped(MAX - HOUR, 2), MAX);
    }
}
