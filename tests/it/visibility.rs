//! Issue 16: which events a lane reads is decided by stored snapshots
//! (ticks), so that nothing an operator or a product does with transactions
//! loses, repeats or stalls events. Each test here failed on the engine
//! that read "below the oldest running transaction":
//!
//! - a transaction holding an id (a lock, an idle session) anywhere in the
//!   database held every integration back;
//! - a database whose default isolation is `repeatable read` lost events;
//! - transaction ids past 2^32 were compared as 32-bit numbers;
//! - every idle visit locked every lane row `FOR UPDATE`, assigning a
//!   transaction id each time.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::json;
use sqlx::{AssertSqlSafe, Connection};

use busbar::compile::OrderKey;
use busbar::store::log::{self, LaneFilter};
use busbar::store::ticks::{Cursor, Snapshot};
use busbar::store::types::Position;

use crate::support::TestDb;

const ORGANIZATION: uuid::Uuid = busbar::dev::ORGANIZATION;
const SETTLE: Duration = Duration::from_secs(120);

const COUNTER: &str = r#"
id: counter
source: tally
target: test
order_by: $.data.key
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
          seqs: "{{ (current.seqs if current else '') ~ ',' ~ data.seq }}"
"#;

async fn prepare(db: &TestDb) -> tempfile::TempDir {
    db.execute("CREATE SCHEMA test").await;
    db.execute(
        "CREATE TABLE test.items (key VARCHAR(50) PRIMARY KEY, version INTEGER NOT NULL, seqs TEXT NOT NULL); \
         CREATE TABLE test.unrelated (id INTEGER PRIMARY KEY, note TEXT); \
         INSERT INTO test.unrelated VALUES (1, 'x')",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("counter.yaml"), COUNTER).unwrap();
    dir
}

fn outbox_insert(key: &str, seq: usize) -> String {
    format!(
        "INSERT INTO integrations.events (id, organization_id, source_product, event_name, event_data) \
         VALUES ('{}', '{ORGANIZATION}', 'tally', 'item.changed', '{{\"key\": \"{key}\", \"seq\": {seq}}}')",
        uuid::Uuid::new_v4()
    )
}

