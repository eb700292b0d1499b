//! Redaction rules: the built-in set (`rules.toml`, in tollgate's own format), rule files in that
//! format, and rule files in gitleaks' TOML format (id, regex, keywords, entropy, secretGroup,
//! allowlists, stopwords), compiled to one shape.

use regex::bytes::{Regex, RegexBuilder};
use serde::Deserialize;

/// The built-in rule set.
pub const BUILT_IN: &str = include_str!("rules.toml");
/// The same rules as JSON, each with its pattern's capture count (made by `build.rs`).
const BUILT_IN_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/rules.json"));

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Secret,
    Personal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    Line,
    Block,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validate {
    Luhn,
    Iban,
    Ipv4Public,
    Email,
    Phone,
    UsSsn,
    UkNino,
    DeTaxId,
    FrNir,
    EsDni,
    ItCodiceFiscale,
    /// The Verhoeff check digit (Indian Aadhaar numbers).
    Verhoeff,
    Ipv6Public,
    Mac,
}

/// A vendor's checksum inside its token, verified offline. It never decides whether a value is
/// masked (a value shaped like a credential is masked whatever its checksum); it tells a real
/// token from a made-up one in scan reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Checksum {
    /// GitHub's and npm's: the CRC32 of the 30 characters after the 4-character prefix, as six
    /// base62 digits at the end.
    Crc32Base62,
    /// PyPI's: the token is a macaroon (v2 binary, URL-safe base64) whose structure must parse
    /// whole; its HMAC signature only PyPI can check.
    PypiMacaroon,
}

/// One rule in tollgate's format.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: String,
    pub kind: String,
    #[serde(default = "secret")]
    pub category: Category,
    #[serde(default)]
    pub keywords: Vec<String>,
    pub regex: String,
    #[serde(default)]
    pub secret_group: usize,
    #[serde(default)]
    pub entropy: Option<f64>,
    #[serde(default = "line")]
    pub window: Window,
    #[serde(default)]
    pub validate: Option<Validate>,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub allow_line: Vec<String>,
    #[serde(default)]
    pub stopwords: Vec<String>,
    #[serde(default = "ten")]
    pub priority: i32,
    /// A template of what the rule finds, for the generated tests (see rules.toml's header).
    #[serde(default)]
    pub sample: Option<String>,
    #[serde(default)]
    pub checksum: Option<Checksum>,
    /// A national format (ISO 3166 code, `US`): looked for only where `redaction.countries` lists it.
    #[serde(default)]
    pub country: Option<String>,
}

fn secret() -> Category {
    Category::Secret
}
fn line() -> Window {
    Window::Line
}
fn ten() -> i32 {
    10
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    rule: Vec<RuleSpec>,
}

/// A rule's pattern: checked when the rule is loaded, compiled the first time the rule has
/// somewhere to look. Most rules never meet their keyword in a session, and a compiled regex
/// costs tens of kilobytes: with 340 rules, compiling all at load held some 17 MB.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    /// Capture groups, group 0 included (as `Regex::captures_len` counts them).
    captures: usize,
    compiled: std::sync::OnceLock<Option<Regex>>,
}

impl Pattern {
    /// Checks `source` (syntax and groups) without compiling it.
    pub fn new(source: &str) -> Result<Self, String> {
        Ok(Self::counted(source, crate::captures::count(source)?))
    }

    /// A pattern already checked, with its capture groups counted (the built-in rules, at build).
    fn counted(source: &str, captures: usize) -> Self {
        Self { source: source.to_string(), captures, compiled: std::sync::OnceLock::new() }
    }

    /// The compiled regex, made on first use. One the engine refuses after all (beyond its size
    /// limit) is logged once and matches nothing.
    pub fn regex(&self) -> Option<&Regex> {
        self.compiled
            .get_or_init(|| {
                compile(&self.source)
                    .inspect_err(
                        |e| tracing::error!(pattern = %self.source, error = %e, "a rule's regex does not compile"),
                    )
                    .ok()
            })
            .as_ref()
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn captures_len(&self) -> usize {
        self.captures
    }

    pub fn is_match(&self, haystack: &[u8]) -> bool {
        self.regex().is_some_and(|r| r.is_match(haystack))
    }
}

impl Rule {
    /// The first capture group as the secret where the pattern has one, as gitleaks, Kingfisher and
    /// TruffleHog read a rule that does not say.
    pub fn first_group_as_secret(mut self) -> Self {
        if self.regex.captures_len() > 1 {
            self.secret_group = 1;
        }
        self
    }
}

/// A loaded rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub kind: String,
    pub category: Category,
    pub keywords: Vec<String>,
    pub regex: Pattern,
    pub secret_group: usize,
    pub entropy: Option<f64>,
    pub window: Window,
    pub validate: Option<Validate>,
    pub allow: Vec<Regex>,
    pub allow_line: Vec<Regex>,
    pub stopwords: Vec<String>,
    pub priority: i32,
    pub sample: Option<String>,
    pub checksum: Option<Checksum>,
    pub country: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{origin}: rule {id:?}: {message}")]
pub struct RuleError {
    pub origin: String,
    pub id: String,
    pub message: String,
}

/// Compiles a pattern for bytes, without Unicode where it allows (faster, and secrets are ASCII).
pub fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    // The engine's default size and cache limits: a larger lazy-DFA cache per regex would grow the
    // daemon's memory with use, for no speed on this workload.
    let build = |unicode: bool| RegexBuilder::new(pattern).unicode(unicode).build();
    build(false).or_else(|_| build(true))
}

