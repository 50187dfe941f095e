//! Redelivery by filter, in the database: which deliveries of one
//! integration match a filter and have been passed by its lanes, putting
//! them back in their lane as `pending` rows, and
//! `integrations.redeliveries`, which remembers what a request id did.
//!
//! A redelivered delivery becomes (or its row is reset to) `pending` with
//! `attempts = 0` and `epoch = epoch + 1` (so an `emit` step makes a new
//! event id), its lane and order key as the integration computes them now,
//! and its event's position. The lane then runs its pending rows in
//! position order per key, before later events of that key: redelivery
//! keeps the integration's order. Nothing here runs a delivery.
//!
//! A delivery matches when its state is one of the filter's: `dead` and
//! `skipped` are rows; `delivered` is a row delivered after having been an
//! exception, or no row at all for an event the lane has passed (a
//! first-pass success). Only events at or below their lane's cursor are
//! taken: the others are still on their way and will run on the live
//! generation anyway.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use super::dialect::{EngineTable, Statement};
use super::events::Status;
use super::log;
use super::ticks::{Cursor, Origin};
use super::types::{Doc, Id, Position, Time};
use super::{DbTx, StoreError};
use crate::compile::Integration;
use crate::delivery::delivery_id;
use crate::envelope::Envelope;
use crate::on_tx;

/// Rows per multi-row statement.
const CHUNK: usize = 200;

/// The states a redelivery may select: the final ones.
pub const REDELIVERABLE: [Status; 3] = [Status::Delivered, Status::Skipped, Status::Dead];

/// Which deliveries of an integration to run again. Every field but the
/// integration narrows the selection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedeliverFilter {
    pub integration: String,
    /// Only events of this name (one the integration routes).
    pub event: Option<String>,
    /// Only events stored at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only events stored before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only deliveries in these states (`delivered`, `skipped`, `dead`);
    /// empty: all three.
    #[serde(with = "status_names")]
    pub statuses: Vec<Status>,
    /// Only this organization's events (`None`: every organization's).
    pub organization: Option<Uuid>,
    /// Of the matching deliveries, only the latest per order key and
    /// route: each key's newest state, applied again.
    #[serde(default)]
    pub latest_per_key: bool,
    /// Only the matching deliveries of this event's order key, from this
    /// event on (in position order): one key's history, replayed from a
    /// point.
    #[serde(default)]
    pub from_event: Option<Uuid>,
}

impl RedeliverFilter {
    /// The states selected, each once, in a fixed order.
    pub fn states(&self) -> Vec<Status> {
        if self.statuses.is_empty() {
            return REDELIVERABLE.to_vec();
        }
        REDELIVERABLE
            .into_iter()
            .filter(|s| self.statuses.contains(s))
            .collect()
    }

    /// The same filter written one way only (states sorted and deduplicated),
    /// to compare two requests.
    pub fn normalized(&self) -> RedeliverFilter {
        RedeliverFilter {
            statuses: self.states(),
            ..self.clone()
        }
    }
}

/// States as their names, in a recorded filter.
mod status_names {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::store::events::Status;

