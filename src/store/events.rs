//! Read models over the engine's own tables: events and the delivery rows
//! (the exceptions), as the API, the console and the tests see them, and
//! the delivery states ([`Status`], defined in [`crate::delivery`]). Nothing
//! here writes: the writes are in [`super::log`] (the event log, with
//! [`super::log::NewEvent`]) and [`super::lanes`] (cursors and delivery
//! rows); deliveries without a row are inferred by [`super::views`].
//!
//! Every read that the API or the console serves takes the caller's
//! [`OrgScope`] and filters by it in SQL.
//!
//! Each query is written once with the dialect's placeholders and table
//! names (a [`Statement`], built once per database); the values that
//! differ in representation go through [`Id`], [`Time`] and [`Doc`].

use std::collections::HashMap;

use serde::Serialize;
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::dialect::{EngineTable, Statement};
use super::scope::OrgScope;
use super::types::{Doc, Id, Position, Time};
use super::{DbTx, Dialect, StoreError};
pub use crate::delivery::Status;
use crate::envelope::Envelope;
use crate::on_tx;

/// Rows per multi-row INSERT (well under both databases' parameter limits).
const CHUNK: usize = 500;

/// A stored event, as read back.
#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    #[serde(flatten)]
    pub envelope: Envelope,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Set only on events routed by busbar before delivery v2.
    pub processed_at: Option<chrono::DateTime<chrono::Utc>>,
    pub parent_id: Option<Uuid>,
    pub seq: i64,
    /// Its place in the log.
    pub position: Position,
}

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

const EVENT_COLUMNS: &str = "e.id, e.organization_id, e.source_product, e.event_name, e.event_data, \
     e.occurred_at, e.created_at, e.processed_at, e.parent_id, e.seq, e.xid";

fn stored_event(row: EventTuple) -> StoredEvent {
    let (
        id,
        organization_id,
        source,
        event,
        data,
        occurred_at,
        created_at,
        processed_at,
        parent_id,
        seq,
        xid,
    ) = row;
    StoredEvent {
        envelope: Envelope {
            id: id.0,
            source,
            event,
            organization_id: organization_id.0,
            occurred_at: occurred_at.0,
            data: data.0,
        },
        created_at: created_at.0,
        processed_at: processed_at.map(|t| t.0),
        parent_id: parent_id.map(|p| p.0),
        seq,
        position: Position::new(xid, seq),
    }
}

/// The events with id `id` in `scope` (ids are unique per organization, so
/// a platform caller may get several).
pub async fn get_event(
    tx: &mut DbTx,
    scope: OrgScope,
    id: Uuid,
) -> Result<Vec<StoredEvent>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let events = d.engine_table(EngineTable::Events);
        let [p1, p2] = d.params();
        format!(
            "SELECT {EVENT_COLUMNS} FROM {events} e \
              WHERE e.id = {p1} AND ({p2} IS NULL OR e.organization_id = {p2}) ORDER BY e.seq"
        )
    });
    let sql = SQL.get(tx.dialect());
    let rows: Vec<EventTuple> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(Id(id))
        .bind(scope.bind())
        .fetch_all(conn)
        .await)?;
    Ok(rows.into_iter().map(stored_event).collect())
}

/// One event handed to one route of one integration, as the API
/// (`Delivery`), the console and `busbar test` show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Delivery)]
pub struct DeliveryView {
    pub id: Uuid,
    pub event_id: Uuid,
    pub organization_id: Uuid,
    /// The integration's id.
    pub integration: String,
    /// The route: the integration's route for `route_event` named
    /// `route_name` (`null`: the event's route without a name);
    /// `route_ordinal` is its position among the event's routes.
    pub route_event: String,
    pub route_ordinal: i32,
    pub route_name: Option<String>,
    pub source: String,
    pub target: String,
    pub status: Status,
    pub attempts: i32,
    /// When it runs next, if pending or retrying.
    pub next_attempt_at: chrono::DateTime<chrono::Utc>,
    /// Why it failed or was skipped.
    pub last_error: Option<String>,
    /// Skipped by an operator: the reason they gave (the failure stays in
    /// `last_error`).
    pub skip_reason: Option<String>,
    /// Skipped by an operator: who (`key <id>` for an API or console key,
    /// `cli` for the command line).
    pub skipped_by: Option<String>,
    /// The step (1-based) it failed at, when known.
    pub error_step: Option<i32>,
    /// The generation that last ran it.
    pub generation: Option<i64>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub completed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The integration's order key of the event (`order_by:`).
    pub order_key: Option<String>,
    /// Whether the delivery has a row (false: it succeeded on its first
    /// pass, or has not run yet, and its state is inferred from its lane).
    pub recorded: bool,
    /// For a delivery waiting behind its key: the delivery it waits on.
    pub waiting_on: Option<Uuid>,
}

