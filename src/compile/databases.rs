//! What `databases.yaml` means (issue 17): which database holds each
//! schema's tables, what each URL needs from the environment, and the
//! rules a directory must follow when products own their databases.
//!
//! - A table whose schema no database lists is in busbar's own database,
//!   so a directory without the file behaves as before.
//! - A URL comes from the environment (`${VAR}`), whole or in part; a
//!   literal password is refused, so the file can be committed.
//! - An integration's writes (`upsert`, `update`, `delete`) go to one
//!   database, its *target database*, whose transaction carries the lane's
//!   progress (ARCHITECTURE.md, "Exactly once into another database");
//!   its `find` steps may read from any.
//! - A database marked `outbox: true` is an outbox source (PostgreSQL
//!   only): busbar moves the rows its product commits into
//!   `busbar_outbox.events` into busbar's log.
//!
//! Like the rest of `compile`, nothing here does I/O or reads the
//! environment: [`Database::url_with`] is given the variables.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;

use super::ident::TableName;
use super::route::{Integration, StepKind};
use crate::config::SourceFile;
use crate::config::databases::{self as config, LoadedDatabases};
use crate::config::yaml::escape_pointer_token;
use crate::diagnostics::{Code, Diagnostic, Position};

/// The name busbar's own database goes by, in messages and metrics.
pub const OWN: &str = "busbar";

/// `${NAME}` in a URL.
static VARIABLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}").expect("a valid regex"));

/// The kind of server a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    Postgres,
    /// MariaDB or MySQL.
    MySql,
}

impl DatabaseKind {
    /// The kind a URL's scheme names.
    pub fn of_scheme(scheme: &str) -> Option<DatabaseKind> {
        match scheme {
            "postgres" | "postgresql" => Some(DatabaseKind::Postgres),
            "mysql" | "mariadb" => Some(DatabaseKind::MySql),
            _ => None,
        }
    }
}

/// One other database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database {
    pub name: String,
    /// The URL as written, with its `${VAR}` references.
    pub url: String,
    /// The variables the URL reads, in order of first use.
    pub variables: Vec<String>,
    /// What the scheme says, when it is written out (not when the whole
    /// URL is one variable: known at `serve`).
    pub kind: Option<DatabaseKind>,
    /// Empty for a database that is only an outbox source.
    pub schemas: Vec<String>,
    /// Whether its product publishes through `busbar_outbox.events`, which
    /// busbar moves into its log (`outbox: true`).
    pub outbox: bool,
}

impl Database {
    /// The URL with each `${VAR}` replaced by `lookup(VAR)`; the error
    /// names the variables that are not set.
    pub fn url_with(&self, lookup: impl Fn(&str) -> Option<String>) -> Result<String, Vec<String>> {
        let mut missing = Vec::new();
        let url = VARIABLE.replace_all(&self.url, |captures: &regex::Captures<'_>| {
            let name = &captures[1];
            lookup(name).unwrap_or_else(|| {
                if !missing.iter().any(|m| m == name) {
                    missing.push(name.to_owned());
                }
                String::new()
            })
        });
        if missing.is_empty() {
            Ok(url.into_owned())
        } else {
            Err(missing)
        }
    }
}

/// Every other database, and which one holds each schema.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Databases {
    /// In file order.
    pub list: Vec<Database>,
    /// The file they came from.
    pub file: Option<PathBuf>,
    by_schema: HashMap<String, usize>,
}

impl Databases {
    /// The database holding `table`; `None` for busbar's own.
    pub fn of_table(&self, table: &TableName) -> Option<&Database> {
        let schema = table.schema.as_ref()?;
        self.by_schema
            .get(schema.as_str())
            .map(|&index| &self.list[index])
    }

