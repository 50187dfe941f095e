//! Workers: claim a batch of due deliveries, run each route, and commit the
//! writes, the emitted events and the new statuses together.
//!
//! A batch is tried in up to three ways, each in one transaction:
//!
//! 1. **Lockstep**: every route of the batch runs at once; their database
//!    calls are gathered and executed as a few set-based statements
//!    ([`crate::store::batch`]). This is the fast path.
//! 2. **Sequential**: one delivery after another, without savepoints, when
//!    lockstep found two deliveries touching the same row.
//! 3. **Safe**: one delivery after another, each inside a savepoint, when a
//!    delivery failed or skipped after writing; its writes alone are undone.
//!
//! A way that cannot finish rolls its transaction back and the batch is
//! claimed again for the next; nothing is recorded twice.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use uuid::Uuid;

use super::{Shared, retry};
use crate::compile::{Generation, Integration, Route};
use crate::envelope::Envelope;
use crate::mapping::{EventInput, RouteError, RouteOutcome, run_route};
use crate::store::batch::{self, Accesses, BatchedExecutor, SharedQueue};
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
    let started = std::time::Instant::now();
    match attempt_lockstep(shared, &generation).await? {
        Attempt::Done(count) => {
            if count > 0 {
                tracing::debug!(deliveries = count, elapsed = ?started.elapsed(), "lockstep batch committed");
            }
            return Ok(count);
        }
        Attempt::Undo => {}
        Attempt::Conflict => match attempt_sequential(shared, &generation, false).await? {
            Attempt::Done(count) => return Ok(count),
            Attempt::Undo | Attempt::Conflict => {}
        },
    }
    match attempt_sequential(shared, &generation, true).await? {
        Attempt::Done(count) => Ok(count),
        // Safe mode undoes each failure in its savepoint and never gives up.
        Attempt::Undo | Attempt::Conflict => Ok(0),
    }
}

/// How one attempt at a batch ended.
enum Attempt {
    /// Committed; this many deliveries were handled.
    Done(usize),
    /// A delivery's writes must be undone: try again with savepoints.
    Undo,
    /// Two deliveries touched the same row: try again one after another.
    Conflict,
}

/// What one delivery produced.
struct Done {
    outcome: Outcome,
    emitted: Vec<NewEvent>,
    /// Its writes must be undone (a failure, or a skip after a write).
    undo: bool,
}

/// What a claimed delivery needs.
enum Plan<'g> {
    /// Decided without running anything (route gone, integration disabled).
    Decided(Done),
    Run(&'g Integration, &'g Route),
}

fn plan<'g>(shared: &Shared, generation: &'g Generation, delivery: &Claimed) -> Plan<'g> {
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
        return Plan::Decided(Done {
            outcome: outcome(generation, delivery, Status::Skipped, Some(reason), None),
            emitted: Vec::new(),
            undo: false,
        });
    };
    if !shared.enabled(generation, &integration.id) {
        return Plan::Decided(Done {
            outcome: outcome(
                generation,
                delivery,
                Status::Skipped,
                Some(format!("integration `{}` is disabled", integration.id)),
                None,
            ),
            emitted: Vec::new(),
            undo: false,
        });
    }
    Plan::Run(integration, route)
}

fn outcome(
    generation: &Generation,
    delivery: &Claimed,
    status: Status,
    error: Option<String>,
    step: Option<usize>,
) -> Outcome {
    Outcome {
        id: delivery.id,
        status,
        attempts: delivery.attempts + 1,
        next_attempt_at: Time::now(),
        error,
        error_step: step.map(|s| s as i32 + 1),
        generation: generation.number as i64,
    }
}

