//! Every read and write the console makes, in one place.
//!
//! The pages never touch the database or the engine themselves: they call
//! the functions here, which call today's [`crate::store::events`],
//! [`crate::store::keys`] and [`Engine`] functions, or run the console's own
//! queries (sessions, search, dead letters grouped by cause). The delivery
//! engine is being rewritten ("delivery v2": per-key ordered lanes with
//! cursors, rows only for exceptions, pause/resume, redeliver by filter, an
//! in-process activity feed); the functions marked `NEEDS ENGINE V2` have an
//! honest temporary implementation on today's engine and say what they must
//! become. Re-pointing the console at the new engine happens in this file
//! alone.
//!
//! Every function that reads events or deliveries takes the organization
//! the caller is limited to (`None`: a platform key, every organization)
//! and filters by it in SQL. Queries are written for PostgreSQL and
//! rewritten for SQLite by [`Dialect::sql`]; the few that build their text
//! from a filter add fixed fragments only, and every value is a bound
//! parameter.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use crate::api::Caller;
use crate::compile::{Generation, StepKind};
use crate::engine::Engine;
use crate::envelope::Envelope;
use crate::on_tx;
use crate::render::RenderReport;
use crate::store::events::{self, DeliveryView, LastError, Status, StoredEvent};
use crate::store::keys::{self, KeyRecord, Scope};
use crate::store::types::{Doc, Id, Time};
use crate::store::{DbTx, Dialect, Store, StoreError};

/// How long a console session lasts after signing in.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 60 * 60);

// ---------------------------------------------------------------------------
// Sessions

/// A signed-in operator, as read back from the session and its key at each
/// request.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub caller: Caller,
    /// The key's public prefix (`bb_<prefix>_…`), to show who is signed in.
    pub key_prefix: String,
    pub key_name: Option<String>,
    pub expires_at: DateTime<Utc>,
}

/// The key record for `presented` when it is a valid, unrevoked key; `None`
/// for anything else (malformed, unknown prefix, wrong secret, revoked), so
/// that the caller cannot tell those apart.
pub async fn verify_key(store: &Store, presented: &str) -> Result<Option<KeyRecord>, StoreError> {
    let presented = presented.trim();
    let Some(prefix) = keys::prefix_of(presented) else {
        // Hash anyway, so a malformed key costs as long as a wrong one.
        let _ = keys::hash(presented);
        return Ok(None);
    };
    let mut tx = store.begin_read().await?;
    let found = keys::find_by_prefix(&mut tx, prefix).await?;
    tx.rollback().await?;
    Ok(match found {
        Some(record) if record.verify(presented) => Some(record),
        Some(_) => None,
        None => {
            let _ = keys::hash(presented);
            None
        }
    })
}

/// Stores a new session for `key_id` under the hash of its token, and
/// deletes expired sessions while at it.
pub async fn open_session(
    store: &Store,
    token_hash: &str,
    key_id: Uuid,
    expires_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let now = Time::now();
    let mut tx = store.begin().await?;
    let purge = AssertSqlSafe(
        tx.dialect()
            .sql("DELETE FROM integrations.console_sessions WHERE expires_at <= $1"),
    );
    on_tx!(&mut tx, |conn| sqlx::query(purge)
        .bind(now)
        .execute(conn)
        .await
        .map(|_| ()))?;
    let insert = AssertSqlSafe(tx.dialect().sql(
        "INSERT INTO integrations.console_sessions (token_hash, key_id, created_at, expires_at) \
         VALUES ($1, $2, $3, $4)",
    ));
    on_tx!(&mut tx, |conn| sqlx::query(insert)
        .bind(token_hash)
        .bind(Id(key_id))
        .bind(now)
        .bind(Time(expires_at))
        .execute(conn)
        .await
        .map(|_| ()))?;
    tx.commit().await
}

/// The session stored under `token_hash`, if it has not expired and its
/// key is not revoked. One indexed lookup per request: the key's scopes
/// and organization are read fresh every time.
pub async fn find_session(
    store: &Store,
    token_hash: &str,
) -> Result<Option<SessionRecord>, StoreError> {
    let mut tx = store.begin_read().await?;
    let sql = AssertSqlSafe(tx.dialect().sql(
        "SELECT k.id, k.prefix, k.name, k.organization_id, k.scopes, s.expires_at \
           FROM integrations.console_sessions s JOIN integrations.api_keys k ON k.id = s.key_id \
          WHERE s.token_hash = $1 AND s.expires_at > $2 AND k.revoked_at IS NULL",
    ));
    type Row = (Id, String, Option<String>, Option<Id>, String, Time);
    let row: Option<Row> = on_tx!(&mut tx, |conn| sqlx::query_as(sql)
        .bind(token_hash)
        .bind(Time::now())
        .fetch_optional(conn)
        .await)?;
    tx.rollback().await?;
    Ok(row.map(
        |(id, prefix, name, organization, scopes, expires)| SessionRecord {
            caller: Caller {
                key_id: id.0,
                organization: organization.map(|o| o.0),
                scopes: scopes
                    .split(',')
                    .filter_map(|s| s.parse::<Scope>().ok())
                    .collect(),
            },
            key_prefix: prefix,
            key_name: name,
            expires_at: expires.0,
        },
    ))
}

/// Ends a session (signing out).
pub async fn close_session(store: &Store, token_hash: &str) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    let sql = AssertSqlSafe(
        tx.dialect()
            .sql("DELETE FROM integrations.console_sessions WHERE token_hash = $1"),
    );
    on_tx!(&mut tx, |conn| sqlx::query(sql)
        .bind(token_hash)
        .execute(conn)
        .await
        .map(|_| ()))?;
    tx.commit().await
}

// ---------------------------------------------------------------------------
// Integrations: state, numbers, source

/// Whether an integration takes events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowState {
    /// Events are delivered.
    Enabled,
    /// Events wait, nothing skipped, until it is resumed.
    Paused,
    /// New events get no delivery.
    Disabled,
}