/// A row of `integrations.deliveries` as read for a [`DeliveryView`]:
/// select [`DELIVERY_COLUMNS`] from `deliveries d`.
#[derive(sqlx::FromRow)]
pub(crate) struct DeliveryViewRow {
    id: Id,
    event_id: Id,
    organization_id: Id,
    integration_id: String,
    route_event: String,
    route_ordinal: i32,
    route_name: Option<String>,
    source_product: String,
    target_product: String,
    status: String,
    attempts: i32,
    next_attempt_at: Time,
    last_error: Option<String>,
    error_step: Option<i32>,
    generation: Option<i64>,
    skip_reason: Option<String>,
    skipped_by: Option<String>,
    created_at: Time,
    updated_at: Time,
    completed_at: Option<Time>,
    order_key: Option<String>,
}

pub(crate) const DELIVERY_COLUMNS: &str = "d.id, d.event_id, d.organization_id, d.integration_id, d.route_event, d.route_ordinal, d.route_name, \
     d.source_product, d.target_product, d.status, d.attempts, d.next_attempt_at, d.last_error, d.error_step, \
     d.generation, d.skip_reason, d.skipped_by, d.created_at, d.updated_at, d.completed_at, d.order_key";

impl From<DeliveryViewRow> for DeliveryView {
    fn from(row: DeliveryViewRow) -> DeliveryView {
        DeliveryView {
            id: row.id.0,
            event_id: row.event_id.0,
            organization_id: row.organization_id.0,
            integration: row.integration_id,
            route_event: row.route_event,
            route_ordinal: row.route_ordinal,
            route_name: row.route_name.filter(|n| !n.is_empty()),
            source: row.source_product,
            target: row.target_product,
            status: Status::parse(&row.status).unwrap_or(Status::Pending),
            attempts: row.attempts,
            next_attempt_at: row.next_attempt_at.0,
            last_error: row.last_error,
            error_step: row.error_step,
            generation: row.generation,
            skip_reason: row.skip_reason,
            skipped_by: row.skipped_by,
            created_at: row.created_at.0,
            updated_at: row.updated_at.0,
            completed_at: row.completed_at.map(|t| t.0),
            order_key: row.order_key,
            recorded: true,
            waiting_on: None,
        }
    }
}

/// One delivery's row by id, in `scope`.
pub async fn get_delivery(
    tx: &mut DbTx,
    scope: OrgScope,
    id: Uuid,
) -> Result<Option<DeliveryView>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let deliveries = d.engine_table(EngineTable::Deliveries);
        let [p1, p2] = d.params();
        format!(
            "SELECT {DELIVERY_COLUMNS} FROM {deliveries} d \
              WHERE d.id = {p1} AND ({p2} IS NULL OR d.organization_id = {p2})"
        )
    });
    let sql = SQL.get(tx.dialect());
    let row: Option<DeliveryViewRow> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(Id(id))
        .bind(scope.bind())
        .fetch_optional(conn)
        .await)?;
    Ok(row.map(DeliveryView::from))
}

/// The delivery rows of the event `(organization, event_id)`; none when
/// `scope` does not include that organization.
pub async fn deliveries_of(
    tx: &mut DbTx,
    scope: OrgScope,
    organization: Uuid,
    event_id: Uuid,
) -> Result<Vec<DeliveryView>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let deliveries = d.engine_table(EngineTable::Deliveries);
        let [p1, p2, p3] = d.params();
        format!(
            "SELECT {DELIVERY_COLUMNS} FROM {deliveries} d \
              WHERE d.organization_id = {p1} AND d.event_id = {p2} \
                AND ({p3} IS NULL OR d.organization_id = {p3}) \
              ORDER BY d.integration_id, d.route_event, d.route_ordinal"
        )
    });
    let sql = SQL.get(tx.dialect());
    let rows: Vec<DeliveryViewRow> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(Id(organization))
        .bind(Id(event_id))
        .bind(scope.bind())
        .fetch_all(conn)
        .await)?;
    Ok(rows.into_iter().map(DeliveryView::from).collect())
}

