//! Checks a pattern's syntax and counts its capture groups (group 0 included), without compiling
//! it: for `Pattern::new` and for `build.rs`, which includes this file.

/// The error as text: the parser's own error type is large.
pub fn count(pattern: &str) -> Result<usize, String> {
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
