//! The suite as one program: every service by name, and [`Suite`], which runs
//! all five in one process on their own ports with their own databases.
//!
//! `themodel up` and the end-to-end tests start the suite through the same
//! [`Suite::start`]; only the ports (fixed vs. ephemeral) and the data
//! directory differ.

pub mod report;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use anyhow::Context;
use themodel_proto::common::v1::ListEventsRequest;
use themodel_proto::common::v1::event_stream_service_client::EventStreamServiceClient;
use themodel_proto::kpi::v1::kpi_service_client::KpiServiceClient;
use themodel_proto::kpi::v1::{Funnel, GetFunnelRequest, GetFunnelResponse};
pub use themodel_runtime::auth::ADMIN;
use themodel_runtime::auth::{self, Credential, LiveKeyring, LocalTokens, Peer, Role};
use themodel_runtime::jwt::{JwtConfig, JwtVerifier};
use themodel_runtime::owners::Roster;
use themodel_runtime::telemetry::{PeerChannel, peer_channel};
use themodel_runtime::{Clock, Peers, ServiceConfig, tls};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One of the five services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceName {
    Marketing,
    InsideSales,
    FieldSales,
    CustomerSuccess,
    Kpi,
}

impl ServiceName {
    pub const ALL: [ServiceName; 5] = [
        ServiceName::Marketing,
        ServiceName::InsideSales,
        ServiceName::FieldSales,
        ServiceName::CustomerSuccess,
        ServiceName::Kpi,
    ];

    /// The service's name (its peers' and its stream's name for it).
    pub fn as_str(self) -> &'static str {
        self.peer().as_str()
    }

    /// The port `themodel up` uses by default.
    pub fn default_port(self) -> u16 {
        match self {
            ServiceName::Marketing => 50051,
            ServiceName::InsideSales => 50052,
            ServiceName::FieldSales => 50053,
            ServiceName::CustomerSuccess => 50054,
            ServiceName::Kpi => 50055,
        }
    }

    /// The service as an identity calling its peers.
    pub fn peer(self) -> Peer {
        match self {
            ServiceName::Marketing => Peer::Marketing,
            ServiceName::InsideSales => Peer::InsideSales,
            ServiceName::FieldSales => Peer::FieldSales,
            ServiceName::CustomerSuccess => Peer::CustomerSuccess,
            ServiceName::Kpi => Peer::Kpi,
        }
    }

    /// Runs the service on `listener` until `shutdown`.
    pub async fn run(
        self,
        config: ServiceConfig,
        clock: Clock,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        match self {
            ServiceName::Marketing => themodel_marketing::run(config, clock, listener, shutdown).await,
            ServiceName::InsideSales => themodel_inside_sales::run(config, clock, listener, shutdown).await,
            ServiceName::FieldSales => themodel_field_sales::run(config, clock, listener, shutdown).await,
            ServiceName::CustomerSuccess => themodel_customer_success::run(config, clock, listener, shutdown).await,
            ServiceName::Kpi => themodel_kpi::run(config, clock, listener, shutdown).await,
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServiceName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ServiceName::ALL.into_iter().find(|n| n.as_str() == s).ok_or_else(|| {
            format!("unknown service {s:?}; one of marketing, inside-sales, field-sales, customer-success, kpi")
        })
    }
}

