//! Who the user is, for the ledger and for per-user and per-group budgets: the GitLab username and
//! groups when a GitLab instance is known (read with the user's token, refreshed with the policy),
//! `GITLAB_USER_LOGIN` inside a GitLab CI job, the OS user otherwise.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub username: String,
    /// Full paths of the GitLab groups the user belongs to (`acme/platform`), sorted.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Where the name came from: `os`, `gitlab-ci`, or the GitLab host.
    pub source: String,
}

impl Identity {
    /// The identity known without asking any server.
    pub fn local() -> Self {
        if let Ok(login) = std::env::var("GITLAB_USER_LOGIN") {
            if !login.is_empty() {
                return Self { username: login, groups: Vec::new(), source: "gitlab-ci".into() };
            }
        }
        let user = std::env::var("USER").or_else(|_| std::env::var("USERNAME")).unwrap_or_else(|_| "unknown".into());
        Self { username: user, groups: Vec::new(), source: "os".into() }
    }
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

/// The project of the repository containing `dir`, from its `origin` remote (or its first remote).
pub fn project_of_dir(dir: &std::path::Path) -> Option<String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let remote = git(&["remote", "get-url", "origin"]).or_else(|| {
        let first = git(&["remote"])?.lines().next()?.to_string();
        git(&["remote", "get-url", &first])
    })?;
    project_from_remote(&remote)
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
}
