//! MariaDB/MySQL targets (issue 17) against the real MariaDB named by
//! `TEST_MARIADB_URL`: each test in a throwaway database (`busbar_t_…`),
//! dropped at the end. Reported as ignored, with the reason, when the
//! suite was built without `TEST_MARIADB_URL`.
//!
//! The session is strict, the catalog reads every type family, every type
//! trap is an error naming column, value and limit (and nothing is
//! written), and `find`, `upsert` (with its read-back), `update` and
//! `delete` round-trip — including a case-insensitive unique key and an
//! upsert whose values clash on another unique index.

use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection, MySqlConnection, MySqlPool};

use busbar::compile::ident::{Ident, TableName};
use busbar::mapping::Executor;
use busbar::store::StoreError;
use busbar::store::catalog::{ColumnType, MySqlCharset, Storage};
use busbar::store::mysql::catalog::{MySqlCatalog, read_table};
use busbar::store::mysql::target::MySqlTargetExecutor;

/// A database of its own on the MariaDB server, dropped on drop.
pub(crate) struct MariaDb {
    pub pool: MySqlPool,
    pub name: String,
    pub admin_url: String,
}

impl MariaDb {
    pub async fn new() -> MariaDb {
        let admin_url = std::env::var("TEST_MARIADB_URL")
            .expect("the MariaDB suite needs TEST_MARIADB_URL at run time too");
        let admin_url = admin_url.trim_end_matches('/').to_owned();
        let name = format!("busbar_t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = MySqlConnection::connect(&admin_url)
            .await
            .expect("TEST_MARIADB_URL accepts connections");
        sqlx::query(AssertSqlSafe(format!(
            "CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"
        )))
        .execute(&mut admin)
        .await
        .expect("can create a test database");
        admin.close().await.ok();
        let pool = busbar::store::mysql::pool(&format!("{admin_url}/{name}"), 2)
            .expect("the test database's URL is read");
        MariaDb {
            pool,
            name,
            admin_url,
        }
    }

    /// Its URL (the server's, with this database).
    pub fn url(&self) -> String {
        format!("{}/{}", self.admin_url, self.name)
    }

    /// Runs DDL or seed SQL, one statement at a time.
    pub async fn execute(&self, sql: &str) {
        for statement in sql.split(';').filter(|s| !s.trim().is_empty()) {
            sqlx::query(AssertSqlSafe(statement.to_owned()))
                .execute(&self.pool)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    async fn text(&self, sql: &str) -> Option<String> {
        sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.pool)
            .await
            .expect("query")
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let url = self.admin_url.clone();
        let name = self.name.clone();
        // Dropped from a thread of its own: a test's runtime may be gone.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                if let Ok(mut admin) = MySqlConnection::connect(&url).await {
                    for statement in [
                        format!("DROP DATABASE IF EXISTS {name}"),
                        // The grants test's user, named after its database.
                        format!("DROP USER IF EXISTS '{name}'@'%'"),
                    ] {
                        let _ = sqlx::query(AssertSqlSafe(statement))
                            .execute(&mut admin)
                            .await;
                    }
                }
            });
        })
        .join();
    }
}

fn table(name: &str) -> TableName {
    TableName::parse(name).unwrap()
}

fn ident(name: &str) -> Ident {
    Ident::parse(name).unwrap()
}

/// `{"a": 1}` as the `(column, value)` pairs a step gives.
fn columns(values: Value) -> Vec<(Ident, Value)> {
    values
        .as_object()
        .expect("an object")
        .iter()
        .map(|(k, v)| (ident(k), v.clone()))
        .collect()
}

fn key(names: &[&str]) -> Vec<Ident> {
    names.iter().map(|n| ident(n)).collect()
}

macro_rules! mariadb_test {
    ($(#[$meta:meta])* async fn $name:ident() $body:block) => {
        $(#[$meta])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[cfg_attr(
            not(mariadb_tests),
            ignore = "MariaDB suite skipped: TEST_MARIADB_URL was not set when the tests were built"
        )]
        async fn $name() $body
    };
}

