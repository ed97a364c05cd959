//! Contract terms.

use serde::{Deserialize, Serialize};

use crate::Invalid;

/// A contract term: 1 to 120 months.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Term(u8);

impl Term {
    pub const MAX_MONTHS: i32 = 120;

    pub fn parse(months: i32) -> Result<Term, Invalid> {
        u8::try_from(months)
            .ok()
            .filter(|m| (1..=Self::MAX_MONTHS).contains(&i32::from(*m)))
            .map(Term)
            .ok_or_else(|| Invalid::new("must be 1-120 months"))
    }

    pub fn months(self) -> u32 {
        u32::from(self.0)
    }

    pub fn months_i32(self) -> i32 {
        i32::from(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms() {
        assert_eq!(Term::parse(12).map(Term::months), Ok(12));
        for bad in [0, -1, 121, 256, i32::MAX] {
            assert!(Term::parse(bad).is_err(), "{bad}");
        }
    }
}
