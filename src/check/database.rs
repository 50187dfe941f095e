//! `busbar check --database-url`: the checks that need the target database.
//!
//! A compiled [`Generation`] is checked against a snapshot of the target
//! tables' catalog ([`Tables`]), given as data: [`check`] is pure, and
//! [`check_database`] is the thin async part that reads the catalog of the
//! tables the generation names (read-only, see [`crate::store::inspect`]).
//!
//! What is checked, each problem at the position of the offending name:
//!
//! - every table a step names exists (`unknown-table`, at the table name);
//! - every column of `where`, `values` and `set` exists (`unknown-column`,
//!   at the column's key);
//! - every `upsert` key is exactly the columns of a unique index or
//!   constraint (`no-unique-key`, at the first key item): PostgreSQL
//!   refuses `ON CONFLICT` otherwise, and SQLite too;
//! - literals, `default:`s, mappings and lists, and paths whose type the
//!   event contract (or the envelope) states, fit their column's type
//!   (`type-mismatch`, at the value); literals also its limits (length,
//!   range, precision: the engine's own conversion decides). Only what can *never* fit is
//!   reported: a `string` field into an `integer` column may hold `"42"`,
//!   so it passes; a `boolean` field, or a string of `format: email` into
//!   a `uuid` column, does not. Templates are not typed before they run;
//! - an `upsert` writes every `NOT NULL` column that has no default, and no
//!   step writes a literal null into a `NOT NULL` column
//!   (`missing-not-null`). An error: the insert would fail for every event.
//!   A column a trigger fills should be given a default, which the trigger
//!   still overrides;
//! - warnings, for what only some events would break: a contract field
//!   that may be null or absent into a `NOT NULL` column without a default
//!   (`nullable-into-not-null`), and a contract string whose `maxLength`
//!   (or none) exceeds a `varchar(n)`/`char(n)` column (`may-exceed-length`).

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::compile::contract::{Contract, Lookup};
use crate::compile::ident::TableName;
use crate::compile::{ColumnSpan, Columns, Generation, Integration, Step, StepKind, ValueExpr};
use crate::diagnostics::{self, Code, Diagnostic, did_you_mean};
use crate::jsonpath::Segment;
use crate::store::StoreError;
use crate::store::catalog::{ColumnInfo, ColumnType, TableInfo};
use crate::store::convert::{self, show};

/// The target tables as the database describes them: `None` for a table
/// that does not exist.
pub type Tables = HashMap<TableName, Option<TableInfo>>;

/// Every table the generation's steps read or write, sorted, once each.
pub fn tables_named(generation: &Generation) -> Vec<TableName> {
    let mut tables: Vec<TableName> = generation
        .integrations
        .iter()
        .flat_map(|i| &i.routes)
        .flat_map(|r| &r.steps)
        .filter_map(|s| s.kind.table().cloned())
        .collect();
    tables.sort();
    tables.dedup();
    tables
}

/// Reads the catalogs the generation's tables are in (writing nothing):
/// busbar's own tables from the database at `url`, the tables of each
/// database of `databases.yaml` from that database, its URL taken from
/// the environment as `serve` does. A database whose variables are not set
/// is not read: a warning says so, and its tables are not checked.
pub async fn check_database(
    generation: &Generation,
    url: &str,
) -> Result<Vec<Diagnostic>, StoreError> {
    let mut groups: Vec<(String, Vec<TableName>)> = vec![(url.to_owned(), Vec::new())];
    let mut unchecked: Vec<TableName> = Vec::new();
    let mut warnings = Vec::new();
    for table in tables_named(generation) {
        let Some(database) = generation.databases.of_table(&table) else {
            groups[0].1.push(table);
            continue;
        };
        match database.url_with(|variable| std::env::var(variable).ok()) {
            Ok(url) => match groups.iter_mut().find(|(u, _)| *u == url) {
                Some((_, tables)) => tables.push(table),
                None => groups.push((url, vec![table])),
            },
            Err(missing) => {
                unchecked.push(table);
                if !warnings.iter().any(|(name, _)| name == &database.name) {
                    warnings.push((database.name.clone(), missing));
                }
            }
        }
    }
    let mut tables = Tables::new();
    for (url, names) in groups {
        if !names.is_empty() {
            tables.extend(crate::store::inspect::read_tables(&url, &names).await?);
        }
    }
    let mut out = check_except(generation, &tables, &unchecked);
    let file = generation
        .databases
        .file
        .clone()
        .unwrap_or_else(|| "databases.yaml".into());
    for (name, missing) in warnings {
        out.push(Diagnostic::warning(
            &file,
            diagnostics::Position::START,
            Code::InvalidValue,
            format!(
                "the tables of database `{name}` were not checked: environment variable {} is not set",
                missing.join(", ")
            ),
        ));
    }
    diagnostics::sort(&mut out);
    Ok(out)
}

