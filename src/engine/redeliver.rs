//! Redelivery by filter: after a mapping fix, run the deliveries of one
//! integration that match a filter (event name, time range, organization,
//! state `delivered`, `skipped` or `dead`) again, through its lanes, in its
//! order per key. [`crate::store::redeliver`] says how a delivery is put
//! back and which ones match; this module decides when and how much.
//!
//! - [`Engine::redeliver_preview`] counts what [`Engine::redeliver`] would
//!   run, with the same matching (it reads, it writes nothing).
//! - A redelivery runs in a spawned task, so a request that is cancelled (a
//!   client that hangs up, a timeout) never stops it half way.
//! - It works in chunks of [`CHUNK`] events, a transaction each, so a
//!   huge set is never in memory nor in one transaction. Between two
//!   chunks a lane could run a key's redelivered rows and then a new event
//!   of the key, before the key's later redelivered rows exist: so the
//!   integration's lanes wait while a redelivery is written (other
//!   integrations do not), then run the redelivered rows first. On
//!   PostgreSQL a *guard* transaction holds the lanes' rows for the whole
//!   redelivery, in every process (lanes pass over a held lane, `SKIP
//!   LOCKED`); on SQLite, which has no row locks, the engine holds its own
//!   lanes ([`Hold`]). `busbar redeliver` on SQLite cannot hold a running
//!   server's lanes: there a set larger than one chunk may see a key's new
//!   events interleave (docs/API.md says so).
//! - With a request id it is idempotent: `integrations.redeliveries`
//!   records the filter and the counts, each chunk's progress committed
//!   with the chunk; the same id answers with the record (a run that
//!   stopped half way, silent for [`STALE`], is resumed where it stopped).
//!
//! `busbar redeliver` runs the same code without a running engine
//! ([`preview`], [`run`]).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

use super::Engine;
use crate::compile::{Generation, Integration};
use crate::store::events::Status;
use crate::store::log;
use crate::store::redeliver::{self as store, REDELIVERABLE};
use crate::store::types::{Position, Time};
use std::collections::HashMap;

use crate::store::{DbTx, Store, StoreError, states};

pub use crate::store::redeliver::RedeliverFilter;

/// Events per chunk (one transaction each on PostgreSQL).
pub const CHUNK: i64 = 1000;

/// Events read per step of a preview.
const PREVIEW_CHUNK: i64 = 5000;

/// A running redelivery whose record has not moved for this long is taken
/// over by the next call with its request id.
pub const STALE: Duration = Duration::from_secs(120);

/// How long a request id is remembered after its redelivery is done.
pub const REMEMBER: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// How many events and deliveries (one per event and route; usually one
/// per event).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RedeliverCount {
    pub events: u64,
    pub deliveries: u64,
    /// A preview's warning: of the deliveries counted, how many have a
    /// newer applied event of their order key that is not redelivered with
    /// them (after the redelivery, that key holds the older event's
    /// writes). Always 0 in a redelivery's own counts.
    pub newer_applied: u64,
}

impl std::ops::AddAssign for RedeliverCount {
    fn add_assign(&mut self, other: RedeliverCount) {
        self.events += other.events;
        self.deliveries += other.deliveries;
        self.newer_applied += other.newer_applied;
    }
}

/// A redelivery to make.
#[derive(Debug, Clone)]
pub struct RedeliverRequest {
    pub filter: RedeliverFilter,
    /// The caller's id for this request: the same id again answers with
    /// what the first did.
    pub request_id: Option<String>,
    /// Whose request ids these are: the caller's organization (`None`: a
    /// platform key or the command line).
    pub caller: Option<Uuid>,
}

/// What a redelivery did.
#[derive(Debug, Clone, Serialize)]
pub struct Redelivered {
    #[serde(flatten)]
    pub count: RedeliverCount,
    pub request_id: Option<String>,
    /// The request id had been used: nothing was redelivered by this call;
    /// the counts are what the first call did (so far).
    pub repeated: bool,
    /// False while the request id's redelivery is still being written by
    /// another call (the counts are its progress).
    pub finished: bool,
}

