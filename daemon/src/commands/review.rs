//! The commands around reviews and prompt tasks: `tollgate review`, the pre-push hook's check,
//! and `tollgate explain|tests|docs|commit-message`. They ask the running daemon; when none runs
//! (or `--in-process`, or a CI job with `--mr`) they start a gateway in this process on the same
//! config, policy and data directory.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::{Loaded, OnError, Severity};
use crate::paths::Paths;
use crate::review::{Changes, Report};
use crate::tasks::PromptCall;
use crate::tasks::{PromptAnswer, PromptRunner};

/// Where the CLI's prompts run: the daemon over its socket, or a gateway in this process (CI
/// jobs, or no daemon running).
pub enum Runner {
    Daemon(crate::ipc::DaemonClient),
    InProcess(Arc<crate::pipeline::Gateway>),
}

impl PromptRunner for Runner {
    async fn prompt(&self, name: &str, call: PromptCall) -> Result<PromptAnswer, String> {
        match self {
            Runner::Daemon(daemon) => daemon.prompt(name, &call).await.map_err(|e| e.to_string()),
            Runner::InProcess(gw) => gw.prompt(name, call).await,
        }
    }

    async fn reviewed(&self, outcomes: Vec<crate::tasks::ReviewOutcome>) -> Result<(), String> {
        match self {
            Runner::Daemon(daemon) => daemon.review_outcomes(&outcomes).await.map(drop).map_err(|e| e.to_string()),
            Runner::InProcess(gw) => gw.reviewed(outcomes).await,
        }
    }
}

/// How a review report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    GitlabCodequality,
    Sarif,
}

/// The daemon if it runs; otherwise (or when asked) a gateway in this process. The returned lock
/// keeps a daemon from starting on the same data while the in-process gateway works.
pub async fn runner(
    paths: &Paths,
    loaded: Loaded,
    in_process: bool,
) -> anyhow::Result<(Runner, Option<crate::daemon::InstanceLock>)> {
    let daemon = crate::ipc::daemon(paths);
    if !in_process && daemon.running().await {
        return Ok((Runner::Daemon(daemon), None));
    }
    let lock = match crate::daemon::lock(paths) {
        Ok(l) => l,
        // A daemon holds the data: ask it after all.
        Err(_) => return Ok((Runner::Daemon(daemon), None)),
    };
    let initial = crate::reload::Initial::load(loaded, paths)?;
    let gateway = crate::daemon::open_gateway(initial.runtime, paths).await?;
    Ok((Runner::InProcess(Arc::new(gateway)), Some(lock)))
}

fn repo_dir() -> anyhow::Result<PathBuf> {
    std::env::current_dir().context("cannot read the current directory")
}

fn project_of(repo: &Path) -> Option<String> {
    std::env::var("CI_PROJECT_PATH").ok().filter(|p| !p.is_empty()).or_else(|| crate::identity::project_of_dir(repo))
}

/// Writes the report in `format` to `out`.
fn write_report(report: &Report, format: Format, out: &mut dyn Write) -> anyhow::Result<()> {
    match format {
        Format::Text => out.write_all(crate::review::text(report).as_bytes())?,
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(report)?)?,
        Format::GitlabCodequality => {
            writeln!(out, "{}", serde_json::to_string_pretty(&crate::review::codequality(report))?)?
        }
        Format::Sarif => writeln!(out, "{}", serde_json::to_string_pretty(&crate::review::sarif(report))?)?,
    }
    Ok(())
}

fn summary(report: &Report, block: Severity) -> String {
    let blocking = report.blocking(block).count();
    let mut s = format!(
        "{} finding(s) in {} chunk(s), {blocking} at or above {}; {} answered from the cache",
        report.findings.len(),
        report.chunks,
        block.as_str(),
        report.cached
    );
    if !report.errors.is_empty() {
        s.push_str(&format!("; {} chunk(s) failed: {}", report.errors.len(), report.errors.join("; ")));
    }
    s
}

pub struct ReviewArgs {
    pub changes: Changes,
    pub format: Format,
    pub output: Option<PathBuf>,
    pub concurrency: usize,
    pub fail_on: Option<Severity>,
    pub in_process: bool,
    pub post_discussions: bool,
}

