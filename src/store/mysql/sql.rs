//! The SQL of the steps on a MariaDB/MySQL target table.
//!
//! MariaDB's placeholders are positional (`?`), so a statement is built
//! together with its values ([`Statement`]): each value is pushed where
//! its `?` is written, and the two cannot drift apart. Names go through
//! [`backquote`] only (`hris.employees` → `` `hris`.`employees` ``: a
//! product's schema is a MariaDB database); values are always bound. A
//! `DECIMAL` value is compared as `CAST(? AS DECIMAL(p, s))` (text against
//! a decimal column is compared as a double, which is not exact), and a
//! `FLOAT` one as `CAST(? AS FLOAT)` (a double is not equal to the single
//! the column holds).
//!
//! Rows come back as one JSON text, `JSON_OBJECT('name', `name`, …)` over
//! the catalog's columns, turned into busbar's row shape by
//! [`normalize_row`] (booleans as booleans, times as RFC 3339).

use serde_json::{Map, Value};

use super::catalog::MySqlTable;
use super::convert::MySqlValue;
use crate::compile::ident::{CatalogName, Ident, SqlName, TableName, backquote};
use crate::mapping::Row;
use crate::store::StoreError;
use crate::store::catalog::{ColumnInfo, ColumnType, TableInfo};

/// A statement's text and the values of its `?`s, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Statement {
    /// The SQL, with a `?` for each value.
    pub text: String,
    /// The values to bind, in the order of their `?`s.
    pub values: Vec<MySqlValue>,
}

impl Statement {
    fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    /// A `?` for `value`, cast where comparing the bound value with the
    /// column would not be exact: text against a `DECIMAL` is compared as
    /// a double, and a double against a `FLOAT` column as the single
    /// widened (`0.1` never equals a `FLOAT` holding 0.1).
    fn bind(&mut self, column: Option<&ColumnInfo>, value: MySqlValue) {
        match column.map(|c| (c.ty, c.limits.numeric, c.limits.single_precision)) {
            Some((ColumnType::Numeric, Some((precision, scale)), _)) if scale >= 0 => {
                self.text
                    .push_str(&format!("CAST(? AS DECIMAL({precision}, {scale}))"));
            }
            Some((ColumnType::Float, _, true)) => self.text.push_str("CAST(? AS FLOAT)"),
            _ => self.text.push('?'),
        }
        self.values.push(value);
    }
}

/// A target table's name: `` `schema`.`table` ``, or `` `table` `` in the
/// connection's database.
pub fn table(table: &TableName) -> String {
    match &table.schema {
        Some(schema) => format!("{}.{}", backquote(schema), backquote(&table.name)),
        None => backquote(&table.name),
    }
}

/// A column's name as a string literal (a `JSON_OBJECT` key): plain
/// names as they are; any other as a hex literal in `utf8mb4`, which no
/// `sql_mode` reads differently.
fn literal(name: &CatalogName) -> String {
    let text = name.name();
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ' ')
    {
        format!("'{text}'")
    } else {
        let hex: String = text.bytes().map(|b| format!("{b:02X}")).collect();
        format!("_utf8mb4 X'{hex}'")
    }
}

/// `JSON_OBJECT('a', `a`, …)` over every column of the table.
pub fn row_json(info: &TableInfo) -> String {
    let pairs: Vec<String> = info
        .columns
        .iter()
        .map(|c| format!("{}, {}", literal(&c.name), backquote(&c.name)))
        .collect();
    format!("JSON_OBJECT({})", pairs.join(", "))
}

/// `a = ? AND b IS NULL`; `TRUE` for no condition. A null value is `IS
/// NULL` and binds nothing.
fn conditions(statement: &mut Statement, info: &TableInfo, filter: &[(&Ident, MySqlValue)]) {
    if filter.is_empty() {
        statement.push("TRUE");
        return;
    }
    for (i, (column, value)) in filter.iter().enumerate() {
        if i > 0 {
            statement.push(" AND ");
        }
        statement.push(&backquote(*column));
        if *value == MySqlValue::Null {
            statement.push(" IS NULL");
        } else {
            statement.push(" = ");
            statement.bind(info.column(column.as_str()), value.clone());
        }
    }
}

