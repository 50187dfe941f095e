//! Upgrading a database made by the release before delivery v2: migrations
//! 0001–0003 only, with routed events, a pending delivery, a delivery
//! waiting for its retry, a dead one, an event a product inserted that was
//! not routed yet, and a disabled integration. The new migrations keep all of
//! it, and the new engine finishes what was pending, routes what was not,
//! leaves what was done alone, and can replay what was dead.

use std::borrow::Cow;
use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use busbar::dev::ORGANIZATION;
use busbar::store::Db;
use busbar::store::events::Status;

use crate::support::{TestDb, candidate_hired};

const SETTLE: Duration = Duration::from_secs(30);

/// Applies busbar's migrations up to `version` only.
async fn migrate_to(db: &TestDb, version: i64) {
    match db.store.db() {
        Db::Postgres(pool) => {
            let mut migrator = sqlx::migrate!("migrations/postgres");
            migrator.migrations = Cow::Owned(
                migrator
                    .migrations
                    .iter()
                    .filter(|m| m.version <= version)
                    .cloned()
                    .collect(),
            );
            migrator.run(pool).await.unwrap();
        }
        Db::Sqlite { write, .. } => {
            let mut migrator = sqlx::migrate!("migrations/sqlite");
            migrator.migrations = Cow::Owned(
                migrator
                    .migrations
                    .iter()
                    .filter(|m| m.version <= version)
                    .cloned()
                    .collect(),
            );
            migrator.run(write).await.unwrap();
        }
    }
}

/// Writes what the previous release would have stored: an event and, when
/// given, its delivery for `integration` in `status`.
async fn old_event(
    db: &TestDb,
    email: &str,
    processed: bool,
    delivery: Option<(&str, &str, i32, &str)>,
) -> Uuid {
    let event = candidate_hired(ORGANIZATION, email);
    let id = Uuid::now_v7();
    let data = event["data"].to_string().replace('\'', "''");
    let processed_at = if processed {
        "'2026-11-01T10:00:00.000Z'"
    } else {
        "NULL"
    };
    db.execute(&format!(
        "INSERT INTO integrations.events (id, organization_id, source_product, event_name, event_data, occurred_at, \
         created_at, processed_at) VALUES ('{id}', '{ORGANIZATION}', 'recruitiq', 'candidate.hired', '{data}', \
         '2026-11-01T10:00:00.000Z', '2026-11-01T10:00:00.000Z', {processed_at})"
    ))
    .await;
    if let Some((integration, status, attempts, due)) = delivery {
        let target = if integration == "recruitiq-to-nexus" {
            "nexus"
        } else {
            "paylinq"
        };
        let error = if status == "pending" && attempts == 0 {
            "NULL"
        } else {
            "'step 2: connection lost'"
        };
        db.execute(&format!(
            "INSERT INTO integrations.deliveries (id, event_id, organization_id, integration_id, route_event, \
             route_ordinal, source_product, target_product, status, attempts, next_attempt_at, last_error, \
             created_at, updated_at) VALUES ('{}', '{id}', '{ORGANIZATION}', '{integration}', 'candidate.hired', 0, \
             'recruitiq', '{target}', '{status}', {attempts}, '{due}', {error}, \
             '2026-11-01T10:00:00.000Z', '2026-11-01T10:00:00.000Z')",
            Uuid::now_v7()
        ))
        .await;
    }
    id
}

async fn upgrade_keeps_and_finishes_everything(db: TestDb) {
    migrate_to(&db, 3).await;
    db.seed().await;
    // Done before the upgrade: routed, delivered (its rows were written then).
    old_event(
        &db,
        "done@acme.example",
        true,
        Some((
            "recruitiq-to-nexus",
            "delivered",
            1,
            "2026-11-01T10:00:00.000Z",
        )),
    )
    .await;
    // Routed, its delivery still pending (never tried).
    old_event(
        &db,
        "pending@acme.example",
        true,
        Some((
            "recruitiq-to-nexus",
            "pending",
            0,
            "2026-11-01T10:00:00.000Z",
        )),
    )
    .await;
    // Routed, waiting for its retry (due now).
    old_event(
        &db,
        "retrying@acme.example",
        true,
        Some((
            "recruitiq-to-nexus",
            "pending",
            2,
            "2026-11-01T10:00:00.000Z",
        )),
    )
    .await;
    // Routed, dead.
    let dead_event = old_event(
        &db,
        "dead@acme.example",
        true,
        Some(("recruitiq-to-nexus", "dead", 3, "2026-11-01T10:00:00.000Z")),
    )
    .await;
    // Inserted by a product, not routed yet.
    old_event(&db, "outbox@acme.example", false, None).await;
    db.execute(
        "INSERT INTO integrations.integration_state (integration_id, enabled) VALUES ('recruitiq-to-paylinq', false)",
    )
    .await;

    db.store
        .migrate()
        .await
        .expect("the new migrations apply to the old database");
    assert_eq!(
        db.count("integrations.deliveries").await,
        4,
        "every delivery row is kept"
    );
    assert_eq!(
        db.count_where("integrations.deliveries", "status = 'retrying'")
            .await,
        1
    );

    let engine = db.engine().await;
    assert!(
        !engine.is_enabled("recruitiq-to-paylinq"),
        "the disabled state is kept"
    );
    db.settle(SETTLE).await;
    for email in [
        "pending@acme.example",
        "retrying@acme.example",
        "outbox@acme.example",
    ] {
        assert!(
            db.find("hris.employees", &[("email", json!(email))])
                .await
                .is_some(),
            "{email} is applied after the upgrade"
        );
    }
    assert!(
        db.find("hris.employees", &[("email", json!("done@acme.example"))])
            .await
            .is_none(),
        "an event the old engine routed is not read again"
    );
    assert!(
        db.find("hris.employees", &[("email", json!("dead@acme.example"))])
            .await
            .is_none()
    );
    let dead = db.deliveries(Some(Status::Dead)).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].event_id, dead_event);
    assert!(engine.replay_delivery(dead[0].id, None).await.unwrap());
    db.settle(SETTLE).await;
    assert!(
        db.find("hris.employees", &[("email", json!("dead@acme.example"))])
            .await
            .is_some()
    );
    // New events flow as usual.
    engine
        .publish_json(&candidate_hired(ORGANIZATION, "new@acme.example"), None)
        .await
        .unwrap();
    db.settle(SETTLE).await;
    assert!(
        db.find("hris.employees", &[("email", json!("new@acme.example"))])
            .await
            .is_some()
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_previous_release_is_upgraded_with_nothing_lost_sqlite() {
    upgrade_keeps_and_finishes_everything(TestDb::sqlite_unmigrated().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "PostgreSQL suite skipped: TEST_DATABASE_URL was not set when the tests were built"
)]
async fn a_database_of_the_previous_release_is_upgraded_with_nothing_lost_postgres() {
    upgrade_keeps_and_finishes_everything(TestDb::postgres_unmigrated().await).await;
}
