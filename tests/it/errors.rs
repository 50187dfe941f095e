//! Database errors written for people: a delivery refused by the target
//! database says what happened first — the trigger's or constraint's
//! message, the table and columns — then the database's code, in its dead
//! letter (and so in the status API and the console), without the driver's
//! wrapping.

use busbar::delivery::Status;
use busbar::dev::ORGANIZATION;
use busbar::store::Dialect;

use crate::support::{candidate_hired, on_both_databases};

const SETTLE: std::time::Duration = std::time::Duration::from_secs(30);

on_both_databases! {
    async fn a_row_refused_by_a_trigger_is_a_dead_letter_in_the_triggers_words_then_the_code(db: TestDb) {
        db.seed().await;
        db.poison().await;
        let engine = db.engine().await;
        engine
            .publish_json(&candidate_hired(ORGANIZATION, "dead-words@acme.example"), None)
            .await
            .unwrap();
        db.settle(SETTLE).await;
        let dead = db.deliveries(Some(Status::Dead)).await;
        let error = dead
            .iter()
            .find(|d| d.integration == "recruitiq-to-nexus")
            .and_then(|d| d.last_error.clone())
            .expect("a dead letter with its error");
        let expected = match db.dialect() {
            Dialect::Sqlite => "step 2 (upsert hris.employees): boom (refused by a trigger) [SQLite 1811]".to_owned(),
            Dialect::Postgres => "step 2 (upsert hris.employees): boom (raised by PL/pgSQL function test_boom() line 1 at RAISE) [PostgreSQL P0001 raise_exception]".to_owned(),
        };
        assert_eq!(error, expected);
        assert!(!error.contains("error returned from database"), "{error}");
        engine.shutdown().await;
    }
}

on_both_databases! {
    async fn a_constraint_violation_names_the_table_the_constraint_and_the_code(db: TestDb) {
        db.seed().await;
        let refusal = match db.dialect() {
            Dialect::Postgres => {
                db.execute(
                    "ALTER TABLE hris.employees ADD CONSTRAINT no_check_example \
                     CHECK (email NOT LIKE '%@check.example')",
                )
                .await;
                "the row in hris.employees breaks check constraint no_check_example: Failing row contains"
            }
            Dialect::Sqlite => {
                // SQLite cannot add a CHECK to a table: a unique index
                // refuses the second row instead.
                db.execute(
                    "CREATE UNIQUE INDEX one_per_first_name ON hris.employees (first_name)",
                )
                .await;
                "duplicate key: a row with the same hris.employees.first_name exists \
                 (UNIQUE constraint failed: hris.employees.first_name) [SQLite 2067]"
            }
        };
        let engine = db.engine().await;
        for email in ["first@acme.example", "second@check.example"] {
            engine
                .publish_json(&candidate_hired(ORGANIZATION, email), None)
                .await
                .unwrap();
            db.settle(SETTLE).await;
        }
        let dead = db.deliveries(Some(Status::Dead)).await;
        let error = dead
            .iter()
            .find(|d| d.integration == "recruitiq-to-nexus")
            .and_then(|d| d.last_error.clone())
            .expect("a dead letter with its error");
        assert!(error.starts_with("step 2 (upsert hris.employees): "), "{error}");
        assert!(error.contains(refusal), "{error}");
        if db.dialect() == Dialect::Postgres {
            assert!(error.ends_with("[PostgreSQL 23514 check_violation]"), "{error}");
        }
        engine.shutdown().await;
    }
}
