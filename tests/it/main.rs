//! busbar's integration tests: one test binary, one module per feature.
//!
//! - `language`: the data-driven corpus of broken integration files in
//!   `tests/cases/` and the `check` / `render` command line.
//! - `robustness`: the loader and compiler never panic, whatever the input.

mod language;
mod robustness;
