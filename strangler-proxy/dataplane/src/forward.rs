//! The forwarding path: one client request in, one upstream request out, the answer back.
//! Reads the route table without a lock (one atomic load), never touches the store.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Either, Empty, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::json;

use crate::metrics::Side;
use crate::routing::{RouteTable, Service, UNMATCHED, choose_side};
use crate::shadow::{self, Leg, ResponseCapture, ResultSender, TeeBody, Unmirrored};
use crate::upstream::Upstream;
use strangler_plan::Stage;
use strangler_plan::path::{normalize, split};

/// Body sent upstream: the client's, capped (and teed for a shadow leg), or nothing.
pub type UpstreamBody = Either<TeeBody<Limited<Incoming>>, Empty<Bytes>>;
/// Body sent to the client: the upstream's, streamed (and teed for a shadow leg), or the
/// proxy's own JSON.
pub type ClientBody = Either<TeeBody<Incoming>, Full<Bytes>>;

/// Idle upstream connections are closed after this; below the upstreams' own idle timeouts
/// so the proxy, not the upstream, closes an idle connection.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Idle connections kept per upstream instance.
const POOL_MAX_IDLE_PER_HOST: usize = 512;
/// Connecting to an upstream that does not answer fails after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub const ROUTE_HEADER: HeaderName = HeaderName::from_static("x-strangler-route");
pub const SERVED_BY_HEADER: HeaderName = HeaderName::from_static("x-strangler-served-by");
/// Set on an answer legacy gave because the new service failed (route `fallback = true`).
pub const FALLBACK_HEADER: HeaderName = HeaderName::from_static("x-strangler-fallback");
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// Longest client-supplied request id that is kept.
const MAX_REQUEST_ID: usize = 200;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Split the raw bytes: a value with one non-ASCII byte (obs-text) still names the
    // headers in its other tokens.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// Rewrites a client's request headers for the upstream: hop-by-hop removed, `Host` moved to
/// `X-Forwarded-Host`, the peer appended to `X-Forwarded-For` (a client's own list is kept
/// before it, never in its place), `X-Forwarded-Proto`, and the request id.
pub fn rewrite_request_headers(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    request_id: &HeaderValue,
) {
    strip_hop_by_hop(headers);
    if let Some(host) = headers.remove(header::HOST) {
        headers.insert(X_FORWARDED_HOST, host);
    } else {
        headers.remove(X_FORWARDED_HOST);
    }
    let peer_ip = peer.ip().to_string();
    // A chain may arrive on several header lines; keep every hop, in order.
    let prior: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let forwarded_for = if prior.is_empty() {
        peer_ip
    } else {
        format!("{}, {peer_ip}", prior.join(", "))
    };
    headers.remove(&X_FORWARDED_FOR);
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    headers.insert(REQUEST_ID_HEADER, request_id.clone());
}

/// Why the proxy answered a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardErrorKind {
    /// The path cannot be normalized (encoded slash, NUL, …).
    BadPath,
    /// The path names a participant's internal endpoint (`/_events`, …).
    Internal,
    /// The request body is over the plan's cap.
    BodyTooLarge,
    /// No connection could be made to any instance.
    ConnectFailed,
    /// The upstream did not answer within the route's timeout.
    Timeout,
    /// The connection failed after the request was sent.
    UpstreamFailed,
}

/// Who caused a failed request: what the proxy's counters charge it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client sent something the proxy refuses (a bad path, a body over the cap).
    Client,
    /// The proxy itself could not do its part.
    Proxy,
    /// The upstream service failed to connect, answer in time, or finish its answer.
    Upstream,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Client => "client",
            Fault::Proxy => "proxy",
            Fault::Upstream => "upstream",
        }
    }
}

