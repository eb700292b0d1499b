//! The internal request and stream-event model.
//!
//! Every entry point (OpenAI API, Anthropic API, native API, LSP, hooks) translates its wire format
//! into [`ChatRequest`], and every provider translates [`ChatRequest`] into its own wire format and
//! its answer back into [`Event`]s or a [`ChatResponse`]. Nothing here knows HTTP or any provider.

pub mod utc;

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// One piece of a message's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Text {
        text: String,
    },
    /// A call the assistant asked for. `arguments` is the JSON text of the arguments object.
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
    /// An image or a document (PDF), as a data URL (`data:image/png;base64,...`) or an https URL.
    /// Opaque to redaction; each provider gets it in its own form.
    Media {
        url: String,
    },
    /// The result of a tool call, sent back by the caller.
    ToolResult {
        tool_call_id: String,
        /// Gemini wants the function's name beside its result; callers that know it fill it in.
        name: Option<String>,
        content: String,
        is_error: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Part>,
}

impl Message {
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self { role, content: vec![Part::Text { text: text.into() }] }
    }

    /// All text parts joined, for providers whose format has one string per message.
    pub fn joined_text(&self) -> String {
        let mut out = String::new();
        for part in &self.content {
            match part {
                Part::Text { text } => out.push_str(text),
                Part::ToolResult { content, .. } => out.push_str(content),
                Part::ToolCall { .. } | Part::Media { .. } => {}
            }
        }
        out
    }

    /// The media of the message (images, documents).
    pub fn media(&self) -> impl Iterator<Item = &str> {
        self.content.iter().filter_map(|p| if let Part::Media { url } = p { Some(url.as_str()) } else { None })
    }

    pub fn tool_calls(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.content.iter().filter_map(|p| match p {
            Part::ToolCall { id, name, arguments } => Some((id.as_str(), name.as_str(), arguments.as_str())),
            _ => None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments object.
    pub parameters: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Tool(String),
}

/// What shape the answer must have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { name: String, schema: serde_json::Value, strict: bool },
}

/// A request in the gateway's own terms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// As the caller addressed it: an alias (`fast`) or `provider/model`.
    pub model: String,
    pub messages: Vec<Message>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Vec<String>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    pub response_format: Option<ResponseFormat>,
    /// A raw prompt for a plain completion (fill-in-the-middle), sent without a chat template.
    /// When set, `messages` is empty.
    pub raw_prompt: Option<String>,
    pub stream: bool,
    /// What the caller's format carries that the fields above cannot express (images, thinking,
    /// a tool of a provider's own kind...), each named by where it is. A target that speaks the
    /// caller's format gets them through [`Native`]; any other target refuses the request, naming
    /// them, instead of dropping them in silence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmapped: Vec<String>,
    /// How hard the model should think before it answers (OpenAI's reasoning effort, Anthropic's
    /// thinking, Gemini's thinking budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<Reasoning>,
    /// An embeddings request: the texts to embed (then `messages` is empty and the answer is an
    /// OpenAI embedding list in [`ChatResponse::wire`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embed: Option<Vec<String>>,
    /// The request as the caller sent it, for a target that speaks the same wire format
    /// (pass-through). Redaction masks every string of it a provider reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native: Option<Native>,
}

/// Reasoning asked for: an effort, a token budget, or both (each provider reads the one it has and
/// derives it from the other when it lacks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reasoning {
    pub effort: Option<Effort>,
    pub budget_tokens: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effort {
    Minimal,
    Low,
    Medium,
    High,
}

impl Effort {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "minimal" => Some(Self::Minimal),
            "low" => Some(Self::Low),
            "medium" => Some(Self::Medium),
            "high" | "max" | "xhigh" => Some(Self::High),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Minimal => "minimal",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

impl Reasoning {
    /// The effort, or one read from the budget (under 2,048 tokens low, under 8,192 medium).
    pub fn effort(&self) -> Effort {
        self.effort.unwrap_or(match self.budget_tokens {
            Some(b) if b < 2_048 => Effort::Low,
            Some(b) if b < 8_192 => Effort::Medium,
            Some(_) => Effort::High,
            None => Effort::Medium,
        })
    }

    /// The budget, or one read from the effort (Anthropic's minimum of 1,024 for minimal and low).
    pub fn budget(&self) -> u32 {
        self.budget_tokens.unwrap_or(match self.effort() {
            Effort::Minimal | Effort::Low => 1_024,
            Effort::Medium => 4_096,
            Effort::High => 16_384,
        })
    }
}

/// A wire format a caller can speak and a provider can be reached in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireFormat {
    /// Anthropic Messages (`/v1/messages`).
    AnthropicMessages,
    /// OpenAI Chat Completions (`/v1/chat/completions`).
    OpenaiChat,
    /// OpenAI Responses (`/v1/responses`).
    OpenaiResponses,
    /// OpenAI Embeddings (`/v1/embeddings`).
    OpenaiEmbeddings,
    /// OpenAI's legacy Completions (`/v1/completions`: prompt and suffix).
    OpenaiCompletions,
}

