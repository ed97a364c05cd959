//! Who may call what: bearer tokens, the roles they carry, and the one table
//! of which role may call which RPC (`docs/security.md` prints it).
//!
//! A token is 32 random bytes (base64url, prefixed `tm_`). A service keeps
//! only the SHA-256 of each token, in a *keyring* file, one caller per line:
//!
//! ```text
//! # identity   role               sha256 of the token (hex)
//! admin        admin              6b1c…
//! rita         read-only          0f3a…
//! ```
//!
//! A plain hash is enough because tokens are random, not chosen by people:
//! there is no dictionary to try, so a slow password hash would only slow
//! every call down. The hash is looked up, never compared byte by byte, so
//! timing says nothing about a stored token.
//!
//! [`AuthLayer`] sits in front of every service. Health and reflection are
//! open (probes and `grpcurl list` need no secret); every other call needs a
//! known token (else UNAUTHENTICATED) whose role the table allows (else
//! PERMISSION_DENIED). A bearer token shaped as a JWT is checked against
//! the company's identity provider instead, when one is configured
//! ([`crate::jwt`]). The caller's [`Principal`] travels in the request's
//! extensions, for handlers that narrow further (a hand-over's `sender`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use anyhow::Context as _;
use base64::Engine;
use http::{Request, Response};
use sha2::{Digest, Sha256};
use themodel_values::Department;
use tonic::Status;
use tonic::metadata::{Ascii, MetadataValue};
use tower::{Layer, Service};

use crate::jwt::{JwtVerifier, Refused, Verified};

/// A service of the suite, as an identity that calls its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    Marketing,
    InsideSales,
    FieldSales,
    CustomerSuccess,
    Kpi,
}

impl Peer {
    pub const ALL: [Peer; 5] = [Peer::Marketing, Peer::InsideSales, Peer::FieldSales, Peer::CustomerSuccess, Peer::Kpi];

    /// The service's name, as peers and streams are named.
    pub fn as_str(self) -> &'static str {
        match self {
            Peer::Marketing => "marketing",
            Peer::InsideSales => "inside-sales",
            Peer::FieldSales => "field-sales",
            Peer::CustomerSuccess => "customer-success",
            Peer::Kpi => "kpi",
        }
    }

    /// The department the service is, if it is one (kpi is not).
    pub fn department(self) -> Option<Department> {
        match self {
            Peer::Marketing => Some(Department::Marketing),
            Peer::InsideSales => Some(Department::InsideSales),
            Peer::FieldSales => Some(Department::FieldSales),
            Peer::CustomerSuccess => Some(Department::CustomerSuccess),
            Peer::Kpi => None,
        }
    }
}

/// What a caller may do (see [`rule`] for the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A department's people: they change their own department's records.
    Department(Department),
    /// Revenue operations: reads everything, sets targets, publishes
    /// definitions.
    Revops,
    /// Everything but hand-over receivers (those take only the sender).
    Admin,
    /// Reads only.
    ReadOnly,
    /// One of the suite's services calling a peer.
    Service(Peer),
}

impl Role {
    /// Every role, as written in a keyring.
    pub fn all() -> Vec<Role> {
        let mut all: Vec<Role> = Department::ALL.into_iter().map(Role::Department).collect();
        all.extend([Role::Revops, Role::Admin, Role::ReadOnly]);
        all.extend(Peer::ALL.into_iter().map(Role::Service));
        all
    }

    pub fn name(self) -> String {
        match self {
            Role::Department(d) => d.code().replace('_', "-"),
            Role::Revops => "revops".to_owned(),
            Role::Admin => "admin".to_owned(),
            Role::ReadOnly => "read-only".to_owned(),
            Role::Service(p) => format!("service:{}", p.as_str()),
        }
    }

