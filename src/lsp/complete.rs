//! Completion: what may be written at the cursor, from what busbar knows.
//!
//! - keys: the integration schema's, for the mapping the cursor is in (the
//!   five step keywords in a step without one);
//! - event names after `on:` (the source product's contracts) and `emit:`
//!   (the target product's), products after `source:` and `target:`;
//! - JSONPaths: the envelope's fields after `$.`, the contract's fields
//!   after `$.data.` (`$.data.candidate.` → `firstName`, `email`, … with
//!   their types);
//! - inside `{{ }}`: `event`, `data` and the names earlier steps bound
//!   with `as:`, their fields (a bound row's columns from the catalog),
//!   and the filters after `|`;
//! - tables after `find:`/`upsert:`/…, and columns under `values:`,
//!   `where:` and `set:`, from the catalog file;
//! - the values a key allows (`missing: skip | fail | null`).

use std::sync::LazyLock;

use lsp_types::{
    CompletionItem, CompletionItemKind, CompletionParams, CompletionResponse, CompletionTextEdit,
    Documentation, MarkupContent, MarkupKind, Position as LspPosition, Range, TextEdit,
};
use serde_json::Value;

use super::keys::{self, KeyDoc};
use super::outline::{Frame, Line, Outline, Path, StepOutline, unquote};
use super::text::{char_index, line_of, utf16_column};
use super::workspace::{
    ContractCache, Documents, Knowledge, LiveCatalogs, Settings, directory_of, knowledge, path_of,
};
use crate::compile::ident::TableName;
use crate::compile::template::environment;
use crate::envelope::ENVELOPE_FIELDS;
use crate::jsonpath::Segment;

/// What each envelope field holds, for completion and hover.
pub fn envelope_field_doc(field: &str) -> &'static str {
    match field {
        "id" => "string (uuid): the event's id, unique per organization",
        "source" => "string: the product that published the event",
        "event" => "string: the event's name (`candidate.hired`)",
        "organization_id" => "string (uuid): the organization the event belongs to",
        "occurred_at" => "string (date-time): when it happened, RFC 3339",
        "data" => "object: the event's payload, described by its contract",
        _ => "",
    }
}

/// busbar's own filters and what they do; the others are minijinja's.
const BUSBAR_FILTERS: [(&str, &str); 3] = [
    (
        "date",
        "the calendar date (`YYYY-MM-DD`) of an RFC 3339 timestamp or a date; `date(\"%d/%m\")` formats it",
    ),
    ("datetime", "an RFC 3339 timestamp normalised to UTC"),
    ("json", "the value as JSON text"),
];

/// minijinja's filters that busbar's environment has (probed once).
static FILTERS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    const CANDIDATES: &[&str] = &[
        "abs",
        "attr",
        "batch",
        "bool",
        "capitalize",
        "count",
        "d",
        "date",
        "datetime",
        "default",
        "dictsort",
        "first",
        "float",
        "groupby",
        "indent",
        "int",
        "items",
        "join",
        "json",
        "last",
        "length",
        "lines",
        "list",
        "lower",
        "map",
        "max",
        "min",
        "reject",
        "rejectattr",
        "replace",
        "reverse",
        "round",
        "select",
        "selectattr",
        "slice",
        "sort",
        "split",
        "string",
        "sum",
        "title",
        "tojson",
        "trim",
        "unique",
        "upper",
        "urlencode",
    ];
    let env = environment();
    CANDIDATES
        .iter()
        .copied()
        .filter(|name| {
            match env
                .compile_expression(&format!("none | {name}"))
                .and_then(|e| e.eval(()))
            {
                Ok(_) => true,
                Err(error) => error.kind() != minijinja::ErrorKind::UnknownFilter,
            }
        })
        .collect()
});

/// The filters a template may use.
pub fn filters() -> &'static [&'static str] {
    &FILTERS
}

/// A schema's type as one short phrase: `string (email)`, `integer`,
/// `array of object`, `string | null`.
pub fn type_of(schema: &Value) -> String {
    let base = match schema.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" | "),
        _ if schema.get("enum").is_some() => "enum".to_owned(),
        _ => "any".to_owned(),
    };
    let mut shown = match schema.get("format").and_then(Value::as_str) {
        Some(format) => format!("{base} ({format})"),
        None => base,
    };
    if shown.starts_with("array")
        && let Some(items) = schema.get("items")
    {
        shown = format!("{shown} of {}", type_of(items));
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let values: Vec<String> = values.iter().map(Value::to_string).collect();
        shown = format!("{shown}: {}", values.join(", "));
    }
    shown
}

