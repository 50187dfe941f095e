//! The delivery engine against real databases: the original spec's flow,
//! idempotent publishing, poison events and replay, the outbox, disabled
//! integrations, and values that try to break SQL.

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use busbar::dev::{ORGANIZATION, ORGANIZATION_WITHOUT_SUBSCRIPTIONS};
use busbar::engine::PublishError;
use busbar::store::events::Status;

use crate::support::{TestDb, candidate_hired, on_both_databases};

const SETTLE: Duration = Duration::from_secs(30);

on_both_databases! {
    async fn hired_candidate_becomes_employee_and_payroll_record(db: TestDb) {
        db.seed().await;
        let engine = db.engine().await;
        let published = engine
            .publish_json(&candidate_hired(ORGANIZATION, "  Ada.Lovelace@Example.com "), None)
            .await
            .unwrap();
        assert!(published.created);
        db.settle(SETTLE).await;

        let employee = db
            .find("hris.employees", &[("email", json!("ada.lovelace@example.com"))])
            .await
            .expect("the employee exists");
        assert_eq!(employee["first_name"], "Ada");
        assert_eq!(employee["hire_date"], "2027-01-04");
        assert_eq!(employee["status"], "active");
        let employee_id = employee["id"].clone();

        let link = db
            .find("integrations.candidate_employee_map", &[("employee_id", employee_id.clone())])
            .await
            .expect("the candidate is linked to the employee");
        assert_eq!(link["converted_by"], json!(busbar::dev::USER.to_string()));

        assert_eq!(db.count_where("integrations.events", "event_name = 'employee.created'").await, 1);

        let record = db
            .find("payroll.employee_records", &[("employee_id", employee_id.clone())])
            .await
            .expect("nexus -> paylinq created the payroll record");
        assert_eq!(record["status"], "active");
        assert_eq!(record["start_date"], "2027-01-04");
        assert_eq!(record["salary"].as_f64(), Some(72000.0));
        let payroll_map = db
            .find("integrations.employee_payroll_map", &[("employee_id", employee_id)])
            .await
            .expect("the payroll map row exists");
        assert_eq!(payroll_map["payroll_record_id"], record["id"]);
        assert_eq!(db.count("payroll.new_hires").await, 1);

        let delivered = db.deliveries(Some(Status::Delivered)).await;
        let mut integrations: Vec<&str> = delivered.iter().map(|d| d.integration.as_str()).collect();
        integrations.sort();
        assert_eq!(integrations, ["nexus-to-paylinq", "recruitiq-to-nexus", "recruitiq-to-paylinq"]);
        assert!(db.deliveries(Some(Status::Dead)).await.is_empty());
        engine.shutdown().await;
    }
}

on_both_databases! {
    async fn organization_without_subscription_is_skipped_with_the_reason(db: TestDb) {
        db.seed().await;
        let engine = db.engine().await;
        engine
            .publish_json(&candidate_hired(ORGANIZATION_WITHOUT_SUBSCRIPTIONS, "bob@globex.example"), None)
            .await
            .unwrap();
        db.settle(SETTLE).await;
        let skipped = db.deliveries(Some(Status::Skipped)).await;
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        for delivery in &skipped {
            let reason = delivery.last_error.as_deref().unwrap_or_default();
            assert!(
                reason.starts_with("no row in core.product_subscriptions matches organization_id = "),
                "{reason}"
            );
        }
        assert_eq!(db.count("hris.employees").await, 0);
        assert_eq!(db.count("payroll.new_hires").await, 0);
        engine.shutdown().await;
    }
}

