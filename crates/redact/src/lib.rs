//! Redaction: secrets and personal data never leave the machine.
//!
//! Before the cache, the ledger, a log or a provider sees a request, every finding in it is
//! replaced by a typed placeholder shaped like an identifier (`TOLLGATE_GITLAB_PAT_1`). Numbering
//! follows first appearance, so the same value gets the same placeholder in every turn of a
//! conversation (the history is resent each turn) without any state kept between requests.
//! Placeholders in the model's answer are restored before the caller sees it, streamed ones across
//! chunk boundaries ([`stream::Restorer`]), but never inside a URL: a model must not be able to
//! smuggle a secret out through a link.

mod captures;
pub mod formats;
pub mod report;
pub mod rules;
pub mod samples;
pub mod scan;
pub mod stream;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use scan::{Finding, Scanner};
use tollgate_model::{ChatRequest, Part, ResponseFormat};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Replace findings with placeholders, restore them in the answer.
    Mask,
    /// Refuse a request that contains a finding.
    Block,
    /// Send text as it is (allowed for routes whose targets are all local).
    Off,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionConfig {
    pub mode: Mode,
    /// Extra rule files: tollgate's format (`[[rule]]`) or gitleaks' (`[[rules]]`).
    #[serde(default)]
    pub rule_files: Vec<std::path::PathBuf>,
    /// Regexes for values never masked, whatever rule found them.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Kinds not looked for (`email`, `phone`, `ipv4_public`, ...): every other kind is.
    #[serde(default)]
    pub off_kinds: Vec<String>,
    /// Countries (ISO 3166 codes) whose national formats are looked for too: phone numbers written
    /// without their country code. International numbers (`+49 ...`) are found whatever this says.
    #[serde(default)]
    pub countries: Vec<String>,
    /// Names of people masked wherever they appear (any case): a team's own list. Names are never
    /// guessed, so none are looked for by default.
    #[serde(default)]
    pub names: Vec<String>,
}

/// The rule that finds the configured names (kind `person_name`), or none without names.
fn names_rule(names: &[String]) -> Result<Option<rules::Rule>, rules::RuleError> {
    let names: Vec<&str> = names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()).collect();
    if names.is_empty() {
        return Ok(None);
    }
    let alternation: Vec<String> = names.iter().map(|n| regex::escape(n)).collect();
    let spec = rules::RuleSpec {
        category: rules::Category::Personal,
        keywords: names.iter().map(|n| n.to_string()).collect(),
        secret_group: 1,
        priority: 8,
        // Letters on either side make it part of another word (`Anna` in `Annabelle`).
        ..rules::RuleSpec::new(
            "person-name",
            "person_name",
            format!(r"(?i)(?:^|[^\p{{L}}\p{{N}}_])({})(?:[^\p{{L}}\p{{N}}_]|$)", alternation.join("|")),
        )
    };
    spec.compile("redaction.names").map(Some)
}

/// The placeholders of one request and the values they stand for.
#[derive(Debug, Default, Clone)]
pub struct Vault {
    entries: Vec<(String, String)>,
    /// Indexes into `entries`, by value and by placeholder: masking and restoring stay linear
    /// however many distinct values a request holds.
    by_value: std::collections::HashMap<String, usize>,
    by_placeholder: std::collections::HashMap<String, usize>,
    counts: BTreeMap<String, u32>,
    /// Per kind, the highest number a placeholder already in the request carries (an earlier
    /// turn kept masked): new ones are numbered after it, so none stands for two values.
    floor: BTreeMap<String, u32>,
}

impl Vault {
    fn placeholder(&mut self, kind: &str, value: &str) -> String {
        if let Some(&i) = self.by_value.get(value) {
            return self.entries[i].0.clone();
        }
        let n = self.counts.entry(kind.to_string()).or_default();
        *n += 1;
        let number = *n + self.floor.get(&kind.to_ascii_uppercase()).copied().unwrap_or(0);
        let p = format!("TOLLGATE_{}_{}", kind.to_ascii_uppercase(), number);
        self.by_value.insert(value.to_string(), self.entries.len());
        self.by_placeholder.insert(p.clone(), self.entries.len());
        self.entries.push((p.clone(), value.to_string()));
        p
    }

    /// The value a placeholder stands for.
    pub fn value_of(&self, placeholder: &str) -> Option<&str> {
        self.by_placeholder.get(placeholder).map(|&i| self.entries[i].1.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Distinct values per kind, e.g. `email=1,gitlab_pat=2`.
    pub fn summary(&self) -> String {
        self.counts.iter().map(|(k, n)| format!("{k}={n}")).collect::<Vec<_>>().join(",")
    }

    pub fn total(&self) -> u32 {
        self.counts.values().sum()
    }
}

/// A request refused in block mode: which rule, where; never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub rule: String,
    pub kind: String,
    pub at: String,
    pub line: usize,
}

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request contains a {} (rule {}) in {} at line {}; redaction is set to block, so nothing was sent",
            self.kind, self.rule, self.at, self.line
        )
    }
}

