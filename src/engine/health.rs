//! The publish path's view of the database: a breaker that answers "retry"
//! at once while the database is unreachable, instead of letting every
//! request wait for a connection that will not come.
//!
//! Closed (healthy): every publish goes to the database. A failure that
//! says the database is unreachable (a lost or refused connection, a pool
//! timeout, the server shutting down) opens it. Open: every publish is
//! refused without touching the database, and [`probe`], the engine's own
//! task, tries the database every second the way a publish would; the
//! first try that gets a transaction closes it.
//!
//! Only [`probe`] closes the breaker. Publishes are never the probe: if
//! they were, recovery would depend on traffic (none comes to a process
//! that `/readyz` has taken out of rotation), and a publish refused again
//! on its way to the database (the publisher re-checks the breaker for
//! jobs queued before it opened) would leave it open for good.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Shared;
use crate::store::{DbTx, Store, StoreError};

/// How often, while open, the database is tried.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// How long the publish path waits for a database connection before it
/// gives up and answers "retry".
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(900);

#[derive(Debug, Default)]
pub struct Health {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Since when the database has been unreachable, and why.
    down: Option<(Instant, String)>,
}

impl Health {
    /// `Some(error)` when a publish should be refused now without trying.
    pub fn refuse(&self) -> Option<StoreError> {
        let state = self.state.lock().expect("health lock");
        let (_, reason) = state.down.as_ref()?;
        Some(StoreError::Unreachable(reason.clone()))
    }

    /// Records a database failure on the publish path.
    pub fn failed(&self, error: &StoreError) {
        if !error.is_unreachable() {
            return;
        }
        let mut state = self.state.lock().expect("health lock");
        if state.down.is_none() {
            tracing::warn!(%error, "the database is unreachable; publishes are answered 503 until it is back");
            state.down = Some((Instant::now(), error.to_string()));
        }
    }

    /// Records a database success on the publish path.
    pub fn succeeded(&self) {
        let mut state = self.state.lock().expect("health lock");
        if let Some((since, _)) = state.down.take() {
            tracing::info!(down_for = ?since.elapsed(), "the database is reachable again; publishes are accepted");
        }
    }

    /// Whether the breaker is open.
    pub fn is_down(&self) -> bool {
        self.state.lock().expect("health lock").down.is_some()
    }

    /// While the breaker is open: for how long, and the failure that
    /// opened it (for `/readyz`).
    pub fn down(&self) -> Option<(Duration, String)> {
        let state = self.state.lock().expect("health lock");
        let (since, reason) = state.down.as_ref()?;
        Some((since.elapsed(), reason.clone()))
    }
}

/// A write transaction as the publish path gets one: within
/// [`ACQUIRE_TIMEOUT`], or a pool timeout.
pub(crate) async fn begin(store: &Store) -> Result<DbTx, StoreError> {
    match tokio::time::timeout(ACQUIRE_TIMEOUT, store.begin()).await {
        Ok(tx) => tx,
        Err(_) => Err(StoreError::Sqlx(sqlx::Error::PoolTimedOut)),
    }
}

/// While the breaker is open, tries every [`PROBE_INTERVAL`] to get a
/// transaction as a publish would ([`begin`]), and closes the breaker when
/// one comes. Runs for the engine's life; costs nothing while closed.
pub(crate) async fn probe(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
            () = shared.shutdown.cancelled() => return,
        }
        if !shared.health.is_down() {
            continue;
        }
        let tried = async {
            let tx = begin(&shared.store).await?;
            tx.rollback().await
        }
        .await;
        match tried {
            Ok(()) => shared.health.succeeded(),
            Err(error) => {
                tracing::debug!(%error, "the database is still out of reach for publishing")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable() -> StoreError {
        StoreError::Unreachable("connection refused".to_owned())
    }

    #[test]
    fn an_open_breaker_refuses_every_publish_until_a_success_closes_it() {
        let health = Health::default();
        assert!(health.refuse().is_none(), "closed: everything goes through");
        health.failed(&StoreError::Invalid("a constraint".to_owned()));
        assert!(!health.is_down(), "only unreachable opens it");
        health.failed(&unreachable());
        // Open: no publish is let through, however long it stays open
        // (the probe task tries the database instead).
        for _ in 0..3 {
            assert!(health.refuse().is_some(), "open: refused without trying");
        }
        assert!(
            health
                .down()
                .is_some_and(|(_, reason)| reason.contains("refused"))
        );
        health.succeeded();
        assert!(!health.is_down());
        assert!(health.refuse().is_none());
        assert!(health.down().is_none());
    }
}
