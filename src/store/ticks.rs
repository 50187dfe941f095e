//! Ticks: which events have become visible, as stored snapshots (PgQ's
//! design; ARCHITECTURE.md, "Ticks").
//!
//! A tick is a row of `integrations.ticks` holding `pg_current_snapshot()`
//! as the ticker took it. The events of the batch `(A, B]` are those whose
//! transaction is visible in B and not in A: a fact about commits, the same
//! for every reader whatever its isolation level, the xid epoch or the
//! other databases of the cluster. A lane's [`Cursor`] is the batch it is
//! in and the position of the last event of it that it passed.
//!
//! On SQLite writers are serialised and `seq` order is commit order: a
//! tick is the highest `seq` committed, and a batch a range of `seq`.
//!
//! This module decides visibility and nothing else; it never compares a
//! transaction id with anything but a snapshot's own bounds, all 64-bit
//! (`xid8`, as `pg_current_xact_id()` and `pg_current_snapshot()` give
//! them; `tests` check [`Snapshot::sees`] against `pg_visible_in_snapshot`).

use std::fmt;
use std::str::FromStr;

use super::types::{Position, Time};
use super::{DbTx, StoreError};

/// The advisory lock class of busbar's ticker (the first key of the
/// two-key form, so products' own advisory locks cannot collide with it).
pub const TICK_LOCK: i32 = 0x6275_7301;

/// What had committed when a snapshot was taken.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Snapshot {
    /// PostgreSQL's `pg_snapshot`: every transaction below `xmin` had
    /// ended, none at or above `xmax` had, and of those between, the ones
    /// in `xip` were still running.
    Xids { xmin: i64, xmax: i64, xip: Vec<i64> },
    /// SQLite: every event with `seq` at or below this was committed.
    Seq(i64),
}

impl Snapshot {
    /// Whether an event at `position` had committed when the snapshot was
    /// taken (for an aborted transaction's rows the answer does not matter:
    /// nobody can read them).
    pub fn sees(&self, position: Position) -> bool {
        match self {
            Snapshot::Xids { xmin, xmax, xip } => {
                position.xid < *xmin || (position.xid < *xmax && !xip.contains(&position.xid))
            }
            Snapshot::Seq(seq) => position.seq <= *seq,
        }
    }

    /// A snapshot in which exactly the transactions below `xid` had ended:
    /// what a position-only cursor of delivery v2 meant.
    pub fn below_xid(xid: i64) -> Snapshot {
        // Transaction ids 0 to 2 are never a normal transaction's.
        let xid = xid.max(3);
        Snapshot::Xids {
            xmin: xid,
            xmax: xid,
            xip: Vec::new(),
        }
    }

    /// The snapshot as PostgreSQL writes a `pg_snapshot` (`xmin:xmax:xip`),
    /// or the `seq` on SQLite.
    pub fn to_text(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Snapshot::Xids { xmin, xmax, xip } => {
                write!(f, "{xmin}:{xmax}:")?;
                for (i, xid) in xip.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{xid}")?;
                }
                Ok(())
            }
            Snapshot::Seq(seq) => write!(f, "{seq}"),
        }
    }
}

impl FromStr for Snapshot {
    type Err = StoreError;

    /// Reads `xmin:xmax:xip,...` (PostgreSQL's text form) or a bare `seq`.
    fn from_str(text: &str) -> Result<Snapshot, StoreError> {
        let bad = || StoreError::Invalid(format!("not a snapshot: `{text}`"));
        let mut parts = text.split(':');
        let first = parts.next().ok_or_else(bad)?;
        let Some(xmax) = parts.next() else {
            return first.parse().map(Snapshot::Seq).map_err(|_| bad());
        };
        let xip = parts.next().ok_or_else(bad)?;
        if parts.next().is_some() {
            return Err(bad());
        }
        let xip = if xip.is_empty() {
            Vec::new()
        } else {
            xip.split(',')
                .map(|x| x.parse::<i64>().map_err(|_| bad()))
                .collect::<Result<Vec<_>, _>>()?
        };
        Ok(Snapshot::Xids {
            xmin: first.parse().map_err(|_| bad())?,
            xmax: xmax.parse().map_err(|_| bad())?,
            xip,
        })
    }
}

