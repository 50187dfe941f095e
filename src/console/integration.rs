//! An integration's page (`GET /console/integrations/{id}`): its YAML as
//! written (highlighted, with the last reload's errors marked), its dead
//! letters grouped by cause, its blocked keys (what each waits on, and how
//! many wait behind it), its recent deliveries; and its actions:
//! replaying or skipping a group of dead letters or some of them, and enabling,
//! disabling, pausing and resuming it. Every action asks for a
//! confirmation that says what it will do, on a page of its own (so it
//! needs no script).

use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::causes::{self, CauseGroup};
use super::data::{self, FlowState, StateChange};
use super::history::{self, ChartView, Window};
use super::{ConsoleError, Fields, Viewer, highlight, see_other, view};
use crate::api::{AppState, ReloadError};
use crate::compile::OnDead;
use crate::store::events::{BlockedKey, DeliveryView};

/// How many deliveries of a group the page lists with checkboxes.
const LISTED_PER_GROUP: usize = 50;

/// A message shown after an action (by code, so nothing from the query
/// string is shown as it came).
#[derive(Debug, Deserialize)]
pub struct Notice {
    notice: Option<String>,
    count: Option<u64>,
    /// The charts' span: `hour` (the default) or `day`.
    window: Option<String>,
}

impl Notice {
    fn text(&self) -> Option<String> {
        let count = self.count.unwrap_or(0);
        Some(match self.notice.as_deref()? {
            "replayed" if count == 1 => "1 dead delivery was queued again.".to_owned(),
            "replayed" => format!("{count} dead deliveries were queued again."),
            "skipped" if count == 1 => "1 dead delivery was skipped.".to_owned(),
            "skipped" => format!("{count} dead deliveries were skipped."),
            "enabled" => "The integration is enabled.".to_owned(),
            "disabled" => "The integration is disabled.".to_owned(),
            "paused" => {
                "The integration is paused: its events wait, nothing is skipped.".to_owned()
            }
            "resumed" => "The integration is running again.".to_owned(),
            _ => return None,
        })
    }
}

#[derive(Debug, Serialize)]
struct GroupView {
    key: String,
    step: Option<i32>,
    cause: String,
    count: usize,
    first_seen: chrono::DateTime<chrono::Utc>,
    last_seen: chrono::DateTime<chrono::Utc>,
    listed: Vec<DeliveryView>,
    /// An example of the error as it was, before normalising.
    example: Option<String>,
}

