//! The event log: `integrations.events`, appended to by publishing, by
//! `emit` steps and by products' own transactions (the outbox), and read by
//! lanes in position order below the horizon (ARCHITECTURE.md,
//! "Delivery (v2)").

use std::collections::{HashMap, HashSet};

use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::dialect::{EngineTable, Statement};
use super::ticks::{Cursor, Origin, Snapshot, Tick};
use super::types::{Doc, Id, Position, Time};
use super::{DbTx, Dialect, StoreError};
use crate::compile::OrderKey;
use crate::envelope::Envelope;
use crate::on_tx;

/// Rows per multi-row INSERT (well under both databases' parameter limits).
const CHUNK: usize = 500;

/// An event about to be stored.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NewEvent {
    pub envelope: Envelope,
    pub idempotency_key: Option<String>,
    /// The event whose delivery emitted this one.
    pub parent_id: Option<Uuid>,
}

/// What appending one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored now.
    Created(Uuid),
    /// The same event (same id, or same idempotency key, with the same
    /// source, event and data) was already stored: nothing was written.
    Duplicate(Uuid),
    /// The id or idempotency key is already used by an event with other
    /// content: nothing was written. `differs` names the fields.
    Reused {
        id: Uuid,
        differs: Vec<&'static str>,
    },
}

impl Appended {
    pub fn id(&self) -> Uuid {
        match self {
            Appended::Created(id) | Appended::Duplicate(id) | Appended::Reused { id, .. } => *id,
        }
    }
}

/// A stored event's content, to compare with a new one.
struct Existing {
    id: Uuid,
    source: String,
    event: String,
    data: serde_json::Value,
}

fn differences(new: &Envelope, old: &Existing) -> Vec<&'static str> {
    let mut differs = Vec::new();
    if new.source != old.source {
        differs.push("source");
    }
    if new.event != old.event {
        differs.push("event");
    }
    if !same_json(&new.data, &old.data) {
        differs.push("data");
    }
    differs
}

/// JSON equality with numbers compared by value: the database may give a
/// number back written differently (JSONB turns `1e2` into `100`).
fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            crate::decimal::Decimal::of(x) == crate::decimal::Decimal::of(y)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, value)| y.get(key).is_some_and(|other| same_json(value, other)))
        }
        _ => a == b,
    }
}

