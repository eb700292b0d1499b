//! A fake of the cloud providers' APIs, one server speaking all four documented wire formats on
//! their own paths:
//!
//! - OpenAI: `POST /v1/chat/completions`, `POST /v1/completions` (SSE with `[DONE]`, usage chunk on
//!   `stream_options.include_usage`, `x-ratelimit-*` headers, `{"error": {...}}` bodies)
//! - OpenAI Responses: `POST /v1/responses` (its typed event sequence with `sequence_number`,
//!   `function_call` items, `response.completed` with usage)
//! - Anthropic: `POST /v1/messages` (its event sequence with `ping`, `anthropic-ratelimit-*`
//!   headers, `{"type":"error","error":{...}}` bodies, `anthropic-version` required; prompt-cache
//!   writes and reads reported when scripted) and `POST /v1/messages/count_tokens`
//! - Gemini: `POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent?alt=sse`
//!   (`{"error":{"code","message","status"}}` bodies)
//! - Ollama: `POST /api/chat`, `POST /api/generate` (NDJSON streams, `{"error": "..."}` bodies)
//!
//! Tests script what the next requests get (an error status with Retry-After, latency, a hang, a
//! stream cut or stalled after N events, a tool call) through `POST /_fake/script`, and read what
//! reached the provider through `GET /_fake/requests`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// What the fake does with one request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Behaviour {
    /// Answer with this error status and the format's documented error body.
    pub status: Option<u16>,
    /// The Retry-After header sent with an error (seconds).
    pub retry_after: Option<String>,
    /// Wait before the response headers.
    pub delay_ms: u64,
    /// Never answer.
    pub hang: bool,
    /// Streams: send this many events, then drop the connection mid-body.
    pub cut_after: Option<usize>,
    /// Streams: send this many events, then go silent without closing.
    pub stall_after: Option<usize>,
    /// Wait between streamed events.
    pub chunk_delay_ms: u64,
    /// The reply text (default: an echo of the last user message).
    pub text: Option<String>,
    /// Reply with a call of this tool, with these arguments, instead of text.
    pub tool_call: Option<(String, Value)>,
    /// Prompt tokens reported as read from the provider's cache.
    pub cached_tokens: u64,
    /// Prompt tokens reported as written to the provider's cache (Anthropic).
    pub cache_write_tokens: u64,
    /// Streams: split the text into chunks of this many characters instead of words.
    pub chunk_chars: Option<usize>,
    /// Answer 307 pointing at this base URL (the request's path and query kept), as a provider
    /// (or anyone on the path to it) may.
    pub redirect_to: Option<String>,
    /// Report this many output tokens, whatever was written (a provider's figures are untrusted).
    pub output_tokens: Option<u64>,
    /// OpenAI format: report no usage at all, as some compatible servers do.
    pub no_usage: bool,
}

/// The signature of the fake's thinking blocks (opaque, as Anthropic's are).
pub const FAKE_SIGNATURE: &str = "EqQBCkgIARABGAIiQFakeSignatureOfTheThinkingBlock0000000000000000==";

/// One request as it reached the fake.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recorded {
    pub path: String,
    /// The credential the caller sent, from whichever header its format uses.
    pub key: Option<String>,
    pub anthropic_version: Option<String>,
    /// The version, beta and client headers that reached the fake (names in lower case).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    pub query: Option<String>,
    pub body: Value,
}

/// The request headers a fake records: what tests check was forwarded or not.
const RECORDED_HEADERS: &[&str] =
    &["anthropic-beta", "anthropic-version", "openai-beta", "user-agent", "x-app", "authorization", "x-api-key"];

#[derive(Default)]
pub struct FakeState {
    script: Mutex<VecDeque<Behaviour>>,
    requests: Mutex<Vec<Recorded>>,
}

impl FakeState {
    fn next(&self) -> Behaviour {
        self.script.lock().unwrap().pop_front().unwrap_or_default()
    }
}

