//! The event envelope: `{id, source, event, organization_id, occurred_at, data}`.
//!
//! Producers send JSON (the id and time are optional). [`SentEvent`] is the
//! one definition of that JSON: the OpenAPI document's schema is derived
//! from it (`utoipa::ToSchema`), and [`Envelope::from_json`] reads events
//! with its `serde` deserializer, reporting every problem at once as JSON
//! pointers, so the document and the validation cannot say different
//! things. The envelope it gives is what mappings see as `event`.
//!
//! A leaf: it uses nothing of busbar's but `decimal`.

use chrono::{DateTime, Timelike, Utc};
use serde::de::value::{MapAccessDeserializer, StrDeserializer};
use serde::de::{self, DeserializeSeed, MapAccess};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

use crate::decimal::Decimal;

/// The fields of an envelope, as templates and paths see them (the
/// properties of [`SentEvent`], in order).
pub const ENVELOPE_FIELDS: [&str; 6] = [
    "id",
    "source",
    "event",
    "organization_id",
    "occurred_at",
    "data",
];

/// A problem with a published event — its envelope, or its `data`
/// against the event's contract — as a JSON pointer into the event and a
/// message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub pointer: String,
    pub message: String,
}

/// An event as a producer sends it. Only `source`, `event` and
/// `organization_id` are required; busbar gives an event without `id` a new
/// UUIDv7 and one without `occurred_at` the current time.
///
/// The one definition of the envelope's JSON: the OpenAPI document's
/// `EventInput` is derived from it, and [`Envelope::from_json`] reads
/// events with its deserializer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = EventInput)]
pub struct SentEvent {
    /// Supply it to make publishing idempotent: a second publish with the
    /// same id returns the stored event and creates nothing.
    #[serde(default, deserialize_with = "optional_uuid")]
    id: Option<Uuid>,
    /// The publishing product.
    source: ProductName,
    /// The dotted event name.
    event: EventName,
    /// The organization the event belongs to.
    #[serde(deserialize_with = "uuid")]
    organization_id: Uuid,
    /// When the business fact happened (RFC 3339).
    #[serde(default, deserialize_with = "optional_timestamp")]
    occurred_at: Option<DateTime<Utc>>,
    /// The payload, checked against the event's contract
    /// (`schemas/events/<source>/<event>.json`) when there is one.
    #[serde(default, deserialize_with = "optional_object")]
    data: Option<Map<String, Value>>,
}

/// A product's name, as an event's `source`: lowercase letters, digits
/// and `_`, at most 50 (`recruitiq`, `nexus`). Its schema and its
/// deserializer are written side by side, from the same limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductName(String);

/// An event's name: dotted product names, at most 100 characters
/// (`candidate.hired`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventName(String);

/// The longest product name.
const MAX_PRODUCT_NAME: usize = 50;
/// The longest event name.
const MAX_EVENT_NAME: usize = 100;

impl PartialSchema for ProductName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("A product's name: lowercase letters, digits and `_`."))
            .pattern(Some("^[a-z][a-z0-9_]*$"))
            .max_length(Some(MAX_PRODUCT_NAME))
            .examples(["recruitiq"])
            .into()
    }
}

impl ToSchema for ProductName {}

impl PartialSchema for EventName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A dotted event name: product names (each at most 50 characters) joined by `.`.",
            ))
            // Each word is a product name, at most MAX_PRODUCT_NAME long.
            .pattern(Some("^[a-z][a-z0-9_]{0,49}(\\.[a-z][a-z0-9_]{0,49})*$"))
            .max_length(Some(MAX_EVENT_NAME))
            .examples(["candidate.hired"])
            .into()
    }
}

impl ToSchema for EventName {}

impl From<ProductName> for String {
    fn from(name: ProductName) -> String {
        name.0
    }
}

impl From<EventName> for String {
    fn from(name: EventName) -> String {
        name.0
    }
}

impl<'de> Deserialize<'de> for ProductName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ProductName, D::Error> {
        read(deserializer, |value| {
            let name = string(value)?;
            if is_product_name(&name) {
                Ok(ProductName(name))
            } else {
                Err(format!(
                    "`{name}` is not a product name (lowercase letters, digits and `_`, at most {MAX_PRODUCT_NAME})"
                ))
            }
        })
    }
}

impl<'de> Deserialize<'de> for EventName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<EventName, D::Error> {
        read(deserializer, |value| {
            let name = string(value)?;
            if is_event_name(&name) {
                Ok(EventName(name))
            } else {
                Err(format!(
                    "`{name}` is not an event name such as `candidate.hired` (at most {MAX_EVENT_NAME} characters)"
                ))
            }
        })
    }
}

