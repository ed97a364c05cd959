//! AIP-155 request ids. A retried request gets the first response back and
//! changes nothing, whether the first attempt's answer was lost or the client
//! simply repeats. The writer ([`crate::work`]) looks keys up for a whole
//! batch at once and records the responses in the batch's transaction.

use std::collections::HashMap;

use prost::Message;

use crate::db::{self, Conn, Db, Script};
use crate::time::Micros;

/// One request's key (scoped by method) and fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// `"<method> <request_id>"`: the same id sent to two RPCs names two
    /// requests (clients often number each call type from 1).
    pub(crate) request_key: String,
    /// FNV-1a of the method and the whole encoded request, so reusing an id
    /// for a different request is detected.
    pub(crate) fingerprint: String,
}

impl Key {
    /// `None` when the caller sent no `request_id`.
    pub fn new(method: &str, request_id: &str, request: &impl Message) -> Option<Key> {
        if request_id.is_empty() {
            return None;
        }
        let mut h = Fnv::new();
        h.write(method.as_bytes());
        h.write(&[0]);
        h.write(&request.encode_to_vec());
        Some(Key { request_key: format!("{method} {request_id}"), fingerprint: format!("{:016x}", h.0) })
    }
}

/// A stored first response.
#[derive(Debug, Clone)]
pub struct Record {
    pub fingerprint: String,
    pub response: Vec<u8>,
    /// The response was scrubbed when the person it was about was erased.
    pub erased: bool,
}

#[derive(sqlx::FromRow)]
struct Row {
    request_key: String,
    fingerprint: String,
    response: Vec<u8>,
    erased_at: Option<i64>,
}

/// Begins the writer's transaction and reads the stored records of `keys`,
/// in one round trip on SQLite; returns where the transaction began and the
/// records.
pub async fn begin_and_load(
    conn: &mut Conn,
    db: &Db,
    keys: &[&str],
) -> Result<(db::Begun, HashMap<String, Record>), sqlx::Error> {
    let (begun, rows): (db::Begun, Vec<Row>) = db::begin_and_select_in(
        conn,
        db,
        "SELECT request_key, fingerprint, response, erased_at FROM idempotency WHERE request_key IN ",
        "",
        keys,
    )
    .await?;
    let records = rows
        .into_iter()
        .map(|r| {
            let record = Record { fingerprint: r.fingerprint, response: r.response, erased: r.erased_at.is_some() };
            (r.request_key, record)
        })
        .collect();
    Ok((begun, records))
}

/// Records first responses, each with the record it is about ('' if none
/// or several), in the transaction that made their changes.
pub fn insert<'q>(script: &mut Script<'q>, rows: &'q [(&'q Key, &'q [u8], &'q str)], now: Micros) {
    script.insert_rows(
        "INSERT INTO idempotency (request_key, fingerprint, response, created_at, subject)",
        5,
        "",
        rows,
        |b, (key, response, subject)| {
            b.bind(key.request_key.as_str()).bind(key.fingerprint.as_str()).bind(*response).bind(now).bind(*subject)
        },
    );
}

/// Scrubs the stored responses about `subjects` (their person was erased):
/// the key and fingerprint stay, so a retry is recognised and refused
/// rather than applied again.
///
/// The responses are found through the audit log: every applied request
/// with a key has an entry there naming the record it changed, under the
/// same method and request id, and the log is indexed by record. `subject`
/// then confirms each one: it is empty for an erasure's own response, which
/// names only ids, and for a request about several records. So the audit
/// entries of the script's own units must be written before this runs.
pub fn erase<'q>(script: &mut Script<'q>, db: &Db, subjects: &'q [String], now: Micros) {
    for part in subjects.chunks(db::CHUNKS[0]) {
        let sql = format!(
            "UPDATE idempotency SET response = {response}, erased_at = {now} WHERE request_key IN \
             (SELECT method || ' ' || request_id FROM audit_log WHERE record IN {records}) \
             AND subject IN {subjects} AND erased_at IS NULL",
            response = db.param(1),
            now = db.param(2),
            records = db.list(part.len(), 3),
            subjects = db.list(part.len(), 3 + part.len()),
        );
        script.push(&sql, |b| {
            let b = b.bind(&[][..] as &[u8]).bind(now);
            let b = part.iter().fold(b, |b, s| b.bind(s.as_str()));
            part.iter().fold(b, |b, s| b.bind(s.as_str()))
        });
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
        let k = |m: &str, r: &prost_types::Timestamp| Key::new(m, "r1", r).expect("key").fingerprint;
        assert_eq!(k("/a", &a), k("/a", &a));
        assert_ne!(k("/a", &a), k("/a", &b));
        assert_ne!(k("/a", &a), k("/b", &a));
        assert_eq!(Key::new("/a", "", &a), None, "no request_id, no key");
        assert_ne!(Key::new("/a", "r1", &a), Key::new("/b", "r1", &a), "scoped per method");
    }
}
