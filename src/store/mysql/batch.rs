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
use crate::store::catalog::{ColumnInfo, ColumnType, Storage};

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
///
/// Lookups by a unique key with no null (every upsert's read-back, most
/// finds) are asked together, `WHERE (a, b) IN (…)`, and a row answers the
/// lookup whose values it holds exactly as written. A lookup no row
/// answers so — none matched, or the row holds its key spelled otherwise:
/// `'Ada@x'` found by `'ada@x'` in a case-insensitive key, `12.50` by
/// `12.5` — is asked again alone, where MariaDB compares (a branch of
/// [`sql::find_each`]) — unless every key column compares exactly as
/// written (integers, UUIDs, binary text), when no match means no row.
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
    let columns: Vec<&Ident> = lookups
        .first()
        .map(|filter| filter.iter().map(|(c, _)| *c).collect())
        .unwrap_or_default();
    let by_key = !columns.is_empty()
        && info.info.unique.iter().any(|index| {
            index
                .iter()
                .all(|u| columns.iter().any(|c| c.as_str() == u.as_str()))
        });
    let mut alone = Vec::new();
    if !by_key {
        alone = unique;
    } else {
        let definitive = columns.iter().all(|c| {
            info.info
                .column(c.as_str())
                .is_some_and(compares_as_written)
        });
        let (keyed, rest): (Vec<usize>, Vec<usize>) = unique.iter().partition(|i| {
            let lookup = &lookups[**i];
            lookup.len() == columns.len()
                && lookup
                    .iter()
                    .zip(&columns)
                    .all(|((c, v), column)| c == column && written(v).is_some())
        });
        alone.extend(rest);
        for chunk in keyed.chunks((MAX_PLACEHOLDERS / columns.len()).max(1)) {
            let rows: Vec<Vec<MySqlValue>> = chunk
                .iter()
                .map(|i| lookups[*i].iter().map(|(_, v)| v.clone()).collect())
                .collect();
            let statement = sql::find_in(table, &info.info, &columns, &rows);
            let mut found: HashMap<Vec<String>, Row> = HashMap::new();
            for text in fetch(connection, statement).await? {
                let row = sql::normalize_row(&info.info, &text)?;
                let key: Option<Vec<String>> = columns
                    .iter()
                    .map(|c| row.columns.get(c.as_str()).and_then(as_written))
                    .collect();
                if let Some(key) = key {
                    found.insert(key, row);
                }
            }
            for &i in chunk {
                let key: Vec<String> = lookups[i].iter().filter_map(|(_, v)| written(v)).collect();
                match found.get(&key) {
                    Some(row) => out[i] = Some(row.clone()),
                    None if definitive => {}
                    None => alone.push(i),
                }
            }
        }
    }
    let width = columns.len().max(1);
    for chunk in alone.chunks((MAX_PLACEHOLDERS / width).max(1)) {
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

/// Runs a statement returning one JSON text per row.
async fn fetch(
    connection: &mut MySqlConnection,
    statement: sql::Statement,
) -> Result<Vec<String>, StoreError> {
    let mut query = sqlx::query_scalar::<_, String>(AssertSqlSafe(statement.text));
    for value in statement.values {
        query = query.bind(value);
    }
    Ok(query.fetch_all(connection).await?)
}

/// A bound value as written, to tell the row holding it (`None`: a null
/// or a float, which is never matched so).
fn written(value: &MySqlValue) -> Option<String> {
    match value {
        MySqlValue::Text(text) => Some(format!("s{text}")),
        MySqlValue::Int(n) => Some(format!("n{n}")),
        MySqlValue::UInt(n) => Some(format!("n{n}")),
        MySqlValue::Bool(b) => Some(format!("b{b}")),
        MySqlValue::Float(_) | MySqlValue::Null => None,
    }
}

/// A value of a row read back, in the form of [`written`].
fn as_written(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(format!("s{text}")),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(format!("n{n}")),
        Value::Bool(b) => Some(format!("b{b}")),
        _ => None,
    }
}

/// Whether MariaDB compares the column's values exactly as they are
/// written: then a key no row holds as written is in no row.
fn compares_as_written(column: &ColumnInfo) -> bool {
    match column.ty {
        ColumnType::Integer | ColumnType::Boolean | ColumnType::Uuid => true,
        ColumnType::Text => match &column.storage {
            Storage::MySql(mysql) => !mysql.case_insensitive && !mysql.pad_space,
            _ => false,
        },
        _ => false,
    }
}
