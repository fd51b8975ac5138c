//! Upstream services: their instances, round-robin selection and passive health.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::Uri;
use http::uri::{Authority, Scheme};

use strangler_plan::{ServiceSpec, UpstreamProtocol};

/// How long an instance that failed is skipped.
pub const EJECTION: Duration = Duration::from_secs(5);

/// One instance of a service.
#[derive(Debug)]
pub struct Instance {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Milliseconds since `Upstream::epoch` before which the instance is skipped (0: healthy).
    unhealthy_until_ms: AtomicU64,
}

/// A service the proxy forwards to.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub instances: Vec<Instance>,
    /// What its instances speak.
    pub protocol: UpstreamProtocol,
    /// Round-robin cursor.
    next: AtomicUsize,
    /// Reference point for the health clock.
    epoch: Instant,
}

impl Upstream {
    pub fn new(spec: &ServiceSpec) -> Self {
        let instances = spec
            .urls
            .iter()
            .filter_map(|url| {
                Some(Instance {
                    scheme: url.scheme()?.clone(),
                    authority: url.authority()?.clone(),
                    unhealthy_until_ms: AtomicU64::new(0),
                })
            })
            .collect();
        Self {
            name: spec.name.clone(),
            instances,
            protocol: spec.protocol,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The next healthy instance in turn; when every instance is ejected, the next in turn
    /// anyway (trying is better than failing without trying).
    pub fn pick(&self) -> Option<(usize, &Instance)> {
        let n = self.instances.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        for k in 0..n {
            let i = (start + k) % n;
            let instance = &self.instances[i];
            if instance.unhealthy_until_ms.load(Ordering::Relaxed) <= now {
                return Some((i, instance));
            }
        }
        let i = start % n;
        Some((i, &self.instances[i]))
    }

    /// Ejects instance `i` for [`EJECTION`] after a connect failure.
    pub fn mark_failed(&self, i: usize) {
        if let Some(instance) = self.instances.get(i) {
            let until = self.now_ms() + u64::try_from(EJECTION.as_millis()).unwrap_or(5000);
            instance.unhealthy_until_ms.store(until, Ordering::Relaxed);
        }
    }

    /// Marks instance `i` healthy after a successful exchange.
    pub fn mark_ok(&self, i: usize) {
        if let Some(instance) = self.instances.get(i)
            && instance.unhealthy_until_ms.load(Ordering::Relaxed) != 0
        {
            instance.unhealthy_until_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Whether instance `i` is currently ejected.
    pub fn is_ejected(&self, i: usize) -> bool {
        self.instances
            .get(i)
            .is_some_and(|inst| inst.unhealthy_until_ms.load(Ordering::Relaxed) > self.now_ms())
    }

    /// The full URI of `path_and_query` on `instance`.
    pub fn uri(instance: &Instance, path_and_query: &str) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(instance.scheme.clone())
            .authority(instance.authority.clone())
            .path_and_query(path_and_query)
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(n: usize) -> Upstream {
        Upstream::new(&ServiceSpec {
            name: "s".into(),
            urls: (0..n)
                .map(|i| format!("http://127.0.0.1:{}", 7000 + i).parse().unwrap())
                .collect(),
            legacy: false,
            run: None,
            max_in_flight: strangler_plan::DEFAULT_MAX_IN_FLIGHT,
            protocol: UpstreamProtocol::Http1,
            ca: None,
        })
    }

    #[test]
    fn round_robin_skips_ejected_instances() {
        let u = upstream(3);
        let picks: Vec<usize> = (0..6).map(|_| u.pick().unwrap().0).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        u.mark_failed(1);
        let picks: Vec<usize> = (0..4).map(|_| u.pick().unwrap().0).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        u.mark_ok(1);
        assert!(!u.is_ejected(1));
    }

    #[test]
    fn all_ejected_still_tries() {
        let u = upstream(2);
        u.mark_failed(0);
        u.mark_failed(1);
        assert!(u.pick().is_some());
    }
}