pub struct FakeProvider {
    pub addr: SocketAddr,
    pub state: Arc<FakeState>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeProvider {
    /// Starts the fake on a free loopback port.
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    pub async fn start_on(port: u16) -> Self {
        let state = Arc::new(FakeState::default());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind the fake provider");
        let addr = listener.local_addr().unwrap();
        let app = router(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues behaviours for the next requests, in order; after them, requests get the default.
    pub fn script(&self, behaviours: impl IntoIterator<Item = Behaviour>) {
        self.state.script.lock().unwrap().extend(behaviours);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn router(state: Arc<FakeState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai_chat))
        .route("/v1/completions", post(openai_chat))
        .route("/v1/messages", post(anthropic_messages))
        .route("/v1/messages/count_tokens", post(anthropic_count_tokens))
        .route("/v1/responses", post(openai_responses))
        .route("/v1/embeddings", post(openai_embeddings))
        .route("/api/embed", post(ollama_embed))
        .route("/v1beta/models/{call}", post(gemini))
        .route("/api/chat", post(ollama))
        .route("/api/generate", post(ollama))
        .route("/api/tags", get(ollama_tags))
        .route("/_fake/script", post(script))
        .route("/_fake/requests", get(requests).delete(clear_requests))
        .with_state(state)
}

/// Ollama's list of local models (`GET /api/tags`).
async fn ollama_tags() -> axum::Json<Value> {
    axum::Json(json!({"models": [{
        "name": "qwen-local:latest", "model": "qwen-local:latest", "modified_at": "2026-11-01T00:00:00Z",
        "size": 986061892, "digest": "a".repeat(64),
        "details": {"format": "gguf", "family": "qwen2", "parameter_size": "1.5B", "quantization_level": "Q4_K_M"}
    }]}))
}

async fn script(State(state): State<Arc<FakeState>>, axum::Json(behaviours): axum::Json<Vec<Behaviour>>) -> StatusCode {
    state.script.lock().unwrap().extend(behaviours);
    StatusCode::NO_CONTENT
}

async fn requests(State(state): State<Arc<FakeState>>) -> axum::Json<Vec<Recorded>> {
    axum::Json(state.requests.lock().unwrap().clone())
}

async fn clear_requests(State(state): State<Arc<FakeState>>) -> StatusCode {
    state.requests.lock().unwrap().clear();
    StatusCode::NO_CONTENT
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Openai,
    Anthropic,
    Gemini,
    Ollama,
}

/// The reply the fake gives: text or a tool call, with token counts.
struct Reply {
    words: Vec<String>,
    tool: Option<(String, Value)>,
    input_tokens: u64,
    output_tokens: u64,
    cached: u64,
    cache_written: u64,
}

fn count_words(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.split_whitespace().count() as u64,
        Value::Array(a) => a.iter().map(count_words).sum(),
        Value::Object(o) => o.iter().filter(|(k, _)| *k != "role" && *k != "type").map(|(_, v)| count_words(v)).sum(),
        _ => 0,
    }
}

/// The text of the last user turn in any of the four request shapes.
fn last_user_text(body: &Value) -> String {
    fn text_of(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Array(parts) => {
                parts.iter().map(|p| p["text"].as_str().unwrap_or_default()).collect::<Vec<_>>().join("")
            }
            _ => String::new(),
        }
    }
    if let Some(p) = body["prompt"].as_str() {
        return p.to_string();
    }
    match &body["input"] {
        Value::String(s) => return s.clone(),
        Value::Array(items) => {
            return items
                .iter()
                .rev()
                .find(|i| i["role"] == "user")
                .map(|i| text_of(&i["content"]))
                .unwrap_or_default();
        }
        _ => {}
    }
    if let Some(contents) = body["contents"].as_array() {
        return contents.iter().rev().find(|c| c["role"] == "user").map(|c| text_of(&c["parts"])).unwrap_or_default();
    }
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| text_of(&m["content"]))
        .unwrap_or_default()
}

