//! Who may call what, RPC by RPC, over the wire: no credential, a wrong
//! credential, and every role; and hand-overs forged by a caller that is
//! not the sending service.

use themodel::{ADMIN, ServiceName};
use themodel_e2e::{Svc, TestSuite, ts};
use themodel_proto::common::v1::Department;
use themodel_proto::insidesales::v1 as is;
use themodel_proto::marketing::v1 as mk;
use themodel_runtime::auth::{self, Peer, Role};
use themodel_runtime::telemetry::PeerChannel;
use tonic::Code;

use crate::flows::*;

/// One caller per role: the suite issues admin and the five services; the
/// people are issued here.
const PEOPLE: [(&str, &str); 6] = [
    ("mia", "marketing"),
    ("ivo", "inside-sales"),
    ("fay", "field-sales"),
    ("cal", "customer-success"),
    ("rex", "revops"),
    ("rita", "read-only"),
];

fn identities() -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = PEOPLE.iter().map(|(i, r)| (i.to_string(), r.to_string())).collect();
    all.push((ADMIN.to_owned(), "admin".to_owned()));
    for peer in Peer::ALL {
        all.push((auth::service_identity(peer), format!("service:{}", peer.as_str())));
    }
    all
}

/// Who may call `path`, written out from docs/security.md independently of
/// the table the services enforce.
fn expected(path: &str, role: &str) -> bool {
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap();
    let reads = (method.starts_with("Get") || method.starts_with("List") || method == "PlanFromRevenue")
        && !["ListDeadLetters", "ListAuditEntries"].contains(&method);
    let hand_over_from: Option<&[&str]> = match method {
        "AcceptLead" => Some(&["service:marketing"]),
        "AcceptOpportunity" => Some(&["service:inside-sales"]),
        "AcceptWonDeal" => Some(&["service:field-sales"]),
        "RecycleLead" if service.contains("marketing") => Some(&["service:inside-sales", "service:field-sales"]),
        "ErasePerson" if service.contains("insidesales") => Some(&["service:marketing"]),
        "ErasePerson" if service.contains("fieldsales") => Some(&["service:inside-sales"]),
        "ErasePerson" if service.contains("customersuccess") => Some(&["service:field-sales"]),
        _ => None,
    };
    let owner = match service.split('.').nth(1).unwrap() {
        "marketing" => "marketing",
        "insidesales" => "inside-sales",
        "fieldsales" => "field-sales",
        "customersuccess" => "customer-success",
        _ => "",
    };
    if let Some(senders) = hand_over_from {
        return senders.contains(&role);
    }
    if reads {
        return true;
    }
    match method {
        "ExcludeLead" => ["marketing", "admin", "service:inside-sales"].contains(&role),
        "SetTargets" | "PublishQualityDefinition" | "PreviewQualityDefinition" | "ListAuditEntries" => {
            ["revops", "admin"].contains(&role)
        }
        "PreviewDefinition" => ["revops", "admin", "service:kpi"].contains(&role),
        "ListDeadLetters" | "RetryDeadLetter" | "DropDeadLetter" | "ErasePerson" => role == "admin",
        _ => role == owner || role == "admin",
    }
}

/// The service that serves `path`.
pub fn served_by(path: &str) -> Vec<ServiceName> {
    let service = path.trim_start_matches('/').split('/').next().unwrap();
    if service == "themodel.kpi.v1.DefinitionPreviewService" {
        // kpi's contract, served where the leads are.
        return vec![Svc::Marketing];
    }
    match service.split('.').nth(1).unwrap() {
        "marketing" => vec![Svc::Marketing],
        "insidesales" => vec![Svc::InsideSales],
        "fieldsales" => vec![Svc::FieldSales],
        "customersuccess" => vec![Svc::CustomerSuccess],
        "kpi" => vec![Svc::Kpi],
        // Every service serves its event stream, outbox and audit log.
        _ => ServiceName::ALL.to_vec(),
    }
}

/// Calls `path` with an empty request (every field at its default), which
/// decodes as any request message.
async fn call(channel: PeerChannel, path: &str) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let request = tonic::Request::new(());
    match grpc.unary(request, path.parse().unwrap(), codec).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