/// Why a redelivery was refused.
#[derive(Debug, thiserror::Error)]
pub enum RedeliverError {
    #[error("there is no integration `{0}` in the live generation")]
    UnknownIntegration(String),
    #[error("integration `{integration}` has no route for `{event}`")]
    NotRouted { integration: String, event: String },
    #[error("deliveries that are {} are not redelivered: choose delivered, skipped or dead", .0.as_str())]
    State(Status),
    #[error(
        "integration `{0}` is disabled: its redelivered deliveries would be skipped at once; enable it first"
    )]
    Disabled(String),
    #[error("request id `{0}` was used for another redelivery")]
    RequestReused(String),
    #[error("`latest_per_key` and `from_event` select differently: choose one")]
    TwoModes,
    #[error("event {0} is not in the log as an event of the integration's source")]
    UnknownEvent(Uuid),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Told the counts so far after each chunk (the command line's progress
/// bar).
pub type Progress = Arc<dyn Fn(RedeliverCount) + Send + Sync>;

impl Engine {
    /// How many events and deliveries [`Engine::redeliver`] would run
    /// again for `filter` now.
    pub async fn redeliver_preview(
        &self,
        filter: &RedeliverFilter,
    ) -> Result<RedeliverCount, RedeliverError> {
        preview(self.store(), &self.generation(), filter).await
    }

    /// Runs the deliveries matching the request's filter again, on the
    /// live generation; `progress` hears the counts after each chunk.
    pub async fn redeliver(
        &self,
        request: RedeliverRequest,
        progress: Option<Progress>,
    ) -> Result<Redelivered, RedeliverError> {
        let store = self.store().clone();
        let generation = self.generation();
        let shared = self.shared.clone();
        // Not cancellable: a request that goes away leaves it running to
        // the end, its record telling a retry what it did.
        tokio::spawn(async move {
            // This process's lanes wait while it is written (on SQLite the
            // only hold; on PostgreSQL the guard holds every process's),
            // and are woken when it is whole.
            let _hold = Hold::new(shared, &request.filter.integration);
            run(store, generation, request, progress).await
        })
        .await
        .map_err(|e| {
            RedeliverError::Store(StoreError::Invalid(format!(
                "internal error: redelivery task failed: {e}"
            )))
        })?
    }
}

/// The integration the filter names, once the filter is checked.
fn checked<'g>(
    generation: &'g Generation,
    filter: &RedeliverFilter,
) -> Result<&'g Integration, RedeliverError> {
    let integration = generation
        .integration(&filter.integration)
        .ok_or_else(|| RedeliverError::UnknownIntegration(filter.integration.clone()))?;
    if let Some(event) = &filter.event
        && integration.routes_for(event).next().is_none()
    {
        return Err(RedeliverError::NotRouted {
            integration: integration.id.clone(),
            event: event.clone(),
        });
    }
    if let Some(state) = filter.statuses.iter().find(|s| !REDELIVERABLE.contains(s)) {
        return Err(RedeliverError::State(*state));
    }
    if filter.latest_per_key && filter.from_event.is_some() {
        return Err(RedeliverError::TwoModes);
    }
    Ok(integration)
}

