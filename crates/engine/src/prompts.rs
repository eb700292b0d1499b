//! Prompt templates: the built-in ones under the repository's `prompts/` (compiled in), overridden
//! or extended by the policy's `prompts/`. A template is Markdown with TOML front matter between
//! `+++` lines; its body is the user message, `{{name}}` marks a variable, and every variable used
//! must be declared in `variables`.
//!
//! Versions: `NAME@N.md` keeps version `N` of prompt `NAME` beside the one in force (`NAME.md`),
//! and the one in force may run an experiment between versions (`split = { "3" = 50, "4" = 50 }`
//! in its front matter): each user is given one version, always the same, and the ledger records
//! which.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

const BUILT_IN: &[(&str, &str)] = &[
    ("commit-message", include_str!("../../../prompts/commit-message.md")),
    ("completion", include_str!("../../../prompts/completion.md")),
    ("docs", include_str!("../../../prompts/docs.md")),
    ("explain", include_str!("../../../prompts/explain.md")),
    ("fix", include_str!("../../../prompts/fix.md")),
    ("review", include_str!("../../../prompts/review.md")),
    ("tests", include_str!("../../../prompts/tests.md")),
];

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct FrontMatter {
    description: String,
    /// Bumped whenever the template's meaning changes; recorded with each use.
    version: u32,
    /// The route alias or `provider/model` used unless the caller names one.
    model: String,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    variables: Vec<String>,
    #[serde(default)]
    system: Option<String>,
    /// An experiment between versions of this prompt: version = weight.
    #[serde(default)]
    split: BTreeMap<String, u32>,
    /// The experiment's name in the ledger (default: `prompt NAME`).
    #[serde(default)]
    experiment: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Prompt {
    pub name: String,
    pub description: String,
    pub version: u32,
    pub model: String,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    pub variables: Vec<String>,
    pub system: Option<String>,
    /// The experiment between versions the prompt runs: version = weight.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub split: BTreeMap<u32, u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    #[serde(skip)]
    pub body: String,
    /// `built-in`, or where the policy's version came from.
    pub origin: String,
}

/// A template problem, at a line of its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptError {
    pub line: usize,
    pub message: String,
}

impl Prompt {
    /// Parses a template file. `name` is the file name without `.md` (`NAME@N` for a version
    /// kept beside the one in force).
    pub fn parse(name: &str, text: &str, origin: &str) -> Result<Self, PromptError> {
        let err = |line: usize, message: String| PromptError { line, message };
        let (name, kept) = match name.split_once('@') {
            Some((base, v)) => {
                let v = v.parse::<u32>().map_err(|_| err(1, format!("{name:?}: a kept version is NAME@NUMBER")))?;
                (base, Some(v))
            }
            None => (name, None),
        };
        let rest = text
            .strip_prefix("+++\n")
            .or_else(|| text.strip_prefix("+++\r\n"))
            .ok_or_else(|| err(1, "a prompt starts with TOML front matter between two `+++` lines".into()))?;
        let end = rest
            .find("\n+++\n")
            .map(|i| (i, i + 5))
            .or_else(|| rest.strip_suffix("\n+++").map(|r| (r.len(), rest.len())))
            .ok_or_else(|| err(1, "the front matter is not closed by a `+++` line".into()))?;
        let (front, body) = (&rest[..end.0], &rest[end.1..]);
        let front: FrontMatter = toml::from_str(front).map_err(|e| {
            let line = e.span().map_or(1, |s| front[..s.start].lines().count().max(1)) + 1;
            err(line, e.message().trim().to_string())
        })?;
        let body_start = front_lines(&text[..text.len() - body.len()]);
        let used = variables(body).map_err(|(offset, m)| err(body_start + body[..offset].lines().count(), m))?;
        if let Some(system) = &front.system {
            let in_system = variables(system).map_err(|(_, m)| err(2, format!("in system: {m}")))?;
            if let Some(v) = in_system.iter().find(|v| !front.variables.contains(v)) {
                return Err(err(2, format!("system uses {{{{{v}}}}}, which is not in `variables`")));
            }
        }
        if let Some(v) = used.iter().find(|v| !front.variables.contains(v)) {
            return Err(err(body_start, format!("the body uses {{{{{v}}}}}, which is not in `variables`")));
        }
        if front.model.is_empty() {
            return Err(err(2, "`model` names a route alias or provider/model".into()));
        }
        if let Some(v) = kept.filter(|v| *v != front.version) {
            return Err(err(
                2,
                format!("the file keeps version {v} ({name}@{v}.md) but says `version = {}`", front.version),
            ));
        }
        let mut split = BTreeMap::new();
        for (v, w) in &front.split {
            let v = v.parse::<u32>().map_err(|_| err(2, format!("`split` keys are version numbers, not {v:?}")))?;
            split.insert(v, *w);
        }
        if !split.is_empty() && (kept.is_some() || split.values().all(|w| *w == 0)) {
            return Err(err(2, "`split` belongs in the version in force (NAME.md), with a weight above 0".into()));
        }
        Ok(Self {
            name: name.into(),
            description: front.description,
            version: front.version,
            model: front.model,
            temperature: front.temperature,
            max_tokens: front.max_tokens,
            variables: front.variables,
            system: front.system.map(|s| s.trim().to_string()),
            split,
            experiment: front.experiment,
            body: body.trim().to_string(),
            origin: origin.into(),
        })
    }