fn raw(t: &TestSuite, name: Svc, token: Option<&str>) -> PeerChannel {
    let credential = match token {
        Some(token) => auth::Credential::bearer(token).unwrap(),
        None => auth::Credential::none(),
    };
    themodel_runtime::telemetry::peer_channel(&t.suite.url(name), &credential).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_rpc_admits_exactly_its_roles() {
    let t = TestSuite::start_with(|o| {
        o.identities = PEOPLE.iter().map(|(i, r)| (i.to_string(), Role::parse(r).unwrap())).collect();
    })
    .await;
    let mut checked = 0;
    for (path, _) in auth::TABLE {
        for name in served_by(path) {
            assert_eq!(
                call(raw(&t, name, None), path).await,
                Code::Unauthenticated,
                "{path} on {name} without a token"
            );
            let forged = auth::new_token();
            assert_eq!(call(raw(&t, name, Some(&forged)), path).await, Code::Unauthenticated, "{path}: unknown token");
            for (identity, role) in identities() {
                let code = call(t.channel_as(name, &identity), path).await;
                if expected(path, &role) {
                    assert!(
                        !matches!(code, Code::Unauthenticated | Code::PermissionDenied),
                        "{role} may call {path} on {name}, got {code:?}"
                    );
                } else {
                    assert_eq!(code, Code::PermissionDenied, "{role} may not call {path} on {name}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 600, "{checked} calls checked");

    // Health and reflection stay open.
    let mut health = tonic_health::pb::health_client::HealthClient::new(raw(&t, Svc::Kpi, None));
    health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_hand_overs_are_refused() {
    let t = TestSuite::start_with(|o| o.identities = vec![("mia".to_owned(), Role::parse("marketing").unwrap())]).await;
    capture(&t, lead("forge-1", "2026-11-02T09:00:00Z")).await;

    // A lead marketing never handed over, pushed into the queue by admin.
    let accept = is::AcceptLeadRequest {
        request_id: "forged-accept".into(),
        lead_id: "ghost".into(),
        email: "ghost@example.com".into(),
        source: "web_form".into(),
        handed_over_at: ts("2026-11-02T09:00:00Z"),
        ..Default::default()
    };
    let mut as_admin = is::inside_sales_service_client::InsideSalesServiceClient::new(t.channel(Svc::InsideSales));
    let refused = as_admin.accept_lead(accept.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let queue = t.inside_sales.clone().list_queue(is::ListQueueRequest::default()).await.unwrap().into_inner();
    assert!(queue.items.iter().all(|i| i.lead_id != "ghost"), "nothing entered the queue");

    // Marketing's people cannot speak for inside sales; marketing's own
    // reclassification still works.
    let mut mia = mk::marketing_service_client::MarketingServiceClient::new(t.channel_as(Svc::Marketing, "mia"));
    let exclusion = |sender: Department| mk::ExcludeLeadRequest {
        request_id: format!("exclude-{}", sender as i32),
        lead_id: "forge-1".into(),
        reason: "competitor".into(),
        sender: sender as i32,
        ..Default::default()
    };
    let refused = mia.exclude_lead(exclusion(Department::InsideSales)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let lead = t.marketing.clone().get_lead(mk::GetLeadRequest { lead_id: "forge-1".into() }).await.unwrap();
    assert_ne!(lead.into_inner().lead.unwrap().status, mk::LeadStatus::Excluded as i32);
    let excluded = mia.exclude_lead(exclusion(Department::Marketing)).await.unwrap().into_inner().lead.unwrap();
    assert_eq!(excluded.status, mk::LeadStatus::Excluded as i32);

    // A service may send only as itself.
    let mut inside = mk::marketing_service_client::MarketingServiceClient::new(
        t.channel_as(Svc::Marketing, &auth::service_identity(Peer::InsideSales)),
    );
    let recycle = mk::RecycleLeadRequest {
        request_id: "forged-recycle".into(),
        lead_id: "forge-1".into(),
        reason: "price".into(),
        sender: Department::FieldSales as i32,
        ..Default::default()
    };
    let refused = inside.recycle_lead(recycle).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
}

/// Hand-overs the real senders could repeat (a stale duplicate under a new
/// id) cannot turn a record back: a converted lead is not reopened, and a
/// won deal is not counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_hand_overs_turn_nothing_back() {
    use themodel_proto::customersuccess::v1 as cs;
    use themodel_proto::fieldsales::v1 as fs;

    let t = TestSuite::start().await;
    win(&t, "back-1", "2026-11-02").await;
    let won = account(&t, "acct-back-1").await;
    let item = in_queue_any(&t, "back-1").await;
    assert_eq!(item.status, is::QueueStatus::Converted as i32);

    // Marketing's identity repeats the lead's hand-over under a new id.
    let mut marketing = is::inside_sales_service_client::InsideSalesServiceClient::new(
        t.channel_as(Svc::InsideSales, &auth::service_identity(Peer::Marketing)),
    );
    let repeat = is::AcceptLeadRequest {
        request_id: "repeated-hand-over".into(),
        lead_id: "back-1".into(),
        email: "back-1@acme.example".into(),
        source: "web_form".into(),
        handed_over_at: ts("2026-11-02T09:30:00Z"),
        ..Default::default()
    };
    let answered = marketing.accept_lead(repeat).await.unwrap().into_inner().item.unwrap();
    assert_eq!(answered.status, is::QueueStatus::Converted as i32, "acknowledged as it is");
    assert_eq!(answered.opportunity_id, "opp-back-1");
    assert!(answered.bant.is_some(), "BANT kept");
    // Converting again is refused: still one opportunity for the lead.
    let again = t
        .inside_sales
        .clone()
        .convert_to_opportunity(is::ConvertToOpportunityRequest {
            request_id: "convert-again".into(),
            lead_id: "back-1".into(),
            opportunity_id: "opp-back-1-bis".into(),
            estimated_value: Some(yen(1_000_000)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    let opportunities = t
        .field_sales
        .clone()
        .list_opportunities(fs::ListOpportunitiesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .opportunities;
    assert_eq!(opportunities.iter().filter(|o| o.lead_id == "back-1").count(), 1);

    // Field sales' identity repeats the won deal under a new id.
    let mut field_sales = cs::customer_success_service_client::CustomerSuccessServiceClient::new(
        t.channel_as(Svc::CustomerSuccess, &auth::service_identity(Peer::FieldSales)),
    );
    let deal = cs::AcceptWonDealRequest {
        request_id: "repeated-deal".into(),
        account_id: "acct-back-1".into(),
        opportunity_id: "opp-back-1".into(),
        lead_id: "back-1".into(),
        contract_value: Some(yen(1_200_000)),
        term_months: 12,
        occurred_at: ts("2026-11-02T12:00:00Z"),
        ..Default::default()
    };
    let answered = field_sales.accept_won_deal(deal).await.unwrap().into_inner().account.unwrap();
    assert_eq!(answered.contract_value, won.contract_value, "not counted twice");
    assert_eq!(account(&t, "acct-back-1").await.contract_value, won.contract_value);

    let funnel = t.settled_funnel("2026-11-01", "2026-12-01").await;
    assert_eq!((funnel.opportunities, funnel.wins), (1, 1));
}

/// The lead's queue item, whatever its status.
async fn in_queue_any(t: &TestSuite, lead_id: &str) -> is::QueueItem {
    let req = is::GetQueueItemRequest { lead_id: lead_id.into() };
    t.inside_sales.clone().get_queue_item(req).await.unwrap().into_inner().item.unwrap()
}

/// A caller added to the keyring file gets in without a restart, and a
/// token replaced there stops working.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyring_changes_take_effect_without_a_restart() {
    let t = TestSuite::start().await;
    let keyring = t.suite.tokens_dir().join("keyring");
    let list = |token: String| {
        let channel = raw(&t, Svc::Marketing, Some(&token));
        async move {
            let mut m = mk::marketing_service_client::MarketingServiceClient::new(channel);
            m.list_leads(mk::ListLeadsRequest::default()).await.map(|_| ()).map_err(|s| s.code())
        }
    };
    let first = auth::issue(&keyring, "newcomer", Role::ReadOnly).unwrap();
    themodel_e2e::eventually("the new caller let in", || async { list(first.clone()).await.ok() }).await;

    let second = auth::issue(&keyring, "newcomer", Role::ReadOnly).unwrap();
    themodel_e2e::eventually("the replaced token refused", || async {
        (list(first.clone()).await == Err(Code::Unauthenticated)).then_some(())
    })
    .await;
    assert_eq!(list(second).await, Ok(()));
    assert_eq!(list(t.suite.token(ADMIN).unwrap().to_owned()).await, Ok(()), "the others stay");
}
