//! Stage changes as an operator makes them: which moves are allowed, writing the change and
//! its audit entry, nudging the running proxies, and waiting until every live proxy serves it.

use std::time::{Duration, Instant};

use serde::Serialize;
use strangler_plan::{self as plan, GateSpec, Plan, Stage};
use strangler_store::prelude::*;
use strangler_store::{
    Change, ProxyRecord, RolloutState, ShadowMetric, ShadowSummary, StageChange, StageWrite,
    StoreError, VerifyRecord, now_ms,
};

use crate::admin;

/// Default bound on waiting for every live proxy to apply a change.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(2);
const NUDGE_TIMEOUT: Duration = Duration::from_millis(500);
const POLL: Duration = Duration::from_millis(5);

/// What the operator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    Shadow,
    Canary(u8),
    Cutover,
    Rollback,
    Retire,
}

/// The stage `current` moves to, `None` when it is already there, or why the move is refused.
pub fn next_stage(current: Stage, wanted: Move, force: bool) -> Result<Option<Stage>, String> {
    let target = match wanted {
        Move::Shadow => Stage::Shadow,
        Move::Canary(p) if p > 100 => return Err(format!("canary percent {p} is over 100")),
        Move::Canary(p) => Stage::Canary { percent: p },
        Move::Cutover => Stage::Cutover,
        Move::Rollback => Stage::Legacy,
        Move::Retire => Stage::Retired,
    };
    // Shadowing a route already in shadow starts a fresh analysis run (after a fix, say);
    // any other move to where the route is changes nothing.
    if current == target && wanted != Move::Shadow {
        return Ok(None);
    }
    match (current, wanted) {
        (Stage::Retired, Move::Rollback) if force => Ok(Some(target)),
        (Stage::Retired, Move::Rollback) => Err(
            "the route is retired (its legacy path is declared gone); roll back with --force if the legacy code still runs".to_string(),
        ),
        (Stage::Retired, _) => Err("the route is retired; `rollback --force` it first".to_string()),
        (Stage::Cutover, Move::Retire) => Ok(Some(target)),
        (_, Move::Retire) => Err(format!("only a route in cutover can be retired (it is in {current})")),
        _ => Ok(Some(target)),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("unknown route `{route}` (routes: {known})")]
    UnknownRoute { route: String, known: String },
    #[error("{route}: cannot {wanted} from {current}: {reason}")]
    Refused {
        route: String,
        wanted: String,
        current: Stage,
        reason: String,
    },
    #[error(
        "{route}: the cutover gate is closed: {reason}; shadow the route longer, fix the differences (strangler report {route}), or pass --force"
    )]
    GateClosed { route: String, reason: String },
    #[error(
        "{route}: the cutover gate is closed: {reason}; run `strangler verify {route}` (--repair fixes what differs), or pass --force"
    )]
    NotVerified { route: String, reason: String },
    #[error(
        "{route} was changed by someone else while this change was made (now {now}); check `strangler status` and retry"
    )]
    Raced { route: String, now: Stage },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who asks and why, as the audit log records it.
#[derive(Debug, Clone)]
pub struct Request {
    pub route: String,
    pub wanted: Move,
    pub force: bool,
    pub actor: String,
    pub reason: Option<String>,
    /// Bound on waiting for every live proxy to apply the change.
    pub wait: Duration,
}

/// Which live proxies serve a generation, after waiting at most the bound.
#[derive(Debug, Clone, Default)]
pub struct Propagation {
    /// Live proxies that serve the change.
    pub applied: Vec<ProxyRecord>,
    /// Live proxies that did not apply it within the bound.
    pub pending: Vec<ProxyRecord>,
    /// From the change's commit to the last confirmation (or the bound).
    pub elapsed: Duration,
}

/// What a stage change did.
#[derive(Debug, Clone)]
pub enum Outcome {
    Changed {
        change: Change,
        propagation: Propagation,
        /// Made with `--force` (past a closed gate, or out of `retired`).
        forced: bool,
    },
    /// Nothing to do: the route already is in that stage.
    Unchanged { stage: Stage },
}

/// The stage a route is in: the store's, or the plan's initial one.
pub fn current_stage(plan: &Plan, store: &dyn Store, route: &str) -> Result<Stage, RolloutError> {
    let spec = plan
        .routes
        .iter()
        .find(|r| r.name == route)
        .ok_or_else(|| RolloutError::UnknownRoute {
            route: route.to_string(),
            known: plan::route_names(plan),
        })?;
    Ok(store
        .stages()?
        .get(route)
        .copied()
        .unwrap_or(spec.initial_stage))
}

