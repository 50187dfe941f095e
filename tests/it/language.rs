//! The integration language, checked against a corpus of broken files.
//!
//! Every directory `tests/cases/<case>/` is one case: one or more `*.yaml`
//! integration files (some cases need several: duplicate ids, conflicting
//! writes, emit cycles) and a file `expected` listing every diagnostic
//! `busbar check` must give for that directory, and nothing else.
//!
//! # The `expected` format
//!
//! One diagnostic per line, in the order the compiler sorts them (by file,
//! then position):
//!
//! ```text
//! # Comments and blank lines are ignored.
//! a.yaml:12:20: error [undefined-name] `employe` is not defined
//! contracts/nexus/employee.created.json:1:1: error [invalid-contract]
//! .:1:1: warning [no-integrations]
//! ```
//!
//! - `FILE` is relative to the case directory, with `/` separators; `.` is
//!   the case directory itself.
//! - `LINE:COL` are 1-based, columns counting characters.
//! - `SEVERITY` is `error` or `warning`; `CODE` is the stable code.
//! - Anything after `]` is optional: when present, it must appear in the
//!   diagnostic's message (a substring, so messages may be reworded around
//!   it). Codes and positions are matched exactly.
//!
//! # Contracts
//!
//! Cases are checked against the repository's real contracts in
//! `schemas/events/`, unless the case directory has its own `contracts/`
//! folder, which is then used instead (for invalid and missing contracts).
//!
//! # Adding a case
//!
//! Make the directory, write the YAML and an empty `expected`, and run
//! `BUSBAR_BLESS=1 cargo test --test it every_broken_case`: every failing
//! case's `expected` is rewritten with what the compiler says (comments and
//! message substrings of lines that still match are kept). Then check every
//! position by hand against the file before committing it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use busbar::compile::{self, Compilation};
use busbar::config::{self, ConfigDir};
use busbar::diagnostics::{Code, Diagnostic};

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn cases_dir() -> PathBuf {
    manifest_dir().join("tests").join("cases")
}

/// Every case directory, sorted by name.
fn case_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("tests/cases exists")
        .map(|entry| entry.expect("readable tests/cases").path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// Reads a case directory the way `check` does, with its own contracts or
/// the repository's.
fn read_case(dir: &Path) -> ConfigDir {
    let own = dir.join("contracts");
    let contracts = if own.is_dir() {
        own
    } else {
        manifest_dir().join("schemas").join("events")
    };
    config::read_directory(dir, Some(&contracts))
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()))
}

/// One line of an `expected` file.
#[derive(Debug, Clone)]
struct Expected {
    /// `FILE:LINE:COL: SEVERITY [CODE]`
    head: String,
    /// Text the message must contain (may be empty).
    message: String,
    code: String,
}

fn parse_expected(text: &str, file: &Path) -> Vec<Expected> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let end = line.find(']').unwrap_or_else(|| {
                panic!(
                    "{}: `{line}` is not `FILE:LINE:COL: SEVERITY [CODE] message`",
                    file.display()
                )
            });
            let head = &line[..=end];
            let code = head
                .rsplit_once('[')
                .map(|(_, code)| code.trim_end_matches(']').to_owned())
                .unwrap_or_default();
            Expected {
                head: head.to_owned(),
                message: line[end + 1..].trim().to_owned(),
                code,
            }
        })
        .collect()
}

/// A diagnostic as an `expected` line head, its file relative to `dir`.
fn head(dir: &Path, diagnostic: &Diagnostic) -> String {
    let file = match diagnostic.file.strip_prefix(dir) {
        Ok(relative) if relative.as_os_str().is_empty() => ".".to_owned(),
        Ok(relative) => relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/"),
        Err(_) => diagnostic.file.display().to_string(),
    };
    format!(
        "{file}:{}:{}: {} [{}]",
        diagnostic.position.line, diagnostic.position.column, diagnostic.severity, diagnostic.code
    )
}

fn matches(expected: &Expected, actual_head: &str, actual: &Diagnostic) -> bool {
    expected.head == actual_head && actual.message.contains(&expected.message)
}

