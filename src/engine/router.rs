//! The outbox router: events that products inserted into
//! `integrations.events` themselves (with `processed_at` NULL) get their
//! deliveries here. On PostgreSQL, LISTEN/NOTIFY wakes it (and the workers)
//! when any process writes; a poll covers missed notifications.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};

use super::Shared;
use crate::store::StoreError;
use crate::store::events::{self, NewDelivery};
use crate::store::types::Time;

/// Events routed per transaction.
const ROUTE_BATCH: i64 = 500;

pub(crate) async fn run(shared: Arc<Shared>) {
    let mut wake = shared.outbox.waiter();
    loop {
        if shared.shutdown.is_cancelled() {
            return;
        }
        wake.borrow_and_update();
        match route_batch(&shared).await {
            Ok(count) if count as i64 >= ROUTE_BATCH => continue,
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "routing outbox events failed; will retry"),
        }
        tokio::select! {
            _ = wake.changed() => {}
            () = tokio::time::sleep(shared.config.poll_interval) => {}
            () = shared.shutdown.cancelled() => return,
        }
    }
}

/// Routes one batch of unrouted events; returns how many.
pub(crate) async fn route_batch(shared: &Shared) -> Result<usize, StoreError> {
    let generation = shared.generation.load_full();
    let mut tx = shared.store.begin().await?;
    let unrouted = events::claim_unrouted(&mut tx, ROUTE_BATCH).await?;
    if unrouted.is_empty() {
        tx.rollback().await?;
        return Ok(0);
    }
    let now = Time::now();
    let deliveries: Vec<NewDelivery> = unrouted
        .iter()
        .flat_map(|event| shared.deliveries_for(&generation, &event.envelope))
        .collect();
    events::insert_deliveries(&mut tx, &deliveries, now).await?;
    let ids: Vec<_> = unrouted.iter().map(|e| e.envelope.id).collect();
    events::mark_routed(&mut tx, &ids, now).await?;
    tx.commit().await?;
    if !deliveries.is_empty() {
        shared.work.raise();
    }
    tracing::debug!(
        events = ids.len(),
        deliveries = deliveries.len(),
        "routed outbox events"
    );
    Ok(ids.len())
}

/// Re-reads the persisted enabled states now and then, so a change made
/// through another busbar process takes effect here too.
pub(crate) async fn refresh_states(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
            () = shared.shutdown.cancelled() => return,
        }
        let states = async {
            let mut tx = shared.store.begin_read().await?;
            let states = events::integration_states(&mut tx).await?;
            tx.rollback().await?;
            Ok::<_, StoreError>(states)
        }
        .await;
        if let Ok(states) = states {
            shared.states.store(Arc::new(states));
        }
    }
}

/// Listens for PostgreSQL notifications from the triggers on events and
/// deliveries, and wakes the router and the workers.
pub(crate) async fn listen(shared: Arc<Shared>, pool: PgPool) {
    loop {
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener
                .listen_all(["busbar_events", "busbar_deliveries"])
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
                        if notification.channel() == "busbar_events" {
                            shared.outbox.raise();
                        } else {
                            shared.work.raise();
                        }
                    }
                    // The connection dropped: reconnect, and look for work
                    // that arrived meanwhile.
                    Err(_) => {
                        shared.outbox.raise();
                        shared.work.raise();
                        break;
                    }
                },
                () = shared.shutdown.cancelled() => return,
            }
        }
    }
}
