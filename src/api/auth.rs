//! Authentication and authorization, as extractors: a handler that takes a
//! [`Publisher`], [`Reader`] or [`Admin`] cannot run without a valid key
//! with that scope, and gets the [`Caller`] whose organization every query
//! must be scoped by.
//!
//! Keys are `Authorization: Bearer bb_<prefix>_<secret>`; see
//! [`crate::store::keys`] for how they are made and stored. [`KeyCache`]
//! keeps the database out of most requests:
//!
//! - a verified key is trusted for a few seconds, so a busy publisher does
//!   not cost a database read per request (a revoked key is refused once
//!   its entry expires); a wrong secret for a cached key is refused
//!   without a read too;
//! - a prefix the database did not know is remembered as long (a bounded
//!   negative cache), so a client retrying a mistyped key costs nothing;
//! - a client address that failed [`FailureLimit`] times in a window gets
//!   429 with `Retry-After` for keys busbar has never seen valid, without a
//!   read, and lookups of such keys from every address together hold at
//!   most [`MAX_STRANGER_LOOKUPS`] connections. A prefix that belonged to a
//!   real key is never refused by the limit, so a flood of random keys does
//!   not lock out or slow down the keys in use.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use crate::store::Store;
use crate::store::keys::{self, KeyRecord, Scope};
use crate::store::scope::OrgScope;
use crate::telemetry;

/// How long a key check may wait for the database.
const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Who is calling: the key that authenticated the request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: Uuid,
    /// `None`: a platform key, which may act for any organization.
    pub organization: Option<Uuid>,
    pub scopes: Vec<Scope>,
}

impl Caller {
    /// Whether this key may act for `organization`.
    pub fn may_act_for(&self, organization: Uuid) -> bool {
        self.organization.is_none_or(|own| own == organization)
    }

    /// What this key may read: its organization's rows, or every
    /// organization's for a platform key.
    pub fn org_scope(&self) -> OrgScope {
        OrgScope::of_key(self.organization)
    }

    /// What a read is limited to: the key's own organization, or for a
    /// platform key the one asked for (none asked: every organization).
    /// `None`: an organization key asked for another organization.
    pub fn narrowed_scope(&self, requested: Option<Uuid>) -> Option<OrgScope> {
        match (self.org_scope(), requested) {
            (OrgScope::Organization(own), Some(asked)) if own != asked => None,
            (scope @ OrgScope::Organization(_), _) => Some(scope),
            (OrgScope::Platform, asked) => Some(OrgScope::of_key(asked)),
        }
    }

    /// [`Caller::narrowed_scope`] for a list or a change, where asking for
    /// another organization is refused (a lookup by id answers "not
    /// found" instead).
    pub fn organization_scope(&self, requested: Option<Uuid>) -> Result<OrgScope, ApiError> {
        self.narrowed_scope(requested).ok_or_else(|| {
            ApiError::forbidden(
                "organization-forbidden",
                "this key belongs to another organization",
            )
        })
    }

    /// Refuses keys bound to an organization: for changes that affect
    /// every organization (enabling, disabling, reloading).
    pub fn require_platform(&self) -> Result<(), ApiError> {
        match self.organization {
            None => Ok(()),
            Some(_) => Err(ApiError::forbidden(
                "platform-key-required",
                "this changes busbar for every organization, so it needs a platform key (created with --platform)",
            )),
        }
    }
}

/// A caller with the `publish` scope.
#[derive(Debug, Clone)]
pub struct Publisher(pub Caller);

/// A caller with the `read` scope.
#[derive(Debug, Clone)]
pub struct Reader(pub Caller);

/// A caller with the `admin` scope.
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

impl FromRequestParts<AppState> for Publisher {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authorize(parts, state, Scope::Publish).await.map(Publisher)
    }
}

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authorize(parts, state, Scope::Read).await.map(Reader)
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authorize(parts, state, Scope::Admin).await.map(Admin)
    }
}

/// Authenticates the request's key and checks that it has `scope`.
async fn authorize(parts: &Parts, state: &AppState, scope: Scope) -> Result<Caller, ApiError> {
    let Some(header) = parts.headers.get(AUTHORIZATION) else {
        return Err(ApiError::unauthorized(
            "missing-key",
            "send an API key as `Authorization: Bearer <key>`",
        ));
    };
    let presented = header
        .to_str()
        .ok()
        .and_then(|value| {
            let (scheme, key) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
        })
        .ok_or_else(|| {
            ApiError::unauthorized(
                "invalid-authorization",
                "the Authorization header must read `Bearer <key>`",
            )
        })?;
    // Present when served by `api::serve`; without it (a router served
    // some other way) there is no per-address limit.
    let client = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let record = state
        .keys
        .authenticate(state.engine.store(), presented, client)
        .await?;
    if !record.has(scope) {
        let scopes: Vec<&str> = record.scopes.iter().map(|s| s.as_str()).collect();
        return Err(ApiError::forbidden(
            "missing-scope",
            format!(
                "this needs a key with the `{scope}` scope; this key has: {}",
                scopes.join(", ")
            ),
        ));
    }
    Ok(Caller {
        key_id: record.id,
        organization: record.organization_id,
        scopes: record.scopes,
    })
}

