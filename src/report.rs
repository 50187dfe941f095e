//! How the CLI prints diagnostics and dry runs: text for people (with the
//! source line and a caret), JSON for tools, GitHub workflow annotations
//! for CI.
//!
//! Each diagnostic's first line is `file:line:col: severity: message [code]`
//! in every text format: users and CI scripts grep it, so it is written
//! here, by hand. The source line and caret under it are annotate-snippets'
//! (rustc's renderer), which expands tabs and counts wide characters.
//!
//! Styles are written unconditionally; the CLI wraps stdout in an
//! `anstream::AutoStream`, which drops them when the output is not a
//! terminal or `NO_COLOR` is set.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::PathBuf;

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};
use anstyle::{AnsiColor, Style};
use serde_json::Value;
use unicode_width::UnicodeWidthStr;

use crate::config::yaml::SourceText;
use crate::diagnostics::{Diagnostic, Severity};
use crate::mapping::StepStatus;
use crate::render::RenderReport;

const ERROR: Style = AnsiColor::Red.on_default().bold();
const WARNING: Style = AnsiColor::Yellow.on_default().bold();
const DIM: Style = AnsiColor::BrightBlack.on_default();
const BOLD: Style = Style::new().bold();
const GOOD: Style = AnsiColor::Green.on_default().bold();

/// annotate-snippets in the colours of the first line.
const SNIPPETS: Renderer = Renderer::styled()
    .error(ERROR)
    .warning(WARNING)
    .line_num(DIM)
    .help(BOLD);

/// Output format of `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckFormat {
    /// One line per problem, with the source line and a caret.
    Text,
    /// One line per problem, nothing else.
    Short,
    /// A JSON array of {file, line, column, severity, code, message, help}.
    Json,
    /// GitHub Actions workflow annotations.
    Github,
}

/// Prints diagnostics in the chosen format, then (for text) the summary.
pub fn print_diagnostics(
    out: &mut dyn Write,
    format: CheckFormat,
    diagnostics: &[Diagnostic],
    sources: &HashMap<PathBuf, SourceText>,
    files: usize,
) -> io::Result<()> {
    match format {
        CheckFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, diagnostics)?;
            writeln!(out)
        }
        CheckFormat::Github => {
            for d in diagnostics {
                let level = match d.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                };
                let mut message = d.message.clone();
                if let Some(help) = &d.help {
                    message.push_str(&format!(" ({help})"));
                }
                writeln!(
                    out,
                    "::{level} file={},line={},col={},title={}::{}",
                    escape_property(&d.file.display().to_string()),
                    d.position.line,
                    d.position.column,
                    escape_property(d.code.as_str()),
                    escape_data(&message)
                )?;
            }
            Ok(())
        }
        CheckFormat::Text | CheckFormat::Short => {
            for d in diagnostics {
                let style = match d.severity {
                    Severity::Error => ERROR,
                    Severity::Warning => WARNING,
                };
                writeln!(
                    out,
                    "{BOLD}{}:{}:{}:{BOLD:#} {style}{}:{style:#} {} {DIM}[{}]{DIM:#}",
                    d.file.display(),
                    d.position.line,
                    d.position.column,
                    d.severity,
                    d.message,
                    d.code
                )?;
                if format == CheckFormat::Text {
                    snippet(out, d, sources.get(&d.file))?;
                }
            }
            summary(out, diagnostics, files)
        }
    }
}

/// What follows a diagnostic's first line in the text format: its source
/// line with a caret under its column (when the file's text is at hand),
/// then its help.
fn snippet(out: &mut dyn Write, d: &Diagnostic, source: Option<&SourceText>) -> io::Result<()> {
    let level = match d.severity {
        Severity::Error => Level::ERROR,
        Severity::Warning => Level::WARNING,
    };
    let mut group = Group::with_level(level);
    if let Some(line) = source.and_then(|s| s.line(d.position.line)) {
        let annotation = AnnotationKind::Primary.span(character_at(line, d.position.column));
        group = group.element(
            Snippet::source(line)
                .line_start(d.position.line)
                .annotation(annotation),
        );
    }
    if let Some(help) = &d.help {
        group = group.element(Level::HELP.message(help));
    }
    if group.is_empty() {
        return Ok(());
    }
    writeln!(out, "{}", SNIPPETS.render(&[group]))
}

