//! Delivery into products' own databases (issue 17): targets in a second
//! PostgreSQL database and in MariaDB, exactly once without XA.
//!
//! Each integration here writes into the other database and reads
//! busbar's own (`test.settings`), and emits an event that an integration
//! writing into busbar's own database applies. Audit triggers in the
//! target count every committed write: an event applied twice, or a write
//! of a batch whose bookkeeping was lost and that ran again, shows there.
//!
//! The PostgreSQL target needs `TEST_DATABASE_URL`, the MariaDB one
//! `TEST_MARIADB_URL` (both at build time, as the other suites); busbar's
//! own database is SQLite or PostgreSQL.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::AssertSqlSafe;

use crate::support::TestDb;

/// A target database: a second PostgreSQL database or a MariaDB one.
enum Target {
    Postgres(TestDb),
    #[allow(dead_code)]
    MariaDb(crate::mariadb::MariaDb),
}

impl Target {
    async fn postgres() -> Target {
        Target::Postgres(TestDb::postgres_unmigrated().await)
    }

    #[allow(dead_code)]
    async fn mariadb() -> Target {
        Target::MariaDb(crate::mariadb::MariaDb::new().await)
    }

    fn url(&self) -> String {
        match self {
            Target::Postgres(db) => db.url.clone(),
            Target::MariaDb(db) => db.url(),
        }
    }

    /// The schema the integrations name its tables with.
    fn schema(&self) -> String {
        match self {
            Target::Postgres(_) => "nexus".to_owned(),
            Target::MariaDb(db) => db.name.clone(),
        }
    }

    /// The ledger and its audit trigger.
    async fn create_tables(&self) {
        match self {
            Target::Postgres(db) => {
                db.execute(
                    "CREATE SCHEMA nexus;
                     CREATE TABLE nexus.ledger (event_id UUID PRIMARY KEY, item INTEGER NOT NULL, applied INTEGER NOT NULL);
                     CREATE TABLE nexus.audit (n BIGSERIAL PRIMARY KEY, event_id UUID NOT NULL);
                     CREATE FUNCTION nexus.audit() RETURNS trigger LANGUAGE plpgsql AS
                       $$ BEGIN INSERT INTO nexus.audit (event_id) VALUES (NEW.event_id); RETURN NEW; END $$;
                     CREATE TRIGGER audit AFTER INSERT OR UPDATE ON nexus.ledger
                       FOR EACH ROW EXECUTE FUNCTION nexus.audit();",
                )
                .await
            }
            Target::MariaDb(db) => {
                db.execute(
                    "CREATE TABLE ledger (event_id CHAR(36) PRIMARY KEY, item INT NOT NULL, applied INT NOT NULL);
                     CREATE TABLE audit (n BIGINT AUTO_INCREMENT PRIMARY KEY, event_id CHAR(36) NOT NULL);
                     CREATE TRIGGER ledger_inserted AFTER INSERT ON ledger FOR EACH ROW INSERT INTO audit (event_id) VALUES (NEW.event_id);
                     CREATE TRIGGER ledger_updated AFTER UPDATE ON ledger FOR EACH ROW INSERT INTO audit (event_id) VALUES (NEW.event_id)",
                )
                .await
            }
        }
    }

    async fn execute_sql(&self, sql: &str) {
        match self {
            Target::Postgres(db) => db.execute(sql).await,
            Target::MariaDb(db) => db.execute(sql).await,
        }
    }

    async fn scalar(&self, sql: &str) -> i64 {
        match self {
            Target::Postgres(db) => db.scalar(sql).await,
            Target::MariaDb(db) => {
                let value: Option<i64> =
                    sqlx::query_scalar(AssertSqlSafe(format!("SELECT CAST(({sql}) AS SIGNED)")))
                        .fetch_one(&db.pool)
                        .await
                        .unwrap_or_else(|e| panic!("{sql}: {e}"));
                value.unwrap_or(0)
            }
        }
    }

    /// `table` of the target, as its SQL names it.
    fn table(&self, table: &str) -> String {
        match self {
            Target::Postgres(_) => format!("nexus.{table}"),
            Target::MariaDb(_) => table.to_owned(),
        }
    }

    /// Batches applied here, by lane.
    async fn lane_batches(&self) -> std::collections::BTreeMap<i64, i64> {
        let rows: Vec<(String, String)> = match self {
            Target::Postgres(db) => {
                db.rows("SELECT CAST(lane AS TEXT), CAST(batch_seq AS TEXT) FROM busbar.progress")
                    .await
            }
            Target::MariaDb(db) => sqlx::query_as(
                "SELECT CAST(lane AS CHAR), CAST(batch_seq AS CHAR) FROM busbar_progress",
            )
            .fetch_all(&db.pool)
            .await
            .unwrap(),
        };
        rows.into_iter()
            .map(|(lane, seq)| (lane.parse().unwrap(), seq.parse().unwrap()))
            .collect()
    }

    /// Batches applied here, every lane together.
    async fn batches(&self) -> i64 {
        let sql = match self {
            Target::Postgres(_) => {
                "SELECT CAST(COALESCE(SUM(batch_seq), 0) AS BIGINT) FROM busbar.progress"
            }
            Target::MariaDb(_) => "SELECT COALESCE(SUM(batch_seq), 0) FROM busbar_progress",
        };
        self.scalar(sql).await
    }
}

