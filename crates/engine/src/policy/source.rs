//! Where a policy comes from, and fetching it: a GitLab project through the REST API v4, any git
//! remote through the system `git` (shallow), or a local directory. Each source first answers
//! "which commit is current?" cheaply; the files are fetched only when that changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::identity::Identity;
use crate::keychain::Secret;

use super::{MAX_FILE_BYTES, wanted};

/// How long one request to GitLab, or one git command, may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Most files a policy snapshot may hold.
const MAX_FILES: usize = 500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// `gitlab://HOST/GROUP/PROJECT?ref=main`: `api` is `https://HOST` (`http://` only for a
    /// loopback host, written `gitlab+http://`).
    Gitlab {
        api: String,
        project: String,
        reference: String,
    },
    /// A git remote, fetched with the system git.
    Git {
        url: String,
        reference: Option<String>,
    },
    Dir(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Failed(String),
    /// The server asked us to slow down.
    #[error("{message}")]
    RateLimited { message: String, retry_after: Option<Duration> },
}

impl FetchError {
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::RateLimited { retry_after, .. } => *retry_after,
            FetchError::Failed(_) => None,
        }
    }
}

fn failed(m: impl Into<String>) -> FetchError {
    FetchError::Failed(m.into())
}

/// Splits `?ref=NAME` off a URL-like setting.
fn take_ref(s: &str) -> (&str, Option<String>) {
    match s.split_once('?') {
        Some((base, query)) => {
            let r = query.split('&').find_map(|kv| kv.strip_prefix("ref=")).map(str::to_string);
            (base, r.filter(|r| !r.is_empty()))
        }
        None => (s, None),
    }
}

impl PolicySource {
    /// Reads the `policy.source` setting; `None` when it is empty.
    pub fn parse(setting: &str) -> Result<Option<Self>, String> {
        let s = setting.trim();
        if s.is_empty() {
            return Ok(None);
        }
        for (prefix, scheme) in [("gitlab://", "https"), ("gitlab+https://", "https"), ("gitlab+http://", "http")] {
            let Some(rest) = s.strip_prefix(prefix) else { continue };
            let (rest, reference) = take_ref(rest);
            let (host, project) = rest
                .split_once('/')
                .ok_or_else(|| format!("{s:?}: expected gitlab://HOST/GROUP/PROJECT?ref=BRANCH"))?;
            let project = project.trim_matches('/').trim_end_matches(".git");
            if host.is_empty() || !project.contains('/') {
                return Err(format!("{s:?}: expected gitlab://HOST/GROUP/PROJECT?ref=BRANCH"));
            }
            if scheme == "http" && !is_loopback_host(host) {
                return Err(format!(
                    "{s:?}: plain http would send the GitLab token in clear; use gitlab://{host}/... (https)"
                ));
            }
            return Ok(Some(PolicySource::Gitlab {
                api: format!("{scheme}://{host}"),
                project: project.to_string(),
                reference: reference.unwrap_or_else(|| "main".into()),
            }));
        }
        if let Some(path) = s.strip_prefix("file://") {
            return Ok(Some(PolicySource::Dir(PathBuf::from(path))));
        }
        let git = s.strip_prefix("git+").unwrap_or(s);
        let scp_like =
            !git.contains("://") && git.split_once(':').is_some_and(|(h, _)| h.len() > 1 && !h.contains('/'));
        if git.contains("://") || scp_like {
            let (url, reference) = take_ref(git);
            return Ok(Some(PolicySource::Git { url: url.to_string(), reference }));
        }
        let path = match s.strip_prefix("~/") {
            Some(rest) => directories::BaseDirs::new().map(|d| d.home_dir().join(rest)).unwrap_or_else(|| rest.into()),
            None => PathBuf::from(s),
        };
        Ok(Some(PolicySource::Dir(path)))
    }

    /// The GitLab instance (scheme://host) this source lives on, if any.
    pub fn gitlab_api(&self) -> Option<&str> {
        match self {
            PolicySource::Gitlab { api, .. } => Some(api),
            _ => None,
        }
    }
}