    /// A role by its keyring name; the error lists the accepted names.
    pub fn parse(name: &str) -> Result<Role, String> {
        Role::all().into_iter().find(|r| r.name() == name).ok_or_else(|| {
            let names: Vec<String> = Role::all().into_iter().map(Role::name).collect();
            format!("unknown role {name:?}; one of {}", names.join(", "))
        })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Who is calling: the identity a token was issued to, and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub identity: String,
    pub role: Role,
}

/// Who may call an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Every role.
    Read,
    /// The department's people and admin.
    Department(Department),
    /// revops and admin.
    Revops,
    /// revops and admin, or one of these services (a read a service makes
    /// of a peer for revops, such as kpi's dry run of a definition).
    RevopsOrService(&'static [Peer]),
    /// admin only.
    Admin,
    /// A hand-over receiver: only the sending services.
    HandOver(&'static [Peer]),
    /// The department's people and admin, or a sending service (the
    /// handler checks the request's `sender` against the caller).
    DepartmentOrHandOver(Department, &'static [Peer]),
}

impl Rule {
    pub fn allows(self, role: Role) -> bool {
        match (self, role) {
            (_, Role::Admin) => !matches!(self, Rule::HandOver(_)),
            (Rule::Read, _) => true,
            (Rule::Department(d) | Rule::DepartmentOrHandOver(d, _), Role::Department(r)) => d == r,
            (Rule::Revops | Rule::RevopsOrService(_), Role::Revops) => true,
            (Rule::RevopsOrService(services), Role::Service(p)) => services.contains(&p),
            (Rule::HandOver(senders) | Rule::DepartmentOrHandOver(_, senders), Role::Service(p)) => {
                senders.contains(&p)
            }
            _ => false,
        }
    }
}

use Department::{CustomerSuccess as CS, FieldSales as FS, InsideSales as IS, Marketing as MK};

/// The role table: every RPC of the suite and who may call it. Health and
/// reflection are not in it: they are open.
pub const TABLE: &[(&str, Rule)] = &[
    ("/themodel.marketing.v1.MarketingService/RecordVisit", Rule::Department(MK)),
    ("/themodel.marketing.v1.MarketingService/CaptureLead", Rule::Department(MK)),
    ("/themodel.marketing.v1.MarketingService/RecordTouch", Rule::Department(MK)),
    ("/themodel.marketing.v1.MarketingService/RecordTouches", Rule::Department(MK)),
    ("/themodel.marketing.v1.MarketingService/IngestBehaviour", Rule::Department(MK)),
    ("/themodel.marketing.v1.MarketingService/HandOverLead", Rule::Department(MK)),
    ("/themodel.marketing.v1.MarketingService/GetLead", Rule::Read),
    ("/themodel.marketing.v1.MarketingService/ListLeads", Rule::Read),
    ("/themodel.marketing.v1.MarketingService/RecycleLead", Rule::HandOver(&[Peer::InsideSales, Peer::FieldSales])),
    ("/themodel.marketing.v1.MarketingService/ExcludeLead", Rule::DepartmentOrHandOver(MK, &[Peer::InsideSales])),
    // Erasing a person is a privacy officer's act, not a department's.
    ("/themodel.marketing.v1.MarketingService/ErasePerson", Rule::Admin),
    ("/themodel.insidesales.v1.InsideSalesService/AcceptLead", Rule::HandOver(&[Peer::Marketing])),
    ("/themodel.insidesales.v1.InsideSalesService/ListQueue", Rule::Read),
    ("/themodel.insidesales.v1.InsideSalesService/GetQueueItem", Rule::Read),
    ("/themodel.insidesales.v1.InsideSalesService/LogActivity", Rule::Department(IS)),
    ("/themodel.insidesales.v1.InsideSalesService/RecordBant", Rule::Department(IS)),
    ("/themodel.insidesales.v1.InsideSalesService/ConvertToOpportunity", Rule::Department(IS)),
    ("/themodel.insidesales.v1.InsideSalesService/RecycleLead", Rule::Department(IS)),
    ("/themodel.insidesales.v1.InsideSalesService/DisqualifyLead", Rule::Department(IS)),
    ("/themodel.insidesales.v1.InsideSalesService/AssignLead", Rule::Department(IS)),
    ("/themodel.insidesales.v1.InsideSalesService/ErasePerson", Rule::HandOver(&[Peer::Marketing])),
    ("/themodel.fieldsales.v1.FieldSalesService/AcceptOpportunity", Rule::HandOver(&[Peer::InsideSales])),
    ("/themodel.fieldsales.v1.FieldSalesService/GetOpportunity", Rule::Read),
    ("/themodel.fieldsales.v1.FieldSalesService/ListOpportunities", Rule::Read),
    ("/themodel.fieldsales.v1.FieldSalesService/AdvancePhase", Rule::Department(FS)),
    ("/themodel.fieldsales.v1.FieldSalesService/CloseWon", Rule::Department(FS)),
    ("/themodel.fieldsales.v1.FieldSalesService/CloseLost", Rule::Department(FS)),
    ("/themodel.fieldsales.v1.FieldSalesService/AssignOpportunity", Rule::Department(FS)),
    ("/themodel.fieldsales.v1.FieldSalesService/ErasePerson", Rule::HandOver(&[Peer::InsideSales])),
    ("/themodel.customersuccess.v1.CustomerSuccessService/AcceptWonDeal", Rule::HandOver(&[Peer::FieldSales])),
    ("/themodel.customersuccess.v1.CustomerSuccessService/GetAccount", Rule::Read),
    ("/themodel.customersuccess.v1.CustomerSuccessService/ListAccounts", Rule::Read),
    ("/themodel.customersuccess.v1.CustomerSuccessService/RecordRenewal", Rule::Department(CS)),
    ("/themodel.customersuccess.v1.CustomerSuccessService/RecordChurn", Rule::Department(CS)),
    ("/themodel.customersuccess.v1.CustomerSuccessService/AssignAccount", Rule::Department(CS)),
    ("/themodel.customersuccess.v1.CustomerSuccessService/ErasePerson", Rule::HandOver(&[Peer::FieldSales])),
    ("/themodel.kpi.v1.KpiService/GetFunnel", Rule::Read),
    ("/themodel.kpi.v1.KpiService/PlanFromRevenue", Rule::Read),
    ("/themodel.kpi.v1.KpiService/GetBottleneck", Rule::Read),
    ("/themodel.kpi.v1.KpiService/SetTargets", Rule::Revops),
    ("/themodel.kpi.v1.KpiService/ListTargets", Rule::Read),
    ("/themodel.kpi.v1.KpiService/GetAttainment", Rule::Read),
    ("/themodel.kpi.v1.KpiService/GetRetention", Rule::Read),
    ("/themodel.kpi.v1.KpiService/GetRecycling", Rule::Read),
    ("/themodel.kpi.v1.KpiService/GetVelocity", Rule::Read),
    ("/themodel.kpi.v1.KpiService/GetAttributeCalibration", Rule::Read),
    ("/themodel.kpi.v1.KpiService/GetJourney", Rule::Read),
    ("/themodel.kpi.v1.KpiService/GetQualityDefinition", Rule::Read),
    ("/themodel.kpi.v1.KpiService/ListQualityDefinitions", Rule::Read),
    ("/themodel.kpi.v1.KpiService/PublishQualityDefinition", Rule::Revops),
    ("/themodel.kpi.v1.KpiService/PreviewQualityDefinition", Rule::Revops),
    // Served by marketing, which holds the leads a draft is tried on.
    ("/themodel.kpi.v1.DefinitionPreviewService/PreviewDefinition", Rule::RevopsOrService(&[Peer::Kpi])),
    // Events carry ids and dimensions, never personal data.
    ("/themodel.common.v1.EventStreamService/ListEvents", Rule::Read),
    ("/themodel.common.v1.OutboxService/GetOutboxStats", Rule::Read),
    // Dead letters hold whole hand-over requests, personal data included.
    ("/themodel.common.v1.OutboxService/ListDeadLetters", Rule::Admin),
    ("/themodel.common.v1.OutboxService/RetryDeadLetter", Rule::Admin),
    ("/themodel.common.v1.OutboxService/DropDeadLetter", Rule::Admin),
    ("/themodel.common.v1.AuditService/ListAuditEntries", Rule::Revops),
];

/// Calls anyone may make: health checks and reflection.
pub fn is_open(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

/// Who may call `path`; a path outside the table (a method no service has)
/// needs only a valid token, and the router answers UNIMPLEMENTED.
pub fn rule(path: &str) -> Rule {
    TABLE.iter().find(|(p, _)| *p == path).map_or(Rule::Read, |(_, r)| *r)
}

/// SHA-256 of a token.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A new random token.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("tm_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The callers a service knows: each identity's role, and the hash of its
/// token (none for an identity that only presents a client certificate).
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    /// identity → (caller, hash), in identity order: what the file holds.
    entries: BTreeMap<String, (Arc<Principal>, Option<[u8; 32]>)>,
    by_hash: HashMap<[u8; 32], Arc<Principal>>,
}

/// What a keyring line holds in place of a hash for an identity without a
/// token (one that authenticates by client certificate only).
const NO_TOKEN: &str = "-";

impl Keyring {
    /// Reads a keyring's text; an error names the line.
    pub fn parse(text: &str) -> anyhow::Result<Keyring> {
        let mut ring = Keyring::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [identity, role, digest] = fields[..] else {
                anyhow::bail!(
                    "line {}: want `identity role sha256-hex` (or `-`), found {} fields",
                    n + 1,
                    fields.len()
                );
            };
            check_identity(identity).with_context(|| format!("line {}", n + 1))?;
            let role = Role::parse(role).map_err(|e| anyhow::anyhow!("line {}: {e}", n + 1))?;
            let digest = match digest {
                NO_TOKEN => None,
                hex => Some(from_hex(hex).ok_or_else(|| {
                    anyhow::anyhow!("line {}: the hash must be 64 hexadecimal digits, or `-` for no token", n + 1)
                })?),
            };
            anyhow::ensure!(!ring.entries.contains_key(identity), "line {}: identity {identity:?} twice", n + 1);
            ring.insert(identity, role, digest);
        }
        Ok(ring)
    }

    pub fn load(path: &Path) -> anyhow::Result<Keyring> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading the keyring {}", path.display()))?;
        Keyring::parse(&text).with_context(|| format!("in the keyring {}", path.display()))
    }

    /// The keyring at `path`, or an empty one when there is no file yet.
    pub fn load_or_empty(path: &Path) -> anyhow::Result<Keyring> {
        if path.exists() { Keyring::load(path) } else { Ok(Keyring::default()) }
    }

    /// Adds or replaces `identity`, with the hash of its token if it has one.
    pub fn insert(&mut self, identity: &str, role: Role, digest: Option<[u8; 32]>) {
        let principal = Arc::new(Principal { identity: identity.to_owned(), role });
        if let Some(digest) = digest {
            self.by_hash.insert(digest, principal.clone());
        }
        if let Some((_, Some(old))) = self.entries.insert(identity.to_owned(), (principal, digest))
            && Some(old) != digest
        {
            self.by_hash.remove(&old);
        }
    }

    /// The caller a token belongs to.
    pub fn verify(&self, token: &str) -> Option<Arc<Principal>> {
        self.by_hash.get(&hash(token)).cloned()
    }

    /// The caller a verified client certificate names (see [`crate::tls`]).
    pub fn identity(&self, identity: &str) -> Option<Arc<Principal>> {
        self.entries.get(identity).map(|(principal, _)| principal.clone())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The keyring as its file holds it.
    pub fn to_text(&self) -> String {
        let mut text = String::from("# identity role sha256-of-token (see docs/security.md)\n");
        for (identity, (principal, digest)) in &self.entries {
            let digest = digest.as_ref().map_or_else(|| NO_TOKEN.to_owned(), |d| to_hex(d));
            text.push_str(&format!("{identity} {} {digest}\n", principal.role));
        }
        text
    }

    /// Writes the keyring to `path` (through a temporary file, so a reader
    /// never sees half of it).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = path.with_extension("tmp");
        write_private(&tmp, &self.to_text())?;
        std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
    }
}

/// The keyring a service checks callers against, replaced whenever its
/// file changes (see [`LiveKeyring::follow`]): a caller added or a token
/// revoked takes effect without a restart, as when Kubernetes updates a
/// mounted secret.
#[derive(Debug, Clone)]
pub struct LiveKeyring(Arc<RwLock<Arc<Keyring>>>);

impl LiveKeyring {
    pub fn new(keyring: Keyring) -> Self {
        LiveKeyring(Arc::new(RwLock::new(Arc::new(keyring))))
    }