fn move_name(wanted: Move) -> String {
    match wanted {
        Move::Shadow => "shadow".to_string(),
        Move::Canary(p) => format!("canary {p}%"),
        Move::Cutover => "cut over".to_string(),
        Move::Rollback => "roll back".to_string(),
        Move::Retire => "retire".to_string(),
    }
}

/// Applies a stage change and waits until every live proxy serves it (or the bound passes).
pub async fn change_stage(plan: &Plan, request: &Request) -> Result<Outcome, RolloutError> {
    let mut store = strangler_store::open(&plan.proxy.state)?;
    let current = current_stage(plan, &*store, &request.route)?;
    let target = next_stage(current, request.wanted, request.force).map_err(|reason| {
        RolloutError::Refused {
            route: request.route.clone(),
            wanted: move_name(request.wanted),
            current,
            reason,
        }
    })?;
    let Some(target) = target else {
        return Ok(Outcome::Unchanged { stage: current });
    };
    let mut forced = request.force && current == Stage::Retired;
    let mut reason = request.reason.clone();
    // The gate judges the current analysis run: what was measured since the route entered
    // its stage, never an earlier stage's incident.
    let spec = plan
        .routes
        .iter()
        .find(|r| r.name == request.route)
        .map(|r| r.gate)
        .unwrap_or_default();
    let verdict = GateVerdict::judge(&store.run_summary(&request.route)?, &spec);
    let verdict_text = match verdict.refusal() {
        None => "gate open".to_string(),
        Some(why) => format!("gate closed: {why}"),
    };
    // More traffic to the new service needs proof that it answers like the monolith.
    if target.percent_new() > current.percent_new()
        && matches!(target, Stage::Canary { .. } | Stage::Cutover)
        && let Some(closed) = verdict.refusal()
    {
        if !request.force {
            return Err(RolloutError::GateClosed {
                route: request.route.clone(),
                reason: closed,
            });
        }
        forced = true;
        let note = format!("gate overridden ({closed})");
        reason = Some(match reason {
            Some(r) => format!("{r}; {note}"),
            None => note,
        });
    }
    // A cutover may also need proof that both sides hold the same data.
    if target == Stage::Cutover
        && current != Stage::Cutover
        && let Some(route) = plan.routes.iter().find(|r| r.name == request.route)
        && route.gate.verify_within.is_some()
        && let Some(missing) = verify_refusal(plan, route, &store.last_verifies()?, now_ms())
    {
        if !request.force {
            return Err(RolloutError::NotVerified {
                route: request.route.clone(),
                reason: missing,
            });
        }
        forced = true;
        let note = format!("verify requirement overridden ({missing})");
        reason = Some(match reason {
            Some(r) => format!("{r}; {note}"),
            None => note,
        });
    }
    let change = match store.set_stage(&StageChange {
        route: &request.route,
        current,
        to: target,
        actor: &request.actor,
        reason: reason.as_deref(),
        forced,
        verdict: Some(&verdict_text),
    })? {
        StageWrite::Changed(change) => change,
        StageWrite::Raced { now } => {
            return Err(RolloutError::Raced {
                route: request.route.clone(),
                now,
            });
        }
    };
    tracing::info!(route = %change.route, from = %change.from, to = %change.to, generation = change.generation, actor = %request.actor, "stage changed");
    end_rollout(&mut *store, &change, request)?;
    let token_file = admin::token_file(&plan.proxy.state, &plan.proxy.last_known);
    let propagation = propagate(
        Some(&token_file),
        &mut *store,
        change.generation,
        request.wait,
    )
    .await?;
    Ok(Outcome::Changed {
        change,
        propagation,
        forced,
    })
}

