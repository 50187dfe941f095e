//! The other databases of `databases.yaml` as the engine uses them (issue
//! 17): one pool per database, its health, and its progress table — the
//! row per lane that ties a batch's writes in that database to busbar's
//! bookkeeping (ARCHITECTURE.md, "Exactly once into another database,
//! without XA").
//!
//! - [`TargetDb`]: a named database, its pool (PostgreSQL or
//!   MariaDB/MySQL), its catalog and its [`Health`]. Its URL is private and
//!   never printed: messages use the name.
//! - [`TargetTx`]: a transaction there, with the progress row
//!   ([`TargetTx::lock_progress`], [`TargetTx::record_progress`]) and the
//!   executor the routes run with ([`TargetTx::executor`]).
//! - [`TargetDb::begin_source`]: a transaction on an outbox source (a
//!   database with `outbox: true`), whose tables [`TargetDb::check`]
//!   makes when they are missing (`store::outbox`).
//! - [`Targets`]: every open database by name, replaced whole at a reload
//!   ([`Targets::open`] keeps a pool whose URL did not change).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::mysql::MySqlPool;
use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{MySql, Postgres, Transaction};
use uuid::Uuid;

use super::catalog::Catalog;
use super::dialect::{EngineTable, Statement};
use super::mysql::catalog::MySqlCatalog;
use super::mysql::session;
use super::mysql::target::MySqlTargetExecutor;
use super::target::{Emitted, TargetExecutor};
use super::types::Time;
use super::{DbTx, StoreError};
use crate::compile::Step;
use crate::compile::databases::{DatabaseKind, Databases};
use crate::compile::ident::{Ident, TableName};
use crate::mapping::{Executor, Row};
use crate::on_tx;

/// Connections per other database and process.
const MAX_CONNECTIONS: u32 = 16;

/// The progress table on PostgreSQL (schema `busbar`).
const PG_PROGRESS_DDL: [&str; 2] = [
    "CREATE SCHEMA IF NOT EXISTS busbar",
    "CREATE TABLE IF NOT EXISTS busbar.progress (
        integration TEXT NOT NULL,
        lane INTEGER NOT NULL,
        batch_seq BIGINT NOT NULL,
        outcome JSONB,
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (integration, lane))",
];

/// The progress table on MariaDB/MySQL: `busbar_progress` in the database
/// the URL names (a MariaDB server often holds several products'
/// databases; each has its own progress).
const MYSQL_PROGRESS_DDL: [&str; 1] = ["CREATE TABLE IF NOT EXISTS busbar_progress (
        integration VARCHAR(200) NOT NULL,
        lane INT NOT NULL,
        batch_seq BIGINT NOT NULL,
        outcome LONGTEXT,
        updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
        PRIMARY KEY (integration, lane)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"];

/// The SQL that creates a database's progress table (for docs and
/// `busbar migrate --target`).
pub fn progress_ddl(kind: DatabaseKind) -> &'static [&'static str] {
    match kind {
        DatabaseKind::Postgres => &PG_PROGRESS_DDL,
        DatabaseKind::MySql => &MYSQL_PROGRESS_DDL,
    }
}

/// Whether a database answers, as the engine last saw it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Health {
    pub up: bool,
    /// Since when it has been up or down.
    pub since: Time,
    /// Why it is down (no URL in it).
    pub error: Option<String>,
    /// Lanes leave it alone until then (it is down).
    #[serde(skip)]
    pub retry_at: Option<Instant>,
}

/// One other database as the status API and the console show it: its
/// name, kind and health, never its URL.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DatabaseStatus {
    pub name: String,
    /// `postgres` or `mysql` (MariaDB or MySQL).
    pub kind: &'static str,
    /// Whether it answered busbar's last statement.
    pub up: bool,
    /// Since when it has been up or down.
    #[schema(value_type = String, format = DateTime)]
    pub since: Time,
    /// Why it is down (the driver's message, without credentials).
    pub error: Option<String>,
}

