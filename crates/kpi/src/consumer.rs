//! Follows one service's event stream from the stored cursor and folds it
//! into the aggregates. A page is applied and the cursor moved in one transaction,
//! so stopping, crashing or rebuilding from zero always ends at the same numbers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use anyhow::Context;

use themodel_proto::common::v1::event_stream_service_client::EventStreamServiceClient;
use themodel_proto::common::v1::{ListEventsRequest, ListEventsResponse};
use themodel_quality::Definition;
use themodel_runtime::Db;
use themodel_runtime::db::Conn;
use themodel_runtime::telemetry::PeerChannel;
use themodel_runtime::time::Micros;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::domain::{self, Effect, Role, Source};
use crate::journey::{Contribution, Deltas, Journey};
use crate::store::{self, Cursor};

/// Events asked for per page: the most a stream gives (it also stops a
/// page at [`themodel_runtime::events::PAGE_BYTES`]). Each page is one
/// transaction on kpi's writer, whose fixed costs (the cursor, loading
/// journeys, the sums' upserts) a larger page shares among more events:
/// rebuilding 100,000 leads (340,000 events) ran at 39-41k events/s with
/// 5,000, 34-35k with 2,000. Following a live stream, pages hold what was
/// committed since the last one.
const PAGE: i32 = 5000;

/// How long one long poll waits at the head of a stream for its next event.
const LONG_POLL: Duration = Duration::from_secs(20);

/// How far kpi has read one stream, for reads that wait on it and for the
/// lag GetFunnel reports.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// The last seq counted in the numbers.
    pub applied_seq: i64,
    /// The highest head the stream has shown (at least `applied_seq`).
    pub head_seq: i64,
    /// Since when kpi has known of events it has not applied yet.
    pub behind_since: Option<Instant>,
    /// Why kpi is not reading this stream right now, if it is not.
    pub error: Option<String>,
}

impl Progress {
    /// Whether every event kpi knows of is counted (or the stream cannot be
    /// read: nothing to wait for).
    pub fn settled(&self) -> bool {
        self.applied_seq >= self.head_seq || self.error.is_some()
    }

    /// How long kpi has been behind this stream (zero when it is not).
    pub fn lag(&self) -> Duration {
        self.behind_since.map_or(Duration::ZERO, |t| t.elapsed())
    }

    fn saw(&mut self, applied_seq: i64, head_seq: i64) {
        self.applied_seq = self.applied_seq.max(applied_seq);
        self.head_seq = self.head_seq.max(head_seq).max(self.applied_seq);
        self.behind_since = match (self.applied_seq < self.head_seq, self.behind_since) {
            (false, _) => None,
            (true, Some(t)) => Some(t),
            (true, None) => Some(Instant::now()),
        };
    }
}

/// Follows one service's event stream: a long poll at the head, so the
/// first event after a quiet spell is applied moments after it is
/// committed, and no kpi read ever calls the service.
#[derive(Debug)]
pub struct Consumer {
    pub source: Source,
    pub client: EventStreamServiceClient<PeerChannel>,
    pub db: Db,
    progress: watch::Sender<Progress>,
}

impl Consumer {
    /// A consumer of `source`'s stream that starts from kpi's stored cursor.
    pub async fn new(
        source: Source,
        client: EventStreamServiceClient<PeerChannel>,
        db: Db,
    ) -> anyhow::Result<Consumer> {
        let applied = store::cursor(db.reader(), source.name()).await?.map_or(0, |c| c.applied_seq);
        let mut progress = Progress::default();
        progress.saw(applied, applied);
        Ok(Consumer { source, client, db, progress: watch::Sender::new(progress) })
    }

    /// How far the stream is read.
    pub fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    /// Waits until `done` holds of the progress; `false` if `until` came first.
    pub async fn wait_for(&self, until: tokio::time::Instant, done: impl FnMut(&Progress) -> bool) -> bool {
        let mut rx = self.progress.subscribe();
        tokio::time::timeout_at(until, rx.wait_for(done)).await.is_ok_and(|r| r.is_ok())
    }

