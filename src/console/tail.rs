//! The live tail: `GET /console/tail` shows the latest activity (readable
//! without scripts) and `GET /console/tail/stream` streams events and
//! delivery outcomes as they happen, as Server-Sent Events, filtered by
//! integration and outcome. The stream is the engine's in-process activity
//! feed: it shows what this busbar process publishes and delivers (with
//! several processes on one database, each shows its own). It ends when
//! the session does (checked again every few seconds) and when busbar
//! shuts down.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use serde::{Deserialize, Serialize};

use super::data::{self, Activity, ActivityFeed};
use super::{ConsoleError, Viewer, view};
use crate::api::AppState;

/// The outcomes the tail can be filtered by.
const OUTCOMES: [&str; 5] = ["published", "delivered", "skipped", "retrying", "dead"];

/// How often the stream checks that its session is still valid.
const SESSION_CHECK: Duration = Duration::from_secs(5);
/// The most lines one tail shows a second. A tail is read by a person;
/// past this it says how many it left out (as `vector tap` samples), so a
/// watcher never costs the engine more than this many lines a second:
/// measured, five unlimited tails at 10,000 events a second took a fifth of
/// the engine's throughput (docs/BENCHMARKS.md).
const LINES_PER_SECOND: usize = 200;

/// The tail's filter.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct TailFilter {
    integration: String,
    outcome: String,
}

impl TailFilter {
    fn keeps(&self, activity: &Activity) -> bool {
        let integration = self.integration.trim();
        let outcome = self.outcome.trim();
        // With an integration chosen, only its deliveries' outcomes show
        // (a published event is not one integration's).
        let integration_ok =
            integration.is_empty() || activity.integration.as_deref() == Some(integration);
        let outcome_ok = outcome.is_empty() || activity.outcome == outcome;
        integration_ok && outcome_ok
    }
}

#[derive(Debug, Serialize)]
struct TailPage {
    filter: TailFilter,
    recent: Vec<Activity>,
    integrations: Vec<String>,
    outcomes: [&'static str; 5],
    stream: String,
}

/// `GET /console/tail`.
pub async fn page(
    viewer: Viewer,
    State(state): State<AppState>,
    Query(filter): Query<TailFilter>,
) -> Result<Html<String>, ConsoleError> {
    let recent = data::recent_activity(&state.engine, viewer.org_scope(), 100)
        .await?
        .into_iter()
        .filter(|a| filter.keeps(a))
        .take(50)
        .collect();
    let query = serde_urlencoded::to_string(&filter).unwrap_or_default();
    let content = TailPage {
        recent,
        integrations: state.engine.generation().integration_ids(),
        outcomes: OUTCOMES,
        stream: format!("/console/tail/stream?{query}"),
        filter,
    };
    view::page(&viewer, "tail.html", "tail", "Live tail", content)
}

struct Tail {
    feed: ActivityFeed,
    state: AppState,
    filter: TailFilter,
    headers: HeaderMap,
    checked: Instant,
    /// The current second, and the lines shown in it.
    window: Instant,
    shown: usize,
    /// Lines over the limit in the current second, not shown.
    left_out: usize,
}

/// `GET /console/tail/stream`: one `activity` event per thing that
/// happened, its data the activity as JSON.
pub async fn stream(
    viewer: Viewer,
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(filter): Query<TailFilter>,
) -> Response {
    let tail = Tail {
        feed: ActivityFeed::new(&state.engine, viewer.org_scope()),
        state,
        filter,
        headers,
        checked: Instant::now(),
        window: Instant::now(),
        shown: 0,
        left_out: 0,
    };
    Sse::new(activity(tail))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn activity(tail: Tail) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(tail, |mut tail| async move {
        loop {
            let wait = SESSION_CHECK.saturating_sub(tail.checked.elapsed());
            let received = tokio::select! {
                received = tail.feed.receive() => received,
                () = tokio::time::sleep(wait) => Some(Default::default()),
                () = tail.state.draining.cancelled() => return None,
            };
            // The engine stopped: so does the stream.
            let found = tail.feed.explain(received?).await;
            if tail.checked.elapsed() >= SESSION_CHECK {
                tail.checked = Instant::now();
                if !still_signed_in(&tail).await {
                    return None;
                }
            }
            let mut kept: Vec<Activity> = Vec::new();
            if tail.window.elapsed() >= Duration::from_secs(1) {
                tail.window = Instant::now();
                tail.shown = 0;
                // What the last busy second left out, said once.
                if tail.left_out > 0 {
                    kept.push(Activity::missed(format!(
                        "{} activities not shown: the tail shows at most {LINES_PER_SECOND} a second; filter it to see more of one integration or outcome",
                        std::mem::take(&mut tail.left_out)
                    )));
                }
            }
            kept.extend(
                found
                    .into_iter()
                    .filter(|a| a.outcome == "missed" || tail.filter.keeps(a)),
            );
            let room = LINES_PER_SECOND.saturating_sub(tail.shown);
            if kept.len() > room {
                tail.left_out += kept.len() - room;
                kept.truncate(room);
            }
            tail.shown += kept.len();
            let events: Vec<Result<Event, Infallible>> = kept
                .iter()
                .filter_map(|a| Event::default().event("activity").json_data(a).ok())
                .map(Ok)
                .collect();
            if !events.is_empty() {
                return Some((stream::iter(events), tail));
            }
        }
    })
    .flatten()
}

/// Whether the stream's session is still valid (not signed out, expired,
/// or its key revoked).
async fn still_signed_in(tail: &Tail) -> bool {
    let mut parts = axum::http::Request::builder()
        .uri("/console/tail/stream")
        .body(())
        .map(|r| r.into_parts().0)
        .expect("a request without a body builds");
    parts.headers = tail.headers.clone();
    <Viewer as axum::extract::FromRequestParts<AppState>>::from_request_parts(
        &mut parts,
        &tail.state,
    )
    .await
    .is_ok()
}
