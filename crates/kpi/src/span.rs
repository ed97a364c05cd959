//! How kpi stores time so that a period can be read in any time zone.
//!
//! A period is whole days of the caller's time zone, which are a span of
//! moments `[start, end)`. kpi keeps its sums per *UTC* day, and each
//! lead's facts with their exact moments. A span is then read as the whole
//! UTC days inside it, from the sums, plus the moments of the partial UTC
//! days at either edge, from the facts: at most two days of facts, whatever
//! the period's length, and none at all when the zone is UTC.
//!
//! The sums are kept for runs of UTC days of three widths: each day, each
//! 8 days and each 64 days, a run starting on a multiple of its width
//! (counted from 1970-01-01). A year's whole days are then at most 33 runs
//! (see [`runs`]), so a read's cost depends on neither the number of leads
//! nor, much, on the period's length.
//!
//! Visitors are kept per quarter-hour: a visitor seen several times in a
//! quarter-hour is stored once. Every zone's offset has been a whole number
//! of quarter-hours since 1972 (Monrovia's −0:44:30 was the last that was
//! not), so every day boundary falls on one.

use themodel_runtime::time::Micros;

/// Microseconds in a UTC day.
pub const DAY: Micros = 86_400_000_000;

/// Microseconds in a quarter-hour.
pub const QUARTER_HOUR: Micros = 900_000_000;

/// The UTC day (days since 1970-01-01) `at` falls on.
pub fn utc_day(at: Micros) -> i64 {
    at.div_euclid(DAY)
}

/// The quarter-hour (since 1970-01-01 00:00 UTC) `at` falls in.
pub fn quarter_hour(at: Micros) -> i64 {
    at.div_euclid(QUARTER_HOUR)
}

/// The widths, in UTC days, of the runs the sums are kept for, smallest
/// first; each divides the next.
pub const WIDTHS: [i64; 3] = [1, 8, 64];

/// The first day of the run of `width` days that `day` falls in.
pub fn run_start(day: i64, width: i64) -> i64 {
    day.div_euclid(width) * width
}

/// Runs of one width: those starting on the days `[first, last)` that are
/// multiples of `width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Runs {
    pub width: i64,
    pub first: i64,
    pub last: i64,
}

/// The most groups of runs [`runs`] gives: up through the widths and back
/// down.
pub const RUN_GROUPS: usize = 2 * WIDTHS.len() - 1;

/// UTC days `[first, last)` as the fewest runs, in groups of one width
/// (at most [`RUN_GROUPS`]): from `first`, the widest run that starts
/// there and fits, again and again.
pub fn runs(first: i64, last: i64) -> Vec<Runs> {
    let mut out: Vec<Runs> = Vec::new();
    let mut day = first;
    while day < last {
        let width =
            WIDTHS.into_iter().rev().find(|&w| day.rem_euclid(w) == 0 && day.saturating_add(w) <= last).unwrap_or(1);
        match out.last_mut() {
            Some(group) if group.width == width => group.last = day + width,
            _ => out.push(Runs { width, first: day, last: day + width }),
        }
        day += width;
    }
    out
}

/// The moments `[start, end)`, in microseconds since 1970-01-01 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: Micros,
    pub end: Micros,
}

/// How the stored data covers a [`Span`]: the whole UTC days in it, read
/// from the sums, and the spans of moments left at its edges, read from
/// the facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cover {
    /// UTC days `[first, last)`, when the span holds a whole one.
    pub days: Option<(i64, i64)>,
    /// At most two spans, each within one UTC day; none is empty.
    pub edges: Vec<Span>,
}

