//! `tollgate setup TOOL [--print] [--undo]`: points a coding tool at tollgate in that tool's own
//! config file, with a named token of its own (`tollgate token new TOOL`), so that its spend shows
//! apart in `tollgate usage --by caller` and budgets. Idempotent: a second run leaves one entry
//! (with a fresh token, the old one revoked); `--undo` removes what setup wrote and revokes the
//! token; `--print` shows what would be written and changes nothing.
//!
//! | tool | file | what |
//! | --- | --- | --- |
//! | claude-code | `~/.claude/settings.json` | `env.ANTHROPIC_BASE_URL`, `env.ANTHROPIC_AUTH_TOKEN` |
//! | codex | `$CODEX_HOME/config.toml` (`~/.codex`) | `model_provider = "tollgate"`, `[model_providers.tollgate]` on the Responses API |
//! | aider | `~/.aider.conf.yml` | `openai-api-base`, `openai-api-key` |
//! | opencode | `~/.config/opencode/opencode.json` | a `tollgate` provider (OpenAI-compatible) with the route aliases as models |
//! | llm | `extra-openai-models.yaml` and `keys.json` in llm's directory (`LLM_USER_PATH`) | models `tollgate-code`, `tollgate-fast`, ... on the route aliases, between marker comments; the key `tollgate` |
//! | continue | `~/.continue/config.yaml` | models on the `code` route (chat, edit, apply) and the `local` one (autocomplete), between marker comments |

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};

use crate::paths::Paths;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tool {
    ClaudeCode,
    Codex,
    Aider,
    Opencode,
    Continue,
    Llm,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::ClaudeCode => "claude-code",
            Tool::Codex => "codex",
            Tool::Aider => "aider",
            Tool::Opencode => "opencode",
            Tool::Continue => "continue",
            Tool::Llm => "llm",
        }
    }

    /// The files setup writes for the tool (an environment variable the tool reads for its
    /// directory wins over the default place).
    fn files(self, home: &Path) -> Vec<PathBuf> {
        let dir_from = |var: &str, default: PathBuf| std::env::var_os(var).map_or(default, PathBuf::from);
        let config = dir_from("XDG_CONFIG_HOME", home.join(".config"));
        match self {
            Tool::ClaudeCode => vec![home.join(".claude/settings.json")],
            Tool::Codex => vec![dir_from("CODEX_HOME", home.join(".codex")).join("config.toml")],
            Tool::Aider => vec![home.join(".aider.conf.yml")],
            Tool::Continue => vec![home.join(".continue/config.yaml")],
            Tool::Opencode => vec![config.join("opencode/opencode.json")],
            Tool::Llm => {
                let default = directories::BaseDirs::new().map_or(config, |d| d.config_dir().to_path_buf());
                let dir = dir_from("LLM_USER_PATH", default.join("io.datasette.llm"));
                vec![dir.join("extra-openai-models.yaml"), dir.join("keys.json")]
            }
        }
    }
}

/// Where the daemon listens: the running one's port, else the configured one.
fn base_url(paths: &Paths, port: u16) -> String {
    let port = std::fs::read_to_string(paths.port_file()).ok().and_then(|p| p.trim().parse().ok()).unwrap_or(port);
    format!("http://127.0.0.1:{port}")
}