    pub fn serialize<S: Serializer>(states: &[Status], out: S) -> Result<S::Ok, S::Error> {
        let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        names.serialize(out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<Vec<Status>, D::Error> {
        Vec::<String>::deserialize(input)?
            .iter()
            .map(|name| {
                Status::parse(name)
                    .ok_or_else(|| serde::de::Error::custom(format!("unknown state `{name}`")))
            })
            .collect()
    }
}

/// What the filter's mode keeps of the deliveries a scan chose.
#[derive(Debug, Clone, Default)]
pub enum Narrowing {
    /// Every matching delivery.
    #[default]
    All,
    /// Only the latest per order key and route: the position of each.
    Latest(HashMap<(String, String, String), Position>),
    /// Only those of one order key, at or after a position.
    From { key: String, position: Position },
}

impl Narrowing {
    /// Whether a chosen delivery stays in the selection.
    pub fn keeps(&self, chosen: &Chosen) -> bool {
        match self {
            Narrowing::All => true,
            Narrowing::Latest(latest) => latest.get(&route_key(chosen)) == Some(&chosen.position),
            Narrowing::From { key, position } => {
                chosen.order_key == *key && chosen.position >= *position
            }
        }
    }

    /// Keeps what it keeps of `scanned`, recounting its events.
    pub fn apply(&self, scanned: &mut Scanned) {
        if matches!(self, Narrowing::All) {
            return;
        }
        scanned.chosen.retain(|c| self.keeps(c));
        let events: std::collections::HashSet<(Uuid, Uuid)> = scanned
            .chosen
            .iter()
            .map(|c| (c.organization_id, c.event_id))
            .collect();
        scanned.events = events.len() as u64;
    }
}

/// A chosen delivery's key and route, the unit "the latest per key" keeps one of.
pub fn route_key(chosen: &Chosen) -> (String, String, String) {
    (
        chosen.order_key.clone(),
        chosen.route_event.clone(),
        chosen.route_name.clone(),
    )
}

/// An event as [`anchor`] reads it.
type AnchorRow = (i64, i64, Id, Id, String, String, Doc, Time);

/// An event's order key (for `integration`) and position, if the
/// integration has it in its log: the anchor of "from this event on".
/// `organization`, when known, makes it a primary-key lookup.
pub async fn anchor(
    tx: &mut DbTx,
    integration: &Integration,
    event: Uuid,
    organization: Option<Uuid>,
) -> Result<Option<(String, Position)>, StoreError> {
    let d = tx.dialect();
    let events = d.engine_table(EngineTable::Events);
    let [p1, p2, p3] = d.params();
    let sql = AssertSqlSafe(format!(
        "SELECT e.xid, e.seq, e.id, e.organization_id, e.source_product, e.event_name, e.event_data, e.occurred_at \
           FROM {events} e WHERE e.id = {p1} AND e.source_product = {p2} \
            AND ({p3} IS NULL OR e.organization_id = {p3})"
    ));
    let row: Option<AnchorRow> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(Id(event))
        .bind(integration.source.as_str())
        .bind(organization.map(Id))
        .fetch_optional(conn)
        .await)?;
    Ok(
        row.map(|(xid, seq, id, org, source, name, data, occurred)| {
            let envelope = Envelope {
                id: id.0,
                source,
                event: name,
                organization_id: org.0,
                occurred_at: occurred.0,
                data: data.0,
            };
            (
                integration.order_by.key_of(&envelope),
                Position::new(xid, seq),
            )
        }),
    )
}

/// One lane of the integration: how far it has read, and where it began.
#[derive(Debug, Clone)]
pub struct LaneMark {
    pub cursor: Cursor,
    pub origin: Origin,
}

/// The integration's lanes by number. A redelivery reads them while it
/// holds the lanes (`lanes::hold_all` on PostgreSQL, the engine's `Hold`
/// on SQLite), so the cursors it compares with do not move and the rows it
/// writes are seen by the lanes' next reads.
pub async fn lanes(tx: &mut DbTx, integration: &str) -> Result<HashMap<i32, LaneMark>, StoreError> {
    Ok(super::lanes::all(tx)
        .await?
        .into_iter()
        .filter(|lane| lane.integration == integration)
        .map(|lane| {
            (
                lane.lane,
                LaneMark {
                    cursor: lane.cursor,
                    origin: lane.origin,
                },
            )
        })
        .collect())
}

/// A position above every event `lanes` have passed: no event above it
/// has been passed.
pub fn bound(lanes: &HashMap<i32, LaneMark>) -> Position {
    lanes
        .values()
        .map(|l| l.cursor.bound())
        .max()
        .unwrap_or(Position::ZERO)
}

/// One delivery chosen to run again.
#[derive(Debug, Clone)]
pub struct Chosen {
    pub id: Uuid,
    pub event_id: Uuid,
    pub organization_id: Uuid,
    pub route_event: String,
    pub route_ordinal: i32,
    /// The route's identity (`Route::recorded_name`).
    pub route_name: String,
    pub lane: i32,
    pub order_key: String,
    pub position: Position,
    /// Its state now (a row's, or `delivered` inferred from the lane).
    pub status: Status,
}

/// What one step of a scan found.
#[derive(Debug, Default)]
pub struct Scanned {
    pub chosen: Vec<Chosen>,
    /// How many distinct events `chosen` belongs to.
    pub events: u64,
    /// The position of the last event read (the next scan starts after
    /// it); `None` when nothing was left to read.
    pub last: Option<Position>,
    /// Whether it read as many events as it could: there may be more.
    pub full: bool,
}

/// What a scan selects from: an integration's deliveries matching a
/// filter, among the events its lanes had passed when the selection was
/// made (at or below `bound`, and at or below the event's own lane's
/// cursor).
#[derive(Debug, Clone, Copy)]
pub struct Selection<'a> {
    pub integration: &'a Integration,
    /// Lanes per integration on this database.
    pub lane_count: i32,
    pub lanes: &'a HashMap<i32, LaneMark>,
    pub filter: &'a RedeliverFilter,
    pub bound: Position,
}

