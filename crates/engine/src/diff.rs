//! Unified diffs, as `git diff` prints them: files, hunks, and the new file's line of every line.

use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDiff {
    /// The path in the new tree.
    pub path: String,
    pub hunks: Vec<Hunk>,
    /// Deleted files and binary changes have nothing to review.
    pub reviewable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hunk {
    /// `@@ -a,b +c,d @@ context`
    pub header: String,
    pub new_start: usize,
    pub lines: Vec<Line>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// `+`, `-` or ` `.
    pub kind: char,
    pub text: String,
    /// Its line in the new file (none for a removed line).
    pub new_line: Option<usize>,
}

impl Hunk {
    /// New-file lines this hunk adds or changes.
    pub fn added(&self) -> BTreeSet<usize> {
        self.lines.iter().filter(|l| l.kind == '+').filter_map(|l| l.new_line).collect()
    }

    /// The hunk as diff text, with its header.
    pub fn text(&self) -> String {
        let mut out = format!("{}\n", self.header);
        for l in &self.lines {
            out.push(l.kind);
            out.push_str(&l.text);
            out.push('\n');
        }
        out
    }

    /// The new-file lines the hunk spans.
    pub fn new_range(&self) -> (usize, usize) {
        let lines: Vec<usize> = self.lines.iter().filter_map(|l| l.new_line).collect();
        (lines.first().copied().unwrap_or(self.new_start), lines.last().copied().unwrap_or(self.new_start))
    }

    /// Splits a hunk longer than `max` lines into consecutive hunks (for bounded prompts).
    pub fn split(self, max: usize) -> Vec<Hunk> {
        if self.lines.len() <= max {
            return vec![self];
        }
        self.lines
            .chunks(max)
            .map(|part| {
                let start = part.iter().find_map(|l| l.new_line).unwrap_or(self.new_start);
                let new_count = part.iter().filter(|l| l.new_line.is_some()).count();
                Hunk {
                    header: format!("@@ +{start},{new_count} @@ (part of a longer hunk)"),
                    new_start: start,
                    lines: part.to_vec(),
                }
            })
            .collect()
    }
}

fn unquote(p: &str) -> String {
    let p = p.trim();
    let p = p.strip_prefix('"').and_then(|p| p.strip_suffix('"')).unwrap_or(p);
    p.replace("\\\"", "\"").replace("\\\\", "\\")
}

/// Parses `git diff` output (any `-U`, renames, binary and deleted files).
pub fn parse(diff: &str) -> Vec<FileDiff> {
    let mut files: Vec<FileDiff> = Vec::new();
    let mut new_line = 0usize;
    for raw in diff.lines() {
        if raw.starts_with("diff --git ") {
            files.push(FileDiff { path: String::new(), hunks: Vec::new(), reviewable: true });
            // The b/ path, until a +++ line names it (renames, mode changes have none).
            if let Some(i) = raw.rfind(" b/") {
                files.last_mut().unwrap().path = unquote(&raw[i + 3..]);
            }
            continue;
        }
        let Some(file) = files.last_mut() else { continue };
        if file.hunks.is_empty() {
            if let Some(p) = raw.strip_prefix("+++ ") {
                if p == "/dev/null" {
                    file.reviewable = false;
                } else {
                    file.path = unquote(p.strip_prefix("b/").unwrap_or(p));
                }
                continue;
            }
            if raw.starts_with("Binary files ") || raw.starts_with("deleted file mode") {
                file.reviewable = false;
                continue;
            }
            if raw.starts_with("--- ") || !raw.starts_with("@@") {
                continue;
            }
        }
        if let Some(rest) = raw.strip_prefix("@@ ") {
            let new = rest.split_whitespace().find(|p| p.starts_with('+')).unwrap_or("+1");
            let start: usize = new[1..].split(',').next().and_then(|s| s.parse().ok()).unwrap_or(1);
            new_line = start;
            file.hunks.push(Hunk { header: raw.to_string(), new_start: start, lines: Vec::new() });
            continue;
        }
        let Some(hunk) = file.hunks.last_mut() else { continue };
        let (kind, text) = match raw.chars().next() {
            Some(c @ ('+' | '-' | ' ')) => (c, &raw[1..]),
            Some('\\') => continue, // "\ No newline at end of file"
            None => (' ', ""),
            Some(_) => continue,
        };
        let line = if kind == '-' {
            None
        } else {
            new_line += 1;
            Some(new_line - 1)
        };
        hunk.lines.push(Line { kind, text: text.to_string(), new_line: line });
    }
    files.retain(|f| !f.path.is_empty());
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIFF: &str = "diff --git a/src/lib.rs b/src/lib.rs
index 1111111..2222222 100644
--- a/src/lib.rs
+++ b/src/lib.rs
@@ -10,4 +10,5 @@ fn helper() {
 fn a() {
-    old();
+    new();
+    more();
 }
@@ -40,2 +41,2 @@
-x
+y
 z
\\ No newline at end of file
diff --git a/gone.txt b/gone.txt
deleted file mode 100644
--- a/gone.txt
+++ /dev/null
@@ -1 +0,0 @@
-bye
diff --git a/img.png b/img.png
Binary files a/img.png and b/img.png differ
diff --git a/old name.py b/new name.py
similarity index 90%
rename from old name.py
rename to new name.py
--- a/old name.py
+++ b/new name.py
@@ -1 +1 @@
-a = 1
+a = 2
";

    #[test]
    fn files_hunks_and_new_lines() {
        let files = parse(DIFF);
        let names: Vec<(&str, bool)> = files.iter().map(|f| (f.path.as_str(), f.reviewable)).collect();
        assert_eq!(names, [("src/lib.rs", true), ("gone.txt", false), ("img.png", false), ("new name.py", true)]);
        let h = &files[0].hunks[0];
        assert_eq!(h.added(), BTreeSet::from([11, 12]));
        assert_eq!(h.new_range(), (10, 13));
        assert!(h.text().starts_with("@@ -10,4 +10,5 @@ fn helper() {\n fn a() {\n-    old();\n+    new();"));
        assert_eq!(files[0].hunks[1].added(), BTreeSet::from([41]));
        assert_eq!(files[3].hunks[0].added(), BTreeSet::from([1]));
    }

    #[test]
    fn long_hunks_split_keeping_line_numbers() {
        let mut text = String::from("diff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -0,0 +1,250 @@\n");
        for i in 1..=250 {
            text.push_str(&format!("+line {i}\n"));
        }
        let hunk = parse(&text).remove(0).hunks.remove(0);
        let parts = hunk.split(100);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[2].added().first(), Some(&201));
        assert_eq!(parts[2].added().last(), Some(&250));
    }
}
