//! The unit of work, and the writer that commits concurrent units together.
//!
//! A handler parses its request into domain values and hands the writer a
//! unit: the rows it needs and a function from those rows to what changes.
//! The writer does the rest, the same way for every RPC:
//!
//! idempotency replay → begin → load → the domain step → append its events →
//! enqueue its hand-overs → record the response → commit.
//!
//! Group commit: one writer task per service drains its queue of pending
//! units and runs them in one transaction. A statement through sqlx costs a
//! round trip to the database's worker thread (about 46 µs on SQLite), so the
//! writer loads every row the batch needs with a few `IN (...)` queries
//! ([`Store::load`]), runs the units one after another in memory against
//! those rows, each seeing its predecessors' changes ([`Store::apply`]), and
//! writes everything back with multi-row statements ([`Store::flush`]). A
//! batch of hundreds of units costs about as many statements as one.
//!
//! Each unit stays atomic and idempotent on its own. A unit's step is a pure
//! function of the rows it reads: it returns its changes instead of making
//! them, so a unit that fails leaves nothing behind and its neighbours are
//! untouched. The same `request_id` twice in one batch is applied once (the
//! second gets the first's response). If writing the batch fails (a database
//! error, a constraint a concurrent replica broke), it is rolled back and
//! every unit is run again alone, so one bad unit cannot sink the others.
//!
//! Overload: the queue in front of the writer is bounded. A unit that does
//! not fit is refused at once with RESOURCE_EXHAUSTED and a retry hint; a
//! unit whose caller's deadline has passed, or who gave up, is not run.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prost::{Message, Name};
use prost_types::Any;
use themodel_proto::common::v1::OutboxEvent;
use themodel_quality::Definition;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::call::Call;
use crate::db::{Conn, Db, Kept, Script};
use crate::definition::SharedDefinition;
use crate::error::{ApiError, ApiResult};
use crate::outbox::{self, Handover, Outbox};
use crate::time::{Clock, Micros};
use crate::{audit, events, idempotency};

/// A service's rows as the writer sees them.
pub trait Store: Send + Sync + 'static {
    /// A row (or lookup) a unit asks to have loaded before it runs.
    type Key: Clone + Send + Sync + 'static;
    /// The rows a batch loaded, with earlier units' changes applied.
    type State: Default + Send + 'static;
    /// One change a unit makes.
    type Change: Send + 'static;
    /// The service's event message.
    type Event: Message + Name + Send + 'static;

    /// Loads the rows `keys` name into `state`, in the batch's transaction.
    fn load(
        &self,
        conn: &mut Conn,
        keys: &[Self::Key],
        state: &mut Self::State,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// Applies a unit's change to the batch's rows (and remembers it for
    /// [`Store::flush`]).
    fn apply(&self, state: &mut Self::State, change: Self::Change);

    /// Adds the writes of every change applied to `state` to the batch's
    /// script (run, with the batch's other writes and its commit, after).
    fn flush<'s>(&self, script: &mut Script<'s>, state: &'s Self::State);

    /// Called with a batch's rows once it committed: what the database now
    /// holds, to keep for later batches (see [`crate::cache`]).
    fn remember(&self, state: Self::State) {
        let _ = state;
    }

    /// Called when another writer may have changed the service's rows:
    /// drop whatever was kept.
    fn forget(&self) {}
}

/// What a unit asks to have loaded.
#[derive(Debug, Clone)]
pub enum Need<K> {
    /// A row of the service's own.
    Row(K),
    /// A hand-over in the outbox, by id.
    Handover(String),
}

/// What a unit's step sees.
pub struct Ctx<'a, S: Store> {
    /// The batch's rows.
    pub state: &'a S::State,
    /// The batch's time.
    pub now: Micros,
    /// The shared definition the batch applies.
    pub definition: &'a Definition,
    handovers: &'a HashMap<String, outbox::Row>,
}

impl<S: Store> Ctx<'_, S> {
    /// A hand-over the unit asked for with [`Need::Handover`].
    pub fn handover(&self, id: &str) -> ApiResult<&outbox::Row> {
        self.handovers.get(id).ok_or_else(|| ApiError::not_found("hand-over", id))
    }
}

/// What domain functions return besides the changed record: the facts to
/// publish and the hand-overs to send.
#[derive(Debug, PartialEq)]
pub struct Effects<E> {
    pub events: Vec<E>,
    pub handovers: Vec<Handover>,
}

impl<E> Default for Effects<E> {
    fn default() -> Self {
        Effects { events: Vec::new(), handovers: Vec::new() }
    }
}

impl<E> Effects<E> {
    pub fn event(mut self, e: E) -> Self {
        self.events.push(e);
        self
    }

    pub fn push_event(&mut self, e: E) {
        self.events.push(e);
    }

