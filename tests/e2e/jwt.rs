//! Callers the company's identity provider vouches for: JWTs checked
//! against the keys it publishes over HTTP, their roles read from a claim,
//! keys rotated without a restart; and tokens that must fail.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use themodel_e2e::{Svc, TestSuite, eventually};
use themodel_proto::common::v1::{self as common, audit_service_client::AuditServiceClient};
use themodel_proto::marketing::v1 as mk;
use themodel_proto::marketing::v1::marketing_service_client::MarketingServiceClient;
use themodel_runtime::auth::Credential;
use themodel_runtime::jwt::{JwksSource, JwtConfig};
use themodel_runtime::telemetry::{PeerChannel, peer_channel};
use tonic::Code;

const ISSUER: &str = "https://idp.corp.example/realms/sales";
const AUDIENCE: &str = "themodel";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// One signing key of the identity provider (ECDSA P-256).
struct SigningKey {
    kid: String,
    key: rcgen::KeyPair,
}

impl SigningKey {
    fn new(kid: &str) -> SigningKey {
        SigningKey { kid: kid.to_owned(), key: rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap() }
    }

    /// The public key as the provider publishes it.
    fn jwk(&self) -> Value {
        // An uncompressed point: 0x04, then x and y.
        let point = self.key.public_key_raw();
        json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
               "x": b64(&point[1..33]), "y": b64(&point[33..65])})
    }

    fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&self.key.serialize_der())).unwrap()
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }
}

/// The provider's JWKS endpoint: what it publishes, how often and when it
/// was last read.
struct Jwks {
    url: String,
    doc: Arc<Mutex<Value>>,
    reads: Arc<AtomicUsize>,
    last_read: Arc<Mutex<Instant>>,
}

