//! Post-processing of a model's completion before it becomes an item: cut where the enclosing
//! block ends, keep brackets balanced, drop what repeats the text after the cursor, trim trailing
//! whitespace. An empty result gives no item.

use crate::syntax::Lang;

fn closer(c: char) -> Option<char> {
    match c {
        '(' => Some(')'),
        '[' => Some(']'),
        '{' => Some('}'),
        _ => None,
    }
}

/// Cleans `raw`, inserted at a cursor with `line_before` on its line and `suffix` after it.
pub fn process(raw: &str, line_before: &str, suffix: &str, lang: Option<Lang>) -> Option<String> {
    let mut text = raw.replace("\r\n", "\n");
    // A model answering in a fence: keep what is inside.
    if let Some(inner) = text.trim().strip_prefix("```") {
        let inner = inner.split_once('\n').map_or("", |(_, rest)| rest);
        text = inner.rsplit_once("```").map_or(inner, |(body, _)| body).to_string();
    }
    text = cut_at_block_end(&text, lang, line_before);
    text = drop_suffix_overlap(&text, suffix);
    let mut lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let text = lines.join("\n");
    if text.trim().is_empty() { None } else { Some(text) }
}

/// Stops before a bracket that closes a block opened before the cursor (the suffix has it), and
/// at the last line end where the brackets the completion opened are all closed; for Python,
/// before a line indented less than the cursor's block.
fn cut_at_block_end(text: &str, lang: Option<Lang>, line_before: &str) -> String {
    let mut stack: Vec<char> = Vec::new();
    let mut last_balanced_line_end = None;
    let mut in_str: Option<char> = None;
    let mut prev = '\0';
    for (i, c) in text.char_indices() {
        match in_str {
            Some(q) => {
                if c == q && prev != '\\' {
                    in_str = None;
                }
            }
            None => match c {
                '"' | '\'' | '`' => in_str = Some(c),
                '(' | '[' | '{' => stack.push(closer(c).unwrap()),
                ')' | ']' | '}' => {
                    if stack.last() == Some(&c) {
                        stack.pop();
                    } else {
                        // Closes something opened before the cursor: the block ends here.
                        return text[..i].trim_end_matches([' ', '\t']).to_string();
                    }
                }
                '\n' if stack.is_empty() => last_balanced_line_end = Some(i),
                _ => {}
            },
        }
        if c == '\n' {
            in_str = None; // strings do not span lines in the languages this cares about
        }
        prev = c;
    }
    let mut out = if stack.is_empty() {
        text.to_string()
    } else {
        match last_balanced_line_end {
            Some(i) => text[..i].to_string(),
            None => text.to_string(), // one unfinished line: the user goes on typing
        }
    };
    if lang == Some(Lang::Python) {
        let base = line_before.len() - line_before.trim_start().len();
        let mut kept = Vec::new();
        for (n, line) in out.split('\n').enumerate() {
            let indent = line.len() - line.trim_start().len();
            if n > 0 && !line.trim().is_empty() && indent < base {
                break;
            }
            kept.push(line);
        }
        out = kept.join("\n");
    }
    out
}

/// Removes the end of `text` that the suffix already holds (whole lines, or the characters that
/// follow the cursor on its line).
fn drop_suffix_overlap(text: &str, suffix: &str) -> String {
    let first_line = suffix.split('\n').next().unwrap_or("").trim_end();
    if !first_line.is_empty() {
        for k in (1..=first_line.len()).rev() {
            if first_line.is_char_boundary(k) && text.ends_with(&first_line[..k]) {
                return text[..text.len() - k].to_string();
            }
        }
    }
    let suffix_lines: Vec<&str> = suffix.lines().map(str::trim).filter(|l| !l.is_empty()).take(5).collect();
    let mut lines: Vec<&str> = text.split('\n').collect();
    for n in (1..=suffix_lines.len().min(lines.len())).rev() {
        let tail: Vec<&str> = lines[lines.len() - n..].iter().map(|l| l.trim()).collect();
        if tail == suffix_lines[..n] && !tail.iter().all(|l| l.is_empty()) {
            lines.truncate(lines.len() - n);
            return lines.join("\n");
        }
    }
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closer_of_the_enclosing_block_ends_the_completion() {
        let out = process("a + b\n}\n\nfn next() {}\n", "    ", "\n}\n", Some(Lang::Rust));
        assert_eq!(out.as_deref(), Some("a + b"));
    }

    #[test]
    fn unbalanced_openers_are_cut_back_to_the_last_balanced_line() {
        let out = process("let v = 1;\nlet w = vec![\n    1,", "    ", "\n", Some(Lang::Rust));
        assert_eq!(out.as_deref(), Some("let v = 1;"));
        assert_eq!(process("foo(a, ", "", "", None).as_deref(), Some("foo(a,"));
    }

    #[test]
    fn text_repeating_the_suffix_is_dropped() {
        assert_eq!(process("name: &str)", "fn greet(", ")", Some(Lang::Rust)).as_deref(), Some("name: &str"));
        let out = process("x += 1\n    return x", "    ", "\n    return x\n", Some(Lang::Python));
        assert_eq!(out.as_deref(), Some("x += 1"));
    }

    #[test]
    fn python_stops_at_a_dedent_and_trailing_whitespace_goes() {
        let out = process("total += v   \n    return total\nprint(total)\n", "        ", "", Some(Lang::Python));
        assert_eq!(out.as_deref(), Some("total += v"));
    }

    #[test]
    fn empty_and_fenced_answers() {
        assert_eq!(process("   \n\n", "", "", None), None);
        assert_eq!(process("}", "    ", "\n}", Some(Lang::Rust)), None);
        assert_eq!(process("```rust\nlet a = 1;\n```", "", "", Some(Lang::Rust)).as_deref(), Some("let a = 1;"));
    }
}
