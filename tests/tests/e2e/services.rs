//! The extracted services against the monolith: the same answers (contract parity), data
//! kept current both ways by the relay, lossless rollback after cutover, and the enrollment
//! service's compensation and idempotent retries.

use std::time::Duration;

use e2e::{Answer, Client, Stack, eventually};
use reqwest::Method;
use serde_json::{Value, json};

/// Replaces generated ids and timestamps, for comparing answers to writes made apart.
fn normalize(value: &Value) -> Value {
    match value {
        Value::String(s)
            if s.len() == 36 && s.as_bytes()[8] == b'-' && s.as_bytes()[14] == b'7' =>
        {
            json!("<id>")
        }
        Value::String(s) if s.len() >= 20 && s.as_bytes()[4] == b'-' && s.ends_with('Z') => {
            json!("<time>")
        }
        Value::String(s) if s.starts_with("enrollment:") => json!("enrollment:<id>:welcome"),
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), normalize(v))).collect())
        }
        other => other.clone(),
    }
}

async fn call(
    client: &Client,
    method: &Method,
    path: &str,
    body: Option<&Value>,
    dry_run: bool,
) -> Answer {
    let mut request = client.request(method.clone(), path);
    if dry_run {
        request = request.header("x-strangler-dry-run", "1");
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    client.send(request).await
}

/// Seeds the monolith with a student who has an enrollment, a paid invoice, a cancelled
/// one and a reward, plus an inactive student, and waits until every service has them.
pub(crate) async fn seeded() -> (Stack, Value) {
    let s = Stack::start().await;
    let c = &s.legacy.client;
    let student = c.new_student("parity@example.org").await;
    let inactive = c.new_student("gone@example.org").await;
    c.delete(&format!("/students/{inactive}")).await.expect(200);
    let confirmation = c
        .post(
            "/enrollments",
            json!({ "student_id": student, "course": "CS101", "term": "2026-fall" }),
        )
        .await
        .expect(201);
    let paid = confirmation["invoice"]["id"].as_str().unwrap().to_string();
    c.post(&format!("/finance/invoices/{paid}/pay"), json!({}))
        .await
        .expect(200);
    let cancelled = c
        .post("/finance/invoices", json!({ "student_id": student, "amount_cents": 900, "description": "Lab", "term": "2026-fall" }))
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    c.post(&format!("/finance/invoices/{cancelled}/cancel"), json!({}))
        .await
        .expect(200);
    c.post(
        "/gamification/rewards",
        json!({ "student_id": student, "points": 120, "reason": "quiz", "term": "2026-fall", "idempotency_key": "quiz-1" }),
    )
    .await
    .expect(201);
    s.synced().await;
    let ids = json!({
        "student": student,
        "inactive": inactive,
        "enrollment": confirmation["enrollment"]["id"],
        "paid": paid,
        "cancelled": cancelled,
    });
    (s, ids)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_service_answers_like_the_monolith() {
    let (s, ids) = seeded().await;
    let id = |k: &str| ids[k].as_str().unwrap().to_string();
    let (student, inactive, enrollment, paid, cancelled) = (
        id("student"),
        id("inactive"),
        id("enrollment"),
        id("paid"),
        id("cancelled"),
    );
    let unknown = "01900000-0000-7000-8000-000000000000";
    use Method as M;
    // (service, method, path, body, dry run): a dry-run write answers as the real one would.
    let table: Vec<(&Client, Method, String, Option<Value>, bool)> = vec![
        // students
        (
            &s.students.client,
            M::GET,
            format!("/students/{student}"),
            None,
            false,
        ),
        (
            &s.students.client,
            M::GET,
            "/students?limit=1".into(),
            None,
            false,
        ),
        (
            &s.students.client,
            M::GET,
            "/students?email=PARITY@example.org".into(),
            None,
            false,
        ),
        (
            &s.students.client,
            M::GET,
            "/students?limit=0".into(),
            None,
            false,
        ),
        (
            &s.students.client,
            M::GET,
            format!("/students/{unknown}"),
            None,
            false,
        ),
        (
            &s.students.client,
            M::POST,
            "/students".into(),
            Some(json!({ "email": "new@example.org", "name": "New" })),
            true,
        ),
        (
            &s.students.client,
            M::POST,
            "/students".into(),
            Some(json!({ "email": "parity@example.org", "name": "Twin" })),
            true,
        ),
        (
            &s.students.client,
            M::POST,
            "/students".into(),
            Some(json!({ "email": 3 })),
            true,
        ),
        (
            &s.students.client,
            M::PATCH,
            format!("/students/{student}"),
            Some(json!({ "name": "Renamed" })),
            true,
        ),
        (
            &s.students.client,
            M::PUT,
            format!("/students/{student}"),
            Some(json!({ "email": "x" })),
            true,
        ),
        (
            &s.students.client,
            M::DELETE,
            format!("/students/{student}"),
            None,
            true,
        ),
        (
            &s.students.client,
            M::DELETE,
            "/students".into(),
            None,
            false,
        ),
        // finance
        (
            &s.finance.client,
            M::GET,
            format!("/finance/invoices/{paid}"),
            None,
            false,
        ),
        (
            &s.finance.client,
            M::GET,
            format!("/students/{student}/invoices"),
            None,
            false,
        ),
        (
            &s.finance.client,
            M::GET,
            format!("/finance/invoices/{unknown}"),
            None,
            false,
        ),
        (
            &s.finance.client,
            M::POST,
            "/finance/invoices".into(),
            Some(json!({ "student_id": student, "amount_cents": 500, "description": "Books" })),
            true,
        ),
        (
            &s.finance.client,
            M::POST,
            "/finance/invoices".into(),
            Some(json!({ "student_id": unknown, "amount_cents": 500, "description": "Books" })),
            true,
        ),
        (
            &s.finance.client,
            M::POST,
            format!("/finance/invoices/{paid}/pay"),
            None,
            true,
        ),
        (
            &s.finance.client,
            M::POST,
            format!("/finance/invoices/{cancelled}/pay"),
            None,
            true,
        ),
        (
            &s.finance.client,
            M::POST,
            format!("/finance/invoices/{paid}/cancel"),
            None,
            true,
        ),
        // gamification
        (
            &s.gamification.client,
            M::GET,
            format!("/students/{student}/points"),
            None,
            false,
        ),
        (
            &s.gamification.client,
            M::GET,
            format!("/students/{student}/rewards?term=2026-fall"),
            None,
            false,
        ),
        (
            &s.gamification.client,
            M::GET,
            format!("/students/{unknown}/points"),
            None,
            false,
        ),
        (
            &s.gamification.client,
            M::POST,
            "/gamification/rewards".into(),
            Some(json!({ "student_id": student, "points": 10, "reason": "forum" })),
            true,
        ),
        (
            &s.gamification.client,
            M::POST,
            "/gamification/rewards".into(),
            Some(
                json!({ "student_id": student, "points": 120, "reason": "quiz", "term": "2026-fall", "idempotency_key": "quiz-1" }),
            ),
            true,
        ),
        (
            &s.gamification.client,
            M::POST,
            "/gamification/rewards".into(),
            Some(json!({ "student_id": student, "points": 0, "reason": "none" })),
            true,
        ),
        // enrollment
        (
            &s.enrollment.client,
            M::GET,
            format!("/enrollments/{enrollment}"),
            None,
            false,
        ),
        (
            &s.enrollment.client,
            M::GET,
            format!("/students/{student}/enrollments"),
            None,
            false,
        ),
        (
            &s.enrollment.client,
            M::GET,
            format!("/students/{student}/report?term=2026-fall"),
            None,
            false,
        ),
        (
            &s.enrollment.client,
            M::GET,
            format!("/students/{student}/report"),
            None,
            false,
        ),
        (
            &s.enrollment.client,
            M::GET,
            format!("/students/{unknown}/report?term=2026-fall"),
            None,
            false,
        ),
        (
            &s.enrollment.client,
            M::GET,
            format!("/enrollments/{unknown}"),
            None,
            false,
        ),
        (
            &s.enrollment.client,
            M::POST,
            "/enrollments".into(),
            Some(json!({ "student_id": student, "course": "MATH110", "term": "2026-fall" })),
            true,
        ),
        (
            &s.enrollment.client,
            M::POST,
            "/enrollments".into(),
            Some(json!({ "student_id": student, "course": "CS101", "term": "2026-fall" })),
            true,
        ),
        (
            &s.enrollment.client,
            M::POST,
            "/enrollments".into(),
            Some(json!({ "student_id": inactive, "course": "CS101", "term": "2026-fall" })),
            true,
        ),
        (
            &s.enrollment.client,
            M::POST,
            "/enrollments".into(),
            Some(json!({ "student_id": unknown, "course": "CS101", "term": "2026-fall" })),
            true,
        ),
        (
            &s.enrollment.client,
            M::POST,
            "/enrollments".into(),
            Some(json!({ "student_id": student, "course": "CS101", "term": "autumn" })),
            true,
        ),
        (
            &s.enrollment.client,
            M::POST,
            format!("/enrollments/{enrollment}/renew"),
            None,
            true,
        ),
    ];
    for (service, method, path, body, dry_run) in table {
        let legacy = call(&s.legacy.client, &method, &path, body.as_ref(), dry_run).await;
        let new = call(service, &method, &path, body.as_ref(), dry_run).await;
        assert_eq!(
            new.status, legacy.status,
            "{method} {path}: {} vs {}",
            new.body, legacy.body
        );
        let (a, b) = if dry_run {
            (normalize(&new.body), normalize(&legacy.body))
        } else {
            (new.body.clone(), legacy.body.clone())
        };
        assert_eq!(a, b, "{method} {path}");
        assert_eq!(
            new.headers.get("content-type"),
            legacy.headers.get("content-type"),
            "{method} {path}"
        );
    }
    // Dry runs left nothing behind on either side.
    s.synced().await;
    assert_eq!(s.legacy.count("students"), 2);
    assert_eq!(s.students.count("students"), 2);
    assert_eq!(s.enrollment.count("enrollments"), 1);
    assert_eq!(s.finance.count("invoices"), 2);
    assert_eq!(s.gamification.count("rewards"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_flow_both_ways_without_echo() {
    let s = Stack::start().await;
    // Forward: a write on the monolith reaches the service.
    let student = s.legacy.client.new_student("forward@example.org").await;
    eventually(
        Duration::from_secs(20),
        "the student on the students service",
        || async {
            (s.students
                .client
                .get(&format!("/students/{student}"))
                .await
                .status
                == 200)
                .then_some(())
        },
    )
    .await;

    // Reverse: after cutover, writes through the proxy land on the service, then the monolith.
    s.proxy.strangler(&["cutover", "students"]).await.unwrap();
    let created = s.proxy.client.post(
        "/students",
        json!({ "email": "reverse@example.org", "name": "Made On The Service" }),
    );
    let created = created.await;
    assert_eq!(created.headers["x-strangler-served-by"], "students");
    let id = created.expect(201)["id"].as_str().unwrap().to_string();
    eventually(
        Duration::from_secs(20),
        "the new student in the monolith",
        || async {
            let a = s.legacy.client.get(&format!("/students/{id}")).await;
            (a.status == 200 && a.body["name"] == "Made On The Service").then_some(())
        },
    )
    .await;
    // …and on to the services that keep a read model of students.
    eventually(
        Duration::from_secs(20),
        "the new student in finance's read model",
        || async {
            (s.finance
                .client
                .get(&format!("/students/{id}/invoices"))
                .await
                .status
                == 200)
                .then_some(())
        },
    )
    .await;

    // No echo: once everything is delivered, nothing keeps moving.
    s.synced().await;
    let counts = || {
        (
            s.legacy.count("outbox"),
            s.students.count("outbox"),
            s.finance.count("outbox"),
            s.gamification.count("outbox"),
        )
    };
    let settled = counts();
    assert_eq!(
        settled.0, 2,
        "the monolith holds each student's event once: {settled:?}"
    );
    assert_eq!(settled.1, 2, "so does the students service: {settled:?}");
    // Let every relay complete more rounds: the counts stay where they are.
    let rounds = s.links().iter().map(|l| l.updated_ms).max().unwrap_or(0);
    eventually(Duration::from_secs(20), "more relay rounds", || async {
        let now = s.links().iter().map(|l| l.updated_ms).min().unwrap_or(0);
        (now > rounds).then_some(())
    })
    .await;
    assert_eq!(counts(), settled);
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_after_cutover_loses_no_write() {
    let s = Stack::start().await;
    s.proxy.strangler(&["cutover", "students"]).await.unwrap();
    let c = &s.proxy.client;
    let mut ids = Vec::new();
    for i in 0..200 {
        let answer = c
            .post(
                "/students",
                json!({ "email": format!("cut{i}@example.org"), "name": format!("Student {i}") }),
            )
            .await;
        assert_eq!(answer.headers["x-strangler-served-by"], "students");
        ids.push(answer.expect(201)["id"].as_str().unwrap().to_string());
    }
    for (i, id) in ids.iter().enumerate().take(100) {
        c.patch(
            &format!("/students/{id}"),
            json!({ "name": format!("Updated {i}") }),
        )
        .await
        .expect(200);
    }
    s.proxy.strangler(&["rollback", "students"]).await.unwrap();
    s.synced().await;
    for (i, id) in ids.iter().enumerate() {
        let answer = c.get(&format!("/students/{id}")).await;
        assert_eq!(answer.headers["x-strangler-served-by"], "legacy");
        let body = answer.expect(200);
        let expected = if i < 100 {
            format!("Updated {i}")
        } else {
            format!("Student {i}")
        };
        assert_eq!(
            body["name"],
            expected.as_str(),
            "student {i} after rollback"
        );
    }
    assert_eq!(s.legacy.count("students"), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_enrollment_that_cannot_finish_leaves_nothing_half_done() {
    let mut s = Stack::start().await;
    let student = s
        .legacy
        .client
        .new_student("orchestrated@example.org")
        .await;
    s.synced().await;
    let e = &s.enrollment.client;
    let enroll = |key: &'static str| {
        e.request(Method::POST, "/enrollments")
            .header("idempotency-key", key)
            .json(&json!({ "student_id": student, "course": "CS201", "term": "2026-fall" }))
    };

    // Finance is down: nothing is created anywhere, and the answer says why.
    s.finance.halt().await;
    let down = e.send(enroll("try-1")).await;
    assert_eq!(down.status, 503, "{}", down.body);
    assert_eq!(down.body["error"]["code"], "dependency_unavailable");
    let message = down.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("finance"), "{message}");
    assert!(
        !message.contains("127.0.0.1") && !message.contains("http://"),
        "no internal address reaches the client: {message}"
    );
    assert_eq!(s.enrollment.count("enrollments"), 0);
    assert_eq!(s.gamification.count("rewards"), 0, "no orphan reward");

    // The key stays claimed (its outcome elsewhere could have been unknown), lease released.
    let (state, claimed): (String, i64) = s
        .enrollment
        .sql()
        .query_row(
            "SELECT state, claimed_ms FROM enrollment_requests WHERE idempotency_key = 'try-1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((state.as_str(), claimed), ("pending", 0));

    // Back up: the same key now enrolls, once.
    s.finance.resume().await;
    let first = e.send(enroll("try-1")).await;
    let confirmation = first.expect(201);
    let again = e.send(enroll("try-1")).await.expect(201);
    assert_eq!(again, confirmation, "a retry replays the answer");
    assert_eq!(s.enrollment.count("enrollments"), 1);
    assert_eq!(s.finance.count("invoices"), 1);
    assert_eq!(s.gamification.count("rewards"), 1);
    let reused = e
        .send(
            e.request(Method::POST, "/enrollments")
                .header("idempotency-key", "try-1")
                .json(&json!({ "student_id": student, "course": "OTHER", "term": "2026-fall" })),
        )
        .await;
    assert_eq!(reused.status, 409);

    // A retry while the first attempt still holds the key is told to wait, not run twice.
    s.enrollment
        .sql()
        .execute(
            "INSERT INTO enrollment_requests (idempotency_key, fingerprint, enrollment_id, state, created_at, claimed_ms)
             VALUES ('busy', ?1, '01900000-0000-7000-8000-0000000000ab', 'pending', 'now', ?2)",
            (
                format!("{student}\nCS202\n2026-fall"),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as i64,
            ),
        )
        .unwrap();
    let busy = e
        .send(
            e.request(Method::POST, "/enrollments")
                .header("idempotency-key", "busy")
                .json(&json!({ "student_id": student, "course": "CS202", "term": "2026-fall" })),
        )
        .await;
    assert_eq!(busy.status, 409, "{}", busy.body);
    assert_eq!(busy.body["error"]["code"], "request_in_progress");
    // Once its lease is over, a retry takes the request over under the same enrollment id.
    s.enrollment
        .sql()
        .execute(
            "UPDATE enrollment_requests SET claimed_ms = 0 WHERE idempotency_key = 'busy'",
            [],
        )
        .unwrap();
    let taken_over = e
        .send(
            e.request(Method::POST, "/enrollments")
                .header("idempotency-key", "busy")
                .json(&json!({ "student_id": student, "course": "CS202", "term": "2026-fall" })),
        )
        .await
        .expect(201);
    assert_eq!(
        taken_over["enrollment"]["id"],
        "01900000-0000-7000-8000-0000000000ab"
    );

    // Gamification is down after the invoice is issued: the invoice is cancelled.
    s.gamification.halt().await;
    let failed = e
        .post(
            "/enrollments",
            json!({ "student_id": student, "course": "HIST150", "term": "2026-fall" }),
        )
        .await;
    assert_eq!(failed.status, 503, "{}", failed.body);
    s.gamification.resume().await;
    let statuses: Vec<String> = s
        .finance
        .sql()
        .prepare("SELECT status FROM invoices ORDER BY created_at")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        statuses,
        ["open", "open", "cancelled"],
        "the compensated invoice is cancelled"
    );
    assert_eq!(
        s.enrollment.count("enrollments"),
        2,
        "no half-done enrollment"
    );

    // A dry run touches no service.
    let dry = e
        .send(
            e.request(Method::POST, "/enrollments")
                .header("x-strangler-dry-run", "1")
                .json(&json!({ "student_id": student, "course": "BIO130", "term": "2026-fall" })),
        )
        .await;
    assert_eq!(dry.status, 201, "{}", dry.body);
    assert_eq!(s.enrollment.count("enrollments"), 2);
    assert_eq!(s.finance.count("invoices"), 3);
    assert_eq!(s.gamification.count("rewards"), 2);
}
