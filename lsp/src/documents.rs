//! Open documents: their text, version, and syntax tree, kept current by incremental edits (the
//! tree is re-parsed incrementally, so a keystroke in a large file costs little).

use std::collections::HashMap;

use tower_lsp_server::lsp_types::{Position, Range, TextDocumentContentChangeEvent, Uri};
use tree_sitter::{InputEdit, Point, Tree};

use crate::syntax::{self, Lang};

/// How positions count characters within a line, as negotiated at initialize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Utf8,
    Utf16,
}

pub struct Document {
    pub text: String,
    pub version: i32,
    pub lang: Option<Lang>,
    pub tree: Option<Tree>,
    /// Byte offset of the start of each line.
    lines: Vec<usize>,
}

/// The largest document given a syntax tree: an 8 MiB file once took 1.3 GB and 33 s to parse
/// and keep parsing; beyond this, completions work from the text alone.
pub const MAX_PARSED: usize = 2 * 1024 * 1024;

/// The largest character boundary at or before `i` (`i` at most `text.len()`).
pub fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect()
}

impl Document {
    pub fn new(text: String, version: i32, path: &str) -> Self {
        Self::with_lang(text, version, Lang::of_path(path))
    }

    fn with_lang(text: String, version: i32, lang: Option<Lang>) -> Self {
        let tree = lang.filter(|_| text.len() <= MAX_PARSED).and_then(|l| syntax::parse(&text, l));
        Self { lines: line_starts(&text), text, version, lang, tree }
    }

    /// The byte offset of an LSP position (clamped to the document).
    pub fn offset(&self, pos: Position, enc: Encoding) -> usize {
        let Some(&start) = self.lines.get(pos.line as usize) else { return self.text.len() };
        let end = self.lines.get(pos.line as usize + 1).map_or(self.text.len(), |e| e - 1).max(start);
        let line = &self.text[start..end];
        match enc {
            // A client's byte column may fall inside a character: the character's start is used.
            Encoding::Utf8 => floor_char_boundary(&self.text, start + (pos.character as usize).min(line.len())),
            Encoding::Utf16 => {
                let mut units = 0usize;
                for (i, c) in line.char_indices() {
                    if units >= pos.character as usize {
                        return start + i;
                    }
                    units += c.len_utf16();
                }
                end
            }
        }
    }

    /// The LSP position of a byte offset.
    pub fn position(&self, offset: usize, enc: Encoding) -> Position {
        let offset = floor_char_boundary(&self.text, offset.min(self.text.len()));
        let line = self.lines.partition_point(|&s| s <= offset) - 1;
        let start = self.lines[line];
        let character = match enc {
            Encoding::Utf8 => offset - start,
            Encoding::Utf16 => self.text[start..offset].chars().map(char::len_utf16).sum(),
        };
        Position { line: line as u32, character: character as u32 }
    }

    fn point(&self, offset: usize) -> Point {
        let line = self.lines.partition_point(|&s| s <= offset) - 1;
        Point { row: line, column: offset - self.lines[line] }
    }

    /// Applies one change: a range replaced, or the whole text.
    pub fn apply(&mut self, change: &TextDocumentContentChangeEvent, enc: Encoding) {
        let Some(range) = change.range else {
            *self = Document::with_lang(change.text.clone(), self.version, self.lang);
            return;
        };
        let start = self.offset(range.start, enc);
        let old_end = self.offset(range.end, enc).max(start);
        let (start_position, old_end_position) = (self.point(start), self.point(old_end));
        self.text.replace_range(start..old_end, &change.text);
        self.lines = line_starts(&self.text);
        let new_end = start + change.text.len();
        let new_end_position = self.point(new_end);
        if self.text.len() > MAX_PARSED {
            // Too large to parse on every keystroke: completions go without syntax.
            self.tree = None;
            return;
        }
        if self.tree.is_none() {
            // Back under the limit (or never parsed): parsed whole once.
            self.tree = self.lang.and_then(|l| syntax::parse(&self.text, l));
            return;
        }
        if let (Some(tree), Some(lang)) = (self.tree.as_mut(), self.lang) {
            tree.edit(&InputEdit {
                start_byte: start,
                old_end_byte: old_end,
                new_end_byte: new_end,
                start_position,
                old_end_position,
                new_end_position,
            });
            self.tree = syntax::reparse(&self.text, lang, Some(tree));
        }
    }

    /// The text of a range.
    pub fn slice(&self, range: Range, enc: Encoding) -> &str {
        let (a, b) = (self.offset(range.start, enc), self.offset(range.end, enc));
        &self.text[a.min(b)..b.max(a)]
    }

    pub fn line_count(&self) -> usize {
        self.lines.len()
    }
}

/// Every open document, by URI.
#[derive(Default)]
pub struct Documents {
    pub docs: HashMap<Uri, Document>,
}

