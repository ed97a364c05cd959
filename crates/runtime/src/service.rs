//! Starting and stopping a service, the same way for all five: connect and
//! migrate the database, follow the shared definition, run background tasks
//! (outbox relay, consumers), serve, and on shutdown drain in order: RPCs
//! first, then background tasks, then the database pool.

use std::future::Future;
use std::sync::Arc;

use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::definition::SharedDefinition;
use crate::outbox::{Deliver, Outbox, Relay};
use crate::{Clock, Db, ServiceConfig, server};

/// A service whose database is ready, before it serves.
pub struct Started {
    pub db: Db,
    pub definition: SharedDefinition,
    /// Wakes the relay (for hand-overs an immediate delivery left behind).
    relay_wake: Arc<Notify>,
    pub clock: Clock,
    config: ServiceConfig,
    /// Stops background tasks once serving has stopped.
    tasks_stop: CancellationToken,
    tasks: JoinSet<()>,
}

/// Connects, migrates and (when a kpi address is configured) starts
/// following the shared definition.
pub async fn start(config: &ServiceConfig, migrator: Migrator, clock: Clock) -> anyhow::Result<Started> {
    let db = Db::connect(&config.database_url).await?;
    db.migrate(migrator).await?;
    let stream_id = crate::events::identify(&db).await?;
    tracing::debug!(%stream_id, "database migrated");
    let mut started = Started {
        db,
        definition: SharedDefinition::default(),
        relay_wake: Arc::new(Notify::new()),
        clock,
        config: config.clone(),
        tasks_stop: CancellationToken::new(),
        tasks: JoinSet::new(),
    };
    if let Some(kpi) = config.peers.kpi.clone() {
        let follow = started.definition.clone().follow(kpi, config.definition_refresh, started.tasks_stop.clone());
        started.tasks.spawn(follow);
    }
    Ok(started)
}

impl Started {
    /// Runs the outbox relay until shutdown; handlers use the returned
    /// [`Outbox`] to deliver their hand-overs right after committing.
    pub fn spawn_relay<D: Deliver>(&mut self, deliver: D) -> Outbox {
        let relay = Arc::new(Relay {
            db: self.db.clone(),
            deliver,
            poll: self.config.poll_interval,
            clock: self.clock.clone(),
        });
        self.tasks.spawn(relay.clone().run(self.relay_wake.clone(), self.tasks_stop.clone()));
        Outbox::new(relay)
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
        tracing::info!(%addr, services = ?names, "serving");
        let served = server::serve(listener, routes, names, self.config.shutdown_grace, shutdown).await;
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
