//! Events: the search (`GET /console/events`) and one event
//! (`GET /console/events/{id}`) with its payload, each delivery's timeline,
//! and the tree of events it emitted with their deliveries.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::data::{self, EventRow, EventSearch, EventTree, Lookup, TimelineEntry};
use super::{ConsoleError, Viewer, highlight, see_other, view};
use crate::api::AppState;
use crate::envelope::{is_event_name, is_product_name};
use crate::store::events::{DeliveryView, Status, StoredEvent};

/// An event page's query: a platform key chooses the organization when
/// several use the same event id.
#[derive(Debug, Default, Deserialize)]
pub struct DetailQuery {
    organization: Option<Uuid>,
}

/// Events per page.
const PAGE: i64 = 50;

/// The search form, as a query string (so a search is a link).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct SearchForm {
    organization: String,
    source: String,
    event: String,
    status: String,
    integration: String,
    since: String,
    until: String,
    id: String,
    field: String,
    value: String,
    before: String,
}

#[derive(Debug, Serialize)]
struct SearchPage {
    form: SearchForm,
    problems: Vec<String>,
    rows: Vec<EventRow>,
    next: Option<String>,
    integrations: Vec<String>,
    statuses: Vec<&'static str>,
}

fn blank(text: &str) -> Option<&str> {
    Some(text.trim()).filter(|t| !t.is_empty())
}

