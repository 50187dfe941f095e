//! Code actions: the fixes `check` already suggests, as edits.
//!
//! A diagnostic whose help is "did you mean `email`?" (an unknown key, a
//! field not in the contract, an undefined name, an unknown column) gets a
//! quick fix that replaces the misspelt name at the diagnostic's position
//! with the suggestion. The suggestion travels in the diagnostic's `data`
//! (see [`super::publish::convert`]), so the action needs no compile.
//! A template left unquoted (`key: {{ expr }}`, which YAML reads as a
//! mapping) gets a fix that quotes it, as the message says to write it.

use std::collections::HashMap;

use lsp_types::{
    CodeAction, CodeActionKind, CodeActionOrCommand, CodeActionParams, CodeActionResponse,
    TextEdit, WorkspaceEdit,
};

use super::complete::document_text;
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
    fn an_unquoted_template_is_quoted_as_the_message_says() {
        let message = "a template must be quoted: write \"{{ data.tags[0] }}\"\nhelp: YAML reads …";
        assert_eq!(template_to_quote(message), Some("{{ data.tags[0] }}"));
        assert_eq!(quoted("{{ data.x }}"), "\"{{ data.x }}\"");
        assert_eq!(quoted("{{ \"a\" ~ 'b' }}"), "'{{ \"a\" ~ ''b'' }}'");
    }
}
