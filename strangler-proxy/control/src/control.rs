//! The control plane inside a running proxy: a thread that watches the state store and swaps
//! the route table when a stage changes or the plan is reloaded, and that records which
//! table generation the proxy serves (with a heartbeat and its counters).
//!
//! All store I/O of a proxy happens on this thread; the request path only loads the table.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use strangler_dataplane::routing::{Registry, RouteTable, UNMATCHED};
use strangler_plan::{Plan, Stage};
use strangler_store::prelude::*;
use strangler_store::{ProxyRecord, RouteCounters, StoreError, Subscription, now_ms, timestamp};
use tokio::sync::{oneshot, watch};

use crate::last_known::LastKnown;
use crate::proxy::ServeError;

/// How often a store that pushes no notifications (SQLite) is checked for changes
/// (`PRAGMA data_version`, no disk read).
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How often a store that notifies (PostgreSQL) is checked anyway: the backstop for a
/// notification channel that dropped.
pub const BACKSTOP_INTERVAL: Duration = Duration::from_secs(1);
/// How often the proxy writes its heartbeat and counters.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);

/// A request to the control thread.
pub enum ControlMsg {
    /// Re-read the store now (the CLI's nudge); answers the generation now served.
    Refresh(oneshot::Sender<i64>),
    /// Serve this plan from now on.
    Reload(Box<Plan>, oneshot::Sender<i64>),
    /// The store announced a change (or its notification channel reconnected).
    Changed,
}

/// Whether this proxy's control thread reached the state store on its last attempt:
/// `strangler_store_up`. The data plane never waits for the store; this says whether the
/// table it serves can still follow it.
#[derive(Debug)]
pub struct StoreHealth {
    up: AtomicBool,
    /// Whether the store's change notifications are being received (always false for a
    /// store that has none).
    listening: AtomicBool,
    /// Shadow results let go while the store was unreachable, by kind.
    shed_samples: AtomicU64,
    shed_latencies: AtomicU64,
    shed_paths: AtomicU64,
}

impl StoreHealth {
    pub fn new(up: bool) -> Self {
        Self {
            up: AtomicBool::new(up),
            listening: AtomicBool::new(false),
            shed_samples: AtomicU64::new(0),
            shed_latencies: AtomicU64::new(0),
            shed_paths: AtomicU64::new(0),
        }
    }

    /// Counts what the recorder let go.
    pub fn shed(&self, shed: crate::recorder::Shed) {
        // A captured case is a sample kept whole: counted with them.
        self.shed_samples
            .fetch_add(shed.samples + shed.captures, Ordering::Relaxed);
        self.shed_latencies
            .fetch_add(shed.latencies, Ordering::Relaxed);
        self.shed_paths.fetch_add(shed.paths, Ordering::Relaxed);
    }

    /// What the recorder let go so far: (samples, latency pairs, paths).
    pub fn shed_counts(&self) -> (u64, u64, u64) {
        (
            self.shed_samples.load(Ordering::Relaxed),
            self.shed_latencies.load(Ordering::Relaxed),
            self.shed_paths.load(Ordering::Relaxed),
        )
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    fn set(&self, up: bool) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!("the state store answers again");
            } else {
                tracing::warn!("the state store is unreachable; serving the last route table");
            }
        }
    }
}

/// Handle to the control thread.
pub struct ControlPlane {
    pub sender: Sender<ControlMsg>,
    pub health: Arc<StoreHealth>,
    thread: Option<JoinHandle<()>>,
}

