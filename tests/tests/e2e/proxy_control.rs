//! The control plane: stage changes through the CLI reach every proxy before the command
//! returns, under load without a failed request; stages survive restarts; a bad plan never
//! replaces a good one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use e2e::{EchoUpstream, TestProxy};
use reqwest::Method;

const ROUTES: &str = "[[routes]]\nname = \"students\"\npaths = [\"/students\", \"/students/{id}\"]\nservice = \"new\"\n\n[[routes]]\nname = \"finance\"\npaths = [\"/finance/{*rest}\"]\nservice = \"new\"\n";

async fn start(legacy: &EchoUpstream, new: &EchoUpstream) -> TestProxy {
    e2e::two_sided_proxy(legacy, &format!("\"{}\"", new.url()), "", ROUTES).await
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_under_load_fails_no_request() {
    let legacy = EchoUpstream::start("legacy").await;
    let new = EchoUpstream::start("new").await;
    let p = start(&legacy, &new).await;

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let c = p.client.clone();
        let stop = Arc::clone(&stop);
        let sent = Arc::clone(&sent);
        clients.spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let answer = c.get("/students/1").await;
                sent.fetch_add(1, Ordering::Relaxed);
                if answer.status != 200 {
                    failures.push(format!("{} {}", answer.status, answer.body));
                }
            }
            failures
        });
    }

    let mut command_ms = Vec::new();
    let mut first_request_ms = Vec::new();
    for flip in 0..100 {
        let (command, expected) = if flip % 2 == 0 {
            ("cutover", "new")
        } else {
            ("rollback", "legacy")
        };
        let started = Instant::now();
        p.strangler(&[command, "students"]).await.unwrap();
        let returned = Instant::now();
        command_ms.push((returned - started).as_secs_f64() * 1000.0);
        // The command returned: every proxy already serves the change.
        let answer = p.client.get("/students/1").await;
        first_request_ms.push(returned.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(
            answer.headers["x-strangler-served-by"], expected,
            "flip {flip}: {command}"
        );
    }
    // Keep the load on until at least 5,000 requests went through.
    e2e::eventually(
        Duration::from_secs(120),
        "5,000 requests under load",
        || async { (sent.load(Ordering::Relaxed) >= 5_000).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    while let Some(joined) = clients.join_next().await {
        failures.extend(joined.unwrap());
    }
    let total = sent.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    println!(
        "{total} requests, 50 flips each way; command (incl. propagation) median {:.1} ms max {:.1} ms; \
         first request after return served by the new side: median {:.2} ms max {:.2} ms",
        median(command_ms.clone()),
        command_ms.iter().cloned().fold(0.0, f64::max),
        median(first_request_ms.clone()),
        first_request_ms.iter().cloned().fold(0.0, f64::max),
    );
    assert!(legacy.hits() > 0 && new.hits() > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_reaches_every_proxy_before_the_command_returns() {
    let legacy = EchoUpstream::start("legacy").await;
    let new = EchoUpstream::start("new").await;
    let p = start(&legacy, &new).await;
    let replica = p.replica().await;
    let replica_client = e2e::Client::new(&format!("http://{}", replica.listen));

    for round in 0..10 {
        p.strangler(&["cutover", "students"]).await.unwrap();
        assert_eq!(
            p.client.get("/students").await.headers["x-strangler-served-by"],
            "new",
            "round {round}"
        );
        assert_eq!(
            replica_client.get("/students").await.headers["x-strangler-served-by"],
            "new",
            "round {round}"
        );
        p.strangler(&["rollback", "students"]).await.unwrap();
        assert_eq!(
            p.client.get("/students").await.headers["x-strangler-served-by"],
            "legacy"
        );
        assert_eq!(
            replica_client.get("/students").await.headers["x-strangler-served-by"],
            "legacy"
        );
    }

    // A proxy that stopped applying changes (but still heartbeats) is named, and the
    // command exits 3; the change itself is stored.
    let store = rusqlite::Connection::open(p.dir.path().join("strangler.db")).unwrap();
    let now: i64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    store
        .execute(
            "INSERT INTO proxies (id, pid, listen, admin, generation, applied_at_ms, started_at, heartbeat_ms)
             VALUES ('stuck-1', 4242, '127.0.0.1:1', '127.0.0.1:2', 0, 0, 'x', ?1)",
            [now + 60_000],
        )
        .unwrap();
    let err = p
        .strangler(&["cutover", "students", "--wait", "300ms"])
        .await
        .unwrap_err();
    assert_eq!(err.code, 3);
    assert!(err.message.contains("stuck-1"), "{}", err.message);
    assert!(!err.message.contains(&replica.id), "{}", err.message);
    assert_eq!(
        p.client.get("/students").await.headers["x-strangler-served-by"],
        "new"
    );
    store
        .execute("DELETE FROM proxies WHERE id = 'stuck-1'", [])
        .unwrap();

    replica.stop().await;
    let proxies: i64 = store
        .query_row("SELECT COUNT(*) FROM proxies", [], |r| r.get(0))
        .unwrap();
    assert_eq!(proxies, 1, "a stopped proxy deregisters");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_keeps_every_stage_and_the_audit_log() {
    let legacy = EchoUpstream::start("legacy").await;
    let new = EchoUpstream::start("new").await;
    let p = start(&legacy, &new).await;
    p.strangler(&[
        "cutover",
        "students",
        "--actor",
        "ana",
        "--reason",
        "parity proven",
    ])
    .await
    .unwrap();
    p.strangler(&["canary", "finance", "100"]).await.unwrap();
    let p = p.restart().await;
    assert_eq!(
        p.client.get("/students").await.headers["x-strangler-served-by"],
        "new"
    );
    assert_eq!(
        p.client.get("/finance/x").await.headers["x-strangler-served-by"],
        "new"
    );

    let store = strangler_store::open(&strangler_plan::StoreLocation::File(
        p.dir.path().join("strangler.db"),
    ))
    .unwrap();
    let history = store.history(None, 10).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(
        (
            history[0].route.as_str(),
            history[0].from.as_str(),
            history[0].to.as_str()
        ),
        ("students", "legacy", "cutover")
    );
    assert_eq!(history[0].actor, "ana");
    assert_eq!(history[0].reason.as_deref(), Some("parity proven"));
    assert_eq!(history[1].to, "canary 100%");

    // rollback --all brings every route back.
    p.strangler(&["rollback", "--all"]).await.unwrap();
    assert_eq!(
        p.client.get("/students").await.headers["x-strangler-served-by"],
        "legacy"
    );
    assert_eq!(
        p.client.get("/finance/x").await.headers["x-strangler-served-by"],
        "legacy"
    );
    // An unknown route is refused with exit code 2 and the route names.
    let err = p.strangler(&["cutover", "studnets"]).await.unwrap_err();
    assert_eq!(err.code, 2);
    assert!(err.message.contains("students, finance"), "{}", err.message);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_plan_is_refused_on_reload_and_the_old_one_keeps_serving() {
    let legacy = EchoUpstream::start("legacy").await;
    let new = EchoUpstream::start("new").await;
    let p = start(&legacy, &new).await;
    p.strangler(&["cutover", "students"]).await.unwrap();
    let good = std::fs::read_to_string(&p.plan_path).unwrap();

    let broken = good.replace(
        "service = \"new\"\n\n[[routes]]",
        "service = \"nowhere\"\n\n[[routes]]",
    );
    std::fs::write(&p.plan_path, &broken).unwrap();
    let refused = p.admin(Method::POST, "/admin/reload", true).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "bad_plan");
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("migration-plan.toml:"), "{message}");
    assert!(message.contains("routes[0].service"), "{message}");
    assert!(message.contains("unknown service `nowhere`"), "{message}");
    assert_eq!(
        p.client.get("/students").await.headers["x-strangler-served-by"],
        "new"
    );

    let moved = good.replace(
        "listen = \"127.0.0.1:0\"\nadmin",
        "listen = \"127.0.0.1:1\"\nadmin",
    );
    std::fs::write(&p.plan_path, &moved).unwrap();
    let refused = p.admin(Method::POST, "/admin/reload", true).await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "restart_required");

    // A good change is taken: a new route appears, stages are kept.
    let grown = format!(
        "{good}\n[[routes]]\nname = \"grades\"\npaths = [\"/grades/{{id}}\"]\nservice = \"new\"\nstage = \"cutover\"\n"
    );
    std::fs::write(&p.plan_path, &grown).unwrap();
    let reloaded = p.admin(Method::POST, "/admin/reload", true).await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.body);
    assert_eq!(reloaded.body["routes"], 3);
    let grades = p.client.get("/grades/1").await;
    assert_eq!(grades.headers["x-strangler-route"], "grades");
    assert_eq!(grades.headers["x-strangler-served-by"], "new");
    assert_eq!(
        p.client.get("/students").await.headers["x-strangler-served-by"],
        "new"
    );
}