    pub fn push_handover(&mut self, h: Handover) {
        self.handovers.push(h);
    }

    pub fn append(&mut self, mut other: Effects<E>) {
        self.events.append(&mut other.events);
        self.handovers.append(&mut other.handovers);
    }
}

/// What a unit's step returns: its response and what it changes.
pub struct Done<S: Store> {
    response: Vec<u8>,
    changes: Vec<S::Change>,
    effects: Effects<S::Event>,
    outbox_events: Vec<OutboxEvent>,
    outbox_changes: Vec<outbox::Change>,
    /// The records the unit is about (else the call's, [`Call::about`]).
    about: Vec<String>,
    /// Records whose person the unit erased: their stored responses and
    /// hand-overs are scrubbed in the same transaction.
    erased: Vec<String>,
}

impl<S: Store> Done<S> {
    /// A unit that answers `response`.
    pub fn new(response: &impl Message) -> Self {
        Done {
            response: response.encode_to_vec(),
            changes: Vec::new(),
            effects: Effects::default(),
            outbox_events: Vec::new(),
            outbox_changes: Vec::new(),
            about: Vec::new(),
            erased: Vec::new(),
        }
    }

    /// Names a record the unit is about, for the audit log and for the
    /// stored response (see [`Call::about`]); overrides the call's.
    pub fn about(mut self, record: impl Into<String>) -> Self {
        self.about.push(record.into());
        self
    }

    /// Says the unit erased the personal data of `records`: the writer
    /// also scrubs what it keeps of them besides the rows: the stored
    /// responses to earlier requests about them (a retry of one is then
    /// refused, FAILED_PRECONDITION) and the requests of their delivered
    /// and dead hand-overs (a dead one is dropped).
    pub fn erased(mut self, records: impl IntoIterator<Item = String>) -> Self {
        self.erased.extend(records);
        self
    }

    pub fn change(mut self, c: S::Change) -> Self {
        self.changes.push(c);
        self
    }

    pub fn changes(mut self, cs: impl IntoIterator<Item = S::Change>) -> Self {
        self.changes.extend(cs);
        self
    }

    pub fn effects(mut self, e: Effects<S::Event>) -> Self {
        self.effects.append(e);
        self
    }

    pub(crate) fn outbox(mut self, change: outbox::Change, event: OutboxEvent) -> Self {
        self.outbox_changes.push(change);
        self.outbox_events.push(event);
        self
    }
}

type Step<S> = Box<dyn Fn(&Ctx<'_, S>) -> ApiResult<Done<S>> + Send + Sync>;

struct Job<S: Store> {
    call: Call,
    needs: Vec<Need<S::Key>>,
    step: Step<S>,
    reply: oneshot::Sender<ApiResult<Committed>>,
}

/// A unit's outcome: its encoded response, and the hand-overs it made.
struct Committed {
    response: Vec<u8>,
    handovers: Vec<String>,
}

/// Sizes of the writer's queue and batches.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Units waiting beyond this are refused with RESOURCE_EXHAUSTED.
    pub queue: usize,
    /// Most units committed in one transaction.
    pub max_batch: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig { queue: 2048, max_batch: 512 }
    }
}

/// How long a refused caller is told to wait before retrying.
const RETRY_AFTER: Duration = Duration::from_millis(50);

/// How long a call waits for the hand-overs it made to be delivered before
/// answering (the relay keeps trying after that).
const DELIVER_NOW_TIMEOUT: Duration = Duration::from_secs(2);

/// A handle to a service's writer.
pub struct Writer<S: Store> {
    shared: Arc<Shared<S>>,
    queue: mpsc::Sender<Job<S>>,
}

impl<S: Store> Clone for Writer<S> {
    fn clone(&self) -> Self {
        Writer { shared: self.shared.clone(), queue: self.queue.clone() }
    }
}

impl<S: Store> std::fmt::Debug for Writer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("queued", &(self.queue.max_capacity() - self.queue.capacity())).finish()
    }
}

struct Shared<S: Store> {
    store: S,
    db: Db,
    clock: Clock,
    definition: SharedDefinition,
    outbox: Outbox,
    max_batch: usize,
}

impl<S: Store> Writer<S> {
    /// A writer for `store`, and the task that runs it until `shutdown`.
    pub fn new(
        store: S,
        db: Db,
        clock: Clock,
        definition: SharedDefinition,
        outbox: Outbox,
        config: WriterConfig,
        shutdown: CancellationToken,
    ) -> (Writer<S>, impl Future<Output = ()> + Send + 'static) {
        let (queue, rx) = mpsc::channel(config.queue.max(1));
        let shared = Arc::new(Shared { store, db, clock, definition, outbox, max_batch: config.max_batch.max(1) });
        let task = shared.clone().run(rx, shutdown);
        (Writer { shared, queue }, task)
    }

