//! The transactional outbox: every change and its event commit together, and events from
//! other participants are applied idempotently (by id) and in version order (by entity).

use rusqlite::{Connection, OptionalExtension, Row};
use serde_json::Value;

pub use strangler_feed::{ApplyReport, Event, kind_of};

use crate::db::Migration;
use crate::error::{ApiError, ApiResult};

pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "outbox and entity versions",
        sql: "
        CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            origin TEXT NOT NULL,
            type TEXT NOT NULL,
            key TEXT NOT NULL,
            version INTEGER NOT NULL,
            at TEXT NOT NULL,
            data TEXT NOT NULL
        );
        CREATE TABLE entity_versions (
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            version INTEGER NOT NULL,
            origin TEXT NOT NULL,
            PRIMARY KEY (kind, key)
        ) WITHOUT ROWID;
    ",
    },
    Migration {
        version: 2,
        name: "parked events",
        sql: "
        CREATE TABLE parked_events (
            id TEXT PRIMARY KEY,
            origin TEXT NOT NULL,
            type TEXT NOT NULL,
            key TEXT NOT NULL,
            version INTEGER NOT NULL,
            at TEXT NOT NULL,
            data TEXT NOT NULL,
            error TEXT NOT NULL,
            parked_at TEXT NOT NULL
        );
    ",
    },
];

/// Checks an incoming event before it is applied.
fn validate(event: &Event) -> ApiResult<()> {
    let field = |name: &str, problem: &str| ApiError::invalid_field(name, problem);
    if event.id.is_empty() {
        return Err(field("id", "must not be empty"));
    }
    if event.origin.is_empty() {
        return Err(field("origin", "must not be empty"));
    }
    if event.key.is_empty() {
        return Err(field("key", "must not be empty"));
    }
    if !event.event_type.contains('.') {
        return Err(field("type", "must look like `entity.change`"));
    }
    if event.version < 1 {
        return Err(field("version", "must be at least 1"));
    }
    if !event.data.is_object() {
        return Err(field("data", "must be the entity's state as an object"));
    }
    Ok(())
}

fn event_from_row(row: &Row<'_>) -> rusqlite::Result<Event> {
    let data: String = row.get("data")?;
    Ok(Event {
        seq: row.get("seq")?,
        id: row.get("id")?,
        origin: row.get("origin")?,
        event_type: row.get("type")?,
        key: row.get("key")?,
        version: row.get("version")?,
        at: row.get("at")?,
        data: serde_json::from_str(&data).unwrap_or(Value::Null),
    })
}

/// Events with `seq > after`, oldest first, at most `limit`.
pub fn read_after(conn: &Connection, after: i64, limit: u32) -> ApiResult<Vec<Event>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, id, origin, type, key, version, at, data FROM outbox
         WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let events = stmt
        .query_map((after, limit), event_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(events)
}

