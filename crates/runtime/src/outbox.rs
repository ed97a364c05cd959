//! Transactional outbox: a hand-over is written into the sender's database in
//! the same transaction as the state change that causes it, then a relay
//! delivers it with retries and backoff until the receiver acknowledges it.
//! The hand-over id travels as the receiver's `request_id`, so a delivery
//! repeated after a crash or a lost acknowledgement is deduplicated there.
//! Together: never lost, never doubled.
//!
//! Several replicas can run relays on one database: a relay claims messages by
//! setting a lease in a single conditional UPDATE, so each message has at most
//! one relay working on it, and an expired lease (a crashed relay) frees it.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::db::{Db, Tx};
use crate::time::{Clock, Micros};

/// A hand-over to write into the outbox.
#[derive(Debug, Clone)]
pub struct Handover {
    /// Unique id; becomes the receiver's `request_id`.
    pub id: String,
    /// Receiving service, e.g. "field-sales".
    pub destination: &'static str,
    /// What it is, e.g. "accept_opportunity"; tells the relay which RPC to call.
    pub kind: &'static str,
    pub payload: serde_json::Value,
}

/// Writes a hand-over in the caller's transaction.
pub async fn enqueue(tx: &mut Tx, h: &Handover, now: Micros) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outbox (id, destination, kind, payload, created_at, attempts, next_attempt_at) \
         VALUES ($1, $2, $3, $4, $5, 0, $5)",
    )
    .bind(&h.id)
    .bind(h.destination)
    .bind(h.kind)
    .bind(h.payload.to_string())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Hands `payload` over to `destination` in the caller's transaction: a new
/// hand-over id, the payload as JSON, the outbox row. Returns the id, which the
/// caller passes to [`Outbox::deliver_now`] after committing.
pub async fn hand_over(
    tx: &mut Tx,
    destination: &'static str,
    kind: &'static str,
    payload: &impl serde::Serialize,
    now: Micros,
) -> Result<String, crate::ApiError> {
    let h = Handover {
        id: crate::ids::new_id("ho"),
        destination,
        kind,
        payload: serde_json::to_value(payload).map_err(anyhow::Error::from)?,
    };
    enqueue(tx, &h, now).await?;
    Ok(h.id)
}

/// A claimed outbox message.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub destination: String,
    pub kind: String,
    pub payload: String,
    pub attempts: i64,
    pub created_at: Micros,
}

impl Message {
    /// The payload as the sender's hand-over type.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, tonic::Status> {
        serde_json::from_str(&self.payload)
            .map_err(|e| tonic::Status::internal(format!("outbox payload of {} is unreadable: {e}", self.kind)))
    }
}

/// Delivers one message to its receiver; `Ok` only once the receiver has it.
pub trait Deliver: Send + Sync + 'static {
    fn deliver(&self, message: &Message) -> impl Future<Output = Result<(), tonic::Status>> + Send;
}

/// How many messages a relay claims at once, and for how long.
const BATCH: i64 = 64;
const LEASE: Micros = 30_000_000;
const MAX_BACKOFF: Micros = 30_000_000;

/// The relay of one service.
pub struct Relay<D> {
    pub db: Db,
    pub deliver: D,
    /// Longest sleep when idle.
    pub poll: Duration,
    pub clock: Clock,
}

type Row = (String, String, String, String, i64, i64);

const CLAIM_DUE: &str = "UPDATE outbox SET lease_until = $1 \
     WHERE id IN (SELECT id FROM outbox WHERE delivered_at IS NULL AND next_attempt_at <= $2 \
                    AND (lease_until IS NULL OR lease_until < $2) ORDER BY created_at, id LIMIT $3) \
       AND delivered_at IS NULL AND (lease_until IS NULL OR lease_until < $2) \
     RETURNING id, destination, kind, payload, attempts, created_at";

const CLAIM_ONE: &str = "UPDATE outbox SET lease_until = $1 \
     WHERE id = $2 AND delivered_at IS NULL AND (lease_until IS NULL OR lease_until < $3) \
     RETURNING id, destination, kind, payload, attempts, created_at";

