//! End to end: secrets and personal data never leave the machine. The fake provider records what
//! reached it; the caller gets the values back; the database, the audit log and the daemon's log
//! hold only placeholders. Also `tollgate scan` and the pre-commit hook with real git.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use tollgate_tests::fake::{Behaviour, FakeProvider};
use tollgate_tests::{Daemon, ENV_KEYS, init, sse_events, standard_config, tollgate_bin};

// Fake values shaped like real ones.
const PAT: &str = "glpat-riGp_58WAm-dX3a5IDnO";
const MAIL: &str = "raj.patel54@acme.io";
const AWS: &str = "AKIA4QV7HNFCAA6UYSMZ";

async fn setup(extra: &str) -> (FakeProvider, Daemon) {
    init();
    let a = FakeProvider::start().await;
    let b = FakeProvider::start().await;
    let d = Daemon::start_with_env(&standard_config(&a, &b, extra), ENV_KEYS);
    (a, d)
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

fn assert_clean(what: &str, bytes: &[u8]) {
    for secret in [PAT, MAIL, AWS] {
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{what} contains {secret}");
    }
}

fn stream_text(body: &str) -> String {
    sse_events(body)
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn providers_see_placeholders_and_callers_get_their_values_back() {
    let (a, d) = setup("[audit]\nenabled = true\nretention_days = 7").await;
    let prompt = format!("deploy with {PAT} and mail {MAIL}; key {AWS}");
    let body = json!({"model": "oa/gpt-4.1", "temperature": 0, "messages": [{"role": "user", "content": prompt}]});
    let r = d.client().post(d.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(header(&r, "x-tollgate-redactions"), "aws_access_key_id=1,email=1,gitlab_pat=1");
    let v: Value = r.json().await.unwrap();
    // The fake echoes what it was sent: placeholders, which the gateway restored.
    assert!(v["choices"][0]["message"]["content"].as_str().unwrap().ends_with(&format!("You said: {prompt}")), "{v}");
    let sent = &a.requests()[0].body;
    assert_eq!(
        sent["messages"][0]["content"],
        "deploy with TOLLGATE_GITLAB_PAT_1 and mail TOLLGATE_EMAIL_1; key TOLLGATE_AWS_ACCESS_KEY_ID_1"
    );
    assert_clean("the provider's request", sent.to_string().as_bytes());

    // Streamed in 3-character chunks: every placeholder is cut across chunks.
    a.script([Behaviour { chunk_chars: Some(3), ..Default::default() }]);
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["messages"][0]["content"] = json!(format!("again {PAT} for {MAIL}"));
    let r = d.client().post(d.url("/v1/chat/completions")).json(&streamed).send().await.unwrap();
    let text = stream_text(&r.text().await.unwrap());
    assert!(text.ends_with(&format!("You said: again {PAT} for {MAIL}")), "{text}");

    // The Anthropic door too.
    let r = d
        .client()
        .post(d.url("/v1/messages"))
        .json(&json!({"model": "an/claude-x", "max_tokens": 50, "messages": [{"role": "user", "content": format!("hi {MAIL}")}]}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert!(v["content"][0]["text"].as_str().unwrap().ends_with(&format!("hi {MAIL}")));
    // Passed through to the Anthropic target as the caller wrote it (a string), masked.
    assert_eq!(a.requests().last().unwrap().body["messages"][0]["content"], "hi TOLLGATE_EMAIL_1");

    // A cache hit restores with the new request's own values.
    let r = d.client().post(d.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(header(&r, "x-tollgate-cache"), "hit");
    assert!(r.text().await.unwrap().contains(PAT));

    // Nothing the gateway keeps holds a value: database (cache, ledger, audit), log.
    let log = d.command().args(["log", "--limit", "10", "--json"]).output().unwrap();
    assert_clean("tollgate log", &log.stdout);
    let calls = serde_json::from_slice::<Value>(&log.stdout).unwrap()["calls"].as_array().unwrap().clone();
    // The first call (the provider's answer; a cache hit keeps no audit entry of its own).
    let id = calls.last().unwrap()["request_id"].as_str().unwrap().to_string();
    let call: Value =
        serde_json::from_slice(&d.command().args(["log", &id, "--json"]).output().unwrap().stdout).unwrap();
    assert_clean("tollgate log <id>", call.to_string().as_bytes());
    assert!(call["note"].as_str().unwrap().contains("redacted: "), "{call}");
    let mut d = d;
    d.kill();
    for f in ["tollgate.db", "tollgate.db-wal", "daemon.log"] {
        if let Ok(bytes) = std::fs::read(d.home.path().join(f)) {
            assert_clean(f, &bytes);
        }
    }
    // The ledger's journal (rows on their way to the database).
    for e in std::fs::read_dir(d.home.path().join("tollgate.db.rows")).unwrap() {
        let path = e.unwrap().path();
        assert_clean(&path.display().to_string(), &std::fs::read(&path).unwrap());
    }
    // The audit log keeps the placeholders (sealed on disk, opened for `tollgate log`).
    assert!(call["request"].to_string().contains("TOLLGATE_GITLAB_PAT_"), "{call}");
}

#[tokio::test(flavor = "multi_thread")]
async fn names_a_team_lists_are_masked_and_come_back_in_the_answer() {
    let (a, d) = setup("[redaction]\nmode = \"mask\"\nnames = [\"Ingrid Nakamura-Ruiz\"]").await;
    let prompt = "Write a thank-you note to ingrid nakamura-ruiz for the release.";
    let body = json!({"model": "oa/gpt-4.1", "messages": [{"role": "user", "content": prompt}]});
    let r = d.client().post(d.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(header(&r, "x-tollgate-redactions"), "person_name=1");
    let v: Value = r.json().await.unwrap();
    assert!(v["choices"][0]["message"]["content"].as_str().unwrap().ends_with(prompt), "{v}");
    assert_eq!(
        a.requests()[0].body["messages"][0]["content"],
        "Write a thank-you note to TOLLGATE_PERSON_NAME_1 for the release."
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_placeholder_in_a_url_stays_a_placeholder_and_tool_arguments_are_restored() {
    let (a, d) = setup("").await;
    a.script([Behaviour {
        text: Some("Use TOLLGATE_GITLAB_PAT_1 here but never https://evil.example/c?t=TOLLGATE_GITLAB_PAT_1".into()),
        chunk_chars: Some(5),
        ..Default::default()
    }]);
    let body = json!({"model": "oa/gpt-4.1", "stream": true, "messages": [{"role": "user", "content": format!("token {PAT}")}]});
    let r = d.client().post(d.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    let text = stream_text(&r.text().await.unwrap());
    assert_eq!(text, format!("Use {PAT} here but never https://evil.example/c?t=TOLLGATE_GITLAB_PAT_1"));

    a.script([Behaviour {
        tool_call: Some(("clone".into(), json!({"token": "TOLLGATE_GITLAB_PAT_1", "n": 1}))),
        ..Default::default()
    }]);
    let body = json!({"model": "an/claude-x", "messages": [{"role": "user", "content": format!("clone with {PAT}")}],
        "tools": [{"type": "function", "function": {"name": "clone", "parameters": {"type": "object"}}}]});
    let v: Value =
        d.client().post(d.url("/v1/chat/completions")).json(&body).send().await.unwrap().json().await.unwrap();
    let args: Value =
        serde_json::from_str(v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"].as_str().unwrap())
            .unwrap();
    assert_eq!(args, json!({"token": PAT, "n": 1}));
}

#[tokio::test(flavor = "multi_thread")]
async fn block_mode_refuses_and_off_sends_raw_text_to_local_models_only() {
    let extra = "[redaction]\nmode = \"block\"\n[routes.raw]\ntargets = [\"ol/qwen\"]\nredaction = \"off\"\n";
    let (a, d) = setup(extra).await;
    let body =
        json!({"model": "oa/gpt-4.1", "messages": [{"role": "user", "content": format!("line one\nmy key {AWS}")}]});
    let r = d.client().post(d.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let msg = r.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("aws-access-key-id") && msg.contains("messages[0]") && msg.contains("line 2"), "{msg}");
    assert!(!msg.contains(AWS));
    assert_eq!(a.request_count(), 0, "nothing was sent");

    let mut raw = body.clone();
    raw["model"] = json!("raw");
    let r = d.client().post(d.url("/v1/chat/completions")).json(&raw).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        a.requests()[0].body["messages"][0]["content"].as_str().unwrap().contains(AWS),
        "off sends the text as it is"
    );

    // Off on a route with a cloud target is refused at start.
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        "[routes.bad]\ntargets = [\"openai/gpt-4.1\"]\nredaction = \"off\"\n",
    )
    .unwrap();
    let out = Command::new(tollgate_bin())
        .env("TOLLGATE_HOME", home.path())
        .args(["daemon", "--port", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("routes.bad.redaction"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ------------------------------------------------------------------------------- tollgate scan

fn corpus() -> std::path::PathBuf {
    std::env::var_os("TOLLGATE_CORPUS")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus"), Into::into)
}

fn tollgate(dir: &Path, args: &[&str]) -> std::process::Output {
    let home = dir.join(".tollgate-home");
    Command::new(tollgate_bin()).current_dir(dir).env("TOLLGATE_HOME", home).args(args).output().unwrap()
}

#[test]
fn scan_reports_byte_exact_findings_in_every_format_and_never_the_secret() {
    let dir = corpus().join("secrets");
    let out = tollgate(Path::new("."), &["scan", dir.to_str().unwrap(), "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "findings exit with 1");
    let findings: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let labels = std::fs::read_to_string(dir.join("labels.jsonl")).unwrap();
    for line in labels.lines().filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap();
        let file = dir.join(v["file"].as_str().unwrap());
        let text = std::fs::read(&file).unwrap();
        for s in v["secrets"].as_array().unwrap() {
            let value = s["value"].as_str().unwrap().as_bytes();
            let pos = text.windows(value.len()).position(|w| w == value).unwrap();
            let covered = findings.iter().any(|f| {
                Path::new(f["path"].as_str().unwrap()) == file
                    && f["start_byte"].as_u64().unwrap() as usize <= pos
                    && f["end_byte"].as_u64().unwrap() as usize >= pos + value.len()
            });
            assert!(covered, "{} not reported with byte offsets covering it", file.display());
        }
    }
    let f = &findings[0];
    for key in ["path", "line", "column", "start_byte", "end_byte", "rule", "kind"] {
        assert!(f.get(key).is_some(), "{key} missing in {f}");
    }

    let clean = tollgate(Path::new("."), &["scan", dir.join("neg_000.txt").to_str().unwrap()]);
    assert_eq!(clean.status.code(), Some(0));

    let text = tollgate(Path::new("."), &["scan", dir.join("pos_015_github_pat.txt").to_str().unwrap()]);
    let s = String::from_utf8_lossy(&text.stdout);
    assert!(s.contains("pos_015_github_pat.txt:") && s.contains(": github-pat (github_pat): ghp_… (40 chars)"), "{s}");

    let sarif = tollgate(Path::new("."), &["scan", dir.to_str().unwrap(), "--format", "sarif"]);
    let v: Value = serde_json::from_slice(&sarif.stdout).unwrap();
    assert_eq!(v["version"], "2.1.0");
    let results = v["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), findings.len());
    assert!(results[0]["locations"][0]["physicalLocation"]["region"]["startLine"].as_u64().unwrap() >= 1);
    let rules = v["runs"][0]["tool"]["driver"]["rules"].as_array().unwrap();
    assert!(results.iter().all(|r| rules.iter().any(|rule| rule["id"] == r["ruleId"])));

    let gitlab = tollgate(Path::new("."), &["scan", dir.to_str().unwrap(), "--format", "gitlab"]);
    let v: Value = serde_json::from_slice(&gitlab.stdout).unwrap();
    assert_eq!(v["scan"]["type"], "secret_detection");
    assert_eq!(v["scan"]["status"], "success");
    assert!(v["scan"]["start_time"].as_str().unwrap().len() == 19, "YYYY-MM-DDTHH:MM:SS");
    let vulns = v["vulnerabilities"].as_array().unwrap();
    assert_eq!(vulns.len(), findings.len());
    for vuln in vulns {
        assert!(vuln["id"].as_str().unwrap().len() == 64);
        assert!(vuln["location"]["file"].is_string() && vuln["location"]["start_line"].is_u64());
        assert!(!vuln["identifiers"].as_array().unwrap().is_empty());
    }
    for (name, out) in [("text", &text), ("sarif", &sarif), ("gitlab", &gitlab)] {
        assert_clean(name, &out.stdout);
    }

    // Standard input.
    let mut child = Command::new(tollgate_bin())
        .args(["scan", "-", "--format", "json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(format!("a\nkey = \"{PAT}\"\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let v: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v[0]["path"].as_str(), v[0]["line"].as_u64(), v[0]["start_byte"].as_u64()),
        (Some("-"), Some(2), Some(9))
    );
}

#[test]
fn secrets_only_leaves_personal_data_and_kinds_turned_off_are_not_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fixture.py");
    std::fs::write(&file, format!("AUTHOR = 'raj.patel54@acme.io'\nDEVICE = '3c:22:fb:8a:10:4e'\nTOKEN = '{PAT}'\n"))
        .unwrap();
    let kinds_of = |out: &std::process::Output| -> Vec<String> {
        let v: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
        v.iter().map(|f| f["kind"].as_str().unwrap().to_string()).collect()
    };
    let all = tollgate(dir.path(), &["scan", file.to_str().unwrap(), "--format", "json"]);
    assert_eq!(kinds_of(&all), ["email", "mac_address", "gitlab_pat"]);
    let secrets = tollgate(dir.path(), &["scan", "--secrets-only", file.to_str().unwrap(), "--format", "json"]);
    assert_eq!(kinds_of(&secrets), ["gitlab_pat"]);
    assert_eq!(secrets.status.code(), Some(1), "a secret still fails the scan");

    // A kind turned off in the config is not looked for; an unknown one is an error that says so.
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[redaction]\nmode = \"mask\"\noff_kinds = [\"mac_address\"]\n").unwrap();
    let cfg = config.to_str().unwrap();
    let off = tollgate(dir.path(), &["--config", cfg, "scan", file.to_str().unwrap(), "--format", "json"]);
    assert_eq!(kinds_of(&off), ["email", "gitlab_pat"]);
    std::fs::write(&config, "[redaction]\nmode = \"mask\"\noff_kinds = [\"mac_adress\"]\n").unwrap();
    let typo = tollgate(dir.path(), &["--config", cfg, "scan", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&typo.stderr);
    assert!(!typo.status.success() && err.contains("mac_adress") && err.contains("--kinds"), "{err}");

    // A phone number without its country code is looked for where the config names the country.
    std::fs::write(&file, "SUPPORT = 'call (415) 722-0134 after nine'\n").unwrap();
    let plain = tollgate(dir.path(), &["scan", file.to_str().unwrap(), "--format", "json"]);
    assert!(kinds_of(&plain).is_empty(), "national formats are off by default");
    std::fs::write(&config, "[redaction]\nmode = \"mask\"\ncountries = [\"US\"]\n").unwrap();
    let us = tollgate(dir.path(), &["--config", cfg, "scan", file.to_str().unwrap(), "--format", "json"]);
    assert_eq!(kinds_of(&us), ["phone"]);

    // A team's existing rules of another scanner come along (here Kingfisher's YAML).
    let rules = dir.path().join("acme.yaml");
    std::fs::write(
        &rules,
        "rules:\n  - name: Acme Deploy Key\n    id: acme.deploy.1\n    pattern: '\\b(acmedk_[a-z0-9]{32})\\b'\n    min_entropy: 3.0\n",
    )
    .unwrap();
    std::fs::write(
        &config,
        format!("[redaction]\nmode = \"mask\"\nrule_files = [{:?}]\n", rules.display().to_string()),
    )
    .unwrap();
    std::fs::write(&file, "KEY = 'acmedk_4f9a8c7b6d5e4f3a2b1c0d9e8f7a6b5c'\n").unwrap();
    let theirs = tollgate(dir.path(), &["--config", cfg, "scan", file.to_str().unwrap(), "--format", "json"]);
    assert_eq!(kinds_of(&theirs), ["acme_deploy_key"]);

    // A GitHub token whose checksum holds is reported as such; one that fails it is made up, and
    // --skip-fakes leaves it out (both are random: neither is anyone's token).
    std::fs::write(
        &file,
        "A = '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'\nB = 'ghp_JN6U6PrPod6eWGP4xkGXY4nttSt2JxkSSVDM'\n",
    )
    .unwrap();
    let out = tollgate(dir.path(), &["scan", file.to_str().unwrap(), "--format", "json"]);
    let v: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let checks: Vec<&str> = v.iter().map(|f| f["checksum"].as_str().unwrap()).collect();
    assert_eq!(checks, ["valid", "invalid"]);
    let real_only = tollgate(dir.path(), &["scan", "--skip-fakes", file.to_str().unwrap(), "--format", "json"]);
    let v: Vec<Value> = serde_json::from_slice(&real_only.stdout).unwrap();
    assert_eq!((v.len(), v[0]["line"].as_u64()), (1, Some(1)));

    // The kinds, for choosing what to turn off.
    let kinds = tollgate(dir.path(), &["scan", "--kinds", "--format", "json"]);
    let list: Vec<Value> = serde_json::from_slice(&kinds.stdout).unwrap();
    assert!(list.len() >= 300, "{} kinds", list.len());
    let mac = list.iter().find(|k| k["kind"] == "mac_address").expect("mac_address listed");
    assert_eq!(mac["category"], "personal");
}

fn git(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Dev")
        .env("GIT_AUTHOR_EMAIL", "dev@tollgate.invalid")
        .env("GIT_COMMITTER_NAME", "Dev")
        .env("GIT_COMMITTER_EMAIL", "dev@tollgate.invalid")
        .env(
            "PATH",
            format!("{}:{}", tollgate_bin().parent().unwrap().display(), std::env::var("PATH").unwrap_or_default()),
        )
        .env("TOLLGATE_HOME", dir.join(".git").join("tollgate-home"))
        .args(args)
        .output()
        .unwrap()
}

fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    assert!(git(dir.path(), &["init", "-q", "-b", "main"]).status.success());
    std::fs::write(dir.path().join("app.py"), format!("OLD = \"{PAT}\"  # tollgate:allow\nprint('hi')\n")).unwrap();
    git(dir.path(), &["add", "."]);
    assert!(git(dir.path(), &["commit", "-qm", "init"]).status.success());
    dir
}

#[test]
fn staged_scans_only_the_lines_a_commit_adds() {
    let dir = repo();
    // An old secret (allowed when committed) stays; the marker goes; a new one is added.
    std::fs::write(dir.path().join("app.py"), format!("OLD = \"{PAT}\"\nprint('hi')\nNEW = \"{AWS}\"\n")).unwrap();
    git(dir.path(), &["add", "app.py"]);
    let out = tollgate(dir.path(), &["scan", "--staged", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let lines: Vec<u64> = v.iter().map(|f| f["line"].as_u64().unwrap()).collect();
    // Line 1 changed too (the marker went), so it is an added line; line 2 is untouched.
    assert_eq!(lines, vec![1, 3]);
    assert!(v.iter().all(|f| f["path"] == "app.py"));
}

#[test]
fn the_pre_commit_hook_blocks_a_secret_and_lets_a_clean_commit_through() {
    let dir = repo();
    // An existing hook is kept and chained.
    let hooks = dir.path().join(".git/hooks");
    std::fs::write(hooks.join("pre-commit"), "#!/bin/sh\necho ran >> \"$(git rev-parse --git-dir)/chained-ran\"\n")
        .unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(hooks.join("pre-commit")).unwrap().permissions(),
        0o755,
    );
    Command::new("chmod").args(["+x", hooks.join("pre-commit").to_str().unwrap()]).status().unwrap();
    let out = tollgate(dir.path(), &["hooks", "install", "--pre-commit"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("existing hook now runs first"));

    std::fs::write(dir.path().join("config.env"), format!("TOKEN={PAT}\n")).unwrap();
    git(dir.path(), &["add", "config.env"]);
    let commit = git(dir.path(), &["commit", "-qm", "add config"]);
    assert!(!commit.status.success(), "a commit with a secret is blocked");
    let said = String::from_utf8_lossy(&commit.stdout).to_string() + &String::from_utf8_lossy(&commit.stderr);
    assert!(said.contains("config.env:1:7: gitlab-pat"), "{said}");
    assert!(!said.contains(PAT), "the hook's output shows no secret");
    assert!(dir.path().join(".git/chained-ran").exists(), "the previous hook ran first");

    std::fs::write(dir.path().join("config.env"), "TOKEN=${GITLAB_TOKEN}\n").unwrap();
    // An author's address in a source file is personal data, not a secret: it does not block.
    std::fs::write(dir.path().join("AUTHORS"), "Raj Patel <raj.patel54@acme.io>\n").unwrap();
    git(dir.path(), &["add", "config.env", "AUTHORS"]);
    let commit = git(dir.path(), &["commit", "-qm", "add config"]);
    assert!(commit.status.success(), "{}", String::from_utf8_lossy(&commit.stderr));

    // core.hooksPath is where git looks, so that is where the hook goes.
    let other = repo();
    git(other.path(), &["config", "core.hooksPath", ".githooks"]);
    assert!(tollgate(other.path(), &["hooks", "install", "--pre-commit"]).status.success());
    assert!(other.path().join(".githooks/pre-commit").exists());
    std::fs::write(other.path().join("k.txt"), format!("{AWS}\n")).unwrap();
    git(other.path(), &["add", "k.txt"]);
    assert!(!git(other.path(), &["commit", "-qm", "k"]).status.success());
    // Uninstall puts things back.
    let out = tollgate(dir.path(), &["hooks", "uninstall", "--pre-commit"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("put the previous one back"));
    assert!(!std::fs::read_to_string(hooks.join("pre-commit")).unwrap().contains("tollgate"));
}
