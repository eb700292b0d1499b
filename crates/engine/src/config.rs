//! Configuration: embedded defaults, a TOML file merged over them key by key, then command-line
//! flags. The effective config remembers where each value came from, for `tollgate config show`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::keychain::KeychainConfig;
use crate::providers::{Limits, ProviderConfig};
use crate::route::{CircuitConfig, PrivacyConfig, RetryConfig};

/// The embedded defaults; the daemon starts on these alone.
pub const DEFAULTS: &str = include_str!("default_config.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("{origin}: {path}: {message}")]
    Invalid { origin: String, path: String, message: String },
    /// Several problems at once, one line each.
    #[error("{}", problems.iter().map(|(path, message)| format!("{origin}: {path}: {message}")).collect::<Vec<_>>().join("\n"))]
    Problems { origin: String, problems: Vec<(String, String)> },
}

impl ConfigError {
    /// `Ok` when there are no problems; the problem, or all of them, otherwise.
    fn of(origin: String, mut problems: Vec<(String, String)>) -> Result<(), Self> {
        match problems.len() {
            0 => Ok(()),
            1 => {
                let (path, message) = problems.remove(0);
                Err(Self::Invalid { origin, path, message })
            }
            _ => Err(Self::Problems { origin, problems }),
        }
    }
}

/// What the config and the policy both state, checked the same way for both (the config at load,
/// the policy in `policy check` and before a daemon applies it): names that must exist, globs
/// that must compile, values in range. A policy's sections may refer to the defaults' providers
/// and routes as well as their own.
pub(crate) struct Sections<'a> {
    pub providers: &'a BTreeMap<String, ProviderConfig>,
    pub routes: &'a BTreeMap<String, RouteConfig>,
    pub model_names: &'a [crate::route::ModelName],
    pub routing: &'a [crate::route::RoutingRule],
    pub budgets: &'a [crate::ledger::budgets::BudgetConfig],
    pub rate_limits: &'a [crate::ratelimit::RateLimitConfig],
    /// Globs every route target must match (`models.allowed`); empty: any.
    pub allowed: &'a [String],
    pub defaults: Option<&'a Config>,
}

