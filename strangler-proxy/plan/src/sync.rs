//! What a plan says about `[[sync]]` links: where each reads its events (a participant's
//! feed, or a PostgreSQL outbox table) and where it delivers them (a participant's
//! `POST /_events`, or a PostgreSQL inbox table).
//!
//! ```toml
//! [[sync]]
//! from = { postgres = "postgres://app:secret@db:5432/shop", table = "outbox", origin = "legacy" }
//! to = "students"
//!
//! [[sync]]
//! from = "students"
//! to = { postgres = "postgres://app:secret@db:5432/shop", table = "inbox", name = "legacy" }
//! ```
//!
//! A URL keeps its password for the driver only: [`PgTable`] shows and debug-prints it
//! without one.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, de::value::MapAccessDeserializer};
use toml::Spanned;

use crate::location::redact;

/// A one-way event sync from a source to a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncLink {
    pub from: LinkSource,
    pub to: LinkTarget,
    /// Event type patterns (`student.*`, `invoice.paid`); empty: every type.
    pub types: Vec<String>,
}

impl SyncLink {
    /// `from->to` (each end's [`LinkSource::name`] and [`LinkTarget::name`]): the link's
    /// name in the store, `sync status` and messages.
    pub fn name(&self) -> String {
        format!("{}->{}", self.from.name(), self.to.name())
    }

    /// Whether `participant` is one of the link's ends (by name).
    pub fn touches(&self, participant: &str) -> bool {
        self.from.name() == participant || self.to.name() == participant
    }
}

/// Where a link reads events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkSource {
    /// A participant's `GET /_events`, by service name.
    Service(String),
    /// Rows an application commits to a PostgreSQL outbox table.
    Outbox(PgOutbox),
}

impl LinkSource {
    /// The service's name, or the outbox's origin.
    pub fn name(&self) -> &str {
        match self {
            LinkSource::Service(name) => name,
            LinkSource::Outbox(outbox) => &outbox.origin,
        }
    }

    /// The plan's service this end is, if it is one.
    pub fn service(&self) -> Option<&str> {
        match self {
            LinkSource::Service(name) => Some(name),
            LinkSource::Outbox(_) => None,
        }
    }
}

/// Where a link delivers events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkTarget {
    /// A participant's `POST /_events`, by service name.
    Service(String),
    /// A PostgreSQL inbox table the application applies from.
    Inbox(PgInbox),
}

impl LinkTarget {
    /// The service's name, or the inbox's name: events that originated under this name are
    /// never sent to it.
    pub fn name(&self) -> &str {
        match self {
            LinkTarget::Service(name) => name,
            LinkTarget::Inbox(inbox) => &inbox.name,
        }
    }

    /// The plan's service this end is, if it is one.
    pub fn service(&self) -> Option<&str> {
        match self {
            LinkTarget::Service(name) => Some(name),
            LinkTarget::Inbox(_) => None,
        }
    }
}

/// A table in a PostgreSQL database.
#[derive(Clone, PartialEq, Eq)]
pub struct PgTable {
    /// The connection URL as written, password included: for the driver only.
    url: String,
    /// `table` or `schema.table`, checked to be plain identifiers (used unquoted in SQL, so
    /// folded to lower case as PostgreSQL does).
    pub table: String,
}

impl PgTable {
    pub(crate) fn new(url: String, table: String) -> Self {
        Self { url, table }
    }

    /// The connection URL with its password: for the driver only, never for a message.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The table's name without its schema.
    pub fn unqualified(&self) -> &str {
        self.table.rsplit('.').next().unwrap_or(&self.table)
    }
}

impl fmt::Display for PgTable {
    /// `outbox at postgres://app:***@db:5432/shop`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.table, redact(&self.url))
    }
}

impl fmt::Debug for PgTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgTable({self})")
    }
}

