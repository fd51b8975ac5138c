//! `strangler verify`: proof, entity by entity, that both sides of a sync link hold the same
//! data. Both sides' entities of each kind the link carries are read in key order, in pages,
//! and merge-walked: an entity only the source has is *missing* on the target, one only the
//! target has is *extra*, one both have with another state or version is *differing*. A
//! difference the relay may still be carrying (the versions differ) is read again once the
//! link's lag has passed, and counted *in flight* when it settled. With `--repair`, each
//! difference that remains is re-emitted through the sides' event intake
//! (`POST /_events`): the winning state as an event whose version is above both sides', so
//! that the ordering and idempotency rules of the sync hold afterwards.
//!
//! Layout: [`SnapshotReader`] is one side ([`http`]: a participant's `GET /_snapshot`;
//! [`postgres`]: a configured query per kind; [`ends`]: a link's two ends, whichever kind); [`walk`] compares one kind; [`repair`]
//! decides and sends what a difference needs; this module plans the walks of a link or a
//! route, keeps the cursors and results in the store, and paces the reads.
//!
//! An entity is the same on both sides when its state (compared by the diff engine) and its
//! version are. A version difference alone counts too: a target ahead of its source would
//! ignore the source's next write as stale.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use strangler_feed::{ApplyReport, Event, SnapshotPage};
use strangler_plan::{Plan, SyncLink};
use strangler_store::{StoreError, VerifyCursor, VerifyRecord, now_ms};

use crate::{SharedStore, link_name};

pub mod ends;
pub mod http;
pub mod postgres;
pub mod repair;
pub mod walk;

pub use repair::{RepairNote, Side};
pub use walk::{Finding, KindReport, Sample};

/// Entities asked for per snapshot read, unless `--batch` says otherwise.
pub const DEFAULT_PAGE: u32 = 500;
/// Most entities asked for per read (what a participant serves at most).
pub const MAX_PAGE: u32 = 5000;
/// Longest a verify waits for the relay before reading a difference again.
pub const MAX_SETTLE: Duration = Duration::from_secs(30);
/// Added to the link's lag before a difference is read again, for the relay's next read.
const SETTLE_MARGIN: Duration = Duration::from_millis(500);

/// Why a verify could not run (a connection, a side's answer, the store); never a
/// difference, which is a finding.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// What was asked for is not in the plan, or not something to verify.
    #[error("{0}")]
    Usage(String),
    #[error("reading {side}: {message}")]
    Read { side: String, message: String },
    #[error("{side} answered {status}: {message}")]
    Refused {
        side: String,
        status: u16,
        message: String,
    },
    #[error(
        "{side} served keys out of order ({previous:?} then {key:?}); its snapshot must be in key byte order"
    )]
    OutOfOrder {
        side: String,
        previous: String,
        key: String,
    },
    #[error("repairing on {side}: {message}")]
    Repair { side: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store task failed: {0}")]
    StoreTask(String),
}

/// One side of a link, as a verify reads it: entities of a kind in key order.
pub trait SnapshotReader: Send + Sync {
    /// The participant's name, for messages and as the origin of repair events.
    fn name(&self) -> &str;
    /// The entity kinds this side serves.
    fn kinds(&self) -> impl Future<Output = Result<Vec<String>, VerifyError>> + Send;
    /// Entities of `kind` whose key sorts after `after` (byte order), at most `limit`.
    fn page(
        &self,
        kind: &str,
        after: &str,
        limit: u32,
    ) -> impl Future<Output = Result<SnapshotPage, VerifyError>> + Send;
    /// Whether this side takes repair events at all (a PostgreSQL outbox does not: its
    /// rows and versions belong to the application).
    fn takes_events(&self) -> bool {
        true
    }
    /// Applies repair events through this side's event intake, idempotently by id and in
    /// version order; `None` when this side takes no events.
    fn apply(
        &self,
        events: &[Event],
    ) -> impl Future<Output = Result<Option<ApplyReport>, VerifyError>> + Send {
        let _ = events;
        async { Ok(None) }
    }
}

/// What `strangler verify` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Kinds to compare (`student`, `student.*`, `*`); empty: every kind the links carry.
    pub types: Vec<String>,
    /// Entities compared per second at most; `None`: as fast as the sides answer.
    pub rate: Option<u32>,
    /// Entities asked for per read.
    pub page: u32,
    /// Forget an interrupted verify's cursors and start from the first key.
    pub restart: bool,
    /// Re-emit each difference, the preferred side winning ties.
    pub repair: Option<Side>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            types: Vec::new(),
            rate: None,
            page: DEFAULT_PAGE,
            restart: false,
            repair: None,
        }
    }
}

