//! Event contracts: `schemas/events/<product>/<event>.json` is a JSON Schema
//! for the `data` of that event.
//!
//! Contracts serve twice: `publish` validates payloads against them, and the
//! compiler asks them whether a path such as `$.data.candidate.email` can
//! ever hold a value. For that question a contract that lists `properties`
//! is taken to list every field its event carries, unless it says otherwise
//! with `additionalProperties` (a schema, or `true`): a typo in a mapping is
//! far more common than a field the contract forgot.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jsonschema::Validator;
use serde_json::Value;

use crate::config::SourceFile;
use crate::diagnostics::{Code, Diagnostic, Position};
use crate::envelope::Violation;
use crate::jsonpath::Segment;

/// One event's contract.
#[derive(Debug)]
pub struct Contract {
    pub product: String,
    pub event: String,
    pub file: PathBuf,
    pub schema: Value,
    validator: Validator,
}

impl Contract {
    /// Every way `data` breaks this contract (empty when it fits).
    pub fn violations(&self, data: &Value) -> Vec<Violation> {
        self.validator
            .iter_errors(data)
            .map(|error| Violation {
                pointer: format!("/data{}", error.instance_path().as_str()),
                message: error.masked().to_string(),
            })
            .collect()
    }

    /// Whether a field path (`candidate`, `email`) can hold a value.
    pub fn lookup(&self, segments: &[Segment]) -> Lookup<'_> {
        lookup(&self.schema, &self.schema, segments, 0)
    }

    /// The fields the object at `segments` declares, each with its schema
    /// (local references followed, the branches of `allOf`, `anyOf` and
    /// `oneOf` merged, the first declaration of a name kept): what an
    /// editor offers after `$.data.candidate.`. Empty when the path does
    /// not lead to a declared object.
    pub fn fields(&self, segments: &[Segment]) -> Vec<(String, &Value)> {
        let mut fields = Vec::new();
        if let Lookup::Found(schema) = self.lookup(segments) {
            collect_fields(&self.schema, schema, &mut fields, 0);
        }
        fields
    }

    /// Whether every event that fits the contract has the field at
    /// `segments`: each name along the way is `required` by its object
    /// (an array item never is, as the array may be short).
    pub fn always_present(&self, segments: &[Segment]) -> bool {
        (0..segments.len()).all(|depth| {
            let (Lookup::Found(parent), Segment::Key(key)) =
                (self.lookup(&segments[..depth]), &segments[depth])
            else {
                return false;
            };
            requires(&self.schema, parent, key)
        })
    }
}

/// Adds the `properties` of `schema` and of its combinators' branches to
/// `fields`, bounded in depth against reference cycles.
fn collect_fields<'s>(
    root: &'s Value,
    schema: &'s Value,
    fields: &mut Vec<(String, &'s Value)>,
    depth: usize,
) {
    if depth > 16 {
        return;
    }
    let schema = resolve(root, schema);
    for (name, child) in schema
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if !fields.iter().any(|(known, _)| known == name) {
            fields.push((name.clone(), resolve(root, child)));
        }
    }
    for keyword in ["allOf", "anyOf", "oneOf"] {
        for branch in schema
            .get(keyword)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            collect_fields(root, branch, fields, depth + 1);
        }
    }
}

/// Whether `schema` requires the property `key`: itself, any branch of an
/// `allOf`, or every branch of an `anyOf` or a `oneOf`.
fn requires(root: &Value, schema: &Value, key: &str) -> bool {
    let schema = resolve(root, schema);
    let listed = schema
        .get("required")
        .and_then(Value::as_array)
        .is_some_and(|names| names.iter().any(|name| name == key));
    let branches = |keyword: &str| schema.get(keyword).and_then(Value::as_array);
    listed
        || branches("allOf").is_some_and(|all| all.iter().any(|b| requires(root, b, key)))
        || ["anyOf", "oneOf"].iter().any(|keyword| {
            branches(keyword)
                .is_some_and(|all| !all.is_empty() && all.iter().all(|b| requires(root, b, key)))
        })
}

/// What a contract says about a field path.
#[derive(Debug, PartialEq)]
pub enum Lookup<'s> {
    /// The field exists; its schema.
    Found(&'s Value),
    /// The contract does not constrain this part of the payload.
    Open,
    /// Segment `at` names a field the contract does not have.
    Missing { at: usize, known: Vec<String> },
}

fn resolve<'s>(root: &'s Value, schema: &'s Value) -> &'s Value {
    let mut schema = schema;
    // Follow local references (a bounded number, against ref cycles).
    for _ in 0..32 {
        match schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
        {
            Some(pointer) => match root.pointer(pointer) {
                Some(target) => schema = target,
                None => return schema,
            },
            None => return schema,
        }
    }
    schema
}

