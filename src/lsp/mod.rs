//! `busbar lsp`: a language server for integration files, over stdio.
//!
//! It owns no knowledge of the language of its own. Diagnostics are
//! `check`'s: [`workspace::diagnose`] compiles the directory with the
//! editor's buffers laid over the files on disk, on the diagnostics thread
//! ([`publish`]). Completion, hover, definition and code actions read the
//! cursor's place from the text ([`outline`]), and answer from what busbar
//! already knows: the integration schema's keys ([`keys`]), the event
//! contracts (`compile::contract`), the catalog file (`check::catalog`),
//! the `as:` names of earlier steps, the template filters.
//!
//! The transport is rust-analyzer's `lsp-server`: synchronous, messages on
//! crossbeam channels. Requests are answered in order on this thread;
//! only compiles run elsewhere. This module never writes a file.

pub mod actions;
pub mod complete;
pub mod keys;
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
    DidSaveTextDocument, Notification as _,
};
use lsp_types::request::{
    CodeActionRequest, Completion, ExecuteCommand, GotoDefinition, HoverRequest, Request as _,
};
use lsp_types::{
    CodeActionProviderCapability, CompletionOptions, ExecuteCommandOptions,
    HoverProviderCapability, InitializeParams, InitializeResult, OneOf, ServerCapabilities,
    ServerInfo, TextDocumentSyncCapability, TextDocumentSyncKind,
};

use workspace::{Documents, OpenDocument, Settings, directory_of, path_of};

/// The command that re-reads the catalog file and diagnoses again.
pub const REFRESH_COMMAND: &str = "busbar.refresh";

/// Serves the protocol on standard input and output until the client
/// says `exit`.
pub fn run_stdio() -> Result<()> {
    let (connection, io_threads) = Connection::stdio();
    serve(&connection)?;
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
pub fn serve(connection: &Connection) -> Result<()> {
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
    let mut server = Server {
        out: connection.sender.clone(),
        settings,
        documents: Documents::new(),
        worker: publish::Worker::spawn(connection.sender.clone()),
        contracts: RefCell::default(),
    };
    for message in &connection.receiver {
        match message {
            Message::Request(request) => {
                if connection.handle_shutdown(&request)? {
                    break;
                }
                server.request(request);
            }
            Message::Notification(notification) => server.notify(notification),
            Message::Response(_) => {}
        }
    }
    server.worker.stop();
    Ok(())
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
}

impl Server {
    /// Diagnoses the integrations directories of `paths`; for a change to
    /// anything else (a contract, a catalog file) or none, every directory
    /// with an open file.
    fn diagnose(&self, paths: &[PathBuf]) {
        let dirs_of = |paths: &mut dyn Iterator<Item = &PathBuf>| -> BTreeSet<PathBuf> {
            paths
                .filter_map(|path| directory_of(path, &self.settings))
                .collect()
        };
        let mut dirs = dirs_of(&mut paths.iter());
        if dirs.is_empty() {
            dirs = dirs_of(&mut self.documents.keys());
        }
        if dirs.is_empty() {
            return;
        }
        self.worker
            .submit(dirs, self.documents.clone(), self.settings.clone());
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
                self.diagnose(&[path]);
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
            DidSaveTextDocument::METHOD | DidChangeWatchedFiles::METHOD => self.diagnose(&[]),
            _ => {}
        }
    }

    fn request(&mut self, request: Request) {
        let id = request.id.clone();
        let response = match request.method.as_str() {
            Completion::METHOD => self.answer(request, |server, params| {
                let contracts = &mut server.contracts.borrow_mut();
                complete::complete(&server.settings, &server.documents, contracts, params)
            }),
            HoverRequest::METHOD => self.answer(request, |server, params| {
                let contracts = &mut server.contracts.borrow_mut();
                navigate::hover(&server.settings, &server.documents, contracts, params)
            }),
            GotoDefinition::METHOD => self.answer(request, |server, params| {
                let contracts = &mut server.contracts.borrow_mut();
                navigate::definition(&server.settings, &server.documents, contracts, params)
            }),
            CodeActionRequest::METHOD => self.answer(request, |server, params| {
                actions::code_actions(&server.documents, params)
            }),
            ExecuteCommand::METHOD => {
                self.diagnose(&[]);
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
