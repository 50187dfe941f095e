//! Redeliver by filter (`/console/redeliver`): choose an integration and
//! which of its deliveries (event name, time range, state: delivered,
//! skipped, dead), see how many match, then run them through the
//! integration again — the engine's redelivery, as the API and `busbar
//! redeliver` make it. Needs the `admin` scope; an organization's key
//! redelivers only its organization's events.
//!
//! The confirmation page carries a request id made for it, so sending the
//! confirmed form twice (a double click, a reload) redelivers once.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::data::{self, RedeliverError, RedeliverFilter};
use super::integration::{Confirmation, confirm};
use super::{ConsoleError, Fields, Viewer, view};
use crate::api::AppState;
use crate::store::events::Status;
use crate::store::redeliver::REDELIVERABLE;

/// The form's fields.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RedeliverForm {
    integration: String,
    event: String,
    since: String,
    until: String,
    /// The states ticked (none: all three).
    statuses: Vec<String>,
    /// "Only the latest per key" ticked.
    latest_per_key: Option<String>,
}

impl RedeliverForm {
    fn from_fields(fields: &Fields) -> RedeliverForm {
        let get = |name| fields.get(name).unwrap_or("").to_owned();
        RedeliverForm {
            integration: get("integration"),
            event: get("event"),
            since: get("since"),
            until: get("until"),
            statuses: fields
                .all("status")
                .into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            latest_per_key: fields.get("latest_per_key").map(str::to_owned),
        }
    }

    fn pairs(&self) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = [
            ("integration", &self.integration),
            ("event", &self.event),
            ("since", &self.since),
            ("until", &self.until),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v.clone()))
        .collect();
        pairs.extend(
            self.statuses
                .iter()
                .map(|s| ("status".to_owned(), s.clone())),
        );
        if self.latest_per_key.is_some() {
            pairs.push(("latest_per_key".to_owned(), "yes".to_owned()));
        }
        pairs
    }
}

/// What the page says after a redelivery.
#[derive(Debug, Serialize)]
struct Done {
    events: u64,
    deliveries: u64,
    /// The confirmed form had been sent already: nothing more was done.
    repeated: bool,
    integration: String,
}

#[derive(Debug, Serialize)]
struct RedeliverPage {
    form: RedeliverForm,
    integrations: Vec<String>,
    statuses: Vec<&'static str>,
    problems: Vec<String>,
    done: Option<Done>,
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
fn filter(
    state: &AppState,
    form: &RedeliverForm,
    organization: Option<Uuid>,
) -> Result<RedeliverFilter, Vec<String>> {
    let mut problems = Vec::new();
    let integration = form.integration.trim();
    let generation = state.engine.generation();
    let definition = generation.integration(integration);
    if definition.is_none() {
        problems.push("Choose an integration of the live generation.".to_owned());
    }
    let mut statuses = Vec::new();
    for text in &form.statuses {
        match Status::parse(text).filter(|s| REDELIVERABLE.contains(s)) {
            Some(status) => statuses.push(status),
            None => problems.push(format!(
                "`{text}` cannot be chosen: redeliver delivered, skipped or dead deliveries."
            )),
        }
    }
    let event = Some(form.event.trim().to_owned()).filter(|e| !e.is_empty());
    if let (Some(definition), Some(event)) = (definition, &event)
        && definition.routes_for(event).next().is_none()
    {
        problems.push(format!("{integration} has no route for `{event}`."));
    }
    let filter = RedeliverFilter {
        integration: integration.to_owned(),
        event,
        since: parse_time(&form.since, "from", &mut problems),
        until: parse_time(&form.until, "to", &mut problems),
        statuses,
        organization,
        latest_per_key: form.latest_per_key.is_some(),
        from_event: None,
    };
    if let (Some(since), Some(until)) = (filter.since, filter.until)
        && since >= until
    {
        problems.push("The time range is empty: `from` must be before `to`.".to_owned());
    }
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
    done: Option<Done>,
) -> Result<Response, ConsoleError> {
    let content = RedeliverPage {
        form,
        integrations: state.engine.generation().integration_ids(),
        statuses: REDELIVERABLE.iter().map(|s| s.as_str()).collect(),
        problems,
        done,
    };
    Ok(view::page(viewer, "redeliver.html", "redeliver", "Redeliver", content)?.into_response())
}

/// The query of the form page (a link from an integration fills it in).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Prefill {
    integration: String,
    event: String,
    since: String,
    until: String,
    /// States, comma-separated.
    status: String,
}

/// `GET /console/redeliver`.
pub async fn form(
    viewer: Viewer,
    State(state): State<AppState>,
    Query(prefill): Query<Prefill>,
) -> Result<Response, ConsoleError> {
    let form = RedeliverForm {
        integration: prefill.integration,
        event: prefill.event,
        since: prefill.since,
        until: prefill.until,
        statuses: prefill
            .status
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
        latest_per_key: None,
    };
    page(&viewer, &state, form, Vec::new(), None)
}

