//! `tollgate setup TOOL [--print] [--undo]`: points a coding tool at tollgate in that tool's own
//! config files, with a named token of its own (`tollgate token new TOOL`), so that its spend shows
//! apart in `tollgate usage --by caller` and budgets. Idempotent: a second run leaves one entry
//! (with a fresh token, the old one revoked); `--undo` removes what setup wrote and revokes the
//! token; `--print` shows what would be written and changes nothing. Files with comments keep them
//! (JSON with comments is edited in place, YAML between marker lines); a YAML line of the user's
//! that setup replaces is kept in the block and given back by `--undo`.
//!
//! | tool | file | what |
//! | --- | --- | --- |
//! | claude-code | `~/.claude/settings.json` | `env.ANTHROPIC_BASE_URL`, `env.ANTHROPIC_AUTH_TOKEN` |
//! | codex | `$CODEX_HOME/config.toml` (`~/.codex`) | `model_provider = "tollgate"`, `[model_providers.tollgate]` on the Responses API |
//! | aider | `~/.aider.conf.yml` | `openai-api-base`, `openai-api-key` |
//! | opencode | `~/.config/opencode/opencode.json` | a `tollgate` provider (OpenAI-compatible) with the route aliases as models |
//! | llm | `extra-openai-models.yaml` and `keys.json` in llm's directory (`LLM_USER_PATH`) | models `tollgate-code`, `tollgate-fast`, ... on the route aliases, between marker comments; the key `tollgate` |
//! | continue | `~/.continue/config.yaml` | models on the `code` route (chat, edit, apply) and the `local` one (autocomplete), between marker comments |
//! | goose | `~/.config/goose/custom_providers/tollgate.json`, `~/.config/goose/config.yaml` | a `tollgate` provider (OpenAI engine, the token in its `Authorization` header); `GOOSE_PROVIDER`, `GOOSE_MODEL` |
//! | zed | `~/.config/zed/settings.json` | `language_models.openai_compatible.tollgate`; the key is Zed's to keep (its keychain, or `TOLLGATE_API_KEY`), so setup prints it |
//! | copilot | VS Code's `User/chatLanguageModels.json` | a `customendpoint` group `tollgate` (Copilot Chat's own models for chat and agent mode; its inline completions cannot be pointed elsewhere) |
//! | cline | `~/.cline/data/globalState.json`, `secrets.json` (`CLINE_DIR`) | the OpenAI-compatible provider on the `code` route for plan and act modes; the key |
//! | roo | tollgate's `roo-code.json`, VS Code's `User/settings.json` | a Roo Code provider profile `tollgate`, imported by Roo at start (`roo-cline.autoImportSettingsPath`) |

mod formats;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};

use crate::paths::Paths;
use formats::{BEGIN, END, Jsonc, key_lines, without_block};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tool {
    ClaudeCode,
    Codex,
    Aider,
    Opencode,
    Continue,
    Llm,
    Goose,
    Zed,
    Copilot,
    Cline,
    Roo,
}

/// The route aliases offered to tools as models, with the context window a tool may assume: the
/// smallest among the default route's targets (`fast` and `local` fall back to a small local model).
const ALIASES: [(&str, u64); 4] = [("code", 200_000), ("fast", 32_768), ("review", 200_000), ("local", 32_768)];

