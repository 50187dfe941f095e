//! Metrics: the one place that names them. The engine and the API call the
//! functions here (`telemetry::event_published(n)`); `GET /metrics` renders
//! them in the Prometheus text format.
//!
//! Until [`install`] runs (the server calls it once per process) every
//! function is a no-op, so `check`, `render` and the tests pay nothing.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::delivery::Status;

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
        "Delivery attempts by outcome: delivered, skipped, dead, or pending (retry scheduled)."
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
        "Deliveries waiting to run (the queue depth), as of the last scrape."
    );
    describe_counter!(
        "busbar_reloads_total",
        "Configuration loads by outcome: ok or failed."
    );
    describe_gauge!("busbar_generation", "The number of the live generation.");
    describe_counter!(
        "busbar_http_requests_total",
        "HTTP requests by method, route and status."
    );
    describe_histogram!(
        "busbar_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request latency by method and route."
    );
    // Counters with a fixed label set show as zero before anything happens.
    for status in Status::ALL {
        counter!("busbar_deliveries_total", "outcome" => status.as_str()).absolute(0);
    }
    for outcome in ["ok", "failed"] {
        counter!("busbar_reloads_total", "outcome" => outcome).absolute(0);
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

/// A delivery attempt of `integration` ended with `status` (`Pending`: a
/// retry is scheduled) after running its route for `duration`.
pub fn delivery_finished(integration: &str, status: Status, duration: Duration) {
    counter!("busbar_deliveries_total", "outcome" => status.as_str()).increment(1);
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
    if ok {
        gauge!("busbar_last_reload_success_timestamp_seconds")
            .set(chrono::Utc::now().timestamp_millis() as f64 / 1e3);
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
