//! Integrations: their status (`GET /api/integrations/status`) and
//! switching them on and off (`POST /api/integrations/{source}/{target}/enable`
//! and `/disable`).
//!
//! Enabling and disabling change busbar for every organization, so they
//! need a platform key with the `admin` scope. The state is persisted: it
//! survives restarts and reloads.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::{Admin, Reader};
use super::error::{ApiError, Problem};
use super::events::DeliveryCounts;
use super::{AppState, Json, Path, Query, ReloadOutcome};
use crate::store::events;

/// Every integration of the live generation, and the last reload.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusReport {
    /// The live generation's number.
    pub generation: u64,
    /// The organization the delivery counts are for (null: every
    /// organization, for a platform key).
    pub organization_id: Option<Uuid>,
    pub integrations: Vec<IntegrationStatus>,
    /// The last configuration load.
    pub reload: ReloadOutcome,
}

/// One integration.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationStatus {
    pub id: String,
    pub source: String,
    pub target: String,
    pub description: Option<String>,
    /// Whether it takes new events now: its YAML enables it and the API
    /// has not disabled it.
    pub enabled: bool,
    /// `enabled:` in its YAML file.
    pub enabled_in_yaml: bool,
    /// The state set through the API (null: never set, which means enabled).
    pub persisted_state: Option<bool>,
    /// The generation it belongs to.
    pub generation: u64,
    /// The event names it has routes for.
    pub events: Vec<String>,
    /// Its deliveries by state.
    pub deliveries: DeliveryCounts,
    /// Its most recent failure (a dead delivery, or a pending one that will
    /// retry), if any.
    pub last_error: Option<LastError>,
}

/// The most recent failure of an integration.
#[derive(Debug, Serialize, ToSchema)]
pub struct LastError {
    pub message: String,
    /// When it happened.
    pub at: DateTime<Utc>,
    pub delivery_id: Uuid,
    pub event_id: Uuid,
    /// The step (1-based) it failed at, when known.
    pub step: Option<i32>,
}

/// The integrations an enable or disable changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Switched {
    pub source: String,
    pub target: String,
    pub integrations: Vec<SwitchedIntegration>,
}

/// One integration after an enable or disable.
#[derive(Debug, Serialize, ToSchema)]
pub struct SwitchedIntegration {
    pub id: String,
    /// The state persisted by this request.
    pub persisted_state: bool,
    /// Whether it takes new events now (false despite an enable when its
    /// YAML says `enabled: false`).
    pub enabled: bool,
    pub enabled_in_yaml: bool,
}

/// Options of the status report.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatusQuery {
    /// For platform keys: count only this organization's deliveries. An
    /// organization key always sees only its own.
    organization_id: Option<Uuid>,
}

