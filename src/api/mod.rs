//! The HTTP API: axum routes over the [`Engine`], one file per resource.
//!
//! - `events.rs`: `POST /api/events`, `GET /api/integrations/events[/{id}]`
//! - `integrations.rs`: status, enable and disable
//! - `deliveries.rs`: replay, one delivery or an integration's dead ones
//! - `redeliver.rs`: redeliver an integration's deliveries by filter
//! - `health.rs`, `metrics.rs`, `openapi.rs`: operations
//! - `auth.rs`: API keys as extractors ([`auth::Publisher`], [`auth::Reader`],
//!   [`auth::Admin`]), so no handler can forget to check them; the key
//!   cache and the limit on failed authentications per address
//! - `json.rs`: [`Json`], bodies read with repeated keys refused
//! - `error.rs`: [`ApiError`], the one `application/problem+json` answer
//!
//! Only this module knows HTTP. Handlers translate requests into engine and
//! store calls and their results into JSON; they hold no state of their own
//! beyond the cheap handles in [`AppState`].

mod auth;
mod deliveries;
mod error;
mod events;
mod health;
mod integrations;
mod json;
mod metrics;
mod openapi;
mod redeliver;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Request};
use axum::http::{HeaderName, Response};
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{BoxError, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::engine::Engine;
use crate::telemetry;

/// The last configuration load's outcome, which the status shows.
pub use crate::reload::{ReloadError, ReloadOutcome};
pub use auth::{Caller, KeyCache, MAX_STRANGER_LOOKUPS};
pub use error::{ApiError, BodyRefused, DatabaseUnavailable, FieldError, KeyRefused, Problem};
pub use json::{Json, duplicate_keys};
pub use openapi::openapi_json;

/// The request id header: a caller's own id is kept when it is safe to log
/// ([`is_safe_request_id`]); otherwise, and when there is none, busbar
/// makes one. Copied to every response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id a caller may choose.
pub const MAX_REQUEST_ID: usize = 128;

/// Whether a caller's request id may be kept: 1 to [`MAX_REQUEST_ID`]
/// characters from `A-Z a-z 0-9 . _ : -`. Ids are written verbatim into
/// logs and answers, so nothing else is taken: no spaces or `=` that would
/// forge fields in text logs, no control characters, nothing unbounded.
pub fn is_safe_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Which events `POST /api/events` accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ContractPolicy {
    /// Every well-formed event; those with a contract must fit it. A bus
    /// takes events nobody routes yet (the answer's `routed` says so).
    #[default]
    Open,
    /// Only events with a contract (`<contracts>/<source>/<event>.json`):
    /// others are refused with 422 `no-contract`. Events emitted by
    /// integrations, and rows products insert into the outbox, are not
    /// affected.
    Strict,
}

/// Limits and timings of the API.
#[derive(Debug, Clone, Copy)]
pub struct ApiConfig {
    /// The largest request body accepted, in bytes.
    pub body_limit: usize,
    /// A request still running after this is answered 503 and abandoned.
    pub request_timeout: Duration,
    /// How long a verified API key is trusted without asking the database
    /// again (a revoked key keeps working at most this long); also how long
    /// an unknown key's prefix is remembered as unknown.
    pub key_cache_ttl: Duration,
    /// Which events publishing accepts.
    pub contract_policy: ContractPolicy,
    /// After this many failed authentications from one address within
    /// `auth_failure_window`, keys never seen valid get 429 from that
    /// address until the window ends (0: no limit).
    pub auth_failure_limit: u32,
    pub auth_failure_window: Duration,
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            body_limit: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            key_cache_ttl: Duration::from_secs(5),
            contract_policy: ContractPolicy::Open,
            auth_failure_limit: 20,
            auth_failure_window: Duration::from_secs(60),
        }
    }
}

/// The most events one `POST /api/events` may carry.
pub const MAX_BATCH: usize = 1000;

/// What every handler may use: cheap handles, cloned per request.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    /// The last configuration load's outcome.
    pub reload: Arc<ArcSwap<ReloadOutcome>>,
    pub keys: Arc<KeyCache>,
    pub metrics: PrometheusHandle,
    pub config: ApiConfig,
    /// Cancelled when the server starts shutting down: `/readyz` then
    /// answers 503 so load balancers stop sending requests.
    pub draining: CancellationToken,
    /// Reloads the configuration on `POST /api/integrations/reload`;
    /// absent where no directory is watched (reloading then answers 503).
    pub reloader: Option<Arc<crate::reload::Reloader>>,
}

impl AppState {
    /// State for serving `engine`, whose initial generation loaded with
    /// `reload`.
    pub fn new(engine: Engine, reload: Arc<ArcSwap<ReloadOutcome>>, config: ApiConfig) -> AppState {
        AppState {
            engine,
            reload,
            keys: Arc::new(
                KeyCache::new(config.key_cache_ttl)
                    .with_failure_limit(config.auth_failure_limit, config.auth_failure_window),
            ),
            metrics: telemetry::install(),
            config,
            draining: CancellationToken::new(),
            reloader: None,
        }
    }