    /// One step, remembering its failure (or clearing the last one).
    async fn checked_step(&self) -> anyhow::Result<bool> {
        let result = self.step().await;
        self.progress.send_modify(|p| p.error = result.as_ref().err().map(|e| format!("{e:#}")));
        result
    }

    /// Follows the stream until `shutdown`. A page that leaves more behind
    /// it is followed at once, and so is a long poll that waited half its
    /// time. Otherwise the next long poll waits `poll`: after a page that
    /// caught up, so that under a steady stream kpi applies one page of
    /// what was committed in that time, not one transaction per commit of
    /// the source (an event then waits at most about `poll` and a page's
    /// work); and after an empty page answered at once (a source that does
    /// not hold long polls, or one shutting down). After a failure it backs
    /// off, up to 5 s.
    pub async fn run(self: std::sync::Arc<Self>, poll: Duration, shutdown: CancellationToken) {
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            let started = Instant::now();
            let step = tokio::select! {
                _ = shutdown.cancelled() => break,
                step = self.checked_step() => step,
            };
            let wait = match step {
                Ok(true) => continue,
                Ok(false) => {
                    failures = 0;
                    if started.elapsed() >= LONG_POLL / 2 {
                        continue;
                    }
                    poll
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    if failures == 1 || failures.is_multiple_of(50) {
                        tracing::warn!(
                            source = self.source.name(),
                            error = format!("{e:#}"),
                            "event stream not read; retrying"
                        );
                    }
                    (poll * failures.min(10)).min(Duration::from_secs(5))
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// The definitions the captures among `effects` were made with, for
    /// their size bands and title classes (a version kpi does not hold is
    /// left out: those dimensions stay empty).
    async fn definitions(&self, effects: &[(Micros, Effect)]) -> anyhow::Result<HashMap<i64, Definition>> {
        let versions: BTreeSet<i64> = effects
            .iter()
            .filter_map(|(_, e)| match e {
                Effect::Captured { capture, .. } => Some(capture.definition_version),
                _ => None,
            })
            .collect();
        let mut out = HashMap::new();
        for v in versions.into_iter().filter(|v| *v > 0) {
            if let Some((d, _)) = store::definition(&self.db, v).await? {
                out.insert(v, d);
            }
        }
        Ok(out)
    }

    /// Adds a page's effects to the journeys they concern and the
    /// journeys' changed contributions to the aggregates, in `tx`.
    async fn apply(
        &self,
        tx: &mut Conn,
        effects: &[(Micros, Effect)],
        definitions: &HashMap<i64, Definition>,
    ) -> anyhow::Result<()> {
        // Which leads the page's account events reach: those that joined
        // the account before this page, and those joining in it.
        let accounts: BTreeSet<&str> = effects
            .iter()
            .filter_map(|(_, e)| match e {
                Effect::Account { account, .. } | Effect::AccountOwned { account, .. } => Some(account.as_str()),
                _ => None,
            })
            .collect();
        let accounts: Vec<&str> = accounts.into_iter().collect();
        let mut members: HashMap<String, Vec<(String, bool)>> = HashMap::new();
        for (account, lead, opening) in store::account_leads(tx, &self.db, &accounts).await? {
            members.entry(account).or_default().push((lead, opening));
        }
        let mut leads: BTreeSet<String> = members.values().flatten().map(|(l, _)| l.clone()).collect();
        for (_, e) in effects {
            match e {
                Effect::Captured { lead, .. }
                | Effect::Reached { lead, .. }
                | Effect::Joined { lead, .. }
                | Effect::Money { lead, .. }
                | Effect::Recycled { lead, .. }
                | Effect::Excluded { lead, .. }
                | Effect::Stay { lead, .. }
                | Effect::Owned { lead, .. } => {
                    leads.insert(lead.clone());
                }
                Effect::Visit(_)
                | Effect::Account { .. }
                | Effect::AccountValue { .. }
                | Effect::AccountOwned { .. } => {}
            }
        }
        let keys: Vec<&str> = leads.iter().map(String::as_str).collect();
        let mut stored = store::journeys(tx, &self.db, &keys).await?;
        let mut journeys: BTreeMap<String, Journey> = leads
            .into_iter()
            .map(|l| {
                let j = stored.remove(&l).unwrap_or_default();
                (l, j)
            })
            .collect();
        let before: BTreeMap<String, Contribution> =
            journeys.iter().map(|(lead, j)| (lead.clone(), j.contribution())).collect();

        let mut visits = Vec::new();
        let mut joins = Vec::new();
        let mut values = Vec::new();
        for (at, effect) in effects {
            let at = *at;
            match effect {
                Effect::Visit(visitor) => visits.push((at, visitor.clone())),
                Effect::Captured { lead, capture } => {
                    loaded(&mut journeys, lead)?.capture(at, capture, definitions.get(&capture.definition_version));
                }
                Effect::Reached { lead, metric } => loaded(&mut journeys, lead)?.reach(*metric, at),
                Effect::Joined { account, lead, opening } => {
                    let list = members.entry(account.clone()).or_default();
                    if !list.iter().any(|(l, _)| l == lead) {
                        list.push((lead.clone(), *opening));
                        joins.push((account.clone(), lead.clone(), *opening));
                    }
                }
                Effect::Account { account, metric, lost } => {
                    for (lead, opening) in members.get(account).into_iter().flatten() {
                        loaded(&mut journeys, lead)?.account(*metric, at, *opening, lost.as_ref());
                    }
                }
                Effect::Money { lead, kind, amount } => loaded(&mut journeys, lead)?.money(*kind, at, amount),
                Effect::Recycled { lead, reason } => loaded(&mut journeys, lead)?.recycle(at, reason),
                Effect::Excluded { lead, reason } => loaded(&mut journeys, lead)?.exclude(at, reason),
                Effect::Stay { lead, step } => loaded(&mut journeys, lead)?.stay(at, step),
                Effect::Owned { lead, role, owner, team } => loaded(&mut journeys, lead)?.own(*role, owner, team),
                Effect::AccountOwned { account, owner, team } => {
                    for (lead, _) in members.get(account).into_iter().flatten() {
                        loaded(&mut journeys, lead)?.own(Role::CustomerSuccessManager, owner, team);
                    }
                }
                Effect::AccountValue { account, value } => {
                    values.push(store::AccountValue { account: account.as_str(), at, value: value.as_ref() });
                }
            }
        }
        // A journey whose contribution changed moves the sums from the old
        // one to the new. Besides the sums, each journey's facts are kept a
        // row each (its events, stages, amounts and stays, at their
        // moments); what changed of them is written too.
        let mut deltas = Deltas::default();
        let mut rows = BTreeMap::new();
        for (lead, journey) in &journeys {
            let after = journey.contribution();
            if before[lead] != after {
                deltas.add(&before[lead], -1);
                deltas.add(&after, 1);
                rows.insert(lead.as_str(), (&before[lead], after));
            }
        }
        deltas.settle();
        store::write_page(tx, &self.db, &journeys, &joins, &deltas, &rows).await?;
        store::add_account_values(tx, &values).await?;
        store::add_visits(tx, &self.db, &visits).await
    }

    /// The page after `after_seq`, waiting at the head for the next event.
    async fn page(&self, after_seq: i64) -> anyhow::Result<ListEventsResponse> {
        let wait = prost_types::Duration::try_from(LONG_POLL).ok();
        let mut req = tonic::Request::new(ListEventsRequest { after_seq, page_size: PAGE, wait });
        // A connection that died silently must not hold the stream forever.
        req.set_timeout(LONG_POLL + Duration::from_secs(10));
        let page = self.client.clone().list_events(req).await?.into_inner();
        self.progress.send_modify(|p| p.saw(after_seq, page.head_seq));
        Ok(page)
    }

    /// Reads and applies one page; `Ok(true)` if there may be more right away.
    async fn step(&self) -> anyhow::Result<bool> {
        // A plain read: the compare-and-set in `store::apply` is what guards the cursor.
        let stored = store::cursor(self.db.reader(), self.source.name()).await?;
        let mut after = stored.as_ref().map_or(0, |c| c.applied_seq);
        self.progress.send_modify(|p| p.saw(after, after));
        let mut page = self.page(after).await?;
        let known = stored.as_ref().map_or("", |c| c.stream_id.as_str());
        // An empty id on either side is a database or server from before
        // streams had ids: nothing to compare.
        let replaced = !known.is_empty() && !page.stream_id.is_empty() && page.stream_id != known;
        if replaced {
            // The service's database was replaced: its new stream holds only
            // facts recorded since, which kpi has not seen. What the old stream
            // gave stays counted; the new one is read from its start.
            after = 0;
            self.progress.send_modify(|p| *p = Progress { error: p.error.take(), ..Progress::default() });
            page = self.page(0).await?;
        }
        let Some(last) = page.events.last().map(|e| e.seq) else {
            // The same stream never shrinks; if it did, its database was
            // restored from an older copy, and the seqs after the copy will be
            // reused for other facts. Counting on would miss some and counting
            // again would double others, so kpi keeps its numbers and says so.
            anyhow::ensure!(
                page.head_seq >= after,
                "{} stream {} ends at seq {} but kpi has applied up to {after}: was its database restored \
                 from a backup? KPIs keep what they had and wait",
                self.source.name(),
                page.stream_id,
                page.head_seq
            );
            return Ok(false);
        };
        if replaced {
            tracing::warn!(
                source = self.source.name(),
                old_stream = known,
                new_stream = %page.stream_id,
                "event stream replaced (a new database): keeping what the old stream counted, reading the new one from seq 1"
            );
        }
        let new = Cursor {
            applied_seq: last,
            stream_id: if page.stream_id.is_empty() { known.to_owned() } else { page.stream_id.clone() },
        };

        let mut effects = Vec::new();
        let mut expected = after;
        for e in &page.events {
            anyhow::ensure!(
                e.seq == expected + 1,
                "{} stream skipped from {expected} to {}",
                self.source.name(),
                e.seq
            );
            expected = e.seq;
            // An event kpi cannot decode stops the stream here: nothing of
            // this page is applied, the cursor stays, and the reason shows in
            // GetFunnel's `sources` until a kpi that knows the type reads it.
            let decoded = domain::decode(self.source, e.seq, e.event.as_ref())?;
            let at =
                decoded.occurred_at().ok_or(domain::Undecodable::NoTime { stream: self.source.name(), seq: e.seq })?;
            effects.extend(decoded.effects().into_iter().map(|effect| (at, effect)));
        }
        let definitions = self.definitions(&effects).await?;

        let mut tx = self.db.begin().await?;
        if !store::move_cursor(&mut tx, self.source.name(), stored.as_ref(), &new).await? {
            tx.rollback().await?;
            return Ok(true);
        }
        self.apply(&mut tx, &effects, &definitions).await?;
        tx.commit().await?;
        self.db.committed();
        self.progress.send_modify(|p| p.saw(last, page.head_seq));
        tracing::debug!(source = self.source.name(), applied_seq = last, events = page.events.len(), "events applied");
        Ok(last < page.head_seq)
    }
}

/// A journey the page loaded: every lead a page's effects name, and every
/// member of the accounts they name, is loaded before they are applied.
fn loaded<'j>(journeys: &'j mut BTreeMap<String, Journey>, lead: &str) -> anyhow::Result<&'j mut Journey> {
    journeys.get_mut(lead).with_context(|| format!("journey of {lead} not loaded"))
}
