//! The kpi service's tables. The only module with SQL.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::Context;
use prost::Message;
use sqlx::{Any, Executor};
use themodel_proto::kpi::v1 as pb;
use themodel_quality::Definition;
use themodel_runtime::Db;
use themodel_runtime::db::{Conn, Script, select_in};
use themodel_runtime::time::Micros;

use crate::domain::{self, Counts, Metric, MoneyKind, Revenue};
use crate::journey::{self, Contribution, Deltas, Dimension, Journey, RECYCLE_REASON, TOTALS};
use crate::retention;
use crate::span::{self, Span};
use crate::velocity::{Stage, Stay, Velocity};
use crate::visitors::{self, Cells};

/// Forgets everything read from the department streams (every count, fact
/// and cursor), so the consumers read each stream again from its start.
/// Definitions and targets, which kpi owns, are kept.
pub async fn reset_counts(db: &Db) -> anyhow::Result<()> {
    let mut tx = db.begin().await?;
    let others = [
        "flow_sums",
        "cohort_sums",
        "money_sums",
        "cohort_counts",
        "journeys",
        "account_leads",
        "account_values",
        "visitor_quarters",
        "visitor_days",
        "visitor_spans",
        "cursors",
    ];
    for table in FACT_TABLES.into_iter().chain(others) {
        sqlx::query(&format!("DELETE FROM {table}")).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
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

/// Moves a source's cursor from `expected` to `new`, in the caller's
/// transaction, before anything of the page is applied: a compare-and-set,
/// so on PostgreSQL a second consumer applying the same page blocks on the
/// row, then finds the cursor moved and gets `false` (a page is never
/// counted twice).
pub async fn move_cursor(
    conn: &mut Conn,
    source: &str,
    expected: Option<&Cursor>,
    new: &Cursor,
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
    Ok(moved == 1)
}

/// The leads whose deals went into `accounts`: (account, lead, opening).
pub async fn account_leads(conn: &mut Conn, db: &Db, accounts: &[&str]) -> anyhow::Result<Vec<(String, String, bool)>> {
    let rows: Vec<(String, String, i64)> = select_in(
        conn,
        db,
        "SELECT account_id, lead_id, opening FROM account_leads WHERE account_id IN ",
        "",
        accounts,
    )
    .await?;
    Ok(rows.into_iter().map(|(a, l, opening)| (a, l, opening != 0)).collect())
}

/// The stored journeys of `leads` (a lead kpi has read nothing about has none).
pub async fn journeys(conn: &mut Conn, db: &Db, leads: &[&str]) -> anyhow::Result<HashMap<String, Journey>> {
    let rows: Vec<(String, Vec<u8>)> =
        select_in(conn, db, "SELECT lead_id, body FROM journeys WHERE lead_id IN ", "", leads).await?;
    rows.into_iter()
        .map(|(lead, body)| {
            let journey = Journey::decode(body.as_slice()).with_context(|| format!("stored journey of {lead}"))?;
            Ok((lead, journey))
        })
        .collect()
}

/// One lead's stored journey, if kpi has read anything of it.
pub async fn journey(db: &Db, lead: &str) -> anyhow::Result<Option<Journey>> {
    let body: Option<Vec<u8>> = sqlx::query_scalar("SELECT body FROM journeys WHERE lead_id = $1")
        .bind(lead)
        .fetch_optional(db.reader())
        .await?;
    body.map(|b| Journey::decode(b.as_slice()).with_context(|| format!("stored journey of {lead}"))).transpose()
}

/// The quarter-hour a visitor was first seen in, as its first moment.
pub async fn first_visit(db: &Db, visitor: &str) -> anyhow::Result<Option<Micros>> {
    let quarter: Option<i64> = sqlx::query_scalar("SELECT MIN(quarter) FROM visitor_quarters WHERE visitor_id = $1")
        .bind(visitor)
        .fetch_one(db.reader())
        .await?;
    Ok(quarter.map(|q| q * span::QUARTER_HOUR))
}

/// Writes a page's changes, in the caller's transaction: the journeys it
/// changed, the accounts the leads joined, and the aggregates' deltas.
pub async fn write_page(
    conn: &mut Conn,
    db: &Db,
    journeys: &BTreeMap<String, Journey>,
    joins: &[(String, String, bool)],
    deltas: &Deltas,
    changes: &BTreeMap<&str, Rewrite<'_>>,
) -> anyhow::Result<()> {
    let mut script = Script::by_statement(db);
    script.insert_rows(
        "INSERT INTO journeys (lead_id, body)",
        2,
        " ON CONFLICT (lead_id) DO UPDATE SET body = excluded.body",
        journeys.iter(),
        |b, (lead, j)| b.bind(lead.as_str()).bind(j.encode_to_vec()),
    );
    script.insert_rows(
        "INSERT INTO account_leads (account_id, lead_id, opening)",
        3,
        " ON CONFLICT (account_id, lead_id) DO NOTHING",
        joins.iter(),
        |b, (account, lead, opening)| b.bind(account.as_str()).bind(lead.as_str()).bind(i64::from(*opening)),
    );
    script.insert_rows(
        "INSERT INTO flow_sums (dim, value, width, start, metric, n)",
        6,
        " ON CONFLICT (dim, width, start, value, metric) DO UPDATE SET n = flow_sums.n + excluded.n",
        deltas.flow(),
        |b, ((dim, value, width, start, metric), n)| {
            b.bind(dim).bind(value).bind(width).bind(start).bind(metric.code()).bind(n)
        },
    );
    script.insert_rows(
        "INSERT INTO cohort_sums (dim, value, width, start, stage, n)",
        6,
        " ON CONFLICT (dim, width, start, value, stage) DO UPDATE SET n = cohort_sums.n + excluded.n",
        deltas.cohort(),
        |b, ((dim, value, width, start, stage), n)| {
            b.bind(dim).bind(value).bind(width).bind(start).bind(stage.code()).bind(n)
        },
    );
    script.insert_rows(
        "INSERT INTO cohort_counts (dim, value, capture_day, stage, reached_day, n)",
        6,
        " ON CONFLICT (dim, value, capture_day, stage, reached_day) DO UPDATE SET n = cohort_counts.n + excluded.n",
        deltas.reached(),
        |b, ((dim, value, captured, stage, reached), n)| {
            b.bind(dim).bind(value).bind(captured).bind(stage.code()).bind(reached).bind(n)
        },
    );
    let money = deltas.money().into_iter().map(|(key, nanos)| Ok((key, limbs(nanos)?)));
    let money = money.collect::<anyhow::Result<Vec<_>>>()?;
    script.insert_rows(
        "INSERT INTO money_sums (dated_by, dim, value, width, start, kind, currency, low, middle, high)",
        10,
        " ON CONFLICT (dated_by, dim, width, start, value, kind, currency) DO UPDATE SET \
         low = money_sums.low + excluded.low, middle = money_sums.middle + excluded.middle, \
         high = money_sums.high + excluded.high",
        money,
        |b, ((how, dim, value, width, start, kind, currency), [low, middle, high])| {
            b.bind(how)
                .bind(dim)
                .bind(value)
                .bind(width)
                .bind(start)
                .bind(kind.code())
                .bind(currency)
                .bind(low)
                .bind(middle)
                .bind(high)
        },
    );
    write_facts(&mut script, db, changes);
    script.run(conn).await?;
    Ok(())
}

/// A lead's contribution as stored before a page, and after it.
pub type Rewrite<'a> = (&'a Contribution, Contribution);

/// Writes what changed of the facts of the leads in `changes`: their
/// events, stages, amounts and stays, each a row `(lead, n)` at its
/// moment, and their dimension values. A row is written only where it
/// differs from the one stored (a lead's facts mostly grow at the end, as
/// its events arrive), and rows past the new end are deleted. Stays and
/// amounts carry the dimension values, so all of them are written when
/// those change.
fn write_facts<'s>(script: &mut Script<'s>, db: &Db, changes: &'s BTreeMap<&str, Rewrite<'_>>) {
    let dims: Vec<&str> = Dimension::all().map(Dimension::code).collect();
    let columns = dims.join(", ");
    // A fact row's columns, then (for stays and amounts) the values'.
    let row = |cols: &[&'static str], values: bool| {
        let values = if values { dims.as_slice() } else { &[] };
        overwrite("lead_id, n", cols.iter().chain(values))
    };
    let mut shrunk: Vec<(&str, &str, usize)> = Vec::new();

    // A lead's first facts come with its first row of values (a lead
    // whose contribution is still a blank journey's has no rows).
    let empty = Journey::default().contribution();
    let values = changes.iter().filter(|(_, (before, after))| **before == empty || before.values != after.values);
    script.insert_rows(
        &format!("INSERT INTO lead_values (lead_id, {columns})"),
        1 + dims.len(),
        &overwrite("lead_id", &dims),
        values,
        |b, (lead, (_, c))| c.values.iter().fold(b.bind(*lead), |b, v| b.bind(v.as_str())),
    );

    let mut flow = Vec::new();
    let mut cohort = Vec::new();
    let mut stays = Vec::new();
    let mut money = Vec::new();
    for (lead, (before, after)) in changes {
        let lead = *lead;
        let (changed, from) = diff(&before.flow, &after.flow, true);
        flow.extend(changed.map(|n| (lead, n, &after.flow[n])));
        shrunk.extend(from.map(|n| ("flow_facts", lead, n)));

        let (old, new) = (cohort_facts(before), cohort_facts(after));
        let (changed, from) = diff(&old, &new, true);
        cohort.extend(changed.map(|n| (lead, n, new[n])));
        shrunk.extend(from.map(|n| ("cohort_facts", lead, n)));

        let (changed, from) = diff(&before.stays, &after.stays, before.values == after.values);
        stays.extend(changed.map(|n| (lead, n, &after.stays[n], &after.values)));
        shrunk.extend(from.map(|n| ("stay_facts", lead, n)));

        let same = before.values == after.values && before.captured_at == after.captured_at;
        let (changed, from) = diff(&before.money, &after.money, same);
        money.extend(changed.map(|n| (lead, n, &after.money[n], after.captured_at, &after.values)));
        shrunk.extend(from.map(|n| ("money_facts", lead, n)));
    }
    let n = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    script.insert_rows(
        "INSERT INTO flow_facts (lead_id, n, metric, at)",
        4,
        &row(&["metric", "at"], false),
        flow,
        |b, (lead, i, (metric, at))| b.bind(lead).bind(n(i)).bind(metric.code()).bind(*at),
    );
    script.insert_rows(
        "INSERT INTO cohort_facts (lead_id, n, cohort, reason, stage, entered_at, reached_at)",
        7,
        &row(&["cohort", "reason", "stage", "entered_at", "reached_at"], false),
        cohort,
        |b, (lead, i, (cohort, reason, metric, entered, reached))| {
            b.bind(lead).bind(n(i)).bind(cohort).bind(reason).bind(metric.code()).bind(entered).bind(reached)
        },
    );
    script.insert_rows(
        &format!(
            "INSERT INTO stay_facts (lead_id, n, stage, started_at, ended_at, due_at, first_contact_at, {columns})"
        ),
        7 + dims.len(),
        &row(&["stage", "started_at", "ended_at", "due_at", "first_contact_at"], true),
        stays,
        |b, (lead, i, stay, values)| {
            let b = b
                .bind(lead)
                .bind(n(i))
                .bind(stay.stage.code())
                .bind(stay.start)
                .bind(stay.end.unwrap_or(NEVER))
                .bind(stay.due.unwrap_or(NEVER))
                .bind(stay.first_contact.unwrap_or(NEVER));
            values.iter().fold(b, |b, v| b.bind(v.as_str()))
        },
    );
    script.insert_rows(
        &format!("INSERT INTO money_facts (lead_id, n, at, kind, currency, units, nanos, captured_at, {columns})"),
        8 + dims.len(),
        &row(&["at", "kind", "currency", "units", "nanos", "captured_at"], true),
        money,
        |b, (lead, i, (kind, at, currency, units, nanos), captured, values)| {
            let b = b
                .bind(lead)
                .bind(n(i))
                .bind(*at)
                .bind(kind.code())
                .bind(currency.as_str())
                .bind(*units)
                .bind(i64::from(*nanos))
                .bind(captured.unwrap_or(NOT_CAPTURED));
            values.iter().fold(b, |b, v| b.bind(v.as_str()))
        },
    );
    for (table, lead, from) in shrunk {
        let sql = format!("DELETE FROM {table} WHERE lead_id = {} AND n >= {}", db.param(1), db.param(2));
        script.push(&sql, |b| b.bind(lead).bind(n(from)));
    }
}

