//! Token counts for estimates (budget reservations, token rate limits), with OpenAI's o200k_base
//! tokenizer, loaded the first time a count is needed: a daemon without budgets never pays for it.
//! Other providers' tokenizers differ, so input estimates carry a margin.

use std::sync::OnceLock;

use tollgate_model::{ChatRequest, Part};

/// Added to the counted input: other tokenizers (Claude's, Gemini's) count more than o200k.
const INPUT_MARGIN_PERCENT: u64 = 25;
/// Per message: role and framing tokens of a chat template.
const PER_MESSAGE: u64 = 4;

fn bpe() -> &'static tiktoken_rs::CoreBPE {
    static BPE: OnceLock<tiktoken_rs::CoreBPE> = OnceLock::new();
    BPE.get_or_init(|| tiktoken_rs::o200k_base().expect("the embedded o200k_base tokenizer loads"))
}

pub fn count(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    bpe().encode_ordinary(text).len() as u64
}

/// The most tokens a request may cost, as (input, output): its prompt, counted with a margin, and
/// the most it may write.
/// The estimate of one image or document.
const MEDIA_TOKENS: u64 = 1_600;

pub fn estimate(req: &ChatRequest, default_max_output: u32) -> (u64, u64) {
    let input = count_input(req);
    if req.embed.is_some() {
        // An embedding has no output tokens.
        return (input, 0);
    }
    (input + input * INPUT_MARGIN_PERCENT / 100, u64::from(req.max_tokens.unwrap_or(default_max_output)))
}

/// The request's input tokens as o200k counts them, without a margin: what `count_tokens`
/// answers for a target that cannot count its own.
pub fn count_input(req: &ChatRequest) -> u64 {
    let mut input = req.embed.iter().flatten().map(|t| count(t)).sum::<u64>();
    if let Some(p) = &req.raw_prompt {
        input += count(p);
    }
    for m in &req.messages {
        input += PER_MESSAGE;
        for part in &m.content {
            input += match part {
                Part::Text { text } => count(text),
                Part::ToolCall { name, arguments, .. } => count(name) + count(arguments),
                Part::ToolResult { content, .. } => count(content),
                // Providers bill an image by its size, a page of a document by its text; a fixed
                // estimate stands in (about a 1,000 x 1,000 image).
                Part::Media { .. } => MEDIA_TOKENS,
            };
        }
    }
    for tool in &req.tools {
        input += count(&tool.name) + tool.description.as_deref().map_or(0, count) + count(&tool.parameters.to_string());
    }
    input
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_model::{Message, Role};

    #[test]
    fn counts_with_a_real_tokenizer_and_estimates_an_upper_bound() {
        assert_eq!(count("hello world"), 2);
        let req = ChatRequest {
            messages: vec![Message::text(Role::User, "hello world")],
            max_tokens: Some(10),
            ..Default::default()
        };
        // (4 framing + 2) * 1.25 = 7, and 10 output.
        assert_eq!(estimate(&req, 1000), (7, 10));
        let req = ChatRequest { max_tokens: None, ..req };
        assert_eq!(estimate(&req, 1000), (7, 1000));
    }
}