#[derive(Clone)]
pub struct Redactor {
    scanner: Arc<Scanner>,
}

/// Prompts larger than this are scanned on a blocking thread, not an async worker (a 256 KiB
/// prompt takes about 2 ms).
pub const INLINE_LIMIT: usize = 32 * 1024;

impl Redactor {
    pub fn new(scanner: Arc<Scanner>) -> Self {
        Self { scanner }
    }

    pub fn scanner(&self) -> &Scanner {
        &self.scanner
    }

    /// Masks `text` in place at what the scanner `found` in it, recording placeholders in `vault`.
    fn mask_text(&self, text: &mut String, found: Vec<Finding>, vault: &mut Vault) {
        if found.is_empty() {
            return;
        }
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for f in found {
            let (start, end) = snap(text, f.start, f.end);
            if start < last {
                continue;
            }
            out.push_str(&text[last..start]);
            out.push_str(&vault.placeholder(&self.scanner.rule(f.rule).kind, &text[start..end]));
            last = end;
        }
        out.push_str(&text[last..]);
        *text = out;
    }

    /// Every text a provider can see in the request, with where it is, for masking or checking.
    /// The request and its parts are taken apart field by field, with no `..`: a field added to
    /// any of them does not compile until it is said here whether a provider reads it. Besides
    /// the typed fields, every string of the caller's own body (pass-through) but its opaque
    /// blobs ([`OPAQUE`]).
    fn texts(req: &mut ChatRequest) -> Vec<(String, &mut String)> {
        use tollgate_model::{Message, Tool, ToolChoice};
        let mut out: Vec<(String, &mut String)> = Vec::new();
        let ChatRequest {
            // Refused when it holds a credential (`Gateway::route`); the routed name goes upstream.
            model: _,
            messages,
            max_tokens: _,
            temperature: _,
            top_p: _,
            stop,
            tools,
            tool_choice,
            response_format,
            raw_prompt,
            stream: _,
            // Paths of fields, named by tollgate.
            unmapped: _,
            reasoning: _,
            embed,
            native,
        } = req;
        if let Some(p) = raw_prompt.as_mut() {
            out.push(("the prompt".into(), p));
        }
        for (i, input) in embed.iter_mut().flatten().enumerate() {
            out.push((format!("input[{i}]"), input));
        }
        for (i, Message { role: _, content }) in messages.iter_mut().enumerate() {
            for part in content.iter_mut() {
                match part {
                    Part::Text { text } => out.push((format!("messages[{i}]"), text)),
                    Part::ToolCall { id, name, arguments } => {
                        out.push((format!("messages[{i}] tool call id"), id));
                        out.push((format!("messages[{i}] tool call name"), name));
                        out.push((format!("messages[{i}] tool call"), arguments));
                    }
                    Part::ToolResult { tool_call_id, name, content, is_error: _ } => {
                        out.push((format!("messages[{i}] tool result id"), tool_call_id));
                        if let Some(name) = name {
                            out.push((format!("messages[{i}] tool result name"), name));
                        }
                        out.push((format!("messages[{i}] tool result"), content));
                    }
                    // Opaque: pixels and document bytes are not text.
                    Part::Media { url: _ } => {}
                }
            }
        }
        for (i, Tool { name, description, parameters }) in tools.iter_mut().enumerate() {
            let at = format!("tools[{i}]");
            out.push((format!("{at} name"), name));
            if let Some(d) = description.as_mut() {
                out.push((at.clone(), d));
            }
            strings_mut(parameters, "", &at, &mut out);
        }
        match tool_choice {
            Some(ToolChoice::Tool(name)) => out.push(("tool_choice".into(), name)),
            Some(ToolChoice::Auto | ToolChoice::None | ToolChoice::Required) | None => {}
        }
        for stop in stop.iter_mut() {
            out.push(("stop".into(), stop));
        }
        match response_format {
            Some(ResponseFormat::JsonSchema { name, schema, strict: _ }) => {
                out.push(("the response schema name".into(), name));
                strings_mut(schema, "", "the response schema", &mut out);
            }
            Some(ResponseFormat::Text | ResponseFormat::JsonObject) | None => {}
        }
        // Its headers and query are version and beta names (`anthropic-beta`, `beta=true`).
        if let Some(tollgate_model::Native { format: _, body, headers: _, query: _ }) = native.as_mut() {
            strings_mut(body, "", "the request body", &mut out);
        }
        out
    }

