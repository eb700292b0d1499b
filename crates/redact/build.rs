//! Turns the built-in rules (`src/rules.toml`, the file people read and edit) into JSON with each
//! pattern's capture count, so that a start parses JSON (a tenth of the time TOML takes) and does
//! not parse 350 regexes only to count their groups. The rules are still checked: a pattern that
//! does not parse fails the build here, and the unit tests compile every one.

use std::path::PathBuf;

fn captures(pattern: &str) -> Result<usize, String> {
    let parse = |unicode: bool| {
        regex_syntax::ParserBuilder::new()
            .unicode(unicode)
            .utf8(false)
            .build()
            .parse(pattern)
            .map_err(|e| e.to_string())
    };
    let hir = parse(false).or_else(|_| parse(true))?;
    Ok(hir.properties().explicit_captures_len() + 1)
}

fn main() {
    println!("cargo:rerun-if-changed=src/rules.toml");
    let text = std::fs::read_to_string("src/rules.toml").expect("read src/rules.toml");
    let file: toml::Table = toml::from_str(&text).expect("src/rules.toml is TOML");
    let rules = file.get("rule").and_then(|r| r.as_array()).expect("src/rules.toml has [[rule]] tables");
    let mut out = Vec::with_capacity(rules.len());
    for rule in rules {
        let regex = rule.get("regex").and_then(|r| r.as_str()).expect("every rule has a regex");
        let n = captures(regex).unwrap_or_else(|e| {
            panic!("rule {:?}: bad regex: {e}", rule.get("id").and_then(|i| i.as_str()).unwrap_or("?"))
        });
        out.push((n, rule));
    }
    let json = serde_json::to_string(&out).expect("rules serialize as JSON");
    let dest = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("rules.json");
    std::fs::write(dest, json).expect("write rules.json");
}
