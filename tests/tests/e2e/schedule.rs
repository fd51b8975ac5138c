//! Scheduled reconciliation with a real `strangler serve` process: a plan whose
//! `[[schedule]]` verifies a link every two seconds while a row sits on the target behind
//! the outbox's back. The difference shows in `/metrics`, the webhook hears of it once per
//! appearance (not on every run that still sees it), and `sync status` lists the schedule.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::{Monolith, Service, WebhookReceiver, eventually, free_port};
use serde_json::Value;

use crate::program::{Program, TOKEN};

/// A student row written straight into a service's file: no event, so no relay fixes it.
fn extra_student(students: &Service, id: &str) {
    students
        .sql()
        .execute(
            "INSERT INTO students (id, email, name, status, created_at, updated_at)
             VALUES (?1, ?1 || '@example.org', 'Extra', 'active',
                     '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')",
            [id],
        )
        .unwrap();
}

async fn metric(client: &reqwest::Client, admin: &str, sample: &str) -> Option<f64> {
    e2e::metric(client, admin, TOKEN, sample).await
}

fn differed(hook: &WebhookReceiver) -> Vec<Value> {
    hook.events()
        .into_iter()
        .map(|(_, body)| body)
        .filter(|b| b["event"] == "verify_differed")
        .collect()
}

fn sync_status(plan: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_e2e-strangler"))
        .arg("--plan")
        .arg(plan)
        .args(["sync", "status"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_verify_reports_a_difference_in_metrics_and_once_to_the_webhook() {
    let legacy = Monolith::start().await;
    let students = Service::data(&students_service::SERVICE).await;
    let hook = WebhookReceiver::start().await;
    extra_student(&students, "zz-extra-1");
    let dir = tempfile::tempdir().unwrap();
    let admin = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let plan = dir.path().join("plan.toml");
    std::fs::write(
        &plan,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:{}\"\nadmin_listen = \"{admin}\"\nstate = \"strangler.db\"\n\n\
             [services.legacy]\nurls = [\"{}\"]\nlegacy = true\n\
             [services.students]\nurls = [\"{}\"]\n\n\
             [[sync]]\nfrom = \"legacy\"\nto = \"students\"\ntypes = [\"student.*\"]\n\n\
             [[schedule]]\nverify = \"legacy->students\"\nevery = \"2s\"\n\n\
             [[notify]]\nurl = \"{}\"\nevents = [\"verify_differed\"]\n",
            free_port("127.0.0.1"),
            legacy.url,
            students.url,
            hook.url()
        ),
    )
    .unwrap();
    let proxy = Program::start(&plan, &["serve"], &dir.path().join("proxy.log"));
    let client = reqwest::Client::new();
    let differences = "strangler_verify_differences{link=\"legacy->students\",type=\"student\"}";
    let runs = "strangler_schedule_runs_total{schedule=\"legacy->students\"}";

    // The first run (due at once: the link was never verified) finds the extra row.
    eventually(
        Duration::from_secs(30),
        "the difference in /metrics",
        || async { (metric(&client, &admin, differences).await == Some(1.0)).then_some(()) },
    )
    .await;
    // Later runs still see it; the webhook was told once.
    eventually(Duration::from_secs(30), "three scheduled runs", || async {
        (metric(&client, &admin, runs).await >= Some(3.0)).then_some(())
    })
    .await;
    let told = differed(&hook);
    assert_eq!(told.len(), 1, "{told:?}\n{}", proxy.log());
    assert_eq!(told[0]["route"], "legacy->students");
    assert_eq!(told[0]["details"]["kinds"], serde_json::json!(["student"]));
    assert_eq!(told[0]["details"]["extra"], 1);
    assert!(
        told[0]["message"]
            .as_str()
            .unwrap()
            .contains("1 extra, 0 differing of 1 compared"),
        "{}",
        told[0]
    );
    let admin_status: Value = client
        .get(format!("http://{admin}/admin/status"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = &admin_status["schedules"][0];
    assert_eq!(listed["verify"], "legacy->students", "{admin_status}");
    assert_eq!(listed["when"], "every 2s");
    assert!(listed["runs"].as_u64() >= Some(3), "{listed}");
    assert_eq!(listed["failed"], 0, "{listed}");
    let status = sync_status(&plan);
    assert!(
        status.contains("legacy->students every 2s: last ") && status.contains("1 of 1 differ"),
        "{status}"
    );

    // Fixed, the next run is clean; a new difference is news again.
    students
        .sql()
        .execute("DELETE FROM students WHERE id = 'zz-extra-1'", [])
        .unwrap();
    eventually(Duration::from_secs(30), "a clean run", || async {
        (metric(&client, &admin, differences).await == Some(0.0)).then_some(())
    })
    .await;
    assert_eq!(differed(&hook).len(), 1);
    extra_student(&students, "zz-extra-2");
    eventually(
        Duration::from_secs(30),
        "the webhook told of the new difference",
        || async { (differed(&hook).len() == 2).then_some(()) },
    )
    .await;
    assert!(
        proxy.log().contains("scheduled verify started"),
        "{}",
        proxy.log()
    );
}
