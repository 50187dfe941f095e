//! Outbox sources in other PostgreSQL databases (issue 17): a product
//! publishes by committing rows into `busbar_outbox.events` in its own
//! database, and busbar moves each into its log once, delivers it, and
//! deletes it there.
//!
//! busbar's own database and the product's are two PostgreSQL databases
//! made per test. An integration applies each moved event to busbar's own
//! `test.hires`, counting applications (`applied`), so an event moved or
//! delivered twice shows there as well as in the log.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::support::TestDb;

/// `databases.yaml` naming the product's database as an outbox source
/// (its URL from `variable`), and the integration `hires`.
fn write_integrations(dir: &Path, variable: &str) {
    std::fs::write(
        dir.join("databases.yaml"),
        format!("databases:\n  nexus:\n    url: ${{{variable}}}\n    outbox: true\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("hires.yaml"),
        r#"
id: hires
source: nexus
target: audit
order_by: $.data.n
routes:
  - on: employee.hired
    steps:
      - find: test.hires
        where: { event_id: $.id }
        as: previous
      - upsert: test.hires
        key: [event_id]
        values:
          event_id: $.id
          n: $.data.n
          applied: "{{ (previous.applied if previous else 0) + 1 }}"
"#,
    )
    .unwrap();
}

/// busbar's own database with the integration's table, the product's
/// database, and the integrations directory; the variable the directory
/// names is set to the product's URL.
async fn setup() -> (TestDb, TestDb, tempfile::TempDir, String) {
    let own = TestDb::postgres().await;
    own.execute(
        "CREATE SCHEMA test;
         CREATE TABLE test.hires (event_id UUID PRIMARY KEY, n INTEGER NOT NULL, applied INTEGER NOT NULL);",
    )
    .await;
    let product = TestDb::postgres_unmigrated().await;
    let dir = tempfile::tempdir().unwrap();
    let variable = format!("OUTBOX_{}", Uuid::new_v4().simple());
    write_integrations(dir.path(), &variable);
    // SAFETY: each test sets a variable of its own name, which no other
    // thread reads or writes; the engine reads it when it starts.
    unsafe { std::env::set_var(&variable, &product.url) };
    (own, product, dir, variable)
}

/// A row of the outbox for event `n`, as SQL values.
fn row(id: Uuid, n: i64) -> String {
    format!(
        "('{id}', '{}', 'nexus', 'employee.hired', '{{\"n\": {n}}}')",
        busbar::dev::ORGANIZATION
    )
}

/// Inserts events `ns` into the product's outbox in one transaction;
/// returns their ids.
async fn insert(product: &TestDb, ns: impl IntoIterator<Item = i64>) -> Vec<Uuid> {
    let (ids, values): (Vec<Uuid>, Vec<String>) = ns
        .into_iter()
        .map(|n| {
            let id = Uuid::now_v7();
            (id, row(id, n))
        })
        .unzip();
    product
        .execute(&format!(
            "INSERT INTO busbar_outbox.events (id, organization_id, source_product, event_name, event_data) VALUES {}",
            values.join(", ")
        ))
        .await;
    ids
}

/// Waits until `sql` (one integer) gives `want` on `db`.
async fn wait_for(db: &TestDb, sql: &str, want: i64, timeout: Duration) {
    let start = Instant::now();
    loop {
        let got = db.scalar(sql).await;
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "`{sql}` is {got}, not {want}, after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Events of `nexus` in busbar's log.
const IN_LOG: &str = "SELECT COUNT(*) FROM integrations.events WHERE source_product = 'nexus'";
/// Rows in the product's outbox, as other transactions see it.
const IN_OUTBOX: &str = "SELECT COUNT(*) FROM busbar_outbox.events";

/// Every event of `nexus` once in the log and applied once.
async fn assert_each_once(own: &TestDb, count: i64) {
    assert_eq!(own.scalar(IN_LOG).await, count, "events in the log");
    assert_eq!(
        own.scalar(
            "SELECT COUNT(DISTINCT id) FROM integrations.events WHERE source_product = 'nexus'"
        )
        .await,
        count,
        "an event is in the log twice"
    );
    assert_eq!(own.count("test.hires").await, count, "events applied");
    assert_eq!(
        own.count_where("test.hires", "applied <> 1").await,
        0,
        "an event was applied twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "PostgreSQL suite skipped: TEST_DATABASE_URL was not set when the tests were built"
)]
async fn events_committed_to_an_outbox_are_moved_once_delivered_and_deleted() {
    let (own, product, dir, _) = setup().await;
    let engine = own
        .engine_on(dir.path(), Some(&dir.path().join("no-contracts")))
        .await;
    // busbar made the outbox tables when it opened the database.
    assert_eq!(
        product
            .scalar("SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'busbar_outbox'")
            .await,
        2
    );
    // More than one claim's worth, in several transactions.
    let mut ids = Vec::new();
    for chunk in 0..6 {
        ids.extend(insert(&product, chunk * 200..(chunk + 1) * 200).await);
    }
    let late = Uuid::now_v7();
    product
        .execute(&format!(
            "INSERT INTO busbar_outbox.events (id, organization_id, source_product, event_name, event_data, occurred_at, idempotency_key) \
             VALUES ('{late}', '{}', 'nexus', 'employee.hired', '{{\"n\": 1200, \"name\": \"Ada\"}}', '2026-01-02T03:04:05.123456Z', 'k-1200')",
            busbar::dev::ORGANIZATION
        ))
        .await;
    wait_for(&product, IN_OUTBOX, 0, Duration::from_secs(30)).await;
    own.settle(Duration::from_secs(60)).await;
    assert_each_once(&own, 1201).await;
    assert_eq!(
        own.count_where(
            "integrations.events",
            &format!(
                "id = '{late}' AND occurred_at = '2026-01-02T03:04:05.123456Z' \
                 AND idempotency_key = 'k-1200' AND event_data = '{{\"n\": 1200, \"name\": \"Ada\"}}'::jsonb"
            )
        )
        .await,
        1,
        "the row's columns reach the log as they were"
    );
    assert_eq!(product.count("busbar_outbox.rejected").await, 0);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "PostgreSQL suite skipped: TEST_DATABASE_URL was not set when the tests were built"
)]
async fn a_row_whose_transaction_commits_late_is_not_passed_over() {
    let (own, product, dir, _) = setup().await;
    let engine = own
        .engine_on(dir.path(), Some(&dir.path().join("no-contracts")))
        .await;
    // A product transaction inserts its row first (the lowest seq) and
    // stays open for two seconds while others commit many rows.
    let mut open = PgConnection::connect(&product.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut open).await.unwrap();
    let late = Uuid::now_v7();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO busbar_outbox.events (id, organization_id, source_product, event_name, event_data) VALUES {}",
        row(late, 0)
    )))
    .execute(&mut open)
    .await
    .unwrap();
    let started = Instant::now();
    let mut inserted = 0;
    while started.elapsed() < Duration::from_secs(2) {
        insert(&product, inserted + 1..inserted + 51).await;
        inserted += 50;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    // Every row committed meanwhile is moved while the late one is open.
    wait_for(&product, IN_OUTBOX, 0, Duration::from_secs(30)).await;
    wait_for(&own, IN_LOG, inserted, Duration::from_secs(30)).await;
    assert_eq!(
        own.count_where("integrations.events", &format!("id = '{late}'"))
            .await,
        0,
        "not committed yet"
    );
    sqlx::query("COMMIT").execute(&mut open).await.unwrap();
    open.close().await.unwrap();
    wait_for(&own, IN_LOG, inserted + 1, Duration::from_secs(30)).await;
    wait_for(&product, IN_OUTBOX, 0, Duration::from_secs(30)).await;
    own.settle(Duration::from_secs(60)).await;
    assert_each_once(&own, inserted + 1).await;
    assert_eq!(
        own.count_where("test.hires", &format!("event_id = '{late}'"))
            .await,
        1,
        "the late row was delivered"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "PostgreSQL suite skipped: TEST_DATABASE_URL was not set when the tests were built"
)]
async fn invalid_rows_are_rejected_with_their_reason_and_block_nothing() {
    let (own, product, dir, _) = setup().await;
    let engine = own
        .engine_on(dir.path(), Some(&dir.path().join("no-contracts")))
        .await;
    let first = insert(&product, [1]).await[0];
    wait_for(&own, IN_LOG, 1, Duration::from_secs(30)).await;
    let org = busbar::dev::ORGANIZATION;
    // In seq order: a bad event name, data that is no object, the first
    // event's id with other data, then a valid row.
    product
        .execute(&format!(
            "INSERT INTO busbar_outbox.events (id, organization_id, source_product, event_name, event_data) VALUES \
             ('{}', '{org}', 'nexus', 'Not An Event', '{{\"n\": 2}}'), \
             ('{}', '{org}', 'nexus', 'employee.hired', '[1, 2]'), \
             ('{first}', '{org}', 'nexus', 'employee.hired', '{{\"n\": 99}}')",
            Uuid::now_v7(),
            Uuid::now_v7(),
        ))
        .await;
    let after = insert(&product, [3]).await[0];
    wait_for(&product, IN_OUTBOX, 0, Duration::from_secs(30)).await;
    own.settle(Duration::from_secs(60)).await;
    assert_each_once(&own, 2).await;
    assert_eq!(
        own.count_where("test.hires", &format!("event_id = '{after}'"))
            .await,
        1,
        "the row after the invalid ones was delivered"
    );
    let reasons = product
        .rows("SELECT event_name::text, reason FROM busbar_outbox.rejected ORDER BY seq")
        .await;
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].0 == "Not An Event" && reasons[0].1.starts_with("event_name: "),
        "{reasons:?}"
    );
    assert!(reasons[1].1.starts_with("event_data"), "{reasons:?}");
    assert!(
        reasons[2].1.contains(&format!("already has event {first}"))
            && reasons[2].1.contains("data"),
        "{reasons:?}"
    );
    // The log kept the first event as it was.
    assert_eq!(
        own.count_where(
            "integrations.events",
            &format!("id = '{first}' AND event_data = '{{\"n\": 1}}'::jsonb")
        )
        .await,
        1
    );
    engine.shutdown().await;
}

