//! `busbar test`: configuration tested like code.
//!
//! A config test file (`*.test.yaml`, anywhere under the integrations
//! directory; `tests/` is the convention) lists cases: rows that exist
//! beforehand, events to publish, and what must hold afterwards: rows in
//! tables, events emitted, deliveries skipped or dead with a reason. Each
//! case runs through the real engine on a throwaway database of its own.
//!
//! - [`file`]: the format (`schemas/test.schema.json`), read with positions;
//! - [`run`]: finding, setting up and running cases;
//! - [`expect`]: comparing expected with actual, pure;
//! - [`report`]: text, GitHub annotations and JUnit XML.
//!
//! The guide is `docs/TESTING.md`.

pub mod expect;
pub mod file;
pub mod report;
pub mod run;

pub use run::{CaseReport, Progress, SuiteReport, TestOptions, TestRunError, run};
