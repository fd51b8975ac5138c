//! The demo plan's aggregate route over the whole stack: `/students/{id}/overview` merges
//! the student, their invoices, points and enrollments, each part asked through the proxy's
//! own routing; a part moving to its new service leaves the answer unchanged, and a part
//! whose service is down is reported in the answer.

use e2e::{Stack, eventually};
use serde_json::{Value, json};
use std::time::Duration;

const PARTS: [(&str, &str); 4] = [
    ("student", ""),
    ("invoices", "/invoices"),
    ("points", "/points"),
    ("enrollments", "/enrollments"),
];

/// The services tests' seeded stack (a student enrolled, billed, paid, rewarded, synced to
/// every service) and the student's id.
async fn seeded() -> (Stack, String) {
    let (s, ids) = crate::services::seeded().await;
    let student = ids["student"].as_str().unwrap().to_string();
    (s, student)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_overview_merges_its_parts_and_a_part_moving_to_its_service_changes_nothing() {
    let (s, student) = seeded().await;
    let p = &s.proxy;
    let overview = format!("/students/{student}/overview");

    let before = p.client.get(&overview).await;
    assert_eq!(before.headers["x-strangler-route"], "student-overview");
    let before = before.expect(200);
    let object = before.as_object().unwrap();
    assert_eq!(object.len(), 4, "{before}");
    for (part, suffix) in PARTS {
        let alone = p
            .client
            .get(&format!("/students/{student}{suffix}"))
            .await
            .expect(200);
        assert_eq!(before[part], alone, "{part} is the part's own answer");
    }
    assert_eq!(before["student"]["id"], student.as_str());

    // Gamification moves to its service: the points part now comes from there.
    let asked = |text: &str| -> u64 {
        text.lines()
            .find_map(|l| {
                l.strip_prefix("strangler_service_requests_total{service=\"gamification\"} ")
            })
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let gamification_before = asked(&p.metrics().await);
    p.strangler(&["cutover", "gamification"]).await.unwrap();
    let after = p.client.get(&overview).await.expect(200);
    assert_eq!(after, before, "the aggregate's answer did not change");
    assert!(
        asked(&p.metrics().await) > gamification_before,
        "the points part was asked of the gamification service"
    );
    assert_eq!(
        p.metric("strangler_route_requests_total{route=\"student-overview\"}")
            .await,
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_part_whose_service_is_down_is_reported_in_the_answer() {
    let (mut s, student) = seeded().await;
    let overview = format!("/students/{student}/overview");
    s.proxy.strangler(&["cutover", "finance"]).await.unwrap();
    s.finance.halt().await;

    let answer = eventually(
        Duration::from_secs(10),
        "the invoices part to fail",
        || async {
            let answer = s.proxy.client.get(&overview).await;
            (answer.body.get("_errors").is_some()).then_some(answer)
        },
    )
    .await;
    assert_eq!(
        answer.status, 200,
        "the plan's partial_status, never a 5xx: {}",
        answer.body
    );
    let body: Value = answer.body;
    assert_eq!(
        body["_errors"],
        json!({ "invoices": { "status": 502, "error": "upstream_unreachable" } }),
        "{body}"
    );
    assert!(body.get("invoices").is_none());
    for part in ["student", "points", "enrollments"] {
        assert!(
            body[part].is_object() || body[part].is_array(),
            "{part}: {body}"
        );
    }

    s.finance.resume().await;
    eventually(
        Duration::from_secs(10),
        "the overview to be whole again",
        || async {
            let body = s.proxy.client.get(&overview).await.expect(200);
            (body.get("_errors").is_none() && body.get("invoices").is_some()).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_part_over_its_timeout_is_reported_with_the_plans_partial_status() {
    let legacy = e2e::EchoUpstream::start("legacy").await;
    let new = e2e::EchoUpstream::start("new").await;
    let routes = "[[routes]]\nname = \"slow\"\npaths = [\"/slow/{ms}\"]\nservice = \"new\"\n\n\
        [[aggregates]]\nname = \"both\"\npath = \"/both/{ms}\"\ntimeout = \"300ms\"\npartial_status = 207\n\
        parts = { fast = \"/slow/0\", slow = \"/slow/{ms}\" }\n";
    let p = e2e::two_sided_proxy(&legacy, &format!("\"{}\"", new.url()), "", routes).await;

    let whole = p.client.get("/both/1").await.expect(200);
    assert_eq!(whole["fast"]["path"], "/slow/0");
    assert_eq!(whole["slow"]["path"], "/slow/1");
    assert_eq!(
        whole["slow"]["service"], "legacy",
        "the part went where its stage says"
    );

    let partial = p.client.get("/both/5000").await.expect(207);
    assert_eq!(partial["fast"]["path"], "/slow/0");
    assert_eq!(
        partial["_errors"],
        json!({ "slow": { "status": 504, "error": "timeout" } })
    );
    // Only GET is aggregated: another method is routed as any request would be.
    let post = p.client.post("/both/1", json!({})).await;
    assert_eq!(post.headers["x-strangler-route"], "default");
}
