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
//! [`crate::work`]) begins its transaction and loads a whole batch's rows in
//! one round trip ([`begin_and_select_in`]), and writes the batch back, commit
//! included, as one [`Script`] of multi-row statements; reads of single
//! records are batched the same way ([`crate::loader`]).
//!
//! One round trip for many statements relies on sqlx's SQLite driver running
//! every statement of a query string, each with its share of the bound
//! parameters, in order. sqlx 0.8 does this but calls it deprecated for
//! prepared queries (launchbadge/sqlx#3108); the workspace pins sqlx
//! exactly, and `db::tests` check that a script writes every row, binds
//! each statement's own parameters, and that a failing statement leaves the
//! transaction to roll back whole. If a later sqlx drops it, the SQLite arm
//! of [`Script::push`] stops joining statements and each becomes its own
//! round trip, as on PostgreSQL; nothing else changes.
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
//! SQLite's build: sqlx builds SQLite from source (libsqlite3-sys's
//! bundled copy), and `.cargo/config.toml` adds `SQLITE_DEFAULT_MEMSTATUS=0`
//! to its options, as SQLite's own list of recommended options does. With
//! memory statistics on, every allocation SQLite makes takes one global
//! mutex, shared by every connection of the process: locking and
//! unlocking it took 8.5% of kpi's writer thread in a profile of a
//! rebuild, and nothing after. Nothing here reads those statistics
//! (`sqlite3_memory_used`, the soft heap limit).
//!
//! Writers are serial on both backends: on SQLite the single connection does
//! it; on PostgreSQL a write transaction starts by locking the service's
//! `stream_head` row, which it would lock anyway to append its events. This
//! keeps read-modify-write units free of lost updates and event sequence
//! numbers gap-free. Several replicas of a service can run against one
//! PostgreSQL database (their writers take turns); scaling writes out later
//! means partitioning the stream (say, by subject), which nothing here rules out.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::Arguments;
use sqlx::any::{AnyArguments, AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, ConnectOptions, Executor};
use tokio::sync::watch;

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
    /// The event stream's head as this process last committed or read it,
    /// for the stream's long polls and consistency tokens
    /// ([`crate::events`]).
    head: Arc<watch::Sender<i64>>,
    /// Told of every commit of a writer, for [`Db::checkpoint_behind_writer`].
    commits: Arc<tokio::sync::Notify>,
}

/// Read connections a SQLite database gets unless the service asks for more.
///
/// SQLite runs each connection's statements on a thread of its own, so the
/// pool's size is how many reads run at once, and each connection holds a
/// page cache and prepared statements of its own. A department service's
/// reads are batched ([`crate::loader`]): with four readers GetLead ran no
/// faster than with two (0.52× the echo server either way). kpi's waterfall
/// makes five or six reads per call and asks for four: with two, 8 callers
/// of a split waterfall at 1,000,000 leads queued for them (p99 9-11 ms,
/// the cores 30% idle), with four p99 was 5-6 ms; eight were no faster.
pub const DEFAULT_READERS: u32 = 2;

/// Row counts a statement is built for, largest first: a batch's rows go in
/// one statement per 256, padded up to the next size here. Powers of two keep
/// the distinct statements (each prepared and cached per connection) few and
/// the padding under half; one statement per batch and table keeps the round
/// trips to SQLite's worker thread few (each costs ~46 µs).
pub const CHUNKS: [usize; 9] = [256, 128, 64, 32, 16, 8, 4, 2, 1];

