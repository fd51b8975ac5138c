//! Choose the side: which service answers (the route's stage; a canary by its sticky key or
//! per request), with which timeout, and whether a shadow leg gets a copy (the stage, the
//! route's sample, its `writes` rule, the declared body against its cap, whether the thread
//! is calm enough ([`Governor`]), a free slot among its legs in flight). Never answers: a
//! request not mirrored is counted with the reason.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use http::request::Parts;
use strangler_plan::{ShadowWrites, Stage};
use tokio::sync::OwnedSemaphorePermit;

use super::route::Matched;
use crate::metrics::Side;
use crate::pressure::Governor;
use crate::routing::{self, ActiveRoute, RouteTable, Service, UNMATCHED, choose_side};
use crate::shadow::{Outcome, ResultSender, Unmirrored};

/// Who answers the request, and who gets a copy of it.
pub struct Chosen<'t> {
    /// The matched route (`None`: unmatched).
    pub route: Option<&'t ActiveRoute>,
    /// The route's name, or `default`.
    pub name: &'t str,
    pub side: Side,
    /// The service of `side`.
    pub service: &'t Service,
    /// The route's upstream timeout (the plan's default when unmatched).
    pub timeout: Duration,
    /// The shadow leg this request gets, if any.
    pub mirror: Option<Mirror<'t>>,
}

/// A shadow leg granted to a request: its candidate and one of the route's leg slots.
pub struct Mirror<'t> {
    pub route: &'t ActiveRoute,
    pub candidate: Service,
    pub permit: OwnedSemaphorePermit,
}

impl Mirror<'_> {
    /// Gives the leg up before it started (the request was answered without a primary
    /// answer to compare), counted as `reason`.
    pub fn give_up(self, recorder: &ResultSender, reason: Unmirrored) {
        recorder.send(&self.route.spec.name, Outcome::Unmirrored(reason));
    }
}

/// Chooses the side for the request `matched`, and its shadow leg (none for a request that
/// asks to switch protocols, `upgrade`: it is tunnelled); `declared` is its body's length;
/// `governor` says whether this thread has time for a shadow leg; `preset` is a side an
/// earlier phase already chose (the cache lookup, whose key names it).
#[allow(clippy::too_many_arguments)]
pub fn choose<'t>(
    recorder: &ResultSender,
    governor: &Governor,
    table: &'t RouteTable,
    matched: &Matched<'t, '_>,
    parts: &Parts,
    upgrade: bool,
    declared: Option<u64>,
    preset: Option<Side>,
) -> Chosen<'t> {
    let Some((route, template)) = matched.found else {
        return Chosen {
            route: None,
            name: UNMATCHED,
            side: Side::Legacy,
            service: &table.legacy,
            timeout: table.default_timeout,
            mirror: None,
        };
    };
    let side =
        preset.unwrap_or_else(|| choose_side(route, template, &matched.segments, &parts.headers));
    let service = match side {
        Side::Legacy => &table.legacy,
        Side::New => &route.target,
    };
    // A request to switch protocols is tunnelled, never mirrored.
    let mirror = if upgrade {
        None
    } else {
        mirror(
            recorder,
            governor,
            table,
            route,
            side,
            &parts.method,
            declared,
        )
    };
    Chosen {
        route: Some(route),
        name: &route.spec.name,
        side,
        service,
        timeout: route.spec.timeout,
        mirror,
    }
}

