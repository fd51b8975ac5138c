//! One route's state, as the admin API, `strangler status` and the reports show it.

use serde::Serialize;
use strangler_dataplane::metrics::RouteMetrics;
use strangler_plan::{Plan, Stage};
use strangler_store::RouteCounters;

/// A route's stage, traffic split and counters (and, where the caller read them, its shadow
/// comparisons).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteStatus {
    pub route: String,
    /// The service the route moves to (the legacy service for unmatched requests).
    pub service: String,
    /// `legacy`, `shadow`, `canary`, `cutover` or `retired`.
    pub stage: &'static str,
    /// Share of requests the new service answers, 0–100.
    pub percent_new: u8,
    pub requests: u64,
    /// Answers with status 5xx.
    pub errors: u64,
    pub served_legacy: u64,
    pub served_new: u64,
    /// Shadow comparisons recorded, when read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compared: Option<i64>,
    /// Matched ÷ compared (noise not counted); `None` before any comparison.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_rate: Option<Option<f64>>,
}

impl RouteStatus {
    /// The status of a route at `stage` with counters `c`.
    pub fn new(route: &str, service: &str, stage: Stage, c: &RouteCounters) -> Self {
        Self {
            route: route.to_string(),
            service: service.to_string(),
            stage: stage.name(),
            percent_new: stage.percent_new(),
            requests: c.requests,
            errors: c.errors,
            served_legacy: c.served_legacy,
            served_new: c.served_new,
            compared: None,
            match_rate: None,
        }
    }

    /// With its shadow comparisons.
    pub fn with_shadow(self, compared: i64, match_rate: Option<f64>) -> Self {
        Self {
            compared: Some(compared),
            match_rate: Some(match_rate),
            ..self
        }
    }
}

/// The stage every plan route is in: the store's, or the plan's initial one.
pub fn stages(
    plan: &Plan,
    stored: &std::collections::HashMap<String, Stage>,
) -> Vec<(String, Stage)> {
    plan.routes
        .iter()
        .map(|r| {
            (
                r.name.clone(),
                stored.get(&r.name).copied().unwrap_or(r.initial_stage),
            )
        })
        .collect()
}
pub use strangler_dataplane::routing::UNMATCHED;

/// This proxy's counters of one route.
pub fn counters(route: &str, metrics: &RouteMetrics) -> RouteCounters {
    let c = metrics.snapshot();
    RouteCounters {
        route: route.to_string(),
        requests: c.requests,
        errors: c.errors,
        served_legacy: c.served_legacy,
        served_new: c.served_new,
        errors_legacy: c.errors_legacy,
        errors_new: c.errors_new,
        latency_legacy: c.latency_legacy,
        latency_new: c.latency_new,
    }
}
