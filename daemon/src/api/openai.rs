//! `POST /v1/chat/completions` in OpenAI's wire format, streamed (SSE, `[DONE]`) and not.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, Format, OneOrMany, sse_frame, unix_now};
use crate::callers::Caller;
use crate::model::{
    ChatRequest, ChatResponse, Event, FinishReason, Message, Part, ResponseFormat, Role, Tool, ToolChoice, Usage,
    WireFormat,
};
use crate::pipeline::EntryPoint;

#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    model: String,
    messages: Vec<WireMessage>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    stop: Option<OneOrMany>,
    n: Option<u32>,
    #[serde(default)]
    tools: Vec<WireTool>,
    tool_choice: Option<Value>,
    response_format: Option<Value>,
    reasoning_effort: Option<String>,
    /// Everything else the caller sent: forwarded to OpenAI-format targets, named when refused.
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

/// Top-level fields that change nothing in an answer, so a translation may leave them out: an
/// end-user id (`user`, `safety_identifier`), account-side tags and storage (`metadata`,
/// `store`), capacity (`service_tier`), cache routing (`prompt_cache_key`).
const HARMLESS: &[&str] = &["user", "safety_identifier", "metadata", "store", "service_tier", "prompt_cache_key"];

/// The caller's beta header, which an OpenAI-format target receives as sent.
pub const FORWARDED: &[&str] = &["openai-beta"];

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize)]
struct WireMessage {
    role: String,
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
    tool_call_id: Option<String>,
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireToolCall {
    id: String,
    function: WireFunctionCall,
}

#[derive(Debug, Deserialize)]
struct WireFunctionCall {
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Debug, Deserialize)]
struct WireTool {
    #[serde(rename = "type")]
    kind: Option<String>,
    function: Option<WireFunction>,
}

#[derive(Debug, Deserialize)]
struct WireFunction {
    name: String,
    description: Option<String>,
    #[serde(default = "empty_object")]
    parameters: Value,
}

fn empty_object() -> Value {
    json!({"type": "object", "properties": {}})
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, Format::Openai, message)
}

impl ChatCompletionRequest {
    pub fn into_internal(self) -> Result<(ChatRequest, bool), ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(bad("n other than 1 is not supported"));
        }
        let mut unmapped = super::unmapped_fields(&self.rest, HARMLESS);
        let reasoning = super::reasoning_effort(self.reasoning_effort.as_deref(), "reasoning_effort", &mut unmapped);
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.into_iter().enumerate() {
            let at = format!("messages[{i}]");
            let parts = super::openai_parts(m.content.as_ref().unwrap_or(&Value::Null), &at, &mut unmapped)?;
            if m.role == "user" {
                messages.push(Message { role: Role::User, content: parts });
                continue;
            }
            let text = super::text_only(parts, &at, &mut unmapped);
            let msg = match m.role.as_str() {
                "system" | "developer" => Message::text(Role::System, text),
                "assistant" => {
                    let mut content = Vec::new();
                    if !text.is_empty() {
                        content.push(Part::Text { text });
                    }
                    for c in m.tool_calls {
                        content.push(Part::ToolCall {
                            id: c.id,
                            name: c.function.name,
                            arguments: c.function.arguments,
                        });
                    }
                    Message { role: Role::Assistant, content }
                }
                "tool" => {
                    let id = m.tool_call_id.ok_or_else(|| bad(format!("{at}: a tool message needs tool_call_id")))?;
                    Message {
                        role: Role::Tool,
                        content: vec![Part::ToolResult {
                            tool_call_id: id,
                            name: m.name,
                            content: text,
                            is_error: false,
                        }],
                    }
                }
                other => return Err(bad(format!("{at}: unknown role {other:?}"))),
            };
            messages.push(msg);
        }
        if messages.is_empty() {
            return Err(bad("messages must not be empty"));
        }
        let tool_choice = match self.tool_choice {
            None => None,
            Some(Value::String(s)) => Some(match s.as_str() {
                "auto" => ToolChoice::Auto,
                "none" => ToolChoice::None,
                "required" => ToolChoice::Required,
                other => {
                    return Err(bad(format!("tool_choice {other:?} is not one of auto, none, required")));
                }
            }),
            Some(v) => Some(ToolChoice::Tool(
                v["function"]["name"].as_str().ok_or_else(|| bad("tool_choice must name a function"))?.to_string(),
            )),
        };
        let response_format = match self.response_format {
            None => None,
            Some(v) => Some(match v["type"].as_str() {
                Some("text") => ResponseFormat::Text,
                Some("json_object") => ResponseFormat::JsonObject,
                Some("json_schema") => ResponseFormat::JsonSchema {
                    name: v["json_schema"]["name"].as_str().unwrap_or("response").to_string(),
                    schema: v["json_schema"]["schema"].clone(),
                    strict: v["json_schema"]["strict"].as_bool().unwrap_or(false),
                },
                _ => {
                    return Err(bad("response_format.type must be text, json_object or json_schema"));
                }
            }),
        };
        let include_usage = self.stream_options.is_some_and(|o| o.include_usage);
        let mut tools = Vec::with_capacity(self.tools.len());
        for (i, t) in self.tools.into_iter().enumerate() {
            match (t.kind.as_deref(), t.function) {
                (None | Some("function"), Some(f)) => {
                    tools.push(Tool { name: f.name, description: f.description, parameters: f.parameters })
                }
                (kind, _) => unmapped.push(format!("tools[{i}] ({} tool)", kind.unwrap_or("untyped"))),
            }
        }
        let req = ChatRequest {
            model: self.model,
            messages,
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            temperature: self.temperature,
            top_p: self.top_p,
            stop: self.stop.map(OneOrMany::into_vec).unwrap_or_default(),
            tools,
            tool_choice,
            response_format,
            stream: self.stream.unwrap_or(false),
            unmapped,
            reasoning,
            ..Default::default()
        };
        Ok((req, include_usage))
    }
}

