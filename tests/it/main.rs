//! busbar's integration tests: one test binary, one module per feature.
//!
//! - `api`: the HTTP API over a real socket, on SQLite and PostgreSQL.
//! - `config_tests`: `busbar test` and `busbar check --database-url`.
//! - `console`: the operations console over HTTP (sessions, CSRF,
//!   organization scoping); `tests/browser.rs` drives it in Chromium.
//! - `language`: the data-driven corpus of broken integration files in
//!   `tests/cases/` and the `check` / `render` command line.
//! - `robustness`: the loader and compiler never panic, whatever the input.
//! - `engine`, `crash`, `reload`: the delivery engine and live reload on
//!   SQLite and PostgreSQL (`support`: fresh databases per test).

mod api;
mod config_tests;
mod console;
mod crash;
mod engine;
mod language;
mod reload;
mod robustness;
mod support;
