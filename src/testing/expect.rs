//! Comparing what a case expects with what the engine did: rows, emitted
//! events, deliveries. Pure: the actual state comes in as data, and every
//! mismatch comes out as a [`Failure`] with the position of the expectation
//! and a diff of expected (`-`) and actual (`+`) lines.

use serde_json::{Map, Value};

use super::file::{ExpectedDelivery, ExpectedEvent, ListExpectation, Match, TableExpectation};
use crate::compile::template::{parse_date, parse_timestamp};
use crate::decimal::Decimal;
use crate::diagnostics::{Position, did_you_mean};
use crate::store::catalog::{ColumnInfo, ColumnType, TableInfo};
use crate::store::convert;
use crate::store::events::{DeliveryView, Status, StoredEvent};

/// One thing that did not hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Where the expectation (or the case) stands in the test file.
    pub position: Position,
    pub message: String,
    pub lines: Vec<Line>,
}

impl Failure {
    pub fn new(position: Position, message: impl Into<String>) -> Failure {
        Failure {
            position,
            message: message.into(),
            lines: Vec::new(),
        }
    }
}

/// One line of a failure's diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// What the test file says (`-`).
    Expected(String),
    /// What the database holds (`+`).
    Actual(String),
    /// The same on both sides.
    Same(String),
    /// An explanation.
    Note(String),
}

/// A value as shown in diffs: compact JSON.
pub fn show(value: &Value) -> String {
    value.to_string()
}

/// Whether a stored value equals the expected one, as the column's type
/// sees it: `72000` equals `72000.00` in a numeric column, `true` equals
/// SQLite's `1` in a boolean one, timestamps are compared as instants.
pub fn same_value(column: Option<&ColumnInfo>, expected: &Value, actual: &Value) -> bool {
    if expected.is_null() || actual.is_null() {
        return expected.is_null() && actual.is_null();
    }
    if expected == actual {
        return true;
    }
    let Some(column) = column else {
        return same_json(expected, actual);
    };
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    match column.ty {
        // Exact values compare exactly: `1.50` is `1.5`, and
        // 18446744073709551617 is not 18446744073709551616.
        ColumnType::Integer | ColumnType::Numeric => match (decimal(expected), decimal(actual)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        },
        ColumnType::Float => match (decimal(expected), decimal(actual)) {
            (Some(a), Some(b)) => {
                let (a, b) = (a.to_f64(), b.to_f64());
                a == b || (a - b).abs() <= f64::EPSILON * a.abs().max(b.abs())
            }
            _ => false,
        },
        ColumnType::Timestamp | ColumnType::TimestampTz => {
            match (
                text(expected).and_then(|t| parse_timestamp(&t)),
                text(actual).and_then(|t| parse_timestamp(&t)),
            ) {
                (Some(a), Some(b)) => a == b,
                _ => false,
            }
        }
        ColumnType::Date => match (
            text(expected).and_then(|t| parse_date(&t)),
            text(actual).and_then(|t| parse_date(&t)),
        ) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        },
        ColumnType::Json => match actual {
            Value::String(s) => {
                serde_json::from_str::<Value>(s).is_ok_and(|v| same_json(expected, &v))
            }
            _ => same_json(expected, actual),
        },
        ColumnType::Uuid | ColumnType::Boolean | ColumnType::Text | ColumnType::Other => {
            match (
                convert::convert(column, expected),
                convert::convert(column, actual),
            ) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            }
        }
    }
}

/// A number, or a string holding one.
fn decimal(value: &Value) -> Option<Decimal> {
    match value {
        Value::Number(n) => Some(Decimal::of(n)),
        Value::String(s) => Decimal::parse(s.trim()),
        _ => None,
    }
}

/// JSON equality where numbers compare by value: `1` equals `1.0`.
fn same_json(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Number(a), Value::Number(b)) => Decimal::of(a) == Decimal::of(b),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same_json(a, b))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => expected == actual,
    }
}

