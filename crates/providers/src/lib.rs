//! Providers: translation between the internal model ([`tollgate_model`]) and each provider's wire
//! format, one file per provider. This module holds what they share: the HTTP call with its
//! timeouts, error classification (what may be retried or fall back), and stream framing (SSE and
//! NDJSON). The provider files only build request bodies and parse answers.

pub mod anthropic;
mod config;
pub mod embeddings;
pub mod frame;
pub mod gemini;
pub mod ollama;
pub mod openai;
pub mod responses;
pub mod tokens;

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

pub use config::{Limits, ProviderConfig, ProviderKind};
use frame::{Frame, Framer};
use tollgate_model::Secret;
use tollgate_model::{ChatRequest, ChatResponse, DeltaAt, Event, EventStream, Native, UpstreamError, WireFormat};

/// The wire formats a provider can be called in, the first its default.
pub fn formats(config: &ProviderConfig) -> &'static [WireFormat] {
    match config.kind {
        ProviderKind::Anthropic => &[WireFormat::AnthropicMessages],
        ProviderKind::Openai if config.serves_responses() => &[
            WireFormat::OpenaiChat,
            WireFormat::OpenaiCompletions,
            WireFormat::OpenaiEmbeddings,
            WireFormat::OpenaiResponses,
        ],
        ProviderKind::Openai => &[WireFormat::OpenaiChat, WireFormat::OpenaiCompletions, WireFormat::OpenaiEmbeddings],
        ProviderKind::Gemini | ProviderKind::Ollama => &[],
    }
}

/// The caller's own request, when this target speaks its format: it is then forwarded as sent.
fn native_for<'r>(config: &ProviderConfig, req: &'r ChatRequest) -> Option<&'r Native> {
    req.native.as_ref().filter(|n| formats(config).contains(&n.format))
}

/// Whether the target gets the caller's own request (it speaks the caller's format).
pub fn passes_through(config: &ProviderConfig, req: &ChatRequest) -> bool {
    native_for(config, req).is_some()
}

/// Whether a target can serve the request: it speaks the caller's format, or the request has
/// nothing that translation would lose. The error names what cannot be translated. The pipeline
/// asks before it calls a target.
pub fn supports(config: &ProviderConfig, req: &ChatRequest) -> Result<(), String> {
    if native_for(config, req).is_some() {
        return Ok(());
    }
    let kind =
        || serde_json::to_value(config.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    if req.embed.is_some() && config.kind == ProviderKind::Anthropic {
        return Err(format!("{} offers no embeddings", kind()));
    }
    if config.kind == ProviderKind::Ollama
        && let Some(url) = req
            .messages
            .iter()
            .flat_map(|m| m.media())
            .find(|u| !tollgate_model::data_url(u).is_some_and(|(t, _)| t.starts_with("image/")))
    {
        let what = if url.starts_with("data:") { "a document" } else { "an image by URL" };
        return Err(format!("{} takes inline images only, not {what}", kind()));
    }
    if req.unmapped.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{} cannot be translated for {} (send it to a provider of the caller's own format)",
        req.unmapped.join(", "),
        kind()
    ))
}

/// One resolved route target: which provider, which model, with which key.
pub struct Target<'a> {
    pub provider: &'a str,
    pub config: &'a ProviderConfig,
    pub model: &'a str,
    pub key: Option<&'a Secret>,
}

/// A request ready to send: what a provider file builds.
pub struct WireRequest {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    /// Headers forwarded from the caller (version and betas), sent after `headers` and replacing
    /// one of the same name.
    pub forwarded: Vec<(String, String)>,
    pub body: Value,
}

