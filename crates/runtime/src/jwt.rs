//! Callers known to the company's identity provider: JSON Web Tokens it
//! signed, checked against its published keys (a JWKS, from a file or a
//! URL), its issuer and this deployment's audience, with the caller's roles
//! read from a claim.
//!
//! A bearer token with the shape of a JWT (three base64url parts) is checked
//! here; any other bearer token against the keyring ([`crate::auth`]). Only
//! asymmetric signatures are accepted (RS*, PS*, ES256, ES384, EdDSA): a
//! shared-secret (HS*) or unsigned (`none`) token is refused whatever its
//! claims, so a public key can never serve as an HMAC secret. `exp`, `iss`
//! and `aud` are required; `nbf` is honoured when present; clocks may
//! disagree by [`LEEWAY`].
//!
//! Keys rotate: the JWKS is read again every `refresh`, and at once when a
//! token names a key id the set lacks — at most once per
//! `unknown_key_refetch`, so tokens with made-up key ids cannot make the
//! service hammer the identity provider. When the provider cannot be
//! reached, the keys last read stay in use; until a first read succeeds,
//! every JWT is refused and keyring callers are unaffected.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::auth::Role;

/// How far clocks may disagree when checking `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(60);

/// The largest JWKS document read.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// How long fetching a JWKS may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest identity taken from a token (the audit log stores it).
const MAX_IDENTITY: usize = 200;

/// Where the identity provider's signing keys are published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    Url(reqwest::Url),
}

impl JwksSource {
    /// An `https://` URL, an `http://` URL on a loopback address (a local
    /// sidecar; keys fetched in clear text over a network could be
    /// replaced), or a file path.
    pub fn parse(s: &str) -> anyhow::Result<JwksSource> {
        if !s.starts_with("http://") && !s.starts_with("https://") {
            anyhow::ensure!(!s.is_empty(), "the JWKS location is empty: give a file path or an https:// URL");
            return Ok(JwksSource::File(PathBuf::from(s)));
        }
        let url = reqwest::Url::parse(s).with_context(|| format!("the JWKS URL {s:?}"))?;
        if url.scheme() == "http" {
            let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
            let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            anyhow::ensure!(loopback, "the JWKS URL {s:?}: use https:// (http:// only for a loopback address)");
        }
        Ok(JwksSource::Url(url))
    }
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksSource::File(path) => write!(f, "{}", path.display()),
            JwksSource::Url(url) => write!(f, "{url}"),
        }
    }
}

/// Which tokens a service accepts, and how it reads their callers.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must carry (one of, when it is a list).
    pub audience: String,
    pub jwks: JwksSource,
    /// For an `https://` JWKS: a CA to trust besides the public web roots.
    pub jwks_ca: Option<PathBuf>,
    /// The claim that holds the caller's roles: a top-level claim's name
    /// (`roles`, or a namespaced `https://example.com/roles`), or a JSON
    /// pointer into the claims (`/realm_access/roles`). Its value is a list
    /// of strings, or one string of space-separated names.
    pub roles_claim: String,
    /// Only values starting with this prefix name roles of the suite, with
    /// the prefix removed (`themodel-revops` → `revops`); empty: every value.
    pub role_prefix: String,
    /// The claim that names the caller in the audit log and logs (`sub`).
    pub identity_claim: String,
    /// How often the JWKS is read again.
    pub refresh: Duration,
    /// The least time between two reads of the JWKS caused by an unknown
    /// key id.
    pub unknown_key_refetch: Duration,
}

impl JwtConfig {
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>, jwks: JwksSource) -> Self {
        JwtConfig {
            issuer: issuer.into(),
            audience: audience.into(),
            jwks,
            jwks_ca: None,
            roles_claim: "roles".to_owned(),
            role_prefix: String::new(),
            identity_claim: "sub".to_owned(),
            refresh: Duration::from_secs(300),
            unknown_key_refetch: Duration::from_secs(10),
        }
    }
}

/// Whether a bearer token has the shape of a JWT, so it is checked here
/// rather than against the keyring (whose tokens hold no dots).
pub fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}

