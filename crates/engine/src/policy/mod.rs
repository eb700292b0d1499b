//! The team policy: `policy.toml` at the root of a repository, extra redaction rules under
//! `rules/`, prompt overrides and additions under `prompts/`. The policy sets the limits; the
//! user's own config may only tighten them ([`overlay`]). It is fetched by [`source`], kept and
//! swapped by the daemon's reloader (`tollgate::reload`), and checked whole before use
//! ([`Policy::parse`]), with every problem located at a file and line.

pub mod overlay;
pub mod source;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{OnError, RouteConfig, Severity};
use crate::ledger::budgets::BudgetConfig;
use crate::ledger::prices::PriceConfig;
use crate::providers::ProviderConfig;
use crate::ratelimit::RateLimitConfig;
use crate::route::RoutingRule;

/// The policy format this tollgate reads.
pub const VERSION: u32 = 1;

/// `policy.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "tollgate policy", description = "policy.toml at the root of a tollgate policy repository")]
pub struct PolicyFile {
    /// The policy format; this tollgate reads version 1.
    pub version: u32,
    /// Providers the team uses, by name (a name used in `provider/model` targets). They replace
    /// tollgate's built-in providers of the same name; a user may disable one, not change it.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    #[serde(default)]
    pub models: ModelsPolicy,
    /// Prices, by `provider/model` or `model`: USD per million tokens.
    #[serde(default)]
    pub prices: BTreeMap<String, PriceConfig>,
    /// Route aliases: ordered `provider/model` targets.
    #[serde(default)]
    pub routes: BTreeMap<String, RouteConfig>,
    /// Routing rules by task, path, project and sensitivity: local-only, or another route.
    #[serde(default)]
    pub routing: Vec<RoutingRule>,
    /// Model names as tools send them (`claude-*`, `gpt-*`), by glob: the provider or route that
    /// serves each. Matched before the local config's.
    #[serde(default)]
    pub model_names: Vec<crate::route::ModelName>,
    /// Budgets per user, per GitLab group, per project and per model.
    #[serde(default)]
    pub budgets: Vec<BudgetConfig>,
    #[serde(default)]
    pub redaction: RedactionPolicy,
    #[serde(default)]
    pub review: ReviewPolicy,
    /// Rate limits per caller, project or model (a user may add more, not remove these).
    #[serde(default)]
    pub rate_limits: Vec<RateLimitConfig>,
    /// The tasks that may be served (completion, explain, review, chat, api, ...); absent: all.
    #[serde(default)]
    pub tasks: Option<Vec<String>>,
    /// The team server every member's daemon joins, and how it leases shared budgets.
    #[serde(default)]
    pub team: Option<crate::team::lease::TeamConfig>,
    /// The team's OpenTelemetry collector, and whether message contents may be exported.
    #[serde(default)]
    pub telemetry: Option<crate::telemetry::TelemetryPolicy>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelsPolicy {
    /// Globs of the `provider/model` targets that may be used; absent or empty: any.
    #[serde(default)]
    pub allowed: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedactionPolicy {
    /// The least strict mode allowed: `mask` or `block` (a user may choose a stricter one).
    #[serde(default)]
    pub mode: Option<crate::redact::Mode>,
    /// Regexes for values never masked (known fixtures, public identifiers).
    #[serde(default)]
    pub allow: Vec<String>,
    /// The kinds a user may turn off (`redaction.off_kinds`); absent: none may be.
    #[serde(default)]
    pub off_kinds: Vec<String>,
    /// Countries whose national formats everyone's redaction looks for (added to each user's).
    #[serde(default)]
    pub countries: Vec<String>,
    /// Names of people everyone's redaction masks (added to each user's list).
    #[serde(default)]
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewPolicy {
    /// Findings of this severity or above block a push (a user may block at a lower one).
    #[serde(default)]
    pub block_severity: Option<Severity>,
    /// Seconds a review may take before the hook gives up.
    #[serde(default)]
    pub timeout_s: Option<u64>,
    /// On a timeout or gateway error: `open` lets the push through, `closed` blocks it.
    #[serde(default)]
    pub on_error: Option<OnError>,
}

/// The files of one version of a policy repository: what is fetched, kept on disk and parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The source setting it came from.
    pub source: String,
    /// The commit id (a content hash for a local directory).
    pub commit: String,
    pub fetched_ms: i64,
    /// `policy.toml`, `rules/*` (TOML, or YAML/JSON rules of other scanners), `prompts/*.md`, by path
    /// relative to the repository root.
    pub files: BTreeMap<String, String>,
}

/// The JSON Schema of `policy.toml`, generated from the types above; a copy ships as
/// `packaging/policy/policy.schema.json` (a test keeps the two equal).
pub fn schema() -> String {
    serde_json::to_string_pretty(&schemars::schema_for!(PolicyFile)).expect("a schema serializes")
}

/// Whether a repository path belongs in a snapshot.
pub fn wanted(path: &str) -> bool {
    path == "policy.toml"
        || (path.starts_with("rules/") && [".toml", ".yaml", ".yml", ".json"].iter().any(|e| path.ends_with(e)))
        || (path.starts_with("prompts/") && path.ends_with(".md") && !path[8..].contains('/'))
}

/// Largest policy file accepted, in bytes: a policy is configuration, not data.
pub const MAX_FILE_BYTES: usize = 1 << 20;

pub use tollgate_protocol::Problem;

/// A checked policy, ready to apply.
#[derive(Debug, Clone)]
pub struct Policy {
    pub file: PolicyFile,
    /// Extra redaction rules: (origin, text), already known to compile.
    pub rules: Vec<(String, String)>,
    /// Prompt overrides and additions: (name, text, origin), already known to parse.
    pub prompts: Vec<(String, String, String)>,
    pub source: String,
    pub commit: String,
    pub fetched_ms: i64,
}

impl Policy {
    /// `source@commit`, for config sources and messages.
    pub fn label(&self) -> String {
        format!("{}@{}", self.source, &self.commit[..self.commit.len().min(12)])
    }

    /// Parses and checks every file of a snapshot; all problems are reported, not just the first.
    pub fn parse(snap: &Snapshot) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let Some(text) = snap.files.get("policy.toml") else {
            return Err(vec![Problem {
                file: "policy.toml".into(),
                line: 1,
                column: 1,
                message: "missing: a policy repository has policy.toml at its root".into(),
            }]);
        };
        let file = match parse_policy_toml(text) {
            Ok(f) => Some(f),
            Err(p) => {
                problems.push(p);
                None
            }
        };
        let rules: Vec<(String, String)> =
            snap.files.iter().filter(|(p, _)| p.starts_with("rules/")).map(|(p, t)| (p.clone(), t.clone())).collect();
        for (path, text) in &rules {
            if let Err(e) = crate::redact::formats::load_file(text, path) {
                // TOML errors say "at line N, column M"; a rule's own error names the rule.
                let at = toml_position(&e.message);
                let (line, column) = at
                    .or_else(|| (!e.id.is_empty()).then(|| find_line(text, &e.id)).flatten().map(|l| (l, 1)))
                    .unwrap_or((1, 1));
                let what = if e.id.is_empty() { String::new() } else { format!("rule {:?}: ", e.id) };
                let message = match at {
                    // The TOML error's last line says what is wrong; the lines before quote the file.
                    Some(_) => e.message.lines().last().unwrap_or_default().trim().to_string(),
                    None => e.message.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" "),
                };
                problems.push(Problem { file: path.clone(), line, column, message: format!("{what}{message}") });
            }
        }
        let origin = format!("policy {}@{}", snap.source, &snap.commit[..snap.commit.len().min(12)]);
        let prompts: Vec<(String, String, String)> = snap
            .files
            .iter()
            .filter_map(|(p, t)| {
                let name = p.strip_prefix("prompts/")?.strip_suffix(".md")?;
                Some((name.to_string(), t.clone(), origin.clone()))
            })
            .collect();
        let before = problems.len();
        for (name, text, _) in &prompts {
            if let Err(e) = crate::prompts::Prompt::parse(name, text, &origin) {
                problems.push(Problem {
                    file: format!("prompts/{name}.md"),
                    line: e.line,
                    column: 1,
                    message: e.message,
                });
            }
        }
        // What no file shows alone (a split naming a version no file keeps).
        if problems.len() == before
            && let Err((name, e)) = crate::prompts::Prompts::new(&prompts)
        {
            problems.push(Problem { file: format!("prompts/{name}.md"), line: e.line, column: 1, message: e.message });
        }
        if let Some(file) = &file {
            for (path, message) in check(file) {
                let (line, column) = locate(text, &path).unwrap_or((1, 1));
                problems.push(Problem {
                    file: "policy.toml".into(),
                    line,
                    column,
                    message: format!("{path}: {message}"),
                });
            }
        }
        match file {
            Some(file) if problems.is_empty() => Ok(Self {
                file,
                rules,
                prompts,
                source: snap.source.clone(),
                commit: snap.commit.clone(),
                fetched_ms: snap.fetched_ms,
            }),
            _ => Err(problems),
        }
    }
}

