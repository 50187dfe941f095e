//! What the target tables look like, read from the database's catalog and
//! cached: column names, their types and limits (lengths, ranges,
//! precisions: for converting values without truncating or rounding them),
//! whether they accept null, and which column sets are unique (for
//! `upsert` keys).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sqlx::Row as _;

use super::{DbTx, StoreError};
use crate::compile::ident::{CatalogName, SqlType, SqlTypeError, TableName};

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
        let name = without_arguments(&name.to_ascii_lowercase());
        let base = name.as_str();
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

/// What a column holds beyond its kind: lengths, ranges and precisions.
/// Read from the catalog on PostgreSQL ([`Limits::postgres`]) and from the
/// declared type on SQLite ([`Limits::declared`]), which stores any value
/// in any column and so leaves the limits to busbar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Text: at most this many characters (`varchar(n)`, `char(n)`).
    pub max_chars: Option<u32>,
    /// Text: `char(n)`, which pads shorter values with spaces to `n`.
    pub padded: bool,
    /// Integer: the width in bits, 16 (`smallint`), 32 (`integer`) or 64.
    pub integer_bits: u8,
    /// Float: a 32-bit `real` rather than a 64-bit `double precision`.
    pub single_precision: bool,
    /// Numeric: `numeric(precision, scale)`; `None` when unconstrained.
    pub numeric: Option<(u32, i32)>,
    /// Timestamp: the digits of fractional seconds kept (0 to 6).
    pub second_digits: u8,
}

impl Limits {
    /// No limit beyond the kind's own (`text`, `bigint`, `numeric`,
    /// microseconds).
    pub const NONE: Limits = Limits {
        max_chars: None,
        padded: false,
        integer_bits: 64,
        single_precision: false,
        numeric: None,
        second_digits: 6,
    };

    /// The limits a declared type states, as PostgreSQL reads it:
    /// `VARCHAR(100)`, `CHAR(3)`, `NUMERIC(12, 2)`, `SMALLINT`, `INTEGER`,
    /// `REAL`, `TIMESTAMP(3)`. Also reads PostgreSQL's own spelling
    /// (`character varying(100)`, `timestamp(3) with time zone`).
    pub fn declared(declared: &str) -> Limits {
        let lower = declared.to_ascii_lowercase();
        let base = without_arguments(&lower);
        let arguments: Vec<i64> = lower
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(inside, _)| {
                inside
                    .split(',')
                    .filter_map(|a| a.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let first = arguments.first().copied();
        let mut limits = Limits::NONE;
        match ColumnType::from_name(&lower) {
            ColumnType::Text => {
                let fixed = matches!(
                    base.as_str(),
                    "char" | "character" | "nchar" | "native character"
                );
                limits.max_chars = first
                    .or(if fixed { Some(1) } else { None })
                    .and_then(|n| u32::try_from(n).ok());
                limits.padded = fixed;
            }
            ColumnType::Integer => {
                limits.integer_bits = match base.as_str() {
                    "smallint" | "int2" | "smallserial" | "serial2" => 16,
                    "integer" | "int" | "int4" | "serial" | "serial4" => 32,
                    _ => 64,
                };
            }
            ColumnType::Float => {
                limits.single_precision = matches!(base.as_str(), "real" | "float4")
                    || (base == "float" && first.is_some_and(|p| p <= 24));
            }
            ColumnType::Numeric if base != "money" => {
                limits.numeric = first.and_then(|p| {
                    let scale = arguments.get(1).copied().unwrap_or(0);
                    Some((u32::try_from(p).ok()?, i32::try_from(scale).ok()?))
                });
            }
            ColumnType::Timestamp | ColumnType::TimestampTz => {
                if let Some(p) = first {
                    limits.second_digits = p.clamp(0, 6) as u8;
                }
            }
            _ => {}
        }
        limits
    }

    /// The limits PostgreSQL's catalog states for a column of base type
    /// `typname`: the character length and datetime precision as
    /// `information_schema` computes them, and the type modifier (for
    /// `numeric(p, s)`: `information_schema.columns` misreports a negative
    /// scale).
    pub fn postgres(
        typname: &str,
        max_chars: Option<i32>,
        datetime_precision: Option<i32>,
        typmod: i32,
    ) -> Limits {
        let mut limits = Limits::NONE;
        match typname {
            "varchar" | "bpchar" => {
                limits.max_chars = max_chars.and_then(|n| u32::try_from(n).ok());
                limits.padded = typname == "bpchar" && limits.max_chars.is_some();
            }
            // PostgreSQL's internal one-byte `"char"`: a cast cuts the rest.
            "char" => limits.max_chars = Some(1),
            "int2" => limits.integer_bits = 16,
            "int4" => limits.integer_bits = 32,
            "float4" => limits.single_precision = true,
            // `numeric(p, s)` is stored as ((p << 16) | s) + 4, the scale
            // as an 11-bit signed number (negative since PostgreSQL 15).
            "numeric" if typmod >= 4 => {
                let modifier = typmod - 4;
                let precision = ((modifier >> 16) & 0xFFFF) as u32;
                let scale = ((modifier & 0x7FF) ^ 1024) - 1024;
                limits.numeric = Some((precision, scale));
            }
            "timestamp" | "timestamptz" => {
                if let Some(p) = datetime_precision {
                    limits.second_digits = p.clamp(0, 6) as u8;
                }
            }
            _ => {}
        }
        limits
    }
}

/// How SQLite stores a column's values: its type affinity, from the
/// declared type by SQLite's rules. A column with NUMERIC affinity turns
/// any text that looks like a number into a 64-bit integer or a double.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affinity {
    Integer,
    Text,
    Blob,
    Real,
    Numeric,
}

impl Affinity {
    /// SQLite's rules (<https://sqlite.org/datatype3.html#determination_of_column_affinity>).
    pub fn of(declared: &str) -> Affinity {
        let declared = declared.to_ascii_uppercase();
        if declared.contains("INT") {
            Affinity::Integer
        } else if ["CHAR", "CLOB", "TEXT"]
            .iter()
            .any(|t| declared.contains(t))
        {
            Affinity::Text
        } else if declared.contains("BLOB") || declared.trim().is_empty() {
            Affinity::Blob
        } else if ["REAL", "FLOA", "DOUB"]
            .iter()
            .any(|t| declared.contains(t))
        {
            Affinity::Real
        } else {
            Affinity::Numeric
        }
    }

