//! Events: publishing (`POST /api/events`), listing the caller's
//! organization's events (`GET /api/integrations/events`) and one event
//! with its deliveries (`GET /api/integrations/events/{id}`).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::{Publisher, Reader};
use super::deliveries::{Delivery, DeliveryStatus};
use super::error::{ApiError, BodyRefused, DatabaseUnavailable, FieldError, KeyRefused, Problem};
use super::{AppState, ContractPolicy, Json, MAX_BATCH, Path, Query};
use crate::engine::{PublishError, PublishRequest, Published};
use crate::envelope::{Envelope, EventName, ProductName, SentEvent, Violation};
use crate::store::events::{self, EventFilter, Status, StoredEvent};
use crate::store::scope::OrgScope;
use crate::store::types::Time;
use crate::store::views;

/// The header a producer may send to make a publish idempotent without
/// choosing event ids.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The longest idempotency key accepted.
const MAX_IDEMPOTENCY_KEY: usize = 180;
/// Events per page when the caller does not say.
const DEFAULT_LIMIT: u32 = 50;
/// The most events per page.
const MAX_LIMIT: u32 = 500;

/// Several events, committed together: all are stored or none.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct EventBatch {
    // max_items is `MAX_BATCH` (a literal here; a test keeps them equal).
    #[schema(min_items = 1, max_items = 1000)]
    events: Vec<SentEvent>,
}

/// The body of `POST /api/events`: one event, or a batch.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum PublishBody {
    Event(SentEvent),
    Batch(EventBatch),
}

/// The answer to publishing one event.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublishedEvent {
    /// The stored event's id (for a duplicate: the original's).
    pub id: Uuid,
    /// False when the event was already stored: nothing new was created.
    pub created: bool,
    /// How many enabled integrations of the live generation route this
    /// event. 0: it is stored, but nothing listens to it (yet); a typo in
    /// the event name shows here.
    pub routed: usize,
    /// For a duplicate: the event as stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<EventView>,
}

/// The answer to a publish: [`PublishedEvent`] for one event,
/// [`PublishedBatch`] for a batch.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum PublishAnswer {
    Event(Box<PublishedEvent>),
    Batch(PublishedBatch),
}

/// The answer to publishing a batch: one entry per event, in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublishedBatch {
    pub events: Vec<PublishedItem>,
}

/// One event of a batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublishedItem {
    pub id: Uuid,
    /// False when the event was already stored.
    pub created: bool,
    /// How many enabled integrations of the live generation route this
    /// event (0: nothing listens to it).
    pub routed: usize,
}

/// A stored event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventView {
    pub id: Uuid,
    pub source: String,
    pub event: String,
    pub organization_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub data: Value,
    /// When busbar stored it.
    pub created_at: DateTime<Utc>,
    /// When its deliveries were created (null: not routed yet).
    pub processed_at: Option<DateTime<Utc>>,
    /// The event whose delivery emitted this one (null: published).
    pub parent_id: Option<Uuid>,
}

impl From<StoredEvent> for EventView {
    fn from(stored: StoredEvent) -> EventView {
        let Envelope {
            id,
            source,
            event,
            organization_id,
            occurred_at,
            data,
        } = stored.envelope;
        EventView {
            id,
            source,
            event,
            organization_id,
            occurred_at,
            data,
            created_at: stored.created_at,
            processed_at: stored.processed_at,
            parent_id: stored.parent_id,
        }
    }
}

/// How many of an event's (or an integration's) deliveries are in each
/// state.
#[derive(Debug, Clone, Copy, Default, Serialize, ToSchema)]
pub struct DeliveryCounts {
    /// Not run yet: events its lanes have not reached, and deliveries
    /// waiting behind a blocked key.
    pub pending: i64,
    /// Failed for a reason that may pass; will be tried again.
    pub retrying: i64,
    pub delivered: i64,
    pub skipped: i64,
    pub dead: i64,
}

impl DeliveryCounts {
    pub fn from_map(counts: Option<&std::collections::HashMap<Status, i64>>) -> DeliveryCounts {
        let get = |status| counts.and_then(|c| c.get(&status)).copied().unwrap_or(0);
        DeliveryCounts {
            pending: get(Status::Pending),
            retrying: get(Status::Retrying),
            delivered: get(Status::Delivered),
            skipped: get(Status::Skipped),
            dead: get(Status::Dead),
        }
    }
}

/// An event in a list, with its deliveries counted.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventSummary {
    #[serde(flatten)]
    pub event: EventView,
    pub delivery_counts: DeliveryCounts,
}