/// An upsert's tail: on a row with the same `key`, overwrite `columns`.
fn overwrite<'c>(key: &str, columns: impl IntoIterator<Item = &'c &'c str>) -> String {
    let set: Vec<String> = columns.into_iter().map(|c| format!("{c} = excluded.{c}")).collect();
    format!(" ON CONFLICT ({key}) DO UPDATE SET {}", set.join(", "))
}

/// A lead's cohort facts: its own cohort's stages, then each recycle's.
fn cohort_facts(c: &Contribution) -> Vec<(&'static str, &str, Metric, Micros, Micros)> {
    let own = c.cohort.iter().map(|&(metric, entered, reached)| (LEAD_COHORT, "", metric, entered, reached));
    let recycles = c
        .reasons
        .iter()
        .map(|(reason, recycled, metric, reached)| (RECYCLE_COHORT, reason.as_str(), *metric, *recycled, *reached));
    own.chain(recycles).collect()
}

/// Which rows of `new` to write over `old`: those that differ (all of them
/// unless `same_context`, when something every row carries changed), and
/// the first row of `old` past `new`'s end, if any.
fn diff<'a, T: PartialEq>(
    old: &'a [T],
    new: &'a [T],
    same_context: bool,
) -> (impl Iterator<Item = usize> + 'a, Option<usize>) {
    let changed = (0..new.len()).filter(move |&i| !same_context || old.get(i) != Some(&new[i]));
    (changed, (old.len() > new.len()).then_some(new.len()))
}

