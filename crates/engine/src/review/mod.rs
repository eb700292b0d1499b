//! `tollgate review`: a diff split by file and hunk, each hunk sent with its enclosing function
//! through the versioned `review` prompt, concurrently (bounded); the model's JSON checked and, if
//! malformed, asked for once more quoting the error; findings kept only on the lines the change
//! adds, then printed like compiler diagnostics or written as JSON, GitLab Code Quality or SARIF.
//! The prompt runs at temperature 0, so the gateway's cache answers a chunk seen before: reviewing
//! the same change again costs nothing.

pub mod mr;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::config::Severity;
use crate::diff;
use crate::git::run as git;
use crate::tasks::{PromptCall, PromptRunner, Repair};
use tollgate_syntax::{self as syntax, Lang};

/// The longest hunk sent as one chunk, in diff lines; longer ones are split.
const MAX_CHUNK_LINES: usize = 200;
/// The most lines of enclosing function quoted as context.
const MAX_CONTEXT_LINES: usize = 150;

/// What to review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// `A..B`, `A...B` (from their merge base), or `A` (A..HEAD).
    Range(String),
    Staged,
}

/// One hunk to review, with what the model needs to see.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub path: String,
    pub language: String,
    /// The enclosing function (or the lines around the hunk), from the new file.
    pub context: String,
    pub diff: String,
    /// New-file lines the hunk adds: findings elsewhere are dropped.
    pub added: BTreeSet<usize>,
    /// The text of each added line, for printing.
    pub lines: BTreeMap<usize, String>,
}

pub use tollgate_protocol::{FindingsReply, ReviewFinding};

/// Stable across runs while a finding is about the same code, however the model words it and
/// wherever the line moves: the file, the category and the line's code.
pub fn fingerprint(f: &ReviewFinding) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{}\0{}\0{}", f.path, f.category, f.code.trim()));
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The whole review.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub findings: Vec<ReviewFinding>,
    pub chunks: usize,
    /// Chunks the gateway answered from its cache.
    pub cached: usize,
    /// Findings the model put outside the changed lines.
    pub dropped: usize,
    /// Chunks whose review failed, and why.
    pub errors: Vec<String>,
    pub prompt_version: Option<u32>,
    /// Per experiment arm of the review calls: chunks reviewed and findings kept.
    pub arms: std::collections::BTreeMap<String, crate::protocol::ReviewOutcome>,
}

impl Report {
    /// Findings at or above `severity`.
    pub fn blocking(&self, severity: Severity) -> impl Iterator<Item = &ReviewFinding> {
        self.findings.iter().filter(move |f| f.severity >= severity)
    }
}

/// `(base, head)` of a range; `head` None means the index (staged changes).
fn endpoints(repo: &Path, changes: &Changes) -> anyhow::Result<(String, Option<String>)> {
    Ok(match changes {
        Changes::Staged => ("HEAD".into(), None),
        Changes::Range(r) => {
            if let Some((a, b)) = r.split_once("...") {
                let b = if b.is_empty() { "HEAD" } else { b };
                let base = String::from_utf8_lossy(&git(repo, &["merge-base", a, b])?).trim().to_string();
                (base, Some(b.to_string()))
            } else if let Some((a, b)) = r.split_once("..") {
                (a.to_string(), Some(if b.is_empty() { "HEAD".into() } else { b.to_string() }))
            } else {
                (r.clone(), Some("HEAD".into()))
            }
        }
    })
}

/// The diff of `changes` in `repo`, cut into chunks with their context.
pub fn collect(repo: &Path, changes: &Changes) -> anyhow::Result<Vec<Chunk>> {
    let (base, head) = endpoints(repo, changes)?;
    let mut args = vec!["-c", "core.quotePath=false", "diff", "--no-color", "--no-ext-diff", "-U3", "--find-renames"];
    match &head {
        None => args.extend(["--cached", base.as_str()]),
        Some(h) => args.extend([base.as_str(), h.as_str()]),
    }
    let text = String::from_utf8_lossy(&git(repo, &args)?).into_owned();
    let files = diff::parse(&text);
    let mut chunks = Vec::new();
    for file in files.into_iter().filter(|f| f.reviewable && !f.hunks.is_empty()) {
        let spec = match &head {
            None => format!(":{}", file.path),
            Some(h) => format!("{h}:{}", file.path),
        };
        let source = git(repo, &["show", &spec]).ok().map(|b| String::from_utf8_lossy(&b).into_owned());
        let lang = Lang::of_path(&file.path);
        for hunk in file.hunks.into_iter().flat_map(|h| h.split(MAX_CHUNK_LINES)) {
            let added = hunk.added();
            if added.is_empty() {
                continue; // only removals: nothing on the new side to comment on
            }
            let (first, last) = hunk.new_range();
            let context = source.as_deref().map(|s| context_of(s, lang, first, last)).unwrap_or_default();
            let lines = hunk
                .lines
                .iter()
                .filter(|l| l.kind == '+')
                .filter_map(|l| Some((l.new_line?, l.text.clone())))
                .collect();
            chunks.push(Chunk {
                path: file.path.clone(),
                language: syntax::language_name(&file.path),
                context,
                diff: hunk.text(),
                added,
                lines,
            });
        }
    }
    Ok(chunks)
}

