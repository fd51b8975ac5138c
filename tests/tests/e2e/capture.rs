//! Capture → export → replay, as a developer fixing a new service meets it: the shadow keeps
//! the mismatching exchanges (redacted), `strangler capture export` writes them as files,
//! `strangler replay` sends them to the service again and fails while it still differs,
//! and passes once it is fixed. The CLI runs as its own process (`e2e-strangler`).

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use e2e::{ScriptedUpstream, TestProxy, eventually, json_answer};
use serde_json::{Value, json};

/// The monolith's answers: a student with a password, and a created student.
fn legacy_answer(path: &str, body: &[u8]) -> (u16, &'static str, Vec<u8>) {
    match path.rsplit('/').next() {
        Some("students") => {
            let sent: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            json_answer(json!({ "created": true, "name": sent["name"], "tags": ["new"] }))
        }
        Some(id) => json_answer(json!({
            "id": id, "name": "Ada", "password": format!("s3cret-{id}"), "tags": ["a", "b"],
        })),
        None => json_answer(json!({})),
    }
}

/// The new service: until `fixed`, even ids get another name, an extra tag, and a created
/// student's name is lower-cased.
fn candidate(fixed: Arc<AtomicBool>) -> e2e::Script {
    Arc::new(move |path: &str, body: &[u8]| {
        let (status, kind, bytes) = legacy_answer(path, body);
        if fixed.load(Ordering::SeqCst) {
            return (status, kind, bytes);
        }
        let mut doc: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let even = doc["id"]
            .as_str()
            .and_then(|id| id.parse::<u32>().ok())
            .is_some_and(|n| n % 2 == 0);
        if even {
            doc["name"] = json!("Ada L.");
            doc["tags"] = json!(["a", "x", "b"]);
        }
        if doc["created"] == json!(true) {
            doc["name"] = json!(doc["name"].as_str().unwrap_or_default().to_lowercase());
        }
        json_answer(doc)
    })
}