/// A rollback, by anyone, ends the route's rollout: nothing moves it forward again.
fn end_rollout(
    store: &mut dyn Store,
    change: &Change,
    request: &Request,
) -> Result<(), StoreError> {
    if change.to != Stage::Legacy {
        return Ok(());
    }
    for mut r in store.rollouts()? {
        if r.route == change.route && r.state.is_active() {
            r.state = if request.actor == crate::analysis::ANALYSIS_ACTOR {
                RolloutState::RolledBack
            } else {
                RolloutState::Aborted
            };
            r.updated_at = strangler_store::timestamp(now_ms());
            r.message = format!(
                "rolled back by {}{}",
                request.actor,
                request
                    .reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
            store.set_rollout(&r)?;
        }
    }
    Ok(())
}

/// Rolls `request.route` back with nothing but the store at `state`: the emergency path
/// when the plan file is missing or broken. The route's stage must be in the store (a
/// route never changed is at the plan's initial stage, which only the plan knows).
pub async fn rollback_from_store(
    state: &strangler_plan::StoreLocation,
    request: &Request,
) -> Result<Outcome, RolloutError> {
    let mut store = strangler_store::open(state)?;
    let stages = store.stages()?;
    let Some(current) = stages.get(&request.route).copied() else {
        let mut known: Vec<&str> = stages.keys().map(String::as_str).collect();
        known.sort_unstable();
        return Err(RolloutError::UnknownRoute {
            route: request.route.clone(),
            known: format!("the store has stages for: {}", known.join(", ")),
        });
    };
    let target = next_stage(current, Move::Rollback, request.force).map_err(|reason| {
        RolloutError::Refused {
            route: request.route.clone(),
            wanted: move_name(Move::Rollback),
            current,
            reason,
        }
    })?;
    let Some(target) = target else {
        return Ok(Outcome::Unchanged { stage: current });
    };
    let forced = request.force && current == Stage::Retired;
    let change = match store.set_stage(&StageChange {
        route: &request.route,
        current,
        to: target,
        actor: &request.actor,
        reason: request.reason.as_deref(),
        forced,
        verdict: Some("ended by an emergency rollback"),
    })? {
        StageWrite::Changed(change) => change,
        StageWrite::Raced { now } => {
            return Err(RolloutError::Raced {
                route: request.route.clone(),
                now,
            });
        }
    };
    tracing::info!(route = %change.route, from = %change.from, actor = %request.actor, "rolled back from the store alone");
    end_rollout(&mut *store, &change, request)?;
    // Without a plan, a database server's token comes from the environment only.
    let token_file = state
        .file()
        .map(|_| admin::token_file(state, std::path::Path::new("")));
    let propagation = propagate(
        token_file.as_deref(),
        &mut *store,
        change.generation,
        request.wait,
    )
    .await?;
    Ok(Outcome::Changed {
        change,
        propagation,
        forced,
    })
}

/// The cutover gate's judgement of a route's shadow comparisons.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateVerdict {
    /// Whether `canary` and `cutover` may go ahead without `--force`.
    pub open: bool,
    pub compared: i64,
    pub mismatched: i64,
    /// The candidate failed to answer (counted as mismatches).
    pub errors: i64,
    /// (mismatched + errors) ÷ (compared + errors); 0 before any comparison.
    pub failure_rate: f64,
    pub min_comparisons: u64,
    pub max_mismatch_rate: f64,
    /// The most frequent mismatching paths, with their counts.
    pub top_paths: Vec<(String, i64)>,
}

impl GateVerdict {
    /// Judges `summary` against the route's gate.
    pub fn judge(summary: &ShadowSummary, spec: &GateSpec) -> Self {
        let compared = summary.count(ShadowMetric::Compared);
        let failure_rate = summary.failure_rate().unwrap_or(0.0);
        let enough = u64::try_from(compared).unwrap_or(0) >= spec.min_comparisons;
        Self {
            open: enough && failure_rate <= spec.max_mismatch_rate,
            compared,
            mismatched: summary.count(ShadowMetric::Mismatched),
            errors: summary.count(ShadowMetric::Errors),
            failure_rate,
            min_comparisons: spec.min_comparisons,
            max_mismatch_rate: spec.max_mismatch_rate,
            top_paths: summary.top_paths(3),
        }
    }

    /// Why the gate is closed, in one line; `None` when it is open.
    pub fn refusal(&self) -> Option<String> {
        if self.open {
            return None;
        }
        let paths = if self.top_paths.is_empty() {
            String::new()
        } else {
            let listed: Vec<String> = self
                .top_paths
                .iter()
                .map(|(p, n)| format!("{p} ×{n}"))
                .collect();
            format!("; top mismatching paths: {}", listed.join(", "))
        };
        let failed = if self.errors > 0 {
            format!(" and {} shadow errors", self.errors)
        } else {
            String::new()
        };
        Some(format!(
            "{} comparisons (needs {}), {} mismatched{failed} = {:.2} % (allowed {:.2} %, noise not counted){paths}",
            self.compared,
            self.min_comparisons,
            self.mismatched,
            self.failure_rate * 100.0,
            self.max_mismatch_rate * 100.0
        ))
    }
}

