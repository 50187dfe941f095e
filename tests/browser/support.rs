//! Plumbing for the browser tests: a real `busbar serve --dev` (the built
//! binary) on a fresh database, and headless Chromium driven through
//! chromedriver with fantoccini.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection};

use busbar::store::keys::{self, Scope};
use busbar::store::scope::OrgScope;
use busbar::store::{Dialect, Store};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where screenshots go: `<target>/browser-screenshots/<test>/`.
pub fn screenshot_dir(test: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap_or(Path::new("target"))
        .join("browser-screenshots")
        .join(test)
}

/// An integration only the tests have: it files each hire under the
/// recruiter who made it, and fails (`missing: fail`) when the recruiter
/// is not in `core.users` yet — a dead letter that a fix to the data
/// cures.
const DIRECTORY: &str = r#"
id: recruitiq-to-directory
description: Each hire is filed under the recruiter who made it.
source: recruitiq
target: directory
# A hire that cannot be filed holds back its organization's later ones.
on_dead: block
routes:
  - on: candidate.hired
    steps:
      - find: core.users
        where: { id: $.data.hiredBy }
        missing: fail
        as: recruiter
      - upsert: directory.hires
        key: [candidate_id]
        values:
          candidate_id: $.data.candidate.id
          organization_id: $.organization_id
          recruiter_email: "{{ recruiter.email }}"
"#;

/// `busbar serve --dev` on a fresh database, on a free port.
pub struct Busbar {
    pub base: String,
    /// The key `serve --dev` printed: platform, every scope.
    pub dev_key: String,
    pub store: Store,
    /// The integrations directory it watches (a copy of the shipped one).
    pub dir: PathBuf,
    child: Child,
    admin: Option<(String, String)>,
    _temp: tempfile::TempDir,
}

/// Which database to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

impl Busbar {
    pub async fn start(db: Db) -> Busbar {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("integrations.d");
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(root().join("integrations.d")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
            }
        }
        std::fs::write(dir.join("recruitiq-to-directory.yaml"), DIRECTORY).unwrap();

