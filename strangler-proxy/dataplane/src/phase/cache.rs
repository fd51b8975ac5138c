//! Cache lookup: whether the answer can come from a cache instead of a service. This is
//! the seam for response caching; today there is no cache and every lookup misses.
//!
//! It runs after admission (a cached answer is only for a client that may have it) and
//! before a side is chosen (a hit reaches no service and no shadow leg). A cache answers a
//! hit here with [`Step::Answer`] (`cause: None`: a hit is a served request, counted under
//! the route with no side); a miss passes on in [`Miss`] whatever storing the answer on its
//! way back will need.

use http::request::Parts;

use super::Step;
use crate::routing::ActiveRoute;

/// A lookup that found nothing (and, for now, nothing to store the answer under).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Miss;

/// Looks the request up for `route` (`None`: unmatched). Today: always a miss.
#[inline]
pub fn lookup(route: Option<&ActiveRoute>, parts: &Parts) -> Step<Miss> {
    let _ = (route, parts);
    Step::Continue(Miss)
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;
    use crate::phase::testing::{ROUTES, parts, table};
    use strangler_plan::Stage;

    #[test]
    fn every_lookup_misses_while_no_cache_exists() {
        let table = table("", ROUTES, Stage::Legacy);
        for route in [table.route("students"), table.route("search"), None] {
            for method in [Method::GET, Method::HEAD, Method::POST] {
                let request = parts(method, "/search", &[("cache-control", "max-age=60")]);
                assert!(matches!(lookup(route, &request), Step::Continue(Miss)));
            }
        }
    }
}
