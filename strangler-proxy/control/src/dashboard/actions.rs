//! The admin API's stage changes, as the dashboard's buttons make them:
//! `POST /admin/routes/{route}/stage` with `{stage, percent?, actor, force?, reason?}` and
//! `POST /admin/routes/{route}/rollback` with `{actor, force?, reason?}`. Both go through
//! [`crate::rollout::change_stage`], like the CLI: the gate, the audit log with the actor
//! given, and the wait until every live proxy serves the change.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;

use crate::admin::{AdminState, error};
use crate::dashboard::session::valid_actor;
use crate::rollout::{self, Move, Outcome, RolloutError};

/// The endpoints, behind the admin API's authorization.
pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/admin/routes/{route}/stage", post(stage))
        .route("/admin/routes/{route}/rollback", post(rollback))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StageBody {
    /// `shadow`, `canary`, `cutover`, `legacy` (a rollback) or `retired`.
    stage: String,
    /// The canary's share for the new service, 0–100; only with `canary`.
    percent: Option<i64>,
    actor: String,
    #[serde(default)]
    force: bool,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    actor: String,
    #[serde(default)]
    force: bool,
    reason: Option<String>,
}

/// A request the endpoints cannot act on: answered 400 with its code.
struct BadInput {
    code: &'static str,
    message: String,
}

impl IntoResponse for BadInput {
    fn into_response(self) -> Response {
        error(StatusCode::BAD_REQUEST, self.code, self.message)
    }
}

fn bad(code: &'static str, message: impl Into<String>) -> BadInput {
    BadInput {
        code,
        message: message.into(),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, BadInput> {
    serde_json::from_slice(body).map_err(|err| bad("bad_request", format!("send {shape}: {err}")))
}

/// The move a body asks for, or why it is not one.
fn wanted(stage: &str, percent: Option<i64>) -> Result<Move, BadInput> {
    let no_percent = |wanted: Move| match percent {
        None => Ok(wanted),
        Some(_) => Err(bad(
            "bad_percent",
            format!("`percent` goes with `canary` only, not `{stage}`"),
        )),
    };
    match stage {
        "shadow" => no_percent(Move::Shadow),
        "cutover" => no_percent(Move::Cutover),
        "legacy" => no_percent(Move::Rollback),
        "retired" => no_percent(Move::Retire),
        "canary" => match percent {
            None => Err(bad(
                "bad_percent",
                "a canary needs `percent`, the new service's share (0-100)",
            )),
            Some(p) => u8::try_from(p)
                .ok()
                .filter(|p| *p <= 100)
                .map(Move::Canary)
                .ok_or_else(|| {
                    bad(
                        "bad_percent",
                        format!("canary percent {p} is not between 0 and 100"),
                    )
                }),
        },
        other => Err(bad(
            "bad_stage",
            format!("unknown stage `{other}` (shadow, canary, cutover, legacy, retired)"),
        )),
    }
}

async fn stage(
    State(state): State<AdminState>,
    Path(route): Path<String>,
    body: Bytes,
) -> Response {
    let shape = r#"{"stage": "shadow|canary|cutover|legacy|retired", "percent": 10, "actor": "name", "force": false}"#;
    let body: StageBody = match parse(&body, shape) {
        Ok(body) => body,
        Err(bad) => return bad.into_response(),
    };
    let wanted = match wanted(body.stage.trim(), body.percent) {
        Ok(wanted) => wanted,
        Err(bad) => return bad.into_response(),
    };
    apply(&state, route, wanted, body.actor, body.force, body.reason).await
}

async fn rollback(
    State(state): State<AdminState>,
    Path(route): Path<String>,
    body: Bytes,
) -> Response {
    let body: RollbackBody = match parse(&body, r#"{"actor": "name", "force": false}"#) {
        Ok(body) => body,
        Err(bad) => return bad.into_response(),
    };
    apply(
        &state,
        route,
        Move::Rollback,
        body.actor,
        body.force,
        body.reason,
    )
    .await
}

async fn apply(
    state: &AdminState,
    route: String,
    wanted: Move,
    actor: String,
    force: bool,
    reason: Option<String>,
) -> Response {
    let actor = actor.trim().to_string();
    if let Err(why) = valid_actor(&actor) {
        return bad("bad_actor", why).into_response();
    }
    let plan = state.plan.load_full();
    let request = rollout::Request {
        route: route.clone(),
        wanted,
        force,
        actor,
        reason: reason.filter(|r| !r.trim().is_empty()),
        wait: rollout::DEFAULT_WAIT,
    };
    match rollout::change_stage(&plan, &request).await {
        Ok(Outcome::Unchanged { stage }) => Json(json!({
            "route": route, "changed": false, "stage": stage.to_string(),
        }))
        .into_response(),
        Ok(Outcome::Changed {
            change,
            propagation,
            forced,
        }) => Json(json!({
            "route": route, "changed": true,
            "from": change.from.to_string(), "to": change.to.to_string(),
            "generation": change.generation, "forced": forced,
            "applied": propagation.applied.iter().map(|p| &p.id).collect::<Vec<_>>(),
            "pending": propagation.pending.iter().map(|p| &p.id).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(err) => refused(err),
    }
}

/// A refused or failed change: 404 for an unknown route, 409 with the reasons for a move
/// the rules or the gate refuse, 503 while the store is unreachable.
fn refused(err: RolloutError) -> Response {
    let message = err.to_string();
    let (status, code, reasons) = match &err {
        RolloutError::UnknownRoute { .. } => (StatusCode::NOT_FOUND, "unknown_route", vec![]),
        RolloutError::Refused { reason, .. } => {
            (StatusCode::CONFLICT, "refused", vec![reason.clone()])
        }
        RolloutError::GateClosed { reason, .. } => {
            (StatusCode::CONFLICT, "gate_closed", vec![reason.clone()])
        }
        RolloutError::NotVerified { reason, .. } => {
            (StatusCode::CONFLICT, "not_verified", vec![reason.clone()])
        }
        RolloutError::Raced { .. } => (StatusCode::CONFLICT, "raced", vec![message.clone()]),
        RolloutError::Store(store) if store.is_retryable() => {
            (StatusCode::SERVICE_UNAVAILABLE, "store_unreachable", vec![])
        }
        RolloutError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store", vec![]),
    };
    if reasons.is_empty() {
        return error(status, code, message);
    }
    (
        status,
        Json(json!({ "error": { "code": code, "message": message, "reasons": reasons } })),
    )
        .into_response()
}