/// Where the cursor is, for every feature: the line's outline, the path
/// of enclosing nodes, the text before the cursor.
pub struct Cursor<'t> {
    pub outline: Outline<'t>,
    /// 0-based line.
    pub line: usize,
    /// The line's text.
    pub text: &'t str,
    /// The character index of the cursor in the line.
    pub column: usize,
}

impl<'t> Cursor<'t> {
    /// The cursor at `position` of `text`.
    pub fn new(text: &'t str, position: LspPosition) -> Cursor<'t> {
        let line_text = line_of(text, position.line);
        Cursor {
            outline: Outline::new(text),
            line: position.line as usize,
            text: line_text,
            column: char_index(line_text, position.character),
        }
    }

    /// The line's text before the cursor.
    pub fn prefix(&self) -> &'t str {
        let end = self
            .text
            .char_indices()
            .nth(self.column)
            .map_or(self.text.len(), |(byte, _)| byte);
        &self.text[..end]
    }

    /// The path of the mapping a key on this line belongs to (with the
    /// item this line starts, if it starts one), and the line read up to
    /// `upto`.
    pub fn path_of_line(&self, line: &Line<'_>) -> Path {
        match line.dash {
            Some(dash) => {
                let mut path = self.outline.path_at(self.line, dash);
                path.0.push(Frame::Item {
                    line: self.line,
                    column: dash,
                });
                path
            }
            None => self.outline.path_at(
                self.line,
                line.key.map_or(line.indent, |(column, _)| column),
            ),
        }
    }

    /// The range from character `start` of the line to the cursor.
    pub fn range_from(&self, start: usize) -> Range {
        let line = self.line as u32;
        Range::new(
            LspPosition::new(line, utf16_column(self.text, start)),
            LspPosition::new(line, utf16_column(self.text, self.column)),
        )
    }

    /// The step enclosing `path`, if it is in one.
    pub fn step(&self, path: &Path) -> Option<StepOutline> {
        let (line, column) = path.item_after("steps")?;
        Some(self.outline.step(line, column))
    }
}

/// The text of an open buffer, or of the file on disk.
pub fn document_text(documents: &Documents, path: &std::path::Path) -> Option<String> {
    match documents.get(path) {
        Some(document) => Some(document.text.clone()),
        None => std::fs::read_to_string(path).ok(),
    }
}

/// Answers `textDocument/completion`.
pub fn complete(
    settings: &Settings,
    documents: &Documents,
    live: &LiveCatalogs,
    contracts: &mut ContractCache,
    params: CompletionParams,
) -> Option<CompletionResponse> {
    let position = params.text_document_position;
    let path = path_of(&position.text_document.uri)?;
    let text = document_text(documents, &path)?;
    let dir = directory_of(&path, settings)?;
    let known = knowledge(&dir, settings, documents, live, contracts);
    let cursor = Cursor::new(&text, position.position);
    let items = completions(&cursor, &known);
    Some(CompletionResponse::Array(items))
}

/// The completions at `cursor`.
pub fn completions(cursor: &Cursor<'_>, known: &Knowledge) -> Vec<CompletionItem> {
    let prefix = cursor.prefix();
    // A blank line: a key at the cursor's column.
    let line = Line::parse(cursor.line, prefix).unwrap_or(Line {
        number: cursor.line,
        indent: prefix.len(),
        dash: None,
        key: None,
        value: "",
        value_column: cursor.column,
    });
    let path = cursor.path_of_line(&line);
    let source = cursor.outline.top_value("source").unwrap_or("");
    let target = cursor.outline.top_value("target").unwrap_or("");
    let event = cursor.outline.route_event(&path).unwrap_or("");

    // Inside a template: names, their fields, filters.
    if let Some(expression) = open_template(prefix) {
        return template_items(cursor, &path, expression, (source, event), known);
    }
    // A JSONPath: the envelope's fields, then the contract's.
    if let Some(start) = jsonpath_start(prefix) {
        let path_text = &prefix[start..];
        let parents: Vec<&str> = path_text
            .trim_start_matches('$')
            .trim_start_matches('.')
            .split('.')
            .collect();
        let (parents, partial) = parents.split_at(parents.len() - 1);
        let word_start = cursor.column - partial[0].chars().count();
        return field_items(cursor, word_start, parents, (source, event), known);
    }
    let word_start = cursor.column
        - prefix
            .chars()
            .rev()
            .take_while(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '-'))
            .count();
    match line.key {
        // A value: after `key: `.
        Some((_, key)) if cursor.column >= line.value_column => {
            let step = cursor.step(&path);
            value_items(
                cursor,
                word_start,
                &path,
                key,
                step.as_ref(),
                (source, target),
                known,
            )
        }
        Some(_) => Vec::new(),
        // A key being typed.
        None if line.value.chars().all(|c| c.is_alphanumeric() || c == '_') => {
            key_items(cursor, word_start, &path, (target, event), known)
        }
        None => Vec::new(),
    }
}

