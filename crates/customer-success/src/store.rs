//! Customer success' tables, and its rows as the writer sees them. The only
//! module with SQL.

use std::collections::HashMap;

use themodel_runtime::cache::{self, Cache};
use themodel_runtime::db::Conn;
use themodel_runtime::db::{self, Db, Script, Table, Value};
use themodel_runtime::owners::{self, Owner, Turn, Turns};
use themodel_runtime::paging::NewestFirst;
use themodel_runtime::time::Micros;
use themodel_runtime::{ApiResult, Rows, Store};
use themodel_values::{AccountId, LeadId, Money, OpportunityId, Term};

use crate::domain::{Account, Status};

/// What a unit asks to have loaded.
#[derive(Debug, Clone)]
pub enum Key {
    Account(AccountId),
    /// Where the round-robin rule stands.
    Turn,
}

/// The round-robin rule that gives new accounts to customer success managers.
pub const ROUND_ROBIN: &str = "customer_success_accounts";

/// A renewal row.
#[derive(Debug, Clone)]
pub struct RenewalRow {
    pub renewal_id: String,
    pub account_id: AccountId,
    pub term: Term,
    pub value: Money,
    pub at: Micros,
}

/// One change a unit makes.
#[derive(Debug, Clone)]
pub enum Change {
    Account(Box<Account>),
    Renewal(RenewalRow),
    Turn(Turn),
}

/// A batch's rows.
#[derive(Debug, Default)]
pub struct State {
    accounts: Rows<AccountId, Account>,
    renewals: Vec<RenewalRow>,
    turns: Turns,
}

impl State {
    /// The round-robin turns (asked for with [`Key::Turn`]).
    pub fn turns(&self) -> &Turns {
        &self.turns
    }

    pub fn account(&self, id: &AccountId) -> ApiResult<Option<&Account>> {
        self.accounts.get(id.as_str())
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    account_id: String,
    opportunity_id: String,
    lead_id: String,
    company: String,
    contact_name: String,
    contact_email: String,
    status: String,
    contract_currency: String,
    contract_units: i64,
    contract_nanos: i64,
    term_months: i64,
    started_at: i64,
    term_ends_at: i64,
    renewals: i64,
    expansions: i64,
    churned_at: Option<i64>,
    churn_reason: String,
    owner_id: String,
    team: String,
    erased_at: Option<i64>,
}

const COLUMNS: &str = "account_id, opportunity_id, lead_id, company, contact_name, contact_email, status, \
    contract_currency, contract_units, contract_nanos, term_months, started_at, term_ends_at, renewals, expansions, \
    churned_at, churn_reason, owner_id, team, erased_at";

/// The accounts table as written: [`COLUMNS`].
const ACCOUNTS: Table = Table {
    name: "accounts",
    columns: &[
        "account_id",
        "opportunity_id",
        "lead_id",
        "company",
        "contact_name",
        "contact_email",
        "status",
        "contract_currency",
        "contract_units",
        "contract_nanos",
        "term_months",
        "started_at",
        "term_ends_at",
        "renewals",
        "expansions",
        "churned_at",
        "churn_reason",
        "owner_id",
        "team",
        "erased_at",
    ],
    key: 1,
};

fn account_values(a: &Account) -> Vec<Value<'_>> {
    vec![
        a.account_id.as_str().into(),
        a.opportunity_id.as_str().into(),
        a.lead_id.as_str().into(),
        a.company.as_str().into(),
        a.contact_name.as_str().into(),
        a.contact_email.as_str().into(),
        a.status.code().into(),
        a.contract_value.currency().to_string().into(),
        a.contract_value.units().into(),
        a.contract_value.nanos().into(),
        i64::from(a.term.months()).into(),
        a.started_at.into(),
        a.term_ends_at.into(),
        a.renewals.into(),
        a.expansions.into(),
        a.churned_at.into(),
        a.churn_reason.as_str().into(),
        a.owner.as_ref().map_or("", |o| o.id.as_str()).into(),
        a.owner.as_ref().map_or("", Owner::team_str).into(),
        a.erased_at.into(),
    ]
}

impl TryFrom<Row> for Account {
    type Error = anyhow::Error;

    fn try_from(r: Row) -> anyhow::Result<Account> {
        Ok(Account {
            status: Status::from_code(&r.status)
                .ok_or_else(|| anyhow::anyhow!("unknown account status {:?}", r.status))?,
            contract_value: db::money(Some(r.contract_currency), Some(r.contract_units), Some(r.contract_nanos))?
                .ok_or_else(|| anyhow::anyhow!("account without a contract value"))?,
            term: Term::parse(db::to_i32(r.term_months, "term_months")?)
                .map_err(|e| anyhow::anyhow!("stored term: {e}"))?,
            account_id: AccountId::from_stored(r.account_id),
            opportunity_id: OpportunityId::from_stored(r.opportunity_id),
            lead_id: LeadId::from_stored(r.lead_id),
            company: r.company,
            contact_name: r.contact_name,
            contact_email: r.contact_email,
            started_at: r.started_at,
            term_ends_at: r.term_ends_at,
            renewals: db::to_i32(r.renewals, "renewals")?,
            expansions: db::to_i32(r.expansions, "expansions")?,
            churned_at: r.churned_at,
            churn_reason: r.churn_reason,
            owner: Owner::from_stored(r.owner_id, r.team),
            erased_at: r.erased_at,
        })
    }
}