    /// The service's rows and database, for the unit-of-work's neighbours
    /// (reads, admin).
    pub fn db(&self) -> &Db {
        &self.shared.db
    }

    /// Runs one unit: `needs` are loaded, `step` decides, the writer commits.
    /// Returns the unit's response once committed (a replayed one for a
    /// repeated `request_id`), after its hand-overs were tried once.
    pub async fn execute<R: Message + Default>(
        &self,
        call: Call,
        needs: Vec<Need<S::Key>>,
        step: impl Fn(&Ctx<'_, S>) -> ApiResult<Done<S>> + Send + Sync + 'static,
    ) -> ApiResult<R> {
        let (reply, answer) = oneshot::channel();
        let job = Job { call, needs, step: Box::new(step), reply };
        self.queue.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ApiError::overloaded("this service's writer", RETRY_AFTER),
            mpsc::error::TrySendError::Closed(_) => {
                ApiError::Unavailable("the service is shutting down; retry".to_owned())
            }
        })?;
        let committed = answer.await.map_err(|_| {
            ApiError::Unavailable("the service stopped before the request was done; retry".to_owned())
        })??;
        if !committed.handovers.is_empty() {
            for token in self.shared.outbox.wait_attempted(&committed.handovers, DELIVER_NOW_TIMEOUT).await {
                crate::consistency::caused(token);
            }
        }
        R::decode(committed.response.as_slice())
            .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("decoding a stored response")))
    }
}

/// A unit's place in the batch: its own outcome, or a pointer to an
/// identical earlier one.
enum Outcome {
    Done(ApiResult<Committed>),
    Replay(Vec<u8>),
}

