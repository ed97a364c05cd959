//! Marketing's tables, and its rows as the writer sees them. The only module
//! with SQL.

use std::collections::{BTreeMap, HashMap, HashSet};

use themodel_quality::{Definition, LeadClass, LeadFacts, Score, TouchKind};
use themodel_runtime::cache::{self, Cache};
use themodel_runtime::db::Conn;
use themodel_runtime::db::{self, Db, Script, Table, Value};
use themodel_runtime::paging::NewestFirst;
use themodel_runtime::time::Micros;
use themodel_runtime::{ApiError, ApiResult, Rows, Store};
use themodel_values::{Code, Department, Email, LeadId, VisitorId};

use crate::domain::{Lead, Status, Visitor, relationship_code, relationship_from_code};

/// What a unit asks to have loaded.
#[derive(Debug, Clone)]
pub enum Key {
    Lead(LeadId),
    /// The lead with this e-mail address (by `Email::key`), if any.
    Email(String),
    /// The visitor, and the lead it identified as.
    Visitor(VisitorId),
    /// Whether a touch with this pipeline event id was recorded.
    TouchEvent(String),
    /// Whether a visit with this pipeline event id was recorded.
    VisitEvent(String),
}

/// A visit row.
#[derive(Debug, Clone)]
pub struct VisitRow {
    pub visit_id: String,
    pub visitor_id: VisitorId,
    pub page: String,
    pub product_page: bool,
    pub channel: Option<Code>,
    pub campaign: String,
    pub at: Micros,
    pub lead_id: Option<LeadId>,
    pub event_id: Option<String>,
}

/// A touch row.
#[derive(Debug, Clone)]
pub struct TouchRow {
    pub lead_id: LeadId,
    pub kind: TouchKind,
    pub detail: String,
    pub at: Micros,
    pub event_id: Option<String>,
}

/// One change a unit makes.
#[derive(Debug, Clone)]
pub enum Change {
    Lead(Box<Lead>),
    Visitor(Visitor),
    Visit(VisitRow),
    Touch(TouchRow),
}

/// A batch's rows.
#[derive(Debug, Default)]
pub struct State {
    leads: Rows<LeadId, Lead>,
    by_email: HashMap<String, Option<LeadId>>,
    visitors: Rows<VisitorId, Visitor>,
    touch_events: HashSet<String>,
    visit_events: HashSet<String>,
    loaded_touch_events: HashSet<String>,
    loaded_visit_events: HashSet<String>,
    visits: Vec<VisitRow>,
    touches: Vec<TouchRow>,
}

impl State {
    /// The lead `id`, if it exists.
    pub fn lead(&self, id: &LeadId) -> ApiResult<Option<&Lead>> {
        self.leads.get(id.as_str())
    }

    /// The lead with this address, if any.
    pub fn lead_by_email(&self, email: &Email) -> ApiResult<Option<&Lead>> {
        self.lead_by_email_key(&email.key())
    }

    /// The lead whose address has this [`Email::key`], if any.
    pub fn lead_by_email_key(&self, key: &str) -> ApiResult<Option<&Lead>> {
        match self.by_email.get(key) {
            None => Err(ApiError::Internal(anyhow::anyhow!("a unit read e-mail {key} it did not ask for"))),
            Some(None) => Ok(None),
            Some(Some(id)) => self.lead(id),
        }
    }

    /// The visitor `id` (a new one if never seen).
    pub fn visitor(&self, id: &VisitorId) -> ApiResult<Visitor> {
        Ok(self.visitors.get(id.as_str())?.cloned().unwrap_or_else(|| Visitor::new(id.clone())))
    }

    /// Whether a touch with this pipeline event id was recorded.
    pub fn touch_seen(&self, event_id: &str) -> ApiResult<bool> {
        seen(&self.loaded_touch_events, &self.touch_events, event_id)
    }

    /// Whether a visit with this pipeline event id was recorded.
    pub fn visit_seen(&self, event_id: &str) -> ApiResult<bool> {
        seen(&self.loaded_visit_events, &self.visit_events, event_id)
    }
}

