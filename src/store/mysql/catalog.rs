//! A MariaDB/MySQL target table's catalog, from `information_schema`, in
//! busbar's own terms ([`TableInfo`], [`ColumnInfo`], [`Limits`]) so that
//! `check` and conversion read it as they read PostgreSQL's, plus what
//! only MariaDB has ([`MySqlColumn`]: unsigned integers, the character set,
//! case-insensitive and pad-space collations) and the row identity updates
//! read rows back by ([`MySqlTable::identity`]).
//!
//! How each type is read (docs/DATABASES.md, "MariaDB and MySQL targets"):
//! `TINYINT(1)` (and `BOOL`, its alias) is a boolean; the other integers
//! keep their width (8, 16, 24, 32, 64 bits) and sign; `DECIMAL(p, s)` its
//! precision and scale; `FLOAT` is single precision; `DATETIME(n)` is a
//! timestamp without zone and `TIMESTAMP(n)` one with (stored as UTC),
//! each keeping `n` fractional digits; `JSON` (MySQL's type, or MariaDB's
//! `LONGTEXT` with its `json_valid` check) is JSON; MariaDB's `UUID` is a
//! UUID; `CHAR`/`VARCHAR` count characters and the `TEXT` types bytes;
//! `ENUM`, `SET`, `TIME`, `YEAR`, binary and spatial types are passed as
//! text for the server to refuse in strict mode.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sqlx::MySqlConnection;

use crate::compile::ident::{CatalogName, TableName};
use crate::store::StoreError;
use crate::store::catalog::{
    ColumnInfo, ColumnType, Limits, MySqlCharset, MySqlColumn, Storage, TableInfo,
};

/// A target table in MariaDB: its columns and unique keys as busbar reads
/// any table's, and the columns that identify a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MySqlTable {
    pub info: TableInfo,
    /// The primary key's columns in index order, or else those of the
    /// first unique index whose columns are all `NOT NULL`: how `update`
    /// reads back exactly the rows it changed (MariaDB has no `UPDATE …
    /// RETURNING`). Empty when the table has neither.
    pub identity: Vec<CatalogName>,
}

/// One row of the columns query, as read.
struct ColumnRow {
    name: String,
    data_type: String,
    column_type: String,
    nullable: bool,
    has_default: bool,
    max_chars: Option<i64>,
    max_bytes: Option<i64>,
    precision: Option<i64>,
    scale: Option<i64>,
    datetime_precision: Option<i64>,
    charset: Option<String>,
    collation: Option<String>,
}

/// A column of `data_type` (`information_schema.COLUMNS.DATA_TYPE`,
/// lower case) and `column_type` (`COLUMN_TYPE`: `tinyint(1) unsigned`,
/// `varchar(50)`), with its kind, limits and MariaDB storage.
fn column(row: ColumnRow, json: bool) -> ColumnInfo {
    let column_type = row.column_type.to_ascii_lowercase();
    let mut mysql = MySqlColumn {
        unsigned: column_type.contains("unsigned") || column_type.contains("zerofill"),
        charset: match row.charset.as_deref() {
            None | Some("utf8mb4") => MySqlCharset::Utf8mb4,
            Some("utf8mb3" | "utf8") => MySqlCharset::Utf8mb3,
            Some(_) => MySqlCharset::Other,
        },
        case_insensitive: false,
        pad_space: false,
        max_bytes: None,
    };
    if let Some(collation) = row.collation.as_deref() {
        let collation = collation.to_ascii_lowercase();
        // `_ci` (and MariaDB 10.10's `_ai_ci`, also accent-insensitive).
        mysql.case_insensitive = collation.ends_with("_ci");
        // MariaDB's `_nopad_` collations and MySQL 8's `utf8mb4_0900_*`
        // compare trailing spaces; every other collation ignores them.
        mysql.pad_space = !(collation.contains("nopad") || collation.contains("_0900_"));
    }
    let mut limits = Limits::NONE;
    let to_u32 = |n: Option<i64>| n.and_then(|n| u32::try_from(n).ok());
    let ty = match row.data_type.as_str() {
        _ if json => ColumnType::Json,
        "json" => ColumnType::Json,
        "tinyint" if column_type.starts_with("tinyint(1)") => ColumnType::Boolean,
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" => {
            limits.integer_bits = match row.data_type.as_str() {
                "tinyint" => 8,
                "smallint" => 16,
                "mediumint" => 24,
                "int" | "integer" => 32,
                _ => 64,
            };
            ColumnType::Integer
        }
        "decimal" | "numeric" | "dec" | "fixed" => {
            limits.numeric = match (to_u32(row.precision), row.scale) {
                (Some(p), Some(s)) => i32::try_from(s).ok().map(|s| (p, s)),
                _ => None,
            };
            ColumnType::Numeric
        }
        "float" => {
            limits.single_precision = true;
            ColumnType::Float
        }
        "double" | "real" | "double precision" => ColumnType::Float,
        "char" | "varchar" => {
            limits.max_chars = to_u32(row.max_chars);
            limits.padded = row.data_type == "char";
            ColumnType::Text
        }
        "tinytext" | "text" | "mediumtext" | "longtext" => {
            mysql.max_bytes = to_u32(row.max_bytes);
            ColumnType::Text
        }
        "date" => ColumnType::Date,
        "datetime" | "timestamp" => {
            // `DATETIME` without `(n)` keeps whole seconds.
            limits.second_digits = row.datetime_precision.map_or(0, |p| p.clamp(0, 6) as u8);
            if row.data_type == "timestamp" {
                ColumnType::TimestampTz
            } else {
                ColumnType::Timestamp
            }
        }
        "uuid" => ColumnType::Uuid,
        _ => ColumnType::Other,
    };
    let sql_type = match (ty, row.charset.as_deref()) {
        (ColumnType::Text, Some(charset)) => format!("{column_type} CHARACTER SET {charset}"),
        _ => column_type,
    };
    ColumnInfo {
        name: CatalogName::new(row.name),
        ty,
        sql_type,
        cast_type: None,
        limits,
        storage: Storage::MySql(mysql),
        nullable: row.nullable,
        has_default: row.has_default,
    }
}