/// The caller's own request, forwarded as sent to a target of the same format: unknown fields,
/// betas and version headers included. Only tollgate's own changes are applied to it (masked
/// strings, the routed model, a capped `max_tokens`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Native {
    pub format: WireFormat,
    pub body: serde_json::Value,
    /// Version and beta headers to forward (`anthropic-version`, `anthropic-beta`, `openai-beta`),
    /// names in lower case.
    pub headers: Vec<(String, String)>,
    /// The caller's query string (`beta=true`), forwarded as is.
    pub query: Option<String>,
}

impl ChatRequest {
    /// System messages joined, for providers that take the system prompt apart from the turns.
    pub fn system_text(&self) -> Option<String> {
        let parts: Vec<String> =
            self.messages.iter().filter(|m| m.role == Role::System).map(Message::joined_text).collect();
        if parts.is_empty() { None } else { Some(parts.join("\n\n")) }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Input tokens served from the provider's prompt cache (a subset of `input_tokens`).
    pub cached_tokens: u64,
    /// Input tokens written to the provider's prompt cache (a subset of `input_tokens`; Anthropic
    /// prices them above plain input).
    #[serde(default)]
    pub cache_write_tokens: u64,
}

/// More tokens than any model reads or writes in one call: a provider's figure above it is taken
/// as this (never wrapping a counter or a cost, and over- rather than under-counting a budget).
pub const MAX_REPORTED_TOKENS: u64 = 100_000_000;

impl Usage {
    /// The figures within [`MAX_REPORTED_TOKENS`], and a note naming any that were not.
    pub fn bounded(self) -> (Usage, Option<String>) {
        let mut absurd = Vec::new();
        let mut bound = |name: &str, n: u64| {
            if n > MAX_REPORTED_TOKENS {
                absurd.push(format!("{name} {n}"));
            }
            n.min(MAX_REPORTED_TOKENS)
        };
        let usage = Usage {
            input_tokens: bound("input", self.input_tokens),
            output_tokens: bound("output", self.output_tokens),
            cached_tokens: bound("cached", self.cached_tokens),
            cache_write_tokens: bound("cache write", self.cache_write_tokens),
        };
        let note = (!absurd.is_empty())
            .then(|| format!("the provider reported {} tokens; counted as {MAX_REPORTED_TOKENS}", absurd.join(", ")));
        (usage, note)
    }

    /// Merges a later usage report into this one: providers send partial figures at several
    /// points of a stream (Anthropic: input at the start, output at the end).
    pub fn merge(&mut self, other: Usage) {
        self.input_tokens = self.input_tokens.max(other.input_tokens);
        self.output_tokens = self.output_tokens.max(other.output_tokens);
        self.cached_tokens = self.cached_tokens.max(other.cached_tokens);
        self.cache_write_tokens = self.cache_write_tokens.max(other.cache_write_tokens);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

/// One step of an answer. A complete stream is: zero or more deltas, then `Finish`, with `Usage`
/// anywhere (possibly several times, merged).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    TextDelta {
        text: String,
    },
    /// A tool call begins. Its arguments follow as `ToolCallDelta`s with the same index.
    ToolCallStart {
        index: u32,
        id: String,
        name: String,
    },
    ToolCallDelta {
        index: u32,
        arguments: String,
    },
    Usage {
        usage: Usage,
    },
    Finish {
        reason: FinishReason,
    },
    /// A frame of the provider's stream, forwarded to a caller of the same format as it came
    /// (pass-through). It precedes the typed events decoded from it, which serve the ledger, the
    /// cache and the audit log; a renderer that sees a frame first forwards frames only.
    Frame {
        /// The SSE `event:` name.
        event: Option<String>,
        /// The SSE `data:` text, as the provider sent it.
        data: String,
        /// Where the frame carries a piece of streamed text, if it does.
        delta: Option<DeltaAt>,
    },
    /// A whole answer's body, for a caller of the provider's format (pass-through); see
    /// [`ChatResponse::wire`].
    Body {
        body: serde_json::Value,
    },
}

/// The place of a streamed text piece inside a frame: which text it continues (`channel`: a
/// content block, a choice, a tool call), the JSON pointer of the string, and whether that string
/// is JSON text itself (tool call arguments).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaAt {
    pub channel: String,
    pub pointer: String,
    pub json: bool,
}

/// A whole answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The provider's id for the answer, when it gives one.
    pub id: Option<String>,
    /// The model that answered, as the provider names it.
    pub model: String,
    pub content: Vec<Part>,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    /// The provider's answer as it came, for a caller of the same format (pass-through).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wire: Option<serde_json::Value>,
}

impl ChatResponse {
    pub fn text(&self) -> String {
        self.content
            .iter()
            .filter_map(|p| if let Part::Text { text } = p { Some(text.as_str()) } else { None })
            .collect()
    }

