//! The edge as an attacker or a broken client meets it, sent as raw bytes: one host per
//! request, forwarding headers by trust, transfer codings, upgrades (WebSocket), faults
//! charged to whoever caused them, slow and oversized clients, trailing slashes and case.

use std::time::{Duration, Instant};

use e2e::{EchoUpstream, TestProxy, raw_bytes, raw_request, read_answer};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

const STUDENTS: &str = "[[routes]]\nname = \"students\"\npaths = [\"/students\", \"/students/{id}\", \"/slow/{ms}\"]\nservice = \"new\"\nstage = \"cutover\"\n";

/// A proxy with `legacy` and `new` echo upstreams, the students route cut over to `new`.
async fn edge(proxy_extra: &str, routes: &str) -> (TestProxy, EchoUpstream, EchoUpstream) {
    let legacy = EchoUpstream::start("legacy").await;
    let new = EchoUpstream::start("new").await;
    let p = e2e::two_sided_proxy(&legacy, &format!("\"{}\"", new.url()), proxy_extra, routes).await;
    (p, legacy, new)
}

fn addr(p: &TestProxy) -> String {
    p.url.trim_start_matches("http://").to_string()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_has_one_host() {
    let (p, legacy, new) = edge("", STUDENTS).await;
    let a = addr(&p);
    let (status, _, body) = raw_request(
        &a,
        "GET /students/1 HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(json(&body)["error"]["code"], "bad_request");
    let (status, _, body) =
        raw_request(&a, "GET /students/1 HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 400, "HTTP/1.1 without Host: {body}");
    assert_eq!(new.hits() + legacy.hits(), 0, "nothing reached an upstream");

    // An absolute-form target names the host; a conflicting Host line does not.
    let (status, _, body) = raw_request(
        &a,
        "GET http://h1.example/students/1 HTTP/1.1\r\nHost: h2.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seen = json(&body);
    assert_eq!(seen["service"], "new");
    assert_eq!(seen["path"], "/students/1");
    assert_eq!(seen["headers"]["x-forwarded-host"], "h1.example");
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarding_headers_from_an_untrusted_client_are_replaced() {
    let (p, _legacy, _new) = edge("", STUDENTS).await;
    let (status, _, body) = raw_request(
        &addr(&p),
        "GET /students/1 HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 6.6.6.6\r\n\
         Forwarded: for=6.6.6.6;proto=https\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n\
         Connection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seen = &json(&body)["headers"];
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert!(
        seen.get("forwarded").is_none(),
        "an untrusted chain is dropped: {seen}"
    );
    assert!(seen.get("x-real-ip").is_none(), "{seen}");
    assert_eq!(seen["x-forwarded-proto"], "http");

    // A forwarding header that is not text is refused, not silently dropped.
    let (status, _, body) = raw_bytes(
        &addr(&p),
        b"GET /students/1 HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 1.1.1.1\xff\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        json(&body)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("X-Forwarded-For")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_coding_the_proxy_does_not_implement_is_501() {
    let (p, legacy, new) = edge("", STUDENTS).await;
    let (status, _, body) = raw_request(
        &addr(&p),
        "POST /students HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 501, "{body}");
    assert_eq!(
        json(&body)["error"]["code"],
        "unsupported_transfer_encoding"
    );
    assert_eq!(new.hits() + legacy.hits(), 0);
    // A client's unsupported coding is not the service's error.
    assert_eq!(
        p.metric("strangler_route_errors_total{route=\"default\"}")
            .await,
        0
    );
    assert_eq!(
        p.metric("strangler_route_failures_total{route=\"default\",cause=\"client\"}")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_or_cut_off_body_is_the_clients_fault() {
    let (p, _legacy, _new) = edge("", STUDENTS).await;
    let a = addr(&p);
    // A chunk size that is not hex.
    let (status, _, body) = raw_request(
        &a,
        "POST /students HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(json(&body)["error"]["code"], "bad_request_body");
    // A body cut off: the client stops writing but still listens.
    let mut stream = tokio::net::TcpStream::connect(&a).await.unwrap();
    stream
        .write_all(b"POST /students HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nonly ten b")
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let (status, _, body) = read_answer(stream).await;
    assert_eq!(status, 400, "{body}");
    // A client that disconnects mid-body hears nothing; it is still counted as its fault.
    let mut stream = tokio::net::TcpStream::connect(&a).await.unwrap();
    stream
        .write_all(b"POST /students HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nhalf")
        .await
        .unwrap();
    drop(stream);
    let p = &p;
    e2e::eventually(
        Duration::from_secs(10),
        "three client faults counted",
        || async move {
            (p.metric("strangler_route_failures_total{route=\"students\",cause=\"client\"}")
                .await
                == 3)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        p.metric("strangler_service_errors_total{service=\"new\"}")
            .await,
        0,
        "never charged to the service"
    );
    assert_eq!(
        p.metric("strangler_route_errors_total{route=\"students\"}")
            .await,
        0
    );
    assert_eq!(
        p.metric("strangler_route_failures_total{route=\"students\",cause=\"upstream\"}")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_trickles_its_body_is_cut_off_with_408() {
    let (p, _legacy, _new) = edge("body_read_timeout = \"300ms\"", STUDENTS).await;
    let mut stream = tokio::net::TcpStream::connect(addr(&p)).await.unwrap();
    stream
        .write_all(b"POST /students HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nfirst bytes")
        .await
        .unwrap();
    let started = Instant::now();
    let (status, headers, body) = read_answer(stream).await;
    assert_eq!(status, 408, "{body}");
    assert_eq!(json(&body)["error"]["code"], "body_timeout");
    assert_eq!(header(&headers, "connection"), Some("close"));
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(
        p.metric("strangler_service_errors_total{service=\"new\"}")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_at_its_in_flight_cap_sheds_with_503_and_retry_after() {
    let legacy = EchoUpstream::start("legacy").await;
    let new = EchoUpstream::start("new").await;
    let dir = tempfile::tempdir().unwrap();
    let mut plan = e2e::plan_toml(
        dir.path(),
        &[
            ("legacy", format!("\"{}\"", legacy.url())),
            ("new", format!("\"{}\"", new.url())),
        ],
        "",
    );
    plan.push_str("max_in_flight = 1\n");
    plan.push_str(STUDENTS);
    let p = TestProxy::start(dir, &plan).await;
    let slow = {
        let c = p.client.clone();
        tokio::spawn(async move { c.get("/slow/1500").await })
    };
    let p = &p;
    e2e::eventually(
        Duration::from_secs(10),
        "the slow request reached new",
        || async { (new.hits() == 1).then_some(()) },
    )
    .await;
    let shed = p.client.get("/students/1").await;
    assert_eq!(shed.status, 503, "{}", shed.body);
    assert_eq!(shed.body["error"]["code"], "overloaded");
    assert_eq!(shed.headers["retry-after"], "1");
    assert_eq!(shed.body["error"]["service"], "new");
    assert_eq!(new.hits(), 1, "the shed request never reached the service");
    assert_eq!(slow.await.unwrap().status, 200);
    // The slot is back once the answer went out.
    p.client.get("/students/1").await.expect(200);
    assert_eq!(
        p.metric("strangler_service_overloaded_total{service=\"new\"}")
            .await,
        1
    );
    assert_eq!(
        p.metric("strangler_route_failures_total{route=\"students\",cause=\"proxy\"}")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_that_buffers_refuses_an_oversized_chunked_body_before_connecting() {
    let routes = format!("{STUDENTS}buffer_body_up_to = \"64KiB\"\n");
    let (p, _legacy, new) = edge("max_body = \"1KiB\"", &routes).await;
    let chunk = "x".repeat(600);
    let raw = format!(
        "POST /students HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    let (status, _, body) = raw_request(&addr(&p), &raw).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(json(&body)["error"]["code"], "body_too_large");
    assert_eq!(new.hits(), 0, "refused before any byte reached the service");
    // Under the cap, the buffered body arrives whole.
    let raw = format!(
        "POST /students HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    let (status, _, body) = raw_request(&addr(&p), &raw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["body_len"], 600);
}

#[tokio::test(flavor = "multi_thread")]
async fn trailing_slashes_and_case_follow_the_plan() {
    // strict (the default): no match, to legacy, counted as a near miss.
    let (p, _legacy, _new) = edge("", STUDENTS).await;
    let answer = p.client.get("/students/7/").await;
    assert_eq!(answer.body["service"], "legacy");
    assert_eq!(answer.headers["x-strangler-route"], "default");
    let answer = p.client.get("/STUDENTS/7").await;
    assert_eq!(
        answer.body["service"], "legacy",
        "case-sensitive by default"
    );
    assert_eq!(
        p.metric("strangler_route_near_misses_total{route=\"students\"}")
            .await,
        2
    );

    // redirect: 308 to the path without the slash, the query kept.
    let (p, _legacy, _new) = edge("trailing_slash = \"redirect\"", STUDENTS).await;
    let answer = p.client.get("/students/7/?x=1").await;
    assert_eq!(answer.status, 308);
    assert_eq!(answer.headers["location"], "/students/7?x=1");

    // ignore: matched, and forwarded without the slash.
    let (p, _legacy, _new) = edge(
        "trailing_slash = \"ignore\"\ncase_sensitive = false",
        STUDENTS,
    )
    .await;
    let answer = p.client.get("/students/7/").await;
    assert_eq!(answer.body["service"], "new");
    assert_eq!(answer.body["path"], "/students/7");
    let answer = p.client.get("/Students/7").await;
    assert_eq!(answer.body["service"], "new");
    assert_eq!(answer.body["path"], "/Students/7", "forwarded as sent");
}

/// A WebSocket echo server on port 0.
async fn websocket_echo() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread")]
async fn websockets_are_tunnelled_and_a_route_can_refuse_them() {
    let legacy = EchoUpstream::start("legacy").await;
    let ws = websocket_echo().await;
    let routes = "[[routes]]\nname = \"live\"\npaths = [\"/live\"]\nservice = \"new\"\nstage = \"cutover\"\n\
                  [[routes]]\nname = \"closed\"\npaths = [\"/closed\"]\nservice = \"new\"\nstage = \"cutover\"\nupgrades = false\n";
    let p = e2e::two_sided_proxy(&legacy, &format!("\"{ws}\""), "", routes).await;
    let url = format!("ws://{}/live", addr(&p));
    let (mut socket, response) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["x-strangler-route"], "live");
    for text in ["hello", "through the proxy"] {
        socket.send(text.into()).await.unwrap();
        let echoed = socket.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    socket.close(None).await.unwrap();

    let refused = tokio_tungstenite::connect_async(format!("ws://{}/closed", addr(&p))).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
        }
        other => panic!("expected a 403, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn error_answers_name_the_route_and_service_never_an_address() {
    let legacy = EchoUpstream::start("legacy").await;
    let p = e2e::two_sided_proxy(&legacy, "\"http://127.0.0.1:9\"", "", STUDENTS).await;
    let answer = p.client.get("/students/1").await;
    assert_eq!(answer.status, 502, "{}", answer.body);
    let error = &answer.body["error"];
    assert_eq!(error["route"], "students");
    assert_eq!(error["service"], "new");
    assert!(
        !answer.body.to_string().contains("127.0.0.1"),
        "{}",
        answer.body
    );
    assert_eq!(
        p.metric("strangler_route_failures_total{route=\"students\",cause=\"upstream\"}")
            .await,
        1
    );
}
