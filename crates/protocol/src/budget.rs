//! `GET /v1/budget`: each budget's spend, limit and reset, and the words a budget is declared in.

use serde::{Deserialize, Serialize};
use tollgate_model::utc::Period;

use crate::log::Micros;

/// Whose spend a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BudgetScope {
    /// Everything this user does; `match` is a glob on the user's name (GitLab username when the
    /// policy comes from GitLab, else the OS user).
    User,
    /// Everything this user does, when the user belongs to a GitLab group matching `match`. With a
    /// team server, one budget the members share; without one, the limit each member gets.
    Group,
    /// Everything everyone under the policy does, as one budget. Needs a team server (`[team]
    /// server`) to be shared; without one, each daemon counts its own spend against it.
    Team,
    /// Each project (the caller's `group/project`) on its own.
    Project,
    /// Each `provider/model` on its own.
    Model,
}

/// What happens to a request once a budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Refuse the request with an error naming the budget.
    Block,
    /// Reroute the request to `downgrade_to`.
    Downgrade,
    /// Let it through; the response says the budget is spent.
    Warn,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Block => "block",
            Action::Downgrade => "downgrade",
            Action::Warn => "warn",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BudgetsReply {
    pub budgets: Vec<BudgetReport>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BudgetReport {
    pub name: String,
    pub scope: BudgetScope,
    pub key: String,
    pub period: Period,
    pub spent_usd: String,
    pub limit_usd: Option<String>,
    pub spent_tokens: u64,
    pub limit_tokens: Option<u64>,
    pub reserved_usd: String,
    pub remaining_micros: Option<Micros>,
    pub remaining_tokens: Option<u64>,
    pub resets_at: String,
    pub action: Action,
    /// A shared budget's lease from the team server (absent: the budget is counted here alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseReport>,
}

/// What this machine holds of a shared budget.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseReport {
    /// The most this machine may have spent in the period by the lease's end.
    pub granted_usd: Option<String>,
    pub granted_tokens: Option<u64>,
    /// When the lease ends (ISO 8601); `None`: no live lease.
    pub until: Option<String>,
    /// What the team had left to lease at the last grant.
    pub team_left_usd: Option<String>,
    pub team_left_tokens: Option<u64>,
    /// Why the last attempt to reach the team server failed, if it did.
    pub error: Option<String>,
}

impl BudgetReport {
    /// The share of the money limit left (0 to 1), and the text that says it: `$1.20 of $5.00
    /// (daily)`. `None` for a budget without a money limit.
    pub fn money_left(&self) -> Option<(f64, String)> {
        let limit: f64 = self.limit_usd.as_deref()?.parse().ok()?;
        let spent: f64 = self.spent_usd.parse().ok()?;
        (limit > 0.0).then(|| {
            ((limit - spent) / limit, format!("${:.2} of ${limit:.2} ({})", (limit - spent).max(0.0), self.name))
        })
    }
}
