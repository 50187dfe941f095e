//! Every read and write the console makes, in one place.
//!
//! The pages never touch the database or the engine themselves: they call
//! the functions here, which call the [`Engine`] (states, backlog, replay,
//! redelivery, the activity feed), [`crate::store::events`],
//! [`crate::store::views`] (deliveries with and without a row),
//! [`crate::store::lanes`] (delivered counters) and
//! [`crate::store::keys`], or run the console's own queries (sessions,
//! search, the overview's numbers, dead letters). Delivery v2 keeps a row
//! only for a delivery that was an exception (ARCHITECTURE.md, "Delivery
//! (v2)"); what has no row is inferred from the lanes' cursors, here as in
//! the API.
//!
//! Every function that reads events or deliveries takes the caller's
//! [`OrgScope`] and filters by it in SQL. Each statement is built per
//! database with the dialect's placeholders and table names (fixed ones
//! once, as a [`Statement`]); the few that build their text from a filter
//! add fixed fragments only, and every value is a bound parameter.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use tokio::sync::broadcast;

use crate::api::Caller;
use crate::compile::{Generation, Integration, OnDead, StepKind};
use crate::engine::redeliver::{RedeliverCount, RedeliverRequest, Redelivered};
use crate::engine::{self, Engine, State};
use crate::envelope::Envelope;
use crate::on_tx;
use crate::render::RenderReport;
use crate::store::dialect::{EngineTable, Statement};
use crate::store::events::{
    self, BlockedKey, DELIVERY_COLUMNS, DeliveryView, DeliveryViewRow, LastError, Status,
    StoredEvent,
};
use crate::store::keys::{self, KeyRecord, Scope};
use crate::store::lanes::{self, ReplayFilter};
use crate::store::scope::OrgScope;
use crate::store::ticks;
use crate::store::types::{Doc, Id, Position, Time};
use crate::store::{DbTx, Dialect, Store, StoreError, log, views};

pub use crate::engine::redeliver::{RedeliverError, RedeliverFilter};

// ---------------------------------------------------------------------------
// Queries built from a filter, and events as read

/// A value bound to a query built from a filter.
enum Arg {
    Id(Uuid),
    Text(String),
    Time(DateTime<Utc>),
    Int(i64),
    Doc(Value),
}

/// A query's conditions and their arguments, numbered in order with the
/// dialect's placeholders.
struct Built {
    dialect: Dialect,
    conditions: Vec<String>,
    args: Vec<Arg>,
}

impl Built {
    fn new(dialect: Dialect) -> Built {
        Built {
            dialect,
            conditions: Vec::new(),
            args: Vec::new(),
        }
    }

    /// Adds an argument; returns its placeholder.
    fn arg(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        self.dialect.param(self.args.len()).to_string()
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
        position: Position::new(xid, seq),
    }
}

// ---------------------------------------------------------------------------
// Sessions

/// How long a console session lasts after signing in.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 60 * 60);

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
    static PURGE: Statement = Statement::new(|d| {
        let console_sessions = d.engine_table(EngineTable::ConsoleSessions);
        let [p1] = d.params();
        format!("DELETE FROM {console_sessions} WHERE expires_at <= {p1}")
    });
    let purge = PURGE.get(tx.dialect());
    on_tx!(&mut tx, |conn| sqlx::query(purge)
        .bind(now)
        .execute(conn)
        .await
        .map(|_| ()))?;
    static INSERT: Statement = Statement::new(|d| {
        let console_sessions = d.engine_table(EngineTable::ConsoleSessions);
        let [p1, p2, p3, p4] = d.params();
        format!(
            "INSERT INTO {console_sessions} (token_hash, key_id, created_at, expires_at) \
             VALUES ({p1}, {p2}, {p3}, {p4})"
        )
    });
    let insert = INSERT.get(tx.dialect());
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
    static SQL: Statement = Statement::new(|d| {
        let console_sessions = d.engine_table(EngineTable::ConsoleSessions);
        let api_keys = d.engine_table(EngineTable::ApiKeys);
        let [p1, p2] = d.params();
        format!(
            "SELECT k.id, k.prefix, k.name, k.organization_id, k.scopes, s.expires_at \
               FROM {console_sessions} s JOIN {api_keys} k ON k.id = s.key_id \
              WHERE s.token_hash = {p1} AND s.expires_at > {p2} AND k.revoked_at IS NULL"
        )
    });
    let sql = SQL.get(tx.dialect());
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
    static SQL: Statement = Statement::new(|d| {
        let console_sessions = d.engine_table(EngineTable::ConsoleSessions);
        let [p1] = d.params();
        format!("DELETE FROM {console_sessions} WHERE token_hash = {p1}")
    });
    let sql = SQL.get(tx.dialect());
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
    /// Its deliveries are recorded as skipped.
    Disabled,
}

