//! Converting mapped JSON values to target columns' types.
//!
//! Every value is checked and normalised here, in Rust, so that a value that
//! does not fit fails with the column, the value and the reason (a permanent
//! error: the delivery goes to dead letter), rather than with whatever the
//! database would say — or, worse, with what it would silently do: an
//! explicit cast to `varchar(n)` truncates, `numeric(p, s)` rounds, and
//! SQLite ignores declared lengths altogether. So the limits the catalog
//! reports ([`Limits`]) are enforced here, on both databases alike: a value
//! that does not fit exactly is refused, never truncated or rounded.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Utc};
use serde_json::{Number, Value};
use sqlx::encode::{Encode, IsNull};
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo};
use sqlx::sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo};
use sqlx::{Postgres, Sqlite, Type};
use uuid::Uuid;

use super::StoreError;
use super::catalog::{ColumnInfo, ColumnType, Limits, Storage};
use crate::compile::template::parse_timestamp;
use crate::decimal::{Decimal, FloatMisfit};

/// A value ready to bind (`query.bind(&value)` on either database).
/// PostgreSQL receives its text form and casts it to the column type;
/// SQLite receives it natively.
#[derive(Debug, Clone, PartialEq)]
pub enum BindValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl BindValue {
    /// The text PostgreSQL parses with `CAST($n AS type)`.
    pub fn pg_text(&self) -> Option<String> {
        match self {
            BindValue::Null => None,
            BindValue::Bool(b) => Some(b.to_string()),
            BindValue::Int(i) => Some(i.to_string()),
            BindValue::Float(f) => Some(f.to_string()),
            BindValue::Text(s) => Some(s.clone()),
        }
    }
}

// `BindValue` is bound the same way everywhere (one statement at a time,
// set-based batches, `busbar test`'s given rows): as text on PostgreSQL,
// which the statement casts to the column's type (`text[]` for a column's
// values in `UNNEST`), and natively on SQLite. `Null` binds SQL `NULL`.

impl Type<Postgres> for BindValue {
    fn type_info() -> PgTypeInfo {
        <String as Type<Postgres>>::type_info()
    }
}

impl PgHasArrayType for BindValue {
    fn array_type_info() -> PgTypeInfo {
        <String as PgHasArrayType>::array_type_info()
    }
}

impl Encode<'_, Postgres> for BindValue {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        match self {
            BindValue::Null => Ok(IsNull::Yes),
            BindValue::Text(s) => <&str as Encode<Postgres>>::encode(s, buf),
            BindValue::Bool(_) | BindValue::Int(_) | BindValue::Float(_) => {
                <Option<String> as Encode<Postgres>>::encode(self.pg_text(), buf)
            }
        }
    }
}

impl Type<Sqlite> for BindValue {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}

impl Encode<'_, Sqlite> for BindValue {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        match self {
            BindValue::Null => Ok(IsNull::Yes),
            BindValue::Bool(b) => Encode::<Sqlite>::encode_by_ref(b, buf),
            BindValue::Int(i) => Encode::<Sqlite>::encode_by_ref(i, buf),
            BindValue::Float(f) => Encode::<Sqlite>::encode_by_ref(f, buf),
            BindValue::Text(s) => Encode::<Sqlite>::encode_by_ref(s, buf),
        }
    }

    fn produces(&self) -> Option<SqliteTypeInfo> {
        match self {
            BindValue::Null => None,
            BindValue::Bool(_) => Some(<bool as Type<Sqlite>>::type_info()),
            BindValue::Int(_) => Some(<i64 as Type<Sqlite>>::type_info()),
            BindValue::Float(_) => Some(<f64 as Type<Sqlite>>::type_info()),
            BindValue::Text(_) => Some(<String as Type<Sqlite>>::type_info()),
        }
    }
}

