//! `themodel`: `themodel up` runs the whole suite in one process (the
//! embedded default: SQLite files under a data directory, fixed local ports);
//! `themodel serve <service>` runs one service (what a Kubernetes pod runs).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use themodel::{ADMIN, ServiceName, Suite, SuiteOptions};
use themodel_proto::kpi::v1 as pb;
use themodel_proto::kpi::v1::kpi_service_client::KpiServiceClient;
use themodel_runtime::auth::{self, Credential, Keyring, LiveKeyring, Role};
use themodel_runtime::jwt::{JwksSource, JwtConfig, JwtVerifier};
use themodel_runtime::owners::Roster;
use themodel_runtime::server::shutdown_signal;
use themodel_runtime::{Clock, Peers, ServiceConfig, telemetry, tls};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// mimalloc rather than the system allocator: profiles of the read and
/// write paths spent about a quarter of their CPU in glibc's malloc and
/// free (many short-lived request and row buffers across threads);
/// mimalloc, the allocator most Rust servers of this kind pick, cut that
/// and returns memory to the system after a burst.
///
/// Built as its v2 line and without transparent huge pages (the workspace
/// sets the crate's `v2` and `no_thp` features). With the v3 line the
/// crate now defaults to, and huge pages, the bench's suite process held
/// 106-126 MiB after its warm-up and peaked at 136-161 MiB in the overload
/// burst: 70-80 MiB of its heap sat in 2 MiB huge pages, which a few live
/// objects keep whole. Without them, 52-64 MiB warm and 78-89 MiB at the
/// peak; v2 then gave back 10 MiB more after the burst than v3 (which
/// waits a second before returning freed pages), at the same throughput.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often `serve` looks for a changed keyring file.
const KEYRING_CHECK: Duration = Duration::from_secs(2);

#[derive(Parser)]
#[command(name = "themodel", version, about = "The Model revenue process as gRPC services")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format: text or json.
    #[arg(long, env = "THEMODEL_LOG_FORMAT", default_value = "text", global = true)]
    log_format: String,
}

#[derive(Subcommand)]
enum Command {
    /// Runs all five services in this process, each on its own port with its own SQLite database.
    Up(Up),
    /// Runs one service.
    Serve(Box<Serve>),
    /// Prints a period's waterfall, read from kpi.
    Report(Report),
    /// Issues a token: adds its hash to a keyring and prints the token once.
    Token(Token),
}

#[derive(Args)]
struct Token {
    /// The keyring to add to (`themodel up` keeps its own in <data-dir>/tokens/keyring).
    #[arg(long, env = "THEMODEL_KEYRING", default_value = "data/tokens/keyring")]
    keyring: PathBuf,
    /// Who the token is for (letters, digits, '-', '_', '.'); an identity
    /// already there gets a new token and the old one stops working.
    #[arg(long)]
    identity: String,
    /// marketing, inside-sales, field-sales, customer-success, revops, admin,
    /// read-only, or service:<service> (see docs/security.md).
    #[arg(long)]
    role: String,
}

/// How a client presents itself to a service.
#[derive(Args)]
struct ClientAuth {
    /// The bearer token to send.
    #[arg(long, env = "THEMODEL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the token to send, when --token is not given.
    #[arg(long, env = "THEMODEL_TOKEN_FILE", default_value = "data/tokens/admin.token")]
    token_file: PathBuf,
    /// For an https:// address: the CA the server's certificate chains to
    /// (default: the public web roots).
    #[arg(long, env = "THEMODEL_CA")]
    ca: Option<PathBuf>,
}

impl ClientAuth {
    fn credential(&self) -> anyhow::Result<Credential> {
        let credential = match &self.token {
            Some(token) => Credential::bearer(token)?,
            None => Credential::from_file(&self.token_file)?,
        };
        Ok(match &self.ca {
            Some(ca) => credential.with_tls(tls::client(Some(ca), None)?),
            None => credential,
        })
    }
}

