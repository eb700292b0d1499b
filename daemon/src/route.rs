//! Routing: which targets may serve a request, in which order, and whether each is healthy.
//!
//! A model is addressed as `provider/model` or by an alias from `[routes]`. Each target has a
//! circuit: after `failure_threshold` consecutive failures it opens for `open_ms` and is skipped;
//! after that one trial call is let through (half-open). A Retry-After longer than the gateway
//! waits for puts the target in cool-down until the time it named.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Serialize;

use crate::config::{CircuitConfig, Config, RetryConfig};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRef {
    pub provider: String,
    pub model: String,
}

impl std::fmt::Display for TargetRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(
        "unknown model {model:?}: use an alias ({aliases}) or provider/model with a configured provider ({providers})"
    )]
    Unknown { model: String, aliases: String, providers: String },
    #[error("provider {0:?} is disabled in the config")]
    Disabled(String),
}

/// Why a target was passed over without a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    CircuitOpen { for_ms: u64 },
    CoolingDown { for_ms: u64 },
    NotLocal,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::CircuitOpen { for_ms } => {
                write!(f, "circuit open after repeated failures (retry in {}s)", for_ms.div_ceil(1000))
            }
            Skip::CoolingDown { for_ms } => {
                write!(f, "rate limited by the provider (Retry-After, {}s left)", for_ms.div_ceil(1000))
            }
            Skip::NotLocal => f.write_str("not a local model, and this request is local-only"),
        }
    }
}

#[derive(Debug, Default)]
struct Health {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    cool_until: Option<Instant>,
    successes: u64,
    failures: u64,
    last_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct HealthReport {
    pub target: String,
    pub state: &'static str,
    pub successes: u64,
    pub failures: u64,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
}

pub struct Router {
    routes: HashMap<String, Vec<TargetRef>>,
    providers: HashMap<String, (bool /* enabled */, bool /* local */)>,
    local_paths: GlobSet,
    local_projects: GlobSet,
    circuit: CircuitConfig,
    retry: RetryConfig,
    health: Mutex<HashMap<String, Health>>,
}

fn globset(globs: &[String]) -> GlobSet {
    let mut b = GlobSetBuilder::new();
    for g in globs {
        // Validated when the config loaded.
        if let Ok(g) = Glob::new(g) {
            b.add(g);
        }
    }
    b.build().unwrap_or_else(|_| GlobSet::empty())
}

impl Router {
    pub fn new(config: &Config) -> Self {
        let parse = |t: &String| {
            let (p, m) = t.split_once('/').expect("validated as provider/model");
            TargetRef { provider: p.to_string(), model: m.to_string() }
        };
        Self {
            routes: config
                .routes
                .iter()
                .map(|(alias, r)| (alias.clone(), r.targets.iter().map(parse).collect()))
                .collect(),
            providers: config.providers.iter().map(|(n, p)| (n.clone(), (p.enabled, p.is_local()))).collect(),
            local_paths: globset(&config.privacy.local_only_paths),
            local_projects: globset(&config.privacy.local_only_projects),
            circuit: config.circuit.clone(),
            retry: config.retry.clone(),
            health: Mutex::default(),
        }
    }

    /// The ordered targets for what the caller named.
    pub fn resolve(&self, model: &str) -> Result<Vec<TargetRef>, RouteError> {
        if let Some(targets) = self.routes.get(model) {
            return Ok(targets
                .iter()
                .filter(|t| self.providers.get(&t.provider).is_some_and(|p| p.0))
                .cloned()
                .collect());
        }
        if let Some((provider, m)) = model.split_once('/') {
            match self.providers.get(provider) {
                Some((true, _)) if !m.is_empty() => {
                    return Ok(vec![TargetRef { provider: provider.into(), model: m.into() }]);
                }
                Some((false, _)) => return Err(RouteError::Disabled(provider.into())),
                _ => {}
            }
        }
        let mut aliases: Vec<&str> = self.routes.keys().map(String::as_str).collect();
        aliases.sort_unstable();
        let mut providers: Vec<&str> = self.providers.keys().map(String::as_str).collect();
        providers.sort_unstable();
        Err(RouteError::Unknown { model: model.into(), aliases: aliases.join(", "), providers: providers.join(", ") })
    }

    /// Whether config rules make a request with this path or project local-only.
    pub fn local_only_by_rule(&self, path: Option<&str>, project: Option<&str>) -> bool {
        path.is_some_and(|p| self.local_paths.is_match(p)) || project.is_some_and(|p| self.local_projects.is_match(p))
    }

    pub fn is_local(&self, provider: &str) -> bool {
        self.providers.get(provider).is_some_and(|p| p.1)
    }

    /// Whether `target` may be called now.
    pub fn check(&self, target: &TargetRef, local_only: bool) -> Result<(), Skip> {
        if local_only && !self.is_local(&target.provider) {
            return Err(Skip::NotLocal);
        }
        let now = Instant::now();
        let health = self.health.lock().expect("health lock");
        if let Some(h) = health.get(&target.to_string()) {
            if let Some(until) = h.cool_until.filter(|u| *u > now) {
                return Err(Skip::CoolingDown { for_ms: (until - now).as_millis() as u64 });
            }
            if let Some(until) = h.open_until.filter(|u| *u > now) {
                return Err(Skip::CircuitOpen { for_ms: (until - now).as_millis() as u64 });
            }
        }
        Ok(())
    }

    pub fn record_success(&self, target: &TargetRef) {
        let mut health = self.health.lock().expect("health lock");
        let h = health.entry(target.to_string()).or_default();
        h.successes += 1;
        h.consecutive_failures = 0;
        h.open_until = None;
        h.cool_until = None;
    }

