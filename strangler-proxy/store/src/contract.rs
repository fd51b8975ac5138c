//! What every backend must do, as tests any backend runs against itself: each function takes
//! two connections to one fresh store (a proxy's and the CLI's, say) and checks one concern.

use std::time::Duration;

use strangler_plan::Stage;

use crate::{
    LinkProgress, ProxyRecord, RouteCounters, ShadowBatch, ShadowMetric, StageChange, StageWrite,
    Store, Unmirrored, VerifyCursor, VerifyRecord, now_ms, timestamp,
};

/// A connection to the store under test.
pub type Open<'a> = &'a dyn Fn() -> Box<dyn Store>;

/// Runs every check, each on a store of its own.
pub fn run_all(fresh: &dyn Fn() -> Box<dyn Fn() -> Box<dyn Store>>) {
    stages_are_compared_and_set_audited_and_announced(&*fresh());
    the_registry_keeps_generations_heartbeats_and_counters(&*fresh());
    checkpoints_never_move_back_and_one_owner_holds_a_lease(&*fresh());
    shadow_results_add_up(&*fresh());
    captured_cases_are_kept_newest_first_within_their_bounds(&*fresh());
    analysis_runs_follow_stage_changes(&*fresh());
    leases_are_exclusive_and_fenced(&*fresh());
    checks_and_rollouts_are_kept(&*fresh());
    verify_cursors_resume_and_the_newest_result_of_each_link_is_kept(&*fresh());
    subscribers_wake_when_another_connection_changes_a_stage(&*fresh());
    a_copy_keeps_everything_and_refuses_a_non_empty_target(&*fresh(), &*fresh());
}

pub fn subscribers_wake_when_another_connection_changes_a_stage(open: Open<'_>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let proxy = open();
    let woken = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&woken);
    let Some(subscription) = proxy
        .subscribe(Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }))
        .unwrap()
    else {
        // The backend pushes nothing: watchers poll the change token, checked above.
        return;
    };
    pg_fixture::wait_for("the subscription listens", || subscription.is_listening());
    let before = woken.load(Ordering::SeqCst);
    let mut cli = open();
    let write = cli
        .set_stage(&StageChange {
            route: "students",
            current: Stage::Legacy,
            to: Stage::Shadow,
            actor: "ana",
            reason: None,
            forced: false,
            verdict: None,
        })
        .unwrap();
    assert!(matches!(write, StageWrite::Changed(_)), "{write:?}");
    pg_fixture::wait_for("the subscriber is woken", || {
        woken.load(Ordering::SeqCst) > before
    });
    drop(subscription);
}

