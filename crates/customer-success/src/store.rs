//! Customer success' tables. The only module with SQL.

use sqlx::{Any, Executor};
use themodel_runtime::time::Micros;
use themodel_runtime::values::Money;
use themodel_runtime::{Db, Tx};

use crate::domain::{Account, Status};

#[derive(sqlx::FromRow)]
struct Row {
    account_id: String,
    opportunity_id: String,
    lead_id: String,
    company: String,
    contact_name: String,
    contact_email: String,
    status: String,
    contract_value: String,
    term_months: i64,
    started_at: i64,
    term_ends_at: i64,
    renewals: i64,
    churned_at: Option<i64>,
    churn_reason: String,
}

const COLUMNS: &str = "account_id, opportunity_id, lead_id, company, contact_name, contact_email, status, \
    contract_value, term_months, started_at, term_ends_at, renewals, churned_at, churn_reason";

impl TryFrom<Row> for Account {
    type Error = anyhow::Error;

    fn try_from(r: Row) -> anyhow::Result<Account> {
        Ok(Account {
            status: Status::from_code(&r.status)
                .ok_or_else(|| anyhow::anyhow!("unknown account status {:?}", r.status))?,
            contract_value: serde_json::from_str(&r.contract_value)?,
            account_id: r.account_id,
            opportunity_id: r.opportunity_id,
            lead_id: r.lead_id,
            company: r.company,
            contact_name: r.contact_name,
            contact_email: r.contact_email,
            term_months: r.term_months as i32,
            started_at: r.started_at,
            term_ends_at: r.term_ends_at,
            renewals: r.renewals as i32,
            churned_at: r.churned_at,
            churn_reason: r.churn_reason,
        })
    }
}

pub async fn account<'c, E: Executor<'c, Database = Any>>(e: E, id: &str) -> anyhow::Result<Option<Account>> {
    let row: Option<Row> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM accounts WHERE account_id = $1"))
        .bind(id)
        .fetch_optional(e)
        .await?;
    row.map(Account::try_from).transpose()
}

/// Inserts or replaces the account.
pub async fn save(tx: &mut Tx, a: &Account) -> anyhow::Result<()> {
    sqlx::query("DELETE FROM accounts WHERE account_id = $1").bind(&a.account_id).execute(&mut **tx).await?;
    sqlx::query(&format!(
        "INSERT INTO accounts ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    ))
    .bind(&a.account_id)
    .bind(&a.opportunity_id)
    .bind(&a.lead_id)
    .bind(&a.company)
    .bind(&a.contact_name)
    .bind(&a.contact_email)
    .bind(a.status.code())
    .bind(serde_json::to_string(&a.contract_value)?)
    .bind(i64::from(a.term_months))
    .bind(a.started_at)
    .bind(a.term_ends_at)
    .bind(i64::from(a.renewals))
    .bind(a.churned_at)
    .bind(&a.churn_reason)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn insert_renewal(
    tx: &mut Tx,
    id: &str,
    account_id: &str,
    term_months: i32,
    value: &Money,
    at: Micros,
) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO renewals (renewal_id, account_id, term_months, contract_value, occurred_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(id)
        .bind(account_id)
        .bind(i64::from(term_months))
        .bind(serde_json::to_string(value)?)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A page of accounts, newest first, after the keyset `after`.
pub async fn list(
    db: &Db,
    status: Option<Status>,
    after: Option<(i64, String)>,
    limit: i64,
) -> anyhow::Result<Vec<Account>> {
    let (at, id) = after.unwrap_or((i64::MAX, String::new()));
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM accounts WHERE ($1 = '' OR status = $1) \
         AND (started_at < $2 OR (started_at = $2 AND ($3 = '' OR account_id < $3))) \
         ORDER BY started_at DESC, account_id DESC LIMIT $4"
    ))
    .bind(status.map_or("", Status::code))
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(db.reader())
    .await?;
    rows.into_iter().map(Account::try_from).collect()
}
