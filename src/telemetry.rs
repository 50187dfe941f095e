//! Metrics: the one place that names them. The engine and the API call the
//! functions here (`telemetry::event_published(n)`); `GET /metrics` renders
//! them in the Prometheus text format.
//!
//! Until [`install`] runs (the server calls it once per process) every
//! function is a no-op, so `check`, `render` and the tests pay nothing.
//!
//! Two kinds of metric live here. Counters and histograms are recorded as
//! things happen, in this process. The figures an operator alerts on —
//! each integration's backlog, lag, retrying, dead and blocked keys — are
//! read from the database at every scrape (`api::metrics`) and written by
//! [`render_integrations`], so every busbar process sharing a database
//! serves the same figures (aggregate them with `max by (integration)`)
//! and an integration that is gone leaves no stale series behind.
//! docs/METRICS.md lists every metric; [`NAMES`] is the list the tests
//! hold the documentation, the alert rules and the dashboard to.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::delivery::Status;

/// The statuses `busbar_publish_responses_total` shows from the start (at
/// zero), so that `increase()` counts the first of each.
const PUBLISH_STATUSES: [u16; 9] = [200, 202, 400, 401, 409, 413, 422, 429, 503];

/// Every metric busbar serves, with its type: the list docs/METRICS.md,
/// the shipped alert rules and the Grafana dashboard are checked against
/// (`tests/it/monitoring.rs`).
pub const NAMES: &[(&str, &str)] = &[
    ("busbar_events_published_total", "counter"),
    ("busbar_events_duplicate_total", "counter"),
    ("busbar_publish_responses_total", "counter"),
    ("busbar_publish_commit_seconds", "histogram"),
    ("busbar_publish_commit_events", "histogram"),
    ("busbar_deliveries_total", "counter"),
    ("busbar_route_duration_seconds", "histogram"),
    ("busbar_step_duration_seconds", "histogram"),
    ("busbar_deliveries_pending", "gauge"),
    ("busbar_reloads_total", "counter"),
    ("busbar_generation", "gauge"),
    ("busbar_reload_last_successful", "gauge"),
    ("busbar_reload_last_success_timestamp_seconds", "gauge"),
    ("busbar_http_requests_total", "counter"),
    ("busbar_http_request_duration_seconds", "histogram"),
    ("busbar_auth_lookups_total", "counter"),
    ("busbar_auth_failures_total", "counter"),
    ("busbar_auth_throttled_total", "counter"),
    ("busbar_database_up", "gauge"),
    ("busbar_database_lag_seconds", "gauge"),
    ("busbar_integration_state", "gauge"),
    ("busbar_integration_backlog_events", "gauge"),
    ("busbar_integration_lag_seconds", "gauge"),
    ("busbar_integration_deliveries", "gauge"),
    ("busbar_integration_blocked_keys", "gauge"),
    ("busbar_log_held_events", "gauge"),
    ("busbar_waiting_on_sessions", "gauge"),
    ("busbar_waiting_on_seconds", "gauge"),
];