/// A change an operator asks for on an integration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateChange {
    Enable,
    Disable,
    Pause,
    Resume,
}

/// Until engine v2, pausing is disabling (and resuming is enabling): the
/// console says so on the confirmation, because a disable skips the
/// pending deliveries that a pause would keep waiting.
///
/// NEEDS ENGINE V2: false once [`change_state`] pauses for real.
pub const PAUSE_IS_DISABLE: bool = true;

/// An integration's state now.
///
/// NEEDS ENGINE V2: must return the engine's state (enabled, paused or
/// disabled, the persisted one combined with `enabled:` in YAML). Today's
/// engine knows only enabled and disabled, so this never says `Paused`.
pub fn flow_state(engine: &Engine, integration: &str) -> FlowState {
    if engine.is_enabled(integration) {
        FlowState::Enabled
    } else {
        FlowState::Disabled
    }
}

/// Whether the integration's YAML says `enabled: false` (then no change
/// through the console or the API turns it on).
pub fn disabled_in_yaml(engine: &Engine, integration: &str) -> bool {
    engine
        .generation()
        .integration(integration)
        .is_some_and(|i| !i.enabled)
}

/// Enables, disables, pauses or resumes an integration, persisted.
///
/// NEEDS ENGINE V2: `Pause` must hold the integration's events back
/// (nothing skipped) and `Resume` must let them run, through the engine's
/// pause/resume. Until then they are disable and enable
/// ([`PAUSE_IS_DISABLE`]).
pub async fn change_state(
    engine: &Engine,
    integration: &str,
    change: StateChange,
) -> Result<(), StoreError> {
    let enabled = matches!(change, StateChange::Enable | StateChange::Resume);
    engine.set_enabled(integration, enabled).await
}

/// What the overview shows for one integration.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlowNumbers {
    /// Deliveries that completed as delivered in the last 5 minutes.
    pub delivered_5m: i64,
    /// And in the last hour.
    pub delivered_1h: i64,
    /// Deliveries waiting for their first attempt.
    pub backlog: i64,
    /// Deliveries that failed and wait for another attempt.
    pub retrying: i64,
    pub dead: i64,
    pub last_error: Option<LastErrorView>,
}

/// An integration's most recent failure.
#[derive(Debug, Clone, Serialize)]
pub struct LastErrorView {
    pub message: String,
    pub at: DateTime<Utc>,
    pub event_id: Uuid,
    pub step: Option<i32>,
}

impl From<LastError> for LastErrorView {
    fn from(error: LastError) -> LastErrorView {
        LastErrorView {
            message: error.message,
            at: error.at,
            event_id: error.event_id,
            step: error.step,
        }
    }
}

/// The overview's numbers for every integration, for `organization` (or
/// every organization).
///
/// NEEDS ENGINE V2: in v2 a delivered event leaves no row behind and the
/// backlog is the distance between a lane's cursor and the newest event,
/// so `delivered_5m`/`delivered_1h` must come from the engine's counters
/// (or the activity feed) and `backlog` from the lanes; `retrying` and
/// `dead` stay counts of exception rows. Today all are counted from
/// `integrations.deliveries`, one integration at a time: the exceptions
/// and last error with the existing index `deliveries (integration_id,
/// status)`, the delivered ones by `completed_at` (index wanted:
/// `deliveries (integration_id, status, completed_at)`, which can replace
/// the existing one).
pub async fn flow_numbers(
    store: &Store,
    integrations: &[String],
    organization: Option<Uuid>,
) -> Result<HashMap<String, FlowNumbers>, StoreError> {
    let mut out: HashMap<String, FlowNumbers> = HashMap::new();
    let now = Utc::now();
    let mut tx = store.begin_read().await?;
    // One indexed look per integration (there are few) for each number:
    // both databases then use an index on (integration_id, status, …)
    // instead of grouping the whole table.
    let exceptions = tx.dialect().sql(
        "SELECT status, CASE WHEN attempts > 0 THEN 1 ELSE 0 END, COUNT(*) \
           FROM integrations.deliveries \
          WHERE integration_id = $1 AND status IN ('pending', 'dead') AND ($2 IS NULL OR organization_id = $2) \
          GROUP BY status, CASE WHEN attempts > 0 THEN 1 ELSE 0 END",
    );
    let delivered = tx.dialect().sql(
        "SELECT COALESCE(SUM(CASE WHEN completed_at >= $3 THEN 1 ELSE 0 END), 0), COUNT(*) \
           FROM integrations.deliveries \
          WHERE integration_id = $1 AND status = 'delivered' AND completed_at >= $2 \
            AND ($4 IS NULL OR organization_id = $4)",
    );
    for integration in integrations {
        let rows: Vec<(String, i32, i64)> = on_tx!(&mut tx, |conn| sqlx::query_as(AssertSqlSafe(
            exceptions.clone()
        ))
        .bind(integration.as_str())
        .bind(organization.map(Id))
        .fetch_all(conn)
        .await)?;
        let numbers = out.entry(integration.clone()).or_default();
        for (status, retried, count) in rows {
            match (status.as_str(), retried) {
                ("dead", _) => numbers.dead += count,
                (_, 0) => numbers.backlog += count,
                _ => numbers.retrying += count,
            }
        }
        let (last_5m, last_1h): (i64, i64) = on_tx!(&mut tx, |conn| sqlx::query_as(
            AssertSqlSafe(delivered.clone())
        )
        .bind(integration.as_str())
        .bind(Time(now - chrono::Duration::hours(1)))
        .bind(Time(now - chrono::Duration::minutes(5)))
        .bind(organization.map(Id))
        .fetch_one(conn)
        .await)?;
        numbers.delivered_5m = last_5m;
        numbers.delivered_1h = last_1h;
    }
    // One indexed look per integration (there are few) rather than a
    // window over every exception row.
    let last = tx.dialect().sql(
        "SELECT d.id, d.event_id, d.last_error, d.error_step, d.updated_at \
           FROM integrations.deliveries d \
          WHERE d.integration_id = $1 AND d.status IN ('dead', 'pending') AND d.last_error IS NOT NULL \
            AND ($2 IS NULL OR d.organization_id = $2) \
          ORDER BY d.updated_at DESC, d.id DESC LIMIT 1",
    );
    for integration in integrations {
        type Row = (Id, Id, String, Option<i32>, Time);
        let row: Option<Row> = on_tx!(&mut tx, |conn| sqlx::query_as(AssertSqlSafe(last.clone()))
            .bind(integration.as_str())
            .bind(organization.map(Id))
            .fetch_optional(conn)
            .await)?;
        if let Some((id, event, message, step, at)) = row {
            let error = LastError {
                delivery_id: id.0,
                event_id: event.0,
                message,
                step,
                at: at.0,
            };
            out.entry(integration.clone()).or_default().last_error = Some(error.into());
        }
    }
    tx.rollback().await?;
    Ok(out)
}

