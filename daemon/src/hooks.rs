//! `tollgate hooks install|uninstall`: git hooks that call tollgate. The hooks directory is git's
//! own answer (so `core.hooksPath` is respected); a hook already there is kept and chained: it runs
//! first, and its failure stops the commit as before.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Marks a hook file as written by tollgate.
const MARK: &str = "# installed by tollgate";
const CHAINED_SUFFIX: &str = ".tollgate-chained";

#[derive(Debug, Clone, Copy)]
pub enum Hook {
    PreCommit,
    PrePush,
}

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Hook::PreCommit => "pre-commit",
            Hook::PrePush => "pre-push",
        }
    }

    fn command(self) -> &'static str {
        match self {
            Hook::PreCommit => "scan --staged --secrets-only",
            // git passes the remote's name and URL, and the pushed refs on stdin.
            Hook::PrePush => "hook-pre-push \"$@\"",
        }
    }
}

/// The directory git runs hooks from, for the repository at `repo`.
pub fn hooks_dir(repo: &Path) -> anyhow::Result<PathBuf> {
    let out = crate::git::run(repo, &["rev-parse", "--path-format=absolute", "--git-path", "hooks"])
        .map_err(|e| anyhow::anyhow!("{} is not in a git repository: {e}", repo.display()))?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out).trim()))
}

fn script(hook: Hook, tollgate: &Path) -> String {
    let name = hook.name();
    // A hook that reads stdin (pre-push) gets it once: keep it for the chained hook and for us.
    let (keep, feed) = match hook {
        Hook::PrePush => ("input=\"$(cat)\"\n", "printf '%s\\n' \"$input\" | "),
        Hook::PreCommit => ("", ""),
    };
    format!(
        "#!/bin/sh\n{MARK}: `tollgate hooks uninstall --{name}` removes it.\n\
         {keep}\
         chained=\"$(dirname \"$0\")/{name}{CHAINED_SUFFIX}\"\n\
         if [ -x \"$chained\" ]; then {feed}\"$chained\" \"$@\" || exit $?; fi\n\
         tollgate='{}'\n\
         [ -x \"$tollgate\" ] || tollgate=tollgate\n\
         {feed}exec \"$tollgate\" {}\n",
        tollgate.display(),
        hook.command()
    )
}

/// Installs `hook`; returns what was done, for the user.
pub fn install(repo: &Path, hook: Hook) -> anyhow::Result<String> {
    let dir = hooks_dir(repo)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(hook.name());
    let chained = dir.join(format!("{}{CHAINED_SUFFIX}", hook.name()));
    let mut note = String::new();
    if let Ok(existing) = std::fs::read_to_string(&path)
        && !existing.contains(MARK)
    {
        anyhow::ensure!(!chained.exists(), "{} exists already; move it away first", chained.display());
        std::fs::rename(&path, &chained)?;
        note = format!(" (the existing hook now runs first, from {})", chained.display());
    }
    let exe = std::env::current_exe().context("cannot find the tollgate binary")?;
    std::fs::write(&path, script(hook, &exe))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(format!("Installed the {} hook at {}{note}.", hook.name(), path.display()))
}

pub fn uninstall(repo: &Path, hook: Hook) -> anyhow::Result<String> {
    let dir = hooks_dir(repo)?;
    let path = dir.join(hook.name());
    let chained = dir.join(format!("{}{CHAINED_SUFFIX}", hook.name()));
    match std::fs::read_to_string(&path) {
        Ok(s) if s.contains(MARK) => {
            std::fs::remove_file(&path)?;
            if chained.exists() {
                std::fs::rename(&chained, &path)?;
                return Ok(format!("Removed tollgate's {} hook and put the previous one back.", hook.name()));
            }
            Ok(format!("Removed tollgate's {} hook.", hook.name()))
        }
        Ok(_) => Ok(format!("The {} hook at {} is not tollgate's; left it alone.", hook.name(), path.display())),
        Err(_) => Ok(format!("No {} hook is installed.", hook.name())),
    }
}
