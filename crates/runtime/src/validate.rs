//! Parsing requests at the edge: collects every field violation of a request
//! before answering, so a caller fixes all of them in one go.

use prost_types::Timestamp;
use tonic_types::FieldViolation;

use crate::error::ApiError;
use crate::ids;
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

    /// A required, trimmed, length-limited text.
    pub fn required(&mut self, field: &str, value: &str, max_len: usize) -> String {
        let v = value.trim();
        if v.is_empty() {
            self.add(field, "is required");
        } else if v.chars().count() > max_len {
            self.add(field, format!("must be at most {max_len} characters"));
        }
        v.to_owned()
    }

    /// An optional, trimmed, length-limited text.
    pub fn optional(&mut self, field: &str, value: &str, max_len: usize) -> String {
        let v = value.trim();
        if v.chars().count() > max_len {
            self.add(field, format!("must be at most {max_len} characters"));
        }
        v.to_owned()
    }

    /// The id of an existing entity.
    pub fn id(&mut self, field: &str, value: &str) -> String {
        if value.is_empty() {
            self.add(field, "is required");
        } else if !ids::is_valid_id(value) {
            self.add(field, "must be 1-64 letters, digits, '.', '_' or '-'");
        }
        value.to_owned()
    }

    /// An optional client-chosen id; generated with `prefix` when empty.
    pub fn new_id(&mut self, field: &str, value: &str, prefix: &str) -> String {
        if value.is_empty() { ids::new_id(prefix) } else { self.id(field, value) }
    }

    /// The AIP-155 request id: optional, at most 128 characters.
    pub fn request_id(&mut self, value: &str) -> String {
        if value.len() > 128 {
            self.add("request_id", "must be at most 128 characters");
        }
        value.to_owned()
    }

    /// A reason / source code (lower-case letters, digits, '_').
    pub fn code(&mut self, field: &str, value: &str) -> String {
        let v = value.trim().to_lowercase().replace([' ', '-'], "_");
        if v.is_empty() {
            self.add(field, "is required");
        } else if !themodel_quality::is_code(&v) {
            self.add(field, "must be a code of letters, digits and '_'");
        }
        v
    }

    /// When a fact happened: the given time, or now. Any valid time from 1970
    /// to 9999 is taken: history is imported with past times, and planned or
    /// synthetic scenarios may carry future ones.
    pub fn occurred_at(&mut self, field: &str, value: Option<&Timestamp>, clock: &Clock) -> Micros {
        match value {
            None => clock.now(),
            Some(ts) => time::from_timestamp(ts).unwrap_or_else(|| {
                self.add(field, "must be a valid time between 1970 and 9999");
                clock.now()
            }),
        }
    }

    /// Ok when no violation was found.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() { Ok(()) } else { Err(ApiError::InvalidArgument(self.0)) }
    }
}

/// An e-mail address: something@domain.tld, lower-cased domain.
pub fn email(v: &mut Violations, field: &str, value: &str) -> String {
    let e = value.trim();
    if e.is_empty() {
        v.add(field, "is required");
        return String::new();
    }
    let ok = e.len() <= 254
        && !e.contains(char::is_whitespace)
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        });
    if !ok {
        v.add(field, "must be an e-mail address like name@example.com");
        return e.to_owned();
    }
    let (local, domain) = e.split_once('@').unwrap_or((e, ""));
    format!("{local}@{}", domain.to_lowercase())
}

/// A page size: 0 means `default`, anything above `max` is clamped (AIP-158).
pub fn page_size(v: &mut Violations, value: i32, default: i64, max: i64) -> i64 {
    if value < 0 {
        v.add("page_size", "must not be negative");
        return default;
    }
    if value == 0 { default } else { i64::from(value).min(max) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        let mut v = Violations::new();
        assert_eq!(email(&mut v, "email", " Ada@Example.COM "), "Ada@example.com");
        assert!(v.finish().is_ok());
        for bad in ["", "ada", "ada@", "@x.com", "a b@x.com", "ada@localhost", "a@x.com."] {
            let mut v = Violations::new();
            email(&mut v, "email", bad);
            assert!(v.finish().is_err(), "{bad:?} accepted");
        }
    }

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
        match v.finish() {
            Err(ApiError::InvalidArgument(vs)) => assert_eq!(vs.len(), 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn collects_all_violations() {
        let mut v = Violations::new();
        v.required("a", "", 10);
        v.required("b", "xxxxxxxxxxxx", 10);
        v.code("c", "No Budget");
        match v.finish() {
            Err(ApiError::InvalidArgument(vs)) => assert_eq!(vs.len(), 2),
            other => panic!("{other:?}"),
        }
    }
}