/// Appends events, leaving out those whose id (per organization) or
/// idempotency key is already stored. Returns, for each input in order,
/// what happened to it. `occurred_at` is not compared: busbar fills it in
/// when a producer leaves it out, so a retry may differ there.
pub async fn append(
    tx: &mut DbTx,
    events: &[NewEvent],
    now: Time,
) -> Result<Vec<Appended>, StoreError> {
    let mut inserted: HashSet<(Uuid, Uuid)> = HashSet::new();
    for chunk in events.chunks(CHUNK) {
        let rows: Vec<(Id, Id)> = match &mut *tx {
            // One array per column: the statement text is the same for
            // every batch size and stays prepared.
            DbTx::Postgres(conn) => {
                sqlx::query_as(
                    "INSERT INTO integrations.events (id, organization_id, source_product, event_name, event_data, \
                     occurred_at, created_at, idempotency_key, parent_id) \
                     SELECT u.id, u.org, u.source, u.event, u.data::jsonb, u.occurred, $1, u.key, u.parent \
                     FROM UNNEST($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], \
                                 $8::text[], $9::uuid[]) AS u(id, org, source, event, data, occurred, key, parent) \
                     ON CONFLICT DO NOTHING RETURNING organization_id, id",
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
                let row = "(?, ?, ?, ?, ?, ?, ?, ?, ?)";
                let sql = format!(
                    "INSERT INTO \"integrations.events\" (id, organization_id, source_product, event_name, event_data, \
                     occurred_at, created_at, idempotency_key, parent_id) VALUES {} \
                     ON CONFLICT DO NOTHING RETURNING organization_id, id",
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
                        .bind(event.idempotency_key.as_deref())
                        .bind(event.parent_id.map(Id));
                }
                query.fetch_all(&mut **conn).await?
            }
        };
        inserted.extend(rows.into_iter().map(|(org, id)| (org.0, id.0)));
    }
    let mut out = Vec::with_capacity(events.len());
    // The first of several inputs with one id is the one stored.
    let mut claimed: HashSet<(Uuid, Uuid)> = HashSet::new();
    for event in events {
        let envelope = &event.envelope;
        let key = (envelope.organization_id, envelope.id);
        if inserted.contains(&key) && claimed.insert(key) {
            out.push(Appended::Created(envelope.id));
            continue;
        }
        // Not stored: its id, or its idempotency key, is taken.
        let existing = match find(tx, envelope.organization_id, envelope.id).await? {
            Some(existing) => Some(existing),
            None => match &event.idempotency_key {
                Some(key) => find_by_key(tx, envelope.organization_id, key).await?,
                None => None,
            },
        };
        out.push(match existing {
            Some(existing) => {
                let differs = differences(envelope, &existing);
                if differs.is_empty() {
                    Appended::Duplicate(existing.id)
                } else {
                    Appended::Reused {
                        id: existing.id,
                        differs,
                    }
                }
            }
            // Cannot happen (a conflict means a row exists), but a missing
            // row must not be reported as stored.
            None => {
                return Err(StoreError::Invalid(format!(
                    "event {} was neither stored nor found",
                    envelope.id
                )));
            }
        });
    }
    Ok(out)
}

type ExistingRow = (Id, String, String, Doc);

fn existing((id, source, event, data): ExistingRow) -> Existing {
    Existing {
        id: id.0,
        source,
        event,
        data: data.0,
    }
}

/// Of `events` (emitted by deliveries), those whose id is already in the
/// log with another source, name or data: for each, its id and what
/// differs. A delivery step always emits the same id, so an id stored
/// with other content means the log and the delivery disagree (a restore,
/// a route that changed identity): the delivery must fail, not drop its
/// event silently. The same content is the same event, and not reported.
pub async fn reused(
    tx: &mut DbTx,
    events: &[NewEvent],
) -> Result<Vec<(Uuid, Vec<&'static str>)>, StoreError> {
    let mut out = Vec::new();
    for chunk in events.chunks(CHUNK) {
        let rows: Vec<(Id, Id, String, String, Doc)> =
            match &mut *tx {
                DbTx::Postgres(conn) => sqlx::query_as(
                    "SELECT e.organization_id, e.id, e.source_product, e.event_name, e.event_data \
                       FROM integrations.events e \
                       JOIN UNNEST($1::uuid[], $2::uuid[]) AS u(org, id) \
                         ON e.organization_id = u.org AND e.id = u.id",
                )
                .bind(
                    chunk
                        .iter()
                        .map(|e| e.envelope.organization_id)
                        .collect::<Vec<Uuid>>(),
                )
                .bind(chunk.iter().map(|e| e.envelope.id).collect::<Vec<Uuid>>())
                .fetch_all(&mut **conn)
                .await?,
                DbTx::Sqlite(conn) => {
                    let sql = format!(
                        "SELECT organization_id, id, source_product, event_name, event_data \
                       FROM \"integrations.events\" WHERE {}",
                        vec!["(organization_id = ? AND id = ?)"; chunk.len()].join(" OR ")
                    );
                    let mut query = sqlx::query_as(AssertSqlSafe(sql));
                    for event in chunk {
                        query = query
                            .bind(Id(event.envelope.organization_id))
                            .bind(Id(event.envelope.id));
                    }
                    query.fetch_all(&mut **conn).await?
                }
            };
        for (org, id, source, event, data) in rows {
            let old = existing((id, source, event, data));
            let Some(new) = chunk
                .iter()
                .find(|e| e.envelope.organization_id == org.0 && e.envelope.id == old.id)
            else {
                continue;
            };
            let differs = differences(&new.envelope, &old);
            if !differs.is_empty() {
                out.push((old.id, differs));
            }
        }
    }
    Ok(out)
}

async fn find(tx: &mut DbTx, organization: Uuid, id: Uuid) -> Result<Option<Existing>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let events = d.engine_table(EngineTable::Events);
        let [p1, p2] = d.params();
        format!(
            "SELECT id, source_product, event_name, event_data FROM {events} \
             WHERE organization_id = {p1} AND id = {p2}"
        )
    });
    let sql = SQL.get(tx.dialect());
    let row: Option<ExistingRow> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(Id(organization))
        .bind(Id(id))
        .fetch_optional(conn)
        .await)?;
    Ok(row.map(existing))
}