    /// Counts a failure; opens the circuit at the threshold, and honours a long Retry-After.
    pub fn record_failure(&self, target: &TargetRef, error: &str, retry_after: Option<Duration>) {
        let now = Instant::now();
        let mut health = self.health.lock().expect("health lock");
        let h = health.entry(target.to_string()).or_default();
        h.failures += 1;
        h.consecutive_failures += 1;
        h.last_error = Some(error.chars().take(300).collect());
        if h.consecutive_failures >= self.circuit.failure_threshold {
            h.open_until = Some(now + Duration::from_millis(self.circuit.open_ms));
        }
        if let Some(after) = retry_after {
            if after > Duration::from_millis(self.retry.max_retry_after_ms) {
                h.cool_until = Some(now + after);
            }
        }
    }

    /// The wait before try number `attempt` (1-based) of one target: the provider's Retry-After
    /// when it is short enough, else jittered exponential backoff. `None`: move to the next target.
    pub fn wait_before_retry(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if attempt >= self.retry.attempts_per_target {
            return None;
        }
        if let Some(after) = retry_after {
            return (after <= Duration::from_millis(self.retry.max_retry_after_ms)).then_some(after);
        }
        let exp = self.retry.backoff_base_ms.saturating_mul(1 << attempt.saturating_sub(1).min(16));
        let capped = exp.min(self.retry.backoff_max_ms);
        // Full jitter in [capped/2, capped].
        Some(Duration::from_millis(capped / 2 + fastrand::u64(0..=capped / 2)))
    }

    /// Aliases and the `provider/model` names that routes make available.
    pub fn model_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.routes.keys().cloned().collect();
        names.sort();
        let mut targets: Vec<String> = self.routes.values().flatten().map(ToString::to_string).collect();
        targets.sort();
        targets.dedup();
        names.extend(targets);
        names
    }

    pub fn health_report(&self) -> Vec<HealthReport> {
        let now = Instant::now();
        let health = self.health.lock().expect("health lock");
        let mut out: Vec<HealthReport> = health
            .iter()
            .map(|(target, h)| HealthReport {
                target: target.clone(),
                state: if h.open_until.is_some_and(|u| u > now) {
                    "open"
                } else if h.cool_until.is_some_and(|u| u > now) {
                    "cooling-down"
                } else {
                    "closed"
                },
                successes: h.successes,
                failures: h.failures,
                consecutive_failures: h.consecutive_failures,
                last_error: h.last_error.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.target.cmp(&b.target));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Loaded, Overrides};

    fn router() -> Router {
        let mut config = Loaded::load(None, false, &Overrides::default()).unwrap().config;
        config.privacy.local_only_paths = vec!["**/secrets/**".into()];
        config.privacy.local_only_projects = vec!["acme/confidential-*".into()];
        config.circuit.failure_threshold = 2;
        Router::new(&config)
    }

    #[test]
    fn aliases_and_direct_targets_resolve_and_unknown_names_say_what_exists() {
        let r = router();
        assert_eq!(r.resolve("local").unwrap()[0].to_string(), "ollama/qwen2.5-coder:1.5b");
        assert_eq!(
            r.resolve("openai/gpt-x").unwrap(),
            vec![TargetRef { provider: "openai".into(), model: "gpt-x".into() }]
        );
        let err = r.resolve("nope/x").unwrap_err().to_string();
        assert!(err.contains("fast") && err.contains("openai"), "{err}");
    }

    #[test]
    fn the_circuit_opens_at_the_threshold_and_a_success_closes_it() {
        let r = router();
        let t = TargetRef { provider: "openai".into(), model: "m".into() };
        r.record_failure(&t, "boom", None);
        assert!(r.check(&t, false).is_ok());
        r.record_failure(&t, "boom", None);
        assert!(matches!(r.check(&t, false), Err(Skip::CircuitOpen { .. })));
        r.record_success(&t);
        assert!(r.check(&t, false).is_ok());
    }

    #[test]
    fn a_long_retry_after_cools_the_target_down_and_a_short_one_is_waited_for() {
        let r = router();
        let t = TargetRef { provider: "anthropic".into(), model: "m".into() };
        assert_eq!(r.wait_before_retry(1, Some(Duration::from_millis(300))), Some(Duration::from_millis(300)));
        assert_eq!(r.wait_before_retry(1, Some(Duration::from_secs(60))), None);
        r.record_failure(&t, "429", Some(Duration::from_secs(60)));
        assert!(matches!(r.check(&t, false), Err(Skip::CoolingDown { .. })));
    }

    #[test]
    fn local_only_skips_cloud_targets_and_rules_match_paths_and_projects() {
        let r = router();
        let cloud = TargetRef { provider: "openai".into(), model: "m".into() };
        let local = TargetRef { provider: "ollama".into(), model: "m".into() };
        assert_eq!(r.check(&cloud, true), Err(Skip::NotLocal));
        assert!(r.check(&local, true).is_ok());
        assert!(r.local_only_by_rule(Some("app/secrets/prod.env"), None));
        assert!(r.local_only_by_rule(None, Some("acme/confidential-payroll")));
        assert!(!r.local_only_by_rule(Some("src/main.rs"), Some("acme/web")));
    }

    #[test]
    fn backoff_grows_within_its_cap_and_stops_after_the_last_try() {
        let r = router();
        for _ in 0..50 {
            let w = r.wait_before_retry(1, None).unwrap();
            assert!(w >= Duration::from_millis(50) && w <= Duration::from_millis(100), "{w:?}");
        }
        assert_eq!(r.wait_before_retry(2, None), None);
    }
}