    /// The request's text size, to decide where to scan it.
    pub fn text_len(req: &ChatRequest) -> usize {
        req.raw_prompt.as_ref().map_or(0, String::len)
            + req.embed.iter().flatten().map(String::len).sum::<usize>()
            + req
                .messages
                .iter()
                .flat_map(|m| &m.content)
                .map(|p| match p {
                    Part::Text { text } => text.len(),
                    Part::ToolCall { arguments, .. } => arguments.len(),
                    Part::ToolResult { content, .. } => content.len(),
                    Part::Media { .. } => 0,
                })
                .sum::<usize>()
            + req.native.as_ref().map_or(0, |n| strings_len(&n.body))
    }

    /// Masks every text of the request; returns the vault for restoring the answer.
    ///
    /// A value found once (where its context gave it away) is masked wherever else it appears in
    /// the request too, context or not.
    pub fn mask(&self, req: &mut ChatRequest) -> Vault {
        let mut vault = Vault::default();
        let mut texts = Self::texts(req);
        for (_, text) in texts.iter() {
            for (kind, n) in placeholders_in(text) {
                let floor = vault.floor.entry(kind.to_string()).or_default();
                *floor = (*floor).max(n);
            }
        }
        // A pass-through request carries most strings twice (typed, and in the caller's own body):
        // each distinct string is scanned once.
        let found = {
            let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
            let mut distinct: Vec<&str> = Vec::new();
            let which: Vec<usize> = texts
                .iter()
                .map(|(_, t)| {
                    *seen.entry(t.as_str()).or_insert_with(|| {
                        distinct.push(t.as_str());
                        distinct.len() - 1
                    })
                })
                .collect();
            let found = self.scanner.scan_many(&distinct);
            which.into_iter().map(|i| found[i].clone()).collect::<Vec<_>>()
        };
        for ((_, text), found) in texts.iter_mut().zip(found) {
            self.mask_text(text, found, &mut vault);
        }
        if vault.is_empty() {
            return vault;
        }
        let values: Vec<&str> = vault.entries.iter().map(|(_, v)| v.as_str()).collect();
        let Ok(known) =
            aho_corasick::AhoCorasickBuilder::new().match_kind(aho_corasick::MatchKind::LeftmostLongest).build(&values)
        else {
            return vault;
        };
        for (_, text) in texts.iter_mut() {
            if known.is_match(text.as_str()) {
                let replaced = known
                    .replace_all(text.as_str(), &vault.entries.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>());
                **text = replaced;
            }
        }
        vault
    }

    /// The kind of the first secret or personal datum in `text`, if any (never the value).
    pub fn first_kind(&self, text: &str) -> Option<String> {
        self.scanner.scan(text.as_bytes()).first().map(|f| self.scanner.rule(f.rule).kind.clone())
    }

    /// The first finding, for block mode.
    pub fn check(&self, req: &mut ChatRequest) -> Result<(), Blocked> {
        for (at, text) in Self::texts(req) {
            if let Some(f) = self.scanner.scan(text.as_bytes()).first() {
                let rule = self.scanner.rule(f.rule);
                let line = text.as_bytes()[..f.start].iter().filter(|&&b| b == b'\n').count() + 1;
                return Err(Blocked { rule: rule.id.clone(), kind: rule.kind.clone(), at, line });
            }
        }
        Ok(())
    }
}

/// Keys whose strings are opaque to a model and must reach the provider unchanged: signatures and
/// encrypted reasoning it checks, base64 payloads (images, documents), data URLs, and the
/// structural words of the formats.
const OPAQUE: &[&str] =
    &["type", "role", "model", "signature", "encrypted_content", "data", "media_type", "image_url", "file_data"];

/// Every string of a JSON value, with `at` as its place, except those under an [`OPAQUE`] key and
/// data URLs.
fn strings_mut<'a>(v: &'a mut serde_json::Value, key: &str, at: &str, out: &mut Vec<(String, &'a mut String)>) {
    use serde_json::Value;
    match v {
        Value::String(s) if !OPAQUE.contains(&key) && !s.starts_with("data:") => out.push((at.to_string(), s)),
        Value::Array(items) => items.iter_mut().for_each(|item| strings_mut(item, key, at, out)),
        Value::Object(map) => map.iter_mut().for_each(|(k, item)| strings_mut(item, k, at, out)),
        _ => {}
    }
}

fn strings_len(v: &serde_json::Value) -> usize {
    use serde_json::Value;
    match v {
        Value::String(s) => s.len(),
        Value::Array(items) => items.iter().map(strings_len).sum(),
        Value::Object(map) => map.values().map(strings_len).sum(),
        _ => 0,
    }
}

/// Keys whose strings are JSON text (tool call arguments), so a restored value is JSON-escaped.
fn is_json_text(key: &str) -> bool {
    key == "arguments" || key == "partial_json"
}