/// The most prefixes the negative cache remembers; past it, unknown
/// prefixes are not remembered (the failure limit still bounds them).
const MAX_UNKNOWN_PREFIXES: usize = 10_000;
/// The most lookups at once, from all addresses together, of keys whose
/// prefix never belonged to a real key: a flood from many addresses holds
/// at most this many database connections.
pub const MAX_STRANGER_LOOKUPS: usize = 4;

/// What busbar remembers about API keys, and the failure limit.
#[derive(Debug)]
pub struct KeyCache {
    ttl: Duration,
    /// Records of real keys by prefix, with when they were read. Entries
    /// stay after they expire (only their trust ends), so a prefix that
    /// belonged to a real key is recognised; there are only ever as many
    /// as there are keys.
    known: Mutex<HashMap<String, (KeyRecord, Instant)>>,
    /// Prefixes the database did not know, and when it said so.
    unknown: Mutex<HashMap<String, Instant>>,
    limit: FailureLimit,
    strangers: Semaphore,
    /// One lookup at a time per prefix: the requests that arrive while a
    /// prefix is being read wait for that answer instead of each counting
    /// a failure and reading it again (a producer opening 64 connections
    /// at once with a fresh key is one lookup, not 64 failures).
    /// The gate holds when the last lookup through it failed (the
    /// database did not answer), so those waiting are answered at once.
    reading: Mutex<HashMap<String, Gate>>,
    lookups: AtomicU64,
}

impl KeyCache {
    /// A cache whose answers are trusted for `ttl` (zero: always ask the
    /// database), without a failure limit.
    pub fn new(ttl: Duration) -> KeyCache {
        KeyCache {
            ttl,
            known: Mutex::new(HashMap::new()),
            unknown: Mutex::new(HashMap::new()),
            limit: FailureLimit::new(0, Duration::ZERO),
            strangers: Semaphore::new(MAX_STRANGER_LOOKUPS),
            reading: Mutex::new(HashMap::new()),
            lookups: AtomicU64::new(0),
        }
    }

    /// Refuses (429) an address's keys after `failures` failed
    /// authentications within `window` (zero failures: no limit).
    pub fn with_failure_limit(mut self, failures: u32, window: Duration) -> KeyCache {
        self.limit = FailureLimit::new(failures, window);
        self
    }

    /// How many times this cache has read a key from the database.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    /// The key record for `presented`, if it is a valid, unrevoked key.
    /// `client` is the caller's address, for the failure limit.
    pub async fn authenticate(
        &self,
        store: &Store,
        presented: &str,
        client: Option<IpAddr>,
    ) -> Result<KeyRecord, ApiError> {
        let prefix = keys::prefix_of(presented);
        let mut known = prefix.and_then(|prefix| self.known(prefix));
        // A prefix busbar cannot trust yet: wait for any lookup of it in
        // flight, then look again (that lookup may have answered for us).
        // A known key whose entry expired is read again by each request
        // that finds it so, in parallel: queued one behind another, they
        // would each wait out a lookup timeout while the database is away.
        let mut turn = match (prefix, &known) {
            (Some(prefix), None) => {
                let turn = self.turn(prefix).await;
                if turn.lookup_failed_recently() {
                    return Err(unavailable());
                }
                known = self.known(prefix);
                Some(turn)
            }
            _ => None,
        };
        let record = match known {
            // Trusted: verified locally, whatever the secret.
            Some((_, record, true)) => Some(record),
            // A real key's prefix whose entry expired: read it again. The
            // limit never applies, so keys in use keep working.
            Some((prefix, _, false)) => self.lookup(store, prefix).await?,
            // Never seen valid: subject to the limit.
            None => {
                let client = client.map(Client::of);
                if let Err(retry_after) = self.limit.admit(client) {
                    telemetry::auth_throttled();
                    return Err(ApiError::too_many_requests(
                        "too-many-auth-failures",
                        "too many failed authentications from this address; retry after `Retry-After` seconds with a valid key",
                        retry_after,
                    ));
                }
                let found = match prefix {
                    Some(prefix) if !self.is_unknown(prefix) => {
                        let _permit = self.strangers.acquire().await.expect("never closed");
                        match self.lookup(store, prefix).await {
                            Ok(found) => found,
                            // Not an authentication failure: the database
                            // could not answer.
                            Err(error) => {
                                self.limit.release(client);
                                if let Some(turn) = turn.as_mut() {
                                    turn.lookup_failed();
                                }
                                return Err(error);
                            }
                        }
                    }
                    _ => None,
                };
                if found.as_ref().is_some_and(|r| r.verify(presented)) {
                    self.limit.release(client);
                }
                found
            }
        };
        match record {
            Some(record) if record.verify(presented) => Ok(record),
            _ => {
                telemetry::auth_failed();
                Err(ApiError::unauthorized(
                    "invalid-key",
                    "the API key is not valid (unknown, mistyped or revoked)",
                ))
            }
        }
    }