impl<S: Store> Shared<S> {
    async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<Job<S>>, shutdown: CancellationToken) {
        let mut jobs = Vec::with_capacity(self.max_batch);
        // The writer's own connection, opened on first use and again after
        // it broke or its prepared scripts went stale ([`Kept`]), with the
        // scripts it keeps prepared.
        let mut conn: Option<(Conn, Kept)> = None;
        // `stream_head.writes` as this writer's last commit left it.
        let mut last_writes: Option<i64> = None;
        loop {
            let received = tokio::select! {
                n = rx.recv_many(&mut jobs, self.max_batch) => n,
                _ = shutdown.cancelled() => 0,
            };
            if received == 0 {
                break;
            }
            let batch: Vec<Job<S>> = jobs
                .drain(..)
                .filter_map(|job| {
                    if job.reply.is_closed() {
                        // The caller gave up (or its deadline fired): not done.
                        None
                    } else if job.call.expired() {
                        let _ = job.reply.send(Err(ApiError::DeadlineExceeded));
                        None
                    } else {
                        Some(job)
                    }
                })
                .collect();
            if batch.is_empty() {
                continue;
            }
            match self.write(&mut conn, &mut last_writes, &batch).await {
                Ok(outcomes) => self.reply(batch, outcomes),
                Err(e) if batch.len() > 1 => {
                    tracing::warn!(error = %e, units = batch.len(), "batch failed; committing its units one by one");
                    for job in batch {
                        let outcome = match self.write(&mut conn, &mut last_writes, std::slice::from_ref(&job)).await {
                            Ok(mut o) => o.pop().unwrap_or(Outcome::Done(Err(ApiError::Internal(anyhow::anyhow!(
                                "a unit without an outcome"
                            ))))),
                            Err(e) => Outcome::Done(Err(ApiError::from(e))),
                        };
                        self.reply(vec![job], vec![outcome]);
                    }
                }
                Err(e) => self.reply(batch, vec![Outcome::Done(Err(ApiError::from(e)))]),
            }
        }
        if let Some((c, _)) = conn {
            use sqlx::Connection;
            let _ = c.close().await;
        }
        // Whatever is still queued is refused, not dropped silently.
        rx.close();
        while let Ok(job) = rx.try_recv() {
            let _ = job.reply.send(Err(ApiError::Unavailable("the service is shutting down; retry".to_owned())));
        }
    }

    fn reply(&self, batch: Vec<Job<S>>, outcomes: Vec<Outcome>) {
        let handovers: Vec<String> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Done(Ok(c)) => Some(c.handovers.iter().cloned()),
                _ => None,
            })
            .flatten()
            .collect();
        if !handovers.is_empty() {
            self.outbox.committed(&handovers);
        }
        for (job, outcome) in batch.into_iter().zip(outcomes) {
            let answer = match outcome {
                Outcome::Done(result) => result,
                Outcome::Replay(response) => Ok(Committed { response, handovers: Vec::new() }),
            };
            let _ = job.reply.send(answer);
        }
    }

    /// Runs and commits a batch on the writer's connection (opening it if
    /// needed, and dropping it if it broke); an `Err` means nothing of the
    /// batch was committed.
    async fn write(
        &self,
        conn: &mut Option<(Conn, Kept)>,
        last_writes: &mut Option<i64>,
        batch: &[Job<S>],
    ) -> Result<Vec<Outcome>, sqlx::Error> {
        let (c, kept) = match conn {
            Some(c) => c,
            None => conn.insert((self.db.open_writer().await?, Kept::default())),
        };
        let result = match self.write_on(c, kept, batch, last_writes).await {
            Ok(outcomes) => Ok(outcomes),
            Err(e) => {
                // The transaction is still open unless the failure was the
                // commit itself; either way nothing of it stays.
                if let Err(rollback) = self.db.rollback_writes(c).await {
                    tracing::debug!(error = %rollback, "rollback after a failed batch");
                }
                Err(e)
            }
        };
        if let Err(e) = &result
            && matches!(
                e,
                sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed
            )
        {
            tracing::warn!(error = %e, "the writer's connection broke; opening a new one");
            *conn = None;
        } else if kept.stale()
            && let Some((c, _)) = conn.take()
        {
            use sqlx::Connection;
            // The next batch opens a new one.
            if let Err(e) = c.close().await {
                tracing::debug!(error = %e, "closing the writer's connection to drop its prepared scripts");
            }
        }
        result
    }

    async fn write_on(
        &self,
        conn: &mut Conn,
        kept: &mut Kept,
        batch: &[Job<S>],
        last_writes: &mut Option<i64>,
    ) -> Result<Vec<Outcome>, sqlx::Error> {
        let db = &self.db;
        let keys: Vec<&str> =
            batch.iter().filter_map(|j| j.call.key.as_ref().map(|k| k.request_key.as_str())).collect();
        let (begun, stored) = idempotency::begin_and_load(conn, db, &keys).await?;
        if *last_writes != Some(begun.writes - 1) {
            // Not the first batch after our own last commit: someone else
            // wrote (or this is the first batch), so cached rows may be stale.
            self.store.forget();
        }

        let mut rows = Vec::new();
        let mut handover_ids = Vec::new();
        for need in batch.iter().flat_map(|j| &j.needs) {
            match need {
                Need::Row(k) => rows.push(k.clone()),
                Need::Handover(id) => handover_ids.push(id.as_str()),
            }
        }
        let mut state = S::State::default();
        self.store.load(conn, &rows, &mut state).await?;
        let mut handovers = outbox::load(conn, db, &handover_ids).await?;

        let definition = self.definition.current();
        let now = self.clock.now();
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut events: Vec<Any> = Vec::new();
        let mut new_handovers: Vec<(Handover, &str)> = Vec::new();
        let mut outbox_changes = Vec::new();
        let mut records: Vec<(&idempotency::Key, usize, String)> = Vec::new();
        let mut audits: Vec<audit::Entry<'_>> = Vec::new();
        let mut erased: Vec<String> = Vec::new();
        let mut applied: HashMap<&str, usize> = HashMap::new();
        let mut responses: Vec<Vec<u8>> = Vec::new();

        for job in batch {
            let key = job.call.key.as_ref();
            if let Some(key) = key {
                if let Some(first) = stored.get(&key.request_key) {
                    outcomes.push(if first.erased {
                        erased_replay(key, &first.fingerprint)
                    } else {
                        replay(key, &first.fingerprint, first.response.clone())
                    });
                    continue;
                }
                if let Some(&i) = applied.get(key.request_key.as_str()) {
                    let (first_key, response) = (records[i].0, &responses[records[i].1]);
                    outcomes.push(replay(key, &first_key.fingerprint, response.clone()));
                    continue;
                }
            }
            // Checked again here: the transaction may have waited for a lock
            // long after the unit was taken from the queue.
            if job.reply.is_closed() || job.call.expired() {
                outcomes.push(Outcome::Done(Err(ApiError::DeadlineExceeded)));
                continue;
            }
            let ctx = Ctx::<S> { state: &state, now, definition: &definition, handovers: &handovers };
            let done = match (job.step)(&ctx) {
                Ok(done) => done,
                Err(e) => {
                    outcomes.push(Outcome::Done(Err(e)));
                    continue;
                }
            };
            for change in done.changes {
                self.store.apply(&mut state, change);
            }
            for change in done.outbox_changes {
                change.apply_to(&mut handovers);
                outbox_changes.push(change);
            }
            events.extend(done.effects.events.iter().map(events::pack));
            events.extend(done.outbox_events.iter().map(events::pack));
            let ids = done.effects.handovers.iter().map(|h| h.id.clone()).collect();
            new_handovers.extend(done.effects.handovers.into_iter().map(|h| (h, job.call.trace.as_str())));
            let about = if done.about.is_empty() && !job.call.about.is_empty() {
                vec![job.call.about.clone()]
            } else {
                done.about
            };
            let record = if about.len() == 1 { about[0].clone() } else { String::new() };
            if let Some(key) = key {
                applied.insert(&key.request_key, records.len());
                // An erasure's own response names only ids; its record stays
                // out of reach of the scrub below.
                let subject = if done.erased.is_empty() { record.clone() } else { String::new() };
                records.push((key, responses.len(), subject));
            }
            if !job.call.method.is_empty() {
                audits.push(audit::Entry { call: &job.call, record, records: about.len() });
            }
            erased.extend(done.erased);
            responses.push(done.response.clone());
            outcomes.push(Outcome::Done(Ok(Committed { response: done.response, handovers: ids })));
        }

        // Every write of the batch, and the commit, in one script.
        let mut script = Script::new(db);
        self.store.flush(&mut script, &state);
        outbox::update(&mut script, db, &outbox_changes, now);
        outbox::insert(&mut script, &new_handovers, now);
        events::append(&mut script, db, &events, now);
        let record_rows: Vec<(&idempotency::Key, &[u8], &str)> =
            records.iter().map(|(key, i, subject)| (*key, responses[*i].as_slice(), subject.as_str())).collect();
        idempotency::insert(&mut script, &record_rows, now);
        // Before the erasures: they find the responses to scrub through it.
        audit::insert(&mut script, begun.writes, &audits, now);
        idempotency::erase(&mut script, db, &erased, now);
        outbox::erase(&mut script, db, &erased, now);
        script.push("COMMIT", |b| b);
        script.run_keeping(conn, kept).await?;
        *last_writes = Some(begun.writes);
        db.committed();
        // Before anyone is answered: the consistency token a caller gets
        // covers its own events.
        db.stream_reached(begun.seq.saturating_add(i64::try_from(events.len()).unwrap_or(i64::MAX)));
        self.store.remember(state);
        Ok(outcomes)
    }
}