/// The enclosing scope of lines `first..=last`, or 20 lines around them, capped.
fn context_of(source: &str, lang: Option<Lang>, first: usize, last: usize) -> String {
    let (start, end) = lang
        .and_then(|l| syntax::enclosing_scope(source, l, first, last))
        .filter(|(s, e)| e - s < MAX_CONTEXT_LINES)
        .unwrap_or((first.saturating_sub(20).max(1), last + 20));
    source
        .lines()
        .enumerate()
        .skip(start - 1)
        .take(end + 1 - start)
        .map(|(i, l)| format!("{:>5} {l}", i + 1))
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Deserialize)]
struct RawFindings {
    findings: Vec<RawFinding>,
}

#[derive(Deserialize)]
struct RawFinding {
    #[serde(default)]
    path: Option<String>,
    line: serde_json::Value,
    severity: String,
    #[serde(default)]
    category: Option<String>,
    message: String,
    #[serde(default)]
    suggestion: Option<String>,
}

fn severity(word: &str) -> Option<Severity> {
    Some(match word.trim().to_ascii_lowercase().as_str() {
        "info" | "note" | "hint" => Severity::Info,
        "low" | "minor" => Severity::Low,
        "medium" | "moderate" | "warning" | "major" => Severity::Medium,
        "high" | "error" => Severity::High,
        "critical" | "blocker" => Severity::Critical,
        _ => return None,
    })
}

/// One finding as the model gave it, checked but not yet placed on the diff.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The file the model named, if it named one.
    pub path: Option<String>,
    pub line: usize,
    pub severity: Severity,
    pub category: String,
    pub message: String,
    pub suggestion: Option<String>,
}

/// The model's findings, or what is wrong with its answer (quoted back to it once).
pub fn parse_findings(text: &str) -> Result<Vec<Parsed>, String> {
    let body = text.trim();
    let body = body.strip_prefix("```json").or_else(|| body.strip_prefix("```")).unwrap_or(body);
    let body = body.strip_suffix("```").unwrap_or(body).trim();
    let (Some(open), Some(close)) = (body.find('{'), body.rfind('}')) else {
        return Err("the answer holds no JSON object".into());
    };
    let raw: RawFindings = serde_json::from_str(&body[open..=close])
        .map_err(|e| format!("the JSON does not match {{\"findings\": [...]}}: {e}"))?;
    let mut out = Vec::new();
    for (i, f) in raw.findings.into_iter().enumerate() {
        let line = f
            .line
            .as_u64()
            .or_else(|| f.line.as_str().and_then(|s| s.trim().parse().ok()))
            .filter(|l| *l > 0)
            .ok_or_else(|| format!("findings[{i}].line is {}, not a line number", f.line))?;
        let sev = severity(&f.severity).ok_or_else(|| {
            format!("findings[{i}].severity is {:?}, not one of info, low, medium, high, critical", f.severity)
        })?;
        if f.message.trim().is_empty() {
            return Err(format!("findings[{i}].message is empty"));
        }
        let suggestion = f.suggestion.filter(|s| !s.trim().is_empty());
        out.push(Parsed {
            path: f.path,
            line: line as usize,
            severity: sev,
            category: f.category.unwrap_or_else(|| "bug".into()),
            message: f.message.trim().to_string(),
            suggestion,
        });
    }
    Ok(out)
}

/// Progress on a terminal: `reviewing [#####.....] 12/24 chunks`.
struct Progress {
    total: usize,
    done: AtomicUsize,
    on: bool,
}

impl Progress {
    fn tick(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if self.on {
            let width = 24;
            let filled = done * width / self.total.max(1);
            let bar: String = "#".repeat(filled) + &".".repeat(width - filled);
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\rreviewing [{bar}] {done}/{} chunks", self.total);
            if done == self.total {
                let _ = writeln!(err);
            }
        }
    }
}

