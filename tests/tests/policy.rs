//! The team policy end to end: a real git server (git daemon on loopback) and a fake GitLab API
//! serving a real repository that the tests commit and push to; the real daemon syncing from them.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_tests::fake::FakeProvider;
use tollgate_tests::gitlab::FakeGitlab;
use tollgate_tests::{Daemon, PolicyRepo, free_port, init, run_git};

/// `git daemon` serving a directory on a loopback port; killed on drop.
struct GitDaemon {
    child: Child,
    port: u16,
}

impl GitDaemon {
    fn start(base: &Path, port: u16) -> Self {
        // git-daemon itself, not `git daemon`: killing the `git` wrapper would leave it running.
        let exec_path = run_git(base, &["--exec-path"]);
        let child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start git daemon");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "git daemon did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CORP_KEY: (&str, &str) = ("TOLLGATE_CORP_API_KEY", "sk-test-corp-000000000000000000");
const GITLAB_TOKEN: &str = "glpat-FAKEfake0000000000000";

/// A policy whose provider `corp` is the fake, and whose route `team` serves `model`; `top` holds
/// top-level keys, `extra` more tables.
fn policy_with(fake: &FakeProvider, model: &str, top: &str, extra: &str) -> String {
    format!(
        r#"version = 1
{top}
[providers.corp]
kind = "openai"
base_url = "{}/v1"
local = false

[routes.team]
targets = ["corp/{model}"]
{extra}
"#,
        fake.url()
    )
}

fn policy_toml(fake: &FakeProvider, model: &str, extra: &str) -> String {
    policy_with(fake, model, "", extra)
}

fn local_config(source: &str, extra: &str) -> String {
    config_every(source, 1, extra)
}

fn config_every(source: &str, interval_s: u64, extra: &str) -> String {
    format!("[keychain]\nbackend = \"env\"\n[policy]\nsource = \"{source}\"\nsync_interval_s = {interval_s}\n{extra}")
}

async fn policy_status(d: &Daemon) -> Value {
    d.client().get(d.url("/v1/policy")).send().await.unwrap().json().await.unwrap()
}

/// Waits until `check` holds for the policy status, or fails with the status and the log.
async fn wait_for(d: &Daemon, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = policy_status(d).await;
        if check(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {s:#}\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn chat(d: &Daemon, model: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = d.client().post(d.url("/v1/chat/completions"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.json(&json!({"model": model, "max_tokens": 20, "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .unwrap()
}

async fn served_model(d: &Daemon, model: &str) -> String {
    let resp = chat(d, model, &[]).await;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.text().await.unwrap();
    assert_eq!(status, 200, "{body}\n{}", d.log());
    headers["x-tollgate-model"].to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_git_remote_policy_is_synced_pushed_changes_apply_broken_ones_are_rejected_and_offline_keeps_the_last_good() {
    init();
    let fake = FakeProvider::start().await;
    let repo = PolicyRepo::new();
    let v1 = repo.push(&[("policy.toml", &policy_toml(&fake, "model-v1", ""))], "first policy");
    let port = free_port();
    let server = GitDaemon::start(repo.dir.path(), port);
    let source = format!("git://127.0.0.1:{}/policy.git", server.port);
    let mut d = Daemon::start_with_env(&local_config(&source, ""), &[CORP_KEY]);

    let s = wait_for(&d, "the first sync", |s| s["commit"] == v1).await;
    assert_eq!(s["source"], source);
    assert_eq!(served_model(&d, "team").await, "model-v1");

    // A pushed change is picked up by the timer alone (interval 1 s), without a restart.
    let v2 = repo.push(&[("policy.toml", &policy_toml(&fake, "model-v2", ""))], "move to v2");
    wait_for(&d, "the pushed change", |s| s["commit"] == v2).await;
    assert_eq!(served_model(&d, "team").await, "model-v2");
    let shown = d.command().args(["config", "show"]).output().unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout).to_string();
    assert!(shown.contains("routes.team.targets = [\"corp/model-v2\"]  # policy git://"), "{shown}");

    // A broken policy is rejected whole, with file and line; the last good one stays in force.
    let broken = repo.push(
        &[(
            "policy.toml",
            &policy_toml(
                &fake,
                "model-v3",
                "\n[[budgets]]\nname = \"b\"\nscope = \"user\"\nperiod = \"day\"\naction = \"block\"\n",
            ),
        )],
        "a budget without a limit",
    );
    let s = wait_for(&d, "the rejection", |s| s["rejected_commit"] == broken).await;
    assert_eq!(s["commit"], v2);
    let problem = &s["problems"][0];
    assert_eq!((problem["file"].as_str(), problem["line"].as_u64()), (Some("policy.toml"), Some(11)), "{s:#}");
    assert!(problem["message"].as_str().unwrap().contains("needs limit_usd or limit_tokens"), "{s:#}");
    assert!(s["last_error"].as_str().unwrap().contains("rejected"), "{s:#}");
    assert_eq!(served_model(&d, "team").await, "model-v2");
    let out = d.command().args(["policy", "status"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("policy.toml:11:1: budgets[0]: needs limit_usd or limit_tokens"), "{text}");

    // The server goes away: requests go on, the sync reports the error and backs off.
    drop(server);
    let out = d.command().args(["policy", "sync", "--json"]).output().unwrap();
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!out.status.success());
    assert!(body["error"].as_str().unwrap().contains("git ls-remote failed"), "{body:#}");
    assert_eq!(served_model(&d, "team").await, "model-v2");

    // A restart while offline starts on the last good policy kept on disk.
    d.restart();
    assert_eq!(served_model(&d, "team").await, "model-v2");
    let s = policy_status(&d).await;
    assert_eq!(s["commit"], v2);
    let snapshot = d.home.path().join("policy/snapshot.json");
    assert_private(&snapshot);

    // The server comes back with a fixed policy: it applies.
    let _server = GitDaemon::start(repo.dir.path(), port);
    let v4 = repo.push(&[("policy.toml", &policy_toml(&fake, "model-v4", ""))], "fix the budget");
    let out = d.command().args(["policy", "sync"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let s = policy_status(&d).await;
    assert_eq!((s["commit"].as_str(), s["problems"].as_array().map(Vec::len)), (Some(v4.as_str()), Some(0)), "{s:#}");
    assert_eq!(served_model(&d, "team").await, "model-v4");
}

fn assert_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", path.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gitlab_policy_gives_identity_and_a_per_group_budget_and_api_errors_are_reported() {
    init();
    let fake = FakeProvider::start().await;
    let repo = PolicyRepo::new();
    let budgets = r#"
[[budgets]]
name = "platform-daily"
scope = "group"
match = "acme/platform"
period = "day"
limit_tokens = 200
action = "block"

[[budgets]]
name = "ml-daily"
scope = "group"
match = "acme/ml"
period = "day"
limit_tokens = 1
action = "block"
"#;
    let v1 = repo.push(
        &[
            ("policy.toml", &policy_toml(&fake, "model-v1", budgets)),
            ("rules/acme.toml", "[[rule]]\nid = \"acme-internal-token\"\nkind = \"ACME_TOKEN\"\nregex = '''\\bacme_tok_[a-z0-9]{24}\\b'''\nkeywords = [\"acme_tok_\"]\n"),
            ("prompts/explain.md", "+++\ndescription = \"Explain, the ACME way\"\nversion = 3\nmodel = \"team\"\nvariables = [\"code\"]\n+++\nExplain {{code}}\n"),
            ("README.md", "not part of the policy"),
        ],
        "policy with group budgets",
    );
    let gitlab =
        FakeGitlab::start(repo.bare(), "acme/ai-policy", GITLAB_TOKEN, "alice", &["acme", "acme/platform"]).await;
    let source = format!("gitlab+http://{}/acme/ai-policy?ref=main", gitlab.addr);
    // Synced at start, then only when asked: the scripted GitLab failures below must meet the
    // sync the test asks for, not one from the timer.
    let d = Daemon::start_with_env(
        &config_every(&source, 3600, ""),
        &[CORP_KEY, ("TOLLGATE_GITLAB_API_KEY", GITLAB_TOKEN)],
    );

    let s = wait_for(&d, "the first sync", |s| s["commit"] == v1).await;
    assert_eq!(s["identity"]["username"], "alice", "{s:#}");
    assert_eq!(s["identity"]["groups"], json!(["acme", "acme/platform"]));
    // The token went as PRIVATE-TOKEN on every call; README.md was never fetched.
    let requests = gitlab.requests();
    assert!(requests.iter().all(|(_, auth)| auth == "private-token"), "{requests:#?}");
    assert!(!requests.iter().any(|(p, _)| p.contains("README")), "{requests:#?}");

    // The policy's own rule masks its token format; its prompt override is in force.
    let resp = d
        .client()
        .post(d.url("/v1/chat/completions"))
        .json(&json!({"model": "team", "max_tokens": 20, "messages": [{"role": "user", "content": "use acme_tok_abcdefghijklmnopqrstuvwx now"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let sent = fake.requests().last().unwrap().body.to_string();
    assert!(!sent.contains("acme_tok_abcdefghijklmnopqrstuvwx") && sent.contains("TOLLGATE_ACME_TOKEN_1"), "{sent}");
    let prompts: Value = d.client().get(d.url("/v1/prompts")).send().await.unwrap().json().await.unwrap();
    let explain = prompts["prompts"].as_array().unwrap().iter().find(|p| p["name"] == "explain").unwrap();
    assert_eq!(explain["version"], 3);

    // Only alice's group budget applies, and it blocks once spent.
    let budget: Value = d.client().get(d.url("/v1/budget")).send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> = budget["budgets"].as_array().unwrap().iter().filter_map(|b| b["name"].as_str()).collect();
    assert_eq!(names, ["platform-daily"], "{budget:#}");
    let mut blocked = None;
    for _ in 0..40 {
        let resp = chat(&d, "team", &[]).await;
        if resp.status() == 402 {
            blocked = Some(resp.json::<Value>().await.unwrap());
            break;
        }
        assert_eq!(resp.status(), 200);
    }
    let blocked = blocked.expect("the group budget never blocked");
    assert!(blocked["error"]["message"].as_str().unwrap().contains("platform-daily"), "{blocked:#}");
    let log: Value = d.client().get(d.url("/v1/log")).send().await.unwrap().json().await.unwrap();
    assert_eq!(log["calls"][0]["identity"], "alice", "{log:#}");

    // A sync of an unchanged branch asks only for its head: the files were fetched once.
    let out = d.command().args(["policy", "sync"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"), "{}", String::from_utf8_lossy(&out.stdout));
    let trees = gitlab.requests().iter().filter(|(p, _)| p.contains("/repository/tree")).count();
    let heads = gitlab.requests().iter().filter(|(p, _)| p.contains("/repository/branches/main")).count();
    assert_eq!(trees, 1, "{:#?}", gitlab.requests());
    assert_eq!(heads, 2, "{:#?}", gitlab.requests());

    // GitLab's errors are reported with what to do, and the policy in force stays.
    for (status, expect) in [
        (500, "GitLab answered 500"),
        (429, "rate-limited"),
        (404, "does not exist, or the token cannot see it"),
        (401, "tollgate login gitlab"),
    ] {
        gitlab.fail_next(&[status, status]); // the identity refresh, then the branch
        let out = d.command().args(["policy", "sync", "--json"]).output().unwrap();
        let body: Value = serde_json::from_slice(&out.stdout).unwrap();
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(expect), "{status}: {body:#}");
        assert_eq!(body["status"]["commit"], v1);
    }
    // A redirect to another address is not followed: the token stays with the configured GitLab.
    let elsewhere = FakeGitlab::start(repo.bare(), "acme/ai-policy", GITLAB_TOKEN, "alice", &["acme"]).await;
    *gitlab.state.redirect_to.lock().unwrap() = Some(elsewhere.url());
    gitlab.fail_next(&[307, 307]);
    let out = d.command().args(["policy", "sync", "--json"]).output().unwrap();
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("not followed") && error.contains(&elsewhere.url()), "{body:#}");
    assert!(elsewhere.requests().is_empty(), "the other address was asked: {:#?}", elsewhere.requests());
    assert_eq!(body["status"]["commit"], v1);
    // A revoked token: refused, and never printed anywhere.
    *gitlab.state.token.lock().unwrap() = "glpat-ROTATEDrotated000000".into();
    let out = d.command().args(["policy", "sync", "--json"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("refused the token"), "{text}");
    assert!(!text.contains(GITLAB_TOKEN) && !d.log().contains(GITLAB_TOKEN), "the token leaked");
}

#[tokio::test(flavor = "multi_thread")]
async fn local_config_and_a_directory_policy_reload_without_restart_and_the_policy_cannot_be_loosened() {
    init();
    let fake = FakeProvider::start().await;
    let dir = tempfile::Builder::new().prefix("tg-policy-dir-").tempdir().unwrap();
    let write_policy = |tasks: &str| {
        let extra = "[redaction]\nmode = \"mask\"\n[review]\non_error = \"closed\"\n";
        let text = policy_with(&fake, "model-v1", &format!("tasks = {tasks}"), extra);
        std::fs::write(dir.path().join("policy.toml"), text).unwrap();
    };
    write_policy("[\"api\", \"completion\"]");
    let source = dir.path().display().to_string();
    let d = Daemon::start_with_env(&local_config(&source, ""), &[CORP_KEY]);
    wait_for(&d, "the directory policy", |s| s["commit"].is_string()).await;

    // A task the policy does not allow is refused with a 403 that says so.
    let resp = chat(&d, "team", &[("x-tollgate-task", "review")]).await;
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("\"review\" is not allowed"), "{body:#}");

    // The policy directory changes: the watcher applies it.
    write_policy("[\"api\", \"completion\", \"review\"]");
    let deadline = Instant::now() + Duration::from_secs(20);
    while chat(&d, "team", &[("x-tollgate-task", "review")]).await.status() != 200 {
        assert!(Instant::now() < deadline, "the policy edit was not applied:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The local config changes: a new route appears without a restart.
    let config = d.home.path().join("config.toml");
    let extra_route = "[routes.mine]\ntargets = [\"corp/model-mine\"]\n";
    std::fs::write(&config, local_config(&source, extra_route)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while chat(&d, "mine", &[]).await.status() != 200 {
        assert!(Instant::now() < deadline, "the config edit was not applied:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An invalid edit is reported and the previous config stays in force.
    std::fs::write(&config, "[routes.mine\n").unwrap();
    let s = wait_for(&d, "the config error", |s| s["config_error"].is_string()).await;
    assert!(s["config_error"].as_str().unwrap().contains("config.toml"), "{s:#}");
    assert_eq!(served_model(&d, "mine").await, "model-mine");
    let status = d.command().args(["status"]).output().unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("config:   invalid, previous config in force"), "{status}");

    // Attempts to loosen the policy are ignored and reported; tightening applies.
    let loosen = "[redaction]\nmode = \"off\"\n[review]\non_error = \"open\"\nblock_severity = \"info\"\n";
    // (Saved as editors do: a new file renamed over the old one.)
    let saved = d.home.path().join(".config.toml.swp");
    std::fs::write(&saved, local_config(&source, loosen)).unwrap();
    std::fs::rename(&saved, &config).unwrap();
    let s = wait_for(&d, "the ignored settings", |s| {
        s["config_error"].is_null() && s["ignored"].as_array().is_some_and(|i| !i.is_empty())
    })
    .await;
    let ignored: Vec<&str> = s["ignored"].as_array().unwrap().iter().filter_map(|i| i["key"].as_str()).collect();
    assert_eq!(ignored, ["redaction.mode", "review.on_error"], "{s:#}");
    let cfg: Value = d
        .command()
        .args(["config", "show", "--json"])
        .output()
        .map(|o| serde_json::from_slice(&o.stdout).unwrap())
        .unwrap();
    assert_eq!(cfg["review.block_severity"]["value"], "info", "tightening applies: {cfg:#}");
    assert_eq!(cfg["review.on_error"]["value"], "closed");
    let secret = "glpat-ABCDEFGHIJKLMNOPQRST";
    let resp = d
        .client()
        .post(d.url("/v1/chat/completions"))
        .json(&json!({"model": "team", "messages": [{"role": "user", "content": format!("token {secret}")}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let sent = fake.requests().last().unwrap().body.to_string();
    assert!(!sent.contains(secret), "redaction stayed on under the policy: {sent}");

    // The caller names its repository; the project comes from the repository's git remote.
    let repo = tempfile::tempdir().unwrap();
    run_git(repo.path(), &["init", "--quiet"]);
    run_git(repo.path(), &["remote", "add", "origin", "git@gitlab.example.com:acme/web/shop.git"]);
    let sub = repo.path().join("src");
    std::fs::create_dir(&sub).unwrap();
    let resp = chat(&d, "team", &[("x-tollgate-repo", sub.to_str().unwrap())]).await;
    assert_eq!(resp.status(), 200);
    let log: Value = d.client().get(d.url("/v1/log")).send().await.unwrap().json().await.unwrap();
    assert_eq!(log["calls"][0]["project"], "acme/web/shop", "{log:#}");
}

#[test]
fn policy_check_validates_a_checkout_with_file_and_line() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/policy/example");
    let out = Command::new(tollgate_tests::tollgate_bin()).args(["policy", "check"]).arg(&example).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("policy OK"));

    let broken = tempfile::tempdir().unwrap();
    std::fs::write(broken.path().join("policy.toml"), "version = 1\n[review]\nblock_severity = \"severe\"\n").unwrap();
    std::fs::create_dir(broken.path().join("prompts")).unwrap();
    std::fs::write(broken.path().join("prompts/x.md"), "no front matter").unwrap();
    let out =
        Command::new(tollgate_tests::tollgate_bin()).args(["policy", "check"]).arg(broken.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let file = broken.path().join("policy.toml");
    assert!(text.contains(&format!("{}:3:18:", file.display())) && text.contains("severe"), "{text}");
    assert!(text.contains("prompts/x.md:1:1:"), "{text}");

    let out = Command::new(tollgate_tests::tollgate_bin())
        .args(["policy", "check", "--json"])
        .arg(broken.path())
        .output()
        .unwrap();
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["ok"], false);
    assert_eq!(body["problems"].as_array().unwrap().len(), 2, "{body:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_policy_declares_experiments_for_the_team_on_a_route_and_between_prompt_versions() {
    init();
    let fake = FakeProvider::start().await;
    let dir = tempfile::Builder::new().prefix("tg-policy-exp-").tempdir().unwrap();
    let extra = "[routes.ab]\nsplit = { \"corp/model-a\" = 1, \"corp/model-b\" = 1 }\nexperiment = \"team-ab\"\n";
    std::fs::write(dir.path().join("policy.toml"), policy_toml(&fake, "model-a", extra)).unwrap();
    std::fs::create_dir(dir.path().join("prompts")).unwrap();
    let prompt = |version: u32, split: &str, words: &str| {
        format!(
            "+++\ndescription = \"explain\"\nversion = {version}\nmodel = \"team\"\nvariables = [\"code\"]\n{split}+++\n{words}: {{{{code}}}}\n"
        )
    };
    std::fs::write(dir.path().join("prompts/explain.md"), prompt(2, "split = { \"1\" = 1, \"2\" = 1 }\n", "New words"))
        .unwrap();
    std::fs::write(dir.path().join("prompts/explain@1.md"), prompt(1, "", "Old words")).unwrap();
    let source = dir.path().display().to_string();
    let d = Daemon::start_with_env(&local_config(&source, ""), &[CORP_KEY]);
    wait_for(&d, "the directory policy", |s| s["commit"].is_string()).await;

    // The route's arms: each user keeps one; the team sees both.
    let mut arms = std::collections::HashMap::new();
    for round in 0..2 {
        for u in 0..16 {
            let user = format!("dev{u}");
            let resp = chat(&d, "ab", &[("x-tollgate-user", &user)]).await;
            assert_eq!(resp.status(), 200, "{}", d.log());
            let served = resp.headers()["x-tollgate-model"].to_str().unwrap().to_string();
            let named = resp.headers()["x-tollgate-experiment"].to_str().unwrap().to_string();
            assert_eq!(named, format!("team-ab=corp/{served}"));
            let first = arms.entry(user.clone()).or_insert_with(|| served.clone());
            assert_eq!(*first, served, "{user} changed arms in round {round}");
        }
    }
    let on_a = arms.values().filter(|m| *m == "model-a").count();
    assert_eq!(on_a, 8, "a shared daemon keeps a 1:1 split to the user: {arms:?}");

    // The prompt's versions: each user gets one version's words, and the answer names the arm.
    let mut versions = std::collections::HashMap::new();
    for u in 0..8 {
        let user = format!("dev{u}");
        for _ in 0..2 {
            let answer: Value = d
                .client()
                .post(d.url("/v1/prompts/explain"))
                .header("x-tollgate-user", &user)
                .json(&json!({"variables": {"code": "let x = 1;"}}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let version = answer["version"].as_u64().unwrap_or_else(|| panic!("{answer:#}"));
            let words = if version == 1 { "Old words: let x = 1;" } else { "New words: let x = 1;" };
            assert!(answer["text"].as_str().unwrap().contains(words), "{answer:#}");
            assert_eq!(answer["arm"], format!("prompt explain: v{version}"), "{answer:#}");
            assert_eq!(*versions.entry(user.clone()).or_insert(version), version, "{user} changed versions");
        }
    }
    assert_eq!(versions.values().filter(|v| **v == 1).count(), 4, "{versions:?}");
}
