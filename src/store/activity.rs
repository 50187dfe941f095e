//! What delivery waits on outside busbar (PostgreSQL): sessions holding a
//! lock that one of busbar's connections waits for, and transactions
//! that have held a transaction id for long. Read from `pg_stat_activity`
//! and `pg_blocking_pids`, for the status API, `/metrics` and the console.
//!
//! Ticks make a long transaction delay only its own events (they are
//! invisible until it commits) and the rows it locks; this names it. The
//! query text is shown where the database lets busbar's role see it
//! (`pg_read_all_stats`, or the same role); elsewhere it is `None`.
//! Only busbar's own database is looked at: a transaction in another
//! database of the cluster can neither write busbar's outbox nor hold its
//! locks. SQLite has one writer and no other sessions: nothing to report.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Store, StoreError};

/// How long a transaction must have held an id to be reported.
pub const LONG_TRANSACTION_SECS: f64 = 5.0;

/// Longest query text shown.
const QUERY_CHARS: i32 = 300;

/// A session delivery waits on.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Blocker {
    /// `lock`: a busbar connection waits for a lock this session holds;
    /// `transaction`: this session's transaction has held a transaction id
    /// for a while (events it writes, and rows it locks, wait for it).
    pub kind: String,
    pub pid: i32,
    pub database: Option<String>,
    pub user: Option<String>,
    pub application: Option<String>,
    /// `active`, `idle in transaction`, …
    pub state: Option<String>,
    /// When its transaction began.
    pub since: Option<DateTime<Utc>>,
    pub age_seconds: f64,
    /// Its current or last statement (at most 300 characters), when the
    /// database shows it to busbar's role.
    pub query: Option<String>,
    /// The busbar connections (pids) waiting for its locks.
    pub blocking: Vec<i32>,
}

type BlockerRow = (
    String,
    i32,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<f64>,
    Option<String>,
    Option<Vec<i32>>,
);

/// The sessions delivery waits on now, oldest transaction first.
pub async fn blockers(store: &Store) -> Result<Vec<Blocker>, StoreError> {
    let Some(mut conn) = store.acquire_postgres().await? else {
        return Ok(Vec::new());
    };
    let rows: Vec<BlockerRow> = sqlx::query_as(
        "WITH waiting AS ( \
             SELECT w.pid AS waiter, b.pid AS blocker \
               FROM pg_stat_activity w, LATERAL unnest(pg_blocking_pids(w.pid)) AS b(pid), \
                    pg_stat_activity h \
              WHERE w.application_name = 'busbar' AND w.pid <> pg_backend_pid() \
                AND w.datname = current_database() \
                AND h.pid = b.pid AND h.application_name <> 'busbar'), \
         chosen AS ( \
             SELECT blocker AS pid, 'lock' AS kind, array_agg(DISTINCT waiter) AS blocking \
               FROM waiting GROUP BY blocker \
             UNION ALL \
             SELECT a.pid, 'transaction', NULL::int[] FROM pg_stat_activity a \
              WHERE a.backend_xid IS NOT NULL AND a.pid <> pg_backend_pid() \
                AND a.datname = current_database() \
                AND a.application_name <> 'busbar' \
                AND a.xact_start < now() - make_interval(secs => $1) \
                AND a.pid NOT IN (SELECT blocker FROM waiting)) \
         SELECT c.kind, c.pid, a.datname::text, a.usename::text, a.application_name, a.state, a.xact_start, \
                EXTRACT(EPOCH FROM now() - a.xact_start)::float8, \
                CASE WHEN a.query = '<insufficient privilege>' THEN NULL ELSE left(a.query, $2) END, \
                c.blocking \
           FROM chosen c JOIN pg_stat_activity a ON a.pid = c.pid \
          ORDER BY a.xact_start NULLS LAST",
    )
    .bind(LONG_TRANSACTION_SECS)
    .bind(QUERY_CHARS)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(kind, pid, database, user, application, state, since, age, query, blocking)| {
                Blocker {
                    kind,
                    pid,
                    database,
                    user,
                    application,
                    state,
                    since,
                    age_seconds: age.unwrap_or(0.0).max(0.0),
                    query,
                    blocking: blocking.unwrap_or_default(),
                }
            },
        )
        .collect())
}
