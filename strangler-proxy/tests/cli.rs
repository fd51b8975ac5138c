//! The `strangler` binary as an operator runs it: exit codes, one-line errors, and a proxy
//! process that serves, takes stage changes and stops on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_strangler");

fn strangler(plan: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--plan")
        .arg(plan)
        .args(args)
        .env("USER", "tester")
        .env_remove("STRANGLER_ADMIN_TOKEN")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn write_plan(dir: &Path) -> std::path::PathBuf {
    let plan = dir.join("plan.toml");
    std::fs::write(
        &plan,
        r#"[proxy]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
state = "state/strangler.db"

[services.legacy]
urls = ["http://127.0.0.1:9"]
legacy = true

[services.students]
urls = ["http://127.0.0.1:9"]

[[routes]]
name = "students"
paths = ["/students", "/students/{id}"]
service = "students"

[[routes]]
name = "finance"
paths = ["/finance/{*rest}"]
service = "students"
"#,
    )
    .unwrap();
    plan
}

#[test]
fn errors_are_one_line_with_the_right_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(dir.path());

    let out = strangler(&plan, &["cutover", "studnts"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out).trim(),
        "strangler: unknown route `studnts` (routes: students, finance)"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&plan).unwrap().replace(
            "service = \"students\"\n\n[[routes]]",
            "service = \"ghost\"\n\n[[routes]]",
        ),
    )
    .unwrap();
    let out = strangler(&plan, &["plan", "check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let line = stderr(&out);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.contains("bad.toml:16:11: routes[0].service: unknown service `ghost`"),
        "{line}"
    );
    let out = strangler(&bad, &["serve"]);
    assert_eq!(out.status.code(), Some(1), "a bad plan is refused at start");

    let out = strangler(&plan, &["plan", "check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("ok (2 services, legacy = legacy; 2 routes; 0 sync links)"));

    let out = strangler(&plan, &["retire", "students"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("only a route in cutover can be retired"));

    let out = strangler(&plan, &["cutover", "students", "--reason", "ready"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("students: legacy → cutover; no proxy is running"),
        "{}",
        stdout(&out)
    );
    assert!(strangler(&plan, &["retire", "students"]).status.success());
    let out = strangler(&plan, &["rollback", "--all"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert!(
        strangler(&plan, &["rollback", "--all", "--force"])
            .status
            .success()
    );

    let out = strangler(&plan, &["history", "--json"]);
    let history: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps: Vec<(String, bool)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                format!(
                    "{} {}",
                    e["from"].as_str().unwrap(),
                    e["to"].as_str().unwrap()
                ),
                e["forced"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("legacy cutover".to_string(), false),
            ("cutover retired".to_string(), false),
            ("retired legacy".to_string(), true)
        ]
    );
    assert_eq!(history[0]["actor"], "tester");
    assert_eq!(history[0]["reason"], "ready");

    let out = strangler(&dir.path().join("missing.toml"), &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("missing.toml: cannot read the plan"));
}

#[test]
fn a_proxy_process_serves_changes_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(dir.path());
    let mut proxy = Command::new(BIN)
        .arg("--plan")
        .arg(&plan)
        .arg("serve")
        .env_remove("STRANGLER_ADMIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // The proxy registers itself in the store; status lists it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let out = strangler(&plan, &["status", "--json"]);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(p) = status["proxies"].as_array().and_then(|p| p.first()) {
            break p.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the proxy never showed up in status"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(listed["pid"], proxy.id());

    let out = strangler(&plan, &["cutover", "students", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let change: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(change["to"], "cutover");
    assert_eq!(change["applied_by"][0], listed["id"]);
    assert_eq!(change["pending"], serde_json::json!([]));

    let status: serde_json::Value =
        serde_json::from_slice(&strangler(&plan, &["status", "--json"]).stdout).unwrap();
    assert_eq!(status["routes"][0]["stage"], "cutover");
    assert_eq!(status["proxies"][0]["current"], true);

    let killed = Command::new("kill")
        .args(["-TERM", &proxy.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = proxy.wait().unwrap();
    assert!(exit.success(), "graceful exit on SIGTERM: {exit}");
    let status: serde_json::Value =
        serde_json::from_slice(&strangler(&plan, &["status", "--json"]).stdout).unwrap();
    assert_eq!(
        status["proxies"],
        serde_json::json!([]),
        "a stopped proxy deregisters"
    );
}
