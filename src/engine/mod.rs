//! The running engine: publishing with group commit, lanes that apply each
//! integration's events in order per key, retries, dead letters and
//! replay, integration states, and the live generation. The design is in
//! ARCHITECTURE.md, "Delivery (v2)".
//!
//! Invariants:
//! - An event is acknowledged only after the transaction that stores it
//!   has committed.
//! - A delivery's step writes, its row (if it needs one), the events it
//!   emits and the cursor that passes it commit in one transaction.
//! - Deliveries of one integration with the same order key run one at a
//!   time, in position order, across workers and processes.
//! - A delivery runs on the generation that was live when its batch
//!   started; a reload never changes a route mid-delivery.

mod cluster;
mod health;
pub mod history;
pub(crate) mod lane;
mod outbox;
mod publish;
pub mod rebase;
pub mod redeliver;
pub mod retry;
mod scheduler;
mod ticker;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::compile::{Generation, Integration};
use crate::envelope::{Envelope, Violation};
use crate::store::events::Status;
use crate::store::lanes::{self, ReplayFilter};
use crate::store::log::NewEvent;
use crate::store::log::{self, LaneFilter};
use crate::store::partitionings::{self, Partitioning};
use crate::store::targets::Targets;
use crate::store::ticks::{self, Snapshot};
use crate::store::types::Time;
use crate::store::{Dialect, Store, StoreError, states};

pub use crate::delivery::delivery_id;
pub use crate::store::states::State;
pub use crate::store::views::Backlog;
pub use health::{ACQUIRE_TIMEOUT, Health};
pub(crate) use lane::LaneId;

/// Tuning knobs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Concurrent delivery workers (each works one lane at a time); 0 for
    /// a process that only publishes.
    pub workers: usize,
    /// Deliveries per lane transaction, at most.
    pub batch_size: usize,
    /// Most events committed in one publish transaction.
    pub publish_batch: usize,
    /// Concurrent publish transactions.
    pub publishers: usize,
    /// How often workers look for work without a wake-up.
    pub poll_interval: Duration,
    /// The name this process shows in the status API.
    pub node_name: String,
}

impl EngineConfig {
    /// Defaults that suit the database: PostgreSQL takes concurrent
    /// writers, SQLite has one.
    pub fn for_dialect(dialect: Dialect) -> EngineConfig {
        let node_name = default_node_name();
        match dialect {
            Dialect::Postgres => EngineConfig {
                workers: 4,
                batch_size: 500,
                publish_batch: 1000,
                publishers: 2,
                poll_interval: Duration::from_millis(500),
                node_name,
            },
            Dialect::Sqlite => EngineConfig {
                workers: 1,
                batch_size: 500,
                publish_batch: 1000,
                publishers: 1,
                poll_interval: Duration::from_millis(500),
                node_name,
            },
        }
    }
}

fn default_node_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "busbar".to_owned());
    format!("{host}:{}", std::process::id())
}

/// Why a publish was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The envelope or its data is invalid: nothing was stored.
    #[error("the event is invalid")]
    Invalid(Vec<Violation>),
    /// An event's id (or idempotency key) is already used by an event with
    /// other content: nothing of the request was stored.
    #[error("event {id} was already published with a different {}", differs.join(", "))]
    Reused {
        /// The event's place in the request (0 for a single event).
        index: usize,
        id: Uuid,
        differs: Vec<&'static str>,
    },
    /// The database could not take the event: nothing was stored; the
    /// producer should retry.
    #[error("the event could not be stored: {0}")]
    Unavailable(#[source] StoreError),
    /// The engine is shutting down.
    #[error("busbar is shutting down")]
    ShuttingDown,
}

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The stored event's id (for a duplicate: the original's).
    pub id: Uuid,
    /// False when the event was already stored (same id or idempotency
    /// key): nothing new was created.
    pub created: bool,
}

/// One event to publish.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    pub envelope: Envelope,
    pub idempotency_key: Option<String>,
}

/// An integration's effective state: its YAML (`enabled: false` is
/// disabled) and its persisted state together.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IntegrationStatus {
    pub state: State,
    /// Events this snapshot sees were published while the integration was
    /// disabled (or before): they are skipped.
    pub skip_before: Option<Snapshot>,
}