/// Checks every step of `generation` against `tables`; the diagnostics
/// come back sorted.
pub fn check(generation: &Generation, tables: &Tables) -> Vec<Diagnostic> {
    check_except(generation, tables, &[])
}

/// [`check`], leaving out the steps on `unchecked` tables (those of a
/// database that could not be read).
fn check_except(
    generation: &Generation,
    tables: &Tables,
    unchecked: &[TableName],
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for integration in &generation.integrations {
        for route in &integration.routes {
            let contract = generation
                .contracts
                .get(&integration.source, &route.on)
                .map(|c| &**c);
            for step in &route.steps {
                if step.kind.table().is_some_and(|t| unchecked.contains(t)) {
                    continue;
                }
                StepCheck {
                    integration,
                    step,
                    contract,
                    out: &mut out,
                }
                .run(tables);
            }
        }
    }
    diagnostics::sort(&mut out);
    out
}

struct StepCheck<'a> {
    integration: &'a Integration,
    step: &'a Step,
    contract: Option<&'a Contract>,
    out: &'a mut Vec<Diagnostic>,
}

impl StepCheck<'_> {
    fn error(
        &mut self,
        position: crate::diagnostics::Position,
        code: Code,
        message: String,
    ) -> &mut Diagnostic {
        self.out.push(Diagnostic::error(
            &self.integration.file,
            position,
            code,
            message,
        ));
        self.out.last_mut().expect("just pushed")
    }

    fn warning(
        &mut self,
        position: crate::diagnostics::Position,
        code: Code,
        message: String,
        help: String,
    ) {
        let mut warning = Diagnostic::warning(&self.integration.file, position, code, message);
        warning.help = Some(help);
        self.out.push(warning);
    }

    fn run(mut self, tables: &Tables) {
        let Some(table) = self.step.kind.table() else {
            return;
        };
        let Some(info) = tables.get(table).and_then(Option::as_ref) else {
            let position = self.step.spans.table;
            self.error(
                position,
                Code::UnknownTable,
                format!("table `{table}` does not exist in the database"),
            )
            .help = Some(
                "create it (and migrate the database this check reads), or fix the name".into(),
            );
            return;
        };
        let sections: Vec<(&'static str, &Columns)> = match &self.step.kind {
            StepKind::Find { filter, .. } | StepKind::Delete { filter, .. } => {
                vec![("where", filter)]
            }
            StepKind::Upsert { values, .. } => vec![("values", values)],
            StepKind::Update { filter, set, .. } => vec![("where", filter), ("set", set)],
            StepKind::Emit { .. } => Vec::new(),
        };
        for (section, columns) in sections {
            for (column, expr) in columns {
                let span = self.step.spans.column(section, column.as_str()).cloned();
                let Some(span) = span else { continue };
                match info.column(column.as_str()) {
                    None => {
                        let help = did_you_mean(
                            column.as_str(),
                            info.columns.iter().map(|c| c.name.as_str()),
                        )
                        .unwrap_or_else(|| {
                            let names: Vec<&str> =
                                info.columns.iter().map(|c| c.name.as_str()).collect();
                            format!("its columns: {}", names.join(", "))
                        });
                        self.error(
                            span.name,
                            Code::UnknownColumn,
                            format!("table `{table}` has no column `{column}`"),
                        )
                        .help = Some(help);
                    }
                    Some(info) => self.value(section, table, info, expr, &span),
                }
            }
        }
        if let StepKind::Upsert { key, values, .. } = &self.step.kind {
            self.upsert(table, info, key, values);
        }
    }

    /// Checks one column's value expression against the column.
    fn value(
        &mut self,
        section: &str,
        table: &TableName,
        column: &ColumnInfo,
        expr: &ValueExpr,
        span: &ColumnSpan,
    ) {
        let writes = section != "where";
        match expr {
            ValueExpr::Literal(Value::Null) => {
                if writes && !column.nullable {
                    self.error(
                        span.value,
                        Code::MissingNotNull,
                        format!(
                            "column `{table}.{}` is NOT NULL, and this writes null into it",
                            column.name
                        ),
                    );
                }
            }
            ValueExpr::Literal(literal) => self.literal(column, literal, span, ""),
            ValueExpr::Object(_) | ValueExpr::Array(_) => {
                let (sample, what) = match expr {
                    ValueExpr::Object(_) => (json!({}), "a mapping (a JSON object)"),
                    _ => (json!([]), "a list (a JSON array)"),
                };
                if convert::convert(column, &sample).is_err() {
                    self.error(
                        span.value,
                        Code::TypeMismatch,
                        format!(
                            "{what} cannot be stored in column `{}` ({})",
                            column.name, column.sql_type
                        ),
                    )
                    .help = Some("only json and jsonb columns hold mappings and lists; for text, use the `json` filter in a template".into());
                }
            }
            ValueExpr::Path {
                path,
                default,
                required,
            } => {
                if let Some(default) = default.as_ref().filter(|d| !d.is_null()) {
                    self.literal(column, default, span, "the default ");
                }
                let covers_absence = *required || default.as_ref().is_some_and(|d| !d.is_null());
                if writes {
                    self.contract_field(table, column, path, covers_absence, span);
                }
                let segments = path.segments();
                if let Some((schema, origin)) = self.schema_of(&segments)
                    && let Some(reason) = schema_misfit(column, &schema)
                {
                    self.error(
                        span.value,
                        Code::TypeMismatch,
                        format!(
                            "`{}` is {reason} ({origin}), which column `{}` ({}) cannot hold",
                            path.as_str(),
                            column.name,
                            column.sql_type
                        ),
                    )
                    .help = Some("convert it in a template, or map another field".into());
                }
            }
            ValueExpr::Template { .. } => {}
        }
    }

    /// What only some events of a contract field would break: a field
    /// that may be absent or null into a `NOT NULL` column without a
    /// default, a string that may be longer than its column holds.
    /// `covers_absence`: the path has a `default:` or is `required: true`.
    fn contract_field(
        &mut self,
        table: &TableName,
        column: &ColumnInfo,
        path: &crate::jsonpath::JsonPath,
        covers_absence: bool,
        span: &ColumnSpan,
    ) {
        let segments = path.segments();
        let (Some(contract), Some(Segment::Key(first))) = (self.contract, segments.first()) else {
            return;
        };
        if first != "data" {
            return;
        }
        let Lookup::Found(schema) = contract.lookup(&segments[1..]) else {
            return;
        };
        let file = contract.file.display();
        let path = path.as_str();
        if !column.nullable && !column.has_default {
            let why = if allows_null(schema) {
                Some(format!("may be null (the contract {file} allows null)"))
            } else if !covers_absence && !contract.always_present(&segments[1..]) {
                Some(format!(
                    "may be absent (not `required` by the contract {file})"
                ))
            } else {
                None
            };
            if let Some(why) = why {
                self.warning(
                    span.value,
                    Code::NullableIntoNotNull,
                    format!(
                        "`{path}` {why}, and column `{table}.{}` is NOT NULL without a default: such events would go to dead letter",
                        column.name
                    ),
                    "require the field (not null) in the contract, give the path a `default:`, or give the column a default".into(),
                );
            }
        }
        if let Some(limit) = column.limits.max_chars
            && is_free_string(schema)
        {
            let longest = schema
                .get("maxLength")
                .and_then(Value::as_u64)
                .or_else(|| format_length(schema));
            let what = match longest {
                Some(longest) if longest > u64::from(limit) => Some(format!(
                    "is a string of up to {longest} characters (`maxLength` in the contract {file}), and column `{}` ({}) holds at most {limit}",
                    column.name, column.sql_type
                )),
                Some(_) => None,
                None => Some(format!(
                    "is a string with no `maxLength` (per the contract {file}), and column `{}` ({}) holds at most {limit} characters",
                    column.name, column.sql_type
                )),
            };
            if let Some(what) = what {
                self.warning(
                    span.value,
                    Code::MayExceedLength,
                    format!("`{path}` {what}: longer values would go to dead letter"),
                    format!("give the field `\"maxLength\": {limit}` in the contract, or widen the column"),
                );
            }
        }
    }

    fn literal(&mut self, column: &ColumnInfo, literal: &Value, span: &ColumnSpan, what: &str) {
        if let Err(StoreError::Conversion { reason, .. }) = convert::convert(column, literal) {
            self.error(
                span.value,
                Code::TypeMismatch,
                format!(
                    "{what}{} cannot be stored in column `{}` ({}): {reason}",
                    show(literal),
                    column.name,
                    column.sql_type
                ),
            );
        }
    }

    /// The JSON Schema of what a path reads, when the envelope or the
    /// event's contract says, and where that was found.
    fn schema_of(&self, segments: &[Segment]) -> Option<(Value, String)> {
        let Some(Segment::Key(first)) = segments.first() else {
            return None;
        };
        let envelope = |schema: Value| Some((schema, "per the event envelope".to_owned()));
        match (first.as_str(), segments.len()) {
            ("id" | "organization_id", 1) => envelope(json!({"type": "string", "format": "uuid"})),
            ("occurred_at", 1) => envelope(json!({"type": "string", "format": "date-time"})),
            ("source" | "event", 1) => envelope(json!({"type": "string"})),
            ("data", _) => {
                let contract = self.contract?;
                match contract.lookup(&segments[1..]) {
                    Lookup::Found(schema) => Some((
                        schema.clone(),
                        format!("per the contract {}", contract.file.display()),
                    )),
                    Lookup::Open | Lookup::Missing { .. } => None,
                }
            }
            _ => None,
        }
    }

    fn upsert(
        &mut self,
        table: &TableName,
        info: &TableInfo,
        key: &[crate::compile::ident::Ident],
        values: &Columns,
    ) {
        let key_names: Vec<&str> = key.iter().map(|k| k.as_str()).collect();
        // A key column that does not exist is reported as an unknown
        // column of `values` (every key column is among them).
        let all_exist = key_names.iter().all(|k| info.column(k).is_some());
        if !key_names.is_empty() && all_exist && !info.has_unique(&key_names) {
            let position = self
                .step
                .spans
                .key
                .first()
                .copied()
                .unwrap_or(self.step.spans.table);
            let sets: Vec<String> = info
                .unique
                .iter()
                .map(|set| format!("({})", set.join(", ")))
                .collect();
            let help = format!(
                "{}; or add one: CREATE UNIQUE INDEX ON {table} ({})",
                if sets.is_empty() {
                    format!("`{table}` has no unique index at all")
                } else {
                    format!("its unique column sets are {}", sets.join(", "))
                },
                key_names.join(", ")
            );
            self.error(
                position,
                Code::NoUniqueKey,
                format!(
                    "no unique index or constraint on exactly ({}) in `{table}`: the upsert's ON CONFLICT needs one",
                    key_names.join(", ")
                ),
            )
            .help = Some(help);
        }
        let missing: Vec<String> = info
            .columns
            .iter()
            .filter(|c| !c.nullable && !c.has_default)
            .filter(|c| !values.iter().any(|(name, _)| c.name == name.as_str()))
            .map(|c| format!("`{}`", c.name))
            .collect();
        if !missing.is_empty() {
            let position = self.step.spans.table;
            let (columns, verb, them) = if missing.len() == 1 {
                ("column", "is", "it")
            } else {
                ("columns", "are", "them")
            };
            self.error(
                position,
                Code::MissingNotNull,
                format!(
                    "this upsert does not write {columns} {} of `{table}`, which {verb} NOT NULL without a default: every insert would fail",
                    missing.join(", ")
                ),
            )
            .help = Some(format!("add {them} to `values`, or give {them} a default in the database"));
        }
    }
}

