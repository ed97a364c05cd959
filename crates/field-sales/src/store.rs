//! Field sales' tables. The only module with SQL.

use sqlx::{Any, Executor};
use themodel_quality::Phase;
use themodel_runtime::values::Money;
use themodel_runtime::{Db, Tx};

use crate::domain::Opportunity;

#[derive(sqlx::FromRow)]
struct Row {
    opportunity_id: String,
    lead_id: String,
    company: String,
    contact_name: String,
    contact_email: String,
    source: String,
    phase: String,
    bant: String,
    estimated_value: Option<String>,
    contract_value: Option<String>,
    term_months: i64,
    account_id: String,
    lost_reason: String,
    quality: i64,
    opened_at: i64,
    closed_at: Option<i64>,
    definition_version: i64,
    history: String,
}

const COLUMNS: &str = "opportunity_id, lead_id, company, contact_name, contact_email, source, phase, bant, \
    estimated_value, contract_value, term_months, account_id, lost_reason, quality, opened_at, closed_at, \
    definition_version, history";

fn money(s: Option<String>) -> anyhow::Result<Option<Money>> {
    Ok(s.as_deref().map(serde_json::from_str).transpose()?)
}

impl TryFrom<Row> for Opportunity {
    type Error = anyhow::Error;

    fn try_from(r: Row) -> anyhow::Result<Opportunity> {
        Ok(Opportunity {
            phase: Phase::from_name(&r.phase).ok_or_else(|| anyhow::anyhow!("unknown phase {:?}", r.phase))?,
            bant: serde_json::from_str(&r.bant)?,
            estimated_value: money(r.estimated_value)?,
            contract_value: money(r.contract_value)?,
            history: serde_json::from_str(&r.history)?,
            opportunity_id: r.opportunity_id,
            lead_id: r.lead_id,
            company: r.company,
            contact_name: r.contact_name,
            contact_email: r.contact_email,
            source: r.source,
            term_months: r.term_months as i32,
            account_id: r.account_id,
            lost_reason: r.lost_reason,
            quality: r.quality != 0,
            opened_at: r.opened_at,
            closed_at: r.closed_at,
            definition_version: r.definition_version,
        })
    }
}

pub async fn opportunity<'c, E: Executor<'c, Database = Any>>(e: E, id: &str) -> anyhow::Result<Option<Opportunity>> {
    let row: Option<Row> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM opportunities WHERE opportunity_id = $1"))
        .bind(id)
        .fetch_optional(e)
        .await?;
    row.map(Opportunity::try_from).transpose()
}

/// Inserts or replaces the opportunity.
pub async fn save(tx: &mut Tx, o: &Opportunity) -> anyhow::Result<()> {
    sqlx::query("DELETE FROM opportunities WHERE opportunity_id = $1")
        .bind(&o.opportunity_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query(&format!(
        "INSERT INTO opportunities ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
    ))
    .bind(&o.opportunity_id)
    .bind(&o.lead_id)
    .bind(&o.company)
    .bind(&o.contact_name)
    .bind(&o.contact_email)
    .bind(&o.source)
    .bind(o.phase.name())
    .bind(serde_json::to_string(&o.bant)?)
    .bind(o.estimated_value.as_ref().map(serde_json::to_string).transpose()?)
    .bind(o.contract_value.as_ref().map(serde_json::to_string).transpose()?)
    .bind(i64::from(o.term_months))
    .bind(&o.account_id)
    .bind(&o.lost_reason)
    .bind(i64::from(o.quality))
    .bind(o.opened_at)
    .bind(o.closed_at)
    .bind(o.definition_version)
    .bind(serde_json::to_string(&o.history)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A page of opportunities, newest first, after the keyset `after`.
pub async fn list(
    db: &Db,
    phase: Option<Phase>,
    after: Option<(i64, String)>,
    limit: i64,
) -> anyhow::Result<Vec<Opportunity>> {
    let (at, id) = after.unwrap_or((i64::MAX, String::new()));
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM opportunities WHERE ($1 = '' OR phase = $1) \
         AND (opened_at < $2 OR (opened_at = $2 AND ($3 = '' OR opportunity_id < $3))) \
         ORDER BY opened_at DESC, opportunity_id DESC LIMIT $4"
    ))
    .bind(phase.map_or("", Phase::name))
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(db.reader())
    .await?;
    rows.into_iter().map(Opportunity::try_from).collect()
}
