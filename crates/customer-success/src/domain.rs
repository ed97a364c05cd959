//! Customer success' rules: an account opened by a won deal, expanded by
//! further deals, renewed term by term until it churns. Amounts are added
//! with checked arithmetic and terms never end after 9999-12-31. Each step
//! returns the events it causes; no SQL, no gRPC clients.

use themodel_proto::common::v1::AssignmentRule;
use themodel_proto::customersuccess::v1 as pb;
use themodel_runtime::Effects;
use themodel_runtime::owners::{self, Assigned, Owner};
use themodel_runtime::time::{Micros, to_timestamp};
use themodel_runtime::wire::money_to_proto;
use themodel_values::{AccountId, Code, Currency, LeadId, Money, MoneyError, OpportunityId, Term, time};

/// Customer success' effects: its events.
pub type Out = Effects<pb::CustomerSuccessEvent>;

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
    pub account_id: AccountId,
    pub opportunity_id: OpportunityId,
    pub lead_id: LeadId,
    pub company: String,
    pub contact_name: String,
    pub contact_email: String,
    pub status: Status,
    pub contract_value: Money,
    pub term: Term,
    pub started_at: Micros,
    pub term_ends_at: Micros,
    pub renewals: i32,
    pub expansions: i32,
    pub churned_at: Option<Micros>,
    pub churn_reason: String,
    /// The customer success manager who owns it.
    pub owner: Option<Owner>,
    /// When the contact was erased ([`Account::erase`]).
    pub erased_at: Option<Micros>,
}

/// A won deal handed over by field sales.
#[derive(Debug, Clone, PartialEq)]
pub struct WonDeal {
    pub account_id: AccountId,
    pub opportunity_id: OpportunityId,
    pub lead_id: LeadId,
    pub company: String,
    pub contact_name: String,
    pub contact_email: String,
    pub contract_value: Money,
    pub term: Term,
    pub occurred_at: Micros,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("account {0} churned; a churned account cannot be renewed or churn again (a new won deal reactivates it)")]
    Churned(AccountId),
    #[error("account {account} cannot take this deal: {cause}")]
    Money { account: AccountId, cause: MoneyError },
    #[error(
        "account {account} is contracted in {current}; a renewal's contract value must be in {current} too \
         (amounts are never converted)"
    )]
    RenewalCurrency { account: AccountId, current: Currency },
    #[error("a {0}-month term from then would end after 9999-12-31")]
    TermPastEnd(u32),
}

fn event(at: Micros, e: pb::customer_success_event::Event) -> pb::CustomerSuccessEvent {
    pb::CustomerSuccessEvent { occurred_at: Some(to_timestamp(at)), event: Some(e) }
}

fn term_end(from: Micros, term: Term) -> Result<Micros, Refused> {
    time::add_months(from, term.months()).ok_or(Refused::TermPastEnd(term.months()))
}

impl Account {
    /// Opens an account, owned by the manager `owner` names (if any).
    pub fn open(d: WonDeal, handover_id: &str, owner: Assigned) -> Result<(Account, Out), Refused> {
        let term_ends_at = term_end(d.occurred_at, d.term)?;
        let mut a = Account {
            term_ends_at,
            account_id: d.account_id,
            opportunity_id: d.opportunity_id,
            lead_id: d.lead_id,
            company: d.company,
            contact_name: d.contact_name,
            contact_email: d.contact_email,
            status: Status::Active,
            contract_value: d.contract_value,
            term: d.term,
            started_at: d.occurred_at,
            renewals: 0,
            expansions: 0,
            churned_at: None,
            churn_reason: String::new(),
            owner: None,
            erased_at: None,
        };
        let (owner_id, team, rule) = a.take_owner(owner);
        let out = Out::default().event(event(
            a.started_at,
            pb::customer_success_event::Event::AccountOpened(pb::AccountOpened {
                account_id: a.account_id.to_string(),
                opportunity_id: a.opportunity_id.to_string(),
                lead_id: a.lead_id.to_string(),
                contract_value: Some(money_to_proto(&a.contract_value)),
                term_months: a.term.months_i32(),
                term_ends_at: Some(to_timestamp(a.term_ends_at)),
                handover_id: handover_id.to_owned(),
                owner_id,
                team,
                assignment_rule: rule as i32,
            }),
        ));
        Ok((a, out))
    }

