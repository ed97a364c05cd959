//! Transactional outbox: a hand-over is the receiver's own request, encoded
//! and written into the sender's database in the transaction that causes
//! it, with the W3C trace context of the call that made it. One generic
//! relay delivers every kind: it calls the receiver's method with the stored
//! bytes, in the trace of the original call. The hand-over id is the
//! receiver's `request_id`, so a delivery repeated after a crash or a lost
//! acknowledgement is answered from the receiver's idempotency record.
//! Together: never lost, never doubled.
//!
//! Order: hand-overs to one destination go in the order they were made.
//! When a receiver is down (a retryable failure) the rest of its queue
//! waits; a hand-over the receiver refuses for good only holds back later
//! hand-overs about the same record, and after `dead_after` refusals it is
//! set aside as a dead letter, so the others still arrive. Dead letters are
//! listed, retried and dropped through [`OutboxAdmin`].
//!
//! Several replicas can run relays on one database: a relay claims hand-overs
//! by setting a lease in one conditional UPDATE, so each has at most one relay
//! working on it, and an expired lease (a crashed relay) frees it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use prost_types::Any;
use rand::Rng;
use themodel_proto::HandoverRequest;
use themodel_proto::common::v1 as pb;
use themodel_proto::common::v1::outbox_service_server::{OutboxService, OutboxServiceServer};
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};
use tracing::Instrument;

use crate::call::Call;
use crate::db::{self, Conn, Db, Script};
use crate::error::{ApiError, ApiResult};
use crate::telemetry::{self, PeerChannel};
use crate::time::{self, Clock, Micros};
use crate::validate::{self, Violations};
use crate::work::{Done, Need, Store, Writer};
use crate::{consistency, events, paging};

/// A hand-over to write into the outbox: the receiver's request, encoded,
/// with its `request_id` set to the hand-over id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    pub id: String,
    pub destination: &'static str,
    pub method: &'static str,
    pub type_url: String,
    pub body: Vec<u8>,
    pub subject_id: String,
}

impl Handover {
    /// Hands `request` to its receiver under a new hand-over id.
    pub fn new<R: HandoverRequest>(mut request: R) -> Handover {
        let id = themodel_values::HandoverId::generate().into_string();
        request.set_request_id(id.clone());
        Handover {
            subject_id: request.subject_id().to_owned(),
            id,
            destination: R::DESTINATION,
            method: R::METHOD,
            type_url: R::type_url(),
            body: request.encode_to_vec(),
        }
    }
}

/// Where a hand-over is in its life (the `state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Pending,
    Delivered,
    Dead,
    Dropped,
}

impl State {
    fn code(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Delivered => "delivered",
            State::Dead => "dead",
            State::Dropped => "dropped",
        }
    }

    fn from_code(code: &str) -> Option<State> {
        [State::Pending, State::Delivered, State::Dead, State::Dropped].into_iter().find(|s| s.code() == code)
    }

    fn to_proto(self) -> pb::HandoverState {
        match self {
            State::Pending => pb::HandoverState::Pending,
            State::Delivered => pb::HandoverState::Delivered,
            State::Dead => pb::HandoverState::Dead,
            State::Dropped => pb::HandoverState::Dropped,
        }
    }
}

/// A hand-over as stored.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: String,
    pub destination: String,
    pub method: String,
    pub type_url: String,
    pub body: Vec<u8>,
    pub subject_id: String,
    pub trace: String,
    pub state: State,
    pub attempts: i64,
    pub created_at: Micros,
    pub next_attempt_at: Micros,
    pub dead_at: Option<Micros>,
    pub last_error_code: String,
    pub last_error: String,
}

#[derive(sqlx::FromRow)]
struct RawRow {
    id: String,
    destination: String,
    method: String,
    type_url: String,
    body: Vec<u8>,
    subject_id: String,
    trace: String,
    state: String,
    attempts: i64,
    created_at: i64,
    next_attempt_at: i64,
    dead_at: Option<i64>,
    last_error_code: String,
    last_error: String,
}

const COLUMNS: &str = "id, destination, method, type_url, body, subject_id, trace, state, attempts, created_at, \
    next_attempt_at, dead_at, last_error_code, last_error";

impl TryFrom<RawRow> for Row {
    type Error = sqlx::Error;

