//! Enrollment across domains: one transaction, business rules, renewal and the term report,
//! and many enrollments at once.

use e2e::Monolith;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn enrolling_creates_enrollment_invoice_and_reward_together() {
    let m = Monolith::start().await;
    let c = &m.client;
    let student = c.new_student("enrollee@example.org").await;

    let confirmation = c
        .post(
            "/enrollments",
            json!({ "student_id": student, "course": "CS101", "term": "2026-spring" }),
        )
        .await
        .expect(201);
    let enrollment = &confirmation["enrollment"];
    let invoice = &confirmation["invoice"];
    assert_eq!(enrollment["course"], "CS101");
    assert_eq!(enrollment["invoice_id"], invoice["id"]);
    assert_eq!(invoice["enrollment_id"], enrollment["id"]);
    assert_eq!(invoice["status"], "open");
    assert_eq!(invoice["amount_cents"], 120_000);
    assert_eq!(confirmation["reward"]["points"], 50);

    let id = enrollment["id"].as_str().unwrap();
    assert_eq!(
        &c.get(&format!("/enrollments/{id}")).await.expect(200),
        enrollment
    );
    let list = c
        .get(&format!("/students/{student}/enrollments"))
        .await
        .expect(200);
    assert_eq!(list["enrollments"].as_array().unwrap().len(), 1);
    assert_eq!(
        c.get(&format!("/students/{student}/points"))
            .await
            .expect(200)["points"],
        50
    );

    c.post(
        "/enrollments",
        json!({ "student_id": student, "course": "CS101", "term": "2026-spring" }),
    )
    .await
    .expect_error(409, "already_enrolled");
}