impl Db {
    /// Connects to `url` (`sqlite://…` or `postgres://…`) with
    /// [`DEFAULT_READERS`]. A SQLite file and its directory are created if
    /// missing.
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        Self::connect_with_readers(url, DEFAULT_READERS).await
    }

    /// [`Db::connect`], with `readers` read connections on SQLite (on
    /// PostgreSQL reads share the one pool).
    pub async fn connect_with_readers(url: &str, readers: u32) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        if Self::is_sqlite_url(url) {
            Self::connect_sqlite(url, readers.max(1)).await
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
            Ok(Db {
                write: pool.clone(),
                read: pool,
                backend: Backend::Postgres,
                options,
                head: Default::default(),
                commits: Default::default(),
            })
        } else {
            anyhow::bail!("unsupported database url (expected sqlite:// or postgres://)")
        }
    }

    async fn connect_sqlite(url: &str, readers: u32) -> anyhow::Result<Db> {
        let url = with_create_mode(url);
        if let Some(dir) = sqlite_path(&url).and_then(|p| std::path::Path::new(p).parent().map(ToOwned::to_owned))
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let options = AnyConnectOptions::from_str(&url)
            .context("parsing the database url")?
            .log_statements(tracing::log::LevelFilter::Trace);
        // Page caches: 2 MiB for pooled connections (SQLite's default), 4
        // MiB for a writer's own connection ([`Db::open_writer`]), which
        // holds the index pages a batch touches. A page not cached is read
        // from the operating system's cache, which a profile of the write
        // path found cheap (under 1% of the writer's time); the writer's
        // cache, in contrast, is the service's own memory. With 16 MiB the
        // suite idled at 148 MiB after the bench's warm-up and peaked at 169
        // MiB in its overload burst; with 4 MiB, at 106-114 and 136-150 MiB
        // (three runs, with the allocator as it was then: see the themodel
        // binary's main.rs), at the same write throughput. Statement
        // journals stay in memory.
        //
        // Checkpoints: every commit appends the pages it dirtied to the WAL,
        // and a checkpoint copies them into the database file. Random keys
        // (ids, e-mail keys, request ids) dirty a page per index per insert,
        // and a hot page written many times between two checkpoints is
        // copied once. The copying runs beside the writer
        // ([`Db::checkpoint_behind_writer`]); SQLite's own checkpoint, run by
        // the committing connection, stays as the one that restarts the WAL
        // once it holds 16,000 pages (64 MB), by when little is left to
        // copy. The WAL file is then written over from its start and kept
        // at its size (journal_size_limit is above it): cutting it back
        // after each checkpoint, and growing it again page by page, cost
        // the writer 4% in truncation and more in the file system's block
        // allocation. Measured with the bench at 64 callers: the copying in
        // the writer's commits set CaptureLead's p99 at 95-107 ms; beside
        // it, 23-26 ms.
        let pool = |max: u32, cache_kib: i64| {
            AnyPoolOptions::new()
                .max_connections(max)
                .min_connections(1)
                .acquire_timeout(Duration::from_secs(30))
                // A local file cannot drop its connection; sqlx's default ping
                // before every acquire cost a worker round trip per batch and
                // per read (~10% of a write batch).
                .test_before_acquire(false)
                .after_connect(move |conn, _| Box::pin(sqlite_settings(conn, cache_kib)))
                .connect_with(options.clone())
        };
        let write = pool(1, 2_048).await.context("opening sqlite database")?;
        let read = pool(readers, 2_048).await.context("opening sqlite database")?;
        Ok(Db { write, read, backend: Backend::Sqlite, options, head: Default::default(), commits: Default::default() })
    }

    /// The highest event seq this process knows committed.
    pub fn stream_head(&self) -> i64 {
        *self.head.borrow()
    }

    /// Follows [`Db::stream_head`]: changes whenever this process commits
    /// events (other replicas' commits are found by reading).
    pub fn watch_stream_head(&self) -> watch::Receiver<i64> {
        self.head.subscribe()
    }

    /// Records that the stream reaches at least `seq`.
    pub fn stream_reached(&self, seq: i64) {
        self.head.send_if_modified(|head| {
            let moved = seq > *head;
            if moved {
                *head = seq;
            }
            moved
        });
    }

    /// Says a writer committed (its pages await a checkpoint).
    pub fn committed(&self) {
        self.commits.notify_one();
    }

    /// Whether `url` names a SQLite database (else PostgreSQL).
    pub fn is_sqlite_url(url: &str) -> bool {
        url.starts_with("sqlite:")
    }

    /// A service's migrations for the database at `url`: `portable`, and on
    /// SQLite also `sqlite_only`, merged in version order (the two share one
    /// sequence of versions, each used once).
    ///
    /// What only SQLite runs is storage layout PostgreSQL's grammar lacks,
    /// such as `WITHOUT ROWID` tables; the business logic and every query
    /// stay the same on both.
    pub fn for_backend(mut portable: Migrator, sqlite_only: Migrator, url: &str) -> Migrator {
        if Self::is_sqlite_url(url) {
            let mut all = portable.migrations.into_owned();
            all.extend(sqlite_only.migrations.iter().cloned());
            all.sort_by_key(|m| m.version);
            portable.migrations = Cow::Owned(all);
        }
        portable
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
    /// [`Db::open_writer`]), holding the write lock like [`Db::begin`], and
    /// counts it in `stream_head.writes`; returns the count (see
    /// [`crate::cache`]). The transaction is managed by hand, so that its
    /// `COMMIT` can end a [`Script`] (one round trip for a batch's writes and
    /// its commit); end it with a script that commits, or
    /// [`Db::rollback_writes`].
    pub async fn begin_writes(&self, conn: &mut Conn) -> Result<i64, sqlx::Error> {
        let (begun, _) = begin_and_select_in::<(String,)>(conn, self, "", "", &[]).await?;
        Ok(begun.writes)
    }

    /// Ends a transaction [`Db::begin_writes`] began, undoing it. Harmless
    /// when none is open (the failure was the commit itself).
    pub async fn rollback_writes(&self, conn: &mut Conn) -> Result<(), sqlx::Error> {
        match conn.execute("ROLLBACK").await {
            Ok(_) => Ok(()),
            // SQLite: "cannot rollback - no transaction is active"; PostgreSQL
            // only warns.
            Err(sqlx::Error::Database(e)) if e.message().contains("no transaction") => Ok(()),
            Err(e) => Err(e),
        }
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
        self.open(4_096).await
    }

    /// A read connection of a batched reader's own, outside the pools.
    pub async fn open_reader(&self) -> Result<Conn, sqlx::Error> {
        self.open(2_048).await
    }

    async fn open(&self, cache_kib: i64) -> Result<Conn, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = self.options.connect().await?;
                sqlite_settings(&mut conn, cache_kib).await?;
                Ok(conn)
            }
            Backend::Postgres => self.options.connect().await,
        }
    }

    /// On SQLite, copies committed pages from the WAL into the database
    /// file on a connection of its own, a moment after each commit, until
    /// `stop`; on PostgreSQL returns at once.
    ///
    /// A checkpoint run by the committing connection (SQLite's automatic
    /// one) stalls the writer for the copy and its `fsync`: a profile of
    /// the writer's worker thread at 64 callers capturing leads put 8% of
    /// its time there, and the commits that checkpointed set the p99. This
    /// one runs beside the writer: a PASSIVE checkpoint never blocks
    /// writers or readers, it copies what is committed and leaves the rest
    /// for its next turn. It cannot restart the WAL from its beginning
    /// (only a writer can, once every frame is copied), so the writer
    /// keeps SQLite's automatic checkpoint with a high threshold: when it
    /// fires, little is left to copy, and the WAL starts over.
    pub async fn checkpoint_behind_writer(self, stop: tokio_util::sync::CancellationToken) {
        if self.backend != Backend::Sqlite {
            return;
        }
        let mut conn = match self.open_reader().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the checkpointer's connection; the writer checkpoints alone");
                return;
            }
        };
        // What was committed before this started is copied first.
        self.committed();
        loop {
            tokio::select! {
                _ = self.commits.notified() => {}
                _ = stop.cancelled() => break,
            }
            if let Err(e) = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").await {
                tracing::debug!(error = %e, "checkpoint failed; retried after the next commit");
            }
            // Copying every commit's pages as it lands would copy a hot
            // page once per commit; waiting lets commits share a copy.
            tokio::select! {
                _ = tokio::time::sleep(CHECKPOINT_EVERY) => {}
                _ = stop.cancelled() => break,
            }
        }
        use sqlx::Connection;
        let _ = conn.close().await;
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
        values(self.backend, rows, cols, first)
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
        placeholder(self.backend, s, n);
    }

    /// Closes both pools, waiting for connections to be returned.
    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

