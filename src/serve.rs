//! `busbar serve`: connects, migrates, compiles the integrations directory,
//! starts the engine and the HTTP API, and runs until SIGINT or SIGTERM;
//! then stops accepting requests, lets those in flight finish, and stops
//! the engine. `serve_until` is the same run ended by any future (the
//! tests run it in-process, on port 0).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arc_swap::ArcSwap;

use crate::api::{self, ApiConfig, AppState, ReloadOutcome};
use crate::compile;
use crate::config;
use crate::console;
use crate::dev::DevKey;
use crate::engine::{Engine, EngineConfig};
use crate::store::{Store, redact};
use crate::telemetry;

/// How to run.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub database_url: String,
    pub dir: PathBuf,
    pub contracts: Option<PathBuf>,
    /// Install and seed the example platform, and print the dev key.
    pub dev: bool,
    /// With `dev`: revoke the earlier dev keys and make a new one, rather
    /// than print the kept one again.
    pub new_key: bool,
    /// Delivery workers (default: per database).
    pub workers: Option<usize>,
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// How changes to the integrations directory are noticed.
    pub watch: crate::reload::WatchMode,
    /// How often `WatchMode::Poll` reads the directory.
    pub poll_interval: std::time::Duration,
    /// The API's limits and timeouts.
    pub api: ApiConfig,
}

/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Connects to the database and applies migrations.
pub async fn connect(database_url: &str) -> Result<Store> {
    let store = Store::connect(database_url)
        .await
        .with_context(|| format!("cannot connect to {}", redact(database_url)))?;
    store.migrate().await.context("cannot apply migrations")?;
    Ok(store)
}

/// Compiles the integrations directory, failing with its diagnostics.
pub fn load_generation(
    dir: &std::path::Path,
    contracts: Option<&std::path::Path>,
    number: u64,
) -> Result<compile::Generation> {
    let config = config::read_directory(dir, contracts)
        .with_context(|| format!("cannot read the integrations directory {}", dir.display()))?;
    compile_or_fail(&config, number)
}

/// Compiles files already read, logging every diagnostic, failing on errors.
pub fn compile_or_fail(config: &config::ConfigDir, number: u64) -> Result<compile::Generation> {
    let compilation = compile::compile(config, number);
    for diagnostic in &compilation.diagnostics {
        if diagnostic.is_error() {
            tracing::error!("{diagnostic}");
        } else {
            tracing::warn!("{diagnostic}");
        }
    }
    let dir = config.root.display();
    match compilation.generation {
        Some(generation) => Ok(generation),
        None => bail!(
            "{dir} has {} error(s); run `busbar check {dir}`",
            compilation.errors()
        ),
    }
}

/// What a server that has started listening tells its caller.
#[derive(Debug, Clone)]
pub struct Listening {
    /// The address it listens on (the port chosen when asked for port 0).
    pub address: SocketAddr,
    /// With `dev`: the dev key, which the binary prints.
    pub dev_key: Option<DevKey>,
}

/// Runs busbar until a shutdown signal (SIGINT or SIGTERM); with `dev`,
/// prints the dev key and how to use it once it listens.
pub async fn serve(options: ServeOptions) -> Result<()> {
    serve_until(options, shutdown_signal(), |listening| {
        if let Some(key) = &listening.dev_key {
            println!("{}", dev_instructions(listening.address, key));
        }
    })
    .await
}

