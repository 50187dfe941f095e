//! busbar's integration tests: one test binary, one module per feature.
//!
//! - `api`: the HTTP API over a real socket, on SQLite and PostgreSQL.
//! - `api_hardening`: what the API tells producers instead of ignoring
//!   (repeated ids and keys, `routed`, strict contracts) and its defences
//!   around request ids and keys (failed-authentication limit, dev key).
//! - `chaos`: issue 16's chaos test: publishers, outbox writers of random
//!   length and isolation, another database's writes, killed processes,
//!   `order_by` switched by reload, pauses; every event once, in order.
//! - `config_tests`: `busbar test` and `busbar check --database-url`.
//! - `console`: the operations console over HTTP (sessions, CSRF,
//!   organization scoping); `tests/browser.rs` drives it in Chromium.
//! - `console_pages`: what the console's pages list and do over HTTP
//!   (searches, event trees, dead letters and replays, blocked keys,
//!   integration states, redelivery, try an event, the live tail).
//! - `language`: the data-driven corpus of broken integration files in
//!   `tests/cases/` and the `check` / `render` command line.
//! - `elsewhere`: delivery into products' own databases (issue 17), a
//!   second PostgreSQL database and MariaDB: `kill -9` and a crash between
//!   the target's commit and busbar's, exactly once by audit triggers.
//! - `example_separate`: `examples/separate-databases/` passes `check`,
//!   and its walk-through lands an event in nexus's PostgreSQL database and
//!   paylinq's MariaDB one.
//! - `mariadb`: MariaDB/MySQL target tables (issue 17) on the MariaDB of
//!   `TEST_MARIADB_URL`: the strict session, the catalog, every type trap,
//!   `find`/`upsert`/`update`/`delete`, case-insensitive keys.
//! - `lsp`: `busbar lsp` over stdio with a JSON-RPC client (diagnostics
//!   equal `check`'s, completion, hover, definition, quick fixes, bursts
//!   of edits), and in headless Neovim.
//! - `layers`: every module uses only the modules below it (the one
//!   list of the order, mirrored in ARCHITECTURE.md).
//! - `robustness`: the loader and compiler never panic, whatever the input.
//! - `errors`: database errors in dead letters say what happened in the
//!   operator's words first (trigger and constraint messages, tables,
//!   columns), then the database's code.
//! - `envelope`: the OpenAPI document's `EventInput` and
//!   `Envelope::from_json` accept exactly the same events.
//! - `engine`, `crash`, `reload`: the delivery engine and live reload on
//!   SQLite and PostgreSQL (`support`: fresh databases per test).
//! - `ordering`: delivery v2's order per key under publishers, workers,
//!   random transient failures and killed processes; parked keys; the
//!   outbox's late commits; pause and resume.
//! - `outbox_sources`: outbox sources in other PostgreSQL databases
//!   (issue 17): rows a product commits into `busbar_outbox.events` are
//!   moved into the log once, a late commit is not passed over, invalid
//!   rows are rejected with their reason, a crash between the commits
//!   duplicates nothing.
//! - `partitioning`: a change of `order_by` with a backlog, by reload:
//!   every event applied once, in order per key (issue 16).
//! - `redeliver`: redelivery by filter over the API and `busbar
//!   redeliver`: delivered, dead and skipped deliveries run again after a
//!   fix, in order per key; previews, request ids, organizations.
//! - `retention`: `busbar prune` deletes old events nothing needs, and
//!   keeps those a lane has not passed or whose delivery is open or dead.
//! - `monitoring`: `/metrics` (lag, backlog, states; `promtool check
//!   metrics`), docs/METRICS.md, the alert rules and the dashboard held to
//!   it, and a real Prometheus firing the lag alert.
//! - `serve`: `busbar serve --dev` run in-process: an event over HTTP
//!   with the dev key, applied; a clean stop; configurations it refuses.
//! - `upgrade`: a database of the release before delivery v2 is migrated
//!   with its deliveries intact, and finished by the new engine.
//! - `values`: values that do not fit their column are refused, never
//!   truncated or rounded; numbers keep every digit.
//! - `visibility`: ticks (issue 16): a transaction open elsewhere, a
//!   `repeatable read` default, transaction ids past 2^32 and an idle
//!   server neither lose, repeat nor stall events.

mod api;
mod api_hardening;
mod chaos;
mod cli;
mod config_tests;
mod console;
mod console_pages;
mod crash;
mod elsewhere;
mod engine;
mod envelope;
mod errors;
mod example_separate;
mod language;
mod layers;
mod lsp;
mod mariadb;
mod monitoring;
mod ordering;
mod outbox_sources;
mod partitioning;
mod redeliver;
mod reload;
mod retention;
mod robustness;
mod serve;
mod support;
mod upgrade;
mod values;
mod visibility;
