//! The analysis controller with real proxies and upstreams: automatic rollback when a
//! canary's new service fails its budgets, and a rollout walked from start to cutover.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use e2e::{ScriptedUpstream, TestProxy, WebhookReceiver, eventually, json_answer};
use serde_json::json;
use strangler_plan::Stage;

fn answer(path: &str) -> (u16, &'static str, Vec<u8>) {
    json_answer(json!({ "path": path, "name": "Ada" }))
}

/// A proxy with `legacy` and `new` at the given upstreams, route `students` (`/students/{id}`)
/// with the given extra lines, short analysis intervals and a webhook.
async fn proxy(legacy: &str, new: &str, route_extra: &str, hook: &WebhookReceiver) -> TestProxy {
    let dir = tempfile::tempdir().unwrap();
    let mut plan = e2e::plan_toml(
        dir.path(),
        &[
            ("legacy", format!("\"{legacy}\"")),
            ("new", format!("\"{new}\"")),
        ],
        "",
    );
    plan.push_str(&format!(
        "\n[analysis]\ninterval = \"300ms\"\nfailure_limit = 2\nmin_requests = 5\nmax_mismatch_rate = 1.0\n\
         [[notify]]\nurl = \"{}\"\ntoken = \"hook-secret\"\n\
         [[routes]]\nname = \"students\"\npaths = [\"/students/{{id}}\"]\nservice = \"new\"\n{route_extra}\n",
        hook.url()
    ));
    TestProxy::start(dir, &plan).await
}

/// (when the request was sent, status) of every answer the clients got.
type Answers = Arc<std::sync::Mutex<Vec<(Instant, u16)>>>;

/// Sends requests from 4 clients until stopped; keeps (when, status) of each answer.
fn traffic(p: &TestProxy) -> (Arc<AtomicBool>, Answers) {
    traffic_to(&p.client)
}

/// [`traffic`] through a given client.
fn traffic_to(client: &e2e::Client) -> (Arc<AtomicBool>, Answers) {
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    for worker in 0..4 {
        let (c, stop, seen) = (client.clone(), Arc::clone(&stop), Arc::clone(&seen));
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let sent = Instant::now();
                let answer = c.get(&format!("/students/{worker}-{i}")).await;
                seen.lock().unwrap().push((sent, answer.status.as_u16()));
            }
        });
    }
    (stop, seen)
}

