//! Running config tests: every case through the real engine
//! ([`Engine::start`], publish, wait until nothing is pending, shutdown)
//! on a throwaway database of its own ([`Testbed`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::expect::{self, Failure, Line};
use super::file::{self, TestCase, TestFile};
use crate::compile;
use crate::config::yaml::SourceText;
use crate::config::{self, ConfigDir};
use crate::diagnostics::{self, Diagnostic, Position};
use crate::engine::{Engine, EngineConfig, PublishError};
use crate::store::events::{self, EventFilter, Status};
use crate::store::scope::OrgScope;
use crate::store::testbed::Testbed;
use crate::store::views;
use crate::store::{StoreError, example_platform_sql};

/// The organization an event belongs to when neither it nor the file's
/// `defaults` say (the example platform's subscribed organization).
pub const DEFAULT_ORGANIZATION: &str = "7d0e6a52-3c59-4a8e-9d7a-0c1f2b3a4d5e";
/// When an event happened when neither it nor the file's `defaults` say:
/// fixed, so that dates derived from it do not change from run to run.
pub const DEFAULT_OCCURRED_AT: &str = "2026-01-02T09:00:00Z";

/// How to run a suite.
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// The integrations directory; test files are found under it.
    pub dir: PathBuf,
    /// Where contracts live (default: beside the directory).
    pub contracts: Option<PathBuf>,
    /// A PostgreSQL server to create throwaway databases on; SQLite
    /// temporary files without it.
    pub database_url: Option<String>,
    /// SQL files run before every case (after busbar's migrations and the
    /// example platform, before each file's own `schema:`).
    pub schema: Vec<PathBuf>,
    /// Only cases whose name contains this.
    pub filter: Option<String>,
    /// How long one event's deliveries may take before the case fails.
    pub timeout: Duration,
}

/// Why a suite could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum TestRunError {
    #[error("cannot read the integrations directory {}: {source}", dir.display())]
    Directory {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create a throwaway database: {0}")]
    Database(#[from] StoreError),
}

/// One case's result.
#[derive(Debug, Clone)]
pub struct CaseReport {
    pub file: PathBuf,
    pub name: String,
    pub position: Position,
    pub duration: Duration,
    /// Empty when the case passed.
    pub failures: Vec<Failure>,
    /// The case could not be set up (a given row or schema file failed):
    /// an error rather than a failed expectation.
    pub setup_error: bool,
}

impl CaseReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// What a suite did.
#[derive(Debug, Default)]
pub struct SuiteReport {
    /// Malformed test files, or integrations that do not compile.
    pub diagnostics: Vec<Diagnostic>,
    /// Every file a diagnostic or a failure may point into.
    pub sources: HashMap<PathBuf, SourceText>,
    /// Test files found.
    pub test_files: Vec<PathBuf>,
    /// The `--filter` the cases were chosen by, if any.
    pub filter: Option<String>,
    /// Cases in the well-formed test files, before the filter chose.
    pub cases_found: usize,
    pub cases: Vec<CaseReport>,
    pub duration: Duration,
}

impl SuiteReport {
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.passed()).count()
    }

    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed()
    }

    /// Why nothing (or not everything) could run, if so.
    pub fn could_not_run(&self) -> Option<String> {
        if self.diagnostics.iter().any(Diagnostic::is_error) {
            Some("some files have errors, so their cases did not run".into())
        } else if self.test_files.is_empty() {
            Some("no config tests (*.test.yaml) were found".into())
        } else if let Some(filter) = &self.filter
            && self.cases.is_empty()
        {
            let files = self.test_files.len();
            Some(format!(
                "no test case matches --filter `{filter}` ({} case{} in {files} file{}); it keeps the cases whose name contains it",
                self.cases_found,
                if self.cases_found == 1 { "" } else { "s" },
                if files == 1 { "" } else { "s" },
            ))
        } else {
            None
        }
    }

    /// 0 every case passed, 1 a case failed, 2 something could not run.
    pub fn exit_code(&self) -> u8 {
        if self.could_not_run().is_some() {
            2
        } else if self.failed() > 0 {
            1
        } else {
            0
        }
    }
}

/// What happens as a suite runs, for output that streams.
pub enum Progress<'a> {
    /// A test file's cases are about to run.
    File(&'a Path),
    /// A case finished; the text of its file, to quote.
    Case(&'a CaseReport, &'a SourceText),
}

