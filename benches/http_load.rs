//! HTTP load benchmark: the figure a product sees. busbar's API runs
//! in-process on 127.0.0.1 (the same router, middleware and key check as
//! `busbar serve`), and C concurrent clients publish N
//! `recruitiq/candidate.hired` events with `POST /api/events`, B events per
//! request (B = 1: one event per request; B > 1: `{"events": [...]}`),
//! until every delivery (including the chained `employee.created` one) is
//! applied. Prints events/s and latency percentiles for publishing and for
//! publish → applied.
//!
//! ```text
//! cargo bench --bench http_load -- [--events N] [--concurrency C] [--batch B]
//!                                  [--db sqlite|postgres|both]
//! ```
//!
//! PostgreSQL is taken from `BENCH_DATABASE_URL` or `TEST_DATABASE_URL`
//! (a server URL; the benchmark creates and drops its own database). The
//! clients share the machine's cores with the server, as a load generator
//! on the same host would.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection};
use uuid::Uuid;

use busbar::api::{self, ApiConfig, AppState, ReloadOutcome};
use busbar::engine::{Engine, EngineConfig};
use busbar::store::keys::{self, Scope};
use busbar::store::{DbTx, Store};

struct Options {
    events: usize,
    concurrency: usize,
    batch: usize,
    databases: Vec<String>,
}