/// Bits of an amount's low and middle limbs in `money_sums`.
const LIMB_BITS: u32 = 31;
const LIMB: i128 = (1 << LIMB_BITS) - 1;

/// `nanos` as the limbs `money_sums` sums: low + middle * 2^31 + high *
/// 2^62, low and middle in [0, 2^31). Every amount is below 2^93 in size,
/// so a page's change of one sum is far inside what the limbs hold.
fn limbs(nanos: i128) -> anyhow::Result<[i64; 3]> {
    let limb = |v: i128| i64::try_from(v).with_context(|| format!("revenue change of {nanos} nanos"));
    Ok([limb(nanos & LIMB)?, limb((nanos >> LIMB_BITS) & LIMB)?, limb(nanos >> (2 * LIMB_BITS))?])
}

/// The amount of summed limbs.
fn from_limbs(low: i64, middle: i64, high: i64) -> i128 {
    i128::from(low) + (i128::from(middle) << LIMB_BITS) + (i128::from(high) << (2 * LIMB_BITS))
}

/// The tables of each lead's facts.
const FACT_TABLES: [&str; 5] = ["lead_values", "flow_facts", "cohort_facts", "stay_facts", "money_facts"];

/// The cohort of a cohort fact: the lead's own, from its capture, or one of
/// its recycles', from the recycle.
const LEAD_COHORT: &str = "lead";
const RECYCLE_COHORT: &str = "recycle";

/// The capture moment of a money fact whose lead's capture is not read
/// yet: before every period, so it is in no cohort.
const NOT_CAPTURED: i64 = -1;

/// How a stay fact stores a moment that has not come (an open stay's end,
/// a first contact not yet made, a deadline not given).
const NEVER: i64 = i64::MAX;