/// Runs busbar until `shutdown` completes, then stops accepting requests,
/// finishes those in flight and stops the engine. `on_listening` is called
/// once, when the API listens and before it answers (so a test that binds
/// port 0 learns the address). What `serve` runs, in-process for tests.
pub async fn serve_until(
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(Listening),
) -> Result<()> {
    check_contracts_option(options.contracts.as_deref())?;
    // Before anything that counts.
    telemetry::install();
    let store = connect(&options.database_url).await?;
    if options.dev {
        crate::dev::seed(&store)
            .await
            .context("cannot seed the example platform")?;
        tracing::info!(
            organization = %crate::dev::ORGANIZATION,
            "example platform ready: organization subscribed to nexus and paylinq"
        );
    }
    let config_dir = config::read_directory(&options.dir, options.contracts.as_deref())
        .with_context(|| {
            format!(
                "cannot read the integrations directory {}",
                options.dir.display()
            )
        })?;
    let generation = compile_or_fail(&config_dir, 1)?;
    let reload = Arc::new(ArcSwap::from_pointee(ReloadOutcome::loaded(
        generation.number,
    )));
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
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let address = listener
        .local_addr()
        .context("cannot read the listen address")?;
    let reloader = crate::reload::Reloader::new(
        engine.clone(),
        &options.dir,
        options.contracts.as_deref(),
        &config_dir,
    );
    let stop_watching = tokio_util::sync::CancellationToken::new();
    let mut watchers = reloader.spawn(options.watch, options.poll_interval, stop_watching.clone());
    watchers.push(crate::engine::history::spawn_sampler(
        engine.clone(),
        stop_watching.clone(),
    ));
    let state = AppState::new(engine.clone(), reload, options.api).with_reloader(reloader);
    let dev_key = if options.dev {
        let file = crate::dev::dev_key_file(&options.database_url);
        let key = crate::dev::dev_key(
            &store,
            file.as_deref(),
            options.new_key,
            &options.database_url,
        )
        .await
        .context("cannot make the dev API key")?;
        Some(key)
    } else {
        None
    };
    on_listening(Listening { address, dev_key });
    tracing::info!(database = %redact(&options.database_url), %address, "busbar is running");
    let draining = state.draining.clone();
    let result = api::serve(listener, app(state), async move {
        shutdown.await;
        draining.cancel();
        tracing::info!("shutting down: no new connections; finishing requests in flight");
    })
    .await;
    stop_watching.cancel();
    for watcher in watchers {
        let _ = watcher.await;
    }
    tracing::info!("shutting down: finishing in-flight deliveries");
    engine.shutdown().await;
    store.close().await;
    result.context("the HTTP server failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// `--contracts` names a directory, and a missing one just holds no
/// contracts; but `--contracts strict` (or `open`) naming no directory is
/// surely `--contract-policy` mistyped, so it is refused with a hint.
pub fn check_contracts_option(contracts: Option<&std::path::Path>) -> Result<()> {
    if let Some(dir) = contracts
        && let Some(name @ ("strict" | "open")) = dir.to_str()
        && !dir.exists()
    {
        bail!(
            "--contracts names the directory of event contracts, and there is no directory `{name}`; \
             to choose which events publishing accepts, use --contract-policy {name}"
        );
    }
    Ok(())
}

/// What `serve --dev` prints: the dev key and curl commands to paste.
pub fn dev_instructions(address: SocketAddr, key: &DevKey) -> String {
    let host = if address.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), address.port())
    } else {
        address
    };
    let base = format!("http://{host}");
    let auth = r#"-H "Authorization: Bearer $BUSBAR_KEY""#;
    let event = crate::dev::EXAMPLE_EVENT_ID;
    let organization = crate::dev::ORGANIZATION;
    let which = if key.reused {
        "The dev admin key for every organization (scopes: publish, read, admin), the same as last run:"
    } else {
        "A new dev admin key for every organization (scopes: publish, read, admin):"
    };
    let kept = match &key.file {
        Some(file) => format!(
            "(Kept in {} for the next runs on this database; `serve --dev --new-key` replaces it.)",
            file.display()
        ),
        None => "(Not kept: the next run makes another.)".to_owned(),
    };
    [
        String::new(),
        format!("busbar (dev) is serving on {base}"),
        format!("The operations console: {base}/console (sign in with the key below)"),
        String::new(),
        which.into(),
        String::new(),
        format!("  export BUSBAR_KEY={}", key.key),
        String::new(),
        kept,
        String::new(),
        "Publish the example event (from the repository root):".into(),
        String::new(),
        format!("  curl -s -X POST {base}/api/events {auth} \\"),
        "    -H 'Content-Type: application/json' --data @examples/events/candidate.hired.json"
            .into(),
        String::new(),
        "The event with its deliveries, the integrations' status, the organization's events:"
            .into(),
        String::new(),
        format!("  curl -s {base}/api/integrations/events/{event} {auth}"),
        format!("  curl -s {base}/api/integrations/status {auth}"),
        format!("  curl -s '{base}/api/integrations/events?organization_id={organization}' {auth}"),
        String::new(),
        format!("The API is described at {base}/openapi.json and in docs/API.md."),
    ]
    .join("\n")
}

/// Waits for SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
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

/// What busbar serves on its port: the API and the operations console,
/// whose pages go through the API's middleware.
pub fn app(state: AppState) -> axum::Router {
    api::router(state, console::router())
}
