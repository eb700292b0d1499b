//! Support for tollgate's end-to-end tests: fakes of the cloud providers ([`fake`]) and a harness
//! that starts the real `tollgate` binary in an isolated `TOLLGATE_HOME` ([`Daemon`]).

pub mod fake;
pub mod gitlab;
pub mod postgres;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Fake keys for the providers of [`standard_config`]; shaped like real ones, never real.
pub const ENV_KEYS: &[(&str, &str)] = &[
    ("TOLLGATE_OA_API_KEY", "sk-test-oa-0000000000000000"),
    ("TOLLGATE_OB_API_KEY", "sk-test-ob-0000000000000000"),
    ("TOLLGATE_AN_API_KEY", "sk-ant-test-an-000000000000"),
    ("TOLLGATE_GE_API_KEY", "AIzaTestGe000000000000000000"),
];

/// Providers of every kind on fake `a`, a second OpenAI-compatible provider on fake `b`, and the
/// routes `pair` (a then b), `mixed` (cloud then local) and `cloud`; `extra` is appended.
pub fn standard_config(a: &fake::FakeProvider, b: &fake::FakeProvider, extra: &str) -> String {
    format!(
        r#"
[keychain]
backend = "env"
[limits]
first_byte_timeout_ms = 1500
stream_idle_timeout_ms = 1500
[retry]
attempts_per_target = 2
backoff_base_ms = 10
backoff_max_ms = 20
max_retry_after_ms = 3000
[circuit]
failure_threshold = 3
open_ms = 60000
[privacy]
local_only_paths = ["**/secrets/**"]
[providers.oa]
kind = "openai"
base_url = "{a}/v1"
local = false
[providers.ob]
kind = "openai"
base_url = "{b}/v1"
local = false
[providers.an]
kind = "anthropic"
base_url = "{a}"
local = false
[providers.ge]
kind = "gemini"
base_url = "{a}"
local = false
[providers.ol]
kind = "ollama"
base_url = "{a}"
[routes.pair]
targets = ["oa/gpt-a", "ob/gpt-b"]
[routes.mixed]
targets = ["oa/gpt-a", "ol/qwen-local"]
[routes.cloud]
targets = ["oa/gpt-a", "an/claude-x"]
{extra}
"#,
        a = a.url(),
        b = b.url()
    )
}

/// The `tollgate` binary under test: `$TOLLGATE_BIN`, or the one built beside this test binary.
pub fn tollgate_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TOLLGATE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // Test binaries live in target/<profile>/deps, other binaries in target/<profile>.
    let name = format!("tollgate{}", std::env::consts::EXE_SUFFIX);
    let candidates: Vec<PathBuf> = exe.ancestors().skip(1).take(2).map(|dir| dir.join(&name)).collect();
    let bin = candidates.iter().find(|p| p.exists()).cloned().unwrap_or_else(|| {
        panic!(
            "{} is missing: build it first (`cargo build -p tollgate`), or set TOLLGATE_BIN",
            candidates[0].display()
        )
    });
    assert_fresh(&bin);
    bin
}

