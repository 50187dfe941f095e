//! Running the steps of many deliveries as a few set-based statements.
//!
//! A worker runs every route of a batch at once, in lockstep: each route's
//! `run_route` awaits a [`BatchedExecutor`], whose calls only queue a
//! [`Request`]. When every route is waiting, [`flush`] executes the queue:
//! all `find`s of the same shape become one `SELECT ... FROM (VALUES ...)`,
//! all `upsert`s of the same shape one multi-row `INSERT ... ON CONFLICT`
//! (read back by key), and the routes are resumed with their rows. A batch
//! of a hundred deliveries then costs a dozen statements instead of
//! hundreds. On a MariaDB target the same groups run as MariaDB's own
//! set-based statements ([`super::mysql::batch`]).
//!
//! Interleaving deliveries must not change what they do. [`flush`] records
//! which rows each delivery read and wrote; [`Accesses::conflict`] reports
//! when two deliveries touched the same row (or the same table without a
//! row identity) and one of them wrote, and the worker then runs that batch
//! one delivery after another instead.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use serde_json::Value;
use sqlx::{AssertSqlSafe, MySqlConnection};

use super::catalog::{Catalog, TableInfo};
use super::convert::{BindValue, convert_columns};
use super::mysql::{self, catalog::MySqlCatalog, target::MySqlTargetExecutor};
use super::target::{Emitted, TargetExecutor, bind_all};
use super::targets::{TargetTx, not_open};
use super::{DbTx, StoreError};
use crate::compile::Step;
use crate::compile::databases::Databases;
use crate::compile::ident::{Ident, TableName};
use crate::mapping::{Executor, Row};

/// A step's database call, queued.
#[derive(Debug)]
pub enum Request {
    Find {
        table: TableName,
        filter: Vec<(Ident, Value)>,
    },
    Upsert {
        table: TableName,
        key: Vec<Ident>,
        values: Vec<(Ident, Value)>,
    },
    Update {
        table: TableName,
        filter: Vec<(Ident, Value)>,
        set: Vec<(Ident, Value)>,
    },
    Delete {
        table: TableName,
        filter: Vec<(Ident, Value)>,
    },
}

/// The answer to a request.
#[derive(Debug)]
pub enum Reply {
    Found(Option<Row>),
    Upserted(Row),
    Updated(Vec<Row>),
    Deleted(u64),
}

type Slot = Arc<Mutex<Option<Result<Reply, StoreError>>>>;

/// Requests waiting for the next flush, with the delivery that made each.
#[derive(Default)]
pub struct Queue {
    requests: Vec<(usize, Request, Slot)>,
}

pub type SharedQueue = Arc<Mutex<Queue>>;

/// The executor each route of a lockstep batch runs with.
pub struct BatchedExecutor {
    queue: SharedQueue,
    delivery: usize,
    pub emitted: Vec<Emitted>,
    pub wrote: bool,
}

impl BatchedExecutor {
    pub fn new(queue: SharedQueue, delivery: usize) -> Self {
        BatchedExecutor {
            queue,
            delivery,
            emitted: Vec::new(),
            wrote: false,
        }
    }

    fn submit(&self, request: Request) -> Answer {
        let slot: Slot = Arc::new(Mutex::new(None));
        self.queue.lock().expect("queue lock").requests.push((
            self.delivery,
            request,
            slot.clone(),
        ));
        Answer { slot }
    }
}

/// Resolves when [`flush`] has answered the request.
struct Answer {
    slot: Slot,
}

impl Future for Answer {
    type Output = Result<Reply, StoreError>;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        match self.slot.lock().expect("slot lock").take() {
            Some(answer) => Poll::Ready(answer),
            // The worker polls every route again after each flush, so no
            // waker is needed.
            None => Poll::Pending,
        }
    }
}

fn unexpected(reply: Reply) -> StoreError {
    StoreError::Invalid(format!("internal error: unexpected reply {reply:?}"))
}

impl Executor for BatchedExecutor {
    type Error = StoreError;