mariadb_test! {
    async fn sessions_are_strict_utc_and_read_committed() {
        let db = MariaDb::new().await;
        let mode = db.text("SELECT @@SESSION.sql_mode").await.unwrap();
        for wanted in ["STRICT_ALL_TABLES", "NO_ZERO_DATE", "NO_ZERO_IN_DATE", "ERROR_FOR_DIVISION_BY_ZERO", "NO_AUTO_VALUE_ON_ZERO", "NO_BACKSLASH_ESCAPES"] {
            assert!(mode.split(',').any(|m| m == wanted), "{wanted} missing from {mode}");
        }
        assert!(!mode.contains("ANSI_QUOTES") && !mode.contains("PIPES_AS_CONCAT"), "{mode}");
        assert_eq!(db.text("SELECT @@SESSION.time_zone").await.unwrap(), "+00:00");
        assert_eq!(db.text("SELECT CAST(@@SESSION.innodb_lock_wait_timeout AS CHAR)").await.unwrap(), "5");
        assert_eq!(db.text("SELECT @@SESSION.tx_isolation").await.unwrap(), "READ-COMMITTED");
        assert_eq!(db.text("SELECT @@SESSION.character_set_client").await.unwrap(), "utf8mb4");
        // The server itself refuses what busbar's checks would have: no
        // truncation even if a value slipped past them.
        db.execute("CREATE TABLE t (s VARCHAR(3), d DATE)").await;
        let error = sqlx::query("INSERT INTO t (s) VALUES ('abcd')")
            .execute(&db.pool)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("Data too long"), "{error}");
        let error = sqlx::query("INSERT INTO t (d) VALUES ('0000-00-00')")
            .execute(&db.pool)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("Incorrect date value"), "{error}");
        assert_eq!(db.count("t").await, 0);
    }
}

mariadb_test! {
    async fn the_catalog_reads_every_type_family() {
        let db = MariaDb::new().await;
        db.execute(
            "CREATE TABLE everything (
                id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
                tiny TINYINT, small_u SMALLINT UNSIGNED, medium MEDIUMINT,
                regular INT NOT NULL DEFAULT 0, big BIGINT,
                flag TINYINT(1), flag_b BOOLEAN,
                price DECIMAL(5,2), ratio FLOAT, measure DOUBLE,
                code CHAR(3), name VARCHAR(10) CHARACTER SET utf8mb3 COLLATE utf8mb3_general_ci,
                email VARCHAR(100) COLLATE utf8mb4_bin NOT NULL, notes TEXT,
                born DATE, seen DATETIME(3), stamped TIMESTAMP(6) NULL DEFAULT NULL,
                doc JSON, ref UUID, mood ENUM('happy', 'sad'),
                UNIQUE KEY (email), UNIQUE KEY (name(5)), UNIQUE KEY (tiny, small_u)
            )",
        )
        .await;
        let mut connection = db.pool.acquire().await.unwrap();
        let everything = read_table(&mut connection, &table("everything")).await.unwrap();
        let info = &everything.info;
        let column = |name: &str| info.column(name).unwrap_or_else(|| panic!("{name}"));
        let mysql = |name: &str| match column(name).storage {
            Storage::MySql(mysql) => mysql,
            other => panic!("{name}: {other:?}"),
        };
        let kinds: Vec<(&str, ColumnType)> = info
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.ty))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("id", ColumnType::Integer),
                ("tiny", ColumnType::Integer),
                ("small_u", ColumnType::Integer),
                ("medium", ColumnType::Integer),
                ("regular", ColumnType::Integer),
                ("big", ColumnType::Integer),
                ("flag", ColumnType::Boolean),
                ("flag_b", ColumnType::Boolean),
                ("price", ColumnType::Numeric),
                ("ratio", ColumnType::Float),
                ("measure", ColumnType::Float),
                ("code", ColumnType::Text),
                ("name", ColumnType::Text),
                ("email", ColumnType::Text),
                ("notes", ColumnType::Text),
                ("born", ColumnType::Date),
                ("seen", ColumnType::Timestamp),
                ("stamped", ColumnType::TimestampTz),
                ("doc", ColumnType::Json),
                ("ref", ColumnType::Uuid),
                ("mood", ColumnType::Other),
            ]
        );
        let bits: Vec<u8> = ["tiny", "small_u", "medium", "regular", "big", "id"]
            .iter()
            .map(|c| column(c).limits.integer_bits)
            .collect();
        assert_eq!(bits, vec![8, 16, 24, 32, 64, 64]);
        assert!(mysql("id").unsigned && mysql("small_u").unsigned && !mysql("big").unsigned);
        assert_eq!(column("price").limits.numeric, Some((5, 2)));
        assert!(column("ratio").limits.single_precision && !column("measure").limits.single_precision);
        assert_eq!(column("code").limits.max_chars, Some(3));
        assert!(column("code").limits.padded);
        assert_eq!(column("name").limits.max_chars, Some(10));
        assert_eq!(column("name").sql_type, "varchar(10) CHARACTER SET utf8mb3");
        assert_eq!(mysql("name").charset, MySqlCharset::Utf8mb3);
        assert!(mysql("name").case_insensitive && mysql("name").pad_space);
        assert_eq!(mysql("email").charset, MySqlCharset::Utf8mb4);
        assert!(!mysql("email").case_insensitive);
        assert_eq!(mysql("notes").max_bytes, Some(65535));
        assert_eq!(column("seen").limits.second_digits, 3);
        assert_eq!(column("stamped").limits.second_digits, 6);
        assert!(!column("email").nullable && column("notes").nullable);
        assert!(column("id").has_default && column("regular").has_default);
        assert!(!column("notes").has_default && !column("email").has_default);
        // The prefix index over `name(5)` is no upsert key.
        let mut unique = info.unique.clone();
        unique.sort();
        assert_eq!(
            unique,
            vec![vec!["email".to_owned()], vec!["id".to_owned()], vec!["small_u".to_owned(), "tiny".to_owned()]]
        );
        assert_eq!(everything.identity.iter().map(|c| c.as_str()).collect::<Vec<_>>(), vec!["id"]);
        let missing = read_table(&mut connection, &table("nothing_here")).await.unwrap_err();
        assert!(matches!(missing, StoreError::NoTable(_)), "{missing}");
    }
}

