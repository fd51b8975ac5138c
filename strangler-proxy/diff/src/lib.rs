//! The diff engine: compares two HTTP answers (status, chosen headers, body) the way a
//! person would judge "the same answer". JSON bodies are compared structurally (object key
//! order ignored; arrays by index, as sets, or keyed by a field), other bodies line by line.
//! Every difference has a JSON Pointer path (RFC 6901) and a kind. Also makes RFC 6902
//! patches, for `strangler diff --format json-patch`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

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
    /// Arrays (compared by index) of different lengths.
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
    /// JSON Pointer into the body, or `(status)`, `(header NAME)`, `(body)` for the rest.
    pub path: String,
    pub kind: Kind,
    pub left: Option<Value>,
    pub right: Option<Value>,
}

/// Escapes one reference token (RFC 6901: `~` → `~0`, `/` → `~1`).
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// A path pattern: a JSON Pointer where `*` stands for any one token
/// (`/items/*/updated_at`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    tokens: Vec<String>,
}

impl PathPattern {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Ok(Self { tokens: Vec::new() });
        }
        let rest = raw
            .strip_prefix('/')
            .ok_or_else(|| format!("`{raw}` must be a JSON Pointer starting with /"))?;
        Ok(Self {
            tokens: rest.split('/').map(str::to_string).collect(),
        })
    }

    /// Whether a pointer (as its unescaped tokens) matches.
    fn matches(&self, tokens: &[String]) -> bool {
        self.tokens.len() == tokens.len()
            && self
                .tokens
                .iter()
                .zip(tokens)
                .all(|(p, t)| p == "*" || is_escaped_form(p, t))
    }
}

/// Whether `pattern` is `token` as [`escape`] writes it, without building that string: this
/// runs for every rule at every node of a compared document.
fn is_escaped_form(pattern: &str, token: &str) -> bool {
    let mut rest = pattern.as_bytes();
    for byte in token.as_bytes() {
        let escaped: &[u8] = match byte {
            b'~' => b"~0",
            b'/' => b"~1",
            other => std::slice::from_ref(other),
        };
        match rest.strip_prefix(escaped) {
            Some(after) => rest = after,
            None => return false,
        }
    }
    rest.is_empty()
}

/// How to compare the arrays at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArrayMode {
    /// Element by element (the default).
    Index,
    /// Order does not matter.
    Set,
    /// Elements are matched by the value of this field.
    Keyed(String),
}

/// Per-route comparison rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    /// Paths whose differences do not count.
    pub ignore: Vec<PathPattern>,
    /// Numbers closer than this are equal.
    pub tolerance: f64,
    /// Array comparison by path; unlisted arrays compare by index.
    pub arrays: Vec<(PathPattern, ArrayMode)>,
    /// Headers compared besides the status and body (lower-case).
    pub headers: Vec<String>,
}

impl Rules {
    pub fn with_default_headers() -> Self {
        Self {
            headers: vec!["content-type".to_string()],
            ..Self::default()
        }
    }

    fn ignored(&self, tokens: &[String]) -> bool {
        self.ignore.iter().any(|p| p.matches(tokens))
    }

    fn array_mode(&self, tokens: &[String]) -> &ArrayMode {
        self.arrays
            .iter()
            .find(|(p, _)| p.matches(tokens))
            .map_or(&ArrayMode::Index, |(_, m)| m)
    }
}

fn pointer(tokens: &[String]) -> String {
    tokens.iter().map(|t| format!("/{}", escape(t))).collect()
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

/// Structural differences between two JSON documents under `rules`.
pub fn diff_json(a: &Value, b: &Value, rules: &Rules) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut tokens = Vec::new();
    walk(a, b, rules, &mut tokens, &mut out);
    out
}

fn push(
    out: &mut Vec<Difference>,
    rules: &Rules,
    tokens: &[String],
    kind: Kind,
    left: Option<&Value>,
    right: Option<&Value>,
) {
    if !rules.ignored(tokens) {
        out.push(Difference {
            path: pointer(tokens),
            kind,
            left: left.cloned(),
            right: right.cloned(),
        });
    }
}

