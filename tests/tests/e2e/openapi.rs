//! Every participant's OpenAPI document describes exactly the routes it serves, and what
//! it answers for them.

use e2e::{Client, Monolith, Stack};
use reqwest::Method;
use serde_json::Value;

/// What every participant serves besides its domains.
const COMMON: &[(&str, &str)] = &[
    ("GET", "/_events"),
    ("POST", "/_events"),
    ("GET", "/_snapshot"),
    ("GET", "/_snapshot/types"),
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/openapi.json"),
];

const STUDENTS: &[(&str, &str)] = &[
    ("GET", "/students"),
    ("POST", "/students"),
    ("GET", "/students/{id}"),
    ("PUT", "/students/{id}"),
    ("PATCH", "/students/{id}"),
    ("DELETE", "/students/{id}"),
];

const FINANCE: &[(&str, &str)] = &[
    ("GET", "/students/{id}/invoices"),
    ("POST", "/finance/invoices"),
    ("GET", "/finance/invoices/{id}"),
    ("POST", "/finance/invoices/{id}/pay"),
    ("POST", "/finance/invoices/{id}/cancel"),
];

const GAMIFICATION: &[(&str, &str)] = &[
    ("GET", "/students/{id}/points"),
    ("GET", "/students/{id}/rewards"),
    ("POST", "/gamification/rewards"),
    ("POST", "/gamification/rewards/{id}/revoke"),
];