/// The integrations: `ledger` into the target (reading busbar's own
/// `test.settings`, emitting `item.booked`), `journal` into busbar's own.
fn write_integrations(dir: &Path, schema: &str, variable: &str) {
    std::fs::write(
        dir.join("databases.yaml"),
        format!("databases:\n  nexus:\n    url: ${{{variable}}}\n    schemas: [{schema}]\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("ledger.yaml"),
        format!(
            r#"
id: ledger
source: load
target: books
order_by: $.data.item
routes:
  - on: item.added
    steps:
      - find: test.settings
        where: {{ id: 1 }}
        as: settings
      - find: {schema}.ledger
        where: {{ event_id: $.id }}
        as: previous
      - upsert: {schema}.ledger
        key: [event_id]
        values:
          event_id: $.id
          item: $.data.item
          applied: "{{{{ (previous.applied if previous else 0) + settings.step }}}}"
      - emit: item.booked
        data: {{ item: $.data.item }}
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("journal.yaml"),
        r#"
id: journal
source: books
target: audit
order_by: $.data.item
routes:
  - on: item.booked
    steps:
      - find: test.journal
        where: { event_id: $.id }
        as: previous
      - upsert: test.journal
        key: [event_id]
        values:
          event_id: $.id
          item: $.data.item
          applied: "{{ (previous.applied if previous else 0) + 1 }}"
"#,
    )
    .unwrap();
}

/// busbar's own tables of the test.
async fn create_own_tables(db: &TestDb) {
    if db.dialect() == busbar::store::Dialect::Postgres {
        db.execute("CREATE SCHEMA test").await;
    }
    db.execute("CREATE TABLE test.settings (id INTEGER PRIMARY KEY, step INTEGER NOT NULL)")
        .await;
    db.execute("INSERT INTO test.settings (id, step) VALUES (1, 1)")
        .await;
    db.execute(
        "CREATE TABLE test.journal (event_id UUID PRIMARY KEY, item INTEGER, applied INTEGER NOT NULL)",
    )
    .await;
}

fn serve(db: &TestDb, dir: &Path, variable: &str, url: &str, failpoint: Option<&str>) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_busbar"));
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db.url,
            "--dir",
        ])
        .arg(dir)
        .arg("--contracts")
        .arg(dir.join("no-contracts"))
        .env(variable, url)
        .env("BUSBAR_LOG", "error")
        .env_remove("BUSBAR_FAILPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(failpoint) = failpoint {
        command.env("BUSBAR_FAILPOINT", failpoint);
    }
    command.spawn().expect("busbar serve starts")
}

/// busbar's count of batches applied in the target, by lane.
async fn own_lane_batches(db: &TestDb) -> std::collections::BTreeMap<i64, i64> {
    db.rows("SELECT CAST(lane AS TEXT), CAST(batch_seq AS TEXT) FROM integrations.lanes WHERE integration_id = 'ledger'")
        .await
        .into_iter()
        .map(|(lane, seq)| (lane.parse().unwrap(), seq.parse().unwrap()))
        .collect()
}

/// busbar's count of batches applied in the target, every lane together.
async fn own_batches(db: &TestDb) -> i64 {
    db.scalar("SELECT CAST(COALESCE(SUM(batch_seq), 0) AS BIGINT) FROM integrations.lanes WHERE integration_id = 'ledger'")
        .await
}

