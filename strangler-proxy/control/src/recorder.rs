//! The shadow recorder: drains the data plane's results channel in batches (pausing
//! [`RECEIVE_PAUSE`] between reads, so a busy data plane does not wake it per request),
//! aggregates per route, and writes to the state store every [`FLUSH_EVERY`], on a blocking
//! thread. It ends when the
//! channel closes (every data-plane worker is gone), after writing what is pending, so a
//! stopping proxy loses no result it took.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strangler_dataplane::shadow::{NoiseMap, Outcome, ResultReceiver, Unmirrored};
use strangler_diff as diff;
use strangler_store::{ShadowBatch, ShadowMetric, Store};

use crate::control::StoreHealth;
use tokio::task::JoinHandle;

/// How often the recorder writes to the store.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Results taken from the channel at once.
const RECEIVE_AT_ONCE: usize = 1024;
/// How long the recorder lets results gather between reads of the channel (its capacity
/// holds far more than arrive in this time).
const RECEIVE_PAUSE: Duration = Duration::from_millis(5);

/// The store's name for why a request was not compared.
pub fn unmirrored_metric(reason: Unmirrored) -> ShadowMetric {
    use strangler_store::Unmirrored as Stored;
    ShadowMetric::Unmirrored(match reason {
        Unmirrored::SampledOut => Stored::SampledOut,
        Unmirrored::WriteSkipped => Stored::WriteSkipped,
        Unmirrored::TooLarge => Stored::TooLarge,
        Unmirrored::Busy => Stored::Busy,
        Unmirrored::Incomplete => Stored::Incomplete,
        Unmirrored::Shed => Stored::Shed,
        Unmirrored::Throttled => Stored::Throttled,
    })
}

/// While the store is unreachable, results wait in memory, at most this many sample
/// answers per route ...
pub const HELD_SAMPLES_PER_ROUTE: usize = 50;
/// ... this many latency pairs per route (the newest) ...
pub const HELD_LATENCIES_PER_ROUTE: usize = strangler_store::LATENCIES_PER_ROUTE as usize;
/// ... this many differing paths per route ...
pub const HELD_PATHS_PER_ROUTE: usize = 1000;
/// ... and this many captured cases per route (the newest: a case holds the request and
/// both answers, up to the shadow cap each). Counts are never dropped: they are sums.
pub const HELD_CAPTURES_PER_ROUTE: usize = 20;

/// Starts the recorder on `receiver`, writing to `store` while `health` says the control
/// thread reaches it. The handle resolves after the final flush.
pub fn start(
    receiver: ResultReceiver,
    store: Box<dyn Store>,
    health: Arc<StoreHealth>,
) -> JoinHandle<()> {
    tokio::spawn(record(receiver, store, health))
}

/// Results gathered since the last flush, per route.
#[derive(Default)]
pub struct Pending {
    batches: HashMap<String, ShadowBatch>,
}

/// What holding results back (the store unreachable) had to let go.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Shed {
    pub samples: u64,
    pub latencies: u64,
    pub paths: u64,
    pub captures: u64,
}

impl Pending {
    /// Adds one result of `route`; `noise` is the shared map of learned noisy paths.
    pub fn add(&mut self, route: &str, outcome: Outcome, noise: &Mutex<NoiseMap>) {
        let batch = self
            .batches
            .entry(route.to_string())
            .or_insert_with(|| ShadowBatch {
                route: route.to_string(),
                ..ShadowBatch::default()
            });
        add(batch, outcome, noise, route);
    }

