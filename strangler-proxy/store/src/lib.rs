//! The state store: what changes while a migration runs. Each route's stage, the append-only
//! audit log, the live proxies (which table generation each serves, with a heartbeat) and
//! their counters, sync checkpoints and leases, and shadow results.
//!
//! Layout:
//! - the interface, one small trait per concern: [`Stages`] (with a cheap change token to
//!   poll, and change notifications where the backend has them), [`ProxyRegistry`],
//!   [`Checkpoints`] (and leases), [`ShadowResults`], [`Rollouts`], [`Verifications`]
//!   (`strangler verify`'s resumable cursors and its results), and [`Transfer`] (a
//!   backend-neutral copy of a store's contents, in [`transfer`]); [`Store`] is all of
//!   them, what [`open`] returns;
//! - [`sqlite`]: the embedded backend (one file, WAL), the default;
//! - [`postgres`]: a PostgreSQL database that a fleet of proxies shares, with change
//!   notifications (`LISTEN`/`NOTIFY`);
//! - [`pg_connect`]: how a PostgreSQL URL becomes a connection (TLS when it asks), also
//!   used by the sync relay's PostgreSQL endpoints.
//!
//! API boundary: callers hold a `Box<dyn Store>` (or a trait they need) and never see the
//! backend; every method is blocking, so async callers run it on a blocking thread.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use strangler_plan::{Stage, StoreLocation};

pub mod pg_connect;
pub mod postgres;
pub mod sqlite;
pub mod transfer;
pub mod verifications;

#[cfg(test)]
mod contract;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use transfer::{Snapshot, Transfer};
pub use verifications::{Verifications, VerifyCursor, VerifyRecord};

/// A proxy whose heartbeat is older than this is not live.
pub const LIVE_WINDOW: Duration = Duration::from_secs(3);
/// Samples kept per route and path group.
pub const SAMPLES_PER_GROUP: i64 = 5;
/// Latency pairs kept per route (the newest).
pub const LATENCIES_PER_ROUTE: i64 = 5000;
/// Captured cases kept per route over all its differing paths (the newest), whatever each
/// path's own bound: paths are as many as the answers' shapes, which a route does not bound.
pub const CAPTURES_PER_ROUTE: i64 = 500;

/// Opens the store `state` names, creating it (or its schema) if needed.
pub fn open(state: &StoreLocation) -> Result<Box<dyn Store>, StoreError> {
    match state {
        StoreLocation::File(path) => Ok(Box::new(SqliteStore::open(path)?)),
        StoreLocation::Postgres(url) => Ok(Box::new(PgStore::open(url)?)),
    }
}

/// Something a backend calls when another writer may have changed the stages.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// A running subscription to the store's change notifications; dropping it stops it.
pub trait Subscription: Send {
    /// Whether the notification channel is up now; while it is not, changes are only seen
    /// by polling.
    fn is_listening(&self) -> bool;
}

/// Every concern of the store, as one object.
pub trait Store:
    Stages + ProxyRegistry + Checkpoints + ShadowResults + Rollouts + Verifications + Transfer + Send
{
}

impl<
    T: Stages
        + ProxyRegistry
        + Checkpoints
        + ShadowResults
        + Rollouts
        + Verifications
        + Transfer
        + Send,
> Store for T
{
}

/// Analysis checks and progressive rollouts, as the analysis controller records them.
pub trait Rollouts {
    /// Stores the results of one check.
    fn record_checks(&self, checks: &[CheckRecord]) -> Result<(), StoreError>;
    /// A route's newest `limit` check results, oldest first.
    fn checks(&self, route: &str, limit: u32) -> Result<Vec<CheckRecord>, StoreError>;
    /// Writes where a route's rollout is.
    fn set_rollout(&self, rollout: &RolloutRecord) -> Result<(), StoreError>;
    /// Every rollout ever started, one per route (its latest).
    fn rollouts(&self) -> Result<Vec<RolloutRecord>, StoreError>;
}

