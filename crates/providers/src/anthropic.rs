//! Anthropic Messages API (`POST /v1/messages`), streamed as its documented event sequence.
//!
//! Usage: Anthropic's `input_tokens` excludes prompt-cache reads; internally input counts every
//! prompt token and `cached_tokens` is the subset read from the cache, as OpenAI reports it.

use std::collections::{HashMap, VecDeque};

use serde_json::{Map, Value, json};

use super::frame::Frame;
use super::{StreamDecoder, Target, UpstreamError, WireRequest, auth_header, join_url, u64_at};
use tollgate_model::{
    ChatRequest, ChatResponse, Event, FinishReason, Message, Part, ResponseFormat, Role, ToolChoice, Usage,
};

pub const API_VERSION: &str = "2023-06-01";
/// Anthropic requires `max_tokens`; used when the caller gave none.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

pub fn build(target: &Target<'_>, req: &ChatRequest, stream: bool) -> WireRequest {
    let mut body = Map::new();
    body.insert("model".into(), json!(target.model));
    let mut max_tokens = req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    if let Some(r) = &req.reasoning {
        // The thinking budget counts within max_tokens and must stay below it: the answer keeps
        // the room the caller gave it.
        let budget = r.budget().max(1_024);
        max_tokens = max_tokens.saturating_add(budget);
        body.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": budget}));
    }
    body.insert("max_tokens".into(), json!(max_tokens));
    let mut system = req.system_text().unwrap_or_default();
    if let Some(instruction) = req.response_format.as_ref().and_then(json_instruction) {
        if !system.is_empty() {
            system.push_str("\n\n");
        }
        system.push_str(&instruction);
    }
    if !system.is_empty() {
        body.insert("system".into(), json!(system));
    }
    let messages = match &req.raw_prompt {
        Some(prompt) => vec![json!({"role": "user", "content": prompt})],
        None => messages(&req.messages),
    };
    body.insert("messages".into(), Value::Array(messages));
    // Anthropic takes no temperature with thinking on.
    if let (Some(t), None) = (req.temperature, &req.reasoning) {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if !req.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(req.stop));
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters}))
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = &req.tool_choice {
        body.insert(
            "tool_choice".into(),
            match choice {
                ToolChoice::Auto => json!({"type": "auto"}),
                ToolChoice::None => json!({"type": "none"}),
                ToolChoice::Required => json!({"type": "any"}),
                ToolChoice::Tool(name) => json!({"type": "tool", "name": name}),
            },
        );
    }
    if stream {
        body.insert("stream".into(), json!(true));
    }
    let mut headers: Vec<(&'static str, String)> = auth_header(target, "x-api-key", false).into_iter().collect();
    headers.push(("anthropic-version", API_VERSION.to_string()));
    WireRequest::new(join_url(&target.config.base_url, "v1/messages"), headers, Value::Object(body))
}

/// Anthropic has no JSON mode: the format becomes an instruction in the system prompt.
fn json_instruction(format: &ResponseFormat) -> Option<String> {
    match format {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some("Respond with one JSON object and nothing else.".into()),
        ResponseFormat::JsonSchema { schema, .. } => {
            Some(format!("Respond with one JSON object and nothing else. It must match this JSON Schema:\n{schema}"))
        }
    }
}