fn reply(kind: Kind, body: &Value, b: &Behaviour) -> Reply {
    let name = match kind {
        Kind::Openai => "openai",
        Kind::Anthropic => "anthropic",
        Kind::Gemini => "gemini",
        Kind::Ollama => "ollama",
    };
    let text = b.text.clone().unwrap_or_else(|| format!("Hello from fake {name}! You said: {}", last_user_text(body)));
    let mut words: Vec<String> = Vec::new();
    match b.chunk_chars {
        Some(n) => {
            let chars: Vec<char> = text.chars().collect();
            words.extend(chars.chunks(n.max(1)).map(|c| c.iter().collect::<String>()));
        }
        None => {
            for (i, w) in text.split(' ').enumerate() {
                words.push(if i == 0 { w.to_string() } else { format!(" {w}") });
            }
        }
    }
    let input_tokens = count_words(&body["messages"])
        + count_words(&body["input"])
        + count_words(&body["instructions"])
        + count_words(&body["contents"])
        + count_words(&body["system"])
        + count_words(&body["systemInstruction"])
        + count_words(&body["prompt"]);
    let output_tokens = b.output_tokens.unwrap_or(if b.tool_call.is_some() { 7 } else { words.len() as u64 });
    Reply {
        words,
        tool: b.tool_call.clone(),
        input_tokens,
        output_tokens,
        cached: b.cached_tokens,
        cache_written: b.cache_write_tokens,
    }
}

fn key_of(headers: &HeaderMap, kind: Kind) -> Option<String> {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    match kind {
        Kind::Openai | Kind::Ollama => {
            h("authorization").map(|v| v.trim_start_matches("Bearer ").to_string()).or_else(|| h("api-key"))
        }
        Kind::Anthropic => h("x-api-key"),
        Kind::Gemini => h("x-goog-api-key"),
    }
}

fn error_body(kind: Kind, status: u16, message: &str) -> Value {
    match kind {
        Kind::Openai => {
            let (t, code) = match status {
                401 => ("invalid_request_error", json!("invalid_api_key")),
                429 => ("requests", json!("rate_limit_exceeded")),
                400 => ("invalid_request_error", Value::Null),
                _ => ("server_error", Value::Null),
            };
            json!({"error": {"message": message, "type": t, "param": null, "code": code}})
        }
        Kind::Anthropic => {
            let t = match status {
                400 => "invalid_request_error",
                401 => "authentication_error",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": t, "message": message}, "request_id": "req_fake"})
        }
        Kind::Gemini => {
            let s = match status {
                400 => "INVALID_ARGUMENT",
                401 | 403 => "PERMISSION_DENIED",
                429 => "RESOURCE_EXHAUSTED",
                503 => "UNAVAILABLE",
                _ => "INTERNAL",
            };
            json!({"error": {"code": status, "message": message, "status": s}})
        }
        Kind::Ollama => json!({"error": message}),
    }
}

fn rate_limit_headers(kind: Kind, headers: &mut HeaderMap, remaining: u32) {
    let mut set = |k: &'static str, v: String| {
        headers.insert(k, HeaderValue::from_str(&v).unwrap());
    };
    match kind {
        Kind::Openai => {
            set("x-ratelimit-limit-requests", "500".into());
            set("x-ratelimit-remaining-requests", remaining.to_string());
            set("x-ratelimit-reset-requests", "120ms".into());
            set("x-request-id", "req_fake".into());
        }
        Kind::Anthropic => {
            set("anthropic-ratelimit-requests-limit", "50".into());
            set("anthropic-ratelimit-requests-remaining", remaining.to_string());
            set("anthropic-ratelimit-requests-reset", "2026-01-01T00:00:00Z".into());
            set("request-id", "req_fake".into());
        }
        _ => {}
    }
}

fn error_response(kind: Kind, status: u16, retry_after: Option<&str>) -> Response {
    let message = match status {
        401 => "Invalid API key provided".to_string(),
        429 => "Rate limit reached; please retry after a short wait".to_string(),
        s => format!("The server had an error while processing your request ({s})"),
    };
    let mut response =
        (StatusCode::from_u16(status).unwrap(), axum::Json(error_body(kind, status, &message))).into_response();
    rate_limit_headers(kind, response.headers_mut(), if status == 429 { 0 } else { 10 });
    if let Some(after) = retry_after {
        response.headers_mut().insert("retry-after", HeaderValue::from_str(after).unwrap());
    }
    response
}

