//! Request path normalization and path templates.
//!
//! The proxy normalizes a request path once and both routes and forwards those exact bytes,
//! so no encoding trick can make the proxy see one route while the upstream serves another.
//! Rules: repeated slashes collapse; `.` and `..` segments are resolved (never above the
//! root); percent-encoded unreserved characters (`%2E` included) are decoded, other escapes
//! are kept with upper-case hex; an encoded `/`, `\` or NUL, a raw `\`, or a malformed escape
//! is rejected (400).

use std::fmt;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path must start with /")]
    NotAbsolute,
    #[error("the path holds an encoded slash (%2F)")]
    EncodedSlash,
    #[error("the path holds a backslash")]
    Backslash,
    #[error("the path holds an encoded NUL (%00)")]
    EncodedNul,
    #[error("the path holds a malformed percent escape")]
    BadEscape,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes the escapes that must be decoded and checks the rest, segment by segment.
fn decode_segment(raw: &str, out: &mut String) -> Result<(), PathError> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let byte = hi << 4 | lo;
                match byte {
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::Backslash),
                    0 => return Err(PathError::EncodedNul),
                    b if is_unreserved(b) => out.push(char::from(b)),
                    b => {
                        out.push('%');
                        out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
                        out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
                    }
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            _ => {
                // Only ASCII reaches here (the URI parser admits no other bytes); copy runs.
                let start = i;
                while i < bytes.len() && bytes[i] != b'%' && bytes[i] != b'\\' {
                    i += 1;
                }
                out.push_str(&raw[start..i]);
            }
        }
    }
    Ok(())
}

/// Whether `raw` is already in normal form: no escapes, no backslash, no empty, `.` or `..`
/// segment. Most paths are; they skip the rewrite.
fn is_normal(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    if bytes.iter().any(|b| *b == b'%' || *b == b'\\') {
        return false;
    }
    raw.split('/')
        .skip(1)
        .enumerate()
        .all(|(i, segment)| match segment {
            "." | ".." => false,
            // Only a trailing slash may leave an empty segment (and `/` itself).
            "" => i + 1 == raw.split('/').count() - 1,
            _ => true,
        })
}

/// The normalized form of `raw` (a path without query).
pub fn normalize(raw: &str) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(raw) {
        return Ok(raw.to_string());
    }
    let mut segments: Vec<String> = Vec::new();
    let mut trailing_slash = raw.ends_with('/') && raw.len() > 1;
    let mut decoded = String::new();
    for raw_segment in raw.split('/').filter(|s| !s.is_empty()) {
        decoded.clear();
        decode_segment(raw_segment, &mut decoded)?;
        match decoded.as_str() {
            "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            _ => {
                segments.push(decoded.clone());
                trailing_slash = raw.ends_with('/');
            }
        }
    }
    let mut path = String::with_capacity(raw.len());
    for segment in &segments {
        path.push('/');
        path.push_str(segment);
    }
    if path.is_empty() || trailing_slash {
        path.push('/');
    }
    Ok(path)
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSegment {
    /// Matches exactly this text.
    Literal(String),
    /// `{name}`: matches any one segment.
    Param(String),
    /// `{*name}`: matches one or more remaining segments; only last.
    Tail(String),
}

/// A route's path pattern, e.g. `/students/{id}/invoices` or `/finance/{*rest}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    raw: String,
    segments: Vec<TemplateSegment>,
}

