//! Authentication and authorization, as extractors: a handler that takes a
//! [`Publisher`], [`Reader`] or [`Admin`] cannot run without a valid key
//! with that scope, and gets the [`Caller`] whose organization every query
//! must be scoped by.
//!
//! Keys are `Authorization: Bearer bb_<prefix>_<secret>`; see
//! [`crate::store::keys`] for how they are made and stored. Verified keys
//! are cached for a few seconds ([`KeyCache`]), so a busy publisher does not
//! cost a database read per request; a revoked key is refused once its
//! cache entry expires.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use crate::store::Store;
use crate::store::keys::{self, KeyRecord, Scope};

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

    /// The organization a read is limited to: the key's own, or for a
    /// platform key the one asked for (`None`: every organization). An
    /// organization key asking for another organization is refused.
    pub fn organization_scope(&self, requested: Option<Uuid>) -> Result<Option<Uuid>, ApiError> {
        match (self.organization, requested) {
            (Some(own), Some(asked)) if own != asked => Err(ApiError::forbidden(
                "organization-forbidden",
                "this key belongs to another organization",
            )),
            (Some(own), _) => Ok(Some(own)),
            (None, asked) => Ok(asked),
        }
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
    let record = state
        .keys
        .authenticate(state.engine.store(), presented)
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

/// Verified keys, by prefix, for a short time.
#[derive(Debug)]
pub struct KeyCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (KeyRecord, Instant)>>,
}

impl KeyCache {
    /// A cache whose entries live `ttl` (zero: always ask the database).
    pub fn new(ttl: Duration) -> KeyCache {
        KeyCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The key record for `presented`, if it is a valid, unrevoked key.
    pub async fn authenticate(
        &self,
        store: &Store,
        presented: &str,
    ) -> Result<KeyRecord, ApiError> {
        let invalid = || {
            ApiError::unauthorized(
                "invalid-key",
                "the API key is not valid (unknown, mistyped or revoked)",
            )
        };
        let prefix = keys::prefix_of(presented).ok_or_else(invalid)?;
        let cached = {
            let entries = self.entries.lock().expect("key cache lock");
            entries
                .get(prefix)
                .filter(|(_, at)| at.elapsed() < self.ttl)
                .map(|(record, _)| record.clone())
        };
        let record = match cached {
            Some(record) => record,
            None => {
                let mut tx = store.begin_read().await?;
                let found = keys::find_by_prefix(&mut tx, prefix).await?;
                tx.rollback().await?;
                let record = found.ok_or_else(invalid)?;
                if !self.ttl.is_zero() {
                    let mut entries = self.entries.lock().expect("key cache lock");
                    // Entries are only ever for real keys, so the map stays
                    // as small as the key table; expired ones are dropped
                    // here rather than by a task.
                    entries.retain(|_, (_, at)| at.elapsed() < self.ttl);
                    entries.insert(prefix.to_owned(), (record.clone(), Instant::now()));
                }
                record
            }
        };
        if record.verify(presented) {
            Ok(record)
        } else {
            Err(invalid())
        }
    }
}
