//! The loader and compiler never panic, whatever a file holds.
//!
//! `check` runs in CI on whatever a colleague pushed and the reloader runs
//! in the server on whatever an editor saved half-way; a panic in either is
//! a bug. These tests compile, in memory and against the real contracts:
//! every prefix of each shipped integration (a file being typed or saved
//! half-way), thousands of random mutations of them (a deterministic
//! xorshift PRNG, so a failure reproduces), and random garbage. Each compile
//! runs under `catch_unwind`; the inputs that panic are reported, and every
//! diagnostic must have a real position.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use busbar::compile;
use busbar::config::{self, ConfigDir, SourceFile};

/// Random mutations per shipped file.
const MUTATIONS_PER_FILE: usize = 600;
/// Random garbage files.
const GARBAGE_FILES: usize = 1_000;
/// A fixed seed, so that a failure reproduces.
const SEED: u64 = 0x5eed_b05b_a12b_u64;

/// Characters mutations and garbage are made of: YAML's punctuation,
/// templates, paths, whitespace and some text beyond ASCII.
const ALPHABET: &[&str] = &[
    ":",
    "-",
    "[",
    "]",
    "{",
    "}",
    "|",
    ">",
    "&",
    "*",
    "!",
    "%",
    "@",
    "#",
    "'",
    "\"",
    "?",
    ",",
    "$",
    ".",
    "\\",
    "{{",
    "}}",
    "{%",
    "%}",
    "$.",
    "$.data.",
    "{{ data.",
    "&a ",
    "*a",
    "!!str ",
    "---\n",
    "...\n",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "a",
    "z",
    "_",
    "0",
    "9",
    "é",
    "⟨",
    "😀",
    "\u{0}",
    "\u{feff}",
    "steps:",
    "- upsert: ",
    "key: [",
    "values:",
    "as: ",
    "when: ",
    "on: ",
    "emit: ",
    "routes:\n",
    "true",
    "null",
    "~",
    "1e9",
    "-1",
    "0x1F",
    "<<: ",
    "? ",
];

/// A small deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn piece(&mut self) -> &'static str {
        ALPHABET[self.below(ALPHABET.len())]
    }
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The real contracts, read once.
fn contracts() -> &'static (PathBuf, Vec<SourceFile>) {
    static CONTRACTS: OnceLock<(PathBuf, Vec<SourceFile>)> = OnceLock::new();
    CONTRACTS.get_or_init(|| {
        let root = manifest_dir().join("schemas").join("events");
        let (files, diagnostics) = config::read_contracts(&root).expect("read contracts");
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        (root, files)
    })
}

fn shipped() -> Vec<SourceFile> {
    let (files, diagnostics) = config::read_integrations(&manifest_dir().join("integrations.d"))
        .expect("read integrations.d");
    assert!(
        diagnostics.is_empty() && !files.is_empty(),
        "{diagnostics:?}"
    );
    files
}

/// Compiles one file in memory. Returns a description of what went wrong:
/// a panic, or a diagnostic without a real position.
fn compile_one(text: &str) -> Result<(), String> {
    let (contracts_root, contracts) = contracts();
    let path = PathBuf::from("integrations.d/fuzz.yaml");
    let dir = ConfigDir {
        root: PathBuf::from("integrations.d"),
        integrations: vec![SourceFile {
            path: path.clone(),
            text: text.to_owned(),
        }],
        contracts_root: contracts_root.clone(),
        contracts: contracts.clone(),
        databases: None,
        diagnostics: vec![],
    };
    let compilation =
        catch_unwind(AssertUnwindSafe(|| compile::compile(&dir, 0))).map_err(|panic| {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            format!("panicked: {message}")
        })?;
    let lines = text.split('\n').count();
    for d in &compilation.diagnostics {
        let p = d.position;
        if p.line < 1 || p.column < 1 || (d.file == path && p.line > lines) {
            return Err(format!("diagnostic outside the file ({lines} lines): {d}"));
        }
        if d.message.contains(['\n', '\r']) {
            return Err(format!("a message on several lines: {d}"));
        }
    }
    Ok(())
}

/// Compiles every input on all cores; fails listing the inputs that broke
/// (at most a few, each shown in full as a Rust string literal).
fn compile_all(what: &str, inputs: Vec<String>) {
    let started = Instant::now();
    let count = inputs.len();
    let failures = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
    let chunk = count.div_ceil(threads).max(1);
    // The default hook would print every caught panic; they are reported
    // below with their input instead.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    std::thread::scope(|scope| {
        for inputs in inputs.chunks(chunk) {
            let failures = &failures;
            scope.spawn(move || {
                for input in inputs {
                    if let Err(problem) = compile_one(input) {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{problem}\n  input: {input:?}"));
                    }
                }
            });
        }
    });
    std::panic::set_hook(hook);
    let failures = failures.into_inner().unwrap();
    eprintln!(
        "{what}: {count} inputs compiled in {:.1?}",
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{what}: {} of {count} inputs broke the compiler; the first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn every_prefix_of_a_shipped_integration_compiles_without_panic() {
    let mut inputs = Vec::new();
    for file in shipped() {
        let text = &file.text;
        inputs.extend(
            text.char_indices()
                .map(|(at, _)| at)
                .chain([text.len()])
                .map(|at| text[..at].to_owned()),
        );
    }
    compile_all("prefixes", inputs);
}

#[test]
fn random_mutations_of_shipped_integrations_compile_without_panic() {
    let mut rng = Rng(SEED);
    let mut inputs = Vec::new();
    for file in shipped() {
        for _ in 0..MUTATIONS_PER_FILE {
            let mut chars: Vec<String> = file.text.chars().map(String::from).collect();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(chars.len() + 1);
                match rng.below(4) {
                    0 => chars.insert(at, rng.piece().to_owned()),
                    1 if at < chars.len() => {
                        chars.remove(at);
                    }
                    2 if at < chars.len() => chars[at] = rng.piece().to_owned(),
                    // Duplicate a line elsewhere: keys, steps and routes twice.
                    _ => {
                        let lines: Vec<&str> = file.text.lines().collect();
                        let line = lines[rng.below(lines.len())];
                        chars.insert(at, format!("{line}\n"));
                    }
                }
            }
            inputs.push(chars.concat());
        }
    }
    compile_all("mutations", inputs);
}

