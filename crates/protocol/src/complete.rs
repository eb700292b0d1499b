//! `POST /v1/complete`: an inline completion for an editor.

use serde::{Deserialize, Serialize};

/// What the user wants at the cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Intent {
    /// Continue the code at the cursor.
    Complete,
    /// Write the code a comment just above the cursor describes.
    Generate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snippet {
    /// Where it comes from: a path, or `imports` / `enclosing scope`.
    pub label: String,
    pub text: String,
}

/// A completion as the language server asks for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    /// The file, relative to its workspace folder when it is in one.
    pub path: String,
    pub language: String,
    pub prefix: String,
    pub suffix: String,
    #[serde(default)]
    pub snippets: Vec<Snippet>,
    pub intent: Intent,
    /// A directory of the file's repository, for the project.
    #[serde(default)]
    pub repo: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionAnswer {
    pub text: String,
    /// `provider/model` that answered.
    pub model: String,
    #[serde(default)]
    pub cache_hit: bool,
    /// Values masked before the request left the machine.
    #[serde(default)]
    pub redactions: u64,
}
