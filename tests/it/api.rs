//! The HTTP API over a real socket, on SQLite and PostgreSQL: every
//! endpoint's success and failure paths, the authorization matrix, requests
//! that try to break it, and the original spec's flow through HTTP.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use busbar::api::{self, ApiConfig, AppState, ReloadOutcome};
use busbar::dev::{ORGANIZATION, ORGANIZATION_WITHOUT_SUBSCRIPTIONS};
use busbar::engine::Engine;
use busbar::store::events::{self, Status};
use busbar::store::keys::{self, Scope};
use busbar::store::scope::OrgScope;
use busbar::store::types::Time;
use busbar::store::views;

use crate::support::{TestDb, busbar_cli_async, candidate_hired, on_both_databases, root};

const SETTLE: Duration = Duration::from_secs(30);

/// The keys every test app has.
struct Keys {
    /// Platform key with every scope.
    platform: String,
    /// Organization A (`ORGANIZATION`), one scope each.
    publisher: String,
    reader: String,
    admin: String,
    /// Organization B (`ORGANIZATION_WITHOUT_SUBSCRIPTIONS`), every scope.
    other: String,
}

/// busbar's API on a free port of 127.0.0.1, on a fresh database with the
/// example platform seeded.
struct App {
    base: String,
    client: reqwest::Client,
    keys: Keys,
    db: TestDb,
    engine: Engine,
    draining: CancellationToken,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

/// An answer, its body parsed as JSON when it is JSON.
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

    /// Asserts a problem+json answer with `status` and `code`.
    #[track_caller]
    fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        assert_eq!(self.body["code"], code, "{self:?}");
        assert_eq!(self.body["status"], status, "{self:?}");
        assert!(
            self.body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{self:?}"
        );
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

async fn spawn_app(db: TestDb) -> App {
    spawn_app_with(
        db,
        ApiConfig {
            // Every request asks the database, so revocation shows at once.
            key_cache_ttl: Duration::ZERO,
            ..ApiConfig::default()
        },
    )
    .await
}

async fn spawn_app_with(db: TestDb, config: ApiConfig) -> App {
    db.seed().await;
    let engine = db.engine().await;
    let keys = {
        let mut tx = db.store.begin().await.unwrap();
        let now = Time::now();
        let mut key = async |organization: Option<Uuid>, scopes: &[Scope]| {
            keys::create(&mut tx, organization, scopes, Some("test"), now)
                .await
                .unwrap()
                .key
        };
        let keys = Keys {
            platform: key(None, &Scope::ALL).await,
            publisher: key(Some(ORGANIZATION), &[Scope::Publish]).await,
            reader: key(Some(ORGANIZATION), &[Scope::Read]).await,
            admin: key(Some(ORGANIZATION), &[Scope::Admin]).await,
            other: key(Some(ORGANIZATION_WITHOUT_SUBSCRIPTIONS), &Scope::ALL).await,
        };
        tx.commit().await.unwrap();
        keys
    };
    let reload = std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(ReloadOutcome::loaded(
        engine.generation().number,
    )));
    let state = AppState::new(engine.clone(), reload, config);
    let draining = state.draining.clone();
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
        keys,
        db,
        engine,
        draining,
        shutdown: Some(shutdown),
        server: Some(server),
    }
}

