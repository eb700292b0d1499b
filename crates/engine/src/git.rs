//! The one way tollgate runs the system git (review, `scan --staged`, hooks, policy fetches):
//! never prompting for anything (no terminal, no credential helper dialogs, ssh in batch mode), its
//! failure the last line git printed, and bounded in time where asked (remote fetches).

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run git ({0}); is git installed?")]
    Spawn(std::io::Error),
    #[error("git {command} took longer than {}s", .after.as_secs())]
    TimedOut { command: String, after: Duration },
    #[error("git {command} failed: {message}")]
    Failed { command: String, message: String },
}

/// `git [-C dir] args...`, set never to prompt.
fn command(dir: Option<&Path>, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new("git");
    if let Some(d) = dir {
        cmd.arg("-C").arg(d);
    }
    cmd.args(args).env("GIT_TERMINAL_PROMPT", "0").env("GCM_INTERACTIVE", "never").stdin(Stdio::null());
    if std::env::var_os("GIT_SSH_COMMAND").is_none() {
        cmd.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
    }
    cmd
}

/// What a finished git printed, or why it failed.
fn finished(args: &[&str], out: Output) -> Result<Vec<u8>, GitError> {
    if out.status.success() {
        return Ok(out.stdout);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let message = err.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
    Err(GitError::Failed { command: args.first().copied().unwrap_or_default().to_string(), message })
}

/// Runs git in `repo` and returns what it printed. Blocking.
pub fn run(repo: &Path, args: &[&str]) -> Result<Vec<u8>, GitError> {
    let out = command(Some(repo), args).output().map_err(GitError::Spawn)?;
    finished(args, out)
}

/// Runs git (in `dir`, if given) within `limit`; killed when it takes longer.
pub async fn run_within(dir: Option<&Path>, args: &[&str], limit: Duration) -> Result<Vec<u8>, GitError> {
    let mut cmd = tokio::process::Command::from(command(dir, args));
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .map_err(|_| GitError::TimedOut { command: args[0].to_string(), after: limit })?
        .map_err(GitError::Spawn)?;
    finished(args, out)
}

/// A staged file: its path, its staged content, and the lines the commit adds.
pub type Staged = (String, Vec<u8>, Vec<usize>);

/// The staged version of each file a commit changes, and the lines it adds.
pub fn staged(repo: &Path) -> anyhow::Result<Vec<Staged>> {
    let diff = run(repo, &["diff", "--cached", "--no-color", "--no-ext-diff", "-U0", "--diff-filter=ACMR"])?;
    let mut out = Vec::new();
    for file in crate::diff::parse(&String::from_utf8_lossy(&diff)) {
        let lines: Vec<usize> = file.hunks.iter().flat_map(|h| h.added()).collect();
        if lines.is_empty() {
            continue;
        }
        let content = run(repo, &["show", &format!(":{}", file.path)])?;
        if !crate::redact::report::is_binary(&content) {
            out.push((file.path, content, lines));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_names_the_command_and_what_git_said_last() {
        let dir = tempfile::tempdir().unwrap();
        let e = run(dir.path(), &["rev-parse", "HEAD"]).unwrap_err().to_string();
        assert!(e.starts_with("git rev-parse failed: ") && e.contains("not a git repository"), "{e}");
        run(dir.path(), &["init", "--quiet"]).unwrap();
        assert!(run(dir.path(), &["rev-parse", "--git-dir"]).unwrap().starts_with(b".git"));
    }
}