mariadb_test! {
    async fn every_type_trap_is_an_error_naming_column_value_and_limit() {
        let db = MariaDb::new().await;
        db.execute(
            "CREATE TABLE traps (
                k VARCHAR(20) PRIMARY KEY,
                name VARCHAR(10) CHARACTER SET utf8mb3,
                short VARCHAR(3),
                u TINYINT UNSIGNED, big_u BIGINT UNSIGNED, small SMALLINT,
                flag TINYINT(1),
                born DATE, seen DATETIME, stamped TIMESTAMP NULL DEFAULT NULL,
                price DECIMAL(5,2)
            )",
        )
        .await;
        let catalog = MySqlCatalog::default();
        let mut tx = db.pool.begin().await.unwrap();
        let mut executor = MySqlTargetExecutor::new(&mut tx, &catalog);
        let cases: Vec<(&str, Value, &str, &str)> = vec![
            ("name", json!("hi 😀"), "\"hi 😀\"", "the character 😀 (U+1F600, at character 4) takes 4 bytes in UTF-8, which a utf8mb3 column cannot store"),
            ("short", json!("abcd"), "\"abcd\"", "4 characters, more than the limit of 3"),
            ("u", json!(-1), "-1", "out of range for TINYINT UNSIGNED (0 to 255)"),
            ("u", json!(256), "256", "out of range for TINYINT UNSIGNED (0 to 255)"),
            ("big_u", serde_json::from_str("18446744073709551616").unwrap(), "18446744073709551616", "out of range for BIGINT UNSIGNED (0 to 18446744073709551615)"),
            ("small", json!(40000), "40000", "out of range for SMALLINT (-32768 to 32767)"),
            ("flag", json!(2), "2", "TINYINT(1) is read as a boolean: true or false, 1 or 0"),
            ("born", json!("0000-00-00"), "\"0000-00-00\"", "not a date"),
            ("seen", json!("2026-03-01T10:00:00.5Z"), "\"2026-03-01T10:00:00.5Z\"", "1 fractional digits of seconds, at most 0 fit"),
            ("seen", json!("next tuesday"), "\"next tuesday\"", "not an RFC 3339 timestamp"),
            ("stamped", json!("2040-01-01T00:00:00Z"), "\"2040-01-01T00:00:00Z\"", "outside TIMESTAMP's range (1970-01-01 00:00:01 to 2038-01-19 03:14:07 UTC)"),
            ("price", serde_json::from_str("1.234").unwrap(), "1.234", "3 digits after the decimal point, more than its scale of 2"),
            ("price", json!(1234), "1234", "4 digits before the decimal point, at most 3 fit (precision 5, scale 2)"),
        ];
        for (column, value, shown, limit) in cases {
            let values = columns(json!({"k": "row", column: value}));
            let error = executor
                .upsert(&table("traps"), &key(&["k"]), &values)
                .await
                .unwrap_err();
            let message = error.to_string();
            assert!(matches!(error, StoreError::Conversion { .. }), "{column}: {message}");
            assert!(message.starts_with(&format!("column `{column}`: cannot store {shown} as ")), "{message}");
            assert!(message.contains(limit), "{column}: {message}");
        }
        drop(executor);
        tx.commit().await.unwrap();
        assert_eq!(db.count("traps").await, 0, "nothing was written");
    }
}