    async fn find(
        &mut self,
        table: &TableName,
        filter: &[(Ident, Value)],
    ) -> Result<Option<Row>, StoreError> {
        let request = Request::Find {
            table: table.clone(),
            filter: filter.to_vec(),
        };
        match self.submit(request).await? {
            Reply::Found(row) => Ok(row),
            other => Err(unexpected(other)),
        }
    }

    async fn upsert(
        &mut self,
        table: &TableName,
        key: &[Ident],
        values: &[(Ident, Value)],
    ) -> Result<Row, StoreError> {
        self.wrote = true;
        let request = Request::Upsert {
            table: table.clone(),
            key: key.to_vec(),
            values: values.to_vec(),
        };
        match self.submit(request).await? {
            Reply::Upserted(row) => Ok(row),
            other => Err(unexpected(other)),
        }
    }

    async fn update(
        &mut self,
        table: &TableName,
        filter: &[(Ident, Value)],
        set: &[(Ident, Value)],
    ) -> Result<Vec<Row>, StoreError> {
        self.wrote = true;
        let request = Request::Update {
            table: table.clone(),
            filter: filter.to_vec(),
            set: set.to_vec(),
        };
        match self.submit(request).await? {
            Reply::Updated(rows) => Ok(rows),
            other => Err(unexpected(other)),
        }
    }

    async fn delete(
        &mut self,
        table: &TableName,
        filter: &[(Ident, Value)],
    ) -> Result<u64, StoreError> {
        self.wrote = true;
        let request = Request::Delete {
            table: table.clone(),
            filter: filter.to_vec(),
        };
        match self.submit(request).await? {
            Reply::Deleted(count) => Ok(count),
            other => Err(unexpected(other)),
        }
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

/// What a delivery touched: a row (identified by its first unique column
/// set), or a whole table (a lookup that found nothing, an update, a
/// delete, a table without unique columns).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    Row(String),
    Table,
}

#[derive(Debug, Clone)]
struct Access {
    delivery: usize,
    write: bool,
    target: Target,
}

/// Every read and write of a lockstep batch, by table.
#[derive(Debug, Default)]
pub struct Accesses {
    by_table: HashMap<TableName, Vec<Access>>,
}

impl Accesses {
    fn record(&mut self, table: &TableName, delivery: usize, write: bool, target: Target) {
        self.by_table
            .entry(table.clone())
            .or_default()
            .push(Access {
                delivery,
                write,
                target,
            });
    }

    fn record_row(
        &mut self,
        table: &TableName,
        info: &TableInfo,
        delivery: usize,
        write: bool,
        row: Option<&Row>,
    ) {
        let target = row
            .and_then(|row| identity(info, row))
            .map_or(Target::Table, Target::Row);
        self.record(table, delivery, write, target);
    }

    /// Whether two deliveries touched the same row or table and at least
    /// one of them wrote it: then the lockstep order may differ from any
    /// one-after-another order, and the batch must run sequentially.
    pub fn conflict(&self) -> Option<String> {
        let clash =
            |table: &TableName| Some(format!("two deliveries touch {table}, and one writes"));
        for (table, accesses) in &self.by_table {
            if !accesses.iter().any(|a| a.write) {
                continue;
            }
            // A whole-table access clashes with another delivery's access
            // when either of them writes.
            let whole: Vec<&Access> = accesses
                .iter()
                .filter(|a| a.target == Target::Table)
                .collect();
            if !whole.is_empty() {
                let writers: HashSet<usize> = accesses
                    .iter()
                    .filter(|a| a.write)
                    .map(|a| a.delivery)
                    .collect();
                let touching: HashSet<usize> = accesses.iter().map(|a| a.delivery).collect();
                for a in whole {
                    let others_touch = touching.len() > 1 || !touching.contains(&a.delivery);
                    let others_write = writers.iter().any(|d| *d != a.delivery);
                    if (a.write && others_touch) || others_write {
                        return clash(table);
                    }
                }
            }
            // A row clashes when two deliveries touch it and one writes.
            let mut rows: HashMap<&str, (usize, bool, bool)> =
                HashMap::with_capacity(accesses.len());
            for a in accesses {
                let Target::Row(key) = &a.target else {
                    continue;
                };
                let entry = rows
                    .entry(key.as_str())
                    .or_insert((a.delivery, false, false));
                if entry.0 != a.delivery {
                    entry.1 = true;
                }
                entry.2 |= a.write;
                if entry.1 && entry.2 {
                    return clash(table);
                }
            }
        }
        None
    }
}

/// A row's identity: its first unique column set's values.
fn identity(info: &TableInfo, row: &Row) -> Option<String> {
    let columns = info.unique.first()?;
    let mut out = String::new();
    for column in columns {
        out.push_str(column);
        out.push('=');
        out.push_str(&row.columns.get(column)?.to_string());
        out.push(';');
    }
    Some(out)
}

/// Requests of one shape: the delivery, its columns and values, its slot.
type Group = Vec<(usize, Vec<(Ident, Value)>, Slot)>;

/// An upsert's shape: the table, its key, the columns written.
type UpsertShape = (TableName, Vec<Ident>, Vec<Ident>);

/// Where a flush runs each table's statements: busbar's transaction, or
/// the transaction of the other database the table is in (`others`, by
/// name: the database the integration writes to, and those its `find`s
/// read).
pub struct Places<'a> {
    pub own: &'a mut DbTx,
    pub own_catalog: &'a Catalog,
    pub databases: &'a Databases,
    pub others: Vec<(&'a str, &'a mut TargetTx)>,
}

