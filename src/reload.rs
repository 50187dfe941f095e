//! Live reload: the integrations directory is compiled anew when it
//! changes, and the new generation replaces the live one only if the whole
//! directory compiles.
//!
//! A reload is triggered by the file watcher (`notify`, debounced, watching
//! the directories rather than the files, so that editors' write-then-rename
//! saves and Kubernetes ConfigMap symlink swaps are seen), by a poll (for
//! file systems that send no events), by SIGHUP, or by the API. Every
//! trigger goes through [`Reloader::reload`], which reads the directory,
//! compiles it with exactly the code `check` runs, and either swaps the
//! generation in ([`Engine::swap_generation`]) or keeps the live one and
//! records the diagnostics. Reloads run one at a time; a reload that finds
//! nothing changed is a no-op.

use std::collections::BTreeMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::compile::{self, Generation};
use crate::config::{self, ConfigDir};
use crate::diagnostics::Diagnostic;
use crate::engine::Engine;

/// What started a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// The first load, at start-up.
    Startup,
    /// The file watcher saw a change.
    Watch,
    /// The poll found a change.
    Poll,
    /// SIGHUP.
    Signal,
    /// `POST /api/integrations/reload`.
    Api,
}

/// The outcome of a configuration load: logged, counted in metrics, and
/// shown as it is by `GET /api/integrations/status`, `POST
/// /api/integrations/reload` and the console. The initial load sets it;
/// the reloader replaces it after each reload.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReloadOutcome {
    /// The generation live after the load.
    pub generation: u64,
    /// Whether the load produced a new generation, or found nothing changed
    /// (false: errors, the previous generation stays live).
    pub ok: bool,
    pub at: DateTime<Utc>,
    /// What started it.
    pub trigger: Trigger,
    /// Whether a new generation went live.
    pub swapped: bool,
    /// How long reading, compiling and swapping took (absent for a load
    /// that was not timed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// Files added, changed or removed since the previous generation.
    #[serde(serialize_with = "paths_as_text")]
    #[schema(value_type = Vec<String>)]
    pub files_changed: Vec<PathBuf>,
    /// Integrations the new generation added, changed and removed.
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    /// Every error found (empty when `ok`), as `check` reports them.
    #[serde(serialize_with = "errors_as_reload_errors")]
    #[schema(value_type = Vec<ReloadError>)]
    pub errors: Vec<Diagnostic>,
}

impl ReloadOutcome {
    /// A load that made `generation` live (the start-up load, where no
    /// reloader runs).
    pub fn loaded(generation: u64) -> ReloadOutcome {
        ReloadOutcome {
            generation,
            ok: true,
            at: Utc::now(),
            trigger: Trigger::Startup,
            swapped: true,
            duration_ms: None,
            files_changed: Vec::new(),
            added: Vec::new(),
            changed: Vec::new(),
            removed: Vec::new(),
            errors: Vec::new(),
        }
    }
}

/// One problem in the configuration that stopped a reload, as the API and
/// the console show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReloadError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The diagnostic's stable code (`undefined-name`).
    pub code: String,
    pub message: String,
}

impl From<&Diagnostic> for ReloadError {
    fn from(diagnostic: &Diagnostic) -> ReloadError {
        ReloadError {
            file: diagnostic.file.display().to_string(),
            line: diagnostic.position.line,
            column: diagnostic.position.column,
            code: diagnostic.code.as_str().to_owned(),
            message: diagnostic.message.clone(),
        }
    }
}

fn paths_as_text<S: serde::Serializer>(paths: &[PathBuf], to: S) -> Result<S::Ok, S::Error> {
    to.collect_seq(paths.iter().map(|path| path.display().to_string()))
}

fn errors_as_reload_errors<S: serde::Serializer>(
    errors: &[Diagnostic],
    to: S,
) -> Result<S::Ok, S::Error> {
    to.collect_seq(
        errors
            .iter()
            .filter(|d| d.is_error())
            .map(ReloadError::from),
    )
}

/// How the directory is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WatchMode {
    /// File-system events (inotify on Linux), debounced.
    Events,
    /// Read the directory every poll interval and compare contents.
    Poll,
    /// Only SIGHUP and the API reload.
    Off,
}

/// The debounce window: edits within it become one reload.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// A fingerprint of every file's text, to tell what changed.
type Fingerprints = BTreeMap<PathBuf, u64>;

fn fingerprints(config: &ConfigDir) -> Fingerprints {
    config
        .integrations
        .iter()
        .chain(&config.contracts)
        .chain(&config.databases)
        .map(|file| {
            let mut hasher = DefaultHasher::new();
            file.text.hash(&mut hasher);
            (file.path.clone(), hasher.finish())
        })
        .collect()
}

