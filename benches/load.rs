//! Load benchmark: N `recruitiq/candidate.hired` events published by C
//! concurrent publishers through the library call, on each database, until
//! every delivery (including the chained `employee.created` one) is
//! applied. Prints events/s and latency percentiles for publishing and for
//! publish → applied.
//!
//! ```text
//! cargo bench --bench load -- [--events N] [--concurrency C] [--db sqlite|postgres|both]
//!                             [--workers N] [--batch N]
//! ```
//!
//! PostgreSQL is taken from `BENCH_DATABASE_URL` or `TEST_DATABASE_URL`
//! (a server URL; the benchmark creates and drops its own database).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{AssertSqlSafe, Connection};
use tokio::sync::Mutex;
use uuid::Uuid;

use busbar::engine::{Engine, EngineConfig};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use busbar::store::{DbTx, Store};

struct Options {
    events: usize,
    concurrency: usize,
    databases: Vec<String>,
    workers: Option<usize>,
    batch: Option<usize>,
}

fn options() -> Options {
    let mut options = Options {
        events: 20_000,
        concurrency: 128,
        databases: vec!["sqlite".into(), "postgres".into()],
        workers: None,
        batch: None,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--events" => options.events = value.parse().expect("--events N"),
            "--concurrency" => options.concurrency = value.parse().expect("--concurrency C"),
            "--workers" => options.workers = Some(value.parse().expect("--workers N")),
            "--batch" => options.batch = Some(value.parse().expect("--batch N")),
            "--db" if value == "both" => {}
            "--db" => options.databases = vec![value],
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    options
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn report(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "  {label:<22} p50 {:>8.1} ms   p90 {:>8.1} ms   p99 {:>8.1} ms   max {:>8.1} ms",
        percentile(&samples, 0.50).as_secs_f64() * 1e3,
        percentile(&samples, 0.90).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

async fn pending(store: &Store) -> i64 {
    let mut tx = store.begin_read().await.expect("read");
    let sql = "SELECT COUNT(*) FROM integrations.deliveries WHERE status = 'pending'";
    let sql = store.dialect().sql(sql);
    let count: i64 = match &mut tx {
        DbTx::Postgres(tx) => sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(&mut **tx).await,
        DbTx::Sqlite(tx) => sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(&mut **tx).await,
    }
    .expect("count");
    tx.rollback().await.ok();
    count
}

/// When each root event's last delivery (its own, and its children's)
/// completed.
async fn applied_at(store: &Store) -> HashMap<Uuid, DateTime<Utc>> {
    let sql = store.dialect().sql(
        "SELECT COALESCE(e.parent_id, e.id), MAX(d.completed_at) FROM integrations.deliveries d \
         JOIN integrations.events e ON e.id = d.event_id GROUP BY COALESCE(e.parent_id, e.id)",
    );
    let mut tx = store.begin_read().await.expect("read");
    type Row = (busbar::store::types::Id, Option<busbar::store::types::Time>);
    let rows: Vec<Row> = match &mut tx {
        DbTx::Postgres(tx) => sqlx::query_as(AssertSqlSafe(sql)).fetch_all(&mut **tx).await,
        DbTx::Sqlite(tx) => sqlx::query_as(AssertSqlSafe(sql)).fetch_all(&mut **tx).await,
    }
    .expect("applied times");
    tx.rollback().await.ok();
    rows.into_iter()
        .filter_map(|(id, at)| at.map(|at| (id.0, at.0)))
        .collect()
}

async fn run(label: &str, url: &str, options: &Options) {
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
    if let Some(workers) = options.workers {
        config.workers = workers;
    }
    if let Some(batch) = options.batch {
        config.batch_size = batch;
    }
    let workers = config.workers;
    let engine = Engine::start(store.clone(), generation, config).await.expect("engine");

    let per_task = options.events / options.concurrency;
    let total = per_task * options.concurrency;
    let started: Arc<Mutex<Vec<(Uuid, DateTime<Utc>, Duration)>>> =
        Arc::new(Mutex::new(Vec::with_capacity(total)));
    let begin = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..options.concurrency {
        let engine: Engine = engine.clone();
        let started = started.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let event = json!({
                    "source": "recruitiq",
                    "event": "candidate.hired",
                    "organization_id": busbar::dev::ORGANIZATION,
                    "data": {
                        "candidate": {
                            "id": Uuid::new_v4(),
                            "firstName": "Load",
                            "lastName": format!("Tester {task}-{i}"),
                            "email": format!("load-{task}-{i}-{}@acme.example", Uuid::new_v4().simple()),
                        },
                        "hiredBy": busbar::dev::USER,
                        "jobTitle": "Engineer",
                        "startDate": "2027-01-04",
                        "offer": { "salary": 60000 + i, "currency": "EUR", "payFrequency": "monthly" }
                    }
                });
                let at = Utc::now();
                let t = Instant::now();
                let published = engine.publish_json(&event, None).await.expect("publish");
                mine.push((published.id, at, t.elapsed()));
            }
            started.lock().await.extend(mine);
        }));
    }
    for task in tasks {
        task.await.expect("publisher task");
    }
    let published_in = begin.elapsed();
    while pending(&store).await > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let applied_in = begin.elapsed();
    engine.shutdown().await;

    let started = started.lock().await;
    let applied = applied_at(&store).await;
    let publish_latency: Vec<Duration> = started.iter().map(|(_, _, d)| *d).collect();
    let end_to_end: Vec<Duration> = started
        .iter()
        .filter_map(|(id, at, _)| applied.get(id).map(|done| (*done - *at).to_std().unwrap_or_default()))
        .collect();
    println!(
        "{label}: {total} events ({} deliveries), {} publishers, {workers} workers",
        total * 3,
        options.concurrency
    );
    println!(
        "  published in {:.2} s = {:.0} events/s; all applied in {:.2} s = {:.0} events/s end to end",
        published_in.as_secs_f64(),
        total as f64 / published_in.as_secs_f64(),
        applied_in.as_secs_f64(),
        total as f64 / applied_in.as_secs_f64()
    );
    report("publish", publish_latency);
    report("publish -> applied", end_to_end);
    store.close().await;
}

fn main() {
    if std::env::var_os("BUSBAR_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("BUSBAR_LOG"))
            .with_writer(std::io::stderr)
            .init();
    }
    let options = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        for database in &options.databases {
            match database.as_str() {
                "sqlite" => {
                    let dir = tempfile::tempdir().expect("temp dir");
                    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
                    run("SQLite (WAL, synchronous=FULL)", &url, &options).await;
                }
                "postgres" => {
                    let Ok(admin) = std::env::var("BENCH_DATABASE_URL").or_else(|_| std::env::var("TEST_DATABASE_URL")) else {
                        println!("PostgreSQL: skipped (set BENCH_DATABASE_URL or TEST_DATABASE_URL)");
                        continue;
                    };
                    let name = format!("busbar_bench_{}", Uuid::new_v4().simple());
                    let mut conn = sqlx::PgConnection::connect(&admin).await.expect("admin connection");
                    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                        .execute(&mut conn)
                        .await
                        .expect("create database");
                    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                    run("PostgreSQL (durable commits)", &format!("{base}/{name}"), &options).await;
                    let _ = sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                        .execute(&mut conn)
                        .await;
                }
                other => println!("unknown database `{other}`"),
            }
        }
    });
}