/// An event as stored and routed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique id; a producer that supplies it makes publishing idempotent.
    pub id: Uuid,
    /// The product that published it.
    pub source: String,
    /// The dotted event name, e.g. `candidate.hired`.
    pub event: String,
    /// The organization the event belongs to; every query is scoped by it.
    pub organization_id: Uuid,
    /// When the business fact happened, per the producer.
    pub occurred_at: DateTime<Utc>,
    /// The payload, checked against the event's contract when there is one.
    pub data: Value,
}

impl Envelope {
    /// The envelope as the JSON value paths and templates read.
    pub fn to_json(&self) -> Value {
        self.clone().into_json()
    }

    /// The envelope as JSON, moving `data` rather than copying it.
    pub fn into_json(self) -> Value {
        let mut map = Map::with_capacity(6);
        map.insert("id".into(), Value::String(self.id.to_string()));
        map.insert("source".into(), Value::String(self.source.clone()));
        map.insert("event".into(), Value::String(self.event.clone()));
        map.insert(
            "organization_id".into(),
            Value::String(self.organization_id.to_string()),
        );
        map.insert(
            "occurred_at".into(),
            Value::String(
                self.occurred_at
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            ),
        );
        map.insert("data".into(), self.data);
        Value::Object(map)
    }

    /// Validates an event as a producer sent it, as [`SentEvent`] says.
    /// Missing `id` gets a new UUIDv7 and missing `occurred_at` the current
    /// time. Beyond the schema, `data` may hold nothing a database could not
    /// store (U+0000, numbers beyond `numeric`'s range). Returns every
    /// violation at once.
    pub fn from_json(value: &Value) -> Result<Envelope, Vec<Violation>> {
        // Only an object: serde would also read a struct from an array of
        // its fields' values, in order.
        let Value::Object(object) = value else {
            return Err(vec![violation("", "an event must be a JSON object".into())]);
        };
        // `data` is cloned once as it is, not rebuilt through serde (which
        // costs a publish of large events measurably more): the
        // deserializer sees an empty object in its place, so it still
        // checks that `data` is an object.
        let fields: Map<String, Value> = object
            .iter()
            .map(|(key, field)| match field {
                Value::Object(_) if key == "data" => (key.clone(), Value::Object(Map::new())),
                _ => (key.clone(), field.clone()),
            })
            .collect();
        let input = match SentEvent::deserialize(&Value::Object(fields)) {
            Ok(input) => input,
            Err(error) => return Err(every_violation(object, &error)),
        };
        let data = match (input.data, object.get("data")) {
            (Some(_), Some(data @ Value::Object(_))) => data.clone(),
            _ => Value::Object(Map::new()),
        };
        let unstorable = unstorable(&data);
        if !unstorable.is_empty() {
            return Err(unstorable);
        }
        Ok(Envelope {
            id: input.id.unwrap_or_else(Uuid::now_v7),
            source: input.source.0,
            event: input.event.0,
            organization_id: input.organization_id,
            occurred_at: input.occurred_at.unwrap_or_else(Utc::now),
            data,
        })
    }
}

/// Every way `object` is not a [`SentEvent`], for an object its
/// deserializer refused (`error`, its first problem): unknown fields, then
/// each field of the schema in order — missing, or refused by its own
/// deserializer, read alone — then what `data` holds that no database can
/// store.
fn every_violation(object: &Map<String, Value>, error: &serde_json::Error) -> Vec<Violation> {
    let schema = input_schema();
    let mut violations: Vec<Violation> = object
        .keys()
        .filter(|key| !schema.properties.contains_key(key.as_str()))
        .map(|key| {
            let fields: Vec<&str> = schema.properties.keys().map(String::as_str).collect();
            violation(
                &format!("/{key}"),
                format!("unknown field `{key}`; an event has {}", fields.join(", ")),
            )
        })
        .collect();
    for field in schema.properties.keys() {
        let pointer = format!("/{field}");
        let required = schema.required.contains(field);
        match object.get(field) {
            None | Some(Value::Null) if required => {
                violations.push(violation(&pointer, format!("`{field}` is required")));
            }
            None => {}
            Some(value) => {
                if let Some(message) = field_problem(field, value) {
                    violations.push(violation(&pointer, message));
                }
            }
        }
    }
    if let Some(data @ Value::Object(_)) = object.get("data") {
        violations.extend(unstorable(data));
    }
    if violations.is_empty() {
        // The fields are each fine alone, yet the whole was refused: say
        // what the deserializer said rather than nothing.
        violations.push(violation("", error.to_string()));
    }
    violations
}

