//! Lanes and their exception rows: `integrations.lanes` (one row per
//! integration and lane, holding the cursor; its row lock is the right to
//! work the lane) and `integrations.deliveries` (a row only for a delivery
//! that did not simply succeed on its first pass). See ARCHITECTURE.md,
//! "Delivery (v2)".

use std::collections::HashMap;

use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::dialect::{EngineTable, Statement};
use super::events::Status;
use super::scope::OrgScope;
use super::ticks::{Cursor, Origin, Tick};
use super::types::{Doc, Id, Position, Time};
use super::{DbTx, Dialect, StoreError};
use crate::envelope::Envelope;
use crate::on_tx;

/// Rows per multi-row statement.
const CHUNK: usize = 400;

/// A lane's row, locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneRow {
    pub cursor: Cursor,
    pub delivered: i64,
    /// The partitioning version it reads with (`store::partitionings`).
    pub version: i32,
    /// Batches applied in the integration's target database when that is
    /// another database (`store::targets`); 0 otherwise.
    pub batch_seq: i64,
}

/// The advisory lock key of a lane (PostgreSQL; the second key of the
/// two-key form, the first being [`LANE_LOCK`]). A collision between two
/// lanes only makes them take turns.
const LANE_KEY: &str = "hashtext($1 || '#' || $2::text)";

/// The advisory lock class of lanes (the first key of the two-key form).
pub const LANE_LOCK: i32 = 0x6275_7302;

/// The columns of a lane's cursor, as text and numbers, per database.
fn cursor_columns(d: Dialect) -> &'static str {
    match d {
        Dialect::Postgres => {
            "cursor_xid, cursor_seq, batch_from::text, batch_to::text, batch_to_tick"
        }
        // One seq: the batch is always done on SQLite (see `Cursor::as_seq`).
        Dialect::Sqlite => "cursor_xid, cursor_seq, NULL, NULL, cursor_seq",
    }
}

type CursorColumns = (i64, i64, Option<String>, Option<String>, i64);

fn cursor_of((xid, seq, from, to, to_tick): CursorColumns) -> Result<Cursor, StoreError> {
    Ok(match (from, to) {
        (Some(from), Some(to)) => Cursor {
            from: from.parse()?,
            to: to.parse()?,
            to_tick,
            at: Position::new(xid, seq),
        },
        _ => Cursor::of_seq(seq),
    })
}

/// Creates the lanes of an integration that do not exist yet, starting at
/// `tick`: what it sees is not theirs.
pub async fn ensure(
    tx: &mut DbTx,
    integration: &str,
    lanes: i32,
    start: &Tick,
) -> Result<(), StoreError> {
    for lane in 0..lanes {
        match &mut *tx {
            DbTx::Postgres(conn) => {
                sqlx::query(
                    "INSERT INTO integrations.lanes (integration_id, lane, cursor_xid, cursor_seq, origin_xid, \
                                                     origin_seq, batch_from, batch_to, batch_to_tick, origin_snapshot) \
                     VALUES ($1, $2, 0, 0, 0, 0, $3::pg_snapshot, $3::pg_snapshot, $4, $3::pg_snapshot) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(integration)
                .bind(lane)
                .bind(start.snapshot.to_text())
                .bind(start.id)
                .execute(&mut **conn)
                .await?;
            }
            DbTx::Sqlite(conn) => {
                sqlx::query(
                    "INSERT INTO \"integrations.lanes\" (integration_id, lane, cursor_xid, cursor_seq, origin_xid, origin_seq) \
                     VALUES (?1, ?2, 0, ?3, 0, ?3) ON CONFLICT DO NOTHING",
                )
                .bind(integration)
                .bind(lane)
                .bind(start.id)
                .execute(&mut **conn)
                .await?;
            }
        }
    }
    Ok(())
}

/// The integrations that have lanes, with how many.
pub async fn existing(tx: &mut DbTx) -> Result<HashMap<String, i32>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let lanes = d.engine_table(EngineTable::Lanes);
        format!("SELECT integration_id, COUNT(*) FROM {lanes} GROUP BY integration_id")
    });
    let sql = SQL.get(tx.dialect());
    let rows: Vec<(String, i64)> =
        on_tx!(&mut *tx, |conn| sqlx::query_as(sql).fetch_all(conn).await)?;
    Ok(rows.into_iter().map(|(id, n)| (id, n as i32)).collect())
}