impl Sections<'_> {
    fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.get(name).or_else(|| self.defaults.and_then(|d| d.providers.get(name)))
    }

    fn route_known(&self, name: &str) -> bool {
        self.routes.contains_key(name) || self.defaults.is_some_and(|d| d.routes.contains_key(name))
    }

    fn provider_names(&self) -> String {
        let mut names: Vec<&str> = self.providers.keys().map(String::as_str).collect();
        if let Some(d) = self.defaults {
            names.extend(d.providers.keys().map(String::as_str));
        }
        names.sort_unstable();
        names.dedup();
        names.join(", ")
    }

    /// Every problem, each with its key path.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let glob = |g: &str| globset::Glob::new(g).map(|g| g.compile_matcher());
        for (i, g) in self.allowed.iter().enumerate() {
            if let Err(e) = glob(g) {
                out.push((format!("models.allowed[{i}]"), format!("bad glob {g:?}: {e}")));
            }
        }
        let allowed: Vec<_> = self.allowed.iter().filter_map(|g| glob(g).ok()).collect();
        for (name, provider) in self.providers {
            if name.contains('/') {
                out.push((format!("providers.{name}"), "a provider name cannot contain '/'".into()));
            }
            if reqwest::Url::parse(&provider.base_url).is_err() {
                out.push((format!("providers.{name}.base_url"), format!("{:?} is not a URL", provider.base_url)));
            }
        }
        for (alias, route) in self.routes {
            if alias.contains('/') {
                out.push((
                    format!("routes.{alias}"),
                    "an alias cannot contain '/'; it would read as provider/model".into(),
                ));
            }
            if route.targets.is_empty() && route.split.is_empty() {
                out.push((format!("routes.{alias}.targets"), "a route needs at least one target".into()));
            }
            if !route.split.is_empty() && route.split.values().all(|w| *w == 0) {
                out.push((format!("routes.{alias}.split"), "a split needs an arm of weight above 0".into()));
            }
            let targets = route.targets.iter().enumerate().map(|(i, t)| (format!("routes.{alias}.targets[{i}]"), t));
            let arms = route.split.keys().map(|t| (format!("routes.{alias}.split.{t:?}"), t));
            for (at, target) in targets.chain(arms) {
                match target.split_once('/') {
                    Some((provider, model)) if !model.is_empty() && self.provider(provider).is_some() => {
                        if !allowed.is_empty() && !allowed.iter().any(|m| m.is_match(target)) {
                            out.push((at, format!("{target:?} is not in models.allowed")));
                        }
                    }
                    Some((provider, _)) => out.push((
                        at,
                        format!(
                            "{target:?} names provider {provider:?}, which is not configured (known: {})",
                            self.provider_names()
                        ),
                    )),
                    None => out.push((at, format!("{target:?} is not of the form provider/model"))),
                }
            }
            if route.redaction == Some(crate::redact::Mode::Off) {
                let cloud: Vec<&String> = route
                    .targets()
                    .filter(|t| {
                        t.split_once('/').is_none_or(|(p, _)| !self.provider(p).is_some_and(ProviderConfig::is_local))
                    })
                    .collect();
                if !cloud.is_empty() {
                    out.push((
                        format!("routes.{alias}.redaction"),
                        format!("redaction can be off only on a route whose targets are all local; {cloud:?} are not"),
                    ));
                }
            }
        }
        for (i, name) in self.model_names.iter().enumerate() {
            if let Some(problem) = name.problem(|p| self.provider(p).is_some(), |r| self.route_known(r)) {
                out.push((format!("model_names[{i}]"), problem));
            }
        }
        for (i, rule) in self.routing.iter().enumerate() {
            for (j, g) in rule.paths.iter().chain(&rule.projects).enumerate() {
                if let Err(e) = glob(g) {
                    out.push((format!("routing[{i}]"), format!("bad glob {g:?} (#{j}): {e}")));
                }
            }
            if let Some(r) = &rule.route
                && !self.route_known(r)
            {
                out.push((format!("routing[{i}].route"), format!("names route {r:?}, which is not defined")));
            }
            if !rule.local_only && rule.route.is_none() {
                out.push((format!("routing[{i}]"), "a rule does nothing without local_only = true or a route".into()));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, b) in self.budgets.iter().enumerate() {
            let at = format!("budgets[{i}]");
            if let Err(e) = b.validate() {
                out.push((at.clone(), e));
            }
            if !names.insert(&b.name) {
                out.push((format!("{at}.name"), format!("two budgets are named {:?}", b.name)));
            }
            if let Some(r) = &b.downgrade_to
                && !self.route_known(r)
            {
                out.push((format!("{at}.downgrade_to"), format!("names route {r:?}, which is not defined")));
            }
        }
        for (i, r) in self.rate_limits.iter().enumerate() {
            if r.requests_per_minute.is_none() && r.tokens_per_minute.is_none() {
                out.push((format!("rate_limits[{i}]"), "needs requests_per_minute or tokens_per_minute".into()));
            }
            if let Err(e) = glob(&r.matches) {
                out.push((format!("rate_limits[{i}].match"), e.to_string()));
            }
        }
        out
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: Limits,
    pub retry: RetryConfig,
    pub circuit: CircuitConfig,
    pub keychain: KeychainConfig,
    pub privacy: PrivacyConfig,
    pub providers: BTreeMap<String, ProviderConfig>,
    pub routes: BTreeMap<String, RouteConfig>,
    pub redaction: crate::redact::RedactionConfig,
    pub cache: crate::cache::CacheConfig,
    pub audit: AuditConfig,
    pub responses: crate::stored::ResponsesConfig,
    #[serde(default)]
    pub budgets: Vec<crate::ledger::budgets::BudgetConfig>,
    #[serde(default)]
    pub rate_limits: Vec<crate::ratelimit::RateLimitConfig>,
    /// Price overrides, by `provider/model` or `model`: USD per million tokens.
    #[serde(default)]
    pub prices: BTreeMap<String, crate::ledger::prices::PriceConfig>,
    /// Routing rules (after the policy's): local-only and route choice by task, path, project.
    #[serde(default)]
    pub routing: Vec<crate::route::RoutingRule>,
    /// Model names as tools send them, by glob: the provider or route that serves each (after the
    /// policy's; the first match wins).
    #[serde(default)]
    pub model_names: Vec<crate::route::ModelName>,
    pub models: Allowlist,
    pub tasks: Allowlist,
    pub review: ReviewConfig,
    pub policy: PolicySourceConfig,
    pub completion: CompletionConfig,
    /// A team server for shared budgets and team usage (the policy's `[team]` wins).
    #[serde(default)]
    pub team: crate::team::lease::TeamConfig,
    /// OpenTelemetry export to a collector (off by default).
    #[serde(default)]
    pub telemetry: crate::telemetry::TelemetryConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletionConfig {
    pub model: String,
    pub max_tokens: u32,
    pub generate_max_tokens: u32,
}

/// An allow-list of names or globs: the local config's (`allowed`) and the policy's. A name must
/// match every non-empty list.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allowlist {
    pub allowed: Vec<String>,
    /// Set by the policy, never by a config file.
    #[serde(default, skip_deserializing, skip_serializing_if = "Vec::is_empty")]
    pub policy: Vec<String>,
}

