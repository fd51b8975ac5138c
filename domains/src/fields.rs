//! Field rules shared by the domains: what a valid email, name, term or amount is.

use participant::ApiError;
use serde_json::{Value, json};

/// Longest email accepted, in characters as sent (surrounding whitespace included).
pub const MAX_EMAIL: usize = 254;

/// An email address: `local@domain`, the domain with a dot neither first nor last, no
/// whitespace or control characters inside, at most [`MAX_EMAIL`] characters. Surrounding
/// whitespace is trimmed and the address lower-cased. [`email_schema`] says the same.
pub fn email(value: &str) -> Result<String, ApiError> {
    let trimmed = value.trim();
    let plain = |c: char| c != '@' && !c.is_whitespace() && !c.is_control();
    let valid = value.chars().count() <= MAX_EMAIL
        && trimmed.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && local.chars().all(plain)
                && domain.chars().all(plain)
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if valid {
        Ok(trimmed.to_lowercase())
    } else {
        Err(ApiError::invalid_field(
            "email",
            "must be an email address like ada@example.org",
        ))
    }
}

/// A required text of at most `max` characters as sent, not blank, without control
/// characters once surrounding whitespace is trimmed (the trimmed text is kept).
/// [`text_schema`] says the same.
pub fn text(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ApiError::invalid_field(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(ApiError::invalid_field(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            field,
            "must not contain control characters",
        ));
    }
    Ok(trimmed.to_string())
}

/// Student status: `active` or `inactive`.
pub fn status(value: &str) -> Result<String, ApiError> {
    match value {
        "active" | "inactive" => Ok(value.to_string()),
        _ => Err(ApiError::invalid_field(
            "status",
            "must be `active` or `inactive`",
        )),
    }
}

/// Terms are `YYYY-spring` or `YYYY-fall`.
pub fn term(field: &str, value: &str) -> Result<String, ApiError> {
    parse_term(value).map(|_| value.to_string()).ok_or_else(|| {
        ApiError::invalid_field(field, "must be a term like 2026-fall or 2027-spring")
    })
}

fn parse_term(value: &str) -> Option<(u16, bool)> {
    let (year, season) = value.split_once('-')?;
    if year.len() != 4 || !year.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: u16 = year.parse().ok()?;
    if !(1900..=9998).contains(&year) {
        return None;
    }
    match season {
        "spring" => Some((year, false)),
        "fall" => Some((year, true)),
        _ => None,
    }
}

/// The term after `term`: spring → fall of the same year, fall → spring of the next.
pub fn next_term(term: &str) -> Option<String> {
    let (year, fall) = parse_term(term)?;
    Some(if fall {
        format!("{}-spring", year + 1)
    } else {
        format!("{year}-fall")
    })
}

/// Money in cents: positive and at most one million in the currency's unit.
pub fn amount_cents(value: i64) -> Result<i64, ApiError> {
    if (1..=100_000_000).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid_field(
            "amount_cents",
            "must be between 1 and 100000000",
        ))
    }
}

/// The error for a row the database refused: a constraint (CHECK, UNIQUE, NOT NULL) means
/// the state written is at fault (422, so an applied event is parked, not retried forever);
/// anything else is a storage failure.
pub fn refused_row(err: rusqlite::Error, what: &str) -> ApiError {
    match &err {
        // CHECK, NOT NULL, UNIQUE, PRIMARY KEY, FOREIGN KEY: the row itself is refused. A
        // trigger's abort (SQLITE_CONSTRAINT_TRIGGER) is the database failing, not the row.
        rusqlite::Error::SqliteFailure(e, message)
            if e.code == rusqlite::ErrorCode::ConstraintViolation
                && matches!(
                    e.extended_code,
                    rusqlite::ffi::SQLITE_CONSTRAINT_CHECK
                        | rusqlite::ffi::SQLITE_CONSTRAINT_NOTNULL
                        | rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                        | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                        | rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
                ) =>
        {
            ApiError::rule(
                "constraint_violation",
                format!(
                    "{what} refused: {}",
                    message.as_deref().unwrap_or("a constraint failed")
                ),
            )
        }
        _ => err.into(),
    }
}

/// Unicode `White_Space`, what `char::is_whitespace` and `str::trim` go by.
const WHITESPACE: &[(char, char)] = &[
    ('\u{9}', '\u{d}'),
    (' ', ' '),
    ('\u{85}', '\u{85}'),
    ('\u{a0}', '\u{a0}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{2000}', '\u{200a}'),
    ('\u{2028}', '\u{2029}'),
    ('\u{202f}', '\u{202f}'),
    ('\u{205f}', '\u{205f}'),
    ('\u{3000}', '\u{3000}'),
];

