//! A lockstep batch's statements on a MariaDB target ([`crate::store::batch`]
//! gathers them): all `find`s of one shape in one statement, all `upsert`s
//! of one shape in one multi-row `INSERT … ON DUPLICATE KEY UPDATE`, read
//! back by key in one more. A batch of a hundred deliveries into MariaDB
//! then costs a few round trips instead of four per delivery.
//!
//! Each lookup is its own branch of a `UNION ALL` ([`sql::find_each`]), so
//! it compares exactly as a single `find` would, under the column's
//! collation and casts: nothing is matched on the client, where `'Ada@x'`
//! and `'ada@x'` would differ while a case-insensitive unique key says they
//! are one row. Which deliveries touched the same row is then told by the
//! rows read back ([`crate::store::batch::Accesses`]), and such a batch is
//! run again one delivery after another.
//!
//! An upsert whose values also fill another unique index is run alone, as
//! [`MySqlTargetExecutor`] runs it (MariaDB would take a clash on that
//! index for the key's).

use std::collections::HashMap;
use std::time::Instant;

use serde_json::Value;
use sqlx::{AssertSqlSafe, MySqlConnection};

use super::catalog::{MySqlCatalog, MySqlTable};
use super::convert::MySqlValue;
use super::sql;
use super::target::{
    MySqlTargetExecutor, execute, fills_another_unique_index, not_read_back, paired, upsert_key,
};
use crate::compile::ident::{Ident, TableName};
use crate::mapping::{Executor, Row};
use crate::store::StoreError;

/// Placeholders per statement, under MariaDB's limit of 65,535.
const MAX_PLACEHOLDERS: usize = 60_000;

/// Looks up at most one row per filter (each `(column, value)` pairs of one
/// shape): a conversion error answers only its own lookup.
pub async fn find_many(
    connection: &mut MySqlConnection,
    table: &TableName,
    info: &MySqlTable,
    filters: &[Vec<(Ident, Value)>],
) -> Result<Vec<Result<Option<Row>, StoreError>>, StoreError> {
    let mut out: Vec<Result<Option<Row>, StoreError>> = Vec::with_capacity(filters.len());
    let mut lookups = Vec::new();
    let mut asked = Vec::new();
    for (i, filter) in filters.iter().enumerate() {
        match paired(table, info, filter) {
            Ok(pairs) => {
                lookups.push(pairs);
                asked.push(i);
                out.push(Ok(None));
            }
            Err(error) => out.push(Err(error)),
        }
    }
    let started = Instant::now();
    let found = lookup(connection, table, info, &lookups).await?;
    crate::telemetry::step_finished("find", started.elapsed());
    for (i, row) in asked.into_iter().zip(found) {
        out[i] = Ok(row);
    }
    Ok(out)
}

