//! The session every MariaDB/MySQL target connection runs in.
//!
//! A server's defaults cannot be trusted to refuse what does not fit:
//! without strict mode MariaDB stores `'abcdef'` into `VARCHAR(3)` as
//! `'abc'` with a warning, `'2026-02-30'` as `'0000-00-00'`, and 300 into
//! `TINYINT` as 127. busbar checks every value itself
//! ([`super::convert`]), and the session makes the server refuse too, so
//! a value that slipped past busbar is an error, not a silent change:
//!
//! - `STRICT_ALL_TABLES`: a value that does not fit is an error (on every
//!   engine, not only transactional ones as with `STRICT_TRANS_TABLES`).
//! - `NO_ZERO_DATE`, `NO_ZERO_IN_DATE`: `'0000-00-00'` and `'2026-00-10'`
//!   are errors rather than stored as zero dates.
//! - `ERROR_FOR_DIVISION_BY_ZERO`: a division by zero in a default or
//!   trigger is an error, not `NULL`.
//! - `NO_ENGINE_SUBSTITUTION`: nothing busbar runs creates tables, but a
//!   migration run on this session must not silently get another engine.
//! - `NO_AUTO_VALUE_ON_ZERO`: a 0 written into an `AUTO_INCREMENT` column
//!   is stored as 0, not replaced by the next number.
//! - `NO_BACKSLASH_ESCAPES`: `\` is an ordinary character in string
//!   literals, so the only escape in busbar's SQL text is the doubled
//!   quote (names go through `backquote`; values are always bound).
//! - Not `ANSI_QUOTES`: busbar quotes names with backticks, which read as
//!   names with or without it; leaving it off keeps `"…"` a string as
//!   MariaDB users expect in triggers and defaults.
//! - Not `PIPES_AS_CONCAT` (which sqlx adds by default): busbar's SQL has
//!   no `||`, and a trigger that uses it as `OR` keeps its meaning.
//!
//! `innodb_lock_wait_timeout = 5`: a row a product's transaction holds
//! makes the delivery that needs it retry after 5 s (error 1205, retried
//! with backoff) instead of holding its lane for InnoDB's default 50 s, as
//! `lock_timeout` does on PostgreSQL targets.
//!
//! `time_zone = '+00:00'`: `TIMESTAMP` columns are read and written in
//! UTC, and `NOW()` in defaults is UTC, as busbar writes `DATETIME`s.
//! `NAMES utf8mb4`: text travels as full UTF-8 (an emoji is not replaced
//! with `?` on the way). `READ COMMITTED`: as busbar's own PostgreSQL
//! transactions; InnoDB's default `REPEATABLE READ` takes gap locks on
//! upserts, which deadlock concurrent lanes inserting near each other.

use std::str::FromStr;
use std::time::Duration;

use sqlx::MySql;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool};
use sqlx::pool::PoolOptions;

use crate::store::StoreError;

/// The `sql_mode` busbar's MariaDB sessions run in (see the module docs).
pub const SQL_MODE: &str = "STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,\
ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO,NO_BACKSLASH_ESCAPES";

/// The statements that set up a session, run once per connection (a
/// pool's `after_connect`, [`setup`]) before any target statement:
/// `sql_mode` and time zone, then isolation. `NAMES utf8mb4` is sent by
/// sqlx itself ([`connect_options`]).
pub const SESSION_SETUP: [&str; 2] = [
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,\
ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO,NO_BACKSLASH_ESCAPES', \
time_zone = '+00:00', innodb_lock_wait_timeout = 5",
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
];

/// Connect options for a `mysql://` or `mariadb://` URL: `utf8mb4` names
/// and UTC from sqlx, and none of sqlx's own `sql_mode` additions
/// (`PIPES_AS_CONCAT`), which [`SESSION_SETUP`] replaces whole.
pub fn connect_options(url: &str) -> Result<MySqlConnectOptions, StoreError> {
    let url = match url.strip_prefix("mariadb://") {
        Some(rest) => format!("mysql://{rest}"),
        None => url.to_owned(),
    };
    Ok(MySqlConnectOptions::from_str(&url)?
        .charset("utf8mb4")
        .timezone(Some("+00:00".to_owned()))
        .pipes_as_concat(false)
        .no_engine_substitution(false))
}

/// A pool of at most `max_connections` connections to the MariaDB/MySQL
/// database at `url`, each set up by [`setup`] when it connects. Nothing
/// connects until the pool is used: a server that is down is an error of
/// the statement that needed it, not of the pool.
pub fn pool(url: &str, max_connections: u32) -> Result<MySqlPool, StoreError> {
    let options = connect_options(url)?;
    Ok(PoolOptions::<MySql>::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(1))
        .after_connect(|connection, _| {
            Box::pin(async move {
                setup(connection)
                    .await
                    .map_err(|error| sqlx::Error::Configuration(error.to_string().into()))
            })
        })
        .connect_lazy_with(options))
}

/// Sets a connection's session up ([`SESSION_SETUP`]) and checks that it
/// took: a server that ignores part of it (an older MySQL without one of
/// the modes) is refused rather than written to in a looser mode.
pub async fn setup(connection: &mut sqlx::MySqlConnection) -> Result<(), StoreError> {
    for statement in SESSION_SETUP {
        sqlx::query(statement).execute(&mut *connection).await?;
    }
    let (mode,): (String,) = sqlx::query_as("SELECT @@SESSION.sql_mode")
        .fetch_one(&mut *connection)
        .await?;
    let missing: Vec<&str> = SQL_MODE
        .split(',')
        .filter(|wanted| !mode.split(',').any(|m| m == *wanted))
        .collect();
    if !missing.is_empty() {
        return Err(StoreError::Invalid(format!(
            "the MariaDB/MySQL session did not take sql_mode {} (it is `{mode}`): busbar refuses to write in a mode that may truncate values",
            missing.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_sets_the_mode_it_checks() {
        assert!(SESSION_SETUP[0].contains(&format!("'{SQL_MODE}'")));
        assert!(!SQL_MODE.contains("ANSI_QUOTES") && !SQL_MODE.contains("PIPES_AS_CONCAT"));
    }

    #[test]
    fn mariadb_urls_are_read_as_mysql_urls() {
        let options = connect_options("mariadb://busbar@db.internal:3307/payroll").unwrap();
        assert_eq!(options.get_host(), "db.internal");
        assert_eq!(options.get_port(), 3307);
        assert_eq!(options.get_database(), Some("payroll"));
    }
}