async fn find_by_key(
    tx: &mut DbTx,
    organization: Uuid,
    key: &str,
) -> Result<Option<Existing>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let events = d.engine_table(EngineTable::Events);
        let [p1, p2] = d.params();
        format!(
            "SELECT id, source_product, event_name, event_data FROM {events} \
             WHERE organization_id = {p1} AND idempotency_key = {p2}"
        )
    });
    let sql = SQL.get(tx.dialect());
    let row: Option<ExistingRow> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(Id(organization))
        .bind(key)
        .fetch_optional(conn)
        .await)?;
    Ok(row.map(existing))
}

/// What a lane reads: an integration's events, one lane of them.
#[derive(Debug, Clone)]
pub struct LaneFilter<'a> {
    pub source: &'a str,
    /// The event names the integration routes.
    pub events: Vec<String>,
    pub order_by: &'a OrderKey,
    pub lane: i32,
    /// How many lanes the integration has (1: no hashing).
    pub lanes: i32,
}

/// One event as a lane reads it.
#[derive(Debug, Clone)]
pub struct LogEvent {
    pub position: Position,
    pub envelope: Envelope,
}

/// The SQL expression for an event's order key (events aliased `e`), and
/// the text array to bind for a path into `data`.
pub fn order_key_sql(order_by: &OrderKey, param: usize) -> (String, Option<Vec<String>>) {
    match order_by {
        OrderKey::Organization => ("e.organization_id::text".into(), None),
        OrderKey::Id => ("e.id::text".into(), None),
        OrderKey::Source => ("e.source_product".into(), None),
        OrderKey::Event => ("e.event_name".into(), None),
        OrderKey::Data(path) => (
            format!("COALESCE(e.event_data #>> ${param}::text[], e.organization_id::text)"),
            Some(path.clone()),
        ),
    }
}

/// The SQL expression for an event's lane among `lanes` (PostgreSQL).
pub fn lane_sql(order_by: &OrderKey, lanes: i32, param: usize) -> (String, Option<Vec<String>>) {
    let (key, path) = order_key_sql(order_by, param);
    (
        format!("((hashtextextended({key}, 0) & 9223372036854775807) % {lanes})"),
        path,
    )
}

/// The columns a lane reads of an event (events aliased `e`), as
/// [`EventRow`].
const EVENT_COLUMNS: &str = "e.xid, e.seq, e.id, e.organization_id, e.source_product, e.event_name, e.event_data, e.occurred_at";

/// An event as [`EVENT_COLUMNS`] reads it.
type EventRow = (i64, i64, Id, Id, String, String, Doc, Time);

fn log_event((xid, seq, id, org, source, event, data, occurred): EventRow) -> LogEvent {
    LogEvent {
        position: Position::new(xid, seq),
        envelope: Envelope {
            id: id.0,
            source,
            event,
            organization_id: org.0,
            occurred_at: occurred.0,
            data: data.0,
        },
    }
}