/// Where a tool's config is: the user's home, the platform's config directory (`~/.config`,
/// `~/Library/Application Support`, `%APPDATA%`) and tollgate's own.
struct Dirs {
    home: PathBuf,
    config: PathBuf,
    tollgate: PathBuf,
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
            Tool::Goose => "goose",
            Tool::Zed => "zed",
            Tool::Copilot => "copilot",
            Tool::Cline => "cline",
            Tool::Roo => "roo",
        }
    }

    /// The files setup writes for the tool (an environment variable the tool reads for its
    /// directory wins over the default place).
    fn files(self, dirs: &Dirs) -> Vec<PathBuf> {
        let home = &dirs.home;
        let dir_from = |var: &str, default: PathBuf| std::env::var_os(var).map_or(default, PathBuf::from);
        // Tools that follow XDG on every Unix, macOS included.
        let xdg = if cfg!(windows) { dirs.config.clone() } else { dir_from("XDG_CONFIG_HOME", home.join(".config")) };
        let vscode = dirs.config.join("Code/User");
        match self {
            Tool::ClaudeCode => vec![home.join(".claude/settings.json")],
            Tool::Codex => vec![dir_from("CODEX_HOME", home.join(".codex")).join("config.toml")],
            Tool::Aider => vec![home.join(".aider.conf.yml")],
            Tool::Continue => vec![home.join(".continue/config.yaml")],
            Tool::Opencode => vec![xdg.join("opencode/opencode.json")],
            Tool::Llm => {
                let dir = dir_from("LLM_USER_PATH", dirs.config.join("io.datasette.llm"));
                vec![dir.join("extra-openai-models.yaml"), dir.join("keys.json")]
            }
            Tool::Goose => {
                let dir = if cfg!(windows) { dirs.config.join("Block/goose/config") } else { xdg.join("goose") };
                vec![dir.join("custom_providers/tollgate.json"), dir.join("config.yaml")]
            }
            Tool::Zed => {
                vec![if cfg!(windows) { dirs.config.join("Zed") } else { xdg.join("zed") }.join("settings.json")]
            }
            Tool::Copilot => vec![vscode.join("chatLanguageModels.json")],
            Tool::Cline => {
                let dir = dir_from("CLINE_DIR", home.join(".cline")).join("data");
                vec![dir.join("globalState.json"), dir.join("secrets.json")]
            }
            Tool::Roo => vec![dirs.tollgate.join("roo-code.json"), vscode.join("settings.json")],
        }
    }
}

/// Where the daemon listens: the running one's port, else the configured one.
fn base_url(paths: &Paths, port: u16) -> String {
    let port = std::fs::read_to_string(paths.port_file()).ok().and_then(|p| p.trim().parse().ok()).unwrap_or(port);
    format!("http://127.0.0.1:{port}")
}

/// What one edit needs: the daemon's address, the tool's token (`None` to take tollgate out) and
/// the tool's files.
struct Target<'a> {
    base: &'a str,
    token: Option<&'a str>,
    files: &'a [PathBuf],
}

/// A JSON (with comments) document with `path` set to `value`, or taken out when `value` is `None`.
fn jsonc_set(current: &str, sets: &[(&[&str], Option<Value>)]) -> anyhow::Result<String> {
    let doc = Jsonc::parse(current)?;
    for (path, value) in sets {
        match value {
            Some(v) => doc.set(path, v)?,
            None => doc.remove(path)?,
        }
    }
    Ok(doc.text())
}