impl From<CauseGroup> for GroupView {
    fn from(group: CauseGroup) -> GroupView {
        GroupView {
            example: group.deliveries.first().and_then(|d| d.last_error.clone()),
            key: group.key,
            step: group.step,
            cause: group.cause,
            count: group.count,
            first_seen: group.first_seen,
            last_seen: group.last_seen,
            listed: group
                .deliveries
                .into_iter()
                .take(LISTED_PER_GROUP)
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
struct RouteView {
    on: String,
    steps: Vec<String>,
}

#[derive(Debug, Serialize)]
struct IntegrationPage {
    id: String,
    description: Option<String>,
    source: String,
    target: String,
    file: String,
    state: FlowState,
    disabled_in_yaml: bool,
    /// What its deliveries are ordered by (`order_by:`).
    order_by: String,
    /// Whether a dead delivery holds its key back (`on_dead: block`).
    dead_blocks: bool,
    /// The database it writes to (`busbar`, or a name of databases.yaml),
    /// never its URL.
    database: String,
    /// That database when it is another one: its kind and health.
    database_status: Option<crate::store::targets::DatabaseStatus>,
    /// The other databases its `find`s read.
    reads_from: Vec<String>,
    /// The first database it uses that is out of reach.
    waiting_on: Option<crate::store::targets::DatabaseStatus>,
    routes: Vec<RouteView>,
    yaml: Option<minijinja::Value>,
    reload_errors: Vec<ReloadError>,
    groups: Vec<GroupView>,
    dead_total: usize,
    dead_limit: i64,
    blocked: Vec<BlockedKey>,
    recent: Vec<DeliveryView>,
    notice: Option<String>,
    /// Applied and failures per minute, backlog and lag over `window`.
    charts: Vec<ChartView>,
    window: Window,
}

/// `GET /console/integrations/{id}`.
pub async fn page(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(notice): Query<Notice>,
) -> Result<Html<String>, ConsoleError> {
    let generation = state.engine.generation();
    let Some(integration) = generation.integration(&id) else {
        return Err(ConsoleError::not_found(format!(
            "There is no integration `{id}` in the live generation ({}).",
            generation.number
        )));
    };
    let store = state.engine.store();
    let scope = viewer.org_scope();
    let dead = data::dead_letters(store, &id, scope).await?;
    let dead_total = dead.len();
    let groups: Vec<GroupView> = causes::group(dead).into_iter().map(Into::into).collect();
    let blocked = data::blocked_keys(&state.engine, &id, scope, 50).await?;
    let recent = data::recent_deliveries(&state.engine, &id, scope, 25).await?;
    let window = Window::parse(notice.window.as_deref());
    let charts = history::integration_charts(&state.engine, &id, scope, window).await?;
    let source = data::integration_source(&generation, &id).await;
    let file = integration.file.display().to_string();
    let reload = state.reload.load();
    let reload_errors: Vec<ReloadError> = if reload.ok {
        Vec::new()
    } else {
        reload
            .errors
            .iter()
            .filter(|d| d.is_error())
            .map(ReloadError::from)
            .filter(|e| same_file(&e.file, &integration.file))
            .collect()
    };
    let marked: Vec<usize> = reload_errors.iter().map(|e| e.line).collect();
    let routes = integration
        .routes
        .iter()
        .map(|route| RouteView {
            on: route.on.clone(),
            steps: route
                .steps
                .iter()
                .map(crate::mapping::describe_step)
                .collect(),
        })
        .collect();
    let content = IntegrationPage {
        id: id.clone(),
        description: integration.description.clone(),
        source: integration.source.clone(),
        target: integration.target.clone(),
        file,
        state: data::flow_state(&state.engine, &id),
        disabled_in_yaml: !integration.enabled,
        order_by: integration.order_by.describe(),
        dead_blocks: integration.on_dead == OnDead::Block,
        database: integration
            .database
            .clone()
            .unwrap_or_else(|| crate::compile::databases::OWN.to_owned()),
        database_status: integration
            .database
            .as_ref()
            .and_then(|name| database_status(&state.engine, &viewer, name)),
        reads_from: integration.reads_from.clone(),
        waiting_on: integration
            .databases_used()
            .filter_map(|name| database_status(&state.engine, &viewer, name))
            .find(|status| !status.up),
        routes,
        yaml: source.map(|s| view::safe(highlight::yaml(&s.text, &marked))),
        reload_errors,
        groups,
        dead_total,
        dead_limit: data::DEAD_LETTER_LIMIT,
        blocked,
        recent,
        notice: notice.text(),
        charts,
        window,
    };
    view::page(&viewer, "integration.html", "overview", &id, content)
}

/// What the page shows of database `name`: the driver's message only to
/// the platform.
fn database_status(
    engine: &crate::engine::Engine,
    viewer: &Viewer,
    name: &str,
) -> Option<crate::store::targets::DatabaseStatus> {
    let status = engine.databases().into_iter().find(|d| d.name == name)?;
    Some(
        if viewer.org_scope() == crate::store::scope::OrgScope::Platform {
            status
        } else {
            crate::store::targets::DatabaseStatus {
                error: None,
                ..status
            }
        },
    )
}

fn same_file(reported: &str, file: &std::path::Path) -> bool {
    let reported = std::path::Path::new(reported);
    reported == file
        || (reported.file_name() == file.file_name()
            && (reported.ends_with(file) || file.ends_with(reported)))
}

/// What the confirmation page shows and re-posts.
#[derive(Debug, Serialize)]
pub struct Confirmation {
    pub question: String,
    pub details: Vec<String>,
    pub warning: Option<String>,
    pub action: String,
    pub fields: Vec<(String, String)>,
    pub confirm_label: String,
    pub cancel: String,
    /// Ask for a reason (a required text field named `reason`).
    pub ask_reason: bool,
}

/// Renders the confirmation page for a form.
pub fn confirm(viewer: &Viewer, confirmation: Confirmation) -> Result<Response, ConsoleError> {
    Ok(view::page(viewer, "confirm.html", "", "Confirm", confirmation)?.into_response())
}

/// `POST /console/integrations/{id}/replay`: replay a whole group of dead
/// letters (`scope=group`) or the ticked ones (`scope=selected`), after a
/// confirmation that says how many.
pub async fn replay(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(id): Path<String>,
    fields: Fields,
) -> Result<Response, ConsoleError> {
    resolve(viewer, state, id, fields, Action::Replay).await
}

/// `POST /console/integrations/{id}/skip`: give up on a group of dead
/// letters or the ticked ones, with a reason asked for on the
/// confirmation page.
pub async fn skip(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(id): Path<String>,
    fields: Fields,
) -> Result<Response, ConsoleError> {
    resolve(viewer, state, id, fields, Action::Skip).await
}

/// What an operator does with dead letters from the integration's page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Replay,
    Skip,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Replay => "replay",
            Action::Skip => "skip",
        }
    }
}

