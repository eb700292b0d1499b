//! The server at the protocol level, over a fake Assistant: what it asks for, what it answers,
//! debounce and cancellation, errors shown once, lazily resolved code actions.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tollgate_lsp::server::Backend;
use tollgate_lsp::{
    Assistant, AssistantError, AssistantStatus, CompletionAnswer, CompletionRequest, Intent, ReviewFinding, ReviewLines,
};
use tower::{Service, ServiceExt};
use tower_lsp_server::LspService;
use tower_lsp_server::jsonrpc::{Request, Response};

#[derive(Default)]
struct State {
    completions: Mutex<Vec<CompletionRequest>>,
    answers: Mutex<VecDeque<Result<String, AssistantError>>>,
    delay: Mutex<Duration>,
    prompts: Mutex<Vec<(String, BTreeMap<String, String>)>>,
}

#[derive(Clone, Default)]
struct Fake(Arc<State>);

impl Assistant for Fake {
    async fn complete(&self, req: CompletionRequest) -> Result<CompletionAnswer, AssistantError> {
        self.0.completions.lock().unwrap().push(req);
        let delay = *self.0.delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        let next = self.0.answers.lock().unwrap().pop_front().unwrap_or_else(|| Ok("x".into()));
        next.map(|text| CompletionAnswer { text, model: "fake/coder".into(), cache_hit: false, redactions: 1 })
    }

    async fn prompt(
        &self,
        name: &str,
        variables: BTreeMap<String, String>,
        _path: Option<String>,
        _repo: Option<String>,
    ) -> Result<String, AssistantError> {
        self.0.prompts.lock().unwrap().push((name.to_string(), variables));
        Ok("```rust\n/// Adds two numbers.\nfn add(a: u32, b: u32) -> u32 { a + b }\n```".into())
    }

    async fn review(&self, _lines: ReviewLines) -> Result<Vec<ReviewFinding>, AssistantError> {
        Ok(Vec::new())
    }

    async fn status(&self) -> Result<AssistantStatus, AssistantError> {
        Ok(AssistantStatus { reachable: true, route: Some("local".into()), ..Default::default() })
    }
}

struct Harness {
    service: LspService<Backend<Fake>>,
    fake: Fake,
    /// What the server sent the client: (method, params).
    sent: Arc<Mutex<Vec<(String, Value)>>>,
    next_id: i64,
}

const URI: &str = "file:///ws/src/lib.rs";

impl Harness {
    async fn start(utf8: bool) -> Self {
        let fake = Fake::default();
        let gw = fake.clone();
        let (service, socket) = LspService::build(|client| Backend::new(client, gw, Duration::from_millis(30)))
            .custom_method("textDocument/inlineCompletion", Backend::inline_completion)
            .finish();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let s2 = Arc::clone(&sent);
        tokio::spawn(async move {
            let mut socket = socket;
            while let Some(req) = socket.next().await {
                let (method, _, params) = req.into_parts();
                s2.lock().unwrap().push((method.to_string(), params.unwrap_or(Value::Null)));
            }
        });
        let mut h = Harness { service, fake, sent, next_id: 0 };
        let encodings = if utf8 { json!(["utf-8", "utf-16"]) } else { json!(["utf-16"]) };
        let init = h
            .request("initialize", json!({"capabilities": {"general": {"positionEncodings": encodings}}, "workspaceFolders": [{"uri": "file:///ws", "name": "ws"}]}))
            .await
            .unwrap();
        assert_eq!(init["capabilities"]["inlineCompletionProvider"], true);
        assert_eq!(init["capabilities"]["positionEncoding"], if utf8 { "utf-8" } else { "utf-16" });
        h.notify("initialized", json!({})).await;
        h
    }

    async fn request(&mut self, method: &'static str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let req = Request::build(method).params(params).id(self.next_id).finish();
        let resp: Response = self.service.ready().await.unwrap().call(req).await.unwrap().unwrap();
        let (_, result) = resp.into_parts();
        result.map_err(|e| serde_json::to_value(e).unwrap())
    }