/// File `file` of the tool's config with tollgate in it (`t.token` set) or taken out.
fn edit_file(tool: Tool, file: usize, current: &str, t: &Target) -> anyhow::Result<String> {
    let base = t.base;
    let on = t.token.is_some();
    let token = t.token.unwrap_or_default();
    // `value` when setting up, nothing when undoing.
    let when_on = |value: Value| on.then_some(value);
    match (tool, file) {
        (Tool::Llm, 0) => Ok(llm_models(current, base, on)),
        (Tool::Llm, _) => jsonc_set(current, &[(&["tollgate"], when_on(json!(token)))]),
        (Tool::ClaudeCode, _) => jsonc_set(
            current,
            &[
                (&["env", "ANTHROPIC_BASE_URL"], when_on(json!(base))),
                (&["env", "ANTHROPIC_AUTH_TOKEN"], when_on(json!(token))),
            ],
        ),
        (Tool::Opencode, _) => {
            let models: serde_json::Map<String, Value> =
                ALIASES.iter().map(|(m, _)| (m.to_string(), json!({"name": format!("{m} (tollgate)")}))).collect();
            let provider = json!({"npm": "@ai-sdk/openai-compatible", "name": "tollgate",
                "options": {"baseURL": format!("{base}/v1"), "apiKey": token}, "models": models});
            let current = if current.trim().is_empty() && on {
                r#"{"$schema": "https://opencode.ai/config.json"}"#
            } else {
                current
            };
            jsonc_set(current, &[(&["provider", "tollgate"], when_on(provider))])
        }
        (Tool::Codex, _) => codex_toml(current, base, t.token),
        (Tool::Continue, _) => continue_yaml(current, base, t.token),
        (Tool::Aider, _) => Ok(key_lines(
            current,
            &[("openai-api-base", format!("{base}/v1")), ("openai-api-key", token.to_string())],
            on,
            &["# written by `tollgate setup aider`"],
        )),
        (Tool::Goose, 0) => {
            let models: Vec<Value> = ALIASES.iter().map(|(m, w)| json!({"name": m, "context_limit": w})).collect();
            Ok(match on {
                true => {
                    serde_json::to_string_pretty(&json!({
                        "name": "tollgate", "engine": "openai", "display_name": "tollgate",
                        "description": "The local tollgate gateway (routes, budgets, redaction)",
                        "api_key_env": "TOLLGATE_API_KEY", "requires_auth": false,
                        "base_url": format!("{base}/v1/chat/completions"),
                        "headers": {"Authorization": format!("Bearer {token}")},
                        "models": models, "supports_streaming": true,
                    }))? + "\n"
                }
                false => String::new(),
            })
        }
        (Tool::Goose, _) => {
            Ok(key_lines(current, &[("GOOSE_PROVIDER", "tollgate".into()), ("GOOSE_MODEL", "code".into())], on, &[]))
        }
        (Tool::Zed, _) => {
            let models: Vec<Value> = ALIASES
                .iter()
                .map(|(m, w)| json!({"name": m, "display_name": format!("{m} (tollgate)"), "max_tokens": w,
                    "capabilities": {"tools": true, "images": true, "parallel_tool_calls": true, "prompt_cache_key": false}}))
                .collect();
            let provider = json!({"api_url": format!("{base}/v1"), "available_models": models});
            jsonc_set(current, &[(&["language_models", "openai_compatible", "tollgate"], when_on(provider))])
        }
        (Tool::Copilot, _) => {
            let models: Vec<Value> = ALIASES
                .iter()
                .map(|(m, w)| json!({"id": m, "name": format!("{m} (tollgate)"), "url": format!("{base}/v1/chat/completions"),
                    "apiType": "chat-completions", "toolCalling": true, "vision": true, "maxInputTokens": w, "maxOutputTokens": 16_384}))
                .collect();
            let group = json!({"name": "tollgate", "vendor": "customendpoint", "apiKey": token,
                "apiType": "chat-completions", "models": models});
            let doc = Jsonc::parse(current)?;
            doc.set_item("name", "tollgate", on.then_some(&group))?;
            Ok(doc.text())
        }
        (Tool::Cline, 0) => {
            let v = |value: &str| when_on(json!(value));
            jsonc_set(
                current,
                &[
                    (&["actModeApiProvider"], v("openai")),
                    (&["planModeApiProvider"], v("openai")),
                    (&["openAiBaseUrl"], when_on(json!(format!("{base}/v1")))),
                    (&["actModeOpenAiModelId"], v("code")),
                    (&["planModeOpenAiModelId"], v("code")),
                ],
            )
        }
        (Tool::Cline, _) => jsonc_set(current, &[(&["openAiApiKey"], when_on(json!(token)))]),
        (Tool::Roo, 0) => Ok(match on {
            true => {
                serde_json::to_string_pretty(&json!({
                    "providerProfiles": {
                        "currentApiConfigName": "tollgate",
                        "apiConfigs": {"tollgate": {"id": "tollgate", "apiProvider": "openai",
                            "openAiBaseUrl": format!("{base}/v1"), "openAiApiKey": token, "openAiModelId": "code"}},
                    },
                }))? + "\n"
            }
            false => String::new(),
        }),
        (Tool::Roo, _) => {
            let import = t.files[0].to_string_lossy().into_owned();
            jsonc_set(current, &[(&["roo-cline.autoImportSettingsPath"], when_on(json!(import)))])
        }
    }
}