/// Common handling: record, authenticate, apply the behaviour; then the format's own reply.
async fn handle(
    state: &FakeState,
    kind: Kind,
    uri: axum::http::Uri,
    headers: &HeaderMap,
    body: Bytes,
    stream: impl Fn(&Value) -> bool,
    respond: impl FnOnce(Value, Reply, Behaviour, bool) -> Response,
) -> Response {
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, axum::Json(error_body(kind, 400, "could not parse the JSON body")))
            .into_response();
    };
    let key = key_of(headers, kind);
    let anthropic_version = headers.get("anthropic-version").and_then(|v| v.to_str().ok()).map(str::to_string);
    let recorded_headers = RECORDED_HEADERS
        .iter()
        .filter_map(|n| headers.get(*n).and_then(|v| v.to_str().ok()).map(|v| (n.to_string(), v.to_string())))
        .collect();
    state.requests.lock().unwrap().push(Recorded {
        path: uri.path().to_string(),
        key: key.clone(),
        anthropic_version: anthropic_version.clone(),
        headers: recorded_headers,
        query: uri.query().map(str::to_string),
        body: value.clone(),
    });
    let b = state.next();
    if let Some(to) = &b.redirect_to {
        let location = format!("{to}{}", uri.path_and_query().map_or("", |p| p.as_str()));
        return (StatusCode::TEMPORARY_REDIRECT, [("location", location)]).into_response();
    }
    if b.hang {
        std::future::pending::<()>().await;
    }
    if b.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(b.delay_ms)).await;
    }
    if kind != Kind::Ollama && key.as_deref().is_none_or(str::is_empty) {
        return error_response(kind, 401, None);
    }
    if kind == Kind::Anthropic && anthropic_version.is_none() {
        return (StatusCode::BAD_REQUEST, axum::Json(error_body(kind, 400, "anthropic-version: header is required")))
            .into_response();
    }
    if let Some(status) = b.status {
        return error_response(kind, status, b.retry_after.as_deref());
    }
    let is_stream = stream(&value);
    let r = reply(kind, &value, &b);
    let mut response = respond(value, r, b, is_stream);
    rate_limit_headers(kind, response.headers_mut(), 499);
    response
}

/// A streamed body from frames, honouring the behaviour's delays, cut and stall.
fn stream_body(frames: Vec<Bytes>, b: &Behaviour, content_type: &'static str) -> Response {
    let cut = b.cut_after;
    let stall = b.stall_after;
    let delay = Duration::from_millis(b.chunk_delay_ms);
    let body = futures_util::stream::iter(frames.into_iter().enumerate()).then(move |(i, frame)| async move {
        if stall == Some(i) {
            std::future::pending::<()>().await;
        }
        if cut == Some(i) {
            // Let what was sent reach the wire first: hyper drops its write buffer on a body error.
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            return Err(std::io::Error::other("fake provider cut the stream"));
        }
        if !delay.is_zero() && i > 0 {
            tokio::time::sleep(delay).await;
        }
        Ok::<Bytes, std::io::Error>(frame)
    });
    // After an error the body ends; hyper then aborts the connection mid-body.
    let body = body
        .take_while(|r| std::future::ready(r.is_ok()))
        .chain(futures_util::stream::iter(cut.map(|_| Err(std::io::Error::other("cut")))));
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert("content-type", HeaderValue::from_static(content_type));
    response
}

fn sse(event: Option<&str>, data: &Value) -> Bytes {
    match event {
        Some(e) => Bytes::from(format!("event: {e}\ndata: {data}\n\n")),
        None => Bytes::from(format!("data: {data}\n\n")),
    }
}

// ---------------------------------------------------------------------------------------------
// OpenAI