    /// The system and user texts with every variable replaced.
    pub fn render(&self, vars: &BTreeMap<String, String>) -> Result<(Option<String>, String), String> {
        let fill = |text: &str| -> Result<String, String> {
            let mut out = String::with_capacity(text.len());
            let mut rest = text;
            while let Some(i) = rest.find("{{") {
                out.push_str(&rest[..i]);
                let j = rest[i..].find("}}").map(|j| i + j).expect("validated at parse");
                let name = rest[i + 2..j].trim();
                let value = vars.get(name).ok_or_else(|| {
                    format!(
                        "prompt {:?} needs the variable {name:?} (it takes: {})",
                        self.name,
                        self.variables.join(", ")
                    )
                })?;
                out.push_str(value);
                rest = &rest[j + 2..];
            }
            out.push_str(rest);
            Ok(out)
        };
        Ok((self.system.as_deref().map(fill).transpose()?, fill(&self.body)?))
    }
}

fn front_lines(head: &str) -> usize {
    head.lines().count() + 1
}

/// The variable names a template uses, or the offset and text of a malformed one.
fn variables(text: &str) -> Result<Vec<String>, (usize, String)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = text[at..].find("{{").map(|i| at + i) {
        let Some(j) = text[i..].find("}}").map(|j| i + j) else {
            return Err((i, "`{{` is not closed by `}}`".into()));
        };
        let name = text[i + 2..j].trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err((i, format!("{{{{{name}}}}} is not a variable name (letters, digits, _ and -)")));
        }
        if !out.iter().any(|v| v == name) {
            out.push(name.to_string());
        }
        at = j + 2;
    }
    Ok(out)
}

/// Every prompt by name, and the versions kept of each.
#[derive(Debug, Clone)]
pub struct Prompts {
    current: BTreeMap<String, Prompt>,
    /// Every version, the ones in force included.
    versions: BTreeMap<(String, u32), Prompt>,
}

impl Prompts {
    /// The built-in prompts, then `overrides` (name, file text, origin) replacing or adding.
    pub fn new(overrides: &[(String, String, String)]) -> Result<Self, (String, PromptError)> {
        let mut current = BTreeMap::new();
        for (name, text) in BUILT_IN {
            let p = Prompt::parse(name, text, "built-in").expect("built-in prompts parse");
            current.insert(name.to_string(), p);
        }
        let mut versions = BTreeMap::new();
        for (file, text, origin) in overrides {
            let p = Prompt::parse(file, text, origin).map_err(|e| (file.clone(), e))?;
            if file.contains('@') {
                versions.insert((p.name.clone(), p.version), p);
            } else {
                current.insert(file.clone(), p);
            }
        }
        for p in current.values() {
            versions.insert((p.name.clone(), p.version), p.clone());
        }
        for p in current.values() {
            if let Some(v) = p.split.keys().find(|v| !versions.contains_key(&(p.name.clone(), **v))) {
                let message = format!("`split` names version {v}, which no prompts/{}@{v}.md keeps", p.name);
                return Err((p.name.clone(), PromptError { line: 2, message }));
            }
        }
        Ok(Self { current, versions })
    }

    pub fn get(&self, name: &str) -> Option<&Prompt> {
        self.current.get(name)
    }

    /// The version of prompt `name` a user is given: the one in force, or the user's arm of the
    /// prompt's experiment (`choose` picks it; [`crate::route::Chooser`]) and that arm.
    pub fn pick(
        &self,
        name: &str,
        choose: crate::route::Chooser<'_>,
    ) -> Option<(&Prompt, Option<crate::route::Assignment>)> {
        let p = self.current.get(name)?;
        let (versions, arms): (Vec<u32>, Vec<(String, u64)>) =
            p.split.iter().filter(|(_, w)| **w > 0).map(|(v, w)| (*v, (format!("v{v}"), u64::from(*w)))).unzip();
        if arms.is_empty() {
            return Some((p, None));
        }
        let experiment = p.experiment.clone().unwrap_or_else(|| format!("prompt {name}"));
        let i = choose(&experiment, &arms).min(arms.len() - 1);
        let chosen = self.versions.get(&(name.to_string(), versions[i]))?;
        Some((chosen, Some(crate::route::Assignment { experiment, arm: arms[i].0.clone() })))
    }

