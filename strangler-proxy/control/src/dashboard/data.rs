//! What the pages show: this proxy's route table and counters, the history ring, and the
//! store's records, read in one pass on a blocking thread. A store that does not answer
//! leaves its parts empty and says so; the table and counters are always there.

use std::sync::Arc;

use strangler_plan::Stage;
use strangler_store::{
    AnalysisRun, AuditEntry, CapturedCase, CheckRecord, LinkProgress, ProxyRecord, RolloutRecord,
    RouteCounters, ShadowMetric, ShadowSummary, Store, StoreError, now_ms,
};

use crate::admin::AdminState;
use crate::analysis::quantile;
use crate::history::Point;
use crate::rollout::GateVerdict;
use crate::status::counters;

/// Audit entries the overview lists.
const AUDIT_SHOWN: u32 = 20;
/// Check results read per route (the newest check's verdicts are among them).
const CHECKS_READ: u32 = 10;

/// One route's row on the overview.
pub struct RouteRow {
    pub name: String,
    pub service: String,
    /// What this proxy serves.
    pub stage: Stage,
    /// This proxy's counters since it started.
    pub counters: RouteCounters,
    /// The current analysis run, if one is open.
    pub run: Option<AnalysisRun>,
    /// The gate's judgement of the current run (`None`: the store did not answer).
    pub gate: Option<GateVerdict>,
    pub rollout: Option<RolloutRecord>,
    /// Each metric's verdict in the newest analysis check.
    pub checks: Vec<CheckRecord>,
    pub points: Vec<Point>,
}

impl RouteRow {
    /// Matched ÷ compared in the current run.
    pub fn match_rate(&self) -> Option<f64> {
        let run = self.run.as_ref()?;
        let compared = run.count(ShadowMetric::Compared);
        (compared > 0).then(|| 1.0 - run.count(ShadowMetric::Mismatched) as f64 / compared as f64)
    }

    /// (p50, p99) of one side's answers, in ms.
    pub fn latency(buckets: &[u64]) -> (Option<f64>, Option<f64>) {
        (
            quantile(buckets, 0.5).map(|s| s * 1000.0),
            quantile(buckets, 0.99).map(|s| s * 1000.0),
        )
    }
}

/// The overview page.
pub struct Overview {
    pub proxy_id: String,
    /// The generation this proxy serves.
    pub generation: i64,
    /// The store's newest generation, when it answered.
    pub store_generation: Option<i64>,
    /// Why the store's parts are missing.
    pub store_error: Option<String>,
    pub routes: Vec<RouteRow>,
    pub links: Vec<LinkProgress>,
    /// Live proxies.
    pub proxies: Vec<ProxyRecord>,
    /// Newest first.
    pub audit: Vec<AuditEntry>,
    pub now_ms: i64,
}

/// A route's page.
pub struct RouteDetail {
    pub row: RouteRow,
    /// Everything its shadow recorded: paths with counts and noise flags, samples.
    pub summary: ShadowSummary,
    pub runs: Vec<AnalysisRun>,
    pub captures: Vec<CapturedCase>,
    pub audit: Vec<AuditEntry>,
    pub store_error: Option<String>,
    pub now_ms: i64,
}

/// The store's part of the overview.
#[derive(Default)]
struct Stored {
    generation: Option<i64>,
    runs: Vec<Option<AnalysisRun>>,
    gates: Vec<Option<GateVerdict>>,
    rollouts: Vec<RolloutRecord>,
    checks: Vec<Vec<CheckRecord>>,
    links: Vec<LinkProgress>,
    proxies: Vec<ProxyRecord>,
    audit: Vec<AuditEntry>,
}

/// Runs `read` against the admin store on a blocking thread.
async fn with_store<T: Send + 'static>(
    state: &AdminState,
    read: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, String> {
    if !state.health.is_up() {
        return Err("the state store is unreachable; showing what this proxy serves".into());
    }
    let store = Arc::clone(&state.store);
    tokio::task::spawn_blocking(move || {
        let store = store.lock().unwrap_or_else(|p| p.into_inner());
        read(&**store)
    })
    .await
    .map_err(|err| err.to_string())?
    .map_err(|err| err.to_string())
}

/// The newest check's verdicts, from checks read oldest first.
fn newest_check(mut checks: Vec<CheckRecord>) -> Vec<CheckRecord> {
    let Some(at) = checks.last().map(|c| c.at.clone()) else {
        return checks;
    };
    checks.retain(|c| c.at == at);
    checks
}

fn open_run(runs: Vec<AnalysisRun>) -> Option<AnalysisRun> {
    runs.into_iter().last().filter(|r| r.ended_at.is_none())
}