/// Why `route` may not be cut over for want of a verify, in one line: its gate's
/// `verify_within` asks for a passing `strangler verify` of every sync link to or from its
/// service, covering every kind the link carries, finished within that age. `None`: no
/// verify is needed, or every link has one.
pub fn verify_refusal(
    plan: &Plan,
    route: &strangler_plan::RouteSpec,
    verifies: &[VerifyRecord],
    now_ms: i64,
) -> Option<String> {
    let within = route.gate.verify_within?;
    let oldest = now_ms - i64::try_from(within.as_millis()).unwrap_or(i64::MAX / 2);
    let mut problems = Vec::new();
    for link in plan
        .sync
        .iter()
        .filter(|l| l.from.name() == route.service || l.to.name() == route.service)
    {
        let name = strangler_relay::link_name(link);
        let age = |v: &VerifyRecord| {
            let secs = (now_ms - v.finished_ms).max(0) / 1000;
            if secs < 120 {
                format!("{secs}s ago")
            } else {
                format!("{}m ago", secs / 60)
            }
        };
        match verifies.iter().find(|v| v.link == name) {
            None => problems.push(format!("{name} never verified")),
            Some(v) if !v.passed => problems.push(format!(
                "{name} differed {} ({} of {} entities)",
                age(v),
                v.missing + v.extra + v.differing,
                v.compared
            )),
            Some(v) if !v.complete => problems.push(format!(
                "{name} last verified {} for some kinds only ({})",
                age(v),
                v.kinds.join(", ")
            )),
            Some(v) if v.finished_ms < oldest => {
                problems.push(format!("{name} last verified {}", age(v)));
            }
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        return None;
    }
    Some(format!(
        "a cutover needs a passing verify of every sync link of `{}` within {}: {}",
        route.service,
        plan::format_duration(within),
        problems.join("; ")
    ))
}

/// Nudges every live proxy to re-read the store, then waits until each serves `generation`.
pub async fn propagate(
    token_file: Option<&std::path::Path>,
    store: &mut dyn Store,
    generation: i64,
    bound: Duration,
) -> Result<Propagation, StoreError> {
    let started = Instant::now();
    let live: Vec<ProxyRecord> = store
        .proxies()?
        .into_iter()
        .filter(|p| p.is_live(now_ms()))
        .collect();
    if live.is_empty() {
        return Ok(Propagation::default());
    }
    if let Some(token) = admin::read_token(token_file) {
        nudge(&live, &token).await;
    }
    loop {
        let proxies = store.proxies()?;
        let serving = |p: &ProxyRecord| {
            proxies
                .iter()
                .any(|q| q.id == p.id && q.generation >= generation)
        };
        let (applied, pending): (Vec<ProxyRecord>, Vec<ProxyRecord>) =
            live.iter().cloned().partition(|p| serving(p));
        if pending.is_empty() || started.elapsed() >= bound {
            return Ok(Propagation {
                applied,
                pending,
                elapsed: started.elapsed(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Asks each proxy's admin API to re-read the store now; a proxy that does not answer is
/// still caught by its own polling.
async fn nudge(proxies: &[ProxyRecord], token: &str) {
    let Ok(client) = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(NUDGE_TIMEOUT)
        .build()
    else {
        return;
    };
    let mut calls = tokio::task::JoinSet::new();
    for p in proxies {
        let request = client
            .post(format!("http://{}/admin/refresh", p.admin))
            .bearer_auth(token)
            .send();
        calls.spawn(request);
    }
    while let Some(joined) = calls.join_next().await {
        if let Ok(Err(err)) = joined {
            tracing::debug!(error = %err, "nudge failed; the proxy's polling will pick the change up");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_counts_errors_as_mismatches_and_names_the_paths() {
        let spec = GateSpec {
            min_comparisons: 10,
            max_mismatch_rate: 0.1,
            verify_within: None,
        };
        let mut summary = ShadowSummary::default();
        summary.counts.insert(ShadowMetric::Compared, 9);
        summary.counts.insert(ShadowMetric::Mismatched, 1);
        summary.paths = vec![("/name".into(), "value_changed".into(), false, 1)];
        let verdict = GateVerdict::judge(&summary, &spec);
        assert!(!verdict.open, "9 comparisons are too few");
        let why = verdict.refusal().unwrap();
        assert!(
            why.starts_with("9 comparisons (needs 10), 1 mismatched"),
            "{why}"
        );
        assert!(why.contains("/name (value_changed) ×1"), "{why}");

        summary.counts.insert(ShadowMetric::Compared, 10);
        assert!(GateVerdict::judge(&summary, &spec).open, "10 % is allowed");

        summary.counts.insert(ShadowMetric::Errors, 1);
        let verdict = GateVerdict::judge(&summary, &spec);
        assert!(!verdict.open, "2 of 11 failed");
        assert!(verdict.refusal().unwrap().contains("and 1 shadow errors"));
    }

    #[test]
    fn a_cutover_waits_for_a_recent_complete_passing_verify_of_every_link() {
        let text = "[gate]\nverify_within = \"1h\"\n[proxy]\nlisten = \"127.0.0.1:1\"\nadmin_listen = \"127.0.0.1:2\"\nstate = \"s.db\"\n\
            [services.legacy]\nurls = [\"http://127.0.0.1:3\"]\nlegacy = true\n[services.students]\nurls = [\"http://127.0.0.1:4\"]\n\
            [[routes]]\nname = \"students\"\npaths = [\"/students\"]\nservice = \"students\"\n\
            [[sync]]\nfrom = \"legacy\"\nto = \"students\"\n[[sync]]\nfrom = \"students\"\nto = \"legacy\"\n";
        let plan = plan::parse(std::path::Path::new("plan.toml"), text).unwrap();
        let route = &plan.routes[0];
        let now = 10_000_000;
        let record = |link: &str, passed: bool, complete: bool, age_ms: i64| VerifyRecord {
            by_kind: Default::default(),
            link: link.into(),
            kinds: vec!["student".into()],
            complete,
            compared: 10,
            missing: i64::from(!passed),
            extra: 0,
            differing: 0,
            in_flight: 0,
            repaired: 0,
            passed,
            started_ms: now - age_ms - 100,
            finished_ms: now - age_ms,
        };
        let why = verify_refusal(&plan, route, &[], now).unwrap();
        assert!(why.contains("within 1h"), "{why}");
        assert!(
            why.contains("legacy->students never verified; students->legacy never verified"),
            "{why}"
        );
        let one_ok = [record("legacy->students", true, true, 60_000)];
        let why = verify_refusal(&plan, route, &one_ok, now).unwrap();
        assert!(!why.contains("legacy->students"), "{why}");
        for (other, words) in [
            (
                record("students->legacy", false, true, 1000),
                "differed 1s ago (1 of 10 entities)",
            ),
            (
                record("students->legacy", true, false, 1000),
                "for some kinds only",
            ),
            (
                record("students->legacy", true, true, 2 * 3_600_000),
                "last verified 120m ago",
            ),
        ] {
            let why = verify_refusal(&plan, route, &[one_ok[0].clone(), other], now).unwrap();
            assert!(why.contains(words), "{why}");
        }
        let both = [
            one_ok[0].clone(),
            record("students->legacy", true, true, 5000),
        ];
        assert_eq!(verify_refusal(&plan, route, &both, now), None);
        let mut no_requirement = route.clone();
        no_requirement.gate.verify_within = None;
        assert_eq!(verify_refusal(&plan, &no_requirement, &[], now), None);
    }

    #[test]
    fn transitions() {
        use Move::*;
        type Case = (Stage, Move, bool, Result<Option<Stage>, ()>);
        let cases: &[Case] = &[
            (Stage::Legacy, Cutover, false, Ok(Some(Stage::Cutover))),
            (
                Stage::Legacy,
                Canary(10),
                false,
                Ok(Some(Stage::Canary { percent: 10 })),
            ),
            (
                Stage::Canary { percent: 10 },
                Canary(50),
                false,
                Ok(Some(Stage::Canary { percent: 50 })),
            ),
            (Stage::Cutover, Rollback, false, Ok(Some(Stage::Legacy))),
            (Stage::Legacy, Rollback, false, Ok(None)),
            (Stage::Cutover, Retire, false, Ok(Some(Stage::Retired))),
            (Stage::Canary { percent: 5 }, Retire, false, Err(())),
            (Stage::Retired, Rollback, false, Err(())),
            (Stage::Retired, Rollback, true, Ok(Some(Stage::Legacy))),
            (Stage::Retired, Cutover, false, Err(())),
            (Stage::Shadow, Cutover, false, Ok(Some(Stage::Cutover))),
            (Stage::Legacy, Canary(101), false, Err(())),
            (Stage::Shadow, Shadow, false, Ok(Some(Stage::Shadow))),
            (Stage::Cutover, Cutover, false, Ok(None)),
        ];
        for (current, wanted, force, expected) in cases {
            let got = next_stage(*current, *wanted, *force).map_err(|_| ());
            assert_eq!(&got, expected, "{current} {wanted:?} force={force}");
        }
    }
}
