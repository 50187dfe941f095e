//! Shared test plumbing: a fresh database per test (a temporary SQLite
//! file, or a new PostgreSQL database on the server named by
//! `TEST_DATABASE_URL`), the example platform, and helpers to read rows.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use sqlx::{AssertSqlSafe, Connection};

use busbar::compile::Generation;
use busbar::compile::ident::{Ident, TableName};
use busbar::engine::{Engine, EngineConfig};
use busbar::mapping::Executor;
use busbar::store::events::{self, DeliveryView, Status};
use busbar::store::scope::OrgScope;
use busbar::store::target::TargetExecutor;
use busbar::store::views;
use busbar::store::{Dialect, Store};

/// Runs a test body against SQLite and against PostgreSQL, as two tests
/// named `<name>::sqlite` and `<name>::postgres`. The PostgreSQL one is
/// reported as ignored when the suite was built without
/// `TEST_DATABASE_URL`.
macro_rules! on_both_databases {
    ($(#[$meta:meta])* async fn $name:ident($db:ident: TestDb) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn body($db: $crate::support::TestDb) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                body($crate::support::TestDb::sqlite().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(
                not(postgres_tests),
                ignore = "PostgreSQL suite skipped: TEST_DATABASE_URL was not set when the tests were built"
            )]
            async fn postgres() {
                body($crate::support::TestDb::postgres().await).await;
            }
        }
    };
}
pub(crate) use on_both_databases;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A database for one test, dropped (PostgreSQL) or deleted (SQLite) at the end.
pub struct TestDb {
    pub store: Store,
    /// The database's URL, for starting `busbar serve` on it.
    #[allow(dead_code)]
    pub url: String,
    /// For PostgreSQL: the server URL to administer from, and the database name.
    admin: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
    /// The last engine started on this database: `settle` and
    /// `deliveries` see the integrations through it.
    engine: std::sync::Mutex<Option<Engine>>,
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let db = TestDb::sqlite_unmigrated().await;
        db.store.migrate().await.expect("migrations apply");
        db
    }

    /// A SQLite database without busbar's tables (for the upgrade test).
    pub async fn sqlite_unmigrated() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("busbar.db").display());
        let store = Store::connect(&url).await.expect("sqlite connects");
        TestDb {
            store,
            url,
            admin: None,
            _dir: Some(dir),
            engine: Default::default(),
        }
    }

    pub async fn postgres() -> TestDb {
        let db = TestDb::postgres_unmigrated().await;
        db.store.migrate().await.expect("migrations apply");
        db
    }

    /// A PostgreSQL database without busbar's tables (for the upgrade test).
    pub async fn postgres_unmigrated() -> TestDb {
        let admin_url = std::env::var("TEST_DATABASE_URL")
            .expect("the PostgreSQL suite needs TEST_DATABASE_URL at run time too");
        let name = format!("busbar_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("TEST_DATABASE_URL accepts connections");
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("can create a test database");
        admin.close().await.ok();
        let url = database_url(&admin_url, &name);
        let store = Store::connect_with(&url, 12)
            .await
            .expect("postgres connects");
        TestDb {
            store,
            url,
            admin: Some((admin_url, name)),
            _dir: None,
            engine: Default::default(),
        }
    }

    pub fn dialect(&self) -> Dialect {
        self.store.dialect()
    }

    /// Installs the example platform and seeds its organizations.
    pub async fn seed(&self) {
        busbar::dev::seed(&self.store)
            .await
            .expect("example platform seeds");
    }

    /// Runs SQL (table names written for PostgreSQL, `hris.employees`, are
    /// rewritten for SQLite).
    pub async fn execute(&self, sql: &str) {
        let sql = match self.dialect() {
            Dialect::Postgres => sql.to_owned(),
            Dialect::Sqlite => sqlite_names(sql),
        };
        self.store
            .execute_script(&sql)
            .await
            .expect("test SQL runs");
    }

    /// Publishes `load`/`item.added` events `{"item": i}` for each `i` of
    /// `items` by inserting them into busbar's log, as a product's outbox
    /// write would (500 a statement).
    pub async fn insert_item_events(&self, items: std::ops::Range<usize>) {
        for chunk in items.collect::<Vec<_>>().chunks(500) {
            let values: Vec<String> = chunk
                .iter()
                .map(|i| {
                    format!(
                        "('{}', '{}', 'load', 'item.added', '{{\"item\": {i}}}')",
                        uuid::Uuid::new_v4(),
                        busbar::dev::ORGANIZATION
                    )
                })
                .collect();
            self.execute(&format!(
                "INSERT INTO integrations.events (id, organization_id, source_product, event_name, event_data) VALUES {}",
                values.join(", ")
            ))
            .await;
        }
    }

    pub async fn count(&self, table: &str) -> i64 {
        self.count_where(table, "TRUE").await
    }

    pub async fn count_where(&self, table: &str, condition: &str) -> i64 {
        self.scalar(&format!("SELECT COUNT(*) FROM {table} WHERE {condition}"))
            .await
    }

    /// Runs a query returning one integer (table names written for
    /// PostgreSQL are rewritten for SQLite).
    pub async fn scalar(&self, sql: &str) -> i64 {
        let sql = match self.dialect() {
            Dialect::Postgres => sql.to_owned(),
            Dialect::Sqlite => sqlite_names(sql),
        };
        let mut tx = self.store.begin_read().await.expect("read transaction");
        let count: i64 = match &mut tx {
            busbar::store::DbTx::Postgres(tx) => sqlx::query_scalar(AssertSqlSafe(sql))
                .fetch_one(&mut **tx)
                .await
                .expect("count"),
            busbar::store::DbTx::Sqlite(tx) => sqlx::query_scalar(AssertSqlSafe(sql))
                .fetch_one(&mut **tx)
                .await
                .expect("count"),
        };
        tx.rollback().await.ok();
        count
    }

    /// Runs a query returning rows of two text columns (table names written
    /// for PostgreSQL are rewritten for SQLite).
    pub async fn rows(&self, sql: &str) -> Vec<(String, String)> {
        let sql = match self.dialect() {
            Dialect::Postgres => sql.to_owned(),
            Dialect::Sqlite => sqlite_names(sql),
        };
        let mut tx = self.store.begin_read().await.expect("read transaction");
        let rows: Vec<(String, String)> = match &mut tx {
            busbar::store::DbTx::Postgres(tx) => sqlx::query_as(AssertSqlSafe(sql))
                .fetch_all(&mut **tx)
                .await
                .expect("rows"),
            busbar::store::DbTx::Sqlite(tx) => sqlx::query_as(AssertSqlSafe(sql))
                .fetch_all(&mut **tx)
                .await
                .expect("rows"),
        };
        tx.rollback().await.ok();
        rows
    }

    /// Runs a query returning one text value (PostgreSQL).
    pub async fn text(&self, sql: &str) -> String {
        let mut conn = sqlx::PgConnection::connect(&self.url)
            .await
            .expect("connects");
        let text: Option<String> = sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
            .fetch_one(&mut conn)
            .await
            .expect("text");
        conn.close().await.ok();
        text.unwrap_or_default()
    }

    /// The first row of `table` whose columns equal `filter`, as JSON.
    pub async fn find(&self, table: &str, filter: &[(&str, Value)]) -> Option<Map<String, Value>> {
        let table = TableName::parse(table).expect("table name");
        let filter: Vec<(Ident, Value)> = filter
            .iter()
            .map(|(c, v)| (Ident::parse(c).expect("column"), v.clone()))
            .collect();
        let mut tx = self.store.begin().await.expect("transaction");
        let row = TargetExecutor::new(&mut tx, &self.store.catalog)
            .find(&table, &filter)
            .await
            .expect("find runs");
        tx.rollback().await.ok();
        row.map(|r| r.columns)
    }

    /// Every delivery (rows, and those inferred from the lanes) of the last
    /// engine's integrations, oldest event first; `status` filters.
    pub async fn deliveries(&self, status: Option<Status>) -> Vec<DeliveryView> {
        let generation = self.current().generation();
        self.deliveries_for(&generation, status).await
    }

    /// Every delivery of `generation`'s integrations; `status` filters.
    pub async fn deliveries_for(
        &self,
        generation: &Generation,
        status: Option<Status>,
    ) -> Vec<DeliveryView> {
        let mut tx = self.store.begin_read().await.expect("read transaction");
        let mut all = events::list_events(
            &mut tx,
            &events::EventFilter::all(OrgScope::Platform),
            i64::MAX,
        )
        .await
        .expect("events");
        all.reverse();
        let lanes = busbar::store::log::lanes_for(self.dialect());
        let rows = views::deliveries(&mut tx, OrgScope::Platform, generation, lanes, &all)
            .await
            .expect("deliveries");
        tx.rollback().await.ok();
        rows.into_iter()
            .filter(|d| status.is_none_or(|s| d.status == s))
            .collect()
    }

    fn current(&self) -> Engine {
        self.engine
            .lock()
            .unwrap()
            .clone()
            .expect("an engine was started on this database")
    }

    /// Waits until the last engine's lanes have read every event and no
    /// delivery is pending or retrying, or fails after `timeout`.
    pub async fn settle(&self, timeout: Duration) {
        let generation = self.current().generation();
        self.settle_for(&generation, timeout).await;
    }

    /// Waits until `generation`'s lanes have read every event and no
    /// delivery is pending or retrying (for a `busbar serve` started as a
    /// process), or fails after `timeout`.
    pub async fn settle_for(&self, generation: &Generation, timeout: Duration) {
        let start = Instant::now();
        loop {
            let backlog = views::backlog(&self.store, generation, 10_000)
                .await
                .expect("backlog");
            if backlog.is_empty() {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "not finished after {timeout:?}: {backlog:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stores `event` and a delivery of it through `integration`'s route
    /// for its event name, retrying at `due` after a failure, without any
    /// engine running (as a delivery that failed before a restart would
    /// be). The event goes past the lane's cursor, so only the row runs it.
    pub async fn park_delivery(
        &self,
        event: &Value,
        integration: &str,
        target: &str,
        due: chrono::DateTime<chrono::Utc>,
    ) -> uuid::Uuid {
        use busbar::store::lanes::{self, DeliveryRow};
        use busbar::store::log;
        use busbar::store::log::NewEvent;
        use busbar::store::types::{Position, Time};
        let envelope = busbar::envelope::Envelope::from_json(event).expect("a valid event");
        let mut tx = self.store.begin().await.expect("transaction");
        log::append(
            &mut tx,
            &[NewEvent {
                envelope: envelope.clone(),
                idempotency_key: None,
                parent_id: None,
            }],
            Time::now(),
        )
        .await
        .expect("event stored");
        let id = busbar::engine::delivery_id(
            envelope.organization_id,
            envelope.id,
            integration,
            &envelope.event,
            "0",
        );
        // The lanes have passed the event (as they had when the delivery
        // failed): only its row runs it.
        let sql = match self.dialect() {
            Dialect::Postgres => {
                "SELECT xid, seq FROM integrations.events WHERE organization_id = $1 AND id = $2"
            }
            Dialect::Sqlite => {
                "SELECT xid, seq FROM \"integrations.events\" WHERE organization_id = ?1 AND id = ?2"
            }
        };
        let (xid, seq): (i64, i64) = match &mut tx {
            busbar::store::DbTx::Postgres(conn) => sqlx::query_as(sql)
                .bind(envelope.organization_id)
                .bind(envelope.id)
                .fetch_one(&mut **conn)
                .await
                .expect("position"),
            busbar::store::DbTx::Sqlite(conn) => sqlx::query_as(sql)
                .bind(envelope.organization_id.to_string())
                .bind(envelope.id.to_string())
                .fetch_one(&mut **conn)
                .await
                .expect("position"),
        };
        let position = Position::new(xid, seq);
        let advance = match self.dialect() {
            Dialect::Postgres => {
                "UPDATE integrations.lanes SET cursor_xid = $2, cursor_seq = $3 \
                WHERE integration_id = $1 AND (cursor_xid, cursor_seq) < ($2, $3)"
            }
            Dialect::Sqlite => {
                "UPDATE \"integrations.lanes\" SET cursor_xid = ?2, cursor_seq = ?3 \
                WHERE integration_id = ?1 AND (cursor_xid, cursor_seq) < (?2, ?3)"
            }
        };
        match &mut tx {
            busbar::store::DbTx::Postgres(conn) => sqlx::query(advance)
                .bind(integration)
                .bind(xid)
                .bind(seq)
                .execute(&mut **conn)
                .await
                .map(|_| ())
                .expect("lanes advanced"),
            busbar::store::DbTx::Sqlite(conn) => sqlx::query(advance)
                .bind(integration)
                .bind(xid)
                .bind(seq)
                .execute(&mut **conn)
                .await
                .map(|_| ())
                .expect("lanes advanced"),
        };
        lanes::write_rows(
            &mut tx,
            &[DeliveryRow {
                id,
                event_id: envelope.id,
                organization_id: envelope.organization_id,
                integration_id: integration.into(),
                route_event: envelope.event.clone(),
                route_ordinal: 0,
                route_name: Some(String::new()),
                source_product: envelope.source.clone(),
                target_product: target.into(),
                status: Status::Retrying,
                attempts: 1,
                next_attempt_at: Time(due),
                last_error: Some("connection lost (made by the test)".into()),
                error_step: Some(1),
                generation: Some(1),
                lane: 0,
                order_key: Some(envelope.organization_id.to_string()),
                position,
                epoch: 0,
            }],
            false,
            Time::now(),
        )
        .await
        .expect("delivery stored");
        tx.commit().await.expect("commit");
        id
    }

    /// Makes the example platform refuse every employee and new hire whose
    /// email starts with `dead` (a trigger raising `boom`): a poison the
    /// engine dead-letters at step 2 of the shipped integrations, as a
    /// permanent failure. [`TestDb::cure`] takes it away.
    pub async fn poison(&self) {
        let sql = match self.dialect() {
            Dialect::Postgres => {
                "CREATE FUNCTION public.test_boom() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN IF NEW.email LIKE 'dead%' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$; \
                 CREATE TRIGGER boom BEFORE INSERT OR UPDATE ON hris.employees \
                   FOR EACH ROW EXECUTE FUNCTION public.test_boom(); \
                 CREATE TRIGGER boom BEFORE INSERT OR UPDATE ON payroll.new_hires \
                   FOR EACH ROW EXECUTE FUNCTION public.test_boom();"
            }
            Dialect::Sqlite => {
                "CREATE TRIGGER boom_employees BEFORE INSERT ON \"hris.employees\" \
                   WHEN NEW.email LIKE 'dead%' BEGIN SELECT RAISE(ABORT, 'boom'); END; \
                 CREATE TRIGGER boom_employees_update BEFORE UPDATE ON \"hris.employees\" \
                   WHEN NEW.email LIKE 'dead%' BEGIN SELECT RAISE(ABORT, 'boom'); END; \
                 CREATE TRIGGER boom_new_hires BEFORE INSERT ON \"payroll.new_hires\" \
                   WHEN NEW.email LIKE 'dead%' BEGIN SELECT RAISE(ABORT, 'boom'); END; \
                 CREATE TRIGGER boom_new_hires_update BEFORE UPDATE ON \"payroll.new_hires\" \
                   WHEN NEW.email LIKE 'dead%' BEGIN SELECT RAISE(ABORT, 'boom'); END;"
            }
        };
        self.store
            .execute_script(sql)
            .await
            .expect("poison installed");
    }

    /// Takes away [`TestDb::poison`].
    pub async fn cure(&self) {
        let sql = match self.dialect() {
            Dialect::Postgres => {
                "DROP TRIGGER boom ON hris.employees; DROP TRIGGER boom ON payroll.new_hires;"
            }
            Dialect::Sqlite => {
                "DROP TRIGGER boom_employees; DROP TRIGGER boom_employees_update; \
                 DROP TRIGGER boom_new_hires; DROP TRIGGER boom_new_hires_update;"
            }
        };
        self.store
            .execute_script(sql)
            .await
            .expect("poison removed");
    }

    /// Starts an engine on the shipped integrations.
    pub async fn engine(&self) -> Engine {
        self.engine_on(
            &root().join("integrations.d"),
            Some(&root().join("schemas/events")),
        )
        .await
    }

    /// Starts an engine on an integrations directory.
    pub async fn engine_on(&self, dir: &Path, contracts: Option<&Path>) -> Engine {
        self.engine_with(dir, contracts, |_| {}).await
    }

    /// Starts an engine on an integrations directory with adjusted tuning.
    pub async fn engine_with(
        &self,
        dir: &Path,
        contracts: Option<&Path>,
        tune: impl FnOnce(&mut EngineConfig),
    ) -> Engine {
        let generation =
            busbar::serve::load_generation(dir, contracts, 1).expect("integrations compile");
        let mut config = EngineConfig::for_dialect(self.dialect());
        config.poll_interval = Duration::from_millis(50);
        tune(&mut config);
        let engine = Engine::start(self.store.clone(), generation, config)
            .await
            .expect("engine starts");
        *self.engine.lock().unwrap() = Some(engine.clone());
        engine
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.admin.take() else {
            return;
        };
        let store = self.store.clone();
        // Dropping the database needs its connections closed first; do it
        // on a thread of its own, as Drop cannot await.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                store.close().await;
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut admin)
                    .await;
                }
            });
        })
        .join();
    }
}

