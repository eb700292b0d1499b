//! The HTTP API, served on both listeners (the local socket and TCP on loopback) by one router.
//! Only this module knows HTTP. Each entry point translates its wire format to the internal model
//! (keeping the caller's own body beside it for a target of the same format), calls the pipeline,
//! and renders the answer and any error in the caller's own format: a pass-through answer as the
//! provider sent it, any other rendered from the typed events.

pub mod anthropic;
pub mod auth;
pub mod completions;
pub mod dashboard;
pub mod embeddings;
pub mod native;
pub mod openai;
pub mod responses;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::pipeline::{EntryPoint, Gateway, GatewayError, RequestContext, Served};

/// Which listener a connection came in on; set by the accept loop on every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The local socket: reachable by this user alone (file permissions), no token needed.
    Local,
    /// TCP on loopback: the bearer token, a loopback Host and no browser origin are required.
    Tcp,
}

pub struct AppState {
    pub gateway: Arc<Gateway>,
    pub reloader: Arc<crate::reload::Reloader>,
    pub token: String,
    /// The named tokens ([`crate::callers`]).
    pub callers: Arc<crate::callers::Callers>,
    pub started: std::time::Instant,
    /// Projects of the repositories callers name (`x-tollgate-repo`).
    pub projects: crate::identity::Projects,
    /// The dashboard's login links and sessions.
    pub dashboard: dashboard::Sessions,
}

pub type State = Arc<AppState>;

pub fn router(state: State) -> Router {
    let dashboard =
        dashboard::router().layer(axum::middleware::from_fn_with_state(Arc::clone(&state), dashboard::guard));
    let api = Router::new()
        .route("/healthz", get(native::healthz))
        .route("/v1/status", get(native::status))
        .route("/v1/models", get(native::models))
        .route("/v1/models/{*id}", get(native::model))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/v1/responses", post(responses::responses))
        .route("/v1/responses/{id}", get(responses::get).delete(responses::delete))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/usage", get(native::usage))
        .route("/v1/team/usage", get(native::team_usage))
        .route("/v1/budget", get(native::budget))
        .route("/v1/log", get(native::log))
        .route("/v1/log/{id}", get(native::log_entry))
        .route("/metrics", get(native::metrics))
        .route("/v1/policy", get(native::policy))
        .route("/v1/prompts", get(native::prompts))
        .route("/v1/prompts/{name}", post(native::run_prompt))
        .route("/v1/complete", post(native::complete))
        .route("/v1/review", post(native::review))
        .route("/v1/review/outcomes", post(native::review_outcomes))
        .route("/v1/admin/policy/sync", post(native::policy_sync))
        .route("/v1/admin/config", get(native::config))
        .route("/v1/admin/credentials/reload", post(native::reload_credentials))
        .route("/v1/admin/tokens", get(native::list_tokens).post(native::create_token))
        .route("/v1/admin/tokens/{name}", axum::routing::delete(native::revoke_token))
        .route("/v1/dashboard/link", post(dashboard::link))
        .fallback(native::not_found)
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), auth::guard));
    dashboard.merge(api).with_state(state)
}

/// The error shapes callers understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Openai,
    Anthropic,
}

impl Format {
    /// The format a request expects its errors in: Anthropic's for `/v1/messages` and for any
    /// request that carries `anthropic-version`; OpenAI's otherwise (the native API uses it too).
    pub fn of(path: &str, headers: &HeaderMap) -> Self {
        if path.starts_with("/v1/messages") || headers.contains_key("anthropic-version") {
            Format::Anthropic
        } else {
            Format::Openai
        }
    }
}

/// An error, rendered in the caller's format.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub format: Format,
    pub retry_after: Option<Duration>,
    /// OpenAI's error `code`, when the status alone does not say it.
    pub code: Option<&'static str>,
}