/// `SELECT <row> FROM table WHERE … LIMIT n`, optionally `FOR UPDATE`.
pub fn find(
    target: &TableName,
    info: &TableInfo,
    filter: &[(&Ident, MySqlValue)],
    limit: Option<usize>,
    lock: bool,
) -> Statement {
    let mut statement = Statement::default();
    statement.push(&format!(
        "SELECT {} FROM {} WHERE ",
        row_json(info),
        table(target)
    ));
    conditions(&mut statement, info, filter);
    if let Some(limit) = limit {
        statement.push(&format!(" LIMIT {limit}"));
    }
    if lock {
        statement.push(" FOR UPDATE");
    }
    statement
}

/// `INSERT INTO table (…) VALUES (…) ON DUPLICATE KEY UPDATE` every
/// column not in `key` (`c = VALUES(c)`; `VALUES()` reads on MariaDB and
/// MySQL alike). When every column is in the key, a no-op assignment of
/// the first makes a conflict an update rather than an error. The key
/// columns keep the row's spelling, as PostgreSQL's `ON CONFLICT` does:
/// under a case-insensitive collation `'ada@x'` finds the row stored as
/// `'Ada@x'` and leaves it so.
pub fn upsert(
    target: &TableName,
    info: &TableInfo,
    key: &[Ident],
    values: &[(&Ident, MySqlValue)],
) -> Statement {
    let (columns, row) = one_row(values);
    upsert_rows(target, info, key, &columns, std::slice::from_ref(&row))
}

/// [`upsert`] of many rows of the same columns in one statement (a lockstep
/// batch, [`crate::store::batch`]). MariaDB applies the rows in order, so a
/// key given twice is inserted, then updated, as one upsert after another
/// would.
pub fn upsert_rows(
    target: &TableName,
    info: &TableInfo,
    key: &[Ident],
    columns: &[&Ident],
    rows: &[Vec<MySqlValue>],
) -> Statement {
    let mut statement = insert_rows(target, info, columns, rows);
    let mut updates: Vec<String> = columns
        .iter()
        .filter(|c| !key.contains(c))
        .map(|c| format!("{0} = VALUES({0})", backquote(*c)))
        .collect();
    if updates.is_empty()
        && let Some(first) = key.first()
    {
        updates.push(format!("{0} = {0}", backquote(first)));
    }
    statement.push(&format!(" ON DUPLICATE KEY UPDATE {}", updates.join(", ")));
    statement
}

/// `INSERT INTO table (…) VALUES (…)`.
pub fn insert(target: &TableName, info: &TableInfo, values: &[(&Ident, MySqlValue)]) -> Statement {
    let (columns, row) = one_row(values);
    insert_rows(target, info, &columns, std::slice::from_ref(&row))
}

/// A step's `(column, value)` pairs as the columns and one row of values.
fn one_row<'a>(values: &[(&'a Ident, MySqlValue)]) -> (Vec<&'a Ident>, Vec<MySqlValue>) {
    values.iter().map(|(c, v)| (*c, v.clone())).unzip()
}

/// `INSERT INTO table (…) VALUES (…), (…)`: each row's values in the order
/// of `columns`.
fn insert_rows(
    target: &TableName,
    info: &TableInfo,
    columns: &[&Ident],
    rows: &[Vec<MySqlValue>],
) -> Statement {
    let names: Vec<String> = columns.iter().map(|c| backquote(*c)).collect();
    let mut statement = Statement::default();
    statement.push(&format!(
        "INSERT INTO {} ({}) VALUES ",
        table(target),
        names.join(", ")
    ));
    for (r, row) in rows.iter().enumerate() {
        statement.push(if r > 0 { ", (" } else { "(" });
        for (i, (column, value)) in columns.iter().zip(row).enumerate() {
            if i > 0 {
                statement.push(", ");
            }
            statement.bind(info.column(column.as_str()), value.clone());
        }
        statement.push(")");
    }
    statement
}

/// `SELECT <row> FROM table WHERE (a, b) IN ((?, ?), (?, ?))` (`a IN (?,
/// ?)` for one column): the rows whose `columns` equal one of `rows`, each
/// compared as `a = ? AND b = ?` would be. Which lookup a row answers is
/// for the caller to tell.
pub fn find_in(
    target: &TableName,
    info: &TableInfo,
    columns: &[&Ident],
    rows: &[Vec<MySqlValue>],
) -> Statement {
    let names: Vec<String> = columns.iter().map(|c| backquote(*c)).collect();
    let mut statement = Statement::default();
    let (open, close) = if columns.len() == 1 {
        ("", "")
    } else {
        ("(", ")")
    };
    statement.push(&format!(
        "SELECT {} FROM {} WHERE {open}{}{close} IN (",
        row_json(info),
        table(target),
        names.join(", ")
    ));
    for (r, row) in rows.iter().enumerate() {
        if r > 0 {
            statement.push(", ");
        }
        statement.push(open);
        for (i, (column, value)) in columns.iter().zip(row).enumerate() {
            if i > 0 {
                statement.push(", ");
            }
            statement.bind(info.column(column.as_str()), value.clone());
        }
        statement.push(close);
    }
    statement.push(")");
    statement
}

