//! Restoring placeholders in a streamed answer. A chunk may end in the middle of a placeholder,
//! so the restorer holds back a tail that could still become one (at most [`MAX_HOLD`] bytes) and
//! releases it with the next chunk or at the end. Whatever the split, the output is exactly what
//! restoring the whole text at once gives (a property test checks it).
//!
//! A placeholder inside a link is left as it is: the model must not be able to smuggle a secret
//! out through a URL a client may fetch or render. A link is a run of non-space text holding two
//! slashes in a row (`https://`, a protocol-relative `//host`), `www.` or `mailto:`, whichever way
//! an answer writes a slash (JSON's `\/` and `\u002f`, percent- and HTML-encoded), in any case.

use super::Vault;

/// The longest tail held back; a placeholder is far shorter.
pub const MAX_HOLD: usize = 128;

pub const PREFIX: &str = "TOLLGATE_";

/// The ways a slash is written in text, JSON strings, URLs and HTML (compared without case).
const SLASHES: &[&[u8]] = &[b"\\u002f", b"&#x2f;", b"&#047;", b"&#47;", b"&sol;", b"%252f", b"%2f", b"\\/", b"/"];
/// Words that make the run they are in a link.
const LINK_WORDS: &[&[u8]] = &[b"www.", b"mailto:"];
/// The longest of the above.
const LONGEST: usize = 7;

/// Whether the text since the last whitespace is a link, tracked across chunks.
#[derive(Debug, Default, Clone, Copy)]
struct UrlState {
    in_url: bool,
    /// Bytes of the current run seen.
    pos: usize,
    /// Where the last slash of the run ended.
    slash_end: Option<usize>,
    /// The run's last bytes, lowercased.
    tail: [u8; LONGEST],
}

impl UrlState {
    fn feed(&mut self, s: &str) {
        for &b in s.as_bytes() {
            if b.is_ascii_whitespace() {
                *self = UrlState::default();
                continue;
            }
            if self.in_url {
                continue;
            }
            self.tail.copy_within(1.., 0);
            self.tail[LONGEST - 1] = b.to_ascii_lowercase();
            self.pos += 1;
            let seen = &self.tail[LONGEST - self.pos.min(LONGEST)..];
            if let Some(slash) = SLASHES.iter().find(|enc| seen.ends_with(enc)) {
                if self.slash_end == Some(self.pos - slash.len()) {
                    self.in_url = true;
                }
                self.slash_end = Some(self.pos);
            }
            if LINK_WORDS.iter().any(|w| seen.ends_with(w)) {
                self.in_url = true;
            }
        }
    }
}

pub struct Restorer<V: std::ops::Deref<Target = Vault>> {
    vault: V,
    json: bool,
    pending: String,
    url: UrlState,
    /// Whether the last character released was an identifier character.
    word_before: bool,
}

impl<V: std::ops::Deref<Target = Vault>> Restorer<V> {
    pub fn new(vault: V, json: bool) -> Self {
        Self { vault, json, pending: String::new(), url: UrlState::default(), word_before: false }
    }

    /// Takes a chunk; returns what can be released now.
    pub fn push(&mut self, chunk: &str) -> String {
        if self.vault.is_empty() {
            return chunk.to_string();
        }
        self.pending.push_str(chunk);
        let (cut, mid_word) = hold_from(&self.pending);
        let ready: String = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        self.restore_segment(&ready, mid_word)
    }

