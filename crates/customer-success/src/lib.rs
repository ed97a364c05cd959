//! The customer-success service (DOMAIN.md §6): accounts opened by won deals,
//! renewals and churn.
//!
//! Same layout as every service: [`domain`] (rules), [`store`] (SQL), [`api`]
//! (tonic handlers). It hands nothing over yet, so it has no relay. It never
//! reads another service's tables.

pub mod api;
pub mod domain;
pub mod store;

use themodel_proto::customersuccess::v1::customer_success_service_server::CustomerSuccessServiceServer;
use themodel_runtime::events::EventStream;
use themodel_runtime::server::EVENT_STREAM;
use themodel_runtime::{Clock, ServiceConfig, service};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// The gRPC service name.
pub const SERVICE: &str = "themodel.customersuccess.v1.CustomerSuccessService";

/// Runs the service on `listener` until `shutdown`.
pub async fn run(
    config: ServiceConfig,
    clock: Clock,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let started = service::start(&config, sqlx::migrate!("./migrations"), clock).await?;
    let api = api::Api { db: started.db.clone(), clock: started.clock.clone() };
    let routes =
        Routes::new(CustomerSuccessServiceServer::new(api)).add_service(EventStream::server(started.db.clone()));
    started.serve(listener, routes, &[SERVICE, EVENT_STREAM], shutdown).await
}
