//! Retention over a period (docs/domain.md, "Retention"): of the accounts
//! active when the period starts, how much of their recurring revenue is
//! kept, lost, shrunk and grown by its end, and what that makes an account
//! worth. Read from each account's value history; no SQL, no gRPC.
//!
//! An account's contract value is its annual recurring revenue (ARR).
//! Amounts of different currencies are never added or converted.

use std::collections::BTreeMap;

use crate::domain::ratio;

/// One change of an account's contract value, at the moment `at`: the
/// value after it (currency, nanos), or `None` when the account churned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub at: i64,
    pub value: Option<(String, i128)>,
}

/// Days in the year an annual contract value is spread over.
const DAYS_PER_YEAR: i128 = 365;

/// Retention of the accounts active at a period's start (the start cohort).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    /// Accounts active at the start.
    pub accounts_at_start: i64,
    /// Of those, the ones that churned in the period (once each, even if
    /// won back and lost again).
    pub churned_accounts: i64,
    /// Accounts active at the end, new ones included.
    pub accounts_at_end: i64,
    /// Per currency of the start cohort's contracts.
    pub money: BTreeMap<String, Recurring>,
}

/// One currency's recurring revenue over the period, in nanos.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recurring {
    /// Accounts of the start cohort whose contract was in this currency.
    pub accounts_at_start: i64,
    /// Their ARR at the start.
    pub start: i128,
    /// ARR the cohort lost to churn: each churned account's value just
    /// before it churned.
    pub churned: i128,
    /// ARR lost by renewals at a lower value.
    pub contraction: i128,
    /// ARR the cohort gained: expansion deals, renewals at a higher value,
    /// and a cohort account won back after churning in the period.
    pub expansion: i128,
    /// ARR of every account active at the end, new ones included.
    pub end: i128,
}

impl Retention {
    /// Adds one account, given its changes before the period's end in time
    /// order, to the retention of the period that starts at the moment
    /// `start`.
    pub fn add_account(&mut self, changes: &[Change], start: i64) {
        let before = changes.iter().take_while(|c| c.at < start).last().and_then(|c| c.value.clone());
        if let Some((currency, value)) = changes.last().and_then(|c| c.value.as_ref()) {
            self.accounts_at_end += 1;
            self.add(currency, |r| &mut r.end, *value);
        }
        let Some((currency, value)) = before.clone() else {
            // Not a customer at the start: new business, not retention.
            return;
        };
        self.accounts_at_start += 1;
        let r = self.revenue(&currency);
        r.accounts_at_start += 1;
        r.start = r.start.saturating_add(value);
        let mut churned = false;
        let mut prev = before;
        for change in changes.iter().filter(|c| c.at >= start) {
            match (&prev, &change.value) {
                (Some((c, was)), None) => {
                    churned = true;
                    self.add(c, |r| &mut r.churned, *was);
                }
                (Some((c, was)), Some((n, now))) if c == n => {
                    if now < was {
                        self.add(c, |r| &mut r.contraction, was - now);
                    } else {
                        self.add(c, |r| &mut r.expansion, now - was);
                    }
                }
                (Some((c, was)), Some((n, now))) => {
                    // A contract renewed in another currency: the old
                    // revenue is gone, the new one is gained.
                    self.add(c, |r| &mut r.contraction, *was);
                    self.add(n, |r| &mut r.expansion, *now);
                }
                (None, Some((n, now))) => self.add(n, |r| &mut r.expansion, *now),
                (None, None) => {}
            }
            prev = change.value.clone();
        }
        if churned {
            self.churned_accounts += 1;
        }
    }

    fn revenue(&mut self, currency: &str) -> &mut Recurring {
        self.money.entry(currency.to_owned()).or_default()
    }

    fn add(&mut self, currency: &str, slot: impl Fn(&mut Recurring) -> &mut i128, nanos: i128) {
        let s = slot(self.revenue(currency));
        *s = s.saturating_add(nanos);
    }

    /// Churned accounts / accounts at the start; absent without any.
    pub fn logo_churn_rate(&self) -> Option<f64> {
        ratio(self.churned_accounts, self.accounts_at_start)
    }
}

impl Recurring {
    /// (start − churned − contraction) / start.
    pub fn gross_retention(&self) -> Option<f64> {
        ratio(self.start - self.lost(), self.start)
    }

    /// (start − churned − contraction + expansion) / start.
    pub fn net_retention(&self) -> Option<f64> {
        ratio(self.start - self.lost() + self.expansion, self.start)
    }

    /// (churned + contraction) / start: the share of the start's revenue
    /// lost in the period.
    pub fn revenue_churn_rate(&self) -> Option<f64> {
        ratio(self.lost(), self.start)
    }

    fn lost(&self) -> i128 {
        self.churned.saturating_add(self.contraction)
    }

    /// The revenue an account of the start cohort brings in a period of
    /// `days` days: start / accounts × days / 365, in nanos rounded to the
    /// nearest.
    pub fn average_per_account(&self, days: i64) -> Option<i128> {
        let den = i128::from(self.accounts_at_start) * DAYS_PER_YEAR;
        if den == 0 {
            return None;
        }
        Some(match self.start.checked_mul(i128::from(days)) {
            Some(num) => div_round(num, den),
            None => (self.start as f64 * days as f64 / den as f64).round() as i128,
        })
    }

