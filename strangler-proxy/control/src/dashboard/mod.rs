//! The migration dashboard the admin listener serves at `/`: an overview of every route,
//! link, proxy and the audit log that updates itself, a page per route with its differing
//! paths and samples, and buttons that move routes through the same [`crate::rollout`] code
//! the CLI uses.
//!
//! Layout: [`session`] (the login: the admin token kept in an HttpOnly cookie), [`data`]
//! (what a page shows, read in one blocking pass over the store), [`view`] (the pages,
//! maud templates checked at compile time), [`sample`] (a sample's two answers side by
//! side), [`chart`] (inline-SVG time series from [`crate::history`]), [`actions`] (the
//! admin API's stage and rollback endpoints). The script and style sheet are embedded:
//! the page needs nothing but this listener.

pub mod actions;
mod chart;
mod data;
mod sample;
pub mod session;
mod view;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::admin::AdminState;

/// The request header the dashboard's script sets to ask for a page's live part only.
const PART_HEADER: &str = "x-strangler-part";
/// Scripts and styles from this listener only; no inline script, no frames.
const CSP: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

const SCRIPT: &str = include_str!("assets/dashboard.js");
const STYLE: &str = include_str!("assets/dashboard.css");

/// The pages, the login and the embedded assets. Each page checks the session itself and
/// answers the login page without it; the admin API keeps its own 401.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/routes/{route}", get(route_page))
        .route("/login", post(session::login))
        .route("/logout", post(session::logout))
        .route("/assets/dashboard.js", get(script))
        .route("/assets/dashboard.css", get(style))
        .with_state(state)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// An HTML answer with the dashboard's security headers.
fn page(status: StatusCode, markup: maud::Markup) -> Response {
    let mut response = (status, markup.into_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Whether the script asked for the live part of the page only.
fn live_part(headers: &HeaderMap) -> bool {
    headers.get(PART_HEADER).is_some_and(|v| v == "main")
}

async fn overview(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    let Some(actor) = session::signed_in(&headers, &state.token) else {
        return page(StatusCode::UNAUTHORIZED, view::login());
    };
    let overview = data::overview(&state).await;
    let main = view::overview(&overview);
    if live_part(&headers) {
        return page(StatusCode::OK, main);
    }
    page(StatusCode::OK, view::layout("Migration", &actor, main))
}

async fn route_page(
    State(state): State<AdminState>,
    Path(route): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(actor) = session::signed_in(&headers, &state.token) else {
        return page(StatusCode::UNAUTHORIZED, view::login());
    };
    let Some(detail) = data::route(&state, &route).await else {
        let known = state
            .table
            .load()
            .routes
            .iter()
            .map(|r| r.spec.name.clone())
            .collect::<Vec<_>>();
        return page(
            StatusCode::NOT_FOUND,
            view::layout("Unknown route", &actor, view::unknown_route(&route, &known)),
        );
    };
    let main = view::route(&detail);
    if live_part(&headers) {
        return page(StatusCode::OK, main);
    }
    page(StatusCode::OK, view::layout(&route, &actor, main))
}
