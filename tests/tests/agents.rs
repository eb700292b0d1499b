//! End to end with the coding agents developers run, installed from their registries by
//! tests/setup.sh: Claude Code (`claude -p`), Codex (`codex exec`), opencode (`opencode run`),
//! aider (`aider --message`) and llm (`llm -m`),
//! each pointed at tollgate the way its own documentation says, each sending what it sends today.
//! The fakes answer; the tests check that the answer reached the tool, what the provider received
//! (betas, cache marks, placeholders in place of a planted secret) and the ledger row.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tollgate_tests::fake::FakeProvider;
use tollgate_tests::{Daemon, ENV_KEYS, init, standard_config};

// A fake value shaped like a real one.
const PAT: &str = "glpat-riGp_58WAm-dX3a5IDnO";

fn agent(name: &str) -> PathBuf {
    let dir = std::env::var_os("TOLLGATE_AGENTS").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/tollgate-tests/agents/node_modules/.bin")
    });
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run tests/setup.sh (it installs the agents from npm), or set TOLLGATE_AGENTS",
        p.display()
    );
    p
}

/// Runs a command with a time limit; its output, or a panic with what it printed so far.
fn run(mut c: Command, limit: Duration) -> Output {
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().unwrap_or_else(|e| panic!("spawn {:?}: {e}", c.get_program()));
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(limit);
        // Still running: the test fails below with what it printed.
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    });
    let out = child.wait_with_output().unwrap();
    drop(watchdog);
    out
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn setup() -> (FakeProvider, Daemon) {
    init();
    let a = FakeProvider::start().await;
    let b = FakeProvider::start().await;
    // The agents send bare model names; the model_names table sends them to the fakes.
    let extra = format!(
        r#"
[providers.or]
kind = "openai"
base_url = "{a}/v1"
local = false
responses_api = true
[[model_names]]
match = "claude-*"
provider = "an"
[[model_names]]
match = "gpt-*"
provider = "or"
[routes.code]
targets = ["oa/gpt-code"]
"#,
        a = a.url()
    );
    let mut keys = ENV_KEYS.to_vec();
    keys.push(("TOLLGATE_OR_API_KEY", "sk-test-or-0000000000000000"));
    let d = Daemon::start_with_env(&standard_config(&a, &b, &extra), &keys);
    (a, d)
}

/// `tollgate setup TOOL` for a user whose home is `home`: the tool's own config file, a token of
/// its own.
fn setup_tool(d: &Daemon, home: &std::path::Path, tool: &str) -> Output {
    setup_args(d, home, &[tool])
}

fn setup_args(d: &Daemon, home: &std::path::Path, args: &[&str]) -> Output {
    let out = d
        .command()
        .env("HOME", home)
        .env("CODEX_HOME", home.join(".codex"))
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("LLM_USER_PATH", home.join("llm"))
        .env_remove("CLINE_DIR")
        .arg("setup")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    out
}

