//! Reviews end to end: a real repository with a real bare remote; `git push` runs the installed
//! pre-push hook, which asks the daemon, which asks a fake provider for structured findings. And a
//! merge request review in a CI-like environment posting discussions to a fake GitLab API.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};
use tollgate_tests::fake::{Behaviour, FakeProvider};
use tollgate_tests::gitlab::FakeGitlab;
use tollgate_tests::{Daemon, ENV_KEYS, init, standard_config};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = git_out(dir, args, &[]);
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn git_out(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "Dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        .envs(envs.iter().copied())
        .output()
        .expect("run git")
}

const LIB: &str = "pub fn total(items: &[u32]) -> u32 {\n    let mut sum = 0;\n    for i in items {\n        sum += i;\n    }\n    sum\n}\n";

/// A bare remote with `main`, and a clone of it (so `origin/HEAD` is known).
fn repos() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::Builder::new().prefix("tg-review-").tempdir().unwrap();
    let seed = dir.path().join("seed");
    std::fs::create_dir_all(seed.join("src")).unwrap();
    git(dir.path(), &["init", "--quiet", "--bare", "--initial-branch=main", "remote.git"]);
    git(&seed, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(seed.join("src/lib.rs"), LIB).unwrap();
    git(&seed, &["add", "-A"]);
    git(&seed, &["commit", "--quiet", "-m", "first"]);
    git(&seed, &["push", "--quiet", "../remote.git", "main"]);
    git(dir.path(), &["clone", "--quiet", "remote.git", "work"]);
    let work = dir.path().join("work");
    (dir, work)
}

fn findings(items: Value) -> Behaviour {
    Behaviour { text: Some(json!({ "findings": items }).to_string()), ..Default::default() }
}

fn review_config(fake: &FakeProvider, extra: &str) -> String {
    standard_config(fake, fake, &format!("[routes.review]\ntargets = [\"oa/gpt-a\"]\n{extra}"))
}

