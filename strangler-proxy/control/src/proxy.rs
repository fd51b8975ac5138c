//! A running proxy: the data plane, the admin listener, the control thread, the shadow
//! recorder and the sync relays, started together. One shutdown signal stops them all;
//! [`Proxy::stop`] awaits each in the order that loses nothing: the data plane finishes its
//! in-flight requests, the recorder writes the results they produced, the relays finish
//! their current step, the analysis controller and the scheduler give their leases up
//! (the scheduler stopping its runs), the admin listener
//! closes, and the control thread deregisters.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use strangler_dataplane::listener::{DataPlane, DataPlaneConfig, ListenError, until_stopped};
use strangler_dataplane::shadow::results_channel;
use strangler_dataplane::tls::{TlsError, TlsTermination, upstream_client_config};
use strangler_plan::Plan;
use strangler_relay::{RelayError, Relays};
use strangler_store::StoreError;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState};
use crate::analysis::AnalysisController;
use crate::control::{ControlPlane, proxy_record};
use crate::schedule::Scheduler;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("cannot create the admin token file {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the control thread: {0}")]
    Thread(std::io::Error),
    #[error(transparent)]
    Relay(#[from] RelayError),
    #[error(
        "{error}, and this proxy has no last-known route table ({path}): refusing to serve the plan's initial stages while the store may say otherwise"
    )]
    NoLastKnown { error: StoreError, path: PathBuf },
    #[error(transparent)]
    LastKnown(#[from] crate::last_known::LastKnownError),
    #[error("cannot start exporting spans: {0}")]
    Telemetry(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
}

/// A proxy serving a plan.
pub struct Proxy {
    /// Unique name of this proxy process in the state store.
    pub id: String,
    /// Where the data plane listens (the real port when the plan says 0).
    pub listen: SocketAddr,
    /// Where the admin API listens.
    pub admin: SocketAddr,
    /// The bearer token the admin API requires.
    pub token: String,
    /// The one shutdown signal every task below watches.
    shutdown: watch::Sender<bool>,
    data_plane: DataPlane,
    /// Ends after the data plane, once it wrote the last results.
    recorder: JoinHandle<()>,
    /// The plan's sync links, relayed by this proxy.
    relays: Relays,
    admin_server: JoinHandle<()>,
    /// Judges routes and walks rollouts while this proxy holds the store's lease.
    analysis: AnalysisController,
    /// Runs the plan's `[[schedule]]` verifies while this proxy holds their lease.
    scheduler: Scheduler,
    control: ControlPlane,
    /// The span exporter (`[telemetry]`).
    spans: Option<crate::telemetry::SpanExport>,
}

impl Proxy {
    /// Binds both listeners, reads the store and starts serving.
    pub async fn start(plan: Plan) -> Result<Self, ServeError> {
        // Certificates first: a pair that cannot serve stops the start before anything runs.
        let tls = plan
            .proxy
            .tls
            .as_ref()
            .map(TlsTermination::load)
            .transpose()?;
        let upstream_tls = Arc::new(upstream_client_config(plan.services.values())?);
        let state = plan.proxy.state.clone();
        let token_file = admin::token_file(&state, &plan.proxy.last_known);
        let token = admin::ensure_token(&token_file).map_err(|source| ServeError::Token {
            path: token_file.clone(),
            source,
        })?;
        // A plain bind first: an address in use is an error, not a port silently shared
        // through SO_REUSEPORT; it also resolves port 0 for the workers.
        let listen = {
            let probe = std::net::TcpListener::bind(plan.proxy.listen).map_err(|source| {
                ServeError::Bind {
                    addr: plan.proxy.listen,
                    source,
                }
            })?;
            probe.local_addr().map_err(|source| ServeError::Bind {
                addr: plan.proxy.listen,
                source,
            })?
        };
        let admin_addr = plan.proxy.admin_listen;
        let admin_listener =
            TcpListener::bind(admin_addr)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: admin_addr,
                    source,
                })?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| ServeError::Bind {
                addr: admin_addr,
                source,
            })?;
        let id = crate::lease::owner_id();
        let (shutdown, stopping) = watch::channel(false);
        let header_read_timeout = plan.proxy.header_read_timeout;
        let shadow_max_busy = plan.proxy.shadow_max_busy;
        let record = proxy_record(&id, &listen.to_string(), &admin_addr.to_string());
        // The control plane first: it refuses to start without the store or a last-known
        // table, before anything else is running.
        let relays_plan = plan.clone();
        let spans = plan
            .telemetry
            .as_ref()
            .map(crate::telemetry::SpanExport::start)
            .transpose()?;
        let (control, table, current_plan) = ControlPlane::start(plan, record, stopping.clone())?;
        let relays = Relays::start(&relays_plan, &stopping)?;
        let analysis = AnalysisController::start(Arc::clone(&current_plan), stopping.clone())?;
        let scheduler = Scheduler::start(Arc::clone(&current_plan), stopping.clone())?;

        let results_store = strangler_store::open(&state)?;
        let noisy = match results_store.noisy_paths() {
            Ok(noisy) => noisy,
            // Noise is learned again; the store's record merges when it answers.
            Err(err) if err.is_retryable() => {
                tracing::warn!(error = %err, "starting without the noisy paths learned so far");
                Default::default()
            }
            Err(err) => return Err(err.into()),
        };
        let (results, receiver) = results_channel(noisy);
        let recorder = crate::recorder::start(receiver, results_store, Arc::clone(&control.health));
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let data_plane = DataPlane::start(
            DataPlaneConfig {
                listen,
                workers,
                proxy_id: id.clone(),
                header_read_timeout,
                shadow_max_busy,
                spans: spans.as_ref().map(|s| s.sink.clone()),
                tls,
                upstream_tls,
            },
            &table,
            &results,
            &stopping,
        )?;
        // The workers hold the only senders now: the recorder ends when they do.
        drop(results);
        let admin_state = AdminState {
            token: Arc::from(token.as_str()),
            table,
            plan: current_plan,
            control: control.sender.clone(),
            proxy_id: Arc::from(id.as_str()),
            listen: Arc::from(listen.to_string().as_str()),
            store: Arc::new(std::sync::Mutex::new(strangler_store::open(&state)?)),
            health: Arc::clone(&control.health),
            pressure: data_plane.pressure(),
            schedules: Arc::clone(&scheduler.board),
            history: crate::history::History::default(),
            spans: spans.as_ref().map(|s| Arc::clone(&s.counts)),
        };
        // The dashboard's charts: sampled beside the admin listener, stopped with it.
        let sampler = crate::history::sample(
            admin_state.history.clone(),
            Arc::clone(&admin_state.table),
            Arc::clone(&admin_state.store),
            stopping.clone(),
        );
        let admin_router = admin::router(admin_state);
        let admin_stop = stopping.clone();
        let admin_server = tokio::spawn(async move {
            let serve = axum::serve(admin_listener, admin_router)
                .with_graceful_shutdown(until_stopped(admin_stop));
            let (result, ()) = tokio::join!(serve.into_future(), sampler);
            if let Err(err) = result {
                tracing::warn!(error = %err, "admin listener failed");
            }
        });
        tracing::info!(%listen, admin = %admin_addr, id = %id, "strangler proxy serving");
        Ok(Self {
            id,
            listen,
            admin: admin_addr,
            token,
            shutdown,
            data_plane,
            recorder,
            relays,
            admin_server,
            analysis,
            scheduler,
            control,
            spans,
        })
    }

    /// Stops accepting, lets in-flight requests finish (up to the data plane's grace
    /// period), writes their shadow results, stops the relays and deregisters.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        self.data_plane.join().await;
        if let Some(spans) = self.spans {
            spans.join().await;
        }
        let _ = self.recorder.await;
        self.relays.join().await;
        self.analysis.join().await;
        self.scheduler.join().await;
        let _ = self.admin_server.await;
        self.control.join().await;
        tracing::info!(id = %self.id, "strangler proxy stopped");
    }
}
