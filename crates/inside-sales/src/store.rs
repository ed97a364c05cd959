//! Inside sales' tables, and its rows as the writer sees them. The only
//! module with SQL.

use std::collections::HashMap;

use themodel_quality::{Bant, BantRecord};
use themodel_runtime::cache::{self, Cache};
use themodel_runtime::db::Conn;
use themodel_runtime::db::{self, Db, Script, Table, Value};
use themodel_runtime::owners::{self, Owner, Turn, Turns};
use themodel_runtime::time::Micros;
use themodel_runtime::{ApiResult, Rows, Store};
use themodel_values::{Code, Email, LeadId, OpportunityId};

use crate::domain::{QueueItem, Status};

/// What a unit asks to have loaded.
#[derive(Debug, Clone)]
pub enum Key {
    Item(LeadId),
    /// Whether an opportunity id is taken.
    Conversion(OpportunityId),
    /// Where the round-robin rule stands.
    Turn,
}

/// The round-robin rule that gives new leads to reps.
pub const ROUND_ROBIN: &str = "inside_sales_leads";

/// An activity row.
#[derive(Debug, Clone)]
pub struct ActivityRow {
    pub activity_id: String,
    pub lead_id: LeadId,
    pub kind: &'static str,
    pub outcome: &'static str,
    pub note: String,
    pub at: Micros,
}

/// A conversion row.
#[derive(Debug, Clone)]
pub struct ConversionRow {
    pub opportunity_id: OpportunityId,
    pub lead_id: LeadId,
    pub quality: bool,
    pub at: Micros,
}

/// One change a unit makes.
#[derive(Debug, Clone)]
pub enum Change {
    Item(Box<QueueItem>),
    Activity(ActivityRow),
    Conversion(ConversionRow),
    Turn(Turn),
    /// The notes of the lead's activities are cleared (its person was
    /// erased).
    EraseActivityNotes(LeadId),
}

/// A batch's rows.
#[derive(Debug, Default)]
pub struct State {
    items: Rows<LeadId, QueueItem>,
    conversions: Rows<OpportunityId, LeadId>,
    activities: Vec<ActivityRow>,
    new_conversions: Vec<ConversionRow>,
    turns: Turns,
    erased_activity_notes: Vec<LeadId>,
}

impl State {
    pub fn item(&self, id: &LeadId) -> ApiResult<Option<&QueueItem>> {
        self.items.get(id.as_str())
    }

    /// The round-robin turns (asked for with [`Key::Turn`]).
    pub fn turns(&self) -> &Turns {
        &self.turns
    }

    /// The lead an opportunity id was given to, if it is taken.
    pub fn conversion(&self, id: &OpportunityId) -> ApiResult<Option<&LeadId>> {
        self.conversions.get(id.as_str())
    }
}

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
    campaign: String,
    channel: String,
    score: i64,
    status: String,
    handed_over_at: i64,
    follow_up_due_at: i64,
    first_contact_at: Option<i64>,
    bant_recorded: i64,
    bant_budget: i64,
    bant_authority: i64,
    bant_need: i64,
    bant_timeline: i64,
    budget_note: String,
    authority_note: String,
    need_note: String,
    timeline_note: String,
    activity_count: i64,
    opportunity_id: String,
    recycle_reason: String,
    disqualify_reason: String,
    definition_version: i64,
    owner_id: String,
    team: String,
    erased_at: Option<i64>,
}

const COLUMNS: &str = "lead_id, email, name, company, company_size, industry, job_title, source, campaign, channel, \
    score, status, handed_over_at, follow_up_due_at, first_contact_at, bant_recorded, bant_budget, bant_authority, \
    bant_need, bant_timeline, budget_note, authority_note, need_note, timeline_note, activity_count, opportunity_id, \
    recycle_reason, disqualify_reason, definition_version, owner_id, team, erased_at";

/// The queue table as written: [`COLUMNS`].
const QUEUE: Table = Table {
    name: "queue",
    columns: &[
        "lead_id",
        "email",
        "name",
        "company",
        "company_size",
        "industry",
        "job_title",
        "source",
        "campaign",
        "channel",
        "score",
        "status",
        "handed_over_at",
        "follow_up_due_at",
        "first_contact_at",
        "bant_recorded",
        "bant_budget",
        "bant_authority",
        "bant_need",
        "bant_timeline",
        "budget_note",
        "authority_note",
        "need_note",
        "timeline_note",
        "activity_count",
        "opportunity_id",
        "recycle_reason",
        "disqualify_reason",
        "definition_version",
        "owner_id",
        "team",
        "erased_at",
    ],
    key: 1,
};