impl RuleSpec {
    /// A secret rule with every optional field at its default, for rules made in code (other
    /// scanners' formats, the configured names).
    pub fn new(id: impl Into<String>, kind: impl Into<String>, regex: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            kind: kind.into(),
            category: Category::Secret,
            keywords: Vec::new(),
            regex: regex.into(),
            secret_group: 0,
            entropy: None,
            window: Window::Line,
            validate: None,
            allow: Vec::new(),
            allow_line: Vec::new(),
            stopwords: Vec::new(),
            priority: ten(),
            sample: None,
            checksum: None,
            country: None,
        }
    }

    pub fn compile(self, origin: &str) -> Result<Rule, RuleError> {
        let regex = Pattern::new(&self.regex).map_err(|e| RuleError {
            origin: origin.to_string(),
            id: self.id.clone(),
            message: format!("bad regex: {e}"),
        })?;
        self.with_pattern(regex, origin)
    }

    fn with_pattern(self, regex: Pattern, origin: &str) -> Result<Rule, RuleError> {
        let err = |message: String| RuleError { origin: origin.to_string(), id: self.id.clone(), message };
        if self.secret_group >= regex.captures_len() {
            return Err(err(format!(
                "secret_group {} but the regex has {} groups",
                self.secret_group,
                regex.captures_len() - 1
            )));
        }
        let allow = self
            .allow
            .iter()
            .map(|a| compile(a).map_err(|e| err(format!("bad allow regex: {e}"))))
            .collect::<Result<_, _>>()?;
        let allow_line = self
            .allow_line
            .iter()
            .map(|a| compile(a).map_err(|e| err(format!("bad allow_line regex: {e}"))))
            .collect::<Result<_, _>>()?;
        if self.kind.is_empty() || !self.kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(err("kind must be letters, digits and _".into()));
        }
        Ok(Rule {
            keywords: self.keywords.iter().map(|k| k.to_ascii_lowercase()).collect(),
            stopwords: self.stopwords.iter().map(|k| k.to_ascii_lowercase()).collect(),
            id: self.id,
            kind: self.kind,
            category: self.category,
            regex,
            secret_group: self.secret_group,
            entropy: self.entropy,
            window: self.window,
            validate: self.validate,
            allow,
            allow_line,
            priority: self.priority,
            sample: self.sample,
            checksum: self.checksum,
            country: self.country,
        })
    }
}

/// Rules in tollgate's format.
pub fn parse_tollgate(text: &str, origin: &str) -> Result<Vec<Rule>, RuleError> {
    let file: RuleFile = toml::from_str(text).map_err(|e| RuleError {
        origin: origin.into(),
        id: String::new(),
        message: e.to_string(),
    })?;
    file.rule.into_iter().map(|r| r.compile(origin)).collect()
}

pub fn built_in() -> Vec<Rule> {
    let specs: Vec<(usize, RuleSpec)> = serde_json::from_str(BUILT_IN_JSON).expect("build.rs wrote the rules");
    specs
        .into_iter()
        .map(|(captures, spec)| {
            let pattern = Pattern::counted(&spec.regex, captures);
            spec.with_pattern(pattern, "built-in rules")
        })
        .collect::<Result<_, _>>()
        .expect("the built-in rules compile")
}

// ------------------------------------------------------------------------------------- gitleaks