/// One metric's verdict in one analysis check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckRecord {
    pub route: String,
    /// The analysis run it belongs to.
    pub run: Option<i64>,
    pub at: String,
    /// `error_rate`, `p99_ratio`, `mismatch_rate`, `shadow_error_rate`, `sync_lag_seconds`.
    pub metric: String,
    /// `None`: not enough data for a verdict.
    pub value: Option<f64>,
    pub budget: f64,
    /// `None`: no verdict (too few requests).
    pub passed: Option<bool>,
    /// What was measured, in words (`3 of 20 answers from new were 5xx`).
    pub detail: String,
}

/// Where a route's progressive rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Walking its steps.
    Running,
    /// At a pause step, waiting for `strangler promote`.
    Paused,
    /// Cut over: every step done.
    Done,
    /// Stopped by `strangler abort` (and rolled back).
    Aborted,
    /// Stopped because the analysis rolled the route back.
    RolledBack,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Done => "done",
            RolloutState::Aborted => "aborted",
            RolloutState::RolledBack => "rolled_back",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            RolloutState::Running,
            RolloutState::Paused,
            RolloutState::Done,
            RolloutState::Aborted,
            RolloutState::RolledBack,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// Whether the controller still walks it.
    pub fn is_active(self) -> bool {
        matches!(self, RolloutState::Running | RolloutState::Paused)
    }
}

/// A route's rollout: the step it is at and since when.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutRecord {
    pub route: String,
    /// Index into the route's `steps`.
    pub step: usize,
    pub state: RolloutState,
    /// When the current step started (or last restarted, after a failed check), Unix ms.
    pub step_started_ms: i64,
    pub updated_at: String,
    /// Why it is where it is, in words.
    pub message: String,
}