/// How to run the whole suite.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    /// Each service's SQLite database is `<data_dir>/<service>.db`.
    pub data_dir: PathBuf,
    /// Address to listen on.
    pub host: std::net::IpAddr,
    /// Port per service; 0 picks a free one.
    pub ports: BTreeMap<ServiceName, u16>,
    /// Database URL per service, overriding the SQLite file under `data_dir`.
    pub database_urls: BTreeMap<ServiceName, String>,
    pub time_zone: String,
    /// The month (1–12) fiscal quarters and years start in.
    pub fiscal_year_start_month: u32,
    pub poll_interval: Duration,
    pub definition_refresh: Duration,
    pub shutdown_grace: Duration,
    /// Calls in flight per service beyond which calls are refused.
    pub max_in_flight: usize,
    /// Writes waiting per service beyond which writes are refused.
    pub writer_queue: usize,
    /// Refusals after which a hand-over becomes a dead letter.
    pub dead_letter_after: u32,
    /// Each department's roster (see [`ServiceConfig::owners`]).
    pub owners: BTreeMap<ServiceName, Roster>,
    /// Port of kpi's dashboard page (0 picks a free one); `None`: no page.
    pub dashboard_port: Option<u16>,
    pub clock: Clock,
    /// Callers to issue tokens to besides `admin` and the five services
    /// (see [`Suite::token`]).
    pub identities: Vec<(String, Role)>,
    /// TLS for every service; `None` serves plaintext.
    pub tls: Option<SuiteTls>,
    /// Services that also serve their health alone, in plaintext, on a
    /// port of `host` (see [`ServiceConfig::health_listen`]).
    pub health_ports: BTreeMap<ServiceName, u16>,
    /// JWTs from an identity provider, accepted beside the local tokens.
    pub jwt: Option<JwtConfig>,
}

/// TLS for the whole suite: every service serves its own certificate,
/// and calls its peers presenting that certificate instead of a token
/// (mTLS: its subject common name is the service's identity, such as
/// `marketing-service`); servers and clients trust `ca`. Clients of the
/// suite reach it at `https://localhost:<port>`, so each certificate
/// names `localhost`.
#[derive(Debug, Clone)]
pub struct SuiteTls {
    /// The CA certificate (PEM file) that signed every certificate.
    pub ca: PathBuf,
    /// Each service's certificate chain and key (PEM files).
    pub services: BTreeMap<ServiceName, (PathBuf, PathBuf)>,
}

/// [`SuiteTls`] read from its files.
struct LoadedTls {
    servers: BTreeMap<ServiceName, (tonic::transport::ServerTlsConfig, Credential)>,
    /// What the suite's clients trust.
    clients: tonic::transport::ClientTlsConfig,
}

impl LoadedTls {
    fn load(t: &SuiteTls) -> anyhow::Result<LoadedTls> {
        let mut servers = BTreeMap::new();
        for name in ServiceName::ALL {
            let (cert, key) = t.services.get(&name).with_context(|| format!("no TLS certificate for {name}"))?;
            let server = tls::server(cert, key, Some(&t.ca))?;
            let peers = Credential::none().with_tls(tls::client(Some(&t.ca), Some((cert, key)))?);
            servers.insert(name, (server, peers));
        }
        Ok(LoadedTls { servers, clients: tls::client(Some(&t.ca), None)? })
    }
}

/// Port `themodel up` serves the dashboard page on by default.
pub const DASHBOARD_PORT: u16 = 50056;

impl SuiteOptions {
    /// The embedded default: fixed local ports, SQLite under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        SuiteOptions {
            data_dir: data_dir.into(),
            host: std::net::IpAddr::from([127, 0, 0, 1]),
            ports: ServiceName::ALL.into_iter().map(|s| (s, s.default_port())).collect(),
            database_urls: BTreeMap::new(),
            time_zone: "UTC".to_owned(),
            fiscal_year_start_month: 1,
            poll_interval: Duration::from_millis(250),
            definition_refresh: Duration::from_secs(10),
            shutdown_grace: Duration::ZERO,
            max_in_flight: 256,
            writer_queue: 2048,
            dead_letter_after: 5,
            owners: BTreeMap::new(),
            dashboard_port: Some(DASHBOARD_PORT),
            clock: Clock::system(),
            identities: Vec::new(),
            tls: None,
            health_ports: BTreeMap::new(),
            jwt: None,
        }
    }

    /// Like [`SuiteOptions::new`] but every service on a free port, for tests.
    pub fn ephemeral(data_dir: impl Into<PathBuf>) -> Self {
        let mut o = SuiteOptions::new(data_dir);
        o.ports = ServiceName::ALL.into_iter().map(|s| (s, 0)).collect();
        o.dashboard_port = Some(0);
        o.poll_interval = Duration::from_millis(50);
        o.definition_refresh = Duration::from_millis(200);
        o
    }
}

