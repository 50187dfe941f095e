//! Values that do not fit their column are never truncated or rounded
//! (issue 9, "never corrupt a row"): each is a dead delivery naming the
//! column, the value's size and the limit, while the values that fit are
//! stored exactly, on both databases, with the rest of their batch
//! delivered. Numbers keep every digit from the request body through the
//! event store and the mapping to the column.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use busbar::dev::ORGANIZATION;
use busbar::engine::{PublishError, PublishRequest};
use busbar::envelope::Envelope;
use busbar::store::Dialect;
use busbar::store::events::{self, Status};
use busbar::store::scope::OrgScope;

use crate::support::{TestDb, on_both_databases};

const SETTLE: Duration = Duration::from_secs(30);

/// The target tables: one column per kind of limit. The same text on both
/// databases, as a product would declare them.
const TABLES: &[&str] = &[
    "CREATE TABLE test.people (
        email VARCHAR(320) PRIMARY KEY,
        first_name VARCHAR(100),
        code CHAR(3)
    )",
    "CREATE TABLE test.amounts (
        name VARCHAR(50) PRIMARY KEY,
        exact NUMERIC,
        templated NUMERIC,
        money NUMERIC(12, 2),
        small SMALLINT,
        medium INTEGER,
        big BIGINT,
        ratio DOUBLE PRECISION,
        at TIMESTAMP,
        at_tz TIMESTAMPTZ,
        day DATE,
        flag BOOLEAN
    )",
];

const INTEGRATION: &str = r#"
id: probe-to-test
source: probe
target: test
retry: { max_attempts: 3, initial: 10ms, max: 50ms }
routes:
  - on: person.recorded
    steps:
      - upsert: test.people
        key: [email]
        values:
          email: $.data.email
          first_name: $.data.first_name
          code: $.data.code
  - on: value.recorded
    steps:
      - upsert: test.amounts
        key: [name]
        values:
          name: $.data.name
          exact: $.data.exact
          money: $.data.money
          small: $.data.small
          medium: $.data.medium
          big: $.data.big
          ratio: $.data.ratio
          at: $.data.at
          at_tz: $.data.at_tz
          day: $.data.day
          flag: $.data.flag
      - upsert: test.amounts
        when: "{{ data.templated is defined }}"
        key: [name]
        values:
          name: $.data.name
          templated: "{{ data.templated }}"
      - emit: value.echoed
        when: "{{ data.exact is defined }}"
        data:
          name: $.data.name
          by_path: $.data.exact
          by_template: "{{ data.exact }}"
"#;

/// A contract with number types and limits.
const CONTRACT: &str = r#"{
  "type": "object",
  "properties": {
    "name": { "type": "string" },
    "count": { "type": "integer", "minimum": 0, "maximum": 1000 },
    "id": { "type": "integer" },
    "ratio": { "type": "number", "exclusiveMinimum": 0 }
  }
}"#;

/// Creates the test tables and writes the integration (and a contract for
/// `probe/limited.recorded`) into a temporary directory.
async fn prepare(db: &TestDb) -> tempfile::TempDir {
    if db.dialect() == Dialect::Postgres {
        db.execute("CREATE SCHEMA test").await;
    }
    for table in TABLES {
        db.execute(table).await;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("probe-to-test.yaml"), INTEGRATION).unwrap();
    let contracts = dir.path().join("contracts");
    std::fs::create_dir_all(contracts.join("probe")).unwrap();
    std::fs::write(contracts.join("probe/limited.recorded.json"), CONTRACT).unwrap();
    dir
}

fn contracts(dir: &Path) -> std::path::PathBuf {
    dir.join("contracts")
}

/// An event whose `data` is JSON text, parsed the way the API parses a
/// request body, so that numbers arrive with the digits written here.
fn event(event: &str, data: &str) -> Value {
    let text = format!(
        r#"{{"source": "probe", "event": "{event}", "organization_id": "{ORGANIZATION}", "data": {data}}}"#
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text} parses: {e}"))
}

