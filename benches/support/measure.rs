//! What the load benchmarks (`load.rs` through the library, `http_load.rs`
//! over HTTP) share: the event they publish, a fresh database of each kind,
//! the engine on the shipped integrations, waiting for the queue to drain,
//! and latency percentiles.

use std::time::Duration;

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

/// Waits until the engine's lanes have read every event and no delivery
/// is pending or retrying (delivery v2 keeps no row for a delivered event,
/// so the lanes' cursors are what says "applied").
pub async fn drain(store: &Store, engine: &Engine) {
    let generation = engine.generation();
    loop {
        let backlog = busbar::store::views::backlog(store, &generation, 1)
            .await
            .expect("backlog");
        if backlog.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Publish → applied latency, sampled while the load runs: one probe event
/// at a time is published and the end of its chain (its payroll record,
/// written by the `employee.created` delivery the first one emits) is
/// polled for every 2 ms; then the next probe, until `stop` is cancelled.
/// Delivery v2 keeps no row for a delivered event, so sampling is how an
/// applied time is seen from outside, as a user would see it.
pub async fn probe_latency(
    store: Store,
    engine: Engine,
    stop: tokio_util::sync::CancellationToken,
) -> Vec<Duration> {
    let table =
        busbar::compile::ident::TableName::parse("payroll.employee_records").expect("a table name");
    let dialect = store.dialect();
    let sql = format!(
        "SELECT COUNT(*) FROM {} WHERE email = {}",
        dialect.table(&table),
        dialect.param(1)
    );
    let mut samples = Vec::new();
    let mut n = 0;
    while !stop.is_cancelled() {
        n += 1;
        let event = candidate_hired(usize::MAX, n);
        let email = event["data"]["candidate"]["email"]
            .as_str()
            .unwrap()
            .to_owned();
        let sent = std::time::Instant::now();
        if engine.publish_json(&event, None).await.is_err() {
            continue;
        }
        loop {
            let mut tx = store.begin_read().await.expect("read");
            let query = AssertSqlSafe(sql.clone());
            let found: i64 = match &mut tx {
                DbTx::Postgres(tx) => {
                    sqlx::query_scalar(query)
                        .bind(&email)
                        .fetch_one(&mut **tx)
                        .await
                }
                DbTx::Sqlite(tx) => {
                    sqlx::query_scalar(query)
                        .bind(&email)
                        .fetch_one(&mut **tx)
                        .await
                }
            }
            .expect("probe");
            tx.rollback().await.ok();
            if found > 0 {
                samples.push(sent.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    samples
}