/// A candidate event as read.
struct Candidate {
    position: Position,
    lane: i32,
    legacy: bool,
    envelope: Envelope,
}

type CandidateRow = (
    i64,
    i64,
    Id,
    Id,
    String,
    String,
    Option<Doc>,
    Time,
    i32,
    bool,
);

/// Reads the next `limit` candidate events of `selection` after `after`, in
/// position order, and chooses their deliveries that match its filter and
/// were passed by their lane. With `with_data`, the payload is
/// read too (needed for an order key taken from the data).
///
/// The candidates are the integration's events matching the filter's
/// event, time range and organization; when the filter does not ask for
/// `delivered`, only events with a row in a chosen state are read (they are
/// few), found through the deliveries' `(integration_id, status)` index and
/// narrowed by the rows' own copy of their event's position.
pub async fn scan(
    tx: &mut DbTx,
    selection: &Selection<'_>,
    after: Position,
    limit: i64,
    with_data: bool,
) -> Result<Scanned, StoreError> {
    let Selection {
        integration,
        lane_count,
        lanes,
        filter,
        bound,
    } = *selection;
    let states = filter.states();
    let names: Vec<String> = match &filter.event {
        Some(event) => vec![event.clone()],
        None => {
            let mut names: Vec<String> = integration.routes.iter().map(|r| r.on.clone()).collect();
            names.sort();
            names.dedup();
            names
        }
    };
    if names.is_empty() || states.is_empty() || after >= bound {
        return Ok(Scanned::default());
    }
    let rows_only = !states.contains(&Status::Delivered);
    let data = if with_data {
        "e.event_data"
    } else {
        "CAST(NULL AS TEXT)"
    };
    let candidates: Vec<CandidateRow> = match &mut *tx {
        DbTx::Postgres(conn) => {
            let (lane, path) = if lane_count > 1 {
                log::lane_sql(&integration.order_by, lane_count, 13)
            } else {
                ("0".to_owned(), None)
            };
            let path_guard = if path.is_none() {
                " AND $13::text[] IS NULL"
            } else {
                ""
            };
            let data = if with_data {
                data
            } else {
                "CAST(NULL AS JSONB)"
            };
            let from = if rows_only {
                "(SELECT DISTINCT d.organization_id AS o, d.event_id AS i FROM integrations.deliveries d \
                   WHERE d.integration_id = $11 AND d.status = ANY($12) \
                     AND (d.event_xid, d.event_seq) > ($1, $2) AND (d.event_xid, d.event_seq) <= ($3, $4)) h \
                 JOIN integrations.events e ON e.organization_id = h.o AND e.id = h.i"
            } else {
                "integrations.events e"
            };
            let rows_guard = if rows_only {
                ""
            } else {
                " AND $11::text IS NOT NULL AND $12::text[] IS NOT NULL"
            };
            let sql = format!(
                "SELECT e.xid, e.seq, e.id, e.organization_id, e.source_product, e.event_name, {data}, \
                        e.occurred_at, ({lane})::int, e.processed_at IS NOT NULL \
                   FROM {from} \
                  WHERE (e.xid, e.seq) > ($1, $2) AND (e.xid, e.seq) <= ($3, $4) \
                    AND e.source_product = $5 AND e.event_name = ANY($6) \
                    AND ($7::uuid IS NULL OR e.organization_id = $7) \
                    AND ($8::timestamptz IS NULL OR e.created_at >= $8) \
                    AND ($9::timestamptz IS NULL OR e.created_at < $9){path_guard}{rows_guard} \
                  ORDER BY e.xid, e.seq LIMIT $10"
            );
            sqlx::query_as(AssertSqlSafe(sql))
                .bind(after.xid)
                .bind(after.seq)
                .bind(bound.xid)
                .bind(bound.seq)
                .bind(&integration.source)
                .bind(&names)
                .bind(filter.organization)
                .bind(filter.since)
                .bind(filter.until)
                .bind(limit)
                .bind(&integration.id)
                .bind(
                    states
                        .iter()
                        .map(|s| s.as_str().to_owned())
                        .collect::<Vec<_>>(),
                )
                .bind(path)
                .fetch_all(&mut **conn)
                .await?
        }
        DbTx::Sqlite(conn) => {
            // One lane per integration on SQLite.
            let name_params = vec!["?"; names.len()].join(", ");
            let state_params = vec!["?"; states.len()].join(", ");
            let from = if rows_only {
                format!(
                    "(SELECT DISTINCT d.organization_id AS o, d.event_id AS i FROM \"integrations.deliveries\" d \
                       WHERE d.integration_id = ? AND d.status IN ({state_params}) \
                         AND (d.event_xid, d.event_seq) > (?, ?) AND (d.event_xid, d.event_seq) <= (?, ?)) h \
                     JOIN \"integrations.events\" e ON e.organization_id = h.o AND e.id = h.i"
                )
            } else {
                "\"integrations.events\" e".to_owned()
            };
            let sql = format!(
                "SELECT e.xid, e.seq, e.id, e.organization_id, e.source_product, e.event_name, {data}, \
                        e.occurred_at, 0, e.processed_at IS NOT NULL \
                   FROM {from} \
                  WHERE (e.xid, e.seq) > (?, ?) AND (e.xid, e.seq) <= (?, ?) \
                    AND e.source_product = ? AND e.event_name IN ({name_params}) \
                    AND (? IS NULL OR e.organization_id = ?) \
                    AND (? IS NULL OR e.created_at >= ?) \
                    AND (? IS NULL OR e.created_at < ?) \
                  ORDER BY e.xid, e.seq LIMIT ?"
            );
            let mut query = sqlx::query_as(AssertSqlSafe(sql));
            if rows_only {
                query = query.bind(integration.id.as_str());
                for state in &states {
                    query = query.bind(state.as_str());
                }
                query = query
                    .bind(after.xid)
                    .bind(after.seq)
                    .bind(bound.xid)
                    .bind(bound.seq);
            }
            query = query
                .bind(after.xid)
                .bind(after.seq)
                .bind(bound.xid)
                .bind(bound.seq)
                .bind(integration.source.as_str());
            for name in &names {
                query = query.bind(name.as_str());
            }
            let organization = filter.organization.map(Id);
            let since = filter.since.map(Time);
            let until = filter.until.map(Time);
            query
                .bind(organization)
                .bind(organization)
                .bind(since)
                .bind(since)
                .bind(until)
                .bind(until)
                .bind(limit)
                .fetch_all(&mut **conn)
                .await?
        }
    };
    let last = candidates.last().map(|r| Position::new(r.0, r.1));
    let full = candidates.len() as i64 >= limit;
    let candidates: Vec<Candidate> = candidates
        .into_iter()
        .map(
            |(xid, seq, id, org, source, event, data, occurred, lane, legacy)| Candidate {
                position: Position::new(xid, seq),
                lane,
                legacy,
                envelope: Envelope {
                    id: id.0,
                    source,
                    event,
                    organization_id: org.0,
                    occurred_at: occurred.0,
                    data: data.map(|d| d.0).unwrap_or(serde_json::Value::Null),
                },
            },
        )
        .collect();

    // Every delivery of the candidates their lane has passed, and the
    // rows they have.
    let mut passed: Vec<(&Candidate, &crate::compile::Route, Uuid)> = Vec::new();
    for candidate in &candidates {
        let Some(mark) = lanes.get(&candidate.lane) else {
            continue;
        };
        if !mark.cursor.passed(candidate.position) {
            continue;
        }
        let envelope = &candidate.envelope;
        for route in integration.routes_for(&envelope.event) {
            let id = delivery_id(
                envelope.organization_id,
                envelope.id,
                &integration.id,
                &route.on,
                &route.identity(),
            );
            passed.push((candidate, route, id));
        }
    }
    let ids: Vec<Uuid> = passed.iter().map(|(_, _, id)| *id).collect();
    let rows = row_states(tx, &ids).await?;
    let mut out = Scanned {
        last,
        full,
        ..Scanned::default()
    };
    let mut previous: Option<Position> = None;
    for (candidate, route, id) in passed {
        let status = match rows.get(&id) {
            Some(status) => *status,
            // No row: a first-pass success, unless the event came before
            // the lane began or was routed by the engine before delivery
            // v2 (those have rows for what they did).
            None if !candidate.legacy
                && lanes
                    .get(&candidate.lane)
                    .is_some_and(|m| !m.origin.before(candidate.position)) =>
            {
                Status::Delivered
            }
            None => continue,
        };
        if !states.contains(&status) {
            continue;
        }
        if previous != Some(candidate.position) {
            out.events += 1;
            previous = Some(candidate.position);
        }
        out.chosen.push(Chosen {
            id,
            event_id: candidate.envelope.id,
            organization_id: candidate.envelope.organization_id,
            route_event: route.on.clone(),
            route_ordinal: route.ordinal as i32,
            route_name: route.recorded_name().to_owned(),
            lane: candidate.lane,
            order_key: integration.order_by.key_of(&candidate.envelope),
            position: candidate.position,
            status,
        });
    }
    Ok(out)
}

