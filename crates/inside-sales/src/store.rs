//! Inside sales' tables. The only module with SQL.

use sqlx::{Any, Executor};
use themodel_runtime::time::Micros;
use themodel_runtime::values::BantRecord;
use themodel_runtime::{Db, Tx};

use crate::domain::{QueueItem, Status};

#[derive(sqlx::FromRow)]
struct Row {
    lead_id: String,
    email: String,
    name: String,
    company: String,
    company_size: i64,
    industry: String,
    job_title: String,
    source: String,
    score: i64,
    status: String,
    handed_over_at: i64,
    follow_up_due_at: i64,
    first_contact_at: Option<i64>,
    bant: Option<String>,
    activity_count: i64,
    opportunity_id: String,
    recycle_reason: String,
    definition_version: i64,
}

const COLUMNS: &str = "lead_id, email, name, company, company_size, industry, job_title, source, score, status, \
    handed_over_at, follow_up_due_at, first_contact_at, bant, activity_count, opportunity_id, recycle_reason, \
    definition_version";

impl TryFrom<Row> for QueueItem {
    type Error = anyhow::Error;

    fn try_from(r: Row) -> anyhow::Result<QueueItem> {
        Ok(QueueItem {
            status: Status::from_code(&r.status)
                .ok_or_else(|| anyhow::anyhow!("unknown queue status {:?}", r.status))?,
            bant: r.bant.as_deref().map(serde_json::from_str::<BantRecord>).transpose()?,
            lead_id: r.lead_id,
            email: r.email,
            name: r.name,
            company: r.company,
            company_size: r.company_size as i32,
            industry: r.industry,
            job_title: r.job_title,
            source: r.source,
            score: r.score as i32,
            handed_over_at: r.handed_over_at,
            follow_up_due_at: r.follow_up_due_at,
            first_contact_at: r.first_contact_at,
            activity_count: r.activity_count as i32,
            opportunity_id: r.opportunity_id,
            recycle_reason: r.recycle_reason,
            definition_version: r.definition_version,
        })
    }
}

pub async fn item<'c, E: Executor<'c, Database = Any>>(e: E, lead_id: &str) -> anyhow::Result<Option<QueueItem>> {
    let row: Option<Row> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM queue WHERE lead_id = $1"))
        .bind(lead_id)
        .fetch_optional(e)
        .await?;
    row.map(QueueItem::try_from).transpose()
}

/// Inserts or replaces the item (a re-accepted lead overwrites its old row).
pub async fn save(tx: &mut Tx, i: &QueueItem) -> anyhow::Result<()> {
    sqlx::query("DELETE FROM queue WHERE lead_id = $1").bind(&i.lead_id).execute(&mut **tx).await?;
    sqlx::query(&format!(
        "INSERT INTO queue ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
    ))
    .bind(&i.lead_id)
    .bind(&i.email)
    .bind(&i.name)
    .bind(&i.company)
    .bind(i64::from(i.company_size))
    .bind(&i.industry)
    .bind(&i.job_title)
    .bind(&i.source)
    .bind(i64::from(i.score))
    .bind(i.status.code())
    .bind(i.handed_over_at)
    .bind(i.follow_up_due_at)
    .bind(i.first_contact_at)
    .bind(i.bant.as_ref().map(serde_json::to_string).transpose()?)
    .bind(i64::from(i.activity_count))
    .bind(&i.opportunity_id)
    .bind(&i.recycle_reason)
    .bind(i.definition_version)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn insert_activity(
    tx: &mut Tx,
    activity_id: &str,
    lead_id: &str,
    kind: &str,
    outcome: &str,
    note: &str,
    at: Micros,
) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO activities (activity_id, lead_id, kind, outcome, note, occurred_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(activity_id)
        .bind(lead_id)
        .bind(kind)
        .bind(outcome)
        .bind(note)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The call list: by follow-up deadline, then highest score, then id.
/// `after` is the (due, score, lead_id) of the previous page's last item.
pub async fn call_list(
    db: &Db,
    status: Status,
    after: Option<(i64, i64, String)>,
    limit: i64,
) -> anyhow::Result<Vec<QueueItem>> {
    let (due, score, id) = after.unwrap_or((i64::MIN, i64::MAX, String::new()));
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM queue WHERE status = $1 AND \
         (follow_up_due_at > $2 OR (follow_up_due_at = $2 AND (score < $3 OR (score = $3 AND lead_id > $4)))) \
         ORDER BY follow_up_due_at, score DESC, lead_id LIMIT $5"
    ))
    .bind(status.code())
    .bind(due)
    .bind(score)
    .bind(id)
    .bind(limit)
    .fetch_all(db.reader())
    .await?;
    rows.into_iter().map(QueueItem::try_from).collect()
}

/// Records a conversion; `false` if the opportunity id is already taken.
pub async fn insert_conversion(
    tx: &mut Tx,
    opportunity_id: &str,
    lead_id: &str,
    quality: bool,
    at: Micros,
) -> anyhow::Result<bool> {
    let taken: Option<String> = sqlx::query_scalar("SELECT lead_id FROM conversions WHERE opportunity_id = $1")
        .bind(opportunity_id)
        .fetch_optional(&mut **tx)
        .await?;
    if taken.is_some() {
        return Ok(false);
    }
    sqlx::query("INSERT INTO conversions (opportunity_id, lead_id, quality, converted_at) VALUES ($1, $2, $3, $4)")
        .bind(opportunity_id)
        .bind(lead_id)
        .bind(i64::from(quality))
        .bind(at)
        .execute(&mut **tx)
        .await?;
    Ok(true)
}
