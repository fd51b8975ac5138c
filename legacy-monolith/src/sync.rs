//! The monolith's side of the data sync: applying other participants' events to its tables,
//! and giving rows that have no event yet (an imported database) their first one.

use participant::outbox::Applier;
use participant::{ApiResult, Event, Write};
use rusqlite::{Connection, Row};
use serde::Serialize;

use domains::Kind;
use domains::enrollments::{self as enrollment, Enrollment};
use domains::finance::{self, Invoice};
use domains::gamification::{self, Reward};
use domains::students::{self, Student};

/// The kinds of entity the monolith holds: all of them.
pub const HOLDS: &[Kind] = &[Kind::Student, Kind::Invoice, Kind::Reward, Kind::Enrollment];

/// Writes the entity state an event carries into the monolith's tables.
pub fn apply(conn: &Connection, event: &Event) -> ApiResult<()> {
    domains::apply(conn, event, HOLDS, "the monolith")
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
