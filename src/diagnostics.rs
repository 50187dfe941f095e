//! Diagnostics: the one shape every problem in a configuration takes.
//!
//! Loading, schema validation, compilation and the graph checks all report
//! problems as [`Diagnostic`] values rather than errors, so that `check`
//! shows every problem at once (a compile "never fails", it returns what it
//! found). Each diagnostic has a stable [`Code`] that tests, CI scripts and
//! documentation can rely on; the message is for humans and may change.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// How bad a problem is. Errors stop a generation from going live; warnings
/// do not (unless `check --deny-warnings` says so).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

macro_rules! codes {
    ($( $(#[$doc:meta])* $variant:ident = $text:literal, )*) => {
        /// The stable identifier of a kind of problem, printed in brackets
        /// after every message (`[undefined-name]`). Never renamed.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code {
            $( $(#[$doc])* $variant, )*
        }

        impl Code {
            /// Every code, for documentation and for the test corpus.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The code as printed.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( Code::$variant => $text, )*
                }
            }
        }
    };
}

codes! {
    /// A file or directory could not be read.
    Io = "io",
    /// The YAML itself is malformed.
    YamlSyntax = "yaml-syntax",
    /// A mapping names the same key twice.
    DuplicateKey = "duplicate-key",
    /// A YAML feature busbar does not accept (several documents, non-string keys).
    YamlUnsupported = "yaml-unsupported",
    /// A key that the file format does not know.
    UnknownKey = "unknown-key",
    /// A key the file format requires is missing.
    MissingKey = "missing-key",
    /// A value of the wrong type (a list where a mapping is expected, ...).
    WrongType = "wrong-type",
    /// A value of the right type that the format does not allow.
    InvalidValue = "invalid-value",
    /// A step names no kind, or more than one (`find`, `upsert`, ...).
    InvalidStep = "invalid-step",
    /// A minijinja template or expression does not parse.
    InvalidTemplate = "invalid-template",
    /// A template uses a filter, test or function that does not exist.
    UnknownFunction = "unknown-function",
    /// A JSONPath does not parse.
    InvalidJsonpath = "invalid-jsonpath",
    /// A template uses a name that is not defined.
    UndefinedName = "undefined-name",
    /// A template uses a name that only a later step defines.
    ForwardReference = "forward-reference",
    /// Two steps of one route bind the same `as` name, or a step binds a reserved one.
    DuplicateName = "duplicate-name",
    /// A table or column name is not a valid SQL identifier.
    InvalidIdentifier = "invalid-identifier",
    /// An `upsert` has no `key`.
    UpsertWithoutKey = "upsert-without-key",
    /// An `upsert` key column is not among the values written.
    KeyNotInValues = "key-not-in-values",
    /// Two files declare the same integration id.
    DuplicateId = "duplicate-id",
    /// One integration routes the same event twice with no guard or name to tell them apart.
    DuplicateRoute = "duplicate-route",
    /// One integration has more than one route without a `name:` for the same event.
    RouteNeedsName = "route-needs-name",
    /// Two integrations upsert the same table on the same key for the same event.
    ConflictingWrite = "conflicting-write",
    /// The integrations' `emit` steps form a cycle.
    EmitCycle = "emit-cycle",
    /// A path or template reads a field the event's contract does not have.
    NotInContract = "not-in-contract",
    /// An `emit` step's data does not fit the emitted event's contract.
    EmitContract = "emit-contract",
    /// A route listens to an event that has no contract.
    MissingContract = "missing-contract",
    /// A contract file is not valid JSON or not a valid JSON Schema.
    InvalidContract = "invalid-contract",
    /// `databases.yaml` has a password written in a URL (passwords come
    /// from the environment).
    LiteralPassword = "literal-password",
    /// `databases.yaml` lists a schema for two databases.
    DuplicateSchema = "duplicate-schema",
    /// An integration writes to tables in two databases.
    WritesTwoDatabases = "writes-two-databases",
    /// The directory holds no integration files.
    NoIntegrations = "no-integrations",
    /// (a warning) An integration writes to tables without `order_by`, so
    /// its events are ordered per organization: one retrying delivery
    /// holds back every later event of its organization.
    NoOrderBy = "no-order-by",
    /// (`check --database-url`) A step names a table the database does not have.
    UnknownTable = "unknown-table",
    /// (`check --database-url`) A step names a column its table does not have.
    UnknownColumn = "unknown-column",
    /// (`check --database-url`) An `upsert` key is not exactly the columns of a
    /// unique index or constraint, so `ON CONFLICT` cannot use it.
    NoUniqueKey = "no-unique-key",
    /// (`check --database-url`) A literal, or a path whose contract gives its
    /// type, can never be stored in its column's type.
    TypeMismatch = "type-mismatch",
    /// (`check --database-url`) An `upsert` leaves out a `NOT NULL` column that
    /// has no default, so every insert would fail.
    MissingNotNull = "missing-not-null",
    /// (`check --database-url`, a warning) A contract field that may be
    /// absent or null feeds a `NOT NULL` column without a default.
    NullableIntoNotNull = "nullable-into-not-null",
    /// (`check --database-url`, a warning) A contract string field may be
    /// longer than its `varchar(n)` or `char(n)` column holds.
    MayExceedLength = "may-exceed-length",
}

impl Code {
    /// The codes only `check --database-url` gives: they need the target
    /// database's catalog, so no check of files alone can produce them.
    pub const DATABASE: &'static [Code] = &[
        Code::UnknownTable,
        Code::UnknownColumn,
        Code::NoUniqueKey,
        Code::TypeMismatch,
        Code::MissingNotNull,
        Code::NullableIntoNotNull,
        Code::MayExceedLength,
    ];
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A place in a source file, 1-based line and column (columns count
/// characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    pub const START: Position = Position { line: 1, column: 1 };

    pub fn new(line: usize, column: usize) -> Self {
        Position { line, column }
    }
}

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The file the problem is in, as given to the loader (relative paths
    /// stay relative, so output matches what the user typed).
    pub file: PathBuf,
    #[serde(flatten)]
    pub position: Position,
    pub severity: Severity,
    pub code: Code,
    pub message: String,
    /// An optional hint on how to fix it ("did you mean `email`?").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// Other places the problem involves, in other files too: the first
    /// use of a duplicated id, the other steps of an emit cycle. Editors
    /// show them as related locations (`busbar lsp`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<Related>,
}

/// A place a [`Diagnostic`] refers to besides its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Related {
    pub file: PathBuf,
    #[serde(flatten)]
    pub position: Position,
    /// What is there ("first used here").
    pub message: String,
}