/// `busbar serve` on busbar's own database, the product's URL in
/// `variable`, with `failpoint` armed.
fn serve(own: &TestDb, dir: &Path, variable: &str, url: &str, failpoint: Option<&str>) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_busbar"));
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &own.url,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "PostgreSQL suite skipped: TEST_DATABASE_URL was not set when the tests were built"
)]
async fn a_crash_between_the_log_commit_and_the_outbox_delete_duplicates_nothing() {
    let (own, product, dir, variable) = setup().await;
    // The product team ran the DDL busbar documents before busbar ever
    // connected.
    for statement in busbar::store::outbox::SOURCE_DDL {
        product.execute(statement).await;
    }
    insert(&product, 0..300).await;

    // Dies right after the first batch committed in busbar's log.
    let mut child = serve(
        &own,
        dir.path(),
        &variable,
        &product.url,
        Some("after-outbox-append@1"),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().ok();
            panic!("the failpoint was never reached");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!status.success(), "aborted, not exited: {status:?}");
    assert_eq!(own.scalar(IN_LOG).await, 300, "the batch is in the log");
    assert_eq!(
        product.scalar(IN_OUTBOX).await,
        300,
        "and still in the outbox: the crash came between the commits"
    );

    let mut child = serve(&own, dir.path(), &variable, &product.url, None);
    wait_for(&product, IN_OUTBOX, 0, Duration::from_secs(60)).await;
    let generation =
        busbar::serve::load_generation(dir.path(), Some(&dir.path().join("no-contracts")), 1)
            .expect("integrations compile");
    own.settle_for(&generation, Duration::from_secs(60)).await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success(), "graceful shutdown exits 0");
    assert_each_once(&own, 300).await;
    assert_eq!(product.count("busbar_outbox.rejected").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "PostgreSQL suite skipped: TEST_DATABASE_URL was not set when the tests were built"
)]
async fn an_outbox_source_out_of_reach_holds_up_neither_publishing_nor_delivery() {
    let (own, _product, dir, variable) = setup().await;
    // Nothing listens there: the source is out of reach from the start.
    // SAFETY: as in `setup`, a variable of this test's own name.
    unsafe { std::env::set_var(&variable, "postgres://postgres@127.0.0.1:1/nowhere") };
    let engine = own
        .engine_on(dir.path(), Some(&dir.path().join("no-contracts")))
        .await;
    // The mover has tried, failed and is resting.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let published = engine
        .publish_json(
            &serde_json::json!({
                "source": "nexus",
                "event": "employee.hired",
                "organization_id": busbar::dev::ORGANIZATION,
                "data": { "n": 7 }
            }),
            None,
        )
        .await
        .expect("publishing goes on");
    own.settle(Duration::from_secs(30)).await;
    assert_eq!(
        own.count_where("test.hires", &format!("event_id = '{}'", published.id))
            .await,
        1,
        "delivery goes on"
    );
    engine.shutdown().await;
}
