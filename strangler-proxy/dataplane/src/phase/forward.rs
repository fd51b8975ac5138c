//! Forward: the request goes to the chosen side and its answer back to the client.
//!
//! First what must hold before anything is sent ([`prepare`]): a protocol switch only on a
//! route that allows it (403), a declared body within the plan's cap (413), the body read
//! whole first when the route asks (413, 408, 400: the client's), a slot among the
//! service's requests in flight (503 `overloaded`). A shadow leg given up on the way is
//! counted (`too_large`, `incomplete`). Then the headers are rewritten for the upstream, the
//! request sent with the route's timeout (retried once on the next instance when that is
//! safe), a body-less idempotent request the new service fails is asked of legacy instead
//! (route `fallback = true`), an upgraded connection is tunnelled both ways, and the
//! answer streams back to the client, teed for the shadow leg, which is spawned off the
//! client's path.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body, Incoming};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

use super::side::{Chosen, Mirror};
use super::{Answer, Step};
use crate::forward::{
    ForwardError, ForwardErrorKind, Forwarder, Streamed, UpstreamBody, strip_hop_by_hop,
};
use crate::headers::{self, Head, Peer};
use crate::inbound::{self, Inbound, InboundState};
use crate::metrics::{Cause, Side};
use crate::protocols::Clients;
use crate::routing::{self, RouteTable, Service, Slot};
use crate::shadow::{self, Captured, Leg, ResponseCapture, ResultSender, TeeBody, Unmirrored};
use crate::trace::Trace;
use crate::translate::AnswerBody;
use crate::upstream::Upstream;

/// The request as the forward phase takes it.
pub struct Exchange<'r, B> {
    pub parts: Parts,
    pub body: B,
    pub head: Head,
    pub peer: SocketAddr,
    /// The normalized path with the client's query.
    pub path_and_query: String,
    pub declared: Option<u64>,
    pub upgrade: Option<HeaderValue>,
    pub request_id: &'r HeaderValue,
    /// The request's trace (`[telemetry]`), for its shadow leg's span.
    pub trace: Option<&'r Trace>,
}

/// The answer, and whether legacy gave it in the new service's place.
pub struct Forwarded {
    pub answer: Answer,
    pub fell_back: bool,
    /// A shadow leg was started with a copy.
    pub mirrored: bool,
}

/// What the checks before sending granted.
pub struct Ready<B> {
    /// The client's body, capped and timed (its prefix read when the route buffers), with
    /// whether it is waiting on the client; `None`: no body.
    pub inbound: Option<(Inbound<B>, InboundState)>,
    /// The service's in-flight slot, held until the answer is passed on.
    pub slot: Slot,
    /// The client's end of a protocol switch.
    pub client_upgrade: Option<OnUpgrade>,
    /// The client's body as it sent it, when the request was translated for the new
    /// service (a shadow leg to legacy takes this one).
    pub untranslated: Option<Bytes>,
}

