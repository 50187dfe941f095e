//! `busbar serve`'s composition, run in-process (`serve::serve_until`,
//! what `serve` runs until a signal): it starts on a database with `--dev`,
//! prints where it listens and the dev key, takes an event over HTTP with
//! that key and applies it, keeps the key for the next run, and stops
//! cleanly; a configuration with an error, a missing integrations directory
//! or a mistyped `--contracts` keep it from starting.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use busbar::api::ApiConfig;
use busbar::dev::ORGANIZATION;
use busbar::reload::WatchMode;
use busbar::serve::{Listening, ServeOptions, dev_instructions, serve_until};
use tokio::sync::oneshot;

use crate::support::{candidate_hired, on_both_databases, root};

const DEADLINE: Duration = Duration::from_secs(30);

/// `serve --dev`'s options on `database_url`, on a free port.
pub(crate) fn options(database_url: &str, dir: PathBuf) -> ServeOptions {
    ServeOptions {
        database_url: database_url.to_owned(),
        dir,
        contracts: Some(root().join("schemas/events")),
        dev: true,
        new_key: false,
        workers: None,
        listen: "127.0.0.1:0".parse().unwrap(),
        watch: WatchMode::Off,
        poll_interval: Duration::from_secs(1),
        api: ApiConfig::default(),
    }
}

/// A server started in-process: what it said when it listened, the way to
/// stop it, and its outcome.
pub(crate) struct Running {
    pub(crate) listening: Listening,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub(crate) async fn start(options: ServeOptions) -> Running {
    let (listening_tx, listening_rx) = oneshot::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_until(
        options,
        async move {
            let _ = stopped.await;
        },
        move |listening| {
            let _ = listening_tx.send(listening);
        },
    ));
    let listening = tokio::time::timeout(DEADLINE, listening_rx)
        .await
        .expect("listening within the deadline")
        .expect("serve listens rather than failing");
    Running {
        listening,
        stop,
        task,
    }
}

impl Running {
    /// Stops it as a signal would, and waits for it to finish.
    pub(crate) async fn stop(self) {
        self.stop.send(()).unwrap();
        let outcome = tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("stops within the deadline")
            .expect("does not panic");
        outcome.expect("stops without an error");
    }
}

