//! Test harness: the real suite on ephemeral ports, with generated gRPC
//! clients. Tests talk to the services only through these clients.

#![allow(clippy::unwrap_used)]

pub mod certs;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost_types::Timestamp;
use themodel::{ADMIN, ServiceName, Suite, SuiteOptions};
use themodel_proto::common::v1 as common;
use themodel_proto::common::v1::outbox_service_client::OutboxServiceClient;
use themodel_proto::customersuccess::v1::customer_success_service_client::CustomerSuccessServiceClient;
use themodel_proto::fieldsales::v1::field_sales_service_client::FieldSalesServiceClient;
use themodel_proto::insidesales::v1::inside_sales_service_client::InsideSalesServiceClient;
use themodel_proto::kpi::v1 as kpi;
use themodel_proto::kpi::v1::kpi_service_client::KpiServiceClient;
use themodel_proto::marketing::v1::marketing_service_client::MarketingServiceClient;
use themodel_runtime::Clock;
use themodel_runtime::consistency::{self, Positions};
use themodel_runtime::telemetry::PeerChannel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub use themodel::ServiceName as Svc;

/// The running suite and a client per service.
///
/// The clients behave as a client that wants read-your-writes: every answer's
/// consistency token is kept, and every kpi call carries the furthest token
/// of each stream, so a KPI read counts everything the test did before it.
pub struct TestSuite {
    pub suite: Suite,
    pub marketing: MarketingServiceClient<Recorded>,
    pub inside_sales: InsideSalesServiceClient<Recorded>,
    pub field_sales: FieldSalesServiceClient<Recorded>,
    pub customer_success: CustomerSuccessServiceClient<Recorded>,
    pub kpi: KpiServiceClient<Recorded>,
    tokens: Tokens,
    _dir: tempfile::TempDir,
}

/// The furthest consistency token per stream the test's calls were
/// answered with.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Arc<Mutex<Positions>>);

impl Tokens {
    fn keep(&self, header: &str) {
        self.0.lock().unwrap().add(header);
    }

    /// `inside-sales:4,marketing:12,...`, empty before any answer.
    pub fn header(&self) -> String {
        self.0.lock().unwrap().to_string()
    }
}

/// A channel (as the suite's administrator) that keeps the consistency
/// token of every answer and, towards kpi, sends the tokens kept so far.
#[derive(Clone)]
pub struct Recorded {
    inner: PeerChannel,
    tokens: Tokens,
    send_tokens: bool,
}

impl tower::Service<http::Request<tonic::body::Body>> for Recorded {
    type Response = <PeerChannel as tower::Service<http::Request<tonic::body::Body>>>::Response;
    type Error = <PeerChannel as tower::Service<http::Request<tonic::body::Body>>>::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        let header = self.tokens.header();
        if self.send_tokens
            && !header.is_empty()
            && let Ok(value) = http::HeaderValue::from_str(&header)
        {
            req.headers_mut().insert(consistency::HEADER, value);
        }
        let answer = self.inner.call(req);
        let tokens = self.tokens.clone();
        Box::pin(async move {
            let response = answer.await?;
            if let Some(value) = response.headers().get(consistency::HEADER).and_then(|v| v.to_str().ok()) {
                tokens.keep(value);
            }
            Ok(response)
        })
    }
}

