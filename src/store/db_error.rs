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

#[cfg(test)]
mod tests {
    use super::sqlite;

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
}