/// Takes a lane for this transaction and reads its row; `None` when
/// another transaction holds it (or the lane does not exist).
///
/// On PostgreSQL the lane is held by a transaction-scoped advisory lock,
/// which assigns no transaction id and writes nothing, so a visit that
/// finds nothing to do costs no xid; the row is read after the lock is
/// granted, in busbar's `READ COMMITTED` transaction, so it is the last
/// committed one. On SQLite the write transaction already excludes every
/// other writer.
pub async fn lock(
    tx: &mut DbTx,
    integration: &str,
    lane: i32,
) -> Result<Option<LaneRow>, StoreError> {
    if let DbTx::Postgres(conn) = &mut *tx {
        let (granted,): (bool,) = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT pg_try_advisory_xact_lock($3, {LANE_KEY})"
        )))
        .bind(integration)
        .bind(lane)
        .bind(LANE_LOCK)
        .fetch_one(&mut **conn)
        .await?;
        if !granted {
            return Ok(None);
        }
    }
    static SQL: Statement = Statement::new(|d| {
        let lanes = d.engine_table(EngineTable::Lanes);
        let [p1, p2] = d.params();
        let columns = cursor_columns(d);
        format!(
            "SELECT {columns}, delivered, version, batch_seq FROM {lanes} WHERE integration_id = {p1} AND lane = {p2}"
        )
    });
    let sql = SQL.get(tx.dialect());
    type Row = (i64, i64, Option<String>, Option<String>, i64, i64, i32, i64);
    let row: Option<Row> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(integration)
        .bind(lane)
        .fetch_optional(conn)
        .await)?;
    row.map(
        |(xid, seq, from, to, to_tick, delivered, version, batch_seq)| {
            Ok(LaneRow {
                cursor: cursor_of((xid, seq, from, to, to_tick))?,
                delivered,
                version,
                batch_seq,
            })
        },
    )
    .transpose()
}

/// Takes the other lanes of an integration for this transaction without
/// waiting (PostgreSQL); whether every one was free. On SQLite the write
/// transaction holds them all already.
pub async fn try_take_all(
    tx: &mut DbTx,
    integration: &str,
    lanes: i32,
    except: i32,
) -> Result<bool, StoreError> {
    if let DbTx::Postgres(conn) = &mut *tx {
        for lane in (0..lanes).filter(|l| *l != except) {
            let (granted,): (bool,) = sqlx::query_as(AssertSqlSafe(format!(
                "SELECT pg_try_advisory_xact_lock($3, {LANE_KEY})"
            )))
            .bind(integration)
            .bind(lane)
            .bind(LANE_LOCK)
            .fetch_one(&mut **conn)
            .await?;
            if !granted {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Takes every lane of an integration for this transaction, waiting for
/// the visits that hold one (PostgreSQL): nothing reads the integration's
/// log until the transaction ends.
pub async fn take_all(tx: &mut DbTx, integration: &str, lanes: i32) -> Result<(), StoreError> {
    if let DbTx::Postgres(conn) = &mut *tx {
        each_lane(conn, integration, lanes, "pg_advisory_xact_lock").await?;
    }
    Ok(())
}

/// Every lane of an integration with its cursor and version.
pub async fn cursors(
    tx: &mut DbTx,
    integration: &str,
) -> Result<Vec<(i32, Cursor, i32)>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let lanes = d.engine_table(EngineTable::Lanes);
        let [p1] = d.params();
        let columns = cursor_columns(d);
        format!(
            "SELECT lane, {columns}, version FROM {lanes} WHERE integration_id = {p1} ORDER BY lane"
        )
    });
    let sql = SQL.get(tx.dialect());
    type Row = (i32, i64, i64, Option<String>, Option<String>, i64, i32);
    let rows: Vec<Row> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(integration)
        .fetch_all(conn)
        .await)?;
    rows.into_iter()
        .map(|(lane, xid, seq, from, to, to_tick, version)| {
            Ok((lane, cursor_of((xid, seq, from, to, to_tick))?, version))
        })
        .collect()
}

/// Moves every lane of an integration to a partitioning version.
pub async fn set_version(tx: &mut DbTx, integration: &str, version: i32) -> Result<(), StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let lanes = d.engine_table(EngineTable::Lanes);
        let [p1, p2] = d.params();
        format!("UPDATE {lanes} SET version = {p2} WHERE integration_id = {p1}")
    });
    let sql = SQL.get(tx.dialect());
    on_tx!(&mut *tx, |conn| sqlx::query(sql)
        .bind(integration)
        .bind(version)
        .execute(conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// The open rows of an integration (pending, retrying, dead: the ones that
/// hold their key), with their events.
pub async fn open_of_integration(
    tx: &mut DbTx,
    integration: &str,
) -> Result<Vec<OpenRow>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let deliveries = d.engine_table(EngineTable::Deliveries);
        let events = d.engine_table(EngineTable::Events);
        let [p1] = d.params();
        format!(
            "SELECT {ROW_COLUMNS}, e.source_product AS e_source, e.event_name AS e_event, e.event_data AS e_data, \
                    e.occurred_at AS e_occurred \
               FROM {deliveries} d \
               JOIN {events} e ON e.organization_id = d.organization_id AND e.id = d.event_id \
              WHERE d.integration_id = {p1} AND d.status IN ('pending', 'retrying', 'dead')"
        )
    });
    let sql = SQL.get(tx.dialect());
    let rows: Vec<OpenTuple> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(integration)
        .fetch_all(conn)
        .await)?;
    Ok(rows.into_iter().map(OpenTuple::into_open).collect())
}

