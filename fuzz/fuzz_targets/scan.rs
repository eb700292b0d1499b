//! Any bytes: the scanner neither panics nor reports findings out of bounds or overlapping, and
//! masking a text leaves none of the findings' values in it.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use tollgate_model::{ChatRequest, Message, Role};
use tollgate_redact::{Redactor, Scanner, rules};

fn redactor() -> &'static Redactor {
    static R: OnceLock<Redactor> = OnceLock::new();
    R.get_or_init(|| Redactor::new(Arc::new(Scanner::new(rules::built_in()))))
}

fuzz_target!(|data: &[u8]| {
    let r = redactor();
    let found = r.scanner().scan(data);
    let mut last_end = 0;
    for f in &found {
        assert!(f.start < f.end && f.end <= data.len(), "finding out of bounds");
        assert!(f.start >= last_end, "findings overlap or are out of order");
        last_end = f.end;
    }
    let text = String::from_utf8_lossy(data).into_owned();
    let values: Vec<String> = r.scanner().scan(text.as_bytes()).iter().map(|f| text[f.start..f.end].to_string()).collect();
    let mut req = ChatRequest { messages: vec![Message::text(Role::User, text.clone())], ..Default::default() };
    let vault = r.mask(&mut req);
    let masked = req.messages[0].joined_text();
    // Every found value is gone, unless it is part of a placeholder name or of another value's
    // placeholder-sized neighbourhood (a value inside a longer found value is masked with it).
    for v in values.iter().filter(|v| !v.starts_with("TOLLGATE_")) {
        assert!(!masked.contains(v.as_str()) || masked.contains(&format!("TOLLGATE_{v}")) || "TOLLGATE_".contains(v.as_str()), "a found value survived masking");
    }
    let _ = tollgate_redact::restore(&vault, &masked, false);
});