/// File `file` of the tool's config with tollgate in it (`Some(token)`) or taken out (`None`).
fn edit(tool: Tool, file: usize, current: &str, base: &str, token: Option<&str>) -> anyhow::Result<String> {
    match tool {
        Tool::Llm if file == 0 => llm_models(current, base, token),
        Tool::Llm => {
            let mut v: Value = if current.trim().is_empty() {
                json!({})
            } else {
                serde_json::from_str(current).context("it is not valid JSON")?
            };
            let keys = v.as_object_mut().context("it is not a JSON object")?;
            match token {
                Some(t) => {
                    keys.insert("tollgate".into(), json!(t));
                }
                None => {
                    keys.shift_remove("tollgate");
                }
            }
            Ok(if keys.is_empty() { String::new() } else { serde_json::to_string_pretty(&v)? + "\n" })
        }
        Tool::ClaudeCode => {
            let mut v: Value = if current.trim().is_empty() {
                json!({})
            } else {
                serde_json::from_str(current).context("it is not valid JSON")?
            };
            let obj = v.as_object_mut().context("it is not a JSON object")?;
            let env = obj.entry("env").or_insert_with(|| json!({}));
            let env = env.as_object_mut().context("its \"env\" is not an object")?;
            match token {
                Some(t) => {
                    env.insert("ANTHROPIC_BASE_URL".into(), json!(base));
                    env.insert("ANTHROPIC_AUTH_TOKEN".into(), json!(t));
                }
                None => {
                    env.shift_remove("ANTHROPIC_BASE_URL");
                    env.shift_remove("ANTHROPIC_AUTH_TOKEN");
                }
            }
            if env.is_empty() {
                obj.shift_remove("env");
            }
            Ok(serde_json::to_string_pretty(&v)? + "\n")
        }
        Tool::Opencode => {
            let mut v: Value = if current.trim().is_empty() {
                json!({"$schema": "https://opencode.ai/config.json"})
            } else {
                serde_json::from_str(current).context("it is not valid JSON (comments are not supported here)")?
            };
            let obj = v.as_object_mut().context("it is not a JSON object")?;
            let providers = obj.entry("provider").or_insert_with(|| json!({}));
            let providers = providers.as_object_mut().context("its \"provider\" is not an object")?;
            match token {
                Some(t) => {
                    let models: serde_json::Map<String, Value> = ["code", "fast", "review", "local"]
                        .iter()
                        .map(|m| (m.to_string(), json!({"name": format!("{m} (tollgate)")})))
                        .collect();
                    providers.insert(
                        "tollgate".into(),
                        json!({"npm": "@ai-sdk/openai-compatible", "name": "tollgate",
                            "options": {"baseURL": format!("{base}/v1"), "apiKey": t}, "models": models}),
                    );
                }
                None => {
                    providers.shift_remove("tollgate");
                }
            }
            if providers.is_empty() {
                obj.shift_remove("provider");
            }
            Ok(serde_json::to_string_pretty(&v)? + "\n")
        }
        Tool::Codex => {
            let mut doc: toml_edit::DocumentMut = current.parse().context("it is not valid TOML")?;
            match token {
                Some(t) => {
                    doc["model_provider"] = toml_edit::value("tollgate");
                    let mut provider = toml_edit::Table::new();
                    provider["name"] = toml_edit::value("tollgate");
                    provider["base_url"] = toml_edit::value(format!("{base}/v1"));
                    provider["wire_api"] = toml_edit::value("responses");
                    let mut headers = toml_edit::InlineTable::new();
                    headers.insert("Authorization", format!("Bearer {t}").into());
                    provider["http_headers"] = toml_edit::value(headers);
                    if !doc.contains_key("model_providers") {
                        let mut parent = toml_edit::Table::new();
                        parent.set_implicit(true);
                        doc["model_providers"] = toml_edit::Item::Table(parent);
                    }
                    doc["model_providers"]["tollgate"] = toml_edit::Item::Table(provider);
                }
                None => {
                    if doc.get("model_provider").and_then(|v| v.as_str()) == Some("tollgate") {
                        doc.remove("model_provider");
                    }
                    if let Some(providers) = doc.get_mut("model_providers").and_then(|p| p.as_table_like_mut()) {
                        providers.remove("tollgate");
                        if providers.is_empty() {
                            doc.remove("model_providers");
                        }
                    }
                }
            }
            Ok(doc.to_string())
        }
        Tool::Continue => continue_yaml(current, base, token),
        Tool::Aider => {
            const MARK: &str = "# written by `tollgate setup aider`";
            let mut lines: Vec<String> = current
                .lines()
                .filter(|l| *l != MARK && !l.starts_with("openai-api-base:") && !l.starts_with("openai-api-key:"))
                .map(str::to_string)
                .collect();
            if let Some(t) = token {
                lines.push(MARK.into());
                lines.push(format!("openai-api-base: {base}/v1"));
                lines.push(format!("openai-api-key: {t}"));
            }
            Ok(if lines.is_empty() { String::new() } else { lines.join("\n") + "\n" })
        }
    }
}

/// Lines between marker comments taken out: what an earlier setup wrote.
fn without_block<'a>(current: &'a str, begin: &str, end: &str) -> Vec<&'a str> {
    let mut lines = Vec::new();
    let mut inside = false;
    for line in current.lines() {
        match line.trim() {
            l if l == begin => inside = true,
            l if l == end => inside = false,
            _ if !inside => lines.push(line),
            _ => {}
        }
    }
    lines
}

