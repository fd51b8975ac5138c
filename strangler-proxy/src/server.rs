//! A running proxy: the data-plane listener, the admin listener and the control thread,
//! started together and stopped gracefully (stop accepting, finish in-flight, deregister).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState};
use crate::control::{ControlPlane, proxy_record};
use crate::forward::Forwarder;
use crate::plan::Plan;
use crate::store::StoreError;
use crate::sync::Relays;

/// Longest a graceful shutdown waits for in-flight requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create the admin token file {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the control thread: {0}")]
    Thread(std::io::Error),
    #[error(transparent)]
    Sync(#[from] crate::sync::SyncError),
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
    stop: watch::Sender<bool>,
    /// One thread per core, each with its own runtime, listener (SO_REUSEPORT) and
    /// upstream connection pool: a request never hops between threads.
    data_plane: Vec<std::thread::JoinHandle<()>>,
    admin_server: JoinHandle<()>,
    control: ControlPlane,
    /// The plan's sync links, relayed by this proxy.
    relays: Relays,
}

impl Proxy {
    /// Binds both listeners, reads the store and starts serving.
    pub async fn start(plan: Plan) -> Result<Self, ServeError> {
        let state = plan.proxy.state.clone();
        let token = admin::ensure_token(&state).map_err(|source| ServeError::Token {
            path: admin::token_file(&state),
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
        let admin_listener = bind(plan.proxy.admin_listen).await?;
        let admin_addr = local_addr(&admin_listener, plan.proxy.admin_listen)?;
        let id = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let header_read_timeout = plan.proxy.header_read_timeout;
        let relays = Relays::start(&plan)?;
        let record = proxy_record(&id, &listen.to_string(), &admin_addr.to_string());
        let (control, table, current_plan) = ControlPlane::start(plan, record)?;

        let (stop, stopped) = watch::channel(false);
        let recorder = crate::shadow::Recorder::start(&state)?;
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let data_plane = start_workers(
            listen,
            workers,
            &table,
            &id,
            &recorder,
            header_read_timeout,
            &stopped,
        )?;
        let admin_router = admin::router(AdminState {
            token: Arc::from(token.as_str()),
            table,
            plan: current_plan,
            control: control.sender.clone(),
            proxy_id: Arc::from(id.as_str()),
            listen: Arc::from(listen.to_string().as_str()),
        });
        let admin_server = tokio::spawn(async move {
            let result = axum::serve(admin_listener, admin_router)
                .with_graceful_shutdown(until_stopped(stopped))
                .await;
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
            stop,
            data_plane,
            admin_server,
            control,
            relays,
        })
    }

    /// Stops accepting, lets in-flight requests finish (up to [`SHUTDOWN_GRACE`]), and
    /// deregisters from the store.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.relays.stop().await;
        let workers = self.data_plane;
        let _ = tokio::task::spawn_blocking(move || {
            for worker in workers {
                let _ = worker.join();
            }
        })
        .await;
        let _ = self.admin_server.await;
        let control = self.control;
        let _ = tokio::task::spawn_blocking(move || control.stop()).await;
        tracing::info!(id = %self.id, "strangler proxy stopped");
    }
}

/// Binds `addr` with SO_REUSEPORT, so that every worker has a listener of its own and the
/// kernel spreads connections over them.
fn reuseport_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Starts `n` data-plane threads, each serving `listen` on a current-thread runtime with
/// its own forwarder; answers once all are listening.
fn start_workers(
    listen: SocketAddr,
    n: usize,
    table: &Arc<arc_swap::ArcSwap<crate::routing::RouteTable>>,
    id: &str,
    recorder: &crate::shadow::Recorder,
    header_read_timeout: Duration,
    stopped: &watch::Receiver<bool>,
) -> Result<Vec<std::thread::JoinHandle<()>>, ServeError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
    let mut handles = Vec::with_capacity(n);
    for worker in 0..n {
        let (table, id, recorder, stopped, ready) = (
            Arc::clone(table),
            id.to_string(),
            recorder.clone(),
            stopped.clone(),
            ready_tx.clone(),
        );
        let handle = std::thread::Builder::new()
            .name(format!("strangler-data-{worker}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = ready.send(Err(err));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener = match reuseport_listener(listen) {
                        Ok(listener) => {
                            let _ = ready.send(Ok(()));
                            listener
                        }
                        Err(err) => {
                            let _ = ready.send(Err(err));
                            return;
                        }
                    };
                    let forwarder = Arc::new(Forwarder::new(table, &id, worker, recorder));
                    accept_loop(listener, forwarder, header_read_timeout, stopped).await;
                });
            })
            .map_err(ServeError::Thread)?;
        handles.push(handle);
    }
    drop(ready_tx);
    for _ in 0..n {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                return Err(ServeError::Bind {
                    addr: listen,
                    source,
                });
            }
            Err(_) => {
                return Err(ServeError::Bind {
                    addr: listen,
                    source: std::io::Error::other("a data-plane worker stopped while starting"),
                });
            }
        }
    }
    Ok(handles)
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, ServeError> {
    listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })
}

async fn accept_loop(
    listener: TcpListener,
    forwarder: Arc<Forwarder>,
    header_read_timeout: Duration,
    stopped: watch::Receiver<bool>,
) {
    let stop = until_stopped(stopped);
    tokio::pin!(stop);
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let forwarder = Arc::clone(&forwarder);
                let service = service_fn(move |request| Arc::clone(&forwarder).handle(peer, request));
                let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(err) = connection.await {
                        tracing::debug!(%peer, error = %err, "client connection ended with an error");
                    }
                });
            }
            () = &mut stop => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after the shutdown grace period; closing them");
    }
}

/// Resolves once `stop` is set (or its sender is gone).
async fn until_stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
