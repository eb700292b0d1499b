//! Keeping the daemon's configuration current: the policy synced from its source (at start, every
//! `policy.sync_interval_s`, on `tollgate policy sync`, and on a change to a local-directory
//! source), the local config file looked at every second, and the GitLab identity refreshed with
//! the policy. Whatever changes, the runtime is rebuilt whole and swapped in; anything invalid
//! keeps the previous runtime and is reported (log, `tollgate policy status`, `tollgate status`).
//! The last good policy is kept on disk and used while the source cannot be reached.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;

use crate::config::{Loaded, Overrides};
use crate::identity::Identity;
use crate::paths::{self, Paths};
use crate::pipeline::Gateway;
use crate::policy::source::{self, FetchError, Gitlab, GitlabAuth, PolicySource};
use crate::policy::{Policy, Problem, Snapshot};
use crate::runtime::Runtime;
use crate::utc;

/// The longest wait between two tries while the source keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// File changes closer together than this are one change (editors write in several steps).
const DEBOUNCE: Duration = Duration::from_millis(250);
/// How often the config file is looked at for a change.
const CONFIG_POLL: Duration = Duration::from_secs(1);

pub use tollgate_protocol::PolicyStatus;

struct State {
    policy: Option<Arc<Policy>>,
    identity: Identity,
    status: PolicyStatus,
}

/// The daemon's reload and sync machinery.
pub struct Reloader {
    gateway: Arc<Gateway>,
    paths: Paths,
    config_file: Option<PathBuf>,
    config_required: bool,
    overrides: Overrides,
    /// `policy.source` and `policy.gitlab_url` as the daemon started with them.
    source: Option<PolicySource>,
    setting: String,
    gitlab_url: Option<String>,
    interval: Duration,
    http: reqwest::Client,
    state: Mutex<State>,
    /// One sync at a time (the timer, `tollgate policy sync`, a directory change).
    syncing: tokio::sync::Mutex<()>,
    wake: Notify,
}

/// What the daemon starts on: the local config with the last good policy on disk applied.
pub struct Initial {
    pub runtime: Runtime,
    /// What [`Reloader`] starts from.
    pub seed: Seed,
}

pub struct Seed {
    policy: Option<Arc<Policy>>,
    identity: Identity,
    status: PolicyStatus,
}

fn snapshot_file(paths: &Paths) -> PathBuf {
    paths.policy_dir().join("snapshot.json")
}