impl Diagnostic {
    pub fn error(file: &Path, position: Position, code: Code, message: impl Into<String>) -> Self {
        let mut message = message.into();
        // A message is one line (`path:line:col: error: message [code]`),
        // even when it quotes a multi-line value from the file.
        if message.contains(['\n', '\r']) {
            message = message.replace('\r', "\\r").replace('\n', "\\n");
        }
        Diagnostic {
            file: file.to_path_buf(),
            position,
            severity: Severity::Error,
            code,
            message,
            help: None,
            related: Vec::new(),
        }
    }

    pub fn warning(
        file: &Path,
        position: Position,
        code: Code,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(file, position, code, message)
        }
    }

    /// Adds a hint shown after the message.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds a related place (see [`Diagnostic::related`]).
    pub fn with_related(
        mut self,
        file: &Path,
        position: Position,
        message: impl Into<String>,
    ) -> Self {
        self.related.push(Related {
            file: file.to_path_buf(),
            position,
            message: message.into(),
        });
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// The one-line form `path:line:col: severity: message [code]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {} [{}]",
            self.file.display(),
            self.position.line,
            self.position.column,
            self.severity,
            self.message,
            self.code
        )
    }
}

/// Sorts diagnostics by file, then position, then code, and drops exact
/// duplicates (two checks may find the same thing).
pub fn sort(diagnostics: &mut Vec<Diagnostic>) {
    diagnostics.sort_by(|a, b| {
        (&a.file, a.position, a.severity, a.code, &a.message)
            .cmp(&(&b.file, b.position, b.severity, b.code, &b.message))
    });
    diagnostics.dedup();
}

/// The best suggestion among `candidates` for a misspelt `name`, if one is close.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(name, candidate), candidate))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| format!("did you mean `{candidate}`?"))
}

/// Each diagnostic as `line:column code`, for tests that pin where
/// problems are reported.
#[cfg(test)]
pub(crate) fn places(diagnostics: &[Diagnostic]) -> Vec<String> {
    diagnostics
        .iter()
        .map(|d| {
            format!(
                "{}:{} {}",
                d.position.line,
                d.position.column,
                d.code.as_str()
            )
        })
        .collect()
}
