//! The kpi service's tables. The only module with SQL.

use std::collections::BTreeMap;

use sqlx::{Any, Executor};
use themodel_quality::Definition;
use themodel_runtime::Db;
use themodel_runtime::db::{Conn, Script};
use themodel_runtime::time::Micros;

use crate::domain::{Counts, Metric};
use crate::visitors::{self, Cells};

pub async fn meta(db: &Db, key: &str) -> anyhow::Result<Option<String>> {
    Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1").bind(key).fetch_optional(db.reader()).await?)
}

/// Sets the business time zone. When it changes, the day buckets are wrong,
/// so every aggregate and cursor is reset and the streams are read again.
pub async fn set_time_zone(db: &Db, tz: &str) -> anyhow::Result<bool> {
    let mut tx = db.begin().await?;
    let current: Option<String> =
        sqlx::query_scalar("SELECT value FROM meta WHERE key = 'time_zone'").fetch_optional(&mut *tx).await?;
    if current.as_deref() == Some(tz) {
        return Ok(false);
    }
    for sql in [
        "DELETE FROM daily_counts",
        "DELETE FROM visitor_days",
        "DELETE FROM visitor_spans",
        "DELETE FROM cursors",
        "DELETE FROM meta WHERE key = 'time_zone'",
    ] {
        sqlx::query(sql).execute(&mut *tx).await?;
    }
    sqlx::query("INSERT INTO meta (key, value) VALUES ('time_zone', $1)").bind(tz).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(current.is_some())
}

/// How far a source's stream has been applied: the last seq, and the id of
/// the stream that seq belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    pub applied_seq: i64,
    pub stream_id: String,
}

/// `None` when nothing of `source` has been applied yet.
pub async fn cursor<'c, E: Executor<'c, Database = Any>>(e: E, source: &str) -> anyhow::Result<Option<Cursor>> {
    let row: Option<(i64, String)> = sqlx::query_as("SELECT applied_seq, stream_id FROM cursors WHERE source = $1")
        .bind(source)
        .fetch_optional(e)
        .await?;
    Ok(row.map(|(applied_seq, stream_id)| Cursor { applied_seq, stream_id }))
}

pub async fn cursors(db: &Db) -> anyhow::Result<BTreeMap<String, Cursor>> {
    let rows: Vec<(String, i64, String)> =
        sqlx::query_as("SELECT source, applied_seq, stream_id FROM cursors").fetch_all(db.reader()).await?;
    Ok(rows.into_iter().map(|(source, applied_seq, stream_id)| (source, Cursor { applied_seq, stream_id })).collect())
}

/// Applies one page of a source's events: moves the cursor from `expected`
/// to `new`, then adds the count deltas and the visitor days (with their
/// index cells), all in the caller's transaction.
///
/// The cursor moves first, as a compare-and-set: on PostgreSQL a second
/// consumer applying the same page blocks on the row, then finds the cursor
/// moved and gets `false`, so a page is never counted twice.
pub async fn apply(
    conn: &mut Conn,
    source: &str,
    expected: Option<&Cursor>,
    new: &Cursor,
    counts: &BTreeMap<(i64, Metric), i64>,
    visits: &[(i64, String)],
) -> anyhow::Result<bool> {
    let moved = match expected {
        None => sqlx::query(
            "INSERT INTO cursors (source, applied_seq, stream_id) VALUES ($1, $2, $3) ON CONFLICT (source) DO NOTHING",
        )
        .bind(source)
        .bind(new.applied_seq)
        .bind(&new.stream_id)
        .execute(&mut *conn)
        .await?
        .rows_affected(),
        Some(old) => sqlx::query(
            "UPDATE cursors SET applied_seq = $1, stream_id = $2 \
             WHERE source = $3 AND applied_seq = $4 AND stream_id = $5",
        )
        .bind(new.applied_seq)
        .bind(&new.stream_id)
        .bind(source)
        .bind(old.applied_seq)
        .bind(&old.stream_id)
        .execute(&mut *conn)
        .await?
        .rows_affected(),
    };
    if moved != 1 {
        return Ok(false);
    }
    for ((day, metric), n) in counts {
        sqlx::query(
            "INSERT INTO daily_counts (day, metric, n) VALUES ($1, $2, $3) \
             ON CONFLICT (day, metric) DO UPDATE SET n = daily_counts.n + excluded.n",
        )
        .bind(*day)
        .bind(metric.code())
        .bind(*n)
        .execute(&mut *conn)
        .await?;
    }
    let mut cells = Cells::default();
    for (day, visitor) in visits {
        let new = sqlx::query(
            "INSERT INTO visitor_days (visitor_id, day) VALUES ($1, $2) ON CONFLICT (visitor_id, day) DO NOTHING",
        )
        .bind(visitor)
        .bind(*day)
        .execute(&mut *conn)
        .await?
        .rows_affected()
            == 1;
        if !new {
            continue;
        }
        let prev: Option<i64> = sqlx::query_scalar(
            "SELECT day FROM visitor_days WHERE visitor_id = $1 AND day < $2 ORDER BY day DESC LIMIT 1",
        )
        .bind(visitor)
        .bind(*day)
        .fetch_optional(&mut *conn)
        .await?;
        let next: Option<i64> =
            sqlx::query_scalar("SELECT day FROM visitor_days WHERE visitor_id = $1 AND day > $2 ORDER BY day LIMIT 1")
                .bind(visitor)
                .bind(*day)
                .fetch_optional(&mut *conn)
                .await?;
        cells.first_visit_on(*day, prev, next);
    }
    for (node, day, n) in cells.changes() {
        sqlx::query(
            "INSERT INTO visitor_spans (node, day, n) VALUES ($1, $2, $3) \
             ON CONFLICT (node, day) DO UPDATE SET n = visitor_spans.n + excluded.n",
        )
        .bind(node)
        .bind(day)
        .bind(n)
        .execute(&mut *conn)
        .await?;
    }
    Ok(true)
}

