//! RFC 6902 JSON Patch: making a patch that turns one document into another
//! ([`json_patch`]), and applying one ([`apply_patch`]).
//!
//! A made patch is minimal for the common cases: arrays are aligned by a longest common
//! subsequence over element hashes, so one inserted element is one `add`, one removed
//! element one `remove`, and an element that moved one `move`; elements changed in place
//! are patched inside. Numbers keep their representation (`1` to `1.0` is a `replace`), so
//! the patch gives exactly the second document.
//!
//! Recursion follows the documents' nesting: see [`crate::depth`].

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::align::{Hashes, Ignore, Step};
use crate::path::{Token, parse_index, pointer};
use crate::{Numbers, numbers_equal_by_value};

/// Moves looked for in one array; past these, a moved element is a `remove` and an `add`.
const MAX_MOVES: usize = 64;

/// Nothing is ignored in a patch.
struct Everything;

impl Ignore for Everything {
    fn ignored(&self, _: &[Token<'_>]) -> bool {
        false
    }
}

/// An RFC 6902 patch that turns `a` into `b`.
pub fn json_patch(a: &Value, b: &Value) -> Vec<Value> {
    let mut writer = Writer {
        hashes: Hashes::new(true),
        tokens: Vec::new(),
        ops: Vec::new(),
    };
    writer.walk(a, b);
    writer.ops
}

struct Writer<'a> {
    hashes: Hashes,
    /// Where the walk is, as `b` indexes it.
    tokens: Vec<Token<'a>>,
    ops: Vec<Value>,
}

impl<'a> Writer<'a> {
    fn here(&self) -> String {
        pointer(&self.tokens)
    }

    fn at(&self, token: Token<'_>) -> String {
        let mut path = self.here();
        path.push('/');
        match token {
            Token::Key(k) => path.push_str(&crate::escape(k)),
            Token::Index(i) => path.push_str(&i.to_string()),
        }
        path
    }