    pub fn get(&self, name: &str) -> Option<&Database> {
        self.list.iter().find(|d| d.name == name)
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// Compiles `databases.yaml`; no file gives no other database.
pub fn compile(file: Option<&SourceFile>) -> (Databases, Vec<Diagnostic>) {
    let Some(file) = file else {
        return (Databases::default(), Vec::new());
    };
    let (loaded, mut diagnostics) = config::load(file);
    let Some(LoadedDatabases {
        document,
        databases,
    }) = loaded
    else {
        return (Databases::default(), diagnostics);
    };
    let at = |pointer: String| document.spans.position(&pointer);
    let mut out = Databases {
        file: Some(file.path.clone()),
        ..Databases::default()
    };
    let mut first_place: HashMap<String, (String, Position)> = HashMap::new();
    for model in databases {
        let name_pointer = format!("/databases/{}", escape_pointer_token(&model.name));
        if model.name == OWN {
            diagnostics.push(
                Diagnostic::error(
                    &file.path,
                    document.spans.key_position(&name_pointer),
                    Code::InvalidValue,
                    "`busbar` is busbar's own database: tables whose schema no other database lists are there already",
                )
                .with_help("give this database the name of its product, e.g. `nexus`"),
            );
            continue;
        }
        let url_position = at(format!("{name_pointer}/url"));
        let (kind, url_diagnostics) = check_url(&file.path, url_position, &model.url);
        diagnostics.extend(url_diagnostics);
        if model.outbox && kind == Some(DatabaseKind::MySql) {
            diagnostics.push(
                Diagnostic::error(
                    &file.path,
                    at(format!("{name_pointer}/outbox")),
                    Code::InvalidValue,
                    "an outbox source must be a PostgreSQL database: busbar reads outboxes with PostgreSQL's row locks and visibility, not MariaDB's or MySQL's",
                )
                .with_help("publish from this product over the API, or keep its outbox in a PostgreSQL database"),
            );
        }
        for (i, schema) in model.schemas.iter().enumerate() {
            let position = at(format!("{name_pointer}/schemas/{i}"));
            if schema == "integrations" {
                diagnostics.push(Diagnostic::error(
                    &file.path,
                    position,
                    Code::InvalidValue,
                    "schema `integrations` holds busbar's own tables; it stays in busbar's database",
                ));
            } else if let Some((owner, first)) = first_place.get(schema) {
                diagnostics.push(
                    Diagnostic::error(
                        &file.path,
                        position,
                        Code::DuplicateSchema,
                        format!(
                            "schema `{schema}` is already in database `{owner}`: a schema's tables are in one database"
                        ),
                    )
                    .with_related(&file.path, *first, format!("`{schema}` listed for `{owner}` here")),
                );
            } else {
                first_place.insert(schema.clone(), (model.name.clone(), position));
            }
        }
        let index = out.list.len();
        for schema in &model.schemas {
            out.by_schema.entry(schema.clone()).or_insert(index);
        }
        let mut variables: Vec<String> = Vec::new();
        for captures in VARIABLE.captures_iter(&model.url) {
            if !variables.iter().any(|v| v == &captures[1]) {
                variables.push(captures[1].to_owned());
            }
        }
        out.list.push(Database {
            name: model.name,
            url: model.url,
            variables,
            kind,
            schemas: model.schemas,
            outbox: model.outbox,
        });
    }
    (out, diagnostics)
}

/// Checks a URL as written: a scheme busbar can use, `${…}` references
/// closed, and no literal password (in the user part or as a
/// `password=` parameter). Returns the kind its scheme names, if written.
fn check_url(
    file: &Path,
    position: Position,
    url: &str,
) -> (Option<DatabaseKind>, Vec<Diagnostic>) {
    let mut diagnostics = Vec::new();
    // Every reference replaced by one placeholder character, so that the
    // URL's structure can be read without the values.
    let shape = VARIABLE.replace_all(url, "\u{1}");
    if shape.contains("${") {
        diagnostics.push(
            Diagnostic::error(
                file,
                position,
                Code::InvalidValue,
                "this URL has a `${` that does not close as `${NAME}`",
            )
            .with_help("variables are `${NAME}`: letters, digits and `_`"),
        );
        return (None, diagnostics);
    }
    if shape == "\u{1}" {
        // The whole URL is a variable: its scheme is known at `serve`.
        return (None, diagnostics);
    }
    let Some((scheme, rest)) = shape.split_once("://") else {
        diagnostics.push(
            Diagnostic::error(
                file,
                position,
                Code::InvalidValue,
                "this is not a database URL: it has no `scheme://`",
            )
            .with_help(
                "write `${NEXUS_DATABASE_URL}`, or `postgres://user:${PASSWORD}@host/database`",
            ),
        );
        return (None, diagnostics);
    };
    let kind = if scheme.contains('\u{1}') {
        None
    } else {
        match DatabaseKind::of_scheme(scheme) {
            Some(kind) => Some(kind),
            None => {
                diagnostics.push(
                    Diagnostic::error(
                        file,
                        position,
                        Code::InvalidValue,
                        format!("busbar cannot write to a `{scheme}://` database"),
                    )
                    .with_help("use `postgres://` for PostgreSQL, `mysql://` or `mariadb://` for MariaDB and MySQL"),
                );
                None
            }
        }
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let password = authority
        .rsplit_once('@')
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, password)| password);
    let in_query = rest.split_once('?').and_then(|(_, query)| {
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            matches!(key, "password" | "pass" | "pwd").then_some(value)
        })
    });
    for password in [password, in_query].into_iter().flatten() {
        if !password.is_empty() && password != "\u{1}" {
            diagnostics.push(
                Diagnostic::error(
                    file,
                    position,
                    Code::LiteralPassword,
                    "this URL has a password written in it: databases.yaml is committed with the integrations, so passwords come from the environment",
                )
                .with_help("write the password as a variable, `postgres://nexus:${NEXUS_PASSWORD}@host/nexus`, or the whole URL as `${NEXUS_DATABASE_URL}`"),
            );
            break;
        }
    }
    (kind, diagnostics)
}

