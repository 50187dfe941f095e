//! Delivery v2's guarantees, tried as hard as a test can: deliveries of one
//! order key apply one at a time and in publish order, with many
//! publishers, several workers, random transient failures and several
//! processes; a failing key holds back only itself; outbox rows whose
//! transaction commits late are never passed over; pause and resume.
//!
//! The integration under test is a read-modify-write counter, the case the
//! old engine could not make safe across workers: each delivery reads its
//! key's row and writes `version + 1` and the list of sequence numbers seen
//! so far, so a lost update, a reordering or a double application all leave
//! a trace.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use busbar::engine::{Engine, PublishRequest};
use busbar::envelope::Envelope;
use busbar::store::Dialect;
use busbar::store::events::Status;

use crate::support::{TestDb, on_both_databases};

const ORGANIZATION: uuid::Uuid = busbar::dev::ORGANIZATION;
const SETTLE: Duration = Duration::from_secs(120);

const COUNTER: &str = r#"
id: counter
source: tally
target: test
order_by: $.data.key
retry: { max_attempts: 1000, initial: 20ms, max: 200ms }
routes:
  - on: item.changed
    steps:
      - find: test.items
        where: { key: $.data.key }
        as: current
      - upsert: test.items
        key: [key]
        values:
          key: $.data.key
          version: "{{ (current.version if current else 0) + 1 }}"
          last_seq: $.data.seq
          seqs: "{{ (current.seqs if current else '') ~ ',' ~ data.seq }}"
"#;

const ITEMS: &str = "CREATE TABLE test.items (key VARCHAR(50) PRIMARY KEY, version INTEGER NOT NULL, \
                     last_seq INTEGER NOT NULL, seqs TEXT NOT NULL)";

async fn prepare(db: &TestDb) -> tempfile::TempDir {
    if db.dialect() == Dialect::Postgres {
        db.execute("CREATE SCHEMA test").await;
    }
    db.execute(ITEMS).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("counter.yaml"), COUNTER).unwrap();
    dir
}

/// On PostgreSQL: makes a share of the writes to `test.items` fail with a
/// serialization failure (SQLSTATE 40001, which busbar retries), at random.
async fn flaky(db: &TestDb, share: f64) {
    assert_eq!(db.dialect(), Dialect::Postgres);
    db.execute(&format!(
        "CREATE FUNCTION test.flaky() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF random() < {share} THEN RAISE EXCEPTION 'flaky' USING ERRCODE = '40001'; END IF; \
           RETURN NEW; END $$; \
         CREATE TRIGGER flaky BEFORE INSERT OR UPDATE ON test.items \
           FOR EACH ROW EXECUTE FUNCTION test.flaky();"
    ))
    .await;
}

pub(crate) fn event(key: &str, seq: usize) -> Value {
    json!({
        "source": "tally",
        "event": "item.changed",
        "organization_id": ORGANIZATION,
        "data": { "key": key, "seq": seq }
    })
}