/// A line diff of expected against actual (longest common subsequence),
/// or `None` when they agree.
fn diff(expected: &[Expected], actual: &[(String, &Diagnostic)]) -> Option<String> {
    let (n, m) = (expected.len(), actual.len());
    // lcs[i][j]: the longest common subsequence of expected[i..], actual[j..].
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if matches(&expected[i], &actual[j].0, actual[j].1) {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    if lcs[0][0] == n && n == m {
        return None;
    }
    let mut out = String::new();
    let (mut i, mut j) = (0, 0);
    let actual_line = |j: usize| format!("{} {}", actual[j].0, actual[j].1.message);
    while i < n || j < m {
        if i < n && j < m && matches(&expected[i], &actual[j].0, actual[j].1) {
            out.push_str(&format!("      {}\n", actual_line(j)));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("    + {}\n", actual_line(j)));
            j += 1;
        } else {
            let e = &expected[i];
            out.push_str(&format!("    - {} {}\n", e.head, e.message));
            i += 1;
        }
    }
    Some(out)
}

/// Rewrites a case's `expected` with what the compiler says, keeping its
/// comments and the message substrings of lines that still match.
fn bless(file: &Path, old_text: &str, old: &[Expected], actual: &[(String, &Diagnostic)]) {
    let mut text: String = old_text
        .lines()
        .take_while(|line| line.trim().is_empty() || line.trim_start().starts_with('#'))
        .map(|line| format!("{line}\n"))
        .collect();
    for (head, diagnostic) in actual {
        let kept = old.iter().find(|e| {
            e.head == *head && !e.message.is_empty() && diagnostic.message.contains(&e.message)
        });
        match kept {
            Some(e) => text.push_str(&format!("{head} {}\n", e.message)),
            None => text.push_str(&format!("{head}\n")),
        }
    }
    std::fs::write(file, text).expect("write expected");
}