fn item_values(i: &QueueItem) -> Vec<Value<'_>> {
    let bant = i.bant.as_ref();
    let flag = |f: fn(&BantRecord) -> bool| Value::from(i64::from(bant.is_some_and(f)));
    let note = |f: fn(&BantRecord) -> &str| Value::from(bant.map_or("", f));
    vec![
        i.lead_id.as_str().into(),
        i.email.as_str().into(),
        i.name.as_str().into(),
        i.company.as_str().into(),
        i.company_size.into(),
        i.industry.as_str().into(),
        i.job_title.as_str().into(),
        i.source.as_str().into(),
        i.campaign.as_str().into(),
        i.channel.as_ref().map_or("", Code::as_str).into(),
        i.score.into(),
        i.status.code().into(),
        i.handed_over_at.into(),
        i.follow_up_due_at.into(),
        i.first_contact_at.into(),
        i64::from(bant.is_some()).into(),
        flag(|b| b.bant.budget),
        flag(|b| b.bant.authority),
        flag(|b| b.bant.need),
        flag(|b| b.bant.timeline),
        note(|b| &b.budget_note),
        note(|b| &b.authority_note),
        note(|b| &b.need_note),
        note(|b| &b.timeline_note),
        i.activity_count.into(),
        i.opportunity_id.as_ref().map_or("", OpportunityId::as_str).into(),
        i.recycle_reason.as_str().into(),
        i.disqualify_reason.as_str().into(),
        i.definition_version.into(),
        i.owner.as_ref().map_or("", |o| o.id.as_str()).into(),
        i.owner.as_ref().map_or("", Owner::team_str).into(),
        i.erased_at.into(),
    ]
}

impl TryFrom<Row> for QueueItem {
    type Error = anyhow::Error;

    fn try_from(r: Row) -> anyhow::Result<QueueItem> {
        let bant = (r.bant_recorded != 0).then_some(BantRecord {
            bant: Bant {
                budget: r.bant_budget != 0,
                authority: r.bant_authority != 0,
                need: r.bant_need != 0,
                timeline: r.bant_timeline != 0,
            },
            budget_note: r.budget_note,
            authority_note: r.authority_note,
            need_note: r.need_note,
            timeline_note: r.timeline_note,
        });
        Ok(QueueItem {
            status: Status::from_code(&r.status)
                .ok_or_else(|| anyhow::anyhow!("unknown queue status {:?}", r.status))?,
            lead_id: LeadId::from_stored(r.lead_id),
            email: Email::from_stored(r.email),
            name: r.name,
            company: r.company,
            company_size: db::to_i32(r.company_size, "company_size")?,
            industry: r.industry,
            job_title: r.job_title,
            source: Code::from_stored(r.source),
            campaign: r.campaign,
            channel: (!r.channel.is_empty()).then(|| Code::from_stored(r.channel)),
            score: db::to_i32(r.score, "score")?,
            handed_over_at: r.handed_over_at,
            follow_up_due_at: r.follow_up_due_at,
            first_contact_at: r.first_contact_at,
            bant,
            activity_count: db::to_i32(r.activity_count, "activity_count")?,
            opportunity_id: (!r.opportunity_id.is_empty()).then(|| OpportunityId::from_stored(r.opportunity_id)),
            recycle_reason: r.recycle_reason,
            disqualify_reason: r.disqualify_reason,
            definition_version: r.definition_version,
            owner: Owner::from_stored(r.owner_id, r.team),
            erased_at: r.erased_at,
        })
    }
}

fn items(rows: Vec<Row>) -> Result<Vec<QueueItem>, sqlx::Error> {
    rows.into_iter().map(|r| QueueItem::try_from(r).map_err(|e| sqlx::Error::Decode(e.into()))).collect()
}

/// Inside sales' store.
#[derive(Debug)]
pub struct InsideSales {
    pub db: Db,
    items: Cache<LeadId, QueueItem>,
}

impl InsideSales {
    pub fn new(db: Db) -> Self {
        InsideSales { db, items: Cache::new(cache::ROWS) }
    }
}

impl Store for InsideSales {
    fn remember(&self, state: State) {
        self.items.remember(state.items);
    }

    fn forget(&self) {
        self.items.forget();
    }

    type Key = Key;
    type State = State;
    type Change = Change;
    type Event = themodel_proto::insidesales::v1::InsideSalesEvent;

    async fn load(&self, conn: &mut Conn, keys: &[Key], state: &mut State) -> Result<(), sqlx::Error> {
        let db = &self.db;
        let leads: Vec<&LeadId> =
            keys.iter().filter_map(|k| if let Key::Item(id) = k { Some(id) } else { None }).collect();
        let missing = state.items.missing(leads);
        let wanted: Vec<&str> = self.items.fill(&mut state.items, missing).into_iter().map(LeadId::as_str).collect();
        let mut found: HashMap<String, QueueItem> =
            fetch(conn, db, &wanted).await?.into_iter().map(|i| (i.lead_id.to_string(), i)).collect();
        for id in wanted {
            state.items.loaded(LeadId::from_stored(id.to_owned()), found.remove(id));
        }
        let opps: Vec<&OpportunityId> =
            keys.iter().filter_map(|k| if let Key::Conversion(id) = k { Some(id) } else { None }).collect();
        let wanted: Vec<&str> = state.conversions.missing(opps).into_iter().map(OpportunityId::as_str).collect();
        let rows: Vec<(String, String)> = db::select_in(
            conn,
            db,
            "SELECT opportunity_id, lead_id FROM conversions WHERE opportunity_id IN ",
            "",
            &wanted,
        )
        .await?;
        let mut found: HashMap<String, String> = rows.into_iter().collect();
        for id in wanted {
            state
                .conversions
                .loaded(OpportunityId::from_stored(id.to_owned()), found.remove(id).map(LeadId::from_stored));
        }
        if keys.iter().any(|k| matches!(k, Key::Turn)) {
            owners::load_turn(conn, db, ROUND_ROBIN, &mut state.turns).await?;
        }
        Ok(())
    }