/// A page of events, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<EventSummary>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

/// An event with its deliveries.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventDetail {
    #[serde(flatten)]
    pub event: EventView,
    /// One per route of every integration the event was routed to, with
    /// the last error of each.
    pub deliveries: Vec<Delivery>,
    /// The events its deliveries emitted (`emit` steps), oldest first: the
    /// next links of the chain, each readable here by its id.
    pub emitted: Vec<EmittedEvent>,
}

/// An event emitted by a delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmittedEvent {
    pub id: Uuid,
    pub source: String,
    pub event: String,
    #[schema(value_type = Object)]
    pub data: Value,
    pub created_at: DateTime<Utc>,
}

/// Filters for listing events.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events from this product.
    source: Option<ProductName>,
    /// Only events with this name.
    event: Option<EventName>,
    /// Only events with at least one delivery in this state.
    status: Option<DeliveryStatus>,
    /// Only events stored at or after this time (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Only events stored before this time (RFC 3339).
    until: Option<DateTime<Utc>>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Events per page (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// For platform keys: only this organization's events. An organization
    /// key always sees only its own organization.
    organization_id: Option<Uuid>,
}

/// Publish one event or a batch.
///
/// Answers once the event (or the whole batch) and its deliveries are
/// committed, saying for each event how many integrations route it
/// (`routed`). Publishing again an event whose `id` (or `Idempotency-Key`)
/// is already stored creates nothing and answers 200 with the stored event.
/// In a batch, the header's key applies to each event as `<key>#<index>`,
/// and no two events may have the same `id`. A body that repeats a key in
/// an object is refused. A server run with `--contract-policy strict`
/// accepts only events that have a contract.
#[utoipa::path(
    post,
    path = "/api/events",
    tag = "events",
    request_body(content = PublishBody, content_type = "application/json"),
    params(
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,180}$", description = "Makes the publish idempotent: at most 180 visible ASCII characters, unique per organization."),
    ),
    responses(
        (status = 202, description = "Stored (a batch: at least one event was new).", body = PublishAnswer),
        (status = 200, description = "Already stored: nothing was created. A single event comes back as stored.", body = PublishAnswer),
        KeyRefused,
        (status = 400, description = "Malformed JSON (`malformed-json`), a key repeated within an object (`duplicate-key`), or a bad Idempotency-Key.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the `publish` scope or belongs to another organization.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The id (or Idempotency-Key) was used by another event of this organization (`id-reused`): nothing was stored; `detail` says what differs.", body = Problem, content_type = "application/problem+json"),
        BodyRefused,
        (status = 422, description = "Nothing was stored: the envelope or the data breaks its contract (`invalid-event`, every violation listed), two events of a batch have the same id (`duplicate-id`), or, with `--contract-policy strict`, an event has no contract (`no-contract`).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database cannot take the event now: nothing was stored; retry after `Retry-After` seconds.", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
    ),
    security(("api_key" = []))
)]
pub async fn publish(
    Publisher(caller): Publisher,
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let batch = match &body {
        Value::Object(map) if map.contains_key("events") => Some(batch_items(map)?),
        _ => None,
    };
    let Some(items) = batch else {
        let envelope = Envelope::from_json(&body).map_err(|v| invalid_event(fields(v, "")))?;
        check_organization(&caller, &[&envelope], false)?;
        check_contracts(&state, &[&envelope], false)?;
        let organization = envelope.organization_id;
        let routed = state.engine.routed(&envelope);
        let published = state
            .engine
            .publish(PublishRequest {
                envelope,
                idempotency_key: key,
            })
            .await
            .map_err(|e| publish_error(e, false))?;
        return single_answer(&state, published, organization, routed).await;
    };

    let mut violations = Vec::new();
    let mut envelopes = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match Envelope::from_json(item) {
            Ok(envelope) => envelopes.push(envelope),
            Err(found) => violations.extend(fields(found, &format!("/events/{i}"))),
        }
    }
    if !violations.is_empty() {
        return Err(invalid_event(violations));
    }
    let all: Vec<&Envelope> = envelopes.iter().collect();
    check_organization(&caller, &all, true)?;
    check_unique_ids(&all)?;
    check_contracts(&state, &all, true)?;
    let organizations: Vec<Uuid> = envelopes.iter().map(|e| e.organization_id).collect();
    let routed: Vec<usize> = envelopes.iter().map(|e| state.engine.routed(e)).collect();
    let requests: Vec<PublishRequest> = envelopes
        .into_iter()
        .enumerate()
        .map(|(i, envelope)| PublishRequest {
            envelope,
            idempotency_key: key.as_ref().map(|k| format!("{k}#{i}")),
        })
        .collect();
    let single = requests.len() == 1;
    let published = match state.engine.publish_batch(requests).await {
        // The engine numbers contract violations by event only when there
        // are several; a batch of one is still a batch to the producer.
        Err(PublishError::Invalid(found)) if single => {
            return Err(invalid_event(fields(found, "/events/0")));
        }
        result => result.map_err(|e| publish_error(e, true))?,
    };
    let _ = &organizations;
    let any_created = published.iter().any(|p| p.created);
    let body = PublishedBatch {
        events: published
            .into_iter()
            .zip(routed)
            .map(|(p, routed)| PublishedItem {
                id: p.id,
                created: p.created,
                routed,
            })
            .collect(),
    };
    let status = if any_created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(PublishAnswer::Batch(body))).into_response())
}

