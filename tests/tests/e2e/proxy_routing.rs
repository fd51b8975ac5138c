//! Routing through a real proxy: most specific route wins, unmatched goes to legacy, methods
//! filter, every stage sends traffic where it says, canary splits and sticks, and the path
//! is normalized once for both routing and forwarding.

use e2e::{EchoUpstream, TestProxy, raw_request};
use serde_json::Value;

struct Stack {
    proxy: TestProxy,
    _legacy: EchoUpstream,
    _new: EchoUpstream,
}

const ROUTES: &str = r#"
[[routes]]
name = "students"
paths = ["/students", "/students/{id}"]
service = "new"
canary = { sticky = "header:x-student-id" }

[[routes]]
name = "search"
paths = ["/students/search"]
methods = ["GET"]
service = "new"

[[routes]]
name = "finance"
paths = ["/finance/{*rest}"]
service = "new"

[[routes]]
name = "by-path"
paths = ["/grades/{student}"]
service = "new"
canary = { sticky = "path:student" }

[[routes]]
name = "by-cookie"
paths = ["/dashboard"]
service = "new"
canary = { sticky = "cookie:sid" }
"#;

async fn stack() -> Stack {
    let legacy = EchoUpstream::start("legacy").await;
    let new = EchoUpstream::start("new").await;
    Stack {
        proxy: e2e::two_sided_proxy(&legacy, &format!("\"{}\"", new.url()), "", ROUTES).await,
        _legacy: legacy,
        _new: new,
    }
}