    /// The keyring as it stands.
    pub fn current(&self) -> Arc<Keyring> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn replace(&self, keyring: Keyring) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keyring);
    }

    /// Re-reads `path` every `every` until `stop`, taking its new text when
    /// it parses. A file that does not parse, is empty of callers or cannot
    /// be read leaves the keyring as it was, and says why in the log.
    pub async fn follow(self, path: PathBuf, every: std::time::Duration, stop: tokio_util::sync::CancellationToken) {
        // The file's text as last seen, so each version is parsed and
        // reported once; the first look compares it with what is loaded,
        // which catches a change made after the service read it.
        let mut seen: Option<String> = None;
        loop {
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => Some(text),
                Err(e) => {
                    if seen.take().is_some() {
                        tracing::warn!(file = %path.display(), error = %e, "cannot read the keyring; keeping the callers loaded");
                    }
                    None
                }
            };
            if let Some(text) = text
                && seen.as_deref() != Some(text.as_str())
            {
                match Keyring::parse(&text) {
                    Ok(keyring) if keyring.to_text() == self.current().to_text() => {}
                    Ok(keyring) if !keyring.is_empty() => {
                        tracing::info!(file = %path.display(), callers = keyring.entries.len(), "keyring reloaded");
                        self.replace(keyring);
                    }
                    Ok(_) => {
                        tracing::warn!(file = %path.display(), "the keyring names no caller; keeping the callers loaded")
                    }
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = format!("{e:#}"), "the keyring does not parse; keeping the callers loaded")
                    }
                }
                seen = Some(text);
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}