impl Allowlist {
    /// Whether `name` (compared exactly) is on every non-empty list.
    pub fn admits(&self, name: &str) -> bool {
        [&self.allowed, &self.policy].iter().all(|l| l.is_empty() || l.iter().any(|a| a == name))
    }
}

pub use tollgate_protocol::Severity;

/// What a review does when the gateway cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Let the push through with a warning.
    Open,
    /// Block the push.
    Closed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewConfig {
    pub block_severity: Severity,
    pub timeout_s: u64,
    pub on_error: OnError,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySourceConfig {
    pub source: String,
    pub sync_interval_s: u64,
    pub gitlab_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    pub enabled: bool,
    pub retention_days: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub host: IpAddr,
    pub port: u16,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Ordered `provider/model` targets; the first healthy one with credentials serves. With a
    /// `split`, they serve only when the user's arm cannot (and may be empty).
    #[serde(default)]
    pub targets: Vec<String>,
    /// An experiment: `provider/model` = weight. Each user is given one arm, drawn by weight
    /// from a hash of the experiment and the user, and keeps it; the ledger records both.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub split: BTreeMap<String, u32>,
    /// The experiment's name in the ledger (default: the route's alias). A new name draws the
    /// arms anew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    /// Overrides `redaction.mode` for this route; `off` only where every target is local.
    #[serde(default)]
    pub redaction: Option<crate::redact::Mode>,
}

impl RouteConfig {
    /// Every target the route may send to: its fallback list, then its split's arms.
    pub fn targets(&self) -> impl Iterator<Item = &String> {
        self.targets.iter().chain(self.split.keys())
    }
}

/// Where one effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Flag(&'static str),
    /// The team policy (its source and commit).
    Policy(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Flag(name) => write!(f, "flag {name}"),
            Source::Policy(label) => write!(f, "policy {label}"),
        }
    }
}

/// The effective configuration and the origin of each leaf value (dotted key).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub sources: BTreeMap<String, Source>,
    pub file: Option<PathBuf>,
    merged: toml::Table,
}

/// Overrides given on the command line.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub port: Option<u16>,
}