/// Publishes `per_key` events for each of `keys` keys from `publishers`
/// concurrent publishers; each key's events are published in order by one
/// publisher (each waits for the previous publish of its key to be
/// accepted), and the keys of a publisher are interleaved.
pub(crate) async fn publish_all(
    publish: Arc<dyn Fn(Value) -> futures_like::BoxFuture + Send + Sync>,
    keys: usize,
    per_key: usize,
    publishers: usize,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..publishers {
        let publish = publish.clone();
        tasks.spawn(async move {
            let mine: Vec<String> = (0..keys)
                .filter(|k| k % publishers == p)
                .map(|k| format!("key-{k}"))
                .collect();
            for seq in 0..per_key {
                for key in &mine {
                    publish(event(key, seq)).await;
                }
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("a publisher panicked");
    }
}

/// A boxed future without the `futures` crate.
pub(crate) mod futures_like {
    pub type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
}

pub(crate) fn engine_publisher(
    engine: Engine,
) -> Arc<dyn Fn(Value) -> futures_like::BoxFuture + Send + Sync> {
    Arc::new(move |event: Value| {
        let engine = engine.clone();
        Box::pin(async move {
            let envelope = Envelope::from_json(&event).unwrap();
            loop {
                match engine
                    .publish(PublishRequest {
                        envelope: envelope.clone(),
                        idempotency_key: None,
                    })
                    .await
                {
                    Ok(_) => return,
                    Err(error) => {
                        eprintln!("publish failed, retrying: {error}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        })
    })
}

/// Every key ends with `per_key` applications, in publish order.
async fn assert_counted_in_order(db: &TestDb, keys: usize, per_key: usize) {
    let expected: String = (0..per_key).map(|s| format!(",{s}")).collect();
    let mut wrong = Vec::new();
    for k in 0..keys {
        let key = format!("key-{k}");
        let row = db
            .find("test.items", &[("key", json!(key))])
            .await
            .unwrap_or_else(|| panic!("{key} was never applied"));
        if row["version"] != json!(per_key)
            || row["last_seq"] != json!(per_key - 1)
            || row["seqs"] != json!(expected)
        {
            wrong.push(format!(
                "{key}: version {} last_seq {} seqs {}",
                row["version"], row["last_seq"], row["seqs"]
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} keys applied out of order, lost or twice:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

on_both_databases! {
    async fn a_counter_keyed_by_order_by_counts_every_event_once_in_publish_order(db: TestDb) {
        let dir = prepare(&db).await;
        let postgres = db.dialect() == Dialect::Postgres;
        if postgres {
            flaky(&db, 0.05).await;
        }
        let engine = db.engine_with(dir.path(), None, |config| {
            config.workers = 4;
            config.batch_size = 100;
        }).await;
        let (keys, per_key) = (200, 50);
        publish_all(engine_publisher(engine.clone()), keys, per_key, 16).await;
        db.settle(SETTLE).await;
        assert_counted_in_order(&db, keys, per_key).await;
        if postgres {
            // The failures happened, were retried, and left rows behind.
            let retried = db.count_where("integrations.deliveries", "status = 'delivered' AND attempts > 1").await;
            assert!(retried > 0, "the flaky trigger made no delivery retry");
        }
        assert!(db.deliveries(Some(Status::Dead)).await.is_empty());
        engine.shutdown().await;
    }
}

on_both_databases! {
    async fn a_poison_event_holds_back_only_its_key_and_its_key_drains_in_order_after_replay(db: TestDb) {
        let dir = prepare(&db).await;
        // A poison for key-0 only: rows whose seqs list grows past ",0"
        // are refused until the trigger goes (a permanent failure).
        let poison = match db.dialect() {
            Dialect::Postgres => "CREATE FUNCTION test.poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                IF NEW.key = 'key-0' AND NEW.version = 2 THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$; \
                CREATE TRIGGER poison BEFORE INSERT OR UPDATE ON test.items FOR EACH ROW EXECUTE FUNCTION test.poison();",
            Dialect::Sqlite => "CREATE TRIGGER poison_insert BEFORE INSERT ON \"test.items\" \
                WHEN NEW.key = 'key-0' AND NEW.version = 2 BEGIN SELECT RAISE(ABORT, 'poisoned'); END; \
                CREATE TRIGGER poison_update BEFORE UPDATE ON \"test.items\" \
                WHEN NEW.key = 'key-0' AND NEW.version = 2 BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
        };
        db.store.execute_script(poison).await.unwrap();
        let blocking = COUNTER.replace("routes:", "on_dead: block\nroutes:");
        std::fs::write(dir.path().join("counter.yaml"), blocking).unwrap();
        let engine = db.engine_on(dir.path(), None).await;
        let publish = engine_publisher(engine.clone());
        for seq in 0..5 {
            for key in ["key-0", "key-1", "key-2"] {
                publish(event(key, seq)).await;
            }
        }
        // The other keys flow: they are done while key-0 waits.
        let started = Instant::now();
        loop {
            let done = db.count_where("test.items", "key <> 'key-0' AND version = 5").await;
            if done == 2 {
                break;
            }
            assert!(started.elapsed() < SETTLE, "the other keys were held back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let row = db.find("test.items", &[("key", json!("key-0"))]).await.unwrap();
        assert_eq!(row["version"], 1, "key-0 stops at its poison");
        let dead = db.deliveries(Some(Status::Dead)).await;
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert!(dead[0].last_error.as_deref().unwrap().contains("poisoned"));
        let waiting = db.deliveries(Some(Status::Pending)).await;
        assert_eq!(waiting.len(), 3, "key-0's later events wait behind the dead one: {waiting:?}");
        assert!(waiting.iter().all(|d| d.waiting_on == Some(dead[0].id)), "{waiting:?}");
        // The status shows the blocked key and what it waits on.
        let status = busbar::store::events::blocked_keys(&mut db.store.begin_read().await.unwrap(), busbar::store::scope::OrgScope::Platform, "counter", true, 10).await.unwrap();
        assert_eq!(status.len(), 1, "{status:?}");
        assert_eq!((status[0].key.as_str(), status[0].delivery_id, status[0].waiting), ("key-0", dead[0].id, 3));

        // The fix, then the replay: key-0 drains in order.
        match db.dialect() {
            Dialect::Postgres => db.store.execute_script("DROP TRIGGER poison ON test.items").await.unwrap(),
            Dialect::Sqlite => db.store.execute_script("DROP TRIGGER poison_insert; DROP TRIGGER poison_update").await.unwrap(),
        }
        assert!(engine.replay_delivery(dead[0].id, None).await.unwrap());
        db.settle(SETTLE).await;
        assert_counted_in_order(&db, 3, 5).await;
        engine.shutdown().await;
    }
}

on_both_databases! {
    /// Issue 16: an operator can give up on a dead delivery that blocks its
    /// key. The skip is recorded with its reason beside the failure, the
    /// event is never applied, and the key's later events go on in order.
    async fn skipping_the_dead_delivery_that_blocks_a_key_lets_the_key_go_on_without_it(db: TestDb) {
        let dir = prepare(&db).await;
        let poison = match db.dialect() {
            Dialect::Postgres => "CREATE FUNCTION test.poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                IF NEW.last_seq = 1 AND NEW.key = 'key-0' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$; \
                CREATE TRIGGER poison BEFORE INSERT OR UPDATE ON test.items FOR EACH ROW EXECUTE FUNCTION test.poison();",
            Dialect::Sqlite => "CREATE TRIGGER poison_insert BEFORE INSERT ON \"test.items\" \
                WHEN NEW.key = 'key-0' AND NEW.last_seq = 1 BEGIN SELECT RAISE(ABORT, 'poisoned'); END; \
                CREATE TRIGGER poison_update BEFORE UPDATE ON \"test.items\" \
                WHEN NEW.key = 'key-0' AND NEW.last_seq = 1 BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
        };
        db.store.execute_script(poison).await.unwrap();
        let blocking = COUNTER.replace("routes:", "on_dead: block\nroutes:");
        std::fs::write(dir.path().join("counter.yaml"), blocking).unwrap();
        let engine = db.engine_on(dir.path(), None).await;
        let publish = engine_publisher(engine.clone());
        for seq in 0..5 {
            for key in ["key-0", "key-1"] {
                publish(event(key, seq)).await;
            }
        }
        let started = Instant::now();
        let dead = loop {
            let dead = db.deliveries(Some(Status::Dead)).await;
            if dead.len() == 1 && db.count_where("test.items", "key = 'key-1' AND version = 5").await == 1 {
                break dead;
            }
            assert!(started.elapsed() < SETTLE, "key-0 never died, or key-1 was held back: {dead:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(db.deliveries(Some(Status::Pending)).await.len(), 3, "key-0's later events wait");

        // Skipped, not fixed: the poison stays (seq 1 would fail again).
        let filter = busbar::store::lanes::ReplayFilter { delivery: Some(dead[0].id), ..Default::default() };
        assert_eq!(engine.skip(filter.clone(), "  bad data from the source, re-sent as seq 2  ", "key test").await.unwrap(), 1);
        // Only dead deliveries are skipped: a second skip changes nothing.
        assert_eq!(engine.skip(filter, "again", "key test").await.unwrap(), 0);
        db.settle(SETTLE).await;
        let row = db.find("test.items", &[("key", json!("key-0"))]).await.unwrap();
        assert_eq!(row["seqs"], ",0,2,3,4", "seq 1 is never applied; the rest in order: {row:?}");
        assert_eq!(row["version"], 4);
        let skipped = db.deliveries(Some(Status::Skipped)).await;
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!(skipped[0].id, dead[0].id);
        assert_eq!(skipped[0].skip_reason.as_deref(), Some("bad data from the source, re-sent as seq 2"));
        assert_eq!(skipped[0].skipped_by.as_deref(), Some("key test"));
        assert!(skipped[0].last_error.as_deref().unwrap().contains("poisoned"), "the failure is kept: {skipped:?}");
        assert!(db.deliveries(Some(Status::Dead)).await.is_empty());
        engine.shutdown().await;
    }
}

on_both_databases! {
    /// Issue 16: rows find their route by its identity (its name, or the
    /// event's unnamed route), not by its position. A route added before
    /// the counter's route by a reload must not take over the counter's
    /// dead row when it is replayed; by position (the old rule) it did.
    async fn a_route_added_before_another_does_not_take_over_its_rows(db: TestDb) {
        let dir = prepare(&db).await;
        db.execute("CREATE TABLE test.audit (key VARCHAR(50) NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (key, seq))").await;
        let poison = match db.dialect() {
            Dialect::Postgres => "CREATE FUNCTION test.poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                IF NEW.last_seq = 1 THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$; \
                CREATE TRIGGER poison BEFORE INSERT OR UPDATE ON test.items FOR EACH ROW EXECUTE FUNCTION test.poison();",
            Dialect::Sqlite => "CREATE TRIGGER poison_insert BEFORE INSERT ON \"test.items\" \
                WHEN NEW.last_seq = 1 BEGIN SELECT RAISE(ABORT, 'poisoned'); END; \
                CREATE TRIGGER poison_update BEFORE UPDATE ON \"test.items\" \
                WHEN NEW.last_seq = 1 BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
        };
        db.store.execute_script(poison).await.unwrap();
        let engine = db.engine_on(dir.path(), None).await;
        let publish = engine_publisher(engine.clone());
        for seq in 0..2 {
            publish(event("key-0", seq)).await;
        }
        db.settle(SETTLE).await;
        let dead = db.deliveries(Some(Status::Dead)).await;
        assert_eq!(dead.len(), 1, "{dead:?}");

        // A named route for the same event, first in the file.
        let audited = COUNTER.replace(
            "routes:\n",
            "routes:\n  - on: item.changed\n    name: audit\n    steps:\n      - upsert: test.audit\n        key: [key, seq]\n        values: { key: $.data.key, seq: $.data.seq }\n",
        );
        std::fs::write(dir.path().join("counter.yaml"), audited).unwrap();
        let generation = busbar::serve::load_generation(dir.path(), None, 2).unwrap();
        engine.swap_generation(generation).await.unwrap();
        match db.dialect() {
            Dialect::Postgres => db.store.execute_script("DROP TRIGGER poison ON test.items").await.unwrap(),
            Dialect::Sqlite => db.store.execute_script("DROP TRIGGER poison_insert; DROP TRIGGER poison_update").await.unwrap(),
        }
        assert!(engine.replay_delivery(dead[0].id, None).await.unwrap());
        publish(event("key-0", 2)).await;
        db.settle(SETTLE).await;
        let row = db.find("test.items", &[("key", json!("key-0"))]).await.unwrap();
        assert_eq!(row["seqs"], ",0,1,2", "the replayed row ran the counter's route: {row:?}");
        // The new route saw only the event published after it existed.
        assert_eq!(db.count_where("test.audit", "key = 'key-0'").await, 1);
        assert_eq!(db.count_where("test.audit", "seq = 2").await, 1);
        let delivered = db.deliveries(Some(Status::Delivered)).await;
        assert!(delivered.iter().any(|d| d.id == dead[0].id && d.route_name.is_none()), "{delivered:?}");
        engine.shutdown().await;
    }
}

on_both_databases! {
    /// Issue 16, item 6: a lane read only its first `batch size` open rows
    /// by position, so with `on_dead: block` and that many older dead rows
    /// (each holding its own key), a later key's replayed row never ran.
    async fn many_dead_keys_do_not_hold_back_a_later_keys_replay(db: TestDb) {
        let dir = prepare(&db).await;
        let blocking = COUNTER.replace("routes:", "on_dead: block\nroutes:");
        std::fs::write(dir.path().join("counter.yaml"), blocking).unwrap();
        let engine = db
            .engine_with(dir.path(), None, |config| config.batch_size = 10)
            .await;
        let poison = |key: &str| {
            json!({
                "source": "tally", "event": "item.changed", "organization_id": ORGANIZATION,
                "data": { "key": key, "seq": "not a number" }
            })
        };
        // 30 dead rows, three batches' worth, each on a key of its own, all
        // in the lane of `late` ...
        let lanes = busbar::store::log::lanes_for(db.dialect());
        let lane = busbar::store::log::lane_of_key("late", lanes);
        let keys = (0..)
            .map(|i| format!("dead-{i}"))
            .filter(|key| busbar::store::log::lane_of_key(key, lanes) == lane)
            .take(30);
        for key in keys {
            engine.publish_json(&poison(&key), None).await.unwrap();
        }
        // ... and after them, a later key's own dead delivery.
        let late = engine.publish_json(&poison("late"), None).await.unwrap();
        db.settle(SETTLE).await;
        let dead = db.deliveries(Some(Status::Dead)).await;
        assert_eq!(dead.len(), 31);
        // The fix for `late`, and its replay: it runs, and so do the key's
        // later events.
        db.execute(&format!(
            "UPDATE integrations.events SET event_data = '{{\"key\": \"late\", \"seq\": 1}}' WHERE id = '{}'",
            late.id
        ))
        .await;
        let late_dead = dead.iter().find(|d| d.event_id == late.id).unwrap();
        assert!(engine.replay_delivery(late_dead.id, None).await.unwrap());
        engine.publish_json(&event("late", 2), None).await.unwrap();
        db.settle(SETTLE).await;
        let row = db.find("test.items", &[("key", json!("late"))]).await;
        assert_eq!(row.expect("the replay ran")["seqs"], ",1,2");
        assert_eq!(db.deliveries(Some(Status::Dead)).await.len(), 30, "the others stay dead");
        engine.shutdown().await;
    }
}

on_both_databases! {
    async fn pause_holds_events_and_resume_continues_where_it_stopped(db: TestDb) {
        let dir = prepare(&db).await;
        let engine = db.engine_on(dir.path(), None).await;
        let publish = engine_publisher(engine.clone());
        publish(event("key-0", 0)).await;
        db.settle(SETTLE).await;
        engine.set_state("counter", busbar::engine::State::Paused).await.unwrap();
        for seq in 1..4 {
            publish(event("key-0", seq)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let row = db.find("test.items", &[("key", json!("key-0"))]).await.unwrap();
        assert_eq!(row["version"], 1, "a paused integration runs nothing");
        let backlog = engine.backlog(100).await.unwrap();
        assert_eq!(backlog.unread.get("counter"), Some(&3), "its events wait: {backlog:?}");
        assert!(db.deliveries(Some(Status::Skipped)).await.is_empty(), "nothing is skipped");
        engine.set_state("counter", busbar::engine::State::Enabled).await.unwrap();
        db.settle(SETTLE).await;
        assert_counted_in_order(&db, 1, 4).await;
        engine.shutdown().await;
    }
}

on_both_databases! {
    async fn an_outbox_row_whose_transaction_commits_late_is_not_passed_over(db: TestDb) {
        let dir = prepare(&db).await;
        let engine = db.engine_on(dir.path(), None).await;
        // Both events have the same key, so they are in the same lane.
        let insert = |seq: usize| {
            format!(
                "INSERT INTO integrations.events (id, organization_id, source_product, event_name, event_data) \
                 VALUES ('{}', '{ORGANIZATION}', 'tally', 'item.changed', '{{\"key\": \"k\", \"seq\": {seq}}}')",
                uuid::Uuid::new_v4()
            )
        };
        let expected = match db.dialect() {
            Dialect::Postgres => {
                use sqlx::Connection;
                // A product's long transaction inserts first (it takes the
                // lower sequence number and transaction id) ...
                let mut old = sqlx::PgConnection::connect(&db.url).await.unwrap();
                let mut old_tx = old.begin().await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(insert(1))).execute(&mut *old_tx).await.unwrap();
                // ... a newer one commits first, and is delivered without
                // waiting for the old one: a long transaction delays only
                // its own events ...
                let mut new = sqlx::PgConnection::connect(&db.url).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(insert(2))).execute(&mut new).await.unwrap();
                let started = Instant::now();
                while db.count("test.items").await == 0 {
                    assert!(
                        started.elapsed() < Duration::from_secs(10),
                        "the newer event waited for the open transaction"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                // ... the lanes have had every chance to pass the old row ...
                tokio::time::sleep(Duration::from_millis(300)).await;
                let row = db.find("test.items", &[("key", json!("k"))]).await.unwrap();
                assert_eq!(row["seqs"], ",2", "only the committed event so far: {row:?}");
                // ... and then the old one commits: its event is delivered too.
                old_tx.commit().await.unwrap();
                // In the order the transactions became visible.
                ",2,1"
            }
            Dialect::Sqlite => {
                // SQLite has one writer: commit order is insert order. The
                // outbox still works.
                db.execute(&insert(1)).await;
                db.execute(&insert(2)).await;
                engine.wake();
                ",1,2"
            }
        };
        db.settle(SETTLE).await;
        let row = db.find("test.items", &[("key", json!("k"))]).await.unwrap();
        assert_eq!(row["version"], 2, "both outbox rows were delivered: {row:?}");
        assert_eq!(row["seqs"], expected, "in the order their transactions committed");
        engine.shutdown().await;
    }
}

/// `busbar serve` on the test database with the counter integration.
fn serve(db: &TestDb, dir: &Path, workers: usize) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_busbar"))
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
        .args(["--workers", &workers.to_string(), "--watch", "off"])
        .env("BUSBAR_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("busbar serve starts")
}

/// Several processes on one PostgreSQL: the counter stays exact while
/// processes are killed with SIGKILL and restarted under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "PostgreSQL suite skipped: TEST_DATABASE_URL was not set when the tests were built"
)]
async fn three_processes_with_kills_count_every_event_once_in_order() {
    let db = TestDb::postgres().await;
    let dir = prepare(&db).await;
    flaky(&db, 0.02).await;
    // Lanes exist before the processes start, so every event is theirs.
    let generation =
        busbar::serve::load_generation(dir.path(), Some(&dir.path().join("no-contracts")), 1)
            .unwrap();
    // This in-test engine only publishes (no workers): the three processes
    // do every delivery.
    let publisher = db
        .engine_with(
            dir.path(),
            Some(&dir.path().join("no-contracts")),
            |config| {
                config.workers = 0;
            },
        )
        .await;
    let mut processes: Vec<std::process::Child> =
        (0..3).map(|_| serve(&db, dir.path(), 2)).collect();
    let (keys, per_key) = (100, 40);
    let publishing = tokio::spawn(publish_all(
        engine_publisher(publisher.clone()),
        keys,
        per_key,
        8,
    ));
    let mut kills = 0;
    while kills < 5 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let victim = kills % processes.len();
        processes[victim].kill().unwrap();
        processes[victim].wait().unwrap();
        processes[victim] = serve(&db, dir.path(), 2);
        kills += 1;
    }
    publishing.await.unwrap();
    db.settle_for(&generation, SETTLE).await;
    assert_counted_in_order(&db, keys, per_key).await;
    for mut process in processes {
        process.kill().ok();
        process.wait().ok();
    }
    publisher.shutdown().await;
    let mut seen: HashMap<String, i64> = HashMap::new();
    for d in db.deliveries_for(&generation, Some(Status::Dead)).await {
        *seen.entry(d.integration).or_default() += 1;
    }
    assert!(seen.is_empty(), "nothing is dead: {seen:?}");
}

/// A target row locked by someone else holds back only the delivery that
/// needs it: its batch runs on without it within a couple of seconds (lock
/// timeout, then one delivery at a time), and the blocked one retries and
/// applies once the lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "PostgreSQL suite skipped: TEST_DATABASE_URL was not set when the tests were built"
)]
async fn a_row_locked_elsewhere_holds_back_only_its_own_delivery() {
    use sqlx::Connection;
    let db = TestDb::postgres().await;
    let dir = prepare(&db).await;
    let engine = db.engine_on(dir.path(), None).await;
    // Ten keys of the same lane, so their deliveries share a batch.
    let keys: Vec<String> = sqlx::query_scalar::<_, String>(
        "SELECT k FROM (SELECT 'key-' || g AS k FROM generate_series(0, 400) g) s \
          WHERE ((hashtextextended(k, 0) & 9223372036854775807) % 8) = 0 LIMIT 10",
    )
    .fetch_all(&mut sqlx::PgConnection::connect(&db.url).await.unwrap())
    .await
    .unwrap();
    assert_eq!(keys.len(), 10);
    let publish = engine_publisher(engine.clone());
    publish(event(&keys[0], 0)).await;
    db.settle(SETTLE).await;
    // The batch is published while the integration is paused, so that it
    // is waiting when the lock is taken.
    engine
        .set_state("counter", busbar::engine::State::Paused)
        .await
        .unwrap();
    let requests: Vec<PublishRequest> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| PublishRequest {
            envelope: Envelope::from_json(&event(key, usize::from(i == 0))).unwrap(),
            idempotency_key: None,
        })
        .collect();
    engine.publish_batch(requests).await.unwrap();
    // Someone else holds key 0's row for 14 s.
    let mut holder = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut held = holder.begin().await.unwrap();
    sqlx::query("SELECT * FROM test.items WHERE key = $1 FOR UPDATE")
        .bind(&keys[0])
        .fetch_all(&mut *held)
        .await
        .unwrap();
    let started = Instant::now();
    engine
        .set_state("counter", busbar::engine::State::Enabled)
        .await
        .unwrap();
    loop {
        let done = db.count("test.items").await;
        if done == 10 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(14),
            "the other deliveries waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "the other deliveries took {waited:?}"
    );
    let retrying = db.deliveries(Some(Status::Retrying)).await;
    assert_eq!(retrying.len(), 1, "{retrying:?}");
    assert!(
        retrying[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("lock"),
        "{retrying:?}"
    );
    held.rollback().await.unwrap();
    db.settle(SETTLE).await;
    let row = db
        .find("test.items", &[("key", json!(keys[0]))])
        .await
        .unwrap();
    assert_eq!(row["version"], 2, "key 0 applied once the lock was gone");
    engine.shutdown().await;
}

/// busbar computes lanes in Rust (to wake only the lanes that got events)
/// and in SQL (to read them): the two must agree on every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "PostgreSQL suite skipped: TEST_DATABASE_URL was not set when the tests were built"
)]
async fn rust_and_postgresql_hash_order_keys_alike() {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&std::env::var("TEST_DATABASE_URL").unwrap())
        .await
        .unwrap();
    let mut keys: Vec<String> = (0..300)
        .map(|i| "x".repeat(i % 40) + &i.to_string())
        .collect();
    keys.extend(
        [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "héllo wörld",
            "日本語のキー",
            "7d0e6a52-3c59-4a8e-9d7a-0c1f2b3a4d5e",
        ]
        .map(String::from),
    );
    keys.extend((0..50).map(|_| uuid::Uuid::new_v4().to_string()));
    let hashes: Vec<(String, i64)> =
        sqlx::query_as("SELECT k, hashtextextended(k, 0) FROM unnest($1::text[]) AS k")
            .bind(&keys)
            .fetch_all(&mut conn)
            .await
            .unwrap();
    for (key, expected) in hashes {
        assert_eq!(
            busbar::store::log::pg_hash_text(&key),
            expected,
            "key {key:?}"
        );
    }
}
