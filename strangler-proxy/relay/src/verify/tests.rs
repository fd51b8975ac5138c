//! The verify walk against in-memory sides (and the PostgreSQL reader against a real
//! server): what it counts, what it reads again, where it resumes, and what a repair sends.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use strangler_feed::{ApplyReport, Entity, Event, SnapshotPage};
use strangler_plan::SyncLink;

use super::*;

/// One side held in memory: entities per kind by key, applying events as a participant
/// does (a known id is a duplicate, a version not above the held one is stale).
struct MemorySide {
    name: &'static str,
    entities: Mutex<BTreeMap<String, BTreeMap<String, Entity>>>,
    applied: Mutex<Vec<Event>>,
    /// Page reads so far.
    reads: AtomicUsize,
    /// Reads after which every read fails (an interruption).
    fail_after: Option<usize>,
    /// Entities written once `reads` passes the number (the relay delivering meanwhile).
    arriving: Mutex<Vec<(usize, String, Entity)>>,
}

impl MemorySide {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            entities: Mutex::default(),
            applied: Mutex::default(),
            reads: AtomicUsize::new(0),
            fail_after: None,
            arriving: Mutex::default(),
        }
    }

    fn with(self, kind: &str, key: &str, version: i64, name: &str) -> Self {
        self.put(kind, key, version, name);
        self
    }

    fn put(&self, kind: &str, key: &str, version: i64, name: &str) {
        self.entities
            .lock()
            .unwrap()
            .entry(kind.to_string())
            .or_default()
            .insert(key.to_string(), entity(key, version, name));
    }

    fn get(&self, kind: &str, key: &str) -> Option<Entity> {
        self.entities.lock().unwrap().get(kind)?.get(key).cloned()
    }
}

fn entity(key: &str, version: i64, name: &str) -> Entity {
    Entity {
        key: key.to_string(),
        version,
        state: json!({ "id": key, "name": name }),
    }
}

impl SnapshotReader for MemorySide {
    fn name(&self) -> &str {
        self.name
    }

    async fn kinds(&self) -> Result<Vec<String>, VerifyError> {
        Ok(self.entities.lock().unwrap().keys().cloned().collect())
    }

    async fn page(&self, kind: &str, after: &str, limit: u32) -> Result<SnapshotPage, VerifyError> {
        let reads = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_after.is_some_and(|n| reads > n) {
            return Err(VerifyError::Read {
                side: self.name.to_string(),
                message: "connection reset".into(),
            });
        }
        for (at, kind, e) in self.arriving.lock().unwrap().iter() {
            if reads > *at {
                self.put(kind, &e.key, e.version, e.state["name"].as_str().unwrap());
            }
        }
        let all = self.entities.lock().unwrap();
        let of_kind = all.get(kind).cloned().unwrap_or_default();
        let mut entities: Vec<Entity> = of_kind
            .range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            .map(|(_, e)| e.clone())
            .take(limit as usize + 1)
            .collect();
        let more = entities.len() > limit as usize;
        entities.truncate(limit as usize);
        let next = more
            .then(|| entities.last().map(|e| e.key.clone()))
            .flatten();
        Ok(SnapshotPage { entities, next })
    }

    async fn apply(&self, events: &[Event]) -> Result<Option<ApplyReport>, VerifyError> {
        let mut report = ApplyReport {
            received: events.len(),
            ..ApplyReport::default()
        };
        for e in events {
            let mut applied = self.applied.lock().unwrap();
            if applied.iter().any(|a| a.id == e.id) {
                report.duplicates += 1;
                continue;
            }
            if self
                .get(e.kind(), &e.key)
                .is_some_and(|held| held.version >= e.version)
            {
                report.stale += 1;
                continue;
            }
            self.entities
                .lock()
                .unwrap()
                .entry(e.kind().to_string())
                .or_default()
                .insert(
                    e.key.clone(),
                    Entity {
                        key: e.key.clone(),
                        version: e.version,
                        state: e.data.clone(),
                    },
                );
            applied.push(e.clone());
            report.applied += 1;
        }
        Ok(Some(report))
    }
}

#[derive(Default)]
struct Seen {
    resumed: Mutex<Vec<(String, String, i64)>>,
    pages: AtomicUsize,
}

impl Observer for Seen {
    fn resumed(&self, _walk: &str, kind: &str, after: &str, compared: i64) {
        self.resumed
            .lock()
            .unwrap()
            .push((kind.to_string(), after.to_string(), compared));
    }

