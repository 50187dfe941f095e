//! Exactly-once under a crash: `busbar serve` is killed with SIGKILL while
//! it works through thousands of events, restarted, and every event must
//! have been applied exactly once.
//!
//! The integrations here count their own applications: each delivery reads
//! the row it is about to write and stores `applied = previous + 1`, so an
//! event applied twice would leave `applied = 2` behind.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{TestDb, on_both_databases};

const EVENTS: usize = 4000;

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
      - emit: item.booked
        data: { item: $.data.item }
"#;

const JOURNAL: &str = r#"
id: journal
source: books
target: audit
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
"#;

fn write_integrations(dir: &Path) {
    std::fs::write(dir.join("ledger.yaml"), LEDGER).unwrap();
    std::fs::write(dir.join("journal.yaml"), JOURNAL).unwrap();
}

fn serve(db: &TestDb, dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_busbar"))
        // Port 0: the API on any free port, so parallel runs do not collide.
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
        .env("BUSBAR_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("busbar serve starts")
}

on_both_databases! {
    async fn killed_mid_run_and_restarted_applies_every_event_exactly_once(db: TestDb) {
        if db.dialect() == busbar::store::Dialect::Postgres {
            db.execute("CREATE SCHEMA test").await;
        }
        db.execute("CREATE TABLE test.ledger (event_id UUID PRIMARY KEY, applied INTEGER NOT NULL)").await;
        db.execute("CREATE TABLE test.journal (event_id UUID PRIMARY KEY, item INTEGER, applied INTEGER NOT NULL)").await;
        let dir = tempfile::tempdir().unwrap();
        write_integrations(dir.path());
        db.insert_item_events(0..EVENTS).await;

        let mut first = serve(&db, dir.path());
        let start = Instant::now();
        loop {
            let delivered = db.count("test.ledger").await;
            if delivered >= 300 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "busbar did not start delivering");
            assert!(first.try_wait().unwrap().is_none(), "busbar serve exited early");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        first.kill().expect("SIGKILL");
        first.wait().unwrap();
        let delivered_at_kill = db.count("test.ledger").await + db.count("test.journal").await;
        assert!(
            (delivered_at_kill as usize) < 2 * EVENTS,
            "the kill came too late to test anything ({delivered_at_kill} delivered)"
        );

        let mut second = serve(&db, dir.path());
        let generation = busbar::serve::load_generation(dir.path(), Some(&dir.path().join("no-contracts")), 1)
            .expect("integrations compile");
        db.settle_for(&generation, Duration::from_secs(180)).await;
        // A graceful stop this time: SIGTERM, exit status 0.
        let status = Command::new("kill").args(["-TERM", &second.id().to_string()]).status().unwrap();
        assert!(status.success());
        let exit = second.wait().unwrap();
        assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");

        let n = EVENTS as i64;
        assert_eq!(db.count("test.ledger").await, n);
        assert_eq!(db.count_where("test.ledger", "applied <> 1").await, 0, "an event was applied twice");
        assert_eq!(db.count("test.journal").await, n);
        assert_eq!(db.count_where("test.journal", "applied <> 1").await, 0, "an emitted event was applied twice");
        assert_eq!(db.count_where("integrations.events", "event_name = 'item.booked'").await, n);
        // Every delivery succeeded: none needed a row.
        assert_eq!(db.count("integrations.deliveries").await, 0);
        assert_eq!(db.deliveries_for(&generation, Some(busbar::store::events::Status::Delivered)).await.len(), 2 * EVENTS);
    }
}
