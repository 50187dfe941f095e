//! How `busbar test` prints: text for people (streamed as cases finish,
//! colored like `check`; the CLI's `anstream` drops the colors when the
//! output is not a terminal or `NO_COLOR` is set), GitHub annotations, and
//! JUnit XML for CI dashboards.

use std::io::{self, Write};

use anstyle::{AnsiColor, Style};

use super::expect::{Failure, Line};
use super::run::{CaseReport, Progress, SuiteReport};
use crate::config::yaml::SourceText;
use crate::report::{CheckFormat, escape_data, escape_property, print_diagnostics};

const ERROR: Style = AnsiColor::Red.on_default().bold();
const RED: Style = AnsiColor::Red.on_default();
const GREEN: Style = AnsiColor::Green.on_default();
const DIM: Style = AnsiColor::BrightBlack.on_default();
const BOLD: Style = Style::new().bold();
const GOOD: Style = AnsiColor::Green.on_default().bold();

/// Output format of `busbar test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TestFormat {
    /// Each case as it finishes, failures with a diff.
    Text,
    /// Text, plus a GitHub Actions annotation at each failure.
    Github,
    /// JUnit XML (on standard output), for CI test dashboards.
    Junit,
}

/// Prints one step of a running suite.
pub fn progress(out: &mut dyn Write, format: TestFormat, event: Progress<'_>) -> io::Result<()> {
    if format == TestFormat::Junit {
        return Ok(());
    }
    match event {
        Progress::File(path) => writeln!(out, "{BOLD}{}{BOLD:#}", path.display()),
        Progress::Case(case, source) => {
            let time = format!("{DIM}({:.2}s){DIM:#}", case.duration.as_secs_f64());
            if case.passed() {
                return writeln!(out, "  {GOOD}✓{GOOD:#} {} {time}", case.name);
            }
            writeln!(out, "  {ERROR}✗ {}{ERROR:#} {time}", case.name)?;
            for failure in &case.failures {
                print_failure(out, source, case, failure)?;
                if format == TestFormat::Github {
                    writeln!(
                        out,
                        "::error file={},line={},col={},title={}::{}",
                        escape_property(&case.file.display().to_string()),
                        failure.position.line,
                        failure.position.column,
                        escape_property(&format!("busbar test: {}", case.name)),
                        escape_data(&plain_failure(failure))
                    )?;
                }
            }
            Ok(())
        }
    }
}

fn print_failure(
    out: &mut dyn Write,
    source: &SourceText,
    case: &CaseReport,
    failure: &Failure,
) -> io::Result<()> {
    let position = failure.position;
    writeln!(
        out,
        "    {BOLD}{}:{}:{}:{BOLD:#} {}",
        case.file.display(),
        position.line,
        position.column,
        failure.message
    )?;
    if let Some(line) = source.line(position.line) {
        writeln!(
            out,
            "      {DIM}{} |{DIM:#} {}",
            position.line,
            line.trim_end()
        )?;
    }
    for line in &failure.lines {
        match line {
            Line::Expected(text) => writeln!(out, "      {RED}- {text}{RED:#}")?,
            Line::Actual(text) => writeln!(out, "      {GREEN}+ {text}{GREEN:#}")?,
            Line::Same(text) => writeln!(out, "        {text}")?,
            Line::Note(text) => writeln!(out, "      {DIM}{text}{DIM:#}")?,
        }
    }
    Ok(())
}

/// A failure as plain text, for annotations and JUnit.
fn plain_failure(failure: &Failure) -> String {
    let mut text = failure.message.clone();
    for line in &failure.lines {
        text.push('\n');
        text.push_str(&match line {
            Line::Expected(t) => format!("- {t}"),
            Line::Actual(t) => format!("+ {t}"),
            Line::Same(t) => format!("  {t}"),
            Line::Note(t) => t.clone(),
        });
    }
    text
}

