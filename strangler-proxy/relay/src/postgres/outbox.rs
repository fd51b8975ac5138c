//! The outbox source: committed rows below the transaction horizon, in `(txid, seq)` order
//! (the parent module says why that skips nothing), woken by `LISTEN`, polled as a backstop.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use strangler_feed::{Event, FeedPage};
use strangler_plan::PgOutbox;
use strangler_store::pg_connect::PgConnector;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_postgres::Client;

use super::{Column, Failure, JSON, Session, TEXT, TIMESTAMP, check_columns};
use crate::{EventSource, RelayError};

/// Bits of a checkpoint that count rows inside one transaction.
const OFFSET_BITS: u32 = 20;
/// Rows of one transaction a checkpoint can count.
const MAX_OFFSET: i64 = (1 << OFFSET_BITS) - 1;
/// The highest transaction id a checkpoint can hold.
const MAX_TXID: u64 = (i64::MAX >> OFFSET_BITS) as u64;
/// Rows counted at most when telling how far behind a link is.
const PENDING_CAP: i64 = 100_000;
/// How often a read re-checks while committed rows wait above the horizon for an older
/// transaction (which may not notify when it ends).
const BLOCKED_POLL: Duration = Duration::from_millis(100);
/// Reconnect backoff of the `LISTEN` connection.
const LISTEN_BACKOFF_MIN: Duration = Duration::from_millis(100);
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What the outbox's columns must be.
const OUTBOX: &[Column] = &[
    Column::required("id", &["text", "character varying", "uuid"]),
    Column::required("aggregatetype", TEXT),
    Column::required(
        "aggregateid",
        &["text", "character varying", "uuid", "bigint", "integer"],
    ),
    Column::required("type", TEXT),
    Column::required("payload", JSON),
    Column::required("version", &["bigint", "integer"]),
    Column::optional("origin", TEXT),
    Column::required("created_at", TIMESTAMP),
    Column::required("txid", &["xid8"]),
    Column::required("seq", &["bigint", "integer"]),
];

/// A position in the outbox's read order: every row with `txid` below `txid`, and the
/// first `offset` rows of `txid` (by `seq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Position {
    txid: u64,
    offset: i64,
}

impl Position {
    /// The position a stored checkpoint holds (`txid << 20 | offset`).
    fn decode(checkpoint: i64) -> Self {
        let checkpoint = checkpoint.max(0);
        Position {
            txid: (checkpoint >> OFFSET_BITS) as u64,
            offset: checkpoint & MAX_OFFSET,
        }
    }

    /// The checkpoint that holds this position, if it fits.
    fn encode(self) -> Option<i64> {
        (self.txid <= MAX_TXID && (0..=MAX_OFFSET).contains(&self.offset))
            .then_some(((self.txid as i64) << OFFSET_BITS) | self.offset)
    }
}

/// The statements for a checked outbox.
struct Statements {
    page: String,
    pending: String,
}

/// One row of a page, as read.
struct Row {
    txid: u64,
    id: String,
    origin: Option<String>,
    event_type: String,
    key: String,
    version: i64,
    data: Value,
    at: String,
}

/// An application's outbox table as a link's source.
pub struct PgOutboxSource {
    /// The events' origin where a row names none, and the source's name.
    origin: String,
    /// The `NOTIFY` channel that wakes a waiting read.
    channel: String,
    session: Session<Statements>,
    /// Notified by the `LISTEN` connection; a read waiting for rows wakes on it.
    wake: Arc<Notify>,
    /// The `LISTEN` connection's task, started by the first read, aborted with the source.
    listener: std::sync::Mutex<Option<AbortOnDrop>>,
}

impl PgOutboxSource {
    pub fn new(outbox: &PgOutbox) -> Result<Self, RelayError> {
        Ok(Self {
            origin: outbox.origin.clone(),
            channel: outbox.channel.clone(),
            session: Session::new("outbox", &outbox.at)?,
            wake: Arc::new(Notify::new()),
            listener: std::sync::Mutex::new(None),
        })
    }

    /// Starts listening for notifications unless it already does.
    fn listen(&self) {
        let mut listener = self.listener.lock().unwrap_or_else(|p| p.into_inner());
        if listener.as_ref().is_none_or(|l| l.0.is_finished()) {
            *listener = Some(AbortOnDrop(tokio::spawn(listen(
                self.session.connector.clone(),
                self.channel.clone(),
                Arc::clone(&self.wake),
            ))));
        }
    }

    /// The error for a transaction id past what a checkpoint holds.
    fn too_far(&self, txid: u64) -> RelayError {
        RelayError::Postgres {
            endpoint: self.session.endpoint.clone(),
            message: format!(
                "transaction id {txid} is beyond what a checkpoint holds ({MAX_TXID}); the link cannot go on"
            ),
            transient: false,
        }
    }

