//! API keys: creating, finding, listing and revoking them in
//! `integrations.api_keys`.
//!
//! A key reads `bb_<prefix>_<secret>`: eight public characters that find
//! its row, and forty random ones (about 238 bits from a CSPRNG) that prove
//! it. It is shown once, when created; the database keeps only the SHA-256
//! of the whole key. A fast hash is enough for a secret this random: a slow
//! key-derivation function protects guessable passwords, and nothing here
//! is guessable. Presented keys are compared with [`KeyRecord::verify`], in
//! constant time.
//!
//! A key acts for one organization, or for the platform (any organization),
//! with a set of [`Scope`]s. What a scope allows is decided by the API.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::dialect::{EngineTable, Statement};
use super::types::{Id, Time};
use super::{DbTx, Store, StoreError};
use crate::on_tx;

/// What every key starts with, so a leaked one is easy to recognise.
pub const KEY_MARK: &str = "bb_";
/// Length of the public prefix.
const PREFIX_LEN: usize = 8;
/// Length of the secret part.
const SECRET_LEN: usize = 40;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Publish events of the key's organization.
    Publish,
    /// Read the key's organization's events, deliveries and status.
    Read,
    /// Enable and disable integrations, replay dead deliveries, reload.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Publish, Scope::Read, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Publish => "publish",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| format!("`{text}` is not a scope; use publish, read or admin"))
    }
}

/// A key as stored (without its secret).
#[derive(Debug, Clone, Serialize)]
pub struct KeyRecord {
    pub id: Uuid,
    /// The public prefix (`bb_<prefix>_...`).
    pub prefix: String,
    /// Lowercase hex SHA-256 of the whole key.
    #[serde(skip)]
    pub secret_hash: String,
    pub name: Option<String>,
    /// `None`: a platform key, acting for any organization.
    pub organization_id: Option<Uuid>,
    /// Sorted, without duplicates.
    pub scopes: Vec<Scope>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl KeyRecord {
    /// Whether `presented` is this key: its hash matches (compared in
    /// constant time) and the key is not revoked.
    pub fn verify(&self, presented: &str) -> bool {
        let matches: bool = hash(presented)
            .as_bytes()
            .ct_eq(self.secret_hash.as_bytes())
            .into();
        matches && self.revoked_at.is_none()
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// A key just created: the only time its full text exists.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub record: KeyRecord,
    /// The key to hand to its user. Never stored.
    pub key: String,
}

/// The public prefix of a presented key, when it has the shape of one.
pub fn prefix_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(KEY_MARK)?;
    let (prefix, secret) = rest.split_once('_')?;
    let shaped = prefix.len() == PREFIX_LEN
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && secret.len() == SECRET_LEN
        && secret.bytes().all(|b| b.is_ascii_alphanumeric());
    shaped.then_some(prefix)
}

/// Lowercase hex SHA-256 of a key.
pub fn hash(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

fn random_text(len: usize, lowercase: bool) -> String {
    // `rand::rng()` is a CSPRNG (ChaCha) seeded from the operating system.
    rand::rng()
        .sample_iter(Alphanumeric)
        .map(char::from)
        .map(|c| if lowercase { c.to_ascii_lowercase() } else { c })
        .take(len)
        .collect()
}

/// Creates a key for `organization` (or the platform) with `scopes`.
pub async fn create(
    tx: &mut DbTx,
    organization: Option<Uuid>,
    scopes: &[Scope],
    name: Option<&str>,
    now: Time,
) -> Result<CreatedKey, StoreError> {
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    if scopes.is_empty() {
        return Err(StoreError::Invalid("a key needs at least one scope".into()));
    }
    let prefix = random_text(PREFIX_LEN, true);
    let key = format!("{KEY_MARK}{prefix}_{}", random_text(SECRET_LEN, false));
    let record = KeyRecord {
        id: Uuid::now_v7(),
        prefix,
        secret_hash: hash(&key),
        name: name.map(str::to_owned),
        organization_id: organization,
        scopes,
        created_at: now.0,
        revoked_at: None,
    };
    static SQL: Statement = Statement::new(|d| {
        let api_keys = d.engine_table(EngineTable::ApiKeys);
        let [p1, p2, p3, p4, p5, p6, p7] = d.params();
        format!(
            "INSERT INTO {api_keys} (id, prefix, secret_hash, name, organization_id, scopes, created_at) \
             VALUES ({p1}, {p2}, {p3}, {p4}, {p5}, {p6}, {p7})"
        )
    });
    let sql = SQL.get(tx.dialect());
    let scope_text = scope_list(&record.scopes);
    on_tx!(&mut *tx, |conn| sqlx::query(sql)
        .bind(Id(record.id))
        .bind(record.prefix.as_str())
        .bind(record.secret_hash.as_str())
        .bind(record.name.as_deref())
        .bind(record.organization_id.map(Id))
        .bind(scope_text.as_str())
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(CreatedKey { record, key })
}

fn scope_list(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

type KeyTuple = (
    Id,
    String,
    String,
    Option<String>,
    Option<Id>,
    String,
    Time,
    Option<Time>,
);

const KEY_COLUMNS: &str =
    "id, prefix, secret_hash, name, organization_id, scopes, created_at, revoked_at";

fn key_record(row: KeyTuple) -> KeyRecord {
    let (id, prefix, secret_hash, name, organization_id, scopes, created_at, revoked_at) = row;
    KeyRecord {
        id: id.0,
        prefix,
        secret_hash,
        name,
        organization_id: organization_id.map(|o| o.0),
        // A scope this version does not know grants nothing.
        scopes: scopes.split(',').filter_map(|s| s.parse().ok()).collect(),
        created_at: created_at.0,
        revoked_at: revoked_at.map(|t| t.0),
    }
}

/// The key with this public prefix, revoked or not.
pub async fn find_by_prefix(tx: &mut DbTx, prefix: &str) -> Result<Option<KeyRecord>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let api_keys = d.engine_table(EngineTable::ApiKeys);
        let [p1] = d.params();
        format!("SELECT {KEY_COLUMNS} FROM {api_keys} WHERE prefix = {p1}")
    });
    let sql = SQL.get(tx.dialect());
    let row: Option<KeyTuple> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql)
        .bind(prefix)
        .fetch_optional(conn)
        .await)?;
    Ok(row.map(key_record))
}

