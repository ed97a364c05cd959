//! The writer's cache of rows it has committed.
//!
//! Loading a batch's rows is a round trip to the database and a decode per
//! row; on SQLite, through sqlx, about 10 µs a row plus the round trip, which
//! was a quarter of a batch of touches and most of an ingest batch (thousands
//! of leads). The writer is the only one that changes a service's rows, so
//! what it committed is what the database holds, and the next batch can take
//! it from memory.
//!
//! "The only one" is checked, not assumed: every writer transaction bumps
//! `stream_head.writes` when it begins (see [`crate::db`]); a writer that
//! finds the counter moved past its own last commit (another replica on the
//! same PostgreSQL database, or a second process on the same SQLite file)
//! forgets everything it cached. Rows are remembered only after a commit,
//! so a batch that fails leaves the cache as the database is.
//!
//! The cache is bounded: two generations of at most `capacity / 2` rows each;
//! when the young one fills up, the old one is dropped and the young one
//! ages. A row used again is moved to the young generation, so what a busy
//! service keeps touching stays.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use crate::work::Rows;

/// Rows a service's writer keeps per table: enough for the leads or deals
/// a busy pipeline touches again and again, a few megabytes at most.
pub const ROWS: usize = 10_000;

/// Committed rows of one table, by key.
#[derive(Debug)]
pub struct Cache<K, V> {
    inner: Mutex<Generations<K, V>>,
}

#[derive(Debug)]
struct Generations<K, V> {
    young: HashMap<K, V>,
    old: HashMap<K, V>,
    half: usize,
}

impl<K: Hash + Eq + Clone + std::fmt::Display, V: Clone> Cache<K, V> {
    /// A cache of at most `capacity` rows (0 turns it off).
    pub fn new(capacity: usize) -> Self {
        Cache { inner: Mutex::new(Generations { young: HashMap::new(), old: HashMap::new(), half: capacity / 2 }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations<K, V>> {
        // The cache holds no invariant a panic half-way could break.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Loads the cached rows among `keys` into `rows`; returns the keys it
    /// does not hold, for the database.
    pub fn fill<'k>(&self, rows: &mut Rows<K, V>, keys: Vec<&'k K>) -> Vec<&'k K> {
        let mut g = self.lock();
        if g.half == 0 {
            return keys;
        }
        let mut missing = Vec::new();
        for key in keys {
            let hit = match g.young.get(key) {
                Some(v) => Some(v.clone()),
                None => g.old.remove(key).inspect(|v| g.insert(key.clone(), v.clone())),
            };
            match hit {
                Some(v) => rows.loaded(key.clone(), Some(v)),
                None => missing.push(key),
            }
        }
        missing
    }

    /// Remembers every row `rows` holds, after the batch that loaded and
    /// changed them committed.
    pub fn remember(&self, rows: Rows<K, V>) {
        let mut g = self.lock();
        if g.half == 0 {
            return;
        }
        for (k, v) in rows.into_present() {
            g.insert(k, v);
        }
    }

    /// Drops everything: another writer may have changed any row.
    pub fn forget(&self) {
        let mut g = self.lock();
        g.young.clear();
        g.old.clear();
    }

    /// Rows held now.
    pub fn len(&self) -> usize {
        let g = self.lock();
        g.young.len() + g.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq, V> Generations<K, V> {
    fn insert(&mut self, k: K, v: V) {
        if self.young.len() >= self.half && !self.young.contains_key(&k) {
            self.old = std::mem::take(&mut self.young);
        }
        self.old.remove(&k);
        self.young.insert(k, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(pairs: &[(&str, i64)]) -> Rows<String, i64> {
        let mut r = Rows::default();
        for (k, v) in pairs {
            r.loaded((*k).to_owned(), Some(*v));
        }
        r
    }

    #[test]
    fn remembers_committed_rows_and_hands_them_out() {
        let cache: Cache<String, i64> = Cache::new(100);
        let mut batch = rows(&[("a", 1)]);
        batch.put("b".to_owned(), 2);
        batch.loaded("c".to_owned(), None);
        cache.remember(batch);
        assert_eq!(cache.len(), 2, "absent rows are not remembered");

        let mut next = Rows::default();
        let keys = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let missing = cache.fill(&mut next, keys.iter().collect());
        assert_eq!(missing, [&keys[2]]);
        assert_eq!(next.get("b").expect("loaded"), Some(&2));
        cache.forget();
        assert!(cache.is_empty());
    }

    #[test]
    fn stays_bounded_and_keeps_what_is_used() {
        let cache: Cache<String, i64> = Cache::new(10);
        for i in 0..100 {
            cache.remember(rows(&[(&format!("k{i}"), i)]));
            // k0 is used all along.
            let mut r = Rows::default();
            let k0 = "k0".to_owned();
            cache.fill(&mut r, vec![&k0]);
            if i > 0 {
                assert_eq!(r.get("k0").expect("loaded"), Some(&0), "at {i}");
            }
            assert!(cache.len() <= 10);
        }
    }

    #[test]
    fn capacity_zero_is_off() {
        let cache: Cache<String, i64> = Cache::new(0);
        cache.remember(rows(&[("a", 1)]));
        assert!(cache.is_empty());
    }
}