fn accounts(rows: Vec<Row>) -> Result<Vec<Account>, sqlx::Error> {
    rows.into_iter().map(|r| Account::try_from(r).map_err(|e| sqlx::Error::Decode(e.into()))).collect()
}

/// Customer success' store.
#[derive(Debug)]
pub struct CustomerSuccess {
    pub db: Db,
    accounts: Cache<AccountId, Account>,
}

impl CustomerSuccess {
    pub fn new(db: Db) -> Self {
        CustomerSuccess { db, accounts: Cache::new(cache::ROWS) }
    }
}

impl Store for CustomerSuccess {
    fn remember(&self, state: State) {
        self.accounts.remember(state.accounts);
    }

    fn forget(&self) {
        self.accounts.forget();
    }

    type Key = Key;
    type State = State;
    type Change = Change;
    type Event = themodel_proto::customersuccess::v1::CustomerSuccessEvent;

    async fn load(&self, conn: &mut Conn, keys: &[Key], state: &mut State) -> Result<(), sqlx::Error> {
        if keys.iter().any(|k| matches!(k, Key::Turn)) {
            owners::load_turn(conn, &self.db, ROUND_ROBIN, &mut state.turns).await?;
        }
        let ids: Vec<&AccountId> =
            keys.iter().filter_map(|k| if let Key::Account(id) = k { Some(id) } else { None }).collect();
        let missing = state.accounts.missing(ids);
        let wanted: Vec<&str> =
            self.accounts.fill(&mut state.accounts, missing).into_iter().map(AccountId::as_str).collect();
        let mut found: HashMap<String, Account> =
            fetch(conn, &self.db, &wanted).await?.into_iter().map(|a| (a.account_id.to_string(), a)).collect();
        for id in wanted {
            state.accounts.loaded(AccountId::from_stored(id.to_owned()), found.remove(id));
        }
        Ok(())
    }

    fn apply(&self, state: &mut State, change: Change) {
        match change {
            Change::Account(a) => state.accounts.put(a.account_id.clone(), *a),
            Change::Renewal(r) => state.renewals.push(r),
            Change::Turn(t) => state.turns.put(t.rule, t),
        }
    }

    fn flush<'s>(&self, script: &mut Script<'s>, state: &'s State) {
        script.upsert(
            &ACCOUNTS,
            state.accounts.changes().map(|(before, after)| (before.map(account_values), account_values(after))),
        );
        script.insert_rows(
            "INSERT INTO renewals (renewal_id, account_id, term_months, contract_currency, contract_units, \
             contract_nanos, occurred_at)",
            7,
            "",
            &state.renewals,
            |q, r| {
                q.bind(&r.renewal_id)
                    .bind(r.account_id.as_str())
                    .bind(i64::from(r.term.months()))
                    .bind(r.value.currency().to_string())
                    .bind(r.value.units())
                    .bind(i64::from(r.value.nanos()))
                    .bind(r.at)
            },
        );
        owners::flush_turns(script, &state.turns);
    }
}

/// Accounts by id, for the batched reader.
pub async fn accounts_by_id(conn: &mut Conn, db: &Db, ids: Vec<AccountId>) -> ApiResult<Vec<(AccountId, Account)>> {
    let keys: Vec<&str> = ids.iter().map(AccountId::as_str).collect();
    Ok(fetch(conn, db, &keys).await?.into_iter().map(|a| (a.account_id.clone(), a)).collect())
}

/// Accounts by id on `conn`: the writer's load and the batched reader's.
async fn fetch(conn: &mut Conn, db: &Db, ids: &[&str]) -> Result<Vec<Account>, sqlx::Error> {
    accounts(db::select_in(conn, db, &format!("SELECT {COLUMNS} FROM accounts WHERE account_id IN "), "", ids).await?)
}

/// A page of accounts, newest first, after the keyset `after`.
pub async fn list(
    db: &Db,
    status: Option<Status>,
    owner: Option<&str>,
    after: Option<(i64, String)>,
    limit: i64,
) -> ApiResult<Vec<Account>> {
    let list = NewestFirst { select: &format!("SELECT {COLUMNS} FROM accounts"), time: "started_at", id: "account_id" };
    let filters: Vec<(&str, &str)> =
        status.map(|s| ("status", s.code())).into_iter().chain(owner.map(|o| ("owner_id", o))).collect();
    let rows: Vec<Row> = list.page(db, &filters, after, limit).await?;
    Ok(accounts(rows)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_columns_are_the_read_ones() {
        assert_eq!(COLUMNS, ACCOUNTS.columns.join(", "));
    }
}
