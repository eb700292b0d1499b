//! `tollgate doctor`: checks what tollgate needs, says what is wrong, and how to fix each.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::config::Loaded;
use crate::paths::Paths;
use crate::providers::ProviderKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    /// Worth knowing; nothing is broken.
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub outcome: Outcome,
    pub detail: String,
    /// What to do, when it is not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn check(name: impl Into<String>, outcome: Outcome, detail: impl Into<String>, fix: Option<String>) -> Check {
    Check { name: name.into(), outcome, detail: detail.into(), fix }
}

/// Providers some route uses.
fn used_providers(loaded: &Loaded) -> Vec<String> {
    let mut used: Vec<String> = loaded
        .config
        .routes
        .values()
        .flat_map(crate::config::RouteConfig::targets)
        .chain(std::iter::once(&loaded.config.completion.model))
        .filter_map(|t| t.split_once('/').map(|(p, _)| p.to_string()))
        .collect();
    used.sort();
    used.dedup();
    used
}

pub async fn run(paths: &Paths, loaded: &Loaded, repo: &Path) -> Vec<Check> {
    let mut out = Vec::new();
    let cfg = &loaded.config;

    // The daemon.
    let daemon = crate::ipc::daemon(paths).status().await;
    out.push(match &daemon {
        Ok(_) => check("daemon", Outcome::Ok, format!("running (socket {})", paths.socket.display()), None),
        Err(_) => check(
            "daemon",
            Outcome::Fail,
            format!("not running (no socket at {})", paths.socket.display()),
            Some("start it with `tollgate service install` (at login) or `tollgate daemon`".into()),
        ),
    });

    // The keychain.
    let backend = cfg.keychain.backend;
    // Opening is not enough: a keychain can open and then refuse to keep a key, so a probe entry
    // is stored, read back and removed.
    let keychain = tokio::task::spawn_blocking(move || {
        crate::keychain::Keychain::open(backend).map(|k| {
            let probe = k.probe();
            (k, probe)
        })
    })
    .await
    .ok();
    let keychain = match keychain {
        Some(Ok((k, Ok(())))) => {
            out.push(check("keychain", Outcome::Ok, k.backend_name().to_string(), None));
            Some(k)
        }
        Some(Ok((k, Err(e)))) => {
            out.push(check(
                "keychain",
                Outcome::Fail,
                format!("opens but cannot keep a key: {e}"),
                Some("`tollgate login` will fail here: pick another keychain.backend, or \"env\" with TOLLGATE_<PROVIDER>_API_KEY".into()),
            ));
            Some(k)
        }
        Some(Err(e)) => {
            out.push(check(
                "keychain",
                Outcome::Fail,
                e.to_string(),
                // The error says what to do about its own backend.
                None,
            ));
            None
        }
        None => None,
    };

    // The key that seals cached answers, the audit log and stored responses.
    let kc = keychain.as_ref().filter(|k| k.holds_keys());
    out.push(match crate::seal::load(kc, &paths.data_dir) {
        Ok((Some(key), _)) => match key.home {
            crate::seal::KeyHome::Keychain { backend } => {
                check("storage key", Outcome::Ok, format!("in the {backend} keychain"), None)
            }
            crate::seal::KeyHome::File { path } if kc.is_some() => check(
                "storage key",
                Outcome::Warn,
                format!("in {} (readable by you alone), while a keychain is in use", path.display()),
                Some("it was made when no keychain kept it, and stays in the file: a new key in the keychain would lose the cache and the audit text".into()),
            ),
            crate::seal::KeyHome::File { path } => {
                check("storage key", Outcome::Ok, format!("in {} (readable by you alone)", path.display()), None)
            }
        },
        Ok((None, _)) => check("storage key", Outcome::Ok, "none yet: the daemon makes one at its first start", None),
        Err(e) => check(
            "storage key",
            Outcome::Fail,
            e.to_string(),
            Some("the daemon cannot start until the key loads".into()),
        ),
    });

    // Credentials for every cloud provider a route uses.
    for name in used_providers(loaded) {
        let Some(p) = cfg.providers.get(&name) else { continue };
        if p.is_local() || !p.enabled {
            continue;
        }
        let env = crate::keychain::env_var(&name);
        let found = crate::keychain::key_origin(keychain.as_ref(), &name).map(|o| format!("{o:?}").to_lowercase());
        out.push(match found {
            Some(origin) => check(format!("credentials: {name}"), Outcome::Ok, format!("found ({origin})"), None),
            None => check(
                format!("credentials: {name}"),
                Outcome::Warn,
                "no key: routes skip it (a request that needs it fails)",
                Some(format!("`tollgate login {name}`, or set {env}")),
            ),
        });
    }

    // The policy.
    if cfg.policy.source.trim().is_empty() {
        out.push(check(
            "policy",
            Outcome::Warn,
            "no team policy is set (policy.source)",
            Some("set policy.source to your team's policy repository (see packaging/policy/)".into()),
        ));
    } else {
        out.push(match daemon.as_ref().ok().map(|d| &d.policy) {
            Some(s) if s.last_error.is_none() && s.config_error.is_none() && s.commit.is_some() => {
                let commit = s.commit.as_deref().unwrap_or_default();
                check("policy", Outcome::Ok, format!("{} @ {}", cfg.policy.source, &commit[..12.min(commit.len())]), None)
            }
            Some(s) => check(
                "policy",
                Outcome::Fail,
                s.last_error.as_deref().or(s.config_error.as_deref()).unwrap_or("not synced yet").to_string(),
                Some("see `tollgate policy status`; `tollgate login gitlab` for a GitLab token; `tollgate policy sync` to retry".into()),
            ),
            None => check("policy", Outcome::Warn, "unknown while the daemon is not running", None),
        });
    }

    // Local model servers.
    let http = crate::providers::http_client(&cfg.limits);
    for name in used_providers(loaded) {
        let Some(p) = cfg.providers.get(&name).filter(|p| p.is_local() && p.enabled) else { continue };
        let url = match p.kind {
            ProviderKind::Ollama => format!("{}/api/tags", p.base_url.trim_end_matches('/')),
            _ => format!("{}/models", p.base_url.trim_end_matches('/')),
        };
        let reachable = http
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map(|r| r.status().is_success() || r.status().as_u16() == 401);
        out.push(match reachable {
            Ok(true) => {
                check(format!("local model: {name}"), Outcome::Ok, format!("{} answers", p.shown_base_url()), None)
            }
            _ => check(
                format!("local model: {name}"),
                Outcome::Warn,
                format!("{} does not answer", p.shown_base_url()),
                Some(match p.kind {
                    ProviderKind::Ollama => {
                        "start it with `ollama serve` (and `ollama pull` the model), or remove it from your routes"
                            .into()
                    }
                    _ => format!("start the server at {}, or remove {name} from your routes", p.shown_base_url()),
                }),
            ),
        });
    }

    // Editors.
    let home = directories::BaseDirs::new().map(|d| d.home_dir().to_path_buf()).unwrap_or_default();
    let mentions = |p: &Path| std::fs::read_to_string(p).map(|t| t.contains("tollgate")).unwrap_or(false);
    let config_home =
        std::env::var_os("XDG_CONFIG_HOME").map(std::path::PathBuf::from).unwrap_or_else(|| home.join(".config"));
    let nvim = walk_mentions(&config_home.join("nvim"), 3);
    let editors = [
        ("Neovim", nvim),
        ("Helix", mentions(&config_home.join("helix/languages.toml"))),
        (
            "Emacs",
            mentions(&home.join(".emacs"))
                || mentions(&home.join(".emacs.d/init.el"))
                || mentions(&config_home.join("emacs/init.el")),
        ),
        (
            "VS Code",
            std::fs::read_dir(home.join(".vscode/extensions"))
                .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().contains("tollgate")))
                .unwrap_or(false),
        ),
    ];
    let found: Vec<&str> = editors.iter().filter(|(_, f)| *f).map(|(n, _)| *n).collect();
    out.push(if found.is_empty() {
        check(
            "editors",
            Outcome::Warn,
            "no editor is set up for `tollgate lsp`",
            Some("see editor-clients/ (Neovim, VS Code, Helix, Emacs, JetBrains)".into()),
        )
    } else {
        check("editors", Outcome::Ok, format!("set up: {}", found.join(", ")), None)
    });

    // Hooks in this repository.
    match crate::hooks::hooks_dir(repo) {
        Ok(dir) => {
            let has = |h: &str| {
                std::fs::read_to_string(dir.join(h)).map(|t| t.contains("installed by tollgate")).unwrap_or(false)
            };
            let missing: Vec<&str> = ["pre-commit", "pre-push"].into_iter().filter(|h| !has(h)).collect();
            out.push(if missing.is_empty() {
                check("hooks", Outcome::Ok, format!("pre-commit and pre-push in {}", dir.display()), None)
            } else {
                check(
                    "hooks",
                    Outcome::Warn,
                    format!("not installed here: {}", missing.join(", ")),
                    Some(format!(
                        "`tollgate hooks install {}`",
                        missing.iter().map(|h| format!("--{h}")).collect::<Vec<_>>().join(" ")
                    )),
                )
            });
        }
        Err(_) => out.push(check("hooks", Outcome::Ok, "not in a git repository; nothing to check", None)),
    }
    out
}

/// Whether any file under `dir` (to `depth` levels) mentions tollgate.
fn walk_mentions(dir: &Path, depth: usize) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            depth > 0 && walk_mentions(&p, depth - 1)
        } else {
            p.extension().is_some_and(|x| x == "lua" || x == "vim")
                && std::fs::read_to_string(&p).is_ok_and(|t| t.contains("tollgate"))
        }
    })
}

/// The checks as lines: `✓ name: detail`, and the fix under each failure or warning.
pub fn text(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let mark = match c.outcome {
            Outcome::Ok => "ok  ",
            Outcome::Warn => "warn",
            Outcome::Fail => "FAIL",
        };
        out.push_str(&format!("{mark} {}: {}\n", c.name, c.detail));
        if let Some(f) = &c.fix {
            out.push_str(&format!("     fix: {f}\n"));
        }
    }
    out
}
