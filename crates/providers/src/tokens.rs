//! Token counts for estimates (budget reservations, token rate limits), with OpenAI's o200k_base
//! tokenizer, loaded the first time a count is needed (or ahead, see [`load_in_background`]): a
//! daemon without budgets never pays for it. Other providers' tokenizers differ, so input estimates
//! carry a margin.
//!
//! tiktoken-rs keeps the vocabulary three times over in 200,000 small allocations each (42 MB
//! resident, for the life of the daemon). Counting needs only the merge ranks: [`Counter`] keeps
//! the tokens' bytes in one buffer and a table of ranks over it (about 4 MB), built once from
//! tiktoken-rs's tokenizer, which is then dropped and its memory given back. It counts exactly as
//! tiktoken does (the same pre-tokenizer, the same merges; a unit test compares the two).

use std::hash::BuildHasher;
use std::sync::OnceLock;

use tiktoken_rs::Rank;
use tollgate_model::{ChatRequest, Part};

/// o200k_base's tokens and merge ranks, compactly.
struct Counter {
    /// Every token's bytes, back to back.
    bytes: Vec<u8>,
    /// Each rank's token: (start in `bytes`, length); empty for a rank with no ordinary token.
    spans: Vec<(u32, u32)>,
    /// The ranks, found by their token's bytes.
    ranks: hashbrown::HashTable<Rank>,
    hasher: std::hash::RandomState,
    /// o200k's pre-tokenizer without its one lookahead (`\s+(?!\S)`), which [`Counter::count`]
    /// applies itself: the `regex` crate's automata instead of a backtracking engine.
    pattern: regex::Regex,
    /// Counts of texts counted before, by their hash and length: a coding agent sends the same
    /// system prompt, tools and conversation so far with every turn, and only the new turn needs
    /// counting. A collision of both (a 64-bit keyed hash) would cost an estimate's accuracy, not
    /// a bill: spending settles on the provider's usage.
    memo: std::sync::Mutex<std::collections::HashMap<(u64, usize), u64>>,
}

/// Texts shorter than this are counted each time (about as fast as looking them up).
const MEMO_MIN_BYTES: usize = 64;
/// Counts remembered at most (a few hundred kilobytes); the memo starts over when it is full.
const MEMO_ENTRIES: usize = 8192;

/// o200k_base's pattern (tiktoken's `O200K_BASE_PAT_STR`) with `\s+(?!\S)|\s+` as `\s+`.
const PATTERN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "|",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "|",
    r"\p{N}{1,3}",
    "|",
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
    "|",
    r"\s*[\r\n]+",
    "|",
    r"\s+",
);

impl Counter {
    fn load() -> Self {
        let bpe = tiktoken_rs::o200k_base().expect("the embedded o200k_base tokenizer loads");
        let specials: Vec<Vec<u8>> = bpe.special_tokens().into_iter().map(|t| t.as_bytes().to_vec()).collect();
        let hasher = std::hash::RandomState::new();
        let (mut bytes, mut spans) = (Vec::with_capacity(1 << 21), Vec::with_capacity(200_000));
        let mut ranks = hashbrown::HashTable::with_capacity(200_000);
        // Ordinary tokens have ranks 0 to 199,997; the special ones (not counted as text) follow.
        for rank in 0..200_000 as Rank {
            let Ok(token) = bpe.decode_bytes(&[rank]) else { break };
            if specials.contains(&token) {
                break;
            }
            spans.push((bytes.len() as u32, token.len() as u32));
            bytes.extend_from_slice(&token);
            ranks.insert_unique(hasher.hash_one(&token[..]), rank, |r: &Rank| {
                let (start, len) = spans[*r as usize];
                hasher.hash_one(&bytes[start as usize..(start + len) as usize])
            });
        }
        drop(bpe);
        give_back_freed_memory();
        let pattern = regex::Regex::new(PATTERN).expect("the o200k pattern compiles");
        bytes.shrink_to_fit();
        Self { bytes, spans, ranks, hasher, pattern, memo: std::sync::Mutex::default() }
    }