fn options() -> Options {
    let mut options = Options {
        events: 20_000,
        concurrency: 64,
        batch: 1,
        databases: vec!["sqlite".into(), "postgres".into()],
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--events" => options.events = value.parse().expect("--events N"),
            "--concurrency" => options.concurrency = value.parse().expect("--concurrency C"),
            "--batch" => options.batch = value.parse().expect("--batch B"),
            "--db" if value == "both" => {}
            "--db" => options.databases = vec![value],
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    // Without `--bench` (`cargo test --all-targets`), a quick smoke run.
    if !args.iter().any(|a| a == "--bench") {
        options.events = options.events.min(200);
        options.concurrency = options.concurrency.min(8);
    }
    options
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(label: &str, mut samples: Vec<Duration>) {
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

async fn query_rows<T>(store: &Store, sql: &str) -> Vec<T>
where
    T: Send + Unpin,
    for<'r> T:
        sqlx::FromRow<'r, sqlx::postgres::PgRow> + sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
{
    let sql = store.dialect().sql(sql);
    let mut tx = store.begin_read().await.expect("read");
    let rows = match &mut tx {
        DbTx::Postgres(tx) => {
            sqlx::query_as(AssertSqlSafe(sql))
                .fetch_all(&mut **tx)
                .await
        }
        DbTx::Sqlite(tx) => {
            sqlx::query_as(AssertSqlSafe(sql))
                .fetch_all(&mut **tx)
                .await
        }
    }
    .expect("query");
    tx.rollback().await.ok();
    rows
}

async fn pending(store: &Store) -> i64 {
    let rows: Vec<(i64,)> = query_rows(
        store,
        "SELECT COUNT(*) FROM integrations.deliveries WHERE status = 'pending'",
    )
    .await;
    rows[0].0
}

/// When each published event's last delivery (its own, and its
/// children's) completed.
async fn applied_at(store: &Store) -> HashMap<Uuid, DateTime<Utc>> {
    type Row = (busbar::store::types::Id, Option<busbar::store::types::Time>);
    let rows: Vec<Row> = query_rows(
        store,
        "SELECT COALESCE(e.parent_id, e.id), MAX(d.completed_at) FROM integrations.deliveries d \
         JOIN integrations.events e ON e.id = d.event_id GROUP BY COALESCE(e.parent_id, e.id)",
    )
    .await;
    rows.into_iter()
        .filter_map(|(id, at)| at.map(|at| (id.0, at.0)))
        .collect()
}

fn event(client: usize, n: usize) -> Value {
    json!({
        "source": "recruitiq",
        "event": "candidate.hired",
        "organization_id": busbar::dev::ORGANIZATION,
        "data": {
            "candidate": {
                "id": Uuid::new_v4(),
                "firstName": "Load",
                "lastName": format!("Tester {client}-{n}"),
                "email": format!("http-{client}-{n}-{}@acme.example", Uuid::new_v4().simple()),
            },
            "hiredBy": busbar::dev::USER,
            "jobTitle": "Engineer",
            "startDate": "2027-01-04",
            "offer": { "salary": 60000 + n, "currency": "EUR", "payFrequency": "monthly" }
        }
    })
}

/// What one request published: the ids, when it was sent, how long it took.
type Sent = (Vec<Uuid>, DateTime<Utc>, Duration);

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
    let config = EngineConfig::for_dialect(store.dialect());
    let workers = config.workers;
    let engine = Engine::start(store.clone(), generation, config)
        .await
        .expect("engine");
    let key = keys::create_key(
        &store,
        Some(busbar::dev::ORGANIZATION),
        &[Scope::Publish],
        Some("http_load"),
    )
    .await
    .expect("key")
    .key;
    let reload = Arc::new(ArcSwap::from_pointee(ReloadOutcome::loaded(1)));
    let state = AppState::new(engine.clone(), reload, ApiConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}/api/events", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::serve(listener, api::router(state), async move {
        let _ = stopped.await;
    }));

    let batch = options.batch.max(1);
    let requests_per_client = options.events / batch / options.concurrency;
    let total = requests_per_client * options.concurrency * batch;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(options.concurrency)
        .build()
        .expect("client");
    let begin = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..options.concurrency {
        let (client, endpoint, key) = (client.clone(), endpoint.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine: Vec<Sent> = Vec::with_capacity(requests_per_client);
            for r in 0..requests_per_client {
                let body = if batch == 1 {
                    event(task, r)
                } else {
                    json!({ "events": (0..batch).map(|i| event(task, r * batch + i)).collect::<Vec<_>>() })
                };
                let at = Utc::now();
                let t = Instant::now();
                let response = client
                    .post(&endpoint)
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await
                    .expect("the server answers");
                let status = response.status();
                let answer: Value = response.json().await.expect("a JSON answer");
                let elapsed = t.elapsed();
                assert_eq!(status.as_u16(), 202, "{answer}");
                let ids = match answer.get("events") {
                    Some(events) => events
                        .as_array()
                        .expect("events")
                        .iter()
                        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
                        .collect(),
                    None => vec![answer["id"].as_str().unwrap().parse().unwrap()],
                };
                mine.push((ids, at, elapsed));
            }
            mine
        }));
    }
    let mut sent: Vec<Sent> = Vec::new();
    for task in tasks {
        sent.extend(task.await.expect("client task"));
    }
    let published_in = begin.elapsed();
    while pending(&store).await > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let applied_in = begin.elapsed();
    let _ = stop.send(());
    server.await.expect("server task").expect("server");
    engine.shutdown().await;

    let applied = applied_at(&store).await;
    let publish_latency: Vec<Duration> = sent.iter().map(|(_, _, d)| *d).collect();
    let end_to_end: Vec<Duration> = sent
        .iter()
        .flat_map(|(ids, at, _)| ids.iter().map(move |id| (id, at)))
        .filter_map(|(id, at)| {
            applied
                .get(id)
                .map(|done| (*done - *at).to_std().unwrap_or_default())
        })
        .collect();
    println!(
        "{label}: {total} events ({} deliveries) over HTTP, {} clients, {batch} event(s) per request, {workers} workers",
        total * 3,
        options.concurrency
    );
    println!(
        "  published in {:.2} s = {:.0} events/s ({:.0} requests/s); all applied in {:.2} s = {:.0} events/s end to end",
        published_in.as_secs_f64(),
        total as f64 / published_in.as_secs_f64(),
        sent.len() as f64 / published_in.as_secs_f64(),
        applied_in.as_secs_f64(),
        total as f64 / applied_in.as_secs_f64()
    );
    report("publish (per request)", publish_latency);
    report("publish -> applied", end_to_end);
    store.close().await;
}

fn main() {
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
                    let Ok(admin) = std::env::var("BENCH_DATABASE_URL")
                        .or_else(|_| std::env::var("TEST_DATABASE_URL"))
                    else {
                        println!(
                            "PostgreSQL: skipped (set BENCH_DATABASE_URL or TEST_DATABASE_URL)"
                        );
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
                    run(
                        "PostgreSQL (durable commits)",
                        &format!("{base}/{name}"),
                        &options,
                    )
                    .await;
                    let _ = sqlx::query(AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
                other => println!("unknown database `{other}`"),
            }
        }
    });
}
