//! Retention (`busbar prune`, issue 16): old events go with their delivery
//! rows, but never one an integration has not passed yet (a paused one),
//! nor one with a delivery still open or dead; what is young stays.

use std::time::Duration;

use busbar::dev::ORGANIZATION;
use busbar::engine::State;
use busbar::store::Dialect;
use busbar::store::events::Status;
use busbar::store::retention::{self, Pruned};
use busbar::store::types::Time;

use crate::support::{busbar_cli_async, candidate_hired, on_both_databases};

const SETTLE: Duration = Duration::from_secs(60);

on_both_databases! {
    async fn prune_deletes_old_events_nothing_needs_and_keeps_the_rest(db: TestDb) {
        db.seed().await;
        db.poison().await;
        let engine = db.engine().await;
        let publish = async |email: &str| {
            let event = candidate_hired(ORGANIZATION, email);
            engine.publish_json(&event, None).await.unwrap().id
        };
        // Delivered on their first pass (no rows), and one dead.
        let done = publish("old-1@acme.example").await;
        let done2 = publish("old-2@acme.example").await;
        let dead = publish("dead-old@acme.example").await;
        db.settle(SETTLE).await;
        // Paused: its lane does not pass this one.
        engine.set_state("recruitiq-to-paylinq", State::Paused).await.unwrap();
        let held = publish("held@acme.example").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let young = publish("young@acme.example").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Everything but `young` was stored 40 days ago.
        // (Events emitted by the deliveries stay young.)
        let ago = match db.dialect() {
            Dialect::Postgres => "now() - interval '40 days'",
            Dialect::Sqlite => "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-40 days')",
        };
        db.execute(&format!(
            "UPDATE integrations.events SET created_at = {ago} WHERE source_product = 'recruitiq' AND id <> '{young}'"
        ))
        .await;
        let rows_of = async |id: uuid::Uuid| db.count_where("integrations.deliveries", &format!("event_id = '{id}'")).await;
        let dead_rows = rows_of(dead).await;
        assert!(dead_rows >= 1);

        let cutoff = Time(chrono::Utc::now() - chrono::Duration::days(30));
        // Lanes store a cursor that only passed events of other
        // integrations a few seconds late: prune waits for it.
        let prunable = async |events: u64| {
            let started = std::time::Instant::now();
            loop {
                let preview = retention::prune(&db.store, cutoff, true).await.unwrap();
                if preview.events >= events || started.elapsed() > Duration::from_secs(20) {
                    return preview;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let preview = prunable(2).await;
        assert_eq!(preview.events, 2, "only the two delivered ones: {preview:?}");
        assert_eq!(db.count_where("integrations.events", "source_product = 'recruitiq'").await, 5, "a dry run deletes nothing");
        let pruned = retention::prune(&db.store, cutoff, false).await.unwrap();
        assert_eq!(pruned, preview);
        let left = async |id: uuid::Uuid| db.count_where("integrations.events", &format!("id = '{id}'")).await;
        assert_eq!((left(done).await, left(done2).await), (0, 0));
        assert_eq!(left(dead).await, 1, "a dead delivery keeps its event for a replay");
        assert_eq!(rows_of(dead).await, dead_rows);
        assert_eq!(left(held).await, 1, "the paused integration has not passed it");
        assert_eq!(left(young).await, 1);

        // Resumed, it delivers the held one; skipping the dead one frees it.
        engine.set_state("recruitiq-to-paylinq", State::Enabled).await.unwrap();
        db.settle(SETTLE).await;
        for d in db.deliveries(Some(Status::Dead)).await {
            let filter = busbar::store::lanes::ReplayFilter { delivery: Some(d.id), ..Default::default() };
            assert_eq!(engine.skip(filter, "test data", "test").await.unwrap(), 1);
        }
        assert_eq!(prunable(2).await.events, 2);
        // From the command line this time.
        let out = busbar_cli_async(
            std::env::temp_dir(),
            vec!["prune".into(), "--older-than".into(), "30d".into(), "--database-url".into(), db.url.clone()],
        )
        .await;
        assert!(out.status.success(), "{out:?}");
        assert!(out.stdout.starts_with(&format!("deleted 2 events and {dead_rows} delivery rows stored before")), "{out:?}");
        assert_eq!((left(dead).await, rows_of(dead).await, left(held).await), (0, 0, 0));
        assert_eq!(left(young).await, 1);
        // The API still answers for what is left, and nothing runs twice.
        assert_eq!(db.count_where("hris.employees", "email = 'young@acme.example'").await, 1);
        let again = retention::prune(&db.store, cutoff, false).await.unwrap();
        assert_eq!(again, Pruned::default());
        let refused = busbar_cli_async(
            std::env::temp_dir(),
            vec!["prune".into(), "--older-than".into(), "5m".into(), "--database-url".into(), db.url.clone()],
        )
        .await;
        assert_eq!(refused.status.code(), Some(2), "{refused:?}");
        assert!(refused.stderr.contains("at least 1h"), "{refused:?}");
        engine.shutdown().await;
    }
}
