//! Erasing a person: their contact data leaves every service's database,
//! the KPIs stay exactly as they were, and every service's audit log
//! records who erased what.

use themodel::ServiceName;
use themodel_e2e::{Svc, TestSuite, eventually};
use themodel_proto::common::v1::{self as common, audit_service_client::AuditServiceClient};
use themodel_proto::marketing::v1 as mk;
use themodel_runtime::auth::{self, Peer, Role};
use tonic::Code;

use crate::flows::*;

const EMAIL: &str = "ada.lovelace@analytical.example";
const NAME: &str = "Ada Lovelace";
/// What inside sales noted of Ada's need (it travels to field sales).
const BANT_NOTE: &str = "needs an engine for Bernoulli numbers";

/// Ada's lead, captured with contact data a scan can find.
fn ada(id: &str) -> mk::CaptureLeadRequest {
    mk::CaptureLeadRequest {
        request_id: rid(&["capture", id]),
        email: EMAIL.into(),
        name: NAME.into(),
        ..lead(id, "2026-11-03T09:00:00Z")
    }
}

fn erase(lead_id: &str, email: &str) -> mk::ErasePersonRequest {
    mk::ErasePersonRequest {
        request_id: format!("erase-{lead_id}{email}"),
        lead_id: lead_id.into(),
        email: email.into(),
    }
}

/// Columns of every table of a service's database (SQLite or PostgreSQL at
/// `url`) holding `needle` anywhere, text or bytes: "table.column (rows)".
async fn rows_holding(url: &str, needle: &str) -> Vec<String> {
    let db = themodel_runtime::Db::connect(url).await.unwrap();
    let postgres = url.starts_with("postgres");
    let columns: Vec<(String, String, String)> = if postgres {
        sqlx::query_as(
            "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'",
        )
        .fetch_all(db.reader())
        .await
        .unwrap()
    } else {
        sqlx::query_as(
            "SELECT m.name, c.name, c.type FROM sqlite_master m, pragma_table_info(m.name) c \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'",
        )
        .fetch_all(db.reader())
        .await
        .unwrap()
    };
    let mut found = Vec::new();
    for (table, column, kind) in columns {
        let holds = match (postgres, kind.as_str()) {
            (true, "bytea") => format!("position(convert_to($1, 'UTF8') in \"{column}\") > 0"),
            (true, _) => format!("strpos(\"{column}\"::text, $1) > 0"),
            (false, _) => format!("instr(CAST(\"{column}\" AS BLOB), CAST($1 AS BLOB)) > 0"),
        };
        let sql = format!("SELECT COUNT(*) FROM \"{table}\" WHERE {holds}");
        let n: i64 = sqlx::query_scalar(&sql).bind(needle).fetch_one(db.reader()).await.unwrap();
        if n > 0 {
            found.push(format!("{table}.{column} ({n})"));
        }
    }
    db.close().await;
    found
}

/// Each service's SQLite database in a suite started with the defaults.
pub fn sqlite_urls(t: &TestSuite) -> Vec<(Svc, String)> {
    ServiceName::ALL
        .into_iter()
        .map(|name| (name, format!("sqlite://{}", t.data_dir().join(format!("{}.db", name.as_str())).display())))
        .collect()
}

