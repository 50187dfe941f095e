//! Publishing with group commit: concurrent publishes are gathered into one
//! transaction, so a commit's cost is shared by every event in it, and each
//! caller is answered only after the commit.
//!
//! The transaction runs in the publisher's own task, so a caller that goes
//! away (a client hanging up, a request timeout) never leaves a transaction
//! half done. While the database is unreachable ([`super::Health`]), jobs
//! are answered at once with "retry"; the breaker's own probe, not a
//! publish, finds out when it is back.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

use super::{PublishError, Published, Shared};
use crate::store::StoreError;
use crate::store::log::NewEvent;
use crate::store::log::{self, Appended};
use crate::store::types::Time;

/// How long telling a busy pool from an unreachable database may take.
const REACHABLE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(300);

/// Events from one caller, committed together, and where to answer.
pub(crate) struct Job {
    pub events: Vec<NewEvent>,
    pub reply: oneshot::Sender<Result<Vec<Published>, PublishError>>,
}

/// One publisher: takes every job waiting (up to the batch size), commits
/// them in one transaction, answers each.
pub(crate) async fn run(shared: Arc<Shared>, receiver: Arc<Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let jobs = {
            let mut receiver = receiver.lock().await;
            let first = tokio::select! {
                job = receiver.recv() => job,
                // On shutdown, keep draining what is queued; stop when empty.
                () = shared.shutdown.cancelled() => receiver.try_recv().ok(),
            };
            let Some(first) = first else { return };
            let mut count = first.events.len();
            let mut jobs = vec![first];
            while count < shared.config.publish_batch {
                match receiver.try_recv() {
                    Ok(job) => {
                        count += job.events.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            jobs
        };
        commit(&shared, jobs).await;
    }
}

async fn commit(shared: &Shared, mut jobs: Vec<Job>) {
    // Jobs queued while the database went away are answered at once.
    if let Some(error) = shared.health.refuse() {
        let message = error.to_string();
        for job in jobs {
            let _ = job
                .reply
                .send(Err(PublishError::Unavailable(StoreError::Unreachable(
                    message.clone(),
                ))));
        }
        return;
    }
    loop {
        let events: Vec<NewEvent> = jobs.iter().flat_map(|j| j.events.iter().cloned()).collect();
        let started = std::time::Instant::now();
        let result = async {
            let mut tx = super::health::begin(&shared.store).await?;
            let appended = log::append(&mut tx, &events, Time::now()).await?;
            Ok::<_, StoreError>((tx, appended))
        }
        .await;
        let (tx, appended) = match result {
            Ok(ok) => ok,
            Err(error) => return fail(shared, jobs, error).await,
        };
        // A job with a reused id or key is refused whole: start again
        // without it (rare; a batch is all or none).
        let mut offset = 0;
        let mut refused = HashSet::new();
        for (index, job) in jobs.iter().enumerate() {
            let mine = &appended[offset..offset + job.events.len()];
            if mine.iter().any(|a| matches!(a, Appended::Reused { .. })) {
                refused.insert(index);
            }
            offset += job.events.len();
        }
        if !refused.is_empty() {
            if let Err(error) = tx.rollback().await {
                return fail(shared, jobs, error).await;
            }
            let mut offset = 0;
            let mut kept = Vec::new();
            for (index, job) in jobs.into_iter().enumerate() {
                let mine = &appended[offset..offset + job.events.len()];
                offset += job.events.len();
                if !refused.contains(&index) {
                    kept.push(job);
                    continue;
                }
                let (position, (id, differs)) = mine
                    .iter()
                    .enumerate()
                    .find_map(|(i, a)| match a {
                        Appended::Reused { id, differs } => Some((i, (*id, differs.clone()))),
                        _ => None,
                    })
                    .expect("a refused job has a reused event");
                let _ = job.reply.send(Err(PublishError::Reused {
                    index: position,
                    id,
                    differs,
                }));
            }
            jobs = kept;
            if jobs.is_empty() {
                return;
            }
            continue;
        }
        if let Err(error) = tx.commit().await {
            return fail(shared, jobs, error).await;
        }
        shared.health.succeeded();
        tracing::debug!(events = events.len(), elapsed = ?started.elapsed(), "publish batch committed");
        crate::telemetry::publish_committed(events.len(), started.elapsed());
        shared.wake_for(
            events
                .iter()
                .zip(&appended)
                .filter(|(_, a)| matches!(a, Appended::Created(_)))
                .map(|(e, _)| &e.envelope),
        );
        shared.announce_published(
            events
                .iter()
                .zip(&appended)
                .filter(|(_, a)| matches!(a, Appended::Created(_)))
                .map(|(e, _)| e),
        );
        let mut appended = appended.into_iter();
        for job in jobs {
            let answer: Vec<Published> = appended
                .by_ref()
                .take(job.events.len())
                .map(|a| Published {
                    id: a.id(),
                    created: matches!(a, Appended::Created(_)),
                })
                .collect();
            let _ = job.reply.send(Ok(answer));
        }
        return;
    }
}

async fn fail(shared: &Shared, jobs: Vec<Job>, error: StoreError) {
    let count: usize = jobs.iter().map(|j| j.events.len()).sum();
    tracing::warn!(%error, events = count, "publish transaction failed; nothing was stored");
    // A pool that timed out may be busy rather than cut off: only a
    // database that cannot be reached opens the breaker.
    let busy = matches!(&error, StoreError::Sqlx(sqlx::Error::PoolTimedOut))
        && shared.store.reachable(REACHABLE_TIMEOUT).await;
    if !busy {
        shared.health.failed(&error);
    }
    let message = error.to_string();
    let unreachable = error.is_unreachable();
    for job in jobs {
        // Every caller gets the failure; the error is re-created per
        // caller as it cannot be cloned.
        let error = if unreachable {
            StoreError::Unreachable(message.clone())
        } else {
            StoreError::Invalid(message.clone())
        };
        let _ = job.reply.send(Err(PublishError::Unavailable(error)));
    }
}
