//! Storage: the two databases (SQLite embedded, PostgreSQL in production)
//! behind one [`Store`], the engine's own tables, and the target tables the
//! integrations write to.
//!
//! The SQL that differs between the databases lives in [`dialect`]; values
//! that differ in representation go through [`types`]; a query written
//! once with the dialect's placeholders and table names
//! ([`dialect::Statement`]) runs on either connection with [`on_tx!`].
//! Every name in SQL text passes through [`crate::compile::ident::quote`],
//! which takes only typed names; every value is a bound parameter.

pub mod activity;
pub mod batch;
pub mod catalog;
pub mod convert;
mod database_url;
pub mod db_error;
pub mod dialect;
pub mod events;
pub mod figures;
pub mod history;
pub mod inspect;
pub mod keys;
pub mod lanes;
pub mod log;
pub mod mysql;
pub mod outbox;
pub mod partitionings;
pub mod redeliver;
pub mod retention;
pub mod scope;
pub mod states;
pub mod target;
pub mod targets;
pub mod testbed;
pub mod ticks;
pub mod types;
pub mod views;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Postgres, Sqlite, Transaction};

pub use database_url::{redact, redact_in};
pub use dialect::Dialect;

/// Runs the same expression on whichever database a transaction is on:
/// `on_tx!(tx, |conn| sqlx::query(..).execute(conn).await)`. Both arms are
/// type-checked, so the query must work with both drivers.
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match $tx {
            $crate::store::DbTx::Postgres(tx) => {
                let $conn = &mut **tx;
                $body
            }
            $crate::store::DbTx::Sqlite(tx) => {
                let $conn = &mut **tx;
                $body
            }
        }
    };
}

/// Errors from the database layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A database error, in an operator's words first, then the
    /// database's code ([`db_error::describe`]).
    #[error("{}", db_error::describe(.0))]
    Sqlx(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A value does not fit its target column.
    #[error("column `{column}`: cannot store {value} as {ty}: {reason}")]
    Conversion {
        column: String,
        value: String,
        ty: String,
        reason: String,
    },
    #[error("table {0} does not exist")]
    NoTable(String),
    #[error("table {table} has no column `{column}`")]
    NoColumn { table: String, column: String },
    /// The database cannot be reached now (the publish breaker is open).
    #[error("the database is unreachable: {0}")]
    Unreachable(String),
    /// The positions stored in this database belong to another PostgreSQL
    /// cluster (a restore, a logical move): see `ticks::check_cluster`.
    #[error("{0}")]
    Moved(String),
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    /// Whether the database itself is out of reach (a lost or refused
    /// connection, a pool timeout, the server shutting down): the publish
    /// breaker opens on these, not on deadlocks or busy errors.
    pub fn is_unreachable(&self) -> bool {
        match self {
            StoreError::Unreachable(_) => true,
            StoreError::Sqlx(error) => match error {
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Protocol(_)
                | sqlx::Error::Tls(_) => true,
                sqlx::Error::Database(db) => {
                    let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                    matches!(code.as_str(), "57P01" | "57P02" | "57P03" | "53300")
                        || code.starts_with("08")
                }
                _ => false,
            },
            _ => false,
        }
    }

    /// Whether trying again later can succeed: a lost connection, a pool
    /// timeout, a deadlock, a serialization failure, a busy database. Every
    /// other error (constraints, conversions, missing tables) would fail the
    /// same way again, so the delivery goes to dead letter at once.
    pub fn is_transient(&self) -> bool {
        if let StoreError::Unreachable(_) = self {
            return true;
        }
        let StoreError::Sqlx(error) = self else {
            return false;
        };
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_)
            | sqlx::Error::Tls(_) => true,
            sqlx::Error::Database(db)
                if db
                    .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                    .is_some_and(|e| db_error::mysql_is_transient(e.number())) =>
            {
                true
            }
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                match code.as_str() {
                    // PostgreSQL: serialization failure, deadlock, lock
                    // timeout, shutdown, too many connections, and every
                    // connection and resource class.
                    "40001" | "40P01" | "55P03" | "57P01" | "57P02" | "57P03" | "53300" => true,
                    c if c.starts_with("08") || c.starts_with("53") => true,
                    // SQLite: BUSY and LOCKED and their extended codes.
                    "5" | "6" | "261" | "517" | "262" => true,
                    _ => false,
                }
            }
            _ => false,
        }
    }
}

