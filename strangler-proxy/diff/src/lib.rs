//! The diff engine: compares two HTTP answers (status, chosen headers, body) the way a
//! person would judge "the same answer". JSON bodies are compared structurally (object key
//! order ignored; numbers by value; arrays aligned by a longest common subsequence, or as
//! sets, or keyed by a field), other bodies line by line. Every difference has a JSON
//! Pointer path (RFC 6901) and a kind. Also makes and applies RFC 6902 patches
//! (`strangler diff --format json-patch`).
//!
//! Layout: the comparison is here; [`path`] holds paths and rule patterns, `align` the
//! array alignment, [`patch`] JSON Patch, [`depth`] how deep a document may nest (up to
//! [`MAX_DEPTH`] levels) and where deep ones are handled, [`redact`] taking named values out
//! of a document before it is kept.
//!
//! Architecture invariant: pure functions; depends on nothing else of the toolkit.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value, json};

mod align;
pub mod depth;
pub mod patch;
pub mod path;
pub mod redact;

pub use depth::{MAX_DEPTH, SHOWN_DEPTH};
pub use patch::{PatchError, apply_patch, equal_by_value, json_patch};
pub use path::{PathPattern, escape};

use align::{Hashes, Step, integer, integral};
use path::{Token, pointer};

/// What kind of difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Same type, other value.
    ValueChanged,
    /// Another JSON type (a number where a string was).
    TypeChanged,
    /// In the first answer, not in the second.
    Missing,
    /// In the second answer, not in the first.
    Extra,
    /// Arrays of different lengths. No longer made (arrays are aligned, so a length
    /// difference is each missing or extra element); kept so that results recorded by an
    /// earlier version still read.
    ArrayLength,
}

impl Kind {
    /// The machine name (as serialized): `value_changed`, `type_changed`, …
    pub fn code(self) -> &'static str {
        match self {
            Kind::ValueChanged => "value_changed",
            Kind::TypeChanged => "type_changed",
            Kind::Missing => "missing",
            Kind::Extra => "extra",
            Kind::ArrayLength => "array_length",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::ValueChanged => "value changed",
            Kind::TypeChanged => "type changed",
            Kind::Missing => "missing",
            Kind::Extra => "extra",
            Kind::ArrayLength => "array length",
        })
    }
}

/// One difference between two answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    /// JSON Pointer into the body, or `(status)`, `(header NAME)`, `(body line N)` for the
    /// rest. An element of an aligned array is named by its index in the answer that has
    /// it: the first's for `missing` and changes, the second's for `extra`.
    pub path: String,
    pub kind: Kind,
    /// The values, shown at most [`SHOWN_DEPTH`] levels deep.
    pub left: Option<Value>,
    pub right: Option<Value>,
}

/// How to compare the arrays at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArrayMode {
    /// In order, aligned by a longest common subsequence (the default): an element
    /// inserted or removed is one difference.
    Index,
    /// Order does not matter.
    Set,
    /// Elements are matched by the value of this field.
    Keyed(String),
}

/// How numbers compare.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Numbers {
    /// By value, as RFC 6902's `test` does: `1` equals `1.0` (and `1e0`), within the
    /// rules' tolerance.
    #[default]
    Value,
    /// By representation: an integer never equals a float (`1` is not `1.0`), floats are
    /// equal only when they are the same double (so `1.0` and `1.00` still are), and no
    /// tolerance applies.
    Exact,
}

/// Per-route comparison rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    /// Paths whose differences do not count.
    pub ignore: Vec<PathPattern>,
    /// Numbers closer than this are equal (by value only).
    pub tolerance: f64,
    /// Array comparison by path; unlisted arrays are aligned in order.
    pub arrays: Vec<(PathPattern, ArrayMode)>,
    /// Headers compared besides the status and body (lower-case).
    pub headers: Vec<String>,
    pub numbers: Numbers,
}

impl Rules {
    pub fn with_default_headers() -> Self {
        Self {
            headers: vec!["content-type".to_string()],
            ..Self::default()
        }
    }