/// Every key, oldest first.
pub async fn list(tx: &mut DbTx) -> Result<Vec<KeyRecord>, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let api_keys = d.engine_table(EngineTable::ApiKeys);
        format!("SELECT {KEY_COLUMNS} FROM {api_keys} ORDER BY created_at, id")
    });
    let sql = SQL.get(tx.dialect());
    let rows: Vec<KeyTuple> = on_tx!(&mut *tx, |conn| sqlx::query_as(sql).fetch_all(conn).await)?;
    Ok(rows.into_iter().map(key_record).collect())
}

/// Revokes a key. Returns false when there is no such key or it was
/// already revoked.
pub async fn revoke(tx: &mut DbTx, id: Uuid, now: Time) -> Result<bool, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let api_keys = d.engine_table(EngineTable::ApiKeys);
        let [p1, p2] = d.params();
        format!("UPDATE {api_keys} SET revoked_at = {p2} WHERE id = {p1} AND revoked_at IS NULL")
    });
    let sql = SQL.get(tx.dialect());
    let changed = on_tx!(&mut *tx, |conn| sqlx::query(sql)
        .bind(Id(id))
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(changed > 0)
}

/// Revokes every unrevoked key with this name; returns how many.
pub async fn revoke_named(tx: &mut DbTx, name: &str, now: Time) -> Result<u64, StoreError> {
    static SQL: Statement = Statement::new(|d| {
        let api_keys = d.engine_table(EngineTable::ApiKeys);
        let [p1, p2] = d.params();
        format!("UPDATE {api_keys} SET revoked_at = {p2} WHERE name = {p1} AND revoked_at IS NULL")
    });
    let sql = SQL.get(tx.dialect());
    let changed = on_tx!(&mut *tx, |conn| sqlx::query(sql)
        .bind(name)
        .bind(now)
        .execute(conn)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(changed)
}

/// Creates a key in a transaction of its own (for `busbar keys create`).
pub async fn create_key(
    store: &Store,
    organization: Option<Uuid>,
    scopes: &[Scope],
    name: Option<&str>,
) -> Result<CreatedKey, StoreError> {
    let mut tx = store.begin().await?;
    let created = create(&mut tx, organization, scopes, name, Time::now()).await?;
    tx.commit().await?;
    Ok(created)
}

/// Every key (for `busbar keys list`).
pub async fn list_keys(store: &Store) -> Result<Vec<KeyRecord>, StoreError> {
    let mut tx = store.begin_read().await?;
    let keys = list(&mut tx).await?;
    tx.rollback().await?;
    Ok(keys)
}

/// Revokes a key in a transaction of its own (for `busbar keys revoke`).
pub async fn revoke_key(store: &Store, id: Uuid) -> Result<bool, StoreError> {
    let mut tx = store.begin().await?;
    let revoked = revoke(&mut tx, id, Time::now()).await?;
    tx.commit().await?;
    Ok(revoked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_a_recognisable_shape() {
        let key = format!("bb_abcd1234_{}", "x".repeat(SECRET_LEN));
        assert_eq!(prefix_of(&key), Some("abcd1234"));
        assert_eq!(prefix_of("bb_abcd1234_short"), None);
        assert_eq!(
            prefix_of(&format!("bb_ABCD1234_{}", "x".repeat(SECRET_LEN))),
            None
        );
        assert_eq!(
            prefix_of(&format!("xx_abcd1234_{}", "x".repeat(SECRET_LEN))),
            None
        );
        assert_eq!(prefix_of(""), None);
    }

    #[test]
    fn a_key_verifies_only_against_its_own_hash() {
        let key = format!("bb_abcd1234_{}", random_text(SECRET_LEN, false));
        let mut record = KeyRecord {
            id: Uuid::nil(),
            prefix: "abcd1234".into(),
            secret_hash: hash(&key),
            name: None,
            organization_id: None,
            scopes: vec![Scope::Read],
            created_at: chrono::Utc::now(),
            revoked_at: None,
        };
        assert!(record.verify(&key));
        assert!(!record.verify(&format!("{key}x")));
        assert!(!record.verify(&key.replace("bb_", "bc_")));
        record.revoked_at = Some(chrono::Utc::now());
        assert!(!record.verify(&key));
    }

    #[test]
    fn the_hash_is_hex_sha256() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