struct State {
    live: Fingerprints,
    /// The contents of the last failed attempt, so that the same broken
    /// contents are reported once, not at every poll.
    failed: Option<Fingerprints>,
    last: Option<ReloadOutcome>,
}

/// Reloads the live generation of an [`Engine`] from a directory.
pub struct Reloader {
    engine: Engine,
    dir: PathBuf,
    contracts: Option<PathBuf>,
    state: Mutex<State>,
    /// Serialises reloads.
    running: tokio::sync::Mutex<()>,
    /// The live generation's number, for anyone waiting on a reload.
    live: watch::Sender<u64>,
    /// Whether the file watcher has registered its directories (a change
    /// made after that is seen): unknown yet, yes, or it could not start.
    watching: watch::Sender<Option<bool>>,
    /// Told of every reload's outcome (the API's status, for one).
    observers: Mutex<Vec<Observer>>,
}

/// A function told of every reload's outcome.
pub type Observer = Box<dyn Fn(&ReloadOutcome) + Send + Sync>;

impl Reloader {
    /// A reloader for an engine whose live generation was compiled from
    /// `config`.
    pub fn new(
        engine: Engine,
        dir: &Path,
        contracts: Option<&Path>,
        config: &ConfigDir,
    ) -> Arc<Reloader> {
        let number = engine.generation().number;
        let outcome = ReloadOutcome {
            duration_ms: Some(0.0),
            added: engine.generation().integration_ids(),
            ..ReloadOutcome::loaded(number)
        };
        crate::telemetry::reload(true, number);
        for id in engine.generation().integration_ids() {
            crate::telemetry::integration_defined(&id);
        }
        Arc::new(Reloader {
            engine,
            dir: dir.to_path_buf(),
            contracts: contracts.map(Path::to_path_buf),
            state: Mutex::new(State {
                live: fingerprints(config),
                failed: None,
                last: Some(outcome),
            }),
            running: tokio::sync::Mutex::new(()),
            live: watch::channel(number).0,
            watching: watch::channel(None).0,
            observers: Mutex::new(Vec::new()),
        })
    }

    /// Calls `observer` with the last outcome now, and with every later one.
    pub fn observe(&self, observer: impl Fn(&ReloadOutcome) + Send + Sync + 'static) {
        if let Some(last) = self.last() {
            observer(&last);
        }
        self.observers
            .lock()
            .expect("reload observers")
            .push(Box::new(observer));
    }

    /// The last reload's outcome.
    pub fn last(&self) -> Option<ReloadOutcome> {
        self.state.lock().expect("reload state").last.clone()
    }

