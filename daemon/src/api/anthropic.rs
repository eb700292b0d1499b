//! `POST /v1/messages` in Anthropic's wire format, streamed as its documented event sequence:
//! `message_start`, then per content block `content_block_start` / `content_block_delta`... /
//! `content_block_stop`, then `message_delta` (stop reason, usage) and `message_stop`.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, Format, sse_frame};
use crate::callers::Caller;
use crate::model::{
    ChatRequest, ChatResponse, Effort, Event, FinishReason, Message, Part, Reasoning, Role, Tool, ToolChoice, Usage,
    WireFormat,
};
use crate::pipeline::EntryPoint;

#[derive(Debug, Deserialize)]
pub struct MessagesRequest {
    model: String,
    max_tokens: Option<u32>,
    messages: Vec<WireMessage>,
    system: Option<Value>,
    #[serde(default)]
    stream: bool,
    temperature: Option<f64>,
    top_p: Option<f64>,
    #[serde(default)]
    stop_sequences: Vec<String>,
    #[serde(default)]
    tools: Vec<WireTool>,
    tool_choice: Option<Value>,
    thinking: Option<Value>,
    /// Everything else the caller sent: forwarded to Anthropic targets, named when refused.
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

/// Top-level fields that change nothing in an answer, so a translation may leave them out:
/// `metadata` (an account-side user id), `service_tier` (capacity, not content).
const HARMLESS: &[&str] = &["metadata", "service_tier"];

#[derive(Debug, Deserialize)]
struct WireMessage {
    role: String,
    content: Value,
}

#[derive(Debug, Deserialize)]
struct WireTool {
    name: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    description: Option<String>,
    input_schema: Option<Value>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, Format::Anthropic, message)
}

/// Text of a `system` value or a `tool_result` content: a string or an array of blocks, of which
/// text is read and any other kind is named in `unmapped`.
fn blocks_text(v: &Value, at: &str, unmapped: &mut Vec<String>) -> Result<String, ApiError> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut out = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                match b["type"].as_str() {
                    Some("text") => out.push(b["text"].as_str().unwrap_or_default().to_string()),
                    other => unmapped.push(format!("{at}.{j} ({} block)", other.unwrap_or("untyped"))),
                }
            }
            Ok(out.join("\n"))
        }
        _ => Err(bad(format!("{at}: must be a string or an array of text blocks"))),
    }
}