impl WireRequest {
    pub fn new(url: String, headers: Vec<(&'static str, String)>, body: Value) -> Self {
        Self { url, headers, forwarded: Vec::new(), body }
    }
}

/// The framing of a provider's streamed answer.
#[derive(Clone, Copy)]
pub enum Framing {
    Sse,
    Ndjson,
}

/// Turns one provider's stream frames into events.
pub trait StreamDecoder: Send + 'static {
    fn decode(&mut self, frame: Frame, out: &mut VecDeque<Event>) -> Result<(), UpstreamError>;
    /// Where a frame of this format carries a piece of streamed text (for restoring placeholders
    /// in a forwarded frame); `None` for a frame whose strings are each whole.
    fn locate(&self, _data: &Value) -> Option<DeltaAt> {
        None
    }
    /// Whether the provider said the answer is complete; a stream that ends before is a cut.
    fn finished(&self) -> bool;
}

/// The TLS settings every client of the process shares: the platform's verifier over its root
/// certificates (`SSL_CERT_FILE`/`SSL_CERT_DIR` honoured), TLS 1.2 and 1.3, HTTP/2 and 1.1 offered,
/// as reqwest would make them itself, except that the roots are read once per process: reading
/// and parsing the system's certificate files is the largest part of a daemon's start, and it
/// would be paid again by every client built. `None` when the platform's roots cannot be read: the
/// client then makes its own settings (and reports the same failure).
pub fn tls_config() -> Option<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Option<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let verifier = rustls_platform_verifier::Verifier::new(std::sync::Arc::clone(&provider)).ok()?;
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(rustls::ALL_VERSIONS)
                .ok()?
                .dangerous()
                .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
                .with_no_client_auth();
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            Some(config)
        })
        .clone()
}

/// The HTTP client shared by all provider and GitLab calls. It follows no redirect: a request
/// carries a credential (`Authorization`, `x-api-key`, `x-goog-api-key`, `api-key`,
/// `PRIVATE-TOKEN`, a key in the query), and an answer that points elsewhere must not receive it.
/// A redirect is reported instead ([`redirect_refusal`]).
pub fn http_client(limits: &Limits) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder();
    if let Some(tls) = tls_config() {
        builder = builder.tls_backend_preconfigured(tls);
    }
    builder
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_millis(limits.connect_timeout_ms))
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client builds with a TLS provider installed")
}

/// Sends a non-streamed request and returns the whole answer.
pub async fn complete(
    http: &reqwest::Client,
    target: &Target<'_>,
    req: &ChatRequest,
    limits: &Limits,
) -> Result<ChatResponse, UpstreamError> {
    let wire = build(target, req, false)?;
    let kind = target.config.kind;
    let format = native_for(target.config, req).map(|n| n.format);
    let deadline = Duration::from_millis(limits.first_byte_timeout_ms);
    let response = send(http, wire, kind, deadline).await?;
    let body = read_capped(response, limits.max_response_bytes, deadline).await?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
    if let Some(inputs) = &req.embed {
        let tokens = inputs.iter().map(|t| crate::tokens::count(t)).sum();
        return embeddings::parse(kind, target.model, &value, tokens).map_err(UpstreamError::Protocol);
    }
    let parsed = match (format, kind) {
        (Some(WireFormat::OpenaiResponses), _) => responses::parse_response(&value),
        (Some(WireFormat::OpenaiEmbeddings), _) => Err("an embeddings body without inputs".to_string()),
        (_, ProviderKind::Openai) => openai::parse_response(&value),
        (_, ProviderKind::Anthropic) => anthropic::parse_response(&value),
        (_, ProviderKind::Gemini) => gemini::parse_response(&value, target.model),
        (_, ProviderKind::Ollama) => ollama::parse_response(&value),
    };
    let mut parsed = parsed.map_err(UpstreamError::Protocol)?;
    if format.is_some() {
        parsed.wire = Some(value);
    }
    Ok(parsed)
}

