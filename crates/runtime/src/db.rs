//! One database layer for SQLite and PostgreSQL.
//!
//! Why sqlx's `Any` driver and portable SQL rather than a store per backend:
//! the services' SQL is simple (keyed reads, multi-row inserts and upserts,
//! range sums), both backends accept the same text for it when columns use
//! primitive types (BIGINT, TEXT, DOUBLE PRECISION, BYTEA), times are integers
//! and ids are assigned by the application. So every query exists once and
//! both backends run the same business logic by construction.
//!
//! Measured before keeping it (2 cores, SQLite in WAL mode): a statement
//! through sqlx costs about 46 µs of latency, the same with `Any` as with the
//! typed `SqliteConnection`, because it is the round trip to the
//! connection's worker thread; bulk inserts ran at 82k vs 85k rows/s with
//! indexes and 523k vs 513k without. A typed driver would not make the write
//! path faster; issuing fewer statements does. Hence the writer (see
//! [`crate::work`]) loads a whole batch's rows in a few `IN (...)` queries and
//! writes them back with multi-row statements, and reads of single records are
//! batched the same way ([`crate::loader`]).
//!
//! Placeholders: PostgreSQL needs `$1, $2, ...`; SQLite accepts those too but
//! looks each numbered parameter up by name, which is quadratic in the number
//! of parameters (22% of a 700-parameter insert's time went to
//! `sqlite3_bind_parameter_name`). Statements with many parameters therefore
//! use `?` on SQLite, built by [`Db::values`] and [`Db::list`].
//!
//! SQLite as a server database: WAL, `synchronous=NORMAL`, and all writes go
//! through one connection (the write pool has exactly one), so a write
//! transaction never meets SQLITE_BUSY half-way; reads use their own pool and
//! never wait for the writer. PostgreSQL uses one pool for both.
//!
//! Writers are serial on both backends: on SQLite the single connection does
//! it; on PostgreSQL a write transaction starts by locking the service's
//! `stream_head` row, which it would lock anyway to append its events. This
//! keeps read-modify-write units free of lost updates and event sequence
//! numbers gap-free. Several replicas of a service can run against one
//! PostgreSQL database (their writers take turns); scaling writes out later
//! means partitioning the stream (say, by subject), which nothing here rules out.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, ConnectOptions, Executor};

/// A transaction on a service's database, from its write pool.
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// A connection (or a transaction, which derefs to one) that stores use.
pub type Conn = sqlx::AnyConnection;

/// A query on the `Any` driver.
pub type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Which database a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A service's database: a pool for writes and one for reads, and the
/// settings to open connections of its own for the writer and the batched
/// readers.
///
/// Why they get their own: sqlx returns a pooled connection through a
/// spawned task that pings it first, so every acquire after a release waits
/// for a round trip to the connection's worker. For a writer committing
/// batches back to back that was ~20% of each batch.
#[derive(Debug, Clone)]
pub struct Db {
    write: AnyPool,
    read: AnyPool,
    backend: Backend,
    options: AnyConnectOptions,
}

