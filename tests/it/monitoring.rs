//! Monitoring as a platform team uses it: `GET /metrics` of a running busbar
//! (in-process, `serve::serve_until`) says what an integration waits on —
//! lag, backlog, state, publish answers — and passes `promtool check
//! metrics`; every metric is documented (docs/METRICS.md); the shipped
//! alert rules (`deploy/prometheus/`) pass their `promtool test rules`
//! unit tests and, like the Grafana dashboard (`deploy/grafana/`), name
//! only metrics busbar serves; and a real Prometheus, scraping busbar every
//! second, fires the lag alert while an integration is paused and events
//! arrive.
//!
//! Prometheus and promtool are Debian's `prometheus` package. Without them
//! the tests that need them say so and pass; with `BUSBAR_REQUIRE_PROMETHEUS`
//! set (`.ci/run` sets it) they fail instead.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use busbar::dev::ORGANIZATION;
use busbar::telemetry::NAMES;
use serde_json::Value;

use crate::serve::{Running, options, start};
use crate::support::{TestDb, candidate_hired, on_both_databases, root};

const DEADLINE: Duration = Duration::from_secs(60);

/// One sample of the text format: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples and the declared `# TYPE`s of a scrape.
struct Scrape {
    text: String,
    samples: Vec<Sample>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        let label = regex::Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)""#).unwrap();
        let mut samples = Vec::new();
        let mut types = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels),
                None => (series, ""),
            };
            samples.push(Sample {
                name: name.to_owned(),
                labels: label
                    .captures_iter(labels)
                    .map(|c| (c[1].to_owned(), c[2].to_owned()))
                    .collect(),
                value: value.parse().unwrap_or(f64::NAN),
            });
        }
        Scrape {
            text,
            samples,
            types,
        }
    }

    /// The value of the one series `name` with these labels (among others).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    /// Whether `name` (a family, or a histogram's `_bucket`/`_sum`/`_count`)
    /// is served.
    fn serves(&self, name: &str) -> bool {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| self.types.get(*base).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        self.types.contains_key(family)
    }
}

async fn scrape(base: &str) -> Scrape {
    let answer = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(answer.status(), 200);
    Scrape::parse(answer.text().await.unwrap())
}

/// A tool of the `prometheus` package, or `None` (with the reason
/// printed) when it is not installed and not required.
fn prometheus_tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("BUSBAR_REQUIRE_PROMETHEUS").is_none(),
            "BUSBAR_REQUIRE_PROMETHEUS is set but `{name}` is not installed (apt-get install prometheus)"
        );
        eprintln!("skipped: `{name}` is not installed (Debian package `prometheus`)");
    }
    found
}