/// llm's `extra-openai-models.yaml` (a list of models) with one `tollgate-ALIAS` per route alias,
/// between marker comments at its end.
fn llm_models(current: &str, base: &str, token: Option<&str>) -> anyhow::Result<String> {
    const BEGIN: &str = "# tollgate setup: begin";
    const END: &str = "# tollgate setup: end";
    let mut lines: Vec<String> = without_block(current, BEGIN, END).into_iter().map(str::to_string).collect();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    if token.is_some() {
        lines.push(BEGIN.into());
        for alias in ["code", "fast", "review", "local"] {
            lines.push(format!("- model_id: tollgate-{alias}\n  model_name: {alias}\n  api_base: \"{base}/v1\"\n  api_key_name: tollgate"));
        }
        lines.push(END.into());
    }
    Ok(if lines.is_empty() { String::new() } else { lines.join("\n") + "\n" })
}

/// Continue's `config.yaml` with tollgate's models as the first items of `models`, between marker
/// comments (the only lines setup writes or removes); the items take the indentation of the list
/// they join. A config whose `models` is written inline (`models: [...]`) is left for the user.
fn continue_yaml(current: &str, base: &str, token: Option<&str>) -> anyhow::Result<String> {
    const BEGIN: &str = "# tollgate setup: begin";
    const END: &str = "# tollgate setup: end";
    let mut lines = without_block(current, BEGIN, END);
    let Some(token) = token else {
        return Ok(if lines.iter().all(|l| l.trim().is_empty()) { String::new() } else { lines.join("\n") + "\n" });
    };
    let item = |indent: &str, name: &str, model: &str, roles: &str| {
        format!(
            "{indent}- name: {name} (tollgate)\n{indent}  provider: openai\n{indent}  model: {model}\n{indent}  apiBase: {base}/v1\n\
             {indent}  apiKey: {token}\n{indent}  roles: [{roles}]"
        )
    };
    let block = |indent: &str| {
        [
            format!("{indent}{BEGIN}"),
            item(indent, "code", "code", "chat, edit, apply"),
            item(indent, "local", "local", "autocomplete"),
            format!("{indent}{END}"),
        ]
        .join("\n")
    };
    let models = lines.iter().position(|l| l.starts_with("models:"));
    match models {
        None => {
            if lines.iter().all(|l| l.trim().is_empty()) {
                lines = vec!["name: tollgate", "version: 1.0.0", "schema: v1"];
            }
            Ok(format!("{}\nmodels:\n{}\n", lines.join("\n"), block("  ")))
        }
        Some(i) if lines[i].trim_end() != "models:" => {
            anyhow::bail!(
                "its models are written inline ({}); write them as a list, one `- name:` per line",
                lines[i].trim()
            )
        }
        Some(i) => {
            // The indentation of the list's first item, if it has one.
            let indent: String = lines[i + 1..]
                .iter()
                .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                .filter(|l| l.trim_start().starts_with("- "))
                .map_or_else(|| "  ".to_string(), |l| l[..l.len() - l.trim_start().len()].to_string());
            let mut out: Vec<String> = lines[..=i].iter().map(|l| l.to_string()).collect();
            out.push(block(&indent));
            out.extend(lines[i + 1..].iter().map(|l| l.to_string()));
            Ok(out.join("\n") + "\n")
        }
    }
}

/// One file of a tool's config: where, what it holds now, and what it would hold.
struct Change {
    file: PathBuf,
    current: String,
}