/// An integration file as it is on disk now.
#[derive(Debug, Clone, Serialize)]
pub struct IntegrationSource {
    pub path: PathBuf,
    pub text: String,
}

/// The YAML of an integration of the live generation, read from its file.
/// The file may have changed since the generation went live (the last
/// reload's outcome says whether it compiled).
pub async fn integration_source(generation: &Generation, id: &str) -> Option<IntegrationSource> {
    let path = generation.integration(id)?.file.clone();
    let text = tokio::fs::read_to_string(&path).await.ok()?;
    Some(IntegrationSource { path, text })
}

/// Which integrations each integration's `emit` steps feed: `(from, event,
/// to)`, for the flow graph's chain edges.
pub fn emit_links(generation: &Generation) -> Vec<(String, String, String)> {
    let mut links = Vec::new();
    for integration in &generation.integrations {
        let mut emitted: Vec<&str> = Vec::new();
        for route in &integration.routes {
            for step in &route.steps {
                if let StepKind::Emit { event, .. } = &step.kind
                    && !emitted.contains(&event.as_str())
                {
                    emitted.push(event);
                }
            }
        }
        for event in emitted {
            let mut consumers: Vec<&str> = generation
                .routes(&integration.target, event)
                .map(|(consumer, _)| consumer.id.as_str())
                .collect();
            consumers.dedup();
            for consumer in consumers {
                links.push((
                    integration.id.clone(),
                    event.to_owned(),
                    consumer.to_owned(),
                ));
            }
        }
    }
    links
}

// ---------------------------------------------------------------------------
// Deliveries and dead letters

/// A delivery with the name of its event, for lists.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRow {
    #[serde(flatten)]
    pub delivery: DeliveryView,
    pub event_name: String,
}

const DELIVERY_COLUMNS: &str = "d.id, d.event_id, d.organization_id, d.integration_id, d.route_event, d.route_ordinal, \
     d.source_product, d.target_product, d.status, d.attempts, d.next_attempt_at, d.last_error, d.error_step, \
     d.generation, d.created_at, d.updated_at, d.completed_at";

/// A row of `integrations.deliveries`, as the console reads it.
#[derive(sqlx::FromRow)]
struct DeliveryTuple {
    id: Id,
    event_id: Id,
    organization_id: Id,
    integration_id: String,
    route_event: String,
    route_ordinal: i32,
    source_product: String,
    target_product: String,
    status: String,
    attempts: i32,
    next_attempt_at: Time,
    last_error: Option<String>,
    error_step: Option<i32>,
    generation: Option<i64>,
    created_at: Time,
    updated_at: Time,
    completed_at: Option<Time>,
}

fn delivery_view(row: DeliveryTuple) -> DeliveryView {
    DeliveryView {
        id: row.id.0,
        event_id: row.event_id.0,
        organization_id: row.organization_id.0,
        integration: row.integration_id,
        route_event: row.route_event,
        route_ordinal: row.route_ordinal,
        source: row.source_product,
        target: row.target_product,
        status: Status::parse(&row.status).unwrap_or(Status::Pending),
        attempts: row.attempts,
        next_attempt_at: row.next_attempt_at.0,
        last_error: row.last_error,
        error_step: row.error_step,
        generation: row.generation,
        created_at: row.created_at.0,
        updated_at: row.updated_at.0,
        completed_at: row.completed_at.map(|t| t.0),
        order_key: None,
        recorded: true,
        waiting_on: None,
    }
}

/// An integration's most recent deliveries, newest first.
///
/// NEEDS ENGINE V2: delivered events leave no row in v2; this must return
/// the integration's recent outcomes from the activity feed (or the
/// lanes' cursors plus the exception rows). Today it reads
/// `integrations.deliveries` (index wanted:
/// `deliveries (integration_id, created_at DESC)`).
pub async fn recent_deliveries(
    store: &Store,
    integration: &str,
    organization: Option<Uuid>,
    limit: i64,
) -> Result<Vec<DeliveryView>, StoreError> {
    let mut tx = store.begin_read().await?;
    let sql = AssertSqlSafe(tx.dialect().sql(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM integrations.deliveries d \
          WHERE d.integration_id = $1 AND ($2 IS NULL OR d.organization_id = $2) \
          ORDER BY d.created_at DESC, d.id DESC LIMIT $3"
    )));
    let rows: Vec<DeliveryTuple> = on_tx!(&mut tx, |conn| sqlx::query_as(sql)
        .bind(integration)
        .bind(organization.map(Id))
        .bind(limit)
        .fetch_all(conn)
        .await)?;
    tx.rollback().await?;
    Ok(rows.into_iter().map(delivery_view).collect())
}

/// The most dead deliveries read for grouping by cause.
pub const DEAD_LETTER_LIMIT: i64 = 5_000;