impl PathTemplate {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if !raw.starts_with('/') {
            return Err("must start with /".to_string());
        }
        match normalize(raw) {
            Ok(normal) if normal == raw || raw == "/" => {}
            Ok(normal) => return Err(format!("is not in normal form (write `{normal}`)")),
            Err(err) => return Err(err.to_string()),
        }
        let parts: Vec<&str> = raw.split('/').filter(|s| !s.is_empty()).collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let segment = if let Some(inner) =
                part.strip_prefix('{').and_then(|p| p.strip_suffix('}'))
            {
                let (tail, name) = match inner.strip_prefix('*') {
                    Some(name) => (true, name),
                    None => (false, inner),
                };
                let valid_name = !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !valid_name {
                    return Err(format!(
                        "`{part}`: a parameter is {{name}} or {{*name}} with a name of letters, digits and _"
                    ));
                }
                if tail {
                    if i + 1 != parts.len() {
                        return Err(format!("`{part}`: a catch-all must be the last segment"));
                    }
                    TemplateSegment::Tail(name.to_string())
                } else {
                    TemplateSegment::Param(name.to_string())
                }
            } else if part.contains('{') || part.contains('}') {
                return Err(format!("`{part}`: braces must enclose a whole segment"));
            } else {
                TemplateSegment::Literal((*part).to_string())
            };
            segments.push(segment);
        }
        Ok(Self {
            raw: raw.to_string(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn segments(&self) -> &[TemplateSegment] {
        &self.segments
    }

    /// Ordering key: segment by segment, literal beats parameter beats catch-all. Sorting
    /// templates by this key, highest first, makes the first match the most specific one.
    pub fn specificity(&self) -> Vec<u8> {
        self.segments
            .iter()
            .map(|s| match s {
                TemplateSegment::Literal(_) => 2,
                TemplateSegment::Param(_) => 1,
                TemplateSegment::Tail(_) => 0,
            })
            .collect()
    }

    /// The shape two templates must share to match exactly the same paths (parameter names
    /// do not matter).
    pub fn shape(&self) -> String {
        let mut shape = String::new();
        for s in &self.segments {
            shape.push('/');
            match s {
                TemplateSegment::Literal(l) => shape.push_str(l),
                TemplateSegment::Param(_) => shape.push_str("{}"),
                TemplateSegment::Tail(_) => shape.push_str("{*}"),
            }
        }
        if shape.is_empty() {
            shape.push('/');
        }
        shape
    }

    /// Whether the normalized path, split into `segments`, matches.
    pub fn matches(&self, segments: &[&str]) -> bool {
        self.matches_with(segments, true)
    }

    /// [`PathTemplate::matches`], literal segments compared with or without ASCII case.
    pub fn matches_with(&self, segments: &[&str], case_sensitive: bool) -> bool {
        let mut i = 0;
        for template in &self.segments {
            match template {
                TemplateSegment::Tail(_) => return segments.len() > i,
                TemplateSegment::Literal(l) => {
                    let same = segments.get(i).is_some_and(|s| {
                        if case_sensitive {
                            *s == l.as_str()
                        } else {
                            s.eq_ignore_ascii_case(l)
                        }
                    });
                    if !same {
                        return false;
                    }
                }
                TemplateSegment::Param(_) => {
                    // `/students/` (an empty last segment) is not `/students/{id}`.
                    if segments.get(i).is_none_or(|s| s.is_empty()) {
                        return false;
                    }
                }
            }
            i += 1;
        }
        i == segments.len()
    }

    /// The value of parameter `name` in a path this template matches.
    pub fn param<'p>(&self, segments: &[&'p str], name: &str) -> Option<&'p str> {
        self.segments
            .iter()
            .position(|s| matches!(s, TemplateSegment::Param(n) if n == name))
            .and_then(|i| segments.get(i).copied())
    }

    pub fn has_param(&self, name: &str) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, TemplateSegment::Param(n) | TemplateSegment::Tail(n) if n == name))
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Splits a normalized path into its segments (a trailing slash gives an empty last one).
pub fn split(path: &str) -> Vec<&str> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_table() {
        let cases: &[(&str, Result<&str, PathError>)] = &[
            ("/", Ok("/")),
            ("/students", Ok("/students")),
            ("//students", Ok("/students")),
            ("/students//x///", Ok("/students/x/")),
            ("/students/../finance/x", Ok("/finance/x")),
            ("/students/%2e%2e/finance", Ok("/finance")),
            ("/students/%2E%2E/%2e/finance", Ok("/finance")),
            ("/../../etc/passwd", Ok("/etc/passwd")),
            ("/students/.", Ok("/students/")),
            ("/students/./x", Ok("/students/x")),
            ("/a/%41%7e", Ok("/a/A~")),
            ("/a/%c3%a9", Ok("/a/%C3%A9")),
            ("/a/%20b", Ok("/a/%20b")),
            ("/students%2F..%2Ffinance", Err(PathError::EncodedSlash)),
            ("/students/%2f", Err(PathError::EncodedSlash)),
            ("/students/%5C..", Err(PathError::Backslash)),
            ("/students\\..", Err(PathError::Backslash)),
            ("/students/%00", Err(PathError::EncodedNul)),
            ("/students/%zz", Err(PathError::BadEscape)),
            ("/students/%4", Err(PathError::BadEscape)),
            ("students", Err(PathError::NotAbsolute)),
        ];
        for (raw, expected) in cases {
            let got = normalize(raw);
            assert_eq!(got.as_deref().map_err(|e| *e), *expected, "{raw}");
        }
    }

    #[test]
    fn the_fast_path_agrees_with_the_rewrite() {
        for raw in [
            "/", "/a", "/a/", "/a/b", "//a", "/a//b", "/a/./b", "/a/..", "/.", "/a/%41", "/a\\b",
            "/a/b/",
        ] {
            if is_normal(raw) {
                let mut slow = String::new();
                for segment in raw.split('/').filter(|s| !s.is_empty()) {
                    slow.push('/');
                    slow.push_str(segment);
                }
                if slow.is_empty() || raw.ends_with('/') {
                    slow.push('/');
                }
                assert_eq!(slow, raw, "{raw} is not normal");
            }
        }
        assert!(is_normal("/students/42/invoices"));
        assert!(!is_normal("//students"));
        assert!(!is_normal("/students/../x"));
    }

    #[test]
    fn normalization_is_idempotent() {
        for raw in ["//a/./b/../c/", "/x/%2e/y", "/%41/%62/"] {
            let once = normalize(raw).unwrap();
            assert_eq!(normalize(&once).unwrap(), once, "{raw}");
        }
    }

    #[test]
    fn templates_match_segments() {
        let t = PathTemplate::parse("/students/{id}/invoices").unwrap();
        assert!(t.matches(&split("/students/42/invoices")));
        assert!(!t.matches(&split("/students/42")));
        assert!(!t.matches(&split("/students/42/invoices/x")));
        let one = PathTemplate::parse("/students/{id}").unwrap();
        assert!(
            !one.matches(&split("/students/")),
            "an empty segment is no id"
        );
        assert_eq!(t.param(&split("/students/42/invoices"), "id"), Some("42"));
        let tail = PathTemplate::parse("/finance/{*rest}").unwrap();
        assert!(tail.matches(&split("/finance/invoices/1/pay")));
        assert!(!tail.matches(&split("/finance")));
        let root = PathTemplate::parse("/").unwrap();
        assert!(root.matches(&split("/")));
        assert!(!root.matches(&split("/x")));
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in [
            "students",
            "/a//b",
            "/a/../b",
            "/{*rest}/x",
            "/{}",
            "/a{id}",
            "/{id-x}",
            "/a/%2F",
        ] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn specificity_orders_literal_param_tail() {
        let lit = PathTemplate::parse("/students/search").unwrap();
        let param = PathTemplate::parse("/students/{id}").unwrap();
        let tail = PathTemplate::parse("/students/{*rest}").unwrap();
        assert!(lit.specificity() > param.specificity());
        assert!(param.specificity() > tail.specificity());
        assert_eq!(
            PathTemplate::parse("/s/{a}").unwrap().shape(),
            PathTemplate::parse("/s/{b}").unwrap().shape()
        );
    }
}