/// Whether `actual` has everything `expected` lists: objects compared key
/// by key (other keys may exist), everything else exactly.
pub fn contains(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|w| contains(v, w))),
        _ => same_json(expected, actual),
    }
}

/// Pairs each expected item with a distinct actual item it matches, in
/// order (first come, first served).
fn assign<E, A>(
    expected: &[E],
    actual: &[A],
    matches: impl Fn(&E, &A) -> bool,
) -> Vec<Option<usize>> {
    let mut used = vec![false; actual.len()];
    expected
        .iter()
        .map(|e| {
            let found = (0..actual.len()).find(|&j| !used[j] && matches(e, &actual[j]));
            if let Some(j) = found {
                used[j] = true;
            }
            found
        })
        .collect()
}

fn unused(assigned: &[Option<usize>], total: usize) -> Vec<usize> {
    (0..total)
        .filter(|j| !assigned.contains(&Some(*j)))
        .collect()
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// A row as one line, with only `columns` (all when empty).
fn row_line(row: &Map<String, Value>, columns: &[String]) -> String {
    let shown: Vec<String> = if columns.is_empty() {
        row.iter()
            .map(|(k, v)| format!("{k}: {}", show(v)))
            .collect()
    } else {
        columns
            .iter()
            .map(|k| {
                format!(
                    "{k}: {}",
                    row.get(k).map_or("(no such column)".to_owned(), show)
                )
            })
            .collect()
    };
    format!("{{{}}}", shown.join(", "))
}

/// At most this many rows are listed under a failure.
const LIST_LIMIT: usize = 10;

/// Checks one table's rows.
pub fn rows(
    expectation: &TableExpectation,
    info: &TableInfo,
    actual: &[Map<String, Value>],
) -> Vec<Failure> {
    let table = &expectation.table;
    let mut failures = Vec::new();
    // Unknown columns first: such a row can never match.
    let mut bad_rows = Vec::new();
    for (i, (row, position)) in expectation.rows.iter().enumerate() {
        for column in row.keys() {
            if info.column(column).is_none() {
                let mut failure =
                    Failure::new(*position, format!("`{table}` has no column `{column}`"));
                if let Some(help) =
                    did_you_mean(column, info.columns.iter().map(|c| c.name.as_str()))
                {
                    failure.lines.push(Line::Note(help));
                }
                failures.push(failure);
                bad_rows.push(i);
            }
        }
    }
    let row_matches = |expected: &(Map<String, Value>, Position), actual: &Map<String, Value>| {
        expected.0.iter().all(|(k, v)| {
            actual
                .get(k)
                .is_some_and(|a| same_value(info.column(k), v, a))
        })
    };
    let assigned = assign(&expectation.rows, actual, row_matches);
    let listed: Vec<String> = {
        let mut columns: Vec<String> = Vec::new();
        for (row, _) in &expectation.rows {
            for k in row.keys() {
                if !columns.contains(k) && info.column(k).is_some() {
                    columns.push(k.clone());
                }
            }
        }
        columns
    };
    // Rows shown as the closest to an expected row are not reported again
    // as rows the test does not list.
    let mut shown = Vec::new();
    for (i, ((row, position), found)) in expectation.rows.iter().zip(&assigned).enumerate() {
        if found.is_some() || bad_rows.contains(&i) {
            continue;
        }
        let mut failure = Failure::new(*position, format!("no row of `{table}` matches this one"));
        // The closest row: the most columns equal, among the rows no other
        // expected row took.
        let free = unused(&assigned, actual.len());
        let closest = free
            .iter()
            .copied()
            .filter(|j| !shown.contains(j))
            .max_by_key(|&j| {
                row.iter()
                    .filter(|(k, v)| {
                        actual[j]
                            .get(*k)
                            .is_some_and(|x| same_value(info.column(k), v, x))
                    })
                    .count()
            });
        shown.extend(closest);
        let closest = closest.map(|j| &actual[j]);
        match closest {
            None if actual.is_empty() => failure
                .lines
                .push(Line::Note(format!("`{table}` is empty"))),
            None => failure.lines.push(Line::Note(format!(
                "each of the {} in `{table}` matches another expected row",
                plural(actual.len(), "row")
            ))),
            Some(closest) => {
                failure.lines.push(Line::Note(format!(
                    "- expected, + the closest row (`{table}` holds {}):",
                    plural(actual.len(), "row")
                )));
                for (column, value) in row {
                    let other = closest.get(column).unwrap_or(&Value::Null);
                    if same_value(info.column(column), value, other) {
                        failure
                            .lines
                            .push(Line::Same(format!("{column}: {}", show(other))));
                    } else {
                        failure
                            .lines
                            .push(Line::Expected(format!("{column}: {}", show(value))));
                        failure
                            .lines
                            .push(Line::Actual(format!("{column}: {}", show(other))));
                    }
                }
            }
        }
        failures.push(failure);
    }
    if expectation.matching == Match::Exact {
        for j in unused(&assigned, actual.len())
            .into_iter()
            .filter(|j| !shown.contains(j))
        {
            let mut failure = Failure::new(
                expectation.position,
                format!("`{table}` holds a row the test does not list"),
            );
            failure
                .lines
                .push(Line::Actual(row_line(&actual[j], &listed)));
            failures.push(failure);
        }
    }
    if let Some(count) = expectation.count
        && count != actual.len()
    {
        let mut failure = Failure::new(
            expectation.position,
            format!(
                "`{table}` holds {}, not {count}",
                plural(actual.len(), "row")
            ),
        );
        failure.lines.push(Line::Expected(plural(count, "row")));
        for row in actual.iter().take(LIST_LIMIT) {
            failure.lines.push(Line::Actual(row_line(row, &listed)));
        }
        if actual.len() > LIST_LIMIT {
            failure.lines.push(Line::Note(format!(
                "… and {} more",
                actual.len() - LIST_LIMIT
            )));
        }
        failures.push(failure);
    }
    failures
}

/// `a.b.c: value` for every leaf of `value` (for diffs of event data).
fn leaves(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&path, v, out);
            }
        }
        other => out.push((prefix.to_owned(), other.clone())),
    }
}

fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(value, |v, k| v.get(k))
}

fn event_line(event: &StoredEvent) -> String {
    format!(
        "{}/{} {}",
        event.envelope.source,
        event.envelope.event,
        show(&event.envelope.data)
    )
}

/// Checks the events the deliveries emitted.
pub fn events(
    expectation: &ListExpectation<ExpectedEvent>,
    emitted: &[StoredEvent],
) -> Vec<Failure> {
    let mut failures = Vec::new();
    let event_matches = |expected: &(ExpectedEvent, Position), actual: &StoredEvent| {
        let e = &expected.0;
        e.event == actual.envelope.event
            && e.source
                .as_ref()
                .is_none_or(|s| *s == actual.envelope.source)
            && e.data
                .as_ref()
                .is_none_or(|d| contains(d, &actual.envelope.data))
    };
    let assigned = assign(&expectation.items, emitted, event_matches);
    let mut shown = Vec::new();
    for ((expected, position), found) in expectation.items.iter().zip(&assigned) {
        if found.is_some() {
            continue;
        }
        let mut failure = Failure::new(
            *position,
            format!("no emitted `{}` event matches this one", expected.event),
        );
        let same_name: Vec<usize> = unused(&assigned, emitted.len())
            .into_iter()
            .filter(|&j| emitted[j].envelope.event == expected.event && !shown.contains(&j))
            .collect();
        shown.extend(same_name.first().copied());
        match same_name.first().map(|&j| &emitted[j]) {
            None if emitted.is_empty() => failure
                .lines
                .push(Line::Note("no event was emitted".into())),
            None => {
                failure.lines.push(Line::Note("emitted instead:".into()));
                for event in emitted.iter().take(LIST_LIMIT) {
                    failure.lines.push(Line::Actual(event_line(event)));
                }
            }
            Some(closest) => {
                failure.lines.push(Line::Note(format!(
                    "- expected, + the emitted `{}` closest in order:",
                    expected.event
                )));
                if let Some(source) = &expected.source
                    && *source != closest.envelope.source
                {
                    failure
                        .lines
                        .push(Line::Expected(format!("source: {source}")));
                    failure
                        .lines
                        .push(Line::Actual(format!("source: {}", closest.envelope.source)));
                }
                let mut expected_leaves = Vec::new();
                if let Some(data) = &expected.data {
                    leaves("", data, &mut expected_leaves);
                }
                for (path, value) in expected_leaves {
                    let actual = lookup(&closest.envelope.data, &path);
                    let shown = |v: Option<&Value>| v.map_or("(missing)".to_owned(), show);
                    if actual.is_some_and(|a| contains(&value, a)) {
                        failure
                            .lines
                            .push(Line::Same(format!("data.{path}: {}", shown(actual))));
                    } else {
                        failure
                            .lines
                            .push(Line::Expected(format!("data.{path}: {}", show(&value))));
                        failure
                            .lines
                            .push(Line::Actual(format!("data.{path}: {}", shown(actual))));
                    }
                }
            }
        }
        failures.push(failure);
    }
    if expectation.matching == Match::Exact {
        for j in unused(&assigned, emitted.len())
            .into_iter()
            .filter(|j| !shown.contains(j))
        {
            let mut failure = Failure::new(
                expectation.position,
                "an event was emitted that the test does not list",
            );
            failure.lines.push(Line::Actual(event_line(&emitted[j])));
            failures.push(failure);
        }
    }
    if let Some(count) = expectation.count
        && count != emitted.len()
    {
        let mut failure = Failure::new(
            expectation.position,
            match emitted.len() {
                1 => format!("1 event was emitted, not {count}"),
                n => format!("{n} events were emitted, not {count}"),
            },
        );
        for event in emitted.iter().take(LIST_LIMIT) {
            failure.lines.push(Line::Actual(event_line(event)));
        }
        failures.push(failure);
    }
    failures
}

