//! Field sales' tables, and its rows as the writer sees them. The only
//! module with SQL.

use std::collections::HashMap;

use themodel_quality::{Bant, BantRecord, Phase};
use themodel_runtime::cache::{self, Cache};
use themodel_runtime::db::Conn;
use themodel_runtime::db::{self, Db, Script, Table, Value};
use themodel_runtime::owners::{self, Owner, Turn, Turns};
use themodel_runtime::paging::NewestFirst;
use themodel_runtime::{ApiResult, Rows, Store};
use themodel_values::{AccountId, LeadId, Money, OpportunityId, Term};

use crate::domain::{Opportunity, PhaseChange};

/// What a unit asks to have loaded.
#[derive(Debug, Clone)]
pub enum Key {
    Opportunity(OpportunityId),
    /// Where the round-robin rule stands.
    Turn,
}

/// The round-robin rule that gives new opportunities to account executives.
pub const ROUND_ROBIN: &str = "field_sales_opportunities";

/// One change a unit makes.
#[derive(Debug, Clone)]
pub enum Change {
    /// The opportunity as it now is; its history entries past those stored
    /// are appended.
    Opportunity(Box<Opportunity>),
    Turn(Turn),
}

/// A batch's rows.
#[derive(Debug, Default)]
pub struct State {
    opportunities: Rows<OpportunityId, Opportunity>,
    /// History entries stored per opportunity when loaded.
    stored_history: HashMap<OpportunityId, usize>,
    turns: Turns,
}

impl State {
    /// The round-robin turns (asked for with [`Key::Turn`]).
    pub fn turns(&self) -> &Turns {
        &self.turns
    }