impl App {
    async fn send(&self, request: reqwest::RequestBuilder, key: Option<&str>) -> Reply {
        let request = match key {
            Some(key) => request.bearer_auth(key),
            None => request,
        };
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

    async fn get(&self, path: &str, key: Option<&str>) -> Reply {
        self.send(self.client.get(format!("{}{path}", self.base)), key)
            .await
    }

    async fn post(&self, path: &str, key: Option<&str>, body: &Value) -> Reply {
        self.send(
            self.client.post(format!("{}{path}", self.base)).json(body),
            key,
        )
        .await
    }

    /// A POST without a body.
    async fn post_empty(&self, path: &str, key: Option<&str>) -> Reply {
        self.send(self.client.post(format!("{}{path}", self.base)), key)
            .await
    }

    async fn publish(&self, event: &Value) -> Reply {
        self.post("/api/events", Some(&self.keys.publisher), event)
            .await
    }

    /// Stops accepting, waits for the server, then stops the engine.
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

/// Marks every delivery of `event` dead, as a permanent failure would.
fn example_event() -> Value {
    let text =
        std::fs::read_to_string(root().join("examples/events/candidate.hired.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn with_id(mut event: Value, id: Uuid) -> Value {
    event["id"] = json!(id);
    event
}

on_both_databases! {
    async fn hired_candidate_published_over_http_becomes_employee_and_payroll_record(db: TestDb) {
        let app = spawn_app(db).await;
        let event = example_event();
        assert_eq!(event["id"], json!(busbar::dev::EXAMPLE_EVENT_ID), "serve --dev prints this id");
        let published = app.publish(&event).await;
        assert_eq!(published.status, 202, "{published:?}");
        assert_eq!(published.body, json!({"id": busbar::dev::EXAMPLE_EVENT_ID, "created": true, "routed": 2}));
        app.db.settle(SETTLE).await;

        let detail = app.get(&format!("/api/integrations/events/{}", event["id"].as_str().unwrap()), Some(&app.keys.reader)).await;
        assert_eq!(detail.status, 200, "{detail:?}");
        assert_eq!(detail.body["event"], "candidate.hired");
        assert_eq!(detail.body["data"], event["data"]);
        let deliveries = detail.body["deliveries"].as_array().unwrap();
        let mut integrations: Vec<&str> = deliveries.iter().map(|d| d["integration"].as_str().unwrap()).collect();
        integrations.sort();
        assert_eq!(integrations, ["recruitiq-to-nexus", "recruitiq-to-paylinq"]);
        assert!(deliveries.iter().all(|d| d["status"] == "delivered" && d["last_error"].is_null()), "{deliveries:?}");
        // As docs/API.md says: a first-pass success has no row, its order
        // key is the candidate (the shipped integrations' `order_by`), and
        // it waits on nothing.
        for delivery in deliveries {
            assert_eq!(delivery["recorded"], false, "{delivery}");
            assert_eq!(delivery["order_key"], event["data"]["candidate"]["id"], "{delivery}");
            assert!(delivery["waiting_on"].is_null(), "{delivery}");
        }

        // The emitted employee.created, and through it the payroll delivery.
        let emitted = detail.body["emitted"].as_array().unwrap();
        assert_eq!(emitted.len(), 1, "{emitted:?}");
        assert_eq!(emitted[0]["event"], "employee.created");
        assert_eq!(emitted[0]["data"]["email"], "ada.lovelace@example.com");
        let child = app.get(&format!("/api/integrations/events/{}", emitted[0]["id"].as_str().unwrap()), Some(&app.keys.reader)).await;
        assert_eq!(child.status, 200);
        assert_eq!(child.body["parent_id"], event["id"]);
        assert_eq!(child.body["deliveries"][0]["integration"], "nexus-to-paylinq");
        assert_eq!(child.body["deliveries"][0]["status"], "delivered");

        let employee = app.db.find("hris.employees", &[("email", json!("ada.lovelace@example.com"))]).await.expect("the employee exists");
        assert_eq!(employee["id"], emitted[0]["data"]["employee_id"]);
        assert!(app.db.find("payroll.employee_records", &[("employee_id", employee["id"].clone())]).await.is_some());

        let status = app.get("/api/integrations/status", Some(&app.keys.reader)).await;
        assert_eq!(status.status, 200, "{status:?}");
        assert_eq!(status.body["organization_id"], json!(ORGANIZATION));
        assert_eq!(status.body["reload"]["ok"], true);
        for integration in status.body["integrations"].as_array().unwrap() {
            assert_eq!(integration["deliveries"]["delivered"], 1, "{integration}");
            assert_eq!(integration["enabled"], true);
            assert!(integration["last_error"].is_null());
        }
        app.stop().await;
    }
}

on_both_databases! {
    async fn publish_with_same_id_twice_creates_one_event(db: TestDb) {
        let app = spawn_app(db).await;
        let id = Uuid::now_v7();
        let event = with_id(candidate_hired(ORGANIZATION, "twice@acme.example"), id);
        let first = app.publish(&event).await;
        assert_eq!(first.status, 202, "{first:?}");
        let second = app.publish(&event).await;
        assert_eq!(second.status, 200, "{second:?}");
        assert_eq!(second.body["id"], json!(id));
        assert_eq!(second.body["created"], false);
        assert_eq!(second.body["event"]["data"], event["data"], "the stored event comes back");
        assert_eq!(app.db.count_where("integrations.events", &format!("id = '{id}'")).await, 1);
        let deliveries: Vec<_> = app.db.deliveries(None).await.into_iter().filter(|d| d.event_id == id).collect();
        assert_eq!(deliveries.len(), 2, "{deliveries:?}");

        // The same id with other content is refused (409 id-reused), and
        // nothing of the request is stored.
        let mut changed = event.clone();
        changed["data"]["candidate"]["firstName"] = json!("Augusta");
        let reply = app.publish(&changed).await;
        reply.assert_problem(409, "id-reused");
        assert_eq!(reply.pointers(), ["/id"]);
        assert!(reply.body["detail"].as_str().unwrap().contains("data"), "{reply:?}");
        let fresh = with_id(candidate_hired(ORGANIZATION, "fresh@acme.example"), Uuid::now_v7());
        let reply = app.publish(&json!({ "events": [fresh, changed] })).await;
        reply.assert_problem(409, "id-reused");
        assert_eq!(reply.pointers(), ["/events/1/id"]);
        let fresh_id = fresh["id"].as_str().unwrap();
        assert_eq!(app.db.count_where("integrations.events", &format!("id = '{fresh_id}'")).await, 0, "all or none");
        // An Idempotency-Key reused with another body: refused the same way.
        let keyed = candidate_hired(ORGANIZATION, "keyed-once@acme.example");
        let reply = app.send(app.client.post(format!("{}/api/events", app.base)).header("idempotency-key", "order-7").json(&keyed), Some(&app.keys.publisher)).await;
        assert_eq!(reply.status, 202, "{reply:?}");
        let mut other = keyed.clone();
        other["data"]["candidate"]["lastName"] = json!("Byron");
        let reply = app.send(app.client.post(format!("{}/api/events", app.base)).header("idempotency-key", "order-7").json(&other), Some(&app.keys.publisher)).await;
        reply.assert_problem(409, "id-reused");

        // Ids are unique per organization: another organization may use
        // the same id for its own event, which is stored, and learns
        // nothing of the first organization's.
        let theirs = with_id(candidate_hired(ORGANIZATION_WITHOUT_SUBSCRIPTIONS, "clash@globex.example"), id);
        let reply = app.post("/api/events", Some(&app.keys.other), &theirs).await;
        assert_eq!(reply.status, 202, "{reply:?}");
        assert!(!reply.body.to_string().contains("twice@acme.example"));
        assert_eq!(app.db.count_where("integrations.events", &format!("id = '{id}'")).await, 2);
        let mine = app.get(&format!("/api/integrations/events/{id}"), Some(&app.keys.reader)).await;
        assert_eq!(mine.body["data"]["candidate"]["email"], "twice@acme.example");
        let theirs = app.get(&format!("/api/integrations/events/{id}"), Some(&app.keys.other)).await;
        assert_eq!(theirs.body["data"]["candidate"]["email"], "clash@globex.example");
        // A platform key names the organization when two use the id.
        app.get(&format!("/api/integrations/events/{id}"), Some(&app.keys.platform)).await.assert_problem(409, "ambiguous-id");
        let one = app.get(&format!("/api/integrations/events/{id}?organization_id={ORGANIZATION}"), Some(&app.keys.platform)).await;
        assert_eq!(one.body["data"]["candidate"]["email"], "twice@acme.example");
        app.stop().await;
    }
}

on_both_databases! {
    async fn idempotency_key_makes_a_publish_without_id_idempotent(db: TestDb) {
        let app = spawn_app(db).await;
        let event = candidate_hired(ORGANIZATION, "keyed@acme.example");
        let send = || {
            app.send(
                app.client
                    .post(format!("{}/api/events", app.base))
                    .header("Idempotency-Key", "hire-42")
                    .json(&event),
                Some(&app.keys.publisher),
            )
        };
        let first = send().await;
        assert_eq!(first.status, 202, "{first:?}");
        let second = send().await;
        assert_eq!(second.status, 200, "{second:?}");
        assert_eq!(second.body["id"], first.body["id"]);
        assert_eq!(app.db.count_where("integrations.events", "idempotency_key = 'hire-42'").await, 1);

        // The same key in another organization is another event.
        let other = app
            .send(
                app.client
                    .post(format!("{}/api/events", app.base))
                    .header("Idempotency-Key", "hire-42")
                    .json(&candidate_hired(ORGANIZATION_WITHOUT_SUBSCRIPTIONS, "keyed@globex.example")),
                Some(&app.keys.other),
            )
            .await;
        assert_eq!(other.status, 202, "{other:?}");
        assert_ne!(other.body["id"], first.body["id"]);

        for bad in ["", &"x".repeat(181), "two words"] {
            let reply = app
                .send(
                    app.client.post(format!("{}/api/events", app.base)).header("Idempotency-Key", bad).json(&event),
                    Some(&app.keys.publisher),
                )
                .await;
            reply.assert_problem(400, "invalid-idempotency-key");
        }
        app.stop().await;
    }
}

on_both_databases! {
    async fn a_batch_is_stored_whole_and_reports_each_event(db: TestDb) {
        let app = spawn_app(db).await;
        let events: Vec<Value> = (0..3)
            .map(|i| with_id(candidate_hired(ORGANIZATION, &format!("batch{i}@acme.example")), Uuid::now_v7()))
            .collect();
        let batch = json!({ "events": events });
        let first = app.publish(&batch).await;
        assert_eq!(first.status, 202, "{first:?}");
        let answered = first.body["events"].as_array().unwrap();
        assert_eq!(answered.len(), 3);
        for (answer, event) in answered.iter().zip(&events) {
            assert_eq!(answer["id"], event["id"]);
            assert_eq!(answer["created"], true);
        }
        let again = app.publish(&batch).await;
        assert_eq!(again.status, 200, "{again:?}");
        assert!(again.body["events"].as_array().unwrap().iter().all(|e| e["created"] == false));
        assert_eq!(app.db.count_where("integrations.events", "parent_id IS NULL").await, 3);

        // A batch with an Idempotency-Key: each event gets `<key>#<index>`.
        let keyed = json!({ "events": [candidate_hired(ORGANIZATION, "k0@acme.example"), candidate_hired(ORGANIZATION, "k1@acme.example")] });
        let send = || {
            app.send(
                app.client.post(format!("{}/api/events", app.base)).header("Idempotency-Key", "import-7").json(&keyed),
                Some(&app.keys.publisher),
            )
        };
        let first = send().await;
        assert_eq!(first.status, 202, "{first:?}");
        let second = send().await;
        assert_eq!(second.status, 200, "{second:?}");
        assert_eq!(first.body["events"][1]["id"], second.body["events"][1]["id"]);
        assert_eq!(app.db.count_where("integrations.events", "idempotency_key = 'import-7#1'").await, 1);
        app.stop().await;
    }
}

on_both_databases! {
    async fn invalid_events_are_refused_with_every_violation_and_nothing_is_stored(db: TestDb) {
        let app = spawn_app(db).await;
        // Envelope problems, over a batch: every event's, numbered.
        let mut bad_org = candidate_hired(ORGANIZATION, "a@acme.example");
        bad_org["organization_id"] = json!("not-a-uuid");
        let mut bad_field = candidate_hired(ORGANIZATION, "b@acme.example");
        bad_field["colour"] = json!("blue");
        let mut bad_time = candidate_hired(ORGANIZATION, "c@acme.example");
        bad_time["occurred_at"] = json!("yesterday");
        let batch = json!({ "events": [candidate_hired(ORGANIZATION, "ok@acme.example"), bad_org, bad_field, bad_time] });
        let reply = app.publish(&batch).await;
        reply.assert_problem(422, "invalid-event");
        assert_eq!(reply.pointers(), ["/events/1/organization_id", "/events/2/colour", "/events/3/occurred_at"]);

        // Contract violations of one event: every one, with its pointer.
        let mut event = candidate_hired(ORGANIZATION, "not-an-email");
        event["data"]["candidate"].as_object_mut().unwrap().remove("firstName");
        event["data"]["offer"]["salary"] = json!("lots");
        let reply = app.publish(&event).await;
        reply.assert_problem(422, "invalid-event");
        let pointers = reply.pointers();
        assert!(pointers.len() >= 2, "{reply:?}");
        assert!(pointers.iter().all(|p| p.starts_with("/data")), "{pointers:?}");
        assert!(pointers.iter().any(|p| p == "/data/offer/salary"), "{pointers:?}");

        // The same in a batch of one is numbered too.
        let reply = app.publish(&json!({ "events": [event] })).await;
        reply.assert_problem(422, "invalid-event");
        assert!(reply.pointers().iter().all(|p| p.starts_with("/events/0/data")), "{reply:?}");

        // Batches of the wrong shape or size.
        app.publish(&json!({ "events": [] })).await.assert_problem(422, "invalid-event");
        app.publish(&json!({ "events": {} })).await.assert_problem(422, "invalid-event");
        let reply = app.publish(&json!({ "events": [candidate_hired(ORGANIZATION, "x@acme.example")], "extra": 1 })).await;
        reply.assert_problem(422, "invalid-event");
        assert_eq!(reply.pointers(), ["/extra"]);
        let tiny = json!({"source": "a", "event": "b.c", "organization_id": ORGANIZATION});
        let too_many = json!({ "events": vec![tiny; busbar::api::MAX_BATCH + 1] });
        app.publish(&too_many).await.assert_problem(422, "invalid-event");
        app.publish(&json!([1, 2])).await.assert_problem(422, "invalid-event");
        app.publish(&json!("an event")).await.assert_problem(422, "invalid-event");
        let mut nul = candidate_hired(ORGANIZATION, "nul@acme.example");
        nul["data"]["jobTitle"] = json!("a\u{0}b");
        app.publish(&nul).await.assert_problem(422, "invalid-event");

        assert_eq!(app.db.count("integrations.events").await, 0);
        app.stop().await;
    }
}

on_both_databases! {
    async fn malformed_requests_get_a_clear_4xx_never_a_5xx(db: TestDb) {
        let app = spawn_app(db).await;
        let url = format!("{}/api/events", app.base);
        let key = Some(app.keys.platform.as_str());
        let raw = |body: &'static str, content_type: &'static str| {
            app.client.post(&url).header("content-type", content_type).body(body)
        };
        app.send(raw("{\"source\": ", "application/json"), key).await.assert_problem(400, "malformed-json");
        app.send(raw("", "application/json"), key).await.assert_problem(400, "malformed-json");
        app.send(raw("{}", "text/plain"), key).await.assert_problem(415, "unsupported-media-type");
        app.send(app.client.post(&url).body("{}"), key).await.assert_problem(415, "unsupported-media-type");
        let nested = format!("{}{}", "[".repeat(200), "]".repeat(200));
        app.send(app.client.post(&url).header("content-type", "application/json").body(nested), key)
            .await
            .assert_problem(400, "malformed-json");
        let oversized = format!("{{\"data\": \"{}\"}}", "x".repeat(1024 * 1024));
        app.send(app.client.post(&url).header("content-type", "application/json").body(oversized), key)
            .await
            .assert_problem(413, "body-too-large");

        let reader = Some(app.keys.reader.as_str());
        for (path, code) in [
            ("/api/integrations/events/not-a-uuid", "invalid-path"),
            ("/api/integrations/events?since=yesterday", "invalid-query"),
            ("/api/integrations/events?until=2026-13-01T00:00:00Z", "invalid-query"),
            ("/api/integrations/events?limit=0", "invalid-query"),
            ("/api/integrations/events?limit=501", "invalid-query"),
            ("/api/integrations/events?limit=ten", "invalid-query"),
            ("/api/integrations/events?status=lost", "invalid-query"),
            ("/api/integrations/events?source=Recruit%20IQ", "invalid-query"),
            ("/api/integrations/events?source=a%00b", "invalid-query"),
            ("/api/integrations/events?event=hired!", "invalid-query"),
            ("/api/integrations/events?colour=blue", "invalid-query"),
            ("/api/integrations/events?cursor=garbage", "invalid-cursor"),
            ("/api/integrations/events?organization_id=nope", "invalid-query"),
            ("/api/integrations/status?organization_id=nope", "invalid-query"),
        ] {
            app.get(path, reader).await.assert_problem(400, code);
        }
        let admin = Some(app.keys.admin.as_str());
        app.post_empty("/api/integrations/deliveries/123/replay", admin).await.assert_problem(400, "invalid-path");
        app.post_empty("/api/integrations/recruitiq-to-nexus/replay?organization_id=x", admin)
            .await
            .assert_problem(400, "invalid-query");
        app.get("/api/nothing-here", reader).await.assert_problem(404, "route-not-found");
        app.get("/api/events", reader).await.assert_problem(405, "method-not-allowed");
        app.send(app.client.delete(format!("{}/api/integrations/status", app.base)), reader)
            .await
            .assert_problem(405, "method-not-allowed");
        app.stop().await;
    }
}

/// Who calls, in the authorization matrix.
#[derive(Debug, Clone, Copy)]
enum Who {
    Nobody,
    /// A well-formed key that does not exist.
    UnknownKey,
    /// A real key's prefix with a wrong secret.
    WrongSecret,
    /// Not a bearer token at all.
    Garbage,
    /// A key of the right organization without the needed scope.
    WrongScope,
    /// Organization B's key with every scope.
    OtherOrganization,
    /// The key meant for this endpoint.
    Right,
}

on_both_databases! {
    async fn authorization_matrix_lets_only_the_right_key_through_and_leaks_nothing(db: TestDb) {
        let app = spawn_app(db).await;
        let event_id = Uuid::now_v7();
        // A poison: the engine dead-letters its deliveries.
        app.db.poison().await;
        let event = with_id(candidate_hired(ORGANIZATION, "dead-matrix@acme.example"), event_id);
        assert_eq!(app.publish(&event).await.status, 202);
        app.db.settle(SETTLE).await;
        let delivery = app.db.deliveries(Some(Status::Dead)).await[0].id;

        let publish_body = candidate_hired(ORGANIZATION, "matrix2@acme.example");
        let k = &app.keys;
        let wrong_secret = {
            let mut key = k.reader.clone();
            let last = key.pop().unwrap();
            key.push(if last == 'a' { 'b' } else { 'a' });
            key
        };
        // (method, path, body, wrong-scope key, right key, other organization's answer, right answer)
        let event_path = format!("/api/integrations/events/{event_id}");
        let replay_path = format!("/api/integrations/deliveries/{delivery}/replay");
        type Case<'a> = (&'a str, &'a str, Option<&'a Value>, &'a str, &'a str, u16, u16);
        let cases: Vec<Case<'_>> = vec![
            ("POST", "/api/events", Some(&publish_body), &k.reader, &k.publisher, 403, 202),
            ("GET", "/api/integrations/status", None, &k.publisher, &k.reader, 200, 200),
            ("GET", "/api/integrations/events", None, &k.publisher, &k.reader, 200, 200),
            ("GET", &event_path, None, &k.publisher, &k.reader, 404, 200),
            ("POST", "/api/integrations/recruitiq/nexus/disable", None, &k.reader, &k.platform, 403, 200),
            ("POST", "/api/integrations/recruitiq/nexus/enable", None, &k.reader, &k.platform, 403, 200),
            ("POST", &replay_path, None, &k.reader, &k.admin, 404, 202),
            ("POST", "/api/integrations/recruitiq-to-paylinq/replay", None, &k.reader, &k.admin, 202, 202),
        ];
        for (method, path, body, wrong_scope, right, other_answer, right_answer) in cases {
            for who in [
                Who::Nobody,
                Who::UnknownKey,
                Who::WrongSecret,
                Who::Garbage,
                Who::WrongScope,
                Who::OtherOrganization,
                Who::Right,
            ] {
                let url = format!("{}{path}", app.base);
                let mut request = match method {
                    "GET" => app.client.get(&url),
                    _ => app.client.post(&url),
                };
                if let Some(body) = body {
                    request = request.json(body);
                }
                let unknown = format!("bb_zzzzzzzz_{}", "Z".repeat(40));
                let (request, key) = match who {
                    Who::Nobody => (request, None),
                    Who::UnknownKey => (request, Some(unknown.as_str())),
                    Who::WrongSecret => (request, Some(wrong_secret.as_str())),
                    Who::Garbage => (request.header("authorization", "Basic dXNlcjpwYXNz"), None),
                    Who::WrongScope => (request, Some(wrong_scope)),
                    Who::OtherOrganization => (request, Some(k.other.as_str())),
                    Who::Right => (request, Some(right)),
                };
                let reply = app.send(request, key).await;
                let context = format!("{method} {path} as {who:?}: {reply:?}");
                match who {
                    Who::Nobody => {
                        assert_eq!(reply.status, 401, "{context}");
                        assert_eq!(reply.body["code"], "missing-key", "{context}");
                        assert!(reply.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")), "{context}");
                    }
                    Who::UnknownKey | Who::WrongSecret => {
                        assert_eq!(reply.status, 401, "{context}");
                        assert_eq!(reply.body["code"], "invalid-key", "{context}");
                    }
                    Who::Garbage => {
                        assert_eq!(reply.status, 401, "{context}");
                        assert_eq!(reply.body["code"], "invalid-authorization", "{context}");
                    }
                    Who::WrongScope => {
                        assert_eq!(reply.status, 403, "{context}");
                        assert_eq!(reply.body["code"], "missing-scope", "{context}");
                    }
                    Who::OtherOrganization => {
                        assert_eq!(reply.status, other_answer, "{context}");
                        // Whatever it answers, nothing of organization A shows.
                        let text = reply.body.to_string();
                        // (An id the caller sent may come back in the message.)
                        assert!(path.contains(&event_id.to_string()) || !text.contains(&event_id.to_string()), "{context}");
                        assert!(!text.contains(&ORGANIZATION.to_string()), "{context}");
                        assert!(!text.contains("matrix@acme.example"), "{context}");
                        if path == "/api/integrations/status" {
                            for integration in reply.body["integrations"].as_array().unwrap() {
                                assert_eq!(integration["deliveries"]["delivered"], 0, "{context}");
                                assert_eq!(integration["deliveries"]["dead"], 0, "{context}");
                                assert!(integration["last_error"].is_null(), "{context}");
                            }
                        }
                        if path == "/api/integrations/events" {
                            assert_eq!(reply.body["events"], json!([]), "{context}");
                        }
                        if path.ends_with("/replay") && other_answer == 202 {
                            assert_eq!(reply.body["replayed"], 0, "{context}");
                        }
                    }
                    Who::Right => assert_eq!(reply.status, right_answer, "{context}"),
                }
            }
        }
        // The organization's own admin key may replay but not switch
        // integrations for everyone.
        app.post_empty("/api/integrations/recruitiq/nexus/disable", Some(&k.admin))
            .await
            .assert_problem(403, "platform-key-required");
        // A platform key may act for any organization.
        let reply = app.post("/api/events", Some(&k.platform), &candidate_hired(ORGANIZATION_WITHOUT_SUBSCRIPTIONS, "p@globex.example")).await;
        assert_eq!(reply.status, 202, "{reply:?}");
        // An organization key asking for another organization is refused.
        app.get(&format!("/api/integrations/events?organization_id={ORGANIZATION}"), Some(&k.other))
            .await
            .assert_problem(403, "organization-forbidden");
        app.get(&format!("/api/integrations/status?organization_id={ORGANIZATION}"), Some(&k.other))
            .await
            .assert_problem(403, "organization-forbidden");
        app.stop().await;
    }
}

on_both_databases! {
    async fn an_organization_key_cannot_read_another_organizations_event_or_delivery_by_id(db: TestDb) {
        let app = spawn_app(db).await;
        // Organization A's event, whose deliveries go dead (so they have rows).
        app.db.poison().await;
        let id = Uuid::now_v7();
        let theirs = with_id(candidate_hired(ORGANIZATION, "dead-private@acme.example"), id);
        assert_eq!(app.publish(&theirs).await.status, 202);
        app.db.settle(SETTLE).await;
        let dead = app.db.deliveries(Some(Status::Dead)).await;
        assert!(!dead.is_empty());
        let other = Some(app.keys.other.as_str());

        // Through the API, organization B's key (every scope) finds nothing
        // by id, even naming organization A: not found, never forbidden.
        let event_path = format!("/api/integrations/events/{id}");
        app.get(&event_path, other).await.assert_problem(404, "event-not-found");
        app.get(&format!("{event_path}?organization_id={ORGANIZATION}"), other)
            .await
            .assert_problem(404, "event-not-found");
        for delivery in &dead {
            app.post_empty(&format!("/api/integrations/deliveries/{}/replay", delivery.id), other)
                .await
                .assert_problem(404, "delivery-not-found");
        }
        assert_eq!(app.db.deliveries(Some(Status::Dead)).await.len(), dead.len(), "nothing was replayed");

        // Organization B's own event with the same id shows only its own.
        let mine = with_id(candidate_hired(ORGANIZATION_WITHOUT_SUBSCRIPTIONS, "own@globex.example"), id);
        assert_eq!(app.post("/api/events", other, &mine).await.status, 202);
        app.db.settle(SETTLE).await;
        let detail = app.get(&event_path, other).await;
        assert_eq!(detail.status, 200, "{detail:?}");
        assert_eq!(detail.body["data"]["candidate"]["email"], "own@globex.example");
        let text = detail.body.to_string();
        assert!(!text.contains("dead-private@acme.example"), "{detail:?}");
        for delivery in &dead {
            assert!(!text.contains(&delivery.id.to_string()), "{detail:?}");
        }

        // The store's reads filter by the scope themselves, whatever the
        // handler asks.
        let b = OrgScope::Organization(ORGANIZATION_WITHOUT_SUBSCRIPTIONS);
        let generation = app.engine.generation();
        let lanes = app.engine.lanes();
        let mut tx = app.db.store.begin_read().await.unwrap();
        let found = events::get_event(&mut tx, b, id).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].envelope.organization_id, ORGANIZATION_WITHOUT_SUBSCRIPTIONS);
        let a_event = events::get_event(&mut tx, OrgScope::Organization(ORGANIZATION), id).await.unwrap();
        assert_eq!(a_event.len(), 1);
        for delivery in &dead {
            assert!(events::get_delivery(&mut tx, b, delivery.id).await.unwrap().is_none());
            assert!(events::get_delivery(&mut tx, OrgScope::Platform, delivery.id).await.unwrap().is_some());
        }
        assert!(events::deliveries_of(&mut tx, b, ORGANIZATION, id).await.unwrap().is_empty());
        assert!(!events::deliveries_of(&mut tx, OrgScope::Platform, ORGANIZATION, id).await.unwrap().is_empty());
        assert!(events::children_of(&mut tx, b, ORGANIZATION, id).await.unwrap().is_empty());
        assert!(views::deliveries(&mut tx, b, &generation, lanes, &a_event).await.unwrap().is_empty());
        assert!(!views::deliveries(&mut tx, OrgScope::Platform, &generation, lanes, &a_event).await.unwrap().is_empty());
        let listed = events::list_events(&mut tx, &events::EventFilter::all(b), 100).await.unwrap();
        assert!(listed.iter().all(|e| e.envelope.organization_id == ORGANIZATION_WITHOUT_SUBSCRIPTIONS));
        assert!(events::blocked_keys(&mut tx, b, "recruitiq-to-paylinq", true, 10).await.unwrap().is_empty());
        let ids = generation.integration_ids();
        assert!(events::last_errors(&mut tx, b, &ids).await.unwrap().is_empty());
        assert!(!events::last_errors(&mut tx, OrgScope::Platform, &ids).await.unwrap().is_empty());
        assert!(events::counts(&mut tx, b).await.unwrap().values().all(|by_status| by_status.get(&Status::Dead).is_none()));
        tx.rollback().await.unwrap();
        app.stop().await;
    }
}

on_both_databases! {
    async fn operations_endpoints_need_no_key(db: TestDb) {
        let app = spawn_app(db).await;
        let health = app.get("/healthz", None).await;
        assert_eq!((health.status, &health.body), (200, &json!({"status": "ok"})));
        let ready = app.get("/readyz", None).await;
        assert_eq!(ready.status, 200, "{ready:?}");
        assert_eq!(ready.body["generation"], 1);

        app.publish(&candidate_hired(ORGANIZATION, "metrics@acme.example")).await;
        let metrics = app.get("/metrics", None).await;
        assert_eq!(metrics.status, 200);
        assert!(metrics.header("content-type").unwrap().starts_with("text/plain"));
        let text = metrics.body.as_str().unwrap();
        for name in [
            "busbar_events_published_total",
            "busbar_deliveries_pending",
            "busbar_deliveries_total",
            "busbar_reloads_total",
            "busbar_http_requests_total",
            "busbar_http_request_duration_seconds_bucket",
            "busbar_publish_commit_seconds_bucket",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }

        let openapi = app.get("/openapi.json", None).await;
        assert_eq!(openapi.status, 200);
        assert_eq!(openapi.body["openapi"], "3.1.0");
        let paths = openapi.body["paths"].as_object().unwrap();
        for (path, method) in [
            ("/api/events", "post"),
            ("/api/integrations/status", "get"),
            ("/api/integrations/events", "get"),
            ("/api/integrations/events/{id}", "get"),
            ("/api/integrations/{source}/{target}/enable", "post"),
            ("/api/integrations/{source}/{target}/disable", "post"),
            ("/api/integrations/{source}/{target}/pause", "post"),
            ("/api/integrations/{source}/{target}/resume", "post"),
            ("/api/integrations/deliveries/{id}/replay", "post"),
            ("/api/integrations/deliveries/{id}/skip", "post"),
            ("/api/integrations/{integration}/replay", "post"),
            ("/api/integrations/{integration}/redeliver", "post"),
            ("/api/integrations/reload", "post"),
            ("/healthz", "get"),
            ("/readyz", "get"),
            ("/metrics", "get"),
        ] {
            assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} is not documented");
        }
        assert_eq!(paths.len(), 16, "every documented path is served: {:?}", paths.keys());
        // Every body is read through the same extractor, which answers 413
        // and 415 before the handler runs: each operation with a body says so.
        // Likewise every operation behind a key answers 401 and 429 (with
        // `Retry-After`) before it runs.
        for (path, item) in paths {
            for (method, operation) in item.as_object().unwrap() {
                let responses = &operation["responses"];
                if operation.get("requestBody").is_some() {
                    for status in ["413", "415"] {
                        assert!(
                            responses.get(status).is_some(),
                            "{method} {path} takes a body but does not document {status}"
                        );
                    }
                }
                if operation.get("security").is_some() {
                    for status in ["401", "429"] {
                        assert!(
                            responses.get(status).is_some(),
                            "{method} {path} needs a key but does not document {status}"
                        );
                    }
                    assert!(
                        responses["429"]["headers"].get("Retry-After").is_some(),
                        "{method} {path}: 429 without Retry-After"
                    );
                }
            }
        }

        // Readiness turns off when shutting down.
        app.draining.cancel();
        app.get("/readyz", None).await.assert_problem(503, "shutting-down");
        app.stop().await;
    }
}

