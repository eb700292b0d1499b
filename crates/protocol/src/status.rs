//! `GET /v1/status`: the running daemon, its credentials, providers, policy and targets.

use serde::{Deserialize, Serialize};

use crate::policy::{Identity, PolicyStatus};

/// Where a provider's key comes from, as far as a status report says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Credentials {
    Keychain,
    Environment,
    /// A local model server: no key needed.
    NotNeeded,
    Missing,
}

impl Credentials {
    pub fn as_str(self) -> &'static str {
        match self {
            Credentials::Keychain => "keychain",
            Credentials::Environment => "environment",
            Credentials::NotNeeded => "not-needed",
            Credentials::Missing => "missing",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderStatus {
    pub name: String,
    /// The wire format (`openai`, `anthropic`, `ollama`, ...).
    pub kind: String,
    /// The address, with anything secret in it masked; `None` where a report does not show it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    pub local: bool,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub credentials: Credentials,
}

fn yes() -> bool {
    true
}

/// A circuit breaker's state for one `provider/model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CircuitState {
    Closed,
    Open,
    CoolingDown,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::CoolingDown => "cooling-down",
        }
    }
}

/// How a `provider/model` has been answering.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetHealth {
    pub target: String,
    pub state: CircuitState,
    pub successes: u64,
    pub failures: u64,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeychainStatus {
    pub backend: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseStatus {
    /// False while the database refuses writes: calls are refused until it keeps them again.
    pub keeps_writes: bool,
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub version: String,
    pub pid: u32,
    pub uptime_s: u64,
    pub port: u16,
    pub config_file: Option<std::path::PathBuf>,
    pub identity: Identity,
    pub policy: PolicyStatus,
    pub keychain: KeychainStatus,
    pub database: DatabaseStatus,
    pub providers: Vec<ProviderStatus>,
    pub health: Vec<TargetHealth>,
}

/// `POST /v1/dashboard/link`: a one-time login link to the dashboard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DashboardLink {
    pub url: String,
    pub expires_at: String,
}