/// Delivery rows in any state, for tests and tools: `status` filters.
pub async fn deliveries_with_status(
    tx: &mut DbTx,
    status: Option<Status>,
) -> Result<Vec<DeliveryView>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let deliveries = d.engine_table(EngineTable::Deliveries);
        let [p1] = d.params();
        format!(
            "SELECT {DELIVERY_COLUMNS} FROM {deliveries} d WHERE ({p1} IS NULL OR d.status = {p1}) \
             ORDER BY d.created_at, d.id"
        )
    });
    let sql = SQL.get(tx.dialect());
    let rows: Vec<DeliveryViewRow> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(status.map(Status::as_str))
        .fetch_all(conn)
        .await)?;
    Ok(rows.into_iter().map(DeliveryView::from).collect())
}

/// Counts of delivery rows in `scope` by integration and status.
/// Deliveries that succeeded on their first pass have no row: the lanes
/// count them.
pub async fn counts(
    tx: &mut DbTx,
    scope: OrgScope,
) -> Result<HashMap<String, HashMap<Status, i64>>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let deliveries = d.engine_table(EngineTable::Deliveries);
        let [p1] = d.params();
        format!(
            "SELECT integration_id, status, COUNT(*) FROM {deliveries} \
             WHERE ({p1} IS NULL OR organization_id = {p1}) GROUP BY integration_id, status"
        )
    });
    let sql = SQL.get(tx.dialect());
    let rows: Vec<(String, String, i64)> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(scope.bind())
        .fetch_all(conn)
        .await)?;
    let mut out: HashMap<String, HashMap<Status, i64>> = HashMap::new();
    for (integration, status, count) in rows {
        if let Some(status) = Status::parse(&status) {
            out.entry(integration).or_default().insert(status, count);
        }
    }
    Ok(out)
}

/// Which events [`list_events`] returns.
#[derive(Debug, Clone)]
pub struct EventFilter {
    /// Only the events of these organizations.
    pub scope: OrgScope,
    pub source: Option<String>,
    pub event: Option<String>,
    /// Only events with at least one delivery in this state.
    pub status: Option<Status>,
    /// Stored at or after.
    pub since: Option<Time>,
    /// Stored before.
    pub until: Option<Time>,
    /// Only events published before this one (`seq` below it): the cursor.
    pub before_seq: Option<i64>,
    /// Only this event id.
    pub id: Option<Uuid>,
}

impl EventFilter {
    /// Every event in `scope`.
    pub fn all(scope: OrgScope) -> EventFilter {
        EventFilter {
            scope,
            source: None,
            event: None,
            status: None,
            since: None,
            until: None,
            before_seq: None,
            id: None,
        }
    }
}

/// Events matching `filter`, newest first, at most `limit`.
pub async fn list_events(
    tx: &mut DbTx,
    filter: &EventFilter,
    limit: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let events = d.engine_table(EngineTable::Events);
        let deliveries = d.engine_table(EngineTable::Deliveries);
        let [p1, p2, p3, p4, p5, p6, p7, p8, p9] = d.params();
        format!(
            "SELECT {EVENT_COLUMNS} FROM {events} e \
              WHERE ({p1} IS NULL OR e.organization_id = {p1}) \
                AND ({p2} IS NULL OR e.source_product = {p2}) \
                AND ({p3} IS NULL OR e.event_name = {p3}) \
                AND ({p4} IS NULL OR e.created_at >= {p4}) \
                AND ({p5} IS NULL OR e.created_at < {p5}) \
                AND ({p6} IS NULL OR e.seq < {p6}) \
                AND ({p7} IS NULL OR EXISTS (SELECT 1 FROM {deliveries} d \
                                        WHERE d.organization_id = e.organization_id AND d.event_id = e.id \
                                          AND d.status = {p7})) \
                AND ({p9} IS NULL OR e.id = {p9}) \
              ORDER BY e.seq DESC LIMIT {p8}"
        )
    });
    let sql = SQL.get(tx.dialect());
    let rows: Vec<EventTuple> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(filter.scope.bind())
        .bind(filter.source.as_deref())
        .bind(filter.event.as_deref())
        .bind(filter.since)
        .bind(filter.until)
        .bind(filter.before_seq)
        .bind(filter.status.map(Status::as_str))
        .bind(limit)
        .bind(filter.id.map(Id))
        .fetch_all(conn)
        .await)?;
    Ok(rows.into_iter().map(stored_event).collect())
}

