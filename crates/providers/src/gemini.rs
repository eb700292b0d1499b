//! Google Gemini API: `models/{model}:generateContent`, and `:streamGenerateContent?alt=sse`.

use std::collections::{HashMap, VecDeque};

use serde_json::{Map, Value, json};

use super::frame::Frame;
use super::{StreamDecoder, Target, UpstreamError, WireRequest, auth_header, join_url, u64_at};
use tollgate_model::{ChatRequest, ChatResponse, Event, FinishReason, Part, ResponseFormat, Role, ToolChoice, Usage};

pub fn build(target: &Target<'_>, req: &ChatRequest, stream: bool) -> WireRequest {
    let method = if stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
    let url = join_url(&target.config.base_url, &format!("v1beta/models/{}:{method}", target.model));
    let mut body = Map::new();
    // Gemini names the function beside its result; find it from the call the result answers.
    let names: HashMap<&str, &str> =
        req.messages.iter().flat_map(|m| m.tool_calls()).map(|(id, name, _)| (id, name)).collect();
    let contents: Vec<Value> = match &req.raw_prompt {
        Some(prompt) => vec![json!({"role": "user", "parts": [{"text": prompt}]})],
        None => req
            .messages
            .iter()
            .filter(|m| m.role != Role::System)
            .map(|m| {
                let role = if m.role == Role::Assistant { "model" } else { "user" };
                let parts: Vec<Value> = m
                    .content
                    .iter()
                    .map(|p| match p {
                        Part::Text { text } => json!({"text": text}),
                        Part::Media { url } => match tollgate_model::data_url(url) {
                            Some((mime_type, data)) => json!({"inline_data": {"mime_type": mime_type, "data": data}}),
                            None => json!({"file_data": {"file_uri": url}}),
                        },
                        Part::ToolCall { name, arguments, .. } => {
                            let args: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
                            json!({"functionCall": {"name": name, "args": args}})
                        }
                        Part::ToolResult { tool_call_id, name, content, .. } => {
                            let name = name
                                .as_deref()
                                .or_else(|| names.get(tool_call_id.as_str()).copied())
                                .unwrap_or(tool_call_id);
                            let response: Value =
                                serde_json::from_str(content).unwrap_or_else(|_| json!({"content": content}));
                            let response = if response.is_object() { response } else { json!({"content": response}) };
                            json!({"functionResponse": {"name": name, "response": response}})
                        }
                    })
                    .collect();
                json!({"role": role, "parts": parts})
            })
            .collect(),
    };
    body.insert("contents".into(), Value::Array(contents));
    if let Some(system) = req.system_text() {
        body.insert("systemInstruction".into(), json!({"parts": [{"text": system}]}));
    }
    let mut generation = Map::new();
    if let Some(t) = req.temperature {
        generation.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        generation.insert("topP".into(), json!(p));
    }
    if let Some(n) = req.max_tokens {
        generation.insert("maxOutputTokens".into(), json!(n));
    }
    if !req.stop.is_empty() {
        generation.insert("stopSequences".into(), json!(req.stop));
    }
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => {
            generation.insert("responseMimeType".into(), json!("application/json"));
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            generation.insert("responseMimeType".into(), json!("application/json"));
            generation.insert("responseJsonSchema".into(), schema.clone());
        }
        _ => {}
    }
    if let Some(r) = &req.reasoning {
        generation.insert("thinkingConfig".into(), json!({"thinkingBudget": r.budget()}));
    }
    if !generation.is_empty() {
        body.insert("generationConfig".into(), Value::Object(generation));
    }
    if !req.tools.is_empty() {
        let decls: Vec<Value> = req
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "parameters": t.parameters}))
            .collect();
        body.insert("tools".into(), json!([{"functionDeclarations": decls}]));
    }
    if let Some(choice) = &req.tool_choice {
        let config = match choice {
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::None => json!({"mode": "NONE"}),
            ToolChoice::Required => json!({"mode": "ANY"}),
            ToolChoice::Tool(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
        };
        body.insert("toolConfig".into(), json!({"functionCallingConfig": config}));
    }
    WireRequest::new(url, auth_header(target, "x-goog-api-key", false).into_iter().collect(), Value::Object(body))
}

