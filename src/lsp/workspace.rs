//! The files the server sees: what is on disk, with the editor's open
//! buffers laid over it, read into the same [`ConfigDir`] that `check`
//! compiles.
//!
//! The server never parses anything itself: [`diagnose`] reads the
//! directory (`config::read_directory`), replaces the text of every file
//! the editor has open with the buffer's (saved or not), adds open files
//! not yet on disk, and calls [`compile::compile`], then
//! [`check::database::check`] against the catalog: the one read live from
//! the database (`--database-url`, [`super::live`]) when there is one, else
//! the catalog file when there is one. So the diagnostics are `check`'s,
//! byte for byte.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lsp_types::Uri;

use crate::check::catalog::{self, CatalogFile};
use crate::check::database::{self, Tables};
use crate::compile::{self, contract::Contracts};
use crate::config::{self, ConfigDir, LoadedFile, SourceFile};
use crate::diagnostics::{self, Diagnostic};

/// A buffer the editor has open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenDocument {
    pub text: String,
    /// The editor's version of the buffer, echoed in published diagnostics.
    pub version: i32,
}

/// The open buffers, by path.
pub type Documents = BTreeMap<PathBuf, Arc<OpenDocument>>;

/// What the editor configured (`initializationOptions`), all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// Where event contracts live [default: `DIR/../schemas/events`].
    pub contracts: Option<PathBuf>,
    /// A catalog file (`busbar catalog`) [default: `catalog.json` in the
    /// integrations directory or the one above it].
    pub catalog: Option<PathBuf>,
    /// The integrations directory [default: the nearest enclosing
    /// `integrations.d`; files elsewhere are not served].
    pub directory: Option<PathBuf>,
}

impl Settings {
    /// The contracts directory for the integrations directory `dir`.
    pub fn contracts_dir(&self, dir: &Path) -> PathBuf {
        self.contracts
            .clone()
            .unwrap_or_else(|| config::default_contracts_dir(dir))
    }

    /// The catalog file for `dir`, if there is one.
    pub fn catalog_file(&self, dir: &Path) -> Option<PathBuf> {
        self.catalog.clone().or_else(|| catalog::find_file(dir))
    }
}

/// The catalogs read live from the database (`busbar lsp --database-url`),
/// by integrations directory; empty without a database or before a read
/// succeeded.
pub type LiveCatalogs = BTreeMap<PathBuf, Arc<Tables>>;

/// The tables the column checks, completion and hover use for `dir`: the
/// live catalog if one was read, else the catalog file's if there is one
/// (or why it could not be read).
pub fn catalog_of(
    dir: &Path,
    settings: &Settings,
    live: &LiveCatalogs,
) -> Result<Option<Arc<Tables>>, String> {
    if let Some(tables) = live.get(dir) {
        return Ok(Some(Arc::clone(tables)));
    }
    let Some(file) = settings.catalog_file(dir) else {
        return Ok(None);
    };
    match CatalogFile::read(&file) {
        Ok(catalog) => Ok(Some(Arc::new(catalog.to_tables()))),
        Err(error) => Err(error.to_string()),
    }
}

/// The integrations directory an integration file belongs to: the
/// configured one if the file is under it, else the nearest enclosing
/// `integrations.d`. `None` for any other file: editors that start the
/// server for every YAML file (Helix) get nothing from it elsewhere.
pub fn directory_of(path: &Path, settings: &Settings) -> Option<PathBuf> {
    if !config::is_integration_file(path) {
        return None;
    }
    if let Some(dir) = &settings.directory
        && path.starts_with(dir)
    {
        return Some(dir.clone());
    }
    path.ancestors()
        .skip(1)
        .find(|dir| dir.file_name().is_some_and(|name| name == "integrations.d"))
        .map(Path::to_path_buf)
}

/// Reads `dir` as `check` does, with the open buffers in place of the
/// files on disk (and open integration files not yet saved added).
pub fn read_config(
    dir: &Path,
    settings: &Settings,
    documents: &Documents,
) -> io::Result<ConfigDir> {
    let contracts_root = settings.contracts_dir(dir);
    let mut config = config::read_directory(dir, Some(&contracts_root))?;
    overlay(&mut config.integrations, documents, |path| {
        path.starts_with(dir) && config::is_integration_file(path)
    });
    overlay(&mut config.contracts, documents, |path| {
        path.starts_with(&contracts_root) && path.extension().is_some_and(|e| e == "json")
    });
    for name in config::databases::FILE_NAMES {
        let path = dir.join(name);
        if let Some((path, document)) = documents.iter().find(|(p, _)| **p == path) {
            config.databases = Some(SourceFile {
                path: path.clone(),
                text: document.text.clone(),
            });
        }
    }
    Ok(config)
}

/// Lays the open buffers that `belongs` accepts over `files`, keeping them
/// sorted by path as the reader does.
fn overlay(files: &mut Vec<SourceFile>, documents: &Documents, belongs: impl Fn(&Path) -> bool) {
    let mut changed = false;
    for (path, document) in documents {
        if !belongs(path) {
            continue;
        }
        match files.iter_mut().find(|file| &file.path == path) {
            Some(file) => file.text.clone_from(&document.text),
            None => {
                files.push(SourceFile {
                    path: path.clone(),
                    text: document.text.clone(),
                });
                changed = true;
            }
        }
    }
    if changed {
        files.sort_by(|a, b| a.path.cmp(&b.path));
    }
}

