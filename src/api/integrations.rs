//! Integrations: their status (`GET /api/integrations/status`) and their
//! state (`POST /api/integrations/{source}/{target}/enable`, `/disable`,
//! `/pause` and `/resume`).
//!
//! States change busbar for every organization, so they need a platform
//! key with the `admin` scope. The state is persisted: it survives
//! restarts and reloads, and every process sharing the database follows it.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::{Admin, Reader};
use super::error::{ApiError, DatabaseUnavailable, KeyRefused, Problem};
use super::events::DeliveryCounts;
use super::{AppState, Json, Path, Query, ReloadOutcome};
use crate::compile::OnDead;
use crate::engine::State as IntegrationState;
use crate::store::events::{self, BlockedKey};
use crate::store::lanes;
use crate::store::scope::OrgScope;
use crate::store::states::Node;
use crate::store::types::Time;

/// The most unread events counted per lane for the status (a larger
/// backlog shows as at least this many).
const BACKLOG_CAP: i64 = 10_000;

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
    /// The busbar processes sharing the database (heartbeat in the last
    /// 15 s).
    #[schema(value_type = Vec<Object>)]
    pub nodes: Vec<Node>,
    /// What delivery waits on outside busbar (PostgreSQL, platform keys
    /// only): sessions holding a lock a busbar connection waits for
    /// (`lock`), and transactions that have held a transaction id for more
    /// than 5 s (`transaction`: events they write, and rows they lock,
    /// wait for their commit), with pid, database, age and query.
    pub waiting_on: Vec<crate::store::activity::Blocker>,
    /// The other databases of `databases.yaml`, with their health (the
    /// error only for a platform key).
    pub databases: Vec<crate::store::targets::DatabaseStatus>,
}

/// One integration.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationStatus {
    pub id: String,
    pub source: String,
    pub target: String,
    pub description: Option<String>,
    /// `enabled` (delivering), `paused` (holding its events) or `disabled`
    /// (recording its deliveries as skipped): its YAML and the API's
    /// state together.
    pub state: String,
    /// Whether it delivers now (`state` is `enabled`).
    pub enabled: bool,
    /// `enabled:` in its YAML file.
    pub enabled_in_yaml: bool,
    /// The state set through the API (null: never set, which means enabled).
    pub persisted_state: Option<String>,
    /// Its ordering key (`order_by:`).
    pub order_by: String,
    /// `continue` or `block` (`on_dead:`).
    pub on_dead: String,
    /// Events its lanes have not reached yet (counted up to 10,000 per
    /// lane).
    pub backlog: i64,
    /// Age of the oldest event it has not applied yet, in seconds (0: none
    /// waits), as `busbar_integration_lag_seconds` says; null for an
    /// organization's key (the lanes are not split by organization).
    pub lag_seconds: Option<f64>,
    /// Deliveries in the last 5 minutes and the last hour.
    pub delivered_last_5m: i64,
    pub delivered_last_hour: i64,
    /// Keys held back by a retrying delivery (or a dead one, with
    /// `on_dead: block`): what they wait on and how many wait behind it.
    #[schema(value_type = Vec<Object>)]
    pub blocked_keys: Vec<BlockedKey>,
    /// The generation it belongs to.
    pub generation: u64,
    /// The event names it has routes for.
    pub events: Vec<String>,
    /// Its deliveries by state.
    pub deliveries: DeliveryCounts,
    /// Its most recent failure (a dead delivery, or a pending one that will
    /// retry), if any.
    pub last_error: Option<LastError>,
    /// The database it writes to: `busbar` (its own) or a name of
    /// `databases.yaml`.
    pub database: String,
    /// Set while that database, or one its `find`s read, is out of reach:
    /// the integration waits (no attempt counted, no dead letter) until it
    /// answers again.
    pub waiting_on_database: Option<WaitingOnDatabase>,
}

