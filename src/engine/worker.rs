//! Workers: claim a batch of due deliveries, run each route, and commit the
//! writes, the emitted events and the new statuses together.
//!
//! A batch first runs optimistically, without savepoints: in the common
//! case every delivery succeeds (or skips before writing) and the batch
//! costs one statement per step. When a delivery fails, or skips after it
//! wrote, the batch is rolled back and claimed again in safe mode, with a
//! savepoint around each delivery so that one failure undoes only its own
//! writes.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::{Shared, retry};
use crate::compile::{Generation, Integration, Route};
use crate::envelope::Envelope;
use crate::mapping::{EventInput, RouteError, RouteOutcome, run_route};
use crate::store::events::{self, Claimed, NewEvent, Outcome, Status};
use crate::store::target::TargetExecutor;
use crate::store::types::Time;
use crate::store::{DbTx, StoreError};

/// Namespace for the ids of emitted events: `uuid5(delivery id + step)`,
/// so the same delivery step always emits the same event id.
const EMIT_NAMESPACE: Uuid = Uuid::from_u128(0x6275_7362_6172_2d65_6d69_742d_6576_656e);

pub(crate) async fn run(shared: Arc<Shared>, index: usize) {
    let mut wake = shared.work.waiter();
    let mut failures = 0u32;
    loop {
        if shared.shutdown.is_cancelled() {
            return;
        }
        wake.borrow_and_update();
        match process_batch(&shared).await {
            Ok(count) => {
                failures = 0;
                if count >= shared.config.batch_size {
                    continue;
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                tracing::warn!(worker = index, %error, "delivery batch failed; will retry");
                // The database may be down: back off, up to 5 s.
                let pause = Duration::from_millis(100 * u64::from(failures.min(50)));
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = shared.shutdown.cancelled() => return,
                }
                continue;
            }
        }
        tokio::select! {
            _ = wake.changed() => {}
            () = tokio::time::sleep(shared.config.poll_interval) => {}
            () = shared.shutdown.cancelled() => return,
        }
    }
}

/// Claims and processes one batch; returns how many deliveries it handled.
pub(crate) async fn process_batch(shared: &Shared) -> Result<usize, StoreError> {
    let generation = shared.generation.load_full();
    match attempt_batch(shared, &generation, false).await? {
        Some(count) => Ok(count),
        // Something failed or must be undone: run the batch again with a
        // savepoint per delivery.
        None => Ok(attempt_batch(shared, &generation, true).await?.unwrap_or(0)),
    }
}

/// What one delivery produced.
struct Done {
    outcome: Outcome,
    emitted: Vec<NewEvent>,
    /// Its writes must be undone (a failure, or a skip after a write).
    undo: bool,
}

/// Runs one batch in one transaction. Without `safe`, returns `None` as
/// soon as a delivery needs its writes undone (the caller retries in safe
/// mode).
async fn attempt_batch(shared: &Shared, generation: &Generation, safe: bool) -> Result<Option<usize>, StoreError> {
    let mut tx = shared.store.begin().await?;
    let now = Time::now();
    let claimed = events::claim_due(&mut tx, now, shared.config.batch_size as i64).await?;
    if claimed.is_empty() {
        tx.rollback().await?;
        return Ok(Some(0));
    }
    let mut outcomes = Vec::with_capacity(claimed.len());
    let mut emitted = Vec::new();
    for delivery in &claimed {
        if safe {
            tx.run("SAVEPOINT delivery").await?;
        }
        let done = match run_delivery(shared, generation, &mut tx, delivery).await {
            Ok(done) => done,
            Err(error) if !safe => {
                tracing::debug!(%error, "fast batch failed; retrying with savepoints");
                let _ = tx.rollback().await;
                return Ok(None);
            }
            Err(error) => return Err(error),
        };
        if done.undo && !safe {
            tx.rollback().await?;
            return Ok(None);
        }
        if safe {
            if done.undo {
                tx.run("ROLLBACK TO SAVEPOINT delivery").await?;
            }
            tx.run("RELEASE SAVEPOINT delivery").await?;
        }
        outcomes.push(done.outcome);
        emitted.extend(done.emitted);
    }
    if !emitted.is_empty() {
        shared.store_events(&mut tx, generation, &emitted, now).await?;
    }
    events::record_outcomes(&mut tx, &outcomes, Time::now()).await?;
    tx.commit().await?;
    if !emitted.is_empty() || outcomes.iter().any(|o| o.status == Status::Pending) {
        shared.work.raise();
    }
    for outcome in &outcomes {
        if outcome.status == Status::Dead {
            tracing::warn!(delivery = %outcome.id, error = outcome.error.as_deref().unwrap_or(""), "delivery dead-lettered");
        }
    }
    Ok(Some(claimed.len()))
}

