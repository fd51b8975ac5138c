//! What every participant in the strangler migration shares: the legacy monolith and each
//! extracted service keep their data in SQLite, publish every change through a transactional
//! outbox, serve it as an event feed and apply the feeds of the others.
//!
//! Layout:
//! - [`db`]: connections, versioned migrations, write transactions (commit or dry run);
//! - [`outbox`]: the event model, recording local changes, applying remote ones;
//! - [`feed`]: `GET /_events` and `POST /_events`;
//! - [`snapshot`]: `GET /_snapshot`, entity state in key order, for `strangler verify`;
//! - [`extract`]: request extractors with JSON errors, and the dry-run header;
//! - [`error`]: the `{"error":{"code","message"}}` type;
//! - [`server`]: health, readiness, JSON 404/405, body cap, graceful shutdown;
//! - [`openapi`]: OpenAPI documents composed from per-domain pieces, and the shared ones.

pub mod db;
pub mod error;
pub mod extract;
pub mod feed;
pub mod openapi;
pub mod outbox;
pub mod server;
pub mod snapshot;

pub use db::{Database, Migration, Write};
pub use error::{ApiError, ApiResult};
pub use extract::{ApiQuery, JsonBody, PathId, WriteMode};
pub use outbox::{ApplyReport, Event};

use time::OffsetDateTime;

/// A new time-ordered id (UUIDv7), as every participant assigns to what it accepts.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Now as RFC 3339 UTC with millisecond precision, e.g. `2026-11-23T10:15:30.120Z`
/// (always three fraction digits, so timestamps sort as text).
pub fn now() -> String {
    let t = OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}
