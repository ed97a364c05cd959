//! The audit log: who changed which record, through which RPC, and when.
//!
//! The writer appends one entry per unit it applies, in the unit's own
//! transaction, so the log holds exactly the changes that were committed:
//! a replayed request, a refused one and a read are not changes and leave
//! no entry. Entries are keyed by the transaction's number (the
//! `stream_head.writes` it took) and the unit's place in it, which is
//! commit order on SQLite and PostgreSQL alike.

use themodel_proto::common::v1 as pb;
use themodel_proto::common::v1::audit_service_server::{AuditService, AuditServiceServer};
use tonic::{Request, Response, Status};

use crate::call::Call;
use crate::db::{Db, Script};
use crate::error::ApiResult;
use crate::paging;
use crate::time::{self, Micros};
use crate::validate::{self, Violations};

/// One applied unit, as the writer logs it.
pub(crate) struct Entry<'a> {
    pub call: &'a Call,
    /// The record it changed, when it changed one.
    pub record: String,
    /// How many records it changed.
    pub records: usize,
}

/// Appends a batch's entries; `writes` is the batch's transaction number.
pub(crate) fn insert<'q>(script: &mut Script<'q>, writes: i64, entries: &'q [Entry<'q>], now: Micros) {
    let rows = entries.iter().enumerate();
    script.insert_rows(
        "INSERT INTO audit_log (writes, position, at, identity, role, method, request_id, record, records)",
        9,
        "",
        rows,
        move |b, (i, e)| {
            let (identity, role) = match &e.call.caller {
                Some(p) => (p.identity.clone(), p.role.name()),
                None => (String::new(), String::new()),
            };
            b.bind(writes)
                .bind(i64::try_from(i).unwrap_or(i64::MAX))
                .bind(now)
                .bind(identity)
                .bind(role)
                .bind(e.call.method.as_str())
                .bind(e.call.request_id.as_str())
                .bind(e.record.as_str())
                .bind(i64::try_from(e.records).unwrap_or(i64::MAX))
        },
    );
}

#[derive(sqlx::FromRow)]
struct Row {
    writes: i64,
    position: i64,
    at: i64,
    identity: String,
    role: String,
    method: String,
    request_id: String,
    record: String,
    records: i64,
}

impl Row {
    fn to_proto(&self) -> pb::AuditEntry {
        pb::AuditEntry {
            at: Some(time::to_timestamp(self.at)),
            identity: self.identity.clone(),
            role: self.role.clone(),
            method: self.method.clone(),
            request_id: self.request_id.clone(),
            record: self.record.clone(),
            records: self.records,
        }
    }
}

/// `themodel.common.v1.AuditService` over a service's log.
pub struct AuditLog {
    db: Db,
}

impl AuditLog {
    pub fn server(db: Db) -> AuditServiceServer<AuditLog> {
        AuditServiceServer::new(AuditLog { db })
    }

    async fn list(&self, req: pb::ListAuditEntriesRequest) -> ApiResult<pb::ListAuditEntriesResponse> {
        let mut v = Violations::new();
        let limit = validate::page_size(&mut v, req.page_size, 50, 500);
        let record = v.text("record", &req.record, 200);
        let identity = v.text("identity", &req.identity, 200);
        v.finish()?;
        let (writes, position) = match paging::decode(&req.page_token, 2)? {
            Some(k) => (paging::int(&k[0])?, paging::int(&k[1])?),
            None => (i64::MAX, i64::MAX),
        };
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT writes, position, at, identity, role, method, request_id, record, records FROM audit_log \
             WHERE ($1 = '' OR record = $1) AND ($2 = '' OR identity = $2) \
               AND (writes < $3 OR (writes = $3 AND position < $4)) \
             ORDER BY writes DESC, position DESC LIMIT $5",
        )
        .bind(&record)
        .bind(&identity)
        .bind(writes)
        .bind(position)
        .bind(limit + 1)
        .fetch_all(self.db.reader())
        .await?;
        let more = rows.len() as i64 > limit;
        let shown = &rows[..rows.len().min(usize::try_from(limit).unwrap_or(usize::MAX))];
        let next_page_token = match (more, shown.last()) {
            (true, Some(last)) => paging::encode(&[&last.writes.to_string(), &last.position.to_string()]),
            _ => String::new(),
        };
        Ok(pb::ListAuditEntriesResponse { entries: shown.iter().map(Row::to_proto).collect(), next_page_token })
    }
}

#[tonic::async_trait]
impl AuditService for AuditLog {
    async fn list_audit_entries(
        &self,
        request: Request<pb::ListAuditEntriesRequest>,
    ) -> Result<Response<pb::ListAuditEntriesResponse>, Status> {
        Ok(Response::new(self.list(request.into_inner()).await?))
    }
}