/// The HTTP status that best says what a pipeline failure was: the one place statuses are
/// chosen (the pipeline knows none).
pub fn status_of(err: &GatewayError) -> StatusCode {
    use crate::model::UpstreamError;
    use crate::route::RouteError;
    let code = match err {
        GatewayError::Route(RouteError::Unknown { .. }) => 404,
        GatewayError::Route(RouteError::Disabled(_) | RouteError::NotAllowed { .. }) => 403,
        GatewayError::NotAllowed(_) => 403,
        GatewayError::NoTarget { .. } => 503,
        GatewayError::Rejected { status, .. } => *status,
        GatewayError::AllFailed { last, .. } => match last.as_ref() {
            UpstreamError::Status { status: 429, .. } => 429,
            UpstreamError::Timeout(_) => 504,
            UpstreamError::NoCredentials { .. } => 401,
            _ => 502,
        },
        GatewayError::Budget(_) => 402,
        GatewayError::RateLimited(_) => 429,
        GatewayError::Redaction(_) | GatewayError::Untranslatable { .. } | GatewayError::SecretInModelName { .. } => {
            400
        }
        GatewayError::ShuttingDown | GatewayError::Unrecordable(_) | GatewayError::Busy(_) => 503,
    };
    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY)
}

impl ApiError {
    pub fn new(status: StatusCode, format: Format, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), format, retry_after: None, code: None }
    }

    pub fn from_gateway(err: &GatewayError, format: Format) -> Self {
        let status = status_of(err);
        Self { status, message: err.to_string(), format, retry_after: err.retry_after(), code: None }
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The error as a JSON body in the caller's format (also used as a stream's error event).
    pub fn body(&self) -> serde_json::Value {
        match self.format {
            Format::Openai => serde_json::json!({"error": {
                "message": self.message,
                "type": openai_type(self.status),
                "param": null,
                "code": self.code.or_else(|| openai_code(self.status)),
            }}),
            Format::Anthropic => serde_json::json!({"type": "error", "error": {
                "type": anthropic_type(self.status),
                "message": self.message,
            }}),
        }
    }
}

fn openai_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 404 | 413 | 415 => "invalid_request_error",
        401 => "authentication_error",
        402 => "insufficient_quota",
        403 => "permission_error",
        429 => "rate_limit_error",
        _ => "server_error",
    }
}

fn openai_code(status: StatusCode) -> Option<&'static str> {
    match status.as_u16() {
        401 => Some("invalid_api_key"),
        402 => Some("budget_exceeded"),
        404 => Some("model_not_found"),
        413 => Some("request_too_large"),
        429 => Some("rate_limit_exceeded"),
        _ => None,
    }
}

fn anthropic_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
            response.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Reads a JSON request body within the size limit, with errors that say what is wrong.
pub async fn read_json<T: DeserializeOwned>(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    format: Format,
) -> Result<T, ApiError> {
    let value = read_value(body, headers, limit, format).await?;
    parse(&value, format)
}

/// Reads a request body as JSON within the size limit: too large, unreadable, not UTF-8 and not
/// JSON each get their own error.
/// How long a request body may take to arrive.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub async fn read_value(body: Body, headers: &HeaderMap, limit: usize, format: Format) -> Result<Value, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format,
            format!("the request body exceeds the limit of {limit} bytes (limits.max_body_bytes)"),
        )
    };
    if let Some(len) =
        headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large());
    }
    // A caller that starts a body and never finishes it must not hold a connection and a task
    // for ever.
    let collect = tokio::time::timeout(BODY_TIMEOUT, http_body_util::Limited::new(body, limit).collect());
    let Ok(collected) = collect.await else {
        return Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format,
            format!("the request body did not arrive within {} s", BODY_TIMEOUT.as_secs()),
        ));
    };
    let bytes: Bytes = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return Err(too_large());
        }
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format,
                format!("could not read the request body: {e}"),
            ));
        }
    };
    if let Err(e) = std::str::from_utf8(&bytes) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format,
            format!("the request body is not valid UTF-8 (at byte {})", e.valid_up_to()),
        ));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format, format!("the request body is not valid JSON: {e}")))
}

/// A door's request: its typed wire form, and the caller's own body (with its version and beta
/// headers) for a target of the same format.
pub async fn read_door<T: DeserializeOwned>(
    state: &State,
    body: Body,
    headers: &HeaderMap,
    format: Format,
    wire: crate::model::WireFormat,
    forwarded: &[&str],
) -> Result<(T, crate::model::Native), ApiError> {
    let limit = state.gateway.runtime().config.limits.max_body_bytes;
    let value = read_value(body, headers, limit, format).await?;
    let typed = parse(&value, format)?;
    let native =
        crate::model::Native { format: wire, body: value, headers: forwarded_headers(headers, forwarded), query: None };
    Ok((typed, native))
}

/// A request type from a JSON value; the error names the path of what is wrong.
pub fn parse<T: DeserializeOwned>(value: &Value, format: Format) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." { String::new() } else { format!(" at {path}") };
        ApiError::new(StatusCode::BAD_REQUEST, format, format!("invalid request{at}: {}", e.inner()))
    })
}