    /// The end of the stream: releases the held tail.
    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.pending);
        self.restore_segment(&rest, false)
    }

    /// Restores the placeholders of a segment. A placeholder counts only as a whole word: no
    /// identifier character right before or after it. `mid_word`: the segment was cut inside a
    /// word, so its end is no word boundary.
    fn restore_segment(&mut self, text: &str, mid_word: bool) -> String {
        let bytes = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        let mut from = 0;
        while let Some(off) = text[from..].find(PREFIX) {
            let at = from + off;
            from = at + 1;
            let word_before = if at > 0 { is_word(bytes[at - 1]) } else { self.word_before };
            if word_before {
                continue;
            }
            // A placeholder is a whole word: the run of identifier characters from here, complete
            // unless the segment was cut inside it.
            let end = at + bytes[at..].iter().take_while(|&&b| is_word(b)).count();
            if end == bytes.len() && mid_word {
                continue;
            }
            let placeholder = &text[at..end];
            let Some(value) = self.vault.value_of(placeholder) else { continue };
            let before = &text[last..at];
            self.url.feed(before);
            out.push_str(before);
            if self.url.in_url {
                out.push_str(placeholder);
            } else if self.json {
                let quoted = serde_json::to_string(value).expect("a string serializes");
                out.push_str(&quoted[1..quoted.len() - 1]);
            } else {
                out.push_str(value);
            }
            self.url.feed(placeholder);
            last = at + placeholder.len();
            from = last;
        }
        self.url.feed(&text[last..]);
        out.push_str(&text[last..]);
        if let Some(&b) = bytes.last() {
            self.word_before = is_word(b);
        }
        out
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Where the tail that could still change how the text reads begins, and whether that cut falls
/// inside a word. The tail is the trailing run of identifier characters: a placeholder can only be
/// told complete by the character after it (`TOLLGATE_X_1` followed by `2` or `T` is no
/// placeholder), so a word is not released until the next character is known. Of a run longer
/// than [`MAX_HOLD`] the last `MAX_HOLD` bytes stay held: any placeholder that ends where the run
/// ends lies within them.
fn hold_from(buf: &str) -> (usize, bool) {
    let run = buf.bytes().rev().take_while(|&b| is_word(b)).count();
    if run > MAX_HOLD { (buf.len() - MAX_HOLD, true) } else { (buf.len() - run, false) }
}

/// Restores `text` as if it were streamed in chunks cut at `points` (byte offsets on character
/// boundaries, ascending): what the tests and the fuzz target compare with whole restoration.
pub fn restore_chunked(vault: &Vault, text: &str, points: &[usize], json: bool) -> String {
    let mut r = Restorer::new(vault, json);
    let mut out = String::new();
    let mut last = 0;
    for &p in points {
        out.push_str(&r.push(&text[last..p]));
        last = p;
    }
    out.push_str(&r.push(&text[last..]));
    out.push_str(&r.finish());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vault() -> Vault {
        let mut v = Vault::default();
        v.placeholder("gitlab_pat", "glpat-riGp_58WAm-dX3a5IDnO");
        v.placeholder("email", "raj@acme.io");
        v.placeholder("gitlab_pat", "glpat-second-value-0000");
        v
    }

    fn whole(v: &Vault, text: &str) -> String {
        super::super::restore(v, text, false)
    }

    #[test]
    fn a_placeholder_split_anywhere_is_restored() {
        let v = vault();
        let text = "a TOLLGATE_GITLAB_PAT_1 b TOLLGATE_EMAIL_1.";
        let expected = "a glpat-riGp_58WAm-dX3a5IDnO b raj@acme.io.";
        for i in 0..=text.len() {
            assert_eq!(restore_chunked(&v, text, &[i], false), expected, "split at {i}");
        }
        // Held back no longer than needed: a word is released once the next character is known.
        let mut r = Restorer::new(&v, false);
        assert_eq!(r.push("hello TOLL"), "hello ");
        assert_eq!(r.push("BOOTH "), "TOLLBOOTH ");
        assert_eq!(r.push("TOLLGATE_EMAIL_1"), "");
        assert_eq!(r.push("T"), "");
        assert_eq!(r.finish(), "TOLLGATE_EMAIL_1T");
    }

    #[test]
    fn a_word_longer_than_the_hold_back_is_cut_without_inventing_a_boundary() {
        let v = vault();
        let text = format!(":/{}TOLLGATE_GITLAB_PAT_1{} done", "TOLLGATE_EMAIL_1".repeat(12), "TOLLGATE_GITLAB_PAT_1");
        let expected = whole(&v, &text);
        for i in 0..=text.len() {
            assert_eq!(restore_chunked(&v, &text, &[i], false), expected, "split at {i}");
        }
    }

    #[test]
    fn unknown_or_longer_names_stay_as_they_are() {
        let v = vault();
        assert_eq!(
            whole(&v, "TOLLGATE_GITLAB_PAT_12 TOLLGATE_GITLAB_PAT_1x TOLLGATE_OTHER_1"),
            "TOLLGATE_GITLAB_PAT_12 TOLLGATE_GITLAB_PAT_1x TOLLGATE_OTHER_1"
        );
        // Only whole words: glued to an identifier on either side, it is part of something else.
        assert_eq!(
            whole(&v, "XTOLLGATE_EMAIL_1 TOLLGATE_EMAIL_1TOLLGATE_EMAIL_1 (TOLLGATE_EMAIL_1)"),
            "XTOLLGATE_EMAIL_1 TOLLGATE_EMAIL_1TOLLGATE_EMAIL_1 (raj@acme.io)"
        );
        // An identifier run longer than the hold-back, ending in a placeholder: the same whatever
        // the chunking (the greedy name pattern used to swallow it whole, or not, depending on it).
        let long = format!("TOLLGATE_X{}TOLLGATE_EMAIL_1 end", "A".repeat(150));
        let expected = format!("TOLLGATE_X{}TOLLGATE_EMAIL_1 end", "A".repeat(150));
        for i in 0..=long.len() {
            assert_eq!(restore_chunked(&v, &long, &[i], false), expected, "split at {i}");
        }
    }

    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("TOLLGATE_GITLAB_PAT_1".to_string()),
            Just("TOLLGATE_EMAIL_1".to_string()),
            Just("TOLLGATE_GITLAB_PAT_2".to_string()),
            Just("TOLLGATE_".to_string()),
            Just("TOLL".to_string()),
            Just("https://x.example/?k=".to_string()),
            Just(":/".to_string()),
            Just("/".to_string()),
            Just(" ".to_string()),
            Just("\n".to_string()),
            Just("é".to_string()),
            "[a-zA-Z0-9_ .,:/-]{0,12}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        /// Any split of a stream into chunks restores exactly what the unsplit stream restores.
        #[test]
        fn any_split_restores_exactly_what_the_whole_restores(pieces in proptest::collection::vec(piece(), 0..24), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10)) {
            let v = vault();
            let text: String = pieces.concat();
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(text.len() + 1)).filter(|&p| text.is_char_boundary(p)).collect();
            points.sort_unstable();
            points.dedup();
            prop_assert_eq!(restore_chunked(&v, &text, &points, false), whole(&v, &text));
        }
    }
}
