//! Redeliver by filter (`/console/redeliver`): choose an integration and
//! which of its events (event name, time range, delivery state), see how
//! many match, then run them through the integration again. Needs the
//! `admin` scope; an organization's key redelivers only its organization's
//! events.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::data::{self, RedeliverError, RedeliverFilter};
use super::integration::{Confirmation, confirm};
use super::{ConsoleError, Fields, Viewer, view};
use crate::api::AppState;
use crate::store::events::Status;

/// The form's fields.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct RedeliverForm {
    integration: String,
    event: String,
    since: String,
    until: String,
    status: String,
}

impl RedeliverForm {
    fn from_fields(fields: &Fields) -> RedeliverForm {
        let get = |name| fields.get(name).unwrap_or("").to_owned();
        RedeliverForm {
            integration: get("integration"),
            event: get("event"),
            since: get("since"),
            until: get("until"),
            status: get("status"),
        }
    }

    fn pairs(&self) -> Vec<(String, String)> {
        [
            ("integration", &self.integration),
            ("event", &self.event),
            ("since", &self.since),
            ("until", &self.until),
            ("status", &self.status),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v.clone()))
        .collect()
    }
}

#[derive(Debug, Serialize)]
struct RedeliverPage {
    form: RedeliverForm,
    integrations: Vec<String>,
    statuses: Vec<&'static str>,
    problems: Vec<String>,
    done: Option<u64>,
}

fn parse_time(
    text: &str,
    name: &str,
    problems: &mut Vec<String>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let parsed = chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .ok()
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M")
                .ok()
                .map(|t| t.and_utc())
        });
    if parsed.is_none() {
        problems.push(format!(
            "The `{name}` time `{text}` is not a time (2026-11-28T09:30)."
        ));
    }
    parsed
}

/// The filter of a form, or what is wrong with it.
fn filter(state: &AppState, form: &RedeliverForm) -> Result<RedeliverFilter, Vec<String>> {
    let mut problems = Vec::new();
    let integration = form.integration.trim();
    if state.engine.generation().integration(integration).is_none() {
        problems.push("Choose an integration of the live generation.".to_owned());
    }
    let status = match form.status.trim() {
        "" => None,
        text => match Status::parse(text) {
            Some(status) => Some(status),
            None => {
                problems.push(format!("`{text}` is not a delivery state."));
                None
            }
        },
    };
    let filter = RedeliverFilter {
        integration: integration.to_owned(),
        event: Some(form.event.trim().to_owned()).filter(|e| !e.is_empty()),
        since: parse_time(&form.since, "from", &mut problems),
        until: parse_time(&form.until, "to", &mut problems),
        status,
    };
    if problems.is_empty() {
        Ok(filter)
    } else {
        Err(problems)
    }
}

fn page(
    viewer: &Viewer,
    state: &AppState,
    form: RedeliverForm,
    problems: Vec<String>,
    done: Option<u64>,
) -> Result<Response, ConsoleError> {
    let content = RedeliverPage {
        form,
        integrations: state
            .engine
            .generation()
            .integrations
            .iter()
            .map(|i| i.id.clone())
            .collect(),
        statuses: Status::ALL.iter().map(|s| s.as_str()).collect(),
        problems,
        done,
    };
    Ok(view::page(viewer, "redeliver.html", "redeliver", "Redeliver", content)?.into_response())
}

/// The query of the form page (a link from an integration fills it in).
#[derive(Debug, Deserialize)]
pub struct Prefill {
    #[serde(flatten)]
    form: RedeliverForm,
    done: Option<u64>,
}

/// `GET /console/redeliver`.
pub async fn form(
    viewer: Viewer,
    State(state): State<AppState>,
    Query(prefill): Query<Prefill>,
) -> Result<Response, ConsoleError> {
    page(&viewer, &state, prefill.form, Vec::new(), prefill.done)
}

/// `POST /console/redeliver`: the preview (how many events match) as a
/// confirmation, then the redelivery.
pub async fn submit(
    viewer: Viewer,
    State(state): State<AppState>,
    fields: Fields,
) -> Result<Response, ConsoleError> {
    viewer.require_admin()?;
    viewer.check_csrf(&fields)?;
    let form = RedeliverForm::from_fields(&fields);
    let filter = match filter(&state, &form) {
        Ok(filter) => filter,
        Err(problems) => return page(&viewer, &state, form, problems, None),
    };
    let organization = viewer.organization();
    if fields.get("confirmed") != Some("yes") {
        let count = data::redeliver_preview(state.engine.store(), &filter, organization).await?;
        if count == 0 {
            return page(
                &viewer,
                &state,
                form,
                vec!["No event matches this filter: nothing to redeliver.".to_owned()],
                None,
            );
        }
        let mut echo = form.pairs();
        echo.push(("confirmed".into(), "yes".into()));
        let mut details = vec![format!(
            "Matching: {}{}{}{}.",
            filter.event.as_deref().unwrap_or("every event it handles"),
            filter
                .status
                .map(|s| format!(", whose delivery is {}", s.as_str()))
                .unwrap_or_default(),
            filter
                .since
                .map(|t| format!(", from {}", t.format("%Y-%m-%d %H:%M UTC")))
                .unwrap_or_default(),
            filter
                .until
                .map(|t| format!(", until {}", t.format("%Y-%m-%d %H:%M UTC")))
                .unwrap_or_default(),
        )];
        details.push(
            "They run on the live generation; rows they already wrote are upserted again.".into(),
        );
        return confirm(
            &viewer,
            Confirmation {
                question: format!(
                    "Redeliver {count} event{} through {}?",
                    if count == 1 { "" } else { "s" },
                    filter.integration
                ),
                details,
                warning: (filter.status != Some(Status::Dead)).then(|| {
                    "This busbar can only redeliver dead deliveries until the new delivery engine lands: choose the state \"dead\", or the redelivery will be refused.".to_owned()
                }),
                action: "/console/redeliver".into(),
                fields: echo,
                confirm_label: format!("Redeliver {count}"),
                cancel: "/console/redeliver".into(),
            },
        );
    }
    match data::redeliver(&state.engine, &filter, organization).await {
        Ok(count) => {
            tracing::info!(integration = %filter.integration, count, key = %viewer.caller.key_id, "console: redelivered");
            page(&viewer, &state, form, Vec::new(), Some(count))
        }
        Err(RedeliverError::NotYetSupported) => page(
            &viewer,
            &state,
            form,
            vec![RedeliverError::NotYetSupported.to_string()],
            None,
        ),
        Err(RedeliverError::Store(error)) => Err(error.into()),
    }
}
