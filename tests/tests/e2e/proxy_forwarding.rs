//! The forwarding path: headers, request ids, body cap, timeouts, upstream failures, the
//! admin listener, slow clients and graceful shutdown.

use std::time::Duration;

use e2e::{EchoUpstream, TestProxy, raw_request};
use reqwest::Method;

async fn proxy_with(
    legacy: &EchoUpstream,
    new_url: &str,
    proxy_extra: &str,
    routes: &str,
) -> TestProxy {
    e2e::two_sided_proxy(legacy, new_url, proxy_extra, routes).await
}

const STUDENTS: &str = "[[routes]]\nname = \"students\"\npaths = [\"/students\", \"/students/{id}\", \"/slow/{ms}\"]\nservice = \"new\"\ntimeout = \"300ms\"\n";

#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_headers_go_and_forwarding_headers_are_appended() {
    let legacy = EchoUpstream::start("legacy").await;
    // The test client is a trusted load balancer in front: its chain is appended to.
    let p = proxy_with(
        &legacy,
        "\"http://127.0.0.1:9\"",
        "trusted_proxies = [\"127.0.0.1\"]",
        STUDENTS,
    )
    .await;
    let c = &p.client;
    let answer = c
        .send(
            c.request(Method::GET, "/students")
                .header("connection", "keep-alive, x-drop-me")
                .header("x-drop-me", "secret")
                .header("keep-alive", "timeout=5")
                .header("proxy-authorization", "Basic Zm9vOmJhcg==")
                // `te: trailers` alone is kept (gRPC); any other coding is this hop's.
                .header("te", "gzip")
                .header("x-forwarded-for", "6.6.6.6")
                .header("x-forwarded-host", "spoofed.example")
                .header("x-keep-me", "yes")
                .header(
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                ),
        )
        .await;
    let seen = &answer.body["headers"];
    for gone in [
        "x-drop-me",
        "keep-alive",
        "proxy-authorization",
        "te",
        "connection",
    ] {
        assert!(seen.get(gone).is_none(), "{gone} was forwarded: {seen}");
    }
    assert_eq!(seen["x-keep-me"], "yes");
    assert_eq!(
        seen["x-forwarded-for"], "6.6.6.6, 127.0.0.1",
        "the peer is appended, never replaced"
    );
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(
        seen["x-forwarded-host"],
        p.url.trim_start_matches("http://")
    );
    assert_eq!(
        seen["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    let id = seen["x-request-id"].as_str().unwrap();
    assert!(!id.is_empty());
    assert_eq!(
        answer.headers["x-request-id"], id,
        "the client sees the id the upstream got"
    );

    let answer = c
        .send(
            c.request(Method::GET, "/students")
                .header("x-request-id", "client-chosen-42"),
        )
        .await;
    assert_eq!(answer.body["headers"]["x-request-id"], "client-chosen-42");
    assert_eq!(answer.headers["x-request-id"], "client-chosen-42");
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down_is_502_and_too_slow_is_504_naming_route_and_service() {
    let legacy = EchoUpstream::start("legacy").await;
    let mut new = EchoUpstream::start("new").await;
    let p = proxy_with(&legacy, &format!("\"{}\"", new.url()), "", STUDENTS).await;
    p.strangler(&["cutover", "students"]).await.unwrap();
    let c = &p.client;

    let slow = c.get("/slow/2000").await;
    assert_eq!(slow.status, 504, "{}", slow.body);
    assert_eq!(slow.body["error"]["code"], "upstream_timeout");
    assert_eq!(slow.body["error"]["route"], "students");
    assert_eq!(slow.body["error"]["service"], "new");
    assert_eq!(
        c.get("/slow/10").await.status,
        200,
        "under the timeout is fine"
    );

    new.stop().await;
    let down = c.get("/students").await;
    assert_eq!(down.status, 502, "{}", down.body);
    assert_eq!(down.body["error"]["code"], "upstream_unreachable");
    assert_eq!(down.body["error"]["route"], "students");
    assert_eq!(down.body["error"]["service"], "new");
    assert_eq!(down.headers["content-type"], "application/json");
    // Rolling back serves again at once.
    p.strangler(&["rollback", "students"]).await.unwrap();
    assert_eq!(c.get("/students").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_instance_is_skipped_and_idempotent_requests_retry() {
    let legacy = EchoUpstream::start("legacy").await;
    let a = EchoUpstream::start("new-a").await;
    let urls = format!("\"http://127.0.0.1:9\", \"{}\"", a.url());
    let p = proxy_with(&legacy, &urls, "", STUDENTS).await;
    p.strangler(&["cutover", "students"]).await.unwrap();
    for _ in 0..20 {
        let answer = p.client.get("/students").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body["service"], "new-a");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_over_the_cap_are_413_and_under_it_stream_through() {
    let legacy = EchoUpstream::start("legacy").await;
    let p = proxy_with(
        &legacy,
        "\"http://127.0.0.1:9\"",
        "max_body = \"1KiB\"",
        STUDENTS,
    )
    .await;
    let c = &p.client;
    let ok = c.post_raw("/students", vec![b'a'; 1024]).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body["body_len"], 1024);
    let big = c.post_raw("/students", vec![b'a'; 2048]).await;
    assert_eq!(big.status, 413, "{}", big.body);
    assert_eq!(big.body["error"]["code"], "body_too_large");
    // Without a length up front (chunked), the cap holds while streaming.
    let chunk = format!("200\r\n{}\r\n", "b".repeat(512));
    let raw = format!(
        "POST /students HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{}0\r\n\r\n",
        chunk.repeat(4)
    );
    let (code, _, body) = raw_request(p.url.trim_start_matches("http://"), &raw).await;
    assert_eq!(code, 413, "{body}");
    let small = format!(
        "POST /students HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{}0\r\n\r\n",
        chunk
    );
    let (code, _, body) = raw_request(p.url.trim_start_matches("http://"), &small).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"body_len\":512"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_is_on_its_own_port_behind_a_token() {
    let legacy = EchoUpstream::start("legacy").await;
    let p = proxy_with(&legacy, "\"http://127.0.0.1:9\"", "", STUDENTS).await;

    // On the data port, /admin/... is just another path: it goes to legacy.
    let through_data = p.client.get("/admin/status").await;
    assert_eq!(through_data.headers["x-strangler-served-by"], "legacy");
    assert_eq!(through_data.body["service"], "legacy");
    let metrics_on_data = p.client.get("/metrics").await;
    assert_eq!(metrics_on_data.body["service"], "legacy");

    for path in ["/admin/status", "/admin/routes", "/metrics"] {
        let denied = p.admin(Method::GET, path, false).await;
        assert_eq!(denied.status, 401, "{path}");
        assert_eq!(denied.body["error"]["code"], "unauthorized");
        assert_eq!(denied.headers["www-authenticate"], "Bearer");
    }
    let admin = e2e::Client::new(&p.admin_url);
    let wrong = admin
        .send(
            admin
                .request(Method::GET, "/admin/status")
                .bearer_auth("not-the-token"),
        )
        .await;
    assert_eq!(wrong.status, 401);

    let lowercase = admin
        .send(
            admin
                .request(Method::GET, "/admin/status")
                .header("authorization", format!("bearer {}", p.token)),
        )
        .await;
    assert_eq!(lowercase.status, 200, "the scheme is case-insensitive");
    let wrong_method = p.admin(Method::GET, "/admin/reload", true).await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.body["error"]["code"], "method_not_allowed");

    p.client.get("/students").await;
    let status = p.admin(Method::GET, "/admin/status", true).await;
    assert_eq!(status.status, 200);
    let students = status.body["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "students")
        .unwrap()
        .clone();
    assert_eq!(students["requests"], 1);
    assert_eq!(students["served_legacy"], 1);
    let routes = p.admin(Method::GET, "/admin/routes", true).await;
    assert_eq!(routes.body["routes"][0]["paths"][0], "/students");
    let metrics = e2e::Client::new(&p.admin_url);
    let text = metrics
        .request(Method::GET, "/metrics")
        .bearer_auth(&p.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("strangler_route_requests_total{route=\"students\"} 1"),
        "{text}"
    );
    assert!(text.contains("strangler_route_stage{route=\"students\",stage=\"legacy\"} 1"));
    assert!(
        text.contains("strangler_service_latency_seconds_bucket{le=\"+Inf\",service=\"legacy\"} 3"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "OpenMetrics text: {text}");

    // The token file sits beside the store, readable by its owner only.
    let token_file = p.dir.path().join("strangler.db.admin-token");
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap().trim(),
        p.token
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_sends_headers_too_slowly_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let legacy = EchoUpstream::start("legacy").await;
    let p = proxy_with(
        &legacy,
        "\"http://127.0.0.1:9\"",
        "header_read_timeout = \"300ms\"",
        STUDENTS,
    )
    .await;
    let addr = p.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /students HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Never finish the headers: the proxy must close the connection on its own.
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "the connection was still open after 10 s");
    // A normal client on the same proxy is unaffected.
    let (code, _, _) = raw_request(
        addr,
        "GET /students HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_finishes_requests_in_flight() {
    let legacy = EchoUpstream::start("legacy").await;
    let mut p = proxy_with(&legacy, "\"http://127.0.0.1:9\"", "", "").await;
    let c = p.client.clone();
    let in_flight = tokio::spawn(async move { c.get("/slow/700").await });
    // Wait until the request reached the upstream, then stop the proxy under it.
    e2e::eventually(
        Duration::from_secs(10),
        "the slow request in flight",
        || async { (legacy.hits() >= 1).then_some(()) },
    )
    .await;
    let proxy = p.proxy.take().unwrap();
    proxy.stop().await;
    let answer = in_flight.await.unwrap();
    assert_eq!(
        answer.status, 200,
        "the in-flight request completed: {}",
        answer.body
    );
    let refused = reqwest::get(format!("{}/students", p.url)).await;
    assert!(refused.is_err(), "no new connections after shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_fallback_legacy_answers_what_the_new_service_cannot() {
    let legacy = EchoUpstream::start("legacy").await;
    let mut new = EchoUpstream::start("new").await;
    let routes = "[[routes]]\nname = \"students\"\npaths = [\"/students\", \"/students/{id}\"]\nservice = \"new\"\nfallback = true\n";
    let p = proxy_with(&legacy, &format!("\"{}\"", new.url()), "", routes).await;
    p.strangler(&["cutover", "students"]).await.unwrap();
    let c = &p.client;
    let up = c.get("/students/1").await;
    assert_eq!(up.headers["x-strangler-served-by"], "new");
    assert!(up.headers.get("x-strangler-fallback").is_none());

    new.stop().await;
    for _ in 0..5 {
        let answer = c.get("/students/1").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.headers["x-strangler-served-by"], "legacy");
        assert_eq!(answer.headers["x-strangler-fallback"], "1");
        assert_eq!(answer.body["service"], "legacy");
    }
    // A write is not replayed elsewhere: the client learns the new service failed.
    let write = c
        .post("/students", serde_json::json!({ "name": "x" }))
        .await;
    assert_eq!(write.status, 502, "{}", write.body);
}