/// Rows per multi-row statement, largest first. A fixed set keeps the number
/// of distinct statements (each prepared and cached per connection) small:
/// any count is a sum of at most three of each.
pub const CHUNKS: [usize; 5] = [256, 64, 16, 4, 1];

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
                .connect_with(options.clone())
                .await
                .context("connecting to postgres")?;
            Ok(Db { write: pool.clone(), read: pool, backend: Backend::Postgres, options })
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
        // The writer's page cache is larger: it holds the indexes a batch
        // touches. Readers keep SQLite's default. Statement journals stay in
        // memory (a multi-row upsert would otherwise write one to disk).
        //
        // Checkpoints: every commit appends the pages it dirtied to the WAL,
        // and a checkpoint copies them into the database file. Random keys
        // (ids, e-mail keys, request ids) dirty a page per index per insert,
        // so how often a hot page is copied decides write throughput:
        // measured with the capture workload (a lead, its indexes, an event
        // and an idempotency record per unit, 64 units a commit), checkpoints
        // every 1,000 pages (SQLite's default) gave 14k units/s, every 10,000
        // pages 21k. The price: a WAL of up to ~40 MB per service, and a
        // commit that checkpoints takes tens of milliseconds (75 ms at worst
        // in that run) instead of ~15.
        let pool = |max: u32, cache_kib: i64, autocheckpoint: i64| {
            AnyPoolOptions::new()
                .max_connections(max)
                .min_connections(1)
                .acquire_timeout(Duration::from_secs(30))
                // A local file cannot drop its connection; sqlx's default ping
                // before every acquire cost a worker round trip per batch and
                // per read (~10% of a write batch).
                .test_before_acquire(false)
                .after_connect(move |conn, _| Box::pin(sqlite_settings(conn, cache_kib, autocheckpoint)))
                .connect_with(options.clone())
        };
        let write = pool(1, 2_048, 10_000).await.context("opening sqlite database")?;
        let read = pool(2, 2_048, 10_000).await.context("opening sqlite database")?;
        Ok(Db { write, read, backend: Backend::Sqlite, options })
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

    /// Begins a write transaction on the write pool; it holds the service's
    /// write lock (see the module docs) until it commits or rolls back.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        let mut tx = self.write.begin_with(self.begin_statement()).await?;
        if self.backend == Backend::Postgres {
            sqlx::query("UPDATE stream_head SET seq = seq WHERE id = 1").execute(&mut *tx).await?;
        }
        Ok(tx)
    }

    /// Begins a write transaction on a connection of the caller's own (see
    /// [`Db::open_writer`]), holding the write lock like [`Db::begin`].
    pub async fn begin_on<'c>(&self, conn: &'c mut Conn) -> Result<sqlx::Transaction<'c, sqlx::Any>, sqlx::Error> {
        use sqlx::Connection;
        let mut tx = conn.begin_with(self.begin_statement()).await?;
        if self.backend == Backend::Postgres {
            sqlx::query("UPDATE stream_head SET seq = seq WHERE id = 1").execute(&mut *tx).await?;
        }
        Ok(tx)
    }

    /// SQLite takes the write lock when the transaction begins (IMMEDIATE),
    /// so two writing connections wait for each other in SQLite's busy
    /// handler instead of failing on a stale snapshot half-way.
    fn begin_statement(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }

    /// A connection of the writer's own, outside the pools.
    pub async fn open_writer(&self) -> Result<Conn, sqlx::Error> {
        self.open(16_384).await
    }

    /// A read connection of a batched reader's own, outside the pools.
    pub async fn open_reader(&self) -> Result<Conn, sqlx::Error> {
        self.open(2_048).await
    }

    async fn open(&self, cache_kib: i64) -> Result<Conn, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = self.options.connect().await?;
                sqlite_settings(&mut conn, cache_kib, 10_000).await?;
                Ok(conn)
            }
            Backend::Postgres => self.options.connect().await,
        }
    }

    /// The pool for reads outside a transaction.
    pub fn reader(&self) -> &AnyPool {
        &self.read
    }

    /// The pool for single-statement writes outside a transaction.
    pub fn writer(&self) -> &AnyPool {
        &self.write
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Placeholders for `rows` rows of `cols` values each, numbered from
    /// `first` on PostgreSQL: `(?, ?), (?, ?)` or `($1, $2), ($3, $4)`.
    pub fn values(&self, rows: usize, cols: usize, first: usize) -> String {
        let mut s = String::with_capacity(rows * (cols * 4 + 4));
        for r in 0..rows {
            if r > 0 {
                s.push_str(", ");
            }
            s.push('(');
            for c in 0..cols {
                if c > 0 {
                    s.push_str(", ");
                }
                self.placeholder(&mut s, first + r * cols + c);
            }
            s.push(')');
        }
        s
    }

    /// Placeholders for an `IN` list of `n` values numbered from `first`:
    /// `(?, ?, ?)` or `($2, $3, $4)`.
    pub fn list(&self, n: usize, first: usize) -> String {
        let mut s = String::with_capacity(n * 4 + 2);
        s.push('(');
        for i in 0..n {
            if i > 0 {
                s.push_str(", ");
            }
            self.placeholder(&mut s, first + i);
        }
        s.push(')');
        s
    }

    /// The placeholder of parameter `n` (from 1): `?` or `$n`. Statements
    /// built with [`Db::values`] or [`Db::list`] must use it for their other
    /// parameters too: SQLite binds `?` by position and `$n` by number, and a
    /// mix of the two binds the wrong values.
    pub fn param(&self, n: usize) -> String {
        let mut s = String::new();
        self.placeholder(&mut s, n);
        s
    }

    fn placeholder(&self, s: &mut String, n: usize) {
        match self.backend {
            Backend::Sqlite => s.push('?'),
            Backend::Postgres => {
                s.push('$');
                s.push_str(&n.to_string());
            }
        }
    }

    /// Closes both pools, waiting for connections to be returned.
    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

/// Splits `n` rows into chunks of the sizes in [`CHUNKS`], largest first.
pub fn chunks(mut n: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        let size = CHUNKS.into_iter().find(|c| *c <= n)?;
        n -= size;
        Some(size)
    })
}

