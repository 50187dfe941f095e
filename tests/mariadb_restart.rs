//! A MariaDB target goes away and comes back (issue 17): the MariaDB server
//! is shut down while busbar delivers into it and into its own database.
//! The integration into busbar's own database must go on, the one into
//! MariaDB must wait (no dead letter, the status saying so), and every
//! event must be applied exactly once after the server returns.
//!
//! A test binary of its own, because stopping the server would break the
//! other tests' MariaDB connections (cargo runs test binaries one at a
//! time). It needs `TEST_MARIADB_URL` at build time, `mariadb-admin`, and
//! the rights to start `/usr/sbin/mariadbd` again (as `.ci/run` does).

#[path = "it/support.rs"]
#[allow(dead_code, unused_macros, unused_imports)]
mod support;

use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, Connection, MySqlConnection};

use support::TestDb;

fn admin(args: &[&str]) -> bool {
    std::process::Command::new("mariadb-admin")
        .args(["-h", "127.0.0.1", "-u", "root"])
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn start_mariadb() {
    let _ = std::process::Command::new("start-stop-daemon")
        .args([
            "--start",
            "--oknodo",
            "--background",
            "--exec",
            "/usr/sbin/mariadbd",
        ])
        .status();
    let began = Instant::now();
    while !admin(&["ping"]) {
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "MariaDB did not start again"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

async fn count(url: &str, sql: &str) -> i64 {
    let mut connection = MySqlConnection::connect(url)
        .await
        .expect("MariaDB answers");
    let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut connection)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    connection.close().await.ok();
    n
}

const INTEGRATIONS: [(&str, &str); 2] = [
    (
        "ledger.yaml",
        "id: ledger\nsource: load\ntarget: paylinq\norder_by: $.data.item\nroutes:\n  - on: item.added\n    steps:\n      \
         - upsert: SCHEMA.ledger\n        key: [event_id]\n        values: { event_id: $.id, item: $.data.item }\n",
    ),
    (
        "local.yaml",
        "id: local\nsource: load\ntarget: here\norder_by: $.data.item\nroutes:\n  - on: item.added\n    steps:\n      \
         - upsert: test.local\n        key: [event_id]\n        values: { event_id: $.id, item: $.data.item }\n",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(mariadb_tests),
    ignore = "MariaDB suite skipped: TEST_MARIADB_URL was not set when the tests were built"
)]
async fn a_mariadb_target_shut_down_holds_back_only_its_integration() {
    const BEFORE: usize = 200;
    const DURING: usize = 300;
    let server = std::env::var("TEST_MARIADB_URL")
        .expect("TEST_MARIADB_URL at run time too")
        .trim_end_matches('/')
        .to_owned();
    let name = format!("busbar_r_{}", uuid::Uuid::new_v4().simple());
    let url = format!("{server}/{name}");
    {
        let mut admin = MySqlConnection::connect(&server).await.unwrap();
        for sql in [
            format!("CREATE DATABASE {name}"),
            format!(
                "CREATE TABLE {name}.ledger (event_id CHAR(36) PRIMARY KEY, item INT NOT NULL)"
            ),
            format!(
                "CREATE TABLE {name}.audit (n BIGINT AUTO_INCREMENT PRIMARY KEY, event_id CHAR(36))"
            ),
            format!(
                "CREATE TRIGGER {name}.ledger_written AFTER INSERT ON {name}.ledger FOR EACH ROW \
                 INSERT INTO {name}.audit (event_id) VALUES (NEW.event_id)"
            ),
        ] {
            sqlx::query(AssertSqlSafe(sql))
                .execute(&mut admin)
                .await
                .unwrap();
        }
        admin.close().await.ok();
    }
    let db = TestDb::sqlite().await;
    db.execute("CREATE TABLE test.local (event_id UUID PRIMARY KEY, item INTEGER)")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let variable = format!("RESTART_{}", uuid::Uuid::new_v4().simple());
    std::fs::write(
        dir.path().join("databases.yaml"),
        format!("databases:\n  paylinq:\n    url: ${{{variable}}}\n    schemas: [{name}]\n"),
    )
    .unwrap();
    for (file, text) in INTEGRATIONS {
        std::fs::write(dir.path().join(file), text.replace("SCHEMA", &name)).unwrap();
    }
    // SAFETY: the variable's name is this test's own.
    unsafe { std::env::set_var(&variable, &url) };
    let engine = db.engine_on(dir.path(), None).await;
    db.insert_item_events(0..BEFORE).await;
    db.settle(Duration::from_secs(60)).await;

    assert!(admin(&["shutdown"]), "MariaDB shuts down");
    // Started again when this goes, even if a check below fails.
    let down = Down;
    let down_at = Instant::now();
    db.insert_item_events(BEFORE..BEFORE + DURING).await;
    while db.count("test.local").await < (BEFORE + DURING) as i64 {
        assert!(
            down_at.elapsed() < Duration::from_secs(20),
            "the integration into busbar's own database was held back by MariaDB"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let local_took = down_at.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let paylinq = engine
        .databases()
        .into_iter()
        .find(|d| d.name == "paylinq")
        .unwrap();
    assert!(!paylinq.up, "{paylinq:?}");
    assert_eq!(
        db.count_where("integrations.deliveries", "status = 'dead'")
            .await,
        0,
        "an outage is not a dead letter"
    );
    drop(down);
    let up_at = Instant::now();
    db.settle(Duration::from_secs(120)).await;
    eprintln!(
        "MariaDB down: busbar's own integration applied {DURING} events in {local_took:?}; \
         everything applied {:?} after MariaDB was back",
        up_at.elapsed()
    );
    let n = (BEFORE + DURING) as i64;
    assert_eq!(count(&url, "SELECT COUNT(*) FROM ledger").await, n);
    assert_eq!(
        count(&url, "SELECT COUNT(*) FROM audit").await,
        n,
        "each write once"
    );
    assert_eq!(
        db.count_where("integrations.deliveries", "status = 'dead'")
            .await,
        0
    );
    assert!(engine.databases().iter().all(|d| d.up));
    engine.shutdown().await;
    let mut admin = MySqlConnection::connect(&server).await.unwrap();
    sqlx::query(AssertSqlSafe(format!("DROP DATABASE {name}")))
        .execute(&mut admin)
        .await
        .ok();
}

/// MariaDB is down while this lives; dropping it starts the server again.
struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        start_mariadb();
    }
}
