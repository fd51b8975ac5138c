//! Shadow traffic: the monolith answers, a copy goes to the candidate, the answers are
//! compared off the client's path; reports and the cutover gate read the results.

use std::sync::Arc;
use std::time::Duration;

use e2e::{Script, ScriptedUpstream, TestProxy, eventually, json_answer};
use serde_json::{Value, json};

/// The monolith's stand-in: a student, with a timestamp and a random field.
fn legacy_script() -> Script {
    Arc::new(|path: &str, _body: &[u8]| {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        json_answer(json!({
            "path": path, "name": "Ada", "tags": ["a", "b", "c"],
            "updated_at": "2026-01-01T00:00:00.000Z", "nonce": nonce.to_string(),
        }))
    })
}

/// A plan: `legacy` and one service per (name, url), each with a route `/NAME/{*rest}` in
/// shadow with the given extra settings, and a gate from `gate`.
async fn shadow_proxy(legacy: &str, candidates: &[(&str, String, &str)], gate: &str) -> TestProxy {
    let dir = tempfile::tempdir().unwrap();
    let mut services = vec![("legacy", format!("\"{legacy}\""))];
    for (name, url, _) in candidates {
        services.push((name, format!("\"{url}\"")));
    }
    let mut plan = e2e::plan_toml(dir.path(), &services, "");
    if !gate.is_empty() {
        plan = plan.replacen(
            "[gate]\nmin_comparisons = 0\nmax_mismatch_rate = 1.0\n",
            gate,
            1,
        );
    }
    for (name, _, extra) in candidates {
        plan.push_str(&format!(
            "\n[[routes]]\nname = \"{name}\"\npaths = [\"/{name}/{{*rest}}\"]\nservice = \"{name}\"\nstage = \"shadow\"\ntimeout = \"1s\"\n{extra}\n"
        ));
    }
    TestProxy::start(dir, &plan).await
}

pub(crate) fn report(p: &TestProxy, route: &str) -> Value {
    p.shadow_report(route)
}

