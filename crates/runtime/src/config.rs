//! What a service needs to start: where its database is, where its peers are.

use std::time::Duration;

/// Addresses (`http://host:port`) of the services a service talks to.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    pub marketing: Option<String>,
    pub inside_sales: Option<String>,
    pub field_sales: Option<String>,
    pub customer_success: Option<String>,
    pub kpi: Option<String>,
}

/// Configuration shared by every service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// `sqlite://path/to/file.db` or `postgres://user@host/db`.
    pub database_url: String,
    pub peers: Peers,
    /// How often a service re-reads the current quality definition from kpi.
    pub definition_refresh: Duration,
    /// How often idle background loops (outbox relay, kpi consumers) look for work
    /// they were not woken for.
    pub poll_interval: Duration,
    /// IANA time zone KPI periods are read in (kpi only).
    pub time_zone: String,
    /// Time between reporting NOT_SERVING and refusing new connections on
    /// shutdown, so load balancers stop routing first.
    pub shutdown_grace: Duration,
}

impl ServiceConfig {
    pub fn new(database_url: impl Into<String>) -> Self {
        ServiceConfig {
            database_url: database_url.into(),
            peers: Peers::default(),
            definition_refresh: Duration::from_secs(10),
            poll_interval: Duration::from_millis(500),
            time_zone: "UTC".to_owned(),
            shutdown_grace: Duration::ZERO,
        }
    }
}

/// A peer address, or an error naming the flag that sets it.
pub fn require_peer<'a>(addr: &'a Option<String>, flag: &str) -> anyhow::Result<&'a str> {
    addr.as_deref().ok_or_else(|| anyhow::anyhow!("missing peer address: set {flag}"))
}