/// Sends the request to the chosen side and streams its answer back.
pub async fn forward<'t>(
    forwarder: &Forwarder,
    table: &'t RouteTable,
    mut chosen: Chosen<'t>,
    exchange: Exchange<'_, Incoming>,
) -> Forwarded {
    let Exchange {
        mut parts,
        body,
        head,
        peer,
        path_and_query,
        declared,
        upgrade,
        request_id,
        trace,
    } = exchange;
    let ready = match prepare(
        &forwarder.recorder,
        table,
        &mut chosen,
        &mut parts,
        body,
        upgrade.is_some(),
        declared,
    )
    .await
    {
        Step::Continue(ready) => ready,
        Step::Answer(answer) => {
            return Forwarded {
                answer,
                fell_back: false,
                mirrored: false,
            };
        }
    };
    let Ready {
        inbound,
        slot,
        client_upgrade,
        untranslated,
    } = ready;
    let Chosen {
        route,
        name,
        side,
        service,
        timeout,
        mirror,
    } = chosen;
    // The new service's answers are translated for the client (route `translate`).
    let translation = route
        .and_then(|r| r.translate.as_ref())
        .filter(|_| side == Side::New);

    headers::rewrite_request_headers(
        &mut parts.headers,
        &head,
        Peer {
            addr: peer,
            trusted: &table.trusted_proxies,
        },
        request_id,
    );
    if let Some(protocol) = &upgrade {
        parts.headers.insert(header::UPGRADE, protocol.clone());
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let has_body = inbound.is_some();
    let (inbound, inbound_state) = inbound.unzip();
    let mut request_capture = None;
    let body = match inbound {
        None => Either::Right(Empty::new()),
        Some(inbound) => match &mirror {
            // The body was translated: the leg gets it as the client sent it.
            Some(_) if untranslated.is_some() => {
                request_capture = untranslated.map(captured);
                Either::Left(TeeBody::passthrough(inbound))
            }
            Some(mirror) => {
                let (tee, rx) = TeeBody::capture(inbound, mirror.route.spec.shadow.max_body_bytes);
                request_capture = Some(rx);
                Either::Left(tee)
            }
            None => Either::Left(TeeBody::passthrough(inbound)),
        },
    };
    let mut shadow = mirror.map(|mirror| ShadowCopy {
        mirror,
        headers: parts.headers.clone(),
        request_body: request_capture,
    });
    let fallback = may_fall_back(
        side,
        has_body,
        upgrade.is_some(),
        &parts.method,
        route.is_some_and(|route| route.spec.fallback),
    );
    let fallback_headers = fallback.then(|| parts.headers.clone());
    let sent_at = Instant::now();
    let mut result = send(
        &forwarder.client,
        Outgoing {
            method: parts.method.clone(),
            headers: parts.headers,
            body,
            path_and_query: &path_and_query,
            route: name,
            service,
            timeout,
        },
        inbound_state.as_ref(),
    )
    .await
    .map(|r| (r, sent_at.elapsed(), slot));

    // The new service could not answer: ask legacy instead (route `fallback = true`).
    let mut fell_back = false;
    if let Some(headers) = fallback_headers {
        let failure = fallback_reason(
            result.as_ref().map(|(response, ..)| response.status()),
            &service.upstream.name,
        );
        let legacy_slot = failure
            .as_ref()
            .and_then(|_| table.legacy.in_flight.try_take());
        if let (Some(why), Some(legacy_slot)) = (failure, legacy_slot) {
            let sent_at = Instant::now();
            let retried = send(
                &forwarder.client,
                Outgoing {
                    method: parts.method.clone(),
                    headers,
                    body: Either::Right(Empty::new()),
                    path_and_query: &path_and_query,
                    route: name,
                    service: &table.legacy,
                    timeout,
                },
                None,
            )
            .await;
            if let Ok(response) = retried {
                tracing::warn!(route = name, reason = %why, "new service failed; answered by legacy");
                if let Some(copy) = shadow.take() {
                    copy.mirror
                        .give_up(&forwarder.recorder, Unmirrored::Incomplete);
                }
                fell_back = true;
                result = Ok((response, sent_at.elapsed(), legacy_slot));
            }
        }
    }

    let mut mirrored = false;
    let answer = match result {
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
                    tokio::spawn(tunnel(client_io, upstream_io, slot, name.to_string()));
                }
                None => {
                    tracing::warn!(route = name, "upstream switched protocols unasked")
                }
            }
            Answer {
                response: response.map(|_| Either::Right(Full::new(Bytes::new()))),
                cause: None,
            }
        }
        Ok((mut response, primary_elapsed, slot)) => {
            strip_hop_by_hop(response.headers_mut());
            let (mut head, body) = response.into_parts();
            let body = match translation.filter(|_| !fell_back) {
                None => Ok(AnswerBody::Stream(body)),
                Some(t) => {
                    t.answer(&mut head, body, table.max_body_bytes, timeout)
                        .await
                }
            };
            // The client's body, and the shadow leg's copy of it.
            let (client_body, primary_copy) = match (body, &shadow) {
                (Err(detail), _) => {
                    if let Some(copy) = shadow {
                        copy.mirror
                            .give_up(&forwarder.recorder, Unmirrored::Incomplete);
                    }
                    let name_of = &service.upstream.name;
                    let err = ForwardError::new(
                        ForwardErrorKind::UpstreamFailed,
                        format!("service {name_of} broke off an answer being translated"),
                        name,
                        Some(name_of),
                    )
                    .with_detail(detail);
                    return Forwarded {
                        answer: err.into(),
                        fell_back,
                        mirrored,
                    };
                }
                (Ok(AnswerBody::Whole(bytes)), copy) => (
                    Either::Right(Full::new(bytes.clone())),
                    copy.is_some().then(|| captured(bytes)),
                ),
                (Ok(AnswerBody::Stream(body)), Some(copy)) => {
                    let cap = copy.mirror.route.spec.shadow.max_body_bytes;
                    let (tee, body_rx) = TeeBody::capture(body, cap);
                    let streamed = Streamed {
                        body: tee,
                        _slot: Some(slot),
                        fill: None,
                    };
                    (Either::Left(streamed), Some(body_rx))
                }
                (Ok(AnswerBody::Stream(body)), None) => {
                    let streamed = Streamed {
                        body: TeeBody::passthrough(body),
                        _slot: Some(slot),
                        fill: None,
                    };
                    (Either::Left(streamed), None)
                }
            };
            if let (
                Some(ShadowCopy {
                    mirror:
                        Mirror {
                            route,
                            candidate,
                            permit,
                        },
                    headers,
                    request_body,
                }),
                Some(body_rx),
            ) = (shadow, primary_copy)
            {
                let leg = Leg {
                    route: route.spec.name.clone(),
                    rules: route.rules.clone(),
                    spec: route.spec.shadow.clone(),
                    method: parts.method.clone(),
                    path_and_query: path_and_query.clone(),
                    headers,
                    request_body,
                    primary: service.clone(),
                    candidate,
                    primary_answer: ResponseCapture {
                        status: head.status.as_u16(),
                        headers: head.headers.clone(),
                        body: body_rx,
                    },
                    primary_ms: primary_elapsed.as_secs_f64() * 1000.0,
                    request_id: request_id.to_str().unwrap_or_default().to_string(),
                    permit,
                    capture: route.capture.clone(),
                    primary_is_legacy: side == Side::Legacy,
                    trace: trace.filter(|t| t.sampled).map(Trace::leg),
                    // The candidate is the new service: its exchange is translated.
                    translate: route.translate.clone().filter(|_| side == Side::Legacy),
                };
                mirrored = true;
                tokio::spawn(shadow::run(
                    leg,
                    forwarder.shadow_client.clone(),
                    forwarder.recorder.clone(),
                    routing::roll(),
                ));
            }
            Answer {
                response: Response::from_parts(head, client_body),
                cause: None,
            }
        }
        Err(err) => {
            if let Some(copy) = shadow {
                copy.mirror
                    .give_up(&forwarder.recorder, Unmirrored::Incomplete);
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
            err.into()
        }
    };
    Forwarded {
        answer,
        fell_back,
        mirrored,
    }
}