/// Latency buckets, in seconds: half a millisecond to ten seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Event counts per publish commit.
const SIZE_BUCKETS: [f64; 10] = [1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];
/// How often histograms are folded when nobody scrapes, so they do not grow.
const UPKEEP: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder (once per process; later calls return
/// the same handle) and describes every metric.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Full(
                            "busbar_publish_commit_events".into(),
                        ),
                        &SIZE_BUCKETS,
                    )
                })
                .expect("the bucket lists are not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics will be empty");
            }
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("busbar-metrics".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP);
                        upkeep.run_upkeep();
                    }
                })
                .expect("can start the metrics upkeep thread");
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(
        "busbar_events_published_total",
        "Events stored by publishing (duplicates not counted)."
    );
    describe_counter!(
        "busbar_events_duplicate_total",
        "Publishes of an event already stored (same id or idempotency key): nothing was created."
    );
    describe_histogram!(
        "busbar_publish_commit_seconds",
        metrics::Unit::Seconds,
        "Time of one group-commit publish transaction."
    );
    describe_histogram!(
        "busbar_publish_commit_events",
        "Events per group-commit publish transaction."
    );
    describe_counter!(
        "busbar_deliveries_total",
        "Delivery attempts by integration and outcome: delivered, skipped, dead, retrying (another attempt scheduled), or pending (waiting behind its key)."
    );
    describe_histogram!(
        "busbar_route_duration_seconds",
        metrics::Unit::Seconds,
        "Time to run one delivery's route, by integration."
    );
    describe_histogram!(
        "busbar_step_duration_seconds",
        metrics::Unit::Seconds,
        "Time to run one step, by kind (find, upsert, update, delete, emit)."
    );
    describe_gauge!(
        "busbar_deliveries_pending",
        "Delivery rows pending or retrying, every integration together, as of the last scrape."
    );
    describe_counter!(
        "busbar_reloads_total",
        "Configuration loads by outcome: ok or failed."
    );
    describe_gauge!("busbar_generation", "The number of the live generation.");
    describe_gauge!(
        "busbar_reload_last_successful",
        "1 when the last configuration load compiled and went live; 0 when it failed and the previous generation was kept."
    );
    describe_gauge!(
        "busbar_reload_last_success_timestamp_seconds",
        metrics::Unit::Seconds,
        "When the live generation went live (Unix time)."
    );
    describe_counter!(
        "busbar_publish_responses_total",
        "Answers to POST /api/events by HTTP status: 202 stored, 200 already stored, 4xx refused, 503 could not be stored (retry)."
    );
    describe_counter!(
        "busbar_http_requests_total",
        "HTTP requests by method, route and status."
    );
    describe_histogram!(
        "busbar_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request latency by method and route."
    );
    // Counters with a fixed label set show as zero before anything happens
    // (`busbar_deliveries_total` per integration: `integration_defined`).
    for outcome in ["ok", "failed"] {
        counter!("busbar_reloads_total", "outcome" => outcome).absolute(0);
    }
    for status in PUBLISH_STATUSES {
        counter!("busbar_publish_responses_total", "status" => status.to_string()).absolute(0);
    }
    counter!("busbar_events_published_total").absolute(0);
    counter!("busbar_events_duplicate_total").absolute(0);
    describe_auth();
}

fn describe_auth() {
    describe_counter!(
        "busbar_auth_lookups_total",
        "API keys read from the database (a key not trusted from the cache)."
    );
    describe_counter!(
        "busbar_auth_failures_total",
        "Requests refused with 401 invalid-key (unknown, mistyped or revoked keys)."
    );
    describe_counter!(
        "busbar_auth_throttled_total",
        "Requests refused with 429: their address failed to authenticate too often."
    );
    for name in [
        "busbar_auth_lookups_total",
        "busbar_auth_failures_total",
        "busbar_auth_throttled_total",
    ] {
        counter!(name).absolute(0);
    }
}

/// `count` new events were stored by a publish.
pub fn event_published(count: u64) {
    counter!("busbar_events_published_total").increment(count);
}

/// `count` publishes found their event already stored.
pub fn event_duplicate(count: u64) {
    counter!("busbar_events_duplicate_total").increment(count);
}

/// One group-commit publish transaction committed `events` events.
pub fn publish_committed(events: usize, duration: Duration) {
    histogram!("busbar_publish_commit_seconds").record(duration.as_secs_f64());
    histogram!("busbar_publish_commit_events").record(events as f64);
}

/// A delivery attempt of `integration` ended with `status` (`Retrying`: a
/// retry is scheduled) after running its route for `duration`.
pub fn delivery_finished(integration: &str, status: Status, duration: Duration) {
    counter!(
        "busbar_deliveries_total",
        "integration" => integration.to_owned(),
        "outcome" => status.as_str()
    )
    .increment(1);
    histogram!("busbar_route_duration_seconds", "integration" => integration.to_owned())
        .record(duration.as_secs_f64());
}

/// One step of kind `step` (`find`, `upsert`, ...) ran for `duration`.
pub fn step_finished(step: &'static str, duration: Duration) {
    histogram!("busbar_step_duration_seconds", "step" => step).record(duration.as_secs_f64());
}

/// The number of pending deliveries (the queue depth).
pub fn queue_depth(pending: i64) {
    gauge!("busbar_deliveries_pending").set(pending as f64);
}

/// A configuration load finished: `generation` is live after it (the new
/// one when `ok`, the one kept otherwise).
pub fn reload(ok: bool, generation: u64) {
    let outcome = if ok { "ok" } else { "failed" };
    counter!("busbar_reloads_total", "outcome" => outcome).increment(1);
    gauge!("busbar_generation").set(generation as f64);
    gauge!("busbar_reload_last_successful").set(if ok { 1.0 } else { 0.0 });
    if ok {
        gauge!("busbar_reload_last_success_timestamp_seconds")
            .set(chrono::Utc::now().timestamp_millis() as f64 / 1e3);
    }
}

