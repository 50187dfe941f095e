//! Configs tested like code: `busbar test` (the config test runner) and
//! `busbar check --database-url` (checks against the target catalog).
//!
//! The runner is tested through the real binary, on small directories made
//! here: a passing suite, a failing case and the diff it prints, a
//! malformed test file, a case about a dead letter, exit codes and JUnit.
//! The shipped `integrations.d/tests/` run through the library on both
//! databases. The database checks run against SQLite and PostgreSQL
//! databases that lack a column, a unique index and a table, and whose
//! types do not fit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{CliOutput, busbar_cli, on_both_databases, root};

/// Runs `busbar` (in process) in `dir`.
fn busbar(dir: &Path, args: &[&str]) -> CliOutput {
    busbar_cli(dir, args)
}

/// A project directory: `integrations.d/` with files, and contracts in
/// `schemas/events/`.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    /// The shop project the `busbar test` tests share.
    fn new() -> Project {
        let project = Project::empty();
        project.write("integrations.d/shop-to-crm.yaml", SHOP_TO_CRM);
        project.write("integrations.d/tests/schema.sql", SCHEMA);
        project.write("schemas/events/shop/order.placed.json", ORDER_PLACED);
        project
    }

    /// A project with no files yet.
    fn empty() -> Project {
        Project {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, relative: &str, text: &str) {
        let path = self.dir.path().join(relative);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    fn test(&self, args: &[&str]) -> CliOutput {
        let mut all = vec!["test", "integrations.d"];
        all.extend_from_slice(args);
        busbar(self.path(), &all)
    }
}

const SHOP_TO_CRM: &str = "\
source: shop
target: crm
routes:
  - on: order.placed
    steps:
      - upsert: customers
        key: [email]
        values:
          email: \"{{ data.email | lower }}\"
          name: $.data.name
          orders: $.data.count
        as: customer
      - emit: customer.updated
        data: { email: \"{{ customer.email }}\" }
";

/// Valid on both databases.
const SCHEMA: &str = "CREATE TABLE customers (email TEXT PRIMARY KEY, name TEXT, orders INTEGER);";

const ORDER_PLACED: &str = r#"{
  "type": "object",
  "properties": {
    "email": { "type": "string" },
    "name": { "type": "string" },
    "count": { "type": ["integer", "string"] }
  }
}"#;

const PASSING: &str = "\
schema: schema.sql
defaults: { source: shop, event: order.placed }
cases:
  - name: an order makes a customer
    publish: { data: { email: Ada@Example.com, name: Ada, count: 2 } }
    expect:
      rows:
        customers: [{ email: ada@example.com, name: Ada, orders: 2 }]
      events:
        - { event: customer.updated, source: crm, data: { email: ada@example.com } }
      deliveries:
        - { integration: shop-to-crm, status: delivered }

  - name: a value that does not fit its column is a dead letter
    publish: { data: { email: bob@example.com, name: Bob, count: many } }
    expect:
      rows: { customers: { count: 0 } }
      deliveries:
        - integration: shop-to-crm
          status: dead
          reason: 'column `orders`: cannot store \"many\"'
";

#[test]
fn a_passing_suite_prints_each_case_and_exits_0() {
    let project = Project::new();
    project.write("integrations.d/tests/orders.test.yaml", PASSING);
    let output = project.test(&[]);
    let text = &output.stdout;
    assert_eq!(output.status.code(), Some(0), "{text}{}", output.stderr);
    assert!(
        text.contains("integrations.d/tests/orders.test.yaml\n"),
        "{text}"
    );
    assert!(text.contains("  ✓ an order makes a customer ("), "{text}");
    assert!(
        text.contains("  ✓ a value that does not fit its column is a dead letter ("),
        "{text}"
    );
    assert!(text.ends_with("2 passed, 0 failed\n"), "{text}");
}

#[test]
fn a_failing_case_shows_a_diff_at_the_expectation_and_exits_1() {
    let project = Project::new();
    project.write(
        "integrations.d/tests/orders.test.yaml",
        "\
schema: schema.sql
cases:
  - name: the customer keeps the name from the order
    publish: { source: shop, event: order.placed, data: { email: ada@example.com, name: Ada, count: 2 } }
    expect:
      rows:
        customers:
          - { email: ada@example.com, name: Grace, orders: 2 }
",
    );
    let output = project.test(&[]);
    let text = &output.stdout;
    assert_eq!(output.status.code(), Some(1), "{text}");
    let expected = "\
  ✗ the customer keeps the name from the order (";
    assert!(text.contains(expected), "{text}");
    let diff = "\
    integrations.d/tests/orders.test.yaml:8:13: no row of `customers` matches this one
      8 |           - { email: ada@example.com, name: Grace, orders: 2 }
      - expected, + the closest row (`customers` holds 1 row):
        email: \"ada@example.com\"
      - name: \"Grace\"
      + name: \"Ada\"
        orders: 2
";
    assert!(text.contains(diff), "the diff is not as expected:\n{text}");
    assert!(text.ends_with("0 passed, 1 failed\n"), "{text}");
}

#[test]
fn an_unexpected_dead_letter_fails_the_case_with_its_reason() {
    let project = Project::new();
    project.write(
        "integrations.d/tests/orders.test.yaml",
        "\
schema: schema.sql
cases:
  - name: a bad count
    publish: { source: shop, event: order.placed, data: { email: bob@example.com, count: many } }
    expect:
      rows: { customers: { count: 0 } }
",
    );
    let output = project.test(&[]);
    let text = &output.stdout;
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("integrations.d/tests/orders.test.yaml:3:5: a delivery of `shop-to-crm` went to dead letter"),
        "{text}"
    );
    assert!(
        text.contains("+ shop-to-crm (order.placed): dead — "),
        "{text}"
    );
    assert!(
        text.contains("cannot store \"many\" as INTEGER: not a whole number"),
        "{text}"
    );
}

