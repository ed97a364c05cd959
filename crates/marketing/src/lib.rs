//! The marketing service (DOMAIN.md §3): visitors, leads, touches, scores,
//! nurture and recycle tracks. It hands promising leads to inside sales.
//!
//! Layout, the same in every service: [`domain`] holds the rules (no SQL, no
//! gRPC), [`store`] the SQL, [`api`] the tonic handlers, [`relay`] delivery of
//! this service's hand-overs. It never reads another service's tables.

pub mod api;
pub mod domain;
pub mod relay;
pub mod store;

use themodel_proto::insidesales::v1::inside_sales_service_client::InsideSalesServiceClient;
use themodel_proto::marketing::v1::marketing_service_server::MarketingServiceServer;
use themodel_runtime::config::require_peer;
use themodel_runtime::events::EventStream;
use themodel_runtime::server::EVENT_STREAM;
use themodel_runtime::telemetry::peer_channel;
use themodel_runtime::{Clock, ServiceConfig, service};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// The gRPC service name.
pub const SERVICE: &str = "themodel.marketing.v1.MarketingService";

/// Runs the service on `listener` until `shutdown`.
pub async fn run(
    config: ServiceConfig,
    clock: Clock,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let inside_sales = peer_channel(require_peer(&config.peers.inside_sales, "--inside-sales-addr")?)?;
    let mut started = service::start(&config, sqlx::migrate!("./migrations"), clock).await?;
    let outbox = started.spawn_relay(relay::Peers { inside_sales: InsideSalesServiceClient::new(inside_sales) });
    let api = api::Api {
        db: started.db.clone(),
        definition: started.definition.clone(),
        clock: started.clock.clone(),
        outbox,
    };
    let routes = Routes::new(MarketingServiceServer::new(api)).add_service(EventStream::server(started.db.clone()));
    started.serve(listener, routes, &[SERVICE, EVENT_STREAM], shutdown).await
}