on_both_databases! {
    async fn every_answer_carries_a_request_id(db: TestDb) {
        let app = spawn_app(db).await;
        let reply = app.get("/healthz", None).await;
        let id = reply.header("x-request-id").expect("a request id");
        assert!(Uuid::parse_str(id).is_ok(), "{id}");
        let reply = app.send(app.client.get(format!("{}/api/integrations/status", app.base)).header("x-request-id", "trace-me-42"), None).await;
        assert_eq!(reply.status, 401);
        assert_eq!(reply.header("x-request-id"), Some("trace-me-42"), "a caller's id is kept");
        let reply = app.get("/nowhere", None).await;
        assert!(reply.header("x-request-id").is_some());
        app.stop().await;
    }
}

on_both_databases! {
    async fn events_are_listed_newest_first_with_filters_and_cursor(db: TestDb) {
        let app = spawn_app(db).await;
        let mut ids = Vec::new();
        for i in 0..5 {
            let event = with_id(candidate_hired(ORGANIZATION, &format!("list{i}@acme.example")), Uuid::now_v7());
            assert_eq!(app.publish(&event).await.status, 202);
            ids.push(event["id"].clone());
        }
        app.db.settle(SETTLE).await;
        let reader = Some(app.keys.reader.as_str());

        // Paging through the candidate.hired events, two at a time.
        let mut seen = Vec::new();
        let mut path = "/api/integrations/events?source=recruitiq&event=candidate.hired&limit=2".to_owned();
        loop {
            let page = app.get(&path, reader).await;
            assert_eq!(page.status, 200, "{page:?}");
            let events = page.body["events"].as_array().unwrap();
            assert!(events.len() <= 2);
            for event in events {
                assert_eq!(event["delivery_counts"]["delivered"], 2, "{event}");
                seen.push(event["id"].clone());
            }
            match page.body["next_cursor"].as_str() {
                Some(cursor) => {
                    path = format!("/api/integrations/events?source=recruitiq&event=candidate.hired&limit=2&cursor={cursor}")
                }
                None => break,
            }
        }
        ids.reverse();
        assert_eq!(seen, ids, "newest first, each once");

        // The emitted employee.created events are the organization's too.
        let nexus = app.get("/api/integrations/events?source=nexus", reader).await;
        assert_eq!(nexus.body["events"].as_array().unwrap().len(), 5);
        let all = app.get("/api/integrations/events", reader).await;
        assert_eq!(all.body["events"].as_array().unwrap().len(), 10);
        assert!(all.body["next_cursor"].is_null());

        // By delivery status: a poison the engine dead-letters.
        app.db.poison().await;
        let poison = with_id(candidate_hired(ORGANIZATION, "dead-list@acme.example"), Uuid::now_v7());
        assert_eq!(app.publish(&poison).await.status, 202);
        app.db.settle(SETTLE).await;
        let dead = app.get("/api/integrations/events?status=dead", reader).await;
        let dead: Vec<&Value> = dead.body["events"].as_array().unwrap().iter().map(|e| &e["id"]).collect();
        assert_eq!(dead, [&poison["id"]]);
        let pending = app.get("/api/integrations/events?status=pending", reader).await;
        assert_eq!(pending.body["events"], json!([]));

        // By time: stored at or after `since`, before `until`.
        let future = "2999-01-01T00:00:00Z";
        let past = "2000-01-01T00:00:00Z";
        let later = app.get(&format!("/api/integrations/events?since={future}"), reader).await;
        assert_eq!(later.body["events"], json!([]));
        let between = app.get(&format!("/api/integrations/events?since={past}&until={future}"), reader).await;
        assert_eq!(between.body["events"].as_array().unwrap().len(), 11);
        let before = app.get(&format!("/api/integrations/events?until={past}"), reader).await;
        assert_eq!(before.body["events"], json!([]));
        let offset = app.get("/api/integrations/events?since=2000-01-01T00:00:00%2B02:00", reader).await;
        assert_eq!(offset.body["events"].as_array().unwrap().len(), 11, "{offset:?}");

        // A platform key sees every organization, or the one it asks for.
        let platform = Some(app.keys.platform.as_str());
        app.post("/api/events", platform, &candidate_hired(ORGANIZATION_WITHOUT_SUBSCRIPTIONS, "b@globex.example")).await;
        let everyone = app.get("/api/integrations/events?limit=500", platform).await;
        assert_eq!(everyone.body["events"].as_array().unwrap().len(), 12);
        let globex = app.get(&format!("/api/integrations/events?organization_id={ORGANIZATION_WITHOUT_SUBSCRIPTIONS}"), platform).await;
        assert_eq!(globex.body["events"].as_array().unwrap().len(), 1);
        let acme = app.get("/api/integrations/events?limit=500", reader).await;
        assert_eq!(acme.body["events"].as_array().unwrap().len(), 11, "an organization key sees only its own");
        app.stop().await;
    }
}

