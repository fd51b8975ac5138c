//! The response cache over the wire: a hit reaches no upstream, the upstream's
//! `Cache-Control` and `Vary` decide what is kept, credentials bypass, the side that
//! answered is part of the key, and the admin API purges.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use e2e::{Answer, Client, TestProxy, eventually, plan_toml};
use reqwest::Method;
use serde_json::{Value, json};

/// An upstream that counts its requests and answers `{"service", "path", "n"}` (`n`: the
/// request's number), with the `Cache-Control` and `Vary` the query's `cc` and `vary` ask
/// for, and the request's `Accept-Language` as `lang`.
struct Origin {
    url: String,
    hits: Arc<AtomicUsize>,
}

impl Origin {
    async fn start(name: &'static str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                let query: Vec<(String, String)> = request
                    .uri()
                    .query()
                    .map(|q| {
                        q.split('&')
                            .filter_map(|kv| kv.split_once('='))
                            .map(|(k, v)| (k.to_string(), v.replace("%20", " ")))
                            .collect()
                    })
                    .unwrap_or_default();
                let lang = request
                    .headers()
                    .get("accept-language")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let mut answer =
                    axum::response::Response::builder().header("content-type", "application/json");
                for (k, v) in &query {
                    match k.as_str() {
                        "cc" => answer = answer.header("cache-control", v),
                        "vary" => answer = answer.header("vary", v),
                        _ => {}
                    }
                }
                let body = json!({
                    "service": name,
                    "path": request.uri().path(),
                    "n": n,
                    "lang": lang,
                });
                answer
                    .body(axum::body::Body::from(body.to_string()))
                    .unwrap()
            }
        });
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Route `items` (`/items/{*rest}`, moving to `new`, in `stage`) with `cache`, and route
/// `open` (`/open/{*rest}`) with no cache.
async fn cached_proxy(stage: &str, cache: &str) -> (TestProxy, Origin, Origin) {
    let legacy = Origin::start("legacy").await;
    let new = Origin::start("new").await;
    let dir = tempfile::tempdir().unwrap();
    let mut plan = plan_toml(
        dir.path(),
        &[
            ("legacy", format!("\"{}\"", legacy.url)),
            ("new", format!("\"{}\"", new.url)),
        ],
        "",
    );
    plan.push_str(&format!(
        "[[routes]]\nname = \"items\"\npaths = [\"/items/{{*rest}}\"]\nservice = \"new\"\nstage = \"{stage}\"\ncache = {cache}\n\n\
         [[routes]]\nname = \"open\"\npaths = [\"/open/{{*rest}}\"]\nservice = \"new\"\n"
    ));
    (TestProxy::start(dir, &plan).await, legacy, new)
}

