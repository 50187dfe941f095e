//! `busbar serve`: connects, migrates, compiles the integrations directory,
//! starts the engine, and runs until SIGINT or SIGTERM.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::compile;
use crate::config;
use crate::engine::{Engine, EngineConfig};
use crate::store::Store;

/// How to run.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub database_url: String,
    pub dir: PathBuf,
    pub contracts: Option<PathBuf>,
    /// Install and seed the example platform.
    pub dev: bool,
    /// Delivery workers (default: per database).
    pub workers: Option<usize>,
}

/// Connects to the database and applies migrations.
pub async fn connect(database_url: &str) -> Result<Store> {
    let store = Store::connect(database_url)
        .await
        .with_context(|| format!("cannot connect to {}", redact(database_url)))?;
    store.migrate().await.context("cannot apply migrations")?;
    Ok(store)
}

/// Compiles the integrations directory, failing with its diagnostics.
pub fn load_generation(dir: &std::path::Path, contracts: Option<&std::path::Path>, number: u64) -> Result<compile::Generation> {
    let config = config::read_directory(dir, contracts)
        .with_context(|| format!("cannot read the integrations directory {}", dir.display()))?;
    let compilation = compile::compile(&config, number);
    for diagnostic in &compilation.diagnostics {
        if diagnostic.is_error() {
            tracing::error!("{diagnostic}");
        } else {
            tracing::warn!("{diagnostic}");
        }
    }
    match compilation.generation {
        Some(generation) => Ok(generation),
        None => bail!(
            "{} has {} error(s); run `busbar check {}`",
            dir.display(),
            compilation.errors(),
            dir.display()
        ),
    }
}

/// Runs busbar until a shutdown signal.
pub async fn serve(options: ServeOptions) -> Result<()> {
    let store = connect(&options.database_url).await?;
    if options.dev {
        crate::dev::seed(&store).await.context("cannot seed the example platform")?;
        tracing::info!(
            organization = %crate::dev::ORGANIZATION,
            "example platform ready: organization subscribed to nexus and paylinq"
        );
    }
    let generation = load_generation(&options.dir, options.contracts.as_deref(), 1)?;
    tracing::info!(
        generation = generation.number,
        integrations = generation.integrations.len(),
        "integrations loaded from {}",
        options.dir.display()
    );
    let mut config = EngineConfig::for_dialect(store.dialect());
    if let Some(workers) = options.workers {
        config.workers = workers;
    }
    let engine = Engine::start(store.clone(), generation, config)
        .await
        .context("cannot start the engine")?;
    tracing::info!(database = %redact(&options.database_url), "busbar is running");
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight deliveries");
    engine.shutdown().await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Waits for SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("can install a SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// A database URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
