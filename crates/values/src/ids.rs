//! Identifiers: generated ones, and the rules for client-chosen ones.

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::Invalid;

/// A new id like `ld_0193c8a2f1e74b5c9a1d2e3f4a5b6c7d`: a prefix, 12 hex digits of
/// milliseconds (so ids sort by creation) and 20 random hex digits.
pub fn new_id(prefix: &str) -> String {
    let millis = chrono::Utc::now().timestamp_millis().max(0) as u64 & 0xffff_ffff_ffff;
    let random: u128 = rand::rng().random::<u128>() & ((1u128 << 80) - 1);
    format!("{prefix}_{millis:012x}{random:020x}")
}

/// Whether `id` is acceptable as a client-chosen id: 1-64 of letters, digits,
/// `.`, `_`, `-`, starting with a letter or digit.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

const ID_RULE: &str = "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit";

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// A client-chosen id; see [`is_valid_id`].
            pub fn parse(s: &str) -> Result<Self, Invalid> {
                if s.is_empty() {
                    Err(Invalid::new("is required"))
                } else if is_valid_id(s) {
                    Ok($name(s.to_owned()))
                } else {
                    Err(Invalid::new(ID_RULE))
                }
            }

            /// The given id, or a new generated one when `s` is empty.
            pub fn parse_or_new(s: &str) -> Result<Self, Invalid> {
                if s.is_empty() { Ok(Self::generate()) } else { Self::parse(s) }
            }

            /// A new id.
            pub fn generate() -> Self {
                $name(new_id($prefix))
            }

            /// An id read back from storage, where it was valid when written.
            pub fn from_stored(s: String) -> Self {
                $name(s)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// A lead (a person marketing identified).
    LeadId,
    "ld"
);
id_type!(
    /// An opportunity (created when inside sales converts a lead).
    OpportunityId,
    "op"
);
id_type!(
    /// A customer account (opened by a won deal).
    AccountId,
    "acct"
);
id_type!(
    /// A person who owns department records: an inside-sales rep, an account
    /// executive, a customer-success manager (an id of the company's
    /// choosing, not a name or an e-mail address).
    OwnerId,
    "own"
);
id_type!(
    /// A hand-over: the receiver's `request_id`.
    HandoverId,
    "ho"
);

/// An anonymous visitor's id (a cookie or device id): 1-128 characters
/// without control characters, taken as given.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VisitorId(String);

impl VisitorId {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let s = s.trim();
        if s.is_empty() {
            Err(Invalid::new("is required"))
        } else if s.chars().count() > 128 {
            Err(Invalid::new("must be at most 128 characters"))
        } else if s.chars().any(char::is_control) {
            Err(Invalid::new("must not contain control characters"))
        } else {
            Ok(VisitorId(s.to_owned()))
        }
    }

    pub fn from_stored(s: String) -> Self {
        VisitorId(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VisitorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for VisitorId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = LeadId::generate();
        let b = LeadId::generate();
        assert!(is_valid_id(a.as_str()), "{a}");
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 3 + 32);
    }

    #[test]
    fn client_ids() {
        assert!(LeadId::parse("lead-ada.1_x").is_ok());
        assert_eq!(LeadId::parse("").unwrap_err().0, "is required");
        for bad in ["-x", "a b", "ä", &"a".repeat(65)] {
            assert!(LeadId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(OpportunityId::parse_or_new("").is_ok());
    }

    #[test]
    fn visitor_ids() {
        assert_eq!(VisitorId::parse(" cookie 1 ").map(|v| v.0), Ok("cookie 1".to_owned()));
        assert!(VisitorId::parse("").is_err());
        assert!(VisitorId::parse("a\nb").is_err());
        assert!(VisitorId::parse(&"x".repeat(129)).is_err());
    }
}