fn delivery_line(d: &DeliveryView) -> String {
    let mut line = format!(
        "{} ({}): {}",
        d.integration,
        d.route_event,
        d.status.as_str()
    );
    if let Some(reason) = &d.last_error {
        line.push_str(&format!(" — {reason}"));
    }
    line
}

/// Checks the deliveries. A dead delivery that no expectation matches
/// fails the case (at `case_position`): a test that passes while
/// something went to dead letter would hide the bug it is there to find.
pub fn deliveries(
    expectation: Option<&ListExpectation<ExpectedDelivery>>,
    actual: &[DeliveryView],
    case_position: Position,
) -> Vec<Failure> {
    let mut failures = Vec::new();
    let empty = Vec::new();
    let items = expectation.map_or(&empty, |e| &e.items);
    let delivery_matches = |expected: &(ExpectedDelivery, Position), d: &DeliveryView| {
        let e = &expected.0;
        e.integration.as_ref().is_none_or(|i| *i == d.integration)
            && e.event.as_ref().is_none_or(|ev| *ev == d.route_event)
            && e.status.is_none_or(|s| s == d.status)
            && e.reason
                .as_ref()
                .is_none_or(|r| r.is_match(d.last_error.as_deref().unwrap_or("")))
    };
    let assigned = assign(items, actual, delivery_matches);
    let all = |failure: &mut Failure| {
        if actual.is_empty() {
            failure
                .lines
                .push(Line::Note("there were no deliveries".into()));
        } else {
            failure.lines.push(Line::Note(match actual.len() {
                1 => "the one delivery:".to_owned(),
                n => format!("the {n} deliveries:"),
            }));
            for d in actual.iter().take(LIST_LIMIT * 2) {
                failure.lines.push(Line::Actual(delivery_line(d)));
            }
        }
    };
    for ((expected, position), found) in items.iter().zip(&assigned) {
        if found.is_some() {
            continue;
        }
        let mut wanted = Vec::new();
        if let Some(i) = &expected.integration {
            wanted.push(format!("integration {i}"));
        }
        if let Some(e) = &expected.event {
            wanted.push(format!("event {e}"));
        }
        if let Some(s) = expected.status {
            wanted.push(format!("status {}", s.as_str()));
        }
        if let Some(r) = &expected.reason {
            wanted.push(format!("reason /{}/", r.as_str()));
        }
        let mut failure = Failure::new(*position, "no delivery matches this one");
        failure.lines.push(Line::Expected(wanted.join(", ")));
        all(&mut failure);
        failures.push(failure);
    }
    let leftover = unused(&assigned, actual.len());
    for &j in &leftover {
        let d = &actual[j];
        if d.status == Status::Dead {
            let mut failure = Failure::new(
                case_position,
                format!("a delivery of `{}` went to dead letter", d.integration),
            );
            failure.lines.push(Line::Actual(delivery_line(d)));
            failure.lines.push(Line::Note(
                "expect it under `expect.deliveries` with `status: dead` if the case is about it"
                    .into(),
            ));
            failures.push(failure);
        } else if expectation.is_some_and(|e| e.matching == Match::Exact) {
            let mut failure = Failure::new(
                expectation.map_or(case_position, |e| e.position),
                "a delivery the test does not list",
            );
            failure.lines.push(Line::Actual(delivery_line(d)));
            failures.push(failure);
        }
    }
    if let Some(expectation) = expectation
        && let Some(count) = expectation.count
        && count != actual.len()
    {
        let mut failure = Failure::new(
            expectation.position,
            match actual.len() {
                1 => format!("there was 1 delivery, not {count}"),
                n => format!("there were {n} deliveries, not {count}"),
            },
        );
        all(&mut failure);
        failures.push(failure);
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_compare_as_their_column_type() {
        let column = |ty: ColumnType| ColumnInfo::new("c", ty, ty.name());
        assert!(same_value(
            Some(&column(ColumnType::Numeric)),
            &json!(72000),
            &json!(72000.00)
        ));
        assert!(same_value(
            Some(&column(ColumnType::Numeric)),
            &json!("72000.5"),
            &json!(72000.5)
        ));
        let exact = |text: &str| serde_json::from_str::<Value>(text).unwrap();
        assert!(!same_value(
            Some(&column(ColumnType::Numeric)),
            &exact("18446744073709551617"),
            &exact("18446744073709551616")
        ));
        assert!(same_value(
            Some(&column(ColumnType::Numeric)),
            &exact("1e-400"),
            &exact(&format!("0.{}1", "0".repeat(399)))
        ));
        assert!(!contains(&exact("[1e400]"), &exact("[1e401]")));
        assert!(same_value(
            Some(&column(ColumnType::Boolean)),
            &json!(true),
            &json!(1)
        ));
        assert!(same_value(
            Some(&column(ColumnType::TimestampTz)),
            &json!("2026-01-02T10:00:00+01:00"),
            &json!("2026-01-02T09:00:00Z")
        ));
        assert!(same_value(
            Some(&column(ColumnType::Uuid)),
            &json!("7D0E6A52-3C59-4A8E-9D7A-0C1F2B3A4D5E"),
            &json!("7d0e6a52-3c59-4a8e-9d7a-0c1f2b3a4d5e")
        ));
        assert!(!same_value(
            Some(&column(ColumnType::Text)),
            &json!("Ada"),
            &json!("ada")
        ));
        assert!(!same_value(
            Some(&column(ColumnType::Text)),
            &json!(null),
            &json!("")
        ));
    }

    #[test]
    fn data_is_compared_as_a_subset() {
        assert!(contains(
            &json!({"a": {"b": 1}}),
            &json!({"a": {"b": 1.0, "c": 2}, "d": 3})
        ));
        assert!(!contains(&json!({"a": [1]}), &json!({"a": [1, 2]})));
    }
}