/// What a directory's compile found, with the texts the positions refer to.
#[derive(Debug)]
pub struct Diagnosis {
    pub config: ConfigDir,
    /// `check`'s diagnostics (with the catalog's, when a catalog file is
    /// found and the files compile), sorted.
    pub diagnostics: Vec<Diagnostic>,
    /// Why the catalog could not be used, if it could not.
    pub catalog_problem: Option<String>,
}

impl Diagnosis {
    /// The text of `path` as compiled, if it was.
    pub fn text_of(&self, path: &Path) -> Option<&str> {
        self.config
            .integrations
            .iter()
            .chain(&self.config.contracts)
            .find(|file| file.path == path)
            .map(|file| file.text.as_str())
    }
}

/// Parsed contracts, kept while their files' texts stay the same: parsing
/// hundreds of contracts (each a compiled JSON Schema validator) would
/// otherwise dominate a compile after every keystroke.
#[derive(Debug, Default)]
pub struct ContractCache {
    by_root: BTreeMap<PathBuf, (Vec<SourceFile>, Contracts, Vec<Diagnostic>)>,
}

impl ContractCache {
    /// The contracts of `config`, parsed again only when a contract's text
    /// (or the set of contract files) changed since the last call.
    pub fn get(&mut self, config: &ConfigDir) -> (Contracts, Vec<Diagnostic>) {
        if let Some((files, contracts, diagnostics)) = self.by_root.get(&config.contracts_root)
            && *files == config.contracts
        {
            return (contracts.clone(), diagnostics.clone());
        }
        let (contracts, diagnostics) = Contracts::parse(&config.contracts_root, &config.contracts);
        self.by_root.insert(
            config.contracts_root.clone(),
            (
                config.contracts.clone(),
                contracts.clone(),
                diagnostics.clone(),
            ),
        );
        (contracts, diagnostics)
    }
}

/// Loaded integration files, kept while their text stays the same: after
/// a keystroke only the edited file is parsed and validated again.
#[derive(Debug, Default)]
pub struct LoadCache {
    by_path: HashMap<PathBuf, (String, Option<LoadedFile>, Vec<Diagnostic>)>,
}

impl LoadCache {
    /// What [`config::load`] gives for `file`, from the cache when the
    /// file's text is the one loaded last time.
    pub fn load(&mut self, file: &SourceFile) -> (Option<LoadedFile>, Vec<Diagnostic>) {
        if let Some((text, loaded, diagnostics)) = self.by_path.get(&file.path)
            && *text == file.text
        {
            return (loaded.clone(), diagnostics.clone());
        }
        let (loaded, diagnostics) = config::load(file);
        self.by_path.insert(
            file.path.clone(),
            (file.text.clone(), loaded.clone(), diagnostics.clone()),
        );
        (loaded, diagnostics)
    }

    /// Forgets the files of `dir` that `config` no longer has.
    fn keep_only(&mut self, dir: &Path, config: &ConfigDir) {
        self.by_path.retain(|path, _| {
            !path.starts_with(dir) || config.integrations.iter().any(|f| &f.path == path)
        });
    }
}

/// What a diagnostics thread keeps between compiles.
#[derive(Debug, Default)]
pub struct Caches {
    pub contracts: ContractCache,
    pub loads: LoadCache,
}

/// Compiles `dir` as `check` would, with the open buffers (and what
/// `caches` hold for the files and contracts that have not changed), and
/// checks it against its catalog ([`catalog_of`]).
pub fn diagnose(
    dir: &Path,
    settings: &Settings,
    documents: &Documents,
    live: &LiveCatalogs,
    caches: &mut Caches,
) -> io::Result<Diagnosis> {
    let config = read_config(dir, settings, documents)?;
    caches.loads.keep_only(dir, &config);
    let contracts = caches.contracts.get(&config);
    let loads = &mut caches.loads;
    let compilation = compile::compile_with(&config, contracts, &mut |file| loads.load(file), 0);
    let mut diagnostics = compilation.diagnostics;
    let mut catalog_problem = None;
    if let Some(generation) = &compilation.generation {
        match catalog_of(dir, settings, live) {
            Ok(Some(tables)) => {
                diagnostics.extend(database::check(generation, &tables));
                diagnostics::sort(&mut diagnostics);
            }
            Ok(None) => {}
            Err(problem) => catalog_problem = Some(problem),
        }
    }
    Ok(Diagnosis {
        config,
        diagnostics,
        catalog_problem,
    })
}

/// What completion, hover and definition know about a directory: its
/// contracts and its catalog.
#[derive(Debug, Default)]
pub struct Knowledge {
    pub contracts_root: PathBuf,
    pub contracts: Contracts,
    /// The catalog's tables ([`catalog_of`]), empty without one.
    pub tables: Arc<Tables>,
    /// The directory's integration files (with the open buffers).
    pub integrations: Vec<SourceFile>,
}