fn placeholder(backend: Backend, s: &mut String, n: usize) {
    match backend {
        Backend::Sqlite => s.push('?'),
        Backend::Postgres => {
            s.push('$');
            s.push_str(&n.to_string());
        }
    }
}

/// See [`Db::values`].
fn values(backend: Backend, rows: usize, cols: usize, first: usize) -> String {
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
            placeholder(backend, &mut s, first + r * cols + c);
        }
        s.push(')');
    }
    s
}

/// The smallest size in [`CHUNKS`] that holds `n` rows or keys (capped at
/// the largest).
pub fn padded(n: usize) -> usize {
    CHUNKS.into_iter().rev().find(|c| *c >= n).unwrap_or(CHUNKS[0])
}

/// Parameters bound to a [`Script`] statement, in order.
pub struct Binds<'q> {
    args: AnyArguments<'q>,
    error: Option<sqlx::error::BoxDynError>,
}

impl<'q> Binds<'q> {
    fn new() -> Self {
        Binds { args: AnyArguments::default(), error: None }
    }

    /// Binds the next parameter. An encoding error is reported when the
    /// script runs, as with `sqlx::query(...).bind(...)`.
    pub fn bind<T>(mut self, value: T) -> Self
    where
        T: 'q + sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        if self.error.is_none()
            && let Err(e) = self.args.add(value)
        {
            self.error = Some(e);
        }
        self
    }

    /// Binds `value` if it was produced; otherwise the script fails with
    /// the error when it runs.
    pub fn bind_ok<T, E>(self, value: Result<T, E>) -> Self
    where
        T: 'q + sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
        E: Into<sqlx::error::BoxDynError>,
    {
        match value {
            Ok(v) => self.bind(v),
            Err(e) => {
                let mut b = self;
                b.error.get_or_insert(e.into());
                b
            }
        }
    }
}

/// A column's value, as [`Script::upsert`] compares and binds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'q> {
    Int(i64),
    OptInt(Option<i64>),
    Text(Cow<'q, str>),
    OptText(Option<Cow<'q, str>>),
    Bytes(Cow<'q, [u8]>),
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<i32> for Value<'_> {
    fn from(v: i32) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<Option<i64>> for Value<'_> {
    fn from(v: Option<i64>) -> Self {
        Value::OptInt(v)
    }
}

impl<'q> From<&'q str> for Value<'q> {
    fn from(v: &'q str) -> Self {
        Value::Text(Cow::Borrowed(v))
    }
}

impl From<String> for Value<'_> {
    fn from(v: String) -> Self {
        Value::Text(Cow::Owned(v))
    }
}

impl<'q> From<Option<&'q str>> for Value<'q> {
    fn from(v: Option<&'q str>) -> Self {
        Value::OptText(v.map(Cow::Borrowed))
    }
}

impl From<Option<String>> for Value<'_> {
    fn from(v: Option<String>) -> Self {
        Value::OptText(v.map(Cow::Owned))
    }
}

impl<'q> Binds<'q> {
    /// Binds a [`Value`].
    pub fn value(self, v: Value<'q>) -> Self {
        match v {
            Value::Int(i) => self.bind(i),
            Value::OptInt(i) => self.bind(i),
            Value::Text(Cow::Borrowed(t)) => self.bind(t),
            Value::Text(Cow::Owned(t)) => self.bind(t),
            Value::OptText(None) => self.bind(Option::<String>::None),
            Value::OptText(Some(Cow::Borrowed(t))) => self.bind(Some(t)),
            Value::OptText(Some(Cow::Owned(t))) => self.bind(Some(t)),
            Value::Bytes(Cow::Borrowed(b)) => self.bind(b),
            Value::Bytes(Cow::Owned(b)) => self.bind(b),
        }
    }
}