/// [`Engine::redeliver_preview`] on `store` with `generation`'s definition
/// of the integration.
pub async fn preview(
    store: &Store,
    generation: &Generation,
    filter: &RedeliverFilter,
) -> Result<RedeliverCount, RedeliverError> {
    let integration = checked(generation, filter)?;
    let lane_count = log::lanes_for(store.dialect());
    let mut tx = store.begin_read().await?;
    let lanes = store::lanes(&mut tx, &integration.id).await?;
    let selection = store::Selection {
        integration,
        lane_count,
        lanes: &lanes,
        filter,
        bound: store::bound(&lanes),
    };
    let narrowing = narrowing(&mut tx, &selection).await?;
    let mut after = Position::ZERO;
    let mut count = RedeliverCount::default();
    let mut selected: Vec<(String, Position, uuid::Uuid)> = Vec::new();
    loop {
        let mut scanned = store::scan(&mut tx, &selection, after, PREVIEW_CHUNK, true).await?;
        narrowing.apply(&mut scanned);
        count.events += scanned.events;
        count.deliveries += scanned.chosen.len() as u64;
        selected.extend(
            scanned
                .chosen
                .iter()
                .map(|c| (c.order_key.clone(), c.position, c.id)),
        );
        match scanned.last {
            Some(last) if scanned.full => after = last,
            _ => break,
        }
    }
    count.newer_applied = newer_applied(&mut tx, &selection, &selected).await?;
    tx.rollback().await?;
    Ok(count)
}

/// What the filter's mode keeps, worked out before the selection is
/// written: for "the latest per key", a scan of the whole selection first
/// (its memory grows with the number of keys); for "from this event on",
/// the event's key and position.
async fn narrowing(
    tx: &mut DbTx,
    selection: &store::Selection<'_>,
) -> Result<store::Narrowing, RedeliverError> {
    let filter = selection.filter;
    if let Some(event) = filter.from_event {
        let anchor = store::anchor(tx, selection.integration, event, filter.organization).await?;
        let (key, position) = anchor.ok_or(RedeliverError::UnknownEvent(event))?;
        return Ok(store::Narrowing::From { key, position });
    }
    if !filter.latest_per_key {
        return Ok(store::Narrowing::All);
    }
    let mut latest: HashMap<(String, String, String), Position> = HashMap::new();
    let mut after = Position::ZERO;
    loop {
        let scanned = store::scan(tx, selection, after, PREVIEW_CHUNK, true).await?;
        for chosen in &scanned.chosen {
            let newest = latest
                .entry(store::route_key(chosen))
                .or_insert(chosen.position);
            *newest = (*newest).max(chosen.position);
        }
        match scanned.last {
            Some(last) if scanned.full => after = last,
            _ => break,
        }
    }
    Ok(store::Narrowing::Latest(latest))
}

/// Of `selected` (order key, position, delivery id), how many have a
/// newer applied delivery of their key, of any event the integration
/// routes, that is not itself selected: redelivering them leaves their key
/// holding an older event's writes. One scan of the applied deliveries.
async fn newer_applied(
    tx: &mut DbTx,
    selection: &store::Selection<'_>,
    selected: &[(String, Position, uuid::Uuid)],
) -> Result<u64, RedeliverError> {
    if selected.is_empty() {
        return Ok(0);
    }
    let applied_filter = RedeliverFilter {
        integration: selection.filter.integration.clone(),
        statuses: vec![Status::Delivered],
        organization: selection.filter.organization,
        ..RedeliverFilter::default()
    };
    let applied_selection = store::Selection {
        filter: &applied_filter,
        ..*selection
    };
    let mut newest: HashMap<String, (Position, uuid::Uuid)> = HashMap::new();
    let mut after = Position::ZERO;
    loop {
        let scanned = store::scan(tx, &applied_selection, after, PREVIEW_CHUNK, true).await?;
        for chosen in scanned.chosen {
            let entry = newest
                .entry(chosen.order_key.clone())
                .or_insert((chosen.position, chosen.id));
            if chosen.position > entry.0 {
                *entry = (chosen.position, chosen.id);
            }
        }
        match scanned.last {
            Some(last) if scanned.full => after = last,
            _ => break,
        }
    }
    let ids: std::collections::HashSet<uuid::Uuid> = selected.iter().map(|s| s.2).collect();
    Ok(selected
        .iter()
        .filter(|(key, position, _)| {
            newest
                .get(key)
                .is_some_and(|(newer, id)| newer > position && !ids.contains(id))
        })
        .count() as u64)
}

