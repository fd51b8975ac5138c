//! The monolith's students, finance and gamification endpoints: happy paths and every error
//! class, with the error body checked.

use e2e::Monolith;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn students_lifecycle() {
    let m = Monolith::start().await;
    let c = &m.client;

    let created = c
        .post(
            "/students",
            json!({ "email": " Ada@Example.ORG ", "name": "Ada Lovelace" }),
        )
        .await;
    let location = created.headers["location"].to_str().unwrap().to_string();
    let ada = created.expect(201);
    let id = ada["id"].as_str().unwrap();
    assert_eq!(location, format!("/students/{id}"));
    assert_eq!(ada["email"], "ada@example.org");
    assert_eq!(ada["status"], "active");
    assert!(uuid_v7(id), "{id} is a UUIDv7");
    assert!(ada["created_at"].as_str().unwrap().ends_with('Z'));

    assert_eq!(c.get(&format!("/students/{id}")).await.expect(200), ada);

    let patched = c
        .patch(
            &format!("/students/{id}"),
            json!({ "name": "Augusta Ada King" }),
        )
        .await
        .expect(200);
    assert_eq!(patched["name"], "Augusta Ada King");
    assert_eq!(patched["email"], "ada@example.org");
    assert_ne!(patched["updated_at"], ada["updated_at"]);

    let mut full = patched.clone();
    full["email"] = json!("countess@example.org");
    full["name"] = json!("Ada King");
    let replaced = c.put(&format!("/students/{id}"), full).await.expect(200);
    assert_eq!(replaced["email"], "countess@example.org");
    assert_eq!(replaced["name"], "Ada King");
    assert_eq!(replaced["created_at"], ada["created_at"]);

    let gone = c.delete(&format!("/students/{id}")).await.expect(200);
    assert_eq!(gone["status"], "inactive");
    assert_eq!(
        c.get(&format!("/students/{id}")).await.expect(200)["status"],
        "inactive"
    );
}

fn uuid_v7(id: &str) -> bool {
    id.len() == 36 && id.as_bytes()[14] == b'7'
}