fn lookup<'s>(
    root: &'s Value,
    schema: &'s Value,
    segments: &[Segment],
    depth: usize,
) -> Lookup<'s> {
    let schema = resolve(root, schema);
    let Some(first) = segments.first() else {
        return Lookup::Found(schema);
    };
    let Value::Object(object) = schema else {
        // `true` or `false` as a schema.
        return Lookup::Open;
    };
    // Combinators: the field exists if any branch has it.
    let mut known = Vec::new();
    let mut branches = 0;
    for keyword in ["allOf", "anyOf", "oneOf"] {
        for branch in object
            .get(keyword)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            branches += 1;
            match lookup(root, branch, segments, depth) {
                Lookup::Missing { known: k, .. } => known.extend(k),
                found => return found,
            }
        }
    }
    let rest = &segments[1..];
    let missing = |known: Vec<String>| Lookup::Missing { at: depth, known };
    let declared = || -> Vec<String> {
        object
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    };
    let child = match first {
        Segment::Key(key) => {
            let in_properties = object
                .get("properties")
                .and_then(Value::as_object)
                .and_then(|p| p.get(key));
            let in_patterns = || {
                object
                    .get("patternProperties")
                    .and_then(Value::as_object)
                    .and_then(|patterns| {
                        patterns.iter().find_map(|(pattern, schema)| {
                            regex::Regex::new(pattern)
                                .ok()
                                .filter(|re| re.is_match(key))
                                .map(|_| schema)
                        })
                    })
            };
            match in_properties.or_else(in_patterns) {
                Some(child) => child,
                None => match object.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        known.extend(declared());
                        return missing(known);
                    }
                    Some(additional @ Value::Object(_)) => additional,
                    Some(_) => return Lookup::Open,
                    None if object.contains_key("properties") || branches > 0 => {
                        known.extend(declared());
                        return missing(known);
                    }
                    None => return Lookup::Open,
                },
            }
        }
        Segment::Index(_) | Segment::Any => match object.get("items") {
            Some(items) => items,
            None => return Lookup::Open,
        },
    };
    lookup(root, child, rest, depth + 1)
}

/// All contracts of a directory, by `(product, event)`.
#[derive(Debug, Default, Clone)]
pub struct Contracts {
    by_event: HashMap<(String, String), Arc<Contract>>,
}

impl Contracts {
    /// Parses contract files (read by [`crate::config::read_contracts`]
    /// from `root`); bad ones become diagnostics.
    pub fn parse(root: &Path, files: &[SourceFile]) -> (Contracts, Vec<Diagnostic>) {
        let mut contracts = Contracts::default();
        let mut diagnostics = Vec::new();
        for file in files {
            match parse_one(root, file) {
                Ok(contract) => {
                    contracts.by_event.insert(
                        (contract.product.clone(), contract.event.clone()),
                        Arc::new(contract),
                    );
                }
                Err(diagnostic) => diagnostics.push(*diagnostic),
            }
        }
        (contracts, diagnostics)
    }

    pub fn get(&self, product: &str, event: &str) -> Option<&Arc<Contract>> {
        self.by_event.get(&(product.to_owned(), event.to_owned()))
    }

    /// Every contract, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Contract>> {
        self.by_event.values()
    }

    pub fn len(&self) -> usize {
        self.by_event.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_event.is_empty()
    }
}

fn parse_one(root: &Path, file: &SourceFile) -> Result<Contract, Box<Diagnostic>> {
    let bad = |position: Position, message: String| {
        Box::new(Diagnostic::error(
            &file.path,
            position,
            Code::InvalidContract,
            message,
        ))
    };
    let relative = file.path.strip_prefix(root).unwrap_or(&file.path);
    let parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let [product, name] = parts.as_slice() else {
        return Err(bad(
            Position::START,
            format!(
                "contracts go in `<product>/<event>.json` under {}",
                root.display()
            ),
        ));
    };
    let event = name.trim_end_matches(".json").to_owned();
    let schema: Value = serde_json::from_str(&file.text).map_err(|error| {
        let line = error.line().max(1);
        // serde_json counts bytes; a diagnostic's column counts characters.
        let column = file.text.lines().nth(line - 1).map_or(1, |text| {
            let bytes = error.column().saturating_sub(1).min(text.len());
            let before = (0..=bytes).rev().find(|&b| text.is_char_boundary(b));
            text[..before.unwrap_or(0)].chars().count() + 1
        });
        // The position is the diagnostic's own; the message need not repeat it.
        let message = error.to_string();
        let suffix = format!(" at line {} column {}", error.line(), error.column());
        let message = message.strip_suffix(&suffix).unwrap_or(&message);
        bad(
            Position::new(line, column),
            format!("not valid JSON: {message}"),
        )
    })?;
    let validator = jsonschema::draft202012::new(&schema).map_err(|error| {
        // The error is about a node of the schema (the meta-schema's
        // instance): report it where that node stands in the file.
        let pointer = error.instance_path().as_str();
        let (position, node) = if pointer.is_empty() {
            (Position::START, String::new())
        } else {
            (
                position_in_json(&file.path, &file.text, pointer),
                format!(" `{pointer}` is {}", error.instance()),
            )
        };
        let reason = if pointer.ends_with("/type") {
            // The meta-schema's own words ("not valid under any of the
            // schemas listed in the 'anyOf' keyword") say nothing useful.
            format!(
                "but `type` must be one of {}, or a list of them",
                JSON_TYPES
            )
        } else {
            error.masked().to_string()
        };
        let separator = if node.is_empty() { "" } else { "," };
        bad(
            position,
            format!("not a valid JSON Schema:{node}{separator} {reason}"),
        )
    })?;
    Ok(Contract {
        product: product.clone(),
        event,
        file: file.path.clone(),
        schema,
        validator,
    })
}

