//! Who the user is, for the ledger and for per-user and per-group budgets: the GitLab username and
//! groups when a GitLab instance is known (read with the user's token, refreshed with the policy),
//! `GITLAB_USER_LOGIN` inside a GitLab CI job, the OS user otherwise.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use tollgate_protocol::Identity;

/// The identity known without asking any server.
pub fn local() -> Identity {
    if let Ok(login) = std::env::var("GITLAB_USER_LOGIN")
        && !login.is_empty()
    {
        return Identity { username: login, groups: Vec::new(), source: "gitlab-ci".into() };
    }
    let user = std::env::var("USER").or_else(|_| std::env::var("USERNAME")).unwrap_or_else(|_| "unknown".into());
    Identity { username: user, groups: Vec::new(), source: "os".into() }
}

/// `group/subgroup/project` from a git remote URL (`git@host:group/project.git`,
/// `https://host/group/project.git`, `ssh://git@host:2222/group/project`).
pub fn project_from_remote(url: &str) -> Option<String> {
    let url = url.trim();
    let path = if let Some((_, rest)) = url.split_once("://") {
        // scheme://[user@]host[:port]/path
        rest.split_once('/')?.1
    } else if let Some((host, path)) = url.split_once(':') {
        // scp-like: [user@]host:path (not a Windows drive letter)
        if host.len() <= 1 {
            return None;
        }
        path
    } else {
        return None;
    };
    let path = path.trim_matches('/').trim_end_matches(".git").trim_matches('/');
    (path.contains('/') && !path.split('/').any(str::is_empty)).then(|| path.to_string())
}

/// The project of the repository containing `dir`, from its `origin` remote (or its first
/// remote). Reads the repository's config file directly: no git process runs in a directory a
/// caller names.
/// A small regular file of a repository, as text. A caller names the directory (`x-tollgate-repo`),
/// so what is there is not trusted: a FIFO would block the thread that opens it, `/dev/zero` or a
/// huge file would fill memory; such a file is not read.
fn read_small(path: &Path) -> Option<String> {
    use std::io::Read;
    const LIMIT: u64 = 1024 * 1024;
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > LIMIT {
        return None;
    }
    let mut text = String::new();
    std::fs::File::open(path).ok()?.take(LIMIT).read_to_string(&mut text).ok()?;
    Some(text)
}

pub fn project_of_dir(dir: &Path) -> Option<String> {
    let config = read_small(&git_config_path(dir)?)?;
    let mut remotes: Vec<(String, String)> = Vec::new();
    let mut section: Option<String> = None;
    for line in config.lines().map(str::trim) {
        if let Some(head) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = head
                .strip_prefix("remote")
                .map(|r| r.trim().trim_matches('"').to_string())
                .filter(|name| !name.is_empty());
        } else if let (Some(name), Some((key, value))) = (&section, line.split_once('='))
            && key.trim().eq_ignore_ascii_case("url")
        {
            remotes.push((name.clone(), value.trim().trim_matches('"').to_string()));
        }
    }
    let url = remotes.iter().find(|(n, _)| n == "origin").or(remotes.first())?;
    project_from_remote(&url.1)
}

/// `.git/config` of the repository containing `dir` (worktrees and submodules included).
fn git_config_path(dir: &Path) -> Option<PathBuf> {
    let dot_git = dir.ancestors().map(|d| d.join(".git")).find(|p| p.exists())?;
    if dot_git.is_dir() {
        return Some(dot_git.join("config"));
    }
    // A `.git` file: `gitdir: PATH`; a worktree's gitdir names its common dir in `commondir`.
    let text = read_small(&dot_git)?;
    let gitdir = dot_git.parent()?.join(text.trim().strip_prefix("gitdir:")?.trim());
    let common = match read_small(&gitdir.join("commondir")) {
        Some(c) => gitdir.join(c.trim()),
        None => gitdir,
    };
    Some(common.join("config"))
}

/// Projects of the directories callers name (`x-tollgate-repo`), remembered.
#[derive(Default)]
pub struct Projects(Mutex<HashMap<PathBuf, Option<String>>>);

impl Projects {
    pub async fn of_dir(&self, dir: PathBuf) -> Option<String> {
        if let Some(hit) = self.0.lock().expect("projects lock").get(&dir) {
            return hit.clone();
        }
        let d = dir.clone();
        let project = tokio::task::spawn_blocking(move || project_of_dir(&d)).await.ok().flatten();
        let mut known = self.0.lock().expect("projects lock");
        if known.len() >= 1024 {
            known.clear();
        }
        known.insert(dir, project.clone());
        project
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_from_remote_urls() {
        for (url, want) in [
            ("git@gitlab.com:acme/platform/api.git", Some("acme/platform/api")),
            ("https://gitlab.example.com/acme/api.git", Some("acme/api")),
            ("https://gitlab.example.com/acme/api", Some("acme/api")),
            ("ssh://git@gitlab.example.com:2222/acme/tools/cli.git", Some("acme/tools/cli")),
            ("https://oauth2:glpat-xxxx@gitlab.example.com/acme/api.git/", Some("acme/api")),
            ("git@gitlab.com:solo.git", None),
            ("C:\\repo", None),
            ("/local/path", None),
        ] {
            assert_eq!(project_from_remote(url).as_deref(), want, "{url}");
        }
    }

    #[test]
    fn the_project_of_a_directory_comes_from_its_origin_remote() {
        let repo = tempfile::tempdir().unwrap();
        let git = repo.path().join(".git");
        std::fs::create_dir_all(&git).unwrap();
        std::fs::write(
            git.join("config"),
            "[core]\n\tbare = false\n[remote \"upstream\"]\n\turl = git@gitlab.example.com:other/fork.git\n\
             [remote \"origin\"]\n\turl = https://gitlab.example.com/acme/platform/api.git\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n",
        )
        .unwrap();
        let sub = repo.path().join("src/deep");
        std::fs::create_dir_all(&sub).unwrap();
        assert_eq!(project_of_dir(&sub).as_deref(), Some("acme/platform/api"));

        // A worktree: `.git` is a file naming its gitdir, whose commondir holds the config.
        let wt = tempfile::tempdir().unwrap();
        let wt_gitdir = git.join("worktrees/wt");
        std::fs::create_dir_all(&wt_gitdir).unwrap();
        std::fs::write(wt_gitdir.join("commondir"), "../..\n").unwrap();
        std::fs::write(wt.path().join(".git"), format!("gitdir: {}\n", wt_gitdir.display())).unwrap();
        assert_eq!(project_of_dir(wt.path()).as_deref(), Some("acme/platform/api"));

        assert_eq!(project_of_dir(tempfile::tempdir().unwrap().path()), None);
    }

    /// A repository whose `.git/config` is a FIFO (opening it would block) or a device (reading it
    /// would not end) is no project: answered at once, nothing read.
    #[cfg(unix)]
    #[test]
    fn a_hostile_git_config_is_not_read() {
        let dir = std::env::temp_dir().join(crate::model::new_id("tollgate-repo-"));
        std::fs::create_dir_all(dir.join(".git")).unwrap();
        let fifo = dir.join(".git/config");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success());
        assert!(made, "mkfifo is needed for this test");
        assert_eq!(project_of_dir(&dir), None);
        std::fs::remove_file(&fifo).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &fifo).unwrap();
        assert_eq!(project_of_dir(&dir), None);
        std::fs::remove_file(&fifo).unwrap();
        std::fs::write(&fifo, "[remote \"origin\"]\n\turl = git@gitlab.com:acme/api.git\n").unwrap();
        assert_eq!(project_of_dir(&dir).as_deref(), Some("acme/api"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