/// A pool of one of the two kinds.
#[derive(Debug, Clone)]
enum Pool {
    Postgres(PgPool, Arc<Catalog>),
    MySql(MySqlPool, Arc<MySqlCatalog>),
}

impl Pool {
    /// Whether it answers `SELECT 1`; `None` once closed.
    async fn answers(&self) -> Option<bool> {
        let select = match self {
            Pool::Postgres(pool, _) if !pool.is_closed() => {
                sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
            }
            Pool::MySql(pool, _) if !pool.is_closed() => {
                sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
            }
            _ => return None,
        };
        Some(select.is_ok())
    }

    /// Starts a transaction, on a task of its own (a connection half made
    /// when the caller gives up is not left in the pool).
    async fn begin(&self) -> Result<TargetTx, StoreError> {
        let pool = self.clone();
        super::detach(async move {
            Ok(match &pool {
                Pool::Postgres(pool, catalog) => {
                    TargetTx::Postgres(DbTx::Postgres(pool.begin().await?), catalog.clone())
                }
                Pool::MySql(pool, catalog) => TargetTx::MySql(pool.begin().await?, catalog.clone()),
            })
        })
        .await
    }
}

/// One other database.
#[derive(Debug)]
pub struct TargetDb {
    pub name: String,
    pub kind: DatabaseKind,
    /// Whether busbar moves its `busbar_outbox.events` into its log.
    pub outbox: bool,
    /// Whether integrations may write here (it lists schemas): only then
    /// does it need the progress table.
    target: bool,
    /// The URL with its variables replaced: a secret, never printed.
    url: String,
    pool: Pool,
    health: Arc<Mutex<Health>>,
    /// Whether a probe is watching for it to answer again.
    probing: Arc<std::sync::atomic::AtomicBool>,
    /// Whether the progress table is known to be there.
    ready: std::sync::atomic::AtomicBool,
}

