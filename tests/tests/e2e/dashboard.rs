//! The dashboard's admin API and login, over the wire: the stage and rollback endpoints
//! (token, bad input, the gate's refusal, the audit actor) and the session cookie that
//! opens the pages.

use e2e::{EchoUpstream, TestProxy, two_sided_proxy};
use reqwest::Method;
use serde_json::{Value, json};

const ROUTES: &str = "[[routes]]\nname = \"students\"\npaths = [\"/students\", \"/students/{id}\"]\nservice = \"new\"\n\
    [[routes]]\nname = \"guarded\"\npaths = [\"/guarded\"]\nservice = \"new\"\ngate = { min_comparisons = 50 }\n";

async fn proxy() -> (TestProxy, EchoUpstream, EchoUpstream) {
    let legacy = EchoUpstream::start("legacy").await;
    let new = EchoUpstream::start("new").await;
    let proxy = two_sided_proxy(&legacy, &format!("\"{}\"", new.url()), "", ROUTES).await;
    (proxy, legacy, new)
}

/// POSTs `body` to an admin path with the token (or without), raw bytes allowed.
async fn post(proxy: &TestProxy, path: &str, body: &str, token: bool) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", proxy.admin_url))
        .header("content-type", "application/json")
        .body(body.to_string());
    if token {
        request = request.bearer_auth(&proxy.token);
    }
    let answer = request.send().await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

fn audit(proxy: &TestProxy, route: &str) -> Vec<strangler_store::AuditEntry> {
    let plan = strangler_plan::load(&proxy.plan_path).unwrap();
    let store = strangler_store::open(&plan.proxy.state).unwrap();
    store.history(Some(route), 10).unwrap()
}

async fn stage_served(proxy: &TestProxy, route: &str) -> String {
    let routes = proxy
        .admin(Method::GET, "/admin/routes", true)
        .await
        .expect(200);
    let row = routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == route)
        .unwrap()
        .clone();
    match row["stage"].as_str().unwrap() {
        "canary" => format!("canary {}%", row["percent_new"]),
        other => other.to_string(),
    }
}

#[tokio::test]
async fn a_stage_change_from_the_api_is_served_and_audited_with_its_actor() {
    let (proxy, _legacy, _new) = proxy().await;
    let move_to =
        r#"{"stage": "canary", "percent": 30, "actor": "Ada Lovelace", "reason": "first step"}"#;

    let (status, body) = post(&proxy, "/admin/routes/students/stage", move_to, false).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("unauthorized"))
    );
    assert_eq!(stage_served(&proxy, "students").await, "legacy");

    let (status, body) = post(&proxy, "/admin/routes/students/stage", move_to, true).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], true);
    assert_eq!(
        (body["from"].as_str(), body["to"].as_str()),
        (Some("legacy"), Some("canary 30%"))
    );
    assert_eq!(
        body["applied"].as_array().unwrap().len(),
        1,
        "this proxy confirmed: {body}"
    );
    assert_eq!(stage_served(&proxy, "students").await, "canary 30%");

    let grace_rolls_back = || {
        post(
            &proxy,
            "/admin/routes/students/rollback",
            r#"{"actor": "Grace"}"#,
            true,
        )
    };
    let (status, body) = grace_rolls_back().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["to"], "legacy");
    assert_eq!(stage_served(&proxy, "students").await, "legacy");

    let (status, body) = grace_rolls_back().await;
    assert_eq!(
        (status, &body["changed"], &body["stage"]),
        (200, &json!(false), &json!("legacy"))
    );

    let log = audit(&proxy, "students");
    let moves: Vec<(&str, &str, &str, Option<&str>)> = log
        .iter()
        .map(|e| {
            (
                e.actor.as_str(),
                e.from.as_str(),
                e.to.as_str(),
                e.reason.as_deref(),
            )
        })
        .collect();
    assert!(
        moves.contains(&("Ada Lovelace", "legacy", "canary 30%", Some("first step"))),
        "{moves:?}"
    );
    assert!(
        moves.contains(&("Grace", "canary 30%", "legacy", None)),
        "{moves:?}"
    );
}

#[tokio::test]
async fn bad_input_to_the_stage_endpoints_is_a_json_error() {
    let (proxy, _legacy, _new) = proxy().await;
    let cases: &[(&str, &str, u16, &str)] = &[
        (
            "/admin/routes/nope/stage",
            r#"{"stage": "shadow", "actor": "a"}"#,
            404,
            "unknown_route",
        ),
        (
            "/admin/routes/nope/rollback",
            r#"{"actor": "a"}"#,
            404,
            "unknown_route",
        ),
        (
            "/admin/routes/students/stage",
            r#"{"stage": "sideways", "actor": "a"}"#,
            400,
            "bad_stage",
        ),
        (
            "/admin/routes/students/stage",
            r#"{"stage": "canary", "actor": "a"}"#,
            400,
            "bad_percent",
        ),
        (
            "/admin/routes/students/stage",
            r#"{"stage": "canary", "percent": 101, "actor": "a"}"#,
            400,
            "bad_percent",
        ),
        (
            "/admin/routes/students/stage",
            r#"{"stage": "canary", "percent": -1, "actor": "a"}"#,
            400,
            "bad_percent",
        ),
        (
            "/admin/routes/students/stage",
            r#"{"stage": "cutover", "percent": 5, "actor": "a"}"#,
            400,
            "bad_percent",
        ),
        (
            "/admin/routes/students/stage",
            r#"{"stage": "shadow"}"#,
            400,
            "bad_request",
        ),
        (
            "/admin/routes/students/stage",
            r#"{"stage": "shadow", "actor": "  "}"#,
            400,
            "bad_actor",
        ),
        (
            "/admin/routes/students/stage",
            r#"{"stage": "shadow", "actor": "a", "extra": 1}"#,
            400,
            "bad_request",
        ),
        (
            "/admin/routes/students/stage",
            "not json",
            400,
            "bad_request",
        ),
        ("/admin/routes/students/rollback", "", 400, "bad_request"),
    ];
    for (path, body, status, code) in cases {
        let (got, answer) = post(&proxy, path, body, true).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (*status, Some(*code)),
            "{path} {body}: {answer}"
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{answer}"
        );
    }
    let answer = proxy
        .admin(Method::GET, "/admin/routes/students/stage", true)
        .await;
    answer.expect_error(405, "method_not_allowed");
    assert!(audit(&proxy, "students").is_empty(), "nothing was moved");
}

