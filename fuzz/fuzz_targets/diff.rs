//! The diff engine on arbitrary pairs of JSON documents and arbitrary rules.
//!
//! Properties: never panics; a document compared with itself has no differences under any
//! rules the plan accepts; the RFC 6902 patch `json_patch(a, b)`, applied to `a` by the
//! `json-patch` crate and by the engine's own `apply_patch`, gives exactly `b`.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Number, Value};
use strangler_diff::{ArrayMode, Numbers, PathPattern, Rules, apply_patch, diff_json, json_patch};

/// Deeper than this, a value is `null` (bounds recursion on long inputs).
const MAX_DEPTH: usize = 8;
/// Keys drawn from a few names so that two documents share them.
const KEYS: [&str; 8] = ["id", "name", "items", "a", "b", "", "~1", "x/y"];

#[derive(Arbitrary, Debug)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Unsigned(u64),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(Key, Json)>),
}

#[derive(Arbitrary, Debug)]
enum Key {
    Known(u8),
    Other(String),
}

impl Key {
    fn text(&self) -> String {
        match self {
            Key::Known(i) => KEYS[usize::from(*i) % KEYS.len()].to_string(),
            Key::Other(s) => s.clone(),
        }
    }
}

impl Json {
    fn value(&self, depth: usize) -> Value {
        if depth > MAX_DEPTH {
            return Value::Null;
        }
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Int(i) => Value::from(*i),
            Json::Unsigned(u) => Value::from(*u),
            Json::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Json::Str(s) => Value::String(s.clone()),
            Json::Array(items) => items.iter().map(|j| j.value(depth + 1)).collect(),
            Json::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, j)| (k.text(), j.value(depth + 1)))
                    .collect::<Map<_, _>>(),
            ),
        }
    }
}

/// One token of a rule's path pattern.
#[derive(Arbitrary, Debug)]
enum Token {
    Any,
    Index(u8),
    Key(Key),
}

#[derive(Arbitrary, Debug)]
enum Mode {
    Set,
    Keyed(Key),
}

#[derive(Arbitrary, Debug)]
struct Input {
    ignore: Vec<Vec<Token>>,
    arrays: Vec<(Vec<Token>, Mode)>,
    tolerance: f64,
    exact_numbers: bool,
    a: Json,
    /// `b` is `a` with these subtrees replaced (by pre-order index), or a document of its own.
    b: Result<Vec<(u8, Json)>, Json>,
}

fn pattern(tokens: &[Token]) -> PathPattern {
    let raw: String = tokens
        .iter()
        .map(|t| match t {
            Token::Any => "/*".to_string(),
            Token::Index(i) => format!("/{i}"),
            Token::Key(k) => format!("/{}", strangler_diff::escape(&k.text())),
        })
        .collect();
    PathPattern::parse(&raw).expect("a pattern built of tokens parses")
}

/// Replaces the `target`-th node in pre-order (counting from `*seen`) with `with`.
fn replace_nth(v: &mut Value, target: usize, seen: &mut usize, with: &Value) -> bool {
    if *seen == target {
        *v = with.clone();
        return true;
    }
    *seen += 1;
    match v {
        Value::Array(items) => items.iter_mut().any(|i| replace_nth(i, target, seen, with)),
        Value::Object(map) => map.values_mut().any(|i| replace_nth(i, target, seen, with)),
        _ => false,
    }
}

fuzz_target!(|input: Input| {
    // Only tolerances the plan accepts ("must be 0 or more"; NaN is refused).
    if !(0.0..).contains(&input.tolerance) {
        return;
    }
    let rules = Rules {
        ignore: input.ignore.iter().map(|t| pattern(t)).collect(),
        tolerance: input.tolerance,
        arrays: input
            .arrays
            .iter()
            .map(|(t, mode)| {
                let mode = match mode {
                    Mode::Set => ArrayMode::Set,
                    Mode::Keyed(k) => ArrayMode::Keyed(k.text()),
                };
                (pattern(t), mode)
            })
            .collect(),
        headers: Vec::new(),
        numbers: if input.exact_numbers {
            Numbers::Exact
        } else {
            Numbers::Value
        },
    };
    let a = input.a.value(0);
    let b = match &input.b {
        Ok(edits) => {
            let mut b = a.clone();
            for (at, with) in edits {
                replace_nth(&mut b, usize::from(*at), &mut 0, &with.value(1));
            }
            b
        }
        Err(other) => other.value(0),
    };

    for doc in [&a, &b] {
        let same = diff_json(doc, doc, &rules);
        assert!(same.is_empty(), "{doc} against itself: {same:?}");
        assert!(json_patch(doc, doc).is_empty(), "{doc}");
    }
    diff_json(&a, &b, &rules);

    let ops = json_patch(&a, &b);
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops.clone()))
        .unwrap_or_else(|err| panic!("not an RFC 6902 patch: {err}: {ops:?}"));
    let mut patched = a.clone();
    json_patch::patch(&mut patched, &patch)
        .unwrap_or_else(|err| panic!("{ops:?} does not apply to {a}: {err}"));
    assert_eq!(patched, b, "{ops:?} applied to {a}");
    let ours = apply_patch(&a, &Value::Array(ops.clone()))
        .unwrap_or_else(|err| panic!("{ops:?} does not apply to {a} here: {err}"));
    assert_eq!(ours, b, "{ops:?} applied here to {a}");
});
