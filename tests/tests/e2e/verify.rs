//! `strangler verify` as a process against the monolith and the students service, synced
//! both ways by a running proxy's relays: what it finds when rows are changed behind the
//! outbox's back, what `--repair` fixes, resuming after a kill, the cutover gate's
//! `verify_within`, and bad input.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use e2e::{Monolith, Service, TestProxy, eventually, plan_toml};
use reqwest::Method;
use serde_json::{Value, json};

/// The monolith and the students service, linked both ways, behind a proxy whose plan has
/// the `students` route; `gate` goes into the plan's `[gate]`.
struct Pair {
    legacy: Monolith,
    students: Service,
    proxy: TestProxy,
}

async fn pair(gate: &str) -> Pair {
    let legacy = Monolith::start().await;
    let students = Service::data(&students_service::SERVICE).await;
    let dir = tempfile::tempdir().unwrap();
    let mut plan = plan_toml(
        dir.path(),
        &[
            ("legacy", format!("\"{}\"", legacy.url)),
            ("students", format!("\"{}\"", students.url)),
        ],
        "",
    )
    .replacen("[gate]\n", &format!("[gate]\n{gate}\n"), 1);
    plan.push_str(
        "\n[[routes]]\nname = \"students\"\npaths = [\"/students\", \"/students/{id}\"]\nservice = \"students\"\n\
         \n[[sync]]\nfrom = \"legacy\"\nto = \"students\"\ntypes = [\"student.*\"]\n\
         \n[[sync]]\nfrom = \"students\"\nto = \"legacy\"\ntypes = [\"student.*\"]\n",
    );
    let proxy = TestProxy::start(dir, &plan).await;
    Pair {
        legacy,
        students,
        proxy,
    }
}

impl Pair {
    /// Registers `n` students on the monolith and waits until the service has them all.
    async fn seed(&self, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for i in 0..n {
            ids.push(
                self.legacy
                    .client
                    .new_student(&format!("verify{i}@example.org"))
                    .await,
            );
        }
        self.synced(n as i64).await;
        ids
    }

    async fn synced(&self, n: i64) {
        eventually(
            Duration::from_secs(30),
            "the service to hold every student",
            || async { (self.students.count("students") == n).then_some(()) },
        )
        .await;
    }

    /// Runs the `strangler` program on this pair's plan.
    async fn strangler(&self, args: &[&str]) -> Output {
        strangler(&self.proxy.plan_path, args).await
    }

    fn store(&self) -> Box<dyn strangler_store::Store> {
        strangler_store::open(&strangler_plan::StoreLocation::File(
            self.proxy.dir.path().join("strangler.db"),
        ))
        .unwrap()
    }
}