/// Sends a streamed request; the stream yields events until the provider's end marker, an error
/// item when the provider cuts or goes silent for longer than the idle limit.
pub async fn stream(
    http: &reqwest::Client,
    target: &Target<'_>,
    req: &ChatRequest,
    limits: &Limits,
) -> Result<EventStream, UpstreamError> {
    let wire = build(target, req, true)?;
    let kind = target.config.kind;
    let format = native_for(target.config, req).map(|n| n.format);
    let response = send(http, wire, kind, Duration::from_millis(limits.first_byte_timeout_ms)).await?;
    let (framing, decoder): (Framing, Box<dyn StreamDecoder>) = match (format, kind) {
        (Some(WireFormat::OpenaiResponses), _) => (Framing::Sse, Box::new(responses::Decoder::default())),
        (Some(WireFormat::OpenaiEmbeddings), _) => {
            return Err(UpstreamError::Protocol("embeddings are not streamed".into()));
        }
        (_, ProviderKind::Openai) => (Framing::Sse, Box::new(openai::Decoder::default())),
        (_, ProviderKind::Anthropic) => (Framing::Sse, Box::new(anthropic::Decoder::default())),
        (_, ProviderKind::Gemini) => (Framing::Sse, Box::new(gemini::Decoder::default())),
        (_, ProviderKind::Ollama) => (Framing::Ndjson, Box::new(ollama::Decoder::default())),
    };
    let idle = Duration::from_millis(limits.stream_idle_timeout_ms);
    let events = decode_stream(response, framing, decoder, idle, format.is_some(), limits.max_response_bytes);
    Ok(match (&target.config.tokenize_path, kind) {
        (Some(path), ProviderKind::Openai) => {
            let url = reqwest::Url::parse(&target.config.base_url)
                .and_then(|base| base.join(path))
                .map_err(|e| UpstreamError::Protocol(format!("bad tokenize_path: {e}")))?;
            openai::count_usage(events, http.clone(), url, req)
        }
        _ => events,
    })
}

fn build(target: &Target<'_>, req: &ChatRequest, stream: bool) -> Result<WireRequest, UpstreamError> {
    let mut wire = match (native_for(target.config, req), &req.embed) {
        (Some(native), _) => passthrough(target, native, stream),
        (None, Some(inputs)) => embeddings::build(target, inputs),
        (None, None) => match target.config.kind {
            ProviderKind::Openai => openai::build(target, req, stream),
            ProviderKind::Anthropic => anthropic::build(target, req, stream),
            ProviderKind::Gemini => gemini::build(target, req, stream),
            ProviderKind::Ollama => ollama::build(target, req, stream),
        },
    };
    if !target.config.query.is_empty() {
        let mut url = reqwest::Url::parse(&wire.url).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        url.query_pairs_mut().extend_pairs(&target.config.query);
        wire.url = url.into();
    }
    Ok(wire)
}

