//! The outbox mover (issue 17): moves the rows products commit into
//! `busbar_outbox.events` in their own PostgreSQL databases (those of
//! `databases.yaml` with `outbox: true`) into busbar's log, once each
//! (ARCHITECTURE.md, "Outbox sources in other PostgreSQL databases").
//!
//! One task walks the outbox sources of the live databases
//! (`Shared::targets`, so a reload adds and removes sources) every
//! [`INTERVAL`], and at once again after a full claim. For each source,
//! one batch is two transactions, always in this order:
//!
//! 1. in the source: the mover lock, then the oldest committed rows,
//!    locked (`store::outbox::claim`);
//! 2. in busbar: each valid row appended to the log (`log::append`,
//!    idempotent by id), committed;
//! 3. in the source: the moved rows deleted and the refused ones moved to
//!    `busbar_outbox.rejected` with their reason, committed.
//!
//! A crash between 2 and 3 leaves the rows in the source; the next batch
//! appends them again, which `log::append` finds already stored, and
//! deletes them: nothing twice, nothing lost. A source that is down is
//! marked down (`TargetDb::failed`) and left alone for a while; publishing
//! and delivery do not wait for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::Shared;
use crate::compile::Generation;
use crate::envelope::{Envelope, Violation};
use crate::store::StoreError;
use crate::store::log::{self, Appended, NewEvent};
use crate::store::outbox::{self, CLAIM_LIMIT, OutboxRow};
use crate::store::targets::TargetDb;
use crate::store::types::Time;

/// How often the sources are looked at when the last look found less
/// than a full claim.
const INTERVAL: Duration = Duration::from_millis(200);

/// The longest pause after failures in a row.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// Where a batch failed: the source's failures make it rest; busbar's own
/// are the publish path's to report.
#[derive(Debug)]
enum MoveError {
    Source(StoreError),
    Own(StoreError),
}

/// A source's failures in a row, and when to try it again.
struct Pause {
    failures: u32,
    until: Instant,
}

/// The mover's task: runs for the engine's life.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut paused: HashMap<String, Pause> = HashMap::new();
    loop {
        if shared.shutdown.is_cancelled() {
            return;
        }
        let full = visit_sources(&shared, &mut paused).await;
        if !full {
            tokio::select! {
                () = tokio::time::sleep(INTERVAL) => {}
                () = shared.shutdown.cancelled() => return,
            }
        }
    }
}

/// Moves one batch from each outbox source that is not resting; true when
/// one of them had a full claim (more rows are likely waiting).
async fn visit_sources(shared: &Shared, paused: &mut HashMap<String, Pause>) -> bool {
    let targets = shared.targets.load_full();
    paused.retain(|name, _| targets.get(name).is_some_and(|t| t.outbox));
    let mut full = false;
    for source in targets.iter().filter(|t| t.outbox) {
        if shared.health.refuse().is_some() {
            // busbar's own database is out of reach: the publish path's
            // breaker reports it; the rows wait in the sources.
            break;
        }
        if source.resting().is_some()
            || paused
                .get(&source.name)
                .is_some_and(|p| p.until > Instant::now())
        {
            continue;
        }
        match move_batch(shared, source).await {
            Ok(claimed) => {
                paused.remove(&source.name);
                full |= claimed >= CLAIM_LIMIT as usize;
            }
            Err(error) => pause(source, paused, error),
        }
    }
    full
}

/// Records a failed batch: the source rests, longer after each failure in
/// a row, and a source out of reach is marked down for the status API.
fn pause(source: &TargetDb, paused: &mut HashMap<String, Pause>, error: MoveError) {
    let entry = paused.entry(source.name.clone()).or_insert(Pause {
        failures: 0,
        until: Instant::now(),
    });
    entry.failures = entry.failures.saturating_add(1);
    let pause = (INTERVAL * entry.failures.min(25)).min(MAX_PAUSE);
    entry.until = Instant::now() + pause;
    match error {
        MoveError::Source(error) => {
            source.failed(&error);
            tracing::warn!(database = %source.name, error = %source.describe(&error), failures = entry.failures,
                "outbox source: moving its events failed; they stay there and are moved once it works again");
        }
        MoveError::Own(error) => {
            tracing::warn!(database = %source.name, %error, failures = entry.failures,
                "outbox source: busbar's own database refused its events; they stay in the source");
        }
    }
}

/// One batch of one source (see the module's steps). Returns how many
/// rows were claimed.
async fn move_batch(shared: &Shared, source: &TargetDb) -> Result<usize, MoveError> {
    let mut tx = source.begin_source().await.map_err(MoveError::Source)?;
    let claimed = async {
        if !outbox::lock_mover(&mut tx).await? {
            // Another process is moving this source now.
            return Ok(Vec::new());
        }
        outbox::claim(&mut tx, CLAIM_LIMIT).await
    }
    .await
    .map_err(MoveError::Source)?;
    if claimed.is_empty() {
        tx.rollback()
            .await
            .map_err(|e| MoveError::Source(e.into()))?;
        source.succeeded();
        return Ok(0);
    }
    let generation = shared.generation.load_full();
    let mut rejected: Vec<(i64, String)> = Vec::new();
    let mut events: Vec<(i64, NewEvent)> = Vec::with_capacity(claimed.len());
    for row in &claimed {
        match event_of(&generation, row) {
            Ok(event) => events.push((row.seq, event)),
            Err(reason) => rejected.push((row.seq, reason)),
        }
    }
    let appended = append(shared, &events).await.map_err(MoveError::Own)?;
    let mut moved = Vec::with_capacity(events.len());
    let mut created: Vec<&NewEvent> = Vec::new();
    for ((seq, event), appended) in events.iter().zip(&appended) {
        match appended {
            Appended::Created(_) => {
                moved.push(*seq);
                created.push(event);
            }
            Appended::Duplicate(_) => moved.push(*seq),
            Appended::Reused { id, differs } => rejected.push((
                *seq,
                format!(
                    "busbar's log already has event {id} (same id or idempotency key) with a different {}: \
                     an event is published once; give a new event a new id",
                    differs.join(", ")
                ),
            )),
        }
    }
    shared.wake_for(created.iter().map(|e| &e.envelope));
    shared.announce_published(created.iter().copied());
    crate::telemetry::event_published(created.len() as u64);
    crate::telemetry::event_duplicate((moved.len() - created.len()) as u64);
    crate::failpoint::hit("after-outbox-append");
    async {
        outbox::finish(&mut tx, &moved, &rejected).await?;
        tx.commit().await?;
        Ok::<_, StoreError>(())
    }
    .await
    .map_err(MoveError::Source)?;
    source.succeeded();
    for (seq, reason) in &rejected {
        tracing::warn!(database = %source.name, seq, %reason,
            "outbox source: a row was refused and moved to busbar_outbox.rejected");
    }
    if !moved.is_empty() {
        tracing::debug!(database = %source.name, moved = moved.len(), created = created.len(), "outbox source: events moved");
    }
    Ok(claimed.len())
}

