//! The inside-sales service (DOMAIN.md §4): the lead queue and call list,
//! activities, BANT qualification; converts leads to opportunities (hand-over
//! to field sales) or recycles them with a reason (hand-over to marketing).
//!
//! Same layout as every service: [`domain`] (rules), [`store`] (SQL), [`api`]
//! (tonic handlers), [`relay`] (delivery of this service's hand-overs). It
//! never reads another service's tables.

pub mod api;
pub mod domain;
pub mod relay;
pub mod store;

use themodel_proto::fieldsales::v1::field_sales_service_client::FieldSalesServiceClient;
use themodel_proto::insidesales::v1::inside_sales_service_server::InsideSalesServiceServer;
use themodel_proto::marketing::v1::marketing_service_client::MarketingServiceClient;
use themodel_runtime::config::require_peer;
use themodel_runtime::events::EventStream;
use themodel_runtime::server::EVENT_STREAM;
use themodel_runtime::telemetry::peer_channel;
use themodel_runtime::{Clock, ServiceConfig, service};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// The gRPC service name.
pub const SERVICE: &str = "themodel.insidesales.v1.InsideSalesService";

/// Runs the service on `listener` until `shutdown`.
pub async fn run(
    config: ServiceConfig,
    clock: Clock,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let field_sales = peer_channel(require_peer(&config.peers.field_sales, "--field-sales-addr")?)?;
    let marketing = peer_channel(require_peer(&config.peers.marketing, "--marketing-addr")?)?;
    let mut started = service::start(&config, sqlx::migrate!("./migrations"), clock).await?;
    let outbox = started.spawn_relay(relay::Peers {
        field_sales: FieldSalesServiceClient::new(field_sales),
        marketing: MarketingServiceClient::new(marketing),
    });
    let api = api::Api {
        db: started.db.clone(),
        definition: started.definition.clone(),
        clock: started.clock.clone(),
        outbox,
    };
    let routes = Routes::new(InsideSalesServiceServer::new(api)).add_service(EventStream::server(started.db.clone()));
    started.serve(listener, routes, &[SERVICE, EVENT_STREAM], shutdown).await
}
