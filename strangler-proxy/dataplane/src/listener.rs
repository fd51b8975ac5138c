//! The data plane's listeners: one thread per core, each with its own current-thread
//! runtime, `SO_REUSEPORT` listener and [`Forwarder`] (upstream pool), so a request never
//! hops threads. Every connection speaks HTTP/1.1 or HTTP/2 without configuration: over
//! TLS (when the plan gives a certificate) as ALPN settles, in the clear by the first bytes
//! (the HTTP/2 preface: prior-knowledge h2c). HTTP/1.1 connections may switch protocols
//! (WebSocket), and are then tunnelled.
//! Stopped by the shutdown signal: stop accepting, let in-flight requests finish (up to
//! [`SHUTDOWN_GRACE`]), then the threads end (a tunnel still open is closed with them).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::forward::Forwarder;
use crate::pressure::{Governor, Pressure};
use crate::routing::RouteTable;
use crate::shadow::ResultSender;
use crate::tls::TlsTermination;

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

/// What a client's first bytes start with when it speaks HTTP/2 without asking first
/// (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How long to wait before looking again at a connection whose first bytes do not yet tell
/// its protocol (one to three bytes of `PRI`).
const SNIFF_AGAIN: Duration = Duration::from_millis(5);

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
    /// TLS on the listener (`None`: plain TCP).
    pub tls: Option<Arc<TlsTermination>>,
    /// What `h2` services' certificates are verified against.
    pub upstream_tls: Arc<rustls::ClientConfig>,
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
        if let Some(tls) = &config.tls {
            tls.watch(shutdown.clone()).map_err(ListenError::Thread)?;
        }
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
        tls,
        upstream_tls,
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
        let (acceptor, upstream_tls) = (
            tls.as_ref().map(|tls| tls.acceptor()),
            Arc::clone(&upstream_tls),
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
                        Forwarder::new(table, &id, worker, recorder, governor, &upstream_tls)
                            .with_spans(spans)
                            .with_own_address(listen),
                    );
                    let protocols = Arc::new(Protocols::new(header_read_timeout, acceptor));
                    accept_loop(listener, forwarder, protocols, stopped).await;
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

/// How connections are served: the HTTP/1.1 and HTTP/2 settings, and TLS if any.
struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    /// Time a client has to finish its TLS handshake and send its first request's head.
    header_read_timeout: Duration,
    tls: Option<TlsAcceptor>,
}

impl Protocols {
    fn new(header_read_timeout: Duration, tls: Option<TlsAcceptor>) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .keep_alive(true);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2.timer(TokioTimer::new());
        Self {
            http1,
            http2,
            header_read_timeout,
            tls,
        }
    }
}

/// Whether a plain connection starts with the HTTP/2 preface (`None`: it closed or sent
/// nothing within `deadline`). Peeks, so HTTP/1.1 reads the bytes untouched.
async fn speaks_h2(stream: &TcpStream, deadline: Duration) -> Option<bool> {
    let sniff = async {
        let mut first = [0u8; 4];
        loop {
            let n = stream.peek(&mut first).await.ok()?;
            if n == 0 {
                return None;
            }
            if !H2_PREFACE.starts_with(&first[..n]) {
                return Some(false);
            }
            // `PRI ` is the preface: no HTTP/1.1 request starts so.
            if n == first.len() {
                return Some(true);
            }
            tokio::time::sleep(SNIFF_AGAIN).await;
        }
    };
    tokio::time::timeout(deadline, sniff).await.ok().flatten()
}

async fn accept_loop(
    listener: TcpListener,
    forwarder: Arc<Forwarder>,
    protocols: Arc<Protocols>,
    stopped: watch::Receiver<bool>,
) {
    let stop = until_stopped(stopped.clone());
    tokio::pin!(stop);
    // Every connection task holds a sender; when all are gone, every connection finished
    // (hyper's GracefulShutdown cannot watch connections that may upgrade).
    let (open_tx, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
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
                let stopping = until_stopped(stopped.clone());
                let open = open_tx.clone();
                let protocols = Arc::clone(&protocols);
                tokio::spawn(async move {
                    /// Serves `connection` until it ends; once the proxy stops, the
                    /// requests in flight finish and it closes.
                    macro_rules! serve {
                        ($connection:expr) => {{
                            let connection = $connection;
                            tokio::pin!(connection);
                            tokio::select! {
                                result = connection.as_mut() => result,
                                () = stopping => {
                                    connection.as_mut().graceful_shutdown();
                                    connection.await
                                }
                            }
                        }};
                    }
                    let Protocols { http1, http2, header_read_timeout, tls } = &*protocols;
                    let result = match tls {
                        None => match speaks_h2(&stream, *header_read_timeout).await {
                            Some(false) => serve!(http1
                                .serve_connection(TokioIo::new(stream), service)
                                .with_upgrades()),
                            Some(true) => serve!(http2.serve_connection(TokioIo::new(stream), service)),
                            None => Ok(()),
                        },
                        Some(acceptor) => {
                            match tokio::time::timeout(*header_read_timeout, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) if stream.get_ref().1.alpn_protocol() == Some(b"h2") => {
                                    serve!(http2.serve_connection(TokioIo::new(stream), service))
                                }
                                Ok(Ok(stream)) => serve!(http1
                                    .serve_connection(TokioIo::new(stream), service)
                                    .with_upgrades()),
                                Ok(Err(err)) => {
                                    tracing::debug!(%peer, error = %err, "TLS handshake failed");
                                    Ok(())
                                }
                                Err(_) => Ok(()),
                            }
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
