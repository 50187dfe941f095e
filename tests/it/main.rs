//! busbar's integration tests: one test binary, one module per feature.
//!
//! - `language`: the data-driven corpus of broken integration files in
//!   `tests/cases/` and the `check` / `render` command line.
//! - `robustness`: the loader and compiler never panic, whatever the input.
//! - `engine`, `crash`, `reload`: the delivery engine and live reload on
//!   SQLite and PostgreSQL (`support`: fresh databases per test).

mod crash;
mod engine;
mod language;
mod reload;
mod robustness;
mod support;