/// `kill -9` under load and a crash between the target's commit and
/// busbar's, five times in all, then a clean run: every event applied
/// once in the target (its audit trigger saw one write each), every
/// emitted event once in busbar's own database.
async fn killed_between_the_commits(db: TestDb, target: Target) {
    const ROUND: usize = 600;
    create_own_tables(&db).await;
    target.create_tables().await;
    let dir = tempfile::tempdir().unwrap();
    let variable = format!("ELSEWHERE_{}", uuid::Uuid::new_v4().simple());
    write_integrations(dir.path(), &target.schema(), &variable);
    let url = target.url();
    let ledger = target.table("ledger");
    let mut inserted = 0;
    let mut failpoint_crashes = 0;
    for round in 0..5 {
        db.insert_item_events(inserted..inserted + ROUND).await;
        inserted += ROUND;
        let before = target
            .scalar(&format!("SELECT COUNT(*) FROM {ledger}"))
            .await;
        if round % 2 == 0 {
            // Dies right after a batch commits in the target.
            let failpoint = format!("after-target-commit@{}", 1 + (round / 2) % 2);
            let mut child = serve(&db, dir.path(), &variable, &url, Some(&failpoint));
            let start = Instant::now();
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                if start.elapsed() > Duration::from_secs(60) {
                    child.kill().ok();
                    panic!("round {round}: the failpoint was never reached");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert!(
                !status.success(),
                "round {round}: aborted, not exited: {status:?}"
            );
            failpoint_crashes += 1;
            // The lane that died is one batch ahead in the target; a lane
            // killed so in an earlier round and not visited since may be
            // too; none is further ahead, none behind.
            let (there, here) = (target.lane_batches().await, own_lane_batches(&db).await);
            let ahead: Vec<i64> = there
                .iter()
                .map(|(lane, seq)| seq - here.get(lane).copied().unwrap_or(0))
                .collect();
            assert!(
                ahead.contains(&1) && ahead.iter().all(|a| *a == 0 || *a == 1),
                "round {round}: target {there:?}, busbar {here:?}"
            );
        } else {
            let mut child = serve(&db, dir.path(), &variable, &url, None);
            let start = Instant::now();
            loop {
                let now = target
                    .scalar(&format!("SELECT COUNT(*) FROM {ledger}"))
                    .await;
                if now >= before + 100 {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "round {round}: no progress"
                );
                assert!(
                    child.try_wait().unwrap().is_none(),
                    "busbar serve exited early"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            child.kill().expect("SIGKILL");
            child.wait().unwrap();
        }
    }
    assert_eq!(failpoint_crashes, 3);

    let mut last = serve(&db, dir.path(), &variable, &url, None);
    let generation =
        busbar::serve::load_generation(dir.path(), Some(&dir.path().join("no-contracts")), 1)
            .expect("integrations compile");
    db.settle_for(&generation, Duration::from_secs(180)).await;
    let status = Command::new("kill")
        .args(["-TERM", &last.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(last.wait().unwrap().success(), "graceful shutdown exits 0");

    let n = inserted as i64;
    assert_eq!(
        target
            .scalar(&format!("SELECT COUNT(*) FROM {ledger}"))
            .await,
        n
    );
    assert_eq!(
        target
            .scalar(&format!("SELECT COUNT(*) FROM {ledger} WHERE applied <> 1"))
            .await,
        0,
        "an event was applied twice in the target"
    );
    assert_eq!(
        target
            .scalar(&format!("SELECT COUNT(*) FROM {}", target.table("audit")))
            .await,
        n,
        "every committed write in the target, counted by its trigger"
    );
    assert_eq!(db.count("test.journal").await, n);
    assert_eq!(
        db.count_where("test.journal", "applied <> 1").await,
        0,
        "an emitted event was applied twice"
    );
    assert_eq!(
        db.count_where("integrations.events", "event_name = 'item.booked'")
            .await,
        n,
        "each emitted event reached the log once"
    );
    assert_eq!(db.count("integrations.deliveries").await, 0, "no exception");
    assert_eq!(target.batches().await, own_batches(&db).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "PostgreSQL suite skipped: TEST_DATABASE_URL was not set when the tests were built"
)]
async fn into_another_postgres_database_killed_between_the_commits_from_sqlite() {
    killed_between_the_commits(TestDb::sqlite().await, Target::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "PostgreSQL suite skipped: TEST_DATABASE_URL was not set when the tests were built"
)]
async fn into_another_postgres_database_killed_between_the_commits_from_postgres() {
    killed_between_the_commits(TestDb::postgres().await, Target::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(postgres_tests, mariadb_tests)),
    ignore = "needs TEST_DATABASE_URL and TEST_MARIADB_URL when the tests were built"
)]
async fn into_mariadb_killed_between_the_commits_from_postgres() {
    killed_between_the_commits(TestDb::postgres().await, Target::mariadb().await).await;
}

/// `local`: the same events into busbar's own database, to show that an
/// integration not using the target goes on while it is down.
const LOCAL: &str = r#"
id: local
source: load
target: here
order_by: $.data.item
routes:
  - on: item.added
    steps:
      - upsert: test.local
        key: [event_id]
        values: { event_id: $.id, item: $.data.item }
"#;

/// Makes the PostgreSQL database of `url` refuse connections (and cuts
/// the ones it has), or accept them again.
async fn refuse_connections(url: &str, refuse: bool) {
    let admin = sqlx::PgPool::connect(&std::env::var("TEST_DATABASE_URL").unwrap())
        .await
        .unwrap();
    let name = url.rsplit('/').next().unwrap();
    let mut statements = vec![format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS {}",
        !refuse
    )];
    if refuse {
        statements.push(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ));
    }
    for sql in statements {
        sqlx::query(AssertSqlSafe(sql))
            .execute(&admin)
            .await
            .unwrap();
    }
    admin.close().await;
}

/// `GET /api/integrations/status`, with a platform key.
async fn integrations_status(base: &str, key: &str) -> serde_json::Value {
    crate::console::client()
        .get(format!("{base}/api/integrations/status"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// One integration of a status answer.
fn integration<'s>(status: &'s serde_json::Value, id: &str) -> &'s serde_json::Value {
    status["integrations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("{id} is in the status: {status}"))
}

/// The target PostgreSQL database refuses connections for a while under
/// load (`ALLOW_CONNECTIONS false`, its backends terminated mid-batch):
/// no dead letter, the integration into busbar's own database goes on,
/// the status says which database the other waits on and since when, and
/// everything is applied once after it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "PostgreSQL suite skipped: TEST_DATABASE_URL was not set when the tests were built"
)]
async fn a_target_database_that_refuses_connections_holds_back_only_its_integrations() {
    const BEFORE: usize = 300;
    const DURING: usize = 600;
    let db = TestDb::postgres().await;
    let target = Target::postgres().await;
    let Target::Postgres(other) = &target else {
        unreachable!()
    };
    create_own_tables(&db).await;
    db.execute("CREATE TABLE test.local (event_id UUID PRIMARY KEY, item INTEGER)")
        .await;
    target.create_tables().await;
    let dir = tempfile::tempdir().unwrap();
    let variable = format!("ELSEWHERE_{}", uuid::Uuid::new_v4().simple());
    write_integrations(dir.path(), &target.schema(), &variable);
    std::fs::write(dir.path().join("local.yaml"), LOCAL).unwrap();
    // SAFETY: the variable's name is this test's own; nothing else reads
    // or writes it.
    unsafe { std::env::set_var(&variable, target.url()) };
    let engine = db.engine_on(dir.path(), None).await;
    db.insert_item_events(0..BEFORE).await;
    db.settle(Duration::from_secs(60)).await;
    assert_eq!(
        target.scalar("SELECT COUNT(*) FROM nexus.ledger").await,
        BEFORE as i64
    );

    // Down, with busbar's connections there cut.
    refuse_connections(&other.url, true).await;
    let down_at = Instant::now();
    db.insert_item_events(BEFORE..BEFORE + DURING).await;
    // The local integration applies everything while the target is down.
    loop {
        if db.count("test.local").await == (BEFORE + DURING) as i64 {
            break;
        }
        assert!(
            down_at.elapsed() < Duration::from_secs(20),
            "the integration into busbar's own database was held back by the other database"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let local_took = down_at.elapsed();
    // Shown down once a batch of the ledger failed there and nexus did not
    // answer `SELECT 1` (a second at most; longer on a busy machine).
    let nexus = loop {
        let nexus = engine
            .databases()
            .into_iter()
            .find(|d| d.name == "nexus")
            .expect("nexus is open");
        if !nexus.up || down_at.elapsed() > Duration::from_secs(20) {
            break nexus;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!nexus.up, "nexus is shown down: {nexus:?}");
    let error = nexus.error.clone().unwrap_or_default();
    assert!(
        !error.contains(&target.url()) && !error.is_empty(),
        "the error says why, without the URL: {error}"
    );
    // The status API, /metrics and the console's integration page say so.
    let server = crate::console::serve_engine(engine.clone()).await;
    let key =
        busbar::store::keys::create_key(&db.store, None, &busbar::store::keys::Scope::ALL, None)
            .await
            .unwrap();
    let status = integrations_status(&server.base, &key.key).await;
    let ledger = integration(&status, "ledger");
    assert_eq!(ledger["database"], "nexus");
    assert_eq!(
        ledger["waiting_on_database"]["database"], "nexus",
        "{ledger}"
    );
    let local = integration(&status, "local");
    assert_eq!(local["database"], "busbar");
    assert!(local["waiting_on_database"].is_null());
    let metrics = crate::console::client()
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("busbar_database_up{database=\"nexus\"} 0"),
        "{metrics}"
    );
    let cookie = crate::console::session(&server.base, &key.key).await;
    let page = crate::console::get(&server.base, "/console/integrations/ledger", &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Waiting on database <code>nexus</code> since"),
        "{page}"
    );
    assert!(!page.contains(&target.url()), "the page shows no URL");
    // Stay down a while: delivery attempts must not count.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        db.count_where("integrations.deliveries", "status = 'dead'")
            .await,
        0,
        "an outage is not a dead letter"
    );
    assert_eq!(
        db.count_where("integrations.deliveries", "attempts > 1")
            .await,
        0
    );
    refuse_connections(&other.url, false).await;
    let up_at = Instant::now();
    db.settle(Duration::from_secs(60)).await;
    let recovered = up_at.elapsed();
    eprintln!(
        "target down: the local integration applied {DURING} events in {local_took:?}; \
         everything applied {recovered:?} after the target returned"
    );
    assert!(engine.databases().iter().all(|d| d.up));

    let n = (BEFORE + DURING) as i64;
    assert_eq!(target.scalar("SELECT COUNT(*) FROM nexus.ledger").await, n);
    assert_eq!(
        target.scalar("SELECT COUNT(*) FROM nexus.audit").await,
        n,
        "each write once"
    );
    assert_eq!(db.count("test.journal").await, n);
    assert_eq!(
        db.count_where("integrations.deliveries", "status = 'dead'")
            .await,
        0
    );
    engine.shutdown().await;
}

/// `busbar migrate --target NAME` makes the progress table in a database
/// of databases.yaml (PostgreSQL and MariaDB), and says clearly what is
/// wrong with a name it does not know or a variable that is not set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(postgres_tests, mariadb_tests)),
    ignore = "needs TEST_DATABASE_URL and TEST_MARIADB_URL when the tests were built"
)]
async fn migrate_target_makes_the_progress_table_in_each_named_database() {
    let postgres = Target::postgres().await;
    let mariadb = Target::mariadb().await;
    let dir = tempfile::tempdir().unwrap();
    let (pg_var, maria_var) = (
        format!("MIGRATE_PG_{}", uuid::Uuid::new_v4().simple()),
        format!("MIGRATE_MARIA_{}", uuid::Uuid::new_v4().simple()),
    );
    std::fs::write(
        dir.path().join("databases.yaml"),
        format!(
            "databases:\n  nexus:\n    url: ${{{pg_var}}}\n    schemas: [hris]\n  \
             paylinq:\n    url: ${{{maria_var}}}\n    schemas: [payroll]\n"
        ),
    )
    .unwrap();
    let migrate = |names: &[&str]| {
        let mut args = vec!["migrate".to_owned(), "--dir".to_owned(), ".".to_owned()];
        for name in names {
            args.extend(["--target".to_owned(), (*name).to_owned()]);
        }
        crate::support::busbar_cli_async(dir.path().to_owned(), args)
    };

    let unset = migrate(&["nexus"]).await;
    assert!(!unset.status.success());
    assert!(
        unset.stderr.contains(&format!(
            "database `nexus`: environment variable {pg_var} is not set"
        )),
        "{}",
        unset.show()
    );
    // SAFETY: the variables' names are this test's own.
    unsafe {
        std::env::set_var(&pg_var, postgres.url());
        std::env::set_var(&maria_var, mariadb.url());
    }
    let unknown = migrate(&["payroll"]).await;
    assert!(
        !unknown.status.success()
            && unknown.stderr.contains("no database `payroll`")
            && unknown.stderr.contains("nexus, paylinq"),
        "{}",
        unknown.show()
    );
    let done = migrate(&["nexus", "paylinq"]).await;
    assert!(done.status.success(), "{}", done.show());
    assert!(
        done.stdout
            .contains("progress table ready in database `nexus`")
    );
    assert!(
        done.stdout
            .contains("progress table ready in database `paylinq`")
    );
    assert_eq!(
        postgres.batches().await,
        0,
        "busbar.progress is there, empty"
    );
    assert_eq!(
        mariadb.batches().await,
        0,
        "busbar_progress is there, empty"
    );
    // Twice is fine.
    assert!(migrate(&["nexus", "paylinq"]).await.status.success());
}

/// The ordering counter of `ordering.rs` with its table in MariaDB: 100
/// keys, 16 concurrent publishers, a trigger failing 5 % of the writes
/// with a deadlock error (retried): every key counts every event once, in
/// publish order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(postgres_tests, mariadb_tests)),
    ignore = "needs TEST_DATABASE_URL and TEST_MARIADB_URL when the tests were built"
)]
async fn a_counter_in_mariadb_counts_every_event_once_in_publish_order() {
    use crate::ordering::{engine_publisher, publish_all};
    let db = TestDb::postgres().await;
    let maria = crate::mariadb::MariaDb::new().await;
    maria
        .execute(
            "CREATE TABLE items (`key` VARCHAR(50) PRIMARY KEY, version INT NOT NULL, \
             last_seq INT NOT NULL, seqs LONGTEXT NOT NULL)",
        )
        .await;
    sqlx::query(
        "CREATE TRIGGER flaky BEFORE UPDATE ON items FOR EACH ROW \
         IF RAND() < 0.05 THEN SIGNAL SQLSTATE '40001' SET MESSAGE_TEXT = 'flaky', MYSQL_ERRNO = 1213; END IF",
    )
    .execute(&maria.pool)
    .await
    .expect("the flaky trigger is made");
    let dir = tempfile::tempdir().unwrap();
    let variable = format!("COUNTER_{}", uuid::Uuid::new_v4().simple());
    let schema = &maria.name;
    std::fs::write(
        dir.path().join("databases.yaml"),
        format!("databases:\n  paylinq:\n    url: ${{{variable}}}\n    schemas: [{schema}]\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("counter.yaml"),
        format!(
            r#"
id: counter
source: tally
target: paylinq
order_by: $.data.key
retry: {{ max_attempts: 1000, initial: 20ms, max: 200ms }}
routes:
  - on: item.changed
    steps:
      - find: {schema}.items
        where: {{ key: $.data.key }}
        as: current
      - upsert: {schema}.items
        key: [key]
        values:
          key: $.data.key
          version: "{{{{ (current.version if current else 0) + 1 }}}}"
          last_seq: $.data.seq
          seqs: "{{{{ (current.seqs if current else '') ~ ',' ~ data.seq }}}}"
"#
        ),
    )
    .unwrap();
    // SAFETY: the variable's name is this test's own.
    unsafe { std::env::set_var(&variable, maria.url()) };
    let engine = db
        .engine_with(dir.path(), None, |config| {
            config.workers = 4;
            config.batch_size = 100;
        })
        .await;
    let (keys, per_key) = (100, 30);
    publish_all(engine_publisher(engine.clone()), keys, per_key, 16).await;
    db.settle(Duration::from_secs(180)).await;
    let expected: String = (0..per_key).map(|s| format!(",{s}")).collect();
    let rows: Vec<(String, i32, i32, String)> =
        sqlx::query_as("SELECT `key`, version, last_seq, seqs FROM items ORDER BY `key`")
            .fetch_all(&maria.pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), keys, "every key was applied");
    let wrong: Vec<String> = rows
        .iter()
        .filter(|(_, version, last_seq, seqs)| {
            *version != per_key as i32 || *last_seq != per_key as i32 - 1 || *seqs != expected
        })
        .map(|(key, version, last_seq, seqs)| {
            format!("{key}: version {version} last_seq {last_seq} seqs {seqs}")
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "applied out of order, lost or twice:\n{}",
        wrong.join("\n")
    );
    let retried = db
        .count_where(
            "integrations.deliveries",
            "status = 'delivered' AND attempts > 1",
        )
        .await;
    assert!(retried > 0, "the flaky trigger made no delivery retry");
    assert_eq!(
        db.count_where("integrations.deliveries", "status = 'dead'")
            .await,
        0
    );
    engine.shutdown().await;
}

/// MariaDB's traps through the engine: each value that does not fit is a
/// dead delivery whose error names the column and the value, and nothing
/// of it is written; the good event beside them is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(postgres_tests, mariadb_tests)),
    ignore = "needs TEST_DATABASE_URL and TEST_MARIADB_URL when the tests were built"
)]
async fn each_mariadb_type_trap_is_a_dead_delivery_naming_column_and_value() {
    use serde_json::json;
    let db = TestDb::postgres().await;
    let maria = crate::mariadb::MariaDb::new().await;
    maria
        .execute(
            "CREATE TABLE people (id INT PRIMARY KEY, code VARCHAR(3), n TINYINT UNSIGNED, \
             name VARCHAR(20) CHARACTER SET utf8mb3, born DATE, amount DECIMAL(5,2), active TINYINT(1), \
             seen DATETIME)",
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let variable = format!("TRAPS_{}", uuid::Uuid::new_v4().simple());
    let schema = &maria.name;
    std::fs::write(
        dir.path().join("databases.yaml"),
        format!("databases:\n  paylinq:\n    url: ${{{variable}}}\n    schemas: [{schema}]\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("people.yaml"),
        format!(
            "id: people\nsource: hr\ntarget: paylinq\norder_by: $.data.id\nroutes:\n  - on: person.changed\n    steps:\n      \
             - upsert: {schema}.people\n        key: [id]\n        values:\n          id: $.data.id\n          code: $.data.code\n          \
             n: $.data.n\n          name: $.data.name\n          born: $.data.born\n          amount: $.data.amount\n          \
             active: $.data.active\n          seen: $.data.seen\n"
        ),
    )
    .unwrap();
    // SAFETY: the variable's name is this test's own.
    unsafe { std::env::set_var(&variable, maria.url()) };
    let engine = db.engine_on(dir.path(), None).await;
    let traps = [
        ("code", json!("abcdef")),
        ("n", json!(-1)),
        ("n", json!(300)),
        ("name", json!("hi 😀")),
        ("born", json!("0000-00-00")),
        ("amount", json!(1.234)),
        ("amount", json!(12345)),
        ("active", json!(2)),
        ("seen", json!("not a time")),
    ];
    let fine = json!({ "code": "abc", "n": 255, "name": "Ada", "born": "1815-12-10",
                       "amount": 999.99, "active": true, "seen": "2026-03-01T23:30:00-05:00" });
    let mut ids = Vec::new();
    for (i, (column, value)) in traps.iter().enumerate() {
        let mut data = fine.clone();
        data["id"] = json!(i + 1);
        data[*column] = value.clone();
        let event = json!({
            "source": "hr", "event": "person.changed", "organization_id": busbar::dev::ORGANIZATION,
            "data": data
        });
        ids.push(
            engine
                .publish_json(&event, None)
                .await
                .expect("published")
                .id,
        );
    }
    let mut data = fine.clone();
    data["id"] = json!(100);
    let good = json!({
        "source": "hr", "event": "person.changed", "organization_id": busbar::dev::ORGANIZATION,
        "data": data
    });
    engine.publish_json(&good, None).await.expect("published");
    db.settle(Duration::from_secs(60)).await;
    let dead = db
        .deliveries(Some(busbar::store::events::Status::Dead))
        .await;
    assert_eq!(dead.len(), traps.len(), "{dead:#?}");
    for ((column, value), id) in traps.iter().zip(&ids) {
        let delivery = dead
            .iter()
            .find(|d| d.event_id == *id)
            .unwrap_or_else(|| panic!("no dead delivery for {column} = {value}"));
        let error = delivery.last_error.clone().unwrap_or_default();
        let shown = match value {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        assert!(
            error.contains(&format!("column `{column}`")) && error.contains(&shown),
            "{column} = {value}: {error}"
        );
    }
    assert_eq!(
        maria.count("people").await,
        1,
        "only the good row is written"
    );
    let row: (String, i64, String) =
        sqlx::query_as("SELECT code, CAST(amount * 100 AS SIGNED), CAST(seen AS CHAR) FROM people")
            .fetch_one(&maria.pool)
            .await
            .unwrap();
    assert_eq!(
        row,
        ("abc".to_owned(), 99999, "2026-03-02 04:30:00".to_owned())
    );
    engine.shutdown().await;
}

/// `busbar check --database-url` reads each table from the database that
/// holds it: busbar's own tables from the URL given, those of a database
/// of databases.yaml from that database (its URL from the environment).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "PostgreSQL suite skipped: TEST_DATABASE_URL was not set when the tests were built"
)]
async fn check_reads_each_table_from_the_database_that_holds_it() {
    let db = TestDb::postgres().await;
    let target = Target::postgres().await;
    create_own_tables(&db).await;
    target.create_tables().await;
    let dir = tempfile::tempdir().unwrap();
    let variable = format!("CHECK_{}", uuid::Uuid::new_v4().simple());
    write_integrations(dir.path(), &target.schema(), &variable);
    let check = || {
        crate::support::busbar_cli_async(
            dir.path().to_owned(),
            vec![
                "check".into(),
                ".".into(),
                "--database-url".into(),
                db.url.clone(),
            ],
        )
    };
    let unset = check().await;
    assert!(
        unset.stdout.contains(&format!(
            "the tables of database `nexus` were not checked: environment variable {variable} is not set"
        )) && !unset.stdout.contains("does not exist"),
        "{}",
        unset.show()
    );
    // SAFETY: the variable's name is this test's own.
    unsafe { std::env::set_var(&variable, target.url()) };
    let fine = check().await;
    assert!(
        fine.status.success() && fine.stdout.contains("0 errors"),
        "{}",
        fine.show()
    );
    // A column the target lacks is found there, at its line.
    target
        .execute_sql("ALTER TABLE nexus.ledger RENAME COLUMN item TO item_number")
        .await;
    let wrong = check().await;
    assert!(!wrong.status.success());
    assert!(
        wrong
            .stdout
            .contains("ledger.yaml:19:11: error: table `nexus.ledger` has no column `item`"),
        "{}",
        wrong.show()
    );
}

/// `busbar test` runs every table on the test's own database, whatever
/// databases.yaml says: the example of separate databases passes its case
/// with none of the databases' variables set, writing nothing elsewhere.
#[test]
fn busbar_test_runs_a_directory_with_databases_on_its_own_database() {
    let dir = tempfile::tempdir().unwrap();
    let from = crate::support::root().join("examples/separate-databases/integrations.d");
    for entry in std::fs::read_dir(&from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    std::fs::write(dir.path().join("tests/hire.test.yaml"), HIRE_CASE).unwrap();
    let contracts = crate::support::root().join("schemas/events");
    let run = crate::support::busbar_cli(
        dir.path(),
        &["test", ".", "--contracts", contracts.to_str().unwrap()],
    );
    assert!(run.status.success(), "{}", run.show());
    assert!(run.stdout.contains("1 passed"), "{}", run.show());
}

const HIRE_CASE: &str = r#"
description: The example's hire reaches nexus's and paylinq's tables, on the test's own database.
platform: example
defaults:
  source: recruitiq
  event: candidate.hired
  organization_id: 7d0e6a52-3c59-4a8e-9d7a-0c1f2b3a4d5e
  occurred_at: "2026-11-28T09:30:00Z"
  data:
    candidate:
      id: 5b8f2c1e-9a47-4d3b-8e6f-1a2b3c4d5e6f
      firstName: Ada
      lastName: Lovelace
      email: " Ada.Lovelace@Example.com "
      phone: "+31 20 555 0100"
    hiredBy: 3f9d7c2a-1b4e-4c6d-8a9f-2b3c4d5e6f70
    jobTitle: Analytical Engineer
    department: Engineering
    startDate: "2027-01-04"
    offer: { salary: 72000, currency: EUR, payFrequency: monthly }
given:
  core.organizations:
    - { id: 7d0e6a52-3c59-4a8e-9d7a-0c1f2b3a4d5e, name: Acme }
cases:
  - name: a hired candidate becomes an employee in nexus and a new hire in paylinq
    given:
      core.product_subscriptions:
        - { organization_id: 7d0e6a52-3c59-4a8e-9d7a-0c1f2b3a4d5e, product_id: nexus, status: active }
        - { organization_id: 7d0e6a52-3c59-4a8e-9d7a-0c1f2b3a4d5e, product_id: paylinq, status: active }
    publish:
      - event: candidate.hired
    expect:
      rows:
        hris.employees: { count: 1 }
        payroll.new_hires: { count: 1 }
        payroll.employee_records: { count: 1 }
"#;

/// A `find` in a third database: an integration that writes into MariaDB
/// (paylinq) reads each item's rate from another PostgreSQL database
/// (nexus), in a read transaction there. Every event is applied with the
/// rate nexus holds; while nexus refuses connections the integration waits
/// on it (the status API says so; no attempt counted, no dead letter) and
/// catches up once it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(postgres_tests, mariadb_tests)),
    ignore = "needs TEST_DATABASE_URL and TEST_MARIADB_URL when the tests were built"
)]
async fn a_find_in_a_third_database_reads_there_and_waits_while_it_is_down() {
    const BEFORE: usize = 200;
    const DURING: usize = 200;
    let db = TestDb::postgres().await;
    let nexus = TestDb::postgres_unmigrated().await;
    let paylinq = crate::mariadb::MariaDb::new().await;
    nexus
        .execute(&format!(
            "CREATE SCHEMA nexus;
             CREATE TABLE nexus.rates (item INTEGER PRIMARY KEY, rate INTEGER NOT NULL);
             INSERT INTO nexus.rates SELECT i, i * 2 FROM generate_series(0, {}) AS i",
            BEFORE + DURING
        ))
        .await;
    paylinq
        .execute("CREATE TABLE pay (event_id CHAR(36) PRIMARY KEY, item INT NOT NULL, amount INT NOT NULL)")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let (nexus_var, paylinq_var) = (format!("NEXUS_{suffix}"), format!("PAYLINQ_{suffix}"));
    std::fs::write(
        dir.path().join("databases.yaml"),
        format!(
            "databases:\n  nexus:\n    url: ${{{nexus_var}}}\n    schemas: [nexus]\n  \
             paylinq:\n    url: ${{{paylinq_var}}}\n    schemas: [{}]\n",
            paylinq.name
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("pay.yaml"),
        format!(
            r#"
id: pay
source: load
target: paylinq
order_by: $.data.item
routes:
  - on: item.added
    steps:
      - find: nexus.rates
        where: {{ item: $.data.item }}
        missing: fail
        as: rate
      - upsert: {}.pay
        key: [event_id]
        values:
          event_id: $.id
          item: $.data.item
          amount: "{{{{ rate.rate }}}}"
"#,
            paylinq.name
        ),
    )
    .unwrap();
    // SAFETY: the variables' names are this test's own.
    unsafe {
        std::env::set_var(&nexus_var, &nexus.url);
        std::env::set_var(&paylinq_var, paylinq.url());
    }
    let engine = db.engine_on(dir.path(), None).await;
    db.insert_item_events(0..BEFORE).await;
    db.settle(Duration::from_secs(60)).await;
    let wrong: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pay WHERE amount <> item * 2")
        .fetch_one(&paylinq.pool)
        .await
        .unwrap();
    assert_eq!(paylinq.count("pay").await, BEFORE as i64);
    assert_eq!(wrong, 0, "every amount is the rate nexus holds");

    // nexus refuses connections, busbar's there cut.
    refuse_connections(&nexus.url, true).await;
    db.insert_item_events(BEFORE..BEFORE + DURING).await;
    let down_at = Instant::now();
    while engine.databases().iter().any(|d| d.name == "nexus" && d.up) {
        assert!(
            down_at.elapsed() < Duration::from_secs(20),
            "nexus is never shown down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let server = crate::console::serve_engine(engine.clone()).await;
    let key =
        busbar::store::keys::create_key(&db.store, None, &busbar::store::keys::Scope::ALL, None)
            .await
            .unwrap();
    let status = integrations_status(&server.base, &key.key).await;
    let pay = integration(&status, "pay");
    assert_eq!(pay["database"], "paylinq", "{pay}");
    assert_eq!(pay["waiting_on_database"]["database"], "nexus", "{pay}");
    let cookie = crate::console::session(&server.base, &key.key).await;
    let page = crate::console::get(&server.base, "/console/integrations/pay", &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Writes to database <code>paylinq</code>"),
        "{page}"
    );
    assert!(
        page.contains("Reads from database <code>nexus</code>"),
        "{page}"
    );
    assert!(
        page.contains("Waiting on database <code>nexus</code> since"),
        "{page}"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        paylinq.count("pay").await,
        BEFORE as i64,
        "nothing is applied without its rate"
    );
    assert_eq!(
        db.count_where("integrations.deliveries", "status = 'dead' OR attempts > 1")
            .await,
        0,
        "an outage of the database read is not a delivery's failure"
    );

    refuse_connections(&nexus.url, false).await;
    let up_at = Instant::now();
    db.settle(Duration::from_secs(60)).await;
    eprintln!(
        "third database down: everything applied {:?} after it returned",
        up_at.elapsed()
    );
    let wrong: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pay WHERE amount <> item * 2")
        .fetch_one(&paylinq.pool)
        .await
        .unwrap();
    assert_eq!(paylinq.count("pay").await, (BEFORE + DURING) as i64);
    assert_eq!(wrong, 0);
    assert_eq!(
        db.count_where("integrations.deliveries", "status = 'dead'")
            .await,
        0
    );
    engine.shutdown().await;
}

/// Two busbar installations (each with its own database: PostgreSQL and
/// SQLite) run an integration of the same id into one product database:
/// their progress rows there are keyed by each installation's identity, so
/// neither reads the other's batch numbers or bookkeeping, and every event
/// of each is applied once. A progress row an earlier busbar kept under the
/// integration's id alone is taken over, with its number and bookkeeping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "PostgreSQL suite skipped: TEST_DATABASE_URL was not set when the tests were built"
)]
async fn two_installations_writing_into_one_database_keep_their_own_progress() {
    let target = Target::postgres().await;
    target.create_tables().await;
    let first = TestDb::postgres().await;
    let second = TestDb::sqlite().await;
    for db in [&first, &second] {
        create_own_tables(db).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let variable = format!("ELSEWHERE_{}", uuid::Uuid::new_v4().simple());
    write_integrations(dir.path(), &target.schema(), &variable);
    // SAFETY: the variable's name is this test's own.
    unsafe { std::env::set_var(&variable, target.url()) };
    let a = first.engine_on(dir.path(), None).await;
    let b = second.engine_on(dir.path(), None).await;
    for round in 0..3 {
        first
            .insert_item_events(round * 200..round * 200 + 100)
            .await;
        second
            .insert_item_events(round * 200 + 100..round * 200 + 200)
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    first.settle(Duration::from_secs(60)).await;
    second.settle(Duration::from_secs(60)).await;
    assert_eq!(
        target.scalar("SELECT COUNT(*) FROM nexus.ledger").await,
        600
    );
    assert_eq!(
        target.scalar("SELECT COUNT(*) FROM nexus.audit").await,
        600,
        "each write once"
    );
    assert_eq!(first.count("test.journal").await, 300);
    assert_eq!(second.count("test.journal").await, 300);
    for db in [&first, &second] {
        assert_eq!(
            db.count_where("integrations.deliveries", "status = 'dead'")
                .await,
            0
        );
    }
    let installations = target
        .scalar("SELECT COUNT(DISTINCT split_part(integration, '/', 1)) FROM busbar.progress WHERE integration LIKE '%/ledger'")
        .await;
    assert_eq!(
        installations, 2,
        "one set of progress rows per installation"
    );
    a.shutdown().await;
    b.shutdown().await;

    // An earlier busbar's row, keyed by the integration alone, is taken
    // over by the next batch of its lane: its number goes on.
    let Target::Postgres(other) = &target else {
        unreachable!()
    };
    other
        .execute("INSERT INTO busbar.progress (integration, lane, batch_seq, outcome) VALUES ('legacy', 3, 7, '{\"kept\": true}')")
        .await;
    let database =
        busbar::store::targets::TargetDb::new("nexus", &target.url(), true, false).unwrap();
    let mut tx = database.begin().await.unwrap();
    let key = format!("{}/legacy", uuid::Uuid::new_v4());
    let progress = tx.lock_progress(&key, "legacy", 3, 0).await.unwrap();
    assert_eq!(progress.batch_seq, 7);
    assert_eq!(progress.outcome, Some(serde_json::json!({"kept": true})));
    tx.commit().await.unwrap();
    assert_eq!(
        target
            .scalar(&format!(
                "SELECT COUNT(*) FROM busbar.progress WHERE integration = '{key}' AND batch_seq = 7"
            ))
            .await,
        1
    );
    assert_eq!(
        target
            .scalar("SELECT COUNT(*) FROM busbar.progress WHERE integration = 'legacy'")
            .await,
        0
    );
    let mut tx = database.begin().await.unwrap();
    let fresh = tx
        .lock_progress("another/legacy", "legacy", 3, 2)
        .await
        .unwrap();
    assert_eq!(
        fresh.batch_seq, 2,
        "a new installation starts at its own number"
    );
    tx.rollback().await.unwrap();
    database.close().await;
}
