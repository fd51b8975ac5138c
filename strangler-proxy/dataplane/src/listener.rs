//! The data plane's listeners: one thread per core, each with its own current-thread
//! runtime, `SO_REUSEPORT` listener and [`Forwarder`] (upstream pool), so a request never
//! hops threads. Connections may switch protocols (WebSocket), and are then tunnelled.
//! Stopped by the shutdown signal: stop accepting, let in-flight requests finish (up to
//! [`SHUTDOWN_GRACE`]), then the threads end (a tunnel still open is closed with them).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::forward::Forwarder;
use crate::pressure::{Governor, Pressure};
use crate::routing::RouteTable;
use crate::shadow::ResultSender;

/// Longest a graceful shutdown waits for in-flight requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start a data-plane thread: {0}")]
    Thread(std::io::Error),
}

/// What the data-plane threads are started with.
pub struct DataPlaneConfig {
    /// Where to listen (already checked free, port resolved).
    pub listen: SocketAddr,
    /// Threads to run (one per core).
    pub workers: usize,
    /// Unique name of the proxy, for request ids.
    pub proxy_id: String,
    /// Time a client has to send its request headers.
    pub header_read_timeout: Duration,
    /// Busy share (0 to 1) above which a thread sheds shadow legs (`None`: never).
    pub shadow_max_busy: Option<f64>,
    /// Where request spans go (`[telemetry]`; `None`: no tracing).
    pub spans: Option<crate::trace::SpanSink>,
}

/// The running data-plane threads.
pub struct DataPlane {
    threads: Vec<std::thread::JoinHandle<()>>,
    pressure: Pressure,
}

impl DataPlane {
    /// Starts the threads; answers once every one is listening. They stop accepting when
    /// `shutdown` turns true.
    pub fn start(
        config: DataPlaneConfig,
        table: &Arc<ArcSwap<RouteTable>>,
        results: &ResultSender,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Self, ListenError> {
        let pressure = Pressure::default();
        start_workers(config, table, results, shutdown, &pressure)
            .map(|threads| Self { threads, pressure })
    }

    /// Every thread's shadow governor, for `/metrics`.
    pub fn pressure(&self) -> Pressure {
        self.pressure.clone()
    }

    /// Waits (on a blocking thread) until every worker finished its in-flight requests.
    pub async fn join(self) {
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
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
    config: DataPlaneConfig,
    table: &Arc<ArcSwap<RouteTable>>,
    recorder: &ResultSender,
    stopped: &watch::Receiver<bool>,
    pressure: &Pressure,
) -> Result<Vec<std::thread::JoinHandle<()>>, ListenError> {
    let DataPlaneConfig {
        listen,
        workers: n,
        proxy_id: id,
        header_read_timeout,
        shadow_max_busy,
        spans,
    } = config;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
    let mut handles = Vec::with_capacity(n);
    for worker in 0..n {
        let governor = Arc::new(Governor::new(shadow_max_busy, 0x9e37_79b9 + worker as u64));
        pressure.add(Arc::clone(&governor));
        let (table, id, recorder, stopped, ready, spans) = (
            Arc::clone(table),
            id.to_string(),
            recorder.clone(),
            stopped.clone(),
            ready_tx.clone(),
            spans.clone(),
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
                    tokio::spawn(Arc::clone(&governor).measure(stopped.clone()));
                    let forwarder = Arc::new(
                        Forwarder::new(table, &id, worker, recorder, governor)
                            .with_spans(spans)
                            .with_own_address(listen),
                    );
                    accept_loop(listener, forwarder, header_read_timeout, stopped).await;
                });
            })
            .map_err(ListenError::Thread)?;
        handles.push(handle);
    }
    drop(ready_tx);
    for _ in 0..n {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                return Err(ListenError::Bind {
                    addr: listen,
                    source,
                });
            }
            Err(_) => {
                return Err(ListenError::Bind {
                    addr: listen,
                    source: std::io::Error::other("a data-plane worker stopped while starting"),
                });
            }
        }
    }
    Ok(handles)
}

async fn accept_loop(
    listener: TcpListener,
    forwarder: Arc<Forwarder>,
    header_read_timeout: Duration,
    stopped: watch::Receiver<bool>,
) {
    let stop = until_stopped(stopped.clone());
    tokio::pin!(stop);
    // Every connection task holds a sender; when all are gone, every connection finished
    // (hyper's GracefulShutdown cannot watch connections that may upgrade).
    let (open_tx, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
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
                let connection = http.serve_connection(TokioIo::new(stream), service).with_upgrades();
                let stopping = until_stopped(stopped.clone());
                let open = open_tx.clone();
                tokio::spawn(async move {
                    tokio::pin!(connection);
                    let result = tokio::select! {
                        result = connection.as_mut() => result,
                        () = stopping => {
                            // Finish the request in flight, then close.
                            connection.as_mut().graceful_shutdown();
                            connection.await
                        }
                    };
                    if let Err(err) = result {
                        tracing::debug!(%peer, error = %err, "client connection ended with an error");
                    }
                    drop(open);
                });
            }
            () = &mut stop => break,
        }
    }
    drop(listener);
    drop(open_tx);
    if tokio::time::timeout(SHUTDOWN_GRACE, all_closed.recv())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after the shutdown grace period; closing them");
    }
}

/// Resolves once `stop` is set (or its sender is gone).
pub async fn until_stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