/// Reads a table's columns, unique indexes and row identity from
/// `information_schema`. A table without a schema is looked up in the
/// connection's current database.
pub async fn read_table(
    connection: &mut MySqlConnection,
    table: &TableName,
) -> Result<MySqlTable, StoreError> {
    let schema = table.schema.as_ref().map(|s| s.as_str().to_owned());
    // Every column is cast to a plain type: `information_schema`'s own
    // types differ between MariaDB and MySQL versions (unsigned or signed,
    // `varchar` or `longtext`), and sqlx decodes each strictly.
    let rows: Vec<ColumnTuple> = sqlx::query_as(
        "SELECT CAST(COLUMN_NAME AS CHAR), CAST(LOWER(DATA_TYPE) AS CHAR), CAST(COLUMN_TYPE AS CHAR),
                CAST(IS_NULLABLE = 'YES' AS SIGNED),
                CAST((COLUMN_DEFAULT IS NOT NULL AND COLUMN_DEFAULT <> 'NULL')
                     OR EXTRA LIKE '%auto_increment%' OR EXTRA LIKE '%GENERATED%'
                     OR EXTRA LIKE '%VIRTUAL%' OR EXTRA LIKE '%PERSISTENT%' AS SIGNED),
                CAST(CHARACTER_MAXIMUM_LENGTH AS SIGNED), CAST(CHARACTER_OCTET_LENGTH AS SIGNED),
                CAST(NUMERIC_PRECISION AS SIGNED), CAST(NUMERIC_SCALE AS SIGNED),
                CAST(DATETIME_PRECISION AS SIGNED),
                CAST(CHARACTER_SET_NAME AS CHAR), CAST(COLLATION_NAME AS CHAR)
           FROM information_schema.COLUMNS
          WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?
          ORDER BY ORDINAL_POSITION",
    )
    .bind(&schema)
    .bind(table.name.as_str())
    .fetch_all(&mut *connection)
    .await?;
    if rows.is_empty() {
        return Err(StoreError::NoTable(table.to_string()));
    }
    let json_columns = json_columns(connection, &schema, table).await?;
    let columns: Vec<ColumnInfo> = rows
        .into_iter()
        .map(|row| {
            let json = json_columns.contains(&row.0);
            column(ColumnRow::from(row), json)
        })
        .collect();

    let index_rows: Vec<(String, Option<String>, i64)> = sqlx::query_as(
        "SELECT CAST(INDEX_NAME AS CHAR), CAST(COLUMN_NAME AS CHAR),
                CAST(SUB_PART IS NOT NULL AS SIGNED)
           FROM information_schema.STATISTICS
          WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND NON_UNIQUE = 0
          ORDER BY INDEX_NAME = 'PRIMARY' DESC, INDEX_NAME, SEQ_IN_INDEX",
    )
    .bind(&schema)
    .bind(table.name.as_str())
    .fetch_all(&mut *connection)
    .await?;
    // A unique index is an upsert key only when it is over whole columns:
    // one over a prefix (`email(10)`) or an expression makes more values
    // equal than the columns do.
    let mut indexes: Vec<(String, Vec<String>, bool)> = Vec::new();
    for (index, column, prefix) in index_rows {
        if indexes.last().is_none_or(|(name, _, _)| *name != index) {
            indexes.push((index.clone(), Vec::new(), true));
        }
        if let Some((_, columns, whole)) = indexes.last_mut() {
            match column {
                Some(column) if prefix == 0 => columns.push(column),
                _ => *whole = false,
            }
        }
    }
    let not_null = |name: &String| {
        columns
            .iter()
            .any(|c| c.name == name.as_str() && !c.nullable)
    };
    let identity = indexes
        .iter()
        .find(|(name, columns, whole)| {
            *whole && (name == "PRIMARY" || columns.iter().all(not_null))
        })
        .map(|(_, columns, _)| columns.iter().map(CatalogName::new).collect())
        .unwrap_or_default();
    let unique = indexes
        .into_iter()
        .filter(|(_, _, whole)| *whole)
        .map(|(_, mut columns, _)| {
            columns.sort();
            columns
        })
        .collect();
    Ok(MySqlTable {
        info: TableInfo { columns, unique },
        identity,
    })
}