on_both_databases! {
    async fn updates_and_termination_update_and_close_the_payroll_record(db: TestDb) {
        db.seed().await;
        let engine = db.engine().await;
        engine.publish_json(&candidate_hired(ORGANIZATION, "grace@acme.example"), None).await.unwrap();
        db.settle(SETTLE).await;
        let employee = db.find("hris.employees", &[("email", json!("grace@acme.example"))]).await.unwrap();
        let employee_id = employee["id"].as_str().unwrap().to_owned();

        let updated = json!({
            "source": "nexus", "event": "employee.updated", "organization_id": ORGANIZATION,
            "data": {
                "employee_id": employee_id, "first_name": "Grace", "last_name": "Hopper",
                "email": "grace@acme.example", "salary": 81000.5, "currency": "USD", "pay_frequency": "biweekly"
            }
        });
        engine.publish_json(&updated, None).await.unwrap();
        db.settle(SETTLE).await;
        let record = db.find("payroll.employee_records", &[("employee_id", json!(employee_id))]).await.unwrap();
        assert_eq!(record["last_name"], "Hopper");
        assert_eq!(record["currency"], "USD");
        assert_eq!(record["pay_frequency"], "biweekly");
        assert_eq!(record["salary"].as_f64(), Some(81000.5));

        let terminated = json!({
            "source": "nexus", "event": "employee.terminated", "organization_id": ORGANIZATION,
            "data": { "employee_id": employee_id, "termination_date": "2027-06-30" }
        });
        engine.publish_json(&terminated, None).await.unwrap();
        db.settle(SETTLE).await;
        let record = db.find("payroll.employee_records", &[("employee_id", json!(employee_id))]).await.unwrap();
        assert_eq!(record["status"], "closed");
        assert_eq!(record["end_date"], "2027-06-30");
        assert!(db.deliveries(Some(Status::Dead)).await.is_empty());
        engine.shutdown().await;
    }
}

on_both_databases! {
    async fn publish_with_same_id_twice_creates_one_event_and_one_set_of_rows(db: TestDb) {
        db.seed().await;
        let engine = db.engine().await;
        let mut event = candidate_hired(ORGANIZATION, "twice@acme.example");
        let id = Uuid::now_v7();
        event["id"] = json!(id);
        let first = engine.publish_json(&event, None).await.unwrap();
        let second = engine.publish_json(&event, None).await.unwrap();
        assert_eq!((first.id, first.created), (id, true));
        assert_eq!((second.id, second.created), (id, false));
        // The same id twice in one batch.
        let batch = engine
            .publish_batch(vec![
                busbar::engine::PublishRequest {
                    envelope: busbar::envelope::Envelope::from_json(&event).unwrap(),
                    idempotency_key: None,
                };
                2
            ])
            .await
            .unwrap();
        assert!(batch.iter().all(|p| !p.created && p.id == id));
        db.settle(SETTLE).await;
        assert_eq!(db.count_where("integrations.events", "event_name = 'candidate.hired'").await, 1);
        assert_eq!(db.count("hris.employees").await, 1);
        assert_eq!(db.deliveries(None).await.len(), 3);

        // An idempotency key names the event as well as an id does.
        let keyed = candidate_hired(ORGANIZATION, "keyed@acme.example");
        let a = engine.publish_json(&keyed, Some("order-42".into())).await.unwrap();
        let b = engine.publish_json(&keyed, Some("order-42".into())).await.unwrap();
        assert!(a.created && !b.created);
        assert_eq!(a.id, b.id);
        db.settle(SETTLE).await;
        assert_eq!(db.count("hris.employees").await, 2);
        engine.shutdown().await;
    }
}

on_both_databases! {
    async fn payloads_that_break_the_contract_are_refused_and_nothing_is_stored(db: TestDb) {
        db.seed().await;
        let engine = db.engine().await;
        let mut event = candidate_hired(ORGANIZATION, "x@acme.example");
        event["data"]["candidate"].as_object_mut().unwrap().remove("lastName");
        event["data"]["offer"]["salary"] = json!("a lot");
        let Err(PublishError::Invalid(violations)) = engine.publish_json(&event, None).await else {
            panic!("a payload that breaks its contract is refused");
        };
        let pointers: Vec<&str> = violations.iter().map(|v| v.pointer.as_str()).collect();
        assert!(pointers.contains(&"/data/candidate"), "{violations:?}");
        assert!(pointers.contains(&"/data/offer/salary"), "{violations:?}");
        let Err(PublishError::Invalid(violations)) =
            engine.publish_json(&json!({"source": "recruitiq"}), None).await
        else {
            panic!("an incomplete envelope is refused");
        };
        assert!(violations.iter().any(|v| v.pointer == "/event"));
        assert_eq!(db.count("integrations.events").await, 0);
        engine.shutdown().await;
    }
}

