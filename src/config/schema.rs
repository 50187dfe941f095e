//! The integration file format as JSON Schema, and validation against it.
//!
//! `schemas/integration.schema.json` is the source of truth for the format:
//! it is compiled into the binary (so `busbar schema` and `check` work from
//! anywhere), and its errors are turned into diagnostics with stable codes
//! and the position of the offending node.

use std::path::Path;
use std::sync::LazyLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

use super::yaml::{Document, escape_pointer_token};
use crate::diagnostics::{Code, Diagnostic, did_you_mean};

/// The integration file schema, as shipped in `schemas/`.
pub const INTEGRATION_SCHEMA: &str = include_str!("../../schemas/integration.schema.json");

/// The step kinds, in the order the documentation lists them.
pub const STEP_KINDS: [&str; 5] = ["find", "upsert", "update", "delete", "emit"];

static SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    serde_json::from_str(INTEGRATION_SCHEMA).expect("the shipped integration schema is valid JSON")
});

static VALIDATOR: LazyLock<Validator> = LazyLock::new(|| {
    jsonschema::draft202012::new(&SCHEMA).expect("the shipped integration schema is a valid schema")
});

/// Validates a loaded file against the integration schema; returns one
/// diagnostic per problem (empty when the file is valid).
pub fn validate(file: &Path, document: &Document) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    let mut bad_steps = Vec::new();
    for error in VALIDATOR.iter_errors(&document.value) {
        let pointer = error.instance_path().as_str().to_owned();
        if let Some(diagnostic) = step_kind_problem(file, document, &error, &pointer) {
            bad_steps.push(pointer);
            diagnostics.push(diagnostic);
            continue;
        }
        diagnostics.extend(describe(file, document, &error, &pointer));
    }
    // A step with no kind or two kinds gets one clear diagnostic; the errors
    // the schema derives from the same confusion would only add noise.
    diagnostics.retain(|d| {
        d.code == Code::InvalidStep
            || !bad_steps
                .iter()
                .any(|step| document.spans.position(step) == d.position)
    });
    diagnostics
}