/// What a velocity read needs of the stored stays, per value of `split`
/// (all under "" when `None`): the stays that ended in `span`, those open
/// at the moment `as_of`, and the first contacts made in `span`.
pub async fn velocity(
    db: &Db,
    split: Option<Dimension>,
    span: Span,
    as_of: Micros,
) -> anyhow::Result<BTreeMap<String, Velocity>> {
    let value = carried_value(split);
    let mut conn = db.reader().acquire().await?;
    let mut out: BTreeMap<String, Velocity> = BTreeMap::new();
    let exits: Vec<(String, String, i64, i64)> = sqlx::query_as(&format!(
        "SELECT {value}, stage, started_at, ended_at FROM stay_facts WHERE ended_at >= $1 AND ended_at < $2"
    ))
    .bind(span.start)
    .bind(span.end)
    .fetch_all(&mut *conn)
    .await?;
    for (value, stage, started, ended) in exits {
        if let Some(stage) = Stage::from_code(&stage) {
            out.entry(value).or_default().exit(stage, started, ended);
        }
    }
    let open: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(&format!(
        "SELECT {value}, stage, started_at, due_at, first_contact_at FROM stay_facts \
         WHERE ended_at > $1 AND started_at <= $1"
    ))
    .bind(as_of)
    .fetch_all(&mut *conn)
    .await?;
    let given = |at: i64| (at != NEVER).then_some(at);
    for (value, stage, started, due, contact) in open {
        if let Some(stage) = Stage::from_code(&stage) {
            let stay = Stay { stage, start: started, end: None, due: given(due), first_contact: given(contact) };
            out.entry(value).or_default().open(&stay, as_of);
        }
    }
    let contacts: Vec<(String, i64, i64, i64)> = sqlx::query_as(&format!(
        "SELECT {value}, started_at, due_at, first_contact_at FROM stay_facts \
         WHERE first_contact_at >= $1 AND first_contact_at < $2 AND stage = $3"
    ))
    .bind(span.start)
    .bind(span.end)
    .bind(Stage::InsideSales.code())
    .fetch_all(&mut *conn)
    .await?;
    for (value, started, due, contact) in contacts {
        out.entry(value).or_default().first_contact(started, contact, given(due));
    }
    Ok(out)
}

/// A change of an account's contract value, as the consumer read it.
#[derive(Debug, Clone, Copy)]
pub struct AccountValue<'a> {
    pub account: &'a str,
    pub at: Micros,
    /// The value after the change; `None` when the account churned.
    pub value: Option<&'a domain::Amount>,
}

/// Appends changes to their accounts' histories, in the caller's
/// transaction and in the order given (each gets the next number of its
/// account).
pub async fn add_account_values(conn: &mut Conn, values: &[AccountValue<'_>]) -> anyhow::Result<()> {
    for v in values {
        let (currency, units, nanos) = v.value.map_or(("", 0, 0), |a| (a.currency.as_str(), a.units, a.nanos));
        sqlx::query(
            "INSERT INTO account_values (account_id, n, at, currency, units, nanos) \
             SELECT $1, COALESCE(MAX(n), 0) + 1, $2, $3, $4, $5 FROM account_values WHERE account_id = $1",
        )
        .bind(v.account)
        .bind(v.at)
        .bind(currency)
        .bind(units)
        .bind(i64::from(nanos))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Every account's value history before the moment `end`: per account,
/// its changes in time order (changes at the same moment in the order they
/// were recorded).
pub async fn account_histories(db: &Db, end: Micros) -> anyhow::Result<BTreeMap<String, Vec<retention::Change>>> {
    let rows: Vec<(String, i64, String, i64, i64)> = sqlx::query_as(
        "SELECT account_id, at, currency, units, nanos FROM account_values WHERE at < $1 \
         ORDER BY account_id, at, n",
    )
    .bind(end)
    .fetch_all(db.reader())
    .await?;
    let mut out: BTreeMap<String, Vec<retention::Change>> = BTreeMap::new();
    for (account, at, currency, units, nanos) in rows {
        let value = (!currency.is_empty()).then(|| (currency, domain::total_nanos(units, nanos)));
        out.entry(account).or_default().push(retention::Change { at, value });
    }
    Ok(out)
}

/// The lead whose won deal opened each of `accounts`.
pub async fn opening_leads(db: &Db, accounts: &[&str]) -> anyhow::Result<HashMap<String, String>> {
    let mut conn = db.reader().acquire().await?;
    let rows: Vec<(String, String)> = select_in(
        &mut conn,
        db,
        "SELECT account_id, lead_id FROM account_leads WHERE opening = 1 AND account_id IN ",
        "",
        accounts,
    )
    .await?;
    Ok(rows.into_iter().collect())
}

/// Adds visits (moment, visitor), in the caller's transaction: the
/// visitors' quarter-hours, and their UTC days new to them with the days'
/// index cells. The visitors' known days are read in one lookup, and the
/// page's visits folded into them in order.
pub async fn add_visits(conn: &mut Conn, db: &Db, visits: &[(Micros, String)]) -> anyhow::Result<()> {
    if visits.is_empty() {
        return Ok(());
    }
    let visitors: BTreeSet<&str> = visits.iter().map(|(_, v)| v.as_str()).collect();
    let visitors: Vec<&str> = visitors.into_iter().collect();
    let known: Vec<(String, i64)> =
        select_in(conn, db, "SELECT visitor_id, day FROM visitor_days WHERE visitor_id IN ", "", &visitors).await?;
    let mut days: HashMap<String, BTreeSet<i64>> = HashMap::new();
    for (visitor, day) in known {
        days.entry(visitor).or_default().insert(day);
    }
    let mut cells = Cells::default();
    let mut new_days = Vec::new();
    for (at, visitor) in visits {
        let day = span::utc_day(*at);
        let seen = match days.get_mut(visitor) {
            Some(seen) => seen,
            None => days.entry(visitor.clone()).or_default(),
        };
        if seen.insert(day) {
            let prev = seen.range(..day).next_back().copied();
            let next = seen.range(day + 1..).next().copied();
            cells.first_visit_on(day, prev, next);
            new_days.push((visitor.as_str(), day));
        }
    }
    let quarters: BTreeSet<(&str, i64)> = visits.iter().map(|(at, v)| (v.as_str(), span::quarter_hour(*at))).collect();
    let cells: Vec<(i64, i64, i64)> = cells.changes().collect();
    let mut script = Script::by_statement(db);
    script.insert_rows(
        "INSERT INTO visitor_quarters (visitor_id, quarter)",
        2,
        " ON CONFLICT (visitor_id, quarter) DO NOTHING",
        quarters,
        |b, (visitor, quarter)| b.bind(visitor).bind(quarter),
    );
    script.insert_rows("INSERT INTO visitor_days (visitor_id, day)", 2, "", new_days, |b, (visitor, day)| {
        b.bind(visitor).bind(day)
    });
    script.insert_rows(
        "INSERT INTO visitor_spans (node, day, n)",
        3,
        " ON CONFLICT (node, day) DO UPDATE SET n = visitor_spans.n + excluded.n",
        cells,
        |b, (node, day, n)| b.bind(node).bind(day).bind(n),
    );
    script.run(conn).await?;
    Ok(())
}

/// The value a row of a table that carries the dimension values (stays,
/// amounts) is filed under: its column of `split`, or `''` for the totals.
/// Built from the dimensions' fixed names only, never from input.
fn carried_value(split: Option<Dimension>) -> &'static str {
    split.map_or("''", Dimension::code)
}

/// Which counts a funnel reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// Events in the period.
    Flow,
    /// The leads captured in the period, by the stages they reached before
    /// the moment `until` (`None`: whenever).
    Cohort { until: Option<Micros> },
}

/// What counts are filed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Series {
    /// The totals, under the value "".
    Totals,
    /// Each value of a dimension of the lead.
    Split(Dimension),
    /// The cohorts of the recycles, per reason.
    RecycleReasons,
}