/// A caller a valid token names, with the suite's roles it carries (in
/// the token's order; empty when it carries none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub identity: String,
    pub roles: Vec<Role>,
}

/// Why a token was refused. Callers are told only "invalid credential";
/// the reason goes to the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the token names a key the identity provider does not publish")]
    UnknownKey,
    #[error("{0}")]
    Invalid(String),
}

/// One published signing key.
struct Key {
    kid: Option<String>,
    /// The algorithms tokens signed with it may use.
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

/// Checks JWTs against the identity provider's current keys.
pub struct JwtVerifier {
    config: JwtConfig,
    keys: RwLock<Arc<Vec<Key>>>,
    client: Option<reqwest::Client>,
    /// Held while reading the JWKS, so concurrent calls read it once; holds
    /// when it was last read.
    fetched: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier").field("config", &self.config).finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// A verifier for `config`. A JWKS file is read now, and must parse; a
    /// JWKS URL is fetched by [`JwtVerifier::follow`], so a provider that is
    /// down does not stop the service from starting.
    pub fn new(config: JwtConfig) -> anyhow::Result<Arc<JwtVerifier>> {
        anyhow::ensure!(!config.issuer.is_empty(), "the JWT issuer is empty");
        anyhow::ensure!(!config.audience.is_empty(), "the JWT audience is empty");
        anyhow::ensure!(!config.roles_claim.is_empty(), "the JWT roles claim is empty");
        anyhow::ensure!(!config.identity_claim.is_empty(), "the JWT identity claim is empty");
        let client = match &config.jwks {
            JwksSource::File(_) => None,
            JwksSource::Url(_) => {
                let mut builder = reqwest::Client::builder().timeout(FETCH_TIMEOUT);
                if let Some(ca) = &config.jwks_ca {
                    let pem = std::fs::read(ca).with_context(|| format!("reading the JWKS CA {}", ca.display()))?;
                    let cert = reqwest::Certificate::from_pem(&pem)
                        .with_context(|| format!("the JWKS CA {} is not a PEM certificate", ca.display()))?;
                    builder = builder.add_root_certificate(cert);
                }
                Some(builder.build().context("building the JWKS client")?)
            }
        };
        // A file is read now, so a bad one stops the service from starting.
        let (keys, fetched) = match &config.jwks {
            JwksSource::File(path) => (signing_keys(&read_file(path)?, &config.jwks)?, Some(Instant::now())),
            JwksSource::Url(_) => (Vec::new(), None),
        };
        Ok(Arc::new(JwtVerifier {
            config,
            keys: RwLock::new(Arc::new(keys)),
            client,
            fetched: tokio::sync::Mutex::new(fetched),
        }))
    }

    pub fn config(&self) -> &JwtConfig {
        &self.config
    }

