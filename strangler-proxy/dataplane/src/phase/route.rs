//! Match the route: the plan's `trailing_slash` rule for a path that matches only without
//! its slash (308 to it, the slash dropped, or a near miss), then the most specific route
//! for the method and path; an unmatched path that a route would match ignoring letter case
//! is counted as a near miss. Never fails: an unmatched request goes to legacy as `default`.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::{Either, Full};
use strangler_plan::TrailingSlash;
use strangler_plan::path::{PathTemplate, split};

use super::record::Trail;
use super::{Answer, Step};
use crate::routing::{ActiveRoute, RouteTable};

/// The route a request matched, with the path's segments (borrowed from the path).
pub struct Matched<'t, 'p> {
    /// The route and the template that matched; `None`: unmatched (route `default`).
    pub found: Option<(&'t ActiveRoute, &'t PathTemplate)>,
    pub segments: Vec<&'p str>,
}

impl<'t> Matched<'t, '_> {
    pub fn route(&self) -> Option<&'t ActiveRoute> {
        self.found.map(|(route, _)| route)
    }

    /// Where an answer from here on is counted: the route's counters and name.
    pub fn trail(&self, table: &'t RouteTable) -> Trail<'t> {
        match self.route() {
            Some(route) => Trail::routed(&route.metrics, &route.header),
            None => Trail::unmatched(table),
        }
    }
}

/// Applies the trailing-slash rule to `path` (dropping the slash in place when the plan
/// says `ignore`) and matches it; `query` goes into a redirect's `Location`.
pub fn route<'t, 'p>(
    table: &'t RouteTable,
    method: &Method,
    path: &'p mut String,
    query: Option<&str>,
) -> Step<Matched<'t, 'p>> {
    if let Err(location) = resolve_trailing_slash(table, method, path) {
        let location = match query {
            Some(q) => format!("{location}?{q}"),
            None => location,
        };
        let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
        *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
        return Step::Answer(Answer {
            response,
            cause: None,
        });
    }
    let path: &'p String = path;
    let segments = split(path);
    let found = table.find(method, &segments);
    if found.is_none() {
        count_case_near_miss(table, method, path, &segments);
    }
    Step::Continue(Matched { found, segments })
}

/// A path with a trailing slash that no route matches, but that one matches without it:
/// what the plan's `trailing_slash` says to do. `Err` holds the path to redirect to.
fn resolve_trailing_slash(
    table: &RouteTable,
    method: &Method,
    path: &mut String,
) -> Result<(), String> {
    if path.len() < 2 || !path.ends_with('/') || table.find(method, &split(path)).is_some() {
        return Ok(());
    }
    let stripped = &path[..path.len() - 1];
    let Some((route, _)) = table.find(method, &split(stripped)) else {
        return Ok(());
    };
    match table.matching.trailing_slash {
        TrailingSlash::Strict => {
            route.metrics.near_misses.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        TrailingSlash::Redirect => Err(stripped.to_string()),
        TrailingSlash::Ignore => {
            path.pop();
            Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phase::testing::{ROUTES, table};
    use strangler_plan::Stage;

    fn near_misses(table: &RouteTable, route: &str) -> u64 {
        table
            .route(route)
            .unwrap()
            .metrics
            .near_misses
            .load(Ordering::Relaxed)
    }

    /// The matched route's name (`None`: unmatched) and the path as it goes on, or the
    /// status and `Location` of an answer.
    fn run(
        table: &RouteTable,
        method: Method,
        path: &str,
        query: Option<&str>,
    ) -> Result<(Option<String>, String), (StatusCode, Option<String>)> {
        let mut path = path.to_string();
        match route(table, &method, &mut path, query) {
            Step::Continue(matched) => {
                let name = matched.route().map(|r| r.spec.name.clone());
                drop(matched);
                Ok((name, path))
            }
            Step::Answer(answer) => {
                assert_eq!(answer.cause, None, "a redirect is no failure");
                let location = answer
                    .response
                    .headers()
                    .get(header::LOCATION)
                    .map(|v| v.to_str().unwrap().to_string());
                Err((answer.response.status(), location))
            }
        }
    }

    #[test]
    fn matches_the_route_for_method_and_path() {
        let table = table("", ROUTES, Stage::Legacy);
        assert_eq!(
            run(&table, Method::GET, "/students/7", None),
            Ok((Some("students".into()), "/students/7".into()))
        );
        assert_eq!(
            run(&table, Method::POST, "/search", None),
            Ok((None, "/search".into())),
            "search allows GET only"
        );
        assert_eq!(run(&table, Method::GET, "/", None), Ok((None, "/".into())));
    }

    #[test]
    fn strict_trailing_slash_goes_unmatched_as_a_near_miss() {
        let table = table("", ROUTES, Stage::Legacy);
        assert_eq!(
            run(&table, Method::GET, "/students/7/", None),
            Ok((None, "/students/7/".into()))
        );
        assert_eq!(near_misses(&table, "students"), 1);
        // A slash on a path nothing matches without it is no near miss.
        assert_eq!(
            run(&table, Method::GET, "/nothing/", None),
            Ok((None, "/nothing/".into()))
        );
        assert_eq!(near_misses(&table, "students"), 1);
    }

    #[test]
    fn redirect_answers_308_keeping_the_query() {
        let table = table(r#"trailing_slash = "redirect""#, ROUTES, Stage::Legacy);
        assert_eq!(
            run(&table, Method::GET, "/students/7/", Some("a=1&b=2")),
            Err((
                StatusCode::PERMANENT_REDIRECT,
                Some("/students/7?a=1&b=2".into())
            ))
        );
        assert_eq!(
            run(&table, Method::GET, "/search/", None),
            Err((StatusCode::PERMANENT_REDIRECT, Some("/search".into())))
        );
        assert_eq!(near_misses(&table, "students"), 0);
    }

    #[test]
    fn ignore_drops_the_slash_and_matches() {
        let table = table(r#"trailing_slash = "ignore""#, ROUTES, Stage::Legacy);
        assert_eq!(
            run(&table, Method::GET, "/students/7/", None),
            Ok((Some("students".into()), "/students/7".into()))
        );
        assert_eq!(
            run(&table, Method::GET, "/", None),
            Ok((None, "/".into())),
            "the root keeps its slash"
        );
    }

    #[test]
    fn letter_case_near_misses_are_counted_when_matching_is_case_sensitive() {
        let table_ = table("", ROUTES, Stage::Legacy);
        assert_eq!(
            run(&table_, Method::GET, "/Students/7", None),
            Ok((None, "/Students/7".into()))
        );
        assert_eq!(near_misses(&table_, "students"), 1);

        let insensitive = table("case_sensitive = false", ROUTES, Stage::Legacy);
        assert_eq!(
            run(&insensitive, Method::GET, "/Students/7", None),
            Ok((Some("students".into()), "/Students/7".into()))
        );
        assert_eq!(near_misses(&insensitive, "students"), 0);
    }
}
