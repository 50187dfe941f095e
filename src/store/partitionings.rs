//! Partitioning versions (`integrations.partitionings`): which order key
//! and lane count an integration's lanes read with, from which tick on
//! (ARCHITECTURE.md, "Versioned partitioning").
//!
//! An event belongs to lane `hash(order key) mod P`; changing `order_by`
//! (or P) with a backlog would move keys between lanes whose cursors
//! differ, losing some events and repeating others. So a change is a new
//! version that applies from a tick on: every lane reads the old version up
//! to that tick, and when all have reached it they switch together, in one
//! transaction that also re-keys the open rows (`lanes::switch`). Lanes
//! read with the stored order key, never the file's, so two processes that
//! disagree for a moment read the same partition.

use super::dialect::{EngineTable, Statement};
use super::ticks::{Snapshot, Tick};
use super::{DbTx, Dialect, StoreError};
use crate::compile::OrderKey;
use crate::on_tx;

/// One version of an integration's partitioning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitioning {
    pub version: i32,
    pub order_by: OrderKey,
    pub lanes: i32,
    /// Events this tick sees are read with the previous version.
    pub from: Tick,
}

/// An integration's versions, oldest first.
pub async fn of(tx: &mut DbTx, integration: &str) -> Result<Vec<Partitioning>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let table = d.engine_table(EngineTable::Partitionings);
        let [p1] = d.params();
        let snapshot = match d {
            Dialect::Postgres => "from_snapshot::text",
            Dialect::Sqlite => "from_snapshot",
        };
        format!(
            "SELECT version, order_by, lanes, from_tick, {snapshot} FROM {table} \
              WHERE integration_id = {p1} ORDER BY version"
        )
    });
    let sql = SQL.get(tx.dialect());
    let rows: Vec<(i32, String, i32, i64, String)> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(integration)
        .fetch_all(conn)
        .await)?;
    rows.into_iter()
        .map(|(version, order_by, lanes, from_tick, snapshot)| {
            Ok(Partitioning {
                version,
                order_by: serde_json::from_str(&order_by).map_err(|e| {
                    StoreError::Invalid(format!(
                        "integration `{integration}`'s partitioning {version} has an unreadable order key: {e}"
                    ))
                })?,
                lanes,
                from: Tick {
                    id: from_tick,
                    snapshot: snapshot.parse::<Snapshot>()?,
                },
            })
        })
        .collect()
}

/// Records a version.
pub async fn record(
    tx: &mut DbTx,
    integration: &str,
    partitioning: &Partitioning,
) -> Result<(), StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let table = d.engine_table(EngineTable::Partitionings);
        let [p1, p2, p3, p4, p5, p6] = d.params();
        let snapshot = match d {
            Dialect::Postgres => format!("{p6}::pg_snapshot"),
            Dialect::Sqlite => p6.to_string(),
        };
        format!(
            "INSERT INTO {table} (integration_id, version, order_by, lanes, from_tick, from_snapshot) \
             VALUES ({p1}, {p2}, {p3}, {p4}, {p5}, {snapshot})"
        )
    });
    let sql = SQL.get(tx.dialect());
    let order_by = serde_json::to_string(&partitioning.order_by)
        .map_err(|e| StoreError::Invalid(format!("cannot store an order key: {e}")))?;
    on_tx!(&mut *tx, |conn| sqlx::query(sql)
        .bind(integration)
        .bind(partitioning.version)
        .bind(order_by.as_str())
        .bind(partitioning.lanes)
        .bind(partitioning.from.id)
        .bind(partitioning.from.snapshot.to_text())
        .execute(conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Removes an integration's versions (it was removed from the
/// configuration; if it comes back, it starts anew).
pub async fn remove(tx: &mut DbTx, integration: &str) -> Result<(), StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let table = d.engine_table(EngineTable::Partitionings);
        let [p1] = d.params();
        format!("DELETE FROM {table} WHERE integration_id = {p1}")
    });
    let sql = SQL.get(tx.dialect());
    on_tx!(&mut *tx, |conn| sqlx::query(sql)
        .bind(integration)
        .execute(conn)
        .await
        .map(|_| ()))?;
    Ok(())
}
