//! `databases.yaml`: where products' tables live when they are not in
//! busbar's own database (issue 17; ARCHITECTURE.md, "Products' own
//! databases").
//!
//! The file sits at the top of the integrations directory. It is read
//! with positions and validated against `schemas/databases.schema.json`
//! like an integration file; what it means (which schema is where, which
//! URLs are acceptable) is decided by [`crate::compile::databases`].

use std::path::Path;
use std::sync::LazyLock;

use jsonschema::Validator;
use serde_json::Value;

use super::SourceFile;
use super::yaml::{self, Document};
use crate::diagnostics::Diagnostic;

/// The file's names; a file with one of them is never an integration.
pub const FILE_NAMES: [&str; 2] = ["databases.yaml", "databases.yml"];

/// The file's format, as shipped in `schemas/`.
pub const DATABASES_SCHEMA: &str = include_str!("../../schemas/databases.schema.json");

static SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    serde_json::from_str(DATABASES_SCHEMA).expect("the shipped databases schema is valid JSON")
});

static VALIDATOR: LazyLock<Validator> = LazyLock::new(|| {
    jsonschema::draft202012::new(&SCHEMA).expect("the shipped databases schema is a valid schema")
});

/// Whether `path` names a databases file (whatever its directory).
pub fn is_databases_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|name| FILE_NAMES.contains(&name))
}

/// One database as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseModel {
    pub name: String,
    /// The URL as written, `${VAR}` references unexpanded.
    pub url: String,
    /// Empty for a database that is only an outbox source.
    pub schemas: Vec<String>,
    /// Whether busbar moves the events of its `busbar_outbox.events`
    /// table into its log (`outbox: true`; ARCHITECTURE.md, "Outbox
    /// sources in other PostgreSQL databases").
    pub outbox: bool,
}

/// The parsed file: its document (for positions) and its databases in
/// file order.
#[derive(Debug, Clone)]
pub struct LoadedDatabases {
    pub document: Document,
    pub databases: Vec<DatabaseModel>,
}

/// Parses and validates the file. A file with schema errors gives no
/// model: its errors keep the directory from going live anyway.
pub fn load(file: &SourceFile) -> (Option<LoadedDatabases>, Vec<Diagnostic>) {
    let (document, mut diagnostics) = yaml::parse(&file.path, &file.text);
    let Some(document) = document else {
        return (None, diagnostics);
    };
    for error in VALIDATOR.iter_errors(&document.value) {
        let pointer = error.instance_path().as_str().to_owned();
        diagnostics.extend(super::schema::describe_error(
            &SCHEMA, &file.path, &document, &error, &pointer,
        ));
    }
    if !diagnostics.is_empty() {
        return (None, diagnostics);
    }
    let databases = document.value["databases"]
        .as_object()
        .map(|entries| {
            entries
                .iter()
                .map(|(name, entry)| DatabaseModel {
                    name: name.clone(),
                    url: entry["url"].as_str().unwrap_or_default().to_owned(),
                    schemas: entry["schemas"]
                        .as_array()
                        .map(|s| {
                            s.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default(),
                    outbox: entry["outbox"].as_bool().unwrap_or(false),
                })
                .collect()
        })
        .unwrap_or_default();
    (
        Some(LoadedDatabases {
            document,
            databases,
        }),
        diagnostics,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> (Option<LoadedDatabases>, Vec<Diagnostic>) {
        load(&SourceFile {
            path: "databases.yaml".into(),
            text: text.to_owned(),
        })
    }

    #[test]
    fn a_valid_file_gives_its_databases_in_file_order() {
        let (loaded, diagnostics) = load_text(
            "databases:\n  nexus:\n    url: ${NEXUS_DATABASE_URL}\n    schemas: [hris]\n  \
             paylinq:\n    url: mysql://paylinq:${PAYLINQ_PASSWORD}@db/payroll\n    schemas: [payroll, pay_audit]\n",
        );
        assert_eq!(diagnostics, vec![]);
        let databases = loaded.unwrap().databases;
        assert_eq!(
            databases,
            vec![
                DatabaseModel {
                    name: "nexus".into(),
                    url: "${NEXUS_DATABASE_URL}".into(),
                    schemas: vec!["hris".into()],
                    outbox: false,
                },
                DatabaseModel {
                    name: "paylinq".into(),
                    url: "mysql://paylinq:${PAYLINQ_PASSWORD}@db/payroll".into(),
                    schemas: vec!["payroll".into(), "pay_audit".into()],
                    outbox: false,
                },
            ]
        );
    }

    #[test]
    fn schema_problems_point_at_their_node() {
        let (loaded, diagnostics) = load_text(
            "databases:\n  nexus:\n    url: ${NEXUS_DATABASE_URL}\n    schema: [hris]\n  busbar:\n    url: x\n    schemas: []\n",
        );
        assert!(loaded.is_none());
        let shown = crate::diagnostics::places(&diagnostics);
        assert!(shown.contains(&"4:5 unknown-key".to_owned()), "{shown:?}");
        assert!(shown.contains(&"2:3 missing-key".to_owned()), "{shown:?}");
        assert!(
            shown.iter().any(|s| s.starts_with("7:")),
            "empty schemas: {shown:?}"
        );
    }

    #[test]
    fn an_outbox_source_needs_no_schemas_and_others_do() {
        let (loaded, diagnostics) =
            load_text("databases:\n  nexus:\n    url: ${NEXUS_DATABASE_URL}\n    outbox: true\n");
        assert_eq!(diagnostics, vec![]);
        let nexus = &loaded.unwrap().databases[0];
        assert!(nexus.outbox);
        assert!(nexus.schemas.is_empty());

        let (loaded, diagnostics) =
            load_text("databases:\n  nexus:\n    url: ${NEXUS_DATABASE_URL}\n    outbox: false\n");
        assert!(loaded.is_none());
        assert_eq!(
            crate::diagnostics::places(&diagnostics),
            vec!["2:3 missing-key"]
        );
        let (_, diagnostics) = load_text(
            "databases:\n  nexus:\n    url: ${NEXUS_DATABASE_URL}\n    outbox: yes please\n",
        );
        assert!(
            crate::diagnostics::places(&diagnostics)
                .iter()
                .any(|s| s.starts_with("4:")),
            "{diagnostics:?}"
        );
    }

    #[test]
    fn only_the_two_names_are_databases_files() {
        assert!(is_databases_file(Path::new(
            "integrations.d/databases.yaml"
        )));
        assert!(is_databases_file(Path::new("databases.yml")));
        assert!(!is_databases_file(Path::new("my-databases.yaml")));
        assert!(!is_databases_file(Path::new("databases.yaml.bak")));
    }
}