/// Up to `limit` events of the lane's batch `(cursor.from, cursor.to]`
/// after `cursor.at`, in `(xid, seq)` order. Events stored by the engine
/// before delivery v2 and already routed then (`processed_at` set) are not
/// read.
pub async fn read_batch(
    tx: &mut DbTx,
    filter: &LaneFilter<'_>,
    cursor: &Cursor,
    limit: i64,
) -> Result<Vec<LogEvent>, StoreError> {
    let rows: Vec<EventRow> = fetch_batch(tx, filter, cursor, limit, EVENT_COLUMNS).await?;
    Ok(rows.into_iter().map(log_event).collect())
}

/// The first event the lane has not passed, up to the tick `latest`: the
/// next it will apply.
pub async fn first_unread(
    tx: &mut DbTx,
    filter: &LaneFilter<'_>,
    cursor: &Cursor,
    latest: &Tick,
) -> Result<Option<LogEvent>, StoreError> {
    if !cursor.batch_done()
        && let Some(first) = read_batch(tx, filter, cursor, 1).await?.into_iter().next()
    {
        return Ok(Some(first));
    }
    if latest.id <= cursor.to_tick {
        return Ok(None);
    }
    let next = cursor.next_batch(latest);
    Ok(read_batch(tx, filter, &next, 1).await?.into_iter().next())
}

/// How many of the lane's events it has not passed yet, up to the tick
/// `latest` (the lane's backlog), counting at most `cap`.
pub async fn backlog(
    tx: &mut DbTx,
    filter: &LaneFilter<'_>,
    cursor: &Cursor,
    latest: &Tick,
    cap: i64,
) -> Result<i64, StoreError> {
    // Counting through the same read keeps one definition of "the lane's
    // events"; the cap bounds the cost on a large backlog.
    let mut count = if cursor.batch_done() {
        0
    } else {
        fetch_batch::<(i64,)>(tx, filter, cursor, cap, "e.seq")
            .await?
            .len() as i64
    };
    if count < cap && latest.id > cursor.to_tick {
        let next = cursor.next_batch(latest);
        count += fetch_batch::<(i64,)>(tx, filter, &next, cap - count, "e.seq")
            .await?
            .len() as i64;
    }
    Ok(count)
}

