//! The inbox sink: each batch inserted with one `INSERT ... ON CONFLICT (id) DO NOTHING`, so
//! a redelivered event is acknowledged as a duplicate, never inserted twice.

use strangler_feed::{ApplyReport, Event};
use strangler_plan::{PgInbox, PgTable};
use tokio_postgres::Client;

use super::{Column, Failure, JSON, Session, TEXT, TIMESTAMP, check_columns};
use crate::{EventSink, Pushed, RelayError};

/// What the inbox's columns must be.
const INBOX: &[Column] = &[
    Column::required("id", TEXT),
    Column::required("origin", TEXT),
    Column::required("aggregatetype", TEXT),
    Column::required("aggregateid", TEXT),
    Column::required("type", TEXT),
    Column::required("version", &["bigint"]),
    Column::required("payload", JSON),
    Column::required("created_at", TIMESTAMP),
];

/// An application's inbox table as a link's target.
pub struct PgInboxSink {
    /// Who the inbox belongs to: events that originated there are not sent to it.
    name: String,
    /// The checked inbox's insert statement.
    session: Session<String>,
}

impl PgInboxSink {
    pub fn new(inbox: &PgInbox) -> Result<Self, RelayError> {
        Ok(Self {
            name: inbox.name.clone(),
            session: Session::new("inbox", &inbox.at)?,
        })
    }
}

impl EventSink for PgInboxSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn push(&self, events: &[Event]) -> Result<Pushed, RelayError> {
        let column = |f: fn(&Event) -> String| events.iter().map(f).collect::<Vec<String>>();
        let ids = column(|e| e.id.clone());
        let origins = column(|e| e.origin.clone());
        let kinds = column(|e| e.kind().to_string());
        let keys = column(|e| e.key.clone());
        let types = column(|e| e.event_type.clone());
        let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
        let payloads = column(|e| e.data.to_string());
        let ats = column(|e| e.at.clone());
        let table = self.session.table.clone();
        // One statement, so one transaction: the whole batch or nothing. The relay stores
        // its checkpoint only once this returned, after the commit.
        let inserted = self
            .session
            .run(
                async |client| insert_statement(client, &table).await,
                async |open| {
                    Ok(open
                        .client
                        .execute(
                            &open.checked,
                            &[
                                &ids, &origins, &kinds, &keys, &types, &versions, &payloads, &ats,
                            ],
                        )
                        .await?)
                },
            )
            .await?;
        let applied = usize::try_from(inserted).unwrap_or(events.len());
        Ok(Pushed::Applied(ApplyReport {
            received: events.len(),
            applied,
            duplicates: events.len().saturating_sub(applied),
            ..ApplyReport::default()
        }))
    }
}

/// Checks the inbox's layout (and that `id` is unique: the insert relies on it) and builds
/// its insert.
async fn insert_statement(client: &Client, table: &PgTable) -> Result<String, Failure> {
    let found = check_columns(client, table, INBOX).await?;
    let unique_id: bool = client
        .query_one(
            "SELECT EXISTS (
                 SELECT 1 FROM pg_index i
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                 WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indnkeyatts = 1
                   AND i.indpred IS NULL AND a.attname = 'id')",
            &[&table.table],
        )
        .await?
        .try_get(0)?;
    if !unique_id {
        return Err(Failure::Table {
            message: format!(
                "table {}: column `id` needs a primary key or unique index (a redelivered event must be dropped, not inserted twice)",
                table.table
            ),
            transient: false,
        });
    }
    let payload = found
        .iter()
        .find(|f| f.name == "payload")
        .map_or("jsonb", |f| f.regtype.as_str());
    // The table name is checked by the plan to be plain identifiers; the columns are ours.
    Ok(format!(
        "INSERT INTO {t} (\"id\", \"origin\", \"aggregatetype\", \"aggregateid\", \"type\", \"version\", \"payload\", \"created_at\")
         SELECT id, origin, kind, key, type, version, payload::{payload}, at::timestamptz
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[])
             AS e(id, origin, kind, key, type, version, payload, at)
         ON CONFLICT (\"id\") DO NOTHING",
        t = table.table
    ))
}