pub async fn overview(state: &AdminState) -> Overview {
    let table = state.table.load_full();
    let plan = state.plan.load_full();
    let names: Vec<(String, strangler_plan::GateSpec)> = table
        .routes
        .iter()
        .map(|r| (r.spec.name.clone(), r.spec.gate))
        .collect();
    let read = with_store(state, move |store| {
        let mut stored = Stored {
            generation: Some(store.generation()?),
            rollouts: store.rollouts()?,
            links: store.links()?,
            proxies: store
                .proxies()?
                .into_iter()
                .filter(|p| p.is_live(now_ms()))
                .collect(),
            audit: store.history(None, AUDIT_SHOWN)?,
            ..Stored::default()
        };
        for (route, gate) in &names {
            stored.runs.push(open_run(store.runs(route)?));
            stored
                .gates
                .push(Some(GateVerdict::judge(&store.run_summary(route)?, gate)));
            stored
                .checks
                .push(newest_check(store.checks(route, CHECKS_READ)?));
        }
        Ok(stored)
    })
    .await;
    let (stored, store_error) = match read {
        Ok(stored) => (stored, None),
        Err(why) => (Stored::default(), Some(why)),
    };
    let Stored {
        generation,
        runs,
        gates,
        rollouts,
        checks,
        links,
        proxies,
        mut audit,
    } = stored;
    let mut runs = runs.into_iter();
    let mut gates = gates.into_iter();
    let mut checks = checks.into_iter();
    let routes = table
        .routes
        .iter()
        .map(|r| RouteRow {
            name: r.spec.name.clone(),
            service: r.spec.service.clone(),
            stage: r.stage,
            counters: counters(&r.spec.name, &r.metrics),
            run: runs.next().flatten(),
            gate: gates.next().flatten(),
            rollout: rollouts
                .iter()
                .find(|o| o.route == r.spec.name && plan_has_steps(&plan, &r.spec.name))
                .cloned(),
            checks: checks.next().unwrap_or_default(),
            points: state.history.points(&r.spec.name),
        })
        .collect();
    audit.sort_by_key(|e| std::cmp::Reverse(e.id));
    Overview {
        proxy_id: state.proxy_id.to_string(),
        generation: table.generation,
        store_generation: generation,
        store_error,
        routes,
        links,
        proxies,
        audit,
        now_ms: now_ms(),
    }
}

fn plan_has_steps(plan: &strangler_plan::Plan, route: &str) -> bool {
    plan.routes
        .iter()
        .any(|r| r.name == route && !r.steps.is_empty())
}

/// A route's page, or `None` for a route this proxy does not serve.
pub async fn route(state: &AdminState, name: &str) -> Option<RouteDetail> {
    let table = state.table.load_full();
    let route = table.routes.iter().find(|r| r.spec.name == name)?;
    let gate = route.spec.gate;
    let owned = name.to_string();
    type Read = (
        ShadowSummary,
        Vec<AnalysisRun>,
        Vec<CapturedCase>,
        Vec<AuditEntry>,
        GateVerdict,
        Vec<CheckRecord>,
        Vec<RolloutRecord>,
    );
    let read = with_store(state, move |store| -> Result<Read, StoreError> {
        Ok((
            store.shadow_summary(&owned)?,
            store.runs(&owned)?,
            store.captures(&owned)?,
            store.history(Some(&owned), AUDIT_SHOWN)?,
            GateVerdict::judge(&store.run_summary(&owned)?, &gate),
            newest_check(store.checks(&owned, CHECKS_READ)?),
            store.rollouts()?,
        ))
    })
    .await;
    let (read, store_error) = match read {
        Ok(read) => (Some(read), None),
        Err(why) => (None, Some(why)),
    };
    let (summary, runs, captures, mut audit, gate, checks, rollouts) = match read {
        Some((summary, runs, captures, audit, gate, checks, rollouts)) => {
            (summary, runs, captures, audit, Some(gate), checks, rollouts)
        }
        None => Default::default(),
    };
    audit.sort_by_key(|e| std::cmp::Reverse(e.id));
    let plan = state.plan.load_full();
    Some(RouteDetail {
        row: RouteRow {
            name: name.to_string(),
            service: route.spec.service.clone(),
            stage: route.stage,
            counters: counters(name, &route.metrics),
            run: open_run(runs.clone()),
            gate,
            rollout: rollouts
                .into_iter()
                .find(|o| o.route == name && plan_has_steps(&plan, name)),
            checks,
            points: state.history.points(name),
        },
        summary,
        runs,
        captures,
        audit,
        store_error,
        now_ms: now_ms(),
    })
}