/// TLS for a served service and for its calls to peers (see docs/security.md).
#[derive(Args)]
struct ServeTls {
    /// The server's certificate chain (PEM); with --tls-key, the service
    /// serves TLS only.
    #[arg(long, env = "THEMODEL_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The server's private key (PEM).
    #[arg(long, env = "THEMODEL_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The CA whose client certificates identify callers (mTLS): a
    /// certificate's subject common name is an identity of the keyring.
    #[arg(long, env = "THEMODEL_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// The CA peers' certificates chain to, for https:// peer addresses
    /// (default: the public web roots).
    #[arg(long, env = "THEMODEL_PEER_CA")]
    peer_ca: Option<PathBuf>,
    /// The certificate this service presents to its peers (mTLS).
    #[arg(long, env = "THEMODEL_PEER_CERT", requires = "peer_key")]
    peer_cert: Option<PathBuf>,
    /// The key of --peer-cert.
    #[arg(long, env = "THEMODEL_PEER_KEY", requires = "peer_cert")]
    peer_key: Option<PathBuf>,
}

impl ServeTls {
    fn apply(&self, c: &mut ServiceConfig) -> anyhow::Result<()> {
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            c.tls = Some(tls::server(cert, key, self.tls_client_ca.as_deref())?);
        }
        let identity = self.peer_cert.as_deref().zip(self.peer_key.as_deref());
        if self.peer_ca.is_some() || identity.is_some() {
            c.credential = c.credential.clone().with_tls(tls::client(self.peer_ca.as_deref(), identity)?);
        }
        Ok(())
    }
}

/// Callers the company's identity provider vouches for: JWTs it signed
/// (see docs/security.md, "Tokens from an identity provider").
#[derive(Args)]
struct JwtArgs {
    /// Accept JWTs this issuer signed (their `iss`); needs --jwt-audience
    /// and --jwt-jwks.
    #[arg(long, env = "THEMODEL_JWT_ISSUER", requires_all = ["jwt_audience", "jwt_jwks"])]
    jwt_issuer: Option<String>,
    /// The audience tokens must be for (their `aud`).
    #[arg(long, env = "THEMODEL_JWT_AUDIENCE", requires = "jwt_issuer")]
    jwt_audience: Option<String>,
    /// The issuer's signing keys (JWKS): an https:// URL (http:// only on
    /// a loopback address), or a file.
    #[arg(long, env = "THEMODEL_JWT_JWKS", requires = "jwt_issuer")]
    jwt_jwks: Option<String>,
    /// A CA to trust for an https:// JWKS besides the public web roots.
    #[arg(long, env = "THEMODEL_JWT_JWKS_CA", requires = "jwt_issuer")]
    jwt_jwks_ca: Option<PathBuf>,
    /// Seconds between reads of the JWKS (it is also read when a token
    /// names a key it lacks, at most every 10 seconds).
    #[arg(long, env = "THEMODEL_JWT_JWKS_REFRESH_SECS", default_value_t = 300)]
    jwt_jwks_refresh_secs: u64,
    /// The claim holding the caller's roles: a claim name, or a JSON
    /// pointer such as /realm_access/roles.
    #[arg(long, env = "THEMODEL_JWT_ROLES_CLAIM", default_value = "roles")]
    jwt_roles_claim: String,
    /// Only role values with this prefix count, without it
    /// (themodel-revops is the role revops).
    #[arg(long, env = "THEMODEL_JWT_ROLE_PREFIX", default_value = "")]
    jwt_role_prefix: String,
    /// The claim naming the caller in the audit log.
    #[arg(long, env = "THEMODEL_JWT_IDENTITY_CLAIM", default_value = "sub")]
    jwt_identity_claim: String,
}

impl JwtArgs {
    fn config(&self) -> anyhow::Result<Option<JwtConfig>> {
        let (Some(issuer), Some(audience), Some(jwks)) = (&self.jwt_issuer, &self.jwt_audience, &self.jwt_jwks) else {
            return Ok(None);
        };
        let mut config = JwtConfig::new(issuer, audience, JwksSource::parse(jwks).context("--jwt-jwks")?);
        config.jwks_ca = self.jwt_jwks_ca.clone();
        config.refresh = Duration::from_secs(self.jwt_jwks_refresh_secs.max(1));
        config.roles_claim = self.jwt_roles_claim.clone();
        config.role_prefix = self.jwt_role_prefix.clone();
        config.identity_claim = self.jwt_identity_claim.clone();
        Ok(Some(config))
    }
}