fn event(key: &str, seq: usize) -> serde_json::Value {
    json!({
        "source": "tally", "event": "item.changed", "organization_id": ORGANIZATION,
        "data": { "key": key, "seq": seq }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "PostgreSQL suite skipped: TEST_DATABASE_URL was not set when the tests were built"
)]
async fn a_transaction_holding_an_id_and_a_lock_elsewhere_does_not_hold_up_delivery() {
    let db = TestDb::postgres().await;
    let dir = prepare(&db).await;
    let engine = db.engine_on(dir.path(), None).await;
    // A product's migration, an idle-in-transaction psql session: a
    // transaction with an id, holding a row lock on an unrelated table, and
    // an outbox event of its own.
    let mut other = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut open = other.begin().await.unwrap();
    sqlx::query("SELECT * FROM test.unrelated WHERE id = 1 FOR UPDATE")
        .execute(&mut *open)
        .await
        .unwrap();
    sqlx::query(AssertSqlSafe(outbox_insert("held", 1)))
        .execute(&mut *open)
        .await
        .unwrap();
    let started = Instant::now();
    for seq in 1..=20 {
        engine
            .publish_json(&event("free", seq), None)
            .await
            .unwrap();
    }
    while db
        .scalar("SELECT COALESCE(MAX(version), 0)::bigint FROM test.items WHERE key = 'free'")
        .await
        < 20
    {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "events of other transactions waited for the open one"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        db.count_where("test.items", "key = 'held'").await,
        0,
        "its own event waits"
    );
    // Its own event is delivered once it commits.
    open.commit().await.unwrap();
    db.settle(SETTLE).await;
    assert_eq!(
        db.scalar("SELECT version::bigint FROM test.items WHERE key = 'held'")
            .await,
        1
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "PostgreSQL suite skipped: TEST_DATABASE_URL was not set when the tests were built"
)]
async fn a_repeatable_read_default_and_outbox_writers_of_random_length_lose_nothing() {
    let db = TestDb::postgres().await;
    let dir = prepare(&db).await;
    db.execute(
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_isolation = %L', \
                                    current_database(), 'repeatable read'); END $$",
    )
    .await;
    let engine = db
        .engine_with(dir.path(), None, |config| config.workers = 3)
        .await;
    // Writers own their keys, so each key's events commit in seq order.
    let writers = 6;
    let per_writer = 60;
    let seed: u64 = rand::rng().random();
    println!("seed {seed}");
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let url = db.url.clone();
        tasks.push(tokio::spawn(async move {
            use rand::SeedableRng;
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ writer as u64);
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            let mut seq = 0;
            while seq < per_writer {
                let mut tx = conn.begin().await.unwrap();
                let level: String = sqlx::query_scalar("SHOW transaction_isolation")
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap();
                assert_eq!(level, "repeatable read");
                let batch = rng.random_range(1..=3).min(per_writer - seq);
                for _ in 0..batch {
                    seq += 1;
                    let key = format!("w{writer}-k{}", seq % 3);
                    sqlx::query(AssertSqlSafe(outbox_insert(&key, seq)))
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    let pause = rng.random_range(0..15);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                tx.commit().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    db.settle(SETTLE).await;
    let total = db
        .scalar("SELECT COALESCE(SUM(version), 0)::bigint FROM test.items")
        .await;
    assert_eq!(
        total,
        (writers * per_writer) as i64,
        "seed {seed}: every event applied once"
    );
    // Per key, in the order its writer committed them.
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let rows = sqlx::query_as::<_, (String, String)>("SELECT key, seqs FROM test.items")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    for (key, seqs) in rows {
        let seqs: Vec<i64> = seqs
            .trim_start_matches(',')
            .split(',')
            .map(|s| s.parse().unwrap())
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "seed {seed}: {key} out of order: {seqs:?}"
        );
    }
    engine.shutdown().await;
}

/// The batch `(from, to]` holds exactly the events `to` sees and `from`
/// does not, in `(xid, seq)` order, for transaction ids on both sides of
/// 2^32; and busbar's `Snapshot::sees` agrees with PostgreSQL's
/// `pg_visible_in_snapshot` everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "PostgreSQL suite skipped: TEST_DATABASE_URL was not set when the tests were built"
)]
async fn batches_are_exact_for_transaction_ids_past_2_to_the_32() {
    let db = TestDb::postgres().await;
    // Normal transaction ids around 2^32 (ids whose low 32 bits are 0 to
    // 2 are never a transaction's, and PostgreSQL refuses them in a
    // snapshot): `x(i)` is the i-th of them from 2^32 - 40.
    let normal: Vec<i64> = ((1i64 << 32) - 40..(1i64 << 32) + 200)
        .filter(|x| x & 0xFFFF_FFFF >= 3)
        .collect();
    let x = |i: usize| normal[i];
    let seed: u64 = rand::rng().random();
    println!("seed {seed}");
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Events of transactions base .. base + 80, some with several events.
    let mut values = Vec::new();
    for i in 0..120 {
        let xid = x(rng.random_range(0..80));
        values.push(format!(
            "('{}', '{ORGANIZATION}', 'tally', 'item.changed', '{{\"i\": {i}}}', {xid})",
            uuid::Uuid::new_v4()
        ));
    }
    db.execute(&format!(
        "INSERT INTO integrations.events (id, organization_id, source_product, event_name, event_data, xid) VALUES {}",
        values.join(", ")
    ))
    .await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let events: Vec<(i64, i64)> =
        sqlx::query_as("SELECT xid, seq FROM integrations.events ORDER BY xid, seq")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let order_by = OrderKey::Organization;
    let filter = LaneFilter {
        source: "tally",
        events: vec!["item.changed".into()],
        order_by: &order_by,
        lane: 0,
        lanes: 1,
    };
    for round in 0..40 {
        // Two snapshots, `to` taken after `from`.
        let from_xmin = rng.random_range(0..40);
        let from_xmax = from_xmin + rng.random_range(0..30);
        let from_xip: BTreeSet<usize> = (from_xmin..from_xmax)
            .filter(|_| rng.random_bool(0.3))
            .collect();
        let to_xmax = from_xmax + rng.random_range(0..30);
        let to_xip: BTreeSet<usize> = from_xip
            .iter()
            .copied()
            .chain(from_xmax..to_xmax)
            .filter(|_| rng.random_bool(0.3))
            .collect();
        let to_xmin = to_xip.iter().next().copied().unwrap_or(to_xmax);
        let ids = |set: BTreeSet<usize>| set.into_iter().map(x).collect::<Vec<i64>>();
        let (from_xmin, from_xmax, to_xmin, to_xmax) =
            (x(from_xmin), x(from_xmax), x(to_xmin), x(to_xmax));
        let (from_xip, to_xip) = (ids(from_xip), ids(to_xip));
        let from = Snapshot::Xids {
            xmin: from_xmin,
            xmax: from_xmax,
            xip: from_xip,
        };
        let to = Snapshot::Xids {
            xmin: to_xmin,
            xmax: to_xmax,
            xip: to_xip,
        };
        // PostgreSQL and busbar agree on what each snapshot sees.
        for snapshot in [&from, &to] {
            for &(xid, seq) in &events {
                let pg: bool = sqlx::query_scalar(
                    "SELECT pg_visible_in_snapshot($1::text::xid8, $2::text::pg_snapshot)",
                )
                .bind(xid.to_string())
                .bind(snapshot.to_text())
                .fetch_one(&mut conn)
                .await
                .unwrap();
                assert_eq!(
                    snapshot.sees(Position::new(xid, seq)),
                    pg,
                    "seed {seed}: {snapshot} and {xid}"
                );
            }
        }
        let expected: Vec<Position> = events
            .iter()
            .map(|&(xid, seq)| Position::new(xid, seq))
            .filter(|&p| to.sees(p) && !from.sees(p))
            .collect();
        // Read in pieces of a random size, as a lane does.
        let mut cursor = Cursor {
            from: from.clone(),
            to: to.clone(),
            to_tick: 2,
            at: Position::ZERO,
        };
        let mut got = Vec::new();
        let piece = rng.random_range(1..20);
        let mut tx = db.store.begin().await.unwrap();
        loop {
            let read = log::read_batch(&mut tx, &filter, &cursor, piece)
                .await
                .unwrap();
            got.extend(read.iter().map(|e| e.position));
            if (read.len() as i64) < piece {
                break;
            }
            cursor.at = read.last().unwrap().position;
        }
        tx.rollback().await.unwrap();
        assert_eq!(
            got, expected,
            "seed {seed}, round {round}: from {from}, to {to}"
        );
        // What the cursor passed is what it read, and what `from` saw.
        let done = Cursor {
            at: got.last().copied().unwrap_or(Position::ZERO),
            ..cursor
        };
        for &(xid, seq) in &events {
            let p = Position::new(xid, seq);
            assert_eq!(
                done.passed(p),
                from.sees(p) || expected.contains(&p),
                "seed {seed}: {p}"
            );
        }
    }
}

/// An idle server locks no lane row and makes no tick: it assigns no
/// transaction id (the engine that locked every lane `FOR UPDATE` at every
/// wake-up used about 33 a second with two integrations).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "PostgreSQL suite skipped: TEST_DATABASE_URL was not set when the tests were built"
)]
async fn an_idle_server_locks_no_row_and_writes_nothing() {
    let db = TestDb::postgres().await;
    let dir = prepare(&db).await;
    for i in 0..10 {
        std::fs::write(
            dir.path().join(format!("copy-{i}.yaml")),
            COUNTER
                .replace("id: counter", &format!("id: counter-{i}"))
                .replace("source: tally", &format!("source: tally{i}")),
        )
        .unwrap();
    }
    let engine = db.engine_on(dir.path(), None).await;
    engine.publish_json(&event("warm", 1), None).await.unwrap();
    db.settle(SETTLE).await;
    // Lane rows carry the id of the last transaction that locked or wrote
    // them (`xmax`, `xmin`); ticks are numbered.
    let state = || async {
        let lanes: String = db
            .text("SELECT string_agg(integration_id || lane || ':' || xmin::text || ':' || xmax::text, ',' ORDER BY integration_id, lane) FROM integrations.lanes")
            .await;
        let ticks = db.scalar("SELECT MAX(id) FROM integrations.ticks").await;
        (lanes, ticks)
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = state().await;
    // 40 poll intervals of 50 ms, each waking every lane.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = state().await;
    assert_eq!(
        before, after,
        "an idle server locked or wrote lane rows, or made ticks"
    );
    // It still delivers at once.
    engine.publish_json(&event("warm", 2), None).await.unwrap();
    db.settle(SETTLE).await;
    assert_eq!(
        db.scalar("SELECT version::bigint FROM test.items WHERE key = 'warm'")
            .await,
        2
    );
    engine.shutdown().await;
}

/// Adds `by` to every transaction id of a snapshot's text.
fn shift(snapshot: &str, by: i64) -> String {
    let (head, xip) = snapshot.rsplit_once(':').unwrap();
    let (xmin, xmax) = head.split_once(':').unwrap();
    let xip: Vec<String> = xip
        .split(',')
        .filter(|x| !x.is_empty())
        .map(|x| (x.parse::<i64>().unwrap() + by).to_string())
        .collect();
    format!(
        "{}:{}:{}",
        xmin.parse::<i64>().unwrap() + by,
        xmax.parse::<i64>().unwrap() + by,
        xip.join(",")
    )
}

/// Issue 16, item 5: after a restore or a move to another cluster, new
/// events got smaller transaction ids than the stored cursors and were
/// never delivered, with a backlog of 0. busbar now refuses to start,
/// naming `busbar rebase`, which delivers every event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "PostgreSQL suite skipped: TEST_DATABASE_URL was not set when the tests were built"
)]
async fn a_move_to_another_cluster_is_refused_until_rebase_and_then_loses_nothing() {
    let db = TestDb::postgres().await;
    let dir = prepare(&db).await;
    let engine = db.engine_on(dir.path(), None).await;
    let mut seq = 0;
    let mut publish = Vec::new();
    for _ in 0..6 {
        for key in 0..5 {
            seq += 1;
            publish.push((format!("k{key}"), seq));
        }
    }
    for (key, seq) in &publish {
        engine.publish_json(&event(key, *seq), None).await.unwrap();
    }
    db.settle(SETTLE).await;
    engine.shutdown().await;
    // Written by products while busbar was down, before the dump: not
    // delivered yet.
    for key in 0..5 {
        seq += 1;
        db.execute(&outbox_insert(&format!("k{key}"), seq)).await;
    }
    // The move: the old cluster's transaction ids were far ahead of the new
    // one's, and its identifier was another.
    let by: i64 = 1_000_000_000;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    for (table, columns) in [
        ("integrations.ticks", vec!["snapshot"]),
        (
            "integrations.lanes",
            vec!["batch_from", "batch_to", "origin_snapshot"],
        ),
        ("integrations.partitionings", vec!["from_snapshot"]),
    ] {
        for column in columns {
            let rows: Vec<(String,)> = sqlx::query_as(AssertSqlSafe(format!(
                "SELECT DISTINCT {column}::text FROM {table}"
            )))
            .fetch_all(&mut conn)
            .await
            .unwrap();
            for (text,) in rows {
                sqlx::query(AssertSqlSafe(format!(
                    "UPDATE {table} SET {column} = $1::pg_snapshot WHERE {column}::text = $2"
                )))
                .bind(shift(&text, by))
                .bind(&text)
                .execute(&mut conn)
                .await
                .unwrap();
            }
        }
    }
    sqlx::raw_sql(AssertSqlSafe(format!(
        "UPDATE integrations.events SET xid = xid + {by}; \
         UPDATE integrations.deliveries SET event_xid = event_xid + {by}; \
         UPDATE integrations.lanes SET cursor_xid = cursor_xid + {by} WHERE cursor_xid > 0; \
         UPDATE integrations.cluster SET system_identifier = '1234'"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let load = || busbar::serve::load_generation(dir.path(), None, 1).unwrap();
    let refused = busbar::engine::Engine::start(
        db.store.clone(),
        load(),
        busbar::engine::EngineConfig::for_dialect(db.dialect()),
    )
    .await
    .err()
    .expect("busbar refuses positions of another cluster");
    let message = refused.to_string();
    assert!(
        message.contains("cluster 1234") && message.contains("busbar rebase"),
        "{message}"
    );
    // Only the xids being ahead: refused too.
    sqlx::query("UPDATE integrations.cluster SET system_identifier = (SELECT system_identifier::text FROM pg_control_system())")
        .execute(&mut conn)
        .await
        .unwrap();
    let refused = busbar::engine::Engine::start(
        db.store.clone(),
        load(),
        busbar::engine::EngineConfig::for_dialect(db.dialect()),
    )
    .await
    .err()
    .expect("busbar refuses positions ahead of the cluster");
    assert!(refused.to_string().contains("busbar rebase"), "{refused}");

    let rebased = busbar::engine::rebase::rebase(&db.store, &load())
        .await
        .unwrap();
    assert_eq!(rebased.pending, 5, "{rebased:?}");
    let engine = db.engine_on(dir.path(), None).await;
    for key in 0..5 {
        seq += 1;
        engine
            .publish_json(&event(&format!("k{key}"), seq), None)
            .await
            .unwrap();
    }
    db.settle(SETTLE).await;
    let rows = sqlx::query_as::<_, (String, i32, String)>(
        "SELECT key, version, seqs FROM test.items ORDER BY key",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(rows.len(), 5);
    for (key, version, seqs) in rows {
        assert_eq!(version, 8, "{key}: every event once: {seqs}");
        let seqs: Vec<i64> = seqs
            .trim_start_matches(',')
            .split(',')
            .map(|s| s.parse().unwrap())
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{key} in order: {seqs:?}"
        );
    }
    engine.shutdown().await;
}
