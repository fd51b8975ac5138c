//! The control plane inside a running proxy: a thread that watches the state store and swaps
//! the route table when a stage changes or the plan is reloaded, and that records which
//! table generation the proxy serves (with a heartbeat and its counters).
//!
//! All store I/O of a proxy happens on this thread; the request path only loads the table.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use strangler_dataplane::routing::{Registry, RouteTable, UNMATCHED};
use strangler_plan::{Plan, Stage};
use strangler_store::prelude::*;
use strangler_store::{ProxyRecord, RouteCounters, StoreError, now_ms, timestamp};
use tokio::sync::{oneshot, watch};

use crate::proxy::ServeError;

/// How often the store is checked for changes (`PRAGMA data_version`, no disk read).
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How often the proxy writes its heartbeat and counters.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);

/// A request to the control thread.
pub enum ControlMsg {
    /// Re-read the store now (the CLI's nudge); answers the generation now served.
    Refresh(oneshot::Sender<i64>),
    /// Serve this plan from now on.
    Reload(Box<Plan>, oneshot::Sender<i64>),
}

/// Handle to the control thread.
pub struct ControlPlane {
    pub sender: Sender<ControlMsg>,
    thread: Option<JoinHandle<()>>,
}

impl ControlPlane {
    /// Reads the store, installs the first table and registers the proxy, then starts the
    /// thread, which deregisters and ends when `shutdown` turns true. Errors here stop the
    /// proxy from starting: it must not serve stale stages.
    #[allow(clippy::type_complexity)]
    pub fn start(
        plan: Plan,
        record: ProxyRecord,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Self, Arc<ArcSwap<RouteTable>>, Arc<ArcSwap<Plan>>), ServeError> {
        let store = strangler_store::open(&plan.proxy.state)?;
        let mut registry = Registry::default();
        let generation = store.generation()?;
        let stages = store.stages()?;
        let table = Arc::new(ArcSwap::from_pointee(RouteTable::build(
            &plan,
            &stages,
            generation,
            &mut registry,
        )));
        store.register_proxy(&ProxyRecord {
            generation,
            applied_at_ms: now_ms(),
            heartbeat_ms: now_ms(),
            ..record.clone()
        })?;
        let (sender, receiver) = std::sync::mpsc::channel();
        let current_plan = Arc::new(ArcSwap::from_pointee(plan.clone()));
        let watcher = Watcher {
            store,
            plan,
            current_plan: Arc::clone(&current_plan),
            table: Arc::clone(&table),
            registry,
            id: record.id,
            change_token: None,
            stages,
        };
        let thread = std::thread::Builder::new()
            .name("strangler-control".to_string())
            .spawn(move || watcher.run(receiver, shutdown))
            .map_err(ServeError::Thread)?;
        Ok((
            Self {
                sender,
                thread: Some(thread),
            },
            table,
            current_plan,
        ))
    }

    /// Waits (on a blocking thread) until the thread deregistered the proxy and ended; the
    /// shutdown signal must have been sent.
    pub async fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// The control thread's state: the store, the plan served and the table it swaps.
pub struct Watcher {
    store: Box<dyn Store>,
    plan: Plan,
    /// The plan being served, for the admin API.
    current_plan: Arc<ArcSwap<Plan>>,
    table: Arc<ArcSwap<RouteTable>>,
    registry: Registry,
    id: String,
    /// The store's change token when last read.
    change_token: Option<i64>,
    stages: HashMap<String, Stage>,
}

impl Watcher {
    /// A watcher serving `table` (built from `plan`) for proxy `id`.
    pub fn new(
        store: Box<dyn Store>,
        plan: Plan,
        table: Arc<ArcSwap<RouteTable>>,
        id: &str,
    ) -> Self {
        Self {
            store,
            current_plan: Arc::new(ArcSwap::from_pointee(plan.clone())),
            plan,
            table,
            registry: Registry::default(),
            id: id.to_string(),
            change_token: None,
            stages: HashMap::new(),
        }
    }