    pub fn opportunity(&self, id: &OpportunityId) -> ApiResult<Option<&Opportunity>> {
        self.opportunities.get(id.as_str())
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    opportunity_id: String,
    lead_id: String,
    company: String,
    contact_name: String,
    contact_email: String,
    source: String,
    phase: String,
    bant_budget: i64,
    bant_authority: i64,
    bant_need: i64,
    bant_timeline: i64,
    budget_note: String,
    authority_note: String,
    need_note: String,
    timeline_note: String,
    estimated_currency: Option<String>,
    estimated_units: Option<i64>,
    estimated_nanos: Option<i64>,
    contract_currency: Option<String>,
    contract_units: Option<i64>,
    contract_nanos: Option<i64>,
    term_months: i64,
    account_id: String,
    lost_reason: String,
    quality: i64,
    opened_at: i64,
    closed_at: Option<i64>,
    definition_version: i64,
    owner_id: String,
    team: String,
    handed_over_by: String,
    erased_at: Option<i64>,
}

const COLUMNS: &str = "opportunity_id, lead_id, company, contact_name, contact_email, source, phase, bant_budget, \
    bant_authority, bant_need, bant_timeline, budget_note, authority_note, need_note, timeline_note, \
    estimated_currency, estimated_units, estimated_nanos, contract_currency, contract_units, contract_nanos, \
    term_months, account_id, lost_reason, quality, opened_at, closed_at, definition_version, owner_id, team, \
    handed_over_by, erased_at";

fn phase(name: &str) -> anyhow::Result<Phase> {
    Phase::from_name(name).ok_or_else(|| anyhow::anyhow!("unknown phase {name:?}"))
}

impl Row {
    fn into_opportunity(self, history: Vec<PhaseChange>) -> anyhow::Result<Opportunity> {
        Ok(Opportunity {
            phase: phase(&self.phase)?,
            bant: BantRecord {
                bant: Bant {
                    budget: self.bant_budget != 0,
                    authority: self.bant_authority != 0,
                    need: self.bant_need != 0,
                    timeline: self.bant_timeline != 0,
                },
                budget_note: self.budget_note,
                authority_note: self.authority_note,
                need_note: self.need_note,
                timeline_note: self.timeline_note,
            },
            estimated_value: db::money(self.estimated_currency, self.estimated_units, self.estimated_nanos)?,
            contract_value: db::money(self.contract_currency, self.contract_units, self.contract_nanos)?,
            term: match self.term_months {
                0 => None,
                m => Some(Term::parse(db::to_i32(m, "term_months")?).map_err(|e| anyhow::anyhow!("stored term: {e}"))?),
            },
            account_id: (!self.account_id.is_empty()).then(|| AccountId::from_stored(self.account_id)),
            opportunity_id: OpportunityId::from_stored(self.opportunity_id),
            lead_id: LeadId::from_stored(self.lead_id),
            company: self.company,
            contact_name: self.contact_name,
            contact_email: self.contact_email,
            source: self.source,
            lost_reason: self.lost_reason,
            quality: self.quality != 0,
            opened_at: self.opened_at,
            closed_at: self.closed_at,
            definition_version: self.definition_version,
            history,
            owner: Owner::from_stored(self.owner_id, self.team),
            handed_over_by: self.handed_over_by,
            erased_at: self.erased_at,
        })
    }
}

/// Opportunities by id, with their history, on `conn`.
async fn fetch(conn: &mut sqlx::AnyConnection, db: &Db, ids: &[&str]) -> Result<Vec<Opportunity>, sqlx::Error> {
    let rows: Vec<Row> = db::select_in(
        &mut *conn,
        db,
        &format!("SELECT {COLUMNS} FROM opportunities WHERE opportunity_id IN "),
        "",
        ids,
    )
    .await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let found: Vec<&str> = rows.iter().map(|r| r.opportunity_id.as_str()).collect();
    let changes: Vec<(String, i64, String, String, i64)> = db::select_in(
        &mut *conn,
        db,
        "SELECT opportunity_id, position, from_phase, to_phase, occurred_at FROM phase_changes WHERE opportunity_id IN ",
        " ORDER BY opportunity_id, position",
        &found,
    )
    .await?;
    let mut history: HashMap<String, Vec<PhaseChange>> = HashMap::new();
    for (id, _, from, to, at) in changes {
        let change = phase(&from).and_then(|from| Ok(PhaseChange { from, to: phase(&to)?, at }));
        history.entry(id).or_default().push(change.map_err(|e| sqlx::Error::Decode(e.into()))?);
    }
    rows.into_iter()
        .map(|r| {
            let h = history.remove(&r.opportunity_id).unwrap_or_default();
            r.into_opportunity(h).map_err(|e| sqlx::Error::Decode(e.into()))
        })
        .collect()
}

/// Field sales' store.
#[derive(Debug)]
pub struct FieldSales {
    pub db: Db,
    opportunities: Cache<OpportunityId, Opportunity>,
}

impl FieldSales {
    pub fn new(db: Db) -> Self {
        FieldSales { db, opportunities: Cache::new(cache::ROWS) }
    }
}

/// The opportunities table as written: [`COLUMNS`].
const OPPORTUNITIES: Table = Table {
    name: "opportunities",
    columns: &[
        "opportunity_id",
        "lead_id",
        "company",
        "contact_name",
        "contact_email",
        "source",
        "phase",
        "bant_budget",
        "bant_authority",
        "bant_need",
        "bant_timeline",
        "budget_note",
        "authority_note",
        "need_note",
        "timeline_note",
        "estimated_currency",
        "estimated_units",
        "estimated_nanos",
        "contract_currency",
        "contract_units",
        "contract_nanos",
        "term_months",
        "account_id",
        "lost_reason",
        "quality",
        "opened_at",
        "closed_at",
        "definition_version",
        "owner_id",
        "team",
        "handed_over_by",
        "erased_at",
    ],
    key: 1,
};

fn opportunity_values(o: &Opportunity) -> Vec<Value<'_>> {
    let b = &o.bant;
    let (est, con) = (money_columns(o.estimated_value.as_ref()), money_columns(o.contract_value.as_ref()));
    vec![
        o.opportunity_id.as_str().into(),
        o.lead_id.as_str().into(),
        o.company.as_str().into(),
        o.contact_name.as_str().into(),
        o.contact_email.as_str().into(),
        o.source.as_str().into(),
        o.phase.name().into(),
        i64::from(b.bant.budget).into(),
        i64::from(b.bant.authority).into(),
        i64::from(b.bant.need).into(),
        i64::from(b.bant.timeline).into(),
        b.budget_note.as_str().into(),
        b.authority_note.as_str().into(),
        b.need_note.as_str().into(),
        b.timeline_note.as_str().into(),
        est.0.into(),
        est.1.into(),
        est.2.into(),
        con.0.into(),
        con.1.into(),
        con.2.into(),
        o.term.map_or(0, |t| i64::from(t.months())).into(),
        o.account_id.as_ref().map_or("", AccountId::as_str).into(),
        o.lost_reason.as_str().into(),
        i64::from(o.quality).into(),
        o.opened_at.into(),
        o.closed_at.into(),
        o.definition_version.into(),
        o.owner.as_ref().map_or("", |o| o.id.as_str()).into(),
        o.owner.as_ref().map_or("", Owner::team_str).into(),
        o.handed_over_by.as_str().into(),
        o.erased_at.into(),
    ]
}

fn money_columns(m: Option<&Money>) -> (Option<String>, Option<i64>, Option<i64>) {
    match m {
        Some(m) => (Some(m.currency().to_string()), Some(m.units()), Some(i64::from(m.nanos()))),
        None => (None, None, None),
    }
}

