//! Reading target tables from a database's catalog without writing
//! anything, for `busbar check --database-url`.
//!
//! [`crate::store::Store::connect`] would create a missing SQLite file and
//! set its journal mode; a check must not. So this opens its own single
//! connection: SQLite read-only and never created; PostgreSQL (and
//! MariaDB/MySQL, `mysql::catalog::read_tables`) inside a `READ ONLY`
//! transaction that is rolled back. No migrations run.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Postgres, Sqlite};

use super::catalog::{self, TableInfo};
use super::{DbTx, StoreError};
use crate::compile::ident::TableName;

/// Reads each of `tables` from the catalog of the database at `url`;
/// `None` for a table that does not exist. Writes nothing.
pub async fn read_tables(
    url: &str,
    tables: &[TableName],
) -> Result<Vec<(TableName, Option<TableInfo>)>, StoreError> {
    if url.starts_with("mysql://") || url.starts_with("mariadb://") {
        return super::mysql::catalog::read_tables(url, tables).await;
    }
    let mut tx = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let options = PgConnectOptions::from_str(url)?.application_name("busbar check");
        let pool = PoolOptions::<Postgres>::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        let mut tx = DbTx::Postgres(pool.begin().await?);
        tx.run("SET TRANSACTION READ ONLY").await?;
        tx
    } else if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let path = path.split('?').next().unwrap_or(path);
        if path.is_empty() || path == ":memory:" || !Path::new(path).is_file() {
            return Err(StoreError::Invalid(format!(
                "there is no SQLite database at `{path}` (check reads an existing database and never creates one)"
            )));
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .create_if_missing(false)
            .busy_timeout(Duration::from_secs(10));
        let pool = PoolOptions::<Sqlite>::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        DbTx::Sqlite(pool.begin().await?)
    } else {
        return Err(StoreError::Invalid(format!(
            "unsupported database URL `{}`: use postgres://…, mysql://… or sqlite://path",
            super::redact(url)
        )));
    };
    let mut found = Vec::with_capacity(tables.len());
    for table in tables {
        match catalog::read_table(&mut tx, table).await {
            Ok(info) => found.push((table.clone(), Some(info))),
            Err(StoreError::NoTable(_)) => found.push((table.clone(), None)),
            Err(error) => return Err(error),
        }
    }
    tx.rollback().await?;
    Ok(found)
}