/// A table's transaction and catalog.
enum Place<'p> {
    /// busbar's own database, or another PostgreSQL database.
    Sql(&'p mut DbTx, &'p Catalog),
    MySql(&'p mut MySqlConnection, &'p MySqlCatalog),
}

impl Places<'_> {
    /// The transaction and catalog of `table`.
    fn of(&mut self, table: &TableName) -> Result<Place<'_>, StoreError> {
        let Some(database) = self.databases.of_table(table) else {
            return Ok(Place::Sql(&mut *self.own, self.own_catalog));
        };
        let (_, tx) = self
            .others
            .iter_mut()
            .find(|(name, _)| *name == database.name)
            .ok_or_else(|| not_open(&database.name, table))?;
        Ok(match &mut **tx {
            TargetTx::Postgres(tx, catalog) => Place::Sql(tx, catalog),
            TargetTx::MySql(tx, catalog) => Place::MySql(tx, catalog),
        })
    }
}

/// Executes every queued request and answers it. A conversion error
/// answers only its own request; a database error fails the flush (the
/// transaction may be unusable).
pub async fn flush(
    queue: &SharedQueue,
    places: &mut Places<'_>,
    accesses: &mut Accesses,
) -> Result<(), StoreError> {
    let requests = std::mem::take(&mut queue.lock().expect("queue lock").requests);
    // Group by shape, keeping the order of first appearance.
    let mut finds: Vec<((TableName, Vec<Ident>), Group)> = Vec::new();
    let mut upserts: Vec<(UpsertShape, Group)> = Vec::new();
    let mut singles = Vec::new();
    for (delivery, request, slot) in requests {
        match request {
            Request::Find { table, filter } => {
                let shape = (table, filter.iter().map(|(c, _)| c.clone()).collect());
                match finds.iter_mut().find(|(s, _)| *s == shape) {
                    Some((_, group)) => group.push((delivery, filter, slot)),
                    None => finds.push((shape, vec![(delivery, filter, slot)])),
                }
            }
            Request::Upsert { table, key, values } => {
                let shape = (table, key, values.iter().map(|(c, _)| c.clone()).collect());
                match upserts.iter_mut().find(|(s, _)| *s == shape) {
                    Some((_, group)) => group.push((delivery, values, slot)),
                    None => upserts.push((shape, vec![(delivery, values, slot)])),
                }
            }
            other => singles.push((delivery, other, slot)),
        }
    }
    for ((table, columns), group) in finds {
        let (tx, catalog) = match places.of(&table)? {
            Place::Sql(tx, catalog) => (tx, catalog),
            Place::MySql(connection, catalog) => {
                let info = catalog.table(connection, &table).await?;
                let filters: Vec<Vec<(Ident, Value)>> =
                    group.iter().map(|(_, filter, _)| filter.clone()).collect();
                let rows = mysql::batch::find_many(connection, &table, &info, &filters).await?;
                for ((delivery, _, slot), row) in group.into_iter().zip(rows) {
                    if let Ok(row) = &row {
                        accesses.record_row(&table, &info.info, delivery, false, row.as_ref());
                    }
                    answer(&slot, row.map(Reply::Found));
                }
                continue;
            }
        };
        let info = catalog.table(tx, &table).await?;
        let mut lookups = Vec::with_capacity(group.len());
        for (delivery, filter, slot) in group {
            match convert_columns(&table, &info, &filter) {
                Ok(values) => lookups.push((delivery, values, slot)),
                Err(error) => answer(&slot, Err(error)),
            }
        }
        let started = std::time::Instant::now();
        let rows = find_many(tx, &table, &info, &columns, &lookups).await?;
        let elapsed = started.elapsed();
        for ((delivery, _, slot), row) in lookups.into_iter().zip(rows) {
            crate::telemetry::step_finished("find", elapsed);
            accesses.record_row(&table, &info, delivery, false, row.as_ref());
            answer(&slot, Ok(Reply::Found(row)));
        }
    }
    for ((table, key, columns), group) in upserts {
        let (tx, catalog) = match places.of(&table)? {
            Place::Sql(tx, catalog) => (tx, catalog),
            Place::MySql(connection, catalog) => {
                let info = catalog.table(connection, &table).await?;
                let rows: Vec<Vec<(Ident, Value)>> =
                    group.iter().map(|(_, values, _)| values.clone()).collect();
                let rows =
                    mysql::batch::upsert_many(connection, catalog, &table, &info, &key, &rows)
                        .await?;
                for ((delivery, _, slot), row) in group.into_iter().zip(rows) {
                    if let Ok(row) = &row {
                        accesses.record_row(&table, &info.info, delivery, true, Some(row));
                    }
                    answer(&slot, row.map(Reply::Upserted));
                }
                continue;
            }
        };
        let info = catalog.table(tx, &table).await?;
        let key_positions: Vec<usize> = key
            .iter()
            .map(|k| {
                columns
                    .iter()
                    .position(|c| c == k)
                    .expect("the compiler checks that keys are written")
            })
            .collect();
        let mut pending = Vec::with_capacity(group.len());
        for (delivery, values, slot) in group {
            match convert_columns(&table, &info, &values) {
                Ok(values) => pending.push((delivery, values, slot)),
                Err(error) => answer(&slot, Err(error)),
            }
        }
        // Waves: one row per key per statement (a statement may not upsert
        // the same row twice), in the order the deliveries asked.
        let key_of = |values: &Vec<BindValue>| -> Vec<Option<String>> {
            key_positions.iter().map(|p| values[*p].pg_text()).collect()
        };
        while !pending.is_empty() {
            let mut wave = Vec::new();
            let mut later = Vec::new();
            let mut in_wave = std::collections::HashSet::new();
            let mut deferred = std::collections::HashSet::new();
            for item in pending {
                let key = key_of(&item.1);
                if in_wave.contains(&key) || deferred.contains(&key) {
                    deferred.insert(key);
                    later.push(item);
                } else {
                    in_wave.insert(key);
                    wave.push(item);
                }
            }
            // Rows in key order: two transactions that upsert some of the
            // same rows take their locks in the same order, so they wait
            // for each other instead of deadlocking.
            wave.sort_by_cached_key(|(_, values, _): &(usize, Vec<BindValue>, Slot)| {
                key_of(values)
            });
            upsert_wave(
                tx,
                &table,
                &info,
                &key,
                &columns,
                &key_positions,
                wave,
                accesses,
            )
            .await?;
            pending = later;
        }
    }
    for (delivery, request, slot) in singles {
        let table = match &request {
            Request::Update { table, .. } | Request::Delete { table, .. } => table.clone(),
            Request::Find { .. } | Request::Upsert { .. } => unreachable!("grouped above"),
        };
        let reply = match places.of(&table)? {
            Place::Sql(tx, catalog) => {
                single(&mut TargetExecutor::new(tx, catalog), &request).await
            }
            Place::MySql(connection, catalog) => {
                single(&mut MySqlTargetExecutor::new(connection, catalog), &request).await
            }
        };
        accesses.record(&table, delivery, true, Target::Table);
        match reply {
            Err(error)
                if !matches!(
                    error,
                    StoreError::Conversion { .. } | StoreError::NoColumn { .. }
                ) =>
            {
                return Err(error);
            }
            reply => answer(&slot, reply),
        }
    }
    Ok(())
}

