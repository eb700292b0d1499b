//! Fresh positives for every rule that has a `sample`: random bodies in the rule's alphabet and
//! length, drawn from a seed, placed in the contexts secrets turn up in (code, JSON, YAML, .env and
//! shell, shell history, logs, stack traces, Markdown, URLs). The tests require each to be found as its rule's
//! kind, exactly where it is; [`corpus`] writes them as a labelled corpus in `shared/corpus`'s
//! layout, so that other scanners can be measured on data no rule was written against.

use crate::rules::{Checksum, Rule};
use crate::scan;

/// splitmix64: small, seeded, good enough to draw characters.
pub struct Rng(pub u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick(&mut self, alphabet: &[u8]) -> char {
        alphabet[(self.next() % alphabet.len() as u64) as usize] as char
    }
}

const LOWER_HEX: &[u8] = b"0123456789abcdef";

fn alphabet(class: &str) -> Option<&'static [u8]> {
    Some(match class {
        "62" => b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        "u" => b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-",
        "b" => b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz+/",
        "h" => LOWER_HEX,
        "H" => b"0123456789ABCDEF",
        "a" => b"0123456789abcdefghijklmnopqrstuvwxyz",
        "A" => b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "l" => b"abcdefghijklmnopqrstuvwxyz",
        "U" => b"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "d" => b"0123456789",
        "L" => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        "b32" => b"abcdefghijklmnopqrstuvwxyz234567",
        "B32" => b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567",
        "bech32" => b"QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L",
        _ => return None,
    })
}

/// A sample of `rule` drawn fresh: a vendor checksum is computed into it, and for a rule with
/// issued ranges it draws until the rule's validator accepts one (each validator and checksum is
/// checked against published examples apart).
pub fn draw(rule: &Rule, rng: &mut Rng) -> (String, std::ops::Range<usize>) {
    let template = rule.sample.as_deref().expect("a sampled rule");
    for _ in 0..100_000 {
        let (mut text, secret) = generate(template, rng);
        if rule.checksum == Some(Checksum::Crc32Base62) && secret.len() == 40 {
            let tail = scan::crc32_base62_tail(&text.as_bytes()[secret.start + 4..secret.start + 34]);
            text.replace_range(secret.start + 34..secret.end, std::str::from_utf8(&tail).expect("base62"));
        }
        let value = text[secret.clone()].as_bytes();
        if rule.validate.is_none_or(|v| scan::validate(v, value))
            && rule.checksum.is_none_or(|c| scan::checksum_valid(c, value))
        {
            return (text, secret);
        }
    }
    panic!("{}: no draw of {template:?} passes its validator", rule.id)
}