/// Reads a policy checkout (or any directory) into a snapshot; the commit is a content hash.
pub fn read_dir(dir: &Path, source: &str) -> std::io::Result<Snapshot> {
    let mut files = BTreeMap::new();
    let mut read = |rel: String| -> std::io::Result<()> {
        let path = dir.join(&rel);
        let len = std::fs::metadata(&path)?.len() as usize;
        if len > MAX_FILE_BYTES {
            return Err(std::io::Error::other(format!(
                "{rel} is {len} bytes; a policy file may have {MAX_FILE_BYTES}"
            )));
        }
        let bytes = std::fs::read(&path)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{rel} is not UTF-8 text")))?;
        files.insert(rel, text);
        Ok(())
    };
    match std::fs::metadata(dir.join("policy.toml")) {
        Ok(_) => read("policy.toml".into())?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    for sub in ["rules", "prompts"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else { continue };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .map(|n| format!("{sub}/{n}"))
            .filter(|p| wanted(p))
            .collect();
        names.sort();
        for n in names {
            read(n)?;
        }
    }
    Ok(Snapshot { source: source.into(), commit: content_hash(&files), fetched_ms: crate::utc::now_ms(), files })
}

/// A stable hash of a snapshot's files, for sources without commits.
pub fn content_hash(files: &BTreeMap<String, String>) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for (path, text) in files {
        h.update((path.len() as u64).to_le_bytes());
        h.update(path.as_bytes());
        h.update((text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    }
    h.finalize().iter().take(20).map(|b| format!("{b:02x}")).collect()
}

fn parse_policy_toml(text: &str) -> Result<PolicyFile, Problem> {
    let de = toml::Deserializer::parse(text).map_err(|e| toml_problem(text, &e))?;
    let file: PolicyFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let mut p = toml_problem(text, &inner);
        if inner.span().is_none()
            && let Some((line, column)) = locate(text, &path)
        {
            (p.line, p.column) = (line, column);
        }
        if path != "." && !p.message.contains(&path) {
            p.message = format!("{path}: {}", p.message);
        }
        p
    })?;
    if file.version != VERSION {
        let (line, column) = locate(text, "version").unwrap_or((1, 1));
        return Err(Problem {
            file: "policy.toml".into(),
            line,
            column,
            message: format!(
                "version {} is not one this tollgate reads (expected {VERSION}); upgrade tollgate or keep the policy at version {VERSION}",
                file.version
            ),
        });
    }
    Ok(file)
}

