//! The SQL that differs between PostgreSQL and SQLite, in one place.
//!
//! - Table names: `"hris"."employees"` on PostgreSQL; on SQLite, which has
//!   no schemas, the single quoted name `"hris.employees"`.
//! - Placeholders: `$1` and `?1`.
//! - Values for target tables are bound as text on PostgreSQL and cast to
//!   the column's type in SQL (`CAST($1 AS uuid)`), so any column type the
//!   catalog reports works; SQLite binds native values.
//! - Rows come back as one JSON text: `to_jsonb(t.*)` on PostgreSQL,
//!   `json_object(...)` over the catalog's columns on SQLite.

use std::sync::OnceLock;

use regex::Regex;

use super::catalog::{ColumnType, TableInfo};
use crate::compile::ident::{Ident, TableName, quote};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

/// One `column = value` condition; `None` means the value is null, which
/// SQL spells `IS NULL`.
pub type Condition<'a> = (&'a Ident, Option<usize>);

impl Dialect {
    /// A target table's name in SQL.
    pub fn table(self, table: &TableName) -> String {
        match (self, &table.schema) {
            (Dialect::Postgres, Some(schema)) => {
                format!("{}.{}", quote(schema.as_str()), quote(table.name.as_str()))
            }
            (Dialect::Sqlite, Some(schema)) => quote(&format!("{schema}.{}", table.name)),
            (_, None) => quote(table.name.as_str()),
        }
    }

    /// Rewrites an engine query written for PostgreSQL (`$1`, and table
    /// names as `integrations.events`) into this dialect.
    pub fn sql(self, postgres: &str) -> String {
        match self {
            Dialect::Postgres => postgres.to_owned(),
            Dialect::Sqlite => {
                static PARAM: OnceLock<Regex> = OnceLock::new();
                static TABLE: OnceLock<Regex> = OnceLock::new();
                let param = PARAM.get_or_init(|| Regex::new(r"\$(\d+)").expect("valid regex"));
                let table = TABLE.get_or_init(|| {
                    Regex::new(r"\bintegrations\.([a-z_]+)").expect("valid regex")
                });
                let sql = param.replace_all(postgres, "?$1");
                table.replace_all(&sql, "\"integrations.$1\"").into_owned()
            }
        }
    }

    fn param(self, n: usize) -> String {
        match self {
            Dialect::Postgres => format!("${n}"),
            Dialect::Sqlite => format!("?{n}"),
        }
    }

    /// A placeholder for a value of `column`.
    fn value(self, n: usize, info: &TableInfo, column: &Ident) -> String {
        match self {
            Dialect::Postgres => match info.column(column.as_str()) {
                Some(column) => format!("CAST(${n} AS {})", column.sql_type),
                None => format!("${n}"),
            },
            Dialect::Sqlite => format!("?{n}"),
        }
    }

    /// An expression giving the whole row as JSON text.
    fn row_json(self, info: &TableInfo) -> String {
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
                        format!("'{}', {value}", c.name.replace('\'', "''"))
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
                Some(n) => format!("{} = {}", quote(column.as_str()), self.value(*n, info, column)),
                None => format!("{} IS NULL", quote(column.as_str())),
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
    pub fn upsert(self, table: &TableName, info: &TableInfo, key: &[Ident], columns: &[Ident]) -> String {
        let names: Vec<String> = columns.iter().map(|c| quote(c.as_str())).collect();
        let values: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| self.value(i + 1, info, c))
            .collect();
        let key_names: Vec<String> = key.iter().map(|c| quote(c.as_str())).collect();
        let mut updates: Vec<String> = columns
            .iter()
            .filter(|c| !key.contains(c))
            .map(|c| format!("{0} = excluded.{0}", quote(c.as_str())))
            .collect();
        if updates.is_empty() {
            // Every column is part of the key: a no-op update still returns
            // the row, which `DO NOTHING` would not.
            updates.push(format!("{0} = excluded.{0}", key_names[0]));
        }
        let alias = match self {
            Dialect::Postgres => " AS t",
            Dialect::Sqlite => "",
        };
        format!(
            "INSERT INTO {}{alias} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {} RETURNING {}",
            self.table(table),
            names.join(", "),
            values.join(", "),
            key_names.join(", "),
            updates.join(", "),
            self.row_json(info)
        )
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
            .map(|(i, c)| format!("{} = {}", quote(c.as_str()), self.value(i + 1, info, c)))
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

    /// `$n`/`?n`, for engine queries built at run time.
    pub fn placeholder(self, n: usize) -> String {
        self.param(n)
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

    #[test]
    fn engine_queries_are_rewritten_for_sqlite() {
        assert_eq!(
            Dialect::Sqlite.sql("SELECT * FROM integrations.events WHERE id = $1 AND x = $12"),
            "SELECT * FROM \"integrations.events\" WHERE id = ?1 AND x = ?12"
        );
    }

    #[test]
    fn upserts_cast_on_postgres_and_return_the_row() {
        let table = TableName::parse("hris.employees").unwrap();
        let sql = Dialect::Postgres.upsert(&table, &info(), &[ident("email")], &[ident("email"), ident("id")]);
        assert_eq!(
            sql,
            "INSERT INTO \"hris\".\"employees\" AS t (\"email\", \"id\") VALUES (CAST($1 AS text), CAST($2 AS uuid)) \
             ON CONFLICT (\"email\") DO UPDATE SET \"id\" = excluded.\"id\" RETURNING to_jsonb(t.*)::text"
        );
        let sql = Dialect::Sqlite.upsert(&table, &info(), &[ident("email")], &[ident("email")]);
        assert!(sql.contains("DO UPDATE SET \"email\" = excluded.\"email\""), "{sql}");
        assert!(sql.contains("json_object('id', \"id\", 'email', \"email\", 'meta', json(\"meta\"))"), "{sql}");
    }

    #[test]
    fn null_conditions_use_is_null() {
        let table = TableName::parse("t").unwrap();
        let email = ident("email");
        let id = ident("id");
        let sql = Dialect::Sqlite.find(&table, &info(), &[(&email, Some(1)), (&id, None)]);
        assert!(sql.ends_with("WHERE \"email\" = ?1 AND \"id\" IS NULL LIMIT 1"), "{sql}");
    }
}