/// A comparison of two participants: the links between them that one walk covers (a route's
/// links both ways are compared once per kind), read from the first link's direction.
#[derive(Debug, Clone, PartialEq)]
pub struct Walk {
    /// The links covered; the first names the direction and keeps the cursors.
    pub links: Vec<SyncLink>,
    /// The kinds each link carries (`None`: every kind both sides hold).
    pub link_kinds: Vec<Option<Vec<String>>>,
    /// The kinds `--types` leaves of those (`None`: all of them).
    pub only: Option<Vec<String>>,
}

impl Walk {
    /// The direction compared: `from` is the source side.
    pub fn link(&self) -> &SyncLink {
        &self.links[0]
    }

    /// Its name in the store and in messages: the first link's.
    pub fn name(&self) -> String {
        link_name(self.link())
    }
}

/// The kinds a link carries, from its type patterns (`student.*`, `invoice.paid`);
/// `None` for a link that carries every type.
pub fn link_kinds(link: &SyncLink) -> Option<Vec<String>> {
    if link.types.is_empty() || link.types.iter().any(|t| t == "*") {
        return None;
    }
    let mut kinds: Vec<String> = Vec::new();
    for t in &link.types {
        let kind = strangler_feed::kind_of(t).to_string();
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Some(kinds)
}

/// Whether `--types` patterns (`student`, `student.*`, `*`; empty: all) select `kind`.
pub fn selects(patterns: &[String], kind: &str) -> bool {
    patterns.is_empty()
        || patterns
            .iter()
            .any(|p| p == "*" || p == kind || p.strip_suffix(".*") == Some(kind))
}

/// Checks `--types` patterns: each is `KIND`, `KIND.*` or `*`.
pub fn check_types(patterns: &[String]) -> Result<(), VerifyError> {
    for p in patterns {
        let kind = p.strip_suffix(".*").unwrap_or(p);
        let valid = p == "*"
            || (!kind.is_empty()
                && kind.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                }));
        if !valid {
            return Err(VerifyError::Usage(format!(
                "--types {p}: expected an entity kind like `student`, `student.*` or `*`"
            )));
        }
    }
    Ok(())
}

/// The walks that verify `what`: a link by its name (`legacy->students`), or a route by
/// its name (every link to or from its service, the links between the same two
/// participants walked once per kind).
pub fn plan_walks(plan: &Plan, what: &str, types: &[String]) -> Result<Vec<Walk>, VerifyError> {
    check_types(types)?;
    let links: Vec<&SyncLink> = if let Some(links) = plan.links_of(what) {
        if links.is_empty() {
            let service = plan
                .routes
                .iter()
                .find(|r| r.name == what)
                .map_or("", |r| r.service.as_str());
            return Err(VerifyError::Usage(format!(
                "route `{what}`: no [[sync]] link goes to or from its service `{service}`"
            )));
        }
        links
    } else {
        let links: Vec<String> = plan.sync.iter().map(link_name).collect();
        let routes: Vec<&str> = plan.routes.iter().map(|r| r.name.as_str()).collect();
        return Err(VerifyError::Usage(format!(
            "unknown link or route `{what}` (links: {}; routes: {})",
            if links.is_empty() {
                "none".to_string()
            } else {
                links.join(", ")
            },
            if routes.is_empty() {
                "none".to_string()
            } else {
                routes.join(", ")
            }
        )));
    };
    let mut walks: Vec<Walk> = Vec::new();
    for link in links {
        let kinds = link_kinds(link);
        let same_pair = |w: &Walk| {
            let first = w.link();
            let (a, b) = (first.from.name(), first.to.name());
            let (c, d) = (link.from.name(), link.to.name());
            (a == c && b == d) || (a == d && b == c)
        };
        match walks.iter_mut().find(|w| same_pair(w)) {
            Some(walk) => {
                walk.links.push(link.clone());
                walk.link_kinds.push(kinds);
            }
            None => walks.push(Walk {
                links: vec![link.clone()],
                link_kinds: vec![kinds],
                only: None,
            }),
        }
    }
    if !types.is_empty() {
        for walk in &mut walks {
            walk.only = Some(types.to_vec());
        }
        let selected = walks.iter().any(|w| {
            w.link_kinds.iter().any(|k| {
                k.as_ref()
                    .is_none_or(|k| k.iter().any(|k| selects(types, k)))
            })
        });
        if !selected {
            return Err(VerifyError::Usage(format!(
                "`{what}` carries no kind --types {} selects",
                types.join(",")
            )));
        }
    }
    Ok(walks)
}

/// How far a verify is, for a progress bar or progress lines.
#[derive(Debug, Clone)]
pub struct Progress<'a> {
    pub walk: &'a str,
    pub kind: &'a str,
    /// Entities of this kind compared so far (resumed counts included).
    pub compared: i64,
    /// Entities compared by this run, every kind and walk.
    pub this_run: u64,
    pub elapsed: Duration,
}