mariadb_test! {
    async fn find_upsert_update_and_delete_round_trip() {
        let db = MariaDb::new().await;
        db.execute(
            "CREATE TABLE employees (
                id INT AUTO_INCREMENT PRIMARY KEY,
                org INT NOT NULL, email VARCHAR(100) NOT NULL,
                first_name VARCHAR(50), salary DECIMAL(12,2),
                active TINYINT(1) NOT NULL DEFAULT 1, hired DATETIME,
                seen TIMESTAMP(3) NULL DEFAULT NULL, doc JSON, big BIGINT UNSIGNED,
                ratio FLOAT, UNIQUE KEY org_email (org, email)
            )",
        )
        .await;
        let employees = table("employees");
        let catalog = MySqlCatalog::default();
        let mut tx = db.pool.begin().await.unwrap();
        let mut executor = MySqlTargetExecutor::new(&mut tx, &catalog);
        let by_key = key(&["org", "email"]);

        let ada = executor
            .upsert(
                &employees,
                &by_key,
                &columns(json!({
                    "org": 1, "email": "ada@x", "first_name": "Ada", "salary": "72000.50",
                    "active": true, "hired": "2026-03-01T23:30:00-05:00",
                    "seen": "2026-03-01T10:00:00.125Z", "doc": {"tags": ["a", 1]},
                    "big": serde_json::from_str::<Value>("18446744073709551615").unwrap(),
                    "ratio": 0.1
                })),
            )
            .await
            .unwrap();
        assert_eq!(
            Value::Object(ada.columns.clone()),
            serde_json::from_str::<Value>(
                r#"{"id": 1, "org": 1, "email": "ada@x", "first_name": "Ada", "salary": 72000.50,
                    "active": true, "hired": "2026-03-02T04:30:00", "seen": "2026-03-01T10:00:00.125+00:00",
                    "doc": {"tags": ["a", 1]}, "big": 18446744073709551615, "ratio": 0.1}"#
            )
            .unwrap()
        );
        // The same key again updates the row (the `as:` row is the stored one).
        let again = executor
            .upsert(
                &employees,
                &by_key,
                &columns(json!({"org": 1, "email": "ada@x", "first_name": "Augusta"})),
            )
            .await
            .unwrap();
        assert_eq!(again.columns["id"], json!(1));
        assert_eq!(again.columns["first_name"], json!("Augusta"));
        assert_eq!(again.columns["salary"].to_string(), "72000.50");
        let grace = executor
            .upsert(
                &employees,
                &by_key,
                &columns(json!({"org": 1, "email": "grace@x", "first_name": "Grace", "active": 1})),
            )
            .await
            .unwrap();
        // The update above took an AUTO_INCREMENT value too (InnoDB's
        // `ON DUPLICATE KEY UPDATE` does): ids have gaps, and busbar reads
        // rows back by their key, never by `LAST_INSERT_ID()`.
        assert_eq!(grace.columns["id"], json!(3));

        let found = executor
            .find(&employees, &columns(json!({"org": 1, "email": "ada@x"})))
            .await
            .unwrap()
            .expect("ada is found");
        assert_eq!(found.columns["first_name"], json!("Augusta"));
        let qualified = table(&format!("{}.employees", db.name));
        assert!(executor.find(&qualified, &columns(json!({"email": "grace@x"}))).await.unwrap().is_some());
        assert!(executor.find(&employees, &columns(json!({"email": "nobody@x"}))).await.unwrap().is_none());
        let by_decimal = executor
            .find(&employees, &columns(json!({"salary": serde_json::from_str::<Value>("72000.5").unwrap()})))
            .await
            .unwrap();
        assert_eq!(by_decimal.expect("a DECIMAL compares exactly").columns["id"], json!(1));
        let by_unsigned = executor
            .find(&employees, &columns(json!({"big": serde_json::from_str::<Value>("18446744073709551614").unwrap()})))
            .await
            .unwrap();
        assert!(by_unsigned.is_none(), "a BIGINT UNSIGNED compares exactly, not as a double");
        let by_float = executor
            .find(&employees, &columns(json!({"ratio": 0.1})))
            .await
            .unwrap();
        assert_eq!(by_float.expect("a FLOAT compares as the single it holds").columns["id"], json!(1));
        let no_salary = executor
            .find(&employees, &columns(json!({"salary": null})))
            .await
            .unwrap()
            .expect("IS NULL");
        assert_eq!(no_salary.columns["email"], json!("grace@x"));

        // Update returns the rows as they are after it, even when it
        // changes the column it filtered on.
        let updated = executor
            .update(&employees, &columns(json!({"active": true})), &columns(json!({"active": false, "first_name": "Off"})))
            .await
            .unwrap();
        assert_eq!(updated.len(), 2);
        assert!(updated.iter().all(|r| r.columns["active"] == json!(false) && r.columns["first_name"] == json!("Off")));
        let none = executor
            .update(&employees, &columns(json!({"active": true})), &columns(json!({"first_name": "X"})))
            .await
            .unwrap();
        assert!(none.is_empty());
        let renumbered = executor
            .update(&employees, &columns(json!({"id": 3})), &columns(json!({"id": 20})))
            .await
            .unwrap();
        assert_eq!(renumbered.len(), 1);
        assert_eq!(renumbered[0].columns["email"], json!("grace@x"));

        assert_eq!(executor.delete(&employees, &columns(json!({"email": "ada@x"}))).await.unwrap(), 1);
        assert_eq!(executor.delete(&employees, &columns(json!({"email": "ada@x"}))).await.unwrap(), 0);
        assert!(executor.wrote);
        drop(executor);
        tx.commit().await.unwrap();
        assert_eq!(db.count("employees").await, 1);
        assert_eq!(db.text("SELECT first_name FROM employees WHERE id = 20").await.as_deref(), Some("Off"));
    }
}

