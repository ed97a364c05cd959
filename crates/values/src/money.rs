//! Money: an ISO 4217 currency and an amount that is never negative, with
//! arithmetic that refuses to overflow instead of wrapping.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Invalid;

const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// A currency code: three upper-case ASCII letters (ISO 4217 form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Currency([u8; 3]);

impl Currency {
    /// Parses a code such as `JPY`; lower case is accepted and upper-cased.
    pub fn parse(s: &str) -> Result<Currency, Invalid> {
        let b = s.trim().as_bytes();
        match b {
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_alphabetic()) => {
                Ok(Currency([a.to_ascii_uppercase(), b.to_ascii_uppercase(), c.to_ascii_uppercase()]))
            }
            _ => Err(Invalid::new("must be a three-letter ISO 4217 currency code such as JPY, USD or EUR")),
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount of money, never negative: `units` whole units plus `nanos`
/// billionths (0..1e9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    currency: Currency,
    units: i64,
    nanos: i32,
}

/// Why two amounts cannot be combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("the result would exceed the largest amount this service keeps (9223372036854775807 units)")]
    Overflow,
    #[error("cannot combine {0} with {1}")]
    CurrencyMismatch(Currency, Currency),
}

impl Money {
    /// An amount from its parts: `units` and `nanos` not negative, `nanos` below 10^9.
    pub fn new(currency: Currency, units: i64, nanos: i32) -> Result<Money, Invalid> {
        if units < 0 || nanos < 0 {
            return Err(Invalid::new("must not be negative"));
        }
        if i128::from(nanos) >= NANOS_PER_UNIT {
            return Err(Invalid::new("nanos must be below 1,000,000,000"));
        }
        Ok(Money { currency, units, nanos })
    }

    pub fn zero(currency: Currency) -> Money {
        Money { currency, units: 0, nanos: 0 }
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    pub fn units(&self) -> i64 {
        self.units
    }

    pub fn nanos(&self) -> i32 {
        self.nanos
    }

    /// The amount in billionths of a unit.
    pub fn total_nanos(&self) -> i128 {
        i128::from(self.units) * NANOS_PER_UNIT + i128::from(self.nanos)
    }

    fn from_total(currency: Currency, total: i128) -> Result<Money, MoneyError> {
        let units = i64::try_from(total / NANOS_PER_UNIT).map_err(|_| MoneyError::Overflow)?;
        let nanos = (total % NANOS_PER_UNIT) as i32;
        Ok(Money { currency, units, nanos })
    }

    /// `self + other`, in the same currency, or an error; never wraps.
    pub fn checked_add(&self, other: &Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(self.currency, other.currency));
        }
        Money::from_total(self.currency, self.total_nanos() + other.total_nanos())
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            write!(f, "{} {}", self.currency, self.units)
        } else {
            write!(f, "{} {}.{:09}", self.currency, self.units, self.nanos)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpy(units: i64, nanos: i32) -> Money {
        Money::new(Currency::parse("jpy").expect("code"), units, nanos).expect("amount")
    }

    #[test]
    fn currencies() {
        assert_eq!(Currency::parse("jpy").expect("code").as_str(), "JPY");
        for bad in ["", "YEN!", "JP", "JPYY", "1PY"] {
            assert!(Currency::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn amounts_are_never_negative() {
        let c = Currency::parse("USD").expect("code");
        assert!(Money::new(c, -1, 0).is_err());
        assert!(Money::new(c, 0, -1).is_err());
        assert!(Money::new(c, 0, 1_000_000_000).is_err());
    }

    #[test]
    fn addition_carries_nanos_and_refuses_overflow() {
        assert_eq!(jpy(1, 600_000_000).checked_add(&jpy(2, 500_000_000)), Ok(jpy(4, 100_000_000)));
        assert_eq!(jpy(i64::MAX, 0).checked_add(&jpy(1, 0)), Err(MoneyError::Overflow));
        assert_eq!(jpy(i64::MAX, 999_999_999).checked_add(&jpy(0, 1)), Err(MoneyError::Overflow));
        assert_eq!(jpy(i64::MAX, 0).checked_add(&jpy(0, 999_999_999)), Ok(jpy(i64::MAX, 999_999_999)));
        let usd = Money::new(Currency::parse("USD").expect("code"), 1, 0).expect("amount");
        assert!(matches!(jpy(1, 0).checked_add(&usd), Err(MoneyError::CurrencyMismatch(..))));
    }
}
