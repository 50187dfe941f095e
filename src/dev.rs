//! The example platform for `serve --dev` and the tests: its tables and a
//! seeded organization with active Nexus and Paylinq subscriptions, so the
//! shipped integrations run end to end; and the dev API key, kept in a file
//! beside the database so that it survives restarts.

use std::path::{Path, PathBuf};

use uuid::{Uuid, uuid};

use crate::compile::ident::TableName;
use crate::store::keys::{self, Scope};
use crate::store::types::Time;
use crate::store::{Store, StoreError, example_platform_sql};

/// An organization subscribed to Nexus and Paylinq.
pub const ORGANIZATION: Uuid = uuid!("7d0e6a52-3c59-4a8e-9d7a-0c1f2b3a4d5e");
/// A RecruitIQ user of [`ORGANIZATION`] (the `hiredBy` of the examples).
pub const USER: Uuid = uuid!("3f9d7c2a-1b4e-4c6d-8a9f-2b3c4d5e6f70");
/// An organization with no subscriptions: its hires are skipped.
pub const ORGANIZATION_WITHOUT_SUBSCRIPTIONS: Uuid = uuid!("b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e");
/// The id of `examples/events/candidate.hired.json`.
pub const EXAMPLE_EVENT_ID: Uuid = uuid!("0193a1e2-7b3c-7d4e-8f50-000000000001");
/// The name of the key `serve --dev` creates.
pub const DEV_KEY_NAME: &str = "serve --dev";

/// Creates the example platform's tables (idempotent).
pub async fn install_example_platform(store: &Store) -> Result<(), StoreError> {
    store
        .execute_script(example_platform_sql(store.dialect()))
        .await
}

/// Creates the example tables and seeds the two organizations (idempotent).
pub async fn seed(store: &Store) -> Result<(), StoreError> {
    install_example_platform(store).await?;
    let dialect = store.dialect();
    let table = |name: &str| dialect.table(&TableName::parse(name).expect("valid table name"));
    let script = format!(
        "INSERT INTO {orgs} (id, name) VALUES ('{ORGANIZATION}', 'Acme (subscribed)'), \
             ('{ORGANIZATION_WITHOUT_SUBSCRIPTIONS}', 'Globex (no subscriptions)') ON CONFLICT DO NOTHING;
         INSERT INTO {users} (id, organization_id, email, name) \
             VALUES ('{USER}', '{ORGANIZATION}', 'recruiter@acme.example', 'Rita Recruiter') ON CONFLICT DO NOTHING;
         INSERT INTO {subscriptions} (organization_id, product_id, status) VALUES \
             ('{ORGANIZATION}', 'recruitiq', 'active'), ('{ORGANIZATION}', 'nexus', 'active'), \
             ('{ORGANIZATION}', 'paylinq', 'active') ON CONFLICT DO NOTHING;",
        orgs = table("core.organizations"),
        users = table("core.users"),
        subscriptions = table("core.product_subscriptions"),
    );
    store.execute_script(&script).await
}

/// The API key `serve --dev` prints: a platform key with every scope,
/// kept across restarts on the same database.
#[derive(Debug, Clone)]
pub struct DevKey {
    /// The whole key, to print.
    pub key: String,
    /// True when it is the key of an earlier run, read from `file`.
    pub reused: bool,
    /// Where the key is kept between runs (`None`: it could not be saved,
    /// or the database lives in memory).
    pub file: Option<PathBuf>,
}

/// Where `serve --dev` keeps its key for `database_url`: beside a SQLite
/// file (`data/busbar.db` → `data/busbar.dev-key`); for PostgreSQL under
/// `./data/`, named by a hash of the URL without its password
/// (`data/dev-key-<hash>`). `None` for an in-memory database, which
/// starts empty anyway.
pub fn dev_key_file(database_url: &str) -> Option<PathBuf> {
    if let Some(path) = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
    {
        // As `Store::connect` reads it: the path before any `?options`.
        let path = path.split('?').next().unwrap_or(path);
        return match path {
            "" | ":memory:" => None,
            path => Some(Path::new(path).with_extension("dev-key")),
        };
    }
    let hash = keys::hash(&crate::store::redact(database_url));
    Some(Path::new("data").join(format!("dev-key-{}", &hash[..16])))
}

