//! The database goes away and comes back: PostgreSQL is restarted while
//! busbar publishes and delivers. The engine must reconnect and finish, and
//! every event it accepted must be applied exactly once.
//!
//! A test binary of its own, because restarting the server would break the
//! other tests' connections (cargo runs test binaries one at a time). It
//! needs `TEST_DATABASE_URL` at build time and `pg_ctlcluster` (Debian's
//! PostgreSQL packaging) with the rights to restart the server.
//!
//! The cluster restarted is `BUSBAR_PG_CLUSTER` (default `main`); point
//! `TEST_DATABASE_URL` at it. On a machine whose `main` cluster others
//! use, make a private one:
//!
//! ```sh
//! pg_createcluster 15 outage -p 5499 -- --auth=trust
//! pg_ctlcluster --skip-systemctl-redirect 15 outage start
//! BUSBAR_PG_CLUSTER=outage TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5499/postgres \
//!     cargo test --test pg_restart
//! ```
//!
//! Under `flock`, use `flock -o`: a server the test starts would otherwise
//! inherit the lock's descriptor and hold the lock for as long as it runs.

#[path = "it/support.rs"]
#[allow(dead_code, unused_macros, unused_imports)]
mod support;

use std::time::Duration;

use serde_json::json;

use support::TestDb;

const LEDGER: &str = r#"
id: ledger
source: load
target: books
routes:
  - on: item.added
    steps:
      - find: test.ledger
        where: { event_id: $.id }
        as: previous
      - upsert: test.ledger
        key: [event_id]
        values:
          event_id: $.id
          applied: "{{ (previous.applied if previous else 0) + 1 }}"
"#;

/// The tests of this binary take the server down; they take turns, or one
/// test's restart would land in the middle of the other's outage.
static SERVER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn restart_postgres() -> Result<(), String> {
    pg_ctl("restart")
}

