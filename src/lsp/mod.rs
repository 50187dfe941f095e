//! `busbar lsp`: a language server for integration files, over stdio.
//!
//! It owns no knowledge of the language of its own. Diagnostics are
//! `check`'s: [`workspace::diagnose`] compiles the directory with the
//! editor's buffers laid over the files on disk, on the diagnostics thread
//! ([`publish`]). Completion, hover, definition and code actions read the
//! cursor's place from the text ([`outline`]), and answer from what busbar
//! already knows: the integration schema's keys ([`keys`]), the event
//! contracts (`compile::contract`), the catalog (`check::catalog`: read
//! live from the database with `--database-url` ([`live`]), else from the
//! catalog file), the `as:` names of earlier steps, the template filters.
//!
//! The transport is rust-analyzer's `lsp-server`: synchronous, messages on
//! crossbeam channels. Requests are answered in order on this thread;
//! compiles and reads of the database run elsewhere. This module never
//! writes a file, nor to a database.

pub mod actions;
pub mod complete;
pub mod keys;
pub mod live;
pub mod navigate;
pub mod outline;
pub mod publish;
pub mod text;
pub mod workspace;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use lsp_server::{Connection, ErrorCode, Message, Notification, Request, Response};
use lsp_types::notification::{
    DidChangeTextDocument, DidChangeWatchedFiles, DidCloseTextDocument, DidOpenTextDocument,
    DidSaveTextDocument, Notification as _, ShowMessage,
};
use lsp_types::request::{
    CodeActionRequest, Completion, ExecuteCommand, GotoDefinition, HoverRequest, Request as _,
};
use lsp_types::{
    CodeActionProviderCapability, CompletionOptions, ExecuteCommandOptions,
    HoverProviderCapability, InitializeParams, InitializeResult, MessageType, OneOf,
    ServerCapabilities, ServerInfo, ShowMessageParams, TextDocumentSyncCapability,
    TextDocumentSyncKind,
};

use workspace::{Documents, LiveCatalogs, OpenDocument, Settings, directory_of, path_of};

/// The command that reads the catalog again (from the database with
/// `--database-url`, else the catalog file) and diagnoses again.
pub const REFRESH_COMMAND: &str = "busbar.refresh";

/// How the server was started (`busbar lsp`'s options).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The target database whose catalog is read live (read only), in
    /// place of the catalog file while it can be read.
    pub database_url: Option<String>,
}

/// Serves the protocol on standard input and output until the client
/// says `exit`.
pub fn run_stdio(options: &Options) -> Result<()> {
    let (connection, io_threads) = Connection::stdio();
    serve(&connection, options)?;
    drop(connection);
    io_threads.join().context("the stdio threads failed")?;
    Ok(())
}

/// What the server offers.
fn capabilities() -> ServerCapabilities {
    ServerCapabilities {
        text_document_sync: Some(TextDocumentSyncCapability::Kind(
            TextDocumentSyncKind::INCREMENTAL,
        )),
        completion_provider: Some(CompletionOptions {
            trigger_characters: Some(
                [".", "$", "|", " ", "{", ":"]
                    .iter()
                    .map(|c| (*c).to_owned())
                    .collect(),
            ),
            ..CompletionOptions::default()
        }),
        hover_provider: Some(HoverProviderCapability::Simple(true)),
        definition_provider: Some(OneOf::Left(true)),
        code_action_provider: Some(CodeActionProviderCapability::Simple(true)),
        execute_command_provider: Some(ExecuteCommandOptions {
            commands: vec![REFRESH_COMMAND.to_owned()],
            ..ExecuteCommandOptions::default()
        }),
        ..ServerCapabilities::default()
    }
}

/// Serves one client on `connection`: the handshake, then every message
/// until `shutdown` and `exit`.
pub fn serve(connection: &Connection, options: &Options) -> Result<()> {
    let (id, params) = connection.initialize_start()?;
    let params: InitializeParams =
        serde_json::from_value(params).context("the initialize request's parameters")?;
    let result = InitializeResult {
        capabilities: capabilities(),
        server_info: Some(ServerInfo {
            name: "busbar".to_owned(),
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        }),
    };
    connection.initialize_finish(id, serde_json::to_value(result)?)?;
    let settings = params
        .initialization_options
        .and_then(|options| serde_json::from_value::<Settings>(options).ok())
        .unwrap_or_default();
    let reader = match &options.database_url {
        Some(url) => {
            Some(live::Reader::spawn(url.clone()).context("cannot start the catalog thread")?)
        }
        None => None,
    };
    // Without a database, nothing ever arrives here.
    let live_results = reader
        .as_ref()
        .map_or_else(crossbeam_channel::never, |reader| reader.results.clone());
    let mut server = Server {
        out: connection.sender.clone(),
        settings,
        documents: Documents::new(),
        worker: publish::Worker::spawn(connection.sender.clone()),
        contracts: RefCell::default(),
        reader,
        live: Arc::default(),
        live_failed: BTreeSet::new(),
        asked: BTreeSet::new(),
    };
    loop {
        // The client's messages, and catalogs read from the database.
        let next = crossbeam_channel::select! {
            recv(connection.receiver) -> message => message.map(Next::Client),
            recv(live_results) -> catalog => catalog.map(Next::Catalog),
        };
        match next {
            Ok(Next::Client(Message::Request(request))) => {
                if connection.handle_shutdown(&request)? {
                    break;
                }
                server.request(request);
            }
            Ok(Next::Client(Message::Notification(notification))) => server.notify(notification),
            Ok(Next::Client(Message::Response(_))) => {}
            Ok(Next::Catalog(catalog)) => server.live_catalog(catalog),
            // The client went away (or, never, the catalog thread).
            Err(_) => break,
        }
    }
    server.worker.stop();
    Ok(())
}