/// Appends the valid rows to busbar's log in one transaction, committed.
async fn append(shared: &Shared, events: &[(i64, NewEvent)]) -> Result<Vec<Appended>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let events: Vec<NewEvent> = events.iter().map(|(_, e)| e.clone()).collect();
    let mut tx = super::health::begin(&shared.store).await?;
    let appended = log::append(&mut tx, &events, Time::now()).await?;
    tx.commit().await?;
    Ok(appended)
}

/// A row as the event a publish would store, held to the same rules: the
/// envelope's (`Envelope::from_json`) and the event's contract when there
/// is one. The error is the reason the row is refused, in the source
/// table's column names.
fn event_of(generation: &Generation, row: &OutboxRow) -> Result<NewEvent, String> {
    // Without an id a row copied twice (a crash between the commits)
    // would be two events.
    let Some(id) = row.id else {
        return Err("id: is null; an outbox row needs an id, so that it is stored once".into());
    };
    let mut object = Map::new();
    object.insert("id".into(), Value::String(id.to_string()));
    if let Some(source) = &row.source_product {
        object.insert("source".into(), Value::String(source.clone()));
    }
    if let Some(event) = &row.event_name {
        object.insert("event".into(), Value::String(event.clone()));
    }
    if let Some(organization) = row.organization_id {
        object.insert(
            "organization_id".into(),
            Value::String(organization.to_string()),
        );
    }
    if let Some(occurred) = row.occurred_at {
        object.insert(
            "occurred_at".into(),
            Value::String(occurred.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        );
    }
    if let Some(text) = &row.event_data {
        let data: Value = serde_json::from_str(text)
            .map_err(|e| format!("event_data: is not JSON busbar can read: {e}"))?;
        object.insert("data".into(), data);
    }
    let envelope = Envelope::from_json(&Value::Object(object)).map_err(|v| describe(&v))?;
    if let Some(contract) = generation.contracts.get(&envelope.source, &envelope.event) {
        let violations = contract.violations(&envelope.data);
        if !violations.is_empty() {
            return Err(format!(
                "breaks the contract of {}/{}: {}",
                envelope.source,
                envelope.event,
                describe(&violations)
            ));
        }
    }
    Ok(NewEvent {
        envelope,
        idempotency_key: row.idempotency_key.clone(),
        parent_id: None,
    })
}

/// Violations of an envelope as one reason, each at its column of
/// `busbar_outbox.events` (`/data/x` is `event_data/x`).
fn describe(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| {
            let pointer = v.pointer.trim_start_matches('/');
            let (field, rest) = pointer.split_once('/').unwrap_or((pointer, ""));
            let column = match field {
                "source" => "source_product",
                "event" => "event_name",
                "data" => "event_data",
                "" => "row",
                other => other,
            };
            let place = if rest.is_empty() {
                column.to_owned()
            } else {
                format!("{column}/{rest}")
            };
            format!("{place}: {}", v.message)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> OutboxRow {
        OutboxRow {
            seq: 1,
            id: Some(uuid::Uuid::now_v7()),
            organization_id: Some(uuid::Uuid::now_v7()),
            source_product: Some("nexus".into()),
            event_name: Some("employee.hired".into()),
            event_data: Some(r#"{"n": 1}"#.into()),
            occurred_at: Some(chrono::Utc::now()),
            idempotency_key: None,
        }
    }

    #[test]
    fn a_row_is_held_to_the_envelope_rules_and_named_by_its_columns() {
        let dir = crate::config::ConfigDir {
            root: "dir".into(),
            ..crate::config::ConfigDir::default()
        };
        let generation = crate::compile::compile(&dir, 1)
            .generation
            .expect("an empty directory compiles");
        let event = event_of(&generation, &row()).expect("a valid row");
        assert_eq!(event.envelope.source, "nexus");
        assert_eq!(event.envelope.data["n"], 1);

        let bad = OutboxRow {
            event_name: Some("Not An Event".into()),
            event_data: Some("[1, 2]".into()),
            ..row()
        };
        let reason = event_of(&generation, &bad).unwrap_err();
        assert!(reason.contains("event_name: "), "{reason}");
        assert!(reason.contains("event_data"), "{reason}");

        let no_id = OutboxRow { id: None, ..row() };
        assert!(
            event_of(&generation, &no_id)
                .unwrap_err()
                .starts_with("id: is null")
        );
    }
}