    async fn notify(&mut self, method: &'static str, params: Value) {
        let req = Request::build(method).params(params).finish();
        assert!(self.service.ready().await.unwrap().call(req).await.unwrap().is_none());
    }

    async fn open(&mut self, text: &str) {
        self.notify(
            "textDocument/didOpen",
            json!({"textDocument": {"uri": URI, "languageId": "rust", "version": 1, "text": text}}),
        )
        .await;
    }

    fn inline(&mut self, line: u32, character: u32) -> impl std::future::Future<Output = Result<Value, Value>> + use<> {
        self.next_id += 1;
        let req = Request::build("textDocument/inlineCompletion")
            .params(json!({"textDocument": {"uri": URI}, "position": {"line": line, "character": character}, "context": {"triggerKind": 2}}))
            .id(self.next_id)
            .finish();
        let fut = self.service.call(req);
        async move {
            let resp: Response = fut.await.unwrap().unwrap();
            resp.into_parts().1.map_err(|e| serde_json::to_value(e).unwrap())
        }
    }

    fn sent(&self, method: &str) -> Vec<Value> {
        self.sent.lock().unwrap().iter().filter(|(m, _)| m == method).map(|(_, p)| p.clone()).collect()
    }
}

const RUST: &str = "use std::fmt;\n\nfn add(a: u32, b: u32) -> u32 {\n    \n}\n";

#[tokio::test]
async fn an_inline_completion_is_asked_with_context_and_cleaned_up() {
    let mut h = Harness::start(false).await;
    h.open(RUST).await;
    h.fake.0.answers.lock().unwrap().push_back(Ok("a + b\n}\nfn more() {}".into()));
    h.service.ready().await.unwrap();
    let result = h.inline(3, 4).await.unwrap();
    assert_eq!(result[0]["insertText"], "a + b");
    assert_eq!(result[0]["range"], json!({"start": {"line": 3, "character": 4}, "end": {"line": 3, "character": 4}}));
    let req = h.fake.0.completions.lock().unwrap()[0].clone();
    assert_eq!(req.path, "src/lib.rs");
    assert_eq!(req.repo.as_deref(), Some("/ws"));
    assert!(req.prefix.ends_with("fn add(a: u32, b: u32) -> u32 {\n    ") && req.suffix.starts_with("\n}"));
    // The whole small file fits the window, imports included: nothing repeated as a snippet.
    assert!(req.prefix.starts_with("use std::fmt;") && req.snippets.is_empty(), "{req:?}");
    assert_eq!(req.intent, Intent::Complete);
    // The status notification says who answered and what was masked.
    let mut status = h.sent("tollgate/status");
    for _ in 0..100 {
        if status.last().is_some_and(|s| !s["model"].is_null()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        status = h.sent("tollgate/status");
    }
    let last = status.last().unwrap();
    assert_eq!(
        (last["model"].as_str(), last["redactions"].as_u64(), last["reachable"].as_bool()),
        (Some("fake/coder"), Some(1), Some(true))
    );
}

#[tokio::test]
async fn edits_apply_incrementally_and_completion_falls_back_to_the_menu() {
    let mut h = Harness::start(true).await;
    h.open(RUST).await;
    h.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": URI, "version": 2}, "contentChanges": [
            {"range": {"start": {"line": 3, "character": 4}, "end": {"line": 3, "character": 4}}, "text": "let s = a"}]}),
    )
    .await;
    h.fake.0.answers.lock().unwrap().push_back(Ok(" + b;\n    s".into()));
    let result = h
        .request(
            "textDocument/completion",
            json!({"textDocument": {"uri": URI}, "position": {"line": 3, "character": 13}}),
        )
        .await
        .unwrap();
    assert_eq!(result[0]["textEdit"]["newText"], " + b;\n    s");
    assert_eq!(result[0]["label"], "+ b;");
    assert!(h.fake.0.completions.lock().unwrap()[0].prefix.ends_with("    let s = a"));
}