    fn current(&self) -> Arc<Vec<Key>> {
        self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn replace(&self, keys: Vec<Key>) {
        *self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
    }

    /// Reads the JWKS and takes its keys; returns how many. A set that
    /// cannot be read, does not parse or holds no signing key leaves the
    /// keys as they were.
    pub async fn refresh(&self) -> anyhow::Result<usize> {
        let mut fetched = self.fetched.lock().await;
        self.refresh_locked(&mut fetched).await
    }

    async fn refresh_locked(&self, fetched: &mut Option<Instant>) -> anyhow::Result<usize> {
        *fetched = Some(Instant::now());
        let text = match (&self.config.jwks, &self.client) {
            (JwksSource::File(path), _) => read_file(path)?,
            (JwksSource::Url(url), Some(client)) => fetch(client, url).await?,
            (JwksSource::Url(_), None) => anyhow::bail!("no HTTP client for the JWKS URL"),
        };
        let keys = signing_keys(&text, &self.config.jwks)?;
        let count = keys.len();
        self.replace(keys);
        Ok(count)
    }

    /// Reads the JWKS again when a token names an unknown key, unless it
    /// was read within `unknown_key_refetch` (perhaps by a call that was
    /// waiting for the same new key).
    async fn refetch_for_unknown_key(&self) {
        let mut fetched = self.fetched.lock().await;
        if fetched.is_some_and(|at| at.elapsed() < self.config.unknown_key_refetch) {
            return;
        }
        match self.refresh_locked(&mut fetched).await {
            Ok(keys) => tracing::info!(jwks = %self.config.jwks, keys, "JWKS read again for an unknown key id"),
            Err(e) => {
                tracing::warn!(jwks = %self.config.jwks, error = format!("{e:#}"), "cannot read the JWKS; keeping the keys loaded")
            }
        }
    }

    /// Reads the JWKS every `refresh` until `stop` (at once when no key is
    /// loaded yet, then every few seconds until the first read succeeds).
    pub async fn follow(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        const RETRY: Duration = Duration::from_secs(5);
        // A file was read by `new`; a URL is read first here.
        let mut read = self.current().is_empty();
        loop {
            if read && let Err(e) = self.refresh().await {
                tracing::warn!(jwks = %self.config.jwks, error = format!("{e:#}"), "cannot read the JWKS; keeping the keys loaded (JWTs are refused while there are none)");
            }
            let wait = if self.current().is_empty() { RETRY.min(self.config.refresh) } else { self.config.refresh };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            read = true;
        }
    }

    /// Checks a token against the keys loaded now.
    pub fn verify(&self, token: &str) -> Result<Verified, Refused> {
        let invalid = |e: jsonwebtoken::errors::Error| Refused::Invalid(e.to_string());
        let header = jsonwebtoken::decode_header(token).map_err(invalid)?;
        let keys = self.current();
        let key = match &header.kid {
            Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid.as_str())),
            // A token without a key id is checked only against a set of one.
            None if keys.len() == 1 => keys.first(),
            None => None,
        };
        let key = key.ok_or(Refused::UnknownKey)?;
        if !key.algorithms.contains(&header.alg) {
            return Err(Refused::Invalid(format!("algorithm {:?} is not one of the key's", header.alg)));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_nbf = true;
        let claims = jsonwebtoken::decode::<Value>(token, &key.key, &validation).map_err(invalid)?.claims;
        let identity = match claims.get(&self.config.identity_claim) {
            Some(Value::String(s))
                if !s.is_empty() && s.chars().count() <= MAX_IDENTITY && !s.chars().any(char::is_control) =>
            {
                s.clone()
            }
            _ => {
                return Err(Refused::Invalid(format!(
                    "claim {:?} is not a name of up to {MAX_IDENTITY} printable characters",
                    self.config.identity_claim
                )));
            }
        };
        Ok(Verified { identity, roles: roles(&claims, &self.config.roles_claim, &self.config.role_prefix) })
    }

