//! `GET /v1/log` and `GET /v1/log/{id}`: the ledger's rows of recent calls, and one call in full.

use serde::{Deserialize, Serialize};

/// Money in millionths of a US dollar.
pub type Micros = i64;

/// What the ledger knows of a request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Row {
    pub request_id: String,
    pub ts_ms: i64,
    pub identity: String,
    pub project: Option<String>,
    pub task: String,
    pub entry: String,
    /// The named token that made the call (`default` for the main token, `local` on the socket).
    pub caller: String,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    /// Input tokens written to the provider's prompt cache.
    pub cache_write_tokens: u64,
    /// `None`: unknown price.
    pub cost_micros: Option<Micros>,
    pub latency_ms: f64,
    pub added_ms: f64,
    pub cache_hit: bool,
    pub redactions: u32,
    pub outcome: Outcome,
    pub note: Option<String>,
    /// The experiments the request took part in (a route's split, a prompt's versions), joined
    /// with ` + ` when more than one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    /// The arm of each experiment the request was given, in the same order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<String>,
    /// What was masked, by kind (`kind=count,...`): counts only, never a value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacted: Option<String>,
}

impl Row {
    /// The experiments and arms, as `usage --by arm` names them (`experiment: arm`).
    pub fn arm_key(&self) -> Option<String> {
        Some(format!("{}: {}", self.experiment.as_deref()?, self.arm.as_deref()?))
    }
}

/// How a call ended, as the ledger, `/metrics` and reports name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Sent to a provider; not settled yet (a row a killed daemon leaves becomes `Interrupted`).
    #[default]
    Pending,
    Ok,
    /// The caller went away part-way through the answer.
    Cancelled,
    /// The provider's stream broke after output had reached the caller.
    Cut,
    /// The daemon stopped before the answer was settled; the figures are the estimate.
    Interrupted,
    RefusedPolicy,
    UnknownModel,
    NoTarget,
    Rejected,
    Failed,
    Blocked,
    RateLimited,
    RefusedSecret,
    Untranslatable,
    ShuttingDown,
    Unrecordable,
    Busy,
    /// A word this version does not know (a row written by another version).
    #[serde(other)]
    Other,
}

impl Outcome {
    pub const ALL: [Outcome; 18] = [
        Self::Pending,
        Self::Ok,
        Self::Cancelled,
        Self::Cut,
        Self::Interrupted,
        Self::RefusedPolicy,
        Self::UnknownModel,
        Self::NoTarget,
        Self::Rejected,
        Self::Failed,
        Self::Blocked,
        Self::RateLimited,
        Self::RefusedSecret,
        Self::Untranslatable,
        Self::ShuttingDown,
        Self::Unrecordable,
        Self::Busy,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ok => "ok",
            Self::Cancelled => "cancelled",
            Self::Cut => "cut",
            Self::Interrupted => "interrupted",
            Self::RefusedPolicy => "refused_policy",
            Self::UnknownModel => "unknown_model",
            Self::NoTarget => "no_target",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
            Self::Blocked => "blocked",
            Self::RateLimited => "rate_limited",
            Self::RefusedSecret => "refused_secret",
            Self::Untranslatable => "untranslatable",
            Self::ShuttingDown => "shutting_down",
            Self::Unrecordable => "unrecordable",
            Self::Busy => "busy",
            Self::Other => "other",
        }
    }

    /// The outcome a word names; a word this version does not know is [`Outcome::Other`].
    pub fn parse(word: &str) -> Self {
        Self::ALL.into_iter().find(|o| o.as_str() == word).unwrap_or(Self::Other)
    }
}

/// `GET /v1/log`: the most recent calls, newest first.
#[derive(Debug, Serialize, Deserialize)]
pub struct CallsReply {
    pub calls: Vec<Row>,
}

/// `GET /v1/log/{id}`: one call in full.
#[derive(Debug, Serialize, Deserialize)]
pub struct Call {
    #[serde(flatten)]
    pub row: Row,
    /// The redacted request and answer, when the audit log was on.
    pub request: Option<serde_json::Value>,
    pub response: Option<serde_json::Value>,
    /// The audit log kept them, but they do not open: sealed with a storage key no longer held.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unreadable: bool,
}
