//! The example platform for `serve --dev` and the tests: its tables and a
//! seeded organization with active Nexus and Paylinq subscriptions, so the
//! shipped integrations run end to end.

use uuid::{Uuid, uuid};

use crate::compile::ident::TableName;
use crate::store::keys::{self, CreatedKey, Scope};
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

/// A new platform key with every scope, for `serve --dev`. The keys earlier
/// dev runs created are revoked, so they do not pile up.
pub async fn create_dev_key(store: &Store) -> Result<CreatedKey, StoreError> {
    let mut tx = store.begin().await?;
    let now = Time::now();
    keys::revoke_named(&mut tx, DEV_KEY_NAME, now).await?;
    let key = keys::create(&mut tx, None, &Scope::ALL, Some(DEV_KEY_NAME), now).await?;
    tx.commit().await?;
    Ok(key)
}
