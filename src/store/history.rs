//! Per-minute history for the console's charts
//! (`integrations.integration_history`): each integration's backlog, lag,
//! failures, state and generation, one row per minute, written by the
//! first busbar process to sample that minute (`engine::history`); and the
//! reads the charts make over it and over `delivery_stats` (applied per
//! minute). Nothing here is on the delivery path.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::dialect::{EngineTable, Statement};
use super::scope::OrgScope;
use super::types::Time;
use super::{DbTx, StoreError};
use crate::on_tx;

/// One integration's figures in one minute.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub integration: String,
    /// The start of the minute.
    pub minute: DateTime<Utc>,
    /// Events not passed by the lanes plus delivery rows pending or retrying.
    pub backlog: i64,
    /// Age of the oldest event not yet applied, in seconds.
    pub lag_seconds: f64,
    /// Delivery rows that failed (retrying or dead) during the minute.
    pub failures: i64,
    /// `enabled`, `paused` or `disabled`.
    pub state: String,
    /// The live generation.
    pub generation: i64,
}

/// The start of the minute `time` falls in.
pub fn minute_of(time: DateTime<Utc>) -> DateTime<Utc> {
    let seconds = time.timestamp();
    DateTime::from_timestamp(seconds - seconds.rem_euclid(60), 0).unwrap_or(time)
}

/// Records `samples`; a minute already recorded (by another process)
/// keeps its row.
pub async fn record(tx: &mut DbTx, samples: &[Sample]) -> Result<(), StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let history = d.engine_table(EngineTable::IntegrationHistory);
        let [p1, p2, p3, p4, p5, p6, p7] = d.params();
        format!(
            "INSERT INTO {history} (integration_id, minute, backlog, lag_seconds, failures, state, generation) \
             VALUES ({p1}, {p2}, {p3}, {p4}, {p5}, {p6}, {p7}) \
             ON CONFLICT (integration_id, minute) DO NOTHING"
        )
    });
    let sql = SQL.get(tx.dialect());
    for sample in samples {
        on_tx!(&mut *tx, |conn| sqlx::query(sql)
            .bind(&sample.integration)
            .bind(Time(sample.minute))
            .bind(sample.backlog)
            .bind(sample.lag_seconds)
            .bind(sample.failures)
            .bind(&sample.state)
            .bind(sample.generation)
            .execute(conn)
            .await
            .map(|_| ()))?;
    }
    Ok(())
}

/// An integration's samples since `since`, oldest first.
pub async fn read(
    tx: &mut DbTx,
    integration: &str,
    since: DateTime<Utc>,
) -> Result<Vec<Sample>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let history = d.engine_table(EngineTable::IntegrationHistory);
        let [p1, p2] = d.params();
        format!(
            "SELECT minute, backlog, lag_seconds, failures, state, generation FROM {history} \
              WHERE integration_id = {p1} AND minute >= {p2} ORDER BY minute"
        )
    });
    let sql = SQL.get(tx.dialect());
    type Row = (Time, i64, f64, i64, String, i64);
    let rows: Vec<Row> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(integration)
        .bind(Time(since))
        .fetch_all(conn)
        .await)?;
    Ok(rows
        .into_iter()
        .map(
            |(minute, backlog, lag_seconds, failures, state, generation)| Sample {
                integration: integration.to_owned(),
                minute: minute.0,
                backlog,
                lag_seconds,
                failures,
                state,
                generation,
            },
        )
        .collect())
}

/// Delivery rows per integration that failed (are `retrying` or `dead`,
/// last changed) at or after `since`.
pub async fn failures_since(
    tx: &mut DbTx,
    since: DateTime<Utc>,
) -> Result<HashMap<String, i64>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let deliveries = d.engine_table(EngineTable::Deliveries);
        let [p1] = d.params();
        format!(
            "SELECT integration_id, COUNT(*) FROM {deliveries} \
              WHERE status IN ('retrying', 'dead') AND updated_at >= {p1} GROUP BY integration_id"
        )
    });
    let sql = SQL.get(tx.dialect());
    let rows: Vec<(String, i64)> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(Time(since))
        .fetch_all(conn)
        .await)?;
    Ok(rows.into_iter().collect())
}

/// An integration's deliveries per minute since `since` in `scope` (the
/// per-minute counters of `delivery_stats`), oldest first; minutes without
/// any are absent.
pub async fn applied_per_minute(
    tx: &mut DbTx,
    scope: OrgScope,
    integration: &str,
    since: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, i64)>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let delivery_stats = d.engine_table(EngineTable::DeliveryStats);
        let [p1, p2, p3] = d.params();
        format!(
            "SELECT bucket, CAST(SUM(delivered) AS BIGINT) FROM {delivery_stats} \
              WHERE integration_id = {p1} AND bucket >= {p2} AND ({p3} IS NULL OR organization_id = {p3}) \
              GROUP BY bucket ORDER BY bucket"
        )
    });
    let sql = SQL.get(tx.dialect());
    let rows: Vec<(Time, i64)> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(integration)
        .bind(Time(since))
        .bind(scope.bind())
        .fetch_all(conn)
        .await)?;
    Ok(rows.into_iter().map(|(t, n)| (t.0, n)).collect())
}

/// Drops samples older than `before`.
pub async fn prune(tx: &mut DbTx, before: DateTime<Utc>) -> Result<(), StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let history = d.engine_table(EngineTable::IntegrationHistory);
        let [p1] = d.params();
        format!("DELETE FROM {history} WHERE minute < {p1}")
    });
    let sql = SQL.get(tx.dialect());
    on_tx!(&mut *tx, |conn| sqlx::query(sql)
        .bind(Time(before))
        .execute(conn)
        .await
        .map(|_| ()))?;
    Ok(())
}