/// Codex's `config.toml` with `model_provider = "tollgate"` and its provider table (comments and
/// other providers kept).
fn codex_toml(current: &str, base: &str, token: Option<&str>) -> anyhow::Result<String> {
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

/// llm's `extra-openai-models.yaml` (a list of models) with one `tollgate-ALIAS` per route alias,
/// between marker comments at its end.
fn llm_models(current: &str, base: &str, on: bool) -> String {
    let mut lines: Vec<String> = without_block(current).into_iter().map(str::to_string).collect();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    if on {
        lines.push(BEGIN.into());
        for (alias, _) in ALIASES {
            lines.push(format!("- model_id: tollgate-{alias}\n  model_name: {alias}\n  api_base: \"{base}/v1\"\n  api_key_name: tollgate"));
        }
        lines.push(END.into());
    }
    if lines.is_empty() { String::new() } else { lines.join("\n") + "\n" }
}

/// Continue's `config.yaml` with tollgate's models as the first items of `models`, between marker
/// comments (the only lines setup writes or removes); the items take the indentation of the list
/// they join. A config whose `models` is written inline (`models: [...]`) is left for the user.
fn continue_yaml(current: &str, base: &str, token: Option<&str>) -> anyhow::Result<String> {
    let mut lines = without_block(current);
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
    let base_dirs = directories::BaseDirs::new().context("cannot find the home directory")?;
    let dirs = Dirs {
        home: base_dirs.home_dir().to_path_buf(),
        config: base_dirs.config_dir().to_path_buf(),
        tollgate: paths.config_file.parent().map_or_else(|| base_dirs.config_dir().join("tollgate"), Path::to_path_buf),
    };
    let base = base_url(paths, port);
    let name = tool.name();
    let files = tool.files(&dirs);
    let mut changes = Vec::new();
    for file in files.iter().cloned() {
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
                edit_file(tool, i, &c.current, &Target { base: &base, token, files: &files })
                    .with_context(|| format!("cannot edit {}", c.file.display()))
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
        if next == c.current {
            continue;
        }
        if next.is_empty() {
            match std::fs::remove_file(&c.file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("cannot remove {}", c.file.display()));
                }
                _ => continue,
            }
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
        let token = token.as_deref().unwrap_or_default();
        match tool {
            Tool::ClaudeCode => {
                println!(
                    "  model names it sends (claude-*) go to the anthropic provider; see model_names in the config"
                )
            }
            Tool::Zed => println!(
                "  Zed keeps provider keys itself: paste this one in its agent settings (LLM Providers, tollgate), \
                 or start Zed with TOLLGATE_API_KEY set to it:\n  {token}"
            ),
            Tool::Copilot => println!(
                "  in VS Code's chat model picker as \"code (tollgate)\" and the other routes (chat and agent mode; \
                 inline completions stay on Copilot's own service)"
            ),
            Tool::Roo => println!("  Roo Code imports the profile \"tollgate\" when VS Code starts next"),
            Tool::Goose => {
                println!("  goose uses provider \"tollgate\", model \"code\" (GOOSE_MODEL picks another route)")
            }
            _ => {}
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

    fn dirs() -> Dirs {
        Dirs { home: "/home/u".into(), config: "/home/u/.config".into(), tollgate: "/home/u/.config/tollgate".into() }
    }

    /// One file of the tool's config edited as `run` does, with `token` (or taken out).
    fn edit(tool: Tool, file: usize, current: &str, base: &str, token: Option<&str>) -> anyhow::Result<String> {
        edit_file(tool, file, current, &Target { base, token, files: &tool.files(&dirs()) })
    }

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
    fn aider_config_lines_are_replaced_not_repeated_and_undo_gives_the_users_back() {
        let before = "model: gpt-4.1\nopenai-api-key: old\n";
        let on = edit(Tool::Aider, 0, before, "http://127.0.0.1:1", Some("tg-z")).unwrap();
        assert_eq!(
            on,
            "model: gpt-4.1\n# before tollgate setup: openai-api-key: old\n# tollgate setup: begin\n\
             openai-api-base: http://127.0.0.1:1/v1\nopenai-api-key: tg-z\n# tollgate setup: end\n"
        );
        assert_eq!(edit(Tool::Aider, 0, &on, "http://127.0.0.1:1", Some("tg-z")).unwrap(), on);
        assert_eq!(edit(Tool::Aider, 0, &on, "x", None).unwrap(), before);
        // What an earlier version wrote (a marker line, then the keys) is replaced, not repeated.
        let earlier =
            "model: m\n# written by `tollgate setup aider`\nopenai-api-base: http://h/v1\nopenai-api-key: tg-0\n";
        let again = edit(Tool::Aider, 0, earlier, "http://h", Some("tg-1")).unwrap();
        assert_eq!(again.matches("openai-api-key: tg").count(), 1, "{again}");
        assert!(!again.contains("written by"), "{again}");
    }

    #[test]
    fn goose_gets_a_provider_file_of_its_own_and_its_config_keys() {
        let provider = edit(Tool::Goose, 0, "", "http://127.0.0.1:4", Some("tg-g")).unwrap();
        let v: Value = serde_json::from_str(&provider).unwrap();
        assert_eq!(v["name"], "tollgate");
        assert_eq!(v["engine"], "openai");
        assert_eq!(v["base_url"], "http://127.0.0.1:4/v1/chat/completions");
        assert_eq!(v["headers"]["Authorization"], "Bearer tg-g");
        assert_eq!(v["requires_auth"], false);
        assert_eq!(v["models"][0], json!({"name": "code", "context_limit": 200_000}));
        assert_eq!(edit(Tool::Goose, 0, &provider, "x", None).unwrap(), "", "undo deletes the file");
        let config = "GOOSE_PROVIDER: anthropic\nGOOSE_MODE: smart_approve\n";
        let on = edit(Tool::Goose, 1, config, "x", Some("tg-g")).unwrap();
        let active: Vec<&str> = on.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(active, ["GOOSE_MODE: smart_approve", "GOOSE_PROVIDER: tollgate", "GOOSE_MODEL: code"], "{on}");
        assert_eq!(edit(Tool::Goose, 1, &on, "x", None).unwrap(), config);
    }

    #[test]
    fn zed_settings_keep_their_comments() {
        let before =
            "// Zed settings\n{\n  \"theme\": \"One Dark\", // mine\n  \"language_models\": {\"ollama\": {}},\n}\n";
        let on = edit(Tool::Zed, 0, before, "http://127.0.0.1:6", Some("tg-zed")).unwrap();
        assert!(on.starts_with("// Zed settings\n") && on.contains("// mine"), "{on}");
        assert!(!on.contains("tg-zed"), "Zed keeps the key itself");
        let doc = Jsonc::parse(&on).unwrap();
        let p = doc.get(&["language_models", "openai_compatible", "tollgate"]).unwrap();
        assert_eq!(p["api_url"], "http://127.0.0.1:6/v1");
        assert_eq!(p["available_models"][0]["name"], "code");
        assert!(doc.get(&["language_models", "ollama"]).is_some());
        assert_eq!(edit(Tool::Zed, 0, &on, "http://127.0.0.1:6", Some("tg-zed")).unwrap(), on, "idempotent");
        let off = edit(Tool::Zed, 0, &on, "x", None).unwrap();
        assert!(off.contains("// mine") && !off.contains("openai_compatible"), "{off}");
        assert!(Jsonc::parse(&off).unwrap().get(&["language_models", "ollama"]).is_some());
    }

    #[test]
    fn copilot_gets_one_custom_endpoint_group() {
        let before = r#"[{"name": "mine", "vendor": "customendpoint", "models": []}]"#;
        let on = edit(Tool::Copilot, 0, before, "http://127.0.0.1:2", Some("tg-cp")).unwrap();
        let v: Value = serde_json::from_str(&on).unwrap();
        assert_eq!(v[0]["name"], "mine");
        assert_eq!(v[1]["vendor"], "customendpoint");
        assert_eq!(v[1]["apiKey"], "tg-cp");
        assert_eq!(v[1]["models"][0]["url"], "http://127.0.0.1:2/v1/chat/completions");
        assert_eq!(v[1]["models"][0]["id"], "code");
        let again = edit(Tool::Copilot, 0, &on, "http://127.0.0.1:2", Some("tg-cp2")).unwrap();
        let v: Value = serde_json::from_str(&again).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2, "replaced, not added");
        assert_eq!(v[1]["apiKey"], "tg-cp2");
        let off: Value = serde_json::from_str(&edit(Tool::Copilot, 0, &again, "x", None).unwrap()).unwrap();
        assert_eq!(off, serde_json::from_str::<Value>(before).unwrap());
        assert_eq!(edit(Tool::Copilot, 0, "", "x", None).unwrap(), "");
    }

    #[test]
    fn cline_state_and_secret_point_at_tollgate() {
        let before = r#"{"actModeApiProvider": "anthropic", "autoApprovalSettings": {"enabled": true}}"#;
        let on = edit(Tool::Cline, 0, before, "http://127.0.0.1:8", Some("tg-cl")).unwrap();
        let v: Value = serde_json::from_str(&on).unwrap();
        assert_eq!(v["actModeApiProvider"], "openai");
        assert_eq!(v["planModeApiProvider"], "openai");
        assert_eq!(v["openAiBaseUrl"], "http://127.0.0.1:8/v1");
        assert_eq!(v["actModeOpenAiModelId"], "code");
        assert_eq!(v["autoApprovalSettings"]["enabled"], true);
        assert!(!on.contains("tg-cl"), "the key goes in secrets.json");
        let secrets = edit(Tool::Cline, 1, r#"{"apiKey": "sk-ant-x"}"#, "x", Some("tg-cl")).unwrap();
        let s: Value = serde_json::from_str(&secrets).unwrap();
        assert_eq!(s, json!({"apiKey": "sk-ant-x", "openAiApiKey": "tg-cl"}));
        let off: Value = serde_json::from_str(&edit(Tool::Cline, 0, &on, "x", None).unwrap()).unwrap();
        assert_eq!(off, json!({"autoApprovalSettings": {"enabled": true}}));
    }

    #[test]
    fn roo_gets_a_profile_file_and_vs_code_the_setting_that_imports_it() {
        let profile = edit(Tool::Roo, 0, "", "http://127.0.0.1:9", Some("tg-roo")).unwrap();
        let v: Value = serde_json::from_str(&profile).unwrap();
        let p = &v["providerProfiles"];
        assert_eq!(p["currentApiConfigName"], "tollgate");
        assert_eq!(p["apiConfigs"]["tollgate"]["openAiBaseUrl"], "http://127.0.0.1:9/v1");
        assert_eq!(p["apiConfigs"]["tollgate"]["openAiApiKey"], "tg-roo");
        let settings = "{\n  // mine\n  \"editor.fontSize\": 14\n}\n";
        let on = edit(Tool::Roo, 1, settings, "x", Some("tg-roo")).unwrap();
        assert!(on.contains("// mine"));
        let doc = Jsonc::parse(&on).unwrap();
        assert_eq!(
            doc.get(&["roo-cline.autoImportSettingsPath"]),
            Some(json!("/home/u/.config/tollgate/roo-code.json"))
        );
        assert_eq!(edit(Tool::Roo, 1, &on, "x", None).unwrap(), settings);
    }
}