fn identity_file(paths: &Paths) -> PathBuf {
    paths.policy_dir().join("identity.json")
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn save_json<T: Serialize>(paths: &Paths, path: &Path, value: &T) {
    let result = paths::create_private_dir(&paths.policy_dir())
        .and_then(|()| paths::write_private_file(path, &serde_json::to_vec_pretty(value).unwrap_or_default()));
    if let Err(e) = result {
        tracing::warn!(file = %path.display(), error = %e, "cannot save policy state");
    }
}

/// The last good snapshot on disk, for `setting`, if any.
pub fn saved_snapshot(paths: &Paths, setting: &str) -> Option<Snapshot> {
    read_json::<Snapshot>(&snapshot_file(paths)).filter(|s| s.source == setting)
}

/// The last good policy synced for `setting`, if any still checks out.
pub fn saved_policy(paths: &Paths, setting: &str) -> Option<Policy> {
    match Policy::parse(&saved_snapshot(paths, setting)?) {
        Ok(p) => Some(p),
        Err(problems) => {
            tracing::warn!(problems = problems.len(), "the saved policy no longer checks out; waiting for a sync");
            None
        }
    }
}

impl Initial {
    pub fn load(loaded: Loaded, paths: &Paths) -> anyhow::Result<Self> {
        let setting = loaded.config.policy.source.clone();
        let mut status = PolicyStatus { source: setting.clone(), ..Default::default() };
        let identity = read_json::<Identity>(&identity_file(paths)).unwrap_or_else(crate::identity::local);
        let policy = saved_policy(paths, &setting).map(Arc::new);
        if let Some(p) = &policy {
            status.commit = Some(p.commit.clone());
        } else if !setting.is_empty() {
            status.last_error = Some("no policy synced yet; the first sync is running".into());
        }
        let runtime = match Runtime::build(loaded.clone(), policy.as_deref(), identity.clone()) {
            Ok(rt) => rt,
            Err(e) if policy.is_some() => {
                tracing::error!(error = %e, "the saved policy does not apply to this config; starting without it");
                status.last_error = Some(format!("the saved policy does not apply: {e:#}"));
                Runtime::build(loaded, None, identity.clone())?
            }
            Err(e) => return Err(e),
        };
        status.ignored = runtime.ignored.clone();
        Ok(Self { runtime, seed: Seed { policy, identity, status } })
    }
}

impl Reloader {
    pub fn new(
        gateway: Arc<Gateway>,
        seed: Seed,
        paths: Paths,
        config_file: Option<PathBuf>,
        config_required: bool,
        overrides: Overrides,
    ) -> anyhow::Result<Arc<Self>> {
        let config = Arc::clone(&gateway.runtime().config);
        let setting = config.policy.source.clone();
        let source = PolicySource::parse(&setting).map_err(|e| anyhow::anyhow!("policy.source: {e}"))?;
        let gitlab_url = Some(config.policy.gitlab_url.trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .or_else(|| source.as_ref().and_then(|s| s.gitlab_api()).map(str::to_string));
        Ok(Arc::new(Self {
            http: crate::providers::http_client(&config.limits),
            interval: Duration::from_secs(config.policy.sync_interval_s.max(1)),
            state: Mutex::new(State { policy: seed.policy, identity: seed.identity, status: seed.status }),
            syncing: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            gateway,
            paths,
            config_file,
            config_required,
            overrides,
            source,
            setting,
            gitlab_url,
        }))
    }

    pub fn status(&self) -> PolicyStatus {
        let (mut s, fetched_ms) = {
            let st = self.state.lock().expect("policy state");
            (st.status.clone(), st.policy.as_ref().map(|p| p.fetched_ms))
        };
        let now = utc::now_ms();
        s.age_s = fetched_ms.map(|f| (now - f) / 1000);
        s.fetched_at = fetched_ms.map(utc::iso);
        s.identity = Some(self.gateway.runtime().identity.clone());
        s
    }

    /// Starts the sync loop and the file watchers.
    pub fn start(self: &Arc<Self>) {
        if self.source.is_some() {
            tokio::spawn(Arc::clone(self).sync_loop());
        }
        if let Some(file) = &self.config_file {
            Arc::clone(self).poll_config(file.clone());
        }
        if let Some(PolicySource::Dir(dir)) = &self.source
            && let Err(e) = Arc::clone(self).watch_policy(dir)
        {
            tracing::warn!(error = %e, path = %dir.display(), "cannot watch the policy directory; restart the daemon to apply its changes");
        }
    }

    /// Rebuilds the runtime from the config file as it is now. An invalid config keeps the
    /// previous runtime and is reported.
    pub async fn reload(&self, why: &str) -> Result<(), String> {
        let (policy, identity) = {
            let st = self.state.lock().expect("policy state");
            (st.policy.clone(), st.identity.clone())
        };
        let built = match Loaded::load_unchecked(self.config_file.as_deref(), self.config_required, &self.overrides) {
            Ok(loaded) => build_off_workers(loaded, policy, identity).await.map_err(|e| format!("{e:#}")),
            Err(e) => Err(e.to_string()),
        };
        let mut st_err = None;
        match built {
            Ok(rt) => {
                let restart = self.gateway.runtime().needs_restart(&rt.config);
                let ignored = rt.ignored.clone();
                self.gateway.swap(rt).await;
                tracing::info!(why, "configuration reloaded");
                if !restart.is_empty() {
                    tracing::warn!(settings = ?restart, "changed settings take effect at the next start");
                }
                let mut st = self.state.lock().expect("policy state");
                st.status.config_error = None;
                st.status.ignored = ignored;
                st.status.needs_restart = restart.into_iter().map(str::to_string).collect();
            }
            Err(e) => {
                tracing::error!(why, error = %e, "the new configuration is invalid; keeping the previous one");
                st_err = Some(e.clone());
                self.state.lock().expect("policy state").status.config_error = Some(e);
            }
        }
        st_err.map_or(Ok(()), Err)
    }

    /// Checks the source now; fetches and applies a new commit. `Ok(true)`: a new policy is in force.
    pub async fn sync(&self) -> Result<bool, String> {
        self.sync_once().await.map_err(|e| e.to_string())
    }

    async fn sync_once(&self) -> Result<bool, FetchError> {
        let _one = self.syncing.lock().await;
        let Some(source) = &self.source else {
            return Err(FetchError::Failed("no policy source is set (policy.source in the config)".into()));
        };
        let result = self.sync_from(source).await;
        let mut st = self.state.lock().expect("policy state");
        st.status.last_check = Some(utc::iso(utc::now_ms()));
        st.status.last_error = result.as_ref().err().map(ToString::to_string);
        result
    }

    async fn sync_from(&self, source: &PolicySource) -> Result<bool, FetchError> {
        let identity_changed = self.refresh_identity().await;
        let (current, rejected) = {
            let st = self.state.lock().expect("policy state");
            (st.policy.as_ref().map(|p| p.commit.clone()), st.status.rejected_commit.clone())
        };
        let unchanged = |head: &String| Some(head) == current.as_ref() || Some(head) == rejected.as_ref();
        let auth;
        let (head, files) = match source {
            PolicySource::Dir(dir) => {
                let (dir, setting) = (dir.clone(), self.setting.clone());
                let snap = tokio::task::spawn_blocking(move || crate::policy::read_dir(&dir, &setting))
                    .await
                    .map_err(|e| FetchError::Failed(e.to_string()))?
                    .map_err(|e| FetchError::Failed(format!("cannot read the policy directory: {e}")))?;
                (snap.commit, Some(snap.files))
            }
            PolicySource::Gitlab { api, project, reference } => {
                auth = GitlabAuth::find(&self.gateway.credentials).await;
                let gl = Gitlab { http: &self.http, api, auth: &auth };
                let head = gl.head(project, reference).await?;
                let files = if unchanged(&head) { None } else { Some(gl.files(project, &head).await?) };
                (head, files)
            }
            PolicySource::Git { url, reference } => {
                let head = source::git_head(url, reference.as_deref()).await?;
                let files = if unchanged(&head) {
                    None
                } else {
                    let cache = self.paths.policy_dir().join("git");
                    Some(source::git_files(&cache, url, reference.as_deref(), &head).await?)
                };
                (head, files)
            }
        };
        let snapshot = files.map(|files| Snapshot {
            source: self.setting.clone(),
            commit: head.clone(),
            fetched_ms: utc::now_ms(),
            files,
        });
        if identity_changed && unchanged(&head) {
            self.reload("the GitLab identity changed").await.map_err(FetchError::Failed)?;
        }
        if Some(&head) == rejected.as_ref() {
            let problems = self.state.lock().expect("policy state").status.problems.clone();
            return Err(FetchError::Failed(rejected_message(&head, &problems, current.as_deref())));
        }
        let Some(snapshot) = snapshot.filter(|_| !unchanged(&head)) else { return Ok(false) };
        let policy = match Policy::parse(&snapshot) {
            Ok(p) => Arc::new(p),
            Err(problems) => {
                for p in &problems {
                    tracing::error!(commit = %snapshot.commit, "policy rejected: {p}");
                }
                let message = rejected_message(&snapshot.commit, &problems, current.as_deref());
                let mut st = self.state.lock().expect("policy state");
                st.status.rejected_commit = Some(snapshot.commit.clone());
                st.status.problems = problems;
                return Err(FetchError::Failed(message));
            }
        };
        let identity = self.state.lock().expect("policy state").identity.clone();
        let loaded = Loaded::load_unchecked(self.config_file.as_deref(), self.config_required, &self.overrides)
            .map_err(|e| FetchError::Failed(format!("the local config is invalid, so the policy waits: {e}")))?;
        let rt = build_off_workers(loaded, Some(Arc::clone(&policy)), identity).await.map_err(|e| {
            FetchError::Failed(format!("policy {} does not apply: {e:#}; keeping the previous one", policy.label()))
        })?;
        let ignored = rt.ignored.clone();
        self.gateway.swap(rt).await;
        save_json(&self.paths, &snapshot_file(&self.paths), &snapshot);
        tracing::info!(policy = %policy.label(), "policy applied");
        let mut st = self.state.lock().expect("policy state");
        st.status.commit = Some(policy.commit.clone());
        st.status.rejected_commit = None;
        st.status.problems.clear();
        st.status.ignored = ignored;
        st.policy = Some(policy);
        Ok(true)
    }

    /// Reads the user's GitLab identity when a GitLab instance and a token are known; `true` when
    /// it changed. A failure keeps the identity known so far.
    async fn refresh_identity(&self) -> bool {
        let Some(api) = &self.gitlab_url else { return false };
        let auth = GitlabAuth::find(&self.gateway.credentials).await;
        if !matches!(auth, GitlabAuth::Token(_)) {
            return false; // a job token cannot read /user; CI jobs use GITLAB_USER_LOGIN
        }
        match (Gitlab { http: &self.http, api, auth: &auth }).identity().await {
            Ok(identity) => {
                let mut st = self.state.lock().expect("policy state");
                if st.identity == identity {
                    return false;
                }
                tracing::info!(user = %identity.username, groups = identity.groups.len(), "GitLab identity read");
                save_json(&self.paths, &identity_file(&self.paths), &identity);
                st.identity = identity;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the GitLab identity; keeping the last one known");
                false
            }
        }
    }

    async fn sync_loop(self: Arc<Self>) {
        let mut failures: u32 = 0;
        let mut wait = Duration::ZERO;
        loop {
            if !wait.is_zero() {
                let at = utc::now_ms() + wait.as_millis() as i64;
                self.state.lock().expect("policy state").status.next_check = Some(utc::iso(at));
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = self.wake.notified() => {}
                }
            }
            let outcome = self.sync_once().await;
            wait = match outcome {
                Ok(_) => {
                    failures = 0;
                    self.interval
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let backoff = self.interval.saturating_mul(1 << (failures - 1).min(16)).min(MAX_BACKOFF);
                    tracing::warn!(error = %e, retry_in_s = backoff.as_secs(), "policy sync failed; the policy in force stays");
                    backoff.max(e.retry_after().unwrap_or_default())
                }
            };
            // Jitter, so that a team's daemons do not all ask at the same second.
            wait += Duration::from_millis(fastrand::u64(0..=wait.as_millis() as u64 / 10));
        }
    }

    /// Reloads when the config file changes: its size, times or inode, looked at every
    /// [`CONFIG_POLL`] by a thread of its own (a stat of a file on a hung network home blocks that
    /// thread only, and an unchanged file wakes nothing else). Not a watch on its directory: that
    /// directory may also hold the database (`TOLLGATE_HOME`, and the platform's layout on macOS),
    /// and every write of it would wake the daemon. A look also follows a symlinked config to its
    /// target, and sees a file replaced by a rename as editors save.
    fn poll_config(self: Arc<Self>, file: PathBuf) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let looked = std::thread::Builder::new().name("tollgate-config".into()).spawn(move || {
            let mut seen = Stamp::of(&file);
            loop {
                std::thread::sleep(CONFIG_POLL);
                let now = Stamp::of(&file);
                if now == seen {
                    continue;
                }
                // Editors write in several steps: read it once they are done.
                std::thread::sleep(DEBOUNCE);
                seen = Stamp::of(&file);
                match tx.try_send(()) {
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(())) => return,
                    // A reload is already due: it reads the file as it is then.
                    Ok(()) | Err(tokio::sync::mpsc::error::TrySendError::Full(())) => {}
                }
            }
        });
        if let Err(e) = looked {
            tracing::warn!(error = %e, "cannot look at the config file for changes; restart the daemon to apply edits");
            return;
        }
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                let _ = self.reload("the config file changed").await;
            }
        });
    }

    /// Watches a directory policy source; a change syncs after [`DEBOUNCE`].
    fn watch_policy(self: Arc<Self>, dir: &Path) -> notify::Result<()> {
        use notify::{RecursiveMode, Watcher};
        let dirs = [dir.to_path_buf(), dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf())];
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if matches!(event.kind, notify::EventKind::Access(_)) {
                return;
            }
            if event.paths.iter().any(|p| dirs.iter().any(|d| p.starts_with(d))) {
                let _ = tx.send(());
            }
        })?;
        watcher.watch(dir, RecursiveMode::Recursive)?;
        tokio::spawn(async move {
            let _watcher = watcher; // lives as long as this task
            while rx.recv().await.is_some() {
                let deadline = tokio::time::sleep(DEBOUNCE);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        () = &mut deadline => break,
                        c = rx.recv() => if c.is_none() { return },
                    }
                }
                self.wake.notify_one();
            }
        });
        Ok(())
    }
}