/// The caller's version and beta headers, forwarded to a target of its own format.
pub fn forwarded_headers(headers: &HeaderMap, names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .flat_map(|name| {
            headers.get_all(*name).iter().filter_map(|v| v.to_str().ok()).map(|v| (name.to_string(), v.to_string()))
        })
        .collect()
}

/// An OpenAI-style reasoning effort (`low`, `medium`, `high`...; `none` is none); a value with no
/// counterpart is named in `unmapped` as `at`.
pub fn reasoning_effort(effort: Option<&str>, at: &str, unmapped: &mut Vec<String>) -> Option<crate::model::Reasoning> {
    use crate::model::{Effort, Reasoning};
    match effort? {
        "none" => None,
        e => match Effort::parse(e) {
            Some(effort) => Some(Reasoning { effort: Some(effort), budget_tokens: None }),
            None => {
                unmapped.push(at.into());
                None
            }
        },
    }
}

/// The parts of an OpenAI-style content value (Chat Completions' and the Responses API's): a
/// string, or an array of text parts (`text`, `input_text`, `output_text`, `refusal`) and media
/// (`image_url`, `input_image`, `file`, `input_file` with inline data), in order, adjacent text
/// merged. Anything else is named in `unmapped`.
pub fn openai_parts(v: &Value, at: &str, unmapped: &mut Vec<String>) -> Result<Vec<crate::model::Part>, ApiError> {
    use crate::model::Part;
    let mut out: Vec<Part> = Vec::new();
    let push_text = |out: &mut Vec<Part>, t: &str| match out.last_mut() {
        Some(Part::Text { text }) => text.push_str(t),
        _ => out.push(Part::Text { text: t.to_string() }),
    };
    match v {
        Value::Null => {}
        Value::String(s) => push_text(&mut out, s),
        Value::Array(parts) => {
            for (j, p) in parts.iter().enumerate() {
                let media = match p["type"].as_str() {
                    Some("text" | "input_text" | "output_text") => {
                        push_text(&mut out, p["text"].as_str().unwrap_or_default());
                        continue;
                    }
                    Some("refusal") => {
                        push_text(&mut out, p["refusal"].as_str().unwrap_or_default());
                        continue;
                    }
                    Some("image_url") => p["image_url"]["url"].as_str().or(p["image_url"].as_str()),
                    Some("input_image") => p["image_url"].as_str(),
                    Some("file") => p["file"]["file_data"].as_str(),
                    Some("input_file") => p["file_data"].as_str(),
                    None => {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            Format::Openai,
                            format!("{at}: a content part has no type"),
                        ));
                    }
                    Some(_) => None,
                };
                match media {
                    Some(url) => out.push(Part::Media { url: url.to_string() }),
                    None => {
                        unmapped.push(format!("{at}.content[{j}] ({} part)", p["type"].as_str().unwrap_or_default()))
                    }
                }
            }
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                Format::Openai,
                format!("{at}: content must be a string or an array of parts"),
            ));
        }
    }
    Ok(out)
}

/// Text parts joined; media in a role that cannot carry it is named in `unmapped`.
pub fn text_only(parts: Vec<crate::model::Part>, at: &str, unmapped: &mut Vec<String>) -> String {
    let mut text = String::new();
    for p in parts {
        match p {
            crate::model::Part::Text { text: t } => text.push_str(&t),
            _ => unmapped.push(format!("{at} (media outside a user turn)")),
        }
    }
    text
}

/// The top-level fields of a request that the typed form does not read: each is unmapped (refused
/// across formats by name), except those in `harmless`, which change nothing in an answer.
pub fn unmapped_fields(rest: &serde_json::Map<String, Value>, harmless: &[&str]) -> Vec<String> {
    rest.iter().filter(|(k, v)| !v.is_null() && !harmless.contains(&k.as_str())).map(|(k, _)| k.clone()).collect()
}

