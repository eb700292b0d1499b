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
use serde::{Deserialize, Serialize};

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
    #[error("model {model:?} is not allowed by {by} (allowed: {allowed})")]
    NotAllowed { model: String, by: &'static str, allowed: String },
}

/// A model name as tools send it (`claude-sonnet-4-5`, `gpt-5-codex`), matched by a glob and
/// served by a provider (under the same model name) or a route. The policy's come first, then the
/// local config's; the first match wins.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelName {
    /// A glob on the model name the caller sent.
    #[serde(rename = "match")]
    pub pattern: String,
    /// Send the request to this provider, with the model name as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Or serve it from this route alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
}

impl ModelName {
    /// What is wrong with the entry, if anything: a bad glob, or not exactly one of provider and
    /// route, or one that `known` does not know.
    pub fn problem(&self, provider_known: impl Fn(&str) -> bool, route_known: impl Fn(&str) -> bool) -> Option<String> {
        if let Err(e) = Glob::new(&self.pattern) {
            return Some(format!("bad glob {:?}: {e}", self.pattern));
        }
        match (&self.provider, &self.route) {
            (Some(p), None) if !provider_known(p) => Some(format!("provider {p:?} is not configured")),
            (None, Some(r)) if !route_known(r) => Some(format!("route {r:?} is not defined")),
            (Some(_), None) | (None, Some(_)) => None,
            _ => Some("name exactly one of provider and route".into()),
        }
    }
}

/// A routing rule: when a request matches every condition given (any value of each list), it
/// is kept on local targets and/or sent to another route. Rules come from the policy first, then
/// the local config; `privacy.local_only_*` are rules too.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutingRule {
    /// Tasks the rule covers (completion, explain, review, chat, api, ...); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<String>,
    /// Globs on the file the request is about, relative to its repository; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Globs on the project (`group/subgroup/project`); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<String>,
    /// Sensitivity labels the caller sends (`x-tollgate-sensitivity`); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensitivity: Vec<String>,
    /// Nothing matching leaves the machine: only local targets may serve it.
    #[serde(default)]
    pub local_only: bool,
    /// Serve matching requests from this route alias, whatever model they named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
}

/// What a request is, for the routing rules.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub task: &'a str,
    pub path: Option<&'a str>,
    pub project: Option<&'a str>,
    pub sensitivity: Option<&'a str>,
}

/// What the routing rules decided for a request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Decision {
    pub local_only: bool,
    pub route: Option<String>,
}

struct CompiledRule {
    tasks: Vec<String>,
    paths: Option<GlobSet>,
    projects: Option<GlobSet>,
    sensitivity: Vec<String>,
    local_only: bool,
    route: Option<String>,
}

/// Path and project globs match the way file systems and people write names: without case
/// (`Secrets/`, `key.PEM`), and a path written with `\` is matched as if written with `/`.
fn name_globset(globs: &[String]) -> GlobSet {
    let mut b = GlobSetBuilder::new();
    for g in globs {
        // Validated when the config loaded.
        if let Ok(g) = globset::GlobBuilder::new(g).case_insensitive(true).build() {
            b.add(g);
        }
    }
    b.build().unwrap_or_else(|_| GlobSet::empty())
}

impl CompiledRule {
    fn new(r: &RoutingRule) -> Self {
        let set = |g: &[String]| (!g.is_empty()).then(|| name_globset(g));
        Self {
            tasks: r.tasks.clone(),
            paths: set(&r.paths),
            projects: set(&r.projects),
            sensitivity: r.sensitivity.clone(),
            local_only: r.local_only,
            route: r.route.clone(),
        }
    }

