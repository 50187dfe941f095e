//! One lane's transaction: lock the lane, take its due rows and its new
//! events, run their routes, and commit the writes, the exception rows, the
//! emitted events and the cursor together (ARCHITECTURE.md, "Delivery
//! (v2)").
//!
//! The deliveries of a batch are run in up to three ways, inside one
//! transaction that holds the lane's lock throughout:
//!
//! 1. **Lockstep** (the fast path): every route at once; their database
//!    calls are gathered and executed as a few set-based statements
//!    ([`crate::store::batch`]).
//! 2. **Sequential**: one delivery after another, when lockstep found two
//!    deliveries touching the same row.
//! 3. **Safe**: one delivery after another, each in a savepoint, when a
//!    delivery failed, skipped after writing, or panicked. Only here does a
//!    failure block its key for the rest of the batch.
//!
//! Each way runs inside the savepoint `batch`, rolled back before the next
//! way is tried.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use uuid::Uuid;

use super::{Shared, State, retry};
use crate::compile::{Generation, Integration, OnDead, Route};
use crate::delivery::delivery_id;
use crate::envelope::Envelope;
use crate::mapping::{EventInput, RouteError, RouteOutcome, run_route};
use crate::store::batch::{self, Accesses, BatchedExecutor, Places, SharedQueue};
use crate::store::events::Status;
use crate::store::lanes::{self, DeliveryRow};
use crate::store::log;
use crate::store::log::LaneFilter;
use crate::store::log::NewEvent;
use crate::store::partitionings::{self, Partitioning};
use crate::store::target::{Emitted, TargetExecutor};
use crate::store::targets::{LaneExecutor, TargetDb, TargetTx, progress_key};
use crate::store::ticks::{self, Cursor, Tick};
use crate::store::types::{Position, Time};
use crate::store::{DbTx, Dialect, StoreError};

/// A lane: an integration and one of its lanes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct LaneId {
    pub integration: std::sync::Arc<str>,
    pub lane: i32,
}

impl std::fmt::Display for LaneId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.integration, self.lane)
    }
}

/// What a lane's visit found.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Visit {
    /// There is more to do at once.
    pub more: bool,
    /// The earliest retry that is waiting.
    pub due: Option<Time>,
}

/// What a lane remembers between visits without writing it: how far it has
/// read past its stored cursor when nothing matched.
#[derive(Debug, Clone, Default)]
pub(crate) struct Memory {
    /// The stored cursor when `scanned` was reached.
    pub stored: Option<Cursor>,
    pub scanned: Option<Cursor>,
    /// When the stored cursor was last written.
    pub written: Option<Instant>,
}

/// One delivery of a batch.
struct Item<'g> {
    event: Envelope,
    position: Position,
    route: &'g Route,
    key: String,
    /// Its row, when it has one.
    row: Option<DeliveryRow>,
    id: Uuid,
    plan: Plan,
}

/// Whether an item runs.
#[derive(Debug, Clone)]
enum Plan {
    Run,
    /// Recorded without running.
    Decided(Result_),
}

/// How a delivery ended in this batch.
#[derive(Debug, Clone)]
enum Result_ {
    Delivered,
    Skipped(String),
    Retry {
        error: String,
        step: Option<usize>,
        at: Time,
    },
    Dead {
        error: String,
        step: Option<usize>,
    },
    /// Not run: its key is blocked. Waits as a `pending` row.
    Queued,
}

impl Result_ {
    /// The status it leaves the delivery in (`None`: unchanged, queued).
    fn status(&self) -> Option<Status> {
        match self {
            Result_::Delivered => Some(Status::Delivered),
            Result_::Skipped(_) => Some(Status::Skipped),
            Result_::Retry { .. } => Some(Status::Retrying),
            Result_::Dead { .. } => Some(Status::Dead),
            Result_::Queued => None,
        }
    }
}

/// What running one delivery gave.
struct Done {
    result: Result_,
    emitted: Vec<NewEvent>,
    /// Its writes must be undone (a failure, or a skip after a write).
    undo: bool,
}