/// A table [`Script::upsert`] writes: its columns, the first `key` of which
/// are its primary key.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [&'static str],
    pub key: usize,
}

/// Parameters a SQLite script may have and still be kept prepared on its
/// connection.
///
/// A script's text, and so its prepared form, is one of many combinations
/// of padded statement sizes, and sqlx keeps the last 100 per connection.
/// Kept without a bound, the large ones (a batch of hundreds of units, as
/// under overload, or an ingest message of thousands of items) piled up:
/// in the bench's overload burst SQLite's heap grew from 28 to 88 MiB, all
/// of it prepared scripts, and stayed there. A larger script is prepared
/// each time it runs, a cost shared by the units of its batch; with 512 the
/// suite's memory after the burst settled within 17% of before (2,048:
/// 26%), and the write phases' throughput stayed within the bench's
/// run-to-run noise. The same holds for lookups ([`select_in`]).
pub const KEPT_PARAMS: usize = 512;

/// Parameters a statement of a [`Script::by_statement`] may have and still
/// be kept prepared. sqlx keeps the last 100 statements per connection, so
/// this bounds what they hold.
pub const KEPT_STATEMENT_PARAMS: usize = 2048;

/// The writes of one transaction, collected and then run in order.
///
/// On SQLite the statements are joined (unless the script was made
/// [`Script::by_statement`]) into one multi-statement query: one
/// round trip to the connection's worker thread for the whole script (sqlx
/// binds the parameters of each statement in turn), where a round trip per
/// statement made the waits, not SQLite's work, most of a batch's time. On
/// PostgreSQL, whose protocol prepares one statement at a time, they run one
/// by one. Statements use `?` placeholders on SQLite ([`Db::values`],
/// [`Db::list`], [`Db::param`]): numbered ones would count from the start of
/// the whole script.
pub struct Script<'q> {
    backend: Backend,
    /// Whether SQLite statements are joined (see [`Script::by_statement`]).
    joined: bool,
    statements: Vec<(String, Binds<'q>)>,
}

impl<'q> Script<'q> {
    pub fn new(db: &Db) -> Self {
        Script { backend: db.backend, joined: db.backend == Backend::Sqlite, statements: Vec::new() }
    }

    /// A script whose statements run one by one on SQLite too, each kept
    /// prepared on the connection when it has at most
    /// [`KEPT_STATEMENT_PARAMS`] parameters.
    ///
    /// For scripts whose shape varies from run to run, as kpi's pages do:
    /// their joined text seldom repeats, so it was parsed and compiled every
    /// time (a third of kpi's SQLite thread while the bench captured
    /// leads), while each statement, a table's padded insert, does repeat.
    /// A statement's own round trip costs far less than compiling it: kpi
    /// rebuilt 100,000 leads at 24.8k-27.7k events/s against 23.0k-25.3k
    /// (three runs each), and the suite, warmed up in the bench's overload
    /// phase, held 58 MiB rather than 66-67.
    pub fn by_statement(db: &Db) -> Self {
        Script { backend: db.backend, joined: false, statements: Vec::new() }
    }