/// Converts `(column, value)` pairs for `table`, in order; a column the
/// table does not have is an error naming it.
pub fn convert_columns(
    table: &crate::compile::ident::TableName,
    info: &super::catalog::TableInfo,
    columns: &[(crate::compile::ident::Ident, Value)],
) -> Result<Vec<BindValue>, StoreError> {
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

/// A short form of a value for messages: at most 80 characters, with the
/// full length said when it is cut.
pub fn show(value: &Value) -> String {
    const KEEP: usize = 80;
    let (text, count) = match value {
        Value::String(s) => (s.clone(), s.chars().count()),
        other => {
            let text = other.to_string();
            let count = text.chars().count();
            (text, count)
        }
    };
    if count <= KEEP {
        return value.to_string();
    }
    let start: String = text.chars().take(KEEP).collect();
    match value {
        Value::String(_) => format!("{}… ({count} characters)", Value::String(start)),
        _ => format!("{start}… ({count} characters)"),
    }
}

/// Converts `value` for `column`: checks that the column holds it exactly
/// (no truncation, no rounding: see docs/LANGUAGE.md, "Types") and gives
/// the form to bind. A MariaDB column is checked by
/// [`super::mysql::convert::convert`], with MariaDB's own traps, so that
/// `check` refuses there what a delivery would (its statements bind
/// [`super::mysql::convert::MySqlValue`]s, not this).
pub fn convert(column: &ColumnInfo, value: &Value) -> Result<BindValue, StoreError> {
    match column.storage {
        Storage::MySql(_) => super::mysql::convert::convert(column, value).map(BindValue::from),
        Storage::Postgres | Storage::Sqlite(_) => convert_value(column, value),
    }
}

/// [`convert`] by the rules PostgreSQL and SQLite columns share, which
/// MariaDB's conversion reuses for the kinds it has no trap of its own in
/// (floats, UUIDs, JSON, other types).
pub(super) fn convert_value(column: &ColumnInfo, value: &Value) -> Result<BindValue, StoreError> {
    let fail = |reason: String| StoreError::Conversion {
        column: column.name.to_string(),
        value: show(value),
        ty: column.sql_type.clone(),
        reason,
    };
    if value.is_null() {
        return Ok(BindValue::Null);
    }
    let limits = &column.limits;
    match column.ty {
        ColumnType::Uuid => match value {
            Value::String(s) => Uuid::parse_str(s.trim())
                .map(|u| BindValue::Text(u.hyphenated().to_string()))
                .map_err(|e| fail(format!("not a UUID ({e})"))),
            _ => Err(fail("a UUID must be a string".into())),
        },
        ColumnType::Text => {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(fail("an object or list cannot go into a text column; use a json column or the `json` filter".into())),
            };
            fit_text(limits, text).map(BindValue::Text).map_err(fail)
        }
        ColumnType::Integer => {
            let number = decimal(value).ok_or_else(|| fail("not a whole number".into()))?;
            if !number.is_integer() {
                return Err(fail("not a whole number".into()));
            }
            let (name, min, max) = match limits.integer_bits {
                16 => ("smallint", i64::from(i16::MIN), i64::from(i16::MAX)),
                32 => ("integer", i64::from(i32::MIN), i64::from(i32::MAX)),
                _ => ("bigint", i64::MIN, i64::MAX),
            };
            number
                .to_i128()
                .and_then(|i| i64::try_from(i).ok())
                .filter(|i| (min..=max).contains(i))
                .map(BindValue::Int)
                .ok_or_else(|| fail(format!("out of range for {name} ({min} to {max})")))
        }
        ColumnType::Float => {
            let number = decimal(value).ok_or_else(|| fail("not a number".into()))?;
            fit_float(column, &number).map_err(fail)
        }
        ColumnType::Numeric => {
            let (text, number) = match value {
                Value::Number(n) => (n.to_string(), Decimal::of(n)),
                Value::String(s) => {
                    let text = s.trim();
                    match Decimal::parse(text) {
                        Some(number) => (text.to_owned(), number),
                        None => return Err(fail("not a decimal number".into())),
                    }
                }
                _ => return Err(fail("not a number".into())),
            };
            fit_numeric(limits, &number).map_err(&fail)?;
            match column.storage {
                Storage::Postgres | Storage::MySql(_) => Ok(BindValue::Text(text)),
                Storage::Sqlite(_) => sqlite_number(&number).map_err(fail),
            }
        }
        ColumnType::Boolean => match value {
            Value::Bool(b) => Ok(BindValue::Bool(*b)),
            Value::Number(n) if Decimal::of(n).is_zero() => Ok(BindValue::Bool(false)),
            Value::Number(n) if Decimal::of(n).to_i128() == Some(1) => Ok(BindValue::Bool(true)),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "t" | "yes" | "y" | "1" | "on" => Ok(BindValue::Bool(true)),
                "false" | "f" | "no" | "n" | "0" | "off" => Ok(BindValue::Bool(false)),
                _ => Err(fail("not a boolean (true/false)".into())),
            },
            _ => Err(fail("not a boolean (true/false)".into())),
        },
        ColumnType::Date => match value {
            Value::String(s) => fit_date(s.trim())
                .map(|d| BindValue::Text(d.format("%Y-%m-%d").to_string()))
                .map_err(fail),
            _ => Err(fail("a date must be a string (YYYY-MM-DD)".into())),
        },
        ColumnType::Timestamp => match value {
            Value::String(s) => fit_timestamp(s.trim(), limits.second_digits)
                .map(|t| BindValue::Text(t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string()))
                .map_err(fail),
            _ => Err(fail("a timestamp must be a string (RFC 3339)".into())),
        },
        ColumnType::TimestampTz => match value {
            Value::String(s) => fit_timestamp(s.trim(), limits.second_digits)
                .map(|t| BindValue::Text(t.to_rfc3339_opts(SecondsFormat::Micros, true)))
                .map_err(fail),
            _ => Err(fail("a timestamp must be a string (RFC 3339)".into())),
        },
        ColumnType::Json => {
            if let Value::Number(n) = value {
                sqlite_keeps_text_number(column, n).map_err(&fail)?;
            }
            Ok(BindValue::Text(value.to_string()))
        }
        ColumnType::Other => match value {
            Value::String(s) => Ok(BindValue::Text(s.clone())),
            Value::Number(n) => {
                sqlite_keeps_text_number(column, n).map_err(&fail)?;
                Ok(BindValue::Text(n.to_string()))
            }
            Value::Bool(b) => Ok(BindValue::Text(b.to_string())),
            _ => Err(fail(
                "an object or list has no text form for this column type".into(),
            )),
        },
    }
}