mariadb_test! {
    /// busbar follows the column's collation: in a `_ci` (and PAD SPACE)
    /// unique key, 'ada@x ' is the row stored as 'Ada@x', which keeps its
    /// spelling (key columns are not rewritten, as on PostgreSQL); the
    /// other columns take the new values. In a `_bin` key they differ.
    async fn case_insensitive_unique_keys_find_the_same_row() {
        let db = MariaDb::new().await;
        db.execute(
            "CREATE TABLE people (id INT AUTO_INCREMENT PRIMARY KEY,
                email VARCHAR(100) COLLATE utf8mb4_general_ci NOT NULL UNIQUE, name VARCHAR(50));
             CREATE TABLE people_bin (id INT AUTO_INCREMENT PRIMARY KEY,
                email VARCHAR(100) COLLATE utf8mb4_bin NOT NULL UNIQUE, name VARCHAR(50))",
        )
        .await;
        let catalog = MySqlCatalog::default();
        let mut tx = db.pool.begin().await.unwrap();
        let mut executor = MySqlTargetExecutor::new(&mut tx, &catalog);
        for people in ["people", "people_bin"] {
            executor
                .upsert(&table(people), &key(&["email"]), &columns(json!({"email": "Ada@x", "name": "Ada"})))
                .await
                .unwrap();
            let second = executor
                .upsert(&table(people), &key(&["email"]), &columns(json!({"email": "ada@x ", "name": "Ada L"})))
                .await
                .unwrap();
            if people == "people" {
                assert_eq!(second.columns["id"], json!(1));
                assert_eq!(second.columns["email"], json!("Ada@x"), "the key keeps its stored spelling");
                assert_eq!(second.columns["name"], json!("Ada L"));
            } else {
                assert_eq!(second.columns["id"], json!(2));
                assert_eq!(second.columns["email"], json!("ada@x "));
            }
        }
        drop(executor);
        tx.commit().await.unwrap();
        assert_eq!(db.count("people").await, 1);
        assert_eq!(db.count("people_bin").await, 2);
    }
}