pub fn run(paths: &Paths, tool: Tool, print: bool, undo: bool, port: u16) -> anyhow::Result<ExitCode> {
    let home = directories::BaseDirs::new().context("cannot find the home directory")?.home_dir().to_path_buf();
    let base = base_url(paths, port);
    let name = tool.name();
    let mut changes = Vec::new();
    for file in tool.files(&home) {
        let current = match std::fs::read_to_string(&file) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
        };
        changes.push(Change { file, current });
    }
    let edit_all = |token: Option<&str>| -> anyhow::Result<Vec<String>> {
        changes
            .iter()
            .enumerate()
            .map(|(i, c)| {
                edit(tool, i, &c.current, &base, token).with_context(|| format!("cannot edit {}", c.file.display()))
            })
            .collect()
    };
    // Every file must be one setup can edit before any is written.
    edit_all(None)?;
    let shown: Vec<String> = changes.iter().map(|c| c.file.display().to_string()).collect();
    let shown = shown.join(", ");
    if undo && changes.iter().all(|c| c.current.is_empty()) {
        let revoked = !print && super::token::revoke_if_present(paths, name)?;
        println!("{name}: {shown}: nothing to undo{}", if revoked { " (its token revoked)" } else { "" });
        return Ok(ExitCode::SUCCESS);
    }
    if print {
        let placeholder = format!("$(tollgate token new {name})");
        let next = edit_all((!undo).then_some(placeholder.as_str()))?;
        for (c, next) in changes.iter().zip(next) {
            println!("# {}", c.file.display());
            print!("{next}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    // A new token for the tool; the one a previous setup made is revoked.
    let revoked = super::token::revoke_if_present(paths, name)?;
    let token = if undo { None } else { Some(super::token::make(paths, name)?) };
    for (c, next) in changes.iter().zip(edit_all(token.as_deref())?) {
        if next.is_empty() {
            let _ = std::fs::remove_file(&c.file);
            continue;
        }
        if let Some(dir) = c.file.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        // The file holds a token: readable by the user alone.
        crate::paths::write_private_file(&c.file, next.as_bytes())
            .with_context(|| format!("cannot write {}", c.file.display()))?;
    }
    if undo {
        println!("{name}: tollgate removed from {shown}{}", if revoked { "; its token revoked" } else { "" });
    } else {
        println!("{name}: {shown} now point at {base} with its own token (`tollgate usage --by caller`)");
        if tool == Tool::ClaudeCode {
            println!("  model names it sends (claude-*) go to the anthropic provider; see model_names in the config");
        }
    }
    if !undo && !paths.socket.exists() {
        eprintln!(
            "note: no daemon is running; start it (`tollgate daemon` or `tollgate service install`) before using {name}"
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_code_settings_keep_what_was_there_and_undo_removes_only_ours() {
        let before = r#"{"model": "opus", "env": {"FOO": "1"}}"#;
        let on = edit(Tool::ClaudeCode, 0, before, "http://127.0.0.1:8788", Some("tg-x")).unwrap();
        let v: Value = serde_json::from_str(&on).unwrap();
        assert_eq!(v["model"], "opus");
        assert_eq!(
            v["env"],
            json!({"FOO": "1", "ANTHROPIC_BASE_URL": "http://127.0.0.1:8788", "ANTHROPIC_AUTH_TOKEN": "tg-x"})
        );
        assert_eq!(edit(Tool::ClaudeCode, 0, &on, "http://127.0.0.1:8788", Some("tg-x")).unwrap(), on, "idempotent");
        let off: Value = serde_json::from_str(&edit(Tool::ClaudeCode, 0, &on, "x", None).unwrap()).unwrap();
        assert_eq!(off, json!({"model": "opus", "env": {"FOO": "1"}}));
        assert!(edit(Tool::ClaudeCode, 0, "[1]", "x", None).is_err());
    }

    #[test]
    fn codex_config_keeps_comments_and_other_providers() {
        let before = "# mine\nmodel = \"gpt-5-codex\"\n\n[model_providers.other]\nname = \"o\"\n";
        let on = edit(Tool::Codex, 0, before, "http://127.0.0.1:9", Some("tg-y")).unwrap();
        assert!(on.starts_with("# mine\nmodel = \"gpt-5-codex\"\nmodel_provider = \"tollgate\""), "{on}");
        let v: toml::Table = on.parse().unwrap();
        let p = &v["model_providers"]["tollgate"];
        assert_eq!(p["base_url"].as_str(), Some("http://127.0.0.1:9/v1"));
        assert_eq!(p["wire_api"].as_str(), Some("responses"));
        assert_eq!(p["http_headers"]["Authorization"].as_str(), Some("Bearer tg-y"));
        assert!(v["model_providers"].get("other").is_some());
        assert_eq!(edit(Tool::Codex, 0, &on, "http://127.0.0.1:9", Some("tg-y")).unwrap(), on, "idempotent");
        let off = edit(Tool::Codex, 0, &on, "x", None).unwrap();
        assert_eq!(off, before);
    }

    #[test]
    fn opencode_gets_one_provider_and_undo_takes_it_out() {
        let before = r#"{"theme": "dark", "provider": {"mine": {"name": "m"}}}"#;
        let on = edit(Tool::Opencode, 0, before, "http://127.0.0.1:7", Some("tg-o")).unwrap();
        let v: Value = serde_json::from_str(&on).unwrap();
        let p = &v["provider"]["tollgate"];
        assert_eq!(p["npm"], "@ai-sdk/openai-compatible");
        assert_eq!(p["options"], json!({"baseURL": "http://127.0.0.1:7/v1", "apiKey": "tg-o"}));
        assert!(p["models"]["code"].is_object() && v["provider"]["mine"].is_object() && v["theme"] == "dark");
        assert_eq!(edit(Tool::Opencode, 0, &on, "http://127.0.0.1:7", Some("tg-o")).unwrap(), on, "idempotent");
        let off: Value = serde_json::from_str(&edit(Tool::Opencode, 0, &on, "x", None).unwrap()).unwrap();
        assert_eq!(off, json!({"theme": "dark", "provider": {"mine": {"name": "m"}}}));
        let fresh: Value = serde_json::from_str(&edit(Tool::Opencode, 0, "", "http://h", Some("t")).unwrap()).unwrap();
        assert_eq!(fresh["$schema"], "https://opencode.ai/config.json");
    }

    #[test]
    fn continue_models_join_the_list_with_its_indentation_and_undo_restores_it() {
        let before = "name: mine\nversion: 1.0.0\nschema: v1\nmodels:\n- name: other\n  provider: ollama\n  model: x\nrules:\n- be brief\n";
        let on = edit(Tool::Continue, 0, before, "http://127.0.0.1:5", Some("tg-c")).unwrap();
        assert!(on.contains("models:\n# tollgate setup: begin\n- name: code (tollgate)\n  provider: openai\n  model: code\n  apiBase: http://127.0.0.1:5/v1\n  apiKey: tg-c\n"), "{on}");
        assert!(on.contains("  roles: [autocomplete]\n# tollgate setup: end\n- name: other\n"), "{on}");
        assert_eq!(edit(Tool::Continue, 0, &on, "http://127.0.0.1:5", Some("tg-c")).unwrap(), on, "idempotent");
        assert_eq!(edit(Tool::Continue, 0, &on, "x", None).unwrap(), before);
        // Indented lists keep their indentation; a new file gets the required header.
        let indented = "name: a\nmodels:\n  - name: b\n";
        assert!(
            edit(Tool::Continue, 0, indented, "h", Some("t"))
                .unwrap()
                .contains("models:\n  # tollgate setup: begin\n  - name: code")
        );
        let fresh = edit(Tool::Continue, 0, "", "h", Some("t")).unwrap();
        assert!(
            fresh.starts_with("name: tollgate\nversion: 1.0.0\nschema: v1\nmodels:\n  # tollgate setup: begin\n"),
            "{fresh}"
        );
        assert_eq!(
            edit(Tool::Continue, 0, &fresh, "h", None).unwrap(),
            "name: tollgate\nversion: 1.0.0\nschema: v1\nmodels:\n"
        );
        assert!(edit(Tool::Continue, 0, "models: [a]\n", "h", Some("t")).unwrap_err().to_string().contains("inline"));
    }

    #[test]
    fn llm_gets_its_models_and_its_key_and_undo_takes_both_out() {
        let before = "- model_id: mine\n  model_name: x\n";
        let on = edit(Tool::Llm, 0, before, "http://127.0.0.1:3", Some("tg-l")).unwrap();
        assert!(on.starts_with(before) && on.contains("- model_id: tollgate-code\n  model_name: code\n  api_base: \"http://127.0.0.1:3/v1\"\n  api_key_name: tollgate\n"), "{on}");
        assert!(!on.contains("tg-l"), "the key goes in keys.json, not beside the models");
        assert_eq!(edit(Tool::Llm, 0, &on, "http://127.0.0.1:3", Some("tg-l")).unwrap(), on, "idempotent");
        assert_eq!(edit(Tool::Llm, 0, &on, "x", None).unwrap(), before);
        let keys = edit(Tool::Llm, 1, r#"{"openai": "sk-x"}"#, "x", Some("tg-l")).unwrap();
        let v: Value = serde_json::from_str(&keys).unwrap();
        assert_eq!(v, json!({"openai": "sk-x", "tollgate": "tg-l"}));
        assert_eq!(edit(Tool::Llm, 1, &keys, "x", None).unwrap(), "{\n  \"openai\": \"sk-x\"\n}\n");
        assert_eq!(edit(Tool::Llm, 1, "", "x", None).unwrap(), "", "nothing left, no file");
    }

    #[test]
    fn aider_config_lines_are_replaced_not_repeated() {
        let before = "model: gpt-4.1\nopenai-api-key: old\n";
        let on = edit(Tool::Aider, 0, before, "http://127.0.0.1:1", Some("tg-z")).unwrap();
        assert_eq!(
            on,
            "model: gpt-4.1\n# written by `tollgate setup aider`\nopenai-api-base: http://127.0.0.1:1/v1\nopenai-api-key: tg-z\n"
        );
        assert_eq!(edit(Tool::Aider, 0, &on, "http://127.0.0.1:1", Some("tg-z")).unwrap(), on);
        assert_eq!(edit(Tool::Aider, 0, &on, "x", None).unwrap(), "model: gpt-4.1\n");
    }
}