/// A tick: a numbered snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick {
    /// Grows with every tick (on SQLite: the `seq` itself).
    pub id: i64,
    pub snapshot: Snapshot,
}

/// Where a lane is: in the batch `(from, to]`, having passed its events up
/// to `at` (in `(xid, seq)` order). An event has been passed when `from`
/// sees it, or `to` sees it and it is at or below `at`.
///
/// Stored outside busbar's own tables (a target database's progress row,
/// `store::targets`) with its snapshots in their text form.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    #[serde(with = "snapshot_text")]
    pub from: Snapshot,
    #[serde(with = "snapshot_text")]
    pub to: Snapshot,
    /// The id of the tick `to` is.
    pub to_tick: i64,
    pub at: Position,
}

/// A [`Snapshot`] as its text in serde (`xmin:xmax:xip` or a `seq`).
mod snapshot_text {
    use super::Snapshot;

    pub fn serialize<S: serde::Serializer>(snapshot: &Snapshot, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&snapshot.to_text())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Snapshot, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Cursor {
    /// A cursor that has passed exactly what `tick` sees (a batch done).
    pub fn at_tick(tick: &Tick) -> Cursor {
        Cursor {
            from: tick.snapshot.clone(),
            to: tick.snapshot.clone(),
            to_tick: tick.id,
            at: Position::ZERO,
        }
    }

    /// This cursor with its batch done: it has passed what `to` sees.
    pub fn done(&self) -> Cursor {
        Cursor {
            from: self.to.clone(),
            to: self.to.clone(),
            to_tick: self.to_tick,
            at: Position::ZERO,
        }
    }

    /// The batch after this one: from its `to` up to `latest`.
    pub fn next_batch(&self, latest: &Tick) -> Cursor {
        Cursor {
            from: self.to.clone(),
            to: latest.snapshot.clone(),
            to_tick: latest.id,
            at: Position::ZERO,
        }
    }

    /// A position at or above every event the cursor has passed.
    pub fn bound(&self) -> Position {
        let seen = match &self.from {
            Snapshot::Xids { xmax, .. } => Position::new(*xmax - 1, i64::MAX),
            Snapshot::Seq(seq) => Position::new(0, *seq),
        };
        seen.max(self.at)
    }

    /// Whether the lane has passed the event at `position`.
    pub fn passed(&self, position: Position) -> bool {
        self.from.sees(position) || (self.to.sees(position) && position <= self.at)
    }

    /// Whether the batch has nothing left to read: `from` and `to` are the
    /// same tick.
    pub fn batch_done(&self) -> bool {
        self.from == self.to
    }

    /// A cursor of `seq`s (SQLite) as one `seq`: every event at or below it
    /// has been passed. `None` for a cursor of transaction ids.
    pub fn as_seq(&self) -> Option<i64> {
        match (&self.from, &self.to) {
            (Snapshot::Seq(from), Snapshot::Seq(to)) => Some((*from).max((*to).min(self.at.seq))),
            _ => None,
        }
    }

    /// The cursor of a lane whose every event at or below `seq` has been
    /// passed (SQLite).
    pub fn of_seq(seq: i64) -> Cursor {
        Cursor {
            from: Snapshot::Seq(seq),
            to: Snapshot::Seq(seq),
            to_tick: seq,
            at: Position::new(0, seq),
        }
    }
}

/// Where a lane started: the events it sees, or at or below `at`, were
/// published before the lane existed and are not its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub seen: Snapshot,
    /// A position bound, for lanes made before ticks (v2 kept their origin
    /// as a position); `Position::ZERO` for the others.
    pub at: Position,
}

impl Origin {
    /// The origin of a lane made at `tick`.
    pub fn at_tick(tick: &Tick) -> Origin {
        Origin {
            seen: tick.snapshot.clone(),
            at: Position::ZERO,
        }
    }