/// An integration waiting for its database.
#[derive(Debug, Serialize, ToSchema)]
pub struct WaitingOnDatabase {
    pub database: String,
    /// Since when it has been out of reach.
    pub since: DateTime<Utc>,
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

/// One integration after a state change.
#[derive(Debug, Serialize, ToSchema)]
pub struct SwitchedIntegration {
    pub id: String,
    /// The state persisted by this request.
    pub persisted_state: String,
    /// The state in effect (`disabled` despite an enable when its YAML
    /// says `enabled: false`).
    pub state: String,
    /// Whether it delivers now.
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
        KeyRefused,
        (status = 400, description = "A bad query parameter.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the `read` scope, or asks for another organization.", body = Problem, content_type = "application/problem+json"),
        DatabaseUnavailable,
    ),
    security(("api_key" = []))
)]
pub async fn status(
    Reader(caller): Reader,
    State(state): State<AppState>,
    Query(query): Query<StatusQuery>,
) -> Result<Json<StatusReport>, ApiError> {
    let scope = caller.organization_scope(query.organization_id)?;
    let generation = state.engine.generation();
    let backlog = state.engine.backlog(BACKLOG_CAP).await?;
    let figures = match scope {
        OrgScope::Platform => Some(
            crate::store::figures::read(
                state.engine.store(),
                &generation,
                super::metrics::BACKLOG_CAP,
            )
            .await?,
        ),
        OrgScope::Organization(_) => None,
    };
    let now = chrono::Utc::now();
    let mut tx = state.engine.store().begin_read().await?;
    let counts = events::counts(&mut tx, scope).await?;
    let mut last_errors =
        events::last_errors(&mut tx, scope, &generation.integration_ids()).await?;
    let last_5m =
        lanes::delivered_since(&mut tx, scope, Time(now - chrono::Duration::minutes(5))).await?;
    let last_hour =
        lanes::delivered_since(&mut tx, scope, Time(now - chrono::Duration::hours(1))).await?;
    // Deliveries without a row: the lanes count them (every organization),
    // the per-minute counters per organization (the last week).
    let first_pass: std::collections::HashMap<String, i64> = match scope {
        OrgScope::Platform => {
            let mut totals = std::collections::HashMap::new();
            for lane in lanes::all(&mut tx).await? {
                *totals.entry(lane.integration).or_default() += lane.delivered;
            }
            totals
        }
        OrgScope::Organization(_) => {
            lanes::delivered_since(&mut tx, scope, Time(now - chrono::Duration::days(7))).await?
        }
    };
    let mut blocked = std::collections::HashMap::new();
    for integration in &generation.integrations {
        let keys = events::blocked_keys(
            &mut tx,
            scope,
            &integration.id,
            integration.on_dead == OnDead::Block,
            20,
        )
        .await?;
        blocked.insert(integration.id.clone(), keys);
    }
    let nodes =
        crate::store::states::nodes(&mut tx, Time(now - chrono::Duration::seconds(15))).await?;
    tx.rollback().await?;
    let databases = state.engine.databases();
    let integrations = generation
        .integrations
        .iter()
        .map(|integration| {
            let events = integration.events();
            let effective = state.engine.status(&integration.id).unwrap_or_default();
            let unread = backlog.unread.get(&integration.id).copied().unwrap_or(0);
            let mut deliveries = DeliveryCounts::from_map(counts.get(&integration.id));
            // For an organization key the unread backlog is not split by
            // organization: it counts only its own rows then.
            if scope == OrgScope::Platform {
                deliveries.pending += unread;
            }
            deliveries.delivered += first_pass.get(&integration.id).copied().unwrap_or(0);
            IntegrationStatus {
                id: integration.id.clone(),
                source: integration.source.clone(),
                target: integration.target.clone(),
                description: integration.description.clone(),
                state: effective.state.as_str().to_owned(),
                enabled: effective.state == IntegrationState::Enabled,
                enabled_in_yaml: integration.enabled,
                persisted_state: state
                    .engine
                    .persisted_state(&integration.id)
                    .map(|s| s.as_str().to_owned()),
                order_by: integration.order_by.describe(),
                on_dead: match integration.on_dead {
                    OnDead::Continue => "continue".into(),
                    OnDead::Block => "block".into(),
                },
                backlog: if scope == OrgScope::Platform {
                    unread
                } else {
                    0
                },
                lag_seconds: figures.as_ref().map(|f| {
                    f.get(&integration.id)
                        .map_or(0.0, |f| (f.lag_seconds(now) * 1e3).round() / 1e3)
                }),
                delivered_last_5m: last_5m.get(&integration.id).copied().unwrap_or(0),
                delivered_last_hour: last_hour.get(&integration.id).copied().unwrap_or(0),
                blocked_keys: blocked.remove(&integration.id).unwrap_or_default(),
                generation: generation.number,
                events,
                deliveries,
                last_error: last_errors.remove(&integration.id).map(|e| LastError {
                    message: e.message,
                    at: e.at,
                    delivery_id: e.delivery_id,
                    event_id: e.event_id,
                    step: e.step,
                }),
                database: integration
                    .database
                    .clone()
                    .unwrap_or_else(|| crate::compile::databases::OWN.to_owned()),
                waiting_on_database: integration.databases_used().find_map(|name| {
                    let down = databases.iter().find(|d| d.name == name && !d.up)?;
                    Some(WaitingOnDatabase {
                        database: name.to_owned(),
                        since: down.since.0,
                    })
                }),
            }
        })
        .collect();
    // Other sessions' queries are the platform's to see, not an
    // organization's.
    let waiting_on = if scope == OrgScope::Platform {
        crate::store::activity::blockers(state.engine.store()).await?
    } else {
        Vec::new()
    };
    let databases = if scope == OrgScope::Platform {
        databases
    } else {
        databases
            .into_iter()
            .map(|d| crate::store::targets::DatabaseStatus { error: None, ..d })
            .collect()
    };
    Ok(Json(StatusReport {
        generation: generation.number,
        organization_id: scope.organization(),
        integrations,
        reload: (**state.reload.load()).clone(),
        nodes,
        waiting_on,
        databases,
    }))
}