/// Gives a delivery row another order key and lane (a partitioning switch).
pub async fn rekey(tx: &mut DbTx, id: Uuid, order_key: &str, lane: i32) -> Result<(), StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let deliveries = d.engine_table(EngineTable::Deliveries);
        let [p1, p2, p3] = d.params();
        format!("UPDATE {deliveries} SET order_key = {p2}, lane = {p3} WHERE id = {p1}")
    });
    let sql = SQL.get(tx.dialect());
    on_tx!(&mut *tx, |conn| sqlx::query(sql)
        .bind(Id(id))
        .bind(order_key)
        .bind(lane)
        .execute(conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Takes every lane of an integration for the life of the session of
/// `conn` (PostgreSQL), waiting for those being worked: what a redelivery
/// holds while it writes, with no transaction open (so no transaction id,
/// and no idle-in-transaction timeout can end it half way). Released by
/// [`release_all`] or by the connection's end.
pub async fn hold_all(
    conn: &mut sqlx::PgConnection,
    integration: &str,
    lanes: i32,
) -> Result<(), StoreError> {
    each_lane(conn, integration, lanes, "pg_advisory_lock").await
}

/// Releases what [`hold_all`] took.
pub async fn release_all(
    conn: &mut sqlx::PgConnection,
    integration: &str,
    lanes: i32,
) -> Result<(), StoreError> {
    each_lane(conn, integration, lanes, "pg_advisory_unlock").await
}

/// Runs an advisory lock function (`pg_advisory_lock`, …) on every lane
/// of an integration, in lane order.
async fn each_lane(
    conn: &mut sqlx::PgConnection,
    integration: &str,
    lanes: i32,
    function: &'static str,
) -> Result<(), StoreError> {
    for lane in 0..lanes {
        sqlx::query(AssertSqlSafe(format!("SELECT {function}($3, {LANE_KEY})")))
            .bind(integration)
            .bind(lane)
            .bind(LANE_LOCK)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Moves a lane's cursor and adds to its count of first-pass deliveries
/// and to its count of batches applied in another database (`batches`: 1
/// for such a batch, else 0).
#[allow(clippy::too_many_arguments)]
pub async fn advance(
    tx: &mut DbTx,
    integration: &str,
    lane: i32,
    cursor: &Cursor,
    delivered: i64,
    batches: i64,
    now: Time,
) -> Result<(), StoreError> {
    match (&mut *tx, cursor.as_seq()) {
        (DbTx::Postgres(conn), None) => {
            sqlx::query(
                "UPDATE integrations.lanes SET cursor_xid = $3, cursor_seq = $4, batch_from = $5::pg_snapshot, \
                        batch_to = $6::pg_snapshot, batch_to_tick = $7, delivered = delivered + $8, updated_at = $9, \
                        batch_seq = batch_seq + $10 \
                 WHERE integration_id = $1 AND lane = $2",
            )
            .bind(integration)
            .bind(lane)
            .bind(cursor.at.xid)
            .bind(cursor.at.seq)
            .bind(cursor.from.to_text())
            .bind(cursor.to.to_text())
            .bind(cursor.to_tick)
            .bind(delivered)
            .bind(now)
            .bind(batches)
            .execute(&mut **conn)
            .await?;
        }
        (DbTx::Sqlite(conn), Some(seq)) => {
            sqlx::query(
                "UPDATE \"integrations.lanes\" SET cursor_xid = 0, cursor_seq = ?3, delivered = delivered + ?4, \
                        updated_at = ?5, batch_seq = batch_seq + ?6 \
                 WHERE integration_id = ?1 AND lane = ?2",
            )
            .bind(integration)
            .bind(lane)
            .bind(seq)
            .bind(delivered)
            .bind(now)
            .bind(batches)
            .execute(&mut **conn)
            .await?;
        }
        _ => {
            return Err(StoreError::Invalid(format!(
                "a cursor of the other database's kind for lane {integration}#{lane}"
            )));
        }
    }
    Ok(())
}

/// One lane as the read models see it.
#[derive(Debug, Clone)]
pub struct LaneView {
    pub integration: String,
    pub lane: i32,
    pub cursor: Cursor,
    /// What was published before the lane existed.
    pub origin: Origin,
    pub delivered: i64,
    pub updated_at: Time,
    /// The partitioning version it reads with.
    pub version: i32,
}

/// Every lane of every integration.
pub async fn all(tx: &mut DbTx) -> Result<Vec<LaneView>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let lanes = d.engine_table(EngineTable::Lanes);
        let columns = cursor_columns(d);
        let origin = match d {
            Dialect::Postgres => "origin_snapshot::text",
            Dialect::Sqlite => "CAST(origin_seq AS TEXT)",
        };
        format!(
            "SELECT integration_id, lane, {columns}, {origin}, origin_xid, origin_seq, delivered, updated_at, \
                    version \
               FROM {lanes}"
        )
    });
    let sql = SQL.get(tx.dialect());
    type Row = (
        String,
        i32,
        i64,
        i64,
        Option<String>,
        Option<String>,
        i64,
        String,
        i64,
        i64,
        i64,
        Time,
        i32,
    );
    let rows: Vec<Row> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql).fetch_all(conn).await)?;
    rows.into_iter()
        .map(
            |(
                integration,
                lane,
                xid,
                seq,
                from,
                to,
                to_tick,
                origin,
                oxid,
                oseq,
                delivered,
                updated_at,
                version,
            )| {
                let sqlite = from.is_none();
                Ok(LaneView {
                    integration,
                    lane,
                    cursor: cursor_of((xid, seq, from, to, to_tick))?,
                    origin: Origin {
                        seen: origin.parse()?,
                        at: if sqlite {
                            Position::ZERO
                        } else {
                            Position::new(oxid, oseq)
                        },
                    },
                    delivered,
                    updated_at,
                    version,
                })
            },
        )
        .collect()
}