type ColumnTuple = (
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
);

impl From<ColumnTuple> for ColumnRow {
    fn from(row: ColumnTuple) -> ColumnRow {
        ColumnRow {
            name: row.0,
            data_type: row.1,
            column_type: row.2,
            nullable: row.3 != 0,
            has_default: row.4 != 0,
            max_chars: row.5,
            max_bytes: row.6,
            precision: row.7,
            scale: row.8,
            datetime_precision: row.9,
            charset: row.10,
            collation: row.11,
        }
    }
}

/// MariaDB's `JSON` columns: `LONGTEXT` with a column check
/// `json_valid(`name`)`, which MariaDB adds for the `JSON` alias. MySQL
/// has a real `JSON` type (its `DATA_TYPE` says so) and no such checks.
async fn json_columns(
    connection: &mut MySqlConnection,
    schema: &Option<String>,
    table: &TableName,
) -> Result<Vec<String>, StoreError> {
    let (version,): (String,) = sqlx::query_as("SELECT CAST(VERSION() AS CHAR)")
        .fetch_one(&mut *connection)
        .await?;
    if !version.contains("MariaDB") {
        return Ok(Vec::new());
    }
    let checks: Vec<(String, String)> = sqlx::query_as(
        "SELECT CAST(CONSTRAINT_NAME AS CHAR), CAST(CHECK_CLAUSE AS CHAR)
           FROM information_schema.CHECK_CONSTRAINTS
          WHERE CONSTRAINT_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?
            AND LEVEL = 'Column'",
    )
    .bind(schema)
    .bind(table.name.as_str())
    .fetch_all(&mut *connection)
    .await?;
    Ok(checks
        .into_iter()
        .filter(|(name, clause)| {
            clause.eq_ignore_ascii_case(&format!("json_valid(`{}`)", name.replace('`', "``")))
        })
        .map(|(name, _)| name)
        .collect())
}

/// Reads each of `tables` from the catalog of the MariaDB/MySQL database at
/// `url` (`check --database-url mysql://…`); `None` for a table that does
/// not exist or that the user has no privilege on. One connection, in a
/// `READ ONLY` transaction that is rolled back: writes nothing.
pub async fn read_tables(
    url: &str,
    tables: &[TableName],
) -> Result<Vec<(TableName, Option<TableInfo>)>, StoreError> {
    use sqlx::Connection as _;
    let mut connection = MySqlConnection::connect_with(&super::connect_options(url)?).await?;
    super::setup(&mut connection).await?;
    sqlx::query("START TRANSACTION READ ONLY")
        .execute(&mut connection)
        .await?;
    let mut found = Vec::with_capacity(tables.len());
    for table in tables {
        match read_table(&mut connection, table).await {
            Ok(table_info) => found.push((table.clone(), Some(table_info.info))),
            Err(StoreError::NoTable(_)) => found.push((table.clone(), None)),
            Err(error) => return Err(error),
        }
    }
    sqlx::query("ROLLBACK").execute(&mut connection).await?;
    connection.close().await.ok();
    Ok(found)
}

