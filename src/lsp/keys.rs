//! The keys an integration file allows at each place, and what each does,
//! read from the one JSON Schema (`schemas/integration.schema.json`, the
//! schema `check` validates against): completion offers them, hover shows
//! their descriptions.

use std::sync::LazyLock;

use serde_json::Value;

use crate::config::schema::integration_schema;

static SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    serde_json::from_str(integration_schema()).expect("the shipped integration schema is JSON")
});

/// One allowed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDoc {
    pub name: String,
    /// The schema's description of the key (or of what it refers to).
    pub description: String,
    /// The values it allows, when the schema lists them (`missing`, `on_dead`).
    pub values: Vec<String>,
}

/// The schema object under `$defs/<name>`, or the root for `""`.
fn definition(name: &str) -> Option<&'static Value> {
    if name.is_empty() {
        Some(&SCHEMA)
    } else {
        SCHEMA.get("$defs")?.get(name)
    }
}

/// Follows a local `$ref` once.
fn resolve(schema: &'static Value) -> &'static Value {
    schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|pointer| SCHEMA.pointer(pointer))
        .unwrap_or(schema)
}

/// The keys of the object `$defs/<name>` (the file itself for `""`).
fn keys_of(name: &str) -> Vec<KeyDoc> {
    let Some(properties) = definition(name)
        .and_then(|d| d.get("properties"))
        .and_then(Value::as_object)
    else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(key, schema)| {
            let target = resolve(schema);
            let description = schema
                .get("description")
                .or_else(|| target.get("description"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let values = target
                .get("enum")
                .and_then(Value::as_array)
                .map(|values| {
                    values
                        .iter()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            KeyDoc {
                name: key.clone(),
                description,
                values,
            }
        })
        .collect()
}

/// The definition that describes the mapping at a path shape
/// ([`super::outline::Path::shape`]), given the step's kind there.
fn definition_at(shape: &str, step_kind: Option<&str>) -> Option<String> {
    Some(match shape {
        "" => String::new(),
        "retry" => "retry".to_owned(),
        "routes/-" => "route".to_owned(),
        "routes/-/steps/-" => format!("{}Step", step_kind?),
        _ => return None,
    })
}

/// The keys allowed in the mapping at `shape`. In a step without its
/// kind yet, the five step keywords.
pub fn keys_at(shape: &str, step_kind: Option<&str>) -> Vec<KeyDoc> {
    if shape == "routes/-/steps/-" && step_kind.is_none() {
        return step_keywords();
    }
    definition_at(shape, step_kind)
        .map(|name| keys_of(&name))
        .unwrap_or_default()
}

/// The step keywords, each with what its step does.
pub fn step_keywords() -> Vec<KeyDoc> {
    super::outline::STEP_KINDS
        .iter()
        .flat_map(|kind| keys_of(&format!("{kind}Step")).into_iter().take(1))
        .collect()
}

/// The documentation of key `key` in the mapping at `shape`.
pub fn key_doc(shape: &str, step_kind: Option<&str>, key: &str) -> Option<KeyDoc> {
    keys_at(shape, step_kind)
        .into_iter()
        .find(|doc| doc.name == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_the_schema_with_their_descriptions() {
        let top: Vec<String> = keys_at("", None).into_iter().map(|k| k.name).collect();
        assert!(top.contains(&"routes".to_owned()) && top.contains(&"source".to_owned()));
        let kinds: Vec<String> = step_keywords().into_iter().map(|k| k.name).collect();
        assert_eq!(kinds, ["find", "upsert", "update", "delete", "emit"]);
        let upsert = key_doc("routes/-/steps/-", Some("upsert"), "upsert").unwrap();
        assert!(upsert.description.contains("ON CONFLICT"), "{upsert:?}");
        let missing = key_doc("routes/-/steps/-", Some("find"), "missing").unwrap();
        assert!(missing.values.contains(&"skip".to_owned()), "{missing:?}");
        let on_dead = key_doc("", None, "on_dead").unwrap();
        assert_eq!(on_dead.values, ["continue", "block"]);
    }
}