on_both_databases! {
    async fn enable_and_disable_are_persisted_visible_and_survive_a_restart(db: TestDb) {
        let app = spawn_app(db).await;
        let platform = Some(app.keys.platform.as_str());
        let reply = app.post_empty("/api/integrations/recruitiq/nexus/disable", platform).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(
            reply.body,
            json!({"source": "recruitiq", "target": "nexus", "integrations": [
                {"id": "recruitiq-to-nexus", "persisted_state": "disabled", "state": "disabled", "enabled": false, "enabled_in_yaml": true}
            ]})
        );
        app.post_empty("/api/integrations/nobody/nowhere/disable", platform)
            .await
            .assert_problem(404, "integration-not-found");

        // A disabled integration delivers nothing: new events are skipped,
        // with the reason.
        let event = with_id(candidate_hired(ORGANIZATION, "off@acme.example"), Uuid::now_v7());
        app.publish(&event).await;
        app.db.settle(SETTLE).await;
        let detail = app.get(&format!("/api/integrations/events/{}", event["id"].as_str().unwrap()), platform).await;
        let deliveries: Vec<(&Value, &Value)> = detail.body["deliveries"].as_array().unwrap().iter().map(|d| (&d["integration"], &d["status"])).collect();
        assert_eq!(deliveries, [(&json!("recruitiq-to-nexus"), &json!("skipped")), (&json!("recruitiq-to-paylinq"), &json!("delivered"))], "{detail:?}");
        assert!(detail.body["deliveries"][0]["last_error"].as_str().unwrap().contains("is disabled"));
        assert!(app.db.find("hris.employees", &[("email", json!("off@acme.example"))]).await.is_none());

        // After a restart (a new engine and API on the same database).
        let db = app.stop().await;
        let app = spawn_app(db).await;
        let status = app.get("/api/integrations/status", Some(&app.keys.platform)).await;
        let nexus = status.body["integrations"].as_array().unwrap().iter().find(|i| i["id"] == "recruitiq-to-nexus").unwrap().clone();
        assert_eq!(nexus["enabled"], false);
        assert_eq!(nexus["state"], "disabled");
        assert_eq!(nexus["persisted_state"], "disabled");
        assert_eq!(nexus["enabled_in_yaml"], true);
        let reply = app.post_empty("/api/integrations/recruitiq/nexus/enable", Some(&app.keys.platform)).await;
        assert_eq!(reply.body["integrations"][0]["enabled"], true, "{reply:?}");
        let status = app.get("/api/integrations/status", Some(&app.keys.platform)).await;
        let nexus = status.body["integrations"].as_array().unwrap().iter().find(|i| i["id"] == "recruitiq-to-nexus").unwrap().clone();
        assert_eq!((nexus["enabled"].clone(), nexus["persisted_state"].clone()), (json!(true), json!("enabled")));
        app.stop().await;
    }
}