impl Series {
    /// The dimension the sums are stored under.
    fn dim(self) -> &'static str {
        match self {
            Series::Totals => TOTALS,
            Series::Split(d) => d.code(),
            Series::RecycleReasons => RECYCLE_REASON,
        }
    }

    /// The value a fact row `f` is filed under, and the join that gives it.
    /// Built from fixed names only, never from input.
    fn fact_value(self) -> (String, &'static str) {
        match self {
            Series::Totals => ("''".to_owned(), ""),
            Series::Split(d) => (format!("v.{}", d.code()), " JOIN lead_values v ON v.lead_id = f.lead_id"),
            Series::RecycleReasons => ("f.reason".to_owned(), ""),
        }
    }

    /// The cohort facts of the series.
    fn cohort(self) -> &'static str {
        match self {
            Series::RecycleReasons => RECYCLE_COHORT,
            Series::Totals | Series::Split(_) => LEAD_COHORT,
        }
    }
}

/// The funnel's counts over `span`: the totals under the value ""
/// (`split` `None`), or one entry per value of `split`. Visitors are
/// counted in the totals only.
pub async fn counts(
    db: &Db,
    basis: Basis,
    split: Option<Dimension>,
    span: Span,
) -> anyhow::Result<BTreeMap<String, Counts>> {
    let mut conn = db.reader().acquire().await?;
    let series = split.map_or(Series::Totals, Series::Split);
    let mut out = counts_under(&mut conn, basis, series, span).await?;
    if split.is_none() {
        out.entry(String::new()).or_default().visitors = visitors(&mut conn, span).await?;
    }
    Ok(out)
}

/// The query that sums `sums` of `table` over the runs of days a
/// [`span::runs`] gives, grouped by `keys`: `filter` holds the conditions
/// on the parameters before the runs' (`params` of them), and each group of
/// runs binds its width, first and last day ([`bind_runs`]). The text is
/// the same for every period, so it is prepared once.
fn runs_sql(table: &str, filter: &str, params: usize, keys: &str, sums: &[&str]) -> String {
    let arms: Vec<String> = (0..span::RUN_GROUPS)
        .map(|g| {
            let p = params + 3 * g;
            format!(
                "SELECT {keys}, {} FROM {table} WHERE {filter} AND width = ${} AND start >= ${} AND start < ${}",
                sums.join(", "),
                p + 1,
                p + 2,
                p + 3
            )
        })
        .collect();
    let totals: Vec<String> = sums.iter().map(|c| format!("CAST(SUM({c}) AS BIGINT)")).collect();
    format!("SELECT {keys}, {} FROM ({}) AS runs GROUP BY {keys}", totals.join(", "), arms.join(" UNION ALL "))
}

/// Binds the runs of days `[first, last)` to a [`runs_sql`] query (groups
/// it does not need get an empty range).
fn bind_runs<'q, O>(
    mut query: sqlx::query::QueryAs<'q, Any, O, sqlx::any::AnyArguments<'q>>,
    (first, last): (i64, i64),
) -> sqlx::query::QueryAs<'q, Any, O, sqlx::any::AnyArguments<'q>> {
    let groups = span::runs(first, last);
    for g in 0..span::RUN_GROUPS {
        let r = groups.get(g).copied().unwrap_or(span::Runs { width: 1, first: 0, last: 0 });
        query = query.bind(r.width).bind(r.first).bind(r.last);
    }
    query
}