/// The expression typed so far inside an unclosed `{{` or `{%`.
fn open_template(prefix: &str) -> Option<&str> {
    let open = prefix
        .rfind("{{")
        .into_iter()
        .chain(prefix.rfind("{%"))
        .max()?;
    let inside = &prefix[open + 2..];
    (!inside.contains("}}") && !inside.contains("%}")).then_some(inside)
}

/// Where a JSONPath being typed starts in `prefix` (its `$`).
fn jsonpath_start(prefix: &str) -> Option<usize> {
    let tail = prefix
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_alphanumeric() || matches!(c, '_' | '.' | '$'))
        .last()?
        .0;
    prefix[tail..].starts_with("$.").then_some(tail)
}

fn markdown(text: impl Into<String>) -> Option<Documentation> {
    Some(Documentation::MarkupContent(MarkupContent {
        kind: MarkupKind::Markdown,
        value: text.into(),
    }))
}

fn item(
    cursor: &Cursor<'_>,
    start: usize,
    label: &str,
    insert: String,
    kind: CompletionItemKind,
    detail: Option<String>,
    documentation: Option<String>,
) -> CompletionItem {
    CompletionItem {
        label: label.to_owned(),
        kind: Some(kind),
        detail,
        documentation: documentation.and_then(markdown),
        filter_text: Some(label.to_owned()),
        text_edit: Some(CompletionTextEdit::Edit(TextEdit::new(
            cursor.range_from(start),
            insert,
        ))),
        ..CompletionItem::default()
    }
}

/// The fields after `$.` or `{{ event.`/`{{ data.`: `parents` are the
/// segments already typed after the root.
fn field_items(
    cursor: &Cursor<'_>,
    start: usize,
    parents: &[&str],
    (source, event): (&str, &str),
    known: &Knowledge,
) -> Vec<CompletionItem> {
    match parents.split_first() {
        None => ENVELOPE_FIELDS
            .iter()
            .map(|field| {
                item(
                    cursor,
                    start,
                    field,
                    (*field).to_owned(),
                    CompletionItemKind::FIELD,
                    Some(envelope_field_doc(field).to_owned()),
                    None,
                )
            })
            .collect(),
        Some((&"data", rest)) => contract_fields(known, source, event, rest)
            .into_iter()
            .map(|(name, schema)| {
                item(
                    cursor,
                    start,
                    &name,
                    name.clone(),
                    CompletionItemKind::FIELD,
                    Some(type_of(&schema)),
                    schema
                        .get("description")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                )
            })
            .collect(),
        Some(_) => Vec::new(),
    }
}

/// The fields of contract `(product, event)` at `path`, with their schemas.
pub fn contract_fields(
    known: &Knowledge,
    product: &str,
    event: &str,
    path: &[&str],
) -> Vec<(String, Value)> {
    let Some(contract) = known.contracts.get(product, event) else {
        return Vec::new();
    };
    let segments: Vec<Segment> = path
        .iter()
        .map(|key| Segment::Key((*key).to_owned()))
        .collect();
    contract
        .fields(&segments)
        .into_iter()
        .map(|(name, schema)| (name, schema.clone()))
        .collect()
}

