//! The running engine: publishing with group commit, routing events to
//! deliveries, workers that apply deliveries exactly once, retries, dead
//! letters and replay, and the live generation.
//!
//! Invariants:
//! - An event is acknowledged only after the transaction that stores it
//!   (and creates its deliveries) has committed.
//! - A delivery's step writes, the events it emits and its new status
//!   commit in one transaction; a crash before the commit leaves the
//!   delivery pending, with nothing applied.
//! - A delivery runs on the generation that was live when its batch
//!   started; a reload never changes a route mid-delivery.

mod publish;
pub mod retry;
mod router;
mod worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::compile::Generation;
use crate::compile::contract::Violation;
use crate::envelope::Envelope;
use crate::store::events::{self, NewDelivery, NewEvent};
use crate::store::types::Time;
use crate::store::{Dialect, Store, StoreError};

/// Tuning knobs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Concurrent delivery workers.
    pub workers: usize,
    /// Deliveries claimed per worker transaction.
    pub batch_size: usize,
    /// Most events committed in one publish transaction.
    pub publish_batch: usize,
    /// Concurrent publish transactions.
    pub publishers: usize,
    /// How often workers and the router look for work without a wake-up.
    pub poll_interval: Duration,
}

impl EngineConfig {
    /// Defaults that suit the database: PostgreSQL takes concurrent
    /// writers, SQLite has one.
    pub fn for_dialect(dialect: Dialect) -> EngineConfig {
        match dialect {
            // Measured on 2 cores (docs/BENCHMARKS.md): four workers of 300
            // deliveries keep PostgreSQL busy without starving publishers.
            Dialect::Postgres => EngineConfig {
                workers: 4,
                batch_size: 300,
                publish_batch: 500,
                publishers: 2,
                poll_interval: Duration::from_millis(500),
            },
            Dialect::Sqlite => EngineConfig {
                workers: 1,
                batch_size: 200,
                publish_batch: 1000,
                publishers: 1,
                poll_interval: Duration::from_millis(500),
            },
        }
    }
}

/// Why a publish was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The envelope or its data is invalid: nothing was stored.
    #[error("the event is invalid")]
    Invalid(Vec<Violation>),
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

/// A wake-up that is never lost: every waiter that has not seen the latest
/// raise returns at once (unlike `Notify::notify_waiters`, which misses a
/// task that is busy when it is called).
pub(crate) struct Signal {
    sender: watch::Sender<u64>,
}

impl Default for Signal {
    fn default() -> Self {
        Signal {
            sender: watch::channel(0).0,
        }
    }
}

impl Signal {
    pub fn raise(&self) {
        self.sender.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn waiter(&self) -> watch::Receiver<u64> {
        self.sender.subscribe()
    }
}

pub(crate) struct Shared {
    pub store: Store,
    pub generation: ArcSwap<Generation>,
    /// Enabled states persisted through the API (absent: enabled).
    pub states: ArcSwap<HashMap<String, bool>>,
    pub config: EngineConfig,
    /// Raised when deliveries may be due.
    pub work: Signal,
    /// Raised when unrouted events may exist.
    pub outbox: Signal,
    pub shutdown: CancellationToken,
}

impl Shared {
    /// Whether an integration takes new deliveries: its YAML says so and
    /// the API has not disabled it.
    pub fn enabled(&self, generation: &Generation, integration: &str) -> bool {
        let yaml = generation
            .integration(integration)
            .map(|i| i.enabled)
            .unwrap_or(false);
        yaml && self.states.load().get(integration).copied().unwrap_or(true)
    }

    /// The deliveries a new event gets: one per route of every enabled
    /// integration that handles it.
    pub fn deliveries_for(&self, generation: &Generation, envelope: &Envelope) -> Vec<NewDelivery> {
        generation
            .routes(&envelope.source, &envelope.event)
            .filter(|(integration, _)| self.enabled(generation, &integration.id))
            .map(|(integration, route)| NewDelivery {
                id: Uuid::now_v7(),
                event_id: envelope.id,
                organization_id: envelope.organization_id,
                integration_id: integration.id.clone(),
                route_event: route.on.clone(),
                route_ordinal: route.ordinal as i32,
                source_product: integration.source.clone(),
                target_product: integration.target.clone(),
            })
            .collect()
    }