impl TestSuite {
    /// All five services on SQLite files in a fresh temporary directory.
    pub async fn start() -> TestSuite {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut SuiteOptions)) -> TestSuite {
        let dir = tempfile::tempdir().unwrap();
        let mut options = SuiteOptions::ephemeral(dir.path());
        // The scenarios replay dated history; "now" is after all of it.
        options.clock = Clock::starting_at(NOW.parse::<Timestamp>().map(|t| t.seconds * 1_000_000).unwrap());
        configure(&mut options);
        let suite = Suite::start(options).await.unwrap();
        let tokens = Tokens::default();
        let recorded = |name: Svc| Recorded {
            inner: suite.channel_as(name, ADMIN).unwrap(),
            tokens: tokens.clone(),
            send_tokens: name == Svc::Kpi,
        };
        let t = TestSuite {
            marketing: MarketingServiceClient::new(recorded(Svc::Marketing)),
            inside_sales: InsideSalesServiceClient::new(recorded(Svc::InsideSales)),
            field_sales: FieldSalesServiceClient::new(recorded(Svc::FieldSales)),
            customer_success: CustomerSuccessServiceClient::new(recorded(Svc::CustomerSuccess)),
            kpi: KpiServiceClient::new(recorded(Svc::Kpi)),
            tokens,
            suite,
            _dir: dir,
        };
        t.wait_serving().await;
        t
    }

    /// A kpi client that sends no consistency token: it sees what kpi has
    /// counted so far.
    pub fn kpi_as_is(&self) -> KpiServiceClient<PeerChannel> {
        KpiServiceClient::new(self.channel(Svc::Kpi))
    }

    /// A channel to a service as the suite's administrator.
    pub fn channel(&self, name: Svc) -> PeerChannel {
        self.channel_as(name, ADMIN)
    }

    /// A channel to a service that presents `identity`'s token.
    pub fn channel_as(&self, name: Svc, identity: &str) -> PeerChannel {
        self.suite.channel_as(name, identity).unwrap()
    }

    /// The consistency tokens the test's calls were answered with so far.
    pub fn tokens(&self) -> String {
        self.tokens.header()
    }

    /// Where the services' SQLite files are.
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Waits until every service answers its health check with SERVING.
    pub async fn wait_serving(&self) {
        for name in ServiceName::ALL {
            let health = HealthClient::new(self.channel(name));
            eventually(&format!("{name} serving"), || {
                let mut health = health.clone();
                async move {
                    let resp = health.check(HealthCheckRequest { service: String::new() }).await.ok()?;
                    (resp.into_inner().status == ServingStatus::Serving as i32).then_some(())
                }
            })
            .await;
        }
    }

    /// A service's outbox admin client.
    pub fn outbox(&self, name: ServiceName) -> OutboxServiceClient<PeerChannel> {
        OutboxServiceClient::new(self.channel(name))
    }

    /// A service's outbox backlog towards one destination (all zero when it
    /// has handed nothing over there yet).
    pub async fn outbox_stats(&self, name: ServiceName, destination: &str) -> common::DestinationStats {
        let stats = self.outbox(name).get_outbox_stats(common::GetOutboxStatsRequest {}).await.unwrap().into_inner();
        stats.destinations.into_iter().find(|d| d.destination == destination).unwrap_or_default()
    }

    /// Waits until no service has a hand-over still to deliver.
    pub async fn outboxes_drained(&self) {
        for name in ServiceName::ALL {
            eventually(&format!("{name}'s outbox drained"), || async move {
                let stats = self.outbox(name).get_outbox_stats(common::GetOutboxStatsRequest {}).await.ok()?;
                stats.into_inner().destinations.iter().all(|d| d.pending == 0).then_some(())
            })
            .await;
        }
    }

    /// The head of a service's event stream.
    pub async fn head(&self, name: ServiceName) -> i64 {
        self.suite.stream_head(name).await.unwrap()
    }

    /// The funnel once kpi has applied every event the four streams hold now.
    pub async fn settled_funnel(&self, start: &str, end: &str) -> kpi::Funnel {
        let req = kpi::GetFunnelRequest { start_date: start.into(), end_date: end.into(), ..Default::default() };
        self.suite.settled_funnel(req, Duration::from_secs(20)).await.unwrap()
    }
}

/// What the suite's clock reads when a test starts.
pub const NOW: &str = "2027-01-15T00:00:00Z";

/// Polls `check` until it returns `Some`, for at most 20 seconds.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A timestamp from RFC 3339 text.
pub fn ts(s: &str) -> Option<Timestamp> {
    Some(s.parse().unwrap())
}