    /// Whether the event at `position` was published before the lane.
    pub fn before(&self, position: Position) -> bool {
        self.seen.sees(position) || position <= self.at
    }
}

/// The SQL condition "the lane `l` has passed the event `e`" (a row of
/// `integrations.lanes` and one of `integrations.events`): what
/// [`Cursor::passed`] decides, for read models that decide it in a query.
pub fn passed_sql(dialect: super::Dialect) -> &'static str {
    match dialect {
        super::Dialect::Postgres => {
            "(pg_visible_in_snapshot(e.xid::text::xid8, l.batch_from) \
              OR (pg_visible_in_snapshot(e.xid::text::xid8, l.batch_to) \
                  AND (e.xid, e.seq) <= (l.cursor_xid, l.cursor_seq)))"
        }
        super::Dialect::Sqlite => "(e.seq <= l.cursor_seq)",
    }
}

/// The SQL condition "the event `e` was published before the lane `l`
/// began": what [`Origin::before`] decides.
pub fn before_origin_sql(dialect: super::Dialect) -> &'static str {
    match dialect {
        super::Dialect::Postgres => {
            "(pg_visible_in_snapshot(e.xid::text::xid8, l.origin_snapshot) \
              OR (e.xid, e.seq) <= (l.origin_xid, l.origin_seq))"
        }
        super::Dialect::Sqlite => "(e.seq <= l.origin_seq)",
    }
}

/// The newest tick. On SQLite, inside the write transaction, the highest
/// `seq` stored (every stored event is committed).
pub async fn latest(tx: &mut DbTx) -> Result<Tick, StoreError> {
    match &mut *tx {
        DbTx::Postgres(conn) => {
            let row: Option<(i64, String)> = sqlx::query_as(
                "SELECT id, snapshot::text FROM integrations.ticks ORDER BY id DESC LIMIT 1",
            )
            .fetch_optional(&mut **conn)
            .await?;
            match row {
                Some((id, snapshot)) => Ok(Tick {
                    id,
                    snapshot: snapshot.parse()?,
                }),
                // The migration makes the first tick; a table emptied by
                // hand gets one now.
                None => make_on(conn).await,
            }
        }
        DbTx::Sqlite(conn) => {
            let (seq,): (i64,) =
                sqlx::query_as("SELECT COALESCE(MAX(seq), 0) FROM \"integrations.events\"")
                    .fetch_one(&mut **conn)
                    .await?;
            Ok(Tick {
                id: seq,
                snapshot: Snapshot::Seq(seq),
            })
        }
    }
}

/// Makes a tick (PostgreSQL), in `tx`, which must be busbar's own `READ
/// COMMITTED` transaction and commit soon: ticks are serialised by an
/// advisory lock held to the end of the transaction, and the snapshot is
/// taken after it is granted, so tick ids and snapshots grow together
/// across processes. Sends `NOTIFY busbar_ticks` (delivered at commit).
/// On SQLite, the latest "tick" is read, nothing is written.
pub async fn make(tx: &mut DbTx) -> Result<Tick, StoreError> {
    match &mut *tx {
        DbTx::Postgres(conn) => make_on(conn).await,
        DbTx::Sqlite(_) => latest(tx).await,
    }
}

async fn make_on(conn: &mut sqlx::PgConnection) -> Result<Tick, StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, 0)")
        .bind(TICK_LOCK)
        .execute(&mut *conn)
        .await?;
    let (id, snapshot): (i64, String) = sqlx::query_as(
        "INSERT INTO integrations.ticks (id, snapshot, made_at) \
         SELECT COALESCE(MAX(id), 0) + 1, pg_current_snapshot(), now() FROM integrations.ticks \
         RETURNING id, snapshot::text",
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify('busbar_ticks', $1)")
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(Tick {
        id,
        snapshot: snapshot.parse()?,
    })
}

