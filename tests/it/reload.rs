//! Live reload: files added, changed, broken, fixed and deleted while the
//! engine runs, with the file watcher doing the noticing.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use busbar::engine::Engine;
use busbar::reload::{Reloader, Trigger, WatchMode};
use busbar::store::events::Status;

use crate::support::{TestDb, on_both_databases};

const SETTLE: Duration = Duration::from_secs(30);

fn integration(id: &str, event: &str, note: &str) -> String {
    format!(
        r#"id: {id}
source: tally
target: test
routes:
  - on: {event}
    steps:
      - upsert: test.notes
        key: [name]
        values:
          name: $.data.name
          note: "{note}"
"#
    )
}

/// The running file watcher of a test.
struct Watch {
    token: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Watch {
    fn cancel(&self) {
        self.token.cancel();
    }

    /// Stops watching and waits until the watcher's tasks have ended, so no
    /// change made afterwards can be seen.
    async fn stop(self) {
        self.token.cancel();
        for task in self.tasks {
            task.await.unwrap();
        }
    }
}

async fn setup(db: &TestDb, dir: &Path) -> (Engine, Arc<Reloader>, Watch) {
    if db.dialect() == busbar::store::Dialect::Postgres {
        db.execute("CREATE SCHEMA test").await;
    }
    db.execute("CREATE TABLE test.notes (name VARCHAR(200) PRIMARY KEY, note TEXT)")
        .await;
    let engine = db.engine_on(dir, None).await;
    let config = busbar::config::read_directory(dir, None).unwrap();
    let reloader = Reloader::new(engine.clone(), dir, None, &config);
    let token = CancellationToken::new();
    let tasks = reloader.spawn(WatchMode::Events, Duration::from_secs(1), token.clone());
    assert!(reloader.watching().await, "the watcher started");
    (engine, reloader, Watch { token, tasks })
}

/// Waits until generation `number` is live.
async fn live(reloader: &Reloader, number: u64) {
    let mut live = reloader.subscribe();
    tokio::time::timeout(Duration::from_secs(10), live.wait_for(|n| *n >= number))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "generation {number} never went live; last reload: {:?}",
                reloader.last()
            )
        })
        .unwrap();
}

fn note_event(event: &str, name: &str) -> serde_json::Value {
    json!({
        "source": "tally", "event": event, "organization_id": busbar::dev::ORGANIZATION,
        "data": {"name": name}
    })
}

/// Replaces a file the way editors do: write a temporary file, rename it.
fn save_atomically(path: &Path, text: &str) {
    let temporary = path.with_extension("yaml.tmp~");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

on_both_databases! {
    async fn a_new_file_is_picked_up_without_a_restart(db: TestDb) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("first.yaml"), integration("first", "note.added", "first")).unwrap();
        let (engine, reloader, shutdown) = setup(&db, dir.path()).await;

        save_atomically(&dir.path().join("second.yaml"), &integration("second", "note.changed", "second"));
        live(&reloader, 2).await;
        let outcome = reloader.last().unwrap();
        assert!(outcome.ok && outcome.swapped, "{outcome:?}");
        assert_eq!(outcome.added, ["second"]);
        assert_eq!(outcome.trigger, Trigger::Watch);

        engine.publish_json(&note_event("note.changed", "via-second"), None).await.unwrap();
        db.settle(SETTLE).await;
        let row = db.find("test.notes", &[("name", json!("via-second"))]).await.expect("delivered by the new file");
        assert_eq!(row["note"], "second");
        shutdown.cancel();
        engine.shutdown().await;
    }
}

on_both_databases! {
    async fn a_changed_mapping_applies_to_events_after_the_change(db: TestDb) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("notes.yaml");
        std::fs::write(&file, integration("notes", "note.added", "before")).unwrap();
        let (engine, reloader, shutdown) = setup(&db, dir.path()).await;

        engine.publish_json(&note_event("note.added", "a"), None).await.unwrap();
        db.settle(SETTLE).await;
        // An in-place write, as some editors and `sed -i` do.
        std::fs::write(&file, integration("notes", "note.added", "after")).unwrap();
        live(&reloader, 2).await;
        assert_eq!(reloader.last().unwrap().changed, ["notes"]);
        engine.publish_json(&note_event("note.added", "b"), None).await.unwrap();
        db.settle(SETTLE).await;

        assert_eq!(db.find("test.notes", &[("name", json!("a"))]).await.unwrap()["note"], "before");
        assert_eq!(db.find("test.notes", &[("name", json!("b"))]).await.unwrap()["note"], "after");
        assert_eq!(db.deliveries(Some(Status::Delivered)).await.len(), 2);
        shutdown.cancel();
        engine.shutdown().await;
    }
}