fn seen(loaded: &HashSet<String>, recorded: &HashSet<String>, id: &str) -> ApiResult<bool> {
    if !loaded.contains(id) {
        return Err(ApiError::Internal(anyhow::anyhow!("a unit read event id {id} it did not ask for")));
    }
    Ok(recorded.contains(id))
}

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
    channel: String,
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
    recycled_by: String,
    captured_at: i64,
    handed_over_at: Option<i64>,
    recycled_at: Option<i64>,
    note: String,
    erased_at: Option<i64>,
}

const COLUMNS: &str = "lead_id, email, name, company, company_size, industry, job_title, source, campaign, channel, \
    visitor_id, relationship, status, exclusion_reason, attribute_score, behaviour_score, scored_touches, \
    touch_count, definition_version, recycle_reason, recycled_by, captured_at, handed_over_at, recycled_at, note, erased_at";

/// The leads table as written: [`COLUMNS`], then the e-mail key.
const LEADS: Table = Table {
    name: "leads",
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
        "visitor_id",
        "relationship",
        "status",
        "exclusion_reason",
        "attribute_score",
        "behaviour_score",
        "scored_touches",
        "touch_count",
        "definition_version",
        "recycle_reason",
        "recycled_by",
        "captured_at",
        "handed_over_at",
        "recycled_at",
        "note",
        "erased_at",
        "email_key",
    ],
    key: 1,
};

fn lead_values(l: &Lead) -> Vec<Value<'_>> {
    vec![
        l.lead_id.as_str().into(),
        l.email.as_str().into(),
        l.name.as_str().into(),
        l.company.as_str().into(),
        l.company_size.into(),
        l.industry.as_str().into(),
        l.job_title.as_str().into(),
        l.source.as_str().into(),
        l.campaign.as_str().into(),
        l.channel.as_ref().map_or("", Code::as_str).into(),
        l.visitor_id.as_ref().map_or("", VisitorId::as_str).into(),
        relationship_code(l.relationship).into(),
        l.status.code().into(),
        l.exclusion_reason.as_str().into(),
        l.score.attribute.into(),
        l.score.behaviour.into(),
        touches_to_text(&l.scored_touches).into(),
        l.touch_count.into(),
        l.definition_version.into(),
        l.recycle_reason.as_str().into(),
        l.recycled_by.map_or("", Department::code).into(),
        l.captured_at.into(),
        l.handed_over_at.into(),
        l.recycled_at.into(),
        l.note.as_str().into(),
        l.erased_at.into(),
        l.email_key().into(),
    ]
}

const VISITORS: Table = Table {
    name: "visitors",
    columns: &["visitor_id", "lead_id", "lead_captured_at", "page_views", "product_views"],
    key: 1,
};

fn visitor_values(v: &Visitor) -> Vec<Value<'_>> {
    vec![
        v.visitor_id.as_str().into(),
        v.lead.as_ref().map_or("", |(l, _)| l.as_str()).into(),
        v.lead.as_ref().map_or(0, |(_, at)| *at).into(),
        v.page_views.into(),
        v.product_views.into(),
    ]
}

fn optional<T>(s: String, make: impl FnOnce(String) -> T) -> Option<T> {
    (!s.is_empty()).then(|| make(s))
}

/// `KIND=n,KIND=n`: the touch counts behind a behaviour score.
fn touches_to_text(t: &BTreeMap<TouchKind, i32>) -> String {
    t.iter().map(|(k, n)| format!("{}={n}", k.name())).collect::<Vec<_>>().join(",")
}

fn touches_from_text(s: &str) -> anyhow::Result<BTreeMap<TouchKind, i32>> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, n) = p.split_once('=').ok_or_else(|| anyhow::anyhow!("bad touch count {p:?}"))?;
            let kind = TouchKind::from_name(k).ok_or_else(|| anyhow::anyhow!("unknown touch kind {k:?}"))?;
            Ok((kind, n.parse()?))
        })
        .collect()
}

impl TryFrom<LeadRow> for Lead {
    type Error = anyhow::Error;

