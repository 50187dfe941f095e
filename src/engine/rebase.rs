//! `busbar rebase`: after the database was restored from a dump or moved
//! to another PostgreSQL cluster (logical replication, a managed service),
//! the positions busbar stored — ticks, lane cursors, events' transaction
//! ids — are the old cluster's, and the new one's transaction ids may be
//! behind them. `ticks::check_cluster` refuses to start then; this is the
//! fix (ARCHITECTURE.md, "Cluster identity").
//!
//! In one transaction, with every lane taken: each lane's events that it
//! has not passed (decided on the old positions, which are consistent among
//! themselves) become `pending` delivery rows, keyed by the integration's
//! current order key, so they run in order per key before the key's later
//! events; then every stored event and row gets the transaction id 3 (below
//! every transaction of any cluster), the ticks start again from this
//! cluster's snapshot, every lane's cursor is that first tick, and the
//! cluster's identifier is recorded.
//!
//! It must run with every busbar process stopped and, for exactness, before
//! products write to the outbox on the new cluster: an outbox event written
//! there before the rebase has a transaction id of the new cluster, which
//! the old positions cannot place.

use crate::compile::Generation;
use crate::delivery::delivery_id;
use crate::store::events::Status;
use crate::store::lanes::{self, DeliveryRow};
use crate::store::types::{Position, Time};
use crate::store::{DbTx, Store, StoreError, log, partitionings, ticks};

/// What a rebase did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Rebased {
    /// Deliveries no lane had reached, now pending rows.
    pub pending: u64,
    /// Events whose transaction id was rewritten.
    pub events: u64,
    /// The cluster's identifier now recorded.
    pub cluster: String,
}

/// Rebases the positions of `store` (PostgreSQL) onto the cluster it is on
/// now, with `generation`'s integrations. On SQLite there is nothing to do.
pub async fn rebase(store: &Store, generation: &Generation) -> Result<Rebased, StoreError> {
    let mut tx = store.begin().await?;
    if !matches!(tx, DbTx::Postgres(_)) {
        tx.rollback().await?;
        return Err(StoreError::Invalid(
            "SQLite keeps no transaction ids: there is nothing to rebase".into(),
        ));
    }
    if let DbTx::Postgres(conn) = &mut tx {
        sqlx::query("SELECT pg_advisory_xact_lock($1, 0)")
            .bind(ticks::TICK_LOCK)
            .execute(&mut **conn)
            .await?;
    }
    let lane_count = log::lanes_for(store.dialect());
    let now = Time::now();
    let mut out = Rebased::default();
    for integration in &generation.integrations {
        lanes::take_all(&mut tx, &integration.id, lane_count).await?;
        let versions = partitionings::of(&mut tx, &integration.id).await?;
        let latest = versions.last().cloned();
        let (order_by, lanes_now) = latest
            .as_ref()
            .map_or((&integration.order_by, lane_count), |p| {
                (&p.order_by, p.lanes)
            });
        let mut names: Vec<String> = integration.routes.iter().map(|r| r.on.clone()).collect();
        names.sort();
        names.dedup();
        for view in lanes::all(&mut tx)
            .await?
            .into_iter()
            .filter(|l| l.integration == integration.id)
        {
            // The lane's own partitioning decides which events are its own.
            let (lane_order_by, lanes_then) = versions
                .iter()
                .find(|p| p.version == view.version)
                .map_or((order_by, lanes_now), |p| (&p.order_by, p.lanes));
            let filter = log::LaneFilter {
                source: &integration.source,
                events: names.clone(),
                order_by: lane_order_by,
                lane: view.lane,
                lanes: lanes_then,
            };
            let unpassed = log::not_passed(&mut tx, &filter, &view.cursor, &view.origin).await?;
            let mut rows = Vec::new();
            for event in unpassed {
                let key = order_by.key_of(&event.envelope);
                for route in integration.routes_for(&event.envelope.event) {
                    rows.push(DeliveryRow {
                        id: delivery_id(
                            event.envelope.organization_id,
                            event.envelope.id,
                            &integration.id,
                            &route.on,
                            &route.identity(),
                        ),
                        event_id: event.envelope.id,
                        organization_id: event.envelope.organization_id,
                        integration_id: integration.id.clone(),
                        route_event: route.on.clone(),
                        route_ordinal: route.ordinal as i32,
                        route_name: Some(route.recorded_name().to_owned()),
                        source_product: integration.source.clone(),
                        target_product: integration.target.clone(),
                        status: Status::Pending,
                        attempts: 0,
                        next_attempt_at: now,
                        last_error: None,
                        error_step: None,
                        generation: Some(generation.number as i64),
                        lane: log::lane_of_key(&key, lanes_now),
                        order_key: Some(key.clone()),
                        position: Position::new(3, event.position.seq),
                        epoch: 0,
                    });
                }
            }
            out.pending += rows.len() as u64;
            lanes::write_rows(&mut tx, &rows, true, now).await?;
        }
        // Open rows of a partitioning switch that had not happened yet get
        // the current key.
        if let Some(latest) = &latest {
            for open in lanes::open_of_integration(&mut tx, &integration.id).await? {
                let key = latest.order_by.key_of(&open.event);
                lanes::rekey(
                    &mut tx,
                    open.row.id,
                    &key,
                    log::lane_of_key(&key, latest.lanes),
                )
                .await?;
            }
            lanes::set_version(&mut tx, &integration.id, latest.version).await?;
        }
    }
    let DbTx::Postgres(conn) = &mut tx else {
        unreachable!("checked above");
    };
    out.events = sqlx::query("UPDATE integrations.events SET xid = 3 WHERE xid <> 3")
        .execute(&mut **conn)
        .await?
        .rows_affected();
    for statement in [
        "UPDATE integrations.deliveries SET event_xid = 3 WHERE event_xid <> 3",
        "DELETE FROM integrations.ticks",
        "UPDATE integrations.partitionings SET from_tick = 0, from_snapshot = '3:3:'",
        "UPDATE integrations.integration_state SET skip_snapshot = NULL",
        "DELETE FROM integrations.cluster",
        "INSERT INTO integrations.cluster (system_identifier) \
         SELECT system_identifier::text FROM pg_control_system()",
    ] {
        sqlx::query(statement).execute(&mut **conn).await?;
    }
    let tick = ticks::make(&mut tx).await?;
    let DbTx::Postgres(conn) = &mut tx else {
        unreachable!("checked above");
    };
    sqlx::query(
        "UPDATE integrations.lanes SET batch_from = $1::pg_snapshot, batch_to = $1::pg_snapshot, \
                batch_to_tick = $2, cursor_xid = 0, cursor_seq = 0, origin_snapshot = '3:3:', \
                origin_xid = 0, origin_seq = 0",
    )
    .bind(tick.snapshot.to_text())
    .bind(tick.id)
    .execute(&mut **conn)
    .await?;
    out.cluster = sqlx::query_scalar("SELECT system_identifier FROM integrations.cluster")
        .fetch_one(&mut **conn)
        .await?;
    tx.commit().await?;
    tracing::info!(pending = out.pending, events = out.events, cluster = %out.cluster, "rebased");
    Ok(out)
}
