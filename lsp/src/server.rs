//! The LSP server over a [`Assistant`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tower_lsp_server::jsonrpc::{Error, Result};
use tower_lsp_server::lsp_types::notification::Notification;
use tower_lsp_server::lsp_types::*;
use tower_lsp_server::{Client, LanguageServer, LspService, Server, UriExt};

use crate::context::{self, Budget};
use crate::documents::{Document, Documents, Encoding};
use crate::{Assistant, AssistantError, AssistantStatus, CompletionRequest, ReviewFinding, ReviewLines, Severity};

/// `tollgate/status`: the route in use, budget left, redactions, whether the daemon answers.
pub enum StatusNotification {}

impl Notification for StatusNotification {
    type Params = AssistantStatus;
    const METHOD: &'static str = "tollgate/status";
}

/// How long typing must pause before a completion is asked for.
pub const DEBOUNCE: Duration = Duration::from_millis(75);

const CMD_EXPLAIN: &str = "tollgate.explain";
const CMD_REVIEW: &str = "tollgate.review";
const CMD_TESTS: &str = "tollgate.tests";

pub struct Backend<G: Assistant> {
    client: Client,
    assistant: Arc<G>,
    docs: RwLock<Documents>,
    encoding: Mutex<Encoding>,
    roots: Mutex<Vec<PathBuf>>,
    /// The newest completion request; an older one still waiting gives up.
    generation: AtomicU64,
    newer: Notify,
    debounce: Duration,
    /// The kind of the last error shown, so that each is shown once, not on every keystroke.
    shown_error: Mutex<Option<&'static str>>,
    status: Mutex<AssistantStatus>,
    show_document: AtomicBool,
    /// Review findings published per document.
    findings: Mutex<HashMap<Uri, Vec<ReviewFinding>>>,
}

/// The lines a command works on: the selection, or the function around an empty one.
struct Selection {
    code: String,
    language: String,
    path: String,
    repo: Option<String>,
    /// 1-based, inclusive.
    first: usize,
    last: usize,
}

/// What a lazily resolved code action carries until it is picked.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ActionData {
    kind: String,
    uri: Uri,
    range: Range,
    #[serde(default)]
    message: Option<String>,
}

impl<G: Assistant> Backend<G> {
    pub fn new(client: Client, assistant: G, debounce: Duration) -> Self {
        Self {
            client,
            assistant: Arc::new(assistant),
            docs: RwLock::default(),
            encoding: Mutex::new(Encoding::Utf16),
            roots: Mutex::default(),
            generation: AtomicU64::new(0),
            newer: Notify::new(),
            debounce,
            shown_error: Mutex::default(),
            status: Mutex::default(),
            show_document: AtomicBool::new(false),
            findings: Mutex::default(),
        }
    }

    fn enc(&self) -> Encoding {
        *self.encoding.lock().unwrap()
    }

    /// The path relative to its workspace folder, and the folder (for the project).
    fn path_of(&self, uri: &Uri) -> (String, Option<String>) {
        let Some(file) = uri.to_file_path() else { return (uri.path().to_string(), None) };
        let file = file.into_owned();
        for root in self.roots.lock().unwrap().iter() {
            if let Ok(rel) = file.strip_prefix(root) {
                return (rel.to_string_lossy().into_owned(), Some(root.to_string_lossy().into_owned()));
            }
        }
        let dir = file.parent().map(|p| p.to_string_lossy().into_owned());
        (file.to_string_lossy().into_owned(), dir)
    }

    async fn publish_status(&self) {
        let status = self.status.lock().unwrap().clone();
        self.client.send_notification::<StatusNotification>(status).await;
    }

    /// Shows an error once per kind; a success clears it.
    async fn report(&self, err: &AssistantError) {
        let first = {
            let mut shown = self.shown_error.lock().unwrap();
            let first = *shown != Some(err.kind());
            *shown = Some(err.kind());
            first
        };
        {
            let mut st = self.status.lock().unwrap();
            st.reachable = !matches!(err, AssistantError::Unreachable(_));
            st.message = Some(err.to_string());
        }
        if first {
            let typ =
                if matches!(err, AssistantError::Unreachable(_)) { MessageType::WARNING } else { MessageType::ERROR };
            self.client.show_message(typ, format!("tollgate: {err}")).await;
        }
        self.publish_status().await;
    }

    async fn succeeded(&self) {
        *self.shown_error.lock().unwrap() = None;
        let mut st = self.status.lock().unwrap();
        st.reachable = true;
        st.message = None;
    }