/// The state of each of `ids` that has a row.
async fn row_states(tx: &mut DbTx, ids: &[Uuid]) -> Result<HashMap<Uuid, Status>, StoreError> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(CHUNK) {
        let rows: Vec<(Id, String)> = match &mut *tx {
            DbTx::Postgres(conn) => {
                sqlx::query_as("SELECT id, status FROM integrations.deliveries WHERE id = ANY($1)")
                    .bind(chunk)
                    .fetch_all(&mut **conn)
                    .await?
            }
            DbTx::Sqlite(conn) => {
                let sql = format!(
                    "SELECT id, status FROM \"integrations.deliveries\" WHERE id IN ({})",
                    vec!["?"; chunk.len()].join(", ")
                );
                let mut query = sqlx::query_as(AssertSqlSafe(sql));
                for id in chunk {
                    query = query.bind(Id(*id));
                }
                query.fetch_all(&mut **conn).await?
            }
        };
        for (id, status) in rows {
            if let Some(status) = Status::parse(&status) {
                out.insert(id.0, status);
            }
        }
    }
    Ok(out)
}

/// Puts `chosen` back in their lanes: each delivery's row is made, or reset
/// if it is still in one of `states`, as `pending` with `attempts = 0`,
/// `epoch + 1` (1 for a delivery that had no row), no error, and its lane,
/// order key and position. Returns the ids requeued.
pub async fn requeue(
    tx: &mut DbTx,
    integration: &Integration,
    chosen: &[Chosen],
    states: &[Status],
    now: Time,
) -> Result<Vec<Uuid>, StoreError> {
    let states: Vec<String> = states.iter().map(|s| s.as_str().to_owned()).collect();
    let mut requeued = Vec::new();
    for chunk in chosen.chunks(CHUNK) {
        let rows: Vec<(Id,)> = match &mut *tx {
            DbTx::Postgres(conn) => {
                sqlx::query_as(
                    "INSERT INTO integrations.deliveries AS d (id, event_id, organization_id, integration_id, \
                       route_event, route_ordinal, source_product, target_product, status, attempts, next_attempt_at, \
                       last_error, error_step, generation, lane, order_key, event_xid, event_seq, epoch, created_at, \
                       updated_at, completed_at, route_name) \
                     SELECT u.id, u.event_id, u.org, $2, u.route_event, u.ordinal, $3, $4, 'pending', 0, $1, \
                            NULL, NULL, NULL, u.lane, u.order_key, u.xid, u.seq, 1, $1, $1, NULL, u.route_name \
                       FROM UNNEST($5::uuid[], $6::uuid[], $7::uuid[], $8::text[], $9::int[], $10::int[], \
                                   $11::text[], $12::bigint[], $13::bigint[], $15::text[]) \
                            AS u(id, event_id, org, route_event, ordinal, lane, order_key, xid, seq, route_name) \
                     ON CONFLICT (id) DO UPDATE SET status = 'pending', attempts = 0, \
                        next_attempt_at = excluded.next_attempt_at, last_error = NULL, error_step = NULL, \
                        skip_reason = NULL, skipped_by = NULL, route_name = excluded.route_name, \
                        lane = excluded.lane, order_key = excluded.order_key, event_xid = excluded.event_xid, \
                        event_seq = excluded.event_seq, epoch = d.epoch + 1, updated_at = excluded.updated_at, \
                        completed_at = NULL \
                      WHERE d.status = ANY($14) \
                     RETURNING d.id",
                )
                .bind(now)
                .bind(&integration.id)
                .bind(&integration.source)
                .bind(&integration.target)
                .bind(chunk.iter().map(|c| c.id).collect::<Vec<Uuid>>())
                .bind(chunk.iter().map(|c| c.event_id).collect::<Vec<Uuid>>())
                .bind(chunk.iter().map(|c| c.organization_id).collect::<Vec<Uuid>>())
                .bind(chunk.iter().map(|c| c.route_event.clone()).collect::<Vec<String>>())
                .bind(chunk.iter().map(|c| c.route_ordinal).collect::<Vec<i32>>())
                .bind(chunk.iter().map(|c| c.lane).collect::<Vec<i32>>())
                .bind(chunk.iter().map(|c| c.order_key.clone()).collect::<Vec<String>>())
                .bind(chunk.iter().map(|c| c.position.xid).collect::<Vec<i64>>())
                .bind(chunk.iter().map(|c| c.position.seq).collect::<Vec<i64>>())
                .bind(&states)
                .bind(chunk.iter().map(|c| c.route_name.clone()).collect::<Vec<String>>())
                .fetch_all(&mut **conn)
                .await?
            }
            DbTx::Sqlite(conn) => {
                let row = "(?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, NULL, NULL, NULL, ?, ?, ?, ?, 1, ?, ?, NULL, ?)";
                let sql = format!(
                    "INSERT INTO \"integrations.deliveries\" (id, event_id, organization_id, integration_id, \
                       route_event, route_ordinal, source_product, target_product, status, attempts, next_attempt_at, \
                       last_error, error_step, generation, lane, order_key, event_xid, event_seq, epoch, created_at, \
                       updated_at, completed_at, route_name) VALUES {} \
                     ON CONFLICT (id) DO UPDATE SET status = 'pending', attempts = 0, \
                        next_attempt_at = excluded.next_attempt_at, last_error = NULL, error_step = NULL, \
                        skip_reason = NULL, skipped_by = NULL, route_name = excluded.route_name, \
                        lane = excluded.lane, order_key = excluded.order_key, event_xid = excluded.event_xid, \
                        event_seq = excluded.event_seq, epoch = epoch + 1, updated_at = excluded.updated_at, \
                        completed_at = NULL \
                      WHERE status IN ({}) \
                     RETURNING id",
                    vec![row; chunk.len()].join(", "),
                    vec!["?"; states.len()].join(", ")
                );
                let mut query = sqlx::query_as(AssertSqlSafe(sql));
                for c in chunk {
                    query = query
                        .bind(Id(c.id))
                        .bind(Id(c.event_id))
                        .bind(Id(c.organization_id))
                        .bind(integration.id.as_str())
                        .bind(c.route_event.as_str())
                        .bind(c.route_ordinal)
                        .bind(integration.source.as_str())
                        .bind(integration.target.as_str())
                        .bind(now)
                        .bind(c.lane)
                        .bind(c.order_key.as_str())
                        .bind(c.position.xid)
                        .bind(c.position.seq)
                        .bind(now)
                        .bind(now)
                        .bind(c.route_name.as_str());
                }
                for state in &states {
                    query = query.bind(state.as_str());
                }
                query.fetch_all(&mut **conn).await?
            }
        };
        requeued.extend(rows.into_iter().map(|(id,)| id.0));
    }
    Ok(requeued)
}