    fn array_mode(&self, tokens: &[Token<'_>]) -> &ArrayMode {
        self.arrays
            .iter()
            .find(|(p, _)| p.matches(tokens))
            .map_or(&ArrayMode::Index, |(_, m)| m)
    }
}

impl align::Ignore for Rules {
    fn ignored(&self, tokens: &[Token<'_>]) -> bool {
        self.ignore.iter().any(|p| p.matches(tokens))
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether two numbers have the same value (`1`, `1.0` and `1e0` do). Integers compare
/// exactly (as f64, 2^53 + 1 would equal 2^53).
pub fn numbers_equal_by_value(x: &Number, y: &Number) -> bool {
    match (integer(x), integer(y)) {
        (Some(p), Some(q)) => p == q,
        (Some(i), None) | (None, Some(i)) => {
            let f = if integer(x).is_some() { y } else { x };
            f.as_f64().and_then(integral) == Some(i)
        }
        (None, None) => x.as_f64() == y.as_f64(),
    }
}

fn numbers_equal(x: &Number, y: &Number, rules: &Rules) -> bool {
    if rules.numbers == Numbers::Exact {
        return x == y;
    }
    if numbers_equal_by_value(x, y) {
        return true;
    }
    if rules.tolerance <= 0.0 {
        return false;
    }
    match (integer(x), integer(y)) {
        // Integers differ by 1 at least; their distance is exact in i128.
        (Some(p), Some(q)) => {
            rules.tolerance >= 1.0 && (p - q).unsigned_abs() as f64 <= rules.tolerance
        }
        _ => match (x.as_f64(), y.as_f64()) {
            (Some(p), Some(q)) => (p - q).abs() <= rules.tolerance,
            _ => false,
        },
    }
}

/// Structural differences between two JSON documents under `rules`. Recurses once per level
/// of nesting: for documents deeper than 128 levels, see [`depth`].
pub fn diff_json(a: &Value, b: &Value, rules: &Rules) -> Vec<Difference> {
    diff_json_with(a, b, rules, true)
}

/// [`diff_json`], with or without the alignment's equality shortcuts (without: deeply
/// nested documents, see `align`).
fn diff_json_with(a: &Value, b: &Value, rules: &Rules, shortcuts: bool) -> Vec<Difference> {
    let mut walk = Walk {
        rules,
        tokens: Vec::new(),
        out: Vec::new(),
        hashes: None,
        shortcuts,
    };
    walk.walk(a, b);
    walk.out
}

/// A comparison in progress.
struct Walk<'r, 'a> {
    rules: &'r Rules,
    /// Where it is.
    tokens: Vec<Token<'a>>,
    out: Vec<Difference>,
    /// Array element hashes, made when the first array needs aligning.
    hashes: Option<Hashes>,
    /// See `align::Hashes`.
    shortcuts: bool,
}

impl<'a> Walk<'_, 'a> {
    fn ignored(&self) -> bool {
        align::Ignore::ignored(self.rules, &self.tokens)
    }

    fn push(&mut self, kind: Kind, left: Option<&Value>, right: Option<&Value>) {
        if !self.ignored() {
            self.out.push(Difference {
                path: pointer(&self.tokens),
                kind,
                left: left.map(depth::shown),
                right: right.map(depth::shown),
            });
        }
    }

    /// [`Walk::push`] at `token` below where the walk is.
    fn push_at(
        &mut self,
        token: Token<'a>,
        kind: Kind,
        left: Option<&Value>,
        right: Option<&Value>,
    ) {
        self.tokens.push(token);
        self.push(kind, left, right);
        self.tokens.pop();
    }

    fn walk_at(&mut self, token: Token<'a>, a: &'a Value, b: &'a Value) {
        self.tokens.push(token);
        self.walk(a, b);
        self.tokens.pop();
    }

    fn walk(&mut self, a: &'a Value, b: &'a Value) {
        if self.ignored() {
            return;
        }
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for (k, va) in x {
                    match y.get(k) {
                        Some(vb) => self.walk_at(Token::Key(k), va, vb),
                        None => self.push_at(Token::Key(k), Kind::Missing, Some(va), None),
                    }
                }
                for (k, vb) in y {
                    if !x.contains_key(k) {
                        self.push_at(Token::Key(k), Kind::Extra, None, Some(vb));
                    }
                }
            }
            (Value::Array(x), Value::Array(y)) => match self.rules.array_mode(&self.tokens).clone()
            {
                ArrayMode::Index => self.aligned(x, y),
                ArrayMode::Set => self.as_set(x, y),
                ArrayMode::Keyed(field) => self.keyed(x, y, &field),
            },
            (Value::Number(x), Value::Number(y)) => {
                if !numbers_equal(x, y, self.rules) {
                    self.push(Kind::ValueChanged, Some(a), Some(b));
                }
            }
            _ if type_name(a) != type_name(b) => self.push(Kind::TypeChanged, Some(a), Some(b)),
            _ => {
                if a != b {
                    self.push(Kind::ValueChanged, Some(a), Some(b));
                }
            }
        }
    }

