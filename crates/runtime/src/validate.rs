//! Parsing requests at the edge: every field violation of a request is
//! collected before answering, so a caller fixes all of them in one go.
//!
//! ```ignore
//! let mut v = Violations::new();
//! let lead_id = v.parse("lead_id", LeadId::parse(&req.lead_id));
//! let at = v.occurred_at("occurred_at", req.occurred_at.as_ref(), &clock);
//! let touch = v.build(|| Some(Touch { lead_id: lead_id?, at }))?;
//! ```

use prost_types::Timestamp;
use themodel_values::{Code, Invalid};
use tonic_types::FieldViolation;

use crate::error::ApiError;
use crate::time::{self, Clock, Micros};

/// Field violations found so far.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, field: &str, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Records a violation unless `ok`.
    pub fn check(&mut self, ok: bool, field: &str, description: &str) {
        if !ok {
            self.add(field, description);
        }
    }

    /// Keeps a parsed value, or records why it was refused.
    pub fn parse<T>(&mut self, field: &str, parsed: Result<T, Invalid>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(Invalid(why)) => {
                self.add(field, why);
                None
            }
        }
    }

    /// An optional, trimmed, length-limited text.
    pub fn text(&mut self, field: &str, value: &str, max_chars: usize) -> String {
        let v = value.trim();
        if v.chars().count() > max_chars {
            self.add(field, format!("must be at most {max_chars} characters"));
        } else if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            self.add(field, "must not contain control characters");
        }
        v.to_owned()
    }

    /// A required, trimmed, length-limited text.
    pub fn required_text(&mut self, field: &str, value: &str, max_chars: usize) -> String {
        if value.trim().is_empty() {
            self.add(field, "is required");
            return String::new();
        }
        self.text(field, value, max_chars)
    }

    /// An optional code (see [`Code`]); `None` when empty.
    pub fn optional_code(&mut self, field: &str, value: &str) -> Option<Code> {
        self.parse(field, Code::parse_optional(value)).flatten()
    }

    /// The AIP-155 request id: optional, at most 128 characters.
    pub fn request_id(&mut self, value: &str) {
        if value.len() > 128 {
            self.add("request_id", "must be at most 128 characters");
        }
    }

    /// When a fact happened: the given time, or now. Any valid time from
    /// 1970-01-01 to 9999-12-31 is taken: history is imported with past
    /// times, and planned or synthetic scenarios may carry future ones.
    pub fn occurred_at(&mut self, field: &str, value: Option<&Timestamp>, clock: &Clock) -> Micros {
        match value {
            None => clock.now(),
            Some(ts) => time::from_timestamp(ts).unwrap_or_else(|| {
                self.add(field, "must be a valid time from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z");
                clock.now()
            }),
        }
    }

    /// Ok when no violation was found.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() { Ok(()) } else { Err(ApiError::InvalidArgument(self.0)) }
    }

    /// The violations found, or the value `make` builds from the parsed
    /// fields (it sees every `Option` from [`Violations::parse`] filled when
    /// nothing was refused).
    pub fn build<T>(self, make: impl FnOnce() -> Option<T>) -> Result<T, ApiError> {
        self.finish()?;
        make().ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a parsed field is missing without a violation")))
    }
}

/// A page size: 0 means `default`, anything above `max` is lowered to it (AIP-158).
pub fn page_size(v: &mut Violations, value: i32, default: i64, max: i64) -> i64 {
    if value < 0 {
        v.add("page_size", "must not be negative");
        return default;
    }
    if value == 0 { default } else { i64::from(value).min(max) }
}

#[cfg(test)]
mod tests {
    use themodel_values::LeadId;

    use super::*;

    #[test]
    fn occurred_at_rules() {
        let clock = Clock::manual(1_000 * time::HOUR);
        let mut v = Violations::new();
        assert_eq!(v.occurred_at("t", None, &clock), clock.now());
        let past = time::to_timestamp(5 * time::HOUR);
        assert_eq!(v.occurred_at("t", Some(&past), &clock), 5 * time::HOUR);
        assert!(v.finish().is_ok());
        let mut v = Violations::new();
        v.occurred_at("t", Some(&Timestamp { seconds: -5, nanos: 0 }), &clock);
        v.occurred_at("t", Some(&Timestamp { seconds: 5, nanos: 2_000_000_000 }), &clock);
        v.occurred_at("t", Some(&Timestamp { seconds: 253_402_300_800, nanos: 0 }), &clock);
        match v.finish() {
            Err(ApiError::InvalidArgument(vs)) => assert_eq!(vs.len(), 3),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn collects_all_violations_then_builds() {
        let mut v = Violations::new();
        let id = v.parse("lead_id", LeadId::parse(""));
        v.text("note", &"x".repeat(11), 10);
        v.optional_code("source", "web/form");
        match v.build(|| id) {
            Err(ApiError::InvalidArgument(vs)) => {
                assert_eq!(vs.iter().map(|f| f.field.as_str()).collect::<Vec<_>>(), ["lead_id", "note", "source"])
            }
            other => panic!("{other:?}"),
        }
        let mut v = Violations::new();
        let id = v.parse("lead_id", LeadId::parse("ld-1"));
        assert_eq!(v.build(|| id).expect("valid").as_str(), "ld-1");
    }
}