    /// Checks a token, reading the JWKS again first if the token names a
    /// key id not loaded (see [`JwtConfig::unknown_key_refetch`]).
    pub async fn verify_fresh(&self, token: &str) -> Result<Verified, Refused> {
        match self.verify(token) {
            Err(Refused::UnknownKey) => {
                self.refetch_for_unknown_key().await;
                self.verify(token)
            }
            verified => verified,
        }
    }
}

/// The suite's roles a token's claims carry: the values of `claim` (see
/// [`JwtConfig::roles_claim`]) that start with `prefix` and, without it,
/// name a role. Other values are the identity provider's roles for other
/// applications, and are passed over.
pub fn roles(claims: &Value, claim: &str, prefix: &str) -> Vec<Role> {
    let value = if claim.starts_with('/') { claims.pointer(claim) } else { claims.get(claim) };
    let names: Vec<&str> = match value {
        Some(Value::String(s)) => s.split_whitespace().collect(),
        Some(Value::Array(values)) => values.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let mut roles = Vec::new();
    for name in names {
        if let Some(role) = name.strip_prefix(prefix).and_then(|n| Role::parse(n).ok())
            && !roles.contains(&role)
        {
            roles.push(role);
        }
    }
    roles
}

/// The signing keys of a JWKS document read from `source`; a document
/// with none is an error.
fn signing_keys(text: &str, source: &JwksSource) -> anyhow::Result<Vec<Key>> {
    let keys = parse_jwks(text).with_context(|| format!("in the JWKS {source}"))?;
    anyhow::ensure!(!keys.is_empty(), "the JWKS {source} holds no signing key");
    Ok(keys)
}

fn read_file(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the JWKS {}", path.display()))?;
    anyhow::ensure!(text.len() <= MAX_JWKS_BYTES, "the JWKS {} is over {MAX_JWKS_BYTES} bytes", path.display());
    Ok(text)
}

async fn fetch(client: &reqwest::Client, url: &reqwest::Url) -> anyhow::Result<String> {
    let mut response = client
        .get(url.clone())
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .with_context(|| format!("fetching the JWKS {url}"))?;
    anyhow::ensure!(response.status().is_success(), "fetching the JWKS {url}: HTTP {}", response.status());
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.with_context(|| format!("reading the JWKS {url}"))? {
        body.extend_from_slice(&chunk);
        anyhow::ensure!(body.len() <= MAX_JWKS_BYTES, "the JWKS {url} is over {MAX_JWKS_BYTES} bytes");
    }
    String::from_utf8(body).with_context(|| format!("the JWKS {url} is not UTF-8"))
}

/// The signing keys of a JWKS document. Keys for encryption, symmetric
/// keys and keys of a kind this service cannot check are passed over (a
/// provider's set often holds some); a document that is not a JWKS is an
/// error.
fn parse_jwks(text: &str) -> anyhow::Result<Vec<Key>> {
    let doc: Value = serde_json::from_str(text).context("not JSON")?;
    let Some(Value::Array(entries)) = doc.get("keys") else {
        anyhow::bail!("no \"keys\" list");
    };
    let mut keys = Vec::new();
    for (n, entry) in entries.iter().enumerate() {
        let jwk: Jwk = match serde_json::from_value(entry.clone()) {
            Ok(jwk) => jwk,
            Err(e) => {
                tracing::debug!(key = n, error = %e, "JWKS entry passed over: not a key this service reads");
                continue;
            }
        };
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            continue;
        }
        let algorithms = algorithms(&jwk);
        if algorithms.is_empty() {
            continue;
        }
        let key = DecodingKey::from_jwk(&jwk).with_context(|| format!("key {n} of the JWKS"))?;
        keys.push(Key { kid: jwk.common.key_id.clone(), algorithms, key });
    }
    Ok(keys)
}

/// The signature algorithms a key may be used with: the one its `alg`
/// names, or every one its kind allows; none for a symmetric key, an
/// encryption algorithm, or a curve the service cannot check.
fn algorithms(jwk: &Jwk) -> Vec<Algorithm> {
    use Algorithm::*;
    let of_kind: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![RS256, RS384, RS512, PS256, PS384, PS512],
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![ES256],
            EllipticCurve::P384 => vec![ES384],
            _ => vec![],
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => vec![EdDSA],
        AlgorithmParameters::OctetKeyPair(_) | AlgorithmParameters::OctetKey(_) => vec![],
    };
    match jwk.common.key_algorithm {
        None => of_kind,
        // The library names both alike (RS256, ES256, ...); an encryption
        // algorithm (RSA-OAEP, ...) names no signature algorithm.
        Some(named) => {
            let named = named.to_string().parse::<Algorithm>().ok();
            of_kind.into_iter().filter(|a| Some(*a) == named).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use themodel_values::Department;

    use super::*;

    #[test]
    fn roles_come_from_a_claim_a_pointer_or_a_prefix() {
        let claims = json!({
            "roles": ["revops", "offline_access", "revops"],
            "scope": "read-only openid",
            "https://example.com/roles": ["admin"],
            "realm_access": {"roles": ["themodel-marketing", "marketing", "themodel-nobody"]},
        });
        assert_eq!(roles(&claims, "roles", ""), vec![Role::Revops], "unknown values pass, repeats count once");
        assert_eq!(roles(&claims, "scope", ""), vec![Role::ReadOnly], "a string holds space-separated names");
        assert_eq!(roles(&claims, "https://example.com/roles", ""), vec![Role::Admin]);
        assert_eq!(
            roles(&claims, "/realm_access/roles", "themodel-"),
            vec![Role::Department(Department::Marketing)],
            "only prefixed values count"
        );
        assert!(roles(&claims, "groups", "").is_empty());
        assert!(roles(&json!({"roles": {"revops": true}}), "roles", "").is_empty());
    }

    #[test]
    fn jwks_locations_are_checked() {
        assert!(matches!(JwksSource::parse("/etc/themodel/jwks.json"), Ok(JwksSource::File(_))));
        assert!(matches!(JwksSource::parse("https://idp.example.com/jwks"), Ok(JwksSource::Url(_))));
        assert!(matches!(JwksSource::parse("http://127.0.0.1:8080/jwks"), Ok(JwksSource::Url(_))));
        assert!(matches!(JwksSource::parse("http://[::1]:8080/jwks"), Ok(JwksSource::Url(_))));
        let clear = JwksSource::parse("http://idp.example.com/jwks").unwrap_err();
        assert!(format!("{clear:#}").contains("use https://"), "{clear:#}");
        assert!(JwksSource::parse("").is_err());
    }

    #[test]
    fn only_signing_keys_of_known_kinds_are_taken() {
        let p256 = json!({"kty": "EC", "crv": "P-256", "kid": "ec",
            "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4", "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"});
        let rsa = json!({"kty": "RSA", "kid": "rsa", "alg": "RS256", "use": "sig", "e": "AQAB",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"});
        let oct = json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"});
        let enc = json!({"kty": "RSA", "kid": "enc", "use": "enc", "e": "AQAB", "n": rsa["n"]});
        let wrap = json!({"kty": "RSA", "kid": "wrap", "alg": "RSA-OAEP", "e": "AQAB", "n": rsa["n"]});
        let odd = json!({"kty": "XYZ", "kid": "future"});
        let doc = json!({"keys": [p256, rsa, oct, enc, wrap, odd]}).to_string();
        let keys = parse_jwks(&doc).expect("a JWKS");
        let found: Vec<(Option<&str>, &[Algorithm])> =
            keys.iter().map(|k| (k.kid.as_deref(), k.algorithms.as_slice())).collect();
        assert_eq!(found, vec![(Some("ec"), &[Algorithm::ES256][..]), (Some("rsa"), &[Algorithm::RS256][..])]);
        assert!(parse_jwks("{\"keys\": 3}").is_err());
        assert!(parse_jwks("not json").is_err());
    }

    #[test]
    fn a_jwks_file_is_read_at_start_and_must_hold_a_signing_key() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("jwks.json");
        let config = || JwtConfig::new("https://idp", "themodel", JwksSource::File(path.clone()));
        let p256 = json!({"kty": "EC", "crv": "P-256", "kid": "ec",
            "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4", "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"});
        std::fs::write(&path, json!({"keys": [p256]}).to_string()).expect("write");
        let verifier = JwtVerifier::new(config()).expect("a JWKS with a key");
        assert_eq!(verifier.current().len(), 1);
        // A token without a key id is checked against the one key, which
        // takes no shared-secret algorithm.
        let hs256 = verifier.verify("eyJhbGciOiJIUzI1NiJ9.e30.c2ln");
        assert!(matches!(&hs256, Err(Refused::Invalid(m)) if m.contains("HS256")), "{hs256:?}");
        std::fs::write(&path, json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}).to_string()).expect("write");
        let err = JwtVerifier::new(config()).unwrap_err();
        assert!(format!("{err:#}").contains("holds no signing key"), "{err:#}");
        let err =
            JwtVerifier::new(JwtConfig::new("https://idp", "themodel", JwksSource::File(dir.path().join("none"))));
        assert!(format!("{:#}", err.unwrap_err()).contains("reading the JWKS"));
    }

    #[test]
    fn jwts_are_told_from_keyring_tokens() {
        assert!(looks_like_jwt("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"));
        assert!(!looks_like_jwt("tm_AbCdEf0123456789-_"));
        assert!(!looks_like_jwt("a.b"));
    }
}