/// An integration with no contract, so any value reaches the database.
fn counter_integration() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("counts.yaml"),
        r#"
id: counts
source: tally
target: test
retry: { max_attempts: 3, initial: 10ms, max: 50ms }
routes:
  - on: count.recorded
    steps:
      - upsert: test.counts
        key: [name]
        values:
          name: $.data.name
          amount: $.data.amount
          note: $.data.note
"#,
    )
    .unwrap();
    dir
}

const COUNTS_TABLE: &str =
    "CREATE TABLE test.counts (name VARCHAR(200) PRIMARY KEY, amount INTEGER NOT NULL, note TEXT)";

fn count_event(name: &str, amount: Value, note: &str) -> Value {
    json!({
        "source": "tally", "event": "count.recorded", "organization_id": ORGANIZATION,
        "data": { "name": name, "amount": amount, "note": note }
    })
}

on_both_databases! {
    async fn poison_event_is_dead_lettered_without_holding_up_others_and_replays_after_a_fix(db: TestDb) {
        if db.dialect() == busbar::store::Dialect::Postgres {
            db.execute("CREATE SCHEMA test").await;
        }
        db.execute(COUNTS_TABLE).await;
        let dir = counter_integration();
        let engine = db.engine_on(dir.path(), None).await;
        let poison = engine.publish_json(&count_event("poison", json!("twelve"), ""), None).await.unwrap();
        for i in 0..20 {
            engine.publish_json(&count_event(&format!("ok-{i}"), json!(i), ""), None).await.unwrap();
        }
        db.settle(SETTLE).await;
        assert_eq!(db.count("test.counts").await, 20, "the events behind the poison are delivered");
        let dead = db.deliveries(Some(Status::Dead)).await;
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].event_id, poison.id);
        assert_eq!(dead[0].attempts, 1, "a permanent error is not retried");
        assert_eq!(dead[0].error_step, Some(1));
        let reason = dead[0].last_error.as_deref().unwrap();
        assert!(
            reason.contains("column `amount`: cannot store \"twelve\" as INTEGER: not a whole number")
                || reason.contains("column `amount`: cannot store \"twelve\" as integer: not a whole number"),
            "{reason}"
        );

        // Fix the stored event's data, then replay the dead delivery.
        db.execute(&format!(
            "UPDATE integrations.events SET event_data = '{{\"name\": \"poison\", \"amount\": 12, \"note\": \"\"}}' WHERE id = '{}'",
            poison.id
        ))
        .await;
        assert!(engine.replay_delivery(dead[0].id, None).await.unwrap());
        assert!(!engine.replay_delivery(dead[0].id, None).await.unwrap(), "only dead deliveries replay");
        db.settle(SETTLE).await;
        let row = db.find("test.counts", &[("name", json!("poison"))]).await.expect("replayed");
        assert_eq!(row["amount"], 12);
        assert!(db.deliveries(Some(Status::Dead)).await.is_empty());
        engine.shutdown().await;
    }
}

on_both_databases! {
    /// Issue 16, item 4: a dead delivery replayed after the integration was
    /// disabled and enabled again was skipped as "published while
    /// disabled", and the API said it was pending.
    async fn a_dead_delivery_replayed_after_a_disable_and_enable_is_applied(db: TestDb) {
        use busbar::engine::State;
        if db.dialect() == busbar::store::Dialect::Postgres {
            db.execute("CREATE SCHEMA test").await;
        }
        db.execute(COUNTS_TABLE).await;
        let dir = counter_integration();
        let engine = db.engine_on(dir.path(), None).await;
        let poison = engine.publish_json(&count_event("poison", json!("twelve"), ""), None).await.unwrap();
        db.settle(SETTLE).await;
        let dead = db.deliveries(Some(Status::Dead)).await;
        assert_eq!(dead.len(), 1);
        engine.set_state("counts", State::Disabled).await.unwrap();
        engine.set_state("counts", State::Enabled).await.unwrap();
        // Events published after the re-enable run as usual.
        engine.publish_json(&count_event("after", json!(1), ""), None).await.unwrap();
        db.execute(&format!(
            "UPDATE integrations.events SET event_data = '{{\"name\": \"poison\", \"amount\": 12, \"note\": \"\"}}' WHERE id = '{}'",
            poison.id
        ))
        .await;
        assert!(engine.replay_delivery(dead[0].id, None).await.unwrap());
        db.settle(SETTLE).await;
        let row = db.find("test.counts", &[("name", json!("poison"))]).await;
        let skipped = db.deliveries(Some(Status::Skipped)).await;
        assert!(skipped.is_empty(), "nothing is skipped: {skipped:?}");
        assert_eq!(row.expect("the replay is applied")["amount"], 12);
        assert!(db.find("test.counts", &[("name", json!("after"))]).await.is_some());
        engine.shutdown().await;
    }
}

