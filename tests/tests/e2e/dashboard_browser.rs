//! The dashboard in a real headless browser (Debian's chromium, driven over WebDriver by
//! chromedriver, started once per test binary): a person signs in, watches a route change
//! stage after a CLI command, meets the gate's refusal, rolls back with one click, and opens
//! a mismatch sample. Screenshots are kept under the target directory.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use e2e::{ScriptedUpstream, Stack, TestProxy, eventually, json_answer, plan_toml};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(30);

/// The chromedriver this test binary shares: its URL. Never waited for: the watchdog ends it
/// after this process.
#[allow(clippy::zombie_processes)]
fn chromedriver() -> &'static str {
    static DRIVER: OnceLock<String> = OnceLock::new();
    DRIVER.get_or_init(|| {
        let binary = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| {
                panic!(
                    "chromedriver is not installed: the dashboard's browser test needs Debian's \
                     `chromium` and `chromium-driver` packages (.ci/run installs them)"
                )
            });
        assert!(
            chromium().is_some(),
            "chromium is not installed: the dashboard's browser test needs Debian's `chromium` \
             and `chromium-driver` packages (.ci/run installs them)"
        );
        let port = e2e::free_port("127.0.0.1");
        // Its own process group, so the watchdog ends the browsers it started with it.
        let child = Command::new(&binary)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        watchdog(child.id());
        let url = format!("http://127.0.0.1:{port}");
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < DEADLINE,
                "chromedriver did not listen on {url}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        url
    })
}

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Stops chromedriver and its browsers once this test process is gone (a `static` never
/// drops), a failed test's open session included.
#[allow(clippy::zombie_processes)]
fn watchdog(pid: u32) {
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 0.5; done; kill -- -{pid} 2>/dev/null",
        me = std::process::id()
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start the chromedriver watchdog");
}

async fn browser(width: u32, height: u32) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("browserName".into(), json!("chrome"));
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium().map(|p| p.display().to_string()),
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     format!("--window-size={width},{height}"), "--force-device-scale-factor=1"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(chromedriver())
        .await
        .expect("cannot open a chromium session through chromedriver")
}

/// Where screenshots go: the target directory this test binary was built in.
fn artifacts() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // <target>/debug/deps/e2e-…
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir)
}

/// The text of the first element `css` matches, once it satisfies `want`.
async fn text_of(client: &Client, css: &str, what: &str, want: impl Fn(&str) -> bool) -> String {
    eventually(DEADLINE, what, || async {
        let text = client
            .find(Locator::Css(css))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        want(&text).then_some(text)
    })
    .await
}

/// The text of the first element `css` matches inside `element`.
async fn text_in(element: &Element, css: &str) -> String {
    let found = element.find(Locator::Css(css)).await.unwrap();
    found.text().await.unwrap()
}

/// Clicks a button that asks for confirmation, and confirms.
async fn click_and_confirm(client: &Client, css: &str) {
    eventually(DEADLINE, css, || async {
        client
            .find(Locator::Css(css))
            .await
            .ok()?
            .click()
            .await
            .ok()
    })
    .await;
    eventually(DEADLINE, "the confirmation", || async {
        client.accept_alert().await.ok()
    })
    .await;
}

/// The monolith: students by id.
fn legacy(path: &str, _: &[u8]) -> (u16, &'static str, Vec<u8>) {
    let id = path.rsplit('/').next().unwrap_or_default();
    json_answer(
        json!({ "id": id, "name": "Ada", "email": format!("ada{id}@example.org"), "tags": ["math"] }),
    )
}

/// The new service: the same, with a longer name and one more tag.
fn candidate(path: &str, body: &[u8]) -> (u16, &'static str, Vec<u8>) {
    let (status, kind, bytes) = legacy(path, body);
    let mut doc: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    doc["name"] = json!("Ada L.");
    doc["tags"] = json!(["math", "poetry"]);
    (status, kind, serde_json::to_vec(&doc).unwrap_or_default())
}