/// Something that happened, for live views (the console's tail).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Activity {
    Published {
        id: Uuid,
        organization_id: Uuid,
        source: String,
        event: String,
    },
    Delivery {
        id: Uuid,
        event_id: Uuid,
        /// The event's organization (event ids are unique per
        /// organization), and its name.
        organization_id: Uuid,
        event: String,
        integration: String,
        status: Status,
    },
}

/// How one delivery of a lane's batch ended, for [`Shared::report`].
pub(crate) struct Outcome {
    pub id: Uuid,
    pub event_id: Uuid,
    pub organization_id: Uuid,
    pub event: String,
    pub integration: String,
    pub status: Status,
}

pub(crate) struct Shared {
    pub store: Store,
    pub generation: ArcSwap<Generation>,
    /// The other databases of the live generation's `databases.yaml`.
    pub targets: ArcSwap<Targets>,
    /// Persisted states (absent: enabled). Replaced whole, under
    /// `states_lock`, so a refresh never overwrites a newer change.
    pub states: ArcSwap<HashMap<String, states::Persisted>>,
    states_lock: tokio::sync::Mutex<u64>,
    /// The current definition of each integration (fingerprint; `None`:
    /// removed), as the last process to load recorded it.
    pub definitions: ArcSwap<HashMap<String, Option<String>>>,
    pub config: EngineConfig,
    /// Lanes per integration on this database.
    pub lanes: i32,
    pub scheduler: scheduler::Scheduler,
    /// Makes the ticks that let lanes read new events.
    pub ticker: ticker::Ticker,
    pub health: Health,
    pub activity: broadcast::Sender<Activity>,
    pub shutdown: CancellationToken,
    pub node: Uuid,
    /// This installation's identity (`integrations.installation`): part of
    /// the key of its progress rows in other databases.
    pub installation: Uuid,
    /// Workers running (a dead pool makes `/readyz` fail).
    pub workers_alive: AtomicUsize,
    /// Integrations this process has warned about disagreeing on.
    warned: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Integrations whose redelivery this process is writing, with how
    /// many: their lanes wait here meanwhile (`redeliver.rs`).
    redelivering: std::sync::Mutex<HashMap<String, usize>>,
}

impl Shared {
    /// An integration's effective state in `generation`.
    pub fn state_of(
        &self,
        _generation: &Generation,
        integration: &Integration,
    ) -> IntegrationStatus {
        if !integration.enabled {
            return IntegrationStatus {
                state: State::Disabled,
                skip_before: None,
            };
        }
        match self.states.load().get(&integration.id) {
            Some(persisted) => IntegrationStatus {
                state: persisted.state,
                skip_before: persisted.skip_before.clone(),
            },
            None => IntegrationStatus::default(),
        }
    }

    /// Whether this process defines `integration` as the cluster does (the
    /// last process to load recorded its fingerprint): only then does it
    /// work the integration's lanes.
    pub fn defines(&self, integration: &Integration) -> bool {
        match self.definitions.load().get(&integration.id) {
            None => true,
            Some(Some(fingerprint)) if *fingerprint == integration.fingerprint => true,
            Some(current) => {
                let mut warned = self.warned.lock().expect("warned lock");
                if warned.insert(format!("{}/{:?}", integration.id, current)) {
                    tracing::warn!(
                        integration = %integration.id,
                        "another busbar process loaded a different definition of this integration last; \
                         this process leaves its deliveries to the processes that agree"
                    );
                }
                false
            }
        }
    }