/// `postgres://host/db` with another database name.
pub fn database_url(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (admin_url, String::new()),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[scheme_end..].find('/').map(|i| i + scheme_end);
    match path_start {
        Some(i) => format!("{}/{name}{query}", &base[..i]),
        None => format!("{base}/{name}{query}"),
    }
}

/// `hris.employees` → `"hris.employees"` for SQLite test SQL.
fn sqlite_names(sql: &str) -> String {
    let pattern = regex::Regex::new(r#"\b(core|hris|payroll|integrations|test)\.([a-z_]+)\b"#)
        .expect("regex");
    pattern.replace_all(sql, "\"$1.$2\"").into_owned()
}

/// A `recruitiq/candidate.hired` event.
pub fn candidate_hired(organization: uuid::Uuid, email: &str) -> Value {
    serde_json::json!({
        "source": "recruitiq",
        "event": "candidate.hired",
        "organization_id": organization,
        "occurred_at": "2026-11-28T09:30:00Z",
        "data": {
            "candidate": {
                "id": uuid::Uuid::new_v4(),
                "firstName": "Ada",
                "lastName": "Lovelace",
                "email": email,
                "phone": "+31 20 555 0100"
            },
            "hiredBy": busbar::dev::USER,
            "jobTitle": "Analytical Engineer",
            "department": "Engineering",
            "startDate": "2027-01-04",
            "offer": { "salary": 72000, "currency": "EUR", "payFrequency": "monthly" }
        }
    })
}

/// What a `busbar` command line printed, and its exit status.
#[derive(Debug)]
pub struct CliOutput {
    pub status: CliStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// The exit status and both streams, for assertion messages.
    pub fn show(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.status.code(),
            self.stdout,
            self.stderr
        )
    }
}