    /// Arrays in order: aligned, so an inserted or removed element is one difference.
    fn aligned(&mut self, x: &'a [Value], y: &'a [Value]) {
        let (rules, numbers, shortcuts) = (self.rules, self.rules.numbers, self.shortcuts);
        let hashes = self.hashes.get_or_insert_with(|| Hashes::new(shortcuts));
        let steps = hashes.align(x, y, &mut self.tokens, numbers, rules);
        for step in steps {
            match step {
                Step::Pair { same: true, .. } => {}
                Step::Pair { i, j, same: false } => self.walk_at(Token::Index(i), &x[i], &y[j]),
                Step::Missing(i) => self.push_at(Token::Index(i), Kind::Missing, Some(&x[i]), None),
                Step::Extra(j) => self.push_at(Token::Index(j), Kind::Extra, None, Some(&y[j])),
            }
        }
    }

    /// Arrays whose order does not matter.
    fn as_set(&mut self, x: &'a [Value], y: &'a [Value]) {
        let numbers = self.rules.numbers;
        let mut unmatched: Vec<Option<String>> =
            y.iter().map(|v| Some(canonical_in(v, numbers))).collect();
        for (i, va) in x.iter().enumerate() {
            let c = canonical_in(va, numbers);
            if let Some(slot) = unmatched
                .iter_mut()
                .find(|s| s.as_deref() == Some(c.as_str()))
            {
                *slot = None;
            } else {
                self.push_at(Token::Index(i), Kind::Missing, Some(va), None);
            }
        }
        for (j, slot) in unmatched.iter().enumerate() {
            if slot.is_some() {
                self.push_at(Token::Index(j), Kind::Extra, None, Some(&y[j]));
            }
        }
    }

    /// Arrays whose elements pair up by a field.
    fn keyed(&mut self, x: &'a [Value], y: &'a [Value], field: &str) {
        // Elements sharing a key pair up in order, and so do elements without one (keyed as
        // "", which no canonical text is), so equal arrays stay equal.
        let numbers = self.rules.numbers;
        let key = |v: &Value| {
            v.get(field)
                .map(|k| canonical_in(k, numbers))
                .unwrap_or_default()
        };
        let mut by_key: BTreeMap<String, std::collections::VecDeque<usize>> = BTreeMap::new();
        for (j, v) in y.iter().enumerate() {
            by_key.entry(key(v)).or_default().push_back(j);
        }
        let mut seen = vec![false; y.len()];
        for (i, va) in x.iter().enumerate() {
            match by_key.get_mut(&key(va)).and_then(|q| q.pop_front()) {
                Some(j) => {
                    seen[j] = true;
                    self.walk_at(Token::Index(i), va, &y[j]);
                }
                None => self.push_at(Token::Index(i), Kind::Missing, Some(va), None),
            }
        }
        for (j, vb) in y.iter().enumerate() {
            if !seen[j] {
                self.push_at(Token::Index(j), Kind::Extra, None, Some(vb));
            }
        }
    }
}

/// A canonical text of a value (object keys sorted, numbers by value: `1.0` is `1`), for
/// set and key comparison.
pub fn canonical(v: &Value) -> String {
    canonical_in(v, Numbers::Value)
}

fn canonical_in(v: &Value, numbers: Numbers) -> String {
    match v {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, String> = map
                .iter()
                .map(|(k, v)| (k, canonical_in(v, numbers)))
                .collect();
            let inner: Vec<String> = sorted
                .iter()
                .map(|(k, v)| format!("{}:{v}", Value::String((*k).clone())))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|v| canonical_in(v, numbers))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Value::Number(n) if numbers == Numbers::Value && integer(n).is_none() => {
            match n.as_f64().and_then(integral) {
                Some(i) => i.to_string(),
                None => n.to_string(),
            }
        }
        other => other.to_string(),
    }
}