    /// Events were appended to the log: wakes the lanes they belong to
    /// (the lane of each event for every integration that routes it,
    /// computed in Rust as the database computes it). A lane the Rust key
    /// does not find (a number the database writes differently) is woken by
    /// the poll tick.
    pub fn wake_for<'e>(&self, events: impl IntoIterator<Item = &'e Envelope>) {
        let generation = self.generation.load();
        let mut lanes = std::collections::HashSet::new();
        for envelope in events {
            for (integration, _) in generation.routes(&envelope.source, &envelope.event) {
                let key = integration.order_by.key_of(envelope);
                lanes.insert(LaneId {
                    integration: Arc::from(integration.id.as_str()),
                    lane: log::lane_of_key(&key, self.lanes),
                });
            }
        }
        // On PostgreSQL the lanes can read the events once a tick sees
        // them: the ticker makes one, then wakes them.
        match self.store.dialect() {
            Dialect::Postgres => self.ticker.committed(lanes),
            Dialect::Sqlite => self.scheduler.wake_lanes(lanes),
        }
    }

    /// Tells live views (the console's tail) about events just stored.
    pub fn announce_published<'e>(&self, events: impl IntoIterator<Item = &'e NewEvent>) {
        if self.activity.receiver_count() == 0 {
            return;
        }
        for event in events {
            let _ = self.activity.send(Activity::Published {
                id: event.envelope.id,
                organization_id: event.envelope.organization_id,
                source: event.envelope.source.clone(),
                event: event.envelope.event.clone(),
            });
        }
    }

    /// Tells live views what a lane's batch did.
    pub fn report(&self, outcomes: &[Outcome]) {
        if self.activity.receiver_count() == 0 {
            return;
        }
        for outcome in outcomes {
            let _ = self.activity.send(Activity::Delivery {
                id: outcome.id,
                event_id: outcome.event_id,
                organization_id: outcome.organization_id,
                event: outcome.event.clone(),
                integration: outcome.integration.clone(),
                status: outcome.status,
            });
        }
    }

    /// The lane filter of an integration.
    pub fn lane_filter<'i>(&self, integration: &'i Integration, lane: i32) -> LaneFilter<'i> {
        let mut events: Vec<String> = integration.routes.iter().map(|r| r.on.clone()).collect();
        events.sort();
        events.dedup();
        LaneFilter {
            source: &integration.source,
            events,
            order_by: &integration.order_by,
            lane,
            lanes: self.lanes,
        }
    }

    /// Re-reads persisted states; `seen` is the change counter when the
    /// read started, so a change made meanwhile is not overwritten.
    async fn refresh_states(&self) -> Result<(), StoreError> {
        let seen = *self.states_lock.lock().await;
        let mut tx = self.store.begin_read().await?;
        let persisted = states::load(&mut tx).await?;
        tx.rollback().await?;
        let counter = self.states_lock.lock().await;
        if *counter == seen {
            self.states.store(Arc::new(persisted));
        }
        Ok(())
    }

    async fn refresh_definitions(&self) -> Result<(), StoreError> {
        let mut tx = self.store.begin_read().await?;
        let definitions = states::definitions(&mut tx).await?;
        tx.rollback().await?;
        self.definitions.store(Arc::new(definitions));
        Ok(())
    }
}

/// The engine: a handle to the running tasks. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    publisher: mpsc::Sender<publish::Job>,
    tasks: Arc<tokio::sync::Mutex<JoinSet<()>>>,
}