/// The stored answer to a repeated key, or the error for a reused one.
fn replay(key: &idempotency::Key, fingerprint: &str, response: Vec<u8>) -> Outcome {
    if key.fingerprint == fingerprint {
        Outcome::Replay(response)
    } else {
        Outcome::Done(Err(ApiError::field(
            "request_id",
            "was already used for a different request to this method; use a new request_id for a new request",
        )))
    }
}

/// The answer to a repeated key whose stored response was scrubbed.
fn erased_replay(key: &idempotency::Key, fingerprint: &str) -> Outcome {
    match replay(key, fingerprint, Vec::new()) {
        Outcome::Replay(_) => Outcome::Done(Err(ApiError::precondition(
            "ERASED",
            "request_id",
            "this request was applied, but the person it was about has since been erased; its response is gone",
        ))),
        refused => refused,
    }
}

/// The keys of a batch that were loaded, so a unit can tell "absent" from
/// "not asked for" (a bug, reported as INTERNAL rather than as NOT_FOUND).
#[derive(Debug)]
pub struct Rows<K, V> {
    slots: HashMap<K, Option<V>>,
    dirty: Vec<K>,
    dirty_set: HashSet<K>,
    originals: HashMap<K, V>,
}

impl<K, V> Default for Rows<K, V> {
    fn default() -> Self {
        Rows { slots: HashMap::new(), dirty: Vec::new(), dirty_set: HashSet::new(), originals: HashMap::new() }
    }
}

impl<K: std::hash::Hash + Eq + Clone + std::fmt::Display, V> Rows<K, V> {
    /// Records what the database holds for `key` (`None`: no row).
    pub fn loaded(&mut self, key: K, value: Option<V>) {
        self.slots.entry(key).or_insert(value);
    }

    /// The row for `key`; an error if the unit did not ask for it.
    pub fn get<Q>(&self, key: &Q) -> ApiResult<Option<&V>>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + std::fmt::Display + ?Sized,
    {
        match self.slots.get(key) {
            Some(slot) => Ok(slot.as_ref()),
            None => Err(ApiError::Internal(anyhow::anyhow!("a unit read row {key} it did not ask for"))),
        }
    }

    /// Sets the row for `key`; it is written at flush.
    pub fn put(&mut self, key: K, value: V) {
        let first = self.dirty_set.insert(key.clone());
        let before = self.slots.insert(key.clone(), Some(value)).flatten();
        if first {
            // What the database holds, to write only what changed.
            if let Some(before) = before {
                self.originals.insert(key.clone(), before);
            }
            self.dirty.push(key);
        }
    }

    /// The rows changed since loading, in the order first changed.
    pub fn changed(&self) -> impl Iterator<Item = &V> {
        self.dirty.iter().filter_map(|k| self.slots.get(k).and_then(Option::as_ref))
    }