    fn run(mut self, receiver: Receiver<ControlMsg>, shutdown: watch::Receiver<bool>) {
        let mut last_heartbeat = Instant::now();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let mut replies = Vec::new();
            let mut force = false;
            match receiver.recv_timeout(POLL_INTERVAL) {
                Err(RecvTimeoutError::Disconnected) => break,
                Ok(ControlMsg::Refresh(reply)) => {
                    force = true;
                    replies.push(reply);
                }
                Ok(ControlMsg::Reload(plan, reply)) => {
                    self.plan = *plan;
                    self.current_plan.store(Arc::new(self.plan.clone()));
                    force = true;
                    replies.push(reply);
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if let Err(err) = self.check(force) {
                tracing::warn!(error = %err, "cannot read the state store; serving the last route table");
            }
            let served = self.table.load().generation;
            for reply in replies {
                let _ = reply.send(served);
            }
            if last_heartbeat.elapsed() >= HEARTBEAT_INTERVAL {
                last_heartbeat = Instant::now();
                if let Err(err) = self.heartbeat() {
                    tracing::warn!(error = %err, "cannot write the heartbeat");
                }
            }
        }
        if let Err(err) = self.store.deregister_proxy(&self.id) {
            tracing::warn!(error = %err, "cannot deregister from the state store");
        }
    }

    /// Rebuilds the table when the store's generation moved (or when forced), and records
    /// the generation served.
    pub fn check(&mut self, force: bool) -> Result<(), StoreError> {
        let token = self.store.change_token()?;
        if !force && self.change_token == Some(token) {
            return Ok(());
        }
        self.change_token = Some(token);
        let generation = self.store.generation()?;
        if !force && generation == self.table.load().generation {
            return Ok(());
        }
        let stages = self.store.stages()?;
        let table = RouteTable::build(&self.plan, &stages, generation, &mut self.registry);
        for route in &table.routes {
            let before = self
                .stages
                .get(&route.spec.name)
                .copied()
                .unwrap_or(route.spec.initial_stage);
            if before != route.stage {
                tracing::info!(route = %route.spec.name, from = %before, to = %route.stage, generation, "stage changed");
            }
        }
        self.stages = stages;
        self.table.store(Arc::new(table));
        self.store.applied(&self.id, generation)?;
        Ok(())
    }

    /// Writes the heartbeat with the counters of every route.
    pub fn heartbeat(&mut self) -> Result<(), StoreError> {
        let table = self.table.load();
        let counters: Vec<RouteCounters> = table
            .routes
            .iter()
            .map(|r| (r.spec.name.as_str(), &*r.metrics))
            .chain(std::iter::once((UNMATCHED, &*table.unmatched)))
            .map(|(route, metrics)| crate::status::counters(route, metrics))
            .collect();
        self.store.heartbeat(&self.id, &counters)
    }
}

/// A fresh proxy record for this process.
pub fn proxy_record(id: &str, listen: &str, admin: &str) -> ProxyRecord {
    ProxyRecord {
        id: id.to_string(),
        pid: std::process::id(),
        listen: listen.to_string(),
        admin: admin.to_string(),
        generation: 0,
        applied_at_ms: 0,
        started_at: timestamp(now_ms()),
        heartbeat_ms: now_ms(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strangler_store::{StageChange, StageWrite};

    fn plan(dir: &std::path::Path) -> Plan {
        let text = format!(
            r#"
            [proxy]
            listen = "127.0.0.1:0"
            admin_listen = "127.0.0.1:0"
            state = "{}"
            [services.legacy]
            urls = ["http://127.0.0.1:1"]
            legacy = true
            [services.students]
            urls = ["http://127.0.0.1:2"]
            [[routes]]
            name = "students"
            paths = ["/students/{{id}}"]
            service = "students"
            "#,
            dir.join("s.db").display()
        );
        strangler_plan::parse(&dir.join("plan.toml"), &text).unwrap()
    }

    #[test]
    fn the_watcher_swaps_the_table_when_a_stage_changes_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan(dir.path());
        let initial = RouteTable::build(&plan, &HashMap::new(), 0, &mut Registry::default());
        let table = Arc::new(ArcSwap::from_pointee(initial));
        let store = strangler_store::open(&plan.proxy.state).unwrap();
        store
            .register_proxy(&proxy_record("p1", "127.0.0.1:1", "127.0.0.1:2"))
            .unwrap();
        let mut watcher = Watcher::new(store, plan.clone(), Arc::clone(&table), "p1");

        watcher.check(false).unwrap();
        let first = table.load_full();
        assert_eq!(first.generation, 1, "the store's generation is served");
        assert_eq!(first.route("students").unwrap().stage, Stage::Legacy);

        // Nothing changed: the same table stays (no rebuild, no swap).
        watcher.check(false).unwrap();
        assert!(Arc::ptr_eq(&first, &table.load_full()));

        // Another writer (the CLI) moves the route.
        let mut cli = strangler_store::open(&plan.proxy.state).unwrap();
        let write = cli
            .set_stage(&StageChange {
                route: "students",
                current: Stage::Legacy,
                to: Stage::Canary { percent: 20 },
                actor: "test",
                reason: None,
                forced: false,
                verdict: None,
            })
            .unwrap();
        let StageWrite::Changed(change) = write else {
            panic!("no race here: {write:?}");
        };
        watcher.check(false).unwrap();
        let now = table.load_full();
        assert_eq!(now.generation, change.generation);
        assert_eq!(
            now.route("students").unwrap().stage,
            Stage::Canary { percent: 20 }
        );
        // The served generation is recorded for `cutover`/`rollback` to confirm.
        let proxies = cli.proxies().unwrap();
        assert_eq!(proxies[0].generation, change.generation);
        // Counters survive the rebuild: the new table holds the same route metrics.
        assert!(Arc::ptr_eq(
            &first.route("students").unwrap().metrics,
            &now.route("students").unwrap().metrics
        ));
    }
}
