//! The forwarding path: one client request in, one upstream request out, the answer back.
//! Reads the route table without a lock (one atomic load), never touches the store.
//!
//! Every answer the proxy gives itself is a [`ForwardError`] that says who caused it
//! ([`Cause`]): a client's bad head, path or body is never charged to a service.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::upgrade::OnUpgrade;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::json;
use tokio::sync::OwnedSemaphorePermit;

use crate::headers::{self, HeadError, Peer};
use crate::inbound::{self, Inbound, InboundError, InboundState};
use crate::metrics::{Cause, Side};
use crate::routing::{ActiveRoute, RouteTable, Service, Slot, UNMATCHED, choose_side};
use crate::shadow::{self, Leg, ResponseCapture, ResultSender, TeeBody, Unmirrored};
use crate::upstream::Upstream;
use strangler_plan::path::{normalize, split};
use strangler_plan::{Stage, TrailingSlash};

pub use crate::headers::{REQUEST_ID_HEADER, rewrite_request_headers, strip_hop_by_hop};

/// Body sent upstream: the client's, capped and timed (and teed for a shadow leg), or
/// nothing.
pub type UpstreamBody = Either<TeeBody<Inbound<Incoming>>, Empty<Bytes>>;
/// Body sent to the client: the upstream's, streamed (and teed for a shadow leg), or the
/// proxy's own.
pub type ClientBody = Either<Streamed, Full<Bytes>>;

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
/// Longest client-supplied request id that is kept.
const MAX_REQUEST_ID: usize = 200;

/// The upstream's answer on its way to the client, holding the service's in-flight slot
/// until the last byte is passed on (or the client goes away).
pub struct Streamed {
    body: TeeBody<Incoming>,
    _slot: Option<Slot>,
}

impl Body for Streamed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Why the proxy answered a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardErrorKind {
    /// Two `Host` lines, none in HTTP/1.1, or a forwarding header that is not text.
    BadHead,
    /// A transfer coding the proxy does not implement.
    UnsupportedCoding,
    /// The path cannot be normalized (encoded slash, NUL, …).
    BadPath,
    /// The path names a participant's internal endpoint (`/_events`, …).
    Internal,
    /// The request asks to switch protocols on a route that refuses upgrades.
    UpgradeRefused,
    /// The request body is over the plan's cap.
    BodyTooLarge,
    /// The client paused longer than `body_read_timeout` while sending its body.
    BodyStalled,
    /// The request body is malformed or broke off.
    BadBody,
    /// The service already has `max_in_flight` requests.
    Overloaded,
    /// The proxy could not build the upstream request.
    Internal500,
    /// No connection could be made to any instance.
    ConnectFailed,
    /// The upstream did not answer within the route's timeout.
    Timeout,
    /// The connection failed after the request was sent.
    UpstreamFailed,
}

impl ForwardErrorKind {
    /// Who a failure of this kind is charged to.
    pub fn cause(self) -> Cause {
        match self {
            Self::BadHead
            | Self::UnsupportedCoding
            | Self::BadPath
            | Self::Internal
            | Self::UpgradeRefused
            | Self::BodyTooLarge
            | Self::BodyStalled
            | Self::BadBody => Cause::Client,
            Self::Overloaded | Self::Internal500 => Cause::Proxy,
            Self::ConnectFailed | Self::Timeout | Self::UpstreamFailed => Cause::Upstream,
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::BadHead | Self::BadPath | Self::BadBody => StatusCode::BAD_REQUEST,
            Self::UnsupportedCoding => StatusCode::NOT_IMPLEMENTED,
            Self::Internal => StatusCode::NOT_FOUND,
            Self::UpgradeRefused => StatusCode::FORBIDDEN,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyStalled => StatusCode::REQUEST_TIMEOUT,
            Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal500 => StatusCode::INTERNAL_SERVER_ERROR,
            Self::ConnectFailed | Self::UpstreamFailed => StatusCode::BAD_GATEWAY,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::BadHead => "bad_request",
            Self::UnsupportedCoding => "unsupported_transfer_encoding",
            Self::BadPath => "bad_path",
            Self::Internal => "internal_endpoint",
            Self::UpgradeRefused => "upgrade_refused",
            Self::BodyTooLarge => "body_too_large",
            Self::BodyStalled => "body_timeout",
            Self::BadBody => "bad_request_body",
            Self::Overloaded => "overloaded",
            Self::Internal500 => "internal",
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
    pub cause: Cause,
    /// The request can be sent again (to another instance, or to legacy): it had no body
    /// and an idempotent method, so a second delivery cannot apply anything twice.
    pub retry_safe: bool,
    /// What the client is told: names the route and the service, never an address.
    pub message: String,
    /// What only the log gets (the instance's address, the error chain).
    pub detail: Option<String>,
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
            cause: kind.cause(),
            retry_safe: false,
            message,
            detail: None,
            route: route.to_string(),
            service: service.map(str::to_string),
        }
    }