async fn openai_chat(
    State(state): State<Arc<FakeState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(&state, Kind::Openai, uri, &headers, body, |v| v["stream"] == true, |req, r, b, stream| {
        let model = req["model"].as_str().unwrap_or("gpt-fake").to_string();
        let legacy = req.get("prompt").is_some();
        let usage = if b.no_usage { Value::Null } else { json!({"prompt_tokens": r.input_tokens, "completion_tokens": r.output_tokens, "total_tokens": r.input_tokens.saturating_add(r.output_tokens),
            "prompt_tokens_details": {"cached_tokens": r.cached}, "completion_tokens_details": {"reasoning_tokens": 0}}) };
        let finish = if r.tool.is_some() { "tool_calls" } else { "stop" };
        if !stream {
            let text: String = r.words.concat();
            if legacy {
                return axum::Json(json!({"id": "cmpl-fake", "object": "text_completion", "created": 1, "model": model,
                    "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": null}], "usage": usage})).into_response();
            }
            let message = match &r.tool {
                Some((name, args)) => json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_fake1", "type": "function", "function": {"name": name, "arguments": args.to_string()}}]}),
                None => json!({"role": "assistant", "content": text, "refusal": null}),
            };
            return axum::Json(json!({"id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}], "usage": usage,
                "system_fingerprint": "fp_fake"})).into_response();
        }
        let include_usage = req["stream_options"]["include_usage"] == true && !b.no_usage;
        let chunk = |delta: Value, finish: Value| {
            let mut c = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}]});
            if legacy {
                c["object"] = json!("text_completion");
                c["choices"][0] = json!({"index": 0, "text": c["choices"][0]["delta"]["content"].as_str().unwrap_or(""), "finish_reason": finish});
            }
            if include_usage {
                c["usage"] = Value::Null;
            }
            sse(None, &c)
        };
        let mut frames = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
        match &r.tool {
            Some((name, args)) => {
                let args = args.to_string();
                let (a, b2) = args.split_at(args.len() / 2);
                frames.push(chunk(json!({"tool_calls": [{"index": 0, "id": "call_fake1", "type": "function", "function": {"name": name, "arguments": ""}}]}), Value::Null));
                frames.push(chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": a}}]}), Value::Null));
                frames.push(chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": b2}}]}), Value::Null));
            }
            None => frames.extend(r.words.iter().map(|w| chunk(json!({"content": w}), Value::Null))),
        }
        frames.push(chunk(json!({}), json!(finish)));
        if include_usage {
            frames.push(sse(None, &json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [], "usage": usage})));
        }
        frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
        stream_body(frames, &b, "text/event-stream; charset=utf-8")
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Anthropic