#[test]
fn random_garbage_compiles_without_panic() {
    let mut rng = Rng(SEED ^ 0xdead_beef);
    let inputs = (0..GARBAGE_FILES)
        .map(|_| {
            let len = rng.below(200);
            (0..len).map(|_| rng.piece()).collect::<String>()
        })
        .collect();
    compile_all("garbage", inputs);
}

/// Pieces of expressions, for templates that get past the YAML parser.
const EXPRESSION: &[&str] = &[
    "data",
    "event",
    "employee",
    "x",
    ".",
    "candidate",
    "email",
    "id",
    "occurred_at",
    " | ",
    "lower",
    "date",
    "nope",
    "(",
    ")",
    "[",
    "]",
    "0",
    "1",
    " + ",
    " ~ ",
    " is ",
    "defined",
    " not ",
    " and ",
    "'é'",
    "'⟨😀⟩'",
    ",",
    "{{",
    "}}",
    "{%",
    "%}",
    " if ",
    "endif",
    "\n",
    "😀",
    "-",
    "\"",
];

/// Pieces of JSONPaths.
const PATH: &[&str] = &[
    ".data",
    ".candidate",
    ".email",
    ".organization_id",
    ".x",
    "[0]",
    "[-1]",
    "[*]",
    "..",
    "['x']",
    "[?@.a]",
    "[1:2]",
    ".é",
    "😀",
    "[",
    "]",
    "'",
    "$",
    " ",
    ".",
];

/// Column, table and `as` names, good and bad.
const NAMES: &[&str] = &[
    "employee",
    "data",
    "event",
    "organization_id",
    "email",
    "x",
    "Email",
    "a-b",
    "hris.employees",
    "a.b.c",
    "é",
    "1a",
    "\"\"",
];

fn pick<'a>(rng: &mut Rng, pieces: &[&'a str]) -> &'a str {
    pieces[rng.below(pieces.len())]
}

/// A double-quoted YAML string of random pieces.
fn quoted(rng: &mut Rng, prefix: &str, pieces: &[&str], suffix: &str) -> String {
    let body: String = (0..rng.below(8)).map(|_| pick(rng, pieces)).collect();
    format!("\"{prefix}{body}{suffix}\"")
}

fn value(rng: &mut Rng) -> String {
    match rng.below(5) {
        0 => quoted(rng, "{{ ", EXPRESSION, " }}"),
        1 => quoted(rng, "a {{ ", EXPRESSION, " }} b {% if x %}{% endif %}"),
        2 => quoted(rng, "$", PATH, ""),
        3 => format!("{{ path: {}, default: 1 }}", quoted(rng, "$", PATH, "")),
        _ => pick(rng, NAMES).to_owned(),
    }
}

/// A well-formed YAML integration with random names, paths and templates,
/// so that the compiler's later stages see random input too.
fn random_integration(rng: &mut Rng) -> String {
    let mut text = String::from("source: recruitiq\ntarget: nexus\nroutes:\n");
    for _ in 0..1 + rng.below(2) {
        text.push_str(&format!(
            "  - on: {}\n",
            pick(rng, &["candidate.hired", "x.y", "employee.created"])
        ));
        if rng.below(3) == 0 {
            text.push_str(&format!("    when: {}\n", value(rng)));
        }
        text.push_str("    steps:\n");
        for _ in 0..1 + rng.below(4) {
            let kind = pick(rng, &["find", "upsert", "update", "delete", "emit", "emit"]);
            let target = if kind == "emit" {
                pick(rng, &["employee.created", "x.y", "candidate.hired"])
            } else {
                pick(rng, NAMES)
            };
            text.push_str(&format!("      - {kind}: {target}\n"));
            let columns = match kind {
                "upsert" => "values",
                "emit" => "data",
                _ => "where",
            };
            text.push_str(&format!("        {columns}:\n"));
            for _ in 0..1 + rng.below(4) {
                text.push_str(&format!("          {}: {}\n", pick(rng, NAMES), value(rng)));
            }
            if kind == "upsert" {
                text.push_str(&format!("        key: [{}]\n", pick(rng, NAMES)));
            }
            if kind == "update" {
                text.push_str(&format!(
                    "        set: {{ {}: {} }}\n",
                    pick(rng, NAMES),
                    value(rng)
                ));
            }
            if kind != "emit" && kind != "delete" && rng.below(2) == 0 {
                text.push_str(&format!("        as: {}\n", pick(rng, NAMES)));
            }
            if rng.below(4) == 0 {
                text.push_str(&format!("        when: {}\n", value(rng)));
            }
        }
    }
    text
}

#[test]
fn random_well_formed_integrations_compile_without_panic() {
    let mut rng = Rng(SEED ^ 0x1234_5678);
    let inputs = (0..GARBAGE_FILES)
        .map(|_| random_integration(&mut rng))
        .collect();
    compile_all("well-formed", inputs);
}
