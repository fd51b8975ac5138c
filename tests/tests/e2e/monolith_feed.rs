//! The monolith's transactional outbox and event feed.

use e2e::Monolith;
use serde_json::{Value, json};

/// Reads the whole feed from `after`, `page` events at a time.
async fn read_feed(m: &Monolith, after: i64, page: u32) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after = after;
    loop {
        let body = m
            .client
            .get(&format!("/_events?after={after}&limit={page}"))
            .await
            .expect(200);
        let batch = body["events"].as_array().unwrap().clone();
        if batch.is_empty() {
            assert_eq!(body["next"], after);
            return events;
        }
        assert!(batch.len() <= page as usize);
        after = body["next"].as_i64().unwrap();
        assert_eq!(batch.last().unwrap()["seq"], after);
        events.extend(batch);
    }
}

fn student_event(id: &str, key: &str, version: i64, origin: &str, name: &str) -> Value {
    json!({
        "id": id, "origin": origin, "type": "student.updated", "key": key, "version": version,
        "at": "2026-11-01T10:00:00.000Z",
        "data": { "id": key, "email": format!("{key}@example.org"), "name": name, "status": "active",
                  "created_at": "2026-11-01T09:00:00.000Z", "updated_at": "2026-11-01T10:00:00.000Z" }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_feed_serves_every_change_in_commit_order() {
    let m = Monolith::start().await;
    let c = &m.client;
    let student = c.new_student("feed@example.org").await;
    c.patch(
        &format!("/students/{student}"),
        json!({ "name": "Renamed" }),
    )
    .await
    .expect(200);
    let confirmation = c
        .post(
            "/enrollments",
            json!({ "student_id": student, "course": "CS101", "term": "2026-fall" }),
        )
        .await
        .expect(201);
    let invoice = confirmation["invoice"]["id"].as_str().unwrap();
    c.post(&format!("/finance/invoices/{invoice}/pay"), json!({}))
        .await
        .expect(200);
    c.delete(&format!("/students/{student}")).await.expect(200);

    let events = read_feed(&m, 0, 2).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "student.created",
            "student.updated",
            "invoice.created",
            "enrollment.created",
            "reward.granted",
            "invoice.paid",
            "student.deactivated",
        ]
    );
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
    for e in &events {
        assert_eq!(e["origin"], "legacy");
        assert!(e["data"].is_object());
        assert_eq!(e["data"]["id"], e["key"]);
    }
    let student_versions: Vec<i64> = events
        .iter()
        .filter(|e| e["key"] == student.as_str())
        .map(|e| e["version"].as_i64().unwrap())
        .collect();
    assert_eq!(student_versions, [1, 2, 3]);
    assert_eq!(
        events[6]["data"]["status"], "inactive",
        "the full state after the change"
    );
    assert_eq!(events[5]["version"], 2, "an invoice's own version");
    assert_eq!(read_feed(&m, 5, 100).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_poll_wakes_on_a_new_event() {
    let m = Monolith::start().await;
    let c = m.client.clone();
    let empty = c.get("/_events?after=0&wait=100").await.expect(200);
    assert_eq!(empty["events"], json!([]));
    assert_eq!(empty["next"], 0);

    let poll = tokio::spawn({
        let c = c.clone();
        async move { c.get("/_events?after=0&wait=20000").await.expect(200) }
    });
    let id = c.new_student("wake@example.org").await;
    let woke = poll.await.unwrap();
    let events = woke["events"].as_array().unwrap();
    assert_eq!(
        events.len(),
        1,
        "the poll returned with the new event: {woke}"
    );
    assert_eq!(events[0]["key"], id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn applying_events_is_idempotent_and_keeps_the_highest_version() {
    let m = Monolith::start().await;
    let c = &m.client;
    let key = "01900000-0000-7000-8000-0000000000aa";
    let v2 = student_event(
        "01900000-0000-7000-8000-000000000001",
        key,
        2,
        "students",
        "Version Two",
    );
    let batch = json!({ "events": [v2] });

    let first = c.post("/_events", batch.clone()).await.expect(200);
    assert_eq!(
        first,
        json!({ "received": 1, "applied": 1, "duplicates": 0, "stale": 0, "rejected": 0 })
    );
    let again = c.post("/_events", batch).await.expect(200);
    assert_eq!(
        again,
        json!({ "received": 1, "applied": 0, "duplicates": 1, "stale": 0, "rejected": 0 })
    );
    assert_eq!(
        c.get(&format!("/students/{key}")).await.expect(200)["name"],
        "Version Two"
    );

    // Re-recorded in the monolith's outbox under its original id and origin.
    let feed = c.get("/_events?after=0").await.expect(200);
    let events = feed["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["id"], "01900000-0000-7000-8000-000000000001");
    assert_eq!(events[0]["origin"], "students");
    assert_eq!(events[0]["version"], 2);

    // An older version arriving late does not overwrite the newer state.
    let v1 = student_event(
        "01900000-0000-7000-8000-000000000002",
        key,
        1,
        "students",
        "Version One",
    );
    let stale = c
        .post("/_events", json!({ "events": [v1] }))
        .await
        .expect(200);
    assert_eq!(stale["stale"], 1);
    assert_eq!(stale["applied"], 0);
    assert_eq!(
        c.get(&format!("/students/{key}")).await.expect(200)["name"],
        "Version Two"
    );

    // Same version from another origin: the higher origin name wins, deterministically.
    let tie = student_event(
        "01900000-0000-7000-8000-000000000003",
        key,
        2,
        "legacy",
        "Tie",
    );
    assert_eq!(
        c.post("/_events", json!({ "events": [tie] }))
            .await
            .expect(200)["stale"],
        1
    );

    // A local change continues from the applied version.
    c.patch(&format!("/students/{key}"), json!({ "name": "Local" }))
        .await
        .expect(200);
    let feed = c.get("/_events?after=1").await.expect(200);
    assert_eq!(feed["events"][0]["version"], 3);
    assert_eq!(feed["events"][0]["origin"], "legacy");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_batch_applies_nothing() {
    let m = Monolith::start().await;
    let good = student_event(
        "01900000-0000-7000-8000-000000000010",
        "01900000-0000-7000-8000-0000000000bb",
        1,
        "students",
        "Good",
    );
    let mut no_version = good.clone();
    no_version["version"] = json!(0);
    let msg = m
        .client
        .post("/_events", json!({ "events": [good.clone(), no_version] }))
        .await
        .expect_error(400, "invalid_field");
    assert!(msg.starts_with("events[1]"), "{msg}");
    m.client
        .post("/_events", json!({ "events": "all of them" }))
        .await
        .expect_error(400, "invalid_field");
    assert_eq!(m.count("students"), 0);
    assert_eq!(m.count("outbox"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_event_is_parked_and_the_rest_applied() {
    let m = Monolith::start().await;
    let taken = m.client.new_student("taken@example.org").await;
    let id = |n: u32| format!("01900000-0000-7000-8000-0000000001{n:02}");
    let ok = student_event(
        &id(1),
        "01900000-0000-7000-8000-0000000000cc",
        1,
        "students",
        "Fine",
    );
    // Another student with an email this monolith already gives to someone else.
    let mut clash = student_event(
        &id(2),
        "01900000-0000-7000-8000-0000000000dd",
        1,
        "students",
        "Clash",
    );
    clash["data"]["email"] = json!("taken@example.org");
    let mut unknown = ok.clone();
    unknown["id"] = json!(id(3));
    unknown["type"] = json!("spaceship.launched");
    let mut bad_data = ok.clone();
    bad_data["id"] = json!(id(4));
    bad_data["key"] = json!("01900000-0000-7000-8000-0000000000ff");
    bad_data["data"] = json!({ "id": "x" });
    let after = student_event(
        &id(5),
        "01900000-0000-7000-8000-0000000000ee",
        1,
        "students",
        "After",
    );
    let batch = json!({ "events": [ok, clash, unknown, bad_data, after] });

    let report = m.client.post("/_events", batch.clone()).await.expect(200);
    assert_eq!(report["received"], 5);
    assert_eq!(report["applied"], 2, "{report}");
    assert_eq!(report["rejected"], 3, "{report}");
    assert!(
        report["first_rejection"]
            .as_str()
            .unwrap()
            .contains("email_taken"),
        "{report}"
    );
    assert_eq!(m.count("parked_events"), 3);
    assert_eq!(
        m.count("students"),
        3,
        "the good events on both sides of the refused ones"
    );
    assert_eq!(
        m.client
            .get(&format!("/students/{taken}"))
            .await
            .expect(200)["name"],
        "Test Student",
        "the clash changed nothing"
    );

    // Delivered again once the conflict is gone, a parked event applies and leaves the lot.
    m.client
        .patch(
            &format!("/students/{taken}"),
            json!({ "email": "moved@example.org" }),
        )
        .await
        .expect(200);
    let again = m.client.post("/_events", batch).await.expect(200);
    assert_eq!(again["applied"], 1, "{again}");
    assert_eq!(again["duplicates"], 2);
    assert_eq!(again["rejected"], 2);
    assert_eq!(m.count("parked_events"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn imported_rows_get_events_so_the_feed_is_a_snapshot() {
    let m = Monolith::start().await;
    let kept = m.client.new_student("kept@example.org").await;
    // Rows written behind the monolith's back, as an imported database would hold them.
    m.sql()
        .execute_batch(
            "INSERT INTO students (id, email, name, status, created_at, updated_at) VALUES
               ('01900000-0000-7000-8000-0000000000c1', 'old1@example.org', 'Old One', 'active', '2020-01-01T00:00:00.000Z', '2020-01-01T00:00:00.000Z'),
               ('01900000-0000-7000-8000-0000000000c2', 'old2@example.org', 'Old Two', 'inactive', '2020-01-01T00:00:00.000Z', '2020-01-01T00:00:00.000Z');
             INSERT INTO invoices (id, student_id, enrollment_id, term, description, amount_cents, currency, status, created_at, updated_at, paid_at, cancelled_at) VALUES
               ('01900000-0000-7000-8000-0000000000d1', '01900000-0000-7000-8000-0000000000c1', NULL, NULL, 'Old fee', 900, 'EUR', 'paid', '2020-01-01T00:00:00.000Z', '2020-01-02T00:00:00.000Z', '2020-01-02T00:00:00.000Z', NULL);",
        )
        .unwrap();
    let m = m.restart().await;
    let feed = m.client.get("/_events?after=0").await.expect(200);
    let events = feed["events"].as_array().unwrap();
    let summary: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().into(),
                e["key"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("student.created".into(), kept),
            (
                "student.imported".into(),
                "01900000-0000-7000-8000-0000000000c1".into()
            ),
            (
                "student.imported".into(),
                "01900000-0000-7000-8000-0000000000c2".into()
            ),
            (
                "invoice.imported".into(),
                "01900000-0000-7000-8000-0000000000d1".into()
            ),
        ]
    );
    assert_eq!(events[3]["data"]["status"], "paid");
    // A second start finds nothing left to backfill.
    let m = m.restart().await;
    assert_eq!(m.count("outbox"), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_snapshot_serves_entity_state_in_key_byte_order_with_versions() {
    let m = Monolith::start().await;
    let c = &m.client;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(c.new_student(&format!("snap{i}@example.org")).await);
    }
    c.patch(&format!("/students/{}", ids[2]), json!({ "name": "Twice" }))
        .await
        .expect(200);
    // Rows written behind the outbox's back: no version, and keys whose byte order is not
    // their letter order ("B" < "a" < "é").
    let conn = m.sql();
    for key in ["a-row", "B-row", "\u{e9}-row"] {
        conn.execute(
            "INSERT INTO students (id, email, name, status, created_at, updated_at)
             VALUES (?1, ?1 || '@example.org', 'Direct', 'active', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')",
            [key],
        )
        .unwrap();
    }
    drop(conn);

    assert_eq!(
        c.get("/_snapshot/types").await.expect(200)["types"],
        json!(["student", "invoice", "reward", "enrollment"])
    );
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page = c
            .get(&format!("/_snapshot?type=student&limit=3&after={after}"))
            .await
            .expect(200);
        let entities = page["entities"].as_array().unwrap();
        assert!(entities.len() <= 3);
        seen.extend(entities.iter().cloned());
        match page["next"].as_str() {
            Some(next) => {
                assert_eq!(entities.last().unwrap()["key"], next);
                after = next.replace('\u{e9}', "%C3%A9");
            }
            None => break,
        }
    }
    let keys: Vec<&str> = seen.iter().map(|e| e["key"].as_str().unwrap()).collect();
    let mut sorted = keys.clone();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    assert_eq!(keys, sorted, "key byte order");
    assert_eq!(keys.len(), 10);
    assert_eq!(keys.last(), Some(&"\u{e9}-row"));
    let by_key = |k: &str| seen.iter().find(|e| e["key"] == k).unwrap().clone();
    assert_eq!(by_key(&ids[2])["version"], 2);
    assert_eq!(by_key(&ids[2])["state"]["name"], "Twice");
    assert_eq!(by_key(&ids[0])["version"], 1);
    assert_eq!(
        by_key(&ids[0])["state"],
        c.get(&format!("/students/{}", ids[0])).await.expect(200),
        "the state is the entity as its events carry it"
    );
    assert_eq!(by_key("B-row")["version"], 0, "no event known");

    for (query, status, code) in [
        ("", 400, "invalid_query"),
        ("?type=", 400, "invalid_query"),
        ("?type=student&limit=0", 400, "invalid_query"),
        ("?type=student&limit=5001", 400, "invalid_query"),
        ("?type=student&limit=ten", 400, "invalid_query"),
        ("?type=student&colour=red", 400, "invalid_query"),
        ("?type=course", 404, "unknown_type"),
    ] {
        let message = c
            .get(&format!("/_snapshot{query}"))
            .await
            .expect_error(status, code);
        assert!(!message.is_empty(), "{query}");
    }
}
