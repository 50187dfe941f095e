//! Syntax highlighting on the server: YAML (integration files) and JSON
//! (payloads) as HTML spans with classes, so the browser needs no script
//! for it. Every character of the input is HTML-escaped. Pure: no I/O.

use std::fmt::Write;

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn span(out: &mut String, class: &str, text: &str) {
    let _ = write!(out, "<span class=\"{class}\">{}</span>", escape(text));
}

/// A YAML file as lines of highlighted HTML: one `<span class="line"
/// id="L{n}">` per line (CSS numbers them), the lines in `marked` with the
/// class `marked` (where a reload error points).
pub fn yaml(text: &str, marked: &[usize]) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        let class = if marked.contains(&number) {
            "line marked"
        } else {
            "line"
        };
        let _ = write!(out, "<span class=\"{class}\" id=\"L{number}\">");
        yaml_line(&mut out, line);
        out.push_str("</span>\n");
    }
    out
}

fn yaml_line(out: &mut String, line: &str) {
    let indent = line.len() - line.trim_start().len();
    out.push_str(&line[..indent]);
    let mut rest = &line[indent..];
    if rest.starts_with('#') {
        span(out, "c", rest);
        return;
    }
    if let Some(after) = rest.strip_prefix("- ") {
        span(out, "punct", "- ");
        rest = after;
    } else if rest == "-" {
        span(out, "punct", "-");
        return;
    }
    // A block key: `name:` followed by a space or the end of the line.
    if let Some(colon) = key_end(rest) {
        span(out, "k", &rest[..colon]);
        span(out, "punct", ":");
        rest = &rest[colon + 1..];
    }
    yaml_value(out, rest);
}

/// Where a `key:` at the start of `text` ends (the colon's index).
fn key_end(text: &str) -> Option<usize> {
    let end = text.find(':')?;
    let key = &text[..end];
    let after = &text[end + 1..];
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '$'));
    (plain && (after.is_empty() || after.starts_with(' '))).then_some(end)
}

/// The value part of a line: strings, templates, JSONPaths, flow
/// mappings' keys, scalars and comments.
fn yaml_value(out: &mut String, text: &str) {
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut plain = String::new();
    let flush = |out: &mut String, plain: &mut String| {
        if !plain.is_empty() {
            scalar(out, plain);
            plain.clear();
        }
    };
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            '"' | '\'' => {
                flush(out, &mut plain);
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != c {
                    if bytes[i] == '\\' && c == '"' {
                        i += 1;
                    }
                    i += 1;
                }
                let end = (i + 1).min(bytes.len());
                let quoted: String = bytes[start..end].iter().collect();
                string_with_templates(out, &quoted);
                i = end;
            }
            '#' if i == 0 || bytes[i - 1] == ' ' => {
                flush(out, &mut plain);
                let comment: String = bytes[i..].iter().collect();
                span(out, "c", &comment);
                return;
            }
            '{' | '}' | '[' | ']' | ',' => {
                flush(out, &mut plain);
                span(out, "punct", &c.to_string());
                i += 1;
            }
            ':' if bytes.get(i + 1).is_none_or(|n| *n == ' ') => {
                // A flow mapping's key: the plain text before the colon.
                let key = plain.trim_start().to_owned();
                let lead = plain.len() - plain.trim_start().len();
                out.push_str(&plain[..lead]);
                plain.clear();
                span(out, "k", &key);
                span(out, "punct", ":");
                i += 1;
            }
            c => {
                plain.push(c);
                i += 1;
            }
        }
    }
    flush(out, &mut plain);
}

/// A plain scalar: a JSONPath, a boolean or null, a number, or text.
fn scalar(out: &mut String, text: &str) {
    let trimmed = text.trim();
    let lead = &text[..text.len() - text.trim_start().len()];
    let trail = &text[lead.len() + trimmed.len()..];
    out.push_str(lead);
    if trimmed.is_empty() {
    } else if trimmed.starts_with('$') {
        span(out, "p", trimmed);
    } else if matches!(trimmed, "true" | "false" | "null" | "~") {
        span(out, "b", trimmed);
    } else if trimmed.parse::<f64>().is_ok() {
        span(out, "n", trimmed);
    } else if trimmed.contains("{{") {
        string_with_templates(out, trimmed);
    } else {
        span(out, "v", trimmed);
    }
    out.push_str(trail);
}

/// A string, with its `{{ … }}` parts marked as templates.
fn string_with_templates(out: &mut String, text: &str) {
    let mut rest = text;
    out.push_str("<span class=\"s\">");
    while let Some(start) = rest.find("{{") {
        out.push_str(&escape(&rest[..start]));
        let end = rest[start..]
            .find("}}")
            .map_or(rest.len(), |e| start + e + 2);
        span(out, "t", &rest[start..end]);
        rest = &rest[end..];
    }
    out.push_str(&escape(rest));
    out.push_str("</span>");
}

/// A JSON value, pretty-printed and highlighted.
pub fn json(value: &serde_json::Value) -> String {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() * 2);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            let start = i;
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i = (i + 1).min(chars.len());
            let string: String = chars[start..i].iter().collect();
            let is_key = chars[i..].iter().find(|c| !c.is_whitespace()) == Some(&':');
            span(&mut out, if is_key { "k" } else { "s" }, &string);
        } else if c == '-' || c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "+-.".contains(chars[i]))
            {
                i += 1;
            }
            let number: String = chars[start..i].iter().collect();
            span(&mut out, "n", &number);
        } else if c.is_ascii_alphabetic() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_alphabetic() {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            span(&mut out, "b", &word);
        } else {
            out.push_str(&escape(&c.to_string()));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_keys_paths_templates_and_comments_are_marked_and_escaped() {
        let html = yaml(
            "# a <comment>\nid: x\n  email: \"{{ data.email | lower }}\"\n  where: { organization_id: $.organization_id, status: active }\n",
            &[2],
        );
        assert!(
            html.contains("<span class=\"c\"># a &lt;comment&gt;</span>"),
            "{html}"
        );
        assert!(
            html.contains("<span class=\"line marked\" id=\"L2\"><span class=\"k\">id</span>"),
            "{html}"
        );
        assert!(
            html.contains("<span class=\"t\">{{ data.email | lower }}</span>"),
            "{html}"
        );
        assert!(
            html.contains("<span class=\"p\">$.organization_id</span>"),
            "{html}"
        );
        assert!(html.contains("<span class=\"k\">status</span>"), "{html}");
        assert!(!html.contains("<comment>"));
    }

    #[test]
    fn json_keys_strings_and_numbers_are_marked() {
        let html = json(&serde_json::json!({"a": "<b>", "n": 1.5, "t": true}));
        assert!(
            html.contains("<span class=\"k\">&quot;a&quot;</span>"),
            "{html}"
        );
        assert!(
            html.contains("<span class=\"s\">&quot;&lt;b&gt;&quot;</span>"),
            "{html}"
        );
        assert!(html.contains("<span class=\"n\">1.5</span>"), "{html}");
        assert!(html.contains("<span class=\"b\">true</span>"), "{html}");
    }
}
