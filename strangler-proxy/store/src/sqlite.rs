//! The embedded backend: one SQLite file in WAL mode, so the CLI writes while proxies read.
//! Its change token is `PRAGMA data_version`, which moves when another connection commits
//! and costs no disk read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use strangler_plan::Stage;

use crate::transfer::{Kind, Snapshot, TABLES, TableRows, Transfer, Value};
use crate::{
    AnalysisRun, AuditEntry, CAPTURES_PER_ROUTE, CapturedCase, Change, CheckRecord, Checkpoints,
    LATENCIES_PER_ROUTE, LinkProgress, ProxyRecord, ProxyRegistry, RolloutRecord, RolloutState,
    Rollouts, RouteCounters, SAMPLES_PER_GROUP, ShadowBatch, ShadowMetric, ShadowResults,
    ShadowSummary, StageChange, StageWrite, Stages, StoreError, Verifications, VerifyCursor,
    VerifyRecord, now_ms, timestamp,
};

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema steps, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE route_status (
        route TEXT PRIMARY KEY,
        stage TEXT NOT NULL,
        percent INTEGER,
        generation INTEGER NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        route TEXT NOT NULL,
        from_stage TEXT NOT NULL,
        to_stage TEXT NOT NULL,
        actor TEXT NOT NULL,
        reason TEXT,
        forced INTEGER NOT NULL DEFAULT 0,
        generation INTEGER NOT NULL
    );
    CREATE TABLE control (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    INSERT INTO control (key, value) VALUES ('generation', 1);
    CREATE TABLE proxies (
        id TEXT PRIMARY KEY,
        pid INTEGER NOT NULL,
        listen TEXT NOT NULL,
        admin TEXT NOT NULL,
        generation INTEGER NOT NULL,
        applied_at_ms INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        heartbeat_ms INTEGER NOT NULL
    );
    CREATE TABLE proxy_counters (
        proxy_id TEXT NOT NULL,
        route TEXT NOT NULL,
        requests INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        served_legacy INTEGER NOT NULL,
        served_new INTEGER NOT NULL,
        PRIMARY KEY (proxy_id, route)
    );
",
    "
    CREATE TABLE sync_links (
        link TEXT PRIMARY KEY,
        checkpoint INTEGER NOT NULL DEFAULT 0,
        head INTEGER NOT NULL DEFAULT 0,
        lag_seconds REAL NOT NULL DEFAULT 0,
        applied INTEGER NOT NULL DEFAULT 0,
        duplicates INTEGER NOT NULL DEFAULT 0,
        skipped INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        updated_ms INTEGER NOT NULL DEFAULT 0
    );
",
    "
    ALTER TABLE sync_links ADD COLUMN rejected INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sync_links ADD COLUMN last_rejection TEXT;
",
    "
    CREATE TABLE shadow_counts (
        route TEXT NOT NULL,
        metric TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (route, metric)
    ) WITHOUT ROWID;
    CREATE TABLE shadow_paths (
        route TEXT NOT NULL,
        path TEXT NOT NULL,
        kind TEXT NOT NULL,
        noisy INTEGER NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (route, path, kind, noisy)
    ) WITHOUT ROWID;
    CREATE TABLE shadow_samples (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        route TEXT NOT NULL,
        path TEXT NOT NULL,
        at TEXT NOT NULL,
        sample TEXT NOT NULL
    );
    CREATE INDEX shadow_samples_by_group ON shadow_samples (route, path);
    CREATE TABLE shadow_latency (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        route TEXT NOT NULL,
        primary_ms REAL NOT NULL,
        candidate_ms REAL NOT NULL
    );
    CREATE INDEX shadow_latency_by_route ON shadow_latency (route, id);
",
    "
    ALTER TABLE sync_links ADD COLUMN owner TEXT;
    ALTER TABLE sync_links ADD COLUMN lease_until_ms INTEGER NOT NULL DEFAULT 0;
",
    "
    CREATE TABLE analysis_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        route TEXT NOT NULL,
        stage TEXT NOT NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT,
        verdict TEXT,
        figures TEXT
    );
    CREATE INDEX analysis_runs_by_route ON analysis_runs (route, id);
    CREATE TABLE shadow_run_counts (
        run INTEGER NOT NULL,
        metric TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (run, metric)
    ) WITHOUT ROWID;
    CREATE TABLE shadow_run_paths (
        run INTEGER NOT NULL,
        path TEXT NOT NULL,
        kind TEXT NOT NULL,
        noisy INTEGER NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (run, path, kind, noisy)
    ) WITHOUT ROWID;
",
    "
    ALTER TABLE proxy_counters ADD COLUMN errors_legacy INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE proxy_counters ADD COLUMN errors_new INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE proxy_counters ADD COLUMN latency_legacy TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE proxy_counters ADD COLUMN latency_new TEXT NOT NULL DEFAULT '[]';
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        until_ms INTEGER NOT NULL,
        generation INTEGER NOT NULL
    );
    CREATE TABLE analysis_checks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        route TEXT NOT NULL,
        run INTEGER,
        at TEXT NOT NULL,
        metric TEXT NOT NULL,
        value REAL,
        budget REAL NOT NULL,
        passed INTEGER,
        detail TEXT NOT NULL
    );
    CREATE INDEX analysis_checks_by_route ON analysis_checks (route, id);
    CREATE TABLE rollouts (
        route TEXT PRIMARY KEY,
        step INTEGER NOT NULL,
        state TEXT NOT NULL,
        step_started_ms INTEGER NOT NULL,
        updated_at TEXT NOT NULL,
        message TEXT NOT NULL
    );