/// `POST /api/events` was answered `status`.
pub fn publish_answered(status: u16) {
    counter!("busbar_publish_responses_total", "status" => status.to_string()).increment(1);
}

/// Makes `integration`'s delivery counters exist (at zero) before its
/// first delivery, so that `increase()` sees its first dead letter.
pub fn integration_defined(integration: &str) {
    for status in Status::ALL {
        counter!(
            "busbar_deliveries_total",
            "integration" => integration.to_owned(),
            "outcome" => status.as_str()
        )
        .increment(0);
    }
}

/// An HTTP request to `route` (the matched pattern, never the raw path, so
/// the label set stays small) answered `status` after `duration`.
pub fn http_request(method: &str, route: &str, status: u16, duration: Duration) {
    counter!(
        "busbar_http_requests_total",
        "method" => method.to_owned(),
        "route" => route.to_owned(),
        "status" => status.to_string()
    )
    .increment(1);
    histogram!(
        "busbar_http_request_duration_seconds",
        "method" => method.to_owned(),
        "route" => route.to_owned()
    )
    .record(duration.as_secs_f64());
}

/// The API read an API key from the database.
pub fn auth_lookup() {
    counter!("busbar_auth_lookups_total").increment(1);
}

/// The API refused a request with 401 `invalid-key`.
pub fn auth_failed() {
    counter!("busbar_auth_failures_total").increment(1);
}

/// The API refused a request with 429: its address failed too often.
pub fn auth_throttled() {
    counter!("busbar_auth_throttled_total").increment(1);
}

/// One integration's figures at a scrape, as [`render_integrations`] writes
/// them (read from the database by the caller).
#[derive(Debug, Clone, Default)]
pub struct IntegrationSample {
    /// The integration's id (the `integration` label).
    pub integration: String,
    /// The database it writes to (`busbar`, or a name of databases.yaml).
    pub database: String,
    /// Its effective state: `enabled`, `paused` or `disabled`.
    pub state: &'static str,
    /// Events its lanes have not passed plus delivery rows still open.
    pub backlog: i64,
    /// Age of the oldest event not yet applied, in seconds (0: none waits).
    pub lag_seconds: f64,
    /// Delivery rows waiting behind a blocked key (or replayed).
    pub pending: i64,
    /// Delivery rows with another attempt scheduled.
    pub retrying: i64,
    /// Dead delivery rows (dead letters not replayed).
    pub dead: i64,
    /// Order keys held back by a retrying (or blocking dead) delivery.
    pub blocked_keys: i64,
}

/// The states `busbar_integration_state` has a series for.
const STATES: [&str; 3] = ["enabled", "paused", "disabled"];

