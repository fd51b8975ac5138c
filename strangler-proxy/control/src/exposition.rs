//! `GET /metrics`: the proxy's counters in the OpenMetrics text format, written by
//! `prometheus-client`. The request path keeps its own atomics (one relaxed add per
//! counter, no registry lookup); this collector reads them at scrape time, with what the
//! store says about the fleet (shadow counts, analysis checks, rollouts, sync links).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use strangler_dataplane::metrics::{Cause, LATENCY_BOUNDS, RouteMetrics, ServiceMetrics};
use strangler_dataplane::routing::{RouteTable, UNMATCHED};
use strangler_store::{CheckRecord, LinkProgress, RolloutRecord, ShadowMetric, VerifyRecord};

use crate::schedule::ScheduleCounts;

/// What the store says about the fleet, read once per scrape.
#[derive(Debug, Default)]
pub struct Fleet {
    /// Per route: its shadow counts since it was first shadowed.
    pub shadow: Vec<(String, BTreeMap<ShadowMetric, i64>)>,
    /// Per route: its newest check of each metric.
    pub checks: Vec<CheckRecord>,
    pub rollouts: Vec<RolloutRecord>,
    pub links: Vec<LinkProgress>,
    /// Whether the store answered (0: these families are missing, the rest is live).
    pub store_up: bool,
    /// Shadow results this proxy let go while the store was unreachable: (samples,
    /// latency pairs, paths).
    pub shed: (u64, u64, u64),
    /// Per data-plane thread: the share of shadow legs it admits, and how busy it is.
    pub threads: Vec<(f64, f64)>,
    /// The newest verify of each link.
    pub verifies: Vec<VerifyRecord>,
    /// This proxy's scheduled verifies, by `verify`.
    pub schedules: BTreeMap<String, ScheduleCounts>,
    /// Spans exported, failed and dropped (`[telemetry]`; `None`: no export).
    pub spans: Option<(u64, u64, u64)>,
}

type Labels = Vec<(&'static str, String)>;

#[derive(Debug)]
struct Scrape {
    table: Arc<RouteTable>,
    fleet: Fleet,
}

/// Renders every family for `table` and `fleet`.
pub fn render(table: Arc<RouteTable>, fleet: Fleet) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape { table, fleet }));
    let mut out = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::warn!(error = %err, "cannot write the metrics");
    }
    out
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, u64)>,
) -> fmt::Result {
    // OpenMetrics adds `_total` to a counter's samples.
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        family
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
    }
    Ok(())
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, V)>,
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        // A sample without labels is written bare (`name 1`), not with an empty `{}`.
        if labels.is_empty() {
            family.encode_gauge(&value)?;
        } else {
            family.encode_family(&labels)?.encode_gauge(&value)?;
        }
    }
    Ok(())
}

fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, (Vec<u64>, f64))>,
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, (counts, sum)) in samples {
        // Per bucket, not cumulative: the encoder adds them up; the last is `+Inf`.
        let buckets: Vec<(f64, u64)> = counts
            .iter()
            .enumerate()
            .map(|(i, n)| (LATENCY_BOUNDS.get(i).copied().unwrap_or(f64::MAX), *n))
            .collect();
        let total = counts.iter().sum();
        family
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(sum, total, &buckets, None)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let table = &self.table;
        let mut routes: Vec<(&str, &str, &RouteMetrics)> = table
            .routes
            .iter()
            .map(|r| (r.spec.name.as_str(), r.stage.name(), &*r.metrics))
            .collect();
        routes.push((UNMATCHED, "legacy", &table.unmatched));
        routes.extend(
            table
                .aggregates
                .iter()
                .map(|a| (a.spec.name.as_str(), "aggregate", &*a.metrics)),
        );
        let mut services: BTreeMap<&str, &ServiceMetrics> = BTreeMap::new();
        services.insert(table.legacy.upstream.name.as_str(), &*table.legacy.metrics);
        for r in &table.routes {
            services.insert(r.target.upstream.name.as_str(), &*r.target.metrics);
        }
        let route = |r: &str| vec![("route", r.to_string())];
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut enc,
            "strangler_route_requests",
            "Requests per route.",
            routes.iter().map(|(r, _, m)| (route(r), load(&m.requests))),
        )?;
        counter(
            &mut enc,
            "strangler_route_errors",
            "Answers with status 5xx per route, unless the client caused them.",
            routes.iter().map(|(r, _, m)| (route(r), load(&m.errors))),
        )?;
        counter(
            &mut enc,
            "strangler_route_failures",
            "Requests the proxy answered itself because something failed, per route and cause (client, proxy, upstream).",
            routes.iter().flat_map(|(r, _, m)| {
                Cause::ALL.map(|c| {
                    (
                        vec![("route", r.to_string()), ("cause", c.as_str().to_string())],
                        load(&m.failures[c as usize]),
                    )
                })
            }),
        )?;
        edge(&mut enc, table)?;
        counter(
            &mut enc,
            "strangler_route_cache_hits",
            "Requests per route answered from the response cache (no service was asked).",
            routes
                .iter()
                .map(|(r, _, m)| (route(r), load(&m.cache_hits))),
        )?;
        if let Some(cache) = &table.cache {
            gauge(
                &mut enc,
                "strangler_cache_bytes",
                "Bytes the response cache holds.",
                [(Vec::new(), cache.weight() as i64)],
            )?;
        }
        counter(
            &mut enc,
            "strangler_route_near_misses",
            "Requests that matched the route only without a trailing slash or ignoring letter case, and went to legacy.",
            routes
                .iter()
                .map(|(r, _, m)| (route(r), load(&m.near_misses))),
        )?;
        counter(
            &mut enc,
            "strangler_route_untranslated",
            "Bodies the route's translate section would have edited that were not JSON, passed untouched.",
            routes
                .iter()
                .map(|(r, _, m)| (route(r), load(&m.untranslated))),
        )?;
        counter(
            &mut enc,
            "strangler_route_served",
            "Requests per route by the side that answered.",
            routes.iter().flat_map(|(r, _, m)| {
                [
                    (
                        vec![("route", r.to_string()), ("side", "legacy".to_string())],
                        load(&m.served_legacy),
                    ),
                    (
                        vec![("route", r.to_string()), ("side", "new".to_string())],
                        load(&m.served_new),
                    ),
                ]
            }),
        )?;
        counter(
            &mut enc,
            "strangler_route_side_errors",
            "5xx the answering service caused, per route and side (what the analysis judges).",
            routes.iter().flat_map(|(r, _, m)| {
                [
                    (
                        vec![("route", r.to_string()), ("side", "legacy".to_string())],
                        load(&m.side_errors[0]),
                    ),
                    (
                        vec![("route", r.to_string()), ("side", "new".to_string())],
                        load(&m.side_errors[1]),
                    ),
                ]
            }),
        )?;
        gauge(
            &mut enc,
            "strangler_route_stage",
            "The route's current stage (1).",
            routes.iter().map(|(r, stage, _)| {
                (
                    vec![("route", r.to_string()), ("stage", stage.to_string())],
                    1i64,
                )
            }),
        )?;
        histogram(
            &mut enc,
            "strangler_route_latency_seconds",
            "Time to answer, per route.",
            routes
                .iter()
                .map(|(r, _, m)| (route(r), m.latency_buckets())),
        )?;
        let service = |s: &str| vec![("service", s.to_string())];
        counter(
            &mut enc,
            "strangler_service_requests",
            "Requests sent per upstream service.",
            services
                .iter()
                .map(|(s, m)| (service(s), load(&m.requests))),
        )?;
        counter(
            &mut enc,
            "strangler_service_errors",
            "Connect failures, timeouts and 5xx per upstream service (never a client's fault).",
            services.iter().map(|(s, m)| (service(s), load(&m.errors))),
        )?;
        counter(
            &mut enc,
            "strangler_service_overloaded",
            "Requests answered 503 without being sent because the service had max_in_flight requests.",
            services
                .iter()
                .map(|(s, m)| (service(s), load(&m.overloaded))),
        )?;
        histogram(
            &mut enc,
            "strangler_service_latency_seconds",
            "Upstream time to answer, per service.",
            services
                .iter()
                .map(|(s, m)| (service(s), (m.latency.buckets(), m.latency.sum_seconds()))),
        )?;
        gauge(
            &mut enc,
            "strangler_table_generation",
            "The store generation this proxy's route table reflects.",
            [(Vec::new(), table.generation)],
        )?;
        let fleet = &self.fleet;
        let thread = |i: usize| vec![("thread", i.to_string())];
        gauge(
            &mut enc,
            "strangler_shadow_admitted_ratio",
            "Per data-plane thread: the share of shadow legs it starts now (below 1 while it is busier than [proxy] shadow_max_busy; the rest count as unmirrored:throttled).",
            fleet
                .threads
                .iter()
                .enumerate()
                .map(|(i, (admitted, _))| (thread(i), *admitted)),
        )?;
        gauge(
            &mut enc,
            "strangler_dataplane_busy_ratio",
            "Per data-plane thread: moving average of the share of time it is running or waiting for a core.",
            fleet
                .threads
                .iter()
                .enumerate()
                .map(|(i, (_, busy))| (thread(i), *busy)),
        )?;
        gauge(
            &mut enc,
            "strangler_store_up",
            "Whether this proxy reaches the state store (1) or not (0: it serves its last route table, and the store's figures are missing).",
            [(Vec::new(), i64::from(fleet.store_up))],
        )?;
        if let Some((exported, failed, dropped)) = fleet.spans {
            counter(
                &mut enc,
                "strangler_spans",
                "Request spans by what became of them: exported to the collector, failed (refused or unanswered), dropped (the export queue was full).",
                [
                    (vec![("outcome", "exported".to_string())], exported),
                    (vec![("outcome", "failed".to_string())], failed),
                    (vec![("outcome", "dropped".to_string())], dropped),
                ],
            )?;
        }
        counter(
            &mut enc,
            "strangler_store_held_dropped",
            "Shadow details this proxy let go while the state store was unreachable (its counts are never dropped), per kind.",
            [
                (vec![("kind", "sample".to_string())], fleet.shed.0),
                (vec![("kind", "latency".to_string())], fleet.shed.1),
                (vec![("kind", "path".to_string())], fleet.shed.2),
            ],
        )?;
        counter(
            &mut enc,
            "strangler_shadow",
            "Shadow results per route and kind (compared, matched, mismatched, noisy_only, errors, unmirrored:REASON), over every proxy.",
            fleet.shadow.iter().flat_map(|(r, counts)| {
                counts.iter().map(move |(metric, n)| {
                    (
                        vec![
                            ("route", r.clone()),
                            ("result", metric.as_str().to_string()),
                        ],
                        u64::try_from(*n).unwrap_or(0),
                    )
                })
            }),
        )?;
        gauge(
            &mut enc,
            "strangler_analysis_value",
            "The newest analysis check's value per route and metric (NaN: too little traffic for a verdict).",
            fleet.checks.iter().map(|c| {
                (
                    vec![("route", c.route.clone()), ("metric", c.metric.clone())],
                    c.value.unwrap_or(f64::NAN),
                )
            }),
        )?;
        gauge(
            &mut enc,
            "strangler_analysis_passed",
            "The newest analysis check's verdict per route and metric: 1 passed, 0 failed, -1 no verdict.",
            fleet.checks.iter().map(|c| {
                (
                    vec![("route", c.route.clone()), ("metric", c.metric.clone())],
                    match c.passed {
                        Some(true) => 1i64,
                        Some(false) => 0,
                        None => -1,
                    },
                )
            }),
        )?;
        gauge(
            &mut enc,
            "strangler_rollout_step",
            "The step a route's rollout is at (1-based), with its state.",
            fleet.rollouts.iter().map(|r| {
                (
                    vec![
                        ("route", r.route.clone()),
                        ("state", r.state.as_str().to_string()),
                    ],
                    i64::try_from(r.step + 1).unwrap_or(0),
                )
            }),
        )?;
        let link = |l: &LinkProgress| vec![("link", l.link.clone())];
        gauge(
            &mut enc,
            "strangler_sync_lag_events",
            "Events a sync link's target has not been sent yet.",
            fleet.links.iter().map(|l| (link(l), l.lag_events())),
        )?;
        gauge(
            &mut enc,
            "strangler_sync_lag_seconds",
            "Age of the oldest event a sync link has not delivered.",
            fleet.links.iter().map(|l| (link(l), l.lag_seconds)),
        )?;
        gauge(
            &mut enc,
            "strangler_sync_failing",
            "Whether a sync link's last attempt failed (1) or not (0).",
            fleet
                .links
                .iter()
                .map(|l| (link(l), i64::from(l.last_error.is_some()))),
        )?;
        gauge(
            &mut enc,
            "strangler_verify_differences",
            "Entities missing, extra or differing in the newest verify of a sync link, per entity kind.",
            fleet.verifies.iter().flat_map(|v| {
                v.by_kind
                    .iter()
                    .map(|(kind, n)| (vec![("link", v.link.clone()), ("type", kind.clone())], *n))
            }),
        )?;
        gauge(
            &mut enc,
            "strangler_verify_age_seconds",
            "Time since the newest verify of a sync link finished.",
            fleet.verifies.iter().map(|v| {
                (
                    vec![("link", v.link.clone())],
                    (strangler_store::now_ms() - v.finished_ms).max(0) as f64 / 1000.0,
                )
            }),
        )?;
        let schedule = |name: &String| vec![("schedule", name.clone())];
        counter(
            &mut enc,
            "strangler_schedule_runs",
            "Scheduled verifies this proxy started (the proxy holding the schedule lease runs them).",
            fleet.schedules.iter().map(|(n, c)| (schedule(n), c.runs)),
        )?;
        counter(
            &mut enc,
            "strangler_schedule_skipped",
            "Scheduled verifies skipped because the schedule's previous run was still going.",
            fleet
                .schedules
                .iter()
                .map(|(n, c)| (schedule(n), c.skipped)),
        )?;
        counter(
            &mut enc,
            "strangler_schedule_failed",
            "Scheduled verifies that could not finish (a side or the store failed).",
            fleet.schedules.iter().map(|(n, c)| (schedule(n), c.failed)),
        )?;
        Ok(())
    }
}

