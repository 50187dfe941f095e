//! JSONPath, parsed once per generation and evaluated per event.
//!
//! Most paths in integrations are plain chains of names and indexes
//! (`$.data.candidate.email`); those are evaluated by walking the value
//! directly. Anything else (wildcards, filters, descendants) goes through
//! `jsonpath-rust`'s full evaluator, with the query parsed once.

use jsonpath_rust::parser::model::{JpQuery, Segment as JpSegment, Selector};
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::js_path_process;
use serde_json::Value;

use crate::compile::contract::Segment;

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
                    (
                        format!("{}", pest.variant.message()),
                        Some(source[..offset.min(source.len())].chars().count()),
                    )
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
