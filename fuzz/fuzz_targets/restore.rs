//! Any text and any split of it: streaming restoration gives exactly what restoring the whole
//! text gives.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_model::{ChatRequest, Message, Role};
use tollgate_redact::{Redactor, Scanner, rules};

fuzz_target!(|input: (Vec<u8>, String)| {
    let (cuts, text) = input;
    // A vault with real entries: mask a text with two secrets.
    static SEED: &str = "token glpat-riGp_58WAm-dX3a5IDnO mail raj.patel54@acme.io";
    static VAULT: std::sync::OnceLock<tollgate_redact::Vault> = std::sync::OnceLock::new();
    let vault = VAULT.get_or_init(|| {
        let redactor = Redactor::new(std::sync::Arc::new(Scanner::new(rules::built_in())));
        let mut req = ChatRequest { messages: vec![Message::text(Role::User, SEED)], ..Default::default() };
        redactor.mask(&mut req)
    });
    let whole = tollgate_redact::restore(vault, &text, false);
    let mut points: Vec<usize> = cuts.iter().map(|c| *c as usize * text.len() / 255).filter(|p| text.is_char_boundary(*p)).collect();
    points.sort_unstable();
    points.dedup();
    let out = tollgate_redact::stream::restore_chunked(vault, &text, &points, false);
    assert_eq!(out, whole);
});
