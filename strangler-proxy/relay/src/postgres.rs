//! A link's ends in an application's own PostgreSQL database: an outbox table as a source
//! ([`PgOutboxSource`]), an inbox table as a sink ([`PgInboxSink`]). The application needs
//! no code of this project: it writes an outbox row in the transaction of each change, and
//! applies inbox rows with its own code.
//!
//! # The outbox table
//!
//! ```sql
//! CREATE TABLE outbox (
//!     seq           bigint GENERATED ALWAYS AS IDENTITY,         -- order inside a transaction
//!     id            text PRIMARY KEY,                             -- the event's id (a UUID): unique everywhere
//!     aggregatetype text NOT NULL,                                -- entity kind: 'student'
//!     aggregateid   text NOT NULL,                                -- entity key
//!     type          text NOT NULL,                                -- 'student.updated' (or 'updated': kind prefixed)
//!     payload       jsonb NOT NULL,                               -- the entity's full state after the change
//!     version       bigint NOT NULL,                              -- the entity's version after the change
//!     origin        text,                                         -- NULL: the link's origin
//!     created_at    timestamptz NOT NULL DEFAULT now(),
//!     txid          xid8 NOT NULL DEFAULT pg_current_xact_id()    -- the writing transaction
//! );
//! CREATE INDEX outbox_txid ON outbox (txid, seq);
//! ```
//!
//! The names are those of Debezium's outbox router (`id`, `aggregatetype`, `aggregateid`,
//! `type`, `payload`) plus what the relay needs: `txid` and `seq` (read order), `version`
//! and `created_at`; `origin` is optional. `id` may also be `uuid`, `aggregateid` `uuid` or
//! an integer, `payload` `json`, `created_at` a `timestamp` (taken as UTC). The relay checks
//! the columns, their types, `NOT NULL` and `txid`'s default when it connects, and names
//! what is wrong.
//!
//! # Why no committed row is ever skipped
//!
//! Transactions commit out of order: a transaction holding `seq` 7 may commit after the one
//! holding `seq` 8, so a reader that polls `seq > checkpoint` and saw 8 never sees 7. The
//! source reads by *transaction horizon* instead. Each row carries the id of the transaction
//! that wrote it (`txid`, filled by its default `pg_current_xact_id()`, the top-level
//! transaction's 64-bit id, which never wraps). Every read first takes the horizon
//! `X = pg_snapshot_xmin(pg_current_snapshot())`: the oldest transaction id still running
//! when the statement's snapshot was taken. Every transaction with an id below `X` has
//! ended (committed or rolled back) and is visible, with all of its rows, to this and every
//! later snapshot; and no transaction with an id below `X` can start any more, since new
//! transactions get ids above every id ever handed out. So the set of rows with
//! `txid < X` is final the moment it is read: nothing can join it later. The source reads
//! only below the horizon, in `(txid, seq)` order, and the checkpoint is a position in that
//! order: a transaction id `T` and how many of `T`'s rows were delivered (`k`), meaning
//! "every row with `txid < T`, and the first `k` rows of `T` by `seq`". A page past the
//! checkpoint reads `T`'s rows after the first `k`, then rows with `T < txid < X`; when it
//! reaches the horizon the checkpoint becomes `(X, 0)`. The horizon never moves backwards
//! (every transaction running at a later moment either was running before, so its id is at
//! least the old `X`, or started later with a higher id), so no row is skipped; and a row
//! is delivered again only if the relay stops between a push and its checkpoint, which the
//! target's idempotent apply absorbs. A row committed above the horizon waits for the older
//! transactions still open: lag, never loss. That includes any writing transaction in the
//! whole server (transaction ids are server-wide): a long-running one delays delivery until
//! it ends.
//!
//! The checkpoint store keeps one `i64`, so the position is encoded as `T << 20 | k`: `T`
//! below 2^43 (8.8 × 10^12 transactions, 28 years at 10,000 a second; a larger one is a
//! permanent error, never a wrong position) and `k` below 2^20. Once a page would take `k`
//! past 2^20 − 1 (a transaction of over a million rows), the rest of that transaction is
//! read in one page and the position moves past it, so `k` never overflows.
//! `FeedPage::head` is the checkpoint plus the rows not yet delivered (counted up to
//! 100,000), so `sync status` shows the lag in events as for any other link. A horizon below
//! the checkpoint means the database is not the one the checkpoint was taken on (restored,
//! or replaced): the link stops, as for a participant's feed that went back.
//!
//! # Entity versions
//!
//! `txid` order is *not* commit order, so the relay does not derive versions from it: the
//! `version` column is the application's own, bumped under the entity's row lock in the
//! same transaction (`UPDATE students SET ..., version = version + 1 ... RETURNING
//! version`). Two transactions changing one entity serialize on that lock, so its versions
//! increase in commit order, which is what a target's "keep the higher version" needs.
//!
//! # Writing the outbox without triggers
//!
//! In the change's transaction, with one statement (a data-modifying CTE) or two:
//!
//! ```sql
//! BEGIN;
//! WITH changed AS (
//!     UPDATE students SET name = $2, version = version + 1, updated_at = now()
//!     WHERE id = $1
//!     RETURNING id, version, to_jsonb(students.*) AS state
//! )
//! INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, version)
//! SELECT gen_random_uuid()::text, 'student', id, 'student.updated', state, version FROM changed;
//! NOTIFY outbox;    -- optional: wakes the relay at commit (it polls every second anyway)
//! COMMIT;
//! ```
//!
//! `NOTIFY` inside the transaction is delivered at commit (and not at all on rollback). An
//! application that cannot add it can let the database do it:
//! `CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE
//! FUNCTION outbox_notify()`, with `outbox_notify()` a PL/pgSQL function that runs
//! `PERFORM pg_notify('outbox', '')` and returns `NULL`. The channel is the table's name
//! unless the link sets `notify = "..."`. Without either, the source polls once a second.
//! The outbox may be pruned of rows every link has delivered (`sync status`), e.g.
//! `DELETE FROM outbox WHERE created_at < now() - interval '7 days'` when no link is a week
//! behind. An event the application applied from its inbox, if it records it in its outbox
//! again, keeps the inbox row's `id` and `origin`, so it is never sent back (no echo).
//!
//! # The inbox table
//!
//! ```sql
//! CREATE TABLE inbox (
//!     id            text PRIMARY KEY,                 -- the event's id: a redelivery is dropped
//!     origin        text NOT NULL,                    -- the participant that accepted the write
//!     aggregatetype text NOT NULL,                    -- entity kind: 'student'
//!     aggregateid   text NOT NULL,                    -- entity key
//!     type          text NOT NULL,                    -- 'student.updated'
//!     version       bigint NOT NULL,                  -- the entity's version after the change
//!     payload       jsonb NOT NULL,                   -- its full state after the change
//!     created_at    timestamptz NOT NULL,             -- when the origin accepted the write
//!     received_at   timestamptz NOT NULL DEFAULT now()
//!     -- and the application's own columns, e.g. processed_at timestamptz
//! );
//! ```
//!
//! The sink inserts a batch with one `INSERT ... ON CONFLICT (id) DO NOTHING` (one
//! transaction), and the relay moves its checkpoint only after it committed: an event
//! delivered twice is inserted once. The application applies the rows keeping, per
//! entity, the higher `version` (then the higher `origin`), as every participant does, so
//! the order it takes them in does not matter.
//!
//! # Failures
//!
//! Each end keeps one connection, opened on first use (with the store's URL handling: TLS
//! when the URL says `sslmode=require`) and again after it broke; a failure that may pass
//! (the server unreachable, restarting, a lost connection, a table not created yet) is
//! retried by the relay's backoff, while a column of the wrong type, a missing unique index
//! on the inbox's `id`, or a row the inbox refuses stops the link. Either is recorded for
//! `sync status` and logged, naming the table and the database without its password.