/// The caller's request for a target of its own format: the body as sent (already masked), with
/// the routed model and the stream flag set; the caller's version and beta headers and query.
fn passthrough(target: &Target<'_>, native: &Native, stream: bool) -> WireRequest {
    let mut body = native.body.clone();
    if let Some(obj) = body.as_object_mut() {
        obj.insert("model".into(), Value::String(target.model.to_string()));
        if stream {
            obj.insert("stream".into(), Value::Bool(true));
            if matches!(native.format, WireFormat::OpenaiChat | WireFormat::OpenaiCompletions) {
                // The ledger needs the usage; the door leaves the usage chunk out for a caller
                // that did not ask for it.
                obj.insert("stream_options".into(), serde_json::json!({"include_usage": true}));
            }
        } else if obj.contains_key("stream") {
            obj.insert("stream".into(), Value::Bool(false));
        }
    }
    let mut wire = match native.format {
        WireFormat::AnthropicMessages => {
            let mut headers: Vec<(&'static str, String)> =
                auth_header(target, "x-api-key", false).into_iter().collect();
            if !native.headers.iter().any(|(n, _)| n == "anthropic-version") {
                headers.push(("anthropic-version", anthropic::API_VERSION.to_string()));
            }
            WireRequest::new(join_url(&target.config.base_url, "v1/messages"), headers, body)
        }
        WireFormat::OpenaiChat => WireRequest::new(
            join_url(&target.config.base_url, "chat/completions"),
            auth_header(target, "authorization", true).into_iter().collect(),
            body,
        ),
        WireFormat::OpenaiResponses => WireRequest::new(
            join_url(&target.config.base_url, "responses"),
            auth_header(target, "authorization", true).into_iter().collect(),
            body,
        ),
        WireFormat::OpenaiCompletions => WireRequest::new(
            join_url(&target.config.base_url, "completions"),
            auth_header(target, "authorization", true).into_iter().collect(),
            body,
        ),
        WireFormat::OpenaiEmbeddings => WireRequest::new(
            join_url(&target.config.base_url, "embeddings"),
            auth_header(target, "authorization", true).into_iter().collect(),
            body,
        ),
    };
    wire.forwarded = native.headers.clone();
    if let Some(q) = native.query.as_deref().filter(|q| !q.is_empty()) {
        wire.url.push('?');
        wire.url.push_str(q);
    }
    wire
}

/// Anthropic's token count for a Messages request (`/v1/messages/count_tokens`), its body as the
/// caller sent it (masked) with the routed model. The answer's `input_tokens`.
pub async fn count_tokens(
    http: &reqwest::Client,
    target: &Target<'_>,
    native: &Native,
    limits: &Limits,
) -> Result<u64, UpstreamError> {
    let mut wire = passthrough(target, native, false);
    wire.url = join_url(&target.config.base_url, "v1/messages/count_tokens");
    if let Some(q) = native.query.as_deref().filter(|q| !q.is_empty()) {
        wire.url.push('?');
        wire.url.push_str(q);
    }
    let deadline = Duration::from_millis(limits.first_byte_timeout_ms);
    let response = send(http, wire, ProviderKind::Anthropic, deadline).await?;
    let body = read_capped(response, limits.max_response_bytes, deadline).await?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| UpstreamError::Protocol(e.to_string()))?;
    value["input_tokens"].as_u64().ok_or_else(|| UpstreamError::Protocol("no input_tokens in the count".into()))
}

/// Joins a base URL and a path without doubling or dropping the slash.
pub(crate) fn join_url(base: &str, path: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), path.trim_start_matches('/'))
}

/// The key header for a target: the provider kind's usual one unless the config names another.
pub(crate) fn auth_header(
    target: &Target<'_>,
    default_name: &'static str,
    bearer: bool,
) -> Option<(&'static str, String)> {
    let key = target.key?;
    match target.config.key_header.as_deref() {
        Some(custom) => Some((leak_header_name(custom), key.expose().to_string())),
        None if bearer => Some((default_name, format!("Bearer {}", key.expose()))),
        None => Some((default_name, key.expose().to_string())),
    }
}

/// Header names from config live as long as the process; intern them once each.
fn leak_header_name(name: &str) -> &'static str {
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<Vec<&'static str>>> = OnceLock::new();
    let mut names = NAMES.get_or_init(Mutex::default).lock().expect("header names lock");
    if let Some(n) = names.iter().find(|n| n.eq_ignore_ascii_case(name)) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.to_ascii_lowercase().into_boxed_str());
    names.push(leaked);
    leaked
}

async fn send(
    http: &reqwest::Client,
    wire: WireRequest,
    kind: ProviderKind,
    deadline: Duration,
) -> Result<reqwest::Response, UpstreamError> {
    let mut builder = http.post(&wire.url).json(&wire.body);
    for (name, value) in wire.headers {
        builder = builder.header(name, value);
    }
    for (name, value) in wire.forwarded {
        builder = builder.header(name, value);
    }
    let response = tokio::time::timeout(deadline, builder.send())
        .await
        .map_err(|_| UpstreamError::Timeout("waiting for the answer to start"))?
        .map_err(|e| {
            if e.is_timeout() {
                UpstreamError::Timeout("connecting")
            } else {
                // Without the URL: its query or user part may hold a key.
                UpstreamError::Connect(error_chain(&e.without_url()))
            }
        })?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if let Some(message) = redirect_refusal(&response) {
        return Err(UpstreamError::Redirected(message));
    }
    let retry_after = parse_retry_after(response.headers());
    // An error body is read for its message only: a little of it, briefly.
    let body = read_capped(response, 64 * 1024, Duration::from_secs(5)).await.unwrap_or_default();
    let message =
        error_message(kind, &body).unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    Err(UpstreamError::Status { status: status.as_u16(), retry_after, message })
}

