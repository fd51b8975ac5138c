//! What every participant's HTTP server shares: liveness and readiness, JSON 404/405,
//! the body cap, logging and graceful shutdown.

use std::io::IsTerminal;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::db::Database;
use crate::error::{ApiError, ApiResult};
use crate::extract::MAX_BODY_BYTES;

/// Adds `/health`, `/ready`, JSON answers for unknown routes and methods, and the body cap.
pub fn finish(router: Router, db: Database) -> Router {
    router
        .merge(
            Router::new()
                .route("/health", get(health))
                .route("/ready", get(ready))
                .with_state(db),
        )
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(read_body_first))
}

/// Reads the whole request body (up to [`MAX_BODY_BYTES`]) before any handler or extractor
/// runs. A request refused early (a bad header, an unknown id) would otherwise be answered
/// while its body is still arriving, and the connection closed under the sender: a proxy
/// in front sees a broken pipe and answers 502 instead of the refusal.
async fn read_body_first(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(err) => {
            let too_large = err
                .into_inner()
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            if too_large {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("request body exceeds {MAX_BODY_BYTES} bytes"),
                )
            } else {
                ApiError::bad_request("unreadable_body", "the request body could not be read")
            }
            .into_response()
        }
    }
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(db): State<Database>) -> ApiResult<Json<Value>> {
    db.read(|conn| {
        conn.query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    })
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "database unreachable",
        )
    })?;
    Ok(Json(json!({ "status": "ready" })))
}

async fn route_not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// 201 Created with `Location` and the new resource as JSON.
pub fn created<T: serde::Serialize>(location: String, body: T) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        StatusCode::CREATED,
        [(axum::http::header::LOCATION, location)],
        Json(body),
    )
        .into_response()
}

/// Starts logging to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second call (tests starting several servers) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Binds `addr` and serves `router` until SIGINT or SIGTERM, logging where.
pub async fn listen_and_serve(
    addr: std::net::SocketAddr,
    router: Router,
    what: &str,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await.map_err(|err| {
        std::io::Error::new(err.kind(), format!("cannot listen on {addr}: {err}"))
    })?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "{what} listening");
    serve(listener, router).await
}

/// Serves `router` on `listener` until SIGINT or SIGTERM, then finishes in-flight requests.
pub async fn serve(listener: TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await
}

/// Set once a shutdown signal arrives, so long waits (feed long-polls) end early instead of
/// holding a graceful shutdown for their whole timeout.
fn shutdown_flag() -> &'static tokio::sync::watch::Sender<bool> {
    static FLAG: std::sync::OnceLock<tokio::sync::watch::Sender<bool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| tokio::sync::watch::channel(false).0)
}

/// Resolves once this process is shutting down.
pub async fn shutting_down() {
    let mut flag = shutdown_flag().subscribe();
    let _ = flag.wait_for(|down| *down).await;
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    shutdown_flag().send_replace(true);
    tracing::info!("shutdown requested, finishing in-flight requests");
}
