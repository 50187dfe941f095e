//! Try an event (`/console/try`): paste an event and see what the live
//! generation would do with it — each route's steps, rows, values, types
//! and emitted events, as `busbar render` prints them — without writing
//! anything. Needs only the `read` scope: nothing is stored.

use axum::extract::State;
use axum::response::Html;
use serde::Serialize;
use serde_json::Value;

use super::data::{self, DryRun};
use super::{ConsoleError, Fields, Viewer, view};
use crate::api::AppState;

/// The event the form starts with: the shipped example.
const EXAMPLE: &str = include_str!("../../examples/events/candidate.hired.json");

/// One column of a step, with its type, as the page lists it.
#[derive(Debug, Serialize)]
struct Column {
    name: String,
    value: String,
    kind: &'static str,
}

#[derive(Debug, Serialize)]
struct StepView {
    number: usize,
    keyword: &'static str,
    target: String,
    status: String,
    key: Vec<String>,
    filter: Vec<Column>,
    values: Vec<Column>,
    data: Vec<Column>,
    bind: Option<String>,
}

#[derive(Debug, Serialize)]
struct RouteView {
    integration: String,
    file: String,
    source: String,
    target: String,
    on: String,
    route: usize,
    enabled: bool,
    outcome: &'static str,
    reason: Option<String>,
    steps: Vec<StepView>,
}

#[derive(Debug, Serialize)]
struct TryPage {
    text: String,
    run: Option<DryRun>,
    routes: Vec<RouteView>,
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(s) if s.starts_with('⟨') => "from the database",
        Value::String(_) => "text",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

fn columns(pairs: &[(String, Value)]) -> Vec<Column> {
    pairs
        .iter()
        .map(|(name, value)| Column {
            name: name.clone(),
            value: match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            },
            kind: kind(value),
        })
        .collect()
}

fn routes(run: &DryRun) -> Vec<RouteView> {
    let Some(report) = &run.report else {
        return Vec::new();
    };
    report
        .routes
        .iter()
        .map(|route| RouteView {
            integration: route.integration.clone(),
            file: route.file.display().to_string(),
            source: route.source.clone(),
            target: route.target.clone(),
            on: route.on.clone(),
            route: route.route + 1,
            enabled: route.enabled,
            outcome: route.outcome,
            reason: route.reason.clone(),
            steps: route
                .steps
                .iter()
                .map(|step| StepView {
                    number: step.index + 1,
                    keyword: step.keyword,
                    target: step.target.clone(),
                    status: serde_json::to_value(step.status)
                        .ok()
                        .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
                        .unwrap_or_default(),
                    key: step.key.clone(),
                    filter: columns(&step.filter),
                    values: columns(&step.values),
                    data: match &step.data {
                        Some(Value::Object(data)) => columns(
                            &data
                                .iter()
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect::<Vec<_>>(),
                        ),
                        _ => Vec::new(),
                    },
                    bind: step.bind.clone(),
                })
                .collect(),
        })
        .collect()
}

/// `GET /console/try`.
pub async fn form(viewer: Viewer) -> Result<Html<String>, ConsoleError> {
    let content = TryPage {
        text: EXAMPLE.to_owned(),
        run: None,
        routes: Vec::new(),
    };
    view::page(&viewer, "try.html", "try", "Try an event", content)
}

/// `POST /console/try`: the dry run (it writes nothing; the form carries
/// the CSRF token all the same, as every POST does).
pub async fn run(
    viewer: Viewer,
    State(state): State<AppState>,
    fields: Fields,
) -> Result<Html<String>, ConsoleError> {
    viewer.check_csrf(&fields)?;
    let text = fields.get("event").unwrap_or("").to_owned();
    let run = data::dry_run(&state.engine, &text);
    let content = TryPage {
        routes: routes(&run),
        run: Some(run),
        text,
    };
    view::page(&viewer, "try.html", "try", "Try an event", content)
}