    /// Counts results the channel could not take (kept under the empty route).
    pub fn dropped(&mut self, n: u64) {
        if n > 0 {
            self.batches
                .entry(String::new())
                .or_default()
                .count(ShadowMetric::Dropped, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Takes back batches the store did not accept, merged with what came since, within
    /// the bounds above; answers what did not fit.
    pub fn hold(&mut self, unwritten: Vec<ShadowBatch>) -> Shed {
        for old in unwritten {
            let batch = self
                .batches
                .entry(old.route.clone())
                .or_insert_with(|| ShadowBatch {
                    route: old.route.clone(),
                    ..ShadowBatch::default()
                });
            for (metric, n) in old.counts {
                batch.count(metric, n);
            }
            for (key, n) in old.paths {
                *batch.paths.entry(key).or_default() += n;
            }
            // Older first, as they happened.
            let mut samples = old.samples;
            samples.append(&mut batch.samples);
            batch.samples = samples;
            let mut latencies = old.latencies;
            latencies.append(&mut batch.latencies);
            batch.latencies = latencies;
            let mut captures = old.captures;
            captures.append(&mut batch.captures);
            batch.captures = captures;
            batch.captures_per_path = batch.captures_per_path.max(old.captures_per_path);
        }
        let mut shed = Shed::default();
        for batch in self.batches.values_mut() {
            if batch.samples.len() > HELD_SAMPLES_PER_ROUTE {
                let extra = batch.samples.len() - HELD_SAMPLES_PER_ROUTE;
                batch.samples.truncate(HELD_SAMPLES_PER_ROUTE);
                shed.samples += extra as u64;
            }
            if batch.latencies.len() > HELD_LATENCIES_PER_ROUTE {
                let extra = batch.latencies.len() - HELD_LATENCIES_PER_ROUTE;
                batch.latencies.drain(..extra);
                shed.latencies += extra as u64;
            }
            if batch.captures.len() > HELD_CAPTURES_PER_ROUTE {
                let extra = batch.captures.len() - HELD_CAPTURES_PER_ROUTE;
                batch.captures.drain(..extra);
                shed.captures += extra as u64;
            }
            while batch.paths.len() > HELD_PATHS_PER_ROUTE {
                let Some(key) = batch
                    .paths
                    .iter()
                    .min_by_key(|(_, n)| **n)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                batch.paths.remove(&key);
                shed.paths += 1;
            }
        }
        shed
    }

    /// Everything gathered, leaving nothing behind.
    pub fn take(&mut self) -> Vec<ShadowBatch> {
        let mut batches: Vec<ShadowBatch> = self.batches.drain().map(|(_, b)| b).collect();
        batches.sort_by(|a, b| a.route.cmp(&b.route));
        batches
    }
}

async fn record(mut receiver: ResultReceiver, store: Box<dyn Store>, health: Arc<StoreHealth>) {
    let store = Arc::new(Mutex::new(store));
    let mut pending = Pending::default();
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    let mut received = Vec::with_capacity(RECEIVE_AT_ONCE);
    loop {
        tokio::select! {
            n = receiver.rx.recv_many(&mut received, RECEIVE_AT_ONCE) => {
                if n == 0 {
                    // Every sender is gone: the data plane stopped. Write what is pending.
                    pending.dropped(receiver.dropped.swap(0, Ordering::Relaxed));
                    let unwritten = flush(&store, pending.take()).await;
                    if !unwritten.is_empty() {
                        tracing::warn!(batches = unwritten.len(), "stopping with shadow results the store did not take");
                    }
                    break;
                }
                for (route, outcome) in received.drain(..) {
                    pending.add(&route, outcome, &receiver.noise);
                }
                // Let results gather before looking again: a sender wakes the recorder only
                // when it waits, so under load this is one wake-up per pause, not one per
                // request (which cost a thread switch each).
                tokio::time::sleep(RECEIVE_PAUSE).await;
            }
            _ = tick.tick() => {
                pending.dropped(receiver.dropped.swap(0, Ordering::Relaxed));
                // While the control thread cannot reach the store, results wait here (within
                // bounds) instead of each flush waiting out the store's timeout.
                if !pending.is_empty() && health.is_up() {
                    let unwritten = flush(&store, pending.take()).await;
                    health.shed(pending.hold(unwritten));
                } else {
                    health.shed(pending.hold(Vec::new()));
                }
            }
        }
    }
}

/// Writes `batches`; answers those the store did not take (from the first failure on).
async fn flush(store: &Arc<Mutex<Box<dyn Store>>>, batches: Vec<ShadowBatch>) -> Vec<ShadowBatch> {
    if batches.is_empty() {
        return batches;
    }
    let store = Arc::clone(store);
    let written = tokio::task::spawn_blocking(move || {
        let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
        let mut rest = batches.into_iter();
        while let Some(batch) = rest.next() {
            if let Err(err) = store.record_shadow(&batch) {
                let mut unwritten = vec![batch];
                unwritten.extend(rest);
                return (unwritten, Some(err));
            }
        }
        (Vec::new(), None)
    })
    .await;
    match written {
        Ok((unwritten, None)) => unwritten,
        Ok((unwritten, Some(err))) => {
            tracing::warn!(error = %err, "cannot record shadow results; holding them");
            unwritten
        }
        Err(err) => {
            tracing::warn!(error = %err, "the shadow recorder's store task failed");
            Vec::new()
        }
    }
}

fn add(batch: &mut ShadowBatch, outcome: Outcome, noise: &Mutex<NoiseMap>, route: &str) {
    match outcome {
        Outcome::Unmirrored(reason) => batch.count(unmirrored_metric(reason), 1),
        Outcome::Error { error, sample } => {
            batch.count(ShadowMetric::Errors, 1);
            tracing::debug!(route, reason = error.reason.as_str(), error = %error.detail, "shadow leg failed");
            batch.samples.push((
                format!("(shadow error {})", error.reason.as_str()),
                sample.to_string(),
            ));
        }
        Outcome::Noise(paths) => {
            let mut known = noise.lock().unwrap_or_else(|p| p.into_inner());
            let set = known.entry(route.to_string()).or_default();
            for p in paths {
                if set.insert(p.clone()) {
                    *batch
                        .paths
                        .entry((p, "noise".to_string(), true))
                        .or_default() += 1;
                }
            }
        }
        Outcome::Compared {
            differences,
            noisy,
            sample,
            primary_ms,
            candidate_ms,
            case,
        } => {
            batch.count(ShadowMetric::Compared, 1);
            if let Some(case) = case {
                batch.captures_per_path = i64::try_from(case.per_path).unwrap_or(i64::MAX);
                batch.captures.push((case.path, case.json));
            }
            let real: Vec<&diff::Difference> = differences
                .iter()
                .filter(|d| !noisy.contains(&diff::group_path(&d.path)))
                .collect();
            let verdict = if differences.is_empty() {
                ShadowMetric::Matched
            } else if real.is_empty() {
                ShadowMetric::NoisyOnly
            } else {
                ShadowMetric::Mismatched
            };
            batch.count(verdict, 1);
            let mut groups = HashSet::new();
            for d in &differences {
                let group = diff::group_path(&d.path);
                let is_noise = noisy.contains(&group);
                if groups.insert((group.clone(), d.kind.code().to_string(), is_noise)) {
                    *batch
                        .paths
                        .entry((group, d.kind.code().to_string(), is_noise))
                        .or_default() += 1;
                }
            }
            if let (Some(sample), Some(first)) = (sample, real.first()) {
                batch
                    .samples
                    .push((diff::group_path(&first.path), sample.to_string()));
            }
            batch.latencies.push((primary_ms, candidate_ms));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diff::{Difference, Kind};
    use serde_json::json;
    use strangler_dataplane::capture::Kept;
    use strangler_dataplane::shadow::{Failure, LegError};

    fn difference(path: &str) -> Difference {
        Difference {
            path: path.to_string(),
            kind: Kind::ValueChanged,
            left: Some(json!(1)),
            right: Some(json!(2)),
        }
    }

    fn compared(paths: &[&str], noisy: &[&str]) -> Outcome {
        Outcome::Compared {
            differences: paths.iter().map(|p| difference(p)).collect(),
            noisy: noisy.iter().map(|p| p.to_string()).collect(),
            sample: (!paths.is_empty()).then(|| json!({ "uri": "/x" })),
            primary_ms: 1.0,
            candidate_ms: 2.0,
            case: None,
        }
    }

    #[test]
    fn results_aggregate_per_route_and_verdict() {
        let noise = Mutex::new(NoiseMap::new());
        let mut pending = Pending::default();
        pending.add("students", compared(&[], &[]), &noise);
        pending.add("students", compared(&["/name"], &[]), &noise);
        pending.add("students", compared(&["/name", "/name"], &[]), &noise);
        pending.add("students", compared(&["/at"], &["/at"]), &noise);
        pending.add(
            "students",
            Outcome::Error {
                error: LegError {
                    reason: Failure::Timeout,
                    detail: "no answer within 5000 ms".into(),
                },
                sample: json!({ "method": "GET", "uri": "/students/1", "error": { "reason": "timeout" } }),
            },
            &noise,
        );
        let mut with_case = compared(&["/name"], &[]);
        if let Outcome::Compared { case, .. } = &mut with_case {
            *case = Some(Kept {
                path: "/name".into(),
                json: r#"{"route":"students"}"#.into(),
                per_path: 4,
            });
        }
        pending.add("students", with_case, &noise);
        pending.add("students", Outcome::Unmirrored(Unmirrored::Busy), &noise);
        pending.add(
            "finance",
            Outcome::Unmirrored(Unmirrored::SampledOut),
            &noise,
        );
        pending.dropped(3);
        let batches = pending.take();
        assert!(pending.is_empty());
        let routes: Vec<&str> = batches.iter().map(|b| b.route.as_str()).collect();
        assert_eq!(routes, ["", "finance", "students"]);
        let students = &batches[2];
        let count = |m| students.counts.get(&m).copied().unwrap_or(0);
        assert_eq!(count(ShadowMetric::Compared), 5);
        assert_eq!(count(ShadowMetric::Matched), 1);
        assert_eq!(count(ShadowMetric::Mismatched), 3);
        assert_eq!(count(ShadowMetric::NoisyOnly), 1);
        assert_eq!(count(ShadowMetric::Errors), 1);
        assert_eq!(
            count(unmirrored_metric(Unmirrored::Busy)),
            1,
            "{:?}",
            students.counts
        );
        // A path counts once per comparison, however often it differs in it.
        assert_eq!(
            students.paths[&("/name".to_string(), "value_changed".to_string(), false)],
            3
        );
        assert_eq!(
            students.paths[&("/at".to_string(), "value_changed".to_string(), true)],
            1
        );
        // Samples are kept for real mismatches and shadow errors (named by their reason),
        // latencies for every comparison; a captured case goes with its path and bound.
        assert_eq!(students.samples.len(), 4);
        assert!(
            students
                .samples
                .iter()
                .any(|(p, s)| p == "(shadow error timeout)" && s.contains("/students/1")),
            "{:?}",
            students.samples
        );
        assert_eq!(students.latencies.len(), 5);
        assert_eq!(
            students.captures,
            [("/name".to_string(), r#"{"route":"students"}"#.to_string())]
        );
        assert_eq!(students.captures_per_path, 4);
        assert_eq!(batches[0].counts[&ShadowMetric::Dropped], 3);
    }

    #[test]
    fn noise_is_learned_once_and_shared_with_the_legs() {
        let noise = Mutex::new(NoiseMap::new());
        let mut pending = Pending::default();
        pending.add("students", Outcome::Noise(vec!["/at".into()]), &noise);
        pending.add(
            "students",
            Outcome::Noise(vec!["/at".into(), "/id".into()]),
            &noise,
        );
        let batch = pending.take().remove(0);
        assert_eq!(batch.paths.len(), 2, "{:?}", batch.paths);
        let known = noise.lock().unwrap();
        assert_eq!(known["students"].len(), 2);
    }

    #[tokio::test]
    async fn stopping_flushes_what_is_pending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let (sender, receiver) =
            strangler_dataplane::shadow::results_channel_with_capacity(NoiseMap::new(), 2);
        let handle = start(
            receiver,
            strangler_store::open(&strangler_plan::StoreLocation::File(path.clone())).unwrap(),
            Arc::new(StoreHealth::new(true)),
        );
        sender.send("students", compared(&[], &[]));
        sender.send("students", compared(&["/name"], &[]));
        // Past the channel's capacity before the recorder ran: counted, not waited for.
        for _ in 0..5 {
            sender.send("students", Outcome::Unmirrored(Unmirrored::Busy));
        }
        drop(sender);
        handle.await.unwrap();
        let store =
            strangler_store::open(&strangler_plan::StoreLocation::File(path.clone())).unwrap();
        let summary = store.shadow_summary("students").unwrap();
        assert_eq!(summary.count(ShadowMetric::Compared), 2);
        assert_eq!(summary.count(ShadowMetric::Mismatched), 1);
        let dropped = store
            .shadow_summary("")
            .unwrap()
            .count(ShadowMetric::Dropped);
        let busy = summary.count(unmirrored_metric(Unmirrored::Busy));
        assert_eq!(
            dropped + busy,
            5,
            "every result is either recorded or counted as dropped"
        );
        assert!(dropped >= 3);
    }

    #[test]
    fn results_the_store_did_not_take_are_held_within_bounds() {
        let mut pending = Pending::default();
        let mut old = ShadowBatch {
            route: "students".to_string(),
            ..ShadowBatch::default()
        };
        old.count(ShadowMetric::Compared, 7_000);
        old.latencies = (0..HELD_LATENCIES_PER_ROUTE + 10)
            .map(|i| (i as f64, 1.0))
            .collect();
        old.samples = (0..HELD_SAMPLES_PER_ROUTE + 3)
            .map(|i| (format!("/p{i}"), "{}".to_string()))
            .collect();
        old.captures = (0..HELD_CAPTURES_PER_ROUTE + 2)
            .map(|i| ("/p".to_string(), format!("{{\"n\":{i}}}")))
            .collect();
        assert_eq!(
            pending.hold(vec![old.clone()]),
            Shed {
                samples: 3,
                latencies: 10,
                paths: 0,
                captures: 2,
            }
        );
        // Held twice: counts add up exactly, the newest latencies stay.
        let shed = pending.hold(vec![old]);
        assert_eq!(shed.latencies, HELD_LATENCIES_PER_ROUTE as u64 + 10);
        let batches = pending.take();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].counts[&ShadowMetric::Compared], 14_000);
        assert_eq!(batches[0].latencies.len(), HELD_LATENCIES_PER_ROUTE);
        assert_eq!(
            batches[0].latencies.last().unwrap().0,
            (HELD_LATENCIES_PER_ROUTE + 9) as f64
        );
        assert_eq!(batches[0].samples.len(), HELD_SAMPLES_PER_ROUTE);
        // The newest cases stay.
        assert_eq!(batches[0].captures.len(), HELD_CAPTURES_PER_ROUTE);
        assert_eq!(
            batches[0].captures.last().unwrap().1,
            format!("{{\"n\":{}}}", HELD_CAPTURES_PER_ROUTE + 1)
        );
    }
}
