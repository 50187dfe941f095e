//! busbar's integration tests: one test binary, one module per feature.
//!
//! - `api`: the HTTP API over a real socket, on SQLite and PostgreSQL.
//! - `api_hardening`: what the API tells producers instead of ignoring
//!   (repeated ids and keys, `routed`, strict contracts) and its defences
//!   around request ids and keys (failed-authentication limit, dev key).
//! - `config_tests`: `busbar test` and `busbar check --database-url`.
//! - `console`: the operations console over HTTP (sessions, CSRF,
//!   organization scoping); `tests/browser.rs` drives it in Chromium.
//! - `console_pages`: what the console's pages list and do over HTTP
//!   (searches, event trees, dead letters and replays, blocked keys,
//!   integration states, redelivery, try an event, the live tail).
//! - `language`: the data-driven corpus of broken integration files in
//!   `tests/cases/` and the `check` / `render` command line.
//! - `lsp`: `busbar lsp` over stdio with a JSON-RPC client (diagnostics
//!   equal `check`'s, completion, hover, definition, quick fixes, bursts
//!   of edits), and in headless Neovim.
//! - `layers`: every module uses only the modules below it (the one
//!   list of the order, mirrored in ARCHITECTURE.md).
//! - `robustness`: the loader and compiler never panic, whatever the input.
//! - `envelope`: the OpenAPI document's `EventInput` and
//!   `Envelope::from_json` accept exactly the same events.
//! - `engine`, `crash`, `reload`: the delivery engine and live reload on
//!   SQLite and PostgreSQL (`support`: fresh databases per test).
//! - `ordering`: delivery v2's order per key under publishers, workers,
//!   random transient failures and killed processes; parked keys; the
//!   outbox's late commits; pause and resume.
//! - `redeliver`: redelivery by filter over the API and `busbar
//!   redeliver`: delivered, dead and skipped deliveries run again after a
//!   fix, in order per key; previews, request ids, organizations.
//! - `serve`: `busbar serve --dev` run in-process: an event over HTTP
//!   with the dev key, applied; a clean stop; configurations it refuses.
//! - `upgrade`: a database of the release before delivery v2 is migrated
//!   with its deliveries intact, and finished by the new engine.
//! - `values`: values that do not fit their column are refused, never
//!   truncated or rounded; numbers keep every digit.

mod api;
mod api_hardening;
mod cli;
mod config_tests;
mod console;
mod console_pages;
mod crash;
mod engine;
mod envelope;
mod language;
mod layers;
mod lsp;
mod ordering;
mod redeliver;
mod reload;
mod robustness;
mod serve;
mod support;
mod upgrade;
mod values;