impl ControlPlane {
    /// Reads the store, installs the first table and registers the proxy, then starts the
    /// thread, which deregisters and ends when `shutdown` turns true.
    ///
    /// A store that cannot be reached is not fatal when this proxy kept a last-known table
    /// (`[proxy] last_known`): it serves that and catches up when the store answers. With
    /// none it refuses to start: it must not serve the plan's initial stages while the
    /// store may say otherwise.
    #[allow(clippy::type_complexity)]
    pub fn start(
        plan: Plan,
        record: ProxyRecord,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Self, Arc<ArcSwap<RouteTable>>, Arc<ArcSwap<Plan>>), ServeError> {
        let store = strangler_store::open(&plan.proxy.state)?;
        let last_known_path = plan.proxy.last_known.clone();
        let read = store.generation().and_then(|g| Ok((g, store.stages()?)));
        let (generation, stages, reached) = match read {
            Ok((generation, stages)) => (generation, stages, true),
            Err(err) if err.is_retryable() => {
                let Some(known) = LastKnown::read(&last_known_path)? else {
                    return Err(ServeError::NoLastKnown {
                        error: err,
                        path: last_known_path,
                    });
                };
                tracing::warn!(error = %err, file = %last_known_path.display(), generation = known.generation, written_at = %known.written_at,
                    "the state store is unreachable; serving the last-known route table");
                (known.generation, known.stages(&last_known_path)?, false)
            }
            Err(err) => return Err(err.into()),
        };
        let mut registry = Registry::default();
        let table = Arc::new(ArcSwap::from_pointee(RouteTable::build(
            &plan,
            &stages,
            generation,
            &mut registry,
        )));
        let health = Arc::new(StoreHealth::new(reached));
        let (sender, receiver) = std::sync::mpsc::channel();
        let current_plan = Arc::new(ArcSwap::from_pointee(plan.clone()));
        let mut watcher = Watcher {
            store,
            store_name: plan.proxy.state.to_string(),
            plan,
            current_plan: Arc::clone(&current_plan),
            table: Arc::clone(&table),
            registry,
            id: record.id.clone(),
            record,
            registered: false,
            change_token: None,
            stages,
            last_known: Some(last_known_path),
            health: Arc::clone(&health),
            subscription: None,
        };
        if reached {
            watcher.register()?;
            watcher.remember();
        }
        let wake_sender = sender.clone();
        watcher.subscribe(Arc::new(move || {
            let _ = wake_sender.send(ControlMsg::Changed);
        }));
        let thread = std::thread::Builder::new()
            .name("strangler-control".to_string())
            .spawn(move || watcher.run(receiver, shutdown))
            .map_err(ServeError::Thread)?;
        Ok((
            Self {
                sender,
                health,
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
    /// The store, for logs (a URL without its password).
    store_name: String,
    plan: Plan,
    /// The plan being served, for the admin API.
    current_plan: Arc<ArcSwap<Plan>>,
    table: Arc<ArcSwap<RouteTable>>,
    registry: Registry,
    id: String,
    /// This proxy as it registers itself (again, after the store was unreachable).
    record: ProxyRecord,
    registered: bool,
    /// The store's change token when last read.
    change_token: Option<i64>,
    stages: HashMap<String, Stage>,
    /// Where the last-known table is kept (`None`: not kept).
    last_known: Option<PathBuf>,
    health: Arc<StoreHealth>,
    subscription: Option<Box<dyn Subscription>>,
}

impl Watcher {
    /// A watcher serving `table` (built from `plan`) for proxy `id`, already registered.
    pub fn new(
        store: Box<dyn Store>,
        plan: Plan,
        table: Arc<ArcSwap<RouteTable>>,
        id: &str,
    ) -> Self {
        Self {
            store,
            store_name: plan.proxy.state.to_string(),
            current_plan: Arc::new(ArcSwap::from_pointee(plan.clone())),
            plan,
            table,
            registry: Registry::default(),
            id: id.to_string(),
            record: proxy_record(id, "", ""),
            registered: true,
            change_token: None,
            stages: HashMap::new(),
            last_known: None,
            health: Arc::new(StoreHealth::new(true)),
            subscription: None,
        }
    }

    /// Subscribes to the store's change notifications, if it has any.
    fn subscribe(&mut self, wake: strangler_store::Wake) {
        match self.store.subscribe(wake) {
            Ok(subscription) => self.subscription = subscription,
            // The backstop poll still sees changes; the store keeps trying to listen.
            Err(err) => tracing::warn!(error = %err, "cannot listen for the store's changes"),
        }
    }

    /// How long to wait for a message before looking at the store anyway.
    fn poll_interval(&self) -> Duration {
        match &self.subscription {
            Some(_) => BACKSTOP_INTERVAL,
            None => POLL_INTERVAL,
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
            let first = match receiver.recv_timeout(self.poll_interval()) {
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => None,
                Ok(message) => Some(message),
            };
            // What piled up while the last one was handled is answered by the same read: a
            // burst of notifications costs one, and no nudge or reload behind them is lost.
            for message in first
                .into_iter()
                .chain(std::iter::from_fn(|| receiver.try_recv().ok()))
            {
                match message {
                    // The store's change token says whether anything moved: a nudge for a
                    // change the notification already brought costs one read.
                    ControlMsg::Refresh(reply) => replies.push(reply),
                    ControlMsg::Reload(plan, reply) => {
                        self.plan = *plan;
                        self.current_plan.store(Arc::new(self.plan.clone()));
                        force = true;
                        replies.push(reply);
                    }
                    ControlMsg::Changed => {}
                }
            }
            if let Some(subscription) = &self.subscription {
                self.health
                    .listening
                    .store(subscription.is_listening(), Ordering::Relaxed);
            }
            let checked = self.check(force);
            if let Err(err) = &checked {
                tracing::debug!(error = %err, store = %self.store_name, "cannot read the state store; serving the last route table");
            }
            self.health.set(checked.is_ok());
            let served = self.table.load().generation;
            for reply in replies {
                let _ = reply.send(served);
            }
            if checked.is_ok() && last_heartbeat.elapsed() >= HEARTBEAT_INTERVAL {
                last_heartbeat = Instant::now();
                if let Err(err) = self.heartbeat() {
                    tracing::warn!(error = %err, "cannot write the heartbeat");
                }
            }
        }
        if self.registered
            && let Err(err) = self.store.deregister_proxy(&self.id)
        {
            tracing::warn!(error = %err, "cannot deregister from the state store");
        }
    }

    /// Registers this proxy with the generation it serves.
    fn register(&mut self) -> Result<(), StoreError> {
        let served = self.table.load();
        self.store.register_proxy(&ProxyRecord {
            generation: served.generation,
            applied_at_ms: now_ms(),
            heartbeat_ms: now_ms(),
            ..self.record.clone()
        })?;
        self.registered = true;
        Ok(())
    }

    /// Rebuilds the table when the store's generation moved (or when forced), and records
    /// the generation served.
    pub fn check(&mut self, force: bool) -> Result<(), StoreError> {
        let token = self.store.change_token()?;
        if !self.registered {
            // The store was unreachable when this proxy started: read it whole now.
            self.change_token = None;
            let generation = self.store.generation()?;
            self.install(generation)?;
            self.register()?;
            self.change_token = Some(token);
            return Ok(());
        }
        if !force && self.change_token == Some(token) {
            return Ok(());
        }
        self.change_token = Some(token);
        let generation = self.store.generation()?;
        if !force && generation == self.table.load().generation {
            return Ok(());
        }
        self.install(generation)?;
        self.store.applied(&self.id, generation)?;
        Ok(())
    }

    /// Builds and swaps in the table of `generation` from the store's stages.
    fn install(&mut self, generation: i64) -> Result<(), StoreError> {
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
        let changed = self.stages != stages || self.table.load().generation != generation;
        self.stages = stages;
        self.table.store(Arc::new(table));
        if changed {
            self.remember();
        }
        Ok(())
    }

    /// Writes the table now served to the last-known file.
    fn remember(&self) {
        let Some(path) = &self.last_known else {
            return;
        };
        let known = LastKnown::new(&self.store_name, self.table.load().generation, &self.stages);
        if let Err(err) = known.write(path) {
            tracing::warn!(error = %err, "cannot keep the last-known route table");
        }
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

    #[test]
    fn a_nudge_queued_behind_notifications_is_answered() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan(dir.path());
        let table = Arc::new(ArcSwap::from_pointee(RouteTable::build(
            &plan,
            &HashMap::new(),
            0,
            &mut Registry::default(),
        )));
        let store = strangler_store::open(&plan.proxy.state).unwrap();
        let watcher = Watcher::new(store, plan, Arc::clone(&table), "p1");
        let (sender, receiver) = std::sync::mpsc::channel();
        let (stop, stopping) = watch::channel(false);
        // Queued before the thread runs: two notifications, then the CLI's nudge.
        sender.send(ControlMsg::Changed).unwrap();
        sender.send(ControlMsg::Changed).unwrap();
        let (reply, answer) = oneshot::channel();
        sender.send(ControlMsg::Refresh(reply)).unwrap();
        let thread = std::thread::spawn(move || watcher.run(receiver, stopping));
        let served = answer.blocking_recv().expect("the nudge was dropped");
        assert_eq!(served, 1, "answered with the generation served");
        stop.send(true).unwrap();
        drop(sender);
        thread.join().unwrap();
    }
}