/// The context of a request, from the headers tollgate's own clients set.
pub fn context(
    entry: EntryPoint,
    runtime: std::sync::Arc<crate::runtime::Runtime>,
    headers: &HeaderMap,
    received: std::time::Instant,
    caller: &crate::callers::Caller,
) -> RequestContext {
    let text = |name: &str| {
        headers.get(name).and_then(|v| v.to_str().ok()).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
    };
    let local_only =
        text("x-tollgate-local-only").is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
    let cache_control = text("cache-control").unwrap_or_default().to_ascii_lowercase();
    let directives: Vec<&str> = cache_control.split(',').map(str::trim).collect();
    let mut ctx = RequestContext::new(entry, runtime);
    ctx.received = received;
    ctx.caller.clone_from(&caller.0);
    ctx.local_only = local_only;
    ctx.path = text("x-tollgate-path");
    ctx.project = text("x-tollgate-project");
    ctx.sensitivity = text("x-tollgate-sensitivity").map(|s| s.to_ascii_lowercase());
    // Only hashed, to draw an experiment's arm; a name longer than any login is cut.
    ctx.user = text("x-tollgate-user").map(|u| u.chars().take(256).collect());
    if let Some(task) = text("x-tollgate-task") {
        ctx.task = task.to_ascii_lowercase();
    }
    ctx.no_cache = directives.contains(&"no-cache");
    ctx.no_store = directives.contains(&"no-store");
    ctx
}

/// Headers every served answer carries: who served it, the gateway's own added time, whether the
/// cache answered, and any budget notes.
pub fn served_headers(served: &Served, ctx: &RequestContext, headers: &mut HeaderMap) {
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.append(name, v);
        }
    };
    set("x-tollgate-provider", &served.target.provider);
    set("x-tollgate-model", &served.target.model);
    set("x-tollgate-request-id", &ctx.request_id);
    set("x-tollgate-cache", if served.cache_hit { "hit" } else { "miss" });
    for (name, value) in &served.notes {
        set(name, value);
    }
    let added = served.added(ctx);
    set("x-tollgate-added-ms", &format!("{:.3}", added.as_secs_f64() * 1000.0));
}

/// How a door renders answers in its format: whole, as a stream of typed events, and, for a
/// target of its own format, each forwarded frame (`None` leaves a frame out) or the failure that
/// ended such a stream (`Err` with its message).
pub struct Render<W, S, F> {
    pub whole: W,
    pub stream: S,
    pub frame: F,
}

/// A forwarded frame as it came: `event:` and `data:` lines.
pub fn raw_frame(event: Option<&str>, data: &str) -> Option<Bytes> {
    let mut s = String::with_capacity(data.len() + 32);
    if let Some(event) = event {
        s.push_str("event: ");
        s.push_str(event);
        s.push('\n');
    }
    for line in data.split('\n') {
        s.push_str("data: ");
        s.push_str(line);
        s.push('\n');
    }
    s.push('\n');
    Some(Bytes::from(s))
}

/// What every chat entry point shares once it has translated the caller's request: the pipeline,
/// errors in the caller's format, the answer rendered whole or streamed, and the served headers.
/// An answer from a target of the caller's own format goes back as the provider sent it
/// (placeholders restored): its body, or its frames.
pub async fn serve_chat<W, S, F, B>(
    state: &State,
    mut ctx: RequestContext,
    headers: &HeaderMap,
    format: Format,
    req: crate::model::ChatRequest,
    id_prefix: &str,
    render: Render<W, S, F>,
) -> Response
where
    W: FnOnce(&crate::model::ChatResponse, &str, &str) -> serde_json::Value,
    S: FnOnce(crate::model::EventStream, String, String) -> B,
    F: FnMut(Result<(Option<&str>, &str), String>) -> Option<Bytes> + Send + 'static,
    B: futures_util::Stream<Item = Bytes> + Send + 'static,
{
    use futures_util::StreamExt;
    if ctx.project.is_none() {
        // The caller's repository: its project comes from the git remote.
        if let Some(dir) = headers.get("x-tollgate-repo").and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()) {
            ctx.project = state.projects.of_dir(dir.into()).await;
        }
    }
    let streamed = req.stream;
    let served = match state.gateway.handle(req, &ctx).await {
        Ok(s) => s,
        Err(e) => return ApiError::from_gateway(&e, format).into_response(),
    };
    let model = served.target.to_string();
    let id = ctx.answer_id.clone().unwrap_or_else(|| crate::model::new_id(id_prefix));
    let mut served_h = HeaderMap::new();
    served_headers(&served, &ctx, &mut served_h);
    let mut response = match (streamed, served.answer) {
        (true, answer) => {
            let mut events = crate::pipeline::events(answer);
            match events.next().await {
                // A target of the caller's format: its frames go back as they came.
                Some(Ok(first @ crate::model::Event::Frame { .. })) => {
                    let mut frame = render.frame;
                    let frames = futures_util::stream::iter([Ok(first)]).chain(events).filter_map(move |e| {
                        std::future::ready(match e {
                            Ok(crate::model::Event::Frame { event, data, .. }) => frame(Ok((event.as_deref(), &data))),
                            Ok(_) => None,
                            Err(e) => frame(Err(format!("the provider failed mid-stream: {e}"))),
                        })
                    });
                    sse_response(frames)
                }
                first => {
                    let events = Box::pin(futures_util::stream::iter(first).chain(events));
                    sse_response((render.stream)(events, id, model))
                }
            }
        }
        (false, crate::pipeline::Answer::Complete(r)) => match &r.wire {
            Some(body) => axum::Json(body).into_response(),
            None => axum::Json((render.whole)(&r, &id, &model)).into_response(),
        },
        // The pipeline streams only when asked; were it to, the caller still gets the whole answer.
        (false, answer @ crate::pipeline::Answer::Stream(_)) => match answer.whole(&model).await {
            Ok(r) => axum::Json((render.whole)(&r, &id, &model)).into_response(),
            Err(e) => ApiError::from_gateway(&e, format).into_response(),
        },
    };
    response.headers_mut().extend(served_h);
    response
}

