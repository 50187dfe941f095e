//! The engine's own tables: events, deliveries and integration state.
//!
//! Queries are written once, for PostgreSQL, and rewritten for SQLite by
//! [`Dialect::sql`]; the values that differ in representation go through
//! [`Id`], [`Time`] and [`Doc`].

use std::collections::HashMap;

use serde::Serialize;
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::types::{Doc, Id, Time};
use super::{DbTx, Dialect, StoreError};
use crate::envelope::Envelope;
use crate::on_tx;

/// Rows per multi-row INSERT (well under both databases' parameter limits).
const CHUNK: usize = 500;

/// An event about to be stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub envelope: Envelope,
    pub idempotency_key: Option<String>,
    /// The event whose delivery emitted this one.
    pub parent_id: Option<Uuid>,
}

/// A delivery about to be created.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: Uuid,
    pub event_id: Uuid,
    pub organization_id: Uuid,
    pub integration_id: String,
    pub route_event: String,
    pub route_ordinal: i32,
    pub source_product: String,
    pub target_product: String,
}

/// Delivery states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Delivered,
    Skipped,
    Dead,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Pending,
        Status::Delivered,
        Status::Skipped,
        Status::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Delivered => "delivered",
            Status::Skipped => "skipped",
            Status::Dead => "dead",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Inserts events, skipping those whose id (or organization and
/// idempotency key) is already stored. Returns, for each input in order,
/// the stored event's id and whether this call inserted it.
pub async fn insert_events(
    tx: &mut DbTx,
    events: &[NewEvent],
    now: Time,
) -> Result<Vec<(Uuid, bool)>, StoreError> {
    let mut inserted = std::collections::HashSet::new();
    for chunk in events.chunks(CHUNK) {
        let ids: Vec<(Id,)> = match &mut *tx {
            // PostgreSQL: one array per column, so the statement text is
            // the same for every batch size and stays prepared.
            DbTx::Postgres(conn) => {
                sqlx::query_as(
                    "INSERT INTO integrations.events (id, organization_id, source_product, event_name, event_data, \
                     occurred_at, created_at, processed_at, idempotency_key, parent_id) \
                     SELECT u.id, u.org, u.source, u.event, u.data::jsonb, u.occurred, $1, $1, u.key, u.parent \
                     FROM UNNEST($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], \
                                 $8::text[], $9::uuid[]) AS u(id, org, source, event, data, occurred, key, parent) \
                     ON CONFLICT DO NOTHING RETURNING id",
                )
                .bind(now)
                .bind(chunk.iter().map(|e| e.envelope.id).collect::<Vec<Uuid>>())
                .bind(chunk.iter().map(|e| e.envelope.organization_id).collect::<Vec<Uuid>>())
                .bind(chunk.iter().map(|e| e.envelope.source.clone()).collect::<Vec<String>>())
                .bind(chunk.iter().map(|e| e.envelope.event.clone()).collect::<Vec<String>>())
                .bind(chunk.iter().map(|e| e.envelope.data.to_string()).collect::<Vec<String>>())
                .bind(chunk.iter().map(|e| e.envelope.occurred_at).collect::<Vec<_>>())
                .bind(chunk.iter().map(|e| e.idempotency_key.clone()).collect::<Vec<Option<String>>>())
                .bind(chunk.iter().map(|e| e.parent_id).collect::<Vec<Option<Uuid>>>())
                .fetch_all(&mut **conn)
                .await?
            }
            DbTx::Sqlite(conn) => {
                // Anonymous placeholders, bound in text order (see
                // `Dialect::find_many` on why not `?NNN`).
                let row = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
                let sql = format!(
                    "INSERT INTO \"integrations.events\" (id, organization_id, source_product, event_name, event_data, \
                     occurred_at, created_at, processed_at, idempotency_key, parent_id) VALUES {} \
                     ON CONFLICT DO NOTHING RETURNING id",
                    vec![row; chunk.len()].join(", ")
                );
                let mut query = sqlx::query_as(AssertSqlSafe(sql));
                for event in chunk {
                    let e = &event.envelope;
                    query = query
                        .bind(Id(e.id))
                        .bind(Id(e.organization_id))
                        .bind(e.source.as_str())
                        .bind(e.event.as_str())
                        .bind(Doc(e.data.clone()))
                        .bind(Time(e.occurred_at))
                        .bind(now)
                        .bind(now)
                        .bind(event.idempotency_key.as_deref())
                        .bind(event.parent_id.map(Id));
                }
                query.fetch_all(&mut **conn).await?
            }
        };
        inserted.extend(ids.into_iter().map(|(id,)| id.0));
    }
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        let id = event.envelope.id;
        if inserted.contains(&id) {
            out.push((id, true));
            continue;
        }
        // A duplicate: by id, or by idempotency key with another id.
        let existing = match &event.idempotency_key {
            Some(key) => find_by_key(tx, event.envelope.organization_id, key)
                .await?
                .unwrap_or(id),
            None => id,
        };
        out.push((existing, false));
    }
    Ok(out)
}

