//! One database layer for SQLite and PostgreSQL.
//!
//! Why sqlx's `Any` driver and portable SQL rather than a store per backend:
//! the services' SQL is simple (keyed reads, inserts, upserts, range sums), and
//! both backends accept the same text for it when columns use primitive types
//! (BIGINT, TEXT, DOUBLE PRECISION), times are integers and ids are assigned by
//! the application. So every query exists once, and both backends run the
//! same business logic by construction. The dialects differ only in connection
//! settings, handled here.
//!
//! SQLite as a server database: WAL, `synchronous=NORMAL`, and all writes go
//! through one connection (the `write` pool has exactly one), so a write
//! transaction can never meet SQLITE_BUSY half-way; reads use their own pool
//! and never block the writer. PostgreSQL uses one pool for both.
//!
//! Writers are serial on both backends. On SQLite the single connection does
//! it; on PostgreSQL a write transaction starts by locking the service's
//! `stream_head` row, which it would lock anyway to append its events. Taking
//! it first costs no concurrency and rules out lost updates in the
//! read-modify-write steps handlers do (two touches on one lead at once).

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, ConnectOptions, Executor};

/// A transaction on a service's database.
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// A service's database: a pool for writes and one for reads.
#[derive(Debug, Clone)]
pub struct Db {
    write: AnyPool,
    read: AnyPool,
    /// PostgreSQL: write transactions lock the stream head first.
    lock_on_begin: bool,
}

impl Db {
    /// Connects to `url` (`sqlite://…` or `postgres://…`). A SQLite file and its
    /// directory are created if missing.
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        if url.starts_with("sqlite:") {
            Self::connect_sqlite(url).await
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = AnyConnectOptions::from_str(url)
                .context("parsing the database url")?
                .log_statements(tracing::log::LevelFilter::Trace);
            let pool = AnyPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .context("connecting to postgres")?;
            Ok(Db { write: pool.clone(), read: pool, lock_on_begin: true })
        } else {
            anyhow::bail!("unsupported database url (expected sqlite:// or postgres://)")
        }
    }

    async fn connect_sqlite(url: &str) -> anyhow::Result<Db> {
        let url = with_create_mode(url);
        if let Some(dir) = sqlite_path(&url).and_then(|p| std::path::Path::new(p).parent().map(ToOwned::to_owned))
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let options = AnyConnectOptions::from_str(&url)
            .context("parsing the database url")?
            .log_statements(tracing::log::LevelFilter::Trace);
        let pool = |max: u32| {
            AnyPoolOptions::new()
                .max_connections(max)
                .min_connections(1)
                .acquire_timeout(Duration::from_secs(30))
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                        )
                        .await?;
                        Ok(())
                    })
                })
                .connect_with(options.clone())
        };
        let write = pool(1).await.context("opening sqlite database")?;
        let read = pool(4).await.context("opening sqlite database")?;
        Ok(Db { write, read, lock_on_begin: false })
    }

    /// Applies the plumbing migrations (event stream, outbox, idempotency) and
    /// then the service's own (`sqlx::migrate!("./migrations")` in its crate).
    ///
    /// Both sets share sqlx's migration table, so each ignores the other's
    /// versions: plumbing uses versions below 100, services 100 and up.
    pub async fn migrate(&self, mut service: Migrator) -> anyhow::Result<()> {
        let mut plumbing = sqlx::migrate!("./migrations");
        plumbing.set_ignore_missing(true);
        plumbing.run(&self.write).await.context("applying plumbing migrations")?;
        service.set_ignore_missing(true);
        service.run(&self.write).await.context("applying service migrations")?;
        Ok(())
    }

    /// Begins a write transaction; it holds the service's write lock (see the
    /// module docs) until it commits or rolls back.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        let mut tx = self.write.begin().await?;
        if self.lock_on_begin {
            sqlx::query("UPDATE stream_head SET seq = seq WHERE id = 1").execute(&mut *tx).await?;
        }
        Ok(tx)
    }

    /// The pool for reads outside a transaction.
    pub fn reader(&self) -> &AnyPool {
        &self.read
    }

    /// The pool for single-statement writes outside a transaction.
    pub fn writer(&self) -> &AnyPool {
        &self.write
    }

    /// Closes both pools, waiting for connections to be returned.
    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

/// `sqlite://x.db` → `sqlite://x.db?mode=rwc`, so a missing file is created.
fn with_create_mode(url: &str) -> String {
    if url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then_some(path)
}

/// Whether an error is a unique-constraint violation (a concurrent duplicate).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls() {
        assert_eq!(with_create_mode("sqlite://data/m.db"), "sqlite://data/m.db?mode=rwc");
        assert_eq!(with_create_mode("sqlite://m.db?mode=ro"), "sqlite://m.db?mode=ro");
        assert_eq!(sqlite_path("sqlite://data/m.db?mode=rwc"), Some("data/m.db"));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
    }
}
