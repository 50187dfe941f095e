//! The `busbar` command line: arguments (clap) and what each command
//! prints. `src/main.rs` only calls [`main`] with the process's standard
//! streams; tests call it with buffers, so every command's output and exit
//! status are tested in process.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::compile::{self, Compilation};
use crate::config::{self, ConfigDir, yaml::SourceText};
use crate::envelope::Envelope;
use crate::report::{self, CheckFormat};
use crate::store::keys::{self, Scope};

/// A declarative integration bus: YAML integrations route business events
/// between products' tables, durably and exactly once.
#[derive(Debug, Parser)]
#[command(name = "busbar", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate an integrations directory: every problem, with file:line:col.
    ///
    /// Exit status: 0 clean (warnings allowed unless --deny-warnings),
    /// 1 problems found, 2 could not run.
    Check {
        /// The integrations directory.
        #[arg(default_value = "integrations.d")]
        dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
        format: CheckFormat,
        /// Treat warnings as problems (exit 1).
        #[arg(long)]
        deny_warnings: bool,
        /// Where event contracts live [default: DIR/../schemas/events].
        #[arg(long)]
        contracts: Option<PathBuf>,
        /// Also check against this target database's catalog: tables,
        /// columns, unique keys for upserts, column types, NOT NULL columns.
        /// Reads only (postgres://… or sqlite://path); never migrates.
        #[arg(long)]
        database_url: Option<String>,
        /// Check against a catalog file (`busbar catalog`) instead of a
        /// live database: the same checks as --database-url, offline.
        #[arg(long, conflicts_with = "database_url")]
        catalog: Option<PathBuf>,
    },
    /// Run config tests (`*.test.yaml` under DIR) through the real engine,
    /// each case on a throwaway database.
    ///
    /// Exit status: 0 every case passed, 1 a case failed, 2 could not run
    /// (a malformed test file, integrations that do not compile, no
    /// database, no tests).
    Test {
        /// The integrations directory; its test files are found under it.
        #[arg(default_value = "integrations.d")]
        dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = crate::testing::report::TestFormat::Text)]
        format: crate::testing::report::TestFormat,
        /// A PostgreSQL server (postgres://…) to run on: each case gets a
        /// new database there, dropped afterwards (needs CREATEDB).
        /// Without it, each case runs on a temporary SQLite file.
        #[arg(long)]
        database_url: Option<String>,
        /// SQL that creates your target tables, run before every case
        /// (repeat for several files).
        #[arg(long)]
        schema: Vec<PathBuf>,
        /// Only the cases whose name contains this text.
        #[arg(long)]
        filter: Option<String>,
        /// How long one event's deliveries may take.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Where event contracts live [default: DIR/../schemas/events].
        #[arg(long)]
        contracts: Option<PathBuf>,
    },
    /// Dry run: show the rows and events one event would produce. Writes nothing.
    Render {
        /// The event envelope, as JSON or YAML.
        #[arg(long)]
        event: PathBuf,
        /// Only this integration's routes.
        #[arg(long)]
        integration: Option<String>,
        #[command(flatten)]
        integrations: IntegrationsArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = RenderFormat::Text)]
        format: RenderFormat,
    },
    /// Print the JSON Schema of integration files (for editors and CI).
    Schema,
    /// The language server editors start: check's diagnostics as you
    /// type, completion, hover, go to definition, quick fixes. Speaks the
    /// Language Server Protocol on standard input and output.
    Lsp {
        /// Accepted for editors that pass it; stdio is the only transport.
        #[arg(long, hide = true)]
        stdio: bool,
        /// Read the target tables' catalog live from this database
        /// (postgres://… or sqlite://path; read only) instead of a catalog
        /// file: when a directory's first file opens, when a file is saved
        /// naming other tables, and on the `busbar.refresh` command. If it
        /// cannot be read, the catalog file is used and the server goes on.
        /// Its own variable, not DATABASE_URL: an editor started from a
        /// shell that has one must not read that database unasked; and in
        /// the environment a password is not on the command line for
        /// other users' `ps` to see.
        #[arg(long, env = "BUSBAR_LSP_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
    /// Write the target tables' catalog (columns, types, unique keys) as
    /// JSON, for `busbar lsp` and `check --catalog` to use without a
    /// database: `busbar catalog --database-url … > integrations.d/catalog.json`.
    Catalog {
        /// The integrations directory: the tables its steps name are read.
        #[arg(default_value = "integrations.d")]
        dir: PathBuf,
        /// The target database (postgres://… or sqlite://path); read only.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// Also this table (`schema.table`); repeat for several.
        #[arg(long)]
        table: Vec<String>,
    },
    /// Run busbar: the HTTP API and the engine's workers on the database
    /// (and, with --dev, the example platform seeded and a key printed).
    Serve {
        /// Install the example platform's tables, seed an organization
        /// subscribed to Nexus and Paylinq, and print an admin API key with
        /// curl commands to try. The key is kept (beside a SQLite database,
        /// or under ./data/ for PostgreSQL) and printed again by the next
        /// runs on the same database.
        #[arg(long)]
        dev: bool,
        /// With --dev: revoke the earlier dev keys and print a new one.
        #[arg(long, requires = "dev")]
        new_key: bool,
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        integrations: IntegrationsArgs,
        /// Which events publishing accepts: every well-formed one (open),
        /// or only those with a contract (strict). Events with a contract
        /// must fit it either way.
        #[arg(long, value_enum, env = "BUSBAR_CONTRACT_POLICY", default_value_t = crate::api::ContractPolicy::Open)]
        contract_policy: crate::api::ContractPolicy,
        /// Concurrent delivery workers [default: 4 on PostgreSQL, 1 on SQLite].
        #[arg(long)]
        workers: Option<usize>,
        /// Where the HTTP API listens.
        #[arg(long, env = "BUSBAR_LISTEN", default_value = crate::serve::DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Log lines as text (for people) or JSON (one object per line).
        #[arg(long, value_enum, env = "BUSBAR_LOG_FORMAT", default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Abandon a request (503) that runs longer than this.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        request_timeout: Duration,
        /// How to notice changes to the integrations directory: file-system
        /// events, polling (for file systems that send no events), or off
        /// (reload only on SIGHUP or `POST /api/integrations/reload`).
        #[arg(long, value_enum, env = "BUSBAR_WATCH", default_value_t = crate::reload::WatchMode::Events)]
        watch: crate::reload::WatchMode,
        /// How often `--watch poll` reads the directory.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        poll_interval: Duration,
        /// After this many failed authentications from one client address
        /// within --auth-failure-window, answer 429 to that address for
        /// keys never seen valid (0: no limit; keys in use are never
        /// refused).
        #[arg(long, default_value_t = 20)]
        auth_failure_limit: u32,
        /// The window of --auth-failure-limit.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        auth_failure_window: Duration,
    },
    /// Manage API keys: keys are shown once and stored only as a hash.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Run an integration's deliveries that match a filter again, after a
    /// fix: prints how many match, asks, then redelivers with a progress bar.
    ///
    /// Only events the integration's lanes have passed are taken (later
    /// ones run on the new definition anyway); a running busbar delivers
    /// them in the integration's order. Exit status: 0 done (or nothing
    /// matched), 1 answered no, 2 could not run (also: no terminal to ask
    /// and no --yes).
    Redeliver {
        /// The integration's id.
        #[arg(long)]
        integration: String,
        /// Only events of this name.
        #[arg(long)]
        event: Option<String>,
        /// Only events stored at or after this time: RFC 3339, a UTC
        /// `2026-11-28T09:30` or `2026-11-28`, or a duration ago (`2h`).
        #[arg(long, value_parser = parse_time)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only events stored before this time (the same forms).
        #[arg(long, value_parser = parse_time)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Only deliveries in this state (repeat for several) [default: all three].
        #[arg(long = "status", value_enum)]
        statuses: Vec<RedeliverState>,
        /// Only this organization's events.
        #[arg(long)]
        organization: Option<uuid::Uuid>,
        /// Of the matching deliveries, only the latest per order key (and
        /// route): each key's newest state, applied again.
        #[arg(long, conflicts_with = "from_event")]
        latest_per_key: bool,
        /// Only the matching deliveries of this event's order key, from
        /// this event on, in order.
        #[arg(long)]
        from_event: Option<uuid::Uuid>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Makes it idempotent: run again with the same id, it redelivers
        /// nothing more (or resumes a run that was interrupted).
        #[arg(long)]
        request_id: Option<String>,
        #[command(flatten)]
        database: DatabaseArgs,
        // The integrations directory and contracts the running busbar uses.
        #[command(flatten)]
        integrations: IntegrationsArgs,
    },
    /// Give up on dead deliveries, with a reason: they become `skipped`
    /// (their failure is kept beside the reason). With `on_dead: block`,
    /// their keys go on. A running busbar sees it at its next poll.
    ///
    /// Exit status: 0 every delivery named was dead and is skipped, 1 some
    /// were not dead (or do not exist): nothing was done to those, 2 could
    /// not run.
    Skip {
        /// The dead deliveries' ids (as the API and the console show them).
        #[arg(required = true)]
        deliveries: Vec<uuid::Uuid>,
        /// Why (recorded with each delivery): 1 to 1,000 characters.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Delete events older than an age, with their delivery rows, once no
    /// integration needs them: every lane has passed them and none of
    /// their deliveries is pending, retrying or dead. Safe while busbar
    /// runs; works in short transactions of 5,000 events.
    Prune {
        /// Keep what is younger than this (`30d`, `12h`; at least `1h`).
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Duration,
        /// Only count what would be deleted.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// After the database was restored from a dump or moved to another
    /// PostgreSQL cluster: make every event no lane has delivered yet a
    /// pending delivery, and restart busbar's positions on this cluster.
    /// Run it once, with every busbar process stopped.
    Rebase {
        #[command(flatten)]
        database: DatabaseArgs,
        // The integrations directory and contracts the running busbar uses.
        #[command(flatten)]
        integrations: IntegrationsArgs,
    },
    /// Apply busbar's database migrations and exit.
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Also create the example platform's tables (core, hris, payroll).
        #[arg(long)]
        example_platform: bool,
        /// Instead of busbar's own database: create the progress table in
        /// this database of DIR/databases.yaml (repeatable), with the URL
        /// its `${VAR}`s give in this environment.
        #[arg(long = "target", value_name = "NAME")]
        targets: Vec<String>,
        /// The integrations directory holding databases.yaml (with --target).
        #[arg(long, default_value = "integrations.d")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key and print it (only this once).
    Create {
        /// The organization the key acts for.
        #[arg(
            long,
            required_unless_present = "platform",
            conflicts_with = "platform"
        )]
        org: Option<uuid::Uuid>,
        /// A platform key, which may act for any organization.
        #[arg(long)]
        platform: bool,
        /// What the key may do: publish, read, admin (repeat for several).
        #[arg(long = "scope", required = true)]
        scopes: Vec<Scope>,
        /// What the key is for, shown by `keys list`.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// List keys (never their secrets).
    List {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Revoke a key by its id; busbar refuses it within seconds.
    Revoke {
        /// The key's id, as `keys list` shows it.
        id: uuid::Uuid,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// `--dir` and `--contracts`, for the commands that load integrations.
#[derive(Debug, clap::Args)]
struct IntegrationsArgs {
    /// The integrations directory.
    #[arg(long, default_value = "integrations.d")]
    dir: PathBuf,
    /// Where event contracts live [default: DIR/../schemas/events].
    #[arg(long)]
    contracts: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct DatabaseArgs {
    /// postgres://user@host/db, or sqlite://path/to/file.db.
    #[arg(long, env = "DATABASE_URL", default_value = crate::store::DEFAULT_DATABASE_URL)]
    database_url: String,
}

/// A state `busbar redeliver` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RedeliverState {
    Delivered,
    Skipped,
    Dead,
}

impl From<RedeliverState> for crate::store::events::Status {
    fn from(state: RedeliverState) -> Self {
        use crate::store::events::Status;
        match state {
            RedeliverState::Delivered => Status::Delivered,
            RedeliverState::Skipped => Status::Skipped,
            RedeliverState::Dead => Status::Dead,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RenderFormat {
    Text,
    Json,
}

/// Exit status: success.
const SUCCESS: u8 = 0;
/// Exit status: problems found, a case failed, not confirmed.
const FAILURE: u8 = 1;
/// Exit status for "could not run".
const CANNOT_RUN: u8 = 2;

/// Runs the command line `args` (the program name first), writing to `out`
/// and `err`, and returns the exit status. Styles are always written:
/// pass streams that drop them where they do not belong (`anstream`'s).
pub fn main(
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            // --help and --version are "errors" that go to standard output.
            let stream: &mut dyn Write = if error.use_stderr() { err } else { out };
            let _ = write!(stream, "{}", error.render().ansi());
            return u8::try_from(error.exit_code()).unwrap_or(CANNOT_RUN);
        }
    };
    let result = match cli.command {
        Command::Check {
            dir,
            format,
            deny_warnings,
            contracts,
            database_url,
            catalog,
        } => check(
            out,
            err,
            &dir,
            contracts.as_deref(),
            format,
            deny_warnings,
            database_url.as_deref(),
            catalog.as_deref(),
        ),
        Command::Test {
            dir,
            format,
            database_url,
            schema,
            filter,
            timeout,
            contracts,
        } => test(
            out,
            err,
            crate::testing::TestOptions {
                dir,
                contracts,
                database_url,
                schema,
                filter,
                timeout,
            },
            format,
        ),
        Command::Render {
            event,
            integration,
            integrations: IntegrationsArgs { dir, contracts },
            format,
        } => render(
            out,
            err,
            &event,
            integration.as_deref(),
            &dir,
            contracts.as_deref(),
            format,
        ),
        Command::Schema => writeln!(out, "{}", config::schema::integration_schema().trim_end())
            .map(|()| SUCCESS)
            .map_err(Into::into),
        Command::Lsp {
            stdio: _,
            database_url,
        } => crate::lsp::run_stdio(&crate::lsp::Options { database_url }).map(|()| SUCCESS),
        Command::Catalog {
            dir,
            database_url,
            table,
        } => catalog(out, &dir, &database_url, &table),
        Command::Serve {
            dev,
            new_key,
            database,
            integrations: IntegrationsArgs { dir, contracts },
            contract_policy,
            workers,
            listen,
            log_format,
            request_timeout,
            watch,
            poll_interval,
            auth_failure_limit,
            auth_failure_window,
        } => run_async(
            log_format,
            crate::serve::serve(crate::serve::ServeOptions {
                database_url: database.database_url,
                dir,
                contracts,
                dev,
                new_key,
                workers,
                listen,
                watch,
                poll_interval,
                api: crate::api::ApiConfig {
                    request_timeout,
                    contract_policy,
                    auth_failure_limit,
                    auth_failure_window,
                    ..Default::default()
                },
            }),
        ),
        Command::Keys { command } => run_async(LogFormat::Text, keys_command(out, err, command)),
        Command::Redeliver {
            integration,
            event,
            since,
            until,
            statuses,
            organization,
            latest_per_key,
            from_event,
            yes,
            request_id,
            database,
            integrations: IntegrationsArgs { dir, contracts },
        } => redeliver(
            out,
            crate::engine::redeliver::RedeliverFilter {
                integration,
                event,
                since,
                until,
                statuses: statuses.into_iter().map(Into::into).collect(),
                organization,
                latest_per_key,
                from_event,
            },
            yes,
            request_id,
            &database.database_url,
            &dir,
            contracts.as_deref(),
        ),
        Command::Prune {
            older_than,
            dry_run,
            database,
        } => run_async(LogFormat::Text, async move {
            if older_than < Duration::from_secs(3600) {
                anyhow::bail!(
                    "--older-than must be at least 1h (events younger than that are still being published and delivered)"
                );
            }
            let cutoff = chrono::Utc::now()
                - chrono::Duration::from_std(older_than).context("--older-than is too large")?;
            let store = crate::serve::connect(&database.database_url).await?;
            let pruned =
                crate::store::retention::prune(&store, crate::store::types::Time(cutoff), dry_run)
                    .await?;
            store.close().await;
            writeln!(
                out,
                "{} {} events and {} delivery rows stored before {}",
                if dry_run { "would delete" } else { "deleted" },
                pruned.events,
                pruned.deliveries,
                cutoff.format("%Y-%m-%dT%H:%M:%SZ")
            )?;
            Ok(())
        }),
        Command::Skip {
            deliveries,
            reason,
            database,
        } => skip(out, err, &deliveries, &reason, &database.database_url),
        Command::Rebase {
            database,
            integrations: IntegrationsArgs { dir, contracts },
        } => run_async(LogFormat::Text, async move {
            let generation = crate::serve::load_generation(&dir, contracts.as_deref(), 1)?;
            let store = crate::serve::connect(&database.database_url).await?;
            let rebased = crate::engine::rebase::rebase(&store, &generation).await?;
            writeln!(
                out,
                "rebased {} onto PostgreSQL cluster {}: {} deliveries no lane had reached are pending, \
                 {} events renumbered",
                crate::store::redact(&database.database_url),
                rebased.cluster,
                rebased.pending,
                rebased.events
            )?;
            store.close().await;
            Ok(())
        }),
        Command::Migrate { targets, dir, .. } if !targets.is_empty() => {
            run_async(LogFormat::Text, async move {
                migrate_targets(&dir, &targets, out).await
            })
        }
        Command::Migrate {
            database,
            example_platform,
            ..
        } => run_async(LogFormat::Text, async move {
            let store = crate::serve::connect(&database.database_url).await?;
            if example_platform {
                crate::dev::install_example_platform(&store).await?;
            }
            writeln!(
                out,
                "migrations applied to {}",
                crate::store::redact(&database.database_url)
            )?;
            store.close().await;
            Ok(())
        }),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            let _ = writeln!(err, "busbar: error: {error:#}");
            CANNOT_RUN
        }
    }
}

/// `busbar skip`: skips the named dead deliveries in one transaction.
fn skip(
    out: &mut dyn Write,
    err: &mut dyn Write,
    deliveries: &[uuid::Uuid],
    reason: &str,
    database_url: &str,
) -> Result<u8> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 1000 {
        anyhow::bail!("--reason must say why, in 1 to 1,000 characters");
    }
    let mut asked: Vec<uuid::Uuid> = deliveries.to_vec();
    asked.sort_unstable();
    asked.dedup();
    init_logging(LogFormat::Text);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let skipped = runtime.block_on(async {
        let store = crate::serve::connect(database_url).await?;
        let mut tx = store.begin().await?;
        let filter = crate::store::lanes::ReplayFilter {
            deliveries: Some(asked.clone()),
            ..Default::default()
        };
        let resolution = crate::store::lanes::Resolution::Skip { reason, by: "cli" };
        let ids = crate::store::lanes::resolve_dead(
            &mut tx,
            &filter,
            resolution,
            crate::store::types::Time::now(),
        )
        .await?;
        tx.commit().await?;
        store.close().await;
        anyhow::Ok(ids.len())
    })?;
    writeln!(out, "skipped {skipped} of {} deliveries", asked.len())?;
    if skipped < asked.len() {
        writeln!(
            err,
            "busbar: {} of the deliveries named were not dead (or do not exist): nothing was done to them",
            asked.len() - skipped
        )?;
        return Ok(FAILURE);
    }
    Ok(SUCCESS)
}

/// Runs an async command on a multi-threaded runtime, with logs.
fn run_async(
    log_format: LogFormat,
    future: impl std::future::Future<Output = Result<()>>,
) -> Result<u8> {
    init_logging(log_format);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(future)?;
    Ok(SUCCESS)
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("BUSBAR_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("busbar=info,warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second command in one process (tests) keeps the first's logger.
    let _ = match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).try_init(),
        // One JSON object per line; the request id is in the span fields.
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// `busbar keys ...`.
async fn keys_command(
    out: &mut dyn Write,
    err: &mut dyn Write,
    command: KeysCommand,
) -> Result<()> {
    match command {
        KeysCommand::Create {
            org,
            platform: _,
            scopes,
            name,
            database,
        } => {
            let store = crate::serve::connect(&database.database_url).await?;
            let created = keys::create_key(&store, org, &scopes, name.as_deref()).await?;
            store.close().await;
            let record = &created.record;
            let owner = match record.organization_id {
                Some(org) => format!("organization {org}"),
                None => "the platform (every organization)".to_owned(),
            };
            let scopes: Vec<&str> = record.scopes.iter().map(|s| s.as_str()).collect();
            writeln!(
                err,
                "created key {} for {owner} with scopes {}; store it now, it is not shown again:",
                record.id,
                scopes.join(", ")
            )?;
            // Only the key on standard output, for `KEY=$(busbar keys create ...)`.
            writeln!(out, "{}", created.key)?;
        }
        KeysCommand::List { database } => {
            let store = crate::serve::connect(&database.database_url).await?;
            let records = keys::list_keys(&store).await?;
            store.close().await;
            writeln!(
                out,
                "{:<36}  {:<11}  {:<36}  {:<20}  {:<20}  {:<20}  name",
                "id", "key", "organization", "scopes", "created", "revoked"
            )?;
            for record in records {
                let scopes: Vec<&str> = record.scopes.iter().map(|s| s.as_str()).collect();
                let time =
                    |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
                writeln!(
                    out,
                    "{:<36}  {:<11}  {:<36}  {:<20}  {:<20}  {:<20}  {}",
                    record.id,
                    format!("bb_{}_…", record.prefix),
                    record
                        .organization_id
                        .map_or("(platform)".to_owned(), |o| o.to_string()),
                    scopes.join(","),
                    time(record.created_at),
                    record.revoked_at.map_or("-".to_owned(), time),
                    record.name.as_deref().unwrap_or("")
                )?;
            }
        }
        KeysCommand::Revoke { id, database } => {
            let store = crate::serve::connect(&database.database_url).await?;
            let revoked = keys::revoke_key(&store, id).await?;
            store.close().await;
            if !revoked {
                anyhow::bail!("there is no unrevoked key {id}");
            }
            writeln!(out, "revoked key {id}")?;
        }
    }
    Ok(())
}

/// A time on the command line: RFC 3339, a UTC date and time or date, or
/// a duration before now (`90m`, `2h`, `3days`).
fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(time) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(time.and_utc());
        }
    }
    if let Some(time) = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
    {
        return Ok(time.and_utc());
    }
    if let Ok(ago) = humantime::parse_duration(text)
        && let Ok(ago) = chrono::Duration::from_std(ago)
    {
        return Ok(Utc::now() - ago);
    }
    Err(format!(
        "`{text}` is not a time: use RFC 3339, 2026-11-28T09:30 (UTC), 2026-11-28, or a duration ago such as 2h"
    ))
}

/// `busbar redeliver`: the preview, a confirmation, then the redelivery
/// with a progress bar on a terminal.
fn redeliver(
    out: &mut dyn Write,
    filter: crate::engine::redeliver::RedeliverFilter,
    yes: bool,
    request_id: Option<String>,
    database_url: &str,
    dir: &Path,
    contracts: Option<&Path>,
) -> Result<u8> {
    use crate::engine::redeliver::{self, RedeliverRequest};
    // Warnings only: log lines would break the progress bar.
    let filter_env = tracing_subscriber::EnvFilter::try_from_env("BUSBAR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter_env)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let generation = std::sync::Arc::new(crate::serve::load_generation(dir, contracts, 0)?);
        let Some(integration) = generation.integration(&filter.integration) else {
            anyhow::bail!(
                "there is no integration `{}` in {}",
                filter.integration,
                dir.display()
            );
        };
        let store = crate::serve::connect(database_url).await?;
        if let Some(current) = redeliver::current_definition(&store, integration).await? {
            anyhow::bail!(
                "integration `{}` in {} differs from the definition the running busbar loaded ({current});                  run busbar redeliver with the same integrations directory",
                integration.id,
                dir.display()
            );
        }
        let count = redeliver::preview(&store, &generation, &filter).await?;
        let what = describe(&count);
        if count.deliveries == 0 {
            writeln!(
                out,
                "nothing to redeliver: no delivery of {} matches",
                filter.integration
            )?;
            store.close().await;
            return Ok(SUCCESS);
        }
        writeln!(out, "{what} of {} match", filter.integration)?;
        if count.newer_applied > 0 {
            writeln!(
                out,
                "warning: {} of them have a newer applied event of their key that is not redelivered: \
                 after this, those keys hold the older event's writes (--latest-per-key redelivers only the newest)",
                count.newer_applied
            )?;
        }
        if !yes {
            if !std::io::stdin().is_terminal() {
                anyhow::bail!("not confirmed: pass --yes to redeliver without a question");
            }
            write!(out, "Redeliver {what} through {}? [y/N] ", filter.integration)?;
            out.flush()?;
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            if !matches!(line.trim(), "y" | "Y" | "yes") {
                writeln!(out, "nothing redelivered")?;
                store.close().await;
                return Ok(FAILURE);
            }
        }
        let bar = if std::io::stderr().is_terminal() {
            indicatif::ProgressBar::new(count.deliveries)
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} deliveries ({per_sec}, {eta} left)",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let shown = bar.clone();
        let progress: redeliver::Progress = std::sync::Arc::new(move |done| {
            // The set may have changed since the preview.
            if done.deliveries > shown.length().unwrap_or(0) {
                shown.set_length(done.deliveries);
            }
            shown.set_position(done.deliveries);
        });
        let done = redeliver::run(
            store.clone(),
            generation.clone(),
            RedeliverRequest {
                filter: filter.clone(),
                request_id,
                caller: None,
            },
            Some(progress),
        )
        .await?;
        bar.finish_and_clear();
        store.close().await;
        let what = describe(&done.count);
        match (done.repeated, done.finished) {
            (false, _) => writeln!(
                out,
                "redelivered {what} through {}: a running busbar delivers them in order",
                filter.integration
            )?,
            (true, true) => writeln!(
                out,
                "this request id was used already: nothing redelivered now (it redelivered {what})"
            )?,
            (true, false) => writeln!(
                out,
                "this request id's redelivery is still being written elsewhere ({what} so far); run this again later"
            )?,
        }
        Ok(SUCCESS)
    })
}