    fn rank(&self, piece: &[u8]) -> Option<Rank> {
        self.ranks
            .find(self.hasher.hash_one(piece), |r| {
                let (start, len) = self.spans[*r as usize];
                &self.bytes[start as usize..(start + len) as usize] == piece
            })
            .copied()
    }

    /// Tokens in `text`, as `CoreBPE::encode_ordinary(text).len()` counts them.
    fn count(&self, text: &str) -> u64 {
        if text.len() < MEMO_MIN_BYTES {
            return self.count_pieces(text);
        }
        let key = (self.hasher.hash_one(text), text.len());
        let memo = || self.memo.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(&n) = memo().get(&key) {
            return n;
        }
        let n = self.count_pieces(text);
        let mut memo = memo();
        if memo.len() >= MEMO_ENTRIES {
            memo.clear();
        }
        memo.insert(key, n);
        n
    }

    fn count_pieces(&self, text: &str) -> u64 {
        let mut n = 0;
        let mut at = 0;
        while let Some(m) = self.pattern.find_at(text, at) {
            let mut piece = m.as_str();
            // tiktoken's `\s+(?!\S)`: a run of spaces followed by text leaves its last space to
            // the text's piece (" word"). Runs that end in a line break are another alternative's,
            // matched before; a single space before text is `\s+`'s own.
            if m.end() < text.len()
                && !piece.ends_with(['\r', '\n'])
                && piece.chars().all(char::is_whitespace)
                && let Some((last, _)) = piece.char_indices().last()
                && last > 0
            {
                piece = &piece[..last];
            }
            at = m.start() + piece.len();
            let bytes = piece.as_bytes();
            n += if bytes.len() == 1 || self.rank(bytes).is_some() { 1 } else { self.merged(bytes) };
        }
        n
    }

    /// Tokens of a piece that is not one token: tiktoken's byte-pair merge, counted.
    fn merged(&self, piece: &[u8]) -> u64 {
        let rank = |range: std::ops::Range<usize>| self.rank(&piece[range]).unwrap_or(Rank::MAX);
        let mut parts: Vec<(usize, Rank)> = Vec::with_capacity(piece.len() + 1);
        let mut min: (Rank, usize) = (Rank::MAX, usize::MAX);
        for i in 0..piece.len() - 1 {
            let r = rank(i..i + 2);
            if r < min.0 {
                min = (r, i);
            }
            parts.push((i, r));
        }
        parts.push((piece.len() - 1, Rank::MAX));
        parts.push((piece.len(), Rank::MAX));
        let get = |parts: &[(usize, Rank)], i: usize| {
            if i + 3 < parts.len() { rank(parts[i].0..parts[i + 3].0) } else { Rank::MAX }
        };
        while min.0 != Rank::MAX {
            let i = min.1;
            if i > 0 {
                parts[i - 1].1 = get(&parts, i - 1);
            }
            parts[i].1 = get(&parts, i);
            parts.remove(i + 1);
            min = (Rank::MAX, usize::MAX);
            for (i, &(_, r)) in parts[..parts.len() - 1].iter().enumerate() {
                if r < min.0 {
                    min = (r, i);
                }
            }
        }
        (parts.len() - 1) as u64
    }
}

/// Hands the pages of freed allocations back to the system (glibc keeps them otherwise).
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's own; it takes no pointer.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Added to the counted input: other tokenizers (Claude's, Gemini's) count more than o200k.
const INPUT_MARGIN_PERCENT: u64 = 25;
/// Per message: role and framing tokens of a chat template.
const PER_MESSAGE: u64 = 4;

static COUNTER: OnceLock<Counter> = OnceLock::new();

fn counter() -> &'static Counter {
    COUNTER.get_or_init(Counter::load)
}

/// Starts loading the tokenizer on a thread of its own (once per process), when counts will be
/// needed (budgets or token limits are set): loading takes a quarter of a second, and no request
/// should wait for it.
pub fn load_in_background() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        std::thread::spawn(counter);
    });
}

/// Whether the tokenizer is loaded (estimates are exact).
pub fn loaded() -> bool {
    COUNTER.get().is_some()
}

/// Tokens in `text`, exactly (waiting for the tokenizer to load if it has not).
pub fn count(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    counter().count(text)
}

