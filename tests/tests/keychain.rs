//! The OS keychain for real: `tollgate login` stores a key in Secret Service (gnome-keyring on a
//! private D-Bus session) and in the kernel keyring (keyutils, in a private session keyring); the
//! daemon reads it from there and sends it to the provider; `tollgate logout` removes it.
//! Needs the Debian packages gnome-keyring, dbus-x11, libsecret-tools and keyutils
//! (tests/setup.sh installs them).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_tests::fake::FakeProvider;
use tollgate_tests::{Daemon, init};

const KEY: &str = "sk-test-keychain-5f3a9c0e7b21d4688a";

fn config(fake: &FakeProvider, backend: &str) -> String {
    format!(
        "[keychain]\nbackend = \"{backend}\"\n[providers.oa]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nlocal = false\n",
        fake.url()
    )
}

fn require(tool: &str) {
    let found =
        Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is not installed: run tests/setup.sh (it installs gnome-keyring, dbus-x11, libsecret-tools, keyutils)"
    );
}

async fn ask(d: &Daemon) -> reqwest::Response {
    let body = json!({"model": "oa/gpt-4.1", "messages": [{"role": "user", "content": "hello"}]});
    d.client().post(d.url("/v1/chat/completions")).json(&body).send().await.unwrap()
}

/// No file in `dir` holds the key in plain text.
fn assert_not_on_disk(dir: &Path) {
    for entry in walk(dir) {
        if let Ok(bytes) = std::fs::read(&entry) {
            assert!(
                !bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
                "the key is in plain text in {}",
                entry.display()
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
        }
    }
    out
}

/// A private D-Bus session with an unlocked gnome-keyring; killed on drop.
struct SecretService {
    child: Child,
    address: String,
    home: tempfile::TempDir,
}

impl SecretService {
    fn start() -> Self {
        require("dbus-run-session");
        require("gnome-keyring-daemon");
        let home = tempfile::tempdir().unwrap();
        let run = home.path().join("run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let addr_file = home.path().join("bus");
        let script = format!(
            "echo -n test-unlock | gnome-keyring-daemon --unlock --components=secrets >/dev/null 2>&1; \
             echo \"$DBUS_SESSION_BUS_ADDRESS\" > '{}'; exec sleep 600",
            addr_file.display()
        );
        let child = Command::new("dbus-run-session")
            .args(["--", "sh", "-c", &script])
            .process_group(0)
            .env("HOME", home.path())
            .env("XDG_RUNTIME_DIR", &run)
            .env("XDG_DATA_HOME", home.path().join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-run-session");
        let deadline = Instant::now() + Duration::from_secs(20);
        let address = loop {
            if let Ok(a) = std::fs::read_to_string(&addr_file)
                && !a.trim().is_empty()
            {
                break a.trim().to_string();
            }
            assert!(Instant::now() < deadline, "the D-Bus session did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        // Give gnome-keyring a moment to own its bus name.
        std::thread::sleep(Duration::from_millis(300));
        Self { child, address, home }
    }

    fn envs(&self) -> Vec<(String, String)> {
        vec![
            ("DBUS_SESSION_BUS_ADDRESS".into(), self.address.clone()),
            ("HOME".into(), self.home.path().display().to_string()),
            ("XDG_DATA_HOME".into(), self.home.path().join("data").display().to_string()),
        ]
    }
}

impl Drop for SecretService {
    fn drop(&mut self) {
        // The bus, the keyring daemon and the sleeper share the process group.
        let _ = Command::new("kill").args(["-TERM", "--", &format!("-{}", self.child.id())]).status();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn secret_service_login_feeds_the_daemon_and_logout_removes_the_key() {
    init();
    let ss = SecretService::start();
    let fake = FakeProvider::start().await;
    let envs = ss.envs();
    let env_refs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let d = Daemon::start_with_env(&config(&fake, "secret-service"), &env_refs);

    // Before login: no credentials, a clear error that says what to do.
    let r = ask(&d).await;
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("tollgate login oa"), "{v}");

    let mut login =
        d.command().args(["login", "oa", "--stdin"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    login.stdin.take().unwrap().write_all(KEY.as_bytes()).unwrap();
    let out = login.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("secret-service"));

    // The key is in the Secret Service, as the desktop's own tools see it.
    let lookup = Command::new("secret-tool")
        .args(["lookup", "service", "tollgate", "username", "oa"])
        .envs(envs.clone())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&lookup.stdout).trim(), KEY);

    // The daemon (told by login to re-read) sends it to the provider.
    let r = ask(&d).await;
    assert_eq!(r.status(), 200, "{}", d.log());
    assert_eq!(fake.requests().last().unwrap().key.as_deref(), Some(KEY));
    let status = d.command().args(["status", "--json"]).output().unwrap();
    let v: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["keychain"]["Ok"], "secret-service", "{v}");
    assert!(!String::from_utf8_lossy(&status.stdout).contains(KEY));

    let out = d.command().args(["logout", "oa"]).output().unwrap();
    assert!(out.status.success());
    let lookup = Command::new("secret-tool")
        .args(["lookup", "service", "tollgate", "username", "oa"])
        .envs(envs.clone())
        .output()
        .unwrap();
    assert!(lookup.stdout.is_empty(), "logout left the key in the keychain");
    // The key that seals the cache and the audit log is in the keychain too, not in a file.
    let storage = Command::new("secret-tool")
        .args(["lookup", "service", "tollgate-storage", "username", "database-key"])
        .envs(envs.clone())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&storage.stdout).trim().len(), 64, "no storage key in the keychain");
    assert!(!d.home.path().join("storage.key").exists());
    assert_eq!(ask(&d).await.status(), 401, "the daemon forgot the key after logout");

    assert!(!d.log().contains(KEY), "the key reached the daemon's log");
    assert_not_on_disk(d.home.path());
}

#[tokio::test(flavor = "multi_thread")]
async fn keyutils_login_feeds_the_daemon_in_the_same_session_keyring() {
    init();
    require("keyctl");
    let fake = FakeProvider::start().await;
    // Login, then the daemon, inside one private session keyring, as on a headless machine.
    let wrapper = [
        "keyctl",
        "session",
        "-",
        "sh",
        "-c",
        "printf %s \"$TG_TEST_KEY\" | \"$0\" login oa --stdin >/dev/null && exec \"$0\" \"$@\"",
    ];
    let d = Daemon::start_wrapped(
        &config(&fake, "keyutils"),
        &[("TG_TEST_KEY", KEY), ("DBUS_SESSION_BUS_ADDRESS", "")],
        &wrapper,
    );
    let r = ask(&d).await;
    assert_eq!(r.status(), 200, "{}", d.log());
    assert_eq!(fake.requests().last().unwrap().key.as_deref(), Some(KEY));
    let status: Value = d.client().get(d.url("/v1/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["keychain"]["backend"], "keyutils");
    let oa = status["providers"].as_array().unwrap().iter().find(|p| p["name"] == "oa").unwrap().clone();
    assert_eq!(oa["credentials"], "keychain");
    assert!(!d.log().contains(KEY));
    assert_not_on_disk(d.home.path());
}

/// Where no session keyring was made (a container, `su`, SSH without pam_keyinit) the kernel
/// keyring store would add a key to the user's default session keyring, fail to link it to the
/// persistent keyring, and then be unable to find it again: `login` failed, left the key behind,
/// `logout` could not remove it and `doctor` said the keychain was fine. The backend is refused
/// before anything is written, with what to do, and `doctor` fails it.
#[test]
fn the_kernel_keyring_without_a_session_keyring_is_refused_before_any_key_is_written() {
    require("keyctl");
    let session = Command::new("keyctl").args(["rdescribe", "@s"]).output().unwrap();
    let session = String::from_utf8_lossy(&session.stdout).trim().to_string();
    if !session.split(';').nth(4).is_some_and(|name| name.starts_with("_uid_ses.")) {
        eprintln!("skipped: this test process has a session keyring of its own ({session})");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        "[keychain]\nbackend = \"keyutils\"\n[providers.oa]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n",
    )
    .unwrap();
    let tollgate = || {
        let mut c = Command::new(tollgate_tests::tollgate_bin());
        c.env("TOLLGATE_HOME", home.path()).env_remove("TOLLGATE_CONFIG").env("DBUS_SESSION_BUS_ADDRESS", "");
        c
    };
    let description = "keyring:oa@tollgate";
    let in_session = || {
        Command::new("keyctl").args(["search", "@s", "user", description]).output().is_ok_and(|o| o.status.success())
    };
    assert!(!in_session(), "a key from an earlier run is in the session keyring; remove it with keyctl");

    let mut login =
        tollgate().args(["login", "oa", "--stdin"]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    login.stdin.take().unwrap().write_all(KEY.as_bytes()).unwrap();
    let out = login.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "login claimed success");
    assert!(err.contains("keyctl session") && err.contains("no session keyring"), "{err}");
    assert!(!in_session(), "the failed login left the key in the session keyring");

    let out = tollgate().args(["logout", "oa"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("keyctl session"));

    let out = tollgate().args(["doctor", "--json"]).output().unwrap();
    let checks: Value = serde_json::from_slice(&out.stdout).unwrap();
    let keychain = checks.as_array().unwrap().iter().find(|c| c["name"] == "keychain").unwrap();
    assert_eq!(keychain["outcome"], "fail", "{keychain}");
}
