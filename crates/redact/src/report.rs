//! `tollgate scan`: offline, no daemon, no network. Scans files, directories, standard input, or
//! the lines a commit adds (`--staged`), and reports like a compiler, as JSON, as SARIF 2.1.0, or as
//! GitLab's Secret Detection report. Reports never contain a secret: a masked preview at most.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Value, json};

use super::Scanner;

/// Files larger than this are skipped (and said so).
const MAX_FILE: u64 = 16 * 1024 * 1024;
const SKIP_DIRS: [&str; 5] = [".git", "target", "node_modules", ".venv", "__pycache__"];

#[derive(Debug, Clone, Serialize)]
pub struct Reported {
    pub path: String,
    /// 1-based line of the finding's first byte.
    pub line: usize,
    /// 1-based byte column of the finding's first byte.
    pub column: usize,
    /// Byte offsets into the file, end exclusive.
    pub start_byte: usize,
    pub end_byte: usize,
    pub rule: String,
    pub kind: String,
    /// `valid` or `invalid` for a format that carries a checksum: an invalid one is made up (a
    /// test fixture, an example), though still masked by the gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<&'static str>,
    #[serde(skip)]
    pub end_line: usize,
    #[serde(skip)]
    pub end_column: usize,
    #[serde(skip)]
    pub preview: String,
}

/// A masked preview: the first few characters (a token's public prefix at most), then its length.
fn preview(secret: &[u8]) -> String {
    let s = String::from_utf8_lossy(secret);
    let shown: String = s.chars().take(4).collect();
    format!("{shown}… ({} chars)", s.chars().count())
}

fn position(text: &[u8], at: usize) -> (usize, usize) {
    let line = text[..at].iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = text[..at].iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    (line, at - line_start + 1)
}

/// Scans one text; `keep_line` filters by line (for `--staged`: the added lines).
pub fn scan_text(scanner: &Scanner, path: &str, text: &[u8], keep_line: &dyn Fn(usize) -> bool) -> Vec<Reported> {
    scanner
        .scan(text)
        .into_iter()
        .filter_map(|f| {
            let (line, column) = position(text, f.start);
            let (end_line, end_column) = position(text, f.end);
            if !keep_line(line) {
                return None;
            }
            let rule = scanner.rule(f.rule);
            Some(Reported {
                path: path.to_string(),
                line,
                column,
                start_byte: f.start,
                end_byte: f.end,
                rule: rule.id.clone(),
                kind: rule.kind.clone(),
                checksum: rule
                    .checksum
                    .map(|c| if crate::scan::checksum_valid(c, &text[f.start..f.end]) { "valid" } else { "invalid" }),
                end_line,
                end_column,
                preview: preview(&text[f.start..f.end]),
            })
        })
        .collect()
}

pub fn is_binary(bytes: &[u8]) -> bool {
    bytes[..bytes.len().min(8192)].contains(&0)
}

/// Files under `paths` (directories walked, build and VCS directories skipped).
pub fn collect_files(paths: &[PathBuf], out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)?.filter_map(|e| e.ok()).map(|e| e.path()).collect();
            entries.sort();
            for e in entries {
                let name = e.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                if e.is_dir() && SKIP_DIRS.contains(&name.as_str()) {
                    continue;
                }
                if e.is_dir() || e.is_file() {
                    collect_files(&[e], out)?;
                }
            }
        } else {
            out.push(p.clone());
        }
    }
    Ok(())
}

/// Scans files; returns the findings and the files skipped (binary, too large) with why.
pub fn scan_files(scanner: &Scanner, files: &[PathBuf]) -> (Vec<Reported>, Vec<String>) {
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    for f in files {
        let display = f.display().to_string();
        match std::fs::metadata(f) {
            Ok(m) if m.len() > MAX_FILE => {
                skipped.push(format!("{display}: larger than {} MiB", MAX_FILE >> 20));
                continue;
            }
            Err(e) => {
                skipped.push(format!("{display}: {e}"));
                continue;
            }
            _ => {}
        }
        match std::fs::read(f) {
            Ok(bytes) if is_binary(&bytes) => {}
            Ok(bytes) => found.extend(scan_text(scanner, &display, &bytes, &|_| true)),
            Err(e) => skipped.push(format!("{display}: {e}")),
        }
    }
    (found, skipped)
}

pub fn text(findings: &[Reported]) -> String {
    let mut out = String::new();
    for f in findings {
        let made_up = if f.checksum == Some("invalid") { " [checksum invalid: made up?]" } else { "" };
        out.push_str(&format!("{}:{}:{}: {} ({}): {}{made_up}\n", f.path, f.line, f.column, f.rule, f.kind, f.preview));
    }
    out
}

pub fn sarif(findings: &[Reported], scanner: &Scanner) -> Value {
    let mut rule_ids: Vec<&str> = findings.iter().map(|f| f.rule.as_str()).collect();
    rule_ids.sort_unstable();
    rule_ids.dedup();
    let rules: Vec<Value> = rule_ids
        .iter()
        .map(|id| {
            let kind = scanner.rules().iter().find(|r| r.id == *id).map_or("", |r| r.kind.as_str());
            json!({"id": id, "name": id, "shortDescription": {"text": format!("A {kind} was found")}, "defaultConfiguration": {"level": "error"}})
        })
        .collect();
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            json!({
                "ruleId": f.rule,
                "level": "error",
                "message": {"text": format!("A {} was found: {}", f.kind, f.preview)},
                "properties": {"checksum": f.checksum},
                "locations": [{"physicalLocation": {
                    "artifactLocation": {"uri": f.path},
                    "region": {"startLine": f.line, "startColumn": f.column, "endLine": f.end_line, "endColumn": f.end_column,
                               "byteOffset": f.start_byte, "byteLength": f.end_byte - f.start_byte},
                }}],
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "tollgate", "version": env!("CARGO_PKG_VERSION"), "informationUri": "https://gitlab.com/tollgate/tollgate", "rules": rules}}, "results": results}],
    })
}

/// GitLab's Secret Detection report (schema 15.x), for a CI job's `artifacts:reports:secret_detection`.
pub fn gitlab(findings: &[Reported], started: &str, ended: &str) -> Value {
    use sha2::{Digest, Sha256};
    let vendor = json!({"name": "tollgate"});
    let tool = json!({"id": "tollgate", "name": "tollgate", "version": env!("CARGO_PKG_VERSION"), "vendor": vendor});
    let vulnerabilities: Vec<Value> = findings
        .iter()
        .map(|f| {
            let id = hex(&Sha256::digest(format!("{}:{}:{}:{}", f.path, f.line, f.column, f.rule)));
            json!({
                "id": id,
                "name": format!("{} ({})", f.kind, f.rule),
                "description": format!("A {} was found in {} at line {}. Revoke it, then remove it from the history.", f.kind, f.path, f.line),
                "severity": "Critical",
                "location": {"file": f.path, "start_line": f.line, "end_line": f.end_line, "commit": {"sha": "0000000"}},
                "identifiers": [{"type": "tollgate_rule_id", "name": format!("tollgate rule {}", f.rule), "value": f.rule}],
            })
        })
        .collect();
    json!({
        "version": "15.2.1",
        "vulnerabilities": vulnerabilities,
        "scan": {"analyzer": tool.clone(), "scanner": tool, "type": "secret_detection", "start_time": started, "end_time": ended, "status": "success"},
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `YYYY-MM-DDTHH:MM:SS`, the time format GitLab's report schema wants.
pub fn report_time(ms: i64) -> String {
    tollgate_model::utc::iso(ms).trim_end_matches('Z').to_string()
}
