//! The config test file format (`*.test.yaml`): YAML with positions,
//! validated against `schemas/test.schema.json`, then read into
//! [`TestFile`] with the position of everything a failure may point at.
//! A malformed file gives diagnostics, like an integration file.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use jsonschema::Validator;
use regex::Regex;
use serde_json::{Map, Value};

use crate::compile::ident::{Ident, TableName};
use crate::config::yaml::{self, Document, escape_pointer_token};
use crate::diagnostics::{Code, Diagnostic, Position, did_you_mean};
use crate::store::Dialect;
use crate::store::events::Status;

/// The test file schema, as shipped in `schemas/`.
pub const TEST_SCHEMA: &str = include_str!("../../schemas/test.schema.json");

static SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    serde_json::from_str(TEST_SCHEMA).expect("the shipped test schema is valid JSON")
});

static VALIDATOR: LazyLock<Validator> = LazyLock::new(|| {
    jsonschema::draft202012::new(&SCHEMA).expect("the shipped test schema is a valid schema")
});

/// Whether a path names a config test file: `*.test.yaml` or `*.test.yml`.
pub fn is_test_file(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
        !n.starts_with('.') && (n.ends_with(".test.yaml") || n.ends_with(".test.yml"))
    })
}

/// One test file, read and checked.
#[derive(Debug)]
pub struct TestFile {
    pub path: PathBuf,
    pub document: Document,
    /// Install the example platform's tables before each case.
    pub platform: bool,
    /// SQL files to run before each case, per database.
    pub schema_postgres: Vec<PathBuf>,
    pub schema_sqlite: Vec<PathBuf>,
    /// Where `schema:` stands, for errors reading those files.
    pub schema_position: Position,
    /// Envelope fields every event starts from.
    pub defaults: Map<String, Value>,
    /// Rows every case starts with.
    pub given: Vec<GivenTable>,
    pub cases: Vec<TestCase>,
}

impl TestFile {
    /// The schema files for a database.
    pub fn schema_for(&self, dialect: Dialect) -> &[PathBuf] {
        match dialect {
            Dialect::Postgres => &self.schema_postgres,
            Dialect::Sqlite => &self.schema_sqlite,
        }
    }
}

/// Rows to insert into one table.
#[derive(Debug, Clone)]
pub struct GivenTable {
    pub table: TableName,
    pub position: Position,
    pub rows: Vec<(Map<String, Value>, Position)>,
}

/// One case: rows, events, expectations.
#[derive(Debug, Clone)]
pub struct TestCase {
    pub name: String,
    pub position: Position,
    pub given: Vec<GivenTable>,
    /// The events as written (before defaults), each with its position.
    pub publish: Vec<(Map<String, Value>, Position)>,
    pub rows: Vec<TableExpectation>,
    pub events: Option<ListExpectation<ExpectedEvent>>,
    pub deliveries: Option<ListExpectation<ExpectedDelivery>>,
}

/// `subset`: the listed items must be found; `exact`: and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Match {
    #[default]
    Subset,
    Exact,
}

/// What one table must hold.
#[derive(Debug, Clone)]
pub struct TableExpectation {
    pub table: TableName,
    pub position: Position,
    pub matching: Match,
    pub count: Option<usize>,
    pub rows: Vec<(Map<String, Value>, Position)>,
}

/// Expected emitted events or deliveries.
#[derive(Debug, Clone)]
pub struct ListExpectation<T> {
    pub position: Position,
    pub matching: Match,
    pub count: Option<usize>,
    pub items: Vec<(T, Position)>,
}

/// An event an integration must have emitted.
#[derive(Debug, Clone)]
pub struct ExpectedEvent {
    pub event: String,
    pub source: Option<String>,
    /// Fields its data must have (compared deeply; others may exist).
    pub data: Option<Value>,
}

/// A delivery that must exist.
#[derive(Debug, Clone)]
pub struct ExpectedDelivery {
    pub integration: Option<String>,
    pub event: Option<String>,
    pub status: Option<Status>,
    pub reason: Option<Regex>,
}

/// Parses, validates and reads a test file. `integrations` are the ids
/// the directory defines (a delivery expectation naming another is a
/// mistake worth reporting before anything runs).
pub fn load(path: &Path, text: &str, integrations: &[&str]) -> (Option<TestFile>, Vec<Diagnostic>) {
    let (document, mut diagnostics) = yaml::parse(path, text);
    let Some(document) = document else {
        return (None, diagnostics);
    };
    for error in VALIDATOR.iter_errors(&document.value) {
        let pointer = error.instance_path().as_str().to_owned();
        diagnostics.extend(describe(path, &document, &error, &pointer));
    }
    if !diagnostics.is_empty() {
        crate::diagnostics::sort(&mut diagnostics);
        return (None, diagnostics);
    }
    let mut reader = Reader {
        path,
        document: &document,
        integrations,
        diagnostics: Vec::new(),
    };
    let file = reader.file();
    let mut diagnostics = reader.diagnostics;
    crate::diagnostics::sort(&mut diagnostics);
    match file {
        Some(file) if diagnostics.is_empty() => (Some(file), diagnostics),
        _ => (None, diagnostics),
    }
}