        let (url, admin) = match db {
            Db::Sqlite => (
                format!("sqlite://{}", temp.path().join("busbar.db").display()),
                None,
            ),
            Db::Postgres => {
                let admin_url = std::env::var("TEST_DATABASE_URL")
                    .expect("the PostgreSQL browser test needs TEST_DATABASE_URL");
                let name = format!("busbar_browser_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap();
                sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.ok();
                (database_url(&admin_url, &name), Some((admin_url, name)))
            }
        };
        // The tables first, so the test's own target table exists before
        // the first delivery.
        let status = Command::new(env!("CARGO_BIN_EXE_busbar"))
            .args(["migrate", "--example-platform", "--database-url", &url])
            .stdout(Stdio::null())
            .status()
            .expect("busbar migrate runs");
        assert!(status.success(), "busbar migrate failed");
        let store = Store::connect(&url).await.expect("database connects");
        let table = match store.dialect() {
            Dialect::Postgres => {
                "CREATE SCHEMA directory; CREATE TABLE directory.hires (candidate_id UUID PRIMARY KEY, \
                 organization_id UUID NOT NULL, recruiter_email VARCHAR(320) NOT NULL)"
            }
            Dialect::Sqlite => {
                "CREATE TABLE \"directory.hires\" (candidate_id UUID PRIMARY KEY, \
                 organization_id UUID NOT NULL, recruiter_email VARCHAR(320) NOT NULL)"
            }
        };
        store.execute_script(table).await.expect("test table");

        let mut child = Command::new(env!("CARGO_BIN_EXE_busbar"))
            .args([
                "serve",
                "--dev",
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                &url,
            ])
            .arg("--dir")
            .arg(&dir)
            .arg("--contracts")
            .arg(root().join("schemas/events"))
            .env("BUSBAR_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("busbar serve starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (lines, found) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let (mut base, mut key) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        while base.is_none() || key.is_none() {
            let line = found
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("busbar serve --dev prints its address and a key");
            if let Some(rest) = line.split("is serving on ").nth(1) {
                base = Some(rest.trim().to_owned());
            }
            if let Some(rest) = line.split("export BUSBAR_KEY=").nth(1) {
                key = Some(rest.trim().to_owned());
            }
            if line.contains("/console") {
                assert!(
                    line.contains("http://"),
                    "the console URL is printed: {line}"
                );
            }
        }
        Busbar {
            base: base.unwrap(),
            dev_key: key.unwrap(),
            store,
            dir,
            child,
            admin,
            _temp: temp,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A new key.
    pub async fn key(&self, organization: Option<uuid::Uuid>, scopes: &[Scope]) -> String {
        keys::create_key(&self.store, organization, scopes, Some("browser test"))
            .await
            .expect("key created")
            .key
    }

    /// Publishes an event through the API with the dev key.
    pub async fn publish(&self, event: &Value) -> uuid::Uuid {
        let answer: Value = reqwest::Client::new()
            .post(self.url("/api/events"))
            .bearer_auth(&self.dev_key)
            .json(event)
            .send()
            .await
            .expect("publish answers")
            .json()
            .await
            .expect("publish answers JSON");
        answer["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("publish failed: {answer}"))
    }

    /// `GET /api/integrations/status` with the dev key.
    pub async fn status(&self) -> Value {
        reqwest::Client::new()
            .get(self.url("/api/integrations/status"))
            .bearer_auth(&self.dev_key)
            .send()
            .await
            .expect("status answers")
            .json()
            .await
            .expect("status answers JSON")
    }

    /// Runs SQL on the database (names written for PostgreSQL).
    pub async fn execute(&self, sql: &str) {
        let sql = match self.store.dialect() {
            Dialect::Postgres => sql.to_owned(),
            Dialect::Sqlite => regex::Regex::new(r"\b(core|directory)\.([a-z_]+)\b")
                .unwrap()
                .replace_all(sql, "\"$1.$2\"")
                .into_owned(),
        };
        self.store.execute_script(&sql).await.expect("SQL runs");
    }

    /// The status of `event`'s delivery to `integration`, waiting up to
    /// `timeout` for it to become `status`.
    pub async fn wait_for_delivery(
        &self,
        event: uuid::Uuid,
        integration: &str,
        status: &str,
        timeout: Duration,
    ) {
        let start = Instant::now();
        loop {
            // Rows and the deliveries inferred from the lanes (a first-pass
            // success has no row), as the server's live generation sees them.
            let generation =
                busbar::serve::load_generation(&self.dir, Some(&root().join("schemas/events")), 1)
                    .expect("the integrations compile");
            let mut tx = self.store.begin_read().await.unwrap();
            let stored = busbar::store::events::get_event(&mut tx, OrgScope::Platform, event)
                .await
                .unwrap();
            let lanes = busbar::store::log::lanes_for(self.store.dialect());
            let deliveries = busbar::store::views::deliveries(
                &mut tx,
                OrgScope::Platform,
                &generation,
                lanes,
                &stored,
            )
            .await
            .unwrap();
            tx.rollback().await.ok();
            let now = deliveries
                .iter()
                .find(|d| d.integration == integration)
                .map(|d| d.status.as_str());
            if now == Some(status) {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "{integration} of {event} is {now:?}, not {status}, after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Busbar {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some((admin_url, name)) = self.admin.take() {
            let store = self.store.clone();
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    store.close().await;
                    if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                        let _ = sqlx::query(AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut admin)
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

fn database_url(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (admin_url, String::new()),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    match base[scheme_end..].find('/').map(|i| i + scheme_end) {
        Some(i) => format!("{}/{name}{query}", &base[..i]),
        None => format!("{base}/{name}{query}"),
    }
}

/// The program at `env` or the first of `candidates` that exists.
fn program(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Some(PathBuf::from(path)).filter(|p| p.exists());
    }
    let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for candidate in candidates {
        for dir in path_dirs
            .iter()
            .map(PathBuf::as_path)
            .chain([Path::new("/usr/bin")])
        {
            let path = dir.join(candidate);
            if path.exists() {
                return Some(path);
            }
        }
    }
    None
}

/// Headless Chromium, driven through chromedriver.
pub struct Browser {
    pub client: Client,
    driver: Child,
    shots: PathBuf,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a browser session, or `None` (with the
    /// reason printed) when chromedriver or Chromium is not installed —
    /// unless `BUSBAR_REQUIRE_BROWSER` is set (`.ci/run` sets it), when a
    /// missing browser fails the test instead of skipping it.
    pub async fn start(test: &str) -> Option<Browser> {
        let skip = |why: &str| {
            assert!(
                std::env::var_os("BUSBAR_REQUIRE_BROWSER").is_none(),
                "{test}: {why}, and BUSBAR_REQUIRE_BROWSER says the browser tests must run"
            );
            eprintln!("SKIPPED {test}: {why}");
        };
        let Some(driver_path) = program("CHROMEDRIVER", &["chromedriver"]) else {
            skip(
                "chromedriver is not installed (apt-get install chromium chromium-driver, or set CHROMEDRIVER)",
            );
            return None;
        };
        let Some(chrome) = program(
            "CHROME_BIN",
            &["chromium", "chromium-browser", "google-chrome"],
        ) else {
            skip("Chromium is not installed (apt-get install chromium, or set CHROME_BIN)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let webdriver = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while reqwest::get(format!("{webdriver}/status")).await.is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "chromedriver did not answer"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": chrome,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1360,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        });
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities.as_object().unwrap().clone())
            .connect(&webdriver)
            .await
            .expect("a browser session starts");
        let shots = screenshot_dir(test);
        std::fs::create_dir_all(&shots).unwrap();
        Some(Browser {
            client,
            driver,
            shots,
            _profile: profile,
        })
    }

    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.expect("the page opens");
    }

    /// The text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap(),
            Err(error) => {
                let url = self.client.current_url().await.map(|u| u.to_string());
                let body = match self.client.find(Locator::Css("body")).await {
                    Ok(body) => body.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                panic!("no {css} on {url:?}: {error}\nthe page reads:\n{body}")
            }
        }
    }

    /// The attribute `name` of the first element matching `css`.
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        let element = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("no {css}: {error}"));
        element.attr(name).await.unwrap()
    }

    /// The whole page's visible text.
    pub async fn page_text(&self) -> String {
        self.text("body").await
    }

    /// Waits until the text of `css` contains `needle`; returns how long.
    pub async fn wait_for_text(&self, css: &str, needle: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let text = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if text.contains(needle) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "`{needle}` did not appear in {css} within {timeout:?}; it reads:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} to click: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// Clicks what submits a form or follows a link, and waits for the new
    /// page to load.
    pub async fn submit(&self, css: &str) {
        self.client
            .execute("window.__busbarOldPage = true", vec![])
            .await
            .unwrap();
        self.click(css).await;
        let start = Instant::now();
        loop {
            let loaded = self
                .client
                .execute(
                    "return window.__busbarOldPage === undefined && document.readyState === 'complete'",
                    vec![],
                )
                .await
                .unwrap_or(Value::Bool(false));
            if loaded == Value::Bool(true) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "clicking {css} loaded no new page"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let input = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} to fill: {e}"));
        input.clear().await.unwrap();
        input.send_keys(text).await.unwrap();
    }

    pub async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    /// Saves a screenshot as `<name>.png`.
    pub async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    /// Signs in with `key` from the sign-in page.
    pub async fn sign_in(&self, busbar: &Busbar, key: &str) {
        self.open(&busbar.url("/console/sign-in")).await;
        self.fill("#key", key).await;
        self.submit("form button[type=submit]").await;
    }

    /// Signs out with the frame's button.
    pub async fn sign_out(&self) {
        self.submit(".who form button").await;
        self.wait_for_text("h1", "busbar", Duration::from_secs(5))
            .await;
    }

    pub async fn stop(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // After a failed test the session was not closed: end the browser
        // chromedriver started (its children, by parent id), then the
        // driver, so no Chromium outlives the test.
        let _ = Command::new("pkill")
            .args(["-TERM", "-P", &self.driver.id().to_string()])
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