impl MessagesRequest {
    /// The typed request. Cache-control marks are hints with no counterpart elsewhere (other
    /// providers cache prompts on their own) and thinking blocks of earlier turns can only be
    /// checked by the provider that wrote them, so a translation leaves both out; everything else
    /// without a mapping is listed in `unmapped`.
    pub fn into_internal(self) -> Result<ChatRequest, ApiError> {
        let mut rest = self.rest;
        // Adaptive thinking's effort; clearing old thinking blocks, which a translation does anyway
        // (it leaves thinking blocks of earlier turns out).
        let effort = rest.get("output_config").and_then(|o| o["effort"].as_str()).and_then(Effort::parse);
        if rest.get("output_config").and_then(Value::as_object).is_some_and(|o| o.keys().all(|k| k == "effort")) {
            rest.shift_remove("output_config");
        }
        if rest.get("context_management").is_some_and(|c| {
            c["edits"]
                .as_array()
                .is_some_and(|e| e.iter().all(|e| e["type"].as_str().is_some_and(|t| t.starts_with("clear_thinking"))))
        }) {
            rest.shift_remove("context_management");
        }
        let mut unmapped = super::unmapped_fields(&rest, HARMLESS);
        let reasoning = match self.thinking.as_ref().map(|t| (t["type"].as_str(), t["budget_tokens"].as_u64())) {
            None | Some((Some("disabled"), _)) => None,
            Some((Some("enabled"), Some(budget))) => {
                Some(Reasoning { effort, budget_tokens: Some(u32::try_from(budget).unwrap_or(u32::MAX)) })
            }
            Some((Some("adaptive"), _)) => {
                Some(Reasoning { effort: effort.or(Some(Effort::Medium)), budget_tokens: None })
            }
            Some(_) => {
                unmapped.push("thinking".into());
                None
            }
        };
        let mut messages = Vec::with_capacity(self.messages.len() + 1);
        if let Some(system) = &self.system {
            let text = blocks_text(system, "system", &mut unmapped)?;
            if !text.is_empty() {
                messages.push(Message::text(Role::System, text));
            }
        }
        for (i, m) in self.messages.into_iter().enumerate() {
            let at = format!("messages.{i}");
            let role = match m.role.as_str() {
                "user" => Role::User,
                "assistant" => Role::Assistant,
                "system" => Role::System,
                other => {
                    return Err(bad(format!("{at}.role: {other:?} is not user, assistant or system")));
                }
            };
            let content = match m.content {
                Value::String(text) => vec![Part::Text { text }],
                Value::Array(blocks) => {
                    let mut parts = Vec::with_capacity(blocks.len());
                    for (j, b) in blocks.into_iter().enumerate() {
                        let at = format!("{at}.content.{j}");
                        match b["type"].as_str() {
                            Some("text") => {
                                parts.push(Part::Text { text: b["text"].as_str().unwrap_or_default().to_string() })
                            }
                            Some("tool_use") => parts.push(Part::ToolCall {
                                id: b["id"].as_str().unwrap_or_default().to_string(),
                                name: b["name"]
                                    .as_str()
                                    .ok_or_else(|| bad(format!("{at}: tool_use needs a name")))?
                                    .to_string(),
                                arguments: b["input"].to_string(),
                            }),
                            Some("tool_result") => parts.push(Part::ToolResult {
                                tool_call_id: b["tool_use_id"]
                                    .as_str()
                                    .ok_or_else(|| bad(format!("{at}: tool_result needs tool_use_id")))?
                                    .to_string(),
                                name: None,
                                content: blocks_text(&b["content"], &format!("{at}.content"), &mut unmapped)?,
                                is_error: b["is_error"].as_bool().unwrap_or(false),
                            }),
                            Some("thinking" | "redacted_thinking") => {}
                            Some(kind @ ("image" | "document")) => {
                                let source = &b["source"];
                                let url = match source["type"].as_str() {
                                    Some("base64") => source["media_type"]
                                        .as_str()
                                        .zip(source["data"].as_str())
                                        .map(|(t, d)| format!("data:{t};base64,{d}")),
                                    Some("url") => source["url"].as_str().map(str::to_string),
                                    _ => None,
                                };
                                match url {
                                    Some(url) => parts.push(Part::Media { url }),
                                    None => unmapped.push(format!(
                                        "{at} ({kind} with a {} source)",
                                        source["type"].as_str().unwrap_or("missing")
                                    )),
                                }
                            }
                            other => unmapped.push(format!("{at} ({} block)", other.unwrap_or("untyped"))),
                        }
                    }
                    parts
                }
                _ => {
                    return Err(bad(format!("{at}.content: must be a string or an array of blocks")));
                }
            };
            messages.push(Message { role, content });
        }
        if !messages.iter().any(|m| m.role != Role::System) {
            return Err(bad("messages: at least one message is required"));
        }
        let tool_choice = match &self.tool_choice {
            None => None,
            Some(v) => Some(match v["type"].as_str() {
                Some("auto") => ToolChoice::Auto,
                Some("any") => ToolChoice::Required,
                Some("none") => ToolChoice::None,
                Some("tool") => ToolChoice::Tool(
                    v["name"].as_str().ok_or_else(|| bad("tool_choice: type tool needs a name"))?.to_string(),
                ),
                _ => return Err(bad("tool_choice.type must be auto, any, tool or none")),
            }),
        };
        let mut tools = Vec::with_capacity(self.tools.len());
        for (i, t) in self.tools.into_iter().enumerate() {
            match (t.kind.as_deref(), t.input_schema) {
                (None | Some("custom"), Some(schema)) => {
                    tools.push(Tool { name: t.name, description: t.description, parameters: schema })
                }
                (kind, _) => unmapped.push(format!("tools.{i} ({} tool {:?})", kind.unwrap_or("schemaless"), t.name)),
            }
        }
        Ok(ChatRequest {
            model: self.model,
            messages,
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            stop: self.stop_sequences,
            tools,
            tool_choice,
            stream: self.stream,
            unmapped,
            reasoning,
            ..Default::default()
        })
    }
}

/// The caller's version and beta headers, which an Anthropic target receives as sent.
pub const FORWARDED: &[&str] = &["anthropic-version", "anthropic-beta"];