/// A transactional outbox table: the application inserts one row per change in the
/// change's transaction; the relay reads committed rows in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOutbox {
    pub at: PgTable,
    /// The participant the rows come from (the events' origin unless a row names another);
    /// the source's name in the link's name.
    pub origin: String,
    /// The `NOTIFY` channel that wakes the relay (default: the table's unqualified name).
    pub channel: String,
    /// Per entity kind, the query `strangler verify` reads the application's rows with.
    pub snapshot: SnapshotQueries,
}

/// Per entity kind (`student`), a query answering `key`, `version` and `state` after `$1`,
/// at most `$2` rows, in key byte order: how `strangler verify` reads a PostgreSQL side.
pub type SnapshotQueries = std::collections::BTreeMap<String, String>;

/// An inbox table: the relay inserts each event once (by id); the application applies
/// them with its own code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgInbox {
    pub at: PgTable,
    /// Who the inbox belongs to: events whose origin is this name are not sent to it (no
    /// echo); the target's name in the link's name. Default `pg:DATABASE/TABLE`.
    pub name: String,
    /// Per entity kind, the query `strangler verify` reads the application's rows with.
    pub snapshot: SnapshotQueries,
}

/// Whether `text` is a table name the relay may put into SQL unquoted: `table` or
/// `schema.table`, each part a letter or `_` then letters, digits or `_`, at most 63 bytes
/// (PostgreSQL's limit).
pub fn is_table_name(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    parts.len() <= 2 && parts.iter().all(|p| is_identifier(p))
}

/// A plain SQL identifier: a letter or `_`, then letters, digits or `_`, at most 63 bytes.
pub fn is_identifier(text: &str) -> bool {
    let mut bytes = text.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && text.len() <= 63
}

/// A link end as written: a service's name, or a table given by its keys.
pub(crate) enum RawEndpoint<T> {
    Name(String),
    Table(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for RawEndpoint<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Either<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Either<T> {
            type Value = RawEndpoint<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a service's name, or a table like { postgres = \"postgres://...\", table = \"...\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawEndpoint::Name(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(RawEndpoint::Table)
            }
        }
        deserializer.deserialize_any(Either(PhantomData))
    }
}

/// `from = { postgres = "...", table = "outbox", origin = "legacy" }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOutbox {
    pub postgres: Spanned<String>,
    pub table: Spanned<String>,
    pub origin: Spanned<String>,
    pub notify: Option<Spanned<String>>,
    pub snapshot: Option<RawSnapshot>,
}

/// `snapshot = { student = "SELECT ..." }`.
pub(crate) type RawSnapshot = std::collections::BTreeMap<Spanned<String>, Spanned<String>>;

/// `to = { postgres = "...", table = "inbox" }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInbox {
    pub postgres: Spanned<String>,
    pub table: Spanned<String>,
    pub name: Option<Spanned<String>>,
    pub snapshot: Option<RawSnapshot>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSync {
    pub from: Spanned<RawEndpoint<RawOutbox>>,
    pub to: Spanned<RawEndpoint<RawInbox>>,
    #[serde(default)]
    pub types: Vec<Spanned<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        for good in ["outbox", "app.outbox", "_x1", "Outbox_2"] {
            assert!(is_table_name(good), "{good}");
        }
        for bad in [
            "",
            "a.b.c",
            "1outbox",
            "out box",
            "outbox;drop table x",
            "\"outbox\"",
            ".outbox",
            "app.",
            &"x".repeat(64),
        ] {
            assert!(!is_table_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_table_never_shows_its_password() {
        let t = PgTable::new(
            "postgres://app:secret@db:5432/shop".into(),
            "app.outbox".into(),
        );
        assert_eq!(
            t.to_string(),
            "app.outbox at postgres://app:***@db:5432/shop"
        );
        assert!(!format!("{t:?}").contains("secret"));
        assert_eq!(t.unqualified(), "outbox");
        assert!(t.url().contains("secret"));
    }
}