#[tokio::test(flavor = "multi_thread")]
async fn students_list_paginates_and_filters() {
    let m = Monolith::start().await;
    let c = &m.client;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(c.new_student(&format!("s{i}@example.org")).await);
    }
    let mut seen = Vec::new();
    let mut path = "/students?limit=3".to_string();
    loop {
        let page = c.get(&path).await.expect(200);
        let students = page["students"].as_array().unwrap();
        assert!(students.len() <= 3);
        seen.extend(
            students
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_string()),
        );
        match page["next"].as_str() {
            Some(next) => path = format!("/students?limit=3&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every student once, in creation order");

    let found = c.get("/students?email=S4@example.org").await.expect(200);
    let found = found["students"].as_array().unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], ids[4].as_str());

    for bad in ["limit=0", "limit=201", "limit=ten", "colour=red"] {
        c.get(&format!("/students?{bad}"))
            .await
            .expect_error(400, "invalid_query");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn student_errors_name_the_problem() {
    let m = Monolith::start().await;
    let c = &m.client;
    let id = c.new_student("taken@example.org").await;
    let other = c.new_student("other@example.org").await;

    let msg = c
        .post_raw("/students", "{\"email\": \"x@example.org\", ")
        .await
        .expect_error(400, "malformed_json");
    assert!(msg.contains("JSON"), "{msg}");
    let msg = c
        .post("/students", json!({ "email": "x@example.org", "name": 7 }))
        .await
        .expect_error(400, "invalid_field");
    assert!(msg.starts_with("name"), "{msg}");
    let msg = c
        .post("/students", json!({ "email": "not-an-email", "name": "X" }))
        .await
        .expect_error(400, "invalid_field");
    assert!(msg.starts_with("email"), "{msg}");
    let msg = c
        .post("/students", json!({ "name": "X" }))
        .await
        .expect_error(400, "invalid_field");
    assert!(msg.contains("email"), "{msg}");
    let msg = c
        .post(
            "/students",
            json!({ "email": "y@example.org", "name": "Y", "age": 3 }),
        )
        .await
        .expect_error(400, "invalid_field");
    assert!(msg.contains("age"), "{msg}");
    let msg = c
        .post(
            "/students",
            json!({ "email": "y@example.org", "name": "   " }),
        )
        .await
        .expect_error(400, "invalid_field");
    assert!(msg.starts_with("name"), "{msg}");
    c.post_raw("/students", "")
        .await
        .expect_error(400, "malformed_json");

    c.post(
        "/students",
        json!({ "email": "TAKEN@example.org", "name": "Twin" }),
    )
    .await
    .expect_error(409, "email_taken");
    c.patch(
        &format!("/students/{other}"),
        json!({ "email": "taken@example.org" }),
    )
    .await
    .expect_error(409, "email_taken");

    let unknown = "01900000-0000-7000-8000-000000000000";
    c.get(&format!("/students/{unknown}"))
        .await
        .expect_error(404, "not_found");
    c.get("/students/not-a-uuid")
        .await
        .expect_error(404, "not_found");
    c.patch(&format!("/students/{unknown}"), json!({ "name": "N" }))
        .await
        .expect_error(404, "not_found");
    c.delete(&format!("/students/{unknown}"))
        .await
        .expect_error(404, "not_found");
    c.put(
        &format!("/students/{id}"),
        json!({ "id": other, "email": "a@example.org", "name": "A", "status": "active" }),
    )
    .await
    .expect_error(400, "invalid_field");
    c.patch(&format!("/students/{id}"), json!({ "status": "expelled" }))
        .await
        .expect_error(400, "invalid_field");

    let huge = format!(
        "{{\"email\":\"big@example.org\",\"name\":\"{}\"}}",
        "x".repeat(1024 * 1024 + 10)
    );
    c.post_raw("/students", huge)
        .await
        .expect_error(413, "body_too_large");

    c.delete("/students")
        .await
        .expect_error(405, "method_not_allowed");
    c.get("/no/such/route")
        .await
        .expect_error(404, "route_not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn odd_inputs_never_answer_500() {
    let m = Monolith::start().await;
    let c = &m.client;
    let id = c.new_student("odd@example.org").await;
    let bodies: Vec<(&str, reqwest::Body)> = vec![
        ("/students", vec![0xff, 0xfe, 0x00].into()),
        ("/students", "[]".into()),
        ("/students", "null".into()),
        ("/students", "{\"email\":{\"$gt\":\"\"},\"name\":\"x\"}".into()),
        ("/students", format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000)).into()),
        ("/finance/invoices", format!("{{\"student_id\":\"{id}\",\"amount_cents\":1e400,\"description\":\"d\"}}").into()),
        ("/finance/invoices", format!("{{\"student_id\":\"{id}\",\"amount_cents\":99999999999999999999,\"description\":\"d\"}}").into()),
        ("/enrollments", format!("{{\"student_id\":\"{id}\",\"course\":\"\\u0000\",\"term\":\"2026-fall\"}}").into()),
        ("/gamification/rewards", format!("{{\"student_id\":\"{id}\",\"points\":-5,\"reason\":\"r\"}}").into()),
        ("/_events", "{\"events\":[{}]}".into()),
    ];
    for (path, body) in bodies {
        let answer = c.post_raw(path, body).await;
        assert!(
            answer.status.is_client_error(),
            "POST {path}: {} {}",
            answer.status,
            answer.body
        );
        assert!(answer.body["error"]["code"].is_string(), "{}", answer.body);
    }
    for path in [
        "/students/%00",
        "/students/..%2F..%2Fetc",
        "/students/%F0%9F%92%A9/invoices",
        "/students?after=%FF",
        "/_events?after=-5&limit=999999999999",
        "/students/x/report?term=9999-fall",
    ] {
        let answer = c.get(path).await;
        assert!(
            answer.status.as_u16() < 500,
            "GET {path}: {} {}",
            answer.status,
            answer.body
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn invoices_are_paid_once_and_cancel_rules_hold() {
    let m = Monolith::start().await;
    let c = &m.client;
    let student = c.new_student("payer@example.org").await;

    let invoice = c
        .post(
            "/finance/invoices",
            json!({ "student_id": student, "amount_cents": 4500, "description": "Lab fee" }),
        )
        .await
        .expect(201);
    let id = invoice["id"].as_str().unwrap();
    assert_eq!(invoice["status"], "open");
    assert_eq!(invoice["currency"], "EUR");
    assert_eq!(
        c.get(&format!("/finance/invoices/{id}")).await.expect(200),
        invoice
    );

    let paid = c
        .post(&format!("/finance/invoices/{id}/pay"), json!({}))
        .await
        .expect(200);
    assert_eq!(paid["status"], "paid");
    let again = c
        .post(&format!("/finance/invoices/{id}/pay"), json!({}))
        .await
        .expect(200);
    assert_eq!(
        again["paid_at"], paid["paid_at"],
        "paying twice charges once"
    );
    let payments: i64 = m
        .sql()
        .query_row(
            "SELECT COUNT(*) FROM outbox WHERE type = 'invoice.paid' AND key = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(payments, 1);
    c.post(&format!("/finance/invoices/{id}/cancel"), json!({}))
        .await
        .expect_error(422, "invoice_paid");

    let second = c
        .post(
            "/finance/invoices",
            json!({ "student_id": student, "amount_cents": 100, "description": "Locker", "term": "2026-fall", "currency": "USD" }),
        )
        .await
        .expect(201);
    let second_id = second["id"].as_str().unwrap();
    let cancelled = c
        .post(&format!("/finance/invoices/{second_id}/cancel"), json!({}))
        .await
        .expect(200);
    assert_eq!(cancelled["status"], "cancelled");
    c.post(&format!("/finance/invoices/{second_id}/pay"), json!({}))
        .await
        .expect_error(422, "invoice_cancelled");

    let list = c
        .get(&format!("/students/{student}/invoices"))
        .await
        .expect(200);
    let statuses: Vec<_> = list["invoices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(statuses, ["paid", "cancelled"]);

    let unknown = "01900000-0000-7000-8000-000000000000";
    c.post(
        "/finance/invoices",
        json!({ "student_id": unknown, "amount_cents": 100, "description": "x" }),
    )
    .await
    .expect_error(422, "unknown_student");
    c.post(
        "/finance/invoices",
        json!({ "student_id": student, "amount_cents": 0, "description": "x" }),
    )
    .await
    .expect_error(400, "invalid_field");
    c.post(
        "/finance/invoices",
        json!({ "student_id": student, "amount_cents": 5, "description": "x", "currency": "euro" }),
    )
    .await
    .expect_error(400, "invalid_field");
    c.get(&format!("/finance/invoices/{unknown}"))
        .await
        .expect_error(404, "not_found");
    c.post(&format!("/finance/invoices/{unknown}/pay"), json!({}))
        .await
        .expect_error(404, "not_found");
    c.get(&format!("/students/{unknown}/invoices"))
        .await
        .expect_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn rewards_are_granted_once_per_idempotency_key() {
    let m = Monolith::start().await;
    let c = &m.client;
    let student = c.new_student("gamer@example.org").await;
    let grant = json!({ "student_id": student, "points": 120, "reason": "quiz streak", "idempotency_key": "quiz-1" });

    let first = c
        .post("/gamification/rewards", grant.clone())
        .await
        .expect(201);
    let second = c
        .post("/gamification/rewards", grant.clone())
        .await
        .expect(200);
    assert_eq!(first["id"], second["id"]);
    let points = c
        .get(&format!("/students/{student}/points"))
        .await
        .expect(200);
    assert_eq!(points["points"], 120, "no double grant");
    assert_eq!(points["level"], 2);
    assert_eq!(points["badges"], json!(["first-steps", "achiever"]));

    let mut reused = grant.clone();
    reused["points"] = json!(5);
    c.post("/gamification/rewards", reused)
        .await
        .expect_error(409, "idempotency_key_reused");

    c.post(
        "/gamification/rewards",
        json!({ "student_id": student, "points": 400, "reason": "peer review", "term": "2026-fall" }),
    )
    .await
    .expect(201);
    let points = c
        .get(&format!("/students/{student}/points"))
        .await
        .expect(200);
    assert_eq!(points["points"], 520);
    assert_eq!(points["level"], 6);
    assert_eq!(
        points["badges"],
        json!(["first-steps", "achiever", "scholar"])
    );
    let fall = c
        .get(&format!("/students/{student}/rewards?term=2026-fall"))
        .await
        .expect(200);
    assert_eq!(fall["rewards"].as_array().unwrap().len(), 1);

    // Revoking takes the points back, once.
    let fall_id = fall["rewards"][0]["id"].as_str().unwrap();
    let revoked = c
        .post(
            &format!("/gamification/rewards/{fall_id}/revoke"),
            json!({}),
        )
        .await
        .expect(200);
    assert!(revoked["revoked_at"].is_string());
    let again = c
        .post(
            &format!("/gamification/rewards/{fall_id}/revoke"),
            json!({}),
        )
        .await
        .expect(200);
    assert_eq!(again["revoked_at"], revoked["revoked_at"]);
    assert_eq!(
        c.get(&format!("/students/{student}/points"))
            .await
            .expect(200)["points"],
        120
    );
    c.post(
        "/gamification/rewards/01900000-0000-7000-8000-000000000000/revoke",
        json!({}),
    )
    .await
    .expect_error(404, "not_found");
    c.post(
        "/gamification/rewards",
        json!({ "student_id": student, "points": 400, "reason": "peer review", "term": "2026-fall" }),
    )
    .await
    .expect(201);

    c.post(
        "/gamification/rewards",
        json!({ "student_id": student, "points": 0, "reason": "nothing" }),
    )
    .await
    .expect_error(400, "invalid_field");
    let unknown = "01900000-0000-7000-8000-000000000000";
    c.post(
        "/gamification/rewards",
        json!({ "student_id": unknown, "points": 1, "reason": "ghost" }),
    )
    .await
    .expect_error(422, "unknown_student");
    c.get(&format!("/students/{unknown}/points"))
        .await
        .expect_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_ready_and_restart_keep_data() {
    let m = Monolith::start().await;
    m.client.get("/health").await.expect(200);
    assert_eq!(m.client.get("/ready").await.expect(200)["status"], "ready");
    let id = m.client.new_student("keep@example.org").await;
    let m = m.restart().await;
    m.client.get(&format!("/students/{id}")).await.expect(200);
    let migrations: i64 = m
        .sql()
        .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        migrations, 7,
        "two outbox and five domain migrations, each applied once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_writes_answer_and_leave_nothing_behind() {
    let m = Monolith::start().await;
    let c = &m.client;
    let student = c.new_student("real@example.org").await;
    let events_before = m.count("outbox");

    let dry = |path: &str| {
        c.request(reqwest::Method::POST, path)
            .header("x-strangler-dry-run", "1")
    };
    let ghost = c
        .send(dry("/students").json(&json!({ "email": "ghost@example.org", "name": "Ghost" })))
        .await
        .expect(201);
    c.get(&format!("/students/{}", ghost["id"].as_str().unwrap()))
        .await
        .expect_error(404, "not_found");
    let confirmation = c
        .send(
            dry("/enrollments")
                .json(&json!({ "student_id": student, "course": "CS101", "term": "2026-fall" })),
        )
        .await
        .expect(201);
    assert_eq!(confirmation["invoice"]["amount_cents"], 120_000);
    // A dry run answers as the real write would, errors included.
    c.send(dry("/students").json(&json!({ "email": "real@example.org", "name": "Twin" })))
        .await
        .expect_error(409, "email_taken");
    c.send(
        c.request(reqwest::Method::PATCH, &format!("/students/{student}"))
            .header("x-strangler-dry-run", "1")
            .json(&json!({ "name": "Renamed" })),
    )
    .await
    .expect(200);

    assert_eq!(m.count("students"), 1);
    assert_eq!(m.count("enrollments"), 0);
    assert_eq!(m.count("invoices"), 0);
    assert_eq!(m.count("rewards"), 0);
    assert_eq!(m.count("outbox"), events_before);
    assert_eq!(
        c.get(&format!("/students/{student}")).await.expect(200)["name"],
        "Test Student"
    );
    c.send(
        c.request(reqwest::Method::POST, "/students")
            .header("x-strangler-dry-run", "maybe")
            .json(&json!({ "email": "maybe@example.org", "name": "Maybe" })),
    )
    .await
    .expect_error(400, "invalid_header");
}