/// A copy already complete (a body read whole), as a tee would deliver it.
fn captured(bytes: Bytes) -> oneshot::Receiver<Captured> {
    let (tx, rx) = oneshot::channel();
    let _ = tx.send(Captured::Complete(bytes));
    rx
}

/// What a shadow leg takes from the request: its grant, the headers as the primary got
/// them, and the tee's copy of the body.
struct ShadowCopy<'t> {
    mirror: Mirror<'t>,
    headers: HeaderMap,
    request_body: Option<oneshot::Receiver<Captured>>,
}

/// The checks before anything is sent: a protocol switch the route allows, a body within
/// the cap (read whole first when the route asks), a slot among the service's requests in
/// flight. A refusal gives the shadow leg up.
pub async fn prepare<B>(
    recorder: &ResultSender,
    table: &RouteTable,
    chosen: &mut Chosen<'_>,
    parts: &mut Parts,
    body: B,
    upgrade: bool,
    declared: Option<u64>,
) -> Step<Ready<B>>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if upgrade && chosen.route.is_some_and(|route| !route.spec.upgrades) {
        return ForwardError::new(
            ForwardErrorKind::UpgradeRefused,
            format!("route {} does not allow switching protocols", chosen.name),
            chosen.name,
            None,
        )
        .into();
    }
    let client_upgrade = if upgrade {
        parts.extensions.remove::<OnUpgrade>()
    } else {
        None
    };
    if declared.is_some_and(|n| n > table.max_body_bytes) {
        if let Some(mirror) = chosen.mirror.take() {
            mirror.give_up(recorder, Unmirrored::TooLarge);
        }
        return ForwardError::new(
            ForwardErrorKind::BodyTooLarge,
            format!("request body over {} bytes", table.max_body_bytes),
            chosen.name,
            None,
        )
        .into();
    }
    // The client's body, capped and timed; read whole first when the route asks.
    let mut inbound = None;
    if !body.is_end_stream() {
        let (mut body, state) = Inbound::new(body, table.max_body_bytes, table.body_read_timeout);
        if let Some(limit) = chosen.route.and_then(|route| route.spec.buffer_body_up_to)
            && let Err(err) = body.buffer(limit).await
        {
            if let Some(mirror) = chosen.mirror.take() {
                mirror.give_up(recorder, Unmirrored::Incomplete);
            }
            return ForwardError::from_inbound(&err, chosen.name, &chosen.service.upstream.name)
                .into();
        }
        inbound = Some((body, state));
    }
    // The new service's request, in its contract (route `translate`).
    let mut untranslated = None;
    if let Some(t) = chosen
        .route
        .and_then(|route| route.translate.as_ref())
        .filter(|t| chosen.side == Side::New && !t.spec.request.is_empty())
        && let Some((body, _)) = &mut inbound
    {
        match body.take_whole(table.max_body_bytes).await {
            Err(err) => {
                if let Some(mirror) = chosen.mirror.take() {
                    mirror.give_up(recorder, Unmirrored::Incomplete);
                }
                let service = &chosen.service.upstream.name;
                return ForwardError::from_inbound(&err, chosen.name, service).into();
            }
            Ok(None) => {}
            Ok(Some(whole)) => match t.request(&parts.headers, &whole) {
                Some(edited) => {
                    parts.headers.remove(header::TRANSFER_ENCODING);
                    parts
                        .headers
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(edited.len()));
                    body.put_back(edited);
                    untranslated = Some(whole);
                }
                None => body.put_back(whole),
            },
        }
    }
    // A slot among the service's requests in flight, held until its answer is passed on.
    let Some(slot) = chosen.service.in_flight.try_take() else {
        chosen
            .service
            .metrics
            .overloaded
            .fetch_add(1, Ordering::Relaxed);
        if let Some(mirror) = chosen.mirror.take() {
            mirror.give_up(recorder, Unmirrored::Incomplete);
        }
        let name = &chosen.service.upstream.name;
        return ForwardError::new(
            ForwardErrorKind::Overloaded,
            format!("service {name} has too many requests in flight; retry shortly"),
            chosen.name,
            Some(name),
        )
        .into();
    };
    Step::Continue(Ready {
        inbound,
        slot,
        client_upgrade,
        untranslated,
    })
}

