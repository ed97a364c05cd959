//! What a service needs to start: where its database is, where its peers
//! are, and the limits it keeps under load.

use std::time::Duration;

use crate::work::WriterConfig;

/// Addresses (`http://host:port`) of the services a service talks to.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    pub marketing: Option<String>,
    pub inside_sales: Option<String>,
    pub field_sales: Option<String>,
    pub customer_success: Option<String>,
    pub kpi: Option<String>,
}

impl Peers {
    /// The address of the service named `name` ("inside-sales", ...).
    pub fn get(&self, name: &str) -> Option<&str> {
        match name {
            "marketing" => self.marketing.as_deref(),
            "inside-sales" => self.inside_sales.as_deref(),
            "field-sales" => self.field_sales.as_deref(),
            "customer-success" => self.customer_success.as_deref(),
            "kpi" => self.kpi.as_deref(),
            _ => None,
        }
    }
}

/// Configuration shared by every service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// `sqlite://path/to/file.db` or `postgres://user@host/db`.
    pub database_url: String,
    pub peers: Peers,
    /// Read connections on SQLite (see [`crate::db::DEFAULT_READERS`]).
    pub readers: u32,
    /// How often a service re-reads the current quality definition from kpi.
    pub definition_refresh: Duration,
    /// How often idle background loops (outbox relay, kpi consumers) look for work
    /// they were not woken for.
    pub poll_interval: Duration,
    /// IANA time zone KPI periods are read in when a request names none
    /// (kpi only).
    pub time_zone: String,
    /// At start, forget every count and read the department streams again
    /// from their start (kpi only).
    pub rebuild: bool,
    /// The month (1–12) fiscal quarters and years start in (kpi only).
    pub fiscal_year_start_month: u32,
    /// Time between reporting NOT_SERVING and refusing new connections on
    /// shutdown, so load balancers stop routing first.
    pub shutdown_grace: Duration,
    /// Calls in flight beyond which a call is refused with RESOURCE_EXHAUSTED
    /// (256 by default: see `docs/architecture.md`, "Overload and deadlines").
    pub max_in_flight: usize,
    /// The writer's queue and batch sizes.
    pub writer: WriterConfig,
    /// Refusals (a non-retryable status) after which a hand-over is set
    /// aside as a dead letter.
    pub dead_letter_after: u32,
    /// The department's owners, whom new records are assigned to in turn
    /// (inside sales, field sales, customer success; empty: records stay
    /// unassigned until a request names an owner).
    pub owners: crate::owners::Roster,
    /// The callers the service lets in; `None` lets every call in (only
    /// when the deployment asks for it: `--no-auth`).
    pub keyring: Option<crate::auth::LiveKeyring>,
    /// JWTs from the company's identity provider, accepted beside the
    /// keyring's callers (an empty keyring when `keyring` is `None`).
    pub jwt: Option<std::sync::Arc<crate::jwt::JwtVerifier>>,
    /// What the service presents to its peers (its token, and its TLS for
    /// `https://` peer addresses).
    pub credential: crate::auth::Credential,
    /// The server's TLS (see [`crate::tls::server`]); `None` serves
    /// plaintext.
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    /// Where to also serve the health service alone, in plaintext, for
    /// probes that speak neither TLS nor tokens (see [`crate::server::serve`]).
    pub health_listen: Option<std::net::SocketAddr>,
}

impl ServiceConfig {
    pub fn new(database_url: impl Into<String>) -> Self {
        ServiceConfig {
            database_url: database_url.into(),
            peers: Peers::default(),
            readers: crate::db::DEFAULT_READERS,
            definition_refresh: Duration::from_secs(10),
            poll_interval: Duration::from_millis(500),
            time_zone: "UTC".to_owned(),
            rebuild: false,
            fiscal_year_start_month: 1,
            shutdown_grace: Duration::ZERO,
            max_in_flight: 256,
            writer: WriterConfig::default(),
            dead_letter_after: 5,
            owners: crate::owners::Roster::default(),
            keyring: None,
            jwt: None,
            credential: crate::auth::Credential::none(),
            tls: None,
            health_listen: None,
        }
    }

    /// What the service checks callers against; `None` when it lets every
    /// call in.
    pub fn authenticator(&self) -> Option<crate::auth::Authenticator> {
        if self.keyring.is_none() && self.jwt.is_none() {
            return None;
        }
        let keyring = self.keyring.clone().unwrap_or_else(|| crate::auth::LiveKeyring::new(Default::default()));
        Some(crate::auth::Authenticator { keyring, jwt: self.jwt.clone() })
    }
}

/// A peer address, or an error naming the flag that sets it.
pub fn require_peer<'a>(addr: &'a Option<String>, flag: &str) -> anyhow::Result<&'a str> {
    addr.as_deref().ok_or_else(|| anyhow::anyhow!("missing peer address: set {flag}"))
}
