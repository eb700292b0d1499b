//! Everything the pipeline derives from the effective configuration (local config + policy +
//! identity): routes, budgets, rate limits, prices, the redaction scanner, prompts. Built whole,
//! checked whole, and swapped in whole by [`crate::pipeline::Gateway::swap`]; a request reads one
//! `Runtime` at its start and keeps it to its end, so a reload never mixes two configurations
//! inside one request.

use std::sync::Arc;

use anyhow::Context;

use crate::config::{Config, Loaded};
use crate::identity::Identity;
use crate::ledger::budgets::Budgets;
use crate::ledger::prices::Prices;
use crate::policy::Policy;
use crate::policy::overlay::{self, Ignored};
use crate::prompts::Prompts;
use crate::ratelimit::RateLimits;
use crate::redact::Redactor;
use crate::route::Router;

pub struct Runtime {
    pub config: Arc<Config>,
    /// The effective config with the origin of each value, for `tollgate config show`.
    pub loaded: Loaded,
    pub router: Arc<Router>,
    pub budgets: Arc<Budgets>,
    pub limits: RateLimits,
    pub prices: Prices,
    pub redactor: Redactor,
    pub prompts: Arc<Prompts>,
    pub identity: Identity,
    /// `source@commit` of the policy in force.
    pub policy: Option<String>,
    /// Local settings that would have loosened the policy.
    pub ignored: Vec<Ignored>,
    /// Whether anything needs token estimates (budgets, token rate limits).
    pub estimates: bool,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("policy", &self.policy).finish_non_exhaustive()
    }
}

impl Runtime {
    /// Applies `policy` (when any) under `loaded` (from [`Loaded::load_unchecked`]) and checks the
    /// result, then builds every part; any error leaves the caller's current runtime in place.
    pub fn build(mut loaded: Loaded, policy: Option<&Policy>, identity: Identity) -> anyhow::Result<Self> {
        let ignored = match policy {
            Some(p) => overlay::apply(&mut loaded, p)?,
            None => {
                loaded.check()?;
                Vec::new()
            }
        };
        for i in &ignored {
            tracing::warn!(setting = %i.key, "{i}");
        }
        let config = Arc::new(loaded.config.clone());
        let extra_rules = policy.map(|p| p.rules.as_slice()).unwrap_or_default();
        let scanner = crate::redact::load_scanner(&config.redaction, extra_rules).context("redaction rules")?;
        let prompts = Prompts::new(policy.map(|p| p.prompts.as_slice()).unwrap_or_default())
            .map_err(|(name, e)| anyhow::anyhow!("prompts/{name}.md:{}: {}", e.line, e.message))?;
        let leases = config.team.server.as_ref().map(|_| Arc::new(crate::team::lease::Leases::default()));
        let budgets = Arc::new(Budgets::new(&config.budgets, &identity, leases));
        let estimates = !budgets.is_empty() || config.rate_limits.iter().any(|r| r.tokens_per_minute.is_some());
        Ok(Self {
            router: Arc::new(Router::new(config.router_parts())),
            limits: RateLimits::new(&config.rate_limits),
            prices: Prices::new(&config.prices),
            redactor: Redactor::new(Arc::new(scanner)),
            prompts: Arc::new(prompts),
            policy: policy.map(Policy::label),
            budgets,
            estimates,
            identity,
            ignored,
            config,
            loaded,
        })
    }

    /// Settings a running daemon cannot change: they take effect at the next start.
    pub fn needs_restart(&self, new: &Config) -> Vec<&'static str> {
        fn json<T: serde::Serialize>(v: &T) -> String {
            serde_json::to_string(v).unwrap_or_default()
        }
        let old = &self.config;
        [
            ("server", json(&old.server) != json(&new.server)),
            ("limits", json(&old.limits) != json(&new.limits)),
            ("keychain", json(&old.keychain) != json(&new.keychain)),
            ("policy", json(&old.policy) != json(&new.policy)),
            ("telemetry", json(&old.telemetry) != json(&new.telemetry)),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
    }
}
