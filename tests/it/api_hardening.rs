//! The API's answers to producers that would otherwise be silently
//! ignored, and its defences around headers and keys (issue 9, items 5 and
//! 7), over a real socket on SQLite and PostgreSQL: repeated ids in a
//! batch, repeated keys in a body, `routed` and the strict contract
//! policy, request ids that could forge log fields, floods of unknown
//! keys, and the dev key kept across restarts.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

use busbar::api::{self, ApiConfig, AppState, ContractPolicy, KeyCache, ReloadOutcome};
use busbar::dev::{DEV_KEY_NAME, ORGANIZATION};
use busbar::engine::Engine;
use busbar::store::keys::{self, Scope};
use busbar::store::types::Time;

use crate::support::{TestDb, candidate_hired, on_both_databases, root};

const SETTLE: Duration = Duration::from_secs(30);

/// busbar's API on a free port of 127.0.0.1, on a fresh database with the
/// example platform seeded.
struct App {
    base: String,
    client: reqwest::Client,
    /// A platform key with every scope.
    platform: String,
    /// Organization A's keys: publish only, and every scope (never used
    /// until a test uses it).
    publisher: String,
    unused: String,
    /// The server's key cache, to count its database lookups.
    keys: Arc<KeyCache>,
    db: TestDb,
    engine: Engine,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    #[track_caller]
    fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        assert_eq!(self.body["code"], code, "{self:?}");
    }

    fn pointers(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e["pointer"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Serves the shipped integrations, or those of `integrations`.
async fn spawn(db: TestDb, config: ApiConfig, integrations: Option<&Path>) -> App {
    db.seed().await;
    let engine = match integrations {
        Some(dir) => {
            db.engine_on(dir, Some(&root().join("schemas/events")))
                .await
        }
        None => db.engine().await,
    };
    let (platform, publisher, unused) = {
        let mut tx = db.store.begin().await.unwrap();
        let now = Time::now();
        let mut key = async |organization: Option<Uuid>, scopes: &[Scope]| {
            keys::create(&mut tx, organization, scopes, Some("test"), now)
                .await
                .unwrap()
                .key
        };
        let keys = (
            key(None, &Scope::ALL).await,
            key(Some(ORGANIZATION), &[Scope::Publish]).await,
            key(Some(ORGANIZATION), &Scope::ALL).await,
        );
        tx.commit().await.unwrap();
        keys
    };
    let reload = Arc::new(arc_swap::ArcSwap::from_pointee(ReloadOutcome::loaded(
        engine.generation().number,
    )));
    let state = AppState::new(engine.clone(), reload, config);
    let keys = state.keys.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (shutdown, stop) = oneshot::channel::<()>();
    let server = tokio::spawn(api::serve(
        listener,
        busbar::serve::app(state),
        async move {
            let _ = stop.await;
        },
    ));
    App {
        base,
        client: reqwest::Client::new(),
        platform,
        publisher,
        unused,
        keys,
        db,
        engine,
        shutdown: Some(shutdown),
        server: Some(server),
    }
}

/// A client whose connections come from another loopback address.
fn client_from(address: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(address))
        .build()
        .unwrap()
}

async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("the request is answered");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("a body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        headers,
        body,
    }
}

impl App {
    async fn publish(&self, body: &Value) -> Reply {
        send(
            self.client
                .post(format!("{}/api/events", self.base))
                .bearer_auth(&self.publisher)
                .json(body),
        )
        .await
    }

