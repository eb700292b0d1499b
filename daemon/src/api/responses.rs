//! `POST /v1/responses` in OpenAI's Responses format. A target that serves the Responses API gets
//! the caller's request as sent and its answer goes back as it came (pass-through); any other
//! target gets a translation, and the answer is rendered as a Responses object, or streamed as the
//! documented typed events (`response.created`, `response.in_progress`, `response.output_item.added`,
//! `response.content_part.added`, `response.output_text.delta` ... `response.completed`), each with
//! its `type` and a `sequence_number`.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, Format, sse_frame, unix_now};
use crate::callers::Caller;
use crate::model::{
    ChatRequest, ChatResponse, Event, FinishReason, Message, Part, ResponseFormat, Role, Tool, ToolChoice, Usage,
    WireFormat,
};
use crate::pipeline::EntryPoint;

#[derive(Debug, Deserialize)]
pub struct ResponsesRequest {
    model: String,
    input: Value,
    instructions: Option<String>,
    #[serde(default)]
    stream: bool,
    max_output_tokens: Option<u32>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    #[serde(default)]
    tools: Vec<Value>,
    tool_choice: Option<Value>,
    text: Option<Value>,
    reasoning: Option<Value>,
    parallel_tool_calls: Option<bool>,
    store: Option<bool>,
    /// Everything else the caller sent: forwarded to Responses targets, named when refused.
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

/// Top-level fields that change nothing in a translated answer: account-side tags and storage
/// (`metadata`, `store`, `client_metadata`), end-user ids, capacity, cache routing, and `include`
/// (extra output such as encrypted reasoning, which a translated answer has none of).
const HARMLESS: &[&str] = &[
    "metadata",
    "store",
    "client_metadata",
    "user",
    "safety_identifier",
    "service_tier",
    "prompt_cache_key",
    "include",
    "truncation",
];

/// The caller's beta header, which a Responses target receives as sent.
const FORWARDED: &[&str] = &["openai-beta"];

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, Format::Openai, message)
}

