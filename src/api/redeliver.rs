//! Redeliver by filter (`POST /api/integrations/{integration}/redeliver`):
//! after a mapping fix, run an integration's deliveries that match a
//! filter again, with a preview count first. The engine does the work
//! ([`crate::engine::redeliver`]); this file translates HTTP.
//!
//! It needs the `admin` scope. An organization's key redelivers only its
//! organization's events (asking for another organization is refused); a
//! platform key chooses one organization or all.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::Admin;
use super::error::{ApiError, BodyRefused, DatabaseUnavailable, FieldError, KeyRefused, Problem};
use super::{AppState, Json, Path};
use crate::engine::redeliver::{
    RedeliverCount, RedeliverError, RedeliverFilter, RedeliverRequest, Redelivered,
};
use crate::store::events::Status;

/// The longest request id accepted (the same rule as `Idempotency-Key`).
const MAX_REQUEST_ID: usize = 180;

/// The states a redelivery selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RedeliverState {
    /// Applied: on the first pass (no row), or after a retry, a replay or
    /// an earlier redelivery.
    Delivered,
    /// Not applied on purpose (a guard, `missing: skip`, the integration
    /// disabled).
    Skipped,
    /// Failed for good.
    Dead,
}

impl From<RedeliverState> for Status {
    fn from(state: RedeliverState) -> Status {
        match state {
            RedeliverState::Delivered => Status::Delivered,
            RedeliverState::Skipped => Status::Skipped,
            RedeliverState::Dead => Status::Dead,
        }
    }
}

/// Which deliveries to run again, and whether only to count them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeliverBody {
    /// Only events of this name (the integration must route it).
    pub event: Option<String>,
    /// Only events stored at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only events stored before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only deliveries in these states; omitted or empty: all three.
    #[serde(default)]
    pub status: Vec<RedeliverState>,
    /// For platform keys: only this organization's events. An organization
    /// key always redelivers only its own.
    pub organization_id: Option<Uuid>,
    /// Makes the redelivery idempotent: the same id again answers with what
    /// the first request did and redelivers nothing (also accepted as the
    /// `Idempotency-Key` header). Up to 180 visible ASCII characters,
    /// unique per organization (platform keys share one namespace);
    /// remembered for 7 days.
    pub request_id: Option<String>,
    /// Only count what would be redelivered; change nothing.
    #[serde(default)]
    pub preview: bool,
    /// Of the matching deliveries, only the latest per order key (and
    /// route): each key's newest state, applied again.
    #[serde(default)]
    pub latest_per_key: bool,
    /// Only the matching deliveries of this event's order key, from this
    /// event on, in order: one key's history replayed from a point. Not
    /// with `latest_per_key`.
    pub from_event: Option<Uuid>,
}

/// What a redelivery did, or would do.
#[derive(Debug, Serialize, ToSchema)]
pub struct RedeliverAnswer {
    pub integration: String,
    /// True for a preview: nothing was changed.
    pub preview: bool,
    /// Events matched (a preview) or redelivered.
    pub events: u64,
    /// Their deliveries: one per event and route of the integration for
    /// it (usually one per event).
    pub deliveries: u64,
    pub request_id: Option<String>,
    /// A preview's warning: of the deliveries counted, how many have a
    /// newer applied event of their order key that is not redelivered with
    /// them, so that after the redelivery their key holds an older event's
    /// writes. 0 in a redelivery's answer.
    pub newer_applied: u64,
    /// The request id had been used already: nothing was redelivered by
    /// this request; the counts are what the first one did.
    pub repeated: bool,
    /// False while another request with this id is still writing the
    /// redelivery: the counts are its progress so far; ask again.
    pub finished: bool,
}