fn template_items(
    cursor: &Cursor<'_>,
    path: &Path,
    expression: &str,
    (source, event): (&str, &str),
    known: &Knowledge,
) -> Vec<CompletionItem> {
    let chain_length = expression
        .chars()
        .rev()
        .take_while(|c| c.is_alphanumeric() || matches!(c, '_' | '.'))
        .count();
    let before = expression[..expression.len() - chain_length].trim_end();
    let chain = &expression[expression.len() - chain_length..];
    let parts: Vec<&str> = chain.split('.').collect();
    let (parents, partial) = parts.split_at(parts.len() - 1);
    let start = cursor.column - partial[0].chars().count();
    if before.ends_with('|') && parents.is_empty() {
        return filters()
            .iter()
            .map(|name| {
                let doc = BUSBAR_FILTERS
                    .iter()
                    .find(|(filter, _)| filter == name)
                    .map(|(_, doc)| (*doc).to_owned());
                item(
                    cursor,
                    start,
                    name,
                    (*name).to_owned(),
                    CompletionItemKind::FUNCTION,
                    Some(
                        if doc.is_some() {
                            "busbar filter"
                        } else {
                            "minijinja filter"
                        }
                        .to_owned(),
                    ),
                    doc,
                )
            })
            .collect();
    }
    let bound = cursor.outline.earlier_steps(path);
    match parents.split_first() {
        None => {
            let mut items = vec![
                item(
                    cursor,
                    start,
                    "event",
                    "event".into(),
                    CompletionItemKind::VARIABLE,
                    Some("the event envelope".into()),
                    Some("`event.id`, `event.source`, `event.event`, `event.organization_id`, `event.occurred_at`, `event.data`".into()),
                ),
                item(
                    cursor,
                    start,
                    "data",
                    "data".into(),
                    CompletionItemKind::VARIABLE,
                    Some(format!("the payload of {source}/{event}")),
                    None,
                ),
            ];
            for step in bound.iter().filter(|s| s.bind.is_some()) {
                let name = step.bind.as_deref().unwrap_or_default();
                items.push(item(
                    cursor,
                    start,
                    name,
                    name.to_owned(),
                    CompletionItemKind::VARIABLE,
                    Some(bound_detail(step)),
                    None,
                ));
            }
            items
        }
        Some((&"event", rest)) => field_items(cursor, start, rest, (source, event), known),
        Some((&"data", _)) => field_items(cursor, start, parents, (source, event), known),
        Some((root, [])) => bound
            .iter()
            .find(|step| step.bind.as_deref() == Some(root))
            .and_then(|step| columns_of(known, step.target.as_deref()?))
            .unwrap_or_default()
            .into_iter()
            .map(|(name, detail)| {
                item(
                    cursor,
                    start,
                    &name,
                    name.clone(),
                    CompletionItemKind::FIELD,
                    Some(detail),
                    None,
                )
            })
            .collect(),
        Some(_) => Vec::new(),
    }
}

/// What a bound name holds, in one line.
pub fn bound_detail(step: &StepOutline) -> String {
    let kind = step.kind.as_deref().unwrap_or("step");
    let target = step.target.as_deref().unwrap_or("?");
    match kind {
        "find" => format!("the row `find: {target}` found (or null)"),
        "upsert" => format!("the row `upsert: {target}` wrote"),
        "update" => format!("the row `update: {target}` updated (or null)"),
        _ => format!("bound by `{kind}: {target}`"),
    }
}

/// The columns of `table` in the catalog, each with its type in one line.
pub fn columns_of(known: &Knowledge, table: &str) -> Option<Vec<(String, String)>> {
    let name = TableName::parse(table).ok()?;
    let info = known.tables.get(&name)?.as_ref()?;
    Some(
        info.columns
            .iter()
            .map(|column| (column.name.as_str().to_owned(), column_detail(column)))
            .collect(),
    )
}

/// A column's type, nullability and default in one line.
pub fn column_detail(column: &crate::store::catalog::ColumnInfo) -> String {
    let mut detail = column.sql_type.clone();
    if !column.nullable {
        detail.push_str(" not null");
    }
    if column.has_default {
        detail.push_str(" default …");
    }
    detail
}

