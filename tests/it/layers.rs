//! The modules' layering, kept: a module of `src/` names (`crate::<module>`)
//! only the modules below it in [`LAYERS`], the one list of the order,
//! mirrored in ARCHITECTURE.md ("Layers").

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// busbar's top-level modules, lowest first: each may use only those
/// before it. Leaves first, then the data flow of ARCHITECTURE.md.
const LAYERS: &[&str] = &[
    // Leaves: shared types and numbers, named by everything above.
    "diagnostics",
    "failpoint",
    "decimal",
    "delivery",
    "telemetry",
    "jsonpath",
    "value",
    "envelope",
    // The language: configuration as written, compiled, evaluated.
    "config",
    "compile",
    "mapping",
    "render",
    "report",
    // The databases, and what runs on them.
    "store",
    "check",
    "engine",
    "testing",
    "reload",
    // The edges: the editors' language server, HTTP, and the server's composition.
    "lsp",
    "api",
    "console",
    "dev",
    "serve",
    // The command line: every command, over all of the above.
    "cli",
];

/// Uses against the order that are known and not yet removed, each with
/// where its type belongs. The test fails when one disappears, so the
/// list only shrinks.
const KNOWN_BACK_EDGES: &[(&str, &str, &str)] = &[];

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The modules `lib.rs` declares (`pub mod x;`).
fn declared_modules() -> BTreeSet<String> {
    let lib = std::fs::read_to_string(source_dir().join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line
                .strip_prefix("pub mod ")
                .or_else(|| line.strip_prefix("mod "))?;
            Some(rest.strip_suffix(';')?.trim().to_owned())
        })
        .collect()
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None`: the crate
/// root, `lib.rs` or `main.rs`).
fn module_of(file: &Path) -> Option<String> {
    let relative = file.strip_prefix(source_dir()).unwrap();
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first.strip_suffix(".rs") {
        Some("lib" | "main") => None,
        Some(stem) => Some(stem.to_owned()),
        None => Some(first.to_owned()),
    }
}

/// The names that follow `crate::` in a line of code: `crate::a::b` gives
/// `a`, `crate::{a, b::c}` gives `a` and `b`.
fn crate_paths(line: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        let preceded_by_ident = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        rest = &rest[at + "crate::".len()..];
        if preceded_by_ident {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            found.extend(inner.split(',').map(|p| ident(p.trim())));
        } else {
            found.push(ident(rest));
        }
    }
    found.retain(|name| !name.is_empty());
    found
}

/// Every use of one top-level module by another: (user, used) → the
/// places (`file:line`).
fn uses() -> BTreeMap<(String, String), Vec<String>> {
    let modules = declared_modules();
    let mut files = Vec::new();
    rust_files(&source_dir(), &mut files);
    let mut found: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for file in files {
        let Some(user) = module_of(&file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for (number, line) in text.lines().enumerate() {
            // Comments (and doc links) are not dependencies.
            if line.trim_start().starts_with("//") {
                continue;
            }
            for used in crate_paths(line) {
                // Names that are not modules are exported macros
                // (`crate::on_tx!`), which belong to their module's layer.
                if used != user && modules.contains(&used) {
                    let place = format!(
                        "{}:{}",
                        file.strip_prefix(source_dir()).unwrap().display(),
                        number + 1
                    );
                    found.entry((user.clone(), used)).or_default().push(place);
                }
            }
        }
    }
    found
}

fn layer(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|m| *m == module)
        .unwrap_or_else(|| panic!("`{module}` is not in LAYERS"))
}

#[test]
fn every_module_has_one_place_in_the_layers() {
    let declared = declared_modules();
    let listed: BTreeSet<String> = LAYERS.iter().map(|m| m.to_string()).collect();
    assert_eq!(listed.len(), LAYERS.len(), "a module is listed twice");
    assert_eq!(
        declared, listed,
        "LAYERS (and ARCHITECTURE.md) must list exactly the modules lib.rs declares"
    );
}

#[test]
fn modules_use_only_the_modules_below_them() {
    let mut against = Vec::new();
    let mut known_seen = BTreeSet::new();
    for ((user, used), places) in uses() {
        if layer(&used) < layer(&user) {
            continue;
        }
        if KNOWN_BACK_EDGES
            .iter()
            .any(|(from, to, _)| *from == user && *to == used)
        {
            known_seen.insert((user, used));
            continue;
        }
        against.push(format!(
            "{user} uses {used} (above it): {}",
            places.join(", ")
        ));
    }
    assert!(
        against.is_empty(),
        "uses against the layer order (tests/it/layers.rs LAYERS; move the shared \
         type down instead):\n{}",
        against.join("\n")
    );
    for (from, to, why) in KNOWN_BACK_EDGES {
        assert!(
            known_seen.contains(&(from.to_string(), to.to_string())),
            "{from} no longer uses {to} ({why}): remove it from KNOWN_BACK_EDGES"
        );
    }
}

#[test]
fn crate_paths_are_read_from_plain_and_grouped_uses() {
    assert_eq!(
        crate_paths("use crate::compile::ident::Ident;"),
        ["compile"]
    );
    assert_eq!(
        crate_paths("use crate::{envelope::Envelope, jsonpath};"),
        ["envelope", "jsonpath"]
    );
    assert_eq!(
        crate_paths("let x = crate::value::view(a); crate::telemetry::reload();"),
        ["value", "telemetry"]
    );
    assert!(crate_paths("use busbar::crate_name::x;").is_empty());
    assert!(crate_paths("use my_crate::store::x;").is_empty());
}
