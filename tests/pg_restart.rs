//! The database goes away and comes back: PostgreSQL is restarted while
//! busbar publishes and delivers. The engine must reconnect and finish, and
//! every event it accepted must be applied exactly once.
//!
//! A test binary of its own, because restarting the server would break the
//! other tests' connections (cargo runs test binaries one at a time). It
//! needs `TEST_DATABASE_URL` at build time and `pg_ctlcluster` (Debian's
//! PostgreSQL packaging) with the rights to restart the server.

#[path = "it/support.rs"]
#[allow(dead_code, unused_macros, unused_imports)]
mod support;

use std::time::Duration;

use serde_json::json;

use support::TestDb;

const LEDGER: &str = r#"
id: ledger
source: load
target: books
routes:
  - on: item.added
    steps:
      - find: test.ledger
        where: { event_id: $.id }
        as: previous
      - upsert: test.ledger
        key: [event_id]
        values:
          event_id: $.id
          applied: "{{ (previous.applied if previous else 0) + 1 }}"
"#;

fn restart_postgres() -> Result<(), String> {
    let versions =
        std::fs::read_dir("/etc/postgresql").map_err(|e| format!("no /etc/postgresql: {e}"))?;
    let version = versions
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .ok_or("no PostgreSQL cluster in /etc/postgresql")?;
    let status = std::process::Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", "restart"])
        .status()
        .map_err(|e| format!("cannot run pg_ctlcluster: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("pg_ctlcluster restart failed: {status}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "PostgreSQL suite skipped: TEST_DATABASE_URL was not set when the tests were built"
)]
async fn postgres_restart_mid_run_loses_nothing_accepted() {
    let db = TestDb::postgres().await;
    db.execute("CREATE SCHEMA test").await;
    db.execute("CREATE TABLE test.ledger (event_id UUID PRIMARY KEY, applied INTEGER NOT NULL)")
        .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ledger.yaml"), LEDGER).unwrap();
    let engine = db.engine_on(dir.path(), None).await;

    // Publish continuously; remember what was accepted.
    let publisher = {
        let engine = engine.clone();
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            let mut refused = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
            let mut i = 0;
            while tokio::time::Instant::now() < deadline {
                let event = json!({
                    "source": "load", "event": "item.added",
                    "organization_id": busbar::dev::ORGANIZATION, "data": {"item": i}
                });
                match engine.publish_json(&event, None).await {
                    Ok(published) => accepted.push(published.id),
                    Err(_) => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                i += 1;
            }
            (accepted, refused)
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let Err(reason) = restart_postgres() {
        panic!("cannot restart PostgreSQL for this test: {reason}");
    }
    let (accepted, refused) = publisher.await.unwrap();
    eprintln!(
        "accepted {} events, {refused} publishes refused while the server was down",
        accepted.len()
    );
    assert!(accepted.len() > 100, "publishing resumed after the restart");

    // A fresh connection for checking; the engine reconnects by itself.
    let start = std::time::Instant::now();
    loop {
        let pending = db
            .count_where("integrations.deliveries", "status = 'pending'")
            .await;
        if pending == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{pending} deliveries never finished"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A publish whose commit succeeded just as the connection died is
    // reported as refused (the producer retries it, ideally with the same
    // id); so stored events may exceed those acknowledged, never the reverse.
    let stored = db.count("integrations.events").await;
    assert!(
        stored >= accepted.len() as i64,
        "an accepted event was lost"
    );
    for id in &accepted {
        assert!(
            db.find("test.ledger", &[("event_id", json!(id))])
                .await
                .is_some(),
            "accepted event {id} was not applied"
        );
    }
    assert_eq!(
        db.count("test.ledger").await,
        stored,
        "every stored event was applied"
    );
    assert_eq!(
        db.count_where("test.ledger", "applied <> 1").await,
        0,
        "nothing was applied twice"
    );
    assert_eq!(
        db.count_where("integrations.deliveries", "status <> 'delivered'")
            .await,
        0
    );
    engine.shutdown().await;
}
