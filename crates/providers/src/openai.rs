//! OpenAI Chat Completions, and every server that speaks it: vLLM, llama.cpp server, LM Studio,
//! Mistral, Azure OpenAI deployments (`key_header = "api-key"`, `query = { api-version = ... }`).
//! Raw prompts go to the legacy `/completions` endpoint, which those servers use for FIM.

use std::collections::VecDeque;

use serde_json::{Map, Value, json};

use super::frame::Frame;
use super::{StreamDecoder, Target, UpstreamError, WireRequest, auth_header, join_url, u64_at};
use tollgate_model::{ChatRequest, ChatResponse, Event, FinishReason, Part, ResponseFormat, Role, ToolChoice, Usage};

pub fn build(target: &Target<'_>, req: &ChatRequest, stream: bool) -> WireRequest {
    let mut body = Map::new();
    body.insert("model".into(), json!(target.model));
    let path = if let Some(prompt) = &req.raw_prompt {
        body.insert("prompt".into(), json!(prompt));
        "completions"
    } else {
        body.insert("messages".into(), Value::Array(req.messages.iter().flat_map(message).collect()));
        "chat/completions"
    };
    if let Some(n) = req.max_tokens {
        body.insert("max_tokens".into(), json!(n));
    }
    if let Some(t) = req.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if !req.stop.is_empty() {
        body.insert("stop".into(), json!(req.stop));
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = &req.tool_choice {
        body.insert("tool_choice".into(), tool_choice(choice));
    }
    if let Some(format) = &req.response_format {
        body.insert("response_format".into(), response_format(format));
    }
    if let Some(r) = &req.reasoning {
        body.insert("reasoning_effort".into(), json!(r.effort().name()));
    }
    if stream {
        body.insert("stream".into(), json!(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    WireRequest::new(
        join_url(&target.config.base_url, path),
        auth_header(target, "authorization", true).into_iter().collect(),
        Value::Object(body),
    )
}

pub fn tool_choice(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::None => json!("none"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
    }
}

pub fn response_format(format: &ResponseFormat) -> Value {
    match format {
        ResponseFormat::Text => json!({"type": "text"}),
        ResponseFormat::JsonObject => json!({"type": "json_object"}),
        ResponseFormat::JsonSchema { name, schema, strict } => {
            json!({"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": strict}})
        }
    }
}

/// One internal message as OpenAI messages: tool results each become a `tool` message.
fn message(m: &tollgate_model::Message) -> Vec<Value> {
    match m.role {
        Role::Tool | Role::User if m.content.iter().any(|p| matches!(p, Part::ToolResult { .. })) => {
            let mut out = Vec::new();
            for part in &m.content {
                match part {
                    Part::ToolResult { tool_call_id, content, .. } => {
                        out.push(json!({"role": "tool", "tool_call_id": tool_call_id, "content": content}))
                    }
                    Part::Text { text } => out.push(json!({"role": "user", "content": text})),
                    Part::Media { url } => out.push(json!({"role": "user", "content": [media_part(url)]})),
                    Part::ToolCall { .. } => {}
                }
            }
            out
        }
        Role::Assistant => {
            let text = m.joined_text();
            let calls: Vec<Value> = m
                .tool_calls()
                .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}))
                .collect();
            let mut msg = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
            if !calls.is_empty() {
                msg["tool_calls"] = Value::Array(calls);
            }
            vec![msg]
        }
        Role::System => vec![json!({"role": "system", "content": m.joined_text()})],
        Role::User | Role::Tool if m.media().next().is_some() => {
            let parts: Vec<Value> = m
                .content
                .iter()
                .filter_map(|p| match p {
                    Part::Text { text } => Some(json!({"type": "text", "text": text})),
                    Part::Media { url } => Some(media_part(url)),
                    _ => None,
                })
                .collect();
            vec![json!({"role": "user", "content": parts})]
        }
        Role::User | Role::Tool => vec![json!({"role": "user", "content": m.joined_text()})],
    }
}

/// An image as an `image_url` part; a document (PDF) as a `file` part.
fn media_part(url: &str) -> Value {
    match tollgate_model::data_url(url) {
        Some(("application/pdf", _)) => json!({"type": "file", "file": {"filename": "document.pdf", "file_data": url}}),
        _ => json!({"type": "image_url", "image_url": {"url": url}}),
    }
}

