//! Failpoints: places where a test makes the process die as `kill -9`
//! would, at the worst moment (between two commits).
//!
//! `BUSBAR_FAILPOINT=NAME@N` aborts the process the `N`th time the
//! failpoint `NAME` is reached (`N` defaults to 1). Unset, a failpoint is
//! one relaxed atomic load. Names:
//!
//! - `after-target-commit`: a batch committed in another database
//!   (databases.yaml), before busbar's own bookkeeping commits.
//! - `after-outbox-append`: events of an outbox source committed in
//!   busbar's log, before they are deleted from the source.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The armed failpoint: its name and the hit that aborts.
static ARMED: LazyLock<Option<(String, u64)>> = LazyLock::new(|| {
    let spec = std::env::var("BUSBAR_FAILPOINT").ok()?;
    let (name, nth) = match spec.split_once('@') {
        Some((name, nth)) => (name.to_owned(), nth.parse().unwrap_or(1)),
        None => (spec, 1),
    };
    Some((name, nth.max(1)))
});

static HITS: AtomicU64 = AtomicU64::new(0);

/// Aborts the process here if `name` is armed and this is its hit.
pub fn hit(name: &str) {
    if let Some((armed, nth)) = ARMED.as_ref()
        && armed == name
        && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *nth
    {
        eprintln!("busbar: failpoint `{name}` reached: aborting");
        std::process::abort();
    }
}
