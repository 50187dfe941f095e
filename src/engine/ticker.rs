//! The ticker: makes the ticks that let lanes read new events
//! (ARCHITECTURE.md, "Ticks"; `store::ticks` decides visibility).
//!
//! A tick is made right after this process commits events (a publish, a
//! lane that emitted) and then wakes the lanes those events belong to; and,
//! at every poll or when another process or a product announces a commit
//! (`NOTIFY busbar_events`), only when a read-only probe finds events that
//! the newest tick does not see. So an idle server makes no tick and
//! assigns no transaction id. On SQLite there is nothing to make: a lane
//! reads up to the highest `seq` committed, and lanes are woken at once.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use super::Shared;
use super::lane::LaneId;
use crate::store::ticks;
use crate::store::{Dialect, StoreError};

/// Every how many ticks the old ones are pruned.
const PRUNE_EVERY: i64 = 100;

/// The shortest time between two ticks of this process. Under load a tick
/// after every publish commit is a transaction for every one or two
/// publishes (6,663 ticks for 58,768 events in 15 s at 16 connections);
/// spaced, the commits of those few milliseconds share one tick. An idle
/// server's first tick is not delayed.
const MIN_SPACING: Duration = Duration::from_millis(5);

/// What the ticker is asked for.
#[derive(Default)]
pub(crate) struct Ticker {
    wake: Notify,
    /// This process committed events: tick without probing.
    forced: AtomicBool,
    /// Lanes to wake once a tick sees this process's committed events.
    waiting: std::sync::Mutex<HashSet<LaneId>>,
}

impl Ticker {
    /// This process committed events for `lanes`: tick, then wake them.
    pub fn committed(&self, lanes: impl IntoIterator<Item = LaneId>) {
        self.waiting.lock().expect("ticker lock").extend(lanes);
        self.forced.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Someone else may have committed events: probe, and tick if so.
    pub fn probe(&self) {
        self.wake.notify_one();
    }
}

/// The ticker's task (PostgreSQL).
pub(crate) async fn run(shared: Arc<Shared>) {
    if shared.store.dialect() != Dialect::Postgres {
        return;
    }
    let mut backoff = Duration::from_millis(50);
    let mut last_tick: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            () = shared.ticker.wake.notified() => {}
            () = tokio::time::sleep(shared.config.poll_interval) => {}
            () = shared.shutdown.cancelled() => return,
        }
        if let Some(wait) = last_tick.and_then(|at| MIN_SPACING.checked_sub(at.elapsed())) {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shared.shutdown.cancelled() => return,
            }
        }
        let forced = shared.ticker.forced.swap(false, Ordering::AcqRel);
        // Taken before the tick: events committed after this are either
        // seen by it or announced again.
        let lanes: Vec<LaneId> =
            std::mem::take(&mut *shared.ticker.waiting.lock().expect("ticker lock"))
                .into_iter()
                .collect();
        match tick(&shared, forced).await {
            Ok(made) => {
                if made {
                    last_tick = Some(std::time::Instant::now());
                }
                backoff = Duration::from_millis(50);
                shared.scheduler.wake_lanes(lanes);
                if made && !forced {
                    // Events of another process or a product: any lane.
                    shared.scheduler.wake_all();
                }
            }
            Err(error) => {
                tracing::debug!(%error, "cannot make a tick; trying again");
                // Put the work back and try again after a pause.
                shared
                    .ticker
                    .waiting
                    .lock()
                    .expect("ticker lock")
                    .extend(lanes);
                if forced {
                    shared.ticker.forced.store(true, Ordering::Release);
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shared.shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                shared.ticker.wake.notify_one();
            }
        }
    }
}

/// Makes a tick when `forced` or when events exist that the newest tick
/// does not see; whether one was made.
async fn tick(shared: &Shared, forced: bool) -> Result<bool, StoreError> {
    let mut tx = shared.store.begin().await?;
    if !forced {
        let mut sources: Vec<String> = shared
            .generation
            .load()
            .integrations
            .iter()
            .map(|i| i.source.clone())
            .collect();
        sources.sort();
        sources.dedup();
        if !ticks::unseen_events(&mut tx, &sources).await? {
            tx.rollback().await?;
            return Ok(false);
        }
    }
    let tick = ticks::make(&mut tx).await?;
    if tick.id % PRUNE_EVERY == 0 {
        ticks::prune(&mut tx, tick.id).await?;
    }
    // A lane's cursor that depends on this tick is written later in the
    // WAL, so a crash cannot keep the cursor and lose the tick.
    tx.run("SET LOCAL synchronous_commit = off").await?;
    tx.commit().await?;
    Ok(true)
}