#[derive(Args)]
struct Report {
    /// kpi's address.
    #[arg(long, env = "THEMODEL_KPI_ADDR", default_value = "http://127.0.0.1:50055")]
    kpi_addr: String,
    /// First day of the period (YYYY-MM-DD).
    #[arg(long)]
    start_date: String,
    /// Day after the period (YYYY-MM-DD); or give --period-unit instead.
    #[arg(long, default_value = "")]
    end_date: String,
    /// day, week, month, quarter or year: the period of that unit holding --start-date.
    #[arg(long, default_value = "")]
    period_unit: String,
    /// flow (what happened in the period) or cohort (what became of its leads).
    #[arg(long, default_value = "flow")]
    view: String,
    /// IANA time zone the days are read in (default: the deployment's).
    #[arg(long, default_value = "")]
    time_zone: String,
    #[command(flatten)]
    auth: ClientAuth,
}

#[derive(Args)]
struct Common {
    /// IANA time zone KPI periods are read in when a request names none.
    #[arg(long, env = "THEMODEL_TIME_ZONE", default_value = "UTC")]
    time_zone: String,
    /// The month (1-12) fiscal quarters and years start in, for KPI periods
    /// named by unit (a request may give its own).
    #[arg(long, env = "THEMODEL_FISCAL_YEAR_START_MONTH", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=12))]
    fiscal_year_start_month: u32,
    /// Milliseconds between NOT_SERVING and closing the listener on shutdown.
    #[arg(long, env = "THEMODEL_SHUTDOWN_GRACE_MS", default_value_t = 0)]
    shutdown_grace_ms: u64,
    /// Milliseconds background loops (outbox relay, KPI consumers) wait when idle.
    #[arg(long, env = "THEMODEL_POLL_INTERVAL_MS", default_value_t = 250)]
    poll_interval_ms: u64,
    /// Calls in flight per service beyond which a call is refused at once
    /// with RESOURCE_EXHAUSTED (health checks and reflection are never refused).
    #[arg(long, env = "THEMODEL_MAX_IN_FLIGHT", default_value_t = 256)]
    max_in_flight: usize,
    /// Writes waiting for a service's writer beyond which a write is refused
    /// at once with RESOURCE_EXHAUSTED.
    #[arg(long, env = "THEMODEL_WRITER_QUEUE", default_value_t = 2048)]
    writer_queue: usize,
    /// Refusals (a status retrying cannot fix) after which a hand-over is set
    /// aside as a dead letter (see themodel.common.v1.OutboxService).
    #[arg(long, env = "THEMODEL_DEAD_LETTER_AFTER", default_value_t = 5)]
    dead_letter_after: u32,
}

impl Common {
    fn apply(&self, c: &mut ServiceConfig) {
        c.time_zone = self.time_zone.clone();
        c.fiscal_year_start_month = self.fiscal_year_start_month;
        c.shutdown_grace = Duration::from_millis(self.shutdown_grace_ms);
        c.poll_interval = Duration::from_millis(self.poll_interval_ms.max(10));
        c.max_in_flight = self.max_in_flight.max(1);
        c.writer.queue = self.writer_queue.max(1);
        c.dead_letter_after = self.dead_letter_after.max(1);
    }
}

