//! JWT authentication at the edge, over the wire: tokens signed by the test with real keys
//! (files, and a JWKS served by a local server whose keys rotate), the 401s a client
//! sees, the claims the upstream sees.

use std::time::Duration;

use e2e::tokens::{JwksServer, claims, key_file, now, sign};
use e2e::{Answer, EchoUpstream, TestProxy, eventually};
use jsonwebtoken::Algorithm::{ES256, HS256, RS256};
use reqwest::Method;
use serde_json::Value;

const ROUTES: &str = "[[routes]]\nname = \"students\"\npaths = [\"/students\", \"/students/{id}\"]\nservice = \"new\"\nstage = \"cutover\"\n[[routes]]\nname = \"health\"\npaths = [\"/health\"]\nservice = \"new\"\nstage = \"cutover\"\npublic = true\n";

async fn proxy(edge: &str) -> (TestProxy, EchoUpstream, EchoUpstream) {
    let legacy = EchoUpstream::start("legacy").await;
    let new = EchoUpstream::start("new").await;
    let routes = format!("{ROUTES}\n{edge}");
    let p = e2e::two_sided_proxy(&legacy, &format!("\"{}\"", new.url()), "", &routes).await;
    (p, legacy, new)
}

fn file_keys() -> String {
    format!(
        "[edge.auth]\nissuer = \"https://id.test\"\naudience = \"school\"\nleeway = \"5s\"\n\
         keys = [{{ kid = \"rsa1\", algorithm = \"RS256\", file = \"{}\" }}, \
                 {{ algorithm = \"ES256\", file = \"{}\" }}, \
                 {{ algorithm = \"HS256\", file = \"{}\" }}]\n\
         claims = {{ sub = \"x-user-id\", tenant = \"x-tenant\" }}\n",
        key_file("rsa1.pub.pem"),
        key_file("ec1.pub.pem"),
        key_file("hs.secret"),
    )
}

async fn get(p: &TestProxy, path: &str, token: Option<&str>, extra: &[(&str, &str)]) -> Answer {
    let mut request = p.client.request(Method::GET, path);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    p.client.send(request).await
}

