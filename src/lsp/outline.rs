//! Where the cursor stands in an integration file, read from the lines'
//! indentation.
//!
//! Completion runs while the user types, on text that is usually not valid
//! YAML yet (`values:` with nothing under it, `on: cand`), so it cannot
//! wait for the loader. This module reads only the block structure of
//! each line (indentation, a `- `, a `key:` and what follows it) to tell
//! which mapping or list the cursor is in and what the enclosing route and
//! step say. It validates nothing: diagnostics are always the compiler's
//! ([`crate::compile::compile`]); this is only a map of the text.

/// One line's block structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<'t> {
    /// The 0-based line number.
    pub number: usize,
    /// Spaces before the first character.
    pub indent: usize,
    /// The column of a list item's `-`, if the line starts one.
    pub dash: Option<usize>,
    /// The key of a `key:` entry and its column.
    pub key: Option<(usize, &'t str)>,
    /// What follows `key:` (or the `- `), trimmed; empty when nothing does.
    pub value: &'t str,
    /// The column where `value` starts.
    pub value_column: usize,
}

impl<'t> Line<'t> {
    /// Reads one line; `None` for blank lines and comments.
    pub fn parse(number: usize, text: &'t str) -> Option<Line<'t>> {
        let indent = text.len() - text.trim_start_matches(' ').len();
        let mut rest = &text[indent..];
        if rest.trim().is_empty() || rest.starts_with('#') {
            return None;
        }
        let mut column = indent;
        let mut dash = None;
        if rest == "-" || rest.starts_with("- ") {
            dash = Some(column);
            let after = rest[1..].trim_start_matches(' ');
            column += rest.len() - after.len();
            rest = after;
        }
        let key_length = rest
            .find(|c: char| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '$')))
            .unwrap_or(rest.len());
        let after_key = &rest[key_length..];
        let is_key = key_length > 0
            && after_key.starts_with(':')
            && (after_key.len() == 1 || after_key[1..].starts_with([' ', '\t']));
        let (key, value, value_column) = if is_key {
            let after_colon = &after_key[1..];
            let value = after_colon.trim_start();
            let value_column = column + key_length + 1 + (after_colon.len() - value.len());
            (Some((column, &rest[..key_length])), value, value_column)
        } else {
            (None, rest, column)
        };
        Some(Line {
            number,
            indent,
            dash,
            key,
            value: value.trim_end(),
            value_column: char_column(text, value_column),
        })
    }

    /// The column where this line's content (its key, or the item's value)
    /// starts.
    pub fn content_column(&self) -> usize {
        self.key.map_or(self.value_column, |(column, _)| column)
    }
}

/// The character column of a byte offset within `text`.
fn char_column(text: &str, byte: usize) -> usize {
    text.get(..byte)
        .map_or(byte, |prefix| prefix.chars().count())
}

/// One enclosing node of the cursor, outermost first in a [`Path`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Inside the value of `key`, written on `line`.
    Key { line: usize, key: String },
    /// Inside a list item whose `-` stands at `column` of `line`.
    Item { line: usize, column: usize },
}

/// The nodes enclosing a place, outermost first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Path(pub Vec<Frame>);