/// Whether legacy may answer if the new service fails: a body-less idempotent request, not
/// a protocol switch, to the new side of a route with `fallback = true` (only such a request
/// can be sent twice without applying anything twice).
fn may_fall_back(
    side: Side,
    has_body: bool,
    upgrade: bool,
    method: &Method,
    route_allows: bool,
) -> bool {
    side == Side::New && !has_body && !upgrade && is_idempotent(method) && route_allows
}

/// Why the new service's outcome (its answer's status, or the failure) calls for legacy:
/// a connection that failed before anything could be applied, or a 502/503 answer.
fn fallback_reason(outcome: Result<StatusCode, &ForwardError>, service: &str) -> Option<String> {
    match outcome {
        Err(err)
            if err.retry_safe
                && matches!(
                    err.kind,
                    ForwardErrorKind::ConnectFailed | ForwardErrorKind::UpstreamFailed
                ) =>
        {
            Some(err.message.clone())
        }
        Ok(status) if matches!(status.as_u16(), 502 | 503) => {
            Some(format!("{service} answered {status}"))
        }
        _ => None,
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

/// Sends the request to an instance of `service`; an idempotent request without a body
/// is tried once more (on the next instance) when the first attempt fails to connect or
/// its reused connection breaks.
async fn send(
    client: &Clients<UpstreamBody>,
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
        let outcome =
            tokio::time::timeout(timeout, client.request(service.upstream.protocol, request)).await;
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use http_body_util::BodyExt;

    use super::*;
    use crate::phase::testing::{chosen, parts, table};
    use crate::shadow::{Outcome, ResultReceiver, results_channel};
    use strangler_plan::Stage;

    const ROUTES: &str = r#"
        [[routes]]
        name = "students"
        paths = ["/students/{id}"]
        service = "new"
        [[routes]]
        name = "chat"
        paths = ["/chat"]
        service = "new"
        upgrades = false
        [[routes]]
        name = "uploads"
        paths = ["/uploads"]
        service = "new"
        buffer_body_up_to = "1KiB"
    "#;
    /// The plan's body cap in these tests.
    const CAP: &str = r#"max_body = "16B""#;

    /// Runs `prepare` for a request with `headers` and `body`; the status and cause of an
    /// answer, or what it granted.
    async fn prepared<B>(
        recorder: &ResultSender,
        table: &RouteTable,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: B,
    ) -> Result<Ready<B>, (StatusCode, Option<Cause>, HeaderMap)>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut parts = parts(method, uri, headers);
        let mut chosen = chosen(recorder, table, &parts);
        let upgrade = headers::wants_upgrade(&parts.headers);
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        match prepare(
            recorder,
            table,
            &mut chosen,
            &mut parts,
            body,
            upgrade,
            declared,
        )
        .await
        {
            Step::Continue(ready) => Ok(ready),
            Step::Answer(answer) => Err((
                answer.response.status(),
                answer.cause,
                answer.response.headers().clone(),
            )),
        }
    }

    /// Reasons counted for requests not mirrored, so far.
    fn unmirrored(results: &mut ResultReceiver) -> Vec<Unmirrored> {
        let mut reasons = Vec::new();
        while let Ok((_, outcome)) = results.rx.try_recv() {
            match outcome {
                Outcome::Unmirrored(reason) => reasons.push(reason),
                other => panic!("{other:?}"),
            }
        }
        reasons
    }

    const UPGRADE: [(&str, &str); 2] = [("connection", "upgrade"), ("upgrade", "websocket")];

    #[tokio::test]
    async fn a_protocol_switch_is_refused_only_where_the_route_refuses_it() {
        let (recorder, _results) = results_channel(HashMap::new());
        let table = table("", ROUTES, Stage::Cutover);
        let refused = prepared(
            &recorder,
            &table,
            Method::GET,
            "/chat",
            &UPGRADE,
            Empty::new(),
        )
        .await
        .err()
        .map(|(status, cause, _)| (status, cause));
        assert_eq!(refused, Some((StatusCode::FORBIDDEN, Some(Cause::Client))));
        for uri in ["/students/7", "/elsewhere"] {
            let ready = prepared(&recorder, &table, Method::GET, uri, &UPGRADE, Empty::new()).await;
            assert!(ready.is_ok(), "{uri}");
        }
        assert_eq!(
            table.route("chat").unwrap().target.in_flight.taken(),
            0,
            "a refusal holds no slot"
        );
    }

    #[tokio::test]
    async fn a_declared_body_over_the_cap_is_refused_and_its_shadow_leg_given_up() {
        let (recorder, mut results) = results_channel(HashMap::new());
        let table = table(CAP, ROUTES, Stage::Shadow);
        let body = Full::new(Bytes::from_static(b"seventeen bytes!!"));
        let answer = prepared(
            &recorder,
            &table,
            Method::GET,
            "/students/7",
            &[("content-length", "17")],
            body,
        )
        .await
        .err()
        .map(|(status, cause, _)| (status, cause));
        assert_eq!(
            answer,
            Some((StatusCode::PAYLOAD_TOO_LARGE, Some(Cause::Client)))
        );
        assert_eq!(unmirrored(&mut results), [Unmirrored::TooLarge]);
        assert_eq!(table.legacy.in_flight.taken(), 0);
    }

    #[tokio::test]
    async fn a_buffered_body_over_the_cap_is_the_clients_fault() {
        let (recorder, mut results) = results_channel(HashMap::new());
        let table = table(CAP, ROUTES, Stage::Shadow);
        // No length declared: only reading the body finds it too large.
        let body = Full::new(Bytes::from_static(b"seventeen bytes!!"));
        let answer = prepared(&recorder, &table, Method::GET, "/uploads", &[], body)
            .await
            .err()
            .map(|(status, cause, _)| (status, cause));
        assert_eq!(
            answer,
            Some((StatusCode::PAYLOAD_TOO_LARGE, Some(Cause::Client)))
        );
        assert_eq!(unmirrored(&mut results), [Unmirrored::Incomplete]);
    }

    #[tokio::test]
    async fn a_buffered_body_within_the_cap_is_replayed_whole() {
        let (recorder, _results) = results_channel(HashMap::new());
        let table = table(CAP, ROUTES, Stage::Cutover);
        let body = Full::new(Bytes::from_static(b"small"));
        let Ok(ready) = prepared(&recorder, &table, Method::POST, "/uploads", &[], body).await
        else {
            panic!("refused")
        };
        let (inbound, state) = ready.inbound.unwrap();
        assert!(!state.waiting_on_client());
        let bytes = inbound.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"small");
    }

    #[tokio::test]
    async fn a_full_service_answers_overloaded_and_gives_the_shadow_leg_up() {
        let (recorder, mut results) = results_channel(HashMap::new());
        let table = table("", ROUTES, Stage::Shadow);
        let held: Vec<Slot> = std::iter::from_fn(|| table.legacy.in_flight.try_take()).collect();
        assert_eq!(held.len(), strangler_plan::DEFAULT_MAX_IN_FLIGHT);
        let answer = prepared(
            &recorder,
            &table,
            Method::GET,
            "/students/7",
            &[],
            Empty::new(),
        )
        .await
        .err();
        let (status, cause, headers) = answer.unwrap();
        assert_eq!(
            (status, cause),
            (StatusCode::SERVICE_UNAVAILABLE, Some(Cause::Proxy))
        );
        assert_eq!(headers[header::RETRY_AFTER], "1");
        assert_eq!(table.legacy.metrics.overloaded.load(Ordering::Relaxed), 1);
        assert_eq!(unmirrored(&mut results), [Unmirrored::Incomplete]);
        drop(held);
        assert_eq!(table.legacy.in_flight.taken(), 0);
    }

    #[tokio::test]
    async fn passes_on_the_body_if_any_and_a_slot_held_until_dropped() {
        let (recorder, _results) = results_channel(HashMap::new());
        let table = table("", ROUTES, Stage::Cutover);
        let target = &table.route("students").unwrap().target;
        let empty = prepared(
            &recorder,
            &table,
            Method::GET,
            "/students/7",
            &[],
            Empty::new(),
        )
        .await
        .ok()
        .unwrap();
        assert!(empty.inbound.is_none());
        assert!(empty.client_upgrade.is_none());
        assert_eq!(target.in_flight.taken(), 1);
        let body = Full::new(Bytes::from_static(b"{}"));
        let with_body = prepared(&recorder, &table, Method::PUT, "/students/7", &[], body)
            .await
            .ok()
            .unwrap();
        assert!(with_body.inbound.is_some());
        assert_eq!(target.in_flight.taken(), 2);
        drop((empty, with_body));
        assert_eq!(target.in_flight.taken(), 0);
    }

    #[test]
    fn only_a_bodyless_idempotent_request_to_the_new_side_may_fall_back() {
        let may = |side, has_body, upgrade, method: Method, allows| {
            may_fall_back(side, has_body, upgrade, &method, allows)
        };
        assert!(may(Side::New, false, false, Method::GET, true));
        assert!(may(Side::New, false, false, Method::DELETE, true));
        assert!(
            !may(Side::New, false, false, Method::GET, false),
            "route says no"
        );
        assert!(
            !may(Side::Legacy, false, false, Method::GET, true),
            "legacy already"
        );
        assert!(!may(Side::New, true, false, Method::PUT, true), "a body");
        assert!(
            !may(Side::New, false, true, Method::GET, true),
            "an upgrade"
        );
        assert!(
            !may(Side::New, false, false, Method::POST, true),
            "not idempotent"
        );
    }

    #[test]
    fn legacy_is_asked_after_a_failure_before_anything_applied_or_a_502_or_503() {
        let failed = |kind, retry_safe| ForwardError {
            retry_safe,
            ..ForwardError::new(kind, "cannot connect".into(), "students", Some("new"))
        };
        let reason = |outcome: Result<u16, &ForwardError>| {
            fallback_reason(
                outcome.map(|status| StatusCode::from_u16(status).unwrap()),
                "new",
            )
        };
        let connect = failed(ForwardErrorKind::ConnectFailed, true);
        assert_eq!(reason(Err(&connect)).as_deref(), Some("cannot connect"));
        let broke = failed(ForwardErrorKind::UpstreamFailed, true);
        assert!(reason(Err(&broke)).is_some());
        let unsafe_retry = failed(ForwardErrorKind::UpstreamFailed, false);
        assert_eq!(reason(Err(&unsafe_retry)), None);
        let timeout = failed(ForwardErrorKind::Timeout, true);
        assert_eq!(reason(Err(&timeout)), None, "it may still be applying it");
        assert_eq!(
            reason(Ok(503)).as_deref(),
            Some("new answered 503 Service Unavailable")
        );
        assert!(reason(Ok(502)).is_some());
        for status in [200, 404, 500, 504] {
            assert_eq!(reason(Ok(status)), None, "{status}");
        }
    }
}
