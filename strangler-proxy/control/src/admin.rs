//! The admin API, on its own listener and behind a bearer token: status, routes, plan reload,
//! store refresh (the CLI's nudge) and Prometheus metrics.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::Sender;

use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use strangler_dataplane::routing::{RouteTable, UNMATCHED};
use strangler_plan::{self as plan, Plan, Stage, StoreLocation};

use crate::control::ControlMsg;
use crate::exposition::Fleet;
use crate::status::{RouteStatus, counters};

/// Environment variable that sets the admin token (otherwise the token file is used).
pub const TOKEN_ENV: &str = "STRANGLER_ADMIN_TOKEN";

/// The token file: beside a SQLite store (`strangler.db` → `strangler.db.admin-token`), or
/// for a database server beside the proxy's last-known table (`admin-token`). A fleet shares
/// one token through the environment (`STRANGLER_ADMIN_TOKEN`).
pub fn token_file(state: &StoreLocation, last_known: &Path) -> PathBuf {
    match state.file() {
        Some(file) => {
            let mut name = file.file_name().unwrap_or_default().to_os_string();
            name.push(".admin-token");
            file.with_file_name(name)
        }
        None => last_known.with_file_name("admin-token"),
    }
}

/// The token from the environment, or from the token file if it exists.
pub fn read_token(file: Option<&Path>) -> Option<String> {
    if let Ok(token) = std::env::var(TOKEN_ENV)
        && !token.trim().is_empty()
    {
        return Some(token.trim().to_string());
    }
    std::fs::read_to_string(file?)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// The token to require: from the environment, the token file, or a new random token
/// written to the token file with mode 0600.
pub fn ensure_token(path: &Path) -> std::io::Result<String> {
    if let Some(token) = read_token(Some(path)) {
        return Ok(token);
    }
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            use std::io::Write;
            file.write_all(token.as_bytes())?;
            Ok(token)
        }
        // Another proxy created it first: use theirs.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => read_token(Some(path))
            .ok_or_else(|| std::io::Error::other(format!("{} is empty", path.display()))),
        Err(err) => Err(err),
    }
}

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    pub token: Arc<str>,
    pub table: Arc<ArcSwap<RouteTable>>,
    pub plan: Arc<ArcSwap<Plan>>,
    pub control: Sender<ControlMsg>,
    pub proxy_id: Arc<str>,
    pub listen: Arc<str>,
    /// Read by `/metrics` for the fleet's figures (shadow, checks, rollouts, sync).
    pub store: Arc<std::sync::Mutex<Box<dyn strangler_store::Store>>>,
    /// Whether the control thread reaches the store (`strangler_store_up`).
    pub health: Arc<crate::control::StoreHealth>,
    /// The data-plane threads' shadow governors.
    pub pressure: strangler_dataplane::pressure::Pressure,
    /// What this proxy's scheduler did with each `[[schedule]]`.
    pub schedules: crate::schedule::ScheduleBoard,
    /// The last hour of each route's figures, for the dashboard's charts.
    pub history: crate::history::History,
    /// What the span exporter did (`[telemetry]`; `None`: no export).
    pub spans: Option<Arc<crate::telemetry::SpanCounts>>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/admin/status", get(status))
        .route("/admin/routes", get(routes))
        .route("/admin/reload", post(reload))
        .route("/admin/refresh", post(refresh))
        .route("/admin/cache/purge", post(crate::purge::purge))
        .route("/metrics", get(metrics))
        .merge(crate::dashboard::actions::routes())
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "that method is not allowed on this admin endpoint",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .with_state(state.clone())
        .merge(crate::dashboard::router(state))
}

pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message.into() } })),
    )
        .into_response()
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `headers` carry `Authorization: Bearer <token>` with this very token.
pub(crate) fn bears(headers: &header::HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .is_some_and(|(_, presented)| same(presented.trim().as_bytes(), token.as_bytes()))
}

