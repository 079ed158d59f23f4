//! Persistence through diesel, on SQLite (the embedded default) or PostgreSQL.
//!
//! [`Db`] owns a small connection pool for reads and one writer thread that commits writes in
//! groups (see [`writer`]). Queries are written once with diesel's DSL; where a backend needs
//! its own SQL (`ON CONFLICT`, `FOR UPDATE`) the code dispatches on the inner connection with
//! [`on_backend!`] instead of building SQL strings. Blocking diesel calls go through
//! `spawn_blocking` or the writer thread, keeping the span; the one exception is a SQLite read
//! that finds a pooled connection free, which runs in place (see [`Db::read`]).

pub mod accounts;
pub mod deliveries;
pub mod schema;
pub mod settings;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use diesel::r2d2::{self, ManageConnection, Pool};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness as _, embed_migrations};
use tracing::Span;

use crate::error::Error;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Serializes start-up set-up (migrations, the first account) across processes sharing one
/// PostgreSQL database.
const MIGRATION_LOCK_KEY: i64 = 0x1e7e_b00c_5e77_1175;

/// How long a SQLite connection waits for another process's write lock before giving up.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 5_000;

/// One connection to either backend.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    /// PostgreSQL.
    Postgresql(diesel::PgConnection),
    /// SQLite.
    Sqlite(diesel::SqliteConnection),
}

/// Runs the same diesel code against the concrete connection inside a [`DbConnection`]: for
/// the statements `MultiConnection` cannot express (`ON CONFLICT`, `FOR UPDATE`), and for hot
/// queries, which the concrete connection finds in its statement cache by their static query
/// id instead of rebuilding their SQL on every call (BENCHMARKS.md, P2).
#[macro_export]
macro_rules! on_backend {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::storage::DbConnection::Postgresql($c) => $body,
            $crate::storage::DbConnection::Sqlite($c) => $body,
        }
    };
}
pub use on_backend;

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// A parsed `--database-url`.
#[derive(Clone)]
pub struct DatabaseUrl {
    backend: Backend,
    target: String,
}

impl DatabaseUrl {
    /// Parses `sqlite://PATH`, `postgres://...`/`postgresql://...`, or a bare file path
    /// (SQLite).
    pub fn parse(url: &str) -> Result<Self, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self {
                backend: Backend::Postgres,
                target: url.to_owned(),
            });
        }
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        if path.is_empty() {
            return Err("the SQLite path is empty; use sqlite://PATH".to_owned());
        }
        if path.contains("://") {
            return Err(
                "unsupported database URL scheme; use sqlite://PATH or postgres://...".to_owned(),
            );
        }
        Ok(Self {
            backend: Backend::Sqlite,
            target: path.to_owned(),
        })
    }

    /// The backend it names.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A printable form: for PostgreSQL the password is left out.
    pub fn redacted(&self) -> String {
        match self.backend {
            Backend::Sqlite => format!("sqlite://{}", self.target),
            Backend::Postgres => match url::Url::parse(&self.target) {
                Ok(mut u) => {
                    if u.password().is_some() {
                        let _ = u.set_password(Some("***"));
                    }
                    u.to_string()
                }
                Err(_) => "postgres://(unparsable)".to_owned(),
            },
        }
    }

    /// Opens one connection, configured as the service needs it.
    pub fn connect(&self) -> ConnectionResult<DbConnection> {
        match self.backend {
            Backend::Postgres => diesel::PgConnection::establish(&self.target).map(Into::into),
            Backend::Sqlite => {
                let mut conn = diesel::SqliteConnection::establish(&self.target)?;
                // WAL lets readers run beside the writer; FULL makes every acknowledged commit
                // survive power loss; the busy timeout turns lock contention into waiting.
                conn.batch_execute(&format!(
                    "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS};
                     PRAGMA journal_mode = WAL;
                     PRAGMA synchronous = FULL;
                     PRAGMA foreign_keys = ON;"
                ))
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
                Ok(conn.into())
            }
        }
    }
}

impl From<diesel::PgConnection> for DbConnection {
    fn from(c: diesel::PgConnection) -> Self {
        DbConnection::Postgresql(c)
    }
}

impl From<diesel::SqliteConnection> for DbConnection {
    fn from(c: diesel::SqliteConnection) -> Self {
        DbConnection::Sqlite(c)
    }
}

/// Applies the embedded migrations that are not applied yet. Safe when several processes
/// start at once against one PostgreSQL: see [`with_setup_lock`].
pub fn migrate(conn: &mut DbConnection) -> anyhow::Result<()> {
    with_setup_lock(conn, migrate_unlocked)
}

/// Runs `f` while holding a lock that every starting process takes on PostgreSQL (an advisory
/// lock), so that migrations and first-start set-up run once even when several instances start
/// together. SQLite serves one process and needs none.
pub fn with_setup_lock<T>(
    conn: &mut DbConnection,
    f: impl FnOnce(&mut DbConnection) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    if !matches!(conn, DbConnection::Postgresql(_)) {
        return f(conn);
    }
    diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")).execute(conn)?;
    let result = f(conn);
    diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")).execute(conn)?;
    result
}

/// [`migrate`] for a caller that already holds [`with_setup_lock`].
pub fn migrate_unlocked(conn: &mut DbConnection) -> anyhow::Result<()> {
    let result = match conn {
        DbConnection::Postgresql(pg) => pg.run_pending_migrations(POSTGRES_MIGRATIONS).map(drop),
        DbConnection::Sqlite(lite) => lite.run_pending_migrations(SQLITE_MIGRATIONS).map(drop),
    };
    result.map_err(|e| anyhow::anyhow!("migration failed: {e}"))
}