/// An HTTP answer as compared: status, headers (lower-case names) and the decoded body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Shared with the answer it was captured from: comparing copies no body.
    pub body: bytes::Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Largest decoded body compared; a compressed body that inflates beyond is compared as is.
const MAX_DECODED: u64 = 16 << 20;

/// The body as its `content-encoding` (gzip, deflate, br) says to read it; unknown or broken
/// encodings are compared as they came.
pub fn decoded(answer: &Answer) -> std::borrow::Cow<'_, [u8]> {
    use std::io::Read;
    let encoding = answer
        .header("content-encoding")
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let mut out = Vec::new();
    let read = match encoding.as_str() {
        "gzip" | "x-gzip" => flate2::read::MultiGzDecoder::new(&answer.body[..])
            .take(MAX_DECODED + 1)
            .read_to_end(&mut out),
        "deflate" => flate2::read::ZlibDecoder::new(&answer.body[..])
            .take(MAX_DECODED + 1)
            .read_to_end(&mut out),
        "br" => brotli_decompressor::Decompressor::new(&answer.body[..], 4096)
            .take(MAX_DECODED + 1)
            .read_to_end(&mut out),
        _ => return std::borrow::Cow::Borrowed(&answer.body[..]),
    };
    match read {
        // Over the cap the prefix would hide a difference in the tail: compare as it came.
        Ok(n) if n as u64 <= MAX_DECODED => std::borrow::Cow::Owned(out),
        _ => std::borrow::Cow::Borrowed(&answer.body[..]),
    }
}

/// Whether two answers are the same in everything `compare` looks at, judged without parsing
/// anything: the same status, the same values of the rule's headers, and the same body bytes
/// under the same `content-encoding`. Most shadowed answers are, so this is the fast path:
/// when it says `true`, `compare` finds no difference.
pub fn identical(a: &Answer, b: &Answer, rules: &Rules) -> bool {
    a.status == b.status
        && rules
            .headers
            .iter()
            .all(|name| a.header(name) == b.header(name))
        && a.header("content-encoding") == b.header("content-encoding")
        && a.body == b.body
}

/// Differences between two answers: status, the rule's headers, and the bodies (decoded
/// first, so a compressed and a plain answer with the same content are the same).
pub fn compare(a: &Answer, b: &Answer, rules: &Rules) -> Vec<Difference> {
    if identical(a, b, rules) {
        return Vec::new();
    }
    let mut out = Vec::new();
    if a.status != b.status {
        out.push(Difference {
            path: "(status)".to_string(),
            kind: Kind::ValueChanged,
            left: Some(json!(a.status)),
            right: Some(json!(b.status)),
        });
    }
    for name in &rules.headers {
        let (x, y) = (a.header(name), b.header(name));
        if x != y {
            out.push(Difference {
                path: format!("(header {name})"),
                kind: match (x, y) {
                    (Some(_), None) => Kind::Missing,
                    (None, Some(_)) => Kind::Extra,
                    _ => Kind::ValueChanged,
                },
                left: x.map(|v| json!(v)),
                right: y.map(|v| json!(v)),
            });
        }
    }
    out.extend(diff_bodies(&decoded(a), &decoded(b), rules));
    out
}

/// Bodies: structurally when both are JSON (up to [`MAX_DEPTH`] levels deep), otherwise
/// line by line.
pub fn diff_bodies(a: &[u8], b: &[u8], rules: &Rules) -> Vec<Difference> {
    // The same bytes parse to the same document: nothing to walk.
    if a == b {
        return Vec::new();
    }
    match (
        serde_json::from_slice::<Value>(a),
        serde_json::from_slice::<Value>(b),
    ) {
        (Ok(x), Ok(y)) => diff_json(&x, &y, rules),
        // Nested deeper than serde_json's default: parsed and compared where the stack
        // holds it. A document deeper than MAX_DEPTH is not JSON here: compared as text.
        (x, y)
            if x.as_ref().err().is_some_and(depth::over_default_limit)
                || y.as_ref().err().is_some_and(depth::over_default_limit) =>
        {
            let deep = depth::with_deep_stack(|| match (depth::parse(a), depth::parse(b)) {
                (Ok(x), Ok(y)) => Some(diff_json_with(&x, &y, rules, false)),
                _ => None,
            });
            deep.flatten().unwrap_or_else(|| diff_lines(a, b))
        }
        _ => diff_lines(a, b),
    }
}

