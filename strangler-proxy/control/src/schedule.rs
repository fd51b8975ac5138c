//! Scheduled reconciliation (`[[schedule]]`): the plan's verifies, run by one proxy per
//! store. Like the analysis controller, the scheduler runs in every proxy and acts only
//! while it holds the store's `schedule-controller` lease; it keeps each schedule's next
//! due time, starts a run in a task of its own (on the control runtime, never a data-plane
//! thread), and skips a due run, counted and logged, while that schedule's previous run is
//! still going, so a schedule never runs twice at once. A holder that loses the lease (or
//! finds its fencing generation changed) aborts its runs at its next tick; a verify keeps
//! its cursors, so the next holder's run continues where it stopped.
//!
//! A run's results are the verify's own stored results. When a run finds a difference in a
//! kind the link's previous result had none in, the `[[notify]]` webhooks are told
//! (`verify_differed`), once per appearance, not on every run that still sees it.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use serde_json::json;
use strangler_plan::{NotifyEvent, Plan, ScheduleSpec};
use strangler_relay::SharedStore;
use strangler_relay::verify::{self, Observer, Options, Progress, WalkReport};
use strangler_store::{StoreError, VerifyRecord, now_ms};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::lease::{OwnedStore, on_store as blocking, owner_id};
use crate::notify::Notifier;

/// The store lease that makes one scheduler act per store.
pub const LEASE: &str = "schedule-controller";
/// How long the lease holds without renewal; a stopped holder is replaced after it.
pub const LEASE_TTL: Duration = Duration::from_secs(3);
/// How often the scheduler looks at its schedules and renews the lease.
pub const TICK: Duration = Duration::from_millis(200);

/// What became of each schedule in this proxy, by its `verify` (for `/metrics` and
/// `/admin/status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScheduleCounts {
    /// Runs started.
    pub runs: u64,
    /// Due runs skipped because the previous one was still going.
    pub skipped: u64,
    /// Runs that could not finish (a side or the store failed).
    pub failed: u64,
    /// Whether a run is going now.
    pub running: bool,
    /// When the next run is due (Unix ms), while this proxy holds the lease.
    pub next_due_ms: Option<i64>,
    /// Why the last failed run failed.
    pub last_error: Option<String>,
}

/// Every schedule's counts, shared with the admin API.
pub type ScheduleBoard = Arc<Mutex<BTreeMap<String, ScheduleCounts>>>;

/// A scheduled run's work, as a boxed future so the scheduler can hold any.
pub type RunFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Runs one schedule's verify: [`PlanVerifier`] walks the plan's links; a test gives its
/// own to watch the scheduler.
pub trait Verifier: Send + Sync + 'static {
    fn run(&self, plan: Arc<Plan>, schedule: ScheduleSpec) -> RunFuture;
}

/// The verify `strangler verify` runs, with the schedule's kinds and rate, storing its
/// results (and cursors) in `store`.
pub struct PlanVerifier {
    pub store: SharedStore,
}

impl Verifier for PlanVerifier {
    fn run(&self, plan: Arc<Plan>, schedule: ScheduleSpec) -> RunFuture {
        let store = Arc::clone(&self.store);
        Box::pin(async move {
            let options = Options {
                types: schedule.types.clone(),
                rate: schedule.rate,
                ..Options::default()
            };
            let walks = verify::plan_walks(&plan, &schedule.verify, &options.types)
                .map_err(|err| err.to_string())?;
            verify::run_walks(&plan, &walks, &store, &options, &Logged)
                .await
                .map(|_| ())
                .map_err(|err| err.to_string())
        })
    }
}

/// A scheduled verify's progress goes to the debug log.
struct Logged;

impl Observer for Logged {
    fn resumed(&self, walk: &str, kind: &str, after: &str, compared: i64) {
        tracing::info!(walk, kind, after, compared, "scheduled verify resumed");
    }

    fn progress(&self, p: &Progress<'_>) {
        tracing::debug!(
            walk = p.walk,
            kind = p.kind,
            compared = p.compared,
            "scheduled verify"
        );
    }