/// Whether a value of `schema` may be null: its `type`, `enum` or `const`
/// says so.
fn allows_null(schema: &Value) -> bool {
    let typed = match schema.get("type") {
        Some(Value::String(t)) => t == "null",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "null"),
        _ => false,
    };
    let listed = match (schema.get("const"), schema.get("enum")) {
        (Some(constant), _) => constant.is_null(),
        (None, Some(Value::Array(items))) => items.iter().any(Value::is_null),
        _ => false,
    };
    typed || listed
}

/// Whether `schema` is a string of any text (not a `const` or an `enum`,
/// whose values the type check converts one by one).
fn is_free_string(schema: &Value) -> bool {
    let string = match schema.get("type") {
        Some(Value::String(t)) => t == "string",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "string"),
        _ => false,
    };
    string && schema.get("const").is_none() && schema.get("enum").is_none()
}

/// The longest string a `format` allows, for formats of a fixed length.
fn format_length(schema: &Value) -> Option<u64> {
    match schema.get("format").and_then(Value::as_str)? {
        "uuid" => Some(36),
        "date" => Some(10),
        _ => None,
    }
}

/// JSON Schema formats of strings that are never numbers, UUIDs or dates.
const TEXTUAL_FORMATS: [&str; 9] = [
    "email",
    "idn-email",
    "uri",
    "uri-reference",
    "iri",
    "hostname",
    "ipv4",
    "ipv6",
    "regex",
];

