//! What may go into SQL text besides busbar's own fixed fragments: names,
//! validated or typed here and quoted in exactly one place, and the type
//! names of casts.
//!
//! - [`Ident`] / [`TableName`]: table and column names from configuration
//!   (never from payloads), matching `[a-z_][a-z0-9_]*` (at most 63
//!   characters, PostgreSQL's limit); only [`Ident::parse`] makes one.
//! - [`CatalogName`]: a name as the database's own catalog has it (a
//!   target table's columns, which may include names no configuration could
//!   spell); quoting escapes it.
//! - [`SqlType`]: a type name from the catalog, for `CAST(… AS <type>)`,
//!   parsed so that it can only be a type name ([`SqlType::parse`]).
//!
//! [`quote`] takes only an [`SqlName`] (a sealed trait: [`Ident`] and
//! [`CatalogName`], never a `&str`), so "every identifier passes through
//! `quote`" is checked by the compiler, and neither a YAML file nor an
//! event can inject SQL. Values are always bound parameters.

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

    /// The table's name in SQLite, which has no schemas: `hris.employees`
    /// is one table named so in its catalog.
    pub fn sqlite_name(&self) -> CatalogName {
        CatalogName(self.to_string())
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

/// A name as the database's own catalog reports it (a column of a target
/// table). It need not be an [`Ident`]: a table may have columns busbar is
/// never told about, such as `"firstName"`. It is never parsed from
/// configuration or payloads, and [`quote`] escapes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CatalogName(String);

impl CatalogName {
    /// A name read from the catalog (`pg_attribute`, `pragma_table_info`).
    pub fn new(name: impl Into<String>) -> CatalogName {
        CatalogName(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CatalogName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for CatalogName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for CatalogName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Ident {}
    impl Sealed for super::CatalogName {}
}

/// A name [`quote`] accepts: an [`Ident`] or a [`CatalogName`]. Sealed, so
/// no other type (in particular no `&str`) can reach SQL text as a name.
pub trait SqlName: sealed::Sealed {
    fn name(&self) -> &str;
}

impl SqlName for Ident {
    fn name(&self) -> &str {
        self.as_str()
    }
}

impl SqlName for CatalogName {
    fn name(&self) -> &str {
        self.as_str()
    }
}

/// Quotes a name for SQL. The only function that puts a name into SQL
/// text. An [`Ident`] has nothing to escape; a [`CatalogName`] has its `"`
/// doubled.
pub fn quote(name: &impl SqlName) -> String {
    format!("\"{}\"", name.name().replace('"', "\"\""))
}

/// Quotes a name for MariaDB and MySQL SQL (`store::mysql`): in backticks,
/// which both read as an identifier whatever the session's `sql_mode`
/// (`"` is a string there unless `ANSI_QUOTES` is set). The only function
/// that puts a name into MariaDB SQL text; a [`CatalogName`] has its `` ` ``
/// doubled.
pub fn backquote(name: &impl SqlName) -> String {
    format!("`{}`", name.name().replace('`', "``"))
}

/// A type name from the database's catalog, to cast a bound value to on
/// PostgreSQL (`CAST($1 AS character varying)`). Parsed, so that it can
/// only be a type name: ASCII letters, digits, spaces, `_`, `.`, `,`,
/// balanced parentheses and brackets (`numeric(12,2)`, `integer[]`,
/// `timestamp with time zone`), and double-quoted identifiers with their
/// `"` doubled (`public."Mood"`, as `format_type` writes them). Anything
/// else (`;`, `'`, `-`, `/`, an unclosed quote or parenthesis) is refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SqlType(String);

/// Why a catalog's type name cannot be cast to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a type name busbar can cast to: {reason}")]
pub struct SqlTypeError {
    pub text: String,
    pub reason: &'static str,
}

impl SqlType {
    /// Longer type names than this are refused (PostgreSQL's longest are
    /// two quoted identifiers of 63 bytes, and a modifier).
    pub const MAX_LEN: usize = 200;

    pub fn parse(text: &str) -> Result<SqlType, SqlTypeError> {
        let refuse = |reason| {
            Err(SqlTypeError {
                text: text.to_owned(),
                reason,
            })
        };
        if text.trim().is_empty() {
            return refuse("it is empty");
        }
        if text.len() > Self::MAX_LEN {
            return refuse("it is too long");
        }
        let mut parentheses = 0usize;
        let mut bracket = false;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '"' => loop {
                    match chars.next() {
                        None => return refuse("a quoted name is not closed"),
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                        }
                        Some('"') => break,
                        Some('\0') => return refuse("it contains a NUL character"),
                        Some(_) => {}
                    }
                },
                '(' => parentheses += 1,
                ')' => match parentheses.checked_sub(1) {
                    Some(depth) => parentheses = depth,
                    None => return refuse("a parenthesis closes what was not opened"),
                },
                '[' if !bracket => bracket = true,
                ']' if bracket => bracket = false,
                '[' | ']' => return refuse("its brackets are not balanced"),
                c if c.is_ascii_alphanumeric() || matches!(c, ' ' | '_' | '.' | ',') => {}
                _ => return refuse("it contains a character no type name has"),
            }
        }
        if parentheses > 0 || bracket {
            return refuse("a parenthesis or bracket is not closed");
        }
        Ok(SqlType(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
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
        assert_eq!(quote(&Ident::parse("a").unwrap()), "\"a\"");
        assert_eq!(quote(&CatalogName::new("a\"b")), "\"a\"\"b\"");
        assert_eq!(
            quote(&TableName::parse("hris.employees").unwrap().sqlite_name()),
            "\"hris.employees\""
        );
    }

    #[test]
    fn backquoting_doubles_backticks() {
        assert_eq!(
            backquote(&Ident::parse("employees").unwrap()),
            "`employees`"
        );
        assert_eq!(backquote(&CatalogName::new("a`b\"c")), "`a``b\"c`");
    }

    #[test]
    fn catalog_type_names_are_accepted() {
        for good in [
            "text",
            "uuid",
            "character varying",
            "character varying(50)",
            "numeric(12,2)",
            "numeric(12, 2)",
            "timestamp(3) with time zone",
            "double precision",
            "integer[]",
            "character varying(10)[]",
            "public.mood",
            "\"Mood\"",
            "public.\"Mood\"[]",
            "\"a \"\"quoted\"\" ; name\"",
            "interval year to month",
            "\"char\"",
        ] {
            assert_eq!(SqlType::parse(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn hostile_type_names_are_refused() {
        for bad in [
            "",
            "   ",
            "text); DROP TABLE x; --",
            "text) , (SELECT secret FROM keys",
            "text /* comment */",
            "text -- comment",
            "text'",
            "varchar(5",
            "varchar5)",
            "\"Mood",
            "\"a\"\"",
            "int[",
            "int]",
            "int[[]]",
            "text;",
            "tëxt",
            "text\n",
            "\"a\0b\"",
            &"x".repeat(SqlType::MAX_LEN + 1),
        ] {
            let error = SqlType::parse(bad).unwrap_err();
            assert_eq!(error.text, bad);
            assert!(
                error
                    .to_string()
                    .contains("is not a type name busbar can cast to"),
                "{error}"
            );
        }
    }
}