/// `http://host:port` for a listener's address, on loopback when it listens
/// on every interface.
fn local_url(addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() { std::net::IpAddr::from([127, 0, 0, 1]) } else { addr.ip() };
    format!("http://{}", SocketAddr::new(host, addr.port()))
}

struct Running {
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

/// The five services running in this process.
pub struct Suite {
    options: SuiteOptions,
    /// The tokens under `<data_dir>/tokens`, and the keyring every service
    /// checks callers against.
    tokens: LocalTokens,
    keyring: LiveKeyring,
    jwt: Option<Arc<JwtVerifier>>,
    /// Stops following the keyring file and the JWKS.
    keyring_follow: CancellationToken,
    tls: Option<LoadedTls>,
    addrs: BTreeMap<ServiceName, SocketAddr>,
    running: BTreeMap<ServiceName, Running>,
    /// kpi's dashboard page: where, and its task.
    dashboard: Option<(SocketAddr, Running)>,
    /// Whether kpi's next start rebuilds (see [`Suite::rebuild_kpi`]).
    rebuild_next: bool,
}

impl Suite {
    /// Issues the local tokens (see [`Suite::tokens_dir`]), binds every port
    /// (so each service knows its peers' addresses), then starts the
    /// services.
    pub async fn start(options: SuiteOptions) -> anyhow::Result<Suite> {
        let mut identities = auth::suite_identities();
        identities.extend(options.identities.iter().cloned());
        let tokens = LocalTokens::ensure(&options.data_dir.join("tokens"), &identities)?;
        // Callers added to the keyring file (`themodel token`) are let in
        // without a restart.
        let keyring = LiveKeyring::new(tokens.keyring.clone());
        let keyring_follow = CancellationToken::new();
        tokio::spawn(keyring.clone().follow(
            LocalTokens::keyring_path(&tokens.dir),
            options.poll_interval,
            keyring_follow.clone(),
        ));
        let jwt = options.jwt.clone().map(JwtVerifier::new).transpose()?;
        if let Some(jwt) = &jwt {
            tokio::spawn(jwt.clone().follow(keyring_follow.clone()));
        }
        let tls = options.tls.as_ref().map(LoadedTls::load).transpose()?;
        let mut listeners = BTreeMap::new();
        for name in ServiceName::ALL {
            let port = options.ports.get(&name).copied().unwrap_or(0);
            let addr = SocketAddr::new(options.host, port);
            let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {name} to {addr}"))?;
            listeners.insert(name, listener);
        }
        let addrs = listeners.iter().map(|(n, l)| Ok((*n, l.local_addr()?))).collect::<anyhow::Result<_>>()?;
        let mut suite = Suite {
            options,
            tokens,
            keyring,
            jwt,
            keyring_follow,
            tls,
            addrs,
            running: BTreeMap::new(),
            dashboard: None,
            rebuild_next: false,
        };
        for (name, listener) in listeners {
            suite.spawn(name, listener);
        }
        if let Some(port) = suite.options.dashboard_port {
            let kpi_identity = auth::service_identity(Peer::Kpi);
            let addr = SocketAddr::new(suite.options.host, port);
            let listener = TcpListener::bind(addr).await.with_context(|| format!("binding the dashboard to {addr}"))?;
            let addr = listener.local_addr()?;
            let kpi =
                KpiServiceClient::new(peer_channel(&suite.url(ServiceName::Kpi), &suite.credential(&kpi_identity)?)?);
            let stop = CancellationToken::new();
            let task = tokio::spawn(themodel_kpi::dashboard::serve(listener, kpi, stop.clone()));
            suite.dashboard = Some((addr, Running { stop, task }));
        }
        Ok(suite)
    }

    /// `http://127.0.0.1:port/` of kpi's dashboard page, if it is served.
    pub fn dashboard_url(&self) -> Option<String> {
        let (addr, _) = self.dashboard.as_ref()?;
        Some(format!("{}/", local_url(*addr)))
    }

    /// Where the tokens live: `keyring` (their hashes, which the services
    /// check) and `<identity>.token` for each issued one.
    pub fn tokens_dir(&self) -> &std::path::Path {
        &self.tokens.dir
    }