/// The byte range of the character at `column` (1-based, counting
/// characters) of `line`; empty at the end of the line, where the caret
/// then stands.
fn character_at(line: &str, column: usize) -> std::ops::Range<usize> {
    let start = line
        .char_indices()
        .nth(column.saturating_sub(1))
        .map_or(line.len(), |(index, _)| index);
    let end = line[start..]
        .chars()
        .next()
        .map_or(start, |c| start + c.len_utf8());
    start..end
}

/// `2 errors, 1 warning in 3 files`
pub fn summary(out: &mut dyn Write, diagnostics: &[Diagnostic], files: usize) -> io::Result<()> {
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let style = if errors > 0 {
        ERROR
    } else if warnings > 0 {
        WARNING
    } else {
        GOOD
    };
    writeln!(
        out,
        "{style}{}, {} in {}{style:#}",
        plural(errors, "error"),
        plural(warnings, "warning"),
        plural(files, "file")
    )
}

/// GitHub's escaping for the message part of an annotation.
pub fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// GitHub's escaping for annotation properties.
pub fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

fn show(value: &Value) -> String {
    match value {
        Value::String(s) if s.starts_with('⟨') && s.ends_with('⟩') => s.clone(),
        other => other.to_string(),
    }
}

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(s) if s.starts_with('⟨') && s.ends_with('⟩') => "from the database",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn columns(out: &mut dyn Write, label: &str, columns: &[(String, Value)]) -> io::Result<()> {
    let width = columns
        .iter()
        .map(|(c, _)| c.chars().count())
        .max()
        .unwrap_or(0);
    let shown: Vec<String> = columns.iter().map(|(_, value)| show(value)).collect();
    // Values are padded by the columns they take on a terminal (`{:<n}`
    // counts characters, and a CJK character or an emoji takes two).
    let value_width = shown.iter().map(|s| s.width()).max().unwrap_or(0).min(60);
    for (i, ((column, value), shown)) in columns.iter().zip(&shown).enumerate() {
        let label = if i == 0 { label } else { "" };
        let padding = " ".repeat(value_width.saturating_sub(shown.width()));
        writeln!(
            out,
            "       {label:<6} {column:<width$}  {shown}{padding}  {DIM}{}{DIM:#}",
            type_of(value)
        )?;
    }
    Ok(())
}