/// The counts of `series` per value: the whole UTC days of `span` from the
/// sums, its partial days from the facts (see [`span`]).
async fn counts_under(
    conn: &mut Conn,
    basis: Basis,
    series: Series,
    span: Span,
) -> anyhow::Result<BTreeMap<String, Counts>> {
    let cover = span.cover();
    let dim = series.dim();
    let (value, join) = series.fact_value();
    let mut rows: Vec<(String, String, i64)> = Vec::new();
    match basis {
        Basis::Flow => {
            if let Some(days) = cover.days {
                let sql = runs_sql("flow_sums", "dim = $1", 1, "value, metric", &["n"]);
                rows.extend(bind_runs(sqlx::query_as(&sql).bind(dim), days).fetch_all(&mut *conn).await?);
            }
            let sql = format!(
                "SELECT {value}, f.metric, CAST(COUNT(*) AS BIGINT) FROM flow_facts f{join} \
                 WHERE f.at >= $1 AND f.at < $2 GROUP BY 1, 2"
            );
            for edge in &cover.edges {
                let edge_rows: Vec<(String, String, i64)> =
                    sqlx::query_as(&sql).bind(edge.start).bind(edge.end).fetch_all(&mut *conn).await?;
                rows.extend(edge_rows);
            }
        }
        Basis::Cohort { until } => {
            let facts = |range: &str| {
                format!(
                    "SELECT {value}, f.stage, CAST(COUNT(*) AS BIGINT) FROM cohort_facts f{join} \
                     WHERE f.cohort = $1 AND {range} GROUP BY 1, 2"
                )
            };
            match (cover.days, until) {
                (None, _) => {}
                // Whenever reached: the runs' sums.
                (Some(days), None) => {
                    let sql = runs_sql("cohort_sums", "dim = $1", 1, "value, stage", &["n"]);
                    rows.extend(bind_runs(sqlx::query_as(&sql).bind(dim), days).fetch_all(&mut *conn).await?);
                }
                (Some((first, last)), Some(until)) => {
                    // Reached on a UTC day before `until`'s: from the counts
                    // by day reached.
                    let until_day = span::utc_day(until);
                    let which = if dim.is_empty() { "dim = $1 AND value = ''" } else { "dim = $1" };
                    let sql = format!(
                        "SELECT value, stage, CAST(SUM(n) AS BIGINT) FROM cohort_counts \
                         WHERE {which} AND capture_day >= $2 AND capture_day < $3 AND reached_day < $4 \
                         GROUP BY value, stage"
                    );
                    let day_rows: Vec<(String, String, i64)> = sqlx::query_as(&sql)
                        .bind(dim)
                        .bind(first)
                        .bind(last)
                        .bind(until_day)
                        .fetch_all(&mut *conn)
                        .await?;
                    rows.extend(day_rows);
                    // Reached earlier on `until`'s own UTC day: from the facts.
                    if until.rem_euclid(span::DAY) != 0 {
                        let sql = facts(
                            "f.reached_at >= $2 AND f.reached_at < $3 AND f.entered_at >= $4 AND f.entered_at < $5",
                        );
                        let day_rows: Vec<(String, String, i64)> = sqlx::query_as(&sql)
                            .bind(series.cohort())
                            .bind(until_day * span::DAY)
                            .bind(until)
                            .bind(first * span::DAY)
                            .bind(last * span::DAY)
                            .fetch_all(&mut *conn)
                            .await?;
                        rows.extend(day_rows);
                    }
                }
            }
            let sql = facts("f.entered_at >= $2 AND f.entered_at < $3 AND f.reached_at < $4");
            for edge in &cover.edges {
                let edge_rows: Vec<(String, String, i64)> = sqlx::query_as(&sql)
                    .bind(series.cohort())
                    .bind(edge.start)
                    .bind(edge.end)
                    .bind(until.unwrap_or(i64::MAX))
                    .fetch_all(&mut *conn)
                    .await?;
                rows.extend(edge_rows);
            }
        }
    }
    let mut out: BTreeMap<String, Counts> = BTreeMap::new();
    for (value, metric, n) in rows {
        if let Some(m) = Metric::from_code(&metric) {
            out.entry(value).or_default().add(m, n);
        }
    }
    // Retracted contributions leave zero rows behind; a value with nothing
    // left is not a row of the split.
    out.retain(|_, c| *c != Counts::default());
    Ok(out)
}

/// The recycles in `span` per reason, and what each was followed by before
/// the moment `until` (`None`: whenever), in the counts' recycle fields.
pub async fn recycle_reasons(db: &Db, span: Span, until: Option<Micros>) -> anyhow::Result<BTreeMap<String, Counts>> {
    let mut conn = db.reader().acquire().await?;
    // Each reason's recycles are a cohort: entered when recycled.
    counts_under(&mut conn, Basis::Cohort { until }, Series::RecycleReasons, span).await
}

/// Revenue in nanos, per dimension value (the totals under "" when `split`
/// is `None`), then per currency: in the flow view, the amounts dated in
/// `span`; in the cohort view, the amounts of the leads captured in `span`,
/// dated before `until` (a lead's money counts no earlier than its capture,
/// as its stages do). The whole UTC days come from the sums, except for a
/// cohort "as of" a day, which is read amount by amount.
pub async fn revenue(
    db: &Db,
    basis: Basis,
    split: Option<Dimension>,
    span: Span,
) -> anyhow::Result<BTreeMap<String, BTreeMap<String, Revenue>>> {
    let mut conn = db.reader().acquire().await?;
    let series = split.map_or(Series::Totals, Series::Split);
    let value = carried_value(split);
    let mut rows = Vec::new();
    let cover = span.cover();
    match basis {
        Basis::Flow | Basis::Cohort { until: None } => {
            let (dated_by, column) = match basis {
                Basis::Flow => (journey::DATED, "at"),
                Basis::Cohort { .. } => (journey::CAPTURED, "captured_at"),
            };
            if let Some(days) = cover.days {
                let sql = runs_sql(
                    "money_sums",
                    "dated_by = $1 AND dim = $2",
                    2,
                    "value, kind, currency",
                    &["low", "middle", "high"],
                );
                let sums: Vec<(String, String, String, i64, i64, i64)> =
                    bind_runs(sqlx::query_as(&sql).bind(dated_by).bind(series.dim()), days)
                        .fetch_all(&mut *conn)
                        .await?;
                rows.extend(
                    sums.into_iter().map(|(v, k, c, low, middle, high)| (v, k, c, from_limbs(low, middle, high))),
                );
            }
            for edge in &cover.edges {
                let filter = format!("{column} >= $1 AND {column} < $2");
                rows.extend(money_facts(&mut conn, value, &filter, &[edge.start, edge.end]).await?);
            }
        }
        Basis::Cohort { until: Some(until) } => {
            let filter = "captured_at >= $1 AND captured_at < $2 AND at < $3 AND captured_at < $3";
            rows.extend(money_facts(&mut conn, value, filter, &[span.start, span.end, until]).await?);
        }
    }
    let mut out: BTreeMap<String, BTreeMap<String, Revenue>> = BTreeMap::new();
    for (value, kind, currency, nanos) in rows {
        let Some(kind) = MoneyKind::from_code(&kind) else { continue };
        out.entry(value).or_default().entry(currency).or_default().add(kind, nanos);
    }
    for by_currency in out.values_mut() {
        by_currency.retain(|_, r| *r != Revenue::default());
    }
    out.retain(|_, by_currency| !by_currency.is_empty());
    Ok(out)
}