#[derive(Args)]
struct Up {
    /// Directory of the services' SQLite databases.
    #[arg(long, env = "THEMODEL_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Address the services listen on.
    #[arg(long, env = "THEMODEL_HOST", default_value = "127.0.0.1")]
    host: IpAddr,
    #[arg(long, env = "THEMODEL_MARKETING_PORT", default_value_t = 50051)]
    marketing_port: u16,
    #[arg(long, env = "THEMODEL_INSIDE_SALES_PORT", default_value_t = 50052)]
    inside_sales_port: u16,
    #[arg(long, env = "THEMODEL_FIELD_SALES_PORT", default_value_t = 50053)]
    field_sales_port: u16,
    #[arg(long, env = "THEMODEL_CUSTOMER_SUCCESS_PORT", default_value_t = 50054)]
    customer_success_port: u16,
    #[arg(long, env = "THEMODEL_KPI_PORT", default_value_t = 50055)]
    kpi_port: u16,
    /// Inside-sales reps new leads are given to in turn: "team/rep, team/rep, rep".
    #[arg(long, env = "THEMODEL_INSIDE_SALES_OWNERS", default_value = "")]
    inside_sales_owners: Roster,
    /// Account executives new opportunities are given to in turn: "team/ae, ae".
    #[arg(long, env = "THEMODEL_FIELD_SALES_OWNERS", default_value = "")]
    field_sales_owners: Roster,
    /// Customer success managers new accounts are given to in turn: "team/csm, csm".
    #[arg(long, env = "THEMODEL_CUSTOMER_SUCCESS_OWNERS", default_value = "")]
    customer_success_owners: Roster,
    /// Port of kpi's dashboard page (http://127.0.0.1:50056/ by default).
    #[arg(long, env = "THEMODEL_DASHBOARD_PORT", default_value_t = themodel::DASHBOARD_PORT)]
    dashboard_port: u16,
    /// Serve no dashboard page.
    #[arg(long)]
    no_dashboard: bool,
    #[command(flatten)]
    jwt: JwtArgs,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct Serve {
    /// marketing, inside-sales, field-sales, customer-success or kpi.
    service: ServiceName,
    /// Address to listen on.
    #[arg(long, env = "THEMODEL_LISTEN", default_value = "0.0.0.0:50051")]
    listen: SocketAddr,
    /// sqlite://path/to/file.db or postgres://user:password@host/database.
    #[arg(long, env = "THEMODEL_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    #[arg(long, env = "THEMODEL_MARKETING_ADDR")]
    marketing_addr: Option<String>,
    #[arg(long, env = "THEMODEL_INSIDE_SALES_ADDR")]
    inside_sales_addr: Option<String>,
    #[arg(long, env = "THEMODEL_FIELD_SALES_ADDR")]
    field_sales_addr: Option<String>,
    #[arg(long, env = "THEMODEL_CUSTOMER_SUCCESS_ADDR")]
    customer_success_addr: Option<String>,
    #[arg(long, env = "THEMODEL_KPI_ADDR")]
    kpi_addr: Option<String>,
    /// Seconds between re-reads of the shared quality definition from kpi.
    #[arg(long, env = "THEMODEL_DEFINITION_REFRESH_SECS", default_value_t = 10)]
    definition_refresh_secs: u64,
    /// The department's owners, whom new records are given to in turn
    /// (inside-sales reps, account executives, customer success managers):
    /// "team/owner, team/owner, owner". Empty: records
    /// stay unassigned until a request names an owner.
    #[arg(long, env = "THEMODEL_OWNERS", default_value = "")]
    owners: Roster,
    /// kpi only: also serve the dashboard page on this address.
    #[arg(long, env = "THEMODEL_DASHBOARD_LISTEN")]
    dashboard_listen: Option<SocketAddr>,
    /// kpi only: forget every count at start and read the department
    /// streams again from their start (definitions and targets are kept).
    #[arg(long)]
    rebuild: bool,
    /// Also serve grpc.health.v1.Health alone, in plaintext and open to
    /// all, on this address: for Kubernetes' gRPC probes, which speak
    /// neither TLS nor tokens, when the service serves TLS.
    #[arg(long, env = "THEMODEL_HEALTH_LISTEN")]
    health_listen: Option<SocketAddr>,
    /// The keyring of callers this service lets in (`identity role
    /// sha256-of-token` per line; see docs/security.md). Re-read when it
    /// changes: callers added or removed take effect within seconds.
    #[arg(long, env = "THEMODEL_KEYRING", required_unless_present_any = ["no_auth", "jwt_issuer"])]
    keyring: Option<PathBuf>,
    /// The file holding the token this service presents to its peers (its
    /// service:<name> identity).
    #[arg(long, env = "THEMODEL_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Let every call in without a credential: only behind something that
    /// authenticates callers itself.
    #[arg(long, env = "THEMODEL_NO_AUTH", conflicts_with_all = ["keyring", "jwt_issuer"])]
    no_auth: bool,
    #[command(flatten)]
    jwt: JwtArgs,
    #[command(flatten)]
    tls: ServeTls,
    #[command(flatten)]
    common: Common,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let name = match &cli.command {
        Command::Up(_) => "themodel".to_owned(),
        Command::Serve(s) => format!("themodel-{}", s.service),
        Command::Report(_) => "themodel-report".to_owned(),
        Command::Token(_) => "themodel-token".to_owned(),
    };
    let _telemetry = match telemetry::init(&name, cli.log_format == "json") {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("cannot set up telemetry: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Up(up) => run_up(up).await,
        Command::Serve(serve) => run_serve(*serve).await,
        Command::Report(report) => run_report(report).await,
        Command::Token(token) => run_token(token),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "exiting");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run_up(up: Up) -> anyhow::Result<()> {
    let mut options = SuiteOptions::new(&up.data_dir);
    options.host = up.host;
    options.ports = [
        (ServiceName::Marketing, up.marketing_port),
        (ServiceName::InsideSales, up.inside_sales_port),
        (ServiceName::FieldSales, up.field_sales_port),
        (ServiceName::CustomerSuccess, up.customer_success_port),
        (ServiceName::Kpi, up.kpi_port),
    ]
    .into_iter()
    .collect();
    options.time_zone = up.common.time_zone.clone();
    options.fiscal_year_start_month = up.common.fiscal_year_start_month;
    options.shutdown_grace = Duration::from_millis(up.common.shutdown_grace_ms);
    options.poll_interval = Duration::from_millis(up.common.poll_interval_ms.max(10));
    options.max_in_flight = up.common.max_in_flight.max(1);
    options.writer_queue = up.common.writer_queue.max(1);
    options.dead_letter_after = up.common.dead_letter_after.max(1);
    options.owners.insert(ServiceName::InsideSales, up.inside_sales_owners);
    options.owners.insert(ServiceName::FieldSales, up.field_sales_owners);
    options.owners.insert(ServiceName::CustomerSuccess, up.customer_success_owners);
    options.dashboard_port = (!up.no_dashboard).then_some(up.dashboard_port);
    options.jwt = up.jwt.config()?;
    let mut suite = Suite::start(options).await?;
    for name in ServiceName::ALL {
        tracing::info!(service = %name, addr = %suite.addr(name), "listening");
    }
    if let Some(url) = suite.dashboard_url() {
        tracing::info!(%url, "dashboard");
    }
    let admin_token = suite.tokens_dir().join(format!("{ADMIN}.token"));
    tracing::info!(file = %admin_token.display(), "admin token (send it as `authorization: Bearer <token>`)");
    tracing::info!(data_dir = %up.data_dir.display(), "themodel is up; ctrl-c to stop");
    tokio::select! {
        _ = shutdown_signal() => suite.shutdown().await,
        (name, result) = suite.any_exit() => {
            let failure = result.err().unwrap_or_else(|| anyhow::anyhow!("stopped unexpectedly"));
            let _ = suite.shutdown().await;
            Err(failure.context(format!("{name} stopped")))
        }
    }
}

async fn run_serve(serve: Serve) -> anyhow::Result<()> {
    let mut config = ServiceConfig::new(serve.database_url);
    config.peers = Peers {
        marketing: serve.marketing_addr,
        inside_sales: serve.inside_sales_addr,
        field_sales: serve.field_sales_addr,
        customer_success: serve.customer_success_addr,
        kpi: serve.kpi_addr,
    };
    serve.common.apply(&mut config);
    config.definition_refresh = Duration::from_secs(serve.definition_refresh_secs.max(1));
    config.owners = serve.owners;
    config.health_listen = serve.health_listen;
    anyhow::ensure!(!serve.rebuild || serve.service == ServiceName::Kpi, "--rebuild is for kpi only");
    config.rebuild = serve.rebuild;
    config.jwt = serve.jwt.config()?.map(JwtVerifier::new).transpose()?;
    match (&serve.keyring, serve.no_auth) {
        (Some(path), _) => {
            let keyring = Keyring::load(path)?;
            anyhow::ensure!(!keyring.is_empty(), "the keyring {} names no caller", path.display());
            config.keyring = Some(LiveKeyring::new(keyring));
        }
        (None, true) => tracing::warn!("--no-auth: every call is let in without a credential"),
        (None, false) if config.jwt.is_some() => {}
        (None, false) => anyhow::bail!("set --keyring or --jwt-issuer, or --no-auth to let every call in"),
    }
    if let Some(path) = &serve.token_file {
        config.credential = Credential::from_file(path)?;
    }
    serve.tls.apply(&mut config)?;
    let listener = TcpListener::bind(serve.listen).await.with_context(|| format!("binding {}", serve.listen))?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        signal.cancel();
    });
    if let (Some(keyring), Some(path)) = (&config.keyring, &serve.keyring) {
        tokio::spawn(keyring.clone().follow(path.clone(), KEYRING_CHECK, shutdown.clone()));
    }
    if let Some(jwt) = &config.jwt {
        tracing::info!(issuer = %jwt.config().issuer, audience = %jwt.config().audience, jwks = %jwt.config().jwks, "accepting JWTs");
        tokio::spawn(jwt.clone().follow(shutdown.clone()));
    }
    if let Some(addr) = serve.dashboard_listen {
        anyhow::ensure!(serve.service == ServiceName::Kpi, "--dashboard-listen is for kpi only");
        let page = TcpListener::bind(addr).await.with_context(|| format!("binding the dashboard to {addr}"))?;
        // Over TLS the page dials kpi by a name its certificate carries:
        // --kpi-addr when given, else localhost.
        let port = listener.local_addr()?.port();
        let own = match (&config.tls, &config.peers.kpi) {
            (None, _) => format!("http://127.0.0.1:{port}"),
            (Some(_), Some(addr)) => addr.clone(),
            (Some(_), None) => format!("https://localhost:{port}"),
        };
        let kpi = KpiServiceClient::new(telemetry::peer_channel(&own, &config.credential)?);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = themodel_kpi::dashboard::serve(page, kpi, stop).await {
                tracing::error!(error = format!("{e:#}"), "dashboard stopped");
            }
        });
    }
    serve.service.run(config, Clock::system(), listener, shutdown).await
}