fn cache_header(answer: &Answer) -> &str {
    answer
        .headers
        .get("x-strangler-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

/// GETs `path` with `headers`: the `x-strangler-cache` value and the body.
async fn get(p: &TestProxy, path: &str, headers: &[(&str, &str)]) -> (String, Value) {
    let mut request = p.client.request(Method::GET, path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let answer = p.client.send(request).await;
    assert_eq!(answer.status, 200, "{path}: {}", answer.body);
    (cache_header(&answer).to_string(), answer.body)
}

async fn purge(p: &TestProxy, body: &str) -> Answer {
    let admin = Client::new(&p.admin_url);
    let request = admin
        .request(Method::POST, "/admin/cache/purge")
        .bearer_auth(&p.token)
        .header("content-type", "application/json")
        .body(body.to_string());
    admin.send(request).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hit_reaches_no_upstream_and_is_counted() {
    let (p, legacy, new) = cached_proxy("legacy", "{ ttl = \"60s\" }").await;

    let (mark, first) = get(&p, "/items/a", &[]).await;
    assert_eq!((mark.as_str(), first["n"].as_u64()), ("miss", Some(1)));
    for _ in 0..5 {
        let (mark, again) = get(&p, "/items/a", &[]).await;
        assert_eq!(mark, "hit");
        assert_eq!(again, first, "the stored answer, byte for byte");
    }
    assert_eq!(legacy.hits(), 1, "five hits, one upstream request");
    assert_eq!(new.hits(), 0);

    // HEAD is answered from the GET's entry; another query is another entry.
    let head = p
        .client
        .send(p.client.request(Method::HEAD, "/items/a"))
        .await;
    assert_eq!((head.status.as_u16(), cache_header(&head)), (200, "hit"));
    let (mark, other) = get(&p, "/items/a?page=2", &[]).await;
    assert_eq!((mark.as_str(), other["n"].as_u64()), ("miss", Some(2)));
    // A route without a cache section says nothing about caching.
    let open = p.client.get("/open/a").await;
    assert_eq!(cache_header(&open), "-");
    assert_eq!(legacy.hits(), 3);

    assert_eq!(
        p.metric("strangler_route_cache_hits_total{route=\"items\"}")
            .await,
        6
    );
    assert_eq!(
        p.metric("strangler_service_requests_total{service=\"legacy\"}")
            .await,
        3,
        "hits are not upstream requests"
    );
    assert_eq!(
        p.metric("strangler_route_requests_total{route=\"items\"}")
            .await,
        8,
        "hits are requests of the route"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upstreams_cache_control_and_vary_are_honoured() {
    let (p, legacy, _new) = cached_proxy("legacy", "{ ttl = \"60s\" }").await;

    // Never stored: the client sees `miss` every time and every request reaches legacy.
    for cc in ["no-store", "private,%20max-age=60", "no-cache", "max-age=0"] {
        let path = format!("/items/never?cc={cc}");
        let before = legacy.hits();
        for _ in 0..2 {
            assert_eq!(get(&p, &path, &[]).await.0, "miss", "{cc}");
        }
        assert_eq!(legacy.hits(), before + 2, "{cc}");
    }
    let (_, _) = get(&p, "/items/star?vary=*", &[]).await;
    assert_eq!(
        get(&p, "/items/star?vary=*", &[]).await.0,
        "miss",
        "Vary: *"
    );

    // max-age shorter than the route's ttl: the entry goes when the upstream said.
    assert_eq!(get(&p, "/items/short?cc=max-age=1", &[]).await.0, "miss");
    assert_eq!(get(&p, "/items/short?cc=max-age=1", &[]).await.0, "hit");
    eventually(
        Duration::from_secs(10),
        "the max-age=1 entry to expire",
        || async { (get(&p, "/items/short?cc=max-age=1", &[]).await.0 == "miss").then_some(()) },
    )
    .await;

    // Vary: one entry per Accept-Language.
    let path = "/items/greeting?vary=Accept-Language";
    let fr = [("accept-language", "fr")];
    let de = [("accept-language", "de")];
    let (mark, first_fr) = get(&p, path, &fr).await;
    assert_eq!(
        (mark.as_str(), first_fr["lang"].as_str()),
        ("miss", Some("fr"))
    );
    assert_eq!(
        get(&p, path, &fr).await,
        ("hit".to_string(), first_fr.clone())
    );
    let (mark, first_de) = get(&p, path, &de).await;
    assert_eq!(
        (mark.as_str(), first_de["lang"].as_str()),
        ("miss", Some("de"))
    );
    assert_eq!(get(&p, path, &de).await, ("hit".to_string(), first_de));
    assert_eq!(get(&p, path, &fr).await, ("hit".to_string(), first_fr));
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_bypass_unless_the_route_caches_authenticated_answers() {
    let (p, legacy, _new) = cached_proxy("legacy", "{}").await;
    get(&p, "/items/me", &[]).await;
    for credentials in [
        ("authorization", "Bearer alice"),
        ("cookie", "session=alice"),
    ] {
        let before = legacy.hits();
        for _ in 0..2 {
            assert_eq!(get(&p, "/items/me", &[credentials]).await.0, "bypass");
        }
        assert_eq!(legacy.hits(), before + 2, "{credentials:?} reached legacy");
    }
    let post = p.client.post("/items/me", json!({})).await;
    assert_eq!(cache_header(&post), "bypass");

    let (p, legacy, _new) = cached_proxy("legacy", "{ authenticated = true }").await;
    let bearer = [("authorization", "Bearer alice")];
    assert_eq!(get(&p, "/items/shared", &bearer).await.0, "miss");
    assert_eq!(get(&p, "/items/shared", &bearer).await.0, "hit");
    assert_eq!(legacy.hits(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stage_change_never_serves_the_other_sides_entry() {
    let (p, legacy, new) = cached_proxy("legacy", "{ ttl = \"60s\" }").await;
    let (_, from_legacy) = get(&p, "/items/a", &[]).await;
    assert_eq!(get(&p, "/items/a", &[]).await.0, "hit");

    p.strangler(&["cutover", "items"]).await.unwrap();
    let (mark, from_new) = get(&p, "/items/a", &[]).await;
    assert_eq!(
        mark, "miss",
        "legacy's entry is not the new service's answer"
    );
    assert_eq!(from_new["service"], "new");
    assert_eq!(
        get(&p, "/items/a", &[]).await,
        ("hit".to_string(), from_new)
    );

    p.strangler(&["rollback", "items"]).await.unwrap();
    assert_eq!(
        get(&p, "/items/a", &[]).await,
        ("hit".to_string(), from_legacy),
        "back on legacy: legacy's own entry"
    );
    assert_eq!((legacy.hits(), new.hits()), (1, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_purges_by_route_and_prefix() {
    let (p, legacy, _new) = cached_proxy("legacy", "{ ttl = \"60s\" }").await;
    for path in ["/items/a/1", "/items/a/2", "/items/b"] {
        get(&p, path, &[]).await;
    }
    assert_eq!(legacy.hits(), 3);

    let purged = purge(&p, r#"{"route": "items", "prefix": "/items/a"}"#).await;
    assert_eq!(purged.expect(200), json!({ "purged": 2 }));
    assert_eq!(get(&p, "/items/a/1", &[]).await.0, "miss");
    assert_eq!(get(&p, "/items/b", &[]).await.0, "hit");
    assert_eq!(purge(&p, "{}").await.expect(200), json!({ "purged": 2 }));
    assert_eq!(get(&p, "/items/b", &[]).await.0, "miss");

    purge(&p, r#"{"route": "nope"}"#)
        .await
        .expect_error(404, "unknown_route");
    purge(&p, r#"{"route": "open"}"#)
        .await
        .expect_error(400, "not_cached");
    purge(&p, r#"{"prefix": "items"}"#)
        .await
        .expect_error(400, "bad_request");
    purge(&p, "[1,").await.expect_error(400, "bad_request");
    let unauthorized = p.admin(Method::POST, "/admin/cache/purge", false).await;
    assert_eq!(unauthorized.status, 401);
}
