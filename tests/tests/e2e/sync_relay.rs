//! The sync relay between two real participants (two monolith databases): forward delivery
//! with type filters, and no event lost or applied twice when the relay stops mid-stream.

use std::time::Duration;

use e2e::{Monolith, TestProxy, eventually, plan_toml};
use serde_json::json;

async fn relay_between(source: &Monolith, target: &Monolith, types: &str) -> TestProxy {
    let dir = tempfile::tempdir().unwrap();
    let mut plan = plan_toml(
        dir.path(),
        &[
            ("legacy", format!("\"{}\"", source.url)),
            ("mirror", format!("\"{}\"", target.url)),
        ],
        "",
    );
    plan.push_str(&format!(
        "\n[[sync]]\nfrom = \"legacy\"\nto = \"mirror\"\ntypes = {types}\n"
    ));
    TestProxy::start(dir, &plan).await
}

async fn link(p: &TestProxy) -> serde_json::Value {
    let store = strangler_store::open(&strangler_plan::StoreLocation::File(
        p.dir.path().join("strangler.db"),
    ))
    .unwrap();
    let links = store.links().unwrap();
    serde_json::to_value(&links[0]).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_reach_the_target_filtered_by_type() {
    let source = Monolith::start().await;
    let target = Monolith::start().await;
    let p = relay_between(&source, &target, "[\"student.*\"]").await;

    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            source
                .client
                .new_student(&format!("sync{i}@example.org"))
                .await,
        );
    }
    source
        .client
        .patch(
            &format!("/students/{}", ids[3]),
            json!({ "name": "Renamed At Source" }),
        )
        .await
        .expect(200);
    source
        .client
        .post(
            "/finance/invoices",
            json!({ "student_id": ids[0], "amount_cents": 100, "description": "fee" }),
        )
        .await
        .expect(201);

    eventually(
        Duration::from_secs(20),
        "every student on the target",
        || async {
            let on_target = target.count("students");
            (on_target == 20).then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the rename on the target",
        || async {
            let s = target.client.get(&format!("/students/{}", ids[3])).await;
            (s.body["name"] == "Renamed At Source").then_some(())
        },
    )
    .await;
    assert_eq!(
        target.count("invoices"),
        0,
        "invoice events are filtered out"
    );
    let progress = eventually(Duration::from_secs(20), "the link to catch up", || async {
        let l = link(&p).await;
        (l["checkpoint"] == l["head"] && l["checkpoint"].as_i64() == Some(22)).then_some(l)
    })
    .await;
    assert_eq!(progress["applied"], 21);
    assert_eq!(progress["skipped"], 1);
    assert_eq!(progress["last_error"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relay_stopped_mid_stream_loses_nothing_and_applies_nothing_twice() {
    let source = Monolith::start().await;
    let target = Monolith::start().await;
    let mut p = relay_between(&source, &target, "[]").await;

    let writer = {
        let c = source.client.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                c.new_student(&format!("stream{i}@example.org")).await;
            }
        })
    };
    // Stop and restart the relay (with its proxy) several times while writes go on, each
    // time once it has delivered something since the last restart: mid-stream.
    for _ in 0..5 {
        let delivered = target.count("students");
        eventually(Duration::from_secs(30), "the relay delivering", || async {
            let now = target.count("students");
            (now > delivered || now == 300).then_some(())
        })
        .await;
        p = p.restart().await;
    }
    writer.await.unwrap();

    // A crash between a push and its checkpoint: the checkpoint stays behind what the
    // target already applied, and those events come again.
    if let Some(proxy) = p.proxy.take() {
        proxy.stop().await;
    }
    let TestProxy { dir, plan_path, .. } = p;
    let store = rusqlite::Connection::open(dir.path().join("strangler.db")).unwrap();
    store
        .execute(
            "UPDATE sync_links SET checkpoint = MAX(0, checkpoint - 50)",
            [],
        )
        .unwrap();
    drop(store);
    let p = TestProxy::start_on(dir, plan_path).await;

    eventually(
        Duration::from_secs(30),
        "all 300 students on the target",
        || async { (target.count("students") == 300).then_some(()) },
    )
    .await;
    let progress = eventually(Duration::from_secs(30), "the link to catch up", || async {
        let l = link(&p).await;
        (l["checkpoint"].as_i64() == Some(300) && l["head"].as_i64() == Some(300)).then_some(l)
    })
    .await;
    assert_eq!(progress["applied"], 300, "each event applied exactly once");
    assert!(
        progress["duplicates"].as_i64().unwrap() >= 1,
        "the replayed events were acknowledged as duplicates: {progress}"
    );
    let (events, distinct): (i64, i64) = target
        .sql()
        .query_row("SELECT COUNT(*), COUNT(DISTINCT id) FROM outbox", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((events, distinct), (300, 300));
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_relay_a_link_once_and_hand_it_over() {
    let source = Monolith::start().await;
    let target = Monolith::start().await;
    let mut first = relay_between(&source, &target, "[\"student.*\"]").await;
    let second = first.replica().await;
    for i in 0..60 {
        source
            .client
            .new_student(&format!("lease{i}@example.org"))
            .await;
    }
    let progress = eventually(Duration::from_secs(30), "the link to catch up", || async {
        let l = link(&first).await;
        (l["checkpoint"].as_i64() == Some(60) && l["head"].as_i64() == Some(60)).then_some(l)
    })
    .await;
    assert_eq!(progress["applied"], 60);
    assert_eq!(
        progress["duplicates"], 0,
        "one relay pushed each event: {progress}"
    );

    // Whichever replica held the link stops; the other takes over.
    first.proxy.take().unwrap().stop().await;
    for i in 60..80 {
        source
            .client
            .new_student(&format!("lease{i}@example.org"))
            .await;
    }
    eventually(
        Duration::from_secs(30),
        "the other replica to relay",
        || async { (target.count("students") == 80).then_some(()) },
    )
    .await;
    second.stop().await;
}
