//! Cache lookup: whether the answer can come from the proxy's response cache
//! ([`crate::cache`]) instead of a service, for a route with a `cache` section.
//!
//! It runs after admission (a cached answer is only for a client that may have it) and
//! before a side is chosen (a hit reaches no service and no shadow leg). Because an entry
//! belongs to the side that made it, the lookup chooses the side itself and hands it on in
//! [`Lookup::Miss`], so the request goes where the key says. A hit is answered here
//! ([`Step::Answer`], `cause: None`: a served request, counted under the route with no side
//! and in its `cache_hits`); a miss is stored on its way back ([`store`]). A route without a
//! `cache` section costs one branch.

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Response};
use http_body_util::Either;
use std::sync::atomic::Ordering;

use super::route::Matched;
use super::{Answer, Step};
use crate::cache::{CACHE_HEADER, Key};
use crate::forward::ClientBody;
use crate::metrics::Side;
use crate::routing::{RouteTable, choose_side};

/// What the lookup found.
pub enum Lookup {
    /// The route caches nothing (or the request matched no route).
    Uncached,
    /// The route caches, but not this request (a method other than GET/HEAD, or
    /// credentials on a route that does not cache authenticated answers).
    Bypass,
    /// Nothing stored: the request goes to `side`, its answer is stored under `key` (when
    /// `store`: a GET).
    Miss { key: Key, side: Side, store: bool },
}

impl Lookup {
    /// The side the lookup chose, which the request must go to.
    pub fn side(&self) -> Option<Side> {
        match self {
            Lookup::Miss { side, .. } => Some(*side),
            _ => None,
        }
    }
}

static HIT: HeaderValue = HeaderValue::from_static("hit");
static MISS: HeaderValue = HeaderValue::from_static("miss");
static BYPASS: HeaderValue = HeaderValue::from_static("bypass");

/// Looks the request up for the route it matched.
pub fn lookup(table: &RouteTable, matched: &Matched<'_, '_>, parts: &Parts) -> Step<Lookup> {
    let (Some(cache), Some((route, template))) = (&table.cache, matched.found) else {
        return Step::Continue(Lookup::Uncached);
    };
    let Some(policy) = route.spec.cache else {
        return Step::Continue(Lookup::Uncached);
    };
    let credentials = parts.headers.contains_key(header::AUTHORIZATION)
        || parts.headers.contains_key(header::COOKIE);
    if !matches!(parts.method, Method::GET | Method::HEAD) || (credentials && !policy.authenticated)
    {
        return Step::Continue(Lookup::Bypass);
    }
    let side = choose_side(route, template, &matched.segments, &parts.headers);
    // The normalized path (its segments joined again) with the client's query.
    let mut target = format!("/{}", matched.segments.join("/"));
    if let Some(query) = parts.uri.query() {
        target.push('?');
        target.push_str(query);
    }
    let key = Key::new(&route.spec.name, side, &target);
    match cache.lookup(&key, &parts.headers) {
        Some(mut response) => {
            route.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
            response.headers_mut().insert(CACHE_HEADER, HIT.clone());
            Step::Answer(Answer {
                response,
                cause: None,
            })
        }
        None => Step::Continue(Lookup::Miss {
            key,
            side,
            store: parts.method == Method::GET,
        }),
    }
}

/// On the way back: marks the answer of a cached route (`miss` or `bypass`) and, for a miss
/// the upstream allows storing, collects its body to store it once it ended whole; `stored`
/// is what that needs of the request: its headers and the route's ttl.
pub fn store(
    table: &RouteTable,
    lookup: Lookup,
    stored: Option<(http::HeaderMap, Option<std::time::Duration>)>,
    response: &mut Response<ClientBody>,
) {
    let mark = match lookup {
        Lookup::Uncached => return,
        Lookup::Bypass => &BYPASS,
        Lookup::Miss { key, store, .. } => {
            if let (true, Some(cache), Some((request_headers, Some(ttl)))) =
                (store, &table.cache, stored)
                && matches!(response.body(), Either::Left(_))
            {
                let fill = cache.fill(
                    key,
                    &request_headers,
                    response.status(),
                    response.headers(),
                    ttl,
                );
                if let Either::Left(streamed) = response.body_mut() {
                    streamed.fill = fill.map(Box::new);
                }
            }
            &MISS
        }
    };
    response.headers_mut().insert(CACHE_HEADER, mark.clone());
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;
    use crate::phase::route;
    use crate::phase::testing::{ROUTES, parts, table};
    use strangler_plan::Stage;

    fn looked_up(table: &RouteTable, request: &Parts) -> &'static str {
        let mut path = request.uri.path().to_string();
        let Step::Continue(matched) = route::route(table, &request.method, &mut path, None) else {
            panic!("redirected")
        };
        match lookup(table, &matched, request) {
            Step::Answer(_) => "hit",
            Step::Continue(Lookup::Uncached) => "uncached",
            Step::Continue(Lookup::Bypass) => "bypass",
            Step::Continue(Lookup::Miss { store: true, .. }) => "miss",
            Step::Continue(Lookup::Miss { store: false, .. }) => "miss, not stored",
        }
    }

    #[test]
    fn only_cached_routes_look_up_and_credentials_bypass() {
        let routes = ROUTES.replace(
            "service = \"new\"\n        [[routes]]",
            "service = \"new\"\n        cache = {}\n        [[routes]]",
        );
        let cached = table("", &routes, Stage::Legacy);
        for (method, path, headers, expected) in [
            (Method::GET, "/search", vec![], "uncached"),
            (Method::GET, "/nowhere", vec![], "uncached"),
            (Method::GET, "/students/1", vec![], "miss"),
            (Method::HEAD, "/students/1", vec![], "miss, not stored"),
            (Method::POST, "/students", vec![], "bypass"),
            (
                Method::GET,
                "/students/1",
                vec![("authorization", "Bearer x")],
                "bypass",
            ),
            (
                Method::GET,
                "/students/1",
                vec![("cookie", "session=1")],
                "bypass",
            ),
        ] {
            let request = parts(method.clone(), path, &headers);
            assert_eq!(
                looked_up(&cached, &request),
                expected,
                "{method} {path} {headers:?}"
            );
        }
        let no_cache = table("", ROUTES, Stage::Legacy);
        let request = parts(Method::GET, "/search", &[]);
        assert_eq!(looked_up(&no_cache, &request), "uncached");
    }
}
