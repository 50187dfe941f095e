//! A delivery's identity and outcome: [`delivery_id`] (the same whether or
//! not the delivery has a row), [`emitted_id`] and [`Status`] (its states). Pure values,
//! shared by the store, which persists them, the engine, which decides
//! them, and telemetry, which counts them. A leaf: it uses no other module.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Namespace for delivery ids: `uuid5(organization/event/integration/route)`.
const DELIVERY_NAMESPACE: Uuid = Uuid::from_u128(0x6275_7362_6172_2d64_656c_6976_6572_7921);

/// Namespace for the ids of emitted events.
const EMIT_NAMESPACE: Uuid = Uuid::from_u128(0x6275_7362_6172_2d65_6d69_742d_6576_656e);

/// The id of the event that step `step` (0-based) of a delivery emits:
/// `uuid5(delivery/step)`, and `uuid5(delivery/epoch/step)` once the
/// delivery was redelivered (`epoch` > 0), so the same run of a step always
/// emits the same id and a redelivery emits a new one.
pub fn emitted_id(delivery: Uuid, epoch: i32, step: usize) -> Uuid {
    let name = if epoch == 0 {
        format!("{delivery}/{step}")
    } else {
        format!("{delivery}/{epoch}/{step}")
    };
    Uuid::new_v5(&EMIT_NAMESPACE, name.as_bytes())
}

/// A delivery's state (in the API: `DeliveryStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = DeliveryStatus)]
pub enum Status {
    /// Waiting for its turn: behind a blocked key, or replayed.
    Pending,
    /// Failed for a reason that may pass (a lost connection, a lock
    /// timeout); tried again at `next_attempt_at`. The later events of its
    /// order key wait behind it.
    Retrying,
    /// Its route ran and its writes committed.
    Delivered,
    /// Passed over on purpose, with a reason (a guard was false, a
    /// `missing: skip` found nothing, the integration was disabled or no
    /// longer routes the event).
    Skipped,
    /// Failed permanently, or ran out of retries: a dead letter, until it
    /// is replayed or redelivered.
    Dead,
}

impl Status {
    /// Every state: the label set of `busbar_deliveries_total` and what
    /// [`Status::parse`] accepts.
    pub const ALL: [Status; 5] = [
        Status::Pending,
        Status::Retrying,
        Status::Delivered,
        Status::Skipped,
        Status::Dead,
    ];

    /// Its name, as stored, served and used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Retrying => "retrying",
            Status::Delivered => "delivered",
            Status::Skipped => "skipped",
            Status::Dead => "dead",
        }
    }

    /// The state named `text` by [`Status::as_str`].
    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// The id of a delivery: the same whether or not it has a row. `route` is
/// the route's identity (`Route::identity`: `0` for the unnamed route of
/// the event, `name:<name>` for a named one).
pub fn delivery_id(
    organization: Uuid,
    event: Uuid,
    integration: &str,
    route_event: &str,
    route: &str,
) -> Uuid {
    Uuid::new_v5(
        &DELIVERY_NAMESPACE,
        format!("{organization}/{event}/{integration}/{route_event}/{route}").as_bytes(),
    )
}