/// The admit phase's refusals and rate-limit keys, for the routes an `[edge]` policy
/// applies to (nothing at all without one).
fn edge(enc: &mut DescriptorEncoder, table: &RouteTable) -> fmt::Result {
    use strangler_dataplane::edge::Refused;
    let admissions: Vec<(&str, &strangler_dataplane::edge::Admission)> = table
        .routes
        .iter()
        .filter_map(|r| Some((r.spec.name.as_str(), r.admission.as_deref()?)))
        .chain(table.admission.as_deref().map(|a| (UNMATCHED, a)))
        .collect();
    if admissions.is_empty() {
        return Ok(());
    }
    counter(
        enc,
        "strangler_edge_refused",
        "Requests the admit phase refused, per route and reason (missing_token, invalid_token, auth_keys_unavailable, rate_limited).",
        admissions.iter().flat_map(|(r, a)| {
            Refused::ALL.map(|reason| {
                (
                    vec![
                        ("route", r.to_string()),
                        ("reason", reason.as_str().to_string()),
                    ],
                    a.counters.get(reason),
                )
            })
        }),
    )?;
    gauge(
        enc,
        "strangler_rate_limit_keys",
        "Keys a route's rate limit tracks now (pruned every second, bounded by max_keys).",
        admissions.iter().filter_map(|(r, a)| {
            let limit = a.limit.as_ref()?;
            Some((vec![("route", r.to_string())], limit.keys() as i64))
        }),
    )
}
