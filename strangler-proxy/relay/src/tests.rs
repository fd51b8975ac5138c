//! The relay loop against in-memory ends: what reaches the sink, when the checkpoint moves,
//! and which failures stop a link.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::json;

use super::*;

fn event(seq: i64, origin: &str, event_type: &str) -> Event {
    Event {
        id: format!("e{seq}"),
        seq,
        origin: origin.to_string(),
        event_type: event_type.to_string(),
        key: format!("k{seq}"),
        version: 1,
        at: "2026-11-30T10:00:00.000Z".to_string(),
        data: json!({ "n": seq }),
    }
}

/// A feed held in memory; `head` can be set below the events to play a restored database.
struct MemorySource {
    events: Vec<Event>,
    head: Option<i64>,
}

impl EventSource for MemorySource {
    fn name(&self) -> &str {
        "legacy"
    }

    async fn read(&self, after: i64, limit: u32, _wait: Duration) -> Result<FeedPage, RelayError> {
        let events: Vec<Event> = self
            .events
            .iter()
            .filter(|e| e.seq > after)
            .take(limit as usize)
            .cloned()
            .collect();
        let next = events.last().map_or(after, |e| e.seq);
        let head = self
            .head
            .unwrap_or_else(|| self.events.last().map_or(0, |e| e.seq));
        Ok(FeedPage { events, next, head })
    }
}

/// A sink that records what it applied; it refuses batches over `max_batch` as too large
/// and fails its first `failures` pushes.
#[derive(Default)]
struct MemorySink {
    applied: Mutex<Vec<String>>,
    max_batch: usize,
    failures: AtomicUsize,
    refuse_with: Option<u16>,
}

impl EventSink for Arc<MemorySink> {
    fn name(&self) -> &str {
        "students"
    }

    async fn push(&self, events: &[Event]) -> Result<Pushed, RelayError> {
        if let Some(status) = self.refuse_with {
            return Err(RelayError::Refused {
                participant: "students".into(),
                status,
                body: "no".into(),
            });
        }
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(RelayError::Push {
                participant: "students".into(),
                message: "connection refused".into(),
            });
        }
        if self.max_batch > 0 && events.len() > self.max_batch {
            return Ok(Pushed::TooLarge);
        }
        let mut applied = self.applied.lock().unwrap();
        applied.extend(events.iter().map(|e| e.id.clone()));
        Ok(Pushed::Applied(ApplyReport {
            received: events.len(),
            applied: events.len(),
            ..ApplyReport::default()
        }))
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: SharedStore,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = strangler_store::open(&strangler_plan::StoreLocation::File(
        dir.path().join("s.db"),
    ))
    .unwrap();
    Fixture {
        _dir: dir,
        store: Arc::new(Mutex::new(store)),
    }
}

fn progress(store: &SharedStore) -> LinkProgress {
    let store = store.lock().unwrap();
    store
        .links()
        .unwrap()
        .into_iter()
        .find(|l| l.link == "legacy->students")
        .unwrap_or_default()
}

fn relay(
    f: &Fixture,
    events: Vec<Event>,
    head: Option<i64>,
    types: &[&str],
    sink: &Arc<MemorySink>,
) -> Relay<MemorySource, Arc<MemorySink>> {
    Relay::new(
        "legacy->students".into(),
        types.iter().map(|t| t.to_string()).collect(),
        MemorySource { events, head },
        Arc::clone(sink),
        Arc::clone(&f.store),
    )
}

