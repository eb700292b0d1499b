//! Precedence: the policy sets the limits; the user's config may tighten them (lower budgets,
//! stricter redaction, fewer models, an earlier block in review) and never loosen them. A local
//! value that would loosen the policy is ignored, and reported.
//!
//! | what | the policy's | a local value |
//! | --- | --- | --- |
//! | providers, prices it names | replace tollgate's | may disable a provider; other changes ignored |
//! | routes it names | replace tollgate's | a local route of the same name wins (within `models`) |
//! | `models.allowed` | a target must match it | a local list narrows further |
//! | `tasks` | only these are served | a local list narrows further |
//! | routing rules, rate limits, model names | apply first | more may be added |
//! | budgets | apply | more may be added; one of the same name only if tighter |
//! | `redaction.mode` | the least strict allowed | a stricter one applies; a looser one ignored |
//! | `redaction.allow` | applies | ignored |
//! | `redaction.off_kinds` | the kinds a user may turn off | only those stay off; others ignored |
//! | `redaction.countries`, `redaction.names` | looked for | more may be added |
//! | `review.block_severity`, `on_error` | the least strict allowed | stricter applies |
//! | `team` | the team server and its lease terms | ignored |
//! | `telemetry` | the collector; whether contents may be exported | contents only if allowed |

use serde::Serialize;

use super::Policy;
use crate::config::{ConfigError, Loaded, OnError, Source};
use crate::ledger::budgets::{Action, BudgetConfig};
use crate::redact::Mode;

pub use tollgate_protocol::Ignored;

fn mode_rank(m: Mode) -> u8 {
    match m {
        Mode::Off => 0,
        Mode::Mask => 1,
        Mode::Block => 2,
    }
}

fn action_rank(a: Action) -> u8 {
    match a {
        Action::Warn => 0,
        Action::Downgrade => 1,
        Action::Block => 2,
    }
}

/// Whether `local` is at least as strict as `policy` (same budget, limits no higher, action no
/// weaker).
fn tighter(local: &BudgetConfig, policy: &BudgetConfig) -> bool {
    let no_higher = |l: Option<u64>, p: Option<u64>| p.is_none_or(|p| l.is_some_and(|l| l <= p));
    local.scope == policy.scope
        && local.matches == policy.matches
        && local.period == policy.period
        && no_higher(local.limit_usd.map(|d| d.0 as u64), policy.limit_usd.map(|d| d.0 as u64))
        && no_higher(local.limit_tokens, policy.limit_tokens)
        && action_rank(local.action) >= action_rank(policy.action)
}

