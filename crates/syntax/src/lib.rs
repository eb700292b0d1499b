//! Syntax trees from tree-sitter (grammars compiled in; nothing is downloaded): which language a
//! file is in, and the enclosing scope (function, method, class) of a span of lines.

use tree_sitter::{Language, Node, Parser, Point, Tree};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Python,
    JavaScript,
    TypeScript,
    Tsx,
    Go,
    Java,
    C,
    Cpp,
}

impl Lang {
    /// The language of a file, by its extension.
    pub fn of_path(path: &str) -> Option<Self> {
        let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
        Some(match ext.as_str() {
            "rs" => Lang::Rust,
            "py" | "pyi" => Lang::Python,
            "js" | "mjs" | "cjs" | "jsx" => Lang::JavaScript,
            "ts" | "mts" | "cts" => Lang::TypeScript,
            "tsx" => Lang::Tsx,
            "go" => Lang::Go,
            "java" => Lang::Java,
            "c" | "h" => Lang::C,
            "cc" | "cpp" | "cxx" | "hpp" | "hh" | "hxx" => Lang::Cpp,
            _ => return None,
        })
    }

    /// The name used in Markdown code fences and prompts.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::JavaScript => "javascript",
            Lang::TypeScript => "typescript",
            Lang::Tsx => "tsx",
            Lang::Go => "go",
            Lang::Java => "java",
            Lang::C => "c",
            Lang::Cpp => "cpp",
        }
    }

    pub fn grammar(self) -> Language {
        match self {
            Lang::Rust => tree_sitter_rust::LANGUAGE.into(),
            Lang::Python => tree_sitter_python::LANGUAGE.into(),
            Lang::JavaScript => tree_sitter_javascript::LANGUAGE.into(),
            Lang::TypeScript => tree_sitter_typescript::LANGUAGE_TYPESCRIPT.into(),
            Lang::Tsx => tree_sitter_typescript::LANGUAGE_TSX.into(),
            Lang::Go => tree_sitter_go::LANGUAGE.into(),
            Lang::Java => tree_sitter_java::LANGUAGE.into(),
            Lang::C => tree_sitter_c::LANGUAGE.into(),
            Lang::Cpp => tree_sitter_cpp::LANGUAGE.into(),
        }
    }
}

/// The language name for a path: a known grammar's, else the extension, else `text`.
pub fn language_name(path: &str) -> String {
    match Lang::of_path(path) {
        Some(l) => l.name().to_string(),
        None => path.rsplit_once('.').map_or("text", |(_, e)| e).to_ascii_lowercase(),
    }
}

/// Whether a node kind is a scope worth quoting whole: functions, methods, classes, impls.
pub fn is_scope(kind: &str) -> bool {
    kind.contains("function") && !kind.contains("call") && !kind.ends_with("_type")
        || kind.contains("method") && !kind.contains("invocation") && !kind.contains("call")
        || matches!(
            kind,
            "impl_item"
                | "trait_item"
                | "class_definition"
                | "class_declaration"
                | "class_specifier"
                | "interface_declaration"
                | "constructor_declaration"
                | "struct_item"
                | "enum_item"
        )
}

pub fn parse(source: &str, lang: Lang) -> Option<tree_sitter::Tree> {
    reparse(source, lang, None)
}

/// Parses `source`, reusing `old` (already edited to match it) for an incremental parse.
pub fn reparse(source: &str, lang: Lang, old: Option<&Tree>) -> Option<Tree> {
    let mut parser = Parser::new();
    parser.set_language(&lang.grammar()).ok()?;
    parser.parse(source, old)
}

/// The smallest function, method or class that is `node` or holds it.
pub fn scope_around(mut node: Option<Node<'_>>) -> Option<Node<'_>> {
    while let Some(n) = node {
        if is_scope(n.kind()) {
            return Some(n);
        }
        node = n.parent();
    }
    None
}

/// The smallest function, method or class around lines `first..=last` (1-based), as 1-based
/// `(start, end)` lines; `None` at top level or when the file does not parse.
pub fn enclosing_scope(source: &str, lang: Lang, first: usize, last: usize) -> Option<(usize, usize)> {
    scope_lines(&parse(source, lang)?, source, first, last)
}

/// [`enclosing_scope`] in a tree already parsed from `source`.
pub fn scope_lines(tree: &Tree, source: &str, first: usize, last: usize) -> Option<(usize, usize)> {
    let start = Point { row: first.saturating_sub(1), column: 0 };
    let line_len = source.lines().nth(last.saturating_sub(1)).map_or(0, str::len);
    let end = Point { row: last.saturating_sub(1), column: line_len };
    // The node spanning the lines, and so each of its ancestors, holds them whole.
    let scope = scope_around(tree.root_node().descendant_for_point_range(start, end))?;
    Some((scope.start_position().row + 1, scope.end_position().row + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_enclosing_function_in_each_language() {
        let cases: &[(&str, &str, usize, (usize, usize))] = &[
            ("a.rs", "use x;\n\nimpl A {\n    fn f(&self) {\n        let a = 1;\n        a\n    }\n}\n", 5, (4, 7)),
            ("a.py", "import os\n\nclass A:\n    def f(self):\n        x = 1\n        return x\n", 5, (4, 6)),
            ("a.js", "const a = 1;\nfunction f() {\n  return a;\n}\n", 3, (2, 4)),
            ("a.ts", "class A {\n  m(): number {\n    return 1;\n  }\n}\n", 3, (2, 4)),
            ("a.tsx", "export function C() {\n  return <div/>;\n}\n", 2, (1, 3)),
            ("a.go", "package a\n\nfunc F() int {\n\treturn 1\n}\n", 4, (3, 5)),
            ("A.java", "class A {\n  int f() {\n    return 1;\n  }\n}\n", 3, (2, 4)),
            ("a.c", "#include <x.h>\nint f(void) {\n  return 1;\n}\n", 3, (2, 4)),
            ("a.cpp", "namespace n {\nint f() {\n  return 1;\n}\n}\n", 3, (2, 4)),
        ];
        for (path, src, line, want) in cases {
            let lang = Lang::of_path(path).unwrap();
            assert_eq!(enclosing_scope(src, lang, *line, *line), Some(*want), "{path}");
        }
        assert_eq!(enclosing_scope("import os\nx = 1\n", Lang::Python, 2, 2), None);
        assert_eq!(Lang::of_path("README.md"), None);
        assert_eq!(language_name("README.md"), "md");
    }
}