/// A variable of the process's environment (the URLs of databases.yaml).
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Engine {
    /// Registers `generation` as this cluster's definition, makes lanes for
    /// its integrations, and starts publishers, workers and the cluster
    /// tasks.
    pub async fn start(
        store: Store,
        generation: Generation,
        config: EngineConfig,
    ) -> Result<Engine, StoreError> {
        let lanes = log::lanes_for(store.dialect());
        // Positions of another cluster (a restore, a move) would pass over
        // events: refuse, naming `busbar rebase`.
        {
            let mut tx = store.begin().await?;
            ticks::check_cluster(&mut tx).await?;
            tx.commit().await?;
        }
        let (persisted, installation) = {
            let mut tx = store.begin_read().await?;
            let persisted = states::load(&mut tx).await?;
            let installation = crate::store::targets::installation(&mut tx).await?;
            tx.rollback().await?;
            (persisted, installation)
        };
        let targets = Targets::open(&Targets::default(), &generation.databases, env_var).await?;
        let node = Uuid::now_v7();
        let (activity, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            store,
            targets: ArcSwap::from_pointee(targets),
            generation: ArcSwap::from_pointee(generation),
            states: ArcSwap::from_pointee(persisted),
            states_lock: tokio::sync::Mutex::new(0),
            definitions: ArcSwap::from_pointee(HashMap::new()),
            config: config.clone(),
            lanes,
            scheduler: scheduler::Scheduler::default(),
            ticker: ticker::Ticker::default(),
            health: Health::default(),
            activity,
            shutdown: CancellationToken::new(),
            node,
            installation,
            workers_alive: AtomicUsize::new(0),
            warned: Default::default(),
            redelivering: Default::default(),
        });
        let generation = shared.generation.load_full();
        register(&shared, &generation, &[]).await?;
        shared.refresh_definitions().await?;
        shared.scheduler.set_lanes(lane_ids(&generation, lanes));
        let (sender, receiver) = mpsc::channel(config.publish_batch * 4);
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        let mut tasks = JoinSet::new();
        for _ in 0..config.publishers.max(1) {
            tasks.spawn(publish::run(shared.clone(), receiver.clone()));
        }
        // No workers: a process that only publishes (the others deliver).
        for index in 0..config.workers {
            tasks.spawn(scheduler::worker(shared.clone(), index));
        }
        tasks.spawn(scheduler::poll(shared.clone()));
        tasks.spawn(ticker::run(shared.clone()));
        tasks.spawn(outbox::run(shared.clone()));
        tasks.spawn(health::probe(shared.clone()));
        tasks.spawn(cluster::refresh(shared.clone()));
        if let crate::store::Db::Postgres(pool) = shared.store.db() {
            tasks.spawn(cluster::listen(shared.clone(), pool.clone()));
        }
        Ok(Engine {
            shared,
            publisher: sender,
            tasks: Arc::new(tokio::sync::Mutex::new(tasks)),
        })
    }

    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// The other databases (databases.yaml) and their health, by name.
    pub fn databases(&self) -> Vec<crate::store::targets::DatabaseStatus> {
        let mut out: Vec<_> = self
            .shared
            .targets
            .load()
            .iter()
            .map(|t| t.status())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The live generation.
    pub fn generation(&self) -> Arc<Generation> {
        self.shared.generation.load_full()
    }

    /// How many lanes each integration has on this database.
    pub fn lanes(&self) -> i32 {
        self.shared.lanes
    }

    /// This process's id in `integrations.nodes`.
    pub fn node(&self) -> Uuid {
        self.shared.node
    }

    /// The database's health as the publish path sees it.
    pub fn health(&self) -> &Health {
        &self.shared.health
    }

    /// How many workers are running (all of them, unless one died).
    pub fn workers_alive(&self) -> (usize, usize) {
        (
            self.shared.workers_alive.load(Ordering::Relaxed),
            self.shared.config.workers,
        )
    }

    /// A live feed of published events and delivery outcomes.
    pub fn subscribe(&self) -> broadcast::Receiver<Activity> {
        self.shared.activity.subscribe()
    }

    /// Validates an event envelope sent as JSON and publishes it.
    pub async fn publish_json(
        &self,
        event: &Value,
        idempotency_key: Option<String>,
    ) -> Result<Published, PublishError> {
        let envelope = Envelope::from_json(event).map_err(PublishError::Invalid)?;
        self.publish(PublishRequest {
            envelope,
            idempotency_key,
        })
        .await
    }

    /// Publishes one event: checks its contract, stores it, and returns
    /// once that is committed.
    pub async fn publish(&self, request: PublishRequest) -> Result<Published, PublishError> {
        let mut results = self.publish_batch(vec![request]).await?;
        Ok(results.remove(0))
    }

    /// Publishes several events in one commit, all or none.
    pub async fn publish_batch(
        &self,
        requests: Vec<PublishRequest>,
    ) -> Result<Vec<Published>, PublishError> {
        let generation = self.generation();
        let mut violations = Vec::new();
        for (i, request) in requests.iter().enumerate() {
            let envelope = &request.envelope;
            if let Some(contract) = generation.contracts.get(&envelope.source, &envelope.event) {
                for mut violation in contract.violations(&envelope.data) {
                    if requests.len() > 1 {
                        violation.pointer = format!("/events/{i}{}", violation.pointer);
                    }
                    violations.push(violation);
                }
            }
        }
        if !violations.is_empty() {
            return Err(PublishError::Invalid(violations));
        }
        if self.shared.shutdown.is_cancelled() {
            return Err(PublishError::ShuttingDown);
        }
        if let Some(error) = self.shared.health.refuse() {
            return Err(PublishError::Unavailable(error));
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = publish::Job {
            events: requests
                .into_iter()
                .map(|r| NewEvent {
                    envelope: r.envelope,
                    idempotency_key: r.idempotency_key,
                    parent_id: None,
                })
                .collect(),
            reply,
        };
        self.publisher
            .send(job)
            .await
            .map_err(|_| PublishError::ShuttingDown)?;
        let stored = answer.await.map_err(|_| PublishError::ShuttingDown)??;
        let created = stored.iter().filter(|p| p.created).count() as u64;
        crate::telemetry::event_published(created);
        crate::telemetry::event_duplicate(stored.len() as u64 - created);
        Ok(stored)
    }

    /// Makes `generation` live. Deliveries already running finish on the
    /// generation they started with. Integrations this process had and the
    /// new generation lacks are removed: their lanes go and their open
    /// rows are skipped with the reason. Returns the ids removed.
    pub async fn swap_generation(&self, generation: Generation) -> Result<Vec<String>, StoreError> {
        let targets = self.open_databases(&generation).await?;
        self.swap_generation_with(generation, targets).await
    }

    /// Opens and checks the other databases `generation` names (keeping
    /// the pools of those whose URL did not change), before it goes live:
    /// an error here leaves the live generation as it is.
    pub async fn open_databases(&self, generation: &Generation) -> Result<Targets, StoreError> {
        Targets::open(&self.shared.targets.load(), &generation.databases, env_var).await
    }

    /// Makes `generation` live with the databases opened for it.
    pub async fn swap_generation_with(
        &self,
        generation: Generation,
        targets: Targets,
    ) -> Result<Vec<String>, StoreError> {
        let shared = self.shared.clone();
        // Not cancellable: a reload started by a request that times out
        // still finishes.
        tokio::spawn(async move {
            let old_targets = shared.targets.swap(Arc::new(targets));
            let old = shared.generation.swap(Arc::new(generation));
            let new = shared.generation.load_full();
            shared.store.catalog.clear();
            let targets = shared.targets.load_full();
            for target in targets.iter() {
                target.clear_catalog();
            }
            old_targets.close_unused(&targets).await;
            let removed = old.removed_in(&new);
            register(&shared, &new, &removed).await?;
            shared.refresh_definitions().await?;
            shared.scheduler.set_lanes(lane_ids(&new, shared.lanes));
            shared.scheduler.wake_all();
            Ok(removed)
        })
        .await
        .map_err(|e| StoreError::Invalid(format!("internal error: reload task failed: {e}")))?
    }

    /// Sets the state of every integration from `source` to `target`;
    /// persisted. Returns the ids changed (empty: no such integration).
    pub async fn set_state_pair(
        &self,
        source: &str,
        target: &str,
        state: State,
    ) -> Result<Vec<String>, StoreError> {
        let ids: Vec<String> = self
            .generation()
            .integrations
            .iter()
            .filter(|i| i.source == source && i.target == target)
            .map(|i| i.id.clone())
            .collect();
        for id in &ids {
            self.set_state(id, state).await?;
        }
        Ok(ids)
    }

    /// Enables or disables every integration from `source` to `target`.
    pub async fn set_enabled_pair(
        &self,
        source: &str,
        target: &str,
        enabled: bool,
    ) -> Result<Vec<String>, StoreError> {
        let state = if enabled {
            State::Enabled
        } else {
            State::Disabled
        };
        self.set_state_pair(source, target, state).await
    }

    /// Enables or disables one integration.
    pub async fn set_enabled(&self, integration: &str, enabled: bool) -> Result<(), StoreError> {
        let state = if enabled {
            State::Enabled
        } else {
            State::Disabled
        };
        self.set_state(integration, state).await
    }

    /// Sets one integration's state; persisted across restarts and
    /// reloads, and seen by every process sharing the database within a
    /// second. Disabling skips its pending and retrying deliveries at once;
    /// enabling after a disable skips the events published meanwhile.
    pub async fn set_state(&self, integration: &str, state: State) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        let integration = integration.to_owned();
        tokio::spawn(async move {
            let mut counter = shared.states_lock.lock().await;
            let mut tx = shared.store.begin().await?;
            let now = Time::now();
            let previous = states::load_one(&mut tx, &integration).await?;
            let skip_before = match (previous.as_ref().map(|p| p.state), state) {
                // Everything published until now, committed or not, was
                // published while disabled.
                (Some(State::Disabled), State::Enabled | State::Paused) => {
                    Some(ticks::current(&mut tx).await?)
                }
                (_, State::Disabled) => None,
                _ => previous.and_then(|p| p.skip_before),
            };
            states::save(&mut tx, &integration, state, skip_before.as_ref(), now).await?;
            if state == State::Disabled {
                let reason = format!("integration `{integration}` was disabled");
                lanes::skip_open(&mut tx, &integration, &reason, now).await?;
            }
            tx.commit().await?;
            let mut map = (**shared.states.load()).clone();
            map.insert(
                integration.clone(),
                states::Persisted { state, skip_before },
            );
            shared.states.store(Arc::new(map));
            *counter += 1;
            drop(counter);
            shared.scheduler.wake_integration(&integration);
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Invalid(format!("internal error: state task failed: {e}")))?
    }

    /// Whether an integration takes new deliveries now (enabled, not
    /// paused or disabled).
    pub fn is_enabled(&self, integration: &str) -> bool {
        self.status(integration)
            .is_some_and(|s| s.state == State::Enabled)
    }

    /// An integration's effective state.
    pub fn status(&self, integration: &str) -> Option<IntegrationStatus> {
        let generation = self.generation();
        let integration = generation.integration(integration)?;
        Some(self.shared.state_of(&generation, integration))
    }

    /// The API-persisted state of an integration, if any.
    pub fn persisted_state(&self, integration: &str) -> Option<State> {
        self.shared.states.load().get(integration).map(|p| p.state)
    }

    /// Requeues one dead delivery (of `organization`, when given). Returns
    /// whether it was dead and is now pending.
    pub async fn replay_delivery(
        &self,
        id: Uuid,
        organization: Option<Uuid>,
    ) -> Result<bool, StoreError> {
        let filter = ReplayFilter {
            delivery: Some(id),
            organization,
            ..ReplayFilter::default()
        };
        Ok(self.replay(filter).await? > 0)
    }

    /// Requeues every dead delivery of an integration (of `organization`,
    /// when given). Returns how many.
    pub async fn replay_integration(
        &self,
        integration: &str,
        organization: Option<Uuid>,
    ) -> Result<u64, StoreError> {
        self.replay(ReplayFilter {
            integration: Some(integration.to_owned()),
            organization,
            ..ReplayFilter::default()
        })
        .await
    }

    /// Requeues the dead deliveries `filter` selects. Returns how many.
    pub async fn replay(&self, filter: ReplayFilter) -> Result<u64, StoreError> {
        self.resolve_dead(filter, None).await
    }

    /// Gives up on the dead deliveries `filter` selects: they become
    /// `skipped`, with `reason` and `by` (who asked) recorded beside the
    /// failure. A key that `on_dead: block` held goes on. Returns how many.
    pub async fn skip(
        &self,
        filter: ReplayFilter,
        reason: &str,
        by: &str,
    ) -> Result<u64, StoreError> {
        let skip = (reason.trim().to_owned(), by.to_owned());
        self.resolve_dead(filter, Some(skip)).await
    }

    /// Replays (`skip` None) or skips dead deliveries, in a task of its own
    /// so that a caller that goes away does not cut it short, and wakes
    /// their lanes.
    async fn resolve_dead(
        &self,
        filter: ReplayFilter,
        skip: Option<(String, String)>,
    ) -> Result<u64, StoreError> {
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let resolution = match &skip {
                None => lanes::Resolution::Replay,
                Some((reason, by)) => lanes::Resolution::Skip { reason, by },
            };
            let mut tx = shared.store.begin().await?;
            let touched = lanes::resolve_dead(&mut tx, &filter, resolution, Time::now()).await?;
            tx.commit().await?;
            for (integration, _) in &touched {
                shared.scheduler.wake_integration(integration);
            }
            Ok(touched.len() as u64)
        })
        .await
        .map_err(|e| StoreError::Invalid(format!("internal error: replay task failed: {e}")))?
    }

    /// Work not done yet: events the lanes have not passed (counting at
    /// most `cap` per lane) and deliveries pending or retrying.
    pub async fn backlog(&self, cap: i64) -> Result<Backlog, StoreError> {
        crate::store::views::backlog(&self.shared.store, &self.generation(), cap).await
    }

    /// Wakes the workers (e.g. after writing to the database from outside
    /// the engine), and has the ticker look for events no tick sees yet.
    pub fn wake(&self) {
        self.shared.ticker.probe();
        self.shared.scheduler.wake_all();
    }

    /// Stops taking events, lets running batches finish, and waits for
    /// every task to end.
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        self.shared.scheduler.wake_all();
        let mut tasks = self.tasks.lock().await;
        while tasks.join_next().await.is_some() {}
        cluster::leave(&self.shared).await;
    }
}

