//! Applying arbitrary batches of events to a participant (the monolith's database and
//! applier, in memory).
//!
//! Properties: never panics; a batch is refused whole only for a malformed event (4xx), never
//! with a 5xx on a healthy database (that would block the link behind one bad event); applying
//! the same batch again applies nothing that the first time applied or acknowledged (only
//! events it parked are tried again); an entity never ends at a lower version than before.
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use participant::{ApiResult, ApplyReport, Database, Event, WriteMode};
use rusqlite::Connection;
use serde_json::{Map, Value, json};

const ORIGINS: [&str; 5] = ["legacy", "students", "finance", "gamification", "enrollment"];
const KINDS: [&str; 6] = ["student", "invoice", "reward", "enrollment", "course", ""];
const CHANGES: [&str; 4] = [".created", ".updated", ".imported", ".x"];
const KEYS: [&str; 4] = ["k1", "k2", "k3", "k4"];

/// A field's value: what a well-behaved participant sends, or something else.
#[derive(Arbitrary, Debug)]
enum Field {
    Valid,
    Missing,
    Null,
    Text(u8),
    Number(i64),
}

#[derive(Arbitrary, Debug)]
struct EventInput {
    id: u8,
    origin: u8,
    kind: u8,
    change: u8,
    key: u8,
    version: Version,
    /// The entity's id field: the event key, another key, or an own value.
    entity_id: u8,
    fields: Vec<Field>,
    /// Which envelope field is malformed, if any. Rare on purpose: one malformed event
    /// refuses the whole batch, and the fuzzer would learn little else.
    malformed: u8,
}

#[derive(Arbitrary, Debug)]
enum Version {
    Small(u8),
    Large(i64),
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Applied (and committed) before `batch`, so the batch meets existing state.
    before: Vec<EventInput>,
    batch: Vec<EventInput>,
}

/// A valid state of each kind, field by field (the order `Field`s are applied in).
fn template(kind: &str, id: &str) -> Vec<(&'static str, Value)> {
    let base = |fields: Vec<(&'static str, Value)>| {
        let mut all = vec![("id", json!(id))];
        all.extend(fields);
        all
    };
    match kind {
        "student" => base(vec![
            ("email", json!(format!("{id}@example.org"))),
            ("name", json!("Ada")),
            ("status", json!("active")),
            ("created_at", json!("2024-01-01T00:00:00Z")),
            ("updated_at", json!("2024-01-01T00:00:00Z")),
        ]),
        "invoice" => base(vec![
            ("student_id", json!("k1")),
            ("enrollment_id", json!(null)),
            ("term", json!("2024-fall")),
            ("description", json!("tuition")),
            ("amount_cents", json!(1000)),
            ("currency", json!("EUR")),
            ("status", json!("open")),
            ("created_at", json!("2024-01-01T00:00:00Z")),
            ("updated_at", json!("2024-01-01T00:00:00Z")),
            ("paid_at", json!(null)),
            ("cancelled_at", json!(null)),
        ]),
        "reward" => base(vec![
            ("student_id", json!("k1")),
            ("points", json!(10)),
            ("reason", json!("welcome")),
            ("term", json!("2024-fall")),
            ("idempotency_key", json!(null)),
            ("created_at", json!("2024-01-01T00:00:00Z")),
            ("revoked_at", json!(null)),
        ]),
        "enrollment" => base(vec![
            ("student_id", json!("k1")),
            ("course", json!("math")),
            ("term", json!("2024-fall")),
            ("status", json!("active")),
            ("invoice_id", json!("k1")),
            ("renewed_from", json!(null)),
            ("created_at", json!("2024-01-01T00:00:00Z")),
        ]),
        _ => base(vec![("title", json!("x"))]),
    }
}

/// Odd texts for a field: other statuses, emails and ids that collide, an empty one.
const TEXTS: [&str; 8] = ["", "k1", "k2", "paid", "inactive", "graduated", "k1@example.org", "é"];