async fn audit(t: &TestSuite, name: Svc, record: &str) -> Vec<common::AuditEntry> {
    let req = common::ListAuditEntriesRequest { record: record.into(), ..Default::default() };
    AuditServiceClient::new(t.channel(name)).list_audit_entries(req).await.unwrap().into_inner().entries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn erasing_a_person_reaches_every_service_and_leaves_the_kpis() {
    let t = TestSuite::start_with(|o| o.identities = vec![("rex".to_owned(), revops())]).await;
    erasure(&t, &sqlite_urls(&t)).await;
}

pub fn revops() -> Role {
    Role::parse("revops").unwrap()
}

/// Ada all the way to an account, then erased; run on a suite with a
/// revops caller "rex" whose databases are at `urls`.
pub async fn erasure(t: &TestSuite, urls: &[(Svc, String)]) {
    let url = |name: Svc| urls.iter().find(|(n, _)| *n == name).map(|(_, u)| u.as_str()).unwrap();
    // Ada goes all the way to an account; Grace stays in nurturing. Both
    // leave contact data and notes along the way.
    capture(t, ada("p-ada")).await;
    assert!(quote_request(t, "p-ada", "2026-11-03T09:30:00Z").await.handed_over);
    in_queue(t, "p-ada").await;
    let noted = themodel_proto::common::v1::Bant { need_note: BANT_NOTE.into(), ..bant_all() };
    qualify(t, "p-ada", noted, "2026-11-03T10:00:00Z").await;
    convert(t, "p-ada", "opp-ada", "2026-11-03T10:30:00Z").await;
    opportunity(t, "opp-ada").await;
    walk_to_approval(t, "opp-ada", "2026-11-04T11:00:00Z").await;
    close_won(t, "opp-ada", "acct-ada", "2026-11-05T12:00:00Z").await;
    account(t, "acct-ada").await;
    capture(t, lead("p-grace", "2026-11-06T09:00:00Z")).await;
    t.outboxes_drained().await;
    let before = t.settled_funnel("2026-11-01", "2026-12-01").await;
    assert_eq!((before.leads, before.opportunities, before.wins), (2, 1, 1), "{before:?}");
    for name in [Svc::Marketing, Svc::InsideSales, Svc::FieldSales, Svc::CustomerSuccess] {
        assert!(!rows_holding(url(name), EMAIL).await.is_empty(), "{name} holds Ada's address before erasure");
    }
    for name in [Svc::InsideSales, Svc::FieldSales] {
        assert!(!rows_holding(url(name), BANT_NOTE).await.is_empty(), "{name} holds the BANT note before erasure");
    }

    // Only admin erases; a department, a reader and revops may not.
    let mut marketing = mk::marketing_service_client::MarketingServiceClient::new(t.channel(Svc::Marketing));
    let rex = mk::marketing_service_client::MarketingServiceClient::new(t.channel_as(Svc::Marketing, "rex"));
    let refused = rex.clone().erase_person(erase("", EMAIL)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    for (bad, field) in [(erase("", ""), "lead_id"), (erase("p-ada", EMAIL), "email"), (erase("", "nope"), "email")] {
        let refused = marketing.erase_person(bad).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains(field), "{field}: {refused:?}");
    }
    let unknown = marketing.erase_person(erase("", "nobody@analytical.example")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    // Erased by address, as a data subject's request names them.
    let erased = marketing.erase_person(erase("", &EMAIL.to_uppercase())).await.unwrap().into_inner().lead.unwrap();
    assert_eq!((erased.lead_id.as_str(), erased.email.as_str(), erased.name.as_str()), ("p-ada", "", ""));
    assert!(erased.erased_at.is_some());
    assert_eq!(erased.company, "p-ada Inc", "the company is not the person");
    assert_eq!(erased.status, mk::LeadStatus::HandedOver as i32, "the lead's history stays");

    // Down the chain, each service once it has the erasure.
    let item = eventually("the queue item erased", || {
        let mut c = t.inside_sales.clone();
        async move {
            let req = themodel_proto::insidesales::v1::GetQueueItemRequest { lead_id: "p-ada".into() };
            let item = c.get_queue_item(req).await.ok()?.into_inner().item?;
            item.erased_at.is_some().then_some(item)
        }
    })
    .await;
    assert_eq!((item.email.as_str(), item.name.as_str()), ("", ""));
    assert_eq!(item.opportunity_id, "opp-ada");
    let acct = eventually("the account's contact erased", || async move {
        let a = account(t, "acct-ada").await;
        a.erased_at.is_some().then_some(a)
    })
    .await;
    assert_eq!((acct.contact_name.as_str(), acct.contact_email.as_str()), ("", ""));
    let opp = opportunity(t, "opp-ada").await;
    assert!(opp.erased_at.is_some());
    assert_eq!((opp.contact_name.as_str(), opp.contact_email.as_str()), ("", ""));
    assert_eq!(opp.phase, themodel_proto::fieldsales::v1::Phase::Won as i32);
    t.outboxes_drained().await;

    // Nothing of Ada's contact data is left in any table of any service:
    // records, stored responses, hand-overs, events.
    for name in ServiceName::ALL {
        for needle in [EMAIL, NAME, "qualified on the phone", BANT_NOTE] {
            assert_eq!(rows_holding(url(name), needle).await, Vec::<String>::new(), "{name} still holds {needle:?}");
        }
    }
    // Grace is untouched.
    assert!(!rows_holding(url(Svc::Marketing), "p-grace@corp.example").await.is_empty());

    // Every KPI is as it was (only the stream positions moved on: the
    // erasure is an event).
    let after = t.settled_funnel("2026-11-01", "2026-12-01").await;
    let counts = |f: &themodel_proto::kpi::v1::Funnel| themodel_proto::kpi::v1::Funnel { sources: vec![], ..f.clone() };
    assert_eq!(counts(&after), counts(&before));

    // A retry of a request about Ada is refused, not answered with her data.
    let replay = marketing.capture_lead(ada("p-ada")).await.unwrap_err();
    assert_eq!(replay.code(), Code::FailedPrecondition, "{replay:?}");
    assert!(replay.message().contains("erased"), "{replay:?}");
    // Erasing again changes nothing.
    let again = marketing.erase_person(erase("p-ada", "")).await.unwrap().into_inner().lead.unwrap();
    assert_eq!(again.erased_at, erased.erased_at);
    // The address is free: capturing it again is a new lead.
    let back = marketing
        .capture_lead(mk::CaptureLeadRequest { request_id: "capture-again".into(), ..ada("p-ada-2") })
        .await
        .unwrap()
        .into_inner();
    assert!(!back.already_existed);
    assert_eq!(back.lead.unwrap().lead_id, "p-ada-2");

    // Each service's audit log says who erased what.
    let erasures = [
        (Svc::Marketing, "p-ada", auth::ADMIN.to_owned()),
        (Svc::InsideSales, "p-ada", auth::service_identity(Peer::Marketing)),
        (Svc::FieldSales, "opp-ada", auth::service_identity(Peer::InsideSales)),
        (Svc::CustomerSuccess, "acct-ada", auth::service_identity(Peer::FieldSales)),
    ];
    for (name, record, by) in erasures {
        let log = audit(t, name, record).await;
        let e = log.iter().find(|e| e.method.ends_with("/ErasePerson")).unwrap_or_else(|| panic!("{name}: {log:?}"));
        assert_eq!((e.identity.as_str(), e.record.as_str(), e.records), (by.as_str(), record, 1), "{name}");
        assert!(e.at.is_some());
    }
    // Newest first: marketing's last change to Ada is the repeated erasure
    // (the replayed capture changed nothing and is not logged).
    let log = audit(t, Svc::Marketing, "p-ada").await;
    let methods: Vec<&str> = log.iter().map(|e| e.method.rsplit('/').next().unwrap()).collect();
    assert_eq!(methods, ["ErasePerson", "ErasePerson", "RecordTouch", "CaptureLead"], "{log:?}");
    assert_eq!(log[3].request_id, "capture-p-ada");
    assert_eq!((log[3].identity.as_str(), log[3].role.as_str()), (auth::ADMIN, "admin"));
    // revops reads the log; a department may not.
    let mut by_rex = AuditServiceClient::new(t.channel_as(Svc::FieldSales, "rex"));
    let page = by_rex
        .list_audit_entries(common::ListAuditEntriesRequest { page_size: 2, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.entries.len(), 2);
    let rest = by_rex
        .list_audit_entries(common::ListAuditEntriesRequest { page_token: page.next_page_token, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(!rest.entries.is_empty() && rest.entries.iter().all(|e| !page.entries.contains(e)));
    let as_marketing = AuditServiceClient::new(t.channel_as(Svc::FieldSales, &auth::service_identity(Peer::Marketing)))
        .list_audit_entries(common::ListAuditEntriesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(as_marketing.code(), Code::PermissionDenied);
}