impl Store for FieldSales {
    fn remember(&self, state: State) {
        self.opportunities.remember(state.opportunities);
    }

    fn forget(&self) {
        self.opportunities.forget();
    }

    type Key = Key;
    type State = State;
    type Change = Change;
    type Event = themodel_proto::fieldsales::v1::FieldSalesEvent;

    async fn load(&self, conn: &mut Conn, keys: &[Key], state: &mut State) -> Result<(), sqlx::Error> {
        if keys.iter().any(|k| matches!(k, Key::Turn)) {
            owners::load_turn(conn, &self.db, ROUND_ROBIN, &mut state.turns).await?;
        }
        let ids: Vec<&OpportunityId> =
            keys.iter().filter_map(|k| if let Key::Opportunity(id) = k { Some(id) } else { None }).collect();
        let asked = state.opportunities.missing(ids);
        let missing = self.opportunities.fill(&mut state.opportunities, asked.clone());
        // A cached opportunity's history is all stored, as a loaded one's.
        for id in asked {
            if let Ok(Some(o)) = state.opportunities.get(id.as_str()) {
                state.stored_history.insert(id.clone(), o.history.len());
            }
        }
        let wanted: Vec<&str> = missing.into_iter().map(OpportunityId::as_str).collect();
        let mut found: HashMap<String, Opportunity> =
            fetch(conn, &self.db, &wanted).await?.into_iter().map(|o| (o.opportunity_id.to_string(), o)).collect();
        for id in wanted {
            let o = found.remove(id);
            let id = OpportunityId::from_stored(id.to_owned());
            state.stored_history.insert(id.clone(), o.as_ref().map_or(0, |o| o.history.len()));
            state.opportunities.loaded(id, o);
        }
        Ok(())
    }

    fn apply(&self, state: &mut State, change: Change) {
        match change {
            Change::Opportunity(o) => state.opportunities.put(o.opportunity_id.clone(), *o),
            Change::Turn(t) => state.turns.put(t.rule, t),
        }
    }

    fn flush<'s>(&self, script: &mut Script<'s>, state: &'s State) {
        script.upsert(
            &OPPORTUNITIES,
            state
                .opportunities
                .changes()
                .map(|(before, after)| (before.map(opportunity_values), opportunity_values(after))),
        );
        let mut new_history = Vec::new();
        for o in state.opportunities.changed() {
            let stored = state.stored_history.get(&o.opportunity_id).copied().unwrap_or(0);
            for (position, change) in o.history.iter().enumerate().skip(stored) {
                new_history.push((o.opportunity_id.as_str(), position as i64, change));
            }
        }
        script.insert_rows(
            "INSERT INTO phase_changes (opportunity_id, position, from_phase, to_phase, occurred_at)",
            5,
            "",
            new_history,
            |q, (id, position, c)| q.bind(id).bind(position).bind(c.from.name()).bind(c.to.name()).bind(c.at),
        );
        owners::flush_turns(script, &state.turns);
    }
}

/// Opportunities by id, for the batched reader.
pub async fn opportunities_by_id(
    conn: &mut Conn,
    db: &Db,
    ids: Vec<OpportunityId>,
) -> ApiResult<Vec<(OpportunityId, Opportunity)>> {
    let keys: Vec<&str> = ids.iter().map(OpportunityId::as_str).collect();
    Ok(fetch(conn, db, &keys).await?.into_iter().map(|o| (o.opportunity_id.clone(), o)).collect())
}

/// A page of opportunities, newest first, after the keyset `after`.
pub async fn list(
    db: &Db,
    phase: Option<Phase>,
    owner: Option<&str>,
    after: Option<(i64, String)>,
    limit: i64,
) -> ApiResult<Vec<Opportunity>> {
    let list =
        NewestFirst { select: "SELECT opportunity_id FROM opportunities", time: "opened_at", id: "opportunity_id" };
    let filters: Vec<(&str, &str)> =
        phase.map(|p| ("phase", p.name())).into_iter().chain(owner.map(|o| ("owner_id", o))).collect();
    let ids: Vec<(String,)> = list.page(db, &filters, after, limit).await?;
    let keys: Vec<&str> = ids.iter().map(|(id,)| id.as_str()).collect();
    let mut conn = db.reader().acquire().await?;
    let mut found: HashMap<String, Opportunity> =
        fetch(&mut conn, db, &keys).await?.into_iter().map(|o| (o.opportunity_id.to_string(), o)).collect();
    Ok(ids.into_iter().filter_map(|(id,)| found.remove(&id)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_columns_are_the_read_ones() {
        assert_eq!(COLUMNS, OPPORTUNITIES.columns.join(", "));
    }
}
