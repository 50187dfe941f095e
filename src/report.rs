//! How the CLI prints diagnostics and dry runs: text for people (with the
//! source line and a caret), JSON for tools, GitHub workflow annotations
//! for CI.
//!
//! Styles are written unconditionally; the CLI wraps stdout in an
//! `anstream::AutoStream`, which drops them when the output is not a
//! terminal or `NO_COLOR` is set.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::PathBuf;

use anstyle::{AnsiColor, Style};
use serde_json::Value;

use crate::config::yaml::SourceText;
use crate::diagnostics::{Diagnostic, Severity};
use crate::mapping::StepStatus;
use crate::render::RenderReport;

const ERROR: Style = AnsiColor::Red.on_default().bold();
const WARNING: Style = AnsiColor::Yellow.on_default().bold();
const DIM: Style = AnsiColor::BrightBlack.on_default();
const BOLD: Style = Style::new().bold();
const GOOD: Style = AnsiColor::Green.on_default().bold();

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
                if format == CheckFormat::Short {
                    continue;
                }
                if let Some(line) = sources.get(&d.file).and_then(|s| s.line(d.position.line)) {
                    let number = d.position.line.to_string();
                    let gutter = " ".repeat(number.len());
                    writeln!(out, "  {DIM}{number} |{DIM:#} {line}")?;
                    let caret_at: String = line
                        .chars()
                        .take(d.position.column.saturating_sub(1))
                        .map(|c| if c == '\t' { '\t' } else { ' ' })
                        .collect();
                    writeln!(out, "  {DIM}{gutter} |{DIM:#} {caret_at}{style}^{style:#}")?;
                }
                if let Some(help) = &d.help {
                    writeln!(out, "  {DIM}= help:{DIM:#} {help}")?;
                }
            }
            summary(out, diagnostics, files)
        }
    }
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
fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// GitHub's escaping for annotation properties.
fn escape_property(text: &str) -> String {
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
    let value_width = shown
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(0)
        .min(60);
    for (i, ((column, value), shown)) in columns.iter().zip(&shown).enumerate() {
        let label = if i == 0 { label } else { "" };
        writeln!(
            out,
            "       {label:<6} {column:<width$}  {shown:<value_width$}  {DIM}{}{DIM:#}",
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