/// The amounts of `money_facts` that `filter` selects (its parameters
/// `binds`), summed per `value` (a column or `''`), kind and currency.
async fn money_facts(
    conn: &mut Conn,
    value: &str,
    filter: &str,
    binds: &[i64],
) -> anyhow::Result<Vec<(String, String, String, i128)>> {
    // Summed by the database; the units' sum can only overflow with amounts
    // near the largest Money, and then the amounts are added here, in i128.
    let grouped = format!(
        "SELECT {value}, kind, currency, CAST(SUM(units) AS BIGINT), CAST(SUM(nanos) AS BIGINT) \
         FROM money_facts WHERE {filter} GROUP BY 1, 2, 3"
    );
    let query = binds.iter().fold(sqlx::query_as(&grouped), |q, b| q.bind(*b));
    let rows: Vec<(String, String, String, i64, i64)> = match query.fetch_all(&mut *conn).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::debug!(error = %e, "revenue summed amount by amount");
            let each = format!("SELECT {value}, kind, currency, units, nanos FROM money_facts WHERE {filter}");
            binds.iter().fold(sqlx::query_as(&each), |q, b| q.bind(*b)).fetch_all(&mut *conn).await?
        }
    };
    Ok(rows.into_iter().map(|(v, k, c, units, nanos)| (v, k, c, domain::total_nanos(units, nanos))).collect())
}