mariadb_test! {
    /// `ON DUPLICATE KEY UPDATE` takes a clash on any unique index as the
    /// key's: an upsert by `id` whose `email` belongs to another row would
    /// update that other row. busbar refuses it, as PostgreSQL would.
    async fn an_upsert_never_updates_a_row_another_unique_index_found() {
        let db = MariaDb::new().await;
        db.execute(
            "CREATE TABLE accounts (id INT PRIMARY KEY, email VARCHAR(100) NOT NULL UNIQUE, name VARCHAR(50));
             INSERT INTO accounts VALUES (1, 'a@x', 'A')",
        )
        .await;
        let catalog = MySqlCatalog::default();
        let mut tx = db.pool.begin().await.unwrap();
        let mut executor = MySqlTargetExecutor::new(&mut tx, &catalog);
        let accounts = table("accounts");
        let error = executor
            .upsert(&accounts, &key(&["id"]), &columns(json!({"id": 2, "email": "a@x", "name": "B"})))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("duplicate key"), "{error}");
        assert!(error.to_string().contains("[MariaDB/MySQL 1062 23000]"), "{error}");
        let row = executor
            .upsert(&accounts, &key(&["id"]), &columns(json!({"id": 1, "email": "a@x", "name": "C"})))
            .await
            .unwrap();
        assert_eq!(row.columns["name"], json!("C"));
        let null_key = executor
            .upsert(&accounts, &key(&["email"]), &columns(json!({"email": null, "name": "D"})))
            .await
            .unwrap_err();
        assert!(null_key.to_string().contains("null value for key column `email`"), "{null_key}");
        let no_index = executor
            .upsert(&accounts, &key(&["name"]), &columns(json!({"name": "E"})))
            .await
            .unwrap_err();
        assert!(no_index.to_string().contains("no unique index on (name)"), "{no_index}");
        drop(executor);
        tx.commit().await.unwrap();
        assert_eq!(db.text("SELECT name FROM accounts WHERE id = 1").await.as_deref(), Some("C"));
        assert_eq!(db.count("accounts").await, 1);

        // Another transaction inserts the key meanwhile: the locked select
        // waits for its commit, then finds the row and updates it (no
        // duplicate-key error, no second row).
        let mut other = db.pool.begin().await.unwrap();
        sqlx::query("INSERT INTO accounts VALUES (2, 'b@x', 'other')")
            .execute(&mut *other)
            .await
            .unwrap();
        let pool = db.pool.clone();
        let upsert = tokio::spawn(async move {
            let catalog = MySqlCatalog::default();
            let mut tx = pool.begin().await.unwrap();
            let mut executor = MySqlTargetExecutor::new(&mut tx, &catalog);
            let row = executor
                .upsert(&table("accounts"), &key(&["id"]), &columns(json!({"id": 2, "email": "b@x", "name": "Z"})))
                .await;
            drop(executor);
            tx.commit().await.unwrap();
            row
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!upsert.is_finished(), "the upsert waits for the other transaction's row");
        other.commit().await.unwrap();
        let row = upsert.await.unwrap().expect("the upsert updates the row committed meanwhile");
        assert_eq!(row.columns["name"], json!("Z"));
        assert_eq!(db.count("accounts").await, 2);
    }
}

const MEMBERS: &str = "\
source: shop
target: crm
routes:
  - on: person.joined
    steps:
      - upsert: members
        key: [email]
        values:
          email: $.data.email
          age: -1
          active: 2
          nickname: \"Ada 😀\"
order_by: $.data.email
";

const PERSON_JOINED: &str = r#"{
  "type": "object",
  "required": ["email"],
  "properties": { "email": { "type": "string", "maxLength": 100 } }
}"#;