    fn try_from(r: RawRow) -> Result<Row, sqlx::Error> {
        let state = State::from_code(&r.state)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown hand-over state {:?}", r.state).into()))?;
        Ok(Row {
            id: r.id,
            destination: r.destination,
            method: r.method,
            type_url: r.type_url,
            body: r.body,
            subject_id: r.subject_id,
            trace: r.trace,
            state,
            attempts: r.attempts,
            created_at: r.created_at,
            next_attempt_at: r.next_attempt_at,
            dead_at: r.dead_at,
            last_error_code: r.last_error_code,
            last_error: r.last_error,
        })
    }
}

impl Row {
    pub fn to_proto(&self) -> pb::Handover {
        pb::Handover {
            handover_id: self.id.clone(),
            destination: self.destination.clone(),
            method: self.method.clone(),
            request: Some(Any { type_url: self.type_url.clone(), value: self.body.clone() }),
            state: self.state.to_proto() as i32,
            attempts: i32::try_from(self.attempts).unwrap_or(i32::MAX),
            last_error_code: self.last_error_code.clone(),
            last_error: self.last_error.clone(),
            created_at: Some(time::to_timestamp(self.created_at)),
            next_attempt_at: (self.state == State::Pending).then(|| time::to_timestamp(self.next_attempt_at)),
            dead_at: time::to_timestamp_opt(self.dead_at),
            subject_id: self.subject_id.clone(),
        }
    }
}

/// An operator's change to a hand-over, made through the writer.
#[derive(Debug, Clone)]
pub struct Change {
    id: String,
    to: State,
}

impl Change {
    pub(crate) fn apply_to(&self, rows: &mut HashMap<String, Row>) {
        if let Some(row) = rows.get_mut(&self.id) {
            row.state = self.to;
            if self.to == State::Pending {
                row.attempts = 0;
                row.dead_at = None;
            }
        }
    }
}

/// The hand-overs `ids`, by id.
pub(crate) async fn load(conn: &mut Conn, db: &Db, ids: &[&str]) -> Result<HashMap<String, Row>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<RawRow> =
        db::select_in(conn, db, &format!("SELECT {COLUMNS} FROM outbox WHERE id IN "), "", ids).await?;
    rows.into_iter().map(|r| Row::try_from(r).map(|r| (r.id.clone(), r))).collect()
}

/// Writes new hand-overs (each with the trace context of the call that made it).
pub(crate) fn insert<'q>(script: &mut Script<'q>, rows: &'q [(Handover, &'q str)], now: Micros) {
    script.insert_rows(
        "INSERT INTO outbox (id, destination, method, type_url, body, subject_id, trace, state, attempts, \
         created_at, next_attempt_at, last_error_code, last_error)",
        13,
        "",
        rows,
        |b, (h, trace)| {
            b.bind(h.id.as_str())
                .bind(h.destination)
                .bind(h.method)
                .bind(h.type_url.as_str())
                .bind(h.body.as_slice())
                .bind(h.subject_id.as_str())
                .bind(*trace)
                .bind(State::Pending.code())
                .bind(0i64)
                .bind(now)
                .bind(now)
                .bind("")
                .bind("")
        },
    );
}

/// Writes operators' changes.
pub(crate) fn update<'q>(script: &mut Script<'q>, db: &Db, changes: &'q [Change], now: Micros) {
    for c in changes {
        let (p1, p2, p3) = (db.param(1), db.param(2), db.param(3));
        let sql = match c.to {
            State::Pending => format!(
                "UPDATE outbox SET state = {p1}, attempts = 0, dead_at = NULL, lease_until = NULL, \
                 next_attempt_at = {p2} WHERE id = {p3}"
            ),
            _ => format!("UPDATE outbox SET state = {p1}, lease_until = NULL, next_attempt_at = {p2} WHERE id = {p3}"),
        };
        script.push(&sql, |b| b.bind(c.to.code()).bind(now).bind(c.id.as_str()));
    }
}