    /// The answer as the event sequence a stream of it would have carried.
    pub fn into_events(self) -> Vec<Event> {
        let mut events = Vec::with_capacity(self.content.len() + 2);
        let mut tool_index = 0;
        for part in self.content {
            match part {
                Part::Text { text } => events.push(Event::TextDelta { text }),
                Part::ToolCall { id, name, arguments } => {
                    events.push(Event::ToolCallStart { index: tool_index, id, name });
                    events.push(Event::ToolCallDelta { index: tool_index, arguments });
                    tool_index += 1;
                }
                Part::ToolResult { .. } | Part::Media { .. } => {}
            }
        }
        events.push(Event::Usage { usage: self.usage });
        events.push(Event::Finish { reason: self.finish_reason });
        if let Some(body) = self.wire {
            events.push(Event::Body { body });
        }
        events
    }
}

/// Folds a sequence of events into a whole answer.
#[derive(Debug, Default)]
pub struct Collector {
    text: String,
    tools: Vec<(String, String, String)>,
    usage: Usage,
    finish: Option<FinishReason>,
    wire: Option<serde_json::Value>,
}

impl Collector {
    pub fn push(&mut self, event: Event) {
        match event {
            Event::TextDelta { text } => self.text.push_str(&text),
            Event::ToolCallStart { index, id, name } => {
                let i = index as usize;
                if self.tools.len() <= i {
                    self.tools.resize_with(i + 1, Default::default);
                }
                self.tools[i].0 = id;
                self.tools[i].1 = name;
            }
            Event::ToolCallDelta { index, arguments } => {
                let i = index as usize;
                if self.tools.len() <= i {
                    self.tools.resize_with(i + 1, Default::default);
                }
                self.tools[i].2.push_str(&arguments);
            }
            Event::Usage { usage } => self.usage.merge(usage),
            Event::Finish { reason } => self.finish = Some(reason),
            Event::Body { body } => self.wire = Some(body),
            Event::Frame { .. } => {}
        }
    }

    pub fn finish(self, id: Option<String>, model: String) -> ChatResponse {
        let mut content = Vec::new();
        if !self.text.is_empty() {
            content.push(Part::Text { text: self.text });
        }
        let has_tools = !self.tools.is_empty();
        for (id, name, arguments) in self.tools {
            content.push(Part::ToolCall { id, name, arguments });
        }
        let finish_reason = self.finish.unwrap_or(if has_tools { FinishReason::ToolCalls } else { FinishReason::Stop });
        ChatResponse { id, model, content, finish_reason, usage: self.usage, wire: self.wire }
    }
}

/// A stream of answer events; an `Err` item ends it (a provider cut or timed out mid-answer).
/// A credential (a provider key, a token). Its value is shown by nothing but [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<Event, UpstreamError>> + Send>>;

/// Why a call upstream (a provider) failed, or a stream from it ended early; classified for the
/// router.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("answered {status}: {message}")]
    Status { status: u16, retry_after: Option<Duration>, message: String },
    #[error("sent an answer that could not be read: {0}")]
    Protocol(String),
    #[error("cut the stream: {0}")]
    Cut(String),
    #[error("{0}")]
    Redirected(String),
    #[error("has no credentials: run `tollgate login {provider}` (or set {env})")]
    NoCredentials { provider: String, env: String },
}

impl UpstreamError {
    /// Whether another try (of this target or the next) may succeed: connection trouble, time-outs,
    /// rate limits and server errors. A 4xx other than 429 says the request itself is wrong.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect(_) | Self::Timeout(_) | Self::Cut(_) => true,
            Self::Status { status, .. } => *status == 429 || *status == 408 || *status >= 500,
            Self::Protocol(_) => false,
            // Another target may have credentials, or answer where it is configured.
            Self::NoCredentials { .. } | Self::Redirected(_) => true,
        }
    }

    /// Whether trying the same target again may help: not when it redirects (it will again) or
    /// has no key (it still will not).
    pub fn worth_retrying(&self) -> bool {
        !matches!(self, Self::Redirected(_) | Self::NoCredentials { .. })
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A data URL's media type and base64 payload (`data:image/png;base64,AAAA` -> `image/png`, `AAAA`).
pub fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    Some((media_type, data))
}

/// `n` bytes from the OS random source, as lowercase hex (ids, tokens, session secrets).
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A short random id for answers that the gateway names itself.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", random_hex(12))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_round_trips_a_response_with_text_and_tool_calls() {
        let response = ChatResponse {
            id: Some("x".into()),
            model: "m".into(),
            content: vec![
                Part::Text { text: "hi".into() },
                Part::ToolCall { id: "c1".into(), name: "f".into(), arguments: "{\"a\":1}".into() },
            ],
            finish_reason: FinishReason::ToolCalls,
            usage: Usage { input_tokens: 3, output_tokens: 4, cached_tokens: 1, cache_write_tokens: 2 },
            wire: Some(serde_json::json!({"id": "x"})),
        };
        let mut c = Collector::default();
        for e in response.clone().into_events() {
            c.push(e);
        }
        assert_eq!(c.finish(Some("x".into()), "m".into()), response);
    }

    #[test]
    fn usage_merge_keeps_the_figures_reported_at_each_point() {
        let mut u = Usage { input_tokens: 10, ..Default::default() };
        u.merge(Usage { output_tokens: 7, ..Default::default() });
        assert_eq!(u, Usage { input_tokens: 10, output_tokens: 7, ..Default::default() });
    }
}