/// The dev key: the one kept in `file` when it is still a valid dev key
/// on this database; otherwise (or with `new_key`) a new one, saved to
/// `file` (mode 0600) for the next run. With `new_key`, every earlier dev
/// key is revoked. Without it, keys are never revoked: another checkout
/// may share the database and use its own.
///
/// The secret is kept in a file because the database holds only its hash;
/// the file is the developer's, like the database beside it. Failing to
/// read or write it is logged and costs only the reuse.
pub async fn dev_key(
    store: &Store,
    file: Option<&Path>,
    new_key: bool,
    database: &str,
) -> Result<DevKey, StoreError> {
    if !new_key
        && let Some(file) = file
        && let Some(key) = read_key_file(file)
        && is_dev_key(store, &key).await?
    {
        return Ok(DevKey {
            key,
            reused: true,
            file: Some(file.to_owned()),
        });
    }
    let mut tx = store.begin().await?;
    let now = Time::now();
    if new_key {
        keys::revoke_named(&mut tx, DEV_KEY_NAME, now).await?;
    }
    let created = keys::create(&mut tx, None, &Scope::ALL, Some(DEV_KEY_NAME), now).await?;
    tx.commit().await?;
    let saved = file.filter(|file| match write_key_file(file, &created.key, database) {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(file = %file.display(), %error, "cannot save the dev key; the next run makes another");
            false
        }
    });
    Ok(DevKey {
        key: created.key,
        reused: false,
        file: saved.map(Path::to_owned),
    })
}

/// Whether `key` is an unrevoked dev key of this database.
async fn is_dev_key(store: &Store, key: &str) -> Result<bool, StoreError> {
    let Some(prefix) = keys::prefix_of(key) else {
        return Ok(false);
    };
    let mut tx = store.begin_read().await?;
    let found = keys::find_by_prefix(&mut tx, prefix).await?;
    tx.rollback().await?;
    Ok(found.is_some_and(|record| {
        record.verify(key)
            && record.name.as_deref() == Some(DEV_KEY_NAME)
            && record.organization_id.is_none()
            && Scope::ALL.iter().all(|scope| record.has(*scope))
    }))
}

/// The key in a dev key file: its first line that looks like a key.
fn read_key_file(file: &Path) -> Option<String> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(file = %file.display(), %error, "cannot read the dev key; making a new one");
            return None;
        }
    };
    text.lines()
        .map(str::trim)
        .find(|line| line.starts_with(keys::KEY_MARK))
        .map(str::to_owned)
}

/// Writes the key, readable by its owner only.
fn write_key_file(file: &Path, key: &str, database: &str) -> std::io::Result<()> {
    if let Some(parent) = file.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        // A file that already exists keeps its mode on open: narrow it
        // before the key is written into it.
        if file.exists() {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    let mut out = options.open(file)?;
    let text = format!(
        "# The API key `busbar serve --dev` prints for {}.\n\
         # Kept so that it survives restarts; delete this file, or run `serve --dev --new-key`, for a new one.\n\
         {key}\n",
        crate::store::redact(database)
    );
    std::io::Write::write_all(&mut out, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files `serve --dev` wrote before `redact` learnt to hide query
    /// passwords must still be found: for URLs without one, the name is
    /// pinned here.
    #[test]
    fn the_dev_key_file_of_a_postgres_url_keeps_its_name() {
        for (url, file) in [
            (
                "postgres://postgres@127.0.0.1:5432/postgres",
                "data/dev-key-cdcd40e27ae6b5a2",
            ),
            (
                "postgres://busbar:secret@localhost:5432/busbar",
                "data/dev-key-31b456751511c9c5",
            ),
            (
                "postgresql://busbar:s%40cr%3At@db.internal/busbar?sslmode=require",
                "data/dev-key-66546e492ba3c78e",
            ),
        ] {
            assert_eq!(dev_key_file(url), Some(PathBuf::from(file)), "{url}");
        }
    }

    #[test]
    fn the_dev_key_file_of_a_sqlite_url_is_beside_the_database() {
        assert_eq!(
            dev_key_file("sqlite://data/busbar.db?mode=rwc"),
            Some(PathBuf::from("data/busbar.dev-key"))
        );
        assert_eq!(dev_key_file("sqlite::memory:"), None);
    }
}