    fn progress(&self, _progress: &Progress<'_>) {
        self.pages.fetch_add(1, Ordering::SeqCst);
    }
}

fn store() -> (tempfile::TempDir, SharedStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = strangler_store::open(&strangler_plan::StoreLocation::File(
        dir.path().join("strangler.db"),
    ))
    .unwrap();
    (dir, Arc::new(Mutex::new(store)))
}

fn link(from: &str, to: &str, types: &[&str]) -> SyncLink {
    SyncLink {
        from: strangler_plan::LinkSource::Service(from.to_string()),
        to: strangler_plan::LinkTarget::Service(to.to_string()),
        types: types.iter().map(|t| t.to_string()).collect(),
    }
}

fn walk_of(types: &[&str]) -> Walk {
    let l = link("legacy", "students", types);
    Walk {
        link_kinds: vec![link_kinds(&l)],
        links: vec![l],
        only: None,
    }
}

fn options(page: u32) -> Options {
    Options {
        page,
        ..Options::default()
    }
}

#[tokio::test]
async fn the_walk_counts_missing_extra_and_differing_and_stores_the_result() {
    let (_dir, store) = store();
    let source = MemorySide::new("legacy")
        .with("student", "a", 0, "only on the source, no event")
        .with("student", "b", 1, "same")
        .with("student", "c", 2, "changed behind the outbox")
        .with("student", "d", 1, "same")
        .with("student", "\u{e9}", 1, "same, a key above ASCII");
    let target = MemorySide::new("students")
        .with("student", "b", 1, "same")
        .with("student", "c", 2, "changed on the target")
        .with("student", "d", 1, "same")
        .with("student", "e", 0, "only on the target")
        .with("student", "\u{e9}", 1, "same, a key above ASCII");
    let seen = Seen::default();
    let report = run_walk(
        &walk_of(&["student.*"]),
        &source,
        &target,
        &store,
        &options(2),
        &seen,
    )
    .await
    .unwrap();
    let kind = &report.kinds[0];
    assert_eq!(
        (
            kind.compared,
            kind.missing,
            kind.extra,
            kind.differing,
            kind.in_flight
        ),
        (6, 1, 1, 1, 0)
    );
    assert_eq!(kind.paths, BTreeMap::from([("/name".to_string(), 1)]));
    let findings: Vec<(&str, Finding)> = kind
        .samples
        .iter()
        .map(|s| (s.key.as_str(), s.finding))
        .collect();
    assert_eq!(
        findings,
        [
            ("a", Finding::Missing),
            ("c", Finding::Differing),
            ("e", Finding::Extra)
        ]
    );
    assert_eq!(kind.samples[1].differences[0].path, "/name");
    assert!(!report.passed);
    assert!(seen.pages.load(Ordering::SeqCst) >= 3, "a round per page");

    let stored = store.lock().unwrap().last_verifies().unwrap();
    assert_eq!(stored.len(), 1);
    let r = &stored[0];
    assert_eq!(r.link, "legacy->students");
    assert_eq!(
        (
            r.compared,
            r.missing,
            r.extra,
            r.differing,
            r.passed,
            r.complete
        ),
        (6, 1, 1, 1, false, true)
    );
    assert_eq!(
        store
            .lock()
            .unwrap()
            .verify_cursor("legacy->students", "student")
            .unwrap(),
        None,
        "a finished verify leaves no cursor"
    );
}

#[tokio::test]
async fn a_difference_the_relay_is_carrying_is_read_again_and_counted_in_flight() {
    let (_dir, store) = store();
    let source = MemorySide::new("legacy")
        .with("student", "a", 2, "renamed")
        .with("student", "b", 1, "new")
        .with("student", "c", 3, "renamed twice");
    let target = MemorySide::new("students")
        .with("student", "a", 1, "old")
        .with("student", "c", 2, "renamed");
    // The relay delivers `a` and `b` before the second read; `c` stays behind.
    target.arriving.lock().unwrap().extend([
        (1, "student".to_string(), entity("a", 2, "renamed")),
        (1, "student".to_string(), entity("b", 1, "new")),
    ]);
    let report = run_walk(
        &walk_of(&["student.*"]),
        &source,
        &target,
        &store,
        &options(100),
        &Seen::default(),
    )
    .await
    .unwrap();
    let kind = &report.kinds[0];
    assert_eq!(
        (kind.compared, kind.in_flight, kind.differing, kind.missing),
        (3, 2, 1, 0)
    );
    assert_eq!(kind.samples[0].key, "c");
    assert_eq!(kind.samples[0].source.as_ref().unwrap().version, 3);
    assert!(target.reads.load(Ordering::SeqCst) >= 2, "read again");
}

