//! A side of a link kept in a PostgreSQL database a team's own application owns: its
//! entities are read with a query the plan configures per kind.
//!
//! A kind's query takes `$1`, the key to read after (`text`), and `$2`, how many rows at
//! most (`bigint`), and answers `key` (`text`), `version` (`bigint`) and `state` (`jsonb`)
//! in key byte order, for example:
//!
//! ```sql
//! SELECT id AS key, version, to_jsonb(s) - 'version' AS state FROM students s
//! WHERE id COLLATE "C" > $1 ORDER BY id COLLATE "C" LIMIT $2
//! ```
//!
//! (`COLLATE "C"` is PostgreSQL's byte order, the order every side is walked in; the walk
//! refuses a page that is not in it. The comparison with `$1` needs it too, or a database
//! collation that orders keys otherwise skips or repeats rows between pages.)

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use strangler_feed::{Entity, SnapshotPage};
use strangler_store::pg_connect::PgConnector;
use tokio::sync::Mutex;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};

use super::{SnapshotReader, VerifyError, one_line};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one page's query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// Entities read from a PostgreSQL database with a query per kind.
pub struct PgSnapshots {
    name: String,
    url: String,
    /// The URL without its password, for messages.
    shown: String,
    /// Kind → its query.
    queries: BTreeMap<String, String>,
    /// The connection, made on first use and again after it failed.
    conn: Mutex<Option<Connection>>,
}

struct Connection {
    client: Client,
    /// Each kind's query, prepared and checked.
    statements: HashMap<String, Statement>,
}

impl PgSnapshots {
    /// A side called `name` at `url`, reading each kind of `queries` with its query.
    pub fn new(name: &str, url: &str, queries: BTreeMap<String, String>) -> Self {
        Self {
            name: name.to_string(),
            url: url.to_string(),
            shown: strangler_plan::location::redact(url),
            queries,
            conn: Mutex::new(None),
        }
    }

    fn failed(&self, message: impl std::fmt::Display) -> VerifyError {
        VerifyError::Read {
            side: self.name.clone(),
            message: format!("{}: {message}", self.shown),
        }
    }

    async fn connect(&self) -> Result<Connection, VerifyError> {
        // The store's connector: TLS when the URL asks (`sslmode=require`, `sslrootcert=`),
        // as the relay reaches the same database.
        let connector = PgConnector::from_url(&self.url).map_err(|message| self.failed(message))?;
        let connecting = connector.connect(|_| {});
        let (client, _driver) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| self.failed(format!("no connection within {CONNECT_TIMEOUT:?}")))?
            .map_err(|err| self.failed(one_line(&err)))?;
        Ok(Connection {
            client,
            statements: HashMap::new(),
        })
    }

    /// Prepares `kind`'s query and checks what it takes and answers.
    async fn prepare(
        &self,
        client: &Client,
        kind: &str,
        query: &str,
    ) -> Result<Statement, VerifyError> {
        let wrong = |message: String| VerifyError::Read {
            side: self.name.clone(),
            message: format!("the snapshot query of `{kind}`: {message}"),
        };
        let statement = client
            .prepare_typed(query, &[Type::TEXT, Type::INT8])
            .await
            .map_err(|err| wrong(one_line(&err)))?;
        let columns: Vec<(&str, &Type)> = statement
            .columns()
            .iter()
            .map(|c| (c.name(), c.type_()))
            .collect();
        let expected = [
            ("key", Type::TEXT),
            ("version", Type::INT8),
            ("state", Type::JSONB),
        ];
        let fits = columns.len() == expected.len()
            && columns
                .iter()
                .zip(&expected)
                .all(|((name, ty), (want, want_ty))| {
                    name == want && (*ty == want_ty || (*want == "key" && **ty == Type::VARCHAR))
                });
        if !fits {
            let got: Vec<String> = columns.iter().map(|(n, t)| format!("{n} ({t})")).collect();
            return Err(wrong(format!(
                "must answer key (text), version (bigint) and state (jsonb), in that order; it answers {}",
                if got.is_empty() {
                    "nothing".to_string()
                } else {
                    got.join(", ")
                }
            )));
        }
        if statement.params().len() != 2 {
            return Err(wrong(format!(
                "must take $1 (the key to read after) and $2 (how many rows), it takes {}",
                statement.params().len()
            )));
        }
        Ok(statement)
    }
}

fn entity(row: &tokio_postgres::Row) -> Result<Entity, tokio_postgres::Error> {
    Ok(Entity {
        key: row.try_get(0)?,
        version: row.try_get(1)?,
        state: row.try_get(2)?,
    })
}

impl SnapshotReader for PgSnapshots {
    fn name(&self) -> &str {
        &self.name
    }

    async fn kinds(&self) -> Result<Vec<String>, VerifyError> {
        Ok(self.queries.keys().cloned().collect())
    }

    async fn page(&self, kind: &str, after: &str, limit: u32) -> Result<SnapshotPage, VerifyError> {
        let Some(query) = self.queries.get(kind) else {
            return Err(VerifyError::Refused {
                side: self.name.clone(),
                status: 404,
                message: format!("no snapshot query for `{kind}` entities"),
            });
        };
        let mut held = self.conn.lock().await;
        if held.is_none() {
            *held = Some(self.connect().await?);
        }
        let Some(conn) = held.as_mut() else {
            return Err(self.failed("not connected"));
        };
        if !conn.statements.contains_key(kind) {
            let statement = self.prepare(&conn.client, kind, query).await?;
            conn.statements.insert(kind.to_string(), statement);
        }
        let Some(statement) = conn.statements.get(kind) else {
            return Err(self.failed("the query was not prepared"));
        };
        // One more row than asked tells whether another page follows.
        let asked = i64::from(limit) + 1;
        let rows = match tokio::time::timeout(
            QUERY_TIMEOUT,
            conn.client.query(statement, &[&after, &asked]),
        )
        .await
        {
            Ok(Ok(rows)) => rows,
            Ok(Err(err)) => {
                let message = one_line(&err);
                if conn.client.is_closed() {
                    *held = None;
                }
                return Err(self.failed(format!("the snapshot query of `{kind}`: {message}")));
            }
            Err(_) => {
                *held = None;
                return Err(self.failed(format!(
                    "the snapshot query of `{kind}` took over {QUERY_TIMEOUT:?}"
                )));
            }
        };
        let mut entities = rows
            .iter()
            .map(entity)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| self.failed(format!("a `{kind}` row: {}", one_line(&err))))?;
        let more = entities.len() > limit as usize;
        entities.truncate(limit as usize);
        let next = if more {
            entities.last().map(|e| e.key.clone())
        } else {
            None
        };
        Ok(SnapshotPage { entities, next })
    }
}