/// Takes the lock that makes one server process the only one serving a SQLite file.
///
/// The delivery worker treats every lease it finds at start-up as left behind by a dead
/// predecessor, which is only true when no other process serves the same file. The lock is an
/// OS file lock on `<path>.serve-lock`, released by the OS when the process ends, however it
/// ends. (SQLite's own locks live on the database file; a second descriptor on that file would
/// drop them, hence the separate file.)
fn lock_sqlite_for_serving(path: &str) -> anyhow::Result<std::fs::File> {
    // The lock sits beside the file's real path, so that a symlink or another spelling of the
    // path cannot open a second lock on the same database.
    let lock_path = format!("{}.serve-lock", real_path(path));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| anyhow::anyhow!("cannot create {lock_path}: {e}"))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(anyhow::anyhow!(
            "another interview-webhooks server is serving {path} (it holds {lock_path}); \
             a SQLite database is served by one process: stop the other one, or use \
             PostgreSQL to run several"
        )),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(anyhow::anyhow!("cannot lock {lock_path}: {e}"))
        }
    }
}

/// `path` with symlinks and relative parts resolved, also before the file exists (its
/// directory must); as given when it cannot be resolved.
fn real_path(path: &str) -> String {
    let path = std::path::Path::new(path);
    let resolved = std::fs::canonicalize(path).or_else(|_| {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        let name = path.file_name().ok_or(std::io::ErrorKind::InvalidInput)?;
        std::fs::canonicalize(dir).map(|d| d.join(name))
    });
    resolved.map_or_else(|_| path.display().to_string(), |p| p.display().to_string())
}

/// A trivial round trip, for health checks.
pub fn ping(conn: &mut DbConnection) -> Result<(), Error> {
    conn.batch_execute("SELECT 1")?;
    Ok(())
}

/// Rewrites the one row of `health_probe`: succeeds only if the database takes writes.
pub fn probe_write(conn: &mut DbConnection, now: i64) -> Result<(), Error> {
    // `now` is an integer, so formatting it into the statement cannot inject anything; the
    // statement is the same on both backends.
    conn.batch_execute(&format!(
        "INSERT INTO health_probe (id, checked_at) VALUES (1, {now}) \
         ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at"
    ))?;
    Ok(())
}

/// The current time in Unix milliseconds, the unit of every stored time.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Opens pooled connections for one [`DatabaseUrl`].
pub struct Manager(DatabaseUrl);

/// A connection borrowed from the pool; returned when dropped.
pub type PooledConn = r2d2::PooledConnection<Manager>;

impl ManageConnection for Manager {
    type Connection = DbConnection;
    type Error = ConnectionError;

    fn connect(&self) -> Result<DbConnection, ConnectionError> {
        self.0.connect()
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), ConnectionError> {
        conn.batch_execute("SELECT 1")
            .map_err(ConnectionError::CouldntSetupConfiguration)
    }

    fn has_broken(&self, _conn: &mut DbConnection) -> bool {
        false
    }
}

/// Handle to the database: a read pool and the group-commit writer. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    backend: Backend,
    pool: Pool<Manager>,
    writer: writer::Writer,
    /// SQLite only: held while any handle lives, so a second server cannot open the file.
    _serve_lock: Option<Arc<std::fs::File>>,
}

impl Db {
    /// Opens the pool and starts the writer. Fails when the database cannot be reached.
    pub fn open(url: &DatabaseUrl) -> anyhow::Result<Self> {
        let serve_lock = match url.backend {
            Backend::Sqlite => Some(Arc::new(lock_sqlite_for_serving(&url.target)?)),
            Backend::Postgres => None,
        };
        let size = match url.backend {
            Backend::Sqlite => 4,
            Backend::Postgres => 8,
        };
        let pool = Pool::builder()
            .max_size(size)
            .connection_timeout(Duration::from_secs(5))
            // A SQLite file connection cannot drop; checking it costs a statement per read.
            .test_on_check_out(url.backend == Backend::Postgres)
            .build(Manager(url.clone()))?;
        let writer = writer::Writer::start(pool.clone(), url.backend);
        Ok(Self {
            backend: url.backend,
            pool,
            writer,
            _serve_lock: serve_lock,
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Runs read-only work on a pooled connection.
    ///
    /// On SQLite the work runs in place when a connection is free at once: a read there is a
    /// look-up in a local file that is almost always in the page cache (a few microseconds),
    /// and handing it to the blocking pool and back cost more than the read itself (a third of
    /// `GetWebhooks`' throughput, BENCHMARKS.md). In WAL mode a reader never waits for the
    /// writer. Everything else, and every PostgreSQL read (a network round trip), runs on the
    /// blocking pool, off the async threads.
    pub async fn read<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> Result<T, Error> + Send + 'static,
    {
        if self.backend == Backend::Sqlite
            && let Some(mut conn) = self.pool.try_get()
        {
            return f(&mut conn);
        }
        let pool = self.pool.clone();
        let span = Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let mut conn = pool.get()?;
            f(&mut conn)
        })
        .await
        .map_err(|_| Error::Internal)?
    }

    /// Runs `f` inside the next group commit and returns its result once that commit is
    /// durable. An error from `f` rolls back only `f`'s own changes; after a lock conflict
    /// with another process `f` runs again, so it must not consume what it captures.
    pub async fn write<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnMut(&mut DbConnection) -> Result<T, Error> + Send + 'static,
    {
        self.writer.submit(f).await
    }

    /// A pooled connection for blocking callers (the CLI, the delivery worker's threads).
    pub fn blocking_conn(&self) -> Result<PooledConn, Error> {
        Ok(self.pool.get()?)
    }
}