impl ResponsesRequest {
    /// The typed request. Reasoning items of earlier turns are opaque to any other provider (only
    /// the one that wrote them can read them), so a translation leaves them out; every other item,
    /// part, tool or field without a mapping is listed in `unmapped`.
    pub fn into_internal(self) -> Result<ChatRequest, ApiError> {
        let mut unmapped = super::unmapped_fields(&self.rest, HARMLESS);
        if self.parallel_tool_calls == Some(false) {
            unmapped.push("parallel_tool_calls".into());
        }
        let effort = self.reasoning.as_ref().and_then(|r| r["effort"].as_str());
        let reasoning = super::reasoning_effort(effort, "reasoning.effort", &mut unmapped);
        let mut messages = Vec::new();
        if let Some(instructions) = self.instructions.filter(|i| !i.is_empty()) {
            messages.push(Message::text(Role::System, instructions));
        }
        match self.input {
            Value::String(text) => messages.push(Message::text(Role::User, text)),
            Value::Array(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    let at = format!("input[{i}]");
                    let kind = item["type"].as_str().unwrap_or(if item.get("role").is_some() { "message" } else { "" });
                    match kind {
                        "message" => {
                            let role = match item["role"].as_str() {
                                Some("user") => Role::User,
                                Some("assistant") => Role::Assistant,
                                Some("system" | "developer") => Role::System,
                                other => {
                                    return Err(bad(format!(
                                        "{at}.role: {other:?} is not user, assistant, system or developer"
                                    )));
                                }
                            };
                            let parts = super::openai_parts(&item["content"], &at, &mut unmapped)?;
                            if role == Role::User {
                                messages.push(Message { role, content: parts });
                            } else {
                                messages.push(Message::text(role, super::text_only(parts, &at, &mut unmapped)));
                            }
                        }
                        "function_call" => {
                            let call = Part::ToolCall {
                                id: item["call_id"]
                                    .as_str()
                                    .ok_or_else(|| bad(format!("{at}: function_call needs call_id")))?
                                    .to_string(),
                                name: item["name"]
                                    .as_str()
                                    .ok_or_else(|| bad(format!("{at}: function_call needs name")))?
                                    .to_string(),
                                arguments: item["arguments"].as_str().unwrap_or("{}").to_string(),
                            };
                            // Calls of one turn go in one assistant message.
                            match messages.last_mut() {
                                Some(m)
                                    if m.role == Role::Assistant
                                        && m.content.iter().all(|p| matches!(p, Part::ToolCall { .. })) =>
                                {
                                    m.content.push(call)
                                }
                                _ => messages.push(Message { role: Role::Assistant, content: vec![call] }),
                            }
                        }
                        "function_call_output" => {
                            let content = match &item["output"] {
                                Value::String(s) => s.clone(),
                                other => {
                                    let parts = super::openai_parts(other, &at, &mut unmapped)?;
                                    super::text_only(parts, &at, &mut unmapped)
                                }
                            };
                            messages.push(Message {
                                role: Role::Tool,
                                content: vec![Part::ToolResult {
                                    tool_call_id: item["call_id"]
                                        .as_str()
                                        .ok_or_else(|| bad(format!("{at}: function_call_output needs call_id")))?
                                        .to_string(),
                                    name: None,
                                    content,
                                    is_error: false,
                                }],
                            });
                        }
                        "reasoning" => {}
                        other => {
                            unmapped.push(format!("{at} ({} item)", if other.is_empty() { "untyped" } else { other }))
                        }
                    }
                }
            }
            _ => return Err(bad("input: must be a string or an array of items")),
        }
        if !messages.iter().any(|m| m.role != Role::System) {
            return Err(bad("input: at least one message is required"));
        }
        let mut tools = Vec::with_capacity(self.tools.len());
        for (i, t) in self.tools.iter().enumerate() {
            match (t["type"].as_str(), t["name"].as_str()) {
                (Some("function"), Some(name)) => tools.push(Tool {
                    name: name.to_string(),
                    description: t["description"].as_str().map(str::to_string),
                    parameters: t
                        .get("parameters")
                        .cloned()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                }),
                (kind, _) => unmapped.push(format!("tools[{i}] ({} tool)", kind.unwrap_or("untyped"))),
            }
        }
        let tool_choice = match &self.tool_choice {
            None => None,
            Some(Value::String(s)) => Some(match s.as_str() {
                "auto" => ToolChoice::Auto,
                "none" => ToolChoice::None,
                "required" => ToolChoice::Required,
                other => return Err(bad(format!("tool_choice {other:?} is not one of auto, none, required"))),
            }),
            Some(v) if v["type"] == "function" => Some(ToolChoice::Tool(
                v["name"].as_str().ok_or_else(|| bad("tool_choice: a function choice needs a name"))?.to_string(),
            )),
            Some(_) => {
                unmapped.push("tool_choice".into());
                None
            }
        };
        let format = self.text.as_ref().map(|t| &t["format"]).filter(|f| !f.is_null());
        let response_format = match format {
            None => None,
            Some(f) => Some(match f["type"].as_str() {
                Some("text") => ResponseFormat::Text,
                Some("json_object") => ResponseFormat::JsonObject,
                Some("json_schema") => ResponseFormat::JsonSchema {
                    name: f["name"].as_str().unwrap_or("response").to_string(),
                    schema: f["schema"].clone(),
                    strict: f["strict"].as_bool().unwrap_or(false),
                },
                _ => return Err(bad("text.format.type must be text, json_object or json_schema")),
            }),
        };
        if self.text.as_ref().is_some_and(|t| t.get("verbosity").is_some_and(|v| !v.is_null())) {
            unmapped.push("text.verbosity".into());
        }
        Ok(ChatRequest {
            model: self.model,
            messages,
            max_tokens: self.max_output_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            tools,
            tool_choice,
            response_format,
            stream: self.stream,
            unmapped,
            reasoning,
            ..Default::default()
        })
    }
}

