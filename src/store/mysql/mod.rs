//! Target tables in a MariaDB or MySQL database (issue 17: products that
//! own their databases).
//!
//! busbar's own tables (`integrations.*`) never live here: this module is
//! only what a target executor needs on a MariaDB connection, so it stays
//! apart from [`super::DbTx`], [`super::Dialect`] and `on_tx!`, whose
//! queries must compile for busbar's own databases only.
//!
//! - [`session`]: the settings every connection gets — strict `sql_mode`
//!   (a value that does not fit is an error, never truncated), UTC,
//!   `utf8mb4`, `READ COMMITTED` — through [`connect_options`] and
//!   [`SESSION_SETUP`].
//! - [`catalog`]: a table's columns from `information_schema`, read into
//!   busbar's [`super::catalog::TableInfo`] (with
//!   [`super::catalog::Storage::MySql`] for what MariaDB adds: unsigned
//!   integers, character sets, case-insensitive collations), plus the
//!   primary key.
//! - [`convert`]: JSON → [`convert::MySqlValue`], with the rule of
//!   [`super::convert`] (nothing silently changed) and MariaDB's own traps.
//! - [`sql`]: the statements of `find`, `upsert`, `update` and `delete`,
//!   names through [`crate::compile::ident::backquote`], values bound.
//! - [`target`]: [`target::MySqlTargetExecutor`], the engine's
//!   [`crate::mapping::Executor`] on a MariaDB transaction.
//! - [`batch`]: a lockstep batch's finds and upserts on a MariaDB
//!   transaction, set-based ([`super::batch`] gathers them).
//!
//! docs/DATABASES.md, "MariaDB and MySQL targets", says what each type and
//! trap becomes.

pub mod batch;
pub mod catalog;
pub mod convert;
pub mod session;
pub mod sql;
pub mod target;

pub use session::{SESSION_SETUP, connect_options, pool, setup};