on_both_databases! {
    async fn serve_dev_takes_an_event_with_its_key_applies_it_and_stops_cleanly(db: TestDb) {
        let running = start(options(&db.url, root().join("integrations.d"))).await;
        let address = running.listening.address;
        assert_ne!(address.port(), 0, "the port chosen is told");
        let key = running.listening.dev_key.clone().expect("--dev makes a key");
        assert!(!key.reused, "the first run makes a new key");
        let base = format!("http://{address}");

        // What the binary prints: the URL, the console, the key.
        let instructions = dev_instructions(address, &key);
        assert!(instructions.contains(&format!("busbar (dev) is serving on {base}")), "{instructions}");
        assert!(instructions.contains(&format!("{base}/console")));
        assert!(instructions.contains(&format!("export BUSBAR_KEY={}", key.key)));
        assert!(instructions.contains(&format!("curl -s -X POST {base}/api/events")));

        // An event over HTTP with the dev key, applied by the engine.
        let http = reqwest::Client::new();
        let answer = http
            .post(format!("{base}/api/events"))
            .bearer_auth(&key.key)
            .json(&candidate_hired(ORGANIZATION, "served@example.com"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 202, "{:?}", answer.text().await);
        let refused = http
            .post(format!("{base}/api/events"))
            .bearer_auth("bb_wrong_key")
            .json(&candidate_hired(ORGANIZATION, "refused@example.com"))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401);
        let began = Instant::now();
        while db.find("hris.employees", &[("email", "served@example.com".into())]).await.is_none() {
            assert!(began.elapsed() < DEADLINE, "the event was not applied");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let console = http.get(format!("{base}/console/sign-in")).send().await.unwrap();
        assert_eq!(console.status(), 200, "the console is served too");
        running.stop().await;
        assert!(
            http.get(format!("{base}/api/health")).send().await.is_err(),
            "stopped: nothing listens any more"
        );

        // The next run on the database prints the same key again.
        let again = start(options(&db.url, root().join("integrations.d"))).await;
        let kept = again.listening.dev_key.clone().unwrap();
        assert!(kept.reused);
        assert_eq!(kept.key, key.key);
        assert!(dev_instructions(again.listening.address, &kept).contains("the same as last run"));
        again.stop().await;
        if let Some(file) = &key.file {
            // PostgreSQL's is kept under ./data; SQLite's beside the file.
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Log lines written while a test's future runs on this thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

on_both_databases! {
    async fn serve_refuses_to_start_on_a_configuration_with_an_error_naming_where(db: TestDb) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("broken.yaml"),
            "id: broken\nsource: recruitiq\ntarget: nexus\nroutes:\n  - on: candidate.hired\n    steps:\n      - upsert: hris.employees\n        key: [email]\n        values:\n          email: \"{{ data.candidate.email | no_such_filter }}\"\n",
        )
        .unwrap();
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        // The test's own future runs on this thread: serve's logs land here.
        let guard = tracing::subscriber::set_default(subscriber);
        let mut listened = false;
        let outcome = serve_until(options(&db.url, dir.path().to_owned()), std::future::pending(), |_| listened = true).await;
        drop(guard);
        let error = format!("{:#}", outcome.expect_err("refused"));
        assert!(!listened);
        assert!(error.contains("has 1 error(s); run `busbar check"), "{error}");
        let logs = logs.text();
        let position = regex::Regex::new(r"broken\.yaml:10:\d+: error: .*no_such_filter").unwrap();
        assert!(position.is_match(&logs), "the diagnostic names file:line:col: {logs}");

        // A directory that is not there.
        let missing = dir.path().join("not-there");
        let outcome = serve_until(options(&db.url, missing), std::future::pending(), |_| ()).await;
        let error = format!("{:#}", outcome.expect_err("refused"));
        assert!(error.contains("cannot read the integrations directory"), "{error}");

        // `--contracts strict`: surely `--contract-policy strict`.
        let mut mistyped = options(&db.url, root().join("integrations.d"));
        mistyped.contracts = Some(PathBuf::from("strict"));
        let outcome = serve_until(mistyped, std::future::pending(), |_| ()).await;
        let error = format!("{:#}", outcome.expect_err("refused"));
        assert!(error.contains("use --contract-policy strict"), "{error}");
    }
}

on_both_databases! {
    async fn a_failed_reload_is_shown_in_the_console_where_it_points_and_the_live_generation_stays(db: TestDb) {
        let dir = tempfile::tempdir().unwrap();
        for name in ["recruitiq-to-nexus.yaml", "recruitiq-to-paylinq.yaml", "nexus-to-paylinq.yaml"] {
            std::fs::copy(root().join("integrations.d").join(name), dir.path().join(name)).unwrap();
        }
        let file = dir.path().join("recruitiq-to-paylinq.yaml");
        let good = std::fs::read_to_string(&file).unwrap();
        let running = start(options(&db.url, dir.path().to_owned())).await;
        let base = format!("http://{}", running.listening.address);
        let key = running.listening.dev_key.clone().unwrap();
        let reload = async || {
            reqwest::Client::new()
                .post(format!("{base}/api/integrations/reload"))
                .bearer_auth(&key.key)
                .send()
                .await
                .unwrap()
                .status()
        };

        // A filter that does not exist, on a line we know.
        let broken = good.replace("          status: pending", "          status: \"{{ 'x' | no_such_filter }}\"");
        assert_ne!(broken, good);
        let line = broken.lines().position(|l| l.contains("no_such_filter")).unwrap() + 1;
        std::fs::write(&file, &broken).unwrap();
        assert_eq!(reload().await, 422);

        let cookie = crate::console::session(&base, &key.key).await;
        let overview = crate::console::get(&base, "/console", &cookie).await.text().await.unwrap();
        assert!(overview.contains("The last reload failed"), "{overview}");
        assert!(overview.contains("generation 1 stays live"), "{overview}");
        let position = regex::Regex::new(&format!(r"recruitiq-to-paylinq\.yaml:{line}:\d+</code>")).unwrap();
        assert!(position.is_match(&overview), "file:line:col of the error: {overview}");
        let page = crate::console::get(&base, "/console/integrations/recruitiq-to-paylinq", &cookie)
            .await
            .text()
            .await
            .unwrap();
        assert!(page.contains("The last reload found errors in this file"), "{page}");
        assert!(position.is_match(&page));
        assert!(page.contains(&format!(r#"<span class="line marked" id="L{line}">"#)), "the line is marked");
        // Another file's page says nothing of it.
        let other = crate::console::get(&base, "/console/integrations/recruitiq-to-nexus", &cookie)
            .await
            .text()
            .await
            .unwrap();
        assert!(!other.contains("The last reload found errors in this file"));

        // Fixed: generation 2 goes live, and the overview says so.
        std::fs::write(&file, &good).unwrap();
        assert_eq!(reload().await, 200);
        let overview = crate::console::get(&base, "/console", &cookie).await.text().await.unwrap();
        assert!(overview.contains("Generation <strong>2</strong> went live"), "{overview}");
        assert!(!overview.contains("The last reload failed"));
        running.stop().await;
        if let Some(file) = &key.file {
            let _ = std::fs::remove_file(file);
        }
    }
}
