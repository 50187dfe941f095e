//! The command line's own paths, in process (`support::busbar_cli`): what
//! `render`, `schema`, `migrate` and clap's answers print, and their exit
//! statuses (0 done, 1 problems found, 2 could not run). `check` and `test`
//! have theirs in language.rs and config_tests.rs.

use std::path::Path;

use serde_json::{Value, json};

use crate::support::{CliOutput, busbar_cli, root};

/// The example event, changed by `edit`, written to `dir/event.json`.
fn event_file(dir: &Path, edit: impl FnOnce(&mut Value)) -> String {
    let example = std::fs::read_to_string(root().join("examples/events/candidate.hired.json"))
        .expect("the example event");
    let mut event: Value = serde_json::from_str(&example).expect("JSON");
    edit(&mut event);
    let path = dir.join("event.json");
    std::fs::write(&path, serde_json::to_string_pretty(&event).unwrap()).expect("write");
    path.display().to_string()
}

/// `busbar render` from the repository root, on the shipped integrations.
fn render(args: &[&str]) -> CliOutput {
    let mut all = vec!["render"];
    all.extend_from_slice(args);
    busbar_cli(&root(), &all)
}

#[test]
fn render_says_why_an_event_cannot_be_rendered() {
    let dir = tempfile::tempdir().unwrap();

    // No such file: could not run.
    let missing = render(&["--event", "nowhere.json"]);
    assert_eq!(missing.status.code(), Some(2), "{}", missing.show());
    assert!(
        missing
            .stderr
            .contains("cannot read the event file nowhere.json"),
        "{}",
        missing.show()
    );

    // Not YAML or JSON: the problem at its line and column.
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\"id\": \"x\",\n  \"source\": [\n").unwrap();
    let output = render(&["--event", &broken.display().to_string()]);
    assert_eq!(output.status.code(), Some(1), "{}", output.show());
    assert!(output.stderr.contains("broken.json:"), "{}", output.show());
    assert!(output.stdout.is_empty(), "{}", output.show());

    // Not an event: every violation, by pointer.
    let path = event_file(dir.path(), |event| {
        event["id"] = json!("not-a-uuid");
        event.as_object_mut().unwrap().remove("source");
    });
    let output = render(&["--event", &path]);
    assert_eq!(output.status.code(), Some(1), "{}", output.show());
    let err = &output.stderr;
    assert!(err.contains("not a valid event:"), "{}", output.show());
    assert!(err.contains("  /id: "), "{}", output.show());
    assert!(err.contains("source"), "{}", output.show());

    // Data that breaks its contract: rendered, but the exit says publishing
    // would refuse it.
    let path = event_file(dir.path(), |event| {
        event["data"]["candidate"]["firstName"] = json!("");
    });
    let output = render(&["--event", &path]);
    assert_eq!(output.status.code(), Some(1), "{}", output.show());
    let err = &output.stderr;
    assert!(
        err.contains("publishing would refuse this event: its data breaks the contract"),
        "{}",
        output.show()
    );
    assert!(err.contains("/candidate/firstName"), "{}", output.show());
    assert!(
        output.stdout.contains("hris.employees"),
        "{}",
        output.show()
    );

    // An integration that does not exist: could not run.
    let output = render(&[
        "--event",
        "examples/events/candidate.hired.json",
        "--integration",
        "nope",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", output.show());
    assert!(
        output.stderr.contains("there is no integration `nope`"),
        "{}",
        output.show()
    );
}

#[test]
fn render_of_integrations_that_do_not_compile_shows_their_errors_only() {
    let dir = tempfile::tempdir().unwrap();
    let integrations = dir.path().join("integrations.d");
    std::fs::create_dir_all(&integrations).unwrap();
    std::fs::write(
        integrations.join("broken.yaml"),
        "source: recruitiq\ntarget: nexus\nroutes:\n  - on: candidate.hired\n    steps:\n      - upsert: hris.employees\n        key: [id]\n        values:\n          id: \"{{ nothing.here }}\"\n",
    )
    .unwrap();
    let event = root().join("examples/events/candidate.hired.json");
    let output = busbar_cli(
        dir.path(),
        &[
            "render",
            "--event",
            &event.display().to_string(),
            "--dir",
            "integrations.d",
            "--contracts",
            &root().join("schemas/events").display().to_string(),
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{}", output.show());
    let err = &output.stderr;
    assert!(
        err.contains("the integrations do not compile, so there is nothing to render:"),
        "{}",
        output.show()
    );
    assert!(
        err.contains("integrations.d/broken.yaml:9:"),
        "the error at its file, line and column: {}",
        output.show()
    );
    assert!(
        err.contains("1 error, 0 warnings in 1 file"),
        "{}",
        output.show()
    );
}

#[test]
fn render_json_is_one_document_with_each_routes_outcome() {
    let output = render(&[
        "--event",
        "examples/events/candidate.hired.json",
        "--format",
        "json",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", output.show());
    let report: Value = serde_json::from_str(&output.stdout).expect("one JSON document");
    let routes = report["routes"].as_array().expect("routes");
    assert!(!routes.is_empty(), "{report}");
    for route in routes {
        assert_ne!(route["outcome"], "failed", "{route}");
    }
}

#[test]
fn schema_prints_the_integration_files_json_schema() {
    let output = busbar_cli(&root(), &["schema"]);
    assert_eq!(output.status.code(), Some(0), "{}", output.show());
    let schema: Value = serde_json::from_str(&output.stdout).expect("JSON");
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    let shipped: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("schemas/integration.schema.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(schema, shipped, "the embedded schema is the shipped file");
}

#[test]
fn help_and_version_go_to_stdout_and_a_wrong_argument_exits_2() {
    let version = busbar_cli(&root(), &["--version"]);
    assert_eq!(version.status.code(), Some(0), "{}", version.show());
    assert_eq!(
        version.stdout.trim(),
        format!("busbar {}", env!("CARGO_PKG_VERSION"))
    );

    let help = busbar_cli(&root(), &["check", "--help"]);
    assert_eq!(help.status.code(), Some(0), "{}", help.show());
    assert!(help.stdout.contains("--deny-warnings"), "{}", help.show());

    let wrong = busbar_cli(&root(), &["check", "--no-such-flag"]);
    assert_eq!(wrong.status.code(), Some(2), "{}", wrong.show());
    assert!(wrong.stderr.contains("--no-such-flag"), "{}", wrong.show());
    assert!(wrong.stdout.is_empty(), "{}", wrong.show());
}

#[test]
fn migrate_makes_a_database_that_check_can_read_the_example_platform_from() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/ci.db", dir.path().display());
    let output = busbar_cli(
        &root(),
        &["migrate", "--example-platform", "--database-url", &url],
    );
    assert_eq!(output.status.code(), Some(0), "{}", output.show());
    assert!(
        output.stdout.contains("migrations applied to sqlite://"),
        "{}",
        output.show()
    );
    // Twice is fine: migrations are applied once.
    let again = busbar_cli(
        &root(),
        &["migrate", "--example-platform", "--database-url", &url],
    );
    assert_eq!(again.status.code(), Some(0), "{}", again.show());
    // The shipped integrations fit the tables it made.
    let check = busbar_cli(
        &root(),
        &["check", "integrations.d", "--database-url", &url],
    );
    assert_eq!(check.status.code(), Some(0), "{}", check.show());
    assert!(
        check.stdout.contains("0 errors, 0 warnings"),
        "{}",
        check.show()
    );
    // Without the example platform, the same check finds no tables.
    let bare = format!("sqlite://{}/bare.db", dir.path().display());
    let output = busbar_cli(&root(), &["migrate", "--database-url", &bare]);
    assert_eq!(output.status.code(), Some(0), "{}", output.show());
    let check = busbar_cli(
        &root(),
        &["check", "integrations.d", "--database-url", &bare],
    );
    assert_eq!(check.status.code(), Some(1), "{}", check.show());
    assert!(check.stdout.contains("unknown-table"), "{}", check.show());
}
