//! The dashboard's login: the admin token and the actor's name, checked once and kept in
//! cookies for the browser session (no `Max-Age`: closing the browser ends it).
//!
//! The token cookie is `HttpOnly` (no script, so no injected one, can read it) and
//! `SameSite=Strict` (no other site's page can send it); the server-rendered pages then
//! need no script to be authorized. A request the cookie authorizes that changes something
//! must also carry [`DASHBOARD_HEADER`], which no cross-site form can set.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::admin::{AdminState, error, same};

/// Holds the admin token.
pub const TOKEN_COOKIE: &str = "strangler_admin";
/// Holds the actor's name, as the audit log records it.
pub const ACTOR_COOKIE: &str = "strangler_actor";
/// Set by the dashboard's script on every change it asks for.
pub const DASHBOARD_HEADER: &str = "x-strangler-dashboard";
/// Longest actor name accepted.
pub const MAX_ACTOR: usize = 100;

/// A cookie's value in the request, if present.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Whether the session cookie carries `token`.
pub fn has_token(headers: &HeaderMap, token: &str) -> bool {
    cookie(headers, TOKEN_COOKIE).is_some_and(|t| same(t.as_bytes(), token.as_bytes()))
}

/// The actor signed in, when the session cookie carries `token`.
pub fn signed_in(headers: &HeaderMap, token: &str) -> Option<String> {
    if !has_token(headers, token) {
        return None;
    }
    Some(
        cookie(headers, ACTOR_COOKIE)
            .and_then(decode)
            .filter(|a| valid_actor(a).is_ok())
            .unwrap_or_else(|| "dashboard".to_string()),
    )
}

/// Why an actor name is refused, if it is.
pub fn valid_actor(actor: &str) -> Result<(), String> {
    if actor.trim().is_empty() {
        return Err("give your name as the actor: the audit log records who moved a route".into());
    }
    if actor.chars().count() > MAX_ACTOR {
        return Err(format!(
            "the actor name is longer than {MAX_ACTOR} characters"
        ));
    }
    if actor.chars().any(char::is_control) {
        return Err("the actor name has a control character".into());
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    token: String,
    actor: String,
}

/// `POST /login` with `{token, actor}`: sets the session cookies, or answers 401.
pub async fn login(State(state): State<AdminState>, body: Bytes) -> Response {
    let login: Login = match serde_json::from_slice(&body) {
        Ok(login) => login,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("send {{\"token\": \"...\", \"actor\": \"...\"}}: {err}"),
            );
        }
    };
    if !same(login.token.trim().as_bytes(), state.token.as_bytes()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "that is not this proxy's admin token",
        );
    }
    let actor = login.actor.trim();
    if let Err(why) = valid_actor(actor) {
        return error(StatusCode::BAD_REQUEST, "bad_actor", why);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    for value in [
        format!(
            "{TOKEN_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
            state.token
        ),
        format!(
            "{ACTOR_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
            encode(actor)
        ),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// `POST /logout`: forgets the session.
pub async fn logout() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    for name in [TOKEN_COOKIE, ACTOR_COOKIE] {
        if let Ok(value) = HeaderValue::from_str(&format!(
            "{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
        )) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// Percent-encodes what a cookie value may not hold.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.@".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(first);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_actor_name_survives_the_cookie() {
        for name in ["ada", "Ada Lovelace", "zoë; x=1", "a%b"] {
            assert_eq!(decode(&encode(name)).as_deref(), Some(name));
            assert!(!encode(name).contains([';', ' ', ',']));
        }
        assert_eq!(decode("%4"), None);
    }

    #[test]
    fn the_session_needs_the_token() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("other=1; strangler_admin=secret; strangler_actor=Ada%20L"),
        );
        assert_eq!(signed_in(&headers, "secret").as_deref(), Some("Ada L"));
        assert_eq!(signed_in(&headers, "secreT"), None);
        assert!(valid_actor(" ").is_err());
    }
}