fn stage(p: &TestProxy) -> Stage {
    let store = strangler_store::open(&strangler_plan::StoreLocation::File(
        p.dir.path().join("strangler.db"),
    ))
    .unwrap();
    store
        .stages()
        .unwrap()
        .get("students")
        .copied()
        .unwrap_or(Stage::Legacy)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_whose_service_starts_failing_is_rolled_back_by_itself() {
    let hook = WebhookReceiver::start().await;
    let legacy =
        ScriptedUpstream::start(Duration::ZERO, Arc::new(|p: &str, _: &[u8]| answer(p))).await;
    let failing = Arc::new(AtomicBool::new(false));
    let (flag, n) = (Arc::clone(&failing), Arc::new(AtomicUsize::new(0)));
    let new = ScriptedUpstream::start(
        Duration::ZERO,
        Arc::new(move |p: &str, _: &[u8]| {
            // One answer in five fails once the incident starts: 20 %.
            if flag.load(Ordering::SeqCst) && n.fetch_add(1, Ordering::SeqCst) % 5 == 0 {
                (500, "application/json", b"{\"error\":\"boom\"}".to_vec())
            } else {
                answer(p)
            }
        }),
    )
    .await;
    let p = proxy(
        &legacy.url(),
        &new.url(),
        "analysis = { max_error_rate = 0.05 }",
        &hook,
    )
    .await;
    p.strangler(&["canary", "students", "25"]).await.unwrap();
    let (stop, seen) = traffic(&p);
    // Healthy for three checks that judged the error rate: nothing happens.
    let healthy_store = strangler_store::open(&strangler_plan::StoreLocation::File(
        p.dir.path().join("strangler.db"),
    ))
    .unwrap();
    let healthy_store = &healthy_store;
    eventually(Duration::from_secs(20), "three passing checks", || async {
        let passed = healthy_store
            .checks("students", 100)
            .unwrap()
            .iter()
            .filter(|c| c.metric == "error_rate" && c.passed == Some(true))
            .count();
        (passed >= 3).then_some(())
    })
    .await;
    assert_eq!(stage(&p), Stage::Canary { percent: 25 });

    failing.store(true, Ordering::SeqCst);
    let incident = Instant::now();
    let p = &p;
    eventually(Duration::from_secs(20), "rolled back to legacy", || async {
        (stage(p) == Stage::Legacy).then_some(())
    })
    .await;
    let rolled_back_after = incident.elapsed();
    // The rollback is confirmed once every live proxy serves its generation: from then on,
    // no request sent gets an error.
    let store = strangler_store::open(&strangler_plan::StoreLocation::File(
        p.dir.path().join("strangler.db"),
    ))
    .unwrap();
    let generation = store
        .history(Some("students"), 1)
        .unwrap()
        .pop()
        .unwrap()
        .generation;
    let store = &store;
    eventually(
        Duration::from_secs(10),
        "every proxy serves the rollback",
        || async {
            store
                .proxies()
                .unwrap()
                .iter()
                .all(|proxy| proxy.generation >= generation)
                .then_some(())
        },
    )
    .await;
    let confirmed = Instant::now();
    let seen_ref = &seen;
    eventually(
        Duration::from_secs(20),
        "200 requests answered after it",
        || async {
            let after = seen_ref
                .lock()
                .unwrap()
                .iter()
                .filter(|(at, _)| *at > confirmed)
                .count();
            (after >= 200).then_some(())
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let after: Vec<u16> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, _)| *at > confirmed)
        .map(|(_, s)| *s)
        .collect();
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|s| *s == 200),
        "errors after the rollback: {after:?}"
    );
    // Within failure_limit × interval, plus the machine's scheduling slack.
    assert!(
        rolled_back_after < Duration::from_secs(10),
        "{rolled_back_after:?}"
    );

    let store = strangler_store::open(&strangler_plan::StoreLocation::File(
        p.dir.path().join("strangler.db"),
    ))
    .unwrap();
    let last = store.history(Some("students"), 1).unwrap().pop().unwrap();
    assert_eq!(last.actor, "strangler-analysis");
    assert_eq!(last.to, "legacy");
    let reason = last.reason.unwrap();
    assert!(reason.contains("error_rate"), "{reason}");
    assert!(reason.contains("budget 0.05"), "{reason}");
    let checks = store.checks("students", 50).unwrap();
    assert!(
        checks
            .iter()
            .any(|c| c.metric == "error_rate" && c.passed == Some(false))
    );

    let events = eventually(
        Duration::from_secs(10),
        "the webhook heard the rollback",
        || async {
            let events = hook.events();
            events
                .iter()
                .any(|(_, e)| e["event"] == "rolled_back")
                .then_some(events)
        },
    )
    .await;
    let (auth, rolled) = events
        .iter()
        .find(|(_, e)| e["event"] == "rolled_back")
        .unwrap();
    assert_eq!(auth.as_deref(), Some("Bearer hook-secret"));
    assert_eq!(rolled["route"], "students");
    assert!(
        rolled["message"].as_str().unwrap().contains("error_rate"),
        "{rolled}"
    );
    assert!(events.iter().any(|(_, e)| e["event"] == "analysis_failed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_three_times_slower_than_legacy_is_rolled_back() {
    let hook = WebhookReceiver::start().await;
    let legacy = ScriptedUpstream::start(
        Duration::from_millis(4),
        Arc::new(|p: &str, _: &[u8]| answer(p)),
    )
    .await;
    let new = ScriptedUpstream::start(
        Duration::from_millis(30),
        Arc::new(|p: &str, _: &[u8]| answer(p)),
    )
    .await;
    let p = proxy(
        &legacy.url(),
        &new.url(),
        "analysis = { max_p99_ratio = 2.0 }",
        &hook,
    )
    .await;
    p.strangler(&["canary", "students", "50"]).await.unwrap();
    let (stop, _) = traffic(&p);
    let p = &p;
    eventually(Duration::from_secs(20), "rolled back to legacy", || async {
        (stage(p) == Stage::Legacy).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let store = strangler_store::open(&strangler_plan::StoreLocation::File(
        p.dir.path().join("strangler.db"),
    ))
    .unwrap();
    let last = store.history(Some("students"), 1).unwrap().pop().unwrap();
    assert_eq!(last.actor, "strangler-analysis");
    let reason = last.reason.unwrap();
    assert!(reason.contains("p99_ratio"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_rollout_walks_every_step_to_cutover_by_itself() {
    let hook = WebhookReceiver::start().await;
    let legacy =
        ScriptedUpstream::start(Duration::ZERO, Arc::new(|p: &str, _: &[u8]| answer(p))).await;
    let new =
        ScriptedUpstream::start(Duration::ZERO, Arc::new(|p: &str, _: &[u8]| answer(p))).await;
    let steps = "stage = \"shadow\"\nsteps = [{ canary = 25, for = \"1s\" }, { canary = 50, for = \"1s\" }, { cutover = true }]";
    let p = proxy(&legacy.url(), &new.url(), steps, &hook).await;
    let (stop, seen) = traffic(&p);
    p.strangler(&["rollout", "start", "students"])
        .await
        .unwrap();
    let refused = p
        .strangler(&["rollout", "start", "students"])
        .await
        .unwrap_err();
    assert!(
        refused.message.contains("already rolling out"),
        "{}",
        refused.message
    );
    let p = &p;
    eventually(Duration::from_secs(30), "the rollout done", || async {
        let store = strangler_store::open(&strangler_plan::StoreLocation::File(
            p.dir.path().join("strangler.db"),
        ))
        .unwrap();
        let done = store
            .rollouts()
            .unwrap()
            .iter()
            .any(|r| r.state == strangler_store::RolloutState::Done);
        done.then_some(())
    })
    .await;
    assert_eq!(stage(p), Stage::Cutover);
    stop.store(true, Ordering::SeqCst);
    let store = strangler_store::open(&strangler_plan::StoreLocation::File(
        p.dir.path().join("strangler.db"),
    ))
    .unwrap();
    let steps: Vec<(String, String)> = store
        .history(Some("students"), 10)
        .unwrap()
        .into_iter()
        .map(|e| (e.to, e.actor))
        .collect();
    assert_eq!(
        steps,
        [
            ("canary 25%".to_string(), "strangler-rollout".to_string()),
            ("canary 50%".to_string(), "strangler-rollout".to_string()),
            ("cutover".to_string(), "strangler-rollout".to_string()),
        ]
    );
    let rollout = store.rollouts().unwrap().pop().unwrap();
    assert_eq!(rollout.state, strangler_store::RolloutState::Done);
    let metrics = p.metrics().await;
    assert!(
        metrics.contains("strangler_rollout_step{route=\"students\",state=\"done\"} 3"),
        "{metrics}"
    );
    assert!(
        seen.lock().unwrap().iter().all(|(_, s)| *s == 200),
        "no client saw an error"
    );
    eventually(
        Duration::from_secs(10),
        "the webhook heard the steps",
        || async {
            let events = hook.events();
            (events.iter().filter(|(_, e)| e["event"] == "step").count() >= 3
                && events.iter().any(|(_, e)| e["event"] == "stage_changed"))
            .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn another_proxy_takes_the_rollout_over_when_the_acting_one_stops() {
    let hook = WebhookReceiver::start().await;
    let legacy =
        ScriptedUpstream::start(Duration::ZERO, Arc::new(|p: &str, _: &[u8]| answer(p))).await;
    let new =
        ScriptedUpstream::start(Duration::ZERO, Arc::new(|p: &str, _: &[u8]| answer(p))).await;
    let steps = "stage = \"shadow\"\nsteps = [{ canary = 25, for = \"2s\" }, { canary = 50, for = \"1s\" }, { cutover = true }]";
    let mut p = proxy(&legacy.url(), &new.url(), steps, &hook).await;
    // The first proxy's controller takes the store's lease before the replica starts.
    let db = p.dir.path().join("strangler.db");
    let db = &db;
    eventually(
        Duration::from_secs(10),
        "the first proxy holds the lease",
        || async {
            let held: i64 = rusqlite::Connection::open(db)
            .unwrap()
            .query_row(
                "SELECT COUNT(*) FROM leases WHERE name = 'analysis-controller' AND until_ms > ?1",
                [strangler_store::now_ms()],
                |r| r.get(0),
            )
            .unwrap();
            (held == 1).then_some(())
        },
    )
    .await;
    let replica = p.replica().await;
    // Clients talk to the replica, which stays up: the steps are judged on its traffic.
    let (stop, _) = traffic_to(&e2e::Client::new(&format!("http://{}", replica.listen)));
    p.strangler(&["rollout", "start", "students"])
        .await
        .unwrap();
    let pr = &p;
    eventually(
        Duration::from_secs(20),
        "the first step entered",
        || async { (stage(pr) == Stage::Canary { percent: 25 }).then_some(()) },
    )
    .await;
    // The acting proxy stops (and gives its lease up); the replica walks on.
    p.proxy.take().unwrap().stop().await;
    let store = strangler_store::open(&strangler_plan::StoreLocation::File(
        p.dir.path().join("strangler.db"),
    ))
    .unwrap();
    let store = &store;
    eventually(
        Duration::from_secs(30),
        "the rollout done by the replica",
        || async {
            store
                .rollouts()
                .unwrap()
                .iter()
                .any(|r| r.state == strangler_store::RolloutState::Done)
                .then_some(())
        },
    )
    .await;
    assert_eq!(stage(&p), Stage::Cutover);
    stop.store(true, Ordering::SeqCst);
    replica.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_the_running_plan_has_no_steps_for_is_refused_not_done() {
    let hook = WebhookReceiver::start().await;
    let legacy =
        ScriptedUpstream::start(Duration::ZERO, Arc::new(|p: &str, _: &[u8]| answer(p))).await;
    let new =
        ScriptedUpstream::start(Duration::ZERO, Arc::new(|p: &str, _: &[u8]| answer(p))).await;
    // The proxy serves a plan without steps; the operator starts a rollout from an edited
    // copy it was never given.
    let p = proxy(&legacy.url(), &new.url(), "stage = \"shadow\"", &hook).await;
    let edited = p.dir.path().join("edited.toml");
    let text = std::fs::read_to_string(&p.plan_path).unwrap()
        + "steps = [{ canary = 10, for = \"1s\" }, { cutover = true }]\n";
    std::fs::write(&edited, text).unwrap();
    let cli = <strangler_cli::cli::Cli as clap::Parser>::try_parse_from([
        "strangler",
        "--plan",
        edited.to_str().unwrap(),
        "rollout",
        "start",
        "students",
    ])
    .unwrap();
    strangler_cli::cli::run(cli).await.unwrap();
    let store = strangler_store::open(&strangler_plan::StoreLocation::File(
        p.dir.path().join("strangler.db"),
    ))
    .unwrap();
    let store = &store;
    let rollout = eventually(Duration::from_secs(10), "the rollout refused", || async {
        store
            .rollouts()
            .unwrap()
            .into_iter()
            .find(|r| r.state == strangler_store::RolloutState::Aborted)
    })
    .await;
    assert!(
        rollout.message.contains("has no steps"),
        "{}",
        rollout.message
    );
    assert!(rollout.message.contains("reload"), "{}", rollout.message);
    assert!(
        store.history(Some("students"), 10).unwrap().is_empty(),
        "nothing moved"
    );
}
