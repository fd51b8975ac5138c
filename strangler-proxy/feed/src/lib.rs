//! The event feed's wire types: what every participant serves on `GET /_events` and accepts
//! on `POST /_events`, and the entity snapshots it serves on `GET /_snapshot` for
//! `strangler verify`. The toolkit's sync relay and the participants both speak it, so it
//! lives apart from either, with nothing but serde beneath it.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One change to one entity, as carried by the event feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Globally unique (UUIDv7), assigned by the participant that accepted the write.
    pub id: String,
    /// Position in the serving participant's feed (commit order); ignored when applied.
    #[serde(default)]
    pub seq: i64,
    /// The participant that accepted the write.
    pub origin: String,
    /// `entity.change`, e.g. `student.updated`; the part before the dot is the entity kind.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The entity's id.
    pub key: String,
    /// Per-entity version, increasing with every change wherever it was made.
    pub version: i64,
    /// When the origin accepted the write (RFC 3339 UTC).
    pub at: String,
    /// The entity's full state after the change.
    pub data: Value,
}

impl Event {
    /// The entity kind, the part of the type before the first dot.
    pub fn kind(&self) -> &str {
        kind_of(&self.event_type)
    }
}

/// The entity kind of an event type (`student.updated` → `student`).
pub fn kind_of(event_type: &str) -> &str {
    event_type.split('.').next().unwrap_or(event_type)
}

/// A page of the feed (`GET /_events?after=SEQ&limit=N&wait=MS`).
#[derive(Debug, Serialize, Deserialize)]
pub struct FeedPage {
    pub events: Vec<Event>,
    /// Pass as `after` to read on: the last `seq` served, or `after` when none was.
    pub next: i64,
    /// The newest committed `seq` when the page was read, so a reader knows how far behind
    /// it is.
    #[serde(default)]
    pub head: i64,
}

/// A batch pushed to `POST /_events`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    pub events: Vec<Event>,
}

/// What became of a batch of incoming events (the answer to `POST /_events`).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// Events in the batch.
    pub received: usize,
    /// Events that changed this participant's state (the "new" ones).
    pub applied: usize,
    /// Events already known by id: acknowledged, not applied again.
    pub duplicates: usize,
    /// Events older than the version already held for their entity: acknowledged, ignored.
    pub stale: usize,
    /// Events this participant refused (a conflict, a kind it does not hold): acknowledged
    /// and parked in `parked_events` for an operator, so one bad event does not stop the
    /// ones behind it. A parked event delivered again is tried again.
    #[serde(default)]
    pub rejected: usize,
    /// Why the first refused event was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_rejection: Option<String>,
}

impl ApplyReport {
    /// Adds another batch's report to this one (the first rejection stays first).
    pub fn absorb(&mut self, other: ApplyReport) {
        self.received += other.received;
        self.applied += other.applied;
        self.duplicates += other.duplicates;
        self.stale += other.stale;
        self.rejected += other.rejected;
        if self.first_rejection.is_none() {
            self.first_rejection = other.first_rejection;
        }
    }
}

/// One entity's current state, as `GET /_snapshot` serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entity {
    /// The entity's id, the key its events carry.
    pub key: String,
    /// The version of the last change the participant recorded or applied for it; 0 when it
    /// knows no event for the entity (a row written behind its outbox's back).
    pub version: i64,
    /// Its full state, the shape its events carry in `data`.
    pub state: Value,
}

/// A page of one kind's entities (`GET /_snapshot?type=KIND&after=KEY&limit=N`), in key
/// order: the byte order of the keys' UTF-8 (what SQLite's `BINARY` collation and
/// PostgreSQL's `COLLATE "C"` sort by), so two sides of a link walk in the same order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotPage {
    /// Entities whose key sorts after `after`, at most `limit`.
    pub entities: Vec<Entity>,
    /// Pass as `after` to read on; absent (`null`) on the last page.
    pub next: Option<String>,
}

/// The entity kinds a participant serves snapshots of (`GET /_snapshot/types`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotTypes {
    /// Kinds as event types name them (`student` for `student.updated`).
    pub types: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_and_defaults() {
        let text = r#"{"id":"e1","origin":"legacy","type":"student.updated","key":"s1","version":2,"at":"2026-11-30T10:00:00.000Z","data":{"name":"Ana"}}"#;
        let event: Event = serde_json::from_str(text).unwrap();
        assert_eq!(event.seq, 0);
        assert_eq!(event.kind(), "student");
        let back = serde_json::to_value(&event).unwrap();
        assert_eq!(back["type"], "student.updated");
        assert!(serde_json::from_str::<Event>(&text.replace("\"key\"", "\"kee\"")).is_err());
        let report: ApplyReport =
            serde_json::from_str(r#"{"received":1,"applied":1,"duplicates":0,"stale":0}"#).unwrap();
        assert_eq!(report.rejected, 0);
        assert!(
            !serde_json::to_string(&report)
                .unwrap()
                .contains("first_rejection")
        );
    }
}