impl Path {
    /// The path as `routes/-/steps/-/values`: keys by name, items as `-`.
    pub fn shape(&self) -> String {
        self.0
            .iter()
            .map(|frame| match frame {
                Frame::Key { key, .. } => key.as_str(),
                Frame::Item { .. } => "-",
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The `n`-th item frame after key `key` (`routes`, `steps`).
    pub fn item_after(&self, key: &str) -> Option<(usize, usize)> {
        let at = self
            .0
            .iter()
            .position(|frame| matches!(frame, Frame::Key { key: k, .. } if k == key))?;
        match self.0.get(at + 1)? {
            Frame::Item { line, column } => Some((*line, *column)),
            Frame::Key { .. } => None,
        }
    }
}

/// A file's lines, read once, with what the cursor's place needs.
#[derive(Debug)]
pub struct Outline<'t> {
    lines: Vec<Option<Line<'t>>>,
}

impl<'t> Outline<'t> {
    /// Reads every line of `text`.
    pub fn new(text: &'t str) -> Outline<'t> {
        let lines = text
            .split('\n')
            .enumerate()
            .map(|(number, line)| Line::parse(number, line.strip_suffix('\r').unwrap_or(line)))
            .collect();
        Outline { lines }
    }

    /// How many lines the text has.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether the text has no lines (never: an empty text has one).
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Line `number`, unless it is blank or a comment.
    pub fn line(&self, number: usize) -> Option<&Line<'t>> {
        self.lines.get(number)?.as_ref()
    }

    /// The nodes enclosing column `column` of line `number` (the lines
    /// above it with less indentation, nearest first, then reversed).
    pub fn path_at(&self, number: usize, column: usize) -> Path {
        let mut frames = Vec::new();
        let mut limit = column;
        for line in self.lines[..number.min(self.lines.len())]
            .iter()
            .rev()
            .flatten()
        {
            if limit == 0 {
                break;
            }
            if let Some((key_column, key)) = line.key
                && key_column < limit
            {
                frames.push(Frame::Key {
                    line: line.number,
                    key: key.to_owned(),
                });
                limit = key_column;
            }
            if let Some(dash) = line.dash
                && dash < limit
            {
                frames.push(Frame::Item {
                    line: line.number,
                    column: dash,
                });
                limit = dash;
            }
        }
        frames.reverse();
        Path(frames)
    }

    /// The entries (`key`, value, line) of the mapping that is the list item
    /// whose `-` is at `column` of line `line`.
    pub fn item_entries(&self, line: usize, column: usize) -> Vec<(&'t str, &'t str, usize)> {
        let Some(first) = self.line(line) else {
            return Vec::new();
        };
        let content = match first.key {
            Some((key_column, _)) => key_column,
            None => match self.lines[line + 1..].iter().flatten().next() {
                Some(next) if next.indent > column => next.content_column(),
                _ => return Vec::new(),
            },
        };
        let mut entries = Vec::new();
        if let Some((_, key)) = first.key {
            entries.push((key, first.value, line));
        }
        for next in self.lines[line + 1..].iter().flatten() {
            if next.indent <= column {
                break;
            }
            if next.dash.is_none()
                && let Some((key_column, key)) = next.key
                && key_column == content
            {
                entries.push((key, next.value, next.number));
            }
        }
        entries
    }

    /// The entries of the top-level mapping.
    pub fn top_entries(&self) -> Vec<(&'t str, &'t str, usize)> {
        self.lines
            .iter()
            .flatten()
            .filter(|line| line.dash.is_none())
            .filter_map(|line| match line.key {
                Some((0, key)) => Some((key, line.value, line.number)),
                _ => None,
            })
            .collect()
    }

    /// The value of top-level key `key`, unquoted.
    pub fn top_value(&self, key: &str) -> Option<&'t str> {
        self.top_entries()
            .into_iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, value, _)| unquote(value))
    }

    /// The items of the list under the key on line `key_line` that start
    /// before line `before`: each item's line and `-` column.
    pub fn items_before(&self, key_line: usize, before: usize) -> Vec<(usize, usize)> {
        let Some(key) = self.line(key_line) else {
            return Vec::new();
        };
        let key_column = key.content_column();
        let mut items = Vec::new();
        let mut item_column = None;
        for line in self.lines[key_line + 1..before.min(self.lines.len())]
            .iter()
            .flatten()
        {
            if line.indent < key_column || (line.indent == key_column && line.dash.is_none()) {
                break;
            }
            if let Some(dash) = line.dash
                && *item_column.get_or_insert(dash) == dash
            {
                items.push((line.number, dash));
            }
        }
        items
    }
}

/// A scalar without its quotes.
pub fn unquote(value: &str) -> &str {
    let value = value.trim();
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}

/// The step keywords, one of which introduces every step.
pub const STEP_KINDS: [&str; 5] = ["find", "upsert", "update", "delete", "emit"];

/// What one step says of itself, read from its entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepOutline {
    /// The line of its `-`.
    pub line: usize,
    /// `find`, `upsert`, ... if written.
    pub kind: Option<String>,
    /// The table (or for `emit`, the event) the kind key names.
    pub target: Option<String>,
    /// The name its `as:` binds.
    pub bind: Option<String>,
    /// The line of `as:`.
    pub bind_line: Option<usize>,
    /// The keys it has.
    pub keys: Vec<String>,
}