/// Current (version, origin) of an entity, if any change to it is known.
fn current_version(conn: &Connection, kind: &str, key: &str) -> ApiResult<Option<(i64, String)>> {
    Ok(conn
        .query_row(
            "SELECT version, origin FROM entity_versions WHERE kind = ?1 AND key = ?2",
            (kind, key),
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

fn set_version(
    conn: &Connection,
    kind: &str,
    key: &str,
    version: i64,
    origin: &str,
) -> ApiResult<()> {
    conn.execute(
        "INSERT INTO entity_versions (kind, key, version, origin) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (kind, key) DO UPDATE SET version = excluded.version, origin = excluded.origin",
        (kind, key, version, origin),
    )?;
    Ok(())
}

fn insert(conn: &Connection, event: &Event) -> ApiResult<i64> {
    let data = serde_json::to_string(&event.data)
        .map_err(|err| ApiError::internal(format!("cannot encode event data: {err}")))?;
    conn.execute(
        "INSERT INTO outbox (id, origin, type, key, version, at, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        (
            &event.id,
            &event.origin,
            &event.event_type,
            &event.key,
            event.version,
            &event.at,
            data,
        ),
    )?;
    Ok(conn.last_insert_rowid())
}

/// Records a local change: next version of the entity, origin = this participant.
pub(crate) fn record_local(
    conn: &Connection,
    origin: &str,
    event_type: &str,
    key: &str,
    data: Value,
) -> ApiResult<Event> {
    let kind = kind_of(event_type);
    let version = current_version(conn, kind, key)?.map_or(1, |(v, _)| v + 1);
    set_version(conn, kind, key, version, origin)?;
    let mut event = Event {
        id: crate::new_id(),
        seq: 0,
        origin: origin.to_string(),
        event_type: event_type.to_string(),
        key: key.to_string(),
        version,
        at: crate::now(),
        data,
    };
    event.seq = insert(conn, &event)?;
    Ok(event)
}

pub(crate) fn record_applied(conn: &Connection, event: &Event) -> ApiResult<i64> {
    set_version(conn, event.kind(), &event.key, event.version, &event.origin)?;
    insert(conn, event)
}

/// Whether an entity already has a version (used to give imported rows their first event).
pub fn has_version(conn: &Connection, kind: &str, key: &str) -> ApiResult<bool> {
    Ok(current_version(conn, kind, key)?.is_some())
}

/// Applies one entity's state from an event to the participant's domain tables.
pub type Applier = dyn Fn(&Connection, &Event) -> ApiResult<()> + Send + Sync;

/// Applies `events` in order within `write`: duplicates by id and stale versions are
/// acknowledged without effect; the rest go through `applier` and into this outbox.
pub fn apply_batch(
    write: &mut crate::db::Write<'_>,
    events: &[Event],
    applier: &Applier,
) -> ApiResult<ApplyReport> {
    let mut report = ApplyReport {
        received: events.len(),
        ..ApplyReport::default()
    };
    for (i, event) in events.iter().enumerate() {
        validate(event).map_err(|err| ApiError {
            message: format!("events[{i}].{}", err.message),
            ..err
        })?;
        let known: bool = write.tx().query_row(
            "SELECT EXISTS(SELECT 1 FROM outbox WHERE id = ?1)",
            [&event.id],
            |r| r.get(0),
        )?;
        if known {
            report.duplicates += 1;
            continue;
        }
        if let Some((version, origin)) = current_version(write.tx(), event.kind(), &event.key)?
            && (event.version, event.origin.as_str()) <= (version, origin.as_str())
        {
            report.stale += 1;
            continue;
        }
        // Each event in a savepoint: a refused one leaves nothing behind.
        write.tx().execute_batch("SAVEPOINT apply_event")?;
        match applier(write.tx(), event) {
            Ok(()) => {
                write.tx().execute_batch("RELEASE apply_event")?;
                write.record_applied(event)?;
                write
                    .tx()
                    .execute("DELETE FROM parked_events WHERE id = ?1", [&event.id])?;
                report.applied += 1;
            }
            // The participant itself failed (storage): the whole batch is retried later.
            Err(err) if err.status.is_server_error() => {
                write
                    .tx()
                    .execute_batch("ROLLBACK TO apply_event; RELEASE apply_event")?;
                return Err(ApiError {
                    message: format!(
                        "events[{i}] ({} {}): {}",
                        event.event_type, event.key, err.message
                    ),
                    ..err
                });
            }
            Err(err) => {
                write
                    .tx()
                    .execute_batch("ROLLBACK TO apply_event; RELEASE apply_event")?;
                let why = format!(
                    "{} {} from {}: {}: {}",
                    event.event_type, event.key, event.origin, err.code, err.message
                );
                tracing::warn!(event = %event.id, reason = %why, "event parked");
                park(write.tx(), event, &why)?;
                report.rejected += 1;
                report.first_rejection.get_or_insert(why);
            }
        }
    }
    Ok(report)
}

fn park(conn: &Connection, event: &Event, why: &str) -> ApiResult<()> {
    let data = serde_json::to_string(&event.data)
        .map_err(|err| ApiError::internal(format!("cannot encode event data: {err}")))?;
    conn.execute(
        "INSERT INTO parked_events (id, origin, type, key, version, at, data, error, parked_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (id) DO UPDATE SET error = excluded.error, parked_at = excluded.parked_at",
        rusqlite::params![
            event.id,
            event.origin,
            event.event_type,
            event.key,
            event.version,
            event.at,
            data,
            why,
            crate::now()
        ],
    )?;
    Ok(())
}
