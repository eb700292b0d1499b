//! `GET /v1/usage?since=..&by=..`: usage since a time, grouped.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Model,
    Project,
    Task,
    Provider,
    Caller,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct UsageLine {
    pub key: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    /// The known cost; requests of unknown price are counted apart.
    pub cost_usd: String,
    pub unknown_cost_requests: u64,
    pub cache_hits: u64,
    pub errors: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct UsageReport {
    pub since: String,
    pub group_by: GroupBy,
    pub lines: Vec<UsageLine>,
    pub total: UsageLine,
}