/// Runs an update or a delete on its own.
async fn single(
    executor: &mut impl Executor<Error = StoreError>,
    request: &Request,
) -> Result<Reply, StoreError> {
    match request {
        Request::Update { table, filter, set } => executor
            .update(table, filter, set)
            .await
            .map(Reply::Updated),
        Request::Delete { table, filter } => {
            executor.delete(table, filter).await.map(Reply::Deleted)
        }
        Request::Find { .. } | Request::Upsert { .. } => unreachable!("grouped by flush"),
    }
}

fn answer(slot: &Slot, reply: Result<Reply, StoreError>) {
    *slot.lock().expect("slot lock") = Some(reply);
}

/// Looks up one row per lookup, in one statement per null pattern.
async fn find_many(
    tx: &mut DbTx,
    table: &TableName,
    info: &TableInfo,
    columns: &[Ident],
    lookups: &[(usize, Vec<BindValue>, Slot)],
) -> Result<Vec<Option<Row>>, StoreError> {
    let mut out: Vec<Option<Row>> = vec![None; lookups.len()];
    let mut by_nulls: Vec<(Vec<bool>, Vec<usize>)> = Vec::new();
    for (i, (_, values, _)) in lookups.iter().enumerate() {
        let nulls: Vec<bool> = values.iter().map(|v| *v == BindValue::Null).collect();
        match by_nulls.iter_mut().find(|(n, _)| *n == nulls) {
            Some((_, members)) => members.push(i),
            None => by_nulls.push((nulls, vec![i])),
        }
    }
    // The same lookup asked by many deliveries (every event of a batch
    // checking one subscription) is asked once.
    let mut same_as: Vec<Option<usize>> = vec![None; lookups.len()];
    let by_nulls: Vec<(Vec<bool>, Vec<usize>)> = by_nulls
        .into_iter()
        .map(|(nulls, members)| {
            let mut first: HashMap<Vec<Option<String>>, usize> = HashMap::new();
            let mut unique = Vec::new();
            for i in members {
                let key: Vec<Option<String>> =
                    lookups[i].1.iter().map(BindValue::pg_text).collect();
                match first.get(&key) {
                    Some(&j) => same_as[i] = Some(j),
                    None => {
                        first.insert(key, i);
                        unique.push(i);
                    }
                }
            }
            (nulls, unique)
        })
        .collect();
    for (nulls, members) in by_nulls {
        let sql = tx
            .dialect()
            .find_many(table, info, columns, &nulls, members.len());
        let started = std::time::Instant::now();
        let rows: Vec<(i64, Option<String>)> = match tx {
            DbTx::Postgres(tx) => {
                // Column arrays for UNNEST: the numbers, then each compared
                // column's values as text.
                let mut query = sqlx::query_as(AssertSqlSafe(sql))
                    .bind(members.iter().map(|i| *i as i64).collect::<Vec<i64>>());
                for (column, null) in nulls.iter().enumerate() {
                    if *null {
                        continue;
                    }
                    let values: Vec<&BindValue> =
                        members.iter().map(|i| &lookups[*i].1[column]).collect();
                    query = query.bind(values);
                }
                query.fetch_all(&mut **tx).await?
            }
            DbTx::Sqlite(tx) => {
                let mut params = Vec::new();
                for &i in &members {
                    params.push(BindValue::Int(i as i64));
                    params.extend(
                        lookups[i]
                            .1
                            .iter()
                            .filter(|v| **v != BindValue::Null)
                            .cloned(),
                    );
                }
                bind_all(sqlx::query_as(AssertSqlSafe(sql)), &params)
                    .fetch_all(&mut **tx)
                    .await?
            }
        };
        tracing::trace!(%table, rows = members.len(), elapsed = ?started.elapsed(), "find_many");
        for (i, text) in rows {
            let Some(text) = text else { continue };
            let index = usize::try_from(i)
                .ok()
                .filter(|i| *i < out.len())
                .ok_or_else(|| {
                    StoreError::Invalid(format!("internal error: lookup returned row number {i}"))
                })?;
            out[index] = Some(super::target::parse_row(&text)?);
        }
    }
    for (i, same) in same_as.iter().enumerate() {
        if let Some(j) = same {
            out[i] = out[*j].clone();
        }
    }
    Ok(out)
}

