//! Packaging: the service units (systemd-analyze verify; the plist and task XML parsed), the .deb
//! (built with cargo deb, unpacked into a throwaway root, its binary run), the checksum-verified
//! install script, shell completions and man page, and `tollgate doctor`.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use tollgate_tests::fake::FakeProvider;
use tollgate_tests::{Daemon, ENV_KEYS, init, standard_config, tollgate_bin};

fn tollgate(args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(tollgate_bin()).args(args).envs(envs.iter().copied()).env_remove("TOLLGATE_CONFIG").output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_systemd_user_unit_passes_systemd_analyze_and_installs_and_uninstalls() {
    let cfg = tempfile::tempdir().unwrap();
    let run = tempfile::tempdir().unwrap();
    let cfg_home = cfg.path().to_str().unwrap();
    let out = tollgate(&["service", "install", "--no-start"], &[("XDG_CONFIG_HOME", cfg_home)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).contains("systemctl --user enable --now tollgate.service"), "{}", stdout(&out));
    let unit = cfg.path().join("systemd/user/tollgate.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains(&format!("ExecStart={} daemon", tollgate_bin().display())), "{text}");

    let verify = Command::new("systemd-analyze")
        .args(["verify", "--user"])
        .arg(&unit)
        .env("XDG_RUNTIME_DIR", run.path())
        .env("XDG_CONFIG_HOME", cfg_home)
        .output()
        .expect("systemd-analyze (tests/setup.sh installs systemd)");
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && complaints.trim().is_empty(), "systemd-analyze: {complaints}");

    let status: Value =
        serde_json::from_slice(&tollgate(&["service", "status", "--json"], &[("XDG_CONFIG_HOME", cfg_home)]).stdout)
            .unwrap();
    assert_eq!((status["platform"].as_str(), status["installed"].as_bool()), (Some("systemd"), Some(true)));
    let out = tollgate(&["service", "uninstall"], &[("XDG_CONFIG_HOME", cfg_home)]);
    assert!(stdout(&out).contains("Removed"), "{}", stdout(&out));
    assert!(!unit.exists());
}

#[test]
fn the_team_servers_system_unit_passes_systemd_analyze() {
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("tollgate-team.service");
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/team-server/tollgate-team.service"))
            .unwrap();
    // Checked against the binary built here, as the .deb's /usr/bin/tollgate would be.
    std::fs::write(&unit, text.replace("/usr/bin/tollgate", &tollgate_bin().display().to_string())).unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (tests/setup.sh installs systemd)");
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && complaints.trim().is_empty(), "systemd-analyze: {complaints}");
    // The flags it passes are ones the binary takes.
    let exec = text.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
    let help = Command::new(tollgate_bin()).args(["team-server", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in exec.split_whitespace().filter(|w| w.starts_with("--")) {
        assert!(help.contains(flag), "{flag} is not in team-server --help");
    }
}

#[test]
fn the_launchd_plist_and_the_windows_task_are_well_formed() {
    let dir = tempfile::tempdir().unwrap();
    let plist = dir.path().join("dev.tollgate.daemon.plist");
    let task = dir.path().join("tollgate-task.xml");
    std::fs::write(
        &plist,
        tollgate(&["service", "show", "--platform", "launchd", "--exec", "/opt/a&b/tollgate"], &[]).stdout,
    )
    .unwrap();
    std::fs::write(
        &task,
        tollgate(&["service", "show", "--platform", "windows", "--exec", "C:\\Tools\\tollgate.exe"], &[]).stdout,
    )
    .unwrap();
    // Parsed by Python's plistlib (what plutil would check) and an XML parser.
    let check = Command::new("python3")
        .arg("-c")
        .arg(
            "import plistlib, sys, xml.etree.ElementTree as ET\n\
             p = plistlib.load(open(sys.argv[1], 'rb'))\n\
             assert p['Label'] == 'dev.tollgate.daemon', p\n\
             assert p['ProgramArguments'] == ['/opt/a&b/tollgate', 'daemon'], p\n\
             assert p['KeepAlive'] == {'SuccessfulExit': False}, p\n\
             ns = {'t': 'http://schemas.microsoft.com/windows/2004/02/mit/task'}\n\
             root = ET.parse(sys.argv[2]).getroot()\n\
             assert root.find('t:Actions/t:Exec/t:Command', ns).text == 'C:\\\\Tools\\\\tollgate.exe'\n\
             assert root.find('t:Triggers/t:LogonTrigger', ns) is not None\n",
        )
        .arg(&plist)
        .arg(&task)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
}

#[test]
fn completions_and_the_man_page_come_from_the_cli_definition() {
    let bash = tollgate(&["completions", "bash"], &[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tollgate.bash");
    std::fs::write(&file, &bash.stdout).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(syntax.status.success(), "{}", String::from_utf8_lossy(&syntax.stderr));
    assert!(stdout(&bash).contains("review") && stdout(&bash).contains("policy"));
    assert!(stdout(&tollgate(&["completions", "zsh"], &[])).starts_with("#compdef tollgate"));
    let man = stdout(&tollgate(&["man"], &[]));
    assert!(man.contains(".TH tollgate 1") && man.contains("doctor"), "{}", &man[..200.min(man.len())]);
}

#[test]
fn the_deb_holds_the_binary_man_page_completions_and_unit_and_its_binary_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("bash").arg(root.join("tests/package.sh")).current_dir(&root).output().unwrap();
    assert!(out.status.success(), "tests/package.sh: {}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    let deb = stdout(&out).lines().last().unwrap_or("").trim().to_string();
    assert!(deb.ends_with(".deb"), "{deb}");
    let contents = Command::new("dpkg-deb").arg("--contents").arg(&deb).output().unwrap();
    let listing = stdout(&contents);
    for f in [
        "./usr/bin/tollgate",
        "./usr/share/man/man1/tollgate.1.gz",
        "./usr/share/bash-completion/completions/tollgate",
        "./usr/share/zsh/vendor-completions/_tollgate",
        "./usr/share/fish/vendor_completions.d/tollgate.fish",
        "./usr/lib/systemd/user/tollgate.service",
    ] {
        assert!(listing.lines().any(|l| l.ends_with(f) || l.contains(&format!("{f} "))), "{f} missing:\n{listing}");
    }
    let info =
        stdout(&Command::new("dpkg-deb").arg("--field").arg(&deb).arg("Package").arg("Depends").output().unwrap());
    assert!(info.contains("Package: tollgate") && info.contains("git"), "{info}");
    // Unpacked into a throwaway root: the binary runs, the unit names it.
    let throwaway = tempfile::tempdir().unwrap();
    assert!(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(throwaway.path()).status().unwrap().success());
    let version = Command::new(throwaway.path().join("usr/bin/tollgate")).arg("--version").output().unwrap();
    assert_eq!(stdout(&version).trim(), format!("tollgate {}", env!("CARGO_PKG_VERSION")));
    let unit = std::fs::read_to_string(throwaway.path().join("usr/lib/systemd/user/tollgate.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/tollgate daemon"), "{unit}");
}

#[test]
fn the_install_script_installs_a_release_only_when_its_checksum_matches() {
    let release = tempfile::tempdir().unwrap();
    let stage = tempfile::tempdir().unwrap();
    std::fs::copy(tollgate_bin(), stage.path().join("tollgate")).unwrap();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "x86_64",
        "aarch64" => "aarch64",
        other => panic!("no release archive name for {other}"),
    };
    let archive = format!("tollgate-{arch}-linux.tar.gz");
    let tar = Command::new("tar")
        .arg("-czf")
        .arg(release.path().join(&archive))
        .arg("-C")
        .arg(stage.path())
        .arg("tollgate")
        .status()
        .unwrap();
    assert!(tar.success());
    let sum = stdout(&Command::new("sha256sum").arg(release.path().join(&archive)).output().unwrap());
    let sum = sum.split_whitespace().next().unwrap().to_string();
    std::fs::write(release.path().join("SHA256SUMS"), format!("{sum}  {archive}\n")).unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/install.sh");
    let install = |dest: &Path| {
        Command::new("sh")
            .arg(&script)
            .env("TOLLGATE_RELEASE_URL", format!("file://{}", release.path().display()))
            .env("TOLLGATE_INSTALL_DIR", dest)
            .output()
            .unwrap()
    };
    let dest = tempfile::tempdir().unwrap();
    let out = install(dest.path());
    assert!(out.status.success(), "{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).contains(&format!("installed tollgate {}", env!("CARGO_PKG_VERSION"))), "{}", stdout(&out));

    // A tampered checksum: refused, nothing installed.
    std::fs::write(release.path().join("SHA256SUMS"), format!("{}  {archive}\n", "0".repeat(64))).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let out = install(dest.path());
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dest.path().join("tollgate").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_says_what_is_wrong_and_how_to_fix_it() {
    init();
    let fake = FakeProvider::start().await;
    // `xx` has no key; `ol` is a local server that answers (the fake's Ollama API).
    let extra = "[providers.xx]\nkind = \"openai\"\nbase_url = \"https://api.example.com/v1\"\n[routes.other]\ntargets = [\"xx/m\", \"ol/qwen-local\"]\n";
    let d = Daemon::start_with_env(&standard_config(&fake, &fake, extra), ENV_KEYS);
    let repo = tempfile::tempdir().unwrap();
    assert!(Command::new("git").arg("init").arg("-q").arg(repo.path()).status().unwrap().success());

    let doctor = |d: &Daemon| {
        let out = d.command().current_dir(repo.path()).args(["doctor", "--json"]).output().unwrap();
        let checks: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code(), checks)
    };
    let find = |checks: &[Value], name: &str| {
        checks.iter().find(|c| c["name"] == name).cloned().unwrap_or_else(|| panic!("no {name}: {checks:#?}"))
    };
    let (code, checks) = doctor(&d);
    assert_eq!(find(&checks, "daemon")["outcome"], "ok");
    assert_eq!(find(&checks, "keychain")["outcome"], "ok");
    assert_eq!(find(&checks, "credentials: oa")["outcome"], "ok");
    let xx = find(&checks, "credentials: xx");
    assert_eq!(xx["outcome"], "warn");
    assert!(xx["fix"].as_str().unwrap().contains("tollgate login xx"), "{xx}");
    assert_eq!(find(&checks, "local model: ol")["outcome"], "ok");
    let hooks = find(&checks, "hooks");
    assert_eq!(hooks["outcome"], "warn");
    assert!(hooks["fix"].as_str().unwrap().contains("tollgate hooks install --pre-commit --pre-push"), "{hooks}");
    assert_eq!(code, Some(0), "warnings do not fail: {checks:#?}");

    let out =
        d.command().current_dir(repo.path()).args(["hooks", "install", "--pre-commit", "--pre-push"]).output().unwrap();
    assert!(out.status.success());
    let (_, checks) = doctor(&d);
    assert_eq!(find(&checks, "hooks")["outcome"], "ok");

    // The daemon stops: doctor fails and says how to start it.
    let mut d = d;
    d.kill();
    let (code, checks) = doctor(&d);
    assert_eq!(code, Some(1));
    let daemon = find(&checks, "daemon");
    assert_eq!(daemon["outcome"], "fail");
    assert!(daemon["fix"].as_str().unwrap().contains("tollgate service install"), "{daemon}");
    let text = stdout(&d.command().current_dir(repo.path()).arg("doctor").output().unwrap());
    assert!(text.contains("FAIL daemon:") && text.contains("     fix: start it with"), "{text}");
}
