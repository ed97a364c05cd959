//! TLS and mutual TLS: the whole chain with every link encrypted and each
//! service identified by its certificate, and handshakes and callers that
//! must fail.

use std::collections::BTreeMap;

use themodel::{ServiceName, SuiteTls};
use themodel_e2e::certs::TestCa;
use themodel_e2e::{Svc, TestSuite};
use themodel_proto::marketing::v1 as mk;
use themodel_proto::marketing::v1::marketing_service_client::MarketingServiceClient;
use themodel_runtime::auth::{self, Credential, Role};
use themodel_runtime::telemetry::peer_channel;
use themodel_runtime::tls;
use tonic::Code;

use crate::flows::win;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_chain_runs_over_mutual_tls() {
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new(certs.path(), "suite");
    let services: BTreeMap<_, _> =
        ServiceName::ALL.into_iter().map(|n| (n, ca.issue(&auth::service_identity(n.peer())))).collect();
    let suite_tls = SuiteTls { ca: ca.cert.clone(), services };
    // A port for kpi's plaintext health, as a Kubernetes probe needs.
    let probe_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let t = TestSuite::start_with(|o| {
        o.tls = Some(suite_tls);
        o.identities.push(("auditor".into(), Role::ReadOnly));
        o.health_ports.insert(Svc::Kpi, probe_port);
    })
    .await;

    // The probe port answers health in plaintext with no credential, and
    // nothing else.
    let probe = peer_channel(&format!("http://127.0.0.1:{probe_port}"), &Credential::none()).unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(probe.clone());
    let status = health.check(tonic_health::pb::HealthCheckRequest::default()).await.unwrap().into_inner().status;
    assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    let kpi = themodel_proto::kpi::v1::kpi_service_client::KpiServiceClient::new(probe)
        .get_quality_definition(themodel_proto::kpi::v1::GetQualityDefinitionRequest::default())
        .await
        .unwrap_err();
    assert_eq!(kpi.code(), Code::Unimplemented, "{kpi:?}");

    // Every hand-over and every event read below goes over TLS, and the
    // services present no token to each other: only their certificates.
    win(&t, "tls-1", "2026-11-02").await;
    let funnel = t.settled_funnel("2026-11-01", "2026-12-01").await;
    assert_eq!((funnel.leads, funnel.opportunities, funnel.wins), (1, 1, 1), "{funnel:?}");

    let url = t.suite.url(Svc::Marketing);
    assert!(url.starts_with("https://localhost:"), "{url}");
    let list = |credential: Credential| {
        let url = url.clone();
        async move {
            let mut client = MarketingServiceClient::new(peer_channel(&url, &credential).unwrap());
            client.list_leads(mk::ListLeadsRequest::default()).await.map(|r| r.into_inner().leads.len())
        }
    };
    let trusting = |ca: &TestCa, identity: Option<&(std::path::PathBuf, std::path::PathBuf)>| {
        Credential::none()
            .with_tls(tls::client(Some(&ca.cert), identity.map(|(c, k)| (c.as_path(), k.as_path()))).unwrap())
    };

    // A token over TLS, no certificate.
    let admin = t.suite.credential(themodel::ADMIN).unwrap();
    assert_eq!(list(admin).await.unwrap(), 1);
    // A certificate the suite's CA signed names its caller: no token needed.
    let admin_cert = ca.issue("admin");
    assert_eq!(list(trusting(&ca, Some(&admin_cert))).await.unwrap(), 1);
    // ... and the keyring gives that identity its role.
    let auditor = ca.issue("auditor");
    let mut reader = MarketingServiceClient::new(peer_channel(&url, &trusting(&ca, Some(&auditor))).unwrap());
    assert_eq!(reader.list_leads(mk::ListLeadsRequest::default()).await.unwrap().into_inner().leads.len(), 1);
    let capture = mk::CaptureLeadRequest { request_id: "by-auditor".into(), ..Default::default() };
    assert_eq!(reader.capture_lead(capture).await.unwrap_err().code(), Code::PermissionDenied);
    // A signed certificate for an identity the keyring does not hold.
    let stranger = ca.issue("stranger");
    assert_eq!(list(trusting(&ca, Some(&stranger))).await.unwrap_err().code(), Code::Unauthenticated);
    // Neither token nor certificate.
    assert_eq!(list(trusting(&ca, None)).await.unwrap_err().code(), Code::Unauthenticated);

    // Handshakes that must fail: a client that does not trust the server's
    // CA; a client certificate another CA signed (even naming admin);
    // plaintext to a TLS port.
    let other = TestCa::new(certs.path(), "other");
    let foreign_admin = other.issue("admin");
    let plaintext = url.replace("https://localhost", "http://127.0.0.1");
    let refused = [
        ("server CA not trusted", list(trusting(&other, None)).await),
        ("client certificate from another CA", list(trusting(&ca, Some(&foreign_admin))).await),
        ("plaintext to a TLS port", {
            let token = t.suite.credential(themodel::ADMIN).unwrap();
            let mut client = MarketingServiceClient::new(peer_channel(&plaintext, &token).unwrap());
            client.list_leads(mk::ListLeadsRequest::default()).await.map(|r| r.into_inner().leads.len())
        }),
    ];
    // The refusal reaches the client as a transport failure: UNAVAILABLE
    // when the handshake fails on its side; when the server refuses the
    // client's certificate (or its plaintext), the alert or the closed
    // connection arrives after the client's side was done, as UNKNOWN or
    // CANCELLED, or, when the client reads the server's TLS alert as
    // HTTP/2, as INTERNAL carrying the transport's error. Never an answer
    // of the service's own (which carries no transport error).
    for (what, answer) in refused {
        let status = answer.expect_err(what);
        let transport = std::error::Error::source(&status).is_some_and(|e| e.is::<tonic::transport::Error>());
        assert!(
            transport || matches!(status.code(), Code::Unavailable | Code::Cancelled | Code::Unknown),
            "{what}: {status:?}"
        );
    }
}