/// Finds, checks and runs every config test under `options.dir`.
pub async fn run(
    options: &TestOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<SuiteReport, TestRunError> {
    let started = Instant::now();
    let directory_error = |source| TestRunError::Directory {
        dir: options.dir.clone(),
        source,
    };
    let config = config::read_directory(&options.dir, options.contracts.as_deref())
        .map_err(directory_error)?;
    let mut report = SuiteReport {
        filter: options.filter.clone(),
        ..SuiteReport::default()
    };
    for file in config.integrations.iter().chain(&config.contracts) {
        report
            .sources
            .insert(file.path.clone(), SourceText::new(&file.text));
    }
    let compilation = compile::compile(&config, 1);
    let Some(generation) = compilation.generation else {
        report.diagnostics = compilation
            .diagnostics
            .into_iter()
            .filter(Diagnostic::is_error)
            .collect();
        return Ok(report);
    };
    let ids: Vec<&str> = generation
        .integrations
        .iter()
        .map(|i| i.id.as_str())
        .collect();
    let mut paths = Vec::new();
    find_test_files(&options.dir, &mut paths).map_err(directory_error)?;
    report.test_files = paths.clone();
    let mut files = Vec::new();
    for path in paths {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) => {
                report.diagnostics.push(Diagnostic::error(
                    &path,
                    Position::START,
                    diagnostics::Code::Io,
                    format!("cannot read this file: {error}"),
                ));
                continue;
            }
        };
        report.sources.insert(path.clone(), SourceText::new(&text));
        let (file, found) = file::load(&path, &text, &ids);
        report.diagnostics.extend(found);
        files.extend(file);
    }
    report.cases_found = files.iter().map(|f| f.cases.len()).sum();
    for file in &files {
        let cases: Vec<&TestCase> = file
            .cases
            .iter()
            .filter(|c| {
                options
                    .filter
                    .as_ref()
                    .is_none_or(|f| c.name.contains(f.as_str()))
            })
            .collect();
        if cases.is_empty() {
            continue;
        }
        progress(Progress::File(&file.path));
        for case in cases {
            let case_report = run_case(&config, file, case, options).await?;
            progress(Progress::Case(&case_report, &file.document.source));
            report.cases.push(case_report);
        }
    }
    report.duration = started.elapsed();
    Ok(report)
}

/// Every `*.test.yaml` under `dir`, sorted, skipping hidden directories.
fn find_test_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            find_test_files(&path, out)?;
        } else if file::is_test_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// The envelope to publish: the file's defaults, then the event's own
/// fields (`data` merged deeply), then busbar's defaults.
pub fn envelope(defaults: &Map<String, Value>, event: &Map<String, Value>) -> Value {
    let mut merged = Value::Object(defaults.clone());
    merge(&mut merged, &Value::Object(event.clone()));
    if let Value::Object(map) = &mut merged {
        map.entry("organization_id")
            .or_insert_with(|| Value::String(DEFAULT_ORGANIZATION.into()));
        map.entry("occurred_at")
            .or_insert_with(|| Value::String(DEFAULT_OCCURRED_AT.into()));
    }
    merged
}

/// Merges `over` into `base`: objects key by key, anything else replaced.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                match base.get_mut(key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, over) => *base = over.clone(),
    }
}

/// Runs one case on a database of its own. `Err` only when no database
/// could be made: the suite cannot run.
async fn run_case(
    config: &ConfigDir,
    file: &TestFile,
    case: &TestCase,
    options: &TestOptions,
) -> Result<CaseReport, StoreError> {
    let started = Instant::now();
    let testbed = Testbed::create(options.database_url.as_deref()).await?;
    let result = run_on(&testbed, config, file, case, options).await;
    testbed.destroy().await;
    let (failures, setup_error) = match result {
        Ok(failures) => (failures, false),
        Err(failure) => (vec![failure], true),
    };
    Ok(CaseReport {
        file: file.path.clone(),
        name: case.name.clone(),
        position: case.position,
        duration: started.elapsed(),
        failures,
        setup_error,
    })
}