#[tokio::test]
async fn a_person_watches_a_route_move_rolls_it_back_and_opens_a_mismatch() {
    let monolith = ScriptedUpstream::start(Duration::ZERO, Arc::new(legacy)).await;
    let service = ScriptedUpstream::start(Duration::ZERO, Arc::new(candidate)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut plan = plan_toml(
        dir.path(),
        &[
            ("legacy", format!("\"{}\"", monolith.url())),
            ("students", format!("\"{}\"", service.url())),
        ],
        "",
    );
    plan.push_str(
        "[[routes]]\nname = \"students\"\npaths = [\"/students/{id}\"]\nservice = \"students\"\nstage = \"shadow\"\n\
         capture = { mismatches = 3, redact = [\"header:authorization\"] }\n\
         [[routes]]\nname = \"invoices\"\npaths = [\"/invoices/{id}\"]\nservice = \"students\"\ngate = { min_comparisons = 50 }\n",
    );
    let proxy = TestProxy::start(dir, &plan).await;
    for id in 1..=6 {
        let answer = reqwest::Client::new()
            .get(format!("{}/students/{id}", proxy.url))
            .bearer_auth("client-secret")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    let state = strangler_plan::load(&proxy.plan_path).unwrap().proxy.state;
    eventually(DEADLINE, "the shadow's samples in the store", || async {
        let store = strangler_store::open(&state).ok()?;
        let summary = store.shadow_summary("students").ok()?;
        let captured = store.captures("students").ok()?;
        (!summary.samples.is_empty() && !captured.is_empty()).then_some(())
    })
    .await;

    let client = browser(1280, 860).await;
    client.goto(&format!("{}/", proxy.admin_url)).await.unwrap();
    client
        .find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(&proxy.token)
        .await
        .unwrap();
    client
        .find(Locator::Id("actor-name"))
        .await
        .unwrap()
        .send_keys("ada")
        .await
        .unwrap();
    client
        .find(Locator::Css("form#login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let badge = ".stage[data-route='students']";
    text_of(&client, badge, "the overview after signing in", |t| {
        t == "shadow"
    })
    .await;
    text_of(&client, "#actor", "the actor", |t| t == "ada").await;

    // A CLI command moves the route; the open page follows.
    let out = Command::new(env!("CARGO_BIN_EXE_e2e-strangler"))
        .arg("--plan")
        .arg(&proxy.plan_path)
        .args(["canary", "students", "25", "--actor", "cli-user"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text_of(&client, badge, "the canary on the page", |t| {
        t == "canary 25%"
    })
    .await;

    // More traffic to the new service with too few comparisons: the gate's reasons show.
    click_and_confirm(
        &client,
        "tr.chart-row[data-route='invoices'] button[data-move='cutover']",
    )
    .await;
    let refusal = text_of(&client, "#notice", "the refusal", |t| t.contains("refused")).await;
    assert!(refusal.contains("0 comparisons (needs 50)"), "{refusal}");
    assert_eq!(
        client
            .find(Locator::Css(".stage[data-route='invoices']"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "legacy"
    );
    let shot = client.screenshot().await.unwrap();
    std::fs::write(artifacts().join("dashboard-screenshot.png"), shot).unwrap();

    // One click (and a confirmation) rolls it back, in the name given at sign-in.
    click_and_confirm(
        &client,
        "tr.chart-row[data-route='students'] button.rollback",
    )
    .await;
    text_of(&client, badge, "the rollback on the page", |t| {
        t == "legacy"
    })
    .await;
    let audit = text_of(&client, "table.audit tbody tr", "the audit entry", |t| {
        t.contains("legacy")
    })
    .await;
    assert!(
        audit.contains("canary 25% → legacy") && audit.contains("ada"),
        "{audit}"
    );

    // The route's page: differing paths, and a sample opened side by side.
    client
        .goto(&format!("{}/routes/students", proxy.admin_url))
        .await
        .unwrap();
    let paths = text_of(&client, "table.paths", "the differing paths", |t| {
        t.contains("/name")
    })
    .await;
    assert!(paths.contains("/tags"), "{paths}");
    let sample = client.find(Locator::Css("details.sample")).await.unwrap();
    assert!(
        !sample
            .find(Locator::Css(".sides"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap()
    );
    sample
        .find(Locator::Css("summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let sides = sample.find(Locator::Css(".sides")).await.unwrap();
    assert!(sides.is_displayed().await.unwrap(), "the sample opens");
    let added = text_in(&sides, "span.line.ins").await;
    assert!(
        added.contains("Ada L."),
        "the new side's differing line is marked: {added}"
    );
    let removed = text_in(&sides, "span.line.del").await;
    assert!(removed.contains("\"Ada\""), "{removed}");
    let headers = sample.text().await.unwrap();
    assert!(
        headers.contains("authorization") && !headers.contains("client-secret"),
        "redacted: {headers}"
    );
    let shot = client.screenshot().await.unwrap();
    std::fs::write(artifacts().join("dashboard-route-screenshot.png"), shot).unwrap();

    client.close().await.unwrap();
}

/// The demo's stack (the monolith, four services, eight sync links) on the dashboard, signed
/// in through the address's fragment, until the charts draw the traffic: the README's
/// screenshot (`dashboard-demo.png`).
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_stack_on_the_dashboard_draws_its_charts() {
    let stack = Stack::start().await;
    let proxy = &stack.proxy;
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(
            proxy
                .client
                .new_student(&format!("student{i}@example.org"))
                .await,
        );
    }
    stack.synced().await;
    proxy
        .strangler(&["shadow", "students", "--actor", "ada"])
        .await
        .unwrap();
    proxy
        .strangler(&["shadow", "finance", "--actor", "ada"])
        .await
        .unwrap();
    proxy
        .strangler(&["canary", "gamification", "20", "--actor", "grace"])
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = Arc::clone(&stop);
        let base = proxy.url.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let id = &ids[i % ids.len()];
                for path in [
                    format!("/students/{id}"),
                    format!("/students?limit={}", i % 5 + 1),
                    format!("/students/{id}/invoices"),
                    format!("/students/{id}/points"),
                ] {
                    let _ = client.get(format!("{base}{path}")).send().await;
                }
                i += 1;
                // Steady traffic for the charts to draw (about 200 requests a second), not a
                // wait for a condition: the test polls the page for what it expects.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let client = browser(1280, 1240).await;
    client
        .goto(&format!(
            "{}/#token={}&actor=ada",
            proxy.admin_url, proxy.token
        ))
        .await
        .unwrap();
    text_of(
        &client,
        ".stage[data-route='students']",
        "the overview",
        |t| t == "shadow",
    )
    .await;
    let url = client.current_url().await.unwrap();
    assert_eq!(url.fragment(), None, "the token left the address bar");
    text_of(&client, "#actor", "the actor", |t| t == "ada").await;
    // Two sampled points with comparisons draw a line (one every 10 s).
    eventually(Duration::from_secs(60), "the match-rate line", || async {
        client
            .find(Locator::Css(
                "tr.chart-row[data-route='students'] polyline.match",
            ))
            .await
            .ok()
    })
    .await;
    let links = client
        .find_all(Locator::Css("table.links tbody tr"))
        .await
        .unwrap();
    assert_eq!(links.len(), 8, "every sync link with its lag");
    let proxies = client
        .find(Locator::Css("table.proxies tbody"))
        .await
        .unwrap();
    assert!(
        proxies
            .text()
            .await
            .unwrap()
            .contains(&proxy.proxy.as_ref().unwrap().id)
    );
    let shot = client.screenshot().await.unwrap();
    std::fs::write(artifacts().join("dashboard-demo.png"), shot).unwrap();
    stop.store(true, Ordering::SeqCst);
    traffic.await.unwrap();
    client.close().await.unwrap();
}