/// A step with no kind key, or with two, is reported as `invalid-step`.
fn step_kind_problem(
    file: &Path,
    document: &Document,
    error: &ValidationError<'_>,
    pointer: &str,
) -> Option<Diagnostic> {
    if !is_step_pointer(pointer) {
        return None;
    }
    let step = document.value.pointer(pointer)?.as_object()?;
    let kinds: Vec<&str> = STEP_KINDS
        .iter()
        .copied()
        .filter(|k| step.contains_key(*k))
        .collect();
    let position = document.spans.position(pointer);
    match (kinds.len(), error.kind()) {
        (0, ValidationErrorKind::AnyOf { .. }) => {
            let help = step
                .keys()
                .find_map(|key| did_you_mean(key, STEP_KINDS))
                .unwrap_or_else(|| {
                    format!("start the step with one of: {}", STEP_KINDS.join(", "))
                });
            Some(
                Diagnostic::error(
                    file,
                    position,
                    Code::InvalidStep,
                    "this step has no kind: it needs one of `find`, `upsert`, `update`, `delete` or `emit`",
                )
                .with_help(help),
            )
        }
        (2.., ValidationErrorKind::AdditionalProperties { unexpected })
            if unexpected.iter().any(|k| STEP_KINDS.contains(&k.as_str())) =>
        {
            Some(Diagnostic::error(
                file,
                position,
                Code::InvalidStep,
                format!(
                    "a step does one thing, but this one has {}; split it into one step each",
                    kinds
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            ))
        }
        _ => None,
    }
}

/// `/routes/N/steps/M`
fn is_step_pointer(pointer: &str) -> bool {
    let parts: Vec<&str> = pointer.split('/').collect();
    matches!(parts.as_slice(), ["", "routes", r, "steps", s]
        if r.parse::<usize>().is_ok() && s.parse::<usize>().is_ok())
}

/// What a pointer's last token names, for messages: `key `x``, `item 3`, or
/// `the file`.
fn what(pointer: &str) -> String {
    match pointer.rsplit_once('/') {
        None => "the file".into(),
        Some((_, last)) if last.parse::<usize>().is_ok() => {
            let parent = pointer.rsplit_once('/').map(|p| p.0).unwrap_or("");
            let parent_name = parent.rsplit('/').next().unwrap_or("");
            format!(
                "item {} of `{parent_name}`",
                last.parse::<usize>().unwrap_or(0) + 1
            )
        }
        Some((_, last)) => format!("`{}`", last.replace("~1", "/").replace("~0", "~")),
    }
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn type_kind_name(kind: &TypeKind) -> String {
    let name = |t: &str| match t {
        "object" => "a mapping".to_owned(),
        "array" => "a list".to_owned(),
        "string" => "a string".to_owned(),
        "integer" => "an integer".to_owned(),
        "number" => "a number".to_owned(),
        "boolean" => "a boolean (true or false)".to_owned(),
        "null" => "null".to_owned(),
        other => other.to_owned(),
    };
    match kind {
        TypeKind::Single(t) => name(&t.to_string()),
        TypeKind::Multiple(set) => set
            .iter()
            .map(|t| name(&t.to_string()))
            .collect::<Vec<_>>()
            .join(" or "),
    }
}

/// The schema object an error's keyword belongs to, to list allowed keys.
fn schema_object_of<'s>(schema: &'s Value, error: &ValidationError<'_>) -> Option<&'s Value> {
    let path = error.schema_path().as_str();
    let parent = path.rsplit_once('/')?.0;
    schema.pointer(parent)
}

fn describe(
    file: &Path,
    document: &Document,
    error: &ValidationError<'_>,
    pointer: &str,
) -> Vec<Diagnostic> {
    describe_error(&SCHEMA, file, document, error, pointer)
}

/// Turns one validation error against `schema` into diagnostics at the
/// offending node of `document` (shared with the config test format).
pub(crate) fn describe_error(
    schema: &Value,
    file: &Path,
    document: &Document,
    error: &ValidationError<'_>,
    pointer: &str,
) -> Vec<Diagnostic> {
    let spans = &document.spans;
    let instance = error.instance();
    let one = |code: Code, message: String| {
        vec![Diagnostic::error(
            file,
            spans.position(pointer),
            code,
            message,
        )]
    };
    match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let allowed: Vec<&str> = schema_object_of(schema, error)
                .and_then(|s| s.get("properties"))
                .and_then(Value::as_object)
                .map(|p| p.keys().map(String::as_str).collect())
                .unwrap_or_default();
            unexpected
                .iter()
                .map(|key| {
                    let key_pointer = format!("{pointer}/{}", escape_pointer_token(key));
                    let mut diagnostic = Diagnostic::error(
                        file,
                        spans.key_position(&key_pointer),
                        Code::UnknownKey,
                        format!("unknown key `{key}`"),
                    );
                    if let Some(help) = did_you_mean(key, allowed.iter().copied()) {
                        diagnostic = diagnostic.with_help(help);
                    } else if !allowed.is_empty() {
                        diagnostic =
                            diagnostic.with_help(format!("allowed here: {}", allowed.join(", ")));
                    }
                    diagnostic
                })
                .collect()
        }
        ValidationErrorKind::Required { property } => {
            let property = property.as_str().unwrap_or_default();
            let is_upsert = instance.get("upsert").is_some();
            let (code, message) = if property == "key" && is_upsert {
                (
                    Code::UpsertWithoutKey,
                    "this `upsert` has no `key`: name the columns that identify the row (they need a unique index)".to_owned(),
                )
            } else {
                (
                    Code::MissingKey,
                    format!("missing required key `{property}` in {}", what(pointer)),
                )
            };
            let position = if pointer.is_empty() {
                spans.position(pointer)
            } else {
                spans.key_position(pointer)
            };
            vec![Diagnostic::error(file, position, code, message)]
        }
        ValidationErrorKind::Type { kind } => one(
            Code::WrongType,
            format!(
                "{} must be {}, not {}",
                what(pointer),
                type_kind_name(kind),
                json_type_name(instance)
            ),
        ),
        ValidationErrorKind::Enum { options } => {
            let choices = options
                .as_array()
                .map(|o| {
                    o.iter()
                        .map(|v| match v {
                            Value::String(s) => format!("`{s}`"),
                            other => format!("`{other}`"),
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            one(
                Code::InvalidValue,
                format!("{} must be one of {choices}, not {instance}", what(pointer)),
            )
        }
        ValidationErrorKind::Pattern { pattern } => {
            let hint = match schema_object_of(schema, error).and_then(|s| s.get("description")) {
                Some(Value::String(d)) => d.clone(),
                _ => format!("it must match `{pattern}`"),
            };
            vec![
                Diagnostic::error(
                    file,
                    spans.position(pointer),
                    Code::InvalidValue,
                    format!("{} is not valid: {instance}", what(pointer)),
                )
                .with_help(hint),
            ]
        }
        ValidationErrorKind::MinItems { limit } => one(
            Code::InvalidValue,
            format!("{} needs at least {limit} item(s)", what(pointer)),
        ),
        ValidationErrorKind::MinProperties { limit } => one(
            Code::InvalidValue,
            format!("{} needs at least {limit} entry(ies)", what(pointer)),
        ),
        ValidationErrorKind::UniqueItems => one(
            Code::InvalidValue,
            format!("{} lists the same item twice", what(pointer)),
        ),
        _ => one(
            Code::InvalidValue,
            format!("{}: {}", what(pointer), error.masked()),
        ),
    }
}

/// The schema, pretty-printed, for `busbar schema`.
pub fn integration_schema() -> &'static str {
    INTEGRATION_SCHEMA
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml;

    fn check(text: &str) -> Vec<Diagnostic> {
        let (doc, diags) = yaml::parse(Path::new("t.yaml"), text);
        assert!(diags.is_empty(), "{diags:?}");
        validate(Path::new("t.yaml"), &doc.unwrap())
    }

    const VALID: &str =
        "source: a\ntarget: b\nroutes:\n  - on: x.y\n    steps:\n      - emit: z.w\n";

    #[test]
    fn a_minimal_file_is_valid() {
        assert_eq!(check(VALID), vec![]);
    }

    #[test]
    fn unknown_keys_point_at_the_key_and_suggest() {
        let diags = check(&format!("{VALID}retyr: {{}}\n"));
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].code, Code::UnknownKey);
        assert_eq!(diags[0].position.line, 7);
        assert_eq!(diags[0].help.as_deref(), Some("did you mean `retry`?"));
    }

    #[test]
    fn a_step_without_kind_is_one_diagnostic() {
        let diags = check(
            "source: a\ntarget: b\nroutes:\n  - on: x.y\n    steps:\n      - upsrt: t\n        key: [a]\n",
        );
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].code, Code::InvalidStep);
        assert_eq!(diags[0].help.as_deref(), Some("did you mean `upsert`?"));
    }

    #[test]
    fn upsert_without_key_has_its_own_code() {
        let diags = check(
            "source: a\ntarget: b\nroutes:\n  - on: x.y\n    steps:\n      - upsert: t\n        values: {a: 1}\n",
        );
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].code, Code::UpsertWithoutKey);
    }
}
