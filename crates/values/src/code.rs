//! Codes: short machine names for sources, channels and reasons.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Invalid;

/// A code of lower-case ASCII letters, digits and `_`, 1-64 long, e.g.
/// `web_form` or `lost_price`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Code(String);

/// Whether `s` is already a code.
pub fn is_code(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Code {
    /// Parses a code written the way people type it: case, spaces and `-`
    /// are normalised (`Web Form` and `web-form` are `web_form`); anything
    /// else outside letters, digits and `_` is refused, never dropped.
    pub fn parse(s: &str) -> Result<Code, Invalid> {
        let normalised = s.trim().to_lowercase().replace([' ', '-'], "_");
        if normalised.is_empty() {
            return Err(Invalid::new("is required"));
        }
        if !is_code(&normalised) {
            return Err(Invalid::new("must be a code of 1-64 letters, digits and '_' (e.g. web_form)"));
        }
        Ok(Code(normalised))
    }

    /// An optional code: empty stays empty.
    pub fn parse_optional(s: &str) -> Result<Option<Code>, Invalid> {
        if s.trim().is_empty() { Ok(None) } else { Code::parse(s).map(Some) }
    }

    /// A code read back from storage or defined in the program.
    pub fn from_stored(s: impl Into<String>) -> Code {
        Code(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for Code {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_how_people_type_codes() {
        assert_eq!(Code::parse(" Web Form ").map(|c| c.0), Ok("web_form".to_owned()));
        assert_eq!(Code::parse("trade-show").map(|c| c.0), Ok("trade_show".to_owned()));
        assert!(Code::parse("").is_err());
        assert!(Code::parse("web/form").is_err(), "refused, not stripped");
        assert!(Code::parse(&"a".repeat(65)).is_err());
        assert_eq!(Code::parse_optional("  "), Ok(None));
    }
}
