//! Embeddings. An OpenAI-format target gets the caller's `/v1/embeddings` body as sent
//! (pass-through); Gemini (`models/{model}:batchEmbedContents`) and Ollama (`/api/embed`) get the
//! inputs in their own format, and their answers are read into OpenAI's list format, which the
//! door returns. Anthropic offers no embeddings.

use serde_json::{Value, json};

use super::{Target, WireRequest, auth_header, join_url, u64_at};
use crate::ProviderKind;
use tollgate_model::{ChatResponse, FinishReason, Usage};

/// The request for a target that does not speak OpenAI's format.
pub fn build(target: &Target<'_>, inputs: &[String]) -> WireRequest {
    match target.config.kind {
        ProviderKind::Gemini => {
            let requests: Vec<Value> = inputs
                .iter()
                .map(
                    |text| json!({"model": format!("models/{}", target.model), "content": {"parts": [{"text": text}]}}),
                )
                .collect();
            WireRequest::new(
                join_url(&target.config.base_url, &format!("v1beta/models/{}:batchEmbedContents", target.model)),
                auth_header(target, "x-goog-api-key", false).into_iter().collect(),
                json!({"requests": requests}),
            )
        }
        _ => WireRequest::new(
            join_url(&target.config.base_url, "api/embed"),
            auth_header(target, "authorization", true).into_iter().collect(),
            json!({"model": target.model, "input": inputs}),
        ),
    }
}

/// The answer as OpenAI's embedding list, with its usage. `inputs_tokens` stands in where the
/// provider reports no token count (Gemini's batch answer has none).
pub fn parse(kind: ProviderKind, model: &str, v: &Value, input_tokens: u64) -> Result<ChatResponse, String> {
    let (vectors, tokens): (Vec<&Value>, u64) = match kind {
        ProviderKind::Openai => {
            let data = v["data"].as_array().ok_or("no data in the embeddings answer")?;
            // One vector per input (numbers, or base64 when asked): a server without pooling
            // answers a vector per token, which no caller can use.
            let vector = |e: &Value| e.is_string() || e.as_array().is_some_and(|a| a.iter().all(Value::is_number));
            if !data.iter().all(|d| vector(&d["embedding"])) {
                return Err(
                    "the embeddings are not one vector per input (a server without pooling answers one per token; \
                            start it with pooling, such as llama.cpp's --pooling mean)"
                        .into(),
                );
            }
            return Ok(answer(model, v.clone(), u64_at(&v["usage"]["prompt_tokens"]).max(data.len().min(1) as u64)));
        }
        ProviderKind::Gemini => (
            v["embeddings"].as_array().ok_or("no embeddings in the answer")?.iter().map(|e| &e["values"]).collect(),
            input_tokens,
        ),
        ProviderKind::Ollama => (
            v["embeddings"].as_array().ok_or("no embeddings in the answer")?.iter().collect(),
            u64_at(&v["prompt_eval_count"]).max(input_tokens),
        ),
        ProviderKind::Anthropic => return Err("anthropic offers no embeddings".into()),
    };
    if vectors.iter().any(|e| !e.as_array().is_some_and(|a| a.iter().all(Value::is_number))) {
        return Err("an embedding is not a list of numbers".into());
    }
    let data: Vec<Value> =
        vectors.iter().enumerate().map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e})).collect();
    let body = json!({"object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}});
    Ok(answer(model, body, tokens))
}

fn answer(model: &str, body: Value, input_tokens: u64) -> ChatResponse {
    ChatResponse {
        id: None,
        model: model.to_string(),
        content: Vec::new(),
        finish_reason: FinishReason::Stop,
        usage: Usage { input_tokens, ..Default::default() },
        wire: Some(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemini_and_ollama_answers_become_openai_lists() {
        let g = parse(
            ProviderKind::Gemini,
            "text-embedding-004",
            &json!({"embeddings": [{"values": [0.1, 0.2]}, {"values": [0.3]}]}),
            7,
        )
        .unwrap();
        let w = g.wire.unwrap();
        assert_eq!(w["data"][1], json!({"object": "embedding", "index": 1, "embedding": [0.3]}));
        assert_eq!(g.usage.input_tokens, 7);
        let o =
            parse(ProviderKind::Ollama, "nomic", &json!({"embeddings": [[1, 2]], "prompt_eval_count": 4}), 2).unwrap();
        assert_eq!(o.usage.input_tokens, 4);
        assert!(parse(ProviderKind::Ollama, "m", &json!({"embeddings": [["x"]]}), 1).is_err());
        // Per-token vectors, as llama-cpp-python's server answers for a model without pooling.
        let per_token = json!({"data": [{"object": "embedding", "index": 0, "embedding": [[0.1, 0.2], [0.3, 0.4]]}]});
        assert!(parse(ProviderKind::Openai, "gemma", &per_token, 2).unwrap_err().contains("pooling"));
        let ok = json!({"data": [{"embedding": "AAAAAA=="}], "usage": {"prompt_tokens": 3}});
        assert_eq!(parse(ProviderKind::Openai, "m", &ok, 1).unwrap().usage.input_tokens, 3);
    }
}
