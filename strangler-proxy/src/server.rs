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
    data_plane: JoinHandle<()>,
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
        let data_listener = bind(plan.proxy.listen).await?;
        let admin_listener = bind(plan.proxy.admin_listen).await?;
        let listen = local_addr(&data_listener, plan.proxy.listen)?;
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
        let forwarder = Arc::new(Forwarder::new(Arc::clone(&table), &id, recorder));
        let data_plane = tokio::spawn(accept_loop(
            data_listener,
            forwarder,
            header_read_timeout,
            stopped.clone(),
        ));
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
        let _ = self.data_plane.await;
        let _ = self.admin_server.await;
        let control = self.control;
        let _ = tokio::task::spawn_blocking(move || control.stop()).await;
        tracing::info!(id = %self.id, "strangler proxy stopped");
    }
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
