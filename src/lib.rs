//! busbar: a declarative integration bus.
//!
//! Products publish business events; YAML files in `integrations.d/` say
//! which events go to which product and how their fields map onto rows of
//! that product's tables. The data flows through these modules, in order:
//!
//! - [`config`]: finds the files, reads YAML with positions, validates it
//!   against `schemas/integration.schema.json`, and builds the typed model.
//! - [`compile`]: turns the model into a [`compile::Generation`]: routes of
//!   steps with JSONPaths and minijinja templates compiled once, checked
//!   against event contracts, identifiers and the emit graph. Every problem
//!   is a [`diagnostics::Diagnostic`]; compiling never stops at the first.
//! - [`check`]: with `--database-url`, checks a generation against the
//!   target database's catalog (tables, columns, unique keys, types).
//! - [`mapping`]: evaluates a route for one event through an
//!   [`mapping::Executor`] (pure: the database is behind the trait).
//! - [`render`]: the dry run, the same step loop over a simulated database.
//! - [`store`]: SQLite and PostgreSQL behind one interface: the engine's
//!   tables, the target tables, the SQL dialects.
//! - [`engine`]: publishing (group commit), routing, workers, retries,
//!   dead letters, replay and the live generation.
//! - [`testing`]: `busbar test`, config tests run through the real engine
//!   on throwaway databases.
//! - [`api`]: the HTTP API over the engine (axum), with API keys and
//!   organization isolation; [`telemetry`] names the metrics it serves.
//! - [`console`]: the operations console in the browser (`/console`),
//!   server-rendered on the same port, signed in with an API key.
//! - [`lsp`]: `busbar lsp`, the language server editors start: `check`'s
//!   diagnostics as the user types, completion, hover, definition.
//!
//! Below them all, shared leaves: [`decimal`] reads numbers exactly
//! (busbar keeps every number as the digits it arrived with, from the
//! request body to the target column); [`delivery`] is a delivery's id
//! and states, which the store, the engine and telemetry share;
//! [`envelope`] is the published
//! event; [`jsonpath`] and [`value`] are the paths and values that
//! `compile` and `mapping` share. A module uses only those below it
//! (ARCHITECTURE.md, "Layers").
//!
//! `check`, `render` and the server all go through the same compile and
//! mapping code; the CLI in `main.rs` only parses arguments and prints.

#![forbid(unsafe_code)]

pub mod api;
pub mod check;
pub mod cli;
pub mod compile;
pub mod config;
pub mod console;
pub mod decimal;
pub mod delivery;
pub mod dev;
pub mod diagnostics;
pub mod engine;
pub mod envelope;
pub mod failpoint;
pub mod jsonpath;
pub mod lsp;
pub mod mapping;
pub mod reload;
pub mod render;
pub mod report;
pub mod serve;
pub mod store;
pub mod telemetry;
pub mod testing;
pub mod value;
