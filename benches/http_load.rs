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

mod support {
    pub mod measure;
}

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde_json::{Value, json};
use uuid::Uuid;

use busbar::api::{self, ApiConfig, AppState, ReloadOutcome};
use busbar::store::keys::{self, Scope};
use support::measure::{self, report};

/// The allocator `busbar serve` runs with, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// What one request published: the ids, and how long it took.
type Sent = (Vec<Uuid>, Duration);

async fn run(label: &str, url: &str, options: &Options) {
    let (store, engine, config) = measure::start_engine(url, |_| {}).await;
    let workers = config.workers;
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
    let server = tokio::spawn(api::serve(
        listener,
        busbar::serve::app(state),
        async move {
            let _ = stopped.await;
        },
    ));

    let batch = options.batch.max(1);
    let requests_per_client = options.events / batch / options.concurrency;
    let total = requests_per_client * options.concurrency * batch;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(options.concurrency)
        .build()
        .expect("client");
    let stop_probe = tokio_util::sync::CancellationToken::new();
    let probe = tokio::spawn(measure::probe_latency(
        store.clone(),
        engine.clone(),
        stop_probe.clone(),
    ));
    let begin = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..options.concurrency {
        let (client, endpoint, key) = (client.clone(), endpoint.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine: Vec<Sent> = Vec::with_capacity(requests_per_client);
            for r in 0..requests_per_client {
                let body = if batch == 1 {
                    measure::candidate_hired(task, r)
                } else {
                    json!({ "events": (0..batch).map(|i| measure::candidate_hired(task, r * batch + i)).collect::<Vec<_>>() })
                };
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
                mine.push((ids, elapsed));
            }
            mine
        }));
    }
    let mut sent: Vec<Sent> = Vec::new();
    for task in tasks {
        sent.extend(task.await.expect("client task"));
    }
    let published_in = begin.elapsed();
    measure::drain(&store, &engine).await;
    let applied_in = begin.elapsed();
    stop_probe.cancel();
    let end_to_end = probe.await.expect("probe task");
    let _ = stop.send(());
    server.await.expect("server task").expect("server");
    engine.shutdown().await;

    let publish_latency: Vec<Duration> = sent.iter().map(|(_, d)| *d).collect();
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
    report("publish -> applied (probe)", end_to_end);
    store.close().await;
}

fn main() {
    let options = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(measure::on_each_database(
        &options.databases,
        async |label, url| run(label, url, &options).await,
    ));
}
