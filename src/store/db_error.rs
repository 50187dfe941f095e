//! Database errors in an operator's words: what happened first (the
//! trigger's or constraint's message, the table and columns it names, the
//! detail the database gave), then the database and its code in brackets
//! (`[PostgreSQL 23505 unique_violation]`, `[SQLite 1811]`). Nothing the
//! database said is dropped; only the driver's wrapping ("error returned
//! from database: (code: 1811) …") goes. This is how a failed delivery's
//! error reads in dead letters, the status API and the console.

/// `error` as operators read it.
pub fn describe(error: &sqlx::Error) -> String {
    let sqlx::Error::Database(db) = error else {
        return format!("database error: {error}");
    };
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        return postgres(pg);
    }
    if let Some(mysql) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return mysql_error(mysql.message(), mysql.number(), mysql.code());
    }
    sqlite(db.message(), db.code().as_deref().unwrap_or(""))
}

/// A PostgreSQL error: its fields say which table, column and constraint.
fn postgres(error: &sqlx::postgres::PgDatabaseError) -> String {
    let table = match (error.schema(), error.table()) {
        (Some(schema), Some(table)) => Some(format!("{schema}.{table}")),
        (None, Some(table)) => Some(table.to_owned()),
        _ => None,
    };
    let column = match (&table, error.column()) {
        (Some(table), Some(column)) => Some(format!("{table}.{column}")),
        (None, Some(column)) => Some(column.to_owned()),
        _ => None,
    };
    let in_table = table
        .as_deref()
        .map(|t| format!(" in {t}"))
        .unwrap_or_default();
    let constraint = error.constraint();
    let detail = error.detail();
    let code = error.code();
    let (words, name) = match code {
        "23505" => (
            format!(
                "duplicate key{in_table}: {}{}",
                detail.unwrap_or(error.message()),
                constraint
                    .map(|c| format!(" (unique constraint {c})"))
                    .unwrap_or_default()
            ),
            "unique_violation",
        ),
        "23502" => (
            format!(
                "{} cannot be null{}",
                column.as_deref().unwrap_or("a column"),
                detail.map(|d| format!(": {d}")).unwrap_or_default()
            ),
            "not_null_violation",
        ),
        "23503" => (
            format!(
                "no matching row for a foreign key{in_table}: {}{}",
                detail.unwrap_or(error.message()),
                constraint
                    .map(|c| format!(" (constraint {c})"))
                    .unwrap_or_default()
            ),
            "foreign_key_violation",
        ),
        "23514" => (
            format!(
                "the row{in_table} breaks check constraint {}{}",
                constraint.unwrap_or("?"),
                detail.map(|d| format!(": {d}")).unwrap_or_default()
            ),
            "check_violation",
        ),
        "P0001" => (
            format!(
                "{}{}{}",
                error.message(),
                detail.map(|d| format!(": {d}")).unwrap_or_default(),
                error
                    .r#where()
                    .and_then(|w| w.lines().next())
                    .map(|w| format!(" (raised by {w})"))
                    .unwrap_or_else(|| " (raised by a trigger or function)".to_owned())
            ),
            "raise_exception",
        ),
        _ => (
            format!(
                "{}{}{}",
                error.message(),
                detail.map(|d| format!(": {d}")).unwrap_or_default(),
                column
                    .as_deref()
                    .or(table.as_deref())
                    .map(|c| format!(" (in {c})"))
                    .unwrap_or_default()
            ),
            "",
        ),
    };
    let hint = error
        .hint()
        .map(|h| format!(" Hint: {h}"))
        .unwrap_or_default();
    let name = if name.is_empty() {
        String::new()
    } else {
        format!(" {name}")
    };
    format!("{words}{hint} [PostgreSQL {code}{name}]")
}