mariadb_test! {
    /// `busbar check --database-url mysql://…` reads the MariaDB catalog
    /// and refuses, at the value's place, what a delivery would refuse.
    async fn check_reads_a_mariadb_catalog_and_its_traps() {
        let db = MariaDb::new().await;
        db.execute(
            "CREATE TABLE members (id INT AUTO_INCREMENT PRIMARY KEY,
                email VARCHAR(100) NOT NULL UNIQUE, age TINYINT UNSIGNED,
                active TINYINT(1), nickname VARCHAR(20) CHARACTER SET utf8mb3)",
        )
        .await;
        let project = tempfile::tempdir().unwrap();
        for (path, text) in [
            ("integrations.d/members.yaml", MEMBERS),
            ("schemas/events/shop/person.joined.json", PERSON_JOINED),
        ] {
            let path = project.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let url = format!("{}/{}", db.admin_url, db.name);
        let output = crate::support::busbar_cli(
            project.path(),
            &["check", "integrations.d", "--format", "short", "--database-url", &url],
        );
        assert_eq!(output.status.code(), Some(1), "{}{}", output.stdout, output.stderr);
        assert_eq!(
            output.stdout,
            "\
integrations.d/members.yaml:10:16: error: -1 cannot be stored in column `age` (tinyint(3) unsigned): out of range for TINYINT UNSIGNED (0 to 255) [type-mismatch]
integrations.d/members.yaml:11:19: error: 2 cannot be stored in column `active` (tinyint(1)): TINYINT(1) is read as a boolean: true or false, 1 or 0 [type-mismatch]
integrations.d/members.yaml:12:21: error: \"Ada 😀\" cannot be stored in column `nickname` (varchar(20) CHARACTER SET utf8mb3): the character 😀 (U+1F600, at character 5) takes 4 bytes in UTF-8, which a utf8mb3 column cannot store; the column must be utf8mb4 [type-mismatch]
3 errors, 0 warnings in 1 file
"
        );
        // The unique key and the columns were found: fixing the values passes.
        std::fs::write(
            project.path().join("integrations.d/members.yaml"),
            MEMBERS.replace("age: -1", "age: 1").replace("active: 2", "active: true").replace("Ada 😀", "Ada"),
        )
        .unwrap();
        let output = crate::support::busbar_cli(
            project.path(),
            &["check", "integrations.d", "--format", "short", "--database-url", &url],
        );
        assert_eq!(output.status.code(), Some(0), "{}{}", output.stdout, output.stderr);
    }
}

mariadb_test! {
    /// The grants docs/DATABASES.md lists are enough: a user with only
    /// SELECT, INSERT, UPDATE and DELETE on the product's database reads
    /// the catalog and runs every step; a table it has no grant on reads
    /// as missing.
    async fn select_insert_update_delete_are_the_only_grants_needed() {
        let db = MariaDb::new().await;
        db.execute(
            "CREATE TABLE people (id INT AUTO_INCREMENT PRIMARY KEY, email VARCHAR(100) NOT NULL UNIQUE, name VARCHAR(50));
",
        )
        .await;
        let user = db.name.clone();
        db.execute(&format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY 'pw-{user}';
             GRANT SELECT, INSERT, UPDATE, DELETE ON {}.* TO '{user}'@'%'",
            db.name
        ))
        .await;
        let host = db.admin_url.rsplit('@').next().unwrap().to_owned();
        let url = format!("mysql://{user}:pw-{user}@{host}/{}", db.name);
        let pool = busbar::store::mysql::pool(&url, 1).expect("the limited user's URL is read");
        let catalog = MySqlCatalog::default();
        let mut tx = pool.begin().await.unwrap();
        let mut executor = MySqlTargetExecutor::new(&mut tx, &catalog);
        let people = table("people");
        let row = executor
            .upsert(&people, &key(&["email"]), &columns(json!({"email": "a@x", "name": "A"})))
            .await
            .expect("upsert with DML grants");
        assert_eq!(row.columns["name"], json!("A"));
        assert!(executor.find(&people, &columns(json!({"email": "a@x"}))).await.unwrap().is_some());
        assert_eq!(
            executor
                .update(&people, &columns(json!({"email": "a@x"})), &columns(json!({"name": "B"})))
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(executor.delete(&people, &columns(json!({"email": "a@x"}))).await.unwrap(), 1);
        let hidden = executor
            .find(&table("mysql.user"), &columns(json!({})))
            .await
            .unwrap_err();
        assert!(matches!(hidden, StoreError::NoTable(_)), "{hidden}");
        drop(executor);
        tx.commit().await.unwrap();
        let found = busbar::store::inspect::read_tables(&url, &[people.clone(), table("missing")])
            .await
            .expect("check reads the catalog with the same grants");
        assert!(found[0].1.is_some() && found[1].1.is_none());
        pool.close().await;
    }
}

/// A lockstep batch's set-based statements on MariaDB.
mod batch;