on_both_databases! {
    async fn values_with_quotes_semicolons_keywords_and_unicode_land_verbatim(db: TestDb) {
        if db.dialect() == busbar::store::Dialect::Postgres {
            db.execute("CREATE SCHEMA test").await;
        }
        db.execute(COUNTS_TABLE).await;
        let dir = counter_integration();
        let engine = db.engine_on(dir.path(), None).await;
        let nasty = [
            "Robert'); DROP TABLE \"test.counts\"; --",
            "\"double\" 'single' `back`",
            "SELECT * FROM integrations.events; DELETE FROM integrations.deliveries",
            "Zoë 北京 🚀 \\ backslash \n new line",
            "$1 ?1 :name @x",
        ];
        for (i, text) in nasty.iter().enumerate() {
            engine.publish_json(&count_event(text, json!(i), text), None).await.unwrap();
        }
        db.settle(SETTLE).await;
        assert!(db.deliveries(Some(Status::Dead)).await.is_empty(), "{:?}", db.deliveries(Some(Status::Dead)).await);
        for (i, text) in nasty.iter().enumerate() {
            let row = db.find("test.counts", &[("name", json!(text))]).await.expect("row by its verbatim name");
            assert_eq!(row["note"], json!(text));
            assert_eq!(row["amount"], json!(i));
        }
        assert_eq!(db.count("test.counts").await, nasty.len() as i64);
        // NUL cannot be stored by PostgreSQL: it is refused up front, on
        // both databases, rather than failing a commit.
        let Err(PublishError::Invalid(violations)) =
            engine.publish_json(&count_event("nul\u{0}", json!(1), ""), None).await
        else {
            panic!("NUL is refused");
        };
        assert_eq!(violations[0].pointer, "/data/name");
        engine.shutdown().await;
    }
}

on_both_databases! {
    async fn events_a_product_inserts_itself_are_routed_and_delivered(db: TestDb) {
        db.seed().await;
        let engine = db.engine().await;
        let event = candidate_hired(ORGANIZATION, "outbox@acme.example");
        let data = event["data"].to_string().replace('\'', "''");
        db.execute(&format!(
            "INSERT INTO integrations.events (id, organization_id, source_product, event_name, event_data) \
             VALUES ('{}', '{ORGANIZATION}', 'recruitiq', 'candidate.hired', '{data}')",
            Uuid::new_v4()
        ))
        .await;
        engine.wake();
        db.settle(SETTLE).await;
        assert!(db.find("hris.employees", &[("email", json!("outbox@acme.example"))]).await.is_some());
        assert_eq!(db.deliveries(Some(Status::Delivered)).await.len(), 3);
        engine.shutdown().await;
    }
}

