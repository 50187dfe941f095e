//! The SQL that differs between PostgreSQL and SQLite, in one place.
//!
//! Every statement is built for one database, never translated from the
//! other's text: its placeholders and table names come from the
//! [`Dialect`], and where a statement differs beyond those, the caller
//! writes both in a `match`. Engine statements of fixed text are
//! [`Statement`]s, built once per database.
//!
//! - busbar's own tables ([`EngineTable`]): `integrations.events` on
//!   PostgreSQL, `"integrations.events"` on SQLite.
//! - Target tables ([`Dialect::table`], the one way a [`TableName`] becomes
//!   SQL): `"hris"."employees"` on PostgreSQL; on SQLite, which has no
//!   schemas, the single quoted name `"hris.employees"`.
//! - Placeholders ([`Dialect::param`]): `$1` and `?1`.
//! - Values for target tables are bound as text on PostgreSQL and cast to
//!   the column's type in SQL (`CAST($1 AS uuid)`, [`Dialect::bound`], the
//!   type a validated [`crate::compile::ident::SqlType`]), so any column
//!   type the catalog reports works; SQLite binds native values.
//! - Rows come back as one JSON text: `to_jsonb(t.*)` on PostgreSQL,
//!   `json_object(...)` over the catalog's columns on SQLite.

use std::fmt;
use std::sync::OnceLock;

use super::catalog::{ColumnInfo, ColumnType, TableInfo};
use crate::compile::ident::{Ident, TableName, quote};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

/// busbar's own tables (`migrations/`), in schema `integrations` on
/// PostgreSQL and named `"integrations.<table>"` on SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineTable {
    Events,
    Lanes,
    Deliveries,
    DeliveryStats,
    IntegrationState,
    Definitions,
    Nodes,
    ApiKeys,
    Redeliveries,
    ConsoleSessions,
    Partitionings,
    IntegrationHistory,
    Installation,
}

impl EngineTable {
    /// The table's name in PostgreSQL and in SQLite SQL text.
    const fn names(self) -> (&'static str, &'static str) {
        match self {
            EngineTable::Events => ("integrations.events", "\"integrations.events\""),
            EngineTable::Lanes => ("integrations.lanes", "\"integrations.lanes\""),
            EngineTable::Deliveries => ("integrations.deliveries", "\"integrations.deliveries\""),
            EngineTable::DeliveryStats => (
                "integrations.delivery_stats",
                "\"integrations.delivery_stats\"",
            ),
            EngineTable::IntegrationState => (
                "integrations.integration_state",
                "\"integrations.integration_state\"",
            ),
            EngineTable::Definitions => {
                ("integrations.definitions", "\"integrations.definitions\"")
            }
            EngineTable::Nodes => ("integrations.nodes", "\"integrations.nodes\""),
            EngineTable::ApiKeys => ("integrations.api_keys", "\"integrations.api_keys\""),
            EngineTable::Redeliveries => {
                ("integrations.redeliveries", "\"integrations.redeliveries\"")
            }
            EngineTable::IntegrationHistory => (
                "integrations.integration_history",
                "\"integrations.integration_history\"",
            ),
            EngineTable::ConsoleSessions => (
                "integrations.console_sessions",
                "\"integrations.console_sessions\"",
            ),
            EngineTable::Partitionings => (
                "integrations.partitionings",
                "\"integrations.partitionings\"",
            ),
            EngineTable::Installation => {
                ("integrations.installation", "\"integrations.installation\"")
            }
        }
    }
}

/// A numbered placeholder: `$n` on PostgreSQL, `?n` on SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    dialect: Dialect,
    n: usize,
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dialect {
            Dialect::Postgres => write!(f, "${}", self.n),
            Dialect::Sqlite => write!(f, "?{}", self.n),
        }
    }
}

/// An engine statement built once per dialect, the first time it runs on
/// it, by a function that writes its SQL with the dialect's placeholders
/// and table names:
///
/// ```ignore
/// static SQL: Statement = Statement::new(|d| {
///     let lanes = d.engine_table(EngineTable::Lanes);
///     let [p1] = d.params();
///     format!("DELETE FROM {lanes} WHERE integration_id = {p1}")
/// });
/// sqlx::query(SQL.get(tx.dialect()))
/// ```
///
/// The text is made of fixed fragments only (no value, no name from
/// configuration), so it is a `&'static str` that sqlx takes as is.
pub struct Statement {
    build: fn(Dialect) -> String,
    postgres: OnceLock<String>,
    sqlite: OnceLock<String>,
}