/// MariaDB tables' catalogs, cached until [`MySqlCatalog::clear`] (on
/// reload, and when a statement fails because a table changed), as
/// [`crate::store::catalog::Catalog`] caches busbar's own database's.
#[derive(Debug, Default)]
pub struct MySqlCatalog {
    tables: RwLock<HashMap<TableName, Arc<MySqlTable>>>,
}

impl MySqlCatalog {
    /// Forgets every table, so the next use reads the catalog again.
    pub fn clear(&self) {
        self.tables.write().expect("catalog lock").clear();
    }

    /// The table's catalog, from the cache or the database.
    pub async fn table(
        &self,
        connection: &mut MySqlConnection,
        table: &TableName,
    ) -> Result<Arc<MySqlTable>, StoreError> {
        if let Some(info) = self.tables.read().expect("catalog lock").get(table) {
            return Ok(info.clone());
        }
        let info = Arc::new(read_table(connection, table).await?);
        self.tables
            .write()
            .expect("catalog lock")
            .insert(table.clone(), info.clone());
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(data_type: &str, column_type: &str) -> ColumnRow {
        ColumnRow {
            name: "c".into(),
            data_type: data_type.into(),
            column_type: column_type.into(),
            nullable: true,
            has_default: false,
            max_chars: None,
            max_bytes: None,
            precision: None,
            scale: None,
            datetime_precision: None,
            charset: None,
            collation: None,
        }
    }

    fn mysql(column: &ColumnInfo) -> MySqlColumn {
        match column.storage {
            Storage::MySql(mysql) => mysql,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tinyint_1_is_a_boolean_and_other_integers_keep_width_and_sign() {
        assert_eq!(
            column(row("tinyint", "tinyint(1)"), false).ty,
            ColumnType::Boolean
        );
        let tiny = column(row("tinyint", "tinyint(4)"), false);
        assert_eq!(
            (tiny.ty, tiny.limits.integer_bits),
            (ColumnType::Integer, 8)
        );
        let medium = column(row("mediumint", "mediumint(8) unsigned"), false);
        assert_eq!(medium.limits.integer_bits, 24);
        assert!(mysql(&medium).unsigned);
        assert!(mysql(&column(row("int", "int(10) unsigned zerofill"), false)).unsigned);
        assert!(!mysql(&column(row("bigint", "bigint(20)"), false)).unsigned);
    }

    #[test]
    fn text_columns_keep_their_length_character_set_and_collation() {
        let mut varchar = row("varchar", "varchar(5)");
        varchar.max_chars = Some(5);
        varchar.charset = Some("utf8mb3".into());
        varchar.collation = Some("utf8mb3_general_ci".into());
        let varchar = column(varchar, false);
        assert_eq!(varchar.limits.max_chars, Some(5));
        assert_eq!(varchar.sql_type, "varchar(5) CHARACTER SET utf8mb3");
        let storage = mysql(&varchar);
        assert_eq!(storage.charset, MySqlCharset::Utf8mb3);
        assert!(storage.case_insensitive && storage.pad_space);
        let mut binary = row("varchar", "varchar(5)");
        binary.collation = Some("utf8mb4_nopad_bin".into());
        let storage = mysql(&column(binary, false));
        assert!(!storage.case_insensitive && !storage.pad_space);
        let mut text = row("text", "text");
        text.max_bytes = Some(65535);
        assert_eq!(mysql(&column(text, false)).max_bytes, Some(65535));
    }

    #[test]
    fn numbers_dates_and_json_are_read_with_their_limits() {
        let mut decimal = row("decimal", "decimal(12,2)");
        decimal.precision = Some(12);
        decimal.scale = Some(2);
        assert_eq!(column(decimal, false).limits.numeric, Some((12, 2)));
        assert!(column(row("float", "float"), false).limits.single_precision);
        let datetime = column(row("datetime", "datetime"), false);
        assert_eq!(
            (datetime.ty, datetime.limits.second_digits),
            (ColumnType::Timestamp, 0)
        );
        let mut timestamp = row("timestamp", "timestamp(3)");
        timestamp.datetime_precision = Some(3);
        let timestamp = column(timestamp, false);
        assert_eq!(
            (timestamp.ty, timestamp.limits.second_digits),
            (ColumnType::TimestampTz, 3)
        );
        assert_eq!(
            column(row("longtext", "longtext"), true).ty,
            ColumnType::Json
        );
        assert_eq!(column(row("json", "json"), false).ty, ColumnType::Json);
        assert_eq!(column(row("uuid", "uuid"), false).ty, ColumnType::Uuid);
        assert_eq!(
            column(row("enum", "enum('a','b')"), false).ty,
            ColumnType::Other
        );
    }
}