fn show<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Applies `policy` under the loaded local config; returns what was ignored.
pub fn apply(loaded: &mut Loaded, policy: &Policy) -> Result<Vec<Ignored>, ConfigError> {
    let p = &policy.file;
    let key = crate::config::join_key;
    let set_locally = |prefix: &str| {
        loaded.sources.iter().any(|(k, s)| {
            matches!(s, Source::File(_) | Source::Flag(_)) && (k == prefix || k.starts_with(&format!("{prefix}.")))
        })
    };
    let mut c = loaded.config.clone();
    let mut ignored = Vec::new();
    let mut ignore = |key: String, local: String, policy: String, reason: &str| {
        ignored.push(Ignored { key, local, policy, reason: reason.into() });
    };

    for (name, pp) in &p.providers {
        let mut pp = pp.clone();
        let key = key("providers", name);
        if let (Some(lp), true) = (c.providers.get(name), set_locally(&key)) {
            pp.enabled &= lp.enabled;
            let mut changed = lp.clone();
            changed.enabled = pp.enabled;
            if show(&changed) != show(&pp) {
                ignore(key, show(lp), show(&pp), "the policy defines this provider; a user may only disable it");
            }
        }
        c.providers.insert(name.clone(), pp);
    }
    for (name, pp) in &p.prices {
        let at = key("prices", name);
        if let (Some(lp), true) = (c.prices.get(name), set_locally(&at))
            && show(lp) != show(pp)
        {
            ignore(at, show(lp), show(pp), "prices come from the policy");
        }
        c.prices.insert(name.clone(), pp.clone());
    }
    for (alias, route) in &p.routes {
        if !set_locally(&key("routes", alias)) {
            c.routes.insert(alias.clone(), route.clone());
        }
    }
    c.models.policy = p.models.allowed.clone();
    if let Some(tasks) = &p.tasks {
        c.tasks.policy = tasks.clone();
        let extra: Vec<&String> = c.tasks.allowed.iter().filter(|t| !tasks.contains(t)).collect();
        if !extra.is_empty() {
            ignore("tasks.allowed".into(), show(&extra), show(tasks), "a user may allow fewer tasks, not more");
        }
    }
    c.routing = p.routing.iter().cloned().chain(c.routing).collect();
    c.model_names = p.model_names.iter().cloned().chain(c.model_names).collect();
    c.rate_limits = p.rate_limits.iter().cloned().chain(c.rate_limits).collect();

    if let Some(team) = &p.team {
        if set_locally("team") && c.team != *team {
            ignore("team".into(), show(&c.team), show(team), "the policy names the team server");
        }
        c.team = team.clone();
    }

    let telemetry = p.telemetry.clone().unwrap_or_default();
    if let Some(endpoint) = &telemetry.otlp_endpoint {
        c.telemetry.otlp_endpoint = Some(endpoint.clone());
    }
    if c.telemetry.content && !telemetry.allow_content {
        ignore(
            "telemetry.content".into(),
            "true".into(),
            "false".into(),
            "the policy does not allow exporting contents",
        );
        c.telemetry.content = false;
    }

    let mut budgets = p.budgets.clone();
    for local in c.budgets {
        match budgets.iter_mut().find(|b| b.name == local.name) {
            Some(pb) if tighter(&local, pb) => *pb = local,
            Some(pb) => ignore(
                format!("budgets ({})", local.name),
                show(&local),
                show(pb),
                "a budget of the policy's may only be lowered",
            ),
            None => budgets.push(local),
        }
    }
    c.budgets = budgets;

    if let Some(pm) = p.redaction.mode {
        if mode_rank(c.redaction.mode) < mode_rank(pm) {
            if set_locally("redaction.mode") {
                ignore("redaction.mode".into(), show(&c.redaction.mode), show(&pm), "redaction may only be stricter");
            }
            c.redaction.mode = pm;
        }
        for (alias, route) in &mut c.routes {
            // `off` is checked elsewhere: only where every target is local.
            if let Some(m) = route.redaction.filter(|m| *m != Mode::Off && mode_rank(*m) < mode_rank(pm)) {
                ignore(format!("routes.{alias}.redaction"), show(&m), show(&pm), "redaction may only be stricter");
                route.redaction = None;
            }
        }
    }
    if !c.redaction.allow.is_empty() && set_locally("redaction.allow") {
        ignore(
            "redaction.allow".into(),
            show(&c.redaction.allow),
            show(&p.redaction.allow),
            "an allowlist loosens redaction; only the policy's applies",
        );
    }
    c.redaction.allow = p.redaction.allow.clone();
    let (may, may_not): (Vec<String>, Vec<String>) =
        c.redaction.off_kinds.iter().cloned().partition(|k| p.redaction.off_kinds.contains(k));
    if !may_not.is_empty() {
        ignore(
            "redaction.off_kinds".into(),
            show(&may_not),
            show(&p.redaction.off_kinds),
            "turning a kind off loosens redaction; only the kinds the policy lists may be",
        );
    }
    c.redaction.off_kinds = may;
    for (theirs, ours) in
        [(&p.redaction.countries, &mut c.redaction.countries), (&p.redaction.names, &mut c.redaction.names)]
    {
        for value in theirs {
            if !ours.iter().any(|l| l.eq_ignore_ascii_case(value)) {
                ours.push(value.clone());
            }
        }
    }

    if let Some(ps) = p.review.block_severity
        && c.review.block_severity > ps
    {
        if set_locally("review.block_severity") {
            ignore(
                "review.block_severity".into(),
                show(&c.review.block_severity),
                show(&ps),
                "a user may block at a lower severity, not a higher one",
            );
        }
        c.review.block_severity = ps;
    }
    if p.review.on_error == Some(OnError::Closed) && c.review.on_error == OnError::Open {
        if set_locally("review.on_error") {
            ignore("review.on_error".into(), "\"open\"".into(), "\"closed\"".into(), "the policy fails closed");
        }
        c.review.on_error = OnError::Closed;
    }
    if let (Some(t), false) = (p.review.timeout_s, set_locally("review.timeout_s")) {
        c.review.timeout_s = t;
    }

    loaded.replace_config(c, &policy.label())?;
    Ok(ignored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;
    use crate::policy::Snapshot;

    fn policy(text: &str) -> Policy {
        let snap = Snapshot {
            source: "git@example:acme/policy".into(),
            commit: "c0ffee".into(),
            fetched_ms: 0,
            files: [("policy.toml".to_string(), text.to_string())].into(),
        };
        Policy::parse(&snap).unwrap()
    }

    fn local(text: &str) -> (tempfile::TempPath, Loaded) {
        let f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::fs::write(f.path(), text).unwrap();
        let path = f.into_temp_path();
        let loaded = Loaded::load(Some(&path), true, &Overrides::default()).unwrap();
        (path, loaded)
    }

    const POLICY: &str = r#"version = 1
[models]
allowed = ["anthropic/*", "ollama/*", "llamacpp/*"]
[providers.anthropic]
kind = "anthropic"
base_url = "https://llm-proxy.acme.example/anthropic"
[prices."anthropic/claude-sonnet-4-5"]
input = "2"
output = "10"
[[budgets]]
name = "daily"
scope = "user"
period = "day"
limit_usd = "10"
action = "block"
[redaction]
mode = "mask"
allow = ["^acme-fixture-[0-9]+$"]
off_kinds = ["mac_address"]
countries = ["DE"]
names = ["Raj Patel"]
[review]
block_severity = "high"
on_error = "closed"
"#;

    #[test]
    fn telemetry_contents_leave_only_where_the_policy_allows_and_its_collector_wins() {
        let mine = "[telemetry]\notlp_endpoint = \"http://localhost:4318\"\ncontent = true\n";
        let (_f, mut loaded) = local(mine);
        let ignored = apply(&mut loaded, &policy("version = 1\n")).unwrap();
        assert!(!loaded.config.telemetry.content, "a policy that says nothing does not allow contents");
        assert!(ignored.iter().any(|i| i.key == "telemetry.content"), "{ignored:#?}");
        assert_eq!(loaded.config.telemetry.otlp_endpoint.as_deref(), Some("http://localhost:4318"));
        let allowing =
            "version = 1\n[telemetry]\notlp_endpoint = \"https://otel.acme.example\"\nallow_content = true\n";
        let (_f, mut loaded) = local(mine);
        let ignored = apply(&mut loaded, &policy(allowing)).unwrap();
        assert!(loaded.config.telemetry.content && ignored.is_empty(), "{ignored:#?}");
        assert_eq!(loaded.config.telemetry.otlp_endpoint.as_deref(), Some("https://otel.acme.example"));
    }

    #[test]
    fn tightening_applies() {
        let (_f, mut loaded) = local(
            r#"[redaction]
mode = "block"
off_kinds = ["mac_address"]
countries = ["FR"]
[review]
block_severity = "medium"
[providers.anthropic]
kind = "anthropic"
base_url = "https://llm-proxy.acme.example/anthropic"
enabled = false
[[budgets]]
name = "daily"
scope = "user"
period = "day"
limit_usd = "3"
action = "block"
[[budgets]]
name = "mine"
scope = "user"
period = "week"
limit_tokens = 1000
action = "warn"
"#,
        );
        let ignored = apply(&mut loaded, &policy(POLICY)).unwrap();
        assert!(ignored.is_empty(), "{ignored:#?}");
        let c = &loaded.config;
        assert_eq!(c.redaction.mode, Mode::Block);
        assert_eq!(c.review.block_severity, crate::config::Severity::Medium);
        assert_eq!(c.review.on_error, OnError::Closed);
        assert!(!c.providers["anthropic"].enabled);
        assert_eq!(c.budgets.len(), 2);
        assert_eq!(c.budgets[0].limit_usd.unwrap().0, 3_000_000);
        assert_eq!(c.redaction.allow, ["^acme-fixture-[0-9]+$"]);
        assert_eq!(c.redaction.off_kinds, ["mac_address"], "a kind the policy lets users turn off");
        assert_eq!(c.redaction.countries, ["FR", "DE"], "the policy's countries are added to the user's");
        assert_eq!(c.redaction.names, ["Raj Patel"], "and its names");
        assert_eq!(c.models.policy.len(), 3);
        let shown = loaded.show();
        assert!(shown.contains("review.on_error = \"closed\"  # policy git@example:acme/policy@c0ffee"), "{shown}");
    }

    #[test]
    fn loosening_is_ignored_and_reported() {
        let (_f, mut loaded) = local(
            r#"[redaction]
mode = "off"
allow = [".*"]
off_kinds = ["email", "mac_address"]
[review]
block_severity = "critical"
on_error = "open"
[providers.anthropic]
kind = "anthropic"
base_url = "https://api.anthropic.com"
[prices."anthropic/claude-sonnet-4-5"]
input = "0"
output = "0"
[[budgets]]
name = "daily"
scope = "user"
period = "day"
limit_usd = "100"
action = "block"
[routes.code]
targets = ["openai/gpt-4.1", "anthropic/claude-sonnet-4-5"]
"#,
        );
        let ignored = apply(&mut loaded, &policy(POLICY)).unwrap();
        let keys: Vec<&str> = ignored.iter().map(|i| i.key.as_str()).collect();
        for key in [
            "redaction.mode",
            "redaction.allow",
            "redaction.off_kinds",
            "review.block_severity",
            "review.on_error",
            "providers.anthropic",
            "prices.\"anthropic/claude-sonnet-4-5\"",
            "budgets (daily)",
        ] {
            assert!(keys.contains(&key), "{key} not reported: {ignored:#?}");
        }
        let c = &loaded.config;
        assert_eq!(c.redaction.mode, Mode::Mask);
        assert_eq!(c.redaction.allow, ["^acme-fixture-[0-9]+$"]);
        assert_eq!(c.redaction.off_kinds, ["mac_address"], "email stays on: the policy does not list it");
        assert_eq!(c.review.block_severity, crate::config::Severity::High);
        assert_eq!(c.review.on_error, OnError::Closed);
        assert_eq!(c.providers["anthropic"].base_url, "https://llm-proxy.acme.example/anthropic");
        let shown = loaded.show();
        assert!(
            shown.contains("providers.anthropic.base_url = \"https://llm-proxy.acme.example/anthropic\"  # policy"),
            "{shown}"
        );
        assert_eq!(c.budgets[0].limit_usd.unwrap().0, 10_000_000);
        // The local route stands, but the router drops its target outside models.allowed.
        let router = crate::route::Router::new(c.router_parts());
        let targets: Vec<String> = router.resolve("code").unwrap().iter().map(ToString::to_string).collect();
        assert_eq!(targets, ["anthropic/claude-sonnet-4-5"]);
        assert!(ignored[0].to_string().contains("ignored, the policy's"), "{}", ignored[0]);
    }
}