/// Replays or skips dead letters: the group (or the ticked deliveries of
/// it) the form names, after a confirmation (which, for a skip, asks why).
async fn resolve(
    viewer: Viewer,
    state: AppState,
    id: String,
    fields: Fields,
    action: Action,
) -> Result<Response, ConsoleError> {
    viewer.require_admin()?;
    viewer.check_csrf(&fields)?;
    if state.engine.generation().integration(&id).is_none() {
        return Err(ConsoleError::not_found(format!(
            "There is no integration `{id}` in the live generation."
        )));
    }
    let verb = action.verb();
    let key = fields.get("group").unwrap_or("");
    let scope = viewer.org_scope();
    let dead = data::dead_letters(state.engine.store(), &id, scope).await?;
    let Some(group) = causes::group(dead).into_iter().find(|g| g.key == key) else {
        return Err(ConsoleError::bad_request(
            "That group has no dead deliveries any more (already replayed or skipped?). Reload the integration's page.",
        ));
    };
    let selected_only = fields.get("scope") == Some("selected");
    let ids: Vec<Uuid> = if selected_only {
        let ticked: Vec<Uuid> = fields
            .all("delivery")
            .into_iter()
            .filter_map(|d| d.parse().ok())
            .collect();
        group
            .ids()
            .into_iter()
            .filter(|id| ticked.contains(id))
            .collect()
    } else {
        group.ids()
    };
    if ids.is_empty() {
        return Err(ConsoleError::bad_request(format!(
            "No dead delivery was selected. Tick the ones to {verb}, or {verb} the whole group."
        )));
    }
    let reason = fields.get("reason").map(str::trim).unwrap_or("");
    let confirmed = fields.get("confirmed") == Some("yes");
    if !confirmed
        || (action == Action::Skip && (reason.is_empty() || reason.chars().count() > 1000))
    {
        let mut echo: Vec<(String, String)> = vec![
            ("group".into(), group.key.clone()),
            (
                "scope".into(),
                if selected_only { "selected" } else { "group" }.into(),
            ),
            ("confirmed".into(), "yes".into()),
        ];
        echo.extend(ids.iter().map(|id| ("delivery".to_owned(), id.to_string())));
        let n = ids.len();
        let deliveries = if n == 1 { "delivery" } else { "deliveries" };
        let failed = format!(
            "They failed at step {} with: {}",
            group.step.map_or_else(|| "?".to_owned(), |s| s.to_string()),
            group.cause
        );
        let (question, outcome, label) = match action {
            Action::Replay => (
                format!("Replay {n} dead {deliveries} of {id}?"),
                "They run again on the live generation, with a fresh retry budget. Fix the cause first, or they fail again.",
                format!("Replay {n}"),
            ),
            Action::Skip => (
                format!("Skip {n} dead {deliveries} of {id}?"),
                "Nothing is written to the target for them: they are recorded as skipped, with your reason beside their failure. Deliveries of their keys that waited behind them go on. A redelivery can still run them later.",
                format!("Skip {n}"),
            ),
        };
        return confirm(
            &viewer,
            Confirmation {
                question,
                details: vec![failed, outcome.into()],
                warning: (confirmed && action == Action::Skip)
                    .then(|| "Say why they are skipped (1 to 1,000 characters).".to_owned()),
                action: format!("/console/integrations/{id}/{verb}"),
                fields: echo,
                confirm_label: label,
                cancel: format!("/console/integrations/{id}"),
                ask_reason: action == Action::Skip,
            },
        );
    }
    let done = match action {
        Action::Replay => {
            data::replay_deliveries(&state.engine, &ids, scope.organization()).await?
        }
        Action::Skip => {
            let by = format!("key {}", viewer.caller.key_id);
            data::skip_deliveries(&state.engine, &ids, scope.organization(), reason, &by).await?
        }
    };
    tracing::info!(integration = %id, count = done, key = %viewer.caller.key_id, action = verb, "console: dead deliveries resolved");
    let notice = match action {
        Action::Replay => "replayed",
        Action::Skip => "skipped",
    };
    Ok(see_other(&format!(
        "/console/integrations/{id}?notice={notice}&count={done}#dead-letters"
    )))
}

