//! Respond & record: every answer passes here, whichever phase gave it. It counts the
//! answer under the route it got to (a failure by its cause, the latency under the side
//! that answered, or the route's own when none was chosen yet), marks an answer legacy gave
//! in the new service's place, and adds the request id and, when the plan says so, the
//! route and the service that answered.

use std::time::Instant;

use http::Response;
use http::header::HeaderValue;

use super::Answer;
use crate::forward::{
    ClientBody, FALLBACK_HEADER, REQUEST_ID_HEADER, ROUTE_HEADER, SERVED_BY_HEADER,
};
use crate::metrics::{RouteMetrics, Side};
use crate::routing::{RouteTable, Service, UNMATCHED};
use strangler_plan::Stage;

static UNMATCHED_HEADER: HeaderValue = HeaderValue::from_static(UNMATCHED);

/// How far a request got before it was answered: what it is counted under and the headers
/// that name where it went. Each phase that learns more makes it fuller.
#[derive(Debug, Clone, Copy)]
pub struct Trail<'t> {
    /// The matched route's counters, or those of unmatched requests.
    pub metrics: &'t RouteMetrics,
    /// The route's name as a header value.
    pub route: &'t HeaderValue,
    /// The side chosen to answer (`None`: answered before one was).
    pub side: Option<Side>,
    /// The name of the service of that side.
    pub served_by: Option<&'t HeaderValue>,
    /// Legacy answered because the new service failed (route `fallback = true`).
    pub fell_back: bool,
    /// A shadow leg got a copy of the exchange.
    pub mirrored: bool,
}

impl<'t> Trail<'t> {
    /// A request not (yet) routed: counted as `default`.
    pub fn unmatched(table: &'t RouteTable) -> Self {
        Self::routed(&table.unmatched, &UNMATCHED_HEADER)
    }

    /// A request routed to the route with these counters and name.
    pub fn routed(metrics: &'t RouteMetrics, route: &'t HeaderValue) -> Self {
        Self {
            metrics,
            route,
            side: None,
            served_by: None,
            fell_back: false,
            mirrored: false,
        }
    }

    /// The request goes to `service`, on `side`.
    pub fn sided(self, side: Side, service: &'t Service) -> Self {
        Self {
            side: Some(side),
            served_by: Some(&service.header),
            ..self
        }
    }

    /// Legacy (`legacy`) answered in the new service's place.
    pub fn fell_back(self, legacy: &'t Service) -> Self {
        Self {
            fell_back: true,
            ..self.sided(Side::Legacy, legacy)
        }
    }
}

/// Counts `answer` and adds the headers every answer carries.
pub fn record(
    answer: Answer,
    trail: Trail<'_>,
    started: Instant,
    request_id: &HeaderValue,
    served_by_headers: bool,
) -> Response<ClientBody> {
    let Answer {
        mut response,
        cause,
    } = answer;
    if let Some(cause) = cause {
        trail.metrics.failed(cause);
    }
    trail.metrics.record(
        trail.side,
        response.status().as_u16(),
        started.elapsed(),
        cause,
    );
    let headers = response.headers_mut();
    if trail.fell_back {
        headers.insert(FALLBACK_HEADER, HeaderValue::from_static("1"));
    }
    headers.insert(REQUEST_ID_HEADER, request_id.clone());
    if served_by_headers {
        headers.insert(ROUTE_HEADER, trail.route.clone());
        if let Some(v) = trail.served_by {
            headers.insert(SERVED_BY_HEADER, v.clone());
        }
    }
    response
}