/// A number, or a string holding one (`" 42 "`, `"1e3"`).
pub(super) fn decimal(value: &Value) -> Option<Decimal> {
    match value {
        Value::Number(n) => Some(Decimal::of(n)),
        Value::String(s) => Decimal::parse(s.trim()),
        _ => None,
    }
}

/// Text within `varchar(n)` / `char(n)`, counted in characters as the
/// databases count them; `char(n)` padded with spaces to `n`, as
/// PostgreSQL stores it (busbar pads on SQLite too, so both store and
/// compare the same text). A `char(n)`'s trailing spaces are padding, so
/// they do not count against the limit.
pub(super) fn fit_text(limits: &Limits, text: String) -> Result<String, String> {
    if text.contains('\0') {
        return Err("text cannot contain the NUL character (\\u0000)".into());
    }
    let Some(max) = limits.max_chars else {
        return Ok(text);
    };
    let max = max as usize;
    let kept = if limits.padded {
        text.trim_end_matches(' ')
    } else {
        text.as_str()
    };
    let count = kept.chars().count();
    if count > max {
        return Err(format!("{count} characters, more than the limit of {max}"));
    }
    if limits.padded && count < max {
        return Ok(format!("{kept}{}", " ".repeat(max - count)));
    }
    Ok(if limits.padded { kept.to_owned() } else { text })
}