impl From<State> for FlowState {
    fn from(state: State) -> FlowState {
        match state {
            State::Enabled => FlowState::Enabled,
            State::Paused => FlowState::Paused,
            State::Disabled => FlowState::Disabled,
        }
    }
}

/// A change an operator asks for on an integration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateChange {
    Enable,
    Disable,
    Pause,
    Resume,
}

/// An integration's state now, as the engine has it: its YAML
/// (`enabled: false` is disabled) and the state persisted through the API
/// or the console, together.
pub fn flow_state(engine: &Engine, integration: &str) -> FlowState {
    engine
        .status(integration)
        .map_or(FlowState::Disabled, |s| s.state.into())
}

/// Whether the integration's YAML says `enabled: false` (then no change
/// through the console or the API turns it on).
pub fn disabled_in_yaml(engine: &Engine, integration: &str) -> bool {
    engine
        .generation()
        .integration(integration)
        .is_some_and(|i| !i.enabled)
}

/// Enables, disables, pauses or resumes an integration, persisted and
/// followed by every process on the database within a second. A pause
/// holds its events (nothing skipped) and resume continues from where it
/// stopped; a disable skips its waiting deliveries at once.
pub async fn change_state(
    engine: &Engine,
    integration: &str,
    change: StateChange,
) -> Result<(), StoreError> {
    let state = match change {
        StateChange::Enable | StateChange::Resume => State::Enabled,
        StateChange::Disable => State::Disabled,
        StateChange::Pause => State::Paused,
    };
    engine.set_state(integration, state).await
}

/// The most unread events the overview counts per lane (a larger backlog
/// shows as this many per lane).
pub const BACKLOG_CAP: i64 = 1_000;

/// What the overview shows for one integration.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlowNumbers {
    /// Deliveries that ended delivered in the last 5 minutes (the per-minute
    /// counters of `integrations.delivery_stats`).
    pub delivered_5m: i64,
    /// And in the last hour.
    pub delivered_1h: i64,
    /// Work waiting: events its lanes have not reached yet (for a platform
    /// key; counted up to [`BACKLOG_CAP`] per lane) and deliveries pending
    /// behind a blocked key or after a replay or redelivery.
    pub backlog: i64,
    /// Deliveries that failed and wait for another attempt (their key
    /// waits with them).
    pub retrying: i64,
    pub dead: i64,
    pub last_error: Option<LastError>,
}

/// The overview's numbers for every integration, in `scope`.
///
/// Delivered counts come from the per-minute counters
/// ([`lanes::delivered_since`]), the unread backlog from the lanes'
/// cursors ([`Engine::backlog`]; not split by organization, so an
/// organization's key sees only its pending rows), and retrying, dead and
/// pending from the exception rows, one indexed look per integration on
/// `deliveries (integration_id, status)`.
pub async fn flow_numbers(
    engine: &Engine,
    integrations: &[String],
    scope: OrgScope,
) -> Result<HashMap<String, FlowNumbers>, StoreError> {
    let mut out: HashMap<String, FlowNumbers> = HashMap::new();
    let unread = match scope {
        OrgScope::Platform => engine.backlog(BACKLOG_CAP).await?.unread,
        OrgScope::Organization(_) => HashMap::new(),
    };
    let now = Utc::now();
    let mut tx = engine.store().begin_read().await?;
    let last_5m =
        lanes::delivered_since(&mut tx, scope, Time(now - chrono::Duration::minutes(5))).await?;
    let last_1h =
        lanes::delivered_since(&mut tx, scope, Time(now - chrono::Duration::hours(1))).await?;
    static EXCEPTIONS: Statement = Statement::new(|d| {
        let deliveries = d.engine_table(EngineTable::Deliveries);
        let [p1, p2] = d.params();
        format!(
            "SELECT status, COUNT(*) FROM {deliveries} \
              WHERE integration_id = {p1} AND status IN ('pending', 'retrying', 'dead') \
                AND ({p2} IS NULL OR organization_id = {p2}) \
              GROUP BY status"
        )
    });
    let exceptions = EXCEPTIONS.get(tx.dialect());
    for integration in integrations {
        let numbers = out.entry(integration.clone()).or_default();
        let rows: Vec<(String, i64)> = on_tx!(&mut tx, |conn| sqlx::query_as(exceptions)
            .bind(integration.as_str())
            .bind(scope.bind())
            .fetch_all(conn)
            .await)?;
        for (status, count) in rows {
            match Status::parse(&status) {
                Some(Status::Dead) => numbers.dead += count,
                Some(Status::Retrying) => numbers.retrying += count,
                _ => numbers.backlog += count,
            }
        }
        numbers.backlog += unread.get(integration).copied().unwrap_or(0);
        numbers.delivered_5m = last_5m.get(integration).copied().unwrap_or(0);
        numbers.delivered_1h = last_1h.get(integration).copied().unwrap_or(0);
    }
    for (integration, last) in events::last_errors(&mut tx, scope, integrations).await? {
        out.entry(integration).or_default().last_error = Some(last);
    }
    tx.rollback().await?;
    Ok(out)
}

