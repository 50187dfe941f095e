//! YAML with positions: `saphyr` events in, a `serde_json::Value` plus a map
//! from JSON pointer to source position out.
//!
//! Everything after this module (JSON Schema validation, the typed model,
//! the compiler) works on plain JSON values; when it finds a problem it asks
//! the [`SpanMap`] where the offending node stands. Building from the event
//! stream, rather than from `saphyr`'s document tree, lets the loader report
//! what a tree would hide: duplicate keys, non-string keys, several
//! documents in one file, and alias bombs.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use saphyr::Scalar;
use saphyr_parser::{Event, Marker, Parser, ScalarStyle, Span, Tag};
use serde_json::{Map, Number, Value};

use crate::diagnostics::{Code, Diagnostic, Position};

/// Aliases may not expand a document beyond this many nodes (the "billion
/// laughs" guard).
const MAX_NODES: usize = 100_000;

/// A loaded YAML file: its value, where each node stands, and its text.
#[derive(Debug, Clone)]
pub struct Document {
    pub value: Value,
    pub spans: SpanMap,
    pub source: SourceText,
}

/// Where one node stands in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSpan {
    /// The first character of the node (for a quoted scalar: the quote).
    pub start: Position,
    /// Character index of `start` in the file.
    pub start_index: usize,
    /// Character index just after the node.
    pub end_index: usize,
    /// For a mapping value: where its key stands.
    pub key: Option<Position>,
    /// For a scalar: how it was written (plain, quoted, block).
    pub style: Option<ScalarStyle>,
}

/// JSON pointer (RFC 6901) to node span, for every node of a document.
#[derive(Debug, Clone, Default)]
pub struct SpanMap {
    nodes: HashMap<String, NodeSpan>,
}

impl SpanMap {
    /// The span of the node at `pointer`, if it exists.
    pub fn node(&self, pointer: &str) -> Option<&NodeSpan> {
        self.nodes.get(pointer)
    }

    /// Where the node at `pointer` stands, or its nearest ancestor that
    /// exists (a missing key is reported at the mapping that lacks it).
    pub fn position(&self, pointer: &str) -> Position {
        let mut pointer = pointer;
        loop {
            if let Some(node) = self.nodes.get(pointer) {
                return node.start;
            }
            match pointer.rfind('/') {
                Some(cut) => pointer = &pointer[..cut],
                None => return Position::START,
            }
        }
    }

    /// Where the key of the mapping entry at `pointer` stands; falls back to
    /// the node itself.
    pub fn key_position(&self, pointer: &str) -> Position {
        self.nodes
            .get(pointer)
            .and_then(|node| node.key)
            .unwrap_or_else(|| self.position(pointer))
    }
}

/// A file's text with an index of line starts, to turn character indexes
/// into line and column.
#[derive(Debug, Clone, Default)]
pub struct SourceText {
    pub text: String,
    /// Character index at which each line starts.
    line_starts: Vec<usize>,
    /// The characters of the text, for slicing by character index.
    chars: Vec<char>,
}

impl SourceText {
    pub fn new(text: &str) -> Self {
        let chars: Vec<char> = text.chars().collect();
        let mut line_starts = vec![0];
        for (index, c) in chars.iter().enumerate() {
            if *c == '\n' {
                line_starts.push(index + 1);
            }
        }
        SourceText {
            text: text.to_owned(),
            line_starts,
            chars,
        }
    }

    /// Line and column (both 1-based) of a character index.
    pub fn position(&self, index: usize) -> Position {
        let line = self.line_starts.partition_point(|start| *start <= index);
        let line_start = self.line_starts[line.saturating_sub(1)];
        Position::new(line.max(1), index - line_start + 1)
    }

    /// The characters from `start` to `end` (character indexes).
    pub fn slice(&self, start: usize, end: usize) -> String {
        let end = end.min(self.chars.len());
        let start = start.min(end);
        self.chars[start..end].iter().collect()
    }

