//! Issue 16's two figures of delivery at rest and beside a long
//! transaction, on PostgreSQL:
//!
//! 1. **Idle cost**: an engine with 10 integrations (the generator of
//!    `compile_and_map`) and nothing published, for `--idle-secs`: the
//!    transaction ids assigned in the whole cluster (from
//!    `pg_snapshot_xmax` of the current snapshot, which assigns none) and
//!    the transactions run in busbar's database (`pg_stat_database`). The
//!    cluster figure counts every database's writes: run it on a quiet
//!    server.
//! 2. **Latency beside an open transaction**: the shipped integrations; one
//!    event at a time published and its chain's end (the payroll record)
//!    polled for (`measure::probe_latency`), first for `--baseline-secs`
//!    with nothing else open, then while another session keeps a
//!    transaction open for `--open-secs` — holding a transaction id, a row
//!    lock on another organization and an outbox event of its own, as a
//!    product's migration or an idle psql session would. Then it commits,
//!    and the time until its own event is applied is printed.
//!
//! ```text
//! flock /tmp/busbar-bench.lock cargo bench --bench quiet -- [--idle-secs 60] [--open-secs 60] [--baseline-secs 20]
//! ```
//!
//! PostgreSQL is taken from `BENCH_DATABASE_URL` or `TEST_DATABASE_URL`.

mod support {
    #[allow(dead_code)]
    pub mod measure;
}
#[path = "support/generate.rs"]
#[allow(dead_code)]
mod generate;

use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use busbar::engine::{Engine, EngineConfig};
use busbar::store::Store;
use support::measure::{self, report};

struct Options {
    idle_secs: u64,
    open_secs: u64,
    baseline_secs: u64,
}

fn options() -> Options {
    let mut options = Options {
        idle_secs: 60,
        open_secs: 60,
        baseline_secs: 20,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let value = || args.get(i + 1).and_then(|v| v.parse().ok());
        match args[i].as_str() {
            "--idle-secs" => options.idle_secs = value().expect("--idle-secs N"),
            "--open-secs" => options.open_secs = value().expect("--open-secs N"),
            "--baseline-secs" => options.baseline_secs = value().expect("--baseline-secs N"),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    options
}

fn main() {
    let options = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(measure::on_each_database(
        &["postgres".to_owned()],
        async |_, url| {
            idle(url, &options).await;
            beside_an_open_transaction(url, &options).await;
        },
    ));
}

/// The next transaction id of the cluster, read without assigning one.
async fn next_xid(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
        .fetch_one(conn)
        .await
        .expect("snapshot")
}

/// Transactions committed and rolled back in the current database so far.
async fn transactions(conn: &mut PgConnection) -> i64 {
    // The statistics are per transaction of the reader: clear its cache.
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *conn)
        .await
        .expect("clear");
    sqlx::query_scalar(
        "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(conn)
    .await
    .expect("pg_stat_database")
}

async fn idle(url: &str, options: &Options) {
    let root = tempfile::tempdir().expect("temp dir");
    let generated = generate::generate(root.path(), 10).expect("generate");
    let store = Store::connect_with(url, 24).await.expect("connect");
    store.migrate().await.expect("migrate");
    let generation = busbar::serve::load_generation(
        &generated.integrations_dir,
        Some(&root.path().join("schemas/events")),
        1,
    )
    .expect("generated integrations compile");
    let integrations = generation.integrations.len();
    let engine = Engine::start(
        store.clone(),
        generation,
        EngineConfig::for_dialect(store.dialect()),
    )
    .await
    .expect("engine");
    // Let start-up (definitions, lanes, partitionings) settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut conn = PgConnection::connect(url).await.expect("connect");
    let (xid_before, tx_before) = (next_xid(&mut conn).await, transactions(&mut conn).await);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(options.idle_secs)).await;
    let (xid_after, tx_after) = (next_xid(&mut conn).await, transactions(&mut conn).await);
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    // The reader's own two statistics reads are transactions too.
    let busbar_transactions = tx_after - tx_before - 2;
    println!(
        "idle, {integrations} integrations, {:.0} s: {} transaction ids assigned in the cluster ({:.1}/min); \
         {busbar_transactions} transactions in busbar's database ({:.0}/min, read-only ones included)",
        started.elapsed().as_secs_f64(),
        xid_after - xid_before,
        (xid_after - xid_before) as f64 / minutes,
        busbar_transactions as f64 / minutes,
    );
    engine.shutdown().await;
    store.close().await;
}

/// Probes latency for `secs`.
async fn probe_for(store: &Store, engine: &Engine, secs: u64) -> Vec<Duration> {
    let stop = tokio_util::sync::CancellationToken::new();
    let probe = tokio::spawn(measure::probe_latency(
        store.clone(),
        engine.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.cancel();
    probe.await.expect("probe task")
}

async fn beside_an_open_transaction(url: &str, options: &Options) {
    let (store, engine, _) = measure::start_engine(url, |_| {}).await;
    let baseline = probe_for(&store, &engine, options.baseline_secs).await;
    println!(
        "one event at a time, publish -> its chain applied (payroll record), {} events:",
        baseline.len()
    );
    report("nothing else open", baseline);

    // Another organization's row locked, an id held, an outbox event of
    // its own: what a product's migration or an idle psql session holds.
    let other = Uuid::new_v4();
    let mut conn = PgConnection::connect(url).await.expect("connect");
    sqlx::query("INSERT INTO core.organizations (id, name) VALUES ($1, 'Other')")
        .bind(other)
        .execute(&mut conn)
        .await
        .expect("organization");
    sqlx::query("BEGIN")
        .execute(&mut conn)
        .await
        .expect("begin");
    sqlx::query("SELECT id FROM core.organizations WHERE id = $1 FOR UPDATE")
        .bind(other)
        .execute(&mut conn)
        .await
        .expect("lock");
    let own = measure::candidate_hired(usize::MAX - 1, 0);
    let own_email = own["data"]["candidate"]["email"]
        .as_str()
        .unwrap()
        .to_owned();
    sqlx::query(
        "INSERT INTO integrations.events (id, organization_id, source_product, event_name, event_data) \
         VALUES ($1, $2, 'recruitiq', 'candidate.hired', $3)",
    )
    .bind(Uuid::new_v4())
    .bind(busbar::dev::ORGANIZATION)
    .bind(&own["data"])
    .execute(&mut conn)
    .await
    .expect("outbox event");
    let opened = Instant::now();
    let probe_secs = options.open_secs.saturating_sub(5).max(1);
    let beside = probe_for(&store, &engine, probe_secs).await;
    report(
        &format!("{} s transaction open", options.open_secs),
        beside.clone(),
    );
    let rest = Duration::from_secs(options.open_secs).saturating_sub(opened.elapsed());
    tokio::time::sleep(rest).await;
    sqlx::query("COMMIT")
        .execute(&mut conn)
        .await
        .expect("commit");
    let committed = Instant::now();
    loop {
        let found: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM payroll.employee_records WHERE email = $1")
                .bind(&own_email)
                .fetch_one(&mut conn)
                .await
                .expect("poll");
        if found > 0 {
            break;
        }
        assert!(
            committed.elapsed() < Duration::from_secs(60),
            "the open transaction's own event was not applied after its commit"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    println!(
        "  its own event, held {:.0} s: applied {:.1} ms after its commit",
        options.open_secs as f64,
        committed.elapsed().as_secs_f64() * 1e3
    );
    engine.shutdown().await;
    store.close().await;
}