    /// One completion at `pos`, cleaned up; `None` when there is nothing to offer. Waits for
    /// typing to pause, and gives up when a newer request arrives.
    async fn complete_at(&self, uri: &Uri, pos: Position) -> Option<(String, Range)> {
        let me = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.newer.notify_waiters();
        let superseded = async {
            loop {
                let notified = self.newer.notified();
                if self.generation.load(Ordering::SeqCst) != me {
                    return;
                }
                notified.await;
            }
        };
        let work = async {
            tokio::time::sleep(self.debounce).await;
            let (req, lang, line_before, suffix_line, offset_pos) = {
                let docs = self.docs.read().unwrap();
                let doc = docs.docs.get(uri)?;
                let enc = self.enc();
                let offset = doc.offset(pos, enc);
                let others: Vec<(&str, &Document)> =
                    docs.docs.iter().filter(|(u, _)| *u != uri).map(|(u, d)| (u.path().as_str(), d)).collect();
                let ctx = context::build(doc, offset, &others, Budget::default())?;
                let (path, repo) = self.path_of(uri);
                let line_start = doc.text[..offset].rfind('\n').map_or(0, |i| i + 1);
                let req = CompletionRequest {
                    language: crate::syntax::language_name(&path),
                    path,
                    prefix: ctx.prefix,
                    suffix: ctx.suffix.clone(),
                    snippets: ctx.snippets,
                    intent: ctx.intent,
                    repo,
                };
                (req, doc.lang, doc.text[line_start..offset].to_string(), ctx.suffix, doc.position(offset, enc))
            };
            let answer = self.assistant.complete(req).await;
            Some((answer, lang, line_before, suffix_line, offset_pos))
        };
        let (answer, lang, line_before, suffix, at) = tokio::select! {
            r = work => r?,
            () = superseded => return None,
        };
        match answer {
            Ok(a) => {
                self.succeeded().await;
                {
                    let mut st = self.status.lock().unwrap();
                    st.model = Some(a.model.clone());
                    st.redactions += a.redactions;
                }
                self.publish_status().await;
                let text = crate::post::process(&a.text, &line_before, &suffix, lang)?;
                Some((text, Range { start: at, end: at }))
            }
            Err(e) => {
                self.report(&e).await;
                None
            }
        }
    }

    /// `textDocument/inlineCompletion` (LSP 3.18).
    pub async fn inline_completion(&self, params: InlineCompletionParams) -> Result<Option<InlineCompletionResponse>> {
        let uri = params.text_document_position.text_document.uri;
        let pos = params.text_document_position.position;
        Ok(self.complete_at(&uri, pos).await.map(|(text, range)| {
            InlineCompletionResponse::Array(vec![InlineCompletionItem {
                insert_text: text,
                filter_text: None,
                range: Some(range),
                command: None,
                insert_text_format: Some(InsertTextFormat::PLAIN_TEXT),
            }])
        }))
    }

    /// The selection's text and the document's language and path.
    fn selection(&self, uri: &Uri, range: Range) -> std::result::Result<Selection, Error> {
        let docs = self.docs.read().unwrap();
        let doc = docs.docs.get(uri).ok_or_else(|| Error::invalid_params("the document is not open"))?;
        let enc = self.enc();
        let (path, repo) = self.path_of(uri);
        let mut text = doc.slice(range, enc).to_string();
        let (mut first, mut last) = (range.start.line as usize + 1, range.end.line as usize + 1);
        if text.trim().is_empty() {
            // No selection: the enclosing function, or the line.
            // The document's tree is current: no second parse.
            let scope = doc.tree.as_ref().and_then(|t| crate::syntax::scope_lines(t, &doc.text, first, first));
            let (a, b) = scope.unwrap_or((first, first));
            text = doc.text.lines().skip(a - 1).take(b - a + 1).collect::<Vec<_>>().join("\n");
            (first, last) = (a, b);
        }
        Ok(Selection { code: text, language: crate::syntax::language_name(&path), path, repo, first, last })
    }

    async fn show_markdown(&self, title: &str, ext: &str, body: &str) {
        let file = std::env::temp_dir().join(format!("tollgate-{title}-{}.{ext}", std::process::id()));
        let written = std::fs::write(&file, body).is_ok();
        if written
            && self.show_document.load(Ordering::Relaxed)
            && let Some(uri) = Uri::from_file_path(&file)
        {
            let params = ShowDocumentParams { uri, external: Some(false), take_focus: Some(true), selection: None };
            if self.client.show_document(params).await.unwrap_or(false) {
                return;
            }
        }
        self.client.show_message(MessageType::INFO, body).await;
    }

