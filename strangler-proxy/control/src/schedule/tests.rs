//! The scheduler against a real SQLite store, with a verifier that only counts: a schedule
//! never runs twice at once, a run due while the previous one goes is skipped, and of two
//! schedulers on one store only the lease holder runs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::Semaphore;

use super::*;

/// A verifier whose runs wait for a permit; it counts runs and the most at once.
struct Gate {
    permits: Semaphore,
    active: AtomicUsize,
    most: AtomicUsize,
    runs: AtomicUsize,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            permits: Semaphore::new(0),
            active: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            runs: AtomicUsize::new(0),
        }
    }
}

impl Verifier for Arc<Gate> {
    fn run(&self, _plan: Arc<Plan>, _schedule: ScheduleSpec) -> RunFuture {
        let gate = Arc::clone(self);
        Box::pin(async move {
            gate.runs.fetch_add(1, Ordering::SeqCst);
            let now = gate.active.fetch_add(1, Ordering::SeqCst) + 1;
            gate.most.fetch_max(now, Ordering::SeqCst);
            let permit = gate.permits.acquire().await;
            gate.active.fetch_sub(1, Ordering::SeqCst);
            permit.map(|p| p.forget()).map_err(|e| e.to_string())
        })
    }
}

fn plan(dir: &std::path::Path) -> Arc<ArcSwap<Plan>> {
    let text = format!(
        r#"
        [proxy]
        listen = "127.0.0.1:0"
        admin_listen = "127.0.0.1:0"
        state = "{}"
        [services.legacy]
        urls = ["http://127.0.0.1:1"]
        legacy = true
        [services.students]
        urls = ["http://127.0.0.1:2"]
        [[sync]]
        from = "legacy"
        to = "students"
        [[schedule]]
        verify = "legacy->students"
        every = "1s"
        "#,
        dir.join("state.db").display()
    );
    let plan = strangler_plan::parse(&dir.join("plan.toml"), &text).expect("the plan is valid");
    Arc::new(ArcSwap::from_pointee(plan))
}

/// Polls `done` until it holds, failing after a deadline.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn counts(board: &ScheduleBoard) -> ScheduleCounts {
    board
        .lock()
        .unwrap()
        .get("legacy->students")
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_never_runs_twice_at_once_and_skips_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let (stop, stopping) = watch::channel(false);
    let scheduler =
        Scheduler::start_with(plan(dir.path()), stopping, Arc::new(Arc::clone(&gate))).unwrap();
    // Never verified: due at once. The run holds; the next ones fall due while it goes.
    until("a due run is skipped", || {
        counts(&scheduler.board).skipped >= 2
    })
    .await;
    assert_eq!(gate.runs.load(Ordering::SeqCst), 1, "one run while it goes");
    assert!(counts(&scheduler.board).running);
    gate.permits.add_permits(1);
    until("a second run starts", || {
        gate.runs.load(Ordering::SeqCst) >= 2
    })
    .await;
    gate.permits.add_permits(1);
    until("it finishes", || !counts(&scheduler.board).running).await;
    assert_eq!(gate.most.load(Ordering::SeqCst), 1, "never two at once");
    let _ = stop.send(true);
    scheduler.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_schedulers_on_one_store_only_the_lease_holder_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (first_gate, second_gate) = (Arc::new(Gate::default()), Arc::new(Gate::default()));
    // Every run finishes at once.
    first_gate.permits.add_permits(1000);
    second_gate.permits.add_permits(1000);
    let (stop_first, first_stopping) = watch::channel(false);
    let (stop_second, second_stopping) = watch::channel(false);
    let first = Scheduler::start_with(
        plan(dir.path()),
        first_stopping,
        Arc::new(Arc::clone(&first_gate)),
    )
    .unwrap();
    let second = Scheduler::start_with(
        plan(dir.path()),
        second_stopping,
        Arc::new(Arc::clone(&second_gate)),
    )
    .unwrap();
    let runs = |g: &Gate| g.runs.load(Ordering::SeqCst);
    until("three runs", || runs(&first_gate) + runs(&second_gate) >= 3).await;
    let (a, b) = (runs(&first_gate), runs(&second_gate));
    assert!(a == 0 || b == 0, "both ran: {a} and {b}");
    // The holder stops (giving its lease up); the other takes over.
    let (holder, stop_holder, other_gate, other, stop_other) = if a > 0 {
        (first, stop_first, second_gate, second, stop_second)
    } else {
        (second, stop_second, first_gate, first, stop_first)
    };
    let _ = stop_holder.send(true);
    holder.join().await;
    until("the other scheduler runs", || runs(&other_gate) >= 1).await;
    let _ = stop_other.send(true);
    other.join().await;
}

#[test]
fn a_difference_is_news_only_when_it_appears() {
    let record = |link: &str, started_ms: i64, by_kind: &[(&str, i64)]| VerifyRecord {
        link: link.into(),
        kinds: by_kind.iter().map(|(k, _)| k.to_string()).collect(),
        complete: true,
        compared: 10,
        missing: 0,
        extra: 0,
        differing: by_kind.iter().map(|(_, n)| n).sum(),
        in_flight: 0,
        repaired: 0,
        by_kind: by_kind.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
        passed: by_kind.iter().all(|(_, n)| *n == 0),
        started_ms,
        finished_ms: started_ms + 1,
    };
    let kinds = |news: Vec<(&VerifyRecord, Vec<String>)>| {
        news.into_iter()
            .map(|(r, k)| format!("{}:{}", r.link, k.join("+")))
            .collect::<Vec<_>>()
    };
    let equal = record("a->b", 1, &[("student", 0), ("invoice", 0)]);
    let differs = record("a->b", 2, &[("student", 2), ("invoice", 0)]);
    let still = record("a->b", 3, &[("student", 1), ("invoice", 0)]);
    let more = record("a->b", 4, &[("student", 1), ("invoice", 1)]);
    assert_eq!(
        kinds(appeared(&[], std::slice::from_ref(&differs))),
        ["a->b:student"]
    );
    assert_eq!(
        kinds(appeared(
            std::slice::from_ref(&equal),
            std::slice::from_ref(&differs)
        )),
        ["a->b:student"]
    );
    assert!(
        appeared(std::slice::from_ref(&differs), std::slice::from_ref(&still)).is_empty(),
        "not news twice"
    );
    assert!(
        appeared(
            std::slice::from_ref(&differs),
            std::slice::from_ref(&differs)
        )
        .is_empty(),
        "no new result"
    );
    assert_eq!(kinds(appeared(&[still], &[more])), ["a->b:invoice"]);
    assert!(appeared(&[differs], std::slice::from_ref(&equal)).is_empty());
    let other = record("c->d", 5, &[("reward", 3)]);
    assert_eq!(
        kinds(appeared(
            std::slice::from_ref(&equal),
            &[equal.clone(), other]
        )),
        ["c->d:reward"]
    );
}
