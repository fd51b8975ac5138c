//! Field rules shared by the domains: what a valid email, name, term or amount is.

use participant::ApiError;

pub fn email(value: &str) -> Result<String, ApiError> {
    let email = value.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !email.chars().any(char::is_whitespace)
        && email.matches('@').count() == 1;
    if valid {
        Ok(email)
    } else {
        Err(ApiError::invalid_field(
            "email",
            "must be an email address like ada@example.org",
        ))
    }
}

/// A required, trimmed, non-empty text of at most `max` characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ApiError::invalid_field(field, "must not be empty"));
    }
    if trimmed.chars().count() > max {
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
        rusqlite::Error::SqliteFailure(e, message)
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
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
        ] {
            assert!(email(bad).is_err(), "{bad:?} accepted");
        }
    }
}
