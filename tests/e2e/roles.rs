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
        && method != "ListDeadLetters";
    let hand_over_from: Option<&[&str]> = match method {
        "AcceptLead" => Some(&["service:marketing"]),
        "AcceptOpportunity" => Some(&["service:inside-sales"]),
        "AcceptWonDeal" => Some(&["service:field-sales"]),
        "RecycleLead" if service.contains("marketing") => Some(&["service:inside-sales", "service:field-sales"]),
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
        "SetTargets" | "PublishQualityDefinition" => ["revops", "admin"].contains(&role),
        "ListDeadLetters" | "RetryDeadLetter" | "DropDeadLetter" => role == "admin",
        _ => role == owner || role == "admin",
    }
}

/// The service that serves `path`.
fn served_by(path: &str) -> Vec<ServiceName> {
    let service = path.trim_start_matches('/').split('/').next().unwrap();
    match service.split('.').nth(1).unwrap() {
        "marketing" => vec![Svc::Marketing],
        "insidesales" => vec![Svc::InsideSales],
        "fieldsales" => vec![Svc::FieldSales],
        "customersuccess" => vec![Svc::CustomerSuccess],
        "kpi" => vec![Svc::Kpi],
        // Every service serves its event stream and outbox.
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