fn toml_problem(text: &str, e: &toml::de::Error) -> Problem {
    let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
    Problem { file: "policy.toml".into(), line, column, message: e.message().trim().to_string() }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |i| offset - i - 1) + 1;
    (line, column)
}

/// `(line, column)` from a TOML error text ("... at line 5, column 1").
fn toml_position(message: &str) -> Option<(usize, usize)> {
    let rest = &message[message.find("at line ")? + 8..];
    let (line, rest) = rest.split_once(", column ")?;
    let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((line.trim().parse().ok()?, column.parse().ok()?))
}

fn find_line(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

/// The line and column of a dotted key path (`budgets[1].limit_usd`, `routes.code.targets`) in a
/// TOML text, or of the deepest part of it that exists.
pub fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok()?;
    let mut span = None;
    let mut table: Option<&DeTable<'_>> = Some(doc.get_ref());
    let mut value: Option<&DeValue<'_>> = None;
    for part in split_path(path) {
        let next = match (part, table, value) {
            (Part::Key(k), Some(t), _) => t.iter().find(|(key, _)| key.get_ref() == k).map(|(key, v)| (key.span(), v)),
            (Part::Index(i), _, Some(DeValue::Array(a))) => a.get(i).map(|v| (v.span(), v)),
            _ => None,
        };
        let Some((s, v)) = next else { break };
        span = Some(s);
        value = Some(v.get_ref());
        table = match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => None,
        };
    }
    span.map(|s| line_col(text, s.start))
}