async fn authorize(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    if bears(request.headers(), &state.token) {
        return next.run(request).await;
    }
    // The dashboard's script is authorized by the session cookie; a change it asks for
    // also carries its header, which a cross-site form cannot send.
    let by_session = !request.headers().contains_key(header::AUTHORIZATION)
        && crate::dashboard::session::has_token(request.headers(), &state.token)
        && (request.method().is_safe()
            || request
                .headers()
                .contains_key(crate::dashboard::session::DASHBOARD_HEADER));
    if by_session {
        return next.run(request).await;
    }
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        format!(
            "send Authorization: Bearer <token> (${TOKEN_ENV} or the token file beside the state store)"
        ),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

fn route_rows(table: &RouteTable) -> Vec<RouteStatus> {
    let mut rows: Vec<RouteStatus> = table
        .routes
        .iter()
        .map(|r| {
            RouteStatus::new(
                &r.spec.name,
                &r.spec.service,
                r.stage,
                &counters(&r.spec.name, &r.metrics),
            )
        })
        .collect();
    rows.push(RouteStatus::new(
        UNMATCHED,
        &table.legacy.upstream.name,
        Stage::Legacy,
        &counters(UNMATCHED, &table.unmatched),
    ));
    rows
}

async fn status(State(state): State<AdminState>) -> Json<Value> {
    let verifies = last_verifies(&state).await;
    let table = state.table.load();
    Json(json!({
        "proxy": { "id": &*state.proxy_id, "listen": &*state.listen, "generation": table.generation,
                   "plan": state.plan.load().file.display().to_string(),
                   "store": state.plan.load().proxy.state.to_string(),
                   "store_up": state.health.is_up(),
                   "store_listening": state.health.is_listening() },
        "routes": route_rows(&table),
        "verifies": verifies,
        "schedules": schedules(&state),
    }))
}

/// Each `[[schedule]]` as the plan says and as this proxy's scheduler saw it (runs, skips and
/// the next due time are counted by the proxy holding the schedule lease).
fn schedules(state: &AdminState) -> Value {
    let plan = state.plan.load();
    let board = state
        .schedules
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    plan.schedules
        .iter()
        .map(|s| {
            let counts = board.get(&s.verify).cloned().unwrap_or_default();
            json!({ "verify": s.verify, "when": s.when.to_string(), "types": s.types,
                    "rate": s.rate, "runs": counts.runs, "skipped": counts.skipped,
                    "failed": counts.failed, "running": counts.running,
                    "next_due": counts.next_due_ms.map(strangler_store::timestamp),
                    "last_error": counts.last_error })
        })
        .collect()
}

/// The newest `strangler verify` of each link, or `null` while the store is unreachable.
async fn last_verifies(state: &AdminState) -> Value {
    if !state.health.is_up() {
        return Value::Null;
    }
    let store = Arc::clone(&state.store);
    let read = tokio::task::spawn_blocking(move || {
        let store = store.lock().unwrap_or_else(|p| p.into_inner());
        store.last_verifies()
    })
    .await;
    match read {
        Ok(Ok(verifies)) => json!(verifies),
        Ok(Err(error)) => {
            tracing::warn!(%error, "status without the verify results");
            Value::Null
        }
        Err(_) => Value::Null,
    }
}

async fn routes(State(state): State<AdminState>) -> Json<Value> {
    let table = state.table.load();
    let routes: Vec<Value> = table
        .routes
        .iter()
        .map(|r| {
            json!({
                "route": r.spec.name,
                "paths": r.spec.paths.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
                "methods": r.spec.methods.as_ref().map(|m| m.iter().map(|m| m.as_str()).collect::<Vec<_>>()),
                "service": r.spec.service,
                "stage": r.stage.name(),
                "percent_new": r.stage.percent_new(),
                "timeout_ms": r.spec.timeout.as_millis() as u64,
                "sticky": r.spec.sticky.as_ref().map(|s| s.to_string()),
            })
        })
        .collect();
    Json(
        json!({ "generation": table.generation, "legacy": table.legacy.upstream.name, "routes": routes }),
    )
}

/// Re-reads the plan file. A bad plan is refused with its reason and the old one keeps
/// serving; so is a change to what only a restart can apply.
async fn reload(State(state): State<AdminState>) -> Response {
    let current = state.plan.load_full();
    let file = current.file.clone();
    let loaded = tokio::task::spawn_blocking(move || plan::load(&file)).await;
    let next = match loaded {
        Ok(Ok(next)) => next,
        Ok(Err(err)) => return error(StatusCode::BAD_REQUEST, "bad_plan", err.to_string()),
        Err(err) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                err.to_string(),
            );
        }
    };
    for (field, changed) in [
        ("proxy.listen", next.proxy.listen != current.proxy.listen),
        (
            "proxy.admin_listen",
            next.proxy.admin_listen != current.proxy.admin_listen,
        ),
        ("proxy.state", next.proxy.state != current.proxy.state),
    ] {
        if changed {
            return error(
                StatusCode::CONFLICT,
                "restart_required",
                format!(
                    "{field} changed: restart the proxy to apply it; the old plan keeps serving"
                ),
            );
        }
    }
    let routes = next.routes.len();
    let (reply, answer) = oneshot::channel();
    if state
        .control
        .send(ControlMsg::Reload(Box::new(next), reply))
        .is_err()
    {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            "the proxy is shutting down",
        );
    }
    match answer.await {
        Ok(generation) => {
            tracing::info!(routes, "plan reloaded");
            Json(json!({ "reloaded": true, "routes": routes, "generation": generation }))
                .into_response()
        }
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            "the proxy is shutting down",
        ),
    }
}

