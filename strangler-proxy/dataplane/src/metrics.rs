//! Request counters and latency histograms, lock-free on the request path (one relaxed add
//! each), read by the control plane for `/metrics` and snapshotted into the state store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is above every bound.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Observations per bucket (not cumulative), the last above every bound.
    pub fn buckets(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// The sum of every observation, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    }
}

/// Which side answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Legacy,
    New,
}

/// Who a failed request is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The client sent something the proxy refused (a bad head, path or body).
    Client,
    /// The proxy could not do its part (including shedding load it cannot take).
    Proxy,
    /// The upstream service failed to connect, answer in time, or finish its answer.
    Upstream,
}

impl Cause {
    pub const ALL: [Cause; 3] = [Cause::Client, Cause::Proxy, Cause::Upstream];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Client => "client",
            Cause::Proxy => "proxy",
            Cause::Upstream => "upstream",
        }
    }
}

/// Counters of one route (or of unmatched requests).
#[derive(Debug, Default)]
pub struct RouteMetrics {
    pub requests: AtomicU64,
    /// Answers with status 5xx, the proxy's own included, unless the client caused them.
    pub errors: AtomicU64,
    pub served_legacy: AtomicU64,
    pub served_new: AtomicU64,
    /// Requests the proxy answered itself because something failed, by [`Cause`].
    pub failures: [AtomicU64; 3],
    /// Requests that would have matched this route but for a trailing slash or letter case
    /// (they went to legacy as unmatched).
    pub near_misses: AtomicU64,
    /// Bodies its `translate` section should have edited that were not JSON (passed
    /// untouched).
    pub untranslated: AtomicU64,
    /// Time to answer requests answered before a side was chosen (see
    /// [`RouteMetrics::latency_buckets`] for the route's whole latency).
    pub latency: Histogram,
    /// 5xx the answering service caused, by side (legacy, new): what analysis judges.
    pub side_errors: [AtomicU64; 2],
    /// Time to answer, by side (legacy, new).
    pub side_latency: [Histogram; 2],
    /// Requests answered from the response cache (no service was asked).
    pub cache_hits: AtomicU64,
}

/// Counters of one upstream service.
#[derive(Debug, Default)]
pub struct ServiceMetrics {
    pub requests: AtomicU64,
    /// Connect failures, timeouts and 5xx answers (never a client's fault).
    pub errors: AtomicU64,
    /// Requests not sent because the service had `max_in_flight` requests already.
    pub overloaded: AtomicU64,
    pub latency: Histogram,
}

impl RouteMetrics {
    /// Counts an answer; a 5xx counts as an error unless the client caused it, and against
    /// the side that answered when its service caused it.
    pub fn record(&self, side: Option<Side>, status: u16, elapsed: Duration, cause: Option<Cause>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 && cause != Some(Cause::Client) {
            self.errors.fetch_add(1, Ordering::Relaxed);
            if let Some(side) = side
                && matches!(cause, None | Some(Cause::Upstream))
            {
                self.side_errors[side as usize].fetch_add(1, Ordering::Relaxed);
            }
        }
        // One histogram per answer: a side's, or (answered before a side was chosen) the
        // route's own; the route's latency is their sum, added up at scrape time.
        match side {
            Some(side) => self.side_latency[side as usize].observe(elapsed),
            None => self.latency.observe(elapsed),
        }
        match side {
            Some(Side::Legacy) => self.served_legacy.fetch_add(1, Ordering::Relaxed),
            Some(Side::New) => self.served_new.fetch_add(1, Ordering::Relaxed),
            None => 0,
        };
    }

    /// Every answer's latency, per bucket, and their sum in seconds.
    pub fn latency_buckets(&self) -> (Vec<u64>, f64) {
        let mut buckets = self.latency.buckets();
        let mut sum = self.latency.sum_seconds();
        for side in &self.side_latency {
            for (total, n) in buckets.iter_mut().zip(side.buckets()) {
                *total += n;
            }
            sum += side.sum_seconds();
        }
        (buckets, sum)
    }

    /// Counts a request the proxy answered itself because of `cause`.
    pub fn failed(&self, cause: Cause) {
        self.failures[cause as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> RouteCounts {
        RouteCounts {
            errors_legacy: self.side_errors[Side::Legacy as usize].load(Ordering::Relaxed),
            errors_new: self.side_errors[Side::New as usize].load(Ordering::Relaxed),
            latency_legacy: self.side_latency[Side::Legacy as usize].buckets(),
            latency_new: self.side_latency[Side::New as usize].buckets(),
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            served_legacy: self.served_legacy.load(Ordering::Relaxed),
            served_new: self.served_new.load(Ordering::Relaxed),
        }
    }
}

impl ServiceMetrics {
    pub fn record(&self, ok: bool, elapsed: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency.observe(elapsed);
    }
}

/// A route's counters at one moment (what the control plane stores with each heartbeat).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteCounts {
    pub requests: u64,
    pub errors: u64,
    pub served_legacy: u64,
    pub served_new: u64,
    /// 5xx each side's service caused.
    pub errors_legacy: u64,
    pub errors_new: u64,
    /// Answers per latency bucket ([`LATENCY_BOUNDS`], then one above them all), per side.
    pub latency_legacy: Vec<u64>,
    pub latency_new: Vec<u64>,
}

/// Upper bounds of the latency buckets, in seconds.
pub const LATENCY_BOUNDS: [f64; 12] = BUCKETS;