    /// Whether SQLite turns a number bound as text into an integer or a
    /// double in such a column.
    pub fn converts_numbers(self) -> bool {
        matches!(self, Affinity::Integer | Affinity::Real | Affinity::Numeric)
    }
}

/// Which database a column lives in, where that changes what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    Postgres,
    Sqlite(Affinity),
    /// A MariaDB or MySQL target table (`store::mysql`): what its catalog
    /// says beyond the kind and limits.
    MySql(MySqlColumn),
}

/// What a MariaDB/MySQL column holds beyond its kind and [`Limits`]: the
/// traps `store::mysql::convert` checks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MySqlColumn {
    /// An `UNSIGNED` integer: 0 up to twice the signed maximum, plus one.
    pub unsigned: bool,
    /// The column's character set, for text.
    pub charset: MySqlCharset,
    /// A case-insensitive collation (`utf8mb4_general_ci`): `'Ada@x'` and
    /// `'ada@x'` are equal in comparisons and unique keys.
    pub case_insensitive: bool,
    /// A `PAD SPACE` collation (every `_ci`/`_bin` collation before the
    /// `_nopad_` ones): trailing spaces do not count in comparisons and
    /// unique keys, so `'abc'` and `'abc '` are equal.
    pub pad_space: bool,
    /// The `TEXT` types' limit, in bytes (`TEXT`: 65,535), which
    /// `utf8mb4` text reaches in a quarter as many characters.
    pub max_bytes: Option<u32>,
}

/// The character sets that change what text a MariaDB column can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MySqlCharset {
    /// `utf8mb4`, or no character set (not a text column).
    #[default]
    Utf8mb4,
    /// `utf8mb3` (MariaDB's and MySQL's old `utf8`): at most 3 bytes a
    /// character, so no emoji or other characters beyond U+FFFF.
    Utf8mb3,
    /// Any other (`latin1`, `ascii`, ...): the server, in strict mode,
    /// refuses a character it has no code for.
    Other,
}

