//! What an operator alerts on and charts, per integration, read from one
//! snapshot: the backlog (events its lanes have not passed, plus delivery
//! rows still open), the lag (the age of the oldest of those), retrying,
//! dead, and blocked keys. `GET /metrics` reads it at every scrape, the
//! console's history sampler once a minute. Nothing in it writes.
//!
//! "The lane's events" keep their one definition in [`log`]: the backlog
//! is [`log::backlog`] and the oldest unread event is the first that
//! [`log::first_unread`] returns; only the time it was stored is read here.

use std::collections::HashMap;

use super::dialect::{EngineTable, Statement};
use super::events::{self, Status};
use super::lanes;
use super::log::{self, LaneFilter};
use super::partitionings;
use super::scope::OrgScope;
use super::ticks::{self, Cursor, Tick};
use super::types::{Id, Time};
use super::{Dialect, Store, StoreError};
use crate::compile::Generation;
use crate::compile::route::OnDead;
use crate::on_tx;

/// One integration's figures at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Events its lanes have not passed (counted up to the cap per lane).
    pub unread: i64,
    /// Delivery rows `pending` (behind a blocked key, replayed, redelivered).
    pub pending: i64,
    /// Delivery rows `retrying`: failed, with another attempt scheduled.
    pub retrying: i64,
    /// Delivery rows `dead`.
    pub dead: i64,
    /// Order keys held back by a retrying delivery (or a dead one, with
    /// `on_dead: block`).
    pub blocked_keys: i64,
    /// When the oldest event not yet applied was stored (`None`: nothing
    /// waits).
    pub oldest: Option<chrono::DateTime<chrono::Utc>>,
}

impl Figures {
    /// Work not done yet: unread events and open delivery rows.
    pub fn backlog(&self) -> i64 {
        self.unread + self.pending + self.retrying
    }

    /// How long the oldest event not yet applied has waited, in seconds, at
    /// `now` (0 when nothing waits).
    pub fn lag_seconds(&self, now: chrono::DateTime<chrono::Utc>) -> f64 {
        self.oldest.map_or(0.0, |oldest| {
            ((now - oldest).num_milliseconds().max(0) as f64) / 1e3
        })
    }
}

/// The figures of every integration of `generation`, by id, from one read
/// transaction. `cap` bounds the events counted per lane (the cost of a
/// scrape on a large backlog); the lag is exact whatever the cap.
pub async fn read(
    store: &Store,
    generation: &Generation,
    cap: i64,
) -> Result<HashMap<String, Figures>, StoreError> {
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
    let counts = events::counts(&mut tx, OrgScope::Platform).await?;
    let oldest_open = oldest_open_rows(&mut tx).await?;
    let mut out = HashMap::new();
    for integration in &generation.integrations {
        let mut figures = Figures::default();
        let mut names = integration.events();
        names.sort();
        // Each lane counts with the partitioning it reads with.
        let versions = partitionings::of(&mut tx, &integration.id).await?;
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
            let filter = LaneFilter {
                source: &integration.source,
                events: names.clone(),
                order_by,
                lane,
                lanes,
            };
            let unread = log::backlog(&mut tx, &filter, cursor, &now, cap).await?;
            if unread == 0 {
                continue;
            }
            figures.unread += unread;
            if let Some(first) = log::first_unread(&mut tx, &filter, cursor, &now).await? {
                let stored = stored_at(&mut tx, &first).await?;
                figures.oldest = earliest(figures.oldest, stored);
            }
        }
        if let Some(by_status) = counts.get(&integration.id) {
            let count = |status| by_status.get(&status).copied().unwrap_or(0);
            figures.pending = count(Status::Pending);
            figures.retrying = count(Status::Retrying);
            figures.dead = count(Status::Dead);
        }
        if let Some(oldest) = oldest_open.get(&integration.id) {
            figures.oldest = earliest(figures.oldest, Some(*oldest));
        }
        if figures.retrying > 0 || (figures.dead > 0 && integration.on_dead == OnDead::Block) {
            figures.blocked_keys = events::blocked_keys(
                &mut tx,
                OrgScope::Platform,
                &integration.id,
                integration.on_dead == OnDead::Block,
                i64::from(i32::MAX),
            )
            .await?
            .len() as i64;
        }
        out.insert(integration.id.clone(), figures);
    }
    tx.rollback().await?;
    Ok(out)
}

fn earliest(
    a: Option<chrono::DateTime<chrono::Utc>>,
    b: Option<chrono::DateTime<chrono::Utc>>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// When an event of the log was stored (its `created_at`, the database's
/// clock, not the producer's `occurred_at`).
async fn stored_at(
    tx: &mut super::DbTx,
    event: &log::LogEvent,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let events = d.engine_table(EngineTable::Events);
        let [p1, p2] = d.params();
        format!("SELECT created_at FROM {events} WHERE organization_id = {p1} AND id = {p2}")
    });
    let sql = SQL.get(tx.dialect());
    let row: Option<(Time,)> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(Id(event.envelope.organization_id))
        .bind(Id(event.envelope.id))
        .fetch_optional(conn)
        .await)?;
    Ok(row.map(|(time,)| time.0))
}

/// Per integration, when the oldest event with an open delivery row
/// (pending or retrying) was stored.
async fn oldest_open_rows(
    tx: &mut super::DbTx,
) -> Result<HashMap<String, chrono::DateTime<chrono::Utc>>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let deliveries = d.engine_table(EngineTable::Deliveries);
        let events = d.engine_table(EngineTable::Events);
        format!(
            "SELECT d.integration_id, MIN(e.created_at) FROM {deliveries} d \
               JOIN {events} e ON e.organization_id = d.organization_id AND e.id = d.event_id \
              WHERE d.status IN ('pending', 'retrying') GROUP BY d.integration_id"
        )
    });
    let sql = SQL.get(tx.dialect());
    let rows: Vec<(String, Time)> =
        on_tx!(&mut *tx, |conn| sqlx::query_as(sql).fetch_all(conn).await)?;
    Ok(rows.into_iter().map(|(id, time)| (id, time.0)).collect())
}

/// Per source product, events committed that no tick sees yet: lanes read
/// them only once the ticker has made a tick after their commit (within
/// moments; a figure that stays above 0 means the ticker is behind or
/// failing). A long transaction no longer holds other transactions' events
/// back (ARCHITECTURE.md, "Ticks"). Always empty on SQLite, where every
/// committed event can be read.
pub async fn held_by_horizon(
    store: &Store,
    sources: &[String],
) -> Result<HashMap<String, i64>, StoreError> {
    let mut out = HashMap::new();
    if store.dialect() != Dialect::Postgres {
        return Ok(out);
    }
    let mut tx = store.begin_read().await?;
    for source in sources {
        let (held,): (i64,) = match &mut tx {
            super::DbTx::Postgres(conn) => {
                sqlx::query_as(
                    "SELECT COUNT(*) FROM integrations.events e, \
                            (SELECT snapshot FROM integrations.ticks ORDER BY id DESC LIMIT 1) t \
                      WHERE e.source_product = $1 AND e.processed_at IS NULL \
                        AND NOT pg_visible_in_snapshot(e.xid::text::xid8, t.snapshot) \
                        AND (e.xid >= pg_snapshot_xmin(t.snapshot)::text::bigint)",
                )
                .bind(source)
                .fetch_one(&mut **conn)
                .await?
            }
            super::DbTx::Sqlite(_) => (0,),
        };
        out.insert(source.clone(), held);
    }
    tx.rollback().await?;
    Ok(out)
}
