//! Sidecar mode (`strangler sidecar`): the data plane beside one service, with no plan file
//! and no store. Every request is unmatched and goes to the one upstream through the same
//! phases as in the proxy: the `[edge]` policies of a policy file (authentication, rate
//! limits), request ids, metrics. The admin listener, when asked for, serves `/metrics`
//! (behind its token) and `/health`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use strangler_dataplane::listener::{DataPlane, DataPlaneConfig, until_stopped};
use strangler_dataplane::routing::{Registry, RouteTable};
use strangler_dataplane::shadow::results_channel;
use strangler_plan::Plan;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::exposition::{Fleet, render};
use crate::proxy::ServeError;

/// What a sidecar runs.
pub struct SidecarConfig {
    /// A plan with the one upstream as its legacy service, no routes, and the policy's
    /// `[edge]`; its `admin_listen` is unused.
    pub plan: Plan,
    /// The admin listener and its bearer token (`None`: no admin listener).
    pub admin: Option<(SocketAddr, String)>,
}

/// A running sidecar.
pub struct Sidecar {
    /// Where the data plane listens (the real port when asked for 0).
    pub listen: SocketAddr,
    /// Where the admin listener listens.
    pub admin: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    data_plane: DataPlane,
    admin_server: Option<JoinHandle<()>>,
}

#[derive(Clone)]
struct AdminState {
    table: Arc<ArcSwap<RouteTable>>,
    token: Arc<str>,
}

impl Sidecar {
    /// Binds and starts serving.
    pub async fn start(config: SidecarConfig) -> Result<Self, ServeError> {
        let SidecarConfig { plan, admin } = config;
        let wanted = plan.proxy.listen;
        let bind_error = |source| ServeError::Bind {
            addr: wanted,
            source,
        };
        // A plain bind first, as the proxy does: an address in use is an error.
        let listen = std::net::TcpListener::bind(wanted)
            .and_then(|probe| probe.local_addr())
            .map_err(bind_error)?;
        let table = Arc::new(ArcSwap::from_pointee(RouteTable::build(
            &plan,
            &HashMap::new(),
            0,
            &mut Registry::default(),
        )));
        let (shutdown, stopping) = watch::channel(false);
        // No route, so no shadow leg: nothing is ever sent on this channel.
        let (results, _unused) = results_channel(Default::default());
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let data_plane = DataPlane::start(
            DataPlaneConfig {
                listen,
                workers,
                proxy_id: format!("sidecar{}", std::process::id()),
                header_read_timeout: plan.proxy.header_read_timeout,
                shadow_max_busy: None,
                spans: None,
                // The sidecar listens in the clear and speaks HTTP/1.1 to its service.
                tls: None,
                upstream_tls: Arc::new(strangler_dataplane::tls::upstream_client_config(
                    plan.services.values(),
                )?),
            },
            &table,
            &results,
            &stopping,
        )?;
        let (admin_addr, admin_server) = match admin {
            None => (None, None),
            Some((addr, token)) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServeError::Bind { addr, source })?;
                let bound = listener
                    .local_addr()
                    .map_err(|source| ServeError::Bind { addr, source })?;
                let router = axum::Router::new()
                    .route("/metrics", get(metrics))
                    .route("/health", get(|| async { "ok" }))
                    .with_state(AdminState {
                        table,
                        token: Arc::from(token.as_str()),
                    });
                let stop = stopping.clone();
                let server = tokio::spawn(async move {
                    let served = axum::serve(listener, router)
                        .with_graceful_shutdown(until_stopped(stop))
                        .await;
                    if let Err(err) = served {
                        tracing::warn!(error = %err, "admin listener failed");
                    }
                });
                (Some(bound), Some(server))
            }
        };
        tracing::info!(%listen, admin = ?admin_addr, "strangler sidecar serving");
        Ok(Self {
            listen,
            admin: admin_addr,
            shutdown,
            data_plane,
            admin_server,
        })
    }

    /// Stops accepting and lets in-flight requests finish.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        self.data_plane.join().await;
        if let Some(server) = self.admin_server {
            let _ = server.await;
        }
    }
}

async fn metrics(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if !crate::admin::bears(&headers, &state.token) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(serde_json::json!({ "error": {
                "code": "unauthorized",
                "message": "send Authorization: Bearer <the sidecar's --admin-token>",
            }})),
        )
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        render(state.table.load_full(), Fleet::default()),
    )
        .into_response()
}
