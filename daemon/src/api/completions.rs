//! `POST /v1/completions` in OpenAI's legacy format, for fill-in-the-middle clients (Continue's
//! autocomplete, editors' FIM plugins): `prompt` and `suffix`. An OpenAI-format target (llama.cpp
//! server, vLLM, OpenAI) gets the body as sent and serves it natively; any other gets the prompt
//! in its model family's FIM format (`prompts/fim.toml`), or the chat form for a model without
//! one. Streamed as `text_completion` chunks ending in `[DONE]`, or whole.

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
use crate::model::{ChatRequest, ChatResponse, Event, FinishReason, Usage, WireFormat};
use crate::pipeline::EntryPoint;

#[derive(Debug, Deserialize)]
struct CompletionsRequest {
    model: String,
    prompt: Value,
    suffix: Option<String>,
    max_tokens: Option<u32>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    stop: Option<OneOrMany>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<Value>,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

/// Fields that change nothing in the text: an end-user id.
const HARMLESS: &[&str] = &["user"];

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, Format::Openai, message)
}

pub async fn completions(
    State(state): State<super::State>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let received = Instant::now();
    let result = async {
        let (wire, native) = super::read_door::<CompletionsRequest>(
            &state,
            body,
            &headers,
            Format::Openai,
            WireFormat::OpenaiCompletions,
            super::openai::FORWARDED,
        )
        .await?;
        let include_usage = wire.stream_options.as_ref().is_some_and(|o| o["include_usage"] == true);
        let ctx = super::context(EntryPoint::Openai, state.gateway.runtime(), &headers, received, &caller);
        let mut req = into_internal(&ctx.runtime, wire)?;
        req.native = Some(native);
        let render = super::Render {
            whole: render,
            stream: move |events, id, model| render_stream(events, id, model, include_usage),
            frame: move |frame: Result<(Option<&str>, &str), String>| {
                super::openai::forward_frame(frame, include_usage)
            },
        };
        Ok::<_, ApiError>(super::serve_chat(&state, ctx, &headers, Format::Openai, req, "cmpl-", render).await)
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// The typed request: with a suffix, the prompt in the FIM format of the model the route's first
/// target names (what a translation sends); without, the prompt as it is.
fn into_internal(rt: &crate::runtime::Runtime, wire: CompletionsRequest) -> Result<ChatRequest, ApiError> {
    let mut unmapped = super::unmapped_fields(&wire.rest, HARMLESS);
    let prompt = match wire.prompt {
        Value::String(s) => s,
        Value::Array(items) if items.len() == 1 && items[0].is_string() => items[0].as_str().unwrap_or_default().into(),
        Value::Array(_) => {
            unmapped.push("prompt (several prompts or token ids)".into());
            String::new()
        }
        _ => return Err(bad("prompt: a string, or an array of strings or token ids")),
    };
    let stop = wire.stop.map(OneOrMany::into_vec).unwrap_or_default();
    let mut req = match wire.suffix.filter(|s| !s.is_empty()) {
        None => ChatRequest { raw_prompt: Some(prompt), stop, ..Default::default() },
        Some(suffix) => {
            let first = rt
                .router
                .resolve(&wire.model)
                .map_err(|e| ApiError::from_gateway(&crate::pipeline::GatewayError::Route(e), Format::Openai))?
                .into_iter()
                .next()
                .map(|t| t.model)
                .unwrap_or_default();
            let fim = tollgate_lsp::CompletionRequest {
                path: String::new(),
                language: String::new(),
                prefix: prompt,
                suffix,
                snippets: Vec::new(),
                intent: tollgate_lsp::Intent::Complete,
                repo: None,
            };
            let max = wire.max_tokens.unwrap_or(rt.config.completion.max_tokens);
            let mut req = crate::complete::build(&fim, &wire.model, &first, &rt.prompts, (max, max));
            req.stop.extend(stop);
            req
        }
    };
    req.model = wire.model;
    req.max_tokens = wire.max_tokens.or(req.max_tokens);
    req.temperature = wire.temperature.or(req.temperature);
    req.top_p = wire.top_p;
    req.stream = wire.stream;
    req.unmapped = unmapped;
    Ok(req)
}

fn finish_str(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Length => "length",
        FinishReason::ContentFilter => "content_filter",
        _ => "stop",
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens, "total_tokens": u.input_tokens.saturating_add(u.output_tokens)})
}

fn render(r: &ChatResponse, id: &str, model: &str) -> Value {
    json!({
        "id": id, "object": "text_completion", "created": unix_now(), "model": model,
        "choices": [{"index": 0, "text": r.text(), "finish_reason": finish_str(r.finish_reason), "logprobs": null}],
        "usage": usage_json(&r.usage),
    })
}

/// `text_completion` chunks: one per text delta, a finish chunk, the usage chunk when asked for,
/// then `[DONE]`. A failure mid-stream becomes an error chunk and no `[DONE]` follows.
fn render_stream(
    events: crate::model::EventStream,
    id: String,
    model: String,
    include_usage: bool,
) -> impl futures_util::Stream<Item = Bytes> + Send {
    let created = unix_now();
    let chunk = move |text: &str, finish: Option<&str>| {
        json!({"id": id, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": null}]})
    };
    // (events, usage so far, done)
    futures_util::stream::unfold((events, Usage::default(), false), move |(mut events, mut usage, done)| {
        let chunk = chunk.clone();
        async move {
            if done {
                return None;
            }
            let (out, done) = match events.next().await {
                Some(Ok(Event::TextDelta { text })) => (sse_frame(None, &chunk(&text, None)), false),
                Some(Ok(Event::Finish { reason })) => (sse_frame(None, &chunk("", Some(finish_str(reason)))), false),
                Some(Ok(Event::Usage { usage: u })) => {
                    usage.merge(u);
                    (Bytes::new(), false)
                }
                Some(Ok(_)) => (Bytes::new(), false),
                Some(Err(e)) => {
                    let message = format!("the provider failed mid-stream: {e}");
                    (sse_frame(None, &ApiError::new(StatusCode::BAD_GATEWAY, Format::Openai, message).body()), true)
                }
                None => {
                    let mut tail = Vec::new();
                    if include_usage {
                        let mut last = chunk("", None);
                        last["choices"] = json!([]);
                        last["usage"] = usage_json(&usage);
                        tail.push(sse_frame(None, &last));
                    }
                    tail.push(Bytes::from_static(b"data: [DONE]\n\n"));
                    (tail.concat().into(), true)
                }
            };
            Some((out, (events, usage, done)))
        }
    })
    .filter(|b| std::future::ready(!b.is_empty()))
}
