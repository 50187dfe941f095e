//! JSONPath, parsed once per generation and evaluated per event.
//!
//! Most paths in integrations are plain chains of names and indexes
//! (`$.data.candidate.email`); those are evaluated by walking the value
//! directly. Anything else (wildcards, filters, descendants) goes through
//! `jsonpath-rust`'s full evaluator, with the query parsed once.
//!
//! A leaf: `compile` parses paths and asks contracts about their
//! [`Segment`]s, `mapping` evaluates them; it uses nothing of busbar's.

use jsonpath_rust::parser::model::{JpQuery, Segment as JpSegment, Selector};
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::js_path_process;
use serde_json::Value;

/// One step into a JSON value: what a path's simple chain names, and
/// what `compile::contract` is asked about (`Contract::lookup`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(i64),
    /// A wildcard, slice or filter: any child.
    Any,
}

/// A parsed JSONPath.
#[derive(Debug, Clone)]
pub struct JsonPath {
    source: String,
    query: JpQuery,
    /// The path as plain steps, when it is a simple chain.
    simple: Option<Vec<Step>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(i64),
}

/// A JSONPath that does not parse, with the character offset of the problem
/// in the path when the parser says where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathSyntaxError {
    pub message: String,
    pub offset: Option<usize>,
}

/// What a path may go on with, for messages.
const GOES_ON_WITH: &str = "`.name`, `[0]`, `['name']`, `[*]` or `..name`";

/// Why `source` does not parse at character `offset` (where the parser
/// stopped), in the words of someone writing a path, and the character
/// offset to report it at.
fn explain(source: &str, offset: usize) -> (String, usize) {
    let chars: Vec<char> = source.chars().collect();
    let end = chars.len();
    let offset = offset.min(end);
    let at = chars.get(offset).copied();
    let before: String = chars[..offset].iter().collect();
    let rest: String = chars[offset..].iter().collect();
    // The name-like run starting at `offset` (`email` in `[email`).
    let word: String = chars[offset..]
        .iter()
        .take_while(|c| c.is_alphanumeric() || **c == '_' || **c == '-')
        .collect();
    if !source.starts_with('$') {
        return ("a JSONPath starts with `$`".into(), 0);
    }
    if offset == 1 {
        let message = match at {
            Some(c) if c.is_alphabetic() || c == '_' => format!(
                "`$` must be followed by `.` or `[`: did you mean `$.{}`?",
                &source[1..]
            ),
            Some(c) => format!("`$` must be followed by `.` or `[`, not `{c}`"),
            None => "`$` must be followed by `.` or `[`".into(),
        };
        return (message, offset);
    }
    // An opening bracket not closed before the parser stopped.
    let open = before.rfind('[').filter(|&i| !before[i..].contains(']'));
    if let Some(open) = open {
        if !word.is_empty() && !word.chars().all(|c| c.is_ascii_digit() || c == '-') {
            return (
                format!(
                    "inside `[ ]` write an index (`[0]`), a quoted name (`['{word}']`), `*` or a filter (`[?@.x == 1]`), not `{word}`"
                ),
                offset,
            );
        }
        if !source[open..].contains(']') {
            return ("`[` is not closed by `]`".into(), end);
        }
        return (
            format!(
                "inside `[ ]` write an index (`[0]`), a quoted name (`['name']`), `*` or a filter (`[?@.x == 1]`){}",
                at.map(|c| format!(", not `{c}`")).unwrap_or_default()
            ),
            offset,
        );
    }
    if before.ends_with("..") {
        return (
            "`..` must be followed by a name, `*` or `[ ]`".into(),
            offset,
        );
    }
    if before.ends_with('.') {
        let message = match at {
            None => "`.` must be followed by a name".into(),
            Some(_) if !word.is_empty() => format!(
                "`.` must be followed by a name, which starts with a letter or `_`; write `['{word}']` for any other"
            ),
            Some(c) => format!(
                "`.` must be followed by a name (or `*`), not `{c}`; write `['{rest}']` for a name with other characters"
            ),
        };
        return (message, offset);
    }
    if source.contains(char::is_whitespace) {
        return (
            "a path cannot hold spaces or line breaks; a name with them is written `['first name']`"
                .into(),
            offset,
        );
    }
    // `$.data.first-name`: a name with a character names cannot hold.
    if let (Some(c), Some(dot)) = (at, before.rfind('.'))
        && matches!(c, '-' | '@' | '#' | '%' | '&' | '+' | '/' | ':' | '~')
        && before[dot + 1..]
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_')
        && dot + 1 < before.len()
    {
        let tail: String = chars[offset..]
            .iter()
            .take_while(|c| !matches!(c, '.' | '['))
            .collect();
        let name = format!("{}{tail}", &before[dot + 1..]);
        return (
            format!("a name after `.` cannot hold `{c}`; write `['{name}']`"),
            offset,
        );
    }
    match at {
        Some(c) => (
            format!("`{c}` cannot come here: a path goes on with {GOES_ON_WITH}, or ends"),
            offset,
        ),
        None => (
            format!("the path ends too early: it goes on with {GOES_ON_WITH}"),
            offset,
        ),
    }
}

/// A path matched several nodes where one value is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("JSONPath `{path}` matched {count} nodes; a value expression must match at most one")]
pub struct MultipleMatches {
    pub path: String,
    pub count: usize,
}

