//! Outbox sources (issue 17): a product that owns its PostgreSQL database
//! publishes by inserting into `busbar_outbox.events` there, in its own
//! transactions; busbar moves each committed row into its log once
//! (ARCHITECTURE.md, "Outbox sources in other PostgreSQL databases").
//!
//! This module owns the source side's SQL: the tables ([`SOURCE_DDL`]),
//! the mover's lock, claiming committed rows, and taking away what was
//! moved or refused. It never writes busbar's own log: the engine's mover
//! (`engine::outbox`) appends the rows with `store::log::append` between
//! [`claim`] and [`finish`], on busbar's own transaction.
//!
//! Why nothing is passed over: [`claim`] reads with `FOR UPDATE SKIP
//! LOCKED` at read committed, so a row whose transaction is still open is
//! not visible to it and stays in the table until a later claim, after it
//! commits. There is no cursor to move past it.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreError;

/// The tables of an outbox source, as busbar creates them when the role it
/// connects with may (and as docs/DATABASES.md gives them to a product
/// team). `events` has the columns of `integrations.events` a producer
/// fills, and `seq`, the order rows are moved in; `rejected` keeps the
/// rows busbar refused, with the reason.
pub const SOURCE_DDL: [&str; 3] = [
    "CREATE SCHEMA IF NOT EXISTS busbar_outbox",
    "CREATE TABLE IF NOT EXISTS busbar_outbox.events (
        seq BIGSERIAL PRIMARY KEY,
        id UUID NOT NULL DEFAULT gen_random_uuid(),
        organization_id UUID NOT NULL,
        source_product VARCHAR(50) NOT NULL,
        event_name VARCHAR(100) NOT NULL,
        event_data JSONB NOT NULL DEFAULT '{}',
        occurred_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        idempotency_key VARCHAR(200))",
    "CREATE TABLE IF NOT EXISTS busbar_outbox.rejected (
        n BIGSERIAL PRIMARY KEY,
        seq BIGINT NOT NULL,
        id UUID,
        organization_id UUID,
        source_product TEXT,
        event_name TEXT,
        event_data JSONB,
        occurred_at TIMESTAMPTZ,
        idempotency_key TEXT,
        reason TEXT NOT NULL,
        rejected_at TIMESTAMPTZ NOT NULL DEFAULT now())",
];

/// Rows moved per source transaction, at most.
pub const CLAIM_LIMIT: i64 = 500;

/// The advisory lock one mover of a source holds for its transaction, so
/// that two busbar processes never move the same source at once (and the
/// log gets the rows in the order the source committed them).
const MOVER_LOCK: i64 = 0x6275_7362_6172_6f62; // "busbarob"

/// One committed row of `busbar_outbox.events`, as read: every column may
/// be missing or of another shape in a table a product team made itself,
/// and such a row is refused with a reason, not dropped.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub seq: i64,
    pub id: Option<Uuid>,
    pub organization_id: Option<Uuid>,
    pub source_product: Option<String>,
    pub event_name: Option<String>,
    /// `event_data` as JSON text.
    pub event_data: Option<String>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub idempotency_key: Option<String>,
}

/// Whether `busbar_outbox.events` is there.
pub async fn exists(conn: &mut PgConnection) -> Result<bool, StoreError> {
    let (events, rejected): (bool, bool) = sqlx::query_as(
        "SELECT to_regclass('busbar_outbox.events') IS NOT NULL, \
                to_regclass('busbar_outbox.rejected') IS NOT NULL",
    )
    .fetch_one(conn)
    .await?;
    Ok(events && rejected)
}

/// Creates the tables that are missing ([`SOURCE_DDL`]).
pub async fn create(conn: &mut PgConnection) -> Result<(), StoreError> {
    for statement in SOURCE_DDL {
        sqlx::query(statement).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Takes the source's mover lock for the transaction; false when another
/// process holds it (it is moving this source now).
pub async fn lock_mover(conn: &mut PgConnection) -> Result<bool, StoreError> {
    let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_xact_lock($1)")
        .bind(MOVER_LOCK)
        .fetch_one(conn)
        .await?;
    Ok(locked)
}

/// The oldest committed rows, up to `limit`, locked for this transaction.
/// A row of a transaction still open is invisible here (read committed)
/// and is claimed by a later call once it commits.
pub async fn claim(conn: &mut PgConnection, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
    type Raw = (
        i64,
        Option<Uuid>,
        Option<Uuid>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<DateTime<Utc>>,
        Option<String>,
    );
    let rows: Vec<Raw> = sqlx::query_as(
        "SELECT seq, id, organization_id, source_product::text, event_name::text, \
                event_data::text, occurred_at, idempotency_key::text \
         FROM busbar_outbox.events ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(
                seq,
                id,
                organization_id,
                source_product,
                event_name,
                event_data,
                occurred_at,
                key,
            )| {
                OutboxRow {
                    seq,
                    id,
                    organization_id,
                    source_product,
                    event_name,
                    event_data,
                    occurred_at,
                    idempotency_key: key,
                }
            },
        )
        .collect())
}

/// Takes away the rows now in busbar's log (`moved`), and moves the
/// refused ones (`rejected`: seq and reason) to `busbar_outbox.rejected`.
/// Runs in the claim's transaction, after busbar's own has committed.
pub async fn finish(
    conn: &mut PgConnection,
    moved: &[i64],
    rejected: &[(i64, String)],
) -> Result<(), StoreError> {
    if !moved.is_empty() {
        sqlx::query("DELETE FROM busbar_outbox.events WHERE seq = ANY($1)")
            .bind(moved)
            .execute(&mut *conn)
            .await?;
    }
    if !rejected.is_empty() {
        let (seqs, reasons): (Vec<i64>, Vec<String>) = rejected.iter().cloned().unzip();
        sqlx::query(
            "WITH refused AS (DELETE FROM busbar_outbox.events WHERE seq = ANY($1) \
                 RETURNING seq, id, organization_id, source_product, event_name, event_data, \
                           occurred_at, idempotency_key) \
             INSERT INTO busbar_outbox.rejected (seq, id, organization_id, source_product, event_name, \
                 event_data, occurred_at, idempotency_key, reason) \
             SELECT r.seq, r.id, r.organization_id, r.source_product, r.event_name, r.event_data, \
                    r.occurred_at, r.idempotency_key, u.reason \
             FROM refused r JOIN UNNEST($1::bigint[], $2::text[]) AS u(seq, reason) ON u.seq = r.seq",
        )
        .bind(seqs)
        .bind(reasons)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