// ---------------------------------------------------------------------------
// What a request id did: `integrations.redeliveries`

/// Whose request ids a record belongs to: an organization key's own, or
/// the platform's (platform keys and the command line).
pub fn scope_of(organization: Option<Uuid>) -> String {
    organization.map_or_else(|| "platform".to_owned(), |o| o.to_string())
}

/// A request id, in its caller's namespace ([`scope_of`]).
#[derive(Debug, Clone, Copy)]
pub struct RequestKey<'a> {
    pub scope: &'a str,
    pub id: &'a str,
}

/// A redelivery made with a request id.
#[derive(Debug, Clone)]
pub struct Record {
    pub filter: RedeliverFilter,
    /// `running` or `done`.
    pub done: bool,
    pub events: u64,
    pub deliveries: u64,
    /// Events above it were not passed when it started: not its.
    pub bound: Position,
    /// The last event done: a run that stopped resumes after it.
    pub progress: Position,
    /// The run working it.
    pub run: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

type RecordRow = (
    Doc,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    Id,
    Time,
    Time,
    Option<Time>,
);

/// The record of `request_id` in `scope`, if any.
pub async fn find_record(tx: &mut DbTx, key: RequestKey<'_>) -> Result<Option<Record>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let redeliveries = d.engine_table(EngineTable::Redeliveries);
        let [p1, p2] = d.params();
        format!(
            "SELECT filter, state, events, deliveries, bound_xid, bound_seq, progress_xid, progress_seq, run_id, \
                created_at, updated_at, finished_at \
               FROM {redeliveries} WHERE scope = {p1} AND request_id = {p2}"
        )
    });
    let sql = SQL.get(tx.dialect());
    let row: Option<RecordRow> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(key.scope)
        .bind(key.id)
        .fetch_optional(conn)
        .await)?;
    let Some((filter, state, events, deliveries, bx, bs, px, ps, run, created, updated, finished)) =
        row
    else {
        return Ok(None);
    };
    let filter: RedeliverFilter = serde_json::from_value(filter.0).map_err(|e| {
        StoreError::Invalid(format!("a stored redelivery filter is unreadable: {e}"))
    })?;
    Ok(Some(Record {
        filter,
        done: state == "done",
        events: events as u64,
        deliveries: deliveries as u64,
        bound: Position::new(bx, bs),
        progress: Position::new(px, ps),
        run: run.0,
        created_at: created.0,
        updated_at: updated.0,
        finished_at: finished.map(|t| t.0),
    }))
}

