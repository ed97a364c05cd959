//! The field-sales service (DOMAIN.md §5): opportunities, their phases and
//! stage history, win/loss. Won deals go to customer success; lost deals'
//! leads are recycled to marketing.
//!
//! Same layout as every service: [`domain`] (rules), [`store`] (SQL), [`api`]
//! (tonic handlers), [`relay`] (delivery of this service's hand-overs). It
//! never reads another service's tables.

pub mod api;
pub mod domain;
pub mod relay;
pub mod store;

use themodel_proto::customersuccess::v1::customer_success_service_client::CustomerSuccessServiceClient;
use themodel_proto::fieldsales::v1::field_sales_service_server::FieldSalesServiceServer;
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
pub const SERVICE: &str = "themodel.fieldsales.v1.FieldSalesService";

/// Runs the service on `listener` until `shutdown`.
pub async fn run(
    config: ServiceConfig,
    clock: Clock,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let customer_success = peer_channel(require_peer(&config.peers.customer_success, "--customer-success-addr")?)?;
    let marketing = peer_channel(require_peer(&config.peers.marketing, "--marketing-addr")?)?;
    let mut started = service::start(&config, sqlx::migrate!("./migrations"), clock).await?;
    let outbox = started.spawn_relay(relay::Peers {
        customer_success: CustomerSuccessServiceClient::new(customer_success),
        marketing: MarketingServiceClient::new(marketing),
    });
    let api = api::Api {
        db: started.db.clone(),
        definition: started.definition.clone(),
        clock: started.clock.clone(),
        outbox,
    };
    let routes = Routes::new(FieldSalesServiceServer::new(api)).add_service(EventStream::server(started.db.clone()));
    started.serve(listener, routes, &[SERVICE, EVENT_STREAM], shutdown).await
}