fn strangler(plan: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_e2e-strangler"))
        .arg("--plan")
        .arg(plan)
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A usage error: exit 2 and one line naming what is wrong.
fn assert_usage_error(out: &Output, words: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains(words), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn captured_mismatches_replay_until_the_service_is_fixed() {
    let legacy = ScriptedUpstream::start(Duration::ZERO, Arc::new(legacy_answer)).await;
    let fixed = Arc::new(AtomicBool::new(false));
    let new = ScriptedUpstream::start(Duration::ZERO, candidate(Arc::clone(&fixed))).await;
    let dir = tempfile::tempdir().unwrap();
    let mut plan = e2e::plan_toml(
        dir.path(),
        &[
            ("legacy", format!("\"{}\"", legacy.url())),
            ("students", format!("\"{}\"", new.url())),
        ],
        "",
    );
    plan.push_str(
        "\n[[routes]]\nname = \"students\"\npaths = [\"/students\", \"/students/{id}\"]\nservice = \"students\"\nstage = \"shadow\"\n\
         shadow = { writes = \"dry-run\", noise_sample = 0 }\n\
         compare = { ignore = [\"/password\"] }\n\
         capture = { mismatches = 10, redact = [\"header:authorization\", \"/password\"] }\n",
    );
    let p = TestProxy::start(dir, &plan).await;

    // Four students differ (the even ones), four do not; the created one differs too.
    for id in 1..=8 {
        let answer = p
            .client
            .send(
                p.client
                    .request(reqwest::Method::GET, &format!("/students/{id}"))
                    .bearer_auth("secret-token"),
            )
            .await;
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.body["name"], "Ada",
            "the monolith answers the client"
        );
    }
    p.client
        .post("/students", json!({ "name": "Bo", "password": "hunter2" }))
        .await
        .expect(200);
    let store = strangler_store::open(&strangler_plan::StoreLocation::File(
        p.dir.path().join("strangler.db"),
    ))
    .unwrap();
    let cases = eventually(Duration::from_secs(30), "five cases captured", || async {
        let cases = store.captures("students").unwrap();
        (cases.len() >= 5).then_some(cases)
    })
    .await;
    assert_eq!(cases.len(), 5, "only mismatches are kept");

    // Export: one readable file per case, with nothing the plan said to take out.
    let bundle = tempfile::tempdir().unwrap();
    let out_dir = bundle.path().join("students");
    let out_arg = out_dir.to_str().unwrap();
    let exported = strangler(
        &p.plan_path,
        &["capture", "export", "students", "--out", out_arg],
    );
    assert_eq!(
        exported.status.code(),
        Some(0),
        "{}",
        text(&exported.stderr)
    );
    assert!(
        text(&exported.stdout).contains("wrote 5 cases (5 new)"),
        "{}",
        text(&exported.stdout)
    );
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("bundle.json")).unwrap())
            .unwrap();
    assert_eq!(index["route"], "students");
    assert_eq!(index["compare"]["ignore"], json!(["/password"]));
    let mut files: Vec<String> = std::fs::read_dir(out_dir.join("cases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files.len(), 5, "{files:?}");
    assert!(
        files.iter().any(|f| f.ends_with("-get-students-4.json")),
        "{files:?}"
    );
    assert!(
        files.iter().any(|f| f.ends_with("-post-students.json")),
        "{files:?}"
    );
    for file in &files {
        let body = std::fs::read_to_string(out_dir.join("cases").join(file)).unwrap();
        for secret in ["secret-token", "hunter2", "s3cret"] {
            assert!(!body.contains(secret), "{file} keeps {secret}: {body}");
        }
        let case: Value = serde_json::from_str(&body).unwrap();
        assert!(
            body.contains("\n  \"request\": {"),
            "pretty-printed: {body}"
        );
        assert_eq!(
            case["legacy"]["body"]["json"]["name"],
            if file.contains("post") { "Bo" } else { "Ada" }
        );
        assert!(
            case["differences"]
                .as_array()
                .is_some_and(|d| !d.is_empty()),
            "{body}"
        );
    }
    let get4: Value = serde_json::from_str(
        &std::fs::read_to_string(
            out_dir.join("cases").join(
                files
                    .iter()
                    .find(|f| f.ends_with("-get-students-4.json"))
                    .unwrap(),
            ),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(get4["request"]["method"], "GET");
    assert_eq!(get4["request"]["uri"], "/students/4");
    assert_eq!(get4["new"]["body"]["json"]["name"], "Ada L.");
    assert_eq!(
        get4["differences"],
        json!([
            { "path": "/name", "kind": "value_changed", "left": "Ada", "right": "Ada L." },
            { "path": "/tags/1", "kind": "extra", "left": null, "right": "x" },
        ]),
        "one inserted tag is one difference"
    );
    // Exporting again changes nothing and adds nothing.
    let again = strangler(
        &p.plan_path,
        &["capture", "export", "students", "--out", out_arg],
    );
    assert!(
        text(&again.stdout).contains("wrote 5 cases (0 new)"),
        "{}",
        text(&again.stdout)
    );

    // Replay against the service as it is: every case still differs.
    let posts_before = new.requests().iter().filter(|(m, ..)| m == "POST").count();
    let replay = strangler(&p.plan_path, &["replay", out_arg, "--against", &new.url()]);
    let report = text(&replay.stdout);
    assert_eq!(
        replay.status.code(),
        Some(1),
        "{report}{}",
        text(&replay.stderr)
    );
    assert!(report.contains("5 cases, 0 passed, 5 failed"), "{report}");
    assert!(
        report.contains("FAIL") && report.contains("GET /students/4"),
        "{report}"
    );
    assert!(
        report.contains("~ /name (value changed): \"Ada\" → \"Ada L.\""),
        "{report}"
    );
    let posts: Vec<_> = new
        .requests()
        .into_iter()
        .filter(|(m, ..)| m == "POST")
        .skip(posts_before)
        .collect();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert!(
        posts.iter().all(|(_, _, dry_run)| *dry_run),
        "a replayed write is a dry run"
    );

    // The JUnit report is XML a CI reads: five test cases, five failures.
    let junit = bundle.path().join("replay.xml");
    let replay = strangler(
        &p.plan_path,
        &[
            "replay",
            out_arg,
            "--against",
            &new.url(),
            "--format",
            "junit",
            "--out",
            junit.to_str().unwrap(),
        ],
    );
    assert_eq!(replay.status.code(), Some(1));
    assert!(
        text(&replay.stderr).contains("5 of 5 cases differ"),
        "{}",
        text(&replay.stderr)
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|err| panic!("{err}: {xml}"));
    let suite = doc.root_element();
    assert_eq!(suite.tag_name().name(), "testsuite");
    assert_eq!(suite.attribute("tests"), Some("5"));
    assert_eq!(suite.attribute("failures"), Some("5"));
    let failures = suite
        .descendants()
        .filter(|n| n.has_tag_name("failure"))
        .count();
    assert_eq!(failures, 5, "{xml}");

    // Fixed: every case passes, against the captured answers and against the live monolith.
    fixed.store(true, Ordering::SeqCst);
    let replay = strangler(&p.plan_path, &["replay", out_arg, "--against", &new.url()]);
    assert_eq!(replay.status.code(), Some(0), "{}", text(&replay.stdout));
    assert!(
        text(&replay.stdout).contains("5 cases, 5 passed, 0 failed"),
        "{}",
        text(&replay.stdout)
    );
    let replay = strangler(
        &p.plan_path,
        &[
            "replay",
            out_arg,
            "--against",
            &new.url(),
            "--legacy",
            &legacy.url(),
            "--format",
            "json",
        ],
    );
    assert_eq!(replay.status.code(), Some(0), "{}", text(&replay.stdout));
    let report: Value = serde_json::from_slice(&replay.stdout).unwrap();
    assert_eq!(
        (report["passed"].as_i64(), report["failed"].as_i64()),
        (Some(5), Some(0)),
        "{report}"
    );
    assert!(
        report["cases"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["passed"] == true)
    );

    // Bad input: one line and exit 2 each.
    assert_usage_error(
        &strangler(
            &p.plan_path,
            &["capture", "export", "nobody", "--out", out_arg],
        ),
        "nobody",
    );
    let not_a_bundle = tempfile::tempdir().unwrap();
    assert_usage_error(
        &strangler(
            &p.plan_path,
            &[
                "replay",
                not_a_bundle.path().to_str().unwrap(),
                "--against",
                &new.url(),
            ],
        ),
        "is not a capture bundle",
    );
    assert_usage_error(
        &strangler(
            &p.plan_path,
            &["replay", out_arg, "--against", "localhost:7101"],
        ),
        "--against `localhost:7101`",
    );
    std::fs::write(out_dir.join("cases").join("broken.json"), "{ not json").unwrap();
    assert_usage_error(
        &strangler(&p.plan_path, &["replay", out_arg, "--against", &new.url()]),
        "broken.json",
    );
    // A service that is not there: every case fails, saying why.
    std::fs::remove_file(out_dir.join("cases").join("broken.json")).unwrap();
    let replay = strangler(
        &p.plan_path,
        &["replay", out_arg, "--against", "http://127.0.0.1:9"],
    );
    assert_eq!(replay.status.code(), Some(1));
    assert!(
        text(&replay.stdout).contains("5 failed"),
        "{}",
        text(&replay.stdout)
    );
}