#[tokio::test]
async fn an_interrupted_walk_resumes_after_the_last_counted_key() {
    let (_dir, store) = store();
    let mut source = MemorySide::new("legacy");
    let target = MemorySide::new("students");
    for i in 0..50 {
        let key = format!("k{i:03}");
        source.put("student", &key, 1, "same");
        if i != 7 && i != 41 {
            target.put("student", &key, 1, "same");
        }
    }
    source.put("invoice", "i1", 1, "same");
    target.put("invoice", "i1", 1, "different");
    source.fail_after = Some(3);
    let walk = walk_of(&["student.*", "invoice.*"]);
    let err = run_walk(
        &walk,
        &source,
        &target,
        &store,
        &options(10),
        &Seen::default(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("connection reset"), "{err}");
    let cursor = store
        .lock()
        .unwrap()
        .verify_cursor("legacy->students", "student")
        .unwrap()
        .unwrap();
    assert!(!cursor.done);
    assert!(!cursor.after.is_empty(), "some pages were counted");
    assert!(store.lock().unwrap().last_verifies().unwrap().is_empty());

    source.fail_after = None;
    let seen = Seen::default();
    let report = run_walk(&walk, &source, &target, &store, &options(10), &seen)
        .await
        .unwrap();
    assert!(report.resumed);
    let resumed = seen.resumed.lock().unwrap().clone();
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].1, cursor.after);
    let students = &report.kinds[0];
    assert_eq!(
        students.compared, 50,
        "each key counted once across both runs"
    );
    assert_eq!(students.missing, 2);
    assert_eq!(
        students.resumed_after.as_deref(),
        Some(cursor.after.as_str())
    );
    assert_eq!(report.kinds[1].differing, 1);

    // --restart walks from the first key again.
    let seen = Seen::default();
    source.fail_after = Some(1);
    run_walk(&walk, &source, &target, &store, &options(10), &seen)
        .await
        .unwrap_err();
    source.fail_after = None;
    let restarted = Options {
        restart: true,
        ..options(10)
    };
    let report = run_walk(&walk, &source, &target, &store, &restarted, &seen)
        .await
        .unwrap();
    assert!(!report.resumed);
    assert_eq!(report.kinds[0].compared, 50);
    assert!(seen.resumed.lock().unwrap().is_empty());
}

#[tokio::test]
async fn repair_re_emits_the_winner_above_both_versions_so_later_writes_flow() {
    let (_dir, store) = store();
    let source = MemorySide::new("legacy")
        .with("student", "tie", 4, "the source's")
        .with("student", "newer-on-target", 2, "old")
        .with("student", "missing", 3, "only here")
        .with("student", "same", 1, "same");
    let target = MemorySide::new("students")
        .with("student", "tie", 4, "the target's")
        .with("student", "newer-on-target", 5, "new")
        .with("student", "extra", 1, "only there")
        .with("student", "same", 1, "same");
    let repair = Options {
        repair: Some(Side::Source),
        ..options(100)
    };
    let walk = walk_of(&["student.*"]);
    let report = run_walk(&walk, &source, &target, &store, &repair, &Seen::default())
        .await
        .unwrap();
    let kind = &report.kinds[0];
    assert_eq!((kind.differing, kind.missing, kind.extra), (2, 1, 1));
    assert_eq!((kind.repaired, kind.not_repaired), (3, 1));
    let extra = kind.repairs.iter().find(|n| n.key == "extra").unwrap();
    assert!(
        !extra.repaired && extra.what.contains("delete event"),
        "{extra:?}"
    );

    let both = |key: &str| (source.get("student", key), target.get("student", key));
    let (a, b) = both("tie");
    assert_eq!(a, b, "the source wins a tie");
    assert_eq!(a.unwrap(), entity("tie", 5, "the source's"));
    let (a, b) = both("newer-on-target");
    assert_eq!(a, b);
    assert_eq!(a.unwrap(), entity("newer-on-target", 6, "new"));
    let (a, b) = both("missing");
    assert_eq!(a, b);
    assert_eq!(a.unwrap().version, 4);
    let repairs: Vec<String> = source
        .applied
        .lock()
        .unwrap()
        .iter()
        .map(|e| format!("{} {} {}", e.event_type, e.key, e.origin))
        .collect();
    assert_eq!(
        repairs,
        [
            "student.repaired missing legacy",
            "student.repaired newer-on-target students",
            "student.repaired tie legacy"
        ]
    );

    // The next ordinary write on the source (its next version) is applied on the target.
    let next = Event {
        id: "ordinary".into(),
        seq: 0,
        origin: "legacy".into(),
        event_type: "student.updated".into(),
        key: "tie".into(),
        version: source.get("student", "tie").unwrap().version + 1,
        at: "2026-12-01T10:00:00.000Z".into(),
        data: json!({ "id": "tie", "name": "later" }),
    };
    let applied = target.apply(&[next]).await.unwrap().unwrap();
    assert_eq!(applied.applied, 1);

    // A second verify finds the sides equal but for the extra entity; --prefer target
    // copies it to the source.
    let prefer_target = Options {
        repair: Some(Side::Target),
        ..options(100)
    };
    source.put("student", "tie", 6, "later");
    let report = run_walk(
        &walk,
        &source,
        &target,
        &store,
        &prefer_target,
        &Seen::default(),
    )
    .await
    .unwrap();
    assert_eq!(report.kinds[0].differences(), 1);
    assert_eq!(report.kinds[0].repaired, 1);
    assert_eq!(source.get("student", "extra").unwrap().version, 2);
    let report = run_walk(
        &walk,
        &source,
        &target,
        &store,
        &options(100),
        &Seen::default(),
    )
    .await
    .unwrap();
    assert!(report.passed, "{:?}", report.kinds[0].samples);
}