/// `3 events (4 deliveries)`, or `3 events` when there is one delivery each.
fn describe(count: &crate::engine::redeliver::RedeliverCount) -> String {
    let events = match count.events {
        1 => "1 event".to_owned(),
        n => format!("{n} events"),
    };
    if count.deliveries == count.events {
        events
    } else {
        format!("{events} ({} deliveries)", count.deliveries)
    }
}

fn read_config(dir: &Path, contracts: Option<&Path>) -> Result<ConfigDir> {
    config::read_directory(dir, contracts)
        .with_context(|| format!("cannot read the integrations directory {}", dir.display()))
}

#[allow(clippy::too_many_arguments)]
fn check(
    out: &mut dyn Write,
    err: &mut dyn Write,
    dir: &Path,
    contracts: Option<&Path>,
    format: CheckFormat,
    deny_warnings: bool,
    database_url: Option<&str>,
    catalog: Option<&Path>,
) -> Result<u8> {
    let config = read_config(dir, contracts)?;
    let mut compilation = compile::compile(&config, 0);
    if let Some(file) = catalog {
        let tables = crate::check::catalog::CatalogFile::read(file)?.to_tables();
        match &compilation.generation {
            Some(generation) => {
                let found = crate::check::database::check(generation, &tables);
                compilation.diagnostics.extend(found);
                crate::diagnostics::sort(&mut compilation.diagnostics);
            }
            None => writeln!(
                err,
                "the catalog checks did not run: the files have errors; fix those first"
            )?,
        }
    }
    if let Some(url) = database_url {
        match &compilation.generation {
            Some(generation) => {
                let runtime =
                    tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
                let found = runtime
                    .block_on(crate::check::database::check_database(generation, url))
                    .with_context(|| {
                        format!("cannot read the catalog of {}", crate::store::redact(url))
                    })?;
                compilation.diagnostics.extend(found);
                crate::diagnostics::sort(&mut compilation.diagnostics);
            }
            None => {
                writeln!(
                    err,
                    "the database checks did not run: the files have errors; fix those first"
                )?;
            }
        }
    }
    report::print_diagnostics(
        out,
        format,
        &compilation.diagnostics,
        &config.sources(),
        compilation.files,
    )?;
    let failed = compilation.errors() > 0 || (deny_warnings && compilation.warnings() > 0);
    Ok(if failed { FAILURE } else { SUCCESS })
}