on_both_databases! {
    async fn dead_deliveries_are_replayed_one_by_one_or_in_bulk(db: TestDb) {
        let app = spawn_app(db).await;
        let fine = with_id(candidate_hired(ORGANIZATION, "fine@acme.example"), Uuid::now_v7());
        app.publish(&fine).await;
        app.db.settle(SETTLE).await;
        let admin = Some(app.keys.admin.as_str());
        // A delivered delivery is not replayed: one that failed first (it
        // has a row) is refused as such; one that succeeded at once has no
        // row to replay.
        let delivered = app.db.deliveries(Some(Status::Delivered)).await[0].id;
        app.post_empty(&format!("/api/integrations/deliveries/{delivered}/replay"), admin)
            .await
            .assert_problem(404, "delivery-not-found");
        app.post_empty(&format!("/api/integrations/deliveries/{}/replay", Uuid::now_v7()), admin)
            .await
            .assert_problem(404, "delivery-not-found");

        // Poison: the engine dead-letters these three events' deliveries
        // (organization B subscribes too, so its deliveries get as far).
        app.db.poison().await;
        app.db
            .execute(&format!(
                "INSERT INTO core.product_subscriptions (organization_id, product_id, status) VALUES \
                 ('{ORGANIZATION_WITHOUT_SUBSCRIPTIONS}', 'nexus', 'active'), \
                 ('{ORGANIZATION_WITHOUT_SUBSCRIPTIONS}', 'paylinq', 'active')"
            ))
            .await;
        let first = with_id(candidate_hired(ORGANIZATION, "dead1@acme.example"), Uuid::now_v7());
        let second = with_id(candidate_hired(ORGANIZATION, "dead2@acme.example"), Uuid::now_v7());
        let third = with_id(candidate_hired(ORGANIZATION_WITHOUT_SUBSCRIPTIONS, "dead3@globex.example"), Uuid::now_v7());
        app.publish(&first).await;
        app.publish(&second).await;
        app.post("/api/events", Some(&app.keys.platform), &third).await;
        app.db.settle(SETTLE).await;
        // The status shows the failure.
        let status = app.get("/api/integrations/status", Some(&app.keys.reader)).await;
        let nexus = status.body["integrations"].as_array().unwrap().iter().find(|i| i["id"] == "recruitiq-to-nexus").unwrap().clone();
        assert_eq!(nexus["deliveries"]["dead"], 2, "{nexus}");
        assert!(nexus["last_error"]["message"].as_str().unwrap().contains("boom"), "{nexus}");
        assert_eq!(nexus["last_error"]["step"], 2);
        assert!(nexus["last_error"]["at"].is_string());

        // The data is fixed; then one by one.
        app.db.cure().await;
        let dead: Vec<_> = app.db.deliveries(Some(Status::Dead)).await;
        let one = dead.iter().find(|d| d.event_id.to_string() == first["id"].as_str().unwrap() && d.integration == "recruitiq-to-nexus").unwrap();
        let reply = app.post_empty(&format!("/api/integrations/deliveries/{}/replay", one.id), admin).await;
        assert_eq!(reply.status, 202, "{reply:?}");
        assert_eq!(reply.body, json!({"id": one.id, "status": "pending"}));
        app.db.settle(SETTLE).await;
        assert_eq!(app.db.deliveries(Some(Status::Dead)).await.len(), 5);

        // In bulk: only the caller's organization's.
        let reply = app.post_empty("/api/integrations/recruitiq-to-nexus/replay", admin).await;
        assert_eq!(reply.status, 202, "{reply:?}");
        assert_eq!(reply.body, json!({"integration": "recruitiq-to-nexus", "replayed": 1}));
        let reply = app.post_empty("/api/integrations/recruitiq-to-paylinq/replay", admin).await;
        assert_eq!(reply.body["replayed"], 2, "{reply:?}");
        app.db.settle(SETTLE).await;
        let left = app.db.deliveries(Some(Status::Dead)).await;
        assert_eq!(left.len(), 2, "organization B's are untouched: {left:?}");
        assert!(left.iter().all(|d| d.organization_id == ORGANIZATION_WITHOUT_SUBSCRIPTIONS));
        // A platform key may narrow a bulk replay to one organization.
        let reply = app
            .post_empty(
                &format!("/api/integrations/recruitiq-to-nexus/replay?organization_id={ORGANIZATION_WITHOUT_SUBSCRIPTIONS}"),
                Some(&app.keys.platform),
            )
            .await;
        assert_eq!(reply.body["replayed"], 1, "{reply:?}");
        app.post_empty("/api/integrations/no-such-integration/replay", admin)
            .await
            .assert_problem(404, "integration-not-found");
        app.stop().await;
    }
}