    /// Gives the account to `owner` (none: it keeps its own), and returns
    /// its owner as the events carry it.
    fn take_owner(&mut self, owner: Assigned) -> (String, String, AssignmentRule) {
        let rule = match owner {
            Some((owner, rule)) => {
                self.owner = Some(owner);
                rule
            }
            None => AssignmentRule::Unspecified,
        };
        let (id, team) = owners::fields(self.owner.as_ref());
        (id, team, rule)
    }

    /// The manager a further won deal keeps: the account's own, while
    /// `roster` keeps them (`None`: the next in turn takes it).
    pub fn kept_owner(&self, roster: &owners::Roster) -> Option<Owner> {
        self.owner.clone().filter(|o| roster.keeps(o))
    }

    /// Another won deal for this customer (upsell, cross-sell, or winning a
    /// churned customer back). An active account's value grows by the deal's,
    /// in the same currency, or the deal is refused; a churned account is
    /// active again on the new contract. Nothing changes on refusal.
    pub fn expand(&mut self, d: &WonDeal, handover_id: &str, owner: Assigned) -> Result<Out, Refused> {
        let reactivated = self.status == Status::Churned;
        if reactivated {
            let term_ends_at = term_end(d.occurred_at, d.term)?;
            self.status = Status::Active;
            self.churned_at = None;
            self.churn_reason.clear();
            self.contract_value = d.contract_value;
            self.term = d.term;
            self.started_at = d.occurred_at;
            self.term_ends_at = term_ends_at;
        } else {
            self.contract_value = self
                .contract_value
                .checked_add(&d.contract_value)
                .map_err(|cause| Refused::Money { account: self.account_id.clone(), cause })?;
        }
        self.expansions = self.expansions.saturating_add(1);
        self.opportunity_id = d.opportunity_id.clone();
        self.lead_id = d.lead_id.clone();
        let (owner_id, team, rule) = self.take_owner(owner);
        Ok(Out::default().event(event(
            d.occurred_at,
            pb::customer_success_event::Event::AccountExpanded(pb::AccountExpanded {
                account_id: self.account_id.to_string(),
                opportunity_id: d.opportunity_id.to_string(),
                lead_id: d.lead_id.to_string(),
                deal_value: Some(money_to_proto(&d.contract_value)),
                contract_value: Some(money_to_proto(&self.contract_value)),
                reactivated,
                handover_id: handover_id.to_owned(),
                owner_id,
                team,
                assignment_rule: rule as i32,
            }),
        )))
    }

    /// Renews for another term (by default the same length and value). The new
    /// term runs from the end of the current one, or from the renewal if that
    /// is later (a lapsed contract renewed late).
    pub fn renew(&mut self, term: Option<Term>, value: Option<Money>, at: Micros) -> Result<Out, Refused> {
        if self.status == Status::Churned {
            return Err(Refused::Churned(self.account_id.clone()));
        }
        if let Some(v) = &value
            && v.currency() != self.contract_value.currency()
        {
            return Err(Refused::RenewalCurrency {
                account: self.account_id.clone(),
                current: self.contract_value.currency(),
            });
        }
        let term = term.unwrap_or(self.term);
        let ends = term_end(self.term_ends_at.max(at), term)?;
        self.term = term;
        if let Some(v) = value {
            self.contract_value = v;
        }
        self.term_ends_at = ends;
        self.renewals = self.renewals.saturating_add(1);
        Ok(Out::default().event(event(
            at,
            pb::customer_success_event::Event::RenewalRecorded(pb::RenewalRecorded {
                account_id: self.account_id.to_string(),
                term_months: term.months_i32(),
                contract_value: Some(money_to_proto(&self.contract_value)),
                term_ends_at: Some(to_timestamp(ends)),
                renewals: self.renewals,
            }),
        )))
    }

