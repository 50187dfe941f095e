//! The envelope's one definition (`envelope::SentEvent`): the OpenAPI
//! document's `EventInput`, derived from it and checked here with the
//! `jsonschema` crate, and `Envelope::from_json`, which reads with its
//! deserializer, accept exactly the same events.

use busbar::envelope::{ENVELOPE_FIELDS, Envelope};
use serde_json::{Value, json};

const ORGANIZATION: &str = "00000000-0000-0000-0000-00000000000a";

/// The `EventInput` schema of the OpenAPI document the server serves, with
/// formats (`uuid`, `date-time`) asserted.
fn served_schema() -> (Value, jsonschema::Validator) {
    let document: Value = serde_json::from_str(busbar::api::openapi_json()).unwrap();
    let schema = json!({
        "$ref": "#/components/schemas/EventInput",
        "components": document["components"],
    });
    let validator = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    (
        document["components"]["schemas"]["EventInput"].clone(),
        validator,
    )
}

/// A valid event with `field` set to `value` (`None`: removed).
fn with(field: &str, value: Option<Value>) -> Value {
    let mut event = json!({
        "id": "0192f0c1-6c1a-7cc0-8000-000000000001",
        "source": "recruitiq",
        "event": "candidate.hired",
        "organization_id": ORGANIZATION,
        "occurred_at": "2026-11-28T10:00:00Z",
        "data": {"candidate": {"email": "a@acme.example", "tags": [1, 2.5, null, true]}},
    });
    match value {
        Some(value) => event[field] = value,
        None => {
            event.as_object_mut().unwrap().remove(field);
        }
    }
    event
}

#[test]
fn the_openapi_schema_and_the_validator_accept_the_same_events() {
    let (_, validator) = served_schema();
    let long = |n: usize| "a".repeat(n);
    let dotted = |n: usize| format!("{}.b", "a".repeat(n - 2));
    let mut events = vec![
        with("id", None),
        with("data", None),
        with("data", Some(json!({}))),
        with("id", Some(Value::Null)),
        with("occurred_at", None),
        with("occurred_at", Some(Value::Null)),
        with("data", Some(Value::Null)),
        json!({"source": "a", "event": "b", "organization_id": ORGANIZATION}),
        json!({}),
        json!([]),
        // serde reads a struct from an array of its fields' values too.
        json!([
            null,
            "recruitiq",
            "candidate.hired",
            ORGANIZATION,
            null,
            null
        ]),
        json!("an event"),
        json!(null),
        json!(1),
        with("colour", Some(json!("blue"))),
        with("", Some(json!(1))),
    ];
    for id in [
        json!("0192F0C1-6C1A-7CC0-8000-00000000000A"),
        json!("nope"),
        json!("0192f0c16c1a7cc08000000000000001"),
        json!("{0192f0c1-6c1a-7cc0-8000-000000000001}"),
        json!("urn:uuid:0192f0c1-6c1a-7cc0-8000-000000000001"),
        json!("0192f0c1-6c1a-7cc0-8000-00000000000"),
        json!("0192f0c1-6c1a-7cc0-8000-00000000000g"),
        json!(5),
        json!(true),
    ] {
        events.push(with("id", Some(id.clone())));
        events.push(with("organization_id", Some(id)));
    }
    events.push(with("organization_id", None));
    events.push(with("organization_id", Some(Value::Null)));
    for source in [
        json!("a"),
        json!("a_1"),
        json!(long(50)),
        json!(long(51)),
        json!(""),
        json!("Recruitiq"),
        json!("1abc"),
        json!("_a"),
        json!("a-b"),
        json!("a.b"),
        json!("recruit iq"),
        json!("a\u{0}"),
        json!("é"),
        json!(1),
        json!(["a"]),
    ] {
        events.push(with("source", Some(source)));
    }
    events.push(with("source", None));
    events.push(with("source", Some(Value::Null)));
    for event in [
        json!("a"),
        json!("a.b_c.d1"),
        json!(dotted(100)),
        json!(dotted(101)),
        json!(format!("{}.b", long(50))),
        json!(format!("a.{}", long(51))),
        json!(""),
        json!("a..b"),
        json!("a."),
        json!(".a"),
        json!("A.b"),
        json!("a.1b"),
        json!("hired!"),
        json!(1),
    ] {
        events.push(with("event", Some(event)));
    }
    events.push(with("event", None));
    events.push(with("event", Some(Value::Null)));
    for at in [
        "2026-11-28T10:00:00+02:00",
        "2026-11-28T10:00:00.123456789Z",
        "2026-11-28t10:00:00z",
        "2026-11-28T10:00:00-00:00",
        "2026-11-28 10:00:00Z",
        "2026-11-28T10:00:00",
        "2026-11-28",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-11-28T24:00:00Z",
        "2026-11-28T10:00Z",
        "2026-12-31T23:59:60Z",
        "2026-11-28T10:00:60Z",
        "2026-12-31T23:59:60+01:00",
        "2027-01-01T00:59:60+01:00",
        "2026-11-28T10:00:00.Z",
        "2026-11-28T10:00:00+24:00",
        "0000-01-01T00:00:00Z",
        "yesterday",
        "",
    ] {
        events.push(with("occurred_at", Some(json!(at))));
    }
    events.push(with("occurred_at", Some(json!(1_764_324_000))));
    for data in [
        json!([]),
        // serde reads a struct from an array of its fields' values too.
        json!([
            null,
            "recruitiq",
            "candidate.hired",
            ORGANIZATION,
            null,
            null
        ]),
        json!("x"),
        json!(1),
        json!(true),
        json!([{"a": 1}]),
    ] {
        events.push(with("data", Some(data)));
    }
    events.push(with("data", Some(json!({"deep": {"er": [{"est": "x"}]}}))));

    let mut disagree = Vec::new();
    for event in &events {
        let schema = validator.is_valid(event);
        let busbar = Envelope::from_json(event);
        if schema != busbar.is_ok() {
            disagree.push(format!(
                "schema valid: {schema}, busbar: {busbar:?}, for {event}"
            ));
        }
    }
    assert!(disagree.is_empty(), "{}", disagree.join("\n"));
    // Both kinds are covered.
    assert!(events.iter().filter(|e| validator.is_valid(e)).count() >= 10);
    assert!(events.iter().filter(|e| !validator.is_valid(e)).count() >= 40);
}