on_both_databases! {
    /// Issue 16: an operator skips a dead delivery with a reason; it is
    /// recorded beside the failure, nothing is applied, and only dead
    /// deliveries of the caller's organization are skipped.
    async fn a_dead_delivery_is_skipped_with_a_reason_recorded(db: TestDb) {
        let app = spawn_app(db).await;
        app.db.poison().await;
        let event = with_id(candidate_hired(ORGANIZATION, "dead-skip@acme.example"), Uuid::now_v7());
        app.publish(&event).await;
        app.db.settle(SETTLE).await;
        let dead = app.db.deliveries(Some(Status::Dead)).await;
        let nexus = dead.iter().find(|d| d.integration == "recruitiq-to-nexus").unwrap();
        let path = format!("/api/integrations/deliveries/{}/skip", nexus.id);
        let admin = Some(app.keys.admin.as_str());

        // A reason is required.
        app.post(&path, admin, &json!({})).await.assert_problem(422, "invalid-body");
        app.post(&path, admin, &json!({"reason": "   "})).await.assert_problem(422, "invalid-body");
        app.post(&path, admin, &json!({"reason": "x".repeat(1001)})).await.assert_problem(422, "invalid-body");
        // Only the admin scope, and only the caller's organization.
        app.post(&path, Some(&app.keys.reader), &json!({"reason": "no"})).await.assert_problem(403, "missing-scope");
        app.post(&path, Some(&app.keys.other), &json!({"reason": "no"})).await.assert_problem(404, "delivery-not-found");
        assert_eq!(app.db.deliveries(Some(Status::Dead)).await.len(), dead.len(), "nothing was skipped yet");

        let reply = app.post(&path, admin, &json!({"reason": "the candidate was hired by mistake"})).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.body["status"], "skipped");
        assert_eq!(reply.body["skip_reason"], "the candidate was hired by mistake");
        assert!(reply.body["skipped_by"].as_str().unwrap().starts_with("key "), "{reply:?}");
        // A second skip, or a replay, of a skipped delivery is refused.
        app.post(&path, admin, &json!({"reason": "again"})).await.assert_problem(409, "delivery-not-dead");
        app.post_empty(&format!("/api/integrations/deliveries/{}/replay", nexus.id), admin)
            .await
            .assert_problem(409, "delivery-not-dead");

        // The event's page shows it: skipped, why, by whom, and the failure.
        app.db.cure().await;
        app.db.settle(SETTLE).await;
        let detail = app.get(&format!("/api/integrations/events/{}", event["id"].as_str().unwrap()), Some(&app.keys.reader)).await;
        let shown = detail.body["deliveries"].as_array().unwrap().iter().find(|d| d["integration"] == "recruitiq-to-nexus").unwrap().clone();
        assert_eq!(shown["status"], "skipped", "{shown}");
        assert_eq!(shown["skip_reason"], "the candidate was hired by mistake");
        assert!(shown["last_error"].as_str().unwrap().contains("boom"), "the failure is kept: {shown}");
        assert!(app.db.find("hris.employees", &[("email", json!("dead-skip@acme.example"))]).await.is_none(), "nothing applied");
        // The other integration's dead delivery is untouched.
        let left = app.db.deliveries(Some(Status::Dead)).await;
        assert_eq!(left.len(), dead.len() - 1);

        // `busbar skip` does the same from the command line: a delivery that
        // is not dead (the one just skipped) is named, and left alone.
        let url = app.db.url.clone();
        let cli = |args: &[&str]| {
            let mut all: Vec<String> = vec!["skip".into()];
            all.extend(args.iter().map(|a| a.to_string()));
            all.extend(["--database-url".into(), url.clone()]);
            busbar_cli_async(std::env::temp_dir(), all)
        };
        let refused = cli(&[&left[0].id.to_string(), "--reason", " "]).await;
        assert_eq!((refused.status.code(), refused.stderr.contains("--reason must say why")), (Some(2), true), "{refused:?}");
        let partly = cli(&[&left[0].id.to_string(), &nexus.id.to_string(), "--reason", "payroll never had her"]).await;
        assert_eq!(partly.status.code(), Some(1), "one of the two was not dead: {partly:?}");
        assert!(partly.stdout.contains("skipped 1 of 2 deliveries"), "{partly:?}");
        assert!(app.db.deliveries(Some(Status::Dead)).await.is_empty());
        let skipped = app.db.deliveries(Some(Status::Skipped)).await;
        let by_cli = skipped.iter().find(|d| d.id == left[0].id).unwrap();
        assert_eq!((by_cli.skip_reason.as_deref(), by_cli.skipped_by.as_deref()), (Some("payroll never had her"), Some("cli")));
        let by_api = skipped.iter().find(|d| d.id == nexus.id).unwrap();
        assert_eq!(by_api.skip_reason.as_deref(), Some("the candidate was hired by mistake"), "the first skip's reason stays");
        app.stop().await;
    }
}