/// An identity is a name a token file can carry: letters, digits, '-', '_'
/// or '.' (not starting with '.').
pub fn check_identity(identity: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !identity.is_empty()
            && !identity.starts_with('.')
            && identity.len() <= 100
            && identity.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
        "identity {identity:?}: use up to 100 letters, digits, '-', '_' or '.' (not starting with '.')"
    );
    Ok(())
}

/// Issues a new token to `identity` in the keyring at `path` (created if
/// missing): its hash replaces any earlier one. Returns the token, which
/// is nowhere else.
pub fn issue(path: &Path, identity: &str, role: Role) -> anyhow::Result<String> {
    check_identity(identity)?;
    let mut keyring = Keyring::load_or_empty(path)?;
    let token = new_token();
    keyring.insert(identity, role, Some(hash(&token)));
    keyring.save(path)?;
    Ok(token)
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// The tokens `themodel up` keeps in its data directory: `<dir>/keyring`,
/// and `<dir>/<identity>.token` for each identity it issued.
#[derive(Debug, Clone)]
pub struct LocalTokens {
    pub dir: PathBuf,
    pub keyring: Keyring,
    tokens: BTreeMap<String, (String, Credential)>,
}

impl LocalTokens {
    /// The keyring file in `dir`.
    pub fn keyring_path(dir: &Path) -> PathBuf {
        dir.join("keyring")
    }

    /// Makes sure each of `identities` has a token in `dir` (reusing one a
    /// previous run wrote) and the keyring knows it with its role; other
    /// identities the keyring holds are kept.
    pub fn ensure(dir: &Path, identities: &[(String, Role)]) -> anyhow::Result<LocalTokens> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = Self::keyring_path(dir);
        let mut keyring = Keyring::load_or_empty(&path)?;
        let mut tokens = BTreeMap::new();
        for (identity, role) in identities {
            check_identity(identity)?;
            let file = dir.join(format!("{identity}.token"));
            let token = match std::fs::read_to_string(&file) {
                Ok(t) if !t.trim().is_empty() => t.trim().to_owned(),
                _ => {
                    let t = new_token();
                    write_private(&file, &format!("{t}\n"))?;
                    t
                }
            };
            let credential = Credential::bearer(&token).with_context(|| format!("in {}", file.display()))?;
            keyring.insert(identity, *role, Some(hash(&token)));
            tokens.insert(identity.clone(), (token, credential));
        }
        keyring.save(&path)?;
        Ok(LocalTokens { dir: dir.to_owned(), keyring, tokens })
    }

    /// The token issued to `identity` by [`LocalTokens::ensure`].
    pub fn token(&self, identity: &str) -> Option<&str> {
        self.tokens.get(identity).map(|(token, _)| token.as_str())
    }

    /// What `identity` sends, with the token issued to it.
    pub fn credential(&self, identity: &str) -> anyhow::Result<Credential> {
        self.tokens.get(identity).map(|(_, c)| c.clone()).with_context(|| format!("no token issued to {identity:?}"))
    }
}