/// Scrubs the hand-overs about `subjects` (their person was erased): the
/// requests of delivered and dropped ones are emptied (the envelope stays),
/// and dead letters are dropped, emptied too, never to be delivered. A
/// pending hand-over is left to arrive: the erasure's own hand-over to the
/// same receiver follows it, and delivery empties it.
pub(crate) fn erase<'q>(script: &mut Script<'q>, db: &Db, subjects: &'q [String], now: Micros) {
    for part in subjects.chunks(db::CHUNKS[0]) {
        let sql = format!(
            "UPDATE outbox SET body = {p1}, \
             last_error = CASE WHEN state = 'dead' THEN {p2} ELSE last_error END, \
             next_attempt_at = CASE WHEN state = 'dead' THEN {p3} ELSE next_attempt_at END, \
             state = CASE WHEN state = 'dead' THEN 'dropped' ELSE state END \
             WHERE subject_id IN {list} AND state IN ('delivered', 'dropped', 'dead')",
            p1 = db.param(1),
            p2 = db.param(2),
            p3 = db.param(3),
            list = db.list(part.len(), 4)
        );
        script.push(&sql, |b| {
            let b = b.bind(&[][..] as &[u8]).bind("dropped: the person it was about was erased").bind(now);
            part.iter().fold(b, |b, s| b.bind(s.as_str()))
        });
    }
}

/// What handlers hold to learn when the hand-overs they made were tried.
#[derive(Clone, Default)]
pub struct Outbox(Option<Arc<Signals>>);

#[derive(Default)]
struct Signals {
    wake: Notify,
    /// Callers waiting for a hand-over's first try; each is sent the
    /// receiver's consistency token when it was delivered.
    waiters: Mutex<Waiters>,
}

/// Per hand-over id, who waits for its first try.
type Waiters = HashMap<String, Vec<oneshot::Sender<Option<String>>>>;

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Outbox")
    }
}

impl Outbox {
    /// For a service that hands nothing over.
    pub fn none() -> Self {
        Outbox(None)
    }

    fn waiters(&self) -> Option<std::sync::MutexGuard<'_, Waiters>> {
        let signals = self.0.as_ref()?;
        Some(signals.waiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Called by the writer right after committing hand-overs: wakes the relay.
    pub(crate) fn committed(&self, _ids: &[String]) {
        if let Some(s) = &self.0 {
            s.wake.notify_one();
        }
    }

    /// Waits until each of `ids` was tried once (delivered or not), or
    /// `limit`; returns the consistency tokens the receivers answered the
    /// delivered ones with.
    pub(crate) async fn wait_attempted(&self, ids: &[String], limit: Duration) -> Vec<String> {
        let mut tokens = Vec::new();
        let receivers: Vec<oneshot::Receiver<Option<String>>> = {
            let Some(mut waiters) = self.waiters() else { return tokens };
            ids.iter()
                .map(|id| {
                    let (tx, rx) = oneshot::channel();
                    waiters.entry(id.clone()).or_default().push(tx);
                    rx
                })
                .collect()
        };
        let all = async {
            for rx in receivers {
                if let Ok(Some(token)) = rx.await {
                    tokens.push(token);
                }
            }
        };
        let _ = tokio::time::timeout(limit, all).await;
        // A hand-over tried before its waiter was registered left it behind.
        if let Some(mut waiters) = self.waiters() {
            for id in ids {
                if let Some(list) = waiters.get_mut(id) {
                    list.retain(|tx| !tx.is_closed());
                    if list.is_empty() {
                        waiters.remove(id);
                    }
                }
            }
        }
        tokens
    }

    fn attempted(&self, id: &str, token: Option<&str>) {
        if let Some(mut waiters) = self.waiters() {
            for tx in waiters.remove(id).unwrap_or_default() {
                let _ = tx.send(token.map(str::to_owned));
            }
        }
    }
}

/// How many hand-overs a relay claims at once, and for how long.
const BATCH: i64 = 256;
const LEASE: Micros = 30 * time::SECOND;
const MAX_BACKOFF: Micros = 30 * time::SECOND;
/// Longest a single delivery may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// The relay of one service: delivers its hand-overs to the peers it names.
pub struct Relay {
    db: Db,
    peers: HashMap<&'static str, PeerChannel>,
    clock: Clock,
    poll: Duration,
    dead_after: i64,
    outbox: Outbox,
}

impl Relay {
    /// A relay delivering to `peers` (destination name → channel), and the
    /// [`Outbox`] handle the writer and handlers use to reach it.
    pub fn new(
        db: Db,
        peers: HashMap<&'static str, PeerChannel>,
        clock: Clock,
        poll: Duration,
        dead_after: u32,
    ) -> (Arc<Relay>, Outbox) {
        let outbox = Outbox(Some(Arc::new(Signals::default())));
        let relay = Relay { db, peers, clock, poll, dead_after: i64::from(dead_after.max(1)), outbox: outbox.clone() };
        (Arc::new(relay), outbox)
    }

