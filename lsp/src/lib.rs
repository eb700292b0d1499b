//! tollgate's language server: inline completion (LSP 3.18 `textDocument/inlineCompletion`, and
//! `textDocument/completion` for clients without it), code actions (explain, review, tests, docs,
//! fix a diagnostic) and a status notification, for every editor.
//!
//! The server knows nothing of providers, budgets or the daemon: it talks to an [`Assistant`],
//! which the `tollgate` crate implements with a client of the daemon's local socket (and tests with
//! a fake). It speaks in the daemon API's types (crate `tollgate-protocol`, without its client).
//! Context comes from tree-sitter ([`context`]), answers are cleaned up ([`post`]).

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

/// The daemon's API types the server speaks in (crate `tollgate-protocol`).
pub use tollgate_protocol::{
    CompletionAnswer, CompletionRequest, Intent, ReviewFinding, ReviewLines, Severity, Snippet,
};

/// What the status notification shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AssistantStatus {
    pub reachable: bool,
    /// The route completions use, and the model that last answered.
    pub route: Option<String>,
    pub model: Option<String>,
    /// The tightest budget's remaining share, as the gateway words it (`$3.20 of $5.00 today`).
    pub budget_left: Option<String>,
    pub redactions: u64,
    pub message: Option<String>,
}

/// Why the assistant did not answer, in the classes an editor shows differently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssistantError {
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

impl AssistantError {
    /// The class, for "show each kind of error once".
    pub fn kind(&self) -> &'static str {
        match self {
            AssistantError::Unreachable(_) => "unreachable",
            AssistantError::Budget(_) => "budget",
            AssistantError::Credentials(_) => "credentials",
            AssistantError::Policy(_) => "policy",
            AssistantError::Other(_) => "other",
        }
    }
}

/// What the language server needs answered: completions, prompts, reviews and a status. The
/// `tollgate` crate implements it over the daemon's socket; tests, with a fake.
pub trait Assistant: Send + Sync + 'static {
    fn complete(&self, req: CompletionRequest)
    -> impl Future<Output = Result<CompletionAnswer, AssistantError>> + Send;

    /// Runs a prompt template (`explain`, `review`, `tests`, `docs`, `fix`) and returns its text.
    fn prompt(
        &self,
        name: &str,
        variables: BTreeMap<String, String>,
        path: Option<String>,
        repo: Option<String>,
    ) -> impl Future<Output = Result<String, AssistantError>> + Send;

    /// Reviews some lines of a document.
    fn review(&self, lines: ReviewLines) -> impl Future<Output = Result<Vec<ReviewFinding>, AssistantError>> + Send;

    fn status(&self) -> impl Future<Output = Result<AssistantStatus, AssistantError>> + Send;
}