pub async fn responses(
    State(state): State<super::State>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let received = Instant::now();
    let result = async {
        let (wire, native) = super::read_door::<ResponsesRequest>(
            &state,
            body,
            &headers,
            Format::Openai,
            WireFormat::OpenaiResponses,
            FORWARDED,
        )
        .await?;
        let store = wire.store != Some(false);
        let mut req = wire.into_internal()?;
        req.native = Some(native);
        let mut ctx = super::context(EntryPoint::Responses, state.gateway.runtime(), &headers, received, &caller);
        continue_stored(&state, &ctx, &mut req).await?;
        ctx.answer_id = Some(crate::model::new_id("resp_"));
        ctx.keep = store && ctx.runtime.config.responses.keep_days > 0;
        let mut seq = 0u64;
        let render = super::Render {
            whole: render,
            stream: render_stream,
            frame: move |frame: Result<(Option<&str>, &str), String>| forward_frame(frame, &mut seq),
        };
        Ok::<_, ApiError>(super::serve_chat(&state, ctx, &headers, Format::Openai, req, "resp_", render).await)
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// `previous_response_id` naming a response tollgate keeps: its conversation goes before this
/// request's turns (after this request's instructions), and the request is translated (a
/// provider does not know tollgate's ids). One that tollgate does not keep stays in the body for a
/// Responses target, which keeps its own.
async fn continue_stored(
    state: &super::State,
    ctx: &crate::pipeline::RequestContext,
    req: &mut ChatRequest,
) -> Result<(), ApiError> {
    let Some(id) = req.native.as_ref().and_then(|n| n.body["previous_response_id"].as_str()).map(str::to_string) else {
        return Ok(());
    };
    let scope = ctx.runtime.identity.username.clone();
    let (lookup, sealer) = (id.clone(), std::sync::Arc::clone(&state.gateway.sealer));
    let stored = state
        .gateway
        .store
        .run(move |c| crate::stored::get(c, &sealer, &lookup, &scope))
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, Format::Openai, e.to_string()))?
        .map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Format::Openai, format!("the response store: {e}"))
        })?;
    let Some(stored) = stored else {
        for u in req.unmapped.iter_mut().filter(|u| *u == "previous_response_id") {
            *u = format!("previous_response_id ({id:?} is not kept here; only a Responses provider knows it)");
        }
        return Ok(());
    };
    req.unmapped.retain(|u| u != "previous_response_id");
    req.native = None;
    let system = req.messages.iter().take_while(|m| m.role == Role::System).count();
    let earlier = stored.conversation();
    req.messages.splice(system..system, earlier);
    Ok(())
}

/// `GET /v1/responses/{id}`: a response tollgate keeps (masked, as it is kept).
pub async fn get(State(state): State<super::State>, axum::extract::Path(id): axum::extract::Path<String>) -> Response {
    let scope = state.gateway.runtime().identity.username.clone();
    let (lookup, sealer) = (id.clone(), std::sync::Arc::clone(&state.gateway.sealer));
    match state.gateway.store.run(move |c| crate::stored::get(c, &sealer, &lookup, &scope)).await {
        Ok(Ok(Some(stored))) => {
            let mut v = render(&stored.answer, &id, &stored.answer.model);
            v["created_at"] = json!(stored.ts_ms / 1000);
            axum::Json(v).into_response()
        }
        Ok(Ok(None)) => not_kept(&id),
        Ok(Err(e)) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Format::Openai, format!("the response store: {e}"))
                .into_response()
        }
        Err(e) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, Format::Openai, e.to_string()).into_response(),
    }
}

/// `DELETE /v1/responses/{id}`.
pub async fn delete(
    State(state): State<super::State>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let scope = state.gateway.runtime().identity.username.clone();
    let lookup = id.clone();
    match state.gateway.store.call_durable(move |c| crate::stored::delete(c, &lookup, &scope)).await {
        Ok(Ok(true)) => axum::Json(json!({"id": id, "object": "response.deleted", "deleted": true})).into_response(),
        Ok(Ok(false)) => not_kept(&id),
        Ok(Err(e)) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Format::Openai, format!("the response store: {e}"))
                .into_response()
        }
        Err(e) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, Format::Openai, e.to_string()).into_response(),
    }
}

