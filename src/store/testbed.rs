//! Throwaway databases for `busbar test`: creating and dropping them,
//! inserting a case's given rows, reading whole tables back, and telling
//! when the engine has no work left.
//!
//! A case runs the real engine, which opens its own transactions on a
//! pool, so a case cannot live inside one transaction that is rolled back.
//! Each case gets a database of its own instead: a temporary SQLite file,
//! or, on a PostgreSQL server, a new database `busbar_test_<uuid>` that is
//! dropped afterwards (the user needs the CREATEDB privilege). The engine's
//! tables live in the fixed schema `integrations`, so a temporary schema
//! would not isolate them.

use std::path::PathBuf;

use serde_json::{Map, Value};
use sqlx::{AssertSqlSafe, Connection};

use super::catalog::{TableInfo, read_table};
use super::convert::{BindValue, convert};
use super::{DbTx, Dialect, Store, StoreError};
use crate::compile::ident::{Ident, TableName, quote};
use crate::on_tx;

/// A database that exists for one test case.
pub struct Testbed {
    pub store: Store,
    cleanup: Cleanup,
}

enum Cleanup {
    /// The temporary directory holding the SQLite file.
    Sqlite(PathBuf),
    /// The server to connect to for the drop, and the database's name.
    Postgres { admin_url: String, name: Ident },
}

impl Testbed {
    /// Creates an empty database with busbar's migrations applied: a
    /// temporary SQLite file, or a new database on the PostgreSQL server
    /// `server` names.
    pub async fn create(server: Option<&str>) -> Result<Testbed, StoreError> {
        // A fixed prefix and hex digits: an identifier as it is.
        let name = Ident::parse(&format!("busbar_test_{}", uuid::Uuid::new_v4().simple()))
            .expect("a valid identifier");
        let (store, cleanup) = match server {
            None => {
                let dir = std::env::temp_dir().join(name.as_str());
                std::fs::create_dir_all(&dir).map_err(|e| {
                    StoreError::Invalid(format!("cannot create {}: {e}", dir.display()))
                })?;
                let url = format!("sqlite://{}", dir.join("busbar.db").display());
                (Store::connect(&url).await?, Cleanup::Sqlite(dir))
            }
            Some(admin_url) => {
                let mut admin = sqlx::PgConnection::connect(admin_url).await?;
                sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {}", quote(&name))))
                    .execute(&mut admin)
                    .await?;
                admin.close().await.ok();
                let url = with_database(admin_url, name.as_str());
                let cleanup = Cleanup::Postgres {
                    admin_url: admin_url.to_owned(),
                    name,
                };
                match Store::connect_with(&url, 8).await {
                    Ok(store) => (store, cleanup),
                    Err(error) => {
                        Testbed::drop_database(&cleanup).await;
                        return Err(error);
                    }
                }
            }
        };
        let testbed = Testbed { store, cleanup };
        if let Err(error) = testbed.store.migrate().await {
            testbed.destroy().await;
            return Err(error);
        }
        Ok(testbed)
    }

    pub fn dialect(&self) -> Dialect {
        self.store.dialect()
    }

    /// Closes the database and removes it. Best effort: a failure leaves a
    /// stray `busbar_test_*` database or temporary directory behind.
    pub async fn destroy(self) {
        self.store.close().await;
        Testbed::drop_database(&self.cleanup).await;
    }

    async fn drop_database(cleanup: &Cleanup) {
        match cleanup {
            Cleanup::Sqlite(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Postgres { admin_url, name } => {
                if let Ok(mut admin) = sqlx::PgConnection::connect(admin_url).await {
                    let _ = sqlx::query(AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        quote(name)
                    )))
                    .execute(&mut admin)
                    .await;
                    admin.close().await.ok();
                }
            }
        }
    }

    /// Inserts rows into `table`, converting each value for its column as
    /// the engine does. On failure, says which row (0-based) and why.
    pub async fn insert_rows(
        &self,
        table: &TableName,
        rows: &[Map<String, Value>],
    ) -> Result<(), (usize, StoreError)> {
        let mut tx = self.store.begin().await.map_err(|e| (0, e))?;
        let info = read_table(&mut tx, table).await.map_err(|e| (0, e))?;
        let dialect = tx.dialect();
        for (index, row) in rows.iter().enumerate() {
            let mut columns = Vec::with_capacity(row.len());
            let mut values = Vec::with_capacity(row.len());
            let mut placeholders = Vec::with_capacity(row.len());
            for (name, value) in row {
                let column = info.column(name).ok_or_else(|| {
                    (
                        index,
                        StoreError::NoColumn {
                            table: table.to_string(),
                            column: name.clone(),
                        },
                    )
                })?;
                values.push(convert(column, value).map_err(|e| (index, e))?);
                let n = values.len();
                columns.push(quote(&column.name));
                placeholders.push(dialect.bound(n, column));
            }
            let sql = if columns.is_empty() {
                format!("INSERT INTO {} DEFAULT VALUES", dialect.table(table))
            } else {
                format!(
                    "INSERT INTO {} ({}) VALUES ({})",
                    dialect.table(table),
                    columns.join(", "),
                    placeholders.join(", ")
                )
            };
            execute(&mut tx, sql, &values)
                .await
                .map_err(|e| (index, e))?;
        }
        tx.commit().await.map_err(|e| (rows.len(), e))
    }

    /// Every row of `table` as JSON, with the table's description.
    pub async fn read_rows(
        &self,
        table: &TableName,
    ) -> Result<(TableInfo, Vec<Map<String, Value>>), StoreError> {
        let mut tx = self.store.begin_read().await?;
        let info = read_table(&mut tx, table).await?;
        let dialect = tx.dialect();
        let row = dialect.row_json(&info);
        let sql = AssertSqlSafe(format!("SELECT {row} FROM {} t", dialect.table(table)));
        let texts: Vec<(String,)> =
            on_tx!(&mut tx, |conn| sqlx::query_as(sql).fetch_all(conn).await)?;
        tx.rollback().await?;
        let rows = texts
            .into_iter()
            .map(|(text,)| match serde_json::from_str(&text) {
                Ok(Value::Object(map)) => Ok(map),
                _ => Err(StoreError::Invalid(format!("cannot read a row of {table}"))),
            })
            .collect::<Result<_, _>>()?;
        Ok((info, rows))
    }
}

async fn execute(tx: &mut DbTx, sql: String, values: &[BindValue]) -> Result<(), StoreError> {
    on_tx!(tx, |conn| {
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for value in values {
            query = query.bind(value);
        }
        query.execute(conn).await.map(drop)
    })?;
    Ok(())
}

/// `postgres://host/db?options` with another database name.
pub fn with_database(server: &str, name: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (server, String::new()),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    match base[scheme_end..].find('/').map(|i| i + scheme_end) {
        Some(i) => format!("{}/{name}{query}", &base[..i]),
        None => format!("{base}/{name}{query}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_keep_their_options() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
