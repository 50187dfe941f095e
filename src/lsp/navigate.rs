//! Hover and go to definition: what the name under the cursor is, and
//! where it comes from.
//!
//! Hover shows a key's documentation (from the schema: what a step does),
//! a contract field's type and description, a column's type, nullability,
//! length and default (from the catalog file), what a bound name holds.
//! Definition goes from `on:` (or a JSONPath field) to the contract file,
//! from `emit:` to the routes that the emitted event feeds, and from a
//! bound name in a template to the step that bound it.

use std::path::PathBuf;

use lsp_types::{
    GotoDefinitionParams, GotoDefinitionResponse, Hover, HoverContents, HoverParams, Location,
    MarkupContent, MarkupKind, Position as LspPosition, Range,
};
use serde_json::Value;

use super::complete::{
    Cursor, bound_detail, column_detail, contract_fields, document_text, envelope_field_doc,
    filters, type_of,
};
use super::keys;
use super::outline::{Line, StepOutline, unquote};
use super::text::utf16_column;
use super::workspace::{
    ContractCache, Documents, Knowledge, LiveCatalogs, Settings, directory_of, knowledge, path_of,
    uri_of,
};
use crate::compile::ident::TableName;
use crate::config;
use crate::envelope::ENVELOPE_FIELDS;

/// What is under the cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A key of the mapping at `shape`.
    Key { shape: String, key: String },
    /// A column key under `values`/`where`/`set` of a step on `table`.
    Column { table: String, column: String },
    /// A field of an emitted event's `data:`.
    EmitField { event: String, field: String },
    /// The event of `on:`.
    RouteEvent(String),
    /// The event of `emit:`.
    EmittedEvent(String),
    /// The table of a step.
    Table(String),
    /// A path into the envelope (`$.data.candidate.email`,
    /// `{{ data.candidate.email }}`), up to the segment under the cursor.
    Field(Vec<String>),
    /// A name bound by an earlier step, and the column after it if any.
    Bound {
        step: StepOutline,
        column: Option<String>,
    },
    /// A template filter.
    Filter(String),
}

/// The run of name characters around character `column` of `line`.
fn token_at(line: &str, column: usize) -> (usize, usize) {
    let chars: Vec<char> = line.chars().collect();
    let is_name = |c: char| c.is_alphanumeric() || matches!(c, '_' | '.' | '$' | '-');
    let mut start = column.min(chars.len());
    while start > 0 && is_name(chars[start - 1]) {
        start -= 1;
    }
    let mut end = column.min(chars.len());
    while end < chars.len() && is_name(chars[end]) {
        end += 1;
    }
    (start, end)
}