    /// The token issued to `identity` (`admin`, `marketing-service`, ...,
    /// or one of [`SuiteOptions::identities`]).
    pub fn token(&self, identity: &str) -> Option<&str> {
        self.tokens.token(identity)
    }

    /// A credential for `identity`'s token (trusting the suite's CA when it
    /// serves TLS).
    pub fn credential(&self, identity: &str) -> anyhow::Result<Credential> {
        let credential = self.tokens.credential(identity)?;
        Ok(match &self.tls {
            Some(tls) => credential.with_tls(tls.clients.clone()),
            None => credential,
        })
    }

    /// A channel to a service that presents `identity`'s token.
    pub fn channel_as(&self, name: ServiceName, identity: &str) -> anyhow::Result<PeerChannel> {
        peer_channel(&self.url(name), &self.credential(identity)?)
    }

    /// Where a service listens.
    pub fn addr(&self, name: ServiceName) -> SocketAddr {
        self.addrs[&name]
    }

    /// `http://127.0.0.1:port` of a service, for clients
    /// (`https://localhost:port` when the suite serves TLS).
    pub fn url(&self, name: ServiceName) -> String {
        match &self.tls {
            Some(_) => format!("https://localhost:{}", self.addr(name).port()),
            None => local_url(self.addr(name)),
        }
    }

    /// The head seq of a service's event stream, read over gRPC.
    pub async fn stream_head(&self, name: ServiceName) -> anyhow::Result<i64> {
        let mut c = EventStreamServiceClient::new(self.channel_as(name, ADMIN)?);
        Ok(c.list_events(ListEventsRequest { after_seq: 0, page_size: 1, wait: None }).await?.into_inner().head_seq)
    }

    /// The funnel for `req` once kpi has applied every event the four streams
    /// hold when the call begins. Polls GetFunnel (errors while a service
    /// restarts included) for at most `within`.
    pub async fn settled_funnel(&self, req: GetFunnelRequest, within: Duration) -> anyhow::Result<Funnel> {
        Ok(self.settled_funnel_response(req, within).await?.funnel.unwrap_or_default())
    }