pub fn finish_reason(s: &str) -> FinishReason {
    match s {
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

fn usage(u: &Value) -> Usage {
    Usage {
        input_tokens: u64_at(&u["prompt_tokens"]),
        output_tokens: u64_at(&u["completion_tokens"]),
        cached_tokens: u64_at(&u["prompt_tokens_details"]["cached_tokens"]),
        cache_write_tokens: 0,
    }
}

pub fn parse_response(v: &Value) -> Result<ChatResponse, String> {
    let choice = v["choices"].get(0).ok_or("no choices in the answer")?;
    let mut content = Vec::new();
    let text = choice["message"]["content"].as_str().or_else(|| choice["text"].as_str()).unwrap_or_default();
    if !text.is_empty() {
        content.push(Part::Text { text: text.to_string() });
    }
    if let Some(calls) = choice["message"]["tool_calls"].as_array() {
        for call in calls {
            content.push(Part::ToolCall {
                id: call["id"].as_str().unwrap_or_default().to_string(),
                name: call["function"]["name"].as_str().ok_or("a tool call without a name")?.to_string(),
                arguments: call["function"]["arguments"].as_str().unwrap_or("{}").to_string(),
            });
        }
    }
    Ok(ChatResponse {
        id: v["id"].as_str().map(str::to_string),
        model: v["model"].as_str().unwrap_or_default().to_string(),
        content,
        finish_reason: finish_reason(choice["finish_reason"].as_str().unwrap_or("stop")),
        usage: usage(&v["usage"]),
        wire: None,
    })
}

#[derive(Default)]
pub struct Decoder {
    done: bool,
    finished: bool,
}

impl StreamDecoder for Decoder {
    fn locate(&self, v: &Value) -> Option<tollgate_model::DeltaAt> {
        let choices = v["choices"].as_array()?;
        let [choice] = choices.as_slice() else { return None };
        let i = &choice["index"];
        if choice["text"].is_string() {
            // A legacy completion chunk.
            return Some(tollgate_model::DeltaAt {
                channel: format!("choice {i}"),
                pointer: "/choices/0/text".into(),
                json: false,
            });
        }
        let delta = &choice["delta"];
        let calls = delta["tool_calls"].as_array().map_or(0, Vec::len);
        match (delta["content"].is_string(), calls) {
            (true, 0) => Some(tollgate_model::DeltaAt {
                channel: format!("choice {i}"),
                pointer: "/choices/0/delta/content".into(),
                json: false,
            }),
            (false, 1) if delta["tool_calls"][0]["function"]["arguments"].is_string() => {
                Some(tollgate_model::DeltaAt {
                    channel: format!("choice {i} tool {}", delta["tool_calls"][0]["index"]),
                    pointer: "/choices/0/delta/tool_calls/0/function/arguments".into(),
                    json: true,
                })
            }
            _ => None,
        }
    }

    fn decode(&mut self, frame: Frame, out: &mut VecDeque<Event>) -> Result<(), UpstreamError> {
        let Frame::Sse { data, .. } = frame else {
            return Ok(());
        };
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let v: Value =
            serde_json::from_str(&data).map_err(|e| UpstreamError::Protocol(format!("bad stream chunk: {e}")))?;
        if let Some(err) = v.get("error") {
            let msg = err["message"].as_str().unwrap_or("error in stream");
            return Err(UpstreamError::Cut(msg.to_string()));
        }
        if let Some(choice) = v["choices"].get(0) {
            let delta = &choice["delta"];
            let text = delta["content"].as_str().or_else(|| choice["text"].as_str());
            if let Some(text) = text.filter(|t| !t.is_empty()) {
                out.push_back(Event::TextDelta { text: text.to_string() });
            }
            if let Some(calls) = delta["tool_calls"].as_array() {
                for call in calls {
                    let index = call["index"].as_u64().unwrap_or(0) as u32;
                    if let Some(name) = call["function"]["name"].as_str() {
                        let id = call["id"].as_str().unwrap_or_default().to_string();
                        out.push_back(Event::ToolCallStart { index, id, name: name.to_string() });
                    }
                    if let Some(args) = call["function"]["arguments"].as_str().filter(|a| !a.is_empty()) {
                        out.push_back(Event::ToolCallDelta { index, arguments: args.to_string() });
                    }
                }
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                self.finished = true;
                out.push_back(Event::Finish { reason: finish_reason(reason) });
            }
        }
        if v["usage"].is_object() {
            out.push_back(Event::Usage { usage: usage(&v["usage"]) });
        }
        Ok(())
    }

    fn finished(&self) -> bool {
        self.done || self.finished
    }
}

/// For servers that stream one token per chunk and report no usage (llama-cpp-python): passes the
/// events through, and when the stream ended without a usage report, adds one with the output
/// tokens counted per chunk and the input tokens from the server's tokenizer endpoint.
pub fn count_usage(
    events: tollgate_model::EventStream,
    http: reqwest::Client,
    url: reqwest::Url,
    req: &ChatRequest,
) -> tollgate_model::EventStream {
    use futures_util::StreamExt;
    let prompt = match &req.raw_prompt {
        Some(p) => p.clone(),
        None => req.messages.iter().map(tollgate_model::Message::joined_text).collect::<Vec<_>>().join("\n"),
    };
    struct S {
        events: tollgate_model::EventStream,
        chunks: u64,
        reported: bool,
        done: bool,
        http: reqwest::Client,
        url: reqwest::Url,
        prompt: String,
    }
    let state = S { events, chunks: 0, reported: false, done: false, http, url, prompt };
    Box::pin(futures_util::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        match s.events.next().await {
            Some(Ok(event)) => {
                match &event {
                    Event::TextDelta { .. } | Event::ToolCallDelta { .. } => s.chunks += 1,
                    Event::Usage { .. } => s.reported = true,
                    _ => {}
                }
                Some((Ok(event), s))
            }
            Some(Err(e)) => {
                s.done = true;
                Some((Err(e), s))
            }
            None if s.reported => None,
            None => {
                s.done = true;
                let input = tokenize_count(&s.http, s.url.clone(), &s.prompt).await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "could not count prompt tokens");
                    0
                });
                Some((
                    Ok(Event::Usage {
                        usage: Usage {
                            input_tokens: input,
                            output_tokens: s.chunks,
                            cached_tokens: 0,
                            cache_write_tokens: 0,
                        },
                    }),
                    s,
                ))
            }
        }
    }))
}

async fn tokenize_count(http: &reqwest::Client, url: reqwest::Url, text: &str) -> Result<u64, String> {
    let response = http
        .post(url)
        .json(&json!({"input": text}))
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let v: Value = response.error_for_status().map_err(|e| e.to_string())?.json().await.map_err(|e| e.to_string())?;
    v["count"]
        .as_u64()
        .or_else(|| v["tokens"].as_array().map(|t| t.len() as u64))
        .ok_or_else(|| "no count in the answer".to_string())
}
