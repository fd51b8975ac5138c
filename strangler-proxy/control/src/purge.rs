//! `POST /admin/cache/purge`: drops entries of this proxy's response cache, by route, by
//! path prefix, or both (`{}` drops every entry), and answers how many answers went.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::admin::{AdminState, error};

/// What to purge; a missing field matches everything.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Purge {
    /// Only this route's entries.
    route: Option<String>,
    /// Only entries whose path (with its query) starts with this.
    prefix: Option<String>,
}

pub async fn purge(State(state): State<AdminState>, body: Bytes) -> Response {
    let request: Purge = if body.iter().all(u8::is_ascii_whitespace) {
        Purge::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(err) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!(
                        "expected {{\"route\": NAME, \"prefix\": \"/PATH\"}} (both optional): {err}"
                    ),
                );
            }
        }
    };
    if let Some(prefix) = &request.prefix
        && !prefix.starts_with('/')
    {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "prefix must start with /",
        );
    }
    let table = state.table.load_full();
    if let Some(route) = &request.route {
        match table.route(route) {
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    "unknown_route",
                    format!("no route `{route}` in the plan"),
                );
            }
            Some(r) if r.spec.cache.is_none() => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "not_cached",
                    format!("route `{route}` has no cache section"),
                );
            }
            Some(_) => {}
        }
    }
    let Some(cache) = table.cache.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "no_cache",
            "no route in the plan has a cache section",
        );
    };
    // Walking the entries is off the async threads: the cache may be large.
    let purged = tokio::task::spawn_blocking(move || {
        cache.purge(request.route.as_deref(), request.prefix.as_deref())
    })
    .await
    .unwrap_or_default();
    tracing::info!(purged, "response cache purged");
    Json(json!({ "purged": purged })).into_response()
}