/// The integrations an enable, disable, pause or resume applies to: every
/// one from `source` to `target`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ProductPair {
    /// The source product.
    source: String,
    /// The target product.
    target: String,
}

/// What enable, disable, pause and resume answer besides the answers of
/// every keyed operation, for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
#[expect(dead_code, reason = "a description of answers, never built")]
pub enum SwitchRefused {
    #[response(
        status = 403,
        description = "The key lacks the `admin` scope, or is bound to an organization.",
        content_type = "application/problem+json"
    )]
    NotAdmin(Problem),
    #[response(
        status = 404,
        description = "No integration goes from `source` to `target`.",
        content_type = "application/problem+json"
    )]
    NoIntegration(Problem),
}

/// Enable every integration from `source` to `target`.
#[utoipa::path(
    post,
    path = "/api/integrations/{source}/{target}/enable",
    tag = "integrations",
    params(ProductPair),
    responses(
        (status = 200, description = "Enabled (persisted).", body = Switched),
        KeyRefused,
        SwitchRefused,
        DatabaseUnavailable,
    ),
    security(("api_key" = []))
)]
pub async fn enable(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Path(ProductPair { source, target }): Path<ProductPair>,
) -> Result<Json<Switched>, ApiError> {
    switch(caller, state, source, target, IntegrationState::Enabled).await
}

/// Disable every integration from `source` to `target`: new events get no
/// deliveries for it, and its pending deliveries are skipped.
#[utoipa::path(
    post,
    path = "/api/integrations/{source}/{target}/disable",
    tag = "integrations",
    params(ProductPair),
    responses(
        (status = 200, description = "Disabled (persisted).", body = Switched),
        KeyRefused,
        SwitchRefused,
        DatabaseUnavailable,
    ),
    security(("api_key" = []))
)]
pub async fn disable(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Path(ProductPair { source, target }): Path<ProductPair>,
) -> Result<Json<Switched>, ApiError> {
    switch(caller, state, source, target, IntegrationState::Disabled).await
}

/// Pause every integration from `source` to `target`: its events wait
/// (nothing is skipped) until it is resumed.
#[utoipa::path(
    post,
    path = "/api/integrations/{source}/{target}/pause",
    tag = "integrations",
    params(ProductPair),
    responses(
        (status = 200, description = "Paused (persisted).", body = Switched),
        KeyRefused,
        SwitchRefused,
        DatabaseUnavailable,
    ),
    security(("api_key" = []))
)]
pub async fn pause(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Path(ProductPair { source, target }): Path<ProductPair>,
) -> Result<Json<Switched>, ApiError> {
    switch(caller, state, source, target, IntegrationState::Paused).await
}

/// Resume every integration from `source` to `target`: it continues from
/// where it was paused (the same as enable).
#[utoipa::path(
    post,
    path = "/api/integrations/{source}/{target}/resume",
    tag = "integrations",
    params(ProductPair),
    responses(
        (status = 200, description = "Resumed (persisted).", body = Switched),
        KeyRefused,
        SwitchRefused,
        DatabaseUnavailable,
    ),
    security(("api_key" = []))
)]
pub async fn resume(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Path(ProductPair { source, target }): Path<ProductPair>,
) -> Result<Json<Switched>, ApiError> {
    switch(caller, state, source, target, IntegrationState::Enabled).await
}

async fn switch(
    caller: super::Caller,
    state: AppState,
    source: String,
    target: String,
    wanted: IntegrationState,
) -> Result<Json<Switched>, ApiError> {
    caller.require_platform()?;
    let ids = state
        .engine
        .set_state_pair(&source, &target, wanted)
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
        .map(|id| {
            let effective = state.engine.status(&id).unwrap_or_default();
            SwitchedIntegration {
                persisted_state: wanted.as_str().to_owned(),
                state: effective.state.as_str().to_owned(),
                enabled: effective.state == IntegrationState::Enabled,
                enabled_in_yaml: generation.integration(&id).is_some_and(|i| i.enabled),
                id,
            }
        })
        .collect();
    tracing::info!(%source, %target, state = wanted.as_str(), key = %caller.key_id, "integration state changed");
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
        KeyRefused,
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
    // Not cancellable: a reload finishes even if this request times out.
    let outcome = tokio::spawn(async move { reloader.reload(crate::reload::Trigger::Api).await })
        .await
        .map_err(ApiError::internal)?;
    if outcome.ok {
        return Ok(Json(outcome));
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