impl TargetDb {
    /// A database's pool; nothing connects yet (see [`TargetDb::check`]).
    /// `target`: integrations may write there (it lists schemas);
    /// `outbox`: it is an outbox source, which only PostgreSQL can be.
    pub fn new(name: &str, url: &str, target: bool, outbox: bool) -> Result<TargetDb, StoreError> {
        let scheme = url.split("://").next().unwrap_or_default();
        let kind = DatabaseKind::of_scheme(scheme).ok_or_else(|| {
            StoreError::Invalid(format!(
                "database `{name}`: its URL must start with postgres://, mysql:// or mariadb://"
            ))
        })?;
        let bad = |error: StoreError| {
            StoreError::Invalid(format!(
                "database `{name}`: its URL cannot be read: {error}"
            ))
        };
        let pool = match kind {
            DatabaseKind::Postgres => {
                let options = PgConnectOptions::from_str(url)
                    .map_err(|e| bad(e.into()))?
                    .application_name("busbar")
                    .options([
                        ("idle_in_transaction_session_timeout", "10s"),
                        ("default_transaction_isolation", "read committed"),
                        ("lock_timeout", "5s"),
                        ("statement_timeout", "60s"),
                    ]);
                let pool = PoolOptions::<Postgres>::new()
                    .max_connections(MAX_CONNECTIONS)
                    .acquire_timeout(Duration::from_secs(1))
                    .connect_lazy_with(options);
                Pool::Postgres(pool, Arc::default())
            }
            DatabaseKind::MySql => Pool::MySql(
                session::pool(url, MAX_CONNECTIONS).map_err(bad)?,
                Arc::default(),
            ),
        };
        Ok(TargetDb {
            name: name.to_owned(),
            kind,
            outbox,
            target,
            url: url.to_owned(),
            pool,
            probing: Arc::default(),
            health: Arc::new(Mutex::new(Health {
                up: true,
                since: Time::now(),
                error: None,
                retry_at: None,
            })),
            ready: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Connects, and creates the progress table (a database integrations
    /// write to) and the outbox tables (an outbox source) if they are
    /// missing; the database is down until this works. An error names the
    /// database, never its URL.
    pub async fn check(&self) -> Result<(), StoreError> {
        let result: Result<(), StoreError> = async {
            if self.target || !self.outbox {
                self.ensure_progress().await?;
            }
            if self.outbox {
                self.ensure_outbox().await?;
            }
            Ok(())
        }
        .await;
        match &result {
            Ok(()) => {
                self.ready.store(true, std::sync::atomic::Ordering::Release);
                self.succeeded();
            }
            Err(error) => self.down(error),
        }
        result.map_err(|error| {
            StoreError::Invalid(format!(
                "database `{}`: {}",
                self.name,
                super::redact_in(&error.to_string(), &self.url)
            ))
        })
    }

    async fn ensure_progress(&self) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Postgres(pool, _) => {
                let (schema, table): (bool, bool) = sqlx::query_as(
                    "SELECT to_regnamespace('busbar') IS NOT NULL, to_regclass('busbar.progress') IS NOT NULL",
                )
                .fetch_one(pool)
                .await?;
                // `CREATE SCHEMA IF NOT EXISTS` needs CREATE on the database
                // even when the schema is there: a schema made for busbar
                // by the product's team is enough.
                let [make_schema, make_table] = PG_PROGRESS_DDL;
                if !schema {
                    sqlx::query(make_schema).execute(pool).await?;
                }
                if !table {
                    sqlx::query(make_table).execute(pool).await?;
                }
            }
            Pool::MySql(pool, _) => {
                let (count,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM information_schema.tables \
                     WHERE table_schema = DATABASE() AND table_name = 'busbar_progress'",
                )
                .fetch_one(pool)
                .await?;
                if count == 0 {
                    for statement in MYSQL_PROGRESS_DDL {
                        sqlx::query(statement).execute(pool).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Creates `busbar_outbox.events` and `.rejected` when they are
    /// missing; a role that may not is told what to ask for.
    async fn ensure_outbox(&self) -> Result<(), StoreError> {
        let Pool::Postgres(pool, _) = &self.pool else {
            return Err(StoreError::Invalid(
                "an outbox source must be a PostgreSQL database".into(),
            ));
        };
        let mut conn = pool.acquire().await?;
        if super::outbox::exists(&mut conn).await? {
            return Ok(());
        }
        super::outbox::create(&mut conn).await.map_err(|error| {
            StoreError::Invalid(format!(
                "it is an outbox source, and busbar_outbox.events is missing and cannot be created ({error}): \
                 run the DDL of docs/DATABASES.md, \"Outbox sources\", with the grants it lists"
            ))
        })
    }

    /// Whether this database is the same as one opened from `url` with
    /// these roles.
    fn same(&self, url: &str, target: bool, outbox: bool) -> bool {
        self.url == url && self.target == target && self.outbox == outbox
    }

    /// Starts a transaction on an outbox source (read committed, as every
    /// connection here).
    pub async fn begin_source(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        let Pool::Postgres(pool, _) = &self.pool else {
            return Err(StoreError::Invalid(format!(
                "database `{}`: an outbox source must be a PostgreSQL database",
                self.name
            )));
        };
        let pool = pool.clone();
        let begun = super::detach(async move { Ok(pool.begin().await?) }).await;
        if let Err(error) = &begun {
            self.failed(error);
        }
        begun
    }

    /// An error of this database as it may be shown: its URL redacted.
    pub fn describe(&self, error: &StoreError) -> String {
        super::redact_in(&error.to_string(), &self.url)
    }

    /// Its health now.
    pub fn health(&self) -> Health {
        self.health.lock().expect("health lock").clone()
    }

    /// What the status API and the console show of it.
    pub fn status(&self) -> DatabaseStatus {
        let health = self.health();
        DatabaseStatus {
            name: self.name.clone(),
            kind: match self.kind {
                DatabaseKind::Postgres => "postgres",
                DatabaseKind::MySql => "mysql",
            },
            up: health.up,
            since: health.since,
            error: health.error,
        }
    }

    /// Whether lanes should leave it alone for now (down, and not yet
    /// time to try again): the time to try again.
    pub fn resting(&self) -> Option<Instant> {
        let health = self.health.lock().expect("health lock");
        health.retry_at.filter(|at| *at > Instant::now())
    }

    /// Records that a statement reached it.
    pub fn succeeded(&self) {
        let mut health = self.health.lock().expect("health lock");
        if !health.up {
            tracing::info!(database = %self.name, "database is reachable again");
            health.since = Time::now();
        }
        health.up = true;
        health.error = None;
        health.retry_at = None;
    }

    /// Records a failure; when it says the database is out of reach, the
    /// database is down and lanes rest until a probe sees it answer.
    pub fn failed(&self, error: &StoreError) {
        if error.is_unreachable() {
            self.down(error);
        }
    }

    /// Records that no connection could be had: whatever the reason (out
    /// of reach, refusing connections, a password changed), the database
    /// is down and lanes rest until a probe sees it answer.
    fn down(&self, error: &StoreError) {
        let mut health = self.health.lock().expect("health lock");
        let message = super::redact_in(&error.to_string(), &self.url);
        if health.up {
            tracing::warn!(database = %self.name, error = %message, "database is out of reach: the integrations that write there wait");
            health.since = Time::now();
        }
        health.up = false;
        health.error = Some(message);
        // Lanes leave it alone until a probe sees it answer: a connection
        // attempt to a server that is gone can take the pool's whole
        // acquire timeout, which a worker must not spend.
        health.retry_at = Some(Instant::now() + Duration::from_secs(3600));
        drop(health);
        self.probe();
    }

    /// Watches a database that is down, in a task of its own: `SELECT 1`
    /// every 0.2–2 s (backing off) until it answers, then lets the lanes
    /// try again. One probe per database at a time; it ends when the pool
    /// is closed (the database left databases.yaml).
    fn probe(&self) {
        use std::sync::atomic::Ordering;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to watch from: the lanes try again in a second.
            self.health.lock().expect("health lock").retry_at =
                Some(Instant::now() + Duration::from_secs(1));
            return;
        };
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (pool, health, probing) =
            (self.pool.clone(), self.health.clone(), self.probing.clone());
        let name = self.name.clone();
        runtime.spawn(async move {
            let mut pause = Duration::from_millis(200);
            loop {
                tokio::time::sleep(pause).await;
                let answered = match tokio::time::timeout(Duration::from_secs(5), pool.answers()).await {
                    Ok(None) => break,
                    Ok(Some(answered)) => answered,
                    Err(_) => false,
                };
                if answered {
                    tracing::info!(database = %name, "database answers again: its integrations resume");
                    health.lock().expect("health lock").retry_at = None;
                    break;
                }
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            probing.store(false, Ordering::Release);
        });
    }

    /// Starts a transaction (after making the progress table, the first
    /// time it can).
    pub async fn begin(&self) -> Result<TargetTx, StoreError> {
        if !self.ready.load(std::sync::atomic::Ordering::Acquire) {
            self.check().await?;
        }
        self.begin_read().await
    }

    /// Starts a transaction to read in (a `find` of an integration that
    /// writes elsewhere): no progress table is needed for that, so none is
    /// made.
    pub async fn begin_read(&self) -> Result<TargetTx, StoreError> {
        let begun = self.pool.begin().await;
        if let Err(error) = &begun {
            self.down(error);
        }
        begun
    }

    /// After `error` failed a batch that used this database: when it says
    /// some database is out of reach and this one does not answer
    /// `SELECT 1` within a second, it is down (a batch uses up to three
    /// databases, and the error does not say which).
    pub async fn confirm(&self, error: &StoreError) {
        if !error.is_unreachable() {
            return;
        }
        let timeout = Duration::from_secs(1);
        let answered = tokio::time::timeout(timeout, self.pool.answers())
            .await
            .is_ok_and(|answered| answered == Some(true));
        if !answered {
            self.down(error);
        }
    }

    /// Forgets what the catalog read (a reload: tables may have changed).
    pub fn clear_catalog(&self) {
        match &self.pool {
            Pool::Postgres(_, catalog) => catalog.clear(),
            Pool::MySql(_, catalog) => catalog.clear(),
        }
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Postgres(pool, _) => pool.close().await,
            Pool::MySql(pool, _) => pool.close().await,
        }
    }
}

/// A transaction in another database.
pub enum TargetTx {
    Postgres(DbTx, Arc<Catalog>),
    MySql(Transaction<'static, MySql>, Arc<MySqlCatalog>),
}

/// The key of a lane's progress rows: the installation (busbar's own
/// database's identity, `integrations.installation`) and the integration,
/// so that two busbar installations writing into one database with the
/// same integration ids keep apart.
pub fn progress_key(installation: &Uuid, integration: &str) -> String {
    format!("{installation}/{integration}")
}

/// This installation's identity (migration 0012).
pub async fn installation(tx: &mut DbTx) -> Result<Uuid, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        format!(
            "SELECT CAST(id AS TEXT) FROM {} LIMIT 1",
            d.engine_table(EngineTable::Installation)
        )
    });
    let sql = SQL.get(tx.dialect());
    let id: String = on_tx!(&mut *tx, |conn| sqlx::query_scalar(sql)
        .fetch_one(conn)
        .await)?;
    Uuid::parse_str(&id).map_err(|e| {
        StoreError::Invalid(format!(
            "integrations.installation holds {id:?}, not an id: {e}"
        ))
    })
}

fn on_sqlite() -> StoreError {
    StoreError::Invalid("internal error: a target transaction on SQLite".into())
}

/// A lane's progress row in a target database.
#[derive(Debug, Clone)]
pub struct Progress {
    pub batch_seq: i64,
    /// The bookkeeping of the batch that made `batch_seq` (JSON).
    pub outcome: Option<Value>,
}

impl TargetTx {
    /// Runs a statement without parameters (savepoints).
    pub async fn run(&mut self, sql: &'static str) -> Result<(), StoreError> {
        match self {
            TargetTx::Postgres(tx, _) => tx.run(sql).await,
            TargetTx::MySql(tx, _) => {
                sqlx::query(sql).execute(&mut **tx).await?;
                Ok(())
            }
        }
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            TargetTx::Postgres(tx, _) => tx.commit().await,
            TargetTx::MySql(tx, _) => super::detach(async move { Ok(tx.commit().await?) }).await,
        }
    }

    pub async fn rollback(self) -> Result<(), StoreError> {
        match self {
            TargetTx::Postgres(tx, _) => tx.rollback().await,
            TargetTx::MySql(tx, _) => super::detach(async move { Ok(tx.rollback().await?) }).await,
        }
    }

    /// Locks the lane's progress row (`key`: [`progress_key`]), making it
    /// at `start` when the lane has never written here (the first batch of
    /// this lane in this database). A row an earlier busbar kept under the
    /// integration's id alone (`legacy`) is taken over: renamed, with its
    /// number and bookkeeping.
    pub async fn lock_progress(
        &mut self,
        key: &str,
        legacy: &str,
        lane: i32,
        start: i64,
    ) -> Result<Progress, StoreError> {
        if let Some(progress) = self.select_progress(key, lane).await? {
            return Ok(progress);
        }
        if self.select_progress(legacy, lane).await?.is_some() {
            match self {
                TargetTx::Postgres(DbTx::Postgres(tx), _) => {
                    sqlx::query(
                        "UPDATE busbar.progress SET integration = $1 WHERE integration = $2 AND lane = $3",
                    )
                    .bind(key)
                    .bind(legacy)
                    .bind(lane)
                    .execute(&mut **tx)
                    .await?;
                }
                TargetTx::MySql(tx, _) => {
                    sqlx::query(
                        "UPDATE busbar_progress SET integration = ? WHERE integration = ? AND lane = ?",
                    )
                    .bind(key)
                    .bind(legacy)
                    .bind(lane)
                    .execute(&mut **tx)
                    .await?;
                }
                TargetTx::Postgres(DbTx::Sqlite(_), _) => return Err(on_sqlite()),
            }
            tracing::info!(
                integration = legacy,
                lane,
                key,
                "progress row taken over from an earlier busbar"
            );
        } else {
            match self {
                TargetTx::Postgres(DbTx::Postgres(tx), _) => {
                    sqlx::query(
                        "INSERT INTO busbar.progress (integration, lane, batch_seq) VALUES ($1, $2, $3) \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(key)
                    .bind(lane)
                    .bind(start)
                    .execute(&mut **tx)
                    .await?;
                }
                TargetTx::MySql(tx, _) => {
                    sqlx::query(
                        "INSERT IGNORE INTO busbar_progress (integration, lane, batch_seq) VALUES (?, ?, ?)",
                    )
                    .bind(key)
                    .bind(lane)
                    .bind(start)
                    .execute(&mut **tx)
                    .await?;
                }
                TargetTx::Postgres(DbTx::Sqlite(_), _) => return Err(on_sqlite()),
            }
        }
        self.select_progress(key, lane).await?.ok_or_else(|| {
            StoreError::Invalid(format!(
                "the progress row of lane {key}#{lane} was made and is not there"
            ))
        })
    }

    /// A progress row, locked.
    async fn select_progress(
        &mut self,
        integration: &str,
        lane: i32,
    ) -> Result<Option<Progress>, StoreError> {
        let found: Option<(i64, Option<String>)> = match self {
            TargetTx::Postgres(DbTx::Postgres(tx), _) => {
                sqlx::query_as(
                    "SELECT batch_seq, outcome::text FROM busbar.progress \
                     WHERE integration = $1 AND lane = $2 FOR UPDATE",
                )
                .bind(integration)
                .bind(lane)
                .fetch_optional(&mut **tx)
                .await?
            }
            TargetTx::MySql(tx, _) => {
                sqlx::query_as(
                    "SELECT batch_seq, outcome FROM busbar_progress \
                     WHERE integration = ? AND lane = ? FOR UPDATE",
                )
                .bind(integration)
                .bind(lane)
                .fetch_optional(&mut **tx)
                .await?
            }
            TargetTx::Postgres(DbTx::Sqlite(_), _) => return Err(on_sqlite()),
        };
        found
            .map(|(batch_seq, outcome)| {
                let outcome = outcome
                    .map(|text| serde_json::from_str(&text))
                    .transpose()
                    .map_err(|e| {
                        StoreError::Invalid(format!(
                            "the progress row's outcome cannot be read: {e}"
                        ))
                    })?;
                Ok(Progress { batch_seq, outcome })
            })
            .transpose()
    }

    /// Stores a batch's number and its bookkeeping in the progress row
    /// (locked by [`TargetTx::lock_progress`]).
    pub async fn record_progress(
        &mut self,
        integration: &str,
        lane: i32,
        batch_seq: i64,
        outcome: &Value,
    ) -> Result<(), StoreError> {
        let text = outcome.to_string();
        match self {
            TargetTx::Postgres(DbTx::Postgres(tx), _) => {
                sqlx::query(
                    "UPDATE busbar.progress SET batch_seq = $3, outcome = $4::jsonb, updated_at = now() \
                     WHERE integration = $1 AND lane = $2",
                )
                .bind(integration)
                .bind(lane)
                .bind(batch_seq)
                .bind(text)
                .execute(&mut **tx)
                .await?;
            }
            TargetTx::MySql(tx, _) => {
                sqlx::query(
                    "UPDATE busbar_progress SET batch_seq = ?, outcome = ?, updated_at = CURRENT_TIMESTAMP(6) \
                     WHERE integration = ? AND lane = ?",
                )
                .bind(batch_seq)
                .bind(text)
                .bind(integration)
                .bind(lane)
                .execute(&mut **tx)
                .await?;
            }
            TargetTx::Postgres(DbTx::Sqlite(_), _) => return Err(on_sqlite()),
        }
        Ok(())
    }

    /// The executor of this database's dialect on this transaction.
    pub fn executor(&mut self) -> TargetStepper<'_> {
        match self {
            TargetTx::Postgres(tx, catalog) => {
                TargetStepper::Postgres(TargetExecutor::new(tx, catalog))
            }
            TargetTx::MySql(tx, catalog) => {
                TargetStepper::MySql(MySqlTargetExecutor::new(&mut *tx, catalog))
            }
        }
    }
}

/// The executor of a target database, of either kind.
pub enum TargetStepper<'t> {
    Postgres(TargetExecutor<'t>),
    MySql(MySqlTargetExecutor<'t>),
}

impl TargetStepper<'_> {
    /// Whether a statement that writes has run.
    pub fn wrote(&self) -> bool {
        match self {
            TargetStepper::Postgres(e) => e.wrote,
            TargetStepper::MySql(e) => e.wrote,
        }
    }
}

impl Executor for TargetStepper<'_> {
    type Error = StoreError;

    async fn find(
        &mut self,
        table: &TableName,
        filter: &[(Ident, Value)],
    ) -> Result<Option<Row>, StoreError> {
        match self {
            TargetStepper::Postgres(e) => e.find(table, filter).await,
            TargetStepper::MySql(e) => e.find(table, filter).await,
        }
    }

    async fn upsert(
        &mut self,
        table: &TableName,
        key: &[Ident],
        values: &[(Ident, Value)],
    ) -> Result<Row, StoreError> {
        match self {
            TargetStepper::Postgres(e) => e.upsert(table, key, values).await,
            TargetStepper::MySql(e) => e.upsert(table, key, values).await,
        }
    }

    async fn update(
        &mut self,
        table: &TableName,
        filter: &[(Ident, Value)],
        set: &[(Ident, Value)],
    ) -> Result<Vec<Row>, StoreError> {
        match self {
            TargetStepper::Postgres(e) => e.update(table, filter, set).await,
            TargetStepper::MySql(e) => e.update(table, filter, set).await,
        }
    }

    async fn delete(
        &mut self,
        table: &TableName,
        filter: &[(Ident, Value)],
    ) -> Result<u64, StoreError> {
        match self {
            TargetStepper::Postgres(e) => e.delete(table, filter).await,
            TargetStepper::MySql(e) => e.delete(table, filter).await,
        }
    }

    async fn emit(&mut self, step: &Step, event: &str, data: Value) -> Result<(), StoreError> {
        match self {
            TargetStepper::Postgres(e) => e.emit(step, event, data).await,
            TargetStepper::MySql(e) => e.emit(step, event, data).await,
        }
    }
}

/// The executor a lane runs a route with: each step on the transaction of
/// the database its table is in — busbar's own (`own`), or another one
/// (`others`, by name: the database the integration writes to, and those
/// its `find`s read).
pub struct LaneExecutor<'a, 't> {
    own: TargetExecutor<'a>,
    others: Vec<(&'t str, TargetStepper<'t>)>,
    databases: &'a Databases,
}

impl<'a, 't> LaneExecutor<'a, 't> {
    pub fn new(
        own: TargetExecutor<'a>,
        others: Vec<(&'t str, &'t mut TargetTx)>,
        databases: &'a Databases,
    ) -> Self {
        LaneExecutor {
            own,
            others: others
                .into_iter()
                .map(|(name, tx)| (name, tx.executor()))
                .collect(),
            databases,
        }
    }

    /// Whether a statement that writes has run.
    pub fn wrote(&self) -> bool {
        self.own.wrote || self.others.iter().any(|(_, e)| e.wrote())
    }

    /// The events emitted so far, taken.
    pub fn take_emitted(&mut self) -> Vec<Emitted> {
        std::mem::take(&mut self.own.emitted)
    }

    /// The executor of the database `table` is in.
    fn on(&mut self, table: &TableName) -> Result<Either<'_, 'a, 't>, StoreError> {
        let Some(database) = self.databases.of_table(table) else {
            return Ok(Either::Own(&mut self.own));
        };
        self.others
            .iter_mut()
            .find(|(name, _)| *name == database.name)
            .map(|(_, executor)| Either::Other(executor))
            .ok_or_else(|| not_open(&database.name, table))
    }
}

/// The error of a step on a database the batch holds no transaction in (a
/// bug: `compile::databases::resolve` lists every database an integration
/// uses).
pub fn not_open(database: &str, table: &TableName) -> StoreError {
    StoreError::Invalid(format!(
        "internal error: no transaction in database `{database}` for {table}"
    ))
}

enum Either<'e, 'a, 't> {
    Own(&'e mut TargetExecutor<'a>),
    Other(&'e mut TargetStepper<'t>),
}

