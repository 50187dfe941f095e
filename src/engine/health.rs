//! The publish path's view of the database: a breaker that answers "retry"
//! at once while the database is unreachable, instead of letting every
//! request wait for a connection that will not come.
//!
//! Closed (healthy): every publish goes to the database. A failure that
//! says the database is unreachable (a lost or refused connection, a pool
//! timeout, the server shutting down) opens it. Open: publishes are refused
//! without touching the database, except one probe per second that goes
//! through; a probe that succeeds closes it again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::StoreError;

/// How often, while open, one publish is let through as a probe.
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
    last_probe: Option<Instant>,
}

impl Health {
    /// `Some(error)` when a publish should be refused now without trying.
    pub fn refuse(&self) -> Option<StoreError> {
        let mut state = self.state.lock().expect("health lock");
        let (_, reason) = state.down.as_ref()?;
        let reason = reason.clone();
        if state
            .last_probe
            .is_none_or(|probe| probe.elapsed() >= PROBE_INTERVAL)
        {
            // This one is the probe.
            state.last_probe = Some(Instant::now());
            return None;
        }
        Some(StoreError::Unreachable(reason))
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
        // The next probe is a full interval after this failure ended, not
        // after it began: a probe takes up to a second and a half, and the
        // requests that queued behind it must be refused at once, not be
        // made the next probe.
        state.last_probe = Some(Instant::now());
    }

    /// Records a database success on the publish path.
    pub fn succeeded(&self) {
        let mut state = self.state.lock().expect("health lock");
        if let Some((since, _)) = state.down.take() {
            tracing::info!(down_for = ?since.elapsed(), "the database is reachable again");
        }
    }

    /// Whether the breaker is open.
    pub fn is_down(&self) -> bool {
        self.state.lock().expect("health lock").down.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable() -> StoreError {
        StoreError::Unreachable("connection refused".to_owned())
    }

    #[test]
    fn the_requests_queued_behind_a_failed_probe_are_refused_at_once() {
        let health = Health::default();
        assert!(health.refuse().is_none(), "closed: everything goes through");
        health.failed(&unreachable());
        assert!(health.refuse().is_some(), "open: refused without trying");
        // A second later one publish goes through as the probe.
        health.state.lock().unwrap().last_probe = Some(Instant::now() - PROBE_INTERVAL);
        assert!(health.refuse().is_none(), "the probe");
        // The probe fails (after its acquire timeout): the batch queued
        // behind it is refused, not made the next probe.
        health.failed(&unreachable());
        assert!(health.refuse().is_some());
        // A probe that succeeds closes the breaker.
        health.state.lock().unwrap().last_probe = Some(Instant::now() - PROBE_INTERVAL);
        assert!(health.refuse().is_none());
        health.succeeded();
        assert!(!health.is_down());
        assert!(health.refuse().is_none());
    }
}