on_both_databases! {
    async fn a_broken_file_keeps_the_old_generation_until_it_is_fixed(db: TestDb) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("notes.yaml");
        std::fs::write(&file, integration("notes", "note.added", "good")).unwrap();
        let (engine, reloader, shutdown) = setup(&db, dir.path()).await;

        // A template with a typo'd name: line 11, column 21 is the `d` of `dat`.
        let broken = integration("notes", "note.added", "{{ dat.name }}");
        save_atomically(&file, &broken);
        let start = std::time::Instant::now();
        let outcome = loop {
            let outcome = reloader.last().unwrap();
            if !outcome.ok {
                break outcome;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "the broken save was never noticed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(outcome.generation, 1, "the old generation stays live");
        assert!(!outcome.swapped);
        let error = &outcome.errors[0];
        assert_eq!(error.file, file);
        assert_eq!((error.position.line, error.position.column), (11, 21), "{error}");
        assert_eq!(error.code.as_str(), "undefined-name");

        // The old generation still serves.
        engine.publish_json(&note_event("note.added", "meanwhile"), None).await.unwrap();
        db.settle(SETTLE).await;
        assert_eq!(db.find("test.notes", &[("name", json!("meanwhile"))]).await.unwrap()["note"], "good");

        save_atomically(&file, &integration("notes", "note.added", "fixed"));
        live(&reloader, 2).await;
        assert!(reloader.last().unwrap().ok);
        engine.publish_json(&note_event("note.added", "later"), None).await.unwrap();
        db.settle(SETTLE).await;
        assert_eq!(db.find("test.notes", &[("name", json!("later"))]).await.unwrap()["note"], "fixed");
        shutdown.cancel();
        engine.shutdown().await;
    }
}

on_both_databases! {
    async fn deleting_a_file_skips_its_pending_deliveries_with_the_reason(db: TestDb) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep.yaml"), integration("keep", "note.kept", "kept")).unwrap();
        let doomed = dir.path().join("doomed.yaml");
        std::fs::write(&doomed, integration("doomed", "note.added", "doomed")).unwrap();
        let (engine, reloader, shutdown) = setup(&db, dir.path()).await;
        // A delivery for `doomed` waiting for a retry far in the future.
        let far = chrono::Utc::now() + chrono::Duration::days(365);
        db.park_delivery(&note_event("note.added", "parked"), "doomed", "test", far).await;

        std::fs::remove_file(&doomed).unwrap();
        live(&reloader, 2).await;
        assert_eq!(reloader.last().unwrap().removed, ["doomed"]);
        let skipped = db.deliveries(Some(Status::Skipped)).await;
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        let reason = skipped[0].last_error.as_deref().unwrap();
        assert!(reason.contains("integration `doomed` was removed from the configuration (generation 2)"), "{reason}");
        shutdown.cancel();
        engine.shutdown().await;
    }
}

on_both_databases! {
    async fn sighup_style_reloads_without_changes_keep_serving(db: TestDb) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.yaml"), integration("notes", "note.added", "x")).unwrap();
        let (engine, reloader, shutdown) = setup(&db, dir.path()).await;
        // An explicit reload with nothing changed compiles again and swaps.
        let outcome = reloader.reload(Trigger::Api).await;
        assert!(outcome.ok && outcome.swapped, "{outcome:?}");
        assert_eq!(outcome.generation, 2);
        // A watcher event with nothing changed (an editor's swap file) is
        // a no-op.
        std::fs::write(dir.path().join(".notes.yaml.swp"), "junk").unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(engine.generation().number, 2);
        shutdown.cancel();
        engine.shutdown().await;
    }
}