/// `(SELECT 0, <row> FROM table WHERE … LIMIT 1) UNION ALL (SELECT 1, …)`:
/// at most one row per lookup, numbered by the lookup's place in
/// `lookups`, all in one statement. Each lookup compares exactly as
/// [`find`] does (its collation, its casts, `IS NULL`), so a lockstep
/// batch finds what one step after another would.
pub fn find_each(
    target: &TableName,
    info: &TableInfo,
    lookups: &[Vec<(&Ident, MySqlValue)>],
) -> Statement {
    let row = row_json(info);
    let name = table(target);
    let mut statement = Statement::default();
    for (i, filter) in lookups.iter().enumerate() {
        if i > 0 {
            statement.push(" UNION ALL ");
        }
        statement.push(&format!("(SELECT {i}, {row} FROM {name} WHERE "));
        conditions(&mut statement, info, filter);
        statement.push(" LIMIT 1)");
    }
    statement
}

/// `UPDATE table SET … WHERE …`.
pub fn update(
    target: &TableName,
    info: &TableInfo,
    set: &[(&Ident, MySqlValue)],
    filter: &[(&Ident, MySqlValue)],
) -> Statement {
    let mut statement = Statement::default();
    statement.push(&format!("UPDATE {} SET ", table(target)));
    for (i, (column, value)) in set.iter().enumerate() {
        if i > 0 {
            statement.push(", ");
        }
        statement.push(&format!("{} = ", backquote(*column)));
        statement.bind(info.column(column.as_str()), value.clone());
    }
    statement.push(" WHERE ");
    conditions(&mut statement, info, filter);
    statement
}

/// `DELETE FROM table WHERE …`.
pub fn delete(target: &TableName, info: &TableInfo, filter: &[(&Ident, MySqlValue)]) -> Statement {
    let mut statement = Statement::default();
    statement.push(&format!("DELETE FROM {} WHERE ", table(target)));
    conditions(&mut statement, info, filter);
    statement
}

/// `SELECT JSON_OBJECT(<identity>) FROM table WHERE … FOR UPDATE`: the
/// rows an update will change, locked so they still match when it runs.
pub fn identities(
    target: &TableName,
    table_info: &MySqlTable,
    filter: &[(&Ident, MySqlValue)],
) -> Statement {
    let pairs: Vec<String> = table_info
        .identity
        .iter()
        .map(|c| format!("{}, {}", literal(c), backquote(c)))
        .collect();
    let mut statement = Statement::default();
    statement.push(&format!(
        "SELECT JSON_OBJECT({}) FROM {} WHERE ",
        pairs.join(", "),
        table(target)
    ));
    conditions(&mut statement, &table_info.info, filter);
    statement.push(" FOR UPDATE");
    statement
}

/// `… WHERE (a = ? AND b = ?) OR (…)`: rows by their identities, each a
/// list of `(column, value)`.
fn by_identity(
    statement: &mut Statement,
    info: &TableInfo,
    rows: &[Vec<(CatalogName, MySqlValue)>],
) {
    if rows.is_empty() {
        statement.push("FALSE");
        return;
    }
    for (i, row) in rows.iter().enumerate() {
        statement.push(if i > 0 { " OR (" } else { "(" });
        for (j, (column, value)) in row.iter().enumerate() {
            if j > 0 {
                statement.push(" AND ");
            }
            statement.push(&backquote(column));
            statement.push(" = ");
            statement.bind(info.column(column.as_str()), value.clone());
        }
        statement.push(")");
    }
}

/// `UPDATE table SET … WHERE <identities>`.
pub fn update_rows(
    target: &TableName,
    info: &TableInfo,
    set: &[(&Ident, MySqlValue)],
    rows: &[Vec<(CatalogName, MySqlValue)>],
) -> Statement {
    let mut statement = Statement::default();
    statement.push(&format!("UPDATE {} SET ", table(target)));
    for (i, (column, value)) in set.iter().enumerate() {
        if i > 0 {
            statement.push(", ");
        }
        statement.push(&format!("{} = ", backquote(*column)));
        statement.bind(info.column(column.as_str()), value.clone());
    }
    statement.push(" WHERE ");
    by_identity(&mut statement, info, rows);
    statement
}