/// Counts of delivery rows by status for each of `events` (organization,
/// id).
pub async fn delivery_counts_of(
    tx: &mut DbTx,
    events: &[(Uuid, Uuid)],
) -> Result<HashMap<(Uuid, Uuid), HashMap<Status, i64>>, StoreError> {
    let mut out: HashMap<(Uuid, Uuid), HashMap<Status, i64>> = HashMap::new();
    for chunk in events.chunks(CHUNK / 2) {
        let d = tx.dialect();
        let deliveries = d.engine_table(EngineTable::Deliveries);
        let events: Vec<String> = (0..chunk.len())
            .map(|i| {
                let (organization, event) = (d.param(2 * i + 1), d.param(2 * i + 2));
                format!("(organization_id = {organization} AND event_id = {event})")
            })
            .collect();
        let sql = AssertSqlSafe(format!(
            "SELECT organization_id, event_id, status, COUNT(*) FROM {deliveries} WHERE {} \
             GROUP BY organization_id, event_id, status",
            events.join(" OR ")
        ));
        let rows: Vec<(Id, Id, String, i64)> = on_tx!(&mut *tx, |conn| {
            let mut query = sqlx::query_as(sql);
            for (organization, id) in chunk {
                query = query.bind(Id(*organization)).bind(Id(*id));
            }
            query.fetch_all(conn).await
        })?;
        for (organization, event, status, count) in rows {
            if let Some(status) = Status::parse(&status) {
                out.entry((organization.0, event.0))
                    .or_default()
                    .insert(status, count);
            }
        }
    }
    Ok(out)
}

/// The most recent failure of an integration's deliveries.
#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    pub delivery_id: Uuid,
    pub event_id: Uuid,
    pub message: String,
    /// The step it failed at (1-based), when known.
    pub step: Option<i32>,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// For each of `integrations`, its most recent failure: a dead delivery,
/// or one waiting to retry (skip reasons are not failures), among the
/// deliveries in `scope`. One indexed look per integration (there are few)
/// rather than a window over every exception row.
pub async fn last_errors(
    tx: &mut DbTx,
    scope: OrgScope,
    integrations: &[String],
) -> Result<HashMap<String, LastError>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let deliveries = d.engine_table(EngineTable::Deliveries);
        let [p1, p2] = d.params();
        format!(
            "SELECT d.id, d.event_id, d.last_error, d.error_step, d.updated_at \
               FROM {deliveries} d \
              WHERE d.integration_id = {p1} AND d.status IN ('dead', 'retrying') AND d.last_error IS NOT NULL \
                AND ({p2} IS NULL OR d.organization_id = {p2}) \
              ORDER BY d.updated_at DESC, d.id DESC LIMIT 1"
        )
    });
    let sql = SQL.get(tx.dialect());
    let mut out = HashMap::new();
    for integration in integrations {
        type Row = (Id, Id, String, Option<i32>, Time);
        let row: Option<Row> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
            .bind(integration.as_str())
            .bind(scope.bind())
            .fetch_optional(conn)
            .await)?;
        if let Some((id, event, message, step, at)) = row {
            let last = LastError {
                delivery_id: id.0,
                event_id: event.0,
                message,
                step,
                at: at.0,
            };
            out.insert(integration.clone(), last);
        }
    }
    Ok(out)
}

/// How many delivery rows are open (pending or retrying).
pub async fn open_count(tx: &mut DbTx) -> Result<i64, StoreError> {
    Ok(open_counts(tx).await?.values().sum())
}

/// How many delivery rows are open (pending or retrying), by integration.
pub async fn open_counts(tx: &mut DbTx) -> Result<HashMap<String, i64>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let deliveries = d.engine_table(EngineTable::Deliveries);
        format!(
            "SELECT integration_id, COUNT(*) FROM {deliveries} \
              WHERE status IN ('pending', 'retrying') GROUP BY integration_id"
        )
    });
    let sql = SQL.get(tx.dialect());
    let rows: Vec<(String, i64)> =
        on_tx!(&mut *tx, |conn| sqlx::query_as(sql).fetch_all(conn).await)?;
    Ok(rows.into_iter().collect())
}

/// The events emitted by the deliveries of `parent` (an event of
/// `organization`), oldest first; none when `scope` does not include that
/// organization.
pub async fn children_of(
    tx: &mut DbTx,
    scope: OrgScope,
    organization: Uuid,
    parent: Uuid,
) -> Result<Vec<StoredEvent>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let events = d.engine_table(EngineTable::Events);
        let [p1, p2, p3] = d.params();
        format!(
            "SELECT {EVENT_COLUMNS} FROM {events} e \
              WHERE e.parent_id = {p1} AND e.organization_id = {p2} \
                AND ({p3} IS NULL OR e.organization_id = {p3}) ORDER BY e.seq"
        )
    });
    let sql = SQL.get(tx.dialect());
    let rows: Vec<EventTuple> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(Id(parent))
        .bind(Id(organization))
        .bind(scope.bind())
        .fetch_all(conn)
        .await)?;
    Ok(rows.into_iter().map(stored_event).collect())
}