/// The id of the event stored under an organization's idempotency key.
pub async fn find_by_key(
    tx: &mut DbTx,
    organization: Uuid,
    key: &str,
) -> Result<Option<Uuid>, StoreError> {
    let sql = AssertSqlSafe(tx.dialect().sql(
        "SELECT id FROM integrations.events WHERE organization_id = $1 AND idempotency_key = $2",
    ));
    let row: Option<(Id,)> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(Id(organization))
        .bind(key)
        .fetch_optional(conn)
        .await)?;
    Ok(row.map(|(id,)| id.0))
}

/// Creates deliveries (skipping any that already exist).
pub async fn insert_deliveries(
    tx: &mut DbTx,
    deliveries: &[NewDelivery],
    now: Time,
) -> Result<(), StoreError> {
    for chunk in deliveries.chunks(CHUNK) {
        match &mut *tx {
            DbTx::Postgres(conn) => {
                sqlx::query(
                    "INSERT INTO integrations.deliveries (id, event_id, organization_id, integration_id, route_event, \
                     route_ordinal, source_product, target_product, status, attempts, next_attempt_at, created_at, updated_at) \
                     SELECT u.id, u.event_id, u.org, u.integration, u.route_event, u.ordinal, u.source, u.target, \
                            'pending', 0, $1, $1, $1 \
                     FROM UNNEST($2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::int[], $8::text[], \
                                 $9::text[]) AS u(id, event_id, org, integration, route_event, ordinal, source, target) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(now)
                .bind(chunk.iter().map(|d| d.id).collect::<Vec<Uuid>>())
                .bind(chunk.iter().map(|d| d.event_id).collect::<Vec<Uuid>>())
                .bind(chunk.iter().map(|d| d.organization_id).collect::<Vec<Uuid>>())
                .bind(chunk.iter().map(|d| d.integration_id.clone()).collect::<Vec<String>>())
                .bind(chunk.iter().map(|d| d.route_event.clone()).collect::<Vec<String>>())
                .bind(chunk.iter().map(|d| d.route_ordinal).collect::<Vec<i32>>())
                .bind(chunk.iter().map(|d| d.source_product.clone()).collect::<Vec<String>>())
                .bind(chunk.iter().map(|d| d.target_product.clone()).collect::<Vec<String>>())
                .execute(&mut **conn)
                .await?;
            }
            DbTx::Sqlite(conn) => {
                let row = "(?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)";
                let sql = format!(
                    "INSERT INTO \"integrations.deliveries\" (id, event_id, organization_id, integration_id, route_event, \
                     route_ordinal, source_product, target_product, status, attempts, next_attempt_at, created_at, updated_at) \
                     VALUES {} ON CONFLICT DO NOTHING",
                    vec![row; chunk.len()].join(", ")
                );
                let mut query = sqlx::query(AssertSqlSafe(sql));
                for d in chunk {
                    query = query
                        .bind(Id(d.id))
                        .bind(Id(d.event_id))
                        .bind(Id(d.organization_id))
                        .bind(d.integration_id.as_str())
                        .bind(d.route_event.as_str())
                        .bind(d.route_ordinal)
                        .bind(d.source_product.as_str())
                        .bind(d.target_product.as_str())
                        .bind(now)
                        .bind(now)
                        .bind(now);
                }
                query.execute(&mut **conn).await?;
            }
        }
    }
    Ok(())
}

/// Marks events as routed.
pub async fn mark_routed(tx: &mut DbTx, ids: &[Uuid], now: Time) -> Result<(), StoreError> {
    let dialect = tx.dialect();
    for chunk in ids.chunks(CHUNK) {
        let params: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = AssertSqlSafe(dialect.sql(&format!(
            "UPDATE integrations.events SET processed_at = $1 WHERE id IN ({})",
            params.join(", ")
        )));
        on_tx!(&mut *tx, |conn| {
            let mut query = sqlx::query(sql).bind(now);
            for id in chunk {
                query = query.bind(Id(*id));
            }
            query.execute(conn).await.map(|r| r.rows_affected())
        })?;
    }
    Ok(())
}

/// A stored event, as read back.
#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    #[serde(flatten)]
    pub envelope: Envelope,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub processed_at: Option<chrono::DateTime<chrono::Utc>>,
    pub parent_id: Option<Uuid>,
    pub seq: i64,
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
);