/// Whether `route` mirrors this request, with the candidate and a slot of its shadow leg;
/// a request it does not mirror is counted with the reason. In shadow the new service is
/// the candidate; in a canary, whichever side did not answer (so answers keep being
/// compared while traffic moves); after cutover, legacy if `reverse_shadow`.
fn mirror<'t>(
    recorder: &ResultSender,
    governor: &Governor,
    table: &RouteTable,
    route: &'t ActiveRoute,
    side: Side,
    method: &Method,
    declared: Option<u64>,
) -> Option<Mirror<'t>> {
    let candidate = match (route.stage, side) {
        (Stage::Shadow, _) | (Stage::Canary { .. }, Side::Legacy) => route.target.clone(),
        (Stage::Canary { .. }, Side::New) => table.legacy.clone(),
        (Stage::Cutover | Stage::Retired, _) if route.spec.shadow.reverse => table.legacy.clone(),
        _ => return None,
    };
    let spec = &route.spec.shadow;
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    let refused = if (routing::roll() as f64) >= spec.sample_percent {
        Some(Unmirrored::SampledOut)
    } else if !safe && spec.writes == ShadowWrites::Skip {
        Some(Unmirrored::WriteSkipped)
    } else if declared.is_some_and(|n| n > spec.max_body_bytes as u64) {
        Some(Unmirrored::TooLarge)
    } else if !governor.admits() {
        Some(Unmirrored::Throttled)
    } else {
        None
    };
    if let Some(reason) = refused {
        recorder.send(&route.spec.name, Outcome::Unmirrored(reason));
        return None;
    }
    match Arc::clone(&route.shadow_slots).try_acquire_owned() {
        Ok(permit) => Some(Mirror {
            route,
            candidate,
            permit,
        }),
        Err(_) => {
            recorder.send(&route.spec.name, Outcome::Unmirrored(Unmirrored::Busy));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::phase::testing::{ROUTES, chosen, parts, table};
    use crate::shadow::{ResultReceiver, results_channel};

    /// What `choose` made of one request: the route, the side, the service, the timeout,
    /// the candidate of its shadow leg.
    #[derive(Debug, PartialEq)]
    struct Choice {
        name: String,
        side: Side,
        service: String,
        timeout: Duration,
        candidate: Option<String>,
    }

    fn choice(
        recorder: &ResultSender,
        table: &RouteTable,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> Choice {
        let chosen = chosen(recorder, table, &parts(method, uri, headers));
        Choice {
            name: chosen.name.to_string(),
            side: chosen.side,
            service: chosen.service.upstream.name.clone(),
            timeout: chosen.timeout,
            candidate: chosen.mirror.map(|m| m.candidate.upstream.name.clone()),
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

    const TIMED: &str = r#"
        [[routes]]
        name = "students"
        paths = ["/students/{id}"]
        service = "new"
        timeout = "7s"
        canary = { sticky = "header:x-user" }
    "#;

    #[test]
    fn the_stage_chooses_the_side_and_its_service() {
        let (recorder, mut results) = results_channel(HashMap::new());
        let expect = |side, service: &str, candidate: Option<&str>| Choice {
            name: "students".into(),
            side,
            service: service.into(),
            timeout: Duration::from_secs(7),
            candidate: candidate.map(str::to_string),
        };
        let cases = [
            (Stage::Legacy, expect(Side::Legacy, "legacy", None)),
            (Stage::Shadow, expect(Side::Legacy, "legacy", Some("new"))),
            (
                Stage::Canary { percent: 0 },
                expect(Side::Legacy, "legacy", Some("new")),
            ),
            (
                Stage::Canary { percent: 100 },
                expect(Side::New, "new", Some("legacy")),
            ),
            (Stage::Cutover, expect(Side::New, "new", None)),
            (Stage::Retired, expect(Side::New, "new", None)),
        ];
        for (stage, expected) in cases {
            let table = table("", TIMED, stage);
            assert_eq!(
                choice(&recorder, &table, Method::GET, "/students/7", &[]),
                expected,
                "{stage:?}"
            );
        }
        assert_eq!(unmirrored(&mut results), []);
    }

    #[test]
    fn a_sticky_canary_key_always_lands_on_the_same_side() {
        let (recorder, _results) = results_channel(HashMap::new());
        let table = table("", TIMED, Stage::Canary { percent: 50 });
        let mut sides = HashMap::new();
        for round in 0..3 {
            for user in 0..40 {
                let user = user.to_string();
                let side = choice(
                    &recorder,
                    &table,
                    Method::GET,
                    "/students/7",
                    &[("x-user", &user)],
                )
                .side;
                assert_eq!(
                    *sides.entry(user.clone()).or_insert(side),
                    side,
                    "{user} in {round}"
                );
            }
        }
        assert!(sides.values().any(|s| *s == Side::New));
        assert!(sides.values().any(|s| *s == Side::Legacy));
    }

    #[test]
    fn unmatched_requests_go_to_legacy_with_the_default_timeout() {
        let (recorder, mut results) = results_channel(HashMap::new());
        let table = table("", ROUTES, Stage::Shadow);
        assert_eq!(
            choice(&recorder, &table, Method::GET, "/elsewhere", &[]),
            Choice {
                name: UNMATCHED.into(),
                side: Side::Legacy,
                service: "legacy".into(),
                timeout: table.default_timeout,
                candidate: None,
            }
        );
        assert_eq!(unmirrored(&mut results), []);
    }

    #[test]
    fn reverse_shadow_mirrors_to_legacy_after_cutover() {
        let (recorder, _results) = results_channel(HashMap::new());
        let routes = r#"
            [[routes]]
            name = "students"
            paths = ["/students/{id}"]
            service = "new"
            shadow = { reverse_shadow = true }
        "#;
        let table = table("", routes, Stage::Cutover);
        let chosen = choice(&recorder, &table, Method::GET, "/students/7", &[]);
        assert_eq!(
            (chosen.side, chosen.candidate.as_deref()),
            (Side::New, Some("legacy"))
        );
    }

    #[test]
    fn a_request_not_mirrored_is_counted_with_the_reason() {
        let (recorder, mut results) = results_channel(HashMap::new());
        let routes = r#"
            [[routes]]
            name = "students"
            paths = ["/students/{id}"]
            service = "new"
            shadow = { max_body = "10B", max_in_flight = 1 }
        "#;
        let table = table("", routes, Stage::Shadow);
        let mirrored = |method, headers: &[(&str, &str)]| {
            choice(&recorder, &table, method, "/students/7", headers)
                .candidate
                .is_some()
        };
        assert!(
            !mirrored(Method::POST, &[]),
            "writes are skipped by default"
        );
        assert!(!mirrored(Method::GET, &[("content-length", "11")]));
        assert!(
            !mirrored(
                Method::GET,
                &[("connection", "upgrade"), ("upgrade", "websocket")]
            ),
            "an upgrade is tunnelled"
        );
        assert_eq!(
            unmirrored(&mut results),
            [Unmirrored::WriteSkipped, Unmirrored::TooLarge],
            "an upgrade is no shadow candidate at all"
        );
        // The route's one leg slot, held by a leg in flight.
        let held = chosen(&recorder, &table, &parts(Method::GET, "/students/7", &[])).mirror;
        assert!(held.is_some());
        assert!(!mirrored(Method::GET, &[]));
        assert_eq!(unmirrored(&mut results), [Unmirrored::Busy]);
        drop(held);
        assert!(mirrored(Method::GET, &[]), "the slot is back");
    }

    #[test]
    fn sampled_out_requests_are_counted() {
        let (recorder, mut results) = results_channel(HashMap::new());
        let routes = r#"
            [[routes]]
            name = "students"
            paths = ["/students/{id}"]
            service = "new"
            shadow = { sample = 0.0 }
        "#;
        let table = table("", routes, Stage::Shadow);
        for _ in 0..5 {
            assert_eq!(
                choice(&recorder, &table, Method::GET, "/students/7", &[]).candidate,
                None
            );
        }
        assert_eq!(unmirrored(&mut results), [Unmirrored::SampledOut; 5]);
    }
}