/// Why a value of `schema` can never be stored in `column`, or `None`
/// when it may fit. Conservative: an unknown or loose schema fits.
pub fn schema_misfit(column: &ColumnInfo, schema: &Value) -> Option<String> {
    // Constants and enums are literals: each is converted as a literal.
    let choices: Option<Vec<&Value>> = match (schema.get("const"), schema.get("enum")) {
        (Some(constant), _) => Some(vec![constant]),
        (None, Some(Value::Array(items))) => Some(items.iter().collect()),
        _ => None,
    };
    if let Some(choices) = choices {
        let fits = choices
            .iter()
            .any(|v| v.is_null() || convert::convert(column, v).is_ok());
        return (!fits && !choices.is_empty()).then(|| {
            let shown: Vec<String> = choices.iter().map(|v| show(v)).collect();
            format!("one of {}", shown.join(", "))
        });
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return None,
    };
    let types: Vec<&str> = types.into_iter().filter(|t| *t != "null").collect();
    if types.is_empty() {
        return None;
    }
    let format = schema.get("format").and_then(Value::as_str);
    if types.iter().any(|t| type_fits(column.ty, t, format)) {
        return None;
    }
    let described: Vec<String> = types
        .iter()
        .map(|t| match (t, format) {
            (&"string", Some(format)) => format!("a string of format `{format}`"),
            (&"integer", _) => "an integer".to_owned(),
            (t, _) => format!("a{} {t}", if t.starts_with(['a', 'o']) { "n" } else { "" }),
        })
        .collect();
    Some(described.join(" or "))
}