const EVENT_COLUMNS: &str = "e.id, e.organization_id, e.source_product, e.event_name, e.event_data, \
     e.occurred_at, e.created_at, e.processed_at, e.parent_id, e.seq";

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
    }
}

/// One event by id (any organization: the caller scopes).
pub async fn get_event(tx: &mut DbTx, id: Uuid) -> Result<Option<StoredEvent>, StoreError> {
    let sql = AssertSqlSafe(tx.dialect().sql(&format!(
        "SELECT {EVENT_COLUMNS} FROM integrations.events e WHERE e.id = $1"
    )));
    let row: Option<EventTuple> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(Id(id))
        .fetch_optional(conn)
        .await)?;
    Ok(row.map(stored_event))
}

/// Events no busbar process has routed yet (inserted by a product in its
/// own transaction), oldest first, locked against other routers.
pub async fn claim_unrouted(tx: &mut DbTx, limit: i64) -> Result<Vec<StoredEvent>, StoreError> {
    let lock = match tx.dialect() {
        Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        Dialect::Sqlite => "",
    };
    let sql = AssertSqlSafe(tx.dialect().sql(&format!(
        "SELECT {EVENT_COLUMNS} FROM integrations.events e WHERE e.processed_at IS NULL ORDER BY e.seq LIMIT $1{lock}"
    )));
    let rows: Vec<EventTuple> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(limit)
        .fetch_all(conn)
        .await)?;
    Ok(rows.into_iter().map(stored_event).collect())
}

/// A delivery claimed for processing, with its event.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: Uuid,
    pub integration_id: String,
    pub route_event: String,
    pub route_ordinal: usize,
    pub attempts: i32,
    pub event: Envelope,
}