    /// [`Suite::settled_funnel`], the whole response (with its splits).
    pub async fn settled_funnel_response(
        &self,
        req: GetFunnelRequest,
        within: Duration,
    ) -> anyhow::Result<GetFunnelResponse> {
        let mut heads = Vec::new();
        for name in ServiceName::ALL.into_iter().filter(|n| *n != ServiceName::Kpi) {
            heads.push((name.as_str(), self.stream_head(name).await?));
        }
        let mut kpi = KpiServiceClient::new(self.channel_as(ServiceName::Kpi, ADMIN)?);
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let last = match kpi.get_funnel(req.clone()).await {
                Ok(response) => {
                    let response = response.into_inner();
                    let f = response.funnel.clone().unwrap_or_default();
                    let applied = |name: &str| f.sources.iter().find(|s| s.service == name).map(|s| s.applied_seq);
                    if heads.iter().all(|(name, head)| applied(name) >= Some(*head)) {
                        return Ok(response);
                    }
                    format!("sources {:?}, stream heads {heads:?}", f.sources)
                }
                Err(status) => status.to_string(),
            };
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "kpi did not catch up within {within:?}: {last}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The configuration `name` runs with inside the suite.
    pub fn config(&self, name: ServiceName) -> ServiceConfig {
        let o = &self.options;
        let url = o
            .database_urls
            .get(&name)
            .cloned()
            .unwrap_or_else(|| format!("sqlite://{}", o.data_dir.join(format!("{}.db", name.as_str())).display()));
        let mut c = ServiceConfig::new(url);
        c.peers = Peers {
            marketing: Some(self.url(ServiceName::Marketing)),
            inside_sales: Some(self.url(ServiceName::InsideSales)),
            field_sales: Some(self.url(ServiceName::FieldSales)),
            customer_success: Some(self.url(ServiceName::CustomerSuccess)),
            kpi: Some(self.url(ServiceName::Kpi)),
        };
        c.time_zone = o.time_zone.clone();
        c.rebuild = self.rebuild_next && name == ServiceName::Kpi;
        c.fiscal_year_start_month = o.fiscal_year_start_month;
        c.poll_interval = o.poll_interval;
        c.definition_refresh = o.definition_refresh;
        c.shutdown_grace = o.shutdown_grace;
        c.max_in_flight = o.max_in_flight;
        c.writer.queue = o.writer_queue;
        c.dead_letter_after = o.dead_letter_after;
        c.owners = o.owners.get(&name).cloned().unwrap_or_default();
        c.keyring = Some(self.keyring.clone());
        c.jwt = self.jwt.clone();
        // Issued at start for every service (Suite::start).
        c.credential = self.tokens.credential(&auth::service_identity(name.peer())).unwrap_or_default();
        c.health_listen = o.health_ports.get(&name).map(|port| std::net::SocketAddr::new(o.host, *port));
        if let Some((server, peers)) = self.tls.as_ref().and_then(|t| t.servers.get(&name)) {
            c.tls = Some(server.clone());
            c.credential = peers.clone();
        }
        c
    }

    fn spawn(&mut self, name: ServiceName, listener: TcpListener) {
        let stop = CancellationToken::new();
        let config = self.config(name);
        let task = tokio::spawn(name.run(config, self.options.clock.clone(), listener, stop.clone()));
        self.running.insert(name, Running { stop, task });
    }

    /// Changes the deployment's time zone for services started from now on.
    pub fn set_time_zone(&mut self, time_zone: &str) {
        self.options.time_zone = time_zone.to_owned();
    }

    /// Restarts kpi with `--rebuild`: it forgets every count and reads the
    /// department streams again from their start.
    pub async fn rebuild_kpi(&mut self) -> anyhow::Result<()> {
        self.stop(ServiceName::Kpi).await?;
        self.rebuild_next = true;
        let restarted = self.restart(ServiceName::Kpi).await;
        self.rebuild_next = false;
        restarted
    }

    /// Stops one service gracefully and waits until it has.
    pub async fn stop(&mut self, name: ServiceName) -> anyhow::Result<()> {
        let Some(r) = self.running.remove(&name) else {
            return Ok(());
        };
        r.stop.cancel();
        r.task.await.context("service task panicked")?.with_context(|| format!("{name} failed"))
    }

    /// Starts a stopped service again on its port.
    pub async fn restart(&mut self, name: ServiceName) -> anyhow::Result<()> {
        self.stop(name).await?;
        let addr = self.addr(name);
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {name} to {addr}"))?;
        self.spawn(name, listener);
        Ok(())
    }

    /// Stops a service without letting it drain, as if the process died;
    /// returns once its task is gone (and its port free).
    pub async fn kill(&mut self, name: ServiceName) {
        if let Some(r) = self.running.remove(&name) {
            r.task.abort();
            // Cancelled: the error says so, and is the point.
            let _ = r.task.await;
        }
    }

    /// Resolves when a service stops on its own (a failure), with its result.
    pub async fn any_exit(&mut self) -> (ServiceName, anyhow::Result<()>) {
        let (name, result) = std::future::poll_fn(|cx| {
            for (name, r) in self.running.iter_mut() {
                if let Poll::Ready(joined) = Pin::new(&mut r.task).poll(cx) {
                    let result = joined.map_err(|e| anyhow::anyhow!("task ended: {e}")).and_then(|r| r);
                    return Poll::Ready((*name, result));
                }
            }
            Poll::Pending
        })
        .await;
        self.running.remove(&name);
        (name, result)
    }

    /// Stops every service gracefully; the first failure is returned. kpi,
    /// which reads every other service's stream, stops first, so it does not
    /// see its sources vanish.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some((_, page)) = self.dashboard.take() {
            page.stop.cancel();
            let _ = page.task.await;
        }
        let mut first_error = self.stop(ServiceName::Kpi).await.err();
        for r in self.running.values() {
            r.stop.cancel();
        }
        for (name, r) in std::mem::take(&mut self.running) {
            let result = r.task.await.context("service task panicked").and_then(|r| r);
            if let Err(e) = result {
                tracing::error!(service = %name, error = format!("{e:#}"), "service failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Suite {
    fn drop(&mut self) {
        self.keyring_follow.cancel();
    }
}
