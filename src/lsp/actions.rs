//! Code actions: the fixes `check` already suggests, as edits.
//!
//! A diagnostic whose help is "did you mean `email`?" (an unknown key, a
//! field not in the contract, an undefined name, an unknown column) gets a
//! quick fix that replaces the misspelt name at the diagnostic's position
//! with the suggestion. The suggestion travels in the diagnostic's `data`
//! (see [`super::publish::convert`]), so the action needs no compile.

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
            let help = diagnostic.data.as_ref()?.get("help")?.as_str()?.to_owned();
            let replacement = suggestion(&help)?.to_owned();
            let range = identifier_range(&text, from_lsp(&text, diagnostic.range.start))?;
            let edit = WorkspaceEdit {
                changes: Some(HashMap::from([(
                    uri.clone(),
                    vec![TextEdit::new(range, replacement.clone())],
                )])),
                ..WorkspaceEdit::default()
            };
            Some(CodeActionOrCommand::CodeAction(CodeAction {
                title: format!("Change to `{replacement}`"),
                kind: Some(CodeActionKind::QUICKFIX),
                diagnostics: Some(vec![diagnostic]),
                edit: Some(edit),
                is_preferred: Some(true),
                ..CodeAction::default()
            }))
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
}