impl Outline<'_> {
    /// The step whose item `-` is at `column` of `line`.
    pub fn step(&self, line: usize, column: usize) -> StepOutline {
        let mut step = StepOutline {
            line,
            ..StepOutline::default()
        };
        for (key, value, at) in self.item_entries(line, column) {
            step.keys.push(key.to_owned());
            if STEP_KINDS.contains(&key) && step.kind.is_none() {
                step.kind = Some(key.to_owned());
                step.target = Some(unquote(value).to_owned()).filter(|t| !t.is_empty());
            } else if key == "as" {
                step.bind = Some(unquote(value).to_owned()).filter(|t| !t.is_empty());
                step.bind_line = Some(at);
            }
        }
        step
    }

    /// The steps before the one enclosing `path` in the same route.
    pub fn earlier_steps(&self, path: &Path) -> Vec<StepOutline> {
        let Some(steps_line) = path.0.iter().rev().find_map(|frame| match frame {
            Frame::Key { line, key } if key == "steps" => Some(*line),
            _ => None,
        }) else {
            return Vec::new();
        };
        let current = path
            .item_after("steps")
            .map_or(usize::MAX, |(line, _)| line);
        self.items_before(steps_line, current)
            .into_iter()
            .map(|(line, column)| self.step(line, column))
            .collect()
    }

    /// The `on:` event of the route enclosing `path`.
    pub fn route_event(&self, path: &Path) -> Option<&str> {
        let (line, column) = path.item_after("routes")?;
        self.item_entries(line, column)
            .into_iter()
            .find(|(key, _, _)| *key == "on")
            .map(|(_, value, _)| unquote(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
id: a
source: recruitiq
target: nexus
routes:
  - on: candidate.hired
    steps:
      - find: core.subscriptions
        where: { organization_id: $.organization_id }
        as: subscription
      - upsert: hris.employees
        key: [email]
        values:
          email: $.data.candidate.
          name: \"{{ subscription. }}\"
        as: employee
";

    #[test]
    fn lines_tell_items_keys_and_values_apart() {
        let line = Line::parse(0, "      - find: core.subscriptions").unwrap();
        assert_eq!(line.dash, Some(6));
        assert_eq!(line.key, Some((8, "find")));
        assert_eq!((line.value, line.value_column), ("core.subscriptions", 14));
        let line = Line::parse(0, "  - $.data.x").unwrap();
        assert_eq!((line.key, line.value), (None, "$.data.x"));
        assert!(Line::parse(0, "   # a comment").is_none());
        let line = Line::parse(0, "email: \"{{ data.x }}\"").unwrap();
        assert_eq!(line.key, Some((0, "email")));
    }

    #[test]
    fn the_path_at_a_value_names_its_step_and_route() {
        let outline = Outline::new(FILE);
        let path = outline.path_at(12, 10);
        assert_eq!(path.shape(), "routes/-/steps/-/values");
        assert_eq!(outline.route_event(&path), Some("candidate.hired"));
        let (line, column) = path.item_after("steps").unwrap();
        let step = outline.step(line, column);
        assert_eq!(step.kind.as_deref(), Some("upsert"));
        assert_eq!(step.target.as_deref(), Some("hris.employees"));
        assert_eq!(step.bind.as_deref(), Some("employee"));
        let earlier = outline.earlier_steps(&path);
        assert_eq!(earlier.len(), 1);
        assert_eq!(earlier[0].bind.as_deref(), Some("subscription"));
        assert_eq!(earlier[0].bind_line, Some(8));
        assert_eq!(outline.top_value("source"), Some("recruitiq"));
    }

    #[test]
    fn a_key_being_typed_in_a_step_is_inside_the_step_item() {
        let outline =
            Outline::new("routes:\n  - on: x\n    steps:\n      - upsert: t\n        va\n");
        assert_eq!(outline.path_at(4, 8).shape(), "routes/-/steps/-");
        assert_eq!(outline.path_at(2, 4).shape(), "routes/-");
        assert_eq!(outline.path_at(0, 0).shape(), "");
    }
}
