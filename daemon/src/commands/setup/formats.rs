//! Edits that keep what the user wrote: a JSON-with-comments document changed at one path (its
//! comments, order and spacing kept), and lines of a line-based file between marker comments, with
//! any line of the user's that a key of ours replaces kept inside the block and put back on undo.

use anyhow::Context;
use jsonc_parser::cst::{CstInputValue, CstObject, CstRootNode};
use serde_json::Value;

/// A JSON document that may hold comments and trailing commas (VS Code's, Zed's and opencode's
/// settings files do), edited in place.
pub struct Jsonc {
    root: CstRootNode,
}

fn input(v: &Value) -> CstInputValue {
    match v {
        Value::Null => CstInputValue::Null,
        Value::Bool(b) => CstInputValue::Bool(*b),
        Value::Number(n) => CstInputValue::Number(n.to_string()),
        Value::String(s) => CstInputValue::String(s.clone()),
        Value::Array(a) => CstInputValue::Array(a.iter().map(input).collect()),
        Value::Object(o) => CstInputValue::Object(o.iter().map(|(k, v)| (k.clone(), input(v))).collect()),
    }
}

impl Jsonc {
    /// `text` parsed; an empty file is an empty document.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let root =
            CstRootNode::parse(text, &Default::default()).map_err(|e| anyhow::anyhow!("it is not valid JSON: {e}"))?;
        Ok(Self { root })
    }

    /// The document's top-level object (made one when the document is empty).
    fn object(&self) -> anyhow::Result<CstObject> {
        if self.root.value().is_none() {
            return Ok(self.root.object_value_or_set());
        }
        self.root.object_value().context("it is not a JSON object")
    }

    /// The object at `path`, made where missing; an error names a step that holds something else.
    fn object_at(&self, path: &[&str]) -> anyhow::Result<CstObject> {
        let mut obj = self.object()?;
        for (i, key) in path.iter().enumerate() {
            obj = match obj.get(key) {
                None => obj.object_value_or_set(key),
                Some(prop) => {
                    prop.object_value().with_context(|| format!("its \"{}\" is not an object", path[..=i].join(".")))?
                }
            };
        }
        Ok(obj)
    }

    /// Sets the value at `path` (the last step a key of the object the others lead to).
    pub fn set(&self, path: &[&str], value: &Value) -> anyhow::Result<()> {
        let (key, parents) = path.split_last().context("an empty path")?;
        let obj = self.object_at(parents)?;
        match obj.get(key) {
            Some(prop) => prop.set_value(input(value)),
            None => {
                obj.append(key, input(value));
            }
        }
        Ok(())
    }

    /// Removes the value at `path`, and each object on the way that is left empty by it.
    pub fn remove(&self, path: &[&str]) -> anyhow::Result<()> {
        if self.root.value().is_none() {
            return Ok(());
        }
        let mut objects = vec![self.object()?];
        for (i, key) in path[..path.len() - 1].iter().enumerate() {
            match objects[i].get(key) {
                None => return Ok(()),
                Some(prop) => objects.push(
                    prop.object_value()
                        .with_context(|| format!("its \"{}\" is not an object", path[..=i].join(".")))?,
                ),
            }
        }
        let Some(prop) = objects.last().and_then(|o| o.get(path[path.len() - 1])) else { return Ok(()) };
        prop.remove();
        // Parents emptied by the removal go too, innermost first; the top-level object stays.
        for i in (1..objects.len()).rev() {
            if !objects[i].properties().is_empty() {
                break;
            }
            if let Some(prop) = objects[i - 1].get(path[i - 1]) {
                prop.remove();
            }
        }
        Ok(())
    }

    /// The value at `path`, if there is one.
    #[cfg(test)]
    pub fn get(&self, path: &[&str]) -> Option<Value> {
        let mut value = self.root.value()?;
        for key in path {
            value = value.as_object()?.get(key)?.value()?;
        }
        value.to_serde_value()
    }

    /// In a document that is a list (VS Code's `chatLanguageModels.json`), the item whose `field`
    /// is `name` replaced by `item` (`None`: removed), or `item` added at the end.
    pub fn set_item(&self, field: &str, name: &str, item: Option<&Value>) -> anyhow::Result<()> {
        let list = if self.root.value().is_none() {
            self.root.array_value_or_set()
        } else {
            self.root.array_value().context("it is not a JSON list")?
        };
        let existing = list.elements().into_iter().find(|e| {
            e.as_object()
                .and_then(|o| o.get(field))
                .and_then(|p| p.value())
                .and_then(|v| v.to_serde_value())
                .is_some_and(|v| v == name)
        });
        match (existing, item) {
            (Some(e), Some(item)) => {
                e.as_object().context("not an object")?.replace_with(input(item));
            }
            (Some(e), None) => e.remove(),
            (None, Some(item)) => {
                list.append(input(item));
            }
            (None, None) => {}
        }
        Ok(())
    }

    /// The text, ending with a newline; empty when nothing is left (no value but an empty object or
    /// list, no comment).
    pub fn text(&self) -> String {
        let text = self.root.to_string();
        let text = text.trim();
        if text.is_empty()
            || text.split_whitespace().collect::<String>() == "{}"
            || text.split_whitespace().collect::<String>() == "[]"
        {
            return String::new();
        }
        format!("{text}\n")
    }
}

