//! JSON values → MariaDB/MySQL bind values, with the rule of
//! [`crate::store::convert`]: a value the column would not hold exactly is
//! an error naming the column, the value and the limit, never truncated,
//! rounded or replaced. The checks shared with PostgreSQL and SQLite
//! (lengths in characters, `DECIMAL(p, s)`, floats, fractional seconds,
//! dates) are those functions; MariaDB's own traps are checked here:
//!
//! - a character beyond U+FFFF (an emoji) into a `utf8mb3` column, which
//!   stores at most 3 bytes a character;
//! - the `TEXT` types' limit in bytes;
//! - integers of 8 and 24 bits, and `UNSIGNED` ones (no negatives, up to
//!   18446744073709551615 for `BIGINT UNSIGNED`, bound as an unsigned
//!   64-bit integer so comparisons stay exact);
//! - `TINYINT(1)` as a boolean: true/false, 1/0, never 2;
//! - dates outside 1000-01-01 … 9999-12-31 (MariaDB's supported range) and
//!   `TIMESTAMP`s outside 1970-01-01 00:00:01 … 2038-01-19 03:14:07 UTC;
//!   zero dates (`0000-00-00`) are not dates at all;
//! - a `DATETIME` (no zone) takes an RFC 3339 time converted to UTC, as on
//!   PostgreSQL's `timestamp`; MariaDB reads text as written, so busbar
//!   sends `YYYY-MM-DD HH:MM:SS.ffffff` with no offset for it to misread.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde_json::Value;
use sqlx::encode::{Encode, IsNull};
use sqlx::error::BoxDynError;
use sqlx::mysql::MySqlTypeInfo;
use sqlx::{MySql, Type};

use crate::compile::ident::{Ident, TableName};
use crate::decimal::Decimal;
use crate::store::StoreError;
use crate::store::catalog::{
    ColumnInfo, ColumnType, MySqlCharset, MySqlColumn, Storage, TableInfo,
};
use crate::store::convert::{
    self, BindValue, convert_value, decimal, fit_date, fit_numeric, fit_text, fit_timestamp, show,
};

/// A value ready to bind to a MariaDB statement. Integers are bound as
/// integers (signed or unsigned) and floats as doubles, so that MariaDB
/// compares them exactly; the rest as text, which the column's type reads
/// (strict mode refuses what it cannot).
#[derive(Debug, Clone, PartialEq)]
pub enum MySqlValue {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(String),
}

impl From<BindValue> for MySqlValue {
    fn from(value: BindValue) -> MySqlValue {
        match value {
            BindValue::Null => MySqlValue::Null,
            BindValue::Bool(b) => MySqlValue::Bool(b),
            BindValue::Int(i) => MySqlValue::Int(i),
            BindValue::Float(f) => MySqlValue::Float(f),
            BindValue::Text(s) => MySqlValue::Text(s),
        }
    }
}

/// For [`convert::convert`]'s callers (`check`), which only ask whether a
/// value fits: an unsigned integer beyond `i64` is given as its text.
impl From<MySqlValue> for BindValue {
    fn from(value: MySqlValue) -> BindValue {
        match value {
            MySqlValue::Null => BindValue::Null,
            MySqlValue::Bool(b) => BindValue::Bool(b),
            MySqlValue::Int(i) => BindValue::Int(i),
            MySqlValue::UInt(u) => {
                i64::try_from(u).map_or_else(|_| BindValue::Text(u.to_string()), BindValue::Int)
            }
            MySqlValue::Float(f) => BindValue::Float(f),
            MySqlValue::Text(s) => BindValue::Text(s),
        }
    }
}

impl Type<MySql> for MySqlValue {
    fn type_info() -> MySqlTypeInfo {
        <String as Type<MySql>>::type_info()
    }
}

impl Encode<'_, MySql> for MySqlValue {
    fn encode_by_ref(&self, buf: &mut Vec<u8>) -> Result<IsNull, BoxDynError> {
        match self {
            MySqlValue::Null => Ok(IsNull::Yes),
            MySqlValue::Bool(b) => Encode::<MySql>::encode_by_ref(b, buf),
            MySqlValue::Int(i) => Encode::<MySql>::encode_by_ref(i, buf),
            MySqlValue::UInt(u) => Encode::<MySql>::encode_by_ref(u, buf),
            MySqlValue::Float(f) => Encode::<MySql>::encode_by_ref(f, buf),
            MySqlValue::Text(s) => Encode::<MySql>::encode_by_ref(s, buf),
        }
    }

    fn produces(&self) -> Option<MySqlTypeInfo> {
        Some(match self {
            MySqlValue::Null | MySqlValue::Text(_) => <String as Type<MySql>>::type_info(),
            MySqlValue::Bool(_) => <bool as Type<MySql>>::type_info(),
            MySqlValue::Int(_) => <i64 as Type<MySql>>::type_info(),
            MySqlValue::UInt(_) => <u64 as Type<MySql>>::type_info(),
            MySqlValue::Float(_) => <f64 as Type<MySql>>::type_info(),
        })
    }
}