/// The identity `themodel up` issues its administrator token to.
pub const ADMIN: &str = "admin";

/// The callers a suite run by `themodel up` has tokens for: the
/// administrator and each service.
pub fn suite_identities() -> Vec<(String, Role)> {
    let mut all = vec![(ADMIN.to_owned(), Role::Admin)];
    all.extend(Peer::ALL.map(|p| (service_identity(p), Role::Service(p))));
    all
}

/// The identity of a service in the suite's local keyring.
pub fn service_identity(peer: Peer) -> String {
    format!("{}-service", peer.as_str())
}

/// What a client presents to a service: a bearer token, or nothing; and,
/// for `https://` addresses, its TLS (the CA it trusts, its certificate).
#[derive(Debug, Clone, Default)]
pub struct Credential {
    bearer: Option<MetadataValue<Ascii>>,
    tls: Option<tonic::transport::ClientTlsConfig>,
}

impl Credential {
    pub fn none() -> Self {
        Credential::default()
    }

    pub fn bearer(token: &str) -> anyhow::Result<Self> {
        let value = MetadataValue::try_from(format!("Bearer {}", token.trim()))
            .map_err(|_| anyhow::anyhow!("a token must be printable ASCII"))?;
        Ok(Credential { bearer: Some(value), tls: None })
    }