/// Runs `pg_ctlcluster <version> <cluster> <action>` (`stop -m fast`,
/// `start`, `restart`) on the cluster `BUSBAR_PG_CLUSTER` names (`main`
/// unless set).
fn pg_ctl(action: &str) -> Result<(), String> {
    let versions =
        std::fs::read_dir("/etc/postgresql").map_err(|e| format!("no /etc/postgresql: {e}"))?;
    let version = versions
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .ok_or("no PostgreSQL cluster in /etc/postgresql")?;
    let cluster = std::env::var("BUSBAR_PG_CLUSTER").unwrap_or_else(|_| "main".to_owned());
    let mut command = std::process::Command::new("pg_ctlcluster");
    command.args(["--skip-systemctl-redirect", &version, &cluster]);
    command.args(action.split_whitespace());
    let status = command
        .status()
        .map_err(|e| format!("cannot run pg_ctlcluster: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("pg_ctlcluster {action} failed: {status}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "PostgreSQL suite skipped: TEST_DATABASE_URL was not set when the tests were built"
)]
async fn postgres_restart_mid_run_loses_nothing_accepted() {
    let _server = SERVER.lock().await;
    let db = TestDb::postgres().await;
    db.execute("CREATE SCHEMA test").await;
    db.execute("CREATE TABLE test.ledger (event_id UUID PRIMARY KEY, applied INTEGER NOT NULL)")
        .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ledger.yaml"), LEDGER).unwrap();
    let engine = db.engine_on(dir.path(), None).await;

    // Publish continuously; remember what was accepted.
    let publisher = {
        let engine = engine.clone();
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            let mut refused = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
            let mut i = 0;
            while tokio::time::Instant::now() < deadline {
                let event = json!({
                    "source": "load", "event": "item.added",
                    "organization_id": busbar::dev::ORGANIZATION, "data": {"item": i}
                });
                match engine.publish_json(&event, None).await {
                    Ok(published) => accepted.push(published.id),
                    Err(_) => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                i += 1;
            }
            (accepted, refused)
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let Err(reason) = restart_postgres() {
        panic!("cannot restart PostgreSQL for this test: {reason}");
    }
    let (accepted, refused) = publisher.await.unwrap();
    eprintln!(
        "accepted {} events, {refused} publishes refused while the server was down",
        accepted.len()
    );
    assert!(accepted.len() > 100, "publishing resumed after the restart");

    // A fresh connection for checking; the engine reconnects by itself.
    db.settle(Duration::from_secs(60)).await;
    // A publish whose commit succeeded just as the connection died is
    // reported as refused (the producer retries it, ideally with the same
    // id); so stored events may exceed those acknowledged, never the reverse.
    let stored = db.count("integrations.events").await;
    assert!(
        stored >= accepted.len() as i64,
        "an accepted event was lost"
    );
    for id in &accepted {
        assert!(
            db.find("test.ledger", &[("event_id", json!(id))])
                .await
                .is_some(),
            "accepted event {id} was not applied"
        );
    }
    assert_eq!(
        db.count("test.ledger").await,
        stored,
        "every stored event was applied"
    );
    assert_eq!(
        db.count_where("test.ledger", "applied <> 1").await,
        0,
        "nothing was applied twice"
    );
    assert_eq!(
        db.count_where("integrations.deliveries", "status <> 'delivered'")
            .await,
        0
    );
    engine.shutdown().await;
}

/// PostgreSQL stopped for 15 s under 16 publishers sending 300 events/s
/// over HTTP, who keep sending after it is back: every request is answered
/// within 2 s, 202 or 503 with `Retry-After`; publishing answers 202 again
/// within a few seconds of the database's return and keeps doing so;
/// `/readyz` says 200 only while publishing is accepted; and every event
/// answered 202 is stored and applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(postgres_tests),
    ignore = "PostgreSQL suite skipped: TEST_DATABASE_URL was not set when the tests were built"
)]
async fn publishing_under_load_is_answered_through_an_outage_and_accepted_again_after_it() {
    let _server = SERVER.lock().await;
    use busbar::api::{self, ApiConfig, AppState, ReloadOutcome};
    use busbar::store::keys::{self, Scope};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    /// How long publishing may take to accept again once PostgreSQL is back.
    const RECOVERY: Duration = Duration::from_secs(5);
    /// Requests per second, from all publishers together.
    const RATE: u32 = 300;
    const PUBLISHERS: u32 = 16;

    let db = TestDb::postgres().await;
    db.execute("CREATE SCHEMA test").await;
    db.execute("CREATE TABLE test.ledger (event_id UUID PRIMARY KEY, applied INTEGER NOT NULL)")
        .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ledger.yaml"), LEDGER).unwrap();
    let engine = db.engine_on(dir.path(), None).await;
    let key = {
        let mut tx = db.store.begin().await.unwrap();
        let key = keys::create(
            &mut tx,
            None,
            &[Scope::Publish],
            Some("test"),
            busbar::store::types::Time::now(),
        )
        .await
        .unwrap()
        .key;
        tx.commit().await.unwrap();
        key
    };
    let reload = Arc::new(arc_swap::ArcSwap::from_pointee(ReloadOutcome::loaded(1)));
    let state = AppState::new(engine.clone(), reload, ApiConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::serve(
        listener,
        busbar::serve::app(state),
        async move {
            let _ = stopped.await;
        },
    ));

    /// One publish request: when it was sent, how long the answer took,
    /// its status (0: no answer), the event's id, and whether a 503 said
    /// when to retry.
    struct Answer {
        sent: Instant,
        latency: Duration,
        status: u16,
        id: String,
        retry_after: bool,
    }
    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut publishers = tokio::task::JoinSet::new();
    for p in 0..PUBLISHERS {
        let (base, key, answers, running) =
            (base.clone(), key.clone(), answers.clone(), running.clone());
        publishers.spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut tick = tokio::time::interval(Duration::from_secs(1) * PUBLISHERS / RATE);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut i = 0;
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let id = uuid::Uuid::now_v7().to_string();
                let event = json!({
                    "id": id, "source": "load", "event": "item.added",
                    "organization_id": busbar::dev::ORGANIZATION, "data": {"item": p * 100_000 + i}
                });
                let sent = Instant::now();
                let reply = client
                    .post(format!("{base}/api/events"))
                    .bearer_auth(&key)
                    .json(&event)
                    .send()
                    .await;
                let latency = sent.elapsed();
                let (status, retry_after) = match reply {
                    Ok(reply) => (
                        reply.status().as_u16(),
                        reply.headers().contains_key("retry-after"),
                    ),
                    Err(_) => (0, false),
                };
                answers.lock().unwrap().push(Answer {
                    sent,
                    latency,
                    status,
                    id,
                    retry_after,
                });
                i += 1;
            }
        });
    }
    // `/readyz` four times a second: (when asked, status).
    let readiness = {
        let (base, running) = (base.clone(), running.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut seen = Vec::new();
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                let asked = Instant::now();
                let status = match client.get(format!("{base}/readyz")).send().await {
                    Ok(reply) => reply.status().as_u16(),
                    Err(_) => 0,
                };
                seen.push((asked, Instant::now(), status));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            seen
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg_ctl("stop -m fast").expect("PostgreSQL stops");
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(15)).await;
    pg_ctl("start").expect("PostgreSQL starts");
    let up = Instant::now();
    eprintln!("PostgreSQL was down for {:?}", up - down);
    // The load goes on after the return, long enough to see that
    // publishing comes back and stays back.
    tokio::time::sleep(RECOVERY + Duration::from_secs(10)).await;
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    while let Some(result) = publishers.join_next().await {
        result.unwrap();
    }
    let readiness = readiness.await.unwrap();
    let answers = std::mem::take(&mut *answers.lock().unwrap());
    let accepted: Vec<&String> = answers
        .iter()
        .filter(|a| a.status == 202)
        .map(|a| &a.id)
        .collect();
    let refused = answers.iter().filter(|a| a.status == 503).count();
    let slowest = answers.iter().map(|a| a.latency).max().unwrap();
    let after = |a: &Answer| a.sent.saturating_duration_since(up);
    let first_after_return = answers
        .iter()
        .filter(|a| a.status == 202 && a.sent >= up)
        .map(|a| after(a) + a.latency)
        .min();
    let refused_after_return = answers
        .iter()
        .filter(|a| a.status != 202 && a.sent >= up + RECOVERY)
        .count();
    let span = answers.last().unwrap().sent - answers[0].sent;
    eprintln!(
        "{} requests in {span:?} ({:.0}/s): {} accepted, {refused} refused with 503, slowest \
         answer {slowest:?}; first accepted {first_after_return:?} after the return, \
         {refused_after_return} refused more than {RECOVERY:?} after it",
        answers.len(),
        answers.len() as f64 / span.as_secs_f64(),
        accepted.len()
    );
    for answer in &answers {
        let (status, latency, id) = (answer.status, answer.latency, &answer.id);
        assert!(
            status == 202 || status == 503,
            "request for {id} answered {status} after {latency:?}"
        );
        assert!(
            latency < Duration::from_secs(2),
            "request for {id} took {latency:?} ({status})"
        );
        if status == 503 {
            assert!(answer.retry_after, "a 503 says when to retry");
        }
    }
    assert!(refused > 16, "the outage was seen: {refused} refused");
    assert!(
        answers
            .iter()
            .any(|a| a.status == 202 && a.sent + a.latency < down),
        "publishing worked before the outage"
    );
    assert!(
        first_after_return.is_some_and(|t| t < RECOVERY),
        "publishing accepted again within {RECOVERY:?} of PostgreSQL's return \
         (first 202 after {first_after_return:?})"
    );
    assert_eq!(
        refused_after_return, 0,
        "publishing stayed accepted once it was back"
    );
    // `/readyz` tells the truth: it said 503 while the database was down,
    // and 200 after the return only while publishes were being accepted.
    assert!(
        readiness
            .iter()
            .any(|&(asked, _, status)| status == 503 && asked > down && asked < up),
        "/readyz said 503 during the outage: {readiness:?}"
    );
    for &(asked, answered, status) in &readiness {
        if status != 200 || asked < up {
            continue;
        }
        let margin = Duration::from_millis(500);
        assert!(
            answers.iter().any(|a| a.status == 202
                && a.sent + a.latency + margin >= asked
                && a.sent <= answered + margin),
            "/readyz said 200 {:?} after the return while no publish was accepted",
            asked - up
        );
    }
    assert!(
        readiness
            .last()
            .is_some_and(|&(_, _, status)| status == 200),
        "/readyz says 200 at the end: {readiness:?}"
    );

    // Delivery catches up by itself: every accepted event applied once.
    let stopped_at = Instant::now();
    db.settle(Duration::from_secs(60)).await;
    eprintln!(
        "delivery caught up {:?} after the load stopped, {:?} after PostgreSQL's return",
        stopped_at.elapsed(),
        up.elapsed()
    );
    for id in accepted {
        assert!(
            db.find("test.ledger", &[("event_id", json!(id))])
                .await
                .is_some(),
            "accepted event {id} was not applied"
        );
    }
    assert_eq!(
        db.count_where("test.ledger", "applied <> 1").await,
        0,
        "nothing applied twice"
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    engine.shutdown().await;
}
