//! The OpenAPI document describes exactly the routes the monolith serves.

use e2e::Monolith;
use reqwest::Method;
use serde_json::Value;

/// Every route the monolith serves, as a client calls it.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/students"),
    ("POST", "/students"),
    ("GET", "/students/{id}"),
    ("PUT", "/students/{id}"),
    ("PATCH", "/students/{id}"),
    ("DELETE", "/students/{id}"),
    ("GET", "/students/{id}/invoices"),
    ("GET", "/students/{id}/points"),
    ("GET", "/students/{id}/rewards"),
    ("GET", "/students/{id}/enrollments"),
    ("GET", "/students/{id}/report"),
    ("POST", "/finance/invoices"),
    ("GET", "/finance/invoices/{id}"),
    ("POST", "/finance/invoices/{id}/pay"),
    ("POST", "/finance/invoices/{id}/cancel"),
    ("POST", "/gamification/rewards"),
    ("POST", "/gamification/rewards/{id}/revoke"),
    ("POST", "/enrollments"),
    ("GET", "/enrollments/{id}"),
    ("POST", "/enrollments/{id}/renew"),
    ("GET", "/_events"),
    ("POST", "/_events"),
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/openapi.json"),
];

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

#[tokio::test(flavor = "multi_thread")]
async fn every_route_is_described_and_every_description_is_served() {
    let m = Monolith::start().await;
    let doc = m.client.get("/openapi.json").await.expect(200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();

    let mut described = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            described.push((method.to_uppercase(), path.clone()));
        }
    }
    let mut served: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    described.sort();
    served.sort();
    assert_eq!(
        described, served,
        "the document lists exactly the served routes"
    );

    // Probe the server: documented methods reach a handler, the others are 405.
    let id = "01900000-0000-7000-8000-000000000000";
    for (path, item) in paths {
        let concrete = path.replace("{id}", id);
        for method in METHODS {
            let documented = item.get(method.to_lowercase()).is_some();
            let answer = m
                .client
                .send(
                    m.client
                        .request(Method::from_bytes(method.as_bytes()).unwrap(), &concrete)
                        .header("x-strangler-dry-run", "1")
                        .json(&Value::Object(Default::default())),
                )
                .await;
            let code = answer.body["error"]["code"].as_str().unwrap_or_default();
            if documented {
                assert_ne!(code, "route_not_found", "{method} {path}");
                assert_ne!(code, "method_not_allowed", "{method} {path}");
                let responses = item[method.to_lowercase()]["responses"]
                    .as_object()
                    .unwrap();
                assert!(
                    responses.contains_key(answer.status.as_str()),
                    "{method} {path} answered {} which is not documented",
                    answer.status
                );
            } else {
                assert_eq!(answer.status.as_u16(), 405, "{method} {path}");
            }
        }
    }
}
