//! The monolith's side of the data sync: applying other participants' events to its tables,
//! and giving rows that have no event yet (an imported database) their first one.

use participant::outbox::Applier;
use participant::{ApiError, ApiResult, Event, Write};
use rusqlite::{Connection, Row};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::enrollment::{self, Enrollment};
use crate::finance::{self, Invoice};
use crate::gamification::{self, Reward};
use crate::students::{self, Student};

fn state<T: DeserializeOwned>(event: &Event) -> ApiResult<T> {
    serde_json::from_value(event.data.clone()).map_err(|err| {
        ApiError::invalid_field("data", format!("not a valid {}: {err}", event.kind()))
    })
}

/// Writes the entity state an event carries into the monolith's tables.
pub fn apply(conn: &Connection, event: &Event) -> ApiResult<()> {
    match event.kind() {
        "student" => students::upsert(conn, &state::<Student>(event)?),
        "invoice" => finance::upsert(conn, &state::<Invoice>(event)?),
        "reward" => gamification::upsert(conn, &state::<Reward>(event)?),
        "enrollment" => enrollment::upsert(conn, &state::<Enrollment>(event)?),
        other => Err(ApiError::rule(
            "unknown_event_type",
            format!(
                "the monolith holds no {other} entities ({})",
                event.event_type
            ),
        )),
    }
}

pub fn applier() -> std::sync::Arc<Applier> {
    std::sync::Arc::new(apply)
}

/// Records `KIND.imported` for every row of `table` that has no version yet, so that a feed
/// read from 0 is a complete snapshot. Returns how many rows it gave events.
fn backfill_table<T: Serialize>(
    w: &mut Write<'_>,
    kind: &str,
    table: &str,
    columns: &str,
    from_row: fn(&Row<'_>) -> rusqlite::Result<T>,
    id: fn(&T) -> &str,
) -> ApiResult<usize> {
    let rows = {
        let mut stmt = w.tx().prepare(&format!(
            "SELECT {columns} FROM {table} t WHERE NOT EXISTS
                 (SELECT 1 FROM entity_versions v WHERE v.kind = ?1 AND v.key = t.id)
             ORDER BY t.id"
        ))?;
        stmt.query_map([kind], from_row)?
            .collect::<rusqlite::Result<Vec<T>>>()?
    };
    let event_type = format!("{kind}.imported");
    for row in &rows {
        w.record(&event_type, id(row), row)?;
    }
    Ok(rows.len())
}

/// Gives every row without an event its `imported` event, students first so that a consumer
/// replaying the feed meets each student before what refers to it.
pub fn backfill(w: &mut Write<'_>) -> ApiResult<usize> {
    Ok(backfill_table(
        w,
        "student",
        "students",
        students::COLUMNS,
        Student::from_row,
        |s| &s.id,
    )? + backfill_table(
        w,
        "invoice",
        "invoices",
        finance::COLUMNS,
        Invoice::from_row,
        |i| &i.id,
    )? + backfill_table(
        w,
        "reward",
        "rewards",
        gamification::COLUMNS,
        Reward::from_row,
        |r| &r.id,
    )? + backfill_table(
        w,
        "enrollment",
        "enrollments",
        enrollment::COLUMNS,
        Enrollment::from_row,
        |e| &e.id,
    )?)
}