async fn anthropic_messages(
    State(state): State<Arc<FakeState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(&state, Kind::Anthropic, uri, &headers, body, |v| v["stream"] == true, |req, r, b, stream| {
        let model = req["model"].as_str().unwrap_or("claude-fake").to_string();
        if req["max_tokens"].as_u64().is_none() {
            return (StatusCode::BAD_REQUEST, axum::Json(error_body(Kind::Anthropic, 400, "max_tokens: Field required"))).into_response();
        }
        let stop = if r.tool.is_some() { "tool_use" } else { "end_turn" };
        let input = r.input_tokens.saturating_sub(r.cached).saturating_sub(r.cache_written);
        // Extended thinking asked for: a thinking block with its signature comes first.
        let thinking = matches!(req["thinking"]["type"].as_str(), Some("enabled" | "adaptive"));
        let first = usize::from(thinking);
        if !stream {
            let mut content = match &r.tool {
                Some((name, args)) => json!([{"type": "tool_use", "id": "toolu_fake1", "name": name, "input": args}]),
                None => json!([{"type": "text", "text": r.words.concat()}]),
            };
            if thinking {
                content.as_array_mut().unwrap().insert(0, json!({"type": "thinking", "thinking": "Let me think.", "signature": FAKE_SIGNATURE}));
            }
            return axum::Json(json!({"id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": content,
                "stop_reason": stop, "stop_sequence": null,
                "usage": {"input_tokens": input, "output_tokens": r.output_tokens, "cache_read_input_tokens": r.cached, "cache_creation_input_tokens": r.cache_written}}))
            .into_response();
        }
        let mut frames = vec![
            sse(Some("message_start"), &json!({"type": "message_start", "message": {"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": input, "output_tokens": 1, "cache_read_input_tokens": r.cached, "cache_creation_input_tokens": r.cache_written}}})),
        ];
        if thinking {
            frames.push(sse(Some("content_block_start"), &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}})));
            frames.push(sse(Some("content_block_delta"), &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me think."}})));
            frames.push(sse(Some("content_block_delta"), &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": FAKE_SIGNATURE}})));
            frames.push(sse(Some("content_block_stop"), &json!({"type": "content_block_stop", "index": 0})));
        }
        match &r.tool {
            Some((name, args)) => {
                frames.push(sse(Some("content_block_start"), &json!({"type": "content_block_start", "index": first, "content_block": {"type": "tool_use", "id": "toolu_fake1", "name": name, "input": {}}})));
                let args = args.to_string();
                let (a, b2) = args.split_at(args.len() / 2);
                for part in [a, b2] {
                    frames.push(sse(Some("content_block_delta"), &json!({"type": "content_block_delta", "index": first, "delta": {"type": "input_json_delta", "partial_json": part}})));
                }
            }
            None => {
                frames.push(sse(Some("content_block_start"), &json!({"type": "content_block_start", "index": first, "content_block": {"type": "text", "text": ""}})));
                frames.push(sse(Some("ping"), &json!({"type": "ping"})));
                for w in &r.words {
                    frames.push(sse(Some("content_block_delta"), &json!({"type": "content_block_delta", "index": first, "delta": {"type": "text_delta", "text": w}})));
                }
            }
        }
        frames.push(sse(Some("content_block_stop"), &json!({"type": "content_block_stop", "index": first})));
        frames.push(sse(Some("message_delta"), &json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": r.output_tokens}})));
        frames.push(sse(Some("message_stop"), &json!({"type": "message_stop"})));
        stream_body(frames, &b, "text/event-stream; charset=utf-8")
    })
    .await
}

/// `POST /v1/messages/count_tokens`: the words of the request, as the fake counts input tokens.
async fn anthropic_count_tokens(
    State(state): State<Arc<FakeState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(
        &state,
        Kind::Anthropic,
        uri,
        &headers,
        body,
        |_| false,
        |req, r, _, _| {
            if req.get("max_tokens").is_some() {
                return (
                    StatusCode::BAD_REQUEST,
                    axum::Json(error_body(Kind::Anthropic, 400, "max_tokens: Extra inputs are not permitted")),
                )
                    .into_response();
            }
            axum::Json(json!({"input_tokens": r.input_tokens + count_words(&req["tools"])})).into_response()
        },
    )
    .await
}

/// A deterministic vector of 8 numbers for a text: equal texts, equal vectors.
pub fn fake_vector(text: &str) -> Vec<f64> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    (0..8)
        .map(|i| {
            for b in text.bytes().chain([i as u8]) {
                h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
            f64::from((h % 2000) as u32) / 1000.0 - 1.0
        })
        .collect()
}

/// The texts of an embeddings input: a string or an array of strings.
fn embed_inputs(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string)).collect(),
        _ => Vec::new(),
    }
}

