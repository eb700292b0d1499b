//! Ollama's native API: `/api/chat` for conversations, `/api/generate` (raw) for plain completions;
//! streams are newline-delimited JSON.

use std::collections::VecDeque;

use serde_json::{Map, Value, json};

use super::frame::Frame;
use super::{StreamDecoder, Target, UpstreamError, WireRequest, auth_header, join_url, u64_at};
use tollgate_model::{ChatRequest, ChatResponse, Event, FinishReason, Part, ResponseFormat, Role, Usage};

pub fn build(target: &Target<'_>, req: &ChatRequest, stream: bool) -> WireRequest {
    let mut body = Map::new();
    body.insert("model".into(), json!(target.model));
    body.insert("stream".into(), json!(stream));
    let path = if let Some(prompt) = &req.raw_prompt {
        body.insert("prompt".into(), json!(prompt));
        body.insert("raw".into(), json!(true));
        "api/generate"
    } else {
        body.insert("messages".into(), Value::Array(req.messages.iter().flat_map(message).collect()));
        "api/chat"
    };
    if req.reasoning.is_some() {
        body.insert("think".into(), json!(true));
    }
    let mut options = Map::new();
    if let Some(t) = req.temperature {
        options.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        options.insert("top_p".into(), json!(p));
    }
    if let Some(n) = req.max_tokens {
        options.insert("num_predict".into(), json!(n));
    }
    if !req.stop.is_empty() {
        options.insert("stop".into(), json!(req.stop));
    }
    if !options.is_empty() {
        body.insert("options".into(), Value::Object(options));
    }
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => {
            body.insert("format".into(), json!("json"));
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            body.insert("format".into(), schema.clone());
        }
        _ => {}
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    WireRequest::new(
        join_url(&target.config.base_url, path),
        auth_header(target, "authorization", true).into_iter().collect(),
        Value::Object(body),
    )
}

fn message(m: &tollgate_model::Message) -> Vec<Value> {
    let role = match m.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let mut out = Vec::new();
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut images = Vec::new();
    for part in &m.content {
        match part {
            Part::Text { text: t } => text.push_str(t),
            // Only inline images reach here (`providers::supports`).
            Part::Media { url } => images.extend(tollgate_model::data_url(url).map(|(_, data)| data)),
            Part::ToolCall { name, arguments, .. } => {
                let args: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
                calls.push(json!({"function": {"name": name, "arguments": args}}));
            }
            Part::ToolResult { name, content, .. } => {
                let mut msg = json!({"role": "tool", "content": content});
                if let Some(name) = name {
                    msg["tool_name"] = json!(name);
                }
                out.push(msg);
            }
        }
    }
    if !text.is_empty() || !calls.is_empty() || out.is_empty() {
        let mut msg = json!({"role": role, "content": text});
        if !calls.is_empty() {
            msg["tool_calls"] = Value::Array(calls);
        }
        if !images.is_empty() {
            msg["images"] = json!(images);
        }
        out.insert(0, msg);
    }
    out
}