/// `columns` of a lane's events in the batch `(cursor.from, cursor.to]`
/// after `cursor.at`, in `(xid, seq)` order, at most `limit`: the one
/// definition of "the lane's events" (routed names of its source, in its
/// hash slot, in the batch).
///
/// On PostgreSQL the batch's events are those of the transactions that
/// `from` saw running (looked up by id) and of those that started after it
/// (`from.xmax <= xid`), that `to` sees: `pg_visible_in_snapshot` decides,
/// on the stored snapshot, so the answer is the same for every reader, and
/// nothing before `from` is scanned again however long a transaction stays
/// open.
async fn fetch_batch<R>(
    tx: &mut DbTx,
    filter: &LaneFilter<'_>,
    cursor: &Cursor,
    limit: i64,
    columns: &str,
) -> Result<Vec<R>, StoreError>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
        + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
        + Send
        + Unpin,
{
    Ok(match &mut *tx {
        DbTx::Postgres(conn) => {
            let Snapshot::Xids { xmax, xip, .. } = &cursor.from else {
                return Err(StoreError::Invalid("a cursor of seqs on PostgreSQL".into()));
            };
            let (lane, path) = if filter.lanes > 1 {
                let (expr, path) = lane_sql(filter.order_by, filter.lanes, 8);
                (format!(" AND {expr} = $7"), path)
            } else {
                (" AND $7::int = $7".to_owned(), None)
            };
            let path_guard = if path.is_none() {
                " AND $8::text[] IS NULL"
            } else {
                ""
            };
            let common = format!(
                "e.processed_at IS NULL AND e.source_product = $4 AND e.event_name = ANY($5){lane}{path_guard} \
                 AND pg_visible_in_snapshot(e.xid::text::xid8, $3::pg_snapshot)"
            );
            // The first part's index condition is `xid = ANY(from's
            // running transactions)`; the cursor is a filter on those few
            // transactions' events (as a row comparison it was taken as
            // the index condition instead, and the list as a filter).
            //
            // The second part's lower bound is one row comparison, the
            // later of the cursor and `(from.xmax, MIN)`: given as a
            // scalar `xid >= from.xmax` beside the cursor's row, the index
            // scan started at the cursor and walked every older event of
            // the source (15 ms a read at 47,000 events, and growing).
            let lower = std::cmp::max((cursor.at.xid, cursor.at.seq), (*xmax, i64::MIN));
            let outer = columns.replace("e.", "u.");
            let sql = format!(
                "SELECT {outer} FROM ( \
                   (SELECT e.xid AS o_xid, e.seq AS o_seq, {columns} FROM integrations.events e \
                     WHERE e.xid = ANY($9::bigint[]) AND (e.xid > $1 OR (e.xid = $1 AND e.seq > $2)) AND {common} \
                     ORDER BY e.xid, e.seq LIMIT $6) \
                   UNION ALL \
                   (SELECT e.xid AS o_xid, e.seq AS o_seq, {columns} FROM integrations.events e \
                     WHERE (e.xid, e.seq) > ($10, $11) AND e.xid < pg_snapshot_xmax($3::pg_snapshot)::text::bigint \
                       AND {common} \
                     ORDER BY e.xid, e.seq LIMIT $6)) u \
                 ORDER BY u.o_xid, u.o_seq LIMIT $6"
            );
            // Planned at each read, with its values: a prepared statement's
            // generic plan, costed when the log was small, filtered the
            // whole source by the running-transaction list instead of
            // looking its few transactions up (auto_explain: 13,906 rows
            // read to return none, 10-40 ms a read under load).
            sqlx::query_as(AssertSqlSafe(sql))
                .persistent(false)
                .bind(cursor.at.xid)
                .bind(cursor.at.seq)
                .bind(cursor.to.to_text())
                .bind(filter.source)
                .bind(&filter.events)
                .bind(limit)
                .bind(filter.lane)
                .bind(path)
                .bind(xip)
                .bind(lower.0)
                .bind(lower.1)
                .fetch_all(&mut **conn)
                .await?
        }
        DbTx::Sqlite(conn) => {
            let (Snapshot::Seq(from), Snapshot::Seq(to)) = (&cursor.from, &cursor.to) else {
                return Err(StoreError::Invalid(
                    "a cursor of transaction ids on SQLite".into(),
                ));
            };
            // One lane per integration on SQLite: no hashing.
            let names = vec!["?"; filter.events.len().max(1)].join(", ");
            let sql = format!(
                "SELECT {columns} FROM \"integrations.events\" e \
                  WHERE e.seq > ? AND e.seq <= ? AND e.processed_at IS NULL \
                    AND e.source_product = ? AND e.event_name IN ({names}) \
                  ORDER BY e.seq LIMIT ?"
            );
            let mut query = sqlx::query_as(AssertSqlSafe(sql))
                .bind((*from).max(cursor.at.seq))
                .bind(*to)
                .bind(filter.source);
            if filter.events.is_empty() {
                query = query.bind("");
            }
            for name in &filter.events {
                query = query.bind(name.as_str());
            }
            query.bind(limit).fetch_all(&mut **conn).await?
        }
    })
}