impl ForwardErrorKind {
    /// Who a failure of this kind is charged to.
    pub fn fault(self) -> Fault {
        match self {
            Self::BadPath | Self::Internal | Self::BodyTooLarge => Fault::Client,
            Self::ConnectFailed | Self::Timeout | Self::UpstreamFailed => Fault::Upstream,
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Self::BadPath => StatusCode::BAD_REQUEST,
            Self::Internal => StatusCode::NOT_FOUND,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ConnectFailed | Self::UpstreamFailed => StatusCode::BAD_GATEWAY,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    fn code(self) -> &'static str {
        match self {
            Self::BadPath => "bad_path",
            Self::Internal => "internal_endpoint",
            Self::BodyTooLarge => "body_too_large",
            Self::ConnectFailed => "upstream_unreachable",
            Self::Timeout => "upstream_timeout",
            Self::UpstreamFailed => "upstream_failed",
        }
    }
}

/// An answer the proxy gives itself, with where it happened, who caused it, and whether
/// sending the request again is safe (decided where the error is made, read by the retry
/// loop and the fallback).
#[derive(Debug)]
pub struct ForwardError {
    pub kind: ForwardErrorKind,
    pub fault: Fault,
    /// The request can be sent again (to another instance, or to legacy): it had no body
    /// and an idempotent method, so a second delivery cannot apply anything twice.
    pub retry_safe: bool,
    pub message: String,
    pub route: String,
    pub service: Option<String>,
}

impl ForwardError {
    /// A failure of `kind` that must not be retried.
    pub fn new(
        kind: ForwardErrorKind,
        message: String,
        route: &str,
        service: Option<&str>,
    ) -> Self {
        Self {
            kind,
            fault: kind.fault(),
            retry_safe: false,
            message,
            route: route.to_string(),
            service: service.map(str::to_string),
        }
    }