impl<D: Deliver> Relay<D> {
    /// Delivers until `shutdown`; the batch in hand is finished first.
    pub async fn run(self: Arc<Self>, wake: Arc<Notify>, shutdown: CancellationToken) {
        tracing::debug!("outbox relay started");
        while !shutdown.is_cancelled() {
            let delivered_any = match self.pass().await {
                Ok(n) => n > 0,
                Err(e) => {
                    tracing::warn!(error = ?e, "outbox relay pass failed");
                    false
                }
            };
            if delivered_any {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
        tracing::debug!("outbox relay stopped");
    }

    /// One pass over every due message.
    async fn pass(&self) -> Result<usize, sqlx::Error> {
        let now = self.clock.now();
        let batch: Vec<Row> =
            sqlx::query_as(CLAIM_DUE).bind(now + LEASE).bind(now).bind(BATCH).fetch_all(self.db.writer()).await?;
        self.deliver_claimed(batch).await
    }

    /// Delivers the given messages now, if no relay holds them: the path a
    /// handler takes right after committing, so the receiver has the hand-over
    /// by the time the caller gets its answer. Whatever fails stays for the relay.
    pub async fn deliver_now(&self, ids: &[String]) -> Result<usize, sqlx::Error> {
        let now = self.clock.now();
        let mut batch = Vec::new();
        for id in ids {
            let row: Option<Row> =
                sqlx::query_as(CLAIM_ONE).bind(now + LEASE).bind(id).bind(now).fetch_optional(self.db.writer()).await?;
            batch.extend(row);
        }
        self.deliver_claimed(batch).await
    }

    /// Delivers claimed messages in creation order. After a failed delivery,
    /// the rest of that destination's messages wait, so each receiver sees
    /// hand-overs in the order they were made.
    async fn deliver_claimed(&self, mut batch: Vec<Row>) -> Result<usize, sqlx::Error> {
        batch.sort_by(|a, b| (a.5, &a.0).cmp(&(b.5, &b.0)));
        let mut blocked: HashSet<String> = HashSet::new();
        let mut delivered = 0;
        for (id, destination, kind, payload, attempts, created_at) in batch {
            let message = Message { id, destination, kind, payload, attempts, created_at };
            if blocked.contains(&message.destination) {
                self.release(&message.id).await?;
                continue;
            }
            match self.deliver.deliver(&message).await {
                Ok(()) => {
                    sqlx::query("UPDATE outbox SET delivered_at = $1, lease_until = NULL, attempts = attempts + 1 WHERE id = $2")
                        .bind(self.clock.now())
                        .bind(&message.id)
                        .execute(self.db.writer())
                        .await?;
                    tracing::info!(handover = %message.id, kind = %message.kind, to = %message.destination, "hand-over delivered");
                    delivered += 1;
                }
                Err(status) => {
                    let delay = backoff(message.attempts);
                    tracing::warn!(
                        handover = %message.id, kind = %message.kind, to = %message.destination,
                        attempts = message.attempts + 1, retry_in_ms = delay / 1000,
                        code = ?status.code(), error = %status.message(), "hand-over not delivered; will retry"
                    );
                    sqlx::query(
                        "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, lease_until = NULL, last_error = $2 WHERE id = $3",
                    )
                    .bind(self.clock.now() + delay)
                    .bind(format!("{:?}: {}", status.code(), status.message()))
                    .bind(&message.id)
                    .execute(self.db.writer())
                    .await?;
                    blocked.insert(message.destination.clone());
                }
            }
        }
        Ok(delivered)
    }

    async fn release(&self, id: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE outbox SET lease_until = NULL WHERE id = $1").bind(id).execute(self.db.writer()).await?;
        Ok(())
    }
}

/// What a handler holds to hand over right after it commits.
#[derive(Clone)]
pub struct Outbox(Option<Arc<dyn Fn(Vec<String>) -> BoxFuture + Send + Sync>>);

type BoxFuture = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Outbox")
    }
}

/// How long a handler waits for its hand-over before leaving it to the relay.
const DELIVER_NOW_TIMEOUT: Duration = Duration::from_secs(2);

impl Outbox {
    /// For a service that hands nothing over.
    pub fn none() -> Self {
        Outbox(None)
    }

    pub fn new<D: Deliver>(relay: Arc<Relay<D>>) -> Self {
        Outbox(Some(Arc::new(move |ids| {
            let relay = relay.clone();
            Box::pin(async move {
                match tokio::time::timeout(DELIVER_NOW_TIMEOUT, relay.deliver_now(&ids)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = ?e, "immediate hand-over failed; the relay will retry"),
                    Err(_) => tracing::warn!("immediate hand-over timed out; the relay will retry"),
                }
            })
        })))
    }

    /// Tries to deliver the committed hand-overs `ids` before returning.
    pub async fn deliver_now(&self, ids: Vec<String>) {
        if let Some(f) = &self.0 {
            f(ids).await;
        }
    }
}

/// Exponential backoff from 200 ms, capped at 30 s, with ±20% jitter so a
/// recovering receiver is not hit by every sender at once.
fn backoff(attempts: i64) -> Micros {
    let base = 200_000i64.saturating_mul(1i64 << attempts.clamp(0, 20)).min(MAX_BACKOFF);
    let jitter = rand::rng().random_range(0.8..1.2);
    (base as f64 * jitter) as Micros
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
}