/// Gives each integration its target database and checks that its writes
/// go to one database.
pub fn resolve(databases: &Databases, integrations: &mut [Integration]) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    for integration in integrations {
        // The first write decides; a write elsewhere is reported where it
        // stands, pointing back at the first.
        let mut first: Option<(Option<&Database>, &TableName, Position)> = None;
        let mut reported = false;
        for route in &integration.routes {
            for step in &route.steps {
                let table = match &step.kind {
                    StepKind::Upsert { table, .. }
                    | StepKind::Update { table, .. }
                    | StepKind::Delete { table, .. } => table,
                    StepKind::Find { .. } | StepKind::Emit { .. } => continue,
                };
                let database = databases.of_table(table);
                match &first {
                    None => first = Some((database, table, step.spans.table)),
                    Some((chosen, first_table, first_position)) => {
                        if chosen.map(|d| &d.name) != database.map(|d| &d.name) && !reported {
                            reported = true;
                            let name = |d: Option<&Database>| {
                                d.map_or_else(
                                    || format!("busbar's own database (`{OWN}`)"),
                                    |d| format!("database `{}`", d.name),
                                )
                            };
                            diagnostics.push(
                                Diagnostic::error(
                                    &integration.file,
                                    step.spans.table,
                                    Code::WritesTwoDatabases,
                                    format!(
                                        "`{table}` is in {}, but this integration already writes to `{first_table}` in {}: an integration's writes commit in one database's transaction",
                                        name(database),
                                        name(*chosen)
                                    ),
                                )
                                .with_help("split it into two integrations, the second fed by an `emit` of the first")
                                .with_related(&integration.file, *first_position, format!("`{first_table}` written here")),
                            );
                        }
                    }
                }
            }
        }
        integration.database = first.and_then(|(d, _, _)| d).map(|d| d.name.clone());
        // Its reads of other databases: each batch reads them in a
        // transaction of their own (read committed, nothing written).
        let mut reads_from: Vec<String> = Vec::new();
        for step in integration.routes.iter().flat_map(|r| &r.steps) {
            let StepKind::Find { table, .. } = &step.kind else {
                continue;
            };
            if let Some(database) = databases.of_table(table)
                && integration.database.as_deref() != Some(database.name.as_str())
                && !reads_from.contains(&database.name)
            {
                reads_from.push(database.name.clone());
            }
        }
        integration.reads_from = reads_from;
        // Processes sharing busbar's database agree on an integration by
        // its fingerprint: where it writes is part of its definition.
        if let Some(name) = &integration.database {
            integration.fingerprint = super::route::fingerprint(
                format!("{}\ndatabase: {name}", integration.fingerprint).as_bytes(),
            );
        }
    }
    diagnostics
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(text: &str) -> (Databases, Vec<Diagnostic>) {
        compile(Some(&SourceFile {
            path: "databases.yaml".into(),
            text: text.to_owned(),
        }))
    }

    #[test]
    fn schemas_map_tables_to_their_database() {
        let (databases, diagnostics) = compiled(
            "databases:\n  nexus:\n    url: ${NEXUS_DATABASE_URL}\n    schemas: [hris]\n  \
             paylinq:\n    url: mariadb://paylinq:${PAYLINQ_PASSWORD}@db:3306/payroll\n    schemas: [payroll]\n",
        );
        assert_eq!(diagnostics, vec![]);
        let table = |t: &str| TableName::parse(t).unwrap();
        assert_eq!(
            databases.of_table(&table("hris.employees")).unwrap().name,
            "nexus"
        );
        assert_eq!(
            databases.of_table(&table("payroll.runs")).unwrap().name,
            "paylinq"
        );
        assert!(databases.of_table(&table("core.organizations")).is_none());
        assert!(databases.of_table(&table("employees")).is_none());
        let paylinq = databases.get("paylinq").unwrap();
        assert_eq!(paylinq.kind, Some(DatabaseKind::MySql));
        assert_eq!(paylinq.variables, vec!["PAYLINQ_PASSWORD"]);
        assert_eq!(databases.get("nexus").unwrap().kind, None);
        let env = |name: &str| (name == "PAYLINQ_PASSWORD").then(|| "s3cret".to_owned());
        assert_eq!(
            paylinq.url_with(env).unwrap(),
            "mariadb://paylinq:s3cret@db:3306/payroll"
        );
        assert_eq!(
            databases.get("nexus").unwrap().url_with(env),
            Err(vec!["NEXUS_DATABASE_URL".to_owned()])
        );
    }

    #[test]
    fn literal_passwords_unknown_schemes_and_shared_schemas_are_refused() {
        let (_, diagnostics) = compiled(
            "databases:\n  \
             a:\n    url: postgres://nexus:hunter2@db/nexus\n    schemas: [hris]\n  \
             b:\n    url: postgres://db/nexus?sslmode=require&password=hunter2\n    schemas: [pay]\n  \
             c:\n    url: oracle://db/x\n    schemas: [hris, integrations]\n  \
             d:\n    url: postgres://nexus:${PW@db/x\n    schemas: [other]\n  \
             busbar:\n    url: ${X}\n    schemas: [own]\n",
        );
        assert_eq!(
            crate::diagnostics::places(&diagnostics),
            vec![
                "3:10 literal-password",
                "6:10 literal-password",
                "9:10 invalid-value",
                "10:15 duplicate-schema",
                "10:21 invalid-value",
                "12:10 invalid-value",
                "14:3 invalid-value",
            ]
        );
        assert!(
            diagnostics.iter().all(|d| !d.message.contains("hunter2")),
            "a password is never repeated: {diagnostics:?}"
        );
    }

    #[test]
    fn a_password_from_the_environment_is_accepted() {
        for url in [
            "${NEXUS_DATABASE_URL}",
            "postgres://nexus:${NEXUS_PASSWORD}@db/nexus",
            "postgresql://nexus@db/nexus?password=${PW}",
            "mysql://root@127.0.0.1:3306/payroll",
            "${SCHEME}://nexus:${PW}@db/nexus",
        ] {
            let (_, diagnostics) = compiled(&format!(
                "databases:\n  nexus:\n    url: \"{url}\"\n    schemas: [hris]\n"
            ));
            assert_eq!(diagnostics, vec![], "{url}");
        }
    }
    #[test]
    fn an_outbox_source_must_be_postgres() {
        let (databases, diagnostics) = compiled(
            "databases:\n  \
             nexus:\n    url: ${NEXUS_DATABASE_URL}\n    outbox: true\n  \
             paylinq:\n    url: mariadb://paylinq:${PW}@db/payroll\n    schemas: [payroll]\n    outbox: true\n  \
             core:\n    url: postgres://core:${PW}@db/core\n    schemas: [core]\n    outbox: true\n",
        );
        assert_eq!(
            crate::diagnostics::places(&diagnostics),
            vec!["8:13 invalid-value"]
        );
        assert!(
            diagnostics[0].message.contains("must be a PostgreSQL"),
            "{diagnostics:?}"
        );
        let nexus = databases.get("nexus").unwrap();
        assert!(nexus.outbox && nexus.schemas.is_empty());
        assert!(databases.get("core").unwrap().outbox);
    }

    #[test]
    fn an_integration_gets_its_target_database_and_serve_refuses_reads_from_a_third() {
        let integration = SourceFile {
            path: "dir/hires.yaml".into(),
            text: "source: recruitiq\ntarget: nexus\norder_by: $.data.id\nroutes:\n  - on: candidate.hired\n    steps:\n      \
                   - find: core.organizations\n        where: { id: $.organization_id }\n        as: org\n      \
                   - upsert: hris.employees\n        key: [email]\n        values: { email: $.data.email }\n"
                .into(),
        };
        let mut dir = crate::config::ConfigDir {
            root: "dir".into(),
            integrations: vec![integration],
            ..crate::config::ConfigDir::default()
        };
        let alone = super::super::compile(&dir, 1).generation.expect("compiles");
        assert_eq!(alone.integrations[0].database, None);
        assert!(alone.integrations[0].reads_from.is_empty());

        dir.databases = Some(SourceFile {
            path: "dir/databases.yaml".into(),
            text: "databases:\n  nexus:\n    url: ${NEXUS_DATABASE_URL}\n    schemas: [hris]\n"
                .into(),
        });
        let elsewhere = super::super::compile(&dir, 2).generation.expect("compiles");
        let hires = &elsewhere.integrations[0];
        assert_eq!(
            hires.database.as_deref(),
            Some("nexus"),
            "the write decides, not the read of core"
        );
        assert_ne!(hires.fingerprint, alone.integrations[0].fingerprint);
        assert!(
            hires.reads_from.is_empty(),
            "writes to nexus, reads from busbar's own"
        );

        // A read from a database the integration does not write to: each
        // batch reads it in a transaction of its own.
        dir.databases = Some(SourceFile {
            path: "dir/databases.yaml".into(),
            text:
                "databases:\n  platform:\n    url: ${PLATFORM_DATABASE_URL}\n    schemas: [core]\n"
                    .into(),
        });
        let reads = super::super::compile(&dir, 3).generation.expect("compiles");
        assert_eq!(
            reads.integrations[0].database, None,
            "it writes to busbar's database"
        );
        assert_eq!(
            reads.integrations[0].reads_from,
            vec!["platform".to_owned()]
        );
    }
}
