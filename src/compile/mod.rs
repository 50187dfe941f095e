//! From configuration to an executable [`Generation`].
//!
//! [`compile`] takes the files read by [`crate::config::read_directory`]
//! and returns every diagnostic it can find together with a generation when
//! there are no errors. It does no I/O: `check`, `render`, `test` and the
//! live reloader all call it with files already read, so they agree on what
//! a directory means.

pub mod contract;
pub mod databases;
mod file;
pub mod graph;
pub mod ident;
pub mod route;
pub mod template;

use std::collections::HashMap;

use crate::config::{self, ConfigDir, LoadedFile, SourceFile};
use crate::diagnostics::{self, Code, Diagnostic, Position};
use contract::Contracts;
use databases::Databases;
pub use route::{
    ColumnSpan, Columns, Guard, Integration, OnDead, OrderKey, RetryPolicy, Route, Step, StepKind,
    StepSpans, ValueExpr,
};
use template::{Analyser, TemplateSet, TemplateSources};

/// One compiled snapshot of the whole integrations directory. Immutable;
/// a reload builds a new one and swaps it in.
#[derive(Debug)]
pub struct Generation {
    /// Increases by one with every successful reload (1 for the first).
    pub number: u64,
    /// Every integration, sorted by id.
    pub integrations: Vec<Integration>,
    pub contracts: Contracts,
    pub templates: TemplateSet,
    /// The other databases (`databases.yaml`) and which schema is where.
    pub databases: Databases,
    /// Warnings found while compiling (a generation has no errors).
    pub warnings: Vec<Diagnostic>,
    /// `(source, event)` to `(integration index, route index)`.
    by_event: HashMap<(String, String), Vec<(usize, usize)>>,
}

impl Generation {
    /// Every route of every integration that handles `source`/`event`,
    /// enabled or not (the caller decides).
    pub fn routes<'g>(
        &'g self,
        source: &str,
        event: &str,
    ) -> impl Iterator<Item = (&'g Integration, &'g Route)> + 'g {
        self.by_event
            .get(&(source.to_owned(), event.to_owned()))
            .into_iter()
            .flatten()
            .map(|(i, r)| {
                let integration = &self.integrations[*i];
                (integration, &integration.routes[*r])
            })
    }

    pub fn integration(&self, id: &str) -> Option<&Integration> {
        self.integrations
            .binary_search_by(|i| i.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.integrations[i])
    }

    /// The ids of its integrations, sorted.
    pub fn integration_ids(&self) -> Vec<String> {
        self.integrations.iter().map(|i| i.id.clone()).collect()
    }

    /// The ids of its integrations that `next` no longer has.
    pub fn removed_in(&self, next: &Generation) -> Vec<String> {
        self.integrations
            .iter()
            .filter(|i| next.integration(&i.id).is_none())
            .map(|i| i.id.clone())
            .collect()
    }
}

/// The result of compiling a directory: the diagnostics, always, and a
/// generation when there were no errors.
#[derive(Debug)]
pub struct Compilation {
    pub generation: Option<Generation>,
    /// Every problem found, sorted by file and position.
    pub diagnostics: Vec<Diagnostic>,
    /// How many integration files were read.
    pub files: usize,
}

impl Compilation {
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    pub fn warnings(&self) -> usize {
        self.diagnostics.len() - self.errors()
    }
}

/// Compiles a directory's files into generation number `number`.
pub fn compile(dir: &ConfigDir, number: u64) -> Compilation {
    let parsed = Contracts::parse(&dir.contracts_root, &dir.contracts);
    compile_with(dir, parsed, &mut config::load, number)
}

/// What [`compile_with`] loads each integration file with: [`config::load`],
/// or something that returns exactly what it would.
pub type Load<'l> = dyn FnMut(&SourceFile) -> (Option<LoadedFile>, Vec<Diagnostic>) + 'l;

/// [`compile`] with the directory's contracts already parsed
/// (`Contracts::parse` of `dir.contracts`, with its diagnostics) and the
/// files loaded by `load`: the language server keeps both between edits,
/// parsing again only what changed.
pub fn compile_with(
    dir: &ConfigDir,
    (contracts, contract_diagnostics): (Contracts, Vec<Diagnostic>),
    load: &mut Load<'_>,
    number: u64,
) -> Compilation {
    let mut diagnostics = dir.diagnostics.clone();
    diagnostics.extend(contract_diagnostics);
    let (databases, database_diagnostics) = databases::compile(dir.databases.as_ref());
    diagnostics.extend(database_diagnostics);

    let analyser = Analyser::default();
    let mut sources = TemplateSources::default();
    let mut integrations = Vec::new();
    for file in &dir.integrations {
        let (loaded, load_diagnostics) = load(file);
        let schema_errors = load_diagnostics.iter().any(Diagnostic::is_error);
        diagnostics.extend(load_diagnostics);
        let Some(loaded) = loaded else { continue };
        let (integration, _fit, file_diagnostics) =
            file::FileCompiler::new(&loaded, &analyser, &contracts, &mut sources, schema_errors)
                .compile();
        diagnostics.extend(file_diagnostics);
        // Integrations with errors still take part in the checks across
        // files; any error keeps the whole directory from going live.
        integrations.push(integration);
    }
    if dir.integrations.is_empty() && dir.diagnostics.is_empty() {
        diagnostics.push(Diagnostic::warning(
            &dir.root,
            Position::START,
            Code::NoIntegrations,
            "no integration files (*.yaml, *.yml) in this directory",
        ));
    }
    diagnostics.extend(databases::resolve(&databases, &mut integrations));
    diagnostics.extend(graph::check(&integrations));
    diagnostics::sort(&mut diagnostics);

    let has_errors = diagnostics.iter().any(Diagnostic::is_error);
    let generation = if has_errors {
        None
    } else {
        match TemplateSet::build(sources) {
            Ok(templates) => Some(assemble(
                number,
                integrations,
                contracts,
                templates,
                databases,
                &diagnostics,
            )),
            Err(error) => {
                // Analysis accepted every template, so this is a bug; report
                // it as a diagnostic rather than panic in a running server.
                diagnostics.push(Diagnostic::error(
                    &dir.root,
                    Position::START,
                    Code::InvalidTemplate,
                    format!("internal error building templates: {error}"),
                ));
                None
            }
        }
    };
    Compilation {
        generation,
        diagnostics,
        files: dir.integrations.len(),
    }
}

fn assemble(
    number: u64,
    mut integrations: Vec<Integration>,
    contracts: Contracts,
    templates: TemplateSet,
    databases: Databases,
    diagnostics: &[Diagnostic],
) -> Generation {
    integrations.sort_by(|a, b| a.id.cmp(&b.id));
    let mut by_event: HashMap<(String, String), Vec<(usize, usize)>> = HashMap::new();
    for (i, integration) in integrations.iter().enumerate() {
        for (r, route) in integration.routes.iter().enumerate() {
            by_event
                .entry((integration.source.clone(), route.on.clone()))
                .or_default()
                .push((i, r));
        }
    }
    Generation {
        number,
        integrations,
        contracts,
        templates,
        databases,
        warnings: diagnostics.to_vec(),
        by_event,
    }
}