    /// Reads a token from a file (as `themodel up` writes them).
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let token = std::fs::read_to_string(path).with_context(|| format!("reading the token {}", path.display()))?;
        Self::bearer(&token)
    }

    /// The same credential, with `tls` for `https://` addresses (see
    /// [`crate::tls::client`]).
    pub fn with_tls(self, tls: tonic::transport::ClientTlsConfig) -> Self {
        Credential { tls: Some(tls), ..self }
    }

    /// The TLS to use for an `https://` address, if set.
    pub fn tls(&self) -> Option<&tonic::transport::ClientTlsConfig> {
        self.tls.as_ref()
    }

    /// Puts the credential into outgoing metadata.
    pub fn apply(&self, metadata: &mut tonic::metadata::MetadataMap) {
        if let Some(v) = &self.bearer {
            metadata.insert("authorization", v.clone());
        }
    }
}

/// The caller of a request, when the service checks credentials.
pub fn caller<T>(request: &tonic::Request<T>) -> Option<&Arc<Principal>> {
    request.extensions().get::<Arc<Principal>>()
}

/// Whether the caller may act for `sender` in a hand-over: a service only
/// for its own department; people (already let through by the table) only
/// for the department whose records they change.
pub fn may_send_as(caller: Option<&Principal>, sender: Department, own: Department) -> bool {
    match caller.map(|p| p.role) {
        None => true,
        Some(Role::Service(p)) => p.department() == Some(sender),
        Some(_) => sender == own,
    }
}

/// What a service checks callers against: its keyring (tokens and
/// certificate identities) and, if configured, the company's identity
/// provider (JWTs; see [`crate::jwt`]).
#[derive(Debug, Clone)]
pub struct Authenticator {
    pub keyring: LiveKeyring,
    pub jwt: Option<Arc<JwtVerifier>>,
}

/// Checks credentials in front of a service; `None` lets every call through
/// (a deployment that authenticates elsewhere, said at start).
#[derive(Debug, Clone)]
pub struct AuthLayer {
    auth: Option<Authenticator>,
}

impl AuthLayer {
    pub fn new(auth: Option<Authenticator>) -> Self {
        AuthLayer { auth }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth { inner, auth: self.auth.clone() }
    }
}

/// See [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    auth: Option<Authenticator>,
}