fn catalog(out: &mut dyn Write, dir: &Path, url: &str, extra: &[String]) -> Result<u8> {
    use crate::check::catalog;
    use crate::compile::ident::TableName;
    let config = read_config(dir, None)?;
    let mut tables = catalog::tables_in(&config);
    for name in extra {
        tables.push(
            TableName::parse(name).map_err(|error| anyhow::anyhow!("--table {name}: {error}"))?,
        );
    }
    tables.sort();
    tables.dedup();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let snapshot = runtime
        .block_on(catalog::snapshot(url, &tables))
        .with_context(|| format!("cannot read the catalog of {}", crate::store::redact(url)))?;
    serde_json::to_writer_pretty(&mut *out, &snapshot)?;
    writeln!(out)?;
    Ok(SUCCESS)
}

fn test(
    out: &mut dyn Write,
    err: &mut dyn Write,
    options: crate::testing::TestOptions,
    format: crate::testing::report::TestFormat,
) -> Result<u8> {
    use crate::testing::report;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let suite = runtime.block_on(crate::testing::run(&options, &mut |event| {
        // Output is best effort while cases run; the summary reports errors.
        let _ = report::progress(out, format, event);
    }))?;
    report::finish(out, err, format, &suite)?;
    Ok(suite.exit_code())
}