    /// Serves `POST /api/integrations/reload` with `reloader`, and shows its
    /// outcomes in the status.
    pub fn with_reloader(mut self, reloader: Arc<crate::reload::Reloader>) -> AppState {
        let shown = self.reload.clone();
        reloader.observe(move |outcome| shown.store(Arc::new(outcome.clone())));
        self.reloader = Some(reloader);
        self
    }
}

/// The whole API and `pages` (the console's, merged by
/// [`crate::serve::app`]), with the API's middleware: request ids,
/// tracing, timeouts, body limit, panics caught as opaque 500s, and
/// request metrics.
pub fn router(state: AppState, pages: Router<AppState>) -> Router {
    let config = state.config;
    Router::new()
        .route("/api/events", post(events::publish))
        .route("/api/integrations/status", get(integrations::status))
        .route("/api/integrations/reload", post(integrations::reload))
        .route("/api/integrations/events", get(events::list))
        .route("/api/integrations/events/{id}", get(events::get))
        .route(
            "/api/integrations/{source}/{target}/enable",
            post(integrations::enable),
        )
        .route(
            "/api/integrations/{source}/{target}/disable",
            post(integrations::disable),
        )
        .route(
            "/api/integrations/{source}/{target}/pause",
            post(integrations::pause),
        )
        .route(
            "/api/integrations/{source}/{target}/resume",
            post(integrations::resume),
        )
        .route(
            "/api/integrations/deliveries/{id}/replay",
            post(deliveries::replay),
        )
        .route(
            "/api/integrations/deliveries/{id}/skip",
            post(deliveries::skip),
        )
        .route(
            "/api/integrations/{integration}/replay",
            post(deliveries::replay_integration),
        )
        .route(
            "/api/integrations/{integration}/redeliver",
            post(redeliver::redeliver),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(openapi::document))
        .merge(pages)
        .route_layer(middleware::from_fn(detached))
        .route_layer(middleware::from_fn(record_request))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(config.body_limit))
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .map_request(drop_unsafe_request_id)
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_request(())
                        .on_response(log_response)
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(CatchPanicLayer::custom(|_| {
                    ApiError::internal("a request handler panicked").into_response()
                }))
                .layer(HandleErrorLayer::new(|_: BoxError| async {
                    ApiError::timeout()
                }))
                .timeout(config.request_timeout),
        )
}

/// Runs the handler in a task of its own, so that a client that hangs up or
/// a request that times out never cancels it halfway through a database
/// transaction: the handler runs to its end (its answer is then dropped)
/// and its connection goes back to the pool clean.
async fn detached(request: Request, next: Next) -> Response<axum::body::Body> {
    use tracing::Instrument;
    let handler = next.run(request).instrument(Span::current());
    match tokio::spawn(handler).await {
        Ok(response) => response,
        Err(error) => {
            ApiError::internal(format!("a request handler failed: {error}")).into_response()
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops
/// accepting connections and waits for the requests in flight. Each
/// request knows its peer's address (for the limit on failed
/// authentications).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Removes a caller's `x-request-id` unless it is one safe id, so that
/// [`SetRequestIdLayer`] makes a fresh one.
fn drop_unsafe_request_id<B>(mut request: axum::http::Request<B>) -> axum::http::Request<B> {
    let headers = request.headers_mut();
    let mut ids = headers.get_all(&REQUEST_ID).iter();
    let keep = match (ids.next(), ids.next()) {
        (Some(id), None) => is_safe_request_id(id.as_bytes()),
        (None, _) => true,
        (Some(_), Some(_)) => false,
    };
    if !keep {
        headers.remove(&REQUEST_ID);
    }
    request
}

fn request_span(request: &Request) -> Span {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path())
}

fn log_response<B>(response: &Response<B>, latency: Duration, _: &Span) {
    let status = response.status().as_u16();
    let millis = latency.as_secs_f64() * 1e3;
    if response.status().is_server_error() {
        tracing::error!(status, millis, "request failed");
    } else {
        tracing::debug!(status, millis, "request finished");
    }
}

/// Counts the request and its latency by route pattern.
async fn record_request(request: Request, next: Next) -> impl IntoResponse {
    let start = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let response = next.run(request).await;
    if method == axum::http::Method::POST && route == "/api/events" {
        telemetry::publish_answered(response.status().as_u16());
    }
    telemetry::http_request(
        method.as_str(),
        &route,
        response.status().as_u16(),
        start.elapsed(),
    );
    response
}

async fn not_found() -> ApiError {
    ApiError::not_found(
        "route-not-found",
        "there is no such endpoint; see /openapi.json",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "this endpoint does not take that method; see /openapi.json",
    )
}

/// `axum::extract::Path` with its rejections as problem+json.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` with its rejections as problem+json.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);