    fn into_response(self) -> Response<ClientBody> {
        let body = json!({ "error": {
            "code": self.kind.code(),
            "message": self.message,
            "route": self.route,
            "service": self.service,
        }});
        let mut response = Response::new(Either::Right(Full::new(Bytes::from(body.to_string()))));
        *response.status_mut() = self.kind.status();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// The forwarding half of a proxy: the route table it serves and its upstream client.
pub struct Forwarder {
    /// The table requests are routed by; swapped whole by the control plane.
    pub table: Arc<ArcSwap<RouteTable>>,
    client: Client<HttpConnector, UpstreamBody>,
    /// Client of the shadow legs (their bodies are buffered copies).
    shadow_client: Client<HttpConnector, Full<Bytes>>,
    /// Where shadow results go.
    recorder: ResultSender,
    /// Prefix of generated request ids (unique per proxy process).
    id_prefix: String,
    next_id: AtomicU64,
}

impl Forwarder {
    /// A forwarder for data-plane worker `worker` of proxy `proxy_id` (both go into the
    /// request ids it makes, so they are unique across workers).
    pub fn new(
        table: Arc<ArcSwap<RouteTable>>,
        proxy_id: &str,
        worker: usize,
        recorder: ResultSender,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let builder = {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_idle_timeout(POOL_IDLE_TIMEOUT)
                .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
                .pool_timer(TokioTimer::new());
            b
        };
        Self {
            table,
            client: builder.build(connector.clone()),
            shadow_client: builder.build(connector),
            recorder,
            id_prefix: format!(
                "{}{worker}",
                proxy_id
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .take(8)
                    .collect::<String>()
            ),
            next_id: AtomicU64::new(1),
        }
    }

    fn request_id(&self, headers: &HeaderMap) -> HeaderValue {
        if let Some(id) = headers.get(REQUEST_ID_HEADER)
            && !id.is_empty()
            && id.len() <= MAX_REQUEST_ID
            && id.as_bytes().iter().all(|b| b.is_ascii_graphic())
        {
            return id.clone();
        }
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{}-{n:x}", self.id_prefix))
            .unwrap_or_else(|_| HeaderValue::from_static("strangler"))
    }

    /// Handles one client request. Never fails: errors become JSON answers.
    pub async fn handle(
        self: Arc<Self>,
        peer: SocketAddr,
        request: Request<Incoming>,
    ) -> Result<Response<ClientBody>, Infallible> {
        let started = Instant::now();
        let table = self.table.load_full();
        let (mut parts, body) = request.into_parts();
        let request_id = self.request_id(&parts.headers);

        let path = match normalize(parts.uri.path()) {
            Ok(path) => path,
            Err(err) => {
                let error = ForwardError::new(
                    ForwardErrorKind::BadPath,
                    format!("{err}: {}", parts.uri.path()),
                    UNMATCHED,
                    None,
                );
                table.unmatched.record(None, 400, started.elapsed());
                return Ok(finish(
                    error.into_response(),
                    &UNMATCHED_HEADER,
                    None,
                    &request_id,
                    table.served_by_headers,
                ));
            }
        };
        if is_internal(&path) {
            let error = ForwardError::new(
                ForwardErrorKind::Internal,
                format!(
                    "{path} is an internal endpoint between participants; it is not served through the proxy"
                ),
                UNMATCHED,
                None,
            );
            table.unmatched.record(None, 404, started.elapsed());
            return Ok(finish(
                error.into_response(),
                &UNMATCHED_HEADER,
                None,
                &request_id,
                table.served_by_headers,
            ));
        }
        let segments = split(&path);
        let found = table.find(&parts.method, &segments);
        let (route_name, route_metrics, side, service, timeout) = match found {
            Some((route, template)) => {
                let side = choose_side(route, template, &segments, &parts.headers);
                let service = match side {
                    Side::Legacy => &table.legacy,
                    Side::New => &route.target,
                };
                (
                    route.spec.name.as_str(),
                    &route.metrics,
                    side,
                    service,
                    route.spec.timeout,
                )
            }
            None => (
                UNMATCHED,
                &table.unmatched,
                Side::Legacy,
                &table.legacy,
                table.default_timeout,
            ),
        };
        let path_and_query = match parts.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };

        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        // A shadow leg for this request, if its stage mirrors and the leg is allowed one.
        let mirror = found.and_then(|(route, _)| {
            let candidate = match route.stage {
                Stage::Shadow => route.target.clone(),
                Stage::Cutover | Stage::Retired if route.spec.shadow.reverse => {
                    table.legacy.clone()
                }
                _ => return None,
            };
            let spec = &route.spec.shadow;
            let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
            let refused = if (crate::routing::roll() as f64) >= spec.sample_percent {
                Some(Unmirrored::SampledOut)
            } else if !safe && spec.writes == strangler_plan::ShadowWrites::Skip {
                Some(Unmirrored::WriteSkipped)
            } else if declared.is_some_and(|n| n > spec.max_body_bytes as u64) {
                Some(Unmirrored::TooLarge)
            } else {
                None
            };
            if let Some(reason) = refused {
                self.recorder
                    .send(&route.spec.name, shadow::Outcome::Unmirrored(reason));
                return None;
            }
            match Arc::clone(&route.shadow_slots).try_acquire_owned() {
                Ok(permit) => Some((route, candidate, permit)),
                Err(_) => {
                    self.recorder.send(
                        &route.spec.name,
                        shadow::Outcome::Unmirrored(Unmirrored::Busy),
                    );
                    None
                }
            }
        });
        let mut shadow_parts = None;
        // A body-less idempotent request the new service fails may be answered by legacy.
        let fallback = side == Side::New
            && body.is_end_stream()
            && is_idempotent(&parts.method)
            && found.is_some_and(|(route, _)| route.spec.fallback);
        let mut fallback_headers = None;
        let mut result = if declared.is_some_and(|n| n > table.max_body_bytes) {
            if let Some((route, ..)) = &mirror {
                self.recorder.send(
                    &route.spec.name,
                    shadow::Outcome::Unmirrored(Unmirrored::TooLarge),
                );
            }
            Err(ForwardError::new(
                ForwardErrorKind::BodyTooLarge,
                format!("request body over {} bytes", table.max_body_bytes),
                route_name,
                None,
            ))
        } else {
            rewrite_request_headers(&mut parts.headers, peer, &request_id);
            let mut request_capture = None;
            let body = if body.is_end_stream() {
                Either::Right(Empty::new())
            } else {
                let cap = usize::try_from(table.max_body_bytes).unwrap_or(usize::MAX);
                let limited = Limited::new(body, cap);
                match &mirror {
                    Some((route, _, _)) => {
                        let (tee, rx) = TeeBody::capture(limited, route.spec.shadow.max_body_bytes);
                        request_capture = Some(rx);
                        Either::Left(tee)
                    }
                    None => Either::Left(TeeBody::passthrough(limited)),
                }
            };
            if let Some((route, candidate, permit)) = mirror {
                shadow_parts = Some((
                    route,
                    candidate,
                    permit,
                    parts.headers.clone(),
                    request_capture,
                ));
            }
            if fallback {
                fallback_headers = Some(parts.headers.clone());
            }
            let sent_at = Instant::now();
            let sent = self
                .send(
                    parts.method.clone(),
                    parts.headers,
                    body,
                    &path_and_query,
                    route_name,
                    service,
                    timeout,
                )
                .await;
            sent.map(|r| (r, sent_at.elapsed()))
        };
        // The new service could not answer: ask legacy instead (route `fallback = true`).
        let mut side = side;
        let mut service = service;
        let mut fell_back = None;
        if let Some(headers) = fallback_headers {
            let failure = match &result {
                Err(err)
                    if err.retry_safe
                        && matches!(
                            err.kind,
                            ForwardErrorKind::ConnectFailed | ForwardErrorKind::UpstreamFailed
                        ) =>
                {
                    Some(err.message.clone())
                }
                Ok((response, _)) if matches!(response.status().as_u16(), 502 | 503) => Some(
                    format!("{} answered {}", service.upstream.name, response.status()),
                ),
                _ => None,
            };
            if let Some(why) = failure {
                let sent_at = Instant::now();
                let retried = self
                    .send(
                        parts.method.clone(),
                        headers,
                        Either::Right(Empty::new()),
                        &path_and_query,
                        route_name,
                        &table.legacy,
                        timeout,
                    )
                    .await;
                if retried.is_ok() {
                    tracing::warn!(route = route_name, reason = %why, "new service failed; answered by legacy");
                    if let Some((route, ..)) = shadow_parts.take() {
                        self.recorder.send(
                            &route.spec.name,
                            shadow::Outcome::Unmirrored(Unmirrored::Incomplete),
                        );
                    }
                    side = Side::Legacy;
                    service = &table.legacy;
                    fell_back = Some(why);
                    result = retried.map(|r| (r, sent_at.elapsed()));
                }
            }
        }
        let response = match result {
            Ok((mut response, primary_elapsed)) => {
                strip_hop_by_hop(response.headers_mut());
                match shadow_parts {
                    Some((route, candidate, permit, headers, request_body)) => {
                        let spec = route.spec.shadow.clone();
                        let status = response.status().as_u16();
                        let response_headers = shadow::header_pairs(response.headers());
                        let (response, body_rx) = {
                            let (head, body) = response.into_parts();
                            let (tee, rx) = TeeBody::capture(body, spec.max_body_bytes);
                            (Response::from_parts(head, tee), rx)
                        };
                        let leg = Leg {
                            route: route.spec.name.clone(),
                            rules: route.rules.clone(),
                            spec,
                            method: parts.method.clone(),
                            path_and_query: path_and_query.clone(),
                            headers,
                            request_body,
                            primary: service.clone(),
                            candidate,
                            primary_answer: ResponseCapture {
                                status,
                                headers: response_headers,
                                body: body_rx,
                            },
                            primary_ms: primary_elapsed.as_secs_f64() * 1000.0,
                            request_id: request_id.to_str().unwrap_or_default().to_string(),
                            permit,
                        };
                        tokio::spawn(shadow::run(
                            leg,
                            self.shadow_client.clone(),
                            self.recorder.clone(),
                            crate::routing::roll(),
                        ));
                        response.map(Either::Left)
                    }
                    None => response.map(|b| Either::Left(TeeBody::passthrough(b))),
                }
            }
            Err(err) => {
                if let Some((route, ..)) = &shadow_parts {
                    self.recorder.send(
                        &route.spec.name,
                        shadow::Outcome::Unmirrored(Unmirrored::Incomplete),
                    );
                }
                if err.kind != ForwardErrorKind::BodyTooLarge {
                    tracing::warn!(
                        route = %err.route,
                        service = err.service.as_deref().unwrap_or("-"),
                        request_id = request_id.to_str().unwrap_or("-"),
                        error = %err.message,
                        "request failed"
                    );
                }
                err.into_response()
            }
        };
        let served = Some(&service.header);
        let route_header = found.map_or(&UNMATCHED_HEADER, |(route, _)| &route.header);
        route_metrics.record(Some(side), response.status().as_u16(), started.elapsed());
        let mut response = response;
        if fell_back.is_some() {
            response
                .headers_mut()
                .insert(FALLBACK_HEADER, HeaderValue::from_static("1"));
        }
        Ok(finish(
            response,
            route_header,
            served,
            &request_id,
            table.served_by_headers,
        ))
    }

    /// Sends the request to an instance of `service`; an idempotent request without a body
    /// is tried once more (on the next instance) when the first attempt fails to connect or
    /// its reused connection breaks.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        method: Method,
        headers: HeaderMap,
        body: UpstreamBody,
        path_and_query: &str,
        route: &str,
        service: &Service,
        timeout: Duration,
    ) -> Result<Response<Incoming>, ForwardError> {
        // Only a body-less idempotent request can be sent twice without applying anything
        // twice; the errors made below carry that as `retry_safe`.
        let replayable = matches!(body, Either::Right(_)) && is_idempotent(&method);
        // A second attempt goes to the next instance; with one instance, hyper's own retry
        // of a request its pooled connection dropped before sending is the one that helps.
        let another_instance = service.upstream.instances.len() > 1;
        let fail = |kind, message: String, retry_safe: bool| ForwardError {
            retry_safe,
            ..ForwardError::new(kind, message, route, Some(&service.upstream.name))
        };
        let mut body = Some(body);
        let mut headers = Some(headers);
        for attempt in 0..2 {
            let Some((index, instance)) = service.upstream.pick() else {
                return Err(fail(
                    ForwardErrorKind::ConnectFailed,
                    format!("service {} has no instance", service.upstream.name),
                    false,
                ));
            };
            let uri = Upstream::uri(instance, path_and_query).map_err(|err| ForwardError {
                fault: Fault::Proxy,
                ..fail(
                    ForwardErrorKind::BadPath,
                    format!("cannot build the upstream URI: {err}"),
                    false,
                )
            })?;
            let may_retry = replayable && another_instance && attempt == 0;
            let (attempt_headers, attempt_body) = if may_retry {
                (
                    headers.clone().unwrap_or_default(),
                    Either::Right(Empty::new()),
                )
            } else {
                (
                    headers.take().unwrap_or_default(),
                    body.take().unwrap_or(Either::Right(Empty::new())),
                )
            };
            let mut request = Request::new(attempt_body);
            *request.method_mut() = method.clone();
            *request.uri_mut() = uri;
            *request.headers_mut() = attempt_headers;

            let sent = Instant::now();
            let outcome = tokio::time::timeout(timeout, self.client.request(request)).await;
            let elapsed = sent.elapsed();
            let error = match outcome {
                Ok(Ok(response)) => {
                    service.upstream.mark_ok(index);
                    service
                        .metrics
                        .record(!response.status().is_server_error(), elapsed);
                    return Ok(response);
                }
                Ok(Err(err)) if is_body_too_large(&err) => {
                    // The client's body outgrew the cap while streaming: the client's doing.
                    return Err(ForwardError::new(
                        ForwardErrorKind::BodyTooLarge,
                        "request body over the proxy's limit".to_string(),
                        route,
                        None,
                    ));
                }
                Ok(Err(err)) => {
                    service.metrics.record(false, elapsed);
                    let connect = err.is_connect();
                    if connect {
                        service.upstream.mark_failed(index);
                    }
                    let (kind, what) = if connect {
                        (ForwardErrorKind::ConnectFailed, "cannot connect to")
                    } else {
                        (ForwardErrorKind::UpstreamFailed, "connection failed with")
                    };
                    fail(
                        kind,
                        format!(
                            "{what} service {} at {}: {}",
                            service.upstream.name,
                            instance.authority,
                            error_chain(&err)
                        ),
                        replayable,
                    )
                }
                Err(_) => {
                    service.metrics.record(false, elapsed);
                    // No answer in time: the upstream may still be applying it.
                    return Err(fail(
                        ForwardErrorKind::Timeout,
                        format!(
                            "service {} at {} did not answer within {} ms",
                            service.upstream.name,
                            instance.authority,
                            timeout.as_millis()
                        ),
                        false,
                    ));
                }
            };
            if error.retry_safe && may_retry {
                tracing::debug!(route, service = %service.upstream.name, error = %error.message, "retrying idempotent request");
                continue;
            }
            return Err(error);
        }
        Err(fail(
            ForwardErrorKind::UpstreamFailed,
            "no attempt left".to_string(),
            false,
        ))
    }
}

/// Paths whose first segment starts with `_` (the event feed `/_events`) are how participants
/// talk to each other; clients never reach them through the proxy, or anyone could read every
/// change or forge one.
pub fn is_internal(path: &str) -> bool {
    path.strip_prefix('/').is_some_and(|p| p.starts_with('_'))
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn is_body_too_large(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    parts.dedup();
    parts.join(": ")
}

/// Adds the headers that tell a user where the request went.
fn finish(
    mut response: Response<ClientBody>,
    route: &HeaderValue,
    served_by: Option<&HeaderValue>,
    request_id: &HeaderValue,
    served_by_headers: bool,
) -> Response<ClientBody> {
    let headers = response.headers_mut();
    headers.insert(REQUEST_ID_HEADER, request_id.clone());
    if served_by_headers {
        headers.insert(ROUTE_HEADER, route.clone());
        if let Some(v) = served_by {
            headers.insert(SERVED_BY_HEADER, v.clone());
        }
    }
    response
}

static UNMATCHED_HEADER: HeaderValue = HeaderValue::from_static(UNMATCHED);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed_with_those_connection_names() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, X-Secret".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/headers.rs`): one non-ASCII byte in the
    /// `Connection` value made the whole value unreadable, so the headers it named were
    /// forwarded.
    #[test]
    fn a_connection_value_with_a_non_ascii_byte_still_names_its_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_bytes(b"Ww,\xff\xff0").unwrap(),
        );
        h.insert("ww", HeaderValue::from_static(""));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
    }

    #[test]
    fn forwarded_headers_append_the_peer() {
        let peer: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        let id = HeaderValue::from_static("req-1");
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "shop.example".parse().unwrap());
        h.insert("x-forwarded-for", "1.1.1.1".parse().unwrap());
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        rewrite_request_headers(&mut h, peer, &id);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "shop.example");
        assert!(h.get(header::HOST).is_none());
        assert_eq!(h["x-request-id"], "req-1");

        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "1.1.1.1".parse().unwrap());
        h.append("x-forwarded-for", "2.2.2.2, 3.3.3.3".parse().unwrap());
        rewrite_request_headers(&mut h, peer, &id);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.1.2.3");

        let mut h = HeaderMap::new();
        h.insert("x-forwarded-host", "spoofed".parse().unwrap());
        rewrite_request_headers(&mut h, peer, &id);
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert!(h.get("x-forwarded-host").is_none());
    }
}
