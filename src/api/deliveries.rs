//! Deliveries: how they look in answers, and replaying dead ones
//! (`POST /api/integrations/deliveries/{id}/replay`, and in bulk
//! `POST /api/integrations/{integration}/replay`).
//!
//! An organization's admin key replays only its own organization's
//! deliveries; another organization's delivery is "not found".

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Admin;
use super::error::{ApiError, DatabaseUnavailable, KeyRefused, Problem};
use super::{AppState, Json, Path, Query};
use crate::store::events::{self, Status};

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
    let mut tx = state.engine.store().begin_read().await?;
    let delivery = events::get_delivery(&mut tx, caller.org_scope(), id).await?;
    tx.rollback().await?;
    let Some(delivery) = delivery else {
        return Err(ApiError::not_found(
            "delivery-not-found",
            format!("there is no delivery {id} in this key's organization"),
        ));
    };
    let not_dead = |status: Status| {
        ApiError::conflict(
            "delivery-not-dead",
            format!(
                "delivery {id} is {}; only dead deliveries are replayed",
                status.as_str()
            ),
        )
    };
    if delivery.status != Status::Dead {
        return Err(not_dead(delivery.status));
    }
    // The organization filter again, in the update itself.
    if !state
        .engine
        .replay_delivery(id, caller.organization)
        .await?
    {
        // It changed since we read it (replayed by someone else).
        return Err(not_dead(Status::Pending));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(Replayed {
            id,
            status: DeliveryStatus::Pending,
        }),
    ))
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