    /// Gives the active account to `owner`; nothing changes (and no event)
    /// when they own it already.
    pub fn assign(&mut self, owner: Owner, at: Micros) -> Result<Out, Refused> {
        if self.status == Status::Churned {
            return Err(Refused::Churned(self.account_id.clone()));
        }
        let Some(previous_owner_id) = owners::reassign(&mut self.owner, owner) else {
            return Ok(Out::default());
        };
        let (owner_id, team) = owners::fields(self.owner.as_ref());
        Ok(Out::default().event(event(
            at,
            pb::customer_success_event::Event::AccountAssigned(pb::AccountAssigned {
                account_id: self.account_id.to_string(),
                owner_id,
                team,
                previous_owner_id,
                assignment_rule: AssignmentRule::Requested as i32,
            }),
        )))
    }

    pub fn churn(&mut self, reason: &Code, at: Micros) -> Result<Out, Refused> {
        if self.status == Status::Churned {
            return Err(Refused::Churned(self.account_id.clone()));
        }
        self.status = Status::Churned;
        self.churned_at = Some(at);
        self.churn_reason = reason.to_string();
        Ok(Out::default().event(event(
            at,
            pb::customer_success_event::Event::ChurnRecorded(pb::ChurnRecorded {
                account_id: self.account_id.to_string(),
                reason: reason.to_string(),
                contract_value: Some(money_to_proto(&self.contract_value)),
            }),
        )))
    }