    pub fn all(&self) -> impl Iterator<Item = &Prompt> {
        self.current.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_prompts_parse_and_render() {
        let prompts = Prompts::new(&[]).unwrap();
        let explain = prompts.get("explain").unwrap();
        assert_eq!(explain.origin, "built-in");
        let vars = BTreeMap::from([
            ("language".to_string(), "rust".to_string()),
            ("path".to_string(), "src/main.rs".to_string()),
            ("code".to_string(), "fn main() {}".to_string()),
        ]);
        let (system, user) = explain.render(&vars).unwrap();
        assert!(system.unwrap().starts_with("You are a senior engineer"));
        assert!(user.contains("```rust\nfn main() {}\n```") && user.contains("`src/main.rs`"), "{user}");
        let err = explain.render(&BTreeMap::new()).unwrap_err();
        assert!(err.contains("needs the variable"), "{err}");
        assert_eq!(prompts.all().count(), BUILT_IN.len());
    }

    #[test]
    fn kept_versions_and_an_experiment_between_them() {
        let file = |version: u32, extra: &str, body: &str| {
            format!("+++\ndescription = \"d\"\nversion = {version}\nmodel = \"code\"\n{extra}+++\n{body}\n")
        };
        let policy = |files: &[(&str, String)]| {
            Prompts::new(
                &files.iter().map(|(n, t)| (n.to_string(), t.clone(), "policy".to_string())).collect::<Vec<_>>(),
            )
        };
        let prompts = policy(&[
            ("review", file(4, "split = { \"3\" = 1, \"4\" = 1 }\n", "new words")),
            ("review@3", file(3, "", "old words")),
        ])
        .unwrap();
        assert_eq!(prompts.get("review").unwrap().body, "new words", "the one in force");
        assert_eq!(prompts.all().filter(|p| p.name == "review").count(), 1, "kept versions are not listed apart");
        let (p, arm) = prompts
            .pick("review", &|experiment, arms| {
                assert_eq!(experiment, "prompt review");
                assert_eq!(arms, [("v3".to_string(), 1), ("v4".to_string(), 1)]);
                0
            })
            .unwrap();
        assert_eq!((p.body.as_str(), p.version), ("old words", 3));
        assert_eq!(arm.unwrap().arm, "v3");
        let (p, _) = prompts.pick("review", &|_, _| 1).unwrap();
        assert_eq!(p.body, "new words");
        // A prompt with no split is the one in force, in no experiment.
        assert!(prompts.pick("explain", &|_, _| panic!("no experiment")).unwrap().1.is_none());

        // A split naming a version no file keeps; a file whose name and version disagree.
        let (name, e) = policy(&[("review", file(4, "split = { \"2\" = 1, \"4\" = 1 }\n", "x"))]).unwrap_err();
        assert_eq!(name, "review");
        assert!(e.message.contains("no prompts/review@2.md keeps"), "{}", e.message);
        let (_, e) = policy(&[("review@3", file(5, "", "x"))]).unwrap_err();
        assert!(e.message.contains("keeps version 3") && e.message.contains("version = 5"), "{}", e.message);
    }

    #[test]
    fn overrides_replace_and_add_and_errors_give_the_line() {
        let ours =
            "+++\ndescription = \"d\"\nversion = 7\nmodel = \"local\"\nvariables = [\"code\"]\n+++\nSay {{code}}\n";
        let prompts = Prompts::new(&[
            ("explain".into(), ours.into(), "policy abc".into()),
            ("haiku".into(), ours.into(), "policy abc".into()),
        ])
        .unwrap();
        assert_eq!(prompts.get("explain").unwrap().version, 7);
        assert_eq!(prompts.get("haiku").unwrap().model, "local");

        let undeclared = "+++\ndescription = \"d\"\nversion = 1\nmodel = \"m\"\n+++\n\nUse {{cod}}\n";
        let e = Prompt::parse("x", undeclared, "t").unwrap_err();
        assert!(e.message.contains("{{cod}}"), "{e:?}");
        let bad_front = "+++\ndescription = \"d\"\nversion = \"one\"\nmodel = \"m\"\n+++\nbody\n";
        assert_eq!(Prompt::parse("x", bad_front, "t").unwrap_err().line, 3);
        let unclosed = "+++\ndescription = \"d\"\nversion = 1\nmodel = \"m\"\nvariables = [\"a\"]\n+++\nline\n{{a\n";
        let e = Prompt::parse("x", unclosed, "t").unwrap_err();
        assert_eq!((e.line, e.message.contains("not closed")), (8, true), "{e:?}");
        assert!(Prompt::parse("x", "no front matter", "t").is_err());
    }
}