on_both_databases! {
    async fn publishing_answers_503_with_retry_after_when_the_database_is_gone(db: TestDb) {
        // A key cache, so the key check does not need the database.
        let app = spawn_app_with(db, ApiConfig::default()).await;
        assert_eq!(app.publish(&candidate_hired(ORGANIZATION, "before@acme.example")).await.status, 202);
        app.db.store.close().await;
        let reply = app.publish(&candidate_hired(ORGANIZATION, "after@acme.example")).await;
        reply.assert_problem(503, "database-unavailable");
        assert_eq!(reply.header("retry-after"), Some("1"));
        app.get("/readyz", None).await.assert_problem(503, "database-unavailable");
        // Without a cached key, the key check itself cannot run: 503 too.
        app.get("/api/integrations/status", Some(&app.keys.reader)).await.assert_problem(503, "database-unavailable");
        app.stop().await;
    }
}

on_both_databases! {
    async fn an_open_publish_breaker_closes_by_itself_under_load_and_readyz_follows_it(db: TestDb) {
        let app = spawn_app_with(db, ApiConfig::default()).await;
        assert_eq!(app.publish(&candidate_hired(ORGANIZATION, "before@acme.example")).await.status, 202);
        // A publish failed as if the database were gone; it is here.
        app.engine
            .health()
            .failed(&busbar::store::StoreError::Unreachable("connection refused".into()));
        app.publish(&candidate_hired(ORGANIZATION, "refused@acme.example"))
            .await
            .assert_problem(503, "database-unavailable");
        // `/readyz` says what publishers get, though a ping would answer.
        let ready = app.get("/readyz", None).await;
        ready.assert_problem(503, "database-unavailable");
        assert!(ready.body["detail"].as_str().unwrap().contains("publishes are refused"), "{ready:?}");
        // Publishers keep sending, as they do in an outage; publishing and
        // readiness come back by themselves within a few seconds.
        let started = std::time::Instant::now();
        let mut i = 0;
        loop {
            let email = format!("retry-{i}@acme.example");
            if app.publish(&candidate_hired(ORGANIZATION, &email)).await.status == 202 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "publishing was still refused {:?} after the database was back",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            i += 1;
        }
        assert_eq!(app.get("/readyz", None).await.status, 200);
        app.stop().await;
    }
}