#[allow(clippy::too_many_arguments)]
fn value_items(
    cursor: &Cursor<'_>,
    start: usize,
    path: &Path,
    key: &str,
    step: Option<&StepOutline>,
    (source, target): (&str, &str),
    known: &Knowledge,
) -> Vec<CompletionItem> {
    let events_of = |product: &str| -> Vec<CompletionItem> {
        let mut contracts: Vec<_> = known
            .contracts
            .iter()
            .filter(|c| c.product == product)
            .collect();
        contracts.sort_by(|a, b| a.event.cmp(&b.event));
        contracts
            .into_iter()
            .map(|contract| {
                item(
                    cursor,
                    start,
                    &contract.event,
                    contract.event.clone(),
                    CompletionItemKind::EVENT,
                    Some(format!("{}/{}", contract.product, contract.event)),
                    contract
                        .schema
                        .get("description")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                )
            })
            .collect()
    };
    let shape = path.shape();
    match key {
        "on" if shape == "routes/-" => events_of(source),
        "emit" if shape == "routes/-/steps/-" => events_of(target),
        "source" | "target" if shape.is_empty() => {
            let mut products: Vec<&str> =
                known.contracts.iter().map(|c| c.product.as_str()).collect();
            products.sort_unstable();
            products.dedup();
            products
                .into_iter()
                .map(|product| {
                    item(
                        cursor,
                        start,
                        product,
                        product.to_owned(),
                        CompletionItemKind::MODULE,
                        Some("product".into()),
                        None,
                    )
                })
                .collect()
        }
        "find" | "upsert" | "update" | "delete" if shape == "routes/-/steps/-" => {
            let mut tables: Vec<String> = known
                .tables
                .iter()
                .filter(|(_, info)| info.is_some())
                .map(|(name, _)| name.to_string())
                .collect();
            tables.sort();
            tables
                .into_iter()
                .map(|table| {
                    let columns = columns_of(known, &table).unwrap_or_default();
                    item(
                        cursor,
                        start,
                        &table,
                        table.clone(),
                        CompletionItemKind::STRUCT,
                        Some(format!("table, {} columns", columns.len())),
                        None,
                    )
                })
                .collect()
        }
        _ => keys::key_doc(&shape, step.and_then(|s| s.kind.as_deref()), key)
            .map(|doc| doc.values)
            .unwrap_or_default()
            .into_iter()
            .map(|value| {
                item(
                    cursor,
                    start,
                    &value,
                    value.clone(),
                    CompletionItemKind::ENUM_MEMBER,
                    None,
                    None,
                )
            })
            .collect(),
    }
}

fn key_items(
    cursor: &Cursor<'_>,
    start: usize,
    path: &Path,
    (target, event): (&str, &str),
    known: &Knowledge,
) -> Vec<CompletionItem> {
    let shape = path.shape();
    let step = cursor.step(path);
    let present: Vec<String> = match path.0.last() {
        Some(Frame::Item { line, column }) => cursor
            .outline
            .item_entries(*line, *column)
            .into_iter()
            .filter(|(_, _, at)| *at != cursor.line)
            .map(|(key, _, _)| key.to_owned())
            .collect(),
        None => cursor
            .outline
            .top_entries()
            .into_iter()
            .filter(|(_, _, at)| *at != cursor.line)
            .map(|(key, _, _)| key.to_owned())
            .collect(),
        Some(Frame::Key { .. }) => Vec::new(),
    };
    let key_item = |doc: KeyDoc| {
        item(
            cursor,
            start,
            &doc.name,
            format!("{}: ", doc.name),
            CompletionItemKind::PROPERTY,
            None,
            Some(doc.description),
        )
    };
    if let Some(rest) = shape.strip_prefix("routes/-/steps/-/") {
        let step = step.unwrap_or_default();
        return match (rest, step.kind.as_deref()) {
            ("values" | "where" | "set", _) => step
                .target
                .as_deref()
                .and_then(|table| columns_of(known, table))
                .unwrap_or_default()
                .into_iter()
                .map(|(name, detail)| {
                    item(
                        cursor,
                        start,
                        &name,
                        format!("{name}: "),
                        CompletionItemKind::FIELD,
                        Some(detail),
                        None,
                    )
                })
                .collect(),
            ("data", Some("emit")) => {
                let emitted = step.target.as_deref().unwrap_or_default();
                contract_fields(known, target, emitted, &[])
                    .into_iter()
                    .map(|(name, schema)| {
                        item(
                            cursor,
                            start,
                            &name,
                            format!("{name}: "),
                            CompletionItemKind::FIELD,
                            Some(type_of(&schema)),
                            schema
                                .get("description")
                                .and_then(Value::as_str)
                                .map(str::to_owned),
                        )
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
    }
    let _ = event;
    keys::keys_at(&shape, step.as_ref().and_then(|s| s.kind.as_deref()))
        .into_iter()
        .filter(|doc| !present.contains(&doc.name))
        .map(key_item)
        .collect()
}

/// The typed value of a line, unquoted (for hover and definition).
pub fn plain_value<'v>(line: &Line<'v>) -> &'v str {
    unquote(line.value)
}