#[tokio::test]
async fn a_refused_move_answers_409_with_the_gates_reasons() {
    let (proxy, _legacy, _new) = proxy().await;
    let move_guarded = |body: &'static str| post(&proxy, "/admin/routes/guarded/stage", body, true);
    let (status, body) = move_guarded(r#"{"stage": "cutover", "actor": "ada"}"#).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("gate_closed")),
        "{body}"
    );
    let reason = body["error"]["reasons"][0].as_str().unwrap();
    assert!(reason.contains("0 comparisons (needs 50)"), "{reason}");
    assert_eq!(stage_served(&proxy, "guarded").await, "legacy");

    let (status, body) =
        move_guarded(r#"{"stage": "cutover", "actor": "ada", "force": true}"#).await;
    assert_eq!((status, &body["forced"]), (200, &json!(true)), "{body}");
    let (status, _) = move_guarded(r#"{"stage": "retired", "actor": "ada"}"#).await;
    assert_eq!(status, 200);
    let (status, body) = move_guarded(r#"{"stage": "shadow", "actor": "ada"}"#).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("refused")),
        "{body}"
    );
    assert!(
        body["error"]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("retired"),
        "{body}"
    );
    assert!(
        audit(&proxy, "guarded")
            .iter()
            .any(|e| e.forced && e.to == "cutover"),
        "the forced cutover is marked"
    );
}

#[tokio::test]
async fn the_pages_need_a_session_and_the_session_opens_the_api() {
    let (proxy, _legacy, _new) = proxy().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = |path: &str| format!("{}{path}", proxy.admin_url);

    let login_page = client.get(url("/")).send().await.unwrap();
    assert_eq!(login_page.status(), 401);
    let html = login_page.text().await.unwrap();
    assert!(
        html.contains("id=\"login\"") && !html.contains("students"),
        "{html}"
    );
    let route_page = client.get(url("/routes/students")).send().await.unwrap();
    assert_eq!(route_page.status(), 401);
    for asset in ["/assets/dashboard.js", "/assets/dashboard.css"] {
        let answer = client.get(url(asset)).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{asset} is served before sign-in");
    }
    proxy
        .admin(Method::GET, "/admin/status", false)
        .await
        .expect_error(401, "unauthorized");

    let login = |token: &str, actor: &str| {
        client
            .post(url("/login"))
            .json(&json!({ "token": token, "actor": actor }))
            .send()
    };
    let wrong = login("guess", "ada").await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    assert_eq!(login(&proxy.token, "").await.unwrap().status(), 400);

    let signed = login(&proxy.token, "Ada Lovelace").await.unwrap();
    assert_eq!(signed.status(), 204);
    let cookies: Vec<String> = signed
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .collect();
    assert!(signed.headers().get_all("set-cookie").iter().all(|v| {
        let v = v.to_str().unwrap();
        v.contains("HttpOnly") && v.contains("SameSite=Strict")
    }));
    let cookie = cookies.join("; ");

    let signed_get = |path: &str| client.get(url(path)).header("cookie", &cookie).send();
    let overview = signed_get("/").await.unwrap();
    assert_eq!(overview.status(), 200);
    assert!(
        overview
            .headers()
            .get("content-security-policy")
            .is_some_and(|v| v.to_str().unwrap().contains("default-src 'self'"))
    );
    let html = overview.text().await.unwrap();
    assert!(html.contains("data-actor=\"Ada Lovelace\""), "{html}");
    assert!(
        html.contains("data-route=\"students\" data-stage=\"legacy\""),
        "{html}"
    );
    assert!(html.contains("<svg"), "the charts are drawn inline");
    assert_eq!(signed_get("/routes/students").await.unwrap().status(), 200);
    assert_eq!(signed_get("/routes/nope").await.unwrap().status(), 404);
    let status = signed_get("/admin/status").await.unwrap();
    assert_eq!(status.status(), 200, "the session reads the admin API");
    let shadow_by_session = |with_header: bool| {
        let mut request = client
            .post(url("/admin/routes/students/stage"))
            .header("cookie", &cookie)
            .json(&json!({ "stage": "shadow", "actor": "Ada Lovelace" }));
        if with_header {
            request = request.header("x-strangler-dashboard", "1");
        }
        request.send()
    };
    assert_eq!(
        shadow_by_session(false).await.unwrap().status(),
        401,
        "a change needs the dashboard's header"
    );
    assert_eq!(shadow_by_session(true).await.unwrap().status(), 200);
    assert!(
        audit(&proxy, "students")
            .iter()
            .any(|e| e.actor == "Ada Lovelace" && e.to == "shadow")
    );

    let out = client
        .post(url("/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert!(
        out.headers()
            .get_all("set-cookie")
            .iter()
            .all(|v| v.to_str().unwrap().contains("Max-Age=0"))
    );
}