/// Claims up to `limit` due deliveries, oldest first. On PostgreSQL the
/// rows stay locked (`FOR UPDATE SKIP LOCKED`) until the transaction ends,
/// so concurrent workers and processes never run the same delivery; on
/// SQLite the transaction holds the database's write lock.
pub async fn claim_due(tx: &mut DbTx, now: Time, limit: i64) -> Result<Vec<Claimed>, StoreError> {
    let lock = match tx.dialect() {
        Dialect::Postgres => " FOR UPDATE OF d SKIP LOCKED",
        Dialect::Sqlite => "",
    };
    let sql = AssertSqlSafe(tx.dialect().sql(&format!(
        "SELECT d.id, d.integration_id, d.route_event, d.route_ordinal, d.attempts, \
                e.id, e.organization_id, e.source_product, e.event_name, e.event_data, e.occurred_at \
           FROM integrations.deliveries d JOIN integrations.events e ON e.id = d.event_id \
          WHERE d.status = 'pending' AND d.next_attempt_at <= $1 \
          ORDER BY d.next_attempt_at, d.id LIMIT $2{lock}"
    )));
    type Tuple = (
        Id,
        String,
        String,
        i32,
        i32,
        Id,
        Id,
        String,
        String,
        Doc,
        Time,
    );
    let rows: Vec<Tuple> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(now)
        .bind(limit)
        .fetch_all(conn)
        .await)?;
    Ok(rows
        .into_iter()
        .map(
            |(
                id,
                integration_id,
                route_event,
                ordinal,
                attempts,
                event_id,
                org,
                source,
                event,
                data,
                occurred,
            )| Claimed {
                id: id.0,
                integration_id,
                route_event,
                route_ordinal: ordinal.max(0) as usize,
                attempts,
                event: Envelope {
                    id: event_id.0,
                    source,
                    event,
                    organization_id: org.0,
                    occurred_at: occurred.0,
                    data: data.0,
                },
            },
        )
        .collect())
}

/// A delivery's new state after an attempt.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: Uuid,
    pub status: Status,
    pub attempts: i32,
    pub next_attempt_at: Time,
    pub error: Option<String>,
    pub error_step: Option<i32>,
    pub generation: i64,
}

/// Records attempts' outcomes, in one statement per chunk.
pub async fn record_outcomes(
    tx: &mut DbTx,
    outcomes: &[Outcome],
    now: Time,
) -> Result<(), StoreError> {
    const SET: &str = "status = v.status, attempts = v.attempts, next_attempt_at = v.next_attempt_at, \
         last_error = v.last_error, error_step = v.error_step, generation = v.generation, updated_at = $1, \
         completed_at = CASE WHEN v.status = 'pending' THEN NULL ELSE $1 END";
    for chunk in outcomes.chunks(CHUNK) {
        match &mut *tx {
            DbTx::Postgres(conn) => {
                sqlx::query(AssertSqlSafe(format!(
                    "UPDATE integrations.deliveries AS d SET {SET} \
                     FROM UNNEST($2::uuid[], $3::text[], $4::int[], $5::timestamptz[], $6::text[], $7::int[], $8::bigint[]) \
                          AS v(id, status, attempts, next_attempt_at, last_error, error_step, generation) \
                     WHERE d.id = v.id"
                )))
                .bind(now)
                .bind(chunk.iter().map(|o| o.id).collect::<Vec<Uuid>>())
                .bind(chunk.iter().map(|o| o.status.as_str().to_owned()).collect::<Vec<String>>())
                .bind(chunk.iter().map(|o| o.attempts).collect::<Vec<i32>>())
                .bind(chunk.iter().map(|o| o.next_attempt_at.0).collect::<Vec<_>>())
                .bind(chunk.iter().map(|o| o.error.clone()).collect::<Vec<Option<String>>>())
                .bind(chunk.iter().map(|o| o.error_step).collect::<Vec<Option<i32>>>())
                .bind(chunk.iter().map(|o| o.generation).collect::<Vec<i64>>())
                .execute(&mut **conn)
                .await?;
            }
            DbTx::Sqlite(conn) => {
                let row = "(?, ?, ?, ?, ?, ?, ?, ?)";
                let sql = format!(
                    "WITH v (id, status, attempts, next_attempt_at, last_error, error_step, generation, now) AS (VALUES {}) \
                     UPDATE \"integrations.deliveries\" AS d SET {} FROM v WHERE d.id = v.id",
                    vec![row; chunk.len()].join(", "),
                    SET.replace("$1", "v.now")
                );
                let mut query = sqlx::query(AssertSqlSafe(sql));
                for outcome in chunk {
                    query = query
                        .bind(Id(outcome.id))
                        .bind(outcome.status.as_str())
                        .bind(outcome.attempts)
                        .bind(outcome.next_attempt_at)
                        .bind(outcome.error.as_deref())
                        .bind(outcome.error_step)
                        .bind(outcome.generation)
                        .bind(now);
                }
                query.execute(&mut **conn).await?;
            }
        }
    }
    Ok(())
}

