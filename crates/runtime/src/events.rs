//! The per-service ordered event stream, and its gRPC service.
//!
//! A service appends events in the transaction that makes the change they
//! describe, so the stream is exactly the service's history. Each event is a
//! typed protobuf message stored with its type URL and served as a
//! `google.protobuf.Any`, so any consumer decodes it with generated code.
//! Sequence numbers come from the `stream_head` row, whose lock the
//! appending transaction holds until it commits: numbers are gap-free and
//! become visible in order, which is what lets a consumer keep one cursor.

use prost::{Message, Name};
use prost_types::Any;
use themodel_proto::common::v1 as pb;
use themodel_proto::common::v1::event_stream_service_server::{EventStreamService, EventStreamServiceServer};
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
    let id = sqlx::query_scalar("SELECT stream_id FROM stream_head WHERE id = 1").fetch_one(&mut *tx).await?;
    tx.commit().await?;
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

/// Reads up to `limit` events after `after_seq`, with the stream's head and id.
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
    let events = rows
        .into_iter()
        .map(|r| pb::Event {
            seq: r.seq,
            recorded_at: Some(time::to_timestamp(r.recorded_at)),
            event: Some(Any { type_url: r.type_url, value: r.payload }),
        })
        .collect();
    Ok(Page { events, head_seq: head, stream_id })
}

/// `themodel.common.v1.EventStreamService` over a service's database.
#[derive(Debug, Clone)]
pub struct EventStream {
    db: Db,
}

impl EventStream {
    pub fn server(db: Db) -> EventStreamServiceServer<EventStream> {
        EventStreamServiceServer::new(EventStream { db })
    }
}

#[tonic::async_trait]
impl EventStreamService for EventStream {
    #[tracing::instrument(skip_all, fields(after_seq = request.get_ref().after_seq))]
    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let req = request.into_inner();
        let mut v = crate::validate::Violations::new();
        v.check(req.after_seq >= 0, "after_seq", "must not be negative");
        let limit = crate::validate::page_size(&mut v, req.page_size, 500, 5000);
        v.finish()?;
        let Page { events, head_seq, stream_id } =
            list(&self.db, req.after_seq, limit).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ListEventsResponse { events, head_seq, stream_id }))
    }
}