/// A whole answer's body, read until `deadline` and at most `limit` bytes: a provider (or anything
/// between) could send without end.
async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
    deadline: Duration,
) -> Result<bytes::Bytes, UpstreamError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let read = async {
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| UpstreamError::Cut(error_chain(&e.without_url())))? {
            if body.len() + chunk.len() > limit {
                return Err(too_large(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    tokio::time::timeout(deadline, read).await.map_err(|_| UpstreamError::Timeout("reading the answer"))?
}

fn too_large(limit: usize) -> UpstreamError {
    UpstreamError::Protocol(format!("the answer exceeded {limit} bytes (limits.max_response_bytes); it was cut"))
}

/// What to say of an answer that redirects (3xx): where it pointed (its origin only: a query may
/// hold anything) and that the request was not sent there. `None` for any other answer.
pub fn redirect_refusal(response: &reqwest::Response) -> Option<String> {
    if !response.status().is_redirection() {
        return None;
    }
    let to = response
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| response.url().join(l).ok())
        .map_or_else(|| "an address it did not give".to_string(), |u| u.origin().ascii_serialization());
    Some(format!(
        "answered {} with a redirect to {to}, not followed: credentials go to the configured address only \
         (if the service moved, put its new address in the config)",
        response.status().as_u16()
    ))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// The message inside a provider's error body, whichever of the documented shapes it has.
fn error_message(kind: ProviderKind, body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let msg = match kind {
        // OpenAI and Gemini: {"error": {"message": ...}}; Anthropic: {"type":"error","error":{"message"}};
        // Ollama: {"error": "..."}.
        ProviderKind::Openai | ProviderKind::Gemini | ProviderKind::Anthropic => value["error"]["message"].as_str(),
        ProviderKind::Ollama => value["error"].as_str(),
    }?;
    // Bounded, and single-line: it ends up in an error shown to the caller.
    Some(msg.chars().take(500).collect::<String>().replace('\n', " "))
}

/// `Retry-After` in seconds or as an HTTP date; OpenAI also sends `retry-after-ms`.
fn parse_retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    if let Some(ms) =
        headers.get("retry-after-ms").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<f64>().ok())
    {
        return Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    }
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return Some(Duration::from_secs_f64(secs.clamp(0.0, 86_400.0)));
    }
    let when = httpdate(value)?;
    Some(when.duration_since(std::time::SystemTime::now()).unwrap_or_default())
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only form servers send today.
fn httpdate(s: &str) -> Option<std::time::SystemTime> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    let day: u64 = parts[1].parse().ok()?;
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        .iter()
        .position(|m| *m == parts[2])? as u64
        + 1;
    let year: u64 = parts[3].parse().ok()?;
    let hms: Vec<u64> = parts[4].split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    if hms.len() != 3 {
        return None;
    }
    let days = tollgate_model::utc::days_from_civil(year as i64, month as u32, day as u32) as u64;
    let secs = days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2];
    Some(std::time::UNIX_EPOCH + Duration::from_secs(secs))
}