fn ledger(version: usize, broken: bool) -> String {
    let applied = if broken {
        "{{ (previous.applied if previous else 0) + }}"
    } else {
        "{{ (previous.applied if previous else 0) + 1 }}"
    };
    format!(
        r#"id: ledger
source: load
target: books
routes:
  - on: item.added
    steps:
      - find: test.ledger
        where: {{ event_id: $.id }}
        as: previous
      - upsert: test.ledger
        key: [event_id]
        values:
          event_id: $.id
          applied: "{applied}"
          version: v{version}
"#
    )
}

on_both_databases! {
    async fn rewriting_files_under_http_load_loses_and_fails_nothing(db: TestDb) {
        use busbar::api::{self, ApiConfig, AppState, ReloadOutcome};
        use busbar::store::keys::{self, Scope};

        if db.dialect() == busbar::store::Dialect::Postgres {
            db.execute("CREATE SCHEMA test").await;
        }
        db.execute("CREATE TABLE test.ledger (event_id UUID PRIMARY KEY, applied INTEGER NOT NULL, version TEXT)")
            .await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ledger.yaml");
        std::fs::write(&file, ledger(0, false)).unwrap();
        let engine = db.engine_on(dir.path(), None).await;
        let config = busbar::config::read_directory(dir.path(), None).unwrap();
        let reloader = Reloader::new(engine.clone(), dir.path(), None, &config);
        let stop_watching = CancellationToken::new();
        reloader.spawn(WatchMode::Events, Duration::from_secs(1), stop_watching.clone());
        assert!(reloader.watching().await, "the watcher started");
        let key = {
            let mut tx = db.store.begin().await.unwrap();
            let key = keys::create(&mut tx, Some(busbar::dev::ORGANIZATION), &[Scope::Publish], None, busbar::store::types::Time::now())
                .await
                .unwrap()
                .key;
            tx.commit().await.unwrap();
            key
        };
        let shown = Arc::new(arc_swap::ArcSwap::from_pointee(ReloadOutcome::loaded(1)));
        let state = AppState::new(engine.clone(), shown, ApiConfig::default()).with_reloader(reloader.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(api::serve(listener, busbar::serve::app(state), async move {
            let _ = stopped.await;
        }));

        // Publishers run until every save below has been seen.
        let saving = CancellationToken::new();
        let mut publishers = Vec::new();
        for publisher in 0..4 {
            let (base, key, saving) = (base.clone(), key.clone(), saving.clone());
            publishers.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                let (mut accepted, mut failed) = (0u64, Vec::new());
                let mut i = 0;
                while !saving.is_cancelled() {
                    let event = json!({
                        "source": "load", "event": "item.added",
                        "organization_id": busbar::dev::ORGANIZATION, "data": {"item": format!("{publisher}-{i}")}
                    });
                    let response = client.post(format!("{base}/api/events")).bearer_auth(&key).json(&event).send().await.unwrap();
                    match response.status().as_u16() {
                        202 => accepted += 1,
                        status => failed.push((status, response.text().await.unwrap_or_default())),
                    }
                    i += 1;
                }
                (accepted, failed)
            }));
        }
        // Meanwhile, save the file again and again: valid and broken, by
        // rename and in place. Each valid save is waited for until it is
        // live, so every one of them is a generation of its own.
        let mut valid_saves = 0;
        for save in 1..=24 {
            let broken = save % 3 == 0;
            let text = ledger(save, broken);
            let next = engine.generation().number + 1;
            if save % 2 == 0 {
                save_atomically(&file, &text);
            } else {
                std::fs::write(&file, &text).unwrap();
            }
            if !broken {
                live(&reloader, next).await;
                valid_saves += 1;
            }
        }
        saving.cancel();
        let mut accepted = 0;
        for publisher in publishers {
            let (count, failed) = publisher.await.unwrap();
            assert!(failed.is_empty(), "requests failed during reloads: {failed:?}");
            assert!(count > 0, "every publisher was answered while the file changed");
            accepted += count;
        }
        db.settle(SETTLE).await;
        let generations = engine.generation().number;
        assert!(generations > valid_saves, "{valid_saves} valid saves made only {generations} generations");
        let accepted = accepted as i64;
        assert_eq!(db.count("integrations.events").await, accepted);
        assert_eq!(db.count("test.ledger").await, accepted, "every accepted event was applied");
        assert_eq!(db.count_where("test.ledger", "applied <> 1").await, 0, "no event was applied twice");
        assert_eq!(db.count_where("integrations.deliveries", "status <> 'delivered'").await, 0);
        let _ = stop_server.send(());
        server.await.unwrap().unwrap();
        stop_watching.cancel();
        engine.shutdown().await;
    }
}

