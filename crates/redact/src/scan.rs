//! The scanner: a keyword prefilter (Aho-Corasick, ASCII case-insensitive) finds where each rule
//! may match; the rule's regex runs only on the lines around those places (or a block after them,
//! for multi-line secrets). Rules without keywords run on all of the text. Each match's secret is
//! checked (entropy, allowlists, stopwords, a validator, inline allow markers), and overlapping
//! findings are resolved by rule priority, then length.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::bytes::Regex;

use super::rules::{Category, Checksum, Rule, Validate, Window};

/// A finding: a byte range of the scanned text and the rule that found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    pub rule: usize,
    pub start: usize,
    pub end: usize,
}

/// How far a line window reaches each way around a keyword on a very long line.
const LINE_REACH: usize = 4096;
/// How far a block window reaches after its keyword.
const BLOCK_REACH: usize = 64 * 1024;

/// Markers that allow a line: tollgate's own and the ones other scanners honour.
const ALLOW_MARKERS: [&[u8]; 3] = [b"tollgate:allow", b"gitleaks:allow", b"pragma: allowlist secret"];

pub struct Scanner {
    rules: Vec<Rule>,
    keywords: AhoCorasick,
    /// For each keyword pattern, the rules it triggers.
    keyword_rules: Vec<Vec<usize>>,
    /// Rules without keywords: they run on the lines where `always_re` matches.
    always: Vec<usize>,
    /// The keyword-less rules' patterns as one alternation: one pass over the text finds the lines
    /// where any of them may match, instead of a pass each.
    always_re: Option<Regex>,
    /// Values that are placeholders, examples or lookups, never secrets (built in; secrets only).
    placeholders: Vec<Regex>,
    /// Values the config or policy allows, whatever the rule.
    allow: Vec<Regex>,
    markers: AhoCorasick,
}

/// Allowlist for every rule: placeholders, documented examples, environment lookups.
const GLOBAL_ALLOW: &[&str] = &[
    r"^\$\{[^}]*\}$",
    r"^\$\(.*\)$",
    r"^\{\{.*\}\}$",
    r"^<[^>]*>$",
    r"(?i)^(?:x+|\*+|\.+|-+|#+)$",
    r"xxxx|XXXX|\*\*\*\*",
    r"(?i)example|placeholder|changeme|change_me|dummy|redacted|your[_-]?(?:api[_-]?)?(?:key|token|secret|password)",
    r"(?i)os\.environ|process\.env|getenv|ENV\[|\$\{|\$\(|\{\{|secrets\.|vault:|ssm:|keyring",
    r"^TOLLGATE_[A-Z0-9_]+_[0-9]+$",
];

