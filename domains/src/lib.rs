//! The school's business domains as modules, each owning its record types, row mapping,
//! storage (`upsert` serves local writes and replicated events alike), schema and HTTP
//! routes:
//!
//! - [`students`]: registration, lookup, listing, update, deactivation;
//! - [`finance`]: invoices, payment at most once, cancellation;
//! - [`gamification`]: rewards (idempotent grants, revocation), points, levels, badges;
//! - [`enrollments`]: enrollment records and the answers of the enrollment process;
//! - [`fields`]: the validation rules they share;
//! - [`service`]: a data service, one domain over its own database.
//!
//! The legacy monolith mounts all of them over one database. Each extracted data service
//! mounts one over a database of its own, which also holds a read model of the students it
//! refers to (kept current by the sync relay).

pub mod enrollments;
pub mod fields;
pub mod finance;
pub mod gamification;
pub mod service;
pub mod students;

use axum::Router;
use participant::snapshot::KindReader;
use participant::{ApiError, ApiResult, Database, Event};
use rusqlite::{Connection, Row};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Entity kinds as they appear in event types (`student.updated` → `student`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Student,
    Invoice,
    Reward,
    Enrollment,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Student => "student",
            Kind::Invoice => "invoice",
            Kind::Reward => "reward",
            Kind::Enrollment => "enrollment",
        }
    }

    /// Reads this kind's entities for `GET /_snapshot`: its table's rows in key order, each
    /// as the state its events carry.
    pub fn snapshot(self) -> KindReader {
        match self {
            Kind::Student => |conn, after, limit| {
                rows_after(
                    conn,
                    "students",
                    students::COLUMNS,
                    students::Student::from_row,
                    after,
                    limit,
                )
            },
            Kind::Invoice => |conn, after, limit| {
                rows_after(
                    conn,
                    "invoices",
                    finance::COLUMNS,
                    finance::Invoice::from_row,
                    after,
                    limit,
                )
            },
            Kind::Reward => |conn, after, limit| {
                rows_after(
                    conn,
                    "rewards",
                    gamification::COLUMNS,
                    gamification::Reward::from_row,
                    after,
                    limit,
                )
            },
            Kind::Enrollment => |conn, after, limit| {
                rows_after(
                    conn,
                    "enrollments",
                    enrollments::COLUMNS,
                    enrollments::Enrollment::from_row,
                    after,
                    limit,
                )
            },
        }
    }
}

/// `GET /_snapshot` over `db` for the kinds a participant holds.
pub fn snapshot_routes(db: Database, holds: &[Kind]) -> Router {
    participant::snapshot::routes(db, holds.iter().map(|k| (k.name(), k.snapshot())).collect())
}

/// Rows of `table` whose `id` sorts after `after` (SQLite compares `TEXT` byte by byte, the
/// snapshot's key order), at most `limit`, as `(id, state)`.
fn rows_after<T: Serialize>(
    conn: &Connection,
    table: &str,
    columns: &str,
    from_row: fn(&Row<'_>) -> rusqlite::Result<T>,
    after: &str,
    limit: u32,
) -> ApiResult<Vec<(String, Value)>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {columns} FROM {table} WHERE id > ?1 ORDER BY id LIMIT ?2"
    ))?;
    let rows = stmt
        .query_map((after, limit), from_row)?
        .collect::<rusqlite::Result<Vec<T>>>()?;
    rows.iter()
        .map(|row| {
            let state = serde_json::to_value(row)
                .map_err(|err| ApiError::internal(format!("cannot encode a {table} row: {err}")))?;
            let key = state["id"].as_str().unwrap_or_default().to_string();
            Ok((key, state))
        })
        .collect()
}

fn state<T: DeserializeOwned>(event: &Event) -> ApiResult<T> {
    serde_json::from_value(event.data.clone()).map_err(|err| {
        ApiError::invalid_field("data", format!("not a valid {}: {err}", event.kind()))
    })
}

/// Writes the entity state an event carries, for the kinds a participant holds; any other
/// kind is refused (422) so a misrouted link is noticed, not silently dropped.
pub fn apply(conn: &Connection, event: &Event, holds: &[Kind], participant: &str) -> ApiResult<()> {
    match holds.iter().find(|k| k.name() == event.kind()) {
        Some(Kind::Student) => students::upsert(conn, &state(event)?),
        Some(Kind::Invoice) => finance::upsert(conn, &state(event)?),
        Some(Kind::Reward) => gamification::upsert(conn, &state(event)?),
        Some(Kind::Enrollment) => enrollments::upsert(conn, &state(event)?),
        None => Err(ApiError::rule(
            "unknown_event_type",
            format!(
                "{participant} holds no {} entities ({})",
                event.kind(),
                event.event_type
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn event(event_type: &str, key: &str, data: Value) -> Event {
        Event {
            id: format!("{event_type}-{key}"),
            seq: 0,
            origin: "students".into(),
            event_type: event_type.into(),
            key: key.into(),
            version: 1,
            at: "2024-01-01T00:00:00Z".into(),
            data,
        }
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/apply_batch.rs`): state the schema refuses (a
    /// status outside a CHECK, a taken idempotency key) answered 500, which refuses the whole
    /// batch as a storage failure, so the relay retried it forever behind one bad event.
    #[test]
    fn a_row_the_schema_refuses_is_a_refusal_not_a_storage_failure() {
        let conn = Connection::open_in_memory().unwrap();
        for sql in [
            students::SCHEMA,
            finance::SCHEMA,
            gamification::SCHEMA,
            gamification::REVOCATION,
        ] {
            conn.execute_batch(sql).unwrap();
        }
        let at = "2024-01-01T00:00:00Z";
        let reward = |id: &str| {
            json!({"id": id, "student_id": "s1", "points": 10, "reason": "welcome",
                   "term": null, "idempotency_key": "grant-1", "created_at": at})
        };
        let all = [Kind::Student, Kind::Invoice, Kind::Reward];
        apply(
            &conn,
            &event("reward.created", "r1", reward("r1")),
            &all,
            "t",
        )
        .unwrap();
        let cases = [
            event(
                "student.imported",
                "k2",
                json!({"id": "k1", "email": "k1", "name": "k1", "status": "k1",
                       "created_at": at, "updated_at": at}),
            ),
            event(
                "invoice.created",
                "i1",
                json!({"id": "i1", "student_id": "s1", "enrollment_id": null, "term": null,
                       "description": "tuition", "amount_cents": 1000, "currency": "EUR",
                       "status": "refunded", "created_at": at, "updated_at": at,
                       "paid_at": null, "cancelled_at": null}),
            ),
            event("reward.created", "r2", reward("r2")),
        ];
        for case in cases {
            let err = apply(&conn, &case, &all, "t").unwrap_err();
            assert_eq!(
                (err.status.as_u16(), err.code),
                (422, "constraint_violation"),
                "{}: {err}",
                case.event_type
            );
        }
    }
}