/// The answer to a single publish: 202 when new; 200 with the stored event
/// when it was already there.
async fn single_answer(
    state: &AppState,
    published: Published,
    organization: Uuid,
    routed: usize,
) -> Result<Response, ApiError> {
    if published.created {
        let body = PublishedEvent {
            id: published.id,
            created: true,
            routed,
            event: None,
        };
        return Ok((
            StatusCode::ACCEPTED,
            Json(PublishAnswer::Event(Box::new(body))),
        )
            .into_response());
    }
    // Ids are unique per organization, so the stored event is this
    // organization's.
    let stored = load_event(state, organization, published.id).await?;
    let body = PublishedEvent {
        id: published.id,
        created: false,
        routed,
        event: stored.map(Into::into),
    };
    Ok((StatusCode::OK, Json(PublishAnswer::Event(Box::new(body)))).into_response())
}

async fn load_event(
    state: &AppState,
    organization: Uuid,
    id: Uuid,
) -> Result<Option<StoredEvent>, ApiError> {
    let mut tx = state.engine.store().begin_read().await?;
    let event = events::get_event(&mut tx, OrgScope::Organization(organization), id).await?;
    tx.rollback().await?;
    Ok(event.into_iter().next())
}

/// The `events` of a batch body, checked for shape and size.
fn batch_items(map: &serde_json::Map<String, Value>) -> Result<&Vec<Value>, ApiError> {
    let mut errors: Vec<FieldError> = map
        .keys()
        .filter(|k| k.as_str() != "events")
        .map(|k| FieldError {
            pointer: format!("/{k}"),
            message: format!("unknown field `{k}`; a batch has only `events`"),
        })
        .collect();
    let items = match map.get("events") {
        Some(Value::Array(items)) if (1..=MAX_BATCH).contains(&items.len()) => Some(items),
        Some(Value::Array(items)) => {
            errors.push(FieldError {
                pointer: "/events".into(),
                message: format!("a batch holds 1 to {MAX_BATCH} events, not {}", items.len()),
            });
            None
        }
        _ => {
            errors.push(FieldError {
                pointer: "/events".into(),
                message: "`events` must be an array of events".into(),
            });
            None
        }
    };
    match items {
        Some(items) if errors.is_empty() => Ok(items),
        _ => Err(invalid_event(errors)),
    }
}

fn invalid_event(errors: Vec<FieldError>) -> ApiError {
    ApiError::invalid(
        "invalid-event",
        "the event is not valid; nothing was stored",
        errors,
    )
}

/// Violations as field errors, their pointers under `prefix`.
fn fields(violations: Vec<Violation>, prefix: &str) -> Vec<FieldError> {
    violations
        .into_iter()
        .map(|v| FieldError {
            pointer: format!("{prefix}{}", v.pointer),
            message: v.message,
        })
        .collect()
}

fn publish_error(error: PublishError, batch: bool) -> ApiError {
    match error {
        PublishError::Invalid(violations) => invalid_event(fields(violations, "")),
        PublishError::Reused { index, id, differs } => {
            let pointer = if batch {
                format!("/events/{index}/id")
            } else {
                "/id".to_owned()
            };
            ApiError::conflict(
                "id-reused",
                format!(
                    "event {id} was already published with a different {}; nothing of this request was stored. \
                     Publishing the same event again is safe; a different event needs a new id (or Idempotency-Key)",
                    differs.join(" and ")
                ),
            )
            .with_errors(vec![FieldError {
                pointer,
                message: format!("this id is already used by an event whose {} differ", differs.join(", ")),
            }])
        }
        PublishError::Unavailable(error) => {
            tracing::warn!(%error, "publish failed: nothing was stored");
            ApiError::unavailable(
                "database-unavailable",
                "the event could not be stored; nothing was stored, retry later",
            )
        }
        PublishError::ShuttingDown => ApiError::unavailable(
            "shutting-down",
            "busbar is shutting down; retry on another instance or later",
        ),
    }
}