fn decode_stream(
    response: reqwest::Response,
    framing: Framing,
    decoder: Box<dyn StreamDecoder>,
    idle: Duration,
    forward: bool,
    limit: usize,
) -> EventStream {
    struct State {
        body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
        framer: Framer,
        decoder: Box<dyn StreamDecoder>,
        pending: VecDeque<Event>,
        frames: Vec<Frame>,
        idle: Duration,
        ended: bool,
        forward: bool,
        /// Bytes that may still be read (`limits.max_response_bytes` at the start).
        left: usize,
    }
    fn decode_frames(s: &mut State) -> Result<(), UpstreamError> {
        for frame in s.frames.drain(..) {
            if s.forward
                && let Frame::Sse { event, data } = &frame
            {
                // The caller speaks this format: the frame goes to it as it came, ahead of the
                // typed events the ledger and the cache read from it. Only a frame that says
                // "delta" can carry a piece of streamed text; no other is parsed for it.
                let delta = if data.contains("delta") {
                    serde_json::from_str::<Value>(data).ok().and_then(|v| s.decoder.locate(&v))
                } else {
                    None
                };
                s.pending.push_back(Event::Frame { event: event.clone(), data: data.clone(), delta });
            }
            s.decoder.decode(frame, &mut s.pending)?;
        }
        Ok(())
    }
    let state = State {
        body: response.bytes_stream().boxed(),
        framer: Framer::new(framing),
        decoder,
        pending: VecDeque::new(),
        frames: Vec::new(),
        idle,
        ended: false,
        forward,
        left: limit,
    };
    Box::pin(futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(event) = s.pending.pop_front() {
                return Some((Ok(event), s));
            }
            if s.ended {
                return None;
            }
            let chunk = match tokio::time::timeout(s.idle, s.body.next()).await {
                Err(_) => {
                    s.ended = true;
                    return Some((Err(UpstreamError::Timeout("waiting for the next part of the stream")), s));
                }
                Ok(Some(Err(e))) => {
                    s.ended = true;
                    return Some((Err(UpstreamError::Cut(error_chain(&e.without_url()))), s));
                }
                Ok(Some(Ok(chunk))) if chunk.len() > s.left => {
                    s.ended = true;
                    return Some((
                        Err(UpstreamError::Cut("the answer exceeded limits.max_response_bytes; it was cut".into())),
                        s,
                    ));
                }
                Ok(Some(Ok(chunk))) => {
                    s.left -= chunk.len();
                    chunk
                }
                Ok(None) => {
                    s.ended = true;
                    s.framer.finish(&mut s.frames);
                    if let Err(e) = decode_frames(&mut s) {
                        return Some((Err(e), s));
                    }
                    if !s.decoder.finished() {
                        s.pending.clear();
                        return Some((
                            Err(UpstreamError::Cut("the connection closed before the answer was complete".into())),
                            s,
                        ));
                    }
                    continue;
                }
            };
            if let Err(e) = s.framer.push(&chunk, &mut s.frames).and_then(|()| decode_frames(&mut s)) {
                s.ended = true;
                return Some((Err(e), s));
            }
        }
    }))
}

/// Reads a JSON number as u64 (absent or null is 0).
pub(crate) fn u64_at(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_milliseconds_and_dates() {
        let mut h = http::HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::from_millis(150)));
        let mut h = http::HeaderMap::new();
        h.insert("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::ZERO));
        assert_eq!(
            httpdate("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(std::time::UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
    }

    #[test]
    fn only_transient_failures_may_be_retried() {
        let status = |s| UpstreamError::Status { status: s, retry_after: None, message: String::new() };
        assert!(status(429).is_transient());
        assert!(status(503).is_transient());
        assert!(!status(400).is_transient());
        assert!(!status(401).is_transient());
        assert!(UpstreamError::Timeout("x").is_transient());
    }

    #[test]
    fn error_messages_come_from_each_documented_body_shape() {
        assert_eq!(
            error_message(ProviderKind::Openai, br#"{"error":{"message":"bad key","type":"invalid_request_error"}}"#)
                .unwrap(),
            "bad key"
        );
        assert_eq!(
            error_message(
                ProviderKind::Anthropic,
                br#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#
            )
            .unwrap(),
            "busy"
        );
        assert_eq!(
            error_message(
                ProviderKind::Gemini,
                br#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}"#
            )
            .unwrap(),
            "quota"
        );
        assert_eq!(error_message(ProviderKind::Ollama, br#"{"error":"model not found"}"#).unwrap(), "model not found");
    }
}