/// An integration's dead deliveries (of `organization`), newest first, at
/// most [`DEAD_LETTER_LIMIT`]. Dead deliveries stay rows in v2, so this
/// keeps its shape (index: `deliveries (integration_id, status)`, which
/// exists).
pub async fn dead_letters(
    store: &Store,
    integration: &str,
    organization: Option<Uuid>,
) -> Result<Vec<DeliveryView>, StoreError> {
    let mut tx = store.begin_read().await?;
    let sql = AssertSqlSafe(tx.dialect().sql(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM integrations.deliveries d \
          WHERE d.integration_id = $1 AND d.status = 'dead' AND ($2 IS NULL OR d.organization_id = $2) \
          ORDER BY d.updated_at DESC, d.id DESC LIMIT $3"
    )));
    let rows: Vec<DeliveryTuple> = on_tx!(&mut tx, |conn| sqlx::query_as(sql)
        .bind(integration)
        .bind(organization.map(Id))
        .bind(DEAD_LETTER_LIMIT)
        .fetch_all(conn)
        .await)?;
    tx.rollback().await?;
    Ok(rows.into_iter().map(delivery_view).collect())
}

/// Puts dead deliveries back in the queue (those of `ids` that are dead
/// and, when `organization` is given, that organization's), in one
/// transaction. Returns how many were requeued.
pub async fn replay_deliveries(
    engine: &Engine,
    ids: &[Uuid],
    organization: Option<Uuid>,
) -> Result<u64, StoreError> {
    engine
        .replay(crate::store::lanes::ReplayFilter {
            deliveries: Some(ids.to_vec()),
            organization,
            ..Default::default()
        })
        .await
}

/// One point in a delivery's history.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    /// `created`, `failed`, `waiting`, `delivered`, `skipped`, `dead`.
    pub kind: &'static str,
    pub text: String,
}

/// A delivery's timeline of attempts and errors.
///
/// NEEDS ENGINE V2: must list every attempt (time, outcome, error, step,
/// generation) from the engine's attempt history. Today only the latest
/// attempt's error is stored, so the timeline is what the delivery row
/// says: created, the number of attempts with the last error, the next
/// attempt if one is due, and how it ended.
pub fn delivery_timeline(delivery: &DeliveryView) -> Vec<TimelineEntry> {
    let mut entries = vec![TimelineEntry {
        at: delivery.created_at,
        kind: "created",
        text: format!(
            "routed to {} (route {} for {})",
            delivery.integration,
            delivery.route_ordinal + 1,
            delivery.route_event
        ),
    }];
    let failed = delivery.last_error.is_some()
        && matches!(delivery.status, Status::Retrying | Status::Dead);
    if failed {
        let step = delivery
            .error_step
            .map(|s| format!(" at step {s}"))
            .unwrap_or_default();
        entries.push(TimelineEntry {
            at: delivery.updated_at,
            kind: "failed",
            text: format!(
                "attempt {} failed{step}: {}",
                delivery.attempts.max(1),
                delivery.last_error.as_deref().unwrap_or_default()
            ),
        });
    }
    match delivery.status {
        Status::Pending | Status::Retrying => entries.push(TimelineEntry {
            at: delivery.next_attempt_at,
            kind: "waiting",
            text: format!("attempt {} is due", delivery.attempts + 1),
        }),
        Status::Delivered => entries.push(TimelineEntry {
            at: delivery.completed_at.unwrap_or(delivery.updated_at),
            kind: "delivered",
            text: format!(
                "delivered after {} attempt(s), generation {}",
                delivery.attempts.max(1),
                delivery
                    .generation
                    .map_or_else(|| "?".to_owned(), |g| g.to_string())
            ),
        }),
        Status::Skipped => entries.push(TimelineEntry {
            at: delivery.completed_at.unwrap_or(delivery.updated_at),
            kind: "skipped",
            text: format!(
                "skipped: {}",
                delivery
                    .last_error
                    .as_deref()
                    .unwrap_or("no reason recorded")
            ),
        }),
        Status::Dead => entries.push(TimelineEntry {
            at: delivery.completed_at.unwrap_or(delivery.updated_at),
            kind: "dead",
            text: "dead letter: waits for a fix and a replay".to_owned(),
        }),
    }
    entries
}

// ---------------------------------------------------------------------------
// Events

/// What the events page searches by. Every field is optional.
#[derive(Debug, Clone, Default)]
pub struct EventSearch {
    /// The organization the caller is limited to, or a platform key's
    /// choice.
    pub organization: Option<Uuid>,
    pub source: Option<String>,
    pub event: Option<String>,
    /// Only events with a delivery in this state.
    pub status: Option<Status>,
    /// With `status`: only that integration's deliveries count.
    pub integration: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// A payload field (dotted path under `data`) and the value it holds.
    pub field: Option<(Vec<String>, String)>,
    /// Only events published before this one (`seq`): the next page.
    pub before_seq: Option<i64>,
}

/// A value bound to a query built from a filter.
enum Arg {
    Id(Uuid),
    Text(String),
    Time(DateTime<Utc>),
    Int(i64),
    Doc(Value),
}

/// A query text and its arguments, `$n` numbered in order.
#[derive(Default)]
struct Built {
    conditions: Vec<String>,
    args: Vec<Arg>,
}

impl Built {
    /// Adds an argument; returns its placeholder.
    fn arg(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        format!("${}", self.args.len())
    }
}

macro_rules! bind_args {
    ($query:expr, $args:expr) => {{
        let mut query = $query;
        for arg in $args {
            query = match arg {
                Arg::Id(v) => query.bind(Id(*v)),
                Arg::Text(v) => query.bind(v.clone()),
                Arg::Time(v) => query.bind(Time(*v)),
                Arg::Int(v) => query.bind(*v),
                Arg::Doc(v) => query.bind(Doc(v.clone())),
            };
        }
        query
    }};
}

const EVENT_COLUMNS: &str = "e.id, e.organization_id, e.source_product, e.event_name, e.event_data, \
     e.occurred_at, e.created_at, e.processed_at, e.parent_id, e.seq, e.xid";