/// A sample drawn from `template`, and where its secret is in it.
pub fn generate(template: &str, rng: &mut Rng) -> (String, std::ops::Range<usize>) {
    let mut out = String::new();
    let (mut start, mut end) = (None, None);
    let mut rest = template;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("[[") {
            start = Some(out.len());
            rest = r;
        } else if let Some(r) = rest.strip_prefix("]]") {
            end = Some(out.len());
            rest = r;
        } else if let Some(r) = rest.strip_prefix("{uuid}") {
            for (i, n) in [8, 4, 4, 4, 12].into_iter().enumerate() {
                if i > 0 {
                    out.push('-');
                }
                out.extend((0..n).map(|_| rng.pick(LOWER_HEX)));
            }
            rest = r;
        } else if let Some(r) = rest.strip_prefix("{macaroon:")
            && let Some(close) = r.find('}')
        {
            out.push_str(&macaroon(&r[..close], rng));
            rest = &r[close + 1..];
        } else if rest.starts_with('{')
            && let Some(close) = rest.find('}')
            && let Some((class, n)) = rest[1..close].split_once(':')
            && let (Some(chars), Ok(n)) = (alphabet(class), n.parse::<usize>())
        {
            out.extend((0..n).map(|_| rng.pick(chars)));
            rest = &rest[close + 1..];
        } else {
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    let range = match (start, end) {
        (Some(s), Some(e)) => s..e,
        (None, None) => 0..out.len(),
        _ => panic!("unbalanced [[ ]] in sample {template:?}"),
    };
    (out, range)
}

/// A macaroon for `location` in the v2 binary form, URL-safe base64 without padding: a UUID as its
/// identifier, one caveat, a random signature (the shape of a PyPI token's body).
fn macaroon(location: &str, rng: &mut Rng) -> String {
    fn field(out: &mut Vec<u8>, kind: u8, data: &[u8]) {
        let len = u8::try_from(data.len()).expect("short fields");
        assert!(len < 0x80, "one-byte lengths");
        out.extend_from_slice(&[kind, len]);
        out.extend_from_slice(data);
    }
    let identifier: String =
        (0..36).map(|i| if [8, 13, 18, 23].contains(&i) { '-' } else { rng.pick(LOWER_HEX) }).collect();
    let signature: Vec<u8> = (0..32).map(|_| rng.next() as u8).collect();
    let mut m = vec![2];
    field(&mut m, 1, location.as_bytes());
    field(&mut m, 2, identifier.as_bytes());
    m.push(0);
    field(&mut m, 2, br#"{"version": 1, "permissions": "user"}"#);
    m.extend_from_slice(&[0, 0]);
    field(&mut m, 6, &signature);
    const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in m.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        out.extend((0..=chunk.len()).map(|i| URL[(n >> (18 - 6 * i)) as usize & 63] as char));
    }
    out
}

/// The places a sample is put: (before, after). A whole-sample secret goes in each; a sample that
/// carries its own context goes in as lines of a larger file.
pub fn contexts(sample: &str, carries_context: bool) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vec![
        ("".into(), "".into()),
        ("# settings\n".into(), "\nretries = 3\n".into()),
        ("fn main() {\n    // deploy\n}\n\n".into(), "\n\nlog.info(\"done\")\n".into()),
    ];
    if !carries_context {
        out.extend(
            [
                ("token = \"", "\"\n"),
                ("{\"credentials\": {\"value\": \"", "\"}}"),
                ("deploy:\n  value: ", "\n  region: eu-west-1\n"),
                ("export CI_VALUE=", "\n"),
                ("2026-11-30T10:00:00Z WARN retrying with ", " after 401\n"),
                ("    at Client.connect (client.js:42:7) credential='", "'\n"),
                ("Use `", "` for the staging account.\n"),
                ("  503  curl -s -H 'X-Token: ", "' https://api.acme.io/v1/items\n"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string())),
        );
        if !sample.contains("://") && !sample.contains('\n') {
            out.push(("see https://hooks.acme.io/cb?v=1&value=".into(), "&retry=1 for details\n".into()));
        }
    }
    out
}

pub fn sampled(rules: &[Rule]) -> Vec<&Rule> {
    rules.iter().filter(|r| r.sample.is_some()).collect()
}

/// The same shape with a placeholder body: letters and digits become `x` (`ghp_xxxx...`,
/// `xxxxxxxx-xxxx-...`).
pub fn placeholder(secret: &str) -> String {
    secret.chars().map(|c| if c.is_ascii_alphanumeric() { 'x' } else { c }).collect()
}

/// One file of a generated corpus: its text and the labelled values in it.
pub struct Case {
    pub file: String,
    pub text: String,
    /// (kind, value) of each secret or personal value, as `labels.jsonl` lists them.
    pub labels: Vec<(String, String)>,
}