/// A delivery with a row: an exception (skipped, retrying, pending, dead)
/// or one that was (delivered after a retry or a replay).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DeliveryRow {
    pub id: Uuid,
    pub event_id: Uuid,
    pub organization_id: Uuid,
    pub integration_id: String,
    pub route_event: String,
    pub route_ordinal: i32,
    /// The route's identity (`Route::recorded_name`): its name, `""` for
    /// the unnamed route of the event, `None` for a row written before
    /// routes had names (found by `route_ordinal`, as then).
    pub route_name: Option<String>,
    pub source_product: String,
    pub target_product: String,
    pub status: Status,
    pub attempts: i32,
    pub next_attempt_at: Time,
    pub last_error: Option<String>,
    pub error_step: Option<i32>,
    pub generation: Option<i64>,
    pub lane: i32,
    /// `None` for deliveries made before delivery v2: they block nothing.
    pub order_key: Option<String>,
    pub position: Position,
    pub epoch: i32,
}

/// An open row (pending or retrying, or dead when the integration blocks
/// on dead) of a lane, with its event.
#[derive(Debug, Clone)]
pub struct OpenRow {
    pub row: DeliveryRow,
    pub event: Envelope,
}

const ROW_COLUMNS: &str = "d.id, d.event_id, d.organization_id, d.integration_id, d.route_event, d.route_ordinal, d.route_name, \
     d.source_product, d.target_product, d.status, d.attempts, d.next_attempt_at, d.last_error, d.error_step, \
     d.generation, d.lane, d.order_key, d.event_xid, d.event_seq, d.epoch";

#[derive(sqlx::FromRow)]
struct FlatRow {
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
    lane: i32,
    order_key: Option<String>,
    event_xid: i64,
    event_seq: i64,
    epoch: i32,
}

impl From<FlatRow> for DeliveryRow {
    fn from(r: FlatRow) -> DeliveryRow {
        DeliveryRow {
            id: r.id.0,
            event_id: r.event_id.0,
            organization_id: r.organization_id.0,
            integration_id: r.integration_id,
            route_event: r.route_event,
            route_ordinal: r.route_ordinal,
            route_name: r.route_name,
            source_product: r.source_product,
            target_product: r.target_product,
            status: Status::parse(&r.status).unwrap_or(Status::Pending),
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            last_error: r.last_error,
            error_step: r.error_step,
            generation: r.generation,
            lane: r.lane,
            order_key: r.order_key,
            position: Position::new(r.event_xid, r.event_seq),
            epoch: r.epoch,
        }
    }
}

#[derive(sqlx::FromRow)]
struct OpenTuple {
    #[sqlx(flatten)]
    row: FlatRow,
    e_source: String,
    e_event: String,
    e_data: Doc,
    e_occurred: Time,
}

/// The statement of [`open_rows`]; `holding` are the statuses of an
/// earlier row that hold its key (`retrying` counts only while not due).
fn open_rows_sql(d: Dialect, holding: &str) -> String {
    let deliveries = d.engine_table(EngineTable::Deliveries);
    let events = d.engine_table(EngineTable::Events);
    let [p1, p2, p3, p4] = d.params();
    format!(
        "SELECT {ROW_COLUMNS}, e.source_product AS e_source, e.event_name AS e_event, e.event_data AS e_data, \
                e.occurred_at AS e_occurred \
           FROM {deliveries} d \
           JOIN {events} e ON e.organization_id = d.organization_id AND e.id = d.event_id \
          WHERE d.integration_id = {p1} AND d.lane = {p2} AND d.status IN ('pending', 'retrying') \
            AND NOT (d.status = 'retrying' AND d.next_attempt_at > {p4}) \
            AND NOT EXISTS (SELECT 1 FROM {deliveries} b \
                             WHERE b.integration_id = d.integration_id AND b.lane = d.lane \
                               AND b.order_key = d.order_key \
                               AND b.status IN ('pending', 'retrying', 'dead') \
                               AND (b.event_xid, b.event_seq, b.route_ordinal, b.route_event) \
                                   < (d.event_xid, d.event_seq, d.route_ordinal, d.route_event) \
                               AND ({holding})) \
          ORDER BY d.event_xid, d.event_seq, d.route_ordinal, d.route_event \
          LIMIT {p3}"
    )
}

