//! Benchmarks for the integration language: mapping throughput and `check`
//! of a large directory. Results and how to read them: docs/BENCHMARKS.md.
//!
//! ```sh
//! cargo bench --bench compile_and_map                 # plain figures, then criterion
//! cargo bench --bench compile_and_map -- --plain      # plain figures only (~15 s)
//! cargo bench --bench compile_and_map -- mapping      # criterion filter (plain figures too)
//! cargo bench --bench compile_and_map -- --generate DIR [COUNT]
//! ```
//!
//! 1. Mapping: the shipped `recruitiq/candidate.hired` example event through
//!    the `upsert hris.employees` step of `recruitiq-to-nexus` (9 columns:
//!    JSONPaths, templates and a literal), one core.
//!    - `per_event`: build the [`EventInput`] from the [`Envelope`], then
//!      evaluate every column: the honest per-event cost;
//!    - `columns_only`: the columns with the input already built (what each
//!      further route of the same event costs);
//!    - `event_input`: building the input alone;
//!    - `render_route`: the whole route through [`busbar::render::render`]
//!      (find, two upserts, emit, simulated database, trace): an upper bound.
//!
//!    Reference: JSONata on Node.js, ~33,000 such mappings/s per core.
//!    Target: 10x, 330,000/s.
//! 2. Check: 1,000 generated integration files (benches/support/
//!    generate.rs), `read_directory` + `compile` in process, and the release
//!    binary `busbar check DIR` end to end. Target: under 1 s.
//!
//! Without `--bench` on the command line (`cargo test --all-targets`), every
//! measurement runs once, as a smoke test.

mod support {
    pub mod generate;
}

use std::hint::black_box;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use busbar::compile::ident::Ident;
use busbar::compile::{self, Generation, StepKind, ValueExpr};
use busbar::config;
use busbar::envelope::Envelope;
use busbar::mapping::{EventInput, Scope};
use criterion::{Criterion, SamplingMode, Throughput};
use serde_json::Value;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const BUSBAR: &str = env!("CARGO_BIN_EXE_busbar");
const INTEGRATION: &str = "recruitiq-to-nexus";
const TABLE: &str = "hris.employees";
/// Generated integration files for the `check` benchmark.
const FILES: usize = 1000;
const MAPPING_REFERENCE: f64 = 33_000.0;
const MAPPING_TARGET: f64 = 330_000.0;
const CHECK_TARGET: Duration = Duration::from_secs(1);

/// The shipped directory compiled, and the example event.
struct Fixture {
    generation: Generation,
    envelope: Envelope,
}

impl Fixture {
    fn load() -> Fixture {
        let root = Path::new(MANIFEST_DIR);
        let config = config::read_directory(&root.join("integrations.d"), None)
            .expect("read integrations.d");
        let compilation = compile::compile(&config, 1);
        assert_eq!(compilation.errors(), 0, "{:#?}", compilation.diagnostics);
        let generation = compilation
            .generation
            .expect("the shipped directory compiles");
        let text = std::fs::read_to_string(root.join("examples/events/candidate.hired.json"))
            .expect("example event");
        let json: Value = serde_json::from_str(&text).expect("example event is JSON");
        let envelope = Envelope::from_json(&json).expect("example event is a valid envelope");
        Fixture {
            generation,
            envelope,
        }
    }

    /// The `upsert hris.employees` step's columns.
    fn columns(&self) -> &[(Ident, ValueExpr)] {
        let integration = self
            .generation
            .integration(INTEGRATION)
            .expect("recruitiq-to-nexus");
        let route = integration
            .routes_for(&self.envelope.event)
            .next()
            .expect("a candidate.hired route");
        route
            .steps
            .iter()
            .find_map(|step| match &step.kind {
                StepKind::Upsert { table, values, .. } if table.to_string() == TABLE => {
                    Some(values.as_slice())
                }
                _ => None,
            })
            .expect("an upsert hris.employees step")
    }
}

/// One event: evaluate every column into `out` (cleared first).
fn map_columns(
    generation: &Generation,
    input: &EventInput,
    columns: &[(Ident, ValueExpr)],
    out: &mut Vec<Value>,
) {
    out.clear();
    let scope = Scope::new(&generation.templates, input);
    for (_, expr) in columns {
        out.push(scope.eval(expr).expect("the example event maps"));
    }
}

fn map_event(fixture: &Fixture, columns: &[(Ident, ValueExpr)], out: &mut Vec<Value>) {
    let input = EventInput::new(&fixture.envelope);
    map_columns(&fixture.generation, &input, columns, out);
}

fn render_route(fixture: &Fixture) -> usize {
    let report = busbar::render::render(&fixture.generation, &fixture.envelope, Some(INTEGRATION));
    report.routes.len()
}