/// A labelled corpus: for every sampled rule, `per_rule` fresh instances, each in one of the
/// contexts in turn (`pos_*` files), and as many files with the same shapes holding placeholder
/// bodies (`neg_*`, where any finding is a false alarm).
pub fn corpus(rules: &[Rule], seed: u64, per_rule: usize) -> Vec<Case> {
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    for rule in sampled(rules) {
        let template = rule.sample.as_deref().expect("a sampled rule");
        for i in 0..per_rule {
            let (sample, secret) = draw(rule, &mut rng);
            let places = contexts(&sample, template.contains("[["));
            let (before, after) = &places[(i * 3 + 1) % places.len()];
            let n = out.len();
            out.push(Case {
                file: format!("pos_{n:05}_{}.txt", rule.kind),
                text: format!("{before}{sample}{after}"),
                labels: vec![(rule.kind.clone(), sample[secret.clone()].to_string())],
            });
            let placeholder = placeholder(&sample[secret.clone()]);
            out.push(Case {
                file: format!("neg_{:05}_{}.txt", n + 1, rule.kind),
                text: format!("{before}{}{placeholder}{}{after}", &sample[..secret.start], &sample[secret.end..]),
                labels: Vec::new(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules;
    use crate::scan::Scanner;

    fn seed() -> u64 {
        std::env::var("TOLLGATE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x7011_6A7E)
    }

    #[test]
    fn every_rule_with_a_sample_finds_fresh_instances_in_every_context() {
        let scanner = Scanner::new(rules::built_in());
        let seed = seed();
        let mut rng = Rng(seed);
        let mut failures = Vec::new();
        let mut cases = 0;
        for rule in sampled(scanner.rules()) {
            let template = rule.sample.as_deref().expect("sampled");
            for _ in 0..4 {
                let (sample, secret) = draw(rule, &mut rng);
                for (before, after) in contexts(&sample, template.contains("[[")) {
                    cases += 1;
                    let text = format!("{before}{sample}{after}");
                    let want = before.len() + secret.start..before.len() + secret.end;
                    let found = scanner.scan(text.as_bytes());
                    let hit = found.iter().any(|f| (f.start..f.end) == want && scanner.rule(f.rule).kind == rule.kind);
                    if !hit {
                        let got: Vec<String> = found
                            .iter()
                            .map(|f| format!("{} {:?}", scanner.rule(f.rule).id, &text[f.start..f.end]))
                            .collect();
                        failures.push(format!("{}: {:?} in {text:?}: found {got:?}", rule.id, &text[want]));
                    }
                }
            }
        }
        assert!(cases > 5000, "{cases} cases");
        assert!(
            failures.is_empty(),
            "seed {seed}: {} of {cases} cases not found as their kind:\n{}",
            failures.len(),
            failures.iter().take(40).cloned().collect::<Vec<_>>().join("\n")
        );
    }

    #[test]
    fn placeholder_bodies_in_the_same_shapes_are_not_found() {
        let scanner = Scanner::new(rules::built_in());
        let mut rng = Rng(seed());
        let mut wrong = Vec::new();
        for rule in sampled(scanner.rules()) {
            let (sample, secret) = draw(rule, &mut rng);
            let text =
                format!("{}{}{}", &sample[..secret.start], placeholder(&sample[secret.clone()]), &sample[secret.end..]);
            for f in scanner.scan(text.as_bytes()) {
                let hit = scanner.rule(f.rule);
                if hit.category == rules::Category::Secret {
                    wrong.push(format!("{}: {} found {:?}", rule.id, hit.id, &text[f.start..f.end]));
                }
            }
        }
        assert!(wrong.is_empty(), "placeholders found:\n{}", wrong.join("\n"));
    }

    #[test]
    fn samples_are_drawn_fresh_and_the_secret_is_marked() {
        let mut rng = Rng(1);
        let (a, ra) = generate("ghp_{62:36}", &mut rng);
        let (b, _) = generate("ghp_{62:36}", &mut rng);
        assert_eq!((a.len(), ra), (40, 0..40));
        assert_ne!(a, b, "each draw is new");
        let (c, rc) = generate("KEY = \"[[{uuid}]]\"", &mut rng);
        assert_eq!(&c[..7], "KEY = \"");
        assert_eq!(rc, 7..43);
        assert_eq!(c.as_bytes()[rc.start + 8], b'-');
    }

    #[test]
    fn every_built_in_rule_has_a_sample() {
        // So that every kind is tested on fresh instances, not only on the labelled corpus's.
        let rules = rules::built_in();
        let without: Vec<&str> = rules.iter().filter(|r| r.sample.is_none()).map(|r| r.id.as_str()).collect();
        assert!(without.is_empty(), "rules without a sample: {without:?}");
        assert!(rules.len() >= 300, "{} rules", rules.len());
    }

    #[test]
    fn a_generated_corpus_is_labelled_and_found_whole() {
        let rules = rules::built_in();
        let scanner = Scanner::new(rules.clone());
        let cases = corpus(&rules, 42, 2);
        assert!(cases.len() > 900, "{} files", cases.len());
        for case in &cases {
            let found = scanner.scan(case.text.as_bytes());
            for (kind, value) in &case.labels {
                let at = case.text.find(value.as_str()).expect("the value is in its file");
                assert!(
                    found.iter().any(|f| f.start <= at && f.end >= at + value.len()),
                    "{}: {kind} {value:?} not found",
                    case.file
                );
            }
            if case.labels.is_empty() {
                let secrets = found.iter().filter(|f| scanner.rule(f.rule).category == rules::Category::Secret);
                assert_eq!(secrets.count(), 0, "{}: a placeholder found in {:?}", case.file, case.text);
            }
        }
        assert_eq!(corpus(&rules, 42, 2)[0].text, cases[0].text, "the same seed gives the same corpus");
    }
}