    /// The text of one line (1-based), without its line ending. After a
    /// final newline comes an empty last line, where an error at the end of
    /// the file stands.
    pub fn line(&self, line: usize) -> Option<&str> {
        let text = self.text.split('\n').nth(line.checked_sub(1)?)?;
        Some(text.strip_suffix('\r').unwrap_or(text))
    }
}

/// Escapes one reference token of a JSON pointer.
pub fn escape_pointer_token(token: &str) -> Cow<'_, str> {
    if token.contains(['~', '/']) {
        Cow::Owned(token.replace('~', "~0").replace('/', "~1"))
    } else {
        Cow::Borrowed(token)
    }
}

fn position(marker: Marker) -> Position {
    Position::new(marker.line(), marker.col() + 1)
}

/// `at`, or the end of `text` if `at` lies beyond its last line (at the
/// end of the input the parser points at the line after the last).
fn within_text(text: &str, at: Position) -> Position {
    let lines = text.split('\n').count();
    if at.line <= lines {
        return at;
    }
    let last = text.rsplit('\n').next().unwrap_or("");
    Position::new(lines, last.chars().count() + 1)
}

/// Parses one YAML file. On a syntax error, returns the diagnostics and no
/// document; structural problems that still leave a usable value (a
/// duplicate key, say) come back beside the document.
pub fn parse(file: &Path, text: &str) -> (Option<Document>, Vec<Diagnostic>) {
    let mut builder = Builder::new(file, text);
    for item in Parser::new_from_str(text) {
        match item {
            Ok((event, span)) => {
                if let Err(diagnostic) = builder.on_event(event, span) {
                    builder.diagnostics.push(*diagnostic);
                    return (None, builder.diagnostics);
                }
            }
            Err(error) => {
                let at = within_text(text, position(*error.marker()));
                let reason = format!("YAML syntax error: {}", error.info());
                let diagnostic = match unquoted_template_on(text, at.line) {
                    // `{{ data.items[0] }}` unquoted is a flow mapping that
                    // does not parse: say what was meant.
                    Some((column, template)) => {
                        let mut diagnostic = Diagnostic::error(
                            file,
                            Position::new(at.line, column),
                            Code::YamlSyntax,
                            format!("a template must be quoted: write \"{template}\""),
                        );
                        diagnostic.help = Some(format!(
                            "YAML reads an unquoted `{{{{ ... }}}}` as a mapping ({reason})"
                        ));
                        diagnostic
                    }
                    None => Diagnostic::error(file, at, Code::YamlSyntax, reason),
                };
                builder.diagnostics.push(diagnostic);
                return (None, builder.diagnostics);
            }
        }
    }
    let value = builder.root.take().unwrap_or(Value::Null);
    let document = Document {
        value,
        spans: SpanMap {
            nodes: builder.nodes,
        },
        source: SourceText::new(text),
    };
    (Some(document), builder.diagnostics)
}

/// An unquoted template on line `line` (1-based) of `text`: a value that
/// starts with `{{` (after `key:` or `- `) and ends with `}}`, as its
/// column and text.
fn unquoted_template_on(text: &str, line: usize) -> Option<(usize, String)> {
    let line = text.lines().nth(line.checked_sub(1)?)?;
    let start = line.find("{{")?;
    let before = line[..start].trim_end();
    let starts_a_value = before.is_empty() || before.ends_with(':') || before.ends_with('-');
    let end = line.rfind("}}")?;
    if !starts_a_value || end < start + 2 {
        return None;
    }
    let column = line[..start].chars().count() + 1;
    Some((column, line[start..end + 2].to_owned()))
}

/// A collection under construction.
enum Frame {
    Sequence {
        pointer: String,
        items: Vec<Value>,
        anchor: usize,
    },
    Mapping {
        pointer: String,
        entries: Map<String, Value>,
        /// The key waiting for its value, with where it stands.
        pending_key: Option<(String, Position)>,
        anchor: usize,
    },
}