on_both_databases! {
    async fn disabling_skips_retrying_deliveries_and_new_events_and_enabling_resurrects_nothing(db: TestDb) {
        db.seed().await;
        let engine = db.engine().await;
        // A delivery that failed and waits an hour for its retry.
        let parked = db
            .park_delivery(
                &candidate_hired(ORGANIZATION, "retrying@acme.example"),
                "recruitiq-to-paylinq",
                "paylinq",
                chrono::Utc::now() + chrono::Duration::hours(1),
            )
            .await;
        let changed = engine.set_enabled_pair("recruitiq", "paylinq", false).await.unwrap();
        assert_eq!(changed, ["recruitiq-to-paylinq"]);
        assert!(!engine.is_enabled("recruitiq-to-paylinq"));
        // Disabling skips the retrying delivery at once, with the reason.
        let skipped = db.deliveries(Some(Status::Skipped)).await;
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!(skipped[0].id, parked);
        assert!(skipped[0].last_error.as_deref().unwrap().contains("was disabled"), "{skipped:?}");

        // An event published while disabled is skipped too.
        engine.publish_json(&candidate_hired(ORGANIZATION, "paused@acme.example"), None).await.unwrap();
        db.settle(SETTLE).await;
        let paylinq: Vec<_> = db
            .deliveries(None)
            .await
            .into_iter()
            .filter(|d| d.integration == "recruitiq-to-paylinq")
            .collect();
        assert_eq!(paylinq.len(), 2, "{paylinq:?}");
        assert!(paylinq.iter().all(|d| d.status == Status::Skipped), "{paylinq:?}");
        assert_eq!(db.count("payroll.new_hires").await, 0);

        // Published while disabled and enabled at once, before any worker
        // saw it: still skipped.
        engine.set_enabled("recruitiq-to-paylinq", false).await.unwrap();
        engine.publish_json(&candidate_hired(ORGANIZATION, "racing@acme.example"), None).await.unwrap();
        engine.set_enabled("recruitiq-to-paylinq", true).await.unwrap();
        db.settle(SETTLE).await;
        assert_eq!(db.count("payroll.new_hires").await, 0, "nothing is resurrected");
        assert_eq!(db.deliveries(Some(Status::Skipped)).await.len(), 3);

        engine.publish_json(&candidate_hired(ORGANIZATION, "later@acme.example"), None).await.unwrap();
        db.settle(SETTLE).await;
        assert_eq!(db.count("payroll.new_hires").await, 1);
        engine.shutdown().await;

        // The state survives a restart.
        engine.set_enabled("nexus-to-paylinq", false).await.ok();
        let engine = db.engine().await;
        assert!(!engine.is_enabled("nexus-to-paylinq"));
        engine.shutdown().await;
    }
}

/// Stores a `count.recorded` event with a delivery for `counts` retrying
/// at `due`, without any engine running.
async fn pending_count_delivery(db: &TestDb, due: chrono::DateTime<chrono::Utc>) {
    db.park_delivery(&count_event("late", json!(1), ""), "counts", "test", due)
        .await;
}

fn other_integration() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("other.yaml"),
        "source: other\ntarget: test\nroutes:\n  - on: x.y\n    steps:\n      - delete: test.counts\n        where: {name: x}\n",
    )
    .unwrap();
    dir
}

on_both_databases! {
    async fn removed_integration_skips_its_pending_deliveries_with_the_reason(db: TestDb) {
        if db.dialect() == busbar::store::Dialect::Postgres {
            db.execute("CREATE SCHEMA test").await;
        }
        db.execute(COUNTS_TABLE).await;
        let counts = counter_integration();
        let other = other_integration();

        // A reload that removes the integration skips what is still pending
        // (this delivery waits for a retry an hour from now).
        pending_count_delivery(&db, chrono::Utc::now() + chrono::Duration::hours(1)).await;
        let engine = db.engine_on(counts.path(), None).await;
        let removed = engine
            .swap_generation(busbar::serve::load_generation(other.path(), None, 2).unwrap())
            .await
            .unwrap();
        assert_eq!(removed, ["counts"]);
        let skipped = db.deliveries(Some(Status::Skipped)).await;
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        let reason = skipped[0].last_error.as_deref().unwrap();
        assert!(reason.contains("integration `counts` was removed from the configuration (generation 2)"), "{reason}");
        engine.shutdown().await;

        // A process that does not define an integration (say, one still on
        // an older configuration during a rolling restart) leaves its
        // deliveries alone: it neither runs nor skips them.
        pending_count_delivery(&db, chrono::Utc::now()).await;
        let engine = db.engine_on(other.path(), None).await;
        db.settle(SETTLE).await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(db.count_where("integrations.deliveries", "status = 'retrying'").await, 1);
        assert_eq!(db.count("test.counts").await, 0);
        engine.shutdown().await;
    }
}

