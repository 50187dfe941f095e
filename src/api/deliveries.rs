//! Deliveries: how they look in answers, replaying dead ones
//! (`POST /api/integrations/deliveries/{id}/replay`, and in bulk
//! `POST /api/integrations/{integration}/replay`), and skipping one with a
//! reason (`POST /api/integrations/deliveries/{id}/skip`).
//!
//! An organization's admin key replays only its own organization's
//! deliveries; another organization's delivery is "not found".

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::{Admin, Caller};
use super::error::{ApiError, BodyRefused, DatabaseUnavailable, FieldError, KeyRefused, Problem};
use super::{AppState, Json, Path, Query};
use crate::store::events::{self, Status};
use crate::store::lanes::ReplayFilter;

/// A delivery, as answers show it (`Delivery` in the OpenAPI document).
pub use crate::store::events::DeliveryView as Delivery;
/// A delivery's state (`DeliveryStatus` in the OpenAPI document).
pub use crate::store::events::Status as DeliveryStatus;

/// A replayed delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct Replayed {
    pub id: Uuid,
    /// Always `pending`: the delivery is queued again.
    pub status: DeliveryStatus,
}

/// The dead deliveries of an integration, replayed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayedIntegration {
    pub integration: String,
    /// How many dead deliveries were queued again.
    pub replayed: u64,
}

/// Options of a bulk replay.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReplayQuery {
    /// For platform keys: only this organization's deliveries. An
    /// organization key always replays only its own.
    organization_id: Option<Uuid>,
}

/// Replay one dead delivery: it is queued again with a fresh retry budget.
#[utoipa::path(
    post,
    path = "/api/integrations/deliveries/{id}/replay",
    tag = "deliveries",
    params(("id" = Uuid, Path, description = "The delivery id.")),
    responses(
        (status = 202, description = "Queued again.", body = Replayed),
        KeyRefused,
        (status = 400, description = "The id is not a UUID.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the `admin` scope.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such delivery in the caller's organization.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The delivery is not dead: only dead deliveries are replayed.", body = Problem, content_type = "application/problem+json"),
        DatabaseUnavailable,
    ),
    security(("api_key" = []))
)]
pub async fn replay(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<(StatusCode, Json<Replayed>), ApiError> {
    find_dead(&state, &caller, id, "replayed").await?;
    // The organization filter again, in the update itself.
    if !state
        .engine
        .replay_delivery(id, caller.organization)
        .await?
    {
        // It changed since we read it (replayed or skipped by someone else).
        return Err(not_dead(id, "replayed", "no longer dead"));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(Replayed {
            id,
            status: DeliveryStatus::Pending,
        }),
    ))
}

/// The longest skip reason accepted, in characters.
const MAX_REASON: usize = 1000;

/// Why a dead delivery is skipped.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SkipBody {
    /// Why it is given up on (recorded with the delivery, shown by the API
    /// and the console): 1 to 1,000 characters.
    pub reason: String,
}

/// A skipped delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct Skipped {
    pub id: Uuid,
    /// Always `skipped`.
    pub status: DeliveryStatus,
    pub skip_reason: String,
    /// Who skipped it: `key <id>` of the API key used.
    pub skipped_by: String,
}

/// Skip one dead delivery: give up on it, with a reason.
///
/// The delivery becomes `skipped`; its failure stays in `last_error`, the
/// reason and the key that skipped it are recorded beside it. Nothing is
/// written to the target. With `on_dead: block`, the deliveries of its key
/// that waited behind it go on. A skipped delivery can still be run again
/// later by a redelivery that selects `skipped`.
#[utoipa::path(
    post,
    path = "/api/integrations/deliveries/{id}/skip",
    tag = "deliveries",
    params(("id" = Uuid, Path, description = "The delivery id.")),
    request_body = SkipBody,
    responses(
        (status = 200, description = "Skipped.", body = Skipped),
        KeyRefused,
        (status = 400, description = "The id is not a UUID, or malformed JSON.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the `admin` scope.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such delivery in the caller's organization.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The delivery is not dead: only dead deliveries are skipped.", body = Problem, content_type = "application/problem+json"),
        BodyRefused,
        (status = 422, description = "No reason, an empty one, or one longer than 1,000 characters (`invalid-body`).", body = Problem, content_type = "application/problem+json"),
        DatabaseUnavailable,
    ),
    security(("api_key" = []))
)]
pub async fn skip(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Json(body): Json<SkipBody>,
) -> Result<(StatusCode, Json<Skipped>), ApiError> {
    let reason = body.reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON {
        return Err(ApiError::invalid(
            "invalid-body",
            "the delivery was not skipped: the reason is missing or too long",
            vec![FieldError {
                pointer: "/reason".into(),
                message: format!("a reason of 1 to {MAX_REASON} characters is required"),
            }],
        ));
    }
    find_dead(&state, &caller, id, "skipped").await?;
    let by = format!("key {}", caller.key_id);
    let filter = ReplayFilter {
        delivery: Some(id),
        organization: caller.organization,
        ..ReplayFilter::default()
    };
    if state.engine.skip(filter, reason, &by).await? == 0 {
        return Err(not_dead(id, "skipped", "no longer dead"));
    }
    tracing::info!(delivery = %id, key = %caller.key_id, reason, "dead delivery skipped");
    Ok((
        StatusCode::OK,
        Json(Skipped {
            id,
            status: DeliveryStatus::Skipped,
            skip_reason: reason.to_owned(),
            skipped_by: by,
        }),
    ))
}

/// The delivery `id` of the caller's organization, which must be dead to
/// be `done` (replayed, skipped).
async fn find_dead(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    done: &str,
) -> Result<(), ApiError> {
    let mut tx = state.engine.store().begin_read().await?;
    let delivery = events::get_delivery(&mut tx, caller.org_scope(), id).await?;
    tx.rollback().await?;
    let Some(delivery) = delivery else {
        return Err(ApiError::not_found(
            "delivery-not-found",
            format!("there is no delivery {id} in this key's organization"),
        ));
    };
    if delivery.status != Status::Dead {
        return Err(not_dead(id, done, delivery.status.as_str()));
    }
    Ok(())
}

fn not_dead(id: Uuid, done: &str, now: &str) -> ApiError {
    ApiError::conflict(
        "delivery-not-dead",
        format!("delivery {id} is {now}; only dead deliveries are {done}"),
    )
}

/// Replay every dead delivery of an integration.
#[utoipa::path(
    post,
    path = "/api/integrations/{integration}/replay",
    tag = "deliveries",
    params(("integration" = String, Path, description = "The integration id."), ReplayQuery),
    responses(
        (status = 202, description = "The dead deliveries are queued again (possibly none).", body = ReplayedIntegration),
        KeyRefused,
        (status = 400, description = "A bad query parameter.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the `admin` scope, or asks for another organization.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such integration in the live generation.", body = Problem, content_type = "application/problem+json"),
        DatabaseUnavailable,
    ),
    security(("api_key" = []))
)]
pub async fn replay_integration(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Path(integration): Path<String>,
    Query(query): Query<ReplayQuery>,
) -> Result<(StatusCode, Json<ReplayedIntegration>), ApiError> {
    let scope = caller.organization_scope(query.organization_id)?;
    if state
        .engine
        .generation()
        .integration(&integration)
        .is_none()
    {
        return Err(ApiError::not_found(
            "integration-not-found",
            format!("there is no integration `{integration}` in the live generation"),
        ));
    }
    let replayed = state
        .engine
        .replay_integration(&integration, scope.organization())
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ReplayedIntegration {
            integration,
            replayed,
        }),
    ))
}
