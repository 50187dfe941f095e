//! The integration language, checked against a corpus of broken files.
//!
//! Every directory `tests/cases/<case>/` is one case: a `README.md` saying
//! what the case is about, one or more `*.yaml` integration files (some
//! cases need several: duplicate ids, conflicting writes, emit cycles) and
//! an insta snapshot, `expected.snap`, of what `busbar check` prints for
//! that directory in its text format (without colours): every diagnostic,
//! its exact `FILE:LINE:COL`, severity, message, code, source line, caret
//! and help, then the summary. File names are relative to the case
//! directory, with `/` separators; `.` is the case directory itself.
//!
//! # Contracts
//!
//! Cases are checked against the repository's real contracts in
//! `schemas/events/`, unless the case directory has its own `contracts/`
//! folder, which is then used instead (for invalid and missing contracts).
//!
//! # Adding a case, or changing what one says
//!
//! Make the directory, write the YAML and a `README.md`, and run
//! `cargo test --test it every_broken_case`: it fails, printing the
//! diagnostics of each case that has no snapshot or a different one, and
//! writes them beside the case as `expected.snap.new` (ignored by git).
//! To accept them, run
//! `INSTA_UPDATE=always cargo test --test it every_broken_case` (or
//! `cargo insta review`, if you have cargo-insta), then read the change
//! with `git diff tests/cases` (or the new `expected.snap`), checking every
//! caret against the line above it, before committing.
//!
//! With `CI` set (or `INSTA_UPDATE=no`) nothing is written, and a
//! mismatch fails as it does everywhere else.

