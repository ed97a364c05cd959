//! Customer success' rules: an account opened by a won deal, renewed term by
//! term until it churns. No SQL, no gRPC.

use themodel_runtime::time::Micros;
use themodel_runtime::values::Money;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Churned,
}

impl Status {
    pub fn code(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Churned => "churned",
        }
    }

    pub fn from_code(code: &str) -> Option<Status> {
        [Status::Active, Status::Churned].into_iter().find(|s| s.code() == code)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub account_id: String,
    pub opportunity_id: String,
    pub lead_id: String,
    pub company: String,
    pub contact_name: String,
    pub contact_email: String,
    pub status: Status,
    pub contract_value: Money,
    pub term_months: i32,
    pub started_at: Micros,
    pub term_ends_at: Micros,
    pub renewals: i32,
    pub churned_at: Option<Micros>,
    pub churn_reason: String,
}

/// A won deal handed over by field sales.
#[derive(Debug, Clone, PartialEq)]
pub struct WonDeal {
    pub account_id: String,
    pub opportunity_id: String,
    pub lead_id: String,
    pub company: String,
    pub contact_name: String,
    pub contact_email: String,
    pub contract_value: Money,
    pub term_months: i32,
    pub occurred_at: Micros,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the account churned; a churned account cannot be renewed or churn again (a new won deal reactivates it)")]
    Churned,
}

/// `at` plus `months` calendar months (UTC); the day is clamped to the end of
/// a shorter month (Jan 31 + 1 month = Feb 28/29).
pub fn add_months(at: Micros, months: i32) -> Micros {
    let Some(start) = chrono::DateTime::from_timestamp_micros(at) else {
        return at;
    };
    start.checked_add_months(chrono::Months::new(months.max(0) as u32)).map_or(at, |t| t.timestamp_micros())
}

impl Account {
    pub fn open(d: WonDeal) -> Account {
        Account {
            term_ends_at: add_months(d.occurred_at, d.term_months),
            account_id: d.account_id,
            opportunity_id: d.opportunity_id,
            lead_id: d.lead_id,
            company: d.company,
            contact_name: d.contact_name,
            contact_email: d.contact_email,
            status: Status::Active,
            contract_value: d.contract_value,
            term_months: d.term_months,
            started_at: d.occurred_at,
            renewals: 0,
            churned_at: None,
            churn_reason: String::new(),
        }
    }

    /// Another won deal for this customer (upsell, cross-sell, or winning a
    /// churned customer back). An active account grows by the deal's value
    /// when the currency matches (otherwise the new contract replaces the old
    /// one); a churned account is active again on the new contract.
    pub fn expand(&mut self, d: &WonDeal) {
        if self.status == Status::Churned {
            self.status = Status::Active;
            self.churned_at = None;
            self.churn_reason.clear();
            self.contract_value = d.contract_value.clone();
            self.term_months = d.term_months;
            self.term_ends_at = add_months(d.occurred_at, d.term_months);
        } else if self.contract_value.currency_code == d.contract_value.currency_code {
            let nanos = i64::from(self.contract_value.nanos) + i64::from(d.contract_value.nanos);
            self.contract_value.units += d.contract_value.units + nanos / 1_000_000_000;
            self.contract_value.nanos = (nanos % 1_000_000_000) as i32;
        } else {
            self.contract_value = d.contract_value.clone();
        }
        self.opportunity_id = d.opportunity_id.clone();
    }

    /// Renews for another term (by default the same length and value). The new
    /// term runs from the end of the current one, or from the renewal if that
    /// is later (a lapsed contract renewed late).
    pub fn renew(&mut self, term_months: Option<i32>, value: Option<Money>, at: Micros) -> Result<(), Refused> {
        if self.status == Status::Churned {
            return Err(Refused::Churned);
        }
        if let Some(t) = term_months {
            self.term_months = t;
        }
        if let Some(v) = value {
            self.contract_value = v;
        }
        self.term_ends_at = add_months(self.term_ends_at.max(at), self.term_months);
        self.renewals += 1;
        Ok(())
    }

    pub fn churn(&mut self, reason: &str, at: Micros) -> Result<(), Refused> {
        if self.status == Status::Churned {
            return Err(Refused::Churned);
        }
        self.status = Status::Churned;
        self.churned_at = Some(at);
        self.churn_reason = reason.to_owned();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> Account {
        Account::open(WonDeal {
            account_id: "acct-1".into(),
            opportunity_id: "opp-1".into(),
            lead_id: "lead-1".into(),
            company: "Corp".into(),
            contact_name: "Ada".into(),
            contact_email: "ada@corp.example".into(),
            contract_value: Money { currency_code: "JPY".into(), units: 1_200_000, nanos: 0 },
            term_months: 12,
            occurred_at: 0,
        })
    }

    #[test]
    fn renewal_extends_from_the_end_of_term() {
        let mut a = account();
        assert_eq!(a.term_ends_at, add_months(0, 12));
        a.renew(None, None, add_months(0, 11)).expect("active");
        assert_eq!(a.term_ends_at, add_months(0, 24));
        assert_eq!(a.renewals, 1);
        a.renew(Some(24), None, add_months(0, 30)).expect("active");
        assert_eq!(a.term_ends_at, add_months(0, 54), "late renewal runs from the renewal");
        assert_eq!(a.term_months, 24);
    }

    #[test]
    fn another_won_deal_expands_the_account() {
        let mut a = account();
        let mut upsell = WonDeal {
            account_id: "acct-1".into(),
            opportunity_id: "opp-2".into(),
            lead_id: "lead-1".into(),
            company: "Corp".into(),
            contact_name: "Ada".into(),
            contact_email: "ada@corp.example".into(),
            contract_value: Money { currency_code: "JPY".into(), units: 300_000, nanos: 0 },
            term_months: 12,
            occurred_at: 100,
        };
        a.expand(&upsell);
        assert_eq!(a.contract_value.units, 1_500_000);
        assert_eq!(a.opportunity_id, "opp-2");
        a.churn("price", 200).expect("active");
        upsell.occurred_at = 300;
        a.expand(&upsell);
        assert_eq!(a.status, Status::Active, "won back");
        assert_eq!(a.contract_value.units, 300_000);
        assert_eq!(a.churned_at, None);
    }

    #[test]
    fn churned_account_is_final() {
        let mut a = account();
        a.churn("no_adoption", 5).expect("active");
        assert_eq!(a.status, Status::Churned);
        assert_eq!(a.renew(None, None, 6), Err(Refused::Churned));
        assert_eq!(a.churn("price", 7), Err(Refused::Churned));
    }
}
