//! Issue 16, item 1: changing `order_by` with a backlog re-partitioned the
//! log under lanes whose cursors differed (644 events applied twice and 725
//! never, of 40,000). A change is now a new partitioning version that
//! applies from a tick on, and the lanes switch together
//! (`store::partitionings`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;

use busbar::engine::PublishRequest;
use busbar::envelope::Envelope;
use busbar::store::Dialect;

use crate::support::on_both_databases;

const ORGANIZATION: uuid::Uuid = busbar::dev::ORGANIZATION;
const SETTLE: Duration = Duration::from_secs(180);

/// Every event is counted in a ledger row of its own (applied twice shows
/// as 2), and in the order list of its key: the old key for the events
/// published before the change, the new one after.
const LEDGER: &str = r#"
id: ledger
source: load
target: test
order_by: ORDER_BY
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
      - find: test.orders
        where: { key: "{{ data.phase ~ ':' ~ (data.key if data.phase == 1 else data.group) }}" }
        as: order
      - upsert: test.orders
        key: [key]
        values:
          key: "{{ data.phase ~ ':' ~ (data.key if data.phase == 1 else data.group) }}"
          seqs: "{{ (order.seqs if order else '') ~ ',' ~ data.seq }}"
"#;

fn write(dir: &std::path::Path, order_by: &str) {
    std::fs::write(
        dir.join("ledger.yaml"),
        LEDGER.replace("ORDER_BY", order_by),
    )
    .unwrap();
}

fn events(phase: u32, from: usize, count: usize) -> Vec<PublishRequest> {
    (from..from + count)
        .map(|seq| {
            let value = json!({
                "id": uuid::Uuid::new_v4(), "source": "load", "event": "item.added",
                "organization_id": ORGANIZATION, "occurred_at": "2026-12-07T00:00:00Z",
                "data": { "key": format!("k{}", seq % 40), "group": format!("g{}", seq % 7), "seq": seq, "phase": phase }
            });
            PublishRequest {
                envelope: Envelope::from_json(&value).unwrap(),
                idempotency_key: None,
            }
        })
        .collect()
}

on_both_databases! {
    async fn changing_order_by_with_a_backlog_applies_every_event_once_and_in_order(db: TestDb) {
        if db.dialect() == Dialect::Postgres {
            db.execute("CREATE SCHEMA test").await;
        }
        db.execute(
            "CREATE TABLE test.ledger (event_id VARCHAR(40) PRIMARY KEY, applied INTEGER NOT NULL); \
             CREATE TABLE test.orders (key VARCHAR(40) PRIMARY KEY, seqs TEXT NOT NULL)",
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "$.data.key");
        // One worker and small batches: the lanes are at different places
        // when the change comes.
        let engine = db
            .engine_with(dir.path(), None, |config| {
                config.workers = 1;
                config.batch_size = 10;
            })
            .await;
        let before = 2_000;
        for chunk in events(1, 0, before).chunks(100) {
            engine.publish_batch(chunk.to_vec()).await.unwrap();
        }
        let started = Instant::now();
        while db.count("test.ledger").await < 300 {
            assert!(started.elapsed() < SETTLE, "nothing applied");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The change, by reload, with most of the backlog still unread.
        write(dir.path(), "$.data.group");
        let generation = busbar::serve::load_generation(dir.path(), None, 2).unwrap();
        engine.swap_generation(generation).await.unwrap();
        let applied_at_change = db.count("test.ledger").await;
        let after = 700;
        for chunk in events(2, before, after).chunks(100) {
            engine.publish_batch(chunk.to_vec()).await.unwrap();
        }
        db.settle(SETTLE).await;
        let total = (before + after) as i64;
        assert_eq!(db.count("test.ledger").await, total, "every event applied (change at {applied_at_change})");
        assert_eq!(db.count_where("test.ledger", "applied <> 1").await, 0, "none applied twice");
        // Per key, in publish order: the old key before the change, the new
        // one after.
        let rows = db.rows("SELECT key, seqs FROM test.orders").await;
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (key, seqs) in rows {
            let seqs: Vec<usize> = seqs.trim_start_matches(',').split(',').map(|s| s.parse().unwrap()).collect();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{key} out of order: {seqs:?}");
            seen.insert(key, seqs.len());
        }
        assert_eq!(seen.values().sum::<usize>() as i64, total);
        engine.shutdown().await;
    }
}