use std::collections::{BTreeSet, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;

use busbar::compile::{self, Compilation};
use busbar::config::{self, ConfigDir};
use busbar::diagnostics::{Code, Diagnostic};
use busbar::report::{CheckFormat, print_diagnostics};

use crate::support::{CliOutput, busbar_cli};

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

/// `path` relative to the case directory `dir` (or else to the
/// repository), with `/` separators, so that snapshots are the same on
/// every machine.
fn relative(dir: &Path, path: &Path) -> PathBuf {
    let relative = path
        .strip_prefix(dir)
        .or_else(|_| path.strip_prefix(manifest_dir()))
        .unwrap_or(path);
    if relative.as_os_str().is_empty() {
        return PathBuf::from(".");
    }
    let parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    PathBuf::from(parts.join("/"))
}

/// What `busbar check --format text` prints for a case, without colours,
/// its paths relative to the case directory.
fn check_output(dir: &Path, case: &ConfigDir, compilation: &Compilation) -> String {
    let diagnostics: Vec<Diagnostic> = compilation
        .diagnostics
        .iter()
        .map(|d| Diagnostic {
            file: relative(dir, &d.file),
            ..d.clone()
        })
        .collect();
    let sources: HashMap<_, _> = case
        .sources()
        .into_iter()
        .map(|(path, source)| (relative(dir, &path), source))
        .collect();
    let mut out = Vec::new();
    print_diagnostics(
        &mut out,
        CheckFormat::Text,
        &diagnostics,
        &sources,
        compilation.files,
    )
    .expect("write to a Vec");
    let text = String::from_utf8(out).expect("UTF-8 output");
    // Messages name contract files by their full path.
    let repository = format!("{}{}", manifest_dir().display(), std::path::MAIN_SEPARATOR);
    anstream::adapter::strip_str(&text)
        .to_string()
        .replace(&repository, "")
}

/// What is wrong with a case apart from its snapshot.
fn case_problems(dir: &Path, compilation: &Compilation) -> Vec<String> {
    let mut problems = Vec::new();
    if !dir.join("README.md").is_file() {
        problems.push("no README.md saying what the case is about".to_owned());
    }
    if compilation.diagnostics.is_empty() {
        problems.push("no diagnostic; a case is a broken file".to_owned());
    }
    for d in &compilation.diagnostics {
        if d.message.contains(['\n', '\r']) {
            let at = relative(dir, &d.file);
            problems.push(format!(
                "{}:{}:{}: the message is not one line",
                at.display(),
                d.position.line,
                d.position.column
            ));
        }
    }
    let has_errors = compilation.errors() > 0;
    if has_errors == compilation.generation.is_some() {
        problems.push(format!(
            "{} errors, yet {} generation",
            compilation.errors(),
            if has_errors { "a" } else { "no" }
        ));
    }
    problems
}

#[test]
fn every_broken_case_gives_exactly_its_expected_diagnostics() {
    let dirs = case_dirs();
    assert!(dirs.len() >= 35, "only {} cases in tests/cases", dirs.len());
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let case = read_case(dir);
        let compilation = compile::compile(&case, 0);
        for problem in case_problems(dir, &compilation) {
            failures.push(format!("case `{name}`: {problem}"));
        }
        let output = check_output(dir, &case, &compilation);
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path(dir);
        settings.set_prepend_module_to_snapshot(false);
        settings.set_omit_expression(true);
        // One case's mismatch must not hide the next ones': insta has
        // printed its diff (and written `expected.snap.new`) when it panics.
        let snapshot = catch_unwind(AssertUnwindSafe(|| {
            settings.bind(|| insta::assert_snapshot!("expected", output));
        }));
        if snapshot.is_err() {
            failures.push(format!(
                "case `{name}`: the output differs from {}",
                dir.join("expected.snap").display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed (see the diffs above; to accept new output, \
         INSTA_UPDATE=always cargo test --test it every_broken_case):\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n")
    );
}

#[test]
fn the_cases_cover_every_diagnostic_code() {
    // The snapshots pin each case's diagnostics, so the codes the compiler
    // gives for the cases are the codes the snapshots hold.
    let covered: BTreeSet<Code> = case_dirs()
        .iter()
        .flat_map(|dir| compile::compile(&read_case(dir), 0).diagnostics)
        .map(|d| d.code)
        .collect();
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

/// Runs `busbar` (in process) from the repository root.
fn busbar(args: &[&str]) -> CliOutput {
    busbar_cli(manifest_dir(), args)
}

#[test]
fn check_on_a_broken_directory_prints_each_problem_on_one_line_and_exits_1() {
    let output = busbar(&[
        "check",
        "tests/cases/undefined-name",
        "--contracts",
        "schemas/events",
    ]);
    let text = &output.stdout;
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
fn check_colours_its_output_only_for_a_terminal() {
    let args = [
        "check",
        "tests/cases/undefined-name",
        "--contracts",
        "schemas/events",
    ];
    let run = |force_colour: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_busbar"));
        command
            .args(args)
            .current_dir(manifest_dir())
            .env_remove("NO_COLOR")
            .env_remove("CLICOLOR_FORCE");
        if force_colour {
            command.env("CLICOLOR_FORCE", "1");
        }
        String::from_utf8(command.output().expect("run busbar").stdout).expect("UTF-8 output")
    };
    // The tests' stdout is a pipe, not a terminal.
    let piped = run(false);
    assert!(!piped.contains('\x1b'), "{piped}");
    let coloured = run(true);
    assert!(coloured.contains('\x1b'), "{coloured}");
    assert_eq!(anstream::adapter::strip_str(&coloured).to_string(), piped);
}

#[test]
fn check_on_the_shipped_integrations_exits_0() {
    let output = busbar(&["check", "integrations.d"]);
    let text = &output.stdout;
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert_eq!(text.trim(), "0 errors, 0 warnings in 3 files");
}

#[test]
fn check_on_a_missing_directory_exits_2() {
    let output = busbar(&["check", "tests/cases/no-such-directory"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = output.stderr;
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
    let json: serde_json::Value = serde_json::from_str(&output.stdout).expect("valid JSON");
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
    let text = &output.stdout;
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
    assert_eq!(output.status.code(), Some(0), "{}", output.stdout);
    assert!(
        output
            .stdout
            .clone()
            .ends_with("0 errors, 2 warnings in 1 file\n")
    );
    let output = busbar(&[&args[..], &["--deny-warnings"]].concat());
    assert_eq!(output.status.code(), Some(1), "{}", output.stdout);
}

#[test]
fn render_shows_the_rows_one_event_would_write() {
    let output = busbar(&["render", "--event", "examples/events/candidate.hired.json"]);
    let text = &output.stdout;
    assert_eq!(output.status.code(), Some(0), "{text}{}", output.stderr);
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
    let json: serde_json::Value = serde_json::from_str(&output.stdout).expect("valid JSON");
    let routes = json["routes"].as_array().expect("routes");
    let integrations: Vec<&str> = routes
        .iter()
        .map(|r| r["integration"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(integrations, ["recruitiq-to-nexus", "recruitiq-to-paylinq"]);
    assert!(routes.iter().all(|r| r["outcome"] == "applied"), "{json:#}");
}