/// Checks once that the mapping computes what the example promises, so the
/// benchmark measures a working mapping and not an error path.
fn assert_mapping(fixture: &Fixture) {
    let columns = fixture.columns();
    let mut out = Vec::new();
    map_event(fixture, columns, &mut out);
    let by_name: Vec<(&str, &Value)> = columns.iter().map(|(c, _)| c.as_str()).zip(&out).collect();
    let get = |name: &str| {
        by_name
            .iter()
            .find(|(c, _)| *c == name)
            .map(|(_, v)| (*v).clone())
    };
    assert_eq!(get("email"), Some(Value::from("ada.lovelace@example.com")));
    assert_eq!(get("hire_date"), Some(Value::from("2027-01-04")));
    assert_eq!(get("first_name"), Some(Value::from("Ada")));
    assert_eq!(get("status"), Some(Value::from("active")));
    let report = busbar::render::render(&fixture.generation, &fixture.envelope, Some(INTEGRATION));
    assert_eq!(report.routes.len(), 1);
    assert_eq!(
        report.routes[0].outcome, "applied",
        "{:?}",
        report.routes[0].reason
    );
}

/// Runs `f` in rounds of about `round` each and returns the operations per
/// second of every round (the loop overhead is a counter and a clock read
/// every `batch` calls).
fn rate(rounds: usize, round: Duration, mut f: impl FnMut()) -> Vec<f64> {
    // Calibrate a batch of about a millisecond.
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < Duration::from_millis(200) {
        f();
        calls += 1;
    }
    let batch = (calls / 200).max(1);
    (0..rounds)
        .map(|_| {
            let start = Instant::now();
            let mut done = 0u64;
            loop {
                for _ in 0..batch {
                    f();
                }
                done += batch;
                let elapsed = start.elapsed();
                if elapsed >= round {
                    return done as f64 / elapsed.as_secs_f64();
                }
            }
        })
        .collect()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn report_rate(name: &str, mut rates: Vec<f64>, what: &str) -> f64 {
    let (min, max) = (
        rates.iter().copied().fold(f64::INFINITY, f64::min),
        rates.iter().copied().fold(0.0, f64::max),
    );
    let median = median(&mut rates);
    println!(
        "  {name:<14} {:>11} {what}/s per core  ({:>6.2} µs each; {} rounds: {} .. {})",
        thousands(median),
        1e6 / median,
        rates.len(),
        thousands(min),
        thousands(max),
    );
    median
}

fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "NOT MET" }
}

/// Plain figures for readers who do not want to parse criterion's output.
fn plain_mapping(fixture: &Fixture, quick: bool) {
    let columns = fixture.columns();
    let (rounds, round) = if quick {
        (1, Duration::from_millis(10))
    } else {
        (5, Duration::from_secs(1))
    };
    println!(
        "mapping: recruitiq/candidate.hired through {INTEGRATION} `upsert {TABLE}` ({} columns), one core",
        columns.len()
    );
    let mut out = Vec::with_capacity(columns.len());
    let per_event = report_rate(
        "per_event",
        rate(rounds, round, || {
            map_event(fixture, columns, &mut out);
            black_box(&out);
        }),
        "events",
    );
    let input = EventInput::new(&fixture.envelope);
    report_rate(
        "columns_only",
        rate(rounds, round, || {
            map_columns(&fixture.generation, black_box(&input), columns, &mut out);
            black_box(&out);
        }),
        "events",
    );
    report_rate(
        "event_input",
        rate(rounds, round, || {
            black_box(EventInput::new(black_box(&fixture.envelope)));
        }),
        "inputs",
    );
    let render = report_rate(
        "render_route",
        rate(rounds, round, || {
            black_box(render_route(fixture));
        }),
        "events",
    );
    println!(
        "mapping: {} events/s per core (per_event); reference JSONata/Node ~{}/s, target {}/s (10x): {} ({:.1}x the reference)",
        thousands(per_event),
        thousands(MAPPING_REFERENCE),
        thousands(MAPPING_TARGET),
        verdict(per_event >= MAPPING_TARGET),
        per_event / MAPPING_REFERENCE,
    );
    println!(
        "mapping: whole route (render): {} events/s per core ({:.1}x the reference)",
        thousands(render),
        render / MAPPING_REFERENCE,
    );
}