",
    "
    CREATE TABLE verify_cursors (
        link TEXT NOT NULL,
        kind TEXT NOT NULL,
        after_key TEXT NOT NULL,
        done INTEGER NOT NULL,
        progress TEXT NOT NULL,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (link, kind)
    ) WITHOUT ROWID;
    CREATE TABLE verify_results (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        link TEXT NOT NULL,
        kinds TEXT NOT NULL,
        complete INTEGER NOT NULL,
        compared INTEGER NOT NULL,
        missing INTEGER NOT NULL,
        extra INTEGER NOT NULL,
        differing INTEGER NOT NULL,
        in_flight INTEGER NOT NULL,
        repaired INTEGER NOT NULL,
        passed INTEGER NOT NULL,
        started_ms INTEGER NOT NULL,
        finished_ms INTEGER NOT NULL
    );
    CREATE INDEX verify_results_by_link ON verify_results (link, id);
",
    "
    CREATE TABLE shadow_captures (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        route TEXT NOT NULL,
        path TEXT NOT NULL,
        at TEXT NOT NULL,
        capture TEXT NOT NULL
    );
    CREATE INDEX shadow_captures_by_path ON shadow_captures (route, path, id);
",
    "ALTER TABLE verify_results ADD COLUMN by_kind TEXT NOT NULL DEFAULT '';",
];

/// The open analysis run of `route`, opened (at `stage`) if it has none.
fn open_run(tx: &rusqlite::Transaction<'_>, route: &str, stage: &str) -> rusqlite::Result<i64> {
    let open: Option<i64> = tx
        .query_row(
            "SELECT id FROM analysis_runs WHERE route = ?1 AND ended_at IS NULL ORDER BY id DESC LIMIT 1",
            [route],
            |r| r.get(0),
        )
        .optional()?;
    match open {
        Some(id) => Ok(id),
        None => tx.query_row(
            "INSERT INTO analysis_runs (route, stage, started_at) VALUES (?1, ?2, ?3) RETURNING id",
            (route, stage, timestamp(now_ms())),
            |r| r.get(0),
        ),
    }
}