    fn try_from(r: LeadRow) -> anyhow::Result<Lead> {
        Ok(Lead {
            status: Status::from_code(&r.status)
                .ok_or_else(|| anyhow::anyhow!("unknown lead status {:?}", r.status))?,
            relationship: relationship_from_code(&r.relationship)
                .ok_or_else(|| anyhow::anyhow!("unknown relationship {:?}", r.relationship))?,
            scored_touches: touches_from_text(&r.scored_touches)?,
            recycled_by: match r.recycled_by.as_str() {
                "" => None,
                code => {
                    Some(Department::from_code(code).ok_or_else(|| anyhow::anyhow!("unknown department {code:?}"))?)
                }
            },
            lead_id: LeadId::from_stored(r.lead_id),
            email: Email::from_stored(r.email),
            name: r.name,
            company: r.company,
            company_size: db::to_i32(r.company_size, "company_size")?,
            industry: r.industry,
            job_title: r.job_title,
            source: Code::from_stored(r.source),
            campaign: r.campaign,
            channel: optional(r.channel, Code::from_stored),
            visitor_id: optional(r.visitor_id, VisitorId::from_stored),
            exclusion_reason: r.exclusion_reason,
            score: Score {
                attribute: db::to_i32(r.attribute_score, "attribute_score")?,
                behaviour: db::to_i32(r.behaviour_score, "behaviour_score")?,
            },
            touch_count: db::to_i32(r.touch_count, "touch_count")?,
            definition_version: r.definition_version,
            recycle_reason: r.recycle_reason,
            captured_at: r.captured_at,
            handed_over_at: r.handed_over_at,
            recycled_at: r.recycled_at,
            note: r.note,
            erased_at: r.erased_at,
        })
    }
}

fn leads(rows: Vec<LeadRow>) -> Result<Vec<Lead>, sqlx::Error> {
    rows.into_iter().map(|r| Lead::try_from(r).map_err(|e| sqlx::Error::Decode(e.into()))).collect()
}

/// Marketing's store.
#[derive(Debug)]
pub struct Marketing {
    pub db: Db,
    leads: Cache<LeadId, Lead>,
    visitors: Cache<VisitorId, Visitor>,
}

impl Marketing {
    pub fn new(db: Db) -> Self {
        Marketing { db, leads: Cache::new(cache::ROWS), visitors: Cache::new(cache::ROWS) }
    }
}

impl Store for Marketing {
    fn remember(&self, state: State) {
        self.leads.remember(state.leads);
        self.visitors.remember(state.visitors);
    }

    fn forget(&self) {
        self.leads.forget();
        self.visitors.forget();
    }

    type Key = Key;
    type State = State;
    type Change = Change;
    type Event = themodel_proto::marketing::v1::MarketingEvent;