impl Jwks {
    async fn serve(keys: &[&SigningKey]) -> Jwks {
        let doc = Arc::new(Mutex::new(Value::Null));
        let reads = Arc::new(AtomicUsize::new(0));
        let last_read = Arc::new(Mutex::new(Instant::now()));
        let (d, r, l) = (doc.clone(), reads.clone(), last_read.clone());
        let app = axum::Router::new().route(
            "/protocol/openid-connect/certs",
            axum::routing::get(move || {
                let (d, r, l) = (d.clone(), r.clone(), l.clone());
                async move {
                    r.fetch_add(1, Ordering::SeqCst);
                    *l.lock().unwrap() = Instant::now();
                    let body = d.lock().unwrap().to_string();
                    ([(http::header::CONTENT_TYPE, "application/json")], body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/protocol/openid-connect/certs", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let jwks = Jwks { url, doc, reads, last_read };
        jwks.publish(keys);
        jwks
    }

    fn publish(&self, keys: &[&SigningKey]) {
        *self.doc.lock().unwrap() = json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()});
    }

    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    /// How long since the JWKS was last read.
    fn idle(&self) -> Duration {
        self.last_read.lock().unwrap().elapsed()
    }
}

/// A token's claims as the provider issues them: roles under
/// `realm_access.roles`, as Keycloak puts them.
fn claims(sub: &str, roles: &[&str]) -> Value {
    json!({"iss": ISSUER, "aud": [AUDIENCE, "account"], "sub": sub, "iat": now(), "exp": now() + 600,
           "realm_access": {"roles": roles}})
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

fn channel(t: &TestSuite, name: Svc, token: &str) -> PeerChannel {
    peer_channel(&t.suite.url(name), &Credential::bearer(token).unwrap()).unwrap()
}

async fn capture(t: &TestSuite, token: &str, request_id: &str) -> Result<mk::Lead, tonic::Status> {
    capture_at(&t.suite.url(Svc::Marketing), token, request_id).await
}

async fn capture_at(url: &str, token: &str, request_id: &str) -> Result<mk::Lead, tonic::Status> {
    let req = mk::CaptureLeadRequest {
        request_id: request_id.into(),
        email: format!("{request_id}@buyer.example"),
        source: "webinar".into(),
        ..Default::default()
    };
    let channel = peer_channel(url, &Credential::bearer(token).unwrap()).unwrap();
    let lead = MarketingServiceClient::new(channel).capture_lead(req).await?;
    Ok(lead.into_inner().lead.unwrap())
}

async fn lead_count(t: &TestSuite) -> usize {
    let req = mk::ListLeadsRequest { page_size: 1000, ..Default::default() };
    t.marketing.clone().list_leads(req).await.unwrap().into_inner().leads.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identity_provider_tokens_carry_their_roles() {
    let first = SigningKey::new("2026-11-a");
    let jwks = Jwks::serve(&[&first]).await;
    let mut config = JwtConfig::new(ISSUER, AUDIENCE, JwksSource::parse(&jwks.url).unwrap());
    config.roles_claim = "/realm_access/roles".into();
    config.role_prefix = "themodel-".into();
    config.unknown_key_refetch = Duration::from_millis(200);
    let t = TestSuite::start_with(|o| o.jwt = Some(config)).await;

    // A marketer's token: the role is the prefixed realm role; the
    // provider's other roles are passed over. The audit log names her.
    let mia = first.sign(&claims("mia@corp.example", &["offline_access", "themodel-marketing"]));
    let lead = capture(&t, &mia, "jwt-mia").await.unwrap();
    let req = common::ListAuditEntriesRequest { identity: "mia@corp.example".into(), ..Default::default() };
    let log = AuditServiceClient::new(t.channel(Svc::Marketing)).list_audit_entries(req).await.unwrap().into_inner();
    let entry = log.entries.iter().find(|e| e.method.ends_with("/CaptureLead")).expect("the capture is audited");
    assert_eq!((entry.role.as_str(), entry.request_id.as_str()), ("marketing", "jwt-mia"), "{entry:?}");
    assert!(entry.record.contains(&lead.lead_id), "{entry:?}");

    // A reader reads and may not write; the refusal names the role.
    let rita = first.sign(&claims("rita", &["themodel-read-only"]));
    let mut reader = MarketingServiceClient::new(channel(&t, Svc::Marketing, &rita));
    assert_eq!(reader.list_leads(mk::ListLeadsRequest::default()).await.unwrap().into_inner().leads.len(), 1);
    let denied = capture(&t, &rita, "jwt-rita").await.unwrap_err();
    assert_eq!((denied.code(), denied.message()), (Code::PermissionDenied, "role read-only may not call CaptureLead"));
    // With several roles, a call is made in the one that allows it.
    let both = first.sign(&claims("mo", &["themodel-read-only", "themodel-marketing"]));
    capture(&t, &both, "jwt-mo").await.unwrap();
    // A valid token with no role of the suite: who it is is known, and it
    // may do nothing. An unprefixed "marketing" is not the suite's role.
    let none = first.sign(&claims("nobody", &["marketing", "uma_authorization"]));
    let denied = capture(&t, &none, "jwt-nobody").await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    // kpi, a service of its own, takes the same tokens.
    let rex = first.sign(&claims("rex", &["themodel-revops"]));
    let mut kpi = themodel_proto::kpi::v1::kpi_service_client::KpiServiceClient::new(channel(&t, Svc::Kpi, &rex));
    kpi.get_quality_definition(themodel_proto::kpi::v1::GetQualityDefinitionRequest::default()).await.unwrap();

    // Tokens that must fail, each told only "invalid credential" and none
    // leaving a trace.
    let marketer = || claims("mallory", &["themodel-marketing"]);
    let impostor = SigningKey::new("impostor");
    let header_none = b64(br#"{"alg":"none","typ":"JWT","kid":"2026-11-a"}"#);
    let hs256 = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(first.kid.clone());
        // The classic confusion: the public key used as an HMAC secret.
        jsonwebtoken::encode(&header, &marketer(), &EncodingKey::from_secret(first.jwk().to_string().as_bytes()))
            .unwrap()
    };
    let signed = first.sign(&marketer());
    let (head, rest) = signed.split_once('.').unwrap();
    let signature = rest.split_once('.').unwrap().1;
    let admin_claims = b64(claims("mallory", &["themodel-admin"]).to_string().as_bytes());
    let refused = [
        ("expired", first.sign(&with(marketer(), "exp", json!(now() - 3600)))),
        ("not yet valid", first.sign(&with(marketer(), "nbf", json!(now() + 3600)))),
        ("another audience", first.sign(&with(marketer(), "aud", json!("billing")))),
        ("another issuer", first.sign(&with(marketer(), "iss", json!("https://evil.example")))),
        ("no expiry", first.sign(&without(marketer(), "exp"))),
        ("no audience", first.sign(&without(marketer(), "aud"))),
        ("no subject", first.sign(&without(marketer(), "sub"))),
        ("signed by another key under the real key's id", impostor.sign_as(&first.kid, &marketer())),
        ("an HMAC over the public key", hs256),
        ("unsigned", format!("{header_none}.{}.", b64(marketer().to_string().as_bytes()))),
        ("claims changed after signing", format!("{head}.{admin_claims}.{signature}")),
        ("not a JWT at all", "a.b.c".to_owned()),
    ];
    let before = lead_count(&t).await;
    for (what, token) in &refused {
        let status = capture(&t, token, "jwt-forged").await.unwrap_err();
        assert_eq!((status.code(), status.message()), (Code::Unauthenticated, "invalid credential"), "{what}");
    }
    assert_eq!(lead_count(&t).await, before, "no refused token stored anything");

    // The provider rotates: a new key is published and the old one
    // retired. A token under the new key is let in without a restart; one
    // under the retired key no longer is.
    let second = SigningKey::new("2026-11-b");
    jwks.publish(&[&second]);
    // Calls arriving together with the new key, once a read is allowed
    // again, wait for one read of the JWKS and are all let in.
    let ivy = second.sign(&claims("ivy", &["themodel-marketing"]));
    let url = t.suite.url(Svc::Marketing);
    eventually("the refetch interval passed", || async { (jwks.idle() > Duration::from_millis(250)).then_some(()) })
        .await;
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..8 {
        let (url, token) = (url.clone(), ivy.clone());
        calls.spawn(async move { capture_at(&url, &token, &format!("jwt-ivy-{n}")).await.is_ok() });
    }
    let admitted = calls.join_all().await;
    assert!(admitted.iter().all(|ok| *ok), "{admitted:?}");
    let status = capture(&t, &mia, "jwt-mia-again").await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // Tokens naming key ids the provider never published make the service
    // read the JWKS at most once per 200 ms, however many arrive.
    let reads = jwks.reads();
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..40 {
        let token = second.sign_as(&format!("made-up-{n}"), &claims("mallory", &["themodel-marketing"]));
        let url = url.clone();
        calls.spawn(async move { capture_at(&url, &token, &format!("jwt-made-up-{n}")).await.unwrap_err().code() });
    }
    let codes = calls.join_all().await;
    assert!(codes.iter().all(|c| *c == Code::Unauthenticated), "{codes:?}");
    let allowed = 1 + (started.elapsed().as_millis() / 200) as usize;
    assert!(jwks.reads() - reads <= allowed, "{} reads for 40 made-up key ids", jwks.reads() - reads);

    // The suite's own tokens work beside the provider's throughout: the
    // chain's hand-overs and this admin's reads used them.
    assert_eq!(lead_count(&t).await, before + 8);
}
