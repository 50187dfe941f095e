//! Reload benchmark: how long from saving a file to the new generation
//! being live (through the real file watcher, debounce included), and what
//! a reload of a directory of 1,000 integrations costs.
//!
//! ```text
//! cargo bench --bench reload -- [--edits N] [--files N]
//! ```

#[path = "support/generate.rs"]
#[allow(dead_code)]
mod generate;

use std::path::Path;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use busbar::engine::{Engine, EngineConfig};
use busbar::reload::{Reloader, Trigger, WatchMode};
use busbar::store::Store;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn argument(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn start(root: &Path) -> (Engine, std::sync::Arc<Reloader>, CancellationToken) {
    let dir = root.join("integrations.d");
    let store = Store::connect(&format!("sqlite://{}", root.join("bench.db").display()))
        .await
        .expect("sqlite");
    store.migrate().await.expect("migrate");
    let config = busbar::config::read_directory(&dir, None).expect("read");
    let generation = busbar::compile::compile(&config, 1)
        .generation
        .expect("the directory compiles");
    let engine = Engine::start(
        store,
        generation,
        EngineConfig::for_dialect(busbar::store::Dialect::Sqlite),
    )
    .await
    .expect("engine");
    let reloader = Reloader::new(engine.clone(), &dir, None, &config);
    let shutdown = CancellationToken::new();
    reloader.spawn(WatchMode::Events, Duration::from_secs(1), shutdown.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    (engine, reloader, shutdown)
}

/// Save → live, over `edits` saves of one file in a small directory.
async fn save_to_live(edits: usize) {
    let root = tempfile::tempdir().expect("temp dir");
    generate::generate(root.path(), 3).expect("generate");
    let (engine, reloader, shutdown) = start(root.path()).await;
    let dir = root.path().join("integrations.d");
    let file = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "yaml"))
        .expect("a file");
    let original = std::fs::read_to_string(&file).expect("read");
    let mut live = reloader.subscribe();
    let mut samples = Vec::with_capacity(edits);
    for i in 0..edits {
        // A change the compiler sees (a comment would do, but the contents
        // must differ for the reload to make a generation).
        let text = format!("{original}\n# edit {i}\n");
        let before = *live.borrow_and_update();
        let temporary = file.with_extension("yaml.tmp~");
        let saved = Instant::now();
        if i % 2 == 0 {
            std::fs::write(&temporary, &text).expect("write");
            std::fs::rename(&temporary, &file).expect("rename");
        } else {
            std::fs::write(&file, &text).expect("write in place");
        }
        tokio::time::timeout(Duration::from_secs(10), live.wait_for(|n| *n > before))
            .await
            .expect("the save went live")
            .expect("reloader alive");
        samples.push(saved.elapsed());
        // Let the watcher settle before the next save.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    samples.sort();
    println!(
        "save -> live ({edits} saves, debounce {:?}): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        busbar::reload::DEBOUNCE,
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.9).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().expect("samples").as_secs_f64() * 1e3,
    );
    shutdown.cancel();
    engine.shutdown().await;
}

/// A full reload (read, compile, swap) of a large directory.
async fn large_reload(files: usize) {
    let root = tempfile::tempdir().expect("temp dir");
    generate::generate(root.path(), files).expect("generate");
    let (engine, reloader, shutdown) = start(root.path()).await;
    let mut samples = Vec::new();
    for _ in 0..10 {
        let outcome = reloader.reload(Trigger::Api).await;
        assert!(
            outcome.ok && outcome.swapped,
            "{:?}",
            outcome.errors.first()
        );
        samples.push(Duration::from_secs_f64(
            outcome.duration_ms.expect("a reload is timed") / 1e3,
        ));
    }
    samples.sort();
    println!(
        "reload of {files} integrations (read + compile + swap, 10 runs): p50 {:.0} ms, max {:.0} ms",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        samples.last().expect("samples").as_secs_f64() * 1e3,
    );
    shutdown.cancel();
    engine.shutdown().await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        save_to_live(argument("--edits", 100)).await;
        large_reload(argument("--files", 1000)).await;
    });
}
