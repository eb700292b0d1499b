//! The providers' part of the config: each provider's settings (`[providers.NAME]`) and the
//! limits every call keeps (`[limits]`). `crate::config` assembles them with the other sections.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_response_bytes: usize,
    pub connect_timeout_ms: u64,
    pub first_byte_timeout_ms: u64,
    pub stream_idle_timeout_ms: u64,
    pub client_stall_timeout_ms: u64,
    pub max_concurrent_requests: usize,
    pub default_max_output_tokens: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Openai,
    Anthropic,
    Gemini,
    Ollama,
}

impl ProviderKind {
    /// The word the config spells it with.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Ollama => "ollama",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    pub base_url: String,
    /// Whether the provider is trusted as local: it gets text unmasked where a route's redaction
    /// is "off", and requests for local-only paths. Defaults to true for a base URL on a loopback
    /// address only, whatever the kind (an Ollama server on another host is not local unless
    /// `local = true` says it is trusted).
    #[serde(default)]
    pub local: Option<bool>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Send the key in this header instead of the kind's usual one (Azure OpenAI: `api-key`).
    #[serde(default)]
    pub key_header: Option<String>,
    /// Query parameters added to every call (Azure OpenAI: `api-version`).
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// For OpenAI-compatible servers that report no usage in streams (llama-cpp-python:
    /// `/extras/tokenize/count`, relative to the base URL's origin): output tokens are counted one
    /// per streamed chunk, input tokens by this endpoint (`{"input"}` -> `{"count"}`), which does
    /// not see the chat template's own framing tokens.
    #[serde(default)]
    pub tokenize_path: Option<String>,
    /// Whether the server also serves OpenAI's Responses API (`/responses` beside
    /// `/chat/completions`); callers of `/v1/responses` are then passed through to it, others get
    /// a translation to Chat Completions. Defaults to true for `api.openai.com`.
    #[serde(default)]
    pub responses_api: Option<bool>,
}

fn yes() -> bool {
    true
}

impl ProviderConfig {
    pub fn serves_responses(&self) -> bool {
        self.kind == ProviderKind::Openai
            && self.responses_api.unwrap_or_else(|| {
                reqwest::Url::parse(&self.base_url).is_ok_and(|u| u.host_str() == Some("api.openai.com"))
            })
    }

    /// The base URL as it may be shown (status, doctor): without its user part or query, either
    /// of which may hold a key.
    pub fn shown_base_url(&self) -> String {
        match reqwest::Url::parse(&self.base_url) {
            Ok(mut u) => {
                let _ = u.set_username("");
                let _ = u.set_password(None);
                u.set_query(None);
                u.to_string()
            }
            Err(_) => "(not a valid URL)".into(),
        }
    }

    pub fn is_local(&self) -> bool {
        self.local.unwrap_or_else(|| url_is_loopback(&self.base_url))
    }
}

fn url_is_loopback(url: &str) -> bool {
    let Ok(url) = url.parse::<http::Uri>() else {
        return false;
    };
    match url.host() {
        Some(host) => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        None => false,
    }
}
