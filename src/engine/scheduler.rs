//! Which lane a worker takes next. A lane is in the queue at most once and
//! is worked by at most one worker of this process at a time (across
//! processes, the lane's row lock decides). A wake-up queues lanes; a lane
//! whose batch was full, or that was woken while busy, is queued again when
//! its worker is done; a lane waiting for a retry gets a timer.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::Shared;
use super::lane::{self, LaneId, Memory, Visit};

#[derive(Default)]
pub(crate) struct Scheduler {
    inner: std::sync::Mutex<Inner>,
    ready: Notify,
}

#[derive(Default)]
struct Inner {
    lanes: Vec<LaneId>,
    queue: VecDeque<LaneId>,
    queued: HashSet<LaneId>,
    busy: HashSet<LaneId>,
    /// Woken while busy: queue again when done.
    again: HashSet<LaneId>,
    timers: BTreeSet<(Instant, LaneId)>,
    memory: HashMap<LaneId, Memory>,
}

impl Inner {
    fn enqueue(&mut self, lane: &LaneId) -> bool {
        if self.busy.contains(lane) {
            self.again.insert(lane.clone());
            return false;
        }
        if self.queued.insert(lane.clone()) {
            self.queue.push_back(lane.clone());
            return true;
        }
        false
    }
}

impl Scheduler {
    /// The lanes of the live generation.
    pub fn set_lanes(&self, lanes: Vec<LaneId>) {
        let mut inner = self.inner.lock().expect("scheduler lock");
        let known: HashSet<&LaneId> = lanes.iter().collect();
        inner.queue.retain(|lane| known.contains(lane));
        inner.queued.retain(|lane| known.contains(lane));
        inner.timers.retain(|(_, lane)| known.contains(lane));
        inner.memory.retain(|lane, _| known.contains(lane));
        inner.lanes = lanes;
    }

    /// Queues every lane.
    pub fn wake_all(&self) {
        self.wake(|lanes| lanes.to_vec());
    }

    /// Queues the given lanes.
    pub fn wake_lanes(&self, lanes: impl IntoIterator<Item = LaneId>) {
        let lanes: Vec<LaneId> = lanes.into_iter().collect();
        self.wake(|_| lanes);
    }

    /// Queues every lane of one integration.
    pub fn wake_integration(&self, integration: &str) {
        self.wake(|lanes| {
            lanes
                .iter()
                .filter(|l| &*l.integration == integration)
                .cloned()
                .collect()
        });
    }

    /// Queues the lanes `choose` picks from the live ones, and wakes a
    /// worker for each lane that was not already queued or busy.
    fn wake(&self, choose: impl FnOnce(&[LaneId]) -> Vec<LaneId>) {
        let mut inner = self.inner.lock().expect("scheduler lock");
        let chosen = choose(&inner.lanes);
        let mut woke = 0;
        for lane in &chosen {
            if inner.enqueue(lane) {
                woke += 1;
            }
        }
        drop(inner);
        for _ in 0..woke {
            self.ready.notify_one();
        }
    }

    /// The next lane to work, and what it remembers.
    pub async fn next(&self) -> (LaneId, Memory) {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let deadline = {
                let mut inner = self.inner.lock().expect("scheduler lock");
                let now = Instant::now();
                while let Some((at, lane)) = inner.timers.first().cloned() {
                    if at > now {
                        break;
                    }
                    inner.timers.pop_first();
                    inner.enqueue(&lane);
                }
                if let Some(lane) = inner.queue.pop_front() {
                    inner.queued.remove(&lane);
                    inner.busy.insert(lane.clone());
                    let memory = inner.memory.get(&lane).cloned().unwrap_or_default();
                    // Another worker may take the next queued lane.
                    if !inner.queue.is_empty() {
                        self.ready.notify_one();
                    }
                    return (lane, memory);
                }
                inner.timers.first().map(|(at, _)| *at)
            };
            match deadline {
                Some(at) => {
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep_until(at.into()) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// A worker is done with `lane`.
    pub fn done(&self, lane: LaneId, memory: Memory, visit: Visit, retry_in: Option<Duration>) {
        let mut inner = self.inner.lock().expect("scheduler lock");
        inner.busy.remove(&lane);
        inner.memory.insert(lane.clone(), memory);
        let again = inner.again.remove(&lane);
        let mut woke = false;
        if visit.more || again {
            woke = inner.enqueue(&lane);
        }
        let due = visit.due.map(|due| {
            let wait = (due.0 - chrono::Utc::now()).to_std().unwrap_or_default();
            Instant::now() + wait
        });
        if let Some(at) = due.or(retry_in.map(|d| Instant::now() + d)) {
            // One timer per lane: keep the earliest.
            let existing: Vec<(Instant, LaneId)> = inner
                .timers
                .iter()
                .filter(|(_, l)| *l == lane)
                .cloned()
                .collect();
            let earliest = existing.iter().map(|(t, _)| *t).min();
            if earliest.is_none_or(|t| at < t) {
                for timer in existing {
                    inner.timers.remove(&timer);
                }
                inner.timers.insert((at, lane));
                woke = true;
            }
        }
        drop(inner);
        if woke {
            self.ready.notify_one();
        }
    }
}

/// Decrements the count of live workers when a worker ends, however it
/// ends.
struct Alive<'a>(&'a Shared);

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        self.0.workers_alive.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One worker: takes lanes and visits them until shutdown. A visit is
/// never cancelled halfway: shutdown is looked at between visits.
pub(crate) async fn worker(shared: Arc<Shared>, index: usize) {
    shared.workers_alive.fetch_add(1, Ordering::Relaxed);
    let _alive = Alive(&shared);
    let mut failures = 0u32;
    loop {
        let (lane, mut memory) = tokio::select! {
            next = shared.scheduler.next() => next,
            () = shared.shutdown.cancelled() => return,
        };
        let result = lane::CatchUnwind::new(lane::visit(&shared, &lane, &mut memory)).await;
        match result {
            Ok(Ok(visit)) => {
                failures = 0;
                shared.scheduler.done(lane, memory, visit, None);
            }
            Ok(Err(error)) => {
                failures = failures.saturating_add(1);
                tracing::warn!(worker = index, %lane, %error, "lane batch failed; will retry");
                // The database may be down: back off, up to 5 s.
                let pause = Duration::from_millis(100 * u64::from(failures.min(50)));
                shared
                    .scheduler
                    .done(lane, memory, Visit::default(), Some(pause));
                tokio::select! {
                    () = tokio::time::sleep(pause.min(Duration::from_secs(1))) => {}
                    () = shared.shutdown.cancelled() => return,
                }
            }
            Err(panic) => {
                tracing::error!(worker = index, %lane, panic, "internal error: a lane visit panicked; the lane is retried in 5 s");
                shared.scheduler.done(
                    lane,
                    Memory::default(),
                    Visit::default(),
                    Some(Duration::from_secs(5)),
                );
            }
        }
    }
}

/// Wakes every lane each poll interval: covers what no notification
/// announced (another process's writes without LISTEN, due retries after a
/// restart).
pub(crate) async fn poll(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(shared.config.poll_interval) => shared.scheduler.wake_all(),
            () = shared.shutdown.cancelled() => return,
        }
    }
}
