//! [`MySqlTargetExecutor`]: the engine's [`Executor`] on a MariaDB/MySQL
//! transaction, one statement at a time, as [`crate::store::target`] is on
//! busbar's own database.
//!
//! Where MariaDB differs, the step reads back what it wrote rather than
//! trust a counter: MariaDB has no `UPDATE … RETURNING`, MySQL no
//! `RETURNING` at all, and `LAST_INSERT_ID()` and the affected-rows count
//! of `ON DUPLICATE KEY UPDATE` (1 inserted, 2 updated, 0 unchanged) say
//! nothing about a row whose key the event gave.
//!
//! - `upsert`: `INSERT … ON DUPLICATE KEY UPDATE`, then the row read back
//!   by its key. MariaDB takes a conflict on *any* unique index as the
//!   duplicate, so when the values fill another unique index too (an `id`
//!   and a unique `email`), it would update the row that index found, not
//!   the key's: then the upsert is a locked `SELECT` by the key and a
//!   plain `UPDATE` or `INSERT`, and a clash on the other index is an
//!   error, as on PostgreSQL. A null key value is refused (rows with a
//!   null key never conflict: every run would insert).
//! - `update`: the matching rows' identities (primary key) read `FOR
//!   UPDATE`, those rows updated, then read back by identity.
//! - `emit`: collected in memory ([`MySqlTargetExecutor::emitted`]), as
//!   [`crate::store::target::TargetExecutor`] does.

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use sqlx::{AssertSqlSafe, MySqlConnection};

use super::catalog::{MySqlCatalog, MySqlTable};
use super::convert::{MySqlValue, convert, convert_columns};
use super::sql::{self, Statement};
use crate::compile::Step;
use crate::compile::ident::{CatalogName, Ident, TableName};
use crate::mapping::{Executor, Row};
use crate::store::StoreError;
use crate::store::target::Emitted;

/// Runs steps against MariaDB target tables inside one transaction (the
/// connection of a `Transaction<MySql>`, set up by
/// [`super::session::setup`]).
pub struct MySqlTargetExecutor<'t> {
    connection: &'t mut MySqlConnection,
    catalog: &'t MySqlCatalog,
    /// Events emitted so far.
    pub emitted: Vec<Emitted>,
    /// Whether a statement that writes has run (a skip after a write must
    /// roll back).
    pub wrote: bool,
}

impl<'t> MySqlTargetExecutor<'t> {
    /// An executor on `connection` (a transaction's, `&mut *tx`), reading
    /// tables through `catalog`.
    pub fn new(connection: &'t mut MySqlConnection, catalog: &'t MySqlCatalog) -> Self {
        MySqlTargetExecutor {
            connection,
            catalog,
            emitted: Vec::new(),
            wrote: false,
        }
    }

    async fn table(&mut self, table: &TableName) -> Result<Arc<MySqlTable>, StoreError> {
        self.catalog.table(self.connection, table).await
    }

    /// Runs a statement returning one JSON text per row.
    async fn rows(
        &mut self,
        table: &MySqlTable,
        statement: Statement,
    ) -> Result<Vec<Row>, StoreError> {
        let mut query = sqlx::query_as::<_, (String,)>(AssertSqlSafe(statement.text));
        for value in statement.values {
            query = query.bind(value);
        }
        let texts = query.fetch_all(&mut *self.connection).await?;
        texts
            .iter()
            .map(|(text,)| sql::normalize_row(&table.info, text))
            .collect()
    }

    async fn execute(&mut self, statement: Statement) -> Result<u64, StoreError> {
        execute(self.connection, statement).await
    }
}

/// Runs a statement that returns no rows; how many it changed.
pub(super) async fn execute(
    connection: &mut MySqlConnection,
    statement: Statement,
) -> Result<u64, StoreError> {
    let mut query = sqlx::query(AssertSqlSafe(statement.text));
    for value in statement.values {
        query = query.bind(value);
    }
    Ok(query.execute(connection).await?.rows_affected())
}

/// Pairs each column with its converted value.
pub(super) fn paired<'a>(
    table: &TableName,
    info: &MySqlTable,
    columns: &'a [(Ident, Value)],
) -> Result<Vec<(&'a Ident, MySqlValue)>, StoreError> {
    let values = convert_columns(table, &info.info, columns)?;
    Ok(columns.iter().map(|(c, _)| c).zip(values).collect())
}