type EventTuple = (
    Id,
    Id,
    String,
    String,
    Doc,
    Time,
    Time,
    Option<Time>,
    Option<Id>,
    i64,
    i64,
);

fn stored_event(row: EventTuple) -> StoredEvent {
    let (id, organization, source, event, data, occurred, created, processed, parent, seq, xid) =
        row;
    StoredEvent {
        envelope: Envelope {
            id: id.0,
            source,
            event,
            organization_id: organization.0,
            occurred_at: occurred.0,
            data: data.0,
        },
        created_at: created.0,
        processed_at: processed.map(|t| t.0),
        parent_id: parent.map(|p| p.0),
        seq,
        position: crate::store::types::Position::new(xid, seq),
    }
}

/// An event in a list, with its deliveries counted by state.
#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    pub event: StoredEvent,
    pub counts: HashMap<&'static str, i64>,
}

/// Events matching `search`, newest first, at most `limit`.
///
/// Indexes: `events (organization_id, seq DESC)` and `events (created_at
/// DESC)` exist; wanted on PostgreSQL: `events (seq DESC)` (a platform
/// key's newest events: `seq` has no index there), `events
/// (organization_id, created_at DESC)` (a time range), a GIN index on
/// `event_data` (`jsonb_path_ops`) for the payload field, which is
/// searched by containment (`@>`); on both databases `deliveries (status)
/// WHERE status <> 'delivered'` for the state filter (the query repeats
/// that condition so that SQLite, too, may use the partial index).
/// Measured with them on 1,000,000 events: every search under 30 ms,
/// except a payload field on SQLite, which reads every event (0.6 s).
///
/// NEEDS ENGINE V2: the status filter looks for a delivery row in that
/// state; in v2 `delivered` (and `pending` behind a cursor) leave no row,
/// so those two must be answered from the lanes' cursors.
pub async fn search_events(
    store: &Store,
    search: &EventSearch,
    limit: i64,
) -> Result<Vec<EventRow>, StoreError> {
    let dialect = store.dialect();
    let mut built = Built::default();
    if let Some(organization) = search.organization {
        let p = built.arg(Arg::Id(organization));
        built.conditions.push(format!("e.organization_id = {p}"));
    }
    if let Some(source) = &search.source {
        let p = built.arg(Arg::Text(source.clone()));
        built.conditions.push(format!("e.source_product = {p}"));
    }
    if let Some(event) = &search.event {
        let p = built.arg(Arg::Text(event.clone()));
        built.conditions.push(format!("e.event_name = {p}"));
    }
    if let Some(since) = search.since {
        let p = built.arg(Arg::Time(since));
        built.conditions.push(format!("e.created_at >= {p}"));
    }
    if let Some(until) = search.until {
        let p = built.arg(Arg::Time(until));
        built.conditions.push(format!("e.created_at < {p}"));
    }
    if let Some(seq) = search.before_seq {
        let p = built.arg(Arg::Int(seq));
        built.conditions.push(format!("e.seq < {p}"));
    }
    // The deliveries in an exception state are few: find them first (a
    // materialized set, from the index on exception rows) rather than
    // testing every event, newest first, for one. Delivered ones are most
    // of the table: there testing each event finds a page at once.
    let mut hits = String::new();
    if let Some(status) = search.status {
        let p = built.arg(Arg::Text(status.as_str().to_owned()));
        let integration = match &search.integration {
            Some(integration) => {
                let q = built.arg(Arg::Text(integration.clone()));
                format!(" AND d.integration_id = {q}")
            }
            None => String::new(),
        };
        if status == Status::Delivered {
            built.conditions.push(format!(
                "EXISTS (SELECT 1 FROM integrations.deliveries d WHERE d.event_id = e.id AND d.status = {p}{integration})"
            ));
        } else {
            hits = format!(
                "WITH hits AS MATERIALIZED (SELECT DISTINCT d.event_id FROM integrations.deliveries d \
                 WHERE d.status <> 'delivered' AND d.status = {p}{integration}) "
            );
            built
                .conditions
                .push("e.id IN (SELECT event_id FROM hits)".to_owned());
        }
    }
    if let Some((path, value)) = &search.field {
        match dialect {
            Dialect::Postgres => {
                // Containment, so a GIN index can answer it: the value as
                // typed (a number, true, false, null) or as text.
                let as_text = nest(path, Value::String(value.clone()));
                let p = built.arg(Arg::Doc(as_text));
                let typed = serde_json::from_str::<Value>(value)
                    .ok()
                    .filter(|v| !v.is_object() && !v.is_array() && !v.is_string());
                match typed {
                    Some(typed) => {
                        let q = built.arg(Arg::Doc(nest(path, typed)));
                        built
                            .conditions
                            .push(format!("(e.event_data @> {p} OR e.event_data @> {q})"));
                    }
                    None => built.conditions.push(format!("e.event_data @> {p}")),
                }
            }
            Dialect::Sqlite => {
                let p = built.arg(Arg::Text(format!("$.{}", path.join("."))));
                let q = built.arg(Arg::Text(value.clone()));
                built.conditions.push(format!(
                    "CAST(json_extract(e.event_data, {p}) AS TEXT) = {q}"
                ));
            }
        }
    }
    let limit_param = built.arg(Arg::Int(limit));
    let condition = if built.conditions.is_empty() {
        "TRUE".to_owned()
    } else {
        built.conditions.join(" AND ")
    };
    // Within a time range, newest by time stored, so the index on
    // (organization_id, created_at) answers it; otherwise by publish order.
    let order = if search.since.is_some() || search.until.is_some() {
        "e.created_at DESC, e.seq DESC"
    } else {
        "e.seq DESC"
    };
    let sql = AssertSqlSafe(dialect.sql(&format!(
        "{hits}SELECT {EVENT_COLUMNS} FROM integrations.events e WHERE {condition} \
          ORDER BY {order} LIMIT {limit_param}"
    )));
    let mut tx = store.begin_read().await?;
    let rows: Vec<EventTuple> =
        on_tx!(&mut tx, |conn| bind_args!(sqlx::query_as(sql), &built.args)
            .fetch_all(conn)
            .await)?;
    let found: Vec<StoredEvent> = rows.into_iter().map(stored_event).collect();
    let ids: Vec<(Uuid, Uuid)> = found
        .iter()
        .map(|e| (e.envelope.organization_id, e.envelope.id))
        .collect();
    let mut counts = events::delivery_counts_of(&mut tx, &ids).await?;
    tx.rollback().await?;
    Ok(found
        .into_iter()
        .map(|event| {
            let counts = counts
                .remove(&(event.envelope.organization_id, event.envelope.id))
                .unwrap_or_default()
                .into_iter()
                .map(|(status, count)| (status.as_str(), count))
                .collect();
            EventRow { event, counts }
        })
        .collect())
}

