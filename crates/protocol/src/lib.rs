//! The daemon's own HTTP API as types: every request body the daemon reads and every reply it
//! writes on its native endpoints (`/v1/status`, `/v1/policy`, `/v1/budget`, `/v1/usage`,
//! `/v1/log`, `/v1/complete`, `/v1/review`, `/v1/prompts/{name}`). The daemon serializes these
//! types and its clients (the CLI, the git hooks, the language server bridge) deserialize the same
//! ones, so the contract is checked by the compiler on both sides instead of by string keys.
//!
//! With the `client` feature, [`client::DaemonClient`] is the one client of the daemon's local
//! socket, with one reading of its errors. The language server's crate uses the types alone.
//!
//! A field added here with `#[serde(default)]` keeps older clients and daemons talking; renaming
//! or removing one is a breaking change of the API (editors and scripts read it too).

pub mod budget;
#[cfg(feature = "client")]
pub mod client;
pub mod complete;
pub mod log;
pub mod policy;
pub mod prompt;
pub mod review;
pub mod status;
pub mod team;
pub mod usage;

/// An enum's word as the API writes it (`day`, `block`, `model`): for query strings and text
/// output. Empty for a value that does not serialize to one string.
pub fn word(value: impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

pub use budget::{Action, BudgetReport, BudgetScope, BudgetsReply, LeaseReport};
pub use complete::{CompletionAnswer, CompletionRequest, Intent, Snippet};
pub use log::{Call, CallsReply, Micros, Outcome, Row};
pub use policy::{Identity, Ignored, PolicyStatus, Problem, SyncReply};
pub use prompt::{PromptAnswer, PromptCall, Repair};
pub use review::{FindingsReply, ReviewFinding, ReviewLines, ReviewOutcome, Severity};
pub use status::{Credentials, DaemonStatus, DashboardLink, TargetHealth};
pub use usage::{GroupBy, UsageLine, UsageReport};
