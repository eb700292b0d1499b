//! `GET /v1/policy` and `POST /v1/admin/policy/sync`: the team policy in force and how it got
//! there, and who the daemon takes the user to be.

use serde::{Deserialize, Serialize};

/// Who the user is, for the ledger and for per-user and per-group budgets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub username: String,
    /// Full paths of the GitLab groups the user belongs to (`acme/platform`), sorted.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Where the name came from: `os`, `gitlab-ci`, or the GitLab host.
    pub source: String,
}

/// One problem in a policy, where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)
    }
}

/// A local setting that would have loosened the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ignored {
    pub key: String,
    pub local: String,
    pub policy: String,
    pub reason: String,
}

impl std::fmt::Display for Ignored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: local {} ignored, the policy's {} applies ({})", self.key, self.local, self.policy, self.reason)
    }
}

/// What `tollgate policy status` shows (`GET /v1/policy`, and `policy` in `/v1/status`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyStatus {
    /// The `policy.source` setting; empty when none is set.
    pub source: String,
    /// The commit in force (a content hash for a directory).
    pub commit: Option<String>,
    pub fetched_at: Option<String>,
    pub age_s: Option<i64>,
    pub last_check: Option<String>,
    pub next_check: Option<String>,
    /// The last sync's error, if it failed: the policy in force is the last good one.
    pub last_error: Option<String>,
    /// The problems of a commit that was rejected.
    pub rejected_commit: Option<String>,
    pub problems: Vec<Problem>,
    /// The local config file could not be used: the previous config stays in force.
    pub config_error: Option<String>,
    /// Local settings ignored because they would loosen the policy.
    pub ignored: Vec<Ignored>,
    /// Changed settings that take effect at the next start.
    pub needs_restart: Vec<String>,
    pub identity: Option<Identity>,
}

/// `POST /v1/admin/policy/sync`: whether the sync changed the policy in force, or why it failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncReply {
    pub changed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub status: PolicyStatus,
}