/// The runnable open rows of a lane, in position order, with their
/// events, at most `limit`: `pending` rows, and `retrying` ones that are
/// due, whose key no earlier row holds (a `retrying` row not due yet, and
/// a `dead` one when `dead_blocks`). Work is chosen per key, so however
/// many keys are held, and however many dead rows they have, the rows of
/// the others run (issue 16: the first `limit` open rows by position used
/// to be read, and 500 older dead rows blocked every later key).
pub async fn open_rows(
    tx: &mut DbTx,
    integration: &str,
    lane: i32,
    dead_blocks: bool,
    limit: i64,
    now: Time,
) -> Result<Vec<OpenRow>, StoreError> {
    static OPEN: Statement = Statement::new(|d| {
        let [_, _, _, p4] = d.params();
        open_rows_sql(
            d,
            &format!("b.status = 'retrying' AND b.next_attempt_at > {p4}"),
        )
    });
    static OPEN_OR_DEAD: Statement = Statement::new(|d| {
        let [_, _, _, p4] = d.params();
        open_rows_sql(
            d,
            &format!("b.status = 'dead' OR (b.status = 'retrying' AND b.next_attempt_at > {p4})"),
        )
    });
    let sql = if dead_blocks { &OPEN_OR_DEAD } else { &OPEN }.get(tx.dialect());
    let rows: Vec<OpenTuple> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(integration)
        .bind(lane)
        .bind(limit)
        .bind(now)
        .fetch_all(conn)
        .await)?;
    Ok(rows.into_iter().map(OpenTuple::into_open).collect())
}

/// When the first retry of a lane that is not due yet is due (a timer for
/// the lane).
pub async fn next_due(
    tx: &mut DbTx,
    integration: &str,
    lane: i32,
    now: Time,
) -> Result<Option<Time>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let deliveries = d.engine_table(EngineTable::Deliveries);
        let [p1, p2, p3] = d.params();
        format!(
            "SELECT MIN(next_attempt_at) FROM {deliveries} \
              WHERE integration_id = {p1} AND lane = {p2} AND status = 'retrying' AND next_attempt_at > {p3}"
        )
    });
    let sql = SQL.get(tx.dialect());
    let (due,): (Option<Time>,) = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(integration)
        .bind(lane)
        .bind(now)
        .fetch_one(conn)
        .await)?;
    Ok(due)
}

impl OpenTuple {
    fn into_open(self) -> OpenRow {
        let row = DeliveryRow::from(self.row);
        let event = Envelope {
            id: row.event_id,
            source: self.e_source,
            event: self.e_event,
            organization_id: row.organization_id,
            occurred_at: self.e_occurred.0,
            data: self.e_data.0,
        };
        OpenRow { row, event }
    }
}

/// Which of `keys` have a blocking row in the lane (`pending`,
/// `retrying`, and `dead` when `dead_blocks`): asked for the keys of a
/// batch only, so what a visit holds is bounded by its batch.
pub async fn blocked_keys(
    tx: &mut DbTx,
    integration: &str,
    lane: i32,
    dead_blocks: bool,
    keys: &[String],
) -> Result<std::collections::HashSet<String>, StoreError> {
    let statuses = if dead_blocks {
        "('pending', 'retrying', 'dead')"
    } else {
        "('pending', 'retrying')"
    };
    let mut out = std::collections::HashSet::new();
    for chunk in keys.chunks(CHUNK) {
        let d = tx.dialect();
        let deliveries = d.engine_table(EngineTable::Deliveries);
        let [p1, p2] = d.params();
        let list: Vec<String> = (0..chunk.len())
            .map(|i| d.param(i + 3).to_string())
            .collect();
        let sql = AssertSqlSafe(format!(
            "SELECT DISTINCT order_key FROM {deliveries} \
              WHERE integration_id = {p1} AND lane = {p2} AND status IN {statuses} \
                AND order_key IN ({})",
            list.join(", ")
        ));
        let rows: Vec<(String,)> = on_tx!(&mut *tx, |conn| {
            let mut query = sqlx::query_as(sql).bind(integration).bind(lane);
            for key in chunk {
                query = query.bind(key.as_str());
            }
            query.fetch_all(conn).await
        })?;
        out.extend(rows.into_iter().map(|(k,)| k));
    }
    Ok(out)
}