/// Unicode general category `Cc`, what `char::is_control` goes by.
const CONTROL: &[(char, char)] = &[('\u{0}', '\u{1f}'), ('\u{7f}', '\u{9f}')];

/// The inside of a regex character class holding `ranges` (as `\uXXXX`, which ECMA-262,
/// Python and Rust regexes all read).
fn class(ranges: &[(char, char)]) -> String {
    ranges
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                format!("\\u{:04x}", u32::from(lo))
            } else {
                format!("\\u{:04x}-\\u{:04x}", u32::from(lo), u32::from(hi))
            }
        })
        .collect()
}

/// The JSON schema of a [`text`] field of at most `max` characters.
pub fn text_schema(max: usize) -> Value {
    let (ws, cc) = (class(WHITESPACE), class(CONTROL));
    json!({ "type": "string", "maxLength": max,
            "pattern": format!("^[{ws}]*[^{ws}{cc}]([^{cc}]*[^{ws}{cc}])?[{ws}]*$"),
            "description": format!("not blank, at most {max} characters, no control characters inside; surrounding whitespace is trimmed") })
}

/// The JSON schema of an [`email`] field.
pub fn email_schema() -> Value {
    let ws = class(WHITESPACE);
    let plain = format!("{ws}{}@", class(CONTROL));
    json!({ "type": "string", "maxLength": MAX_EMAIL,
            "pattern": format!("^[{ws}]*[^{plain}]+@[^{plain}.][^{plain}]*\\.[^{plain}]*[^{plain}.][{ws}]*$"),
            "description": "an email address like ada@example.org; trimmed and lower-cased",
            "example": "ada@example.org" })
}

/// A [`term`] as a regex: a year from 1900 to 9998, `-spring` or `-fall`.
const TERM_REGEX: &str =
    "(19[0-9]{2}|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-(spring|fall)";

/// The JSON schema of a [`term`].
pub fn term_schema() -> Value {
    json!({ "type": "string", "pattern": format!("^{TERM_REGEX}$"), "example": "2026-fall" })
}

/// The JSON schema of a term filter: a [`term`], or empty for all terms.
pub fn term_filter_schema() -> Value {
    json!({ "type": "string", "pattern": format!("^({TERM_REGEX})?$"), "example": "2026-fall" })
}

/// The JSON schema of a student [`status`].
pub fn status_schema() -> Value {
    json!({ "type": "string", "enum": ["active", "inactive"] })
}

/// The JSON schema of an [`amount_cents`] field.
pub fn amount_schema() -> Value {
    json!({ "type": "integer", "minimum": 1, "maximum": 100_000_000 })
}

/// `schema`, also accepting `null` (optional request fields: null is the same as absent).
pub fn nullable(mut schema: Value) -> Value {
    schema["nullable"] = json!(true);
    // OpenAPI 3.0: an enum admits null only when it lists it.
    if let Some(values) = schema.get_mut("enum").and_then(Value::as_array_mut) {
        values.push(Value::Null);
    }
    schema
}

/// Whether a SQLite error is a UNIQUE constraint violation.
pub fn is_unique_violation(err: &rusqlite::Error) -> bool {
    matches!(
        err,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_follow_each_other() {
        assert_eq!(next_term("2026-spring").as_deref(), Some("2026-fall"));
        assert_eq!(next_term("2026-fall").as_deref(), Some("2027-spring"));
        assert_eq!(next_term("2026-winter"), None);
        assert_eq!(next_term("26-fall"), None);
    }

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(email(" Ada@Example.ORG ").unwrap(), "ada@example.org");
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.org",
            "ada@example",
            "a b@example.org",
            "a@b@c.org",
            "ada@.example.org",
            "ada@example.org.",
            "a\u{1}a@example.org",
        ] {
            assert!(email(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_schema_classes_are_the_ones_rust_goes_by() {
        let within = |ranges: &[(char, char)], c: char| {
            ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
        };
        for c in (0..=0x10_ffff).filter_map(char::from_u32) {
            assert_eq!(within(WHITESPACE, c), c.is_whitespace(), "{c:?}");
            assert_eq!(within(CONTROL, c), c.is_control(), "{c:?}");
        }
    }

    #[test]
    fn lengths_count_the_value_as_sent() {
        assert!(text("name", &"a".repeat(200), 200).is_ok());
        assert!(text("name", &format!(" {}", "a".repeat(200)), 200).is_err());
        assert!(text("name", " \tAda\n", 200).is_ok());
        assert!(text("name", "A\u{1}da", 200).is_err());
        let local = "a".repeat(MAX_EMAIL - "@example.org".len());
        assert!(email(&format!("{local}@example.org")).is_ok());
        assert!(email(&format!("{local}a@example.org")).is_err());
    }
}