impl Scanner {
    pub fn new(rules: Vec<Rule>) -> Self {
        let mut patterns: Vec<String> = Vec::new();
        let mut keyword_rules: Vec<Vec<usize>> = Vec::new();
        let mut always = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            if rule.keywords.is_empty() {
                always.push(i);
            }
            for k in &rule.keywords {
                match patterns.iter().position(|p| p == k) {
                    Some(j) => keyword_rules[j].push(i),
                    None => {
                        patterns.push(k.clone());
                        keyword_rules.push(vec![i]);
                    }
                }
            }
        }
        // A DFA: three times the speed of the default NFA on source code, for some memory.
        let keywords = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .match_kind(MatchKind::Standard)
            .build(&patterns)
            .expect("keyword automaton builds");
        let markers = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .build(ALLOW_MARKERS)
            .expect("marker automaton builds");
        let placeholders =
            GLOBAL_ALLOW.iter().map(|a| super::rules::compile(a).expect("global allowlist compiles")).collect();
        let always_re = (!always.is_empty()).then(|| {
            let alternation: Vec<String> = always.iter().map(|&i| format!("(?:{})", rules[i].regex.as_str())).collect();
            super::rules::compile(&alternation.join("|")).expect("patterns that compile alone compile together")
        });
        Self { rules, keywords, keyword_rules, always, always_re, placeholders, allow: Vec::new(), markers }
    }

    /// Adds allowlist patterns: values they match are never findings.
    pub fn with_allow(mut self, extra: Vec<Regex>) -> Self {
        self.allow.extend(extra);
        self
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rule(&self, i: usize) -> &Rule {
        &self.rules[i]
    }

    /// All findings in `text`, sorted by position, none overlapping.
    /// Scans many texts at once (the strings of one request): one pass over them joined by a line
    /// break and a record separator, each finding given back to its text with offsets in it; one
    /// that would run across two texts is none. Cheaper than one scan per text when there are
    /// hundreds of short strings (a tool schema's descriptions).
    pub fn scan_many(&self, texts: &[&str]) -> Vec<Vec<Finding>> {
        const SEP: &[u8] = b"\n\x1e\n";
        let mut joined = Vec::with_capacity(texts.iter().map(|t| t.len() + SEP.len()).sum());
        let mut starts = Vec::with_capacity(texts.len());
        for t in texts {
            starts.push(joined.len());
            joined.extend_from_slice(t.as_bytes());
            joined.extend_from_slice(SEP);
        }
        let mut out: Vec<Vec<Finding>> = texts.iter().map(|_| Vec::new()).collect();
        for f in self.scan(&joined) {
            let i = starts.partition_point(|&s| s <= f.start) - 1;
            let (start, end) = (f.start - starts[i], f.end - starts[i]);
            if end <= texts[i].len() {
                out[i].push(Finding { rule: f.rule, start, end });
            }
        }
        out
    }

    pub fn scan(&self, text: &[u8]) -> Vec<Finding> {
        // Windows per rule, merged as they come (keyword hits arrive in order of position).
        let mut windows: Vec<Vec<(usize, usize)>> = vec![Vec::new(); self.rules.len()];
        for m in self.keywords.find_overlapping_iter(text) {
            for &r in &self.keyword_rules[m.pattern().as_usize()] {
                let w = match self.rules[r].window {
                    Window::Line => line_window(text, m.start(), m.end()),
                    Window::Block => (line_start(text, m.start()), (m.start() + BLOCK_REACH).min(text.len())),
                };
                let list = &mut windows[r];
                match list.last_mut() {
                    Some(last) if last.1 >= w.0 => last.1 = last.1.max(w.1),
                    _ => list.push(w),
                }
            }
        }
        if let Some(re) = &self.always_re {
            let mut lines: Vec<(usize, usize)> = Vec::new();
            for m in re.find_iter(text) {
                let w = line_window(text, m.start(), m.end());
                match lines.last_mut() {
                    Some(last) if last.1 >= w.0 => last.1 = last.1.max(w.1),
                    _ => lines.push(w),
                }
            }
            for &r in &self.always {
                windows[r].extend_from_slice(&lines);
            }
        }

        let mut found = Vec::new();
        for (r, list) in windows.iter().enumerate() {
            let rule = &self.rules[r];
            if list.is_empty() {
                continue;
            }
            let Some(regex) = rule.regex.regex() else { continue };
            for &(ws, we) in list {
                let hay = &text[ws..we];
                if rule.secret_group == 0 {
                    for m in regex.find_iter(hay) {
                        self.consider(text, r, ws + m.start(), ws + m.end(), &mut found);
                    }
                } else {
                    for caps in regex.captures_iter(hay) {
                        // Rules with alternative groups take whichever matched.
                        let group = caps.get(rule.secret_group).or_else(|| (1..caps.len()).find_map(|g| caps.get(g)));
                        if let Some(g) = group {
                            self.consider(text, r, ws + g.start(), ws + g.end(), &mut found);
                        }
                    }
                }
            }
        }
        resolve_overlaps(&self.rules, found)
    }

    fn consider(&self, text: &[u8], r: usize, start: usize, end: usize, out: &mut Vec<Finding>) {
        let rule = &self.rules[r];
        let secret = &text[start..end];
        if secret.is_empty() {
            return;
        }
        if let Some(min) = rule.entropy
            && entropy(secret) < min
        {
            return;
        }
        // The placeholder list is about secrets; personal data has its own validators (an email
        // at a domain that merely contains "example" is still someone's address).
        let placeholders: &[Regex] = if rule.category == Category::Secret { &self.placeholders } else { &[] };
        if rule.allow.iter().chain(placeholders).chain(&self.allow).any(|a| a.is_match(secret)) {
            return;
        }
        if !rule.stopwords.is_empty() {
            let lower = secret.to_ascii_lowercase();
            if rule.stopwords.iter().any(|s| contains(&lower, s.as_bytes())) {
                return;
            }
        }
        if let Some(v) = rule.validate
            && !validate(v, secret)
        {
            return;
        }
        let (ls, le) = (line_start(text, start), line_end(text, end));
        let line = &text[ls..le];
        if self.markers.is_match(line) || rule.allow_line.iter().any(|a| a.is_match(line)) {
            return;
        }
        out.push(Finding { rule: r, start, end });
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn line_start(text: &[u8], at: usize) -> usize {
    let floor = at.saturating_sub(LINE_REACH);
    text[floor..at].iter().rposition(|&b| b == b'\n').map_or(floor, |p| floor + p + 1)
}

fn line_end(text: &[u8], at: usize) -> usize {
    let ceil = (at + LINE_REACH).min(text.len());
    text[at..ceil].iter().position(|&b| b == b'\n').map_or(ceil, |p| at + p)
}

fn line_window(text: &[u8], start: usize, end: usize) -> (usize, usize) {
    (line_start(text, start), line_end(text, end))
}

/// Keeps, of overlapping findings, the one of the higher-priority rule, then the longer.
fn resolve_overlaps(rules: &[Rule], mut found: Vec<Finding>) -> Vec<Finding> {
    found.sort_by(|a, b| {
        rules[b.rule]
            .priority
            .cmp(&rules[a.rule].priority)
            .then((b.end - b.start).cmp(&(a.end - a.start)))
            .then(a.start.cmp(&b.start))
    });
    let mut kept: std::collections::BTreeMap<usize, Finding> = std::collections::BTreeMap::new();
    for f in found {
        let before = kept.range(..f.end).next_back().map(|(_, k)| *k);
        if before.is_some_and(|k| k.end > f.start) {
            continue;
        }
        kept.insert(f.start, f);
    }
    kept.into_values().collect()
}

/// Shannon entropy in bits per byte.
pub fn entropy(s: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &b in s {
        counts[b as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

pub(crate) fn validate(v: Validate, s: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(s) else { return false };
    match v {
        Validate::Luhn => luhn(s),
        Validate::Iban => iban(s),
        Validate::Ipv4Public => ipv4_public(s),
        Validate::Email => email(s),
        Validate::Phone => {
            let digits = s.chars().filter(char::is_ascii_digit).count();
            // Without separators only a full E.164 number (country code included) is taken.
            let grouped = s.contains([' ', '-', '.', '(']);
            let range = if grouped { 8..=15 } else { 11..=15 };
            range.contains(&digits)
                && s.chars().filter(char::is_ascii_digit).collect::<std::collections::HashSet<_>>().len() > 2
        }
        Validate::UsSsn => us_ssn(s),
        Validate::UkNino => uk_nino(s),
        Validate::DeTaxId => de_tax_id(s),
        Validate::FrNir => fr_nir(s),
        Validate::EsDni => es_dni(s),
        Validate::ItCodiceFiscale => it_codice_fiscale(s),
        Validate::Verhoeff => verhoeff(s),
        Validate::Ipv6Public => ipv6_public(s),
        Validate::Mac => mac_address(s),
    }
}

/// A US Social Security number outside the ranges never issued (area 000, 666, 900-999; group 00;
/// serial 0000).
pub fn us_ssn(s: &str) -> bool {
    let d: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if d.len() != 9 {
        return false;
    }
    let area = d[0] * 100 + d[1] * 10 + d[2];
    let group = d[3] * 10 + d[4];
    let serial = d[5] * 1000 + d[6] * 100 + d[7] * 10 + d[8];
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// A UK National Insurance number: two prefix letters HMRC allocates, six digits, a suffix A-D.
pub fn uk_nino(s: &str) -> bool {
    let c: String = s.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_uppercase();
    let b = c.as_bytes();
    if b.len() != 9 || !b[2..8].iter().all(u8::is_ascii_digit) || !(b'A'..=b'D').contains(&b[8]) {
        return false;
    }
    let (p, q) = (b[0], b[1]);
    let first_ok = p.is_ascii_uppercase() && !b"DFIQUV".contains(&p);
    let second_ok = q.is_ascii_uppercase() && !b"DFIOQUV".contains(&q);
    first_ok && second_ok && !["BG", "GB", "NK", "KN", "TN", "NT", "ZZ"].contains(&&c[..2])
}

/// A German tax identification number (Steuer-IdNr): eleven digits, the first not 0, in the first
/// ten one digit twice or three times and the rest at most once, and the ISO 7064 MOD 11,10
/// check digit last.
pub fn de_tax_id(s: &str) -> bool {
    let d: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if d.len() != 11 || d[0] == 0 {
        return false;
    }
    let mut counts = [0u8; 10];
    for &x in &d[..10] {
        counts[x as usize] += 1;
    }
    let repeated = counts.iter().filter(|&&n| n >= 2).count();
    if repeated != 1 || counts.iter().any(|&n| n > 3) {
        return false;
    }
    let mut product = 10;
    for &x in &d[..10] {
        let mut sum = (x + product) % 10;
        if sum == 0 {
            sum = 10;
        }
        product = (sum * 2) % 11;
    }
    let check = (11 - product) % 10;
    check == d[10]
}

/// A French social security number (NIR): sex, year, month, department (2A and 2B for Corsica,
/// counted as 19 and 18), commune, order, and a key of 97 minus the number modulo 97.
pub fn fr_nir(s: &str) -> bool {
    let c: String = s.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_uppercase();
    if c.len() != 15 || !(c.starts_with('1') || c.starts_with('2')) || !c.is_ascii() {
        return false;
    }
    let (body, key) = c.split_at(13);
    let month: u32 = body[3..5].parse().unwrap_or(0);
    if !((1..=12).contains(&month) || (20..=99).contains(&month)) {
        return false;
    }
    let digits = match &body[5..7] {
        "2A" => format!("{}19{}", &body[..5], &body[7..]),
        "2B" => format!("{}18{}", &body[..5], &body[7..]),
        _ => body.to_string(),
    };
    match (digits.parse::<u64>(), key.parse::<u64>()) {
        (Ok(n), Ok(k)) => k == 97 - n % 97,
        _ => false,
    }
}

const DNI_LETTERS: &[u8; 23] = b"TRWAGMYFPDXBNJZSQVHLCKE";

/// A Spanish DNI (eight digits and their letter) or NIE (X, Y or Z, seven digits, the letter).
pub fn es_dni(s: &str) -> bool {
    let c: String = s.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_uppercase();
    if c.len() != 9 {
        return false;
    }
    let (digits, letter) = c.split_at(8);
    let digits = match digits.as_bytes()[0] {
        b'X' => format!("0{}", &digits[1..]),
        b'Y' => format!("1{}", &digits[1..]),
        b'Z' => format!("2{}", &digits[1..]),
        _ => digits.to_string(),
    };
    match digits.parse::<usize>() {
        Ok(n) => letter.as_bytes()[0] == DNI_LETTERS[n % 23],
        Err(_) => false,
    }
}

/// An Italian codice fiscale: its sixteenth character is the check letter of the other fifteen.
pub fn it_codice_fiscale(s: &str) -> bool {
    const ODD: [u32; 36] = [
        1, 0, 5, 7, 9, 13, 15, 17, 19, 21, // 0-9
        1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23, // A-Z
    ];
    let c = s.to_ascii_uppercase();
    let b = c.as_bytes();
    if b.len() != 16 || !b.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let value = |ch: u8, odd: bool| -> u32 {
        let i = if ch.is_ascii_digit() { (ch - b'0') as usize } else { (ch - b'A') as usize + 10 };
        if odd {
            ODD[i]
        } else if ch.is_ascii_digit() {
            (ch - b'0') as u32
        } else {
            (ch - b'A') as u32
        }
    };
    // Positions are 1-based in the specification: the first character is odd.
    let sum: u32 = b[..15].iter().enumerate().map(|(i, &ch)| value(ch, i % 2 == 0)).sum();
    b[15] == b'A' + (sum % 26) as u8
}

/// The Verhoeff check digit (an Indian Aadhaar number's last digit).
pub fn verhoeff(s: &str) -> bool {
    const D: [[u8; 10]; 10] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
        [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
        [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
        [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
        [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
        [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
        [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
        [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
        [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
    ];
    const P: [[u8; 10]; 8] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
        [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
        [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
        [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
        [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
        [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
        [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
    ];
    let d: Vec<u8> = s.bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect();
    if d.len() != 12 || d.iter().all(|&x| x == d[0]) {
        return false;
    }
    let mut c = 0u8;
    for (i, &x) in d.iter().rev().enumerate() {
        c = D[c as usize][P[i % 8][x as usize] as usize];
    }
    c == 0
}

/// A public IPv6 address: global unicast (2000::/3) outside the documentation range.
pub fn ipv6_public(s: &str) -> bool {
    let Ok(a) = s.parse::<std::net::Ipv6Addr>() else { return false };
    let seg = a.segments();
    (seg[0] & 0xe000) == 0x2000 && !(seg[0] == 0x2001 && seg[1] == 0x0db8) && s.contains(':')
}

/// A MAC address: six octets with one separator throughout, not all zeros or all ones.
pub fn mac_address(s: &str) -> bool {
    let sep = if s.contains(':') { ':' } else { '-' };
    let octets: Vec<&str> = s.split(sep).collect();
    octets.len() == 6
        && octets.iter().all(|o| o.len() == 2 && o.chars().all(|c| c.is_ascii_hexdigit()))
        && !octets.iter().all(|o| *o == "00")
        && !octets.iter().all(|o| o.eq_ignore_ascii_case("ff"))
}

/// Whether `s` carries a valid `c` checksum.
pub fn checksum_valid(c: Checksum, s: &[u8]) -> bool {
    match c {
        Checksum::Crc32Base62 => s.len() == 40 && s.get(3) == Some(&b'_') && s[34..] == crc32_base62_tail(&s[4..34]),
        Checksum::PypiMacaroon => s.strip_prefix(b"pypi-").and_then(base64url_decode).is_some_and(|m| macaroon_v2(&m)),
    }
}

/// The six base62 digits GitHub and npm append to a token: the CRC32 of its body.
pub fn crc32_base62_tail(body: &[u8]) -> [u8; 6] {
    const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut value = crc32(body);
    let mut tail = [b'0'; 6];
    for digit in tail.iter_mut().rev() {
        *digit = BASE62[(value % 62) as usize];
        value /= 62;
    }
    tail
}

/// URL-safe base64 without padding (what PyPI tokens use), or `None` for anything else.
fn base64url_decode(s: &[u8]) -> Option<Vec<u8>> {
    let sextet = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32)
    };
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= sextet(c)? << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    Some(out)
}

/// Whether `m` is a whole macaroon in libmacaroons' v2 binary form: version 2, an optional
/// location, an identifier, the caveats (each an optional location, an identifier and an optional
/// verification id), and a 32-byte signature, with nothing left over. The signature itself is an
/// HMAC only PyPI can check; the structure is what a random or truncated body does not have.
fn macaroon_v2(m: &[u8]) -> bool {
    fn varint(m: &[u8], at: &mut usize) -> Option<usize> {
        let mut value = 0usize;
        for shift in (0..35).step_by(7) {
            let b = *m.get(*at)?;
            *at += 1;
            value |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    /// A field of `kind` at `at` (consumed, with its length), if one is there.
    fn field(m: &[u8], at: &mut usize, kind: u8) -> Option<usize> {
        if m.get(*at) != Some(&kind) {
            return None;
        }
        let mut pos = *at + 1;
        let len = varint(m, &mut pos)?;
        let end = pos.checked_add(len).filter(|&e| e <= m.len())?;
        *at = end;
        Some(len)
    }
    /// location?, identifier, extra?, end of section.
    fn section(m: &[u8], at: &mut usize, extra: u8) -> bool {
        field(m, at, 1);
        if field(m, at, 2).is_none() {
            return false;
        }
        if extra != 0 {
            field(m, at, extra);
        }
        let end = m.get(*at) == Some(&0);
        *at += 1;
        end
    }
    if m.first() != Some(&2) {
        return false;
    }
    let mut at = 1;
    if !section(m, &mut at, 0) {
        return false;
    }
    while m.get(at).is_some_and(|&b| b != 0) {
        if !section(m, &mut at, 4) {
            return false;
        }
    }
    at += 1; // the end of the caveats
    field(m, &mut at, 6) == Some(32) && at == m.len()
}

/// CRC-32 (IEEE 802.3, as zlib computes it).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

pub fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) || digits.iter().all(|&d| d == digits[0]) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| if i % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d })
        .sum();
    sum.is_multiple_of(10)
}

pub fn iban(s: &str) -> bool {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) || !compact.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()) {
        return false;
    }
    let rearranged = format!("{}{}", &compact[4..], &compact[..4]);
    let mut rem: u32 = 0;
    for c in rearranged.chars() {
        let v = if c.is_ascii_digit() { c as u32 - '0' as u32 } else { c as u32 - 'A' as u32 + 10 };
        rem = if v >= 10 { (rem * 100 + v) % 97 } else { (rem * 10 + v) % 97 };
    }
    rem == 1
}

pub fn ipv4_public(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 4 || parts.iter().any(|p| p.is_empty() || p.len() > 3 || (p.len() > 1 && p.starts_with('0'))) {
        return false;
    }
    let Ok(o) = parts.iter().map(|p| p.parse::<u8>()).collect::<Result<Vec<u8>, _>>() else { return false };
    let ip = std::net::Ipv4Addr::new(o[0], o[1], o[2], o[3]);
    let reserved = o[0] == 0
        || o[0] >= 224
        || ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || (o[0] == 100 && (64..128).contains(&o[1]))
        || (o[0] == 192 && o[1] == 0 && (o[2] == 0 || o[2] == 2))
        || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
        || (o[0] == 198 && o[1] == 51 && o[2] == 100)
        || (o[0] == 203 && o[1] == 0 && o[2] == 113);
    !reserved
}

pub fn email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else { return false };
    let domain = domain.to_ascii_lowercase();
    let tld = domain.rsplit('.').next().unwrap_or("");
    const RESERVED: [&str; 8] =
        ["example.com", "example.org", "example.net", "localhost", "test", "invalid", "example", "local"];
    const FILE_TLDS: [&str; 16] =
        ["png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "css", "js", "ts", "json", "html", "md", "txt", "py", "rs"];
    let reserved = RESERVED.iter().any(|r| domain == *r || domain.ends_with(&format!(".{r}")));
    !local.is_empty()
        && !local.starts_with('.')
        && !reserved
        && !FILE_TLDS.contains(&tld)
        && !local.eq_ignore_ascii_case("git")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scanning a request's strings together finds in each what scanning it alone finds.
    #[test]
    fn scanning_many_texts_at_once_finds_what_each_scan_alone_finds() {
        let scanner = Scanner::new(crate::rules::built_in());
        let dir = crate::tests::corpus_dir().join("secrets");
        let mut texts: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .flat_map(|file| file.lines().map(str::to_string).collect::<Vec<_>>())
            .collect();
        texts.extend(["mail raj.patel54@acme.io".to_string(), String::new(), "glpat-riGp_58WAm-dX3a5IDnO".to_string()]);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let together = scanner.scan_many(&refs);
        let mut found = 0;
        for (text, many) in refs.iter().zip(&together) {
            let alone: Vec<(usize, usize, usize)> =
                scanner.scan(text.as_bytes()).iter().map(|f| (f.rule, f.start, f.end)).collect();
            let many: Vec<(usize, usize, usize)> = many.iter().map(|f| (f.rule, f.start, f.end)).collect();
            assert_eq!(alone, many, "{text}");
            found += alone.len();
        }
        assert!(found > 50, "the corpus has findings: {found}");
    }

    /// Personal data at the end of a sentence, before a comma or a bracket, or two of a kind one
    /// space apart: every one is found (a boundary that consumed the character after a match hid
    /// the next one, and a full stop after a number hid the number).
    #[test]
    fn personal_data_is_found_next_to_punctuation_and_next_to_each_other() {
        let scanner = Scanner::new(crate::rules::built_in());
        let kinds = |text: &str| -> Vec<String> {
            scanner.scan(text.as_bytes()).iter().map(|f| scanner.rule(f.rule).kind.clone()).collect()
        };
        for (text, kind, n) in [
            ("my card is 4567226730823216.", "credit_card", 1),
            ("cards: 4567226730823216 4111111111111111", "credit_card", 2),
            ("cards 4567 2267 3082 3216, 4111-1111-1111-1111; done", "credit_card", 2),
            ("(4567226730823216)", "credit_card", 1),
            ("call +1 415 555 0100.", "phone", 1),
            ("call +1 415 555 0100 or +44 20 7946 0958!", "phone", 2),
            ("the server is 8.8.8.8.", "ipv4_public", 1),
            ("resolvers 8.8.8.8 1.1.1.1", "ipv4_public", 2),
            ("write to raj.patel54@acme.io.", "email", 1),
        ] {
            let found = kinds(text);
            assert_eq!(found.iter().filter(|k| *k == kind).count(), n, "{text}: {found:?}");
        }
    }

    #[test]
    fn validators_accept_the_real_shapes_and_refuse_lookalikes() {
        assert!(luhn("4567226730823216"));
        assert!(!luhn("4567226730823217"));
        assert!(!luhn("0000000000000000"));
        assert!(iban("GB82 WEST 1234 5698 7654 32"));
        assert!(!iban("GB82 WEST 1234 5698 7654 33"));
        assert!(ipv4_public("81.92.92.254"));
        for private in
            ["10.0.0.1", "192.168.1.1", "127.0.0.1", "172.16.0.9", "203.0.113.7", "1.2.3", "256.1.1.1", "01.2.3.4"]
        {
            assert!(!ipv4_public(private), "{private}");
        }
        assert!(email("raj.patel54@acme.io"));
        for no in ["ci@example.com", "icon@2x.png", "git@gitlab.com", "a@b.localhost"] {
            assert!(!email(no), "{no}");
        }
    }

    #[test]
    fn formats_with_a_shape_are_found_without_their_vendor_named_and_example_is_only_a_reserved_domain() {
        let s = Scanner::new(crate::rules::built_in());
        let kinds = |text: &str| -> Vec<String> {
            s.scan(text.as_bytes()).iter().map(|f| s.rule(f.rule).kind.clone()).collect()
        };
        // Nothing on these lines names the vendor.
        assert_eq!(kinds("key = SK8f3a0c2e4b6d8f0a1c3e5b7d9f1a3c5e"), ["twilio_api_key"]);
        assert_eq!(kinds("sid: AC0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"), ["twilio_account_sid"]);
        assert_eq!(kinds("auth glsa_Xq7Lr2Vn9Kd4Tg1Wz6Bp3Hc8Ys5Jm0Fu_a1b2c3d4"), ["grafana_service_account_token"]);
        // A real domain that contains the word is someone's address; the reserved ones are not.
        assert_eq!(kinds("mail jo.kim@sampleexample.io"), ["email"]);
        assert_eq!(kinds("mail jo.kim@counterexample.de today"), ["email"]);
        assert!(kinds("mail jo.kim@example.com or ci@docs.example").is_empty());
        // The built-in placeholder list is for secrets; an allow pattern from the config is for all.
        let allowed =
            Scanner::new(crate::rules::built_in()).with_allow(vec![crate::rules::compile(r"@acme\.io$").unwrap()]);
        assert!(allowed.scan(b"mail raj.patel54@acme.io").is_empty());
    }

    #[test]
    fn national_identifiers_are_checked_against_their_published_examples() {
        // Valid: published or hand-checked examples; invalid: the same with one digit or letter off.
        assert!(us_ssn("078-05-1120") && us_ssn("219-09-9999"));
        for no in ["000-12-3456", "666-12-3456", "912-12-3456", "123-00-4567", "123-45-0000"] {
            assert!(!us_ssn(no), "{no}");
        }
        assert!(uk_nino("AB 12 34 56 C") && uk_nino("JG103759A"));
        for no in ["QQ123456C", "BG123456A", "AB123456E", "DA123456A", "AO123456A"] {
            assert!(!uk_nino(no), "{no}");
        }
        assert!(de_tax_id("86095742719") && de_tax_id("47036892816"));
        assert!(!de_tax_id("86095742718") && !de_tax_id("06095742719") && !de_tax_id("12345678903"));
        assert!(fr_nir("1 84 12 76 451 089 46") && fr_nir("184127645108946"));
        assert!(!fr_nir("1 84 12 76 451 089 47") && !fr_nir("3 84 12 76 451 089 46"));
        assert!(es_dni("12345678Z") && es_dni("X1234567L") && es_dni("Y-7654321-G"));
        assert!(!es_dni("12345678A") && !es_dni("X1234567M"));
        assert!(it_codice_fiscale("RSSMRA85T10A562S"));
        assert!(!it_codice_fiscale("RSSMRA85T10A562T"));
        assert!(verhoeff("4918 2736 4553"));
        assert!(!verhoeff("4918 2736 4554") && !verhoeff("2222 2222 2222"));
        assert!(ipv6_public("2a02:1205:34d2:9a50::1") && ipv6_public("2001:4860:4860::8888"));
        for no in ["::1", "fe80::1", "fd00::1", "2001:db8::1", "ff02::1", "1:2:3"] {
            assert!(!ipv6_public(no), "{no}");
        }
        assert!(mac_address("3c:22:fb:8a:10:4e") && mac_address("3C-22-FB-8A-10-4E"));
        assert!(
            !mac_address("00:00:00:00:00:00") && !mac_address("ff:ff:ff:ff:ff:ff") && !mac_address("3c:22-fb:8a:10:4e")
        );
    }

    #[test]
    fn github_and_npm_checksums_tell_real_tokens_from_made_up_ones() {
        // Made with zlib's CRC32 apart from this code; the corpus's made-up tokens fail it.
        for real in ["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", "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"] {
            assert!(checksum_valid(Checksum::Crc32Base62, real.as_bytes()), "{real}");
        }
        for fake in [
            "ghp_Ky9Pf34qY6Nb3wWD25RQ4F5ZR3qa7y3gm1IM",
            "ghp_JN6U6PrPod6eWGP4xkGXY4nttSt2JxkSSVDM",
            "ghp_Ky9Pf34qY6Nb3wWD25RQ4F5ZR3qa7y3gm1I",
        ] {
            assert!(!checksum_valid(Checksum::Crc32Base62, fake.as_bytes()), "{fake}");
        }
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926, "the standard check value");
    }

    #[test]
    fn a_pypi_token_must_be_a_whole_macaroon() {
        // Assembled byte by byte and encoded with Python's base64 apart from this code.
        let real = "pypi-AgEIcHlwaS5vcmcCJDBmM2MyYTRlLTViMWQtNGM4ZS05YTdmLTFlMmQzYzRiNWE2OQACJXsidmVyc2lvbiI6IDEsICJwZXJtaXNzaW9ucyI6ICJ1c2VyIn0AAAYgZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1-f4CBgoM";
        assert!(checksum_valid(Checksum::PypiMacaroon, real.as_bytes()));
        let truncated = &real[..real.len() - 4];
        let random_body = "pypi-AgEIcHlwaS5vcmcCJDBmM2MyYTRlLTViMWQtNGM4ZS05YTdmLTFlMmQzYzRiNWE2OQACJXsidmVyc2lvbiI6IDEsICJwZXJtaXNzaW9ucyI6ICJ1c2VyIn0AAAYgZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1-f4CBgoMAAAA";
        let not_base64 = "pypi-AgEIcHlwaS5vcmcC.DBm";
        for fake in [
            truncated,
            random_body,
            not_base64,
            "pypi-AgEIcHlwaS5vcmcxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        ] {
            assert!(!checksum_valid(Checksum::PypiMacaroon, fake.as_bytes()), "{fake}");
        }
    }

    #[test]
    fn a_card_number_is_found_whatever_punctuation_stands_around_it() {
        let s = Scanner::new(crate::rules::built_in());
        let card = "4111 1111 1111 1111";
        for (before, after) in [
            ("(", ")"),
            ("[", "]."),
            ("card=", ";"),
            ("\"", "\","),
            ("Nr.", " ok"),
            ("no-", "!"),
            ("#", "?"),
            ("'", "'"),
            ("", ""),
        ] {
            let text = format!("{before}{card}{after}");
            let found: Vec<&str> = s
                .scan(text.as_bytes())
                .iter()
                .filter(|f| s.rule(f.rule).kind == "credit_card")
                .map(|f| &text[f.start..f.end])
                .collect();
            assert_eq!(found, [card], "{text:?}");
        }
        // The tail of a decimal or a version is not a card.
        for not in ["3.4111111111111111", "v2-4111111111111111", "x4111111111111111"] {
            assert!(s.scan(not.as_bytes()).iter().all(|f| s.rule(f.rule).kind != "credit_card"), "{not}");
        }
    }

    #[test]
    fn entropy_tells_random_from_repetitive() {
        assert!(entropy(b"xxxxxxxxxxxxxxxx") < 0.1);
        assert!(entropy(b"riGp_58WAm-dX3a5IDnO") > 3.5);
    }

    #[test]
    fn keywords_limit_where_rules_run_and_overlaps_go_to_the_specific_rule() {
        let s = Scanner::new(super::super::rules::built_in());
        let text = b"line one\npassword: \"AIzaoTbGgNWbPRNgAkQpiqL0RDdxUMLW17jz0Df\"\nglpat-xxxxxxxxxxxxxxxxxxxx\n";
        let found = s.scan(text);
        assert_eq!(found.len(), 1, "{:?}", found.iter().map(|f| &s.rule(f.rule).id).collect::<Vec<_>>());
        assert_eq!(s.rule(found[0].rule).kind, "google_api_key");
        assert_eq!(&text[found[0].start..found[0].end], b"AIzaoTbGgNWbPRNgAkQpiqL0RDdxUMLW17jz0Df");
    }

    #[test]
    fn inline_markers_allow_a_line() {
        let s = Scanner::new(super::super::rules::built_in());
        assert_eq!(s.scan(b"token = 'ghp_JN6U6PrPod6eWGP4xkGXY4nttSt2JxkSSVDM'").len(), 1);
        assert!(s.scan(b"token = 'ghp_JN6U6PrPod6eWGP4xkGXY4nttSt2JxkSSVDM' # gitleaks:allow").is_empty());
        assert!(s.scan(b"token = 'ghp_JN6U6PrPod6eWGP4xkGXY4nttSt2JxkSSVDM' // tollgate:allow").is_empty());
    }
}
