//! E-mail addresses, and the one key that says two addresses are the same person.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Invalid;

/// An e-mail address as the person gave it, with a lower-cased domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    /// Parses `name@domain.tld`: no spaces, one `@`, a dotted domain; at most
    /// 254 characters. Surrounding spaces are dropped and the domain lower-cased.
    pub fn parse(s: &str) -> Result<Email, Invalid> {
        let e = s.trim();
        if e.is_empty() {
            return Err(Invalid::new("is required"));
        }
        let shape = || Invalid::new("must be an e-mail address like name@example.com");
        if e.len() > 254 || e.contains(char::is_whitespace) || e.chars().any(char::is_control) {
            return Err(shape());
        }
        let (local, domain) = e.split_once('@').ok_or_else(shape)?;
        let ok = !local.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains('@')
            && !domain.contains("..");
        if !ok {
            return Err(shape());
        }
        Ok(Email(format!("{local}@{}", domain.to_lowercase())))
    }

    /// An address read back from storage, where it was valid when written.
    pub fn from_stored(s: String) -> Email {
        Email(s)
    }

    /// The address of a person who was erased: none (empty).
    pub fn erased() -> Email {
        Email(String::new())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The identity of the address: the whole address lower-cased, so
    /// `Ada@Example.com` and `ada@example.com` are one lead.
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }

    /// The domain, lower-cased (exclusion rules match on it).
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, d)| d)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_keys() {
        let e = Email::parse(" Ada@Example.COM ").expect("valid");
        assert_eq!(e.as_str(), "Ada@example.com");
        assert_eq!(e.key(), "ada@example.com");
        assert_eq!(e.domain(), "example.com");
        assert_eq!(Email::parse("ADA@example.com").expect("valid").key(), e.key(), "one person, one key");
    }

    #[test]
    fn refuses_what_is_not_an_address() {
        for bad in ["", "ada", "ada@", "@x.com", "a b@x.com", "ada@localhost", "a@x.com.", "a@x..com", "a@b@c.com"] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Email::parse(&format!("{}@x.com", "a".repeat(250))).is_err());
    }
}