impl Loaded {
    /// Loads the defaults, then `file` (when given and present), then `overrides`.
    /// `file_required` makes a missing file an error (it was named explicitly).
    pub fn load(file: Option<&Path>, file_required: bool, overrides: &Overrides) -> Result<Self, ConfigError> {
        let loaded = Self::load_unchecked(file, file_required, overrides)?;
        loaded.check()?;
        Ok(loaded)
    }

    /// Like [`Loaded::load`], without the checks that a policy may satisfy (a route naming a
    /// provider the policy defines): [`Loaded::check`] or the policy overlay runs them.
    pub fn load_unchecked(
        file: Option<&Path>,
        file_required: bool,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut merged: toml::Table = DEFAULTS.parse().expect("embedded defaults are valid TOML");
        let mut sources = BTreeMap::new();
        record_sources(&merged, "", &Source::Default, &mut sources);

        let mut used_file = None;
        if let Some(path) = file {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    let origin = path.display().to_string();
                    let table: toml::Table = text
                        .parse()
                        .map_err(|e: toml::de::Error| ConfigError::Syntax { origin, message: e.to_string() })?;
                    merge(&mut merged, table, "", &Source::File(path.to_path_buf()), &mut sources);
                    used_file = Some(path.to_path_buf());
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !file_required => {}
                Err(source) => {
                    return Err(ConfigError::Read { path: path.to_path_buf(), source });
                }
            }
        }
        if let Some(port) = overrides.port {
            let mut t = toml::Table::new();
            t.insert(
                "server".into(),
                toml::Value::Table(toml::Table::from_iter([("port".into(), toml::Value::Integer(port.into()))])),
            );
            merge(&mut merged, t, "", &Source::Flag("--port"), &mut sources);
        }

        let origin = used_file.as_ref().map_or_else(|| "config".to_string(), |p| p.display().to_string());
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(merged.clone())).map_err(|e| {
            ConfigError::Invalid { origin: origin.clone(), path: e.path().to_string(), message: e.inner().to_string() }
        })?;
        Ok(Self { config, sources, file: used_file, merged })
    }

    /// Checks what types alone cannot (routes name known providers, the host is loopback, ...).
    pub fn check(&self) -> Result<(), ConfigError> {
        let origin = self.file.as_ref().map_or_else(|| "config".to_string(), |p| p.display().to_string());
        ConfigError::of(origin, self.config.problems())
    }

    /// Replaces the config with one derived from it (the policy applied), validates it, and marks
    /// every value that changed as coming from `label`.
    pub fn replace_config(&mut self, config: Config, label: &str) -> Result<(), ConfigError> {
        let file = self.file.as_ref().map_or_else(|| "config".to_string(), |p| p.display().to_string());
        let origin = format!("{file} under policy {label}");
        ConfigError::of(origin.clone(), config.problems())?;
        let merged = toml::Table::try_from(&config).map_err(|e| ConfigError::Invalid {
            origin,
            path: String::new(),
            message: e.to_string(),
        })?;
        let mut before = Vec::new();
        flatten(&self.merged, "", &mut before);
        let before: BTreeMap<String, toml::Value> = before.into_iter().collect();
        let mut after = Vec::new();
        flatten(&merged, "", &mut after);
        let mut sources = BTreeMap::new();
        for (key, value) in after {
            let source = match (before.get(&key), self.sources.get(&key)) {
                (Some(old), Some(source)) if *old == value => source.clone(),
                _ => Source::Policy(label.to_string()),
            };
            sources.insert(key, source);
        }
        self.sources = sources;
        self.merged = merged;
        self.config = config;
        Ok(())
    }

    /// The effective config as `key = value  # source` lines.
    pub fn show(&self) -> String {
        let mut out = String::new();
        let mut leaves = Vec::new();
        flatten(&self.merged, "", &mut leaves);
        for (key, value) in leaves {
            let source = self.sources.get(&key).map_or_else(|| "default".to_string(), ToString::to_string);
            out.push_str(&format!("{key} = {value}  # {source}\n"));
        }
        out
    }

    /// The effective config as JSON: `{ "key": { "value": ..., "source": "..." } }`.
    pub fn show_json(&self) -> serde_json::Value {
        let mut leaves = Vec::new();
        flatten(&self.merged, "", &mut leaves);
        let mut map = serde_json::Map::new();
        for (key, value) in leaves {
            let source = self.sources.get(&key).map_or_else(|| "default".to_string(), ToString::to_string);
            let value: serde_json::Value = serde_json::to_value(&value).unwrap_or(serde_json::Value::Null);
            map.insert(key, serde_json::json!({ "value": value, "source": source }));
        }
        serde_json::Value::Object(map)
    }
}

