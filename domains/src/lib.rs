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

use participant::{ApiError, ApiResult, Event};
use rusqlite::Connection;
use serde::de::DeserializeOwned;

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