#[tokio::test]
async fn a_step_delivers_what_the_target_should_see_then_checkpoints() {
    let f = fixture();
    let sink = Arc::new(MemorySink::default());
    let events = vec![
        event(1, "legacy", "student.created"),
        event(2, "students", "student.updated"),
        event(3, "legacy", "invoice.created"),
        event(4, "legacy", "student.updated"),
    ];
    let relay = relay(&f, events, None, &["student.*"], &sink);
    assert_eq!(relay.step(Duration::ZERO).await.unwrap(), 4);
    // Its own echo (origin students) and a filtered type are not sent.
    assert_eq!(*sink.applied.lock().unwrap(), ["e1", "e4"]);
    let p = progress(&f.store);
    assert_eq!((p.checkpoint, p.head, p.applied, p.skipped), (4, 4, 2, 2));
    // Nothing new: nothing sent again.
    assert_eq!(relay.step(Duration::ZERO).await.unwrap(), 0);
    assert_eq!(sink.applied.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_batch_too_large_is_halved_in_order() {
    let f = fixture();
    let sink = Arc::new(MemorySink {
        max_batch: 2,
        ..MemorySink::default()
    });
    let events: Vec<Event> = (1..=7)
        .map(|i| event(i, "legacy", "student.created"))
        .collect();
    relay(&f, events, None, &[], &sink)
        .step(Duration::ZERO)
        .await
        .unwrap();
    let expected: Vec<String> = (1..=7).map(|i| format!("e{i}")).collect();
    assert_eq!(*sink.applied.lock().unwrap(), expected);
    assert_eq!(progress(&f.store).checkpoint, 7);
}

#[tokio::test]
async fn a_failed_push_keeps_the_checkpoint_and_the_loop_retries() {
    let f = fixture();
    let sink = Arc::new(MemorySink {
        failures: AtomicUsize::new(2),
        ..MemorySink::default()
    });
    let events = vec![event(1, "legacy", "student.created")];
    let relay = relay(&f, events, None, &[], &sink);
    let err = relay.step(Duration::ZERO).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(
        progress(&f.store).checkpoint,
        0,
        "not acknowledged: not checkpointed"
    );

    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(relay.run(shutdown));
    let deadline = Instant::now() + Duration::from_secs(10);
    while progress(&f.store).checkpoint < 1 {
        assert!(Instant::now() < deadline, "the relay never delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(*sink.applied.lock().unwrap(), ["e1"]);
    assert_eq!(
        progress(&f.store).last_error,
        None,
        "a delivery clears the error"
    );
}

#[tokio::test]
async fn a_checkpoint_ahead_of_the_feed_stops_the_link_and_is_reported() {
    let f = fixture();
    let sink = Arc::new(MemorySink::default());
    let events: Vec<Event> = (1..=5)
        .map(|i| event(i, "legacy", "student.created"))
        .collect();
    relay(&f, events, None, &[], &sink)
        .step(Duration::ZERO)
        .await
        .unwrap();
    // The source's database is restored from an old backup: its feed ends at 2.
    let restored: Vec<Event> = (1..=2)
        .map(|i| event(i, "legacy", "student.created"))
        .collect();
    let relay = relay(&f, restored, Some(2), &[], &sink);
    let err = relay.step(Duration::ZERO).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    let (_stop, shutdown) = watch::channel(false);
    // The loop ends by itself, without the shutdown signal.
    tokio::time::timeout(Duration::from_secs(10), relay.run(shutdown))
        .await
        .expect("a permanent error stops the link");
    let p = progress(&f.store);
    assert_eq!(p.checkpoint, 5, "the checkpoint is never moved back");
    let reported = p.last_error.unwrap_or_default();
    assert!(reported.contains("feed ends at 2"), "{reported}");
    assert!(reported.contains("checkpoint is 5"), "{reported}");
}

#[tokio::test]
async fn refusals_split_into_transient_and_permanent() {
    for (status, transient) in [(503, true), (429, true), (400, false), (422, false)] {
        let f = fixture();
        let sink = Arc::new(MemorySink {
            refuse_with: Some(status),
            ..MemorySink::default()
        });
        let err = relay(&f, vec![event(1, "legacy", "a.b")], None, &[], &sink)
            .step(Duration::ZERO)
            .await
            .unwrap_err();
        assert_eq!(err.is_transient(), transient, "{status}: {err}");
    }
}

#[test]
fn type_filters() {
    let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(type_matches(&[], "student.created"));
    assert!(type_matches(&p(&["*"]), "invoice.paid"));
    assert!(type_matches(&p(&["student.*"]), "student.updated"));
    assert!(!type_matches(&p(&["student.*"]), "students.updated"));
    assert!(type_matches(&p(&["invoice.paid"]), "invoice.paid"));
    assert!(!type_matches(
        &p(&["invoice.paid", "reward.*"]),
        "invoice.created"
    ));
}
