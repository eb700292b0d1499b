//! Merge request discussions: one diff discussion per finding, found again on the next run by a
//! marker holding the finding's fingerprint, so that a re-run updates its discussions instead of
//! adding new ones, reopens one whose finding came back, and resolves those whose finding is gone.
//!
//! A discussion someone resolved by hand while its finding stays (the fingerprint holds the line's
//! code, so the code is unchanged) is a dismissed finding: it stays resolved, and is counted once
//! for the experiment arm that found it (marked in its body) so that `usage --by arm` can compare
//! how often each arm's findings are dismissed. A discussion tollgate resolves is marked so, to
//! tell the two apart.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::json;

use super::{Report, ReviewFinding, fingerprint};
use crate::policy::source::{GitlabAuth, enc};

const MARKER: &str = "<!-- tollgate-review:";
/// The arm of the review call that found it.
const ARM: &str = "<!-- tollgate-arm:";
/// Resolved by tollgate (the finding went away), not by a person.
const GONE: &str = "<!-- tollgate-resolved -->";
/// Resolved by a person with the finding still there; counted once.
const DISMISSED: &str = "<!-- tollgate-dismissed -->";

/// Where the merge request is, from GitLab CI's predefined variables.
#[derive(Debug, Clone)]
pub struct MergeRequest {
    /// `CI_API_V4_URL`, e.g. `https://gitlab.example.com/api/v4`.
    pub api: String,
    pub project: String,
    pub iid: u64,
}

impl MergeRequest {
    /// From `CI_API_V4_URL`, `CI_PROJECT_ID` and `CI_MERGE_REQUEST_IID`.
    pub fn from_env() -> Result<Self, String> {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        let missing = |n: &str| {
            format!(
                "{n} is not set: run in a merge request pipeline (rules: if: $CI_PIPELINE_SOURCE == \"merge_request_event\")"
            )
        };
        Ok(Self {
            api: var("CI_API_V4_URL").ok_or_else(|| missing("CI_API_V4_URL"))?.trim_end_matches('/').to_string(),
            project: var("CI_PROJECT_ID").ok_or_else(|| missing("CI_PROJECT_ID"))?,
            iid: var("CI_MERGE_REQUEST_IID")
                .ok_or_else(|| missing("CI_MERGE_REQUEST_IID"))?
                .parse()
                .map_err(|_| "CI_MERGE_REQUEST_IID is not a number".to_string())?,
        })
    }

    fn url(&self, rest: &str) -> String {
        format!("{}/projects/{}/merge_requests/{}{rest}", self.api, enc(&self.project), self.iid)
    }
}

/// What a sync did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Posted {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub resolved: usize,
    pub reopened: usize,
    /// Discussions resolved by hand since the last run while their finding stays.
    pub dismissed: usize,
    /// The same, by the arm that found each (`experiment: arm`).
    pub dismissed_by_arm: std::collections::BTreeMap<String, u64>,
}

#[derive(Deserialize)]
struct Discussion {
    id: String,
    notes: Vec<Note>,
}

#[derive(Deserialize)]
struct Note {
    id: u64,
    body: String,
    #[serde(default)]
    resolved: bool,
}

#[derive(Deserialize)]
struct DiffRefs {
    base_sha: String,
    head_sha: String,
    start_sha: String,
}

fn body(f: &ReviewFinding) -> String {
    let mut b = format!("**{}** ({}): {}\n", f.severity.as_str(), f.category, f.message);
    if let Some(s) = &f.suggestion {
        b.push_str(&format!("\n```suggestion:-0+0\n{s}\n```\n"));
    }
    b.push_str(&format!("\n{MARKER}{} -->", fingerprint(f)));
    if let Some(arm) = &f.arm {
        // An HTML comment cannot hold `--`.
        b.push_str(&format!("\n{ARM}{} -->", arm.replace("--", "-")));
    }
    b
}

fn arm_of(body: &str) -> Option<&str> {
    let start = body.find(ARM)? + ARM.len();
    body[start..].split(" -->").next().map(str::trim)
}

fn fingerprint_of(body: &str) -> Option<&str> {
    let start = body.find(MARKER)? + MARKER.len();
    body[start..].split(" -->").next().map(str::trim)
}

async fn check(resp: Result<reqwest::Response, reqwest::Error>, what: &str) -> Result<reqwest::Response, String> {
    let resp = resp.map_err(|e| format!("{what}: cannot reach GitLab: {}", e.without_url()))?;
    if resp.status().is_success() {
        return Ok(resp);
    }
    if let Some(refusal) = crate::providers::redirect_refusal(&resp) {
        return Err(format!("{what}: GitLab {refusal}"));
    }
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let hint = if status == 401 || status == 403 {
        " (posting discussions needs a project or personal access token with api scope in TOLLGATE_GITLAB_API_KEY; CI_JOB_TOKEN cannot)"
    } else {
        ""
    };
    Err(format!("{what}: GitLab answered {status} {}{hint}", text.chars().take(200).collect::<String>()))
}