/// Changes src/lib.rs so that lines 3 and 4 are new, commits on `branch`.
fn commit_change(work: &Path, branch: &str, body: &str) -> String {
    git(work, &["checkout", "--quiet", "-B", branch]);
    let text = LIB.replace("    for i in items {\n        sum += i;\n", body);
    std::fs::write(work.join("src/lib.rs"), text).unwrap();
    git(work, &["commit", "--quiet", "-am", "change"]);
    git(work, &["rev-parse", "HEAD"])
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pre_push_hook_blocks_a_serious_finding_and_lets_a_clean_push_through() {
    init();
    let fake = FakeProvider::start().await;
    let d = Daemon::start_with_env(&review_config(&fake, ""), ENV_KEYS);
    let (_dir, work) = repos();
    let home = d.home.path().to_str().unwrap().to_string();
    let env: Vec<(&str, &str)> = ENV_KEYS.iter().copied().chain([("TOLLGATE_HOME", home.as_str())]).collect();

    // An existing pre-push hook is kept and chained: it runs first and sees the same refs.
    let hooks = work.join(".git/hooks");
    std::fs::write(hooks.join("pre-push"), "#!/bin/sh\ncat > \"$(dirname \"$0\")/../chained-saw\"\n").unwrap();
    Command::new("chmod").arg("755").arg(hooks.join("pre-push")).status().unwrap();
    let out = d.command().current_dir(&work).args(["hooks", "install", "--pre-push"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A new branch with an off-by-one: the model first answers prose, then (asked again with
    // the error quoted) the JSON, with one finding on a changed line and one outside them.
    let sha = commit_change(&work, "feature", "    for i in 0..=items.len() {\n        sum += items[i];\n");
    fake.script([
        Behaviour { text: Some("Sure! The loop reads past the end.".into()), ..Default::default() },
        findings(json!([
            {"path": "src/lib.rs", "line": 4, "severity": "high", "category": "bug",
             "message": "items[i] panics when i == items.len()", "suggestion": "        sum += items.get(i).copied().unwrap_or(0);"},
            {"path": "src/lib.rs", "line": 1, "severity": "critical", "category": "bug", "message": "not a changed line"},
        ])),
    ]);
    let before = fake.request_count();
    let out = git_out(&work, &["push", "origin", "feature"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the push went through:\n{stderr}");
    assert!(stderr.contains("src/lib.rs:4: high: items[i] panics when i == items.len() [bug]"), "{stderr}");
    assert!(stderr.contains("|         sum += items[i];"), "{stderr}");
    assert!(stderr.contains("git push --no-verify") && stderr.contains("TOLLGATE_SKIP_REVIEW=1"), "{stderr}");
    assert!(!stderr.contains("not a changed line"), "{stderr}");
    assert_eq!(fake.request_count() - before, 2, "one review and one repair");
    let repair = fake.requests().last().unwrap().body.to_string();
    assert!(repair.contains("Your answer could not be used") && repair.contains("no JSON object"), "{repair}");
    let first = &fake.requests()[before].body;
    assert!(
        first.to_string().contains("pub fn total(items: &[u32]) -> u32"),
        "the enclosing function is sent: {first}"
    );
    assert!(git(&work, &["ls-remote", "origin", "feature"]).is_empty(), "the branch reached the remote");
    let saw = std::fs::read_to_string(work.join(".git/chained-saw")).unwrap();
    assert!(saw.contains(&sha), "the chained hook did not get the refs: {saw:?}");

    // The fix: the model finds only a low-severity nit, which does not block.
    commit_change(&work, "feature", "    for i in items.iter() {\n        sum += *i;\n");
    fake.script([findings(json!([{"line": 3, "severity": "low", "category": "maintainability", "message": "items.iter().sum() says this in one line"}]))]);
    let out = git_out(&work, &["push", "origin", "feature"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a clean push was blocked:\n{stderr}");
    assert!(stderr.contains("src/lib.rs:3: low: items.iter().sum()"), "{stderr}");
    assert!(!git(&work, &["ls-remote", "origin", "feature"]).is_empty());

    // Reviewing the same change again costs nothing: every chunk comes from the cache.
    let before = fake.request_count();
    let out =
        d.command().current_dir(&work).args(["review", "origin/main..feature", "--format", "json"]).output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["chunks"].as_u64(), report["cached"].as_u64()), (Some(1), Some(1)), "{report:#}");
    assert_eq!(fake.request_count(), before);
    assert_eq!(out.status.code(), Some(0));

    // The provider fails: the push goes through with a warning (fail-open by default)...
    commit_change(&work, "other", "    for i in items.iter().rev() {\n        sum += i;\n");
    let failing = Behaviour { status: Some(500), ..Default::default() };
    fake.script(std::iter::repeat_n(failing.clone(), 8));
    let out = git_out(&work, &["push", "origin", "other"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning: the review could not run"), "{stderr}");

    // ...and is blocked when the config says fail closed.
    std::fs::write(d.home.path().join("config.toml"), review_config(&fake, "[review]\non_error = \"closed\"\n"))
        .unwrap();
    commit_change(&work, "third", "    for i in items.iter().skip(0) {\n        sum += i;\n");
    fake.script(std::iter::repeat_n(failing, 8));
    let out = git_out(&work, &["push", "origin", "third"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("fails closed"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_merge_request_review_writes_code_quality_and_keeps_one_discussion_per_finding() {
    init();
    let fake = FakeProvider::start().await;
    let (dir, work) = repos();
    let base = git(&work, &["rev-parse", "HEAD"]);
    let head = commit_change(&work, "feature", "    for i in 0..=items.len() {\n        sum += items[i];\n");
    let gitlab =
        FakeGitlab::start(dir.path().join("remote.git"), "acme/shop", "glpat-FAKEfake0000000000000", "ci", &[]).await;
    *gitlab.state.diff_refs.lock().unwrap() = (base.clone(), base.clone(), head.clone());

    // A CI job: no daemon; the gateway runs in the review process on the CI variables.
    let home = tempfile::tempdir().unwrap();
    // The review route is an experiment of one arm: its reviews are compared by `usage --by arm`.
    let split = "split = { \"oa/gpt-a\" = 1 }\nexperiment = \"review-models\"\n";
    std::fs::write(home.path().join("config.toml"), review_config(&fake, split)).unwrap();
    let api = format!("{}/api/v4", gitlab.url());
    let ci_env = |head: &str| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = ENV_KEYS.iter().map(|(k, val)| (k.to_string(), val.to_string())).collect();
        v.extend(
            [
                ("TOLLGATE_HOME", home.path().to_str().unwrap()),
                ("CI_API_V4_URL", api.as_str()),
                ("CI_PROJECT_ID", "acme/shop"),
                ("CI_PROJECT_PATH", "acme/shop"),
                ("CI_MERGE_REQUEST_IID", "1"),
                ("CI_MERGE_REQUEST_DIFF_BASE_SHA", base.as_str()),
                ("CI_COMMIT_SHA", head),
                ("TOLLGATE_GITLAB_API_KEY", "glpat-FAKEfake0000000000000"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        v
    };
    let run = |head: &str| {
        Command::new(tollgate_tests::tollgate_bin())
            .current_dir(&work)
            .env_remove("TOLLGATE_CONFIG")
            .envs(ci_env(head))
            .args([
                "review",
                "--mr",
                "--post-discussions",
                "--format",
                "gitlab-codequality",
                "-o",
                "gl-code-quality-report.json",
            ])
            .output()
            .unwrap()
    };
    let two = findings(json!([
        {"line": 3, "severity": "medium", "category": "bug", "message": "0..=len runs one past the end"},
        {"line": 4, "severity": "high", "category": "bug", "message": "items[i] panics on the last index", "suggestion": "        sum += items[i - 1];"},
    ]));
    fake.script([two]);
    let out = run(&head);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a high finding fails the job:\n{stderr}");
    assert!(stderr.contains("2 created, 0 updated"), "{stderr}");

    // GitLab's Code Quality format: an array of issues with these fields and severities.
    let cq: Value =
        serde_json::from_str(&std::fs::read_to_string(work.join("gl-code-quality-report.json")).unwrap()).unwrap();
    let issues = cq.as_array().unwrap();
    assert_eq!(issues.len(), 2);
    for issue in issues {
        for key in ["description", "check_name", "fingerprint", "severity"] {
            assert!(issue[key].is_string(), "{key} in {issue}");
        }
        assert!(["info", "minor", "major", "critical", "blocker"].contains(&issue["severity"].as_str().unwrap()));
        assert_eq!(issue["location"]["path"], "src/lib.rs");
        assert!(issue["location"]["lines"]["begin"].as_u64().is_some());
    }
    let discussions = gitlab.state.discussions.lock().unwrap().clone();
    assert_eq!(discussions.len(), 2);
    let note = &discussions[1].notes[0];
    assert_eq!(note.position["new_line"], 4);
    assert_eq!(note.position["head_sha"], head.as_str());
    assert!(note.body.contains("```suggestion"), "{}", note.body);

    // A new push fixes the first finding; the second stays, worded the same: its discussion is
    // kept (not duplicated) and the first one is resolved.
    let head2 = commit_change(&work, "feature", "    for i in 0..items.len() {\n        sum += items[i];\n");
    *gitlab.state.diff_refs.lock().unwrap() = (base.clone(), base.clone(), head2.clone());
    fake.script([findings(json!([
        {"line": 4, "severity": "high", "category": "bug", "message": "items[i] panics on the last index", "suggestion": "        sum += items[i - 1];"},
    ]))]);
    let out = run(&head2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("0 created") && stderr.contains("1 resolved"), "{stderr}");
    let discussions = gitlab.state.discussions.lock().unwrap().clone();
    assert_eq!(discussions.len(), 2, "no duplicate discussion");
    assert!(discussions[0].notes[0].resolved && !discussions[1].notes[0].resolved);

    // Reworded on a third run (the code of line 4 unchanged): the same discussion is updated.
    let head3 = commit_change(&work, "feature", "    for i in 0..(items.len()) {\n        sum += items[i];\n");
    *gitlab.state.diff_refs.lock().unwrap() = (base.clone(), base.clone(), head3.clone());
    fake.script([findings(json!([
        {"line": 4, "severity": "high", "category": "bug", "message": "items[i] is out of bounds on the last pass", "suggestion": "        sum += items[i];"},
    ]))]);
    let out = run(&head3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("0 created, 1 updated"), "{stderr}");
    assert_eq!(gitlab.state.discussions.lock().unwrap().len(), 2);

    // Someone resolves the remaining discussion by hand, the code unchanged: the finding is
    // dismissed. The next run leaves it resolved and counts it once; the run after does not again.
    gitlab.state.discussions.lock().unwrap()[1].notes[0].resolved = true;
    let same = findings(json!([
        {"line": 4, "severity": "high", "category": "bug", "message": "items[i] is out of bounds on the last pass", "suggestion": "        sum += items[i];"},
    ]));
    for dismissed in ["1 dismissed", "0 dismissed"] {
        fake.script([same.clone()]);
        let out = run(&head3);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("0 reopened") && stderr.contains(dismissed), "{stderr}");
        let discussions = gitlab.state.discussions.lock().unwrap().clone();
        assert!(discussions[1].notes[0].resolved, "a dismissed finding stays resolved");
    }

    // The arm's reviews, compared by `usage --by arm`: five runs of one chunk, six findings kept,
    // one dismissed.
    let out = Command::new(tollgate_tests::tollgate_bin())
        .env_remove("TOLLGATE_CONFIG")
        .envs(ci_env(&head3))
        .args(["usage", "--since", "1h", "--by", "arm", "--json"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let line = report["lines"].as_array().unwrap().iter().find(|l| l["key"] == "review-models: oa/gpt-a");
    let review = &line.unwrap_or_else(|| panic!("{report:#}"))["review"];
    assert_eq!((review["chunks"].as_u64(), review["findings"].as_u64()), (Some(5), Some(6)), "{report:#}");
    assert_eq!(review["dismissed"], 1, "{report:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn prompt_tasks_run_from_the_cli_and_the_native_endpoint() {
    init();
    let fake = FakeProvider::start().await;
    let d = Daemon::start_with_env(
        &standard_config(
            &fake,
            &fake,
            "[routes.code]\ntargets = [\"oa/gpt-a\"]\n[routes.fast]\ntargets = [\"oa/gpt-a\"]\n",
        ),
        ENV_KEYS,
    );
    let (_dir, work) = repos();

    fake.script([Behaviour { text: Some("It adds the items.".into()), ..Default::default() }]);
    let out = d.command().current_dir(&work).args(["explain", "src/lib.rs:1-3"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "It adds the items.");
    let sent = fake.requests().last().unwrap().body.to_string();
    assert!(
        sent.contains("```rust\\npub fn total") && !sent.contains("    sum\\n}"),
        "only lines 1-3 are sent: {sent}"
    );

    std::fs::write(work.join("src/lib.rs"), LIB.replace("sum\n}", "sum // total\n}")).unwrap();
    git(&work, &["add", "-A"]);
    fake.script([Behaviour { text: Some("Document the total".into()), ..Default::default() }]);
    let out = d.command().current_dir(&work).args(["commit-message", "--json"]).output().unwrap();
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (answer["text"].as_str(), answer["prompt"].as_str()),
        (Some("Document the total"), Some("commit-message"))
    );
    assert!(fake.requests().last().unwrap().body.to_string().contains("sum // total"));

    // The native endpoint: variables checked, the task recorded in the ledger.
    let resp = d
        .client()
        .post(d.url("/v1/prompts/docs"))
        .json(&json!({"variables": {"code": "fn f() {}"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("needs the variable"), "{body}");
    let resp = d.client().post(d.url("/v1/prompts/nope")).json(&json!({})).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = d
        .client()
        .post(d.url("/v1/prompts/tests"))
        .json(&json!({"variables": {"code": "fn f() {}", "language": "rust", "path": "src/f.rs"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!((answer["prompt"].as_str(), answer["version"].as_u64()), (Some("tests"), Some(1)));
    let log: Value = d.client().get(d.url("/v1/log")).send().await.unwrap().json().await.unwrap();
    assert_eq!(log["calls"][0]["task"], "tests");
}