impl Config {
    /// What the router is built from.
    pub fn router_parts(&self) -> crate::route::Parts<'_> {
        crate::route::Parts {
            routes: self
                .routes
                .iter()
                .map(|(alias, r)| {
                    let spec = crate::route::RouteSpec {
                        targets: &r.targets,
                        split: &r.split,
                        experiment: r.experiment.as_deref(),
                    };
                    (alias.as_str(), spec)
                })
                .collect(),
            model_names: &self.model_names,
            providers: self.providers.iter().map(|(n, p)| (n.as_str(), p.enabled, p.is_local())).collect(),
            rules: self.routing.iter().cloned().chain(self.privacy.as_rules()).collect(),
            allowed: [
                ("the policy", self.models.policy.as_slice()),
                ("the local config", self.models.allowed.as_slice()),
            ],
            circuit: &self.circuit,
            retry: &self.retry,
        }
    }

    /// Checks what types alone cannot: routes name known providers, the host is loopback.
    /// Every problem types alone cannot catch, each with its key path: the host is loopback, the
    /// privacy globs compile, and the checks the policy shares ([`Sections::problems`]).
    fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !self.server.host.is_loopback() {
            out.push((
                "server.host".into(),
                format!(
                    "{} is not a loopback address; tollgate only listens on this machine (use 127.0.0.1 or ::1)",
                    self.server.host
                ),
            ));
        }
        for glob in self.privacy.local_only_paths.iter().chain(&self.privacy.local_only_projects) {
            if let Err(e) = globset::Glob::new(glob) {
                out.push(("privacy".into(), format!("bad glob {glob:?}: {e}")));
            }
        }
        if let Err(e) = self.team.validate() {
            out.push(("team".into(), e));
        }
        if let Err(e) = self.telemetry.validate() {
            out.push(("telemetry".into(), e));
        }
        out.extend(
            Sections {
                providers: &self.providers,
                routes: &self.routes,
                model_names: &self.model_names,
                routing: &self.routing,
                budgets: &self.budgets,
                rate_limits: &self.rate_limits,
                allowed: &self.models.allowed,
                defaults: None,
            }
            .problems(),
        );
        out
    }
}

fn record_sources(table: &toml::Table, prefix: &str, source: &Source, out: &mut BTreeMap<String, Source>) {
    for (k, v) in table {
        let key = join_key(prefix, k);
        match v {
            toml::Value::Table(t) => record_sources(t, &key, source, out),
            _ => {
                out.insert(key, source.clone());
            }
        }
    }
}

/// Merges `over` into `base`: tables key by key, any other value (arrays included) replaced whole.
fn merge(
    base: &mut toml::Table,
    over: toml::Table,
    prefix: &str,
    source: &Source,
    sources: &mut BTreeMap<String, Source>,
) {
    for (k, v) in over {
        let key = join_key(prefix, &k);
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o, &key, source, sources),
            (_, v) => {
                if let toml::Value::Table(t) = &v {
                    record_sources(t, &key, source, sources);
                } else {
                    sources.insert(key, source.clone());
                }
                base.insert(k, v);
            }
        }
    }
}

