//! `GET /metrics`: Prometheus text. The metric names live in
//! [`crate::telemetry`]; each integration's figures (backlog, lag,
//! retrying, dead, blocked keys, state) are read from the database here, on
//! scrape, so they cost nothing when nobody looks and every process sharing
//! the database serves the same. No key needed: metrics carry no
//! organization's data.

use std::time::Duration;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

use super::AppState;
use crate::engine::Engine;
use crate::store::figures;
use crate::telemetry::{self, IntegrationSample};

/// How long a scrape waits for the figures it reads from the database.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Events counted per lane at most, for the backlog (the lag is exact).
pub const BACKLOG_CAP: i64 = 1000;

/// Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Metrics in the Prometheus text format.", body = String, content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        let samples = samples(&state.engine).await?;
        let held = held(&state.engine).await?;
        let waiting_on = crate::store::activity::blockers(state.engine.store()).await?;
        Ok::<_, crate::store::StoreError>((samples, held, waiting_on))
    })
    .await;
    let samples = match read {
        Ok(Ok(samples)) => Some(samples),
        // The other metrics are still worth serving.
        Ok(Err(error)) => {
            tracing::warn!(%error, "cannot read the integrations' figures for /metrics");
            None
        }
        Err(_) => {
            tracing::warn!("reading the integrations' figures for /metrics timed out");
            None
        }
    };
    if let Some((samples, _, _)) = &samples {
        telemetry::queue_depth(samples.iter().map(|s| s.pending + s.retrying).sum());
    }
    let mut body = state.metrics.render();
    let (samples, held, waiting_on) = match samples {
        Some((samples, held, waiting_on)) => (Some(samples), held, Some(waiting_on)),
        None => (None, Vec::new(), None),
    };
    let databases: Vec<(String, bool)> = state
        .engine
        .databases()
        .into_iter()
        .map(|d| (d.name, d.up))
        .collect();
    body.push_str(&telemetry::render_integrations(
        samples.as_deref().unwrap_or_default(),
        &held,
        samples.is_some(),
        &databases,
    ));
    if let Some(waiting_on) = waiting_on {
        let sessions: Vec<(&str, f64)> = waiting_on
            .iter()
            .map(|b| (b.kind.as_str(), b.age_seconds))
            .collect();
        body.push_str(&telemetry::render_waiting_on(&sessions));
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
}

/// Every integration of the live generation, as the scrape reports it.
pub async fn samples(engine: &Engine) -> Result<Vec<IntegrationSample>, crate::store::StoreError> {
    let generation = engine.generation();
    let figures = figures::read(engine.store(), &generation, BACKLOG_CAP).await?;
    let now = chrono::Utc::now();
    let mut out: Vec<IntegrationSample> = generation
        .integrations
        .iter()
        .map(|integration| {
            let f = figures.get(&integration.id).cloned().unwrap_or_default();
            IntegrationSample {
                integration: integration.id.clone(),
                database: integration
                    .database
                    .clone()
                    .unwrap_or_else(|| crate::compile::databases::OWN.to_owned()),
                state: engine
                    .status(&integration.id)
                    .map_or("enabled", |status| status.state.as_str()),
                backlog: f.backlog(),
                lag_seconds: f.lag_seconds(now),
                pending: f.pending,
                retrying: f.retrying,
                dead: f.dead,
                blocked_keys: f.blocked_keys,
            }
        })
        .collect();
    out.sort_by(|a, b| a.integration.cmp(&b.integration));
    Ok(out)
}

/// Per source product of the live generation, the events a long
/// transaction holds back (sorted by source).
pub async fn held(engine: &Engine) -> Result<Vec<(String, i64)>, crate::store::StoreError> {
    let mut sources: Vec<String> = engine
        .generation()
        .integrations
        .iter()
        .map(|i| i.source.clone())
        .collect();
    sources.sort();
    sources.dedup();
    let held = figures::held_by_horizon(engine.store(), &sources).await?;
    Ok(sources
        .into_iter()
        .map(|source| {
            let count = held.get(&source).copied().unwrap_or(0);
            (source, count)
        })
        .collect())
}