/// The names JSON Schema's `type` accepts, as a message lists them.
const JSON_TYPES: &str = r#""array", "boolean", "integer", "null", "number", "object", "string""#;

/// Where the node at `pointer` stands in a JSON file's text. JSON is YAML
/// (flow style), so the YAML loader's positions serve; the start of the
/// file when it cannot tell.
fn position_in_json(path: &Path, text: &str, pointer: &str) -> Position {
    match crate::config::yaml::parse(path, text) {
        (Some(document), _) => document.spans.position(pointer),
        (None, _) => Position::START,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn contract(schema: Value) -> Contract {
        Contract {
            product: "p".into(),
            event: "e".into(),
            file: "p/e.json".into(),
            validator: jsonschema::draft202012::new(&schema).unwrap(),
            schema,
        }
    }

    fn keys(path: &str) -> Vec<Segment> {
        path.split('.').map(|k| Segment::Key(k.into())).collect()
    }

    #[test]
    fn declared_properties_are_the_whole_contract() {
        let c = contract(json!({
            "type": "object",
            "properties": {
                "candidate": {"$ref": "#/$defs/candidate"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "extra": {"type": "object"}
            },
            "$defs": {"candidate": {"type": "object", "properties": {"email": {"type": "string"}}}}
        }));
        assert!(matches!(
            c.lookup(&keys("candidate.email")),
            Lookup::Found(_)
        ));
        assert_eq!(
            c.lookup(&keys("candidate.emial")),
            Lookup::Missing {
                at: 1,
                known: vec!["email".into()]
            }
        );
        assert!(matches!(
            c.lookup(&[Segment::Key("tags".into()), Segment::Index(0)]),
            Lookup::Found(_)
        ));
        // An object with no declared properties is open.
        assert_eq!(c.lookup(&keys("extra.anything")), Lookup::Open);
    }

    #[test]
    fn combinators_and_additional_properties() {
        let c = contract(json!({
            "anyOf": [
                {"properties": {"a": {}}},
                {"properties": {"b": {}}, "additionalProperties": {"type": "string"}}
            ]
        }));
        assert!(matches!(c.lookup(&keys("a")), Lookup::Found(_)));
        assert!(matches!(c.lookup(&keys("zzz")), Lookup::Found(_)));
        let closed = contract(json!({"allOf": [{"properties": {"a": {}}}]}));
        assert!(matches!(
            closed.lookup(&keys("b")),
            Lookup::Missing { at: 0, .. }
        ));
    }

    fn parse_error(text: &str) -> Diagnostic {
        let file = SourceFile {
            path: "contracts/p/e.json".into(),
            text: text.into(),
        };
        *parse_one(Path::new("contracts"), &file).expect_err("a broken contract")
    }

    #[test]
    fn broken_contracts_are_reported_where_they_break_counting_characters() {
        let error = parse_error("{\"a\": \"é\" x}");
        assert_eq!(error.position, Position::new(1, 11));
        assert!(
            !error.message.contains("line 1"),
            "the position is not repeated: {}",
            error.message
        );
        let error =
            parse_error("{\n  \"properties\": {\n    \"é\": { \"type\": \"text\" }\n  }\n}");
        assert_eq!(error.position, Position::new(3, 20));
        assert_eq!(
            error.message,
            "not a valid JSON Schema: `/properties/é/type` is \"text\", but `type` must be one of \"array\", \"boolean\", \"integer\", \"null\", \"number\", \"object\", \"string\", or a list of them"
        );
    }

    #[test]
    fn a_field_is_always_present_when_required_all_the_way_down() {
        let c = contract(json!({
            "type": "object",
            "required": ["candidate"],
            "properties": {
                "candidate": {"$ref": "#/$defs/candidate"},
                "tags": {"type": "array", "items": {"type": "string"}}
            },
            "$defs": {"candidate": {
                "allOf": [{"required": ["email"]}],
                "properties": {"email": {"type": "string"}, "phone": {"type": "string"}}
            }}
        }));
        assert!(c.always_present(&keys("candidate.email")));
        assert!(!c.always_present(&keys("candidate.phone")));
        assert!(!c.always_present(&[Segment::Key("tags".into()), Segment::Index(0)]));
    }

    #[test]
    fn violations_point_into_data() {
        let c = contract(
            json!({"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}),
        );
        assert!(c.violations(&json!({"id": "x"})).is_empty());
        let v = c.violations(&json!({"id": 3}));
        assert_eq!(v[0].pointer, "/data/id");
    }
}
