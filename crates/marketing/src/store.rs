//! Marketing's tables. The only module with SQL.

use std::collections::BTreeMap;

use sqlx::{Any, Executor};
use themodel_quality::{Score, TouchKind};
use themodel_runtime::Tx;
use themodel_runtime::time::Micros;

use crate::domain::{Lead, Status, relationship_code, relationship_from_code};

#[derive(sqlx::FromRow)]
struct LeadRow {
    lead_id: String,
    email: String,
    name: String,
    company: String,
    company_size: i64,
    industry: String,
    job_title: String,
    source: String,
    campaign: String,
    visitor_id: String,
    relationship: String,
    status: String,
    exclusion_reason: String,
    attribute_score: i64,
    behaviour_score: i64,
    scored_touches: String,
    touch_count: i64,
    definition_version: i64,
    recycle_reason: String,
    captured_at: i64,
    handed_over_at: Option<i64>,
}

const COLUMNS: &str = "lead_id, email, name, company, company_size, industry, job_title, source, campaign, \
    visitor_id, relationship, status, exclusion_reason, attribute_score, behaviour_score, scored_touches, \
    touch_count, definition_version, recycle_reason, captured_at, handed_over_at";

impl TryFrom<LeadRow> for Lead {
    type Error = anyhow::Error;

    fn try_from(r: LeadRow) -> anyhow::Result<Lead> {
        Ok(Lead {
            status: Status::from_code(&r.status)
                .ok_or_else(|| anyhow::anyhow!("unknown lead status {:?}", r.status))?,
            scored_touches: serde_json::from_str::<BTreeMap<TouchKind, i32>>(&r.scored_touches)?,
            lead_id: r.lead_id,
            email: r.email,
            name: r.name,
            company: r.company,
            company_size: r.company_size as i32,
            industry: r.industry,
            job_title: r.job_title,
            source: r.source,
            campaign: r.campaign,
            visitor_id: r.visitor_id,
            relationship: relationship_from_code(&r.relationship),
            exclusion_reason: r.exclusion_reason,
            score: Score { attribute: r.attribute_score as i32, behaviour: r.behaviour_score as i32 },
            touch_count: r.touch_count as i32,
            definition_version: r.definition_version,
            recycle_reason: r.recycle_reason,
            captured_at: r.captured_at,
            handed_over_at: r.handed_over_at,
        })
    }
}

async fn one<'c, E: Executor<'c, Database = Any>>(e: E, sql: &str, key: &str) -> anyhow::Result<Option<Lead>> {
    let row: Option<LeadRow> = sqlx::query_as(sql).bind(key).fetch_optional(e).await?;
    row.map(Lead::try_from).transpose()
}

pub async fn lead<'c, E: Executor<'c, Database = Any>>(e: E, lead_id: &str) -> anyhow::Result<Option<Lead>> {
    one(e, &format!("SELECT {COLUMNS} FROM leads WHERE lead_id = $1"), lead_id).await
}

pub async fn lead_by_email(tx: &mut Tx, email: &str) -> anyhow::Result<Option<Lead>> {
    one(&mut **tx, &format!("SELECT {COLUMNS} FROM leads WHERE email_key = $1"), &email.to_lowercase()).await
}

/// The most recently captured lead a visitor identified as.
pub async fn lead_by_visitor(tx: &mut Tx, visitor_id: &str) -> anyhow::Result<Option<Lead>> {
    one(
        &mut **tx,
        &format!("SELECT {COLUMNS} FROM leads WHERE visitor_id = $1 ORDER BY captured_at DESC, lead_id DESC LIMIT 1"),
        visitor_id,
    )
    .await
}