/// What has committed now, as this transaction sees it: the current
/// snapshot on PostgreSQL, the highest `seq` on SQLite.
pub async fn current(tx: &mut DbTx) -> Result<Snapshot, StoreError> {
    match &mut *tx {
        DbTx::Postgres(conn) => {
            let (snapshot,): (String,) = sqlx::query_as("SELECT pg_current_snapshot()::text")
                .fetch_one(&mut **conn)
                .await?;
            snapshot.parse()
        }
        DbTx::Sqlite(_) => Ok(latest(tx).await?.snapshot),
    }
}

/// The tick before every event: lanes that start there take the whole
/// log (busbar's first start on a database with outbox rows).
pub fn genesis(dialect: super::Dialect) -> Tick {
    Tick {
        id: 0,
        snapshot: match dialect {
            super::Dialect::Postgres => Snapshot::below_xid(3),
            super::Dialect::Sqlite => Snapshot::Seq(0),
        },
    }
}

/// Whether events of `sources` exist that the newest tick does not see (a
/// product's outbox commit, another process's publish): read-only, so the
/// ticker's poll assigns no transaction id. PostgreSQL only.
pub async fn unseen_events(tx: &mut DbTx, sources: &[String]) -> Result<bool, StoreError> {
    match &mut *tx {
        DbTx::Postgres(conn) => {
            let (unseen,): (bool,) = sqlx::query_as(
                "SELECT COALESCE((SELECT EXISTS (SELECT 1 FROM integrations.events e \
                                   WHERE e.source_product = ANY($1) \
                                     AND e.xid >= pg_snapshot_xmax(t.snapshot)::text::bigint) \
                              OR EXISTS (SELECT 1 FROM integrations.events e \
                                   WHERE e.source_product = ANY($1) \
                                     AND e.xid = ANY(ARRAY(SELECT x::text::bigint FROM pg_snapshot_xip(t.snapshot) x))) \
                             FROM integrations.ticks t ORDER BY t.id DESC LIMIT 1), true)",
            )
            .bind(sources)
            .fetch_one(&mut **conn)
            .await?;
            Ok(unseen)
        }
        DbTx::Sqlite(_) => Ok(false),
    }
}

/// Ticks kept: older ones are not read by anything (lanes keep their
/// snapshots in their rows); they stay a while for the record.
const KEPT: i64 = 1_000;

/// Deletes ticks older than the last [`KEPT`] (PostgreSQL).
pub async fn prune(tx: &mut DbTx, newest: i64) -> Result<u64, StoreError> {
    match &mut *tx {
        DbTx::Postgres(conn) => Ok(sqlx::query("DELETE FROM integrations.ticks WHERE id <= $1")
            .bind(newest - KEPT)
            .execute(&mut **conn)
            .await?
            .rows_affected()),
        DbTx::Sqlite(_) => Ok(0),
    }
}