#[derive(Debug, Deserialize)]
struct GitleaksFile {
    #[serde(default)]
    rules: Vec<GitleaksRule>,
    #[serde(default)]
    allowlist: Option<GitleaksAllowlist>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GitleaksRule {
    id: String,
    #[serde(default)]
    regex: Option<String>,
    #[serde(default)]
    secret_group: Option<usize>,
    #[serde(default)]
    entropy: Option<f64>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    allowlist: Option<GitleaksAllowlist>,
    #[serde(default)]
    allowlists: Vec<GitleaksAllowlist>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GitleaksAllowlist {
    #[serde(default)]
    regexes: Vec<String>,
    #[serde(default)]
    stopwords: Vec<String>,
    /// "match" or "secret" (the default): what the regexes are applied to.
    #[serde(default)]
    regex_target: Option<String>,
}

/// What loading a gitleaks file gave: the rules, and the ones skipped with why.
pub struct GitleaksLoad {
    pub rules: Vec<Rule>,
    pub skipped: Vec<(String, String)>,
}

/// Rules in gitleaks' TOML format. Rules without a regex (path-only rules) and regexes that Rust's
/// engine does not accept are skipped and reported, not fatal.
pub fn parse_gitleaks(text: &str, origin: &str) -> Result<GitleaksLoad, RuleError> {
    let file: GitleaksFile = toml::from_str(text).map_err(|e| RuleError {
        origin: origin.into(),
        id: String::new(),
        message: e.to_string(),
    })?;
    let global = file.allowlist.unwrap_or_default();
    let mut rules = Vec::new();
    let mut skipped = Vec::new();
    for r in file.rules {
        let Some(pattern) = r.regex else {
            skipped.push((r.id, "no regex (a path rule)".into()));
            continue;
        };
        let mut allow = Vec::new();
        let mut stopwords = Vec::new();
        for list in r.allowlist.iter().chain(&r.allowlists).chain(std::iter::once(&global)) {
            // Allowlists on the whole match are applied to the secret: narrower, never looser.
            let _ = &list.regex_target;
            allow.extend(list.regexes.iter().cloned());
            stopwords.extend(list.stopwords.iter().cloned());
        }
        let kind: String =
            r.id.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
        let spec = RuleSpec {
            keywords: r.keywords,
            secret_group: r.secret_group.unwrap_or(0),
            entropy: r.entropy,
            stopwords,
            ..RuleSpec::new(r.id.clone(), kind, pattern)
        };
        let mut compiled = match spec.compile(origin) {
            Ok(c) => c,
            Err(e) => {
                skipped.push((r.id, e.message));
                continue;
            }
        };
        // gitleaks takes the first group when secretGroup is unset and groups exist.
        if r.secret_group.is_none() {
            compiled = compiled.first_group_as_secret();
        }
        compiled.allow = allow.iter().filter_map(|a| compile(a).ok()).collect();
        rules.push(compiled);
    }
    Ok(GitleaksLoad { rules, skipped })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_set_covers_at_least_three_hundred_kinds() {
        let rules = built_in();
        let mut kinds: Vec<&str> = rules.iter().map(|r| r.kind.as_str()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert!(kinds.len() >= 300, "{} kinds", kinds.len());
        let mut ids: Vec<&str> = rules.iter().map(|r| r.id.as_str()).collect();
        ids.sort_unstable();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n, "rule ids are unique");
    }

    #[test]
    fn the_built_in_rules_load_from_their_json_as_from_their_toml() {
        let from_json = built_in();
        let from_toml = parse_tollgate(BUILT_IN, "rules.toml").unwrap();
        assert_eq!(from_json.len(), from_toml.len());
        for (j, t) in from_json.iter().zip(&from_toml) {
            assert_eq!(format!("{j:?}"), format!("{t:?}"), "rule {}", t.id);
            // Every pattern the JSON's counts were made for compiles.
            assert!(j.regex.regex().is_some(), "rule {}: the regex does not compile", j.id);
        }
    }

    #[test]
    fn the_gitleaks_default_rules_load() {
        let path = crate::tests::corpus_dir().join("gitleaks.toml");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let load = parse_gitleaks(&text, "gitleaks.toml").unwrap();
        assert!(load.rules.len() >= 150, "loaded {} rules, skipped {:?}", load.rules.len(), load.skipped);
        assert!(load.skipped.len() <= 10, "skipped {:?}", load.skipped);
        let aws = load.rules.iter().find(|r| r.id == "aws-access-token").expect("aws-access-token");
        assert!(aws.keywords.iter().any(|k| k == "akia"));
    }

    #[test]
    fn bad_rules_say_which_and_why() {
        let err = parse_tollgate("[[rule]]\nid = \"x\"\nkind = \"x\"\nregex = \"(\"\n", "f.toml").unwrap_err();
        assert!(err.to_string().contains("f.toml: rule \"x\": bad regex"), "{err}");
        let err = parse_tollgate("[[rule]]\nid = \"x\"\nkind = \"x\"\nregex = \"a\"\nsecret_group = 2\n", "f.toml")
            .unwrap_err();
        assert!(err.to_string().contains("secret_group 2"), "{err}");
    }
}