/// Reviews the chunks, `concurrency` at a time.
pub async fn review(
    runner: &impl PromptRunner,
    chunks: Vec<Chunk>,
    concurrency: usize,
    project: Option<String>,
) -> Report {
    let progress = Progress { total: chunks.len(), done: AtomicUsize::new(0), on: std::io::stderr().is_terminal() };
    let total = chunks.len();
    let results: Vec<ChunkResult> = futures_util::stream::iter(chunks)
        .map(|chunk| {
            let (runner, project, progress) = (runner, project.clone(), &progress);
            async move {
                let r = review_chunk(runner, &chunk, project).await;
                progress.tick();
                r
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut report = Report { chunks: total, ..Default::default() };
    for r in results {
        match r {
            ChunkResult::Done { findings, dropped, cached, version, arm } => {
                if let Some(arm) = arm {
                    let tally = report
                        .arms
                        .entry(arm.clone())
                        .or_insert_with(|| crate::protocol::ReviewOutcome { arm, ..Default::default() });
                    tally.chunks += 1;
                    tally.findings += findings.len() as u64;
                }
                report.findings.extend(findings);
                report.dropped += dropped;
                report.cached += usize::from(cached);
                report.prompt_version = Some(version);
            }
            ChunkResult::Failed(e) => report.errors.push(e),
        }
    }
    report.findings.sort_by(|a, b| (&a.path, a.line, b.severity).cmp(&(&b.path, b.line, a.severity)));
    report.findings.dedup_by(|a, b| a.path == b.path && a.line == b.line && a.message == b.message);
    report
}

/// Reviews lines `first..=last` (1-based) of a file as if they were all new (the editor's "review
/// selection"): one chunk, its context from the file.
pub async fn review_lines(
    runner: &impl PromptRunner,
    path: &str,
    text: &str,
    first: usize,
    last: usize,
    project: Option<String>,
) -> Result<Vec<ReviewFinding>, String> {
    let lines: BTreeMap<usize, String> = text
        .lines()
        .enumerate()
        .skip(first.max(1) - 1)
        .take(last + 1 - first.max(1))
        .map(|(i, l)| (i + 1, l.to_string()))
        .collect();
    if lines.is_empty() {
        return Ok(Vec::new());
    }
    let mut diff = format!("@@ -0,0 +{first},{} @@\n", lines.len());
    for l in lines.values() {
        diff.push('+');
        diff.push_str(l);
        diff.push('\n');
    }
    let chunk = Chunk {
        path: path.to_string(),
        language: syntax::language_name(path),
        context: context_of(text, Lang::of_path(path), first, last),
        diff,
        added: lines.keys().copied().collect(),
        lines,
    };
    match review_chunk(runner, &chunk, project).await {
        ChunkResult::Done { findings, .. } => Ok(findings),
        ChunkResult::Failed(e) => Err(e),
    }
}

enum ChunkResult {
    Done { findings: Vec<ReviewFinding>, dropped: usize, cached: bool, version: u32, arm: Option<String> },
    Failed(String),
}

async fn review_chunk(runner: &impl PromptRunner, chunk: &Chunk, project: Option<String>) -> ChunkResult {
    let variables = BTreeMap::from([
        ("path".to_string(), chunk.path.clone()),
        ("language".to_string(), chunk.language.clone()),
        ("context".to_string(), chunk.context.clone()),
        ("diff".to_string(), chunk.diff.clone()),
    ]);
    let call = PromptCall { variables, project, path: Some(chunk.path.clone()), ..Default::default() };
    let first = match runner.prompt("review", call.clone()).await {
        Ok(a) => a,
        Err(e) => return ChunkResult::Failed(format!("{}: {e}", chunk.path)),
    };
    let (answer, parsed) = match parse_findings(&first.text) {
        Ok(p) => (first, p),
        Err(error) => {
            // One more try, quoting what was wrong.
            let retry =
                PromptCall { repair: Some(Repair { answer: first.text.clone(), error: error.clone() }), ..call };
            match runner.prompt("review", retry).await {
                Ok(a) => match parse_findings(&a.text) {
                    Ok(p) => (a, p),
                    Err(e2) => {
                        return ChunkResult::Failed(format!(
                            "{}: the model's answer is not valid JSON findings twice: {e2}",
                            chunk.path
                        ));
                    }
                },
                Err(e) => return ChunkResult::Failed(format!("{}: {e}", chunk.path)),
            }
        }
    };
    let mut findings = Vec::new();
    let mut dropped = 0;
    for Parsed { path, line, severity, category, message, suggestion } in parsed {
        let same_file = path.as_deref().is_none_or(|p| p.trim_start_matches("b/") == chunk.path);
        if !same_file || !chunk.added.contains(&line) {
            dropped += 1;
            continue;
        }
        let code = chunk.lines.get(&line).cloned().unwrap_or_default();
        let (path, arm) = (chunk.path.clone(), answer.arm.clone());
        findings.push(ReviewFinding { path, line, severity, category, message, suggestion, code, arm });
    }
    ChunkResult::Done { findings, dropped, cached: answer.cache_hit, version: answer.version, arm: answer.arm }
}

/// Compiler-style text: `path:line: severity: message [category]`, the code, the suggestion.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    for f in &report.findings {
        out.push_str(&format!("{}:{}: {}: {} [{}]\n", f.path, f.line, f.severity.as_str(), f.message, f.category));
        out.push_str(&format!("{:>6} | {}\n", f.line, f.code));
        if let Some(s) = &f.suggestion {
            for (i, l) in s.lines().enumerate() {
                out.push_str(&format!("{:>6} {} {l}\n", "", if i == 0 { "+" } else { " " }));
            }
        }
        out.push('\n');
    }
    out
}

/// GitLab Code Quality: the array of issues a `codequality` report artifact holds.
pub fn codequality(report: &Report) -> serde_json::Value {
    let issues: Vec<serde_json::Value> = report
        .findings
        .iter()
        .map(|f| {
            let severity = match f.severity {
                Severity::Info => "info",
                Severity::Low => "minor",
                Severity::Medium => "major",
                Severity::High => "critical",
                Severity::Critical => "blocker",
            };
            serde_json::json!({
                "description": f.message,
                "check_name": format!("tollgate-review/{}", f.category),
                "fingerprint": fingerprint(f),
                "severity": severity,
                "location": {"path": f.path, "lines": {"begin": f.line}},
            })
        })
        .collect();
    serde_json::Value::Array(issues)
}

/// SARIF 2.1.0.
pub fn sarif(report: &Report) -> serde_json::Value {
    let results: Vec<serde_json::Value> = report
        .findings
        .iter()
        .map(|f| {
            let level = match f.severity {
                Severity::Info | Severity::Low => "note",
                Severity::Medium => "warning",
                Severity::High | Severity::Critical => "error",
            };
            let mut r = serde_json::json!({
                "ruleId": format!("tollgate-review/{}", f.category),
                "level": level,
                "message": {"text": f.message},
                "partialFingerprints": {"tollgate/v1": fingerprint(f)},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": f.path}, "region": {"startLine": f.line}}}],
            });
            if let Some(s) = &f.suggestion {
                r["fixes"] = serde_json::json!([{"description": {"text": "suggested replacement"}, "artifactChanges": [{
                    "artifactLocation": {"uri": f.path},
                    "replacements": [{"deletedRegion": {"startLine": f.line, "endLine": f.line}, "insertedContent": {"text": format!("{s}\n")}}],
                }]}]);
            }
            r
        })
        .collect();
    serde_json::json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "tollgate-review", "version": env!("CARGO_PKG_VERSION"), "informationUri": "https://gitlab.com/tollgate/tollgate"}}, "results": results}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_parse_from_fenced_json_and_errors_say_what_is_wrong() {
        let ok = "```json\n{\"findings\": [{\"path\": \"a.rs\", \"line\": \"12\", \"severity\": \"error\", \"category\": \"bug\", \"message\": \"off by one\", \"suggestion\": \"for i in 0..n {\"}]}\n```";
        let f = parse_findings(ok).unwrap();
        assert_eq!((f[0].line, f[0].severity), (12, Severity::High));
        assert_eq!(parse_findings("{\"findings\": []}").unwrap().len(), 0);
        assert!(parse_findings("Looks good to me!").unwrap_err().contains("no JSON object"));
        assert!(
            parse_findings("{\"findings\": [{\"line\": 0, \"severity\": \"high\", \"message\": \"m\"}]}")
                .unwrap_err()
                .contains("not a line number")
        );
        assert!(
            parse_findings("{\"findings\": [{\"line\": 3, \"severity\": \"urgent\", \"message\": \"m\"}]}")
                .unwrap_err()
                .contains("\"urgent\"")
        );
        assert!(parse_findings("{\"issues\": []}").unwrap_err().contains("findings"));
    }

    #[test]
    fn outputs_follow_their_formats() {
        let report = Report {
            findings: vec![ReviewFinding {
                path: "src/a.rs".into(),
                line: 7,
                severity: Severity::High,
                category: "bug".into(),
                message: "the index can overflow".into(),
                suggestion: Some("let i = i.checked_add(1)?;".into()),
                code: "    let i = i + 1;".into(),
                arm: None,
            }],
            ..Default::default()
        };
        let t = text(&report);
        assert!(
            t.starts_with(
                "src/a.rs:7: high: the index can overflow [bug]\n     7 |     let i = i + 1;\n       + let i"
            ),
            "{t}"
        );
        let cq = codequality(&report);
        assert_eq!(cq[0]["severity"], "critical");
        assert_eq!(cq[0]["location"]["lines"]["begin"], 7);
        assert_eq!(cq[0]["fingerprint"].as_str().unwrap().len(), 32);
        let s = sarif(&report);
        assert_eq!(s["runs"][0]["results"][0]["level"], "error");
        assert_eq!(
            s["runs"][0]["results"][0]["fixes"][0]["artifactChanges"][0]["replacements"][0]["deletedRegion"]["startLine"],
            7
        );
    }
}