use std::time::Duration;

use strangler_plan::PgTable;
use strangler_store::pg_connect::PgConnector;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::RelayError;

mod inbox;
mod outbox;

pub use inbox::PgInboxSink;
pub use outbox::PgOutboxSource;

/// The outbox table as this module describes it (without the comments).
pub const OUTBOX_DDL: &str = "CREATE TABLE outbox (
    seq           bigint GENERATED ALWAYS AS IDENTITY,
    id            text PRIMARY KEY,
    aggregatetype text NOT NULL,
    aggregateid   text NOT NULL,
    type          text NOT NULL,
    payload       jsonb NOT NULL,
    version       bigint NOT NULL,
    origin        text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    txid          xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX outbox_txid ON outbox (txid, seq);
";

/// The inbox table as this module describes it (without the comments).
pub const INBOX_DDL: &str = "CREATE TABLE inbox (
    id            text PRIMARY KEY,
    origin        text NOT NULL,
    aggregatetype text NOT NULL,
    aggregateid   text NOT NULL,
    type          text NOT NULL,
    version       bigint NOT NULL,
    payload       jsonb NOT NULL,
    created_at    timestamptz NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now()
);
";

/// Longest a query (or connecting and checking the table) may take before the connection
/// is given up as broken.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One end's connection: opened on first use, its table checked, dropped after any failure
/// so the next call opens another and checks the table again.
struct Session<C> {
    connector: PgConnector,
    table: PgTable,
    /// `outbox app.outbox at postgres://app:***@db/shop`, for messages.
    endpoint: String,
    open: tokio::sync::Mutex<Option<Open<C>>>,
}