/// (route header, served-by header, the echo's service and path) of one request.
async fn probe(s: &Stack, method: reqwest::Method, path: &str) -> (String, String, Value) {
    let c = &s.proxy.client;
    let answer = c.send(c.request(method, path)).await;
    assert_eq!(answer.status, 200, "{path}: {}", answer.body);
    let h = |name: &str| answer.headers[name].to_str().unwrap().to_string();
    (
        h("x-strangler-route"),
        h("x-strangler-served-by"),
        answer.body,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_most_specific_route_wins_and_the_rest_goes_to_legacy() {
    let s = stack().await;
    for route in ["students", "search", "finance"] {
        s.proxy.strangler(&["cutover", route]).await.unwrap();
    }
    use reqwest::Method as M;
    let cases = [
        (M::GET, "/students", "students", "new"),
        (M::GET, "/students/7", "students", "new"),
        (M::GET, "/students/search", "search", "new"),
        (M::POST, "/students/search", "students", "new"),
        (M::GET, "/students/7/invoices", "default", "legacy"),
        (M::GET, "/finance/invoices/1/pay", "finance", "new"),
        (M::GET, "/finance", "default", "legacy"),
        (M::GET, "/health", "default", "legacy"),
        (M::GET, "/openapi.json?v=3", "default", "legacy"),
    ];
    for (method, path, route, served_by) in cases {
        let (r, by, body) = probe(&s, method.clone(), path).await;
        assert_eq!(
            (r.as_str(), by.as_str()),
            (route, served_by),
            "{method} {path}"
        );
        assert_eq!(body["service"], served_by, "{method} {path}");
    }
    let (_, _, body) = probe(&s, M::GET, "/students?limit=3&after=x").await;
    assert_eq!(
        body["query"], "limit=3&after=x",
        "the query string is forwarded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_stage_sends_traffic_where_it_says() {
    let s = stack().await;
    let served = |expected: &'static str| {
        let s = &s;
        async move {
            let (_, by, body) = probe(s, reqwest::Method::GET, "/students/1").await;
            assert_eq!(by, expected);
            assert_eq!(body["service"], expected);
        }
    };
    served("legacy").await;
    s.proxy.strangler(&["shadow", "students"]).await.unwrap();
    served("legacy").await; // shadow answers from legacy
    s.proxy
        .strangler(&["canary", "students", "100"])
        .await
        .unwrap();
    served("new").await;
    s.proxy
        .strangler(&["canary", "students", "0"])
        .await
        .unwrap();
    served("legacy").await;
    s.proxy.strangler(&["cutover", "students"]).await.unwrap();
    served("new").await;
    s.proxy.strangler(&["retire", "students"]).await.unwrap();
    served("new").await;
    let refused = s
        .proxy
        .strangler(&["rollback", "students"])
        .await
        .unwrap_err();
    assert_eq!(refused.code, 1);
    assert!(refused.message.contains("--force"), "{}", refused.message);
    served("new").await;
    s.proxy
        .strangler(&[
            "rollback",
            "students",
            "--force",
            "--reason",
            "legacy still runs",
        ])
        .await
        .unwrap();
    served("legacy").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_splits_within_bounds_and_sticks_by_key() {
    let s = stack().await;
    s.proxy
        .strangler(&["canary", "students", "30"])
        .await
        .unwrap();
    let c = &s.proxy.client;

    // Without a key: per request, 30 % ± 5 standard deviations over 2,000 requests.
    let mut new = 0;
    for _ in 0..2_000 {
        let answer = c.get("/students").await;
        if answer.headers["x-strangler-served-by"] == "new" {
            new += 1;
        }
    }
    assert!(
        (497..=703).contains(&new),
        "{new} of 2000 went to the new service at 30 %"
    );

    // With a key: each key always lands on the same side, and keys split about 30/70.
    let mut keys_new = 0;
    for key in 0..400 {
        let mut sides = Vec::new();
        for _ in 0..3 {
            let answer = c
                .send(
                    c.request(reqwest::Method::GET, "/students/1")
                        .header("x-student-id", format!("s-{key}")),
                )
                .await;
            sides.push(
                answer.headers["x-strangler-served-by"]
                    .to_str()
                    .unwrap()
                    .to_string(),
            );
        }
        assert!(
            sides.windows(2).all(|w| w[0] == w[1]),
            "key s-{key} moved: {sides:?}"
        );
        if sides[0] == "new" {
            keys_new += 1;
        }
    }
    assert!(
        (80..=160).contains(&keys_new),
        "{keys_new} of 400 keys on the new side at 30 %"
    );

    // A bigger canary keeps every key that was already on the new side there.
    let mut on_new_at_30 = Vec::new();
    for key in 0..200 {
        let a = c
            .send(
                c.request(reqwest::Method::GET, "/students/1")
                    .header("x-student-id", format!("k{key}")),
            )
            .await;
        if a.headers["x-strangler-served-by"] == "new" {
            on_new_at_30.push(key);
        }
    }
    s.proxy
        .strangler(&["canary", "students", "60"])
        .await
        .unwrap();
    for key in on_new_at_30 {
        let a = c
            .send(
                c.request(reqwest::Method::GET, "/students/1")
                    .header("x-student-id", format!("k{key}")),
            )
            .await;
        assert_eq!(
            a.headers["x-strangler-served-by"], "new",
            "key k{key} went back at 60 %"
        );
    }

    // Path-parameter and cookie keys stick too.
    s.proxy
        .strangler(&["canary", "by-path", "50"])
        .await
        .unwrap();
    s.proxy
        .strangler(&["canary", "by-cookie", "50"])
        .await
        .unwrap();
    for i in 0..50 {
        let first = c.get(&format!("/grades/{i}")).await.headers["x-strangler-served-by"].clone();
        for _ in 0..3 {
            assert_eq!(
                c.get(&format!("/grades/{i}")).await.headers["x-strangler-served-by"],
                first
            );
        }
        let cookie = format!("theme=dark; sid=user{i}");
        let first = c
            .send(
                c.request(reqwest::Method::GET, "/dashboard")
                    .header("cookie", &cookie),
            )
            .await
            .headers["x-strangler-served-by"]
            .clone();
        for _ in 0..3 {
            let again = c
                .send(
                    c.request(reqwest::Method::GET, "/dashboard")
                        .header("cookie", &cookie),
                )
                .await;
            assert_eq!(again.headers["x-strangler-served-by"], first);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn paths_are_normalized_once_for_routing_and_forwarding() {
    let s = stack().await;
    s.proxy.strangler(&["cutover", "finance"]).await.unwrap();
    let addr = s.proxy.url.trim_start_matches("http://").to_string();
    // (raw path, expected status, route, path the upstream sees)
    let cases = [
        ("/students/../finance/x", 200, "finance", "/finance/x"),
        ("//students", 200, "students", "/students"),
        ("/students/%2e%2e/finance/x", 200, "finance", "/finance/x"),
        (
            "/students/%2E%2E/%2e/finance/y",
            200,
            "finance",
            "/finance/y",
        ),
        ("/finance/../students/1", 200, "students", "/students/1"),
        ("/finance/x/../../../students", 200, "students", "/students"),
        ("/%73tudents/1", 200, "students", "/students/1"),
        ("/students%2F..%2Ffinance%2Fx", 400, "default", ""),
        ("/students/1%2f..%2f..%2ffinance", 400, "default", ""),
        ("/students/%00", 400, "default", ""),
        ("/students/%5c..", 400, "default", ""),
        ("/students/", 200, "default", "/students/"),
    ];
    for (raw, status, route, seen) in cases {
        let request = format!("GET {raw} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        let (code, headers, body) = raw_request(&addr, &request).await;
        assert_eq!(code, status, "{raw}: {body}");
        let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(header("x-strangler-route").as_deref(), Some(route), "{raw}");
        let json: Value = serde_json::from_str(&body).unwrap();
        if status == 200 {
            assert_eq!(
                json["path"], seen,
                "{raw}: the upstream serves what was routed"
            );
            let expected_service = if route == "finance" { "new" } else { "legacy" };
            assert_eq!(json["service"], expected_service, "{raw}");
        } else {
            assert_eq!(json["error"]["code"], "bad_path", "{raw}");
        }
    }
    // The participants' event feed is internal: never reachable through the proxy.
    for raw in [
        "/_events?after=0",
        "/_events",
        "/students/../_events",
        "/%5Fevents",
    ] {
        for method in ["GET", "POST"] {
            let request = format!(
                "{method} {raw} HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            );
            let (code, _, body) = raw_request(&addr, &request).await;
            assert_eq!(code, 404, "{method} {raw}: {body}");
            assert!(body.contains("internal_endpoint"), "{method} {raw}: {body}");
        }
    }
}
