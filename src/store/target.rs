//! The target tables: the [`Executor`] the engine runs routes with, on the
//! delivery's transaction.

use serde_json::{Map, Value};
use sqlx::query::QueryAs;
use sqlx::{AssertSqlSafe, Database, Encode, Type};

use super::catalog::{Catalog, TableInfo};
use super::convert::{BindValue, convert_columns};
use super::dialect::Condition;
use super::{DbTx, StoreError};
use crate::compile::Step;
use crate::compile::ident::{Ident, TableName};
use crate::mapping::{Executor, Row};
use crate::on_tx;

/// An event an `emit` step asked for; the engine stores and routes it in
/// the same transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    pub step: usize,
    pub event: String,
    pub data: Value,
}

/// Runs steps against the target tables inside one transaction.
pub struct TargetExecutor<'t> {
    tx: &'t mut DbTx,
    catalog: &'t Catalog,
    /// Events emitted so far.
    pub emitted: Vec<Emitted>,
    /// Whether a statement that writes has run (a skip after a write must
    /// roll back).
    pub wrote: bool,
}

impl<'t> TargetExecutor<'t> {
    pub fn new(tx: &'t mut DbTx, catalog: &'t Catalog) -> Self {
        TargetExecutor {
            tx,
            catalog,
            emitted: Vec::new(),
            wrote: false,
        }
    }

    async fn info(&mut self, table: &TableName) -> Result<std::sync::Arc<TableInfo>, StoreError> {
        self.catalog.table(self.tx, table).await
    }

    /// Turns a filter into SQL conditions numbered from `first`, and the
    /// values to bind (nulls become `IS NULL` and bind nothing).
    fn conditions<'a>(
        table: &TableName,
        info: &TableInfo,
        filter: &'a [(Ident, Value)],
        first: usize,
    ) -> Result<(Vec<Condition<'a>>, Vec<BindValue>), StoreError> {
        let mut conditions = Vec::with_capacity(filter.len());
        let mut binds = Vec::with_capacity(filter.len());
        let converted = convert_columns(table, info, filter)?;
        for ((column, _), value) in filter.iter().zip(converted) {
            if value == BindValue::Null {
                conditions.push((column, None));
            } else {
                binds.push(value);
                conditions.push((column, Some(first + binds.len() - 1)));
            }
        }
        Ok((conditions, binds))
    }

    /// Runs a statement returning rows as JSON text.
    async fn rows(&mut self, sql: String, values: &[BindValue]) -> Result<Vec<Row>, StoreError> {
        let texts: Vec<(String,)> = on_tx!(&mut *self.tx, |conn| {
            bind_all(sqlx::query_as(AssertSqlSafe(sql)), values)
                .fetch_all(conn)
                .await
        })?;
        texts.into_iter().map(|(text,)| parse_row(&text)).collect()
    }
}

/// A row returned as JSON text by the dialect's row expression.
pub(crate) fn parse_row(text: &str) -> Result<Row, StoreError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(columns)) => Ok(Row::new(columns)),
        Ok(other) => Ok(Row::new(Map::from_iter([("value".to_owned(), other)]))),
        Err(error) => Err(StoreError::Invalid(format!(
            "cannot read a returned row: {error}"
        ))),
    }
}

/// Binds `values` in order (see `BindValue`'s `Encode`), on either database.
pub(crate) fn bind_all<'q, DB, O>(
    mut query: QueryAs<'q, DB, O, DB::Arguments>,
    values: &'q [BindValue],
) -> QueryAs<'q, DB, O, DB::Arguments>
where
    DB: Database,
    BindValue: Encode<'q, DB> + Type<DB>,
{
    for value in values {
        query = query.bind(value);
    }
    query
}

impl Executor for TargetExecutor<'_> {
    type Error = StoreError;

    async fn find(
        &mut self,
        table: &TableName,
        filter: &[(Ident, Value)],
    ) -> Result<Option<Row>, StoreError> {
        let info = self.info(table).await?;
        let (conditions, binds) = Self::conditions(table, &info, filter, 1)?;
        let sql = self.tx.dialect().find(table, &info, &conditions);
        let started = std::time::Instant::now();
        let row = self.rows(sql, &binds).await?.into_iter().next();
        crate::telemetry::step_finished("find", started.elapsed());
        Ok(row)
    }

    async fn upsert(
        &mut self,
        table: &TableName,
        key: &[Ident],
        values: &[(Ident, Value)],
    ) -> Result<Row, StoreError> {
        let info = self.info(table).await?;
        let binds = convert_columns(table, &info, values)?;
        let columns: Vec<Ident> = values.iter().map(|(c, _)| c.clone()).collect();
        let sql = self.tx.dialect().upsert(table, &info, key, &columns);
        self.wrote = true;
        let started = std::time::Instant::now();
        let row = self.rows(sql, &binds).await?.into_iter().next();
        crate::telemetry::step_finished("upsert", started.elapsed());
        row.ok_or_else(|| StoreError::Invalid(format!("the upsert into {table} returned no row")))
    }

    async fn update(
        &mut self,
        table: &TableName,
        filter: &[(Ident, Value)],
        set: &[(Ident, Value)],
    ) -> Result<Vec<Row>, StoreError> {
        let info = self.info(table).await?;
        let mut binds = convert_columns(table, &info, set)?;
        let (conditions, filter_binds) = Self::conditions(table, &info, filter, binds.len() + 1)?;
        binds.extend(filter_binds);
        let columns: Vec<Ident> = set.iter().map(|(c, _)| c.clone()).collect();
        let sql = self
            .tx
            .dialect()
            .update(table, &info, &columns, &conditions);
        self.wrote = true;
        let started = std::time::Instant::now();
        let rows = self.rows(sql, &binds).await;
        crate::telemetry::step_finished("update", started.elapsed());
        rows
    }

    async fn delete(
        &mut self,
        table: &TableName,
        filter: &[(Ident, Value)],
    ) -> Result<u64, StoreError> {
        let info = self.info(table).await?;
        let (conditions, binds) = Self::conditions(table, &info, filter, 1)?;
        let sql = self.tx.dialect().delete(table, &info, &conditions);
        self.wrote = true;
        let started = std::time::Instant::now();
        let affected = on_tx!(&mut *self.tx, |conn| {
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for value in &binds {
                query = query.bind(value);
            }
            query.execute(conn).await.map(|done| done.rows_affected())
        })?;
        crate::telemetry::step_finished("delete", started.elapsed());
        Ok(affected)
    }

    async fn emit(&mut self, step: &Step, event: &str, data: Value) -> Result<(), StoreError> {
        self.wrote = true;
        self.emitted.push(Emitted {
            step: step.index,
            event: event.to_owned(),
            data,
        });
        Ok(())
    }
}