    async fn run_prompt(
        &self,
        name: &str,
        uri: &Uri,
        range: Range,
        extra: &[(&str, String)],
    ) -> Result<Option<String>> {
        let Selection { code, language, path, repo, .. } = self.selection(uri, range)?;
        let mut vars = BTreeMap::from([
            ("code".to_string(), code),
            ("language".to_string(), language),
            ("path".to_string(), path.clone()),
        ]);
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        match self.assistant.prompt(name, vars, Some(path), repo).await {
            Ok(text) => {
                self.succeeded().await;
                Ok(Some(text))
            }
            Err(e) => {
                self.report(&e).await;
                Ok(None)
            }
        }
    }

    async fn review(&self, uri: Uri, range: Range) -> Result<()> {
        let Selection { path, repo, first, last, .. } = self.selection(&uri, range)?;
        let text = self.docs.read().unwrap().docs.get(&uri).map(|d| d.text.clone()).unwrap_or_default();
        let findings = match self.assistant.review(ReviewLines { path, text: text.clone(), first, last, repo }).await {
            Ok(f) => {
                self.succeeded().await;
                f
            }
            Err(e) => {
                self.report(&e).await;
                return Ok(());
            }
        };
        let diagnostics = findings.iter().map(|f| diagnostic(&text, f)).collect::<Vec<_>>();
        let n = diagnostics.len();
        self.findings.lock().unwrap().insert(uri.clone(), findings);
        self.client.publish_diagnostics(uri, diagnostics, None).await;
        self.client.show_message(MessageType::INFO, format!("tollgate review: {n} finding(s)")).await;
        Ok(())
    }
}

fn lsp_severity(s: Severity) -> DiagnosticSeverity {
    match s {
        Severity::Critical | Severity::High => DiagnosticSeverity::ERROR,
        Severity::Medium => DiagnosticSeverity::WARNING,
        Severity::Low => DiagnosticSeverity::INFORMATION,
        Severity::Info => DiagnosticSeverity::HINT,
    }
}

fn diagnostic(text: &str, f: &ReviewFinding) -> Diagnostic {
    let line = f.line.saturating_sub(1) as u32;
    let line_text = text.lines().nth(f.line.saturating_sub(1)).unwrap_or("");
    let indent = (line_text.len() - line_text.trim_start().len()) as u32;
    Diagnostic {
        range: Range {
            start: Position { line, character: indent },
            end: Position { line, character: line_text.encode_utf16().count() as u32 },
        },
        severity: Some(lsp_severity(f.severity)),
        code: Some(NumberOrString::String(f.category.clone())),
        source: Some("tollgate".into()),
        message: f.message.clone(),
        data: f.suggestion.as_ref().map(|s| json!({ "suggestion": s })),
        ..Default::default()
    }
}

/// Strips a Markdown fence around a model's code answer.
fn unfence(text: &str) -> String {
    let t = text.trim();
    match t.strip_prefix("```") {
        Some(rest) => {
            let body = rest.split_once('\n').map_or("", |(_, b)| b);
            body.rsplit_once("```").map_or(body, |(b, _)| b).trim_end().to_string()
        }
        None => t.to_string(),
    }
}

/// The whole lines a range covers.
fn whole_lines(range: Range) -> Range {
    Range {
        start: Position { line: range.start.line, character: 0 },
        end: Position { line: range.end.line + 1, character: 0 },
    }
}

impl<G: Assistant> LanguageServer for Backend<G> {
    async fn initialize(&self, params: InitializeParams) -> Result<InitializeResult> {
        let encodings =
            params.capabilities.general.as_ref().and_then(|g| g.position_encodings.clone()).unwrap_or_default();
        let encoding = if encodings.contains(&PositionEncodingKind::UTF8) {
            *self.encoding.lock().unwrap() = Encoding::Utf8;
            PositionEncodingKind::UTF8
        } else {
            PositionEncodingKind::UTF16
        };
        let show_document =
            params.capabilities.window.as_ref().and_then(|w| w.show_document.as_ref()).is_some_and(|s| s.support);
        self.show_document.store(show_document, Ordering::Relaxed);
        let mut roots: Vec<PathBuf> = params
            .workspace_folders
            .unwrap_or_default()
            .iter()
            .filter_map(|f| f.uri.to_file_path().map(|p| p.into_owned()))
            .collect();
        #[allow(deprecated)]
        if let Some(root) = params.root_uri.as_ref().and_then(|u| u.to_file_path()) {
            roots.push(root.into_owned());
        }
        *self.roots.lock().unwrap() = roots;
        Ok(InitializeResult {
            server_info: Some(ServerInfo { name: "tollgate".into(), version: Some(env!("CARGO_PKG_VERSION").into()) }),
            capabilities: ServerCapabilities {
                position_encoding: Some(encoding),
                text_document_sync: Some(TextDocumentSyncCapability::Options(TextDocumentSyncOptions {
                    open_close: Some(true),
                    change: Some(TextDocumentSyncKind::INCREMENTAL),
                    ..Default::default()
                })),
                inline_completion_provider: Some(OneOf::Left(true)),
                completion_provider: Some(CompletionOptions { resolve_provider: Some(false), ..Default::default() }),
                code_action_provider: Some(CodeActionProviderCapability::Options(CodeActionOptions {
                    code_action_kinds: Some(vec![
                        CodeActionKind::QUICKFIX,
                        CodeActionKind::REFACTOR_REWRITE,
                        CodeActionKind::EMPTY,
                    ]),
                    resolve_provider: Some(true),
                    ..Default::default()
                })),
                execute_command_provider: Some(ExecuteCommandOptions {
                    commands: vec![CMD_EXPLAIN.into(), CMD_REVIEW.into(), CMD_TESTS.into()],
                    ..Default::default()
                }),
                ..Default::default()
            },
            offset_encoding: None,
        })
    }