    /// Adds a statement; `bind` binds its parameters.
    pub fn push(&mut self, sql: &str, bind: impl FnOnce(Binds<'q>) -> Binds<'q>) {
        match (self.joined, self.statements.last_mut()) {
            (true, Some((text, binds))) => {
                text.push_str(";\n");
                text.push_str(sql);
                let taken = std::mem::replace(binds, Binds::new());
                *binds = bind(taken);
            }
            _ => self.statements.push((sql.to_owned(), bind(Binds::new()))),
        }
    }

    /// Inserts `rows`, one statement per 256: `into` is `INSERT INTO t (a, b)`,
    /// `tail` what follows the rows (an `ON CONFLICT` clause, or empty), `bind`
    /// binds one row's `cols` values.
    ///
    /// Each statement is padded to a size in [`CHUNKS`] so that its text, and
    /// so its prepared form, is shared by every batch of that size: the rows
    /// are selected from a `VALUES` list whose first column is the row's
    /// position in the statement (from 1), or 0 for a padding row, which
    /// repeats the last row. `INSERT INTO t (a, b) SELECT column2, column3
    /// FROM (VALUES (?, ?, ?), …) AS v WHERE column1 > 0` reads the same on
    /// SQLite and PostgreSQL (both name the columns of a `VALUES` list
    /// `column1`, `column2`, …; SQLite needs the `WHERE` before an
    /// `ON CONFLICT`).
    pub fn insert_rows<R: Clone>(
        &mut self,
        into: &str,
        cols: usize,
        tail: &str,
        rows: impl IntoIterator<Item = R>,
        bind: impl Fn(Binds<'q>, R) -> Binds<'q>,
    ) {
        let select: Vec<String> = (2..cols + 2).map(|c| format!("column{c}")).collect();
        self.insert_select(into, &select.join(", "), cols, tail, rows, bind);
    }

    /// Writes changed rows of `table`, each given as what the database holds
    /// (`None` for a new row) and what it should hold, column by column.
    ///
    /// New rows are inserted (a key that exists after all is an error, not
    /// an overwrite). A changed row sets only the columns that changed: on
    /// SQLite an `UPDATE` rewrites the entries of every index on a column it
    /// sets, changed or not, and setting every column tripled the pages a
    /// touch dirtied (a lead's status index, for one). Rows with the same
    /// changed columns share a statement; unchanged rows are skipped.
    pub fn upsert(&mut self, table: &Table, rows: impl IntoIterator<Item = (Option<Vec<Value<'q>>>, Vec<Value<'q>>)>) {
        let mut inserts: Vec<Vec<Value<'q>>> = Vec::new();
        let mut updates: std::collections::BTreeMap<u64, Vec<Vec<Value<'q>>>> = Default::default();
        for (before, after) in rows {
            match before {
                None => inserts.push(after),
                Some(before) => {
                    let changed = before
                        .iter()
                        .zip(&after)
                        .enumerate()
                        .skip(table.key)
                        .filter(|(_, (b, a))| b != a)
                        .fold(0u64, |mask, (i, _)| mask | 1 << i);
                    if changed != 0 {
                        updates.entry(changed).or_default().push(after);
                    }
                }
            }
        }
        let into = format!("INSERT INTO {} ({})", table.name, table.columns.join(", "));
        let cols = table.columns.len();
        let bind = |b: Binds<'q>, row: Vec<Value<'q>>| row.into_iter().fold(b, Binds::value);
        self.insert_rows(&into, cols, "", inserts, bind);
        for (mask, rows) in updates {
            let set: Vec<String> = (0..cols)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| format!("{c} = excluded.{c}", c = table.columns[i]))
                .collect();
            let tail =
                format!(" ON CONFLICT ({}) DO UPDATE SET {}", table.columns[..table.key].join(", "), set.join(", "));
            self.insert_rows(&into, cols, &tail, rows, bind);
        }
    }

    /// [`Script::insert_rows`] with the select list written out: `select`
    /// names the row's values `column2` to `column<cols + 1>`, and may use
    /// its position, `column1`.
    pub fn insert_select<R: Clone>(
        &mut self,
        into: &str,
        select: &str,
        cols: usize,
        tail: &str,
        rows: impl IntoIterator<Item = R>,
        bind: impl Fn(Binds<'q>, R) -> Binds<'q>,
    ) {
        let rows: Vec<R> = rows.into_iter().collect();
        // A statement that writes many rows and may fail half-way keeps a
        // statement journal on SQLite, to undo its own rows (8% of a write
        // batch's time in a profile). A script never needs that: a failed
        // statement fails the script, and its whole transaction is rolled
        // back. `OR FAIL` stops at the failing row without undoing the
        // earlier ones, so SQLite keeps no journal; upserts still apply
        // their `ON CONFLICT` clause.
        let into = match self.backend {
            Backend::Sqlite => Cow::Owned(into.replacen("INSERT INTO", "INSERT OR FAIL INTO", 1)),
            Backend::Postgres => Cow::Borrowed(into),
        };
        for part in rows.chunks(CHUNKS[0]) {
            let size = padded(part.len());
            let sql = format!(
                "{into} SELECT {select} FROM (VALUES {}) AS v WHERE column1 > 0{tail}",
                values(self.backend, size, cols + 1, 1)
            );
            self.push(&sql, |mut b| {
                for i in 0..size {
                    let position = if i < part.len() { i64::try_from(i + 1).unwrap_or(0) } else { 0 };
                    b = bind(b.bind(position), part[i.min(part.len() - 1)].clone());
                }
                b
            });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    /// The placeholder of parameter `n` of a statement (see [`Db::param`]).
    pub fn param(&self, n: usize) -> String {
        let mut s = String::new();
        placeholder(self.backend, &mut s, n);
        s
    }

    /// Runs the statements in order on `conn`, stopping at the first error.
    pub async fn run(self, conn: &mut Conn) -> Result<(), sqlx::Error> {
        let bound = if self.joined { KEPT_PARAMS } else { KEPT_STATEMENT_PARAMS };
        let backend = self.backend;
        self.run_with(conn, |_, binds| backend == Backend::Postgres || binds <= bound).await
    }

    /// [`Script::run`] on a connection whose prepared scripts `kept` budgets.
    pub async fn run_keeping(self, conn: &mut Conn, kept: &mut Kept) -> Result<(), sqlx::Error> {
        let backend = self.backend;
        self.run_with(conn, |sql, binds| backend == Backend::Postgres || kept.admit(sql, binds)).await
    }

    async fn run_with(self, conn: &mut Conn, mut keep: impl FnMut(&str, usize) -> bool) -> Result<(), sqlx::Error> {
        for (sql, binds) in self.statements {
            if let Some(e) = binds.error {
                return Err(sqlx::Error::Encode(e));
            }
            let keep = keep(&sql, binds.args.len());
            sqlx::query_with(&sql, binds.args).persistent(keep).execute(&mut *conn).await?;
        }
        Ok(())
    }
}

/// The scripts a writer's own connection keeps prepared, within a budget of
/// parameters.
///
/// A writer's script is its whole batch, so at steady load its text repeats
/// from batch to batch (the row counts are padded, [`CHUNKS`]) but holds
/// more parameters than [`KEPT_PARAMS`]: every batch of 27 captures was
/// parsed and compiled again, 17% of the SQLite thread's time. Kept
/// instead, over five alternating bench runs each, CaptureLead averaged
/// 8.9k/s against 8.5k/s and RecordTouch 11.9k/s against 10.9k/s. Kept
/// without a bound, an overload burst's many batch shapes stayed prepared
/// after it: the suite's memory 10 s after the bench's burst was 54-57%
/// above its warmed-up size; with this budget, 17-22%.
///
/// So a script is kept while the texts kept so far and it hold at most
/// [`Kept::BUDGET`] parameters, and prepared for one run otherwise. Once
/// the budget is spent and [`Kept::PATIENCE`] scripts in a row were turned
/// away, the load has changed shape: [`Kept::stale`] tells the writer to
/// close the connection, dropping what it kept, and open a new one.
#[derive(Debug, Default)]
pub struct Kept {
    /// Hashes of the texts kept on the connection.
    texts: std::collections::HashSet<u64>,
    hasher: std::hash::RandomState,
    /// Their parameters, all told.
    params: usize,
    /// Scripts turned away in a row since the budget was spent.
    refused: usize,
}

impl Kept {
    pub const BUDGET: usize = 16_384;
    pub const PATIENCE: usize = 256;

    /// Whether to keep `sql`, a script of `binds` parameters, prepared.
    fn admit(&mut self, sql: &str, binds: usize) -> bool {
        use std::hash::BuildHasher;
        let text = self.hasher.hash_one(sql);
        if self.texts.contains(&text) {
            self.refused = 0;
            return true;
        }
        if self.params.saturating_add(binds) <= Self::BUDGET {
            self.texts.insert(text);
            self.params += binds;
            return true;
        }
        self.refused += 1;
        false
    }

    /// Whether the connection should be opened anew (see [`Kept`]).
    pub fn stale(&self) -> bool {
        self.refused >= Self::PATIENCE
    }
}

/// The background checkpointer's pause between two checkpoints.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);

/// Keys per `IN (...)` list, at most; a lookup's list is padded to a power
/// of two up to it by repeating its last key, so lookups use few distinct
/// statements.
pub const KEYS: usize = 1024;

/// The smallest power of two that holds `n` keys (capped at [`KEYS`]).
pub fn padded_keys(n: usize) -> usize {
    n.max(1).next_power_of_two().min(KEYS)
}

/// Runs `SELECT ... WHERE <col> IN (...)` over `keys` in padded chunks and
/// collects every row: `sql` holds the text before the list, `after` the text
/// after it (may be empty). `conn` is a transaction or a pooled connection.
/// On SQLite the chunks go in one multi-statement query (one round trip).
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
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    if db.backend == Backend::Postgres {
        let mut out = Vec::new();
        for part in keys.chunks(KEYS) {
            let size = padded_keys(part.len());
            let text = format!("{sql}{}{after}", db.list(size, 1));
            let mut q = sqlx::query_as::<_, R>(&text);
            for i in 0..size {
                q = q.bind(part[i.min(part.len() - 1)]);
            }
            out.extend(q.fetch_all(&mut *conn).await?);
        }
        return Ok(out);
    }
    let (text, binds) = lookup_text(db, sql, after, keys);
    let mut q = sqlx::query_as::<_, R>(&text).persistent(binds.len() <= KEPT_PARAMS);
    for key in binds {
        q = q.bind(key);
    }
    q.fetch_all(&mut *conn).await
}

/// Where a write transaction began: its count in `stream_head.writes` (see
/// [`crate::cache`]) and the event stream's head before it appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begun {
    pub writes: i64,
    pub seq: i64,
}

/// [`select_in`] as the first statement of the writer's transaction: begins
/// it ([`Db::begin_writes`]) in the same round trip on SQLite, and returns
/// where it began with the rows.
pub async fn begin_and_select_in<R>(
    conn: &mut Conn,
    db: &Db,
    sql: &str,
    after: &str,
    keys: &[&str],
) -> Result<(Begun, Vec<R>), sqlx::Error>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
{
    const COUNT: &str = "UPDATE stream_head SET writes = writes + 1 WHERE id = 1 RETURNING writes, seq";
    if db.backend == Backend::Postgres {
        // One round trip (the simple-query protocol takes several
        // statements when they have no parameters), then the lookup.
        let counted = conn.fetch_all(format!("BEGIN; {COUNT}").as_str()).await?;
        let begun = begun(counted.first())?;
        return Ok((begun, select_in(conn, db, sql, after, keys).await?));
    }
    let (text, binds) = lookup_text(db, sql, after, keys);
    let text = if text.is_empty() {
        format!("BEGIN IMMEDIATE;\n{COUNT}")
    } else {
        format!("BEGIN IMMEDIATE;\n{COUNT};\n{text}")
    };
    let mut q = sqlx::query(&text).persistent(binds.len() <= KEPT_PARAMS);
    for key in binds {
        q = q.bind(key);
    }
    let rows = q.fetch_all(&mut *conn).await?;
    let begun = begun(rows.first())?;
    let found = rows.iter().skip(1).map(R::from_row).collect::<Result<_, _>>()?;
    Ok((begun, found))
}

fn begun(row: Option<&sqlx::any::AnyRow>) -> Result<Begun, sqlx::Error> {
    use sqlx::Row;
    let row = row.ok_or_else(|| sqlx::Error::RowNotFound)?;
    Ok(Begun { writes: row.try_get(0)?, seq: row.try_get(1)? })
}

/// On SQLite: the statements of a lookup of `keys`, one per chunk, as one
/// query, and its parameters.
fn lookup_text<'k>(db: &Db, sql: &str, after: &str, keys: &[&'k str]) -> (String, Vec<&'k str>) {
    let mut text = String::new();
    let mut binds = Vec::new();
    for part in keys.chunks(KEYS) {
        let size = padded_keys(part.len());
        if !text.is_empty() {
            text.push_str(";\n");
        }
        text.push_str(sql);
        text.push_str(&db.list(size, 1));
        text.push_str(after);
        binds.extend((0..size).map(|i| part[i.min(part.len() - 1)]));
    }
    (text, binds)
}