/// The dry run as text.
pub fn print_render(out: &mut dyn Write, report: &RenderReport) -> io::Result<()> {
    let event = &report.event;
    let text = |key: &str| {
        event
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    writeln!(
        out,
        "{BOLD}event{BOLD:#} {}/{} {DIM}id {} · organization {}{DIM:#}",
        text("source"),
        text("event"),
        text("id"),
        text("organization_id")
    )?;
    if report.routes.is_empty() {
        writeln!(
            out,
            "no integration routes this event; publishing it would create no delivery"
        )?;
        return Ok(());
    }
    for route in &report.routes {
        let style = match route.outcome {
            "applied" => GOOD,
            "skipped" => WARNING,
            _ => ERROR,
        };
        writeln!(out)?;
        writeln!(
            out,
            "{BOLD}{}{BOLD:#} {DIM}({}, route {}){DIM:#} {} → {}: {style}{}{style:#}{}",
            route.integration,
            route.file.display(),
            route.route + 1,
            route.source,
            route.target,
            route.outcome,
            if route.enabled {
                ""
            } else {
                " (integration disabled in YAML)"
            }
        )?;
        if let Some(reason) = &route.reason {
            writeln!(out, "  {style}{reason}{style:#}")?;
        }
        for step in &route.steps {
            let status = match step.status {
                StepStatus::Ran => String::new(),
                StepStatus::PassedOver => " — passed over: its `when` is false".into(),
                StepStatus::NoRow => " — no row; goes on with null".into(),
                StepStatus::SkippedRoute => " — no row: the delivery is skipped".into(),
            };
            let key = if step.key.is_empty() {
                String::new()
            } else {
                format!(" on ({})", step.key.join(", "))
            };
            writeln!(
                out,
                "  {}. {BOLD}{} {}{BOLD:#}{key}{status}",
                step.index + 1,
                step.keyword,
                step.target
            )?;
            columns(out, "where", &step.filter)?;
            let label = match step.keyword {
                "update" => "set",
                _ => "values",
            };
            columns(out, label, &step.values)?;
            if let Some(Value::Object(data)) = &step.data {
                let data: Vec<(String, Value)> =
                    data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                columns(out, "data", &data)?;
            }
            if step.keyword == "find" && step.status == StepStatus::Ran {
                writeln!(
                    out,
                    "       {DIM}render cannot query the database: the row is assumed to exist, and its other columns are placeholders ⟨…⟩{DIM:#}"
                )?;
            }
            if let Some(bind) = &step.bind {
                writeln!(out, "       {DIM}→ bound as `{bind}`{DIM:#}")?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::diagnostics::{Code, Position};

    /// A broken file: a tab before a key, a wide character before a name,
    /// problems on one- and two-digit lines, and no newline at its end.
    const BROKEN: &str = "id: contacts\nroutes:\n  - on: shop/contact.added\n\tsteps:\n      - upsert: crm.contacts\n        values:\n          note: \"Grüße 😀 {{ emploee.id }}\"\n          city: $.data.city\n          code: $.data.code\n          id: $.data.id\n        key: [id";

    fn broken() -> (Vec<Diagnostic>, HashMap<PathBuf, SourceText>) {
        let file = Path::new("integrations.d/contacts.yaml");
        let diagnostics = vec![
            Diagnostic::error(
                file,
                Position::new(4, 1),
                Code::YamlSyntax,
                "YAML syntax error: tabs disallowed within this context",
            ),
            Diagnostic::error(
                file,
                Position::new(4, 2),
                Code::UnknownKey,
                "unknown key `steps` here",
            )
            .with_help("did you mean `steps` one level down?"),
            Diagnostic::error(
                file,
                Position::new(7, 30),
                Code::UndefinedName,
                "`emploee` is not defined",
            )
            .with_help("did you mean `employee`?"),
            Diagnostic::warning(
                file,
                Position::new(10, 15),
                Code::MayExceedLength,
                "`$.data.id` may be longer than `id` holds",
            ),
            // The end of the file: just after its last character.
            Diagnostic::error(
                file,
                Position::new(11, 17),
                Code::YamlSyntax,
                "YAML syntax error: while parsing a flow sequence, expected ',' or ']'",
            ),
            // A file whose text is not at hand: no snippet, only the help.
            // (Its name and message need GitHub's escaping.)
            Diagnostic::error(
                Path::new("integrations.d/a:b,c.yaml"),
                Position::START,
                Code::Io,
                "cannot read this file: 100% denied",
            )
            .with_help("check the file's permissions"),
        ];
        let sources = HashMap::from([(PathBuf::from(file), SourceText::new(BROKEN))]);
        (diagnostics, sources)
    }

    /// What `print_diagnostics` writes, and the same without its styles.
    fn printed(format: CheckFormat) -> (String, String) {
        let (diagnostics, sources) = broken();
        let mut out = Vec::new();
        print_diagnostics(&mut out, format, &diagnostics, &sources, 2).unwrap();
        let styled = String::from_utf8(out).unwrap();
        let plain = anstream::adapter::strip_str(&styled).to_string();
        (styled, plain)
    }

    #[test]
    fn the_text_format_shows_each_line_with_a_caret_under_the_column() {
        let (_, text) = printed(CheckFormat::Text);
        insta::assert_snapshot!(text);
    }

    #[test]
    fn every_text_format_starts_each_problem_with_its_one_line_form() {
        let (diagnostics, _) = broken();
        for format in [CheckFormat::Text, CheckFormat::Short] {
            let (_, text) = printed(format);
            let heads: Vec<&str> = text
                .lines()
                .filter(|line| line.starts_with("integrations.d/"))
                .collect();
            let expected: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
            assert_eq!(heads, expected, "{format:?}");
        }
        assert_eq!(
            diagnostics[2].to_string(),
            "integrations.d/contacts.yaml:7:30: error: `emploee` is not defined [undefined-name]"
        );
    }

    #[test]
    fn the_short_format_is_the_one_line_forms_and_the_summary() {
        let (_, text) = printed(CheckFormat::Short);
        insta::assert_snapshot!(text);
    }

    #[test]
    fn the_json_format_is_an_array_of_diagnostics() {
        let (styled, text) = printed(CheckFormat::Json);
        assert_eq!(styled, text, "JSON has no styles");
        insta::assert_snapshot!(text);
    }

    #[test]
    fn the_github_format_is_one_escaped_annotation_per_problem() {
        let (styled, text) = printed(CheckFormat::Github);
        assert_eq!(styled, text, "annotations have no styles");
        insta::assert_snapshot!(text);
    }

    #[test]
    fn the_text_format_is_styled_for_a_terminal_to_keep_or_drop() {
        let (styled, plain) = printed(CheckFormat::Text);
        assert_ne!(styled, plain);
        assert!(styled.starts_with(&format!(
            "{BOLD}integrations.d/contacts.yaml:4:1:{BOLD:#} {ERROR}error:{ERROR:#} "
        )));
    }

    #[test]
    fn an_error_after_a_final_newline_is_shown_on_the_empty_last_line() {
        let file = Path::new("a.yaml");
        let diagnostics = [Diagnostic::error(
            file,
            Position::new(3, 1),
            Code::YamlSyntax,
            "YAML syntax error: did not find expected node content",
        )];
        let sources = HashMap::from([(PathBuf::from(file), SourceText::new("a:\n  - b: [\n"))]);
        let mut out = Vec::new();
        print_diagnostics(&mut out, CheckFormat::Text, &diagnostics, &sources, 1).unwrap();
        let text = anstream::adapter::strip_str(std::str::from_utf8(&out).unwrap()).to_string();
        assert_eq!(
            text,
            "a.yaml:3:1: error: YAML syntax error: did not find expected node content [yaml-syntax]\n  \
             |\n3 |\n  | ^\n1 error, 0 warnings in 1 file\n"
        );
    }

    #[test]
    fn render_lines_up_values_by_their_width_on_a_terminal() {
        let values = [
            ("city".to_owned(), Value::from("東京")),
            ("note".to_owned(), Value::from("ok")),
        ];
        let mut out = Vec::new();
        columns(&mut out, "values", &values).unwrap();
        let text = anstream::adapter::strip_str(std::str::from_utf8(&out).unwrap()).to_string();
        assert_eq!(
            text,
            "       values city  \"東京\"  string\n              note  \"ok\"    string\n"
        );
    }

    #[test]
    fn a_column_is_a_character_and_past_the_end_is_the_end() {
        assert_eq!(character_at("a: 😀 x", 4), 3..7);
        assert_eq!(character_at("a: 😀 x", 5), 7..8);
        assert_eq!(character_at("\tkey", 1), 0..1);
        assert_eq!(character_at("abc", 4), 3..3);
        assert_eq!(character_at("abc", 9), 3..3);
        assert_eq!(character_at("", 1), 0..0);
    }
}