/// `cargo test -p tollgate-tests` does not rebuild the `tollgate` binary: refuse one older than
/// the daemon's sources rather than test stale code.
fn assert_fresh(bin: &Path) {
    fn newest(dir: &Path) -> Option<std::time::SystemTime> {
        std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter_map(|e| {
                let p = e.path();
                if p.is_dir() { newest(&p) } else { e.metadata().ok()?.modified().ok() }
            })
            .max()
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let source = ["daemon/src", "crates", "lsp/src", "prompts"].iter().filter_map(|d| newest(&root.join(d))).max();
    if let (Some(source), Ok(built)) = (source, std::fs::metadata(bin).and_then(|m| m.modified())) {
        assert!(built >= source, "{} is older than its sources: run `cargo build -p tollgate` first", bin.display());
    }
}

/// A running daemon with its own home directory, killed and cleaned up on drop.
pub struct Daemon {
    pub home: tempfile::TempDir,
    pub port: u16,
    pub token: String,
    child: Option<Child>,
    envs: Vec<(String, String)>,
    wrapper: Vec<String>,
}

impl Daemon {
    /// Starts `tollgate daemon` with this config (merged over the defaults) on a free port.
    pub fn start(config: &str) -> Self {
        Self::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &str, envs: &[(&str, &str)]) -> Self {
        Self::start_wrapped(config, envs, &[])
    }

    /// Starts the daemon as `WRAPPER... tollgate daemon --port 0`: the wrapper (say, `keyctl
    /// session`) runs it with the tollgate binary as `$0` when it is `sh -c`.
    pub fn start_wrapped(config: &str, envs: &[(&str, &str)], wrapper: &[&str]) -> Self {
        let home = tempfile::Builder::new().prefix("tg-").tempdir().expect("temp home");
        Self::start_in(home, config, envs, wrapper)
    }

    /// Starts the daemon with `home` as its home directory (a small file system, say).
    pub fn start_in(home: tempfile::TempDir, config: &str, envs: &[(&str, &str)], wrapper: &[&str]) -> Self {
        std::fs::write(home.path().join("config.toml"), config).expect("write config");
        let mut d = Daemon {
            home,
            port: 0,
            token: String::new(),
            child: None,
            envs: envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            wrapper: wrapper.iter().map(|s| s.to_string()).collect(),
        };
        d.spawn();
        d
    }

    /// A `tollgate` command in this daemon's home, with its environment.
    pub fn command(&self) -> Command {
        let mut c = Command::new(tollgate_bin());
        c.env("TOLLGATE_HOME", self.home.path())
            .env_remove("TOLLGATE_CONFIG")
            .env("TOLLGATE_LOG", "tollgate=debug,warn");
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        c
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.home.path().join("daemon.port"));
        let log = std::fs::File::create(self.home.path().join("daemon.log")).expect("log file");
        let mut command = self.command();
        if let Some((program, args)) = self.wrapper.split_first() {
            let inner = command;
            command = Command::new(program);
            command.args(args).arg(inner.get_program()).args(inner.get_args());
            for (k, v) in inner.get_envs() {
                match v {
                    Some(v) => command.env(k, v),
                    None => command.env_remove(k),
                };
            }
        }
        let child = command
            .args(["daemon", "--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn tollgate daemon");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(p) = std::fs::read_to_string(self.home.path().join("daemon.port"))
                && let Ok(port) = p.trim().parse()
            {
                self.port = port;
                break;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the daemon exited ({status}) at start:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "the daemon did not start within 20s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        self.token = std::fs::read_to_string(self.home.path().join("token")).expect("token file").trim().to_string();
        self.wait_for_exact_estimates();
    }

    /// Waits while `/healthz` says the tokenizer is loading: estimates are a bound from the text's
    /// length until it is loaded, and tests count on exact ones. Call it again after a policy
    /// brings the first budget (the tokenizer starts loading then).
    pub fn wait_for_exact_estimates(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.healthz().contains("\"tokenizer\":\"loading\"") {
            assert!(Instant::now() < deadline, "the tokenizer did not load:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The body of `GET /healthz` (empty when it does not answer).
    pub fn healthz(&self) -> String {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else { return String::new() };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let request = format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n", self.port);
        let mut out = String::new();
        if s.write_all(request.as_bytes()).is_ok() {
            let _ = s.read_to_string(&mut out);
        }
        out
    }

    /// Stops the daemon hard (SIGKILL) and starts it again in the same home.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.path().join("daemon.log")).unwrap_or_default()
    }

    /// GETs `path` with the token; the answer's JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.client().get(self.url(path)).send().await.unwrap().json().await.unwrap()
    }

    /// POSTs `body` to `path` with the token; the answer's JSON.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        self.client().post(self.url(path)).json(body).send().await.unwrap().json().await.unwrap()
    }

    /// An HTTP client that presents the token.
    pub fn client(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("authorization", format!("Bearer {}", self.token).parse().unwrap());
        reqwest::Client::builder().default_headers(headers).build().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Installs the TLS provider that reqwest needs in test processes.
pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Parses an SSE body into (event name, data JSON or raw text) pairs.
pub fn sse_events(body: &str) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    for block in body.split("\n\n") {
        let mut event = None;
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(e) = line.strip_prefix("event: ") {
                event = Some(e.to_string());
            } else if let Some(d) = line.strip_prefix("data: ") {
                data.push(d);
            }
        }
        if !data.is_empty() {
            out.push((event, data.join("\n")));
        }
    }
    out
}

/// A bare repository and a work tree that pushes to it.
pub struct PolicyRepo {
    pub dir: tempfile::TempDir,
}

pub fn run_git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Policy Admin")
        .env("GIT_AUTHOR_EMAIL", "admin@example.com")
        .env("GIT_COMMITTER_NAME", "Policy Admin")
        .env("GIT_COMMITTER_EMAIL", "admin@example.com")
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Default for PolicyRepo {
    fn default() -> Self {
        Self::new()
    }
}

impl PolicyRepo {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("tg-policy-").tempdir().unwrap();
        run_git(dir.path(), &["init", "--quiet", "--bare", "--initial-branch=main", "policy.git"]);
        run_git(dir.path(), &["clone", "--quiet", "policy.git", "work"]);
        run_git(&dir.path().join("work"), &["checkout", "--quiet", "-b", "main"]);
        Self { dir }
    }

    pub fn bare(&self) -> PathBuf {
        self.dir.path().join("policy.git")
    }

    /// Writes the files, commits and pushes; returns the new commit id.
    pub fn push(&self, files: &[(&str, &str)], message: &str) -> String {
        let work = self.dir.path().join("work");
        for (path, text) in files {
            let p = work.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        run_git(&work, &["add", "-A"]);
        run_git(&work, &["commit", "--quiet", "-m", message]);
        run_git(&work, &["push", "--quiet", "origin", "main"]);
        run_git(&work, &["rev-parse", "HEAD"])
    }
}

/// A TCP port free on 127.0.0.1 now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
