//! Aggregate routes (`[[aggregates]]`): a `GET` on an aggregate's path is answered by asking
//! each of its parts, concurrently, and merging their JSON answers into one object keyed by
//! part name.
//!
//! Each part is an ordinary request to this proxy's own listener, so it meets every phase a
//! client's request would: its route, that route's stage (legacy, canary, cutover), its
//! shadow leg, its cache, its counters. A part that times out, fails or answers something
//! other than 2xx JSON is reported under `_errors` (`{"status", "error"}`), and the whole
//! answers with the aggregate's `partial_status` (200 or 207): never a 5xx for the whole.
//! The parts carry the client's headers (credentials included, so each part is admitted on
//! its own) and its request id; the client's query is not passed on.
//!
//! Runs after accept (the path is normalized) and before the route is matched; a plan with
//! no aggregate costs one check of an empty list.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Empty, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Map, Value, json};
use strangler_plan::AggregateSpec;
use strangler_plan::path::split;

use super::Answer;
use crate::forward::{ForwardError, ForwardErrorKind, REQUEST_ID_HEADER, UpstreamBody};
use crate::headers::strip_hop_by_hop;
use crate::routing::RouteTable;

/// Largest part answer read; a larger one is reported as `too_large`.
pub const MAX_PART_BODY: usize = 4 * 1024 * 1024;

/// The key of the failed parts in an aggregate's answer.
pub const ERRORS_KEY: &str = "_errors";

/// An aggregate of the plan, with its counters.
#[derive(Debug)]
pub struct ActiveAggregate {
    pub spec: AggregateSpec,
    pub metrics: std::sync::Arc<crate::metrics::RouteMetrics>,
    /// Its name as the `x-strangler-route` value.
    pub header: HeaderValue,
}

/// The aggregate a `GET` of `path` asks for, if any.
#[inline]
pub fn find<'t>(table: &'t RouteTable, method: &Method, path: &str) -> Option<&'t ActiveAggregate> {
    if table.aggregates.is_empty() || *method != Method::GET {
        return None;
    }
    let segments = split(path);
    table
        .aggregates
        .iter()
        .find(|a| a.spec.path.matches(&segments))
}

/// Where this proxy's own listener is reached from the proxy (an unspecified address is
/// reached on loopback).
pub fn own_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// How one part went.
enum PartResult {
    Json(Value),
    Failed { status: u16, error: String },
}

/// Answers the aggregate `aggregate` for the request `parts` (normalized `path`), asking
/// its parts of the proxy at `own` with `client`.
pub async fn answer(
    client: &Client<HttpConnector, UpstreamBody>,
    own: Option<SocketAddr>,
    aggregate: &ActiveAggregate,
    parts: &Parts,
    path: &str,
    request_id: &HeaderValue,
) -> Answer {
    let spec = &aggregate.spec;
    let Some(own) = own else {
        return ForwardError::new(
            ForwardErrorKind::Internal500,
            format!("aggregate {} needs the proxy's own address", spec.name),
            &spec.name,
            None,
        )
        .into();
    };
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    for name in [
        header::HOST,
        header::CONTENT_LENGTH,
        header::CONTENT_TYPE,
        header::ACCEPT_ENCODING,
    ] {
        headers.remove(name);
    }
    headers.insert(REQUEST_ID_HEADER, request_id.clone());

    let mut calls = tokio::task::JoinSet::new();
    let segments = split(path);
    for (index, (name, target)) in spec.part_paths(&segments).into_iter().enumerate() {
        let client = client.clone();
        let headers = headers.clone();
        let timeout = spec.timeout;
        calls.spawn(async move {
            let result = ask(&client, own, &target, headers, timeout).await;
            (index, name, result)
        });
    }
    let mut results = Vec::with_capacity(spec.parts.len());
    while let Some(done) = calls.join_next().await {
        if let Ok(done) = done {
            results.push(done);
        }
    }
    results.sort_by_key(|(index, ..)| *index);

    let mut merged = Map::new();
    let mut errors = Map::new();
    for (_, name, result) in results {
        match result {
            PartResult::Json(value) => {
                merged.insert(name, value);
            }
            PartResult::Failed { status, error } => {
                errors.insert(name, json!({ "status": status, "error": error }));
            }
        }
    }
    // A part whose task was lost (it cannot panic, but if it did) is reported too.
    for (name, _) in &spec.parts {
        if !merged.contains_key(name) && !errors.contains_key(name) {
            errors.insert(name.clone(), json!({ "status": 500, "error": "lost" }));
        }
    }
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::from_u16(spec.partial_status).unwrap_or(StatusCode::OK)
    };
    if !errors.is_empty() {
        merged.insert(ERRORS_KEY.to_string(), Value::Object(errors));
    }
    let body = Value::Object(merged).to_string();
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Answer {
        response,
        cause: None,
    }
}

/// Asks the proxy at `own` for `target` and reads a JSON answer within `timeout`.
async fn ask(
    client: &Client<HttpConnector, UpstreamBody>,
    own: SocketAddr,
    target: &str,
    headers: HeaderMap,
    timeout: Duration,
) -> PartResult {
    let failed = |status: u16, error: &str| PartResult::Failed {
        status,
        error: error.to_string(),
    };
    let mut request = match Request::get(format!("http://{own}{target}"))
        .body(Either::Right(Empty::<Bytes>::new()))
    {
        Ok(request) => request,
        Err(_) => return failed(500, "bad_path"),
    };
    *request.headers_mut() = headers;
    let call = async {
        let response = client
            .request(request)
            .await
            .map_err(|_| failed(502, "unreachable"))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_PART_BODY)
            .collect()
            .await
            .map_err(|_| failed(status, "too_large_or_broken"))?
            .to_bytes();
        let value: Value = serde_json::from_slice(&body).map_err(|_| failed(status, "not_json"))?;
        if !(200..300).contains(&status) {
            // The proxy's own error names what went wrong (`upstream_unreachable`, …).
            let code = value["error"]["code"]
                .as_str()
                .unwrap_or("status")
                .to_string();
            return Err(PartResult::Failed {
                status,
                error: code,
            });
        }
        Ok(PartResult::Json(value))
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(result) | Err(result)) => result,
        Err(_) => failed(504, "timeout"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_address_of_a_wildcard_listener_is_loopback() {
        let own = |s: &str| own_address(s.parse().unwrap()).to_string();
        assert_eq!(own("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(own("[::]:8080"), "[::1]:8080");
        assert_eq!(own("10.1.2.3:8080"), "10.1.2.3:8080");
    }
}