    /// Stores events and their deliveries in `tx`; returns, per event,
    /// its stored id and whether it is new.
    pub async fn store_events(
        &self,
        tx: &mut crate::store::DbTx,
        generation: &Generation,
        events: &[NewEvent],
        now: Time,
    ) -> Result<Vec<(Uuid, bool)>, StoreError> {
        let mut stored = events::insert_events(tx, events, now).await?;
        // The same id twice in one batch: only the first is new.
        let mut seen = std::collections::HashSet::new();
        for (id, created) in stored.iter_mut() {
            if *created && !seen.insert(*id) {
                *created = false;
            }
        }
        let deliveries: Vec<NewDelivery> = events
            .iter()
            .zip(&stored)
            .filter(|(_, (_, created))| *created)
            .flat_map(|(event, _)| self.deliveries_for(generation, &event.envelope))
            .collect();
        events::insert_deliveries(tx, &deliveries, now).await?;
        Ok(stored)
    }
}

/// The engine: a handle to the running tasks. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    publisher: mpsc::Sender<publish::Job>,
    tasks: Arc<tokio::sync::Mutex<JoinSet<()>>>,
}

impl Engine {
    /// Starts publishers, workers and the outbox router on `generation`.
    pub async fn start(
        store: Store,
        generation: Generation,
        config: EngineConfig,
    ) -> Result<Engine, StoreError> {
        let states = {
            let mut tx = store.begin_read().await?;
            let states = events::integration_states(&mut tx).await?;
            tx.rollback().await?;
            states
        };
        let shared = Arc::new(Shared {
            store,
            generation: ArcSwap::from_pointee(generation),
            states: ArcSwap::from_pointee(states),
            config: config.clone(),
            work: Signal::default(),
            outbox: Signal::default(),
            shutdown: CancellationToken::new(),
        });
        let (sender, receiver) = mpsc::channel(config.publish_batch * 4);
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        let mut tasks = JoinSet::new();
        for _ in 0..config.publishers.max(1) {
            tasks.spawn(publish::run(shared.clone(), receiver.clone()));
        }
        for index in 0..config.workers.max(1) {
            tasks.spawn(worker::run(shared.clone(), index));
        }
        tasks.spawn(router::run(shared.clone()));
        tasks.spawn(router::refresh_states(shared.clone()));
        if let crate::store::Db::Postgres(pool) = shared.store.db() {
            tasks.spawn(router::listen(shared.clone(), pool.clone()));
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

    /// The live generation.
    pub fn generation(&self) -> Arc<Generation> {
        self.shared.generation.load_full()
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

    /// Publishes one event: checks its contract, stores it with its
    /// deliveries, and returns once that is committed.
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
        let stored = answer
            .await
            .map_err(|_| PublishError::ShuttingDown)?
            .map_err(PublishError::Unavailable)?;
        self.shared.work.raise();
        let created = stored.iter().filter(|(_, created)| *created).count() as u64;
        crate::telemetry::event_published(created);
        crate::telemetry::event_duplicate(stored.len() as u64 - created);
        Ok(stored
            .into_iter()
            .map(|(id, created)| Published { id, created })
            .collect())
    }

    /// Makes `generation` live. Deliveries already running finish on the
    /// generation they started with. Pending deliveries of integrations
    /// that no longer exist are skipped with the reason. Returns the ids of
    /// the removed integrations.
    pub async fn swap_generation(&self, generation: Generation) -> Result<Vec<String>, StoreError> {
        let old = self.shared.generation.swap(Arc::new(generation));
        let new = self.generation();
        self.shared.store.catalog.clear();
        let removed: Vec<String> = old
            .integrations
            .iter()
            .filter(|i| new.integration(&i.id).is_none())
            .map(|i| i.id.clone())
            .collect();
        if !removed.is_empty() {
            let mut tx = self.shared.store.begin().await?;
            for id in &removed {
                let reason = format!(
                    "integration `{id}` was removed from the configuration (generation {})",
                    new.number
                );
                events::skip_pending(&mut tx, id, &reason, Time::now()).await?;
            }
            tx.commit().await?;
        }
        self.shared.work.raise();
        Ok(removed)
    }

    /// Enables or disables every integration from `source` to `target`;
    /// persisted. Returns the ids changed (empty: no such integration).
    pub async fn set_enabled_pair(
        &self,
        source: &str,
        target: &str,
        enabled: bool,
    ) -> Result<Vec<String>, StoreError> {
        let ids: Vec<String> = self
            .generation()
            .integrations
            .iter()
            .filter(|i| i.source == source && i.target == target)
            .map(|i| i.id.clone())
            .collect();
        for id in &ids {
            self.set_enabled(id, enabled).await?;
        }
        Ok(ids)
    }

    /// Enables or disables one integration; persisted across restarts and
    /// reloads.
    pub async fn set_enabled(&self, integration: &str, enabled: bool) -> Result<(), StoreError> {
        let mut tx = self.shared.store.begin().await?;
        events::set_integration_state(&mut tx, integration, enabled, Time::now()).await?;
        tx.commit().await?;
        let mut states = (**self.shared.states.load()).clone();
        states.insert(integration.to_owned(), enabled);
        self.shared.states.store(Arc::new(states));
        Ok(())
    }

    /// Whether an integration takes new deliveries now.
    pub fn is_enabled(&self, integration: &str) -> bool {
        self.shared.enabled(&self.generation(), integration)
    }

    /// The API-persisted state of an integration, if any.
    pub fn persisted_state(&self, integration: &str) -> Option<bool> {
        self.shared.states.load().get(integration).copied()
    }

    /// Requeues one dead delivery (of `organization`, when given). Returns
    /// whether it was dead and is now pending.
    pub async fn replay_delivery(
        &self,
        id: Uuid,
        organization: Option<Uuid>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.shared.store.begin().await?;
        let count = events::replay(&mut tx, Some(id), None, organization, Time::now()).await?;
        tx.commit().await?;
        self.shared.work.raise();
        Ok(count > 0)
    }

    /// Requeues every dead delivery of an integration (of `organization`,
    /// when given). Returns how many.
    pub async fn replay_integration(
        &self,
        integration: &str,
        organization: Option<Uuid>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.shared.store.begin().await?;
        let count =
            events::replay(&mut tx, None, Some(integration), organization, Time::now()).await?;
        tx.commit().await?;
        self.shared.work.raise();
        Ok(count)
    }

    /// Wakes workers and the router (e.g. after writing to the database
    /// from outside the engine).
    pub fn wake(&self) {
        self.shared.work.raise();
        self.shared.outbox.raise();
    }

    /// Stops taking events, lets running batches finish, and waits for
    /// every task to end.
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        self.shared.work.raise();
        self.shared.outbox.raise();
        let mut tasks = self.tasks.lock().await;
        while tasks.join_next().await.is_some() {}
    }
}

impl Engine {
    /// How many integrations of the live generation route `envelope` and
    /// are enabled: how many would get deliveries if it were published
    /// now. The API answers it to producers, so that an event nobody
    /// listens to (a misspelt name) is accepted but not silently.
    pub fn routed(&self, envelope: &Envelope) -> usize {
        let generation = self.generation();
        let mut integrations: Vec<&str> = generation
            .routes(&envelope.source, &envelope.event)
            .filter(|(integration, _)| self.shared.enabled(&generation, &integration.id))
            .map(|(integration, _)| integration.id.as_str())
            .collect();
        integrations.sort_unstable();
        integrations.dedup();
        integrations.len()
    }
}
