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

mod support {
    pub mod measure;
}

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use uuid::Uuid;

use busbar::engine::Engine;
use support::measure::{self, report};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

async fn run(label: &str, url: &str, options: &Options) {
    let (store, engine, config) = measure::start_engine(url, |config| {
        if let Some(workers) = options.workers {
            config.workers = workers;
        }
        if let Some(batch) = options.batch {
            config.batch_size = batch;
        }
    })
    .await;
    let workers = config.workers;

    let per_task = options.events / options.concurrency;
    let total = per_task * options.concurrency;
    // Per event: its id, and how long publishing it took.
    type Started = Vec<(Uuid, Duration)>;
    let started: Arc<Mutex<Started>> = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let stop_probe = tokio_util::sync::CancellationToken::new();
    let probe = tokio::spawn(measure::probe_latency(
        store.clone(),
        engine.clone(),
        stop_probe.clone(),
    ));
    let begin = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..options.concurrency {
        let engine: Engine = engine.clone();
        let started = started.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let event = measure::candidate_hired(task, i);
                let t = Instant::now();
                let published = engine.publish_json(&event, None).await.expect("publish");
                mine.push((published.id, t.elapsed()));
            }
            started.lock().await.extend(mine);
        }));
    }
    for task in tasks {
        task.await.expect("publisher task");
    }
    let published_in = begin.elapsed();
    measure::drain(&store, &engine).await;
    let applied_in = begin.elapsed();
    stop_probe.cancel();
    let end_to_end = probe.await.expect("probe task");
    engine.shutdown().await;

    let started = started.lock().await;
    let publish_latency: Vec<Duration> = started.iter().map(|(_, d)| *d).collect();
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
    report("publish -> applied (probe)", end_to_end);
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
    runtime.block_on(measure::on_each_database(
        &options.databases,
        async |label, url| run(label, url, &options).await,
    ));
}