/// Run an integration's deliveries that match a filter again.
///
/// After a fix (a mapping changed by a reload, a missing row added), the
/// deliveries of `integration` whose events match `event`, the time range
/// (when the event was stored) and the organization, and whose state is
/// one of `status` (`delivered`, `skipped`, `dead`), run again on the live
/// generation. Send `"preview": true` first to see how many.
///
/// Only events the integration's lanes have already passed are
/// redelivered: later ones are still on their way and run on the live
/// generation anyway. Redelivered deliveries run in the integration's
/// order: per order key, in publish order, before any later event of the
/// key. While a redelivery is being written, the integration's own
/// deliveries wait (on PostgreSQL; on SQLite every write waits).
#[utoipa::path(
    post,
    path = "/api/integrations/{integration}/redeliver",
    tag = "deliveries",
    params(
        ("integration" = String, Path, description = "The integration id."),
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,180}$", description = "The same as `request_id` in the body."),
    ),
    request_body = RedeliverBody,
    responses(
        (status = 200, description = "A preview: how many would be redelivered.", body = RedeliverAnswer),
        (status = 202, description = "Redelivered: the deliveries are queued in their lanes (or, with `repeated`, were by an earlier request with this id).", body = RedeliverAnswer),
        KeyRefused,
        (status = 400, description = "Malformed JSON, or a bad request id (`invalid-request-id`).", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the `admin` scope, or asks for another organization.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such integration in the live generation.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The integration is disabled (`integration-disabled`), or the request id was used with another filter (`request-id-reused`).", body = Problem, content_type = "application/problem+json"),
        BodyRefused,
        (status = 422, description = "An unknown field, a state other than delivered, skipped and dead, or both `latest_per_key` and `from_event` (`invalid-body`), no route for `event` in the integration (`event-not-routed`), `from_event` not an event of the integration's source (`event-not-found`), or `since` not before `until` (`empty-time-range`).", body = Problem, content_type = "application/problem+json"),
        DatabaseUnavailable,
    ),
    security(("api_key" = []))
)]
pub async fn redeliver(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Path(integration): Path<String>,
    headers: HeaderMap,
    Json(body): Json<RedeliverBody>,
) -> Result<(StatusCode, Json<RedeliverAnswer>), ApiError> {
    let scope = caller.organization_scope(body.organization_id)?;
    let request_id = request_id(&headers, body.request_id.as_deref())?;
    if let (Some(since), Some(until)) = (body.since, body.until)
        && since >= until
    {
        return Err(ApiError::invalid(
            "empty-time-range",
            "`since` must be before `until`",
            vec![FieldError {
                pointer: "/until".into(),
                message: "not after `since`".into(),
            }],
        ));
    }
    let filter = RedeliverFilter {
        integration: integration.clone(),
        event: body.event,
        since: body.since,
        until: body.until,
        statuses: body.status.into_iter().map(Status::from).collect(),
        latest_per_key: body.latest_per_key,
        from_event: body.from_event,
        organization: scope.organization(),
    };
    if body.preview {
        let count = state
            .engine
            .redeliver_preview(&filter)
            .await
            .map_err(problem)?;
        return Ok((
            StatusCode::OK,
            Json(answer(integration, true, count, request_id, false, true)),
        ));
    }
    let done: Redelivered = state
        .engine
        .redeliver(
            RedeliverRequest {
                filter,
                request_id,
                caller: caller.organization,
            },
            None,
        )
        .await
        .map_err(problem)?;
    tracing::info!(
        integration = %integration,
        events = done.count.events,
        repeated = done.repeated,
        key = %caller.key_id,
        "redeliver requested"
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(answer(
            integration,
            false,
            done.count,
            done.request_id,
            done.repeated,
            done.finished,
        )),
    ))
}

fn answer(
    integration: String,
    preview: bool,
    count: RedeliverCount,
    request_id: Option<String>,
    repeated: bool,
    finished: bool,
) -> RedeliverAnswer {
    RedeliverAnswer {
        integration,
        preview,
        events: count.events,
        deliveries: count.deliveries,
        request_id,
        newer_applied: count.newer_applied,
        repeated,
        finished,
    }
}

/// The request id of the body or the `Idempotency-Key` header (the same
/// one if both are sent).
fn request_id(headers: &HeaderMap, body: Option<&str>) -> Result<Option<String>, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid-request-id",
            format!("a request id must be 1 to {MAX_REQUEST_ID} visible ASCII characters"),
        )
    };
    let header = match headers.get("idempotency-key") {
        Some(value) => Some(value.to_str().map_err(|_| bad())?),
        None => None,
    };
    let id = match (body, header) {
        (Some(body), Some(header)) if body != header => {
            return Err(ApiError::bad_request(
                "invalid-request-id",
                "`request_id` and the Idempotency-Key header differ; send one",
            ));
        }
        (Some(id), _) | (None, Some(id)) => id,
        (None, None) => return Ok(None),
    };
    if (1..=MAX_REQUEST_ID).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(Some(id.to_owned()))
    } else {
        Err(bad())
    }
}

/// The engine's refusal as a problem.
fn problem(error: RedeliverError) -> ApiError {
    let detail = error.to_string();
    match error {
        RedeliverError::UnknownIntegration(_) => {
            ApiError::not_found("integration-not-found", detail)
        }
        RedeliverError::NotRouted { .. } => ApiError::invalid(
            "event-not-routed",
            detail,
            vec![FieldError {
                pointer: "/event".into(),
                message: "the integration has no route for it".into(),
            }],
        ),
        RedeliverError::State(_) => ApiError::invalid("invalid-status", detail, Vec::new()),
        RedeliverError::Disabled(_) => ApiError::conflict("integration-disabled", detail),
        RedeliverError::RequestReused(_) => ApiError::conflict("request-id-reused", detail),
        RedeliverError::TwoModes => ApiError::invalid(
            "invalid-body",
            detail,
            vec![FieldError {
                pointer: "/from_event".into(),
                message: "not with `latest_per_key`".into(),
            }],
        ),
        RedeliverError::UnknownEvent(_) => ApiError::invalid(
            "event-not-found",
            detail,
            vec![FieldError {
                pointer: "/from_event".into(),
                message: "no such event of the integration's source".into(),
            }],
        ),
        RedeliverError::Store(error) => error.into(),
    }
}