fn walk(a: &Value, b: &Value, rules: &Rules, tokens: &mut Vec<String>, out: &mut Vec<Difference>) {
    if rules.ignored(tokens) {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                tokens.push(k.clone());
                match y.get(k) {
                    Some(vb) => walk(va, vb, rules, tokens, out),
                    None => push(out, rules, tokens, Kind::Missing, Some(va), None),
                }
                tokens.pop();
            }
            for (k, vb) in y {
                if !x.contains_key(k) {
                    tokens.push(k.clone());
                    push(out, rules, tokens, Kind::Extra, None, Some(vb));
                    tokens.pop();
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => match rules.array_mode(tokens).clone() {
            ArrayMode::Index => {
                for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                    tokens.push(i.to_string());
                    walk(va, vb, rules, tokens, out);
                    tokens.pop();
                }
                if x.len() != y.len() {
                    push(
                        out,
                        rules,
                        tokens,
                        Kind::ArrayLength,
                        Some(&json!(x.len())),
                        Some(&json!(y.len())),
                    );
                }
            }
            ArrayMode::Set => {
                let canon = |v: &Value| canonical(v);
                let mut unmatched: Vec<Option<String>> = y.iter().map(|v| Some(canon(v))).collect();
                for (i, va) in x.iter().enumerate() {
                    let c = canon(va);
                    if let Some(slot) = unmatched
                        .iter_mut()
                        .find(|s| s.as_deref() == Some(c.as_str()))
                    {
                        *slot = None;
                    } else {
                        tokens.push(i.to_string());
                        push(out, rules, tokens, Kind::Missing, Some(va), None);
                        tokens.pop();
                    }
                }
                for (j, slot) in unmatched.iter().enumerate() {
                    if slot.is_some() {
                        tokens.push(j.to_string());
                        push(out, rules, tokens, Kind::Extra, None, Some(&y[j]));
                        tokens.pop();
                    }
                }
            }
            ArrayMode::Keyed(field) => {
                // Elements sharing a key pair up in order, and so do elements without one
                // (keyed as "", which no canonical text is), so equal arrays stay equal.
                let key = |v: &Value| v.get(&field).map(canonical).unwrap_or_default();
                let mut by_key: BTreeMap<String, std::collections::VecDeque<usize>> =
                    BTreeMap::new();
                for (j, v) in y.iter().enumerate() {
                    by_key.entry(key(v)).or_default().push_back(j);
                }
                let mut seen = vec![false; y.len()];
                for (i, va) in x.iter().enumerate() {
                    tokens.push(i.to_string());
                    match by_key.get_mut(&key(va)).and_then(|q| q.pop_front()) {
                        Some(j) => {
                            seen[j] = true;
                            walk(va, &y[j], rules, tokens, out);
                        }
                        None => push(out, rules, tokens, Kind::Missing, Some(va), None),
                    }
                    tokens.pop();
                }
                for (j, vb) in y.iter().enumerate() {
                    if !seen[j] {
                        tokens.push(j.to_string());
                        push(out, rules, tokens, Kind::Extra, None, Some(vb));
                        tokens.pop();
                    }
                }
            }
        },
        (Value::Number(x), Value::Number(y)) => {
            // Integers compare exactly (f64 would make 2^53 + 1 equal 2^53); floats with the
            // tolerance.
            let integers = (x.is_i64() || x.is_u64()) && (y.is_i64() || y.is_u64());
            let equal = if integers {
                x == y
                    || (rules.tolerance >= 1.0
                        && x.as_f64()
                            .zip(y.as_f64())
                            .is_some_and(|(p, q)| (p - q).abs() <= rules.tolerance))
            } else {
                match (x.as_f64(), y.as_f64()) {
                    (Some(p), Some(q)) => (p - q).abs() <= rules.tolerance,
                    _ => x == y,
                }
            };
            if !equal {
                push(out, rules, tokens, Kind::ValueChanged, Some(a), Some(b));
            }
        }
        _ if type_name(a) != type_name(b) => {
            push(out, rules, tokens, Kind::TypeChanged, Some(a), Some(b))
        }
        _ => {
            if a != b {
                push(out, rules, tokens, Kind::ValueChanged, Some(a), Some(b));
            }
        }
    }
}

/// A canonical text of a value (object keys sorted), for set and key comparison.
pub fn canonical(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, String> =
                map.iter().map(|(k, v)| (k, canonical(v))).collect();
            let inner: Vec<String> = sorted
                .iter()
                .map(|(k, v)| format!("{}:{v}", Value::String((*k).clone())))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
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

/// Bodies: structurally when both are JSON, otherwise line by line.
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
        _ if a == b => Vec::new(),
        _ => {
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
    }
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

/// An RFC 6902 patch that turns `a` into `b`.
pub fn json_patch(a: &Value, b: &Value) -> Vec<Value> {
    let mut ops = Vec::new();
    patch_walk(a, b, &mut Vec::new(), &mut ops);
    ops
}

fn patch_walk(a: &Value, b: &Value, tokens: &mut Vec<String>, ops: &mut Vec<Value>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                tokens.push(k.clone());
                match y.get(k) {
                    Some(vb) => patch_walk(va, vb, tokens, ops),
                    None => ops.push(json!({ "op": "remove", "path": pointer(tokens) })),
                }
                tokens.pop();
            }
            for (k, vb) in y {
                if !x.contains_key(k) {
                    tokens.push(k.clone());
                    ops.push(json!({ "op": "add", "path": pointer(tokens), "value": vb }));
                    tokens.pop();
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            let common = x.len().min(y.len());
            for i in 0..common {
                tokens.push(i.to_string());
                patch_walk(&x[i], &y[i], tokens, ops);
                tokens.pop();
            }
            // Remove from the end so earlier indices stay valid; then append.
            for i in (common..x.len()).rev() {
                tokens.push(i.to_string());
                ops.push(json!({ "op": "remove", "path": pointer(tokens) }));
                tokens.pop();
            }
            for (i, item) in y.iter().enumerate().skip(common) {
                tokens.push(i.to_string());
                ops.push(json!({ "op": "add", "path": pointer(tokens), "value": item }));
                tokens.pop();
            }
        }
        _ if a == b => {}
        _ => ops.push(json!({ "op": "replace", "path": pointer(tokens), "value": b })),
    }
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
                ("/tags".to_string(), Kind::ArrayLength),
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
    fn a_pattern_token_matches_the_escaped_form_of_a_key() {
        for (pattern, token, expected) in [
            ("updated_at", "updated_at", true),
            ("updated_at", "updated", false),
            ("updated", "updated_at", false),
            ("a~1b", "a/b", true),
            ("a~0b", "a~b", true),
            ("a/b", "a/b", false),
            ("a~1b", "a~1b", false),
            ("", "", true),
        ] {
            assert_eq!(
                is_escaped_form(pattern, token),
                expected,
                "{pattern} ~ {token}"
            );
            assert_eq!(
                is_escaped_form(pattern, token),
                pattern == escape(token),
                "agrees with escape for {token}"
            );
        }
    }
}