    fn walked(&self, report: &WalkReport) {
        tracing::info!(links = ?report.links, passed = report.passed, compared = report.total(|k| k.compared), differences = report.total(|k| k.differences()), "scheduled verify walked");
    }
}

/// The scheduler task's handle.
pub struct Scheduler {
    task: JoinHandle<()>,
    /// Each schedule's counts.
    pub board: ScheduleBoard,
}

impl Scheduler {
    /// Starts the scheduler on the store at `plan`'s state, running the real verify.
    pub fn start(
        plan: Arc<ArcSwap<Plan>>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, StoreError> {
        let state = plan.load().proxy.state.clone();
        let runs: SharedStore = Arc::new(Mutex::new(strangler_store::open(&state)?));
        Self::start_with(plan, shutdown, Arc::new(PlanVerifier { store: runs }))
    }

    /// Starts the scheduler with `verifier` doing each run's work.
    pub fn start_with(
        plan: Arc<ArcSwap<Plan>>,
        shutdown: watch::Receiver<bool>,
        verifier: Arc<dyn Verifier>,
    ) -> Result<Self, StoreError> {
        let store = strangler_store::open(&plan.load().proxy.state)?;
        let notifier = Notifier::new(plan.load().notify.clone());
        let board = ScheduleBoard::default();
        let scheduler = Loop {
            owner: owner_id(),
            plan,
            store: Arc::new(Mutex::new(store)),
            notifier,
            verifier,
            board: Arc::clone(&board),
            due: HashMap::new(),
            running: HashMap::new(),
            held: false,
            fence: None,
        };
        Ok(Self {
            task: tokio::spawn(scheduler.run(shutdown)),
            board,
        })
    }

    /// Waits until the scheduler stopped its runs, gave its lease up and ended.
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

struct Loop {
    owner: String,
    plan: Arc<ArcSwap<Plan>>,
    /// The lease and the results read around a run; a run's verify has a store of its own.
    store: OwnedStore,
    notifier: Notifier,
    verifier: Arc<dyn Verifier>,
    board: ScheduleBoard,
    /// Per schedule (by `verify`): when its next run is due, Unix ms.
    due: HashMap<String, i64>,
    /// Per schedule: its run in progress.
    running: HashMap<String, JoinHandle<()>>,
    held: bool,
    /// The lease's fencing generation when this scheduler last took it.
    fence: Option<i64>,
}

impl Loop {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_error: Option<String> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            if *shutdown.borrow() {
                break;
            }
            match self.step().await {
                Ok(()) => last_error = None,
                Err(error) => {
                    if last_error.as_ref() != Some(&error) {
                        tracing::warn!(%error, "scheduler step failed");
                    }
                    last_error = Some(error);
                }
            }
        }
        self.stop_runs();
        let owner = self.owner.clone();
        if self.held
            && let Err(error) = blocking(&self.store, move |s| s.release_lease(LEASE, &owner)).await
        {
            tracing::warn!(%error, "cannot release the schedule lease");
        }
    }

    /// Aborts every run in progress (the lease is gone, or the proxy stops).
    fn stop_runs(&mut self) {
        for (_, run) in self.running.drain() {
            run.abort();
        }
        self.due.clear();
        let mut board = self.board.lock().unwrap_or_else(|p| p.into_inner());
        for counts in board.values_mut() {
            counts.running = false;
            counts.next_due_ms = None;
        }
    }