/// Puts `body` in place of the text of a discussion's first note (`(discussion, note)`).
async fn rewrite(
    http: &reqwest::Client,
    mr: &MergeRequest,
    auth: &GitlabAuth,
    (discussion, note): (&str, u64),
    body: &str,
    what: &str,
) -> Result<(), String> {
    let url = mr.url(&format!("/discussions/{discussion}/notes/{note}"));
    check(auth.apply(http.put(url)).json(&json!({"body": body})).send().await, what).await.map(drop)
}

/// Brings the merge request's tollgate discussions in line with `report`.
pub async fn sync(
    http: &reqwest::Client,
    mr: &MergeRequest,
    auth: &GitlabAuth,
    report: &Report,
) -> Result<Posted, String> {
    let auth_req = |r: reqwest::RequestBuilder| auth.apply(r);
    let refs: DiffRefs = check(auth_req(http.get(mr.url(""))).send().await, "reading the merge request")
        .await?
        .json::<serde_json::Value>()
        .await
        .ok()
        .and_then(|v| serde_json::from_value(v["diff_refs"].clone()).ok())
        .ok_or("the merge request has no diff_refs yet; retry once GitLab computed its diff")?;

    let mut ours: HashMap<String, (String, u64, String, bool)> = HashMap::new();
    let mut page = Some("1".to_string());
    while let Some(p) = page {
        let resp = check(
            auth_req(http.get(mr.url(&format!("/discussions?per_page=100&page={p}")))).send().await,
            "listing discussions",
        )
        .await?;
        page = resp
            .headers()
            .get("x-next-page")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        let discussions: Vec<Discussion> = resp.json().await.map_err(|e| format!("listing discussions: {e}"))?;
        for d in discussions {
            if let Some(n) = d.notes.first()
                && let Some(fp) = fingerprint_of(&n.body)
            {
                ours.insert(fp.to_string(), (d.id.clone(), n.id, n.body.clone(), n.resolved));
            }
        }
    }

    let mut posted = Posted::default();
    let mut seen = std::collections::HashSet::new();
    for f in &report.findings {
        let fp = fingerprint(f);
        if !seen.insert(fp.clone()) {
            continue;
        }
        let text = body(f);
        match ours.get(&fp) {
            Some((discussion, note, old, resolved)) => {
                if *resolved && !old.contains(GONE) {
                    // Resolved by hand, the code unchanged: dismissed. Counted the first time seen.
                    if !old.contains(DISMISSED) {
                        let marked = format!("{old}\n{DISMISSED}");
                        rewrite(http, mr, auth, (discussion, *note), &marked, "marking a dismissal").await?;
                        posted.dismissed += 1;
                        if let Some(arm) = arm_of(old).map(str::to_string).or_else(|| f.arm.clone()) {
                            *posted.dismissed_by_arm.entry(arm).or_default() += 1;
                        }
                    }
                    continue;
                }
                if *old != text {
                    rewrite(http, mr, auth, (discussion, *note), &text, "updating a discussion").await?;
                    posted.updated += 1;
                } else {
                    posted.unchanged += 1;
                }
                if *resolved {
                    let url = mr.url(&format!("/discussions/{discussion}?resolved=false"));
                    check(auth_req(http.put(url)).send().await, "reopening a discussion").await?;
                    posted.reopened += 1;
                }
            }
            None => {
                let position = json!({
                    "position_type": "text",
                    "base_sha": refs.base_sha, "start_sha": refs.start_sha, "head_sha": refs.head_sha,
                    "new_path": f.path, "old_path": f.path, "new_line": f.line,
                });
                check(
                    auth_req(http.post(mr.url("/discussions")))
                        .json(&json!({"body": text, "position": position}))
                        .send()
                        .await,
                    "creating a discussion",
                )
                .await?;
                posted.created += 1;
            }
        }
    }
    for (fp, (discussion, note, old, resolved)) in &ours {
        if !seen.contains(fp) && !resolved {
            let marked = format!("{old}\n{GONE}");
            rewrite(http, mr, auth, (discussion, *note), &marked, "marking a resolution").await?;
            let url = mr.url(&format!("/discussions/{discussion}?resolved=true"));
            check(auth_req(http.put(url)).send().await, "resolving a discussion").await?;
            posted.resolved += 1;
        }
    }
    Ok(posted)
}