/// Prints what comes after the cases: problems with files, the summary
/// (text), or the whole JUnit document.
pub fn finish(
    out: &mut dyn Write,
    err: &mut dyn Write,
    format: TestFormat,
    report: &SuiteReport,
) -> io::Result<()> {
    if format == TestFormat::Junit {
        if !report.diagnostics.is_empty() {
            print_diagnostics(
                err,
                CheckFormat::Text,
                &report.diagnostics,
                &report.sources,
                report.test_files.len(),
            )?;
        }
        return junit(out, report);
    }
    if !report.diagnostics.is_empty() {
        let diagnostics_format = match format {
            TestFormat::Github => CheckFormat::Github,
            _ => CheckFormat::Text,
        };
        writeln!(out)?;
        print_diagnostics(
            out,
            diagnostics_format,
            &report.diagnostics,
            &report.sources,
            report.test_files.len(),
        )?;
    }
    if let Some(problem) = report.could_not_run() {
        writeln!(out, "{ERROR}{problem}{ERROR:#}")?;
    }
    writeln!(out)?;
    let files = report
        .cases
        .iter()
        .map(|c| &c.file)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    writeln!(
        out,
        "{DIM}{} case{} from {} file{} in {:.2}s{DIM:#}",
        report.cases.len(),
        if report.cases.len() == 1 { "" } else { "s" },
        files,
        if files == 1 { "" } else { "s" },
        report.duration.as_secs_f64()
    )?;
    let style = if report.failed() > 0 { ERROR } else { GOOD };
    writeln!(
        out,
        "{style}{} passed, {} failed{style:#}",
        report.passed(),
        report.failed()
    )
}

fn junit(out: &mut dyn Write, report: &SuiteReport) -> io::Result<()> {
    let errors = |cases: &[&CaseReport]| cases.iter().filter(|c| c.setup_error).count();
    let failures = |cases: &[&CaseReport]| {
        cases
            .iter()
            .filter(|c| !c.passed() && !c.setup_error)
            .count()
    };
    let all: Vec<&CaseReport> = report.cases.iter().collect();
    let broken_files: Vec<_> = report
        .test_files
        .iter()
        .filter(|f| report.diagnostics.iter().any(|d| &d.file == *f))
        .collect();
    writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(
        out,
        r#"<testsuites name="busbar test" tests="{}" failures="{}" errors="{}" time="{:.3}">"#,
        all.len() + broken_files.len(),
        failures(&all),
        errors(&all) + broken_files.len(),
        report.duration.as_secs_f64()
    )?;
    let mut files: Vec<&std::path::PathBuf> = Vec::new();
    for case in &report.cases {
        if !files.contains(&&case.file) {
            files.push(&case.file);
        }
    }
    for file in files {
        let cases: Vec<&CaseReport> = report.cases.iter().filter(|c| &c.file == file).collect();
        let name = xml(&file.display().to_string());
        let time: f64 = cases.iter().map(|c| c.duration.as_secs_f64()).sum();
        writeln!(
            out,
            r#"  <testsuite name="{name}" tests="{}" failures="{}" errors="{}" time="{time:.3}">"#,
            cases.len(),
            failures(&cases),
            errors(&cases)
        )?;
        for case in cases {
            write!(
                out,
                r#"    <testcase name="{}" classname="{name}" file="{name}" line="{}" time="{:.3}""#,
                xml(&case.name),
                case.position.line,
                case.duration.as_secs_f64()
            )?;
            if case.passed() {
                writeln!(out, "/>")?;
                continue;
            }
            writeln!(out, ">")?;
            let tag = if case.setup_error { "error" } else { "failure" };
            let body: Vec<String> = case
                .failures
                .iter()
                .map(|f| {
                    format!(
                        "{}:{}:{}: {}",
                        case.file.display(),
                        f.position.line,
                        f.position.column,
                        plain_failure(f)
                    )
                })
                .collect();
            writeln!(
                out,
                r#"      <{tag} message="{}">{}</{tag}>"#,
                xml(&case.failures[0].message),
                xml(&body.join("\n\n"))
            )?;
            writeln!(out, "    </testcase>")?;
        }
        writeln!(out, "  </testsuite>")?;
    }
    for file in broken_files {
        let name = xml(&file.display().to_string());
        let body: Vec<String> = report
            .diagnostics
            .iter()
            .filter(|d| &d.file == file)
            .map(|d| d.to_string())
            .collect();
        writeln!(
            out,
            r#"  <testsuite name="{name}" tests="1" failures="0" errors="1" time="0">"#
        )?;
        writeln!(
            out,
            r#"    <testcase name="(the file)" classname="{name}" file="{name}" line="1" time="0">"#
        )?;
        writeln!(
            out,
            r#"      <error message="the test file is malformed">{}</error>"#,
            xml(&body.join("\n"))
        )?;
        writeln!(out, "    </testcase>\n  </testsuite>")?;
    }
    writeln!(out, "</testsuites>")
}

/// Escapes text for XML attributes and content (and drops the control
/// characters XML 1.0 cannot hold).
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            c if (c as u32) < 0x20 && c != '\t' && c != '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_is_escaped() {
        assert_eq!(xml("a<b & \"c\"\n\u{1}"), "a&lt;b &amp; &quot;c&quot;&#10;");
    }
}
