//! The per-service ordered event stream, and its gRPC service.
//!
//! A service appends events in the transaction that makes the change they
//! describe, so the stream is exactly the service's history. Each event is a
//! typed protobuf message stored with its type URL and served as a
//! `google.protobuf.Any`, so any consumer decodes it with generated code.
//! Sequence numbers come from the `stream_head` row, whose lock the
//! appending transaction holds until it commits: numbers are gap-free and
//! become visible in order, which is what lets a consumer keep one cursor.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::{Message, Name};
use prost_types::Any;
use themodel_proto::common::v1 as pb;
use themodel_proto::common::v1::event_stream_service_server::{EventStreamService, EventStreamServiceServer};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::db::{self, Db, Script};
use crate::error::ApiError;
use crate::time::{self, Micros};

/// An event packed for the stream.
pub fn pack<E: Message + Name>(event: &E) -> Any {
    Any { type_url: E::type_url(), value: event.encode_to_vec() }
}

/// Appends events in order, numbered on from the stream's head inside the
/// statements (the transaction holds the head's lock, see the module docs):
/// each insert numbers its rows from the head by position, then moves the
/// head past them.
pub fn append<'q>(script: &mut Script<'q>, db: &Db, events: &'q [Any], now: Micros) {
    for part in events.chunks(db::CHUNKS[0]) {
        script.insert_select(
            "INSERT INTO events (seq, recorded_at, type_url, payload)",
            "(SELECT seq FROM stream_head WHERE id = 1) + column1, column2, column3, column4",
            3,
            "",
            part,
            |b, e| b.bind(now).bind(e.type_url.as_str()).bind(e.value.as_slice()),
        );
        let n = i64::try_from(part.len()).unwrap_or(i64::MAX);
        script.push(&format!("UPDATE stream_head SET seq = seq + {} WHERE id = 1", db.param(1)), |b| b.bind(n));
    }
}

/// Gives the stream its id the first time the database is migrated (or
/// after a migration started a new stream); the id never changes after
/// that. Returns it.
pub async fn identify(db: &Db) -> Result<String, sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query("UPDATE stream_head SET stream_id = $1 WHERE id = 1 AND stream_id = ''")
        .bind(themodel_values::new_id("st"))
        .execute(&mut *tx)
        .await?;
    let (id, head): (String, i64) =
        sqlx::query_as("SELECT stream_id, seq FROM stream_head WHERE id = 1").fetch_one(&mut *tx).await?;
    tx.commit().await?;
    db.stream_reached(head);
    Ok(id)
}

/// A page of the stream: up to `limit` events after `after_seq`, the head, and
/// the stream's id.
#[derive(Debug)]
pub struct Page {
    pub events: Vec<pb::Event>,
    pub head_seq: i64,
    pub stream_id: String,
}

#[derive(sqlx::FromRow)]
struct Row {
    seq: i64,
    recorded_at: i64,
    type_url: String,
    payload: Vec<u8>,
}

/// Most bytes of events one page carries (at least one event, however
/// large). gRPC clients refuse messages over 4 MiB by default (tonic's and
/// grpcio's limit), so a page of `limit` events stops early rather than
/// become a message its reader cannot take and would ask for again forever.
pub const PAGE_BYTES: usize = 2 * 1024 * 1024;

/// An event's share of [`PAGE_BYTES`]: its payload and type, and room for
/// its seq, time and framing.
fn page_bytes(r: &Row) -> usize {
    r.payload.len() + r.type_url.len() + 32
}

/// Reads up to `limit` events after `after_seq` (fewer once they reach
/// [`PAGE_BYTES`]), with the stream's head and id.
pub async fn list(db: &Db, after_seq: i64, limit: i64) -> Result<Page, sqlx::Error> {
    let mut conn = db.reader().acquire().await?;
    let (head, stream_id): (i64, String) =
        sqlx::query_as("SELECT seq, stream_id FROM stream_head WHERE id = 1").fetch_one(&mut *conn).await?;
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT seq, recorded_at, type_url, payload FROM events WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
    )
    .bind(after_seq)
    .bind(head)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut bytes = 0;
    let events = rows
        .into_iter()
        .take_while(|r| {
            let first = bytes == 0;
            bytes += page_bytes(r);
            first || bytes <= PAGE_BYTES
        })
        .map(|r| pb::Event {
            seq: r.seq,
            recorded_at: Some(time::to_timestamp(r.recorded_at)),
            event: Some(Any { type_url: r.type_url, value: r.payload }),
        })
        .collect();
    Ok(Page { events, head_seq: head, stream_id })
}

/// Longest wait a long poll may ask for.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// How often a waiting long poll reads the stream again, for commits this
/// process cannot be told about (another replica on the same database).
const RECHECK: Duration = Duration::from_millis(500);

/// Most stream reads (long polls included) a service serves at once. The
/// stream is outside the service's limit on calls in flight
/// ([`crate::shed`]): a follower's long poll is parked most of the time, and
/// must not take a place a client call needs.
const MAX_READERS: usize = 64;