    fn apply(&self, state: &mut State, change: Change) {
        match change {
            Change::Item(i) => state.items.put(i.lead_id.clone(), *i),
            Change::Activity(a) => state.activities.push(a),
            Change::Conversion(c) => {
                state.conversions.put(c.opportunity_id.clone(), c.lead_id.clone());
                state.new_conversions.push(c);
            }
            Change::Turn(t) => state.turns.put(t.rule, t),
            Change::EraseActivityNotes(id) => state.erased_activity_notes.push(id),
        }
    }

    fn flush<'s>(&self, script: &mut Script<'s>, state: &'s State) {
        script
            .upsert(&QUEUE, state.items.changes().map(|(before, after)| (before.map(item_values), item_values(after))));
        script.insert_rows(
            "INSERT INTO activities (activity_id, lead_id, kind, outcome, note, occurred_at)",
            6,
            "",
            &state.activities,
            |q, a| {
                q.bind(&a.activity_id).bind(a.lead_id.as_str()).bind(a.kind).bind(a.outcome).bind(&a.note).bind(a.at)
            },
        );
        script.insert_rows(
            "INSERT INTO conversions (opportunity_id, lead_id, quality, converted_at)",
            4,
            "",
            &state.new_conversions,
            |q, c| q.bind(c.opportunity_id.as_str()).bind(c.lead_id.as_str()).bind(i64::from(c.quality)).bind(c.at),
        );
        owners::flush_turns(script, &state.turns);
        // After the inserts: a note recorded earlier in the batch goes too.
        for id in &state.erased_activity_notes {
            script.push(&format!("UPDATE activities SET note = '' WHERE lead_id = {}", self.db.param(1)), |b| {
                b.bind(id.as_str())
            });
        }
    }
}

/// The opportunities a lead became (every conversion), on the read pool.
pub async fn conversions_of(db: &Db, lead: &LeadId) -> Result<Vec<OpportunityId>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT opportunity_id FROM conversions WHERE lead_id = $1")
        .bind(lead.as_str())
        .fetch_all(db.reader())
        .await?;
    Ok(rows.into_iter().map(|(id,)| OpportunityId::from_stored(id)).collect())
}

/// Queue items by lead id, for the batched reader.
pub async fn items_by_id(
    conn: &mut Conn,
    db: &Db,
    ids: Vec<LeadId>,
) -> themodel_runtime::ApiResult<Vec<(LeadId, QueueItem)>> {
    let keys: Vec<&str> = ids.iter().map(LeadId::as_str).collect();
    Ok(fetch(conn, db, &keys).await?.into_iter().map(|i| (i.lead_id.clone(), i)).collect())
}

/// Queue items by lead id on `conn`: the writer's load and the batched reader's.
async fn fetch(conn: &mut Conn, db: &Db, ids: &[&str]) -> Result<Vec<QueueItem>, sqlx::Error> {
    items(db::select_in(conn, db, &format!("SELECT {COLUMNS} FROM queue WHERE lead_id IN "), "", ids).await?)
}

/// The call list: by follow-up deadline, then highest score, then id; one
/// rep's when `owner` is given. `after` is the (due, score, lead_id) of the
/// previous page's last item.
pub async fn call_list(
    db: &Db,
    status: Status,
    owner: Option<&str>,
    after: Option<(i64, i64, String)>,
    limit: i64,
) -> themodel_runtime::ApiResult<Vec<QueueItem>> {
    let (due, score, id) = after.unwrap_or((i64::MIN, i64::MAX, String::new()));
    let rep = if owner.is_some() { "owner_id = $6 AND " } else { "" };
    let sql = format!(
        "SELECT {COLUMNS} FROM queue WHERE {rep}status = $1 AND \
         (follow_up_due_at > $2 OR (follow_up_due_at = $2 AND (score < $3 OR (score = $3 AND lead_id > $4)))) \
         ORDER BY follow_up_due_at, score DESC, lead_id LIMIT $5"
    );
    let query = sqlx::query_as::<_, Row>(&sql).bind(status.code()).bind(due).bind(score).bind(id).bind(limit);
    let query = match owner {
        Some(owner) => query.bind(owner),
        None => query,
    };
    let rows = query.fetch_all(db.reader()).await?;
    Ok(items(rows)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_columns_are_the_read_ones() {
        assert_eq!(COLUMNS, QUEUE.columns.join(", "));
    }
}
