//! Turns the built-in rules (`src/rules.toml`, the file people read and edit) into JSON with each
//! pattern's capture count, so that a start parses JSON (a tenth of the time TOML takes) and does
//! not parse 350 regexes only to count their groups. The rules are still checked: a pattern that
//! does not parse fails the build here, and the unit tests compile every one.

use std::path::PathBuf;

#[path = "src/captures.rs"]
mod captures;

fn main() {
    println!("cargo:rerun-if-changed=src/rules.toml");
    println!("cargo:rerun-if-changed=src/captures.rs");
    let text = std::fs::read_to_string("src/rules.toml").expect("read src/rules.toml");
    let file: toml::Table = toml::from_str(&text).expect("src/rules.toml is TOML");
    let rules = file.get("rule").and_then(|r| r.as_array()).expect("src/rules.toml has [[rule]] tables");
    let mut out = Vec::with_capacity(rules.len());
    for rule in rules {
        let regex = rule.get("regex").and_then(|r| r.as_str()).expect("every rule has a regex");
        let n = captures::count(regex).unwrap_or_else(|e| {
            panic!("rule {:?}: bad regex: {e}", rule.get("id").and_then(|i| i.as_str()).unwrap_or("?"))
        });
        out.push((n, rule));
    }
    let json = serde_json::to_string(&out).expect("rules serialize as JSON");
    let dest = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("rules.json");
    std::fs::write(dest, json).expect("write rules.json");
}