/// Internal messages as Anthropic turns: system messages left out (they go in `system`), tool
/// results as `tool_result` blocks of a user turn, consecutive turns of one role merged.
pub fn messages(messages: &[Message]) -> Vec<Value> {
    let mut out: Vec<(String, Vec<Value>)> = Vec::new();
    for m in messages {
        let role = match m.role {
            Role::System => continue,
            Role::User | Role::Tool => "user",
            Role::Assistant => "assistant",
        };
        let blocks: Vec<Value> = m
            .content
            .iter()
            .filter_map(|p| match p {
                Part::Text { text } if text.is_empty() => None,
                Part::Text { text } => Some(json!({"type": "text", "text": text})),
                Part::ToolCall { id, name, arguments } => {
                    let input: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
                    Some(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
                }
                Part::Media { url } => Some(media_block(url)),
                Part::ToolResult { tool_call_id, content, is_error, .. } => {
                    Some(json!({"type": "tool_result", "tool_use_id": tool_call_id, "content": content, "is_error": is_error}))
                }
            })
            .collect();
        match out.last_mut() {
            Some((r, b)) if r == role => b.extend(blocks),
            _ => out.push((role.to_string(), blocks)),
        }
    }
    out.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect()
}

/// An image or document as an Anthropic block: base64 from a data URL, or a URL source.
fn media_block(url: &str) -> Value {
    let kind = |media_type: &str| if media_type == "application/pdf" { "document" } else { "image" };
    match tollgate_model::data_url(url) {
        Some((media_type, data)) => {
            json!({"type": kind(media_type), "source": {"type": "base64", "media_type": media_type, "data": data}})
        }
        None => {
            let kind = if url.to_ascii_lowercase().ends_with(".pdf") { "document" } else { "image" };
            json!({"type": kind, "source": {"type": "url", "url": url}})
        }
    }
}

pub fn stop_reason(s: &str) -> FinishReason {
    match s {
        "max_tokens" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

fn usage(u: &Value) -> Usage {
    let cached = u64_at(&u["cache_read_input_tokens"]);
    let written = u64_at(&u["cache_creation_input_tokens"]);
    Usage {
        input_tokens: u64_at(&u["input_tokens"]).saturating_add(cached).saturating_add(written),
        output_tokens: u64_at(&u["output_tokens"]),
        cached_tokens: cached,
        cache_write_tokens: written,
    }
}

pub fn parse_response(v: &Value) -> Result<ChatResponse, String> {
    let blocks = v["content"].as_array().ok_or("no content in the answer")?;
    let mut content = Vec::new();
    for b in blocks {
        match b["type"].as_str() {
            Some("text") => content.push(Part::Text { text: b["text"].as_str().unwrap_or_default().to_string() }),
            Some("tool_use") => content.push(Part::ToolCall {
                id: b["id"].as_str().unwrap_or_default().to_string(),
                name: b["name"].as_str().ok_or("a tool_use block without a name")?.to_string(),
                arguments: b["input"].to_string(),
            }),
            _ => {}
        }
    }
    Ok(ChatResponse {
        id: v["id"].as_str().map(str::to_string),
        model: v["model"].as_str().unwrap_or_default().to_string(),
        content,
        finish_reason: stop_reason(v["stop_reason"].as_str().unwrap_or("end_turn")),
        usage: usage(&v["usage"]),
        wire: None,
    })
}

#[derive(Default)]
pub struct Decoder {
    /// Anthropic content-block index -> internal tool-call index.
    tool_blocks: HashMap<u64, u32>,
    next_tool: u32,
    usage: Usage,
    stopped: bool,
}

impl StreamDecoder for Decoder {
    fn locate(&self, v: &Value) -> Option<tollgate_model::DeltaAt> {
        if v["type"] != "content_block_delta" {
            return None;
        }
        let (field, json) = match v["delta"]["type"].as_str()? {
            "text_delta" => ("text", false),
            "thinking_delta" => ("thinking", false),
            "input_json_delta" => ("partial_json", true),
            _ => return None,
        };
        Some(tollgate_model::DeltaAt {
            channel: format!("block {}", v["index"]),
            pointer: format!("/delta/{field}"),
            json,
        })
    }

    fn decode(&mut self, frame: Frame, out: &mut VecDeque<Event>) -> Result<(), UpstreamError> {
        let Frame::Sse { data, .. } = frame else {
            return Ok(());
        };
        let v: Value =
            serde_json::from_str(&data).map_err(|e| UpstreamError::Protocol(format!("bad stream event: {e}")))?;
        match v["type"].as_str().unwrap_or_default() {
            "message_start" => {
                self.usage = usage(&v["message"]["usage"]);
                out.push_back(Event::Usage { usage: self.usage });
            }
            "content_block_start" => {
                let block = &v["content_block"];
                if block["type"] == "tool_use" {
                    let index = self.next_tool;
                    self.next_tool += 1;
                    self.tool_blocks.insert(u64_at(&v["index"]), index);
                    out.push_back(Event::ToolCallStart {
                        index,
                        id: block["id"].as_str().unwrap_or_default().to_string(),
                        name: block["name"].as_str().unwrap_or_default().to_string(),
                    });
                } else if let Some(text) = block["text"].as_str().filter(|t| !t.is_empty()) {
                    out.push_back(Event::TextDelta { text: text.to_string() });
                }
            }
            "content_block_delta" => {
                let delta = &v["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        out.push_back(Event::TextDelta { text: delta["text"].as_str().unwrap_or_default().to_string() })
                    }
                    Some("input_json_delta") => {
                        if let Some(&index) = self.tool_blocks.get(&u64_at(&v["index"])) {
                            let args = delta["partial_json"].as_str().unwrap_or_default();
                            if !args.is_empty() {
                                out.push_back(Event::ToolCallDelta { index, arguments: args.to_string() });
                            }
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                let u = &v["usage"];
                if u.is_object() {
                    // The final usage repeats or completes what message_start said.
                    let mut later = usage(u);
                    if u.get("input_tokens").is_none() {
                        later.input_tokens = self.usage.input_tokens;
                        later.cached_tokens = self.usage.cached_tokens;
                        later.cache_write_tokens = self.usage.cache_write_tokens;
                    }
                    self.usage.merge(later);
                    out.push_back(Event::Usage { usage: self.usage });
                }
                if let Some(reason) = v["delta"]["stop_reason"].as_str() {
                    out.push_back(Event::Finish { reason: stop_reason(reason) });
                }
            }
            "message_stop" => self.stopped = true,
            "error" => {
                let msg = v["error"]["message"].as_str().unwrap_or("error in stream");
                return Err(UpstreamError::Cut(msg.to_string()));
            }
            _ => {}
        }
        Ok(())
    }

    fn finished(&self) -> bool {
        self.stopped
    }
}