/// The token of an `authorization: Bearer <token>` header.
fn bearer<B>(req: &Request<B>) -> Option<&str> {
    let value = req.headers().get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// How a call presents its caller.
#[derive(Debug, Clone, Copy)]
pub enum Presented<'a> {
    /// An `authorization: Bearer` token (it wins over a certificate).
    Token(&'a str),
    /// The subject name of a client certificate the server's client CA
    /// signed (see [`crate::tls`]).
    Certificate(&'a str),
    Nothing,
}

fn invalid_credential() -> Status {
    Status::unauthenticated("invalid credential")
}

/// The refusal of a caller whose roles do not allow `path`.
fn denied(path: &str, identity: &str, roles: &[Role]) -> Status {
    let method = path.rsplit('/').next().unwrap_or(path);
    let roles: Vec<String> = roles.iter().map(|r| r.name()).collect();
    tracing::info!(%identity, roles = %roles.join(","), %path, "permission denied");
    match roles.len() {
        0 => Status::permission_denied(format!("a caller with no role of the suite may not call {method}")),
        1 => Status::permission_denied(format!("role {} may not call {method}", roles[0])),
        _ => Status::permission_denied(format!("roles {} may not call {method}", roles.join(", "))),
    }
}

/// Decides a call: the caller, or the refusal. Refusals say what to send,
/// never which part of a credential was wrong.
pub fn admit(keyring: &Keyring, path: &str, presented: Presented<'_>) -> Result<Arc<Principal>, Status> {
    let principal = match presented {
        Presented::Nothing => {
            return Err(Status::unauthenticated("missing credential: send `authorization: Bearer <token>`"));
        }
        Presented::Token(token) => keyring.verify(token),
        Presented::Certificate(name) => keyring.identity(name),
    };
    let Some(principal) = principal else {
        return Err(invalid_credential());
    };
    if !rule(path).allows(principal.role) {
        return Err(denied(path, &principal.identity, &[principal.role]));
    }
    Ok(principal)
}

/// Decides a call made with a JWT: the caller acts in the first of the
/// token's roles that may call `path`.
pub fn admit_verified(path: &str, verified: Result<Verified, Refused>) -> Result<Arc<Principal>, Status> {
    let verified = verified.map_err(|reason| {
        tracing::info!(%reason, %path, "JWT refused");
        invalid_credential()
    })?;
    let rule = rule(path);
    match verified.roles.iter().find(|r| rule.allows(**r)) {
        Some(role) => Ok(Arc::new(Principal { identity: verified.identity, role: *role })),
        None => Err(denied(path, &verified.identity, &verified.roles)),
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Auth<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: http_body::Body + Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<ResBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let Some(auth) = &self.auth else { return Box::pin(self.inner.call(req)) };
        if is_open(req.uri().path()) {
            return Box::pin(self.inner.call(req));
        }
        let certificate = crate::tls::client_identity(&req);
        let presented = match (bearer(&req), &certificate) {
            (Some(token), _) => Presented::Token(token),
            (None, Some(name)) => Presented::Certificate(name),
            (None, None) => Presented::Nothing,
        };
        if let (Presented::Token(token), Some(jwt)) = (presented, &auth.jwt)
            && crate::jwt::looks_like_jwt(token)
        {
            // Checked off the caller's path: the JWKS may be read first.
            let (jwt, token) = (jwt.clone(), token.to_owned());
            let ready = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, ready);
            return Box::pin(async move {
                let verified = jwt.verify_fresh(&token).await;
                match admit_verified(req.uri().path(), verified) {
                    Ok(principal) => {
                        req.extensions_mut().insert(principal);
                        inner.call(req).await
                    }
                    Err(status) => Ok(crate::shed::refuse(req.into_body(), status).await),
                }
            });
        }
        match admit(&auth.keyring.current(), req.uri().path(), presented) {
            Ok(principal) => {
                req.extensions_mut().insert(principal);
                Box::pin(self.inner.call(req))
            }
            Err(status) => Box::pin(async move { Ok(crate::shed::refuse(req.into_body(), status).await) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> (Keyring, String, String) {
        let (admin, reader) = (new_token(), new_token());
        let text =
            format!("# comment\n\nadmin admin {}\nrita read-only {}\n", to_hex(&hash(&admin)), to_hex(&hash(&reader)));
        (Keyring::parse(&text).expect("keyring"), admin, reader)
    }

    #[test]
    fn every_rpc_of_the_contract_is_in_the_table() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(themodel_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
        let mut paths = Vec::new();
        for file in set.file.iter().filter(|f| f.package().starts_with("themodel.")) {
            for service in &file.service {
                for method in &service.method {
                    paths.push(format!("/{}.{}/{}", file.package(), service.name(), method.name()));
                }
            }
        }
        for path in &paths {
            assert!(TABLE.iter().any(|(p, _)| p == path), "{path} has no rule");
        }
        assert_eq!(paths.len(), TABLE.len(), "the table names no RPC the contract lacks");
    }

    #[test]
    fn tokens_are_checked_and_roles_applied() {
        let (ring, admin, reader) = ring();
        let capture = "/themodel.marketing.v1.MarketingService/CaptureLead";
        let get = "/themodel.marketing.v1.MarketingService/GetLead";
        use Presented::{Certificate, Nothing, Token};
        assert_eq!(admit(&ring, get, Nothing).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(admit(&ring, get, Token("tm_nope")).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(admit(&ring, get, Token(&reader)).expect("reader reads").identity, "rita");
        let denied = admit(&ring, capture, Token(&reader)).unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert_eq!(denied.message(), "role read-only may not call CaptureLead");
        assert_eq!(admit(&ring, capture, Token(&admin)).expect("admin writes").role, Role::Admin);
        // A certificate names an identity; the keyring gives its role.
        assert_eq!(admit(&ring, capture, Certificate("admin")).expect("admin by certificate").identity, "admin");
        assert_eq!(admit(&ring, get, Certificate("mallory")).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(admit(&ring, capture, Certificate("rita")).unwrap_err().code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn certificate_only_identities_have_no_token() {
        let ring = Keyring::parse("billing-service marketing -\n").expect("keyring");
        assert_eq!(ring.identity("billing-service").expect("known").role, Role::Department(Department::Marketing));
        assert!(ring.verify("-").is_none(), "no token matches a certificate-only line");
        assert_eq!(ring.to_text().lines().last(), Some("billing-service marketing -"));
    }

    #[test]
    fn hand_overs_take_only_their_senders() {
        let accept = rule("/themodel.insidesales.v1.InsideSalesService/AcceptLead");
        assert!(accept.allows(Role::Service(Peer::Marketing)));
        assert!(!accept.allows(Role::Admin), "not even admin forges a hand-over");
        assert!(!accept.allows(Role::Department(Department::Marketing)));
        assert!(!accept.allows(Role::Service(Peer::FieldSales)));
        let exclude = rule("/themodel.marketing.v1.MarketingService/ExcludeLead");
        assert!(exclude.allows(Role::Department(Department::Marketing)));
        assert!(exclude.allows(Role::Service(Peer::InsideSales)));
        assert!(!exclude.allows(Role::Department(Department::InsideSales)));
        let me = |role| Principal { identity: "x".into(), role };
        let (mk, is) = (Department::Marketing, Department::InsideSales);
        assert!(may_send_as(Some(&me(Role::Service(Peer::InsideSales))), is, mk));
        assert!(!may_send_as(Some(&me(Role::Service(Peer::InsideSales))), mk, mk));
        assert!(!may_send_as(Some(&me(Role::Department(mk))), is, mk), "marketing cannot speak for inside sales");
        assert!(may_send_as(Some(&me(Role::Admin)), mk, mk));
    }

    #[test]
    fn services_and_readers_change_no_department_records() {
        for (path, rule) in TABLE {
            if matches!(rule, Rule::Department(_) | Rule::Revops | Rule::Admin) {
                assert!(!rule.allows(Role::ReadOnly), "{path}");
                assert!(!rule.allows(Role::Service(Peer::Kpi)), "{path}");
            }
        }
    }

    #[test]
    fn keyring_lines_are_checked() {
        let err = |t: &str| format!("{:#}", Keyring::parse(t).unwrap_err());
        assert!(err("admin boss 00").contains("unknown role \"boss\"; one of marketing, inside-sales"));
        assert!(err("admin admin 00").contains("64 hexadecimal"));
        assert!(err("admin admin").contains("found 2 fields"));
        let h = to_hex(&hash("a"));
        assert!(err(&format!("a admin {h}\na revops {h}")).contains("twice"));
        assert_eq!(Role::parse("service:kpi"), Ok(Role::Service(Peer::Kpi)));
    }

    #[test]
    fn local_tokens_are_kept_across_runs() {
        let dir = tempfile::tempdir().expect("dir");
        let who = vec![("admin".to_owned(), Role::Admin)];
        let first = LocalTokens::ensure(dir.path(), &who).expect("first");
        let token = first.token("admin").expect("issued").to_owned();
        // Another caller added by hand survives the next start.
        let mut ring = Keyring::load(&LocalTokens::keyring_path(dir.path())).expect("load");
        ring.insert("rita", Role::ReadOnly, Some(hash("tm_rita")));
        ring.save(&LocalTokens::keyring_path(dir.path())).expect("save");
        let again = LocalTokens::ensure(dir.path(), &who).expect("again");
        assert_eq!(again.token("admin"), Some(token.as_str()));
        assert_eq!(again.keyring.verify("tm_rita").map(|p| p.role), Some(Role::ReadOnly));
        assert!(again.keyring.verify(&token).is_some());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("admin.token")).expect("file").permissions().mode();
            assert_eq!(mode & 0o077, 0, "only the owner reads a token");
        }
    }
}
