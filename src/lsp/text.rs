//! Positions as the protocol counts them and as busbar does.
//!
//! busbar's [`Position`] is 1-based, its column counted in characters; the
//! Language Server Protocol's is 0-based, its column counted in UTF-16
//! code units (the default `positionEncoding`). Both are converted here,
//! on the text of the line, and nowhere else.

use lsp_types::{Position as LspPosition, Range};

use crate::diagnostics::Position;

/// The lines of a text, without their endings (`\r\n` or `\n`).
pub fn lines(text: &str) -> Vec<&str> {
    text.split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .collect()
}

/// The text of 0-based line `line`, or `""` past the end.
pub fn line_of(text: &str, line: u32) -> &str {
    let line = text.split('\n').nth(line as usize).unwrap_or("");
    line.strip_suffix('\r').unwrap_or(line)
}

/// The character index within `line` of a UTF-16 column (clamped to the
/// line's end).
pub fn char_index(line: &str, utf16_column: u32) -> usize {
    let mut units = 0u32;
    for (index, c) in line.chars().enumerate() {
        if units >= utf16_column {
            return index;
        }
        units += c.len_utf16() as u32;
    }
    line.chars().count()
}

/// The UTF-16 column of character index `chars` within `line`.
pub fn utf16_column(line: &str, chars: usize) -> u32 {
    line.chars().take(chars).map(|c| c.len_utf16() as u32).sum()
}

/// A busbar position in `text` as the protocol's.
pub fn to_lsp(text: &str, position: Position) -> LspPosition {
    let line = position.line.saturating_sub(1) as u32;
    let column = utf16_column(line_of(text, line), position.column.saturating_sub(1));
    LspPosition::new(line, column)
}

/// The protocol's position in `text` as busbar's.
pub fn from_lsp(text: &str, position: LspPosition) -> Position {
    let column = char_index(line_of(text, position.line), position.character);
    Position::new(position.line as usize + 1, column + 1)
}

/// Whether `c` continues a name: identifiers, dotted event names,
/// JSONPaths' fields.
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The range of the word a diagnostic at `position` points at: the run of
/// name characters (with `.` and `-`, so that `candidate.hird` and a path
/// are whole) from it to the end of the name, or the one character there.
pub fn word_range(text: &str, position: Position) -> Range {
    let start = to_lsp(text, position);
    let line = line_of(text, start.line);
    let from = position.column.saturating_sub(1);
    let length = line
        .chars()
        .skip(from)
        .take_while(|c| is_word(*c) || *c == '.' || *c == '-')
        .count()
        .max(1);
    let end = utf16_column(line, from + length);
    Range::new(start, LspPosition::new(start.line, end))
}

/// The range of the identifier (letters, digits, `_`) at `position`, to
/// replace it with a suggestion; `None` when no identifier starts there.
pub fn identifier_range(text: &str, position: Position) -> Option<Range> {
    let start = to_lsp(text, position);
    let line = line_of(text, start.line);
    let from = position.column.saturating_sub(1);
    let length = line.chars().skip(from).take_while(|c| is_word(*c)).count();
    (length > 0).then(|| {
        Range::new(
            start,
            LspPosition::new(start.line, utf16_column(line, from + length)),
        )
    })
}

/// Applies a ranged change (`textDocument/didChange` with a range) to
/// `text`; a change without a range replaces the whole text.
pub fn apply_change(text: &mut String, range: Option<Range>, new_text: &str) {
    let Some(range) = range else {
        *text = new_text.to_owned();
        return;
    };
    let start = byte_offset(text, range.start);
    let end = byte_offset(text, range.end).max(start);
    text.replace_range(start..end, new_text);
}

/// The byte offset of a protocol position in `text` (clamped to the text).
pub fn byte_offset(text: &str, position: LspPosition) -> usize {
    let mut offset = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        if index as u32 == position.line {
            let content = line.strip_suffix('\n').unwrap_or(line);
            let content = content.strip_suffix('\r').unwrap_or(content);
            let chars = char_index(content, position.character);
            let bytes: usize = content.chars().take(chars).map(char::len_utf8).sum();
            return offset + bytes;
        }
        offset += line.len();
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_count_utf16_units_on_the_protocol_side() {
        let text = "a: é😀x\n";
        // `x` is the 6th character, at UTF-16 column 6 (the emoji takes two units).
        let busbar = Position::new(1, 6);
        assert_eq!(to_lsp(text, busbar), LspPosition::new(0, 6));
        assert_eq!(from_lsp(text, LspPosition::new(0, 6)), busbar);
    }

    #[test]
    fn word_ranges_cover_names_paths_and_event_names() {
        let text = "  on: candidate.hird\n  email: $.data.candidate.emial\n";
        let range = word_range(text, Position::new(1, 7));
        assert_eq!((range.start.character, range.end.character), (6, 20));
        let range = identifier_range(text, Position::new(2, 27)).unwrap();
        assert_eq!(&line_of(text, 1)[26..31], "emial");
        assert_eq!((range.start.character, range.end.character), (26, 31));
        assert!(identifier_range(text, Position::new(2, 10)).is_none());
    }

    #[test]
    fn ranged_changes_edit_the_text_in_place() {
        let mut text = "one\ntwo é\nthree\n".to_owned();
        apply_change(
            &mut text,
            Some(Range::new(LspPosition::new(1, 4), LspPosition::new(2, 2))),
            "E\nTH",
        );
        assert_eq!(text, "one\ntwo E\nTHree\n");
        apply_change(&mut text, None, "all new");
        assert_eq!(text, "all new");
    }
}