/// Marks every pending delivery of an integration as skipped (the
/// integration was removed from the configuration).
pub async fn skip_pending(
    tx: &mut DbTx,
    integration_id: &str,
    reason: &str,
    now: Time,
) -> Result<u64, StoreError> {
    let sql = AssertSqlSafe(tx.dialect().sql(
        "UPDATE integrations.deliveries SET status = 'skipped', last_error = $2, updated_at = $3, completed_at = $3 \
         WHERE integration_id = $1 AND status = 'pending'",
    ));
    let result = on_tx!(&mut *tx, |conn| sqlx::query(sql)
        .bind(integration_id)
        .bind(reason)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(result)
}

/// Puts dead deliveries back in the queue with a fresh retry budget: one by
/// id, or all of an integration's. Only dead deliveries are replayed (a
/// delivered one has had its effect). `organization` limits the change to
/// one organization's deliveries. Returns how many were requeued.
pub async fn replay(
    tx: &mut DbTx,
    delivery: Option<Uuid>,
    integration_id: Option<&str>,
    organization: Option<Uuid>,
    now: Time,
) -> Result<u64, StoreError> {
    let sql = AssertSqlSafe(tx.dialect().sql(
        "UPDATE integrations.deliveries SET status = 'pending', attempts = 0, next_attempt_at = $1, updated_at = $1, \
         completed_at = NULL \
         WHERE status = 'dead' AND ($2 IS NULL OR id = $2) AND ($3 IS NULL OR integration_id = $3) \
           AND ($4 IS NULL OR organization_id = $4)",
    ));
    let result = on_tx!(&mut *tx, |conn| sqlx::query(sql)
        .bind(now)
        .bind(delivery.map(Id))
        .bind(integration_id)
        .bind(organization.map(Id))
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(result)
}

/// A delivery as the API and tests show it.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    pub id: Uuid,
    pub event_id: Uuid,
    pub organization_id: Uuid,
    pub integration: String,
    pub route_event: String,
    pub route_ordinal: i32,
    pub source: String,
    pub target: String,
    pub status: Status,
    pub attempts: i32,
    pub next_attempt_at: chrono::DateTime<chrono::Utc>,
    pub last_error: Option<String>,
    pub error_step: Option<i32>,
    pub generation: Option<i64>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub completed_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
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

const DELIVERY_COLUMNS: &str = "d.id, d.event_id, d.organization_id, d.integration_id, d.route_event, d.route_ordinal, \
     d.source_product, d.target_product, d.status, d.attempts, d.next_attempt_at, d.last_error, d.error_step, \
     d.generation, d.created_at, d.updated_at, d.completed_at";

fn delivery_view(row: DeliveryRow) -> DeliveryView {
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
    }
}

/// One delivery by id.
pub async fn get_delivery(tx: &mut DbTx, id: Uuid) -> Result<Option<DeliveryView>, StoreError> {
    let sql = AssertSqlSafe(tx.dialect().sql(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM integrations.deliveries d WHERE d.id = $1"
    )));
    let row: Option<DeliveryRow> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(Id(id))
        .fetch_optional(conn)
        .await)?;
    Ok(row.map(delivery_view))
}

/// An event's deliveries, oldest first.
pub async fn deliveries_of(tx: &mut DbTx, event_id: Uuid) -> Result<Vec<DeliveryView>, StoreError> {
    let sql = AssertSqlSafe(tx.dialect().sql(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM integrations.deliveries d WHERE d.event_id = $1 \
         ORDER BY d.integration_id, d.route_event, d.route_ordinal"
    )));
    let rows: Vec<DeliveryRow> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(Id(event_id))
        .fetch_all(conn)
        .await)?;
    Ok(rows.into_iter().map(delivery_view).collect())
}