impl Documents {
    /// Applies a `didChange`; changes for a version older than the one held are ignored (they
    /// arrived out of order), and the caller is told.
    pub fn change(
        &mut self,
        uri: &Uri,
        version: i32,
        changes: &[TextDocumentContentChangeEvent],
        enc: Encoding,
    ) -> bool {
        let Some(doc) = self.docs.get_mut(uri) else { return false };
        if version <= doc.version {
            return false;
        }
        for c in changes {
            doc.apply(c, enc);
        }
        doc.version = version;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(l1: u32, c1: u32, l2: u32, c2: u32, text: &str) -> TextDocumentContentChangeEvent {
        TextDocumentContentChangeEvent {
            range: Some(Range {
                start: Position { line: l1, character: c1 },
                end: Position { line: l2, character: c2 },
            }),
            range_length: None,
            text: text.into(),
        }
    }

    #[test]
    fn incremental_edits_in_utf16_and_utf8_keep_text_and_tree_in_step() {
        let mut d = Document::new("fn main() {\n    let s = \"héllo 😀\";\n}\n".into(), 1, "a.rs");
        // After the emoji (UTF-16 units 19 and 20; 4 bytes): insert `!`.
        d.apply(&change(1, 21, 1, 21, "!"), Encoding::Utf16);
        assert_eq!(d.text, "fn main() {\n    let s = \"héllo 😀!\";\n}\n");
        d.apply(&change(2, 0, 2, 1, "}\nfn b() {}"), Encoding::Utf8);
        assert!(d.text.ends_with("}\nfn b() {}\n"));
        let fresh = syntax::parse(&d.text, Lang::Rust).unwrap();
        assert_eq!(d.tree.as_ref().unwrap().root_node().to_sexp(), fresh.root_node().to_sexp());
        let p = d.position(d.text.find('!').unwrap(), Encoding::Utf16);
        assert_eq!(p, Position { line: 1, character: 21 });
        assert_eq!(d.offset(p, Encoding::Utf16), d.text.find('!').unwrap());
    }

    /// Positions a client may send anywhere (inside a character, past a line's end, beyond the
    /// last line, inside a surrogate pair), in either encoding: every edit applies without a
    /// panic, and the text stays valid.
    #[test]
    fn every_position_and_range_is_taken_without_a_panic() {
        let text = "é😀x\nñ\n\n日本語\n";
        for enc in [Encoding::Utf8, Encoding::Utf16] {
            for l1 in 0..6 {
                for c1 in 0..14 {
                    let d = Document::new(text.into(), 1, "a.txt");
                    let offset = d.offset(Position { line: l1, character: c1 }, enc);
                    assert!(d.text.is_char_boundary(offset), "{enc:?} {l1}:{c1} -> {offset}");
                    for b in 0..=d.text.len() + 2 {
                        let _ = d.position(b, enc);
                    }
                    for (l2, c2) in [(l1, c1), (l1, c1 + 1), (l1 + 1, 0), (0, 0), (9, 9)] {
                        let mut d = Document::new(text.into(), 1, "a.txt");
                        d.apply(&change(l1, c1, l2, c2, "ü"), enc);
                        assert!(std::str::from_utf8(d.text.as_bytes()).is_ok());
                    }
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 300, ..Default::default() })]
        /// Any sequence of edits, anywhere, in either encoding: the text stays valid and the
        /// incrementally kept syntax tree is the one a fresh parse gives.
        #[test]
        fn any_edits_keep_the_text_valid_and_the_tree_in_step(
            edits in proptest::collection::vec(
                (0u32..6, 0u32..12, 0u32..6, 0u32..12, "[a-z\\n{}();é😀 ]{0,6}", proptest::bool::ANY),
                1..12,
            )
        ) {
            let mut d = Document::new("fn main() {\n    let s = \"héllo 😀\";\n}\n".into(), 1, "a.rs");
            for (l1, c1, l2, c2, text, utf16) in edits {
                let enc = if utf16 { Encoding::Utf16 } else { Encoding::Utf8 };
                let (start, end) = if (l1, c1) <= (l2, c2) { ((l1, c1), (l2, c2)) } else { ((l2, c2), (l1, c1)) };
                d.apply(&change(start.0, start.1, end.0, end.1, &text), enc);
                proptest::prop_assert!(std::str::from_utf8(d.text.as_bytes()).is_ok());
                let fresh = syntax::parse(&d.text, Lang::Rust).unwrap();
                proptest::prop_assert_eq!(d.tree.as_ref().unwrap().root_node().to_sexp(), fresh.root_node().to_sexp());
            }
        }
    }

    #[test]
    fn a_document_beyond_the_parse_limit_is_kept_as_text_and_parsed_again_once_small() {
        let big = "fn f() {}\n".repeat(MAX_PARSED / 10 + 1);
        let mut d = Document::new(big, 1, "big.rs");
        assert!(d.text.len() > MAX_PARSED && d.tree.is_none());
        d.apply(&change(0, 0, 0, 0, "// hi\n"), Encoding::Utf16);
        assert!(d.text.starts_with("// hi\nfn f()") && d.tree.is_none());
        let end = d.line_count() as u32;
        d.apply(&change(1, 0, end, 0, ""), Encoding::Utf16);
        assert_eq!(d.text, "// hi\n");
        assert!(d.tree.is_some(), "parsed again once under the limit");
    }

    #[test]
    fn stale_versions_are_ignored() {
        let mut docs = Documents::default();
        let uri: Uri = "file:///a.py".parse().unwrap();
        docs.docs.insert(uri.clone(), Document::new("x = 1\n".into(), 3, "a.py"));
        assert!(!docs.change(&uri, 2, &[change(0, 0, 0, 1, "y")], Encoding::Utf16));
        assert!(docs.change(&uri, 4, &[change(0, 0, 0, 1, "y")], Encoding::Utf16));
        assert_eq!(docs.docs[&uri].text, "y = 1\n");
    }
}
