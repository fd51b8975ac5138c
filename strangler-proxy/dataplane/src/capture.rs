//! Capture: a mismatching exchange kept whole for replay (a route's `capture` section):
//! the request (method, URI, headers, body), both answers and the differences, with what
//! `capture.redact` names taken out before it leaves the comparer thread.
//!
//! A [`Case`] is built on the comparer thread, off the client's path, and only for a
//! comparison that found differences on a route that captures; a route without `capture`
//! costs nothing (no copy of the request headers, no allocation). The recorder stores it
//! (bounded per differing path and per route, oldest evicted first); `strangler capture
//! export` writes each as a file, and `strangler replay` reads them back ([`Case`] is that
//! file's shape).

use std::sync::Arc;

use http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use strangler_diff::redact::{REDACTED, redact, redact_at};
use strangler_diff::{self as diff, Answer, Difference, Kind, PathPattern};
use strangler_plan::{CaptureSpec, Redaction};

/// A route's `capture` section, compiled once per route table.
#[derive(Debug)]
pub struct Capturing {
    /// Cases kept per differing path.
    pub per_path: usize,
    /// Header names (lower-case) dropped from the request and both answers.
    headers: Vec<String>,
    /// Query parameters whose values are replaced.
    query: Vec<String>,
    /// Places in JSON bodies whose values are replaced.
    body: Vec<PathPattern>,
    /// The section's `redact` entries, as the case lists them.
    listed: Vec<String>,
}

impl Capturing {
    pub fn new(spec: &CaptureSpec) -> Arc<Self> {
        let mut capturing = Capturing {
            per_path: spec.mismatches,
            headers: Vec::new(),
            query: Vec::new(),
            body: Vec::new(),
            listed: spec.redact.iter().map(ToString::to_string).collect(),
        };
        for r in &spec.redact {
            match r {
                Redaction::Header(name) => capturing.headers.push(name.clone()),
                Redaction::Query(name) => capturing.query.push(name.clone()),
                // The plan checked every pattern.
                Redaction::Body(pattern) => capturing.body.extend(PathPattern::parse(pattern).ok()),
            }
        }
        Arc::new(capturing)
    }
}

/// A captured case, as stored and as `strangler capture export` writes it: one JSON file,
/// keys in this order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    pub route: String,
    /// The request id the proxy gave (or kept for) the request.
    pub request_id: String,
    /// The differing path (group) it was kept for.
    pub path: String,
    pub request: Request,
    /// The monolith's answer.
    pub legacy: Exchange,
    /// The new service's answer.
    pub new: Exchange,
    /// What differed, the monolith's side on the left.
    pub differences: Vec<Difference>,
    /// What `capture.redact` took out, as the plan lists it.
    #[serde(default)]
    pub redacted: Vec<String>,
}

/// The request of a case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent to the services.
    pub uri: String,
    /// As forwarded, less hop-by-hop headers and the shadow marks.
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

/// One side's answer in a case: its body decoded (no `content-encoding`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

/// A body: text when it is UTF-8 (readable in a pull request), base64 when not; an
/// exported case shows a JSON body as the document itself ([`Body::readable`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    #[default]
    Empty,
    Text(String),
    Base64(String),
    /// A JSON document, sent back as its compact text (keys sorted).
    Json(Value),
}

impl Body {
    pub fn from_bytes(bytes: &[u8]) -> Self {
        if bytes.is_empty() {
            return Body::Empty;
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => Body::Text(text.to_string()),
            Err(_) => Body::Base64(base64_encode(bytes)),
        }
    }

    /// The bytes; `None` for base64 that does not decode.
    pub fn to_bytes(&self) -> Option<Vec<u8>> {
        match self {
            Body::Empty => Some(Vec::new()),
            Body::Text(text) => Some(text.as_bytes().to_vec()),
            Body::Base64(encoded) => base64_decode(encoded),
            Body::Json(doc) => serde_json::to_vec(doc).ok(),
        }
    }