/// For the command line, which reads its own copy of the configuration:
/// how the cluster's current definition of `integration` differs from this
/// one (`None`: the same, or none recorded yet).
pub async fn current_definition(
    store: &Store,
    integration: &Integration,
) -> Result<Option<String>, StoreError> {
    let mut tx = store.begin_read().await?;
    let definitions = states::definitions(&mut tx).await?;
    tx.rollback().await?;
    Ok(match definitions.get(&integration.id) {
        None => None,
        Some(Some(fingerprint)) if *fingerprint == integration.fingerprint => None,
        Some(Some(fingerprint)) => Some(format!(
            "its file's SHA-256 there starts {}, here {}",
            &fingerprint[..12.min(fingerprint.len())],
            &integration.fingerprint[..12.min(integration.fingerprint.len())]
        )),
        Some(None) => Some("it was removed from that configuration".to_owned()),
    })
}

/// Where a run starts.
enum Start {
    /// Answer with this and do nothing.
    Answer(Redelivered),
    /// Redeliver the events after `after` and up to `bound`, having done
    /// `done` already.
    Work {
        after: Position,
        bound: Position,
        done: RedeliverCount,
    },
}

/// One call of [`run`]: its request and its id among runs.
struct Call<'r> {
    request: &'r RedeliverRequest,
    /// The filter, normalized (as it is recorded).
    filter: RedeliverFilter,
    scope: String,
    run: Uuid,
}

impl Call<'_> {
    fn key(&self) -> Option<store::RequestKey<'_>> {
        self.request
            .request_id
            .as_deref()
            .map(|id| store::RequestKey {
                scope: &self.scope,
                id,
            })
    }

    fn answer(&self, count: RedeliverCount, repeated: bool, finished: bool) -> Redelivered {
        Redelivered {
            count,
            request_id: self.request.request_id.clone(),
            repeated,
            finished,
        }
    }

    /// What a recorded request id means for this call.
    fn resume(&self, record: &store::Record) -> Result<Start, RedeliverError> {
        if record.filter != self.filter {
            return Err(RedeliverError::RequestReused(
                self.request.request_id.clone().unwrap_or_default(),
            ));
        }
        let count = RedeliverCount {
            events: record.events,
            deliveries: record.deliveries,
            newer_applied: 0,
        };
        if record.done {
            return Ok(Start::Answer(self.answer(count, true, true)));
        }
        let silent = (chrono::Utc::now() - record.updated_at)
            .to_std()
            .unwrap_or_default();
        if silent < STALE {
            // Being written by another call now.
            return Ok(Start::Answer(self.answer(count, true, false)));
        }
        Ok(Start::Work {
            after: record.progress,
            bound: record.bound,
            done: count,
        })
    }

    /// Records the request id for this run, or takes over a run of it that
    /// stopped; without a request id, starts from the beginning.
    async fn claim(&self, tx: &mut DbTx, bound: Position) -> Result<Start, RedeliverError> {
        let fresh = Start::Work {
            after: Position::ZERO,
            bound,
            done: RedeliverCount::default(),
        };
        let Some(key) = self.key() else {
            return Ok(fresh);
        };
        let now = Time::now();
        let forget = Time(now.0 - chrono::Duration::from_std(REMEMBER).unwrap_or_default());
        if store::create_record(tx, key, &self.filter, bound, self.run, now, forget).await? {
            return Ok(fresh);
        }
        // Recorded meanwhile, or stopped half way.
        let Some(record) = store::find_record(tx, key).await? else {
            return Ok(Start::Answer(self.answer(
                RedeliverCount::default(),
                true,
                false,
            )));
        };
        match self.resume(&record)? {
            Start::Work { after, bound, done } => {
                if store::take_over(tx, key, record.updated_at, self.run, now).await? {
                    Ok(Start::Work { after, bound, done })
                } else {
                    Ok(Start::Answer(self.answer(done, true, false)))
                }
            }
            answered => Ok(answered),
        }
    }
}