/// Records a new redelivery under `request_id`, run by `run`. Returns
/// false when the id is already recorded (nothing written). Records older
/// than `forget_before` are deleted first.
pub async fn create_record(
    tx: &mut DbTx,
    key: RequestKey<'_>,
    filter: &RedeliverFilter,
    bound: Position,
    run: Uuid,
    now: Time,
    forget_before: Time,
) -> Result<bool, StoreError> {
    static PURGE: Statement = Statement::new(|d| {
        let redeliveries = d.engine_table(EngineTable::Redeliveries);
        let [p1] = d.params();
        format!("DELETE FROM {redeliveries} WHERE created_at < {p1} AND state = 'done'")
    });
    let purge = PURGE.get(tx.dialect());
    on_tx!(&mut *tx, |conn| sqlx::query(purge)
        .bind(forget_before)
        .execute(conn)
        .await
        .map(|_| ()))?;
    static SQL: Statement = Statement::new(|d| {
        let redeliveries = d.engine_table(EngineTable::Redeliveries);
        let [p1, p2, p3, p4, p5, p6, p7, p8] = d.params();
        format!(
            "INSERT INTO {redeliveries} (scope, request_id, integration_id, filter, state, events, deliveries, \
                bound_xid, bound_seq, progress_xid, progress_seq, run_id, created_at, updated_at) \
             VALUES ({p1}, {p2}, {p3}, {p4}, 'running', 0, 0, {p5}, {p6}, 0, 0, {p7}, {p8}, {p8}) ON CONFLICT DO NOTHING"
        )
    });
    let sql = SQL.get(tx.dialect());
    let json = serde_json::to_value(filter.normalized())
        .map_err(|e| StoreError::Invalid(format!("cannot record a redelivery filter: {e}")))?;
    let inserted = on_tx!(&mut *tx, |conn| sqlx::query(sql)
        .bind(key.scope)
        .bind(key.id)
        .bind(filter.integration.as_str())
        .bind(Doc(json.clone()))
        .bind(bound.xid)
        .bind(bound.seq)
        .bind(Id(run))
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(inserted == 1)
}

/// Hands a record that nobody has touched since `seen` to the run `run`.
/// Returns whether it did (false: another run got it first).
pub async fn take_over(
    tx: &mut DbTx,
    key: RequestKey<'_>,
    seen: DateTime<Utc>,
    run: Uuid,
    now: Time,
) -> Result<bool, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let redeliveries = d.engine_table(EngineTable::Redeliveries);
        let [p1, p2, p3, p4, p5] = d.params();
        format!(
            "UPDATE {redeliveries} SET run_id = {p3}, updated_at = {p4} \
              WHERE scope = {p1} AND request_id = {p2} AND state = 'running' AND updated_at = {p5}"
        )
    });
    let sql = SQL.get(tx.dialect());
    let updated = on_tx!(&mut *tx, |conn| sqlx::query(sql)
        .bind(key.scope)
        .bind(key.id)
        .bind(Id(run))
        .bind(now)
        .bind(Time(seen))
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(updated == 1)
}