    fn walk(&mut self, a: &'a Value, b: &'a Value) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for (k, va) in x {
                    match y.get(k) {
                        Some(vb) => {
                            self.tokens.push(Token::Key(k));
                            self.walk(va, vb);
                            self.tokens.pop();
                        }
                        None => self.write("remove", None, Token::Key(k), None),
                    }
                }
                for (k, vb) in y {
                    if !x.contains_key(k) {
                        self.write("add", None, Token::Key(k), Some(vb));
                    }
                }
            }
            (Value::Array(x), Value::Array(y)) => self.array(x, y),
            _ if a == b => {}
            _ => self.replace(b),
        }
    }

    /// Writes operation `op` at `token` below here (from `from` below here, with `value`).
    /// Kept out of the recursive frames, which stay small.
    #[inline(never)]
    fn write(
        &mut self,
        op: &str,
        from: Option<Token<'_>>,
        token: Token<'_>,
        value: Option<&Value>,
    ) {
        let mut operation = serde_json::Map::new();
        operation.insert("op".to_string(), json!(op));
        if let Some(from) = from {
            operation.insert("from".to_string(), json!(self.at(from)));
        }
        operation.insert("path".to_string(), json!(self.at(token)));
        if let Some(value) = value {
            operation.insert("value".to_string(), value.clone());
        }
        self.ops.push(Value::Object(operation));
    }

    #[inline(never)]
    fn replace(&mut self, value: &Value) {
        let path = self.here();
        self.ops
            .push(json!({ "op": "replace", "path": path, "value": value }));
    }

    /// Removes what is gone (from the end, so indices hold), moves what moved, adds what is
    /// new (in order, at its final index), then patches elements changed in place.
    fn array(&mut self, x: &'a [Value], y: &'a [Value]) {
        // This frame is one per level of nesting: it holds only what the recursion needs.
        for (i, j) in self.reorder(x, y) {
            self.tokens.push(Token::Index(j));
            self.walk(&x[i], &y[j]);
            self.tokens.pop();
        }
    }

    /// Writes the removes, moves and adds that line `x` up with `y`; answers the elements
    /// changed in place (left index, right index), left for the caller to patch inside.
    #[inline(never)]
    fn reorder(&mut self, x: &'a [Value], y: &'a [Value]) -> Vec<(usize, usize)> {
        let mut tokens = std::mem::take(&mut self.tokens);
        let steps = self
            .hashes
            .align(x, y, &mut tokens, Numbers::Exact, &Everything);
        self.tokens = tokens;
        let mut pairs: Vec<(usize, usize, bool)> = Vec::new();
        let mut gone: Vec<usize> = Vec::new();
        let mut new: Vec<usize> = Vec::new();
        for step in steps {
            match step {
                Step::Pair { i, j, same } => pairs.push((i, j, same)),
                Step::Missing(i) => gone.push(i),
                Step::Extra(j) => new.push(j),
            }
        }
        // An element gone from one place and new at another moved.
        let mut moved: Vec<(usize, usize)> = Vec::new();
        if !gone.is_empty() && !new.is_empty() {
            let mut by_value: HashMap<String, Vec<usize>> = HashMap::new();
            for &i in gone.iter().rev() {
                by_value.entry(x[i].to_string()).or_default().push(i);
            }
            new.retain(|&j| {
                if moved.len() >= MAX_MOVES {
                    return true;
                }
                match by_value.get_mut(&y[j].to_string()).and_then(Vec::pop) {
                    Some(i) => {
                        moved.push((i, j));
                        false
                    }
                    None => true,
                }
            });
            gone.retain(|i| !moved.iter().any(|(m, _)| m == i));
        }
        for &i in gone.iter().rev() {
            self.write("remove", None, Token::Index(i), None);
        }
        // What is left, in its order: each element's final index, and whether it is where
        // it belongs relative to the others (pairs keep their order; moved ones do not).
        let mut left: Vec<(usize, usize, bool)> = pairs
            .iter()
            .map(|&(i, j, _)| (i, j, true))
            .chain(moved.iter().map(|&(i, j)| (i, j, false)))
            .collect();
        left.sort_unstable_by_key(|&(i, ..)| i);
        let mut order: Vec<(usize, bool)> = left.into_iter().map(|(_, j, s)| (j, s)).collect();
        moved.sort_unstable_by_key(|&(_, j)| j);
        for &(_, j) in &moved {
            let Some(from) = order.iter().position(|&(k, _)| k == j) else {
                continue;
            };
            order.remove(from);
            // Right after the last settled element that comes before it.
            let to = order
                .iter()
                .rposition(|&(k, settled)| settled && k < j)
                .map_or(0, |p| p + 1);
            order.insert(to, (j, true));
            if from != to {
                self.write("move", Some(Token::Index(from)), Token::Index(to), None);
            }
        }
        new.sort_unstable();
        for j in new {
            self.write("add", None, Token::Index(j), Some(&y[j]));
        }
        pairs
            .into_iter()
            .filter(|&(_, _, same)| !same)
            .map(|(i, j, _)| (i, j))
            .collect()
    }
}

/// Why a patch does not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchError {
    /// The operation that failed (0-based); `None`: the patch itself is not a list.
    pub operation: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for PatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.operation {
            Some(n) => write!(f, "operation {n}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for PatchError {}

/// `doc` with RFC 6902 `patch` applied, all or nothing. `test` compares numbers by value
/// (`1` equals `1.0`), as the RFC says.
pub fn apply_patch(doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Array(operations) = patch else {
        return Err(PatchError {
            operation: None,
            message: "a JSON Patch is an array of operations".to_string(),
        });
    };
    let mut out = doc.clone();
    for (n, operation) in operations.iter().enumerate() {
        apply_one(&mut out, operation).map_err(|message| PatchError {
            operation: Some(n),
            message,
        })?;
    }
    Ok(out)
}

fn member<'v>(operation: &'v Map<String, Value>, name: &str) -> Result<&'v Value, String> {
    operation
        .get(name)
        .ok_or_else(|| format!("missing '{name}' parameter"))
}

