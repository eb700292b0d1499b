//! OpenAI Responses API (`POST /responses`), reached when the caller speaks it too (the
//! `/v1/responses` door, pass-through): its whole answer and its typed stream events read into the
//! internal model for the ledger, the cache and the audit log. The caller gets the provider's own
//! body and events.

use std::collections::{HashMap, VecDeque};

use serde_json::Value;

use super::frame::Frame;
use super::{StreamDecoder, UpstreamError, u64_at};
use tollgate_model::{ChatResponse, DeltaAt, Event, FinishReason, Part, Usage};

pub fn usage(u: &Value) -> Usage {
    Usage {
        input_tokens: u64_at(&u["input_tokens"]),
        output_tokens: u64_at(&u["output_tokens"]),
        cached_tokens: u64_at(&u["input_tokens_details"]["cached_tokens"]),
        cache_write_tokens: 0,
    }
}

/// The finish reason of a response object: its status, its incomplete reason, its tool calls.
fn finish(v: &Value, has_calls: bool) -> FinishReason {
    match (v["status"].as_str(), v["incomplete_details"]["reason"].as_str()) {
        (Some("incomplete"), Some("content_filter")) => FinishReason::ContentFilter,
        (Some("incomplete"), _) => FinishReason::Length,
        _ if has_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

pub fn parse_response(v: &Value) -> Result<ChatResponse, String> {
    let output = v["output"].as_array().ok_or("no output in the answer")?;
    let mut content = Vec::new();
    for item in output {
        match item["type"].as_str() {
            Some("message") => {
                let text: String = item["content"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["type"] == "output_text")
                    .filter_map(|p| p["text"].as_str())
                    .collect();
                if !text.is_empty() {
                    content.push(Part::Text { text });
                }
            }
            Some("function_call") => content.push(Part::ToolCall {
                id: item["call_id"].as_str().unwrap_or_default().to_string(),
                name: item["name"].as_str().ok_or("a function_call without a name")?.to_string(),
                arguments: item["arguments"].as_str().unwrap_or("{}").to_string(),
            }),
            _ => {}
        }
    }
    let has_calls = content.iter().any(|p| matches!(p, Part::ToolCall { .. }));
    Ok(ChatResponse {
        id: v["id"].as_str().map(str::to_string),
        model: v["model"].as_str().unwrap_or_default().to_string(),
        finish_reason: finish(v, has_calls),
        content,
        usage: usage(&v["usage"]),
        wire: None,
    })
}

#[derive(Default)]
pub struct Decoder {
    /// Output index of a function call -> internal tool-call index.
    calls: HashMap<u64, u32>,
    ended: bool,
}

impl StreamDecoder for Decoder {
    fn locate(&self, v: &Value) -> Option<DeltaAt> {
        let (channel, json) = match v["type"].as_str()? {
            "response.output_text.delta" => (format!("text {} {}", v["output_index"], v["content_index"]), false),
            "response.refusal.delta" => (format!("refusal {} {}", v["output_index"], v["content_index"]), false),
            "response.function_call_arguments.delta" => (format!("call {}", v["output_index"]), true),
            "response.reasoning_summary_text.delta" => {
                (format!("summary {} {}", v["output_index"], v["summary_index"]), false)
            }
            "response.reasoning_text.delta" => {
                (format!("reasoning {} {}", v["output_index"], v["content_index"]), false)
            }
            _ => return None,
        };
        v["delta"].is_string().then(|| DeltaAt { channel, pointer: "/delta".into(), json })
    }

    fn decode(&mut self, frame: Frame, out: &mut VecDeque<Event>) -> Result<(), UpstreamError> {
        let Frame::Sse { data, .. } = frame else {
            return Ok(());
        };
        let v: Value =
            serde_json::from_str(&data).map_err(|e| UpstreamError::Protocol(format!("bad stream event: {e}")))?;
        match v["type"].as_str().unwrap_or_default() {
            "response.output_text.delta" => {
                if let Some(text) = v["delta"].as_str().filter(|t| !t.is_empty()) {
                    out.push_back(Event::TextDelta { text: text.to_string() });
                }
            }
            "response.output_item.added" if v["item"]["type"] == "function_call" => {
                let index = u32::try_from(self.calls.len()).unwrap_or(u32::MAX);
                self.calls.insert(u64_at(&v["output_index"]), index);
                out.push_back(Event::ToolCallStart {
                    index,
                    id: v["item"]["call_id"].as_str().unwrap_or_default().to_string(),
                    name: v["item"]["name"].as_str().unwrap_or_default().to_string(),
                });
            }
            "response.function_call_arguments.delta" => {
                if let (Some(&index), Some(args)) = (self.calls.get(&u64_at(&v["output_index"])), v["delta"].as_str())
                    && !args.is_empty()
                {
                    out.push_back(Event::ToolCallDelta { index, arguments: args.to_string() });
                }
            }
            "response.completed" | "response.incomplete" => {
                self.ended = true;
                let r = &v["response"];
                out.push_back(Event::Usage { usage: usage(&r["usage"]) });
                out.push_back(Event::Finish { reason: finish(r, !self.calls.is_empty()) });
            }
            "response.failed" => {
                self.ended = true;
                let msg = v["response"]["error"]["message"].as_str().unwrap_or("the response failed");
                return Err(UpstreamError::Cut(msg.chars().take(500).collect()));
            }
            "error" => {
                let msg = v["message"].as_str().or(v["error"]["message"].as_str()).unwrap_or("error in stream");
                return Err(UpstreamError::Cut(msg.chars().take(500).collect()));
            }
            _ => {}
        }
        Ok(())
    }

    fn finished(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_whole_response_reads_text_calls_usage_and_status() {
        let v = json!({"id": "resp_1", "model": "gpt-x", "status": "completed", "output": [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "message", "content": [{"type": "output_text", "text": "hi "}, {"type": "output_text", "text": "there"}]},
            {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{\"a\":1}"}
        ], "usage": {"input_tokens": 9, "output_tokens": 4, "input_tokens_details": {"cached_tokens": 2}}});
        let r = parse_response(&v).unwrap();
        assert_eq!(r.text(), "hi there");
        assert_eq!(r.finish_reason, FinishReason::ToolCalls);
        assert_eq!(r.usage, Usage { input_tokens: 9, output_tokens: 4, cached_tokens: 2, cache_write_tokens: 0 });
        let cut = json!({"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}, "output": []});
        assert_eq!(parse_response(&cut).unwrap().finish_reason, FinishReason::Length);
    }

    #[test]
    fn stream_events_become_typed_events_and_deltas_are_located() {
        let mut d = Decoder::default();
        let mut out = VecDeque::new();
        for e in [
            json!({"type": "response.created", "sequence_number": 0, "response": {}}),
            json!({"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": "hi", "sequence_number": 1}),
            json!({"type": "response.output_item.added", "output_index": 1, "item": {"type": "function_call", "call_id": "c1", "name": "f"}}),
            json!({"type": "response.function_call_arguments.delta", "output_index": 1, "delta": "{}"}),
            json!({"type": "response.completed", "response": {"status": "completed", "usage": {"input_tokens": 3, "output_tokens": 2}}}),
        ] {
            assert!(!d.finished());
            d.decode(Frame::Sse { event: e["type"].as_str().map(str::to_string), data: e.to_string() }, &mut out)
                .unwrap();
        }
        assert!(d.finished());
        let events: Vec<Event> = out.into_iter().collect();
        assert_eq!(events[0], Event::TextDelta { text: "hi".into() });
        assert_eq!(events[1], Event::ToolCallStart { index: 0, id: "c1".into(), name: "f".into() });
        assert_eq!(events[2], Event::ToolCallDelta { index: 0, arguments: "{}".into() });
        assert_eq!(events[4], Event::Finish { reason: FinishReason::ToolCalls });
        let at = d
            .locate(&json!({"type": "response.function_call_arguments.delta", "output_index": 1, "delta": "{"}))
            .unwrap();
        assert!(at.json && at.pointer == "/delta");
        let failed = json!({"type": "response.failed", "response": {"error": {"message": "boom"}}});
        let err = d.decode(Frame::Sse { event: None, data: failed.to_string() }, &mut VecDeque::new()).unwrap_err();
        assert!(err.to_string().contains("boom"));
    }
}