/// A refusal of the engine, said on the form.
fn refusal(error: RedeliverError) -> Result<String, ConsoleError> {
    match error {
        RedeliverError::Store(error) => Err(error.into()),
        RedeliverError::Disabled(id) => Ok(format!(
            "{id} is disabled: its redelivered deliveries would be skipped at once. Enable it (or pause it) first."
        )),
        other => Ok(format!("{other}.")),
    }
}

/// `POST /console/redeliver`: the preview (how many deliveries match) as a
/// confirmation, then the redelivery.
pub async fn submit(
    viewer: Viewer,
    State(state): State<AppState>,
    fields: Fields,
) -> Result<Response, ConsoleError> {
    viewer.require_admin()?;
    viewer.check_csrf(&fields)?;
    let form = RedeliverForm::from_fields(&fields);
    let organization = viewer.organization();
    let filter = match filter(&state, &form, organization) {
        Ok(filter) => filter,
        Err(problems) => return page(&viewer, &state, form, problems, None),
    };
    let request = fields.get("request").map(str::to_owned);
    if fields.get("confirmed") != Some("yes") || request.is_none() {
        let count = match data::redeliver_preview(&state.engine, &filter).await {
            Ok(count) => count,
            Err(error) => {
                let problem = refusal(error)?;
                return page(&viewer, &state, form, vec![problem], None);
            }
        };
        if count.deliveries == 0 {
            return page(
                &viewer,
                &state,
                form,
                vec![
                    "No delivery matches this filter (only events the integration's lanes have passed count): nothing to redeliver.".to_owned(),
                ],
                None,
            );
        }
        let mut echo = form.pairs();
        echo.push(("confirmed".into(), "yes".into()));
        echo.push(("request".into(), Uuid::now_v7().to_string()));
        let states: Vec<&str> = filter.states().iter().map(|s| s.as_str()).collect();
        let mut details = vec![format!(
            "Matching: {}, whose delivery is {}{}{}.",
            filter.event.as_deref().unwrap_or("every event it handles"),
            states.join(" or "),
            filter
                .since
                .map(|t| format!(", stored from {}", t.format("%Y-%m-%d %H:%M UTC")))
                .unwrap_or_default(),
            filter
                .until
                .map(|t| format!(", until {}", t.format("%Y-%m-%d %H:%M UTC")))
                .unwrap_or_default(),
        )];
        if filter.latest_per_key {
            details.push(
                "Only the latest matching delivery of each order key (and route): each key's newest state, applied again.".into(),
            );
        }
        if count.deliveries != count.events {
            details.push(format!(
                "That is {} deliveries: some events have several routes in {}.",
                count.deliveries, filter.integration
            ));
        }
        details.push(
            "They run again on the live generation, with a fresh retry budget, in the integration's order: per key, oldest first, before later events of the key. Rows they wrote before are upserted again; emit steps emit new events.".into(),
        );
        details.push(
            "Events its lanes have not reached yet are not included: they run on the live generation anyway.".into(),
        );
        let newer = (count.newer_applied > 0).then(|| {
            format!(
                "{} of them have a newer applied event of their key that is not redelivered: after this, those keys hold the older event's writes. Tick \"only the latest per key\" to redeliver each key's newest only.",
                count.newer_applied
            )
        });
        let warning = (crate::engine::State::Paused
            == state
                .engine
                .status(&filter.integration)
                .map(|s| s.state)
                .unwrap_or_default())
        .then(|| {
            format!(
                "{} is paused: the redelivered deliveries wait until it is resumed.",
                filter.integration
            )
        });
        let warning = match (newer, warning) {
            (Some(newer), Some(paused)) => Some(format!("{newer} {paused}")),
            (newer, paused) => newer.or(paused),
        };
        let n = count.events;
        return confirm(
            &viewer,
            Confirmation {
                question: format!(
                    "Redeliver {n} event{} through {}?",
                    if n == 1 { "" } else { "s" },
                    filter.integration
                ),
                details,
                warning,
                action: "/console/redeliver".into(),
                fields: echo,
                confirm_label: format!("Redeliver {n}"),
                cancel: "/console/redeliver".into(),
                ask_reason: false,
            },
        );
    }
    match data::redeliver(&state.engine, &filter, request, organization).await {
        Ok(done) => {
            tracing::info!(
                integration = %filter.integration,
                events = done.count.events,
                repeated = done.repeated,
                key = %viewer.caller.key_id,
                "console: redelivered"
            );
            let done = Done {
                events: done.count.events,
                deliveries: done.count.deliveries,
                repeated: done.repeated,
                integration: filter.integration.clone(),
            };
            page(&viewer, &state, form, Vec::new(), Some(done))
        }
        Err(error) => {
            let problem = refusal(error)?;
            page(&viewer, &state, form, vec![problem], None)
        }
    }
}