/// A schema error as a diagnostic. `oneOf` failures are explained by the
/// schema's description of the node, which names the accepted forms.
fn describe(
    path: &Path,
    document: &Document,
    error: &jsonschema::ValidationError<'_>,
    pointer: &str,
) -> Vec<Diagnostic> {
    use jsonschema::error::ValidationErrorKind;
    if let ValidationErrorKind::OneOfNotValid { .. }
    | ValidationErrorKind::OneOfMultipleValid { .. } = error.kind()
    {
        let schema_path = error.schema_path().as_str();
        let parent = schema_path.rsplit_once('/').map_or("", |p| p.0);
        let description = SCHEMA
            .pointer(parent)
            .and_then(|s| s.get("description"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let name = pointer.rsplit('/').next().unwrap_or("the file");
        let mut diagnostic = Diagnostic::error(
            path,
            document.spans.position(pointer),
            Code::WrongType,
            format!("`{name}` does not have one of the accepted forms"),
        );
        if let Some(description) = description {
            diagnostic = diagnostic.with_help(description);
        }
        return vec![diagnostic];
    }
    crate::config::schema::describe_error(&SCHEMA, path, document, error, pointer)
}

struct Reader<'a> {
    path: &'a Path,
    document: &'a Document,
    integrations: &'a [&'a str],
    diagnostics: Vec<Diagnostic>,
}