/// Runs `promtool` with `args`, asserting success; `false` when skipped.
fn promtool(args: &[&str], stdin: Option<&str>) -> bool {
    let Some(tool) = prometheus_tool("promtool") else {
        return false;
    };
    let mut command = std::process::Command::new(tool);
    command
        .args(args)
        .current_dir(root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    true
}

/// Starts `serve --dev` on `db` with the shipped integrations.
async fn serve(db: &TestDb) -> (Running, String, String) {
    let running = start(options(&db.url, root().join("integrations.d"))).await;
    let base = format!("http://{}", running.listening.address);
    let key = running.listening.dev_key.clone().unwrap().key;
    (running, base, key)
}

async fn post(base: &str, key: &str, path: &str, body: Option<Value>) -> reqwest::Response {
    let request = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(key);
    match body {
        Some(body) => request.json(&body),
        None => request,
    }
    .send()
    .await
    .unwrap()
}

fn cleanup(running: &Running) {
    if let Some(file) = running
        .listening
        .dev_key
        .as_ref()
        .and_then(|k| k.file.clone())
    {
        let _ = std::fs::remove_file(file);
    }
}

on_both_databases! {
    async fn metrics_show_a_paused_integrations_lag_and_backlog_and_pass_promtool(db: TestDb) {
        let (running, base, key) = serve(&db).await;
        let before = scrape(&base).await;
        assert_eq!(before.value("busbar_database_up", &[("database", "busbar")]), Some(1.0));
        for integration in ["recruitiq-to-nexus", "recruitiq-to-paylinq", "nexus-to-paylinq"] {
            let labels = [("integration", integration)];
            assert_eq!(before.value("busbar_integration_lag_seconds", &labels), Some(0.0), "{integration}");
            assert_eq!(before.value("busbar_integration_backlog_events", &labels), Some(0.0));
            assert_eq!(
                before.value("busbar_integration_state", &[("integration", integration), ("state", "enabled")]),
                Some(1.0)
            );
            // Shown (at zero, unless another test of this process has
            // counted one) before the first delivery, so that increase()
            // counts the first dead letter.
            assert!(
                before.value("busbar_deliveries_total", &[("integration", integration), ("outcome", "dead")]).is_some()
            );
        }
        // Counters are the process's: other tests in this binary count too.
        assert!(before.value("busbar_publish_responses_total", &[("status", "503")]).is_some());
        let accepted = before.value("busbar_publish_responses_total", &[("status", "202")]).unwrap();
        assert!(before.value("busbar_reload_last_successful", &[]).is_some());

        // Paused: its events wait, and the wait shows.
        assert_eq!(post(&base, &key, "/api/integrations/recruitiq/nexus/pause", None).await.status(), 200);
        let published = Instant::now();
        for n in 0..3 {
            let event = candidate_hired(ORGANIZATION, &format!("lag{n}@example.com"));
            assert_eq!(post(&base, &key, "/api/events", Some(event)).await.status(), 202);
        }
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let paused = scrape(&base).await;
        let nexus = [("integration", "recruitiq-to-nexus")];
        let lag = paused.value("busbar_integration_lag_seconds", &nexus).unwrap();
        assert!(
            lag >= 1.0 && lag <= published.elapsed().as_secs_f64() + 1.0,
            "the lag is the oldest waiting event's age: {lag}"
        );
        assert_eq!(paused.value("busbar_integration_backlog_events", &nexus), Some(3.0));
        assert_eq!(
            paused.value("busbar_integration_state", &[("integration", "recruitiq-to-nexus"), ("state", "paused")]),
            Some(1.0)
        );
        assert!(paused.value("busbar_publish_responses_total", &[("status", "202")]).unwrap() >= accepted + 3.0);
        // The integration that is not paused delivered them.
        let paylinq = [("integration", "recruitiq-to-paylinq")];
        let began = Instant::now();
        let mut current = paused;
        while current.value("busbar_integration_backlog_events", &paylinq) != Some(0.0) {
            assert!(began.elapsed() < DEADLINE, "recruitiq-to-paylinq did not deliver");
            tokio::time::sleep(Duration::from_millis(100)).await;
            current = scrape(&base).await;
        }
        assert_eq!(current.value("busbar_integration_lag_seconds", &paylinq), Some(0.0));
        assert!(
            current.value("busbar_deliveries_total", &[("integration", "recruitiq-to-paylinq"), ("outcome", "delivered")])
                >= Some(3.0)
        );
        promtool(&["check", "metrics"], Some(&current.text));

        // Resumed: the backlog drains and the lag is back to zero.
        assert_eq!(post(&base, &key, "/api/integrations/recruitiq/nexus/resume", None).await.status(), 200);
        let began = Instant::now();
        loop {
            let now = scrape(&base).await;
            if now.value("busbar_integration_backlog_events", &nexus) == Some(0.0) {
                assert_eq!(now.value("busbar_integration_lag_seconds", &nexus), Some(0.0));
                break;
            }
            assert!(began.elapsed() < DEADLINE, "the backlog did not drain: {}", now.text);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cleanup(&running);
        running.stop().await;
    }
}

/// Every `busbar_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    regex::Regex::new(r"\bbusbar_[a-z0-9_]+\b")
        .unwrap()
        .find_iter(text)
        .map(|m| m.as_str().to_owned())
        .collect()
}

/// Every query of the dashboard (panels, variables, annotations).
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr" | "definition", Value::String(query)) => out.push(query.clone()),
                        ("query", Value::String(query)) if query.contains('(') => {
                            out.push(query.clone())
                        }
                        _ => walk(value, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_is_documented_served_and_the_only_kind_dashboards_and_rules_name() {
    let db = TestDb::sqlite().await;
    let (running, base, key) = serve(&db).await;
    // One event through, so that the histograms have a sample.
    let event = candidate_hired(ORGANIZATION, "metrics@example.com");
    assert_eq!(
        post(&base, &key, "/api/events", Some(event)).await.status(),
        202
    );
    let began = Instant::now();
    let live = loop {
        let live = scrape(&base).await;
        if live.serves("busbar_step_duration_seconds")
            && live.serves("busbar_route_duration_seconds")
        {
            break live;
        }
        assert!(
            began.elapsed() < DEADLINE,
            "no delivery recorded: {}",
            live.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // telemetry::NAMES is what busbar serves, with the types it says.
    for (name, kind) in NAMES {
        assert_eq!(
            live.types.get(*name).map(String::as_str),
            Some(*kind),
            "{name} in:\n{}",
            live.text
        );
    }
    let served: BTreeSet<&str> = live
        .types
        .keys()
        .map(String::as_str)
        .filter(|name| name.starts_with("busbar_"))
        .collect();
    let named: BTreeSet<&str> = NAMES.iter().map(|(name, _)| *name).collect();
    assert_eq!(served, named, "telemetry::NAMES lists every metric served");

    // docs/METRICS.md has a row for each, and names nothing else.
    let docs = std::fs::read_to_string(root().join("docs/METRICS.md")).unwrap();
    for (name, kind) in NAMES {
        assert!(
            docs.contains(&format!("| `{name}` | {kind} |")),
            "docs/METRICS.md: no row for {name}"
        );
    }
    for name in metric_names(&docs) {
        assert!(
            live.serves(&name),
            "docs/METRICS.md names {name}, which busbar does not serve"
        );
    }
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        readme.contains("## Monitoring"),
        "README has a Monitoring section"
    );

    // The alert rules and the dashboard name only metrics busbar serves.
    let rules =
        std::fs::read_to_string(root().join("deploy/prometheus/busbar-alerts.yml")).unwrap();
    let names = metric_names(&rules);
    assert!(
        names.contains("busbar_integration_lag_seconds"),
        "{names:?}"
    );
    for name in names {
        assert!(
            live.serves(&name),
            "the alert rules use {name}, which busbar does not serve"
        );
    }
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/busbar.json")).unwrap(),
    )
    .unwrap();
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 20, "{queries:?}");
    for query in &queries {
        let names = metric_names(query);
        assert!(
            !names.is_empty(),
            "a dashboard query that names no busbar metric: {query}"
        );
        for name in names {
            assert!(
                live.serves(&name),
                "the dashboard queries {name}, which busbar does not serve: {query}"
            );
        }
    }
    cleanup(&running);
    running.stop().await;
}

#[test]
fn the_shipped_alert_rules_pass_their_unit_tests() {
    let rules = "deploy/prometheus/busbar-alerts.yml";
    if promtool(&["check", "rules", rules], None) {
        promtool(
            &["test", "rules", "deploy/prometheus/busbar-alerts.test.yml"],
            None,
        );
    }
}

/// The shipped rules with the lag alert's threshold and `for:` shortened,
/// for a test that cannot wait five minutes.
fn rules_for_test(lag_threshold_seconds: u32, lag_for: &str) -> String {
    let rules =
        std::fs::read_to_string(root().join("deploy/prometheus/busbar-alerts.yml")).unwrap();
    let lag = "expr: max by (integration) (busbar_integration_lag_seconds) > 300\n        for: 5m";
    assert!(
        rules.contains(lag),
        "the lag rule changed; change this test with it"
    );
    rules.replace(
        lag,
        &format!(
            "expr: max by (integration) (busbar_integration_lag_seconds) > {lag_threshold_seconds}\n        for: {lag_for}"
        ),
    )
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Prometheus, started on a free port with a configuration written here,
/// scraping `target` every second with `rules`; killed when dropped.
struct Prometheus {
    base: String,
    child: tokio::process::Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(binary: &Path, target: std::net::SocketAddr, rules: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rules.yml"), rules).unwrap();
        std::fs::write(
            dir.path().join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files: [rules.yml]\n\
                 scrape_configs:\n  - job_name: busbar\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = dir.path().join("prometheus.log");
        let child = tokio::process::Command::new(binary)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(dir.path())
            .stdout(std::fs::File::create(dir.path().join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let prometheus = Prometheus {
            base: format!("http://127.0.0.1:{port}"),
            child,
            log,
            _dir: dir,
        };
        let began = Instant::now();
        loop {
            if let Ok(answer) = reqwest::get(format!("{}/-/ready", prometheus.base)).await
                && answer.status() == 200
            {
                break;
            }
            assert!(
                began.elapsed() < DEADLINE,
                "Prometheus did not start:\n{}",
                prometheus.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        prometheus
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The alerts Prometheus holds now (pending and firing).
    async fn alerts(&self) -> Vec<Value> {
        let answer: Value = reqwest::get(format!("{}/api/v1/alerts", self.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_fires_the_lag_alert_while_an_integration_is_paused_and_events_arrive() {
    let Some(binary) = prometheus_tool("prometheus") else {
        return;
    };
    let db = TestDb::sqlite().await;
    let (running, base, key) = serve(&db).await;
    let prometheus =
        Prometheus::start(&binary, running.listening.address, &rules_for_test(3, "2s")).await;

    assert_eq!(
        post(&base, &key, "/api/integrations/recruitiq/nexus/pause", None)
            .await
            .status(),
        200
    );
    let lagging = |alert: &Value, integration: &str| {
        alert["labels"]["alertname"] == "BusbarIntegrationLagging"
            && alert["labels"]["integration"] == integration
    };
    let began = Instant::now();
    let mut n = 0;
    let firing = loop {
        // Events keep arriving while it is paused.
        let event = candidate_hired(ORGANIZATION, &format!("alert{n}@example.com"));
        n += 1;
        assert_eq!(
            post(&base, &key, "/api/events", Some(event)).await.status(),
            202
        );
        let alerts = prometheus.alerts().await;
        if let Some(alert) = alerts
            .iter()
            .find(|a| lagging(a, "recruitiq-to-nexus") && a["state"] == "firing")
        {
            // Only the paused integration lags.
            assert!(
                !alerts.iter().any(|a| lagging(a, "recruitiq-to-paylinq")),
                "{alerts:?}"
            );
            break alert.clone();
        }
        assert!(
            began.elapsed() < DEADLINE,
            "the lag alert did not fire; alerts: {alerts:?}\nPrometheus log:\n{}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(firing["labels"]["severity"], "warning");
    let summary = firing["annotations"]["summary"].as_str().unwrap();
    assert!(summary.starts_with("recruitiq-to-nexus is "), "{summary}");
    assert!(summary.ends_with(" behind"), "{summary}");

    // Resumed: it catches up and the alert goes away.
    assert_eq!(
        post(
            &base,
            &key,
            "/api/integrations/recruitiq/nexus/resume",
            None
        )
        .await
        .status(),
        200
    );
    let began = Instant::now();
    loop {
        let alerts = prometheus.alerts().await;
        if !alerts.iter().any(|a| lagging(a, "recruitiq-to-nexus")) {
            break;
        }
        assert!(
            began.elapsed() < DEADLINE,
            "the lag alert did not resolve: {alerts:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    prometheus.stop().await;
    cleanup(&running);
    running.stop().await;
}

/// `data-last` of the element with `id` in `html`.
fn data_last(html: &str, id: &str) -> Option<f64> {
    let pattern = regex::Regex::new(&format!(r#"id="{id}" data-last="([0-9.]+)""#)).unwrap();
    pattern.captures(html).map(|c| c[1].parse().unwrap())
}

on_both_databases! {
    async fn an_integrations_charts_end_on_the_status_apis_figures_and_mark_the_pause(db: TestDb) {
        let (running, base, key) = serve(&db).await;
        // The history sampler records a minute at start.
        let began = Instant::now();
        while db.count("integrations.integration_history").await < 3 {
            assert!(began.elapsed() < DEADLINE, "no history recorded");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(post(&base, &key, "/api/integrations/recruitiq/nexus/pause", None).await.status(), 200);
        for n in 0..4 {
            let event = candidate_hired(ORGANIZATION, &format!("chart{n}@example.com"));
            assert_eq!(post(&base, &key, "/api/events", Some(event)).await.status(), 202);
        }
        let status: Value = reqwest::Client::new()
            .get(format!("{base}/api/integrations/status"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let nexus = status["integrations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == "recruitiq-to-nexus")
            .unwrap();
        let waiting = nexus["deliveries"]["pending"].as_i64().unwrap() + nexus["deliveries"]["retrying"].as_i64().unwrap();
        assert_eq!(waiting, 4, "{nexus}");
        assert!(nexus["lag_seconds"].as_f64().unwrap() >= 0.0, "{nexus}");

        let cookie = crate::console::session(&base, &key).await;
        let page = crate::console::get(&base, "/console/integrations/recruitiq-to-nexus", &cookie)
            .await
            .text()
            .await
            .unwrap();
        for chart in ["applied", "failures", "backlog", "lag"] {
            assert!(page.contains(&format!(r#"id="chart-{chart}""#)), "chart {chart}: {page}");
        }
        assert_eq!(data_last(&page, "chart-backlog"), Some(waiting as f64), "the backlog chart ends on the status API's figure");
        assert!(page.contains("Now: <strong>4 events waiting</strong>"), "{page}");
        assert!(data_last(&page, "chart-lag").unwrap() >= 0.0);
        assert!(page.contains("behind</strong>") || page.contains("Now: <strong>0 s behind"), "the lag in words");
        // The time axis is labelled, and the pause is marked on it.
        assert!(page.contains(r#"class="axis time""#), "{page}");
        assert!(page.contains(r#"<g class="mark"><title>paused at "#), "{page}");
        let day = crate::console::get(&base, "/console/integrations/recruitiq-to-nexus?window=day", &cookie)
            .await
            .text()
            .await
            .unwrap();
        assert!(day.contains("Backlog, the last day"), "{day}");

        // The overview's sparklines: deliveries per minute over the last hour.
        let began = Instant::now();
        loop {
            let overview = crate::console::get(&base, "/console", &cookie).await.text().await.unwrap();
            assert!(overview.contains(r#"id="spark-recruitiq-to-nexus""#), "{overview}");
            if overview.contains(r#"aria-label="recruitiq-to-paylinq: 4 delivered in the last hour, per minute""#) {
                break;
            }
            assert!(began.elapsed() < DEADLINE, "no sparkline of recruitiq-to-paylinq's deliveries: {overview}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        cleanup(&running);
        running.stop().await;
    }
}

on_both_databases! {
    async fn a_long_transaction_holds_no_other_events_back_and_the_metrics_say_so(db: TestDb) {
        use sqlx::Connection;
        let (running, base, key) = serve(&db).await;
        let recruitiq = [("source", "recruitiq")];
        assert_eq!(scrape(&base).await.value("busbar_log_held_events", &recruitiq), Some(0.0));
        if db.dialect() == busbar::store::Dialect::Sqlite {
            // Every committed event can be read on SQLite.
            cleanup(&running);
            running.stop().await;
            return;
        }
        // A transaction with an id, left open: the events published after
        // it began are delivered all the same (ticks; issue 16), and none is
        // counted as waiting for a tick once the ticker has made one.
        let mut other = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let mut open = other.begin().await.unwrap();
        sqlx::query("SELECT pg_current_xact_id()").execute(&mut *open).await.unwrap();
        for n in 0..2 {
            let event = candidate_hired(ORGANIZATION, &format!("held{n}@example.com"));
            assert_eq!(post(&base, &key, "/api/events", Some(event)).await.status(), 202);
        }
        let nexus = [("integration", "recruitiq-to-nexus")];
        let began = Instant::now();
        loop {
            let now = scrape(&base).await;
            if now.value("busbar_log_held_events", &recruitiq) == Some(0.0)
                && now.value("busbar_integration_backlog_events", &nexus) == Some(0.0)
            {
                break;
            }
            assert!(began.elapsed() < DEADLINE, "held while a transaction is open: {}", now.text);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        open.rollback().await.unwrap();
        cleanup(&running);
        running.stop().await;
    }
}