/// Every event of a lane (PostgreSQL) that `cursor` has not passed and
/// that was not published before `origin`, in `seq` order: what a rebase
/// turns into pending rows. A scan of the source's events, for a one-off.
pub async fn not_passed(
    tx: &mut DbTx,
    filter: &LaneFilter<'_>,
    cursor: &Cursor,
    origin: &Origin,
) -> Result<Vec<LogEvent>, StoreError> {
    let DbTx::Postgres(conn) = &mut *tx else {
        return Err(StoreError::Invalid("not_passed is for PostgreSQL".into()));
    };
    let (lane, path) = if filter.lanes > 1 {
        let (expr, path) = lane_sql(filter.order_by, filter.lanes, 11);
        (format!(" AND {expr} = $10"), path)
    } else {
        (" AND $10::int = $10".to_owned(), None)
    };
    let path_guard = if path.is_none() {
        " AND $11::text[] IS NULL"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {EVENT_COLUMNS} \
           FROM integrations.events e \
          WHERE e.processed_at IS NULL AND e.source_product = $1 AND e.event_name = ANY($2){lane}{path_guard} \
            AND NOT (pg_visible_in_snapshot(e.xid::text::xid8, $3::pg_snapshot) \
                     OR (pg_visible_in_snapshot(e.xid::text::xid8, $4::pg_snapshot) AND (e.xid, e.seq) <= ($5, $6))) \
            AND NOT (pg_visible_in_snapshot(e.xid::text::xid8, $7::pg_snapshot) OR (e.xid, e.seq) <= ($8, $9)) \
          ORDER BY e.seq"
    );
    let rows: Vec<EventRow> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(filter.source)
        .bind(&filter.events)
        .bind(cursor.from.to_text())
        .bind(cursor.to.to_text())
        .bind(cursor.at.xid)
        .bind(cursor.at.seq)
        .bind(origin.seen.to_text())
        .bind(origin.at.xid)
        .bind(origin.at.seq)
        .bind(filter.lane)
        .bind(path)
        .fetch_all(&mut **conn)
        .await?;
    Ok(rows.into_iter().map(log_event).collect())
}

/// The lane of each event (by id) for one integration's order key, as the
/// database computes it (PostgreSQL; SQLite has one lane).
pub async fn lanes_of(
    tx: &mut DbTx,
    organization: Uuid,
    ids: &[Uuid],
    order_by: &OrderKey,
    lanes: i32,
) -> Result<HashMap<Uuid, (i32, Position)>, StoreError> {
    let mut out = HashMap::new();
    match &mut *tx {
        DbTx::Postgres(conn) => {
            let (expr, path) = if lanes > 1 {
                lane_sql(order_by, lanes, 3)
            } else {
                ("0".to_owned(), None)
            };
            let guard = if path.is_none() {
                " AND $3::text[] IS NULL"
            } else {
                ""
            };
            let sql = format!(
                "SELECT e.id, ({expr})::int, e.xid, e.seq FROM integrations.events e \
                  WHERE e.organization_id = $1 AND e.id = ANY($2){guard}"
            );
            let rows: Vec<(Uuid, i32, i64, i64)> = sqlx::query_as(AssertSqlSafe(sql))
                .bind(organization)
                .bind(ids)
                .bind(path)
                .fetch_all(&mut **conn)
                .await?;
            for (id, lane, xid, seq) in rows {
                out.insert(id, (lane, Position::new(xid, seq)));
            }
        }
        DbTx::Sqlite(conn) => {
            for id in ids {
                let row: Option<(i64, i64)> = sqlx::query_as(
                    "SELECT xid, seq FROM \"integrations.events\" WHERE organization_id = ? AND id = ?",
                )
                .bind(Id(organization))
                .bind(Id(*id))
                .fetch_optional(&mut **conn)
                .await?;
                if let Some((xid, seq)) = row {
                    out.insert(*id, (0, Position::new(xid, seq)));
                }
            }
        }
    }
    Ok(out)
}

