//! What processes sharing one database tell each other: LISTEN/NOTIFY
//! wake-ups (new events, new delivery rows, state changes), every second
//! the persisted states and the current definitions (read-only), and every
//! five seconds this process's heartbeat (`integrations.nodes`, shown by
//! the status API: the one write, so the one transaction id, an idle
//! process makes).

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};

use super::Shared;
use crate::store::states;
use crate::store::types::Time;

/// How often states and definitions are re-read.
pub const REFRESH: Duration = Duration::from_secs(1);

/// How often the heartbeat is written: 12 transaction ids a minute per
/// idle process, with three beats inside [`NODE_TIMEOUT`].
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// A process whose heartbeat is older than this is gone.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(15);

pub(crate) async fn refresh(shared: Arc<Shared>) {
    let mut last_beat: Option<std::time::Instant> = None;
    loop {
        if last_beat.is_none_or(|at| at.elapsed() >= HEARTBEAT) {
            beat(&shared).await;
            last_beat = Some(std::time::Instant::now());
        }
        tokio::select! {
            () = tokio::time::sleep(REFRESH) => {}
            () = shared.shutdown.cancelled() => return,
        }
        let before = shared.states.load_full();
        if let Err(error) = shared.refresh_states().await {
            tracing::debug!(%error, "cannot re-read integration states");
        }
        if let Err(error) = shared.refresh_definitions().await {
            tracing::debug!(%error, "cannot re-read integration definitions");
        }
        if *before != **shared.states.load() {
            shared.scheduler.wake_all();
        }
    }
}

async fn beat(shared: &Shared) {
    let generation = shared.generation.load().number as i64;
    let result = async {
        let mut tx = shared.store.begin().await?;
        let now = Time::now();
        states::heartbeat(
            &mut tx,
            shared.node,
            &shared.config.node_name,
            generation,
            shared.config.workers as i32,
            now,
        )
        .await?;
        tx.commit().await
    }
    .await;
    if let Err(error) = result {
        tracing::debug!(%error, "cannot write the heartbeat");
    }
}

/// Removes this process from `integrations.nodes` (and any long gone).
pub(crate) async fn leave(shared: &Shared) {
    let stale =
        Time(chrono::Utc::now() - chrono::Duration::from_std(NODE_TIMEOUT * 4).unwrap_or_default());
    let result = async {
        let mut tx = shared.store.begin().await?;
        states::leave(&mut tx, shared.node, stale).await?;
        tx.commit().await
    }
    .await;
    if let Err(error) = result {
        tracing::debug!(%error, "cannot remove this process from the nodes table");
    }
}

/// Listens for PostgreSQL notifications from the triggers on events,
/// deliveries and integration states, and wakes the workers.
pub(crate) async fn listen(shared: Arc<Shared>, pool: PgPool) {
    loop {
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener
                .listen_all([
                    "busbar_events",
                    "busbar_ticks",
                    "busbar_deliveries",
                    "busbar_integration_state",
                ])
                .await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            listener = listener => match listener {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::debug!(%error, "cannot LISTEN; polling only for now");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(2)) => continue,
                        () = shared.shutdown.cancelled() => return,
                    }
                }
            },
            () = shared.shutdown.cancelled() => return,
        };
        loop {
            tokio::select! {
                notification = listener.recv() => match notification {
                    Ok(notification) => {
                        if notification.channel() == "busbar_integration_state" {
                            let _ = shared.refresh_states().await;
                        }
                        // Events this process appended are ticked and their
                        // lanes woken by its own ticker; another process's,
                        // or a product's outbox rows, need a tick first (the
                        // ticker probes); a tick made elsewhere, or new
                        // delivery rows, wake every lane.
                        let own = shared.store.is_own_backend(notification.process_id());
                        match notification.channel() {
                            "busbar_events" => {
                                if !own {
                                    shared.ticker.probe();
                                }
                            }
                            "busbar_ticks" => {
                                if !own {
                                    shared.scheduler.wake_all();
                                }
                            }
                            _ => shared.scheduler.wake_all(),
                        }
                    }
                    // The connection dropped: reconnect, and look for work
                    // that arrived meanwhile.
                    Err(_) => {
                        shared.scheduler.wake_all();
                        break;
                    }
                },
                () = shared.shutdown.cancelled() => return,
            }
        }
    }
}