fn not_kept(id: &str) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        Format::Openai,
        format!("no response {id:?} is kept here (a Responses provider keeps its own; one made with store=false is not kept)"),
    )
    .into_response()
}

/// A frame of a Responses target's stream, as it came but numbered in order (restoring
/// placeholders may add a delta frame); a failure after it as `response.failed`.
fn forward_frame(frame: Result<(Option<&str>, &str), String>, seq: &mut u64) -> Option<Bytes> {
    let n = *seq;
    *seq += 1;
    match frame {
        Ok((event, data)) => {
            // Most frames are numbered right already: read the number as text, parse only to fix it.
            let numbered = data.split_once("\"sequence_number\":").map(|(_, rest)| {
                rest.trim_start()
                    .bytes()
                    .take_while(u8::is_ascii_digit)
                    .take(19)
                    .fold(0u64, |a, d| a * 10 + u64::from(d - b'0'))
            });
            if numbered.is_some_and(|k| k != n)
                && let Ok(mut v) = serde_json::from_str::<Value>(data)
            {
                v["sequence_number"] = json!(n);
                return Some(sse_frame(event, &v));
            }
            super::raw_frame(event, data)
        }
        Err(message) => Some(failed(n, &message)),
    }
}

fn failed(seq: u64, message: &str) -> Bytes {
    sse_frame(
        Some("response.failed"),
        &json!({"type": "response.failed", "sequence_number": seq, "response": {
            "object": "response", "status": "failed", "output": [],
            "error": {"code": "server_error", "message": message},
        }}),
    )
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.input_tokens.saturating_add(u.output_tokens),
    })
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    let content = if status == "in_progress" {
        json!([])
    } else {
        json!([{"type": "output_text", "text": text, "annotations": []}])
    };
    json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": content})
}

fn call_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call_id, "name": name, "arguments": arguments, "status": status})
}

/// The response object around `output`.
fn response_object(
    id: &str,
    model: &str,
    created: u64,
    status: &str,
    output: Vec<Value>,
    usage: Option<&Usage>,
) -> Value {
    json!({
        "id": id, "object": "response", "created_at": created, "status": status, "model": model,
        "output": output, "error": null,
        "incomplete_details": if status == "incomplete" { json!({"reason": "max_output_tokens"}) } else { Value::Null },
        "usage": usage.map(usage_json),
        "parallel_tool_calls": true, "tool_choice": "auto", "tools": [], "metadata": {},
    })
}

fn status_of(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length | FinishReason::ContentFilter => "incomplete",
        _ => "completed",
    }
}

pub fn render(r: &ChatResponse, id: &str, model: &str) -> Value {
    let mut output = Vec::new();
    let text = r.text();
    if !text.is_empty() {
        output.push(message_item(&format!("msg_{id}"), &text, "completed"));
    }
    for (i, p) in r.content.iter().enumerate() {
        if let Part::ToolCall { id: call_id, name, arguments } = p {
            output.push(call_item(&format!("fc_{id}_{i}"), call_id, name, arguments, "completed"));
        }
    }
    let mut v = response_object(id, model, unix_now(), status_of(r.finish_reason), output, Some(&r.usage));
    v["output_text"] = json!(text);
    v
}