async fn refresh(State(state): State<AdminState>) -> Response {
    let (reply, answer) = oneshot::channel();
    if state.control.send(ControlMsg::Refresh(reply)).is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            "the proxy is shutting down",
        );
    }
    match answer.await {
        Ok(generation) => Json(json!({ "generation": generation })).into_response(),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            "the proxy is shutting down",
        ),
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let table = state.table.load_full();
    let routes: Vec<String> = table.routes.iter().map(|r| r.spec.name.clone()).collect();
    let store = Arc::clone(&state.store);
    let store_up = state.health.is_up();
    let fleet = tokio::task::spawn_blocking(move || {
        if !store_up {
            // Not a scrape's worth of waiting on a store the control thread cannot reach.
            return Fleet::default();
        }
        let store = store.lock().unwrap_or_else(|p| p.into_inner());
        let read = || -> Result<Fleet, strangler_store::StoreError> {
            let mut fleet = Fleet {
                store_up: true,
                ..Fleet::default()
            };
            for route in &routes {
                fleet
                    .shadow
                    .push((route.clone(), store.shadow_summary(route)?.counts));
                let mut newest: Vec<strangler_store::CheckRecord> = Vec::new();
                for c in store.checks(route, 50)?.into_iter().rev() {
                    if !newest.iter().any(|n| n.metric == c.metric) {
                        newest.push(c);
                    }
                }
                fleet.checks.extend(newest);
            }
            fleet.rollouts = store.rollouts()?;
            fleet.links = store.links()?;
            fleet.verifies = store.last_verifies()?;
            Ok(fleet)
        };
        read().unwrap_or_else(|err| {
            tracing::warn!(error = %err, "metrics without the store's figures");
            Fleet::default()
        })
    })
    .await
    .unwrap_or_default();
    let fleet = Fleet {
        store_up: fleet.store_up && state.health.is_up(),
        shed: state.health.shed_counts(),
        threads: state.pressure.readings(),
        schedules: state
            .schedules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        spans: state
            .spans
            .as_deref()
            .map(crate::telemetry::SpanCounts::read),
        ..fleet
    };
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::exposition::render(table, fleet),
    )
        .into_response()
}
