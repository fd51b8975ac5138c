//! The forwarding half of a proxy: [`Forwarder`] (the route table it serves, its upstream
//! clients, the shadow results' channel) and [`Forwarder::handle`], which runs a request
//! through the phases of [`crate::phase`] and records whatever answered. Reads the route
//! table without a lock (one atomic load), never touches the store.
//!
//! Every answer the proxy gives itself is a [`ForwardError`] that says who caused it
//! ([`Cause`]): a client's bad head, path or body is never charged to a service.

use crate::pressure::Governor;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use serde_json::json;

use crate::inbound::{Inbound, InboundError};
use crate::metrics::Cause;
use crate::phase::accept::{self, Accepted};
use crate::phase::admit::{self, Admitted};
use crate::phase::forward::{self, Exchange};
use crate::phase::record::{self, Trail};
use crate::phase::{Answer, Step, route, side};
use crate::phase::{aggregate, cache};
use crate::protocols::Clients;
use crate::routing::{RouteTable, Slot};
use crate::shadow::{ResultSender, TeeBody};
use crate::trace::{SpanSink, Trace};

pub use crate::headers::{REQUEST_ID_HEADER, rewrite_request_headers, strip_hop_by_hop};
pub use crate::phase::accept::is_internal;

/// Body sent upstream: the client's, capped and timed (and teed for a shadow leg), or
/// nothing.
pub type UpstreamBody = Either<TeeBody<Inbound<Incoming>>, Empty<Bytes>>;
/// Body sent to the client: the upstream's, streamed (and teed for a shadow leg), or the
/// proxy's own.
pub type ClientBody = Either<Streamed, Full<Bytes>>;

pub const ROUTE_HEADER: HeaderName = HeaderName::from_static("x-strangler-route");
pub const SERVED_BY_HEADER: HeaderName = HeaderName::from_static("x-strangler-served-by");
/// Set on an answer legacy gave because the new service failed (route `fallback = true`).
pub const FALLBACK_HEADER: HeaderName = HeaderName::from_static("x-strangler-fallback");
/// Longest client-supplied request id that is kept.
const MAX_REQUEST_ID: usize = 200;

/// The upstream's answer on its way to the client, holding the service's in-flight slot
/// until the last byte is passed on (or the client goes away).
pub struct Streamed {
    pub(crate) body: TeeBody<Incoming>,
    pub(crate) _slot: Option<Slot>,
    /// The response cache's copy, being collected (`None`: not stored). Boxed, so an
    /// answer no cache stores carries one pointer for it.
    pub(crate) fill: Option<Box<crate::cache::Fill>>,
}

impl Streamed {
    /// Hands what the body gave to the cache's fill: stored when the body ended whole,
    /// given up on an error, trailers or an answer over the cap.
    fn collect(&mut self, polled: &Poll<Option<Result<Frame<Bytes>, hyper::Error>>>) {
        let whole = match polled {
            Poll::Pending => return,
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(frame))) => {
                let kept = match (frame.data_ref(), self.fill.as_mut()) {
                    (Some(data), Some(fill)) => fill.push(data),
                    _ => false,
                };
                if !kept {
                    self.fill = None;
                    return;
                }
                self.body.is_end_stream()
            }
            Poll::Ready(Some(Err(_))) => {
                self.fill = None;
                return;
            }
        };
        if whole && let Some(fill) = self.fill.take() {
            fill.finish();
        }
    }
}

impl Body for Streamed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if self.fill.is_some() {
            self.collect(&polled);
        }
        polled
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

    pub(crate) fn with_detail(self, detail: String) -> Self {
        Self {
            detail: Some(detail),
            ..self
        }
    }

    /// The client's body failed: too large, stalled or broken (on its way to `service`).
    pub(crate) fn from_inbound(err: &InboundError, route: &str, service: &str) -> Self {
        let kind = match err {
            InboundError::TooLarge { .. } => ForwardErrorKind::BodyTooLarge,
            InboundError::Stalled { .. } => ForwardErrorKind::BodyStalled,
            InboundError::Broken(_) => ForwardErrorKind::BadBody,
        };
        Self::new(kind, err.to_string(), route, Some(service))
    }

    pub(crate) fn into_response(self) -> Response<ClientBody> {
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
    /// The upstream clients, one per protocol.
    pub(crate) client: Clients<UpstreamBody>,
    /// Clients of the shadow legs (their bodies are buffered copies).
    pub(crate) shadow_client: Clients<Full<Bytes>>,
    /// Where shadow results go.
    pub(crate) recorder: ResultSender,
    /// Whether this thread has time for shadow legs.
    pub(crate) governor: Arc<Governor>,
    /// Where request spans go (`[telemetry]`; `None`: no trace header is read or written).
    spans: Option<SpanSink>,
    /// Prefix of generated request ids (unique per proxy process).
    id_prefix: String,
    next_id: AtomicU64,
    /// Where this proxy's listener is reached, for the parts of an aggregate.
    own_address: Option<SocketAddr>,
}