/// The smallest size in [`CHUNKS`] that holds `n` keys (capped at the
/// largest): an `IN` list is padded to it by repeating its last key, so
/// lookups use few distinct statements too.
pub fn padded(n: usize) -> usize {
    CHUNKS.into_iter().rev().find(|c| *c >= n).unwrap_or(CHUNKS[0])
}

/// Runs one multi-row statement per chunk of `rows`: `head` is the text
/// before the placeholders (`INSERT INTO t (a, b) VALUES `), `tail` what
/// follows them (an `ON CONFLICT` clause, or empty), `bind` binds one row's
/// `cols` values.
pub async fn insert_rows<T: Sync>(
    conn: &mut Conn,
    db: &Db,
    head: &str,
    cols: usize,
    tail: &str,
    rows: &[T],
    bind: impl for<'q> Fn(Query<'q>, &'q T) -> Query<'q>,
) -> Result<(), sqlx::Error> {
    let mut start = 0;
    for size in chunks(rows.len()) {
        let sql = format!("{head}{}{tail}", db.values(size, cols, 1));
        let mut q = sqlx::query(&sql);
        for row in &rows[start..start + size] {
            q = bind(q, row);
        }
        q.execute(&mut *conn).await?;
        start += size;
    }
    Ok(())
}

/// Runs `SELECT ... WHERE <col> IN (...)` over `keys` in padded chunks and
/// collects every row: `sql` holds the text before the list, `after` the text
/// after it (may be empty). `conn` is a transaction or a pooled connection.
pub async fn select_in<R>(
    conn: &mut Conn,
    db: &Db,
    sql: &str,
    after: &str,
    keys: &[&str],
) -> Result<Vec<R>, sqlx::Error>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
{
    let mut out = Vec::new();
    for part in keys.chunks(CHUNKS[0]) {
        let size = padded(part.len());
        let text = format!("{sql}{}{after}", db.list(size, 1));
        let mut q = sqlx::query_as::<_, R>(&text);
        for i in 0..size {
            q = q.bind(part[i.min(part.len() - 1)]);
        }
        out.extend(q.fetch_all(&mut *conn).await?);
    }
    Ok(out)
}

/// The settings every SQLite connection of a service runs with.
async fn sqlite_settings(conn: &mut Conn, cache_kib: i64, autocheckpoint: i64) -> Result<(), sqlx::Error> {
    conn.execute(
        format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000; \
             PRAGMA foreign_keys = ON; PRAGMA cache_size = -{cache_kib}; PRAGMA temp_store = MEMORY; \
             PRAGMA wal_autocheckpoint = {autocheckpoint};"
        )
        .as_str(),
    )
    .await?;
    Ok(())
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

/// A value read back as `i32` that was written from one: out of range means
/// the row is corrupt, which is an error, never a silent wrap.
pub fn to_i32(v: i64, column: &str) -> anyhow::Result<i32> {
    i32::try_from(v).with_context(|| format!("column {column} holds {v}, outside the 32-bit range"))
}

/// An amount kept as three columns (currency, units, nanos); `None` when the
/// currency column is NULL. A stored amount that no longer parses is an error.
pub fn money(
    currency: Option<String>,
    units: Option<i64>,
    nanos: Option<i64>,
) -> anyhow::Result<Option<themodel_values::Money>> {
    let Some(currency) = currency else { return Ok(None) };
    let currency = themodel_values::Currency::parse(&currency).map_err(|e| anyhow::anyhow!("stored currency: {e}"))?;
    let nanos = to_i32(nanos.unwrap_or(0), "nanos")?;
    themodel_values::Money::new(currency, units.unwrap_or(0), nanos)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("stored amount: {e}"))
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

    #[test]
    fn chunking() {
        assert_eq!(chunks(0).collect::<Vec<_>>(), Vec::<usize>::new());
        assert_eq!(chunks(100).collect::<Vec<_>>(), [64, 16, 16, 4]);
        assert_eq!(chunks(600).sum::<usize>(), 600);
        assert_eq!(padded(1), 1);
        assert_eq!(padded(5), 16);
        assert_eq!(padded(300), 256);
    }
}