    /// The rows changed since loading, each with what the database holds
    /// (`None` for a new row), in the order first changed.
    pub fn changes(&self) -> impl Iterator<Item = (Option<&V>, &V)> {
        self.dirty.iter().filter_map(|k| Some((self.originals.get(k), self.slots.get(k)?.as_ref()?)))
    }

    /// Every row held (loaded or changed), for the cache once committed.
    pub fn into_present(self) -> impl Iterator<Item = (K, V)> {
        self.slots.into_iter().filter_map(|(k, v)| Some((k, v?)))
    }

    /// Keys of `keys` not loaded yet, each once.
    pub fn missing<'k>(&self, keys: impl IntoIterator<Item = &'k K>) -> Vec<&'k K>
    where
        K: 'k,
    {
        let mut seen = HashSet::new();
        keys.into_iter().filter(|k| !self.slots.contains_key(*k) && seen.insert(*k)).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use themodel_proto::kpi::v1::KpiEvent;

    use super::*;

    /// Named counters: the smallest store that shows what the writer does.
    struct Counters {
        db: Db,
        loads: Arc<AtomicUsize>,
        cache: crate::Cache<String, i64>,
    }

    impl Counters {
        fn new(db: &Db, loads: &Arc<AtomicUsize>) -> Self {
            Counters { db: db.clone(), loads: loads.clone(), cache: crate::Cache::new(100) }
        }
    }

    #[derive(Default)]
    struct CounterRows(Rows<String, i64>);

    impl Store for Counters {
        type Key = String;
        type State = CounterRows;
        type Change = (String, i64);
        type Event = KpiEvent;

        async fn load(&self, conn: &mut Conn, keys: &[String], state: &mut CounterRows) -> Result<(), sqlx::Error> {
            let missing = state.0.missing(keys);
            let wanted: Vec<&str> = self.cache.fill(&mut state.0, missing).into_iter().map(String::as_str).collect();
            if !wanted.is_empty() {
                self.loads.fetch_add(1, Ordering::SeqCst);
            }
            let rows: Vec<(String, i64)> =
                crate::db::select_in(conn, &self.db, "SELECT name, n FROM counters WHERE name IN ", "", &wanted)
                    .await?;
            let found: HashMap<String, i64> = rows.into_iter().collect();
            for k in wanted {
                state.0.loaded(k.to_owned(), found.get(k).copied());
            }
            Ok(())
        }

        fn apply(&self, state: &mut CounterRows, (name, n): (String, i64)) {
            state.0.put(name, n);
        }

        fn remember(&self, state: CounterRows) {
            self.cache.remember(state.0);
        }

        fn forget(&self) {
            self.cache.forget();
        }

        fn flush<'s>(&self, script: &mut Script<'s>, state: &'s CounterRows) {
            let rows = state.0.dirty.iter().filter_map(|k| state.0.get(k.as_str()).ok().flatten().map(|n| (k, *n)));
            script.insert_rows(
                "INSERT INTO counters (name, n)",
                2,
                " ON CONFLICT (name) DO UPDATE SET n = excluded.n",
                rows,
                |q, (name, n)| q.bind(name.as_str()).bind(n),
            );
        }
    }

    async fn counters() -> (tempfile::TempDir, Db, Arc<AtomicUsize>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::connect(&format!("sqlite://{}/w.db", dir.path().display())).await.expect("db");
        let empty = tempfile::tempdir().expect("temp dir");
        db.migrate(Migrator::new(empty.path()).await.expect("migrator")).await.expect("migrate");
        sqlx::query("CREATE TABLE counters (name TEXT PRIMARY KEY, n BIGINT NOT NULL)")
            .execute(db.writer())
            .await
            .expect("table");
        (dir, db, Arc::new(AtomicUsize::new(0)))
    }

    use sqlx::migrate::Migrator;

    fn request(id: &str, name: &str) -> (Call, String) {
        let req = tonic::Request::new(prost_types::Timestamp { seconds: name.len() as i64, nanos: 0 });
        (Call::new(&req, "/test.Counters/Add", id).expect("call"), name.to_owned())
    }

    /// Adds one to counter `name`, refusing counter "bad".
    fn add(w: &Writer<Counters>, call: Call, name: String) -> impl Future<Output = ApiResult<KpiEvent>> + 'static {
        let w = w.clone();
        async move {
            w.execute::<KpiEvent>(call, vec![Need::Row(name.clone())], move |cx: &Ctx<'_, Counters>| {
                if name == "bad" {
                    return Err(ApiError::precondition("STATE", "bad", "refused"));
                }
                let n = cx.state.0.get(name.as_str())?.copied().unwrap_or(0) + 1;
                let event = KpiEvent { occurred_at: Some(crate::time::to_timestamp(n)), event: None };
                Ok(Done::new(&event).change((name.clone(), n)).effects(Effects::default().event(event)))
            })
            .await
        }
    }

    /// Waits until `n` units wait in `w`'s queue.
    async fn queued(w: &Writer<Counters>, n: usize) {
        while w.queue.max_capacity() - w.queue.capacity() < n {
            tokio::task::yield_now().await;
        }
    }

    /// Queues every call before the writer starts, so they share one batch.
    async fn one_batch(calls: Vec<(Call, String)>) -> (Vec<ApiResult<KpiEvent>>, Db, usize, tempfile::TempDir) {
        let (dir, db, loads) = counters().await;
        let stop = CancellationToken::new();
        let (w, task) = writer(&db, &loads, &stop);
        let n = calls.len();
        let pending: Vec<_> = calls.into_iter().map(|(call, name)| tokio::spawn(add(&w, call, name))).collect();
        queued(&w, n).await;
        let running = tokio::spawn(task);
        let mut results = Vec::new();
        for p in pending {
            results.push(p.await.expect("call task"));
        }
        stop.cancel();
        running.await.expect("writer");
        (results, db, loads.load(Ordering::SeqCst), dir)
    }

    async fn counter(db: &Db, name: &str) -> Option<i64> {
        sqlx::query_scalar("SELECT n FROM counters WHERE name = $1")
            .bind(name)
            .fetch_optional(db.reader())
            .await
            .expect("read")
    }

    /// A writer of counters on `db`, and its task (not yet running).
    fn writer(
        db: &Db,
        loads: &Arc<AtomicUsize>,
        stop: &CancellationToken,
    ) -> (Writer<Counters>, impl Future<Output = ()> + Send + 'static) {
        Writer::new(
            Counters::new(db, loads),
            db.clone(),
            Clock::manual(0),
            SharedDefinition::default(),
            Outbox::none(),
            WriterConfig::default(),
            stop.clone(),
        )
    }

    fn running_writer(db: &Db, loads: &Arc<AtomicUsize>, stop: &CancellationToken) -> Writer<Counters> {
        let (w, task) = writer(db, loads, stop);
        tokio::spawn(task);
        w
    }

    #[tokio::test]
    async fn a_writer_keeps_what_it_committed_until_another_writer_writes() {
        let (_dir, db, loads) = counters().await;
        let other_loads = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (w1, w2) = (running_writer(&db, &loads, &stop), running_writer(&db, &other_loads, &stop));
        add(&w1, Call::default(), "a".into()).await.expect("a = 1");
        add(&w1, Call::default(), "a".into()).await.expect("a = 2");
        assert_eq!(loads.load(Ordering::SeqCst), 1, "the second batch took a from memory");
        // Another writer on the same database (a replica, say) changes a.
        add(&w2, Call::default(), "a".into()).await.expect("a = 3");
        add(&w1, Call::default(), "a".into()).await.expect("a = 4");
        assert_eq!(loads.load(Ordering::SeqCst), 2, "the first writer noticed and read a again");
        assert_eq!(counter(&db, "a").await, Some(4), "no update lost");
        stop.cancel();
    }

    #[tokio::test]
    async fn a_failing_unit_leaves_its_neighbours_committed_and_itself_without_effect() {
        let (results, db, loads, _dir) =
            one_batch(vec![request("1", "a"), request("2", "bad"), request("3", "a"), request("4", "b")]).await;
        assert_eq!(loads, 1, "one batch");
        assert!(results[0].is_ok() && results[2].is_ok() && results[3].is_ok());
        assert_eq!(results[1].as_ref().map_err(ApiError::code).err(), Some(Code::FailedPrecondition));
        assert_eq!(counter(&db, "a").await, Some(2), "the later unit saw the earlier one's change");
        assert_eq!(counter(&db, "b").await, Some(1));
        assert_eq!(counter(&db, "bad").await, None);
        let (seq, keys): (i64, i64) =
            sqlx::query_as("SELECT (SELECT seq FROM stream_head WHERE id = 1), (SELECT COUNT(*) FROM idempotency)")
                .fetch_one(db.reader())
                .await
                .expect("read");
        assert_eq!((seq, keys), (3, 3), "three events and three records; none of the refused unit");
    }

    #[tokio::test]
    async fn the_same_request_id_twice_in_one_batch_is_applied_once() {
        let (results, db, loads, _dir) =
            one_batch(vec![request("same", "a"), request("same", "a"), request("other", "a")]).await;
        assert_eq!(loads, 1, "one batch");
        let first = results[0].as_ref().expect("first");
        assert_eq!(results[1].as_ref().expect("repeat"), first, "the repeat gets the first answer");
        assert_eq!(counter(&db, "a").await, Some(2), "applied once, plus the other request");
        // Reusing the id for a different request is refused, naming the field.
        let (results, _, _, _dir) = one_batch(vec![request("same", "a"), request("same", "bb")]).await;
        match &results[1] {
            Err(ApiError::InvalidArgument(v)) => assert_eq!(v[0].field, "request_id"),
            other => panic!("{other:?}"),
        }
    }

    /// Adds one to counter `name` as [`add`] does, naming it as the record
    /// the unit is about; or, with `erase`, erases the person of `name`.
    fn unit(
        w: &Writer<Counters>,
        call: Call,
        name: &str,
        erase: bool,
    ) -> impl Future<Output = ApiResult<KpiEvent>> + use<> {
        let (w, name) = (w.clone(), name.to_owned());
        async move {
            w.execute::<KpiEvent>(call, vec![Need::Row(name.clone())], move |cx: &Ctx<'_, Counters>| {
                let n = cx.state.0.get(name.as_str())?.copied().unwrap_or(0) + 1;
                let event = KpiEvent { occurred_at: Some(crate::time::to_timestamp(n)), event: None };
                let done = Done::new(&event).change((name.clone(), n));
                Ok(if erase { done.erased([name.clone()]) } else { done.about(name.clone()) })
            })
            .await
        }
    }

    #[tokio::test]
    async fn erasing_a_person_scrubs_the_responses_about_them_and_no_others() {
        let (_dir, db, loads) = counters().await;
        let stop = CancellationToken::new();
        let (w, task) = writer(&db, &loads, &stop);
        // Committed before: a response about a, one about b.
        let running = tokio::spawn(task);
        unit(&w, request("before", "a").0, "a", false).await.expect("a");
        unit(&w, request("b", "b").0, "b", false).await.expect("b");
        stop.cancel();
        running.await.expect("writer");
        // In one batch: another response about a, then a's erasure.
        let stop = CancellationToken::new();
        let (w, task) = writer(&db, &loads, &stop);
        let same_batch = tokio::spawn(unit(&w, request("same-batch", "a").0, "a", false));
        queued(&w, 1).await;
        let erasure = tokio::spawn(unit(&w, request("erase", "a").0, "a", true));
        queued(&w, 2).await;
        let running = tokio::spawn(task);
        same_batch.await.expect("task").expect("same batch");
        erasure.await.expect("task").expect("erasure");
        let rows: Vec<(String, Option<i64>)> =
            sqlx::query_as("SELECT request_key, erased_at FROM idempotency ORDER BY request_key")
                .fetch_all(db.reader())
                .await
                .expect("read");
        let scrubbed: Vec<(String, bool)> = rows.into_iter().map(|(k, at)| (k, at.is_some())).collect();
        let key = |id: &str| format!("/test.Counters/Add {id}");
        let expected = [(key("b"), false), (key("before"), true), (key("erase"), false), (key("same-batch"), true)];
        assert_eq!(scrubbed, expected, "a's responses scrubbed, the erasure's own and b's kept");
        // A retry of a scrubbed request is refused; the erasure's replays.
        let retry = unit(&w, request("before", "a").0, "a", false).await;
        assert_eq!(retry.map_err(|e| e.code()).err(), Some(Code::FailedPrecondition));
        unit(&w, request("erase", "a").0, "a", true).await.expect("the erasure's retry replays");
        stop.cancel();
        running.await.expect("writer");
    }

    #[tokio::test]
    async fn a_call_whose_deadline_passed_is_not_executed() {
        let (mut call, name) = request("late", "a");
        call.deadline = Some(std::time::Instant::now());
        let (results, db, _, _dir) = one_batch(vec![(call, name), request("on-time", "b")]).await;
        assert_eq!(results[0].as_ref().map_err(ApiError::code).err(), Some(Code::DeadlineExceeded));
        assert_eq!(counter(&db, "a").await, None);
        assert_eq!(counter(&db, "b").await, Some(1));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let (_dir, db, loads) = counters().await;
        let config = WriterConfig { queue: 2, max_batch: 8 };
        let (w, _task) = Writer::new(
            Counters::new(&db, &loads),
            db,
            Clock::manual(0),
            SharedDefinition::default(),
            Outbox::none(),
            config,
            CancellationToken::new(),
        );
        // The task is never run: two calls fill the queue, the third is refused.
        let _a = tokio::spawn(add(&w, Call::default(), "a".into()));
        let _b = tokio::spawn(add(&w, Call::default(), "b".into()));
        while w.queue.capacity() > 0 {
            tokio::task::yield_now().await;
        }
        let refused = add(&w, Call::default(), "c".into()).await;
        assert_eq!(refused.map_err(|e| e.code()).err(), Some(Code::ResourceExhausted));
    }

    use tonic::Code;
}