on_both_databases! {
    async fn deliveries_of_one_batch_that_share_a_row_apply_in_order(db: TestDb) {
        if db.dialect() == busbar::store::Dialect::Postgres {
            db.execute("CREATE SCHEMA test").await;
        }
        db.execute("CREATE TABLE test.counter (name VARCHAR(50) PRIMARY KEY, amount INTEGER NOT NULL)").await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("counter.yaml"),
            r#"
id: counter
source: tally
target: test
routes:
  - on: count.recorded
    steps:
      - find: test.counter
        where: { name: $.data.name }
        as: previous
      - upsert: test.counter
        key: [name]
        values:
          name: $.data.name
          amount: "{{ (previous.amount if previous else 0) + 1 }}"
"#,
        )
        .unwrap();
        // One worker, and every event in one batch: the batch reads and
        // writes the same row many times, which the lockstep runner must
        // notice and run one delivery after another.
        let engine = db
            .engine_with(dir.path(), None, |config| {
                config.workers = 1;
                config.batch_size = 100;
            })
            .await;
        let requests: Vec<_> = (0..60)
            .map(|_| busbar::engine::PublishRequest {
                envelope: busbar::envelope::Envelope::from_json(&count_event("shared", json!(0), "")).unwrap(),
                idempotency_key: None,
            })
            .collect();
        engine.publish_batch(requests).await.unwrap();
        db.settle(SETTLE).await;
        let row = db.find("test.counter", &[("name", json!("shared"))]).await.unwrap();
        assert_eq!(row["amount"], 60, "every delivery saw the one before it");
        engine.shutdown().await;
    }
}

on_both_databases! {
    /// Issue 16: a delivery step always emits the same event id. When the log
    /// already holds that id with other data (a restored database, an event
    /// published with that id), the delivery is dead with the reason, and
    /// none of its writes stay: the old code dropped the emitted event
    /// silently and called the delivery delivered.
    async fn an_emitted_id_already_in_the_log_with_other_data_is_a_dead_delivery(db: TestDb) {
        db.seed().await;
        let engine = db.engine().await;
        let hired_id = Uuid::now_v7();
        let mut hired = candidate_hired(ORGANIZATION, "twice@acme.example");
        hired["id"] = json!(hired_id);
        // The id step 4 (the emit, index 3) of recruitiq-to-nexus's delivery
        // of that event will use, taken first by another event.
        let delivery = busbar::delivery::delivery_id(ORGANIZATION, hired_id, "recruitiq-to-nexus", "candidate.hired", "0");
        let taken = busbar::delivery::emitted_id(delivery, 0, 3);
        let squatter = json!({
            "id": taken, "source": "nexus", "event": "employee.created", "organization_id": ORGANIZATION,
            "data": {"employee_id": Uuid::new_v4(), "first_name": "Someone", "last_name": "Else",
                     "email": "else@acme.example", "hire_date": "2026-01-01"}
        });
        assert!(engine.publish_json(&squatter, None).await.unwrap().created);
        engine.publish_json(&hired, None).await.unwrap();
        db.settle(SETTLE).await;

        let dead = db.deliveries(Some(Status::Dead)).await;
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!((dead[0].id, dead[0].integration.as_str()), (delivery, "recruitiq-to-nexus"));
        let error = dead[0].last_error.as_deref().unwrap();
        assert!(error.contains(&format!("emitted event {taken} is already in the log with other data")), "{error}");
        // Its writes were undone; the other integration's delivery went on.
        assert!(db.find("hris.employees", &[("email", json!("twice@acme.example"))]).await.is_none());
        assert!(db.find("payroll.new_hires", &[("email", json!("twice@acme.example"))]).await.is_some());
        // The stored event is untouched.
        assert_eq!(db.count_where("integrations.events", &format!("id = '{taken}'")).await, 1);
        engine.shutdown().await;
    }
}