    async fn load(&self, conn: &mut Conn, keys: &[Key], state: &mut State) -> Result<(), sqlx::Error> {
        let db = &self.db;
        let mut lead_ids: Vec<LeadId> = Vec::new();
        let mut emails: Vec<&str> = Vec::new();
        let mut visitors: Vec<&VisitorId> = Vec::new();
        let mut touch_events: Vec<&str> = Vec::new();
        let mut visit_events: Vec<&str> = Vec::new();
        for k in keys {
            match k {
                Key::Lead(id) => lead_ids.push(id.clone()),
                Key::Email(e) => emails.push(e),
                Key::Visitor(v) => visitors.push(v),
                Key::TouchEvent(e) => touch_events.push(e),
                Key::VisitEvent(e) => visit_events.push(e),
            }
        }
        // Visitors first: a visitor's lead is loaded with the leads.
        let asked = state.visitors.missing(visitors);
        let missing = self.visitors.fill(&mut state.visitors, asked.clone());
        for id in asked {
            if let Ok(Some(Visitor { lead: Some((l, _)), .. })) = state.visitors.get(id.as_str()) {
                lead_ids.push(l.clone());
            }
        }
        let wanted: Vec<&str> = missing.into_iter().map(VisitorId::as_str).collect();
        let rows: Vec<(String, String, i64, i64, i64)> = db::select_in(
                conn,
            db,
            "SELECT visitor_id, lead_id, lead_captured_at, page_views, product_views FROM visitors WHERE visitor_id IN ",
            "",
            &wanted,
        )
        .await?;
        let mut found: HashMap<String, Visitor> = HashMap::new();
        for (id, lead, at, page_views, product_views) in rows {
            let lead = optional(lead, LeadId::from_stored).map(|l| (l, at));
            if let Some((l, _)) = &lead {
                lead_ids.push(l.clone());
            }
            let v = Visitor {
                visitor_id: VisitorId::from_stored(id.clone()),
                lead,
                page_views: i32::try_from(page_views).unwrap_or(i32::MAX),
                product_views: i32::try_from(product_views).unwrap_or(i32::MAX),
            };
            found.insert(id, v);
        }
        for id in wanted {
            state.visitors.loaded(VisitorId::from_stored(id.to_owned()), found.remove(id));
        }

        let missing = state.leads.missing(&lead_ids);
        let wanted: Vec<&str> = self.leads.fill(&mut state.leads, missing).into_iter().map(LeadId::as_str).collect();
        let mut found: HashMap<String, Lead> =
            fetch(conn, db, "lead_id", &wanted).await?.into_iter().map(|l| (l.lead_id.to_string(), l)).collect();
        for id in wanted {
            state.leads.loaded(LeadId::from_stored(id.to_owned()), found.remove(id));
        }

        let wanted: Vec<&str> = emails.into_iter().filter(|e| !state.by_email.contains_key(*e)).collect();
        for lead in fetch(conn, db, "email_key", &wanted).await? {
            state.by_email.insert(lead.email_key(), Some(lead.lead_id.clone()));
            state.leads.loaded(lead.lead_id.clone(), Some(lead));
        }
        for e in wanted {
            state.by_email.entry(e.to_owned()).or_insert(None);
        }

        for (table, ids, loaded, recorded) in [
            ("touches", touch_events, &mut state.loaded_touch_events, &mut state.touch_events),
            ("visits", visit_events, &mut state.loaded_visit_events, &mut state.visit_events),
        ] {
            let wanted: Vec<&str> = ids.into_iter().filter(|e| !loaded.contains(*e)).collect();
            let rows: Vec<(String,)> =
                db::select_in(conn, db, &format!("SELECT event_id FROM {table} WHERE event_id IN "), "", &wanted)
                    .await?;
            recorded.extend(rows.into_iter().map(|(e,)| e));
            loaded.extend(wanted.into_iter().map(str::to_owned));
        }
        Ok(())
    }

    fn apply(&self, state: &mut State, change: Change) {
        match change {
            Change::Lead(lead) => {
                // A lead's address changes only when its person is erased,
                // which frees the address.
                match state.leads.get(lead.lead_id.as_str()) {
                    Ok(Some(before)) if before.erased_at.is_none() && lead.erased_at.is_some() => {
                        state.by_email.insert(before.email.key(), None);
                    }
                    Ok(Some(_)) => {}
                    _ => {
                        state.by_email.insert(lead.email.key(), Some(lead.lead_id.clone()));
                    }
                }
                state.leads.put(lead.lead_id.clone(), *lead);
            }
            Change::Visitor(v) => state.visitors.put(v.visitor_id.clone(), v),
            Change::Visit(row) => {
                if let Some(e) = &row.event_id {
                    state.loaded_visit_events.insert(e.clone());
                    state.visit_events.insert(e.clone());
                }
                state.visits.push(row);
            }
            Change::Touch(row) => {
                if let Some(e) = &row.event_id {
                    state.loaded_touch_events.insert(e.clone());
                    state.touch_events.insert(e.clone());
                }
                state.touches.push(row);
            }
        }
    }

    fn flush<'s>(&self, script: &mut Script<'s>, state: &'s State) {
        script
            .upsert(&LEADS, state.leads.changes().map(|(before, after)| (before.map(lead_values), lead_values(after))));
        script.upsert(
            &VISITORS,
            state.visitors.changes().map(|(before, after)| (before.map(visitor_values), visitor_values(after))),
        );
        script.insert_rows(
            "INSERT INTO visits (visit_id, visitor_id, page, product_page, channel, campaign, occurred_at, lead_id, \
             event_id)",
            9,
            "",
            &state.visits,
            |q, v| {
                q.bind(&v.visit_id)
                    .bind(v.visitor_id.as_str())
                    .bind(&v.page)
                    .bind(i64::from(v.product_page))
                    .bind(v.channel.as_ref().map_or("", Code::as_str))
                    .bind(&v.campaign)
                    .bind(v.at)
                    .bind(v.lead_id.as_ref().map_or("", LeadId::as_str))
                    .bind(v.event_id.as_deref())
            },
        );
        script.insert_rows(
            "INSERT INTO touches (lead_id, kind, detail, occurred_at, event_id)",
            5,
            "",
            &state.touches,
            |q, t| {
                q.bind(t.lead_id.as_str()).bind(t.kind.name()).bind(&t.detail).bind(t.at).bind(t.event_id.as_deref())
            },
        );
    }
}

