//! `busbar check` beyond the files: the checks that need the target
//! database ([`database`]), from a live database or from a catalog file
//! ([`catalog`]). The checks of files alone are the compiler's
//! ([`crate::compile::compile`]); this module adds what only the target
//! database's catalog can tell, after a successful compile, reading and
//! never writing.

pub mod catalog;
pub mod database;