fn event(input: &EventInput) -> Event {
    let pick = |list: &[&'static str], i: u8| list[usize::from(i) % list.len()];
    let kind = pick(&KINDS, input.kind);
    let key = pick(&KEYS, input.key);
    let entity_id = match input.entity_id % 3 {
        0 => key.to_string(),
        1 => pick(&KEYS, input.entity_id / 3).to_string(),
        _ => format!("own-{}", input.entity_id),
    };
    let mut data = Map::new();
    for (i, (name, valid)) in template(kind, &entity_id).into_iter().enumerate() {
        let value = match input.fields.get(i).unwrap_or(&Field::Valid) {
            Field::Valid => valid,
            Field::Missing => continue,
            Field::Null => Value::Null,
            Field::Text(t) => json!(pick(&TEXTS, *t)),
            Field::Number(n) => json!(n),
        };
        data.insert(name.to_string(), value);
    }
    let mut event = Event {
        id: format!("e{}", input.id % 16),
        seq: 0,
        origin: pick(&ORIGINS, input.origin).to_string(),
        event_type: format!("{kind}{}", pick(&CHANGES, input.change)),
        key: key.to_string(),
        version: match input.version {
            Version::Small(v) => i64::from(v % 16) + 1,
            Version::Large(v) => v.checked_abs().unwrap_or(i64::MAX).max(1),
        },
        at: "2024-01-01T00:00:00Z".to_string(),
        data: Value::Object(data),
    };
    match input.malformed {
        1 => event.id.clear(),
        2 => event.origin.clear(),
        3 => event.key.clear(),
        4 => event.event_type = kind.to_string(),
        5 => event.version = -event.version + 1,
        6 => event.data = Value::Array(Vec::new()),
        _ => {}
    }
    event
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    })
}

fn versions(conn: &Connection) -> ApiResult<BTreeMap<(String, String), (i64, String)>> {
    let mut stmt = conn.prepare("SELECT kind, key, version, origin FROM entity_versions")?;
    let rows = stmt
        .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), (r.get(2)?, r.get(3)?))))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// Applies `events` in one committed transaction: the report, and the entity versions
/// before and after.
fn apply(
    db: &Database,
    events: Vec<Event>,
) -> (
    ApiResult<ApplyReport>,
    BTreeMap<(String, String), (i64, String)>,
    BTreeMap<(String, String), (i64, String)>,
) {
    let run = db.write(WriteMode::Commit, move |w| {
        let before = versions(w.tx())?;
        let report = participant::outbox::apply_batch(w, &events, &legacy_monolith::sync::apply);
        let after = versions(w.tx())?;
        Ok((report, before, after))
    });
    runtime().block_on(run).expect("reading entity versions")
}

fuzz_target!(|input: Input| {
    let db = Database::open(
        Path::new(":memory:"),
        "fuzz",
        legacy_monolith::schema::COMPONENT,
        legacy_monolith::schema::MIGRATIONS,
    )
    .expect("an in-memory database");
    let before: Vec<Event> = input.before.iter().map(event).collect();
    let batch: Vec<Event> = input.batch.iter().map(event).collect();
    let _ = apply(&db, before);

    let (first, old, new) = apply(&db, batch.clone());
    for (entity, (version, _)) in &old {
        let now = new.get(entity).map(|(v, _)| *v);
        assert!(now >= Some(*version), "{entity:?} went from {version} to {now:?}");
    }
    let first = match first {
        Ok(report) => report,
        Err(err) => {
            assert!(
                err.status.is_client_error(),
                "a bad event refused the batch with {err}: {batch:#?}"
            );
            return;
        }
    };
    assert_eq!(
        first.received,
        first.applied + first.duplicates + first.stale + first.rejected,
        "{first:?}"
    );

    let (second, _, again) = apply(&db, batch.clone());
    let second = second.expect("the batch applied once applies again");
    assert!(
        second.applied <= first.rejected,
        "the second time applied {second:?} after {first:?}: {batch:#?}"
    );
    assert!(second.duplicates >= first.applied, "{first:?} then {second:?}");
    for (entity, (version, _)) in &new {
        let now = again.get(entity).map(|(v, _)| *v);
        assert!(now >= Some(*version), "{entity:?} went from {version} to {now:?}");
    }
});
