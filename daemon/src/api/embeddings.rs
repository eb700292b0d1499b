//! `POST /v1/embeddings` in OpenAI's format. An OpenAI-format target gets the body as sent; Gemini
//! and Ollama targets get the inputs in their own format, and the answer comes back as OpenAI's
//! list (base64-encoded when the caller asks, as the OpenAI SDKs do by default). Embeddings are
//! deterministic, so they are cached; they are budgeted and booked like any call.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use super::{ApiError, Format};
use crate::callers::Caller;
use crate::model::{ChatRequest, WireFormat};
use crate::pipeline::{Answer, EntryPoint};

#[derive(Debug, Deserialize)]
pub(super) struct EmbeddingsRequest {
    model: String,
    input: Value,
    encoding_format: Option<String>,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

/// Fields that change nothing in the vectors: an end-user id.
const HARMLESS: &[&str] = &["user"];

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, Format::Openai, message)
}

impl EmbeddingsRequest {
    pub(super) fn into_internal(self) -> Result<ChatRequest, ApiError> {
        let mut unmapped = super::unmapped_fields(&self.rest, HARMLESS);
        let inputs = match self.input {
            Value::String(s) => vec![s],
            Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_string) => {
                items.into_iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
            }
            Value::Array(items) if !items.is_empty() => {
                // Token ids: only an OpenAI-format target reads them.
                unmapped.push("input (token ids)".into());
                items.iter().map(|_| String::new()).collect()
            }
            _ => return Err(bad("input: a string, or a non-empty array of strings or of token ids")),
        };
        Ok(ChatRequest { model: self.model, embed: Some(inputs), unmapped, ..Default::default() })
    }
}

pub async fn embeddings(
    State(state): State<super::State>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let received = Instant::now();
    let result = async {
        let (wire, native) = super::read_door::<EmbeddingsRequest>(
            &state,
            body,
            &headers,
            Format::Openai,
            WireFormat::OpenaiEmbeddings,
            &[],
        )
        .await?;
        let base64 = wire.encoding_format.as_deref() == Some("base64");
        let mut req = wire.into_internal()?;
        req.native = Some(native);
        let ctx = super::context(EntryPoint::Openai, state.gateway.runtime(), &headers, received, &caller);
        let served = state.gateway.handle(req, &ctx).await.map_err(|e| ApiError::from_gateway(&e, Format::Openai))?;
        let mut served_h = HeaderMap::new();
        super::served_headers(&served, &ctx, &mut served_h);
        let Answer::Complete(r) = served.answer else {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                Format::Openai,
                "an embeddings answer came as a stream",
            ));
        };
        let mut body = r.wire.unwrap_or_default();
        if base64 {
            encode_vectors(&mut body);
        }
        let mut response = axum::Json(body).into_response();
        response.headers_mut().extend(served_h);
        Ok(response)
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// Vectors given as numbers, as OpenAI's base64 form: little-endian f32s.
fn encode_vectors(body: &mut Value) {
    for item in body["data"].as_array_mut().into_iter().flatten() {
        if let Some(numbers) = item["embedding"].as_array() {
            let bytes: Vec<u8> =
                numbers.iter().flat_map(|n| (n.as_f64().unwrap_or(0.0) as f32).to_le_bytes()).collect();
            item["embedding"] = Value::String(base64(&bytes));
        }
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        let mut body = json!({"data": [{"embedding": [1.0, -2.5]}]});
        encode_vectors(&mut body);
        // 1.0f32 = 00 00 80 3f, -2.5f32 = 00 00 20 c0
        assert_eq!(body["data"][0]["embedding"], base64(&[0, 0, 0x80, 0x3f, 0, 0, 0x20, 0xc0]));
    }

    #[test]
    fn inputs_are_strings_and_token_ids_are_named() {
        let r: EmbeddingsRequest =
            serde_json::from_value(json!({"model": "m", "input": ["a", "b"], "user": "u"})).unwrap();
        let req = r.into_internal().unwrap();
        assert_eq!(req.embed, Some(vec!["a".to_string(), "b".to_string()]));
        assert!(req.unmapped.is_empty());
        let r: EmbeddingsRequest =
            serde_json::from_value(json!({"model": "m", "input": [[1, 2]], "dimensions": 8})).unwrap();
        assert_eq!(r.into_internal().unwrap().unmapped, ["dimensions", "input (token ids)"]);
        let r: EmbeddingsRequest = serde_json::from_value(json!({"model": "m", "input": []})).unwrap();
        assert!(r.into_internal().is_err());
    }
}
