//! What the target tables look like, read from the database's catalog and
//! cached: column names, their types (for converting values), whether they
//! accept null, and which column sets are unique (for `upsert` keys).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sqlx::Row as _;

use super::{DbTx, StoreError};
use crate::compile::ident::TableName;

/// The kinds of column busbar converts values for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Uuid,
    Text,
    Integer,
    Float,
    Numeric,
    Boolean,
    Date,
    Timestamp,
    TimestampTz,
    Json,
    /// Anything else (enums, `inet`, ...): passed as text for the database
    /// to convert.
    Other,
}

impl ColumnType {
    /// The type from a PostgreSQL `pg_type.typname` (or a SQLite declared
    /// type, upper-cased), following SQLite's affinity rules for the rest.
    pub fn from_name(name: &str) -> ColumnType {
        let name = name.to_ascii_lowercase();
        let base = name.split('(').next().unwrap_or("").trim();
        match base {
            "uuid" => ColumnType::Uuid,
            "text" | "varchar" | "character varying" | "char" | "character" | "bpchar" | "name"
            | "citext" | "clob" => ColumnType::Text,
            "int2" | "int4" | "int8" | "smallint" | "integer" | "int" | "bigint" | "tinyint"
            | "mediumint" | "serial" | "bigserial" => ColumnType::Integer,
            "float4" | "float8" | "real" | "double precision" | "double" | "float" => {
                ColumnType::Float
            }
            "numeric" | "decimal" | "money" => ColumnType::Numeric,
            "bool" | "boolean" => ColumnType::Boolean,
            "date" => ColumnType::Date,
            "timestamp" | "timestamp without time zone" | "datetime" => ColumnType::Timestamp,
            "timestamptz" | "timestamp with time zone" => ColumnType::TimestampTz,
            "json" | "jsonb" => ColumnType::Json,
            // SQLite's affinity rules, for declared types not listed above.
            other if other.contains("int") => ColumnType::Integer,
            other if other.contains("char") || other.contains("clob") || other.contains("text") => {
                ColumnType::Text
            }
            other if other.contains("real") || other.contains("floa") || other.contains("doub") => {
                ColumnType::Float
            }
            "" => ColumnType::Text,
            _ => ColumnType::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Uuid => "uuid",
            ColumnType::Text => "text",
            ColumnType::Integer => "integer",
            ColumnType::Float => "float",
            ColumnType::Numeric => "numeric",
            ColumnType::Boolean => "boolean",
            ColumnType::Date => "date",
            ColumnType::Timestamp => "timestamp",
            ColumnType::TimestampTz => "timestamptz",
            ColumnType::Json => "json",
            ColumnType::Other => "other",
        }
    }
}

/// One column of a target table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    pub ty: ColumnType,
    /// The type as the database spells it, for casts (`character varying(50)`).
    pub sql_type: String,
    pub nullable: bool,
    pub has_default: bool,
}

impl ColumnInfo {
    pub fn new(name: &str, ty: ColumnType, sql_type: &str) -> ColumnInfo {
        ColumnInfo {
            name: name.to_owned(),
            ty,
            sql_type: sql_type.to_owned(),
            nullable: true,
            has_default: false,
        }
    }
}

/// A target table's columns and unique column sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub columns: Vec<ColumnInfo>,
    /// Column sets with a unique index or constraint (sorted names).
    pub unique: Vec<Vec<String>>,
}

impl TableInfo {
    pub fn new(columns: Vec<ColumnInfo>) -> TableInfo {
        TableInfo {
            columns,
            unique: Vec::new(),
        }
    }

    pub fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Whether `columns` (in any order) match a unique index exactly, as
    /// `ON CONFLICT (columns)` requires.
    pub fn has_unique(&self, columns: &[&str]) -> bool {
        let mut wanted: Vec<&str> = columns.to_vec();
        wanted.sort_unstable();
        self.unique
            .iter()
            .any(|set| set.iter().map(String::as_str).eq(wanted.iter().copied()))
    }
}

/// Table information, cached until [`Catalog::clear`] (on reload, and when
/// a statement fails because a table changed).
#[derive(Debug, Default)]
pub struct Catalog {
    tables: RwLock<HashMap<TableName, Arc<TableInfo>>>,
}

impl Catalog {
    pub fn clear(&self) {
        self.tables.write().expect("catalog lock").clear();
    }