/// `{"a": {"b": value}}` for the path `a.b`.
fn nest(path: &[String], value: Value) -> Value {
    path.iter()
        .rev()
        .fold(value, |inner, key| serde_json::json!({ key: inner }))
}

/// One event with its deliveries and, recursively, the events they
/// emitted.
#[derive(Debug, Clone, Serialize)]
pub struct EventTree {
    pub event: StoredEvent,
    pub deliveries: Vec<DeliveryView>,
    pub children: Vec<EventTree>,
}

/// How deep the tree of emitted events is followed, and how many events it
/// shows at most.
const TREE_DEPTH: usize = 6;
const TREE_EVENTS: usize = 100;

/// An event visible to `organization` (another organization's event is
/// `None`, as if it did not exist), with its deliveries and the tree of
/// events they emitted.
pub async fn event_tree(
    store: &Store,
    id: Uuid,
    organization: Option<Uuid>,
) -> Result<Option<EventTree>, StoreError> {
    let mut tx = store.begin_read().await?;
    let Some(event) = events::get_event(&mut tx, organization, id)
        .await?
        .into_iter()
        .next()
    else {
        tx.rollback().await?;
        return Ok(None);
    };
    let mut budget = TREE_EVENTS;
    let tree = grow(&mut tx, event, 0, &mut budget).await?;
    tx.rollback().await?;
    Ok(Some(tree))
}

fn grow<'a>(
    tx: &'a mut DbTx,
    event: StoredEvent,
    depth: usize,
    budget: &'a mut usize,
) -> std::pin::Pin<Box<dyn Future<Output = Result<EventTree, StoreError>> + Send + 'a>> {
    Box::pin(async move {
        let deliveries =
            events::deliveries_of(tx, event.envelope.organization_id, event.envelope.id).await?;
        let mut children = Vec::new();
        if depth < TREE_DEPTH {
            for child in
                events::children_of(tx, event.envelope.organization_id, event.envelope.id).await?
            {
                if *budget == 0 {
                    break;
                }
                *budget -= 1;
                children.push(grow(tx, child, depth + 1, budget).await?);
            }
        }
        Ok(EventTree {
            event,
            deliveries,
            children,
        })
    })
}

// ---------------------------------------------------------------------------
// The live tail

/// Something that just happened, for the live tail.
#[derive(Debug, Clone, Serialize)]
pub struct Activity {
    pub at: DateTime<Utc>,
    /// `published`, or a delivery's outcome: `delivered`, `skipped`,
    /// `retrying`, `dead`.
    pub outcome: &'static str,
    pub event_id: Uuid,
    pub organization_id: Uuid,
    pub source: String,
    pub event: String,
    /// For a delivery: its integration.
    pub integration: Option<String>,
    pub attempts: Option<i32>,
    pub error: Option<String>,
}

/// Follows what happens to an organization's (or every organization's)
/// events, for the live tail.
///
/// NEEDS ENGINE V2: must subscribe to the engine's in-process activity
/// feed (published events and delivery outcomes as they commit, in every
/// process on the database) and hand over what arrived since the last
/// call. Until then it polls: the events stored in the last seconds
/// (index `events (created_at DESC)`, which exists) and the deliveries of
/// the events it saw in the last two minutes (index on
/// `deliveries (event_id, …)`, which exists), and reports what changed.
/// It therefore misses the outcome of a replay of an older event.
pub struct ActivityFeed {
    organization: Option<Uuid>,
    /// Events seen, with when they were seen, oldest first.
    tracked: VecDeque<(Uuid, Instant)>,
    tracked_ids: HashSet<Uuid>,
    /// The event names of tracked events, for delivery lines.
    names: HashMap<Uuid, (String, String, Uuid)>,
    /// The last state reported for each delivery, with its event.
    reported: HashMap<Uuid, (Uuid, Status, i32)>,
    since: DateTime<Utc>,
    /// When the feed started: what happened to events stored before it is
    /// already on the page, so their first sighting is not reported.
    started: DateTime<Utc>,
}

/// How long the feed follows an event's deliveries.
const FOLLOW: Duration = Duration::from_secs(120);
/// The most events the feed follows at once.
const FOLLOW_MAX: usize = 1000;
/// How far back each poll looks for new events (commits are not in
/// `created_at` order, so the window overlaps).
const OVERLAP: chrono::Duration = chrono::Duration::seconds(5);

impl ActivityFeed {
    /// How often the live tail asks for news.
    pub const INTERVAL: Duration = Duration::from_millis(250);

    /// A feed of what happens from now on.
    pub fn new(organization: Option<Uuid>) -> ActivityFeed {
        ActivityFeed {
            organization,
            tracked: VecDeque::new(),
            tracked_ids: HashSet::new(),
            names: HashMap::new(),
            reported: HashMap::new(),
            since: Utc::now(),
            started: Utc::now(),
        }
    }