#[tokio::test(flavor = "multi_thread")]
async fn enrollment_rules_are_enforced() {
    let m = Monolith::start().await;
    let c = &m.client;
    let student = c.new_student("leaver@example.org").await;
    c.delete(&format!("/students/{student}")).await.expect(200);

    c.post(
        "/enrollments",
        json!({ "student_id": student, "course": "CS101", "term": "2026-fall" }),
    )
    .await
    .expect_error(422, "student_inactive");
    c.post(
        "/enrollments",
        json!({ "student_id": "01900000-0000-7000-8000-000000000000", "course": "CS101", "term": "2026-fall" }),
    )
    .await
    .expect_error(422, "unknown_student");
    let msg = c
        .post(
            "/enrollments",
            json!({ "student_id": student, "course": "CS101", "term": "autumn" }),
        )
        .await
        .expect_error(400, "invalid_field");
    assert!(msg.starts_with("term"), "{msg}");
    let msg = c
        .post(
            "/enrollments",
            json!({ "student_id": student, "course": "", "term": "2026-fall" }),
        )
        .await
        .expect_error(400, "invalid_field");
    assert!(msg.starts_with("course"), "{msg}");
    assert_eq!(m.count("enrollments"), 0);
    assert_eq!(m.count("invoices"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_step_rolls_the_whole_enrollment_back() {
    let m = Monolith::start().await;
    let c = &m.client;
    let student = c.new_student("unlucky@example.org").await;
    let events_before = m.count("outbox");
    // The reward, the last step, fails inside the database.
    m.sql()
        .execute_batch(
            "CREATE TRIGGER fail_rewards BEFORE INSERT ON rewards
             BEGIN SELECT RAISE(ABORT, 'rewards are down'); END;",
        )
        .unwrap();

    let answer = c
        .post(
            "/enrollments",
            json!({ "student_id": student, "course": "CS101", "term": "2026-fall" }),
        )
        .await;
    assert_eq!(answer.status.as_u16(), 500, "{}", answer.body);
    assert_eq!(answer.body["error"]["code"], "internal");

    assert_eq!(m.count("enrollments"), 0, "no enrollment left behind");
    assert_eq!(m.count("invoices"), 0, "no invoice left behind");
    assert_eq!(m.count("rewards"), 0, "no reward left behind");
    assert_eq!(
        m.count("outbox"),
        events_before,
        "no event for the failed enrollment"
    );

    m.sql().execute_batch("DROP TRIGGER fail_rewards").unwrap();
    c.post(
        "/enrollments",
        json!({ "student_id": student, "course": "CS101", "term": "2026-fall" }),
    )
    .await
    .expect(201);
}

#[tokio::test(flavor = "multi_thread")]
async fn renewal_opens_next_term_and_reports_the_previous_one() {
    let m = Monolith::start().await;
    let c = &m.client;
    let student = c.new_student("renewer@example.org").await;
    let first = c
        .post(
            "/enrollments",
            json!({ "student_id": student, "course": "MATH110", "term": "2026-fall" }),
        )
        .await
        .expect(201);
    let second = c
        .post(
            "/enrollments",
            json!({ "student_id": student, "course": "CS101", "term": "2026-fall" }),
        )
        .await
        .expect(201);
    let paid = first["invoice"]["id"].as_str().unwrap();
    c.post(&format!("/finance/invoices/{paid}/pay"), json!({}))
        .await
        .expect(200);
    c.post(
        "/gamification/rewards",
        json!({ "student_id": student, "points": 30, "reason": "forum", "term": "2026-fall" }),
    )
    .await
    .expect(201);

    let expected_report = json!({
        "student_id": student,
        "term": "2026-fall",
        "courses": ["CS101", "MATH110"],
        "invoices": { "paid": 1, "open": 1, "cancelled": 0, "amount_paid_cents": 120000, "amount_open_cents": 120000 },
        "points_earned": 130,
    });
    assert_eq!(
        c.get(&format!("/students/{student}/report?term=2026-fall"))
            .await
            .expect(200),
        expected_report
    );

    let id = second["enrollment"]["id"].as_str().unwrap();
    let renewal = c
        .post(&format!("/enrollments/{id}/renew"), json!({}))
        .await
        .expect(201);
    assert_eq!(renewal["enrollment"]["term"], "2027-spring");
    assert_eq!(renewal["enrollment"]["course"], "CS101");
    assert_eq!(renewal["enrollment"]["renewed_from"], id);
    assert_eq!(renewal["invoice"]["term"], "2027-spring");
    assert_eq!(renewal["invoice"]["status"], "open");
    assert_eq!(renewal["previous_term"], expected_report);

    c.post(&format!("/enrollments/{id}/renew"), json!({}))
        .await
        .expect_error(409, "already_enrolled");
    let spring = c
        .get(&format!("/students/{student}/report?term=2027-spring"))
        .await
        .expect(200);
    assert_eq!(spring["courses"], json!(["CS101"]));
    assert_eq!(spring["points_earned"], 0);

    c.get(&format!("/students/{student}/report"))
        .await
        .expect_error(400, "invalid_field");
    c.get(&format!("/students/{student}/report?term=2026"))
        .await
        .expect_error(400, "invalid_field");
    let unknown = "01900000-0000-7000-8000-000000000000";
    c.get(&format!("/students/{unknown}/report?term=2026-fall"))
        .await
        .expect_error(404, "not_found");
    c.post(&format!("/enrollments/{unknown}/renew"), json!({}))
        .await
        .expect_error(404, "not_found");
    c.get(&format!("/enrollments/{unknown}"))
        .await
        .expect_error(404, "not_found");

    c.delete(&format!("/students/{student}")).await.expect(200);
    let first_id = first["enrollment"]["id"].as_str().unwrap();
    c.post(&format!("/enrollments/{first_id}/renew"), json!({}))
        .await
        .expect_error(422, "student_inactive");
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_parallel_enrollments_all_succeed() {
    let m = Monolith::start().await;
    let mut students = Vec::new();
    for i in 0..50 {
        students.push(m.client.new_student(&format!("p{i}@example.org")).await);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for student in students.clone() {
        let c = m.client.clone();
        tasks.spawn(async move {
            c.post(
                "/enrollments",
                json!({ "student_id": student, "course": "CS201", "term": "2026-fall" }),
            )
            .await
        });
    }
    while let Some(answer) = tasks.join_next().await {
        answer.unwrap().expect(201);
    }
    assert_eq!(m.count("enrollments"), 50);
    assert_eq!(m.count("invoices"), 50);
    assert_eq!(m.count("rewards"), 50);
    let total: i64 = m
        .sql()
        .query_row("SELECT SUM(amount_cents) FROM invoices", [], |r| r.get(0))
        .unwrap();
    assert_eq!(total, 50 * 120_000);
    for student in &students {
        let points = m
            .client
            .get(&format!("/students/{student}/points"))
            .await
            .expect(200);
        assert_eq!(points["points"], 50);
    }
}