    /// The table's information, from the cache or the database.
    pub async fn table(
        &self,
        tx: &mut DbTx,
        table: &TableName,
    ) -> Result<Arc<TableInfo>, StoreError> {
        if let Some(info) = self.tables.read().expect("catalog lock").get(table) {
            return Ok(info.clone());
        }
        let info = Arc::new(read_table(tx, table).await?);
        self.tables
            .write()
            .expect("catalog lock")
            .insert(table.clone(), info.clone());
        Ok(info)
    }
}

/// Reads a table's columns and unique indexes from the catalog.
pub async fn read_table(tx: &mut DbTx, table: &TableName) -> Result<TableInfo, StoreError> {
    let info = match tx {
        DbTx::Postgres(tx) => {
            let schema = table.schema.as_ref().map(|s| s.as_str().to_owned());
            let rows = sqlx::query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), t.typname::text,
                        NOT a.attnotnull, a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> ''
                   FROM pg_attribute a
                   JOIN pg_class c ON c.oid = a.attrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   JOIN pg_type t ON t.oid = a.atttypid
                  WHERE n.nspname = COALESCE($1, current_schema()) AND c.relname = $2
                    AND c.relkind IN ('r', 'p', 'v', 'f')
                    AND a.attnum > 0 AND NOT a.attisdropped
                  ORDER BY a.attnum",
            )
            .bind(&schema)
            .bind(table.name.as_str())
            .fetch_all(&mut **tx)
            .await?;
            let columns = rows
                .iter()
                .map(|row| {
                    let typname: String = row.get(2);
                    let sql_type: String = row.get(1);
                    // Arrays and domains are passed through as text.
                    let ty = if typname.starts_with('_') {
                        ColumnType::Other
                    } else {
                        ColumnType::from_name(&typname)
                    };
                    ColumnInfo {
                        name: row.get(0),
                        ty,
                        sql_type,
                        nullable: row.get(3),
                        has_default: row.get(4),
                    }
                })
                .collect();
            let unique_rows = sqlx::query(
                "SELECT array_agg(a.attname::text ORDER BY a.attname)
                   FROM pg_index i
                   JOIN pg_class c ON c.oid = i.indrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)
                  WHERE n.nspname = COALESCE($1, current_schema()) AND c.relname = $2
                    AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
                  GROUP BY i.indexrelid",
            )
            .bind(&schema)
            .bind(table.name.as_str())
            .fetch_all(&mut **tx)
            .await?;
            TableInfo {
                columns,
                unique: unique_rows.iter().map(|row| row.get(0)).collect(),
            }
        }
        DbTx::Sqlite(tx) => {
            let name = match &table.schema {
                Some(schema) => format!("{schema}.{}", table.name),
                None => table.name.to_string(),
            };
            let rows = sqlx::query(
                "SELECT name, type, \"notnull\", dflt_value IS NOT NULL, pk FROM pragma_table_info(?1) ORDER BY cid",
            )
            .bind(&name)
            .fetch_all(&mut **tx)
            .await?;
            let pk_count = rows.iter().filter(|r| r.get::<i64, _>(4) > 0).count();
            let columns = rows
                .iter()
                .map(|row| {
                    let declared: String = row.get(1);
                    let is_pk = row.get::<i64, _>(4) > 0;
                    let integer_pk =
                        is_pk && pk_count == 1 && declared.eq_ignore_ascii_case("integer");
                    ColumnInfo {
                        name: row.get(0),
                        ty: ColumnType::from_name(&declared),
                        sql_type: declared,
                        nullable: !row.get::<bool, _>(2),
                        has_default: row.get::<bool, _>(3) || integer_pk,
                    }
                })
                .collect();
            let mut unique = Vec::new();
            let indexes = sqlx::query(
                "SELECT name FROM pragma_index_list(?1) WHERE \"unique\" = 1 AND partial = 0",
            )
            .bind(&name)
            .fetch_all(&mut **tx)
            .await?;
            for index in indexes {
                let index_name: String = index.get(0);
                let mut columns: Vec<String> =
                    sqlx::query("SELECT name FROM pragma_index_info(?1)")
                        .bind(&index_name)
                        .fetch_all(&mut **tx)
                        .await?
                        .iter()
                        .filter_map(|r| r.try_get::<String, _>(0).ok())
                        .collect();
                columns.sort();
                unique.push(columns);
            }
            if pk_count > 0 {
                let mut pk: Vec<String> = rows
                    .iter()
                    .filter(|r| r.get::<i64, _>(4) > 0)
                    .map(|r| r.get::<String, _>(0))
                    .collect();
                pk.sort();
                unique.push(pk);
            }
            TableInfo { columns, unique }
        }
    };
    if info.columns.is_empty() {
        return Err(StoreError::NoTable(table.to_string()));
    }
    Ok(info)
}