    /// What happened since the last call, oldest first.
    pub async fn poll(&mut self, store: &Store) -> Result<Vec<Activity>, StoreError> {
        let now = Utc::now();
        let mut out = Vec::new();
        let mut tx = store.begin_read().await?;
        let sql = AssertSqlSafe(tx.dialect().sql(&format!(
            "SELECT {EVENT_COLUMNS} FROM integrations.events e \
              WHERE e.created_at >= $1 AND ($2 IS NULL OR e.organization_id = $2) \
              ORDER BY e.created_at, e.seq LIMIT 500"
        )));
        let rows: Vec<EventTuple> = on_tx!(&mut tx, |conn| sqlx::query_as(sql)
            .bind(Time(self.since - OVERLAP))
            .bind(self.organization.map(Id))
            .fetch_all(conn)
            .await)?;
        for event in rows.into_iter().map(stored_event) {
            let id = event.envelope.id;
            if event.created_at < self.since - OVERLAP || !self.tracked_ids.insert(id) {
                continue;
            }
            self.tracked.push_back((id, Instant::now()));
            self.names.insert(
                id,
                (
                    event.envelope.source.clone(),
                    event.envelope.event.clone(),
                    event.envelope.organization_id,
                ),
            );
            if event.created_at < self.started {
                continue;
            }
            out.push(Activity {
                at: event.created_at,
                outcome: "published",
                event_id: id,
                organization_id: event.envelope.organization_id,
                source: event.envelope.source,
                event: event.envelope.event,
                integration: None,
                attempts: None,
                error: None,
            });
        }
        while let Some((id, seen)) = self.tracked.front().copied() {
            if seen.elapsed() < FOLLOW && self.tracked.len() <= FOLLOW_MAX {
                break;
            }
            self.tracked.pop_front();
            self.tracked_ids.remove(&id);
            self.names.remove(&id);
        }
        let followed = &self.tracked_ids;
        self.reported
            .retain(|_, (event, _, _)| followed.contains(event));
        let ids: Vec<Uuid> = self.tracked.iter().map(|(id, _)| *id).collect();
        for chunk in ids.chunks(200) {
            let params: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = AssertSqlSafe(tx.dialect().sql(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM integrations.deliveries d WHERE d.event_id IN ({}) \
                 ORDER BY d.updated_at",
                params.join(", ")
            )));
            let rows: Vec<DeliveryTuple> = on_tx!(&mut tx, |conn| {
                let mut query = sqlx::query_as(sql);
                for id in chunk {
                    query = query.bind(Id(*id));
                }
                query.fetch_all(conn).await
            })?;
            for delivery in rows.into_iter().map(delivery_view) {
                let outcome = match delivery.status {
                    Status::Delivered => "delivered",
                    Status::Skipped => "skipped",
                    Status::Dead => "dead",
                    Status::Retrying => "retrying",
                    Status::Pending => continue,
                };
                let state = (delivery.event_id, delivery.status, delivery.attempts);
                let before = self.reported.insert(delivery.id, state);
                if before == Some(state) {
                    continue;
                }
                // An outcome that was already there when the feed started is
                // on the page; only later changes are news.
                if before.is_none()
                    && delivery.completed_at.unwrap_or(delivery.updated_at) < self.started
                {
                    continue;
                }
                let (source, event, organization) = self
                    .names
                    .get(&delivery.event_id)
                    .cloned()
                    .unwrap_or_else(|| {
                        (
                            delivery.source.clone(),
                            delivery.route_event.clone(),
                            delivery.organization_id,
                        )
                    });
                out.push(Activity {
                    at: delivery.completed_at.unwrap_or(delivery.updated_at),
                    outcome,
                    event_id: delivery.event_id,
                    organization_id: organization,
                    source,
                    event,
                    integration: Some(delivery.integration),
                    attempts: Some(delivery.attempts),
                    error: delivery
                        .last_error
                        .filter(|_| delivery.status != Status::Delivered),
                });
            }
        }
        tx.rollback().await?;
        self.since = now;
        out.sort_by_key(|a| a.at);
        Ok(out)
    }
}

/// The latest activity, for the live tail's first screen (newest first).
///
/// NEEDS ENGINE V2: must come from the activity feed's recent history.
/// Today: the latest events and their deliveries' current outcomes.
pub async fn recent_activity(
    store: &Store,
    organization: Option<Uuid>,
    limit: usize,
) -> Result<Vec<Activity>, StoreError> {
    let latest = search_events(
        store,
        &EventSearch {
            organization,
            ..EventSearch::default()
        },
        limit as i64,
    )
    .await?;
    let mut tx = store.begin_read().await?;
    let mut out = Vec::new();
    for row in latest {
        let event = row.event;
        for delivery in
            events::deliveries_of(&mut tx, event.envelope.organization_id, event.envelope.id)
                .await?
        {
            let outcome = match delivery.status {
                Status::Delivered => "delivered",
                Status::Skipped => "skipped",
                Status::Dead => "dead",
                Status::Retrying => "retrying",
                Status::Pending => continue,
            };
            out.push(Activity {
                at: delivery.completed_at.unwrap_or(delivery.updated_at),
                outcome,
                event_id: event.envelope.id,
                organization_id: event.envelope.organization_id,
                source: event.envelope.source.clone(),
                event: event.envelope.event.clone(),
                integration: Some(delivery.integration),
                attempts: Some(delivery.attempts),
                error: delivery
                    .last_error
                    .filter(|_| delivery.status != Status::Delivered),
            });
        }
        out.push(Activity {
            at: event.created_at,
            outcome: "published",
            event_id: event.envelope.id,
            organization_id: event.envelope.organization_id,
            source: event.envelope.source,
            event: event.envelope.event,
            integration: None,
            attempts: None,
            error: None,
        });
    }
    tx.rollback().await?;
    out.sort_by_key(|a| std::cmp::Reverse(a.at));
    out.truncate(limit);
    Ok(out)
}

// ---------------------------------------------------------------------------
// Redeliver by filter

/// Which events to run through an integration again.
#[derive(Debug, Clone, Default)]
pub struct RedeliverFilter {
    pub integration: String,
    pub event: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Only events whose delivery to the integration is in this state.
    pub status: Option<Status>,
}