#[test]
fn the_schema_has_the_envelope_fields_and_requires_those_without_a_default() {
    let (schema, _) = served_schema();
    let properties: Vec<&str> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(properties, ENVELOPE_FIELDS);
    assert_eq!(
        schema["required"],
        json!(["source", "event", "organization_id"])
    );
    assert_eq!(schema["additionalProperties"], json!(false));
}

/// What a database cannot store is beyond any schema of the envelope: the
/// validator refuses it, with its place, although the schema accepts it.
#[test]
fn unstorable_data_is_the_one_thing_only_the_validator_refuses() {
    let (_, validator) = served_schema();
    let nul = with("data", Some(json!({"name": "a\u{0}b"})));
    let huge: Value = serde_json::from_str(&with("data", None).to_string().replace(
        "\"recruitiq\"",
        "\"recruitiq\", \"data\": {\"n\": 1e200000}",
    ))
    .unwrap();
    for (event, pointer) in [(nul, "/data/name"), (huge, "/data/n")] {
        assert!(validator.is_valid(&event), "{event}");
        let violations = Envelope::from_json(&event).unwrap_err();
        let pointers: Vec<&str> = violations.iter().map(|v| v.pointer.as_str()).collect();
        assert_eq!(pointers, [pointer]);
    }
}

#[test]
fn the_documented_batch_size_is_the_one_publishing_enforces() {
    let document: Value = serde_json::from_str(busbar::api::openapi_json()).unwrap();
    let events = &document["components"]["schemas"]["EventBatch"]["properties"]["events"];
    assert_eq!(events["minItems"], 1, "{events}");
    assert_eq!(
        events["maxItems"],
        busbar::api::MAX_BATCH,
        "EventBatch's max_items must be api::MAX_BATCH: {events}"
    );
}