/// The dotted chain `token` cut after the segment the cursor (at
/// character `offset` of it) is in.
fn segments_upto(token: &str, offset: usize) -> Vec<String> {
    let end = token
        .chars()
        .enumerate()
        .skip(offset)
        .find(|(_, c)| *c == '.')
        .map_or(token.chars().count(), |(i, _)| i);
    let upto: String = token.chars().take(end).collect();
    upto.trim_start_matches('$')
        .split('.')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn target_at(cursor: &Cursor<'_>) -> Option<(Target, Range)> {
    let line = Line::parse(cursor.line, cursor.text)?;
    let path = cursor.path_of_line(&line);
    let shape = path.shape();
    let step = cursor.step(&path);
    let (start, end) = token_at(cursor.text, cursor.column);
    let token: String = cursor.text.chars().skip(start).take(end - start).collect();
    let row = cursor.line as u32;
    let range = Range::new(
        LspPosition::new(row, utf16_column(cursor.text, start)),
        LspPosition::new(row, utf16_column(cursor.text, end)),
    );
    // On a key.
    if let Some((key_column, key)) = line.key
        && cursor.column >= key_column
        && cursor.column <= key_column + key.chars().count()
    {
        let target = match shape.rsplit('/').next() {
            Some("values" | "where" | "set") if shape.starts_with("routes/-/steps/-/") => {
                Target::Column {
                    table: step.as_ref()?.target.clone()?,
                    column: key.to_owned(),
                }
            }
            Some("data") if shape == "routes/-/steps/-/data" => Target::EmitField {
                event: step.as_ref()?.target.clone()?,
                field: key.to_owned(),
            },
            _ => Target::Key {
                shape,
                key: key.to_owned(),
            },
        };
        return Some((target, range));
    }
    let before: String = cursor.text.chars().take(start).collect();
    // Inside a template.
    if let (Some(open), close) = (
        before.rfind("{{").or(before.rfind("{%")),
        before.rfind("}}"),
    ) && close.is_none_or(|close| close < open)
    {
        if before.trim_end().ends_with('|') {
            return filters()
                .contains(&token.as_str())
                .then(|| (Target::Filter(token.clone()), range));
        }
        let segments = segments_upto(&token, cursor.column - start);
        let (root, rest) = segments.split_first()?;
        if root == "event" || root == "data" {
            let mut field: Vec<String> = if root == "event" {
                rest.to_vec()
            } else {
                segments.clone()
            };
            if field.is_empty() {
                field.push(root.clone());
            }
            return Some((Target::Field(field), range));
        }
        let step = cursor
            .outline
            .earlier_steps(&path)
            .into_iter()
            .find(|s| s.bind.as_deref() == Some(root.as_str()))?;
        return Some((
            Target::Bound {
                step,
                column: rest.first().cloned(),
            },
            range,
        ));
    }
    if token.starts_with("$.") {
        return Some((
            Target::Field(segments_upto(&token, cursor.column - start)),
            range,
        ));
    }
    let (_, key) = line.key?;
    let value = unquote(line.value).to_owned();
    let target = match (key, shape.as_str()) {
        ("on", "routes/-") => Target::RouteEvent(value),
        ("emit", "routes/-/steps/-") => Target::EmittedEvent(value),
        ("find" | "upsert" | "update" | "delete", "routes/-/steps/-") => Target::Table(value),
        _ => return None,
    };
    Some((target, range))
}

/// Where the cursor's file is and what its directory knows.
struct Context {
    path: PathBuf,
    text: String,
    known: Knowledge,
}

fn context(
    settings: &Settings,
    documents: &Documents,
    live: &LiveCatalogs,
    contracts: &mut ContractCache,
    uri: &lsp_types::Uri,
) -> Option<Context> {
    let path = path_of(uri)?;
    let text = document_text(documents, &path)?;
    let known = knowledge(
        &directory_of(&path, settings)?,
        settings,
        documents,
        live,
        contracts,
    );
    Some(Context { path, text, known })
}

/// Answers `textDocument/hover`.
pub fn hover(
    settings: &Settings,
    documents: &Documents,
    live: &LiveCatalogs,
    contracts: &mut ContractCache,
    params: HoverParams,
) -> Option<Hover> {
    let position = params.text_document_position_params;
    let context = context(
        settings,
        documents,
        live,
        contracts,
        &position.text_document.uri,
    )?;
    let cursor = Cursor::new(&context.text, position.position);
    let (target, range) = target_at(&cursor)?;
    let source = cursor.outline.top_value("source").unwrap_or("");
    let destination = cursor.outline.top_value("target").unwrap_or("");
    let line = Line::parse(cursor.line, cursor.text)?;
    let event = cursor
        .outline
        .route_event(&cursor.path_of_line(&line))
        .unwrap_or("");
    let known = &context.known;
    let text = match target {
        Target::Key { shape, key } => {
            let step = cursor.step(&cursor.path_of_line(&line));
            let doc = keys::key_doc(&shape, step.as_ref().and_then(|s| s.kind.as_deref()), &key)?;
            let mut text = format!("**`{key}`**\n\n{}", doc.description);
            if !doc.values.is_empty() {
                text.push_str(&format!("\n\nOne of: `{}`", doc.values.join("`, `")));
            }
            text
        }
        Target::Column { table, column } => {
            let name = TableName::parse(&table).ok()?;
            let info = known.tables.get(&name)?.as_ref()?;
            let column = info.column(&column)?;
            column_hover(&table, column)
        }
        Target::EmitField { event, field } => {
            let fields = contract_fields(known, destination, &event, &[]);
            let (_, schema) = fields.into_iter().find(|(name, _)| *name == field)?;
            field_hover(&format!("{destination}/{event}: data.{field}"), &schema)
        }
        Target::RouteEvent(name) => event_hover(known, source, &name)?,
        Target::EmittedEvent(name) => event_hover(known, destination, &name)?,
        Target::Table(table) => {
            let name = TableName::parse(&table).ok()?;
            let info = known.tables.get(&name)?.as_ref()?;
            let columns: Vec<String> = info
                .columns
                .iter()
                .map(|c| format!("- `{}`: {}", c.name.as_str(), column_detail(c)))
                .collect();
            format!("**table `{table}`**\n\n{}", columns.join("\n"))
        }
        Target::Field(segments) => field_target_hover(known, source, event, &segments)?,
        Target::Bound { step, column } => match column {
            None => format!(
                "**`{}`**: {}\n\n(bound by `as:` on line {})",
                step.bind.as_deref().unwrap_or_default(),
                bound_detail(&step),
                step.bind_line.unwrap_or(step.line) + 1
            ),
            Some(column) => {
                let table = step.target.as_deref()?;
                let name = TableName::parse(table).ok()?;
                let info = known.tables.get(&name)?.as_ref()?;
                column_hover(table, info.column(&column)?)
            }
        },
        Target::Filter(name) => format!("**`{name}`**: a template filter"),
    };
    Some(Hover {
        contents: HoverContents::Markup(MarkupContent {
            kind: MarkupKind::Markdown,
            value: text,
        }),
        range: Some(range),
    })
}

/// An event's contract: its description, its fields, its file.
fn event_hover(known: &Knowledge, product: &str, name: &str) -> Option<String> {
    let contract = known.contracts.get(product, name)?;
    let fields: Vec<String> = contract_fields(known, product, name, &[])
        .into_iter()
        .map(|(field, schema)| format!("- `{field}`: {}", type_of(&schema)))
        .collect();
    let description = contract
        .schema
        .get("description")
        .and_then(Value::as_str)
        .map(|d| format!("\n\n{d}"))
        .unwrap_or_default();
    Some(format!(
        "**{product}/{name}**{description}\n\n{}\n\n{}",
        fields.join("\n"),
        contract.file.display()
    ))
}

fn column_hover(table: &str, column: &crate::store::catalog::ColumnInfo) -> String {
    let mut text = format!(
        "**`{table}.{}`**: `{}`\n\n- {}\n- {}",
        column.name.as_str(),
        column.sql_type,
        if column.nullable {
            "nullable"
        } else {
            "NOT NULL"
        },
        if column.has_default {
            "has a default"
        } else {
            "no default"
        },
    );
    if let Some(length) = column.limits.max_chars {
        text.push_str(&format!("\n- at most {length} characters"));
    }
    text
}

fn field_hover(title: &str, schema: &Value) -> String {
    let mut text = format!("**{title}**: `{}`", type_of(schema));
    if let Some(description) = schema.get("description").and_then(Value::as_str) {
        text.push_str(&format!("\n\n{description}"));
    }
    text
}

/// Hover for a path into the envelope (`segments` after `$`).
fn field_target_hover(
    known: &Knowledge,
    source: &str,
    event: &str,
    segments: &[String],
) -> Option<String> {
    let (first, rest) = segments.split_first()?;
    if !ENVELOPE_FIELDS.contains(&first.as_str()) {
        return None;
    }
    if first != "data" || rest.is_empty() {
        return Some(format!("**`{first}`**: {}", envelope_field_doc(first)));
    }
    let (last, parents) = rest.split_last()?;
    let parents: Vec<&str> = parents.iter().map(String::as_str).collect();
    let (_, schema) = contract_fields(known, source, event, &parents)
        .into_iter()
        .find(|(name, _)| name == last)?;
    Some(field_hover(
        &format!("{source}/{event}: data.{}", rest.join(".")),
        &schema,
    ))
}

/// Answers `textDocument/definition`.
pub fn definition(
    settings: &Settings,
    documents: &Documents,
    live: &LiveCatalogs,
    contracts: &mut ContractCache,
    params: GotoDefinitionParams,
) -> Option<GotoDefinitionResponse> {
    let position = params.text_document_position_params;
    let context = context(
        settings,
        documents,
        live,
        contracts,
        &position.text_document.uri,
    )?;
    let cursor = Cursor::new(&context.text, position.position);
    let (target, _) = target_at(&cursor)?;
    let source = cursor.outline.top_value("source").unwrap_or("");
    let destination = cursor.outline.top_value("target").unwrap_or("");
    let line = Line::parse(cursor.line, cursor.text)?;
    let path = cursor.path_of_line(&line);
    let event = cursor.outline.route_event(&path).unwrap_or("");
    let known = &context.known;
    let locations = match target {
        Target::RouteEvent(name) => vec![contract_location(known, source, &name, &[])?],
        Target::EmittedEvent(name) => {
            let routes = routes_fed_by(known, destination, &name);
            if routes.is_empty() {
                vec![contract_location(known, destination, &name, &[])?]
            } else {
                routes
            }
        }
        Target::EmitField { event, field } => {
            vec![contract_location(known, destination, &event, &[field])?]
        }
        Target::Field(segments) => {
            let (first, rest) = segments.split_first()?;
            if first != "data" {
                return None;
            }
            vec![contract_location(known, source, event, rest)?]
        }
        Target::Bound { step, .. } => {
            let line = step.bind_line.unwrap_or(step.line) as u32;
            let start = LspPosition::new(line, 0);
            vec![Location::new(
                uri_of(&context.path),
                Range::new(start, start),
            )]
        }
        _ => return None,
    };
    Some(GotoDefinitionResponse::Array(locations))
}

/// The contract file of `(product, event)`, at the declaration of the
/// field at `path` when there is one (the first `"name":` after the
/// previous segment's).
fn contract_location(
    known: &Knowledge,
    product: &str,
    event: &str,
    path: &[String],
) -> Option<Location> {
    let contract = known.contracts.get(product, event)?;
    let text = std::fs::read_to_string(&contract.file).unwrap_or_default();
    let mut offset = 0;
    for segment in path {
        // The name as a key (`"email":`), not as an item of `required`.
        let needle = format!("\"{segment}\"");
        let declared = text[offset..].match_indices(&needle).find(|(at, _)| {
            text[offset + at + needle.len()..]
                .trim_start()
                .starts_with(':')
        });
        match declared {
            Some((found, _)) => offset += found,
            None => break,
        }
    }
    let position = byte_to_position(&text, offset);
    Some(Location::new(
        uri_of(&contract.file),
        Range::new(position, position),
    ))
}

fn byte_to_position(text: &str, offset: usize) -> LspPosition {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() as u32;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    LspPosition::new(
        line,
        before[line_start..]
            .chars()
            .map(|c| c.len_utf16() as u32)
            .sum(),
    )
}

/// The `on:` of every route that listens to `product`/`event`, across
/// the directory's files (parsed by the loader).
fn routes_fed_by(known: &Knowledge, product: &str, event: &str) -> Vec<Location> {
    let mut locations = Vec::new();
    for file in &known.integrations {
        let (Some(loaded), _) = config::load(file) else {
            continue;
        };
        if loaded.model.source != product {
            continue;
        }
        for (index, route) in loaded.model.routes.iter().enumerate() {
            if route.on != event {
                continue;
            }
            let Some(node) = loaded.document.spans.node(&format!("/routes/{index}/on")) else {
                continue;
            };
            let text = &loaded.document.source;
            let position = super::text::to_lsp(&text.text, node.start);
            locations.push(Location::new(
                uri_of(&loaded.path),
                Range::new(position, position),
            ));
        }
    }
    locations
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_under_the_cursor_is_cut_after_its_segment() {
        let line = "          email: $.data.candidate.email";
        let (start, end) = token_at(line, 28);
        let token: String = line.chars().skip(start).take(end - start).collect();
        assert_eq!(token, "$.data.candidate.email");
        assert_eq!(segments_upto(&token, 28 - start), ["data", "candidate"]);
        assert_eq!(
            segments_upto(&token, token.len()),
            ["data", "candidate", "email"]
        );
    }
}