/// Converts `(column, value)` pairs for `table`, in order; a column the
/// table does not have is an error naming it.
pub fn convert_columns(
    table: &TableName,
    info: &TableInfo,
    columns: &[(Ident, Value)],
) -> Result<Vec<MySqlValue>, StoreError> {
    columns
        .iter()
        .map(|(column, value)| {
            let column_info = info
                .column(column.as_str())
                .ok_or_else(|| StoreError::NoColumn {
                    table: table.to_string(),
                    column: column.to_string(),
                })?;
            convert(column_info, value)
        })
        .collect()
}

/// Converts `value` for a MariaDB `column`: checks that the column holds
/// it exactly and gives the form to bind.
pub fn convert(column: &ColumnInfo, value: &Value) -> Result<MySqlValue, StoreError> {
    let fail = |reason: String| StoreError::Conversion {
        column: column.name.to_string(),
        value: show(value),
        ty: column.sql_type.clone(),
        reason,
    };
    if value.is_null() {
        return Ok(MySqlValue::Null);
    }
    let mysql = match column.storage {
        Storage::MySql(mysql) => mysql,
        // A column read from another database: its own rules.
        _ => return convert::convert(column, value).map(MySqlValue::from),
    };
    let limits = &column.limits;
    match column.ty {
        ColumnType::Integer => {
            let number = decimal(value).ok_or_else(|| fail("not a whole number".into()))?;
            if !number.is_integer() {
                return Err(fail("not a whole number".into()));
            }
            fit_integer(limits.integer_bits, mysql.unsigned, &number).map_err(fail)
        }
        ColumnType::Boolean => match value {
            Value::Bool(b) => Ok(MySqlValue::Bool(*b)),
            Value::Number(n) if Decimal::of(n).is_zero() => Ok(MySqlValue::Bool(false)),
            Value::Number(n) if Decimal::of(n).to_i128() == Some(1) => Ok(MySqlValue::Bool(true)),
            _ => convert_value(column, value)
                .map(MySqlValue::from)
                .map_err(|_| fail("TINYINT(1) is read as a boolean: true or false, 1 or 0".into())),
        },
        ColumnType::Text => {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(fail(
                        "an object or list cannot go into a text column; use a JSON column or the `json` filter".into(),
                    ));
                }
            };
            fit_charset(&mysql, &text).map_err(&fail)?;
            let text = fit_text(limits, text).map_err(&fail)?;
            if let Some(max) = mysql.max_bytes
                && text.len() > max as usize
            {
                return Err(fail(format!(
                    "{} bytes in UTF-8, more than the limit of {max} bytes",
                    text.len()
                )));
            }
            Ok(MySqlValue::Text(text))
        }
        ColumnType::Numeric => {
            let (text, number) = match value {
                Value::Number(n) => (n.to_string(), Decimal::of(n)),
                Value::String(s) => match Decimal::parse(s.trim()) {
                    Some(number) => (s.trim().to_owned(), number),
                    None => return Err(fail("not a decimal number".into())),
                },
                _ => return Err(fail("not a number".into())),
            };
            fit_numeric(limits, &number).map_err(&fail)?;
            if mysql.unsigned && number.is_negative() {
                return Err(fail("negative, and the column is UNSIGNED".into()));
            }
            Ok(MySqlValue::Text(text))
        }
        ColumnType::Date => match value {
            Value::String(s) => {
                let date = fit_date(s.trim()).map_err(&fail)?;
                fit_year(date).map_err(&fail)?;
                Ok(MySqlValue::Text(date.format("%Y-%m-%d").to_string()))
            }
            _ => Err(fail("a date must be a string (YYYY-MM-DD)".into())),
        },
        ColumnType::Timestamp | ColumnType::TimestampTz => match value {
            Value::String(s) => {
                let time = fit_timestamp(s.trim(), limits.second_digits).map_err(&fail)?;
                if column.ty == ColumnType::TimestampTz {
                    fit_timestamp_range(time).map_err(&fail)?;
                } else {
                    fit_year(time.date_naive()).map_err(&fail)?;
                }
                Ok(MySqlValue::Text(
                    time.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
                ))
            }
            _ => Err(fail("a timestamp must be a string (RFC 3339)".into())),
        },
        // Text the server stores as is (JSON in a utf8mb4 LONGTEXT, an
        // ENUM's label) still needs utf8mb4 for a 4-byte character.
        ColumnType::Json | ColumnType::Other => {
            if let Value::String(s) = value {
                fit_charset(&mysql, s).map_err(&fail)?;
            }
            convert_value(column, value).map(MySqlValue::from)
        }
        ColumnType::Float | ColumnType::Uuid => convert_value(column, value).map(MySqlValue::from),
    }
}