/// Deliveries in any state, for tests and tools: `status` filters.
pub async fn deliveries_with_status(
    tx: &mut DbTx,
    status: Option<Status>,
) -> Result<Vec<DeliveryView>, StoreError> {
    let sql = AssertSqlSafe(tx.dialect().sql(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM integrations.deliveries d WHERE ($1 IS NULL OR d.status = $1) \
         ORDER BY d.created_at, d.id"
    )));
    let rows: Vec<DeliveryRow> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(status.map(Status::as_str))
        .fetch_all(conn)
        .await)?;
    Ok(rows.into_iter().map(delivery_view).collect())
}

/// Counts of deliveries by integration and status (optionally for one
/// organization).
pub async fn counts(
    tx: &mut DbTx,
    organization: Option<Uuid>,
) -> Result<HashMap<String, HashMap<Status, i64>>, StoreError> {
    let sql = AssertSqlSafe(tx.dialect().sql(
        "SELECT integration_id, status, COUNT(*) FROM integrations.deliveries \
         WHERE ($1 IS NULL OR organization_id = $1) GROUP BY integration_id, status",
    ));
    let rows: Vec<(String, String, i64)> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(organization.map(Id))
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

/// Persisted enabled/disabled states set through the API.
pub async fn integration_states(tx: &mut DbTx) -> Result<HashMap<String, bool>, StoreError> {
    let sql = AssertSqlSafe(
        tx.dialect()
            .sql("SELECT integration_id, enabled FROM integrations.integration_state"),
    );
    let rows: Vec<(String, bool)> =
        on_tx!(&mut *tx, |conn| sqlx::query_as(sql).fetch_all(conn).await)?;
    Ok(rows.into_iter().collect())
}

/// Persists an integration's enabled state.
pub async fn set_integration_state(
    tx: &mut DbTx,
    id: &str,
    enabled: bool,
    now: Time,
) -> Result<(), StoreError> {
    let sql = AssertSqlSafe(tx.dialect().sql(
        "INSERT INTO integrations.integration_state (integration_id, enabled, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (integration_id) DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at",
    ));
    on_tx!(&mut *tx, |conn| sqlx::query(sql)
        .bind(id)
        .bind(enabled)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Which events [`list_events`] returns.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only this organization's (`None`: every organization's).
    pub organization: Option<Uuid>,
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
}

/// Events matching `filter`, newest first, at most `limit`.
pub async fn list_events(
    tx: &mut DbTx,
    filter: &EventFilter,
    limit: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let sql = AssertSqlSafe(tx.dialect().sql(&format!(
        "SELECT {EVENT_COLUMNS} FROM integrations.events e \
          WHERE ($1 IS NULL OR e.organization_id = $1) \
            AND ($2 IS NULL OR e.source_product = $2) \
            AND ($3 IS NULL OR e.event_name = $3) \
            AND ($4 IS NULL OR e.created_at >= $4) \
            AND ($5 IS NULL OR e.created_at < $5) \
            AND ($6 IS NULL OR e.seq < $6) \
            AND ($7 IS NULL OR EXISTS (SELECT 1 FROM integrations.deliveries d \
                                        WHERE d.event_id = e.id AND d.status = $7)) \
          ORDER BY e.seq DESC LIMIT $8"
    )));
    let rows: Vec<EventTuple> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(filter.organization.map(Id))
        .bind(filter.source.as_deref())
        .bind(filter.event.as_deref())
        .bind(filter.since)
        .bind(filter.until)
        .bind(filter.before_seq)
        .bind(filter.status.map(Status::as_str))
        .bind(limit)
        .fetch_all(conn)
        .await)?;
    Ok(rows.into_iter().map(stored_event).collect())
}