/// Upserts one row per `rows` entry (values in the order of `columns`), as
/// one `upsert` step after another would, and reads each back by its key:
/// a conversion error or a null key answers only its own row; an error of
/// the database (a clash on another unique index among them) fails them
/// all, and the batch is run again delivery by delivery in savepoints.
pub async fn upsert_many(
    connection: &mut MySqlConnection,
    catalog: &MySqlCatalog,
    table: &TableName,
    info: &MySqlTable,
    key: &[Ident],
    rows: &[Vec<(Ident, Value)>],
) -> Result<Vec<Result<Row, StoreError>>, StoreError> {
    let mut out: Vec<Result<Row, StoreError>> = Vec::with_capacity(rows.len());
    let mut pending = Vec::new();
    for (i, values) in rows.iter().enumerate() {
        let checked = paired(table, info, values).and_then(|pairs| {
            let key_filter = upsert_key(table, info, key, &pairs)?;
            Ok((pairs, key_filter))
        });
        match checked {
            Ok((pairs, key_filter)) => {
                if fills_another_unique_index(info, key, &pairs) {
                    // The clash on another index must be told from the key's:
                    // one at a time.
                    let mut alone = MySqlTargetExecutor::new(&mut *connection, catalog);
                    match alone.upsert(table, key, values).await {
                        Err(error @ StoreError::Sqlx(_)) => return Err(error),
                        answer => out.push(answer),
                    }
                    continue;
                }
                let key_text = format!("{:?}", key_filter);
                let values: Vec<MySqlValue> = pairs.into_iter().map(|(_, v)| v).collect();
                pending.push((i, key_text, values, key_filter));
                out.push(Err(not_read_back(table, key)));
            }
            Err(error) => out.push(Err(error)),
        }
    }
    if pending.is_empty() {
        return Ok(out);
    }
    let started = Instant::now();
    // Rows in key order: two transactions that upsert some of the same rows
    // take their locks in the same order, so they wait for each other
    // instead of deadlocking.
    let mut order: Vec<usize> = (0..pending.len()).collect();
    order.sort_by(|a, b| pending[*a].1.cmp(&pending[*b].1));
    let columns: Vec<&Ident> = rows[pending[0].0].iter().map(|(c, _)| c).collect();
    let per_statement = (MAX_PLACEHOLDERS / columns.len().max(1)).max(1);
    for chunk in order.chunks(per_statement) {
        let values: Vec<Vec<MySqlValue>> = chunk.iter().map(|p| pending[*p].2.clone()).collect();
        execute(
            connection,
            sql::upsert_rows(table, &info.info, key, &columns, &values),
        )
        .await?;
    }
    let keys: Vec<Vec<(&Ident, MySqlValue)>> = pending
        .iter()
        .map(|(_, _, _, key_filter)| key_filter.clone())
        .collect();
    let found = lookup(connection, table, info, &keys).await?;
    let elapsed = started.elapsed();
    for ((i, ..), row) in pending.iter().zip(found) {
        crate::telemetry::step_finished("upsert", elapsed);
        if let Some(row) = row {
            out[*i] = Ok(row);
        }
    }
    Ok(out)
}

/// One row or none per lookup, in as few statements as the placeholder
/// limit allows; a lookup asked twice is asked once.
async fn lookup(
    connection: &mut MySqlConnection,
    table: &TableName,
    info: &MySqlTable,
    lookups: &[Vec<(&Ident, MySqlValue)>],
) -> Result<Vec<Option<Row>>, StoreError> {
    let mut out: Vec<Option<Row>> = vec![None; lookups.len()];
    let mut first: HashMap<String, usize> = HashMap::new();
    let mut same_as: Vec<usize> = Vec::with_capacity(lookups.len());
    let mut unique: Vec<usize> = Vec::new();
    for (i, filter) in lookups.iter().enumerate() {
        let text = format!("{filter:?}");
        let j = *first.entry(text).or_insert_with(|| {
            unique.push(i);
            i
        });
        same_as.push(j);
    }
    let width = lookups.first().map_or(1, Vec::len).max(1);
    for chunk in unique.chunks((MAX_PLACEHOLDERS / width).max(1)) {
        let filters: Vec<Vec<(&Ident, MySqlValue)>> =
            chunk.iter().map(|i| lookups[*i].clone()).collect();
        let statement = sql::find_each(table, &info.info, &filters);
        let mut query = sqlx::query_as::<_, (i64, String)>(AssertSqlSafe(statement.text));
        for value in statement.values {
            query = query.bind(value);
        }
        for (n, text) in query.fetch_all(&mut *connection).await? {
            let index = usize::try_from(n)
                .ok()
                .and_then(|n| chunk.get(n))
                .ok_or_else(|| {
                    StoreError::Invalid(format!("internal error: lookup returned row number {n}"))
                })?;
            out[*index] = Some(sql::normalize_row(&info.info, &text)?);
        }
    }
    for (i, j) in same_as.into_iter().enumerate() {
        if i != j {
            out[i] = out[j].clone();
        }
    }
    Ok(out)
}