/// One chunk's work, for [`record_progress`].
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// The position of the last event read.
    pub position: Position,
    pub events: u64,
    pub deliveries: u64,
    /// Whether it was the last chunk.
    pub done: bool,
}

/// Adds one chunk's work to the record of `run`, and marks it done with
/// the last chunk. Returns false when the record belongs to another run
/// now (it took the record over): the caller must roll its chunk back.
pub async fn record_progress(
    tx: &mut DbTx,
    key: RequestKey<'_>,
    run: Uuid,
    progress: Progress,
    now: Time,
) -> Result<bool, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let redeliveries = d.engine_table(EngineTable::Redeliveries);
        let [p1, p2, p3, p4, p5, p6, p7, p8, p9] = d.params();
        format!(
            "UPDATE {redeliveries} SET progress_xid = {p4}, progress_seq = {p5}, events = events + {p6}, \
                deliveries = deliveries + {p7}, updated_at = {p8}, \
                state = CASE WHEN {p9} THEN 'done' ELSE state END, \
                finished_at = CASE WHEN {p9} THEN {p8} ELSE finished_at END \
              WHERE scope = {p1} AND request_id = {p2} AND run_id = {p3}"
        )
    });
    let sql = SQL.get(tx.dialect());
    let updated = on_tx!(&mut *tx, |conn| sqlx::query(sql)
        .bind(key.scope)
        .bind(key.id)
        .bind(Id(run))
        .bind(progress.position.xid)
        .bind(progress.position.seq)
        .bind(progress.events as i64)
        .bind(progress.deliveries as i64)
        .bind(now)
        .bind(progress.done)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(updated == 1)
}