fn finish_reason(s: &str, saw_call: bool) -> FinishReason {
    match s {
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        _ if saw_call => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

fn usage(u: &Value) -> Usage {
    Usage {
        input_tokens: u64_at(&u["promptTokenCount"]),
        output_tokens: u64_at(&u["candidatesTokenCount"]) + u64_at(&u["thoughtsTokenCount"]),
        cached_tokens: u64_at(&u["cachedContentTokenCount"]),
        cache_write_tokens: 0,
    }
}

pub fn parse_response(v: &Value, model: &str) -> Result<ChatResponse, String> {
    let candidate = v["candidates"].get(0).ok_or_else(|| match v["promptFeedback"]["blockReason"].as_str() {
        Some(reason) => format!("the prompt was blocked ({reason})"),
        None => "no candidates in the answer".to_string(),
    })?;
    let mut content = Vec::new();
    let mut text = String::new();
    let mut calls = 0;
    for part in candidate["content"]["parts"].as_array().into_iter().flatten() {
        if let Some(t) = part["text"].as_str() {
            if part["thought"] != true {
                text.push_str(t);
            }
        } else if let Some(call) = part.get("functionCall") {
            calls += 1;
            content.push(Part::ToolCall {
                id: call["id"].as_str().map_or_else(|| format!("call_{calls}"), str::to_string),
                name: call["name"].as_str().unwrap_or_default().to_string(),
                arguments: call["args"].to_string(),
            });
        }
    }
    if !text.is_empty() {
        content.insert(0, Part::Text { text });
    }
    Ok(ChatResponse {
        id: v["responseId"].as_str().map(str::to_string),
        model: v["modelVersion"].as_str().unwrap_or(model).to_string(),
        finish_reason: finish_reason(candidate["finishReason"].as_str().unwrap_or("STOP"), calls > 0),
        content,
        usage: usage(&v["usageMetadata"]),
        wire: None,
    })
}

#[derive(Default)]
pub struct Decoder {
    calls: u32,
    finished: bool,
}

impl StreamDecoder for Decoder {
    fn decode(&mut self, frame: Frame, out: &mut VecDeque<Event>) -> Result<(), UpstreamError> {
        let Frame::Sse { data, .. } = frame else {
            return Ok(());
        };
        let v: Value =
            serde_json::from_str(&data).map_err(|e| UpstreamError::Protocol(format!("bad stream chunk: {e}")))?;
        if let Some(err) = v.get("error") {
            return Err(UpstreamError::Cut(err["message"].as_str().unwrap_or("error in stream").to_string()));
        }
        if let Some(candidate) = v["candidates"].get(0) {
            for part in candidate["content"]["parts"].as_array().into_iter().flatten() {
                if let Some(t) = part["text"].as_str() {
                    if part["thought"] != true && !t.is_empty() {
                        out.push_back(Event::TextDelta { text: t.to_string() });
                    }
                } else if let Some(call) = part.get("functionCall") {
                    let index = self.calls;
                    self.calls += 1;
                    let id = call["id"].as_str().map_or_else(|| format!("call_{}", index + 1), str::to_string);
                    out.push_back(Event::ToolCallStart {
                        index,
                        id,
                        name: call["name"].as_str().unwrap_or_default().to_string(),
                    });
                    out.push_back(Event::ToolCallDelta { index, arguments: call["args"].to_string() });
                }
            }
            if let Some(reason) = candidate["finishReason"].as_str() {
                self.finished = true;
                if v["usageMetadata"].is_object() {
                    out.push_back(Event::Usage { usage: usage(&v["usageMetadata"]) });
                }
                out.push_back(Event::Finish { reason: finish_reason(reason, self.calls > 0) });
                return Ok(());
            }
        }
        if v["usageMetadata"].is_object() {
            out.push_back(Event::Usage { usage: usage(&v["usageMetadata"]) });
        }
        Ok(())
    }

    fn finished(&self) -> bool {
        self.finished
    }
}