#[tokio::test]
async fn a_newer_request_supersedes_an_older_one_and_mid_word_asks_nothing() {
    let mut h = Harness::start(false).await;
    h.open(RUST).await;
    let first = h.inline(3, 4);
    let second = h.inline(3, 4);
    let (a, b) = tokio::join!(first, second);
    assert_eq!(a.unwrap(), Value::Null, "the older request gives up");
    assert_eq!(b.unwrap()[0]["insertText"], "x");
    assert_eq!(h.fake.0.completions.lock().unwrap().len(), 1, "only the newer one reached the assistant");

    // Mid-word: nothing is asked.
    let r = h.inline(2, 5).await.unwrap();
    assert_eq!(r, Value::Null);
    assert_eq!(h.fake.0.completions.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn cancel_request_ends_a_slow_completion() {
    let mut h = Harness::start(false).await;
    h.open(RUST).await;
    *h.fake.0.delay.lock().unwrap() = Duration::from_secs(30);
    let pending = h.inline(3, 4);
    let id = h.next_id;
    let cancel = Request::build("$/cancelRequest").params(json!({"id": id})).finish();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cancelled = h.service.ready().await.unwrap().call(cancel);
    let (resp, _) = tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(pending, cancelled) })
        .await
        .expect("cancel ended it");
    assert_eq!(resp.unwrap_err()["code"], -32800);
}

#[tokio::test]
async fn an_error_is_shown_once_not_on_every_keystroke() {
    let mut h = Harness::start(false).await;
    h.open(RUST).await;
    for _ in 0..3 {
        h.fake.0.answers.lock().unwrap().push_back(Err(AssistantError::Budget("budget \"daily\" is spent".into())));
        assert_eq!(h.inline(3, 4).await.unwrap(), Value::Null);
    }
    let shown = h.sent("window/showMessage");
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(shown[0]["message"].as_str().unwrap().contains("budget \"daily\" is spent"));
    // After a success, a new failure is shown again.
    assert_eq!(h.inline(3, 4).await.unwrap()[0]["insertText"], "x");
    h.fake.0.answers.lock().unwrap().push_back(Err(AssistantError::Budget("spent".into())));
    h.inline(3, 4).await.unwrap();
    assert_eq!(h.sent("window/showMessage").len(), 2);
}

#[tokio::test]
async fn code_actions_run_the_model_only_when_resolved() {
    let mut h = Harness::start(false).await;
    h.open(RUST).await;
    let range = json!({"start": {"line": 2, "character": 0}, "end": {"line": 4, "character": 1}});
    let diag = json!({"range": range, "message": "mismatched types", "source": "rustc"});
    let actions = h
        .request(
            "textDocument/codeAction",
            json!({"textDocument": {"uri": URI}, "range": range, "context": {"diagnostics": [diag]}}),
        )
        .await
        .unwrap();
    let titles: Vec<&str> = actions.as_array().unwrap().iter().filter_map(|a| a["title"].as_str()).collect();
    assert_eq!(
        titles,
        [
            "tollgate: Explain",
            "tollgate: Review selection",
            "tollgate: Generate tests",
            "tollgate: Generate docs",
            "tollgate: Fix this diagnostic"
        ]
    );
    assert!(h.fake.0.prompts.lock().unwrap().is_empty(), "listing actions ran a model");
    let docs = actions.as_array().unwrap().iter().find(|a| a["title"] == "tollgate: Generate docs").unwrap().clone();
    assert!(docs["edit"].is_null());
    let resolved = h.request("codeAction/resolve", docs).await.unwrap();
    let edit = &resolved["edit"]["changes"][URI][0];
    assert_eq!(edit["newText"], "/// Adds two numbers.\nfn add(a: u32, b: u32) -> u32 { a + b }\n");
    assert_eq!(edit["range"]["start"]["line"], 2);
    let fix =
        actions.as_array().unwrap().iter().find(|a| a["title"] == "tollgate: Fix this diagnostic").unwrap().clone();
    h.request("codeAction/resolve", fix).await.unwrap();
    let prompts = h.fake.0.prompts.lock().unwrap().clone();
    assert_eq!(prompts.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(), ["docs", "fix"]);
    assert_eq!(prompts[1].1["diagnostic"], "mismatched types");
    assert!(prompts[1].1["code"].starts_with("fn add("));
}