/// Distinct visitors in `span`: those of its whole UTC days from the index,
/// plus those seen in its partial days and on none of the whole ones.
async fn visitors(conn: &mut Conn, span: Span) -> anyhow::Result<i64> {
    let cover = span.cover();
    let (first, last) = cover.days.unwrap_or((0, 0));
    let mut n = 0;
    if first < last {
        let nodes = visitors::prefix_nodes(first);
        let placeholders: Vec<String> = (0..nodes.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!(
            "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM visitor_spans \
             WHERE day >= $1 AND day < $2 AND node IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query_scalar::<_, i64>(&sql).bind(first).bind(last);
        for node in nodes {
            query = query.bind(node);
        }
        n += query.fetch_one(&mut *conn).await?;
    }
    if cover.edges.is_empty() {
        return Ok(n);
    }
    // Quarter-hours [start, end) of each edge (its bounds rounded outwards).
    let quarters: Vec<(i64, i64)> =
        cover.edges.iter().map(|e| (span::quarter_hour(e.start), span::quarter_hour(e.end - 1) + 1)).collect();
    let within: Vec<String> =
        (0..quarters.len()).map(|i| format!("(q.quarter >= ${} AND q.quarter < ${})", 2 * i + 3, 2 * i + 4)).collect();
    let sql = format!(
        "SELECT CAST(COUNT(DISTINCT q.visitor_id) AS BIGINT) FROM visitor_quarters q WHERE ({}) \
         AND NOT EXISTS (SELECT 1 FROM visitor_days d WHERE d.visitor_id = q.visitor_id AND d.day >= $1 AND d.day < $2)",
        within.join(" OR ")
    );
    let mut query = sqlx::query_scalar(&sql).bind(first).bind(last);
    for (start, end) in quarters {
        query = query.bind(start).bind(end);
    }
    let edge: i64 = query.fetch_one(&mut *conn).await?;
    Ok(n + edge)
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

/// Published definitions, newest first, below version `before` (all when
/// `None`), at most `limit`.
pub async fn definitions(db: &Db, before: Option<i64>, limit: i64) -> anyhow::Result<Vec<(Definition, Micros)>> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT body, published_at FROM definitions WHERE version < $1 ORDER BY version DESC LIMIT $2")
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(db.reader())
            .await?;
    rows.into_iter().map(|(body, at)| Ok((serde_json::from_str(&body)?, at))).collect()
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

/// A period's target versions, newest first, below `before` (all when
/// `None`), at most `limit`.
pub async fn target_sets(
    db: &Db,
    (start, end): (i64, i64),
    before: Option<i64>,
    limit: i64,
) -> anyhow::Result<Vec<pb::TargetSet>> {
    let rows: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT body FROM targets WHERE start_day = $1 AND end_day = $2 AND version < $3 \
         ORDER BY version DESC LIMIT $4",
    )
    .bind(start)
    .bind(end)
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(db.reader())
    .await?;
    rows.iter().map(|body| pb::TargetSet::decode(body.as_slice()).context("stored target set")).collect()
}

/// What kpi's writer writes for callers: definitions and targets (its
/// aggregates are written by the stream consumers).
#[derive(Debug, Clone)]
pub struct Writes;

/// What a write needs loaded.
#[derive(Debug, Clone)]
pub enum Key {
    /// The latest definition version.
    LatestDefinition,
    /// The latest target version of the period `[start, end)`.
    LatestTargets(i64, i64),
}

/// What a write changes.
#[derive(Debug)]
pub enum Change {
    /// A definition published at a time.
    Definition(Definition, Micros),
    /// A new version of a period's targets.
    Targets((i64, i64), pb::TargetSet),
}

/// The latest versions as a batch sees them, and what it writes.
#[derive(Debug, Default)]
pub struct Latest {
    definition: Option<i64>,
    targets: HashMap<(i64, i64), i64>,
    new: Vec<Change>,
}

impl Latest {
    /// The latest definition version, publications earlier in the batch included.
    pub fn definition(&self) -> themodel_runtime::ApiResult<i64> {
        self.definition.ok_or_else(|| not_loaded("latest definition version"))
    }

    /// The latest target version of a period (0: none yet).
    pub fn targets(&self, period: (i64, i64)) -> themodel_runtime::ApiResult<i64> {
        self.targets.get(&period).copied().ok_or_else(|| not_loaded("latest target version"))
    }
}

fn not_loaded(what: &str) -> themodel_runtime::ApiError {
    themodel_runtime::ApiError::Internal(anyhow::anyhow!("{what} not loaded"))
}

impl themodel_runtime::Store for Writes {
    type Key = Key;
    type State = Latest;
    type Change = Change;
    type Event = pb::KpiEvent;

    async fn load(&self, conn: &mut Conn, keys: &[Key], state: &mut Latest) -> Result<(), sqlx::Error> {
        for key in keys {
            match key {
                Key::LatestDefinition if state.definition.is_none() => {
                    state.definition = Some(latest_version(conn).await?);
                }
                Key::LatestTargets(start, end) if !state.targets.contains_key(&(*start, *end)) => {
                    let latest: Option<i64> =
                        sqlx::query_scalar("SELECT MAX(version) FROM targets WHERE start_day = $1 AND end_day = $2")
                            .bind(*start)
                            .bind(*end)
                            .fetch_one(&mut *conn)
                            .await?;
                    state.targets.insert((*start, *end), latest.unwrap_or(0));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn apply(&self, state: &mut Latest, change: Change) {
        match &change {
            Change::Definition(d, _) => state.definition = Some(d.version),
            Change::Targets(period, set) => {
                state.targets.insert(*period, set.version);
            }
        }
        state.new.push(change);
    }

    fn flush<'s>(&self, script: &mut Script<'s>, state: &'s Latest) {
        let p = |script: &Script<'s>, n| script.param(n);
        for change in &state.new {
            match change {
                Change::Definition(d, at) => {
                    let sql = format!(
                        "INSERT INTO definitions (version, body, published_at) VALUES ({}, {}, {})",
                        p(script, 1),
                        p(script, 2),
                        p(script, 3)
                    );
                    script.push(&sql, |b| b.bind(d.version).bind_ok(serde_json::to_string(d)).bind(*at));
                }
                Change::Targets((start, end), set) => {
                    let sql = format!(
                        "INSERT INTO targets (start_day, end_day, version, body) VALUES ({}, {}, {}, {})",
                        p(script, 1),
                        p(script, 2),
                        p(script, 3),
                        p(script, 4)
                    );
                    script.push(&sql, |b| b.bind(*start).bind(*end).bind(set.version).bind(set.encode_to_vec()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_rows_that_differ_are_written() {
        let rows = |old: &[i64], new: &[i64], same| {
            let (changed, from) = diff(old, new, same);
            (changed.collect::<Vec<_>>(), from)
        };
        // Grown at the end: the new rows.
        assert_eq!(rows(&[1, 2], &[1, 2, 3, 4], true), (vec![2, 3], None));
        // A fact put before others moves them: each moved row.
        assert_eq!(rows(&[2, 3], &[1, 2, 3], true), (vec![0, 1, 2], None));
        // Shrunk: the rows past the new end go.
        assert_eq!(rows(&[1, 2, 3], &[1, 3], true), (vec![1], Some(2)));
        assert_eq!(rows(&[1], &[], true), (vec![], Some(0)));
        // What every row carries changed: all of them.
        assert_eq!(rows(&[1, 2], &[1, 2], false), (vec![0, 1], None));
        assert_eq!(rows(&[], &[], true), (vec![], None));
    }

    #[test]
    fn limbs_sum_to_the_exact_amount() {
        let largest = domain::total_nanos(i64::MAX, 999_999_999);
        let amounts = [0, 1, -1, 999_999_999, -1_000_000_001, largest, -largest, largest - 7, 1 << 62, -(1 << 31)];
        for a in amounts {
            let [low, middle, high] = limbs(a).expect("limbs");
            assert!((0..1 << 31).contains(&low) && (0..1 << 31).contains(&middle), "{a}");
            assert_eq!(from_limbs(low, middle, high), a);
        }
        // Summed limb by limb, as the database sums them, the limbs still
        // give the exact total (which is past what one BIGINT holds).
        let mut sums = [0i64; 3];
        for a in amounts.iter().chain([largest; 1000].iter()) {
            let l = limbs(*a).expect("limbs");
            for (s, l) in sums.iter_mut().zip(l) {
                *s += l;
            }
        }
        let total: i128 = amounts.iter().sum::<i128>() + 1000 * largest;
        assert_eq!(from_limbs(sums[0], sums[1], sums[2]), total);
        assert!(limbs(i128::MAX).is_err());
    }
}