struct Builder<'f> {
    file: &'f Path,
    /// The file's characters, to quote an unquoted template.
    chars: Vec<char>,
    stack: Vec<Frame>,
    root: Option<Value>,
    nodes: HashMap<String, NodeSpan>,
    anchors: HashMap<usize, Value>,
    diagnostics: Vec<Diagnostic>,
    documents: usize,
    node_count: usize,
    /// While > 0, events belong to a complex mapping key being skipped.
    skip_depth: usize,
    /// Once the complex key being skipped ends, skip its value too.
    skip_value: bool,
    /// An unquoted template being skipped, read as the string it meant
    /// once its outer mapping ends.
    unquoted_template: Option<UnquotedTemplate>,
}

/// `key: {{ expr }}`, which YAML reads as a flow mapping whose only key is
/// another flow mapping.
struct UnquotedTemplate {
    pointer: String,
    /// Character index of the first `{`.
    start_index: usize,
    anchor: usize,
}

type Step = Result<(), Box<Diagnostic>>;

impl<'f> Builder<'f> {
    fn new(file: &'f Path, text: &str) -> Self {
        Builder {
            file,
            chars: text.chars().collect(),
            stack: Vec::new(),
            root: None,
            nodes: HashMap::new(),
            anchors: HashMap::new(),
            diagnostics: Vec::new(),
            documents: 0,
            node_count: 0,
            skip_depth: 0,
            skip_value: false,
            unquoted_template: None,
        }
    }

    fn fail(&self, span: Span, code: Code, message: String) -> Step {
        Err(Box::new(Diagnostic::error(
            self.file,
            position(span.start),
            code,
            message,
        )))
    }