fn render(
    out: &mut dyn Write,
    err: &mut dyn Write,
    event_file: &Path,
    integration: Option<&str>,
    dir: &Path,
    contracts: Option<&Path>,
    format: RenderFormat,
) -> Result<u8> {
    let text = std::fs::read_to_string(event_file)
        .with_context(|| format!("cannot read the event file {}", event_file.display()))?;
    let (document, diagnostics) = config::yaml::parse(event_file, &text);
    let Some(document) = document else {
        let sources = HashMap::from([(event_file.to_path_buf(), SourceText::new(&text))]);
        report::print_diagnostics(err, CheckFormat::Text, &diagnostics, &sources, 1)?;
        return Ok(FAILURE);
    };
    let envelope = match Envelope::from_json(&document.value) {
        Ok(envelope) => envelope,
        Err(violations) => {
            writeln!(err, "{}: not a valid event:", event_file.display())?;
            for violation in violations {
                writeln!(
                    err,
                    "  {}: {}",
                    pointer_or_root(&violation.pointer),
                    violation.message
                )?;
            }
            return Ok(FAILURE);
        }
    };
    let config = read_config(dir, contracts)?;
    let Compilation {
        generation,
        diagnostics,
        files,
    } = compile::compile(&config, 0);
    let Some(generation) = generation else {
        writeln!(
            err,
            "the integrations do not compile, so there is nothing to render:"
        )?;
        let errors: Vec<_> = diagnostics.into_iter().filter(|d| d.is_error()).collect();
        report::print_diagnostics(err, CheckFormat::Text, &errors, &config.sources(), files)?;
        return Ok(FAILURE);
    };
    if let Some(id) = integration
        && generation.integration(id).is_none()
    {
        anyhow::bail!("there is no integration `{id}` in {}", dir.display());
    }
    let mut code = SUCCESS;
    if let Some(contract) = generation.contracts.get(&envelope.source, &envelope.event) {
        let violations = contract.violations(&envelope.data);
        if !violations.is_empty() {
            writeln!(
                err,
                "publishing would refuse this event: its data breaks the contract {}:",
                contract.file.display()
            )?;
            for violation in violations {
                writeln!(err, "  {}: {}", violation.pointer, violation.message)?;
            }
            code = FAILURE;
        }
    }
    let report = crate::render::render(&generation, &envelope, integration);
    match format {
        RenderFormat::Text => report::print_render(out, &report)?,
        RenderFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, &report)?;
            writeln!(out)?;
        }
    }
    if report.routes.iter().any(|r| r.outcome == "failed") {
        code = FAILURE;
    }
    Ok(code)
}