/// Reads what the editing features need about `dir` (its contracts from
/// `cache` when they have not changed).
pub fn knowledge(
    dir: &Path,
    settings: &Settings,
    documents: &Documents,
    live: &LiveCatalogs,
    cache: &mut ContractCache,
) -> Knowledge {
    let Ok(config) = read_config(dir, settings, documents) else {
        return Knowledge::default();
    };
    let (contracts, _) = cache.get(&config);
    let tables = catalog_of(dir, settings, live)
        .ok()
        .flatten()
        .unwrap_or_default();
    Knowledge {
        contracts_root: config.contracts_root,
        contracts,
        tables,
        integrations: config.integrations,
    }
}

/// The `file://` URI of a path.
pub fn uri_of(path: &Path) -> Uri {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    let mut uri = String::from("file://");
    for byte in absolute.to_string_lossy().bytes() {
        if byte.is_ascii_alphanumeric() || b"/-._~".contains(&byte) {
            uri.push(byte as char);
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    uri.parse().expect("a percent-encoded file URI parses")
}

/// The path of a `file://` URI.
pub fn path_of(uri: &Uri) -> Option<PathBuf> {
    let rest = uri.as_str().strip_prefix("file://")?;
    // `file://host/path` is not a local file; `file:///path` is.
    let path = rest.get(rest.find('/')?..)?;
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = path.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            decoded.push(byte);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    Some(PathBuf::from(String::from_utf8(decoded).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_uris_round_trip_paths_with_spaces_and_accents() {
        let path = Path::new("/tmp/my dir/intégrations.d/a#b.yaml");
        let uri = uri_of(path);
        assert_eq!(
            uri.as_str(),
            "file:///tmp/my%20dir/int%C3%A9grations.d/a%23b.yaml"
        );
        assert_eq!(path_of(&uri).as_deref(), Some(path));
    }

    #[test]
    fn a_file_belongs_to_its_enclosing_integrations_directory() {
        let settings = Settings::default();
        assert_eq!(
            directory_of(Path::new("/p/integrations.d/hr/a.yaml"), &settings).as_deref(),
            Some(Path::new("/p/integrations.d"))
        );
        assert_eq!(directory_of(Path::new("/p/other/a.yaml"), &settings), None);
        assert_eq!(
            directory_of(Path::new("/p/integrations.d/a.test.yaml"), &settings),
            None
        );
        let configured = Settings {
            directory: Some(PathBuf::from("/p/flows")),
            ..Settings::default()
        };
        assert_eq!(
            directory_of(Path::new("/p/flows/a.yml"), &configured).as_deref(),
            Some(Path::new("/p/flows"))
        );
    }

    #[test]
    fn diagnoses_with_caches_equal_fresh_compiles_after_edits() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let project = tempfile::tempdir().unwrap();
        let integrations = project.path().join("integrations.d");
        std::fs::create_dir(&integrations).unwrap();
        let contracts = project
            .path()
            .join("schemas")
            .join("events")
            .join("recruitiq");
        std::fs::create_dir_all(&contracts).unwrap();
        let contract = "candidate.hired.json";
        std::fs::copy(
            root.join("schemas/events/recruitiq").join(contract),
            contracts.join(contract),
        )
        .unwrap();
        let file = integrations.join("recruitiq-to-nexus.yaml");
        let text =
            std::fs::read_to_string(root.join("integrations.d/recruitiq-to-nexus.yaml")).unwrap();
        let mut caches = Caches::default();
        let edits = [
            text.clone(),
            text.replace("candidate.firstName", "candidate.firstname"),
            text.replace("target: nexus", "taget: nexus"),
            text.clone(),
        ];
        for (n, edit) in edits.iter().enumerate() {
            std::fs::write(&file, edit).unwrap();
            if n == 3 {
                // A contract changes too: the cache must see it.
                std::fs::write(contracts.join(contract), "{ not json").unwrap();
            }
            let cached = diagnose(
                &integrations,
                &Settings::default(),
                &Documents::new(),
                &LiveCatalogs::new(),
                &mut caches,
            )
            .unwrap()
            .diagnostics;
            let config = config::read_directory(&integrations, None).unwrap();
            assert_eq!(cached, compile::compile(&config, 0).diagnostics, "edit {n}");
        }
    }

    #[test]
    fn open_buffers_replace_and_extend_the_files_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let integrations = dir.path().join("integrations.d");
        std::fs::create_dir(&integrations).unwrap();
        std::fs::write(integrations.join("a.yaml"), "on disk").unwrap();
        let mut documents = Documents::new();
        for (name, text) in [("a.yaml", "edited"), ("b.yaml", "new"), ("c.txt", "no")] {
            documents.insert(
                integrations.join(name),
                Arc::new(OpenDocument {
                    text: text.into(),
                    version: 1,
                }),
            );
        }
        let config = read_config(&integrations, &Settings::default(), &documents).unwrap();
        let texts: Vec<&str> = config
            .integrations
            .iter()
            .map(|f| f.text.as_str())
            .collect();
        assert_eq!(texts, ["edited", "new"]);
    }
}
