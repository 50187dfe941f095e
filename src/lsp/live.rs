//! The catalog read live from the target database, for `busbar lsp
//! --database-url`: what `busbar catalog` would print, read on a thread of
//! its own so that the message loop keeps answering while a database is
//! slow or unreachable.
//!
//! The server asks for a [`Read`] of its integrations directories when it
//! first sees one, when a file is saved (read again only if the tables the
//! steps name changed since the last read), and on `busbar.refresh`
//! (always read again). The thread reads the tables the directory's steps
//! name ([`catalog::tables_in`], with the open buffers) through
//! [`catalog::snapshot`], read-only, within [`READ_TIMEOUT`], and sends a
//! [`LiveCatalog`] back to the loop, which diagnoses again with it.
//!
//! Errors never hold the URL's password: they name the database by
//! [`redact`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::workspace::{self, Documents, Settings};
use crate::check::catalog;
use crate::check::database::Tables;
use crate::compile::ident::TableName;
use crate::store::redact;

/// How long one read of the catalog may take, connecting included.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A request to read the catalog of directories as the buffers stand.
#[derive(Debug)]
pub struct Read {
    pub dirs: BTreeSet<PathBuf>,
    pub documents: Documents,
    pub settings: Settings,
    /// Read even if the tables named are those of the last read
    /// (`busbar.refresh`: the database may have changed).
    pub force: bool,
}

/// What one read of a directory's catalog gave.
#[derive(Debug)]
pub struct LiveCatalog {
    pub dir: PathBuf,
    /// Whether it was asked for by `busbar.refresh`.
    pub forced: bool,
    /// The tables as the database describes them, or why they could not
    /// be read (the URL redacted).
    pub outcome: Result<Tables, String>,
}

/// The thread that reads catalogs, and where its results arrive.
pub struct Reader {
    requests: Sender<Read>,
    /// The results, one per directory read, for the message loop.
    pub results: Receiver<LiveCatalog>,
    /// The database, as it may be shown.
    pub shown: String,
    /// Keeps `results` connected even if the thread ended: the message
    /// loop stops when a channel it waits on disconnects.
    _results_open: Sender<LiveCatalog>,
}

impl Reader {
    /// Starts the thread for the database at `url`. It ends when the
    /// `Reader` is dropped (after the read it is doing, if any).
    pub fn spawn(url: String) -> std::io::Result<Reader> {
        let (requests, queue) = crossbeam_channel::unbounded();
        let (out, results) = crossbeam_channel::unbounded();
        let shown = redact(&url);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("busbar-lsp-catalog".into())
            .spawn({
                let out = out.clone();
                move || run(&runtime, &url, &queue, &out)
            })?;
        Ok(Reader {
            requests,
            results,
            shown,
            _results_open: out,
        })
    }

    /// Asks for the catalogs of `dirs`.
    pub fn read(&self, read: Read) {
        // The thread only ends when this sender is dropped.
        let _ = self.requests.send(read);
    }
}

fn run(
    runtime: &tokio::runtime::Runtime,
    url: &str,
    queue: &Receiver<Read>,
    out: &Sender<LiveCatalog>,
) {
    // The tables each directory's last read asked for, whether it
    // succeeded or not: a save that names no new table reads nothing.
    let mut asked: BTreeMap<PathBuf, Vec<TableName>> = BTreeMap::new();
    while let Ok(mut read) = queue.recv() {
        // Requests that queued up during a slow read are served by one.
        while let Ok(mut newer) = queue.try_recv() {
            newer.dirs.append(&mut read.dirs);
            newer.force |= read.force;
            read = newer;
        }
        for dir in &read.dirs {
            let Ok(config) = workspace::read_config(dir, &read.settings, &read.documents) else {
                continue;
            };
            let tables = catalog::tables_in(&config);
            if !read.force && asked.get(dir) == Some(&tables) {
                continue;
            }
            asked.insert(dir.clone(), tables.clone());
            let outcome = runtime.block_on(snapshot(url, &tables));
            let result = LiveCatalog {
                dir: dir.clone(),
                forced: read.force,
                outcome,
            };
            if out.send(result).is_err() {
                return;
            }
        }
    }
}

/// Reads the catalog of `tables`, within [`READ_TIMEOUT`].
async fn snapshot(url: &str, tables: &[TableName]) -> Result<Tables, String> {
    let shown = redact(url);
    match tokio::time::timeout(READ_TIMEOUT, catalog::snapshot(url, tables)).await {
        Ok(Ok(snapshot)) => Ok(snapshot.to_tables()),
        // An error may quote the URL it was given: never with its password.
        Ok(Err(error)) => Err(format!(
            "cannot read the catalog of {shown}: {}",
            error.to_string().replace(url, &shown)
        )),
        Err(_) => Err(format!(
            "cannot read the catalog of {shown}: no answer within {} s",
            READ_TIMEOUT.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_database_is_named_without_its_password() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let tables = [TableName::parse("hris.employees").unwrap()];
        for url in [
            "postgres://busbar:s3cret@127.0.0.1:1/busbar",
            "mysql://busbar:s3cret@127.0.0.1:1/busbar",
        ] {
            let error = runtime.block_on(snapshot(url, &tables)).unwrap_err();
            assert!(error.contains("busbar:***@127.0.0.1:1"), "{error}");
            assert!(!error.contains("s3cret"), "{error}");
        }
    }
}