/// Every count of run `run`.
fn run_counts(
    conn: &Connection,
    run: i64,
) -> rusqlite::Result<std::collections::BTreeMap<ShadowMetric, i64>> {
    let mut stmt =
        conn.prepare_cached("SELECT metric, count FROM shadow_run_counts WHERE run = ?1")?;
    let rows = stmt.query_map([run], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut counts = std::collections::BTreeMap::new();
    for row in rows {
        let (metric, n) = row?;
        if let Some(metric) = ShadowMetric::parse(&metric) {
            counts.insert(metric, n);
        }
    }
    Ok(counts)
}

fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AnalysisRun> {
    Ok(AnalysisRun {
        id: r.get(0)?,
        route: r.get(1)?,
        stage: r.get(2)?,
        started_at: r.get(3)?,
        ended_at: r.get(4)?,
        verdict: r.get(5)?,
        counts: std::collections::BTreeMap::new(),
    })
}

/// Maps a SQLite error to a [`StoreError`] naming the store's file.
fn sql_error(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + Copy + '_ {
    move |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

/// A connection to the SQLite state store.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens the store at `path`, creating it and its directory if needed.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        // Switching a new file to WAL, or two processes creating the store at once, can be
        // answered SQLITE_BUSY without waiting on the busy handler: try again, within the
        // busy timeout, rather than fail a proxy's start or a command.
        let started = std::time::Instant::now();
        loop {
            match Self::try_open(path) {
                Err(StoreError::Sqlite { source, .. })
                    if matches!(
                        source.sqlite_error_code(),
                        Some(
                            rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                        )
                    ) && started.elapsed() < BUSY_TIMEOUT =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    fn try_open(path: &Path) -> Result<Self, StoreError> {
        let err = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let applied: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        for (i, step) in (1i64..).zip(MIGRATIONS.iter()) {
            if i > applied {
                tx.execute_batch(step).map_err(err)?;
                tx.pragma_update(None, "user_version", i).map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Every row of a query, mapped.
    fn rows<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let mapped = stmt.query_map(params, map).map_err(|e| self.err(e))?;
        mapped
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }
}

impl Stages for SqliteStore {
    fn change_token(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// The generation of the newest stage change.
    fn generation(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row(
                "SELECT value FROM control WHERE key = 'generation'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Every route's stored stage.
    fn stages(&self) -> Result<HashMap<String, Stage>, StoreError> {
        let rows = self.rows("SELECT route, stage, percent FROM route_status", [], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<u8>>(2)?,
            ))
        })?;
        rows.into_iter()
            .map(|(route, stage, percent)| {
                let stage =
                    Stage::from_parts(&stage, percent).map_err(|message| StoreError::Corrupt {
                        store: self.path.display().to_string(),
                        route: route.clone(),
                        message,
                    })?;
                Ok((route, stage))
            })
            .collect()
    }

    fn set_stage(&mut self, change: &StageChange<'_>) -> Result<StageWrite, StoreError> {
        let StageChange {
            route,
            current,
            to,
            actor,
            reason,
            forced,
            verdict,
        } = *change;
        let err = sql_error(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let stored: Option<(String, Option<u8>)> = tx
            .query_row(
                "SELECT stage, percent FROM route_status WHERE route = ?1",
                [route],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(err)?;
        if let Some((name, percent)) = stored {
            let now = Stage::from_parts(&name, percent).map_err(|message| StoreError::Corrupt {
                store: self.path.display().to_string(),
                route: route.to_string(),
                message,
            })?;
            if now != current {
                return Ok(StageWrite::Raced { now });
            }
        }
        let generation: i64 = tx
            .query_row(
                "UPDATE control SET value = value + 1 WHERE key = 'generation' RETURNING value",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        let at = timestamp(now_ms());
        let percent = match to {
            Stage::Canary { percent } => Some(percent),
            _ => None,
        };
        tx.execute(
            "INSERT INTO route_status (route, stage, percent, generation, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (route) DO UPDATE SET stage = excluded.stage, percent = excluded.percent,
                 generation = excluded.generation, updated_at = excluded.updated_at",
            (route, to.name(), percent, generation, &at),
        )
        .map_err(err)?;
        tx.execute(
            "INSERT INTO audit_log (at, route, from_stage, to_stage, actor, reason, forced, generation)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            (&at, route, current.to_string(), to.to_string(), actor, reason, forced, generation),
        )
        .map_err(err)?;
        // The stage's analysis run ends with the stage; the next stage starts its own (none
        // in legacy: nothing is compared there).
        let open: Option<i64> = tx
            .query_row(
                "SELECT id FROM analysis_runs WHERE route = ?1 AND ended_at IS NULL ORDER BY id DESC LIMIT 1",
                [route],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        if let Some(run) = open {
            let counts = run_counts(&tx, run).map_err(err)?;
            let figures: std::collections::BTreeMap<&str, i64> =
                counts.iter().map(|(m, n)| (m.as_str(), *n)).collect();
            let verdict = match verdict {
                Some(v) => format!("{v}; ended by {to}"),
                None => format!("ended by {to}"),
            };
            tx.execute(
                "UPDATE analysis_runs SET ended_at = ?2, verdict = ?3, figures = ?4 WHERE id = ?1",
                (
                    run,
                    &at,
                    verdict,
                    serde_json::to_string(&figures).unwrap_or_default(),
                ),
            )
            .map_err(err)?;
        }
        if to != Stage::Legacy {
            tx.execute(
                "INSERT INTO analysis_runs (route, stage, started_at) VALUES (?1, ?2, ?3)",
                (route, to.to_string(), &at),
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(StageWrite::Changed(Change {
            route: route.to_string(),
            from: current,
            to,
            generation,
        }))
    }

    fn history_since(&self, after: i64) -> Result<Vec<AuditEntry>, StoreError> {
        self.rows(
            "SELECT id, at, route, from_stage, to_stage, actor, reason, forced, generation
             FROM audit_log WHERE id > ?1 ORDER BY id",
            [after],
            audit_from_row,
        )
    }

    /// The audit log, oldest first, optionally for one route, the last `limit` entries.
    fn history(&self, route: Option<&str>, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        self.rows(
            "SELECT * FROM (
                SELECT id, at, route, from_stage, to_stage, actor, reason, forced, generation
                FROM audit_log WHERE ?1 IS NULL OR route = ?1 ORDER BY id DESC LIMIT ?2
             ) ORDER BY id",
            (route, limit),
            audit_from_row,
        )
    }
}

/// An audit entry from `id, at, route, from_stage, to_stage, actor, reason, forced,
/// generation`.
fn audit_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        id: r.get(0)?,
        at: r.get(1)?,
        route: r.get(2)?,
        from: r.get(3)?,
        to: r.get(4)?,
        actor: r.get(5)?,
        reason: r.get(6)?,
        forced: r.get(7)?,
        generation: r.get(8)?,
    })
}

impl ProxyRegistry for SqliteStore {
    /// Registers (or re-registers) a running proxy.
    fn register_proxy(&self, record: &ProxyRecord) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO proxies (id, pid, listen, admin, generation, applied_at_ms, started_at, heartbeat_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (id) DO UPDATE SET generation = excluded.generation,
                     applied_at_ms = excluded.applied_at_ms, heartbeat_ms = excluded.heartbeat_ms",
                (
                    &record.id,
                    record.pid,
                    &record.listen,
                    &record.admin,
                    record.generation,
                    record.applied_at_ms,
                    &record.started_at,
                    record.heartbeat_ms,
                ),
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records that proxy `id` now serves `generation`.
    fn applied(&self, id: &str, generation: i64) -> Result<(), StoreError> {
        let now = now_ms();
        self.conn
            .execute(
                "UPDATE proxies SET generation = ?2, applied_at_ms = ?3, heartbeat_ms = ?3 WHERE id = ?1",
                (id, generation, now),
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Heartbeat with the proxy's counters since it started.
    fn heartbeat(&mut self, id: &str, counters: &[RouteCounters]) -> Result<(), StoreError> {
        let err = sql_error(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        tx.execute(
            "UPDATE proxies SET heartbeat_ms = ?2 WHERE id = ?1",
            (id, now_ms()),
        )
        .map_err(err)?;
        for c in counters {
            tx.execute(
                "INSERT INTO proxy_counters (proxy_id, route, requests, errors, served_legacy, served_new,
                     errors_legacy, errors_new, latency_legacy, latency_new)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (proxy_id, route) DO UPDATE SET requests = excluded.requests,
                     errors = excluded.errors, served_legacy = excluded.served_legacy,
                     served_new = excluded.served_new, errors_legacy = excluded.errors_legacy,
                     errors_new = excluded.errors_new, latency_legacy = excluded.latency_legacy,
                     latency_new = excluded.latency_new",
                rusqlite::params![
                    id,
                    &c.route,
                    c.requests as i64,
                    c.errors as i64,
                    c.served_legacy as i64,
                    c.served_new as i64,
                    c.errors_legacy as i64,
                    c.errors_new as i64,
                    serde_json::to_string(&c.latency_legacy).unwrap_or_default(),
                    serde_json::to_string(&c.latency_new).unwrap_or_default(),
                ],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(())
    }

    /// Removes a proxy that is shutting down.
    fn deregister_proxy(&self, id: &str) -> Result<(), StoreError> {
        for sql in [
            "DELETE FROM proxy_counters WHERE proxy_id = ?1",
            "DELETE FROM proxies WHERE id = ?1",
        ] {
            self.conn.execute(sql, [id]).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Every registered proxy, live or not, newest heartbeat first.
    fn proxies(&self) -> Result<Vec<ProxyRecord>, StoreError> {
        let rows = self.rows(
            "SELECT id, pid, listen, admin, generation, applied_at_ms, started_at, heartbeat_ms
                 FROM proxies ORDER BY heartbeat_ms DESC",
            [],
            |r| {
                Ok(ProxyRecord {
                    id: r.get(0)?,
                    pid: r.get(1)?,
                    listen: r.get(2)?,
                    admin: r.get(3)?,
                    generation: r.get(4)?,
                    applied_at_ms: r.get(5)?,
                    started_at: r.get(6)?,
                    heartbeat_ms: r.get(7)?,
                })
            },
        )?;
        Ok(rows)
    }

    /// Counters summed over the proxies in `ids`.
    fn counters(&self, ids: &[String]) -> Result<HashMap<String, RouteCounters>, StoreError> {
        let mut sums: HashMap<String, RouteCounters> = HashMap::new();
        let rows = self.rows(
            "SELECT proxy_id, route, requests, errors, served_legacy, served_new, errors_legacy,
                    errors_new, latency_legacy, latency_new FROM proxy_counters",
            [],
            |r| {
                let buckets = |text: String| serde_json::from_str(&text).unwrap_or_default();
                Ok((
                    r.get::<_, String>(0)?,
                    RouteCounters {
                        route: r.get(1)?,
                        requests: r.get::<_, i64>(2)? as u64,
                        errors: r.get::<_, i64>(3)? as u64,
                        served_legacy: r.get::<_, i64>(4)? as u64,
                        served_new: r.get::<_, i64>(5)? as u64,
                        errors_legacy: r.get::<_, i64>(6)? as u64,
                        errors_new: r.get::<_, i64>(7)? as u64,
                        latency_legacy: buckets(r.get(8)?),
                        latency_new: buckets(r.get(9)?),
                    },
                ))
            },
        )?;
        for (proxy, c) in rows {
            if !ids.contains(&proxy) {
                continue;
            }
            let sum = sums
                .entry(c.route.clone())
                .or_insert_with(|| RouteCounters {
                    route: c.route.clone(),
                    ..RouteCounters::default()
                });
            sum.add(&c);
        }
        Ok(sums)
    }
}

impl Checkpoints for SqliteStore {
    /// The checkpoint of `link` (0 when it never ran).
    fn checkpoint(&self, link: &str) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT checkpoint FROM sync_links WHERE link = ?1",
                [link],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?
            .unwrap_or(0))
    }

    /// Records a delivered batch: the new checkpoint and counters, the error cleared.
    fn advance(&self, p: &LinkProgress) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO sync_links (link, checkpoint, head, lag_seconds, applied, duplicates, skipped, last_error, updated_ms, rejected, last_rejection)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8, ?9, ?10)
                 ON CONFLICT (link) DO UPDATE SET checkpoint = MAX(checkpoint, excluded.checkpoint),
                     head = excluded.head, lag_seconds = excluded.lag_seconds,
                     applied = applied + excluded.applied, duplicates = duplicates + excluded.duplicates,
                     skipped = skipped + excluded.skipped, last_error = NULL, updated_ms = excluded.updated_ms,
                     rejected = rejected + excluded.rejected,
                     last_rejection = COALESCE(excluded.last_rejection, last_rejection)",
                rusqlite::params![
                    p.link,
                    p.checkpoint,
                    p.head,
                    p.lag_seconds,
                    p.applied,
                    p.duplicates,
                    p.skipped,
                    now_ms(),
                    p.rejected,
                    p.last_rejection
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Takes or renews the lease on `link` for `owner`: only the holder relays it, so proxy
    /// replicas on one store do not all push the same events. Answers whether `owner` holds it.
    fn lease_link(&self, link: &str, owner: &str, lease: Duration) -> Result<bool, StoreError> {
        let now = now_ms();
        let until = now + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        let changed = self
            .conn
            .execute(
                "INSERT INTO sync_links (link, owner, lease_until_ms, updated_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (link) DO UPDATE SET owner = excluded.owner, lease_until_ms = excluded.lease_until_ms
                 WHERE sync_links.owner IS NULL OR sync_links.owner = excluded.owner
                       OR sync_links.lease_until_ms < ?4",
                (link, owner, until, now),
            )
            .map_err(|e| self.err(e))?;
        Ok(changed > 0)
    }

    /// Gives a link's lease up (a relay that stops), so another takes over at once.
    fn release_link(&self, link: &str, owner: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE sync_links SET lease_until_ms = 0 WHERE link = ?1 AND owner = ?2",
                (link, owner),
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records a failed attempt; the checkpoint stays.
    fn link_failed(&self, link: &str, error: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO sync_links (link, last_error, updated_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (link) DO UPDATE SET last_error = excluded.last_error, updated_ms = excluded.updated_ms",
                (link, error, now_ms()),
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every link's progress.
    fn links(&self) -> Result<Vec<LinkProgress>, StoreError> {
        let rows = self.rows(
            "SELECT link, checkpoint, head, lag_seconds, applied, duplicates, skipped, last_error, updated_ms,
                        rejected, last_rejection
                 FROM sync_links ORDER BY link",
            [],
            |r| {
                Ok(LinkProgress {
                    link: r.get(0)?,
                    checkpoint: r.get(1)?,
                    head: r.get(2)?,
                    lag_seconds: r.get(3)?,
                    applied: r.get(4)?,
                    duplicates: r.get(5)?,
                    skipped: r.get(6)?,
                    last_error: r.get(7)?,
                    updated_ms: r.get(8)?,
                    rejected: r.get(9)?,
                    last_rejection: r.get(10)?,
                })
            },
        )?;
        Ok(rows)
    }

    fn take_lease(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<i64>, StoreError> {
        let now = now_ms();
        let until = now + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        let held: Option<i64> = self
            .conn
            .query_row(
                "INSERT INTO leases (name, owner, until_ms, generation) VALUES (?1, ?2, ?3, 1)
                 ON CONFLICT (name) DO UPDATE SET
                     generation = CASE WHEN leases.owner = excluded.owner THEN leases.generation
                                       ELSE leases.generation + 1 END,
                     owner = excluded.owner, until_ms = excluded.until_ms
                 WHERE leases.owner = excluded.owner OR leases.until_ms < ?4
                 RETURNING generation",
                (name, owner, until, now),
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(held)
    }

    fn release_lease(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE leases SET until_ms = 0 WHERE name = ?1 AND owner = ?2",
                (name, owner),
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}
impl Rollouts for SqliteStore {
    fn record_checks(&self, checks: &[CheckRecord]) -> Result<(), StoreError> {
        for c in checks {
            self.conn
                .execute(
                    "INSERT INTO analysis_checks (route, run, at, metric, value, budget, passed, detail)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    (&c.route, c.run, &c.at, &c.metric, c.value, c.budget, c.passed, &c.detail),
                )
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    fn checks(&self, route: &str, limit: u32) -> Result<Vec<CheckRecord>, StoreError> {
        self.rows(
            "SELECT * FROM (SELECT id, route, run, at, metric, value, budget, passed, detail
                 FROM analysis_checks WHERE route = ?1 ORDER BY id DESC LIMIT ?2) ORDER BY id",
            (route, limit),
            |r| {
                Ok(CheckRecord {
                    route: r.get(1)?,
                    run: r.get(2)?,
                    at: r.get(3)?,
                    metric: r.get(4)?,
                    value: r.get(5)?,
                    budget: r.get(6)?,
                    passed: r.get(7)?,
                    detail: r.get(8)?,
                })
            },
        )
    }

    fn set_rollout(&self, r: &RolloutRecord) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO rollouts (route, step, state, step_started_ms, updated_at, message)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (route) DO UPDATE SET step = excluded.step, state = excluded.state,
                     step_started_ms = excluded.step_started_ms, updated_at = excluded.updated_at,
                     message = excluded.message",
                (
                    &r.route,
                    r.step as i64,
                    r.state.as_str(),
                    r.step_started_ms,
                    &r.updated_at,
                    &r.message,
                ),
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn rollouts(&self) -> Result<Vec<RolloutRecord>, StoreError> {
        self.rows(
            "SELECT route, step, state, step_started_ms, updated_at, message FROM rollouts ORDER BY route",
            [],
            |r| {
                let state: String = r.get(2)?;
                Ok(RolloutRecord {
                    route: r.get(0)?,
                    step: usize::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                    state: RolloutState::parse(&state).unwrap_or(RolloutState::Aborted),
                    step_started_ms: r.get(3)?,
                    updated_at: r.get(4)?,
                    message: r.get(5)?,
                })
            },
        )
    }
}

impl Verifications for SqliteStore {
    fn verify_cursor(&self, link: &str, kind: &str) -> Result<Option<VerifyCursor>, StoreError> {
        self.conn
            .query_row(
                "SELECT after_key, done, progress, updated_ms FROM verify_cursors
                 WHERE link = ?1 AND kind = ?2",
                (link, kind),
                |r| {
                    Ok(VerifyCursor {
                        link: link.to_string(),
                        kind: kind.to_string(),
                        after: r.get(0)?,
                        done: r.get(1)?,
                        progress: r.get(2)?,
                        updated_ms: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    fn save_verify_cursor(&self, c: &VerifyCursor) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO verify_cursors (link, kind, after_key, done, progress, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (link, kind) DO UPDATE SET after_key = excluded.after_key,
                     done = excluded.done, progress = excluded.progress,
                     updated_ms = excluded.updated_ms",
                (
                    &c.link,
                    &c.kind,
                    &c.after,
                    c.done,
                    &c.progress,
                    c.updated_ms,
                ),
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn clear_verify_cursors(&self, link: &str) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM verify_cursors WHERE link = ?1", [link])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn record_verify(&self, v: &VerifyRecord) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO verify_results (link, kinds, complete, compared, missing, extra,
                     differing, in_flight, repaired, passed, started_ms, finished_ms, by_kind)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                rusqlite::params![
                    v.link,
                    v.kinds.join(","),
                    v.complete,
                    v.compared,
                    v.missing,
                    v.extra,
                    v.differing,
                    v.in_flight,
                    v.repaired,
                    v.passed,
                    v.started_ms,
                    v.finished_ms,
                    crate::verifications::join_by_kind(&v.by_kind)
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn last_verifies(&self) -> Result<Vec<VerifyRecord>, StoreError> {
        self.rows(
            "SELECT link, kinds, complete, compared, missing, extra, differing, in_flight,
                    repaired, passed, started_ms, finished_ms, by_kind
             FROM verify_results v
             WHERE id = (SELECT MAX(id) FROM verify_results w WHERE w.link = v.link)
             ORDER BY link",
            [],
            |r| {
                let kinds: String = r.get(1)?;
                Ok(VerifyRecord {
                    link: r.get(0)?,
                    kinds: crate::verifications::split_kinds(&kinds),
                    complete: r.get(2)?,
                    compared: r.get(3)?,
                    missing: r.get(4)?,
                    extra: r.get(5)?,
                    differing: r.get(6)?,
                    in_flight: r.get(7)?,
                    repaired: r.get(8)?,
                    passed: r.get(9)?,
                    started_ms: r.get(10)?,
                    finished_ms: r.get(11)?,
                    by_kind: crate::verifications::split_by_kind(&r.get::<_, String>(12)?),
                })
            },
        )
    }
}

impl ShadowResults for SqliteStore {
    /// Adds a batch of shadow results.
    fn record_shadow(&mut self, batch: &ShadowBatch) -> Result<(), StoreError> {
        let err = sql_error(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        // Results count for the route's open analysis run too (a route shadowed by the plan's
        // initial stage gets one at its first result); drops belong to no route.
        let run = if batch.route.is_empty() {
            None
        } else {
            let stage: Option<(String, Option<u8>)> = tx
                .query_row(
                    "SELECT stage, percent FROM route_status WHERE route = ?1",
                    [&batch.route],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(err)?;
            let stage = stage
                .and_then(|(name, percent)| Stage::from_parts(&name, percent).ok())
                .map_or_else(|| "the plan's stage".to_string(), |s| s.to_string());
            Some(open_run(&tx, &batch.route, &stage).map_err(err)?)
        };
        for (metric, n) in &batch.counts {
            tx.prepare_cached(
                "INSERT INTO shadow_counts (route, metric, count) VALUES (?1, ?2, ?3)
                 ON CONFLICT (route, metric) DO UPDATE SET count = count + excluded.count",
            )
            .and_then(|mut statement| statement.execute((&batch.route, metric.as_str(), n)))
            .map_err(err)?;
            if let Some(run) = run {
                tx.prepare_cached(
                    "INSERT INTO shadow_run_counts (run, metric, count) VALUES (?1, ?2, ?3)
                     ON CONFLICT (run, metric) DO UPDATE SET count = count + excluded.count",
                )
                .and_then(|mut statement| statement.execute((run, metric.as_str(), n)))
                .map_err(err)?;
            }
        }
        for ((p, kind, noisy), n) in &batch.paths {
            tx.prepare_cached(
                "INSERT INTO shadow_paths (route, path, kind, noisy, count) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (route, path, kind, noisy) DO UPDATE SET count = count + excluded.count",
            )
            .and_then(|mut statement| statement.execute((&batch.route, p, kind, noisy, n)))
            .map_err(err)?;
            if let Some(run) = run {
                tx.prepare_cached(
                    "INSERT INTO shadow_run_paths (run, path, kind, noisy, count) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (run, path, kind, noisy) DO UPDATE SET count = count + excluded.count",
                )
                .and_then(|mut statement| statement.execute((run, p, kind, noisy, n)))
                .map_err(err)?;
            }
        }
        for (p, sample) in &batch.samples {
            tx.prepare_cached(
                "INSERT INTO shadow_samples (route, path, at, sample)
                 SELECT ?1, ?2, ?3, ?4 WHERE (SELECT COUNT(*) FROM shadow_samples WHERE route = ?1 AND path = ?2) < ?5",
            )
            .and_then(|mut statement| statement.execute((&batch.route, p, timestamp(now_ms()), sample, SAMPLES_PER_GROUP)))
            .map_err(err)?;
        }
        for (primary, candidate) in &batch.latencies {
            tx.prepare_cached(
                "INSERT INTO shadow_latency (route, primary_ms, candidate_ms) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut statement| statement.execute((&batch.route, primary, candidate)))
            .map_err(err)?;
        }
        if !batch.latencies.is_empty() {
            tx.prepare_cached(
                "DELETE FROM shadow_latency WHERE route = ?1 AND id <= (
                     SELECT id FROM shadow_latency WHERE route = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            )
            .and_then(|mut statement| statement.execute((&batch.route, LATENCIES_PER_ROUTE)))
            .map_err(err)?;
        }
        // Each path keeps its newest cases, and the route its newest over all paths.
        for (p, case) in &batch.captures {
            tx.prepare_cached(
                "INSERT INTO shadow_captures (route, path, at, capture) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut statement| {
                statement.execute((&batch.route, p, timestamp(now_ms()), case))
            })
            .map_err(err)?;
            tx.prepare_cached(
                "DELETE FROM shadow_captures WHERE route = ?1 AND path = ?2 AND id <= (
                     SELECT id FROM shadow_captures WHERE route = ?1 AND path = ?2
                     ORDER BY id DESC LIMIT 1 OFFSET ?3)",
            )
            .and_then(|mut statement| {
                statement.execute((&batch.route, p, batch.captures_per_path.max(1)))
            })
            .map_err(err)?;
        }
        if !batch.captures.is_empty() {
            tx.prepare_cached(
                "DELETE FROM shadow_captures WHERE route = ?1 AND id <= (
                     SELECT id FROM shadow_captures WHERE route = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            )
            .and_then(|mut statement| statement.execute((&batch.route, CAPTURES_PER_ROUTE)))
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(())
    }

    /// The noisy paths learned so far, per route.
    fn noisy_paths(
        &self,
    ) -> Result<HashMap<String, std::collections::HashSet<String>>, StoreError> {
        let e = |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        };
        let mut out: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT route, path FROM shadow_paths WHERE kind = 'noise'")
            .map_err(e)?;
        for row in stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(e)?
        {
            let (route, path) = row.map_err(e)?;
            out.entry(route).or_default().insert(path);
        }
        Ok(out)
    }

    /// Everything recorded for `route`'s shadow leg.
    fn runs(&self, route: &str) -> Result<Vec<AnalysisRun>, StoreError> {
        let mut runs = self.rows(
            "SELECT id, route, stage, started_at, ended_at, verdict, figures FROM analysis_runs
             WHERE route = ?1 ORDER BY id",
            [route],
            |r| {
                let mut run = run_from_row(r)?;
                let figures: Option<String> = r.get(6)?;
                if let Some(figures) = figures {
                    let stored: std::collections::BTreeMap<String, i64> =
                        serde_json::from_str(&figures).unwrap_or_default();
                    run.counts = stored
                        .into_iter()
                        .filter_map(|(m, n)| Some((ShadowMetric::parse(&m)?, n)))
                        .collect();
                }
                Ok(run)
            },
        )?;
        for run in runs.iter_mut().filter(|r| r.ended_at.is_none()) {
            run.counts = run_counts(&self.conn, run.id).map_err(|e| self.err(e))?;
        }
        Ok(runs)
    }

    fn run_summary(&self, route: &str) -> Result<ShadowSummary, StoreError> {
        let run: Option<i64> = self
            .conn
            .query_row(
                "SELECT id FROM analysis_runs WHERE route = ?1 AND ended_at IS NULL ORDER BY id DESC LIMIT 1",
                [route],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let mut summary = ShadowSummary {
            route: route.to_string(),
            ..ShadowSummary::default()
        };
        let Some(run) = run else {
            return Ok(summary);
        };
        summary.counts = run_counts(&self.conn, run).map_err(|e| self.err(e))?;
        summary.paths = self.rows(
            "SELECT path, kind, noisy, count FROM shadow_run_paths WHERE run = ?1 ORDER BY count DESC, path",
            [run],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        Ok(summary)
    }

    fn captures(&self, route: &str) -> Result<Vec<CapturedCase>, StoreError> {
        self.rows(
            "SELECT id, route, path, at, capture FROM shadow_captures WHERE route = ?1 ORDER BY id",
            [route],
            |r| {
                let case: String = r.get(4)?;
                Ok(CapturedCase {
                    id: r.get(0)?,
                    route: r.get(1)?,
                    path: r.get(2)?,
                    at: r.get(3)?,
                    case: serde_json::from_str(&case).unwrap_or(serde_json::Value::Null),
                })
            },
        )
    }

    fn shadow_summary(&self, route: &str) -> Result<ShadowSummary, StoreError> {
        let e = |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        };
        let mut summary = ShadowSummary {
            route: route.to_string(),
            ..ShadowSummary::default()
        };
        let mut stmt = self
            .conn
            .prepare_cached("SELECT metric, count FROM shadow_counts WHERE route = ?1")
            .map_err(e)?;
        for row in stmt
            .query_map([route], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(e)?
        {
            let (metric, count) = row.map_err(e)?;
            // A metric this version does not know (written by a newer one) is left out.
            if let Some(metric) = ShadowMetric::parse(&metric) {
                summary.counts.insert(metric, count);
            }
        }
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT path, kind, noisy, count FROM shadow_paths WHERE route = ?1 ORDER BY count DESC, path",
            )
            .map_err(e)?;
        summary.paths = stmt
            .query_map([route], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .map_err(e)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(e)?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT path, sample FROM shadow_samples WHERE route = ?1 ORDER BY id")
            .map_err(e)?;
        summary.samples = stmt
            .query_map([route], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(e)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(e)?
            .into_iter()
            .map(|(p, s)| {
                (
                    p,
                    serde_json::from_str(&s).unwrap_or(serde_json::Value::Null),
                )
            })
            .collect();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT primary_ms, candidate_ms FROM shadow_latency WHERE route = ?1 ORDER BY id",
            )
            .map_err(e)?;
        summary.latencies = stmt
            .query_map([route], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(e)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(e)?;
        Ok(summary)
    }
}

/// Whether any copied table (besides `control`) has a row.
fn has_content(conn: &Connection) -> rusqlite::Result<bool> {
    let exists: Vec<String> = TABLES
        .iter()
        .filter(|t| t.name != "control")
        .map(|t| format!("EXISTS (SELECT 1 FROM {})", t.name))
        .collect();
    conn.query_row(&format!("SELECT {}", exists.join(" OR ")), [], |r| r.get(0))
}

/// A stored value as the column's kind (SQLite keeps whatever it was given).
fn value_from(value: rusqlite::types::ValueRef<'_>, kind: Kind) -> Value {
    use rusqlite::types::ValueRef;
    match (value, kind) {
        (ValueRef::Null, _) => Value::Null,
        (ValueRef::Integer(n), Kind::Real) => Value::Real(n as f64),
        (ValueRef::Integer(n), _) => Value::Int(n),
        (ValueRef::Real(x), Kind::Int) if x.fract() == 0.0 => Value::Int(x as i64),
        (ValueRef::Real(x), _) => Value::Real(x),
        (ValueRef::Text(t) | ValueRef::Blob(t), _) => {
            Value::Text(String::from_utf8_lossy(t).into_owned())
        }
    }
}

impl Transfer for SqliteStore {
    fn export(&self) -> Result<Snapshot, StoreError> {
        // One read transaction: every table from the same moment.
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        let mut snapshot = Snapshot::default();
        for spec in TABLES {
            let mut stmt = tx
                .prepare(&format!(
                    "SELECT {} FROM {} ORDER BY {}",
                    spec.column_list(),
                    spec.name,
                    spec.order_by
                ))
                .map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map([], |r| {
                    spec.columns
                        .iter()
                        .enumerate()
                        .map(|(i, (_, kind))| Ok(value_from(r.get_ref(i)?, *kind)))
                        .collect::<rusqlite::Result<Vec<Value>>>()
                })
                .map_err(|e| self.err(e))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(|e| self.err(e))?;
            snapshot.tables.push(TableRows {
                table: spec.name.to_string(),
                columns: spec.columns.iter().map(|(c, _)| c.to_string()).collect(),
                rows,
            });
        }
        drop(tx);
        Ok(snapshot)
    }

    fn is_empty(&self) -> Result<bool, StoreError> {
        has_content(&self.conn)
            .map(|has| !has)
            .map_err(|e| self.err(e))
    }

    fn import(&mut self, snapshot: &Snapshot, replace: bool) -> Result<(), StoreError> {
        use rusqlite::types::Value as Sql;
        let tables = snapshot.checked().map_err(|message| StoreError::Database {
            store: self.path.display().to_string(),
            message: format!("cannot import the copy: {message}"),
        })?;
        let err = sql_error(&self.path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        if has_content(&tx).map_err(err)? && !replace {
            return Err(StoreError::NotEmpty {
                store: self.path.display().to_string(),
            });
        }
        for spec in TABLES {
            tx.execute(&format!("DELETE FROM {}", spec.name), [])
                .map_err(err)?;
        }
        for (spec, rows) in tables {
            let placeholders = vec!["?"; rows.columns.len()].join(", ");
            let mut stmt = tx
                .prepare(&format!(
                    "INSERT INTO {} ({}) VALUES ({placeholders})",
                    spec.name,
                    rows.columns.join(", ")
                ))
                .map_err(err)?;
            for row in &rows.rows {
                let values = row.iter().map(|v| match v {
                    Value::Null => Sql::Null,
                    Value::Int(n) => Sql::Integer(*n),
                    Value::Real(x) => Sql::Real(*x),
                    Value::Text(t) => Sql::Text(t.clone()),
                });
                stmt.execute(rusqlite::params_from_iter(values))
                    .map_err(err)?;
            }
        }
        tx.execute(
            "INSERT OR IGNORE INTO control (key, value) VALUES ('generation', 1)",
            [],
        )
        .map_err(err)?;
        // AUTOINCREMENT already moved past the copied ids (`sqlite_sequence` follows the
        // largest id inserted), so new rows never reuse one.
        tx.commit().map_err(err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_timestamp;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
        for ms in [0, 951_782_400_000, 1_795_000_000_123, 1_700_000_000_001] {
            assert_eq!(parse_timestamp(&timestamp(ms)), Some(ms));
        }
        assert_eq!(
            parse_timestamp("2026-11-23T23:52:22Z"),
            Some(1_795_477_942_000)
        );
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    #[test]
    fn the_sqlite_backend_keeps_the_contract() {
        let dirs = std::cell::RefCell::new(Vec::new());
        crate::contract::run_all(&|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.db");
            dirs.borrow_mut().push(dir);
            Box::new(move || Box::new(SqliteStore::open(&path).unwrap()) as Box<dyn crate::Store>)
        });
    }

    #[test]
    fn reopening_keeps_everything_and_runs_no_migration_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut store = SqliteStore::open(&path).unwrap();
        let g0 = store.generation().unwrap();
        store
            .set_stage(&StageChange {
                route: "students",
                current: Stage::Legacy,
                to: Stage::Shadow,
                actor: "ana",
                reason: None,
                forced: false,
                verdict: None,
            })
            .unwrap();
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.generation().unwrap(), g0 + 1);
        assert_eq!(store.stages().unwrap()["students"], Stage::Shadow);
        let version: i64 = store
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
    }

    #[test]
    fn every_shadow_metric_round_trips_through_its_stored_name() {
        let all: Vec<ShadowMetric> = ShadowMetric::all().collect();
        assert_eq!(all.len(), 13, "every metric, each unmirrored reason once");
        for metric in all {
            assert_eq!(ShadowMetric::parse(metric.as_str()), Some(metric));
        }
        assert_eq!(ShadowMetric::parse("unmirrored:tomorrow"), None);
    }
}
