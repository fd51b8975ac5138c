//! SQLite access for a participant: one writer connection, a small pool of readers, versioned
//! migrations, and write transactions that commit, or roll back for a dry run.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use serde::Serialize;
use tokio::sync::watch;

use crate::error::{ApiError, ApiResult};
use crate::extract::WriteMode;
use crate::outbox::{self, Event};

/// How long a connection waits for a lock held by another process before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle reader connections kept open; more are opened under load and closed after.
const MAX_IDLE_READERS: usize = 8;

/// One versioned step of a schema. Applied once, in order, inside a transaction.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Position within its component; never reused or reordered once released.
    pub version: i64,
    /// Short description recorded beside the version.
    pub name: &'static str,
    /// The statements to run.
    pub sql: &'static str,
}

/// Handle to a participant's database. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

struct Inner {
    /// File the database lives in.
    path: PathBuf,
    /// The participant's name, the `origin` of every event it records.
    origin: String,
    /// The only connection that writes: SQLite has one writer at a time, and taking this
    /// mutex first means in-process writers queue here instead of failing with SQLITE_BUSY.
    writer: Mutex<Connection>,
    /// Idle read connections (WAL lets them read while the writer writes).
    readers: Mutex<Vec<Connection>>,
    /// Highest committed outbox sequence number; long-polling feed readers wait on it.
    head: watch::Sender<i64>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves SQLite itself consistent (the transaction is
    // rolled back when dropped), so a poisoned lock is still safe to use.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Errors opening or migrating a database.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        source: Box<rusqlite::Error>,
    },
    #[error("migration {component} v{version} ({name}) failed on {path}: {source}")]
    Migration {
        path: PathBuf,
        component: &'static str,
        version: i64,
        name: &'static str,
        source: Box<rusqlite::Error>,
    },
}

impl Database {
    /// Opens (creating if needed) the database at `path`, applies the outbox schema and then
    /// `migrations` under `component`, each exactly once.
    pub fn open(
        path: &Path,
        origin: &str,
        component: &'static str,
        migrations: &[Migration],
    ) -> Result<Self, OpenError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OpenError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let open_err = |source| OpenError::Open {
            path: path.to_path_buf(),
            source: Box::new(source),
        };
        let mut conn = open_connection(path).map_err(open_err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                component TEXT NOT NULL,
                version INTEGER NOT NULL,
                name TEXT NOT NULL,
                applied_at TEXT NOT NULL,
                PRIMARY KEY (component, version)
            )",
        )
        .map_err(open_err)?;
        apply_migrations(&mut conn, path, "outbox", outbox::MIGRATIONS)?;
        apply_migrations(&mut conn, path, component, migrations)?;
        let head: i64 = conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM outbox", [], |r| r.get(0))
            .map_err(open_err)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                origin: origin.to_string(),
                writer: Mutex::new(conn),
                readers: Mutex::new(Vec::new()),
                head: watch::channel(head).0,
            }),
        })
    }

    /// The participant's name, used as `origin` on its events.
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Receives the highest committed outbox sequence number whenever it grows.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.inner.head.subscribe()
    }

    /// Runs `f` on a read connection, off the async runtime.
    pub async fn read<T, F>(&self, f: F) -> ApiResult<T>
    where
        F: FnOnce(&Connection) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let pooled = lock(&inner.readers).pop();
            let conn = match pooled {
                Some(conn) => conn,
                None => open_connection(&inner.path)?,
            };
            let result = f(&conn);
            let mut idle = lock(&inner.readers);
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|err| ApiError::internal(format!("read task failed: {err}")))?
    }

    /// Runs `f` inside a write transaction. It commits when `f` succeeds and `mode` is
    /// [`WriteMode::Commit`]; otherwise everything `f` did, events included, is rolled back.
    pub async fn write<T, F>(&self, mode: WriteMode, f: F) -> ApiResult<T>
    where
        F: FnOnce(&mut Write<'_>) -> ApiResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut conn = lock(&inner.writer);
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut write = Write {
                tx,
                origin: &inner.origin,
                last_seq: None,
            };
            let value = f(&mut write)?;
            let Write { tx, last_seq, .. } = write;
            match mode {
                WriteMode::Commit => {
                    tx.commit()?;
                    if let Some(seq) = last_seq {
                        inner.head.send_if_modified(|head| {
                            let grew = seq > *head;
                            *head = (*head).max(seq);
                            grew
                        });
                    }
                }
                WriteMode::DryRun => tx.rollback()?,
            }
            Ok(value)
        })
        .await
        .map_err(|err| ApiError::internal(format!("write task failed: {err}")))?
    }
}

fn apply_migrations(
    conn: &mut Connection,
    path: &Path,
    component: &'static str,
    migrations: &[Migration],
) -> Result<(), OpenError> {
    for m in migrations {
        let err = |source| OpenError::Migration {
            path: path.to_path_buf(),
            component,
            version: m.version,
            name: m.name,
            source: Box::new(source),
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let done: bool = tx
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM schema_migrations WHERE component = ?1 AND version = ?2)",
                (component, m.version),
                |r| r.get(0),
            )
            .map_err(err)?;
        if done {
            continue;
        }
        tx.execute_batch(m.sql).map_err(err)?;
        tx.execute(
            "INSERT INTO schema_migrations (component, version, name, applied_at) VALUES (?1, ?2, ?3, ?4)",
            (component, m.version, m.name, crate::now()),
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        tracing::info!(
            component,
            version = m.version,
            name = m.name,
            "migration applied"
        );
    }
    Ok(())
}

/// An open write transaction: [`Write::tx`] for domain SQL; domain changes are announced with [`Write::record`] so the event lands in the same transaction.
pub struct Write<'c> {
    tx: Transaction<'c>,
    origin: &'c str,
    /// Highest outbox sequence written in this transaction, published after commit.
    last_seq: Option<i64>,
}

impl Write<'_> {
    /// The transaction, for domain statements.
    pub fn tx(&self) -> &Connection {
        &self.tx
    }

    /// Records a change made by this participant: bumps the entity's version and appends the
    /// event to the outbox, inside this transaction.
    pub fn record<T: Serialize>(
        &mut self,
        event_type: &str,
        key: &str,
        state: &T,
    ) -> ApiResult<Event> {
        let data = serde_json::to_value(state)
            .map_err(|err| ApiError::internal(format!("cannot encode {event_type}: {err}")))?;
        let event = outbox::record_local(&self.tx, self.origin, event_type, key, data)?;
        self.last_seq = Some(event.seq);
        Ok(event)
    }

    /// Records an event received from another participant (original id and origin kept).
    pub(crate) fn record_applied(&mut self, event: &Event) -> ApiResult<i64> {
        let seq = outbox::record_applied(&self.tx, event)?;
        self.last_seq = Some(seq);
        Ok(seq)
    }

    pub fn origin(&self) -> &str {
        self.origin
    }
}
