//! A route's `translate` section, the anti-corruption layer: declarative edits of the JSON
//! a new service is sent and answers, so it can expose a cleaner contract while clients
//! keep the old one.
//!
//! ```toml
//! [routes.translate]
//! # the client's request (old contract) → what the new service takes
//! request = [{ rename = { from = "/full_name", to = "/name" } }]
//! # the new service's answer → what clients know
//! response = [
//!   { rename = { from = "/name", to = "/full_name" } },
//!   { move = { from = "/address/city", to = "/city" } },
//!   { drop = "/internal_id" },
//!   { set = { path = "/api_version", value = 1 } },
//! ]
//! status = { 201 = 200 }
//! ```
//!
//! Paths are JSON Pointers (RFC 6901); `*` stands for every element of an array or member
//! of an object, so `/items/*/name` renames in each item (not in `move`). Edits apply in
//! order; one that finds nothing at its source does nothing.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use serde_json::{Map, Value};
use toml::Spanned;

/// A route's translations (`[routes.translate]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TranslateSpec {
    /// Applied, in order, to a JSON request body sent to the new service.
    pub request: Vec<Transform>,
    /// Applied, in order, to a JSON answer of the new service.
    pub response: Vec<Transform>,
    /// The new service's status → the status clients get.
    pub status: BTreeMap<u16, u16>,
}

impl TranslateSpec {
    /// The status a client gets for the new service's `status`.
    pub fn status(&self, status: u16) -> u16 {
        self.status.get(&status).copied().unwrap_or(status)
    }

    /// Whether it changes answers (a body or a status).
    pub fn touches_answers(&self) -> bool {
        !self.response.is_empty() || !self.status.is_empty()
    }
}

/// One edit of a JSON document.
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// The field takes another name in the same object.
    Rename { from: Pointer, to: Pointer },
    /// The value goes elsewhere in the document (objects on the way are made).
    Move { from: Pointer, to: Pointer },
    /// The value is taken out.
    Drop(Pointer),
    /// The value is set (objects on the way are made).
    Set { path: Pointer, value: Value },
}

/// A JSON Pointer, below the root, as its unescaped tokens (`*`: any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    pub text: String,
    tokens: Vec<String>,
}

impl Pointer {
    /// Reads an RFC 6901 pointer naming a value below the root.
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "`{text}` is not a JSON Pointer like /name or /items/*/id"
            ));
        };
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            let mut token = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                match (c, c == '~') {
                    (_, true) => match chars.next() {
                        Some('0') => token.push('~'),
                        Some('1') => token.push('/'),
                        _ => return Err(format!("`{text}`: `~` must be followed by 0 or 1")),
                    },
                    (c, false) => token.push(c),
                }
            }
            tokens.push(token);
        }
        Ok(Self {
            text: text.to_string(),
            tokens,
        })
    }

    fn has_wildcard(&self) -> bool {
        self.tokens.iter().any(|t| t == "*")
    }

    /// The tokens of the object holding the value, and the value's own token.
    fn split(&self) -> (&[String], &str) {
        match self.tokens.split_last() {
            Some((last, parent)) => (parent, last),
            None => (&[], ""),
        }
    }

    /// Whether `self` is `other` or inside it (`*` matches any token).
    fn within(&self, other: &Pointer) -> bool {
        self.tokens.len() >= other.tokens.len()
            && other
                .tokens
                .iter()
                .zip(&self.tokens)
                .all(|(a, b)| a == b || a == "*" || b == "*")
    }
}

impl Transform {
    /// Applies the edit to `doc`.
    pub fn apply(&self, doc: &mut Value) {
        match self {
            Transform::Rename { from, to } => {
                let (parent, old) = from.split();
                let (_, new) = to.split();
                each_parent(doc, parent, &mut |object| {
                    if let Some(value) = object.remove(old) {
                        object.insert(new.to_string(), value);
                    }
                });
            }
            Transform::Drop(path) => {
                let (parent, name) = path.split();
                each_parent(doc, parent, &mut |object| {
                    object.remove(name);
                });
            }
            Transform::Set { path, value } => {
                let (parent, name) = path.split();
                make_objects(doc, parent);
                each_parent(doc, parent, &mut |object| {
                    object.insert(name.to_string(), value.clone());
                });
            }
            Transform::Move { from, to } => {
                let (parent, name) = from.split();
                let mut taken = None;
                each_parent(doc, parent, &mut |object| taken = object.remove(name));
                if let Some(value) = taken {
                    let (parent, name) = to.split();
                    make_objects(doc, parent);
                    each_parent(doc, parent, &mut |object| {
                        object.insert(name.to_string(), value.clone());
                    });
                }
            }
        }
    }
}

