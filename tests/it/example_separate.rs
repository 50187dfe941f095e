//! `examples/separate-databases/` (issue 17) keeps working: its
//! integrations pass `busbar check`, and, on the servers of
//! `TEST_DATABASE_URL` and `TEST_MARIADB_URL`, the walk-through of its
//! README runs: its SQL files make nexus's PostgreSQL database and
//! paylinq's MariaDB one (throwaway databases here), `busbar serve --dev`
//! starts on the example directory with busbar's own database in
//! PostgreSQL, and the example `candidate.hired` event, published over HTTP
//! with the dev key, lands in both: an employee in nexus's `hris.employees`
//! and, through the emitted `employee.created`, a payroll record in
//! paylinq's `employee_records` (and a new hire in `new_hires`).
//!
//! One difference from the README: paylinq's tables are in MariaDB database
//! `payroll` there; here they are in a throwaway database, so the copy of
//! the directory the test serves names that database where the example
//! says `payroll`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::AssertSqlSafe;

use crate::mariadb::MariaDb;
use crate::support::{TestDb, busbar_cli, root};

/// The example, from the repository root.
const EXAMPLE: &str = "examples/separate-databases";

const DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn the_example_directory_passes_check() {
    let output = busbar_cli(
        &root(),
        &[
            "check",
            "examples/separate-databases/integrations.d",
            "--contracts",
            "schemas/events",
            "--deny-warnings",
        ],
    );
    assert!(output.status.success(), "{}", output.show());
    assert!(
        output.stdout.contains("0 errors, 0 warnings"),
        "{}",
        output.show()
    );
}

/// `sql` without its comment lines, one statement at a time (the files'
/// comments may hold a `;`).
fn statements(sql: &str) -> String {
    sql.lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The example's integrations directory copied into `to`, with paylinq's
/// MariaDB database `payroll` renamed `database`.
fn copy_integrations(to: &Path, database: &str) {
    let from = root().join(EXAMPLE).join("integrations.d");
    for entry in std::fs::read_dir(&from).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text
            .replace("schemas: [payroll]", &format!("schemas: [{database}]"))
            .replace("payroll.", &format!("{database}."));
        std::fs::write(to.join(path.file_name().unwrap()), text).unwrap();
    }
}

/// `busbar serve --dev` on busbar's own database `own`, the example
/// directory `dir` and the two products' databases, run in `cwd` (where
/// it keeps the dev key). Returns the process, its address and the dev key
/// it printed.
fn serve(own: &str, dir: &Path, nexus: &str, paylinq: &str, cwd: &Path) -> (Child, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_busbar"))
        .args([
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            own,
            "--dir",
        ])
        .arg(dir)
        .arg("--contracts")
        .arg(root().join("schemas/events"))
        .env("NEXUS_DATABASE_URL", nexus)
        .env("PAYLINQ_DATABASE_URL", paylinq)
        .env("BUSBAR_LOG", "error")
        .env_remove("BUSBAR_FAILPOINT")
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("busbar serve starts");
    let stdout = child.stdout.take().unwrap();
    // What `serve --dev` prints once it listens: the address, then the key.
    // The reader goes on reading to the end: a pipe closed early would make
    // the server's next print fail (and the server stop).
    let (found, answer) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut base = None;
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(at) = line.strip_prefix("busbar (dev) is serving on ") {
                base = Some(at.trim().to_owned());
            }
            if let Some(key) = line.trim().strip_prefix("export BUSBAR_KEY=")
                && !sent
            {
                let _ = found.send((
                    base.clone().expect("the address comes first"),
                    key.to_owned(),
                ));
                sent = true;
            }
        }
    });
    let (base, key) = answer
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("serve prints its address and key");
    (child, base, key)
}

/// Waits until `count` says 1.
async fn until_one(what: &str, count: impl AsyncFn() -> i64) {
    let began = Instant::now();
    loop {
        let found = count().await;
        if found == 1 {
            return;
        }
        assert_eq!(found, 0, "{what}: more than one row");
        assert!(began.elapsed() < DEADLINE, "{what}: never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn mariadb_count(db: &MariaDb, sql: &str) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
        .fetch_one(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(postgres_tests, mariadb_tests)),
    ignore = "needs TEST_DATABASE_URL and TEST_MARIADB_URL when the tests were built"
)]
async fn the_walk_through_lands_a_hire_in_nexus_postgres_and_paylinq_mariadb() {
    let example = root().join(EXAMPLE);
    let own = TestDb::postgres().await;
    let nexus = TestDb::postgres_unmigrated().await;
    nexus
        .execute(&std::fs::read_to_string(example.join("nexus.sql")).unwrap())
        .await;
    let paylinq = MariaDb::new().await;
    paylinq
        .execute(&statements(
            &std::fs::read_to_string(example.join("paylinq.sql")).unwrap(),
        ))
        .await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("integrations.d");
    std::fs::create_dir(&dir).unwrap();
    copy_integrations(&dir, &paylinq.name);

    let (mut child, base, key) = serve(&own.url, &dir, &nexus.url, &paylinq.url(), work.path());
    let event =
        std::fs::read_to_string(root().join("examples/events/candidate.hired.json")).unwrap();
    let answer = reqwest::Client::new()
        .post(format!("{base}/api/events"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(event)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let body = answer.text().await.unwrap();
    assert_eq!(status, 202, "{body}");
    assert!(body.contains(r#""routed":2"#), "{body}");

    let email = "ada.lovelace@example.com";
    let employees = format!("email = '{email}'");
    until_one("the employee in nexus's PostgreSQL database", async || {
        nexus.count_where("hris.employees", &employees).await
    })
    .await;
    let records =
        format!("SELECT COUNT(*) FROM employee_records WHERE email = '{email}' AND salary = 72000");
    until_one(
        "the payroll record in paylinq's MariaDB database",
        async || mariadb_count(&paylinq, &records).await,
    )
    .await;
    let hires =
        format!("SELECT COUNT(*) FROM new_hires WHERE email = '{email}' AND status = 'pending'");
    until_one("the new hire in paylinq's MariaDB database", async || {
        mariadb_count(&paylinq, &hires).await
    })
    .await;

    // The payroll record is the employee's: the emitted event carried its id.
    let employee = nexus
        .text(&format!(
            "SELECT id::text FROM hris.employees WHERE email = '{email}'"
        ))
        .await;
    assert_eq!(
        mariadb_count(
            &paylinq,
            &format!("SELECT COUNT(*) FROM employee_records WHERE employee_id = '{employee}'")
        )
        .await,
        1
    );
    // Each database holds its integrations' progress; busbar's own copies
    // of the example platform's hris and payroll tables (`--dev`) stay empty.
    assert!(nexus.count("busbar.progress").await >= 1);
    assert!(mariadb_count(&paylinq, "SELECT COUNT(*) FROM busbar_progress").await >= 2);
    assert_eq!(own.count("hris.employees").await, 0);
    assert_eq!(own.count("payroll.employee_records").await, 0);
    assert_eq!(own.count("payroll.new_hires").await, 0);

    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    assert!(child.wait().unwrap().success(), "graceful shutdown exits 0");
}