/// Restores every string of a JSON value (a provider's whole answer or a frame of it).
pub fn restore_value(vault: &Vault, v: &mut serde_json::Value) {
    fn walk(vault: &Vault, v: &mut serde_json::Value, key: &str) {
        use serde_json::Value;
        match v {
            Value::String(s) if s.contains(stream::PREFIX) => *s = restore(vault, s, is_json_text(key)),
            Value::Array(items) => items.iter_mut().for_each(|item| walk(vault, item, key)),
            Value::Object(map) => map.iter_mut().for_each(|(k, item)| walk(vault, item, k)),
            _ => {}
        }
    }
    if !vault.is_empty() {
        walk(vault, v, "");
    }
}

/// The placeholders a text already carries, as (KIND, number).
fn placeholders_in(text: &str) -> impl Iterator<Item = (&str, u32)> {
    text.match_indices(stream::PREFIX).filter_map(|(at, _)| {
        let rest = &text[at + stream::PREFIX.len()..];
        let word = &rest[..rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len())];
        let (kind, n) = word.rsplit_once('_')?;
        Some((kind, n.parse().ok()?)).filter(|(k, _): &(&str, u32)| !k.is_empty())
    })
}

/// Widens a byte range to character boundaries (rules match bytes, texts are UTF-8).
fn snap(text: &str, mut start: usize, mut end: usize) -> (usize, usize) {
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    while !text.is_char_boundary(end) {
        end += 1;
    }
    (start, end)
}

/// The built-in rules and the configured rule files, compiled, without the kinds turned off.
pub fn load_scanner(config: &RedactionConfig, extra: &[(String, String)]) -> Result<Scanner, rules::RuleError> {
    load_scanner_where(config, extra, &|_| true)
}

/// As [`load_scanner`], keeping only the rules `keep` accepts (`tollgate scan --secrets-only`).
pub fn load_scanner_where(
    config: &RedactionConfig,
    extra: &[(String, String)],
    keep: &dyn Fn(&rules::Rule) -> bool,
) -> Result<Scanner, rules::RuleError> {
    let mut all = rules::built_in();
    for path in &config.rule_files {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| rules::RuleError {
            origin: origin.clone(),
            id: String::new(),
            message: e.to_string(),
        })?;
        all.extend(formats::load_file(&text, &origin)?);
    }
    for (origin, text) in extra {
        all.extend(formats::load_file(text, origin)?);
    }
    all.extend(names_rule(&config.names)?);
    if let Some(unknown) = config.off_kinds.iter().find(|k| !all.iter().any(|r| &r.kind == *k)) {
        return Err(rules::RuleError {
            origin: "redaction.off_kinds".into(),
            id: unknown.clone(),
            message: "no rule finds this kind (`tollgate scan --kinds` lists them)".into(),
        });
    }
    let country_listed =
        |r: &rules::Rule| r.country.as_ref().is_none_or(|c| config.countries.iter().any(|l| l.eq_ignore_ascii_case(c)));
    all.retain(|r| !config.off_kinds.contains(&r.kind) && country_listed(r) && keep(r));
    let allow = config
        .allow
        .iter()
        .map(|a| {
            rules::compile(a).map_err(|e| rules::RuleError {
                origin: "redaction.allow".into(),
                id: a.clone(),
                message: format!("bad regex: {e}"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Scanner::new(all).with_allow(allow))
}

/// Restores the placeholders in a whole text (not inside URLs). `json`: the text is JSON (tool
/// call arguments), so values are escaped for a JSON string.
pub fn restore(vault: &Vault, text: &str, json: bool) -> String {
    stream::restore_chunked(vault, text, &[], json)
}

/// Restores a whole answer: its text and its tool calls' arguments.
pub fn restore_response(r: &mut tollgate_model::ChatResponse, vault: &Vault) {
    if vault.is_empty() {
        return;
    }
    for part in r.content.iter_mut() {
        match part {
            Part::Text { text } => *text = restore(vault, text, false),
            Part::ToolCall { arguments, .. } => *arguments = restore(vault, arguments, true),
            Part::ToolResult { .. } | Part::Media { .. } => {}
        }
    }
    if let Some(wire) = r.wire.as_mut() {
        restore_value(vault, wire);
    }
}

/// Restores a streamed answer: text deltas through one restorer, each tool call's arguments
/// through their own (JSON-escaped). Held-back text is released before the next tool call, the
/// finish event and the end of the stream.
pub fn restore_stream(events: tollgate_model::EventStream, vault: Arc<Vault>) -> tollgate_model::EventStream {
    use futures_util::StreamExt;
    use tollgate_model::Event;
    if vault.is_empty() {
        return events;
    }
    struct S {
        events: tollgate_model::EventStream,
        text: stream::Restorer<Arc<Vault>>,
        tools: BTreeMap<u32, stream::Restorer<Arc<Vault>>>,
        frames: FrameRestorer,
        vault: Arc<Vault>,
        queue: std::collections::VecDeque<Result<Event, tollgate_model::UpstreamError>>,
        done: bool,
    }
    impl S {
        fn flush(&mut self) {
            let text = self.text.finish();
            if !text.is_empty() {
                self.queue.push_back(Ok(Event::TextDelta { text }));
            }
            for (index, r) in self.tools.iter_mut() {
                let arguments = r.finish();
                if !arguments.is_empty() {
                    self.queue.push_back(Ok(Event::ToolCallDelta { index: *index, arguments }));
                }
            }
        }
    }
    let state = S {
        events,
        text: stream::Restorer::new(Arc::clone(&vault), false),
        tools: BTreeMap::new(),
        frames: FrameRestorer::new(Arc::clone(&vault)),
        vault,
        queue: Default::default(),
        done: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(item) = s.queue.pop_front() {
                return Some((item, s));
            }
            if s.done {
                return None;
            }
            match s.events.next().await {
                Some(Ok(Event::TextDelta { text })) => {
                    let out = s.text.push(&text);
                    if !out.is_empty() {
                        s.queue.push_back(Ok(Event::TextDelta { text: out }));
                    }
                }
                Some(Ok(Event::ToolCallDelta { index, arguments })) => {
                    let vault = Arc::clone(&s.vault);
                    let out =
                        s.tools.entry(index).or_insert_with(|| stream::Restorer::new(vault, true)).push(&arguments);
                    if !out.is_empty() {
                        s.queue.push_back(Ok(Event::ToolCallDelta { index, arguments: out }));
                    }
                }
                Some(Ok(e @ (Event::ToolCallStart { .. } | Event::Finish { .. }))) => {
                    s.flush();
                    s.queue.push_back(Ok(e));
                }
                Some(Ok(Event::Frame { event, data, delta })) => s.frames.push(event, data, delta, &mut s.queue),
                Some(Ok(Event::Body { mut body })) => {
                    restore_value(&s.vault, &mut body);
                    s.queue.push_back(Ok(Event::Body { body }));
                }
                Some(Ok(e)) => s.queue.push_back(Ok(e)),
                Some(Err(e)) => {
                    s.flush();
                    s.frames.flush(&mut s.queue);
                    s.queue.push_back(Err(e));
                    s.done = true;
                }
                None => {
                    s.flush();
                    s.frames.flush(&mut s.queue);
                    s.done = true;
                }
            }
        }
    }))
}