on_both_databases! {
    async fn an_open_publish_breaker_closes_by_itself_without_any_traffic(db: TestDb) {
        let app = spawn_app_with(db, ApiConfig::default()).await;
        app.engine
            .health()
            .failed(&busbar::store::StoreError::Unreachable("connection refused".into()));
        // Nobody publishes (a load balancer took the process out of
        // rotation on the 503): readiness comes back all the same.
        let started = std::time::Instant::now();
        loop {
            let ready = app.get("/readyz", None).await;
            if ready.status == 200 {
                break;
            }
            ready.assert_problem(503, "database-unavailable");
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "/readyz still 503 {:?} after the database was back",
                started.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // And the first publish after it is accepted.
        assert_eq!(app.publish(&candidate_hired(ORGANIZATION, "first@acme.example")).await.status, 202);
        app.stop().await;
    }
}

on_both_databases! {
    async fn keys_from_the_command_line_work_and_revoked_keys_are_refused(db: TestDb) {
        let app = spawn_app(db).await;
        let url = app.db.url.clone();
        let busbar = |args: &[&str]| {
            let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            args.extend(["--database-url".to_owned(), url.clone()]);
            async move {
                let output = busbar_cli_async(root(), args).await;
                (output.status.code(), output.stdout, output.stderr)
            }
        };
        let (code, key, err) = busbar(&["keys", "create", "--org", &ORGANIZATION.to_string(), "--scope", "read", "--name", "dashboard"]).await;
        assert_eq!(code, Some(0), "{err}");
        let key = key.trim().to_owned();
        assert!(keys::prefix_of(&key).is_some(), "{key}");
        assert!(err.contains("not shown again"), "{err}");
        assert_eq!(app.get("/api/integrations/status", Some(&key)).await.status, 200);
        assert_eq!(app.get("/api/integrations/events/00000000-0000-0000-0000-000000000000", Some(&key)).await.status, 404);
        app.post("/api/events", Some(&key), &candidate_hired(ORGANIZATION, "x@acme.example")).await.assert_problem(403, "missing-scope");

        let (code, list, _) = busbar(&["keys", "list"]).await;
        assert_eq!(code, Some(0));
        let line = list.lines().find(|l| l.ends_with("dashboard")).expect("the key is listed");
        assert!(!list.contains(&key), "the secret is never shown again");
        let id = line.split_whitespace().next().unwrap().to_owned();
        assert!(line.contains("read") && line.contains(&ORGANIZATION.to_string()), "{line}");

        let (code, _, err) = busbar(&["keys", "revoke", &id]).await;
        assert_eq!(code, Some(0), "{err}");
        app.get("/api/integrations/status", Some(&key)).await.assert_problem(401, "invalid-key");
        let (code, _, err) = busbar(&["keys", "revoke", &id]).await;
        assert_eq!(code, Some(2), "revoking twice fails: {err}");

        let (code, _, err) = busbar(&["keys", "create", "--scope", "read"]).await;
        assert_eq!(code, Some(2), "an owner is required: {err}");
        let (code, _, err) = busbar(&["keys", "create", "--platform", "--scope", "write"]).await;
        assert_eq!(code, Some(2), "unknown scopes are refused: {err}");
        let (code, key, _) = busbar(&["keys", "create", "--platform", "--scope", "admin", "--scope", "read"]).await;
        assert_eq!(code, Some(0));
        assert_eq!(app.get("/api/integrations/status", Some(key.trim())).await.status, 200);
        app.stop().await;
    }
}

on_both_databases! {
    async fn a_cached_key_is_refused_once_its_cache_entry_expires(db: TestDb) {
        let app = spawn_app_with(db, ApiConfig { key_cache_ttl: Duration::from_millis(300), ..ApiConfig::default() }).await;
        let reader = app.keys.reader.clone();
        assert_eq!(app.get("/api/integrations/status", Some(&reader)).await.status, 200);
        let record = {
            let mut tx = app.db.store.begin_read().await.unwrap();
            let record = keys::find_by_prefix(&mut tx, keys::prefix_of(&reader).unwrap()).await.unwrap().unwrap();
            tx.rollback().await.unwrap();
            record
        };
        assert!(keys::revoke_key(&app.db.store, record.id).await.unwrap());
        tokio::time::sleep(Duration::from_millis(400)).await;
        app.get("/api/integrations/status", Some(&reader)).await.assert_problem(401, "invalid-key");
        app.stop().await;
    }
}

on_both_databases! {
    async fn shutdown_stops_accepting_and_lets_requests_finish(db: TestDb) {
        let app = spawn_app(db).await;
        let base = app.base.clone();
        let client = app.client.clone();
        let key = app.keys.publisher.clone();
        // Requests in flight while the shutdown starts all get an answer.
        let requests: Vec<_> = (0..20)
            .map(|i| {
                let request = client
                    .post(format!("{base}/api/events"))
                    .bearer_auth(&key)
                    .json(&candidate_hired(ORGANIZATION, &format!("drain{i}@acme.example")));
                tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
            })
            .collect();
        // Stop once the first of them is stored: the others are in flight.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while app.db.count("integrations.events").await == 0 {
            assert!(std::time::Instant::now() < deadline, "no request was stored");
            tokio::task::yield_now().await;
        }
        let db = app.stop().await;
        let mut accepted = 0i64;
        for request in requests {
            // Either answered 202 before the server stopped, or never
            // connected: never cut off midway.
            match request.await.unwrap() {
                Ok(status) => {
                    assert_eq!(status, 202);
                    accepted += 1;
                }
                Err(error) => assert!(error.is_connect() || error.is_request(), "{error}"),
            }
        }
        assert!(accepted >= 1, "the stored request was answered");
        assert_eq!(db.count_where("integrations.events", "parent_id IS NULL").await, accepted);
        assert!(client.get(format!("{base}/healthz")).send().await.is_err(), "no longer accepting");
    }
}

on_both_databases! {
    async fn a_request_past_its_timeout_is_answered_503(db: TestDb) {
        let app = spawn_app_with(db, ApiConfig { request_timeout: Duration::from_nanos(1), ..ApiConfig::default() }).await;
        let reply = app.publish(&candidate_hired(ORGANIZATION, "slow@acme.example")).await;
        reply.assert_problem(503, "request-timeout");
        assert_eq!(reply.header("retry-after"), Some("1"));
        assert!(reply.header("x-request-id").is_some());
        app.stop().await;
    }
}

/// Clients that hang up at random points of publish, replay and reads must
/// leave every pooled connection clean: no session of busbar's stays inside
/// a transaction, and the server goes on answering everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "PostgreSQL suite skipped: TEST_DATABASE_URL was not set when the tests were built"
)]
async fn clients_that_hang_up_mid_request_leave_no_connection_inside_a_transaction() {
    let app = spawn_app(TestDb::postgres().await).await;
    app.db.poison().await;
    for i in 0..5 {
        app.publish(&candidate_hired(
            ORGANIZATION,
            &format!("dead-{i}@acme.example"),
        ))
        .await;
    }
    app.db.settle(SETTLE).await;
    let dead: Vec<Uuid> = app
        .db
        .deliveries(Some(Status::Dead))
        .await
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert!(!dead.is_empty());
    let app = std::sync::Arc::new(app);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..16u64 {
        let app = app.clone();
        let dead = dead.clone();
        tasks.spawn(async move {
            for i in 0..60u64 {
                // A client that gives up after 1 to 30 ms, wherever the
                // server is by then.
                let patience = Duration::from_millis(1 + (worker * 7 + i * 13) % 30);
                let client = reqwest::Client::builder().timeout(patience).build().unwrap();
                let request = match (worker + i) % 4 {
                    0 => client
                        .post(format!("{}/api/events", app.base))
                        .bearer_auth(&app.keys.publisher)
                        .json(&candidate_hired(ORGANIZATION, &format!("gone-{worker}-{i}@acme.example"))),
                    1 => client
                        .post(format!("{}/api/events", app.base))
                        .bearer_auth(&app.keys.publisher)
                        .json(&json!({ "events": (0..20).map(|j| candidate_hired(ORGANIZATION, &format!("batch-{worker}-{i}-{j}@acme.example"))).collect::<Vec<_>>() })),
                    2 => client
                        .post(format!("{}/api/integrations/deliveries/{}/replay", app.base, dead[(i as usize) % dead.len()]))
                        .bearer_auth(&app.keys.admin),
                    _ => client
                        .get(format!("{}/api/integrations/status", app.base))
                        .bearer_auth(&app.keys.reader),
                };
                let _ = request.send().await;
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
    // Whatever the handlers were doing has finished by now; the engine
    // finishes the events they published.
    app.db.settle(Duration::from_secs(120)).await;
    let started = std::time::Instant::now();
    loop {
        let stuck = app
            .db
            .scalar(
                // Stayed: idle inside a transaction for over a second (a
                // lane visit between two statements is there for a moment,
                // many times a second on a loaded machine).
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND application_name = 'busbar' AND state LIKE 'idle in transaction%' \
                 AND state_change < now() - interval '1 second'",
            )
            .await;
        if stuck == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(5) {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&app.db.url).await.unwrap();
            let queries: Vec<(String, String)> = sqlx::query_as(
                "SELECT state, query FROM pg_stat_activity WHERE datname = current_database() \
                 AND application_name = 'busbar' AND state LIKE 'idle in transaction%' \
                 AND state_change < now() - interval '1 second'",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap();
            panic!("{stuck} pooled connections stayed inside a transaction: {queries:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And everyone is answered normally afterwards.
    for i in 0..20 {
        let reply = app
            .publish(&candidate_hired(
                ORGANIZATION,
                &format!("after-{i}@acme.example"),
            ))
            .await;
        assert_eq!(reply.status, 202, "{reply:?}");
    }
    assert_eq!(
        app.get("/api/integrations/status", Some(&app.keys.reader))
            .await
            .status,
        200
    );
    app.db.settle(SETTLE).await;
    for i in 0..20 {
        assert!(
            app.db
                .find(
                    "hris.employees",
                    &[("email", json!(format!("after-{i}@acme.example")))]
                )
                .await
                .is_some()
        );
    }
}