/// For a pending delivery row: the delivery its key waits on (the first
/// open or, when it blocks, dead row of the same integration and key at an
/// earlier position).
pub async fn waiting_on(tx: &mut DbTx, view: &DeliveryView) -> Result<Option<Uuid>, StoreError> {
    let Some(key) = &view.order_key else {
        return Ok(None);
    };
    static SQL: Statement = Statement::new(|d| {
        let deliveries = d.engine_table(EngineTable::Deliveries);
        let [p1, p2, p3] = d.params();
        format!(
            "SELECT d.id FROM {deliveries} d \
              WHERE d.integration_id = {p1} AND d.order_key = {p2} AND d.status IN ('retrying', 'dead', 'pending') \
                AND d.id <> {p3} \
                AND (d.event_xid, d.event_seq) <= (SELECT x.event_xid, x.event_seq FROM {deliveries} x WHERE x.id = {p3}) \
              ORDER BY d.event_xid, d.event_seq LIMIT 1"
        )
    });
    let sql = SQL.get(tx.dialect());
    let row: Option<(Id,)> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(view.integration.as_str())
        .bind(key.as_str())
        .bind(Id(view.id))
        .fetch_optional(conn)
        .await)?;
    Ok(row.map(|(id,)| id.0))
}

/// A key held back by one of its deliveries.
#[derive(Debug, Clone, Serialize)]
pub struct BlockedKey {
    pub key: String,
    /// The delivery it waits on, and that delivery's state.
    pub delivery_id: Uuid,
    pub event_id: Uuid,
    pub status: Status,
    pub attempts: i32,
    pub next_attempt_at: chrono::DateTime<chrono::Utc>,
    pub last_error: Option<String>,
    /// Deliveries of the key queued behind it.
    pub waiting: i64,
}

/// The keys of an integration held back by a retrying delivery (or a dead
/// one, when `dead_blocks`) in `scope`, most recent first, at most `limit`.
pub async fn blocked_keys(
    tx: &mut DbTx,
    scope: OrgScope,
    integration: &str,
    dead_blocks: bool,
    limit: i64,
) -> Result<Vec<BlockedKey>, StoreError> {
    fn blocked_keys_sql(d: Dialect, statuses: &str) -> String {
        let deliveries = d.engine_table(EngineTable::Deliveries);
        let [p1, p2, p3] = d.params();
        format!(
            "SELECT h.order_key, h.id, h.event_id, h.status, h.attempts, h.next_attempt_at, h.last_error, \
                (SELECT COUNT(*) FROM {deliveries} p \
                  WHERE p.integration_id = h.integration_id AND p.lane = h.lane AND p.order_key = h.order_key \
                    AND p.status = 'pending') AS waiting \
           FROM {deliveries} h \
          WHERE h.integration_id = {p1} AND h.status IN {statuses} AND h.order_key IS NOT NULL \
            AND ({p2} IS NULL OR h.organization_id = {p2}) \
            AND (h.status = 'retrying' OR EXISTS (SELECT 1 FROM {deliveries} q \
                  WHERE q.integration_id = h.integration_id AND q.lane = h.lane AND q.order_key = h.order_key \
                    AND q.status = 'pending')) \
          ORDER BY h.updated_at DESC LIMIT {p3}"
        )
    }
    static RETRYING: Statement = Statement::new(|d| blocked_keys_sql(d, "('retrying')"));
    static RETRYING_OR_DEAD: Statement =
        Statement::new(|d| blocked_keys_sql(d, "('retrying', 'dead')"));
    let sql = if dead_blocks {
        &RETRYING_OR_DEAD
    } else {
        &RETRYING
    }
    .get(tx.dialect());
    type Row = (String, Id, Id, String, i32, Time, Option<String>, i64);
    let rows: Vec<Row> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(integration)
        .bind(scope.bind())
        .bind(limit)
        .fetch_all(conn)
        .await)?;
    Ok(rows
        .into_iter()
        .map(
            |(key, id, event, status, attempts, next, error, waiting)| BlockedKey {
                key,
                delivery_id: id.0,
                event_id: event.0,
                status: Status::parse(&status).unwrap_or(Status::Retrying),
                attempts,
                next_attempt_at: next.0,
                last_error: error,
                waiting,
            },
        )
        .collect())
}