    /// Receives the live generation's number whenever it changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.live.subscribe()
    }

    /// Waits until the file watcher (`WatchMode::Events`) watches the
    /// directories, so that every later change is seen; returns `false` if
    /// it never will (it could not start, or stopped).
    pub async fn watching(&self) -> bool {
        let mut watching = self.watching.subscribe();
        let answer = watching.wait_for(Option::is_some).await;
        answer.is_ok_and(|w| *w == Some(true))
    }

    /// Reads and compiles the directory; swaps the new generation in if it
    /// compiles and differs from the live one.
    pub async fn reload(&self, trigger: Trigger) -> ReloadOutcome {
        let _one_at_a_time = self.running.lock().await;
        let started = Instant::now();
        let live = self.engine.generation();
        let dir = self.dir.clone();
        let contracts = self.contracts.clone();
        let number = live.number + 1;
        // Reading and compiling a large directory takes a while: keep it
        // off the async threads.
        let read = tokio::task::spawn_blocking(move || {
            config::read_directory(&dir, contracts.as_deref()).map(|config| {
                let compilation = compile::compile(&config, number);
                (config, compilation)
            })
        })
        .await;
        let mut outcome = ReloadOutcome {
            trigger,
            ok: false,
            swapped: false,
            duration_ms: Some(0.0),
            ..ReloadOutcome::loaded(live.number)
        };
        let (config, compilation) = match read {
            Ok(Ok(result)) => result,
            Ok(Err(error)) => {
                outcome.errors.push(Diagnostic::error(
                    &self.dir,
                    crate::diagnostics::Position::START,
                    crate::diagnostics::Code::Io,
                    format!("cannot read the integrations directory: {error}"),
                ));
                return self.finish(outcome, started, None);
            }
            Err(error) => {
                outcome.errors.push(Diagnostic::error(
                    &self.dir,
                    crate::diagnostics::Position::START,
                    crate::diagnostics::Code::Io,
                    format!("the reload task failed: {error}"),
                ));
                return self.finish(outcome, started, None);
            }
        };
        let now = fingerprints(&config);
        let automatic = trigger != Trigger::Api && trigger != Trigger::Signal;
        outcome.files_changed = {
            let state = self.state.lock().expect("reload state");
            if automatic && state.failed.as_ref() == Some(&now) {
                // Still the contents that failed last time: already reported.
                return state.last.clone().unwrap_or(outcome);
            }
            let mut changed: Vec<PathBuf> = now
                .iter()
                .filter(|(path, hash)| state.live.get(*path) != Some(hash))
                .map(|(path, _)| path.clone())
                .chain(
                    state
                        .live
                        .keys()
                        .filter(|path| !now.contains_key(*path))
                        .cloned(),
                )
                .collect();
            changed.sort();
            changed
        };
        if outcome.files_changed.is_empty() && automatic {
            outcome.ok = true;
            let recovered = self.last().is_some_and(|last| !last.ok);
            if recovered {
                // The files are back to what the live generation was built
                // from: the failure shown in the status is over.
                return self.finish(outcome, started, Some(now));
            }
            // Nothing changed (an editor's swap file, a touch): no new
            // generation, and no log line beyond debug.
            tracing::debug!(?trigger, "reload: no integration or contract changed");
            outcome.duration_ms = Some(started.elapsed().as_secs_f64() * 1e3);
            return outcome;
        }
        let Some(generation) = compilation.generation else {
            outcome.errors = compilation
                .diagnostics
                .into_iter()
                .filter(Diagnostic::is_error)
                .collect();
            self.state.lock().expect("reload state").failed = Some(now);
            return self.finish(outcome, started, None);
        };
        // The other databases it names are opened and checked first: one
        // that refuses (a wrong password, a missing variable) keeps the
        // live generation.
        let targets = match self.engine.open_databases(&generation).await {
            Ok(targets) => targets,
            Err(error) => {
                let file = generation
                    .databases
                    .file
                    .clone()
                    .unwrap_or_else(|| std::path::PathBuf::from("databases.yaml"));
                outcome.errors = vec![Diagnostic::error(
                    &file,
                    crate::diagnostics::Position::START,
                    crate::diagnostics::Code::InvalidValue,
                    error.to_string(),
                )];
                self.state.lock().expect("reload state").failed = Some(now);
                return self.finish(outcome, started, None);
            }
        };
        diff(&live, &generation, &mut outcome);
        if let Err(error) = self.engine.swap_generation_with(generation, targets).await {
            // The swap itself happened; only skipping the removed
            // integrations' pending deliveries failed. Workers skip them
            // anyway when they meet them.
            tracing::warn!(%error, "generation swapped, but marking removed integrations' deliveries failed");
        }
        outcome.ok = true;
        outcome.swapped = true;
        outcome.generation = number;
        self.finish(outcome, started, Some(now))
    }

    fn finish(
        &self,
        mut outcome: ReloadOutcome,
        started: Instant,
        live: Option<Fingerprints>,
    ) -> ReloadOutcome {
        let ms = started.elapsed().as_secs_f64() * 1e3;
        outcome.duration_ms = Some(ms);
        crate::telemetry::reload(outcome.ok, outcome.generation);
        for id in self.engine.generation().integration_ids() {
            crate::telemetry::integration_defined(&id);
        }
        if outcome.ok && !outcome.swapped {
            tracing::info!(
                generation = outcome.generation,
                "reload: the files are back to generation {}'s; it stays live",
                outcome.generation
            );
        } else if outcome.ok {
            tracing::info!(
                generation = outcome.generation,
                trigger = ?outcome.trigger,
                files_changed = outcome.files_changed.len(),
                added = ?outcome.added,
                changed = ?outcome.changed,
                removed = ?outcome.removed,
                ms = format!("{ms:.1}"),
                "reload: generation {} is live",
                outcome.generation
            );
        } else {
            let errors: Vec<String> = outcome.errors.iter().map(ToString::to_string).collect();
            tracing::error!(
                generation = outcome.generation,
                trigger = ?outcome.trigger,
                files_changed = outcome.files_changed.len(),
                ms = format!("{ms:.1}"),
                "reload failed, generation {} stays live: {}",
                outcome.generation,
                errors.join("; ")
            );
        }
        let mut state = self.state.lock().expect("reload state");
        if let Some(live) = live {
            state.live = live;
            state.failed = None;
        }
        state.last = Some(outcome.clone());
        drop(state);
        if outcome.swapped {
            self.live.send_replace(outcome.generation);
        }
        for observer in self.observers.lock().expect("reload observers").iter() {
            observer(&outcome);
        }
        outcome
    }

    /// Reloads on file changes (or polls), and on SIGHUP, until `shutdown`.
    pub fn spawn(
        self: &Arc<Self>,
        mode: WatchMode,
        poll: Duration,
        shutdown: CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = vec![tokio::spawn(on_sighup(self.clone(), shutdown.clone()))];
        match mode {
            WatchMode::Events => tasks.push(tokio::spawn(watch_events(self.clone(), shutdown))),
            WatchMode::Poll => tasks.push(tokio::spawn(watch_poll(self.clone(), poll, shutdown))),
            WatchMode::Off => {}
        }
        tasks
    }
}