#[tokio::test]
async fn a_side_serving_keys_out_of_order_is_refused() {
    let (_dir, store) = store();
    struct Unordered;
    impl SnapshotReader for Unordered {
        fn name(&self) -> &str {
            "students"
        }
        async fn kinds(&self) -> Result<Vec<String>, VerifyError> {
            Ok(vec!["student".into()])
        }
        async fn page(&self, _: &str, _: &str, _: u32) -> Result<SnapshotPage, VerifyError> {
            Ok(SnapshotPage {
                entities: vec![entity("b", 1, "x"), entity("B", 1, "x")],
                next: None,
            })
        }
    }
    let source = MemorySide::new("legacy").with("student", "a", 1, "x");
    let err = run_walk(
        &walk_of(&[]),
        &source,
        &Unordered,
        &store,
        &options(10),
        &Seen::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, VerifyError::OutOfOrder { .. }), "{err}");
}

#[test]
fn a_route_is_walked_once_per_pair_of_participants() {
    let plan_text = format!(
        "{}\n[[routes]]\nname = \"finance\"\npaths = [\"/finance\"]\nservice = \"finance\"\n\n\
         [[sync]]\nfrom = \"legacy\"\nto = \"finance\"\ntypes = [\"student.*\", \"invoice.*\"]\n\n\
         [[sync]]\nfrom = \"finance\"\nto = \"legacy\"\ntypes = [\"invoice.paid\"]\n\n\
         [[sync]]\nfrom = \"legacy\"\nto = \"students\"\ntypes = [\"student.*\"]\n",
        "[proxy]\nlisten = \"127.0.0.1:1\"\nadmin_listen = \"127.0.0.1:2\"\nstate = \"s.db\"\n\
         [services.legacy]\nurls = [\"http://127.0.0.1:3\"]\nlegacy = true\n\
         [services.finance]\nurls = [\"http://127.0.0.1:4\"]\n\
         [services.students]\nurls = [\"http://127.0.0.1:5\"]\n"
    );
    let plan = strangler_plan::parse(std::path::Path::new("plan.toml"), &plan_text).unwrap();
    let walks = plan_walks(&plan, "finance", &[]).unwrap();
    assert_eq!(walks.len(), 1);
    assert_eq!(walks[0].name(), "legacy->finance");
    assert_eq!(walks[0].links.len(), 2);
    assert_eq!(
        walks[0].link_kinds,
        [
            Some(vec!["student".to_string(), "invoice".to_string()]),
            Some(vec!["invoice".to_string()])
        ]
    );
    let one = plan_walks(&plan, "finance->legacy", &["invoice".into()]).unwrap();
    assert_eq!(one[0].name(), "finance->legacy");
    assert_eq!(one[0].only, Some(vec!["invoice".to_string()]));

    for (what, types, words) in [
        (
            "nowhere",
            vec![],
            "unknown link or route `nowhere` (links: legacy->finance",
        ),
        (
            "finance",
            vec!["reward".to_string()],
            "carries no kind --types reward selects",
        ),
        ("finance", vec!["Student!".to_string()], "--types Student!"),
    ] {
        let err = plan_walks(&plan, what, &types).unwrap_err();
        assert!(matches!(err, VerifyError::Usage(_)));
        assert!(err.to_string().contains(words), "{err}");
    }
}