/// [`Engine::redeliver`] on `store` with `generation`'s definition of the
/// integration, for the command line (and the engine, which also holds
/// its own lanes meanwhile).
pub async fn run(
    store: Store,
    generation: Arc<Generation>,
    request: RedeliverRequest,
    progress: Option<Progress>,
) -> Result<Redelivered, RedeliverError> {
    let integration = checked(&generation, &request.filter)?;
    let call = Call {
        request: &request,
        filter: request.filter.normalized(),
        scope: store::scope_of(request.caller),
        run: Uuid::now_v7(),
    };

    // A request id already done (or being done) answers at once, before
    // anything is locked.
    if let Some(key) = call.key() {
        let mut tx = store.begin_read().await?;
        let found = store::find_record(&mut tx, key).await?;
        tx.rollback().await?;
        if let Some(record) = found
            && let Start::Answer(answer) = call.resume(&record)?
        {
            return Ok(answer);
        }
    }

    // PostgreSQL: the guard holds the integration's lanes, in every
    // process, until the end: session-level advisory locks on a connection
    // of its own, outside any transaction, so it holds no transaction id and
    // no idle-in-transaction timeout can end it half way. (On SQLite the
    // engine holds its own lanes, see `Engine::redeliver`.)
    let lane_count = log::lanes_for(store.dialect());
    let guard = Guard::take(&store, &integration.id, lane_count).await?;
    let lanes = {
        let mut tx = store.begin_read().await?;
        let lanes = store::lanes(&mut tx, &integration.id).await?;
        tx.rollback().await?;
        lanes
    };
    let start = {
        let mut tx = store.begin().await?;
        if disabled(&mut tx, integration).await? {
            tx.rollback().await?;
            guard.release(false).await?;
            return Err(RedeliverError::Disabled(integration.id.clone()));
        }
        let start = call.claim(&mut tx, store::bound(&lanes)).await?;
        tx.commit().await?;
        start
    };
    let (mut after, bound, mut done) = match start {
        Start::Answer(answer) => {
            guard.release(false).await?;
            return Ok(answer);
        }
        Start::Work { after, bound, done } => (after, bound, done),
    };
    let selection = store::Selection {
        integration,
        lane_count,
        lanes: &lanes,
        filter: &call.filter,
        bound,
    };
    let states = call.filter.states();
    let narrowing = {
        let mut tx = store.begin_read().await?;
        let narrowing = narrowing(&mut tx, &selection).await;
        tx.rollback().await?;
        match narrowing {
            Ok(narrowing) => narrowing,
            Err(error) => {
                guard.release(false).await?;
                return Err(error);
            }
        }
    };
    loop {
        let mut tx = store.begin().await?;
        let mut scanned = store::scan(&mut tx, &selection, after, CHUNK, true).await?;
        narrowing.apply(&mut scanned);
        let requeued =
            store::requeue(&mut tx, integration, &scanned.chosen, &states, Time::now()).await?;
        let count = RedeliverCount {
            events: distinct_events(&scanned.chosen, &requeued),
            deliveries: requeued.len() as u64,
            newer_applied: 0,
        };
        let finished = !scanned.full;
        if let Some(key) = call.key() {
            let chunk = store::Progress {
                position: scanned.last.unwrap_or(after),
                events: count.events,
                deliveries: count.deliveries,
                done: finished,
            };
            if !store::record_progress(&mut tx, key, call.run, chunk, Time::now()).await? {
                // Another call took the record over (this one was thought
                // dead): leave the rest to it.
                tx.rollback().await?;
                guard.release(true).await?;
                return Ok(call.answer(done, false, false));
            }
        }
        tx.commit().await?;
        done += count;
        if let Some(progress) = &progress {
            progress(done);
        }
        match scanned.last {
            Some(last) if !finished => after = last,
            _ => break,
        }
    }
    guard.release(true).await?;
    tracing::debug!(
        integration = %integration.id,
        events = done.events,
        deliveries = done.deliveries,
        request_id = request.request_id.as_deref().unwrap_or("-"),
        "redelivered"
    );
    Ok(call.answer(done, false, true))
}