    async fn step(&mut self) -> Result<(), String> {
        let plan = self.plan.load_full();
        let owner = self.owner.clone();
        let fence =
            match blocking(&self.store, move |s| s.take_lease(LEASE, &owner, LEASE_TTL)).await {
                Ok(fence) => fence,
                Err(error) => {
                    // Without the store the lease may have passed on: stop acting.
                    if self.held {
                        self.held = false;
                        self.stop_runs();
                    }
                    return Err(error);
                }
            };
        let held = fence.is_some();
        if held != self.held || (held && fence != self.fence) {
            tracing::info!(held, fence = ?fence, "schedule lease");
            // Runs started under another generation are not this holder's any more.
            self.stop_runs();
            self.held = held;
        }
        self.fence = fence;
        if !held || plan.schedules.is_empty() {
            return Ok(());
        }
        self.running.retain(|_, run| !run.is_finished());
        let now = now_ms();
        let undated: Vec<&ScheduleSpec> = plan
            .schedules
            .iter()
            .filter(|s| !self.due.contains_key(&s.verify))
            .collect();
        if !undated.is_empty() {
            // Due times continue from the store's results, so a restart or a new holder
            // neither runs everything at once nor forgets a schedule.
            let verifies = blocking(&self.store, |s| s.last_verifies()).await?;
            for schedule in undated {
                let last = last_started(&plan, schedule, &verifies);
                self.due
                    .insert(schedule.verify.clone(), schedule.when.next_after(last, now));
            }
        }
        for schedule in &plan.schedules {
            let due = self.due.get(&schedule.verify).copied().unwrap_or(now);
            if due > now {
                self.set_counts(schedule, |c| c.next_due_ms = Some(due));
                continue;
            }
            let next = schedule.when.next_after(Some(now), now);
            self.due.insert(schedule.verify.clone(), next);
            if self.running.contains_key(&schedule.verify) {
                tracing::warn!(schedule = %schedule.verify, "scheduled verify skipped: the previous run is still going");
                self.set_counts(schedule, |c| {
                    c.skipped += 1;
                    c.next_due_ms = Some(next);
                });
                continue;
            }
            self.set_counts(schedule, |c| {
                c.runs += 1;
                c.running = true;
                c.next_due_ms = Some(next);
            });
            let run = Run {
                owner: self.owner.clone(),
                fence: self.fence,
                plan: Arc::clone(&plan),
                schedule: schedule.clone(),
                store: Arc::clone(&self.store),
                notifier: self.notifier.clone(),
                verifier: Arc::clone(&self.verifier),
                board: Arc::clone(&self.board),
            };
            self.running
                .insert(schedule.verify.clone(), tokio::spawn(run.go()));
        }
        Ok(())
    }

    fn set_counts(&self, schedule: &ScheduleSpec, f: impl FnOnce(&mut ScheduleCounts)) {
        let mut board = self.board.lock().unwrap_or_else(|p| p.into_inner());
        f(board.entry(schedule.verify.clone()).or_default());
    }
}

/// A schedule as `strangler status`, `sync status` and reports show it: what the store's
/// verify results say of its links, and when it is next due.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleStatus {
    pub verify: String,
    /// `every 1h` or `cron "0 3 * * *"`.
    pub when: String,
    /// When the previous run started (Unix ms; `None`: some link never verified).
    pub last_started_ms: Option<i64>,
    /// When the next run is due (Unix ms).
    pub next_due_ms: i64,
    /// Whether every link's newest verify passed (`None`: some link never verified).
    pub passed: Option<bool>,
    /// Entities missing, extra or differing in the links' newest verifies.
    pub differences: i64,
    /// Entities those verifies compared.
    pub compared: i64,
}

/// Every schedule of `plan`, from the store's newest verify results.
pub fn statuses(plan: &Plan, verifies: &[VerifyRecord], now: i64) -> Vec<ScheduleStatus> {
    plan.schedules
        .iter()
        .map(|s| {
            let last = last_started(plan, s, verifies);
            let records: Vec<&VerifyRecord> = plan
                .links_of(&s.verify)
                .unwrap_or_default()
                .iter()
                .filter_map(|l| verifies.iter().find(|v| v.link == l.name()))
                .collect();
            ScheduleStatus {
                verify: s.verify.clone(),
                when: s.when.to_string(),
                last_started_ms: last,
                next_due_ms: s.when.next_after(last, now),
                passed: last.map(|_| records.iter().all(|r| r.passed)),
                differences: records
                    .iter()
                    .map(|r| r.missing + r.extra + r.differing)
                    .sum(),
                compared: records.iter().map(|r| r.compared).sum(),
            }
        })
        .collect()
}

