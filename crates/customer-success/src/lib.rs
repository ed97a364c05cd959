//! The customer-success service: accounts, renewals and churn
//! (docs/domain.md, "Customer success").
//!
//! Same layout as every service: [`domain`] (rules), [`store`] (SQL and the
//! rows the writer batches), [`api`] (tonic handlers). It hands nothing over,
//! and never reads another service's tables.

pub mod api;
pub mod domain;
pub mod store;

use themodel_proto::customersuccess::v1::customer_success_service_server::CustomerSuccessServiceServer;
use themodel_runtime::events::EventStream;
use themodel_runtime::loader::Loader;
use themodel_runtime::server::{AUDIT, EVENT_STREAM, OUTBOX};
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
    let mut started = service::start("customer-success", &config, sqlx::migrate!("./migrations"), clock).await?;
    let db = started.db.clone();
    let writer = started.writer(store::CustomerSuccess::new(db.clone()));
    let accounts = Loader::spawn(
        db.clone(),
        2,
        move |conn, ids| {
            let db = db.clone();
            Box::pin(async move { store::accounts_by_id(conn, &db, ids).await })
        },
        started.stop_token(),
    );
    let api =
        api::Api { writer: writer.clone(), accounts, clock: started.clock.clone(), owners: config.owners.clone() };
    let routes = Routes::new(CustomerSuccessServiceServer::new(api))
        .add_service(EventStream::server(started.db.clone(), shutdown.clone()))
        .add_service(started.outbox_admin(&writer))
        .add_service(started.audit_log());
    started.serve(listener, routes, &[SERVICE, EVENT_STREAM, OUTBOX, AUDIT], shutdown).await
}