/// A transaction on either database.
pub enum DbTx {
    Postgres(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

impl DbTx {
    /// Commits. The commit runs in a task of its own: a caller that is
    /// cancelled meanwhile cannot leave the connection half way.
    pub async fn commit(self) -> Result<(), StoreError> {
        detach(async move {
            match self {
                DbTx::Postgres(tx) => tx.commit().await?,
                DbTx::Sqlite(tx) => tx.commit().await?,
            }
            Ok(())
        })
        .await
    }

    /// Rolls back, in a task of its own (see [`DbTx::commit`]).
    pub async fn rollback(self) -> Result<(), StoreError> {
        detach(async move {
            match self {
                DbTx::Postgres(tx) => tx.rollback().await?,
                DbTx::Sqlite(tx) => tx.rollback().await?,
            }
            Ok(())
        })
        .await
    }

    /// Runs a statement that takes no parameters (savepoints and the like).
    pub async fn run(&mut self, sql: &'static str) -> Result<(), StoreError> {
        on_tx!(self, |conn| sqlx::query(sql)
            .execute(conn)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            DbTx::Postgres(_) => Dialect::Postgres,
            DbTx::Sqlite(_) => Dialect::Sqlite,
        }
    }
}

/// Runs `work` in a task of its own and waits for it: if the caller is
/// cancelled, the work still finishes (a transaction it returns is then
/// dropped, which rolls it back properly).
async fn detach<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::spawn(work)
        .await
        .map_err(|e| StoreError::Invalid(format!("internal error: a database task failed: {e}")))?
}

/// The connection pools.
#[derive(Debug, Clone)]
pub enum Db {
    Postgres(PgPool),
    /// SQLite allows one writer at a time: writes go through a pool of one
    /// connection (so they queue in busbar, not in busy retries), reads
    /// through a pool of several (WAL lets them run beside the writer).
    Sqlite {
        write: SqlitePool,
        read: SqlitePool,
    },
}

/// The database busbar runs on.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    pub catalog: Arc<catalog::Catalog>,
    /// The server process ids of this store's PostgreSQL connections: a
    /// notification they sent is this process's own (it knows already).
    backends: Arc<std::sync::Mutex<std::collections::HashSet<i32>>>,
}

/// The default database: a SQLite file under `./data/`.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/busbar.db";

