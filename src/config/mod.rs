//! Configuration as written: finding the files, reading YAML with positions,
//! validating against the JSON Schema, and the typed model.
//!
//! This module owns the only file-system reads of configuration
//! ([`read_integrations`], [`read_contracts`]); everything downstream works
//! on [`SourceFile`]s, so `check`, `render`, `test` and the reloader all
//! compile exactly the same way.

pub mod databases;
pub mod model;
pub mod schema;
pub mod yaml;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::diagnostics::{Code, Diagnostic, Position};
use model::IntegrationModel;
use yaml::{Document, SourceText};

/// A configuration file's path and text, read once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

/// Whether a directory entry is an integration file: `*.yaml` or `*.yml`,
/// not hidden (editor swap files, Kubernetes' `..data`), not a config
/// test (`*.test.yaml`) and not `databases.yaml`.
pub fn is_integration_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if databases::is_databases_file(path) {
        return false;
    }
    if name.starts_with('.') || name.starts_with('#') || name.ends_with('~') {
        return false;
    }
    let is_yaml = name.ends_with(".yaml") || name.ends_with(".yml");
    let is_test = name.ends_with(".test.yaml") || name.ends_with(".test.yml");
    is_yaml && !is_test
}

/// Reads every integration file under `dir` (recursively, skipping hidden
/// directories), sorted by path. A file that cannot be read becomes an `io`
/// diagnostic; a directory that cannot be read is an error.
pub fn read_integrations(dir: &Path) -> io::Result<(Vec<SourceFile>, Vec<Diagnostic>)> {
    let mut paths = Vec::new();
    collect(dir, &mut paths, &|path| is_integration_file(path))?;
    Ok(read_all(paths))
}

/// Reads every event contract under `dir` (`<product>/<event>.json`). A
/// missing directory holds no contracts.
pub fn read_contracts(dir: &Path) -> io::Result<(Vec<SourceFile>, Vec<Diagnostic>)> {
    if !dir.exists() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut paths = Vec::new();
    collect(dir, &mut paths, &|path| {
        path.extension().is_some_and(|e| e == "json")
            && !path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
    })?;
    Ok(read_all(paths))
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>, keep: &dyn Fn(&Path) -> bool) -> io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        // `metadata` follows symlinks, as Kubernetes ConfigMap mounts need.
        let Ok(metadata) = std::fs::metadata(&path) else {
            continue;
        };
        if metadata.is_dir() {
            if !hidden {
                collect(&path, out, keep)?;
            }
        } else if keep(&path) {
            out.push(path);
        }
    }
    Ok(())
}

fn read_all(paths: Vec<PathBuf>) -> (Vec<SourceFile>, Vec<Diagnostic>) {
    let mut files = Vec::new();
    let mut diagnostics = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => files.push(SourceFile { path, text }),
            Err(error) => diagnostics.push(Diagnostic::error(
                &path,
                Position::START,
                Code::Io,
                format!("cannot read this file: {error}"),
            )),
        }
    }
    (files, diagnostics)
}

/// Everything a compile needs from disk: the integration files, the
/// contract files and where they were found.
#[derive(Debug, Clone, Default)]
pub struct ConfigDir {
    /// The integrations directory, as given.
    pub root: PathBuf,
    pub integrations: Vec<SourceFile>,
    /// The directory contracts were read from (`<product>/<event>.json`).
    pub contracts_root: PathBuf,
    pub contracts: Vec<SourceFile>,
    /// `databases.yaml` at the top of the directory, when there is one.
    pub databases: Option<SourceFile>,
    /// Files that could not be read.
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigDir {
    /// Every file's text by path, for printing diagnostics with their
    /// source lines.
    pub fn sources(&self) -> HashMap<PathBuf, SourceText> {
        self.integrations
            .iter()
            .chain(&self.contracts)
            .chain(&self.databases)
            .map(|file| (file.path.clone(), SourceText::new(&file.text)))
            .collect()
    }
}

/// Where contracts live by default: `schemas/events` beside the
/// integrations directory (`integrations.d/../schemas/events`).
pub fn default_contracts_dir(dir: &Path) -> PathBuf {
    match dir.parent() {
        Some(parent) => parent.join("schemas").join("events"),
        None => dir.join("..").join("schemas").join("events"),
    }
}

/// Reads an integrations directory and its contracts. Fails only when the
/// directory itself cannot be read (`check` exits 2 then).
pub fn read_directory(dir: &Path, contracts_dir: Option<&Path>) -> io::Result<ConfigDir> {
    let metadata = std::fs::metadata(dir)?;
    if !metadata.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} is not a directory", dir.display()),
        ));
    }
    let (integrations, mut diagnostics) = read_integrations(dir)?;
    let (databases, database_diagnostics) = read_databases(dir);
    diagnostics.extend(database_diagnostics);
    let contracts_root = contracts_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| default_contracts_dir(dir));
    let (contracts, contract_diagnostics) = read_contracts(&contracts_root)?;
    diagnostics.extend(contract_diagnostics);
    Ok(ConfigDir {
        root: dir.to_path_buf(),
        integrations,
        contracts_root,
        contracts,
        databases,
        diagnostics,
    })
}

/// Reads `databases.yaml` (or `.yml`) at the top of `dir`, if there is one.
/// Both at once is an error: which one holds is not obvious.
pub fn read_databases(dir: &Path) -> (Option<SourceFile>, Vec<Diagnostic>) {
    let paths: Vec<PathBuf> = databases::FILE_NAMES
        .iter()
        .map(|name| dir.join(name))
        .filter(|path| path.is_file())
        .collect();
    let (mut files, mut diagnostics) = read_all(paths);
    if files.len() > 1 {
        diagnostics.push(Diagnostic::error(
            &files[1].path,
            Position::START,
            Code::DuplicateId,
            "both databases.yaml and databases.yml are here: keep one",
        ));
    }
    (
        if files.is_empty() {
            None
        } else {
            Some(files.remove(0))
        },
        diagnostics,
    )
}

/// A file that parsed, with the model that could be read from it.
#[derive(Debug, Clone)]
pub struct LoadedFile {
    pub path: PathBuf,
    pub document: Document,
    pub model: IntegrationModel,
}

/// Parses and validates one file. Returns the loaded file whenever a model
/// can be read from it, even with schema errors, so that compiling can
/// report the rest of its problems too; the errors keep it out of any
/// generation.
pub fn load(file: &SourceFile) -> (Option<LoadedFile>, Vec<Diagnostic>) {
    let (document, mut diagnostics) = yaml::parse(&file.path, &file.text);
    let Some(document) = document else {
        return (None, diagnostics);
    };
    diagnostics.extend(schema::validate(&file.path, &document));
    let Some(model) = IntegrationModel::lenient(&document.value) else {
        return (None, diagnostics);
    };
    (
        Some(LoadedFile {
            path: file.path.clone(),
            document,
            model,
        }),
        diagnostics,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_visible_yaml_files_that_are_not_tests_are_integrations() {
        for name in ["a.yaml", "a.yml", "sub/b.yaml"] {
            assert!(is_integration_file(Path::new(name)), "{name}");
        }
        for name in [
            ".a.yaml",
            ".a.yaml.swp",
            "a.yaml~",
            "#a.yaml#",
            "a.yaml.bak",
            "a.test.yaml",
            "a.json",
            "..data",
            "databases.yaml",
            "sub/databases.yml",
        ] {
            assert!(!is_integration_file(Path::new(name)), "{name}");
        }
    }
}