/// The keys of an integration held back by a retrying delivery (or a dead
/// one, with `on_dead: block`), with what each waits on and how many
/// deliveries wait behind it, most recent first.
pub async fn blocked_keys(
    engine: &Engine,
    integration: &str,
    scope: OrgScope,
    limit: i64,
) -> Result<Vec<BlockedKey>, StoreError> {
    let generation = engine.generation();
    let Some(definition) = generation.integration(integration) else {
        return Ok(Vec::new());
    };
    let mut tx = engine.store().begin_read().await?;
    let keys = events::blocked_keys(
        &mut tx,
        scope,
        integration,
        definition.on_dead == OnDead::Block,
        limit,
    )
    .await?;
    tx.rollback().await?;
    Ok(keys)
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

/// The newest events in `scope` (and with `routed`, of that source and
/// those event names), newest first, at most `limit`.
async fn newest_events(
    tx: &mut DbTx,
    scope: OrgScope,
    routed: Option<(&str, &[String])>,
    limit: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let dialect = tx.dialect();
    let mut built = Built::new(dialect);
    if let Some((source, names)) = routed {
        let p = built.arg(Arg::Text(source.to_owned()));
        built.conditions.push(format!("e.source_product = {p}"));
        let names: Vec<String> = names
            .iter()
            .map(|name| built.arg(Arg::Text(name.clone())))
            .collect();
        built
            .conditions
            .push(format!("e.event_name IN ({})", names.join(", ")));
    }
    if let OrgScope::Organization(organization) = scope {
        let p = built.arg(Arg::Id(organization));
        built.conditions.push(format!("e.organization_id = {p}"));
    }
    if built.conditions.is_empty() {
        built.conditions.push("1 = 1".to_owned());
    }
    let limit_param = built.arg(Arg::Int(limit));
    let events = dialect.engine_table(EngineTable::Events);
    let sql = AssertSqlSafe(format!(
        "SELECT {EVENT_COLUMNS} FROM {events} e WHERE {} ORDER BY e.seq DESC LIMIT {limit_param}",
        built.conditions.join(" AND ")
    ));
    let rows: Vec<EventTuple> = on_tx!(&mut *tx, |conn| bind_args!(
        sqlx::query_as(sql),
        &built.args
    )
    .fetch_all(conn)
    .await)?;
    Ok(rows.into_iter().map(stored_event).collect())
}

/// An integration's deliveries of its most recent events (newest event
/// first): rows, and the deliveries without one inferred from the lanes
/// ([`views::deliveries`]: delivered when its lane has passed the event,
/// pending before).
///
/// The events are read newest first by `seq` (index `events (seq)` for a
/// platform key, `events (organization_id, seq DESC)` for an
/// organization's), keeping those of the integration's source and event
/// names.
pub async fn recent_deliveries(
    engine: &Engine,
    integration: &str,
    scope: OrgScope,
    limit: i64,
) -> Result<Vec<DeliveryView>, StoreError> {
    let generation = engine.generation();
    let Some(definition) = generation.integration(integration) else {
        return Ok(Vec::new());
    };
    let mut names: Vec<String> = definition.routes.iter().map(|r| r.on.clone()).collect();
    names.sort();
    names.dedup();
    let mut tx = engine.store().begin_read().await?;
    let found = newest_events(&mut tx, scope, Some((&definition.source, &names)), limit).await?;
    let deliveries = views::deliveries(&mut tx, scope, &generation, engine.lanes(), &found).await?;
    tx.rollback().await?;
    Ok(deliveries
        .into_iter()
        .filter(|d| d.integration == integration)
        .collect())
}

/// The most dead deliveries read for grouping by cause.
pub const DEAD_LETTER_LIMIT: i64 = 5_000;

/// An integration's dead deliveries in `scope`, newest first, at
/// most [`DEAD_LETTER_LIMIT`]. Dead deliveries are rows (index
/// `deliveries (integration_id, status)`).
pub async fn dead_letters(
    store: &Store,
    integration: &str,
    scope: OrgScope,
) -> Result<Vec<DeliveryView>, StoreError> {
    let mut tx = store.begin_read().await?;
    static SQL: Statement = Statement::new(|d| {
        let deliveries = d.engine_table(EngineTable::Deliveries);
        let [p1, p2, p3] = d.params();
        format!(
            "SELECT {DELIVERY_COLUMNS} FROM {deliveries} d \
              WHERE d.integration_id = {p1} AND d.status = 'dead' AND ({p2} IS NULL OR d.organization_id = {p2}) \
              ORDER BY d.updated_at DESC, d.id DESC LIMIT {p3}"
        )
    });
    let sql = SQL.get(tx.dialect());
    let rows: Vec<DeliveryViewRow> = on_tx!(&mut tx, |conn| sqlx::query_as(sql)
        .bind(integration)
        .bind(scope.bind())
        .bind(DEAD_LETTER_LIMIT)
        .fetch_all(conn)
        .await)?;
    tx.rollback().await?;
    Ok(rows.into_iter().map(DeliveryView::from).collect())
}

/// Puts dead deliveries back in their lanes (those of `ids` that are dead
/// and, when `organization` is given, that organization's), with a fresh
/// retry budget. Returns how many were requeued.
pub async fn replay_deliveries(
    engine: &Engine,
    ids: &[Uuid],
    organization: Option<Uuid>,
) -> Result<u64, StoreError> {
    engine
        .replay(ReplayFilter {
            deliveries: Some(ids.to_vec()),
            organization,
            ..ReplayFilter::default()
        })
        .await
}

/// Skips dead deliveries (those of `ids` that are dead and, when
/// `organization` is given, that organization's), recording `reason` and
/// `by`. Returns how many were skipped.
pub async fn skip_deliveries(
    engine: &Engine,
    ids: &[Uuid],
    organization: Option<Uuid>,
    reason: &str,
    by: &str,
) -> Result<u64, StoreError> {
    let filter = ReplayFilter {
        deliveries: Some(ids.to_vec()),
        organization,
        ..ReplayFilter::default()
    };
    engine.skip(filter, reason, by).await
}

/// One point in a delivery's history.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    /// `routed`, `recorded`, `failed`, `waiting`, `due`, `delivered`,
    /// `skipped`, `dead`.
    pub kind: &'static str,
    pub text: String,
}