/// Every integration: enabled, generation, deliveries by state, last error;
/// and the last reload's outcome.
#[utoipa::path(
    get,
    path = "/api/integrations/status",
    tag = "integrations",
    params(StatusQuery),
    responses(
        (status = 200, description = "The status of every integration.", body = StatusReport),
        (status = 400, description = "A bad query parameter.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address: retry after `Retry-After` seconds.", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        (status = 403, description = "The key lacks the `read` scope, or asks for another organization.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn status(
    Reader(caller): Reader,
    State(state): State<AppState>,
    Query(query): Query<StatusQuery>,
) -> Result<Json<StatusReport>, ApiError> {
    let organization = caller.organization_scope(query.organization_id)?;
    let generation = state.engine.generation();
    let mut tx = state.engine.store().begin_read().await?;
    let counts = events::counts(&mut tx, organization).await?;
    let mut last_errors = events::last_errors(&mut tx, organization).await?;
    tx.rollback().await?;
    let integrations = generation
        .integrations
        .iter()
        .map(|integration| {
            let mut events: Vec<String> = Vec::new();
            for route in &integration.routes {
                if !events.contains(&route.on) {
                    events.push(route.on.clone());
                }
            }
            IntegrationStatus {
                id: integration.id.clone(),
                source: integration.source.clone(),
                target: integration.target.clone(),
                description: integration.description.clone(),
                enabled: state.engine.is_enabled(&integration.id),
                enabled_in_yaml: integration.enabled,
                persisted_state: state.engine.persisted_state(&integration.id),
                generation: generation.number,
                events,
                deliveries: DeliveryCounts::from_map(counts.get(&integration.id)),
                last_error: last_errors.remove(&integration.id).map(|e| LastError {
                    message: e.message,
                    at: e.at,
                    delivery_id: e.delivery_id,
                    event_id: e.event_id,
                    step: e.step,
                }),
            }
        })
        .collect();
    Ok(Json(StatusReport {
        generation: generation.number,
        organization_id: organization,
        integrations,
        reload: (**state.reload.load()).clone(),
    }))
}

/// Enable every integration from `source` to `target`.
#[utoipa::path(
    post,
    path = "/api/integrations/{source}/{target}/enable",
    tag = "integrations",
    params(
        ("source" = String, Path, description = "The source product."),
        ("target" = String, Path, description = "The target product."),
    ),
    responses(
        (status = 200, description = "Enabled (persisted).", body = Switched),
        (status = 401, description = "No valid API key.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address: retry after `Retry-After` seconds.", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        (status = 403, description = "The key lacks the `admin` scope, or is bound to an organization.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No integration goes from `source` to `target`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn enable(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Path((source, target)): Path<(String, String)>,
) -> Result<Json<Switched>, ApiError> {
    switch(caller, state, source, target, true).await
}

/// Disable every integration from `source` to `target`: new events get no
/// deliveries for it, and its pending deliveries are skipped.
#[utoipa::path(
    post,
    path = "/api/integrations/{source}/{target}/disable",
    tag = "integrations",
    params(
        ("source" = String, Path, description = "The source product."),
        ("target" = String, Path, description = "The target product."),
    ),
    responses(
        (status = 200, description = "Disabled (persisted).", body = Switched),
        (status = 401, description = "No valid API key.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address: retry after `Retry-After` seconds.", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        (status = 403, description = "The key lacks the `admin` scope, or is bound to an organization.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No integration goes from `source` to `target`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database is unavailable.", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn disable(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Path((source, target)): Path<(String, String)>,
) -> Result<Json<Switched>, ApiError> {
    switch(caller, state, source, target, false).await
}

async fn switch(
    caller: super::Caller,
    state: AppState,
    source: String,
    target: String,
    enabled: bool,
) -> Result<Json<Switched>, ApiError> {
    caller.require_platform()?;
    let ids = state
        .engine
        .set_enabled_pair(&source, &target, enabled)
        .await?;
    if ids.is_empty() {
        return Err(ApiError::not_found(
            "integration-not-found",
            format!("no integration of the live generation goes from `{source}` to `{target}`"),
        ));
    }
    let generation = state.engine.generation();
    let integrations = ids
        .into_iter()
        .map(|id| SwitchedIntegration {
            persisted_state: enabled,
            enabled: state.engine.is_enabled(&id),
            enabled_in_yaml: generation.integration(&id).is_some_and(|i| i.enabled),
            id,
        })
        .collect();
    tracing::info!(%source, %target, enabled, key = %caller.key_id, "integrations switched");
    Ok(Json(Switched {
        source,
        target,
        integrations,
    }))
}

/// Reload the integrations directory now (as a file change or SIGHUP
/// would): compile it, and make it live if it compiles.
#[utoipa::path(
    post,
    path = "/api/integrations/reload",
    tag = "integrations",
    responses(
        (status = 200, description = "The directory compiled; the new generation is live.", body = ReloadOutcome),
        (status = 401, description = "No valid API key.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address: retry after `Retry-After` seconds.", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
        (status = 403, description = "The key lacks the `admin` scope, or is bound to an organization.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The directory does not compile; the live generation stays. `errors` lists every problem as `file:line:col [code]`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "This server does not reload (no directory is watched).", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn reload(
    Admin(caller): Admin,
    State(state): State<AppState>,
) -> Result<Json<ReloadOutcome>, ApiError> {
    caller.require_platform()?;
    let Some(reloader) = state.reloader.clone() else {
        return Err(ApiError::unavailable(
            "reload-unavailable",
            "this server was started without an integrations directory to reload",
        ));
    };
    let outcome = reloader.reload(crate::reload::Trigger::Api).await;
    if outcome.ok {
        return Ok(Json(ReloadOutcome::from(&outcome)));
    }
    let errors = outcome
        .errors
        .iter()
        .map(|d| super::error::FieldError {
            pointer: format!(
                "{}:{}:{}",
                d.file.display(),
                d.position.line,
                d.position.column
            ),
            message: format!("{} [{}]", d.message, d.code),
        })
        .collect();
    Err(ApiError::invalid(
        "reload-failed",
        format!(
            "the integrations do not compile ({} error(s)); generation {} stays live",
            outcome.errors.len(),
            outcome.generation
        ),
        errors,
    ))
}