impl Statement {
    pub const fn new(build: fn(Dialect) -> String) -> Statement {
        Statement {
            build,
            postgres: OnceLock::new(),
            sqlite: OnceLock::new(),
        }
    }

    /// The statement's text for `dialect`.
    pub fn get(&'static self, dialect: Dialect) -> &'static str {
        let cell = match dialect {
            Dialect::Postgres => &self.postgres,
            Dialect::Sqlite => &self.sqlite,
        };
        cell.get_or_init(|| (self.build)(dialect))
    }
}

/// One `column = value` condition; `None` means the value is null, which
/// SQL spells `IS NULL`.
pub type Condition<'a> = (&'a Ident, Option<usize>);

impl Dialect {
    /// One of busbar's own tables in SQL: `integrations.events` on
    /// PostgreSQL, `"integrations.events"` on SQLite.
    pub const fn engine_table(self, table: EngineTable) -> &'static str {
        let (postgres, sqlite) = table.names();
        match self {
            Dialect::Postgres => postgres,
            Dialect::Sqlite => sqlite,
        }
    }

    /// Placeholder number `n` (from 1).
    pub const fn param(self, n: usize) -> Param {
        Param { dialect: self, n }
    }

    /// Placeholders 1 to `N`, to name in a statement:
    /// `let [p1, p2] = d.params();`.
    pub fn params<const N: usize>(self) -> [Param; N] {
        std::array::from_fn(|i| self.param(i + 1))
    }

    /// A target table's name in SQL.
    pub fn table(self, table: &TableName) -> String {
        match (self, &table.schema) {
            (Dialect::Postgres, Some(schema)) => {
                format!("{}.{}", quote(schema), quote(&table.name))
            }
            (Dialect::Sqlite, Some(_)) => quote(&table.sqlite_name()),
            (_, None) => quote(&table.name),
        }
    }

    /// A placeholder for a value of `column`.
    fn value(self, n: usize, info: &TableInfo, column: &Ident) -> String {
        match info.column(column.as_str()) {
            Some(column) => self.bound(n, column),
            None => self.param(n).to_string(),
        }
    }

    /// Placeholder `n` for a value of `column`: cast to the column's type
    /// on PostgreSQL (values are bound as text), as is on SQLite.
    pub fn bound(self, n: usize, column: &ColumnInfo) -> String {
        self.cast(&self.param(n).to_string(), column)
    }

    /// `CAST(expression AS <column type>)` on PostgreSQL; `expression` on
    /// SQLite.
    fn cast(self, expression: &str, column: &ColumnInfo) -> String {
        match (self, &column.cast_type) {
            (Dialect::Postgres, Some(ty)) => format!("CAST({expression} AS {ty})"),
            _ => expression.to_owned(),
        }
    }

    /// An expression giving the whole row (aliased `t`) as JSON text.
    pub fn row_json(self, info: &TableInfo) -> String {
        match self {
            Dialect::Postgres => "to_jsonb(t.*)::text".to_owned(),
            Dialect::Sqlite => {
                let pairs: Vec<String> = info
                    .columns
                    .iter()
                    .map(|c| {
                        let name = quote(&c.name);
                        let value = if c.ty == ColumnType::Json {
                            format!("json({name})")
                        } else {
                            name
                        };
                        format!("'{}', {value}", c.name.as_str().replace('\'', "''"))
                    })
                    .collect();
                format!("json_object({})", pairs.join(", "))
            }
        }
    }

    fn conditions(self, info: &TableInfo, conditions: &[Condition<'_>]) -> String {
        if conditions.is_empty() {
            return "TRUE".into();
        }
        conditions
            .iter()
            .map(|(column, param)| match param {
                Some(n) => format!("{} = {}", quote(*column), self.value(*n, info, column)),
                None => format!("{} IS NULL", quote(*column)),
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// `SELECT <row> FROM table WHERE ... LIMIT 1`
    pub fn find(self, table: &TableName, info: &TableInfo, filter: &[Condition<'_>]) -> String {
        format!(
            "SELECT {} FROM {} AS t WHERE {} LIMIT 1",
            self.row_json(info),
            self.table(table),
            self.conditions(info, filter)
        )
    }

    /// `INSERT ... ON CONFLICT (key) DO UPDATE SET ... RETURNING <row>`;
    /// parameters are numbered from 1 in `columns` order.
    pub fn upsert(
        self,
        table: &TableName,
        info: &TableInfo,
        key: &[Ident],
        columns: &[Ident],
    ) -> String {
        let values: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| self.value(i + 1, info, c))
            .collect();
        let source = format!("VALUES ({})", values.join(", "));
        self.insert_or_update(table, info, key, columns, &source)
    }

    /// `UPDATE ... SET ... WHERE ... RETURNING <row>`; the `set` values are
    /// parameters 1..=n, the conditions' parameters follow.
    pub fn update(
        self,
        table: &TableName,
        info: &TableInfo,
        set: &[Ident],
        filter: &[Condition<'_>],
    ) -> String {
        let assignments: Vec<String> = set
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{} = {}", quote(c), self.value(i + 1, info, c)))
            .collect();
        let alias = match self {
            Dialect::Postgres => " AS t",
            Dialect::Sqlite => "",
        };
        format!(
            "UPDATE {}{alias} SET {} WHERE {} RETURNING {}",
            self.table(table),
            assignments.join(", "),
            self.conditions(info, filter),
            self.row_json(info)
        )
    }

    /// `DELETE FROM ... WHERE ...`
    pub fn delete(self, table: &TableName, info: &TableInfo, filter: &[Condition<'_>]) -> String {
        format!(
            "DELETE FROM {} AS t WHERE {}",
            self.table(table),
            self.conditions(info, filter)
        )
    }

    /// Looks up one row for each of `rows` inputs in one statement:
    /// `SELECT i, (SELECT <row> FROM table WHERE ... LIMIT 1) FROM <inputs>`.
    /// `columns[j]` is compared with `=`, or with `IS NULL` when `nulls[j]`
    /// (it then binds nothing).
    ///
    /// Parameters: on PostgreSQL one array per
    /// column, `bigint[]` of input numbers then `text[]` per compared column,
    /// read with `UNNEST` (so the text does not depend on `rows` and stays
    /// prepared); on SQLite, row by row in a `VALUES` list: the input's
    /// number, then its values.
    pub fn find_many(
        self,
        table: &TableName,
        info: &TableInfo,
        columns: &[Ident],
        nulls: &[bool],
        rows: usize,
    ) -> String {
        let bound: Vec<&Ident> = columns
            .iter()
            .zip(nulls)
            .filter(|(_, n)| !**n)
            .map(|(c, _)| c)
            .collect();
        let mut next = 0;
        let conditions: Vec<String> = columns
            .iter()
            .zip(nulls)
            .map(|(column, null)| {
                if *null {
                    return format!("t.{} IS NULL", quote(column));
                }
                next += 1;
                let input = match self {
                    Dialect::Postgres => self.cast_to(&format!("u.c{}", next - 1), info, column),
                    Dialect::Sqlite => format!("v.column{}", next + 1),
                };
                format!("t.{} = {input}", quote(column))
            })
            .collect();
        let conditions = if conditions.is_empty() {
            "TRUE".to_owned()
        } else {
            conditions.join(" AND ")
        };
        let lookup = format!(
            "(SELECT {} FROM {} AS t WHERE {conditions} LIMIT 1)",
            self.row_json(info),
            self.table(table)
        );
        match self {
            Dialect::Postgres => {
                let arrays: Vec<String> = std::iter::once("$1::bigint[]".to_owned())
                    .chain((0..bound.len()).map(|k| format!("${}::text[]", k + 2)))
                    .collect();
                let names: Vec<String> = std::iter::once("i".to_owned())
                    .chain((0..bound.len()).map(|k| format!("c{k}")))
                    .collect();
                format!(
                    "SELECT u.i, {lookup} FROM UNNEST({}) AS u({})",
                    arrays.join(", "),
                    names.join(", ")
                )
            }
            Dialect::Sqlite => {
                // Anonymous `?` placeholders, bound in text order: with
                // numbered ones, SQLite looks each name up in a list, which
                // is quadratic in a statement with thousands of them.
                let row = format!("({})", vec!["?"; bound.len() + 1].join(", "));
                format!(
                    "SELECT v.column1, {lookup} FROM (VALUES {}) AS v",
                    vec![row; rows].join(", ")
                )
            }
        }
    }

    /// `CAST(expression AS <type of column>)` on PostgreSQL.
    fn cast_to(self, expression: &str, info: &TableInfo, column: &Ident) -> String {
        match info.column(column.as_str()) {
            Some(column) => self.cast(expression, column),
            None => expression.to_owned(),
        }
    }

    /// A multi-row `INSERT ... ON CONFLICT (key) DO UPDATE ... RETURNING
    /// <row>`. Parameters as for `find_many` without the input numbers: one
    /// `text[]` per column on PostgreSQL, row by row on SQLite.
    pub fn upsert_many(
        self,
        table: &TableName,
        info: &TableInfo,
        key: &[Ident],
        columns: &[Ident],
        rows: usize,
    ) -> String {
        let source = match self {
            Dialect::Postgres => {
                let casts: Vec<String> = columns
                    .iter()
                    .enumerate()
                    .map(|(k, c)| self.cast_to(&format!("u.c{k}"), info, c))
                    .collect();
                let arrays: Vec<String> = (0..columns.len())
                    .map(|k| format!("${}::text[]", k + 1))
                    .collect();
                let aliases: Vec<String> = (0..columns.len()).map(|k| format!("c{k}")).collect();
                format!(
                    "SELECT {} FROM UNNEST({}) AS u({})",
                    casts.join(", "),
                    arrays.join(", "),
                    aliases.join(", ")
                )
            }
            Dialect::Sqlite => {
                let row = format!("({})", vec!["?"; columns.len()].join(", "));
                format!("VALUES {}", vec![row; rows].join(", "))
            }
        };
        self.insert_or_update(table, info, key, columns, &source)
    }

    /// `INSERT INTO table (columns) <source> ON CONFLICT (key) DO UPDATE
    /// SET` every other column `RETURNING <row>`. When every column is in
    /// the key, a no-op update of the first still returns the row, which
    /// `DO NOTHING` would not.
    fn insert_or_update(
        self,
        table: &TableName,
        info: &TableInfo,
        key: &[Ident],
        columns: &[Ident],
        source: &str,
    ) -> String {
        let names: Vec<String> = columns.iter().map(quote).collect();
        let key_names: Vec<String> = key.iter().map(quote).collect();
        let mut updates: Vec<String> = columns
            .iter()
            .filter(|c| !key.contains(c))
            .map(|c| format!("{0} = excluded.{0}", quote(c)))
            .collect();
        if updates.is_empty() {
            updates.push(format!("{0} = excluded.{0}", key_names[0]));
        }
        let alias = match self {
            Dialect::Postgres => " AS t",
            Dialect::Sqlite => "",
        };
        format!(
            "INSERT INTO {}{alias} ({}) {source} ON CONFLICT ({}) DO UPDATE SET {} RETURNING {}",
            self.table(table),
            names.join(", "),
            key_names.join(", "),
            updates.join(", "),
            self.row_json(info)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::catalog::ColumnInfo;

    fn info() -> TableInfo {
        TableInfo::new(vec![
            ColumnInfo::new("id", ColumnType::Uuid, "uuid"),
            ColumnInfo::new("email", ColumnType::Text, "text"),
            ColumnInfo::new("meta", ColumnType::Json, "jsonb"),
        ])
    }

    fn ident(s: &str) -> Ident {
        Ident::parse(s).unwrap()
    }

    #[test]
    fn schema_qualified_names_differ_by_database() {
        let table = TableName::parse("hris.employees").unwrap();
        assert_eq!(Dialect::Postgres.table(&table), "\"hris\".\"employees\"");
        assert_eq!(Dialect::Sqlite.table(&table), "\"hris.employees\"");
    }

    /// A literal that looks like a placeholder, an engine table or a JSON
    /// path reaches the database as written: statements are built per
    /// dialect, never rewritten.
    #[tokio::test]
    async fn string_literals_reach_sqlite_untouched() {
        static PROBE: Statement = Statement::new(|d| {
            let [p1] = d.params();
            format!(
                "SELECT '$1 FROM integrations.events', json_extract('{{\"a\":[5,6]}}', '$.a[1]'), {p1}"
            )
        });
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        let row: (String, i64, i64) = sqlx::query_as(PROBE.get(Dialect::Sqlite))
            .bind(7)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(row, ("$1 FROM integrations.events".to_owned(), 6, 7));
    }

    #[test]
    fn engine_tables_and_placeholders_differ_by_database() {
        static SQL: Statement = Statement::new(|d| {
            let events = d.engine_table(EngineTable::Events);
            let [p1, p2] = d.params();
            format!("SELECT id FROM {events} WHERE id = {p1} AND x = {p2} AND y = {p2}")
        });
        assert_eq!(
            SQL.get(Dialect::Postgres),
            "SELECT id FROM integrations.events WHERE id = $1 AND x = $2 AND y = $2"
        );
        assert_eq!(
            SQL.get(Dialect::Sqlite),
            "SELECT id FROM \"integrations.events\" WHERE id = ?1 AND x = ?2 AND y = ?2"
        );
        assert_eq!(Dialect::Sqlite.param(12).to_string(), "?12");
    }

    #[test]
    fn upserts_cast_on_postgres_and_return_the_row() {
        let table = TableName::parse("hris.employees").unwrap();
        let sql = Dialect::Postgres.upsert(
            &table,
            &info(),
            &[ident("email")],
            &[ident("email"), ident("id")],
        );
        assert_eq!(
            sql,
            "INSERT INTO \"hris\".\"employees\" AS t (\"email\", \"id\") VALUES (CAST($1 AS text), CAST($2 AS uuid)) \
             ON CONFLICT (\"email\") DO UPDATE SET \"id\" = excluded.\"id\" RETURNING to_jsonb(t.*)::text"
        );
        let sql = Dialect::Sqlite.upsert(&table, &info(), &[ident("email")], &[ident("email")]);
        assert!(
            sql.contains("DO UPDATE SET \"email\" = excluded.\"email\""),
            "{sql}"
        );
        assert!(
            sql.contains("json_object('id', \"id\", 'email', \"email\", 'meta', json(\"meta\"))"),
            "{sql}"
        );
    }

    #[test]
    fn many_rows_are_looked_up_in_one_statement() {
        let table = TableName::parse("t").unwrap();
        let columns = [ident("email"), ident("id")];
        let sql = Dialect::Postgres.find_many(&table, &info(), &columns, &[false, true], 2);
        assert_eq!(
            sql,
            "SELECT u.i, (SELECT to_jsonb(t.*)::text FROM \"t\" AS t WHERE t.\"email\" = CAST(u.c0 AS text) \
             AND t.\"id\" IS NULL LIMIT 1) FROM UNNEST($1::bigint[], $2::text[]) AS u(i, c0)"
        );
        let sql = Dialect::Postgres.upsert_many(&table, &info(), &[ident("id")], &columns, 2);
        assert_eq!(
            sql,
            "INSERT INTO \"t\" AS t (\"email\", \"id\") SELECT CAST(u.c0 AS text), CAST(u.c1 AS uuid) \
             FROM UNNEST($1::text[], $2::text[]) AS u(c0, c1) ON CONFLICT (\"id\") DO UPDATE SET \"email\" = excluded.\"email\" \
             RETURNING to_jsonb(t.*)::text"
        );
        let sql = Dialect::Sqlite.find_many(&table, &info(), &columns, &[false, false], 1);
        assert!(sql.ends_with("WHERE t.\"email\" = v.column2 AND t.\"id\" = v.column3 LIMIT 1) FROM (VALUES (?, ?, ?)) AS v"), "{sql}");
        let sql = Dialect::Sqlite.upsert_many(&table, &info(), &[ident("id")], &columns, 2);
        assert_eq!(
            sql,
            "INSERT INTO \"t\" (\"email\", \"id\") VALUES (?, ?), (?, ?) ON CONFLICT (\"id\") DO UPDATE SET \"email\" = excluded.\"email\" \
             RETURNING json_object('id', \"id\", 'email', \"email\", 'meta', json(\"meta\"))"
        );
    }

    #[test]
    fn catalog_column_names_are_quoted_and_escaped() {
        let info = TableInfo::new(vec![ColumnInfo::new(
            "first\"Name'",
            ColumnType::Text,
            "text",
        )]);
        assert_eq!(
            Dialect::Sqlite.row_json(&info),
            r#"json_object('first"Name''', "first""Name'")"#
        );
    }

    #[test]
    fn null_conditions_use_is_null() {
        let table = TableName::parse("t").unwrap();
        let email = ident("email");
        let id = ident("id");
        let sql = Dialect::Sqlite.find(&table, &info(), &[(&email, Some(1)), (&id, None)]);
        assert!(
            sql.ends_with("WHERE \"email\" = ?1 AND \"id\" IS NULL LIMIT 1"),
            "{sql}"
        );
    }
}
