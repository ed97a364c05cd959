//! Starting and stopping a service, the same way for all five: connect and
//! migrate the database, follow the shared definition, run background tasks
//! (writer, outbox relay, consumers), serve, and on shutdown drain in order:
//! calls first, then background tasks, then the database pool.

use std::collections::HashMap;
use std::future::Future;

use anyhow::Context as _;
use sqlx::migrate::Migrator;
use themodel_proto::common::v1::audit_service_server::AuditServiceServer;
use themodel_proto::common::v1::outbox_service_server::OutboxServiceServer;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::audit::AuditLog;
use crate::auth::AuthLayer;
use crate::consistency::TokenLayer;
use crate::definition::SharedDefinition;
use crate::outbox::{Outbox, OutboxAdmin, Relay};
use crate::telemetry::peer_channel;
use crate::work::{Store, Writer};
use crate::{Clock, Db, ServiceConfig, server};

/// A service whose database is ready, before it serves.
pub struct Started {
    /// The service's stream name ("marketing", "inside-sales", ...), as
    /// its consistency tokens give it.
    pub stream: &'static str,
    pub db: Db,
    pub definition: SharedDefinition,
    pub clock: Clock,
    config: ServiceConfig,
    outbox: Outbox,
    destinations: Vec<&'static str>,
    /// Stops background tasks once serving has stopped.
    tasks_stop: CancellationToken,
    tasks: JoinSet<()>,
}

/// Connects, migrates and (when a kpi address is configured) starts
/// following the shared definition. `stream` names the service's event
/// stream in its consistency tokens.
pub async fn start(
    stream: &'static str,
    config: &ServiceConfig,
    migrator: Migrator,
    clock: Clock,
) -> anyhow::Result<Started> {
    let db = Db::connect_with_readers(&config.database_url, config.readers).await?;
    db.migrate(migrator).await?;
    let stream_id = crate::events::identify(&db).await?;
    tracing::debug!(%stream_id, "database migrated");
    let mut started = Started {
        stream,
        db,
        definition: SharedDefinition::default(),
        clock,
        config: config.clone(),
        outbox: Outbox::none(),
        destinations: Vec::new(),
        tasks_stop: CancellationToken::new(),
        tasks: JoinSet::new(),
    };
    started.tasks.spawn(started.db.clone().checkpoint_behind_writer(started.tasks_stop.clone()));
    if let Some(kpi) = config.peers.kpi.clone() {
        let follow = started.definition.clone().follow(
            kpi,
            config.credential.clone(),
            config.definition_refresh,
            started.tasks_stop.clone(),
        );
        started.tasks.spawn(follow);
    }
    Ok(started)
}

impl Started {
    /// Runs the outbox relay to `destinations` (service names whose
    /// addresses the configuration must give) until shutdown.
    pub fn relay_to(&mut self, destinations: &[(&'static str, &str)]) -> anyhow::Result<()> {
        let mut peers = HashMap::new();
        for (name, flag) in destinations {
            let addr =
                self.config.peers.get(name).ok_or_else(|| anyhow::anyhow!("missing peer address: set {flag}"))?;
            peers.insert(*name, peer_channel(addr, &self.config.credential)?);
        }
        let (relay, outbox) = Relay::new(
            self.db.clone(),
            peers,
            self.clock.clone(),
            self.config.poll_interval,
            self.config.dead_letter_after,
        );
        self.destinations = relay.destinations();
        self.outbox = outbox;
        self.tasks.spawn(relay.run(self.tasks_stop.clone()));
        Ok(())
    }

    /// Starts the writer for `store`; call after [`Started::relay_to`].
    ///
    /// The writer runs on a thread of its own (a single-threaded runtime):
    /// it is a serial pipeline of database round trips, and on the shared
    /// runtime each of its awaits queued behind the request handlers its
    /// last commit had just woken (about 0.5 ms per batch of 30).
    pub fn writer<S: Store>(&mut self, store: S) -> Writer<S> {
        let (writer, task) = Writer::new(
            store,
            self.db.clone(),
            self.clock.clone(),
            self.definition.clone(),
            self.outbox.clone(),
            self.config.writer,
            self.tasks_stop.clone(),
        );
        self.tasks.spawn(async move {
            let thread = std::thread::Builder::new().name("writer".to_owned()).spawn(move || {
                match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt.block_on(task),
                    Err(e) => tracing::error!(error = %e, "cannot start the writer's runtime"),
                }
            });
            match thread {
                Ok(t) => {
                    let _ = tokio::task::spawn_blocking(move || t.join()).await;
                }
                Err(e) => tracing::error!(error = %e, "cannot start the writer's thread"),
            }
        });
        writer
    }

    /// The outbox service for this service's hand-overs.
    pub fn outbox_admin<S: Store>(&self, writer: &Writer<S>) -> OutboxServiceServer<OutboxAdmin<S>> {
        OutboxAdmin::server(writer.clone(), self.destinations.clone(), self.clock.clone())
    }

    /// The audit-log service over this service's log.
    pub fn audit_log(&self) -> AuditServiceServer<AuditLog> {
        AuditLog::server(self.db.clone())
    }

    /// A token that fires once serving has stopped, for background tasks.
    pub fn stop_token(&self) -> CancellationToken {
        self.tasks_stop.clone()
    }

    /// Runs a background task; it gets a token that fires after serving stops.
    pub fn spawn<F, Fut>(&mut self, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task(self.tasks_stop.clone()));
    }

    /// Serves until `shutdown`, then drains.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        routes: Routes,
        names: &[&'static str],
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let addr = listener.local_addr()?;
        let health_only = match self.config.health_listen {
            Some(at) => Some(TcpListener::bind(at).await.with_context(|| format!("binding the health port {at}"))?),
            None => None,
        };
        tracing::info!(%addr, health_only = ?self.config.health_listen, services = ?names, tls = self.config.tls.is_some(), "serving");
        let served = server::serve(
            listener,
            health_only,
            self.config.tls.clone(),
            routes,
            names,
            server::Limits { grace: self.config.shutdown_grace, max_in_flight: self.config.max_in_flight },
            TokenLayer::new(self.stream, self.db.clone()),
            AuthLayer::new(self.config.authenticator()),
            shutdown,
        )
        .await;
        self.tasks_stop.cancel();
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(e) = joined {
                tracing::error!(error = %e, "background task failed");
            }
        }
        self.db.close().await;
        tracing::info!(%addr, "stopped");
        served
    }
}