/// An integer within a MariaDB integer type of `bits` (8, 16, 24, 32, 64)
/// and sign.
fn fit_integer(bits: u8, unsigned: bool, number: &Decimal) -> Result<MySqlValue, String> {
    let name = match bits {
        8 => "TINYINT",
        16 => "SMALLINT",
        24 => "MEDIUMINT",
        32 => "INT",
        _ => "BIGINT",
    };
    let bits = u32::from(bits.clamp(8, 64));
    let (min, max): (i128, i128) = if unsigned {
        (0, (1i128 << bits) - 1)
    } else {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    };
    let sign = if unsigned { " UNSIGNED" } else { "" };
    let out_of_range = || format!("out of range for {name}{sign} ({min} to {max})");
    let value = number
        .to_i128()
        .filter(|i| (min..=max).contains(i))
        .ok_or_else(out_of_range)?;
    if unsigned {
        u64::try_from(value)
            .map(MySqlValue::UInt)
            .map_err(|_| out_of_range())
    } else {
        i64::try_from(value)
            .map(MySqlValue::Int)
            .map_err(|_| out_of_range())
    }
}

/// Text a column's character set can hold: `utf8mb3` stores at most 3
/// bytes a character, so nothing beyond U+FFFF (emoji, some CJK, musical
/// symbols). The server would refuse it in strict mode too, without
/// saying which character.
fn fit_charset(mysql: &MySqlColumn, text: &str) -> Result<(), String> {
    if mysql.charset != MySqlCharset::Utf8mb3 {
        return Ok(());
    }
    match text.char_indices().find(|(_, c)| c.len_utf8() > 3) {
        Some((at, c)) => Err(format!(
            "the character {c} (U+{:04X}, at character {}) takes 4 bytes in UTF-8, which a utf8mb3 column cannot store; the column must be utf8mb4",
            u32::from(c),
            text[..at].chars().count() + 1
        )),
        None => Ok(()),
    }
}

/// A date within MariaDB's supported range for `DATE` and `DATETIME`.
fn fit_year(date: NaiveDate) -> Result<(), String> {
    if (1000..=9999).contains(&date.year()) {
        Ok(())
    } else {
        Err("outside the range MariaDB supports (1000-01-01 to 9999-12-31)".into())
    }
}