/// Sets the case up, runs it and compares. `Err` is a setup error.
async fn run_on(
    testbed: &Testbed,
    config: &ConfigDir,
    file: &TestFile,
    case: &TestCase,
    options: &TestOptions,
) -> Result<Vec<Failure>, Failure> {
    let dialect = testbed.dialect();
    let store = &testbed.store;
    let setup = |position: Position, what: String| {
        move |error: StoreError| Failure::new(position, format!("{what}: {error}"))
    };
    if file.platform {
        store
            .execute_script(example_platform_sql(dialect))
            .await
            .map_err(setup(
                Position::START,
                "cannot create the example platform".into(),
            ))?;
    }
    for path in &options.schema {
        run_sql_file(testbed, path, case.position).await?;
    }
    for path in file.schema_for(dialect) {
        run_sql_file(testbed, path, file.schema_position).await?;
    }
    for given in file.given.iter().chain(&case.given) {
        let rows: Vec<Map<String, Value>> = given.rows.iter().map(|(row, _)| row.clone()).collect();
        if let Err((index, error)) = testbed.insert_rows(&given.table, &rows).await {
            let position = given.rows.get(index).map_or(given.position, |(_, p)| *p);
            return Err(Failure::new(
                position,
                format!("cannot insert this row into `{}`: {error}", given.table),
            ));
        }
    }
    let Some(mut generation) = compile::compile(config, 1).generation else {
        return Err(Failure::new(
            case.position,
            "the integrations no longer compile",
        ));
    };
    // Every table is on the test's own database, whatever databases.yaml
    // says: a test never writes into a product's real database, and needs
    // none of its variables.
    generation.databases = Default::default();
    for integration in &mut generation.integrations {
        integration.database = None;
        integration.reads_from.clear();
    }
    let mut engine_config = EngineConfig::for_dialect(dialect);
    engine_config.poll_interval = Duration::from_millis(50);
    engine_config.workers = engine_config.workers.min(2);
    let engine = Engine::start(store.clone(), generation, engine_config)
        .await
        .map_err(setup(case.position, "cannot start the engine".into()))?;
    let published = publish_all(&engine, file, case, options.timeout).await;
    let lanes = engine.lanes();
    let generation = engine.generation();
    engine.shutdown().await;
    published?;

    let read = |error: StoreError| {
        Failure::new(case.position, format!("cannot read the results: {error}"))
    };
    let mut tx = store.begin_read().await.map_err(read)?;
    let mut all = events::list_events(&mut tx, &EventFilter::all(OrgScope::Platform), i64::MAX)
        .await
        .map_err(read)?;
    all.reverse();
    let deliveries = views::deliveries(&mut tx, OrgScope::Platform, &generation, lanes, &all)
        .await
        .map_err(read)?;
    let emitted: Vec<_> = all.into_iter().filter(|e| e.parent_id.is_some()).collect();
    tx.rollback().await.map_err(read)?;

    let mut failures = Vec::new();
    for expectation in &case.rows {
        match testbed.read_rows(&expectation.table).await {
            Ok((info, rows)) => failures.extend(expect::rows(expectation, &info, &rows)),
            Err(StoreError::NoTable(_)) => failures.push(Failure::new(
                expectation.position,
                format!(
                    "table `{}` does not exist in the test database",
                    expectation.table
                ),
            )),
            Err(error) => failures.push(Failure::new(expectation.position, error.to_string())),
        }
    }
    if let Some(expectation) = &case.events {
        failures.extend(expect::events(expectation, &emitted));
    }
    failures.extend(expect::deliveries(
        case.deliveries.as_ref(),
        &deliveries,
        case.position,
    ));
    Ok(failures)
}

async fn run_sql_file(testbed: &Testbed, path: &Path, position: Position) -> Result<(), Failure> {
    let sql = std::fs::read_to_string(path).map_err(|error| {
        Failure::new(
            position,
            format!("cannot read the schema file {}: {error}", path.display()),
        )
    })?;
    testbed.store.execute_script(&sql).await.map_err(|error| {
        Failure::new(
            position,
            format!("the schema file {} fails: {error}", path.display()),
        )
    })
}

/// Publishes the case's events one by one, each settled before the next.
async fn publish_all(
    engine: &Engine,
    file: &TestFile,
    case: &TestCase,
    timeout: Duration,
) -> Result<(), Failure> {
    for (event, position) in &case.publish {
        let envelope = envelope(&file.defaults, event);
        match engine.publish_json(&envelope, None).await {
            Ok(_) => {}
            Err(PublishError::Invalid(violations)) => {
                let mut failure = Failure::new(*position, "publishing refused this event");
                for violation in violations {
                    failure.lines.push(Line::Note(format!(
                        "{}: {}",
                        violation.pointer, violation.message
                    )));
                }
                return Err(failure);
            }
            Err(error) => {
                return Err(Failure::new(
                    *position,
                    format!("cannot publish this event: {error}"),
                ));
            }
        }
        settle(engine, timeout, *position).await?;
    }
    Ok(())
}

/// Waits until the lanes have read every event and no delivery is pending
/// or retrying.
async fn settle(engine: &Engine, timeout: Duration, position: Position) -> Result<(), Failure> {
    let started = Instant::now();
    loop {
        match engine.backlog(1000).await {
            Ok(backlog) if backlog.is_empty() => return Ok(()),
            Ok(_) if started.elapsed() < timeout => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Ok(backlog) => {
                let mut failure = Failure::new(
                    position,
                    format!("this event's deliveries had not finished after {timeout:?}"),
                );
                for (integration, unread) in &backlog.unread {
                    failure.lines.push(Line::Actual(format!(
                        "{integration}: {unread} event(s) not reached yet"
                    )));
                }
                if let Ok(mut tx) = engine.store().begin_read().await {
                    for status in [Status::Pending, Status::Retrying] {
                        if let Ok(open) =
                            events::deliveries_with_status(&mut tx, Some(status)).await
                        {
                            for d in open {
                                failure.lines.push(Line::Actual(format!(
                                    "{} ({}): {}, attempt {}{}",
                                    d.integration,
                                    d.route_event,
                                    d.status.as_str(),
                                    d.attempts,
                                    d.last_error.map(|e| format!(" — {e}")).unwrap_or_default()
                                )));
                            }
                        }
                    }
                }
                return Err(failure);
            }
            Err(error) => {
                return Err(Failure::new(
                    position,
                    format!("cannot watch the deliveries: {error}"),
                ));
            }
        }
    }
}