/// The value of a number, compared digit by digit whatever its notation:
/// sign, significant digits and the power of ten of the last one.
fn decimal(text: &str) -> (bool, String, i64) {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match body.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().expect("exponent")),
        None => (body, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    let mut exponent = exponent - frac.len() as i64;
    let trimmed = digits.trim_end_matches('0');
    exponent += (digits.len() - trimmed.len()) as i64;
    let significant = trimmed.trim_start_matches('0').to_owned();
    if significant.is_empty() {
        return (false, String::new(), 0);
    }
    (negative, significant, exponent)
}

#[track_caller]
fn assert_same_number(actual: &Value, expected: &str) {
    let text = match actual {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => panic!("expected the number {expected}, found {other}"),
    };
    assert_eq!(
        decimal(&text),
        decimal(expected),
        "stored {text}, sent {expected}"
    );
}

/// What must become of one value.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Delivered, and the column reads back as this (compared as a number
    /// for numeric columns, as text or an instant otherwise).
    Stored(&'static str),
    /// PostgreSQL stores it exactly; SQLite cannot hold it (a NUMERIC
    /// column there keeps 64-bit integers or doubles): dead, with these
    /// words in the reason.
    StoredOnPostgres(&'static str, &'static [&'static str]),
    /// Dead on both databases, with these words in the reason.
    Dead(&'static [&'static str]),
}

struct Case {
    name: &'static str,
    column: &'static str,
    value: &'static str,
    expect: Expect,
}

const fn case(
    name: &'static str,
    column: &'static str,
    value: &'static str,
    expect: Expect,
) -> Case {
    Case {
        name,
        column,
        value,
        expect,
    }
}

/// Every cast busbar makes, with what fits and what does not.
const AMOUNTS: &[Case] = &[
    // The issue's numbers.
    case(
        "huge-integer",
        "exact",
        "18446744073709551617",
        Expect::StoredOnPostgres("18446744073709551617", &["15 significant digits", "SQLite"]),
    ),
    case(
        "tiny",
        "exact",
        "1e-400",
        Expect::StoredOnPostgres("1e-400", &["SQLite"]),
    ),
    case(
        "enormous",
        "exact",
        "1e400",
        Expect::StoredOnPostgres("1e400", &["SQLite"]),
    ),
    case(
        "overflowing-double",
        "ratio",
        "1e400",
        Expect::Dead(&["column `ratio`", "out of range for double precision"]),
    ),
    case(
        "underflowing-double",
        "ratio",
        "1e-400",
        Expect::Dead(&["column `ratio`", "would be stored as 0"]),
    ),
    case(
        "too-precise-double",
        "ratio",
        "18446744073709551617",
        Expect::Dead(&[
            "column `ratio`",
            "significant digits",
            "18446744073709552000",
        ]),
    ),
    case("plain-double", "ratio", "0.1", Expect::Stored("0.1")),
    case(
        "exact-decimal",
        "exact",
        "12345.678901234",
        Expect::Stored("12345.678901234"),
    ),
    // Through a template, the number is the one sent, not a double.
    case(
        "templated-huge-integer",
        "templated",
        "18446744073709551617",
        Expect::StoredOnPostgres("18446744073709551617", &["SQLite"]),
    ),
    case(
        "templated-long-decimal",
        "templated",
        "0.1000000000000000055511151231257827",
        Expect::StoredOnPostgres("0.1000000000000000055511151231257827", &["SQLite"]),
    ),
    // numeric(12, 2): ten digits before the point, two after.
    case("money", "money", "72000.5", Expect::Stored("72000.50")),
    case(
        "money-trailing-zeros",
        "money",
        "19.500",
        Expect::Stored("19.50"),
    ),
    case(
        "money-widest",
        "money",
        "9999999999.99",
        Expect::Stored("9999999999.99"),
    ),
    case(
        "money-fraction-rounded",
        "money",
        "0.125",
        Expect::Dead(&[
            "column `money`",
            "3 digits after the decimal point",
            "scale of 2",
        ]),
    ),
    case(
        "money-too-big",
        "money",
        "12345678901.5",
        Expect::Dead(&[
            "column `money`",
            "11 digits before the decimal point",
            "at most 10",
        ]),
    ),
    // Integer ranges.
    case("small-max", "small", "32767", Expect::Stored("32767")),
    case("small-min", "small", "-32768", Expect::Stored("-32768")),
    case("small-exponent", "small", "1e2", Expect::Stored("100")),
    case(
        "small-over",
        "small",
        "32768",
        Expect::Dead(&[
            "column `small`",
            "out of range for smallint",
            "-32768 to 32767",
        ]),
    ),
    case(
        "small-fraction",
        "small",
        "1.5",
        Expect::Dead(&["column `small`", "not a whole number"]),
    ),
    case(
        "medium-max",
        "medium",
        "2147483647",
        Expect::Stored("2147483647"),
    ),
    case(
        "medium-over",
        "medium",
        "2147483648",
        Expect::Dead(&["column `medium`", "out of range for integer"]),
    ),
    case(
        "big-max",
        "big",
        "9223372036854775807",
        Expect::Stored("9223372036854775807"),
    ),
    case(
        "big-over",
        "big",
        "9223372036854775808",
        Expect::Dead(&["column `big`", "out of range for bigint"]),
    ),
    case(
        "big-huge",
        "big",
        "1e400",
        Expect::Dead(&["column `big`", "out of range for bigint"]),
    ),
    // Timestamps: an offset is applied (to UTC), never dropped.
    case(
        "zoned-into-timestamp",
        "at",
        "\"2026-03-01T23:30:00-05:00\"",
        Expect::Stored("2026-03-02T04:30:00"),
    ),
    case(
        "microseconds",
        "at",
        "\"2026-03-01T10:00:00.123456Z\"",
        Expect::Stored("2026-03-01T10:00:00.123456"),
    ),
    case(
        "nanoseconds",
        "at",
        "\"2026-03-01T10:00:00.123456789Z\"",
        Expect::Dead(&["column `at`", "9 fractional digits", "at most 6"]),
    ),
    case(
        "zoned-into-timestamptz",
        "at_tz",
        "\"2026-03-01T23:30:00-05:00\"",
        Expect::Stored("2026-03-02T04:30:00Z"),
    ),
    case(
        "date",
        "day",
        "\"2026-03-01\"",
        Expect::Stored("2026-03-01"),
    ),
    case(
        "midnight-into-date",
        "day",
        "\"2026-03-01T00:00:00-05:00\"",
        Expect::Stored("2026-03-01"),
    ),
    case(
        "time-of-day-into-date",
        "day",
        "\"2026-03-01T23:30:00-05:00\"",
        Expect::Dead(&["column `day`", "time of day"]),
    ),
    case("flag", "flag", "true", Expect::Stored("true")),
    case(
        "not-a-flag",
        "flag",
        "\"maybe\"",
        Expect::Dead(&["column `flag`", "not a boolean"]),
    ),
];

fn read_back_matches(column: &str, actual: &Value, expected: &str) -> Result<(), String> {
    let instant = |text: &str| {
        busbar::compile::template::parse_timestamp(text.trim())
            .ok_or_else(|| format!("`{text}` is not a timestamp"))
    };
    match column {
        "exact" | "templated" | "money" | "small" | "medium" | "big" | "ratio" => {
            let text = match actual {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                other => return Err(format!("{other} is not a number")),
            };
            if decimal(&text) == decimal(expected) {
                Ok(())
            } else {
                Err(format!("stored {text}, expected {expected}"))
            }
        }
        "at" | "at_tz" => {
            let text = actual.as_str().ok_or("not text")?;
            if instant(text)? == instant(expected)? {
                Ok(())
            } else {
                Err(format!("stored {text}, expected {expected}"))
            }
        }
        "flag" => {
            let stored = match actual {
                Value::Bool(b) => *b,
                Value::Number(n) => n.to_string() == "1",
                _ => return Err(format!("{actual} is not a boolean")),
            };
            if stored.to_string() == expected {
                Ok(())
            } else {
                Err(format!("stored {actual}, expected {expected}"))
            }
        }
        _ => {
            if actual.as_str() == Some(expected) {
                Ok(())
            } else {
                Err(format!("stored {actual}, expected {expected:?}"))
            }
        }
    }
}

/// The dead deliveries' reasons, by event id.
async fn dead_reasons(db: &TestDb) -> HashMap<Uuid, String> {
    db.deliveries(Some(Status::Dead))
        .await
        .into_iter()
        .map(|d| (d.event_id, d.last_error.unwrap_or_default()))
        .collect()
}

on_both_databases! {
    async fn every_cast_stores_what_fits_exactly_and_refuses_the_rest_with_the_limit(db: TestDb) {
        let dir = prepare(&db).await;
        let engine = db.engine_on(dir.path(), Some(&contracts(dir.path()))).await;
        // One batch: the values that do not fit must not take the others
        // down with them.
        let requests: Vec<PublishRequest> = AMOUNTS
            .iter()
            .map(|case| {
                let data = format!(
                    r#"{{"name": "{}", "{}": {}}}"#,
                    case.name, case.column, case.value
                );
                PublishRequest {
                    envelope: Envelope::from_json(&event("value.recorded", &data))
                        .unwrap_or_else(|v| panic!("{}: {v:?}", case.name)),
                    idempotency_key: None,
                }
            })
            .collect();
        let published = engine.publish_batch(requests).await.unwrap();
        db.settle(SETTLE).await;
        let dead = dead_reasons(&db).await;
        let postgres = db.dialect() == Dialect::Postgres;
        let mut failures = Vec::new();
        for (case, published) in AMOUNTS.iter().zip(&published) {
            let row = db.find("test.amounts", &[("name", Value::from(case.name))]).await;
            let reason = dead.get(&published.id);
            let (stored, words): (Option<&str>, &[&str]) = match case.expect {
                Expect::Stored(text) => (Some(text), &[]),
                Expect::StoredOnPostgres(text, _) if postgres => (Some(text), &[]),
                Expect::StoredOnPostgres(_, words) | Expect::Dead(words) => (None, words),
            };
            match (stored, &row, reason) {
                (Some(expected), Some(row), None) => {
                    if let Err(problem) = read_back_matches(case.column, &row[case.column], expected) {
                        failures.push(format!("{}: {problem}", case.name));
                    }
                }
                (Some(_), _, reason) => failures.push(format!(
                    "{}: expected delivered, found row {row:?} and dead reason {reason:?}",
                    case.name
                )),
                (None, None, Some(reason)) => {
                    let column = format!("column `{}`", case.column);
                    for word in words.iter().copied().chain([column.as_str()]) {
                        if !reason.contains(word) {
                            failures.push(format!("{}: the reason lacks {word:?}: {reason}", case.name));
                        }
                    }
                }
                (None, row, reason) => failures.push(format!(
                    "{}: expected a dead delivery, found row {row:?} and reason {reason:?}",
                    case.name
                )),
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        engine.shutdown().await;
    }
}

on_both_databases! {
    async fn an_over_long_first_name_is_refused_not_truncated(db: TestDb) {
        let dir = prepare(&db).await;
        let engine = db.engine_on(dir.path(), None).await;
        let long = "A".repeat(150);
        // 100 characters of two bytes each still fit varchar(100).
        let accented = "é".repeat(100);
        let refused = engine
            .publish_json(&event("person.recorded", &format!(r#"{{"email": "long@example.com", "first_name": "{long}"}}"#)), None)
            .await
            .unwrap();
        engine
            .publish_json(&event("person.recorded", &format!(r#"{{"email": "accent@example.com", "first_name": "{accented}"}}"#)), None)
            .await
            .unwrap();
        engine
            .publish_json(&event("person.recorded", r#"{"email": "short@example.com", "first_name": "Ada", "code": "AB"}"#), None)
            .await
            .unwrap();
        let too_long_code = engine
            .publish_json(&event("person.recorded", r#"{"email": "code@example.com", "code": "ABCD"}"#), None)
            .await
            .unwrap();
        db.settle(SETTLE).await;

        let dead = dead_reasons(&db).await;
        let reason = dead.get(&refused.id).expect("the 150-character name is a dead delivery");
        for word in ["column `first_name`", "150 characters", "limit of 100"] {
            assert!(reason.contains(word), "{word:?} in {reason}");
        }
        assert!(reason.len() < 400, "the value is abbreviated in the reason: {reason}");
        let reason = dead.get(&too_long_code.id).expect("a 4-character code into char(3) is dead");
        assert!(reason.contains("column `code`") && reason.contains("4 characters") && reason.contains("limit of 3"), "{reason}");
        assert_eq!(dead.len(), 2, "{dead:?}");

        assert!(db.find("test.people", &[("email", Value::from("long@example.com"))]).await.is_none());
        let accent = db.find("test.people", &[("email", Value::from("accent@example.com"))]).await.unwrap();
        assert_eq!(accent["first_name"], Value::from(accented));
        // char(n) is padded to n, as PostgreSQL stores it, on both databases;
        // a lookup by the unpadded value finds it.
        let short = db.find("test.people", &[("code", Value::from("AB"))]).await.expect("found by its code");
        assert_eq!(short["code"], "AB ");
        assert_eq!(short["first_name"], "Ada");
        engine.shutdown().await;
    }
}

on_both_databases! {
    async fn two_emails_equal_in_their_first_320_characters_are_not_merged(db: TestDb) {
        let dir = prepare(&db).await;
        let engine = db.engine_on(dir.path(), None).await;
        let stem = format!("{}@example.com", "x".repeat(320 - "@example.com".len()));
        assert_eq!(stem.chars().count(), 320);
        let fits = engine
            .publish_json(&event("person.recorded", &format!(r#"{{"email": "{stem}", "first_name": "Fits"}}"#)), None)
            .await
            .unwrap();
        let first = engine
            .publish_json(&event("person.recorded", &format!(r#"{{"email": "{stem}.first", "first_name": "First"}}"#)), None)
            .await
            .unwrap();
        let second = engine
            .publish_json(&event("person.recorded", &format!(r#"{{"email": "{stem}.second", "first_name": "Second"}}"#)), None)
            .await
            .unwrap();
        db.settle(SETTLE).await;
        let dead = dead_reasons(&db).await;
        assert!(!dead.contains_key(&fits.id), "{dead:?}");
        for (id, length) in [(first.id, 326), (second.id, 327)] {
            let reason = dead.get(&id).expect("an over-long email is a dead delivery");
            let words = [
                "column `email`".to_owned(),
                format!("{length} characters"),
                "limit of 320".to_owned(),
            ];
            for word in &words {
                assert!(reason.contains(word.as_str()), "{word:?} in {reason}");
            }
        }
        assert_eq!(db.count("test.people").await, 1, "only the email that fits is stored");
        let row = db.find("test.people", &[("email", Value::from(stem.clone()))]).await.unwrap();
        assert_eq!(row["first_name"], "Fits", "nobody else was merged into it");
        engine.shutdown().await;
    }
}

on_both_databases! {
    async fn numbers_keep_their_digits_in_the_event_store_and_in_emitted_events(db: TestDb) {
        let dir = prepare(&db).await;
        let engine = db.engine_on(dir.path(), None).await;
        let numbers = ["18446744073709551617", "1e-400", "1e400", "1.50", "0.1000000000000000055511151231257827"];
        let mut ids = Vec::new();
        for (i, number) in numbers.iter().enumerate() {
            let published = engine
                .publish_json(&event("value.recorded", &format!(r#"{{"name": "n{i}", "exact": {number}, "nested": {{"list": [{number}]}}}}"#)), None)
                .await
                .unwrap();
            ids.push(published.id);
        }
        db.settle(SETTLE).await;
        let mut tx = db.store.begin_read().await.unwrap();
        for (id, number) in ids.iter().zip(numbers) {
            let stored = events::get_event(&mut tx, OrgScope::Platform, *id).await.unwrap().pop().expect("stored");
            assert_same_number(&stored.envelope.data["exact"], number);
            assert_same_number(&stored.envelope.data["nested"]["list"][0], number);
            // The delivery's emitted event carries the number as sent, by
            // path and through a template.
            let children = events::children_of(&mut tx, OrgScope::Platform, stored.envelope.organization_id, *id).await.unwrap();
            if db.dialect() == Dialect::Postgres || number == "1.50" {
                assert_eq!(children.len(), 1, "{number}: {children:?}");
                assert_same_number(&children[0].envelope.data["by_path"], number);
                assert_same_number(&children[0].envelope.data["by_template"], number);
            }
        }
        tx.rollback().await.ok();
        if db.dialect() == Dialect::Postgres {
            assert!(dead_reasons(&db).await.is_empty(), "{:?}", dead_reasons(&db).await);
            let row = db.find("test.amounts", &[("name", Value::from("n0"))]).await.unwrap();
            assert_same_number(&row["exact"], "18446744073709551617");
            let row = db.find("test.amounts", &[("name", Value::from("n3"))]).await.unwrap();
            assert_eq!(row["exact"].to_string(), "1.50", "numeric keeps the scale as sent");
        }
        engine.shutdown().await;
    }
}

on_both_databases! {
    async fn numbers_no_database_can_store_are_refused_at_publish(db: TestDb) {
        let dir = prepare(&db).await;
        let engine = db.engine_on(dir.path(), None).await;
        for number in ["1e200000", "-1e200000", "1e-20000", "1.5e-16383"] {
            let result = engine
                .publish_json(&event("value.recorded", &format!(r#"{{"name": "x", "deep": [{{"exact": {number}}}]}}"#)), None)
                .await;
            let Err(PublishError::Invalid(violations)) = result else {
                panic!("{number} cannot be stored and is refused: {result:?}");
            };
            assert_eq!(violations.len(), 1, "{violations:?}");
            assert_eq!(violations[0].pointer, "/data/deep/0/exact");
            assert!(violations[0].message.contains("digits"), "{violations:?}");
        }
        // The largest numbers the event store holds are accepted.
        for number in ["1e131071", "1e-16383"] {
            engine
                .publish_json(&event("value.recorded", &format!(r#"{{"name": "y", "note": {number}}}"#)), None)
                .await
                .unwrap_or_else(|e| panic!("{number}: {e:?}"));
        }
        assert_eq!(db.count("integrations.events").await, 2);
        engine.shutdown().await;
    }
}

// The `jsonschema` crate compares numbers past a double's precision as
// doubles (its exact `arbitrary-precision` mode cannot be built here), so
// e.g. `1e-400` passes `"type": "integer"` as 0 would: no worse than
// before numbers were kept exactly, and documented in docs/LANGUAGE.md.
on_both_databases! {
    async fn contracts_check_types_and_limits_of_numbers_kept_exactly(db: TestDb) {
        let dir = prepare(&db).await;
        let engine = db.engine_on(dir.path(), Some(&contracts(dir.path()))).await;
        let publish = |data: &'static str| {
            let engine = engine.clone();
            async move { engine.publish_json(&event("limited.recorded", data), None).await }
        };
        for fits in [
            r#"{"count": 1000, "ratio": 0.5}"#,
            r#"{"count": 1e3}"#,
            r#"{"id": 18446744073709551617}"#,
            r#"{"ratio": 1e400}"#,
        ] {
            publish(fits).await.unwrap_or_else(|e| panic!("{fits} fits: {e:?}"));
        }
        for (breaks, pointer) in [
            (r#"{"count": 1001}"#, "/data/count"),
            (r#"{"count": 18446744073709551617}"#, "/data/count"),
            (r#"{"count": 1e400}"#, "/data/count"),
            (r#"{"count": -1e400}"#, "/data/count"),
            (r#"{"count": 1.5}"#, "/data/count"),
            (r#"{"id": 0.5}"#, "/data/id"),
            (r#"{"ratio": 0}"#, "/data/ratio"),
            (r#"{"ratio": -1e-400}"#, "/data/ratio"),
        ] {
            let Err(PublishError::Invalid(violations)) = publish(breaks).await else {
                panic!("{breaks} breaks the contract");
            };
            assert_eq!(violations[0].pointer, pointer, "{breaks}: {violations:?}");
        }
        engine.shutdown().await;
    }
}

on_both_databases! {
    async fn numbers_sent_over_http_keep_their_digits(db: TestDb) {
        use busbar::api::{self, ApiConfig, AppState, ReloadOutcome};
        use busbar::store::keys::{self, Scope};

        let dir = prepare(&db).await;
        let engine = db.engine_on(dir.path(), None).await;
        let key = {
            let mut tx = db.store.begin().await.unwrap();
            let key = keys::create(&mut tx, Some(ORGANIZATION), &[Scope::Publish, Scope::Read], Some("test"), busbar::store::types::Time::now())
                .await
                .unwrap()
                .key;
            tx.commit().await.unwrap();
            key
        };
        let reload = std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(ReloadOutcome::loaded(
            engine.generation().number,
        )));
        let state = AppState::new(engine.clone(), reload, ApiConfig::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(api::serve(listener, busbar::serve::app(state), async move {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::new();
        let body = format!(
            r#"{{"source": "probe", "event": "value.recorded", "organization_id": "{ORGANIZATION}",
                "data": {{"name": "http", "exact": 18446744073709551617, "money": 1.25, "tiny": 1e-400}}}}"#
        );
        let response = client
            .post(format!("{base}/api/events"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 202, "{:?}", response.text().await);
        let answer: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        let id = answer["id"].as_str().unwrap().to_owned();
        db.settle(SETTLE).await;
        let response = client
            .get(format!("{base}/api/integrations/events/{id}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        let text = response.text().await.unwrap();
        let detail: Value = serde_json::from_str(&text).unwrap();
        assert_same_number(&detail["data"]["exact"], "18446744073709551617");
        assert_same_number(&detail["data"]["tiny"], "1e-400");
        let row = db.find("test.amounts", &[("name", Value::from("http"))]).await;
        if db.dialect() == Dialect::Postgres {
            let row = row.expect("delivered");
            assert_same_number(&row["exact"], "18446744073709551617");
            assert_same_number(&row["money"], "1.25");
        } else {
            assert!(row.is_none(), "SQLite cannot hold the number: the delivery is dead");
        }

        let response = client
            .post(format!("{base}/api/events"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"source": "probe", "event": "value.recorded", "organization_id": "{ORGANIZATION}", "data": {{"exact": 1e200000}}}}"#
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 422, "a number no database can store is refused");
        let _ = stop.send(());
        server.await.unwrap().unwrap();
        engine.shutdown().await;
    }
}

on_both_databases! {
    async fn the_catalog_reads_each_columns_limits(db: TestDb) {
        use busbar::compile::ident::TableName;
        use busbar::store::catalog::{self, ColumnType, Limits};

        let postgres = db.dialect() == Dialect::Postgres;
        if postgres {
            db.execute("CREATE SCHEMA test").await;
            db.execute("CREATE DOMAIN test.short_code AS VARCHAR(5)").await;
        }
        db.execute(&format!(
            "CREATE TABLE test.shapes (
                id INTEGER PRIMARY KEY,
                name VARCHAR(100), code CHAR(3), note TEXT,
                money NUMERIC(12, 2), hundreds NUMERIC(3, {}), any_number NUMERIC,
                small SMALLINT, medium INTEGER, big BIGINT, single REAL, double DOUBLE PRECISION,
                at TIMESTAMP(3), at_tz TIMESTAMPTZ(0), plain_at TIMESTAMP,
                short {}
            )",
            if postgres { "-2" } else { "0" },
            if postgres { "test.short_code" } else { "VARCHAR(5)" }
        ))
        .await;
        let mut tx = db.store.begin_read().await.unwrap();
        let info = catalog::read_table(&mut tx, &TableName::parse("test.shapes").unwrap())
            .await
            .unwrap();
        tx.rollback().await.ok();
        let limits = |name: &str| info.column(name).unwrap().limits;
        let none = Limits::NONE;
        assert_eq!(limits("name"), Limits { max_chars: Some(100), ..none });
        assert_eq!(limits("code"), Limits { max_chars: Some(3), padded: true, ..none });
        assert_eq!(limits("note"), none);
        assert_eq!(limits("money"), Limits { numeric: Some((12, 2)), ..none });
        assert_eq!(
            limits("hundreds"),
            Limits { numeric: Some((3, if postgres { -2 } else { 0 })), ..none }
        );
        assert_eq!(limits("any_number"), none);
        assert_eq!(limits("small"), Limits { integer_bits: 16, ..none });
        assert_eq!(limits("medium"), Limits { integer_bits: 32, ..none });
        assert_eq!(limits("big"), none);
        // On SQLite, INTEGER PRIMARY KEY is the 64-bit rowid.
        assert_eq!(limits("id").integer_bits, if postgres { 32 } else { 64 });
        assert_eq!(limits("single"), Limits { single_precision: true, ..none });
        assert_eq!(limits("double"), none);
        assert_eq!(limits("at"), Limits { second_digits: 3, ..none });
        assert_eq!(limits("at_tz"), Limits { second_digits: 0, ..none });
        assert_eq!(info.column("at_tz").unwrap().ty, ColumnType::TimestampTz);
        assert_eq!(limits("plain_at"), none);
        let short = info.column("short").unwrap();
        assert_eq!(short.ty, ColumnType::Text, "a domain is read as its base type");
        assert_eq!(short.limits, Limits { max_chars: Some(5), ..none });
        let cast_type = |name: &str| {
            info.column(name).unwrap().cast_type.as_ref().map(|t| t.as_str().to_owned())
        };
        if postgres {
            assert_eq!(
                cast_type("short").as_deref(),
                Some("varchar"),
                "casts never carry a truncating modifier"
            );
            assert_eq!(cast_type("code").as_deref(), Some("bpchar"));
            assert_eq!(info.column("name").unwrap().sql_type, "character varying(100)");
            // Type names as `format_type` writes them, quoted where needed,
            // are cast to; catalog column names need not be identifiers.
            db.execute(r#"CREATE TYPE test."Mood" AS ENUM ('ok', 'not ok')"#).await;
            db.execute(r#"CREATE TABLE test.moods (m test."Mood", tags TEXT[], "firstName" TEXT)"#)
                .await;
            let mut tx = db.store.begin_read().await.unwrap();
            let info = catalog::read_table(&mut tx, &TableName::parse("test.moods").unwrap())
                .await
                .unwrap();
            tx.rollback().await.ok();
            let cast_type = |name: &str| {
                info.column(name).unwrap().cast_type.as_ref().map(|t| t.as_str().to_owned())
            };
            assert_eq!(cast_type("m").as_deref(), Some(r#"test."Mood""#));
            assert_eq!(cast_type("tags").as_deref(), Some("text[]"));
            assert_eq!(cast_type("firstName").as_deref(), Some("text"));
        } else {
            assert_eq!(cast_type("short"), None, "SQLite binds native values");
        }
    }
}
