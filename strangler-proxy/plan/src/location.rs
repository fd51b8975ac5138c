//! Where the state store lives: an embedded SQLite file (the default) or a PostgreSQL
//! database that a fleet of proxies shares.

use std::fmt;
use std::path::{Path, PathBuf};

/// The state store a plan (or `--state` / `STRANGLER_STATE`) names.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A SQLite file.
    File(PathBuf),
    /// A PostgreSQL connection URL (`postgres://user:pass@host:5432/db`).
    Postgres(String),
}

impl StoreLocation {
    /// Reads what a user wrote: a `postgres://` or `postgresql://` URL, or a file path.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("must name the state store: a file path or a postgres:// URL".into());
        }
        if is_postgres_url(text) {
            check_postgres_url(text)?;
            return Ok(StoreLocation::Postgres(text.to_string()));
        }
        if text.contains("://") {
            return Err(format!(
                "{text}: unknown store scheme (a file path, or postgres://user:pass@host:5432/db)"
            ));
        }
        Ok(StoreLocation::File(PathBuf::from(text)))
    }

    /// A file path relative to `dir` made absolute against it; URLs as they are.
    pub fn relative_to(self, dir: &Path) -> Self {
        match self {
            StoreLocation::File(path) if path.is_relative() => StoreLocation::File(dir.join(path)),
            other => other,
        }
    }

    /// The SQLite file, if the store is one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            StoreLocation::File(path) => Some(path),
            StoreLocation::Postgres(_) => None,
        }
    }

    /// The connection URL as written (with its password): for the driver only.
    pub fn url(&self) -> Option<&str> {
        match self {
            StoreLocation::Postgres(url) => Some(url),
            StoreLocation::File(_) => None,
        }
    }
}

/// Whether `text` is a `postgres://` or `postgresql://` URL.
pub fn is_postgres_url(text: &str) -> bool {
    let lower = text.trim().to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// Checks that a PostgreSQL URL names a server; the reason never shows the password.
pub fn check_postgres_url(url: &str) -> Result<(), String> {
    let rest = url.split_once("://").map_or("", |(_, r)| r);
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    if host.is_empty() || host.starts_with('/') || host.starts_with('?') {
        return Err(format!(
            "{} names no database server (postgres://user:pass@host:5432/db)",
            redact(url)
        ));
    }
    Ok(())
}

/// The database a PostgreSQL URL names (`db` in `postgres://u:p@host:5432/db?...`), if any.
pub fn postgres_database(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let host_and_path = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let path = host_and_path.split_once('/')?.1;
    let db = path.split(['?', '#']).next()?;
    (!db.is_empty()).then_some(db)
}

/// `postgres://user:***@host/db`: a URL fit for logs and error messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://{userinfo}@{host}"),
        },
        None => url.to_string(),
    }
}

impl fmt::Display for StoreLocation {
    /// The file's path, or the URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::File(path) => write!(f, "{}", path.display()),
            StoreLocation::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreLocation({self})")
    }
}

impl std::str::FromStr for StoreLocation {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        Self::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_urls() {
        assert_eq!(
            StoreLocation::parse("data/strangler.db"),
            Ok(StoreLocation::File("data/strangler.db".into()))
        );
        let pg = StoreLocation::parse("postgres://app:secret@db.internal:5432/strangler").unwrap();
        assert_eq!(
            pg.url(),
            Some("postgres://app:secret@db.internal:5432/strangler")
        );
        assert_eq!(
            pg.to_string(),
            "postgres://app:***@db.internal:5432/strangler"
        );
        assert!(!format!("{pg:?}").contains("secret"));
        assert!(StoreLocation::parse("postgresql://db/x").is_ok());
        assert!(StoreLocation::parse("postgres://").is_err());
        assert!(
            StoreLocation::parse("mysql://db/x")
                .unwrap_err()
                .contains("unknown store scheme")
        );
        assert!(StoreLocation::parse("  ").is_err());
        assert_eq!(
            postgres_database("postgres://u:p@db:5432/app?sslmode=require"),
            Some("app")
        );
        assert_eq!(postgres_database("postgres://u:p@db:5432"), None);
        assert_eq!(postgres_database("postgres://db/?x=1"), None);
        assert_eq!(
            StoreLocation::parse("s.db")
                .unwrap()
                .relative_to(Path::new("/plan")),
            StoreLocation::File("/plan/s.db".into())
        );
    }
}