impl Engine {
    /// How many integrations of the live generation route `envelope` and
    /// are not disabled (a paused one counts: its events wait): how many would get deliveries if it were published
    /// now. The API answers it to producers, so that an event nobody
    /// listens to (a misspelt name) is accepted but not silently.
    pub fn routed(&self, envelope: &Envelope) -> usize {
        let generation = self.generation();
        let mut integrations: Vec<&str> = generation
            .routes(&envelope.source, &envelope.event)
            .filter(|(integration, _)| {
                self.shared.state_of(&generation, integration).state != State::Disabled
            })
            .map(|(integration, _)| integration.id.as_str())
            .collect();
        integrations.sort_unstable();
        integrations.dedup();
        integrations.len()
    }
}

/// Every lane of a generation.
fn lane_ids(generation: &Generation, lanes: i32) -> Vec<LaneId> {
    generation
        .integrations
        .iter()
        .flat_map(|integration| {
            let id: Arc<str> = Arc::from(integration.id.as_str());
            (0..lanes).map(move |lane| LaneId {
                integration: id.clone(),
                lane,
            })
        })
        .collect()
}

/// Records `generation` as the cluster's definition of its integrations
/// (and `removed` as removed: their lanes go and their open rows are
/// skipped), and makes lanes for integrations that have none: an
/// integration added to a running busbar gets the events published after
/// it went live; the integrations of busbar's first start on a database get
/// every event already in its log.
async fn register(
    shared: &Shared,
    generation: &Generation,
    removed: &[String],
) -> Result<(), StoreError> {
    let mut tx = shared.store.begin().await?;
    let now = Time::now();
    // New lanes start above every event published until now, except on
    // the first start of busbar on this database: its integrations then
    // take the whole log (outbox rows written before busbar first ran).
    let first_start = states::definitions(&mut tx).await?.is_empty();
    let start = if first_start {
        ticks::genesis(tx.dialect())
    } else {
        ticks::latest(&mut tx).await?
    };
    let existing = lanes::existing(&mut tx).await?;
    for integration in &generation.integrations {
        states::define(
            &mut tx,
            &integration.id,
            Some(&integration.fingerprint),
            &shared.config.node_name,
            now,
        )
        .await?;
        if existing.get(&integration.id).copied().unwrap_or(0) < shared.lanes {
            lanes::ensure(&mut tx, &integration.id, shared.lanes, &start).await?;
        }
        partition(&mut tx, integration, shared.lanes, &start).await?;
    }
    for id in removed {
        states::define(&mut tx, id, None, &shared.config.node_name, now).await?;
        let reason = format!(
            "integration `{id}` was removed from the configuration (generation {})",
            generation.number
        );
        lanes::skip_open(&mut tx, id, &reason, now).await?;
        lanes::remove(&mut tx, id).await?;
        partitionings::remove(&mut tx, id).await?;
    }
    tx.commit().await
}

