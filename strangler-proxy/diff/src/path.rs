//! Paths into a JSON document: the tokens of the place a walk has reached (borrowed from the
//! document, so walking allocates nothing per node), JSON Pointers (RFC 6901) made from them,
//! and the patterns of a route's comparison rules that match them.

/// One reference token of the path a walk is at: an object key or an array index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token<'a> {
    Key(&'a str),
    Index(usize),
}

/// Escapes one reference token (RFC 6901: `~` → `~0`, `/` → `~1`).
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// The JSON Pointer of `tokens`.
pub(crate) fn pointer(tokens: &[Token<'_>]) -> String {
    let mut out = String::new();
    for token in tokens {
        out.push('/');
        match token {
            Token::Key(key) if key.contains(['~', '/']) => out.push_str(&escape(key)),
            Token::Key(key) => out.push_str(key),
            Token::Index(i) => out.push_str(&i.to_string()),
        }
    }
    out
}

/// An array index as RFC 6901 writes it: `0`, or digits without a leading zero.
pub(crate) fn parse_index(token: &str) -> Option<usize> {
    let canonical = token == "0" || (!token.starts_with('0') && !token.is_empty());
    if canonical && token.bytes().all(|b| b.is_ascii_digit()) {
        token.parse().ok()
    } else {
        None
    }
}

/// One token of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PatternToken {
    /// `*`: any one token.
    Any,
    /// A key as the pattern writes it (escaped), and the index it also names, if any.
    Literal {
        escaped: String,
        index: Option<usize>,
    },
}

/// A path pattern: a JSON Pointer where `*` stands for any one token
/// (`/items/*/updated_at`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    tokens: Vec<PatternToken>,
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
            tokens: rest
                .split('/')
                .map(|t| match t {
                    "*" => PatternToken::Any,
                    _ => PatternToken::Literal {
                        escaped: t.to_string(),
                        index: parse_index(t),
                    },
                })
                .collect(),
        })
    }

    pub(crate) fn tokens(&self) -> &[PatternToken] {
        &self.tokens
    }

    /// Whether the path `tokens` matches.
    pub(crate) fn matches(&self, tokens: &[Token<'_>]) -> bool {
        self.tokens.len() == tokens.len()
            && self.tokens.iter().zip(tokens).all(|(p, t)| match (p, t) {
                (PatternToken::Any, _) => true,
                (PatternToken::Literal { escaped, .. }, Token::Key(key)) => {
                    is_escaped_form(escaped, key)
                }
                (PatternToken::Literal { index, .. }, Token::Index(i)) => *index == Some(*i),
            })
    }
}

/// Whether `pattern` is `token` as [`escape`] writes it, without building that string: this
/// runs for every rule at every node of a compared document.
pub(crate) fn is_escaped_form(pattern: &str, token: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn patterns_match_keys_and_indices() {
        let p = PathPattern::parse("/items/*/a~1b").unwrap();
        assert!(p.matches(&[Token::Key("items"), Token::Index(3), Token::Key("a/b")]));
        assert!(!p.matches(&[Token::Key("items"), Token::Index(3)]));
        let p = PathPattern::parse("/items/0").unwrap();
        assert!(p.matches(&[Token::Key("items"), Token::Index(0)]));
        assert!(p.matches(&[Token::Key("items"), Token::Key("0")]));
        assert!(!p.matches(&[Token::Key("items"), Token::Index(1)]));
        // `01` names a key, never an index.
        let p = PathPattern::parse("/01").unwrap();
        assert!(!p.matches(&[Token::Index(1)]));
        assert_eq!(
            pointer(&[Token::Key("a/b"), Token::Index(2), Token::Key("m~n")]),
            "/a~1b/2/m~0n"
        );
        assert_eq!(pointer(&[]), "");
    }
}