/// A number within `numeric(p, s)`, or within what an unconstrained
/// `numeric` holds. A value with more fractional digits than the scale is
/// refused rather than rounded; trailing zeros do not count.
pub(super) fn fit_numeric(limits: &Limits, number: &Decimal) -> Result<(), String> {
    let Some((precision, scale)) = limits.numeric else {
        return number.numeric_misfit().map_or(Ok(()), Err);
    };
    // The last significant digit must stand at 10^-scale or above: with
    // scale 2, hundredths; with scale -2 (PostgreSQL 15), hundreds.
    if !number.is_zero() && -number.last_digit_power() > i64::from(scale) {
        let fraction = number.fraction_digits();
        return Err(if scale >= 0 {
            format!(
                "{fraction} digits after the decimal point, more than its scale of {scale} (it would be rounded)"
            )
        } else {
            format!(
                "not a multiple of {}: numeric({precision},{scale}) would round it",
                format_args!("1e{}", -scale)
            )
        });
    }
    let integer_max = i64::from(precision) - i64::from(scale);
    let integer = number.integer_digits();
    if integer > integer_max {
        return Err(format!(
            "{integer} digits before the decimal point, at most {integer_max} fit (precision {precision}, scale {scale})"
        ));
    }
    Ok(())
}

/// A number for a `real` or `double precision` column: only when the
/// float it becomes reads back as the same number. On SQLite, which
/// reports doubles with 15 significant digits, at most 15.
pub(super) fn fit_float(column: &ColumnInfo, number: &Decimal) -> Result<BindValue, String> {
    let (name, largest) = if column.limits.single_precision {
        ("real", "3.4028235e38")
    } else {
        ("double precision", "1.7976931348623157e308")
    };
    // A `real` that holds the number is bound as the double nearest to it
    // (not the single widened, 0.10000000149011612): PostgreSQL rounds
    // that to the same single, and SQLite stores doubles.
    let exact = if column.limits.single_precision {
        number.to_f32_exactly().map(|_| number.to_f64())
    } else {
        number.to_f64_exactly()
    };
    let float = exact.map_err(|misfit| match misfit {
        FloatMisfit::OutOfRange => {
            format!("out of range for {name} (at most ±{largest})")
        }
        FloatMisfit::Underflow => {
            format!("too small for {name}: it would be stored as 0")
        }
        FloatMisfit::Rounded(float) => format!(
            "{} significant digits, more than {name} keeps: it would be stored as {}",
            number.significant_digits(),
            show_float(float)
        ),
    })?;
    if matches!(column.storage, Storage::Sqlite(_)) && number.significant_digits() > 15 {
        return Err(sqlite_digits(number));
    }
    Ok(BindValue::Float(float))
}

/// A float as a person reads it: plain unless very large or small.
fn show_float(float: f64) -> String {
    if float == 0.0 || (1e-6..1e21).contains(&float.abs()) {
        format!("{float}")
    } else {
        format!("{float:e}")
    }
}

fn sqlite_digits(number: &Decimal) -> String {
    format!(
        "SQLite stores this column's numbers as 64-bit integers or doubles, which keep 15 significant digits; this has {}",
        number.significant_digits()
    )
}

/// A number as SQLite's NUMERIC affinity keeps it: a 64-bit integer, or a
/// double that keeps every digit (15 significant digits, within the
/// double's normal range).
fn sqlite_number(number: &Decimal) -> Result<BindValue, String> {
    if let Some(integer) = number.to_i128().and_then(|i| i64::try_from(i).ok()) {
        return Ok(BindValue::Int(integer));
    }
    if number.significant_digits() > 15 {
        return Err(sqlite_digits(number));
    }
    match number.to_f64_exactly() {
        Ok(float) if float.abs() >= f64::MIN_POSITIVE => Ok(BindValue::Float(float)),
        Err(FloatMisfit::OutOfRange) => Err(
            "beyond the range of SQLite's numbers (64-bit integers and doubles, at most ±1.7976931348623157e308)".into(),
        ),
        _ => Err("too small for SQLite's numbers (64-bit integers and doubles): it would be stored as 0 or lose digits".into()),
    }
}