/// Visits a lane once: one transaction.
pub(crate) async fn visit(
    shared: &Shared,
    lane: &LaneId,
    memory: &mut Memory,
) -> Result<Visit, StoreError> {
    let generation = shared.generation.load_full();
    let Some(integration) = generation.integration(&lane.integration) else {
        return Ok(Visit::default());
    };
    if !shared.defines(integration) {
        return Ok(Visit::default());
    }
    let status = shared.state_of(&generation, integration);
    if status.state == State::Paused {
        return Ok(Visit::default());
    }
    // A redelivery is being written here: its rows run first, once it is
    // whole (redeliver.rs wakes the lanes then).
    if shared.is_redelivering(&integration.id) {
        return Ok(Visit::default());
    }
    // An integration whose target database is another one waits while that
    // database is out of reach (no attempt counted, no dead letter).
    // So does one that reads a database that is out of reach.
    let open = shared.targets.load();
    let usable = |name: &String| match open.get(name) {
        Some(database) if database.resting().is_some() => Ok(None),
        Some(database) => Ok(Some(database.clone())),
        None => Err(StoreError::Invalid(format!(
            "internal error: database `{name}` is not open"
        ))),
    };
    let target = match &integration.database {
        None => None,
        Some(name) => match usable(name)? {
            Some(target) => Some(target),
            None => return Ok(Visit::default()),
        },
    };
    let mut readers = Vec::with_capacity(integration.reads_from.len());
    for name in &integration.reads_from {
        match usable(name)? {
            Some(reader) => readers.push(reader),
            None => return Ok(Visit::default()),
        }
    }
    drop(open);
    let batch_size = shared.config.batch_size.max(1);
    let started = Instant::now();
    let mut tx = shared.store.begin().await?;
    if tx.dialect() == Dialect::Postgres {
        // A row locked by someone else fails its statement after a second
        // (the batch then runs one delivery at a time, and only the blocked
        // one retries); nothing runs away.
        //
        // The planner is also told to read the log through its index in
        // position order: it cannot know how selective a lane's hash is,
        // and a scan of every event followed by a sort costs a lane far
        // more than stopping at its batch size.
        tx.run(
            "SELECT set_config('lock_timeout', '1s', true), set_config('statement_timeout', '60s', true), \
                    set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true)",
        )
        .await?;
    }
    let Some(row) = lanes::lock(&mut tx, &lane.integration, lane.lane).await? else {
        tx.rollback().await?;
        // Worked elsewhere (another worker or process): whoever holds it
        // will see what is there.
        return Ok(Visit::default());
    };
    let now = Time::now();
    let start = match (&memory.stored, &memory.scanned) {
        (Some(stored), Some(scanned)) if *stored == row.cursor => scanned.clone(),
        _ => row.cursor.clone(),
    };
    // The partitioning the lane reads with, and the next one if the order
    // key changed: the lane reads up to its tick, then all lanes switch.
    let versions = partitionings::of(&mut tx, &lane.integration).await?;
    let next = versions.iter().find(|p| p.version == row.version + 1);
    let (order_by, lane_count) = match versions.iter().find(|p| p.version == row.version) {
        Some(current) => (current.order_by.clone(), current.lanes),
        None => (integration.order_by.clone(), shared.lanes),
    };
    if let Some(next) = next
        && at_barrier(&start, next)
    {
        let switched = switch(shared, &mut tx, lane, &row, &start, next, now).await?;
        if switched {
            tx.commit().await?;
            tracing::info!(
                integration = %lane.integration,
                order_by = %next.order_by.describe(),
                version = next.version,
                "every lane reached the new partitioning's tick: switched"
            );
            *memory = Memory::default();
            return Ok(Visit {
                more: true,
                due: None,
            });
        }
    }
    let dead_blocks = integration.on_dead == OnDead::Block;
    let disabled = status.state == State::Disabled;

    // 1. The lane's runnable open rows (each key's first, and the rows
    // queued behind it), in position order; they run first.
    let open = lanes::open_rows(
        &mut tx,
        &lane.integration,
        lane.lane,
        dead_blocks,
        batch_size as i64,
        now,
    )
    .await?;
    // Keys with an open row in this batch: their new events queue behind.
    let mut blocked: HashSet<String> = HashSet::new();
    let mut due: Option<Time> = if disabled {
        None
    } else {
        lanes::next_due(&mut tx, &lane.integration, lane.lane, now).await?
    };
    let mut items: Vec<Item<'_>> = Vec::new();
    let mut held: HashSet<String> = HashSet::new();
    for open_row in open {
        let row = open_row.row;
        let key = row
            .order_key
            .clone()
            .unwrap_or_else(|| format!("legacy:{}", row.id));
        blocked.insert(key.clone());
        if held.contains(&key) {
            continue;
        }
        let waiting = match row.status {
            Status::Dead => true,
            Status::Retrying if row.next_attempt_at > now && !disabled => {
                due = Some(due.map_or(row.next_attempt_at, |d| d.min(row.next_attempt_at)));
                true
            }
            _ => false,
        };
        if waiting {
            held.insert(key);
            continue;
        }
        let Some(route) = route_of(integration, &row) else {
            let reason = format!(
                "integration `{}` no longer routes `{}` (generation {})",
                integration.id, row.route_event, generation.number
            );
            items.push(Item {
                event: open_row.event,
                position: row.position,
                route: &integration.routes[0],
                key,
                id: row.id,
                row: Some(row),
                plan: Plan::Decided(Result_::Skipped(reason)),
            });
            continue;
        };
        // The skip rule after a re-enable applies to events as they are
        // read from the log; a row exists only for a delivery read after
        // the re-enable (queued behind its key) or asked for by an
        // operator (a replay, a redelivery), so it is never "published
        // while disabled".
        let plan = decide(integration, &status, row.position, true, disabled);
        items.push(Item {
            event: open_row.event,
            position: row.position,
            route,
            key,
            id: row.id,
            row: Some(row),
            plan,
        });
    }

    // 2. New events: the rest of the lane's batch, then the batch up to the
    // newest tick.
    let room = batch_size.saturating_sub(items.len()).max(1) as i64;
    let filter = LaneFilter {
        order_by: &order_by,
        lanes: lane_count,
        ..shared.lane_filter(integration, lane.lane)
    };
    let prepared = started.elapsed();
    let barrier = next.map(|n| &n.from);
    let (read, new_cursor, full) = read_new(&mut tx, &filter, &start, room, barrier).await?;
    let read_at = started.elapsed();
    let first_new = items.len();
    // Keys of the new events that wait behind an open row outside this
    // batch (asked for these keys only: a lane holds no set of every
    // blocked key).
    let keys: Vec<String> = {
        let mut keys: Vec<String> = read.iter().map(|e| order_by.key_of(&e.envelope)).collect();
        keys.sort();
        keys.dedup();
        keys.retain(|k| !blocked.contains(k));
        keys
    };
    if !keys.is_empty() {
        blocked.extend(
            lanes::blocked_keys(&mut tx, &lane.integration, lane.lane, dead_blocks, &keys).await?,
        );
    }
    for event in read {
        let key = order_by.key_of(&event.envelope);
        for route in integration
            .routes
            .iter()
            .filter(|r| r.on == event.envelope.event)
        {
            let id = delivery_id(
                event.envelope.organization_id,
                event.envelope.id,
                &integration.id,
                &route.on,
                &route.identity(),
            );
            let plan = match decide(integration, &status, event.position, false, disabled) {
                Plan::Run if blocked.contains(&key) => Plan::Decided(Result_::Queued),
                plan => plan,
            };
            items.push(Item {
                event: event.envelope.clone(),
                position: event.position,
                route,
                key: key.clone(),
                row: None,
                id,
                plan,
            });
        }
    }

    if items.is_empty() {
        // Nothing matched: remember how far the lane read, and write the
        // cursor only now and then (losing it costs a rescan, nothing else).
        // A lane that reached a partitioning switch writes at once: the
        // switch waits for every lane's stored cursor.
        let stale = memory.written.is_none_or(|t| t.elapsed().as_secs() >= 5)
            || next.is_some_and(|next| at_barrier(&new_cursor, next));
        if new_cursor != row.cursor && stale {
            // A batch the target committed and busbar did not record is
            // applied before the cursor moves past its events.
            if let Some(target) = &target {
                match begin_elsewhere(target, &shared.installation, lane, &row).await {
                    Ok(Elsewhere::Ready(dtx)) => dtx.rollback().await?,
                    Ok(Elsewhere::Ahead(dtx, bookkeeping)) => {
                        return finish_elsewhere(shared, lane, memory, tx, dtx, *bookkeeping, now)
                            .await;
                    }
                    Err(error) => {
                        tx.rollback().await?;
                        return Err(error);
                    }
                }
            }
            lanes::advance(
                &mut tx,
                &lane.integration,
                lane.lane,
                &new_cursor,
                0,
                0,
                now,
            )
            .await?;
            if tx.dialect() == Dialect::Postgres {
                tx.run("SET LOCAL synchronous_commit = off").await?;
            }
            tx.commit().await?;
            *memory = Memory {
                stored: Some(new_cursor.clone()),
                scanned: Some(new_cursor),
                written: Some(Instant::now()),
            };
        } else {
            tx.rollback().await?;
            *memory = Memory {
                stored: Some(row.cursor.clone()),
                scanned: Some(new_cursor),
                written: memory.written,
            };
        }
        return Ok(Visit { more: full, due });
    }

    // 3. Run: in busbar's transaction, or, for an integration whose
    // target database is another one, in a transaction there that also
    // holds the lane's progress row (ARCHITECTURE.md, "Exactly once into
    // another database, without XA").
    let ran_from = started.elapsed();
    let mut reads = match begin_reads(&readers).await {
        Ok(reads) => reads,
        Err(error) => {
            tx.rollback().await?;
            return Err(error);
        }
    };
    let mut elsewhere = match &target {
        None => None,
        Some(target) => match begin_elsewhere(target, &shared.installation, lane, &row).await {
            Ok(Elsewhere::Ready(dtx)) => Some(dtx),
            Ok(Elsewhere::Ahead(dtx, bookkeeping)) => {
                end_reads(reads).await;
                return finish_elsewhere(shared, lane, memory, tx, dtx, *bookkeeping, now).await;
            }
            Err(error) => {
                end_reads(reads).await;
                tx.rollback().await?;
                return Err(error);
            }
        },
    };
    let mut others = Others {
        target: elsewhere.as_mut(),
        reads: &mut reads,
    };
    let ran = run_batch(
        shared,
        &generation,
        integration,
        &mut tx,
        &mut others,
        &items,
    )
    .await;
    end_reads(reads).await;
    let results = match ran {
        Ok(results) => results,
        Err(error) => {
            if let Some(dtx) = elsewhere {
                let _ = dtx.rollback().await;
            }
            // An outage of a database the batch used: that database is
            // down, and the integrations using it wait (no attempt counted).
            for database in target.iter().chain(&readers) {
                database.confirm(&error).await;
            }
            tx.rollback().await?;
            return Err(error);
        }
    };

    // 4. Record: rows for the exceptions, emitted events, the cursor.
    let recorded_from = started.elapsed();
    let (bookkeeping, report) = record(
        &generation,
        integration,
        lane,
        &items,
        first_new,
        results,
        new_cursor,
        now,
        &mut due,
    );
    if let (Some(target), Some(mut dtx)) = (&target, elsewhere) {
        // The target commits the batch's writes with the bookkeeping it
        // implies; busbar applies it after. A crash between the two leaves
        // the target one batch ahead, with what to apply (see
        // `begin_elsewhere`).
        let stored = serde_json::to_value(&bookkeeping)
            .map_err(|e| StoreError::Invalid(format!("internal error: {e}")))?;
        let committed = async {
            let key = progress_key(&shared.installation, &lane.integration);
            dtx.record_progress(&key, lane.lane, row.batch_seq + 1, &stored)
                .await?;
            dtx.commit().await
        }
        .await;
        if let Err(error) = committed {
            // Whether the target committed is unknown: the next batch
            // compares the two numbers and finds out.
            target.failed(&error);
            tx.rollback().await?;
            return Err(error);
        }
        target.succeeded();
        crate::failpoint::hit("after-target-commit");
    }
    let batches = i64::from(target.is_some());
    apply(&mut tx, lane, &bookkeeping, batches, now).await?;
    let committing = started.elapsed();
    tx.commit().await?;
    tracing::debug!(
        lane = %lane,
        deliveries = items.len(),
        prepare = ?prepared,
        read = ?(read_at - prepared),
        plan = ?(ran_from - read_at),
        run = ?(recorded_from - ran_from),
        record = ?(committing - recorded_from),
        commit = ?(started.elapsed() - committing),
        "lane batch committed"
    );
    *memory = Memory {
        stored: Some(bookkeeping.cursor.clone()),
        scanned: Some(bookkeeping.cursor.clone()),
        written: Some(Instant::now()),
    };
    if !bookkeeping.emitted.is_empty() {
        shared.wake_for(bookkeeping.emitted.iter().map(|e| &e.envelope));
    }
    let elapsed = (chrono::Utc::now() - now.0).to_std().unwrap_or_default();
    for outcome in &report {
        crate::telemetry::delivery_finished(&outcome.integration, outcome.status, elapsed);
    }
    shared.report(&report);
    // A head that finished lets the rows queued behind it run now.
    let progressed = items
        .iter()
        .take(first_new)
        .any(|item| matches!(item.plan, Plan::Run | Plan::Decided(Result_::Skipped(_))));
    Ok(Visit {
        more: full || progressed,
        due,
    })
}

