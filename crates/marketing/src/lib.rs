//! The marketing service: visitors, leads, touches, scores, nurture and
//! recycle tracks (docs/domain.md, "Marketing"). It hands promising leads to
//! inside sales.
//!
//! Layout, the same in every service: [`domain`] holds the rules (no SQL, no
//! gRPC), [`store`] the SQL and the rows the writer batches, [`api`] the tonic
//! handlers. It never reads another service's tables.

pub mod api;
pub mod domain;
pub mod preview;
pub mod store;

use themodel_proto::kpi::v1::definition_preview_service_server::DefinitionPreviewServiceServer;
use themodel_proto::marketing::v1::marketing_service_server::MarketingServiceServer;
use themodel_runtime::events::EventStream;
use themodel_runtime::loader::Loader;
use themodel_runtime::server::{AUDIT, EVENT_STREAM, OUTBOX};
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
    let mut started = service::start("marketing", &config, sqlx::migrate!("./migrations"), clock).await?;
    started.relay_to(&[("inside-sales", "--inside-sales-addr")])?;
    let db = started.db.clone();
    let writer = started.writer(store::Marketing::new(db.clone()));
    let leads = Loader::spawn(
        db.clone(),
        2,
        move |conn, ids| {
            let db = db.clone();
            Box::pin(async move { store::leads_by_id(conn, &db, ids).await })
        },
        started.stop_token(),
    );
    let api = api::Api { writer: writer.clone(), leads, clock: started.clock.clone() };
    let preview = preview::Preview { db: started.db.clone() };
    let routes = Routes::new(MarketingServiceServer::new(api))
        .add_service(DefinitionPreviewServiceServer::new(preview))
        .add_service(EventStream::server(started.db.clone(), shutdown.clone()))
        .add_service(started.outbox_admin(&writer))
        .add_service(started.audit_log());
    started.serve(listener, routes, &[SERVICE, preview::SERVICE, EVENT_STREAM, OUTBOX, AUDIT], shutdown).await
}