/// Bodies line by line.
fn diff_lines(a: &[u8], b: &[u8]) -> Vec<Difference> {
    let (x, y) = (String::from_utf8_lossy(a), String::from_utf8_lossy(b));
    let text = similar::TextDiff::configure()
        .timeout(std::time::Duration::from_secs(1))
        .diff_lines(x.as_ref(), y.as_ref());
    // Split once: slicing per change keeps the whole walk linear.
    let (xl, yl): (Vec<&str>, Vec<&str>) = (x.lines().collect(), y.lines().collect());
    text.ops()
        .iter()
        .filter(|op| op.tag() != similar::DiffTag::Equal)
        .map(|op| {
            let old = op.old_range();
            let new = op.new_range();
            let lines = |all: &[&str], r: std::ops::Range<usize>| {
                all.get(r).map(|l| l.join("\n")).unwrap_or_default()
            };
            let kind = match op.tag() {
                similar::DiffTag::Delete => Kind::Missing,
                similar::DiffTag::Insert => Kind::Extra,
                _ => Kind::ValueChanged,
            };
            Difference {
                path: format!("(body line {})", old.start + 1),
                kind,
                left: (!old.is_empty()).then(|| json!(lines(&xl, old.clone()))),
                right: (!new.is_empty()).then(|| json!(lines(&yl, new.clone()))),
            }
        })
        .collect()
}

/// The grouping key of a path: array indices become `*`, so the same field of every element
/// counts as one place.
pub fn group_path(path: &str) -> String {
    if !path.starts_with('/') {
        return path.to_string();
    }
    path.split('/')
        .skip(1)
        .map(|t| {
            if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
                "*"
            } else {
                t
            }
        })
        .fold(String::new(), |mut acc, t| {
            acc.push('/');
            acc.push_str(t);
            acc
        })
}