impl Executor for LaneExecutor<'_, '_> {
    type Error = StoreError;

    async fn find(
        &mut self,
        table: &TableName,
        filter: &[(Ident, Value)],
    ) -> Result<Option<Row>, StoreError> {
        match self.on(table)? {
            Either::Own(e) => e.find(table, filter).await,
            Either::Other(e) => e.find(table, filter).await,
        }
    }

    async fn upsert(
        &mut self,
        table: &TableName,
        key: &[Ident],
        values: &[(Ident, Value)],
    ) -> Result<Row, StoreError> {
        match self.on(table)? {
            Either::Own(e) => e.upsert(table, key, values).await,
            Either::Other(e) => e.upsert(table, key, values).await,
        }
    }

    async fn update(
        &mut self,
        table: &TableName,
        filter: &[(Ident, Value)],
        set: &[(Ident, Value)],
    ) -> Result<Vec<Row>, StoreError> {
        match self.on(table)? {
            Either::Own(e) => e.update(table, filter, set).await,
            Either::Other(e) => e.update(table, filter, set).await,
        }
    }

    async fn delete(
        &mut self,
        table: &TableName,
        filter: &[(Ident, Value)],
    ) -> Result<u64, StoreError> {
        match self.on(table)? {
            Either::Own(e) => e.delete(table, filter).await,
            Either::Other(e) => e.delete(table, filter).await,
        }
    }

