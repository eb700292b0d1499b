//! tollgate's language server: inline completion (LSP 3.18 `textDocument/inlineCompletion`, and
//! `textDocument/completion` for clients without it), code actions (explain, review, tests, docs,
//! fix a diagnostic) and a status notification, for every editor.
//!
//! The server knows nothing of providers, budgets or the daemon: it talks to a [`Gateway`], which
//! the `tollgate` crate implements with a client of the daemon's local socket (and tests with a
//! fake). Context comes from tree-sitter ([`context`]), answers are cleaned up ([`post`]).

/// The grammars and scope helpers (crate `tollgate-syntax`).
pub use tollgate_syntax as syntax;

pub mod context;
pub mod documents;
pub mod frames;
pub mod post;
pub mod server;

use std::collections::BTreeMap;
use std::future::Future;

use serde::{Deserialize, Serialize};

pub use context::{Intent, Snippet};

/// A completion as the server asks for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    /// The file, relative to its workspace folder when it is in one.
    pub path: String,
    pub language: String,
    pub prefix: String,
    pub suffix: String,
    #[serde(default)]
    pub snippets: Vec<Snippet>,
    pub intent: Intent,
    /// A directory of the file's repository, for the project.
    #[serde(default)]
    pub repo: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionAnswer {
    pub text: String,
    /// `provider/model` that answered.
    pub model: String,
    #[serde(default)]
    pub cache_hit: bool,
    /// Values masked before the request left the machine.
    #[serde(default)]
    pub redactions: u64,
}

/// A review finding on a line of the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewFinding {
    /// 1-based line in the document.
    pub line: usize,
    /// info, low, medium, high, critical
    pub severity: String,
    pub category: String,
    pub message: String,
    #[serde(default)]
    pub suggestion: Option<String>,
}

/// What the status notification shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GatewayStatus {
    pub reachable: bool,
    /// The route completions use, and the model that last answered.
    pub route: Option<String>,
    pub model: Option<String>,
    /// The tightest budget's remaining share, as the gateway words it (`$3.20 of $5.00 today`).
    pub budget_left: Option<String>,
    pub redactions: u64,
    pub message: Option<String>,
}

/// Why the gateway did not answer, in the classes an editor shows differently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("the tollgate daemon is not reachable: {0}")]
    Unreachable(String),
    #[error("{0}")]
    Budget(String),
    #[error("{0}")]
    Credentials(String),
    #[error("{0}")]
    Policy(String),
    #[error("{0}")]
    Other(String),
}

impl GatewayError {
    /// The class, for "show each kind of error once".
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::Unreachable(_) => "unreachable",
            GatewayError::Budget(_) => "budget",
            GatewayError::Credentials(_) => "credentials",
            GatewayError::Policy(_) => "policy",
            GatewayError::Other(_) => "other",
        }
    }
}

/// What the language server needs from the gateway.
pub trait Gateway: Send + Sync + 'static {
    fn complete(&self, req: CompletionRequest) -> impl Future<Output = Result<CompletionAnswer, GatewayError>> + Send;

    /// Runs a prompt template (`explain`, `review`, `tests`, `docs`, `fix`) and returns its text.
    fn prompt(
        &self,
        name: &str,
        variables: BTreeMap<String, String>,
        path: Option<String>,
        repo: Option<String>,
    ) -> impl Future<Output = Result<String, GatewayError>> + Send;

    /// Reviews lines `first..=last` (1-based) of a document whose whole text is `text`.
    fn review(
        &self,
        path: &str,
        language: &str,
        text: &str,
        first: usize,
        last: usize,
        repo: Option<String>,
    ) -> impl Future<Output = Result<Vec<ReviewFinding>, GatewayError>> + Send;

    fn status(&self) -> impl Future<Output = Result<GatewayStatus, GatewayError>> + Send;
}
