//! Code actions: the fixes `check` already suggests, as edits.
//!
//! A diagnostic whose help is "did you mean `email`?" (an unknown key, a
//! field not in the contract, an undefined name, an unknown column) gets a
//! quick fix that replaces the misspelt name at the diagnostic's position
//! with the suggestion. The suggestion travels in the diagnostic's `data`
//! (see [`super::publish::convert`]), so the action needs no compile.
//! A template left unquoted (`key: {{ expr }}`, which YAML reads as a
//! mapping) gets a fix that quotes it, as the message says to write it.
//! An upsert that leaves out `NOT NULL` columns (a catalog check) gets a
//! fix that adds them to its `values:`, each from `$.data.<column>`: a
//! placeholder that `check` then checks against the contract like any
//! other path, until the user maps the right field.

use std::collections::HashMap;

use lsp_types::{
    CodeAction, CodeActionKind, CodeActionOrCommand, CodeActionParams, CodeActionResponse,
    TextEdit, WorkspaceEdit,
};

use super::complete::{Cursor, document_text};
use super::outline::Line;
use super::text::{from_lsp, identifier_range};
use super::workspace::{Documents, path_of};

/// The name a "did you mean `name`?" help suggests.
pub fn suggestion(help: &str) -> Option<&str> {
    help.strip_prefix("did you mean `")?.strip_suffix("`?")
}

/// The template a "a template must be quoted: write \"{{ … }}\"" message
/// asks for.
pub fn template_to_quote(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("a template must be quoted: write \"")?;
    let end = rest.lines().next()?.rfind('"')?;
    Some(&rest[..end])
}

/// The columns a `missing-not-null` message says an upsert leaves out.
pub fn missing_columns(message: &str) -> Option<Vec<String>> {
    let rest = message.strip_prefix("this upsert does not write ")?;
    let rest = rest
        .strip_prefix("columns ")
        .or_else(|| rest.strip_prefix("column "))?;
    let (list, _) = rest.split_once(" of `")?;
    Some(
        list.split(", ")
            .map(|column| column.trim_matches('`').to_owned())
            .collect(),
    )
}

/// An edit adding `columns` at the end of the block `values:` of the step
/// on line `line` (`None` when its values are written in flow style).
fn add_columns(text: &str, line: u32, columns: &[String]) -> Option<TextEdit> {
    let cursor = Cursor::new(text, lsp_types::Position::new(line, 0));
    let step_line = Line::parse(cursor.line, cursor.text)?;
    let path = cursor.path_of_line(&step_line);
    let (item, column) = path.item_after("steps")?;
    let outline = &cursor.outline;
    let (_, value, values_line) = outline
        .item_entries(item, column)
        .into_iter()
        .find(|(key, _, _)| *key == "values")?;
    if !value.is_empty() {
        return None;
    }
    let values_column = outline.line(values_line)?.content_column();
    let mut last = values_line;
    let mut indent = None;
    for number in values_line + 1..outline.len() {
        match outline.line(number) {
            Some(child) if child.indent > values_column => {
                indent.get_or_insert(child.indent);
                last = number;
            }
            Some(_) => break,
            None => {}
        }
    }
    let indent = " ".repeat(indent.unwrap_or(values_column + 2));
    let lines: String = columns
        .iter()
        .map(|column| format!("{indent}{column}: $.data.{column}\n"))
        .collect();
    let at = lsp_types::Position::new(last as u32 + 1, 0);
    Some(TextEdit::new(lsp_types::Range::new(at, at), lines))
}

/// `template` as a YAML scalar: double-quoted, or single-quoted when it
/// holds a double quote.
fn quoted(template: &str) -> String {
    if template.contains('"') {
        format!("'{}'", template.replace('\'', "''"))
    } else {
        format!("\"{template}\"")
    }
}

