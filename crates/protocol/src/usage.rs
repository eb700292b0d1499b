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
    /// The experiment and the arm (`experiment: arm`); requests in no experiment are `-`.
    Arm,
}

#[derive(Debug, Default, Serialize, Deserialize)]
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
    /// Latency of the calls providers answered (cache hits apart), arrival to the answer's end; given when
    /// grouping by arm, where it is compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms_p50: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms_p95: Option<f64>,
    /// Reviews, when grouping by arm: chunks reviewed, findings kept, and findings dismissed (the
    /// merge request discussion resolved by hand with the code unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<crate::ReviewOutcome>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct UsageReport {
    pub since: String,
    pub group_by: GroupBy,
    pub lines: Vec<UsageLine>,
    pub total: UsageLine,
}