#[test]
fn every_broken_case_gives_exactly_its_expected_diagnostics() {
    let blessing = std::env::var_os("BUSBAR_BLESS").is_some();
    let mut failures = Vec::new();
    let dirs = case_dirs();
    assert!(dirs.len() >= 35, "only {} cases in tests/cases", dirs.len());
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let expected_file = dir.join("expected");
        let expected_text = std::fs::read_to_string(&expected_file).unwrap_or_default();
        let expected = parse_expected(&expected_text, &expected_file);
        let compilation = compile::compile(&read_case(dir), 0);
        let actual: Vec<(String, &Diagnostic)> = compilation
            .diagnostics
            .iter()
            .map(|d| (head(dir, d), d))
            .collect();
        for (head, diagnostic) in &actual {
            if diagnostic.message.contains(['\n', '\r']) {
                failures.push(format!(
                    "case `{name}`: {head}: the message is not one line"
                ));
            }
        }
        if let Some(diff) = diff(&expected, &actual) {
            failures.push(format!(
                "case `{name}` ({}):\n{diff}",
                expected_file.display()
            ));
            if blessing {
                bless(&expected_file, &expected_text, &expected, &actual);
            }
        }
        let has_errors = compilation.errors() > 0;
        if has_errors == compilation.generation.is_some() {
            failures.push(format!(
                "case `{name}`: {} errors, yet {} generation",
                compilation.errors(),
                if has_errors { "a" } else { "no" }
            ));
        }
        if expected.is_empty() {
            failures.push(format!(
                "case `{name}`: `expected` lists no diagnostic; a case is a broken file"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed (`-` expected but not given, `+` given but not expected):\n\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n")
    );
}

#[test]
fn the_cases_cover_every_diagnostic_code() {
    let mut covered = BTreeSet::new();
    for dir in case_dirs() {
        let file = dir.join("expected");
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for line in parse_expected(&text, &file) {
            let code = Code::ALL
                .iter()
                .find(|c| c.as_str() == line.code)
                .unwrap_or_else(|| panic!("{}: unknown code `{}`", file.display(), line.code));
            covered.insert(*code);
        }
    }
    // `io` is covered by `not-utf8`: a file that is not UTF-8 cannot be read
    // as text, which stays true when the tests run as root (unlike a file
    // without read permission).
    // The database codes need a target database's catalog, which a case
    // directory cannot hold; tests/it/config_tests.rs covers them against
    // SQLite and PostgreSQL.
    let missing: Vec<&str> = Code::ALL
        .iter()
        .filter(|c| !covered.contains(c) && !Code::DATABASE.contains(c))
        .map(|c| c.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "no case in tests/cases gives: {}",
        missing.join(", ")
    );
}

#[test]
fn the_shipped_integrations_compile_cleanly() {
    let dir = manifest_dir().join("integrations.d");
    let Compilation {
        generation,
        diagnostics,
        files,
    } = compile::compile(&read_case(&dir), 1);
    assert_eq!(
        diagnostics,
        vec![],
        "the shipped integrations have problems"
    );
    assert_eq!(files, 3);
    let generation = generation.expect("a generation");
    assert_eq!(generation.routes("recruitiq", "candidate.hired").count(), 2);
}

/// Runs the `busbar` binary from the repository root.
fn busbar(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_busbar"))
        .args(args)
        .current_dir(manifest_dir())
        .env("NO_COLOR", "1")
        .output()
        .expect("run busbar")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
}

#[test]
fn check_on_a_broken_directory_prints_each_problem_on_one_line_and_exits_1() {
    let output = busbar(&[
        "check",
        "tests/cases/undefined-name",
        "--contracts",
        "schemas/events",
    ]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    for line in [
        "tests/cases/undefined-name/a.yaml:11:22: error: `candidate` is not defined [undefined-name]",
        "tests/cases/undefined-name/a.yaml:18:28: error: `employe` is not defined [undefined-name]",
        "tests/cases/undefined-name/a.yaml:19:29: error: `evnt` is not defined [undefined-name]",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line `{line}` in:\n{text}"
        );
    }
    assert_eq!(
        text.lines().last(),
        Some("3 errors, 0 warnings in 1 file"),
        "{text}"
    );
    // The text format shows the source line under each problem.
    assert!(text.contains("employee_id: \"{{ employe.id }}\""), "{text}");
}

#[test]
fn check_on_the_shipped_integrations_exits_0() {
    let output = busbar(&["check", "integrations.d"]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert_eq!(text.trim(), "0 errors, 0 warnings in 3 files");
}

#[test]
fn check_on_a_missing_directory_exits_2() {
    let output = busbar(&["check", "tests/cases/no-such-directory"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no-such-directory"), "{stderr}");
}

#[test]
fn check_json_is_an_array_of_diagnostics() {
    let output = busbar(&[
        "check",
        "tests/cases/duplicate-id-across-files",
        "--contracts",
        "schemas/events",
        "--format",
        "json",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("valid JSON");
    let items = json.as_array().expect("an array");
    assert_eq!(items.len(), 2, "{json:#}");
    for item in items {
        for field in ["file", "line", "column", "severity", "code", "message"] {
            assert!(item.get(field).is_some(), "no `{field}` in {item}");
        }
    }
    assert_eq!(
        items[0]["file"],
        "tests/cases/duplicate-id-across-files/b.yaml"
    );
    assert_eq!(items[0]["line"], 2);
    assert_eq!(items[0]["column"], 5);
    assert_eq!(items[0]["severity"], "error");
    assert_eq!(items[0]["code"], "duplicate-id");
}

#[test]
fn check_github_prints_workflow_annotations() {
    let output = busbar(&[
        "check",
        "tests/cases/key-not-in-values",
        "--contracts",
        "schemas/events",
        "--format",
        "github",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].starts_with(
            "::error file=tests/cases/key-not-in-values/a.yaml,line=8,col=32,title=key-not-in-values::"
        ),
        "{text}"
    );
}

#[test]
fn deny_warnings_turns_a_warnings_only_directory_into_a_failure() {
    let args = [
        "check",
        "tests/cases/missing-contract",
        "--contracts",
        "schemas/events",
    ];
    let output = busbar(&args);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert!(stdout(&output).ends_with("0 errors, 2 warnings in 1 file\n"));
    let output = busbar(&[&args[..], &["--deny-warnings"]].concat());
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
}

#[test]
fn render_shows_the_rows_one_event_would_write() {
    let output = busbar(&["render", "--event", "examples/events/candidate.hired.json"]);
    let text = stdout(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("hris.employees"), "{text}");
    assert!(text.contains("⟨employee.id⟩"), "{text}");
}

#[test]
fn render_json_lists_the_applied_routes() {
    let output = busbar(&[
        "render",
        "--event",
        "examples/events/candidate.hired.json",
        "--format",
        "json",
    ]);
    assert_eq!(output.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("valid JSON");
    let routes = json["routes"].as_array().expect("routes");
    let integrations: Vec<&str> = routes
        .iter()
        .map(|r| r["integration"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(integrations, ["recruitiq-to-nexus", "recruitiq-to-paylinq"]);
    assert!(routes.iter().all(|r| r["outcome"] == "applied"), "{json:#}");
}