/// The marker lines around what setup writes in a line-based file.
pub const BEGIN: &str = "# tollgate setup: begin";
pub const END: &str = "# tollgate setup: end";

/// The lines of `current` outside the marker lines: what the user wrote.
pub fn without_block(current: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut inside = false;
    for line in current.lines() {
        match line.trim() {
            l if l == BEGIN => inside = true,
            l if l == END => inside = false,
            _ if !inside => lines.push(line),
            _ => {}
        }
    }
    lines
}

/// A line-based config (YAML) with tollgate's keys between the marker lines at its end. A line of
/// the user's that sets one of `keys` is commented out where it is (`# before tollgate setup: LINE`)
/// and given back when the block is taken out, so that `--undo` leaves the file as it was. `legacy`
/// lists marker lines an earlier version wrote, each followed by keys of ours.
pub fn key_lines(current: &str, keys: &[(&str, String)], on: bool, legacy: &[&str]) -> String {
    const KEPT: &str = "# before tollgate setup: ";
    let sets = |line: &str| keys.iter().any(|(k, _)| line.strip_prefix(k).is_some_and(|r| r.starts_with(':')));
    let mut lines: Vec<String> = Vec::new();
    let mut after_legacy = false;
    for line in without_block(current) {
        if legacy.contains(&line.trim()) {
            after_legacy = true;
            continue;
        }
        if after_legacy && sets(line) {
            continue;
        }
        after_legacy = false;
        lines.push(line.strip_prefix(KEPT).unwrap_or(line).to_string());
    }
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    if on {
        for line in lines.iter_mut().filter(|l| sets(l)) {
            *line = format!("{KEPT}{line}");
        }
        lines.push(BEGIN.into());
        lines.extend(keys.iter().map(|(k, v)| format!("{k}: {v}")));
        lines.push(END.into());
    }
    if lines.is_empty() { String::new() } else { lines.join("\n") + "\n" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jsonc_edits_keep_comments_and_take_out_emptied_parents() {
        let before = "{\n  // my theme\n  \"theme\": \"dark\", /* trailing */\n}\n";
        let doc = Jsonc::parse(before).unwrap();
        doc.set(&["language_models", "openai_compatible", "tollgate"], &json!({"api_url": "http://h/v1"})).unwrap();
        let on = doc.text();
        assert!(on.contains("// my theme") && on.contains("/* trailing */"), "{on}");
        let doc = Jsonc::parse(&on).unwrap();
        assert_eq!(
            doc.get(&["language_models", "openai_compatible", "tollgate", "api_url"]),
            Some(json!("http://h/v1"))
        );
        doc.remove(&["language_models", "openai_compatible", "tollgate"]).unwrap();
        let off = doc.text();
        assert!(
            !off.contains("language_models") && off.contains("// my theme") && off.contains("\"theme\": \"dark\""),
            "{off}"
        );
        // A step that is not an object is named, not overwritten.
        let doc = Jsonc::parse(r#"{"env": 3}"#).unwrap();
        assert!(doc.set(&["env", "X"], &json!(1)).unwrap_err().to_string().contains("\"env\" is not an object"));
        assert!(Jsonc::parse("{").is_err());
        assert!(Jsonc::parse("[1]").unwrap().set(&["a"], &json!(1)).is_err());
    }

    #[test]
    fn jsonc_list_items_are_replaced_by_name() {
        let doc = Jsonc::parse("[\n  // mine\n  {\"name\": \"other\"}\n]").unwrap();
        doc.set_item("name", "tollgate", Some(&json!({"name": "tollgate", "v": 1}))).unwrap();
        doc.set_item("name", "tollgate", Some(&json!({"name": "tollgate", "v": 2}))).unwrap();
        let v: Value = serde_json::from_str(&doc.text().replace("// mine", "")).unwrap();
        assert_eq!(v, json!([{"name": "other"}, {"name": "tollgate", "v": 2}]));
        doc.set_item("name", "tollgate", None).unwrap();
        assert!(doc.text().contains("// mine") && !doc.text().contains("tollgate"));
        let fresh = Jsonc::parse("").unwrap();
        fresh.set_item("name", "t", None).unwrap();
        assert_eq!(fresh.text(), "", "nothing to write");
    }

    #[test]
    fn key_lines_move_the_users_lines_into_the_block_and_back() {
        let before = "model: gpt-4.1\nopenai-api-key: mine\n";
        let keys = [("openai-api-base", "http://h/v1".to_string()), ("openai-api-key", "tg-1".to_string())];
        let on = key_lines(before, &keys, true, &[]);
        assert_eq!(
            on,
            "model: gpt-4.1\n# before tollgate setup: openai-api-key: mine\n# tollgate setup: begin\n\
             openai-api-base: http://h/v1\nopenai-api-key: tg-1\n# tollgate setup: end\n"
        );
        assert_eq!(key_lines(&on, &keys, true, &[]), on, "idempotent");
        assert_eq!(key_lines(&on, &keys, false, &[]), before, "undo gives the user's line back");
        assert_eq!(key_lines("", &keys, false, &[]), "");
        // A key that merely starts like ours is not ours.
        assert!(
            key_lines("openai-api-key-file: x\n", &keys, true, &[]).starts_with("openai-api-key-file: x\n# tollgate")
        );
    }
}