/// Runs a batch: lockstep first, then one delivery after another, then
/// with savepoints. Each step runs on the transaction of its table's
/// database: busbar's (`tx`), the one the integration writes to (`others.
/// target`, where the savepoints are then taken) or one its `find`s read.
async fn run_batch(
    shared: &Shared,
    generation: &Generation,
    integration: &Integration,
    tx: &mut DbTx,
    others: &mut Others<'_>,
    items: &[Item<'_>],
) -> Result<Vec<Done>, StoreError> {
    others.on_writer(tx, "SAVEPOINT batch").await?;
    let lockstep = {
        let mut places = Places {
            own: &mut *tx,
            own_catalog: &shared.store.catalog,
            databases: &generation.databases,
            others: others.by_name(integration),
        };
        run_lockstep(generation, integration, &mut places, items).await?
    };
    let mut results = match lockstep {
        Attempt::Done(results) => Some(results),
        Attempt::Undo => None,
        Attempt::Conflict => {
            others.on_writer(tx, "ROLLBACK TO SAVEPOINT batch").await?;
            let sequential =
                run_sequential(shared, generation, integration, tx, others, items, false);
            match sequential.await? {
                Attempt::Done(results) => Some(results),
                _ => None,
            }
        }
    };
    if results.is_none() {
        others.on_writer(tx, "ROLLBACK TO SAVEPOINT batch").await?;
        let safe = run_sequential(shared, generation, integration, tx, others, items, true);
        results = match safe.await? {
            Attempt::Done(results) => Some(results),
            _ => None,
        };
    }
    let Some(results) = results else {
        // Safe mode cannot give up; this is a bug. Leave everything as it was.
        return Err(StoreError::Invalid(
            "internal error: safe mode gave up".into(),
        ));
    };
    others.on_writer(tx, "RELEASE SAVEPOINT batch").await?;
    Ok(results)
}

/// The transactions a batch holds in other databases.
struct Others<'x> {
    /// In the database the integration writes to, if not busbar's own:
    /// the batch's writes and savepoints are there.
    target: Option<&'x mut TargetTx>,
    /// In the databases its `find`s read, by name.
    reads: &'x mut [(String, TargetTx)],
}

