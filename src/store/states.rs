//! Integration states (`integrations.integration_state`: enabled, paused,
//! disabled, persisted through the API) and definitions
//! (`integrations.definitions`: which fingerprint of each integration the
//! last process to load recorded; see ARCHITECTURE.md, "Delivery (v2)").

use std::collections::HashMap;

use serde::Serialize;

use super::dialect::{EngineTable, Statement};
use super::ticks::Snapshot;
use super::types::Time;
use super::{DbTx, Dialect, StoreError};
use crate::on_tx;

/// An integration's state, as persisted through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Delivering.
    #[default]
    Enabled,
    /// Holding its events: nothing runs, nothing is skipped; `resume`
    /// continues from where it stopped.
    Paused,
    /// Not delivering: its deliveries are recorded as skipped.
    Disabled,
}

impl State {
    /// Its name, as stored and as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Enabled => "enabled",
            State::Paused => "paused",
            State::Disabled => "disabled",
        }
    }

    /// The state named `text` by [`State::as_str`].
    pub fn parse(text: &str) -> Option<State> {
        [State::Enabled, State::Paused, State::Disabled]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// A state set through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persisted {
    pub state: State,
    /// Set when the integration was enabled (or paused) again after being
    /// disabled: the events this snapshot sees were published while it was
    /// disabled (or before).
    pub skip_before: Option<Snapshot>,
}

type Row = (String, String, Option<String>);

fn persisted((_, state, skip): &Row) -> Persisted {
    Persisted {
        state: State::parse(state).unwrap_or_default(),
        skip_before: skip.as_deref().and_then(|s| s.parse().ok()),
    }
}

/// The skip snapshot's column as text (a `pg_snapshot` on PostgreSQL, the
/// `seq` on SQLite).
fn skip_column(d: Dialect) -> &'static str {
    match d {
        Dialect::Postgres => "skip_snapshot::text",
        Dialect::Sqlite => "CAST(skip_seq AS TEXT)",
    }
}

/// Every persisted state.
pub async fn load(tx: &mut DbTx) -> Result<HashMap<String, Persisted>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let integration_state = d.engine_table(EngineTable::IntegrationState);
        let skip = skip_column(d);
        format!("SELECT integration_id, state, {skip} FROM {integration_state}")
    });
    let sql = SQL.get(tx.dialect());
    let rows: Vec<Row> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql).fetch_all(conn).await)?;
    Ok(rows
        .iter()
        .map(|row| (row.0.clone(), persisted(row)))
        .collect())
}

/// One integration's persisted state, if any.
pub async fn load_one(tx: &mut DbTx, integration: &str) -> Result<Option<Persisted>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let integration_state = d.engine_table(EngineTable::IntegrationState);
        let [p1] = d.params();
        let skip = skip_column(d);
        format!(
            "SELECT integration_id, state, {skip} FROM {integration_state} \
             WHERE integration_id = {p1}"
        )
    });
    let sql = SQL.get(tx.dialect());
    let row: Option<Row> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(integration)
        .fetch_optional(conn)
        .await)?;
    Ok(row.as_ref().map(persisted))
}