/// Whether some value of JSON type `json_type` (with string `format`) can
/// be stored in a column of type `ty`, as [`convert::convert`] converts.
fn type_fits(ty: ColumnType, json_type: &str, format: Option<&str>) -> bool {
    let textual = format.is_some_and(|f| TEXTUAL_FORMATS.contains(&f));
    let temporal = matches!(format, Some("date" | "date-time" | "time" | "duration"));
    let uuid = format == Some("uuid");
    match ty {
        ColumnType::Json => true,
        ColumnType::Text | ColumnType::Other => !matches!(json_type, "object" | "array"),
        ColumnType::Uuid => json_type == "string" && !textual && !temporal,
        ColumnType::Integer | ColumnType::Float | ColumnType::Numeric => match json_type {
            "integer" | "number" => true,
            "string" => !textual && !temporal && !uuid,
            _ => false,
        },
        ColumnType::Boolean => match json_type {
            "boolean" | "integer" | "number" => true,
            "string" => !textual && !temporal && !uuid,
            _ => false,
        },
        ColumnType::Date | ColumnType::Timestamp | ColumnType::TimestampTz => {
            json_type == "string"
                && !textual
                && !uuid
                && format != Some("time")
                && format != Some("duration")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(ty: ColumnType) -> ColumnInfo {
        ColumnInfo::new("c", ty, ty.name())
    }

    #[test]
    fn only_what_can_never_fit_is_a_misfit() {
        let misfit = |ty, schema: Value| schema_misfit(&column(ty), &schema);
        assert_eq!(misfit(ColumnType::Integer, json!({"type": "string"})), None);
        assert_eq!(
            misfit(ColumnType::Integer, json!({"type": ["integer", "null"]})),
            None
        );
        assert_eq!(misfit(ColumnType::Integer, json!({})), None);
        assert_eq!(misfit(ColumnType::Json, json!({"type": "object"})), None);
        assert_eq!(
            misfit(
                ColumnType::Date,
                json!({"type": "string", "format": "date"})
            ),
            None
        );
        assert_eq!(
            misfit(ColumnType::Integer, json!({"type": "boolean"})).as_deref(),
            Some("a boolean")
        );
        assert_eq!(
            misfit(
                ColumnType::Uuid,
                json!({"type": "string", "format": "email"})
            )
            .as_deref(),
            Some("a string of format `email`")
        );
        assert_eq!(
            misfit(ColumnType::Text, json!({"type": "object"})).as_deref(),
            Some("an object")
        );
        assert_eq!(
            misfit(ColumnType::Numeric, json!({"enum": ["monthly", "weekly"]})).as_deref(),
            Some("one of \"monthly\", \"weekly\"")
        );
        assert_eq!(
            misfit(ColumnType::Numeric, json!({"enum": ["1", "x"]})),
            None
        );
        // Limits count as much as types.
        let short = ColumnInfo::new("c", ColumnType::Text, "character varying(3)");
        assert_eq!(
            schema_misfit(&short, &json!({"enum": ["monthly", "weekly"]})).as_deref(),
            Some("one of \"monthly\", \"weekly\"")
        );
        assert_eq!(
            schema_misfit(&short, &json!({"enum": ["abc", "weekly"]})),
            None
        );
        let small = ColumnInfo::new("c", ColumnType::Integer, "smallint");
        assert!(schema_misfit(&small, &json!({"const": 40000})).is_some());
    }
}