    /// What the cache holds for `prefix`: the record, and whether it is
    /// still trusted.
    fn known<'p>(&self, prefix: &'p str) -> Option<(&'p str, KeyRecord, bool)> {
        let known = self.known.lock().expect("key cache lock");
        known
            .get(prefix)
            .map(|(record, at)| (prefix, record.clone(), at.elapsed() < self.ttl))
    }

    /// Waits until no other request is reading `prefix`; the returned turn
    /// keeps the others waiting until it is dropped.
    async fn turn(&self, prefix: &str) -> Turn<'_> {
        let gate = {
            let mut reading = self.reading.lock().expect("key cache lock");
            Arc::clone(reading.entry(prefix.to_owned()).or_default())
        };
        let guard = Arc::clone(&gate).lock_owned().await;
        Turn {
            cache: self,
            prefix: prefix.to_owned(),
            gate,
            guard: Some(guard),
        }
    }

    /// Reads the key with `prefix`, remembering the answer.
    async fn lookup(&self, store: &Store, prefix: &str) -> Result<Option<KeyRecord>, ApiError> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        telemetry::auth_lookup();
        // A key check must not keep a producer waiting for a database that
        // is gone: after a second the answer is 503, retry later.
        let read = async {
            let mut tx = store.begin_read().await?;
            let found = keys::find_by_prefix(&mut tx, prefix).await?;
            tx.rollback().await?;
            Ok::<_, crate::store::StoreError>(found)
        };
        let found = match tokio::time::timeout(LOOKUP_TIMEOUT, read).await {
            Ok(found) => found?,
            Err(_) => return Err(unavailable()),
        };
        match &found {
            Some(record) => {
                self.known
                    .lock()
                    .expect("key cache lock")
                    .insert(prefix.to_owned(), (record.clone(), Instant::now()));
            }
            None if !self.ttl.is_zero() => {
                self.forget(prefix);
                let mut unknown = self.unknown.lock().expect("key cache lock");
                if unknown.len() >= MAX_UNKNOWN_PREFIXES {
                    unknown.retain(|_, at| at.elapsed() < self.ttl);
                }
                if unknown.len() < MAX_UNKNOWN_PREFIXES {
                    unknown.insert(prefix.to_owned(), Instant::now());
                }
            }
            None => self.forget(prefix),
        }
        Ok(found)
    }

    /// Forgets a key the database no longer has (deleted, not revoked).
    fn forget(&self, prefix: &str) {
        self.known.lock().expect("key cache lock").remove(prefix);
    }

    /// Whether the database said recently that no key has `prefix`.
    fn is_unknown(&self, prefix: &str) -> bool {
        let unknown = self.unknown.lock().expect("key cache lock");
        unknown
            .get(prefix)
            .is_some_and(|at| at.elapsed() < self.ttl)
    }
}

/// A request's turn to read a prefix (see [`KeyCache::turn`]). The last
/// turn of a prefix removes its gate, so the map holds only prefixes being
/// read.
struct Turn<'c> {
    cache: &'c KeyCache,
    prefix: String,
    gate: Gate,
    guard: Option<tokio::sync::OwnedMutexGuard<Option<Instant>>>,
}

/// One prefix's gate: when the last lookup through it failed, if it did.
type Gate = Arc<tokio::sync::Mutex<Option<Instant>>>;

impl Turn<'_> {
    /// Whether the lookup of this prefix that just ended (while this
    /// request waited) failed because the database did not answer.
    fn lookup_failed_recently(&self) -> bool {
        self.guard
            .as_deref()
            .and_then(|failed| *failed)
            .is_some_and(|at| at.elapsed() < LOOKUP_TIMEOUT)
    }

    /// Tells those waiting for this prefix that its lookup just failed.
    fn lookup_failed(&mut self) {
        if let Some(guard) = self.guard.as_mut() {
            **guard = Some(Instant::now());
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.guard = None;
        let mut reading = self.cache.reading.lock().expect("key cache lock");
        // Ours and the map's: nobody else holds or waits for this gate.
        if Arc::strong_count(&self.gate) == 2 {
            reading.remove(&self.prefix);
        }
    }
}

