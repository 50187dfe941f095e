//! The event envelope: `{id, source, event, organization_id, occurred_at, data}`.
//!
//! Producers send JSON (the id and time are optional); busbar validates it
//! into an [`Envelope`] with [`Envelope::from_json`], reporting every
//! problem at once as JSON pointers, and that envelope is what mappings see
//! as `event`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::decimal::Decimal;

/// The fields of an envelope, as templates and paths see them.
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

    /// Validates an event as a producer sent it. Missing `id` gets a new
    /// UUIDv7 and missing `occurred_at` the current time; everything else
    /// must be present and well-formed. Returns every violation at once.
    pub fn from_json(value: &Value) -> Result<Envelope, Vec<Violation>> {
        let mut violations = Vec::new();
        let mut bad = |pointer: &str, message: String| {
            violations.push(Violation {
                pointer: pointer.to_owned(),
                message,
            })
        };
        let Some(object) = value.as_object() else {
            bad("", "an event must be a JSON object".into());
            return Err(violations);
        };
        for key in object.keys() {
            if !ENVELOPE_FIELDS.contains(&key.as_str()) {
                bad(
                    &format!("/{key}"),
                    format!(
                        "unknown field `{key}`; an event has {}",
                        ENVELOPE_FIELDS.join(", ")
                    ),
                );
            }
        }
        let text = |key: &str, bad: &mut dyn FnMut(&str, String)| -> Option<String> {
            match object.get(key) {
                None | Some(Value::Null) => {
                    bad(&format!("/{key}"), format!("`{key}` is required"));
                    None
                }
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => {
                    bad(&format!("/{key}"), format!("`{key}` must be a string"));
                    None
                }
            }
        };
        let source = text("source", &mut bad).filter(|s| {
            let ok = is_product_name(s);
            if !ok {
                bad(
                    "/source",
                    format!("`{s}` is not a product name (lowercase letters, digits and `_`)"),
                );
            }
            ok
        });
        let event = text("event", &mut bad).filter(|s| {
            let ok = is_event_name(s);
            if !ok {
                bad(
                    "/event",
                    format!("`{s}` is not an event name such as `candidate.hired`"),
                );
            }
            ok
        });
        let organization_id =
            text("organization_id", &mut bad).and_then(|s| match Uuid::parse_str(&s) {
                Ok(id) => Some(id),
                Err(_) => {
                    bad("/organization_id", format!("`{s}` is not a UUID"));
                    None
                }
            });
        let id = match object.get("id") {
            None | Some(Value::Null) => Some(Uuid::now_v7()),
            Some(Value::String(s)) => match Uuid::parse_str(s) {
                Ok(id) => Some(id),
                Err(_) => {
                    bad("/id", format!("`{s}` is not a UUID"));
                    None
                }
            },
            Some(_) => {
                bad("/id", "`id` must be a UUID string".into());
                None
            }
        };
        let occurred_at = match object.get("occurred_at") {
            None | Some(Value::Null) => Some(Utc::now()),
            Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
                Ok(at) => Some(at.with_timezone(&Utc)),
                Err(error) => {
                    bad(
                        "/occurred_at",
                        format!("`{s}` is not an RFC 3339 timestamp: {error}"),
                    );
                    None
                }
            },
            Some(_) => {
                bad(
                    "/occurred_at",
                    "`occurred_at` must be an RFC 3339 timestamp string".into(),
                );
                None
            }
        };
        let data = match object.get("data") {
            None | Some(Value::Null) => Some(Value::Object(Map::new())),
            Some(data @ Value::Object(_)) => {
                // What no database can store is refused here, on every
                // database, so an event means the same everywhere and a
                // publish never fails at commit: PostgreSQL cannot store
                // U+0000 in text or JSON, nor a number beyond `numeric`'s
                // range in `jsonb`.
                let mut unstorable = Vec::new();
                find_unstorable(data, "/data", &mut unstorable);
                for (pointer, message) in unstorable {
                    bad(&pointer, message);
                }
                Some(data.clone())
            }
            Some(_) => {
                bad("/data", "`data` must be a JSON object".into());
                None
            }
        };
        match (id, source, event, organization_id, occurred_at, data) {
            (
                Some(id),
                Some(source),
                Some(event),
                Some(organization_id),
                Some(occurred_at),
                Some(data),
            ) if violations.is_empty() => Ok(Envelope {
                id,
                source,
                event,
                organization_id,
                occurred_at,
                data,
            }),
            _ => Err(violations),
        }
    }
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
    name.len() <= 50
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `candidate.hired`: dotted product-style words, at most 100 characters.
pub fn is_event_name(name: &str) -> bool {
    name.len() <= 100 && name.split('.').all(is_product_name)
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