/// Asserts a 401 with the bearer challenge (`error` when given) and the JSON body's code.
#[track_caller]
fn unauthorized(answer: &Answer, error: Option<&str>, code: &str) -> String {
    assert_eq!(answer.status, 401, "{}", answer.body);
    let challenge = answer.headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer realm=\"strangler\""),
        "{challenge}"
    );
    match error {
        Some(error) => assert!(
            challenge.contains(&format!("error=\"{error}\"")),
            "{challenge}"
        ),
        None => assert!(!challenge.contains("error="), "{challenge}"),
    }
    assert_eq!(answer.body["error"]["code"], code, "{}", answer.body);
    assert_eq!(answer.headers["content-type"], "application/json");
    answer.body["error"]["message"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn good_tokens_pass_with_their_claims_and_bad_ones_get_401_before_any_service() {
    let (p, legacy, new) = proxy(&file_keys()).await;

    // No token: 401 with a bare challenge, nothing reaches a service.
    let answer = get(&p, "/students/7", None, &[]).await;
    unauthorized(&answer, None, "missing_token");
    assert_eq!(answer.body["error"]["route"], "students");
    // Unmatched paths go to legacy under the same defaults.
    unauthorized(
        &get(&p, "/elsewhere", None, &[]).await,
        None,
        "missing_token",
    );
    assert_eq!((legacy.hits(), new.hits()), (0, 0));

    // Each algorithm's good token is admitted; the upstream sees the claims as headers, and
    // never the client's own copies of them.
    let mut with_tenant = claims("s-7");
    with_tenant["tenant"] = Value::from("north");
    for token in [
        sign(RS256, "rsa1", Some("rsa1"), &with_tenant),
        sign(ES256, "ec1", None, &with_tenant),
        sign(HS256, "hs", None, &with_tenant),
    ] {
        let spoofed = [("x-user-id", "admin"), ("x-tenant", "south")];
        let echo = get(&p, "/students/7", Some(&token), &spoofed)
            .await
            .expect(200);
        assert_eq!(echo["service"], "new");
        assert_eq!(echo["headers"]["x-user-id"], "s-7", "{echo}");
        assert_eq!(echo["headers"]["x-tenant"], "north", "{echo}");
    }
    // A token without a forwarded claim: its header is absent, not the client's.
    let echo = get(
        &p,
        "/students/7",
        Some(&sign(RS256, "rsa1", Some("rsa1"), &claims("s-8"))),
        &[("x-tenant", "south")],
    )
    .await
    .expect(200);
    assert_eq!(echo["headers"]["x-user-id"], "s-8");
    assert!(echo["headers"].get("x-tenant").is_none(), "{echo}");

    // Expired, not yet valid, another audience, another issuer, another key: 401
    // invalid_token, each saying why.
    let with = |field: &str, value: Value| {
        let mut c = claims("s-7");
        c[field] = value;
        sign(RS256, "rsa1", Some("rsa1"), &c)
    };
    let refused = [
        (with("exp", Value::from(now() - 60)), "expired"),
        (with("nbf", Value::from(now() + 60)), "not valid yet"),
        (with("aud", Value::from("billing")), "audience"),
        (with("iss", Value::from("https://evil.test")), "issuer"),
        (
            sign(RS256, "rsa2", Some("rsa1"), &claims("s-7")),
            "signature",
        ),
    ];
    let hits = new.hits();
    for (token, why) in &refused {
        let answer = get(&p, "/students/7", Some(token), &[]).await;
        let message = unauthorized(&answer, Some("invalid_token"), "invalid_token");
        assert!(message.contains(why), "{message} / {why}");
        let challenge = answer.headers["www-authenticate"].to_str().unwrap();
        assert!(challenge.contains("error_description="), "{challenge}");
    }
    assert_eq!(new.hits(), hits, "a refused request reached the service");

    // A public route needs no token, and still drops the client's claim headers.
    let echo = get(&p, "/health", None, &[("x-user-id", "admin")])
        .await
        .expect(200);
    assert!(echo["headers"].get("x-user-id").is_none(), "{echo}");

    assert_eq!(
        p.metric("strangler_edge_refused_total{route=\"students\",reason=\"invalid_token\"}")
            .await,
        5
    );
    assert_eq!(
        p.metric("strangler_edge_refused_total{route=\"students\",reason=\"missing_token\"}")
            .await,
        1
    );
    assert_eq!(
        p.metric("strangler_edge_refused_total{route=\"default\",reason=\"missing_token\"}")
            .await,
        1
    );
}

#[tokio::test]
async fn a_jwks_is_fetched_off_the_request_path_and_a_removed_key_stops_verifying() {
    let mut jwks = JwksServer::start(&["rsa1"]).await;
    let edge = format!(
        "[edge.auth]\nissuer = \"https://id.test\"\naudience = \"school\"\njwks_url = \"{}\"\njwks_refresh = \"1s\"\nclaims = {{ sub = \"x-user-id\" }}\n",
        jwks.url
    );
    let (p, _legacy, _new) = proxy(&edge).await;
    let one = sign(RS256, "rsa1", Some("rsa1"), &claims("s-1"));
    let two = sign(RS256, "rsa2", Some("rsa2"), &claims("s-2"));
    let ec = sign(ES256, "ec1", Some("ec1"), &claims("s-3"));

    let echo = eventually(
        Duration::from_secs(10),
        "the JWKS's first key verifying",
        || async {
            let answer = get(&p, "/students/1", Some(&one), &[]).await;
            (answer.status == 200).then_some(answer.body)
        },
    )
    .await;
    assert_eq!(echo["headers"]["x-user-id"], "s-1");
    // A key the set does not have yet: 401, and the proxy asks the issuer again.
    let message = unauthorized(
        &get(&p, "/students/1", Some(&two), &[]).await,
        Some("invalid_token"),
        "invalid_token",
    );
    assert!(message.contains("kid `rsa2`"), "{message}");

    // The issuer rotates: rsa2 and an EC key join, then rsa1 leaves.
    jwks.set(&["rsa1", "rsa2", "ec1"]);
    for token in [&two, &ec] {
        eventually(Duration::from_secs(10), "a new key verifying", || async {
            (get(&p, "/students/1", Some(token), &[]).await.status == 200).then_some(())
        })
        .await;
    }
    jwks.set(&["rsa2", "ec1"]);
    eventually(
        Duration::from_secs(10),
        "the removed key refused",
        || async {
            let answer = get(&p, "/students/1", Some(&one), &[]).await;
            (answer.status == 401).then_some(())
        },
    )
    .await;
    assert_eq!(get(&p, "/students/1", Some(&two), &[]).await.status, 200);

    // The issuer goes away: the proxy keeps the keys it had.
    let fetched = jwks.fetches();
    jwks.stop().await;
    assert!(fetched >= 3, "{fetched} fetches");
    for _ in 0..3 {
        assert_eq!(get(&p, "/students/1", Some(&two), &[]).await.status, 200);
    }
}

#[tokio::test]
async fn before_any_jwks_answered_tokens_get_503_with_a_reason() {
    // A JWKS URL on a port nothing listens on.
    let port = e2e::free_port("127.0.0.1");
    let edge = format!("[edge.auth]\njwks_url = \"http://127.0.0.1:{port}/jwks.json\"\n");
    let (p, _legacy, new) = proxy(&edge).await;
    let token = sign(RS256, "rsa1", Some("rsa1"), &claims("s-1"));
    let answer = get(&p, "/students/1", Some(&token), &[]).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.body["error"]["code"], "auth_keys_unavailable");
    assert_eq!(answer.headers["retry-after"], "1");
    // Without a token the answer is still 401: the client can fix that one.
    unauthorized(
        &get(&p, "/students/1", None, &[]).await,
        None,
        "missing_token",
    );
    assert_eq!(new.hits(), 0);
}
