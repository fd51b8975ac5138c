//! Taking values out of a document by path pattern, before it is kept anywhere: what a
//! route's `capture.redact` names (`/password`, `/cards/*/number`) is replaced by
//! [`REDACTED`], in a body and in the values of the differences found in it.

use serde_json::Value;

use crate::path::{PathPattern, PatternToken, is_escaped_form, parse_index};

/// What a redacted value becomes.
pub const REDACTED: &str = "[redacted]";

/// Replaces every value of `doc` that a pattern matches; answers how many were replaced.
pub fn redact(doc: &mut Value, patterns: &[PathPattern]) -> usize {
    patterns.iter().map(|p| redact_below(doc, p.tokens())).sum()
}

/// Replaces what the patterns match in `value`, which sits at `pointer` (a JSON Pointer)
/// in its document: a pattern that names `pointer` or a place under it. Answers how many
/// were replaced.
pub fn redact_at(value: &mut Value, pointer: &str, patterns: &[PathPattern]) -> usize {
    let at: Vec<&str> = match pointer.strip_prefix('/') {
        Some(rest) => rest.split('/').collect(),
        None if pointer.is_empty() => Vec::new(),
        // Not a pointer into the document (`(status)`, a body line): nothing to match.
        None => return 0,
    };
    let mut replaced = 0;
    for pattern in patterns {
        let tokens = pattern.tokens();
        if tokens.len() < at.len() {
            continue;
        }
        let (head, rest) = tokens.split_at(at.len());
        let over = head.iter().zip(&at).all(|(p, escaped)| match p {
            PatternToken::Any => true,
            PatternToken::Literal { escaped: e, .. } => e == escaped,
        });
        if over {
            replaced += redact_below(value, rest);
        }
    }
    replaced
}

fn redact_below(value: &mut Value, tokens: &[PatternToken]) -> usize {
    let Some((first, rest)) = tokens.split_first() else {
        *value = Value::String(REDACTED.to_string());
        return 1;
    };
    match value {
        Value::Object(map) => map
            .iter_mut()
            .filter(|(k, _)| match first {
                PatternToken::Any => true,
                PatternToken::Literal { escaped, .. } => is_escaped_form(escaped, k),
            })
            .map(|(_, v)| redact_below(v, rest))
            .sum(),
        Value::Array(items) => items
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| match first {
                PatternToken::Any => true,
                PatternToken::Literal { escaped, .. } => parse_index(escaped) == Some(*i),
            })
            .map(|(_, v)| redact_below(v, rest))
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patterns(raw: &[&str]) -> Vec<PathPattern> {
        raw.iter().map(|p| PathPattern::parse(p).unwrap()).collect()
    }

    #[test]
    fn named_values_are_replaced_wherever_the_patterns_reach() {
        let mut doc = json!({ "user": "ada", "password": "s3cret",
                              "cards": [{ "number": "4111", "exp": "12/30" }, { "number": "5500" }] });
        let n = redact(
            &mut doc,
            &patterns(&["/password", "/cards/*/number", "/absent"]),
        );
        assert_eq!(n, 3);
        assert_eq!(
            doc,
            json!({ "user": "ada", "password": REDACTED,
                    "cards": [{ "number": REDACTED, "exp": "12/30" }, { "number": REDACTED }] })
        );
    }

    #[test]
    fn a_difference_value_is_redacted_as_its_place_in_the_document_says() {
        let p = patterns(&["/cards/*/number", "/password"]);
        // The difference is the whole card: its number is under it.
        let mut card = json!({ "number": "4111" });
        assert_eq!(redact_at(&mut card, "/cards/0", &p), 1);
        assert_eq!(card, json!({ "number": REDACTED }));
        // The difference is the password itself.
        let mut password = json!("s3cret");
        assert_eq!(redact_at(&mut password, "/password", &p), 1);
        assert_eq!(password, json!(REDACTED));
        // Elsewhere, or not in the body at all: untouched.
        let mut other = json!("x");
        assert_eq!(redact_at(&mut other, "/name", &p), 0);
        assert_eq!(redact_at(&mut other, "(status)", &p), 0);
        assert_eq!(other, json!("x"));
        // The whole document differs: everything the patterns name inside it goes.
        let mut whole = json!({ "password": "p", "cards": [{ "number": "1" }] });
        assert_eq!(redact_at(&mut whole, "", &p), 2);
    }
}