/// Why a redelivery did not run.
#[derive(Debug, thiserror::Error)]
pub enum RedeliverError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Today's engine can only requeue dead deliveries.
    #[error(
        "this busbar can only redeliver dead deliveries until the new delivery engine lands; choose status \"dead\""
    )]
    NotYetSupported,
}

fn redeliver_conditions(filter: &RedeliverFilter, organization: Option<Uuid>) -> Built {
    let mut built = Built::default();
    let p = built.arg(Arg::Text(filter.integration.clone()));
    built.conditions.push(format!("d.integration_id = {p}"));
    if let Some(organization) = organization {
        let p = built.arg(Arg::Id(organization));
        built.conditions.push(format!("d.organization_id = {p}"));
    }
    if let Some(status) = filter.status {
        let p = built.arg(Arg::Text(status.as_str().to_owned()));
        built.conditions.push(format!("d.status = {p}"));
    }
    if let Some(event) = &filter.event {
        let p = built.arg(Arg::Text(event.clone()));
        built.conditions.push(format!("d.route_event = {p}"));
    }
    if let Some(since) = filter.since {
        let p = built.arg(Arg::Time(since));
        built.conditions.push(format!("e.created_at >= {p}"));
    }
    if let Some(until) = filter.until {
        let p = built.arg(Arg::Time(until));
        built.conditions.push(format!("e.created_at < {p}"));
    }
    built
}

/// How many events a redelivery with `filter` would run again.
///
/// NEEDS ENGINE V2: must be the engine's own preview for the filter (the
/// same matching as the redelivery). Today it counts the integration's
/// deliveries that match (index wanted: `deliveries (integration_id,
/// status, created_at)`).
pub async fn redeliver_preview(
    store: &Store,
    filter: &RedeliverFilter,
    organization: Option<Uuid>,
) -> Result<i64, StoreError> {
    let built = redeliver_conditions(filter, organization);
    let sql = AssertSqlSafe(store.dialect().sql(&format!(
        "SELECT COUNT(DISTINCT d.event_id) FROM integrations.deliveries d \
           JOIN integrations.events e ON e.id = d.event_id WHERE {}",
        built.conditions.join(" AND ")
    )));
    let mut tx = store.begin_read().await?;
    let (count,): (i64,) = on_tx!(&mut tx, |conn| bind_args!(sqlx::query_as(sql), &built.args)
        .fetch_one(conn)
        .await)?;
    tx.rollback().await?;
    Ok(count)
}

/// Runs the events matching `filter` through the integration again.
/// Returns how many.
///
/// NEEDS ENGINE V2: must call the engine's redeliver-by-filter, which runs
/// matching events again whatever their outcome. Today's engine can only
/// requeue dead deliveries, so this does that for `status: dead` and
/// refuses any other filter with [`RedeliverError::NotYetSupported`].
pub async fn redeliver(
    engine: &Engine,
    filter: &RedeliverFilter,
    organization: Option<Uuid>,
) -> Result<u64, RedeliverError> {
    if filter.status != Some(Status::Dead) {
        return Err(RedeliverError::NotYetSupported);
    }
    let built = redeliver_conditions(filter, organization);
    let sql = AssertSqlSafe(engine.store().dialect().sql(&format!(
        "SELECT d.id FROM integrations.deliveries d JOIN integrations.events e ON e.id = d.event_id \
          WHERE {}",
        built.conditions.join(" AND ")
    )));
    let mut tx = engine
        .store()
        .begin_read()
        .await
        .map_err(RedeliverError::Store)?;
    let ids: Vec<(Id,)> = on_tx!(&mut tx, |conn| bind_args!(sqlx::query_as(sql), &built.args)
        .fetch_all(conn)
        .await)
    .map_err(StoreError::from)?;
    tx.rollback().await?;
    let ids: Vec<Uuid> = ids.into_iter().map(|(id,)| id.0).collect();
    Ok(replay_deliveries(engine, &ids, organization).await?)
}

// ---------------------------------------------------------------------------
// Try an event

/// What the live generation would do with an event.
#[derive(Debug, Serialize)]
pub struct DryRun {
    /// The generation it ran on.
    pub generation: u64,
    /// Why the text is not an event (each with a JSON pointer).
    pub invalid: Vec<(String, String)>,
    /// Why publishing would refuse it: its data breaks the contract.
    pub contract: Option<String>,
    pub contract_violations: Vec<(String, String)>,
    pub report: Option<RenderReport>,
}

/// Renders `text` (an event envelope as JSON) through the live
/// generation's routes, writing nothing: the `busbar render` dry run.
pub fn dry_run(engine: &Engine, text: &str) -> DryRun {
    let generation = engine.generation();
    let mut run = DryRun {
        generation: generation.number,
        invalid: Vec::new(),
        contract: None,
        contract_violations: Vec::new(),
        report: None,
    };
    let json: Value = match serde_json::from_str(text) {
        Ok(json) => json,
        Err(error) => {
            run.invalid
                .push((String::new(), format!("not JSON: {error}")));
            return run;
        }
    };
    let envelope = match Envelope::from_json(&json) {
        Ok(envelope) => envelope,
        Err(violations) => {
            run.invalid = violations
                .into_iter()
                .map(|v| (v.pointer, v.message))
                .collect();
            return run;
        }
    };
    if let Some(contract) = generation.contracts.get(&envelope.source, &envelope.event) {
        run.contract = Some(contract.file.display().to_string());
        run.contract_violations = contract
            .violations(&envelope.data)
            .into_iter()
            .map(|v| (v.pointer, v.message))
            .collect();
    }
    run.report = Some(crate::render::render(&generation, &envelope, None));
    run
}

/// Whether the caller's key has `scope`.
pub fn has_scope(caller: &Caller, scope: Scope) -> bool {
    caller.scopes.contains(&scope)
}