    /// Lifetime value: the average revenue per account per period over the
    /// revenue churn rate per period, start² × days / (accounts × 365 ×
    /// lost), in nanos rounded to the nearest. Absent when nothing was lost
    /// (an account would be worth without end) or there was no cohort.
    pub fn lifetime_value(&self, days: i64) -> Option<i128> {
        let lost = self.lost();
        let den = i128::from(self.accounts_at_start).checked_mul(DAYS_PER_YEAR)?.checked_mul(lost)?;
        if den == 0 || self.start == 0 {
            return None;
        }
        let exact = self.start.checked_mul(self.start).and_then(|s| s.checked_mul(i128::from(days)));
        Some(match exact {
            Some(num) => div_round(num, den),
            // Past 128 bits: a double is as close as an amount this large
            // can matter.
            None => {
                let v = self.start as f64 / den as f64 * self.start as f64 * days as f64;
                if v >= i128::MAX as f64 { i128::MAX } else { v.round() as i128 }
            }
        })
    }
}

/// a / b rounded to the nearest (half away from zero), b > 0, a ≥ 0.
fn div_round(a: i128, b: i128) -> i128 {
    let q = a / b;
    if (a % b) * 2 >= b { q + 1 } else { q }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i128 = 1_000_000_000;

    fn yen(day: i64, units: i128) -> Change {
        Change { at: day, value: Some(("JPY".to_owned(), units * M)) }
    }

    fn churn(day: i64) -> Change {
        Change { at: day, value: None }
    }

    #[test]
    fn the_start_cohort_keeps_loses_shrinks_and_grows() {
        // The period is days [10, 40).
        let mut r = Retention::default();
        // Renewed up from 1.2M to 1.5M.
        r.add_account(&[yen(1, 1_200_000), yen(15, 1_500_000)], 10);
        // Churned.
        r.add_account(&[yen(2, 1_200_000), churn(20)], 10);
        // Renewed down to 0.9M.
        r.add_account(&[yen(3, 1_200_000), yen(22, 900_000)], 10);
        // Expanded by a 1.2M deal.
        r.add_account(&[yen(4, 1_200_000), yen(25, 2_400_000)], 10);
        // New in the period: not in the cohort, but in the end's ARR.
        r.add_account(&[yen(12, 1_200_000)], 10);
        // Churned before the period: in neither.
        r.add_account(&[yen(0, 5_000_000), churn(5)], 10);

        assert_eq!((r.accounts_at_start, r.churned_accounts, r.accounts_at_end), (4, 1, 4));
        assert_eq!(r.logo_churn_rate(), Some(0.25));
        let jpy = r.money["JPY"];
        assert_eq!(
            (jpy.start, jpy.churned, jpy.contraction, jpy.expansion, jpy.end),
            (4_800_000 * M, 1_200_000 * M, 300_000 * M, 1_500_000 * M, 6_000_000 * M)
        );
        assert_eq!(jpy.gross_retention(), Some(3.3 / 4.8));
        assert_eq!(jpy.net_retention(), Some(1.0));
        assert_eq!(jpy.revenue_churn_rate(), Some(1.5 / 4.8));
        // 1.2M a year over 30 days: 98,630.136986301 yen; lifetime value
        // that over 1.5 / 4.8 lost per period: 315,616.438356164 yen.
        assert_eq!(jpy.average_per_account(30), Some(98_630_136_986_301));
        assert_eq!(jpy.lifetime_value(30), Some(315_616_438_356_164));
    }

    #[test]
    fn a_won_back_account_counts_its_churn_and_its_return() {
        let mut r = Retention::default();
        r.add_account(&[yen(1, 100), churn(12), yen(14, 80)], 10);
        assert_eq!((r.accounts_at_start, r.churned_accounts, r.accounts_at_end), (1, 1, 1));
        let jpy = r.money["JPY"];
        assert_eq!((jpy.churned, jpy.expansion), (100 * M, 80 * M));
        assert_eq!((jpy.gross_retention(), jpy.net_retention()), (Some(0.0), Some(0.8)));
    }

    #[test]
    fn without_a_cohort_or_a_loss_rates_are_absent() {
        let mut r = Retention::default();
        r.add_account(&[yen(12, 100)], 10);
        assert_eq!(r.logo_churn_rate(), None);
        let jpy = r.money["JPY"];
        assert_eq!((jpy.gross_retention(), jpy.net_retention(), jpy.average_per_account(30)), (None, None, None));
        let mut kept = Retention::default();
        kept.add_account(&[yen(1, 100)], 10);
        let jpy = kept.money["JPY"];
        assert_eq!((jpy.gross_retention(), jpy.lifetime_value(30)), (Some(1.0), None));
    }

    #[test]
    fn a_contract_moved_to_another_currency_is_lost_and_gained() {
        let mut r = Retention::default();
        r.add_account(&[yen(1, 100), Change { at: 11, value: Some(("USD".to_owned(), M)) }], 10);
        assert_eq!(r.money["JPY"].contraction, 100 * M);
        assert_eq!((r.money["USD"].expansion, r.money["USD"].end), (M, M));
    }

    #[test]
    fn the_largest_amounts_neither_wrap_nor_panic() {
        let big = i128::from(i64::MAX) * M;
        let mut r = Retention::default();
        for _ in 0..3 {
            r.add_account(&[Change { at: 1, value: Some(("JPY".to_owned(), big)) }, churn(12)], 10);
        }
        let jpy = r.money["JPY"];
        assert_eq!(jpy.churned, 3 * big);
        assert!(jpy.lifetime_value(366).is_some_and(|v| v > 0));
        assert!(jpy.average_per_account(366).is_some_and(|v| v > 0));
    }
}