/// When the schedule's previous run started, from its links' newest results: the oldest of
/// them (a link never verified: never).
fn last_started(plan: &Plan, schedule: &ScheduleSpec, verifies: &[VerifyRecord]) -> Option<i64> {
    let links = plan.links_of(&schedule.verify)?;
    links
        .iter()
        .map(|l| {
            let name = l.name();
            verifies
                .iter()
                .find(|v| v.link == name)
                .map(|v| v.started_ms)
        })
        .collect::<Option<Vec<i64>>>()?
        .into_iter()
        .min()
}

/// One run of one schedule.
struct Run {
    owner: String,
    fence: Option<i64>,
    plan: Arc<Plan>,
    schedule: ScheduleSpec,
    store: OwnedStore,
    notifier: Notifier,
    verifier: Arc<dyn Verifier>,
    board: ScheduleBoard,
}

impl Run {
    async fn go(self) {
        let name = self.schedule.verify.clone();
        tracing::info!(schedule = %name, "scheduled verify started");
        let before = blocking(&self.store, |s| s.last_verifies()).await;
        let result = self
            .verifier
            .run(Arc::clone(&self.plan), self.schedule.clone())
            .await;
        if let Err(error) = &result {
            tracing::warn!(schedule = %name, %error, "scheduled verify failed");
        }
        {
            let mut board = self.board.lock().unwrap_or_else(|p| p.into_inner());
            let counts = board.entry(name.clone()).or_default();
            counts.running = false;
            if let Err(error) = &result {
                counts.failed += 1;
                counts.last_error = Some(error.clone());
            }
        }
        let (Ok(before), Ok(())) = (before, result) else {
            return;
        };
        let after = match blocking(&self.store, |s| s.last_verifies()).await {
            Ok(after) => after,
            Err(error) => {
                tracing::warn!(schedule = %name, %error, "cannot read the verify's results");
                return;
            }
        };
        let news = appeared(&before, &after);
        if news.is_empty() || !self.still_holds().await {
            return;
        }
        for (record, kinds) in news {
            let message = format!(
                "verify of {} found differences in {}: {} missing, {} extra, {} differing of {} compared",
                record.link,
                kinds.join(", "),
                record.missing,
                record.extra,
                record.differing,
                record.compared
            );
            tracing::warn!(schedule = %name, link = %record.link, kinds = ?kinds, "{message}");
            self.notifier.send(
                NotifyEvent::VerifyDiffered,
                &name,
                &message,
                json!({ "link": record.link, "kinds": kinds, "by_kind": record.by_kind,
                        "missing": record.missing, "extra": record.extra,
                        "differing": record.differing, "compared": record.compared }),
            );
        }
    }

    /// Whether this run's scheduler still holds the lease it started the run under.
    async fn still_holds(&self) -> bool {
        let owner = self.owner.clone();
        let now = blocking(&self.store, move |s| s.take_lease(LEASE, &owner, LEASE_TTL))
            .await
            .ok()
            .flatten();
        now.is_some() && now == self.fence
    }
}

/// The new results (of `after`, not in `before`) with a difference in a kind whose link's
/// previous result had none there, and those kinds.
pub fn appeared<'a>(
    before: &[VerifyRecord],
    after: &'a [VerifyRecord],
) -> Vec<(&'a VerifyRecord, Vec<String>)> {
    after
        .iter()
        .filter_map(|record| {
            let previous = before.iter().find(|b| b.link == record.link);
            if previous == Some(record) {
                return None;
            }
            let kinds: Vec<String> = record
                .by_kind
                .iter()
                .filter(|(kind, n)| {
                    **n > 0 && previous.is_none_or(|p| p.by_kind.get(*kind).is_none_or(|n| *n == 0))
                })
                .map(|(kind, _)| kind.clone())
                .collect();
            (!kinds.is_empty()).then_some((record, kinds))
        })
        .collect()
}

#[cfg(test)]
mod tests;