/// `SELECT <row> FROM table WHERE <identities>`.
pub fn rows_by_identity(
    target: &TableName,
    info: &TableInfo,
    rows: &[Vec<(CatalogName, MySqlValue)>],
) -> Statement {
    let mut statement = Statement::default();
    statement.push(&format!(
        "SELECT {} FROM {} WHERE ",
        row_json(info),
        table(target)
    ));
    by_identity(&mut statement, info, rows);
    statement
}

/// A row as `JSON_OBJECT` gave it, in the shape busbar's rows have on
/// PostgreSQL: a `TINYINT(1)` as `true`/`false` (MariaDB gives 1/0), a
/// `DATETIME` as `2026-03-01T10:00:00` and a `TIMESTAMP` (UTC in busbar's
/// sessions) as `2026-03-01T10:00:00+00:00` (MariaDB writes a space and
/// no zone). Other values are as MariaDB wrote them (numbers with every
/// digit, `DECIMAL`s with their scale).
pub fn normalize_row(info: &TableInfo, text: &str) -> Result<Row, StoreError> {
    let mut columns = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(columns)) => columns,
        Ok(other) => Map::from_iter([("value".to_owned(), other)]),
        Err(error) => {
            return Err(StoreError::Invalid(format!(
                "cannot read a row MariaDB returned: {error}"
            )));
        }
    };
    for column in &info.columns {
        let Some(value) = columns.get_mut(column.name.as_str()) else {
            continue;
        };
        match (column.ty, &*value) {
            (ColumnType::Boolean, Value::Number(n)) => {
                *value = Value::Bool(!crate::decimal::Decimal::of(n).is_zero());
            }
            (ColumnType::Timestamp, Value::String(s)) => {
                *value = Value::String(s.replacen(' ', "T", 1));
            }
            (ColumnType::TimestampTz, Value::String(s)) => {
                *value = Value::String(format!("{}+00:00", s.replacen(' ', "T", 1)));
            }
            _ => {}
        }
    }
    Ok(Row::new(columns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::catalog::{Limits, MySqlColumn, Storage};

    fn ident(s: &str) -> Ident {
        Ident::parse(s).unwrap()
    }

    fn info() -> TableInfo {
        let mysql = |ty, sql_type: &str, limits| ColumnInfo {
            limits,
            storage: Storage::MySql(MySqlColumn::default()),
            cast_type: None,
            ..ColumnInfo::new("c", ty, sql_type)
        };
        let mut id = mysql(ColumnType::Integer, "bigint", Limits::NONE);
        id.name = CatalogName::new("id");
        let mut email = mysql(ColumnType::Text, "varchar(100)", Limits::NONE);
        email.name = CatalogName::new("email");
        let mut salary = mysql(
            ColumnType::Numeric,
            "decimal(12,2)",
            Limits {
                numeric: Some((12, 2)),
                ..Limits::NONE
            },
        );
        salary.name = CatalogName::new("salary");
        let mut active = mysql(ColumnType::Boolean, "tinyint(1)", Limits::NONE);
        active.name = CatalogName::new("active");
        let mut hired = mysql(ColumnType::Timestamp, "datetime", Limits::NONE);
        hired.name = CatalogName::new("hired_at");
        let mut seen = mysql(ColumnType::TimestampTz, "timestamp", Limits::NONE);
        seen.name = CatalogName::new("seen_at");
        TableInfo::new(vec![id, email, salary, active, hired, seen])
    }

    #[test]
    fn schemas_are_databases_and_names_are_backquoted() {
        assert_eq!(
            table(&TableName::parse("hris.employees").unwrap()),
            "`hris`.`employees`"
        );
        assert_eq!(
            table(&TableName::parse("employees").unwrap()),
            "`employees`"
        );
        assert_eq!(literal(&CatalogName::new("first name")), "'first name'");
        assert_eq!(
            literal(&CatalogName::new("it's\\")),
            "_utf8mb4 X'69742773'".replace("73'", "735C'")
        );
    }

    #[test]
    fn statements_bind_values_in_the_order_of_their_placeholders() {
        let info = info();
        let (email, salary, id) = (ident("email"), ident("salary"), ident("id"));
        let statement = update(
            &TableName::parse("hris.employees").unwrap(),
            &info,
            &[(&salary, MySqlValue::Text("10.50".into()))],
            &[
                (&email, MySqlValue::Text("ada@x".into())),
                (&id, MySqlValue::Null),
            ],
        );
        assert_eq!(
            statement.text,
            "UPDATE `hris`.`employees` SET `salary` = CAST(? AS DECIMAL(12, 2)) WHERE `email` = ? AND `id` IS NULL"
        );
        assert_eq!(
            statement.values,
            vec![
                MySqlValue::Text("10.50".into()),
                MySqlValue::Text("ada@x".into())
            ]
        );
    }

    #[test]
    fn upserts_update_every_column_but_the_key() {
        let info = info();
        let (email, salary) = (ident("email"), ident("salary"));
        let table_name = TableName::parse("employees").unwrap();
        let statement = upsert(
            &table_name,
            &info,
            std::slice::from_ref(&email),
            &[
                (&email, MySqlValue::Text("ada@x".into())),
                (&salary, MySqlValue::Text("1".into())),
            ],
        );
        assert_eq!(
            statement.text,
            "INSERT INTO `employees` (`email`, `salary`) VALUES (?, CAST(? AS DECIMAL(12, 2))) ON DUPLICATE KEY UPDATE `salary` = VALUES(`salary`)"
        );
        let only_key = upsert(
            &table_name,
            &info,
            std::slice::from_ref(&email),
            &[(&email, MySqlValue::Text("ada@x".into()))],
        );
        assert!(
            only_key
                .text
                .ends_with("ON DUPLICATE KEY UPDATE `email` = `email`")
        );
    }

    #[test]
    fn many_rows_are_one_statement_and_each_lookup_is_numbered() {
        let info = info();
        let (email, salary) = (ident("email"), ident("salary"));
        let table_name = TableName::parse("employees").unwrap();
        let text = |s: &str| MySqlValue::Text(s.into());
        let statement = upsert_rows(
            &table_name,
            &info,
            std::slice::from_ref(&email),
            &[&email, &salary],
            &[vec![text("a@x"), text("1")], vec![text("b@x"), text("2")]],
        );
        assert_eq!(
            statement.text,
            "INSERT INTO `employees` (`email`, `salary`) VALUES (?, CAST(? AS DECIMAL(12, 2))), (?, CAST(? AS DECIMAL(12, 2))) ON DUPLICATE KEY UPDATE `salary` = VALUES(`salary`)"
        );
        assert_eq!(
            statement.values,
            vec![text("a@x"), text("1"), text("b@x"), text("2")]
        );
        let found = find_each(
            &table_name,
            &info,
            &[
                vec![(&email, text("a@x"))],
                vec![(&email, MySqlValue::Null)],
            ],
        );
        assert!(
            found.text.starts_with("(SELECT 0, JSON_OBJECT("),
            "{}",
            found.text
        );
        assert!(
            found.text.ends_with(
                "WHERE `email` = ? LIMIT 1) UNION ALL (SELECT 1, JSON_OBJECT('id', `id`, 'email', `email`, 'salary', `salary`, 'active', `active`, 'hired_at', `hired_at`, 'seen_at', `seen_at`) FROM `employees` WHERE `email` IS NULL LIMIT 1)"
            ),
            "{}",
            found.text
        );
        assert_eq!(found.values, vec![text("a@x")]);
        let keyed = find_in(
            &table_name,
            &info,
            &[&email, &salary],
            &[vec![text("a@x"), text("1")], vec![text("b@x"), text("2")]],
        );
        assert!(
            keyed.text.ends_with(
                "FROM `employees` WHERE (`email`, `salary`) IN ((?, CAST(? AS DECIMAL(12, 2))), (?, CAST(? AS DECIMAL(12, 2))))"
            ),
            "{}",
            keyed.text
        );
        let one = find_in(&table_name, &info, &[&email], &[vec![text("a@x")]]);
        assert!(one.text.ends_with("WHERE `email` IN (?)"), "{}", one.text);
    }

    #[test]
    fn rows_read_as_on_postgres() {
        let row = normalize_row(
            &info(),
            r#"{"id": 18446744073709551615, "email": "a", "salary": 12.50, "active": 1, "hired_at": "2026-03-01 10:00:00.123", "seen_at": "2026-03-01 10:00:00"}"#,
        )
        .unwrap();
        let json = serde_json::to_string(&row.columns).unwrap();
        assert_eq!(
            json,
            r#"{"id":18446744073709551615,"email":"a","salary":12.50,"active":true,"hired_at":"2026-03-01T10:00:00.123","seen_at":"2026-03-01T10:00:00+00:00"}"#
        );
    }
}