/// Flow counts over business days `[start, end)`.
pub async fn counts(db: &Db, start: i64, end: i64) -> anyhow::Result<Counts> {
    let mut conn = db.reader().acquire().await?;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT metric, CAST(SUM(n) AS BIGINT) FROM daily_counts WHERE day >= $1 AND day < $2 GROUP BY metric",
    )
    .bind(start)
    .bind(end)
    .fetch_all(&mut *conn)
    .await?;
    let nodes = visitors::prefix_nodes(start);
    let placeholders: Vec<String> = (0..nodes.len()).map(|i| format!("${}", i + 3)).collect();
    let sql = format!(
        "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM visitor_spans \
         WHERE day >= $1 AND day < $2 AND node IN ({})",
        placeholders.join(", ")
    );
    let mut query = sqlx::query_scalar(&sql).bind(start).bind(end);
    for node in nodes {
        query = query.bind(node);
    }
    let visitors: i64 = query.fetch_one(&mut *conn).await?;
    let mut c = Counts { visitors, ..Counts::default() };
    for (metric, n) in rows {
        if let Some(m) = Metric::from_code(&metric) {
            c.add(m, n);
        }
    }
    Ok(c)
}

/// A definition version (0: the latest) and when it was published.
pub async fn definition(db: &Db, version: i64) -> anyhow::Result<Option<(Definition, Micros)>> {
    let row: Option<(String, i64)> = if version == 0 {
        sqlx::query_as("SELECT body, published_at FROM definitions ORDER BY version DESC LIMIT 1")
            .fetch_optional(db.reader())
            .await?
    } else {
        sqlx::query_as("SELECT body, published_at FROM definitions WHERE version = $1")
            .bind(version)
            .fetch_optional(db.reader())
            .await?
    };
    row.map(|(body, at)| Ok((serde_json::from_str(&body)?, at))).transpose()
}

/// The latest published version (0 when none is).
pub async fn latest_version(conn: &mut Conn) -> Result<i64, sqlx::Error> {
    let latest: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM definitions").fetch_one(&mut *conn).await?;
    Ok(latest.unwrap_or(0))
}

/// Stores `d` (its version set) as published at `at`.
pub async fn insert_definition(conn: &mut Conn, d: &Definition, at: Micros) -> Result<(), sqlx::Error> {
    let body = serde_json::to_string(d).map_err(|e| sqlx::Error::Encode(e.into()))?;
    sqlx::query("INSERT INTO definitions (version, body, published_at) VALUES ($1, $2, $3)")
        .bind(d.version)
        .bind(body)
        .bind(at)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Makes the built-in definition version 1 on a fresh database.
pub async fn seed_definition(db: &Db, at: Micros) -> anyhow::Result<()> {
    let mut tx = db.begin().await?;
    let any: Option<i64> =
        sqlx::query_scalar("SELECT version FROM definitions LIMIT 1").fetch_optional(&mut *tx).await?;
    if any.is_none() {
        insert_definition(&mut tx, &Definition::default(), at).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The definitions the writer publishes: the one kind of write kpi takes
/// from callers (its aggregates are written by the stream consumers).
#[derive(Debug, Clone)]
pub struct Definitions;

/// What a publication needs: the latest version.
#[derive(Debug, Clone)]
pub struct Latest;

/// The latest version as a batch sees it, and what it publishes.
#[derive(Debug, Default)]
pub struct Published {
    latest: Option<i64>,
    new: Vec<(Definition, Micros)>,
}

impl Published {
    /// The latest version, publications earlier in the batch included.
    pub fn latest(&self) -> themodel_runtime::ApiResult<i64> {
        self.latest.ok_or_else(|| themodel_runtime::ApiError::Internal(anyhow::anyhow!("latest version not loaded")))
    }
}

impl themodel_runtime::Store for Definitions {
    type Key = Latest;
    type State = Published;
    type Change = (Definition, Micros);
    type Event = themodel_proto::kpi::v1::KpiEvent;

    async fn load(&self, conn: &mut Conn, keys: &[Latest], state: &mut Published) -> Result<(), sqlx::Error> {
        if !keys.is_empty() && state.latest.is_none() {
            state.latest = Some(latest_version(conn).await?);
        }
        Ok(())
    }

    fn apply(&self, state: &mut Published, (d, at): (Definition, Micros)) {
        state.latest = Some(d.version);
        state.new.push((d, at));
    }

    fn flush<'s>(&self, script: &mut Script<'s>, state: &'s Published) {
        for (d, at) in &state.new {
            let sql = format!(
                "INSERT INTO definitions (version, body, published_at) VALUES ({}, {}, {})",
                script.param(1),
                script.param(2),
                script.param(3)
            );
            script.push(&sql, |b| b.bind(d.version).bind_ok(serde_json::to_string(d)).bind(*at));
        }
    }
}