    /// The destinations this relay delivers to.
    pub fn destinations(&self) -> Vec<&'static str> {
        let mut d: Vec<_> = self.peers.keys().copied().collect();
        d.sort_unstable();
        d
    }

    /// Delivers until `shutdown`; the batch in hand is finished first.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        tracing::debug!("outbox relay started");
        let Some(signals) = self.outbox.0.clone() else { return };
        while !shutdown.is_cancelled() {
            let worked = match self.pass().await {
                Ok(n) => n > 0,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay pass failed");
                    false
                }
            };
            if worked {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = signals.wake.notified() => {}
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
        tracing::debug!("outbox relay stopped");
    }

    /// One pass over every due hand-over; returns how many were tried.
    async fn pass(&self) -> Result<usize, sqlx::Error> {
        let now = self.clock.now();
        let claimed: Vec<RawRow> = sqlx::query_as(&format!(
            "UPDATE outbox SET lease_until = $1 \
             WHERE id IN (SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at <= $2 \
                            AND (lease_until IS NULL OR lease_until < $2) ORDER BY created_at, id LIMIT $3) \
               AND state = 'pending' AND (lease_until IS NULL OR lease_until < $2) \
             RETURNING {COLUMNS}"
        ))
        .bind(now + LEASE)
        .bind(now)
        .bind(BATCH)
        .fetch_all(self.db.writer())
        .await?;
        let mut rows = claimed.into_iter().map(Row::try_from).collect::<Result<Vec<_>, _>>()?;
        rows.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));

        let mut down: HashSet<String> = HashSet::new();
        let mut held: HashSet<(String, String)> = HashSet::new();
        let mut delivered = Vec::new();
        let mut released = Vec::new();
        let mut tried = 0;
        for row in &rows {
            let subject = (row.destination.clone(), row.subject_id.clone());
            if down.contains(&row.destination) || held.contains(&subject) {
                released.push(row.id.as_str());
                self.outbox.attempted(&row.id, None);
                continue;
            }
            tried += 1;
            let mut token = None;
            match self.send(row).await {
                Ok(answered) => {
                    tracing::info!(handover = %row.id, to = %row.destination, method = %row.method, "hand-over delivered");
                    delivered.push(row.id.as_str());
                    token = answered;
                }
                Err(status) => {
                    let attempts = row.attempts + 1;
                    let retryable = is_retryable(status.code());
                    if !retryable && attempts >= self.dead_after {
                        self.dead_letter(row, attempts, &status).await?;
                    } else {
                        let delay = backoff(row.attempts);
                        tracing::warn!(
                            handover = %row.id, to = %row.destination, method = %row.method, attempts,
                            retry_in_ms = delay / 1000, code = ?status.code(), error = %status.message(),
                            "hand-over not delivered; will retry"
                        );
                        sqlx::query(
                            "UPDATE outbox SET attempts = $1, next_attempt_at = $2, lease_until = NULL, \
                             last_error_code = $3, last_error = $4 WHERE id = $5 AND state = 'pending'",
                        )
                        .bind(attempts)
                        .bind(self.clock.now() + delay)
                        .bind(code_name(status.code()))
                        .bind(status.message())
                        .bind(&row.id)
                        .execute(self.db.writer())
                        .await?;
                    }
                    if retryable {
                        down.insert(row.destination.clone());
                    } else {
                        held.insert(subject);
                    }
                }
            }
            self.outbox.attempted(&row.id, token.as_deref());
        }
        if !delivered.is_empty() {
            for part in delivered.chunks(db::CHUNKS[0]) {
                // A delivered request is the receiver's to keep: the outbox
                // keeps its envelope, not the personal data in it.
                let sql = format!(
                    "UPDATE outbox SET state = 'delivered', delivered_at = {}, attempts = attempts + 1, \
                     lease_until = NULL, body = {} WHERE id IN {}",
                    self.db.param(1),
                    self.db.param(2),
                    self.db.list(part.len(), 3)
                );
                let mut q = sqlx::query(&sql).bind(self.clock.now()).bind(&[][..] as &[u8]);
                for id in part {
                    q = q.bind(*id);
                }
                q.execute(self.db.writer()).await?;
            }
        }
        for part in released.chunks(db::CHUNKS[0]) {
            let sql = format!("UPDATE outbox SET lease_until = NULL WHERE id IN {}", self.db.list(part.len(), 1));
            let mut q = sqlx::query(&sql);
            for id in part {
                q = q.bind(*id);
            }
            q.execute(self.db.writer()).await?;
        }
        Ok(tried)
    }

    /// Sets a hand-over aside and records it in the stream, in one transaction.
    async fn dead_letter(&self, row: &Row, attempts: i64, status: &Status) -> Result<(), sqlx::Error> {
        tracing::error!(
            handover = %row.id, to = %row.destination, method = %row.method, attempts,
            code = ?status.code(), error = %status.message(),
            "hand-over refused for good; set aside as a dead letter"
        );
        let now = self.clock.now();
        let mut tx = self.db.begin().await?;
        let moved = sqlx::query(
            "UPDATE outbox SET state = 'dead', dead_at = $1, attempts = $2, lease_until = NULL, \
             last_error_code = $3, last_error = $4 WHERE id = $5 AND state = 'pending'",
        )
        .bind(now)
        .bind(attempts)
        .bind(code_name(status.code()))
        .bind(status.message())
        .bind(&row.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 1 {
            let event = pb::OutboxEvent {
                occurred_at: Some(time::to_timestamp(now)),
                event: Some(pb::outbox_event::Event::DeadLettered(pb::HandoverDeadLettered {
                    handover_id: row.id.clone(),
                    destination: row.destination.clone(),
                    method: row.method.clone(),
                    attempts: i32::try_from(attempts).unwrap_or(i32::MAX),
                    status_code: code_name(status.code()).to_owned(),
                    status_message: status.message().to_owned(),
                    subject_id: row.subject_id.clone(),
                })),
            };
            let packed = [events::pack(&event)];
            let mut script = Script::new(&self.db);
            events::append(&mut script, &self.db, &packed, now);
            script.run(&mut tx).await?;
            let head: i64 = sqlx::query_scalar("SELECT seq FROM stream_head WHERE id = 1").fetch_one(&mut *tx).await?;
            tx.commit().await?;
            self.db.stream_reached(head);
            return Ok(());
        }
        tx.commit().await
    }

    /// Calls the receiver's method with the stored request, in the trace of
    /// the call that made the hand-over; returns the receiver's consistency
    /// token.
    async fn send(&self, row: &Row) -> Result<Option<String>, Status> {
        let channel = self
            .peers
            .get(row.destination.as_str())
            .ok_or_else(|| Status::unavailable(format!("no address is configured for {}", row.destination)))?;
        let path = http::uri::PathAndQuery::try_from(row.method.as_str())
            .map_err(|_| Status::internal(format!("stored method {:?} is not a path", row.method)))?;
        let span = tracing::info_span!("hand-over", handover = %row.id, to = %row.destination, rpc = %row.method);
        telemetry::set_parent(&span, &row.trace);
        let mut request = tonic::Request::new(bytes::Bytes::from(row.body.clone()));
        request.set_timeout(CALL_TIMEOUT);
        telemetry::inject(&span, &row.trace, request.metadata_mut());
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        async move {
            grpc.ready()
                .await
                .map_err(|e| Status::unavailable(format!("{} is not reachable: {e}", row.destination)))?;
            let answer = grpc.unary(request, path, RawCodec).await?;
            let token = answer.metadata().get(consistency::HEADER).and_then(|v| v.to_str().ok());
            Ok(token.map(str::to_owned))
        }
        .instrument(span)
        .await
    }
}