/// A SQLite error: its message names the table and columns
/// (`UNIQUE constraint failed: hris.employees.email`); the extended code
/// says which kind.
fn sqlite(message: &str, code: &str) -> String {
    let after = |prefix: &str| message.strip_prefix(prefix).map(str::trim);
    let words = match code {
        // SQLITE_CONSTRAINT_TRIGGER: RAISE(ABORT, '…') in a trigger.
        "1811" => format!("{message} (refused by a trigger)"),
        // SQLITE_CONSTRAINT_UNIQUE, _PRIMARYKEY.
        "2067" | "1555" => match after("UNIQUE constraint failed:") {
            Some(columns) => {
                format!("duplicate key: a row with the same {columns} exists ({message})")
            }
            None => format!("duplicate key: {message}"),
        },
        // SQLITE_CONSTRAINT_NOTNULL.
        "1299" => match after("NOT NULL constraint failed:") {
            Some(column) => format!("{column} cannot be null ({message})"),
            None => message.to_owned(),
        },
        // SQLITE_CONSTRAINT_CHECK.
        "275" => match after("CHECK constraint failed:") {
            Some(check) => format!("the row breaks check constraint {check} ({message})"),
            None => message.to_owned(),
        },
        // SQLITE_CONSTRAINT_FOREIGNKEY.
        "787" => format!("no matching row for a foreign key ({message})"),
        _ => message.to_owned(),
    };
    format!("{words} [SQLite {code}]")
}

/// A MariaDB/MySQL error (a target database, `store::mysql`): its
/// message names the table, column or key; its number says which kind.
fn mysql_error(message: &str, number: u16, sqlstate: Option<&str>) -> String {
    let words = match number {
        1062 => format!("duplicate key: {message}"),
        1048 => format!("a column cannot be null: {message}"),
        1451 | 1452 => format!("no matching row for a foreign key: {message}"),
        // MariaDB's and MySQL's check constraint violations.
        4025 | 3819 => format!("the row breaks a check constraint: {message}"),
        // `SIGNAL SQLSTATE '45000'` in a trigger.
        1644 => format!("{message} (refused by a trigger)"),
        1213 => format!("deadlock, the transaction is retried: {message}"),
        1205 => format!("lock wait timeout, the transaction is retried: {message}"),
        _ => message.to_owned(),
    };
    let state = sqlstate.map(|s| format!(" {s}")).unwrap_or_default();
    format!("{words} [MariaDB/MySQL {number}{state}]")
}

/// Whether a MariaDB/MySQL error number is worth retrying: a deadlock, a
/// lock wait timeout, too many connections, a server shutting down, a
/// connection killed.
pub fn mysql_is_transient(number: u16) -> bool {
    matches!(number, 1205 | 1213 | 1040 | 1053 | 1927 | 2006 | 2013)
}

#[cfg(test)]
mod tests {
    use super::{mysql_error, sqlite};

    #[test]
    fn sqlite_errors_say_what_happened_first_and_keep_the_message_and_code() {
        assert_eq!(
            sqlite("payroll refuses blocked.test addresses", "1811"),
            "payroll refuses blocked.test addresses (refused by a trigger) [SQLite 1811]"
        );
        assert_eq!(
            sqlite("UNIQUE constraint failed: hris.employees.email", "2067"),
            "duplicate key: a row with the same hris.employees.email exists \
             (UNIQUE constraint failed: hris.employees.email) [SQLite 2067]"
        );
        assert_eq!(
            sqlite(
                "NOT NULL constraint failed: hris.employees.last_name",
                "1299"
            ),
            "hris.employees.last_name cannot be null \
             (NOT NULL constraint failed: hris.employees.last_name) [SQLite 1299]"
        );
        assert_eq!(
            sqlite("CHECK constraint failed: salary_positive", "275"),
            "the row breaks check constraint salary_positive \
             (CHECK constraint failed: salary_positive) [SQLite 275]"
        );
        assert_eq!(sqlite("disk I/O error", "10"), "disk I/O error [SQLite 10]");
    }

    #[test]
    fn mariadb_errors_say_what_happened_first_and_keep_the_number() {
        assert_eq!(
            mysql_error(
                "Duplicate entry 'ada@x' for key 'email'",
                1062,
                Some("23000")
            ),
            "duplicate key: Duplicate entry 'ada@x' for key 'email' [MariaDB/MySQL 1062 23000]"
        );
        assert_eq!(
            mysql_error("payroll refuses it", 1644, Some("45000")),
            "payroll refuses it (refused by a trigger) [MariaDB/MySQL 1644 45000]"
        );
    }
}
