//! Liveness and readiness, for orchestrators and load balancers. Neither
//! needs a key.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, Problem};
use super::{AppState, Json};

/// How long `/readyz` waits for the database: as long as a publish waits
/// for a connection, so that 200 means a publish would get one too.
const PING_TIMEOUT: std::time::Duration = crate::engine::ACQUIRE_TIMEOUT;

/// The process is up.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// busbar can take requests.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    /// Always `ready`.
    pub status: String,
    /// The live generation's number.
    pub generation: u64,
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process is up.", body = Health))
)]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness: publishes are accepted (the publish breaker is closed), the
/// database answers, the workers run and a generation is loaded.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready.", body = Ready),
        (status = 503, description = "Not ready: publishes are refused because the database was unreachable (until busbar's probe gets a connection again), the database does not answer, a delivery worker died, or busbar is shutting down.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    if state.draining.is_cancelled() {
        return Err(ApiError::unavailable(
            "shutting-down",
            "busbar is shutting down",
        ));
    }
    // The publish path's own view first: while its breaker is open every
    // publish is answered 503, whatever a ping says.
    if let Some((down_for, reason)) = state.engine.health().down() {
        return Err(ApiError::unavailable(
            "database-unavailable",
            format!(
                "publishes are refused: the database has been unreachable for {}s ({reason})",
                down_for.as_secs()
            ),
        ));
    }
    let reachable = tokio::time::timeout(PING_TIMEOUT, state.engine.store().ping())
        .await
        .unwrap_or(false);
    if !reachable {
        return Err(ApiError::unavailable(
            "database-unavailable",
            "the database does not answer",
        ));
    }
    let (alive, expected) = state.engine.workers_alive();
    if alive < expected {
        return Err(ApiError::unavailable(
            "workers-down",
            format!("{alive} of {expected} delivery workers are running"),
        ));
    }
    // The engine always holds a generation: it cannot start without one.
    Ok(Json(Ready {
        status: "ready".into(),
        generation: state.engine.generation().number,
    }))
}