    fn matches(&self, f: &RequestFacts<'_>) -> bool {
        let glob = |set: &Option<GlobSet>, v: Option<&str>| {
            set.as_ref().is_none_or(|s| v.is_some_and(|v| s.is_match(v.replace('\\', "/"))))
        };
        (self.tasks.is_empty() || self.tasks.iter().any(|t| t == f.task))
            && (self.sensitivity.is_empty() || f.sensitivity.is_some_and(|s| self.sensitivity.iter().any(|x| x == s)))
            && glob(&self.paths, f.path)
            && glob(&self.projects, f.project)
    }
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

pub use tollgate_protocol::status::{CircuitState, TargetHealth};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    pub attempts_per_target: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub max_retry_after_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitConfig {
    pub failure_threshold: u32,
    pub open_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    pub local_only_paths: Vec<String>,
    pub local_only_projects: Vec<String>,
}

impl PrivacyConfig {
    /// The same, as routing rules.
    pub fn as_rules(&self) -> Vec<RoutingRule> {
        let rule = |paths: &Vec<String>, projects: &Vec<String>| RoutingRule {
            paths: paths.clone(),
            projects: projects.clone(),
            local_only: true,
            ..Default::default()
        };
        let mut out = Vec::new();
        if !self.local_only_paths.is_empty() {
            out.push(rule(&self.local_only_paths, &Vec::new()));
        }
        if !self.local_only_projects.is_empty() {
            out.push(rule(&Vec::new(), &self.local_only_projects));
        }
        out
    }
}

/// A route as the router takes it: `provider/model` targets in order, and a split (target and
/// weight) with the experiment's name.
pub struct RouteSpec<'a> {
    pub targets: &'a [String],
    pub split: &'a std::collections::BTreeMap<String, u32>,
    pub experiment: Option<&'a str>,
}

/// What a router is made of (`Config::router_parts` gathers it from the config).
pub struct Parts<'a> {
    /// Each alias and its route.
    pub routes: Vec<(&'a str, RouteSpec<'a>)>,
    pub model_names: &'a [ModelName],
    /// Each provider: its name, whether it is enabled, whether it is local.
    pub providers: Vec<(&'a str, bool, bool)>,
    /// The routing rules, the privacy settings' rules after them.
    pub rules: Vec<RoutingRule>,
    /// The allowed-model lists, each with who set it.
    pub allowed: [(&'static str, &'a [String]); 2],
    pub circuit: &'a CircuitConfig,
    pub retry: &'a RetryConfig,
}

/// A route's experiment: its name and arms (none of weight 0), as targets and as names.
struct Split {
    experiment: String,
    arms: Vec<TargetRef>,
    named: Vec<(String, u64)>,
}

/// Which arm of an experiment (its name, its arms' names and weights) a request's user is given,
/// as an index into the arms ([`crate::experiments::Experiments::pick`]).
pub type Chooser<'a> = &'a (dyn Fn(&str, &[(String, u64)]) -> usize + Sync);

/// The arm of an experiment a request was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub experiment: String,
    pub arm: String,
}

/// The arm of `experiment` that `user` is given, from arms and their weights (none 0): the same
/// arm for the same two names, spread over users by weight (the first eight bytes of a SHA-256 of
/// both pick a point on the weights' line).
pub fn pick_arm<'a, T>(experiment: &str, user: &str, arms: &'a [(T, u64)]) -> Option<&'a T> {
    use sha2::Digest;
    let total: u64 = arms.iter().map(|(_, w)| w).sum();
    if total == 0 {
        return None;
    }
    let digest = sha2::Sha256::new().chain_update(experiment).chain_update([0u8]).chain_update(user).finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let mut point = u64::from_be_bytes(first) % total;
    arms.iter().find_map(|(arm, w)| {
        if point < *w {
            return Some(arm);
        }
        point -= w;
        None
    })
}