impl Span {
    /// Splits the span into whole UTC days and partial-day edges.
    pub fn cover(self) -> Cover {
        if self.end <= self.start {
            return Cover { days: None, edges: Vec::new() };
        }
        // The first whole day starts at or after `start`; the last ends at
        // or before `end`.
        let first = utc_day(self.start) + i64::from(self.start.rem_euclid(DAY) != 0);
        let last = utc_day(self.end);
        if first >= last {
            return Cover { days: None, edges: vec![self] };
        }
        let edges = [Span { start: self.start, end: first * DAY }, Span { start: last * DAY, end: self.end }]
            .into_iter()
            .filter(|e| e.start < e.end)
            .collect();
        Cover { days: Some((first, last)), edges }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Micros = 3_600_000_000;

    fn span(start: Micros, end: Micros) -> Span {
        Span { start, end }
    }

    #[test]
    fn utc_days_are_read_from_the_sums_alone() {
        let c = span(10 * DAY, 40 * DAY).cover();
        assert_eq!(c, Cover { days: Some((10, 40)), edges: vec![] });
    }

    #[test]
    fn another_zone_adds_its_partial_days_at_both_edges() {
        // Asia/Kolkata (+5:30): its November is [Oct 31 18:30, Nov 30 18:30) UTC.
        let start = 10 * DAY - 5 * H - H / 2;
        let end = 40 * DAY - 5 * H - H / 2;
        let c = span(start, end).cover();
        assert_eq!(c.days, Some((10, 39)));
        assert_eq!(c.edges, vec![span(start, 10 * DAY), span(39 * DAY, end)]);
        // The parts add up to the span, without overlap.
        let whole: Micros = c.edges.iter().map(|e| e.end - e.start).sum::<Micros>() + 29 * DAY;
        assert_eq!(whole, end - start);
    }

    #[test]
    fn a_span_within_two_utc_days_is_all_edge() {
        // America/New_York's Nov 5: [05:00 UTC, 05:00 UTC the next day).
        let s = span(10 * DAY + 5 * H, 11 * DAY + 5 * H);
        assert_eq!(s.cover(), Cover { days: None, edges: vec![s] });
        assert_eq!(span(5, 5).cover(), Cover { days: None, edges: vec![] });
    }

    #[test]
    fn runs_cover_the_days_once_in_few_groups() {
        for (first, last) in [(0, 0), (0, 1), (3, 4), (-70, 5), (20089, 20454), (20089, 20120), (7, 200), (-1, 1000)] {
            let groups = runs(first, last);
            assert!(groups.len() <= RUN_GROUPS, "{first}..{last}: {groups:?}");
            let mut days = Vec::new();
            for g in &groups {
                assert!(WIDTHS.contains(&g.width));
                assert_eq!(g.first.rem_euclid(g.width), 0, "{g:?}");
                assert_eq!((g.last - g.first).rem_euclid(g.width), 0, "{g:?}");
                days.extend(g.first..g.last);
            }
            assert_eq!(days, (first..last).collect::<Vec<_>>(), "{first}..{last}: {groups:?}");
        }
        // 2025 (days 20089..20454): 7 days, five 64-day runs, four 8-day
        // runs, 6 days.
        let year: Vec<i64> = runs(20089, 20454).iter().map(|g| (g.last - g.first) / g.width).collect();
        assert_eq!(year, [7, 5, 4, 6]);
        // At most 33 runs in any 365 days.
        for first in 0..64 {
            let n: i64 = runs(first, first + 365).iter().map(|g| (g.last - g.first) / g.width).sum();
            assert!(n <= 33, "{first}: {n}");
        }
        assert_eq!(run_start(-1, 8), -8);
        assert_eq!(run_start(20089, 64), 20032);
    }

    #[test]
    fn days_and_quarter_hours_before_1970_round_down() {
        assert_eq!(utc_day(-1), -1);
        assert_eq!(quarter_hour(-1), -1);
        assert_eq!(quarter_hour(QUARTER_HOUR), 1);
        let c = span(-DAY - H, DAY).cover();
        assert_eq!(c, Cover { days: Some((-1, 1)), edges: vec![span(-DAY - H, -DAY)] });
    }
}