pub async fn insert_lead(tx: &mut Tx, l: &Lead) -> anyhow::Result<()> {
    sqlx::query(&format!(
        "INSERT INTO leads ({COLUMNS}, email_key) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)"
    ))
    .bind(&l.lead_id)
    .bind(&l.email)
    .bind(&l.name)
    .bind(&l.company)
    .bind(i64::from(l.company_size))
    .bind(&l.industry)
    .bind(&l.job_title)
    .bind(&l.source)
    .bind(&l.campaign)
    .bind(&l.visitor_id)
    .bind(relationship_code(l.relationship))
    .bind(l.status.code())
    .bind(&l.exclusion_reason)
    .bind(i64::from(l.score.attribute))
    .bind(i64::from(l.score.behaviour))
    .bind(serde_json::to_string(&l.scored_touches)?)
    .bind(i64::from(l.touch_count))
    .bind(l.definition_version)
    .bind(&l.recycle_reason)
    .bind(l.captured_at)
    .bind(l.handed_over_at)
    .bind(l.email.to_lowercase())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes the fields that change after capture.
pub async fn update_lead(tx: &mut Tx, l: &Lead) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE leads SET status = $1, attribute_score = $2, behaviour_score = $3, scored_touches = $4, \
         touch_count = $5, definition_version = $6, recycle_reason = $7, handed_over_at = $8 WHERE lead_id = $9",
    )
    .bind(l.status.code())
    .bind(i64::from(l.score.attribute))
    .bind(i64::from(l.score.behaviour))
    .bind(serde_json::to_string(&l.scored_touches)?)
    .bind(i64::from(l.touch_count))
    .bind(l.definition_version)
    .bind(&l.recycle_reason)
    .bind(l.handed_over_at)
    .bind(&l.lead_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn insert_visit(
    tx: &mut Tx,
    visit_id: &str,
    visitor_id: &str,
    page: &str,
    product_page: bool,
    at: Micros,
    lead_id: Option<&str>,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO visits (visit_id, visitor_id, page, product_page, occurred_at, lead_id) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(visit_id)
    .bind(visitor_id)
    .bind(page)
    .bind(i64::from(product_page))
    .bind(at)
    .bind(lead_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A visitor's anonymous page views (before identifying), as touches.
pub async fn anonymous_touches(tx: &mut Tx, visitor_id: &str) -> anyhow::Result<BTreeMap<TouchKind, i32>> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT product_page, COUNT(*) FROM visits WHERE visitor_id = $1 AND lead_id IS NULL GROUP BY product_page",
    )
    .bind(visitor_id)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(product, n)| (if product != 0 { TouchKind::ProductPageView } else { TouchKind::PageView }, n as i32))
        .collect())
}

/// Marks a visitor's anonymous visits as the lead's.
pub async fn claim_visits(tx: &mut Tx, visitor_id: &str, lead_id: &str) -> anyhow::Result<()> {
    sqlx::query("UPDATE visits SET lead_id = $1 WHERE visitor_id = $2 AND lead_id IS NULL")
        .bind(lead_id)
        .bind(visitor_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A touch row to insert.
pub struct NewTouch<'a> {
    pub touch_id: String,
    pub lead_id: &'a str,
    pub kind: TouchKind,
    pub detail: &'a str,
    pub at: Micros,
}

/// Inserts touches, 100 rows per statement.
pub async fn insert_touches(tx: &mut Tx, touches: &[NewTouch<'_>]) -> anyhow::Result<()> {
    for chunk in touches.chunks(100) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| format!("(${}, ${}, ${}, ${}, ${})", i * 5 + 1, i * 5 + 2, i * 5 + 3, i * 5 + 4, i * 5 + 5))
            .collect();
        let sql =
            format!("INSERT INTO touches (touch_id, lead_id, kind, detail, occurred_at) VALUES {}", values.join(", "));
        let mut q = sqlx::query(&sql);
        for t in chunk {
            q = q.bind(&t.touch_id).bind(t.lead_id).bind(t.kind.name()).bind(t.detail).bind(t.at);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// A page of leads, newest capture first, after the keyset `after`.
pub async fn list_leads(
    db: &themodel_runtime::Db,
    status: Option<Status>,
    after: Option<(i64, String)>,
    limit: i64,
) -> anyhow::Result<Vec<Lead>> {
    let (at, id) = after.unwrap_or((i64::MAX, String::new()));
    let rows: Vec<LeadRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM leads WHERE ($1 = '' OR status = $1) \
         AND (captured_at < $2 OR (captured_at = $2 AND ($3 = '' OR lead_id < $3))) \
         ORDER BY captured_at DESC, lead_id DESC LIMIT $4"
    ))
    .bind(status.map_or("", Status::code))
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(db.reader())
    .await?;
    rows.into_iter().map(Lead::try_from).collect()
}