async fn run_report(r: Report) -> anyhow::Result<()> {
    let view = themodel_kpi::dashboard::view(&r.view).map_err(|e| anyhow::anyhow!("--{e}"))?;
    let period_unit = match r.period_unit.as_str() {
        "" => pb::PeriodUnit::Unspecified,
        unit => pb::PeriodUnit::from_str_name(&format!("PERIOD_UNIT_{}", unit.to_ascii_uppercase()))
            .filter(|u| *u != pb::PeriodUnit::Unspecified)
            .ok_or_else(|| anyhow::anyhow!("--period-unit {unit:?}: one of day, week, month, quarter, year"))?,
    };
    let mut kpi = KpiServiceClient::new(telemetry::peer_channel(&r.kpi_addr, &r.auth.credential()?)?);
    let req = pb::GetFunnelRequest {
        start_date: r.start_date,
        end_date: r.end_date,
        view: view as i32,
        period_unit: period_unit as i32,
        time_zone: r.time_zone,
        ..Default::default()
    };
    let text = themodel::report::report(&mut kpi, req).await?;
    // The report is the command's output, not a log line.
    use std::io::Write;
    std::io::stdout().lock().write_all(text.as_bytes()).context("writing the report")
}

fn run_token(t: Token) -> anyhow::Result<()> {
    let role = Role::parse(&t.role).map_err(|e| anyhow::anyhow!("--role: {e}"))?;
    let token = auth::issue(&t.keyring, &t.identity, role)?;
    tracing::info!(identity = %t.identity, %role, keyring = %t.keyring.display(), "token issued; services following this keyring let it in within seconds");
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{token}").context("writing the token")
}
