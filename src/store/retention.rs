//! Retention (`busbar prune`): deleting events, and their delivery rows,
//! older than an age, once nothing can need them.
//!
//! An event goes when all of these hold, checked in the one statement
//! that deletes it (so a lane or an operator acting meanwhile cannot make
//! it wrong):
//!
//! - it was stored before the cut-off;
//! - every lane of every integration has passed it, or began after it
//!   ([`ticks::passed_sql`], [`ticks::before_origin_sql`]): no
//!   integration will still read it;
//! - none of its delivery rows is open or dead (`pending`, `retrying`,
//!   `dead`): a waiting delivery, or one an operator may replay, keeps its
//!   event.
//!
//! Its delivery rows (delivered, skipped) go with it, deleted first in
//! the same transaction. (Per-minute delivery counts and the console's history are
//! pruned by the engine after a week; ticks are kept to the last 1,000.)
//! It works in chunks, a short transaction each, oldest first, so a large
//! backlog of old events never makes one long transaction.

use sqlx::AssertSqlSafe;

use super::dialect::{Dialect, EngineTable};
use super::types::{Id, Time};
use super::{DbTx, Store, StoreError, ticks};
use crate::on_tx;

/// Events per transaction.
const CHUNK: i64 = 5_000;

/// Events per statement (SQLite binds two parameters for each).
const PAIRS: usize = 1_000;

/// What a prune removed (or, for a dry run, would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub events: u64,
    /// Their delivery rows (counted just before each chunk's delete).
    pub deliveries: u64,
}

/// The events that may go, as a `SELECT organization_id, id` with
/// `{cutoff}` for the cut-off's parameter.
fn prunable(dialect: Dialect, cutoff: &str, limit: &str) -> String {
    let events = dialect.engine_table(EngineTable::Events);
    let lanes = dialect.engine_table(EngineTable::Lanes);
    let deliveries = dialect.engine_table(EngineTable::Deliveries);
    let passed = ticks::passed_sql(dialect);
    let before = ticks::before_origin_sql(dialect);
    format!(
        "SELECT e.organization_id, e.id FROM {events} e \
          WHERE e.created_at < {cutoff} \
            AND NOT EXISTS (SELECT 1 FROM {lanes} l WHERE NOT ({passed} OR {before})) \
            AND NOT EXISTS (SELECT 1 FROM {deliveries} d \
                             WHERE d.organization_id = e.organization_id AND d.event_id = e.id \
                               AND d.status IN ('pending', 'retrying', 'dead')) \
          ORDER BY e.created_at{limit}"
    )
}

/// Deletes what is older than `cutoff` and needed by nothing (or, with
/// `dry_run`, counts it). Returns the counts.
pub async fn prune(store: &Store, cutoff: Time, dry_run: bool) -> Result<Pruned, StoreError> {
    let dialect = store.dialect();
    let [p1, p2] = dialect.params();
    let events = dialect.engine_table(EngineTable::Events);
    let deliveries = dialect.engine_table(EngineTable::Deliveries);
    if dry_run {
        let chosen = prunable(dialect, &p1.to_string(), "");
        let sql = AssertSqlSafe(format!(
            "SELECT (SELECT COUNT(*) FROM ({chosen}) c), \
                    (SELECT COUNT(*) FROM {deliveries} d WHERE (d.organization_id, d.event_id) IN \
                        (SELECT organization_id, id FROM ({chosen}) c2))"
        ));
        let mut tx = store.begin_read().await?;
        let (events, rows): (i64, i64) = on_tx!(&mut tx, |conn| sqlx::query_as(sql)
            .bind(cutoff)
            .fetch_one(conn)
            .await)?;
        tx.rollback().await?;
        return Ok(Pruned {
            events: events as u64,
            deliveries: rows as u64,
        });
    }
    let mut pruned = Pruned::default();
    let chosen = prunable(dialect, &p1.to_string(), &format!(" LIMIT {p2}"));
    loop {
        let mut tx = store.begin().await?;
        let ids: Vec<(Id, Id)> = on_tx!(&mut tx, |conn| sqlx::query_as(AssertSqlSafe(
            chosen.clone()
        ))
        .bind(cutoff)
        .bind(CHUNK)
        .fetch_all(conn)
        .await)?;
        if ids.is_empty() {
            tx.rollback().await?;
            break;
        }
        // Rows first (they reference the events), then the events, whose
        // statement checks again that no row is open: one may have been
        // made since (a redelivery), and then the event stays.
        let closed = "status IN ('delivered', 'skipped')";
        pruned.deliveries += delete_pairs(&mut tx, deliveries, "event_id", closed, &ids).await?;
        let still = format!(
            "NOT EXISTS (SELECT 1 FROM {deliveries} d WHERE d.organization_id = {events}.organization_id \
               AND d.event_id = {events}.id AND d.status IN ('pending', 'retrying', 'dead'))"
        );
        pruned.events += delete_pairs(&mut tx, events, "id", &still, &ids).await?;
        tx.commit().await?;
        if (ids.len() as i64) < CHUNK {
            break;
        }
    }
    Ok(pruned)
}

/// Deletes the rows of `table` whose `(organization_id, {id})` is one of
/// `pairs` and for which `condition` holds. Returns how many.
async fn delete_pairs(
    tx: &mut DbTx,
    table: &str,
    id: &str,
    condition: &str,
    pairs: &[(Id, Id)],
) -> Result<u64, StoreError> {
    let mut deleted = 0;
    for chunk in pairs.chunks(PAIRS) {
        let matches = match tx.dialect() {
            Dialect::Postgres => {
                format!("(organization_id, {id}) IN (SELECT * FROM UNNEST($1::uuid[], $2::uuid[]))")
            }
            Dialect::Sqlite => format!(
                "({})",
                vec![format!("(organization_id = ? AND {id} = ?)"); chunk.len()].join(" OR ")
            ),
        };
        let sql = AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE {matches} AND {condition}"
        ));
        deleted += match &mut *tx {
            DbTx::Postgres(conn) => sqlx::query(sql)
                .bind(chunk.iter().map(|(o, _)| o.0).collect::<Vec<_>>())
                .bind(chunk.iter().map(|(_, i)| i.0).collect::<Vec<_>>())
                .execute(&mut **conn)
                .await?
                .rows_affected(),
            DbTx::Sqlite(conn) => {
                let mut query = sqlx::query(sql);
                for (organization, event) in chunk {
                    query = query.bind(*organization).bind(*event);
                }
                query.execute(&mut **conn).await?.rows_affected()
            }
        };
    }
    Ok(deleted)
}