    /// The page after `after`, and whether committed rows wait above the horizon.
    async fn page(&self, after: i64, limit: u32) -> Result<(FeedPage, bool), RelayError> {
        let from = Position::decode(after);
        let limit = i64::from(limit.max(1));
        // Near what a checkpoint can count inside one transaction, the rest of that
        // transaction is read whole, and the next position is past it.
        let whole = from.offset + limit > MAX_OFFSET;
        let (first, rest, total) = if whole {
            (None, 0, None)
        } else {
            (Some(limit), limit, Some(limit))
        };
        let table = self.session.table.clone();
        let txid = from.txid.to_string();
        let (horizon, rows) = self
            .session
            .run(
                async |client| statements(client, &table).await,
                async |open| {
                    let rows = open
                        .client
                        .query(
                            &open.checked.page,
                            &[&txid, &from.offset, &first, &rest, &total],
                        )
                        .await?;
                    decode(&rows)
                },
            )
            .await?;
        if horizon < from.txid {
            return Err(RelayError::CheckpointAhead {
                participant: self.origin.clone(),
                head: Position {
                    txid: horizon,
                    offset: 0,
                }
                .encode()
                .unwrap_or(i64::MAX),
                checkpoint: after,
            });
        }
        let mut position = from;
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            position = if row.txid == position.txid {
                Position {
                    txid: row.txid,
                    offset: position.offset + 1,
                }
            } else {
                Position {
                    txid: row.txid,
                    offset: 1,
                }
            };
            let seq = position.encode().ok_or_else(|| self.too_far(row.txid))?;
            events.push(Event {
                id: row.id,
                seq,
                origin: row.origin.unwrap_or_else(|| self.origin.clone()),
                event_type: row.event_type,
                key: row.key,
                version: row.version,
                at: row.at,
                data: row.data,
            });
        }
        let next = if whole {
            // `from.txid` is below the horizon only once it ended: then all its rows are read.
            if from.txid < horizon {
                Position {
                    txid: from.txid + 1,
                    offset: 0,
                }
            } else {
                from
            }
        } else if events.len() as i64 == limit {
            position
        } else {
            // Every row below the horizon is read.
            Position {
                txid: horizon,
                offset: 0,
            }
        }
        .max(from);
        let next_checkpoint = next.encode().ok_or_else(|| self.too_far(next.txid))?;
        let next_txid = next.txid.to_string();
        let counted: i64 = self
            .session
            .run(
                async |client| statements(client, &table).await,
                async |open| {
                    Ok(open
                        .client
                        .query_one(&open.checked.pending, &[&next_txid])
                        .await?
                        .try_get(0)?)
                },
            )
            .await?;
        let pending = (counted - next.offset).max(0);
        let blocked = pending > 0 && events.is_empty();
        Ok((
            FeedPage {
                events,
                next: next_checkpoint,
                head: next_checkpoint.saturating_add(pending),
            },
            blocked,
        ))
    }
}

impl EventSource for PgOutboxSource {
    fn name(&self) -> &str {
        &self.origin
    }

    async fn read(&self, after: i64, limit: u32, wait: Duration) -> Result<FeedPage, RelayError> {
        self.listen();
        let deadline = Instant::now() + wait;
        loop {
            // Registered before the query: a notification that arrives while it runs is
            // kept (a stored permit), not lost.
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (page, blocked) = self.page(after, limit).await?;
            let left = deadline.saturating_duration_since(Instant::now());
            if !page.events.is_empty() || left.is_zero() {
                return Ok(page);
            }
            let nap = if blocked {
                left.min(BLOCKED_POLL)
            } else {
                left
            };
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep(nap) => {}
            }
        }
    }
}