    fn on_event(&mut self, event: Event<'_>, span: Span) -> Step {
        if self.skip_depth > 0 {
            match event {
                Event::SequenceStart(..) | Event::MappingStart(..) => self.skip_depth += 1,
                Event::SequenceEnd | Event::MappingEnd => self.skip_depth -= 1,
                _ => {}
            }
            if self.skip_depth == 0
                && let Some(template) = self.unquoted_template.take()
            {
                return self.finish_unquoted_template(template, span);
            }
            return Ok(());
        }
        if self.skip_value {
            self.skip_value = false;
            if matches!(event, Event::SequenceStart(..) | Event::MappingStart(..)) {
                self.skip_depth = 1;
            }
            return Ok(());
        }
        match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing | Event::DocumentEnd => Ok(()),
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return self.fail(
                        span,
                        Code::YamlUnsupported,
                        "a file holds one integration, but this is a second YAML document (`---`); split it into its own file".into(),
                    );
                }
                Ok(())
            }
            Event::Scalar(text, style, anchor, tag) => {
                if self.expecting_key() {
                    return self.on_key(text, style, span);
                }
                self.check_tag(tag.as_ref(), span)?;
                let value = self.scalar(text, style, tag.as_ref(), span)?;
                let pointer = self.child_pointer();
                self.record(&pointer, span, Some(style));
                self.finish_node(value, anchor, span)
            }
            Event::MappingStart(..) if self.opens_unquoted_template(span) => {
                let Some(Frame::Mapping {
                    pointer, anchor, ..
                }) = self.stack.pop()
                else {
                    unreachable!("opens_unquoted_template() checked the frame");
                };
                // Skip the inner mapping and the rest of the outer one.
                self.skip_depth = 2;
                self.unquoted_template = Some(UnquotedTemplate {
                    pointer,
                    start_index: span.start.index() - 1,
                    anchor,
                });
                Ok(())
            }
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag)
                if self.expecting_key() =>
            {
                let _ = (anchor, tag);
                self.skip_depth = 1;
                self.skip_value = true;
                self.diagnostics.push(Diagnostic::error(
                    self.file,
                    position(span.start),
                    Code::YamlUnsupported,
                    "mapping keys must be plain strings, not collections",
                ));
                // The value that follows the complex key is skipped too, so
                // that it does not reach the compiler under a made-up key.
                Ok(())
            }
            Event::SequenceStart(anchor, tag) => {
                self.check_tag(tag.as_ref(), span)?;
                let pointer = self.child_pointer();
                self.record(&pointer, span, None);
                self.stack.push(Frame::Sequence {
                    pointer,
                    items: Vec::new(),
                    anchor,
                });
                Ok(())
            }
            Event::MappingStart(anchor, tag) => {
                self.check_tag(tag.as_ref(), span)?;
                let pointer = self.child_pointer();
                self.record(&pointer, span, None);
                self.stack.push(Frame::Mapping {
                    pointer,
                    entries: Map::new(),
                    pending_key: None,
                    anchor,
                });
                Ok(())
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (value, anchor) = match self.stack.pop() {
                    Some(Frame::Sequence { items, anchor, .. }) => (Value::Array(items), anchor),
                    Some(Frame::Mapping {
                        entries, anchor, ..
                    }) => (Value::Object(entries), anchor),
                    None => return Ok(()),
                };
                self.finish_node(value, anchor, span)
            }
            Event::Alias(id) => {
                if self.expecting_key() {
                    return self.fail(
                        span,
                        Code::YamlUnsupported,
                        "mapping keys must be plain strings, not aliases".into(),
                    );
                }
                let Some(value) = self.anchors.get(&id).cloned() else {
                    return self.fail(span, Code::YamlSyntax, "alias to an unknown anchor".into());
                };
                self.node_count += count_nodes(&value);
                if self.node_count > MAX_NODES {
                    return self.fail(
                        span,
                        Code::YamlUnsupported,
                        format!("aliases expand this document beyond {MAX_NODES} nodes"),
                    );
                }
                let pointer = self.child_pointer();
                self.record(&pointer, span, None);
                self.attach(value, span)
            }
        }
    }

    /// Whether a mapping starting at `span` is the second brace of `{{`
    /// opening an empty flow mapping: a template someone forgot to quote.
    fn opens_unquoted_template(&self, span: Span) -> bool {
        let Some(Frame::Mapping {
            pointer,
            entries,
            pending_key: None,
            ..
        }) = self.stack.last()
        else {
            return false;
        };
        let start = span.start.index();
        entries.is_empty()
            && start > 0
            && self.chars.get(start - 1..=start) == Some(&['{', '{'][..])
            && self
                .nodes
                .get(pointer)
                .is_some_and(|node| node.start_index == start - 1)
    }

    /// Reports an unquoted template at its first brace, and reads it as
    /// the string it was meant to be, so that nothing else is reported
    /// about the mapping YAML made of it.
    fn finish_unquoted_template(&mut self, template: UnquotedTemplate, end: Span) -> Step {
        let mut end_index = end.start.index().min(self.chars.len());
        if self.chars.get(end_index) == Some(&'}') {
            end_index += 1;
        }
        let text: String = self.chars[template.start_index..end_index].iter().collect();
        let node = self.nodes.get_mut(&template.pointer);
        let start = node.as_ref().map_or(position(end.start), |node| node.start);
        if let Some(node) = node {
            node.end_index = end_index;
        }
        let mut diagnostic = Diagnostic::error(
            self.file,
            start,
            Code::YamlUnsupported,
            format!("a template must be quoted: write \"{text}\""),
        );
        diagnostic.help = Some(
            "YAML reads an unquoted `{{ ... }}` as a mapping; put the whole value in quotes".into(),
        );
        self.diagnostics.push(diagnostic);
        self.finish_node(Value::String(text), template.anchor, end)
    }

    fn expecting_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame::Mapping {
                pending_key: None,
                ..
            })
        )
    }

    fn on_key(&mut self, text: Cow<'_, str>, style: ScalarStyle, span: Span) -> Step {
        let key = match Scalar::parse_from_cow_and_metadata(text.clone(), style, None) {
            Some(Scalar::String(s)) => s.into_owned(),
            Some(Scalar::Null) if style == ScalarStyle::Plain && text.is_empty() => {
                return self.fail(span, Code::YamlSyntax, "empty mapping key".into());
            }
            // Keys such as `1` or `true` are read as the text written.
            _ => text.into_owned(),
        };
        let key_position = position(span.start);
        let Some(Frame::Mapping {
            pointer,
            entries,
            pending_key,
            ..
        }) = self.stack.last_mut()
        else {
            unreachable!("expecting_key() checked the frame");
        };
        if entries.contains_key(&key) {
            let first = self
                .nodes
                .get(&format!("{pointer}/{}", escape_pointer_token(&key)))
                .and_then(|node| node.key)
                .map(|p| format!(" (first at line {})", p.line))
                .unwrap_or_default();
            self.diagnostics.push(Diagnostic::error(
                self.file,
                key_position,
                Code::DuplicateKey,
                format!("duplicate key `{key}`{first}; the later value would silently win"),
            ));
        }
        *pending_key = Some((key, key_position));
        Ok(())
    }

    fn check_tag(&self, tag: Option<&Cow<'_, Tag>>, span: Span) -> Step {
        match tag {
            Some(tag) if !tag.is_yaml_core_schema() => self.fail(
                span,
                Code::YamlUnsupported,
                format!(
                    "custom YAML tag `{}{}` is not supported",
                    tag.handle, tag.suffix
                ),
            ),
            _ => Ok(()),
        }
    }

    fn scalar(
        &self,
        text: Cow<'_, str>,
        style: ScalarStyle,
        tag: Option<&Cow<'_, Tag>>,
        span: Span,
    ) -> Result<Value, Box<Diagnostic>> {
        let Some(scalar) = Scalar::parse_from_cow_and_metadata(text.clone(), style, tag) else {
            let tag = tag
                .map(|t| format!("{}{}", t.handle, t.suffix))
                .unwrap_or_default();
            return Err(Box::new(Diagnostic::error(
                self.file,
                position(span.start),
                Code::InvalidValue,
                format!("`{text}` is not a valid {tag} value"),
            )));
        };
        Ok(match scalar {
            Scalar::Null => Value::Null,
            Scalar::Boolean(b) => Value::Bool(b),
            // A number written as JSON writes it keeps its digits
            // (`18446744073709551617`, `0.10`), like a number in an event.
            Scalar::Integer(_) | Scalar::FloatingPoint(_)
                if let Ok(number) = serde_json::from_str::<Number>(text.trim()) =>
            {
                Value::Number(number)
            }
            Scalar::Integer(i) => Value::Number(i.into()),
            Scalar::FloatingPoint(f) => match Number::from_f64(f.into_inner()) {
                Some(n) => Value::Number(n),
                // NaN and infinities have no JSON form: keep the text.
                None => Value::String(text.into_owned()),
            },
            Scalar::String(s) => Value::String(s.into_owned()),
        })
    }

    /// The pointer of the node about to be read.
    fn child_pointer(&self) -> String {
        match self.stack.last() {
            None => String::new(),
            Some(Frame::Sequence { pointer, items, .. }) => format!("{pointer}/{}", items.len()),
            Some(Frame::Mapping {
                pointer,
                pending_key,
                ..
            }) => {
                let key = pending_key.as_ref().map(|(k, _)| k.as_str()).unwrap_or("");
                format!("{pointer}/{}", escape_pointer_token(key))
            }
        }
    }

    fn record(&mut self, pointer: &str, span: Span, style: Option<ScalarStyle>) {
        let key = match self.stack.last() {
            Some(Frame::Mapping {
                pending_key: Some((_, key_position)),
                ..
            }) => Some(*key_position),
            _ => None,
        };
        // A duplicate key keeps the position of its first occurrence.
        self.nodes.entry(pointer.to_owned()).or_insert(NodeSpan {
            start: position(span.start),
            start_index: span.start.index(),
            end_index: span.end.index(),
            key,
            style,
        });
    }

    fn finish_node(&mut self, value: Value, anchor: usize, span: Span) -> Step {
        self.node_count += 1;
        if anchor != 0 {
            self.anchors.insert(anchor, value.clone());
        }
        self.attach(value, span)
    }

    fn attach(&mut self, value: Value, _span: Span) -> Step {
        match self.stack.last_mut() {
            None => {
                self.root = Some(value);
            }
            Some(Frame::Sequence { items, .. }) => items.push(value),
            Some(Frame::Mapping {
                entries,
                pending_key,
                ..
            }) => {
                let (key, _) = pending_key.take().unwrap_or_default();
                entries.insert(key, value);
            }
        }
        Ok(())
    }
}