/// Route stages, their generation and the audit log.
pub trait Stages {
    /// A value that changes whenever anyone commits to the store; cheap enough to poll
    /// every few milliseconds. Equal tokens mean nothing changed.
    fn change_token(&self) -> Result<i64, StoreError>;
    /// The generation of the newest stage change.
    fn generation(&self) -> Result<i64, StoreError>;
    /// Every route's stored stage (routes without one are at the plan's initial stage).
    fn stages(&self) -> Result<HashMap<String, Stage>, StoreError>;
    /// Moves a route, appends the audit entry and bumps the generation, in one
    /// transaction; a lost race (someone moved the route since `current` was read) writes
    /// nothing.
    fn set_stage(&mut self, change: &StageChange<'_>) -> Result<StageWrite, StoreError>;
    /// The audit log, oldest first, optionally for one route, the last `limit` entries.
    fn history(&self, route: Option<&str>, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;
    /// Every audit entry after id `after`, oldest first (what a watcher has not seen).
    fn history_since(&self, after: i64) -> Result<Vec<AuditEntry>, StoreError>;
    /// Calls `wake` whenever a stage change may have been committed by anyone, and once
    /// after every reconnect of the notification channel (changes may have been missed
    /// while it was down). `None`: the backend pushes nothing; poll [`Stages::change_token`].
    fn subscribe(&self, wake: Wake) -> Result<Option<Box<dyn Subscription>>, StoreError> {
        let _ = wake;
        Ok(None)
    }
}

/// The running proxies: which generation each serves, heartbeats and counters.
pub trait ProxyRegistry {
    /// Registers (or re-registers) a running proxy.
    fn register_proxy(&self, record: &ProxyRecord) -> Result<(), StoreError>;
    /// Records that proxy `id` now serves `generation`.
    fn applied(&self, id: &str, generation: i64) -> Result<(), StoreError>;
    /// Heartbeat with the proxy's counters since it started.
    fn heartbeat(&mut self, id: &str, counters: &[RouteCounters]) -> Result<(), StoreError>;
    /// Removes a proxy that is shutting down.
    fn deregister_proxy(&self, id: &str) -> Result<(), StoreError>;
    /// Every registered proxy, live or not, newest heartbeat first.
    fn proxies(&self) -> Result<Vec<ProxyRecord>, StoreError>;
    /// Counters summed over the proxies in `ids`, per route.
    fn counters(&self, ids: &[String]) -> Result<HashMap<String, RouteCounters>, StoreError>;
}

/// Sync links: checkpoints, progress and the lease that lets one relay run per link.
pub trait Checkpoints {
    /// The checkpoint of `link` (0 when it never ran).
    fn checkpoint(&self, link: &str) -> Result<i64, StoreError>;
    /// Records a delivered batch: the new checkpoint (never moved back) and counters, the
    /// error cleared.
    fn advance(&self, progress: &LinkProgress) -> Result<(), StoreError>;
    /// Takes or renews the lease on `link` for `owner`; answers whether `owner` holds it.
    fn lease_link(&self, link: &str, owner: &str, lease: Duration) -> Result<bool, StoreError>;
    /// Gives a lease up, so another relay takes over at once.
    fn release_link(&self, link: &str, owner: &str) -> Result<(), StoreError>;
    /// Records a failed attempt; the checkpoint stays.
    fn link_failed(&self, link: &str, error: &str) -> Result<(), StoreError>;
    /// Every link's progress.
    fn links(&self) -> Result<Vec<LinkProgress>, StoreError>;
    /// Takes or renews the lease `name` for `owner` (one analysis controller per store, say);
    /// answers its fencing generation while `owner` holds it (it grows whenever the lease
    /// changes hands), `None` when someone else does.
    fn take_lease(&self, name: &str, owner: &str, ttl: Duration)
    -> Result<Option<i64>, StoreError>;
    /// Gives a lease up, so another takes it at once.
    fn release_lease(&self, name: &str, owner: &str) -> Result<(), StoreError>;
}

/// Shadow comparison results, aggregated per route.
pub trait ShadowResults {
    /// Adds a batch of results.
    fn record_shadow(&mut self, batch: &ShadowBatch) -> Result<(), StoreError>;
    /// The noisy paths learned so far, per route.
    fn noisy_paths(&self) -> Result<HashMap<String, HashSet<String>>, StoreError>;
    /// Everything recorded for `route` (`""`: results not tied to a route, like drops).
    fn shadow_summary(&self, route: &str) -> Result<ShadowSummary, StoreError>;
    /// The route's analysis runs, oldest first: one per stage entry (shadow, each canary
    /// step, cutover), ended by the next change; the open one (if any) is last.
    fn runs(&self, route: &str) -> Result<Vec<AnalysisRun>, StoreError>;
    /// The counts and differing paths of the route's open run (empty when none is open):
    /// what the gate judges.
    fn run_summary(&self, route: &str) -> Result<ShadowSummary, StoreError>;
    /// The route's captured cases (the route's `capture` section), oldest first.
    fn captures(&self, route: &str) -> Result<Vec<CapturedCase>, StoreError>;
}

/// A mismatching exchange kept for replay: the request (redacted), both answers and the
/// differences, as the proxy captured it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapturedCase {
    /// Grows with every case stored; names the case in an exported bundle.
    pub id: i64,
    pub route: String,
    /// The differing path (group) it was kept for.
    pub path: String,
    /// When it was stored.
    pub at: String,
    /// The case as the data plane wrote it (`strangler_dataplane::capture::Case`).
    pub case: serde_json::Value,
}

/// One analysis run: what was measured while a route stayed in one stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnalysisRun {
    pub id: i64,
    pub route: String,
    /// The stage it measured (`shadow`, `canary 10%`, `cutover`).
    pub stage: String,
    pub started_at: String,
    /// `None` while it runs.
    pub ended_at: Option<String>,
    /// How it ended: the gate's judgement when the change was made, and the change.
    pub verdict: Option<String>,
    /// Its counts (at its end, or now).
    #[serde(serialize_with = "metric_names")]
    pub counts: BTreeMap<ShadowMetric, i64>,
}

impl AnalysisRun {
    pub fn count(&self, metric: ShadowMetric) -> i64 {
        self.counts.get(&metric).copied().unwrap_or(0)
    }
}

