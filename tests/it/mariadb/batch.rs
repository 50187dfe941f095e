//! A lockstep batch's statements on MariaDB (`store::mysql::batch`): one
//! statement per shape, whatever the number of deliveries, and the answers
//! one step after another would give.

use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, MySqlConnection};

use super::{MariaDb, columns, key, table};
use busbar::compile::ident::Ident;
use busbar::store::mysql::batch::{find_many, upsert_many};
use busbar::store::mysql::catalog::MySqlCatalog;

/// A session counter of MariaDB's (`Com_insert`, `Com_select`): how many
/// statements of a kind this connection ran.
async fn statements(connection: &mut MySqlConnection, counter: &str) -> i64 {
    let (_, value): (String, String) = sqlx::query_as(AssertSqlSafe(format!(
        "SHOW SESSION STATUS LIKE '{counter}'"
    )))
    .fetch_one(connection)
    .await
    .expect("session status");
    value.parse().expect("a count")
}

mariadb_test! {
    /// A batch's upserts into MariaDB are one multi-row `INSERT … ON
    /// DUPLICATE KEY UPDATE` and one read-back `SELECT`, whatever the
    /// number of rows, and give each delivery what one upsert after another
    /// would: its own row; for a key already stored (here under a
    /// case-insensitive collation), the stored row with the new values and
    /// the key's stored spelling. A value that does not fit or a null key
    /// fails only its own row.
    async fn a_batch_of_upserts_is_one_statement_and_each_row_is_read_back() {
        let db = MariaDb::new().await;
        db.execute(
            "CREATE TABLE people (id INT AUTO_INCREMENT PRIMARY KEY,
                email VARCHAR(100) COLLATE utf8mb4_general_ci NOT NULL UNIQUE,
                name VARCHAR(5), salary DECIMAL(8, 2));
             INSERT INTO people (email, name, salary) VALUES ('old@x', 'Old', 1.00)",
        )
        .await;
        let catalog = MySqlCatalog::default();
        let people = table("people");
        let mut tx = db.pool.begin().await.unwrap();
        let info = catalog.table(&mut tx, &people).await.unwrap();
        let mut rows: Vec<Vec<(Ident, Value)>> = (0..100)
            .map(|i| columns(json!({"email": format!("p{i}@x"), "name": "P", "salary": format!("{i}.50")})))
            .collect();
        rows.push(columns(json!({"email": "OLD@X", "name": "New", "salary": "2.00"})));
        rows.push(columns(json!({"email": "too@long", "name": "Sixchr", "salary": "1"})));
        rows.push(columns(json!({"email": null, "name": "N", "salary": "1"})));
        let inserts = statements(&mut tx, "Com_insert").await;
        let selects = statements(&mut tx, "Com_select").await;
        let answers = upsert_many(&mut tx, &catalog, &people, &info, &key(&["email"]), &rows)
            .await
            .expect("no database error");
        assert_eq!(statements(&mut tx, "Com_insert").await - inserts, 1, "one INSERT for 101 rows");
        assert_eq!(
            statements(&mut tx, "Com_select").await - selects,
            2,
            "one SELECT reads back the keys as written, one the key stored spelled otherwise"
        );
        for (i, answer) in answers.iter().take(100).enumerate() {
            let row = answer.as_ref().expect("written");
            assert_eq!(row.columns["email"], json!(format!("p{i}@x")));
            assert_eq!(row.columns["salary"].to_string(), format!("{i}.50"));
        }
        let old = answers[100].as_ref().expect("the stored row, updated");
        assert_eq!(old.columns["id"], json!(1));
        assert_eq!(old.columns["email"], json!("old@x"), "the key keeps its stored spelling");
        assert_eq!(old.columns["name"], json!("New"));
        let too_long = answers[101].as_ref().unwrap_err().to_string();
        assert!(too_long.contains("name") && too_long.contains("Sixchr"), "{too_long}");
        let null_key = answers[102].as_ref().unwrap_err().to_string();
        assert!(null_key.contains("null value for key column `email`"), "{null_key}");
        tx.commit().await.unwrap();
        assert_eq!(db.count("people").await, 101);
    }
}