    async fn initialized(&self, _: InitializedParams) {
        let status = self.assistant.status().await;
        match status {
            Ok(s) => {
                *self.status.lock().unwrap() = s;
                self.publish_status().await;
            }
            Err(e) => self.report(&e).await,
        }
    }

    async fn shutdown(&self) -> Result<()> {
        Ok(())
    }

    async fn did_open(&self, params: DidOpenTextDocumentParams) {
        let doc = params.text_document;
        let (path, _) = self.path_of(&doc.uri);
        self.docs.write().unwrap().docs.insert(doc.uri, Document::new(doc.text, doc.version, &path));
    }

    async fn did_change(&self, params: DidChangeTextDocumentParams) {
        let enc = self.enc();
        let applied = self.docs.write().unwrap().change(
            &params.text_document.uri,
            params.text_document.version,
            &params.content_changes,
            enc,
        );
        if !applied {
            tracing::debug!(version = params.text_document.version, "a change out of order was ignored");
        }
    }

    async fn did_close(&self, params: DidCloseTextDocumentParams) {
        self.docs.write().unwrap().docs.remove(&params.text_document.uri);
        self.findings.lock().unwrap().remove(&params.text_document.uri);
    }

    async fn completion(&self, params: CompletionParams) -> Result<Option<CompletionResponse>> {
        let uri = params.text_document_position.text_document.uri;
        let pos = params.text_document_position.position;
        Ok(self.complete_at(&uri, pos).await.map(|(text, range)| {
            let label = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
            CompletionResponse::Array(vec![CompletionItem {
                label,
                kind: Some(CompletionItemKind::TEXT),
                detail: Some("tollgate".into()),
                text_edit: Some(CompletionTextEdit::Edit(TextEdit { range, new_text: text })),
                ..Default::default()
            }])
        }))
    }

    async fn code_action(&self, params: CodeActionParams) -> Result<Option<CodeActionResponse>> {
        let uri = params.text_document.uri;
        let range = params.range;
        let mut actions: Vec<CodeActionOrCommand> = Vec::new();
        let command = |title: &str, cmd: &str| {
            CodeActionOrCommand::CodeAction(CodeAction {
                title: format!("tollgate: {title}"),
                kind: Some(CodeActionKind::EMPTY),
                command: Some(Command {
                    title: title.into(),
                    command: cmd.into(),
                    arguments: Some(vec![json!(uri), json!(range)]),
                }),
                ..Default::default()
            })
        };
        actions.push(command("Explain", CMD_EXPLAIN));
        actions.push(command("Review selection", CMD_REVIEW));
        actions.push(command("Generate tests", CMD_TESTS));
        let lazy =
            |title: &str, kind: &str, range: Range, message: Option<String>, diagnostics: Option<Vec<Diagnostic>>| {
                let data = ActionData { kind: kind.into(), uri: uri.clone(), range, message };
                CodeActionOrCommand::CodeAction(CodeAction {
                    title: format!("tollgate: {title}"),
                    kind: Some(if diagnostics.is_some() {
                        CodeActionKind::QUICKFIX
                    } else {
                        CodeActionKind::REFACTOR_REWRITE
                    }),
                    diagnostics,
                    data: serde_json::to_value(data).ok(),
                    ..Default::default()
                })
            };
        actions.push(lazy("Generate docs", "docs", range, None, None));
        for d in &params.context.diagnostics {
            if d.source.as_deref() == Some("tollgate") {
                if let Some(s) = d.data.as_ref().and_then(|v| v["suggestion"].as_str()) {
                    let line = d.range.start.line;
                    let edit = TextEdit {
                        range: whole_lines(Range {
                            start: Position { line, character: 0 },
                            end: Position { line, character: 0 },
                        }),
                        new_text: format!("{s}\n"),
                    };
                    actions.push(CodeActionOrCommand::CodeAction(CodeAction {
                        title: "tollgate: Apply the suggested fix".into(),
                        kind: Some(CodeActionKind::QUICKFIX),
                        diagnostics: Some(vec![d.clone()]),
                        edit: Some(WorkspaceEdit {
                            changes: Some(HashMap::from([(uri.clone(), vec![edit])])),
                            ..Default::default()
                        }),
                        is_preferred: Some(true),
                        ..Default::default()
                    }));
                }
                continue;
            }
            actions.push(lazy("Fix this diagnostic", "fix", d.range, Some(d.message.clone()), Some(vec![d.clone()])));
        }
        Ok(Some(actions))
    }

