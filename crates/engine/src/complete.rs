//! Inline completion (`POST /v1/complete`, what the language server asks): the prefix, suffix and
//! context become a fill-in-the-middle prompt in the format of the target model's family
//! (`prompts/fim.toml`), or the chat form (`prompts/completion.md`) for models without one; the
//! request then goes through the one pipeline as task `completion`.

use std::collections::BTreeMap;

use serde::Deserialize;
use tollgate_protocol::{CompletionAnswer, CompletionRequest, Intent};

use crate::model::{ChatRequest, Message, Role};
use crate::pipeline::{Gateway, GatewayError, RequestContext};

const FIM: &str = include_str!("../../../prompts/fim.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Family {
    pub name: String,
    pub models: Vec<String>,
    pub prompt: String,
    pub stop: Vec<String>,
}

#[derive(Deserialize)]
struct FimFile {
    family: Vec<Family>,
}

/// The families, each with its model globs compiled once.
fn families() -> &'static [(Family, globset::GlobSet)] {
    static F: std::sync::OnceLock<Vec<(Family, globset::GlobSet)>> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let file: FimFile = toml::from_str(FIM).expect("prompts/fim.toml parses");
        file.family
            .into_iter()
            .map(|f| {
                let mut set = globset::GlobSetBuilder::new();
                for g in &f.models {
                    set.add(globset::Glob::new(g).expect("prompts/fim.toml globs compile"));
                }
                let set = set.build().expect("prompts/fim.toml globs compile");
                (f, set)
            })
            .collect()
    })
}

/// The FIM family of a model name, if it has one.
pub fn family(model: &str) -> Option<&'static Family> {
    let model = model.to_ascii_lowercase();
    families().iter().find(|(_, set)| set.is_match(&model)).map(|(f, _)| f)
}

/// Other files' snippets as line comments of the file's language, for FIM prompts.
fn context_block(req: &CompletionRequest) -> String {
    let comment = match req.language.as_str() {
        "python" | "ruby" | "shell" | "bash" | "sh" | "toml" | "yaml" | "r" | "perl" => "#",
        "sql" | "lua" | "haskell" => "--",
        _ => "//",
    };
    let mut out = String::new();
    for s in &req.snippets {
        out.push_str(&format!("{comment} {}:\n", s.label));
        for line in s.text.lines() {
            out.push_str(&format!("{comment} {line}\n"));
        }
    }
    out
}

fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    out
}

/// Builds the request for `req` on `model` (what the route's first target calls itself).
pub fn build(
    req: &CompletionRequest,
    route: &str,
    model: &str,
    prompts: &crate::prompts::Prompts,
    limits: (u32, u32),
) -> ChatRequest {
    let max_tokens = if req.intent == Intent::Generate { limits.1 } else { limits.0 };
    if let Some(f) = family(model) {
        let ctx = context_block(req);
        let prompt = fill(&f.prompt, &[("context", &ctx), ("prefix", &req.prefix), ("suffix", &req.suffix)]);
        return ChatRequest {
            model: route.into(),
            raw_prompt: Some(prompt),
            max_tokens: Some(max_tokens),
            temperature: Some(0.1),
            stop: f.stop.clone(),
            ..Default::default()
        };
    }
    let chat = prompts.get("completion").expect("the completion prompt is built in");
    let mut context = String::new();
    for s in &req.snippets {
        context.push_str(&format!("From {}:\n```\n{}\n```\n\n", s.label, s.text));
    }
    let instruction = match req.intent {
        Intent::Generate => "Write the code that the comment just above <CURSOR> describes.",
        Intent::Complete => "Complete the code at <CURSOR>.",
    };
    let vars = BTreeMap::from([
        ("path".to_string(), req.path.clone()),
        ("language".to_string(), req.language.clone()),
        ("context".to_string(), context),
        ("prefix".to_string(), req.prefix.clone()),
        ("suffix".to_string(), req.suffix.clone()),
        ("instruction".to_string(), instruction.to_string()),
    ]);
    let (system, user) = chat.render(&vars).expect("the completion prompt's variables are all given");
    let mut messages = Vec::new();
    if let Some(s) = system {
        messages.push(Message::text(Role::System, s));
    }
    messages.push(Message::text(Role::User, user));
    ChatRequest {
        model: route.into(),
        messages,
        max_tokens: Some(max_tokens),
        temperature: chat.temperature,
        ..Default::default()
    }
}

/// Serves one completion through the pipeline.
pub async fn run(gw: &Gateway, req: CompletionRequest, ctx: &RequestContext) -> Result<CompletionAnswer, GatewayError> {
    let rt = &ctx.runtime;
    let route = rt.config.completion.model.clone();
    let first = rt.router.resolve(&route)?.into_iter().next().map(|t| t.model).unwrap_or_default();
    let chat = build(
        &req,
        &route,
        &first,
        &rt.prompts,
        (rt.config.completion.max_tokens, rt.config.completion.generate_max_tokens),
    );
    let served = gw.handle(chat, ctx).await?;
    let redactions = u64::from(served.redactions);
    let model = served.target.to_string();
    let text = served.answer.whole(&model).await?.text();
    Ok(CompletionAnswer { text, model, cache_hit: served.cache_hit, redactions })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_protocol::Snippet;

    fn req(intent: Intent) -> CompletionRequest {
        CompletionRequest {
            path: "src/lib.rs".into(),
            language: "rust".into(),
            prefix: "fn add(a: u32, b: u32) -> u32 {\n    ".into(),
            suffix: "\n}\n".into(),
            snippets: vec![Snippet { label: "src/util.rs".into(), text: "fn twice(x: u32) -> u32 { x * 2 }".into() }],
            intent,
            repo: None,
        }
    }

    #[test]
    fn each_family_gets_its_own_format() {
        let prompts = crate::prompts::Prompts::new(&[]).unwrap();
        for (model, starts, has) in [
            ("qwen2.5-coder:1.5b", "<|fim_prefix|>// src/util.rs:\n// fn twice", "<|fim_suffix|>\n}\n<|fim_middle|>"),
            ("codellama:7b-code", "<PRE> // src/util.rs:", " <SUF>\n}\n <MID>"),
            ("bigcode/starcoder2-3b", "<fim_prefix>", "<fim_middle>"),
            ("deepseek-coder-1.3b-base", "<｜fim▁begin｜>", "<｜fim▁hole｜>\n}\n<｜fim▁end｜>"),
            ("codestral-latest", "[SUFFIX]\n}\n[PREFIX]// src/util.rs:", "u32 {\n    "),
        ] {
            let r = build(&req(Intent::Complete), "local", model, &prompts, (64, 256));
            let p = r.raw_prompt.as_deref().unwrap();
            assert!(p.starts_with(starts) && p.contains(has), "{model}: {p}");
            assert!(!r.stop.is_empty() && r.messages.is_empty() && r.max_tokens == Some(64));
        }
        let chat = build(&req(Intent::Generate), "local", "gemma3-270m", &prompts, (64, 256));
        assert!(chat.raw_prompt.is_none() && chat.max_tokens == Some(256));
        let user = chat.messages.last().unwrap().joined_text();
        assert!(
            user.contains("    <CURSOR>\n}")
                && user.contains("From src/util.rs")
                && user.contains("comment just above"),
            "{user}"
        );
    }
}