impl Others<'_> {
    /// Every transaction, by its database's name.
    fn by_name<'s>(&'s mut self, integration: &'s Integration) -> Vec<(&'s str, &'s mut TargetTx)> {
        let mut others: Vec<(&str, &mut TargetTx)> = self
            .reads
            .iter_mut()
            .map(|(name, tx)| (name.as_str(), tx))
            .collect();
        if let (Some(name), Some(target)) =
            (integration.database.as_deref(), self.target.as_deref_mut())
        {
            others.push((name, target));
        }
        others
    }

    /// Runs a savepoint statement on the transaction the batch writes in:
    /// the target's when there is one, else busbar's (`tx`).
    async fn on_writer(&mut self, tx: &mut DbTx, sql: &'static str) -> Result<(), StoreError> {
        match self.target.as_deref_mut() {
            Some(dtx) => dtx.run(sql).await,
            None => tx.run(sql).await,
        }
    }
}

/// Starts a read transaction in each database an integration's `find`s
/// read (other than the one it writes to).
async fn begin_reads(readers: &[Arc<TargetDb>]) -> Result<Vec<(String, TargetTx)>, StoreError> {
    let mut reads = Vec::with_capacity(readers.len());
    for reader in readers {
        match reader.begin_read().await {
            Ok(tx) => reads.push((reader.name.clone(), tx)),
            Err(error) => {
                end_reads(reads).await;
                return Err(error);
            }
        }
    }
    Ok(reads)
}

/// Ends read transactions (nothing was written in them).
async fn end_reads(reads: Vec<(String, TargetTx)>) {
    for (_, tx) in reads {
        let _ = tx.rollback().await;
    }
}

/// What a batch leaves in busbar's database: the rows of its exceptions,
/// the events its steps emitted, its counts and the lane's new cursor.
/// For a batch applied in another database it is also stored there, in
/// the lane's progress row, committed with the batch's writes.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Bookkeeping {
    cursor: Cursor,
    /// Rows that existed before the batch.
    updated: Vec<DeliveryRow>,
    /// Rows of the batch's new events.
    made: Vec<DeliveryRow>,
    emitted: Vec<NewEvent>,
    /// First-pass and later deliveries by organization.
    delivered: Vec<(Uuid, i64)>,
    /// Deliveries of new events that were delivered (no row).
    delivered_first_pass: i64,
}