pub struct Router {
    routes: HashMap<String, Vec<TargetRef>>,
    splits: HashMap<String, Split>,
    /// Model names as tools send them: a glob, and the provider or route that serves them.
    names: Vec<(globset::GlobMatcher, ModelName)>,
    providers: HashMap<String, (bool /* enabled */, bool /* local */)>,
    rules: Vec<CompiledRule>,
    /// Allowed-model lists (the policy's, the local config's); a target must match every one.
    allowed: Vec<(&'static str, GlobSet, String)>,
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
    pub fn new(parts: Parts<'_>) -> Self {
        let parse = |t: &String| {
            let (p, m) = t.split_once('/').expect("validated as provider/model");
            TargetRef { provider: p.to_string(), model: m.to_string() }
        };
        let splits = parts
            .routes
            .iter()
            .filter(|(_, r)| r.split.values().any(|w| *w > 0))
            .map(|(alias, r)| {
                let named: Vec<(String, u64)> =
                    r.split.iter().filter(|(_, w)| **w > 0).map(|(t, w)| (t.clone(), u64::from(*w))).collect();
                let arms = named.iter().map(|(t, _)| parse(t)).collect();
                let experiment = r.experiment.unwrap_or(alias).to_string();
                (alias.to_string(), Split { experiment, arms, named })
            })
            .collect();
        Self {
            routes: parts
                .routes
                .into_iter()
                .map(|(alias, r)| (alias.to_string(), r.targets.iter().map(parse).collect()))
                .collect(),
            splits,
            names: parts
                .model_names
                .iter()
                .filter_map(|n| Glob::new(&n.pattern).ok().map(|g| (g.compile_matcher(), n.clone())))
                .collect(),
            providers: parts
                .providers
                .into_iter()
                .map(|(n, enabled, local)| (n.to_string(), (enabled, local)))
                .collect(),
            rules: parts.rules.iter().map(CompiledRule::new).collect(),
            allowed: parts
                .allowed
                .into_iter()
                .filter(|(_, l)| !l.is_empty())
                .map(|(by, l)| (by, globset(l), l.join(", ")))
                .collect(),
            circuit: parts.circuit.clone(),
            retry: parts.retry.clone(),
            health: Mutex::default(),
        }
    }

    /// Whether every allowed-model list admits `target`, or which one refuses it.
    fn allowed(&self, target: &str) -> Result<(), RouteError> {
        match self.allowed.iter().find(|(_, set, _)| !set.is_match(target)) {
            None => Ok(()),
            Some((by, _, list)) => Err(RouteError::NotAllowed { model: target.into(), by, allowed: list.clone() }),
        }
    }

    /// The ordered targets for what the caller named (every arm of a split, then its targets).
    pub fn resolve(&self, model: &str) -> Result<Vec<TargetRef>, RouteError> {
        self.resolve_for(model, None).map(|(targets, _)| targets)
    }

    /// The ordered targets for what a user named: a split route's arm for the user (`choose`
    /// picks it) first, then the route's targets; and the arm given.
    pub fn resolve_for(
        &self,
        model: &str,
        choose: Option<Chooser<'_>>,
    ) -> Result<(Vec<TargetRef>, Option<Assignment>), RouteError> {
        if let Some(targets) = self.routes.get(model) {
            let (ordered, assignment) = match (self.splits.get(model), choose) {
                (Some(split), Some(choose)) => {
                    let arm = &split.arms[choose(&split.experiment, &split.named).min(split.arms.len() - 1)];
                    let rest = targets.iter().filter(|t| *t != arm);
                    let assignment = Assignment { experiment: split.experiment.clone(), arm: arm.to_string() };
                    (std::iter::once(arm).chain(rest).collect(), Some(assignment))
                }
                (Some(split), None) => {
                    let rest = targets.iter().filter(|t| !split.arms.contains(t));
                    (split.arms.iter().chain(rest).collect(), None)
                }
                (None, _) => (targets.iter().collect::<Vec<_>>(), None),
            };
            let enabled: Vec<&TargetRef> =
                ordered.into_iter().filter(|t| self.providers.get(&t.provider).is_some_and(|p| p.0)).collect();
            let allowed: Vec<TargetRef> =
                enabled.iter().filter(|t| self.allowed(&t.to_string()).is_ok()).map(|t| (*t).clone()).collect();
            if let (true, Some(first)) = (allowed.is_empty(), enabled.first()) {
                // Every target is outside an allowed list: say which list.
                self.allowed(&first.to_string())?;
            }
            return Ok((allowed, assignment));
        }
        if let Some((provider, m)) = model.split_once('/') {
            match self.providers.get(provider) {
                Some((true, _)) if !m.is_empty() => {
                    self.allowed(model)?;
                    return Ok((vec![TargetRef { provider: provider.into(), model: m.into() }], None));
                }
                Some((false, _)) => return Err(RouteError::Disabled(provider.into())),
                _ => {}
            }
        }
        if let Some((_, name)) = self.names.iter().find(|(g, _)| g.is_match(model)) {
            match (&name.provider, &name.route) {
                (Some(provider), _) => match self.providers.get(provider) {
                    Some((true, _)) => {
                        let target = TargetRef { provider: provider.clone(), model: model.into() };
                        self.allowed(&target.to_string())?;
                        return Ok((vec![target], None));
                    }
                    _ => return Err(RouteError::Disabled(provider.clone())),
                },
                (None, Some(route)) if route != model => return self.resolve_for(route, choose),
                _ => {}
            }
        }
        let mut aliases: Vec<&str> = self.routes.keys().map(String::as_str).collect();
        aliases.sort_unstable();
        let mut providers: Vec<&str> = self.providers.keys().map(String::as_str).collect();
        providers.sort_unstable();
        Err(RouteError::Unknown { model: model.into(), aliases: aliases.join(", "), providers: providers.join(", ") })
    }

    /// What the routing rules say of a request: local-only if any matching rule says so; the
    /// route of the first matching rule that names one.
    pub fn decide(&self, facts: &RequestFacts<'_>) -> Decision {
        let mut d = Decision::default();
        for rule in self.rules.iter().filter(|r| r.matches(facts)) {
            d.local_only |= rule.local_only;
            if d.route.is_none() {
                d.route.clone_from(&rule.route);
            }
        }
        d
    }

    /// Carries the targets' health (circuits, cool-downs, counts) over from the router this one
    /// replaces, so a reload does not reopen a tripped circuit.
    pub fn adopt_health(&self, old: &Router) {
        let old = std::mem::take(&mut *old.health.lock().expect("health lock"));
        self.health.lock().expect("health lock").extend(old);
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
        if let Some(after) = retry_after
            && after > Duration::from_millis(self.retry.max_retry_after_ms)
        {
            h.cool_until = Some(now + after);
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

    pub fn health_report(&self) -> Vec<TargetHealth> {
        let now = Instant::now();
        let health = self.health.lock().expect("health lock");
        let mut out: Vec<TargetHealth> = health
            .iter()
            .map(|(target, h)| TargetHealth {
                target: target.clone(),
                state: if h.open_until.is_some_and(|u| u > now) {
                    CircuitState::Open
                } else if h.cool_until.is_some_and(|u| u > now) {
                    CircuitState::CoolingDown
                } else {
                    CircuitState::Closed
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
        Router::new(config.router_parts())
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
        let local_only =
            |path, project| r.decide(&RequestFacts { task: "api", path, project, sensitivity: None }).local_only;
        assert!(local_only(Some("app/secrets/prod.env"), None));
        assert!(local_only(None, Some("acme/confidential-payroll")));
        assert!(!local_only(Some("src/main.rs"), Some("acme/web")));
        // As file systems and people write them: any case, `\` as a separator.
        assert!(local_only(Some("app/Secrets/prod.env"), None));
        assert!(local_only(Some("app\\secrets\\db.env"), None));
        assert!(local_only(Some("secrets/db.env"), None));
        assert!(local_only(None, Some("ACME/Confidential-Payroll")));
    }

    #[test]
    fn a_users_arm_is_drawn_by_weight_and_the_same_every_time() {
        let arms = [("a", 70u64), ("b", 30)];
        let mut a = 0;
        for u in 0..10_000 {
            let user = format!("user{u}");
            let first = pick_arm("exp", &user, &arms).unwrap();
            assert_eq!(pick_arm("exp", &user, &arms).unwrap(), first);
            a += u32::from(*first == "a");
        }
        // 7,000 expected, standard deviation 46.
        assert!((6_800..=7_200).contains(&a), "{a}");
        // Another experiment draws anew: about half the users change arms on a 50/50 split.
        let even = [("a", 1u64), ("b", 1)];
        let moved =
            (0..1000).filter(|u| pick_arm("e1", &u.to_string(), &even) != pick_arm("e2", &u.to_string(), &even));
        assert!((400..=600).contains(&moved.count()));
        assert_eq!(pick_arm("exp", "u", &[("a", 0u64)]), None);
    }

    #[test]
    fn a_split_route_serves_the_users_arm_then_its_fallback_targets() {
        let mut config = Loaded::load(None, false, &Overrides::default()).unwrap().config;
        let route: crate::config::RouteConfig = toml::from_str(
            "targets = [\"openai/gpt-5\"]\nsplit = { \"anthropic/claude-sonnet-4-5\" = 1, \"openai/gpt-5\" = 1 }",
        )
        .unwrap();
        config.routes.insert("ab".into(), route);
        let r = Router::new(config.router_parts());
        let pick = |i: usize| {
            move |experiment: &str, arms: &[(String, u64)]| {
                assert_eq!(experiment, "ab", "the experiment is named after the route");
                assert_eq!(arms, [("anthropic/claude-sonnet-4-5".to_string(), 1), ("openai/gpt-5".to_string(), 1)]);
                i
            }
        };
        let names = |t: Vec<TargetRef>| t.iter().map(ToString::to_string).collect::<Vec<_>>();
        let (targets, arm) = r.resolve_for("ab", Some(&pick(0))).unwrap();
        assert_eq!(names(targets), ["anthropic/claude-sonnet-4-5", "openai/gpt-5"]);
        assert_eq!(arm, Some(Assignment { experiment: "ab".into(), arm: "anthropic/claude-sonnet-4-5".into() }));
        // The arm is not tried twice.
        let (targets, _) = r.resolve_for("ab", Some(&pick(1))).unwrap();
        assert_eq!(names(targets), ["openai/gpt-5"]);
        // Without a user (is the route servable at all?), every arm, then the targets.
        assert_eq!(names(r.resolve("ab").unwrap()), ["anthropic/claude-sonnet-4-5", "openai/gpt-5"]);
    }

    #[test]
    fn routing_rules_match_every_condition_given_and_the_first_route_wins() {
        let mut config = Loaded::load(None, false, &Overrides::default()).unwrap().config;
        config.routing = vec![
            RoutingRule {
                tasks: vec!["completion".into()],
                projects: vec!["acme/**".into()],
                route: Some("local".into()),
                ..Default::default()
            },
            RoutingRule { sensitivity: vec!["confidential".into()], local_only: true, ..Default::default() },
            RoutingRule { tasks: vec!["completion".into()], route: Some("fast".into()), ..Default::default() },
        ];
        let r = Router::new(config.router_parts());
        let f = |task, project, sensitivity| RequestFacts { task, path: None, project, sensitivity };
        assert_eq!(
            r.decide(&f("completion", Some("acme/web"), None)),
            Decision { local_only: false, route: Some("local".into()) }
        );
        assert_eq!(r.decide(&f("completion", Some("other/web"), None)).route.as_deref(), Some("fast"));
        assert_eq!(r.decide(&f("completion", None, None)).route.as_deref(), Some("fast"));
        assert_eq!(r.decide(&f("review", None, Some("confidential"))), Decision { local_only: true, route: None });
        assert_eq!(r.decide(&f("review", None, Some("public"))), Decision::default());
    }

    #[test]
    fn a_target_must_match_every_allowed_list() {
        let mut config = Loaded::load(None, false, &Overrides::default()).unwrap().config;
        config.models.policy = vec!["anthropic/*".into(), "ollama/*".into(), "openai/gpt-5*".into()];
        config.models.allowed = vec!["ollama/*".into(), "openai/*".into()];
        let r = Router::new(config.router_parts());
        let names = |m| r.resolve(m).unwrap().iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(names("fast"), ["openai/gpt-5-mini", "ollama/qwen2.5-coder:1.5b"]);
        assert_eq!(names("code"), ["openai/gpt-5"]);
        // A route left with no allowed target says which list refused it.
        config.models.allowed = vec!["ollama/*".into()];
        let r = Router::new(config.router_parts());
        let err = r.resolve("code").map(|_| ()).unwrap_err().to_string();
        assert!(err.contains("\"anthropic/claude-sonnet-5-5\" is not allowed by the local config"), "{err}");
        assert_eq!(names("openai/gpt-5-mini"), ["openai/gpt-5-mini"]);
        let err = r.resolve("anthropic/claude-x").unwrap_err().to_string();
        assert!(err.contains("not allowed by the local config"), "{err}");
        let err = r.resolve("openai/o3").unwrap_err().to_string();
        assert!(err.contains("not allowed by the policy") && err.contains("anthropic/*"), "{err}");
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
