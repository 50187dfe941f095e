//! Redelivery by filter (`POST /api/integrations/{integration}/redeliver`
//! over a real socket, and `busbar redeliver`): after a fix, delivered,
//! dead and skipped deliveries the engine made run again, with the new
//! mapping and in order per key; the preview counts what is redelivered; a
//! request id redelivers once; an organization's key touches only its own
//! events.
//!
//! The integration under test is a read-modify-write trace, keyed by
//! `order_by: $.data.key`: each delivery appends its event's sequence
//! number to its key's row and writes the mapping's label, so the row
//! shows which events were applied, in which order, with which mapping;
//! it also emits an event, which a redelivery emits anew.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::AUTHORIZATION;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use uuid::Uuid;

use busbar::api::{self, ApiConfig, AppState, ReloadOutcome};
use busbar::dev::{ORGANIZATION, ORGANIZATION_WITHOUT_SUBSCRIPTIONS};
use busbar::engine::Engine;
use busbar::store::Dialect;
use busbar::store::events::Status;
use busbar::store::keys::{self, Scope};

use crate::support::{TestDb, busbar_cli_async, on_both_databases};

const SETTLE: Duration = Duration::from_secs(60);

const TRACE: &str = r#"
id: trace
source: tally
target: test
order_by: $.data.key
routes:
  - on: item.changed
    steps:
      - find: test.trace
        where: { key: $.data.key }
        as: current
      - upsert: test.trace
        key: [key]
        values:
          key: $.data.key
          organization_id: $.organization_id
          version: "{{ (current.version if current else 0) + 1 }}"
          seqs: "{{ (current.seqs if current else '') ~ ',' ~ data.seq }}"
          label: LABEL
      - emit: item.traced
        data: { key: $.data.key, seq: $.data.seq }
"#;

const TABLE: &str = "CREATE TABLE test.trace (key VARCHAR(50) PRIMARY KEY, organization_id UUID NOT NULL, \
                     version INTEGER NOT NULL, seqs TEXT NOT NULL, label VARCHAR(20) NOT NULL)";

/// The trace integration writing `label`, in a directory of its own.
fn write_trace(dir: &Path, label: &str) {
    std::fs::write(dir.join("trace.yaml"), TRACE.replace("LABEL", label)).unwrap();
}

async fn prepare(db: &TestDb) -> tempfile::TempDir {
    if db.dialect() == Dialect::Postgres {
        db.execute("CREATE SCHEMA test").await;
    }
    db.execute(TABLE).await;
    let dir = tempfile::tempdir().unwrap();
    write_trace(dir.path(), "v1");
    dir
}

fn event(organization: Uuid, key: &str, seq: usize) -> Value {
    json!({
        "source": "tally",
        "event": "item.changed",
        "organization_id": organization,
        "data": { "key": key, "seq": seq }
    })
}

/// Makes writes for `key` fail for good (a trigger), until [`cure`].
async fn poison(db: &TestDb, key: &str) {
    let sql = match db.dialect() {
        Dialect::Postgres => format!(
            "CREATE FUNCTION test.poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               IF NEW.key = '{key}' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$; \
             CREATE TRIGGER poison BEFORE INSERT OR UPDATE ON test.trace FOR EACH ROW EXECUTE FUNCTION test.poison();"
        ),
        Dialect::Sqlite => format!(
            "CREATE TRIGGER poison_insert BEFORE INSERT ON \"test.trace\" \
               WHEN NEW.key = '{key}' BEGIN SELECT RAISE(ABORT, 'poisoned'); END; \
             CREATE TRIGGER poison_update BEFORE UPDATE ON \"test.trace\" \
               WHEN NEW.key = '{key}' BEGIN SELECT RAISE(ABORT, 'poisoned'); END;"
        ),
    };
    db.store.execute_script(&sql).await.unwrap();
}

async fn cure(db: &TestDb) {
    let sql = match db.dialect() {
        Dialect::Postgres => "DROP TRIGGER poison ON test.trace",
        Dialect::Sqlite => "DROP TRIGGER poison_insert; DROP TRIGGER poison_update",
    };
    db.store.execute_script(sql).await.unwrap();
}

