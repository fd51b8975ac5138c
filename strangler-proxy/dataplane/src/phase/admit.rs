//! Admit: whether the client may make this request at all. This is the seam for
//! authentication (401) and rate limits (429); today no policy exists and every request is
//! admitted.
//!
//! It runs after the route is known (a policy is per route, read from its plan section)
//! and before a side is chosen, so a refusal never reaches a service or a shadow leg and is
//! counted under the route with no side. A policy adds its check here (or a phase of its own
//! beside this one) returning [`Step::Answer`] with the answer and its [`Cause`] (the client's);
//! what it learns for later phases (an identity, a quota left) goes into [`Admitted`].
//!
//! [`Cause`]: crate::metrics::Cause

use http::request::Parts;

use super::Step;
use crate::routing::ActiveRoute;

/// What admission learned about the request (nothing yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted;

/// Admits the request to `route` (`None`: unmatched). Today: every request.
#[inline]
pub fn admit(route: Option<&ActiveRoute>, parts: &Parts) -> Step<Admitted> {
    let _ = (route, parts);
    Step::Continue(Admitted)
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;
    use crate::phase::testing::{ROUTES, parts, table};
    use strangler_plan::Stage;

    #[test]
    fn every_request_is_admitted_while_no_policy_exists() {
        let table = table("", ROUTES, Stage::Cutover);
        let routes = [table.route("students"), table.route("search"), None];
        for route in routes {
            for method in [Method::GET, Method::POST, Method::DELETE] {
                let request = parts(method, "/students/7", &[("authorization", "Bearer x")]);
                assert!(matches!(admit(route, &request), Step::Continue(Admitted)));
            }
        }
    }
}