/// An organization key may publish only its own organization's events.
/// `batch`: the events came as `{"events": [...]}` (pointers say which).
fn check_organization(
    caller: &super::Caller,
    envelopes: &[&Envelope],
    batch: bool,
) -> Result<(), ApiError> {
    let errors: Vec<FieldError> = envelopes
        .iter()
        .enumerate()
        .filter(|(_, e)| !caller.may_act_for(e.organization_id))
        .map(|(i, _)| FieldError {
            pointer: if batch {
                format!("/events/{i}/organization_id")
            } else {
                "/organization_id".into()
            },
            message: "this key may publish only its own organization's events".into(),
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "organization-forbidden",
            "this key belongs to another organization; nothing was stored",
        )
        .with_errors(errors))
    }
}

/// No two events of a batch may share an id: storing the first and
/// calling the second "already stored" would silently drop it. Every
/// position of every repeated id is named.
fn check_unique_ids(envelopes: &[&Envelope]) -> Result<(), ApiError> {
    let mut positions: std::collections::HashMap<Uuid, Vec<usize>> =
        std::collections::HashMap::new();
    for (i, envelope) in envelopes.iter().enumerate() {
        positions.entry(envelope.id).or_default().push(i);
    }
    let mut errors: Vec<(usize, FieldError)> = positions
        .into_values()
        .filter(|at| at.len() > 1)
        .flat_map(|at| {
            at.iter()
                .map(|&i| {
                    let others: Vec<String> = at
                        .iter()
                        .filter(|&&j| j != i)
                        .map(|j| format!("/events/{j}"))
                        .collect();
                    let message = format!(
                        "{} has this id too; every event of a batch needs its own id",
                        others.join(", ")
                    );
                    (
                        i,
                        FieldError {
                            pointer: format!("/events/{i}/id"),
                            message,
                        },
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if errors.is_empty() {
        return Ok(());
    }
    errors.sort_by_key(|(i, _)| *i);
    Err(ApiError::invalid(
        "duplicate-id",
        "some events of the batch have the same id; nothing was stored",
        errors.into_iter().map(|(_, e)| e).collect(),
    ))
}

/// With `--contract-policy strict`, every event must have a contract.
fn check_contracts(state: &AppState, envelopes: &[&Envelope], batch: bool) -> Result<(), ApiError> {
    if state.config.contract_policy != ContractPolicy::Strict {
        return Ok(());
    }
    let generation = state.engine.generation();
    let errors: Vec<FieldError> = envelopes
        .iter()
        .enumerate()
        .filter(|(_, e)| generation.contracts.get(&e.source, &e.event).is_none())
        .map(|(i, e)| FieldError {
            pointer: if batch {
                format!("/events/{i}/event")
            } else {
                "/event".into()
            },
            message: format!(
                "there is no contract for `{source}/{event}` (`{source}/{event}.json` in the contracts directory), \
                 and this server accepts only events with a contract",
                source = e.source,
                event = e.event
            ),
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "no-contract",
            "this server accepts only events with a contract (--contract-policy strict); nothing was stored",
            errors,
        ))
    }
}

/// The `Idempotency-Key` header, if sent and well-formed.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_request(
            "invalid-idempotency-key",
            format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        )
    };
    let text = value.to_str().map_err(|_| bad())?;
    let ok = (1..=MAX_IDEMPOTENCY_KEY).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(Some(text.to_owned()))
    } else {
        Err(bad())
    }
}

