//! `busbar lsp` driven by a real JSON-RPC client over the built binary's
//! standard streams: diagnostics equal `check`'s for every broken case,
//! completion, hover, definition, a quick fix, a burst of edits; and one
//! session in Neovim's own client (skipped without `nvim`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use busbar::compile;
use busbar::config;
use busbar::lsp::workspace::uri_of;
use serde_json::{Value, json};

use crate::support::{TestDb, busbar_cli, root};

/// How long any one answer may take (a debug build on a busy machine).
const PATIENCE: Duration = Duration::from_secs(60);

/// One `publishDiagnostics`: the document version, the diagnostics.
type Published = (Option<i64>, Vec<Value>);

/// A language client speaking to `busbar lsp` over its stdio.
struct Client {
    child: Child,
    stdin: ChildStdin,
    incoming: Receiver<Value>,
    next_id: i64,
    /// Every `publishDiagnostics` received, per URI, in order.
    published: BTreeMap<String, Vec<Published>>,
    /// Other notifications and requests from the server.
    others: Vec<Value>,
}

impl Client {
    /// Starts the server and completes the handshake.
    fn start(options: Value) -> Client {
        Client::start_with(&[], options)
    }

    /// Starts `busbar lsp` with `args` and completes the handshake.
    fn start_with(args: &[&str], options: Value) -> Client {
        let mut child = Command::new(env!("CARGO_BIN_EXE_busbar"))
            .arg("lsp")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("busbar lsp starts");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (send, incoming) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            loop {
                let mut length = None;
                loop {
                    let mut header = String::new();
                    if stdout.read_line(&mut header).unwrap_or(0) == 0 {
                        return;
                    }
                    let header = header.trim_end();
                    if header.is_empty() {
                        break;
                    }
                    if let Some(value) = header.strip_prefix("Content-Length: ") {
                        length = value.parse::<usize>().ok();
                    }
                }
                let mut body = vec![0; length.expect("a Content-Length header")];
                if stdout.read_exact(&mut body).is_err() {
                    return;
                }
                let message: Value = serde_json::from_slice(&body).expect("JSON from the server");
                if send.send(message).is_err() {
                    return;
                }
            }
        });
        let mut client = Client {
            child,
            stdin,
            incoming,
            next_id: 0,
            published: BTreeMap::new(),
            others: Vec::new(),
        };
        let result = client.request(
            "initialize",
            json!({ "processId": null, "rootUri": null, "capabilities": {},
                    "initializationOptions": options }),
        );
        assert_eq!(result["serverInfo"]["name"], "busbar", "{result}");
        assert!(result["capabilities"]["completionProvider"].is_object());
        client.notify("initialized", json!({}));
        client
    }

    fn send(&mut self, message: &Value) {
        let body = message.to_string();
        write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        self.stdin.flush().unwrap();
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({ "jsonrpc": "2.0", "method": method, "params": params }));
    }

    /// Takes one message from the server (filing notifications), or
    /// `None` after `wait`.
    fn receive(&mut self, wait: Duration) -> Option<Value> {
        match self.incoming.recv_timeout(wait) {
            Ok(message) => {
                if message["method"] == "textDocument/publishDiagnostics" {
                    let params = &message["params"];
                    self.published
                        .entry(params["uri"].as_str().unwrap().to_owned())
                        .or_default()
                        .push((
                            params["version"].as_i64(),
                            params["diagnostics"].as_array().unwrap().clone(),
                        ));
                } else if message.get("id").is_none() || message.get("method").is_some() {
                    self.others.push(message.clone());
                }
                Some(message)
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => panic!("the server closed its output"),
        }
    }

    /// Sends a request and waits for its answer's `result`.
    fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Some(message) = self.receive(Duration::from_millis(100))
                && message["id"] == id
                && message.get("method").is_none()
            {
                assert!(message.get("error").is_none(), "{method}: {message}");
                return message["result"].clone();
            }
        }
        panic!("no answer to {method} within {PATIENCE:?}");
    }

    fn open(&mut self, path: &Path, text: &str) {
        self.notify(
            "textDocument/didOpen",
            json!({ "textDocument": { "uri": uri_of(path).as_str(), "languageId": "yaml",
                                      "version": 1, "text": text } }),
        );
    }

    fn replace(&mut self, path: &Path, version: i64, text: &str) {
        self.notify(
            "textDocument/didChange",
            json!({ "textDocument": { "uri": uri_of(path).as_str(), "version": version },
                    "contentChanges": [{ "text": text }] }),
        );
    }

    /// The last diagnostics published for every URI.
    fn latest(&self) -> BTreeMap<String, Vec<Value>> {
        self.published
            .iter()
            .map(|(uri, list)| (uri.clone(), list.last().unwrap().1.clone()))
            .collect()
    }

    /// Waits until `done` holds of the received messages.
    fn wait_until(&mut self, what: &str, mut done: impl FnMut(&Client) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done(self) {
            assert!(Instant::now() < deadline, "waited {PATIENCE:?} for {what}");
            self.receive(Duration::from_millis(50));
        }
    }

    /// Waits for diagnostics of `path` at `version`, and returns them.
    fn diagnostics_at(&mut self, path: &Path, version: i64) -> Vec<Value> {
        let uri = uri_of(path).as_str().to_owned();
        self.wait_until(&format!("diagnostics of {uri} at version {version}"), |c| {
            c.published
                .get(&uri)
                .and_then(|list| list.last())
                .is_some_and(|(v, _)| *v == Some(version))
        });
        self.published[&uri].last().unwrap().1.clone()
    }

    fn stop(mut self) {
        self.request("shutdown", Value::Null);
        self.notify("exit", Value::Null);
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "busbar lsp exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "busbar lsp did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A diagnostic in a form both sides can be compared in: URI, start
/// (line, UTF-16 column), severity, code, message, related places.
type Seen = (
    String,
    u64,
    u64,
    u64,
    String,
    String,
    Vec<(String, u64, u64, String)>,
);

fn seen_from_lsp(uri: &str, d: &Value) -> Seen {
    let related = d["relatedInformation"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["location"]["uri"].as_str().unwrap().to_owned(),
                r["location"]["range"]["start"]["line"].as_u64().unwrap(),
                r["location"]["range"]["start"]["character"]
                    .as_u64()
                    .unwrap(),
                r["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (
        uri.to_owned(),
        d["range"]["start"]["line"].as_u64().unwrap(),
        d["range"]["start"]["character"].as_u64().unwrap(),
        d["severity"].as_u64().unwrap(),
        d["code"].as_str().unwrap().to_owned(),
        d["message"].as_str().unwrap().to_owned(),
        related,
    )
}

/// `check`'s diagnostics for a directory, in the same form: positions
/// turned into 0-based lines and UTF-16 columns here, on the file's text.
fn seen_from_check(dir: &Path, contracts: &Path) -> Vec<Seen> {
    let config = config::read_directory(dir, Some(contracts)).unwrap();
    let compilation = compile::compile(&config, 0);
    let sources = config.sources();
    let place = |file: &Path, position: busbar::diagnostics::Position| -> (u64, u64) {
        let line = sources
            .get(file)
            .and_then(|s| s.line(position.line).map(str::to_owned))
            .unwrap_or_default();
        let column: usize = line
            .chars()
            .take(position.column - 1)
            .map(char::len_utf16)
            .sum();
        ((position.line - 1) as u64, column as u64)
    };
    let mut seen: Vec<Seen> = compilation
        .diagnostics
        .iter()
        .map(|d| {
            let (line, column) = place(&d.file, d.position);
            let message = match &d.help {
                Some(help) => format!("{}\nhelp: {help}", d.message),
                None => d.message.clone(),
            };
            let related = d
                .related
                .iter()
                .map(|r| {
                    let (line, column) = place(&r.file, r.position);
                    (
                        uri_of(&r.file).as_str().to_owned(),
                        line,
                        column,
                        r.message.clone(),
                    )
                })
                .collect();
            (
                uri_of(&d.file).as_str().to_owned(),
                line,
                column,
                if d.is_error() { 1 } else { 2 },
                d.code.as_str().to_owned(),
                message,
                related,
            )
        })
        .collect();
    seen.sort();
    seen
}

fn all_seen(client: &Client) -> Vec<Seen> {
    let mut seen: Vec<Seen> = client
        .latest()
        .iter()
        .flat_map(|(uri, list)| list.iter().map(|d| seen_from_lsp(uri, d)))
        .collect();
    seen.sort();
    seen
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// Lays out a case as a project: `integrations.d/` and `schemas/events/`.
fn lay_out_case(case: &Path, project: &Path) -> (PathBuf, PathBuf) {
    let integrations = project.join("integrations.d");
    let contracts = project.join("schemas").join("events");
    std::fs::create_dir_all(&integrations).unwrap();
    for entry in std::fs::read_dir(case).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        if name == "contracts" {
            copy_dir(&path, &contracts);
        } else if name != "README.md" && name != "expected.snap" {
            if path.is_dir() {
                copy_dir(&path, &integrations.join(name));
            } else {
                std::fs::copy(&path, integrations.join(name)).unwrap();
            }
        }
    }
    if !contracts.exists() {
        copy_dir(&root().join("schemas").join("events"), &contracts);
    }
    (integrations, contracts)
}

#[test]
fn diagnostics_equal_checks_for_every_broken_case_typed_into_an_unsaved_buffer() {
    let mut compared = 0;
    let mut cases: Vec<PathBuf> = std::fs::read_dir(root().join("tests").join("cases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    let mut client = Client::start(json!({}));
    for case in &cases {
        let project = tempfile::tempdir().unwrap();
        let (integrations, contracts) = lay_out_case(case, project.path());
        // The buffer edited: the case's first integration file, in UTF-8.
        let Some((file, text)) = config::read_integrations(&integrations)
            .unwrap()
            .0
            .into_iter()
            .next()
            .map(|f| (f.path, f.text))
        else {
            continue;
        };
        if std::fs::read_to_string(&file).is_err() {
            continue; // Not UTF-8: no editor buffer holds it.
        }
        let expected = seen_from_check(&integrations, &contracts);
        // On disk the file holds something else; the case exists only in
        // the editor's unsaved buffer.
        std::fs::write(&file, "# not saved yet\n").unwrap();
        client.open(&file, "# not saved yet\n");
        client.replace(&file, 2, &text);
        client.diagnostics_at(&file, 2);
        let prefix = uri_of(project.path()).as_str().to_owned();
        let deadline = Instant::now() + PATIENCE;
        let last = loop {
            let seen: Vec<Seen> = all_seen(&client)
                .into_iter()
                .filter(|s| s.0.starts_with(&prefix))
                .collect();
            if seen == expected || Instant::now() > deadline {
                break seen;
            }
            client.receive(Duration::from_millis(50));
        };
        assert_eq!(
            last,
            expected,
            "case {}: the server's diagnostics (left) differ from check's (right)",
            case.display()
        );
        assert!(
            !expected.is_empty(),
            "case {} has no diagnostic",
            case.display()
        );
        client.notify(
            "textDocument/didClose",
            json!({ "textDocument": { "uri": uri_of(&file).as_str() } }),
        );
        compared += 1;
    }
    assert!(compared >= 45, "only {compared} cases compared");
    client.stop();
}

/// The example project (`integrations.d`, `schemas/events`) with a
/// catalog of the example platform's tables written by `busbar catalog`.
struct Example {
    _project: tempfile::TempDir,
    integrations: PathBuf,
    file: PathBuf,
    text: String,
}

fn example() -> Example {
    let project = tempfile::tempdir().unwrap();
    let integrations = project.path().join("integrations.d");
    std::fs::create_dir_all(&integrations).unwrap();
    for entry in std::fs::read_dir(root().join("integrations.d")).unwrap() {
        let path = entry.unwrap().path();
        if config::is_integration_file(&path) {
            std::fs::copy(&path, integrations.join(path.file_name().unwrap())).unwrap();
        }
    }
    copy_dir(
        &root().join("schemas").join("events"),
        &project.path().join("schemas").join("events"),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(async {
        let db = TestDb::sqlite().await;
        busbar::dev::install_example_platform(&db.store)
            .await
            .expect("the example platform installs");
        db
    });
    let output = busbar_cli(
        project.path(),
        &["catalog", "--database-url", &db.url, "integrations.d"],
    );
    assert!(output.status.success(), "{}", output.show());
    std::fs::write(integrations.join("catalog.json"), &output.stdout).unwrap();
    let file = integrations.join("recruitiq-to-nexus.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    Example {
        _project: project,
        integrations,
        file,
        text,
    }
}

#[test]
fn catalog_writes_the_tables_the_integrations_name() {
    let example = example();
    let catalog: Value = serde_json::from_str(
        &std::fs::read_to_string(example.integrations.join("catalog.json")).unwrap(),
    )
    .unwrap();
    let employees = &catalog["tables"]["hris.employees"];
    let first_name = employees["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "first_name")
        .expect("hris.employees.first_name");
    assert_eq!(first_name["nullable"], false, "{first_name}");
    assert!(
        first_name["type"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case("varchar(100)"),
        "{first_name}"
    );
    assert!(catalog["tables"]["core.product_subscriptions"].is_object());
    assert!(catalog["tables"]["payroll.employee_records"].is_object());
}

/// `text` with `‸` taken out, and where it stood.
fn cursor(text: &str) -> (String, Value) {
    let at = text.find('‸').expect("a ‸ marks the cursor");
    let before = &text[..at];
    let line = before.matches('\n').count();
    let column: usize = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .map(char::len_utf16)
        .sum();
    (
        text.replacen('‸', "", 1),
        json!({ "line": line, "character": column }),
    )
}

/// The example file with `from` replaced by `to` (which holds the `‸`).
fn edited(example: &Example, from: &str, to: &str) -> String {
    assert!(example.text.contains(from), "the example has `{from}`");
    example.text.replacen(from, to, 1)
}

fn labels(result: &Value) -> Vec<String> {
    let items = result
        .as_array()
        .or_else(|| result["items"].as_array())
        .expect("completion items");
    items
        .iter()
        .map(|item| item["label"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn completion_offers_keys_events_fields_columns_bound_names_and_filters() {
    let example = example();
    let mut client = Client::start(json!({}));
    client.open(&example.file, &example.text);
    let uri = uri_of(&example.file).as_str().to_owned();
    // (what is changed, into what with the cursor, labels offered, labels not offered)
    let cases: &[(&str, &str, &[&str], &[&str])] = &[
        (
            "phone: $.data.candidate.phone",
            "phone: $.data.candidate.‸",
            &["firstName", "email", "phone", "id"],
            &["candidate", "hiredBy"],
        ),
        (
            "phone: $.data.candidate.phone",
            "phone: $.‸",
            &["organization_id", "occurred_at", "data"],
            &["firstName"],
        ),
        (
            "email: \"{{ data.candidate.email | trim | lower }}\"",
            "email: \"{{ data.candidate.‸ }}\"",
            &["email", "firstName"],
            &["hiredBy"],
        ),
        (
            "email: \"{{ data.candidate.email | trim | lower }}\"",
            "email: \"{{ data.candidate.email | ‸ }}\"",
            &["lower", "trim", "date", "datetime", "json"],
            &["email"],
        ),
        (
            "employee_id: \"{{ employee.id }}\"",
            "employee_id: \"{{ employee.‸ }}\"",
            &["id", "first_name", "email", "hire_date"],
            &["candidate_id"],
        ),
        (
            "employee_id: \"{{ employee.id }}\"",
            "employee_id: \"{{ em‸ }}\"",
            &["employee", "event", "data"],
            &[],
        ),
        (
            "  - on: candidate.hired",
            "  - on: ‸",
            &["candidate.hired"],
            &["employee.created"],
        ),
        (
            "      - emit: employee.created",
            "      - emit: ‸",
            &["employee.created", "employee.updated"],
            &["candidate.hired"],
        ),
        (
            "    steps:\n",
            "    steps:\n      - ‸\n",
            &["find", "upsert", "update", "delete", "emit"],
            &["values"],
        ),
        (
            "        key: [organization_id, email]\n",
            "        key: [organization_id, email]\n        ‸\n",
            &["when", "description"],
            &["key", "values", "as", "where"],
        ),
        (
            "        key: [organization_id, email]\n        values:\n",
            "        key: [organization_id, email]\n        values:\n          ‸\n",
            &["first_name", "hire_date", "status"],
            &["candidate_id"],
        ),
        (
            "      - upsert: hris.employees",
            "      - upsert: ‸",
            &["hris.employees", "core.product_subscriptions"],
            &[],
        ),
        (
            "retry: { max_attempts: 8, initial: 1s, max: 10m }",
            "‸",
            &["retry", "on_dead", "enabled"],
            &["source", "routes"],
        ),
        (
            "        missing: skip",
            "        missing: ‸",
            &["skip", "fail", "null"],
            &[],
        ),
    ];
    for (version, (from, to, wanted, unwanted)) in cases.iter().enumerate() {
        let (text, position) = cursor(&edited(&example, from, to));
        client.replace(&example.file, version as i64 + 2, &text);
        let result = client.request(
            "textDocument/completion",
            json!({ "textDocument": { "uri": uri }, "position": position }),
        );
        let offered = labels(&result);
        for label in *wanted {
            assert!(
                offered.iter().any(|o| o == label),
                "at `{to}`: `{label}` is not offered; offered: {offered:?}"
            );
        }
        for label in *unwanted {
            assert!(
                !offered.iter().any(|o| o == label),
                "at `{to}`: `{label}` is offered; offered: {offered:?}"
            );
        }
    }
    // Items carry what they are: a field's type, a column's.
    let (text, position) = cursor(&edited(
        &example,
        "phone: $.data.candidate.phone",
        "phone: $.data.candidate.‸",
    ));
    client.replace(&example.file, 100, &text);
    let result = client.request(
        "textDocument/completion",
        json!({ "textDocument": { "uri": uri }, "position": position }),
    );
    let id = result
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["label"] == "id")
        .unwrap();
    assert_eq!(id["detail"], "string (uuid)", "{id}");
    assert!(
        id["documentation"]["value"]
            .as_str()
            .unwrap()
            .contains("The candidate's id in RecruitIQ.")
    );
    client.stop();
}

/// The result of `method` at the first `needle` of the example file,
/// `offset` characters into it.
fn at(client: &mut Client, example: &Example, method: &str, needle: &str, offset: usize) -> Value {
    let byte = example
        .text
        .find(needle)
        .expect("the needle is in the example");
    let marked = format!(
        "{}‸{}",
        &example.text[..byte + offset],
        &example.text[byte + offset..]
    );
    let (_, position) = cursor(&marked);
    client.request(
        method,
        json!({ "textDocument": { "uri": uri_of(&example.file).as_str() }, "position": position }),
    )
}

fn hover_text(result: &Value) -> String {
    result["contents"]["value"]
        .as_str()
        .unwrap_or_else(|| panic!("a hover: {result}"))
        .to_owned()
}

#[test]
fn hover_tells_fields_columns_steps_and_bound_names() {
    let example = example();
    let mut client = Client::start(json!({}));
    client.open(&example.file, &example.text);
    let field = hover_text(&at(
        &mut client,
        &example,
        "textDocument/hover",
        "$.data.hiredBy",
        9,
    ));
    let column = hover_text(&at(
        &mut client,
        &example,
        "textDocument/hover",
        "first_name: $.data",
        2,
    ));
    let step = hover_text(&at(
        &mut client,
        &example,
        "textDocument/hover",
        "upsert: hris.employees",
        1,
    ));
    let bound = hover_text(&at(
        &mut client,
        &example,
        "textDocument/hover",
        "{{ employee.id }}",
        5,
    ));
    client.stop();
    assert!(field.contains("`string (uuid)`"), "{field}");
    assert!(field.contains("The RecruitIQ user"), "{field}");
    assert!(column.contains("hris.employees.first_name"), "{column}");
    assert!(column.contains("NOT NULL"), "{column}");
    assert!(column.contains("at most 100 characters"), "{column}");
    assert!(step.contains("ON CONFLICT"), "{step}");
    assert!(bound.contains("upsert: hris.employees"), "{bound}");
}

#[test]
fn definition_goes_to_contracts_routes_and_the_binding_step() {
    let example = example();
    let mut client = Client::start(json!({}));
    client.open(&example.file, &example.text);
    let contract = at(
        &mut client,
        &example,
        "textDocument/definition",
        "on: candidate.hired",
        6,
    );
    let route = at(
        &mut client,
        &example,
        "textDocument/definition",
        "emit: employee.created",
        8,
    );
    let field = at(
        &mut client,
        &example,
        "textDocument/definition",
        "$.data.candidate.firstName",
        18,
    );
    let binding = at(
        &mut client,
        &example,
        "textDocument/definition",
        "{{ employee.id }}",
        5,
    );
    client.stop();
    let uri = |v: &Value| v[0]["uri"].as_str().unwrap().to_owned();
    let line = |v: &Value| v[0]["range"]["start"]["line"].as_u64().unwrap();
    assert!(
        uri(&contract).ends_with("/schemas/events/recruitiq/candidate.hired.json"),
        "{contract}"
    );
    assert!(
        uri(&route).ends_with("/integrations.d/nexus-to-paylinq.yaml"),
        "{route}"
    );
    let paylinq =
        std::fs::read_to_string(example.integrations.join("nexus-to-paylinq.yaml")).unwrap();
    let route_line = paylinq.lines().nth(line(&route) as usize).unwrap();
    assert_eq!(route_line.trim(), "- on: employee.created", "{route}");
    let contract_text = std::fs::read_to_string(
        example
            .integrations
            .join("../schemas/events/recruitiq/candidate.hired.json"),
    )
    .unwrap();
    let field_line = contract_text.lines().nth(line(&field) as usize).unwrap();
    assert!(
        field_line.trim_start().starts_with("\"firstName\""),
        "{field_line}"
    );
    let binding_line = example.text.lines().nth(line(&binding) as usize).unwrap();
    assert_eq!(binding_line.trim(), "as: employee");
    assert_eq!(uri(&binding), uri_of(&example.file).as_str());
}

#[test]
fn a_did_you_mean_quick_fix_makes_its_diagnostic_disappear() {
    let example = example();
    let mut client = Client::start(json!({}));
    client.open(&example.file, &example.text);
    assert!(
        client.diagnostics_at(&example.file, 1).is_empty(),
        "the example is clean"
    );
    let broken = example.text.replacen(
        "phone: $.data.candidate.phone",
        "phone: $.data.candidate.phnoe",
        1,
    );
    client.replace(&example.file, 2, &broken);
    let diagnostics = client.diagnostics_at(&example.file, 2);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(diagnostics[0]["code"], "not-in-contract");
    let actions = client.request(
        "textDocument/codeAction",
        json!({ "textDocument": { "uri": uri_of(&example.file).as_str() },
                "range": diagnostics[0]["range"],
                "context": { "diagnostics": diagnostics } }),
    );
    let action = &actions[0];
    assert_eq!(action["title"], "Change to `phone`", "{actions}");
    let edit = &action["edit"]["changes"][uri_of(&example.file).as_str()][0];
    // Apply the edit as an editor would.
    let fixed = apply_edit(&broken, edit);
    assert_eq!(fixed, example.text);
    client.replace(&example.file, 3, &fixed);
    assert!(client.diagnostics_at(&example.file, 3).is_empty());
    client.stop();
}

#[test]
fn a_burst_of_200_edits_leaves_the_last_edits_diagnostics() {
    let example = example();
    let mut client = Client::start(json!({}));
    client.open(&example.file, &example.text);
    client.diagnostics_at(&example.file, 1);
    let uri = uri_of(&example.file).as_str().to_owned();
    // 199 keystrokes typing a comment at the top, then one that breaks a path.
    let started = Instant::now();
    for version in 2..=200 {
        client.notify(
            "textDocument/didChange",
            json!({ "textDocument": { "uri": uri, "version": version },
                    "contentChanges": [{ "range": { "start": { "line": 0, "character": 0 },
                                                    "end": { "line": 0, "character": 0 } },
                                          "text": "x" }] }),
        );
        std::thread::sleep(Duration::from_millis(9));
        while client.receive(Duration::ZERO).is_some() {}
    }
    let line = example
        .text
        .lines()
        .position(|l| l.contains("phone: $.data.candidate.phone"))
        .unwrap();
    let column = example.text.lines().nth(line).unwrap().len();
    client.notify(
        "textDocument/didChange",
        json!({ "textDocument": { "uri": uri, "version": 201 },
                "contentChanges": [{ "range": { "start": { "line": line, "character": column - 1 },
                                                "end": { "line": line, "character": column } },
                                      "text": "" }] }),
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let last = client.diagnostics_at(&example.file, 201);
    // Nothing older comes after it.
    std::thread::sleep(Duration::from_millis(500));
    while client.receive(Duration::from_millis(50)).is_some() {}
    let versions: Vec<i64> = client.published[&uri]
        .iter()
        .filter_map(|(v, _)| *v)
        .collect();
    assert_eq!(versions.last(), Some(&201), "{versions:?}");
    assert!(
        versions.windows(2).all(|w| w[0] <= w[1]),
        "an older version was published after a newer one: {versions:?}"
    );
    // The final buffer, saved, is what check sees.
    let mut final_text = format!("{}{}", "x".repeat(199), example.text);
    let line_start: usize = final_text
        .split_inclusive('\n')
        .take(line)
        .map(str::len)
        .sum();
    let line_end = line_start + final_text[line_start..].find('\n').unwrap();
    final_text.remove(line_end - 1);
    std::fs::write(&example.file, &final_text).unwrap();
    let expected = seen_from_check(
        &example.integrations,
        &config::default_contracts_dir(&example.integrations),
    );
    let actual: Vec<Seen> = last.iter().map(|d| seen_from_lsp(&uri, d)).collect();
    assert!(!expected.is_empty());
    assert_eq!(actual, expected);
    client.stop();
}

/// Neovim's own LSP client, headless, on a file of the example project:
/// the diagnostics it receives for a broken buffer and a completion.
#[test]
fn neovim_receives_diagnostics_and_completions_from_busbar_lsp() {
    let nvim = Command::new("nvim").arg("--version").output();
    if !nvim.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var_os("BUSBAR_REQUIRE_NVIM").is_none(),
            "BUSBAR_REQUIRE_NVIM is set but nvim is not installed"
        );
        eprintln!(
            "SKIPPED: nvim is not installed (apt-get install -y neovim); the Neovim end-to-end test did not run"
        );
        return;
    }
    let example = example();
    let script = example.integrations.join("../check.lua");
    let result = example.integrations.join("../result.json");
    std::fs::write(
        &script,
        format!(
            r#"
local result = {{}}
-- start_client and buf_attach_client: Debian's Neovim (0.7) has no vim.lsp.start.
local id = vim.lsp.start_client({{ name = "busbar", cmd = {{ {binary:?}, "lsp" }}, root_dir = {root:?} }})
vim.lsp.buf_attach_client(0, id)
-- A typo, typed into the buffer and not saved.
vim.api.nvim_buf_set_lines(0, 0, 0, false, {{ "taget: nexus" }})
vim.wait(30000, function()
  for _, d in ipairs(vim.diagnostic.get(0)) do
    if d.code == "unknown-key" then return true end
  end
  return false
end, 50)
result.diagnostics = {{}}
for _, d in ipairs(vim.diagnostic.get(0)) do
  table.insert(result.diagnostics, {{ code = d.code, lnum = d.lnum, col = d.col, message = d.message }})
end
local client = vim.lsp.get_client_by_id(id)
local line = vim.fn.search("phone: \\$.data.candidate.phone") - 1
local column = #"          phone: $.data.candidate."
local response = client.request_sync("textDocument/completion", {{
  textDocument = {{ uri = vim.uri_from_bufnr(0) }},
  position = {{ line = line, character = column }},
}}, 30000, 0)
result.completion = {{}}
for _, item in ipairs(response.result or {{}}) do table.insert(result.completion, item.label) end
vim.fn.writefile({{ vim.fn.json_encode(result) }}, {result:?})
vim.cmd("qall!")
"#,
            binary = env!("CARGO_BIN_EXE_busbar"),
            root = example.integrations.display().to_string(),
            result = result.display().to_string(),
        ),
    )
    .unwrap();
    let status = Command::new("nvim")
        .args(["--headless", "--clean", "-n"])
        .arg(&example.file)
        .arg("-c")
        .arg(format!("luafile {}", script.display()))
        .stdin(Stdio::null())
        .status()
        .expect("nvim runs");
    assert!(status.success(), "nvim exited with {status}");
    let result: Value = serde_json::from_str(&std::fs::read_to_string(&result).unwrap()).unwrap();
    let diagnostics = result["diagnostics"].as_array().unwrap();
    assert!(
        diagnostics.iter().any(|d| d["code"] == "unknown-key"
            && d["lnum"] == 0
            && d["col"] == 0
            && d["message"]
                .as_str()
                .unwrap()
                .contains("did you mean `target`?")),
        "{result}"
    );
    let completion: Vec<&str> = result["completion"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        completion.contains(&"firstName") && completion.contains(&"email"),
        "{result}"
    );
}

/// `text` with one protocol `TextEdit` applied (on one line).
fn apply_edit(text: &str, edit: &Value) -> String {
    let start = &edit["range"]["start"];
    let end = &edit["range"]["end"];
    assert_eq!(start["line"], end["line"], "{edit}");
    let line_number = start["line"].as_u64().unwrap() as usize;
    text.split('\n')
        .enumerate()
        .map(|(n, line)| {
            if n != line_number {
                return line.to_owned();
            }
            let units: Vec<u16> = line.encode_utf16().collect();
            let from = start["character"].as_u64().unwrap() as usize;
            let to = end["character"].as_u64().unwrap() as usize;
            format!(
                "{}{}{}",
                String::from_utf16(&units[..from]).unwrap(),
                edit["newText"].as_str().unwrap(),
                String::from_utf16(&units[to..]).unwrap()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn an_unquoted_template_is_quoted_by_its_quick_fix() {
    let example = example();
    let mut client = Client::start(json!({}));
    client.open(&example.file, &example.text);
    let unquoted = example
        .text
        .replacen("\"{{ employee.id }}\"", "{{ employee.id }}", 1);
    client.replace(&example.file, 2, &unquoted);
    let diagnostics = client.diagnostics_at(&example.file, 2);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    let actions = client.request(
        "textDocument/codeAction",
        json!({ "textDocument": { "uri": uri_of(&example.file).as_str() },
                "range": diagnostics[0]["range"],
                "context": { "diagnostics": diagnostics } }),
    );
    assert_eq!(actions[0]["title"], "Quote the template", "{actions}");
    let edit = &actions[0]["edit"]["changes"][uri_of(&example.file).as_str()][0];
    let fixed = apply_edit(&unquoted, edit);
    assert_eq!(fixed, example.text);
    client.replace(&example.file, 3, &fixed);
    assert!(client.diagnostics_at(&example.file, 3).is_empty());
    client.stop();
}

#[test]
fn a_catalog_file_checks_columns_in_check_and_in_the_editor() {
    let example = example();
    let project = example.integrations.parent().unwrap();
    let clean = busbar_cli(
        project,
        &[
            "check",
            "integrations.d",
            "--catalog",
            "integrations.d/catalog.json",
        ],
    );
    assert!(clean.status.success(), "{}", clean.show());

    let mut client = Client::start(json!({}));
    client.open(&example.file, &example.text);
    assert!(client.diagnostics_at(&example.file, 1).is_empty());
    // The table loses a column the integration writes.
    let catalog_path = example.integrations.join("catalog.json");
    let mut catalog: Value =
        serde_json::from_str(&std::fs::read_to_string(&catalog_path).unwrap()).unwrap();
    catalog["tables"]["hris.employees"]["columns"]
        .as_array_mut()
        .unwrap()
        .retain(|c| c["name"] != "phone");
    std::fs::write(&catalog_path, catalog.to_string()).unwrap();

    let broken = busbar_cli(
        project,
        &[
            "check",
            "integrations.d",
            "--catalog",
            "integrations.d/catalog.json",
        ],
    );
    assert_eq!(broken.status.code(), Some(1), "{}", broken.show());
    assert!(
        broken.stdout.contains("[unknown-column]") && broken.stdout.contains("phone"),
        "{}",
        broken.show()
    );
    client.notify(
        "workspace/didChangeWatchedFiles",
        json!({ "changes": [{ "uri": uri_of(&catalog_path).as_str(), "type": 2 }] }),
    );
    let uri = uri_of(&example.file).as_str().to_owned();
    client.wait_until("the catalog's unknown-column in the editor", |c| {
        c.latest()
            .get(&uri)
            .is_some_and(|d| d.iter().any(|d| d["code"] == "unknown-column"))
    });
    client.stop();
}

/// The diagnostics last published for `uri` have one coded `code` that
/// names `name`.
fn has_diagnostic(client: &Client, uri: &str, code: &str, name: &str) -> bool {
    client.latest().get(uri).is_some_and(|diagnostics| {
        diagnostics
            .iter()
            .any(|d| d["code"] == code && d["message"].as_str().is_some_and(|m| m.contains(name)))
    })
}

/// The completion labels offered in the example file edited so that the
/// cursor is on a new line under the `hris.employees` upsert's `values:`.
fn columns_offered(client: &mut Client, example: &Example, version: i64) -> Vec<String> {
    let (text, position) = cursor(&edited(
        example,
        "        key: [organization_id, email]\n        values:\n",
        "        key: [organization_id, email]\n        values:\n          ‸\n",
    ));
    client.replace(&example.file, version, &text);
    let result = client.request(
        "textDocument/completion",
        json!({ "textDocument": { "uri": uri_of(&example.file).as_str() }, "position": position }),
    );
    labels(&result)
}

/// The messages the server showed or logged.
fn messages(client: &Client) -> Vec<String> {
    client
        .others
        .iter()
        .filter(|m| m["method"] == "window/showMessage" || m["method"] == "window/logMessage")
        .map(|m| {
            m["params"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "PostgreSQL suite skipped: TEST_DATABASE_URL was not set when the tests were built"
)]
fn a_live_catalog_checks_columns_and_is_read_again_on_refresh() {
    let example = example();
    // Only the database can tell the columns now.
    std::fs::remove_file(example.integrations.join("catalog.json")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(async {
        let db = TestDb::postgres().await;
        busbar::dev::install_example_platform(&db.store)
            .await
            .expect("the example platform installs");
        db
    });
    let with_nickname = edited(
        &example,
        "          status: active\n",
        "          status: active\n          nickname: $.data.candidate.firstName\n",
    );
    let uri = uri_of(&example.file).as_str().to_owned();
    let mut client = Client::start_with(&["--database-url", &db.url], json!({}));
    client.open(&example.file, &with_nickname);
    client.wait_until("the live catalog's unknown-column", |c| {
        has_diagnostic(c, &uri, "unknown-column", "nickname")
    });
    let offered = columns_offered(&mut client, &example, 2);
    assert!(offered.iter().any(|o| o == "first_name"), "{offered:?}");
    assert!(!offered.iter().any(|o| o == "nickname"), "{offered:?}");
    client.replace(&example.file, 3, &with_nickname);
    let diagnostics = client.diagnostics_at(&example.file, 3);
    assert!(
        has_diagnostic(&client, &uri, "unknown-column", "nickname"),
        "{diagnostics:?}"
    );

    // The table gains the column; the editor asks for the catalog again.
    runtime.block_on(db.execute("ALTER TABLE hris.employees ADD COLUMN nickname text"));
    let answer = client.request(
        "workspace/executeCommand",
        json!({ "command": "busbar.refresh", "arguments": [] }),
    );
    assert_eq!(answer, Value::Null);
    client.wait_until("the unknown-column to go after busbar.refresh", |c| {
        !has_diagnostic(c, &uri, "unknown-column", "nickname")
    });
    let offered = columns_offered(&mut client, &example, 4);
    assert!(offered.iter().any(|o| o == "nickname"), "{offered:?}");

    // A step starts to name a table the last read did not ask for: it is
    // unknown until a save reads the catalog again.
    let with_team = edited(
        &example,
        "      - upsert: hris.employees\n",
        "      - find: hris.teams\n        where: { name: $.data.department }\n        missing: skip\n\n      - upsert: hris.employees\n",
    );
    client.replace(&example.file, 5, &with_team);
    let diagnostics = client.diagnostics_at(&example.file, 5);
    assert!(
        has_diagnostic(&client, &uri, "unknown-table", "hris.teams"),
        "{diagnostics:?}"
    );
    runtime.block_on(db.execute("CREATE TABLE hris.teams (name text PRIMARY KEY)"));
    client.notify(
        "textDocument/didSave",
        json!({ "textDocument": { "uri": uri } }),
    );
    client.wait_until("the unknown-table to go after a save", |c| {
        !has_diagnostic(c, &uri, "unknown-table", "hris.teams")
    });
    let said = messages(&client);
    assert!(
        said.iter().any(|m| m.contains("read the catalog of")),
        "{said:?}"
    );
    assert!(!said.iter().any(|m| m.contains("cannot read")), "{said:?}");
    client.stop();
}

#[test]
fn an_unreachable_database_is_reported_without_its_password_and_the_catalog_file_serves() {
    let example = example();
    // The catalog file lacks a column the integration writes: its
    // unknown-column shows the file is used when the database is not.
    let catalog_path = example.integrations.join("catalog.json");
    let mut catalog: Value =
        serde_json::from_str(&std::fs::read_to_string(&catalog_path).unwrap()).unwrap();
    catalog["tables"]["hris.employees"]["columns"]
        .as_array_mut()
        .unwrap()
        .retain(|c| c["name"] != "phone");
    std::fs::write(&catalog_path, catalog.to_string()).unwrap();
    let uri = uri_of(&example.file).as_str().to_owned();
    let url = "postgres://busbar:s3cret-pw@127.0.0.1:1/busbar";
    let mut client = Client::start_with(&["--database-url", url], json!({}));
    client.open(&example.file, &example.text);
    let shown = |c: &Client| -> Vec<String> {
        c.others
            .iter()
            .filter(|m| m["method"] == "window/showMessage")
            .map(|m| m["params"]["message"].as_str().unwrap().to_owned())
            .collect()
    };
    client.wait_until("a message that the database cannot be read", |c| {
        shown(c).iter().any(|m| {
            m.contains("cannot read the catalog of postgres://busbar:***@127.0.0.1:1/busbar")
                && m.contains("catalog.json instead")
        })
    });
    client.wait_until("the catalog file's unknown-column", |c| {
        has_diagnostic(c, &uri, "unknown-column", "phone")
    });
    // The server goes on answering, from the catalog file.
    let offered = columns_offered(&mut client, &example, 2);
    assert!(offered.iter().any(|o| o == "first_name"), "{offered:?}");
    assert!(!offered.iter().any(|o| o == "phone"), "{offered:?}");
    // A refresh tries the database again, and says so again.
    let before = shown(&client).len();
    client.request(
        "workspace/executeCommand",
        json!({ "command": "busbar.refresh", "arguments": [] }),
    );
    client.wait_until("the refresh's message", |c| shown(c).len() > before);
    let said = messages(&client);
    assert!(
        !said.iter().any(|m| m.contains("s3cret-pw")),
        "the password is shown: {said:?}"
    );
    client.stop();
}

/// Asks for the code actions of `diagnostic` and applies the first one's
/// edit to `text`, checking its title.
fn apply_first_action(
    client: &mut Client,
    example: &Example,
    text: &str,
    diagnostic: &Value,
    title: &str,
) -> String {
    let uri = uri_of(&example.file).as_str().to_owned();
    let actions = client.request(
        "textDocument/codeAction",
        json!({ "textDocument": { "uri": uri }, "range": diagnostic["range"],
                "context": { "diagnostics": [diagnostic] } }),
    );
    assert_eq!(actions[0]["title"], title, "{actions}");
    let edit = &actions[0]["edit"]["changes"][&uri][0];
    apply_edit(text, edit)
}

#[test]
fn a_missing_not_null_column_is_added_to_the_upsert_by_a_quick_fix() {
    let example = example();
    let mut client = Client::start(json!({}));
    client.open(&example.file, &example.text);
    assert!(client.diagnostics_at(&example.file, 1).is_empty());
    let line = "          first_name: $.data.candidate.firstName\n";
    let without = example.text.replacen(line, "", 1);
    client.replace(&example.file, 2, &without);
    let diagnostics = client.diagnostics_at(&example.file, 2);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(diagnostics[0]["code"], "missing-not-null");
    let added = apply_first_action(
        &mut client,
        &example,
        &without,
        &diagnostics[0],
        "Add first_name to `values`",
    );
    assert!(
        added.contains("          first_name: $.data.first_name\n"),
        "{added}"
    );
    client.replace(&example.file, 3, &added);
    let diagnostics = client.diagnostics_at(&example.file, 3);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    // The placeholder path is checked against the contract like any other.
    assert_eq!(diagnostics[0]["code"], "not-in-contract");
    let fixed = added.replacen("$.data.first_name", "$.data.candidate.firstName", 1);
    client.replace(&example.file, 4, &fixed);
    assert!(client.diagnostics_at(&example.file, 4).is_empty());
    client.stop();
}