/// A time from the form: RFC 3339, or a `datetime-local` value or a date
/// (taken as UTC).
fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(time) = NaiveDateTime::parse_from_str(text, format) {
            return Some(time.and_utc());
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// The search filter for `form`, limited to what the viewer may see.
fn filter(viewer: &Viewer, form: &SearchForm) -> Result<(EventSearch, Vec<String>), ConsoleError> {
    let mut problems = Vec::new();
    let mut search = EventSearch::all(viewer.org_scope());
    if let Some(text) = blank(&form.organization) {
        match text.parse::<Uuid>() {
            Ok(asked) => match viewer.caller.narrowed_scope(Some(asked)) {
                Some(scope) => search.scope = scope,
                // Asking for another organization is refused, as in the API.
                None => {
                    return Err(ConsoleError::forbidden(
                        "Your key belongs to another organization; it sees only its own events.",
                    ));
                }
            },
            Err(_) => problems.push("The organization is not a UUID.".to_owned()),
        }
    }
    if let Some(source) = blank(&form.source) {
        if is_product_name(source) {
            search.source = Some(source.to_owned());
        } else {
            problems.push(format!("`{source}` is not a product name."));
        }
    }
    if let Some(event) = blank(&form.event) {
        if is_event_name(event) {
            search.event = Some(event.to_owned());
        } else {
            problems.push(format!("`{event}` is not an event name."));
        }
    }
    if let Some(status) = blank(&form.status) {
        match Status::parse(status) {
            Some(status) => search.status = Some(status),
            None => problems.push(format!("`{status}` is not a delivery state.")),
        }
    }
    if let Some(integration) = blank(&form.integration) {
        search.integration = Some(integration.to_owned());
    }
    for (text, slot, name) in [
        (&form.since, &mut search.since, "from"),
        (&form.until, &mut search.until, "to"),
    ] {
        if let Some(text) = blank(text) {
            match parse_time(text) {
                Some(time) => *slot = Some(time),
                None => problems.push(format!(
                    "The `{name}` time `{text}` is not a date or time (2026-11-28T09:30)."
                )),
            }
        }
    }
    if let Some(field) = blank(&form.field) {
        let path: Vec<String> = field
            .trim_start_matches("data.")
            .split('.')
            .map(str::to_owned)
            .collect();
        let valid = path.iter().all(|part| {
            !part.is_empty()
                && part.len() <= 64
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
        if valid && path.len() <= 8 {
            search.field = Some((path, form.value.trim().to_owned()));
        } else {
            problems.push(format!(
                "The payload field `{field}` must be a dotted path such as candidate.email."
            ));
        }
    }
    if let Some(before) = blank(&form.before) {
        search.before_seq = before.parse().ok();
    }
    Ok((search, problems))
}

/// `GET /console/events`.
pub async fn search(
    viewer: Viewer,
    State(state): State<AppState>,
    Query(form): Query<SearchForm>,
) -> Result<Response, ConsoleError> {
    let (search, mut problems) = filter(&viewer, &form)?;
    if let Some(id) = blank(&form.id) {
        match id.parse::<Uuid>() {
            Ok(id) => match data::event_tree(&state.engine, id, search.scope).await? {
                Lookup::Found(_) | Lookup::Ambiguous(_) => {
                    let organization = search
                        .scope
                        .organization()
                        .filter(|_| viewer.is_platform())
                        .map(|o| format!("?organization={o}"))
                        .unwrap_or_default();
                    return Ok(see_other(&format!("/console/events/{id}{organization}")));
                }
                Lookup::Missing => {
                    problems.push(format!("There is no event {id} that this key can see."))
                }
            },
            Err(_) => problems.push("The event id is not a UUID.".to_owned()),
        }
    }
    let rows = if problems.is_empty() {
        data::search_events(&state.engine, &search, PAGE).await?
    } else {
        Vec::new()
    };
    let next = (rows.len() as i64 == PAGE)
        .then(|| rows.last().map(|r| r.event.seq))
        .flatten()
        .map(|seq| {
            let mut next = serde_urlencoded::to_string(&form).unwrap_or_default();
            next = next
                .split('&')
                .filter(|p| !p.starts_with("before="))
                .collect::<Vec<_>>()
                .join("&");
            format!("/console/events?{next}&before={seq}")
        });
    let generation = state.engine.generation();
    let content = SearchPage {
        problems,
        rows,
        next,
        integrations: generation.integration_ids(),
        statuses: Status::ALL.iter().map(|s| s.as_str()).collect(),
        form,
    };
    Ok(view::page(&viewer, "events.html", "events", "Events", content)?.into_response())
}

#[derive(Debug, Serialize)]
struct DeliveryNode {
    #[serde(flatten)]
    delivery: DeliveryView,
    /// How many times it was redelivered.
    epoch: i32,
    timeline: Vec<TimelineEntry>,
}

#[derive(Debug, Serialize)]
struct EventNode {
    event: StoredEvent,
    payload: minijinja::Value,
    deliveries: Vec<DeliveryNode>,
    children: Vec<EventNode>,
}

fn node(tree: EventTree) -> EventNode {
    EventNode {
        payload: view::safe(highlight::json(&tree.event.envelope.data)),
        deliveries: tree
            .deliveries
            .into_iter()
            .map(|line| DeliveryNode {
                timeline: data::delivery_timeline(&line.delivery, line.epoch),
                epoch: line.epoch,
                delivery: line.delivery,
            })
            .collect(),
        children: tree.children.into_iter().map(node).collect(),
        event: tree.event,
    }
}

#[derive(Debug, Serialize)]
struct DetailPage {
    root: EventNode,
    parent: Option<Uuid>,
    /// For a platform key: the organization, in links to related events.
    organization: Option<Uuid>,
}

/// `GET /console/events/{id}`: another organization's event is "not found",
/// as if it did not exist.
pub async fn detail(
    viewer: Viewer,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<DetailQuery>,
) -> Result<Response, ConsoleError> {
    let missing =
        || ConsoleError::not_found(format!("There is no event {id} that this key can see."));
    let id: Uuid = id.parse().map_err(|_| missing())?;
    // Asking for another organization is "not found", as if it did not
    // exist.
    let scope = viewer
        .caller
        .narrowed_scope(query.organization)
        .ok_or_else(missing)?;
    let tree = match data::event_tree(&state.engine, id, scope).await? {
        Lookup::Found(tree) => *tree,
        Lookup::Missing => return Err(missing()),
        Lookup::Ambiguous(organizations) => {
            let choices: Vec<String> = organizations
                .iter()
                .map(|o| format!("/console/events/{id}?organization={o}"))
                .collect();
            return Err(ConsoleError::new(
                axum::http::StatusCode::CONFLICT,
                "Several events",
                format!(
                    "Event ids are unique per organization, and {} organizations have an event {id}. Open one: {}",
                    organizations.len(),
                    choices.join(" , ")
                ),
            ));
        }
    };
    let title = format!(
        "{}/{}",
        tree.event.envelope.source, tree.event.envelope.event
    );
    let content = DetailPage {
        parent: tree.event.parent_id,
        organization: scope.organization().filter(|_| viewer.is_platform()),
        root: node(tree),
    };
    Ok(view::page(&viewer, "event.html", "events", &title, content)?.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_times_are_read_as_utc() {
        let t = parse_time("2026-11-28T09:30").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-28T09:30:00+00:00");
        assert!(parse_time("2026-11-28").is_some());
        assert!(parse_time("2026-11-28T09:30:00+01:00").is_some());
        assert!(parse_time("yesterday").is_none());
    }
}