    /// The body as a person reads it in a file: a JSON text as the document it is.
    pub fn readable(self) -> Self {
        match self {
            Body::Text(text) => match serde_json::from_str::<Value>(&text) {
                Ok(doc @ (Value::Object(_) | Value::Array(_))) => Body::Json(doc),
                _ => Body::Text(text),
            },
            other => other,
        }
    }
}

impl Exchange {
    /// An answer as a case keeps it (before redaction).
    pub fn of(answer: &Answer) -> Self {
        Exchange {
            status: answer.status,
            // The body is kept decoded: its encoding and length no longer describe it.
            headers: answer
                .headers
                .iter()
                .filter(|(k, _)| {
                    !k.eq_ignore_ascii_case("content-encoding")
                        && !k.eq_ignore_ascii_case("content-length")
                })
                .cloned()
                .collect(),
            body: Body::from_bytes(&diff::decoded(answer)),
        }
    }

    /// The answer as the diff engine compares it; `None` when its body does not decode.
    pub fn answer(&self) -> Option<Answer> {
        Some(Answer {
            status: self.status,
            headers: self.headers.clone(),
            body: self.body.to_bytes()?.into(),
        })
    }
}

/// What the leg hands the comparer for a capture: the request as it went to the candidate.
#[derive(Debug)]
pub struct Asked {
    pub capturing: Arc<Capturing>,
    pub route: String,
    pub request_id: String,
    pub method: http::Method,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
    /// Whether the primary (whose answer is compared on the left) is the monolith.
    pub primary_is_legacy: bool,
}

/// A case ready for the store: the path it is kept for, its JSON, and how many the route
/// keeps per path.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    pub path: String,
    pub json: String,
    pub per_path: usize,
}

/// Headers the proxy adds or that only concern one connection: not part of a case.
const NOT_KEPT: [&str; 5] = [
    "x-strangler-shadow",
    "x-strangler-dry-run",
    "connection",
    "transfer-encoding",
    "content-length",
];

/// Builds the case of a comparison that found `differences` (primary on the left), kept
/// for the path of the first one that counts; `None` when none counts (noise).
pub fn build(
    asked: &Asked,
    primary: &Answer,
    candidate: &Answer,
    differences: &[Difference],
    counts: impl Fn(&Difference) -> bool,
) -> Option<Kept> {
    let first = differences.iter().find(|d| counts(d))?;
    let rules = &asked.capturing;
    let (legacy, new) = if asked.primary_is_legacy {
        (primary, candidate)
    } else {
        (candidate, primary)
    };
    let mut case = Case {
        route: asked.route.clone(),
        request_id: asked.request_id.clone(),
        path: diff::group_path(&first.path),
        request: Request {
            method: asked.method.as_str().to_string(),
            uri: redact_query(&asked.uri, &rules.query),
            headers: crate::shadow::header_pairs(&asked.headers)
                .into_iter()
                .filter(|(k, _)| !NOT_KEPT.contains(&k.as_str()))
                .collect(),
            body: Body::from_bytes(&asked.body),
        },
        legacy: Exchange::of(legacy),
        new: Exchange::of(new),
        differences: differences
            .iter()
            .cloned()
            .map(|d| {
                if asked.primary_is_legacy {
                    d
                } else {
                    mirrored(d)
                }
            })
            .collect(),
        redacted: rules.listed.clone(),
    };
    redact_case(&mut case, rules);
    let json = serde_json::to_string(&case).ok()?;
    Some(Kept {
        path: case.path,
        json,
        per_path: rules.per_path,
    })
}

/// A difference seen from the other side (the monolith was on the right).
fn mirrored(d: Difference) -> Difference {
    Difference {
        kind: match d.kind {
            Kind::Missing => Kind::Extra,
            Kind::Extra => Kind::Missing,
            other => other,
        },
        left: d.right,
        right: d.left,
        path: d.path,
    }
}

impl Capturing {
    /// Takes out of `exchange` what the section names, as a case has it taken out: so a
    /// live answer compares with a captured one (`strangler replay`).
    pub fn redact_exchange(&self, exchange: &mut Exchange) {
        self.redact_headers(&mut exchange.headers);
        redact_body(&mut exchange.body, &self.body);
    }