fn violation(pointer: &str, message: String) -> Violation {
    Violation {
        pointer: pointer.to_owned(),
        message,
    }
}

/// The properties and required fields of [`SentEvent`]'s schema.
struct InputSchema {
    properties: Map<String, Value>,
    required: Vec<String>,
}

fn input_schema() -> InputSchema {
    let schema = serde_json::to_value(SentEvent::schema()).unwrap_or_default();
    let required = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|name| name.as_str().map(str::to_owned))
        .collect();
    let properties = schema["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    InputSchema {
        properties,
        required,
    }
}

/// What [`SentEvent`]'s deserializer says of `field`'s `value` read
/// alone (`None`: the value is fine).
fn field_problem(field: &str, value: &Value) -> Option<String> {
    let mut problem = None;
    let alone = OneField {
        field: Some(field),
        value,
        problem: &mut problem,
    };
    // Only the value's own error matters: the others are missing fields.
    let _ = SentEvent::deserialize(MapAccessDeserializer::new(alone));
    problem
}

/// A map of one entry, which remembers the error of its value.
struct OneField<'de, 'p> {
    field: Option<&'de str>,
    value: &'de Value,
    problem: &'p mut Option<String>,
}

impl<'de> MapAccess<'de> for OneField<'de, '_> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, serde_json::Error> {
        match self.field.take() {
            Some(field) => seed.deserialize(StrDeserializer::new(field)).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, serde_json::Error> {
        seed.deserialize(self.value).inspect_err(|error| {
            *self.problem = Some(error.to_string());
        })
    }
}

/// Reads a value with `parse`, whose error is the message.
fn read<'de, D: Deserializer<'de>, T>(
    deserializer: D,
    parse: impl FnOnce(Value) -> Result<T, String>,
) -> Result<T, D::Error> {
    parse(Value::deserialize(deserializer)?).map_err(de::Error::custom)
}

/// Like [`read`], with `null` (and, with `#[serde(default)]`, absence) as
/// `None`.
fn read_optional<'de, D: Deserializer<'de>, T>(
    deserializer: D,
    parse: impl FnOnce(Value) -> Result<T, String>,
) -> Result<Option<T>, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(None),
        value => parse(value).map(Some).map_err(de::Error::custom),
    }
}

fn uuid<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Uuid, D::Error> {
    read(deserializer, parse_uuid)
}

fn optional_uuid<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Uuid>, D::Error> {
    read_optional(deserializer, parse_uuid)
}

fn optional_timestamp<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    read_optional(deserializer, parse_timestamp)
}

fn optional_object<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Map<String, Value>>, D::Error> {
    read_optional(deserializer, |value| match value {
        Value::Object(map) => Ok(map),
        other => Err(format!("must be a JSON object, not {}", kind(&other))),
    })
}

/// A UUID in its hyphenated form (8-4-4-4-12 hexadecimal digits), as the
/// schema's `format: uuid` says.
fn parse_uuid(value: Value) -> Result<Uuid, String> {
    let text = string(value)?;
    match Uuid::try_parse(&text) {
        Ok(id) if text.len() == 36 => Ok(id),
        _ => Err(format!(
            "`{text}` is not a UUID (8-4-4-4-12 hexadecimal digits)"
        )),
    }
}

/// An RFC 3339 timestamp, as the schema's `format: date-time` says (with
/// `T` between date and time and `:60` only at a leap second, which chrono
/// alone would not insist on).
fn parse_timestamp(value: Value) -> Result<DateTime<Utc>, String> {
    let text = string(value)?;
    match DateTime::parse_from_rfc3339(&text) {
        Err(error) => Err(format!("`{text}` is not an RFC 3339 timestamp: {error}")),
        Ok(_) if !matches!(text.as_bytes().get(10), Some(b'T' | b't')) => Err(format!(
            "`{text}` is not an RFC 3339 timestamp: `T` must separate the date and the time"
        )),
        Ok(at) => {
            let at = at.with_timezone(&Utc);
            // chrono reads `:60` at any minute; RFC 3339 has it only at a
            // leap second, 23:59:60 in UTC.
            let leap = at.nanosecond() >= 1_000_000_000;
            if leap && (at.hour(), at.minute()) != (23, 59) {
                Err(format!(
                    "`{text}` is not an RFC 3339 timestamp: second 60 is only 23:59:60 UTC"
                ))
            } else {
                Ok(at)
            }
        }
    }
}