/// The attributes of a request's span (`[telemetry]`): where `trail` says it went, and
/// the status it was answered with.
pub fn span_attributes(
    table: &RouteTable,
    trail: &Trail<'_>,
    status: u16,
) -> Vec<(&'static str, String)> {
    let route = trail.route.to_str().unwrap_or_default();
    let stage = table
        .route(route)
        .map_or(Stage::Legacy.name(), |r| r.stage.name());
    let mut attributes = vec![
        ("strangler.route", route.to_string()),
        ("strangler.stage", stage.to_string()),
        ("http.response.status_code", status.to_string()),
    ];
    if let Some(side) = trail.side {
        let side = match side {
            Side::Legacy => "legacy",
            Side::New => "new",
        };
        attributes.push(("strangler.side", side.to_string()));
    }
    if let Some(service) = trail.served_by.and_then(|v| v.to_str().ok()) {
        attributes.push(("strangler.service", service.to_string()));
    }
    let shadow = if trail.mirrored { "mirrored" } else { "none" };
    attributes.push(("strangler.shadow", shadow.to_string()));
    if trail.fell_back {
        attributes.push(("strangler.fallback", "true".to_string()));
    }
    attributes
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use bytes::Bytes;
    use http::StatusCode;
    use http_body_util::{Either, Full};

    use super::*;
    use crate::forward::{ForwardError, ForwardErrorKind};
    use crate::metrics::Cause;
    use crate::phase::testing::{ROUTES, table};
    use strangler_plan::Stage;

    fn served(status: u16) -> Answer {
        let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        Answer {
            response,
            cause: None,
        }
    }

    fn refused(kind: ForwardErrorKind) -> Answer {
        ForwardError::new(kind, "no".into(), "students", None).into()
    }

    fn load(counter: &std::sync::atomic::AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    const ID: HeaderValue = HeaderValue::from_static("req-1");

    #[test]
    fn an_answer_before_routing_counts_as_default_without_a_side() {
        let table = table("", ROUTES, Stage::Cutover);
        let trail = Trail::unmatched(&table);
        let response = record(
            refused(ForwardErrorKind::BadPath),
            trail,
            Instant::now(),
            &ID,
            true,
        );
        assert_eq!(response.status(), 400);
        assert_eq!(response.headers()[REQUEST_ID_HEADER], "req-1");
        assert_eq!(response.headers()[ROUTE_HEADER], "default");
        assert!(!response.headers().contains_key(SERVED_BY_HEADER));
        let m = &table.unmatched;
        assert_eq!(load(&m.requests), 1);
        assert_eq!(load(&m.failures[Cause::Client as usize]), 1);
        assert_eq!(load(&m.served_legacy) + load(&m.served_new), 0);
        assert_eq!(load(&m.errors), 0, "a client's fault is no error");

        // A redirect is counted, and is no failure.
        record(served(308), trail, Instant::now(), &ID, true);
        assert_eq!(load(&m.requests), 2);
        assert_eq!(load(&m.failures[Cause::Client as usize]), 1);
    }

    #[test]
    fn an_answer_after_the_side_is_counted_under_that_side() {
        let table = table("", ROUTES, Stage::Cutover);
        let route = table.route("students").unwrap();
        let trail = Trail::routed(&route.metrics, &route.header).sided(Side::New, &route.target);
        let response = record(
            refused(ForwardErrorKind::Overloaded),
            trail,
            Instant::now(),
            &ID,
            true,
        );
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[ROUTE_HEADER], "students");
        assert_eq!(response.headers()[SERVED_BY_HEADER], "new");
        assert!(!response.headers().contains_key(FALLBACK_HEADER));
        let m = &route.metrics;
        assert_eq!(load(&m.served_new), 1);
        assert_eq!(load(&m.failures[Cause::Proxy as usize]), 1);
        assert_eq!(load(&m.errors), 1);
        assert_eq!(
            load(&m.side_errors[Side::New as usize]),
            0,
            "shedding load is the proxy's doing, not the service's"
        );

        record(served(502), trail, Instant::now(), &ID, true);
        assert_eq!(load(&m.side_errors[Side::New as usize]), 1);
        assert_eq!(load(&m.failures[Cause::Proxy as usize]), 1);
    }

    #[test]
    fn a_fallback_is_marked_and_counted_under_legacy() {
        let table = table("", ROUTES, Stage::Cutover);
        let route = table.route("students").unwrap();
        let trail = Trail::routed(&route.metrics, &route.header)
            .sided(Side::New, &route.target)
            .fell_back(&table.legacy);
        let response = record(served(200), trail, Instant::now(), &ID, true);
        assert_eq!(response.headers()[FALLBACK_HEADER], "1");
        assert_eq!(response.headers()[SERVED_BY_HEADER], "legacy");
        assert_eq!(load(&route.metrics.served_legacy), 1);
        assert_eq!(load(&route.metrics.served_new), 0);
    }

    #[test]
    fn served_by_headers_only_when_the_plan_asks_but_the_request_id_always() {
        let table = table("", ROUTES, Stage::Cutover);
        let route = table.route("students").unwrap();
        let trail = Trail::routed(&route.metrics, &route.header).sided(Side::New, &route.target);
        let response = record(served(200), trail, Instant::now(), &ID, false);
        assert_eq!(response.headers()[REQUEST_ID_HEADER], "req-1");
        assert!(!response.headers().contains_key(ROUTE_HEADER));
        assert!(!response.headers().contains_key(SERVED_BY_HEADER));
    }
}