/// An open connection and what checking its table found.
struct Open<C> {
    client: Client,
    checked: C,
}

impl<C> Session<C> {
    fn new(kind: &str, table: &PgTable) -> Result<Self, RelayError> {
        let endpoint = format!("{kind} {table}");
        let connector =
            PgConnector::from_url(table.url()).map_err(|message| RelayError::Postgres {
                endpoint: endpoint.clone(),
                message,
                transient: false,
            })?;
        Ok(Self {
            connector,
            table: table.clone(),
            endpoint,
            open: tokio::sync::Mutex::new(None),
        })
    }

    /// Runs `call` on the open connection (opening it and checking the table with `check`
    /// first if need be), within [`CALL_TIMEOUT`]. After a failure the connection is dropped.
    async fn run<T, Check, Call>(&self, check: Check, call: Call) -> Result<T, RelayError>
    where
        Check: AsyncFnOnce(&Client) -> Result<C, Failure>,
        Call: AsyncFnOnce(&Open<C>) -> Result<T, Failure>,
    {
        let mut open = self.open.lock().await;
        let result = tokio::time::timeout(CALL_TIMEOUT, async {
            if open.as_ref().is_none_or(|o| o.client.is_closed()) {
                *open = None;
                let (client, _driver) = self.connector.connect(|_| {}).await?;
                // Timestamps without a zone are read and written as UTC.
                client.batch_execute("SET TIME ZONE 'UTC'").await?;
                let checked = check(&client).await?;
                *open = Some(Open { client, checked });
            }
            match open.as_ref() {
                Some(o) => call(o).await,
                None => Err(Failure::Broken("no connection".into())),
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(Failure::Broken(format!(
                "no answer within {}s",
                CALL_TIMEOUT.as_secs()
            )))
        });
        result.map_err(|failure| {
            // The next call starts afresh: a new connection, and the table checked again
            // (someone may have changed it, or fixed it).
            *open = None;
            failure.into_error(&self.endpoint)
        })
    }
}

/// Why a call to an end's database failed, before it becomes a [`RelayError`].
enum Failure {
    /// What the driver said (the server's error, or the connection's).
    Pg(tokio_postgres::Error),
    /// The connection is not usable (timed out, closed).
    Broken(String),
    /// The table is not what the relay needs; `transient` when it may be fixed without
    /// anyone restarting the relay noticing (a table not created yet).
    Table { message: String, transient: bool },
}

impl From<tokio_postgres::Error> for Failure {
    fn from(err: tokio_postgres::Error) -> Self {
        Failure::Pg(err)
    }
}

impl Failure {
    fn into_error(self, endpoint: &str) -> RelayError {
        let (message, transient) = match self {
            Failure::Pg(err) => match err.as_db_error() {
                Some(db) => {
                    let mut message = db.message().to_string();
                    if let Some(detail) = db.detail() {
                        message.push_str(&format!(" ({detail})"));
                    }
                    (message, is_transient(db.code()))
                }
                None => (chain(&err), true),
            },
            Failure::Broken(message) => (message, true),
            Failure::Table { message, transient } => (message, transient),
        };
        RelayError::Postgres {
            endpoint: endpoint.to_string(),
            message,
            transient,
        }
    }
}

/// Whether a server error may pass: the connection or the server (classes 08, 53, 57, 58),
/// a conflict with another transaction (40, 55), or a table not created yet (42P01).
fn is_transient(code: &SqlState) -> bool {
    let class = &code.code()[..2];
    matches!(class, "08" | "40" | "53" | "55" | "57" | "58") || *code == SqlState::UNDEFINED_TABLE
}

/// An error with its causes: "error connecting to server: Connection refused (os error 111)".
fn chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(&format!(": {text}"));
        }
        source = cause.source();
    }
    message
}

