//! Prompt-encapsulated tasks: a named, versioned template from [`crate::prompts`] filled with the
//! caller's variables and sent through the one pipeline. `POST /v1/prompts/{name}` serves them;
//! `tollgate review|explain|tests|docs|commit-message` call them over the socket, or in-process
//! inside a CI job.

use crate::model::{ChatRequest, Message, ResponseFormat, Role};
use crate::pipeline::{Gateway, GatewayError, RequestContext};

pub use tollgate_protocol::{PromptAnswer, PromptCall, Repair, ReviewOutcome};

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("no prompt named {name:?} (known: {known})")]
    Unknown { name: String, known: String },
    #[error("{0}")]
    Variables(String),
    #[error(transparent)]
    Gateway(#[from] GatewayError),
}

/// Asks for the same JSON again, quoting what was wrong with the last answer.
fn repair_message(error: &str) -> String {
    format!(
        "Your answer could not be used: {error}. Answer again with only the JSON object the \
         instructions describe, nothing before or after it."
    )
}

/// Where prompts run: the review domain asks through this, whether the prompts go through a
/// gateway in this process (the daemon, CI jobs) or over the daemon's socket (the CLI).
pub trait PromptRunner: Sync {
    fn prompt(&self, name: &str, call: PromptCall) -> impl Future<Output = Result<PromptAnswer, String>> + Send;
    /// Keeps how reviews went per experiment arm (chunks, findings, dismissed), for `usage --by arm`.
    fn reviewed(&self, outcomes: Vec<ReviewOutcome>) -> impl Future<Output = Result<(), String>> + Send;
}

impl PromptRunner for Gateway {
    async fn reviewed(&self, outcomes: Vec<ReviewOutcome>) -> Result<(), String> {
        let now = crate::utc::now_ms();
        self.store
            .write_durable(move |c| crate::ledger::record_reviews(c, now, &outcomes))
            .await
            .map_err(|e| e.to_string())
    }

    async fn prompt(&self, name: &str, call: PromptCall) -> Result<PromptAnswer, String> {
        let mut ctx = RequestContext::new(crate::pipeline::EntryPoint::Native, self.runtime());
        ctx.task = name.to_string();
        ctx.path = call.path.clone();
        ctx.project = call.project.clone();
        run(self, name, call, &ctx).await.map_err(|e| e.to_string())
    }
}

/// Runs prompt `name` through the pipeline. `ctx.task` should be the prompt's name.
pub async fn run(gw: &Gateway, name: &str, call: PromptCall, ctx: &RequestContext) -> Result<PromptAnswer, TaskError> {
    let rt = &ctx.runtime;
    let (prompt, arm) = rt.prompts.pick(name, &gw.chooser(rt, ctx)).ok_or_else(|| TaskError::Unknown {
        name: name.into(),
        known: rt.prompts.all().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", "),
    })?;
    let ctx = &RequestContext { prompt_arm: arm, ..ctx.clone() };
    let (system, user) = prompt.render(&call.variables).map_err(TaskError::Variables)?;
    let mut messages = Vec::new();
    if let Some(system) = system {
        messages.push(Message::text(Role::System, system));
    }
    messages.push(Message::text(Role::User, user));
    if let Some(r) = &call.repair {
        messages.push(Message::text(Role::Assistant, r.answer.clone()));
        messages.push(Message::text(Role::User, repair_message(&r.error)));
    }
    let wants_json = prompt.system.as_deref().is_some_and(|s| s.contains("JSON object"));
    let req = ChatRequest {
        model: call.model.clone().unwrap_or_else(|| prompt.model.clone()),
        messages,
        max_tokens: prompt.max_tokens,
        temperature: prompt.temperature,
        response_format: wants_json.then_some(ResponseFormat::JsonObject),
        ..Default::default()
    };
    let (prompt_name, version) = (prompt.name.clone(), prompt.version);
    let served = gw.handle(req, ctx).await?;
    let model = served.target.to_string();
    let response = served.answer.whole(&model).await?;
    Ok(PromptAnswer {
        text: response.text(),
        prompt: prompt_name,
        version,
        model,
        cache_hit: served.cache_hit,
        usage: response.usage,
        request_id: ctx.request_id.clone(),
        arm: served.arm.clone(),
    })
}