/// Writes a little of everything a copy keeps (and some things it does not).
pub fn fill(store: &mut dyn Store) {
    use crate::{CheckRecord, RolloutRecord, RolloutState};
    let mut change = |route, current, to, verdict| {
        let write = store
            .set_stage(&StageChange {
                route,
                current,
                to,
                actor: "ana",
                reason: Some("step"),
                forced: false,
                verdict,
            })
            .unwrap();
        assert!(matches!(write, StageWrite::Changed(_)), "{write:?}");
    };
    change("students", Stage::Legacy, Stage::Shadow, None);
    change("finance", Stage::Legacy, Stage::Shadow, None);
    let mut batch = ShadowBatch {
        route: "students".into(),
        ..ShadowBatch::default()
    };
    batch.count(ShadowMetric::Compared, 7);
    batch.count(ShadowMetric::Mismatched, 2);
    batch
        .paths
        .insert(("/name".into(), "value_changed".into(), false), 2);
    batch.paths.insert(("/at".into(), "noise".into(), true), 1);
    batch
        .samples
        .push(("/name".into(), r#"{"uri":"/students/1"}"#.into()));
    batch.latencies.push((1.5, 2.25));
    batch.latencies.push((3.0, 1.0));
    batch.captures_per_path = 2;
    batch.captures.push((
        "/name".into(),
        r#"{"request":{"method":"GET","uri":"/students/1"}}"#.into(),
    ));
    store.record_shadow(&batch).unwrap();
    let mut change = |route, current, to, verdict| {
        let write = store
            .set_stage(&StageChange {
                route,
                current,
                to,
                actor: "bob",
                reason: None,
                forced: true,
                verdict,
            })
            .unwrap();
        assert!(matches!(write, StageWrite::Changed(_)), "{write:?}");
    };
    change(
        "students",
        Stage::Shadow,
        Stage::Canary { percent: 25 },
        Some("gate open"),
    );
    store
        .advance(&LinkProgress {
            link: "a->b".into(),
            checkpoint: 42,
            head: 50,
            lag_seconds: 1.5,
            applied: 40,
            rejected: 1,
            last_rejection: Some("bad event".into()),
            ..LinkProgress::default()
        })
        .unwrap();
    store.link_failed("c->d", "c is down").unwrap();
    assert!(
        store
            .lease_link("a->b", "relay-1", Duration::from_secs(30))
            .unwrap()
    );
    store
        .record_checks(&[CheckRecord {
            route: "students".into(),
            run: Some(2),
            at: timestamp(now_ms()),
            metric: "error_rate".into(),
            value: None,
            budget: 0.05,
            passed: Some(true),
            detail: "0 of 20".into(),
        }])
        .unwrap();
    store
        .set_rollout(&RolloutRecord {
            route: "students".into(),
            step: 1,
            state: RolloutState::Running,
            step_started_ms: now_ms(),
            updated_at: timestamp(now_ms()),
            message: "canary 25%".into(),
        })
        .unwrap();
    store.record_verify(&verify_record("a->b", true)).unwrap();
    store
        .save_verify_cursor(&verify_cursor("a->b", "student", "k7"))
        .unwrap();
    store
        .take_lease("analysis", "a", Duration::from_secs(30))
        .unwrap();
    store
        .register_proxy(&ProxyRecord {
            id: "p1".into(),
            pid: 1,
            listen: "127.0.0.1:1".into(),
            admin: "127.0.0.1:2".into(),
            generation: 1,
            applied_at_ms: now_ms(),
            started_at: timestamp(now_ms()),
            heartbeat_ms: now_ms(),
        })
        .unwrap();
}

/// What the copy must keep equal, as the store's readers see it.
pub fn assert_same_contents(a: &dyn Store, b: &dyn Store) {
    assert_eq!(a.export().unwrap(), b.export().unwrap());
    assert_eq!(a.stages().unwrap(), b.stages().unwrap());
    assert_eq!(a.generation().unwrap(), b.generation().unwrap());
    assert_eq!(
        a.history(None, 1000).unwrap(),
        b.history(None, 1000).unwrap()
    );
    for route in ["students", "finance"] {
        assert_eq!(a.runs(route).unwrap(), b.runs(route).unwrap());
        let (x, y) = (
            a.shadow_summary(route).unwrap(),
            b.shadow_summary(route).unwrap(),
        );
        assert_eq!(
            (x.counts, x.paths, x.samples, x.latencies),
            (y.counts, y.paths, y.samples, y.latencies)
        );
        assert_eq!(a.captures(route).unwrap(), b.captures(route).unwrap());
        assert_eq!(a.checks(route, 100).unwrap(), b.checks(route, 100).unwrap());
    }
    assert_eq!(a.links().unwrap(), b.links().unwrap());
    assert_eq!(a.rollouts().unwrap(), b.rollouts().unwrap());
    assert_eq!(a.last_verifies().unwrap(), b.last_verifies().unwrap());
}

/// Copies `from` (filled) into `to` (fresh), and checks what a copy promises.
pub fn a_copy_keeps_everything_and_refuses_a_non_empty_target(from: Open<'_>, to: Open<'_>) {
    let mut source = from();
    fill(&mut *source);
    assert!(!source.is_empty().unwrap());
    let snapshot = source.export().unwrap();
    assert_eq!(snapshot.count("route_status"), 2);
    assert_eq!(snapshot.count("shadow_captures"), 1);
    assert_eq!(snapshot.count("audit_log"), 3);
    assert_eq!(snapshot.generation(), Some(source.generation().unwrap()));
    let mut target = to();
    assert!(target.is_empty().unwrap());
    // A proxy registering with the empty target does not make it non-empty.
    target
        .register_proxy(&ProxyRecord {
            id: "p2".into(),
            pid: 2,
            listen: "127.0.0.1:3".into(),
            admin: "127.0.0.1:4".into(),
            generation: 1,
            applied_at_ms: now_ms(),
            started_at: timestamp(now_ms()),
            heartbeat_ms: now_ms(),
        })
        .unwrap();
    assert!(target.is_empty().unwrap());
    target.import(&snapshot, false).unwrap();
    assert_same_contents(&*source, &*target);
    assert_eq!(
        target.checkpoint("a->b").unwrap(),
        42,
        "checkpoints are kept"
    );
    assert_eq!(
        to().take_lease("analysis", "b", Duration::from_secs(5))
            .unwrap(),
        Some(1),
        "leases are not copied"
    );
    assert!(
        to().lease_link("a->b", "relay-2", Duration::from_secs(5))
            .unwrap(),
        "nor link leases"
    );
    assert_eq!(
        target.last_verifies().unwrap().len(),
        1,
        "verify results are"
    );
    assert_eq!(
        target.verify_cursor("a->b", "student").unwrap(),
        None,
        "an unfinished verify's cursor is not"
    );

    let refused = target.import(&snapshot, false).unwrap_err();
    assert!(
        matches!(refused, crate::StoreError::NotEmpty { .. }),
        "{refused}"
    );
    target.import(&snapshot, true).unwrap();
    assert_same_contents(&*source, &*target);

    // New rows get new ids and the next generation.
    let write = target
        .set_stage(&StageChange {
            route: "finance",
            current: Stage::Shadow,
            to: Stage::Legacy,
            actor: "ana",
            reason: None,
            forced: false,
            verdict: None,
        })
        .unwrap();
    let StageWrite::Changed(change) = write else {
        panic!("{write:?}");
    };
    assert_eq!(change.generation, snapshot.generation().unwrap() + 1);
    let history = target.history(None, 100).unwrap();
    assert_eq!(history.len(), 4);
    assert!(history[3].id > history[2].id);
    let mut batch = ShadowBatch {
        route: "finance".into(),
        ..ShadowBatch::default()
    };
    batch.count(ShadowMetric::Compared, 1);
    batch.samples.push(("/x".into(), "{}".into()));
    batch.latencies.push((1.0, 1.0));
    target.record_shadow(&batch).unwrap();
    target
        .record_checks(&[crate::CheckRecord {
            route: "finance".into(),
            run: None,
            at: timestamp(now_ms()),
            metric: "error_rate".into(),
            value: Some(0.0),
            budget: 0.05,
            passed: None,
            detail: String::new(),
        }])
        .unwrap();
}

pub fn leases_are_exclusive_and_fenced(open: Open<'_>) {
    let (one, two) = (open(), open());
    let ttl = Duration::from_secs(5);
    let first = one.take_lease("analysis", "a", ttl).unwrap();
    assert_eq!(first, Some(1));
    assert_eq!(two.take_lease("analysis", "b", ttl).unwrap(), None);
    assert_eq!(
        one.take_lease("analysis", "a", ttl).unwrap(),
        Some(1),
        "renewed"
    );
    one.release_lease("analysis", "a").unwrap();
    assert_eq!(
        two.take_lease("analysis", "b", ttl).unwrap(),
        Some(2),
        "a new holder gets a new generation"
    );
    assert_eq!(one.take_lease("analysis", "a", ttl).unwrap(), None);
    // An expired lease is taken over (polled: it expires within a millisecond).
    assert_eq!(
        one.take_lease("other", "a", Duration::from_millis(1))
            .unwrap(),
        Some(1)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let taken = loop {
        if let Some(generation) = two.take_lease("other", "b", ttl).unwrap() {
            break generation;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lease never expired"
        );
        std::hint::spin_loop();
    };
    assert_eq!(taken, 2);
}

pub fn checks_and_rollouts_are_kept(open: Open<'_>) {
    use crate::{CheckRecord, RolloutRecord, RolloutState};
    let store = open();
    let check = |metric: &str, passed| CheckRecord {
        route: "students".into(),
        run: Some(1),
        at: timestamp(now_ms()),
        metric: metric.into(),
        value: Some(0.2),
        budget: 0.05,
        passed,
        detail: "4 of 20".into(),
    };
    store
        .record_checks(&[check("error_rate", Some(false)), check("p99_ratio", None)])
        .unwrap();
    store
        .record_checks(&[check("error_rate", Some(true))])
        .unwrap();
    let last_two = open().checks("students", 2).unwrap();
    assert_eq!(last_two.len(), 2);
    assert_eq!(last_two[0].metric, "p99_ratio");
    assert_eq!(last_two[0].passed, None);
    assert_eq!(last_two[1].passed, Some(true));
    let mut rollout = RolloutRecord {
        route: "students".into(),
        step: 0,
        state: RolloutState::Running,
        step_started_ms: now_ms(),
        updated_at: timestamp(now_ms()),
        message: "canary 5%".into(),
    };
    store.set_rollout(&rollout).unwrap();
    rollout.step = 1;
    rollout.state = RolloutState::Paused;
    store.set_rollout(&rollout).unwrap();
    assert_eq!(open().rollouts().unwrap(), [rollout]);
}

pub fn stages_are_compared_and_set_audited_and_announced(open: Open<'_>) {
    let mut cli = open();
    let proxy = open();
    let token = proxy.change_token().unwrap();
    let g0 = cli.generation().unwrap();
    let first = StageChange {
        route: "students",
        current: Stage::Legacy,
        to: Stage::Canary { percent: 10 },
        actor: "ana",
        reason: Some("first step"),
        forced: false,
        verdict: None,
    };
    let StageWrite::Changed(change) = cli.set_stage(&first).unwrap() else {
        panic!("the first change raced with nobody");
    };
    assert_eq!(change.generation, g0 + 1);
    assert_ne!(
        proxy.change_token().unwrap(),
        token,
        "another connection sees that something changed"
    );
    assert_eq!(proxy.generation().unwrap(), g0 + 1);
    assert_eq!(
        proxy.stages().unwrap()["students"],
        Stage::Canary { percent: 10 }
    );
    // A writer that thinks it is still legacy lost the race, and wrote nothing.
    let lost = cli
        .set_stage(&StageChange {
            to: Stage::Cutover,
            actor: "bob",
            reason: None,
            ..first
        })
        .unwrap();
    assert_eq!(
        lost,
        StageWrite::Raced {
            now: Stage::Canary { percent: 10 }
        }
    );
    assert_eq!(cli.generation().unwrap(), g0 + 1);
    let history = proxy.history(None, 10).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(
        (history[0].from.as_str(), history[0].to.as_str()),
        ("legacy", "canary 10%")
    );
    assert_eq!(history[0].actor, "ana");
    assert_eq!(history[0].reason.as_deref(), Some("first step"));
    assert!(proxy.history(Some("finance"), 10).unwrap().is_empty());
    let first = history[0].id;
    assert!(proxy.history_since(first).unwrap().is_empty());
    assert_eq!(proxy.history_since(first - 1).unwrap(), history);
}

pub fn the_registry_keeps_generations_heartbeats_and_counters(open: Open<'_>) {
    let mut store = open();
    let record = |id: &str| ProxyRecord {
        id: id.to_string(),
        pid: 1,
        listen: "127.0.0.1:1".into(),
        admin: "127.0.0.1:2".into(),
        generation: 1,
        applied_at_ms: now_ms(),
        started_at: timestamp(now_ms()),
        heartbeat_ms: now_ms(),
    };
    store.register_proxy(&record("a")).unwrap();
    store.register_proxy(&record("b")).unwrap();
    store.applied("a", 7).unwrap();
    let counters = |n| RouteCounters {
        route: "students".into(),
        requests: n,
        errors: 1,
        served_legacy: n - 1,
        served_new: 1,
        errors_legacy: 0,
        errors_new: 1,
        latency_legacy: vec![n, 1],
        latency_new: vec![0, 1, 2],
    };
    store.heartbeat("a", &[counters(10)]).unwrap();
    store.heartbeat("b", &[counters(5)]).unwrap();
    let proxies = open().proxies().unwrap();
    assert_eq!(proxies.len(), 2);
    let a = proxies.iter().find(|p| p.id == "a").unwrap();
    assert_eq!(a.generation, 7);
    assert!(a.is_live(now_ms()));
    let both = store.counters(&["a".into(), "b".into()]).unwrap();
    assert_eq!(both["students"].requests, 15);
    assert_eq!(both["students"].errors, 2);
    assert_eq!(both["students"].errors_new, 2);
    assert_eq!(both["students"].latency_legacy, [15, 2], "buckets add up");
    assert_eq!(both["students"].latency_new, [0, 2, 4]);
    let only_b = store.counters(&["b".into()]).unwrap();
    assert_eq!(only_b["students"].requests, 5);
    store.deregister_proxy("a").unwrap();
    assert_eq!(store.proxies().unwrap().len(), 1);
    assert!(store.counters(&["a".into()]).unwrap().is_empty());
}

pub fn checkpoints_never_move_back_and_one_owner_holds_a_lease(open: Open<'_>) {
    let one = open();
    let two = open();
    assert_eq!(one.checkpoint("a->b").unwrap(), 0);
    let progress = |checkpoint| LinkProgress {
        link: "a->b".into(),
        checkpoint,
        head: 20,
        applied: 3,
        ..LinkProgress::default()
    };
    one.link_failed("a->b", "a is down").unwrap();
    one.advance(&progress(10)).unwrap();
    // A late writer (a relay that lost its lease mid-batch) cannot move it back.
    two.advance(&progress(4)).unwrap();
    assert_eq!(two.checkpoint("a->b").unwrap(), 10);
    let links = two.links().unwrap();
    assert_eq!(links[0].applied, 6);
    assert_eq!(links[0].last_error, None, "a delivery clears the error");
    assert_eq!(links[0].lag_events(), 10);

    let lease = Duration::from_secs(5);
    assert!(one.lease_link("a->b", "relay-1", lease).unwrap());
    assert!(!two.lease_link("a->b", "relay-2", lease).unwrap());
    assert!(
        one.lease_link("a->b", "relay-1", lease).unwrap(),
        "the holder renews"
    );
    one.release_link("a->b", "relay-1").unwrap();
    assert!(
        two.lease_link("a->b", "relay-2", lease).unwrap(),
        "released: taken at once"
    );
    assert!(!one.lease_link("a->b", "relay-1", lease).unwrap());
}

pub fn shadow_results_add_up(open: Open<'_>) {
    let mut store = open();
    let mut batch = ShadowBatch {
        route: "students".into(),
        ..ShadowBatch::default()
    };
    batch.count(ShadowMetric::Compared, 3);
    batch.count(ShadowMetric::Mismatched, 1);
    batch.count(ShadowMetric::Unmirrored(Unmirrored::Busy), 2);
    batch
        .paths
        .insert(("/name".into(), "value_changed".into(), false), 1);
    batch.paths.insert(("/at".into(), "noise".into(), true), 1);
    batch
        .samples
        .push(("/name".into(), r#"{"uri":"/students/1"}"#.into()));
    batch.latencies.push((1.0, 2.0));
    store.record_shadow(&batch).unwrap();
    store.record_shadow(&batch).unwrap();
    let summary = open().shadow_summary("students").unwrap();
    assert_eq!(summary.count(ShadowMetric::Compared), 6);
    assert_eq!(summary.count(ShadowMetric::Mismatched), 2);
    assert_eq!(summary.unmirrored(), [(Unmirrored::Busy, 4)]);
    assert_eq!(summary.mismatch_rate(), Some(2.0 / 6.0));
    assert_eq!(
        summary.top_paths(5),
        [("/name (value_changed)".to_string(), 2)]
    );
    assert_eq!(summary.samples.len(), 2);
    assert_eq!(summary.samples[0].1["uri"], "/students/1");
    assert_eq!(summary.latencies.len(), 2);
    let noise = store.noisy_paths().unwrap();
    assert!(noise["students"].contains("/at"));
    assert_eq!(
        store.shadow_summary("finance").unwrap().mismatch_rate(),
        None
    );
}

/// Cases are kept per differing path up to the route's bound and per route up to
/// `CAPTURES_PER_ROUTE`, the newest; another connection reads them oldest first.
pub fn captured_cases_are_kept_newest_first_within_their_bounds(open: Open<'_>) {
    use crate::CAPTURES_PER_ROUTE;
    let mut store = open();
    let case = |n: usize| format!(r#"{{"request":{{"method":"GET","uri":"/students/{n}"}}}}"#);
    // Five cases at /name, two at /email, in two batches; two kept per path.
    for batch_of in [0..3, 3..5] {
        let mut batch = ShadowBatch {
            route: "students".into(),
            captures_per_path: 2,
            ..ShadowBatch::default()
        };
        for n in batch_of {
            batch.captures.push(("/name".into(), case(n)));
        }
        batch.captures.push(("/email".into(), case(100)));
        store.record_shadow(&batch).unwrap();
    }
    let kept = open().captures("students").unwrap();
    let uris: Vec<(&str, &str)> = kept
        .iter()
        .map(|c| (c.path.as_str(), c.case["request"]["uri"].as_str().unwrap()))
        .collect();
    assert_eq!(
        uris,
        [
            ("/email", "/students/100"),
            ("/name", "/students/3"),
            ("/name", "/students/4"),
            ("/email", "/students/100"),
        ],
        "the newest two per path, oldest first"
    );
    assert!(kept.windows(2).all(|w| w[0].id < w[1].id));
    assert!(
        kept.iter()
            .all(|c| c.route == "students" && !c.at.is_empty())
    );
    assert!(open().captures("finance").unwrap().is_empty());

    // However many paths differ, a route keeps CAPTURES_PER_ROUTE cases, the newest.
    let paths = usize::try_from(CAPTURES_PER_ROUTE).unwrap() + 10;
    let mut batch = ShadowBatch {
        route: "finance".into(),
        captures_per_path: 1,
        ..ShadowBatch::default()
    };
    for n in 0..paths {
        batch.captures.push((format!("/f{n}"), case(n)));
    }
    store.record_shadow(&batch).unwrap();
    let kept = store.captures("finance").unwrap();
    assert_eq!(kept.len(), paths - 10);
    assert_eq!(kept[0].path, "/f10");
    assert_eq!(kept.last().unwrap().path, format!("/f{}", paths - 1));
}

pub fn analysis_runs_follow_stage_changes(open: Open<'_>) {
    let mut store = open();
    let mut change = |current, to, verdict| {
        let write = store
            .set_stage(&StageChange {
                route: "students",
                current,
                to,
                actor: "ana",
                reason: None,
                forced: false,
                verdict,
            })
            .unwrap();
        assert!(matches!(write, StageWrite::Changed(_)), "{write:?}");
    };
    change(Stage::Legacy, Stage::Shadow, None);
    let mut results = open();
    let mut batch = ShadowBatch {
        route: "students".into(),
        ..ShadowBatch::default()
    };
    batch.count(ShadowMetric::Compared, 5);
    batch.count(ShadowMetric::Mismatched, 1);
    batch
        .paths
        .insert(("/name".into(), "value_changed".into(), false), 1);
    results.record_shadow(&batch).unwrap();
    let current = results.run_summary("students").unwrap();
    assert_eq!(current.count(ShadowMetric::Compared), 5);
    assert_eq!(
        current.top_paths(1),
        [("/name (value_changed)".to_string(), 1)]
    );

    change(
        Stage::Shadow,
        Stage::Canary { percent: 10 },
        Some("gate open"),
    );
    let runs = results.runs("students").unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0].stage, "shadow");
    assert!(runs[0].ended_at.is_some());
    assert_eq!(
        runs[0].verdict.as_deref(),
        Some("gate open; ended by canary 10%")
    );
    assert_eq!(
        runs[0].count(ShadowMetric::Compared),
        5,
        "its figures are kept"
    );
    assert_eq!(runs[1].stage, "canary 10%");
    assert!(runs[1].ended_at.is_none());
    assert_eq!(
        results
            .run_summary("students")
            .unwrap()
            .count(ShadowMetric::Compared),
        0,
        "a new stage judges its own run"
    );
    assert_eq!(
        results
            .shadow_summary("students")
            .unwrap()
            .count(ShadowMetric::Compared),
        5,
        "the route's history keeps everything"
    );
    results.record_shadow(&batch).unwrap();
    assert_eq!(
        results.runs("students").unwrap()[1].count(ShadowMetric::Compared),
        5
    );

    change(Stage::Canary { percent: 10 }, Stage::Legacy, None);
    let runs = results.runs("students").unwrap();
    assert_eq!(runs.len(), 2, "legacy starts no run: {runs:?}");
    assert!(runs.iter().all(|r| r.ended_at.is_some()));
    assert_eq!(runs[1].verdict.as_deref(), Some("ended by legacy"));
    assert_eq!(
        results
            .run_summary("students")
            .unwrap()
            .count(ShadowMetric::Compared),
        0
    );
}

fn verify_record(link: &str, passed: bool) -> VerifyRecord {
    VerifyRecord {
        link: link.into(),
        kinds: vec!["student".into(), "invoice".into()],
        complete: true,
        compared: 120,
        missing: 0,
        extra: 0,
        differing: i64::from(!passed),
        in_flight: 2,
        repaired: 0,
        by_kind: [
            ("student".to_string(), i64::from(!passed)),
            ("invoice".to_string(), 0),
        ]
        .into(),
        passed,
        started_ms: now_ms() - 1500,
        finished_ms: now_ms(),
    }
}

fn verify_cursor(link: &str, kind: &str, after: &str) -> VerifyCursor {
    VerifyCursor {
        link: link.into(),
        kind: kind.into(),
        after: after.into(),
        done: false,
        progress: r#"{"compared":7}"#.into(),
        updated_ms: now_ms(),
    }
}

pub fn verify_cursors_resume_and_the_newest_result_of_each_link_is_kept(open: Open<'_>) {
    let (verifier, reader) = (open(), open());
    assert_eq!(reader.verify_cursor("a->b", "student").unwrap(), None);
    let first = verify_cursor("a->b", "student", "k1");
    verifier.save_verify_cursor(&first).unwrap();
    assert_eq!(
        reader.verify_cursor("a->b", "student").unwrap(),
        Some(first)
    );
    // Each page moves it on; other kinds and links have their own.
    let moved = VerifyCursor {
        done: true,
        ..verify_cursor("a->b", "student", "k\u{e9}9")
    };
    verifier.save_verify_cursor(&moved).unwrap();
    verifier
        .save_verify_cursor(&verify_cursor("a->b", "invoice", "i3"))
        .unwrap();
    verifier
        .save_verify_cursor(&verify_cursor("c->d", "student", "k2"))
        .unwrap();
    assert_eq!(
        reader.verify_cursor("a->b", "student").unwrap(),
        Some(moved)
    );
    verifier.clear_verify_cursors("a->b").unwrap();
    assert_eq!(reader.verify_cursor("a->b", "student").unwrap(), None);
    assert_eq!(reader.verify_cursor("a->b", "invoice").unwrap(), None);
    assert!(
        reader.verify_cursor("c->d", "student").unwrap().is_some(),
        "another link's cursor stays"
    );

    assert!(reader.last_verifies().unwrap().is_empty());
    verifier
        .record_verify(&verify_record("b->a", true))
        .unwrap();
    verifier
        .record_verify(&verify_record("a->b", true))
        .unwrap();
    let newest = VerifyRecord {
        kinds: vec!["student".into()],
        complete: false,
        ..verify_record("a->b", false)
    };
    verifier.record_verify(&newest).unwrap();
    let last = reader.last_verifies().unwrap();
    assert_eq!(
        last.iter().map(|v| v.link.as_str()).collect::<Vec<_>>(),
        ["a->b", "b->a"]
    );
    assert_eq!(last[0], newest);
    assert!(last[1].passed && last[1].complete);
    assert_eq!(last[1].kinds, ["student", "invoice"]);
}