/// One column of a target table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    /// The name as the catalog has it (quoted, never parsed, when it goes
    /// into SQL).
    pub name: CatalogName,
    pub ty: ColumnType,
    /// The type as the database spells it, for messages
    /// (`character varying(50)`).
    pub sql_type: String,
    /// The type values are cast to on PostgreSQL; `None` on SQLite, which
    /// binds native values. Without the modifier where an explicit cast to
    /// it would truncate or round (`CAST('…' AS varchar(50))` cuts the text
    /// at 50 characters): busbar checks the limits itself, and assigning to
    /// the column checks them again.
    pub cast_type: Option<SqlType>,
    /// Lengths, ranges and precisions.
    pub limits: Limits,
    pub storage: Storage,
    pub nullable: bool,
    pub has_default: bool,
}

impl ColumnInfo {
    /// A PostgreSQL-like column of `sql_type`, its limits read from the
    /// type's text, cast to `sql_type` when that is a type name
    /// ([`SqlType::parse`]).
    pub fn new(name: &str, ty: ColumnType, sql_type: &str) -> ColumnInfo {
        ColumnInfo {
            name: CatalogName::new(name),
            ty,
            sql_type: sql_type.to_owned(),
            cast_type: SqlType::parse(sql_type).ok(),
            limits: Limits::declared(sql_type),
            storage: Storage::Postgres,
            nullable: true,
            has_default: false,
        }
    }
}

/// `timestamp(3) with time zone` → `timestamp with time zone`.
fn without_arguments(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut depth = 0usize;
    for c in name.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The type PostgreSQL casts a value of base type `typname` to: without
/// the modifier for the types whose explicit casts truncate or round
/// (`bpchar`, not `character`, which means `character(1)`).
fn postgres_cast_type(typname: &str, sql_type: &str) -> Result<SqlType, SqlTypeError> {
    SqlType::parse(match typname {
        "varchar" | "bpchar" | "numeric" | "timestamp" | "timestamptz" => typname,
        "bit" | "varbit" => "varbit",
        _ => sql_type,
    })
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
            // Domains are read as their base type with the domain's
            // modifier (`information_schema._pg_truetypid` / `_pg_truetypmod`),
            // and lengths and precisions as `information_schema` computes
            // them, without its per-privilege filtering.
            let rows = sqlx::query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), b.typname::text,
                        NOT a.attnotnull, a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '',
                        information_schema._pg_char_max_length(b.oid, m.typmod),
                        information_schema._pg_datetime_precision(b.oid, m.typmod),
                        m.typmod
                   FROM pg_attribute a
                   JOIN pg_class c ON c.oid = a.attrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   JOIN pg_type t ON t.oid = a.atttypid
                   CROSS JOIN LATERAL (SELECT information_schema._pg_truetypid(a.*, t.*) AS typid,
                                              information_schema._pg_truetypmod(a.*, t.*) AS typmod) m
                   JOIN pg_type b ON b.oid = m.typid
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
                    let name: String = row.get(0);
                    let typname: String = row.get(2);
                    let sql_type: String = row.get(1);
                    // Arrays are passed through as text.
                    let (ty, limits) = if typname.starts_with('_') {
                        (ColumnType::Other, Limits::NONE)
                    } else {
                        (
                            ColumnType::from_name(&typname),
                            Limits::postgres(&typname, row.get(5), row.get(6), row.get(7)),
                        )
                    };
                    let cast_type = postgres_cast_type(&typname, &sql_type).map_err(|error| {
                        StoreError::Invalid(format!("table {table}, column `{name}`: {error}"))
                    })?;
                    Ok(ColumnInfo {
                        name: CatalogName::new(name),
                        ty,
                        cast_type: Some(cast_type),
                        sql_type,
                        limits,
                        storage: Storage::Postgres,
                        nullable: row.get(3),
                        has_default: row.get(4),
                    })
                })
                .collect::<Result<_, StoreError>>()?;
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
            let name = table.sqlite_name().to_string();
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
                    let mut limits = Limits::declared(&declared);
                    // `INTEGER PRIMARY KEY` is the 64-bit rowid; any other
                    // `INTEGER` is read as PostgreSQL reads it (32 bits), so
                    // that a test on SQLite refuses what production would.
                    if integer_pk {
                        limits.integer_bits = 64;
                    }
                    ColumnInfo {
                        name: CatalogName::new(row.get::<String, _>(0)),
                        ty: ColumnType::from_name(&declared),
                        cast_type: None,
                        storage: Storage::Sqlite(Affinity::of(&declared)),
                        limits,
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