/// When the newest tick was made (PostgreSQL; `None` on SQLite).
pub async fn latest_made_at(tx: &mut DbTx) -> Result<Option<(i64, Time)>, StoreError> {
    match &mut *tx {
        DbTx::Postgres(conn) => Ok(sqlx::query_as(
            "SELECT id, made_at FROM integrations.ticks ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(&mut **conn)
        .await?),
        DbTx::Sqlite(_) => Ok(None),
    }
}

/// Checks that the positions stored in this database (ticks, lane
/// cursors, events' transaction ids) belong to the cluster it is on now
/// (PostgreSQL; nothing to check on SQLite). After a `pg_dump`/restore or a
/// logical-replication move the cluster's `system_identifier` differs, and
/// its transaction ids may be behind the stored ones: delivering then would
/// take new events for passed ones. The error names the fix, `busbar
/// rebase`. Records the identifier when none is.
pub async fn check_cluster(tx: &mut DbTx) -> Result<(), StoreError> {
    let DbTx::Postgres(conn) = &mut *tx else {
        return Ok(());
    };
    let current: Option<String> =
        sqlx::query_scalar("SELECT system_identifier::text FROM pg_control_system()")
            .fetch_optional(&mut **conn)
            .await
            .ok()
            .flatten();
    let stored: Option<String> =
        sqlx::query_scalar("SELECT system_identifier FROM integrations.cluster LIMIT 1")
            .fetch_optional(&mut **conn)
            .await?;
    let fix = "Stop every busbar process, then run `busbar rebase` once (with the same --database-url and \
               --dir): it makes every event no lane has delivered yet a pending delivery and restarts the \
               positions on this cluster (ARCHITECTURE.md, \"Cluster identity\")";
    match (&stored, &current) {
        (Some(stored), Some(current)) if stored != current => {
            return Err(StoreError::Moved(format!(
                "busbar's positions in this database were recorded on PostgreSQL cluster {stored}, but it is on \
                 cluster {current} now (restored from a dump, or moved by logical replication): delivering \
                 would pass over events. {fix}"
            )));
        }
        (None, Some(current)) => {
            sqlx::query("INSERT INTO integrations.cluster (system_identifier) VALUES ($1)")
                .bind(current)
                .execute(&mut **conn)
                .await?;
        }
        _ => {}
    }
    let (ahead, latest, now): (bool, String, String) = sqlx::query_as(
        "SELECT pg_snapshot_xmax(t.snapshot) > pg_snapshot_xmax(pg_current_snapshot()), \
                pg_snapshot_xmax(t.snapshot)::text, pg_snapshot_xmax(pg_current_snapshot())::text \
           FROM integrations.ticks t ORDER BY t.id DESC LIMIT 1",
    )
    .fetch_optional(&mut **conn)
    .await?
    .unwrap_or((false, String::new(), String::new()));
    if ahead {
        return Err(StoreError::Moved(format!(
            "busbar's newest tick has transaction ids up to {latest}, but this cluster is at {now}: the \
             database was restored or moved, and new events would look older than delivered ones. {fix}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(xid: i64, seq: i64) -> Position {
        Position::new(xid, seq)
    }

    #[test]
    fn snapshots_read_and_write_postgres_text() {
        for text in [
            "10:20:",
            "10:20:12,15",
            "4294967290:4294967400:4294967295,4294967300",
        ] {
            let snapshot: Snapshot = text.parse().unwrap();
            assert_eq!(snapshot.to_string(), text);
        }
        assert_eq!("42".parse::<Snapshot>().unwrap(), Snapshot::Seq(42));
        assert!("1:2".parse::<Snapshot>().is_err());
        assert!("a:2:".parse::<Snapshot>().is_err());
    }

    #[test]
    fn a_snapshot_sees_ended_transactions_only() {
        let s: Snapshot = "10:20:12,15".parse().unwrap();
        assert!(s.sees(p(9, 1)));
        assert!(s.sees(p(11, 1)));
        assert!(!s.sees(p(12, 1)));
        assert!(!s.sees(p(15, 1)));
        assert!(s.sees(p(19, 1)));
        assert!(!s.sees(p(20, 1)));
        // Past 2^32: nothing is narrowed.
        let s: Snapshot = "4294967290:4294967400:4294967295".parse().unwrap();
        assert!(s.sees(p(4_294_967_289, 1)));
        assert!(!s.sees(p(4_294_967_295, 1)));
        assert!(s.sees(p(4_294_967_296, 1)));
        assert!(!s.sees(p(4_294_967_400, 1)));
    }

    #[test]
    fn a_cursor_passes_what_from_sees_and_its_batch_up_to_its_position() {
        let cursor = Cursor {
            from: "10:20:12".parse().unwrap(),
            to: "12:30:25".parse().unwrap(),
            to_tick: 7,
            at: p(21, 5),
        };
        assert!(cursor.passed(p(11, 100)));
        // In the batch: at or below the position.
        assert!(cursor.passed(p(12, 100)));
        assert!(cursor.passed(p(21, 5)));
        assert!(!cursor.passed(p(21, 6)));
        assert!(!cursor.passed(p(22, 1)));
        // Below the position but still running at `to`: not passed.
        assert!(!cursor.passed(p(25, 1)) && p(25, 1) > cursor.at);
        let cursor = Cursor {
            at: p(26, 1),
            ..cursor
        };
        assert!(!cursor.passed(p(25, 1)));
        assert!(cursor.passed(p(24, 1)));
    }
}