/// Leads by id, for the batched reader.
pub async fn leads_by_id(conn: &mut Conn, db: &Db, ids: Vec<LeadId>) -> ApiResult<Vec<(LeadId, Lead)>> {
    let keys: Vec<&str> = ids.iter().map(LeadId::as_str).collect();
    Ok(fetch(conn, db, "lead_id", &keys).await?.into_iter().map(|l| (l.lead_id.clone(), l)).collect())
}

/// Leads whose `column` (`lead_id` or `email_key`) is one of `keys`, on
/// `conn`: the writer's load and the batched reader's.
async fn fetch(conn: &mut Conn, db: &Db, column: &str, keys: &[&str]) -> Result<Vec<Lead>, sqlx::Error> {
    leads(db::select_in(conn, db, &format!("SELECT {COLUMNS} FROM leads WHERE {column} IN "), "", keys).await?)
}

/// A page of leads, newest capture first, after the keyset `after`.
pub async fn list_leads(
    db: &Db,
    status: Option<Status>,
    after: Option<(i64, String)>,
    limit: i64,
) -> ApiResult<Vec<Lead>> {
    let list = NewestFirst { select: &format!("SELECT {COLUMNS} FROM leads"), time: "captured_at", id: "lead_id" };
    let rows: Vec<LeadRow> = list.page(db, &Vec::from_iter(status.map(|s| ("status", s.code()))), after, limit).await?;
    Ok(leads(rows)?)
}

/// Leads per (class under one definition, class under another).
pub type ClassTally = BTreeMap<(LeadClass, LeadClass), i64>;

/// Classes every lead but erased ones under `baseline` and `draft`, a page
/// at a time in lead-id order (so the read holds no long transaction).
pub async fn tally_classes(db: &Db, baseline: &Definition, draft: &Definition) -> anyhow::Result<ClassTally> {
    const PAGE: i64 = 5_000;
    type Row = (String, String, i64, String, String, String, String);
    let mut tally = ClassTally::default();
    let mut after = String::new();
    loop {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT lead_id, email, company_size, industry, job_title, relationship, scored_touches FROM leads \
             WHERE lead_id > $1 AND erased_at IS NULL ORDER BY lead_id LIMIT $2",
        )
        .bind(&after)
        .bind(PAGE)
        .fetch_all(db.reader())
        .await?;
        for (_, email, size, industry, job_title, relationship, touches) in &rows {
            let facts = LeadFacts {
                email,
                company_size: db::to_i32(*size, "company_size")?,
                industry,
                job_title,
                relationship: relationship_from_code(relationship)
                    .ok_or_else(|| anyhow::anyhow!("unknown relationship {relationship:?}"))?,
            };
            let touches = touches_from_text(touches)?;
            *tally.entry((baseline.class(&facts, &touches), draft.class(&facts, &touches))).or_default() += 1;
        }
        match rows.last() {
            Some(last) if rows.len() as i64 == PAGE => after = last.0.clone(),
            _ => return Ok(tally),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touch_counts_round_trip() {
        let t = BTreeMap::from([(TouchKind::PageView, 3), (TouchKind::QuoteRequest, 1)]);
        assert_eq!(touches_from_text(&touches_to_text(&t)).expect("parse"), t);
        assert_eq!(touches_from_text("").expect("empty"), BTreeMap::new());
        assert!(touches_from_text("TELEPATHY=1").is_err());
    }

    #[test]
    fn the_written_columns_are_the_read_ones_and_the_key() {
        assert_eq!(format!("{COLUMNS}, email_key"), LEADS.columns.join(", "));
    }
}