/// A Server-Sent Events response from a stream of already-framed chunks.
pub fn sse_response(body: impl futures_util::Stream<Item = Bytes> + Send + 'static) -> Response {
    use futures_util::StreamExt;
    let body = Body::from_stream(body.map(Ok::<Bytes, std::convert::Infallible>));
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// One SSE frame: `event: NAME` (when given) and one `data:` line of JSON.
pub fn sse_frame(event: Option<&str>, data: &serde_json::Value) -> Bytes {
    let mut s = String::with_capacity(64);
    if let Some(event) = event {
        s.push_str("event: ");
        s.push_str(event);
        s.push('\n');
    }
    s.push_str("data: ");
    s.push_str(&data.to_string());
    s.push_str("\n\n");
    Bytes::from(s)
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A string, or an array of strings (OpenAI's `stop`, Anthropic's `system` as text).
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The doors' parsers over arbitrary JSON: whatever a caller sends, a door answers with a request
/// or an error, never a panic. Bodies are built from the formats' own field names and words, so
/// that the generator reaches deep into each shape rather than failing at its first field.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::{Format, parse};

    const WORDS: &[&str] = &[
        "model",
        "messages",
        "role",
        "content",
        "type",
        "text",
        "tool_use",
        "tool_result",
        "id",
        "name",
        "input",
        "tools",
        "tool_choice",
        "system",
        "max_tokens",
        "max_output_tokens",
        "stream",
        "thinking",
        "budget_tokens",
        "enabled",
        "adaptive",
        "image",
        "source",
        "base64",
        "data",
        "media_type",
        "url",
        "image_url",
        "function",
        "arguments",
        "parameters",
        "input_schema",
        "response_format",
        "json_schema",
        "json_object",
        "schema",
        "stop",
        "temperature",
        "top_p",
        "n",
        "input_text",
        "output_text",
        "instructions",
        "previous_response_id",
        "reasoning",
        "effort",
        "high",
        "format",
        "call_id",
        "output",
        "function_call",
        "function_call_output",
        "prompt",
        "suffix",
        "encoding_format",
        "float",
        "dimensions",
        "cache_control",
        "ephemeral",
        "metadata",
        "tool_calls",
        "tool_call_id",
        "user",
        "assistant",
        "developer",
        "tool",
        "auto",
        "any",
        "none",
        "required",
        "document",
        "redacted_thinking",
        "signature",
        "is_error",
        "seed",
        "logprobs",
        "strict",
        "item_reference",
        "message",
        "input_image",
        "file",
        "file_data",
        "refusal",
        "web_search",
        "stream_options",
        "include_usage",
    ];

    fn word() -> impl Strategy<Value = String> {
        prop::sample::select(WORDS).prop_map(String::from)
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            word().prop_map(Value::from),
            "[ -~]{0,8}".prop_map(Value::from),
            Just(Value::from("data:image/png;base64,iVBORw0KGgo=")),
        ];
        leaf.prop_recursive(5, 96, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((word(), inner), 0..7).prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// Bodies every door takes, one of each shape: the mutations start from them.
    fn seeds() -> Vec<Value> {
        use serde_json::json;
        vec![
            json!({"model": "m", "max_tokens": 64, "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
                "thinking": {"type": "enabled", "budget_tokens": 1024}, "tools": [{"name": "t", "description": "d", "input_schema": {"type": "object"}}],
                "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "tu1", "name": "t", "input": {"a": 1}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu1", "content": "ok"}]}]}),
            json!({"model": "m", "stream": true, "temperature": 0.3, "stop": ["x"], "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}},
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}], "tool_choice": {"type": "function", "function": {"name": "f"}},
                "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
                    {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": "c1", "content": "ok"}]}),
            json!({"model": "m", "instructions": "be brief", "max_output_tokens": 64, "reasoning": {"effort": "high"}, "text": {"format": {"type": "json_schema", "name": "s", "schema": {}}},
                "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
                "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}, {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "c1", "output": "ok"}]}),
            json!({"model": "m", "input": ["a", "b"], "encoding_format": "float", "dimensions": 8}),
        ]
    }

    /// Every place in a value, as the keys and indexes that lead to it.
    fn places(v: &Value, at: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
        out.push(at.clone());
        match v {
            Value::Object(o) => o.iter().for_each(|(k, v)| {
                at.push(Value::from(k.as_str()));
                places(v, at, out);
                at.pop();
            }),
            Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| {
                at.push(Value::from(i));
                places(v, at, out);
                at.pop();
            }),
            _ => {}
        }
    }

    /// `v` with the value at `path` replaced, or taken out when `with` is `None`.
    fn mutate(v: &mut Value, path: &[Value], with: Option<Value>) {
        let Some((last, parents)) = path.split_last() else {
            if let Some(w) = with {
                *v = w;
            }
            return;
        };
        let mut node = v;
        for step in parents {
            node = match (node, step) {
                (Value::Object(o), Value::String(k)) => o.get_mut(k.as_str()).unwrap(),
                (Value::Array(a), Value::Number(i)) => &mut a[i.as_u64().unwrap() as usize],
                _ => return,
            };
        }
        match (node, last, with) {
            (Value::Object(o), Value::String(k), Some(w)) => {
                o.insert(k.clone(), w);
            }
            (Value::Object(o), Value::String(k), None) => {
                o.shift_remove(k.as_str());
            }
            (Value::Array(a), Value::Number(i), Some(w)) => a[i.as_u64().unwrap() as usize] = w,
            (Value::Array(a), Value::Number(i), None) => {
                a.remove(i.as_u64().unwrap() as usize);
            }
            _ => {}
        }
    }

    /// A door's good body with a few of its places replaced by other JSON or taken out.
    fn body() -> impl Strategy<Value = Value> {
        let changes = prop::collection::vec((any::<prop::sample::Index>(), prop::option::weighted(0.8, json())), 0..4);
        (prop::sample::select(seeds()), changes).prop_map(|(mut v, changes)| {
            for (at, with) in changes {
                let mut all = Vec::new();
                places(&v, &mut Vec::new(), &mut all);
                let path = all[at.index(all.len())].clone();
                mutate(&mut v, &path, with);
            }
            v
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        #[test]
        fn no_door_panics_on_any_body(v in body()) {
            static REDACTOR: std::sync::OnceLock<crate::redact::Redactor> = std::sync::OnceLock::new();
            let redactor = REDACTOR.get_or_init(|| {
                crate::redact::Redactor::new(std::sync::Arc::new(crate::redact::scan::Scanner::new(crate::redact::rules::built_in())))
            });
            let requests = [
                parse::<super::anthropic::MessagesRequest>(&v, Format::Anthropic).ok().map(|w| w.into_internal()),
                parse::<super::openai::ChatCompletionRequest>(&v, Format::Openai).ok().map(|w| w.into_internal().map(|(r, _)| r)),
                parse::<super::responses::ResponsesRequest>(&v, Format::Openai).ok().map(|w| w.into_internal()),
                parse::<super::embeddings::EmbeddingsRequest>(&v, Format::Openai).ok().map(|w| w.into_internal()),
            ];
            // What a door makes of it, the redactor takes too, with the body beside it.
            for mut req in requests.into_iter().flatten().flatten() {
                req.native = Some(crate::model::Native {
                    format: crate::model::WireFormat::OpenaiChat,
                    body: v.clone(),
                    headers: Vec::new(),
                    query: None,
                });
                redactor.mask(&mut req);
            }
        }
    }
}
