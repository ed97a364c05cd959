//! Time as the services see it: microseconds since the Unix epoch
//! ([`themodel_values::Micros`]), from a clock tests can control, and the
//! conversions to and from protobuf timestamps.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use prost_types::Timestamp;
pub use themodel_values::time::{HOUR, MAX, MIN, Micros, SECOND};

/// Where "now" comes from. Production uses the system clock; tests pin it.
#[derive(Clone)]
pub struct Clock(Arc<ClockInner>);

enum ClockInner {
    System,
    Manual(AtomicI64),
    /// System time shifted by a fixed amount: time still flows.
    Offset(Micros),
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match *self.0 {
            ClockInner::System => "Clock::System",
            ClockInner::Manual(_) => "Clock::Manual",
            ClockInner::Offset(_) => "Clock::Offset",
        })
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl Clock {
    pub fn system() -> Self {
        Clock(Arc::new(ClockInner::System))
    }

    /// A clock that stands still at `now` until [`Clock::set`].
    pub fn manual(now: Micros) -> Self {
        Clock(Arc::new(ClockInner::Manual(AtomicI64::new(now))))
    }

    /// A running clock that reads `start` now: for tests that replay dated
    /// history, while timers and backoff keep working in real time.
    pub fn starting_at(start: Micros) -> Self {
        Clock(Arc::new(ClockInner::Offset(start - chrono::Utc::now().timestamp_micros())))
    }

    pub fn set(&self, now: Micros) {
        if let ClockInner::Manual(t) = &*self.0 {
            t.store(now, Ordering::SeqCst);
        }
    }

    pub fn now(&self) -> Micros {
        match &*self.0 {
            ClockInner::System => chrono::Utc::now().timestamp_micros(),
            ClockInner::Manual(t) => t.load(Ordering::SeqCst),
            ClockInner::Offset(d) => chrono::Utc::now().timestamp_micros() + d,
        }
    }
}

/// A protobuf timestamp as microseconds; `None` when it is malformed or
/// outside the accepted range (1970-01-01 to 9999-12-31, UTC).
pub fn from_timestamp(ts: &Timestamp) -> Option<Micros> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return None;
    }
    let micros = ts.seconds.checked_mul(1_000_000)?.checked_add(i64::from(ts.nanos / 1_000))?;
    themodel_values::time::in_range(micros).then_some(micros)
}

pub fn to_timestamp(micros: Micros) -> Timestamp {
    Timestamp { seconds: micros.div_euclid(1_000_000), nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32 }
}

pub fn to_timestamp_opt(micros: Option<Micros>) -> Option<Timestamp> {
    micros.map(to_timestamp)
}

/// A request's duration, if it is zero or more with its nanos in range.
/// Checked by hand: prost's own conversion normalises first, which
/// overflows on the extreme values a hostile client can send.
pub fn non_negative(d: &prost_types::Duration) -> Option<std::time::Duration> {
    let seconds = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).ok().filter(|n| *n < 1_000_000_000)?;
    Some(std::time::Duration::new(seconds, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_round_trip() {
        for m in [0, 1, 999_999, 1_700_000_000_123_456, MAX] {
            assert_eq!(from_timestamp(&to_timestamp(m)), Some(m));
        }
        assert_eq!(from_timestamp(&Timestamp { seconds: -1, nanos: 0 }), None);
        assert_eq!(from_timestamp(&Timestamp { seconds: 0, nanos: -1 }), None);
        assert_eq!(from_timestamp(&Timestamp { seconds: i64::MAX, nanos: 0 }), None);
        assert_eq!(from_timestamp(&Timestamp { seconds: 253_402_300_800, nanos: 0 }), None, "year 10000");
    }

    #[test]
    fn starting_at_runs_from_the_start() {
        let c = Clock::starting_at(1_000_000_000);
        let t = c.now();
        assert!((1_000_000_000..1_000_000_000 + 60_000_000).contains(&t));
    }

    #[test]
    fn durations_from_requests() {
        let d = |seconds, nanos| non_negative(&prost_types::Duration { seconds, nanos });
        assert_eq!(d(2, 500), Some(std::time::Duration::new(2, 500)));
        for (seconds, nanos) in [(-1, 0), (0, -1), (0, 1_000_000_000), (i64::MIN, i32::MIN), (i64::MIN, 0)] {
            assert_eq!(d(seconds, nanos), None, "{seconds}s {nanos}ns");
        }
    }

    #[test]
    fn manual_clock() {
        let c = Clock::manual(5);
        assert_eq!(c.now(), 5);
        c.set(9);
        assert_eq!(c.now(), 9);
    }
}
