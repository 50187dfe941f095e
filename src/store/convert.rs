//! Converting mapped JSON values to target columns' types.
//!
//! Every value is checked and normalised here, in Rust, so that a value that
//! does not fit fails with the column, the value and the reason (a permanent
//! error: the delivery goes to dead letter), rather than with whatever the
//! database would say.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::StoreError;
use super::catalog::{ColumnInfo, ColumnType};

/// A value ready to bind. PostgreSQL receives its text form and casts it
/// to the column type; SQLite receives it natively.
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

/// A short form of a value for messages.
pub fn show(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 80 {
        format!("{}…", text.chars().take(80).collect::<String>())
    } else {
        text
    }
}

/// Converts `value` for `column`.
pub fn convert(column: &ColumnInfo, value: &Value) -> Result<BindValue, StoreError> {
    let fail = |reason: String| StoreError::Conversion {
        column: column.name.clone(),
        value: show(value),
        ty: column.sql_type.clone(),
        reason,
    };
    if value.is_null() {
        return Ok(BindValue::Null);
    }
    match column.ty {
        ColumnType::Uuid => match value {
            Value::String(s) => Uuid::parse_str(s.trim())
                .map(|u| BindValue::Text(u.hyphenated().to_string()))
                .map_err(|e| fail(format!("not a UUID ({e})"))),
            _ => Err(fail("a UUID must be a string".into())),
        },
        ColumnType::Text => match value {
            Value::String(s) => Ok(BindValue::Text(s.clone())),
            Value::Number(n) => Ok(BindValue::Text(n.to_string())),
            Value::Bool(b) => Ok(BindValue::Text(b.to_string())),
            _ => Err(fail("an object or list cannot go into a text column; use a json column or the `json` filter".into())),
        },
        ColumnType::Integer => match value {
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Ok(BindValue::Int(i))
                } else {
                    match n.as_f64() {
                        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(BindValue::Int(f as i64)),
                        _ => Err(fail("not a whole number in range".into())),
                    }
                }
            }
            Value::String(s) => s
                .trim()
                .parse::<i64>()
                .map(BindValue::Int)
                .map_err(|_| fail("not a whole number".into())),
            _ => Err(fail("not a whole number".into())),
        },
        ColumnType::Float => match value {
            Value::Number(n) => n
                .as_f64()
                .map(BindValue::Float)
                .ok_or_else(|| fail("not a number".into())),
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(BindValue::Float)
                .ok_or_else(|| fail("not a number".into())),
            _ => Err(fail("not a number".into())),
        },
        ColumnType::Numeric => {
            let text = match value {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.trim().to_owned(),
                _ => return Err(fail("not a number".into())),
            };
            if is_decimal(&text) {
                Ok(BindValue::Text(text))
            } else {
                Err(fail("not a decimal number".into()))
            }
        }
        ColumnType::Boolean => match value {
            Value::Bool(b) => Ok(BindValue::Bool(*b)),
            Value::Number(n) if n.as_i64() == Some(0) => Ok(BindValue::Bool(false)),
            Value::Number(n) if n.as_i64() == Some(1) => Ok(BindValue::Bool(true)),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "t" | "yes" | "y" | "1" | "on" => Ok(BindValue::Bool(true)),
                "false" | "f" | "no" | "n" | "0" | "off" => Ok(BindValue::Bool(false)),
                _ => Err(fail("not a boolean (true/false)".into())),
            },
            _ => Err(fail("not a boolean (true/false)".into())),
        },
        ColumnType::Date => match value {
            Value::String(s) => parse_date(s.trim())
                .map(|d| BindValue::Text(d.format("%Y-%m-%d").to_string()))
                .ok_or_else(|| fail("not a date (YYYY-MM-DD) or RFC 3339 timestamp".into())),
            _ => Err(fail("a date must be a string (YYYY-MM-DD)".into())),
        },
        ColumnType::Timestamp => match value {
            Value::String(s) => parse_timestamp(s.trim())
                .map(|t| BindValue::Text(t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string()))
                .ok_or_else(|| fail("not an RFC 3339 timestamp".into())),
            _ => Err(fail("a timestamp must be a string (RFC 3339)".into())),
        },
        ColumnType::TimestampTz => match value {
            Value::String(s) => parse_timestamp(s.trim())
                .map(|t| BindValue::Text(t.to_rfc3339_opts(SecondsFormat::Micros, true)))
                .ok_or_else(|| fail("not an RFC 3339 timestamp".into())),
            _ => Err(fail("a timestamp must be a string (RFC 3339)".into())),
        },
        ColumnType::Json => Ok(BindValue::Text(value.to_string())),
        ColumnType::Other => match value {
            Value::String(s) => Ok(BindValue::Text(s.clone())),
            Value::Number(_) | Value::Bool(_) => Ok(BindValue::Text(value.to_string())),
            _ => Err(fail("an object or list has no text form for this column type".into())),
        },
    }
}

fn is_decimal(text: &str) -> bool {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match body.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (body, None),
    };
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            (digits(int) || int.is_empty())
                && (digits(frac) || frac.is_empty())
                && !(int.is_empty() && frac.is_empty())
        }
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e)));
    mantissa_ok && exponent_ok
}

/// A timestamp: RFC 3339, or a date and time without offset (taken as UTC),
/// or a date (midnight UTC).
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// A date: `YYYY-MM-DD`, or the UTC date of a timestamp.
pub fn parse_date(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .or_else(|| parse_timestamp(text).map(|t| t.date_naive()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn column(ty: ColumnType) -> ColumnInfo {
        ColumnInfo::new("c", ty, ty.name())
    }

    fn ok(ty: ColumnType, value: Value) -> BindValue {
        convert(&column(ty), &value).unwrap()
    }

    fn err(ty: ColumnType, value: Value) -> String {
        convert(&column(ty), &value).unwrap_err().to_string()
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
        assert_eq!(
            ok(ColumnType::Numeric, json!(72000.5)),
            BindValue::Text("72000.5".into())
        );
        assert_eq!(ok(ColumnType::Boolean, json!("yes")), BindValue::Bool(true));
        assert_eq!(
            ok(ColumnType::Date, json!("2026-03-01T23:30:00-05:00")),
            BindValue::Text("2026-03-02".into())
        );
        assert_eq!(
            ok(ColumnType::TimestampTz, json!("2026-03-01T23:30:00-05:00")),
            BindValue::Text("2026-03-02T04:30:00.000000Z".into())
        );
        assert_eq!(
            ok(ColumnType::Json, json!({"a": [1]})),
            BindValue::Text("{\"a\":[1]}".into())
        );
        assert_eq!(ok(ColumnType::Text, json!(null)), BindValue::Null);
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
    fn decimals() {
        for good in ["1", "-1.5", "+.5", "1.", "1e10", "1.5E-3"] {
            assert!(is_decimal(good), "{good}");
        }
        for bad in ["", ".", "1,5", "1e", "abc", "--1"] {
            assert!(!is_decimal(bad), "{bad}");
        }
    }
}
