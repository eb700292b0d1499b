//! `POST /v1/review`: findings on some lines of a file, for an editor; [`ReviewFinding`] is also
//! what `tollgate review` reports.

use serde::{Deserialize, Serialize};

/// How severe a finding is, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lines `first..=last` (1-based) of a document whose whole text is `text`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReviewLines {
    pub path: String,
    pub text: String,
    pub first: usize,
    pub last: usize,
    /// A directory of the file's repository, for the project.
    #[serde(default)]
    pub repo: Option<String>,
}

/// The findings on the lines asked about.
#[derive(Debug, Serialize, Deserialize)]
pub struct FindingsReply {
    pub findings: Vec<ReviewFinding>,
}

/// A finding on a changed line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewFinding {
    pub path: String,
    /// 1-based line in the new file.
    pub line: usize,
    pub severity: Severity,
    pub category: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
    /// The line's code, as the change leaves it.
    #[serde(default)]
    pub code: String,
    /// The experiments' arms of the review call that found it (`experiment: arm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<String>,
}

/// `POST /v1/review/outcomes`: how one arm's reviews went, for `usage --by arm`: chunks reviewed,
/// findings kept, and findings whose merge request discussion was resolved by hand while the code
/// stayed the same (dismissed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewOutcome {
    pub arm: String,
    pub chunks: u64,
    pub findings: u64,
    pub dismissed: u64,
}