impl Reader<'_> {
    fn at(&self, pointer: &str) -> Position {
        self.document.spans.position(pointer)
    }

    fn key_at(&self, pointer: &str) -> Position {
        self.document.spans.key_position(pointer)
    }

    fn error(&mut self, position: Position, code: Code, message: String) -> &mut Diagnostic {
        self.diagnostics
            .push(Diagnostic::error(self.path, position, code, message));
        self.diagnostics.last_mut().expect("just pushed")
    }

    fn file(&mut self) -> Option<TestFile> {
        let root = self.document.value.as_object()?;
        let base = self.path.parent().unwrap_or(Path::new("."));
        let paths = |value: Option<&Value>| -> Vec<PathBuf> {
            match value {
                Some(Value::String(p)) => vec![base.join(p)],
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|p| base.join(p))
                    .collect(),
                _ => Vec::new(),
            }
        };
        let (schema_postgres, schema_sqlite) = match root.get("schema") {
            Some(Value::Object(per)) => (paths(per.get("postgres")), paths(per.get("sqlite"))),
            other => (paths(other), paths(other)),
        };
        let given = match root.get("given") {
            Some(value) => self.tables("/given", value),
            None => Vec::new(),
        };
        let cases = root
            .get("cases")
            .and_then(Value::as_array)
            .map(|cases| {
                cases
                    .iter()
                    .enumerate()
                    .map(|(i, case)| self.case(&format!("/cases/{i}"), case))
                    .collect()
            })
            .unwrap_or_default();
        Some(TestFile {
            path: self.path.to_path_buf(),
            document: self.document.clone(),
            platform: root.get("platform").and_then(Value::as_str) == Some("example"),
            schema_postgres,
            schema_sqlite,
            schema_position: self.at("/schema"),
            defaults: root
                .get("defaults")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            given,
            cases,
        })
    }

    fn table_name(&mut self, pointer: &str, name: &str) -> Option<TableName> {
        match TableName::parse(name) {
            Ok(table) => Some(table),
            Err(error) => {
                let position = self.key_at(pointer);
                self.error(
                    position,
                    Code::InvalidIdentifier,
                    format!("table `{name}`: {error}"),
                );
                None
            }
        }
    }

    /// Checks a row's column names; returns the row.
    fn row(&mut self, pointer: &str, value: &Value) -> (Map<String, Value>, Position) {
        let row = value.as_object().cloned().unwrap_or_default();
        for column in row.keys() {
            if let Err(error) = Ident::parse(column) {
                let position = self.key_at(&format!("{pointer}/{}", escape_pointer_token(column)));
                self.error(position, Code::InvalidIdentifier, format!("column {error}"));
            }
        }
        (row, self.at(pointer))
    }

    fn tables(&mut self, pointer: &str, value: &Value) -> Vec<GivenTable> {
        let mut tables = Vec::new();
        for (name, rows) in value.as_object().into_iter().flatten() {
            let table_pointer = format!("{pointer}/{}", escape_pointer_token(name));
            let Some(table) = self.table_name(&table_pointer, name) else {
                continue;
            };
            let rows = rows
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, row)| self.row(&format!("{table_pointer}/{i}"), row))
                .collect();
            tables.push(GivenTable {
                table,
                position: self.key_at(&table_pointer),
                rows,
            });
        }
        tables
    }

    fn case(&mut self, pointer: &str, case: &Value) -> TestCase {
        let publish_pointer = format!("{pointer}/publish");
        let publish = match case.get("publish") {
            Some(Value::Array(events)) => events
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    (
                        e.as_object().cloned().unwrap_or_default(),
                        self.at(&format!("{publish_pointer}/{i}")),
                    )
                })
                .collect(),
            Some(Value::Object(event)) => vec![(event.clone(), self.at(&publish_pointer))],
            _ => Vec::new(),
        };
        let given = match case.get("given") {
            Some(value) => self.tables(&format!("{pointer}/given"), value),
            None => Vec::new(),
        };
        let expect_pointer = format!("{pointer}/expect");
        let expect = case.get("expect");
        let mut rows = Vec::new();
        if let Some(tables) = expect
            .and_then(|e| e.get("rows"))
            .and_then(Value::as_object)
        {
            for (name, expectation) in tables {
                let table_pointer = format!("{expect_pointer}/rows/{}", escape_pointer_token(name));
                let Some(table) = self.table_name(&table_pointer, name) else {
                    continue;
                };
                let (matching, count, list, list_pointer) =
                    self.list_form(&table_pointer, expectation, "rows");
                let items = list
                    .iter()
                    .enumerate()
                    .map(|(i, row)| self.row(&format!("{list_pointer}/{i}"), row))
                    .collect();
                rows.push(TableExpectation {
                    table,
                    position: self.key_at(&table_pointer),
                    matching,
                    count,
                    rows: items,
                });
            }
        }
        let events = expect.and_then(|e| e.get("events")).map(|value| {
            let events_pointer = format!("{expect_pointer}/events");
            let (matching, count, list, list_pointer) =
                self.list_form(&events_pointer, value, "events");
            ListExpectation {
                position: self.key_at(&events_pointer),
                matching,
                count,
                items: list
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let text =
                            |key: &str| item.get(key).and_then(Value::as_str).map(str::to_owned);
                        (
                            ExpectedEvent {
                                event: text("event").unwrap_or_default(),
                                source: text("source"),
                                data: item.get("data").cloned(),
                            },
                            self.at(&format!("{list_pointer}/{i}")),
                        )
                    })
                    .collect(),
            }
        });
        let deliveries = expect.and_then(|e| e.get("deliveries")).map(|value| {
            let deliveries_pointer = format!("{expect_pointer}/deliveries");
            let (matching, count, list, list_pointer) =
                self.list_form(&deliveries_pointer, value, "deliveries");
            let mut items = Vec::new();
            for (i, item) in list.iter().enumerate() {
                let item_pointer = format!("{list_pointer}/{i}");
                let text = |key: &str| item.get(key).and_then(Value::as_str).map(str::to_owned);
                let integration = text("integration");
                if let Some(id) = &integration
                    && !self.integrations.contains(&id.as_str())
                {
                    let position = self.at(&format!("{item_pointer}/integration"));
                    let help =
                        did_you_mean(id, self.integrations.iter().copied()).unwrap_or_else(|| {
                            format!("the integrations are: {}", self.integrations.join(", "))
                        });
                    self.error(
                        position,
                        Code::InvalidValue,
                        format!("there is no integration `{id}`"),
                    )
                    .help = Some(help);
                }
                let reason = text("reason").and_then(|pattern| match Regex::new(&pattern) {
                    Ok(regex) => Some(regex),
                    Err(error) => {
                        let position = self.at(&format!("{item_pointer}/reason"));
                        // The regex crate's message draws the pattern over
                        // several lines; its last line says what is wrong.
                        let text = error.to_string();
                        let reason = text
                            .lines()
                            .last()
                            .unwrap_or_default()
                            .trim_start_matches("error: ")
                            .to_owned();
                        self.error(
                            position,
                            Code::InvalidValue,
                            format!("`reason` is not a valid regular expression: {reason}"),
                        );
                        None
                    }
                });
                items.push((
                    ExpectedDelivery {
                        integration,
                        event: text("event"),
                        status: text("status").as_deref().and_then(Status::parse),
                        reason,
                    },
                    self.at(&item_pointer),
                ));
            }
            ListExpectation {
                position: self.key_at(&deliveries_pointer),
                matching,
                count,
                items,
            }
        });
        TestCase {
            name: case
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            position: self.at(pointer),
            given,
            publish,
            rows,
            events,
            deliveries,
        }
    }

    /// Reads the two forms of an expectation: a plain list, or
    /// `{match, count, <list_key>}`. Returns the list and its pointer.
    fn list_form(
        &self,
        pointer: &str,
        value: &Value,
        list_key: &str,
    ) -> (Match, Option<usize>, Vec<Value>, String) {
        match value {
            Value::Array(items) => (Match::Subset, None, items.clone(), pointer.to_owned()),
            Value::Object(form) => (
                match form.get("match").and_then(Value::as_str) {
                    Some("exact") => Match::Exact,
                    _ => Match::Subset,
                },
                form.get("count")
                    .and_then(Value::as_u64)
                    .map(|n| n as usize),
                form.get(list_key)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                format!("{pointer}/{list_key}"),
            ),
            _ => (Match::Subset, None, Vec::new(), pointer.to_owned()),
        }
    }
}
