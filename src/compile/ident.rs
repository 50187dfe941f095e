//! SQL identifiers from YAML: validated here, quoted in exactly one place.
//!
//! Table and column names come from configuration, never from payloads, and
//! must match `[a-z_][a-z0-9_]*` (at most 63 characters, PostgreSQL's
//! limit). A valid [`Ident`] can only be built by [`Ident::parse`], and SQL
//! text only ever contains one through [`quote`], so neither a YAML file
//! nor an event can inject SQL. Values are always bound parameters.

use std::fmt;

/// PostgreSQL truncates identifiers beyond 63 bytes; refuse them instead.
pub const MAX_IDENT_LEN: usize = 63;

/// A validated SQL identifier (a column, a table, or a schema).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ident(String);

/// Why a name is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentError {
    #[error("an identifier cannot be empty")]
    Empty,
    #[error("`{0}` is longer than {MAX_IDENT_LEN} characters")]
    TooLong(String),
    #[error(
        "`{0}` is not a valid SQL identifier: use lowercase letters, digits and `_`, not starting with a digit"
    )]
    Invalid(String),
}

impl Ident {
    pub fn parse(name: &str) -> Result<Ident, IdentError> {
        let mut chars = name.chars();
        let Some(first) = chars.next() else {
            return Err(IdentError::Empty);
        };
        if name.len() > MAX_IDENT_LEN {
            return Err(IdentError::TooLong(name.to_owned()));
        }
        let valid_first = first.is_ascii_lowercase() || first == '_';
        let valid_rest = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if valid_first && valid_rest {
            Ok(Ident(name.to_owned()))
        } else {
            Err(IdentError::Invalid(name.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A table, optionally qualified by its schema (`hris.employees`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: Option<Ident>,
    pub name: Ident,
}

impl TableName {
    /// Parses `table` or `schema.table`; the error names the bad part.
    pub fn parse(text: &str) -> Result<TableName, IdentError> {
        match text.split_once('.') {
            None => Ok(TableName {
                schema: None,
                name: Ident::parse(text)?,
            }),
            Some((schema, name)) => Ok(TableName {
                schema: Some(Ident::parse(schema)?),
                name: Ident::parse(name)?,
            }),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

/// Quotes an identifier for SQL. The only function that puts a name into
/// SQL text; [`Ident`] guarantees there is nothing to escape, and the
/// doubling of `"` is kept as defence in depth.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_lowercase_identifiers_are_accepted() {
        for good in ["a", "_a", "employees", "employee_payroll_map", "a1"] {
            assert!(Ident::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1a",
            "A",
            "a-b",
            "a b",
            "a;drop",
            "a\"b",
            "é",
            &"x".repeat(64),
        ] {
            assert!(Ident::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tables_may_be_schema_qualified() {
        let t = TableName::parse("hris.employees").unwrap();
        assert_eq!(t.schema.unwrap().as_str(), "hris");
        assert!(TableName::parse("a.b.c").is_err());
        assert!(TableName::parse(".b").is_err());
    }

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote("a"), "\"a\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }
}