/// Writes rows: inserts new ones, and updates existing ones (by id)
/// unless `insert_only` (rows for events a lane reads for the first time:
/// a row that exists already was made by someone else, and stays).
pub async fn write_rows(
    tx: &mut DbTx,
    rows: &[DeliveryRow],
    insert_only: bool,
    now: Time,
) -> Result<(), StoreError> {
    const UPDATE: &str = "status = excluded.status, attempts = excluded.attempts, \
         next_attempt_at = excluded.next_attempt_at, last_error = excluded.last_error, \
         error_step = excluded.error_step, generation = excluded.generation, lane = excluded.lane, \
         order_key = excluded.order_key, epoch = excluded.epoch, updated_at = excluded.updated_at, \
         completed_at = excluded.completed_at, route_name = excluded.route_name";
    let conflict = if insert_only {
        "ON CONFLICT (id) DO NOTHING".to_owned()
    } else {
        format!("ON CONFLICT (id) DO UPDATE SET {UPDATE}")
    };
    for chunk in rows.chunks(CHUNK) {
        let completed = |r: &DeliveryRow| match r.status {
            Status::Pending | Status::Retrying => None,
            _ => Some(now),
        };
        match &mut *tx {
            DbTx::Postgres(conn) => {
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO integrations.deliveries (id, event_id, organization_id, integration_id, route_event, \
                       route_ordinal, source_product, target_product, status, attempts, next_attempt_at, last_error, \
                       error_step, generation, lane, order_key, event_xid, event_seq, epoch, created_at, updated_at, \
                       completed_at, route_name) \
                     SELECT u.id, u.event_id, u.org, u.integration, u.route_event, u.ordinal, u.source, u.target, \
                            u.status, u.attempts, u.next_attempt_at, u.last_error, u.error_step, u.generation, u.lane, \
                            u.order_key, u.xid, u.seq, u.epoch, $1, $1, u.completed_at, u.route_name \
                     FROM UNNEST($2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::int[], $8::text[], \
                                 $9::text[], $10::text[], $11::int[], $12::timestamptz[], $13::text[], $14::int[], \
                                 $15::bigint[], $16::int[], $17::text[], $18::bigint[], $19::bigint[], $20::int[], \
                                 $21::timestamptz[], $22::text[]) \
                          AS u(id, event_id, org, integration, route_event, ordinal, source, target, status, attempts, \
                               next_attempt_at, last_error, error_step, generation, lane, order_key, xid, seq, epoch, \
                               completed_at, route_name) \
                     {conflict}"
                )))
                .bind(now)
                .bind(chunk.iter().map(|r| r.id).collect::<Vec<Uuid>>())
                .bind(chunk.iter().map(|r| r.event_id).collect::<Vec<Uuid>>())
                .bind(chunk.iter().map(|r| r.organization_id).collect::<Vec<Uuid>>())
                .bind(chunk.iter().map(|r| r.integration_id.clone()).collect::<Vec<String>>())
                .bind(chunk.iter().map(|r| r.route_event.clone()).collect::<Vec<String>>())
                .bind(chunk.iter().map(|r| r.route_ordinal).collect::<Vec<i32>>())
                .bind(chunk.iter().map(|r| r.source_product.clone()).collect::<Vec<String>>())
                .bind(chunk.iter().map(|r| r.target_product.clone()).collect::<Vec<String>>())
                .bind(chunk.iter().map(|r| r.status.as_str().to_owned()).collect::<Vec<String>>())
                .bind(chunk.iter().map(|r| r.attempts).collect::<Vec<i32>>())
                .bind(chunk.iter().map(|r| r.next_attempt_at.0).collect::<Vec<_>>())
                .bind(chunk.iter().map(|r| r.last_error.clone()).collect::<Vec<Option<String>>>())
                .bind(chunk.iter().map(|r| r.error_step).collect::<Vec<Option<i32>>>())
                .bind(chunk.iter().map(|r| r.generation).collect::<Vec<Option<i64>>>())
                .bind(chunk.iter().map(|r| r.lane).collect::<Vec<i32>>())
                .bind(chunk.iter().map(|r| r.order_key.clone()).collect::<Vec<Option<String>>>())
                .bind(chunk.iter().map(|r| r.position.xid).collect::<Vec<i64>>())
                .bind(chunk.iter().map(|r| r.position.seq).collect::<Vec<i64>>())
                .bind(chunk.iter().map(|r| r.epoch).collect::<Vec<i32>>())
                .bind(chunk.iter().map(|r| completed(r).map(|t| t.0)).collect::<Vec<_>>())
                .bind(chunk.iter().map(|r| r.route_name.clone()).collect::<Vec<Option<String>>>())
                .execute(&mut **conn)
                .await?;
            }
            DbTx::Sqlite(conn) => {
                let row = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
                let sql = format!(
                    "INSERT INTO \"integrations.deliveries\" (id, event_id, organization_id, integration_id, route_event, \
                       route_ordinal, source_product, target_product, status, attempts, next_attempt_at, last_error, \
                       error_step, generation, lane, order_key, event_xid, event_seq, epoch, created_at, updated_at, \
                       completed_at, route_name) VALUES {} {conflict}",
                    vec![row; chunk.len()].join(", ")
                );
                let mut query = sqlx::query(AssertSqlSafe(sql));
                for r in chunk {
                    query = query
                        .bind(Id(r.id))
                        .bind(Id(r.event_id))
                        .bind(Id(r.organization_id))
                        .bind(r.integration_id.as_str())
                        .bind(r.route_event.as_str())
                        .bind(r.route_ordinal)
                        .bind(r.source_product.as_str())
                        .bind(r.target_product.as_str())
                        .bind(r.status.as_str())
                        .bind(r.attempts)
                        .bind(r.next_attempt_at)
                        .bind(r.last_error.as_deref())
                        .bind(r.error_step)
                        .bind(r.generation)
                        .bind(r.lane)
                        .bind(r.order_key.as_deref())
                        .bind(r.position.xid)
                        .bind(r.position.seq)
                        .bind(r.epoch)
                        .bind(now)
                        .bind(now)
                        .bind(completed(r))
                        .bind(r.route_name.as_deref());
                }
                query.execute(&mut **conn).await?;
            }
        }
    }
    Ok(())
}