impl Executor for MySqlTargetExecutor<'_> {
    type Error = StoreError;

    async fn find(
        &mut self,
        table: &TableName,
        filter: &[(Ident, Value)],
    ) -> Result<Option<Row>, StoreError> {
        let info = self.table(table).await?;
        let filter = paired(table, &info, filter)?;
        let started = Instant::now();
        let statement = sql::find(table, &info.info, &filter, Some(1), false);
        let row = self.rows(&info, statement).await?.into_iter().next();
        crate::telemetry::step_finished("find", started.elapsed());
        Ok(row)
    }

    async fn upsert(
        &mut self,
        table: &TableName,
        key: &[Ident],
        values: &[(Ident, Value)],
    ) -> Result<Row, StoreError> {
        let info = self.table(table).await?;
        let values = paired(table, &info, values)?;
        let key_filter = upsert_key(table, &info, key, &values)?;
        self.wrote = true;
        let started = Instant::now();
        if fills_another_unique_index(&info, key, &values) {
            let existing = sql::find(table, &info.info, &key_filter, Some(1), true);
            if self.rows(&info, existing).await?.is_empty() {
                self.execute(sql::insert(table, &info.info, &values))
                    .await?;
            } else {
                let set: Vec<(&Ident, MySqlValue)> = values
                    .iter()
                    .filter(|(c, _)| !key.contains(c))
                    .cloned()
                    .collect();
                if !set.is_empty() {
                    self.execute(sql::update(table, &info.info, &set, &key_filter))
                        .await?;
                }
            }
        } else {
            self.execute(sql::upsert(table, &info.info, key, &values))
                .await?;
        }
        let read_back = sql::find(table, &info.info, &key_filter, Some(1), false);
        let row = self.rows(&info, read_back).await?.into_iter().next();
        crate::telemetry::step_finished("upsert", started.elapsed());
        row.ok_or_else(|| not_read_back(table, key))
    }

    async fn update(
        &mut self,
        table: &TableName,
        filter: &[(Ident, Value)],
        set: &[(Ident, Value)],
    ) -> Result<Vec<Row>, StoreError> {
        let info = self.table(table).await?;
        if info.identity.is_empty() {
            return Err(StoreError::Invalid(format!(
                "table {table} has no primary key (nor a unique index over NOT NULL columns): busbar reads the rows an update changed back by it"
            )));
        }
        let set = paired(table, &info, set)?;
        let filter = paired(table, &info, filter)?;
        self.wrote = true;
        let started = Instant::now();
        let matched = self
            .rows(&info, sql::identities(table, &info, &filter))
            .await?;
        let mut identities = Vec::with_capacity(matched.len());
        for row in &matched {
            identities.push(identity(table, &info, row, &[])?);
        }
        if identities.is_empty() {
            crate::telemetry::step_finished("update", started.elapsed());
            return Ok(Vec::new());
        }
        self.execute(sql::update_rows(table, &info.info, &set, &identities))
            .await?;
        // An update may change the identity itself: read back by the new one.
        let mut after = Vec::with_capacity(matched.len());
        for row in &matched {
            after.push(identity(table, &info, row, &set)?);
        }
        let rows = self
            .rows(&info, sql::rows_by_identity(table, &info.info, &after))
            .await;
        crate::telemetry::step_finished("update", started.elapsed());
        rows
    }

    async fn delete(
        &mut self,
        table: &TableName,
        filter: &[(Ident, Value)],
    ) -> Result<u64, StoreError> {
        let info = self.table(table).await?;
        let filter = paired(table, &info, filter)?;
        self.wrote = true;
        let started = Instant::now();
        let affected = self
            .execute(sql::delete(table, &info.info, &filter))
            .await?;
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

/// The checks of an upsert before it runs, and its key's values (to read
/// the row back by): the table has a unique index on exactly the key, and
/// every key column has a value that is not null (a row with a null key
/// never conflicts: every run would insert another).
pub(super) fn upsert_key<'v>(
    table: &TableName,
    info: &MySqlTable,
    key: &[Ident],
    values: &[(&'v Ident, MySqlValue)],
) -> Result<Vec<(&'v Ident, MySqlValue)>, StoreError> {
    let names: Vec<&str> = key.iter().map(Ident::as_str).collect();
    if !info.info.has_unique(&names) {
        return Err(StoreError::Invalid(format!(
            "table {table} has no unique index on ({}): an upsert needs one on exactly its key",
            names.join(", ")
        )));
    }
    let mut key_filter = Vec::with_capacity(key.len());
    for column in key {
        match values.iter().find(|(c, _)| *c == column) {
            Some((_, MySqlValue::Null)) => {
                return Err(StoreError::Invalid(format!(
                    "the upsert into {table} has a null value for key column `{column}`: a row with a null key never matches another, so the row could not be found again"
                )));
            }
            Some((c, value)) => key_filter.push((*c, value.clone())),
            None => {
                return Err(StoreError::Invalid(format!(
                    "the upsert into {table} gives no value for key column `{column}`"
                )));
            }
        }
    }
    Ok(key_filter)
}

/// The error of an upsert whose row is not found again by its key.
pub(super) fn not_read_back(table: &TableName, key: &[Ident]) -> StoreError {
    let names: Vec<&str> = key.iter().map(Ident::as_str).collect();
    StoreError::Invalid(format!(
        "the upsert into {table} stored no row with its key ({}): another unique index of the table matched a different row",
        names.join(", ")
    ))
}

/// Whether `values` fill every column of a unique index other than the
/// key's: MariaDB's `ON DUPLICATE KEY UPDATE` would then take a clash on
/// that index for the key's.
pub(super) fn fills_another_unique_index(
    table: &MySqlTable,
    key: &[Ident],
    values: &[(&Ident, MySqlValue)],
) -> bool {
    let mut key_names: Vec<&str> = key.iter().map(Ident::as_str).collect();
    key_names.sort_unstable();
    table.info.unique.iter().any(|index| {
        !index
            .iter()
            .map(String::as_str)
            .eq(key_names.iter().copied())
            && index
                .iter()
                .all(|column| values.iter().any(|(c, _)| c.as_str() == column))
    })
}

/// A row's identity (its identity columns' values, converted back for
/// binding), with the values an update `set` gives them.
fn identity(
    table: &TableName,
    info: &MySqlTable,
    row: &Row,
    set: &[(&Ident, MySqlValue)],
) -> Result<Vec<(CatalogName, MySqlValue)>, StoreError> {
    info.identity
        .iter()
        .map(|name| {
            if let Some((_, value)) = set.iter().find(|(c, _)| c.as_str() == name.as_str()) {
                return Ok((name.clone(), value.clone()));
            }
            let column = info
                .info
                .column(name.as_str())
                .ok_or_else(|| StoreError::NoColumn {
                    table: table.to_string(),
                    column: name.to_string(),
                })?;
            let value = row
                .columns
                .get(name.as_str())
                .cloned()
                .unwrap_or(Value::Null);
            // A boolean identity came back as `true`/`false`; a time in
            // RFC 3339: both convert back as any event value would.
            Ok((name.clone(), convert(column, &value)?))
        })
        .collect()
}