fn flatten(table: &toml::Table, prefix: &str, out: &mut Vec<(String, toml::Value)>) {
    for (k, v) in table {
        let key = join_key(prefix, k);
        match v {
            toml::Value::Table(t) => flatten(t, &key, out),
            v => out.push((key, v.clone())),
        }
    }
}

/// `prefix.k`, with `k` quoted when it is not a bare TOML key.
pub fn join_key(prefix: &str, k: &str) -> String {
    let needs_quotes = !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let k = if needs_quotes { format!("{k:?}") } else { k.to_string() };
    if prefix.is_empty() { k } else { format!("{prefix}.{k}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempdir::Dir, PathBuf) {
        let dir = tempdir::Dir::new();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    /// A minimal temp dir, so the crate needs no extra dev-dependency.
    mod tempdir {
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                let p = std::env::temp_dir().join(crate::model::new_id("tollgate-cfg-"));
                std::fs::create_dir_all(&p).unwrap();
                Self(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn embedded_defaults_load_and_validate() {
        let loaded = Loaded::load(None, false, &Overrides::default()).unwrap();
        assert_eq!(loaded.config.server.port, 8788);
        assert!(loaded.config.providers["ollama"].is_local());
        assert!(!loaded.config.providers["openai"].is_local());
        assert!(loaded.config.providers["llamacpp"].is_local());
        // Local means loopback, or trusted by name: not a kind of server on another host.
        let remote =
            ProviderConfig { base_url: "http://gpu-box.lan:11434".into(), ..loaded.config.providers["ollama"].clone() };
        assert!(!remote.is_local());
        assert!(ProviderConfig { local: Some(true), ..remote }.is_local());
    }

    #[test]
    fn file_and_flag_override_defaults_and_sources_say_so() {
        let (_d, path) = write(
            "[limits]\nmax_body_bytes = 10\n[providers.fake]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n",
        );
        let loaded = Loaded::load(Some(&path), true, &Overrides { port: Some(9999) }).unwrap();
        assert_eq!(loaded.config.limits.max_body_bytes, 10);
        assert_eq!(loaded.config.server.port, 9999);
        assert_eq!(loaded.sources["limits.max_body_bytes"], Source::File(path.clone()));
        assert_eq!(loaded.sources["server.port"], Source::Flag("--port"));
        assert_eq!(loaded.sources["limits.connect_timeout_ms"], Source::Default);
        let shown = loaded.show();
        assert!(shown.contains(&format!("limits.max_body_bytes = 10  # {}", path.display())), "{shown}");
        assert!(shown.contains("providers.fake.kind = \"openai\""), "{shown}");
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let (_d, path) = write("[providers.x]\nkind = \"opneai\"\nbase_url = \"http://h\"\n");
        let err = Loaded::load(Some(&path), true, &Overrides::default()).unwrap_err().to_string();
        assert!(
            err.contains("providers.x.kind") && err.contains("opneai") && err.contains(&path.display().to_string()),
            "{err}"
        );

        let (_d, path) = write("[routes.r]\ntargets = [\"nope/m\"]\n");
        let err = Loaded::load(Some(&path), true, &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("routes.r.targets") && err.contains("\"nope\""), "{err}");

        let (_d, path) = write("[server]\nhost = \"0.0.0.0\"\n");
        let err = Loaded::load(Some(&path), true, &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("not a loopback"), "{err}");

        let (_d, path) = write("[server\n");
        let err = Loaded::load(Some(&path), true, &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn a_named_file_must_exist_but_the_default_one_need_not() {
        let missing = std::env::temp_dir().join("tollgate-no-such-config.toml");
        assert!(Loaded::load(Some(&missing), false, &Overrides::default()).is_ok());
        assert!(matches!(Loaded::load(Some(&missing), true, &Overrides::default()), Err(ConfigError::Read { .. })));
    }
}
