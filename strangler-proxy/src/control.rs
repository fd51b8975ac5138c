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
use tokio::sync::oneshot;

use crate::plan::Plan;
use crate::routing::{Registry, RouteTable, UNMATCHED};
use crate::server::ServeError;
use crate::stage::Stage;
use crate::store::{ProxyRecord, Store, StoreError, now_ms, timestamp};

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
    /// Deregister and stop.
    Stop,
}

/// Handle to the control thread.
pub struct ControlPlane {
    pub sender: Sender<ControlMsg>,
    thread: Option<JoinHandle<()>>,
}

impl ControlPlane {
    /// Reads the store, installs the first table and registers the proxy, then starts the
    /// thread. Errors here stop the proxy from starting: it must not serve stale stages.
    #[allow(clippy::type_complexity)]
    pub fn start(
        plan: Plan,
        record: ProxyRecord,
    ) -> Result<(Self, Arc<ArcSwap<RouteTable>>, Arc<ArcSwap<Plan>>), ServeError> {
        let store = Store::open(&plan.proxy.state)?;
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
            data_version: None,
            stages,
        };
        let thread = std::thread::Builder::new()
            .name("strangler-control".to_string())
            .spawn(move || watcher.run(receiver))
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

    /// Deregisters the proxy and waits for the thread to end.
    pub fn stop(mut self) {
        let _ = self.sender.send(ControlMsg::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Watcher {
    store: Store,
    plan: Plan,
    /// The plan being served, for the admin API.
    current_plan: Arc<ArcSwap<Plan>>,
    table: Arc<ArcSwap<RouteTable>>,
    registry: Registry,
    id: String,
    data_version: Option<i64>,
    stages: HashMap<String, Stage>,
}

impl Watcher {
    fn run(mut self, receiver: Receiver<ControlMsg>) {
        let mut last_heartbeat = Instant::now();
        loop {
            let mut replies = Vec::new();
            let mut force = false;
            match receiver.recv_timeout(POLL_INTERVAL) {
                Ok(ControlMsg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
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

    /// Rebuilds the table when the store's generation moved (or when forced).
    fn check(&mut self, force: bool) -> Result<(), StoreError> {
        let version = self.store.data_version()?;
        if !force && self.data_version == Some(version) {
            return Ok(());
        }
        self.data_version = Some(version);
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

    fn heartbeat(&mut self) -> Result<(), StoreError> {
        let table = self.table.load();
        let mut counters: Vec<_> = table
            .routes
            .iter()
            .map(|r| r.metrics.snapshot(&r.spec.name))
            .collect();
        counters.push(table.unmatched.snapshot(UNMATCHED));
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