impl JsonPath {
    pub fn parse(source: &str) -> Result<JsonPath, PathSyntaxError> {
        let query = parse_json_path(source).map_err(|error| {
            let (message, offset) = match &error {
                jsonpath_rust::parser::errors::JsonPathError::PestError(pest) => {
                    let offset = match pest.location {
                        pest::error::InputLocation::Pos(p) => p,
                        pest::error::InputLocation::Span((p, _)) => p,
                    };
                    // The parser's own message names grammar rules
                    // ("expected EOI or segment"): say it in the user's words.
                    let (message, offset) =
                        explain(source, source[..offset.min(source.len())].chars().count());
                    (message, Some(offset))
                }
                other => (other.to_string(), None),
            };
            PathSyntaxError { message, offset }
        })?;
        let simple = query
            .segments
            .iter()
            .map(|segment| match segment {
                JpSegment::Selector(Selector::Name(name)) => Some(Step::Key(name.clone())),
                JpSegment::Selector(Selector::Index(index)) => Some(Step::Index(*index)),
                JpSegment::Selectors(selectors) if selectors.len() == 1 => match &selectors[0] {
                    Selector::Name(name) => Some(Step::Key(name.clone())),
                    Selector::Index(index) => Some(Step::Index(*index)),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        Ok(JsonPath {
            source: source.to_owned(),
            query,
            simple,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The path as contract segments, as far as it can be followed
    /// statically (wildcards and filters become [`Segment::Any`], and a
    /// descendant segment ends it).
    pub fn segments(&self) -> Vec<Segment> {
        let mut out = Vec::new();
        for segment in &self.query.segments {
            let selector = match segment {
                JpSegment::Selector(selector) => selector,
                JpSegment::Selectors(selectors) if selectors.len() == 1 => &selectors[0],
                JpSegment::Selectors(_) => {
                    out.push(Segment::Any);
                    continue;
                }
                JpSegment::Descendant(_) => break,
            };
            out.push(match selector {
                Selector::Name(name) => Segment::Key(name.clone()),
                Selector::Index(index) => Segment::Index(*index),
                _ => Segment::Any,
            });
        }
        out
    }

    /// The single node the path selects, if any.
    pub fn query<'v>(&self, root: &'v Value) -> Result<Option<&'v Value>, MultipleMatches> {
        if let Some(steps) = &self.simple {
            let mut node = root;
            for step in steps {
                let next = match (step, node) {
                    // Small objects: a scan beats hashing the key (SipHash).
                    (Step::Key(key), Value::Object(map)) if map.len() <= 8 => {
                        map.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
                    }
                    (Step::Key(key), Value::Object(map)) => map.get(key),
                    (Step::Index(index), Value::Array(items)) => {
                        let len = items.len() as i64;
                        let index = if *index < 0 { len + index } else { *index };
                        usize::try_from(index).ok().and_then(|i| items.get(i))
                    }
                    _ => None,
                };
                match next {
                    Some(next) => node = next,
                    None => return Ok(None),
                }
            }
            return Ok(Some(node));
        }
        let found = js_path_process(&self.query, root).unwrap_or_default();
        match found.len() {
            0 => Ok(None),
            1 => Ok(Some(found[0].val)),
            count => Err(MultipleMatches {
                path: self.source.clone(),
                count,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syntax_error(path: &str) -> PathSyntaxError {
        JsonPath::parse(path).expect_err("a path that does not parse")
    }

    #[test]
    fn syntax_errors_say_what_may_be_written_not_the_grammar() {
        for path in [
            "$.a[",
            "$.a[1:",
            "$.a[?@.x ==]",
            "$.a['x",
            "$.a.*x",
            "$[0]]",
            "$.a.b-c",
        ] {
            let error = syntax_error(path);
            assert!(
                !error.message.contains("expected") && !error.message.contains("EOI"),
                "`{path}`: {}",
                error.message
            );
        }
        let error = syntax_error("$.data.items[0");
        assert_eq!(error.message, "`[` is not closed by `]`");
        assert_eq!(error.offset, Some(14));
        assert_eq!(
            syntax_error("$.data.first-name").message,
            "a name after `.` cannot hold `-`; write `['first-name']`"
        );
        assert_eq!(
            syntax_error("$data.x").message,
            "`$` must be followed by `.` or `[`: did you mean `$.data.x`?"
        );
    }
    use serde_json::json;

    #[test]
    fn simple_paths_walk_the_value() {
        let event = json!({"data": {"items": [{"a": 1}, {"a": 2}], "x y": true}});
        let path = JsonPath::parse("$.data.items[1].a").unwrap();
        assert!(path.simple.is_some());
        assert_eq!(path.query(&event).unwrap(), Some(&json!(2)));
        let path = JsonPath::parse("$.data.items[-1].a").unwrap();
        assert_eq!(path.query(&event).unwrap(), Some(&json!(2)));
        let path = JsonPath::parse("$.data['x y']").unwrap();
        assert_eq!(path.query(&event).unwrap(), Some(&json!(true)));
        let path = JsonPath::parse("$.data.nope.deeper").unwrap();
        assert_eq!(path.query(&event).unwrap(), None);
    }

    #[test]
    fn complex_paths_must_match_at_most_one_node() {
        let event = json!({"data": {"items": [{"a": 1, "p": true}, {"a": 2}]}});
        let path = JsonPath::parse("$.data.items[?@.p].a").unwrap();
        assert!(path.simple.is_none());
        assert_eq!(path.query(&event).unwrap(), Some(&json!(1)));
        let path = JsonPath::parse("$.data.items[*].a").unwrap();
        assert_eq!(path.query(&event).unwrap_err().count, 2);
    }

    #[test]
    fn syntax_errors_have_an_offset() {
        let error = JsonPath::parse("$.data.[").unwrap_err();
        assert!(error.offset.is_some(), "{error:?}");
    }
}