fn metric_names<S: serde::Serializer>(
    counts: &BTreeMap<ShadowMetric, i64>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = serializer.serialize_map(Some(counts.len()))?;
    for (metric, n) in counts {
        map.serialize_entry(metric.as_str(), n)?;
    }
    map.end()
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot create the state store's directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The store could not be reached (a database server down, refusing, or too slow).
    #[error("cannot reach the state store {store}: {message}")]
    Unreachable { store: String, message: String },
    /// The store answered with an error.
    #[error("state store {store}: {message}")]
    Database { store: String, message: String },
    #[error("state store {store} has a stage it cannot read for route {route}: {message}")]
    Corrupt {
        store: String,
        route: String,
        message: String,
    },
    /// A copy was refused: the target already holds a migration's state.
    #[error("the state store {store} is not empty")]
    NotEmpty { store: String },
}

impl StoreError {
    /// Whether trying again later may succeed (a busy or unreachable store), as opposed to
    /// a store that is corrupt or cannot be created.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::SystemIoFailure
                        | rusqlite::ErrorCode::CannotOpen
                )
            ),
            StoreError::Unreachable { .. } => true,
            StoreError::CreateDir { .. }
            | StoreError::Corrupt { .. }
            | StoreError::NotEmpty { .. }
            | StoreError::Database { .. } => false,
        }
    }
}

/// A stage change as an operator asks for it.
#[derive(Debug, Clone, Copy)]
pub struct StageChange<'a> {
    pub route: &'a str,
    /// What the caller believes the stage is (the store's, or the plan's initial stage).
    pub current: Stage,
    pub to: Stage,
    pub actor: &'a str,
    pub reason: Option<&'a str>,
    /// Made with `--force` (past a closed gate, or out of `retired`).
    pub forced: bool,
    /// The gate's judgement of the run this change ends, for its record.
    pub verdict: Option<&'a str>,
}

/// What [`Stages::set_stage`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageWrite {
    Changed(Change),
    /// Another writer moved the route first; it is now in `now`, and nothing was written.
    Raced {
        now: Stage,
    },
}

/// One stage change, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    pub route: String,
    pub from: String,
    pub to: String,
    pub actor: String,
    pub reason: Option<String>,
    pub forced: bool,
    pub generation: i64,
}

/// A running proxy as it registered itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyRecord {
    pub id: String,
    pub pid: u32,
    pub listen: String,
    pub admin: String,
    /// Generation of the route table it serves.
    pub generation: i64,
    /// When it started serving that generation (Unix ms).
    pub applied_at_ms: i64,
    pub started_at: String,
    pub heartbeat_ms: i64,
}

impl ProxyRecord {
    pub fn is_live(&self, now_ms: i64) -> bool {
        now_ms - self.heartbeat_ms <= LIVE_WINDOW.as_millis() as i64
    }
}

/// What a stage change wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub route: String,
    pub from: Stage,
    pub to: Stage,
    /// The store generation that carries the change; proxies serving it have applied it.
    pub generation: i64,
}

/// A route's counters at one moment, as stored by each proxy and summed by `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RouteCounters {
    pub route: String,
    pub requests: u64,
    /// 5xx answers, unless the client caused them.
    pub errors: u64,
    pub served_legacy: u64,
    pub served_new: u64,
    /// 5xx each side's service caused.
    pub errors_legacy: u64,
    pub errors_new: u64,
    /// Answers per latency bucket, per side (the data plane's bounds, then one above).
    #[serde(skip)]
    pub latency_legacy: Vec<u64>,
    #[serde(skip)]
    pub latency_new: Vec<u64>,
}

impl RouteCounters {
    /// Adds another proxy's counters.
    pub fn add(&mut self, c: &RouteCounters) {
        self.requests += c.requests;
        self.errors += c.errors;
        self.served_legacy += c.served_legacy;
        self.served_new += c.served_new;
        self.errors_legacy += c.errors_legacy;
        self.errors_new += c.errors_new;
        add_buckets(&mut self.latency_legacy, &c.latency_legacy);
        add_buckets(&mut self.latency_new, &c.latency_new);
    }
}

fn add_buckets(sum: &mut Vec<u64>, more: &[u64]) {
    if sum.len() < more.len() {
        sum.resize(more.len(), 0);
    }
    for (s, m) in sum.iter_mut().zip(more) {
        *s += m;
    }
}