/// Runs one delivery's route on `tx`. An `Err` is a database failure that
/// leaves the transaction unusable (the whole batch must be retried).
async fn run_delivery(
    shared: &Shared,
    generation: &Generation,
    tx: &mut DbTx,
    delivery: &Claimed,
) -> Result<Done, StoreError> {
    let attempts = delivery.attempts + 1;
    let finish = |status: Status, error: Option<String>, step: Option<usize>| Outcome {
        id: delivery.id,
        status,
        attempts,
        next_attempt_at: Time::now(),
        error,
        error_step: step.map(|s| s as i32 + 1),
        generation: generation.number as i64,
    };
    let Some((integration, route)) = find_route(generation, delivery) else {
        let reason = match generation.integration(&delivery.integration_id) {
            None => format!(
                "integration `{}` is not in the configuration (generation {})",
                delivery.integration_id, generation.number
            ),
            Some(_) => format!(
                "integration `{}` no longer routes `{}` (generation {})",
                delivery.integration_id, delivery.route_event, generation.number
            ),
        };
        return Ok(Done {
            outcome: finish(Status::Skipped, Some(reason), None),
            emitted: Vec::new(),
            undo: false,
        });
    };
    if !shared.enabled(generation, &integration.id) {
        return Ok(Done {
            outcome: finish(
                Status::Skipped,
                Some(format!("integration `{}` is disabled", integration.id)),
                None,
            ),
            emitted: Vec::new(),
            undo: false,
        });
    }
    let input = EventInput::new(&delivery.event);
    let mut executor = TargetExecutor::new(tx, &shared.store.catalog);
    let run = run_route(route, &generation.templates, &input, &mut executor).await;
    let wrote = executor.wrote;
    let emitted_steps = std::mem::take(&mut executor.emitted);
    match run.outcome {
        Ok(RouteOutcome::Applied) => {
            let emitted: Vec<NewEvent> = emitted_steps
                .into_iter()
                .map(|e| NewEvent {
                    envelope: Envelope {
                        id: Uuid::new_v5(&EMIT_NAMESPACE, format!("{}/{}", delivery.id, e.step).as_bytes()),
                        source: integration.target.clone(),
                        event: e.event,
                        organization_id: delivery.event.organization_id,
                        occurred_at: chrono::Utc::now(),
                        data: e.data,
                    },
                    idempotency_key: None,
                    parent_id: Some(delivery.event.id),
                })
                .collect();
            // An emitted event must honour its contract like a published
            // one; a mapping that breaks it is a permanent failure.
            for event in &emitted {
                let envelope = &event.envelope;
                if let Some(contract) = generation.contracts.get(&envelope.source, &envelope.event) {
                    let violations = contract.violations(&envelope.data);
                    if let Some(first) = violations.first() {
                        let message = format!(
                            "emitted {}/{} breaks its contract: {}: {}",
                            envelope.source, envelope.event, first.pointer, first.message
                        );
                        return Ok(Done {
                            outcome: finish(Status::Dead, Some(message), None),
                            emitted: Vec::new(),
                            undo: true,
                        });
                    }
                }
            }
            Ok(Done {
                outcome: finish(Status::Delivered, None, None),
                emitted,
                undo: false,
            })
        }
        Ok(RouteOutcome::Skipped { reason }) => Ok(Done {
            outcome: finish(Status::Skipped, Some(reason), None),
            emitted: Vec::new(),
            undo: wrote,
        }),
        Err(error) => {
            let step = error.step();
            let transient = matches!(&error, RouteError::Executor { error, .. } if error.is_transient());
            let message = error.to_string();
            let outcome = if transient && (attempts as u32) < integration.retry.max_attempts {
                let wait = retry::backoff(&integration.retry, attempts as u32);
                Outcome {
                    next_attempt_at: Time(chrono::Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default()),
                    ..finish(Status::Pending, Some(message), step)
                }
            } else if transient {
                finish(
                    Status::Dead,
                    Some(format!("gave up after {attempts} attempts: {message}")),
                    step,
                )
            } else {
                finish(Status::Dead, Some(message), step)
            };
            Ok(Done {
                outcome,
                emitted: Vec::new(),
                undo: true,
            })
        }
    }
}

/// The route a delivery names: the n-th route of its integration for its
/// event.
fn find_route<'g>(generation: &'g Generation, delivery: &Claimed) -> Option<(&'g Integration, &'g Route)> {
    let integration = generation.integration(&delivery.integration_id)?;
    let route = integration
        .routes
        .iter()
        .filter(|r| r.on == delivery.route_event)
        .nth(delivery.route_ordinal)?;
    Some((integration, route))
}