/// A delivery's timeline, as far as busbar keeps it.
///
/// A delivery has at most one row, updated in place (and none at all when
/// it succeeded on its first pass), so the timeline is what that row says:
/// when it was routed or first recorded, its latest failure with the step
/// and the number of attempts, what it waits on or when it runs next, how
/// it ended, and how many times it was redelivered (`epoch`). Earlier
/// attempts' errors are not kept.
pub fn delivery_timeline(delivery: &DeliveryView, epoch: i32) -> Vec<TimelineEntry> {
    let route = match &delivery.route_name {
        Some(name) => format!("route `{name}` for {}", delivery.route_event),
        None => format!(
            "route {} for {}",
            delivery.route_ordinal + 1,
            delivery.route_event
        ),
    };
    let mut entries = vec![if delivery.recorded {
        TimelineEntry {
            at: delivery.created_at,
            kind: "recorded",
            text: format!(
                "{} ({route}): first recorded, when it stopped being a plain first-pass success",
                delivery.integration
            ),
        }
    } else {
        TimelineEntry {
            at: delivery.created_at,
            kind: "routed",
            text: format!("published; routed to {} ({route})", delivery.integration),
        }
    }];
    let redelivered = match epoch {
        0 => String::new(),
        1 => " (redelivered once)".to_owned(),
        n => format!(" (redelivered {n} times)"),
    };
    let failed =
        delivery.last_error.is_some() && matches!(delivery.status, Status::Retrying | Status::Dead);
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
    let ended = delivery.completed_at.unwrap_or(delivery.updated_at);
    entries.push(match delivery.status {
        Status::Pending if !delivery.recorded => TimelineEntry {
            at: delivery.created_at,
            kind: "waiting",
            text: "waits for its lane to reach it (the integration's backlog, or paused)".to_owned(),
        },
        Status::Pending => TimelineEntry {
            at: delivery.updated_at,
            kind: "waiting",
            text: match delivery.waiting_on {
                Some(head) => format!(
                    "waits behind delivery {head} of the same key{}{redelivered}",
                    delivery
                        .order_key
                        .as_deref()
                        .map(|k| format!(" ({k})"))
                        .unwrap_or_default()
                ),
                None => format!("queued to run again (replayed or redelivered){redelivered}"),
            },
        },
        Status::Retrying => TimelineEntry {
            at: delivery.next_attempt_at,
            kind: "due",
            text: format!(
                "attempt {} is due; later deliveries of its key wait for it",
                delivery.attempts + 1
            ),
        },
        Status::Delivered if !delivery.recorded => TimelineEntry {
            at: ended,
            kind: "delivered",
            text: "delivered on its first pass (busbar keeps no row for that: the time is when its lane last moved past it)".to_owned(),
        },
        Status::Delivered => TimelineEntry {
            at: ended,
            kind: "delivered",
            text: format!(
                "delivered after {} attempt(s), generation {}{redelivered}",
                delivery.attempts.max(1),
                delivery
                    .generation
                    .map_or_else(|| "?".to_owned(), |g| g.to_string())
            ),
        },
        Status::Skipped => TimelineEntry {
            at: ended,
            kind: "skipped",
            text: match (&delivery.skip_reason, &delivery.skipped_by) {
                (Some(reason), by) => format!(
                    "skipped by {}: {reason}{}{redelivered}",
                    by.as_deref().unwrap_or("an operator"),
                    delivery
                        .last_error
                        .as_deref()
                        .map(|e| format!(" (it had failed with: {e})"))
                        .unwrap_or_default()
                ),
                (None, _) => format!(
                    "skipped: {}{redelivered}",
                    delivery
                        .last_error
                        .as_deref()
                        .unwrap_or("no reason recorded")
                ),
            },
        },
        Status::Dead => TimelineEntry {
            at: ended,
            kind: "dead",
            text: format!("dead letter: waits for a fix and a replay{redelivered}"),
        },
    });
    entries
}