fn count_nodes(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        Value::Object(entries) => 1 + entries.values().map(count_nodes).sum::<usize>(),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load(text: &str) -> (Option<Document>, Vec<Diagnostic>) {
        parse(Path::new("t.yaml"), text)
    }

    #[test]
    fn values_and_positions_of_nested_nodes() {
        let (doc, diags) = load("id: a\nroutes:\n  - on: x.y\n    steps: []\n");
        assert!(diags.is_empty(), "{diags:?}");
        let doc = doc.unwrap();
        assert_eq!(
            doc.value,
            json!({"id": "a", "routes": [{"on": "x.y", "steps": []}]})
        );
        assert_eq!(doc.spans.position("/id"), Position::new(1, 5));
        assert_eq!(doc.spans.key_position("/id"), Position::new(1, 1));
        assert_eq!(doc.spans.position("/routes/0/on"), Position::new(3, 9));
        assert_eq!(
            doc.spans.key_position("/routes/0/steps"),
            Position::new(4, 5)
        );
        // A pointer that does not exist falls back to its nearest ancestor.
        assert_eq!(
            doc.spans.position("/routes/0/missing"),
            doc.spans.position("/routes/0")
        );
    }

    #[test]
    fn numbers_keep_their_digits() {
        let (doc, diags) =
            load("big: 18446744073709551617\ntiny: 1e-400\nscale: 1.50\nhex: 0x10\n");
        assert!(diags.is_empty(), "{diags:?}");
        let doc = doc.unwrap();
        assert_eq!(doc.value["big"].to_string(), "18446744073709551617");
        assert_eq!(doc.value["tiny"].to_string(), "1e-400");
        assert_eq!(doc.value["scale"].to_string(), "1.50");
        assert_eq!(doc.value["hex"], json!(16));
    }

    #[test]
    fn duplicate_keys_are_reported_at_the_second_key() {
        let (_, diags) = load("a: 1\nb: 2\na: 3\n");
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].code, Code::DuplicateKey);
        assert_eq!(diags[0].position, Position::new(3, 1));
        assert!(diags[0].message.contains("first at line 1"));
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let (doc, diags) = load("a: [1, 2\nb: 3\n");
        assert!(doc.is_none());
        assert_eq!(diags[0].code, Code::YamlSyntax);
    }

    #[test]
    fn quoted_scalars_stay_strings_and_plain_ones_are_typed() {
        let (doc, _) = load("a: '1'\nb: 1\nc: true\nd: ~\ne: 1.5\n");
        assert_eq!(
            doc.unwrap().value,
            json!({"a": "1", "b": 1, "c": true, "d": null, "e": 1.5})
        );
    }

    #[test]
    fn aliases_are_expanded_and_bombs_refused() {
        let (doc, _) = load("a: &x {k: 1}\nb: *x\n");
        assert_eq!(doc.unwrap().value, json!({"a": {"k": 1}, "b": {"k": 1}}));
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            bomb.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let (doc, diags) = load(&bomb);
        assert!(doc.is_none());
        assert_eq!(diags[0].code, Code::YamlUnsupported);
    }

    #[test]
    fn second_documents_and_custom_tags_are_refused() {
        let (_, diags) = load("a: 1\n---\nb: 2\n");
        assert_eq!(diags[0].code, Code::YamlUnsupported);
        let (_, diags) = load("a: !Ref x\n");
        assert_eq!(diags[0].code, Code::YamlUnsupported);
    }

    #[test]
    fn source_positions_count_characters() {
        let source = SourceText::new("ab\ncdé\nf");
        assert_eq!(source.position(0), Position::new(1, 1));
        assert_eq!(source.position(3), Position::new(2, 1));
        assert_eq!(source.position(7), Position::new(3, 1));
        assert_eq!(source.slice(3, 6), "cdé");
    }
}