/// Whether the integration is disabled (in its YAML or through the API).
async fn disabled(tx: &mut DbTx, integration: &Integration) -> Result<bool, StoreError> {
    if !integration.enabled {
        return Ok(true);
    }
    Ok(states::load_one(tx, &integration.id)
        .await?
        .is_some_and(|p| p.state == super::State::Disabled))
}

/// What holds an integration's lanes in every process while a redelivery
/// is written (PostgreSQL): session-level advisory locks on a connection
/// of its own. A guard dropped without [`Guard::release`] (an error, a
/// cancelled task) closes its connection instead of returning it to the
/// pool, so the server releases the locks.
struct Guard {
    held: Option<(sqlx::pool::PoolConnection<sqlx::Postgres>, String, i32)>,
}

impl Guard {
    /// Takes every lane of `integration`, waiting for the lane transactions
    /// that hold one to end. Nothing to take on SQLite.
    async fn take(store: &Store, integration: &str, lanes: i32) -> Result<Guard, StoreError> {
        let Some(mut conn) = store.acquire_postgres().await? else {
            return Ok(Guard { held: None });
        };
        let mut guard = Guard { held: None };
        crate::store::lanes::hold_all(&mut conn, integration, lanes).await?;
        guard.held = Some((conn, integration.to_owned(), lanes));
        Ok(guard)
    }

    /// Releases the lanes, waking other processes' lanes with a
    /// notification when rows were written.
    async fn release(mut self, wrote: bool) -> Result<(), StoreError> {
        let Some((mut conn, integration, lanes)) = self.held.take() else {
            return Ok(());
        };
        if wrote {
            sqlx::query("SELECT pg_notify('busbar_deliveries', '')")
                .execute(&mut *conn)
                .await?;
        }
        crate::store::lanes::release_all(&mut conn, &integration, lanes).await
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some((conn, _, _)) = self.held.take() {
            // Closing the connection releases its session locks.
            drop(conn.detach());
        }
    }
}

/// This process's lanes of an integration wait while a redelivery of it is
/// written here (and go on when the last one ends).
struct Hold {
    shared: Arc<super::Shared>,
    integration: String,
}

impl Hold {
    fn new(shared: Arc<super::Shared>, integration: &str) -> Hold {
        *shared
            .redelivering
            .lock()
            .expect("redelivering lock")
            .entry(integration.to_owned())
            .or_default() += 1;
        Hold {
            shared,
            integration: integration.to_owned(),
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut held = self.shared.redelivering.lock().expect("redelivering lock");
        if let Some(count) = held.get_mut(&self.integration) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.integration);
            }
        }
        drop(held);
        self.shared.scheduler.wake_integration(&self.integration);
    }
}

impl super::Shared {
    /// Whether a redelivery of `integration` is being written by this
    /// process: its lanes wait until it is whole.
    pub(crate) fn is_redelivering(&self, integration: &str) -> bool {
        self.redelivering
            .lock()
            .expect("redelivering lock")
            .contains_key(integration)
    }
}

/// How many distinct events the requeued deliveries belong to.
fn distinct_events(chosen: &[store::Chosen], requeued: &[Uuid]) -> u64 {
    let requeued: std::collections::HashSet<&Uuid> = requeued.iter().collect();
    let events: std::collections::HashSet<(Uuid, Uuid)> = chosen
        .iter()
        .filter(|c| requeued.contains(&c.id))
        .map(|c| (c.organization_id, c.event_id))
        .collect();
    events.len() as u64
}