fn is_loopback_host(host: &str) -> bool {
    let name =
        host.rsplit_once(':').map_or(host, |(h, p)| if p.chars().all(|c| c.is_ascii_digit()) { h } else { host });
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// How to authenticate to GitLab: `CI_JOB_TOKEN` in a CI job, else the saved token.
pub enum GitlabAuth {
    Job(Secret),
    Token(Secret),
    None,
}

impl GitlabAuth {
    pub async fn find(credentials: &crate::keychain::Credentials) -> Self {
        if let Ok(t) = std::env::var("CI_JOB_TOKEN")
            && !t.is_empty()
        {
            return GitlabAuth::Job(Secret::new(t));
        }
        match credentials.get("gitlab").await {
            Some((key, _)) => GitlabAuth::Token(key),
            None => GitlabAuth::None,
        }
    }

    /// Adds the token in the header GitLab expects for its kind.
    pub(crate) fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            GitlabAuth::Job(t) => req.header("JOB-TOKEN", t.expose()),
            GitlabAuth::Token(t) => req.header("PRIVATE-TOKEN", t.expose()),
            GitlabAuth::None => req,
        }
    }
}

/// A client of one GitLab instance's REST API v4.
pub struct Gitlab<'a> {
    pub http: &'a reqwest::Client,
    pub api: &'a str,
    pub auth: &'a GitlabAuth,
}