/// Restores the frames of a pass-through stream. A frame that carries a piece of streamed text has
/// that piece restored through its channel's [`stream::Restorer`] (a placeholder may be split
/// across frames); what a channel holds back is released in one more frame of the same shape
/// before the next frame that carries no text piece. Every string of any other frame is restored
/// whole.
struct FrameRestorer {
    vault: Arc<Vault>,
    channels: BTreeMap<String, Channel>,
}

/// One streamed text of a forwarded stream: its restorer, and its last frame (event name, JSON,
/// where the text is) as the shape of a release.
struct Channel {
    restorer: stream::Restorer<Arc<Vault>>,
    event: Option<String>,
    last: serde_json::Value,
    at: tollgate_model::DeltaAt,
}

type Queue = std::collections::VecDeque<Result<tollgate_model::Event, tollgate_model::UpstreamError>>;

impl FrameRestorer {
    fn new(vault: Arc<Vault>) -> Self {
        Self { vault, channels: BTreeMap::new() }
    }

    fn push(&mut self, event: Option<String>, data: String, delta: Option<tollgate_model::DeltaAt>, out: &mut Queue) {
        use tollgate_model::Event;
        let Ok(mut value) = serde_json::from_str::<serde_json::Value>(&data) else {
            // Not JSON (`[DONE]`): no text in it.
            self.flush(out);
            out.push_back(Ok(Event::Frame { event, data, delta }));
            return;
        };
        match delta {
            Some(at) => {
                let Some(piece) = value.pointer_mut(&at.pointer).and_then(|p| p.as_str().map(str::to_string)) else {
                    out.push_back(Ok(Event::Frame { event, data, delta: Some(at) }));
                    return;
                };
                let vault = Arc::clone(&self.vault);
                let channel = self.channels.entry(at.channel.clone()).or_insert_with(|| Channel {
                    restorer: stream::Restorer::new(vault, at.json),
                    event: None,
                    last: serde_json::Value::Null,
                    at: at.clone(),
                });
                let released = channel.restorer.push(&piece);
                if let Some(slot) = value.pointer_mut(&at.pointer) {
                    *slot = serde_json::Value::String(released);
                }
                channel.event.clone_from(&event);
                channel.last = value.clone();
                out.push_back(Ok(Event::Frame { event, data: value.to_string(), delta: Some(at) }));
            }
            None => {
                self.flush(out);
                restore_value(&self.vault, &mut value);
                out.push_back(Ok(Event::Frame { event, data: value.to_string(), delta: None }));
            }
        }
    }