impl Store {
    /// Connects to `url`: `postgres://…` or `sqlite://path` (created, with
    /// its directory, if missing).
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::connect_with(url, 16).await
    }

    /// Connects with at most `max_connections` PostgreSQL connections.
    pub async fn connect_with(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let backends: Arc<std::sync::Mutex<std::collections::HashSet<i32>>> = Arc::default();
        let db = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // A transaction left open by a process that hangs (stopped,
            // cut off) is ended by the server, so the lanes it locked are
            // free for the other processes within 10 s.
            //
            // busbar's own transactions are READ COMMITTED whatever the
            // database's or the role's default (a lane reads its row after
            // taking its lock, the ticker numbers ticks after taking its
            // own): set after the URL's own options, so it wins.
            let options = PgConnectOptions::from_str(url)?
                .application_name("busbar")
                .options([
                    ("idle_in_transaction_session_timeout", "10s"),
                    ("default_transaction_isolation", "read committed"),
                ]);
            let known = backends.clone();
            let pool = PoolOptions::<Postgres>::new()
                .max_connections(max_connections)
                .min_connections(1)
                .acquire_timeout(Duration::from_secs(10))
                .after_connect(move |connection, _| {
                    let known = known.clone();
                    Box::pin(async move {
                        let (pid,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
                            .fetch_one(&mut *connection)
                            .await?;
                        known.lock().expect("backends lock").insert(pid);
                        Ok(())
                    })
                })
                .connect_with(options)
                .await?;
            Db::Postgres(pool)
        } else if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let (path, memory) = match path {
                ":memory:" | "" => (String::new(), true),
                path => (path.split('?').next().unwrap_or(path).to_owned(), false),
            };
            if !memory
                && let Some(parent) = Path::new(&path).parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent).map_err(|e| {
                    StoreError::Invalid(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
            let options = if memory {
                // One shared in-memory database for every connection.
                SqliteConnectOptions::from_str(&format!(
                    "sqlite:file:busbar-{}?mode=memory&cache=shared",
                    uuid::Uuid::new_v4()
                ))?
            } else {
                SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true)
            };
            let options = options
                .journal_mode(if memory {
                    SqliteJournalMode::Memory
                } else {
                    SqliteJournalMode::Wal
                })
                // FULL: a commit is on disk before busbar answers "accepted".
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            let write = PoolOptions::<Sqlite>::new()
                .max_connections(1)
                .min_connections(1)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options.clone())
                .await?;
            let read = PoolOptions::<Sqlite>::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options.read_only(!memory))
                .await?;
            Db::Sqlite { write, read }
        } else {
            return Err(StoreError::Invalid(format!(
                "unsupported database URL `{}`: busbar's own database is postgres://… or sqlite://path",
                redact(url)
            )));
        };
        Ok(Store {
            db,
            catalog: Arc::new(catalog::Catalog::default()),
            backends,
        })
    }

    /// Whether a PostgreSQL server process is one of this store's
    /// connections.
    pub fn is_own_backend(&self, pid: u32) -> bool {
        i32::try_from(pid)
            .is_ok_and(|pid| self.backends.lock().expect("backends lock").contains(&pid))
    }

    pub fn dialect(&self) -> Dialect {
        match self.db {
            Db::Postgres(_) => Dialect::Postgres,
            Db::Sqlite { .. } => Dialect::Sqlite,
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Applies busbar's migrations (`migrations/<database>/`).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.db {
            Db::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await?,
            Db::Sqlite { write, .. } => sqlx::migrate!("migrations/sqlite").run(write).await?,
        }
        Ok(())
    }

    /// Starts a write transaction. On SQLite it is `BEGIN IMMEDIATE`, so it
    /// holds the write lock from the start instead of failing to upgrade.
    ///
    /// Acquiring the connection and sending `BEGIN` run in a task of their
    /// own: a caller cancelled while `BEGIN` is on the wire (a timeout, a
    /// client that hung up) would otherwise put the connection back into
    /// the pool inside a transaction that nobody owns.
    pub async fn begin(&self) -> Result<DbTx, StoreError> {
        let db = self.db.clone();
        detach(async move {
            Ok(match &db {
                Db::Postgres(pool) => DbTx::Postgres(pool.begin().await?),
                Db::Sqlite { write, .. } => {
                    DbTx::Sqlite(write.begin_with("BEGIN IMMEDIATE").await?)
                }
            })
        })
        .await
    }

    /// A PostgreSQL connection of the pool, outside any transaction (for
    /// session-level advisory locks); `None` on SQLite.
    pub async fn acquire_postgres(
        &self,
    ) -> Result<Option<sqlx::pool::PoolConnection<Postgres>>, StoreError> {
        match &self.db {
            Db::Postgres(pool) => {
                let pool = pool.clone();
                Ok(Some(
                    detach(async move { Ok(pool.acquire().await?) }).await?,
                ))
            }
            Db::Sqlite { .. } => Ok(None),
        }
    }

    /// Starts a read-only transaction (a snapshot for API reads); like
    /// [`Store::begin`], safe to cancel.
    pub async fn begin_read(&self) -> Result<DbTx, StoreError> {
        let db = self.db.clone();
        detach(async move {
            Ok(match &db {
                Db::Postgres(pool) => DbTx::Postgres(pool.begin().await?),
                Db::Sqlite { read, .. } => DbTx::Sqlite(read.begin().await?),
            })
        })
        .await
    }

    /// Runs a SQL script (several statements), e.g. the example platform.
    pub async fn execute_script(&self, sql: &str) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        on_tx!(&mut tx, |conn| sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(conn)
            .await
            .map(|_| ()))?;
        tx.commit().await
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        match &self.db {
            Db::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.is_ok(),
            Db::Sqlite { read, .. } => sqlx::query("SELECT 1").execute(read).await.is_ok(),
        }
    }

    /// Whether a new connection to the database can be made within
    /// `timeout` (a busy pool and a database that is gone both make an
    /// acquire time out; this tells them apart). SQLite is always there.
    pub async fn reachable(&self, timeout: Duration) -> bool {
        match &self.db {
            Db::Postgres(pool) => {
                use sqlx::Connection;
                let options = pool.connect_options();
                match tokio::time::timeout(timeout, sqlx::PgConnection::connect_with(&options))
                    .await
                {
                    Ok(Ok(connection)) => {
                        let _ = connection.close().await;
                        true
                    }
                    _ => false,
                }
            }
            Db::Sqlite { .. } => true,
        }
    }

    pub async fn close(&self) {
        match &self.db {
            Db::Postgres(pool) => pool.close().await,
            Db::Sqlite { write, read } => {
                write.close().await;
                read.close().await;
            }
        }
    }
}

/// The example platform's tables (`core`, `hris`, `payroll`) for this
/// database, as shipped in `examples/platform/`.
pub fn example_platform_sql(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => include_str!("../../examples/platform/postgres.sql"),
        Dialect::Sqlite => include_str!("../../examples/platform/sqlite.sql"),
    }
}
