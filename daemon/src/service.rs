//! `tollgate service install | uninstall | status`: the daemon as a per-user service that starts at
//! login. A systemd user unit on Linux, a launchd agent on macOS, a logon task on Windows; the
//! templates live in packaging/ and are filled with this binary's path.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Systemd,
    Launchd,
    Windows,
}

const SYSTEMD: &str = include_str!("../../packaging/systemd/tollgate.service");
const LAUNCHD: &str = include_str!("../../packaging/launchd/dev.tollgate.daemon.plist");
const WINDOWS: &str = include_str!("../../packaging/windows/tollgate-task.xml");

impl Platform {
    /// This machine's.
    pub fn current() -> Self {
        if cfg!(target_os = "macos") {
            Platform::Launchd
        } else if cfg!(windows) {
            Platform::Windows
        } else {
            Platform::Systemd
        }
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn home() -> PathBuf {
    directories::BaseDirs::new().map(|d| d.home_dir().to_path_buf()).unwrap_or_else(|| PathBuf::from("."))
}

/// The unit for `platform`, running `exe daemon`.
pub fn render(platform: Platform, exe: &Path) -> String {
    let exe = exe.display().to_string();
    match platform {
        Platform::Systemd => {
            // systemd splits ExecStart on spaces unless the path is quoted.
            let quoted = if exe.contains(' ') { format!("\"{exe}\"") } else { exe };
            SYSTEMD.replace("@EXEC@", &quoted)
        }
        Platform::Launchd => {
            let log = home().join("Library/Logs/tollgate.log");
            LAUNCHD.replace("@EXEC@", &xml_escape(&exe)).replace("@LOG@", &xml_escape(&log.display().to_string()))
        }
        Platform::Windows => {
            let user = std::env::var("USERNAME").unwrap_or_default();
            let domain = std::env::var("USERDOMAIN").unwrap_or_default();
            let id = if domain.is_empty() { user } else { format!("{domain}\\{user}") };
            WINDOWS.replace("@EXEC@", &xml_escape(&exe)).replace("@USER@", &xml_escape(&id))
        }
    }
}

/// Where the unit goes for this user.
pub fn unit_path(platform: Platform) -> PathBuf {
    match platform {
        Platform::Systemd => {
            let config =
                std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from).unwrap_or_else(|| home().join(".config"));
            config.join("systemd/user/tollgate.service")
        }
        Platform::Launchd => home().join("Library/LaunchAgents/dev.tollgate.daemon.plist"),
        Platform::Windows => {
            let data = std::env::var_os("APPDATA").map(PathBuf::from).unwrap_or_else(home);
            data.join("tollgate/tollgate-task.xml")
        }
    }
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program).args(args).output().with_context(|| format!("cannot run {program}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The commands that enable and start the unit, and the ones that stop and remove it.
fn enable_commands(platform: Platform, path: &Path) -> Vec<Vec<String>> {
    let p = path.display().to_string();
    match platform {
        Platform::Systemd => vec![
            vec!["systemctl".into(), "--user".into(), "daemon-reload".into()],
            vec!["systemctl".into(), "--user".into(), "enable".into(), "--now".into(), "tollgate.service".into()],
        ],
        Platform::Launchd => {
            let uid = run("id", &["-u"]).unwrap_or_default();
            vec![vec!["launchctl".into(), "bootstrap".into(), format!("gui/{uid}"), p]]
        }
        Platform::Windows => vec![
            vec!["schtasks".into(), "/Create".into(), "/TN".into(), "tollgate".into(), "/XML".into(), p, "/F".into()],
            vec!["schtasks".into(), "/Run".into(), "/TN".into(), "tollgate".into()],
        ],
    }
}

fn disable_commands(platform: Platform) -> Vec<Vec<String>> {
    match platform {
        Platform::Systemd => {
            vec![vec!["systemctl".into(), "--user".into(), "disable".into(), "--now".into(), "tollgate.service".into()]]
        }
        Platform::Launchd => {
            let uid = run("id", &["-u"]).unwrap_or_default();
            vec![vec!["launchctl".into(), "bootout".into(), format!("gui/{uid}/dev.tollgate.daemon")]]
        }
        Platform::Windows => {
            vec![vec!["schtasks".into(), "/Delete".into(), "/TN".into(), "tollgate".into(), "/F".into()]]
        }
    }
}

fn run_all(commands: &[Vec<String>]) -> anyhow::Result<()> {
    for c in commands {
        let args: Vec<&str> = c[1..].iter().map(String::as_str).collect();
        run(&c[0], &args)?;
    }
    Ok(())
}

/// Writes the unit; unless `no_start`, enables and starts it.
pub fn install(no_start: bool) -> anyhow::Result<String> {
    let platform = Platform::current();
    let exe = std::env::current_exe().context("cannot find the tollgate binary")?;
    let path = unit_path(platform);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&path, render(platform, &exe)).with_context(|| format!("cannot write {}", path.display()))?;
    if no_start {
        return Ok(format!("Wrote {}; enable it with: {}", path.display(), shown(&enable_commands(platform, &path))));
    }
    run_all(&enable_commands(platform, &path)).map_err(|e| {
        anyhow::anyhow!(
            "wrote {}, but could not start it: {e:#}. Run: {}",
            path.display(),
            shown(&enable_commands(platform, &path))
        )
    })?;
    Ok(format!("Installed and started the tollgate service ({}).", path.display()))
}

fn shown(commands: &[Vec<String>]) -> String {
    commands.iter().map(|c| c.join(" ")).collect::<Vec<_>>().join(" && ")
}

pub fn uninstall() -> anyhow::Result<String> {
    let platform = Platform::current();
    let path = unit_path(platform);
    if !path.exists() {
        return Ok("The tollgate service is not installed.".into());
    }
    if let Err(e) = run_all(&disable_commands(platform)) {
        eprintln!("warning: {e:#}");
    }
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    if platform == Platform::Systemd {
        let _ = run("systemctl", &["--user", "daemon-reload"]);
    }
    Ok(format!("Removed the tollgate service ({}).", path.display()))
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub platform: Platform,
    pub unit: PathBuf,
    pub installed: bool,
    /// What the service manager says, when it answers.
    pub state: Option<String>,
}

pub fn status() -> Status {
    let platform = Platform::current();
    let unit = unit_path(platform);
    let state = match platform {
        Platform::Systemd => Command::new("systemctl")
            .args(["--user", "is-active", "tollgate.service"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty()),
        Platform::Launchd => run("launchctl", &["list", "dev.tollgate.daemon"]).ok().map(|_| "loaded".into()),
        Platform::Windows => run("schtasks", &["/Query", "/TN", "tollgate"]).ok().map(|_| "registered".into()),
    };
    Status { platform, installed: unit.exists(), unit, state }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_name_the_binary_and_escape_it() {
        let s = render(Platform::Systemd, Path::new("/opt/my tools/tollgate"));
        assert!(s.contains("ExecStart=\"/opt/my tools/tollgate\" daemon"), "{s}");
        let l = render(Platform::Launchd, Path::new("/Users/a&b/bin/tollgate"));
        assert!(l.contains("<string>/Users/a&amp;b/bin/tollgate</string>") && !l.contains("@LOG@"), "{l}");
        let w = render(Platform::Windows, Path::new("C:\\Tools\\tollgate.exe"));
        assert!(w.contains("<Command>C:\\Tools\\tollgate.exe</Command>") && !w.contains("@EXEC@"));
    }
}
