//! The console's history: once a minute, each integration's figures
//! (`store::figures`: backlog, lag), the deliveries that failed in the
//! minute, its state and the live generation, recorded as one row per
//! integration and minute (`store::history`). Every process samples; the
//! first to record a minute keeps it. Rows older than [`KEPT`] are pruned.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::Engine;
use crate::store::history::{self, Sample};
use crate::store::{StoreError, figures};

/// How long samples are kept: the charts show a day at most.
pub const KEPT: chrono::Duration = chrono::Duration::days(8);

/// Events counted per lane at most, for the backlog (as `/metrics`).
const BACKLOG_CAP: i64 = 1000;

/// Records this minute's samples, unless another process did.
pub async fn sample(engine: &Engine) -> Result<(), StoreError> {
    let now = Utc::now();
    let minute = history::minute_of(now);
    let generation = engine.generation();
    let figures = figures::read(engine.store(), &generation, BACKLOG_CAP).await?;
    let mut tx = engine.store().begin().await?;
    let failures = history::failures_since(&mut tx, now - chrono::Duration::minutes(1)).await?;
    let samples: Vec<Sample> = generation
        .integrations
        .iter()
        .map(|integration| {
            let f = figures.get(&integration.id).cloned().unwrap_or_default();
            Sample {
                integration: integration.id.clone(),
                minute,
                backlog: f.backlog(),
                lag_seconds: f.lag_seconds(now),
                failures: failures.get(&integration.id).copied().unwrap_or(0),
                state: engine
                    .status(&integration.id)
                    .map_or("enabled", |s| s.state.as_str())
                    .to_owned(),
                generation: generation.number as i64,
            }
        })
        .collect();
    history::record(&mut tx, &samples).await?;
    history::prune(&mut tx, now - KEPT).await?;
    tx.commit().await
}

/// Samples now and then at the start of every minute, until `stop`.
pub fn spawn_sampler(engine: Engine, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(error) = sample(&engine).await {
                tracing::warn!(%error, "cannot record the integrations' history for the console's charts");
            }
            let now = Utc::now();
            let next = history::minute_of(now) + chrono::Duration::minutes(1);
            let wait = (next - now).to_std().unwrap_or(Duration::from_secs(60));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait + Duration::from_millis(50)) => {}
            }
        }
    })
}