async fn last_call(d: &Daemon) -> Value {
    let log: Value = d.client().get(d.url("/v1/log?limit=1")).send().await.unwrap().json().await.unwrap();
    log["calls"][0].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code_works_through_tollgate_with_its_betas_and_cache_marks() {
    let (a, d) = setup().await;
    let home = tempfile::tempdir().unwrap();
    // Its settings.json points it at tollgate, with a token of its own; nothing in its environment.
    setup_tool(&d, home.path(), "claude-code");
    let mut c = Command::new(agent("claude"));
    c.current_dir(home.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .args(["-p", &format!("say hi; the deploy token is {PAT}"), "--model", "claude-sonnet-4-5"]);
    let out = run(c, Duration::from_secs(120));
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    // The fake echoes the prompt it got (placeholders), tollgate restored the value for the tool.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Hello from fake anthropic") && stdout.contains(PAT), "{shown}");

    let sent = a.requests().into_iter().find(|r| r.path == "/v1/messages").expect("a Messages call");
    assert_eq!(sent.query.as_deref(), Some("beta=true"));
    let betas = sent.headers.get("anthropic-beta").cloned().unwrap_or_default();
    assert!(betas.contains("claude-code-20250219"), "betas forwarded: {betas:?}");
    assert_eq!(sent.body["model"], "claude-sonnet-4-5");
    let body = sent.body.to_string();
    assert!(body.contains("\"cache_control\":{\"type\":\"ephemeral\"}"), "cache marks kept");
    // The agent's own fields arrive as it sent them: its tools, its metadata.
    assert!(sent.body["tools"].as_array().is_some_and(|t| t.len() > 3), "{}", sent.body["tools"]);
    assert!(sent.body["metadata"]["user_id"].is_string());
    assert!(!body.contains(PAT) && body.contains("TOLLGATE_GITLAB_PAT_1"), "the secret left as a placeholder");

    let call = last_call(&d).await;
    assert_eq!(
        (call["entry"].as_str(), call["provider"].as_str(), call["outcome"].as_str()),
        (Some("anthropic"), Some("an"), Some("ok")),
        "{call}"
    );
    assert_eq!(call["caller"], "claude-code", "the ledger names the tool's own token");
    assert!(call["input_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn codex_works_through_tollgate_on_the_responses_api() {
    let (a, d) = setup().await;
    let home = tempfile::tempdir().unwrap();
    let codex_home = home.path().join(".codex");
    std::fs::create_dir_all(&codex_home).unwrap();
    // No update check and no analytics: nothing but tollgate to call (it still looks up a few
    // hosts by name; nothing answers here).
    let own = "model = \"gpt-5-codex\"\ncheck_for_update_on_startup = false\n\n[analytics]\nenabled = false\n";
    std::fs::write(codex_home.join("config.toml"), own).unwrap();
    setup_tool(&d, home.path(), "codex");
    let mut c = Command::new(agent("codex"));
    c.current_dir(home.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("CODEX_HOME", &codex_home)
        .args(["exec", "--skip-git-repo-check", &format!("say hi; the deploy token is {PAT}")]);
    let out = run(c, Duration::from_secs(120));
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Hello from fake openai") && stdout.contains(PAT), "{shown}");

    let sent = a.requests().into_iter().find(|r| r.path == "/v1/responses").expect("a Responses call");
    assert_eq!(sent.body["model"], "gpt-5-codex");
    assert_eq!(sent.body["stream"], true);
    // Its own tool kinds reach a Responses target as sent.
    let kinds: Vec<&str> = sent.body["tools"].as_array().unwrap().iter().filter_map(|t| t["type"].as_str()).collect();
    assert!(kinds.contains(&"function"), "{kinds:?}");
    let body = sent.body.to_string();
    assert!(!body.contains(PAT) && body.contains("TOLLGATE_GITLAB_PAT_1"), "the secret left as a placeholder");

    let call = last_call(&d).await;
    assert_eq!(
        (call["entry"].as_str(), call["provider"].as_str(), call["outcome"].as_str()),
        (Some("responses"), Some("or"), Some("ok")),
        "{call}"
    );
    assert_eq!(call["caller"], "codex", "the ledger names the tool's own token");

    // Usage by caller tells the tools apart; a revoked token is refused at once.
    let usage: Value = d.client().get(d.url("/v1/usage?by=caller")).send().await.unwrap().json().await.unwrap();
    assert!(usage["lines"].as_array().unwrap().iter().any(|l| l["key"] == "codex"), "{usage}");
    let config: toml::Table = std::fs::read_to_string(codex_home.join("config.toml")).unwrap().parse().unwrap();
    let bearer = config["model_providers"]["tollgate"]["http_headers"]["Authorization"].as_str().unwrap().to_string();
    let undo = d
        .command()
        .env("HOME", home.path())
        .env("CODEX_HOME", &codex_home)
        .args(["setup", "codex", "--undo"])
        .output()
        .unwrap();
    assert!(undo.status.success(), "{}", text(&undo));
    assert_eq!(
        std::fs::read_to_string(codex_home.join("config.toml")).unwrap(),
        own,
        "undo leaves the user's own config"
    );
    let refused = reqwest::Client::new().get(d.url("/v1/models")).header("authorization", bearer).send().await.unwrap();
    assert_eq!(refused.status(), 401, "a revoked token is refused");
}

#[tokio::test(flavor = "multi_thread")]
async fn aider_works_through_tollgate_on_chat_completions() {
    let (a, d) = setup().await;
    let aider = std::env::var_os("TOLLGATE_AIDER").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/tollgate-tests/aider-venv/bin/aider")
    });
    assert!(
        aider.exists(),
        "{} is missing: run tests/setup.sh (it installs aider-chat), or set TOLLGATE_AIDER",
        aider.display()
    );
    let home = tempfile::tempdir().unwrap();
    // aider refreshes its model list from the network unless its cache is fresh: seed the cache
    // with the copy litellm ships.
    let site = aider.parent().unwrap().parent().unwrap().join("lib");
    let shipped = std::fs::read_dir(&site)
        .unwrap()
        .filter_map(Result::ok)
        .map(|python| python.path().join("site-packages/litellm/model_prices_and_context_window_backup.json"))
        .find(|p| p.exists())
        .expect("litellm ships its model list");
    std::fs::create_dir_all(home.path().join(".aider/caches")).unwrap();
    std::fs::copy(shipped, home.path().join(".aider/caches/model_prices_and_context_window.json")).unwrap();
    setup_tool(&d, home.path(), "aider");
    let mut c = Command::new(aider);
    c.current_dir(home.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        // litellm's price list from its own package, not from the network.
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .args([
            "--model",
            "openai/gpt-4.1",
            "--no-git",
            "--yes-always",
            "--no-check-update",
            "--no-show-model-warnings",
        ])
        .args(["--analytics-disable", "--no-pretty", "--no-fancy-input", "--no-show-release-notes"])
        .args(["--message", &format!("say hi; the deploy token is {PAT}")]);
    let out = run(c, Duration::from_secs(180));
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Hello from fake openai") && stdout.contains(PAT), "{shown}");

    let sent = a.requests().into_iter().find(|r| r.path == "/v1/chat/completions").expect("a chat call");
    assert_eq!(sent.body["model"], "gpt-4.1");
    let body = sent.body.to_string();
    assert!(!body.contains(PAT) && body.contains("TOLLGATE_GITLAB_PAT_1"), "the secret left as a placeholder");
    let call = last_call(&d).await;
    assert_eq!(
        (call["entry"].as_str(), call["caller"].as_str(), call["outcome"].as_str()),
        (Some("openai"), Some("aider"), Some("ok")),
        "{call}"
    );
    assert!(call["output_tokens"].as_u64().unwrap() > 0, "usage booked though aider asked for none: {call}");
}

#[tokio::test(flavor = "multi_thread")]
async fn opencode_works_through_tollgate_with_a_route_alias() {
    let (a, d) = setup().await;
    let home = tempfile::tempdir().unwrap();
    setup_tool(&d, home.path(), "opencode");
    let mut c = Command::new(agent("opencode"));
    c.current_dir(home.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join(".config"))
        // Nothing fetched from the network: no update check, model catalog, plugins or LSP servers.
        .env("OPENCODE_DISABLE_AUTOUPDATE", "1")
        .env("OPENCODE_DISABLE_MODELS_FETCH", "1")
        .env("OPENCODE_DISABLE_DEFAULT_PLUGINS", "1")
        .env("OPENCODE_DISABLE_LSP_DOWNLOAD", "1")
        .env("OPENCODE_DISABLE_SHARE", "1")
        .args(["run", "--model", "tollgate/code", &format!("say hi; the deploy token is {PAT}")]);
    let out = run(c, Duration::from_secs(120));
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(PAT), "{shown}");
    let sent: Vec<_> = a.requests().into_iter().filter(|r| r.path == "/v1/chat/completions").collect();
    assert!(!sent.is_empty(), "{shown}");
    assert!(sent.iter().all(|r| r.body["model"] == "gpt-code"), "the route alias chose the model");
    assert!(sent.iter().all(|r| !r.body.to_string().contains(PAT)));
    let call = last_call(&d).await;
    assert_eq!((call["caller"].as_str(), call["outcome"].as_str()), (Some("opencode"), Some("ok")), "{call}");
}

#[tokio::test(flavor = "multi_thread")]
async fn llm_works_through_tollgate_with_the_models_setup_gave_it() {
    let (a, d) = setup().await;
    let llm = std::env::var_os("TOLLGATE_LLM").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/tollgate-tests/llm-venv/bin/llm")
    });
    assert!(llm.exists(), "{} is missing: run tests/setup.sh (it installs llm), or set TOLLGATE_LLM", llm.display());
    let home = tempfile::tempdir().unwrap();
    setup_tool(&d, home.path(), "llm");
    let mut c = Command::new(llm);
    c.current_dir(home.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("LLM_USER_PATH", home.path().join("llm"))
        .args(["-m", "tollgate-code", &format!("say hi; the deploy token is {PAT}")]);
    let out = run(c, Duration::from_secs(60));
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Hello from fake openai") && stdout.contains(PAT), "{shown}");
    let sent = a.requests().into_iter().find(|r| r.path == "/v1/chat/completions").expect("a chat call");
    assert_eq!(sent.body["model"], "gpt-code", "the code route chose the model");
    assert!(!sent.body.to_string().contains(PAT));
    let call = last_call(&d).await;
    assert_eq!((call["caller"].as_str(), call["outcome"].as_str()), (Some("llm"), Some("ok")), "{call}");
}

/// For the tools whose client cannot run here (goose, Zed, Copilot Chat, Cline, Roo Code: desktop
/// apps and editor extensions), what setup writes is read the way each reads it, and a request
/// made with that address and key is served and counted as that tool's; `--undo` takes the files
/// back to what they were and the key stops working.
#[tokio::test(flavor = "multi_thread")]
async fn what_setup_writes_for_editor_tools_reaches_tollgate_as_that_tool() {
    let (_a, d) = setup().await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let read = |rel: &str| -> Value {
        let text = std::fs::read_to_string(h.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        // VS Code's and Zed's files may hold comments: none written here, so plain JSON reads them.
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}\n{text}"))
    };
    // A settings file of the user's, with a comment, that must come back as it was.
    let vscode_settings = "{\n  // mine\n  \"editor.fontSize\": 14\n}\n";
    std::fs::create_dir_all(h.join(".config/Code/User")).unwrap();
    std::fs::write(h.join(".config/Code/User/settings.json"), vscode_settings).unwrap();
    let client = reqwest::Client::new();
    for tool in ["goose", "zed", "copilot", "cline", "roo"] {
        let out = setup_tool(&d, h, tool);
        let (url, key) = match tool {
            "goose" => {
                let p = read(".config/goose/custom_providers/tollgate.json");
                let config = std::fs::read_to_string(h.join(".config/goose/config.yaml")).unwrap();
                assert!(config.contains("GOOSE_PROVIDER: tollgate\nGOOSE_MODEL: code"), "{config}");
                let auth = p["headers"]["Authorization"].as_str().unwrap();
                (p["base_url"].as_str().unwrap().to_string(), auth.trim_start_matches("Bearer ").to_string())
            }
            "zed" => {
                let p = &read(".config/zed/settings.json")["language_models"]["openai_compatible"]["tollgate"];
                let stdout = String::from_utf8_lossy(&out.stdout);
                let key = stdout.lines().last().unwrap().trim().to_string();
                assert!(key.starts_with("tg-"), "the key Zed is to keep is printed: {stdout}");
                (format!("{}/chat/completions", p["api_url"].as_str().unwrap()), key)
            }
            "copilot" => {
                let groups = read(".config/Code/User/chatLanguageModels.json");
                let g = groups.as_array().unwrap().iter().find(|g| g["name"] == "tollgate").unwrap().clone();
                assert_eq!(g["vendor"], "customendpoint");
                (g["models"][0]["url"].as_str().unwrap().to_string(), g["apiKey"].as_str().unwrap().to_string())
            }
            "cline" => {
                let state = read(".cline/data/globalState.json");
                assert_eq!(state["actModeApiProvider"], "openai");
                let url = format!("{}/chat/completions", state["openAiBaseUrl"].as_str().unwrap());
                (url, read(".cline/data/secrets.json")["openAiApiKey"].as_str().unwrap().to_string())
            }
            _ => {
                let settings = std::fs::read_to_string(h.join(".config/Code/User/settings.json")).unwrap();
                assert!(settings.contains("// mine"), "{settings}");
                let path = settings.split("\"roo-cline.autoImportSettingsPath\": \"").nth(1).unwrap();
                let path = &path[..path.find('"').unwrap()];
                let profile: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
                let p = &profile["providerProfiles"]["apiConfigs"]["tollgate"];
                let url = format!("{}/chat/completions", p["openAiBaseUrl"].as_str().unwrap());
                (url, p["openAiApiKey"].as_str().unwrap().to_string())
            }
        };
        let ask = || {
            client
                .post(&url)
                .bearer_auth(&key)
                .json(&serde_json::json!({"model": "code", "messages": [{"role": "user", "content": "hi"}]}))
                .send()
        };
        let resp = ask().await.unwrap();
        assert_eq!(resp.status(), 200, "{tool}: {}", resp.text().await.unwrap());
        let call = last_call(&d).await;
        assert_eq!(call["caller"].as_str(), Some(tool), "{tool}: {call}");
        setup_args(&d, h, &[tool, "--undo"]);
        assert_eq!(ask().await.unwrap().status(), 401, "{tool}: its token is revoked by --undo");
    }
    // Every file setup wrote is gone again, and the user's own is as it was.
    assert_eq!(std::fs::read_to_string(h.join(".config/Code/User/settings.json")).unwrap(), vscode_settings);
    for rel in [
        ".config/goose/custom_providers/tollgate.json",
        ".config/goose/config.yaml",
        ".config/zed/settings.json",
        ".config/Code/User/chatLanguageModels.json",
        ".cline/data/globalState.json",
        ".cline/data/secrets.json",
    ] {
        assert!(!h.join(rel).exists(), "{rel} is left after --undo");
    }
}
