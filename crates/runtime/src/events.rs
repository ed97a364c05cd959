//! The per-service ordered event stream, and the gRPC service that serves it.
//!
//! A service appends events in the transaction that makes the change they
//! describe, so the stream is exactly the service's history. Sequence numbers
//! come from the `stream_head` row, whose lock the appending transaction holds
//! until it commits: numbers are gap-free and become visible in order, which
//! is what lets a consumer keep a single cursor.

use themodel_proto::common::v1 as pb;
use themodel_proto::common::v1::event_stream_service_server::{EventStreamService, EventStreamServiceServer};
use tonic::{Request, Response, Status};

use crate::db::{Db, Tx};
use crate::error::ApiError;
use crate::time::{self, Micros};

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: &'static str,
    pub subject_id: String,
    pub occurred_at: Micros,
    /// Version of the shared definition the decision used (0: none).
    pub definition_version: i64,
    pub payload: serde_json::Value,
}

/// Appends events in order; returns the seq of the last one.
pub async fn append(tx: &mut Tx, events: &[NewEvent], now: Micros) -> Result<i64, sqlx::Error> {
    if events.is_empty() {
        return sqlx::query_scalar("SELECT seq FROM stream_head WHERE id = 1").fetch_one(&mut **tx).await;
    }
    let n = events.len() as i64;
    let last: i64 = sqlx::query_scalar("UPDATE stream_head SET seq = seq + $1 WHERE id = 1 RETURNING seq")
        .bind(n)
        .fetch_one(&mut **tx)
        .await?;
    let first = last - n + 1;
    // Multi-row inserts: one statement per 100 events, not one per event.
    for (c, chunk) in events.chunks(100).enumerate() {
        let mut sql = String::from(
            "INSERT INTO events (seq, kind, subject_id, occurred_at, recorded_at, definition_version, payload) VALUES ",
        );
        for i in 0..chunk.len() {
            let p = i * 7;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                p + 1,
                p + 2,
                p + 3,
                p + 4,
                p + 5,
                p + 6,
                p + 7
            ));
        }
        let mut q = sqlx::query(&sql);
        for (i, e) in chunk.iter().enumerate() {
            q = q
                .bind(first + (c * 100 + i) as i64)
                .bind(e.kind)
                .bind(&e.subject_id)
                .bind(e.occurred_at)
                .bind(now)
                .bind(e.definition_version)
                .bind(e.payload.to_string());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(last)
}

type EventRow = (i64, String, String, i64, i64, i64, String);

/// Gives the stream its id the first time the database is migrated; the id
/// never changes after that. Returns it.
pub async fn identify(db: &Db) -> Result<String, sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query("UPDATE stream_head SET stream_id = $1 WHERE id = 1 AND stream_id = ''")
        .bind(crate::ids::new_id("st"))
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

/// Reads up to `limit` events after `after_seq`, with the stream's head and id.
pub async fn list(db: &Db, after_seq: i64, limit: i64) -> Result<Page, sqlx::Error> {
    let mut conn = db.reader().acquire().await?;
    let (head, stream_id): (i64, String) =
        sqlx::query_as("SELECT seq, stream_id FROM stream_head WHERE id = 1").fetch_one(&mut *conn).await?;
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT seq, kind, subject_id, occurred_at, recorded_at, definition_version, payload \
         FROM events WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
    )
    .bind(after_seq)
    .bind(head)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let events = rows
        .into_iter()
        .map(|(seq, kind, subject_id, occurred_at, recorded_at, definition_version, payload)| pb::Event {
            seq,
            r#type: kind,
            occurred_at: Some(time::to_timestamp(occurred_at)),
            recorded_at: Some(time::to_timestamp(recorded_at)),
            subject_id,
            definition_version,
            payload_json: payload,
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