/// A readable listing of differences, one per line.
pub fn render_text(diffs: &[Difference]) -> String {
    let show = |v: &Option<Value>| v.as_ref().map_or_else(String::new, |v| v.to_string());
    diffs
        .iter()
        .map(|d| match d.kind {
            Kind::Missing => format!("- {}: {}", d.path, show(&d.left)),
            Kind::Extra => format!("+ {}: {}", d.path, show(&d.right)),
            _ => format!(
                "~ {} ({}): {} → {}",
                d.path,
                d.kind,
                show(&d.left),
                show(&d.right)
            ),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structural_differences_have_pointers_and_kinds() {
        let a = json!({ "id": 1, "name": "Ada", "tags": ["a", "b"], "a/b": { "m~n": 1 }, "gone": true });
        let b =
            json!({ "name": "Ada L", "id": "1", "tags": ["a"], "a/b": { "m~n": 2 }, "new": null });
        let mut got: Vec<(String, Kind)> = diff_json(&a, &b, &Rules::default())
            .into_iter()
            .map(|d| (d.path, d.kind))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("/a~1b/m~0n".to_string(), Kind::ValueChanged),
                ("/gone".to_string(), Kind::Missing),
                ("/id".to_string(), Kind::TypeChanged),
                ("/name".to_string(), Kind::ValueChanged),
                ("/new".to_string(), Kind::Extra),
                ("/tags/1".to_string(), Kind::Missing),
            ]
        );
    }

    #[test]
    fn rules_ignore_tolerate_and_compare_arrays_as_sets_or_by_key() {
        let rules = Rules {
            ignore: vec![PathPattern::parse("/items/*/updated_at").unwrap()],
            tolerance: 0.01,
            arrays: vec![
                (PathPattern::parse("/tags").unwrap(), ArrayMode::Set),
                (
                    PathPattern::parse("/items").unwrap(),
                    ArrayMode::Keyed("id".into()),
                ),
            ],
            headers: Vec::new(),
            numbers: Numbers::Value,
        };
        let a = json!({ "tags": ["x", "y"], "price": 1.000, "items": [
            { "id": 1, "v": "a", "updated_at": "t1" }, { "id": 2, "v": "b", "updated_at": "t2" } ] });
        let b = json!({ "tags": ["y", "x"], "price": 1.004, "items": [
            { "id": 2, "v": "b", "updated_at": "t9" }, { "id": 1, "v": "a", "updated_at": "t8" } ] });
        assert_eq!(diff_json(&a, &b, &rules), []);
        let c = json!({ "tags": ["y", "z"], "price": 1.5, "items": [{ "id": 1, "v": "A", "updated_at": "t" }] });
        let got: Vec<(String, Kind)> = diff_json(&a, &c, &rules)
            .into_iter()
            .map(|d| (d.path, d.kind))
            .collect();
        assert!(got.contains(&("/tags/0".into(), Kind::Missing)), "{got:?}");
        assert!(got.contains(&("/tags/1".into(), Kind::Extra)), "{got:?}");
        assert!(
            got.contains(&("/price".into(), Kind::ValueChanged)),
            "{got:?}"
        );
        assert!(
            got.contains(&("/items/0/v".into(), Kind::ValueChanged)),
            "{got:?}"
        );
        assert!(got.contains(&("/items/1".into(), Kind::Missing)), "{got:?}");
    }

    #[test]
    fn answers_compare_status_headers_and_text_bodies() {
        let a = Answer {
            status: 200,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: b"one\ntwo\n".to_vec().into(),
        };
        let b = Answer {
            status: 201,
            headers: vec![("content-type".into(), "text/html".into())],
            body: b"one\n2\n".to_vec().into(),
        };
        let got: Vec<String> = compare(&a, &b, &Rules::with_default_headers())
            .into_iter()
            .map(|d| d.path)
            .collect();
        assert_eq!(got, ["(status)", "(header content-type)", "(body line 2)"]);
    }

    #[test]
    fn compressed_bodies_are_compared_decoded() {
        use std::io::Write;
        let plain = br#"{"name":"Ada","n":1}"#.to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(br#"{"n":1,"name":"Ada"}"#).unwrap();
        let gzipped = Answer {
            status: 200,
            headers: vec![("content-encoding".into(), "gzip".into())],
            body: gz.finish().unwrap().into(),
        };
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(br#"{"name":"Ada","n":2}"#).unwrap();
        let deflated = Answer {
            status: 200,
            headers: vec![("content-encoding".into(), "deflate".into())],
            body: z.finish().unwrap().into(),
        };
        let plain = Answer {
            status: 200,
            headers: vec![],
            body: plain.into(),
        };
        let rules = Rules::default();
        assert_eq!(compare(&plain, &gzipped, &rules), []);
        let got: Vec<String> = compare(&plain, &deflated, &rules)
            .into_iter()
            .map(|d| d.path)
            .collect();
        assert_eq!(got, ["/n"]);
        // A brotli stream of `{"name":"Ada","n":1}` (made with the reference encoder, quality 5).
        let br: &[u8] = &[
            0x8b, 0x09, 0x80, 0x7b, 0x22, 0x6e, 0x61, 0x6d, 0x65, 0x22, 0x3a, 0x22, 0x41, 0x64,
            0x61, 0x22, 0x2c, 0x22, 0x6e, 0x22, 0x3a, 0x31, 0x7d, 0x03,
        ];
        let brotli = Answer {
            status: 200,
            headers: vec![("content-encoding".into(), "br".into())],
            body: br.to_vec().into(),
        };
        assert_eq!(decoded(&brotli).as_ref(), br#"{"name":"Ada","n":1}"#);
        let broken = Answer {
            status: 200,
            headers: vec![("content-encoding".into(), "gzip".into())],
            body: b"nope".to_vec().into(),
        };
        assert_eq!(decoded(&broken).as_ref(), b"nope");
    }

    #[test]
    fn keyed_arrays_pair_duplicate_keys_in_order() {
        let rules = Rules {
            arrays: vec![(
                PathPattern::parse("/items").unwrap(),
                ArrayMode::Keyed("id".into()),
            )],
            ..Rules::default()
        };
        let a = json!({ "items": [{ "id": 1, "v": "a" }, { "id": 1, "v": "b" }, { "id": 2 }] });
        let b = json!({ "items": [{ "id": 2 }, { "id": 1, "v": "a" }, { "id": 1, "v": "b" }] });
        assert_eq!(diff_json(&a, &b, &rules), []);
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/diff.rs`): elements without the key field were
    /// never paired, so an array compared with itself showed each as missing and extra.
    #[test]
    fn keyed_arrays_pair_elements_without_the_key_in_order() {
        let rules = Rules {
            arrays: vec![(PathPattern::parse("").unwrap(), ArrayMode::Keyed("".into()))],
            ..Rules::default()
        };
        let a = json!([null]);
        assert_eq!(diff_json(&a, &a, &rules), []);

        let rules = Rules {
            arrays: vec![(
                PathPattern::parse("/items").unwrap(),
                ArrayMode::Keyed("id".into()),
            )],
            ..Rules::default()
        };
        let a = json!({ "items": [{ "v": 1 }, { "id": 1 }, "x"] });
        assert_eq!(diff_json(&a, &a, &rules), []);
        let b = json!({ "items": [{ "id": 1 }, { "v": 2 }, "x"] });
        let got: Vec<(String, Kind)> = diff_json(&a, &b, &rules)
            .into_iter()
            .map(|d| (d.path, d.kind))
            .collect();
        assert_eq!(got, [("/items/0/v".to_string(), Kind::ValueChanged)]);
    }

    #[test]
    fn large_integers_compare_exactly() {
        let a = json!({ "id": 9_007_199_254_740_993u64 });
        let b = json!({ "id": 9_007_199_254_740_992u64 });
        assert_eq!(diff_json(&a, &b, &Rules::default()).len(), 1);
    }

    #[test]
    fn group_paths_fold_indices() {
        assert_eq!(group_path("/items/3/name"), "/items/*/name");
        assert_eq!(group_path("(status)"), "(status)");
    }

    #[test]
    fn identical_answers_are_recognised_without_parsing_and_compare_equal() {
        let rules = Rules::with_default_headers();
        let a = Answer {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: br#"{"id": 1, "tags": [1, 2]}"#.to_vec().into(),
        };
        assert!(identical(&a, &a.clone(), &rules));
        assert!(compare(&a, &a.clone(), &rules).is_empty());
        // Any of status, a compared header, the encoding or a byte makes it a real compare.
        let mut b = a.clone();
        b.status = 201;
        assert!(!identical(&a, &b, &rules));
        let mut b = a.clone();
        b.headers[0].1 = "text/plain".into();
        assert!(!identical(&a, &b, &rules));
        let mut b = a.clone();
        b.headers.push(("content-encoding".into(), "gzip".into()));
        assert!(!identical(&a, &b, &rules));
        let mut b = a.clone();
        b.body = br#"{"id":1,"tags":[1,2]}"#.to_vec().into();
        assert!(!identical(&a, &b, &rules), "same document, other bytes");
        assert!(compare(&a, &b, &rules).is_empty(), "but no difference");
        // A header the rules do not compare does not matter.
        let mut b = a.clone();
        b.headers.push(("date".into(), "now".into()));
        assert!(identical(&a, &b, &rules));
    }

    #[test]
    fn one_inserted_or_removed_element_is_one_difference() {
        let rules = Rules::default();
        let a = json!({ "items": [{ "id": 1 }, { "id": 2 }, { "id": 3 }, { "id": 4 }] });
        let mut b = a.clone();
        b["items"]
            .as_array_mut()
            .unwrap()
            .insert(1, json!({ "id": 9 }));
        let got: Vec<(String, Kind)> = diff_json(&a, &b, &rules)
            .into_iter()
            .map(|d| (d.path, d.kind))
            .collect();
        assert_eq!(got, [("/items/1".to_string(), Kind::Extra)]);
        let got: Vec<(String, Kind)> = diff_json(&b, &a, &rules)
            .into_iter()
            .map(|d| (d.path, d.kind))
            .collect();
        assert_eq!(got, [("/items/1".to_string(), Kind::Missing)]);
        // A change in place is still named inside the element.
        let mut c = a.clone();
        c["items"][2]["id"] = json!(30);
        let got: Vec<String> = diff_json(&a, &c, &rules)
            .into_iter()
            .map(|d| d.path)
            .collect();
        assert_eq!(got, ["/items/2/id"]);
    }

    #[test]
    fn changes_in_place_among_identical_elements_stay_in_place() {
        let one = json!({ "name": "Ada", "points": 1 });
        let a = json!(vec![one; 40]);
        let mut b = a.clone();
        b[3]["name"] = json!("Ada L.");
        b[17]["points"] = json!(2);
        b[30]["name"] = json!("Bo");
        let got: Vec<String> = diff_json(&a, &b, &Rules::default())
            .into_iter()
            .map(|d| d.path)
            .collect();
        assert_eq!(got, ["/3/name", "/17/points", "/30/name"]);
    }

    #[test]
    fn elements_that_differ_only_where_nothing_counts_still_line_up() {
        let rules = Rules {
            ignore: vec![PathPattern::parse("/*/at").unwrap()],
            ..Rules::default()
        };
        let a = json!([{ "id": 1, "at": "t1" }, { "id": 2, "at": "t2" }]);
        let b = json!([{ "id": 0, "at": "u0" }, { "id": 1, "at": "u1" }, { "id": 2, "at": "u2" }]);
        let got: Vec<(String, Kind)> = diff_json(&a, &b, &rules)
            .into_iter()
            .map(|d| (d.path, d.kind))
            .collect();
        assert_eq!(got, [("/0".to_string(), Kind::Extra)]);
    }

    #[test]
    fn numbers_compare_by_value_unless_the_rules_ask_for_exact() {
        let a: Value =
            serde_json::from_str(r#"{"n": 1, "f": 2.5, "big": 1e2, "list": [1, 2]}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"n": 1.0, "f": 2.50, "big": 100, "list": [1.0, 2]}"#).unwrap();
        assert_eq!(diff_json(&a, &b, &Rules::default()), []);
        let exact = Rules {
            numbers: Numbers::Exact,
            ..Rules::default()
        };
        let mut got: Vec<String> = diff_json(&a, &b, &exact)
            .into_iter()
            .map(|d| d.path)
            .collect();
        got.sort();
        assert_eq!(got, ["/big", "/list/0", "/n"]);
        // Sets and keys read numbers the same way.
        let sets = Rules {
            arrays: vec![(PathPattern::parse("/list").unwrap(), ArrayMode::Set)],
            ..Rules::default()
        };
        assert_eq!(diff_json(&a, &b, &sets), []);
        assert!(numbers_equal_by_value(
            &Number::from(3),
            &Number::from_f64(3.0).unwrap()
        ));
        assert!(!numbers_equal_by_value(
            &Number::from(9_007_199_254_740_993u64),
            &Number::from_f64(9_007_199_254_740_992.0).unwrap()
        ));
    }

    fn nested(levels: usize, leaf: &str) -> String {
        format!("{}{leaf}{}", "[".repeat(levels), "]".repeat(levels))
    }

    /// Documents up to MAX_DEPTH levels are compared structurally on any thread (this test's
    /// has the default 2 MiB stack); what comes back is shallow.
    #[test]
    fn deeply_nested_documents_are_compared_without_overflowing_a_stack() {
        let rules = Rules::default();
        for levels in [200, 1_000, MAX_DEPTH] {
            let (a, b) = (nested(levels, "1"), nested(levels, "2"));
            let got = std::thread::spawn(move || {
                diff_bodies(a.as_bytes(), b.as_bytes(), &Rules::default())
            })
            .join()
            .unwrap();
            assert_eq!(got.len(), 1, "{levels} levels");
            assert_eq!(got[0].path, "/0".repeat(levels), "{levels} levels");
            assert_eq!(got[0].kind, Kind::ValueChanged);
            let same = nested(levels, "1.0");
            assert_eq!(
                diff_bodies(nested(levels, "1").as_bytes(), same.as_bytes(), &rules),
                [],
                "{levels} levels, numbers by value"
            );
        }
        // A difference near the top shows its values no deeper than SHOWN_DEPTH.
        let a = nested(1_000, "1");
        let got = diff_bodies(format!("[{a}]").as_bytes(), b"[1]", &rules);
        assert_eq!(got[0].kind, Kind::TypeChanged);
        let shown = got[0].left.as_ref().unwrap().to_string();
        assert!(shown.contains("nested deeper than 64 levels"), "{shown}");
        assert!(serde_json::from_str::<Value>(&serde_json::to_string(&got).unwrap()).is_ok());
    }

    /// Past MAX_DEPTH (100,000 levels here) a body is not JSON to the engine: it is compared
    /// as text, which recurses on nothing.
    #[test]
    fn past_the_bound_a_document_is_compared_as_text() {
        let (a, b) = (nested(100_000, "1"), nested(100_000, "2"));
        let got =
            std::thread::spawn(move || diff_bodies(a.as_bytes(), b.as_bytes(), &Rules::default()))
                .join()
                .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].path, "(body line 1)");
        assert_eq!(
            depth::parse(nested(100_000, "1").as_bytes()),
            Err(depth::JsonError::TooDeep)
        );
    }
}
