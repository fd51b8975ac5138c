//! The dashboard's time series: one point per route every [`SAMPLE_EVERY`], the last
//! [`KEPT`] of them (an hour), in memory. Sampled off the request path from what
//! `/admin/status` reads (this proxy's counters, as deltas since the previous point) and
//! the current analysis run's match rate from the store; lost on restart, by design.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use strangler_dataplane::routing::RouteTable;
use strangler_store::{RouteCounters, ShadowMetric, Store, now_ms};
use tokio::sync::watch;

use crate::analysis::{delta, quantile};
use crate::status::counters;

/// How often a point is taken.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Points kept per route: one hour at [`SAMPLE_EVERY`].
pub const KEPT: usize = 360;

/// One route's figures over one interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Point {
    /// When it was taken, Unix ms.
    pub at_ms: i64,
    /// Matched ÷ compared in the current analysis run; `None` before any comparison.
    pub match_rate: Option<f64>,
    /// 5xx ÷ answers per side over the interval; `None` when a side answered nothing.
    pub error_rate_legacy: Option<f64>,
    pub error_rate_new: Option<f64>,
    /// p99 latency per side over the interval, in ms.
    pub p99_legacy_ms: Option<f64>,
    pub p99_new_ms: Option<f64>,
}

/// Every route's recent points, shared by the sampler (writer) and the dashboard (reader).
#[derive(Debug, Clone, Default)]
pub struct History {
    series: Arc<Mutex<HashMap<String, VecDeque<Point>>>>,
}

impl History {
    /// A route's points, oldest first.
    pub fn points(&self, route: &str) -> Vec<Point> {
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        series
            .get(route)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Appends a point, dropping the oldest beyond [`KEPT`].
    pub fn push(&self, route: &str, point: Point) {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let points = series.entry(route.to_string()).or_default();
        if points.len() == KEPT {
            points.pop_front();
        }
        points.push_back(point);
    }

    /// Forgets routes the plan no longer has.
    fn retain(&self, routes: &[String]) {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        series.retain(|route, _| routes.contains(route));
    }
}

/// The figures of one interval: `now` less `then` (counters that went backwards, after a
/// restart of the metrics, count from zero).
pub fn interval_point(
    at_ms: i64,
    now: &RouteCounters,
    then: &RouteCounters,
    match_rate: Option<f64>,
) -> Point {
    let rate = |errors: u64, errors_then: u64, served: u64, served_then: u64| {
        let served = served.saturating_sub(served_then);
        (served > 0).then(|| errors.saturating_sub(errors_then) as f64 / served as f64)
    };
    let p99 = |now: &[u64], then: &[u64]| quantile(&delta(now, then), 0.99).map(|s| s * 1000.0);
    Point {
        at_ms,
        match_rate,
        error_rate_legacy: rate(
            now.errors_legacy,
            then.errors_legacy,
            now.served_legacy,
            then.served_legacy,
        ),
        error_rate_new: rate(
            now.errors_new,
            then.errors_new,
            now.served_new,
            then.served_new,
        ),
        p99_legacy_ms: p99(&now.latency_legacy, &then.latency_legacy),
        p99_new_ms: p99(&now.latency_new, &then.latency_new),
    }
}

/// Takes a point per route every [`SAMPLE_EVERY`] (the first at once) until `stopping`.
pub async fn sample(
    history: History,
    table: Arc<ArcSwap<RouteTable>>,
    store: Arc<Mutex<Box<dyn Store>>>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut previous: HashMap<String, RouteCounters> = HashMap::new();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopping.changed() => return,
        }
        if *stopping.borrow() {
            return;
        }
        let current = table.load_full();
        let routes: Vec<String> = current.routes.iter().map(|r| r.spec.name.clone()).collect();
        let store = Arc::clone(&store);
        let names = routes.clone();
        // The store's figures on a blocking thread; an unreachable store leaves gaps.
        let match_rates = tokio::task::spawn_blocking(move || {
            let store = store.lock().unwrap_or_else(|p| p.into_inner());
            names
                .iter()
                .map(|route| {
                    let rate = store.run_summary(route).ok().and_then(|s| {
                        let compared = s.count(ShadowMetric::Compared);
                        (compared > 0).then(|| {
                            1.0 - s.count(ShadowMetric::Mismatched) as f64 / compared as f64
                        })
                    });
                    (route.clone(), rate)
                })
                .collect::<HashMap<_, _>>()
        })
        .await
        .unwrap_or_default();
        let at = now_ms();
        for route in &current.routes {
            let name = &route.spec.name;
            let now = counters(name, &route.metrics);
            let then = previous.get(name).cloned().unwrap_or_default();
            let rate = match_rates.get(name).copied().flatten();
            history.push(name, interval_point(at, &now, &then, rate));
            previous.insert(name.clone(), now);
        }
        history.retain(&routes);
        previous.retain(|route, _| routes.contains(route));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_hour() {
        let history = History::default();
        for i in 0..(KEPT as i64 + 5) {
            history.push(
                "r",
                Point {
                    at_ms: i,
                    ..Point::default()
                },
            );
        }
        let points = history.points("r");
        assert_eq!(points.len(), KEPT);
        assert_eq!(points[0].at_ms, 5, "the oldest went first");
        assert!(history.points("other").is_empty());
    }

    #[test]
    fn a_point_holds_the_interval_not_the_totals() {
        let then = RouteCounters {
            served_legacy: 10,
            errors_legacy: 5,
            served_new: 4,
            ..RouteCounters::default()
        };
        let now = RouteCounters {
            served_legacy: 20,
            errors_legacy: 6,
            served_new: 4,
            ..RouteCounters::default()
        };
        let point = interval_point(1, &now, &then, Some(0.5));
        assert_eq!(point.error_rate_legacy, Some(0.1));
        assert_eq!(point.error_rate_new, None, "new answered nothing since");
        assert_eq!(point.match_rate, Some(0.5));
    }
}