#[test]
fn a_malformed_test_file_gets_path_line_col_errors_and_exits_2() {
    let project = Project::new();
    project.write(
        "integrations.d/tests/orders.test.yaml",
        "\
cases:
  - name: typo
    publish: { source: shop, event: order.placed }
    expcet:
      rows: {}
  - name: bad table and pattern
    publish: { source: shop, event: order.placed }
    expect:
      rows:
        Customers: []
      deliveries:
        - { integration: shop-to-crn, reason: '(' }
",
    );
    let output = busbar(project.path(), &["test", "integrations.d"]);
    let text = &output.stdout;
    assert_eq!(output.status.code(), Some(2), "{text}");
    for line in [
        "integrations.d/tests/orders.test.yaml:4:5: error: unknown key `expcet` [unknown-key]",
        "  = help: did you mean `expect`?",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    // Once the schema is satisfied, the names are checked too.
    project.write(
        "integrations.d/tests/orders.test.yaml",
        "\
cases:
  - name: bad table and pattern
    publish: { source: shop, event: order.placed }
    expect:
      rows:
        Customers: []
      deliveries:
        - { integration: shop-to-crn, reason: '(' }
",
    );
    let output = busbar(project.path(), &["test", "integrations.d"]);
    let text = &output.stdout;
    assert_eq!(output.status.code(), Some(2), "{text}");
    for line in [
        "integrations.d/tests/orders.test.yaml:6:9: error: table `Customers`: `Customers` is not a valid SQL identifier",
        "integrations.d/tests/orders.test.yaml:8:26: error: there is no integration `shop-to-crn` [invalid-value]",
        "  = help: did you mean `shop-to-crm`?",
        "integrations.d/tests/orders.test.yaml:8:47: error: `reason` is not a valid regular expression: unclosed group [invalid-value]",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
}

#[test]
fn exit_codes_say_passed_failed_or_could_not_run() {
    let project = Project::new();
    // No test files at all: could not run.
    assert_eq!(project.test(&[]).status.code(), Some(2));
    project.write("integrations.d/tests/orders.test.yaml", PASSING);
    assert_eq!(project.test(&[]).status.code(), Some(0));
    // A filter that matches one case runs only that one.
    let output = project.test(&["--filter", "makes a customer"]);
    assert!(
        output.stdout.ends_with("1 passed, 0 failed\n"),
        "{}",
        output.stdout
    );
    // A filter that matches no case: could not run, and it says why
    // (a typo in a CI job's filter must not pass with nothing run).
    let output = project.test(&["--filter", "makes a customre"]);
    assert_eq!(output.status.code(), Some(2), "{}", output.stdout);
    assert!(
        output
            .stdout
            .clone()
            .contains("no test case matches --filter `makes a customre` (2 cases in 1 file)"),
        "{}",
        output.stdout
    );
    // Integrations that do not compile: could not run.
    project.write(
        "integrations.d/broken.yaml",
        "source: shop\ntarget: crm\nroutes: 3\n",
    );
    let output = project.test(&[]);
    assert_eq!(output.status.code(), Some(2), "{}", output.stdout);
    assert!(
        output
            .stdout
            .clone()
            .contains("integrations.d/broken.yaml:3:9: error:"),
        "{}",
        output.stdout
    );
    // A directory that does not exist.
    assert_eq!(
        busbar(project.path(), &["test", "nowhere"]).status.code(),
        Some(2)
    );
}

#[test]
fn junit_output_lists_every_case_with_its_failures() {
    let project = Project::new();
    let failing = PASSING.replace("name: Ada, orders: 2", "name: Grace, orders: 2");
    project.write("integrations.d/tests/orders.test.yaml", &failing);
    let output = project.test(&["--format", "junit"]);
    let xml = output.stdout.clone();
    assert_eq!(output.status.code(), Some(1), "{xml}");
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"busbar test\" tests=\"2\" failures=\"1\" errors=\"0\""), "{xml}");
    assert!(
        xml.contains(r#"<testcase name="an order makes a customer" classname="integrations.d/tests/orders.test.yaml" file="integrations.d/tests/orders.test.yaml" line="4""#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<failure message="no row of `customers` matches this one">"#),
        "{xml}"
    );
    assert!(
        xml.contains("- name: &quot;Grace&quot;&#10;+ name: &quot;Ada&quot;"),
        "{xml}"
    );
    assert!(xml.trim_end().ends_with("</testsuites>"), "{xml}");
}

#[test]
fn the_shipped_config_tests_fail_with_a_diff_when_a_mapping_breaks() {
    let project = tempfile::tempdir().expect("temp dir");
    let copy = |from: &Path, to: &Path| {
        for entry in walk(from) {
            let target = to.join(entry.strip_prefix(from).expect("inside"));
            std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
            std::fs::copy(&entry, &target).expect("copy");
        }
    };
    copy(
        &root().join("integrations.d"),
        &project.path().join("integrations.d"),
    );
    copy(&root().join("schemas"), &project.path().join("schemas"));
    let file = project
        .path()
        .join("integrations.d/recruitiq-to-nexus.yaml");
    let text = std::fs::read_to_string(&file).expect("read");
    std::fs::write(
        &file,
        text.replace("email | trim | lower }}", "email | trim }}"),
    )
    .expect("write");
    let output = busbar(
        project.path(),
        &["test", "integrations.d", "--filter", "becomes an employee"],
    );
    let text = &output.stdout;
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains(
            "- email: \"ada.lovelace@example.com\"\n      + email: \"Ada.Lovelace@Example.com\""
        ),
        "{text}"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The shipped `integrations.d/tests/` pass, on SQLite and on PostgreSQL.
mod the_shipped_config_tests_pass {
    use super::*;
    use busbar::testing::{self, TestOptions};

    async fn run(database_url: Option<String>) {
        let options = TestOptions {
            dir: root().join("integrations.d"),
            contracts: None,
            database_url,
            schema: Vec::new(),
            filter: None,
            timeout: Duration::from_secs(30),
        };
        let report = testing::run(&options, &mut |_| {})
            .await
            .expect("the suite runs");
        assert!(report.diagnostics.is_empty(), "{:?}", report.diagnostics);
        let failed: Vec<_> = report.cases.iter().filter(|c| !c.passed()).collect();
        assert!(failed.is_empty(), "failed: {failed:#?}");
        assert!(report.cases.len() >= 8, "{} cases", report.cases.len());
        assert_eq!(report.exit_code(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        run(None).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(
        not(postgres_tests),
        ignore = "PostgreSQL suite skipped: TEST_DATABASE_URL was not set when the tests were built"
    )]
    async fn postgres() {
        run(Some(
            std::env::var("TEST_DATABASE_URL").expect("TEST_DATABASE_URL"),
        ))
        .await;
    }
}

const PEOPLE: &str = "\
source: shop
target: crm
routes:
  - on: person.joined
    steps:
      - find: test.teams
        where: { name: $.data.team }
      - upsert: test.people
        key: [email]
        values:
          email: $.data.email
          phone: $.data.phone
          age: forty
        as: person
      - update: test.people
        where: { email: $.data.email }
        set:
          age: $.data.admin
          nickname: { path: $.data.name, default: 7 }
order_by: $.data.email
";

const PERSON_JOINED: &str = r#"{
  "type": "object",
  "required": ["email"],
  "properties": {
    "email": { "type": "string", "format": "email" },
    "phone": { "type": "string" },
    "name": { "type": "string" },
    "team": { "type": "string" },
    "admin": { "type": "boolean" }
  }
}"#;

on_both_databases! {
    /// A database that lacks a table and a column, has no unique index for
    /// the key, types that do not fit, and a NOT NULL column nobody writes:
    /// `check --database-url` reports each at the name that causes it.
    async fn check_with_a_database_finds_what_the_files_alone_cannot(db: TestDb) {
        if db.dialect() == busbar::store::Dialect::Postgres {
            db.execute("CREATE SCHEMA test").await;
        }
        db.execute("CREATE TABLE test.people (email TEXT NOT NULL, nickname TEXT, age INTEGER, team TEXT NOT NULL)")
            .await;
        let project = Project::empty();
        project.write("integrations.d/people.yaml", PEOPLE);
        project.write("schemas/events/shop/person.joined.json", PERSON_JOINED);

        // The files alone are fine.
        let output = busbar(project.path(), &["check", "integrations.d", "--format", "short"]);
        assert_eq!(output.status.code(), Some(0), "{}", output.stdout);

        let output = busbar(
            project.path(),
            &["check", "integrations.d", "--format", "short", "--database-url", &db.url],
        );
        let text = &output.stdout;
        assert_eq!(output.status.code(), Some(1), "{text}{}", output.stderr);
        // Column types are named as the database spells them: SQLite keeps
        // the declared `INTEGER`, PostgreSQL says `integer`.
        let text = text.replace("(INTEGER)", "(integer)");
        let expected = "\
integrations.d/people.yaml:6:15: error: table `test.teams` does not exist in the database [unknown-table]
integrations.d/people.yaml:8:17: error: this upsert does not write column `team` of `test.people`, which is NOT NULL without a default: every insert would fail [missing-not-null]
integrations.d/people.yaml:9:15: error: no unique index or constraint on exactly (email) in `test.people`: the upsert's ON CONFLICT needs one [no-unique-key]
integrations.d/people.yaml:12:11: error: table `test.people` has no column `phone` [unknown-column]
integrations.d/people.yaml:13:16: error: \"forty\" cannot be stored in column `age` (integer): not a whole number [type-mismatch]
integrations.d/people.yaml:18:16: error: `$.data.admin` is a boolean (per the contract schemas/events/shop/person.joined.json), which column `age` (integer) cannot hold [type-mismatch]
6 errors, 0 warnings in 1 file
";
        assert_eq!(text, expected);

        // JSON output carries the same codes, for tools.
        let output = busbar(
            project.path(),
            &["check", "integrations.d", "--format", "json", "--database-url", &db.url],
        );
        let json: serde_json::Value = serde_json::from_str(&output.stdout).expect("JSON");
        let codes: Vec<&str> = json
            .as_array()
            .expect("an array")
            .iter()
            .filter_map(|d| d["code"].as_str())
            .collect();
        assert_eq!(
            codes,
            ["unknown-table", "missing-not-null", "no-unique-key", "unknown-column", "type-mismatch", "type-mismatch"]
        );

        // Fix the database: the same files pass.
        db.execute("CREATE UNIQUE INDEX people_email ON test.people (email)").await;
        db.execute("ALTER TABLE test.people ADD COLUMN phone TEXT").await;
        db.execute("CREATE TABLE test.teams (name TEXT)").await;
        db.execute("ALTER TABLE test.people RENAME COLUMN age TO age_text").await;
        db.execute("ALTER TABLE test.people ADD COLUMN age TEXT").await;
        let output = busbar(
            project.path(),
            &["check", "integrations.d", "--format", "short", "--database-url", &db.url],
        );
        assert_eq!(
            output.stdout,
            "integrations.d/people.yaml:8:17: error: this upsert does not write column `team` of `test.people`, which is NOT NULL without a default: every insert would fail [missing-not-null]\n1 error, 0 warnings in 1 file\n"
        );
    }
}

const CONTACTS: &str = "\
source: shop
target: crm
routes:
  - on: contact.added
    steps:
      - upsert: test.contacts
        key: [email]
        values:
          email: $.data.email
          name: $.data.name
          phone: $.data.phone
          code: $.data.code
          nick: $.data.nick
          ref: $.data.ref
          team: { path: $.data.team, default: none }
          unit: $.data.unit
order_by: $.data.email
";

const CONTACT_ADDED: &str = r#"{
  "type": "object",
  "required": ["email", "code", "ref"],
  "properties": {
    "email": { "type": "string", "maxLength": 40 },
    "name": { "type": ["string", "null"], "maxLength": 20 },
    "phone": { "type": "string", "maxLength": 20 },
    "code": { "type": "string" },
    "nick": { "type": "string", "maxLength": 30 },
    "ref": { "type": "string", "format": "uuid" },
    "team": { "type": "string", "maxLength": 10 },
    "unit": { "type": "string", "maxLength": 10 }
  }
}"#;

on_both_databases! {
    /// Contract fields that may be null or absent feeding NOT NULL columns,
    /// and strings that may be longer than their column, are warnings:
    /// some events would go to dead letter, not all.
    async fn check_with_a_database_warns_of_what_some_events_would_break(db: TestDb) {
        if db.dialect() == busbar::store::Dialect::Postgres {
            db.execute("CREATE SCHEMA test").await;
        }
        db.execute(
            "CREATE TABLE test.contacts (email VARCHAR(50) NOT NULL PRIMARY KEY, \
             name VARCHAR(20) NOT NULL, phone VARCHAR(20) NOT NULL DEFAULT '', \
             code CHAR(3), nick VARCHAR(20), ref VARCHAR(36), team VARCHAR(10) NOT NULL, unit VARCHAR(10) NOT NULL)",
        )
        .await;
        let project = Project::empty();
        project.write("integrations.d/contacts.yaml", CONTACTS);
        project.write("schemas/events/shop/contact.added.json", CONTACT_ADDED);
        let output = busbar(
            project.path(),
            &["check", "integrations.d", "--format", "short", "--database-url", &db.url],
        );
        let text = &output.stdout;
        assert_eq!(output.status.code(), Some(0), "{text}{}", output.stderr);
        // Types are named as the database spells them.
        let text = text
            .replace("(VARCHAR(20))", "(character varying(20))")
            .replace("(CHAR(3))", "(character(3))");
        let expected = "\
integrations.d/contacts.yaml:10:17: warning: `$.data.name` may be null (the contract schemas/events/shop/contact.added.json allows null), and column `test.contacts.name` is NOT NULL without a default: such events would go to dead letter [nullable-into-not-null]
integrations.d/contacts.yaml:12:17: warning: `$.data.code` is a string with no `maxLength` (per the contract schemas/events/shop/contact.added.json), and column `code` (character(3)) holds at most 3 characters: longer values would go to dead letter [may-exceed-length]
integrations.d/contacts.yaml:13:17: warning: `$.data.nick` is a string of up to 30 characters (`maxLength` in the contract schemas/events/shop/contact.added.json), and column `nick` (character varying(20)) holds at most 20: longer values would go to dead letter [may-exceed-length]
integrations.d/contacts.yaml:16:17: warning: `$.data.unit` may be absent (not `required` by the contract schemas/events/shop/contact.added.json), and column `test.contacts.unit` is NOT NULL without a default: such events would go to dead letter [nullable-into-not-null]
0 errors, 4 warnings in 1 file
";
        assert_eq!(text, expected);
    }
}

on_both_databases! {
    /// The shipped integrations fit the example platform's tables.
    async fn the_shipped_integrations_fit_the_example_platform(db: TestDb) {
        db.seed().await;
        let output = busbar(&root(), &["check", "integrations.d", "--database-url", &db.url]);
        assert_eq!(output.status.code(), Some(0), "{}", output.stdout);
        assert_eq!(output.stdout, "0 errors, 0 warnings in 3 files\n");
    }
}

#[test]
fn check_never_creates_a_sqlite_database() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.db");
    let output = busbar(
        &root(),
        &[
            "check",
            "integrations.d",
            "--database-url",
            &format!("sqlite://{}", missing.display()),
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stderr.contains("there is no SQLite database at"));
    assert!(!missing.exists());
}

/// Every kind of mismatch `busbar test` reports, each at its expectation's
/// line and column: an unknown column (with a suggestion), rows the test
/// does not list under `match: exact`, a wrong `count`, an event emitted
/// with other data or not at all, a delivery with another status. The
/// cases publish the same two orders; only the expectations differ.
#[test]
fn each_kind_of_mismatch_is_reported_at_its_expectation() {
    let project = Project::new();
    project.write(
        "integrations.d/tests/orders.test.yaml",
        "\
schema: schema.sql
defaults: { source: shop, event: order.placed }
cases:
  - name: unknown column
    publish: [{ data: { email: a@x.example, name: A, count: 1 } }]
    expect:
      rows:
        customers: [{ emial: a@x.example }]
  - name: rows and counts
    publish:
      - { data: { email: a@x.example, name: A, count: 1 } }
      - { data: { email: b@x.example, name: B, count: 2 } }
    expect:
      rows:
        customers:
          match: exact
          count: 3
          rows: [{ email: a@x.example }]
  - name: events
    publish:
      - { data: { email: a@x.example, name: A, count: 1 } }
      - { data: { email: b@x.example, name: B, count: 2 } }
    expect:
      events:
        match: exact
        count: 3
        events:
          - { event: customer.updated, source: crm, data: { email: c@x.example } }
          - { event: customer.deleted }
  - name: deliveries
    publish: [{ data: { email: a@x.example, name: A, count: 1 } }]
    expect:
      deliveries:
        count: 2
        deliveries:
          - { integration: shop-to-crm, status: skipped, reason: 'no such thing' }
",
    );
    let output = project.test(&[]);
    let text = &output.stdout;
    assert_eq!(output.status.code(), Some(1), "{text}");
    let file = "integrations.d/tests/orders.test.yaml";
    for expected in [
        format!("{file}:8:21: `customers` has no column `emial`"),
        "did you mean `email`?".to_owned(),
        format!("{file}:15:9: `customers` holds a row the test does not list"),
        "+ {email: \"b@x.example\"}".to_owned(),
        format!("{file}:15:9: `customers` holds 2 rows, not 3"),
        format!("{file}:28:13: no emitted `customer.updated` event matches this one"),
        "- data.email: \"c@x.example\"".to_owned(),
        "+ data.email: \"a@x.example\"".to_owned(),
        format!("{file}:29:13: no emitted `customer.deleted` event matches this one"),
        format!("{file}:24:7: an event was emitted that the test does not list"),
        format!("{file}:24:7: 2 events were emitted, not 3"),
        format!("{file}:36:13: no delivery matches this one"),
        "- integration shop-to-crm, status skipped, reason /no such thing/".to_owned(),
        "+ shop-to-crm (order.placed): delivered".to_owned(),
        format!("{file}:33:7: there was 1 delivery, not 2"),
    ] {
        assert!(text.contains(&expected), "no `{expected}` in:\n{text}");
    }
    assert!(text.ends_with("0 passed, 4 failed\n"), "{text}");

    // The same failures as GitHub annotations, one per failure.
    let github = project.test(&["--format", "github"]).stdout;
    assert!(
        github.contains(&format!(
            "::error file={file},line=8,col=21,title=busbar test%3A unknown column::"
        )),
        "{github}"
    );
    assert_eq!(
        github.lines().filter(|l| l.starts_with("::error ")).count(),
        text.lines()
            .filter(|l| l.starts_with(&format!("    {file}:")))
            .count(),
        "{github}"
    );
}

/// Deletes, a route's guard, `missing: fail` on a delete, and a template
/// that fails on one event's data, through the real engine: what each
/// leaves in the table and the reason each delivery gives.
#[test]
fn deletes_guards_and_failing_templates_leave_their_reasons() {
    let project = Project::empty();
    project.write(
        "integrations.d/shop-to-crm.yaml",
        "\
source: shop
target: crm
routes:
  - on: customer.added
    steps:
      - upsert: customers
        key: [email]
        values:
          email: $.data.email
          orders: \"{{ 100 // data.share }}\"
  - on: customer.removed
    when: \"{{ data.confirmed }}\"
    steps:
      - delete: customers
        where: { email: $.data.email }
        missing: fail
",
    );
    project.write("integrations.d/tests/schema.sql", SCHEMA);
    project.write(
        "integrations.d/tests/lifecycle.test.yaml",
        "\
schema: schema.sql
defaults: { source: shop }
cases:
  - name: a confirmed removal deletes the row
    publish:
      - { event: customer.added, data: { email: a@x.example, share: 4 } }
      - { event: customer.removed, data: { email: a@x.example, confirmed: true } }
    expect:
      rows: { customers: { count: 0 } }
      deliveries:
        match: exact
        deliveries:
          - { event: customer.added, status: delivered }
          - { event: customer.removed, status: delivered }
  - name: an unconfirmed removal is skipped by the route's guard
    publish:
      - { event: customer.added, data: { email: b@x.example, share: 4 } }
      - { event: customer.removed, data: { email: b@x.example, confirmed: false } }
    expect:
      rows: { customers: [{ email: b@x.example, orders: 25 }] }
      deliveries:
        - { event: customer.removed, status: skipped, reason: \"the route's guard `\\\\{\\\\{ data.confirmed \\\\}\\\\}` is false\" }
  - name: removing a customer that is not there fails
    publish: { event: customer.removed, data: { email: nobody@x.example, confirmed: true } }
    expect:
      deliveries:
        - { event: customer.removed, status: dead, reason: '^step 1 \\(delete customers\\): ' }
  - name: a template that fails on the data is a dead letter naming step and column
    publish: { event: customer.added, data: { email: c@x.example, share: 0 } }
    expect:
      rows: { customers: { count: 0 } }
      deliveries:
        - { event: customer.added, status: dead, reason: '^step 1 \\(upsert customers\\), `orders`: ' }
",
    );
    let output = project.test(&[]);
    let text = &output.stdout;
    assert_eq!(output.status.code(), Some(0), "{text}{}", output.stderr);
    assert!(text.ends_with("4 passed, 0 failed\n"), "{text}");
}