fn pointer_member(operation: &Map<String, Value>, name: &str) -> Result<Vec<String>, String> {
    match member(operation, name)? {
        Value::String(p) => parse_pointer(p),
        _ => Err(format!("'{name}' must be a JSON Pointer string")),
    }
}

fn apply_one(doc: &mut Value, operation: &Value) -> Result<(), String> {
    let Value::Object(operation) = operation else {
        return Err("an operation is an object".to_string());
    };
    let op = match member(operation, "op")? {
        Value::String(op) => op.as_str(),
        _ => return Err("'op' must be a string".to_string()),
    };
    let path = pointer_member(operation, "path")?;
    match op {
        "add" => add(doc, &path, member(operation, "value")?.clone()),
        "remove" => remove(doc, &path).map(drop),
        "replace" => {
            let value = member(operation, "value")?.clone();
            *get_mut(doc, &path)? = value;
            Ok(())
        }
        "move" => {
            let from = pointer_member(operation, "from")?;
            if from == path {
                return Ok(());
            }
            if path.len() > from.len() && path.starts_with(&from) {
                return Err("cannot move a value into one of its own children".to_string());
            }
            let value = remove(doc, &from)?;
            add(doc, &path, value)
        }
        "copy" => {
            let from = pointer_member(operation, "from")?;
            let value = get_mut(doc, &from)?.clone();
            add(doc, &path, value)
        }
        "test" => {
            let expected = member(operation, "value")?;
            if equal_by_value(get_mut(doc, &path)?, expected) {
                Ok(())
            } else {
                Err(format!("test failed at {}", show(&path)))
            }
        }
        other => Err(format!("unrecognized op '{other}'")),
    }
}

/// The unescaped tokens of a JSON Pointer.
fn parse_pointer(raw: &str) -> Result<Vec<String>, String> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    let rest = raw
        .strip_prefix('/')
        .ok_or_else(|| format!("`{raw}` is not a JSON Pointer (it must start with /)"))?;
    rest.split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                match (c, c == '~') {
                    (_, false) => out.push(c),
                    (_, true) => match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => return Err(format!("`{raw}` has a `~` not followed by 0 or 1")),
                    },
                }
            }
            Ok(out)
        })
        .collect()
}

fn show(path: &[String]) -> String {
    if path.is_empty() {
        "the document".to_string()
    } else {
        path.iter()
            .map(|t| format!("/{}", crate::escape(t)))
            .collect()
    }
}

/// The value at `path`.
fn get_mut<'v>(doc: &'v mut Value, path: &[String]) -> Result<&'v mut Value, String> {
    let mut at = doc;
    for (depth, token) in path.iter().enumerate() {
        at = match at {
            Value::Object(map) => map.get_mut(token),
            Value::Array(items) => parse_index(token).and_then(|i| items.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("{} does not exist", show(&path[..=depth])))?;
    }
    Ok(at)
}

fn add(doc: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, parent)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    match get_mut(doc, parent)? {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) => {
            let index = if last == "-" {
                items.len()
            } else {
                parse_index(last)
                    .filter(|i| *i <= items.len())
                    .ok_or_else(|| {
                        format!(
                            "{} is not an index of an array of {}",
                            show(path),
                            items.len()
                        )
                    })?
            };
            items.insert(index, value);
            Ok(())
        }
        _ => Err(format!(
            "{} is neither an object nor an array",
            show(parent)
        )),
    }
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value, String> {
    let Some((last, parent)) = path.split_last() else {
        return Err("cannot remove the whole document".to_string());
    };
    let removed = match get_mut(doc, parent)? {
        Value::Object(map) => map.remove(last),
        Value::Array(items) => parse_index(last)
            .filter(|i| *i < items.len())
            .map(|i| items.remove(i)),
        _ => None,
    };
    removed.ok_or_else(|| format!("{} does not exist", show(path)))
}