/// List the caller's organization's events, newest first.
#[utoipa::path(
    get,
    path = "/api/integrations/events",
    tag = "events",
    params(EventsQuery),
    responses(
        (status = 200, description = "A page of events.", body = EventPage),
        KeyRefused,
        (status = 400, description = "A bad filter, cursor or limit.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the `read` scope, or asks for another organization.", body = Problem, content_type = "application/problem+json"),
        DatabaseUnavailable,
    ),
    security(("api_key" = []))
)]
pub async fn list(
    Reader(caller): Reader,
    State(state): State<AppState>,
    Query(query): Query<EventsQuery>,
) -> Result<Json<EventPage>, ApiError> {
    let scope = caller.organization_scope(query.organization_id)?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid-query",
            format!("`limit` must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let before_seq = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let filter = EventFilter {
        scope,
        source: query.source.map(String::from),
        event: query.event.map(String::from),
        status: query.status,
        since: query.since.map(Time),
        until: query.until.map(Time),
        before_seq,
        id: None,
    };
    let mut tx = state.engine.store().begin_read().await?;
    // One more than asked tells whether there is a next page.
    let mut found = events::list_events(&mut tx, &filter, i64::from(limit) + 1).await?;
    let more = found.len() > limit as usize;
    found.truncate(limit as usize);
    let generation = state.engine.generation();
    let deliveries =
        views::deliveries(&mut tx, scope, &generation, state.engine.lanes(), &found).await?;
    tx.rollback().await?;
    let mut counts: std::collections::HashMap<
        (Uuid, Uuid),
        std::collections::HashMap<Status, i64>,
    > = Default::default();
    for delivery in &deliveries {
        *counts
            .entry((delivery.organization_id, delivery.event_id))
            .or_default()
            .entry(delivery.status)
            .or_default() += 1;
    }
    let next_cursor = if more {
        found.last().map(|e| encode_cursor(e.seq))
    } else {
        None
    };
    let events = found
        .into_iter()
        .map(|stored| {
            let delivery_counts = DeliveryCounts::from_map(
                counts.get(&(stored.envelope.organization_id, stored.envelope.id)),
            );
            EventSummary {
                event: stored.into(),
                delivery_counts,
            }
        })
        .collect();
    Ok(Json(EventPage {
        events,
        next_cursor,
    }))
}

/// One event, with its deliveries and their errors.
#[utoipa::path(
    get,
    path = "/api/integrations/events/{id}",
    tag = "events",
    params(
        ("id" = Uuid, Path, description = "The event id."),
        DetailQuery,
    ),
    responses(
        (status = 200, description = "The event and its deliveries.", body = EventDetail),
        KeyRefused,
        (status = 409, description = "A platform key asked for an id that two organizations use: add `organization_id`.", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "The id is not a UUID.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks the `read` scope.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such event in the caller's organization.", body = Problem, content_type = "application/problem+json"),
        DatabaseUnavailable,
    ),
    security(("api_key" = []))
)]
pub async fn get(
    Reader(caller): Reader,
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Query(query): Query<DetailQuery>,
) -> Result<Json<EventDetail>, ApiError> {
    // Ids are unique per organization: an organization key reads its own
    // organization's event; another organization's is "not found", so an
    // id does not tell whether it exists elsewhere.
    let Some(scope) = caller.narrowed_scope(query.organization_id) else {
        return Err(ApiError::not_found(
            "event-not-found",
            format!("there is no event {id} in this key's organization"),
        ));
    };
    let mut tx = state.engine.store().begin_read().await?;
    let mut found = events::get_event(&mut tx, scope, id).await?;
    if found.len() > 1 {
        tx.rollback().await?;
        return Err(ApiError::conflict(
            "ambiguous-id",
            format!("event id {id} is used by several organizations; add `?organization_id=`"),
        ));
    }
    let Some(event) = found.pop() else {
        tx.rollback().await?;
        return Err(ApiError::not_found(
            "event-not-found",
            format!("there is no event {id} in this key's organization"),
        ));
    };
    let generation = state.engine.generation();
    let deliveries = views::deliveries(
        &mut tx,
        scope,
        &generation,
        state.engine.lanes(),
        std::slice::from_ref(&event),
    )
    .await?;
    let children = events::children_of(&mut tx, scope, event.envelope.organization_id, id).await?;
    tx.rollback().await?;
    Ok(Json(EventDetail {
        event: event.into(),
        deliveries,
        emitted: children
            .into_iter()
            .map(|child| EmittedEvent {
                id: child.envelope.id,
                source: child.envelope.source,
                event: child.envelope.event,
                data: child.envelope.data,
                created_at: child.created_at,
            })
            .collect(),
    }))
}

/// Which organization's event, for a platform key (ids are unique per
/// organization).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DetailQuery {
    /// The event's organization (platform keys; an organization key always
    /// reads its own).
    organization_id: Option<Uuid>,
}

const CURSOR_VERSION: &str = "v1:";

fn encode_cursor(seq: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{CURSOR_VERSION}{seq}"))
}

fn decode_cursor(cursor: &str) -> Result<i64, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix(CURSOR_VERSION)?.parse().ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid-cursor",
                "`cursor` must be a `next_cursor` from a previous page",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        assert_eq!(decode_cursor(&encode_cursor(42)).unwrap(), 42);
        assert!(decode_cursor("nope").is_err());
        assert!(decode_cursor("").is_err());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("v2:1")).is_err());
    }
}