/// Marks an integration's open rows (`pending`, `retrying`) as skipped with
/// `reason`. Returns how many.
pub async fn skip_open(
    tx: &mut DbTx,
    integration: &str,
    reason: &str,
    now: Time,
) -> Result<u64, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let deliveries = d.engine_table(EngineTable::Deliveries);
        let [p1, p2, p3] = d.params();
        format!(
            "UPDATE {deliveries} SET status = 'skipped', last_error = {p2}, updated_at = {p3}, completed_at = {p3} \
             WHERE integration_id = {p1} AND status IN ('pending', 'retrying')"
        )
    });
    let sql = SQL.get(tx.dialect());
    let count = on_tx!(&mut *tx, |conn| sqlx::query(sql)
        .bind(integration)
        .bind(reason)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(count)
}

/// Which dead rows to replay or skip.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    pub delivery: Option<Uuid>,
    pub deliveries: Option<Vec<Uuid>>,
    pub integration: Option<String>,
    pub organization: Option<Uuid>,
}

/// What an operator does with dead rows.
#[derive(Debug, Clone, Copy)]
pub enum Resolution<'a> {
    /// Back in their lane, `pending`, with a fresh retry budget: they run
    /// in position order among their key's rows.
    Replay,
    /// Given up on: `skipped`, with the operator's reason and name; the
    /// failure stays in `last_error`. With `on_dead: block`, their key goes
    /// on.
    Skip { reason: &'a str, by: &'a str },
}

/// Replays or skips the dead rows `filter` selects (only rows that are
/// dead when the statement runs: one of two operators acting at once
/// wins). Returns the integration and lane of every row changed.
pub async fn resolve_dead(
    tx: &mut DbTx,
    filter: &ReplayFilter,
    resolution: Resolution<'_>,
    now: Time,
) -> Result<Vec<(String, i32)>, StoreError> {
    let ids: Option<Vec<Uuid>> = match (&filter.delivery, &filter.deliveries) {
        (Some(one), _) => Some(vec![*one]),
        (None, Some(many)) => Some(many.clone()),
        (None, None) => None,
    };
    let mut touched = Vec::new();
    let chunks: Vec<Option<Vec<Uuid>>> = match ids {
        Some(ids) => ids.chunks(CHUNK).map(|c| Some(c.to_vec())).collect(),
        None => vec![None],
    };
    for chunk in chunks {
        let d = tx.dialect();
        let deliveries = d.engine_table(EngineTable::Deliveries);
        let [p1, p2, p3, p4, p5] = d.params();
        let set = match resolution {
            Resolution::Replay => format!(
                "status = 'pending', attempts = 0, next_attempt_at = {p1}, updated_at = {p1}, \
                 completed_at = NULL, skip_reason = {p4}, skipped_by = {p5}"
            ),
            Resolution::Skip { .. } => format!(
                "status = 'skipped', updated_at = {p1}, completed_at = {p1}, \
                 skip_reason = {p4}, skipped_by = {p5}"
            ),
        };
        let id_clause = match &chunk {
            Some(ids) => {
                let params: Vec<String> =
                    (0..ids.len()).map(|i| d.param(i + 6).to_string()).collect();
                format!(" AND id IN ({})", params.join(", "))
            }
            None => String::new(),
        };
        let sql = AssertSqlSafe(format!(
            "UPDATE {deliveries} SET {set} \
              WHERE status = 'dead' AND ({p2} IS NULL OR integration_id = {p2}) \
                AND ({p3} IS NULL OR organization_id = {p3}){id_clause} \
              RETURNING integration_id, lane"
        ));
        // A replay clears an earlier skip's reason (bound as NULL).
        let (reason, by) = match resolution {
            Resolution::Replay => (None, None),
            Resolution::Skip { reason, by } => (Some(reason), Some(by)),
        };
        let rows: Vec<(String, i32)> = on_tx!(&mut *tx, |conn| {
            let mut query = sqlx::query_as(sql)
                .bind(now)
                .bind(filter.integration.as_deref())
                .bind(filter.organization.map(Id))
                .bind(reason)
                .bind(by);
            if let Some(ids) = &chunk {
                for id in ids {
                    query = query.bind(Id(*id));
                }
            }
            query.fetch_all(conn).await
        })?;
        touched.extend(rows);
    }
    Ok(touched)
}