/// Told how a verify goes.
pub trait Observer: Send + Sync {
    /// A walk resumed a kind from a stored cursor.
    fn resumed(&self, walk: &str, kind: &str, after: &str, compared: i64);
    /// A page was compared.
    fn progress(&self, progress: &Progress<'_>);
    /// A walk finished (its results are stored).
    fn walked(&self, report: &WalkReport) {
        let _ = report;
    }
}

/// Verifies `walks` of `plan` one after the other, each between its link's participants:
/// what `strangler verify` and a `[[schedule]]` run.
pub async fn run_walks(
    plan: &Plan,
    walks: &[Walk],
    store: &SharedStore,
    options: &Options,
    observer: &dyn Observer,
) -> Result<Vec<WalkReport>, VerifyError> {
    let mut reports = Vec::with_capacity(walks.len());
    for walk in walks {
        let (source, target) = ends::ends(plan, walk.link())?;
        let report = run_walk(walk, &source, &target, store, options, observer).await?;
        observer.walked(&report);
        reports.push(report);
    }
    Ok(reports)
}

/// What one walk found.
#[derive(Debug, Clone, Serialize)]
pub struct WalkReport {
    /// The links covered, the first naming the direction.
    pub links: Vec<String>,
    pub source: String,
    pub target: String,
    pub kinds: Vec<KindReport>,
    /// Whether some kind continued an interrupted verify.
    pub resumed: bool,
    /// No entity missing, extra or differing.
    pub passed: bool,
    pub started_ms: i64,
    pub finished_ms: i64,
}

impl WalkReport {
    /// Sum of a count over the kinds.
    pub fn total(&self, count: impl Fn(&KindReport) -> i64) -> i64 {
        self.kinds.iter().map(count).sum()
    }
}

/// Runs blocking store calls off the async threads.
pub(crate) async fn with_store<T: Send + 'static>(
    store: &SharedStore,
    f: impl FnOnce(&dyn strangler_store::Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, VerifyError> {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || {
        let store = store.lock().unwrap_or_else(|p| p.into_inner());
        f(&**store)
    })
    .await
    .map_err(|err| VerifyError::StoreTask(err.to_string()))?
    .map_err(VerifyError::Store)
}

/// Keeps a verify under its rate: sleeps while more entities were compared than the rate
/// allows for the time gone by.
pub(crate) struct Pace {
    started: Instant,
    done: u64,
    rate: Option<u32>,
}

impl Pace {
    pub(crate) fn new(rate: Option<u32>) -> Self {
        Self {
            started: Instant::now(),
            done: 0,
            rate,
        }
    }

    /// Counts `n` more entities, waiting until the rate allows them.
    pub(crate) async fn account(&mut self, n: u64) {
        self.done += n;
        if let Some(rate) = self.rate.filter(|r| *r > 0) {
            let due = Duration::from_secs_f64(self.done as f64 / f64::from(rate));
            let elapsed = self.started.elapsed();
            if due > elapsed {
                tokio::time::sleep(due - elapsed).await;
            }
        }
    }