/// On SQLite, a number bound as text into a column whose affinity turns
/// numbers into integers or doubles must survive that.
fn sqlite_keeps_text_number(column: &ColumnInfo, number: &Number) -> Result<(), String> {
    match column.storage {
        Storage::Sqlite(affinity) if affinity.converts_numbers() => {
            sqlite_number(&Decimal::of(number)).map(|_| ())
        }
        _ => Ok(()),
    }
}

/// A date column takes a date, or a timestamp at midnight (its date as
/// written). A timestamp with a time of day is refused: the column would
/// drop the time (the `date` filter takes the date explicitly).
pub(super) fn fit_date(text: &str) -> Result<NaiveDate, String> {
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date);
    }
    let written = DateTime::parse_from_rfc3339(text)
        .map(|t| t.naive_local())
        .ok()
        .or_else(|| {
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                .iter()
                .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        })
        .ok_or_else(|| "not a date (YYYY-MM-DD) or RFC 3339 timestamp".to_owned())?;
    if written.time() != NaiveTime::MIN {
        let time = text
            .split_once(['T', 't', ' '])
            .map_or(text, |(_, time)| time);
        return Err(format!(
            "has a time of day ({time}), which a date column would drop; take the date explicitly with `{{{{ value | date }}}}`"
        ));
    }
    Ok(written.date())
}