/// `POST /console/integrations/{id}/state`: enable, disable, pause or
/// resume (platform admin keys; disabling and pausing ask first).
pub async fn change_state(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(id): Path<String>,
    fields: Fields,
) -> Result<Response, ConsoleError> {
    viewer.require_platform_admin()?;
    viewer.check_csrf(&fields)?;
    if state.engine.generation().integration(&id).is_none() {
        return Err(ConsoleError::not_found(format!(
            "There is no integration `{id}` in the live generation."
        )));
    }
    let (change, done) = match fields.get("change") {
        Some("enable") => (StateChange::Enable, "enabled"),
        Some("disable") => (StateChange::Disable, "disabled"),
        Some("pause") => (StateChange::Pause, "paused"),
        Some("resume") => (StateChange::Resume, "resumed"),
        _ => {
            return Err(ConsoleError::bad_request(
                "Choose enable, disable, pause or resume.",
            ));
        }
    };
    let asks = matches!(change, StateChange::Disable | StateChange::Pause);
    if asks && fields.get("confirmed") != Some("yes") {
        let (question, details, warning) = match change {
            StateChange::Pause => (
                format!("Pause {id}?"),
                vec![
                    "Its events wait until it is resumed; nothing is skipped. A batch already running finishes.".to_owned(),
                    "Resuming continues from where it stopped, in order.".to_owned(),
                ],
                None,
            ),
            _ => (
                format!("Disable {id}?"),
                vec![
                    "Its deliveries are recorded as skipped, new events' and the waiting ones' alike.".to_owned(),
                    "Enabling it again does not bring those back: redeliver the skipped ones afterwards (or pause instead, which holds them).".to_owned(),
                ],
                None,
            ),
        };
        let label = if change == StateChange::Pause {
            "Pause"
        } else {
            "Disable"
        };
        return confirm(
            &viewer,
            Confirmation {
                question,
                details,
                warning,
                action: format!("/console/integrations/{id}/state"),
                fields: vec![
                    ("change".into(), fields.get("change").unwrap_or("").into()),
                    ("confirmed".into(), "yes".into()),
                ],
                confirm_label: label.into(),
                cancel: format!("/console/integrations/{id}"),
                ask_reason: false,
            },
        );
    }
    data::change_state(&state.engine, &id, change).await?;
    tracing::info!(integration = %id, change = done, key = %viewer.caller.key_id, "console: integration state changed");
    Ok(see_other(&format!(
        "/console/integrations/{id}?notice={done}"
    )))
}