fn finish_reason(v: &Value, saw_call: bool) -> FinishReason {
    match v["done_reason"].as_str() {
        Some("length") => FinishReason::Length,
        _ if saw_call => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

fn usage(v: &Value) -> Usage {
    Usage {
        input_tokens: u64_at(&v["prompt_eval_count"]),
        output_tokens: u64_at(&v["eval_count"]),
        cached_tokens: 0,
        cache_write_tokens: 0,
    }
}

fn tool_calls(v: &Value, first_index: u32) -> Vec<(u32, String, String, String)> {
    v["message"]["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, call)| {
            let index = first_index + i as u32;
            let id = call["id"].as_str().map_or_else(|| format!("call_{}", index + 1), str::to_string);
            (
                index,
                id,
                call["function"]["name"].as_str().unwrap_or_default().to_string(),
                call["function"]["arguments"].to_string(),
            )
        })
        .collect()
}

pub fn parse_response(v: &Value) -> Result<ChatResponse, String> {
    if let Some(err) = v["error"].as_str() {
        return Err(err.to_string());
    }
    let text = v["message"]["content"].as_str().or_else(|| v["response"].as_str()).unwrap_or_default();
    let mut content = Vec::new();
    if !text.is_empty() {
        content.push(Part::Text { text: text.to_string() });
    }
    let calls = tool_calls(v, 0);
    let saw_call = !calls.is_empty();
    content.extend(calls.into_iter().map(|(_, id, name, arguments)| Part::ToolCall { id, name, arguments }));
    Ok(ChatResponse {
        id: None,
        model: v["model"].as_str().unwrap_or_default().to_string(),
        content,
        finish_reason: finish_reason(v, saw_call),
        usage: usage(v),
        wire: None,
    })
}

#[derive(Default)]
pub struct Decoder {
    calls: u32,
    done: bool,
}

impl StreamDecoder for Decoder {
    fn decode(&mut self, frame: Frame, out: &mut VecDeque<Event>) -> Result<(), UpstreamError> {
        let Frame::Line(line) = frame else {
            return Ok(());
        };
        let v: Value =
            serde_json::from_str(&line).map_err(|e| UpstreamError::Protocol(format!("bad stream line: {e}")))?;
        if let Some(err) = v["error"].as_str() {
            return Err(UpstreamError::Cut(err.to_string()));
        }
        let text = v["message"]["content"].as_str().or_else(|| v["response"].as_str()).unwrap_or_default();
        if !text.is_empty() {
            out.push_back(Event::TextDelta { text: text.to_string() });
        }
        for (index, id, name, arguments) in tool_calls(&v, self.calls) {
            self.calls += 1;
            out.push_back(Event::ToolCallStart { index, id, name });
            out.push_back(Event::ToolCallDelta { index, arguments });
        }
        if v["done"] == true {
            self.done = true;
            out.push_back(Event::Usage { usage: usage(&v) });
            out.push_back(Event::Finish { reason: finish_reason(&v, self.calls > 0) });
        }
        Ok(())
    }

    fn finished(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ProviderConfig, ProviderKind};

    fn target(config: &ProviderConfig) -> Target<'_> {
        Target { provider: "ollama", config, model: "qwen2.5-coder:1.5b", key: None }
    }

    #[test]
    fn a_raw_prompt_goes_to_generate_and_its_ndjson_stream_decodes() {
        let config = ProviderConfig {
            kind: ProviderKind::Ollama,
            base_url: "http://127.0.0.1:11434/".into(),
            local: None,
            enabled: true,
            key_header: None,
            query: Default::default(),
            tokenize_path: None,
            responses_api: None,
        };
        let req = ChatRequest {
            raw_prompt: Some("<|fim_prefix|>fn a(<|fim_suffix|>)<|fim_middle|>".into()),
            max_tokens: Some(16),
            ..Default::default()
        };
        let wire = build(&target(&config), &req, true);
        assert_eq!(wire.url, "http://127.0.0.1:11434/api/generate");
        assert_eq!(wire.body["raw"], true);
        assert_eq!(wire.body["options"]["num_predict"], 16);
        assert!(wire.headers.is_empty(), "a local provider without a key sends none");

        let mut d = Decoder::default();
        let mut out = VecDeque::new();
        for line in [
            r#"{"model":"m","response":"x: i32","done":false}"#,
            r#"{"model":"m","response":"","done":true,"done_reason":"stop","prompt_eval_count":9,"eval_count":3}"#,
        ] {
            d.decode(Frame::Line(line.into()), &mut out).unwrap();
        }
        assert!(d.finished());
        let events: Vec<Event> = out.into_iter().collect();
        assert_eq!(events[0], Event::TextDelta { text: "x: i32".into() });
        assert_eq!(
            events[1],
            Event::Usage {
                usage: Usage { input_tokens: 9, output_tokens: 3, cached_tokens: 0, cache_write_tokens: 0 }
            }
        );
        assert_eq!(events[2], Event::Finish { reason: FinishReason::Stop });
    }
}
