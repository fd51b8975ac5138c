//! A route's rate limit: a token bucket per key (`governor`'s keyed GCRA, one 64-bit hash
//! per key, so no key is copied onto the heap), kept across table rebuilds.
//!
//! Memory is bounded: a pruning thread, once a second, drops every bucket that is full
//! again (a key idle long enough to have its whole burst back is indistinguishable from a
//! new one, so forgetting it changes nothing), and if more than `max_keys` remain (many
//! keys, each busy within the second), forgets them all. So a limit holds at most
//! `max_keys` plus the keys that arrive within one second, about 16 bytes of state each
//! plus the map's overhead; the reset, when it happens, is counted and logged.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use http::HeaderValue;
use strangler_plan::edge::RateLimitSpec;

/// How often buckets are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// One route's buckets.
pub struct Limiter {
    pub spec: RateLimitSpec,
    /// Swapped for an empty one when more than `max_keys` are busy.
    buckets: ArcSwap<DefaultKeyedRateLimiter<u64>>,
    quota: Quota,
    /// Keys are hashed with a per-process secret, so a client cannot aim at another's
    /// bucket.
    hasher: RandomState,
    /// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers): the bucket's size and
    /// the seconds it takes to refill.
    pub policy: HeaderValue,
    /// The policy's name, as `RateLimit` names it.
    name: String,
    /// Times every bucket was forgotten because more than `max_keys` were busy at once.
    pub resets: AtomicU64,
}

impl Limiter {
    /// A limiter for the route `name`, with its pruning thread (which ends with it).
    pub fn start(name: &str, spec: &RateLimitSpec) -> Arc<Self> {
        let period = (spec.per / spec.requests).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(spec.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let window = (f64::from(spec.burst) / spec.per_second()).ceil().max(1.0) as u64;
        let policy = HeaderValue::from_str(&format!("\"{name}\";q={};w={window}", spec.burst))
            .unwrap_or_else(|_| HeaderValue::from_static("\"edge\""));
        let limiter = Arc::new(Self {
            spec: spec.clone(),
            buckets: ArcSwap::from_pointee(DefaultKeyedRateLimiter::keyed(quota)),
            quota,
            hasher: RandomState::new(),
            policy,
            name: name.to_string(),
            resets: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&limiter);
        let started = std::thread::Builder::new()
            .name("strangler-rate-prune".into())
            .spawn(move || prune(&weak));
        if let Err(err) = started {
            tracing::error!(error = %err, route = name, "cannot start rate-limit pruning");
        }
        limiter
    }

    /// Takes one request from `key`'s bucket; `Err(wait)`: empty, full again in `wait`.
    pub fn check(&self, key: &[u8]) -> Result<(), Duration> {
        let mut hasher = self.hasher.build_hasher();
        hasher.write(key);
        let key = hasher.finish();
        self.buckets
            .load()
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// The `RateLimit` header of a refusal: nothing left, full again in `wait`.
    pub fn exhausted(&self, wait: Duration) -> HeaderValue {
        HeaderValue::from_str(&format!("\"{}\";r=0;t={}", self.name, seconds(wait)))
            .unwrap_or_else(|_| HeaderValue::from_static("\"edge\";r=0"))
    }

    /// Keys tracked now (for `/metrics`).
    pub fn keys(&self) -> usize {
        self.buckets.load().len()
    }
}

/// Whole seconds to wait, at least 1 (what `Retry-After` and `t=` say).
pub fn seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

fn prune(limiter: &Weak<Limiter>) {
    loop {
        std::thread::sleep(PRUNE_EVERY);
        let Some(limiter) = limiter.upgrade() else {
            return;
        };
        let buckets = limiter.buckets.load_full();
        buckets.retain_recent();
        let keys = buckets.len();
        if keys > limiter.spec.max_keys {
            // Busy keys beyond the bound: forget every bucket rather than grow.
            limiter
                .buckets
                .store(Arc::new(DefaultKeyedRateLimiter::keyed(limiter.quota)));
            limiter.resets.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                route = %limiter.name,
                keys,
                max_keys = limiter.spec.max_keys,
                "rate limit tracked more keys than max_keys; every bucket starts full again"
            );
        }
        buckets.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strangler_plan::edge::RateKey;

    fn spec(requests: u32, burst: u32) -> RateLimitSpec {
        RateLimitSpec {
            requests,
            per: Duration::from_secs(60),
            burst,
            key: RateKey::Client,
            max_keys: 10,
        }
    }

    #[test]
    fn a_key_gets_its_burst_then_waits_and_keys_do_not_share() {
        let limiter = Limiter::start("r", &spec(60, 3));
        for _ in 0..3 {
            assert_eq!(limiter.check(b"a"), Ok(()));
        }
        let wait = limiter.check(b"a").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(limiter.check(b"b"), Ok(()));
        assert_eq!(limiter.policy, "\"r\";q=3;w=3");
        assert_eq!(limiter.exhausted(wait), "\"r\";r=0;t=1");
        assert_eq!(limiter.keys(), 2);
    }

    #[test]
    fn waits_round_up_to_whole_seconds() {
        assert_eq!(seconds(Duration::from_millis(1)), 1);
        assert_eq!(seconds(Duration::from_secs(2)), 2);
        assert_eq!(seconds(Duration::from_millis(2001)), 3);
        assert_eq!(seconds(Duration::ZERO), 1);
    }
}
