//! Shadow traffic that yields when the proxy is busy.
//!
//! Each data-plane thread reads, every [`TICK`], how much of the time since the last tick it
//! spent running or ready to run but waiting for a core (Linux's
//! `/proc/thread-self/schedstat`). A thread that is busy nearly all the time is one whose
//! requests queue: behind each other on the thread, or behind other processes for the CPU.
//! That is when the proxy's own latency rises, and when the work a shadow leg adds (a second
//! upstream exchange, a copy of both bodies, a comparison) is paid for by clients. The
//! thread's [`Governor`] keeps a moving average of that busy share and admits shadow legs
//! with a probability that halves every tick while the average is above
//! `[proxy] shadow_max_busy`, and grows back by [`STEP_UP`] per tick once it is a tenth
//! below (additive increase, multiplicative decrease). Legs it refuses are counted as
//! `unmirrored:throttled`, so the match rate says how much of the traffic it covers.
//!
//! Each thread has its own governor (no shared state on the request path); `/metrics`
//! reads them all through [`Pressure`]. Where the kernel does not say (not Linux), shadow
//! never yields.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::listener::until_stopped;

/// How often a thread measures how busy it is.
pub const TICK: Duration = Duration::from_millis(20);
/// Shares (admission probability, busy share) are held in millionths.
const FULL: u32 = 1_000_000;
/// The least a governor admits: a trickle of legs keeps the comparison alive under load.
const FLOOR: u32 = FULL / 100;
/// How much admission grows back per tick below the limit (full from the floor in about a
/// second).
const STEP_UP: u32 = FULL / 50;
/// The moving average's weight of a new measurement, as a shift (1/4).
const SMOOTHING: u32 = 2;

/// One data-plane thread's shadow admission.
#[derive(Debug)]
pub struct Governor {
    /// The busy share above which shadow yields, in millionths (`None`: never).
    max_busy: Option<u32>,
    /// Probability of admitting a shadow leg, in millionths.
    admit: AtomicU32,
    /// Moving average of the thread's busy share, in millionths.
    busy: AtomicU32,
    /// Dice for admission (this thread's own, so no contention).
    dice: AtomicU64,
}

impl Governor {
    /// A governor admitting every leg until its thread is busy more than `max_busy` (a
    /// share of the time, 0 to 1) of the time.
    pub fn new(max_busy: Option<f64>, seed: u64) -> Self {
        Self {
            max_busy: max_busy.map(|share| (share.clamp(0.0, 1.0) * f64::from(FULL)) as u32),
            admit: AtomicU32::new(FULL),
            busy: AtomicU32::new(0),
            dice: AtomicU64::new(seed | 1),
        }
    }

    /// Whether a shadow leg may start now.
    pub fn admits(&self) -> bool {
        let admit = self.admit.load(Ordering::Relaxed);
        if admit >= FULL {
            return true;
        }
        // xorshift: the governor is used from its own thread only, relaxed is enough.
        let mut x = self.dice.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.dice.store(x, Ordering::Relaxed);
        (x % u64::from(FULL)) < u64::from(admit)
    }

    /// The share of shadow legs admitted now (0 to 1).
    pub fn admitted(&self) -> f64 {
        f64::from(self.admit.load(Ordering::Relaxed)) / f64::from(FULL)
    }

    /// The moving average of the share of time the thread is running or waiting to run.
    pub fn busy(&self) -> f64 {
        f64::from(self.busy.load(Ordering::Relaxed)) / f64::from(FULL)
    }

    /// Takes one measurement (the share of the last tick the thread was running or waiting
    /// for a core, 0 to 1) and moves admission.
    pub fn observe(&self, share: f64) {
        let Some(limit) = self.max_busy else { return };
        let sample = (share.clamp(0.0, 1.0) * f64::from(FULL)) as u32;
        let old = self.busy.load(Ordering::Relaxed);
        let average = old - (old >> SMOOTHING) + (sample >> SMOOTHING);
        self.busy.store(average, Ordering::Relaxed);
        let admit = self.admit.load(Ordering::Relaxed);
        let next = if average > limit {
            (admit / 2).max(FLOOR)
        } else if average < limit - limit / 10 {
            admit.saturating_add(STEP_UP).min(FULL)
        } else {
            admit
        };
        self.admit.store(next, Ordering::Relaxed);
    }

    /// Measures the current thread every [`TICK`] until `stopped` (returns at once when
    /// shadow never yields, or the kernel does not say). Spawn it on the thread it governs.
    pub async fn measure(self: Arc<Self>, stopped: watch::Receiver<bool>) {
        if self.max_busy.is_none() {
            return;
        }
        let Some(mut last) = Schedstat::read() else {
            tracing::info!("no /proc/thread-self/schedstat here: shadow does not yield to load");
            return;
        };
        let stop = until_stopped(stopped);
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = &mut stop => return,
            }
            let Some(now) = Schedstat::read() else { return };
            self.observe(now.busy_since(&last));
            last = now;
        }
    }
}

