//! Admit: whether the client may make this request at all: the route's [`crate::edge`]
//! policies, JWT authentication (401, or 503 while a JWKS has not been fetched) and its
//! rate limit (429).
//!
//! It runs after the route is known (a policy is per route, read from the plan's `[edge]`
//! section and the route's `public` and `rate_limit`) and before a side is chosen, so a
//! refusal never reaches a service or a shadow leg and is counted under the route with no
//! side. A route no policy applies to has no [`crate::edge::Admission`] and costs one branch.
//! An admitted request carries its token's claims as the plan's headers, the client's own
//! copies of those headers removed.

use std::net::SocketAddr;

use http::request::Parts;

use super::Step;
use crate::routing::{ActiveRoute, RouteTable};

/// What admission learned about the request (what it forwards is in its headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted;

/// Admits the request from `peer` to `route` (`None`: unmatched, under the `[edge]`
/// defaults of `table`), or answers it.
#[inline]
pub fn admit(
    table: &RouteTable,
    route: Option<&ActiveRoute>,
    peer: SocketAddr,
    parts: &mut Parts,
) -> Step<Admitted> {
    let admission = match route {
        Some(route) => route.admission.as_deref(),
        None => table.admission.as_deref(),
    };
    let Some(admission) = admission else {
        return Step::Continue(Admitted);
    };
    admission.check(peer, parts)
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;
    use crate::phase::testing::{ROUTES, parts, table};
    use strangler_plan::Stage;

    const PEER: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9);

    #[test]
    fn every_request_is_admitted_while_no_policy_exists() {
        let table = table("", ROUTES, Stage::Cutover);
        let routes = [table.route("students"), table.route("search"), None];
        for route in routes {
            for method in [Method::GET, Method::POST, Method::DELETE] {
                let mut request = parts(method, "/students/7", &[("authorization", "Bearer x")]);
                let step = admit(&table, route, PEER, &mut request);
                assert!(matches!(step, Step::Continue(Admitted)));
                assert_eq!(request.headers["authorization"], "Bearer x");
            }
        }
    }

    #[test]
    fn over_the_rate_is_429_with_the_headers_and_routes_count_apart() {
        let table = table(
            "[edge.rate_limit]\nrate = \"1/m\"\nburst = 2\n",
            ROUTES,
            Stage::Legacy,
        );
        let route = table.route("students");
        let mut request = parts(Method::GET, "/students/7", &[]);
        for _ in 0..2 {
            assert!(matches!(
                admit(&table, route, PEER, &mut request),
                Step::Continue(_)
            ));
        }
        let Step::Answer(answer) = admit(&table, route, PEER, &mut request) else {
            panic!("admitted over the rate")
        };
        let headers = answer.response.headers();
        assert_eq!(answer.response.status(), 429);
        assert_eq!(headers["ratelimit-policy"], "\"students\";q=2;w=120");
        assert!(
            headers["ratelimit"]
                .to_str()
                .unwrap()
                .starts_with("\"students\";r=0;t=")
        );
        let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        // One request a minute: the next one is a minute away.
        assert!((59..=60).contains(&retry), "{retry}");
        // Another route, and unmatched requests, have buckets of their own.
        let search = table.route("search");
        assert!(matches!(
            admit(&table, search, PEER, &mut request),
            Step::Continue(_)
        ));
        assert!(matches!(
            admit(&table, None, PEER, &mut request),
            Step::Continue(_)
        ));
    }
}