/// Which integrations a new generation adds, changes and removes.
fn diff(old: &Generation, new: &Generation, outcome: &mut ReloadOutcome) {
    for integration in &new.integrations {
        match old.integration(&integration.id) {
            None => outcome.added.push(integration.id.clone()),
            Some(previous) if previous.fingerprint != integration.fingerprint => {
                outcome.changed.push(integration.id.clone());
            }
            Some(_) => {}
        }
    }
    outcome.removed = old.removed_in(new);
}

/// Editors' scratch files: their events alone never trigger a reload.
fn is_scratch(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.ends_with(".swo")
        || name.ends_with('~')
        || name.starts_with(".#")
        || (name.starts_with('#') && name.ends_with('#'))
        || name == "4913"
}

async fn on_sighup(reloader: Arc<Reloader>, shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP; reload with the API instead");
            return;
        };
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    reloader.reload(Trigger::Signal).await;
                }
                () = shutdown.cancelled() => return,
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (reloader, shutdown);
    }
}

async fn watch_events(reloader: Arc<Reloader>, shutdown: CancellationToken) {
    let (sender, mut changes) = tokio::sync::mpsc::channel::<()>(16);
    let handler = move |result: notify_debouncer_full::DebounceEventResult| match result {
        Ok(events) => {
            // Reading the files (as every reload does) makes access events:
            // only changes count, or a reload would trigger the next.
            let relevant = events.iter().any(|event| {
                !matches!(event.kind, notify::EventKind::Access(_))
                    && event.paths.iter().any(|path| !is_scratch(path))
            });
            if relevant {
                // A full channel already holds a pending reload.
                let _ = sender.try_send(());
            }
        }
        Err(errors) => {
            for error in errors {
                tracing::warn!(%error, "file watcher error");
            }
        }
    };
    let mut debouncer = match notify_debouncer_full::new_debouncer(
        DEBOUNCE,
        Some(DEBOUNCE / 5),
        handler,
    ) {
        Ok(debouncer) => debouncer,
        Err(error) => {
            tracing::error!(%error, "cannot watch the integrations directory; use --watch poll");
            reloader.watching.send_replace(Some(false));
            return;
        }
    };
    let mut roots = vec![reloader.dir.clone()];
    roots.push(
        reloader
            .contracts
            .clone()
            .unwrap_or_else(|| config::default_contracts_dir(&reloader.dir)),
    );
    for root in &roots {
        if root.exists()
            && let Err(error) = debouncer.watch(root, notify::RecursiveMode::Recursive)
        {
            tracing::error!(%error, path = %root.display(), "cannot watch; use --watch poll");
        }
    }
    tracing::info!(dir = %reloader.dir.display(), "watching for changes");
    reloader.watching.send_replace(Some(true));
    loop {
        tokio::select! {
            change = changes.recv() => {
                if change.is_none() {
                    return;
                }
                // Take every change that arrived meanwhile: one reload.
                while changes.try_recv().is_ok() {}
                reloader.reload(Trigger::Watch).await;
            }
            () = shutdown.cancelled() => return,
        }
    }
}

async fn watch_poll(reloader: Arc<Reloader>, every: Duration, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        tokio::select! {
            _ = interval.tick() => {
                reloader.reload(Trigger::Poll).await;
            }
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editor_scratch_files_are_recognised() {
        for scratch in [".a.yaml.swp", "a.yaml~", ".#a.yaml", "#a.yaml#", "4913"] {
            assert!(is_scratch(Path::new(scratch)), "{scratch}");
        }
        for real in [
            "a.yaml",
            "..data",
            "..2026_11_28_10_00_00.123",
            "schema.json",
        ] {
            assert!(!is_scratch(Path::new(real)), "{real}");
        }
    }
}