/// Removes an integration's lanes (it was removed from the configuration:
/// if it comes back, it starts from the events published then).
pub async fn remove(tx: &mut DbTx, integration: &str) -> Result<(), StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let lanes = d.engine_table(EngineTable::Lanes);
        let [p1] = d.params();
        format!("DELETE FROM {lanes} WHERE integration_id = {p1}")
    });
    let sql = SQL.get(tx.dialect());
    on_tx!(&mut *tx, |conn| sqlx::query(sql)
        .bind(integration)
        .execute(conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Adds deliveries to the per-minute counters: `(organization, count)` for
/// one integration, in the minute of `now`.
pub async fn count_delivered(
    tx: &mut DbTx,
    integration: &str,
    counts: &[(Uuid, i64)],
    now: Time,
) -> Result<(), StoreError> {
    if counts.is_empty() {
        return Ok(());
    }
    let bucket = Time(
        chrono::DateTime::from_timestamp(now.0.timestamp() - now.0.timestamp().rem_euclid(60), 0)
            .unwrap_or(now.0),
    );
    match &mut *tx {
        DbTx::Postgres(conn) => {
            sqlx::query(
                "INSERT INTO integrations.delivery_stats (integration_id, organization_id, bucket, delivered) \
                 SELECT $1, u.org, $2, u.n FROM UNNEST($3::uuid[], $4::bigint[]) AS u(org, n) \
                 ON CONFLICT (integration_id, organization_id, bucket) \
                 DO UPDATE SET delivered = integrations.delivery_stats.delivered + excluded.delivered",
            )
            .bind(integration)
            .bind(bucket)
            .bind(counts.iter().map(|(o, _)| *o).collect::<Vec<Uuid>>())
            .bind(counts.iter().map(|(_, n)| *n).collect::<Vec<i64>>())
            .execute(&mut **conn)
            .await?;
        }
        DbTx::Sqlite(conn) => {
            for (organization, count) in counts {
                sqlx::query(
                    "INSERT INTO \"integrations.delivery_stats\" (integration_id, organization_id, bucket, delivered) \
                     VALUES (?, ?, ?, ?) ON CONFLICT (integration_id, organization_id, bucket) \
                     DO UPDATE SET delivered = delivered + excluded.delivered",
                )
                .bind(integration)
                .bind(Id(*organization))
                .bind(bucket)
                .bind(*count)
                .execute(&mut **conn)
                .await?;
            }
        }
    }
    Ok(())
}

/// Deliveries in `scope` counted per integration since `since`.
pub async fn delivered_since(
    tx: &mut DbTx,
    scope: OrgScope,
    since: Time,
) -> Result<HashMap<String, i64>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let delivery_stats = d.engine_table(EngineTable::DeliveryStats);
        let [p1, p2] = d.params();
        format!(
            "SELECT integration_id, CAST(SUM(delivered) AS BIGINT) FROM {delivery_stats} \
              WHERE bucket >= {p1} AND ({p2} IS NULL OR organization_id = {p2}) GROUP BY integration_id"
        )
    });
    let sql = SQL.get(tx.dialect());
    let rows: Vec<(String, i64)> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(since)
        .bind(scope.bind())
        .fetch_all(conn)
        .await)?;
    Ok(rows.into_iter().collect())
}

/// Drops per-minute counters older than `before`.
pub async fn prune_stats(tx: &mut DbTx, before: Time) -> Result<(), StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let delivery_stats = d.engine_table(EngineTable::DeliveryStats);
        let [p1] = d.params();
        format!("DELETE FROM {delivery_stats} WHERE bucket < {p1}")
    });
    let sql = SQL.get(tx.dialect());
    on_tx!(&mut *tx, |conn| sqlx::query(sql)
        .bind(before)
        .execute(conn)
        .await
        .map(|_| ()))?;
    Ok(())
}