mariadb_test! {
    /// A batch's lookups by a unique key are one `SELECT … IN (…)`, and
    /// those no row holds as written (a case-insensitive key spelled
    /// otherwise, no row at all) one more, one `UNION ALL` branch each, so
    /// each compares as a single `find` does: under the column's collation,
    /// a `DECIMAL` exactly, `IS NULL` for a null. Other lookups are that
    /// second statement only. A value that cannot be compared fails only
    /// its own lookup. An upsert whose values fill
    /// another unique index runs alone, and its clash fails the batch (the
    /// lane then runs it one delivery at a time, in savepoints).
    async fn a_batch_of_finds_is_one_or_two_statements_and_compares_as_find_does() {
        let db = MariaDb::new().await;
        db.execute(
            "CREATE TABLE accounts (id INT PRIMARY KEY,
                email VARCHAR(100) COLLATE utf8mb4_general_ci NOT NULL UNIQUE,
                rate DECIMAL(6, 3), note VARCHAR(10));
             INSERT INTO accounts VALUES (1, 'Ada@x', 0.100, NULL), (2, 'bob@x', 0.125, 'b')",
        )
        .await;
        let catalog = MySqlCatalog::default();
        let accounts = table("accounts");
        let mut tx = db.pool.begin().await.unwrap();
        let info = catalog.table(&mut tx, &accounts).await.unwrap();
        // By a unique key: the rows holding their key as written are read
        // in one statement, the rest in one more, where MariaDB compares.
        let by_email: Vec<Vec<(Ident, Value)>> = ["ADA@X", "bob@x", "nobody@x", "ADA@X"]
            .iter()
            .map(|email| columns(json!({"email": email})))
            .collect();
        let selects = statements(&mut tx, "Com_select").await;
        let found = find_many(&mut tx, &accounts, &info, &by_email)
            .await
            .expect("no database error");
        assert_eq!(statements(&mut tx, "Com_select").await - selects, 2);
        let ids: Vec<Option<Value>> = found
            .iter()
            .map(|row| row.as_ref().unwrap().as_ref().map(|row| row.columns["id"].clone()))
            .collect();
        assert_eq!(ids, vec![Some(json!(1)), Some(json!(2)), None, Some(json!(1))]);

        // By a key compared exactly as written (an integer): no row held
        // as written means no row, so one statement.
        let selects = statements(&mut tx, "Com_select").await;
        let by_id = find_many(&mut tx, &accounts, &info, &[columns(json!({"id": 2})), columns(json!({"id": 3}))])
            .await
            .expect("no database error");
        assert_eq!(statements(&mut tx, "Com_select").await - selects, 1);
        assert_eq!(by_id[0].as_ref().unwrap().as_ref().unwrap().columns["email"], json!("bob@x"));
        assert!(by_id[1].as_ref().unwrap().is_none());

        // Not by a unique key, or with a null: one statement.
        let filters = vec![
            columns(json!({"rate": "0.125"})),
            columns(json!({"rate": "0.1"})),
            columns(json!({"rate": "0.2"})),
            columns(json!({"rate": "not a number"})),
        ];
        let selects = statements(&mut tx, "Com_select").await;
        let found = find_many(&mut tx, &accounts, &info, &filters)
            .await
            .expect("no database error");
        assert_eq!(statements(&mut tx, "Com_select").await - selects, 1);
        let id = |i: usize| {
            found[i]
                .as_ref()
                .unwrap()
                .as_ref()
                .map(|row| row.columns["id"].clone())
        };
        assert_eq!(id(0), Some(json!(2)));
        assert_eq!(id(1), Some(json!(1)), "DECIMAL compared exactly: 0.1 is 0.100");
        assert_eq!(id(2), None);
        let bad = found[3].as_ref().unwrap_err().to_string();
        assert!(bad.contains("rate") && bad.contains("not a number"), "{bad}");
        let with_null = find_many(
            &mut tx,
            &accounts,
            &info,
            &[columns(json!({"note": null, "email": "ada@x"})), columns(json!({"note": null, "email": "bob@x"}))],
        )
        .await
        .expect("no database error");
        assert_eq!(with_null[0].as_ref().unwrap().as_ref().unwrap().columns["id"], json!(1));
        assert!(with_null[1].as_ref().unwrap().is_none(), "bob's note is not null");

        let clash = upsert_many(
            &mut tx,
            &catalog,
            &accounts,
            &info,
            &key(&["id"]),
            &[
                columns(json!({"id": 2, "email": "bob@x", "note": "same"})),
                columns(json!({"id": 3, "email": "bob@x", "note": "clash"})),
            ],
        )
        .await
        .expect_err("a clash on another unique index fails the batch");
        assert!(clash.to_string().contains("[MariaDB/MySQL 1062 23000]"), "{clash}");
        let answers = upsert_many(
            &mut tx,
            &catalog,
            &accounts,
            &info,
            &key(&["id"]),
            &[columns(json!({"id": 2, "email": "bob@x", "note": "same"}))],
        )
        .await
        .expect("no clash");
        assert_eq!(answers[0].as_ref().unwrap().columns["note"], json!("same"));
        tx.commit().await.unwrap();
        assert_eq!(db.count("accounts").await, 2);
    }
}