fn string(value: Value) -> Result<String, String> {
    match value {
        Value::String(text) => Ok(text),
        other => Err(format!("must be a string, not {}", kind(&other))),
    }
}

/// A JSON value's type, for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// What no database can store is refused here, on every database, so an
/// event means the same everywhere and a publish never fails at commit:
/// PostgreSQL cannot store U+0000 in text or JSON, nor a number beyond
/// `numeric`'s range in `jsonb`.
fn unstorable(data: &Value) -> Vec<Violation> {
    let mut found = Vec::new();
    find_unstorable(data, "/data", &mut found);
    found
        .into_iter()
        .map(|(pointer, message)| Violation { pointer, message })
        .collect()
}

/// Collects pointers to strings (and keys) that contain U+0000, and to
/// numbers no database can store (more than 131072 digits before the
/// decimal point or 16383 after), each with the reason.
fn find_unstorable(value: &Value, pointer: &str, out: &mut Vec<(String, String)>) {
    const NUL: &str = "strings may not contain the NUL character (\\u0000)";
    match value {
        Value::String(s) if s.contains('\0') => out.push((pointer.to_owned(), NUL.into())),
        Value::Number(n) => {
            if let Some(reason) = Decimal::of(n).numeric_misfit() {
                out.push((
                    pointer.to_owned(),
                    format!("this number cannot be stored: {reason}"),
                ));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                find_unstorable(item, &format!("{pointer}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let child = format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1"));
                if key.contains('\0') {
                    out.push((child.clone(), NUL.into()));
                }
                find_unstorable(item, &child, out);
            }
        }
        _ => {}
    }
}

/// `recruitiq`, `nexus`: lowercase letters, digits, `_`, at most 50.
pub fn is_product_name(name: &str) -> bool {
    name.len() <= MAX_PRODUCT_NAME
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `candidate.hired`: dotted product-style words, at most 100 characters.
pub fn is_event_name(name: &str) -> bool {
    name.len() <= MAX_EVENT_NAME && name.split('.').all(is_product_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_complete_event_round_trips() {
        let input = json!({
            "id": "0192f0c1-6c1a-7cc0-8000-000000000001",
            "source": "recruitiq",
            "event": "candidate.hired",
            "organization_id": "00000000-0000-0000-0000-00000000000a",
            "occurred_at": "2026-11-28T10:00:00Z",
            "data": {"x": 1}
        });
        let envelope = Envelope::from_json(&input).unwrap();
        assert_eq!(envelope.to_json(), input);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let violations = Envelope::from_json(&json!({
            "source": "Recruit IQ",
            "event": "hired!",
            "organization_id": "nope",
            "occurred_at": "yesterday",
            "data": [],
            "extra": 1
        }))
        .unwrap_err();
        let pointers: Vec<&str> = violations.iter().map(|v| v.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            [
                "/extra",
                "/source",
                "/event",
                "/organization_id",
                "/occurred_at",
                "/data"
            ]
        );
    }

    #[test]
    fn nul_characters_are_refused_with_their_place() {
        let violations = Envelope::from_json(&json!({
            "source": "a",
            "event": "b.c",
            "organization_id": "00000000-0000-0000-0000-00000000000a",
            "data": {"ok": "fine", "list": ["x\u{0}y"]}
        }))
        .unwrap_err();
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].pointer, "/data/list/0");
    }

    #[test]
    fn id_and_time_default_when_missing() {
        let envelope = Envelope::from_json(&json!({
            "source": "a",
            "event": "b.c",
            "organization_id": "00000000-0000-0000-0000-00000000000a"
        }))
        .unwrap();
        assert_eq!(envelope.data, json!({}));
    }

    #[test]
    fn numbers_no_database_can_store_are_violations_with_their_pointer() {
        let event: Value = serde_json::from_str(
            r#"{"source": "recruitiq", "event": "candidate.hired",
                "organization_id": "00000000-0000-0000-0000-00000000000a",
                "data": {"fine": [1e131071, 1e-16383, 18446744073709551617],
                         "huge": {"n": 1e131072}, "tiny": [1.5e-16383]}}"#,
        )
        .unwrap();
        let violations = Envelope::from_json(&event).unwrap_err();
        let pointers: Vec<&str> = violations.iter().map(|v| v.pointer.as_str()).collect();
        assert_eq!(pointers, ["/data/huge/n", "/data/tiny/0"]);
        assert!(
            violations[0].message.starts_with(
                "this number cannot be stored: 131073 digits before the decimal point"
            ),
            "{violations:?}"
        );
    }
}
