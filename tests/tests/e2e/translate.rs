//! The anti-corruption layer: a new service that renamed a field (`full_name` → `name`) and
//! answers a create with 201 where the monolith says 200. Without a `translate` section
//! shadow counts every answer as a mismatch; with one, none, and after cutover clients keep
//! the monolith's contract (their requests translated on the way in, answers on the way out).

use std::sync::Arc;
use std::time::Duration;

use e2e::{ScriptedUpstream, TestProxy, json_answer};
use serde_json::{Value, json};

use crate::shadow::settled;

/// The monolith: the old contract (`full_name`, 200 on create).
async fn legacy() -> ScriptedUpstream {
    ScriptedUpstream::start(
        Duration::ZERO,
        Arc::new(|path: &str, body: &[u8]| {
            if body.is_empty() {
                return json_answer(json!({ "id": 7, "full_name": "Ada Lovelace", "path": path }));
            }
            let sent: Value = serde_json::from_slice(body).unwrap_or_default();
            json_answer(json!({ "id": 8, "full_name": sent["full_name"] }))
        }),
    )
    .await
}

/// The new service: `name`, 201 on create, 400 for a create in the old contract; plain text
/// at `/students/notes`.
async fn new_service() -> ScriptedUpstream {
    ScriptedUpstream::start(
        Duration::ZERO,
        Arc::new(|path: &str, body: &[u8]| {
            if path == "/students/notes" {
                return (200, "text/plain", b"name: Ada".to_vec());
            }
            if body.is_empty() {
                return json_answer(json!({ "id": 7, "name": "Ada Lovelace", "path": path }));
            }
            let sent: Value = serde_json::from_slice(body).unwrap_or_default();
            match sent["name"].as_str() {
                Some(name) => (
                    201,
                    "application/json",
                    json!({ "id": 8, "name": name }).to_string().into_bytes(),
                ),
                None => (
                    400,
                    "application/json",
                    br#"{"error":"name is required"}"#.to_vec(),
                ),
            }
        }),
    )
    .await
}

const TRANSLATE: &str = r#"
[routes.translate]
request = [{ rename = { from = "/full_name", to = "/name" } }]
response = [{ rename = { from = "/name", to = "/full_name" } }]
status = { 201 = 200 }
"#;

/// A proxy with route `students` (`/students`, `/students/{id}`) in `stage`, plus `extra`.
async fn proxy(
    legacy: &ScriptedUpstream,
    new: &ScriptedUpstream,
    stage: &str,
    extra: &str,
) -> TestProxy {
    let routes = format!(
        "[[routes]]\nname = \"students\"\npaths = [\"/students\", \"/students/{{id}}\"]\nservice = \"new\"\nstage = \"{stage}\"\n[routes.shadow]\nwrites = \"dry-run\"\n{extra}"
    );
    e2e::two_sided_proxy_at(&legacy.url(), &format!("\"{}\"", new.url()), "", &routes).await
}

/// Sends a read and a create through `p`; answers (status, body) of each.
async fn read_and_create(p: &TestProxy) -> [(u16, Value); 2] {
    let read = p.client.get("/students/7").await;
    let create = p
        .client
        .post("/students", json!({ "full_name": "Grace Hopper" }))
        .await;
    [
        (read.status.as_u16(), read.body),
        (create.status.as_u16(), create.body),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn shadow_compares_the_candidate_after_translation() {
    let (legacy, new) = (legacy().await, new_service().await);

    // Without the section, the renamed field (and the 201, and the refused create) differ.
    let mut p = proxy(&legacy, &new, "shadow", "").await;
    for _ in 0..3 {
        read_and_create(&p).await;
    }
    let r = settled(&p, "students", 6).await;
    assert_eq!(r["compared"], 6, "{r}");
    assert_eq!(r["mismatched"], 6, "{r}");
    p.proxy.take().unwrap().stop().await;

    // With it, the candidate is sent `name` and compared as a client would get it.
    let mut p = proxy(&legacy, &new, "shadow", TRANSLATE).await;
    for _ in 0..3 {
        let [(read, _), (create, created)] = read_and_create(&p).await;
        assert_eq!((read, create), (200, 200));
        assert_eq!(created["full_name"], "Grace Hopper", "legacy answered");
    }
    let r = settled(&p, "students", 6).await;
    assert_eq!(r["compared"], 6, "{r}");
    assert_eq!(r["mismatched"], 0, "{r}");
    p.proxy.take().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_cutover_clients_keep_the_old_contract() {
    let (legacy, new) = (legacy().await, new_service().await);
    let mut p = proxy(&legacy, &new, "cutover", TRANSLATE).await;
    let [(read, student), (create, created)] = read_and_create(&p).await;
    assert_eq!(read, 200);
    assert_eq!(student["full_name"], "Ada Lovelace", "{student}");
    assert!(student.get("name").is_none(), "{student}");
    // The create reached the new service as `name` (it refuses anything else) and its 201
    // came back as the monolith's 200, with the old field name.
    assert_eq!(create, 200, "{created}");
    assert_eq!(created, json!({ "id": 8, "full_name": "Grace Hopper" }));
    assert!(legacy.requests().is_empty(), "the new service answered");

    // A body that is not JSON passes untouched, and is counted.
    let notes = p
        .client
        .send(p.client.request(reqwest::Method::GET, "/students/notes"))
        .await;
    assert_eq!(notes.status, 200);
    assert_eq!(
        p.metric("strangler_route_untranslated_total{route=\"students\"}")
            .await,
        1
    );
    p.proxy.take().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn strangler_diff_applies_a_routes_translation() {
    let (legacy, new) = (legacy().await, new_service().await);
    let mut p = proxy(&legacy, &new, "legacy", TRANSLATE).await;
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("legacy.json");
    let b = dir.path().join("new.json");
    std::fs::write(&a, r#"{"id": 7, "full_name": "Ada Lovelace"}"#).unwrap();
    std::fs::write(&b, r#"{"id": 7, "name": "Ada Lovelace"}"#).unwrap();
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());

    let plain = p.strangler(&["diff", a, b]).await.unwrap_err();
    assert_eq!(plain.code, 1, "they differ without the route's translation");
    p.strangler(&["diff", a, b, "--route", "students"])
        .await
        .expect("the same once translated");
    let unknown = p
        .strangler(&["diff", a, b, "--route", "nope"])
        .await
        .unwrap_err();
    assert_eq!(unknown.code, 2, "{}", unknown.message);
    p.proxy.take().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn in_a_canary_the_monolith_is_mirrored_the_request_as_the_client_sent_it() {
    let (legacy, new) = (legacy().await, new_service().await);
    let canary = format!("[routes.canary]\npercent = 100\n{TRANSLATE}");
    let mut p = proxy(&legacy, &new, "canary", &canary).await;
    for _ in 0..2 {
        let [(read, student), (create, created)] = read_and_create(&p).await;
        assert_eq!((read, create), (200, 200));
        assert_eq!(student["full_name"], "Ada Lovelace");
        assert_eq!(created["full_name"], "Grace Hopper");
    }
    // The new service answered (translated); the monolith, mirrored, got `full_name`.
    let r = settled(&p, "students", 4).await;
    assert_eq!(r["compared"], 4, "{r}");
    assert_eq!(r["mismatched"], 0, "{r}");
    p.proxy.take().unwrap().stop().await;
}
