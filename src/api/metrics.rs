//! `GET /metrics`: Prometheus text. The metric names live in
//! [`crate::telemetry`]; the queue depth is counted here, on scrape, so it
//! costs nothing when nobody looks. No key needed: metrics carry no
//! organization's data.

use std::time::Duration;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

use super::AppState;
use crate::store::events;
use crate::telemetry;

/// How long a scrape waits to count pending deliveries.
const COUNT_TIMEOUT: Duration = Duration::from_secs(2);

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Metrics in the Prometheus text format.", body = String, content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let count = async {
        let mut tx = state.engine.store().begin_read().await?;
        let pending = events::open_count(&mut tx).await?;
        tx.rollback().await?;
        Ok::<_, crate::store::StoreError>(pending)
    };
    match tokio::time::timeout(COUNT_TIMEOUT, count).await {
        Ok(Ok(pending)) => telemetry::queue_depth(pending),
        // The other metrics are still worth serving.
        Ok(Err(error)) => tracing::warn!(%error, "cannot count pending deliveries for /metrics"),
        Err(_) => tracing::warn!("counting pending deliveries for /metrics timed out"),
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
}