fn pointer_or_root(pointer: &str) -> &str {
    if pointer.is_empty() {
        "(the event)"
    } else {
        pointer
    }
}

/// `busbar migrate --target NAME…`: makes the progress table in each named
/// database of `dir`'s databases.yaml (as `serve` would on first use), so
/// that busbar can then run with a role that may not create tables.
async fn migrate_targets(
    dir: &std::path::Path,
    names: &[String],
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let (file, diagnostics) = crate::config::read_databases(dir);
    if let Some(error) = diagnostics.iter().find(|d| d.is_error()) {
        anyhow::bail!("{error}");
    }
    let (databases, diagnostics) = crate::compile::databases::compile(file.as_ref());
    if let Some(error) = diagnostics.iter().find(|d| d.is_error()) {
        anyhow::bail!("{error}");
    }
    for name in names {
        let Some(database) = databases.get(name) else {
            let known: Vec<&str> = databases.list.iter().map(|d| d.name.as_str()).collect();
            anyhow::bail!(
                "no database `{name}` in {}/databases.yaml (it names: {})",
                dir.display(),
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            );
        };
        let url = database
            .url_with(|variable| std::env::var(variable).ok())
            .map_err(|missing| {
                anyhow::anyhow!(
                    "database `{name}`: environment variable {} is not set",
                    missing.join(", ")
                )
            })?;
        let target = crate::store::targets::TargetDb::new(name, &url, true, database.outbox)?;
        target.check().await?;
        target.close().await;
        writeln!(out, "progress table ready in database `{name}`")?;
    }
    Ok(())
}