    fn redact_headers(&self, headers: &mut Vec<(String, String)>) {
        headers.retain(|(k, _)| !self.headers.iter().any(|h| h.eq_ignore_ascii_case(k)));
    }
}

fn redact_case(case: &mut Case, rules: &Capturing) {
    rules.redact_headers(&mut case.request.headers);
    redact_body(&mut case.request.body, &rules.body);
    rules.redact_exchange(&mut case.legacy);
    rules.redact_exchange(&mut case.new);
    for d in &mut case.differences {
        let header = d
            .path
            .strip_prefix("(header ")
            .and_then(|rest| rest.strip_suffix(')'));
        if header.is_some_and(|name| rules.headers.iter().any(|h| h == name)) {
            for side in [&mut d.left, &mut d.right].into_iter().flatten() {
                *side = Value::String(REDACTED.to_string());
            }
            continue;
        }
        for side in [&mut d.left, &mut d.right].into_iter().flatten() {
            redact_at(side, &d.path, &rules.body);
        }
        // A body compared line by line cannot be searched for fields: withheld.
        if d.path.starts_with("(body line") && !rules.body.is_empty() {
            for side in [&mut d.left, &mut d.right].into_iter().flatten() {
                *side = Value::String(REDACTED.to_string());
            }
        }
    }
}

/// Replaces what `patterns` name in a JSON body. A body that is not JSON cannot be searched
/// for them, so when there are any, it is withheld whole rather than kept with what they name.
fn redact_body(body: &mut Body, patterns: &[PathPattern]) {
    if patterns.is_empty() || *body == Body::Empty {
        return;
    }
    let parsed = match body {
        Body::Text(text) => serde_json::from_str::<Value>(text).ok(),
        Body::Json(doc) => Some(doc.clone()),
        _ => None,
    };
    match parsed {
        Some(mut doc) => {
            if redact(&mut doc, patterns) > 0 {
                *body = Body::Text(doc.to_string());
            }
        }
        None => {
            *body = Body::Text(format!(
                "{REDACTED} (not JSON: withheld because capture.redact names body fields)"
            ));
        }
    }
}