on_both_databases! {
    async fn the_reload_endpoint_reloads_for_platform_admins_and_lists_errors(db: TestDb) {
        use busbar::api::{self, ApiConfig, AppState, ReloadOutcome};
        use busbar::store::keys::{self, Scope};

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("notes.yaml");
        std::fs::write(&file, integration("notes", "note.added", "x")).unwrap();
        let (engine, reloader, shutdown) = setup(&db, dir.path()).await;
        let (platform, organization_admin) = {
            let mut tx = db.store.begin().await.unwrap();
            let now = busbar::store::types::Time::now();
            let platform = keys::create(&mut tx, None, &[Scope::Admin, Scope::Read], None, now).await.unwrap().key;
            let admin = keys::create(&mut tx, Some(busbar::dev::ORGANIZATION), &[Scope::Admin], None, now)
                .await
                .unwrap()
                .key;
            tx.commit().await.unwrap();
            (platform, admin)
        };
        let shown = Arc::new(arc_swap::ArcSwap::from_pointee(ReloadOutcome::loaded(1)));
        let state = AppState::new(engine.clone(), shown, ApiConfig::default()).with_reloader(reloader.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(api::serve(listener, busbar::serve::app(state), async move {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::new();
        let reload = |key: Option<&str>| {
            let request = client.post(format!("{base}/api/integrations/reload"));
            match key {
                Some(key) => request.bearer_auth(key),
                None => request,
            }
            .send()
        };

        assert_eq!(reload(None).await.unwrap().status(), 401);
        assert_eq!(reload(Some(&organization_admin)).await.unwrap().status(), 403);
        let ok = reload(Some(&platform)).await.unwrap();
        assert_eq!(ok.status(), 200);
        let body: serde_json::Value = ok.json().await.unwrap();
        assert_eq!((body["ok"].clone(), body["generation"].clone(), body["trigger"].clone()), (json!(true), json!(2), json!("api")));

        // Break the file without the watcher seeing it first: stop watching.
        shutdown.stop().await;
        std::fs::write(&file, integration("notes", "note.added", "{{ nope }}")).unwrap();
        let failed = reload(Some(&platform)).await.unwrap();
        assert_eq!(failed.status(), 422);
        let body: serde_json::Value = failed.json().await.unwrap();
        assert_eq!(body["code"], "reload-failed");
        assert_eq!(body["errors"][0]["pointer"], json!(format!("{}:11:21", file.display())));
        assert!(body["errors"][0]["message"].as_str().unwrap().ends_with("[undefined-name]"), "{body}");
        assert_eq!(engine.generation().number, 2, "the live generation stays");

        // The status shows the failed reload, with the generation served.
        let status: serde_json::Value = client
            .get(format!("{base}/api/integrations/status"))
            .bearer_auth(&platform)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(status["reload"]["ok"], false);
        assert_eq!(status["reload"]["generation"], 2);
        assert_eq!(status["reload"]["errors"][0]["line"], 11);
        assert_eq!(status["reload"]["errors"][0]["code"], "undefined-name");

        // Metrics count reloads by outcome and show the live generation and
        // when a reload last succeeded.
        let metrics = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        for name in [
            "busbar_reloads_total{outcome=\"ok\"}",
            "busbar_reloads_total{outcome=\"failed\"}",
            "busbar_generation",
            "busbar_reload_last_success_timestamp_seconds",
            "busbar_reload_last_successful",
        ] {
            assert!(metrics.contains(name), "{name} missing from /metrics:\n{metrics}");
        }

        let _ = stop_server.send(());
        server.await.unwrap().unwrap();
        engine.shutdown().await;
    }
}
