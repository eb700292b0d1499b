//! Rule files of every format tollgate reads ([`load_file`]): its own and gitleaks' TOML (in
//! [`crate::rules`]), and, so that a team's existing rules come along, Kingfisher's YAML rules
//! (`rules:` with `pattern`, `min_entropy`, `examples`) and TruffleHog's custom detectors
//! (`detectors:` with `keywords` and named `regex`es), YAML or JSON.
//! What tollgate cannot use is reported, not fatal: live validation is dropped (tollgate never
//! sends a value anywhere to check it), rules marked not visible are skipped.

use serde::Deserialize;

use crate::rules::{Rule, RuleError, RuleSpec};

/// Rules loaded from another scanner's file, and the ones left out with why.
pub struct Imported {
    pub rules: Vec<Rule>,
    pub skipped: Vec<(String, String)>,
}

#[derive(Debug, Deserialize)]
struct KingfisherFile {
    rules: Vec<KingfisherRule>,
}

#[derive(Debug, Deserialize)]
struct KingfisherRule {
    id: String,
    #[serde(default)]
    name: Option<String>,
    pattern: String,
    #[serde(default)]
    min_entropy: Option<f64>,
    #[serde(default = "yes")]
    visible: bool,
    /// Strings the pattern must match: checked at load, so a rule that does not work says so.
    #[serde(default)]
    examples: Vec<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
struct TrufflehogFile {
    detectors: Vec<TrufflehogDetector>,
}

#[derive(Debug, Deserialize)]
struct TrufflehogDetector {
    name: String,
    #[serde(default)]
    keywords: Vec<String>,
    /// Named regexes; TruffleHog requires all to match, tollgate masks what each finds.
    regex: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    entropy: Option<f64>,
    #[serde(default)]
    exclude_words: Vec<String>,
    #[serde(default)]
    exclude_regexes_match: Vec<String>,
}

/// A kind from a name: lowercase letters, digits and `_`.
fn kind_of(name: &str) -> String {
    let kind: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    kind.trim_matches('_').to_string()
}

fn spec(id: String, kind: String, keywords: Vec<String>, regex: String, entropy: Option<f64>) -> RuleSpec {
    RuleSpec { keywords, entropy, ..RuleSpec::new(id, kind, regex) }
}

fn yaml_error(origin: &str, e: impl std::fmt::Display) -> RuleError {
    RuleError { origin: origin.into(), id: String::new(), message: e.to_string() }
}

/// Kingfisher's rules. A pattern Rust's regex engine does not take, or one that misses its own
/// examples, is skipped and reported.
pub fn parse_kingfisher(text: &str, origin: &str) -> Result<Imported, RuleError> {
    let file: KingfisherFile = yaml_serde::from_str(text).map_err(|e| yaml_error(origin, e))?;
    let mut out = Imported { rules: Vec::new(), skipped: Vec::new() };
    for r in file.rules {
        if !r.visible {
            out.skipped.push((r.id, "not visible (a helper for another rule's validation)".into()));
            continue;
        }
        let kind = kind_of(r.name.as_deref().unwrap_or(&r.id));
        let rule = match spec(r.id.clone(), kind, Vec::new(), r.pattern, r.min_entropy).compile(origin) {
            Ok(rule) => rule.first_group_as_secret(),
            Err(e) => {
                out.skipped.push((r.id, e.message));
                continue;
            }
        };
        if let Some(missed) = r.examples.iter().find(|x| !rule.regex.is_match(x.as_bytes())) {
            out.skipped.push((r.id, format!("its pattern does not match its own example {missed:?}")));
            continue;
        }
        out.rules.push(rule);
    }
    Ok(out)
}

/// TruffleHog's custom detectors: one rule per named regex.
pub fn parse_trufflehog(text: &str, origin: &str) -> Result<Imported, RuleError> {
    let file: TrufflehogFile = yaml_serde::from_str(text).map_err(|e| yaml_error(origin, e))?;
    let mut out = Imported { rules: Vec::new(), skipped: Vec::new() };
    for d in file.detectors {
        for (name, pattern) in &d.regex {
            let id = format!("{}.{name}", d.name);
            let mut spec = spec(id.clone(), kind_of(&d.name), d.keywords.clone(), pattern.clone(), d.entropy);
            spec.stopwords = d.exclude_words.clone();
            spec.allow = d.exclude_regexes_match.clone();
            match spec.compile(origin) {
                Ok(rule) => out.rules.push(rule.first_group_as_secret()),
                Err(e) => out.skipped.push((id, e.message)),
            }
        }
    }
    Ok(out)
}

/// A YAML (or JSON) rule file of either scanner, by its top-level key.
pub fn parse_yaml(text: &str, origin: &str) -> Result<Imported, RuleError> {
    let top: yaml_serde::Value = yaml_serde::from_str(text).map_err(|e| yaml_error(origin, e))?;
    if top.get("detectors").is_some() {
        parse_trufflehog(text, origin)
    } else if top.get("rules").is_some() {
        parse_kingfisher(text, origin)
    } else {
        Err(yaml_error(origin, "neither Kingfisher rules (`rules:`) nor TruffleHog detectors (`detectors:`)"))
    }
}

/// Loads a rule file by its name and shape: YAML or JSON (`.yaml`, `.yml`, `.json`) is
/// Kingfisher's or TruffleHog's; TOML is gitleaks' (`[[rules]]`) or ours (`[[rule]]`).
pub fn load_file(text: &str, origin: &str) -> Result<Vec<Rule>, RuleError> {
    if [".yaml", ".yml", ".json"].iter().any(|ext| origin.to_ascii_lowercase().ends_with(ext)) {
        let load = parse_yaml(text, origin)?;
        for (id, why) in &load.skipped {
            tracing::warn!(origin, id, why, "rule skipped");
        }
        return Ok(load.rules);
    }
    let value: toml::Table = text.parse().map_err(|e: toml::de::Error| RuleError {
        origin: origin.into(),
        id: String::new(),
        message: e.to_string(),
    })?;
    if value.contains_key("rules") {
        let load = crate::rules::parse_gitleaks(text, origin)?;
        for (id, why) in &load.skipped {
            tracing::debug!(origin, id, why, "gitleaks rule skipped");
        }
        Ok(load.rules)
    } else {
        crate::rules::parse_tollgate(text, origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::Scanner;

    const KINGFISHER: &str = r#"
rules:
  - name: Acme Deploy Key
    id: acme.deploy.1
    pattern: |
      (?xi)
      \b
      (
        acmedk_[a-z0-9]{32}
      )
      \b
    min_entropy: 3.0
    confidence: medium
    examples:
      - acmedk_4f9a8c7b6d5e4f3a2b1c0d9e8f7a6b5c
    validation:
      type: Http
      content:
        request:
          method: GET
          url: https://api.acme.test/check
  - name: Acme App Id
    id: acme.appid.1
    pattern: \b(ACMEAPP[0-9]{6})\b
    visible: false
  - name: Broken
    id: acme.broken.1
    pattern: (?<=x)abc
  - name: Wrong Example
    id: acme.wrong.1
    pattern: \b(acmewx_[0-9]{4})\b
    examples:
      - acmewx_12
"#;

    const TRUFFLEHOG: &str = r#"
detectors:
  - name: HogTokenDetector
    keywords:
      - hog
    regex:
      hogID: '\b(HOG[0-9A-Z]{17})\b'
      hogToken: 'hogtoken[:=]\s*([A-Za-z0-9+/]{40})'
    verify:
      - endpoint: http://localhost:8000/
        unsafe: true
    exclude_words:
      - hogwash
"#;

    #[test]
    fn kingfisher_rules_load_and_find_with_what_cannot_be_used_reported() {
        let loaded = parse_yaml(KINGFISHER, "acme.yaml").unwrap();
        let ids: Vec<&str> = loaded.rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["acme.deploy.1"]);
        let skipped: Vec<&str> = loaded.skipped.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(skipped, ["acme.appid.1", "acme.broken.1", "acme.wrong.1"]);
        assert!(loaded.skipped[2].1.contains("own example"), "{:?}", loaded.skipped[2]);
        let scanner = Scanner::new(loaded.rules);
        let text = b"deploy with key=acmedk_4f9a8c7b6d5e4f3a2b1c0d9e8f7a6b5c today";
        let found = scanner.scan(text);
        assert_eq!(found.len(), 1);
        assert_eq!(&text[found[0].start..found[0].end], b"acmedk_4f9a8c7b6d5e4f3a2b1c0d9e8f7a6b5c");
        assert_eq!(scanner.rule(found[0].rule).kind, "acme_deploy_key");
    }

    #[test]
    fn trufflehog_detectors_load_one_rule_per_regex_with_their_keywords_and_exclusions() {
        let loaded = parse_yaml(TRUFFLEHOG, "hog.yaml").unwrap();
        assert!(loaded.skipped.is_empty());
        let scanner = Scanner::new(loaded.rules);
        let text = b"hog id HOGAB12CD34EF56GH78J and hogtoken: Zk9QmW3xR7tY2uI8oP4aS6dF1gH5jK0lZ3xC7vB9";
        let found: Vec<&[u8]> = scanner.scan(text).iter().map(|f| &text[f.start..f.end]).collect();
        assert_eq!(found, [&b"HOGAB12CD34EF56GH78J"[..], &b"Zk9QmW3xR7tY2uI8oP4aS6dF1gH5jK0lZ3xC7vB9"[..]]);
        assert!(scanner.rules().iter().all(|r| r.keywords == ["hog"]), "the detector's keywords gate its regexes");
        let excluded = b"hogtoken: hogwashZk9QmW3xR7tY2uI8oP4aS6dF1gH5jK0lZ3xC";
        assert!(scanner.scan(excluded).is_empty(), "exclude_words are stopwords");
    }

    #[test]
    fn a_yaml_file_of_neither_kind_says_what_it_expected() {
        let e = parse_yaml("foo: bar\n", "x.yaml").err().expect("refused");
        assert!(e.to_string().contains("neither Kingfisher rules"), "{e}");
        assert!(parse_yaml("rules: [", "x.yaml").is_err());
    }
}