/// A sync link's progress, as its relay records it after every batch.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LinkProgress {
    /// `from->to`.
    pub link: String,
    /// Highest source `seq` acknowledged by the target (or filtered out).
    pub checkpoint: i64,
    /// Source head when last read.
    pub head: i64,
    /// Age of the oldest event not yet delivered (0 when caught up).
    pub lag_seconds: f64,
    /// Events the target applied, acknowledged as duplicates, and not sent (origin or type).
    pub applied: i64,
    pub duplicates: i64,
    pub skipped: i64,
    /// Events the target refused and parked (see its `parked_events`), and the last reason.
    pub rejected: i64,
    pub last_rejection: Option<String>,
    pub last_error: Option<String>,
    pub updated_ms: i64,
}

impl LinkProgress {
    pub fn lag_events(&self) -> i64 {
        (self.head - self.checkpoint).max(0)
    }
}

/// Why a mirrored request was not compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmirrored {
    /// Not in the route's sample.
    SampledOut,
    /// An unsafe method on a route whose writes are skipped.
    WriteSkipped,
    /// A body over the route's cap.
    TooLarge,
    /// The route's in-flight cap was reached.
    Busy,
    /// The client's request or the primary's answer did not complete.
    Incomplete,
    /// Both answered, but the comparer was behind (the proxy busy): not compared.
    Shed,
    /// Not started: the proxy thread was busy (`[proxy] shadow_max_busy`), shadow yielded.
    Throttled,
}

impl Unmirrored {
    pub const ALL: [Unmirrored; 7] = [
        Unmirrored::SampledOut,
        Unmirrored::WriteSkipped,
        Unmirrored::TooLarge,
        Unmirrored::Busy,
        Unmirrored::Incomplete,
        Unmirrored::Shed,
        Unmirrored::Throttled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Unmirrored::SampledOut => "sampled_out",
            Unmirrored::WriteSkipped => "write_skipped",
            Unmirrored::TooLarge => "too_large",
            Unmirrored::Busy => "busy",
            Unmirrored::Incomplete => "incomplete",
            Unmirrored::Shed => "shed",
            Unmirrored::Throttled => "throttled",
        }
    }
}

/// What the shadow counters count, per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ShadowMetric {
    /// Both sides answered and were compared.
    Compared,
    /// Compared with no difference.
    Matched,
    /// Compared with a difference that is not noise.
    Mismatched,
    /// Compared, and every difference was noise.
    NoisyOnly,
    /// The candidate failed (connect, timeout, unreadable answer).
    Errors,
    /// Not compared, and why.
    Unmirrored(Unmirrored),
    /// Results the recorder's queue could not take.
    Dropped,
}

impl ShadowMetric {
    /// The name stored and reported (`compared`, `unmirrored:busy`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ShadowMetric::Compared => "compared",
            ShadowMetric::Matched => "matched",
            ShadowMetric::Mismatched => "mismatched",
            ShadowMetric::NoisyOnly => "noisy_only",
            ShadowMetric::Errors => "errors",
            ShadowMetric::Dropped => "dropped",
            ShadowMetric::Unmirrored(reason) => match reason {
                Unmirrored::SampledOut => "unmirrored:sampled_out",
                Unmirrored::WriteSkipped => "unmirrored:write_skipped",
                Unmirrored::TooLarge => "unmirrored:too_large",
                Unmirrored::Busy => "unmirrored:busy",
                Unmirrored::Incomplete => "unmirrored:incomplete",
                Unmirrored::Shed => "unmirrored:shed",
                Unmirrored::Throttled => "unmirrored:throttled",
            },
        }
    }

    /// Every metric.
    pub fn all() -> impl Iterator<Item = ShadowMetric> {
        [
            ShadowMetric::Compared,
            ShadowMetric::Matched,
            ShadowMetric::Mismatched,
            ShadowMetric::NoisyOnly,
            ShadowMetric::Errors,
            ShadowMetric::Dropped,
        ]
        .into_iter()
        .chain(Unmirrored::ALL.map(ShadowMetric::Unmirrored))
    }

    /// The metric a stored name stands for (`None`: a name this version does not know).
    pub fn parse(name: &str) -> Option<Self> {
        Self::all().find(|m| m.as_str() == name)
    }
}