fn quick_fix(
    uri: &lsp_types::Uri,
    title: String,
    diagnostic: lsp_types::Diagnostic,
    edit: TextEdit,
) -> CodeActionOrCommand {
    CodeActionOrCommand::CodeAction(CodeAction {
        title,
        kind: Some(CodeActionKind::QUICKFIX),
        diagnostics: Some(vec![diagnostic]),
        edit: Some(WorkspaceEdit {
            changes: Some(HashMap::from([(uri.clone(), vec![edit])])),
            ..WorkspaceEdit::default()
        }),
        is_preferred: Some(true),
        ..CodeAction::default()
    })
}

/// Answers `textDocument/codeAction`.
pub fn code_actions(documents: &Documents, params: CodeActionParams) -> CodeActionResponse {
    let uri = params.text_document.uri;
    let Some(text) = path_of(&uri).and_then(|path| document_text(documents, &path)) else {
        return Vec::new();
    };
    params
        .context
        .diagnostics
        .into_iter()
        .filter_map(|diagnostic| {
            if let Some(template) = template_to_quote(&diagnostic.message) {
                let start = diagnostic.range.start;
                let line = super::text::line_of(&text, start.line);
                let from = super::text::char_index(line, start.character);
                let written: String = line
                    .chars()
                    .skip(from)
                    .take(template.chars().count())
                    .collect();
                if written != template {
                    return None;
                }
                let end = lsp_types::Position::new(
                    start.line,
                    super::text::utf16_column(line, from + template.chars().count()),
                );
                let edit = TextEdit::new(lsp_types::Range::new(start, end), quoted(template));
                return Some(quick_fix(
                    &uri,
                    "Quote the template".to_owned(),
                    diagnostic,
                    edit,
                ));
            }
            if let Some(columns) = missing_columns(&diagnostic.message) {
                let edit = add_columns(&text, diagnostic.range.start.line, &columns)?;
                let title = format!("Add {} to `values`", columns.join(", "));
                return Some(quick_fix(&uri, title, diagnostic, edit));
            }
            let help = diagnostic.data.as_ref()?.get("help")?.as_str()?.to_owned();
            let replacement = suggestion(&help)?.to_owned();
            let range = identifier_range(&text, from_lsp(&text, diagnostic.range.start))?;
            let edit = TextEdit::new(range, replacement.clone());
            Some(quick_fix(
                &uri,
                format!("Change to `{replacement}`"),
                diagnostic,
                edit,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_suggestion_is_read_from_checks_help() {
        assert_eq!(suggestion("did you mean `target`?"), Some("target"));
        assert_eq!(suggestion("the contract has: a, b"), None);
    }

    #[test]
    fn missing_not_null_columns_are_added_under_values() {
        let message = "this upsert does not write columns `a`, `b` of `t.x`, which are NOT NULL without a default: every insert would fail";
        assert_eq!(missing_columns(message).unwrap(), ["a", "b"]);
        let text = "routes:\n  - on: e\n    steps:\n      - upsert: t.x\n        key: [k]\n        values:\n          k: $.data.k\n\n      - emit: f\n";
        let edit = add_columns(text, 3, &["a".into(), "b".into()]).unwrap();
        assert_eq!(edit.range.start, lsp_types::Position::new(7, 0));
        assert_eq!(
            edit.new_text,
            "          a: $.data.a\n          b: $.data.b\n"
        );
        let flow =
            "routes:\n  - on: e\n    steps:\n      - upsert: t.x\n        values: { k: 1 }\n";
        assert!(add_columns(flow, 3, &["a".into()]).is_none());
    }

    #[test]
    fn an_unquoted_template_is_quoted_as_the_message_says() {
        let message = "a template must be quoted: write \"{{ data.tags[0] }}\"\nhelp: YAML reads …";
        assert_eq!(template_to_quote(message), Some("{{ data.tags[0] }}"));
        assert_eq!(quoted("{{ data.x }}"), "\"{{ data.x }}\"");
        assert_eq!(quoted("{{ \"a\" ~ 'b' }}"), "'{{ \"a\" ~ ''b'' }}'");
    }
}