/// Records how an integration's lanes partition its events: version 0 for
/// a new integration; a new version, applying after the newest tick, when
/// its order key or lane count changed (ARCHITECTURE.md, "Versioned
/// partitioning"). The lanes are taken meanwhile, so none has read past
/// that tick with the old key.
async fn partition(
    tx: &mut crate::store::DbTx,
    integration: &Integration,
    lane_count: i32,
    start: &ticks::Tick,
) -> Result<(), StoreError> {
    let versions = partitionings::of(tx, &integration.id).await?;
    let version = match versions.last() {
        None => Partitioning {
            version: 0,
            order_by: integration.order_by.clone(),
            lanes: lane_count,
            from: start.clone(),
        },
        Some(last) if last.order_by == integration.order_by && last.lanes == lane_count => {
            return Ok(());
        }
        Some(last) => {
            lanes::take_all(tx, &integration.id, lane_count).await?;
            let from = ticks::latest(tx).await?;
            tracing::info!(
                integration = %integration.id,
                from = %last.order_by.describe(),
                to = %integration.order_by.describe(),
                tick = from.id,
                "order_by changed: the lanes read the old partitioning up to this tick, then switch together"
            );
            Partitioning {
                version: last.version + 1,
                order_by: integration.order_by.clone(),
                lanes: lane_count,
                from,
            }
        }
    };
    partitionings::record(tx, &integration.id, &version).await
}