/// What the message loop takes next.
enum Next {
    Client(Message),
    Catalog(live::LiveCatalog),
}

/// The server's state between messages.
struct Server {
    out: crossbeam_channel::Sender<Message>,
    settings: Settings,
    documents: Documents,
    worker: publish::Worker,
    /// Parsed contracts for completion, hover and definition (the
    /// diagnostics thread keeps its own).
    contracts: RefCell<workspace::ContractCache>,
    /// The thread reading the database's catalog (`--database-url`).
    reader: Option<live::Reader>,
    /// The catalogs it read, by directory (replaced, never changed in
    /// place: the diagnostics thread holds the one it was given).
    live: Arc<LiveCatalogs>,
    /// Directories whose last read failed (said once, not at every save).
    live_failed: BTreeSet<PathBuf>,
    /// Directories whose catalog was asked for at least once.
    asked: BTreeSet<PathBuf>,
}

impl Server {
    /// The integrations directories of `paths`.
    fn dirs_of<'p>(&self, paths: impl IntoIterator<Item = &'p PathBuf>) -> BTreeSet<PathBuf> {
        paths
            .into_iter()
            .filter_map(|path| directory_of(path, &self.settings))
            .collect()
    }

    /// Diagnoses the integrations directories of `paths`; for a change to
    /// anything else (a contract, a catalog file) or none, every directory
    /// with an open file.
    fn diagnose(&self, paths: &[PathBuf]) {
        let mut dirs = self.dirs_of(paths);
        if dirs.is_empty() {
            dirs = self.dirs_of(self.documents.keys());
        }
        self.diagnose_dirs(dirs);
    }

    fn diagnose_dirs(&self, dirs: BTreeSet<PathBuf>) {
        if dirs.is_empty() {
            return;
        }
        self.worker.submit(
            dirs,
            self.documents.clone(),
            self.settings.clone(),
            Arc::clone(&self.live),
        );
    }

    /// With `--database-url`, asks for the catalog of `dirs` (all the
    /// directories with an open file if `None`): read again if `force`,
    /// else only for a directory not read yet or whose steps now name
    /// other tables.
    fn read_catalog(&mut self, dirs: Option<BTreeSet<PathBuf>>, force: bool) {
        let Some(reader) = &self.reader else {
            return;
        };
        let dirs = dirs.unwrap_or_else(|| self.dirs_of(self.documents.keys()));
        if dirs.is_empty() {
            return;
        }
        self.asked.extend(dirs.iter().cloned());
        reader.read(live::Read {
            dirs,
            documents: self.documents.clone(),
            settings: self.settings.clone(),
            force,
        });
    }

    /// A catalog read from the database arrived: it replaces the catalog
    /// file of its directory (or, if the read failed, the file is used
    /// again), and the directory is diagnosed again.
    fn live_catalog(&mut self, catalog: live::LiveCatalog) {
        let Some(reader) = &self.reader else {
            return;
        };
        let mut live = (*self.live).clone();
        match catalog.outcome {
            Ok(tables) => {
                publish::log_as(
                    &self.out,
                    MessageType::INFO,
                    format!(
                        "read the catalog of {} table(s) for {} from {}",
                        tables.len(),
                        catalog.dir.display(),
                        reader.shown
                    ),
                );
                live.insert(catalog.dir.clone(), Arc::new(tables));
                self.live_failed.remove(&catalog.dir);
            }
            Err(problem) => {
                live.remove(&catalog.dir);
                let fallback = match self.settings.catalog_file(&catalog.dir) {
                    Some(file) => format!("the column checks use {} instead", file.display()),
                    None => "the column checks are off".to_owned(),
                };
                let message = format!(
                    "busbar: {problem}; {fallback} until `{REFRESH_COMMAND}` reads the database"
                );
                if catalog.forced || self.live_failed.insert(catalog.dir.clone()) {
                    let _ = self.out.send(Message::Notification(Notification::new(
                        ShowMessage::METHOD.to_owned(),
                        ShowMessageParams {
                            typ: MessageType::WARNING,
                            message: message.clone(),
                        },
                    )));
                }
                publish::log(&self.out, message);
            }
        }
        self.live = Arc::new(live);
        self.diagnose_dirs(BTreeSet::from([catalog.dir]));
    }

    fn notify(&mut self, notification: Notification) {
        match notification.method.as_str() {
            DidOpenTextDocument::METHOD => {
                let Ok(params) = notification
                    .extract::<lsp_types::DidOpenTextDocumentParams>(DidOpenTextDocument::METHOD)
                else {
                    return;
                };
                let Some(path) = path_of(&params.text_document.uri) else {
                    return;
                };
                self.documents.insert(
                    path.clone(),
                    Arc::new(OpenDocument {
                        text: params.text_document.text,
                        version: params.text_document.version,
                    }),
                );
                self.diagnose(std::slice::from_ref(&path));
                // A directory seen for the first time: its catalog is read.
                let new: BTreeSet<PathBuf> = self
                    .dirs_of([&path])
                    .into_iter()
                    .filter(|dir| !self.asked.contains(dir))
                    .collect();
                if !new.is_empty() {
                    self.read_catalog(Some(new), false);
                }
            }
            DidChangeTextDocument::METHOD => {
                let Ok(params) = notification.extract::<lsp_types::DidChangeTextDocumentParams>(
                    DidChangeTextDocument::METHOD,
                ) else {
                    return;
                };
                let Some(path) = path_of(&params.text_document.uri) else {
                    return;
                };
                let Some(document) = self.documents.get(&path) else {
                    return;
                };
                let mut text = document.text.clone();
                for change in params.content_changes {
                    text::apply_change(&mut text, change.range, &change.text);
                }
                self.documents.insert(
                    path.clone(),
                    Arc::new(OpenDocument {
                        text,
                        version: params.text_document.version,
                    }),
                );
                self.diagnose(&[path]);
            }
            DidCloseTextDocument::METHOD => {
                let Ok(params) = notification
                    .extract::<lsp_types::DidCloseTextDocumentParams>(DidCloseTextDocument::METHOD)
                else {
                    return;
                };
                if let Some(path) = path_of(&params.text_document.uri) {
                    self.documents.remove(&path);
                    // The file on disk is what counts again.
                    self.diagnose(&[path]);
                }
            }
            DidSaveTextDocument::METHOD | DidChangeWatchedFiles::METHOD => {
                self.diagnose(&[]);
                // A step may name a table the last read did not.
                self.read_catalog(None, false);
            }
            _ => {}
        }
    }

    fn request(&mut self, request: Request) {
        let id = request.id.clone();
        let response = match request.method.as_str() {
            Completion::METHOD => self.answer(request, |server, params| {
                let contracts = &mut server.contracts.borrow_mut();
                complete::complete(
                    &server.settings,
                    &server.documents,
                    &server.live,
                    contracts,
                    params,
                )
            }),
            HoverRequest::METHOD => self.answer(request, |server, params| {
                let contracts = &mut server.contracts.borrow_mut();
                navigate::hover(
                    &server.settings,
                    &server.documents,
                    &server.live,
                    contracts,
                    params,
                )
            }),
            GotoDefinition::METHOD => self.answer(request, |server, params| {
                let contracts = &mut server.contracts.borrow_mut();
                navigate::definition(
                    &server.settings,
                    &server.documents,
                    &server.live,
                    contracts,
                    params,
                )
            }),
            CodeActionRequest::METHOD => self.answer(request, |server, params| {
                actions::code_actions(&server.documents, params)
            }),
            ExecuteCommand::METHOD => {
                // The catalog file is read at every diagnosis; the
                // database's catalog is read again, and diagnosed with
                // when it arrives.
                self.diagnose(&[]);
                self.read_catalog(None, true);
                Response::new_ok(id, serde_json::Value::Null)
            }
            _ => Response::new_err(
                id,
                ErrorCode::MethodNotFound as i32,
                format!("busbar lsp does not handle {}", request.method),
            ),
        };
        let _ = self.out.send(Message::Response(response));
    }

    /// Decodes a request's parameters and answers with `handle`'s result.
    fn answer<P, R>(&self, request: Request, handle: impl FnOnce(&Server, P) -> R) -> Response
    where
        P: serde::de::DeserializeOwned,
        R: serde::Serialize,
    {
        match serde_json::from_value::<P>(request.params) {
            Ok(params) => Response::new_ok(request.id, handle(self, params)),
            Err(error) => Response::new_err(
                request.id,
                ErrorCode::InvalidParams as i32,
                error.to_string(),
            ),
        }
    }
}