/// The answer as the Responses event sequence. An output item opens with its first delta and
/// closes (`.done` events) when another begins or the answer ends; `response.completed` (or
/// `response.incomplete`) carries the whole output and the usage. A failure mid-stream becomes
/// `response.failed`.
fn render_stream(
    events: crate::model::EventStream,
    id: String,
    model: String,
) -> impl futures_util::Stream<Item = Bytes> + Send {
    enum Open {
        None,
        Text { item: String, text: String },
        Call { item: String, call_id: String, name: String, arguments: String, index: u32 },
    }
    struct S {
        events: crate::model::EventStream,
        id: String,
        model: String,
        created: u64,
        seq: u64,
        output: Vec<Value>,
        open: Open,
        usage: Usage,
        finish: Option<FinishReason>,
        started: bool,
        done: bool,
    }
    impl S {
        fn emit(&mut self, out: &mut Vec<Bytes>, mut v: Value) {
            v["sequence_number"] = json!(self.seq);
            self.seq += 1;
            let kind = v["type"].as_str().unwrap_or_default().to_string();
            out.push(sse_frame(Some(&kind), &v));
        }
        fn close(&mut self, out: &mut Vec<Bytes>) {
            let index = self.output.len();
            match std::mem::replace(&mut self.open, Open::None) {
                Open::None => {}
                Open::Text { item, text } => {
                    let part = json!({"type": "output_text", "text": text, "annotations": []});
                    self.emit(out, json!({"type": "response.output_text.done", "item_id": item, "output_index": index, "content_index": 0, "text": text, "logprobs": []}));
                    self.emit(out, json!({"type": "response.content_part.done", "item_id": item, "output_index": index, "content_index": 0, "part": part}));
                    let done = message_item(&item, &text, "completed");
                    self.emit(out, json!({"type": "response.output_item.done", "output_index": index, "item": done}));
                    self.output.push(done);
                }
                Open::Call { item, call_id, name, arguments, .. } => {
                    self.emit(out, json!({"type": "response.function_call_arguments.done", "item_id": item, "output_index": index, "arguments": arguments}));
                    let done = call_item(&item, &call_id, &name, &arguments, "completed");
                    self.emit(out, json!({"type": "response.output_item.done", "output_index": index, "item": done}));
                    self.output.push(done);
                }
            }
        }
    }
    let state = S {
        events,
        id,
        model,
        created: unix_now(),
        seq: 0,
        output: Vec::new(),
        open: Open::None,
        usage: Usage::default(),
        finish: None,
        started: false,
        done: false,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        let mut out = Vec::new();
        if !s.started {
            s.started = true;
            let r = response_object(&s.id, &s.model, s.created, "in_progress", Vec::new(), None);
            s.emit(&mut out, json!({"type": "response.created", "response": r}));
            s.emit(&mut out, json!({"type": "response.in_progress", "response": r}));
        }
        match s.events.next().await {
            Some(Ok(event)) => match event {
                Event::TextDelta { text } => {
                    let index = s.output.len();
                    if !matches!(s.open, Open::Text { .. }) {
                        s.close(&mut out);
                        let item = format!("msg_{}_{index}", s.id);
                        s.emit(&mut out, json!({"type": "response.output_item.added", "output_index": index, "item": message_item(&item, "", "in_progress")}));
                        s.emit(&mut out, json!({"type": "response.content_part.added", "item_id": item, "output_index": index, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}));
                        s.open = Open::Text { item, text: String::new() };
                    }
                    if let Open::Text { item, text: all } = &mut s.open {
                        all.push_str(&text);
                        let item = item.clone();
                        s.emit(&mut out, json!({"type": "response.output_text.delta", "item_id": item, "output_index": index, "content_index": 0, "delta": text, "logprobs": []}));
                    }
                }
                Event::ToolCallStart { index: call, id: call_id, name } => {
                    s.close(&mut out);
                    let index = s.output.len();
                    let item = format!("fc_{}_{index}", s.id);
                    s.emit(&mut out, json!({"type": "response.output_item.added", "output_index": index, "item": call_item(&item, &call_id, &name, "", "in_progress")}));
                    s.open = Open::Call { item, call_id, name, arguments: String::new(), index: call };
                }
                Event::ToolCallDelta { index: call, arguments } => {
                    let index = s.output.len();
                    if let Open::Call { item, arguments: all, index: open, .. } = &mut s.open
                        && *open == call
                    {
                        all.push_str(&arguments);
                        let item = item.clone();
                        s.emit(&mut out, json!({"type": "response.function_call_arguments.delta", "item_id": item, "output_index": index, "delta": arguments}));
                    }
                }
                Event::Usage { usage } => s.usage.merge(usage),
                Event::Finish { reason } => s.finish = Some(reason),
                Event::Frame { .. } | Event::Body { .. } => {}
            },
            Some(Err(e)) => {
                s.done = true;
                let n = s.seq;
                out.push(failed(n, &format!("the provider failed mid-stream: {e}")));
            }
            None => {
                s.done = true;
                s.close(&mut out);
                let status = status_of(s.finish.unwrap_or(FinishReason::Stop));
                let output = std::mem::take(&mut s.output);
                let r = response_object(&s.id, &s.model, s.created, status, output, Some(&s.usage));
                s.emit(&mut out, json!({"type": format!("response.{status}"), "response": r}));
            }
        }
        let bytes: Bytes = out.concat().into();
        Some((bytes, s))
    })
    .filter(|b| std::future::ready(!b.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> ChatRequest {
        serde_json::from_value::<ResponsesRequest>(v).unwrap().into_internal().unwrap()
    }

    #[test]
    fn items_translate_to_turns_and_unmappable_ones_are_named() {
        let req = parse(json!({
            "model": "m", "instructions": "be brief", "max_output_tokens": 50, "temperature": 0.3,
            "input": [
                {"role": "developer", "content": "rules"},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "weather?"}, {"type": "input_image", "file_id": "file-1"}, {"type": "input_image", "image_url": "https://example.com/a.png"}]},
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
                {"type": "function_call", "call_id": "c1", "name": "get", "arguments": "{\"city\":\"Oslo\"}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"}
            ],
            "tools": [{"type": "function", "name": "get", "parameters": {"type": "object"}}, {"type": "web_search"}],
            "tool_choice": "required", "store": false, "include": ["reasoning.encrypted_content"], "seed": 7,
            "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}}
        }));
        assert_eq!(req.system_text().as_deref(), Some("be brief\n\nrules"));
        assert_eq!(req.messages.len(), 5);
        assert_eq!(req.messages[2].media().collect::<Vec<_>>(), ["https://example.com/a.png"]);
        assert_eq!(req.messages[3].tool_calls().next(), Some(("c1", "get", "{\"city\":\"Oslo\"}")));
        assert!(matches!(&req.messages[4].content[0], Part::ToolResult { content, .. } if content == "sunny"));
        assert_eq!(req.tool_choice, Some(ToolChoice::Required));
        assert_eq!(req.temperature, Some(0.3));
        assert!(matches!(req.response_format, Some(ResponseFormat::JsonSchema { .. })));
        assert_eq!(req.unmapped, vec!["seed", "input[1].content[1] (input_image part)", "tools[1] (web_search tool)"]);
    }

    #[test]
    fn a_string_input_is_one_user_turn_and_a_missing_one_is_refused() {
        let req = parse(json!({"model": "m", "input": "hi"}));
        assert_eq!(req.messages, vec![Message::text(Role::User, "hi")]);
        let err = serde_json::from_value::<ResponsesRequest>(json!({"model": "m", "input": 3}))
            .unwrap()
            .into_internal()
            .unwrap_err();
        assert!(err.message.contains("input"));
    }

    #[tokio::test]
    async fn the_stream_is_the_documented_event_sequence_in_order() {
        let events = vec![
            Ok(Event::TextDelta { text: "Hel".into() }),
            Ok(Event::TextDelta { text: "lo".into() }),
            Ok(Event::ToolCallStart { index: 0, id: "c1".into(), name: "f".into() }),
            Ok(Event::ToolCallDelta { index: 0, arguments: "{}".into() }),
            Ok(Event::Usage { usage: Usage { input_tokens: 5, output_tokens: 3, ..Default::default() } }),
            Ok(Event::Finish { reason: FinishReason::ToolCalls }),
        ];
        let stream: crate::model::EventStream = Box::pin(futures_util::stream::iter(events));
        let bytes: Vec<Bytes> = render_stream(stream, "resp_1".into(), "m".into()).collect().await;
        let text = String::from_utf8(bytes.concat()).unwrap();
        let frames: Vec<Value> =
            text.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
        let kinds: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(f["sequence_number"], i as u64);
        }
        let done = &frames.last().unwrap()["response"];
        assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(done["output"][1]["call_id"], "c1");
        assert_eq!(done["usage"]["total_tokens"], 8);
    }
}