/// The bookkeeping of a batch whose items ended with `results`, and what
/// to report; `due` becomes the earliest retry.
#[allow(clippy::too_many_arguments)]
fn record(
    generation: &Generation,
    integration: &Integration,
    lane: &LaneId,
    items: &[Item<'_>],
    first_new: usize,
    results: Vec<Done>,
    cursor: Cursor,
    now: Time,
    due: &mut Option<Time>,
) -> (Bookkeeping, Vec<super::Outcome>) {
    let mut rows = Vec::new();
    let mut emitted = Vec::new();
    let mut delivered_first_pass = 0i64;
    let mut delivered_by_org: HashMap<Uuid, i64> = HashMap::new();
    let mut report: Vec<super::Outcome> = Vec::new();
    for (index, (item, done)) in items.iter().zip(results).enumerate() {
        let is_new = index >= first_new;
        emitted.extend(done.emitted);
        let attempts = item.row.as_ref().map_or(0, |r| r.attempts);
        let base = |status: Status| DeliveryRow {
            id: item.id,
            event_id: item.event.id,
            organization_id: item.event.organization_id,
            integration_id: integration.id.clone(),
            route_event: item.route.on.clone(),
            route_ordinal: item.route.ordinal as i32,
            route_name: Some(item.route.recorded_name().to_owned()),
            source_product: integration.source.clone(),
            target_product: integration.target.clone(),
            status,
            attempts: attempts + 1,
            next_attempt_at: now,
            last_error: item.row.as_ref().and_then(|r| r.last_error.clone()),
            error_step: item.row.as_ref().and_then(|r| r.error_step),
            generation: Some(generation.number as i64),
            lane: lane.lane,
            order_key: Some(item.key.clone()),
            position: item.position,
            epoch: item.row.as_ref().map_or(0, |r| r.epoch),
        };
        if let Some(status) = done.result.status() {
            report.push(super::Outcome {
                id: item.id,
                event_id: item.event.id,
                organization_id: item.event.organization_id,
                event: item.event.event.clone(),
                integration: integration.id.clone(),
                status,
            });
        }
        match done.result {
            Result_::Delivered => {
                *delivered_by_org
                    .entry(item.event.organization_id)
                    .or_default() += 1;
                if is_new {
                    delivered_first_pass += 1;
                } else {
                    rows.push(base(Status::Delivered));
                }
            }
            Result_::Skipped(reason) => {
                rows.push(DeliveryRow {
                    last_error: Some(reason),
                    error_step: None,
                    ..base(Status::Skipped)
                });
            }
            Result_::Retry { error, step, at } => {
                rows.push(DeliveryRow {
                    next_attempt_at: at,
                    last_error: Some(error),
                    error_step: step.map(|s| s as i32 + 1),
                    ..base(Status::Retrying)
                });
                *due = Some(due.map_or(at, |d| d.min(at)));
            }
            Result_::Dead { error, step } => {
                tracing::warn!(delivery = %item.id, integration = %integration.id, event = %item.event.id, %error, "delivery dead-lettered");
                rows.push(DeliveryRow {
                    last_error: Some(error),
                    error_step: step.map(|s| s as i32 + 1),
                    ..base(Status::Dead)
                });
            }
            Result_::Queued => {
                if item.row.is_none() {
                    rows.push(DeliveryRow {
                        attempts: 0,
                        ..base(Status::Pending)
                    });
                }
            }
        }
    }
    let first_new_ids: HashSet<Uuid> = items[first_new..].iter().map(|i| i.id).collect();
    let (made, updated): (Vec<DeliveryRow>, Vec<DeliveryRow>) = rows
        .into_iter()
        .partition(|r| first_new_ids.contains(&r.id));
    let bookkeeping = Bookkeeping {
        cursor,
        updated,
        made,
        emitted,
        delivered: delivered_by_org.into_iter().collect(),
        delivered_first_pass,
    };
    (bookkeeping, report)
}

/// Writes a batch's bookkeeping in busbar's transaction; `batches` is
/// added to the lane's count of batches applied in another database.
async fn apply(
    tx: &mut DbTx,
    lane: &LaneId,
    bookkeeping: &Bookkeeping,
    batches: i64,
    now: Time,
) -> Result<(), StoreError> {
    if !bookkeeping.emitted.is_empty() {
        // Each was checked against the log in its delivery's run: an id
        // stored with other content failed its delivery there. Appending
        // is idempotent by id.
        log::append(tx, &bookkeeping.emitted, now).await?;
    }
    lanes::write_rows(tx, &bookkeeping.updated, false, now).await?;
    lanes::write_rows(tx, &bookkeeping.made, true, now).await?;
    lanes::count_delivered(tx, &lane.integration, &bookkeeping.delivered, now).await?;
    lanes::advance(
        tx,
        &lane.integration,
        lane.lane,
        &bookkeeping.cursor,
        bookkeeping.delivered_first_pass,
        batches,
        now,
    )
    .await
}

/// A transaction begun in an integration's target database.
enum Elsewhere {
    /// Its progress row is locked at busbar's number: run the batch.
    Ready(TargetTx),
    /// It is one batch ahead (a process committed there and died before
    /// busbar's commit): apply what it stored instead of running anything.
    Ahead(TargetTx, Box<Bookkeeping>),
}

/// Begins the target's transaction of a lane whose busbar row is `row`,
/// and compares the batch numbers: equal, or the target one ahead with
/// the bookkeeping to apply. Any other difference means the two databases
/// do not belong together (one of them was restored): an error naming
/// both numbers.
async fn begin_elsewhere(
    target: &TargetDb,
    installation: &Uuid,
    lane: &LaneId,
    row: &lanes::LaneRow,
) -> Result<Elsewhere, StoreError> {
    let mut dtx = target.begin().await?;
    let progress = match dtx
        .lock_progress(
            &progress_key(installation, &lane.integration),
            &lane.integration,
            lane.lane,
            row.batch_seq,
        )
        .await
    {
        Ok(progress) => progress,
        Err(error) => {
            target.failed(&error);
            let _ = dtx.rollback().await;
            return Err(error);
        }
    };
    if progress.batch_seq == row.batch_seq {
        return Ok(Elsewhere::Ready(dtx));
    }
    if progress.batch_seq == row.batch_seq + 1
        && let Some(stored) = progress.outcome
    {
        let bookkeeping: Bookkeeping = serde_json::from_value(stored).map_err(|e| {
            StoreError::Invalid(format!(
                "lane {lane}: the progress row in database `{}` holds bookkeeping busbar cannot read: {e}",
                target.name
            ))
        })?;
        return Ok(Elsewhere::Ahead(dtx, Box::new(bookkeeping)));
    }
    let _ = dtx.rollback().await;
    Err(StoreError::Moved(format!(
        "lane {lane}: database `{}` has applied {} batches of this lane and busbar's own database \
         records {}: one of the two was restored or replaced. Nothing runs on this lane until they \
         agree; see docs/DATABASES.md, \"When the two databases disagree\"",
        target.name, progress.batch_seq, row.batch_seq
    )))
}

/// Applies the bookkeeping a target stored for a batch busbar did not
/// record (a crash between the two commits), and ends the visit: the
/// batch read this time is read again at the next.
async fn finish_elsewhere(
    shared: &Shared,
    lane: &LaneId,
    memory: &mut Memory,
    mut tx: DbTx,
    dtx: TargetTx,
    bookkeeping: Bookkeeping,
    now: Time,
) -> Result<Visit, StoreError> {
    // The progress row stays locked until busbar has committed: no other
    // process can run a batch on the target meanwhile.
    apply(&mut tx, lane, &bookkeeping, 1, now).await?;
    tx.commit().await?;
    let _ = dtx.rollback().await;
    tracing::info!(
        lane = %lane,
        emitted = bookkeeping.emitted.len(),
        "applied the bookkeeping of a batch the target database committed before busbar did"
    );
    *memory = Memory::default();
    if !bookkeeping.emitted.is_empty() {
        shared.wake_for(bookkeeping.emitted.iter().map(|e| &e.envelope));
    }
    Ok(Visit {
        more: true,
        due: None,
    })
}

/// Whether a lane at `cursor` has read everything the old partitioning
/// holds: its batch is done at the new one's tick.
fn at_barrier(cursor: &Cursor, next: &Partitioning) -> bool {
    cursor.batch_done() && cursor.to_tick >= next.from.id
}

/// Switches every lane of the integration to the `next` partitioning when
/// all of them have reached its tick (this one at `start`): in this
/// transaction, with the other lanes taken (without waiting: a lane being
/// worked elsewhere means "not now"), the open rows get their new order
/// key and lane, and every lane its new version. Per-key order holds
/// across the switch: a key's events before the tick were all read by the
/// old lanes; those still waiting (open rows) now block their new key's
/// later events in its new lane.
async fn switch(
    shared: &Shared,
    tx: &mut DbTx,
    lane: &LaneId,
    row: &lanes::LaneRow,
    start: &Cursor,
    next: &Partitioning,
    now: Time,
) -> Result<bool, StoreError> {
    if !lanes::try_take_all(tx, &lane.integration, shared.lanes, lane.lane).await? {
        return Ok(false);
    }
    for (other, cursor, version) in lanes::cursors(tx, &lane.integration).await? {
        if other != lane.lane && (version != row.version || !at_barrier(&cursor, next)) {
            return Ok(false);
        }
    }
    for open in lanes::open_of_integration(tx, &lane.integration).await? {
        let key = next.order_by.key_of(&open.event);
        let new_lane = log::lane_of_key(&key, next.lanes);
        lanes::rekey(tx, open.row.id, &key, new_lane).await?;
    }
    lanes::advance(tx, &lane.integration, lane.lane, start, 0, 0, now).await?;
    lanes::set_version(tx, &lane.integration, next.version).await?;
    Ok(true)
}

/// Reads up to `room` new events from `start`: the rest of its batch, then,
/// when that is done, the batch up to the newest tick. Returns them, the
/// cursor that passes them (and, when the read was not full, every event
/// up to the newest tick), and whether the read was full.
///
/// With a `barrier` (the tick a new partitioning applies from), the lane
/// reads no further than it.
async fn read_new(
    tx: &mut DbTx,
    filter: &log::LaneFilter<'_>,
    start: &Cursor,
    room: i64,
    barrier: Option<&Tick>,
) -> Result<(Vec<log::LogEvent>, Cursor, bool), StoreError> {
    let mut cursor = start.clone();
    let mut read = Vec::new();
    if !cursor.batch_done() {
        read = log::read_batch(tx, filter, &cursor, room).await?;
        if read.len() as i64 >= room {
            cursor.at = read.last().map_or(cursor.at, |e| e.position);
            return Ok((read, cursor, true));
        }
    }
    // The batch is done: the next one runs to the newest tick (or the
    // barrier).
    let latest = match (ticks::latest(tx).await?, barrier) {
        (latest, Some(barrier)) if barrier.id < latest.id => barrier.clone(),
        (latest, _) => latest,
    };
    if latest.id <= cursor.to_tick {
        return Ok((read, cursor.done(), false));
    }
    let next = cursor.next_batch(&latest);
    let left = room - read.len() as i64;
    let more = log::read_batch(tx, filter, &next, left).await?;
    let full = more.len() as i64 >= left;
    read.extend(more);
    let cursor = if full {
        Cursor {
            at: read.last().map_or(Position::ZERO, |e| e.position),
            ..next
        }
    } else {
        Cursor::at_tick(&latest)
    };
    Ok((read, cursor, full))
}

/// Whether an item runs, before looking at its key: a disabled
/// integration skips everything; events published while it was disabled
/// are skipped after it is enabled again.
///
/// A delivery with a row (`asked`: queued after the re-enable, or asked
/// for by an operator) is never "published while disabled".
fn decide(
    integration: &Integration,
    status: &super::IntegrationStatus,
    position: Position,
    asked: bool,
    disabled: bool,
) -> Plan {
    if disabled {
        return Plan::Decided(Result_::Skipped(format!(
            "integration `{}` is disabled",
            integration.id
        )));
    }
    if !asked
        && let Some(skip) = &status.skip_before
        && skip.sees(position)
    {
        return Plan::Decided(Result_::Skipped(format!(
            "published while integration `{}` was disabled",
            integration.id
        )));
    }
    Plan::Run
}

/// The route a row belongs to, by the identity it recorded: its name, or
/// the unnamed route of its event (`""`). A row written before routes had
/// names is found by its position among the event's routes, as it was
/// then. `None`: the integration no longer has that route.
fn route_of<'g>(integration: &'g Integration, row: &DeliveryRow) -> Option<&'g Route> {
    let mut routes = integration
        .routes
        .iter()
        .filter(|r| r.on == row.route_event);
    match row.route_name.as_deref() {
        Some(name) => routes.find(|r| r.recorded_name() == name),
        None => routes.nth(row.route_ordinal as usize),
    }
}