/// Applies `transforms` in order.
pub fn apply_all(transforms: &[Transform], doc: &mut Value) {
    for t in transforms {
        t.apply(doc);
    }
}

/// Calls `f` on every object at `path` (`*`: each element or member).
fn each_parent(doc: &mut Value, path: &[String], f: &mut dyn FnMut(&mut Map<String, Value>)) {
    let Some((first, rest)) = path.split_first() else {
        if let Value::Object(object) = doc {
            f(object);
        }
        return;
    };
    match (doc, first.as_str()) {
        (Value::Array(items), "*") => items.iter_mut().for_each(|v| each_parent(v, rest, f)),
        (Value::Object(members), "*") => members.values_mut().for_each(|v| each_parent(v, rest, f)),
        (Value::Object(members), key) => {
            if let Some(v) = members.get_mut(key) {
                each_parent(v, rest, f);
            }
        }
        (Value::Array(items), index) => {
            if let Some(v) = index.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                each_parent(v, rest, f);
            }
        }
        _ => {}
    }
}

/// Makes the objects missing on `path` (no wildcard) in objects that lack them.
fn make_objects(doc: &mut Value, path: &[String]) {
    let mut at = doc;
    for token in path {
        let Value::Object(members) = at else { return };
        at = members
            .entry(token.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTranslate {
    #[serde(default)]
    request: Vec<Spanned<RawOp>>,
    #[serde(default)]
    response: Vec<Spanned<RawOp>>,
    status: Option<Spanned<BTreeMap<String, Spanned<i64>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOp {
    rename: Option<RawFromTo>,
    #[serde(rename = "move")]
    move_to: Option<RawFromTo>,
    drop: Option<Spanned<String>>,
    set: Option<RawSet>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFromTo {
    from: Spanned<String>,
    to: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSet {
    path: Spanned<String>,
    value: toml::Value,
}

/// Where a `translate` section is wrong: the span, the field below `translate`, and why.
pub(crate) type TranslateError = (Range<usize>, String, String);

/// Reads and checks a route's `translate` section.
pub(crate) fn read(raw: &RawTranslate) -> Result<TranslateSpec, TranslateError> {
    let mut status = BTreeMap::new();
    if let Some(map) = &raw.status {
        for (from, to) in map.get_ref() {
            let code = |n: i64| u16::try_from(n).ok().filter(|n| (100..=599).contains(n));
            let from_code = from.parse::<i64>().ok().and_then(code).ok_or_else(|| {
                let m = format!("`{from}` is not an HTTP status (100 to 599)");
                (map.span(), "status".to_string(), m)
            })?;
            let to_code = code(*to.get_ref()).ok_or_else(|| {
                let m = "must be an HTTP status (100 to 599)".to_string();
                (to.span(), format!("status.{from}"), m)
            })?;
            status.insert(from_code, to_code);
        }
    }
    Ok(TranslateSpec {
        request: ops(&raw.request, "request")?,
        response: ops(&raw.response, "response")?,
        status,
    })
}

fn ops(raw: &[Spanned<RawOp>], list: &str) -> Result<Vec<Transform>, TranslateError> {
    let mut out: Vec<Transform> = Vec::new();
    // Per op so far: where its value was taken from (it is gone there), where it wrote.
    let mut gone: Vec<(usize, Pointer)> = Vec::new();
    let mut written: Vec<(usize, Pointer)> = Vec::new();
    for (i, op) in raw.iter().enumerate() {
        let field = |f: &str| format!("{list}[{i}]{f}");
        let at = |s: &Spanned<String>, f: &str| {
            Pointer::parse(s.get_ref()).map_err(|m| (s.span(), field(f), m))
        };
        let r = op.get_ref();
        let one_of = || {
            let m = "an edit is one of { rename = {...} }, { move = {...} }, { drop = \"/path\" }, { set = {...} }";
            Err((op.span(), field(""), m.to_string()))
        };
        let (transform, source, target, span) = match (&r.rename, &r.move_to, &r.drop, &r.set) {
            (Some(ft), None, None, None) => {
                let (from, to) = (at(&ft.from, ".rename.from")?, at(&ft.to, ".rename.to")?);
                if from.split().0 != to.split().0 || to.split().1 == "*" {
                    let m = format!(
                        "rename keeps a field in its object (`{}` and `{}` differ before the last token); use move",
                        from.text, to.text
                    );
                    return Err((ft.to.span(), field(".rename.to"), m));
                }
                if from == to {
                    let m = "renames a field to itself".to_string();
                    return Err((ft.to.span(), field(".rename.to"), m));
                }
                let span = ft.from.span();
                (
                    Transform::Rename {
                        from: from.clone(),
                        to: to.clone(),
                    },
                    Some(from),
                    Some(to),
                    span,
                )
            }
            (None, Some(ft), None, None) => {
                let (from, to) = (at(&ft.from, ".move.from")?, at(&ft.to, ".move.to")?);
                if from.has_wildcard() || to.has_wildcard() {
                    let m = "move takes one value: no `*` (rename and drop take them)".to_string();
                    return Err((ft.from.span(), field(".move"), m));
                }
                if to.within(&from) {
                    let m = format!(
                        "`{}` is inside `{}`: a value cannot move into itself",
                        to.text, from.text
                    );
                    return Err((ft.to.span(), field(".move.to"), m));
                }
                let span = ft.from.span();
                (
                    Transform::Move {
                        from: from.clone(),
                        to: to.clone(),
                    },
                    Some(from),
                    Some(to),
                    span,
                )
            }
            (None, None, Some(path), None) => {
                let p = at(path, ".drop")?;
                (Transform::Drop(p.clone()), Some(p), None, path.span())
            }
            (None, None, None, Some(set)) => {
                let p = at(&set.path, ".set.path")?;
                let value = serde_json::to_value(&set.value).map_err(|err| {
                    (
                        set.path.span(),
                        field(".set.value"),
                        format!("cannot be JSON: {err}"),
                    )
                })?;
                (
                    Transform::Set {
                        path: p.clone(),
                        value,
                    },
                    None,
                    Some(p),
                    set.path.span(),
                )
            }
            _ => return one_of(),
        };
        // Conflicts: reading what an earlier edit took away, writing twice to one place.
        if let Some(source) = &source
            && let Some((j, earlier)) = gone.iter().find(|(_, g)| source.within(g))
        {
            let m = format!(
                "`{}` was already taken away by {list}[{j}] (`{}`)",
                source.text, earlier.text
            );
            return Err((span, field(""), m));
        }
        if let Some(target) = &target
            && let Some((j, _)) = written.iter().find(|(_, w)| w == target)
        {
            let m = format!("`{}` is already written by {list}[{j}]", target.text);
            return Err((span, field(""), m));
        }
        if let Some(source) = source {
            gone.push((i, source));
        }
        if let Some(target) = target {
            // What is written again exists again.
            gone.retain(|(_, g)| !g.within(&target));
            written.push((i, target));
        }
        out.push(transform);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(text: &str) -> Pointer {
        Pointer::parse(text).unwrap()
    }

    #[test]
    fn edits_apply_in_order_and_wildcards_reach_every_item() {
        let mut doc = json!({
            "name": "Ada", "internal": 1, "address": { "city": "Paris" },
            "items": [{ "full": "a" }, { "full": "b" }, 3],
        });
        apply_all(
            &[
                Transform::Rename {
                    from: p("/name"),
                    to: p("/full_name"),
                },
                Transform::Move {
                    from: p("/address/city"),
                    to: p("/where/city"),
                },
                Transform::Drop(p("/internal")),
                Transform::Set {
                    path: p("/v"),
                    value: json!(2),
                },
                Transform::Rename {
                    from: p("/items/*/full"),
                    to: p("/items/*/label"),
                },
                Transform::Drop(p("/absent/deep")),
            ],
            &mut doc,
        );
        assert_eq!(
            doc,
            json!({
                "full_name": "Ada", "address": {}, "where": { "city": "Paris" }, "v": 2,
                "items": [{ "label": "a" }, { "label": "b" }, 3],
            })
        );
    }

    #[test]
    fn pointers_unescape_and_refuse_what_is_not_one() {
        assert_eq!(p("/a~1b/c~0d").tokens, ["a/b", "c~d"]);
        for bad in ["name", "", "/a~2", "/a~"] {
            assert!(Pointer::parse(bad).is_err(), "{bad}");
        }
    }
}