/// The URI with the values of the `names` query parameters replaced.
fn redact_query(uri: &str, names: &[String]) -> String {
    let Some((path, query)) = uri.split_once('?') else {
        return uri.to_string();
    };
    if names.is_empty() {
        return uri.to_string();
    }
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| {
            let name = pair.split_once('=').map_or(pair, |(n, _)| n);
            if names.iter().any(|n| n == name) {
                format!("{name}=REDACTED")
            } else {
                pair.to_string()
            }
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648).
fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut n, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|a| *a == c)? as u32;
        n = n << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((n >> bits & 0xff) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn capturing(redact: &[&str]) -> Arc<Capturing> {
        Capturing::new(&CaptureSpec {
            mismatches: 3,
            redact: redact
                .iter()
                .map(|r| Redaction::parse(r).unwrap())
                .collect(),
        })
    }

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("set-cookie".into(), "session=abc".into()),
            ],
            body: body.as_bytes().to_vec().into(),
        }
    }

    fn asked(capturing: Arc<Capturing>, primary_is_legacy: bool) -> Asked {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer t0ken".parse().unwrap());
        headers.insert("x-strangler-shadow", "1".parse().unwrap());
        headers.insert("accept", "application/json".parse().unwrap());
        Asked {
            capturing,
            route: "students".into(),
            request_id: "r-1".into(),
            method: http::Method::POST,
            uri: "/students?api_key=k&page=2".into(),
            headers,
            body: bytes::Bytes::from_static(br#"{"name":"Ada","password":"s3cret"}"#),
            primary_is_legacy,
        }
    }

    #[test]
    fn a_case_keeps_the_exchange_with_what_the_plan_names_taken_out() {
        let rules = capturing(&[
            "header:authorization",
            "header:set-cookie",
            "query:api_key",
            "/password",
        ]);
        let legacy = answer(200, r#"{"name":"Ada","password":"s3cret"}"#);
        let new = answer(200, r#"{"name":"Ada L.","password":"other"}"#);
        let differences = diff::compare(&legacy, &new, &diff::Rules::with_default_headers());
        let kept = build(&asked(rules, true), &legacy, &new, &differences, |_| true).unwrap();
        assert_eq!(kept.per_path, 3);
        let case: Case = serde_json::from_str(&kept.json).unwrap();
        assert_eq!(case.path, "/name");
        assert_eq!(case.request.method, "POST");
        assert_eq!(case.request.uri, "/students?api_key=REDACTED&page=2");
        assert_eq!(
            case.request.headers,
            [("accept".to_string(), "application/json".to_string())],
            "the token and the shadow mark are not kept"
        );
        assert_eq!(
            case.request.body,
            Body::Text(r#"{"name":"Ada","password":"[redacted]"}"#.into())
        );
        assert!(!kept.json.contains("s3cret") && !kept.json.contains("other"));
        assert!(!kept.json.contains("session=abc") && !kept.json.contains("t0ken"));
        assert_eq!(case.legacy.status, 200);
        assert_eq!(case.differences.len(), 2, "{:?}", case.differences);
        assert_eq!(case.differences[0].left, Some(json!("Ada")));
        assert_eq!(case.differences[1].left, Some(json!(REDACTED)));
        assert_eq!(case.redacted.len(), 4);
    }

    #[test]
    fn the_monolith_is_on_the_left_whichever_side_answered() {
        let rules = capturing(&[]);
        let primary = answer(200, r#"{"a":1,"b":2}"#);
        let candidate = answer(200, r#"{"a":1}"#);
        let differences = diff::compare(&primary, &candidate, &diff::Rules::default());
        let kept = build(
            &asked(rules, false),
            &primary,
            &candidate,
            &differences,
            |_| true,
        )
        .unwrap();
        let case: Case = serde_json::from_str(&kept.json).unwrap();
        assert_eq!(case.legacy.body, Body::Text(r#"{"a":1}"#.into()));
        assert_eq!(case.differences[0].kind, Kind::Extra);
        assert_eq!(case.differences[0].right, Some(json!(2)));
        // Nothing that counts, nothing kept.
        assert!(
            build(
                &asked(capturing(&[]), true),
                &primary,
                &candidate,
                &differences,
                |_| false
            )
            .is_none()
        );
    }

    #[test]
    fn a_body_that_cannot_be_searched_for_named_fields_is_withheld() {
        let mut body = Body::Text("password=s3cret".into());
        redact_body(&mut body, &[PathPattern::parse("/password").unwrap()]);
        assert!(matches!(&body, Body::Text(t) if !t.contains("s3cret")));
        let mut untouched = Body::Text("password=s3cret".into());
        redact_body(&mut untouched, &[]);
        assert_eq!(untouched, Body::Text("password=s3cret".into()));
    }

    #[test]
    fn bodies_round_trip_as_text_or_base64() {
        for bytes in [
            &b""[..],
            b"{\"a\":1}",
            &[0xff, 0x00, 0x10],
            &[1, 2, 3, 4],
            &[0x80],
        ] {
            let body = Body::from_bytes(bytes);
            assert_eq!(body.to_bytes().unwrap(), bytes, "{body:?}");
        }
        assert_eq!(base64_encode(b"Man"), "TWFu");
        assert_eq!(base64_encode(b"Ma"), "TWE=");
        assert_eq!(base64_decode("TWE="), Some(b"Ma".to_vec()));
        assert_eq!(base64_decode("!!"), None);
        let json = serde_json::to_string(&Body::Text("hi".into())).unwrap();
        assert_eq!(json, r#"{"text":"hi"}"#);
        let doc = Body::Text(r#"{"b":1,"a":[2]}"#.into()).readable();
        assert_eq!(doc, Body::Json(json!({ "a": [2], "b": 1 })));
        assert_eq!(doc.to_bytes().unwrap(), br#"{"a":[2],"b":1}"#);
        assert_eq!(Body::Text("7".into()).readable(), Body::Text("7".into()));
        assert_eq!(serde_json::to_string(&Body::Empty).unwrap(), r#""empty""#);
    }
}