    /// Collected in memory, whichever database the route writes to.
    async fn emit(&mut self, step: &Step, event: &str, data: Value) -> Result<(), StoreError> {
        self.own.emit(step, event, data).await
    }
}

/// Every other database this process has open, by name.
#[derive(Debug, Default)]
pub struct Targets {
    by_name: HashMap<String, Arc<TargetDb>>,
}

impl Targets {
    pub fn get(&self, name: &str) -> Option<&Arc<TargetDb>> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<TargetDb>> {
        self.by_name.values()
    }

    /// The databases `databases` names, with URLs from `lookup` (the
    /// environment): a database already open with the same URL is kept
    /// (`current`), a new one is opened and checked. Refused: a variable
    /// that is not set and a URL that cannot be read. A database that
    /// cannot be used now (down, refusing connections, a wrong password,
    /// no progress table and no right to make it) is opened anyway, shown
    /// down with the reason: its integrations wait until it can, and
    /// busbar's other work goes on.
    pub async fn open(
        current: &Targets,
        databases: &Databases,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Targets, StoreError> {
        let mut by_name = HashMap::new();
        for database in &databases.list {
            let url = database.url_with(&lookup).map_err(|missing| {
                StoreError::Invalid(format!(
                    "database `{}` (databases.yaml): environment variable {} is not set",
                    database.name,
                    missing.join(", ")
                ))
            })?;
            let writable = !database.schemas.is_empty();
            if let Some(open) = current.get(&database.name)
                && open.same(&url, writable, database.outbox)
            {
                by_name.insert(database.name.clone(), open.clone());
                continue;
            }
            let target = TargetDb::new(&database.name, &url, writable, database.outbox)?;
            if let Err(error) = target.check().await {
                tracing::warn!(database = %database.name, %error, "database cannot be used now: the integrations using it wait until it can");
            }
            by_name.insert(database.name.clone(), Arc::new(target));
        }
        Ok(Targets { by_name })
    }

    /// Closes the pools `next` does not keep.
    pub async fn close_unused(&self, next: &Targets) {
        for (name, target) in &self.by_name {
            if !next.get(name).is_some_and(|n| Arc::ptr_eq(n, target)) {
                target.close().await;
            }
        }
    }
}