/// What tells that a file changed without reading it.
#[derive(PartialEq)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    #[cfg(unix)]
    changed: (u64, i64, i64),
}

impl Stamp {
    /// `None` while the file is missing (its appearing is a change too).
    fn of(file: &Path) -> Option<Self> {
        let m = std::fs::metadata(file).ok()?;
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        Some(Self {
            len: m.len(),
            modified: m.modified().ok(),
            #[cfg(unix)]
            changed: (m.ino(), m.ctime(), m.ctime_nsec()),
        })
    }
}

fn rejected_message(commit: &str, problems: &[Problem], current: Option<&str>) -> String {
    let first = problems.first().map(ToString::to_string).unwrap_or_default();
    let keeping = match current {
        Some(c) => format!("keeping {}", &c[..c.len().min(12)]),
        None => "no policy is in force".into(),
    };
    format!(
        "commit {} rejected ({} problem{}: {first}{}); {keeping}",
        &commit[..commit.len().min(12)],
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        if problems.len() > 1 { "; ..." } else { "" }
    )
}
/// Builds a runtime (every rule's regexes compiled, prompts parsed: tens of milliseconds) on a
/// blocking thread, so that a reload never stalls the async workers serving requests.
async fn build_off_workers(loaded: Loaded, policy: Option<Arc<Policy>>, identity: Identity) -> anyhow::Result<Runtime> {
    tokio::task::spawn_blocking(move || Runtime::build(loaded, policy.as_deref(), identity))
        .await
        .map_err(|e| anyhow::anyhow!("building the configuration stopped: {e}"))?
}