/// A timestamp whose fractional seconds the column keeps: digits beyond
/// `kept` (other than trailing zeros) would be rounded, so they are
/// refused.
pub(super) fn fit_timestamp(text: &str, kept: u8) -> Result<DateTime<Utc>, String> {
    let time = parse_timestamp(text).ok_or_else(|| "not an RFC 3339 timestamp".to_owned())?;
    let fraction = text
        .split_once(['T', 't', ' '])
        .and_then(|(_, time)| time.split_once('.'))
        .map(|(_, rest)| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .unwrap_or_default();
    let digits = fraction.trim_end_matches('0').len();
    if digits > usize::from(kept) {
        return Err(format!(
            "{digits} fractional digits of seconds, at most {kept} fit (the rest would be rounded)"
        ));
    }
    Ok(time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::catalog::Affinity;
    use serde_json::json;

    fn column(ty: ColumnType) -> ColumnInfo {
        ColumnInfo::new("c", ty, ty.name())
    }

    fn typed(sql_type: &str) -> ColumnInfo {
        ColumnInfo::new("c", ColumnType::from_name(sql_type), sql_type)
    }

    fn sqlite(declared: &str) -> ColumnInfo {
        let mut column = typed(declared);
        column.storage = Storage::Sqlite(Affinity::of(declared));
        column
    }

    /// JSON as a request body carries it: every digit kept.
    fn number(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn ok(ty: ColumnType, value: Value) -> BindValue {
        convert(&column(ty), &value).unwrap()
    }

    fn err(ty: ColumnType, value: Value) -> String {
        convert(&column(ty), &value).unwrap_err().to_string()
    }

    fn reason(column: &ColumnInfo, value: Value) -> String {
        match convert(column, &value) {
            Err(StoreError::Conversion { reason, .. }) => reason,
            other => panic!("{value} into {}: {other:?}", column.sql_type),
        }
    }

    #[test]
    fn values_are_normalised_per_type() {
        assert_eq!(
            ok(
                ColumnType::Uuid,
                json!(" 5B8F2C1E-9A47-4D3B-8E6F-1A2B3C4D5E6F")
            ),
            BindValue::Text("5b8f2c1e-9a47-4d3b-8e6f-1a2b3c4d5e6f".into())
        );
        assert_eq!(ok(ColumnType::Integer, json!("42")), BindValue::Int(42));
        assert_eq!(ok(ColumnType::Integer, json!(42.0)), BindValue::Int(42));
        assert_eq!(ok(ColumnType::Integer, number("1e3")), BindValue::Int(1000));
        assert_eq!(
            ok(ColumnType::Numeric, json!(72000.5)),
            BindValue::Text("72000.5".into())
        );
        assert_eq!(ok(ColumnType::Boolean, json!("yes")), BindValue::Bool(true));
        assert_eq!(
            ok(ColumnType::Boolean, number("1.0")),
            BindValue::Bool(true)
        );
        assert_eq!(
            ok(ColumnType::Date, json!("2026-03-01T00:00:00-05:00")),
            BindValue::Text("2026-03-01".into())
        );
        assert_eq!(
            ok(ColumnType::TimestampTz, json!("2026-03-01T23:30:00-05:00")),
            BindValue::Text("2026-03-02T04:30:00.000000Z".into())
        );
        assert_eq!(
            ok(ColumnType::Timestamp, json!("2026-03-01T23:30:00-05:00")),
            BindValue::Text("2026-03-02T04:30:00.000000".into())
        );
        assert_eq!(
            ok(ColumnType::Json, json!({"a": [1]})),
            BindValue::Text("{\"a\":[1]}".into())
        );
        assert_eq!(ok(ColumnType::Text, json!(null)), BindValue::Null);
        assert_eq!(
            ok(ColumnType::Text, number("18446744073709551617")),
            BindValue::Text("18446744073709551617".into())
        );
    }

    #[test]
    fn bad_values_name_the_column_the_value_and_the_reason() {
        let message = err(ColumnType::Uuid, json!("not-a-uuid"));
        assert!(
            message.starts_with("column `c`: cannot store \"not-a-uuid\" as uuid: not a UUID"),
            "{message}"
        );
        assert!(err(ColumnType::Integer, json!(1.5)).contains("not a whole number"));
        assert!(err(ColumnType::Numeric, json!("12,5")).contains("not a decimal"));
        assert!(err(ColumnType::Date, json!("tomorrow")).contains("not a date"));
        assert!(err(ColumnType::Text, json!({"a": 1})).contains("object or list"));
    }

    #[test]
    fn text_longer_than_its_column_is_refused_and_the_message_abbreviates_it() {
        let varchar = typed("character varying(5)");
        assert_eq!(
            convert(&varchar, &json!("héllo")).unwrap(),
            BindValue::Text("héllo".into()),
            "characters are counted, not bytes"
        );
        let message = convert(&varchar, &json!("x".repeat(500)))
            .unwrap_err()
            .to_string();
        assert!(
            message.ends_with("as character varying(5): 500 characters, more than the limit of 5"),
            "{message}"
        );
        assert!(message.contains("\"… (500 characters)"), "{message}");
        assert!(message.len() < 250, "{message}");
        assert_eq!(
            reason(&varchar, json!("abc   ")),
            "6 characters, more than the limit of 5"
        );
        let char3 = typed("character(3)");
        assert_eq!(
            convert(&char3, &json!("AB")).unwrap(),
            BindValue::Text("AB ".into())
        );
        assert_eq!(
            convert(&char3, &json!("ABC   ")).unwrap(),
            BindValue::Text("ABC".into()),
            "char(n)'s trailing spaces are padding"
        );
        assert_eq!(
            reason(&char3, json!("ABCD")),
            "4 characters, more than the limit of 3"
        );
        assert_eq!(
            reason(&typed("VARCHAR(2)"), json!(123)),
            "3 characters, more than the limit of 2"
        );
        assert!(reason(&typed("text"), json!("a\u{0}b")).contains("NUL"));
    }

    #[test]
    fn numeric_precision_and_scale_are_never_rounded() {
        let money = typed("numeric(12,2)");
        assert_eq!(
            convert(&money, &number("19.500")).unwrap(),
            BindValue::Text("19.500".into())
        );
        assert_eq!(
            reason(&money, number("0.125")),
            "3 digits after the decimal point, more than its scale of 2 (it would be rounded)"
        );
        assert_eq!(
            reason(&money, json!("12345678901")),
            "11 digits before the decimal point, at most 10 fit (precision 12, scale 2)"
        );
        let hundreds = ColumnInfo {
            limits: Limits {
                numeric: Some((3, -2)),
                ..Limits::NONE
            },
            ..typed("numeric")
        };
        assert!(convert(&hundreds, &number("12300")).is_ok());
        assert!(reason(&hundreds, number("12345")).contains("not a multiple of 1e2"));
        let any = typed("numeric");
        for fits in ["18446744073709551617", "1e-400", "1e400"] {
            assert_eq!(
                convert(&any, &number(fits)).unwrap(),
                BindValue::Text(number(fits).to_string()),
                "{fits}"
            );
        }
        assert!(reason(&any, number("1e200000")).contains("digits before the decimal point"));
    }

    #[test]
    fn integers_stay_within_their_width() {
        assert_eq!(
            reason(&typed("smallint"), json!(32768)),
            "out of range for smallint (-32768 to 32767)"
        );
        assert_eq!(
            convert(&typed("smallint"), &json!(-32768)).unwrap(),
            BindValue::Int(-32768)
        );
        assert!(reason(&typed("integer"), json!(2147483648u64)).contains("integer"));
        assert!(reason(&typed("bigint"), number("9223372036854775808")).contains("bigint"));
        assert!(reason(&typed("bigint"), number("1e400")).contains("bigint"));
        assert_eq!(
            convert(&typed("int8"), &number("9223372036854775807")).unwrap(),
            BindValue::Int(i64::MAX)
        );
    }

    #[test]
    fn floats_take_only_numbers_they_read_back_as() {
        let double = typed("double precision");
        assert_eq!(
            convert(&double, &number("0.1")).unwrap(),
            BindValue::Float(0.1)
        );
        assert!(reason(&double, number("1e400")).starts_with("out of range for double precision"));
        assert!(reason(&double, number("1e-400")).contains("would be stored as 0"));
        assert_eq!(
            reason(&double, number("18446744073709551617")),
            "20 significant digits, more than double precision keeps: it would be stored as 18446744073709552000"
        );
        assert!(reason(&typed("real"), number("16777217")).contains("real keeps"));
        assert_eq!(
            convert(&typed("real"), &number("0.1")).unwrap(),
            BindValue::Float(0.1)
        );
        let sqlite_double = sqlite("DOUBLE PRECISION");
        assert!(convert(&sqlite_double, &number("0.30000000000000004")).is_err());
        assert!(convert(&double, &number("0.30000000000000004")).is_ok());
    }

    #[test]
    fn sqlite_numeric_columns_keep_integers_and_fifteen_digits() {
        let numeric = sqlite("NUMERIC");
        assert_eq!(
            convert(&numeric, &number("9223372036854775807")).unwrap(),
            BindValue::Int(i64::MAX)
        );
        assert_eq!(
            convert(&numeric, &number("72000.5")).unwrap(),
            BindValue::Float(72000.5)
        );
        assert!(reason(&numeric, number("18446744073709551617")).contains("15 significant digits"));
        assert!(reason(&numeric, number("1e-400")).contains("SQLite"));
        assert!(reason(&numeric, number("1e400")).contains("SQLite"));
        // A JSON column there has NUMERIC affinity too: a bare number in it
        // becomes a number.
        assert!(convert(&sqlite("JSONB"), &number("18446744073709551617")).is_err());
        assert!(
            convert(
                &sqlite("JSONB"),
                &json!({"n": number("18446744073709551617")})
            )
            .is_ok()
        );
        assert!(convert(&sqlite("TEXT"), &number("18446744073709551617")).is_ok());
    }

    #[test]
    fn timestamps_keep_their_offset_and_their_digits() {
        let timestamp = typed("timestamp(3) without time zone");
        assert_eq!(
            convert(&timestamp, &json!("2026-03-01T10:00:00.123000Z")).unwrap(),
            BindValue::Text("2026-03-01T10:00:00.123000".into())
        );
        assert_eq!(
            reason(&timestamp, json!("2026-03-01T10:00:00.1234Z")),
            "4 fractional digits of seconds, at most 3 fit (the rest would be rounded)"
        );
        assert!(
            reason(
                &typed("timestamptz"),
                json!("2026-03-01T10:00:00.123456789Z")
            )
            .starts_with("9 fractional digits")
        );
        assert!(reason(&typed("date"), json!("2026-03-01T23:30:00-05:00")).contains("time of day"));
    }
}