/// PostgreSQL's `hashtextextended(text, 0)`: Bob Jenkins' lookup3 over the
/// text's UTF-8 bytes, as `hash_bytes_extended` computes it (a 64-bit
/// result, `b << 32 | c`). busbar computes an event's lane with it in Rust
/// (to wake only the lanes that got events) and in SQL (to read a lane's
/// events); a test checks the two agree.
pub fn pg_hash_text(text: &str) -> i64 {
    fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
        *a = a.wrapping_sub(*c);
        *a ^= c.rotate_left(4);
        *c = c.wrapping_add(*b);
        *b = b.wrapping_sub(*a);
        *b ^= a.rotate_left(6);
        *a = a.wrapping_add(*c);
        *c = c.wrapping_sub(*b);
        *c ^= b.rotate_left(8);
        *b = b.wrapping_add(*a);
        *a = a.wrapping_sub(*c);
        *a ^= c.rotate_left(16);
        *c = c.wrapping_add(*b);
        *b = b.wrapping_sub(*a);
        *b ^= a.rotate_left(19);
        *a = a.wrapping_add(*c);
        *c = c.wrapping_sub(*b);
        *c ^= b.rotate_left(4);
        *b = b.wrapping_add(*a);
    }
    fn last(a: &mut u32, b: &mut u32, c: &mut u32) {
        *c ^= *b;
        *c = c.wrapping_sub(b.rotate_left(14));
        *a ^= *c;
        *a = a.wrapping_sub(c.rotate_left(11));
        *b ^= *a;
        *b = b.wrapping_sub(a.rotate_left(25));
        *c ^= *b;
        *c = c.wrapping_sub(b.rotate_left(16));
        *a ^= *c;
        *a = a.wrapping_sub(c.rotate_left(4));
        *b ^= *a;
        *b = b.wrapping_sub(a.rotate_left(14));
        *c ^= *b;
        *c = c.wrapping_sub(b.rotate_left(24));
    }
    let word = |k: &[u8]| u32::from_le_bytes([k[0], k[1], k[2], k[3]]);
    let mut k = text.as_bytes();
    let init = 0x9e37_79b9u32
        .wrapping_add(k.len() as u32)
        .wrapping_add(3_923_095);
    let (mut a, mut b, mut c) = (init, init, init);
    while k.len() >= 12 {
        a = a.wrapping_add(word(&k[0..4]));
        b = b.wrapping_add(word(&k[4..8]));
        c = c.wrapping_add(word(&k[8..12]));
        mix(&mut a, &mut b, &mut c);
        k = &k[12..];
    }
    // The last 11 bytes, little-endian; the lowest byte of `c` is left for
    // the length, as lookup3 does.
    let byte = |i: usize, shift: u32| (k[i] as u32) << shift;
    let n = k.len();
    if n >= 11 {
        c = c.wrapping_add(byte(10, 24));
    }
    if n >= 10 {
        c = c.wrapping_add(byte(9, 16));
    }
    if n >= 9 {
        c = c.wrapping_add(byte(8, 8));
    }
    if n >= 8 {
        b = b.wrapping_add(byte(7, 24));
    }
    if n >= 7 {
        b = b.wrapping_add(byte(6, 16));
    }
    if n >= 6 {
        b = b.wrapping_add(byte(5, 8));
    }
    if n >= 5 {
        b = b.wrapping_add(byte(4, 0));
    }
    if n >= 4 {
        a = a.wrapping_add(byte(3, 24));
    }
    if n >= 3 {
        a = a.wrapping_add(byte(2, 16));
    }
    if n >= 2 {
        a = a.wrapping_add(byte(1, 8));
    }
    if n >= 1 {
        a = a.wrapping_add(byte(0, 0));
    }
    last(&mut a, &mut b, &mut c);
    (((b as u64) << 32) | c as u64) as i64
}

/// The lane of an order key among `lanes`, as [`lane_sql`] computes it.
pub fn lane_of_key(key: &str, lanes: i32) -> i32 {
    if lanes <= 1 {
        return 0;
    }
    ((pg_hash_text(key) & i64::MAX) % i64::from(lanes)) as i32
}

/// Whether the database is PostgreSQL (lanes hash) or SQLite (one lane).
pub fn lanes_for(dialect: Dialect) -> i32 {
    match dialect {
        Dialect::Postgres => 8,
        Dialect::Sqlite => 1,
    }
}