/// How many times each recorded delivery of `ids` was redelivered (its
/// `epoch`); deliveries without a row were never redelivered.
async fn epochs(tx: &mut DbTx, ids: &[Uuid]) -> Result<HashMap<Uuid, i32>, StoreError> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(200) {
        let d = tx.dialect();
        let deliveries = d.engine_table(EngineTable::Deliveries);
        let params: Vec<String> = (1..=chunk.len()).map(|i| d.param(i).to_string()).collect();
        let sql = AssertSqlSafe(format!(
            "SELECT id, epoch FROM {deliveries} WHERE id IN ({}) AND epoch > 0",
            params.join(", ")
        ));
        let rows: Vec<(Id, i32)> = on_tx!(&mut *tx, |conn| {
            let mut query = sqlx::query_as(sql);
            for id in chunk {
                query = query.bind(Id(*id));
            }
            query.fetch_all(conn).await
        })?;
        out.extend(rows.into_iter().map(|(id, epoch)| (id.0, epoch)));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Events

/// What the events page searches by. Every field but the scope is
/// optional.
#[derive(Debug, Clone)]
pub struct EventSearch {
    /// The caller's organization, or a platform key's choice.
    pub scope: OrgScope,
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

impl EventSearch {
    /// Every event in `scope`.
    pub fn all(scope: OrgScope) -> EventSearch {
        EventSearch {
            scope,
            source: None,
            event: None,
            status: None,
            integration: None,
            since: None,
            until: None,
            field: None,
            before_seq: None,
        }
    }
}

/// An event in a list, with its deliveries counted by state (rows and
/// inferred ones).
#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    pub event: StoredEvent,
    pub counts: BTreeMap<&'static str, i64>,
}

/// The condition "`integration`'s delivery of the event `e` is
/// delivered": a `delivered` row, or no row for an event its lane has
/// passed (after the lane began, and not routed by the engine before
/// delivery v2). The lane is the one the database computes for the event
/// ([`log::lane_sql`]), the cursor the lane's row.
fn delivered_condition(built: &mut Built, integration: &Integration, lanes: i32) -> String {
    let id = built.arg(Arg::Text(integration.id.clone()));
    let source = built.arg(Arg::Text(integration.source.clone()));
    let mut names: Vec<String> = integration.routes.iter().map(|r| r.on.clone()).collect();
    names.sort();
    names.dedup();
    let names: Vec<String> = names
        .into_iter()
        .map(|name| built.arg(Arg::Text(name)))
        .collect();
    let lane = if lanes > 1 {
        // The path of an order key in the data, as a text array literal
        // (cast by the expression itself).
        let next = built.args.len() + 1;
        let (expr, path) = log::lane_sql(&integration.order_by, lanes, next);
        if let Some(path) = path {
            built.arg(Arg::Text(text_array(&path)));
        }
        expr
    } else {
        "0".to_owned()
    };
    let deliveries = built.dialect.engine_table(EngineTable::Deliveries);
    let lanes = built.dialect.engine_table(EngineTable::Lanes);
    let passed = ticks::passed_sql(built.dialect);
    let before_origin = ticks::before_origin_sql(built.dialect);
    format!(
        "(e.source_product = {source} AND e.event_name IN ({names}) AND \
          (EXISTS (SELECT 1 FROM {deliveries} d WHERE d.organization_id = e.organization_id \
                     AND d.event_id = e.id AND d.integration_id = {id} AND d.status = 'delivered') \
           OR (e.processed_at IS NULL \
               AND NOT EXISTS (SELECT 1 FROM {deliveries} d WHERE d.organization_id = e.organization_id \
                                 AND d.event_id = e.id AND d.integration_id = {id}) \
               AND EXISTS (SELECT 1 FROM {lanes} l WHERE l.integration_id = {id} AND l.lane = {lane} \
                             AND {passed} AND NOT {before_origin}))))",
        names = names.join(", ")
    )
}

/// A PostgreSQL text array literal: `{"a","b"}`.
fn text_array(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|item| format!("\"{}\"", item.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
}

/// Events matching `search`, newest first, at most `limit`, each with its
/// deliveries counted by state.
///
/// The state filter: `pending`, `retrying`, `skipped` and `dead` are rows,
/// found first (a materialized set, from the index `deliveries (status,
/// organization_id, event_id) WHERE status <> 'delivered'`). `pending`
/// finds the deliveries waiting with a row (behind a blocked key, replayed,
/// redelivered); events the lanes have not reached yet are not listed (the
/// overview's backlog counts them). `delivered` has no row for most
/// deliveries: it is an event with a `delivered` row, or without a row for
/// an event its lane has passed, for the chosen integration (or any), so
/// it is tested event by event, newest first (delivered events are most
/// of the log: a page fills at once).
///
/// Indexes: `events (organization_id, seq DESC)` and `events (seq)` for the
/// newest, `events (organization_id, created_at DESC)` for a time range.
/// The payload field has no index by default (its GIN index cost a quarter
/// of the engine's throughput; migration 0007 says how to add it back): it
/// is tested on the rows the other filters leave, newest first, until the
/// page is full. On PostgreSQL it is a containment (`@>`), which that
/// index answers when a deployment adds it.
pub async fn search_events(
    engine: &Engine,
    search: &EventSearch,
    limit: i64,
) -> Result<Vec<EventRow>, StoreError> {
    let store = engine.store();
    let dialect = store.dialect();
    let generation = engine.generation();
    let mut built = Built::new(dialect);
    if let OrgScope::Organization(organization) = search.scope {
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
    let mut hits = String::new();
    match search.status {
        None => {}
        Some(Status::Delivered) => {
            let chosen: Vec<&Integration> = generation
                .integrations
                .iter()
                .filter(|i| search.integration.as_ref().is_none_or(|id| *id == i.id))
                .collect();
            let conditions: Vec<String> = chosen
                .into_iter()
                .map(|i| delivered_condition(&mut built, i, engine.lanes()))
                .collect();
            if conditions.is_empty() {
                built.conditions.push("1 = 0".to_owned());
            } else {
                built
                    .conditions
                    .push(format!("({})", conditions.join(" OR ")));
            }
        }
        Some(status) => {
            let p = built.arg(Arg::Text(status.as_str().to_owned()));
            let mut narrow = String::new();
            if let Some(integration) = &search.integration {
                let q = built.arg(Arg::Text(integration.clone()));
                narrow.push_str(&format!(" AND d.integration_id = {q}"));
            }
            if let OrgScope::Organization(organization) = search.scope {
                let q = built.arg(Arg::Id(organization));
                narrow.push_str(&format!(" AND d.organization_id = {q}"));
            }
            let deliveries = dialect.engine_table(EngineTable::Deliveries);
            hits = format!(
                "WITH hits AS MATERIALIZED (SELECT DISTINCT d.organization_id, d.event_id \
                   FROM {deliveries} d WHERE d.status <> 'delivered' AND d.status = {p}{narrow}) "
            );
            built.conditions.push(
                "(e.organization_id, e.id) IN (SELECT organization_id, event_id FROM hits)"
                    .to_owned(),
            );
        }
    }
    if let Some((path, value)) = &search.field {
        match dialect {
            Dialect::Postgres => {
                // Containment, so a GIN index (when added) can answer it: the value as
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
        "1 = 1".to_owned()
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
    let events = dialect.engine_table(EngineTable::Events);
    let sql = AssertSqlSafe(format!(
        "{hits}SELECT {EVENT_COLUMNS} FROM {events} e WHERE {condition} \
          ORDER BY {order} LIMIT {limit_param}"
    ));
    let mut tx = store.begin_read().await?;
    let rows: Vec<EventTuple> =
        on_tx!(&mut tx, |conn| bind_args!(sqlx::query_as(sql), &built.args)
            .fetch_all(conn)
            .await)?;
    let found: Vec<StoredEvent> = rows.into_iter().map(stored_event).collect();
    let deliveries =
        views::deliveries(&mut tx, search.scope, &generation, engine.lanes(), &found).await?;
    tx.rollback().await?;
    let mut counts: HashMap<(Uuid, Uuid), BTreeMap<&'static str, i64>> = HashMap::new();
    for delivery in &deliveries {
        *counts
            .entry((delivery.organization_id, delivery.event_id))
            .or_default()
            .entry(delivery.status.as_str())
            .or_default() += 1;
    }
    Ok(found
        .into_iter()
        .map(|event| {
            let counts = counts
                .remove(&(event.envelope.organization_id, event.envelope.id))
                .unwrap_or_default();
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

/// A delivery on an event's page.
#[derive(Debug, Clone, Serialize)]
pub struct TreeDelivery {
    #[serde(flatten)]
    pub delivery: DeliveryView,
    /// How many times it was redelivered.
    pub epoch: i32,
}

/// One event with its deliveries and, recursively, the events they
/// emitted.
#[derive(Debug, Clone, Serialize)]
pub struct EventTree {
    pub event: StoredEvent,
    pub deliveries: Vec<TreeDelivery>,
    pub children: Vec<EventTree>,
}

/// What looking an event up found.
#[derive(Debug)]
pub enum Lookup {
    Found(Box<EventTree>),
    /// Not visible to the caller (another organization's is "not found").
    Missing,
    /// A platform key asked for an id that several organizations use:
    /// these (it must choose).
    Ambiguous(Vec<Uuid>),
}

/// How deep the tree of emitted events is followed, and how many events it
/// shows at most.
const TREE_DEPTH: usize = 6;
const TREE_EVENTS: usize = 100;

/// The event `id` in `scope` (the caller's organization, or a platform
/// key's choice; for the whole platform, possibly several since ids are
/// unique per organization), with its deliveries (rows and inferred, each with what
/// a pending one waits on) and the tree of events they emitted.
pub async fn event_tree(engine: &Engine, id: Uuid, scope: OrgScope) -> Result<Lookup, StoreError> {
    let mut tx = engine.store().begin_read().await?;
    let mut found = events::get_event(&mut tx, scope, id).await?;
    if found.len() > 1 {
        tx.rollback().await?;
        return Ok(Lookup::Ambiguous(
            found.iter().map(|e| e.envelope.organization_id).collect(),
        ));
    }
    let Some(event) = found.pop() else {
        tx.rollback().await?;
        return Ok(Lookup::Missing);
    };
    let generation = engine.generation();
    let mut budget = TREE_EVENTS;
    let tree = grow(
        &mut tx,
        scope,
        &generation,
        engine.lanes(),
        event,
        0,
        &mut budget,
    )
    .await?;
    tx.rollback().await?;
    Ok(Lookup::Found(Box::new(tree)))
}

#[allow(clippy::too_many_arguments)]
fn grow<'a>(
    tx: &'a mut DbTx,
    scope: OrgScope,
    generation: &'a Generation,
    lanes: i32,
    event: StoredEvent,
    depth: usize,
    budget: &'a mut usize,
) -> std::pin::Pin<Box<dyn Future<Output = Result<EventTree, StoreError>> + Send + 'a>> {
    Box::pin(async move {
        let views =
            views::deliveries(tx, scope, generation, lanes, std::slice::from_ref(&event)).await?;
        let recorded: Vec<Uuid> = views.iter().filter(|d| d.recorded).map(|d| d.id).collect();
        let epochs = epochs(tx, &recorded).await?;
        let deliveries = views
            .into_iter()
            .map(|delivery| TreeDelivery {
                epoch: epochs.get(&delivery.id).copied().unwrap_or(0),
                delivery,
            })
            .collect();
        let mut children = Vec::new();
        if depth < TREE_DEPTH {
            let organization = event.envelope.organization_id;
            for child in events::children_of(tx, scope, organization, event.envelope.id).await? {
                if *budget == 0 {
                    break;
                }
                *budget -= 1;
                children.push(grow(tx, scope, generation, lanes, child, depth + 1, budget).await?);
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
    /// `retrying`, `dead`; `missed` when the tail fell behind.
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

impl Activity {
    /// A line of the tail that says what it did not show, and why.
    pub fn missed(why: String) -> Activity {
        Activity {
            at: Utc::now(),
            outcome: "missed",
            event_id: Uuid::nil(),
            organization_id: Uuid::nil(),
            source: String::new(),
            event: String::new(),
            integration: None,
            attempts: None,
            error: Some(why),
        }
    }
}

/// Follows what this busbar process publishes and delivers, for the live
/// tail: the engine's in-process activity feed ([`Engine::subscribe`]),
/// limited to the viewer's scope.
/// With several processes on one database, each tail shows its own
/// process's activity.
pub struct ActivityFeed {
    engine: Engine,
    receiver: broadcast::Receiver<engine::Activity>,
    scope: OrgScope,
}

/// The most activities handed over at once.
const FEED_BATCH: usize = 200;

impl ActivityFeed {
    /// A feed of what happens from now on.
    pub fn new(engine: &Engine, scope: OrgScope) -> ActivityFeed {
        ActivityFeed {
            receiver: engine.subscribe(),
            engine: engine.clone(),
            scope,
        }
    }

    /// Waits for something to happen, then takes everything that arrived
    /// meanwhile (at most a batch). Cancel-safe: nothing is lost when the
    /// wait is abandoned. `None` when the engine stopped.
    pub async fn receive(&mut self) -> Option<Received> {
        let mut received = Received::default();
        match self.receiver.recv().await {
            Ok(activity) => received.activities.push(activity),
            Err(broadcast::error::RecvError::Lagged(n)) => received.missed += n,
            Err(broadcast::error::RecvError::Closed) => return None,
        }
        while received.activities.len() < FEED_BATCH {
            match self.receiver.try_recv() {
                Ok(activity) => received.activities.push(activity),
                Err(broadcast::error::TryRecvError::Lagged(n)) => received.missed += n,
                Err(_) => break,
            }
        }
        Some(received)
    }

    /// What was received, as the tail shows it, oldest first: only the
    /// viewer's organization's, with the reason of failures and skips
    /// (read from their rows).
    pub async fn explain(&self, received: Received) -> Vec<Activity> {
        let now = Utc::now();
        let generation = self.engine.generation();
        let mut out = Vec::with_capacity(received.activities.len() + 1);
        if received.missed > 0 {
            out.push(Activity::missed(format!(
                "{} activities went by faster than the tail could show them",
                received.missed
            )));
        }
        let mut explain = Vec::new();
        for activity in received.activities {
            let line = match activity {
                engine::Activity::Published {
                    id,
                    organization_id,
                    source,
                    event,
                } => Activity {
                    at: now,
                    outcome: "published",
                    event_id: id,
                    organization_id,
                    source,
                    event,
                    integration: None,
                    attempts: None,
                    error: None,
                },
                engine::Activity::Delivery {
                    id,
                    event_id,
                    organization_id,
                    event,
                    integration,
                    status,
                } => {
                    let outcome = match status {
                        Status::Delivered => "delivered",
                        Status::Skipped => "skipped",
                        Status::Retrying => "retrying",
                        Status::Dead => "dead",
                        Status::Pending => continue,
                    };
                    if !self.scope.includes(organization_id) {
                        continue;
                    }
                    if status != Status::Delivered {
                        explain.push((out.len(), id));
                    }
                    Activity {
                        at: now,
                        outcome,
                        event_id,
                        organization_id,
                        source: generation
                            .integration(&integration)
                            .map(|i| i.source.clone())
                            .unwrap_or_default(),
                        event,
                        integration: Some(integration),
                        attempts: None,
                        error: None,
                    }
                }
            };
            if !self.scope.includes(line.organization_id) {
                continue;
            }
            out.push(line);
        }
        if !explain.is_empty()
            && let Ok(mut tx) = self.engine.store().begin_read().await
        {
            for (index, id) in explain {
                if let Ok(Some(row)) = events::get_delivery(&mut tx, self.scope, id).await {
                    out[index].attempts = Some(row.attempts);
                    out[index].error = row.last_error;
                }
            }
            let _ = tx.rollback().await;
        }
        out
    }
}

/// Activities taken from the feed, not yet explained.
#[derive(Debug, Default)]
pub struct Received {
    activities: Vec<engine::Activity>,
    /// How many went by unseen (the feed's buffer overflowed).
    missed: u64,
}

/// The latest activity, for the live tail's first screen (newest first):
/// the newest events and their deliveries' current states (rows and
/// inferred; those not run yet left out). The stream then adds what
/// happens from the moment it connects.
pub async fn recent_activity(
    engine: &Engine,
    scope: OrgScope,
    limit: usize,
) -> Result<Vec<Activity>, StoreError> {
    let mut tx = engine.store().begin_read().await?;
    let found = newest_events(&mut tx, scope, None, limit as i64).await?;
    let deliveries =
        views::deliveries(&mut tx, scope, &engine.generation(), engine.lanes(), &found).await?;
    tx.rollback().await?;
    let mut by_event: HashMap<(Uuid, Uuid), Vec<DeliveryView>> = HashMap::new();
    for delivery in deliveries {
        by_event
            .entry((delivery.organization_id, delivery.event_id))
            .or_default()
            .push(delivery);
    }
    let mut out = Vec::new();
    for event in found {
        let key = (event.envelope.organization_id, event.envelope.id);
        for delivery in by_event.remove(&key).unwrap_or_default() {
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
                attempts: delivery.recorded.then_some(delivery.attempts),
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
    out.sort_by_key(|a| std::cmp::Reverse(a.at));
    out.truncate(limit);
    Ok(out)
}

// ---------------------------------------------------------------------------
// Redeliver by filter: the engine's own functions, as the API and
// `busbar redeliver` use them.

/// How many events and deliveries a redelivery with `filter` would run
/// again now (the same matching as [`redeliver`]).
pub async fn redeliver_preview(
    engine: &Engine,
    filter: &RedeliverFilter,
) -> Result<RedeliverCount, RedeliverError> {
    engine.redeliver_preview(filter).await
}

/// Runs the deliveries matching `filter` again. `request_id` makes it
/// idempotent (the confirmation page carries one, so a form sent twice
/// redelivers once); `caller` is the key's organization, whose request ids
/// these are.
pub async fn redeliver(
    engine: &Engine,
    filter: &RedeliverFilter,
    request_id: Option<String>,
    caller: Option<Uuid>,
) -> Result<Redelivered, RedeliverError> {
    engine
        .redeliver(
            RedeliverRequest {
                filter: filter.clone(),
                request_id,
                caller,
            },
            None,
        )
        .await
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