/// The figures read at a scrape, in the Prometheus text format, to append
/// to the recorder's own output: `database_up` says whether the read
/// worked (without it, `samples` is empty and only that gauge is written);
/// `held` is, per source product, the committed events no tick sees yet
/// (`store::figures::held_by_horizon`).
///
/// `databases` are the other databases of databases.yaml and whether each
/// answered busbar's last statement.
pub fn render_integrations(
    samples: &[IntegrationSample],
    held: &[(String, i64)],
    database_up: bool,
    databases: &[(String, bool)],
) -> String {
    let mut out = String::new();
    let mut family = |name: &str, help: &str, lines: &mut dyn FnMut(&mut String)| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        lines(&mut out);
    };
    family(
        "busbar_database_up",
        "1 when the database answers: busbar's own (database=\"busbar\") this scrape's reads, the others of databases.yaml busbar's last statement; 0 when it does not (for busbar's own, the integration figures are then missing; for another, the integrations writing there wait).",
        &mut |out| {
            let _ = writeln!(
                out,
                "busbar_database_up{{database=\"busbar\"}} {}",
                u8::from(database_up)
            );
            for (name, up) in databases {
                let _ = writeln!(
                    out,
                    "busbar_database_up{{database=\"{}\"}} {}",
                    escape(name),
                    u8::from(*up)
                );
            }
        },
    );
    if samples.is_empty() {
        return out;
    }
    family(
        "busbar_database_lag_seconds",
        "Per database written to (busbar's own and those of databases.yaml), the largest busbar_integration_lag_seconds of the integrations writing there.",
        &mut |out| {
            let mut lags: Vec<(&str, f64)> = Vec::new();
            for sample in samples {
                match lags.iter_mut().find(|(name, _)| *name == sample.database) {
                    Some((_, lag)) => *lag = lag.max(sample.lag_seconds),
                    None => lags.push((&sample.database, sample.lag_seconds)),
                }
            }
            lags.sort_by(|a, b| a.0.cmp(b.0));
            for (name, lag) in lags {
                let _ = writeln!(
                    out,
                    "busbar_database_lag_seconds{{database=\"{}\"}} {lag:.3}",
                    escape(name)
                );
            }
        },
    );
    family(
        "busbar_log_held_events",
        "Events of a source product committed but not in a tick yet (lanes read them once the ticker has made one after their commit; above 0 for more than moments means the ticker is behind or failing; PostgreSQL, always 0 on SQLite).",
        &mut |out| {
            for (source, count) in held {
                let _ = writeln!(
                    out,
                    "busbar_log_held_events{{source=\"{}\"}} {count}",
                    escape(source)
                );
            }
        },
    );
    family(
        "busbar_integration_state",
        "1 for the integration's current state (enabled, paused or disabled), 0 for the others.",
        &mut |out| {
            for sample in samples {
                for state in STATES {
                    let _ = writeln!(
                        out,
                        "busbar_integration_state{{integration=\"{}\",state=\"{state}\"}} {}",
                        escape(&sample.integration),
                        u8::from(sample.state == state)
                    );
                }
            }
        },
    );
    let mut gauge = |name: &str, help: &str, value: &dyn Fn(&IntegrationSample) -> String| {
        family(name, help, &mut |out| {
            for sample in samples {
                let _ = writeln!(
                    out,
                    "{name}{{integration=\"{}\"}} {}",
                    escape(&sample.integration),
                    value(sample)
                );
            }
        });
    };
    gauge(
        "busbar_integration_backlog_events",
        "Work not done yet: events the integration's lanes have not passed (counted up to 1000 per lane) plus delivery rows pending or retrying.",
        &|s| s.backlog.to_string(),
    );
    gauge(
        "busbar_integration_lag_seconds",
        "Age of the oldest event the integration has not applied yet (not passed by its lanes, or with a pending or retrying delivery), in seconds; 0 when nothing waits.",
        &|s| format!("{:.3}", s.lag_seconds),
    );
    gauge(
        "busbar_integration_blocked_keys",
        "Order keys whose later events wait behind a retrying delivery (or a dead one, with on_dead: block).",
        &|s| s.blocked_keys.to_string(),
    );
    family(
        "busbar_integration_deliveries",
        "Delivery rows by state: pending (waiting behind a key, replayed or redelivered), retrying (another attempt scheduled), dead (dead letters not replayed).",
        &mut |out| {
            for sample in samples {
                for (status, count) in [
                    ("pending", sample.pending),
                    ("retrying", sample.retrying),
                    ("dead", sample.dead),
                ] {
                    let _ = writeln!(
                        out,
                        "busbar_integration_deliveries{{integration=\"{}\",status=\"{status}\"}} {count}",
                        escape(&sample.integration)
                    );
                }
            }
        },
    );
    out
}

/// A label value as the text format writes it.
/// What delivery waits on outside busbar, as `(kind, age in seconds)` per
/// session (`store::activity::blockers`, read by the scrape): per kind
/// (`lock`, `transaction`), how many sessions and the age of the oldest
/// one's transaction. Both kinds are always present (0 when nothing
/// waits, and on SQLite).
pub fn render_waiting_on(blockers: &[(&str, f64)]) -> String {
    let mut out = String::new();
    let kinds = ["lock", "transaction"];
    let _ = writeln!(
        out,
        "# HELP busbar_waiting_on_sessions Sessions in busbar's database that delivery waits on: `lock`, holding a lock a busbar connection waits for; `transaction`, a transaction that has held a transaction id for more than 5 s (its events and the rows it locks wait for its commit). The status API's waiting_on names them."
    );
    let _ = writeln!(out, "# TYPE busbar_waiting_on_sessions gauge");
    for kind in kinds {
        let count = blockers.iter().filter(|(k, _)| *k == kind).count();
        let _ = writeln!(out, "busbar_waiting_on_sessions{{kind=\"{kind}\"}} {count}");
    }
    let _ = writeln!(
        out,
        "# HELP busbar_waiting_on_seconds Age of the oldest transaction among the sessions of busbar_waiting_on_sessions, 0 when there is none."
    );
    let _ = writeln!(out, "# TYPE busbar_waiting_on_seconds gauge");
    for kind in kinds {
        let oldest = blockers
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, age)| *age)
            .fold(0.0_f64, f64::max);
        let _ = writeln!(
            out,
            "busbar_waiting_on_seconds{{kind=\"{kind}\"}} {oldest:.3}"
        );
    }
    out
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