/// Whether retrying can fix a failure (the receiver down, overloaded, or
/// in a passing fault), as opposed to a refusal of the request itself.
pub fn is_retryable(code: Code) -> bool {
    !matches!(
        code,
        Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::NotFound
            | Code::AlreadyExists
            | Code::OutOfRange
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::Unimplemented
    )
}

/// The gRPC code's name, as the API reports it ("INVALID_ARGUMENT").
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Exponential backoff from 200 ms, capped at 30 s, with ±20% jitter so a
/// recovering receiver is not hit by every sender at once.
fn backoff(attempts: i64) -> Micros {
    let base = 200_000i64.saturating_mul(1i64 << attempts.clamp(0, 20)).min(MAX_BACKOFF);
    let jitter = rand::rng().random_range(0.8..1.2);
    (base as f64 * jitter) as Micros
}

/// Sends stored request bytes as they are and ignores the response body: the
/// relay needs only the status.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = bytes::Bytes;
    type Decode = ();
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = Status;

    fn encode(&mut self, item: bytes::Bytes, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Status> {
        use bytes::BufMut;
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = ();
    type Error = Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<()>, Status> {
        use bytes::Buf;
        let n = src.remaining();
        src.advance(n);
        Ok(Some(()))
    }
}

/// `themodel.common.v1.OutboxService` over a service's outbox.
pub struct OutboxAdmin<S: Store> {
    writer: Writer<S>,
    destinations: Vec<&'static str>,
    clock: Clock,
}

impl<S: Store> OutboxAdmin<S> {
    pub fn server(writer: Writer<S>, destinations: Vec<&'static str>, clock: Clock) -> OutboxServiceServer<Self> {
        OutboxServiceServer::new(OutboxAdmin { writer, destinations, clock })
    }
}

const ADMIN: &str = "/themodel.common.v1.OutboxService/";

impl<S: Store> OutboxAdmin<S> {
    async fn stats(&self) -> ApiResult<pb::GetOutboxStatsResponse> {
        type Counts = (String, String, i64, Option<i64>, Option<i64>);
        let rows: Vec<Counts> = sqlx::query_as(
            "SELECT destination, state, COUNT(*), MIN(created_at), CAST(SUM(attempts) AS BIGINT) FROM outbox \
             GROUP BY destination, state",
        )
        .fetch_all(self.writer.db().reader())
        .await?;
        let now = self.clock.now();
        let mut by: std::collections::BTreeMap<String, pb::DestinationStats> = self
            .destinations
            .iter()
            .map(|d| ((*d).to_owned(), pb::DestinationStats { destination: (*d).to_owned(), ..Default::default() }))
            .collect();
        for (destination, state, n, oldest, attempts) in rows {
            let s = by
                .entry(destination.clone())
                .or_insert_with(|| pb::DestinationStats { destination, ..Default::default() });
            match State::from_code(&state) {
                Some(State::Pending) => {
                    s.pending = n;
                    s.failed_attempts = attempts.unwrap_or(0);
                    s.oldest_pending_age = oldest.map(|t| {
                        let age = Duration::from_micros(u64::try_from(now - t).unwrap_or(0));
                        prost_types::Duration::try_from(age).unwrap_or_default()
                    });
                }
                Some(State::Delivered) => s.delivered = n,
                Some(State::Dead) => s.dead_letters = n,
                Some(State::Dropped) => s.dropped = n,
                None => {}
            }
        }
        Ok(pb::GetOutboxStatsResponse { destinations: by.into_values().collect() })
    }

    async fn dead_letters(&self, req: pb::ListDeadLettersRequest) -> ApiResult<pb::ListDeadLettersResponse> {
        let mut v = Violations::new();
        let limit = validate::page_size(&mut v, req.page_size, 50, 500);
        v.finish()?;
        let (at, id) = match paging::decode(&req.page_token, 2)? {
            Some(k) => (paging::int(&k[0])?, k[1].clone()),
            None => (i64::MIN, String::new()),
        };
        let raw: Vec<RawRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM outbox WHERE state = 'dead' AND (created_at > $1 OR (created_at = $1 AND id > $2)) \
             ORDER BY created_at, id LIMIT $3"
        ))
        .bind(at)
        .bind(id)
        .bind(limit + 1)
        .fetch_all(self.writer.db().reader())
        .await?;
        let mut rows = raw.into_iter().map(Row::try_from).collect::<Result<Vec<_>, _>>()?;
        let next_page_token = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|r| paging::encode(&[&r.created_at.to_string(), &r.id])).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListDeadLettersResponse { dead_letters: rows.iter().map(Row::to_proto).collect(), next_page_token })
    }

    /// Moves a dead letter to `to` (pending again, or dropped), through the
    /// writer: idempotent on `request_id` and recorded as an event.
    async fn resolve<R: Message + Default + 'static>(
        &self,
        call: Call,
        id: String,
        to: State,
        reason: String,
        respond: fn(pb::Handover) -> R,
    ) -> ApiResult<R> {
        let needs = vec![Need::Handover(id.clone())];
        self.writer
            .execute(call, needs, move |cx| {
                let row = cx.handover(&id)?;
                if row.state != State::Dead {
                    return Err(ApiError::precondition(
                        "STATE",
                        format!("handover/{id}"),
                        format!("hand-over {id} is {}, not a dead letter", row.state.code()),
                    ));
                }
                let change = Change { id: id.clone(), to };
                let mut rows = HashMap::from([(id.clone(), row.clone())]);
                change.apply_to(&mut rows);
                let after = rows.remove(&id).unwrap_or_else(|| row.clone());
                let fact = match to {
                    State::Pending => pb::outbox_event::Event::Retried(pb::HandoverRetried {
                        handover_id: id.clone(),
                        destination: row.destination.clone(),
                        method: row.method.clone(),
                    }),
                    _ => pb::outbox_event::Event::Dropped(pb::HandoverDropped {
                        handover_id: id.clone(),
                        destination: row.destination.clone(),
                        method: row.method.clone(),
                        reason: reason.clone(),
                    }),
                };
                let event = pb::OutboxEvent { occurred_at: Some(time::to_timestamp(cx.now)), event: Some(fact) };
                Ok(Done::new(&respond(after.to_proto())).outbox(change, event))
            })
            .await
    }
}