pub async fn messages(
    State(state): State<super::State>,
    Extension(caller): Extension<Caller>,
    uri: http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let received = Instant::now();
    let result = async {
        let req = read_request(&state, body, &uri, &headers, false).await?;
        let render = super::Render { whole: render, stream: render_stream, frame: forward_frame };
        Ok::<_, ApiError>(
            super::serve_chat(
                &state,
                super::context(EntryPoint::Anthropic, state.gateway.runtime(), &headers, received, &caller),
                &headers,
                Format::Anthropic,
                req,
                "msg_",
                render,
            )
            .await,
        )
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /v1/messages/count_tokens`: Anthropic targets count their own tokens (the request masked
/// as a call would send it); for any other the count is tollgate's estimate, marked so in
/// `x-tollgate-estimate`.
pub async fn count_tokens(
    State(state): State<super::State>,
    Extension(caller): Extension<Caller>,
    uri: http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let req = read_request(&state, body, &uri, &headers, true).await?;
        let ctx = super::context(EntryPoint::Anthropic, state.gateway.runtime(), &headers, Instant::now(), &caller);
        let count =
            state.gateway.count_tokens(req, &ctx).await.map_err(|e| ApiError::from_gateway(&e, Format::Anthropic))?;
        let mut response = axum::Json(json!({"input_tokens": count.input_tokens})).into_response();
        if count.estimated {
            response.headers_mut().insert("x-tollgate-estimate", http::HeaderValue::from_static("o200k"));
        }
        Ok::<_, ApiError>(response)
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// A Messages request: typed, with the caller's own body, headers and query kept for an Anthropic
/// target. A token count (`counting`) has no `max_tokens`; a call must have one.
pub async fn read_request(
    state: &super::State,
    body: Body,
    uri: &http::Uri,
    headers: &HeaderMap,
    counting: bool,
) -> Result<ChatRequest, ApiError> {
    let (wire, mut native) = super::read_door::<MessagesRequest>(
        state,
        body,
        headers,
        Format::Anthropic,
        WireFormat::AnthropicMessages,
        FORWARDED,
    )
    .await?;
    if wire.max_tokens.is_none() && !counting {
        return Err(bad("invalid request: missing field `max_tokens`"));
    }
    native.query = uri.query().map(str::to_string);
    let mut req = wire.into_internal()?;
    req.native = Some(native);
    Ok(req)
}

/// A frame of an Anthropic target's stream, as it came; a failure after it as an `error` event.
fn forward_frame(frame: Result<(Option<&str>, &str), String>) -> Option<Bytes> {
    match frame {
        Ok((event, data)) => super::raw_frame(event, data),
        Err(message) => {
            Some(sse_frame(Some("error"), &ApiError::new(StatusCode::BAD_GATEWAY, Format::Anthropic, message).body()))
        }
    }
}

fn stop_str(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter => "refusal",
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input_tokens.saturating_sub(u.cached_tokens).saturating_sub(u.cache_write_tokens),
        "output_tokens": u.output_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "cache_creation_input_tokens": u.cache_write_tokens,
    })
}

pub fn render(r: &ChatResponse, id: &str, model: &str) -> Value {
    let content: Vec<Value> = r
        .content
        .iter()
        .filter_map(|p| match p {
            Part::Text { text } => Some(json!({"type": "text", "text": text})),
            Part::ToolCall { id, name, arguments } => {
                let input: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
                Some(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
            }
            Part::ToolResult { .. } | Part::Media { .. } => None,
        })
        .collect();
    json!({
        "id": id, "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": stop_str(r.finish_reason), "stop_sequence": null, "usage": usage_json(&r.usage),
    })
}

/// The answer as Anthropic's stream events. Content blocks open when their first delta arrives and
/// close when another kind of block begins or the answer ends; `message_delta` waits for the end,
/// since some providers report usage after their finish reason. A failure mid-stream becomes an
/// `error` event.
fn render_stream(
    events: crate::model::EventStream,
    id: String,
    model: String,
) -> impl futures_util::Stream<Item = Bytes> + Send {
    #[derive(PartialEq)]
    enum Open {
        None,
        Text,
        Tool(u32),
    }
    struct S {
        events: crate::model::EventStream,
        id: String,
        model: String,
        usage: Usage,
        stop: Option<FinishReason>,
        open: Open,
        block: i64,
        started: bool,
        done: bool,
    }
    let state = S {
        events,
        id,
        model,
        usage: Usage::default(),
        stop: None,
        open: Open::None,
        block: -1,
        started: false,
        done: false,
    };

    fn close(s: &mut S, out: &mut Vec<Bytes>) {
        if s.open != Open::None {
            out.push(sse_frame(Some("content_block_stop"), &json!({"type": "content_block_stop", "index": s.block})));
            s.open = Open::None;
        }
    }

    futures_util::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        let mut out = Vec::new();
        let next = s.events.next().await;
        if !s.started {
            s.started = true;
            // Usage that arrived with the first event (Anthropic, Gemini) is reported at once.
            if let Some(Ok(Event::Usage { usage })) = &next {
                s.usage.merge(*usage);
            }
            out.push(sse_frame(
                Some("message_start"),
                &json!({"type": "message_start", "message": {
                    "id": s.id, "type": "message", "role": "assistant", "model": s.model, "content": [],
                    "stop_reason": null, "stop_sequence": null, "usage": usage_json(&s.usage),
                }}),
            ));
        }
        match next {
            Some(Ok(event)) => match event {
                Event::TextDelta { text } => {
                    if s.open != Open::Text {
                        close(&mut s, &mut out);
                        s.block += 1;
                        s.open = Open::Text;
                        out.push(sse_frame(
                            Some("content_block_start"),
                            &json!({"type": "content_block_start", "index": s.block, "content_block": {"type": "text", "text": ""}}),
                        ));
                    }
                    out.push(sse_frame(
                        Some("content_block_delta"),
                        &json!({"type": "content_block_delta", "index": s.block, "delta": {"type": "text_delta", "text": text}}),
                    ));
                }
                Event::ToolCallStart { index, id, name } => {
                    close(&mut s, &mut out);
                    s.block += 1;
                    s.open = Open::Tool(index);
                    out.push(sse_frame(
                        Some("content_block_start"),
                        &json!({"type": "content_block_start", "index": s.block, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
                    ));
                }
                Event::ToolCallDelta { index, arguments } => {
                    if s.open == Open::Tool(index) {
                        out.push(sse_frame(
                            Some("content_block_delta"),
                            &json!({"type": "content_block_delta", "index": s.block, "delta": {"type": "input_json_delta", "partial_json": arguments}}),
                        ));
                    }
                }
                Event::Usage { usage } => s.usage.merge(usage),
                Event::Finish { reason } => s.stop = Some(reason),
                Event::Frame { .. } | Event::Body { .. } => {}
            },
            Some(Err(e)) => {
                s.done = true;
                let err = ApiError::new(StatusCode::BAD_GATEWAY, Format::Anthropic, format!("the provider failed mid-stream: {e}"));
                out.push(sse_frame(Some("error"), &err.body()));
            }
            None => {
                s.done = true;
                close(&mut s, &mut out);
                let stop = s.stop.unwrap_or(FinishReason::Stop);
                out.push(sse_frame(
                    Some("message_delta"),
                    &json!({"type": "message_delta", "delta": {"stop_reason": stop_str(stop), "stop_sequence": null}, "usage": usage_json(&s.usage)}),
                ));
                out.push(sse_frame(Some("message_stop"), &json!({"type": "message_stop"})));
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

    #[test]
    fn system_blocks_tool_use_and_results_translate() {
        let wire: MessagesRequest = serde_json::from_value(json!({
            "model": "code", "max_tokens": 100,
            "system": [{"type": "text", "text": "be brief"}],
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get", "input": {"city": "Oslo"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "sunny"}]}]}
            ],
            "tool_choice": {"type": "any"},
            "tools": [{"name": "get", "input_schema": {"type": "object"}}]
        }))
        .unwrap();
        let req = wire.into_internal().unwrap();
        assert_eq!(req.system_text().as_deref(), Some("be brief"));
        assert_eq!(req.tool_choice, Some(ToolChoice::Required));
        assert_eq!(req.messages[2].tool_calls().next(), Some(("t1", "get", "{\"city\":\"Oslo\"}")));
        assert!(matches!(&req.messages[3].content[0], Part::ToolResult { content, .. } if content == "sunny"));
    }

    #[test]
    fn cached_tokens_are_reported_apart_from_input() {
        let u = usage_json(&Usage { input_tokens: 10, output_tokens: 2, cached_tokens: 4, cache_write_tokens: 0 });
        assert_eq!(u["input_tokens"], 6);
        assert_eq!(u["cache_read_input_tokens"], 4);
    }
}