pub async fn chat_completions(
    State(state): State<super::State>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let received = Instant::now();
    let result = async {
        let (wire, native) = super::read_door::<ChatCompletionRequest>(
            &state,
            body,
            &headers,
            Format::Openai,
            WireFormat::OpenaiChat,
            FORWARDED,
        )
        .await?;
        let (mut req, include_usage) = wire.into_internal()?;
        req.native = Some(native);
        let render = super::Render {
            whole: render,
            stream: move |events, id, model| render_stream(events, id, model, include_usage),
            frame: move |frame: Result<(Option<&str>, &str), String>| forward_frame(frame, include_usage),
        };
        Ok::<_, ApiError>(
            super::serve_chat(
                &state,
                super::context(EntryPoint::Openai, state.gateway.runtime(), &headers, received, &caller),
                &headers,
                Format::Openai,
                req,
                "chatcmpl-",
                render,
            )
            .await,
        )
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// A frame of an OpenAI-format target's stream, as it came. tollgate asks every such stream for its
/// usage (the ledger needs it); a caller that did not ask does not get the usage chunk. A failure
/// after the first frame becomes an error chunk, with no `[DONE]` after it.
pub fn forward_frame(frame: Result<(Option<&str>, &str), String>, include_usage: bool) -> Option<Bytes> {
    match frame {
        Ok((event, data)) => {
            if !include_usage && data.starts_with('{') && data.contains("\"usage\"") {
                let v: Value = serde_json::from_str(data).ok()?;
                if v["choices"].as_array().is_some_and(Vec::is_empty) && v["usage"].is_object() {
                    return None;
                }
            }
            super::raw_frame(event, data)
        }
        Err(message) => Some(sse_frame(None, &ApiError::new(StatusCode::BAD_GATEWAY, Format::Openai, message).body())),
    }
}

fn finish_str(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens.saturating_add(u.output_tokens),
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

pub fn render(r: &ChatResponse, id: &str, model: &str) -> Value {
    let text = r.text();
    let calls: Vec<Value> = r
        .content
        .iter()
        .filter_map(|p| match p {
            Part::ToolCall { id, name, arguments } => {
                Some(json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}))
            }
            _ => None,
        })
        .collect();
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }, "refusal": null});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    json!({
        "id": id,
        "object": "chat.completion",
        "created": unix_now(),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_str(r.finish_reason), "logprobs": null}],
        "usage": usage_json(&r.usage),
    })
}