#[tonic::async_trait]
impl<S: Store> OutboxService for OutboxAdmin<S> {
    async fn get_outbox_stats(
        &self,
        _request: Request<pb::GetOutboxStatsRequest>,
    ) -> Result<Response<pb::GetOutboxStatsResponse>, Status> {
        Ok(Response::new(self.stats().await?))
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        Ok(Response::new(self.dead_letters(request.into_inner()).await?))
    }

    async fn retry_dead_letter(
        &self,
        request: Request<pb::RetryDeadLetterRequest>,
    ) -> Result<Response<pb::RetryDeadLetterResponse>, Status> {
        let call = Call::new(&request, &format!("{ADMIN}RetryDeadLetter"), &request.get_ref().request_id)?
            .about(&request.get_ref().handover_id);
        let id = handover_id(&request.get_ref().handover_id)?;
        let resp = self
            .resolve(call, id, State::Pending, String::new(), |h| pb::RetryDeadLetterResponse { handover: Some(h) })
            .await?;
        Ok(Response::new(resp))
    }

    async fn drop_dead_letter(
        &self,
        request: Request<pb::DropDeadLetterRequest>,
    ) -> Result<Response<pb::DropDeadLetterResponse>, Status> {
        let call = Call::new(&request, &format!("{ADMIN}DropDeadLetter"), &request.get_ref().request_id)?
            .about(&request.get_ref().handover_id);
        let mut v = Violations::new();
        let reason = v.text("reason", &request.get_ref().reason, 2000);
        v.finish()?;
        let id = handover_id(&request.get_ref().handover_id)?;
        let resp = self
            .resolve(call, id, State::Dropped, reason, |h| pb::DropDeadLetterResponse { handover: Some(h) })
            .await?;
        Ok(Response::new(resp))
    }
}

