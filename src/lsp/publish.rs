//! Diagnostics as the user types: compiled on a thread of their own,
//! coalesced, and never published stale.
//!
//! Every change submits a [`Job`] with a new revision. The worker takes
//! the newest job waiting (and the directories of every job it skips),
//! compiles, and publishes only if no newer job arrived meanwhile;
//! otherwise it compiles again for the newer one. A burst of edits thus
//! costs one compile per gap in the burst, and the last thing published is
//! always the result of the last edit.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use lsp_server::{Message, Notification};
use lsp_types::notification::{LogMessage, Notification as _, PublishDiagnostics};
use lsp_types::{
    DiagnosticRelatedInformation, DiagnosticSeverity, Location, LogMessageParams, MessageType,
    NumberOrString, PublishDiagnosticsParams,
};
use serde_json::json;

use super::text;
use super::workspace::{self, Documents, LiveCatalogs, Settings, uri_of};
use crate::diagnostics::{Diagnostic, Severity};

/// A request to diagnose directories as the buffers stand.
#[derive(Debug)]
pub struct Job {
    revision: u64,
    dirs: BTreeSet<PathBuf>,
    documents: Documents,
    settings: Settings,
    /// The catalogs read from the database as they stood at submission.
    live: Arc<LiveCatalogs>,
}

/// The diagnostics thread.
pub struct Worker {
    jobs: Option<Sender<Job>>,
    latest: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the thread; it publishes through `out`.
    pub fn spawn(out: Sender<Message>) -> Worker {
        let (jobs, queue) = crossbeam_channel::unbounded();
        let latest = Arc::new(AtomicU64::new(0));
        let thread = {
            let latest = Arc::clone(&latest);
            std::thread::Builder::new()
                .name("busbar-lsp-diagnostics".into())
                .spawn(move || run(&queue, &latest, &out))
                .expect("spawn the diagnostics thread")
        };
        Worker {
            jobs: Some(jobs),
            latest,
            thread: Some(thread),
        }
    }

    /// Asks for the directories `dirs` to be diagnosed with `documents`.
    pub fn submit(
        &self,
        dirs: BTreeSet<PathBuf>,
        documents: Documents,
        settings: Settings,
        live: Arc<LiveCatalogs>,
    ) {
        let revision = self.latest.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(jobs) = &self.jobs {
            // The thread only ends when this sender is dropped.
            let _ = jobs.send(Job {
                revision,
                dirs,
                documents,
                settings,
                live,
            });
        }
    }

    /// Stops the thread once it has finished its current job.
    pub fn stop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(queue: &Receiver<Job>, latest: &AtomicU64, out: &Sender<Message>) {
    // Files published with problems, per directory: they are cleared when
    // their problems go.
    let mut published: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    let mut carried: BTreeSet<PathBuf> = BTreeSet::new();
    let mut caches = workspace::Caches::default();
    while let Ok(mut job) = queue.recv() {
        let mut dirs = std::mem::take(&mut carried);
        dirs.append(&mut job.dirs);
        while let Ok(mut newer) = queue.try_recv() {
            dirs.append(&mut newer.dirs);
            job = newer;
        }
        let results: Vec<_> = dirs
            .iter()
            .map(|dir| {
                let diagnosis =
                    workspace::diagnose(dir, &job.settings, &job.documents, &job.live, &mut caches);
                (dir, diagnosis)
            })
            .collect();
        if latest.load(Ordering::SeqCst) != job.revision {
            // A newer edit is queued: this result is already stale.
            carried = dirs;
            continue;
        }
        for (dir, result) in results {
            let previous = published.remove(dir).unwrap_or_default();
            let diagnosis = match result {
                Ok(diagnosis) => diagnosis,
                Err(error) => {
                    log(out, format!("cannot read {}: {error}", dir.display()));
                    continue;
                }
            };
            if let Some(problem) = &diagnosis.catalog_problem {
                log(out, problem.clone());
            }
            let mut by_file: BTreeMap<PathBuf, Vec<lsp_types::Diagnostic>> = BTreeMap::new();
            for diagnostic in &diagnosis.diagnostics {
                let converted = convert(diagnostic, &|path| {
                    diagnosis
                        .text_of(path)
                        .map(str::to_owned)
                        .or_else(|| std::fs::read_to_string(path).ok())
                        .unwrap_or_default()
                });
                by_file
                    .entry(diagnostic.file.clone())
                    .or_default()
                    .push(converted);
            }
            // Open files of the directory are always published (with their
            // version), clean ones too; so are files that were not clean.
            let open = job
                .documents
                .keys()
                .filter(|path| path.starts_with(dir) || diagnosis.text_of(path).is_some());
            let files: BTreeSet<PathBuf> = by_file
                .keys()
                .cloned()
                .chain(previous)
                .chain(open.cloned())
                .collect();
            let mut now = BTreeSet::new();
            for file in files {
                let diagnostics = by_file.remove(&file).unwrap_or_default();
                if !diagnostics.is_empty() {
                    now.insert(file.clone());
                }
                let params = PublishDiagnosticsParams {
                    uri: uri_of(&file),
                    diagnostics,
                    version: job.documents.get(&file).map(|d| d.version),
                };
                let _ = out.send(Message::Notification(Notification::new(
                    PublishDiagnostics::METHOD.to_owned(),
                    params,
                )));
            }
            published.insert(dir.clone(), now);
        }
    }
}

/// Writes `message` to the editor's log of the server (a warning).
pub fn log(out: &Sender<Message>, message: String) {
    log_as(out, MessageType::WARNING, message);
}

/// Writes `message` to the editor's log of the server.
pub fn log_as(out: &Sender<Message>, typ: MessageType, message: String) {
    let _ = out.send(Message::Notification(Notification::new(
        LogMessage::METHOD.to_owned(),
        LogMessageParams { typ, message },
    )));
}

/// A busbar diagnostic as the protocol's: the range of the word at its
/// position, its code, its help after the message (and in `data`, for
/// code actions), its related places.
pub fn convert(
    diagnostic: &Diagnostic,
    text_of: &dyn Fn(&Path) -> String,
) -> lsp_types::Diagnostic {
    let text = text_of(&diagnostic.file);
    let message = match &diagnostic.help {
        Some(help) => format!("{}\nhelp: {help}", diagnostic.message),
        None => diagnostic.message.clone(),
    };
    let related = diagnostic
        .related
        .iter()
        .map(|related| {
            let text = text_of(&related.file);
            DiagnosticRelatedInformation {
                location: Location::new(
                    uri_of(&related.file),
                    text::word_range(&text, related.position),
                ),
                message: related.message.clone(),
            }
        })
        .collect::<Vec<_>>();
    lsp_types::Diagnostic {
        range: text::word_range(&text, diagnostic.position),
        severity: Some(match diagnostic.severity {
            Severity::Error => DiagnosticSeverity::ERROR,
            Severity::Warning => DiagnosticSeverity::WARNING,
        }),
        code: Some(NumberOrString::String(diagnostic.code.as_str().to_owned())),
        source: Some("busbar".to_owned()),
        message,
        related_information: (!related.is_empty()).then_some(related),
        data: diagnostic.help.as_ref().map(|help| json!({ "help": help })),
        ..lsp_types::Diagnostic::default()
    }
}
