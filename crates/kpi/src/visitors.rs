//! Distinct visitors over any period, exactly, without scanning the period.
//!
//! A visitor is counted in `[start, end)` once, on the first day in the
//! period they visited. That day is the one whose *previous* visit day (the
//! visitor's nearest earlier visit, or none) falls before `start`. So, keeping
//! one point `(day, prev)` per visitor-day,
//!
//! ```text
//! visitors[start, end) = #{ points : start <= day < end  and  prev < start }
//! ```
//!
//! The `prev < start` half is a prefix over `prev`, kept as a Fenwick tree
//! whose nodes are stored per day: `spans(node, day, n)`. A query sums at most
//! [`LEVELS`] nodes over the period's days; a new visitor-day changes at most
//! `2 × LEVELS` cells (its own point, and the point of the visitor's next
//! later day, whose `prev` it becomes when history is imported out of order).
//! No SQL here; `store` keeps the cells.

use std::collections::BTreeMap;

/// Fenwick levels: `2^LEVELS` indexes cover every business day the services
/// accept (1970-01-01 in any zone is day -1; 9999-12-31 is day 2,932,896).
pub const LEVELS: u32 = 22;
const SIZE: i64 = 1 << LEVELS;

/// The Fenwick index of a previous visit day: 1 for "no earlier visit",
/// `prev + 3` for a day, so day -1 maps to 2.
fn index(prev: Option<i64>) -> i64 {
    prev.map_or(1, |p| (p + 3).clamp(2, SIZE))
}

/// The nodes holding the prefix `prev < start`: at most [`LEVELS`].
pub fn prefix_nodes(start: i64) -> Vec<i64> {
    // prev < start  <=>  index(prev) <= start + 2; "no earlier visit" (index 1) always counts.
    let mut k = (start + 2).clamp(1, SIZE);
    let mut nodes = Vec::with_capacity(LEVELS as usize);
    while k > 0 {
        nodes.push(k);
        k &= k - 1;
    }
    nodes
}

/// Cell changes `(node, day) -> delta`, accumulated over many visitor-days
/// so a page of events writes each cell once.
#[derive(Debug, Default)]
pub struct Cells(BTreeMap<(i64, i64), i64>);

impl Cells {
    fn add_point(&mut self, day: i64, prev: Option<i64>, delta: i64) {
        let mut i = index(prev);
        while i <= SIZE {
            *self.0.entry((i, day)).or_insert(0) += delta;
            i += i & -i;
        }
    }

    /// A visitor seen on `day` for the first time, whose nearest visit days
    /// before and after it are `prev` and `next`.
    pub fn first_visit_on(&mut self, day: i64, prev: Option<i64>, next: Option<i64>) {
        self.add_point(day, prev, 1);
        if let Some(next) = next {
            // `next` used to follow `prev`; now it follows `day`.
            self.add_point(next, prev, -1);
            self.add_point(next, Some(day), 1);
        }
    }

    /// The changed cells, without the ones that cancelled out.
    pub fn changes(&self) -> impl Iterator<Item = (i64, i64, i64)> + '_ {
        self.0.iter().filter(|&(_, &n)| n != 0).map(|(&(node, day), &n)| (node, day, n))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// What `store` does: visitor-days in arrival order, cells summed.
    #[derive(Default)]
    struct Model {
        days: BTreeMap<u32, BTreeSet<i64>>,
        cells: BTreeMap<(i64, i64), i64>,
    }

    impl Model {
        fn visit(&mut self, visitor: u32, day: i64) {
            let days = self.days.entry(visitor).or_default();
            if !days.insert(day) {
                return;
            }
            let prev = days.range(..day).next_back().copied();
            let next = days.range(day + 1..).next().copied();
            let mut c = Cells::default();
            c.first_visit_on(day, prev, next);
            for (node, d, n) in c.changes() {
                *self.cells.entry((node, d)).or_insert(0) += n;
            }
        }

        fn visitors(&self, start: i64, end: i64) -> i64 {
            prefix_nodes(start)
                .into_iter()
                .map(|node| self.cells.range((node, start)..(node, end)).map(|(_, n)| n).sum::<i64>())
                .sum()
        }

        fn brute_force(&self, start: i64, end: i64) -> i64 {
            self.days.values().filter(|d| d.range(start..end).next().is_some()).count() as i64
        }
    }

    /// A small deterministic generator; no dependency for one test.
    struct Lcg(u64);
    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    #[test]
    fn matches_a_distinct_count_for_every_period() {
        let base = 20_000; // 2024-10-04
        let mut rng = Lcg(7);
        let mut m = Model::default();
        // Out-of-order arrival (imports of history) and repeats included.
        for _ in 0..600 {
            let visitor = rng.below(40) as u32;
            let day = base + rng.below(60) as i64;
            m.visit(visitor, day);
        }
        for start in base - 2..base + 62 {
            for end in start + 1..base + 64 {
                assert_eq!(m.visitors(start, end), m.brute_force(start, end), "[{start}, {end})");
            }
        }
    }

    #[test]
    fn edges_of_the_accepted_range() {
        let mut m = Model::default();
        m.visit(1, -1); // 1970-01-01T00:00Z seen from a zone west of UTC
        m.visit(1, 2_932_896); // 9999-12-31
        m.visit(2, 0);
        assert_eq!(m.visitors(-1, 1), 2);
        assert_eq!(m.visitors(-100_000, 3_000_000), 2);
        assert_eq!(m.visitors(1, 3_000_000), 1);
        assert_eq!(m.visitors(2_932_896, 2_932_897), 1);
        assert_eq!(m.visitors(5, 6), 0);
        assert!(prefix_nodes(2_932_896).len() <= LEVELS as usize);
    }

    #[test]
    fn a_repeat_visit_changes_nothing() {
        let mut m = Model::default();
        m.visit(1, 10);
        let before = m.cells.clone();
        m.visit(1, 10);
        assert_eq!(m.cells, before);
    }
}