fn handover_id(s: &str) -> ApiResult<String> {
    themodel_values::HandoverId::parse(s).map(|id| id.into_string()).map_err(|e| ApiError::field("handover_id", e.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert!((160_000..=240_000).contains(&backoff(0)));
        assert!((320_000..=480_000).contains(&backoff(1)));
        assert!(backoff(50) <= (MAX_BACKOFF as f64 * 1.2) as i64);
    }

    #[test]
    fn refusals_that_retrying_cannot_fix() {
        assert!(is_retryable(Code::Unavailable));
        assert!(is_retryable(Code::ResourceExhausted));
        assert!(is_retryable(Code::Internal));
        assert!(is_retryable(Code::DeadlineExceeded));
        assert!(!is_retryable(Code::InvalidArgument));
        assert!(!is_retryable(Code::FailedPrecondition));
        assert!(!is_retryable(Code::NotFound));
    }

    #[test]
    fn a_handover_is_the_receivers_request() {
        use themodel_proto::fieldsales::v1::AcceptOpportunityRequest;
        let h = Handover::new(AcceptOpportunityRequest { opportunity_id: "opp-1".into(), ..Default::default() });
        assert_eq!(h.destination, "field-sales");
        assert_eq!(h.subject_id, "opp-1");
        let sent = AcceptOpportunityRequest::decode(h.body.as_slice()).expect("encoded request");
        assert_eq!(sent.request_id, h.id, "the hand-over id is the receiver's request_id");
        assert_eq!(h.type_url, "type.googleapis.com/themodel.fieldsales.v1.AcceptOpportunityRequest");
    }
}
