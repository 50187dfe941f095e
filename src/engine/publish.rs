//! Publishing with group commit: concurrent publishes are gathered into one
//! transaction, so a commit's cost is shared by every event in it, and each
//! caller is answered only after the commit.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use super::Shared;
use crate::store::StoreError;
use crate::store::events::NewEvent;
use crate::store::types::Time;

/// Events from one caller, committed together, and where to answer.
pub(crate) struct Job {
    pub events: Vec<NewEvent>,
    pub reply: oneshot::Sender<Result<Vec<(Uuid, bool)>, StoreError>>,
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

async fn commit(shared: &Shared, jobs: Vec<Job>) {
    let events: Vec<NewEvent> = jobs.iter().flat_map(|j| j.events.iter().cloned()).collect();
    let generation = shared.generation.load_full();
    let started = std::time::Instant::now();
    let result = async {
        let mut tx = shared.store.begin().await?;
        let stored = shared
            .store_events(&mut tx, &generation, &events, Time::now())
            .await?;
        tx.commit().await?;
        Ok::<_, StoreError>(stored)
    }
    .await;
    match result {
        Ok(stored) => {
            tracing::debug!(events = events.len(), elapsed = ?started.elapsed(), "publish batch committed");
            crate::telemetry::publish_committed(events.len(), started.elapsed());
            shared.work.raise();
            let mut stored = stored.into_iter();
            for job in jobs {
                let answer: Vec<(Uuid, bool)> = stored.by_ref().take(job.events.len()).collect();
                let _ = job.reply.send(Ok(answer));
            }
        }
        Err(error) => {
            tracing::warn!(%error, events = events.len(), "publish transaction failed; nothing was stored");
            let message = error.to_string();
            for job in jobs {
                // Every caller gets the failure; the error is re-created
                // per caller as it cannot be cloned.
                let _ = job.reply.send(Err(StoreError::Invalid(message.clone())));
            }
        }
    }
}