async fn strangler(plan: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_e2e-strangler"));
    command.arg("--plan").arg(plan).args(args);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The `--json` report of a run, with its exit code.
fn report(out: &Output) -> (i32, Value) {
    let body = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|err| panic!("{err}: {}\n{}", text(&out.stdout), text(&out.stderr)));
    (out.status.code().unwrap(), body)
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_finds_changes_behind_the_outbox_and_repair_fixes_them() {
    let p = pair("").await;
    let ids = p.seed(12).await;
    let out = p.strangler(&["verify", "legacy->students"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("the sides match: 12 entities compared"),
        "{}",
        text(&out.stdout)
    );

    // Behind the outbox's back: a row deleted from the service, one inserted there, and a
    // name changed in the monolith's file.
    p.students
        .sql()
        .execute("DELETE FROM students WHERE id = ?1", [&ids[3]])
        .unwrap();
    p.students
        .sql()
        .execute(
            "INSERT INTO students (id, email, name, status, created_at, updated_at)
             VALUES ('zz-extra', 'extra@example.org', 'Extra', 'active',
                     '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')",
            [],
        )
        .unwrap();
    p.legacy
        .sql()
        .execute(
            "UPDATE students SET name = 'Changed Behind' WHERE id = ?1",
            [&ids[5]],
        )
        .unwrap();

    let (code, found) = report(&p.strangler(&["verify", "legacy->students", "--json"]).await);
    assert_eq!(code, 1, "{found}");
    assert_eq!(found["passed"], false);
    let walk = &found["walks"][0];
    assert_eq!(walk["links"], json!(["legacy->students"]));
    assert_eq!(
        (&walk["source"], &walk["target"]),
        (&json!("legacy"), &json!("students"))
    );
    assert_eq!(walk["resumed"], false);
    assert!(walk["finished_ms"].as_i64() >= walk["started_ms"].as_i64());
    let kind = &walk["kinds"][0];
    assert_eq!(kind["kind"], "student");
    assert_eq!(
        [
            &kind["compared"],
            &kind["missing"],
            &kind["extra"],
            &kind["differing"]
        ],
        [&json!(13), &json!(1), &json!(1), &json!(1)],
        "{kind}"
    );
    assert_eq!(kind["paths"], json!({ "/name": 1 }));
    let sample = |key: &str| {
        kind["samples"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"] == key)
            .unwrap_or_else(|| panic!("no sample for {key}: {kind}"))
            .clone()
    };
    assert_eq!(sample(&ids[3])["finding"], "missing");
    assert_eq!(sample("zz-extra")["finding"], "extra");
    assert_eq!(sample("zz-extra")["target"]["version"], 0);
    let differing = sample(&ids[5]);
    assert_eq!(differing["finding"], "differing");
    assert_eq!(differing["differences"][0]["path"], "/name");
    assert_eq!(differing["differences"][0]["left"], "Changed Behind");
    assert_eq!(
        differing["source"]["version"],
        differing["target"]["version"]
    );

    // Repair: the monolith's version wins the tie and is copied where it is missing; the
    // extra row cannot be deleted.
    let out = p
        .strangler(&["verify", "legacy->students", "--repair"])
        .await;
    let printed = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    assert!(printed.contains("repaired 2, not repaired 1"), "{printed}");
    assert!(
        printed.contains(&format!("repaired student {}: legacy's state (version 1) re-emitted as version 2 to legacy and students", ids[5])),
        "{printed}"
    );
    assert!(
        printed.contains("not repaired student zz-extra: not repairable"),
        "{printed}"
    );
    let service_copy = p
        .students
        .client
        .get(&format!("/students/{}", ids[5]))
        .await
        .expect(200);
    assert_eq!(service_copy["name"], "Changed Behind");
    p.students
        .client
        .get(&format!("/students/{}", ids[3]))
        .await
        .expect(200);

    // The extra row goes to the monolith when the target is preferred.
    let out = p
        .strangler(&[
            "verify",
            "legacy->students",
            "--repair",
            "--prefer",
            "target",
        ])
        .await;
    assert!(
        text(&out.stdout).contains("repaired 1, not repaired 0"),
        "{}",
        text(&out.stdout)
    );
    p.legacy.client.get("/students/zz-extra").await.expect(200);

    // Ordinary writes after the repair still flow both ways: neither side ignores them as
    // stale.
    for (id, on) in [
        (&ids[5], &p.legacy.client),
        (&ids[3], &p.legacy.client),
        (&"zz-extra".to_string(), &p.students.client),
    ] {
        on.patch(
            &format!("/students/{id}"),
            json!({ "name": "Written Later" }),
        )
        .await
        .expect(200);
    }
    for (id, other) in [
        (&ids[5], &p.students.client),
        (&ids[3], &p.students.client),
        (&"zz-extra".to_string(), &p.legacy.client),
    ] {
        eventually(
            Duration::from_secs(30),
            "the later write on the other side",
            || async {
                let s = other.get(&format!("/students/{id}")).await;
                (s.body["name"] == "Written Later").then_some(())
            },
        )
        .await;
    }

    let out = p.strangler(&["verify", "students"]).await;
    let printed = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{printed}{}", text(&out.stderr));
    assert!(
        printed.contains("legacy->students, students->legacy: legacy → students"),
        "{printed}"
    );
    assert!(
        printed.contains("the sides match: 13 entities compared"),
        "{printed}"
    );

    // The result is in the store, sync status and the admin API.
    let last = p.store().last_verifies().unwrap();
    assert_eq!(last.len(), 2);
    assert!(
        last.iter()
            .all(|v| v.passed && v.complete && v.compared == 13)
    );
    let status = text(&p.strangler(&["sync", "status"]).await.stdout);
    assert!(
        status.contains("legacy->students: verified") && status.contains("13 equal"),
        "{status}"
    );
    let admin = p
        .proxy
        .admin(Method::GET, "/admin/status", true)
        .await
        .expect(200);
    assert_eq!(admin["verifies"][0]["link"], "legacy->students");
    assert_eq!(admin["verifies"][0]["passed"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_verify_resumes_where_it_stopped() {
    let p = pair("").await;
    p.seed(60).await;
    // Slowly (10 entities a second, 5 per read), so it is killed part way.
    let mut child = Command::new(env!("CARGO_BIN_EXE_e2e-strangler"))
        .arg("--plan")
        .arg(&p.proxy.plan_path)
        .args([
            "verify",
            "legacy->students",
            "--rate",
            "10/s",
            "--batch",
            "5",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let store = p.store();
    let cursor = eventually(Duration::from_secs(30), "a stored cursor", || async {
        store
            .verify_cursor("legacy->students", "student")
            .unwrap()
            .filter(|c| !c.after.is_empty())
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!cursor.done);

    let out = p.strangler(&["verify", "legacy->students"]).await;
    let (printed, progress) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{printed}{progress}");
    assert!(
        progress.contains("resumed legacy->students student after key"),
        "{progress}"
    );
    assert!(printed.contains("(resumed)"), "{printed}");
    assert!(
        printed.contains("the sides match: 60 entities compared"),
        "each entity counted once: {printed}"
    );
    assert_eq!(
        store.verify_cursor("legacy->students", "student").unwrap(),
        None,
        "a finished verify forgets its cursor"
    );
    // The next run starts from the first key.
    let (code, again) = report(&p.strangler(&["verify", "legacy->students", "--json"]).await);
    assert_eq!((code, &again["walks"][0]["resumed"]), (0, &json!(false)));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gate_refuses_a_cutover_until_a_recent_verify_passed() {
    let p = pair("verify_within = \"1h\"").await;
    let ids = p.seed(5).await;
    let refused = p
        .proxy
        .strangler(&["cutover", "students"])
        .await
        .unwrap_err();
    assert_eq!(refused.code, 1);
    assert!(
        refused
            .message
            .contains("needs a passing verify of every sync link of `students` within 1h")
            && refused.message.contains("legacy->students never verified"),
        "{}",
        refused.message
    );

    // A verify that finds a difference does not open it.
    p.students
        .sql()
        .execute(
            "UPDATE students SET name = 'Drifted' WHERE id = ?1",
            [&ids[0]],
        )
        .unwrap();
    let out = p.strangler(&["verify", "students"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let refused = p
        .proxy
        .strangler(&["cutover", "students"])
        .await
        .unwrap_err();
    assert!(
        refused.message.contains("legacy->students differed"),
        "{}",
        refused.message
    );

    let out = p.strangler(&["verify", "students", "--repair"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let out = p.strangler(&["verify", "students"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    p.proxy.strangler(&["cutover", "students"]).await.unwrap();
    let status = p
        .proxy
        .admin(Method::GET, "/admin/status", true)
        .await
        .expect(200);
    let route = status["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "students")
        .unwrap()
        .clone();
    assert_eq!(route["stage"], "cutover", "{route}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_one_line_and_exit_2() {
    let p = pair("").await;
    let one_line = |out: &Output| {
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}{}", text(&out.stdout));
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.starts_with("strangler: "), "{err}");
        err
    };
    let err = one_line(&p.strangler(&["verify", "legacy->nowhere"]).await);
    assert!(
        err.contains("unknown link or route `legacy->nowhere` (links: legacy->students, students->legacy; routes: students)"),
        "{err}"
    );
    let err = one_line(&p.strangler(&["verify", "students", "--rate", "fast"]).await);
    assert!(err.contains("--rate fast"), "{err}");
    let err = one_line(&p.strangler(&["verify", "students", "--rate", "0/s"]).await);
    assert!(err.contains("--rate 0/s"), "{err}");
    let err = one_line(
        &p.strangler(&["verify", "students", "--types", "Student!"])
            .await,
    );
    assert!(err.contains("--types Student!"), "{err}");
    let err = one_line(
        &p.strangler(&["verify", "students", "--repair", "--prefer", "middle"])
            .await,
    );
    assert!(err.contains("--prefer middle"), "{err}");
    let out = p.strangler(&["verify", "legacy->nowhere", "--json"]).await;
    let (code, body) = report(&out);
    assert_eq!((code, &body["error"]["code"]), (2, &json!("usage")));

    // A participant that does not answer.
    let mut students = p.students;
    students.halt().await;
    let err = one_line(&strangler(&p.proxy.plan_path, &["verify", "legacy->students"]).await);
    assert!(err.contains("reading students"), "{err}");
}