/// The settings every SQLite connection of a service runs with.
async fn sqlite_settings(conn: &mut Conn, cache_kib: i64) -> Result<(), sqlx::Error> {
    conn.execute(
        format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000; \
             PRAGMA foreign_keys = ON; PRAGMA cache_size = -{cache_kib}; PRAGMA temp_store = MEMORY; \
             PRAGMA wal_autocheckpoint = 16000; PRAGMA journal_size_limit = 134217728;"
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

    #[tokio::test]
    async fn sqlite_runs_its_own_migrations_in_version_order_with_the_portable_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let migrator = |name: &str, files: &[&str]| {
            let path = dir.path().join(name);
            std::fs::create_dir(&path).expect("mkdir");
            for f in files {
                std::fs::write(path.join(f), "SELECT 1;").expect("write");
            }
            async move { Migrator::new(path).await.expect("migrator") }
        };
        let versions = |m: &Migrator| m.migrations.iter().map(|m| m.version).collect::<Vec<_>>();
        let portable = migrator("portable", &["100_a.sql", "102_c.sql"]).await;
        let sqlite = migrator("sqlite", &["101_b.sql", "103_d.sql"]).await;
        let on_sqlite = Db::for_backend(portable, sqlite, "sqlite://x.db");
        assert_eq!(versions(&on_sqlite), [100, 101, 102, 103]);
        let portable = migrator("portable2", &["100_a.sql", "102_c.sql"]).await;
        let sqlite = migrator("sqlite2", &["101_b.sql"]).await;
        assert_eq!(versions(&Db::for_backend(portable, sqlite, "postgres://db/x")), [100, 102]);
    }

    #[tokio::test]
    async fn committed_pages_reach_the_database_file_without_the_writer_checkpointing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.db");
        let db = Db::connect(&format!("sqlite://{}", path.display())).await.expect("db");
        sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT NOT NULL)").execute(db.writer()).await.expect("table");
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(db.writer()).await.expect("checkpoint");
        let size = || std::fs::metadata(&path).expect("database file").len();
        let before = size();
        let mut script = Script::new(&db);
        script.insert_rows("INSERT INTO t (k, v)", 2, "", 0..500, |b, i| b.bind(format!("k{i}")).bind("x".repeat(100)));
        let mut conn = db.writer().acquire().await.expect("connection");
        sqlx::query("BEGIN").execute(&mut *conn).await.expect("begin");
        script.push("COMMIT", |b| b);
        script.run(&mut conn).await.expect("write");
        assert_eq!(size(), before, "the commit left its pages in the WAL");

        let stop = tokio_util::sync::CancellationToken::new();
        let checkpointer = tokio::spawn(db.clone().checkpoint_behind_writer(stop.clone()));
        db.committed();
        let grown = async {
            while size() <= before {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), grown).await.expect("the checkpointer copied the pages");
        stop.cancel();
        checkpointer.await.expect("checkpointer stops");
        assert_eq!(count(&db, "SELECT COUNT(*) FROM t").await, 500);
    }

    const T: Table = Table { name: "t", columns: &["k", "a", "b", "c"], key: 1 };

    fn row(k: &str, a: i64, b: &str, c: Option<i64>) -> Vec<Value<'static>> {
        vec![Value::from(k.to_owned()), a.into(), Value::from(b.to_owned()), c.into()]
    }

    async fn count(db: &Db, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(db.reader()).await.expect("query")
    }

    /// Runs `script` and commits, on the writer's own connection.
    async fn commit(db: &Db, conn: &mut Conn, mut script: Script<'_>) -> Result<(), sqlx::Error> {
        conn.execute("BEGIN IMMEDIATE").await?;
        script.push("COMMIT", |b| b);
        let result = script.run(conn).await;
        if result.is_err() {
            db.rollback_writes(conn).await?;
        }
        result
    }

    /// A database with table `t` ([`T`]) and a writer's connection to it,
    /// and 300 rows for it: a statement of 256 and one of 44 padded to 64.
    async fn table_t() -> (tempfile::TempDir, Db, Conn, Vec<Vec<Value<'static>>>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::connect(&format!("sqlite://{}/t.db", dir.path().display())).await.expect("db");
        for ddl in [
            "CREATE TABLE t (k TEXT PRIMARY KEY, a BIGINT NOT NULL, b TEXT NOT NULL, c BIGINT)",
            // Counts the updates that set column a, changed or not.
            "CREATE TABLE sets_of_a (n BIGINT NOT NULL)",
            "CREATE TRIGGER count_a AFTER UPDATE OF a ON t BEGIN INSERT INTO sets_of_a VALUES (1); END",
        ] {
            sqlx::query(ddl).execute(db.writer()).await.expect("ddl");
        }
        let conn = db.open_writer().await.expect("conn");
        let rows = (0..300).map(|i| row(&format!("k{i:03}"), i, "x", None)).collect();
        (dir, db, conn, rows)
    }

    #[tokio::test]
    async fn scripts_insert_in_padded_chunks_and_update_only_what_changed() {
        let (_dir, db, mut conn, rows) = table_t().await;
        let mut script = Script::new(&db);
        script.upsert(&T, rows.iter().map(|r| (None, r.clone())));
        assert_eq!(script.statements.len(), 1, "on SQLite, one query");
        assert_eq!(script.statements[0].0.matches("INSERT OR FAIL INTO t ").count(), 2, "of two statements");
        commit(&db, &mut conn, script).await.expect("insert");
        assert_eq!(count(&db, "SELECT COUNT(*) FROM t").await, 300, "padding rows are not inserted");
        assert_eq!(count(&db, "SELECT SUM(a) FROM t").await, (0..300).sum::<i64>());

        // k000 changes b, k001 changes c, k002 is put back unchanged, k300 is new.
        let mut script = Script::new(&db);
        script.upsert(
            &T,
            [
                (Some(rows[0].clone()), row("k000", 0, "y", None)),
                (Some(rows[1].clone()), row("k001", 1, "x", Some(7))),
                (Some(rows[2].clone()), rows[2].clone()),
                (None, row("k300", 300, "z", None)),
            ],
        );
        commit(&db, &mut conn, script).await.expect("upsert");
        assert_eq!(count(&db, "SELECT COUNT(*) FROM t").await, 301);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM t WHERE b = 'y' OR c = 7").await, 2);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM sets_of_a").await, 0, "no update set the unchanged column");

        // A "new" row whose key exists is an error, not an overwrite, and
        // what the script did before it is rolled back.
        let mut script = Script::new(&db);
        script.upsert(&T, [(Some(rows[3].clone()), row("k003", 3, "w", None))]);
        script.upsert(&T, [(None, row("k004", -1, "w", None))]);
        assert!(commit(&db, &mut conn, script).await.is_err());
        assert_eq!(count(&db, "SELECT COUNT(*) FROM t WHERE b = 'w' OR a = -1").await, 0);
    }

    #[tokio::test]
    async fn a_script_by_statement_writes_every_row_and_fails_whole() {
        let (_dir, db, mut conn, rows) = table_t().await;
        let mut script = Script::by_statement(&db);
        script.upsert(&T, rows.iter().map(|r| (None, r.clone())));
        assert_eq!(script.statements.len(), 2, "one query per statement");
        commit(&db, &mut conn, script).await.expect("insert");
        assert_eq!(count(&db, "SELECT SUM(a) FROM t").await, (0..300).sum::<i64>());

        // The second statement fails: the first one's row goes with it.
        let mut script = Script::by_statement(&db);
        script.upsert(&T, [(None, row("k300", -1, "w", None))]);
        script.upsert(&T, [(None, row("k000", -1, "w", None))]);
        assert!(commit(&db, &mut conn, script).await.is_err());
        assert_eq!(count(&db, "SELECT COUNT(*) FROM t WHERE a = -1").await, 0);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM t").await, 300);
    }

    #[test]
    fn a_writer_keeps_scripts_within_its_budget_and_starts_afresh_when_the_load_changes_shape() {
        let mut kept = Kept::default();
        let half = Kept::BUDGET / 2;
        assert!(kept.admit("a", half));
        assert!(kept.admit("b", half));
        // Known texts stay kept; a new one no longer fits.
        assert!(kept.admit("a", half));
        assert!(!kept.admit("c", 1));
        assert!(!kept.admit(&"x".repeat(3), Kept::BUDGET + 1));
        // A kept text in between means the load still has its shape.
        assert!(kept.admit("b", half));
        for i in 0..Kept::PATIENCE - 1 {
            assert!(!kept.admit(&format!("new {i}"), 1));
            assert!(!kept.stale());
        }
        assert!(!kept.admit("one more", 1));
        assert!(kept.stale());
        // A script larger than the whole budget is never kept.
        assert!(!Kept::default().admit("big", Kept::BUDGET + 1));
    }

    #[test]
    fn padding() {
        assert_eq!(padded_keys(0), 1);
        assert_eq!(padded_keys(3), 4);
        assert_eq!(padded_keys(5000), KEYS);
        assert_eq!(padded(1), 1);
        assert_eq!(padded(5), 8);
        assert_eq!(padded(30), 32);
        assert_eq!(padded(300), 256);
    }
}