/// Percent-encodes a project path or file path for a URL path segment.
pub(crate) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Gitlab<'_> {
    async fn get(&self, path: &str) -> Result<reqwest::Response, FetchError> {
        let url = format!("{}/api/v4{path}", self.api);
        let resp = self
            .auth
            .apply(self.http.get(&url))
            .timeout(TIMEOUT)
            .send()
            .await
            .map_err(|e| failed(format!("cannot reach GitLab at {}: {}", self.api, short(e))))?;
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return Ok(resp);
        }
        if let Some(refusal) = crate::providers::redirect_refusal(&resp) {
            return Err(failed(format!("GitLab at {} {refusal}", self.api)));
        }
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp.text().await.unwrap_or_default();
        let detail = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message").or_else(|| v.get("error")).map(|m| m.to_string()))
            .unwrap_or_default();
        let what = path.split('?').next().unwrap_or(path);
        Err(match status {
            401 | 403 => failed(format!(
                "GitLab refused the token ({status} {detail}) for {what}: save a token with read_api scope with \
                 `tollgate login gitlab` (in CI, CI_JOB_TOKEN needs access to the policy project)"
            )),
            404 => failed(format!("GitLab says {what} does not exist, or the token cannot see it (404 {detail})")),
            429 => FetchError::RateLimited {
                message: format!("GitLab rate-limited the request for {what} (429)"),
                retry_after,
            },
            _ => failed(format!("GitLab answered {status} for {what} {detail}")),
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<(T, Option<String>), FetchError> {
        let resp = self.get(path).await?;
        let next = resp
            .headers()
            .get("x-next-page")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .filter(|v| !v.is_empty());
        let bytes = resp.bytes().await.map_err(|e| failed(format!("GitLab's answer was cut: {}", short(e))))?;
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| failed(format!("GitLab's answer is not the expected JSON: {e}")))?;
        Ok((value, next))
    }

    /// The commit id at the head of `reference`.
    pub async fn head(&self, project: &str, reference: &str) -> Result<String, FetchError> {
        #[derive(serde::Deserialize)]
        struct Branch {
            commit: Commit,
        }
        #[derive(serde::Deserialize)]
        struct Commit {
            id: String,
        }
        let (b, _): (Branch, _) =
            self.json(&format!("/projects/{}/repository/branches/{}", enc(project), enc(reference))).await?;
        Ok(b.commit.id)
    }

    /// The policy files at `commit`.
    pub async fn files(&self, project: &str, commit: &str) -> Result<BTreeMap<String, String>, FetchError> {
        #[derive(serde::Deserialize)]
        struct Entry {
            path: String,
            #[serde(rename = "type")]
            kind: String,
        }
        let mut paths = Vec::new();
        let mut page = Some("1".to_string());
        while let Some(p) = page {
            let (entries, next): (Vec<Entry>, _) = self
                .json(&format!(
                    "/projects/{}/repository/tree?ref={commit}&recursive=true&per_page=100&page={p}",
                    enc(project)
                ))
                .await?;
            paths.extend(entries.into_iter().filter(|e| e.kind == "blob" && wanted(&e.path)).map(|e| e.path));
            if paths.len() > MAX_FILES {
                return Err(failed(format!("the policy repository has more than {MAX_FILES} policy files")));
            }
            page = next;
        }
        let mut files = BTreeMap::new();
        for path in paths {
            let resp = self
                .get(&format!("/projects/{}/repository/files/{}/raw?ref={commit}", enc(project), enc(&path)))
                .await?;
            let bytes =
                resp.bytes().await.map_err(|e| failed(format!("{path}: the download was cut: {}", short(e))))?;
            files.insert(path.clone(), text(&path, bytes.to_vec())?);
        }
        Ok(files)
    }

    /// Who a CI job token acts for: the user who started the job (`GET /job`, the one call a job
    /// token may make about itself), with no groups (a job token cannot list them).
    pub async fn job_identity(&self) -> Result<Identity, FetchError> {
        #[derive(serde::Deserialize)]
        struct User {
            username: String,
        }
        #[derive(serde::Deserialize)]
        struct Job {
            user: User,
        }
        let (job, _): (Job, _) = self.json("/job").await?;
        let host = self.api.split_once("://").map_or(self.api, |(_, h)| h).to_string();
        Ok(Identity { username: job.user.username, groups: Vec::new(), source: format!("{host} (CI job)") })
    }

    /// The user the token belongs to, and the full paths of their groups.
    pub async fn identity(&self) -> Result<Identity, FetchError> {
        #[derive(serde::Deserialize)]
        struct User {
            username: String,
        }
        #[derive(serde::Deserialize)]
        struct Group {
            full_path: String,
        }
        let (user, _): (User, _) = self.json("/user").await?;
        let mut groups = Vec::new();
        let mut page = Some("1".to_string());
        while let Some(p) = page {
            let (batch, next): (Vec<Group>, _) =
                self.json(&format!("/groups?min_access_level=10&per_page=100&page={p}")).await?;
            groups.extend(batch.into_iter().map(|g| g.full_path));
            page = next.filter(|_| groups.len() < 10_000);
        }
        groups.sort();
        groups.dedup();
        let host = self.api.split_once("://").map_or(self.api, |(_, h)| h).to_string();
        Ok(Identity { username: user.username, groups, source: host })
    }
}

fn text(path: &str, bytes: Vec<u8>) -> Result<String, FetchError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(failed(format!("{path} is {} bytes; a policy file may have {MAX_FILE_BYTES}", bytes.len())));
    }
    String::from_utf8(bytes).map_err(|_| failed(format!("{path} is not UTF-8 text")))
}