/// `POST /v1/embeddings` (floats, or base64 little-endian f32s when asked).
async fn openai_embeddings(
    State(state): State<Arc<FakeState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(&state, Kind::Openai, uri, &headers, body, |_| false, |req, _, _, _| {
        let inputs = embed_inputs(&req["input"]);
        if inputs.is_empty() {
            return (StatusCode::BAD_REQUEST, axum::Json(error_body(Kind::Openai, 400, "'input' is required"))).into_response();
        }
        let base64 = req["encoding_format"] == "base64";
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let v = fake_vector(t);
                let embedding = if base64 {
                    use base64::Engine;
                    let bytes: Vec<u8> = v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect();
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    json!(v)
                };
                json!({"object": "embedding", "index": i, "embedding": embedding})
            })
            .collect();
        let tokens: u64 = inputs.iter().map(|t| t.split_whitespace().count() as u64).sum();
        axum::Json(json!({"object": "list", "data": data, "model": req["model"], "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})).into_response()
    })
    .await
}

/// Ollama's `POST /api/embed`.
async fn ollama_embed(
    State(state): State<Arc<FakeState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(
        &state,
        Kind::Ollama,
        uri,
        &headers,
        body,
        |_| false,
        |req, _, _, _| {
            let inputs = embed_inputs(&req["input"]);
            let vectors: Vec<Vec<f64>> = inputs.iter().map(|t| fake_vector(t)).collect();
            let tokens: u64 = inputs.iter().map(|t| t.split_whitespace().count() as u64).sum();
            axum::Json(json!({"model": req["model"], "embeddings": vectors, "prompt_eval_count": tokens}))
                .into_response()
        },
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// OpenAI Responses

async fn openai_responses(
    State(state): State<Arc<FakeState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(&state, Kind::Openai, uri, &headers, body, |v| v["stream"] == true, |req, r, b, stream| {
        let model = req["model"].as_str().unwrap_or("gpt-fake").to_string();
        if req.get("input").is_none() {
            return (StatusCode::BAD_REQUEST, axum::Json(error_body(Kind::Openai, 400, "Missing required parameter: 'input'."))).into_response();
        }
        let usage = json!({"input_tokens": r.input_tokens, "input_tokens_details": {"cached_tokens": r.cached},
            "output_tokens": r.output_tokens, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": r.input_tokens.saturating_add(r.output_tokens)});
        let text: String = r.words.concat();
        let done_item = match &r.tool {
            Some((name, args)) => json!({"type": "function_call", "id": "fc_fake1", "call_id": "call_fake1", "name": name, "arguments": args.to_string(), "status": "completed"}),
            None => json!({"type": "message", "id": "msg_fake1", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}]}),
        };
        let response = |status: &str, output: Value, usage: Value| json!({"id": "resp_fake1", "object": "response", "created_at": 1,
            "status": status, "model": model, "output": output, "usage": usage, "error": null, "incomplete_details": null,
            "instructions": req["instructions"], "metadata": {}, "parallel_tool_calls": true, "tool_choice": "auto", "tools": [], "store": req["store"]});
        if !stream {
            return axum::Json(response("completed", json!([done_item]), usage)).into_response();
        }
        let mut events = vec![
            json!({"type": "response.created", "response": response("in_progress", json!([]), Value::Null)}),
            json!({"type": "response.in_progress", "response": response("in_progress", json!([]), Value::Null)}),
        ];
        match &r.tool {
            Some((name, args)) => {
                let args = args.to_string();
                let (a, b2) = args.split_at(args.len() / 2);
                events.push(json!({"type": "response.output_item.added", "output_index": 0, "item": {"type": "function_call", "id": "fc_fake1", "call_id": "call_fake1", "name": name, "arguments": "", "status": "in_progress"}}));
                for part in [a, b2] {
                    events.push(json!({"type": "response.function_call_arguments.delta", "item_id": "fc_fake1", "output_index": 0, "delta": part}));
                }
                events.push(json!({"type": "response.function_call_arguments.done", "item_id": "fc_fake1", "output_index": 0, "arguments": args}));
            }
            None => {
                events.push(json!({"type": "response.output_item.added", "output_index": 0, "item": {"type": "message", "id": "msg_fake1", "status": "in_progress", "role": "assistant", "content": []}}));
                events.push(json!({"type": "response.content_part.added", "item_id": "msg_fake1", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}));
                for w in &r.words {
                    events.push(json!({"type": "response.output_text.delta", "item_id": "msg_fake1", "output_index": 0, "content_index": 0, "delta": w, "logprobs": []}));
                }
                events.push(json!({"type": "response.output_text.done", "item_id": "msg_fake1", "output_index": 0, "content_index": 0, "text": text, "logprobs": []}));
                events.push(json!({"type": "response.content_part.done", "item_id": "msg_fake1", "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": text, "annotations": []}}));
            }
        }
        events.push(json!({"type": "response.output_item.done", "output_index": 0, "item": done_item}));
        events.push(json!({"type": "response.completed", "response": response("completed", json!([done_item]), usage)}));
        let frames = events
            .into_iter()
            .enumerate()
            .map(|(i, mut e)| {
                e["sequence_number"] = json!(i);
                let kind = e["type"].as_str().unwrap_or_default().to_string();
                sse(Some(&kind), &e)
            })
            .collect();
        stream_body(frames, &b, "text/event-stream; charset=utf-8")
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Gemini

#[derive(Deserialize)]
struct GeminiQuery {
    alt: Option<String>,
}

async fn gemini(
    State(state): State<Arc<FakeState>>,
    Path(call): Path<String>,
    Query(q): Query<GeminiQuery>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((model, method)) = call.split_once(':').map(|(m, x)| (m.to_string(), x.to_string())) else {
        return (StatusCode::NOT_FOUND, axum::Json(error_body(Kind::Gemini, 404, "not found"))).into_response();
    };
    if method == "batchEmbedContents" {
        return handle(
            &state,
            Kind::Gemini,
            uri,
            &headers,
            body,
            |_| false,
            |req, _, _, _| {
                let embeddings: Vec<Value> = req["requests"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| json!({"values": fake_vector(r["content"]["parts"][0]["text"].as_str().unwrap_or_default())}))
                .collect();
                axum::Json(json!({"embeddings": embeddings})).into_response()
            },
        )
        .await;
    }
    let streaming = method == "streamGenerateContent";
    if !streaming && method != "generateContent" {
        return (StatusCode::NOT_FOUND, axum::Json(error_body(Kind::Gemini, 404, "unknown method"))).into_response();
    }
    let sse_mode = q.alt.as_deref() == Some("sse");
    handle(&state, Kind::Gemini, uri, &headers, body, move |_| streaming, move |_req, r, b, stream| {
        let usage = |out: u64| json!({"promptTokenCount": r.input_tokens, "candidatesTokenCount": out, "totalTokenCount": r.input_tokens.saturating_add(out), "cachedContentTokenCount": r.cached});
        let chunk = |parts: Value, finish: Option<&str>, out: u64| {
            let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
            if let Some(f) = finish {
                candidate["finishReason"] = json!(f);
            }
            json!({"candidates": [candidate], "usageMetadata": usage(out), "modelVersion": model, "responseId": "resp_fake"})
        };
        if !stream {
            let parts = match &r.tool {
                Some((name, args)) => json!([{"functionCall": {"name": name, "args": args}}]),
                None => json!([{"text": r.words.concat()}]),
            };
            return axum::Json(chunk(parts, Some("STOP"), r.output_tokens)).into_response();
        }
        if !sse_mode {
            return (StatusCode::BAD_REQUEST, axum::Json(error_body(Kind::Gemini, 400, "this fake serves streams with alt=sse only"))).into_response();
        }
        let mut frames = Vec::new();
        match &r.tool {
            Some((name, args)) => frames.push(sse(None, &chunk(json!([{"functionCall": {"name": name, "args": args}}]), Some("STOP"), r.output_tokens))),
            None => {
                let n = r.words.len();
                for (i, w) in r.words.iter().enumerate() {
                    let last = i + 1 == n;
                    frames.push(sse(None, &chunk(json!([{"text": w}]), last.then_some("STOP"), (i + 1) as u64)));
                }
            }
        }
        stream_body(frames, &b, "text/event-stream")
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Ollama

async fn ollama(
    State(state): State<Arc<FakeState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let generate = uri.path() == "/api/generate";
    handle(
        &state,
        Kind::Ollama,
        uri,
        &headers,
        body,
        |v| v["stream"] != false,
        move |req, r, b, stream| {
            let model = req["model"].as_str().unwrap_or("fake").to_string();
            let line = |content: &str, tool: Option<&(String, Value)>, done: bool| {
                let mut v = if generate {
                    json!({"model": model, "created_at": "2026-01-01T00:00:00Z", "response": content, "done": done})
                } else {
                    let mut message = json!({"role": "assistant", "content": content});
                    if let Some((name, args)) = tool {
                        message["tool_calls"] = json!([{"function": {"name": name, "arguments": args}}]);
                    }
                    json!({"model": model, "created_at": "2026-01-01T00:00:00Z", "message": message, "done": done})
                };
                if done {
                    v["done_reason"] = json!("stop");
                    v["prompt_eval_count"] = json!(r.input_tokens);
                    v["eval_count"] = json!(r.output_tokens);
                    v["total_duration"] = json!(1000);
                }
                v
            };
            if !stream {
                return axum::Json(line(&r.words.concat(), r.tool.as_ref(), true)).into_response();
            }
            let mut frames: Vec<Bytes> = Vec::new();
            match &r.tool {
                Some(t) => frames.push(Bytes::from(format!("{}\n", line("", Some(t), false)))),
                None => frames.extend(r.words.iter().map(|w| Bytes::from(format!("{}\n", line(w, None, false))))),
            }
            frames.push(Bytes::from(format!("{}\n", line("", None, true))));
            stream_body(frames, &b, "application/x-ndjson")
        },
    )
    .await
}