/// Tokens in `text` for an estimate: exact once the tokenizer is loaded; until then (the first
/// requests after a start) a bound from its length that no request waits for: a third of its
/// bytes, more than o200k counts for prose (about four characters a token) and for code (about
/// three and a half).
fn count_for_estimate(text: &str) -> u64 {
    let loaded = COUNTER.get();
    if loaded.is_none() {
        load_in_background();
    }
    estimated(loaded, text)
}

fn estimated(counter: Option<&Counter>, text: &str) -> u64 {
    match counter {
        _ if text.is_empty() => 0,
        Some(c) => c.count(text),
        None => (text.len() as u64).div_ceil(3),
    }
}

/// The most tokens a request may cost, as (input, output): its prompt, counted with a margin, and
/// the most it may write.
/// The estimate of one image or document.
const MEDIA_TOKENS: u64 = 1_600;

pub fn estimate(req: &ChatRequest, default_max_output: u32) -> (u64, u64) {
    let input = input_tokens(req, count_for_estimate);
    if req.embed.is_some() {
        // An embedding has no output tokens.
        return (input, 0);
    }
    (input + input * INPUT_MARGIN_PERCENT / 100, u64::from(req.max_tokens.unwrap_or(default_max_output)))
}

/// The request's input tokens as o200k counts them, without a margin: what `count_tokens`
/// answers for a target that cannot count its own.
pub fn count_input(req: &ChatRequest) -> u64 {
    input_tokens(req, count)
}

fn input_tokens(req: &ChatRequest, count: impl Fn(&str) -> u64) -> u64 {
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
        input +=
            count(&tool.name) + tool.description.as_deref().map_or(0, &count) + count(&tool.parameters.to_string());
    }
    input
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_model::{Message, Role};

    #[test]
    fn the_compact_counter_counts_as_tiktoken_does() {
        let bpe = tiktoken_rs::o200k_base().unwrap();
        let texts = [
            "hello world",
            "fn main() {\n    println!(\"{}\", 1 + 2);\n}\n",
            "The service reads orders from the queue, totals them per customer and writes a report.",
            "  leading and trailing   \n\n\t spaces \r\n",
            "Ünïcödé naïve café, 日本語のテキスト, емейл, 🚀🔥 emoji, العربية",
            "numbers 1234567 3.14159 0xDEADbeef 1e-9",
            "it's they're we've I'm you'll he'd DON'T",
            "{\"model\":\"gpt-4.1\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
            "<|endoftext|> is text here, not a special token",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopic",
            "a  b   c\t\td \u{a0}\u{a0}e \u{3000}f  \n  g\n\n   h   ",
            "    indented(code)\n        deeper = 1\n\n\n    back\r\n\tend  ",
            " ",
            "   ",
            "x ",
            " \n",
        ];
        for t in texts {
            assert_eq!(count(t), bpe.encode_ordinary(t).len() as u64, "{t:?}");
        }
        // And over a whole source file, counted and then remembered.
        let source = include_str!("lib.rs");
        let exact = bpe.encode_ordinary(source).len() as u64;
        assert_eq!(count(source), exact);
        let c = counter();
        let key = (c.hasher.hash_one(source), source.len());
        assert_eq!(c.memo.lock().unwrap().get(&key), Some(&exact), "a long text's count is remembered");
        assert_eq!(count(source), exact);
        // A text that differs by one byte is counted for itself.
        let edited = source.replacen("fn ", "fn  ", 1);
        assert_eq!(count(&edited), bpe.encode_ordinary(&edited).len() as u64);
    }

    #[test]
    fn counts_with_a_real_tokenizer_and_estimates_an_upper_bound() {
        assert_eq!(count("hello world"), 2);
        // Until the tokenizer is loaded, a bound from the length (no request waits for it); then
        // the exact count.
        let prose = "The service reads orders from the queue, totals them per customer and writes a report.";
        let code = "fn total(values: &[u64]) -> u64 {\n    values.iter().sum()\n}\n";
        for text in [prose, code] {
            assert!(estimated(None, text) >= count(text), "{text}");
        }
        assert_eq!(estimated(Some(counter()), prose), count(prose));
        // Loaded now: estimates count exactly.
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