/// A thread's scheduler counters: nanoseconds on a core and waiting for one, when read.
#[derive(Debug, Clone, Copy)]
struct Schedstat {
    at: Instant,
    running_ns: u64,
    waiting_ns: u64,
}

impl Schedstat {
    /// The calling thread's counters (Linux), or `None`.
    fn read() -> Option<Self> {
        let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        Self::parse(&text, Instant::now())
    }

    fn parse(text: &str, at: Instant) -> Option<Self> {
        let mut fields = text.split_ascii_whitespace().map(str::parse::<u64>);
        Some(Self {
            at,
            running_ns: fields.next()?.ok()?,
            waiting_ns: fields.next()?.ok()?,
        })
    }

    /// The share of the time since `earlier` the thread was running or waiting to run.
    fn busy_since(&self, earlier: &Schedstat) -> f64 {
        let wall = self.at.saturating_duration_since(earlier.at).as_nanos() as f64;
        if wall <= 0.0 {
            return 0.0;
        }
        let busy = self.running_ns.saturating_sub(earlier.running_ns)
            + self.waiting_ns.saturating_sub(earlier.waiting_ns);
        (busy as f64 / wall).min(1.0)
    }
}

/// Every data-plane thread's governor, for `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct Pressure {
    governors: Arc<std::sync::Mutex<Vec<Arc<Governor>>>>,
}

impl Pressure {
    pub fn add(&self, governor: Arc<Governor>) {
        if let Ok(mut governors) = self.governors.lock() {
            governors.push(governor);
        }
    }

    /// Per thread: (share of shadow legs admitted, moving average of its busy share).
    pub fn readings(&self) -> Vec<(f64, f64)> {
        self.governors
            .lock()
            .map(|g| g.iter().map(|g| (g.admitted(), g.busy())).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: f64 = 0.8;

    fn admitted_share(governor: &Governor, draws: u32) -> f64 {
        let admitted = (0..draws).filter(|_| governor.admits()).count();
        admitted as f64 / f64::from(draws)
    }

    #[test]
    fn a_calm_thread_admits_every_leg() {
        let governor = Governor::new(Some(LIMIT), 7);
        for _ in 0..100 {
            governor.observe(0.5);
        }
        assert_eq!(governor.admitted(), 1.0);
        assert_eq!(admitted_share(&governor, 1000), 1.0);
    }

    #[test]
    fn a_busy_thread_sheds_legs_down_to_the_floor_then_recovers() {
        let governor = Governor::new(Some(LIMIT), 7);
        for _ in 0..200 {
            governor.observe(1.0);
        }
        assert!(
            governor.busy() > LIMIT,
            "the average follows the measurements"
        );
        assert_eq!(governor.admitted(), 0.01, "held at the floor");
        let share = admitted_share(&governor, 100_000);
        assert!(
            (0.005..0.02).contains(&share),
            "about 1 % admitted, got {share}"
        );
        // The load goes away: admission climbs back to everything.
        for _ in 0..200 {
            governor.observe(0.1);
        }
        assert!(governor.busy() < 0.2);
        assert_eq!(governor.admitted(), 1.0);
    }

    #[test]
    fn one_busy_tick_does_not_throttle() {
        let governor = Governor::new(Some(LIMIT), 7);
        for _ in 0..50 {
            governor.observe(0.3);
        }
        governor.observe(1.0);
        assert_eq!(
            governor.admitted(),
            1.0,
            "one tick moves the average by a quarter"
        );
    }

    #[test]
    fn without_a_limit_every_leg_is_admitted() {
        let governor = Governor::new(None, 7);
        for _ in 0..100 {
            governor.observe(1.0);
        }
        assert_eq!(governor.admitted(), 1.0);
    }

    #[test]
    fn busy_share_is_running_plus_waiting_over_the_wall_clock() {
        let t0 = Instant::now();
        let earlier = Schedstat::parse("1000000 2000000 10\n", t0).unwrap();
        let later =
            Schedstat::parse("21000000 12000000 30\n", t0 + Duration::from_millis(50)).unwrap();
        // 20 ms running + 10 ms waiting in 50 ms.
        assert!((later.busy_since(&earlier) - 0.6).abs() < 1e-9);
        assert!(Schedstat::parse("garbage", t0).is_none());
        assert!(Schedstat::parse("", t0).is_none());
    }

    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "current_thread")]
    async fn a_thread_kept_busy_throttles_its_shadow() {
        let governor = Arc::new(Governor::new(Some(LIMIT), 7));
        let (stop_tx, stop) = watch::channel(false);
        let measuring = tokio::spawn(Arc::clone(&governor).measure(stop));
        // A task that keeps the thread running, yielding only so the governor gets its turn.
        let busy = tokio::spawn(async {
            loop {
                let until = Instant::now() + Duration::from_millis(5);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
                tokio::task::yield_now().await;
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while governor.admitted() >= 1.0 {
            assert!(
                Instant::now() < deadline,
                "never throttled (busy {})",
                governor.busy()
            );
            tokio::time::sleep(TICK).await;
        }
        busy.abort();
        let _ = stop_tx.send(true);
        let _ = measuring.await;
    }
}
