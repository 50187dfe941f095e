//! Deliveries as users see them: a row where the delivery has one, and for
//! the others (first-pass successes, and events a lane has not read yet)
//! the state its lane implies — delivered when the lane's cursor has
//! passed the event, pending otherwise. Routes come from the generation
//! given (the live one), so a route added after an event was delivered is
//! shown for it too; ARCHITECTURE.md, "Delivery (v2)".

use std::collections::HashMap;

use uuid::Uuid;

use super::events::{self, DeliveryView, Status, StoredEvent};
use super::lanes::{self, LaneView};
use super::log;
use super::partitionings;
use super::scope::OrgScope;
use super::ticks::{self, Cursor, Tick};
use super::{DbTx, Store, StoreError};
use crate::compile::Generation;
use crate::delivery::delivery_id;

/// Every delivery of `events` in `scope`, rows and inferred, in event
/// order (an event outside `scope` has none).
pub async fn deliveries(
    tx: &mut DbTx,
    scope: OrgScope,
    generation: &Generation,
    lane_count: i32,
    events: &[StoredEvent],
) -> Result<Vec<DeliveryView>, StoreError> {
    let lanes: HashMap<(String, i32), LaneView> = lanes::all(tx)
        .await?
        .into_iter()
        .map(|lane| ((lane.integration.clone(), lane.lane), lane))
        .collect();
    let mut out = Vec::new();
    for event in events {
        let envelope = &event.envelope;
        if !scope.includes(envelope.organization_id) {
            continue;
        }
        let mut rows: HashMap<Uuid, DeliveryView> =
            events::deliveries_of(tx, scope, envelope.organization_id, envelope.id)
                .await?
                .into_iter()
                .map(|row| (row.id, row))
                .collect();
        if event.processed_at.is_none() {
            let mut by_integration: Vec<(&crate::compile::Integration, &crate::compile::Route)> =
                generation
                    .routes(&envelope.source, &envelope.event)
                    .collect();
            by_integration.sort_by(|a, b| {
                (&a.0.id, &a.1.on, a.1.ordinal).cmp(&(&b.0.id, &b.1.on, b.1.ordinal))
            });
            let mut lane_of: HashMap<String, Option<(i32, super::types::Position)>> =
                HashMap::new();
            for (integration, route) in by_integration {
                let id = delivery_id(
                    envelope.organization_id,
                    envelope.id,
                    &integration.id,
                    &route.on,
                    &route.identity(),
                );
                if let Some(row) = rows.remove(&id) {
                    out.push(row);
                    continue;
                }
                if !lane_of.contains_key(&integration.id) {
                    let found = log::lanes_of(
                        tx,
                        envelope.organization_id,
                        &[envelope.id],
                        &integration.order_by,
                        lane_count,
                    )
                    .await?;
                    lane_of.insert(integration.id.clone(), found.get(&envelope.id).copied());
                }
                let Some(Some((lane, position))) = lane_of.get(&integration.id).copied() else {
                    continue;
                };
                let Some(view) = lanes.get(&(integration.id.clone(), lane)) else {
                    continue;
                };
                if view.origin.before(position) {
                    // Published before the integration went live.
                    continue;
                }
                let delivered = view.cursor.passed(position);
                out.push(DeliveryView {
                    id,
                    event_id: envelope.id,
                    organization_id: envelope.organization_id,
                    integration: integration.id.clone(),
                    route_event: route.on.clone(),
                    route_ordinal: route.ordinal as i32,
                    route_name: route.name.clone(),
                    source: integration.source.clone(),
                    target: integration.target.clone(),
                    status: if delivered {
                        Status::Delivered
                    } else {
                        Status::Pending
                    },
                    attempts: i32::from(delivered),
                    next_attempt_at: event.created_at,
                    last_error: None,
                    error_step: None,
                    generation: None,
                    skip_reason: None,
                    skipped_by: None,
                    created_at: event.created_at,
                    updated_at: if delivered {
                        view.updated_at.0
                    } else {
                        event.created_at
                    },
                    completed_at: delivered.then_some(view.updated_at.0),
                    order_key: Some(integration.order_by.key_of(envelope)),
                    recorded: false,
                    waiting_on: None,
                });
            }
        }
        // Rows of routes the live generation no longer has.
        let mut rest: Vec<DeliveryView> = rows.into_values().collect();
        rest.sort_by(|a, b| {
            (&a.integration, &a.route_event, a.route_ordinal).cmp(&(
                &b.integration,
                &b.route_event,
                b.route_ordinal,
            ))
        });
        out.extend(rest);
    }
    for view in &mut out {
        if view.status == Status::Pending && view.recorded {
            view.waiting_on = events::waiting_on(tx, view).await?;
        }
    }
    Ok(out)
}

/// Work not done yet (see [`backlog`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Per integration: events its lanes have not read yet.
    pub unread: HashMap<String, i64>,
    /// Deliveries pending or retrying.
    pub open: i64,
}

impl Backlog {
    pub fn is_empty(&self) -> bool {
        self.unread.is_empty() && self.open == 0
    }
}

/// Work not done yet for `generation`'s integrations: events their lanes
/// have not passed (at most `cap` counted per lane) and open delivery rows,
/// from one snapshot.
pub async fn backlog(
    store: &Store,
    generation: &Generation,
    cap: i64,
) -> Result<Backlog, StoreError> {
    let lane_count = log::lanes_for(store.dialect());
    let mut tx = store.begin_read().await?;
    // Everything committed counts, also what no tick sees yet.
    let now = Tick {
        id: i64::MAX,
        snapshot: ticks::current(&mut tx).await?,
    };
    let cursors: HashMap<(String, i32), (Cursor, i32)> = lanes::all(&mut tx)
        .await?
        .into_iter()
        .map(|lane| ((lane.integration, lane.lane), (lane.cursor, lane.version)))
        .collect();
    let mut out = Backlog::default();
    for integration in &generation.integrations {
        let mut events: Vec<String> = integration.routes.iter().map(|r| r.on.clone()).collect();
        events.sort();
        events.dedup();
        // Each lane counts with the partitioning it reads with (the old one
        // until a change of `order_by` has switched every lane).
        let versions = partitionings::of(&mut tx, &integration.id).await?;
        let mut unread = 0;
        for lane in 0..lane_count {
            let Some((cursor, version)) = cursors.get(&(integration.id.clone(), lane)) else {
                continue;
            };
            let (order_by, lanes) = versions
                .iter()
                .find(|p| p.version == *version)
                .map_or((&integration.order_by, lane_count), |p| {
                    (&p.order_by, p.lanes)
                });
            let filter = log::LaneFilter {
                source: &integration.source,
                events: events.clone(),
                order_by,
                lane,
                lanes,
            };
            unread += log::backlog(&mut tx, &filter, cursor, &now, cap).await?;
        }
        if unread > 0 {
            out.unread.insert(integration.id.clone(), unread);
        }
    }
    // Rows of integrations this generation does not define are not its
    // work (another process, or a later generation, may run them).
    let open = events::open_counts(&mut tx).await?;
    out.open = generation
        .integrations
        .iter()
        .map(|i| open.get(&i.id).copied().unwrap_or(0))
        .sum();
    tx.rollback().await?;
    Ok(out)
}