/// Shadow results gathered since the last flush, for one route.
#[derive(Debug, Clone, Default)]
pub struct ShadowBatch {
    pub route: String,
    pub counts: BTreeMap<ShadowMetric, i64>,
    /// (path, kind, noisy) → count.
    pub paths: BTreeMap<(String, String, bool), i64>,
    /// (path, sample JSON).
    pub samples: Vec<(String, String)>,
    /// (primary ms, candidate ms).
    pub latencies: Vec<(f64, f64)>,
    /// Captured cases: (path, case JSON), oldest first.
    pub captures: Vec<(String, String)>,
    /// Cases kept per path of the route (its `capture.mismatches`); older ones go first.
    pub captures_per_path: i64,
}

impl ShadowBatch {
    /// Adds `n` to a counter.
    pub fn count(&mut self, metric: ShadowMetric, n: i64) {
        *self.counts.entry(metric).or_default() += n;
    }
}

/// A route's shadow record, as reports and the gate read it.
#[derive(Debug, Clone, Default)]
pub struct ShadowSummary {
    pub route: String,
    pub counts: BTreeMap<ShadowMetric, i64>,
    /// (path, kind, noisy, count), most frequent first.
    pub paths: Vec<(String, String, bool, i64)>,
    /// (path, sample JSON), oldest first.
    pub samples: Vec<(String, serde_json::Value)>,
    pub latencies: Vec<(f64, f64)>,
}

impl ShadowSummary {
    pub fn count(&self, metric: ShadowMetric) -> i64 {
        self.counts.get(&metric).copied().unwrap_or(0)
    }

    /// Mismatched ÷ compared (noise not counted), or `None` before any comparison.
    pub fn mismatch_rate(&self) -> Option<f64> {
        let compared = self.count(ShadowMetric::Compared);
        (compared > 0).then(|| self.count(ShadowMetric::Mismatched) as f64 / compared as f64)
    }

    /// What the gate judges: a candidate that failed to answer (error) counts as a mismatch,
    /// so a service that times out on the hard requests cannot pass on the easy ones.
    pub fn failure_rate(&self) -> Option<f64> {
        let attempts = self.count(ShadowMetric::Compared) + self.count(ShadowMetric::Errors);
        (attempts > 0).then(|| {
            (self.count(ShadowMetric::Mismatched) + self.count(ShadowMetric::Errors)) as f64
                / attempts as f64
        })
    }

    /// The most frequent mismatching (not noisy) paths.
    pub fn top_paths(&self, n: usize) -> Vec<(String, i64)> {
        self.paths
            .iter()
            .filter(|(_, _, noisy, _)| !noisy)
            .take(n)
            .map(|(p, k, _, c)| (format!("{p} ({k})"), *c))
            .collect()
    }

    /// Requests not compared, per reason.
    pub fn unmirrored(&self) -> Vec<(Unmirrored, i64)> {
        self.counts
            .iter()
            .filter_map(|(m, n)| match m {
                ShadowMetric::Unmirrored(reason) => Some((*reason, *n)),
                _ => None,
            })
            .collect()
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// RFC 3339 UTC, second precision is not enough for an audit log: milliseconds.
pub fn timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = strangler_plan::schedule::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses what [`timestamp`] writes (and any `YYYY-MM-DDTHH:MM:SS[.fff]Z`) to Unix ms.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || !text.ends_with('Z') {
        return None;
    }
    let num = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let fraction = text.get(19..text.len() - 1)?;
    let millis = match fraction.strip_prefix('.') {
        None if fraction.is_empty() => 0,
        Some(digits) if !digits.is_empty() && digits.bytes().all(|d| d.is_ascii_digit()) => {
            format!("{digits:0<3}").get(..3)?.parse::<i64>().ok()?
        }
        _ => return None,
    };
    let days = strangler_plan::schedule::days_from_civil(year, month, day);
    Some(((days * 86_400 + hour * 3600 + minute * 60 + second) * 1000) + millis)
}

/// The store's traits, for callers that hold a `Box<dyn Store>`.
pub mod prelude {
    pub use crate::{
        Checkpoints, ProxyRegistry, Rollouts, ShadowResults, Stages, Store, Transfer, Verifications,
    };
}