/// The engine on the trace integration and the API on a free port, with
/// a platform admin key and admin keys of two organizations.
struct Server {
    base: String,
    engine: Engine,
    platform: String,
    /// An admin key of [`ORGANIZATION`].
    acme: String,
    /// An admin key of [`ORGANIZATION_WITHOUT_SUBSCRIPTIONS`].
    globex: String,
    task: JoinHandle<std::io::Result<()>>,
}

async fn serve(db: &TestDb, dir: &Path) -> Server {
    let engine = db.engine_on(dir, None).await;
    let reload = Arc::new(arc_swap::ArcSwap::from_pointee(ReloadOutcome::loaded(
        engine.generation().number,
    )));
    let config = ApiConfig {
        key_cache_ttl: Duration::ZERO,
        ..ApiConfig::default()
    };
    let state = AppState::new(engine.clone(), reload, config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(api::serve(
        listener,
        busbar::serve::app(state),
        std::future::pending(),
    ));
    let key = async |organization: Option<Uuid>| {
        keys::create_key(&db.store, organization, &Scope::ALL, Some("redeliver"))
            .await
            .unwrap()
            .key
    };
    Server {
        base,
        platform: key(None).await,
        acme: key(Some(ORGANIZATION)).await,
        globex: key(Some(ORGANIZATION_WITHOUT_SUBSCRIPTIONS)).await,
        engine,
        task,
    }
}

impl Server {
    async fn publish(&self, event: Value) {
        self.engine.publish_json(&event, None).await.unwrap();
    }

    /// `POST /api/integrations/trace/redeliver` with `body`; the status
    /// and the answer.
    async fn redeliver(&self, key: &str, body: Value) -> (u16, Value) {
        let answer = reqwest::Client::new()
            .post(format!("{}/api/integrations/trace/redeliver", self.base))
            .header(AUTHORIZATION, format!("Bearer {key}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap())
    }

    /// The preview's count of deliveries for `body`, then the redelivery;
    /// asserts they agree and returns the answer.
    async fn preview_then_redeliver(&self, key: &str, body: Value) -> Value {
        let mut preview = body.clone();
        preview["preview"] = json!(true);
        let (status, counted) = self.redeliver(key, preview).await;
        assert_eq!(status, 200, "{counted}");
        assert_eq!(counted["preview"], true);
        let (status, done) = self.redeliver(key, body).await;
        assert_eq!(status, 202, "{done}");
        assert_eq!(
            (&counted["events"], &counted["deliveries"]),
            (&done["events"], &done["deliveries"]),
            "the preview counts what is redelivered: {counted} vs {done}"
        );
        done
    }

    /// Makes the definition in `dir` live, as a reload does.
    async fn reload(&self, dir: &Path) {
        let generation = busbar::serve::load_generation(dir, None, 2).unwrap();
        self.engine.swap_generation(generation).await.unwrap();
    }

    async fn stop(self) {
        self.task.abort();
        self.engine.shutdown().await;
    }
}

/// The trace row of `key`: its sequence numbers in the order applied, and
/// its label.
async fn trace(db: &TestDb, key: &str) -> (String, String) {
    let row = db
        .find("test.trace", &[("key", json!(key))])
        .await
        .unwrap_or_else(|| panic!("{key} was never applied"));
    (
        row["seqs"].as_str().unwrap().to_owned(),
        row["label"].as_str().unwrap().to_owned(),
    )
}

on_both_databases! {
    async fn redelivering_delivered_events_after_a_mapping_fix_applies_the_new_mapping_in_order_per_key(db: TestDb) {
        let dir = prepare(&db).await;
        let server = serve(&db, dir.path()).await;
        for seq in 0..4 {
            for key in ["a", "b", "c"] {
                server.publish(event(ORGANIZATION, key, seq)).await;
            }
        }
        db.settle(SETTLE).await;
        assert_eq!(trace(&db, "a").await, (",0,1,2,3".into(), "v1".into()));
        // First-pass successes: no row at all.
        assert_eq!(db.count("integrations.deliveries").await, 0);

        // The fix: the mapping writes another label.
        write_trace(dir.path(), "v2");
        server.reload(dir.path()).await;
        let done = server
            .preview_then_redeliver(&server.platform, json!({ "status": ["delivered"] }))
            .await;
        assert_eq!((done["events"].clone(), done["deliveries"].clone()), (json!(12), json!(12)), "{done}");
        assert_eq!(done["repeated"], false);
        assert_eq!(done["finished"], true);
        db.settle(SETTLE).await;
        for key in ["a", "b", "c"] {
            assert_eq!(
                trace(&db, key).await,
                (",0,1,2,3,0,1,2,3".into(), "v2".into()),
                "{key}: every event applied again, in publish order, with the new mapping"
            );
        }
        // Each redelivered delivery has a row now, delivered, epoch 1.
        let redelivered = db.deliveries(Some(Status::Delivered)).await;
        assert_eq!(redelivered.len(), 12);
        assert!(redelivered.iter().all(|d| d.recorded && d.attempts == 1), "{redelivered:?}");
        assert_eq!(db.count_where("integrations.deliveries", "epoch = 1").await, 12);
        // A redelivered emit step emits a new event, not the first one again.
        assert_eq!(db.count_where("integrations.events", "event_name = 'item.traced'").await, 24);

        // New events of a key wait behind its redelivered ones: redeliver
        // one key's events and publish more of it at once.
        let done = server
            .preview_then_redeliver(&server.platform, json!({ "status": ["delivered"], "since": "2000-01-01T00:00:00Z" }))
            .await;
        assert_eq!(done["events"], 12);
        server.publish(event(ORGANIZATION, "a", 4)).await;
        db.settle(SETTLE).await;
        assert_eq!(
            trace(&db, "a").await.0,
            ",0,1,2,3,0,1,2,3,0,1,2,3,4",
            "the new event ran after the redelivered ones"
        );
        server.stop().await;
    }
}

on_both_databases! {
    async fn redelivering_dead_deliveries_runs_only_those_once_the_cause_is_fixed(db: TestDb) {
        let dir = prepare(&db).await;
        poison(&db, "bad").await;
        let server = serve(&db, dir.path()).await;
        for seq in 0..3 {
            server.publish(event(ORGANIZATION, "bad", seq)).await;
            server.publish(event(ORGANIZATION, "good", seq)).await;
        }
        db.settle(SETTLE).await;
        let dead = db.deliveries(Some(Status::Dead)).await;
        assert_eq!(dead.len(), 3, "{dead:?}");
        assert!(dead.iter().all(|d| d.last_error.as_deref().unwrap().contains("poisoned")));

        cure(&db).await;
        let done = server
            .preview_then_redeliver(&server.platform, json!({ "status": ["dead"] }))
            .await;
        assert_eq!(done["events"], 3, "{done}");
        db.settle(SETTLE).await;
        assert_eq!(trace(&db, "bad").await.0, ",0,1,2", "the dead ones, in order");
        assert_eq!(trace(&db, "good").await.0, ",0,1,2", "the delivered ones were not run again");
        assert!(db.deliveries(Some(Status::Dead)).await.is_empty());
        // Nothing left that is dead.
        let (status, again) = server
            .redeliver(&server.platform, json!({ "status": ["dead"], "preview": true }))
            .await;
        assert_eq!((status, again["events"].clone()), (200, json!(0)), "{again}");
        server.stop().await;
    }
}

on_both_databases! {
    async fn redelivering_skipped_deliveries_runs_the_events_published_while_disabled(db: TestDb) {
        let dir = prepare(&db).await;
        let server = serve(&db, dir.path()).await;
        server.publish(event(ORGANIZATION, "a", 0)).await;
        db.settle(SETTLE).await;
        server.engine.set_state("trace", busbar::engine::State::Disabled).await.unwrap();
        for seq in 1..4 {
            server.publish(event(ORGANIZATION, "a", seq)).await;
        }
        db.settle(SETTLE).await;
        let skipped = db.deliveries(Some(Status::Skipped)).await;
        assert_eq!(skipped.len(), 3, "{skipped:?}");

        // Disabled, a redelivery is refused: it would be skipped again.
        let (status, refused) = server
            .redeliver(&server.platform, json!({ "status": ["skipped"] }))
            .await;
        assert_eq!((status, refused["code"].clone()), (409, json!("integration-disabled")), "{refused}");

        server.engine.set_state("trace", busbar::engine::State::Enabled).await.unwrap();
        let done = server
            .preview_then_redeliver(&server.platform, json!({ "status": ["skipped"] }))
            .await;
        assert_eq!(done["events"], 3, "{done}");
        db.settle(SETTLE).await;
        assert_eq!(trace(&db, "a").await.0, ",0,1,2,3", "only the skipped ones ran, in order");
        assert!(db.deliveries(Some(Status::Skipped)).await.is_empty());
        server.stop().await;
    }
}

on_both_databases! {
    async fn the_same_request_id_redelivers_once(db: TestDb) {
        let dir = prepare(&db).await;
        let server = serve(&db, dir.path()).await;
        for seq in 0..3 {
            server.publish(event(ORGANIZATION, "a", seq)).await;
        }
        db.settle(SETTLE).await;
        let body = json!({ "status": ["delivered"], "request_id": "fix-1234" });
        let first = server.preview_then_redeliver(&server.platform, body.clone()).await;
        assert_eq!((first["events"].clone(), first["repeated"].clone()), (json!(3), json!(false)));
        db.settle(SETTLE).await;
        let (status, second) = server.redeliver(&server.platform, body.clone()).await;
        assert_eq!(status, 202, "{second}");
        assert_eq!(
            (second["events"].clone(), second["repeated"].clone(), second["finished"].clone()),
            (json!(3), json!(true), json!(true)),
            "{second}"
        );
        db.settle(SETTLE).await;
        assert_eq!(trace(&db, "a").await.0, ",0,1,2,0,1,2", "redelivered once");

        // The Idempotency-Key header is the same id.
        let answer = reqwest::Client::new()
            .post(format!("{}/api/integrations/trace/redeliver", server.base))
            .header(AUTHORIZATION, format!("Bearer {}", server.platform))
            .header("Idempotency-Key", "fix-1234")
            .json(&json!({ "status": ["delivered"] }))
            .send()
            .await
            .unwrap();
        let answer: Value = answer.json().await.unwrap();
        assert_eq!(answer["repeated"], true, "{answer}");
        // Another filter with the same id is refused.
        let (status, reused) = server
            .redeliver(&server.platform, json!({ "status": ["dead"], "request_id": "fix-1234" }))
            .await;
        assert_eq!((status, reused["code"].clone()), (409, json!("request-id-reused")), "{reused}");
        // An organization's request ids are its own.
        let (status, theirs) = server
            .redeliver(&server.acme, json!({ "status": ["delivered"], "request_id": "fix-1234" }))
            .await;
        assert_eq!((status, theirs["repeated"].clone()), (202, json!(false)), "{theirs}");
        db.settle(SETTLE).await;
        assert_eq!(trace(&db, "a").await.0, ",0,1,2,0,1,2,0,1,2");
        server.stop().await;
    }
}

on_both_databases! {
    async fn an_organization_admin_redelivers_only_its_own_events(db: TestDb) {
        let dir = prepare(&db).await;
        let server = serve(&db, dir.path()).await;
        for seq in 0..2 {
            server.publish(event(ORGANIZATION, "acme", seq)).await;
            server.publish(event(ORGANIZATION_WITHOUT_SUBSCRIPTIONS, "globex", seq)).await;
        }
        db.settle(SETTLE).await;

        // Asking for another organization is refused.
        let (status, refused) = server
            .redeliver(
                &server.globex,
                json!({ "status": ["delivered"], "organization_id": ORGANIZATION }),
            )
            .await;
        assert_eq!((status, refused["code"].clone()), (403, json!("organization-forbidden")), "{refused}");
        let (status, refused) = server
            .redeliver(
                &server.globex,
                json!({ "status": ["delivered"], "organization_id": ORGANIZATION, "preview": true }),
            )
            .await;
        assert_eq!(status, 403, "{refused}");

        // Its own key: only its own events, even without saying so.
        let done = server
            .preview_then_redeliver(&server.globex, json!({ "status": ["delivered"] }))
            .await;
        assert_eq!(done["events"], 2, "{done}");
        db.settle(SETTLE).await;
        assert_eq!(trace(&db, "globex").await.0, ",0,1,0,1");
        assert_eq!(trace(&db, "acme").await.0, ",0,1", "another organization's events were not touched");

        // A read key cannot redeliver at all.
        let reader = keys::create_key(&db.store, Some(ORGANIZATION), &[Scope::Read], None)
            .await
            .unwrap()
            .key;
        let (status, _) = server.redeliver(&reader, json!({ "preview": true })).await;
        assert_eq!(status, 403);
        server.stop().await;
    }
}

on_both_databases! {
    async fn a_redelivery_filter_is_checked(db: TestDb) {
        let dir = prepare(&db).await;
        let server = serve(&db, dir.path()).await;
        let (status, answer) = server
            .redeliver(&server.platform, json!({ "event": "item.deleted", "preview": true }))
            .await;
        assert_eq!((status, answer["code"].clone()), (422, json!("event-not-routed")), "{answer}");
        let (status, answer) = server
            .redeliver(&server.platform, json!({ "status": ["pending"], "preview": true }))
            .await;
        assert_eq!((status, answer["code"].clone()), (422, json!("invalid-body")), "{answer}");
        let (status, answer) = server
            .redeliver(&server.platform, json!({ "since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z" }))
            .await;
        assert_eq!((status, answer["code"].clone()), (422, json!("empty-time-range")), "{answer}");
        let answer = reqwest::Client::new()
            .post(format!("{}/api/integrations/nowhere/redeliver", server.base))
            .header(AUTHORIZATION, format!("Bearer {}", server.platform))
            .json(&json!({ "preview": true }))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 404);
        server.stop().await;
    }
}

/// `busbar redeliver --yes` on a temporary SQLite database that a running
/// engine (this test's) uses: the command line's redelivery is run by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_redelivers_with_yes_on_sqlite() {
    let db = TestDb::sqlite().await;
    let dir = prepare(&db).await;
    let engine = db.engine_on(dir.path(), None).await;
    for seq in 0..3 {
        engine
            .publish_json(&event(ORGANIZATION, "a", seq), None)
            .await
            .unwrap();
    }
    db.settle(SETTLE).await;
    write_trace(dir.path(), "v2");
    let generation = busbar::serve::load_generation(dir.path(), None, 2).unwrap();
    engine.swap_generation(generation).await.unwrap();

    let busbar = |args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_busbar"));
        command
            .arg("redeliver")
            .args(args)
            .args(["--database-url", &db.url])
            .arg("--dir")
            .arg(dir.path())
            .env("BUSBAR_LOG", "error")
            .stdin(std::process::Stdio::null());
        command.output().expect("busbar runs")
    };
    // The rest in process (stdin plays no part with --yes).
    let redeliver = |args: &[&str]| {
        let mut all: Vec<String> = vec!["redeliver".into()];
        all.extend(args.iter().map(|a| a.to_string()));
        all.extend(["--database-url".into(), db.url.clone(), "--dir".into()]);
        all.push(dir.path().display().to_string());
        busbar_cli_async(dir.path().to_path_buf(), all)
    };
    // Without --yes and without a terminal, it asks nothing and does nothing.
    let refused = busbar(&["--integration", "trace", "--status", "delivered"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--yes"),
        "{refused:?}"
    );
    let done = redeliver(&[
        "--integration",
        "trace",
        "--status",
        "delivered",
        "--yes",
        "--request-id",
        "cli-1",
    ])
    .await;
    let stdout = &done.stdout;
    assert!(done.status.success(), "{done:?}");
    assert!(stdout.contains("3 events of trace match"), "{stdout}");
    assert!(
        stdout.contains("redelivered 3 events through trace"),
        "{stdout}"
    );
    db.settle(SETTLE).await;
    assert_eq!(trace(&db, "a").await, (",0,1,2,0,1,2".into(), "v2".into()));
    // The same request id again: nothing more.
    let again = redeliver(&[
        "--integration",
        "trace",
        "--status",
        "delivered",
        "--yes",
        "--request-id",
        "cli-1",
    ])
    .await;
    assert!(again.status.success(), "{again:?}");
    assert!(again.stdout.contains("used already"), "{again:?}");
    // A directory that differs from the running definition is refused.
    write_trace(dir.path(), "v3");
    let differs = redeliver(&["--integration", "trace", "--yes"]).await;
    assert!(!differs.status.success());
    assert!(differs.stderr.contains("differs"), "{differs:?}");
    db.settle(SETTLE).await;
    assert_eq!(trace(&db, "a").await.0, ",0,1,2,0,1,2");
    engine.shutdown().await;
}

on_both_databases! {
    async fn a_redelivery_of_several_chunks_keeps_each_key_in_order_while_new_events_arrive(db: TestDb) {
        use busbar::engine::PublishRequest;
        use busbar::engine::redeliver::{CHUNK, RedeliverFilter, RedeliverRequest};
        use busbar::envelope::Envelope;

        let dir = prepare(&db).await;
        let engine = db
            .engine_with(dir.path(), None, |config| config.batch_size = 100)
            .await;
        // Three events for each of 700 keys, the keys interleaved: every
        // key has events in each of the redelivery's three chunks.
        let (keys, per_key) = (700, 3);
        let count = keys * per_key;
        assert!(count > CHUNK as usize * 2);
        let key = |k: usize| format!("k{k}");
        let requests: Vec<PublishRequest> = (0..per_key)
            .flat_map(|seq| (0..keys).map(move |k| (k, seq)))
            .map(|(k, seq)| PublishRequest {
                envelope: Envelope::from_json(&event(ORGANIZATION, &key(k), seq)).unwrap(),
                idempotency_key: None,
            })
            .collect();
        for batch in requests.chunks(500) {
            // SQLite has one writer: a lane working a large batch may keep
            // a publish waiting past its deadline (503); retry then.
            while let Err(error) = engine.publish_batch(batch.to_vec()).await {
                assert!(matches!(error, busbar::engine::PublishError::Unavailable(_)), "{error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        db.settle(SETTLE).await;
        write_trace(dir.path(), "v2");
        let generation = busbar::serve::load_generation(dir.path(), None, 2).unwrap();
        engine.swap_generation(generation).await.unwrap();

        let filter = RedeliverFilter {
            integration: "trace".into(),
            statuses: vec![Status::Delivered],
            ..RedeliverFilter::default()
        };
        let preview = engine.redeliver_preview(&filter).await.unwrap();
        assert_eq!(preview.events, count as u64);
        // New events of the key are published once the redelivery has
        // written its first chunk: they run after every redelivered one.
        let (first_chunk, written) = tokio::sync::watch::channel(0u64);
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let progress: busbar::engine::redeliver::Progress = {
            let seen = seen.clone();
            Arc::new(move |done| {
                let first = seen.lock().unwrap().is_empty();
                seen.lock().unwrap().push(done.deliveries);
                let _ = first_chunk.send(done.deliveries);
                if first {
                    // Time for the lanes to run the first chunk's rows and
                    // the new events before the next chunk exists, were
                    // they not held.
                    tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(1500)));
                }
            })
        };
        let running = tokio::spawn({
            let engine = engine.clone();
            async move {
                engine
                    .redeliver(
                        RedeliverRequest { filter, request_id: Some("big".into()), caller: None },
                        Some(progress),
                    )
                    .await
            }
        });
        let mut written = written;
        written.wait_for(|n| *n > 0).await.unwrap();
        for k in 0..5 {
            while let Err(error) = engine.publish_json(&event(ORGANIZATION, &key(k), per_key), None).await {
                assert!(matches!(error, busbar::engine::PublishError::Unavailable(_)), "{error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let done = running.await.unwrap().unwrap();
        assert_eq!(done.count, preview, "the preview counts what is redelivered");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3, "one progress report per chunk: {seen:?}");
        assert_eq!(seen.last().copied(), Some(count as u64));
        db.settle(SETTLE).await;
        let twice: String = (0..per_key).chain(0..per_key).map(|s| format!(",{s}")).collect();
        let mut wrong = Vec::new();
        for k in 0..keys {
            let expected = if k < 5 { format!("{twice},{per_key}") } else { twice.clone() };
            let (seqs, label) = trace(&db, &key(k)).await;
            if seqs != expected || label != "v2" {
                wrong.push(format!("{}: {seqs} {label}", key(k)));
            }
        }
        assert!(wrong.is_empty(), "applied out of order, twice or with the old mapping:\n{}", wrong.join("\n"));
        engine.shutdown().await;
    }
}

on_both_databases! {
    async fn a_redelivery_stopped_half_way_is_resumed_by_its_request_id(db: TestDb) {
        use busbar::engine::redeliver::{self, CHUNK, RedeliverFilter, RedeliverRequest};

        let dir = prepare(&db).await;
        let engine = db
            .engine_with(dir.path(), None, |config| config.batch_size = 100)
            .await;
        let (keys, per_key) = (600, 2);
        let count = keys * per_key;
        assert!(count > CHUNK as usize);
        for seq in 0..per_key {
            let batch: Vec<busbar::engine::PublishRequest> = (0..keys)
                .map(|k| busbar::engine::PublishRequest {
                    envelope: busbar::envelope::Envelope::from_json(&event(ORGANIZATION, &format!("k{k}"), seq)).unwrap(),
                    idempotency_key: None,
                })
                .collect();
            while let Err(error) = engine.publish_batch(batch.clone()).await {
                assert!(matches!(error, busbar::engine::PublishError::Unavailable(_)), "{error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        db.settle(SETTLE).await;
        let request = RedeliverRequest {
            filter: RedeliverFilter {
                integration: "trace".into(),
                statuses: vec![Status::Delivered],
                ..RedeliverFilter::default()
            },
            request_id: Some("resume-me".into()),
            caller: None,
        };
        // A run that stops after its first chunk (as a killed process would).
        let (chunk_done, mut first) = tokio::sync::watch::channel(false);
        let progress: redeliver::Progress = Arc::new(move |_| {
            let _ = chunk_done.send(true);
            // Time for the test to stop the run before its next chunk.
            tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(300)));
        });
        let stopped = tokio::spawn(redeliver::run(
            db.store.clone(),
            engine.generation(),
            request.clone(),
            Some(progress),
        ));
        first.wait_for(|done| *done).await.unwrap();
        stopped.abort();
        assert!(stopped.await.unwrap_err().is_cancelled());

        // Asked again at once: it is still thought to be running.
        let again = engine.redeliver(request.clone(), None).await.unwrap();
        assert_eq!((again.repeated, again.finished), (true, false), "{again:?}");
        assert_eq!(again.count.deliveries, CHUNK as u64, "the first chunk is recorded");

        // Two minutes later (made so here): the next call resumes it.
        let age = match db.dialect() {
            Dialect::Postgres => "UPDATE integrations.redeliveries SET updated_at = updated_at - INTERVAL '3 minutes'",
            Dialect::Sqlite => "UPDATE \"integrations.redeliveries\" SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', updated_at, '-3 minutes')",
        };
        db.store.execute_script(age).await.unwrap();
        let resumed = engine.redeliver(request.clone(), None).await.unwrap();
        assert_eq!((resumed.repeated, resumed.finished), (false, true), "{resumed:?}");
        assert_eq!(resumed.count.deliveries, count as u64, "the whole set, each once");
        let done = engine.redeliver(request, None).await.unwrap();
        assert_eq!((done.repeated, done.finished, done.count.deliveries), (true, true, count as u64));
        db.settle(SETTLE).await;
        let expected: String = (0..per_key).chain(0..per_key).map(|s| format!(",{s}")).collect();
        for k in 0..keys {
            assert_eq!(trace(&db, &format!("k{k}")).await.0, expected, "k{k}");
        }
        engine.shutdown().await;
    }
}

on_both_databases! {
    /// Issue 16: redelivery modes. "The latest per key" runs each key's
    /// newest matching delivery only; "from this event on" runs one key's
    /// deliveries from an event. The preview warns about deliveries whose
    /// key has a newer applied event left out of the redelivery.
    async fn redelivery_modes_latest_per_key_and_from_an_event_and_the_newer_applied_warning(db: TestDb) {
        let dir = prepare(&db).await;
        let server = serve(&db, dir.path()).await;
        let mut ids: Vec<(String, usize, Uuid)> = Vec::new();
        for seq in 0..3 {
            for key in ["a", "b"] {
                let mut e = event(ORGANIZATION, key, seq);
                let id = Uuid::now_v7();
                e["id"] = json!(id);
                server.publish(e).await;
                ids.push((key.to_owned(), seq, id));
            }
            db.settle(SETTLE).await;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        assert_eq!(trace(&db, "a").await.0, ",0,1,2");
        let platform = server.platform.clone();
        let id_of = |key: &str, seq: usize| ids.iter().find(|(k, s, _)| k == key && *s == seq).unwrap().2;

        // Only the first events (stored before seq 1): each key has newer
        // applied events that would not run again.
        let first_stored: chrono::DateTime<chrono::Utc> = {
            let detail = reqwest::Client::new()
                .get(format!("{}/api/integrations/events/{}", server.base, id_of("b", 1)))
                .header(AUTHORIZATION, format!("Bearer {platform}"))
                .send().await.unwrap().json::<Value>().await.unwrap();
            detail["created_at"].as_str().unwrap().parse().unwrap()
        };
        let (status, counted) = server.redeliver(&platform, json!({"status": ["delivered"], "until": first_stored, "preview": true})).await;
        assert_eq!(status, 200, "{counted}");
        assert_eq!((counted["deliveries"].clone(), counted["newer_applied"].clone()), (json!(3), json!(3)), "a0, b0 and a1: a2 and b2 are newer and left out: {counted}");

        // The latest per key: one each, nothing newer left out.
        let (_, counted) = server.redeliver(&platform, json!({"latest_per_key": true, "preview": true})).await;
        assert_eq!((counted["deliveries"].clone(), counted["newer_applied"].clone()), (json!(2), json!(0)), "{counted}");
        let done = server.preview_then_redeliver(&platform, json!({"latest_per_key": true})).await;
        assert_eq!(done["deliveries"], 2, "{done}");
        db.settle(SETTLE).await;
        assert_eq!(trace(&db, "a").await.0, ",0,1,2,2");
        assert_eq!(trace(&db, "b").await.0, ",0,1,2,2");

        // From a's seq 1 on: a1 and a2 (and its redelivered copy is the same
        // delivery), none of b.
        let done = server.preview_then_redeliver(&platform, json!({"from_event": id_of("a", 1)})).await;
        assert_eq!(done["deliveries"], 2, "{done}");
        db.settle(SETTLE).await;
        assert_eq!(trace(&db, "a").await.0, ",0,1,2,2,1,2", "in order, from seq 1");
        assert_eq!(trace(&db, "b").await.0, ",0,1,2,2");

        // Refused: both modes; an event that is not the source's.
        let (status, answer) = server.redeliver(&platform, json!({"latest_per_key": true, "from_event": id_of("a", 1)})).await;
        assert_eq!((status, answer["code"].clone()), (422, json!("invalid-body")), "{answer}");
        let (status, answer) = server.redeliver(&platform, json!({"from_event": Uuid::now_v7()})).await;
        assert_eq!((status, answer["code"].clone()), (422, json!("event-not-found")), "{answer}");
        server.stop().await;
    }
}