    pub(crate) fn done(&self) -> u64 {
        self.done
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// Verifies `walk` between `source` (its link's `from`) and `target`: every kind it covers,
/// resuming from stored cursors unless `options.restart`, then stores one result per link.
pub async fn run_walk<S: SnapshotReader, T: SnapshotReader>(
    walk: &Walk,
    source: &S,
    target: &T,
    store: &SharedStore,
    options: &Options,
    observer: &dyn Observer,
) -> Result<WalkReport, VerifyError> {
    let name = walk.name();
    let started_ms = now_ms();
    let kinds = walk_kinds(walk, source, target).await?;
    if options.restart {
        let link = name.clone();
        with_store(store, move |s| s.clear_verify_cursors(&link)).await?;
    }
    let settle = settle_time(walk, store).await?;
    let mut pace = Pace::new(options.rate);
    let page = match options.rate {
        // A page is at most a second's worth, so the pace is kept page by page.
        Some(rate) => options.page.min(rate.max(1)),
        None => options.page,
    }
    .clamp(1, MAX_PAGE);
    let mut reports = Vec::new();
    let mut resumed = false;
    for kind in &kinds {
        let (link, k) = (name.clone(), kind.clone());
        let stored = with_store(store, move |s| s.verify_cursor(&link, &k)).await?;
        let (report, after) = match stored.and_then(|c| {
            let report = serde_json::from_str::<KindReport>(&c.progress).ok()?;
            Some((c, report))
        }) {
            Some((cursor, report)) => {
                resumed = true;
                observer.resumed(&name, kind, &cursor.after, report.compared);
                if cursor.done {
                    reports.push(report);
                    continue;
                }
                let report = KindReport {
                    resumed_after: Some(cursor.after.clone()),
                    ..report
                };
                (report, cursor.after)
            }
            None => (KindReport::new(kind), String::new()),
        };
        let ctx = walk::Context {
            walk: &name,
            kind,
            source,
            target,
            store,
            page,
            settle,
            repair: options.repair,
            observer,
        };
        let report = walk::walk_kind(&ctx, report, after, &mut pace).await?;
        reports.push(report);
    }
    let finished_ms = now_ms();
    let report = WalkReport {
        links: walk.links.iter().map(link_name).collect(),
        source: walk.link().from.name().to_string(),
        target: walk.link().to.name().to_string(),
        passed: reports.iter().all(KindReport::passed),
        kinds: reports,
        resumed,
        started_ms,
        finished_ms,
    };
    let records = records(walk, &report);
    let link = name;
    with_store(store, move |s| {
        for record in &records {
            s.record_verify(record)?;
        }
        s.clear_verify_cursors(&link)
    })
    .await?;
    Ok(report)
}

/// The kinds a walk compares, in the order its links list them (every kind both sides
/// hold for a link that carries every type), less those `--types` leaves out.
async fn walk_kinds<S: SnapshotReader, T: SnapshotReader>(
    walk: &Walk,
    source: &S,
    target: &T,
) -> Result<Vec<String>, VerifyError> {
    let mut kinds: Vec<String> = Vec::new();
    let mut push = |kind: &str| {
        if !kinds.iter().any(|k| k == kind) {
            kinds.push(kind.to_string());
        }
    };
    let mut both_hold = None;
    for carried in &walk.link_kinds {
        match carried {
            Some(listed) => listed.iter().for_each(|k| push(k)),
            None => {
                if both_hold.is_none() {
                    let on_target = target.kinds().await?;
                    both_hold = Some(
                        source
                            .kinds()
                            .await?
                            .into_iter()
                            .filter(|k| on_target.contains(k))
                            .collect::<Vec<_>>(),
                    );
                }
                both_hold.iter().flatten().for_each(|k| push(k));
            }
        }
    }
    if let Some(only) = &walk.only {
        kinds.retain(|k| selects(only, k));
    }
    Ok(kinds)
}

/// How long a difference the relay may be carrying is given before it is read again: the
/// slowest lag of the walk's links as their relays last recorded it, plus a margin.
async fn settle_time(walk: &Walk, store: &SharedStore) -> Result<Duration, VerifyError> {
    let names: Vec<String> = walk.links.iter().map(link_name).collect();
    let lag = with_store(store, move |s| {
        Ok(s.links()?
            .into_iter()
            .filter(|p| names.contains(&p.link))
            .map(|p| p.lag_seconds)
            .fold(0.0_f64, f64::max))
    })
    .await?;
    let lag = if lag.is_finite() && lag > 0.0 {
        Duration::from_secs_f64(lag).min(MAX_SETTLE)
    } else {
        Duration::ZERO
    };
    Ok(lag + SETTLE_MARGIN)
}

/// One stored result per link of the walk, from the kinds that link carries.
fn records(walk: &Walk, report: &WalkReport) -> Vec<VerifyRecord> {
    walk.links
        .iter()
        .zip(&walk.link_kinds)
        .map(|(link, carried)| {
            let covered: Vec<&KindReport> = report
                .kinds
                .iter()
                .filter(|k| carried.as_ref().is_none_or(|c| c.contains(&k.kind)))
                .collect();
            let complete = walk.only.is_none()
                || carried
                    .as_ref()
                    .is_some_and(|c| c.iter().all(|k| covered.iter().any(|r| &r.kind == k)));
            let sum = |count: fn(&KindReport) -> i64| covered.iter().map(|k| count(k)).sum();
            VerifyRecord {
                link: link_name(link),
                kinds: covered.iter().map(|k| k.kind.clone()).collect(),
                complete,
                compared: sum(|k| k.compared),
                missing: sum(|k| k.missing),
                extra: sum(|k| k.extra),
                differing: sum(|k| k.differing),
                in_flight: sum(|k| k.in_flight),
                repaired: sum(|k| k.repaired),
                by_kind: covered
                    .iter()
                    .map(|k| (k.kind.clone(), k.differences()))
                    .collect(),
                passed: covered.iter().all(|k| k.passed()),
                started_ms: report.started_ms,
                finished_ms: report.finished_ms,
            }
        })
        .collect()
}

/// An error with its causes (a client's connect failure, a server's own message), on one
/// line, each cause once.
pub(crate) fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A kind's cursor as stored after a page: `after` the last key counted.
pub(crate) fn cursor(walk: &str, report: &KindReport, after: &str, done: bool) -> VerifyCursor {
    VerifyCursor {
        link: walk.to_string(),
        kind: report.kind.clone(),
        after: after.to_string(),
        done,
        progress: serde_json::to_string(report).unwrap_or_default(),
        updated_ms: now_ms(),
    }
}

#[cfg(test)]
mod tests;