    fn with_detail(self, detail: String) -> Self {
        Self {
            detail: Some(detail),
            ..self
        }
    }

    /// The client's body failed: too large, stalled or broken (on its way to `service`).
    fn from_inbound(err: &InboundError, route: &str, service: &str) -> Self {
        let kind = match err {
            InboundError::TooLarge { .. } => ForwardErrorKind::BodyTooLarge,
            InboundError::Stalled { .. } => ForwardErrorKind::BodyStalled,
            InboundError::Broken(_) => ForwardErrorKind::BadBody,
        };
        Self::new(kind, err.to_string(), route, Some(service))
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
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.kind == ForwardErrorKind::Overloaded {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.kind == ForwardErrorKind::BodyStalled || self.kind == ForwardErrorKind::BadBody {
            // The connection's framing cannot be trusted after a broken or abandoned body.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
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

/// A request the proxy answers at once, before any upstream is involved.
struct Early {
    response: Response<ClientBody>,
    cause: Option<Cause>,
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

    /// Answers a request the proxy refuses before routing it (route `default`).
    fn refuse(
        table: &RouteTable,
        error: ForwardError,
        started: Instant,
        request_id: &HeaderValue,
    ) -> Response<ClientBody> {
        let cause = error.cause;
        let response = error.into_response();
        table.unmatched.failed(cause);
        table.unmatched.record(
            None,
            response.status().as_u16(),
            started.elapsed(),
            Some(cause),
        );
        finish(
            response,
            &UNMATCHED_HEADER,
            None,
            request_id,
            table.served_by_headers,
        )
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

        let head = match headers::check_head(&parts) {
            Ok(head) => head,
            Err(err) => {
                let kind = match err {
                    HeadError::UnsupportedTransferEncoding(_) => {
                        ForwardErrorKind::UnsupportedCoding
                    }
                    HeadError::BadHost(_) | HeadError::BadForwarding(_) => {
                        ForwardErrorKind::BadHead
                    }
                };
                let error = ForwardError::new(kind, err.message(), UNMATCHED, None);
                return Ok(Self::refuse(&table, error, started, &request_id));
            }
        };
        let path = match normalize(parts.uri.path()) {
            Ok(path) => path,
            Err(err) => {
                let error = ForwardError::new(
                    ForwardErrorKind::BadPath,
                    format!("{err}: {}", parts.uri.path()),
                    UNMATCHED,
                    None,
                );
                return Ok(Self::refuse(&table, error, started, &request_id));
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
            return Ok(Self::refuse(&table, error, started, &request_id));
        }
        let path = match resolve_trailing_slash(&table, &parts.method, path) {
            Ok(path) => path,
            Err(location) => {
                let location = match parts.uri.query() {
                    Some(q) => format!("{location}?{q}"),
                    None => location,
                };
                let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
                *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
                if let Ok(value) = HeaderValue::from_str(&location) {
                    response.headers_mut().insert(header::LOCATION, value);
                }
                table.unmatched.record(None, 308, started.elapsed(), None);
                return Ok(finish(
                    response,
                    &UNMATCHED_HEADER,
                    None,
                    &request_id,
                    table.served_by_headers,
                ));
            }
        };
        let segments = split(&path);
        let found = table.find(&parts.method, &segments);
        if found.is_none() {
            count_case_near_miss(&table, &parts.method, &path, &segments);
        }
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
        let route_header = found.map_or(&UNMATCHED_HEADER, |(route, _)| &route.header);
        let early = |early: Early| {
            if let Some(cause) = early.cause {
                route_metrics.failed(cause);
            }
            route_metrics.record(
                Some(side),
                early.response.status().as_u16(),
                started.elapsed(),
                early.cause,
            );
            Ok(finish(
                early.response,
                route_header,
                Some(&service.header),
                &request_id,
                table.served_by_headers,
            ))
        };
        let refused = |error: ForwardError| {
            let cause = Some(error.cause);
            early(Early {
                response: error.into_response(),
                cause,
            })
        };

        // A request to switch protocols (WebSocket) is tunnelled, never mirrored or retried.
        let upgrade = headers::wants_upgrade(&parts.headers)
            .then(|| parts.headers.get(header::UPGRADE).cloned())
            .flatten();
        if upgrade.is_some() && found.is_some_and(|(route, _)| !route.spec.upgrades) {
            return refused(ForwardError::new(
                ForwardErrorKind::UpgradeRefused,
                format!("route {route_name} does not allow switching protocols"),
                route_name,
                None,
            ));
        }
        let client_upgrade = upgrade
            .as_ref()
            .and_then(|_| parts.extensions.remove::<OnUpgrade>());

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
        let mirror = found
            .filter(|_| upgrade.is_none())
            .and_then(|(route, _)| self.mirror(&table, route, side, &parts.method, declared));
        if declared.is_some_and(|n| n > table.max_body_bytes) {
            if let Some((route, ..)) = &mirror {
                self.recorder.send(
                    &route.spec.name,
                    shadow::Outcome::Unmirrored(Unmirrored::TooLarge),
                );
            }
            return refused(ForwardError::new(
                ForwardErrorKind::BodyTooLarge,
                format!("request body over {} bytes", table.max_body_bytes),
                route_name,
                None,
            ));
        }
        // The client's body, capped and timed; read whole first when the route asks.
        let has_body = !body.is_end_stream();
        let mut inbound_state = None;
        let mut inbound = None;
        if has_body {
            let (mut body, state) =
                Inbound::new(body, table.max_body_bytes, table.body_read_timeout);
            if let Some(limit) = found.and_then(|(route, _)| route.spec.buffer_body_up_to)
                && let Err(err) = body.buffer(limit).await
            {
                if let Some((route, ..)) = &mirror {
                    self.recorder.send(
                        &route.spec.name,
                        shadow::Outcome::Unmirrored(Unmirrored::Incomplete),
                    );
                }
                return refused(ForwardError::from_inbound(
                    &err,
                    route_name,
                    &service.upstream.name,
                ));
            }
            inbound_state = Some(state);
            inbound = Some(body);
        }
        // A slot among the service's requests in flight, held until its answer is passed on.
        let slot = match service.in_flight.try_take() {
            Some(slot) => slot,
            None => {
                service.metrics.overloaded.fetch_add(1, Ordering::Relaxed);
                if let Some((route, ..)) = &mirror {
                    self.recorder.send(
                        &route.spec.name,
                        shadow::Outcome::Unmirrored(Unmirrored::Incomplete),
                    );
                }
                return refused(ForwardError::new(
                    ForwardErrorKind::Overloaded,
                    format!(
                        "service {} has too many requests in flight; retry shortly",
                        service.upstream.name
                    ),
                    route_name,
                    Some(&service.upstream.name),
                ));
            }
        };

        headers::rewrite_request_headers(
            &mut parts.headers,
            &head,
            Peer {
                addr: peer,
                trusted: &table.trusted_proxies,
            },
            &request_id,
        );
        if let Some(protocol) = &upgrade {
            parts.headers.insert(header::UPGRADE, protocol.clone());
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        let mut request_capture = None;
        let body = match inbound {
            None => Either::Right(Empty::new()),
            Some(inbound) => match &mirror {
                Some((route, _, _)) => {
                    let (tee, rx) = TeeBody::capture(inbound, route.spec.shadow.max_body_bytes);
                    request_capture = Some(rx);
                    Either::Left(tee)
                }
                None => Either::Left(TeeBody::passthrough(inbound)),
            },
        };
        let mut shadow_parts = mirror.map(|(route, candidate, permit)| {
            (
                route,
                candidate,
                permit,
                parts.headers.clone(),
                request_capture,
            )
        });
        // A body-less idempotent request the new service fails may be answered by legacy.
        let fallback = side == Side::New
            && !has_body
            && upgrade.is_none()
            && is_idempotent(&parts.method)
            && found.is_some_and(|(route, _)| route.spec.fallback);
        let fallback_headers = fallback.then(|| parts.headers.clone());
        let sent_at = Instant::now();
        let mut result = self
            .send(
                Outgoing {
                    method: parts.method.clone(),
                    headers: parts.headers,
                    body,
                    path_and_query: &path_and_query,
                    route: route_name,
                    service,
                    timeout,
                },
                inbound_state.as_ref(),
            )
            .await
            .map(|r| (r, sent_at.elapsed(), slot));

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
                Ok((response, ..)) if matches!(response.status().as_u16(), 502 | 503) => Some(
                    format!("{} answered {}", service.upstream.name, response.status()),
                ),
                _ => None,
            };
            let legacy_slot = failure
                .as_ref()
                .and_then(|_| table.legacy.in_flight.try_take());
            if let (Some(why), Some(legacy_slot)) = (failure, legacy_slot) {
                let sent_at = Instant::now();
                let retried = self
                    .send(
                        Outgoing {
                            method: parts.method.clone(),
                            headers,
                            body: Either::Right(Empty::new()),
                            path_and_query: &path_and_query,
                            route: route_name,
                            service: &table.legacy,
                            timeout,
                        },
                        None,
                    )
                    .await;
                if let Ok(response) = retried {
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
                    result = Ok((response, sent_at.elapsed(), legacy_slot));
                }
            }
        }
        let mut cause = None;
        let response = match result {
            Ok((mut response, _, slot)) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                let upstream_io = hyper::upgrade::on(&mut response);
                let protocol = response.headers().get(header::UPGRADE).cloned();
                strip_hop_by_hop(response.headers_mut());
                if let Some(protocol) = protocol {
                    response.headers_mut().insert(header::UPGRADE, protocol);
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                }
                match client_upgrade {
                    Some(client_io) => {
                        tokio::spawn(tunnel(client_io, upstream_io, slot, route_name.to_string()));
                    }
                    None => {
                        tracing::warn!(route = route_name, "upstream switched protocols unasked")
                    }
                }
                response.map(|_| Either::Right(Full::new(Bytes::new())))
            }
            Ok((mut response, primary_elapsed, slot)) => {
                strip_hop_by_hop(response.headers_mut());
                let (head, body) = response.into_parts();
                let body = match shadow_parts {
                    Some((route, candidate, permit, headers, request_body)) => {
                        let spec = route.spec.shadow.clone();
                        let (tee, body_rx) = TeeBody::capture(body, spec.max_body_bytes);
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
                                status: head.status.as_u16(),
                                headers: shadow::header_pairs(&head.headers),
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
                        tee
                    }
                    None => TeeBody::passthrough(body),
                };
                Response::from_parts(
                    head,
                    Either::Left(Streamed {
                        body,
                        _slot: Some(slot),
                    }),
                )
            }
            Err(err) => {
                if let Some((route, ..)) = &shadow_parts {
                    self.recorder.send(
                        &route.spec.name,
                        shadow::Outcome::Unmirrored(Unmirrored::Incomplete),
                    );
                }
                if err.cause != Cause::Client {
                    tracing::warn!(
                        route = %err.route,
                        service = err.service.as_deref().unwrap_or("-"),
                        request_id = request_id.to_str().unwrap_or("-"),
                        cause = err.cause.as_str(),
                        error = %err.message,
                        detail = err.detail.as_deref().unwrap_or("-"),
                        "request failed"
                    );
                } else {
                    tracing::debug!(route = %err.route, error = %err.message, "client error");
                }
                route_metrics.failed(err.cause);
                cause = Some(err.cause);
                err.into_response()
            }
        };
        route_metrics.record(
            Some(side),
            response.status().as_u16(),
            started.elapsed(),
            cause,
        );
        let mut response = response;
        if fell_back.is_some() {
            response
                .headers_mut()
                .insert(FALLBACK_HEADER, HeaderValue::from_static("1"));
        }
        Ok(finish(
            response,
            route_header,
            Some(&service.header),
            &request_id,
            table.served_by_headers,
        ))
    }

    /// Whether `route` mirrors this request, with the candidate and a slot of its shadow
    /// leg; a request it does not mirror is counted with the reason. In shadow the new
    /// service is the candidate; in a canary, whichever side did not answer (so answers keep
    /// being compared while traffic moves); after cutover, legacy if `reverse_shadow`.
    fn mirror<'t>(
        &self,
        table: &'t RouteTable,
        route: &'t ActiveRoute,
        side: Side,
        method: &Method,
        declared: Option<u64>,
    ) -> Option<(&'t ActiveRoute, Service, OwnedSemaphorePermit)> {
        let candidate = match (route.stage, side) {
            (Stage::Shadow, _) | (Stage::Canary { .. }, Side::Legacy) => route.target.clone(),
            (Stage::Canary { .. }, Side::New) => table.legacy.clone(),
            (Stage::Cutover | Stage::Retired, _) if route.spec.shadow.reverse => {
                table.legacy.clone()
            }
            _ => return None,
        };
        let spec = &route.spec.shadow;
        let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
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
    }

    /// Sends the request to an instance of `service`; an idempotent request without a body
    /// is tried once more (on the next instance) when the first attempt fails to connect or
    /// its reused connection breaks.
    async fn send(
        &self,
        outgoing: Outgoing<'_>,
        inbound: Option<&InboundState>,
    ) -> Result<Response<Incoming>, ForwardError> {
        let Outgoing {
            method,
            headers,
            body,
            path_and_query,
            route,
            service,
            timeout,
        } = outgoing;
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
            let uri = Upstream::uri(instance, path_and_query).map_err(|err| {
                fail(
                    ForwardErrorKind::Internal500,
                    "cannot build the upstream request".to_string(),
                    false,
                )
                .with_detail(err.to_string())
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
                Ok(Err(err)) => {
                    // The client's body failed (too large, stalled, broken): the client's
                    // doing, never the service's.
                    if let Some(client) = inbound::find(&err) {
                        return Err(ForwardError::from_inbound(
                            client,
                            route,
                            &service.upstream.name,
                        ));
                    }
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
                        format!("{what} service {}", service.upstream.name),
                        replayable,
                    )
                    .with_detail(format!(
                        "{}: {}",
                        instance.authority,
                        error_chain(&err)
                    ))
                }
                Err(_) if inbound.is_some_and(InboundState::waiting_on_client) => {
                    // The client, not the service, is what the request is waiting for.
                    return Err(ForwardError::new(
                        ForwardErrorKind::BodyStalled,
                        format!(
                            "request body not complete within the route's {} ms",
                            timeout.as_millis()
                        ),
                        route,
                        None,
                    ));
                }
                Err(_) => {
                    service.metrics.record(false, elapsed);
                    // No answer in time: the upstream may still be applying it.
                    return Err(fail(
                        ForwardErrorKind::Timeout,
                        format!(
                            "service {} did not answer within {} ms",
                            service.upstream.name,
                            timeout.as_millis()
                        ),
                        false,
                    )
                    .with_detail(instance.authority.to_string()));
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

/// One request as it goes upstream.
struct Outgoing<'a> {
    method: Method,
    headers: HeaderMap,
    body: UpstreamBody,
    path_and_query: &'a str,
    route: &'a str,
    service: &'a Service,
    timeout: Duration,
}

/// Carries bytes both ways between the client and the upstream once both switched
/// protocols; the service's in-flight slot is held until the tunnel closes.
async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, slot: Slot, route: String) {
    let (client, upstream) = match (client.await, upstream.await) {
        (Ok(client), Ok(upstream)) => (client, upstream),
        (Err(err), _) | (_, Err(err)) => {
            tracing::debug!(route, error = %err, "upgrade did not complete");
            return;
        }
    };
    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((up, down)) => tracing::debug!(route, up, down, "tunnel closed"),
        Err(err) => tracing::debug!(route, error = %err, "tunnel broke"),
    }
    drop(slot);
}

/// A path with a trailing slash that no route matches, but that one matches without it:
/// what the plan's `trailing_slash` says to do. `Err` holds the path to redirect to.
fn resolve_trailing_slash(
    table: &RouteTable,
    method: &Method,
    mut path: String,
) -> Result<String, String> {
    if path.len() < 2 || !path.ends_with('/') || table.find(method, &split(&path)).is_some() {
        return Ok(path);
    }
    let stripped = &path[..path.len() - 1];
    let Some((route, _)) = table.find(method, &split(stripped)) else {
        return Ok(path);
    };
    match table.matching.trailing_slash {
        TrailingSlash::Strict => {
            route.metrics.near_misses.fetch_add(1, Ordering::Relaxed);
            Ok(path)
        }
        TrailingSlash::Redirect => Err(stripped.to_string()),
        TrailingSlash::Ignore => {
            path.pop();
            Ok(path)
        }
    }
}

/// Counts an unmatched request that a route would match ignoring letter case.
fn count_case_near_miss(table: &RouteTable, method: &Method, path: &str, segments: &[&str]) {
    if table.matching.case_sensitive
        && path.bytes().any(|b| b.is_ascii_uppercase())
        && let Some((route, _)) = table.find_with(method, segments, false)
    {
        route.metrics.near_misses.fetch_add(1, Ordering::Relaxed);
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
    fn every_failure_is_charged_to_someone_and_client_faults_are_4xx() {
        use ForwardErrorKind::*;
        for kind in [
            BadHead,
            UnsupportedCoding,
            BadPath,
            Internal,
            UpgradeRefused,
            BodyTooLarge,
            BodyStalled,
            BadBody,
            Overloaded,
            Internal500,
            ConnectFailed,
            Timeout,
            UpstreamFailed,
        ] {
            let status = kind.status().as_u16();
            match kind.cause() {
                // 501 is the one 5xx a client earns: it asked for a coding nobody here
                // implements.
                Cause::Client => assert!(status < 500 || status == 501, "{kind:?}"),
                Cause::Proxy | Cause::Upstream => assert!(status >= 500, "{kind:?}"),
            }
        }
    }

    #[test]
    fn error_answers_name_route_and_service_and_overload_says_when_to_retry() {
        let error = ForwardError::new(
            ForwardErrorKind::Overloaded,
            "busy".into(),
            "students",
            Some("students-svc"),
        )
        .with_detail("127.0.0.1:7101".into());
        let response = error.into_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