    /// Publishes a body exactly as written.
    async fn publish_text(&self, body: String) -> Reply {
        send(
            self.client
                .post(format!("{}/api/events", self.base))
                .bearer_auth(&self.publisher)
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    async fn status_with(&self, client: &reqwest::Client, key: &str) -> Reply {
        send(
            client
                .get(format!("{}/api/integrations/status", self.base))
                .bearer_auth(key),
        )
        .await
    }

    async fn stop(mut self) -> TestDb {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
        self.engine.shutdown().await;
        self.db
    }
}

fn with_id(mut event: Value, id: Uuid) -> Value {
    event["id"] = json!(id);
    event
}

/// A well-formed key that no database has.
fn random_key() -> String {
    let secret = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    format!(
        "bb_{}_{}",
        &Uuid::new_v4().simple().to_string()[..8],
        &secret[..40]
    )
}

on_both_databases! {
    async fn a_batch_with_the_same_id_twice_is_refused_naming_every_position(db: TestDb) {
        let app = spawn(db, ApiConfig::default(), None).await;
        let id = Uuid::now_v7();
        let events: Vec<Value> = (0..4)
            .map(|i| {
                let own = if i == 0 || i == 3 { id } else { Uuid::now_v7() };
                with_id(candidate_hired(ORGANIZATION, &format!("dup{i}@acme.example")), own)
            })
            .collect();
        let reply = app.publish(&json!({ "events": events })).await;
        reply.assert_problem(422, "duplicate-id");
        assert_eq!(reply.pointers(), ["/events/0/id", "/events/3/id"]);
        let messages = reply.body["errors"].to_string();
        assert!(messages.contains("/events/3") && messages.contains("/events/0"), "each names the other: {messages}");
        assert_eq!(app.db.count("integrations.events").await, 0, "nothing was stored");

        // Two pairs: every position of each.
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let pairs: Vec<Value> = [a, b, a, b]
            .iter()
            .enumerate()
            .map(|(i, id)| with_id(candidate_hired(ORGANIZATION, &format!("pair{i}@acme.example")), *id))
            .collect();
        let reply = app.publish(&json!({ "events": pairs })).await;
        reply.assert_problem(422, "duplicate-id");
        assert_eq!(reply.pointers(), ["/events/0/id", "/events/1/id", "/events/2/id", "/events/3/id"]);
        assert_eq!(app.db.count("integrations.events").await, 0);

        // With their own ids, the same events are stored.
        let fixed: Vec<Value> = (0..4)
            .map(|i| with_id(candidate_hired(ORGANIZATION, &format!("dup{i}@acme.example")), Uuid::now_v7()))
            .collect();
        let reply = app.publish(&json!({ "events": fixed })).await;
        assert_eq!(reply.status, 202, "{reply:?}");
        assert!(reply.body["events"].as_array().unwrap().iter().all(|e| e["created"] == true));
        app.stop().await;
    }
}

on_both_databases! {
    async fn a_body_with_a_repeated_key_is_refused_at_any_depth(db: TestDb) {
        let app = spawn(db, ApiConfig::default(), None).await;
        let event = with_id(candidate_hired(ORGANIZATION, "dup@acme.example"), Uuid::now_v7());
        let text = serde_json::to_string(&event).unwrap();
        let repeat = |text: &str, field: &str, evil: &str| {
            assert!(text.contains(field), "{field} in {text}");
            text.replacen(field, &format!("{field},{evil}"), 1)
        };
        let cases = [
            (repeat(&text, r#""source":"recruitiq""#, r#""source":"evil""#), vec!["/source"]),
            (
                repeat(&text, r#""email":"dup@acme.example""#, r#""email":"evil@acme.example""#),
                vec!["/data/candidate/email"],
            ),
            (
                repeat(&text, r#""jobTitle":"Analytical Engineer""#, r#""a/b~":1,"a/b~":2"#),
                vec!["/data/a~1b~0"],
            ),
            (
                format!(
                    r#"{{"events":[{text},{}]}}"#,
                    repeat(&text, r#""currency":"EUR""#, r#""currency":"USD""#)
                ),
                vec!["/events/1/data/offer/currency"],
            ),
            (
                repeat(
                    &repeat(&text, r#""event":"candidate.hired""#, r#""event":"candidate.fired""#),
                    r#""salary":72000"#,
                    r#""salary":1"#,
                ),
                vec!["/event", "/data/offer/salary"],
            ),
        ];
        for (body, pointers) in cases {
            let reply = app.publish_text(body.clone()).await;
            reply.assert_problem(400, "duplicate-key");
            assert_eq!(reply.pointers(), pointers, "{body}");
        }
        assert_eq!(app.db.count("integrations.events").await, 0, "nothing was stored");

        // The same key in different objects is no repeat.
        assert!(event["id"].is_string() && event["data"]["candidate"]["id"].is_string());
        let reply = app.publish_text(text).await;
        assert_eq!(reply.status, 202, "{reply:?}");
        // Malformed JSON is still malformed JSON.
        app.publish_text(r#"{"source": "a", "source": "#.into()).await.assert_problem(400, "malformed-json");
        app.stop().await;
    }
}

on_both_databases! {
    async fn the_answer_says_how_many_integrations_route_each_event(db: TestDb) {
        let app = spawn(db, ApiConfig::default(), None).await;
        let hired = with_id(candidate_hired(ORGANIZATION, "routed@acme.example"), Uuid::now_v7());
        let reply = app.publish(&hired).await;
        assert_eq!(reply.status, 202, "{reply:?}");
        assert_eq!(reply.body["routed"], 2, "recruitiq-to-nexus and recruitiq-to-paylinq");

        // Nobody listens to a misspelt event: stored, and the answer says so.
        let mut typo = candidate_hired(ORGANIZATION, "typo@acme.example");
        typo["event"] = json!("candidate.hierd");
        let reply = app.publish(&typo).await;
        assert_eq!(reply.status, 202, "{reply:?}");
        assert_eq!(reply.body["routed"], 0);
        assert_eq!(app.db.count_where("integrations.events", "event_name = 'candidate.hierd'").await, 1);

        let batch = json!({ "events": [candidate_hired(ORGANIZATION, "b0@acme.example"), typo] });
        let reply = app.publish(&batch).await;
        assert_eq!(reply.status, 202, "{reply:?}");
        let routed: Vec<&Value> = reply.body["events"].as_array().unwrap().iter().map(|e| &e["routed"]).collect();
        assert_eq!(routed, [&json!(2), &json!(0)]);

        // A disabled integration does not count.
        let disabled = send(
            app.client
                .post(format!("{}/api/integrations/recruitiq/nexus/disable", app.base))
                .bearer_auth(&app.platform),
        )
        .await;
        assert_eq!(disabled.status, 200, "{disabled:?}");
        let reply = app.publish(&candidate_hired(ORGANIZATION, "later@acme.example")).await;
        assert_eq!(reply.body["routed"], 1, "{reply:?}");
        // An event already stored is answered with today's count too.
        let again = app.publish(&hired).await;
        assert_eq!(again.status, 200, "{again:?}");
        assert_eq!(again.body["routed"], 1, "{again:?}");
        app.stop().await;
    }
}

const CELEBRATE: &str = r#"
id: celebrate
source: recruitiq
target: party
routes:
  - on: candidate.hired
    steps:
      - emit: candidate.celebrated
        data: { email: $.data.candidate.email }
"#;

on_both_databases! {
    async fn strict_contract_policy_refuses_events_without_a_contract(db: TestDb) {
        // The shipped integrations, and one that emits an event without a
        // contract.
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(root().join("integrations.d")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
            }
        }
        std::fs::write(dir.path().join("celebrate.yaml"), CELEBRATE).unwrap();
        let config = ApiConfig { contract_policy: ContractPolicy::Strict, ..ApiConfig::default() };
        let app = spawn(db, config, Some(dir.path())).await;

        let reply = app.publish(&candidate_hired(ORGANIZATION, "strict@acme.example")).await;
        assert_eq!(reply.status, 202, "an event with a contract: {reply:?}");
        assert_eq!(reply.body["routed"], 3);

        let mut typo = candidate_hired(ORGANIZATION, "typo@acme.example");
        typo["event"] = json!("candidate.hierd");
        let reply = app.publish(&typo).await;
        reply.assert_problem(422, "no-contract");
        assert_eq!(reply.pointers(), ["/event"]);
        assert!(reply.body["errors"][0]["message"].as_str().unwrap().contains("recruitiq/candidate.hierd"), "{reply:?}");

        let batch = json!({ "events": [candidate_hired(ORGANIZATION, "b0@acme.example"), typo] });
        let reply = app.publish(&batch).await;
        reply.assert_problem(422, "no-contract");
        assert_eq!(reply.pointers(), ["/events/1/event"]);
        let reply = app.publish(&json!({ "events": [typo] })).await;
        reply.assert_problem(422, "no-contract");
        assert_eq!(reply.pointers(), ["/events/0/event"]);

        // Emitted events are not the API's to refuse.
        app.db.settle(SETTLE).await;
        assert_eq!(app.db.count_where("integrations.events", "event_name = 'candidate.celebrated'").await, 1);
        assert_eq!(app.db.count_where("integrations.events", "event_name = 'candidate.hierd'").await, 0);
        assert_eq!(app.db.count_where("integrations.events", "parent_id IS NULL").await, 1, "only the first event was stored");
        app.stop().await;
    }
}

#[test]
fn contracts_strict_without_such_a_directory_hints_at_the_contract_policy() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("busbar.db").display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_busbar"))
        .current_dir(dir.path())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--watch",
            "off",
            "--database-url",
            &url,
        ])
        .arg("--dir")
        .arg(root().join("integrations.d"))
        .args(["--contracts", "strict"])
        .env("BUSBAR_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("busbar runs");
    // It must refuse to start, not serve without contracts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve started with `--contracts strict` naming no directory");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--contract-policy strict"), "{stderr}");
}

/// The API's defaults, with `failures` failed authentications allowed per
/// address in a minute.
fn failure_limited(failures: u32) -> ApiConfig {
    ApiConfig {
        auth_failure_limit: failures,
        auth_failure_window: Duration::from_secs(60),
        ..ApiConfig::default()
    }
}

on_both_databases! {
    async fn a_flood_of_unknown_keys_reaches_the_database_at_most_the_limit(db: TestDb) {
        const LIMIT: u32 = 5;
        let app = spawn(db, failure_limited(LIMIT), None).await;
        // A key in use from the address about to flood.
        assert_eq!(app.status_with(&app.client, &app.platform).await.status, 200);
        let before = app.keys.lookups();

        // 64 connections, 4 random keys each.
        let mut flood = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let client = app.client.clone();
            let url = format!("{}/api/integrations/status", app.base);
            flood.spawn(async move {
                let mut replies = Vec::new();
                for _ in 0..4 {
                    replies.push(send(client.get(&url).bearer_auth(random_key())).await);
                }
                replies
            });
        }
        let replies: Vec<Reply> = flood.join_all().await.into_iter().flatten().collect();
        let refused = replies.iter().filter(|r| r.status == 401).count();
        let throttled: Vec<&Reply> = replies.iter().filter(|r| r.status == 429).collect();
        assert_eq!(refused, LIMIT as usize, "only the first failures are looked up");
        assert_eq!(refused + throttled.len(), replies.len());
        for reply in &throttled {
            reply.assert_problem(429, "too-many-auth-failures");
            let wait: u32 = reply.header("retry-after").expect("Retry-After").parse().unwrap();
            assert!((1..=60).contains(&wait), "{reply:?}");
        }
        assert_eq!(app.keys.lookups() - before, u64::from(LIMIT), "the flood reached the database {LIMIT} times");

        // The key in use keeps working from the flooding address, and a key
        // never used before works from another address.
        assert_eq!(app.status_with(&app.client, &app.platform).await.status, 200);
        let elsewhere = client_from([127, 0, 0, 2]);
        let reply = app.status_with(&elsewhere, &app.unused).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let published = send(
            elsewhere
                .post(format!("{}/api/events", app.base))
                .bearer_auth(&app.publisher)
                .json(&candidate_hired(ORGANIZATION, "flooded@acme.example")),
        )
        .await;
        assert_eq!(published.status, 202, "{published:?}");
        // From the flooding address a key busbar has seen valid is served;
        // an unknown one waits for the window to end.
        assert_eq!(app.status_with(&app.client, &app.unused).await.status, 200);
        app.status_with(&app.client, &random_key()).await.assert_problem(429, "too-many-auth-failures");

        // One address retrying the same unknown key costs one lookup.
        let retrier = client_from([127, 0, 0, 3]);
        let mistyped = random_key();
        let before = app.keys.lookups();
        for _ in 0..3 {
            app.status_with(&retrier, &mistyped).await.assert_problem(401, "invalid-key");
        }
        assert_eq!(app.keys.lookups() - before, 1);

        let metrics = send(app.client.get(format!("{}/metrics", app.base))).await;
        let text = metrics.body.as_str().unwrap();
        for name in ["busbar_auth_lookups_total", "busbar_auth_failures_total", "busbar_auth_throttled_total"] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        app.stop().await;
    }
}

on_both_databases! {
    async fn a_burst_of_first_requests_with_a_valid_key_is_served(db: TestDb) {
        // A producer that opens 64 connections at once with a key busbar
        // has not read yet: each request is a first sight of the key, but
        // the key is valid, so none may count as a failed authentication
        // (found by the 64-connection benchmark: 429s for a valid key).
        const LIMIT: u32 = 5;
        let app = spawn(db, failure_limited(LIMIT), None).await;
        let before = app.keys.lookups();
        let mut burst = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let client = app.client.clone();
            let url = format!("{}/api/integrations/status", app.base);
            let key = app.platform.clone();
            burst.spawn(async move { send(client.get(&url).bearer_auth(key)).await });
        }
        for reply in burst.join_all().await {
            assert_eq!(reply.status, 200, "{reply:?}");
        }
        assert_eq!(app.keys.lookups() - before, 1, "the key was read once for the whole burst");
        app.stop().await;
    }
}

/// `busbar serve --dev` as a process, its standard error collected.
struct Server {
    child: Child,
    base: String,
    key: String,
    banner: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `serve --dev` on `url` in `cwd` and waits for its banner.
    fn start(url: &str, cwd: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_busbar"))
            .current_dir(cwd)
            .args([
                "serve",
                "--dev",
                "--listen",
                "127.0.0.1:0",
                "--watch",
                "off",
                "--log-format",
                "text",
            ])
            .args(["--database-url", url, "--dir"])
            .arg(root().join("integrations.d"))
            .arg("--contracts")
            .arg(root().join("schemas/events"))
            .args(extra)
            .env("BUSBAR_LOG", "busbar=debug")
            .env_remove("BUSBAR_CONTRACT_POLICY")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("busbar serve starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let stderr = stderr.clone();
            let mut pipe = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while let Ok(n) = std::io::Read::read(&mut pipe, &mut buffer) {
                    if n == 0 {
                        break;
                    }
                    stderr
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buffer[..n]));
                }
            });
        }
        let (lines, banner_lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut banner = String::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !banner.contains("openapi.json") {
            let left = deadline.saturating_duration_since(Instant::now());
            match banner_lines.recv_timeout(left) {
                Ok(line) => {
                    banner.push_str(&line);
                    banner.push('\n');
                }
                Err(_) => panic!(
                    "no banner from serve --dev:\n{banner}\n{}",
                    stderr.lock().unwrap()
                ),
            }
        }
        let base = banner
            .lines()
            .find_map(|l| {
                l.split_once("is serving on ")
                    .map(|(_, base)| base.trim().to_owned())
            })
            .expect("the address");
        let key = banner
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("export BUSBAR_KEY=")
                    .map(str::to_owned)
            })
            .expect("the key");
        Server {
            child,
            base,
            key,
            banner,
            stderr,
        }
    }

    /// Waits until the log holds `text`.
    async fn await_log(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.stderr.lock().unwrap().clone();
            if log.contains(text) {
                return log;
            }
            assert!(Instant::now() < deadline, "`{text}` never logged:\n{log}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn status(&self, key: &str) -> u16 {
        reqwest::Client::new()
            .get(format!("{}/api/integrations/status", self.base))
            .bearer_auth(key)
            .send()
            .await
            .expect("answered")
            .status()
            .as_u16()
    }

    /// Kills the server (SIGKILL: what a restart after a crash sees).
    fn stop(self) {
        drop(self);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

on_both_databases! {
    async fn request_ids_that_could_forge_log_fields_are_replaced(db: TestDb) {
        let cwd = tempfile::tempdir().unwrap();
        let server = Server::start(&db.url, cwd.path(), &[]);
        let client = reqwest::Client::new();
        let healthz = format!("{}/healthz", server.base);
        let answered_id = async |request: reqwest::RequestBuilder| {
            let response = request.send().await.expect("answered");
            assert_eq!(response.status().as_u16(), 200);
            response.headers().get("x-request-id").expect("an id").to_str().unwrap().to_owned()
        };
        let forged: Vec<(&str, reqwest::header::HeaderValue)> = vec![
            ("overlong", "q".repeat(8000).parse().unwrap()),
            ("129 characters", "r".repeat(129).parse().unwrap()),
            ("fields", "forged-7 status=299 path=/forged".parse().unwrap()),
            ("a tab", "tabbed\tid-9".parse().unwrap()),
            ("a byte beyond ASCII", reqwest::header::HeaderValue::from_bytes(b"obstext-5\xe9").unwrap()),
            ("an empty id", "".parse().unwrap()),
        ];
        for (what, value) in forged {
            let id = answered_id(client.get(&healthz).header("x-request-id", value)).await;
            assert!(Uuid::parse_str(&id).is_ok(), "{what}: a fresh id, not {id}");
        }
        let id = answered_id(client.get(&healthz).header("x-request-id", "double-1").header("x-request-id", "double-2")).await;
        assert!(Uuid::parse_str(&id).is_ok(), "two ids: a fresh one, not {id}");
        // Safe ids are kept, up to 128 characters.
        for kept in ["trace:42.a_b-C", &"s".repeat(128)] {
            assert_eq!(answered_id(client.get(&healthz).header("x-request-id", kept)).await, kept);
        }

        let log = server.await_log(&"s".repeat(128)).await;
        assert!(log.contains("request_id=trace:42.a_b-C"), "{log}");
        for forged in ["qqqqqqqqqq", "rrrrrrrrrr", "forged-7", "status=299", "path=/forged", "tabbed", "obstext-5", "double-1", "double-2"] {
            assert!(!log.contains(forged), "`{forged}` reached the log:\n{log}");
        }
        server.stop();
    }
}

/// Where `serve --dev` run in `cwd` keeps its key for `url`.
fn key_file(url: &str, cwd: &Path) -> PathBuf {
    let file = busbar::dev::dev_key_file(url).expect("a file database or PostgreSQL");
    if file.is_absolute() {
        file
    } else {
        cwd.join(file)
    }
}

on_both_databases! {
    async fn serve_dev_keeps_its_key_across_restarts(db: TestDb) {
        let cwd = tempfile::tempdir().unwrap();
        let first = Server::start(&db.url, cwd.path(), &[]);
        assert!(first.banner.contains("A new dev admin key"), "{}", first.banner);
        assert_eq!(first.status(&first.key).await, 200);
        let key = first.key.clone();
        first.stop();

        // The same key after a restart, and it still works.
        let file = key_file(&db.url, cwd.path());
        let text = std::fs::read_to_string(&file).expect("the key is kept");
        assert!(text.lines().any(|l| l == key), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "only its owner may read the key");
        }
        let second = Server::start(&db.url, cwd.path(), &[]);
        assert_eq!(second.key, key);
        assert!(second.banner.contains("the same as last run"), "{}", second.banner);
        assert!(second.banner.contains(&file.file_name().unwrap().to_string_lossy().into_owned()), "{}", second.banner);
        assert_eq!(second.status(&key).await, 200);
        second.stop();

        // --new-key: a new key, and the old one is revoked.
        let third = Server::start(&db.url, cwd.path(), &["--new-key"]);
        assert_ne!(third.key, key);
        assert_eq!(third.status(&key).await, 401);
        assert_eq!(third.status(&third.key).await, 200);
        let renewed = third.key.clone();
        third.stop();

        // A kept key that was revoked meanwhile is replaced.
        let mut tx = db.store.begin().await.unwrap();
        assert_eq!(keys::revoke_named(&mut tx, DEV_KEY_NAME, Time::now()).await.unwrap(), 1);
        tx.commit().await.unwrap();
        let fourth = Server::start(&db.url, cwd.path(), &[]);
        assert_ne!(fourth.key, renewed);
        assert!(fourth.banner.contains("A new dev admin key"), "{}", fourth.banner);
        assert_eq!(fourth.status(&fourth.key).await, 200);
        let latest = fourth.key.clone();
        fourth.stop();
        assert!(std::fs::read_to_string(&file).unwrap().contains(&latest));
    }
}