/// An error's text without the URL reqwest adds (it may carry a query string).
fn short(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut s = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Runs the system git with no prompts, within [`TIMEOUT`].
async fn git(dir: Option<&Path>, args: &[&str]) -> Result<Vec<u8>, FetchError> {
    crate::git::run_within(dir, args, TIMEOUT).await.map_err(|e| failed(e.to_string()))
}

/// The commit `reference` (or HEAD) points to on `url`.
pub async fn git_head(url: &str, reference: Option<&str>) -> Result<String, FetchError> {
    let r = reference.unwrap_or("HEAD");
    let out = git(None, &["ls-remote", "--", url, r]).await?;
    let text = String::from_utf8_lossy(&out);
    let wanted_names = [r.to_string(), format!("refs/heads/{r}"), format!("refs/tags/{r}")];
    text.lines()
        .filter_map(|l| l.split_once('\t'))
        .find(|(_, name)| wanted_names.iter().any(|w| w == name))
        .map(|(sha, _)| sha.to_string())
        .ok_or_else(|| failed(format!("{url} has no branch or tag {r:?}")))
}

/// Fetches `reference` shallowly into `cache` (a private git dir) and reads the policy files of
/// the commit it fetched, which must be `commit`.
pub async fn git_files(
    cache: &Path,
    url: &str,
    reference: Option<&str>,
    commit: &str,
) -> Result<BTreeMap<String, String>, FetchError> {
    if !cache.join("HEAD").exists() {
        crate::paths::create_private_dir(cache)
            .map_err(|e| failed(format!("cannot create {}: {e}", cache.display())))?;
        git(Some(cache), &["init", "--quiet", "--bare"]).await?;
    }
    let r = reference.unwrap_or("HEAD");
    git(Some(cache), &["fetch", "--quiet", "--depth", "1", "--no-tags", "--", url, r]).await?;
    let fetched = String::from_utf8_lossy(&git(Some(cache), &["rev-parse", "FETCH_HEAD"]).await?).trim().to_string();
    if fetched != commit {
        // The branch moved between the two calls: the next sync picks the newer one up.
        tracing::debug!(fetched, commit, "the branch moved while fetching");
    }
    let list = git(Some(cache), &["ls-tree", "-r", "--name-only", "-z", &fetched]).await?;
    let mut files = BTreeMap::new();
    for path in list.split(|b| *b == 0).filter_map(|p| std::str::from_utf8(p).ok()).filter(|p| wanted(p)) {
        if files.len() >= MAX_FILES {
            return Err(failed(format!("the policy repository has more than {MAX_FILES} policy files")));
        }
        let bytes = git(Some(cache), &["cat-file", "blob", &format!("{fetched}:{path}")]).await?;
        files.insert(path.to_string(), text(path, bytes)?);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_to_sources() {
        let p = |s| PolicySource::parse(s).unwrap().unwrap();
        assert_eq!(
            p("gitlab://gitlab.example.com/acme/platform/ai-policy?ref=stable"),
            PolicySource::Gitlab {
                api: "https://gitlab.example.com".into(),
                project: "acme/platform/ai-policy".into(),
                reference: "stable".into()
            }
        );
        assert_eq!(
            p("gitlab+http://127.0.0.1:8929/acme/policy"),
            PolicySource::Gitlab {
                api: "http://127.0.0.1:8929".into(),
                project: "acme/policy".into(),
                reference: "main".into()
            }
        );
        assert!(PolicySource::parse("gitlab+http://gitlab.example.com/acme/policy").unwrap_err().contains("in clear"));
        assert!(PolicySource::parse("gitlab://gitlab.example.com/policy").is_err());
        assert_eq!(
            p("git+https://gitlab.example.com/acme/policy.git?ref=main"),
            PolicySource::Git {
                url: "https://gitlab.example.com/acme/policy.git".into(),
                reference: Some("main".into())
            }
        );
        assert_eq!(
            p("git@gitlab.example.com:acme/policy.git"),
            PolicySource::Git { url: "git@gitlab.example.com:acme/policy.git".into(), reference: None }
        );
        assert_eq!(
            p("git://127.0.0.1:9418/policy.git"),
            PolicySource::Git { url: "git://127.0.0.1:9418/policy.git".into(), reference: None }
        );
        assert_eq!(p("/srv/policy"), PolicySource::Dir("/srv/policy".into()));
        assert_eq!(p("file:///srv/policy"), PolicySource::Dir("/srv/policy".into()));
        assert_eq!(PolicySource::parse("  ").unwrap(), None);
    }

    #[test]
    fn paths_are_encoded_for_the_api() {
        assert_eq!(enc("acme/platform/ai-policy"), "acme%2Fplatform%2Fai-policy");
        assert_eq!(enc("prompts/explain.md"), "prompts%2Fexplain.md");
    }
}
