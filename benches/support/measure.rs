//! What the load benchmarks (`load.rs` through the library, `http_load.rs`
//! over HTTP) share: the event they publish, a fresh database of each kind,
//! the engine on the shipped integrations, waiting for the queue to drain,
//! and latency percentiles.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection};
use uuid::Uuid;

use busbar::engine::{Engine, EngineConfig};
use busbar::store::{DbTx, Store};

/// A `recruitiq/candidate.hired` event for the example organization, unique
/// per `client` and `n`.
pub fn candidate_hired(client: usize, n: usize) -> Value {
    json!({
        "source": "recruitiq",
        "event": "candidate.hired",
        "organization_id": busbar::dev::ORGANIZATION,
        "data": {
            "candidate": {
                "id": Uuid::new_v4(),
                "firstName": "Load",
                "lastName": format!("Tester {client}-{n}"),
                "email": format!("load-{client}-{n}-{}@acme.example", Uuid::new_v4().simple()),
            },
            "hiredBy": busbar::dev::USER,
            "jobTitle": "Engineer",
            "startDate": "2027-01-04",
            "offer": { "salary": 60000 + n, "currency": "EUR", "payFrequency": "monthly" }
        }
    })
}

/// Runs `run(label, url)` on a fresh database of each kind in `databases`
/// (`sqlite`, `postgres`). PostgreSQL is taken from `BENCH_DATABASE_URL` or
/// `TEST_DATABASE_URL` (a server URL; a database is created and dropped).
pub async fn on_each_database(databases: &[String], run: impl AsyncFn(&str, &str)) {
    for database in databases {
        match database.as_str() {
            "sqlite" => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("bench.db").display());
                run("SQLite (WAL, synchronous=FULL)", &url).await;
            }
            "postgres" => {
                let Ok(admin) = std::env::var("BENCH_DATABASE_URL")
                    .or_else(|_| std::env::var("TEST_DATABASE_URL"))
                else {
                    println!("PostgreSQL: skipped (set BENCH_DATABASE_URL or TEST_DATABASE_URL)");
                    continue;
                };
                let name = format!("busbar_bench_{}", Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .expect("admin connection");
                sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create database");
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                run("PostgreSQL (durable commits)", &format!("{base}/{name}")).await;
                let _ = sqlx::query(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await;
            }
            other => println!("unknown database `{other}`"),
        }
    }
}

/// Connects, migrates, seeds the example platform and starts the engine on
/// the shipped integrations; `tune` adjusts the engine's defaults.
pub async fn start_engine(
    url: &str,
    tune: impl FnOnce(&mut EngineConfig),
) -> (Store, Engine, EngineConfig) {
    let store = Store::connect_with(url, 24).await.expect("connect");
    store.migrate().await.expect("migrate");
    busbar::dev::seed(&store).await.expect("seed");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let generation = busbar::serve::load_generation(
        &root.join("integrations.d"),
        Some(&root.join("schemas/events")),
        1,
    )
    .expect("shipped integrations compile");
    let mut config = EngineConfig::for_dialect(store.dialect());
    tune(&mut config);
    let engine = Engine::start(store.clone(), generation, config.clone())
        .await
        .expect("engine");
    (store, engine, config)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Prints p50, p90, p99 and max of `samples`.
pub fn report(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "  {label:<22} p50 {:>8.1} ms   p90 {:>8.1} ms   p99 {:>8.1} ms   max {:>8.1} ms",
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.90)),
        ms(percentile(&samples, 0.99)),
        ms(samples.last().copied().unwrap_or_default()),
    );
}

/// Waits until no delivery is pending.
pub async fn drain(store: &Store) {
    let sql = store
        .dialect()
        .sql("SELECT COUNT(*) FROM integrations.deliveries WHERE status = 'pending'");
    loop {
        let mut tx = store.begin_read().await.expect("read");
        let sql = AssertSqlSafe(sql.clone());
        let pending: i64 = match &mut tx {
            DbTx::Postgres(tx) => sqlx::query_scalar(sql).fetch_one(&mut **tx).await,
            DbTx::Sqlite(tx) => sqlx::query_scalar(sql).fetch_one(&mut **tx).await,
        }
        .expect("count");
        tx.rollback().await.ok();
        if pending == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// When each published event's last delivery (its own, and its
/// children's) completed.
pub async fn applied_at(store: &Store) -> HashMap<Uuid, DateTime<Utc>> {
    let sql = AssertSqlSafe(store.dialect().sql(
        "SELECT COALESCE(e.parent_id, e.id), MAX(d.completed_at) FROM integrations.deliveries d \
         JOIN integrations.events e ON e.id = d.event_id GROUP BY COALESCE(e.parent_id, e.id)",
    ));
    let mut tx = store.begin_read().await.expect("read");
    type Row = (busbar::store::types::Id, Option<busbar::store::types::Time>);
    let rows: Vec<Row> = match &mut tx {
        DbTx::Postgres(tx) => sqlx::query_as(sql).fetch_all(&mut **tx).await,
        DbTx::Sqlite(tx) => sqlx::query_as(sql).fetch_all(&mut **tx).await,
    }
    .expect("applied times");
    tx.rollback().await.ok();
    rows.into_iter()
        .filter_map(|(id, at)| at.map(|at| (id.0, at.0)))
        .collect()
}

/// Publish → applied latency of every event sent at `at`.
pub fn end_to_end<'a>(
    sent: impl Iterator<Item = (&'a Uuid, &'a DateTime<Utc>)>,
    applied: &HashMap<Uuid, DateTime<Utc>>,
) -> Vec<Duration> {
    sent.filter_map(|(id, at)| {
        applied
            .get(id)
            .map(|done| (*done - *at).to_std().unwrap_or_default())
    })
    .collect()
}