/// Waits until `route` has `n` results of any kind recorded.
pub(crate) async fn settled(p: &TestProxy, route: &str, n: i64) -> Value {
    eventually(
        Duration::from_secs(30),
        "shadow results recorded",
        || async {
            let r = report(p, route);
            let unmirrored: i64 = r["unmirrored"]
                .as_object()
                .map_or(0, |m| m.values().filter_map(Value::as_i64).sum());
            let total = r["compared"].as_i64().unwrap_or(0)
                + r["shadow_errors"].as_i64().unwrap_or(0)
                + unmirrored;
            (total >= n).then_some(r)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shadow_leg_never_hurts_the_client() {
    let legacy = ScriptedUpstream::start(Duration::ZERO, legacy_script()).await;
    let slow = ScriptedUpstream::start(Duration::from_secs(3), legacy_script()).await;
    let garbage = ScriptedUpstream::start(
        Duration::ZERO,
        Arc::new(|_: &str, _: &[u8]| (200, "application/json", b"{{{ not json".to_vec())),
    )
    .await;
    let huge = ScriptedUpstream::start(
        Duration::ZERO,
        Arc::new(|_: &str, _: &[u8]| (200, "application/json", vec![b'x'; 4 << 20])),
    )
    .await;
    let p = shadow_proxy(
        &legacy.url(),
        &[
            ("down", "http://127.0.0.1:9".to_string(), ""),
            ("slow", slow.url(), "shadow = { timeout = \"300ms\" }"),
            ("garbage", garbage.url(), ""),
            ("huge", huge.url(), "shadow = { max_body = \"64KiB\" }"),
        ],
        "",
    )
    .await;
    for route in ["down", "slow", "garbage", "huge"] {
        for i in 0..10 {
            let answer = p.client.get(&format!("/{route}/item/{i}")).await;
            assert_eq!(answer.status, 200, "{route}: {}", answer.body);
            assert_eq!(answer.headers["x-strangler-served-by"], "legacy");
            assert_eq!(
                answer.body["path"],
                format!("/{route}/item/{i}"),
                "the monolith's answer"
            );
        }
    }
    let down = settled(&p, "down", 10).await;
    assert_eq!(down["shadow_errors"], 10, "{down}");
    // Each error's sample says why, with the request it was for.
    let reasons = |r: &Value| -> Vec<String> {
        r["samples"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["error"]["reason"].as_str().map(str::to_string))
            .collect()
    };
    assert!(
        reasons(&down).iter().any(|r| r == "connect_refused"),
        "{down}"
    );
    assert!(
        down["samples"][0]["request"]
            .as_str()
            .is_some_and(|r| r.starts_with("GET /down/item/")),
        "{down}"
    );
    let slow_report = settled(&p, "slow", 10).await;
    assert_eq!(slow_report["shadow_errors"], 10, "{slow_report}");
    assert!(
        reasons(&slow_report).iter().all(|r| r == "timeout") && !reasons(&slow_report).is_empty(),
        "{slow_report}"
    );
    let garbage_report = settled(&p, "garbage", 10).await;
    assert_eq!(
        garbage_report["mismatched"], 10,
        "garbage differs everywhere: {garbage_report}"
    );
    let huge_report = settled(&p, "huge", 10).await;
    assert_eq!(
        huge_report["shadow_errors"], 10,
        "an answer over the cap is not compared: {huge_report}"
    );
    assert!(
        reasons(&huge_report).iter().all(|r| r == "bad_answer")
            && !reasons(&huge_report).is_empty(),
        "{huge_report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deliberate_difference_is_caught_with_its_path_and_count() {
    let legacy = ScriptedUpstream::start(Duration::ZERO, legacy_script()).await;
    let candidate = ScriptedUpstream::start(
        Duration::ZERO,
        Arc::new(|path: &str, _: &[u8]| {
            let id: u32 = path
                .rsplit('/')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            // Every third student is named differently.
            let name = if id.is_multiple_of(3) {
                "Ada L."
            } else {
                "Ada"
            };
            json_answer(json!({
                "path": path, "name": name, "tags": ["c", "a", "b"],
                "updated_at": "2030-01-01T00:00:00.000Z", "nonce": "fixed",
            }))
        }),
    )
    .await;
    let rules = "shadow = { noise_sample = 100 }\ncompare = { ignore = [\"/updated_at\"], sets = [\"/tags\"] }";
    let p = shadow_proxy(&legacy.url(), &[("students", candidate.url(), rules)], "").await;
    for i in 0..30 {
        p.client.get(&format!("/students/s/{i}")).await.expect(200);
    }
    let r = settled(&p, "students", 30).await;
    assert_eq!(r["compared"], 30, "{r}");
    assert_eq!(r["mismatched"], 10, "every third differs at /name: {r}");
    assert_eq!(
        r["noisy_only"], 20,
        "the rest differ only at the random /nonce: {r}"
    );
    let paths = r["mismatching_paths"].as_array().unwrap();
    assert_eq!(paths.len(), 1, "{paths:?}");
    assert_eq!(paths[0]["path"], "/name");
    assert_eq!(paths[0]["kind"], "value_changed");
    assert_eq!(paths[0]["count"], 10);
    assert!(
        r["noisy_paths"]
            .as_array()
            .unwrap()
            .contains(&json!("/nonce")),
        "the monolith's own randomness is learned as noise: {r}"
    );
    let sample = &r["samples"][0];
    assert!(
        sample["diff"]
            .as_str()
            .unwrap()
            .contains("-  \"name\": \"Ada\""),
        "{sample}"
    );
    assert!(sample["sample"]["request_id"].is_string());
    assert!(r["latency_ms"]["candidate"]["p99"].as_f64().unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_are_skipped_or_sent_as_dry_runs_and_large_bodies_are_skipped() {
    let legacy = ScriptedUpstream::start(Duration::ZERO, legacy_script()).await;
    let skipping = ScriptedUpstream::start(Duration::ZERO, legacy_script()).await;
    let dry = ScriptedUpstream::start(Duration::ZERO, legacy_script()).await;
    let p = shadow_proxy(
        &legacy.url(),
        &[
            ("skip", skipping.url(), ""),
            (
                "dry",
                dry.url(),
                "shadow = { writes = \"dry-run\", max_body = \"1KiB\" }",
            ),
        ],
        "",
    )
    .await;
    for route in ["skip", "dry"] {
        for _ in 0..3 {
            p.client
                .post(&format!("/{route}/x"), json!({ "n": 1 }))
                .await
                .expect(200);
        }
    }
    p.client
        .post_raw("/dry/big", vec![b' '; 4096])
        .await
        .expect(200);
    let skip = settled(&p, "skip", 3).await;
    assert_eq!(skip["unmirrored"]["write_skipped"], 3, "{skip}");
    assert!(
        skipping.requests().is_empty(),
        "a skipped write never reaches the candidate"
    );
    let dry_report = settled(&p, "dry", 4).await;
    assert_eq!(dry_report["compared"], 3, "{dry_report}");
    assert_eq!(dry_report["unmirrored"]["too_large"], 1, "{dry_report}");
    let received = dry.requests();
    assert_eq!(received.len(), 3);
    assert!(
        received
            .iter()
            .all(|(m, _, dry_run)| m == "POST" && *dry_run),
        "{received:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_writes_leave_the_services_database_unchanged() {
    let legacy = e2e::Monolith::start().await;
    let students = e2e::Service::data(&students_service::SERVICE).await;
    let p = shadow_proxy(&legacy.url, &[], "").await;
    // The real students route: the monolith answers, the service gets dry runs.
    let plan = std::fs::read_to_string(&p.plan_path).unwrap().replace(
        "[services.legacy]",
        &format!(
            "[[routes]]\nname = \"students\"\npaths = [\"/students\"]\nservice = \"students\"\nstage = \"shadow\"\nshadow = {{ writes = \"dry-run\" }}\n\n[services.students]\nurls = [\"{}\"]\n\n[services.legacy]",
            students.url
        ),
    );
    std::fs::write(&p.plan_path, plan).unwrap();
    let p = p.restart().await;
    for i in 0..5 {
        let answer = p
            .client
            .post(
                "/students",
                json!({ "email": format!("dry{i}@example.org"), "name": "Dry" }),
            )
            .await;
        assert_eq!(answer.headers["x-strangler-served-by"], "legacy");
        answer.expect(201);
    }
    let r = settled(&p, "students", 5).await;
    assert_eq!(r["compared"], 5, "{r}");
    assert_eq!(legacy.count("students"), 5);
    assert_eq!(
        students.count("students"),
        0,
        "the service ran each write and rolled it back"
    );
    assert_eq!(students.count("outbox"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gate_refuses_below_and_accepts_at_the_thresholds() {
    let legacy = ScriptedUpstream::start(Duration::ZERO, legacy_script()).await;
    let candidate = ScriptedUpstream::start(
        Duration::ZERO,
        Arc::new(|path: &str, _: &[u8]| {
            let name = if path.ends_with("/bad") {
                "Wrong"
            } else {
                "Ada"
            };
            json_answer(json!({ "path": path, "name": name, "tags": ["a", "b", "c"],
                "updated_at": "2026-01-01T00:00:00.000Z", "nonce": "x" }))
        }),
    )
    .await;
    let gate = "[gate]\nmin_comparisons = 10\nmax_mismatch_rate = 0.1\n";
    let rules = "shadow = { noise_sample = 0 }\ncompare = { ignore = [\"/nonce\"] }";
    let p = shadow_proxy(&legacy.url(), &[("students", candidate.url(), rules)], gate).await;

    for _ in 0..8 {
        p.client.get("/students/ok").await.expect(200);
    }
    p.client.get("/students/bad").await.expect(200);
    settled(&p, "students", 9).await;
    let refused = p.strangler(&["cutover", "students"]).await.unwrap_err();
    assert_eq!(refused.code, 1);
    assert!(
        refused.message.contains("9 comparisons (needs 10)"),
        "{}",
        refused.message
    );
    assert!(
        refused.message.contains("/name (value_changed) ×1"),
        "{}",
        refused.message
    );
    let refused = p
        .strangler(&["canary", "students", "10"])
        .await
        .unwrap_err();
    assert!(
        refused.message.contains("gate is closed"),
        "{}",
        refused.message
    );

    // 10 comparisons, 1 mismatched: exactly at both thresholds.
    p.client.get("/students/ok").await.expect(200);
    settled(&p, "students", 10).await;
    p.strangler(&["canary", "students", "10"]).await.unwrap();
    p.strangler(&["rollback", "students"]).await.unwrap();
    p.strangler(&["shadow", "students"]).await.unwrap();

    // The gate judges the current run only: the fresh shadow run has one comparison, a
    // mismatch, and waits for enough of its own.
    p.client.get("/students/bad").await.expect(200);
    settled(&p, "students", 11).await;
    let refused = p.strangler(&["cutover", "students"]).await.unwrap_err();
    assert!(
        refused
            .message
            .contains("1 comparisons (needs 10), 1 mismatched = 100.00 %"),
        "{}",
        refused.message
    );
    // --force goes ahead, and the audit log says so.
    p.strangler(&[
        "cutover",
        "students",
        "--force",
        "--reason",
        "known difference",
    ])
    .await
    .unwrap();
    let store = strangler_store::open(&strangler_plan::StoreLocation::File(
        p.dir.path().join("strangler.db"),
    ))
    .unwrap();
    let last = store.history(Some("students"), 1).unwrap().pop().unwrap();
    assert!(last.forced);
    let reason = last.reason.unwrap();
    assert!(
        reason.starts_with("known difference; gate overridden (1 comparisons"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_shadow_run_reopens_the_gate_after_an_incident() {
    let legacy = ScriptedUpstream::start(Duration::ZERO, legacy_script()).await;
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = Arc::clone(&broken);
    let candidate = ScriptedUpstream::start(
        Duration::ZERO,
        Arc::new(move |path: &str, _: &[u8]| {
            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                (500, "application/json", b"{\"error\":\"down\"}".to_vec())
            } else {
                json_answer(
                    json!({ "path": path, "name": "Ada", "tags": ["a", "b", "c"],
                    "updated_at": "2026-01-01T00:00:00.000Z", "nonce": "x" }),
                )
            }
        }),
    )
    .await;
    let gate = "[gate]\nmin_comparisons = 5\nmax_mismatch_rate = 0.01\n";
    let rules = "shadow = { noise_sample = 0 }\ncompare = { ignore = [\"/nonce\"] }";
    let p = shadow_proxy(&legacy.url(), &[("students", candidate.url(), rules)], gate).await;
    // The incident: every comparison fails while the service is down.
    for _ in 0..5 {
        p.client.get("/students/x").await.expect(200);
    }
    settled(&p, "students", 5).await;
    let refused = p.strangler(&["cutover", "students"]).await.unwrap_err();
    assert!(
        refused.message.contains("gate is closed"),
        "{}",
        refused.message
    );

    // Fixed, and shadowed again: a new run, judged on its own.
    broken.store(false, std::sync::atomic::Ordering::SeqCst);
    p.strangler(&["shadow", "students"]).await.unwrap();
    for _ in 0..5 {
        p.client.get("/students/x").await.expect(200);
    }
    settled(&p, "students", 10).await;
    p.strangler(&["cutover", "students"]).await.unwrap();
    let store = strangler_store::open(&strangler_plan::StoreLocation::File(
        p.dir.path().join("strangler.db"),
    ))
    .unwrap();
    let last = store.history(Some("students"), 1).unwrap().pop().unwrap();
    assert!(!last.forced, "no --force needed");
    let runs = store.runs("students").unwrap();
    let stages: Vec<&str> = runs.iter().map(|r| r.stage.as_str()).collect();
    assert_eq!(
        stages,
        ["the plan's stage", "shadow", "cutover"],
        "{runs:?}"
    );
    assert!(
        runs[0]
            .verdict
            .as_deref()
            .unwrap()
            .starts_with("gate closed"),
        "{runs:?}"
    );
    assert!(
        runs[1].verdict.as_deref().unwrap().starts_with("gate open"),
        "{runs:?}"
    );
    assert_eq!(runs[1].count(strangler_store::ShadowMetric::Matched), 5);
    // The route's history keeps the incident.
    assert_eq!(report(&p, "students")["mismatched"], 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_report_format_renders_and_the_html_holds_the_route_table() {
    let legacy = ScriptedUpstream::start(Duration::ZERO, legacy_script()).await;
    let candidate = ScriptedUpstream::start(
        Duration::ZERO,
        Arc::new(|path: &str, _: &[u8]| json_answer(json!({ "path": path, "name": "<b>Ada</b>" }))),
    )
    .await;
    let p = shadow_proxy(
        &legacy.url(),
        &[
            ("students", candidate.url(), ""),
            ("finance", legacy.url(), ""),
        ],
        "",
    )
    .await;
    for i in 0..5 {
        p.client.get(&format!("/students/{i}")).await.expect(200);
    }
    settled(&p, "students", 5).await;
    let out = |format: &str| p.dir.path().join(format!("report.{format}"));
    for format in ["text", "md", "html", "json"] {
        let file = out(format);
        p.strangler(&[
            "report",
            "--format",
            format,
            "--out",
            file.to_str().unwrap(),
        ])
        .await
        .unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("students"), "{format}: {text}");
    }
    let md = std::fs::read_to_string(out("md")).unwrap();
    assert!(md.contains("| students | 5 | 0.00 % | 5 |"), "{md}");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(out("json")).unwrap()).unwrap();
    assert_eq!(json["routes"][0]["compared"], 5);

    let html = std::fs::read_to_string(out("html")).unwrap();
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "no external assets"
    );
    assert!(!html.contains("<b>Ada</b>"), "answers are escaped");
    let dom = tl::parse(&html, tl::ParserOptions::default()).unwrap();
    let parser = dom.parser();
    let table = dom
        .get_element_by_id("summary")
        .and_then(|h| h.get(parser))
        .and_then(|n| n.as_tag())
        .expect("a summary table");
    let rows: Vec<String> = table
        .query_selector(parser, "tr[data-route]")
        .unwrap()
        .filter_map(|h| h.get(parser))
        .map(|n| n.inner_text(parser).to_string())
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows[0].starts_with("students5"), "{rows:?}");
    assert!(
        dom.query_selector("svg.latency").unwrap().next().is_some(),
        "a latency chart"
    );
    assert!(
        dom.query_selector("span.del").unwrap().next().is_some(),
        "a coloured diff"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn after_cutover_a_reverse_shadow_compares_the_other_way_round() {
    let legacy = ScriptedUpstream::start(Duration::ZERO, legacy_script()).await;
    let service = ScriptedUpstream::start(
        Duration::ZERO,
        Arc::new(|path: &str, _: &[u8]| {
            json_answer(json!({ "path": path, "name": "Ada", "served": "service" }))
        }),
    )
    .await;
    let p = shadow_proxy(
        &legacy.url(),
        &[(
            "students",
            service.url(),
            "shadow = { reverse_shadow = true, noise_sample = 0 }",
        )],
        "",
    )
    .await;
    p.strangler(&["cutover", "students"]).await.unwrap();
    for i in 0..5 {
        let answer = p.client.get(&format!("/students/{i}")).await;
        assert_eq!(answer.headers["x-strangler-served-by"], "students");
        assert_eq!(
            answer.body["served"], "service",
            "the service answers the client"
        );
    }
    let r = settled(&p, "students", 5).await;
    assert_eq!(r["compared"], 5, "{r}");
    let paths: Vec<&str> = r["mismatching_paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    // The service's answer is the reference now: the monolith lacks /served, has the rest extra.
    assert!(paths.contains(&"/served"), "{paths:?}");
    assert!(
        r["mismatching_paths"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["path"] == "/served" && p["kind"] == "missing"),
        "{r}"
    );
    assert_eq!(
        legacy.requests().len(),
        5,
        "the monolith got the mirrored copies"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_keeps_comparing_both_ways_in_its_own_run() {
    let legacy = ScriptedUpstream::start(Duration::ZERO, legacy_script()).await;
    let candidate = ScriptedUpstream::start(Duration::ZERO, legacy_script()).await;
    let rules = "shadow = { noise_sample = 0 }\ncompare = { ignore = [\"/nonce\"] }";
    let p = shadow_proxy(&legacy.url(), &[("students", candidate.url(), rules)], "").await;
    p.strangler(&["canary", "students", "50"]).await.unwrap();
    let mut served = std::collections::HashMap::new();
    for i in 0..40 {
        let answer = p.client.get(&format!("/students/{i}")).await;
        let by = answer.headers["x-strangler-served-by"]
            .to_str()
            .unwrap()
            .to_string();
        *served.entry(by).or_insert(0) += 1;
    }
    assert!(served.len() == 2, "both sides answered some: {served:?}");
    // Every request reached both sides: the one that answered, and the other as a copy.
    let p = &p;
    let r = eventually(
        Duration::from_secs(30),
        "40 comparisons in the canary run",
        || async {
            let r = report(p, "students");
            (r["current_run"]["compared"] == 40).then_some(r)
        },
    )
    .await;
    assert_eq!(r["current_run"]["stage"], "canary 50%");
    assert_eq!(r["current_run"]["mismatched"], 0);
    assert_eq!(legacy.requests().len(), 40);
    assert_eq!(candidate.requests().len(), 40);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_proxy_mirrors_less_and_says_so() {
    let legacy = ScriptedUpstream::start(Duration::ZERO, legacy_script()).await;
    let candidate = ScriptedUpstream::start(Duration::ZERO, legacy_script()).await;
    let dir = tempfile::tempdir().unwrap();
    // Any load is over 1 % of a thread's time: shadow yields as soon as requests flow.
    let mut plan = e2e::plan_toml(
        dir.path(),
        &[
            ("legacy", format!("\"{}\"", legacy.url())),
            ("new", format!("\"{}\"", candidate.url())),
        ],
        "shadow_max_busy = \"1%\"",
    );
    plan.push_str("\n[[routes]]\nname = \"items\"\npaths = [\"/items/{id}\"]\nservice = \"new\"\nstage = \"shadow\"\n");
    let p = TestProxy::start(dir, &plan).await;
    let mut sent = 0;
    let throttled = eventually(Duration::from_secs(60), "legs throttled", || {
        let p = &p;
        sent += 20;
        let batch = sent;
        async move {
            for i in batch - 20..batch {
                let answer = p.client.get(&format!("/items/{i}")).await;
                assert_eq!(answer.status, 200, "the client is served: {}", answer.body);
                assert_eq!(answer.headers["x-strangler-served-by"], "legacy");
            }
            let r = report(p, "items");
            let throttled = r["unmirrored"]["throttled"].as_i64().unwrap_or(0);
            (throttled > 0).then_some(r)
        }
    })
    .await;
    // Counted apart from what was compared, so the match rate covers what was compared.
    let compared = throttled["compared"].as_i64().unwrap_or(0);
    let skipped = throttled["unmirrored"]["throttled"].as_i64().unwrap_or(0);
    assert!(compared + skipped <= i64::from(sent), "{throttled}");
    let metrics = p.metrics().await;
    assert!(
        metrics.contains("strangler_shadow_admitted_ratio{thread=\"0\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("strangler_dataplane_busy_ratio{thread=\"0\"}"));
    assert!(metrics.contains("result=\"unmirrored:throttled\""));
}
