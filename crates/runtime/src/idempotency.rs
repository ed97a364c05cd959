//! AIP-155 request ids, recorded in the same transaction as the change they
//! guard: a retried request gets the first response back and changes nothing,
//! whether the first attempt's answer was lost or the client simply repeats.
//!
//! ```ignore
//! let key = Idempotency::new("/pkg.Svc/Method", &req.request_id, &req);
//! let mut tx = db.begin().await?;
//! if let Some(first) = key.replay(&mut tx).await? { return Ok(first); }
//! // ... change state in tx ...
//! key.record(&mut tx, &response, now).await?;
//! tx.commit().await?;
//! ```

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use prost::Message;

use crate::db::Tx;
use crate::error::ApiError;
use crate::time::Micros;

/// One request's idempotency key and fingerprint.
#[derive(Debug, Clone)]
pub struct Idempotency {
    request_id: String,
    fingerprint: String,
}

impl Idempotency {
    /// `method` is the full gRPC method name. The key is (method, request_id);
    /// the fingerprint covers the whole request, so reusing an id for a
    /// different request to the same method is detected.
    pub fn new(method: &str, request_id: &str, request: &impl Message) -> Self {
        let mut h = Fnv::new();
        h.write(method.as_bytes());
        h.write(&[0]);
        h.write(&request.encode_to_vec());
        // Keys are scoped by method: the same id sent to two different RPCs
        // names two requests (clients often number each call type from 1).
        let key = if request_id.is_empty() { String::new() } else { format!("{method} {request_id}") };
        Idempotency { request_id: key, fingerprint: format!("{:016x}", h.0) }
    }

    /// The stored response of an earlier identical request, if there is one.
    pub async fn replay<R: Message + Default>(&self, tx: &mut Tx) -> Result<Option<R>, ApiError> {
        if self.request_id.is_empty() {
            return Ok(None);
        }
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT fingerprint, response FROM idempotency WHERE request_id = $1")
                .bind(&self.request_id)
                .fetch_optional(&mut **tx)
                .await?;
        let Some((fingerprint, response)) = row else {
            return Ok(None);
        };
        if fingerprint != self.fingerprint {
            return Err(ApiError::field(
                "request_id",
                "was already used for a different request; use a new request_id for a new request",
            ));
        }
        let bytes = STANDARD.decode(response).map_err(|e| ApiError::Internal(e.into()))?;
        let decoded = R::decode(bytes.as_slice()).map_err(|e| ApiError::Internal(e.into()))?;
        Ok(Some(decoded))
    }

    /// Stores the response, in the transaction that made the change.
    pub async fn record(&self, tx: &mut Tx, response: &impl Message, now: Micros) -> Result<(), ApiError> {
        if self.request_id.is_empty() {
            return Ok(());
        }
        sqlx::query("INSERT INTO idempotency (request_id, fingerprint, response, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&self.request_id)
            .bind(&self.fingerprint)
            .bind(STANDARD.encode(response.encode_to_vec()))
            .bind(now)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

impl Idempotency {
    /// Ends a change: appends its events, records the response and commits,
    /// all in the one transaction.
    pub async fn commit(
        &self,
        mut tx: Tx,
        response: &impl Message,
        events: &[crate::events::NewEvent],
        now: Micros,
    ) -> Result<(), ApiError> {
        crate::events::append(&mut tx, events, now).await?;
        self.record(&mut tx, response, now).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// FNV-1a, 64 bit: stable across builds and platforms, unlike std's hasher.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_depends_on_method_and_request() {
        let a = prost_types::Timestamp { seconds: 1, nanos: 0 };
        let b = prost_types::Timestamp { seconds: 2, nanos: 0 };
        let k = |m: &str, r: &prost_types::Timestamp| Idempotency::new(m, "r1", r).fingerprint;
        assert_eq!(k("/a", &a), k("/a", &a));
        assert_ne!(k("/a", &a), k("/a", &b));
        assert_ne!(k("/a", &a), k("/b", &a));
    }
}