fn read_and_compile(dir: &Path) -> compile::Compilation {
    let config = config::read_directory(dir, None).expect("read the generated directory");
    compile::compile(&config, 1)
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// Times `f` `runs` times and returns the sorted durations.
fn times(runs: usize, mut f: impl FnMut()) -> Vec<Duration> {
    let mut out: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    out.sort();
    out
}

fn report_times(name: &str, times: &[Duration]) -> Duration {
    let median = times[times.len() / 2];
    println!(
        "  {name:<22} {:>8.1} ms median  (min {:.1}, max {:.1}, {} runs)",
        millis(median),
        millis(times[0]),
        millis(times[times.len() - 1]),
        times.len()
    );
    median
}

fn busbar_check(dir: &Path) {
    let status = Command::new(BUSBAR)
        .arg("check")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run busbar check");
    assert!(
        status.success(),
        "busbar check {} failed: {status}",
        dir.display()
    );
}

fn plain_check(generated: &support::generate::Generated, quick: bool) {
    let dir = generated.integrations_dir.as_path();
    let runs = if quick { 1 } else { 10 };
    let compilation = read_and_compile(dir);
    println!(
        "check: {} generated integration files ({} KiB of YAML, {} contracts): {} errors, {} warnings",
        generated.integrations,
        generated.yaml_bytes / 1024,
        generated.contracts,
        compilation.errors(),
        compilation.warnings()
    );
    assert_eq!(
        compilation.errors(),
        0,
        "the generated directory must check clean"
    );
    assert!(compilation.generation.is_some());
    report_times(
        "read_directory",
        &times(runs, || {
            black_box(config::read_directory(dir, None).expect("read"));
        }),
    );
    let config = config::read_directory(dir, None).expect("read");
    report_times(
        "compile",
        &times(runs, || {
            black_box(compile::compile(&config, 1));
        }),
    );
    let in_process = report_times(
        "read_directory+compile",
        &times(runs, || {
            black_box(read_and_compile(dir));
        }),
    );
    let binary = report_times("busbar check (binary)", &times(runs, || busbar_check(dir)));
    println!(
        "check: {:.0} ms per check in process, {:.0} ms end to end ({}); target < {} ms: {}",
        millis(in_process),
        millis(binary),
        BUSBAR,
        millis(CHECK_TARGET),
        verdict(binary < CHECK_TARGET && in_process < CHECK_TARGET),
    );
}

fn criterion_mapping(c: &mut Criterion, fixture: &Fixture) {
    let columns = fixture.columns();
    let mut group = c.benchmark_group("mapping");
    group
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20)
        .throughput(Throughput::Elements(1));
    let mut out = Vec::with_capacity(columns.len());
    group.bench_function("per_event", |b| {
        b.iter(|| {
            map_event(fixture, columns, &mut out);
            black_box(&out);
        })
    });
    let input = EventInput::new(&fixture.envelope);
    group.bench_function("columns_only", |b| {
        b.iter(|| {
            map_columns(&fixture.generation, black_box(&input), columns, &mut out);
            black_box(&out);
        })
    });
    group.bench_function("event_input", |b| {
        b.iter(|| EventInput::new(black_box(&fixture.envelope)))
    });
    group.bench_function("render_route", |b| b.iter(|| render_route(fixture)));
    group.finish();
}

fn criterion_check(c: &mut Criterion, dir: &Path) {
    let mut group = c.benchmark_group("check_1000_files");
    group
        .measurement_time(Duration::from_secs(15))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(FILES as u64));
    group.bench_function("read_directory+compile", |b| {
        b.iter(|| read_and_compile(dir))
    });
    let config = config::read_directory(dir, None).expect("read");
    group.bench_function("compile", |b| b.iter(|| compile::compile(&config, 1)));
    group.bench_function("busbar_check_binary", |b| b.iter(|| busbar_check(dir)));
    group.finish();
}

fn generate_command(args: &[String]) {
    let Some(dir) = args.first() else {
        eprintln!("usage: compile_and_map --generate DIR [COUNT]");
        std::process::exit(2);
    };
    let count = args
        .get(1)
        .map(|n| n.parse().expect("COUNT is a number"))
        .unwrap_or(FILES);
    let generated =
        support::generate::generate(Path::new(dir), count).expect("write the generated directory");
    println!(
        "wrote {} integration files and {} contracts; check them with:\n  busbar check {}",
        generated.integrations,
        generated.contracts,
        generated.integrations_dir.display()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--generate") {
        return generate_command(&args[at + 1..]);
    }
    let plain_only = args.iter().any(|a| a == "--plain");
    // `cargo bench` passes `--bench`; without it (`cargo test`), run each
    // measurement once.
    let quick = !args.iter().any(|a| a == "--bench");

    let fixture = Fixture::load();
    assert_mapping(&fixture);
    let temp = tempfile::tempdir().expect("temporary directory");
    let generated = support::generate::generate(temp.path(), FILES).expect("generate integrations");
    let dir = generated.integrations_dir.as_path();

    println!("== plain figures ==");
    plain_mapping(&fixture, quick);
    plain_check(&generated, quick);
    println!("== end of plain figures ==");
    if plain_only {
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    criterion_mapping(&mut criterion, &fixture);
    criterion_check(&mut criterion, dir);
    criterion.final_summary();
}