/// How one way of running a batch ended.
enum Attempt {
    /// Every item has its result, in order.
    Done(Vec<Done>),
    /// A delivery's writes must be undone: run again with savepoints.
    Undo,
    /// Two deliveries touched the same row: run again one after another.
    Conflict,
}

type RouteFuture<'a> =
    Pin<Box<dyn Future<Output = Result<RouteOutcome, RouteError<StoreError>>> + Send + 'a>>;

/// Runs every item at once, its database calls flushed together.
async fn run_lockstep(
    generation: &Generation,
    integration: &Integration,
    places: &mut Places<'_>,
    items: &[Item<'_>],
) -> Result<Attempt, StoreError> {
    // One input per event, shared by its deliveries (cheap to clone).
    let mut by_event: HashMap<(Uuid, Uuid), EventInput> = HashMap::new();
    let inputs: Vec<EventInput> = items
        .iter()
        .map(|item| {
            by_event
                .entry((item.event.organization_id, item.event.id))
                .or_insert_with(|| EventInput::new(&item.event))
                .clone()
        })
        .collect();
    let queue: SharedQueue = Default::default();
    let mut executors: Vec<BatchedExecutor> = (0..items.len())
        .map(|i| BatchedExecutor::new(queue.clone(), i))
        .collect();
    let mut runs: Vec<Option<Result<RouteOutcome, RouteError<StoreError>>>> = Vec::new();
    runs.resize_with(items.len(), || None);
    let mut accesses = Accesses::default();
    let flushed = {
        let mut futures: Vec<Option<RouteFuture<'_>>> = items
            .iter()
            .zip(&inputs)
            .zip(executors.iter_mut())
            .map(|((item, input), executor)| match item.plan {
                Plan::Decided(_) => None,
                Plan::Run => {
                    let route = item.route;
                    Some(Box::pin(async move {
                        run_route(route, &generation.templates, input, executor)
                            .await
                            .outcome
                    }) as RouteFuture<'_>)
                }
            })
            .collect();
        loop {
            let mut waiting = 0;
            let mut panicked = false;
            for (i, slot) in futures.iter_mut().enumerate() {
                if let Some(future) = slot {
                    // The context is made per poll: it is not `Send`, and
                    // must not live across the flush below.
                    let polled = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        future
                            .as_mut()
                            .poll(&mut Context::from_waker(Waker::noop()))
                    }));
                    match polled {
                        Ok(Poll::Ready(result)) => {
                            runs[i] = Some(result);
                            *slot = None;
                        }
                        Ok(Poll::Pending) => waiting += 1,
                        Err(_) => {
                            // Safe mode runs each route alone and records
                            // the panic as that delivery's failure.
                            panicked = true;
                            *slot = None;
                        }
                    }
                }
            }
            if panicked {
                break Err(None);
            }
            if waiting == 0 {
                break Ok(());
            }
            if let Err(error) = batch::flush(&queue, places, &mut accesses).await {
                break Err(Some(error));
            }
        }
    };
    if let Err(error) = flushed {
        if let Some(error) = error {
            if error.is_unreachable() {
                return Err(error);
            }
            tracing::debug!(%error, "lockstep batch failed; running it with savepoints");
        }
        return Ok(Attempt::Undo);
    }
    if let Some(conflict) = accesses.conflict() {
        tracing::debug!(%conflict, "lockstep batch touched a row twice; running it one delivery at a time");
        return Ok(Attempt::Conflict);
    }
    let mut done = Vec::with_capacity(items.len());
    for ((item, run), executor) in items.iter().zip(runs).zip(executors) {
        let result = match &item.plan {
            Plan::Decided(result) => Done {
                result: result.clone(),
                emitted: Vec::new(),
                undo: false,
            },
            Plan::Run => conclude(
                generation,
                integration,
                item,
                run.expect("every route ran to the end"),
                executor.wrote,
                executor.emitted,
            ),
        };
        if result.undo {
            return Ok(Attempt::Undo);
        }
        done.push(result);
    }
    // An emitted id already stored with other content fails its delivery:
    // safe mode finds which, and undoes only its writes.
    let emitted: Vec<NewEvent> = done.iter().flat_map(|d| d.emitted.clone()).collect();
    if !emitted.is_empty() && !log::reused(places.own, &emitted).await?.is_empty() {
        return Ok(Attempt::Undo);
    }
    Ok(Attempt::Done(done))
}