const ENROLLMENT: &[(&str, &str)] = &[
    ("GET", "/students/{id}/enrollments"),
    ("GET", "/students/{id}/report"),
    ("POST", "/enrollments"),
    ("GET", "/enrollments/{id}"),
    ("POST", "/enrollments/{id}/renew"),
];

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Checks that `client`'s document lists exactly `served` and that the server answers every
/// documented operation with a documented status, and every other method with 405.
async fn described_exactly(name: &str, client: &Client, served: &[&[(&str, &str)]]) {
    let doc = client.get("/openapi.json").await.expect(200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{name}");
    assert!(
        doc["info"]["title"].as_str().unwrap().starts_with(name),
        "{name}: {}",
        doc["info"]
    );
    let paths = doc["paths"].as_object().unwrap();

    let mut described = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            described.push((method.to_uppercase(), path.clone()));
        }
    }
    let mut expected: Vec<(String, String)> = served
        .iter()
        .flat_map(|routes| routes.iter())
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    described.sort();
    expected.sort();
    assert_eq!(
        described, expected,
        "{name}: the document lists exactly the served routes"
    );

    // Every schema a document refers to is in it.
    let text = doc.to_string();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let schema = reference.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "{name}: {schema} is referred to but not described"
        );
    }

    // Probe the server: documented methods reach a handler, the others are 405.
    let id = "01900000-0000-7000-8000-000000000000";
    for (path, item) in paths {
        let concrete = path.replace("{id}", id);
        for method in METHODS {
            let documented = item.get(method.to_lowercase()).is_some();
            let answer = client
                .send(
                    client
                        .request(Method::from_bytes(method.as_bytes()).unwrap(), &concrete)
                        .header("x-strangler-dry-run", "1")
                        .json(&Value::Object(Default::default())),
                )
                .await;
            let code = answer.body["error"]["code"].as_str().unwrap_or_default();
            if documented {
                assert_ne!(code, "route_not_found", "{name}: {method} {path}");
                assert_ne!(code, "method_not_allowed", "{name}: {method} {path}");
                let responses = item[method.to_lowercase()]["responses"]
                    .as_object()
                    .unwrap();
                assert!(
                    responses.contains_key(answer.status.as_str()),
                    "{name}: {method} {path} answered {} which is not documented",
                    answer.status
                );
            } else {
                assert_eq!(answer.status.as_u16(), 405, "{name}: {method} {path}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_monolith_describes_every_route_it_serves() {
    let m = Monolith::start().await;
    described_exactly(
        "legacy-monolith",
        &m.client,
        &[STUDENTS, FINANCE, GAMIFICATION, ENROLLMENT, COMMON],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_service_describes_every_route_it_serves() {
    let stack = Stack::start().await;
    described_exactly(
        "students-service",
        &stack.students.client,
        &[STUDENTS, COMMON],
    )
    .await;
    described_exactly("finance-service", &stack.finance.client, &[FINANCE, COMMON]).await;
    described_exactly(
        "gamification-service",
        &stack.gamification.client,
        &[GAMIFICATION, COMMON],
    )
    .await;
    described_exactly(
        "enrollment-service",
        &stack.enrollment.client,
        &[ENROLLMENT, COMMON],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_documents_say_what_the_servers_enforce() {
    let m = Monolith::start().await;
    let c = &m.client;
    let doc = c.get("/openapi.json").await.expect(200);

    // The dry-run header: exactly the values the server takes.
    let params = doc["paths"]["/students"]["post"]["parameters"]
        .as_array()
        .unwrap();
    let dry_run = params
        .iter()
        .find(|p| p["name"] == "x-strangler-dry-run")
        .unwrap();
    for value in dry_run["schema"]["enum"].as_array().unwrap() {
        let answer = c
            .send(
                c.request(Method::DELETE, "/students/unknown")
                    .header("x-strangler-dry-run", value.as_str().unwrap()),
            )
            .await;
        answer.expect_error(404, "not_found");
    }
    let answer = c
        .send(
            c.request(Method::DELETE, "/students/unknown")
                .header("x-strangler-dry-run", "yes"),
        )
        .await;
    answer.expect_error(400, "invalid_header");

    // Empty names and emails are refused, as the schema's patterns say.
    c.post(
        "/students",
        serde_json::json!({ "email": "", "name": "Ada" }),
    )
    .await
    .expect_error(400, "invalid_field");
    c.post(
        "/students",
        serde_json::json!({ "email": "ada@example.org", "name": "  " }),
    )
    .await
    .expect_error(400, "invalid_field");

    // Feed limits are refused, not clamped.
    for query in ["limit=0", "limit=1001", "wait=30001", "after=-1"] {
        c.get(&format!("/_events?{query}"))
            .await
            .expect_error(400, "invalid_query");
    }
    c.get("/_events?limit=1000&wait=0").await.expect(200);
    let limit = &doc["paths"]["/_events"]["get"]["parameters"][1]["schema"];
    assert_eq!(
        (limit["minimum"].as_i64(), limit["maximum"].as_i64()),
        (Some(1), Some(1000))
    );

    // Ids no participant makes are a JSON 400, including bytes that are not UTF-8.
    for path in ["/students/a%2Fb", "/students/%FF", "/students/a.b/points"] {
        c.get(path).await.expect_error(400, "invalid_id");
    }
    c.get("/students?limit=")
        .await
        .expect_error(400, "invalid_query");
}

/// A write refused before its body is read (a bad dry-run header) still leaves the proxy's
/// connection to the participant usable: no request through the proxy fails with 502.
#[tokio::test(flavor = "multi_thread")]
async fn writes_refused_before_their_body_is_read_do_not_break_the_proxy() {
    let stack = Stack::start().await;
    let c = &stack.proxy.client;
    let id = c.new_student("early@example.org").await;
    let body =
        serde_json::json!({ "email": "early@example.org", "name": "Early", "status": "active" });
    // Large enough that it is still arriving when the refusal is written.
    let large = serde_json::json!({ "email": "early@example.org", "name": "x".repeat(512 * 1024), "status": "active" });
    for i in 0..100 {
        let answer = c
            .send(
                c.request(Method::PUT, &format!("/students/{id}"))
                    .header("x-strangler-dry-run", "2")
                    .json(if i % 2 == 0 { &body } else { &large }),
            )
            .await;
        assert_eq!(answer.status.as_u16(), 400, "request {i}: {}", answer.body);
        // A write right behind it, which the proxy does not retry, reuses the connection.
        let answer = c
            .send(
                c.request(Method::PUT, &format!("/students/{id}"))
                    .header("x-strangler-dry-run", "1")
                    .json(&body),
            )
            .await;
        assert_eq!(answer.status.as_u16(), 200, "request {i}: {}", answer.body);
    }
}