/// Checks the outbox's layout and builds its statements.
async fn statements(
    client: &Client,
    table: &strangler_plan::PgTable,
) -> Result<Statements, Failure> {
    let found = check_columns(client, table, OUTBOX).await?;
    let txid = found.iter().find(|f| f.name == "txid");
    if !txid.is_some_and(|f| {
        f.default
            .as_deref()
            .is_some_and(|d| d.contains("pg_current_xact_id()"))
    }) {
        return Err(Failure::Table {
            message: format!(
                "table {}: column `txid` must default to pg_current_xact_id() (the writing transaction's id; the relay reads by it)",
                table.table
            ),
            transient: false,
        });
    }
    let origin = if found.iter().any(|f| f.name == "origin") {
        "\"origin\"::text"
    } else {
        "NULL::text"
    };
    // The table name is checked by the plan to be plain identifiers; the columns are ours.
    let t = &table.table;
    let columns = format!(
        "\"txid\", \"seq\", \"id\"::text AS id, {origin} AS origin,
         CASE WHEN strpos(\"type\", '.') > 0 THEN \"type\"::text
              ELSE \"aggregatetype\" || '.' || \"type\" END AS type,
         \"aggregateid\"::text AS key, \"version\"::bigint AS version, \"payload\"::text AS payload,
         to_char(\"created_at\"::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS at"
    );
    // Each part takes its rows in index order and stops at its limit; the horizon filters
    // them after that (rows at or above it come last in that order), so the planner never
    // sorts the whole backlog to find one page.
    let page = format!(
        "WITH h AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS x),
         rest_of_t AS (SELECT {columns} FROM {t}
                       WHERE \"txid\" = $1::text::xid8 ORDER BY \"seq\" OFFSET $2 LIMIT $3),
         after_t AS (SELECT {columns} FROM {t}
                     WHERE \"txid\" > $1::text::xid8 ORDER BY \"txid\", \"seq\" LIMIT $4),
         page AS (SELECT * FROM rest_of_t UNION ALL SELECT * FROM after_t)
         SELECT h.x::text, p.txid::text, p.id, p.origin, p.type, p.key, p.version, p.payload, p.at
         FROM h LEFT JOIN (SELECT * FROM page WHERE txid < (SELECT x FROM h)
                           ORDER BY txid, seq LIMIT $5) p ON true
         ORDER BY p.txid, p.seq"
    );
    let pending = format!(
        "SELECT count(*) FROM (SELECT 1 FROM {t} WHERE \"txid\" >= $1::text::xid8 LIMIT {PENDING_CAP}) c"
    );
    Ok(Statements { page, pending })
}

/// The horizon and the rows of a page's answer.
fn decode(rows: &[tokio_postgres::Row]) -> Result<(u64, Vec<Row>), Failure> {
    let number = |text: &str| {
        text.parse::<u64>().map_err(|_| Failure::Table {
            message: format!("a transaction id that is not a number: {text}"),
            transient: false,
        })
    };
    let horizon: String = match rows.first() {
        Some(row) => row.try_get(0)?,
        None => {
            return Err(Failure::Broken("the page query answered no row".into()));
        }
    };
    let horizon = number(&horizon)?;
    let mut page = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(txid) = row.try_get::<_, Option<String>>(1)? else {
            continue;
        };
        let payload: String = row.try_get(7)?;
        let id: String = row.try_get(2)?;
        let data = serde_json::from_str(&payload).map_err(|err| Failure::Table {
            message: format!("row {id}: payload is not JSON: {err}"),
            transient: false,
        })?;
        page.push(Row {
            txid: number(&txid)?,
            id,
            origin: row.try_get(3)?,
            event_type: row.try_get(4)?,
            key: row.try_get(5)?,
            version: row.try_get(6)?,
            data,
            at: row.try_get(8)?,
        });
    }
    Ok((horizon, page))
}

/// Listens on `channel` over a connection of its own and wakes the reader on every
/// notification; reconnects with backoff, and wakes once after each (notifications may
/// have been missed meanwhile).
async fn listen(connector: PgConnector, channel: String, wake: Arc<Notify>) {
    let mut backoff = LISTEN_BACKOFF_MIN;
    loop {
        let on_notification = Arc::clone(&wake);
        match connector
            .connect(move |_| on_notification.notify_one())
            .await
        {
            Ok((client, driver)) => {
                // The channel is a plain identifier (checked by the plan).
                match client.batch_execute(&format!("LISTEN {channel}")).await {
                    Ok(()) => {
                        wake.notify_one();
                        backoff = LISTEN_BACKOFF_MIN;
                        tracing::debug!(%channel, "listening for outbox notifications");
                        let _ = driver.await;
                    }
                    Err(error) => {
                        tracing::debug!(%channel, %error, "cannot LISTEN; polling meanwhile")
                    }
                }
            }
            Err(error) => {
                tracing::debug!(%channel, %error, "no LISTEN connection; polling meanwhile")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
    }
}

/// Aborts a task when dropped (with the source that owns it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_order_like_checkpoints() {
        let cases = [
            Position { txid: 0, offset: 0 },
            Position {
                txid: 748,
                offset: 3,
            },
            Position {
                txid: 1 << 40,
                offset: MAX_OFFSET,
            },
            Position {
                txid: MAX_TXID,
                offset: 0,
            },
        ];
        for p in cases {
            assert_eq!(Position::decode(p.encode().unwrap()), p);
        }
        // Checkpoints compare as positions do, so "never moved back" holds for both.
        for pair in cases.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(pair[0].encode() < pair[1].encode());
        }
        assert_eq!(
            Position {
                txid: MAX_TXID + 1,
                offset: 0
            }
            .encode(),
            None
        );
        assert_eq!(
            Position {
                txid: 1,
                offset: MAX_OFFSET + 1
            }
            .encode(),
            None
        );
        assert_eq!(Position::decode(-5), Position { txid: 0, offset: 0 });
    }
}