/// The answer as `chat.completion.chunk` frames: a role chunk, deltas, a finish chunk, the usage
/// chunk when asked for, then `[DONE]`. A failure mid-stream becomes an `error` chunk and the
/// stream ends without `[DONE]`, which the SDKs raise as an error.
fn render_stream(
    events: crate::model::EventStream,
    id: String,
    model: String,
    include_usage: bool,
) -> impl futures_util::Stream<Item = Bytes> + Send {
    let created = unix_now();
    let chunk = move |delta: Value, finish: Option<&str>, usage: bool| {
        let mut c = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        });
        if usage {
            c["usage"] = Value::Null;
        }
        c
    };
    struct S<F> {
        events: crate::model::EventStream,
        chunk: F,
        usage: Usage,
        started: bool,
        done: bool,
    }
    let state = S { events, chunk, usage: Usage::default(), started: false, done: false };
    futures_util::stream::unfold(state, move |mut s| async move {
        if s.done {
            return None;
        }
        let mut out = Vec::new();
        if !s.started {
            s.started = true;
            out.push(sse_frame(None, &(s.chunk)(json!({"role": "assistant", "content": ""}), None, include_usage)));
        }
        match s.events.next().await {
            Some(Ok(event)) => match event {
                Event::TextDelta { text } => out.push(sse_frame(None, &(s.chunk)(json!({"content": text}), None, include_usage))),
                Event::ToolCallStart { index, id, name } => out.push(sse_frame(
                    None,
                    &(s.chunk)(json!({"tool_calls": [{"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}), None, include_usage),
                )),
                Event::ToolCallDelta { index, arguments } => out.push(sse_frame(
                    None,
                    &(s.chunk)(json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}), None, include_usage),
                )),
                Event::Usage { usage } => s.usage.merge(usage),
                Event::Finish { reason } => out.push(sse_frame(None, &(s.chunk)(json!({}), Some(finish_str(reason)), include_usage))),
                Event::Frame { .. } | Event::Body { .. } => {}
            },
            Some(Err(e)) => {
                s.done = true;
                let err = ApiError::new(StatusCode::BAD_GATEWAY, Format::Openai, format!("the provider failed mid-stream: {e}"));
                out.push(sse_frame(None, &err.body()));
            }
            None => {
                s.done = true;
                if include_usage {
                    let mut last = (s.chunk)(json!({}), None, true);
                    last["choices"] = json!([]);
                    last["usage"] = usage_json(&s.usage);
                    out.push(sse_frame(None, &last));
                }
                out.push(Bytes::from_static(b"data: [DONE]\n\n"));
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
    fn a_conversation_with_tool_calls_and_results_translates() {
        let wire: ChatCompletionRequest = serde_json::from_value(json!({
            "model": "fast",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get", "arguments": "{\"city\":\"Oslo\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
            ],
            "stream": true, "stream_options": {"include_usage": true},
            "stop": "END", "max_completion_tokens": 50,
            "tools": [{"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "get"}},
            "response_format": {"type": "json_object"}
        }))
        .unwrap();
        let (req, include_usage) = wire.into_internal().unwrap();
        assert!(include_usage && req.stream);
        assert_eq!(req.stop, vec!["END"]);
        assert_eq!(req.max_tokens, Some(50));
        assert_eq!(req.tool_choice, Some(ToolChoice::Tool("get".into())));
        assert_eq!(req.response_format, Some(ResponseFormat::JsonObject));
        assert_eq!(req.system_text().as_deref(), Some("be brief"));
        assert_eq!(req.messages[2].tool_calls().next(), Some(("c1", "get", "{\"city\":\"Oslo\"}")));
        assert!(
            matches!(&req.messages[3].content[0], Part::ToolResult { tool_call_id, content, .. } if tool_call_id == "c1" && content == "sunny")
        );
    }

    #[test]
    fn what_translation_cannot_carry_is_named_and_malformed_input_is_a_400() {
        let wire: ChatCompletionRequest = serde_json::from_value(json!({
            "model": "m", "seed": 1, "user": "u", "tools": [{"type": "custom", "custom": {"name": "x"}}],
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}]}]
        }))
        .unwrap();
        let (req, _) = wire.into_internal().unwrap();
        assert_eq!(req.unmapped, ["seed", "messages[0].content[2] (input_audio part)", "tools[0] (custom tool)"]);
        assert_eq!(req.messages[0].media().collect::<Vec<_>>(), ["data:image/png;base64,AAAA"]);
        let wire: ChatCompletionRequest = serde_json::from_value(json!({
            "model": "m", "messages": [{"role": "user", "content": [{"text": "no type"}]}]
        }))
        .unwrap();
        let err = wire.into_internal().unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(err.message.contains("no type"), "{}", err.message);
    }
}