/// Counts of deliveries by status for each of `events`.
pub async fn delivery_counts_of(
    tx: &mut DbTx,
    events: &[Uuid],
) -> Result<HashMap<Uuid, HashMap<Status, i64>>, StoreError> {
    let mut out: HashMap<Uuid, HashMap<Status, i64>> = HashMap::new();
    for chunk in events.chunks(CHUNK) {
        let params: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = AssertSqlSafe(tx.dialect().sql(&format!(
            "SELECT event_id, status, COUNT(*) FROM integrations.deliveries WHERE event_id IN ({}) \
             GROUP BY event_id, status",
            params.join(", ")
        )));
        let rows: Vec<(Id, String, i64)> = on_tx!(&mut *tx, |conn| {
            let mut query = sqlx::query_as(sql);
            for id in chunk {
                query = query.bind(Id(*id));
            }
            query.fetch_all(conn).await
        })?;
        for (event, status, count) in rows {
            if let Some(status) = Status::parse(&status) {
                out.entry(event.0).or_default().insert(status, count);
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

/// For each integration, its most recent failure: a dead delivery, or a
/// pending one waiting to retry after an error (skip reasons are not
/// failures). `organization` limits it to one organization's deliveries.
pub async fn last_errors(
    tx: &mut DbTx,
    organization: Option<Uuid>,
) -> Result<HashMap<String, LastError>, StoreError> {
    let sql = AssertSqlSafe(tx.dialect().sql(
        "SELECT integration_id, id, event_id, last_error, error_step, updated_at FROM ( \
             SELECT d.integration_id, d.id, d.event_id, d.last_error, d.error_step, d.updated_at, \
                    ROW_NUMBER() OVER (PARTITION BY d.integration_id ORDER BY d.updated_at DESC, d.id DESC) AS n \
               FROM integrations.deliveries d \
              WHERE d.status IN ('dead', 'pending') AND d.last_error IS NOT NULL \
                AND ($1 IS NULL OR d.organization_id = $1)) latest \
          WHERE n = 1",
    ));
    type Row = (String, Id, Id, String, Option<i32>, Time);
    let rows: Vec<Row> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(organization.map(Id))
        .fetch_all(conn)
        .await)?;
    Ok(rows
        .into_iter()
        .map(|(integration, id, event, message, step, at)| {
            (
                integration,
                LastError {
                    delivery_id: id.0,
                    event_id: event.0,
                    message,
                    step,
                    at: at.0,
                },
            )
        })
        .collect())
}

/// How many deliveries wait to run (the queue depth).
pub async fn pending_count(tx: &mut DbTx) -> Result<i64, StoreError> {
    let sql = AssertSqlSafe(
        tx.dialect()
            .sql("SELECT COUNT(*) FROM integrations.deliveries WHERE status = 'pending'"),
    );
    let (count,): (i64,) = on_tx!(&mut *tx, |conn| sqlx::query_as(sql).fetch_one(conn).await)?;
    Ok(count)
}

/// The events emitted by the deliveries of `parent`, oldest first.
pub async fn children_of(tx: &mut DbTx, parent: Uuid) -> Result<Vec<StoredEvent>, StoreError> {
    let sql = AssertSqlSafe(tx.dialect().sql(&format!(
        "SELECT {EVENT_COLUMNS} FROM integrations.events e WHERE e.parent_id = $1 ORDER BY e.seq"
    )));
    let rows: Vec<EventTuple> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(Id(parent))
        .fetch_all(conn)
        .await)?;
    Ok(rows.into_iter().map(stored_event).collect())
}

/// The organization of each of `ids` that is stored.
pub async fn organizations_of(
    tx: &mut DbTx,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Uuid>, StoreError> {
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        let params: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = AssertSqlSafe(tx.dialect().sql(&format!(
            "SELECT id, organization_id FROM integrations.events WHERE id IN ({})",
            params.join(", ")
        )));
        let rows: Vec<(Id, Id)> = on_tx!(&mut *tx, |conn| {
            let mut query = sqlx::query_as(sql);
            for id in chunk {
                query = query.bind(Id(*id));
            }
            query.fetch_all(conn).await
        })?;
        out.extend(
            rows.into_iter()
                .map(|(id, organization)| (id.0, organization.0)),
        );
    }
    Ok(out)
}
