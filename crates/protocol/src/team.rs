//! The team server's API (`tollgate team-server`), spoken between each daemon and the one server a
//! team runs: budget leases and usage rows. The daemon authenticates with the user's GitLab token
//! (or a CI job token); the server derives who is asking from it, never from a field of a body.
//!
//! Every figure a daemon sends is absolute (its own spend in the period so far; a row by its
//! request id), so a retried request changes nothing.

use serde::{Deserialize, Serialize};

/// `POST /v1/team/lease`: a slice of a shared budget, or a renewal of the slice held.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// The daemon's id (random, kept in its state directory): one user may run several.
    pub daemon: String,
    /// The budget's name in the policy.
    pub budget: String,
    /// The start of the budget's current period (ms since the epoch), as the daemon counts it.
    pub period_start: i64,
    /// This daemon's own spend on the budget in the period so far (absolute, not a delta).
    pub used_micros: i64,
    pub used_tokens: u64,
}

/// What a daemon may spend on a shared budget in the period, in all (its own spend included).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lease {
    pub budget: String,
    pub period_start: i64,
    /// The most this daemon may have spent in the period by the lease's end (`None`: the budget
    /// has no money limit).
    pub granted_micros: Option<i64>,
    pub granted_tokens: Option<u64>,
    /// How long the grant holds, from when the server made it; the daemon spends none of it after.
    pub ttl_ms: u64,
    /// What the whole team has left to lease after this grant (for `tollgate budget`).
    pub team_left_micros: Option<i64>,
    pub team_left_tokens: Option<u64>,
}

/// One answered request, as the team sees it: figures and labels, never text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UsageRow {
    /// The daemon's request id: a row sent twice is counted once.
    pub request_id: String,
    pub ts_ms: i64,
    /// The GitLab user the daemon acts for; a row naming anyone else is refused.
    pub user: String,
    pub project: Option<String>,
    pub task: String,
    /// `provider/model`
    pub model: String,
    pub caller: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: Option<i64>,
    pub outcome: String,
    /// The shared budgets the request was counted against; the daemon must hold a lease on each.
    #[serde(default)]
    pub budgets: Vec<String>,
    /// The experiments' arms the request was given (`experiment: arm`). Sent only when there is
    /// one: a server older than the field refuses it, and the daemon then sends the batch without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<String>,
}

/// `POST /v1/team/usage`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageBatch {
    pub daemon: String,
    pub rows: Vec<UsageRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UsageAck {
    /// Rows new to the server.
    pub stored: usize,
    /// Rows it already had (a retried batch).
    pub duplicates: usize,
}

/// `GET /v1/team/usage?by=...&since=...`: the whole team's usage, to the policy's team admins.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TeamUsage {
    pub by: TeamGroupBy,
    pub since_ms: i64,
    pub lines: Vec<TeamUsageLine>,
}

/// How team usage is grouped (`tollgate usage --team --by ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TeamGroupBy {
    User,
    /// The GitLab groups of the user at the time of the request (a row counts under each).
    Group,
    Project,
    Model,
    Task,
    /// The calling tool (Claude Code, Codex, an editor, a hook).
    Tool,
    /// The experiment and arm (`experiment: arm`), to compare arms across the team.
    Arm,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TeamUsageLine {
    pub key: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: i64,
}

/// The server's error body: `{"error": {"message": ...}}` with a status that says who is at fault.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TeamError {
    pub error: TeamErrorBody,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TeamErrorBody {
    pub message: String,
}
