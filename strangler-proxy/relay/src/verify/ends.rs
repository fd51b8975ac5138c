//! The two ends of a link as `strangler verify` reads them: a participant over HTTP, or a
//! PostgreSQL table's database read with the end's `snapshot` queries.
//!
//! What each end can receive of a repair: a participant takes it through `POST /_events`; an
//! inbox end takes it as one more inbox row (the application applies it with its own code,
//! so a verify right after may still see the old state); an outbox end takes nothing: its
//! rows and versions are the application's own, so a repair can only copy its state to the
//! other side, and only when its version leads.

use strangler_feed::{ApplyReport, Event, SnapshotPage};
use strangler_plan::{LinkSource, LinkTarget, Plan, SnapshotQueries, SyncLink};

use super::postgres::PgSnapshots;
use super::{SnapshotReader, VerifyError};
use crate::http::{self, Participant};
use crate::postgres::PgInboxSink;
use crate::{EventSink, Pushed};

/// One end of a link, for a verify.
pub enum End {
    Participant(Participant),
    /// A PostgreSQL end: its rows, and its inbox when it is a link's target.
    Postgres {
        rows: Box<PgSnapshots>,
        inbox: Option<Box<PgInboxSink>>,
    },
}

/// Both ends of `link`.
pub fn ends(plan: &Plan, link: &SyncLink) -> Result<(End, End), VerifyError> {
    let usage = |err: crate::RelayError| VerifyError::Usage(err.to_string());
    let client = http::client().map_err(usage)?;
    let snapshots = |end: &str, field: &str, url: &str, queries: &SnapshotQueries| {
        if queries.is_empty() {
            return Err(VerifyError::Usage(format!(
                "link {}: its PostgreSQL end `{end}` has no snapshot queries to read it with: add {field}.snapshot = {{ KIND = \"SELECT key, version, state ... WHERE key > $1 ... LIMIT $2\" }} to the plan",
                link.name()
            )));
        }
        Ok(PgSnapshots::new(end, url, queries.clone()))
    };
    let source = match &link.from {
        LinkSource::Service(name) => {
            End::Participant(Participant::new(plan, name, &client).map_err(usage)?)
        }
        LinkSource::Outbox(outbox) => End::Postgres {
            rows: Box::new(snapshots(
                &outbox.origin,
                "from",
                outbox.at.url(),
                &outbox.snapshot,
            )?),
            inbox: None,
        },
    };
    let target = match &link.to {
        LinkTarget::Service(name) => {
            End::Participant(Participant::new(plan, name, &client).map_err(usage)?)
        }
        LinkTarget::Inbox(inbox) => End::Postgres {
            rows: Box::new(snapshots(
                &inbox.name,
                "to",
                inbox.at.url(),
                &inbox.snapshot,
            )?),
            inbox: Some(Box::new(PgInboxSink::new(inbox).map_err(usage)?)),
        },
    };
    Ok((source, target))
}

impl SnapshotReader for End {
    fn name(&self) -> &str {
        match self {
            End::Participant(p) => SnapshotReader::name(p),
            End::Postgres { rows, .. } => rows.name(),
        }
    }

    async fn kinds(&self) -> Result<Vec<String>, VerifyError> {
        match self {
            End::Participant(p) => p.kinds().await,
            End::Postgres { rows, .. } => rows.kinds().await,
        }
    }

    async fn page(&self, kind: &str, after: &str, limit: u32) -> Result<SnapshotPage, VerifyError> {
        match self {
            End::Participant(p) => p.page(kind, after, limit).await,
            End::Postgres { rows, .. } => rows.page(kind, after, limit).await,
        }
    }

    fn takes_events(&self) -> bool {
        !matches!(self, End::Postgres { inbox: None, .. })
    }

    async fn apply(&self, events: &[Event]) -> Result<Option<ApplyReport>, VerifyError> {
        match self {
            End::Participant(p) => p.apply(events).await,
            End::Postgres { inbox: None, .. } => Ok(None),
            End::Postgres {
                inbox: Some(inbox),
                rows,
            } => match inbox.push(events).await {
                Ok(Pushed::Applied(report)) => Ok(Some(report)),
                Ok(Pushed::TooLarge) => Err(VerifyError::Repair {
                    side: rows.name().to_string(),
                    message: "the repair event is too large for its inbox".to_string(),
                }),
                Err(err) => Err(VerifyError::Repair {
                    side: rows.name().to_string(),
                    message: err.to_string(),
                }),
            },
        }
    }
}
