//! The kpi service: computes the chained funnel (docs/domain.md, "KPIs")
//! from every department's event stream, and owns the shared quality
//! definitions.
//!
//! Same layout as every service: [`domain`] (rules: effects of events, days,
//! formulas), [`store`] (SQL), [`api`] (tonic handlers), plus [`consumer`],
//! which reads the other services' streams, [`journey`], each lead's facts
//! and what they add to the flow and cohort counts, [`planning`], the plan
//! back from revenue and the bottleneck, and [`visitors`], the index that
//! counts distinct visitors over any period. It never reads another service's
//! tables; it only sees what their streams publish.

pub mod api;
pub mod calibration;
pub mod consumer;
pub mod dashboard;
pub mod domain;
pub mod journey;
pub mod period;
pub mod planning;
pub mod retention;
pub mod span;
pub mod store;
pub mod targets;
pub mod velocity;
pub mod visitors;

use std::sync::Arc;

use anyhow::Context;
use themodel_proto::common::v1::event_stream_service_client::EventStreamServiceClient;
use themodel_proto::kpi::v1::definition_preview_service_client::DefinitionPreviewServiceClient;
use themodel_proto::kpi::v1::kpi_service_server::KpiServiceServer;
use themodel_runtime::config::require_peer;
use themodel_runtime::events::EventStream;
use themodel_runtime::server::{AUDIT, EVENT_STREAM, OUTBOX};
use themodel_runtime::telemetry::peer_channel;
use themodel_runtime::{Clock, Db, ServiceConfig, service};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// The gRPC service name.
pub const SERVICE: &str = "themodel.kpi.v1.KpiService";

/// The fewest read connections kpi opens on SQLite: its waterfall makes
/// several reads per call (see `themodel_runtime::db::DEFAULT_READERS`).
const READERS: u32 = 4;

/// Runs the service on `listener` until `shutdown`.
pub async fn run(
    config: ServiceConfig,
    clock: Clock,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let time_zone = api::Zone::parse(&config.time_zone).with_context(|| {
        format!("unknown time zone {:?} (use an IANA name such as UTC or Asia/Tokyo)", config.time_zone)
    })?;
    let peers = &config.peers;
    let sources = [
        (domain::Source::Marketing, require_peer(&peers.marketing, "--marketing-addr")?),
        (domain::Source::InsideSales, require_peer(&peers.inside_sales, "--inside-sales-addr")?),
        (domain::Source::FieldSales, require_peer(&peers.field_sales, "--field-sales-addr")?),
        (domain::Source::CustomerSuccess, require_peer(&peers.customer_success, "--customer-success-addr")?),
    ];
    // kpi owns the definition; it does not follow itself.
    let own = ServiceConfig { peers: Default::default(), readers: config.readers.max(READERS), ..config.clone() };
    let migrations =
        Db::for_backend(sqlx::migrate!("./migrations"), sqlx::migrate!("./migrations-sqlite"), &own.database_url);
    let mut started = service::start("kpi", &own, migrations, clock).await?;
    store::seed_definition(&started.db, started.clock.now()).await?;
    if config.rebuild {
        store::reset_counts(&started.db).await?;
        tracing::warn!("rebuilding every KPI from the department streams");
    }
    let mut consumers = Vec::new();
    for (source, addr) in sources {
        let client = EventStreamServiceClient::new(peer_channel(addr, &config.credential)?);
        let consumer = Arc::new(consumer::Consumer::new(source, client, started.db.clone()).await?);
        let background = consumer.clone();
        let poll = config.poll_interval;
        started.spawn(move |stop| background.run(poll, stop));
        consumers.push(consumer);
    }
    let writer = started.writer(store::Writes);
    let api = api::Api {
        writer: writer.clone(),
        time_zone,
        clock: started.clock.clone(),
        fiscal_year_start_month: config.fiscal_year_start_month,
        consumers: consumers.into(),
        marketing: DefinitionPreviewServiceClient::new(peer_channel(
            require_peer(&config.peers.marketing, "--marketing-addr")?,
            &config.credential,
        )?),
    };
    let routes = Routes::new(KpiServiceServer::new(api))
        .add_service(EventStream::server(started.db.clone(), shutdown.clone()))
        .add_service(started.outbox_admin(&writer))
        .add_service(started.audit_log());
    started.serve(listener, routes, &[SERVICE, EVENT_STREAM, OUTBOX, AUDIT], shutdown).await
}