impl Forwarder {
    /// A forwarder for data-plane worker `worker` of proxy `proxy_id` (both go into the
    /// request ids it makes, so they are unique across workers), admitting shadow legs as
    /// `governor` (its thread's) says, trusting for `h2` services what `upstream_tls` trusts.
    pub fn new(
        table: Arc<ArcSwap<RouteTable>>,
        proxy_id: &str,
        worker: usize,
        recorder: ResultSender,
        governor: Arc<Governor>,
        upstream_tls: &Arc<rustls::ClientConfig>,
    ) -> Self {
        Self {
            table,
            client: Clients::new(upstream_tls),
            shadow_client: Clients::new(upstream_tls),
            recorder,
            governor,
            spans: None,
            id_prefix: format!(
                "{}{worker}",
                proxy_id
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .take(8)
                    .collect::<String>()
            ),
            next_id: AtomicU64::new(1),
            own_address: None,
        }
    }

    /// Continues or starts a trace per request and exports its span to `spans`.
    pub fn with_spans(self, spans: Option<SpanSink>) -> Self {
        Self { spans, ..self }
    }

    /// This forwarder's proxy listens on `listen` (aggregates ask their parts there).
    pub fn with_own_address(mut self, listen: SocketAddr) -> Self {
        self.own_address = Some(aggregate::own_address(listen));
        self
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
    ///
    /// Runs the phases of [`crate::phase`] in order; whichever answers, the answer goes
    /// through the record phase.
    pub async fn handle(
        self: Arc<Self>,
        peer: SocketAddr,
        request: Request<Incoming>,
    ) -> Result<Response<ClientBody>, Infallible> {
        let started = Instant::now();
        let table = self.table.load_full();
        let (mut parts, body) = request.into_parts();
        let request_id = self.request_id(&parts.headers);
        let trace = self.spans.as_ref().map(|s| s.begin(&mut parts.headers));
        let (answer, trail) = self
            .phases(&table, peer, parts, body, &request_id, trace.as_ref())
            .await;
        let response = record::record(answer, trail, started, &request_id, table.served_by_headers);
        if let Some(trace) = trace {
            trace.finish(record::span_attributes(
                &table,
                &trail,
                response.status().as_u16(),
            ));
        }
        Ok(response)
    }

    /// Accept, route, admit, cache, side, forward: the answer of the first phase that
    /// answers, with how far the request got.
    async fn phases<'t>(
        &self,
        table: &'t RouteTable,
        peer: SocketAddr,
        mut parts: Parts,
        body: Incoming,
        request_id: &HeaderValue,
        trace: Option<&Trace>,
    ) -> (Answer, Trail<'t>) {
        /// The state a phase continued with, or the answer it gave with the trail so far.
        macro_rules! next {
            ($step:expr, $trail:expr) => {
                match $step {
                    Step::Continue(state) => state,
                    Step::Answer(answer) => return (answer, $trail),
                }
            };
        }
        // Accept & normalize.
        let trail = Trail::unmatched(table);
        let Accepted {
            head,
            mut path,
            declared,
            upgrade,
        } = next!(accept::accept(&parts), trail);
        // An aggregate: its parts are asked of this proxy, each a request of its own.
        if let Some(aggregate) = aggregate::find(table, &parts.method, &path) {
            let trail = Trail::routed(&aggregate.metrics, &aggregate.header);
            let answer = aggregate::answer(
                self.client.http1(),
                self.own_address,
                aggregate,
                &parts,
                &path,
                request_id,
            )
            .await;
            return (answer, trail);
        }
        // Match the route.
        let matched = next!(
            route::route(table, &parts.method, &mut path, parts.uri.query()),
            trail
        );
        let trail = matched.trail(table);
        // Admit (authentication, rate limits), then the cache.
        let Admitted = next!(
            admit::admit(table, matched.route(), peer, &mut parts),
            trail
        );
        let lookup = next!(cache::lookup(table, &matched, &parts), trail);
        // Choose the side, and whether a shadow leg gets a copy.
        let chosen = side::choose(
            &self.recorder,
            &self.governor,
            table,
            &matched,
            &parts,
            upgrade.is_some(),
            declared,
            lookup.side(),
        );
        let trail = trail.sided(chosen.side, chosen.service);
        // What storing a miss needs of the request (its varied headers are read then).
        let stored = matches!(lookup, cache::Lookup::Miss { store: true, .. }).then(|| {
            (
                parts.headers.clone(),
                chosen.route.and_then(|r| r.spec.cache).map(|c| c.ttl),
            )
        });
        drop(matched);
        // Forward.
        let path_and_query = match parts.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let mut forwarded = forward::forward(
            self,
            table,
            chosen,
            Exchange {
                parts,
                body,
                head,
                peer,
                path_and_query,
                declared,
                upgrade,
                request_id,
                trace,
            },
        )
        .await;
        let mut trail = if forwarded.fell_back {
            trail.fell_back(&table.legacy)
        } else {
            trail
        };
        trail.mirrored = forwarded.mirrored;
        // A cached route's answer is marked, and a miss stored on its way back (never one
        // legacy gave in the new service's place: its key names the new side).
        if !matches!(lookup, cache::Lookup::Uncached) {
            let lookup = if forwarded.fell_back {
                cache::Lookup::Bypass
            } else {
                lookup
            };
            cache::store(table, lookup, stored, &mut forwarded.answer.response);
        }
        (forwarded.answer, trail)
    }
}

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