/// Persists an integration's state.
pub async fn save(
    tx: &mut DbTx,
    integration: &str,
    state: State,
    skip_before: Option<&Snapshot>,
    now: Time,
) -> Result<(), StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let integration_state = d.engine_table(EngineTable::IntegrationState);
        let [p1, p2, p3, p4] = d.params();
        let (column, value) = match d {
            Dialect::Postgres => ("skip_snapshot", format!("{p3}::pg_snapshot")),
            Dialect::Sqlite => ("skip_seq", format!("CAST({p3} AS INTEGER)")),
        };
        format!(
            "INSERT INTO {integration_state} (integration_id, state, {column}, updated_at) \
             VALUES ({p1}, {p2}, {value}, {p4}) \
             ON CONFLICT (integration_id) DO UPDATE SET state = excluded.state, {column} = excluded.{column}, \
                updated_at = excluded.updated_at"
        )
    });
    let sql = SQL.get(tx.dialect());
    on_tx!(&mut *tx, |conn| sqlx::query(sql)
        .bind(integration)
        .bind(state.as_str())
        .bind(skip_before.map(Snapshot::to_text))
        .bind(now)
        .execute(conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Records the current definition of an integration (`None`: removed).
pub async fn define(
    tx: &mut DbTx,
    integration: &str,
    fingerprint: Option<&str>,
    node: &str,
    now: Time,
) -> Result<(), StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let definitions = d.engine_table(EngineTable::Definitions);
        let [p1, p2, p3, p4] = d.params();
        format!(
            "INSERT INTO {definitions} (integration_id, fingerprint, loaded_at, loaded_by) \
             VALUES ({p1}, {p2}, {p3}, {p4}) \
             ON CONFLICT (integration_id) DO UPDATE SET fingerprint = excluded.fingerprint, \
                loaded_at = excluded.loaded_at, loaded_by = excluded.loaded_by"
        )
    });
    let sql = SQL.get(tx.dialect());
    on_tx!(&mut *tx, |conn| sqlx::query(sql)
        .bind(integration)
        .bind(fingerprint)
        .bind(now)
        .bind(node)
        .execute(conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Every integration's current definition.
pub async fn definitions(tx: &mut DbTx) -> Result<HashMap<String, Option<String>>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let definitions = d.engine_table(EngineTable::Definitions);
        format!("SELECT integration_id, fingerprint FROM {definitions}")
    });
    let sql = SQL.get(tx.dialect());
    let rows: Vec<(String, Option<String>)> =
        on_tx!(&mut *tx, |conn| sqlx::query_as(sql).fetch_all(conn).await)?;
    Ok(rows.into_iter().collect())
}

/// A busbar process sharing the database.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Node {
    pub id: uuid::Uuid,
    pub name: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub heartbeat_at: chrono::DateTime<chrono::Utc>,
    pub generation: Option<i64>,
    pub workers: Option<i32>,
}

/// Records that a process is alive.
pub async fn heartbeat(
    tx: &mut DbTx,
    id: uuid::Uuid,
    name: &str,
    generation: i64,
    workers: i32,
    now: Time,
) -> Result<(), StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let nodes = d.engine_table(EngineTable::Nodes);
        let [p1, p2, p3, p4, p5] = d.params();
        format!(
            "INSERT INTO {nodes} (id, name, started_at, heartbeat_at, generation, workers) \
             VALUES ({p1}, {p2}, {p3}, {p3}, {p4}, {p5}) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, generation = excluded.generation, \
                workers = excluded.workers"
        )
    });
    let sql = SQL.get(tx.dialect());
    on_tx!(&mut *tx, |conn| sqlx::query(sql)
        .bind(super::types::Id(id))
        .bind(name)
        .bind(now)
        .bind(generation)
        .bind(workers)
        .execute(conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// Removes a process (it stopped), and any whose heartbeat is older than
/// `stale`.
pub async fn leave(tx: &mut DbTx, id: uuid::Uuid, stale: Time) -> Result<(), StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let nodes = d.engine_table(EngineTable::Nodes);
        let [p1, p2] = d.params();
        format!("DELETE FROM {nodes} WHERE id = {p1} OR heartbeat_at < {p2}")
    });
    let sql = SQL.get(tx.dialect());
    on_tx!(&mut *tx, |conn| sqlx::query(sql)
        .bind(super::types::Id(id))
        .bind(stale)
        .execute(conn)
        .await
        .map(|_| ()))?;
    Ok(())
}

/// The processes whose heartbeat is newer than `since`.
pub async fn nodes(tx: &mut DbTx, since: Time) -> Result<Vec<Node>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let nodes = d.engine_table(EngineTable::Nodes);
        let [p1] = d.params();
        format!(
            "SELECT id, name, started_at, heartbeat_at, generation, workers FROM {nodes} \
             WHERE heartbeat_at >= {p1} ORDER BY started_at"
        )
    });
    let sql = SQL.get(tx.dialect());
    type NodeRow = (
        super::types::Id,
        String,
        Time,
        Time,
        Option<i64>,
        Option<i32>,
    );
    let rows: Vec<NodeRow> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(since)
        .fetch_all(conn)
        .await)?;
    Ok(rows
        .into_iter()
        .map(|(id, name, started, heartbeat, generation, workers)| Node {
            id: id.0,
            name,
            started_at: started.0,
            heartbeat_at: heartbeat.0,
            generation,
            workers,
        })
        .collect())
}
