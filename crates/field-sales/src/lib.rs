//! The field-sales service: opportunities, their phases and stage history,
//! and win/loss (docs/domain.md, "Field sales"). It hands won accounts to
//! customer success and lost deals' leads back to marketing.
//!
//! Same layout as every service: [`domain`] (rules), [`store`] (SQL and the
//! rows the writer batches), [`api`] (tonic handlers). It never reads another
//! service's tables.

pub mod api;
pub mod domain;
pub mod store;

use themodel_proto::fieldsales::v1::field_sales_service_server::FieldSalesServiceServer;
use themodel_runtime::events::EventStream;
use themodel_runtime::loader::Loader;
use themodel_runtime::server::{AUDIT, EVENT_STREAM, OUTBOX};
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
    let mut started = service::start("field-sales", &config, sqlx::migrate!("./migrations"), clock).await?;
    started.relay_to(&[("customer-success", "--customer-success-addr"), ("marketing", "--marketing-addr")])?;
    let db = started.db.clone();
    let writer = started.writer(store::FieldSales::new(db.clone()));
    let opportunities = Loader::spawn(
        db.clone(),
        2,
        move |conn, ids| {
            let db = db.clone();
            Box::pin(async move { store::opportunities_by_id(conn, &db, ids).await })
        },
        started.stop_token(),
    );
    let api =
        api::Api { writer: writer.clone(), opportunities, clock: started.clock.clone(), owners: config.owners.clone() };
    let routes = Routes::new(FieldSalesServiceServer::new(api))
        .add_service(EventStream::server(started.db.clone(), shutdown.clone()))
        .add_service(started.outbox_admin(&writer))
        .add_service(started.audit_log());
    started.serve(listener, routes, &[SERVICE, EVENT_STREAM, OUTBOX, AUDIT], shutdown).await
}
