//! What a completion request carries besides the cursor: prefix and suffix windows cut at syntax
//! boundaries within a budget, the file's imports, the enclosing scope's signature when the window
//! does not reach it, and the most related snippets of other open documents. Also whether to ask
//! at all, and whether the user wants code written from a comment (generation) or completed.

use crate::documents::Document;
pub use tollgate_protocol::{Intent, Snippet};

/// Sizes in bytes (about four per token).
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub prefix: usize,
    pub suffix: usize,
    pub snippets: usize,
}

impl Default for Budget {
    fn default() -> Self {
        // About 1,500, 500 and 500 tokens.
        Self { prefix: 6000, suffix: 2000, snippets: 2000 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub prefix: String,
    pub suffix: String,
    pub snippets: Vec<Snippet>,
    pub intent: Intent,
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

const IMPORT_KINDS: &[&str] = &[
    "use_declaration",
    "extern_crate_declaration",
    "import_statement",
    "import_from_statement",
    "future_import_statement",
    "import_declaration",
    "package_clause",
    "preproc_include",
    "using_declaration",
    "package_declaration",
];

fn is_comment(kind: &str) -> bool {
    kind.contains("comment")
}

fn is_string(kind: &str) -> bool {
    kind.contains("string") || kind.contains("char_literal") || kind == "template_string"
}

/// Builds the context at byte `offset`, or `None` where completing makes no sense: in the middle
/// of a word, or mid-word in a comment or a string.
pub fn build(doc: &Document, offset: usize, others: &[(&str, &Document)], budget: Budget) -> Option<Context> {
    let text = &doc.text;
    let offset = crate::documents::floor_char_boundary(text, offset);
    let before = text[..offset].chars().next_back();
    let after = text[offset..].chars().next();
    if after.is_some_and(is_word) && before.is_some_and(is_word) {
        return None; // mid-word
    }
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_before = &text[line_start..offset];
    let node = doc.tree.as_ref().map(|t| t.root_node().descendant_for_byte_range(offset.saturating_sub(1), offset));
    if let Some(Some(n)) = node {
        let inside = n.start_byte() < offset && offset <= n.end_byte();
        if inside && (is_comment(n.kind()) || is_string(n.kind())) && before.is_some_and(is_word) {
            return None; // mid-word in prose
        }
    }

    // Generation: the cursor is on a blank line right after a comment.
    let prev_line = text[..line_start].trim_end_matches('\n').rsplit('\n').next().unwrap_or("").trim();
    let looks_like_comment = ["//", "#", "/*", "*", "--", "\"\"\""].iter().any(|m| prev_line.starts_with(m));
    let intent = if line_before.trim().is_empty() && looks_like_comment { Intent::Generate } else { Intent::Complete };

    let (start, end) = window(doc, offset, budget);
    let mut snippets = Vec::new();
    if let Some(tree) = &doc.tree {
        let root = tree.root_node();
        let mut imports = String::new();
        let mut cursor = root.walk();
        for child in root.children(&mut cursor) {
            if IMPORT_KINDS.contains(&child.kind()) && child.end_byte() <= start {
                let t = &text[child.byte_range()];
                if imports.len() + t.len() > budget.snippets / 2 {
                    break;
                }
                imports.push_str(t);
                imports.push('\n');
            }
        }
        if !imports.is_empty() {
            snippets.push(Snippet { label: "imports".into(), text: imports });
        }
        // Probe at the last code before the cursor: on a blank line at the end of an indented
        // block, the cursor itself is outside the block's node.
        let probe = text[..offset].trim_end().len().saturating_sub(1);
        if let Some(scope) =
            crate::syntax::scope_around(root.descendant_for_byte_range(probe, probe)).filter(|s| s.start_byte() < start)
        {
            let head = text[scope.start_byte()..].lines().next().unwrap_or("").to_string();
            snippets.push(Snippet { label: "enclosing scope".into(), text: head });
        }
    }
    snippets.extend(related(&text[start..offset], doc, others, budget.snippets));
    Some(Context { prefix: text[start..offset].to_string(), suffix: text[offset..end].to_string(), snippets, intent })
}

/// `(start, end)` bytes of the prefix and suffix windows: the farthest syntax boundaries (starts and
/// ends of the cursor's ancestors' children, at line starts) within the budgets; plain line
/// boundaries when the file has no tree or no boundary fits.
fn window(doc: &Document, offset: usize, budget: Budget) -> (usize, usize) {
    let text = &doc.text;
    let mut starts = Vec::new();
    let mut ends = Vec::new();
    if let Some(tree) = &doc.tree {
        let mut node = tree.root_node().descendant_for_byte_range(offset, offset);
        while let Some(n) = node {
            let mut cursor = n.walk();
            for child in n.children(&mut cursor) {
                if child.start_byte() <= offset && offset - child.start_byte() <= budget.prefix {
                    starts.push(child.start_byte());
                }
                if child.end_byte() >= offset && child.end_byte() - offset <= budget.suffix {
                    ends.push(child.end_byte());
                }
            }
            node = n.parent();
        }
    }
    // Boundaries at the start of their line only, so that no window begins mid-line.
    let line_start = |b: usize| text[..b].rfind('\n').map_or(0, |i| i + 1);
    let start = starts
        .into_iter()
        .filter(|&b| line_start(b) == b || text[line_start(b)..b].trim().is_empty())
        .map(line_start)
        .min()
        .unwrap_or_else(|| {
            let from = offset.saturating_sub(budget.prefix);
            let from = (from..=offset).find(|&i| text.is_char_boundary(i)).unwrap_or(offset);
            if from == 0 { 0 } else { text[from..offset].find('\n').map_or(line_start(offset), |i| from + i + 1) }
        });
    let end = ends
        .into_iter()
        .max()
        .map(|b| text[b..].find('\n').map_or(text.len(), |i| b + i + 1).min(offset + budget.suffix))
        .unwrap_or_else(|| {
            let to = (offset + budget.suffix).min(text.len());
            let to = (offset..=to).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(offset);
            text[offset..to].rfind('\n').map_or(to, |i| offset + i + 1)
        });
    let end = (end.max(offset)..=end.max(offset)).find(|&i| text.is_char_boundary(i)).unwrap_or(offset);
    (start.min(offset), end)
}

fn identifiers(text: &str) -> std::collections::HashSet<&str> {
    text.split(|c: char| !is_word(c)).filter(|w| w.len() >= 3 && !w.starts_with(|c: char| c.is_ascii_digit())).collect()
}

/// Top-level items of other open documents in the same language that share the most identifiers
/// with the code just before the cursor.
fn related(prefix: &str, doc: &Document, others: &[(&str, &Document)], budget: usize) -> Vec<Snippet> {
    let tail_start = prefix.len().saturating_sub(1200);
    let tail_start = (tail_start..=prefix.len()).find(|&i| prefix.is_char_boundary(i)).unwrap_or(0);
    let wanted = identifiers(&prefix[tail_start..]);
    if wanted.is_empty() {
        return Vec::new();
    }
    let mut scored: Vec<(usize, &str, &str)> = Vec::new();
    for (path, other) in others {
        if other.lang != doc.lang {
            continue;
        }
        let Some(tree) = &other.tree else { continue };
        let root = tree.root_node();
        let mut cursor = root.walk();
        for item in root.children(&mut cursor) {
            let t = &other.text[item.byte_range()];
            if t.len() > budget || IMPORT_KINDS.contains(&item.kind()) {
                continue;
            }
            let score = identifiers(t).intersection(&wanted).count();
            if score > 0 {
                scored.push((score, path, t));
            }
        }
    }
    scored.sort_by_key(|s| std::cmp::Reverse(s.0));
    let mut out = Vec::new();
    let mut used = 0;
    for (_, path, t) in scored {
        if used + t.len() > budget {
            continue;
        }
        used += t.len();
        out.push(Snippet { label: path.to_string(), text: t.to_string() });
        if out.len() == 3 {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(path: &str, text: &str, others: &[(&str, &Document)]) -> Option<Context> {
        let cursor = text.find('|').unwrap();
        let doc = Document::new(text.replace('|', ""), 1, path);
        build(&doc, cursor, others, Budget::default())
    }

    /// Any byte offset, inside a character or past the end, and budgets that end inside one:
    /// a context or none, never a panic.
    #[test]
    fn every_offset_of_a_multibyte_text_is_taken_without_a_panic() {
        let text = "fn é() {\n    let s = \"😀日本\"; // ñ\n}\n".repeat(3);
        let doc = Document::new(text.clone(), 1, "a.rs");
        for budget in [Budget::default(), Budget { prefix: 7, suffix: 5, ..Budget::default() }] {
            for offset in 0..=text.len() + 3 {
                if let Some(c) = build(&doc, offset, &[], budget) {
                    assert!(text.contains(&c.prefix) && text.contains(&c.suffix));
                }
            }
        }
    }

    #[test]
    fn no_request_mid_word_or_mid_word_in_a_comment() {
        assert!(ctx("a.rs", "fn main() { pri|ntln!(); }", &[]).is_none());
        assert!(ctx("a.rs", "// this comm|\nfn main() {}", &[]).is_none());
        assert!(ctx("a.py", "x = \"hello wor|\"\n", &[]).is_none());
        assert!(ctx("a.rs", "fn main() { let x = |; }", &[]).is_some());
        assert!(ctx("a.rs", "fn main() { foo.|\n}", &[]).is_some());
    }

    #[test]
    fn a_comment_above_a_blank_line_asks_for_generation() {
        let c = ctx("a.py", "import os\n\n# return the size of the file at path\n|\n", &[]).unwrap();
        assert_eq!(c.intent, Intent::Generate);
        let c = ctx("a.py", "def f(x):\n    return x|\n", &[]).unwrap();
        assert_eq!(c.intent, Intent::Complete);
    }

    #[test]
    fn windows_stop_at_syntax_boundaries_within_the_budget() {
        let mut text = String::from("use std::fmt;\n\n");
        for i in 0..400 {
            text.push_str(&format!("fn f{i}(x: u32) -> u32 {{\n    x + {i}\n}}\n\n"));
        }
        text.push_str("fn target(y: u32) -> u32 {\n    let z = y * 2;\n    |\n}\n\nfn after() {}\n");
        let c = ctx("a.rs", &text, &[]).unwrap();
        assert!(c.prefix.len() <= Budget::default().prefix && c.prefix.len() > 4000, "{}", c.prefix.len());
        assert!(c.prefix.starts_with("fn f"), "the window starts at an item: {:?}", &c.prefix[..30]);
        assert!(c.prefix.ends_with("let z = y * 2;\n    "));
        assert!(c.suffix.starts_with("\n}\n"));
        assert_eq!(c.snippets[0], Snippet { label: "imports".into(), text: "use std::fmt;\n".into() });
    }

    #[test]
    fn the_enclosing_signature_and_related_snippets_join_the_context() {
        let mut body = String::new();
        for i in 0..300 {
            body.push_str(&format!("        total += values[{i}] * weight;\n"));
        }
        let text =
            format!("class Stats:\n    def weighted_sum(self, values, weight):\n        total = 0\n{body}        |\n");
        let other = Document::new(
            "def normalise_weight(weight):\n    return weight / 100\n\ndef unrelated():\n    pass\n".into(),
            1,
            "util.py",
        );
        let c = ctx("stats.py", &text, &[("util.py", &other)]).unwrap();
        let labels: Vec<&str> = c.snippets.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["enclosing scope", "util.py"], "{c:#?}");
        assert_eq!(c.snippets[0].text, "def weighted_sum(self, values, weight):");
        assert!(c.snippets[1].text.starts_with("def normalise_weight"));
    }
}