/// A command's exit status, asked like `std::process::ExitStatus`.
#[derive(Debug, Clone, Copy)]
pub struct CliStatus(u8);

impl CliStatus {
    pub fn code(self) -> Option<i32> {
        Some(self.0.into())
    }

    pub fn success(self) -> bool {
        self.0 == 0
    }
}

/// Runs `busbar <args>` in this process: `busbar::cli::main`, which is all
/// the binary does besides choosing the allocator, on a thread of its own
/// (commands start their own runtime), with styles dropped. Relative paths
/// among `args` are taken from `dir`, and `dir/` is taken out of what the
/// command prints, so its output reads as if it had run in `dir`.
pub fn busbar_cli(dir: &Path, args: &[&str]) -> CliOutput {
    let mut argv = vec![std::ffi::OsString::from("busbar")];
    for arg in args {
        let path = dir.join(arg);
        if !arg.starts_with('-') && !arg.contains("://") && path.exists() {
            argv.push(path.into());
        } else {
            argv.push(arg.into());
        }
    }
    let (code, stdout, stderr) = std::thread::spawn(move || {
        let mut out = anstream::StripStream::new(Vec::new());
        let mut err = anstream::StripStream::new(Vec::new());
        let code = busbar::cli::main(argv, &mut out, &mut err);
        (code, out.into_inner(), err.into_inner())
    })
    .join()
    .expect("the command does not panic");
    let prefix = format!("{}/", dir.display());
    let relative = |bytes: Vec<u8>| {
        String::from_utf8(bytes)
            .expect("UTF-8 output")
            .replace(&prefix, "")
    };
    CliOutput {
        status: CliStatus(code),
        stdout: relative(stdout),
        stderr: relative(stderr),
    }
}

/// [`busbar_cli`] from an async test, off its runtime's threads.
pub async fn busbar_cli_async(dir: PathBuf, args: Vec<String>) -> CliOutput {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        busbar_cli(&dir, &args)
    })
    .await
    .expect("the command does not panic")
}