/// `tollgate review`: exit 1 when a finding reaches the blocking severity, 2 when the review
/// itself failed.
pub async fn review(paths: &Paths, loaded: Loaded, args: ReviewArgs) -> anyhow::Result<ExitCode> {
    let repo = repo_dir()?;
    let block = args.fail_on.unwrap_or(loaded.config.review.block_severity);
    let chunks = crate::review::collect(&repo, &args.changes)?;
    if chunks.is_empty() {
        eprintln!("nothing to review: the change adds no lines");
    }
    let (backend, limits) = (loaded.config.keychain.backend, loaded.config.limits.clone());
    let (runner, _lock) = runner(paths, loaded, args.in_process).await?;
    let report = crate::review::review(&runner, chunks, args.concurrency, project_of(&repo)).await;
    match &args.output {
        Some(path) => {
            let mut f = std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
            write_report(&report, args.format, &mut f)?;
            if args.format != Format::Text {
                print!("{}", crate::review::text(&report));
            }
        }
        None => write_report(&report, args.format, &mut std::io::stdout().lock())?,
    }
    eprintln!("{}", summary(&report, block));
    let mut arms = report.arms.clone();
    if args.post_discussions {
        let mr = crate::review::mr::MergeRequest::from_env().map_err(anyhow::Error::msg)?;
        let keychain = tokio::task::spawn_blocking(move || crate::keychain::Keychain::open(backend)).await?;
        let credentials = crate::keychain::Credentials::new(keychain);
        let auth = match credentials.get("gitlab").await {
            Some((t, _)) => crate::policy::source::GitlabAuth::Token(t),
            None => anyhow::bail!(
                "posting discussions needs a GitLab token with api scope: set TOLLGATE_GITLAB_API_KEY (a masked CI variable)"
            ),
        };
        let http = crate::providers::http_client(&limits);
        let posted = crate::review::mr::sync(&http, &mr, &auth, &report).await.map_err(anyhow::Error::msg)?;
        eprintln!(
            "merge request discussions: {} created, {} updated, {} unchanged, {} resolved, {} reopened, {} dismissed",
            posted.created, posted.updated, posted.unchanged, posted.resolved, posted.reopened, posted.dismissed
        );
        for (arm, n) in posted.dismissed_by_arm {
            arms.entry(arm.clone())
                .or_insert_with(|| crate::tasks::ReviewOutcome { arm, ..Default::default() })
                .dismissed += n;
        }
    }
    if !arms.is_empty()
        && let Err(e) = runner.reviewed(arms.into_values().collect()).await
    {
        eprintln!("warning: how the review went per experiment arm was not kept: {e}");
    }
    if !report.errors.is_empty() && report.errors.len() == report.chunks {
        return Ok(ExitCode::from(2));
    }
    Ok(if report.blocking(block).next().is_some() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

const ZERO: &str = "0000000000000000000000000000000000000000";

/// The base to review a new branch from: its merge base with the remote's default branch.
fn new_branch_base(repo: &Path, remote: &str, sha: &str) -> Option<String> {
    let git = |args: &[&str]| crate::git::run(repo, args).ok().map(|o| String::from_utf8_lossy(&o).trim().to_string());
    let default = git(&["rev-parse", "--abbrev-ref", &format!("{remote}/HEAD")]).or_else(|| {
        ["main", "master"].iter().find_map(|b| {
            git(&["rev-parse", "--verify", "--quiet", &format!("{remote}/{b}")]).map(|_| format!("{remote}/{b}"))
        })
    })?;
    git(&["merge-base", sha, &default])
}

/// The pre-push hook: reads git's `<local ref> <local sha> <remote ref> <remote sha>` lines,
/// reviews each pushed range, and blocks the push on a finding at the blocking severity. A
/// timeout or gateway error lets the push through with a warning unless the policy fails closed.
pub async fn pre_push(paths: &Paths, loaded: Loaded, remote: &str) -> anyhow::Result<ExitCode> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).context("cannot read the refs git passes to the hook")?;
    if std::env::var("TOLLGATE_SKIP_REVIEW").is_ok_and(|v| v == "1") {
        eprintln!("tollgate: review skipped (TOLLGATE_SKIP_REVIEW=1)");
        return Ok(ExitCode::SUCCESS);
    }
    let review = loaded.config.review.clone();
    let repo = repo_dir()?;
    let mut ranges = Vec::new();
    for line in input.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [_, local_sha, _, remote_sha] = parts[..] else { continue };
        if local_sha == ZERO {
            continue; // a deletion
        }
        let base =
            if remote_sha == ZERO { new_branch_base(&repo, remote, local_sha) } else { Some(remote_sha.to_string()) };
        match base {
            Some(b) if b != local_sha => ranges.push(format!("{b}..{local_sha}")),
            Some(_) => {}
            None => eprintln!("tollgate: no base found for {local_sha} on {remote}; not reviewed"),
        }
    }
    let bypass = "push anyway with `git push --no-verify`, or TOLLGATE_SKIP_REVIEW=1 git push";
    let fail = |why: String| -> ExitCode {
        match review.on_error {
            OnError::Open => {
                eprintln!("tollgate: warning: the review could not run ({why}); the push goes on");
                ExitCode::SUCCESS
            }
            OnError::Closed => {
                eprintln!("tollgate: the review could not run ({why}) and the policy fails closed; {bypass}");
                ExitCode::from(1)
            }
        }
    };
    let mut chunks = Vec::new();
    for r in &ranges {
        match crate::review::collect(&repo, &Changes::Range(r.clone())) {
            Ok(c) => chunks.extend(c),
            Err(e) => return Ok(fail(format!("{e:#}"))),
        }
    }
    if chunks.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let work = async {
        let (runner, _lock) = runner(paths, loaded, false).await?;
        Ok::<_, anyhow::Error>(crate::review::review(&runner, chunks, 4, project_of(&repo)).await)
    };
    let report = match tokio::time::timeout(Duration::from_secs(review.timeout_s), work).await {
        Err(_) => return Ok(fail(format!("no answer within {}s (review.timeout_s)", review.timeout_s))),
        Ok(Err(e)) => return Ok(fail(format!("{e:#}"))),
        Ok(Ok(r)) if !r.errors.is_empty() && r.errors.len() == r.chunks => return Ok(fail(r.errors.join("; "))),
        Ok(Ok(r)) => r,
    };
    eprint!("{}", crate::review::text(&report));
    eprintln!("tollgate: {}", summary(&report, review.block_severity));
    if report.blocking(review.block_severity).next().is_some() {
        eprintln!(
            "tollgate: push blocked: fix the findings at or above {} (review.block_severity), or {bypass}",
            review.block_severity.as_str()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// `FILE[:A-B]` -> the file's text (or those lines), its path and language.
fn code_of(target: &str) -> anyhow::Result<(String, String, String)> {
    let (file, lines) = match target.rsplit_once(':') {
        Some((f, l)) if !l.is_empty() && l.chars().all(|c| c.is_ascii_digit() || c == '-') => (f, Some(l)),
        _ => (target, None),
    };
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?;
    let code = match lines {
        None => text,
        Some(l) => {
            let (a, b) = l.split_once('-').unwrap_or((l, l));
            let (a, b): (usize, usize) = (a.parse().unwrap_or(1).max(1), b.parse().unwrap_or(usize::MAX));
            anyhow::ensure!(a <= b, "lines {l}: the first is after the last");
            text.lines().skip(a - 1).take(b - a + 1).collect::<Vec<_>>().join("\n")
        }
    };
    Ok((code, file.to_string(), crate::syntax::language_name(file)))
}

/// `tollgate explain|tests|docs FILE[:A-B]` and `tollgate commit-message`: one prompt, its answer
/// on stdout.
pub async fn prompt(
    paths: &Paths,
    loaded: Loaded,
    name: &str,
    target: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let repo = repo_dir()?;
    let mut variables = BTreeMap::new();
    let mut path = None;
    match target {
        Some(t) => {
            let (code, file, language) = code_of(t)?;
            variables.insert("code".to_string(), code);
            variables.insert("language".to_string(), language);
            variables.insert("path".to_string(), file.clone());
            path = Some(file);
        }
        None => {
            let diff = crate::git::run(&repo, &["diff", "--cached", "--no-color", "--no-ext-diff"])?;
            anyhow::ensure!(!diff.is_empty(), "nothing is staged: `git add` the change first");
            variables.insert("diff".to_string(), String::from_utf8_lossy(&diff).into_owned());
        }
    }
    let (runner, _lock) = runner(paths, loaded, false).await?;
    let call = PromptCall { variables, project: project_of(&repo), path, ..Default::default() };
    let answer = runner.prompt(name, call).await.map_err(anyhow::Error::msg)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!("{}", answer.text.trim_end());
    }
    Ok(ExitCode::SUCCESS)
}