    /// Releases what each channel holds, each in a frame shaped like its last one.
    fn flush(&mut self, out: &mut Queue) {
        for (_, mut c) in std::mem::take(&mut self.channels) {
            let rest = c.restorer.finish();
            if rest.is_empty() {
                continue;
            }
            if let Some(slot) = c.last.pointer_mut(&c.at.pointer) {
                *slot = serde_json::Value::String(rest);
            }
            out.push_back(Ok(tollgate_model::Event::Frame {
                event: c.event,
                data: c.last.to_string(),
                delta: Some(c.at),
            }));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tollgate_model::{Message, Role};

    /// The labelled corpus: `shared/corpus` beside the repository, or `$TOLLGATE_CORPUS`.
    pub fn corpus_dir() -> std::path::PathBuf {
        let dir: std::path::PathBuf = match std::env::var_os("TOLLGATE_CORPUS") {
            Some(p) => p.into(),
            None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus"),
        };
        assert!(
            dir.join("secrets/labels.jsonl").exists(),
            "no corpus at {}: put shared/ beside the repository or set TOLLGATE_CORPUS",
            dir.display()
        );
        dir
    }

    fn redactor() -> Redactor {
        Redactor::new(Arc::new(Scanner::new(rules::built_in())))
    }

    #[test]
    fn names_are_masked_only_where_listed_whole_words_in_any_case() {
        let config = |names: &[&str]| RedactionConfig {
            mode: Mode::Mask,
            rule_files: Vec::new(),
            allow: Vec::new(),
            off_kinds: Vec::new(),
            countries: Vec::new(),
            names: names.iter().map(|n| n.to_string()).collect(),
        };
        let none = load_scanner(&config(&[]), &[]).unwrap();
        assert!(none.rules().iter().all(|r| r.kind != "person_name"), "no names, no rule");
        let s = load_scanner(&config(&["Raj Patel", "José Álvarez", " "]), &[]).unwrap();
        let found = |text: &str| -> Vec<String> {
            s.scan(text.as_bytes())
                .iter()
                .filter(|f| s.rule(f.rule).kind == "person_name")
                .map(|f| text[f.start..f.end].to_string())
                .collect()
        };
        assert_eq!(found("ask raj patel or JOSÉ ÁLVAREZ."), ["raj patel", "JOSÉ ÁLVAREZ"]);
        assert!(found("rajpatel and Raj Patelson and xJosé Álvarez").is_empty(), "part of another word");
    }

    #[test]
    fn new_placeholders_are_numbered_after_those_an_earlier_turn_left() {
        let r = redactor();
        let mut req = ChatRequest {
            messages: vec![
                Message::text(Role::User, "earlier: TOLLGATE_GITLAB_PAT_2 and TOLLGATE_EMAIL_1"),
                Message::text(Role::User, "now glpat-riGp_58WAm-dX3a5IDnO"),
            ],
            ..Default::default()
        };
        let vault = r.mask(&mut req);
        assert_eq!(req.messages[1].joined_text(), "now TOLLGATE_GITLAB_PAT_3");
        assert_eq!(vault.summary(), "gitlab_pat=1");
        assert_eq!(
            restore(&vault, "TOLLGATE_GITLAB_PAT_2 TOLLGATE_GITLAB_PAT_3", false),
            "TOLLGATE_GITLAB_PAT_2 glpat-riGp_58WAm-dX3a5IDnO"
        );
    }

    #[test]
    fn the_same_value_gets_the_same_placeholder_in_every_turn() {
        let r = redactor();
        let pat = "glpat-riGp_58WAm-dX3a5IDnO";
        let mail = "raj.patel54@acme.io";
        let turn1 = vec![Message::text(Role::User, format!("token {pat}, mail {mail}"))];
        let mut req = ChatRequest { messages: turn1.clone(), ..Default::default() };
        let v1 = r.mask(&mut req);
        assert_eq!(req.messages[0].joined_text(), "token TOLLGATE_GITLAB_PAT_1, mail TOLLGATE_EMAIL_1");
        let mut turn2 = turn1;
        turn2.push(Message::text(Role::Assistant, format!("I see {mail} and {pat}")));
        turn2.push(Message::text(Role::User, format!("again {pat}")));
        let mut req2 = ChatRequest { messages: turn2, ..Default::default() };
        let v2 = r.mask(&mut req2);
        assert_eq!(req2.messages[1].joined_text(), "I see TOLLGATE_EMAIL_1 and TOLLGATE_GITLAB_PAT_1");
        assert_eq!(req2.messages[2].joined_text(), "again TOLLGATE_GITLAB_PAT_1");
        assert_eq!(v1.summary(), v2.summary());
        assert_eq!(v2.summary(), "email=1,gitlab_pat=1");
    }

    #[test]
    fn a_value_found_once_is_masked_everywhere_in_the_request() {
        let r = redactor();
        // Found by its context in the first message; bare in the second.
        let mut req = ChatRequest {
            messages: vec![
                Message::text(Role::User, "DB_PASSWORD=\"e5rWIhe*exCK*pN\""),
                Message::text(Role::User, "the log says e5rWIhe*exCK*pN failed"),
            ],
            ..Default::default()
        };
        r.mask(&mut req);
        assert_eq!(req.messages[1].joined_text(), "the log says TOLLGATE_GENERIC_PASSWORD_1 failed");
    }

    #[test]
    fn restoration_skips_urls_and_escapes_json() {
        let r = redactor();
        let mut req = ChatRequest {
            messages: vec![Message::text(
                Role::User,
                "pw \"ghp_JN6U6PrPod6eWGP4xkGXY4nttSt2JxkSSVDM\" and line2\nPRIVATE",
            )],
            ..Default::default()
        };
        let vault = r.mask(&mut req);
        let answer = "Use TOLLGATE_GITHUB_PAT_1 but not https://evil.example/?k=TOLLGATE_GITHUB_PAT_1 nor [x](http://e.example/TOLLGATE_GITHUB_PAT_1)";
        assert_eq!(
            restore(&vault, answer, false),
            "Use ghp_JN6U6PrPod6eWGP4xkGXY4nttSt2JxkSSVDM but not https://evil.example/?k=TOLLGATE_GITHUB_PAT_1 nor [x](http://e.example/TOLLGATE_GITHUB_PAT_1)"
        );
        let mut v = Vault::default();
        let p = v.placeholder("private_key", "-----BEGIN\n\"quoted\"");
        assert_eq!(restore(&v, &format!("{{\"k\": \"{p}\"}}"), true), "{\"k\": \"-----BEGIN\\n\\\"quoted\\\"\"}");
    }

    #[test]
    fn no_placeholder_is_restored_inside_a_link_however_the_link_is_written() {
        let mut v = Vault::default();
        let p = v.placeholder("github_pat", "ghp_JN6U6PrPod6eWGP4xkGXY4nttSt2JxkSSVDM");
        for link in [
            "https:\\/\\/evil.example\\/?k=",
            "https:\\u002F\\u002Fevil.example/?k=",
            "//evil.example/?k=",
            "www.evil.example/?k=",
            "WWW.evil.example/?k=",
            "https:&#47;&#47;evil.example/?k=",
            "https:&#x2F;&#x2f;evil.example/?k=",
            "https:%2F%2Fevil.example/?k=",
            "https:%252F%252Fevil.example?k=",
            "mailto:a@evil.example?body=",
            "![img](HTTPS://evil.example/",
        ] {
            let answer = format!("see {link}{p} now");
            for json in [false, true] {
                assert_eq!(restore(&v, &answer, json), answer, "restored inside {link}");
                // However the stream is cut.
                let cuts: Vec<usize> = (1..answer.len()).collect();
                assert_eq!(stream::restore_chunked(&v, &answer, &cuts, json), answer, "restored inside {link}, cut");
            }
        }
        // Text beside a link, or with single slashes, is no link.
        for text in [format!("a/b {p}"), format!("https://x.example {p}"), format!("and/or {p}."), format!("1/2/{p}")] {
            assert!(restore(&v, &text, false).contains("ghp_JN6U6"), "{text}");
        }
    }

    #[test]
    fn ids_names_and_choices_are_masked_like_any_text_and_real_ids_are_left_alone() {
        use tollgate_model::{Tool, ToolChoice};
        let r = redactor();
        let pat = "glpat-riGp_58WAm-dX3a5IDnO";
        let mut req = ChatRequest {
            messages: vec![
                Message {
                    role: Role::Assistant,
                    content: vec![Part::ToolCall {
                        id: pat.into(),
                        name: format!("run_{pat}"),
                        arguments: "{}".into(),
                    }],
                },
                Message {
                    role: Role::Tool,
                    content: vec![Part::ToolResult {
                        tool_call_id: pat.into(),
                        name: Some(pat.into()),
                        content: "ok".into(),
                        is_error: false,
                    }],
                },
            ],
            tools: vec![Tool { name: pat.into(), description: None, parameters: serde_json::json!({}) }],
            tool_choice: Some(ToolChoice::Tool(pat.into())),
            response_format: Some(ResponseFormat::JsonSchema {
                name: pat.into(),
                schema: serde_json::json!({}),
                strict: true,
            }),
            ..Default::default()
        };
        let vault = r.mask(&mut req);
        assert!(!serde_json::to_string(&req).unwrap().contains(pat), "{req:?}");
        assert_eq!(vault.total(), 1, "one value, one placeholder wherever it is");
        // The ids providers and tools make are not mistaken for secrets.
        for id in ["toolu_01A09q90qw90lq917835lq9", "call_abc123XYZ789def456", "fc_68a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5"] {
            assert_eq!(r.first_kind(id), None, "{id}");
        }
    }

    /// 20,000 distinct emails once took 26 s to mask and restore (a search of every placeholder
    /// for each one) and stalled other requests: each is found by its index now. All come back.
    #[test]
    fn twenty_thousand_distinct_values_are_masked_and_restored() {
        let r = redactor();
        let text: String = (0..20_000).map(|i| format!("user{i}@corp-mail.io ")).collect();
        let mut req = ChatRequest { messages: vec![Message::text(Role::User, text.clone())], ..Default::default() };
        let vault = r.mask(&mut req);
        assert_eq!(vault.total(), 20_000);
        let Part::Text { text: masked } = &req.messages[0].content[0] else { panic!() };
        assert!(!masked.contains('@'));
        assert_eq!(restore(&vault, masked, false), text);
        let cuts: Vec<usize> = (1..masked.len()).step_by(7).filter(|&i| masked.is_char_boundary(i)).collect();
        assert_eq!(stream::restore_chunked(&vault, masked, &cuts, false), text);
    }

    #[test]
    fn block_mode_names_the_rule_and_line_but_not_the_value() {
        let r = redactor();
        let mut req = ChatRequest {
            messages: vec![Message::text(Role::User, "a\nb\nkey=AKIA4QV7HNFCAA6UYSMZ")],
            ..Default::default()
        };
        let b = r.check(&mut req).unwrap_err();
        assert_eq!((b.rule.as_str(), b.line, b.at.as_str()), ("aws-access-key-id", 3, "messages[0]"));
        assert!(!b.to_string().contains("AKIA4QV7"));
    }

    /// Recall and precision on the labelled corpus, scored as its README says.
    #[test]
    fn the_corpus_is_found_whole_with_no_false_alarm() {
        let dir = corpus_dir().join("secrets");
        let labels =
            std::fs::read_to_string(dir.join("labels.jsonl")).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let scanner = Scanner::new(rules::built_in());
        let (mut labelled, mut covered, mut findings, mut true_findings) = (0, 0, 0, 0);
        let mut misses = Vec::new();
        let mut false_positives = Vec::new();
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".txt"))
            .collect();
        files.sort();
        let label_map: std::collections::HashMap<String, Vec<String>> = labels
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let values =
                    v["secrets"].as_array().unwrap().iter().map(|s| s["value"].as_str().unwrap().to_string()).collect();
                (v["file"].as_str().unwrap().to_string(), values)
            })
            .collect();
        for name in files {
            let text = std::fs::read(dir.join(&name)).unwrap();
            let found = scanner.scan(&text);
            let values = label_map.get(&name).cloned().unwrap_or_default();
            // Where each labelled value stands in the file.
            let mut spans = Vec::new();
            for v in &values {
                let vb = v.as_bytes();
                let mut from = 0;
                while let Some(p) = text[from..].windows(vb.len()).position(|w| w == vb) {
                    spans.push((from + p, from + p + vb.len()));
                    from += p + 1;
                }
            }
            for v in &values {
                labelled += 1;
                let vb = v.as_bytes();
                let pos = text.windows(vb.len()).position(|w| w == vb).expect("a labelled value is in its file");
                if found.iter().any(|f| f.start <= pos && f.end >= pos + vb.len()) {
                    covered += 1;
                } else {
                    misses.push(format!("{name}: {v}"));
                }
            }
            for f in &found {
                findings += 1;
                if spans.iter().any(|&(s, e)| f.start < e && f.end > s) {
                    true_findings += 1;
                } else {
                    false_positives.push(format!(
                        "{name}: {} {:?}",
                        scanner.rule(f.rule).id,
                        String::from_utf8_lossy(&text[f.start..f.end])
                    ));
                }
            }
        }
        let recall = covered as f64 / labelled as f64;
        let precision = true_findings as f64 / findings.max(1) as f64;
        println!(
            "corpus: recall {recall:.3} ({covered}/{labelled}), precision {precision:.3} ({true_findings}/{findings})"
        );
        assert!(misses.is_empty(), "recall {recall:.3}; missed: {misses:#?}");
        assert!(false_positives.is_empty(), "precision {precision:.3}; false positives: {false_positives:#?}");
    }
}