enum Part<'a> {
    Key(&'a str),
    Index(usize),
}

fn split_path(path: &str) -> Vec<Part<'_>> {
    let mut out = Vec::new();
    for seg in path.split('.') {
        let (key, mut rest) = match seg.find('[') {
            Some(i) => (&seg[..i], &seg[i..]),
            None => (seg, ""),
        };
        if !key.is_empty() {
            out.push(Part::Key(key.trim_matches('"')));
        }
        while let Some(end) = rest.find(']') {
            if let Ok(i) = rest[1..end].parse() {
                out.push(Part::Index(i));
            }
            rest = &rest[end + 1..];
        }
    }
    out
}

/// What serde cannot check: the checks the config shares ([`crate::config::Sections`]), and the
/// policy's own (prices name known providers, redaction is never switched off, ...). Each problem
/// is (dotted path, message).
fn check(p: &PolicyFile) -> Vec<(String, String)> {
    let defaults = crate::config::Loaded::load(None, false, &Default::default()).expect("embedded defaults load");
    let mut out = crate::config::Sections {
        providers: &p.providers,
        routes: &p.routes,
        model_names: &p.model_names,
        routing: &p.routing,
        budgets: &p.budgets,
        rate_limits: &p.rate_limits,
        allowed: &p.models.allowed,
        defaults: Some(&defaults.config),
    }
    .problems();
    if let Some(Err(e)) = p.team.as_ref().map(crate::team::lease::TeamConfig::validate) {
        out.push(("team".into(), e));
    }
    let provider_known = |name: &str| p.providers.contains_key(name) || defaults.config.providers.contains_key(name);
    for key in p.prices.keys() {
        if let Some((provider, _)) = key.split_once('/')
            && !provider_known(provider)
        {
            out.push((format!("prices.{key:?}"), format!("names provider {provider:?}, which is not configured")));
        }
    }
    if p.redaction.mode == Some(crate::redact::Mode::Off) {
        out.push(("redaction.mode".into(), "a policy cannot switch redaction off; use mask or block (a route whose targets are all local may set redaction = \"off\")".into()));
    }
    for (i, a) in p.redaction.allow.iter().enumerate() {
        if let Err(e) = crate::redact::rules::compile(a) {
            out.push((format!("redaction.allow[{i}]"), format!("bad regex: {e}")));
        }
    }
    if p.review.timeout_s == Some(0) {
        out.push(("review.timeout_s".into(), "a timeout of 0 seconds would fail every review".into()));
    }
    if let Some(tasks) = &p.tasks
        && tasks.is_empty()
    {
        out.push(("tasks".into(), "an empty list would refuse every request; leave `tasks` out to allow all".into()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(files: &[(&str, &str)]) -> Snapshot {
        Snapshot {
            source: "test".into(),
            commit: "0123456789abcdef".into(),
            fetched_ms: 0,
            files: files.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect(),
        }
    }

    /// The config and the policy share one set of checks: the same mistakes, the same paths and
    /// words, and the config reports all of them too, not the first alone.
    #[test]
    fn the_config_and_the_policy_report_the_same_problems_the_same_way() {
        let sections = r#"
[routes.r]
targets = ["nope/m", "no-slash"]
[[routing]]
projects = ["acme/*"]
[[budgets]]
name = "b"
scope = "user"
period = "day"
limit_usd = "1"
action = "downgrade"
downgrade_to = "missing"
[[rate_limits]]
scope = "model"
match = "*"
"#;
        let Err(policy) = Policy::parse(&snap(&[("policy.toml", &format!("version = 1\n{sections}"))])) else {
            panic!("a broken policy parsed")
        };
        let policy: Vec<String> = policy.iter().map(|p| p.message.clone()).collect();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, sections).unwrap();
        let config = crate::config::Loaded::load(Some(&file), true, &Default::default()).unwrap_err().to_string();
        let wanted = [
            ("routes.r.targets[0]", "names provider \"nope\", which is not configured"),
            ("routes.r.targets[1]", "is not of the form provider/model"),
            ("routing[0]", "a rule does nothing without local_only = true or a route"),
            ("budgets[0].downgrade_to", "names route \"missing\", which is not defined"),
            ("rate_limits[0]", "needs requests_per_minute or tokens_per_minute"),
        ];
        for (path, words) in wanted {
            assert!(
                config.lines().any(|l| l.contains(&format!(": {path}: ")) && l.contains(words)),
                "config: {path}: {words}\n{config}"
            );
            assert!(
                policy.iter().any(|m| m.contains(path) && m.contains(words)),
                "policy: {path}: {words}\n{policy:?}"
            );
        }
    }

    #[test]
    fn a_good_policy_parses() {
        let p = Policy::parse(&snap(&[
            (
                "policy.toml",
                r#"version = 1
tasks = ["completion", "review"]
[models]
allowed = ["anthropic/*", "ollama/*"]
[routes.code]
targets = ["anthropic/claude-sonnet-4-5", "ollama/qwen2.5-coder:7b"]
[[routing]]
projects = ["acme/confidential/**"]
local_only = true
[[budgets]]
name = "platform-daily"
scope = "group"
match = "acme/platform"
period = "day"
limit_usd = "5"
action = "block"
[redaction]
mode = "mask"
allow = ["^AKIAFAKEFIXTURE0000$"]
[review]
block_severity = "medium"
on_error = "closed"
"#,
            ),
            ("rules/internal.toml", "[[rule]]\nid = \"acme-token\"\nkind = \"ACME_TOKEN\"\nregex = '''acme_[a-z0-9]{32}'''\nkeywords = [\"acme_\"]\n"),
            ("prompts/explain.md", "+++\ndescription = \"d\"\nversion = 2\nmodel = \"code\"\nvariables = [\"code\"]\n+++\n{{code}}\n"),
        ]))
        .unwrap();
        assert_eq!(p.file.budgets[0].scope, crate::ledger::budgets::BudgetScope::Group);
        assert_eq!(p.rules.len(), 1);
        assert_eq!(p.prompts[0].0, "explain");
        assert_eq!(p.label(), "test@0123456789ab");
    }

    #[test]
    fn every_problem_is_reported_at_its_file_and_line() {
        let problems = Policy::parse(&snap(&[
            (
                "policy.toml",
                "version = 1\n\n[routes.code]\ntargets = [\"nope/model\"]\n\n[[budgets]]\nname = \"b\"\nscope = \"user\"\nperiod = \"day\"\naction = \"block\"\n",
            ),
            ("rules/bad.toml", "[[rule]]\nid = \"x\"\nkind = \"X\"\nregex = '''(unclosed'''\n"),
            ("prompts/p.md", "+++\ndescription = \"d\"\nversion = 1\nmodel = \"m\"\n+++\n{{undeclared}}\n"),
        ]))
        .unwrap_err();
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|t| t.starts_with("policy.toml:4:12: routes.code.targets[0]") && t.contains("\"nope\"")),
            "{text:#?}"
        );
        assert!(
            text.iter().any(|t| t.starts_with("policy.toml:6:") && t.contains("needs limit_usd or limit_tokens")),
            "{text:#?}"
        );
        assert!(text.iter().any(|t| t.starts_with("rules/bad.toml:") && t.contains("bad regex")), "{text:#?}");
        assert!(text.iter().any(|t| t.starts_with("prompts/p.md:6:1:") && t.contains("{{undeclared}}")), "{text:#?}");
    }

    #[test]
    fn syntax_and_type_errors_name_the_line_and_what_was_expected() {
        let e = Policy::parse(&snap(&[("policy.toml", "version = 1\n[budgets\n")])).unwrap_err();
        assert_eq!((e[0].line, e[0].file.as_str()), (2, "policy.toml"), "{e:?}");
        let e = Policy::parse(&snap(&[("policy.toml", "version = 1\n\n[review]\nblock_severity = \"severe\"\n")]))
            .unwrap_err();
        assert_eq!(e[0].line, 4, "{e:?}");
        assert!(e[0].message.contains("severe") && e[0].message.contains("high"), "{e:?}");
        let e = Policy::parse(&snap(&[("policy.toml", "version = 2\n")])).unwrap_err();
        assert!(e[0].message.contains("expected 1"), "{e:?}");
        let e = Policy::parse(&snap(&[("policy.toml", "version = 1\nbudget = []\n")])).unwrap_err();
        assert!(e[0].message.contains("unknown field `budget`") && e[0].line == 2, "{e:?}");
        let e = Policy::parse(&snap(&[("rules/x.toml", "")])).unwrap_err();
        assert!(e[0].message.contains("policy.toml at its root"), "{e:?}");
    }

    #[test]
    fn locate_walks_tables_and_arrays() {
        let text = "version = 1\n[[budgets]]\nname = \"a\"\n[[budgets]]\nname = \"b\"\nlimit_usd = \"x\"\n[routes.\"my-route\"]\ntargets = []\n";
        assert_eq!(locate(text, "budgets[1].limit_usd"), Some((6, 1)));
        assert_eq!(locate(text, "budgets[1]"), Some((4, 1)));
        assert_eq!(locate(text, "routes.my-route.targets"), Some((8, 1)));
        assert_eq!(locate(text, "nothing"), None);
    }

    #[test]
    fn the_shipped_schema_is_the_generated_one() {
        let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../../packaging/policy/policy.schema.json");
        let on_disk = std::fs::read_to_string(shipped).unwrap_or_default();
        assert!(
            on_disk.trim_end() == schema(),
            "packaging/policy/policy.schema.json is stale: run `cargo run -p tollgate -- policy schema > packaging/policy/policy.schema.json`"
        );
    }

    #[test]
    fn only_policy_files_belong_in_a_snapshot() {
        assert!(wanted("policy.toml") && wanted("rules/a.toml") && wanted("prompts/explain.md"));
        assert!(wanted("rules/kingfisher.yaml") && wanted("rules/trufflehog.yml"), "other scanners' rule files");
        assert!(
            !wanted("README.md") && !wanted("rules/a.txt") && !wanted("prompts/sub/x.md") && !wanted("src/policy.toml")
        );
    }
}