/// Runs the whole batch in lockstep.
async fn attempt_lockstep(shared: &Shared, generation: &Generation) -> Result<Attempt, StoreError> {
    let mut tx = shared.store.begin().await?;
    let now = Time::now();
    let started = std::time::Instant::now();
    let claimed = events::claim_due(&mut tx, now, shared.config.batch_size as i64).await?;
    tracing::trace!(deliveries = claimed.len(), elapsed = ?started.elapsed(), "claimed");
    if claimed.is_empty() {
        tx.rollback().await?;
        return Ok(Attempt::Done(0));
    }
    let plans: Vec<Plan<'_>> = claimed
        .iter()
        .map(|d| plan(shared, generation, d))
        .collect();
    // One input per event, shared by its deliveries (cheap to clone).
    let mut by_event: std::collections::HashMap<Uuid, EventInput> =
        std::collections::HashMap::new();
    let inputs: Vec<EventInput> = claimed
        .iter()
        .map(|d| {
            by_event
                .entry(d.event.id)
                .or_insert_with(|| EventInput::new(&d.event))
                .clone()
        })
        .collect();
    let queue: SharedQueue = Default::default();
    let mut executors: Vec<BatchedExecutor> = (0..claimed.len())
        .map(|i| BatchedExecutor::new(queue.clone(), i))
        .collect();
    let mut runs: Vec<Option<Result<RouteOutcome, RouteError<StoreError>>>> = Vec::new();
    runs.resize_with(claimed.len(), || None);
    let mut accesses = Accesses::default();
    let flushed = {
        type RouteFuture<'a> =
            Pin<Box<dyn Future<Output = Result<RouteOutcome, RouteError<StoreError>>> + Send + 'a>>;
        let mut futures: Vec<Option<RouteFuture<'_>>> = plans
            .iter()
            .zip(&inputs)
            .zip(executors.iter_mut())
            .map(|((plan, input), executor)| match plan {
                Plan::Decided(_) => None,
                Plan::Run(_, route) => Some(Box::pin(async move {
                    run_route(route, &generation.templates, input, executor)
                        .await
                        .outcome
                }) as RouteFuture<'_>),
            })
            .collect();
        loop {
            let mut waiting = 0;
            // The context is made per poll: it is not `Send`, and must not
            // live across the flush below.
            for (i, slot) in futures.iter_mut().enumerate() {
                if let Some(future) = slot {
                    match future
                        .as_mut()
                        .poll(&mut Context::from_waker(Waker::noop()))
                    {
                        Poll::Ready(result) => {
                            runs[i] = Some(result);
                            *slot = None;
                        }
                        Poll::Pending => waiting += 1,
                    }
                }
            }
            if waiting == 0 {
                break Ok(());
            }
            if let Err(error) =
                batch::flush(&queue, &mut tx, &shared.store.catalog, &mut accesses).await
            {
                break Err(error);
            }
        }
    };
    if let Err(error) = flushed {
        tracing::debug!(%error, "lockstep batch failed; retrying with savepoints");
        let _ = tx.rollback().await;
        return Ok(Attempt::Undo);
    }
    if let Some(conflict) = accesses.conflict() {
        tracing::debug!(%conflict, "lockstep batch touched a row twice; retrying one delivery at a time");
        tx.rollback().await?;
        return Ok(Attempt::Conflict);
    }
    let mut done = Vec::with_capacity(claimed.len());
    for (((delivery, plan), run), executor) in claimed.iter().zip(plans).zip(runs).zip(executors) {
        let result = match plan {
            Plan::Decided(decided) => decided,
            Plan::Run(integration, _) => {
                let run = run.expect("every route ran to the end");
                conclude(
                    generation,
                    delivery,
                    integration,
                    run,
                    executor.wrote,
                    executor.emitted,
                )
            }
        };
        if result.undo {
            tx.rollback().await?;
            return Ok(Attempt::Undo);
        }
        done.push(result);
    }
    commit(shared, generation, tx, now, done, &claimed).await?;
    Ok(Attempt::Done(claimed.len()))
}

/// Runs the batch one delivery after another; with `safe`, each inside a
/// savepoint.
async fn attempt_sequential(
    shared: &Shared,
    generation: &Generation,
    safe: bool,
) -> Result<Attempt, StoreError> {
    let mut tx = shared.store.begin().await?;
    let now = Time::now();
    let claimed = events::claim_due(&mut tx, now, shared.config.batch_size as i64).await?;
    if claimed.is_empty() {
        tx.rollback().await?;
        return Ok(Attempt::Done(0));
    }
    let mut done = Vec::with_capacity(claimed.len());
    for delivery in &claimed {
        let (integration, route) = match plan(shared, generation, delivery) {
            Plan::Decided(decided) => {
                done.push(decided);
                continue;
            }
            Plan::Run(integration, route) => (integration, route),
        };
        if safe {
            tx.run("SAVEPOINT delivery").await?;
        }
        let input = EventInput::new(&delivery.event);
        let mut executor = TargetExecutor::new(&mut tx, &shared.store.catalog);
        let run = run_route(route, &generation.templates, &input, &mut executor).await;
        let wrote = executor.wrote;
        let emitted = std::mem::take(&mut executor.emitted);
        // A database error may leave the transaction unusable: outside a
        // savepoint, give up on this attempt.
        let database_failed = matches!(&run.outcome, Err(RouteError::Executor { .. }));
        let result = conclude(
            generation,
            delivery,
            integration,
            run.outcome,
            wrote,
            emitted,
        );
        if !safe && (result.undo || database_failed) {
            tx.rollback().await?;
            return Ok(Attempt::Undo);
        }
        if safe {
            if result.undo {
                tx.run("ROLLBACK TO SAVEPOINT delivery").await?;
            }
            tx.run("RELEASE SAVEPOINT delivery").await?;
        }
        done.push(result);
    }
    commit(shared, generation, tx, now, done, &claimed).await?;
    Ok(Attempt::Done(claimed.len()))
}

/// Stores the emitted events (routed at once), records every outcome, and
/// commits.
async fn commit(
    shared: &Shared,
    generation: &Generation,
    mut tx: DbTx,
    now: Time,
    done: Vec<Done>,
    claimed: &[Claimed],
) -> Result<(), StoreError> {
    let mut outcomes = Vec::with_capacity(done.len());
    let mut emitted = Vec::new();
    for result in done {
        outcomes.push(result.outcome);
        emitted.extend(result.emitted);
    }
    if !emitted.is_empty() {
        shared
            .store_events(&mut tx, generation, &emitted, now)
            .await?;
    }
    let started = std::time::Instant::now();
    events::record_outcomes(&mut tx, &outcomes, Time::now()).await?;
    tracing::trace!(deliveries = outcomes.len(), elapsed = ?started.elapsed(), "outcomes recorded");
    let started = std::time::Instant::now();
    tx.commit().await?;
    tracing::trace!(elapsed = ?started.elapsed(), "committed");
    if !emitted.is_empty() || outcomes.iter().any(|o| o.status == Status::Pending) {
        shared.work.raise();
    }
    // `now` is when the batch was claimed: each delivery's time is the
    // batch's (they ran together).
    let elapsed = (chrono::Utc::now() - now.0).to_std().unwrap_or_default();
    for (outcome, delivery) in outcomes.iter().zip(claimed) {
        crate::telemetry::delivery_finished(&delivery.integration_id, outcome.status, elapsed);
    }
    for outcome in &outcomes {
        if outcome.status == Status::Dead {
            tracing::warn!(delivery = %outcome.id, error = outcome.error.as_deref().unwrap_or(""), "delivery dead-lettered");
        }
    }
    Ok(())
}

/// Turns a route's result into the delivery's outcome and emitted events.
fn conclude(
    generation: &Generation,
    delivery: &Claimed,
    integration: &Integration,
    run: Result<RouteOutcome, RouteError<StoreError>>,
    wrote: bool,
    emitted: Vec<crate::store::target::Emitted>,
) -> Done {
    match run {
        Ok(RouteOutcome::Applied) => {
            let emitted: Vec<NewEvent> = emitted
                .into_iter()
                .map(|e| NewEvent {
                    envelope: Envelope {
                        id: Uuid::new_v5(
                            &EMIT_NAMESPACE,
                            format!("{}/{}", delivery.id, e.step).as_bytes(),
                        ),
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
                if let Some(contract) = generation.contracts.get(&envelope.source, &envelope.event)
                    && let Some(first) = contract.violations(&envelope.data).first()
                {
                    let message = format!(
                        "emitted {}/{} breaks its contract: {}: {}",
                        envelope.source, envelope.event, first.pointer, first.message
                    );
                    return Done {
                        outcome: outcome(generation, delivery, Status::Dead, Some(message), None),
                        emitted: Vec::new(),
                        undo: true,
                    };
                }
            }
            Done {
                outcome: outcome(generation, delivery, Status::Delivered, None, None),
                emitted,
                undo: false,
            }
        }
        Ok(RouteOutcome::Skipped { reason }) => Done {
            outcome: outcome(generation, delivery, Status::Skipped, Some(reason), None),
            emitted: Vec::new(),
            undo: wrote,
        },
        Err(error) => {
            let attempts = delivery.attempts + 1;
            let step = error.step();
            let transient =
                matches!(&error, RouteError::Executor { error, .. } if error.is_transient());
            let message = error.to_string();
            let result = if transient && (attempts as u32) < integration.retry.max_attempts {
                let wait = retry::backoff(&integration.retry, attempts as u32);
                Outcome {
                    next_attempt_at: Time(
                        chrono::Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default(),
                    ),
                    ..outcome(generation, delivery, Status::Pending, Some(message), step)
                }
            } else if transient {
                outcome(
                    generation,
                    delivery,
                    Status::Dead,
                    Some(format!("gave up after {attempts} attempts: {message}")),
                    step,
                )
            } else {
                outcome(generation, delivery, Status::Dead, Some(message), step)
            };
            Done {
                outcome: result,
                emitted: Vec::new(),
                undo: true,
            }
        }
    }
}

/// The route a delivery names: the n-th route of its integration for its
/// event.
fn find_route<'g>(
    generation: &'g Generation,
    delivery: &Claimed,
) -> Option<(&'g Integration, &'g Route)> {
    let integration = generation.integration(&delivery.integration_id)?;
    let route = integration
        .routes
        .iter()
        .filter(|r| r.on == delivery.route_event)
        .nth(delivery.route_ordinal)?;
    Some((integration, route))
}