#[test]
fn records_cover_the_kinds_each_link_carries() {
    let walk = Walk {
        links: vec![
            link("legacy", "finance", &["student.*", "invoice.*"]),
            link("finance", "legacy", &["invoice.*"]),
        ],
        link_kinds: vec![
            Some(vec!["student".into(), "invoice".into()]),
            Some(vec!["invoice".into()]),
        ],
        only: Some(vec!["invoice".into()]),
    };
    let mut invoices = KindReport::new("invoice");
    invoices.compared = 10;
    invoices.missing = 1;
    let report = WalkReport {
        links: vec!["legacy->finance".into(), "finance->legacy".into()],
        source: "legacy".into(),
        target: "finance".into(),
        kinds: vec![invoices],
        resumed: false,
        passed: false,
        started_ms: 1,
        finished_ms: 2,
    };
    let stored = records(&walk, &report);
    assert_eq!(stored[0].kinds, ["invoice"]);
    assert!(!stored[0].complete, "--types left students out");
    assert!(stored[1].complete);
    assert_eq!((stored[1].compared, stored[1].missing), (10, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_postgres_reader_pages_a_query_in_key_byte_order() {
    let url = pg_fixture::server().fresh_database();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE TABLE students (id TEXT PRIMARY KEY, version BIGINT NOT NULL, name TEXT NOT NULL);
             INSERT INTO students VALUES ('b', 2, 'Bea'), ('B', 1, 'Big B'), ('a', 1, 'Ana'),
                 ('\u{e9}', 1, 'accent'), ('Z', 3, 'Zed');",
        )
        .await
        .unwrap();
    let queries = BTreeMap::from([(
        "student".to_string(),
        "SELECT id AS key, version, to_jsonb(s) - 'version' AS state FROM students s
         WHERE id > $1 ORDER BY id COLLATE \"C\" LIMIT $2"
            .to_string(),
    )]);
    let side = postgres::PgSnapshots::new("monolith", &url, queries);
    assert_eq!(side.kinds().await.unwrap(), ["student"]);
    let mut keys = Vec::new();
    let mut after = String::new();
    loop {
        let page = side.page("student", &after, 2).await.unwrap();
        assert!(page.entities.len() <= 2);
        keys.extend(page.entities.iter().map(|e| e.key.clone()));
        match page.next {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(keys, ["B", "Z", "a", "b", "\u{e9}"]);
    let first = side.page("student", "", 1).await.unwrap();
    assert_eq!(
        first.entities[0],
        Entity {
            key: "B".into(),
            version: 1,
            state: json!({ "id": "B", "name": "Big B" })
        }
    );

    // A query that answers other columns, or is not SQL, is named with its kind.
    let bad = postgres::PgSnapshots::new(
        "monolith",
        &url,
        BTreeMap::from([
            (
                "student".to_string(),
                "SELECT id, name FROM students WHERE id > $1 LIMIT $2".to_string(),
            ),
            ("invoice".to_string(), "SELEKT".to_string()),
        ]),
    );
    let err = bad.page("student", "", 10).await.unwrap_err().to_string();
    assert!(
        err.contains("snapshot query of `student`")
            && err.contains("must answer key (text), version (bigint) and state (jsonb)")
            && err.contains("id (text), name (text)"),
        "{err}"
    );
    let err = bad.page("invoice", "", 10).await.unwrap_err().to_string();
    assert!(
        err.contains("snapshot query of `invoice`") && err.contains("syntax"),
        "{err}"
    );
    let err = side.page("reward", "", 10).await.unwrap_err().to_string();
    assert!(err.contains("no snapshot query for `reward`"), "{err}");

    // An unreachable server is a read error naming it without its password.
    let unreachable = postgres::PgSnapshots::new(
        "monolith",
        "postgres://app:secret@127.0.0.1:1/db",
        BTreeMap::from([("student".to_string(), "SELECT 1".to_string())]),
    );
    let err = unreachable
        .page("student", "", 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("reading monolith: postgres://app:") && !err.contains("secret"),
        "{err}"
    );
}