    /// Erases the contact when it is the person of `lead` (marketing's
    /// erasure, handed on by field sales): contact name and e-mail are
    /// removed; the account keeps its id, company, values, renewals and
    /// history. Returns whether it did (a contact of another lead stays).
    pub fn erase(&mut self, lead: &LeadId, at: Micros) -> bool {
        if self.lead_id != *lead {
            return false;
        }
        if self.erased_at.is_none() {
            self.contact_name.clear();
            self.contact_email.clear();
            self.erased_at = Some(at);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(code: &str, units: i64) -> Money {
        Money::new(Currency::parse(code).expect("code"), units, 0).expect("amount")
    }

    fn deal(opp: &str, value: Money, at: Micros) -> WonDeal {
        WonDeal {
            account_id: AccountId::parse("acct-1").expect("id"),
            opportunity_id: OpportunityId::parse(opp).expect("id"),
            lead_id: LeadId::parse("lead-1").expect("id"),
            company: "Corp".into(),
            contact_name: "Ada".into(),
            contact_email: "ada@corp.example".into(),
            contract_value: value,
            term: Term::parse(12).expect("term"),
            occurred_at: at,
        }
    }

    fn months(n: u32) -> Micros {
        time::add_months(0, n).expect("in range")
    }

    #[test]
    fn renewal_extends_from_the_end_of_term() {
        let (mut a, _) = Account::open(deal("opp-1", money("JPY", 1_200_000), 0), "ho", None).expect("opens");
        assert_eq!(a.term_ends_at, months(12));
        a.renew(None, None, months(11)).expect("active");
        assert_eq!((a.term_ends_at, a.renewals), (months(24), 1));
        a.renew(Some(Term::parse(24).expect("term")), None, months(30)).expect("active");
        assert_eq!(a.term_ends_at, months(54), "a late renewal runs from the renewal");
    }

    #[test]
    fn renewals_never_run_past_the_end_of_time() {
        let (mut a, _) = Account::open(deal("opp-1", money("JPY", 1), 0), "ho", None).expect("opens");
        let long = Term::parse(120).expect("term");
        let mut refused = None;
        for _ in 0..1000 {
            if let Err(e) = a.renew(Some(long), None, 0) {
                refused = Some(e);
                break;
            }
        }
        assert_eq!(refused, Some(Refused::TermPastEnd(120)));
        assert!(time::in_range(a.term_ends_at), "the last accepted term ends in range");
    }

    #[test]
    fn another_won_deal_expands_the_account() {
        let (mut a, _) = Account::open(deal("opp-1", money("JPY", 1_200_000), 0), "ho-1", None).expect("opens");
        a.expand(&deal("opp-2", money("JPY", 300_000), 100), "ho-2", None).expect("same currency");
        assert_eq!(a.contract_value, money("JPY", 1_500_000));
        assert_eq!((a.opportunity_id.as_str(), a.expansions), ("opp-2", 1));
        a.churn(&Code::parse("price").expect("code"), 200).expect("active");
        a.expand(&deal("opp-3", money("USD", 10), 300), "ho-3", None).expect("win-back");
        assert_eq!((a.status, a.contract_value), (Status::Active, money("USD", 10)));
        assert_eq!(a.churned_at, None);
    }

    #[test]
    fn expansion_never_wraps_or_converts() {
        let (mut a, _) = Account::open(deal("opp-1", money("JPY", i64::MAX), 0), "ho", None).expect("opens");
        let before = a.clone();
        assert!(matches!(
            a.expand(&deal("opp-2", money("JPY", i64::MAX), 1), "ho-2", None),
            Err(Refused::Money { cause: MoneyError::Overflow, .. })
        ));
        assert!(matches!(
            a.expand(&deal("opp-3", money("USD", 1), 1), "ho-3", None),
            Err(Refused::Money { cause: MoneyError::CurrencyMismatch(..), .. })
        ));
        assert_eq!(a, before, "a refused expansion changes nothing");
    }

    #[test]
    fn a_renewal_keeps_the_contracts_currency() {
        let (mut a, _) = Account::open(deal("opp-1", money("JPY", 1_200_000), 0), "ho", None).expect("opens");
        let before = a.clone();
        assert!(matches!(a.renew(None, Some(money("USD", 10_000)), 5), Err(Refused::RenewalCurrency { .. })));
        assert_eq!(a, before, "a refused renewal changes nothing");
        a.renew(None, Some(money("JPY", 900_000)), 5).expect("same currency");
        assert_eq!(a.contract_value, money("JPY", 900_000));
    }

    #[test]
    fn a_manager_owns_the_account_until_it_is_reassigned_or_churns() {
        let owner = |id: &str| Owner::from_stored(id.into(), "csm".into()).expect("an owner");
        let (mut a, _) =
            Account::open(deal("opp-1", money("JPY", 1), 0), "ho", Some((owner("cy"), AssignmentRule::RoundRobin)))
                .expect("opens");
        assert_eq!(a.owner, Some(owner("cy")));
        a.expand(&deal("opp-2", money("JPY", 1), 1), "ho-2", None).expect("expands");
        assert_eq!(a.owner, Some(owner("cy")), "a deal without a new manager keeps the account's");
        assert!(a.assign(owner("cy"), 2).expect("active").events.is_empty(), "the same manager: no event");
        assert_eq!(a.assign(owner("dee"), 3).expect("active").events.len(), 1);
        a.churn(&Code::parse("price").expect("code"), 4).expect("active");
        assert!(matches!(a.assign(owner("cy"), 5), Err(Refused::Churned(_))));
        assert_eq!(a.owner, Some(owner("dee")));
    }

    #[test]
    fn churned_account_is_final() {
        let (mut a, _) = Account::open(deal("opp-1", money("JPY", 1), 0), "ho", None).expect("opens");
        a.churn(&Code::parse("no_adoption").expect("code"), 5).expect("active");
        assert!(matches!(a.renew(None, None, 6), Err(Refused::Churned(_))));
        assert!(matches!(a.churn(&Code::parse("price").expect("code"), 7), Err(Refused::Churned(_))));
    }
}