fn unavailable() -> ApiError {
    ApiError::unavailable(
        "database-unavailable",
        "the API key cannot be checked now: the database does not answer; retry later",
    )
}

/// Where failures are counted: an IPv4 address, or an IPv6 /64 (one
/// host's usual allocation, so rotating addresses within it gains nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Client(IpAddr);

impl Client {
    fn of(address: IpAddr) -> Client {
        match address {
            IpAddr::V4(v4) => Client(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Client(IpAddr::V4(v4)),
                None => Client(IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into())),
            },
        }
    }
}

/// The most addresses tracked at once; past it, the one whose window is
/// oldest is forgotten.
const MAX_CLIENTS: usize = 65_536;

/// Failed authentications per client address, in fixed windows.
///
/// Each attempt with a key never seen valid reserves a failure before the
/// database is asked, and gives it back if the key turns out valid; so
/// however many such requests arrive at once, an address costs at most
/// `failures` lookups per window.
#[derive(Debug)]
struct FailureLimit {
    failures: u32,
    window: Duration,
    clients: Mutex<HashMap<Client, (Instant, u32)>>,
}

impl FailureLimit {
    fn new(failures: u32, window: Duration) -> FailureLimit {
        FailureLimit {
            failures,
            window,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one more failure for `client` unless it is over the limit;
    /// then returns the seconds until its window ends.
    fn admit(&self, client: Option<Client>) -> Result<(), u32> {
        let Some(client) = client.filter(|_| self.failures > 0) else {
            return Ok(());
        };
        let mut clients = self.clients.lock().expect("failure limit lock");
        if clients.len() >= MAX_CLIENTS && !clients.contains_key(&client) {
            clients.retain(|_, (started, _)| started.elapsed() < self.window);
            if clients.len() >= MAX_CLIENTS
                && let Some(oldest) = clients
                    .iter()
                    .min_by_key(|(_, (started, _))| *started)
                    .map(|(c, _)| *c)
            {
                clients.remove(&oldest);
            }
        }
        let (started, count) = clients.entry(client).or_insert((Instant::now(), 0));
        if started.elapsed() >= self.window {
            *started = Instant::now();
            *count = 0;
        }
        if *count >= self.failures {
            let left = self.window.saturating_sub(started.elapsed());
            return Err(left.as_secs_f64().ceil() as u32);
        }
        *count += 1;
        Ok(())
    }

    /// Gives back the failure [`FailureLimit::admit`] counted: the key was
    /// valid.
    fn release(&self, client: Option<Client>) {
        let Some(client) = client.filter(|_| self.failures > 0) else {
            return;
        };
        let mut clients = self.clients.lock().expect("failure limit lock");
        if let Some((_, count)) = clients.get_mut(&client) {
            *count = count.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_after_its_failures_until_the_window_ends() {
        let limit = FailureLimit::new(3, Duration::from_millis(200));
        let a = Some(Client::of("10.0.0.1".parse().unwrap()));
        let b_address = Client::of("10.0.0.2".parse().unwrap());
        let b = Some(b_address);
        for _ in 0..3 {
            assert!(limit.admit(a).is_ok());
        }
        assert_eq!(limit.admit(a), Err(1), "Retry-After is at least one second");
        assert!(limit.admit(b).is_ok(), "another address is not affected");
        assert!(limit.admit(None).is_ok(), "no address, no limit");
        // A valid key gives its reservation back.
        limit.release(b);
        assert_eq!(limit.clients.lock().unwrap()[&b_address].1, 0);
        std::thread::sleep(Duration::from_millis(250));
        assert!(limit.admit(a).is_ok(), "a new window starts afresh");
        assert!(
            FailureLimit::new(0, Duration::from_secs(60))
                .admit(a)
                .is_ok(),
            "zero: no limit"
        );
    }

    #[test]
    fn ipv6_addresses_count_per_64_and_mapped_ipv4_as_ipv4() {
        let one = Client::of("2001:db8::1".parse().unwrap());
        let other = Client::of("2001:db8::ffff:1234".parse().unwrap());
        let elsewhere = Client::of("2001:db8:0:1::1".parse().unwrap());
        assert_eq!(one, other);
        assert_ne!(one, elsewhere);
        assert_eq!(
            Client::of("::ffff:10.0.0.1".parse().unwrap()),
            Client::of("10.0.0.1".parse().unwrap())
        );
    }
}
