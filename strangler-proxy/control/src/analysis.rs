//! The analysis controller: one per store (a lease), it judges every route in a canary or
//! cutover against its budgets every `interval`, rolls a route back to legacy after
//! `failure_limit` failed checks in a row, walks progressive rollouts step by step, and
//! tells the webhooks. It runs in every proxy; only the lease holder acts, and a holder
//! that loses the lease stops acting at once. Everything it knows is in the store, so
//! another proxy (or a restart) takes over where it stood.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde_json::json;
use strangler_plan::{AnalysisSpec, NotifyEvent, Plan, RouteSpec, Stage, Step};
use strangler_store::{
    CheckRecord, LinkProgress, RolloutRecord, RolloutState, RouteCounters, ShadowMetric, Store,
    StoreError, now_ms, timestamp,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::notify::Notifier;
use crate::rollout::{self, Move, Outcome, Request};

/// The store lease that makes one controller act per store.
pub const LEASE: &str = "analysis-controller";
/// How long the lease holds without renewal; a stopped holder is replaced after it.
pub const LEASE_TTL: Duration = Duration::from_secs(3);
/// How often the controller looks (each route is checked at its own interval).
pub const TICK: Duration = Duration::from_millis(200);
/// The actor automatic rollbacks are recorded under.
pub const ANALYSIS_ACTOR: &str = "strangler-analysis";
/// The actor rollout steps are recorded under.
pub const ROLLOUT_ACTOR: &str = "strangler-rollout";
/// How long a step's stage change waits for every live proxy.
const CONFIRM_WAIT: Duration = Duration::from_secs(2);

/// What the controller reads from the store each tick.
struct Snapshot {
    stages: HashMap<String, Stage>,
    counters: HashMap<String, RouteCounters>,
    /// Per route: the open run's id and counts.
    runs: HashMap<String, (i64, std::collections::BTreeMap<ShadowMetric, i64>)>,
    links: Vec<LinkProgress>,
    rollouts: Vec<RolloutRecord>,
    /// Newest audit entry id, and the entries after the last one seen.
    audit: Vec<strangler_store::AuditEntry>,
}

/// A route's watch between checks.
#[derive(Default)]
struct RouteWatch {
    run: Option<i64>,
    last_check: Option<Instant>,
    counters: RouteCounters,
    shadow: std::collections::BTreeMap<ShadowMetric, i64>,
    /// Consecutive failed checks.
    failures: u32,
    /// When the last failed check happened (restarts a rollout step's clock).
    last_failure_ms: i64,
    /// When the last check with a passing verdict (and none failing) happened.
    last_pass_ms: i64,
}

/// The controller task's handle.
pub struct AnalysisController {
    task: JoinHandle<()>,
}

impl AnalysisController {
    /// Starts the controller on the store at `plan`'s state; it stops with `shutdown`.
    pub fn start(
        plan: Arc<ArcSwap<Plan>>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, StoreError> {
        let store = strangler_store::open(&plan.load().proxy.state)?;
        let notifier = Notifier::new(plan.load().notify.clone());
        let controller = Controller {
            owner: crate::lease::owner_id(),
            plan,
            store: Arc::new(Mutex::new(store)),
            notifier,
            watches: HashMap::new(),
            audit_seen: None,
            held: false,
            fence: None,
        };
        Ok(Self {
            task: tokio::spawn(controller.run(shutdown)),
        })
    }

    /// Waits until the controller gave its lease up and ended.
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

struct Controller {
    owner: String,
    plan: Arc<ArcSwap<Plan>>,
    store: Arc<Mutex<Box<dyn Store>>>,
    notifier: Notifier,
    watches: HashMap<String, RouteWatch>,
    /// The newest audit entry already told to the webhooks.
    audit_seen: Option<i64>,
    held: bool,
    /// The lease's fencing generation when this controller last took it.
    fence: Option<i64>,
}

impl Controller {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, String> {
        crate::lease::on_store(&self.store, f).await
    }

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
            if let Err(error) = self.step().await {
                // Told once per kind of failure (a store that is down fails every tick).
                if last_error.as_ref() != Some(&error) {
                    tracing::warn!(%error, "analysis controller step failed");
                } else {
                    tracing::debug!(%error, "analysis controller step failed");
                }
                last_error = Some(error);
                continue;
            }
            last_error = None;
        }
        let owner = self.owner.clone();
        if self.held
            && let Err(error) = self.blocking(move |s| s.release_lease(LEASE, &owner)).await
        {
            tracing::warn!(%error, "cannot release the analysis lease");
        }
    }

    async fn step(&mut self) -> Result<(), String> {
        let owner = self.owner.clone();
        let fence = self
            .blocking(move |s| s.take_lease(LEASE, &owner, LEASE_TTL))
            .await?;
        let held = fence.is_some();
        self.fence = fence;
        if held != self.held {
            tracing::info!(held, "analysis controller lease");
            self.held = held;
            // A controller that (re)gains the lease starts from what the store says.
            self.watches.clear();
            self.audit_seen = None;
        }
        if !held {
            return Ok(());
        }
        let plan = self.plan.load_full();
        let routes: Vec<String> = plan.routes.iter().map(|r| r.name.clone()).collect();
        let after = self.audit_seen;
        let snapshot = self
            .blocking(move |s| {
                let now = now_ms();
                let live: Vec<String> = s
                    .proxies()?
                    .into_iter()
                    .filter(|p| p.is_live(now))
                    .map(|p| p.id)
                    .collect();
                let mut runs = HashMap::new();
                for route in &routes {
                    if let Some(run) = s.runs(route)?.pop().filter(|r| r.ended_at.is_none()) {
                        runs.insert(route.clone(), (run.id, run.counts));
                    }
                }
                // Once the lease is taken, only what comes after the newest entry is told.
                let audit = match after {
                    Some(seen) => s.history_since(seen)?,
                    None => s.history(None, 1)?,
                };
                Ok(Snapshot {
                    stages: s.stages()?,
                    counters: s.counters(&live)?,
                    runs,
                    links: s.links()?,
                    rollouts: s.rollouts()?,
                    audit,
                })
            })
            .await?;
        self.tell_stage_changes(&snapshot);
        for route in &plan.routes {
            let stage = snapshot
                .stages
                .get(&route.name)
                .copied()
                .unwrap_or(route.initial_stage);
            self.judge(&plan, route, stage, &snapshot).await;
        }
        if !snapshot.rollouts.iter().any(|r| r.state.is_active()) {
            return Ok(());
        }
        // Read again: a rollback just made (here or by hand) ends its rollout.
        let (rollouts, stages) = self.blocking(|s| Ok((s.rollouts()?, s.stages()?))).await?;
        for rollout in rollouts.into_iter().filter(|r| r.state.is_active()) {
            if let Some(route) = plan.routes.iter().find(|r| r.name == rollout.route) {
                let stage = stages
                    .get(&route.name)
                    .copied()
                    .unwrap_or(route.initial_stage);
                self.walk(&plan, route, stage, rollout).await;
            }
        }
        Ok(())
    }

    /// Tells the webhooks about every stage change since the last one told (on taking the
    /// lease, only changes from then on).
    fn tell_stage_changes(&mut self, snapshot: &Snapshot) {
        let newest = snapshot.audit.iter().map(|e| e.id).max();
        if self.audit_seen.is_some() {
            for e in &snapshot.audit {
                self.notifier.send(
                    NotifyEvent::StageChanged,
                    &e.route,
                    &format!("{} → {} by {}", e.from, e.to, e.actor),
                    json!({ "from": e.from, "to": e.to, "actor": e.actor, "reason": e.reason,
                            "forced": e.forced, "generation": e.generation }),
                );
            }
        }
        if let Some(newest) = newest {
            self.audit_seen = Some(newest.max(self.audit_seen.unwrap_or(0)));
        } else if self.audit_seen.is_none() {
            self.audit_seen = Some(0);
        }
    }

    /// Checks one route if its interval passed; rolls it back after too many failures.
    async fn judge(&mut self, plan: &Plan, route: &RouteSpec, stage: Stage, snapshot: &Snapshot) {
        let spec = route.analysis;
        let judged = matches!(stage, Stage::Shadow | Stage::Canary { .. } | Stage::Cutover);
        let run = snapshot.runs.get(&route.name);
        if !judged || run.is_none() {
            self.watches.remove(&route.name);
            return;
        }
        let counters = snapshot
            .counters
            .get(&route.name)
            .cloned()
            .unwrap_or_default();
        let (run_id, shadow) = run.map(|(id, c)| (*id, c.clone())).unwrap_or_default();
        let watch = self.watches.entry(route.name.clone()).or_default();
        let restarted = counters.requests < watch.counters.requests;
        if watch.run != Some(run_id) || watch.last_check.is_none() || restarted {
            // A new run (or a proxy restarted): start measuring from here.
            *watch = RouteWatch {
                run: Some(run_id),
                last_check: Some(Instant::now()),
                counters,
                shadow,
                failures: if watch.run == Some(run_id) {
                    watch.failures
                } else {
                    0
                },
                last_failure_ms: watch.last_failure_ms,
                last_pass_ms: watch.last_pass_ms,
            };
            return;
        }
        if watch
            .last_check
            .is_some_and(|t| t.elapsed() < spec.interval)
        {
            return;
        }
        let checks = evaluate(
            &route.name,
            run_id,
            stage,
            &spec,
            &counters,
            &watch.counters,
            &shadow,
            &watch.shadow,
            &route_lag(plan, route, &snapshot.links),
        );
        watch.last_check = Some(Instant::now());
        watch.counters = counters;
        watch.shadow = shadow;
        let failed: Vec<&CheckRecord> = checks.iter().filter(|c| c.passed == Some(false)).collect();
        let before = watch.failures;
        watch.failures = streak(before, &checks);
        if watch.failures > before {
            watch.last_failure_ms = now_ms();
        } else if watch.failures == 0 && checks.iter().any(|c| c.passed == Some(true)) {
            watch.last_pass_ms = now_ms();
        }
        let failures = watch.failures;
        // Shadow is where differences are found, so it is judged but never rolled back; a
        // canary or a cutover is rolled back once its budget failed often enough, and only
        // those failures are news for the log and the webhooks.
        let rollable = matches!(stage, Stage::Canary { .. } | Stage::Cutover);
        for c in failed.iter().filter(|_| rollable) {
            tracing::warn!(route = %route.name, metric = %c.metric, value = ?c.value, budget = c.budget, detail = %c.detail, failures, failure_limit = spec.failure_limit, "analysis check failed");
            self.notifier.send(
                NotifyEvent::AnalysisFailed,
                &route.name,
                &format!(
                    "{} {} over its budget {} ({}); {failures} of {} failed checks in a row",
                    c.metric,
                    c.value
                        .map_or_else(|| "-".to_string(), |v| format!("{v:.4}")),
                    c.budget,
                    c.detail,
                    spec.failure_limit
                ),
                json!({ "metric": c.metric, "value": c.value, "budget": c.budget,
                        "failures": failures, "failure_limit": spec.failure_limit }),
            );
        }
        let breach = failed.first().map(|c| {
            format!(
                "{} {} over its budget {} ({}) in {failures} checks in a row",
                c.metric,
                c.value
                    .map_or_else(|| "-".to_string(), |v| format!("{v:.4}")),
                c.budget,
                c.detail
            )
        });
        let records = checks.clone();
        if let Err(error) = self.blocking(move |s| s.record_checks(&records)).await {
            tracing::warn!(route = %route.name, %error, "cannot record the analysis check");
        }
        if let Some(why) = breach
            && rollable
            && failures >= spec.failure_limit
        {
            self.roll_back(plan, route, &why).await;
        }
    }

    /// Whether this controller still holds the lease it judged under, with the same
    /// fencing generation: a controller that lost it (paused past its TTL, cut off from the
    /// store) and another took over must not act on a stale judgement.
    async fn still_holds(&self) -> bool {
        let owner = self.owner.clone();
        let now = self
            .blocking(move |s| s.take_lease(LEASE, &owner, LEASE_TTL))
            .await
            .ok()
            .flatten();
        let holds = now.is_some() && now == self.fence;
        if !holds {
            tracing::warn!(was = ?self.fence, now = ?now, "the analysis lease changed hands; not acting");
        }
        holds
    }

    async fn roll_back(&mut self, plan: &Plan, route: &RouteSpec, why: &str) {
        if !self.still_holds().await {
            return;
        }
        let request = Request {
            route: route.name.clone(),
            wanted: Move::Rollback,
            force: false,
            actor: ANALYSIS_ACTOR.to_string(),
            reason: Some(format!("automatic rollback: {why}")),
            wait: CONFIRM_WAIT,
        };
        match rollout::change_stage(plan, &request).await {
            Ok(Outcome::Changed {
                change,
                propagation,
                ..
            }) => {
                tracing::warn!(route = %route.name, from = %change.from, reason = %why, confirmed_by = propagation.applied.len(), pending = propagation.pending.len(), "rolled back by the analysis");
                self.notifier.send(
                    NotifyEvent::RolledBack,
                    &route.name,
                    &format!("rolled back from {} to legacy: {why}", change.from),
                    json!({ "from": change.from.to_string(), "reason": why,
                            "confirmed_by": propagation.applied.len(), "pending": propagation.pending.len() }),
                );
                self.watches.remove(&route.name);
            }
            Ok(Outcome::Unchanged { .. }) => {}
            Err(err) => {
                tracing::warn!(route = %route.name, error = %err, "automatic rollback failed")
            }
        }
    }

    /// Moves a rollout on: into its step's stage, to the next step once the step held long
    /// enough without a failed check, to a pause, or to cutover.
    async fn walk(&mut self, plan: &Plan, route: &RouteSpec, stage: Stage, mut r: RolloutRecord) {
        if route.steps.is_empty() {
            // Started against a plan this proxy does not serve: say so, never "done".
            r.state = RolloutState::Aborted;
            r.message = format!(
                "the running proxy's plan ({}) has no steps for {}: reload it (POST /admin/reload) or restart, then start again",
                plan.file.display(),
                route.name
            );
            self.save(r).await;
            return;
        }
        let Some(step) = route.steps.get(r.step).copied() else {
            r.state = RolloutState::Done;
            r.message = "every step done".to_string();
            self.save(r).await;
            return;
        };
        let now = now_ms();
        let (last_failure, last_pass) = self
            .watches
            .get(&route.name)
            .map_or((0, 0), |w| (w.last_failure_ms, w.last_pass_ms));
        match step {
            Step::Canary { percent, hold } => {
                if stage != (Stage::Canary { percent }) {
                    match self.move_to(plan, route, Move::Canary(percent)).await {
                        Ok(()) => {
                            r.step_started_ms = now;
                            r.message = format!(
                                "step {}: canary {percent}%, holding {}s",
                                r.step + 1,
                                hold.as_secs()
                            );
                            self.tell_step(route, &r, step);
                        }
                        Err(why) => {
                            let message = format!(
                                "step {}: waiting to enter canary {percent}%: {why}",
                                r.step + 1
                            );
                            // Waiting says so once, not every tick.
                            if r.message == message {
                                return;
                            }
                            r.message = message;
                        }
                    }
                    self.save(r).await;
                    return;
                }
                if last_failure > r.step_started_ms {
                    // The step holds only if its analysis passed for its whole duration.
                    r.step_started_ms = last_failure;
                    r.message = format!(
                        "step {}: a check failed; holding canary {percent}% for {}s again",
                        r.step + 1,
                        hold.as_secs()
                    );
                    self.save(r).await;
                    return;
                }
                let held_ms = now - r.step_started_ms;
                if held_ms >= i64::try_from(hold.as_millis()).unwrap_or(i64::MAX)
                    && last_pass <= r.step_started_ms
                {
                    // Held long enough, but nothing was judged: too little traffic.
                    let message = format!(
                        "step {}: holding canary {percent}%: no check has judged it yet (too little traffic for a verdict)",
                        r.step + 1
                    );
                    if r.message != message {
                        r.message = message;
                        self.save(r).await;
                    }
                    return;
                }
                if held_ms >= i64::try_from(hold.as_millis()).unwrap_or(i64::MAX) {
                    r.step += 1;
                    r.step_started_ms = now;
                    r.message = format!(
                        "step {} passed ({percent}% for {}s)",
                        r.step,
                        hold.as_secs()
                    );
                    self.save(r).await;
                }
            }
            Step::Pause => {
                if r.state != RolloutState::Paused {
                    r.state = RolloutState::Paused;
                    r.message = format!(
                        "step {}: paused; `strangler promote {}` goes on",
                        r.step + 1,
                        route.name
                    );
                    self.notifier.send(
                        NotifyEvent::Paused,
                        &route.name,
                        &r.message,
                        json!({ "step": r.step + 1 }),
                    );
                    self.save(r).await;
                }
            }
            Step::Cutover => match self.move_to(plan, route, Move::Cutover).await {
                Ok(()) => {
                    r.state = RolloutState::Done;
                    r.step_started_ms = now;
                    r.message = "cut over: rollout done".to_string();
                    self.tell_step(route, &r, step);
                    self.save(r).await;
                }
                Err(why) => {
                    let message = format!("step {}: waiting to cut over: {why}", r.step + 1);
                    if r.message != message {
                        r.message = message;
                        self.save(r).await;
                    }
                }
            },
        }
    }

    fn tell_step(&self, route: &RouteSpec, r: &RolloutRecord, step: Step) {
        self.notifier.send(
            NotifyEvent::Step,
            &route.name,
            &format!("step {} of {}: {step}", r.step + 1, route.steps.len()),
            json!({ "step": r.step + 1, "steps": route.steps.len() }),
        );
    }

    async fn move_to(&self, plan: &Plan, route: &RouteSpec, wanted: Move) -> Result<(), String> {
        if !self.still_holds().await {
            return Err("the analysis lease changed hands".to_string());
        }
        let request = Request {
            route: route.name.clone(),
            wanted,
            force: false,
            actor: ROLLOUT_ACTOR.to_string(),
            reason: Some("rollout step".to_string()),
            wait: CONFIRM_WAIT,
        };
        rollout::change_stage(plan, &request)
            .await
            .map(|_| ())
            .map_err(|err| err.to_string())
    }

    async fn save(&self, mut r: RolloutRecord) {
        r.updated_at = timestamp(now_ms());
        let route = r.route.clone();
        if let Err(error) = self.blocking(move |s| s.set_rollout(&r)).await {
            tracing::warn!(%route, %error, "cannot record the rollout");
        }
    }
}

/// Failed checks in a row after `checks`: one more if any metric failed, none once a metric
/// passed and none failed, unchanged when nothing had a verdict (a hung service answers
/// nobody: its silence must not end a failing streak).
pub fn streak(failures: u32, checks: &[CheckRecord]) -> u32 {
    if checks.iter().any(|c| c.passed == Some(false)) {
        failures + 1
    } else if checks.iter().any(|c| c.passed == Some(true)) {
        0
    } else {
        failures
    }
}

/// The lag in seconds of the sync links of the route's service (either direction).
fn route_lag(plan: &Plan, route: &RouteSpec, links: &[LinkProgress]) -> Option<f64> {
    plan.sync
        .iter()
        .filter(|l| l.from.name() == route.service || l.to.name() == route.service)
        .filter_map(|l| {
            let name = l.name();
            links.iter().find(|p| p.link == name).map(|p| p.lag_seconds)
        })
        .reduce(f64::max)
}

/// The p-quantile of a bucketed histogram (interpolated inside its bucket), in seconds.
pub fn quantile(buckets: &[u64], q: f64) -> Option<f64> {
    let bounds = strangler_dataplane::metrics::LATENCY_BOUNDS;
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut seen = 0u64;
    for (i, n) in buckets.iter().enumerate() {
        if *n == 0 {
            continue;
        }
        if (seen + n) as f64 >= rank {
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            let upper = bounds.get(i).copied().unwrap_or(lower * 2.0);
            let inside = (rank - seen as f64) / *n as f64;
            return Some(lower + (upper - lower) * inside.clamp(0.0, 1.0));
        }
        seen += n;
    }
    bounds.last().copied()
}

/// Each bucket's count since `then` (a counter that went backwards counts from zero).
pub(crate) fn delta(now: &[u64], then: &[u64]) -> Vec<u64> {
    now.iter()
        .enumerate()
        .map(|(i, n)| n.saturating_sub(then.get(i).copied().unwrap_or(0)))
        .collect()
}

/// One check: every budget of `spec` that makes sense in `stage`, on what happened since
/// the previous check.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    route: &str,
    run: i64,
    stage: Stage,
    spec: &AnalysisSpec,
    now: &RouteCounters,
    then: &RouteCounters,
    shadow_now: &std::collections::BTreeMap<ShadowMetric, i64>,
    shadow_then: &std::collections::BTreeMap<ShadowMetric, i64>,
    lag: &Option<f64>,
) -> Vec<CheckRecord> {
    let at = timestamp(now_ms());
    let mut checks = Vec::new();
    let mut check =
        |metric: &str, value: Option<f64>, budget: f64, enough: bool, detail: String| {
            let value = value.filter(|_| enough);
            checks.push(CheckRecord {
                route: route.to_string(),
                run: Some(run),
                at: at.clone(),
                metric: metric.to_string(),
                value,
                budget,
                passed: value.map(|v| v <= budget),
                detail,
            });
        };
    let min = spec.min_requests;
    let answers_new = now.served_new.saturating_sub(then.served_new);
    let new_side = matches!(stage, Stage::Canary { .. } | Stage::Cutover);
    if let Some(budget) = spec.max_error_rate
        && new_side
    {
        let errors = now.errors_new.saturating_sub(then.errors_new);
        check(
            "error_rate",
            (answers_new > 0).then(|| errors as f64 / answers_new as f64),
            budget,
            answers_new >= min,
            format!("{errors} of {answers_new} answers from the new service were 5xx it caused"),
        );
    }
    if let Some(budget) = spec.max_p99_ratio
        && new_side
    {
        let new = delta(&now.latency_new, &then.latency_new);
        let legacy = delta(&now.latency_legacy, &then.latency_legacy);
        let (n_new, n_legacy): (u64, u64) = (new.iter().sum(), legacy.iter().sum());
        let p99 = quantile(&new, 0.99).zip(quantile(&legacy, 0.99));
        check(
            "p99_ratio",
            p99.map(|(a, b)| a / b.max(1e-6)),
            budget,
            n_new >= min && n_legacy >= min,
            match p99 {
                Some((a, b)) => format!(
                    "p99 {:.1} ms new ({n_new} answers) vs {:.1} ms legacy ({n_legacy})",
                    a * 1000.0,
                    b * 1000.0
                ),
                None => format!("{n_new} answers from new, {n_legacy} from legacy"),
            },
        );
    }
    let count = |m: ShadowMetric| {
        shadow_now.get(&m).copied().unwrap_or(0) - shadow_then.get(&m).copied().unwrap_or(0)
    };
    let compared = count(ShadowMetric::Compared).max(0);
    let mismatched = count(ShadowMetric::Mismatched).max(0);
    let shadow_errors = count(ShadowMetric::Errors).max(0);
    if let Some(budget) = spec.max_mismatch_rate {
        check(
            "mismatch_rate",
            (compared > 0).then(|| mismatched as f64 / compared as f64),
            budget,
            compared as u64 >= min,
            format!("{mismatched} of {compared} comparisons differed (noise not counted)"),
        );
    }
    if let Some(budget) = spec.max_shadow_error_rate {
        let legs = compared + shadow_errors;
        check(
            "shadow_error_rate",
            (legs > 0).then(|| shadow_errors as f64 / legs as f64),
            budget,
            legs as u64 >= min,
            format!("{shadow_errors} of {legs} mirrored requests failed"),
        );
    }
    if let Some(budget) = spec.max_sync_lag {
        check(
            "sync_lag_seconds",
            *lag,
            budget.as_secs_f64(),
            lag.is_some(),
            match lag {
                Some(l) => {
                    format!("the slowest sync link of the route's service is {l:.1} s behind")
                }
                None => "no sync link for the route's service".to_string(),
            },
        );
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(served_new: u64, errors_new: u64) -> RouteCounters {
        RouteCounters {
            served_new,
            errors_new,
            ..RouteCounters::default()
        }
    }

    #[test]
    fn a_check_judges_the_window_since_the_last_one() {
        let spec = AnalysisSpec {
            max_error_rate: Some(0.05),
            min_requests: 10,
            ..AnalysisSpec::default()
        };
        let empty = std::collections::BTreeMap::new();
        let canary = Stage::Canary { percent: 25 };
        // 100 answers earlier with 50 errors do not count; 4 of the last 20 do: 20 %.
        let checks = evaluate(
            "r",
            1,
            canary,
            &spec,
            &counters(120, 54),
            &counters(100, 50),
            &empty,
            &empty,
            &None,
        );
        let error = checks.iter().find(|c| c.metric == "error_rate").unwrap();
        assert_eq!(error.value, Some(0.2));
        assert_eq!(error.passed, Some(false));
        // Too few answers: no verdict either way.
        let checks = evaluate(
            "r",
            1,
            canary,
            &spec,
            &counters(105, 52),
            &counters(100, 50),
            &empty,
            &empty,
            &None,
        );
        let error = checks.iter().find(|c| c.metric == "error_rate").unwrap();
        assert_eq!(error.passed, None);
        // In shadow the new service answers nobody: its error rate is not judged.
        let checks = evaluate(
            "r",
            1,
            Stage::Shadow,
            &spec,
            &counters(0, 0),
            &counters(0, 0),
            &empty,
            &empty,
            &None,
        );
        assert!(checks.iter().all(|c| c.metric != "error_rate"));
    }

    #[test]
    fn only_a_verdict_ends_a_failing_streak() {
        let check = |passed: Option<bool>| CheckRecord {
            route: "r".into(),
            run: Some(1),
            at: String::new(),
            metric: "error_rate".into(),
            value: passed.map(|p| if p { 0.0 } else { 1.0 }),
            budget: 0.05,
            passed,
            detail: String::new(),
        };
        let failed = [check(Some(false))];
        let silent = [check(None)];
        let passed = [check(Some(true))];
        // A hung service: failed, silent (requests still waiting), failed, silent, failed.
        let mut failures = 0;
        for window in [&failed, &silent, &failed, &silent, &failed] {
            failures = streak(failures, window.as_slice());
        }
        assert_eq!(failures, 3, "silence does not reset the streak");
        assert_eq!(streak(failures, &passed), 0);
        assert_eq!(streak(2, &[check(Some(true)), check(Some(false))]), 3);
    }

    #[test]
    fn p99_is_read_from_the_buckets() {
        // 100 answers in the 5–10 ms bucket: p99 inside it.
        let mut buckets = vec![0u64; 13];
        buckets[3] = 100;
        let p99 = quantile(&buckets, 0.99).unwrap();
        assert!((0.005..=0.01).contains(&p99), "{p99}");
        assert_eq!(quantile(&[0; 13], 0.99), None);
        let mut slow = vec![0u64; 13];
        slow[5] = 100; // 25–50 ms
        let ratio = quantile(&slow, 0.99).unwrap() / p99;
        assert!(ratio > 3.0, "{ratio}");
    }
}