/// How long a refused reader is told to wait.
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// `themodel.common.v1.EventStreamService` over a service's database.
#[derive(Debug, Clone)]
pub struct EventStream {
    db: Db,
    /// Ends every waiting long poll when the service begins to shut down.
    shutdown: CancellationToken,
    readers: Arc<Semaphore>,
}

impl EventStream {
    pub fn server(db: Db, shutdown: CancellationToken) -> EventStreamServiceServer<EventStream> {
        EventStreamServiceServer::new(EventStream { db, shutdown, readers: Arc::new(Semaphore::new(MAX_READERS)) })
    }

    /// Reads a page; at the head, waits for the next commit until `until`.
    async fn long_poll(&self, after_seq: i64, limit: i64, until: Option<Instant>) -> Result<Page, sqlx::Error> {
        let mut head = self.db.watch_stream_head();
        loop {
            // Marked seen before reading: a commit after this line wakes the
            // wait below even if the read missed it.
            head.borrow_and_update();
            let page = list(&self.db, after_seq, limit).await?;
            self.db.stream_reached(page.head_seq);
            let now = Instant::now();
            // A head behind the caller's cursor is another stream (a
            // replaced or restored database): said at once, not waited on.
            let at_head = page.events.is_empty() && page.head_seq >= after_seq;
            let Some(until) = until.filter(|u| at_head && *u > now && !self.shutdown.is_cancelled()) else {
                return Ok(page);
            };
            tokio::select! {
                _ = head.changed() => {}
                _ = tokio::time::sleep(RECHECK.min(until - now)) => {}
                _ = self.shutdown.cancelled() => {}
            }
        }
    }
}

#[tonic::async_trait]
impl EventStreamService for EventStream {
    #[tracing::instrument(skip_all, fields(after_seq = request.get_ref().after_seq))]
    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let _reading = self
            .readers
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::overloaded("this service's event stream", RETRY_AFTER))?;
        let answer_by = crate::call::answer_by(request.metadata());
        let req = request.into_inner();
        let mut v = crate::validate::Violations::new();
        v.check(req.after_seq >= 0, "after_seq", "must not be negative");
        let limit = crate::validate::page_size(&mut v, req.page_size, 500, 5000);
        let wait = match req.wait.as_ref().map(crate::time::non_negative) {
            None => Duration::ZERO,
            Some(Some(wait)) => wait.min(MAX_WAIT),
            Some(None) => {
                v.add("wait", "must be a duration of zero or more (nanos 0 to 999,999,999)");
                Duration::ZERO
            }
        };
        v.finish()?;
        let mut until = Instant::now() + wait;
        if let Some(by) = answer_by {
            until = until.min(by);
        }
        let until = (!wait.is_zero()).then_some(until);
        let Page { events, head_seq, stream_id } =
            self.long_poll(req.after_seq, limit, until).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ListEventsResponse { events, head_seq, stream_id }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commits `n` events of `size` payload bytes each, one transaction.
    async fn commit(db: &Db, n: usize, size: usize) {
        let events: Vec<Any> =
            (0..n).map(|_| Any { type_url: "type.example/Big".into(), value: vec![7; size] }).collect();
        let mut conn = db.open_writer().await.expect("writer");
        db.begin_writes(&mut conn).await.expect("begin");
        let mut script = Script::new(db);
        append(&mut script, db, &events, 1);
        script.push("COMMIT", |b| b);
        script.run(&mut conn).await.expect("commit");
    }

    #[tokio::test]
    async fn a_page_stops_at_its_byte_budget_and_the_next_one_goes_on() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::connect(&format!("sqlite://{}/e.db", dir.path().display())).await.expect("db");
        let empty = tempfile::tempdir().expect("temp dir");
        db.migrate(sqlx::migrate::Migrator::new(empty.path()).await.expect("migrator")).await.expect("migrate");
        // 10 events of 300 KiB: 3 MiB in all, more than one page holds.
        commit(&db, 10, 300 * 1024).await;
        // And one larger than a whole page, which still goes alone.
        commit(&db, 1, PAGE_BYTES + 1).await;

        let first = list(&db, 0, 5000).await.expect("page");
        assert_eq!(first.head_seq, 11);
        let seqs: Vec<i64> = first.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=6).collect::<Vec<_>>(), "six events of 300 KiB fit in 2 MiB, seven do not");
        let bytes: usize = first.events.iter().map(|e| e.event.as_ref().map_or(0, |a| a.value.len())).sum();
        assert!(bytes <= PAGE_BYTES, "{bytes} bytes in a page");

        let second = list(&db, 6, 5000).await.expect("page");
        assert_eq!(second.events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![7, 8, 9, 10]);
        let third = list(&db, 10, 5000).await.expect("page");
        assert_eq!(third.events.len(), 1, "an event over the budget is still served, alone");
        assert_eq!(third.events[0].event.as_ref().map(|a| a.value.len()), Some(PAGE_BYTES + 1));
        assert!(list(&db, 11, 5000).await.expect("page").events.is_empty());
    }
}