/// A time a `TIMESTAMP` column holds (seconds since 1970 in 32 bits).
fn fit_timestamp_range(time: DateTime<Utc>) -> Result<(), String> {
    let seconds = time.timestamp();
    if (1..=i64::from(i32::MAX)).contains(&seconds) {
        Ok(())
    } else {
        Err("outside TIMESTAMP's range (1970-01-01 00:00:01 to 2038-01-19 03:14:07 UTC); a DATETIME column holds it".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::catalog::Limits;
    use serde_json::json;

    fn column(ty: ColumnType, sql_type: &str, limits: Limits, mysql: MySqlColumn) -> ColumnInfo {
        ColumnInfo {
            limits,
            storage: Storage::MySql(mysql),
            cast_type: None,
            ..ColumnInfo::new("c", ty, sql_type)
        }
    }

    fn integer(bits: u8, unsigned: bool) -> ColumnInfo {
        column(
            ColumnType::Integer,
            "int",
            Limits {
                integer_bits: bits,
                ..Limits::NONE
            },
            MySqlColumn {
                unsigned,
                ..MySqlColumn::default()
            },
        )
    }

    fn reason(column: &ColumnInfo, value: Value) -> String {
        match convert(column, &value) {
            Err(StoreError::Conversion { reason, .. }) => reason,
            other => panic!("{value} into {}: {other:?}", column.sql_type),
        }
    }

    fn number(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn integers_keep_their_width_and_sign() {
        assert_eq!(
            reason(&integer(8, false), json!(128)),
            "out of range for TINYINT (-128 to 127)"
        );
        assert_eq!(
            reason(&integer(8, true), json!(-1)),
            "out of range for TINYINT UNSIGNED (0 to 255)"
        );
        assert_eq!(
            reason(&integer(24, false), json!(8388608)),
            "out of range for MEDIUMINT (-8388608 to 8388607)"
        );
        assert_eq!(
            convert(&integer(64, true), &number("18446744073709551615")).unwrap(),
            MySqlValue::UInt(u64::MAX)
        );
        assert!(reason(&integer(64, true), number("18446744073709551616")).contains("UNSIGNED"));
        assert_eq!(
            convert(&integer(32, false), &json!("-7")).unwrap(),
            MySqlValue::Int(-7)
        );
    }

    #[test]
    fn utf8mb3_refuses_four_byte_characters_and_names_them() {
        let utf8mb3 = column(
            ColumnType::Text,
            "varchar(10) CHARACTER SET utf8mb3",
            Limits {
                max_chars: Some(10),
                ..Limits::NONE
            },
            MySqlColumn {
                charset: MySqlCharset::Utf8mb3,
                ..MySqlColumn::default()
            },
        );
        assert_eq!(
            convert(&utf8mb3, &json!("héllo")).unwrap(),
            MySqlValue::Text("héllo".into())
        );
        let message = convert(&utf8mb3, &json!("hi 😀")).unwrap_err().to_string();
        assert_eq!(
            message,
            "column `c`: cannot store \"hi 😀\" as varchar(10) CHARACTER SET utf8mb3: the character 😀 (U+1F600, at character 4) takes 4 bytes in UTF-8, which a utf8mb3 column cannot store; the column must be utf8mb4"
        );
        let text = column(
            ColumnType::Text,
            "text",
            Limits::NONE,
            MySqlColumn {
                max_bytes: Some(8),
                ..MySqlColumn::default()
            },
        );
        assert_eq!(
            reason(&text, json!("ééééé")),
            "10 bytes in UTF-8, more than the limit of 8 bytes"
        );
    }

    #[test]
    fn tinyint_1_takes_booleans_and_refuses_other_numbers() {
        let boolean = column(
            ColumnType::Boolean,
            "tinyint(1)",
            Limits::NONE,
            MySqlColumn::default(),
        );
        assert_eq!(
            convert(&boolean, &json!(true)).unwrap(),
            MySqlValue::Bool(true)
        );
        assert_eq!(
            convert(&boolean, &json!(0)).unwrap(),
            MySqlValue::Bool(false)
        );
        assert_eq!(
            convert(&boolean, &json!("yes")).unwrap(),
            MySqlValue::Bool(true)
        );
        assert_eq!(
            reason(&boolean, json!(2)),
            "TINYINT(1) is read as a boolean: true or false, 1 or 0"
        );
    }

    #[test]
    fn datetimes_are_sent_in_utc_without_offset_within_range() {
        let datetime = column(
            ColumnType::Timestamp,
            "datetime",
            Limits {
                second_digits: 0,
                ..Limits::NONE
            },
            MySqlColumn::default(),
        );
        assert_eq!(
            convert(&datetime, &json!("2026-03-01T23:30:00-05:00")).unwrap(),
            MySqlValue::Text("2026-03-02 04:30:00.000000".into())
        );
        assert!(reason(&datetime, json!("2026-03-01T10:00:00.5Z")).contains("at most 0 fit"));
        assert!(reason(&datetime, json!("0999-12-31T10:00:00Z")).contains("1000-01-01"));
        let timestamp = column(
            ColumnType::TimestampTz,
            "timestamp",
            Limits::NONE,
            MySqlColumn::default(),
        );
        assert!(reason(&timestamp, json!("2038-01-19T03:14:08Z")).contains("TIMESTAMP's range"));
        assert!(reason(&timestamp, json!("1970-01-01T00:00:00Z")).contains("TIMESTAMP's range"));
        let date = column(
            ColumnType::Date,
            "date",
            Limits::NONE,
            MySqlColumn::default(),
        );
        assert!(reason(&date, json!("0000-00-00")).contains("not a date"));
    }

    #[test]
    fn decimals_are_never_rounded_and_unsigned_ones_never_negative() {
        let money = column(
            ColumnType::Numeric,
            "decimal(5,2) unsigned",
            Limits {
                numeric: Some((5, 2)),
                ..Limits::NONE
            },
            MySqlColumn {
                unsigned: true,
                ..MySqlColumn::default()
            },
        );
        assert_eq!(
            convert(&money, &number("123.40")).unwrap(),
            MySqlValue::Text("123.40".into())
        );
        assert!(reason(&money, number("1.234")).contains("scale of 2"));
        assert!(reason(&money, number("1234")).contains("at most 3 fit"));
        assert!(reason(&money, number("-1")).contains("UNSIGNED"));
    }
}