/// Equality as RFC 6902's `test` judges it: numbers by value, objects by their members in
/// any order, arrays element by element.
pub fn equal_by_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => numbers_equal_by_value(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equal_by_value(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| equal_by_value(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(a: Value, b: Value) -> Vec<Value> {
        let patch = json_patch(&a, &b);
        assert_eq!(
            apply_patch(&a, &Value::Array(patch.clone())).unwrap(),
            b,
            "{patch:?}"
        );
        patch
    }

    #[test]
    fn one_inserted_removed_or_moved_element_is_one_operation() {
        let a = json!({ "tags": ["a", "b", "c", "d"] });
        assert_eq!(
            ops(a.clone(), json!({ "tags": ["a", "x", "b", "c", "d"] })),
            [json!({ "op": "add", "path": "/tags/1", "value": "x" })]
        );
        assert_eq!(
            ops(a.clone(), json!({ "tags": ["a", "c", "d"] })),
            [json!({ "op": "remove", "path": "/tags/1" })]
        );
        assert_eq!(
            ops(a.clone(), json!({ "tags": ["b", "c", "d", "a"] })),
            [json!({ "op": "move", "from": "/tags/0", "path": "/tags/3" })]
        );
        assert_eq!(
            ops(a.clone(), json!({ "tags": ["d", "a", "b", "c"] })),
            [json!({ "op": "move", "from": "/tags/3", "path": "/tags/0" })]
        );
        // A changed element is patched where it is.
        let items = json!([{ "id": 1, "n": "a" }, { "id": 2, "n": "b" }, { "id": 3, "n": "c" }]);
        let mut changed = items.clone();
        changed[1]["n"] = json!("B");
        assert_eq!(
            ops(items.clone(), changed),
            [json!({ "op": "replace", "path": "/1/n", "value": "B" })]
        );
    }

    #[test]
    fn mixed_edits_apply_to_give_the_second_document() {
        for (a, b) in [
            (json!([1, 2, 3, 4, 5]), json!([5, 1, 3, 9, 2])),
            (json!([1, 1, 1]), json!([1])),
            (json!([]), json!([[], {}, 1.0])),
            (json!([1, 2]), json!([1.0, 2])),
            (json!([[1, 2], [3]]), json!([[3], [1, 2, 4]])),
            (
                json!({ "a": [1, { "b": [2, 3] }] }),
                json!({ "a": [{ "b": [3, 2] }, 1] }),
            ),
        ] {
            ops(a, b);
        }
    }

    #[test]
    fn bad_patches_are_refused_whole() {
        let doc = json!({ "a": [1, 2] });
        for (patch, words) in [
            (json!({}), "array of operations"),
            (json!([{ "op": "add", "path": "/a/-" }]), "missing 'value'"),
            (
                json!([{ "op": "add", "path": "/a/01", "value": 1 }]),
                "not an index",
            ),
            (
                json!([{ "op": "remove", "path": "/b" }]),
                "/b does not exist",
            ),
            (
                json!([{ "op": "move", "from": "/a", "path": "/a/0" }]),
                "own children",
            ),
            (
                json!([{ "op": "test", "path": "/a/0", "value": "1" }]),
                "test failed",
            ),
            (json!([{ "op": "spam", "path": "/a" }]), "unrecognized op"),
            (
                json!([{ "op": "add", "path": "a", "value": 1 }]),
                "must start with /",
            ),
            (
                json!([{ "op": "add", "path": "/c", "value": 1 }, { "op": "remove", "path": "/x" }]),
                "operation 1",
            ),
        ] {
            let err = apply_patch(&doc, &patch).unwrap_err().to_string();
            assert!(err.contains(words), "{patch}: {err}");
        }
        assert_eq!(
            apply_patch(
                &doc,
                &json!([{ "op": "test", "path": "/a", "value": [1.0, 2] }])
            )
            .unwrap(),
            doc,
            "test compares numbers by value"
        );
    }
}
