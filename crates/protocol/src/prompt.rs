//! `POST /v1/prompts/{name}`: a named, versioned prompt template run through the pipeline.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tollgate_model::Usage;

/// What a caller sends to run a prompt.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptCall {
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// A route alias or `provider/model` instead of the prompt's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The project (`group/project`), or a directory of its repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The file the call is about, relative to its repository (for routing rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// An earlier answer that could not be used, and why: the model sees both and answers again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<Repair>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repair {
    pub answer: String,
    pub error: String,
}

/// A prompt's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PromptAnswer {
    pub text: String,
    pub prompt: String,
    pub version: u32,
    /// `provider/model` that answered.
    pub model: String,
    pub cache_hit: bool,
    pub usage: Usage,
    pub request_id: String,
    /// The experiments' arms the call was given (`experiment: arm`, as `usage --by arm` names them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arm: Option<String>,
}