/// What a table's columns must be: the name, the types accepted (as `regtype` names them),
/// and whether the column may be missing.
struct Column {
    name: &'static str,
    types: &'static [&'static str],
    optional: bool,
}

impl Column {
    const fn required(name: &'static str, types: &'static [&'static str]) -> Self {
        Column {
            name,
            types,
            optional: false,
        }
    }

    const fn optional(name: &'static str, types: &'static [&'static str]) -> Self {
        Column {
            name,
            types,
            optional: true,
        }
    }
}

/// Types a text column may have.
const TEXT: &[&str] = &["text", "character varying"];
/// Types a JSON column may have.
const JSON: &[&str] = &["jsonb", "json"];
/// Types a timestamp column may have (one without a zone is taken as UTC).
const TIMESTAMP: &[&str] = &["timestamp with time zone", "timestamp without time zone"];

/// A column of a checked table.
struct Found {
    name: String,
    regtype: String,
    not_null: bool,
    default: Option<String>,
}

/// Reads `table`'s columns and checks them against `wanted` (types, `NOT NULL` for the
/// required ones); answers what was found.
async fn check_columns(
    client: &Client,
    table: &PgTable,
    wanted: &[Column],
) -> Result<Vec<Found>, Failure> {
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table.table])
        .await?
        .try_get(0)?;
    if !exists {
        return Err(Failure::Table {
            message: format!(
                "table {} does not exist (or is not on the search_path); create it as the README's sync section shows",
                table.table
            ),
            transient: true,
        });
    }
    let rows = client
        .query(
            "SELECT a.attname::text, a.atttypid::regtype::text, a.attnotnull,
                    pg_get_expr(d.adbin, d.adrelid)
             FROM pg_attribute a
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
            &[&table.table],
        )
        .await?;
    let found = rows
        .iter()
        .map(|r| {
            Ok(Found {
                name: r.try_get(0)?,
                regtype: r.try_get(1)?,
                not_null: r.try_get(2)?,
                default: r.try_get(3)?,
            })
        })
        .collect::<Result<Vec<Found>, tokio_postgres::Error>>()?;
    let mut problems = Vec::new();
    for column in wanted {
        let types = column.types.join(" or ");
        match found.iter().find(|f| f.name == column.name) {
            None if column.optional => {}
            None => problems.push(format!("no column `{}` ({types})", column.name)),
            Some(f) if !column.types.contains(&f.regtype.as_str()) => problems.push(format!(
                "column `{}` is {}, not {types}",
                column.name, f.regtype
            )),
            Some(f) if !column.optional && !f.not_null => {
                problems.push(format!("column `{}` must be NOT NULL", column.name))
            }
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        Ok(found)
    } else {
        Err(Failure::Table {
            message: format!(
                "table {} does not have the layout the relay needs: {}",
                table.table,
                problems.join("; ")
            ),
            transient: false,
        })
    }
}