/// Upserts one wave (no two rows with the same key) and reads the rows
/// back by key.
#[allow(clippy::too_many_arguments)]
async fn upsert_wave(
    tx: &mut DbTx,
    table: &TableName,
    info: &TableInfo,
    key: &[Ident],
    columns: &[Ident],
    key_positions: &[usize],
    wave: Vec<(usize, Vec<BindValue>, Slot)>,
    accesses: &mut Accesses,
) -> Result<(), StoreError> {
    let sql = tx
        .dialect()
        .upsert_many(table, info, key, columns, wave.len());
    let started = std::time::Instant::now();
    let returned: Vec<(String,)> = match tx {
        DbTx::Postgres(tx) => {
            let mut query = sqlx::query_as(AssertSqlSafe(sql));
            for column in 0..columns.len() {
                let values: Vec<&BindValue> =
                    wave.iter().map(|(_, values, _)| &values[column]).collect();
                query = query.bind(values);
            }
            query.fetch_all(&mut **tx).await?
        }
        DbTx::Sqlite(tx) => {
            let params: Vec<BindValue> = wave
                .iter()
                .flat_map(|(_, values, _)| values.iter().cloned())
                .collect();
            bind_all(sqlx::query_as(AssertSqlSafe(sql)), &params)
                .fetch_all(&mut **tx)
                .await?
        }
    };
    tracing::trace!(%table, rows = wave.len(), elapsed = ?started.elapsed(), "upsert_many");
    let elapsed = started.elapsed();
    for _ in &wave {
        crate::telemetry::step_finished("upsert", elapsed);
    }
    // The returned rows, found by their key's text; a key whose column
    // comes back written differently (a number, a time) is read back by
    // key instead.
    let key_text = |value: &Value| match value {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    };
    let mut by_key: HashMap<Vec<Option<String>>, Row> = HashMap::with_capacity(returned.len());
    for (text,) in &returned {
        let row = super::target::parse_row(text)?;
        let row_key: Vec<Option<String>> = key
            .iter()
            .map(|k| row.columns.get(k.as_str()).and_then(key_text))
            .collect();
        by_key.insert(row_key, row);
    }
    let mut rows: Vec<Option<Row>> = wave
        .iter()
        .map(|(_, values, _)| {
            let wanted: Vec<Option<String>> =
                key_positions.iter().map(|p| values[*p].pg_text()).collect();
            by_key.remove(&wanted)
        })
        .collect();
    let unmatched: Vec<usize> = (0..rows.len()).filter(|i| rows[*i].is_none()).collect();
    if !unmatched.is_empty() {
        let lookups: Vec<(usize, Vec<BindValue>, Slot)> = unmatched
            .iter()
            .map(|&i| {
                let (delivery, values, slot) = &wave[i];
                (
                    *delivery,
                    key_positions.iter().map(|p| values[*p].clone()).collect(),
                    slot.clone(),
                )
            })
            .collect();
        let found = find_many(tx, table, info, key, &lookups).await?;
        for (i, row) in unmatched.into_iter().zip(found) {
            rows[i] = row;
        }
    }
    for ((delivery, _, slot), row) in wave.into_iter().zip(rows) {
        accesses.record_row(table, info, delivery, true, row.as_ref());
        match row {
            Some(row) => answer(&slot, Ok(Reply::Upserted(row))),
            // A key with a null, or a database that compares keys
            // differently from their text: the row cannot be read back.
            None => {
                return Err(StoreError::Invalid(format!(
                    "the upsert into {table} wrote a row that cannot be read back by its key"
                )));
            }
        }
    }
    Ok(())
}