/// The failure of a delivery whose emitted events' ids are already in the
/// log with other content (`None`: every emitted event is new, or the same
/// event again).
async fn emitted_elsewhere(
    tx: &mut DbTx,
    emitted: &[NewEvent],
) -> Result<Option<String>, StoreError> {
    if emitted.is_empty() {
        return Ok(None);
    }
    let reused = log::reused(tx, emitted).await?;
    Ok(reused.first().map(|(id, differs)| {
        format!(
            "emitted event {id} is already in the log with other {}: the log and this delivery \
             disagree (a database restored from a backup, or an event published with that id); \
             nothing of this delivery was applied",
            differs.join(" and ")
        )
    }))
}

/// Runs the items one after another; with `safe`, each inside a savepoint,
/// and a failure blocks its key for the rest of the batch.
async fn run_sequential(
    shared: &Shared,
    generation: &Generation,
    integration: &Integration,
    tx: &mut DbTx,
    others: &mut Others<'_>,
    items: &[Item<'_>],
    safe: bool,
) -> Result<Attempt, StoreError> {
    let mut done = Vec::with_capacity(items.len());
    let mut failed_keys: HashSet<&str> = HashSet::new();
    for item in items {
        if let Plan::Decided(result) = &item.plan {
            done.push(Done {
                result: result.clone(),
                emitted: Vec::new(),
                undo: false,
            });
            continue;
        }
        if failed_keys.contains(item.key.as_str()) {
            done.push(Done {
                result: Result_::Queued,
                emitted: Vec::new(),
                undo: false,
            });
            continue;
        }
        if safe {
            others.on_writer(tx, "SAVEPOINT delivery").await?;
        }
        let input = EventInput::new(&item.event);
        let mut executor = LaneExecutor::new(
            TargetExecutor::new(tx, &shared.store.catalog),
            others.by_name(integration),
            &generation.databases,
        );
        let run = CatchUnwind::new(run_route(
            item.route,
            &generation.templates,
            &input,
            &mut executor,
        ))
        .await;
        let wrote = executor.wrote();
        let emitted = executor.take_emitted();
        drop(executor);
        let result = match run {
            Ok(run) => {
                // A database out of reach is an outage, not this
                // delivery's failure: the batch stops, no attempt counted.
                if let Err(RouteError::Executor { error, .. }) = &run.outcome
                    && error.is_unreachable()
                {
                    return Err(StoreError::Unreachable(error.to_string()));
                }
                // A database error may leave the transaction unusable:
                // outside a savepoint, give up on this way.
                let database_failed = matches!(&run.outcome, Err(RouteError::Executor { .. }));
                let mut result =
                    conclude(generation, integration, item, run.outcome, wrote, emitted);
                if !safe && (result.undo || database_failed) {
                    return Ok(Attempt::Undo);
                }
                if let Some(error) = emitted_elsewhere(tx, &result.emitted).await? {
                    if !safe {
                        return Ok(Attempt::Undo);
                    }
                    result = Done {
                        result: Result_::Dead { error, step: None },
                        emitted: Vec::new(),
                        undo: true,
                    };
                }
                result
            }
            Err(message) => {
                if !safe {
                    return Ok(Attempt::Undo);
                }
                Done {
                    result: Result_::Dead {
                        error: format!("internal error: the route panicked: {message}"),
                        step: None,
                    },
                    emitted: Vec::new(),
                    undo: true,
                }
            }
        };
        if safe {
            if result.undo {
                others
                    .on_writer(tx, "ROLLBACK TO SAVEPOINT delivery")
                    .await?;
            }
            others.on_writer(tx, "RELEASE SAVEPOINT delivery").await?;
        }
        let blocks = match &result.result {
            Result_::Retry { .. } => true,
            Result_::Dead { .. } => integration.on_dead == OnDead::Block,
            _ => false,
        };
        if blocks {
            failed_keys.insert(item.key.as_str());
        }
        done.push(result);
    }
    Ok(Attempt::Done(done))
}

/// Turns a route's result into the delivery's result and emitted events.
fn conclude(
    generation: &Generation,
    integration: &Integration,
    item: &Item<'_>,
    run: Result<RouteOutcome, RouteError<StoreError>>,
    wrote: bool,
    emitted: Vec<Emitted>,
) -> Done {
    match run {
        Ok(RouteOutcome::Applied) => {
            let epoch = item.row.as_ref().map_or(0, |r| r.epoch);
            let emitted: Vec<NewEvent> = emitted
                .into_iter()
                .map(|e| NewEvent {
                    envelope: Envelope {
                        id: crate::delivery::emitted_id(item.id, epoch, e.step),
                        source: integration.target.clone(),
                        event: e.event,
                        organization_id: item.event.organization_id,
                        occurred_at: chrono::Utc::now(),
                        data: e.data,
                    },
                    idempotency_key: None,
                    parent_id: Some(item.event.id),
                })
                .collect();
            // An emitted event must honour its contract like a published
            // one; a mapping that breaks it is a permanent failure.
            for event in &emitted {
                let envelope = &event.envelope;
                if let Some(contract) = generation.contracts.get(&envelope.source, &envelope.event)
                    && let Some(first) = contract.violations(&envelope.data).first()
                {
                    let error = format!(
                        "emitted {}/{} breaks its contract: {}: {}",
                        envelope.source, envelope.event, first.pointer, first.message
                    );
                    return Done {
                        result: Result_::Dead { error, step: None },
                        emitted: Vec::new(),
                        undo: true,
                    };
                }
            }
            Done {
                result: Result_::Delivered,
                emitted,
                undo: false,
            }
        }
        Ok(RouteOutcome::Skipped { reason }) => Done {
            result: Result_::Skipped(reason),
            emitted: Vec::new(),
            undo: wrote,
        },
        Err(error) => {
            let attempts = item.row.as_ref().map_or(0, |r| r.attempts) + 1;
            let step = error.step();
            let transient =
                matches!(&error, RouteError::Executor { error, .. } if error.is_transient());
            let message = error.to_string();
            let result = if transient && (attempts as u32) < integration.retry.max_attempts {
                let wait = retry::backoff(&integration.retry, attempts as u32);
                Result_::Retry {
                    error: message,
                    step,
                    at: Time(
                        chrono::Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default(),
                    ),
                }
            } else if transient {
                Result_::Dead {
                    error: format!("gave up after {attempts} attempts: {message}"),
                    step,
                }
            } else {
                Result_::Dead {
                    error: message,
                    step,
                }
            };
            Done {
                result,
                emitted: Vec::new(),
                undo: true,
            }
        }
    }
}

/// Polls a future, turning a panic into an error with its message.
pub(crate) struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> CatchUnwind<F> {
    pub fn new(future: F) -> Self {
        CatchUnwind(Box::pin(future))
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".to_owned());
                Poll::Ready(Err(message))
            }
        }
    }
}