    async fn code_action_resolve(&self, mut action: CodeAction) -> Result<CodeAction> {
        let Some(data) = action.data.clone().and_then(|d| serde_json::from_value::<ActionData>(d).ok()) else {
            return Ok(action);
        };
        let range = whole_lines(data.range);
        let answer = match data.kind.as_str() {
            "docs" => self.run_prompt("docs", &data.uri, range, &[]).await?,
            "fix" => {
                self.run_prompt("fix", &data.uri, range, &[("diagnostic", data.message.clone().unwrap_or_default())])
                    .await?
            }
            _ => None,
        };
        if let Some(text) = answer {
            let edit = TextEdit { range, new_text: format!("{}\n", unfence(&text)) };
            action.edit =
                Some(WorkspaceEdit { changes: Some(HashMap::from([(data.uri, vec![edit])])), ..Default::default() });
        }
        Ok(action)
    }

    async fn execute_command(&self, params: ExecuteCommandParams) -> Result<Option<LSPAny>> {
        let args = params.arguments;
        let (Some(uri), Some(range)) = (
            args.first().and_then(|v| serde_json::from_value::<Uri>(v.clone()).ok()),
            args.get(1).and_then(|v| serde_json::from_value::<Range>(v.clone()).ok()),
        ) else {
            return Err(Error::invalid_params("expected [uri, range]"));
        };
        match params.command.as_str() {
            CMD_EXPLAIN => {
                if let Some(text) = self.run_prompt("explain", &uri, range, &[]).await? {
                    self.show_markdown("explanation", "md", &text).await;
                    return Ok(Some(Value::String(text)));
                }
            }
            CMD_TESTS => {
                if let Some(text) = self.run_prompt("tests", &uri, range, &[]).await? {
                    let ext = uri.path().as_str().rsplit_once('.').map_or("txt", |(_, e)| e).to_string();
                    self.show_markdown("tests", &ext, &unfence(&text)).await;
                    return Ok(Some(Value::String(text)));
                }
            }
            CMD_REVIEW => self.review(uri, range).await?,
            other => return Err(Error::invalid_params(format!("unknown command {other}"))),
        }
        Ok(None)
    }
}

/// Serves LSP on stdin/stdout until the client exits.
pub async fn serve_stdio<G: Assistant>(assistant: G) {
    let (service, socket) = LspService::build(|client| Backend::new(client, assistant, DEBOUNCE))
        .custom_method("textDocument/inlineCompletion", Backend::inline_completion)
        .finish();
    // The editor's messages are checked first (a bad one is answered, not fatal), and the answers
    // to bad ones join the server's own output between whole messages.
    let (to_server, from_editor) = tokio::io::duplex(64 * 1024);
    let (to_editor, from_server) = tokio::io::duplex(64 * 1024);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let input = {
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::frames::repair(tokio::io::stdin(), to_server, tx).await {
                tracing::warn!(error = %e, "reading the editor's messages failed");
            }
        })
    };
    let output = tokio::spawn(crate::frames::messages(from_server, tx));
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut stdout = tokio::io::stdout();
        while let Some(message) = rx.recv().await {
            if stdout.write_all(&message).await.and(stdout.flush().await).is_err() {
                break;
            }
        }
    });
    Server::new(from_editor, to_editor, socket).concurrency_level(64).serve(service).await;
    // The server is done: its last answers go out, then the rest stops.
    let _ = output.await;
    input.abort();
    let _ = input.await;
    let _ = writer.await;
}
