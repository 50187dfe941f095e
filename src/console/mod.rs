//! The operations console: `/console`, served by busbar on the API's port.
//!
//! Server-rendered HTML (minijinja templates embedded in the binary, like
//! the CSS and the one small script), signed in with an API key held in a
//! session cookie. The pages read well without JavaScript; the script only
//! refreshes the overview, streams the live tail (Server-Sent Events) and
//! ticks checkboxes. Every response carries a Content-Security-Policy that
//! forbids inline scripts and styles.
//!
//! - `session.rs`: signing in and out, the [`session::Viewer`] extractor
//!   (the signed-in key, its scopes and organization, the CSRF token)
//! - `data.rs`: every read and write the console makes — the one place to
//!   re-point at the delivery engine v2
//! - `overview.rs`, `integration.rs`, `events.rs`, `tail.rs`,
//!   `redeliver.rs`, `try_event.rs`: one file per page
//! - `view.rs`: the templates and the page frame
//! - `history.rs`: the charts' reads (per-minute history, delivery
//!   counters, the current figures)
//! - `flow.rs` (the flow graph as SVG), `chart.rs` (time-series charts and
//!   sparklines as SVG), `highlight.rs` (YAML and JSON), `causes.rs` (dead
//!   letters grouped by cause): pure helpers
//!
//! The console applies the API's rules: a `read` key sees, an `admin` key
//! acts, an organization's key sees and touches only its organization
//! (another organization's event is "not found"), and switching an
//! integration on or off needs a platform key. Every state-changing form
//! carries a CSRF token tied to the session.

pub mod causes;
pub mod chart;
pub mod data;
mod events;
pub mod flow;
pub mod highlight;
mod history;
mod integration;
mod overview;
mod redeliver;
mod session;
mod tail;
mod try_event;
mod view;

use axum::Router;
use axum::extract::{Path, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::api::AppState;

pub use session::Viewer;

/// The Content-Security-Policy of every console response: scripts and
/// styles only from busbar's own files, no inline ones, no frames.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The console's routes, which `serve::app` merges into the API's router.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(overview::page))
        .route("/console/", get(overview::page))
        .route(
            "/console/sign-in",
            get(session::sign_in_form).post(session::sign_in),
        )
        .route("/console/sign-out", post(session::sign_out))
        .route("/console/integrations/{id}", get(integration::page))
        .route(
            "/console/integrations/{id}/state",
            post(integration::change_state),
        )
        .route(
            "/console/integrations/{id}/replay",
            post(integration::replay),
        )
        .route("/console/integrations/{id}/skip", post(integration::skip))
        .route("/console/events", get(events::search))
        .route("/console/events/{id}", get(events::detail))
        .route("/console/tail", get(tail::page))
        .route("/console/tail/stream", get(tail::stream))
        .route(
            "/console/redeliver",
            get(redeliver::form).post(redeliver::submit),
        )
        .route("/console/try", get(try_event::form).post(try_event::run))
        .route("/console/assets/{file}", get(asset))
        .layer(middleware::from_fn(security_headers))
}

/// The headers every console answer carries.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The embedded static files.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("assets/favicon.svg"),
    ),
];

/// Serves an embedded asset (no session needed: they hold no data).
async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=300"),
                ),
            ],
            *body,
        )
            .into_response(),
        None => ConsoleError::not_found("There is no such file.").into_response(),
    }
}

/// A page that could not be shown, as an HTML page with the status.
#[derive(Debug)]
pub struct ConsoleError {
    status: StatusCode,
    title: &'static str,
    message: String,
}

impl ConsoleError {
    pub fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Self {
        ConsoleError {
            status,
            title,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ConsoleError::new(StatusCode::NOT_FOUND, "Not found", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ConsoleError::new(StatusCode::FORBIDDEN, "Not allowed", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ConsoleError::new(StatusCode::BAD_REQUEST, "Cannot do that", message)
    }
}

impl From<crate::store::StoreError> for ConsoleError {
    fn from(error: crate::store::StoreError) -> ConsoleError {
        if error.is_transient() {
            tracing::warn!(%error, "console: the database is unavailable");
            ConsoleError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Database unavailable",
                "The database did not answer. Try again in a moment.",
            )
        } else {
            tracing::error!(%error, "console: a database query failed");
            ConsoleError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "The page could not be read; the cause is in busbar's log.",
            )
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let body = view::render_error(self.status, self.title, &self.message);
        (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            body,
        )
            .into_response()
    }
}

/// A form's fields in order, repeated names kept (checkbox lists).
#[derive(Debug, Default)]
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    /// The first value of `name`, trimmed; `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for Fields {
    type Rejection = ConsoleError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ConsoleError> {
        let axum::Form(pairs) = axum::Form::<Vec<(String, String)>>::from_request(request, state)
            .await
            .map_err(|rejection| ConsoleError::bad_request(rejection.body_text()))?;
        Ok(Fields(pairs))
    }
}

/// The `Location` of a redirect after a form, as a 303.
pub fn see_other(location: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(
            header::LOCATION,
            HeaderValue::from_str(location).unwrap_or(HeaderValue::from_static("/console")),
        )],
    )
        .into_response()
}
