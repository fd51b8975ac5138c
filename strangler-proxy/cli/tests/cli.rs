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
        r#"[gate]
min_comparisons = 0

[proxy]
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
        line.contains("bad.toml:19:11: routes[0].service: unknown service `ghost`"),
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
    let log = dir.path().join("proxy.log");
    let mut proxy = Command::new(BIN)
        .arg("--plan")
        .arg(&plan)
        .arg("serve")
        .env_remove("STRANGLER_ADMIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
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
            "the proxy never showed up in status; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
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

/// A free port on 127.0.0.1 (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn up_starts_the_services_serves_and_stops_them() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    // The "service" is another strangler proxy: any HTTP server does, and this one is built.
    let service_port = free_port();
    std::fs::write(
        dir.path().join("service.toml"),
        format!(
            "[proxy]\nlisten = \"127.0.0.1:{service_port}\"\nadmin_listen = \"127.0.0.1:0\"\nstate = \"service.db\"\n\
             [services.nothing]\nurls = [\"http://127.0.0.1:9\"]\nlegacy = true\n"
        ),
    )
    .unwrap();
    let plan = dir.path().join("plan.toml");
    std::fs::write(
        &plan,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstate = \"up.db\"\n\
             [services.legacy]\nurls = [\"http://127.0.0.1:{service_port}\"]\nlegacy = true\n\
             run = [\"{BIN}\", \"--plan\", \"service.toml\", \"serve\"]\n"
        ),
    )
    .unwrap();
    let mut up = Command::new(BIN)
        .arg("--plan")
        .arg(&plan)
        .arg("up")
        .env_remove("STRANGLER_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = up.stdout.take().unwrap();
    let err = up.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx2.send(line);
        }
    });
    let mut lines = Vec::new();
    let proxy_url = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("up prints where to send requests");
        lines.push(line.clone());
        if let Some(rest) = line.trim().strip_prefix("proxy  ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // The child's own log lines are forwarded as they come, prefixed with its name.
    while !lines.iter().any(|l| l.starts_with("[legacy] ")) {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no prefixed child log line: {lines:?}"));
        lines.push(line);
    }

    // Through the demo proxy to the started service (which answers with its own 502 JSON).
    let addr = proxy_url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    use std::io::{Read, Write};
    stream
        .write_all(b"GET /students HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.contains("x-strangler-served-by: legacy"),
        "{response}"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = up.wait().unwrap();
    assert!(exit.success(), "{exit}");
    // The log threads end when `up`'s pipes close.
    let mut rest = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        rest.push(line);
    }
    assert!(
        rest.iter().any(|l| l.contains("legacy stopped")),
        "{rest:?}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", service_port)).is_err(),
        "the service process is gone"
    );
}

#[test]
fn up_reports_a_service_that_cannot_start() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.toml");
    let base = "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstate = \"up.db\"\n[services.legacy]\nurls = [\"http://127.0.0.1:9\"]\nlegacy = true\n";
    std::fs::write(&plan, format!("{base}run = [\"no-such-program-here\"]\n")).unwrap();
    let out = strangler(&plan, &["up"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("service legacy: cannot find `no-such-program-here`"),
        "{}",
        stderr(&out)
    );

    std::fs::write(&plan, format!("{base}run = [\"false\"]\n")).unwrap();
    let out = strangler(&plan, &["up"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("service legacy exited during start"),
        "{}",
        stderr(&out)
    );

    // A port something else already answers on is refused, not mistaken for the service.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let busy = base.replace("http://127.0.0.1:9", &format!("http://127.0.0.1:{port}"));
    std::fs::write(&plan, format!("{busy}run = [\"true\"]\n")).unwrap();
    let out = strangler(&plan, &["up"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is already in use"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn output_to_a_reader_that_went_away_is_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(dir.path());
    for args in [&["status"][..], &["history"], &["plan", "check"]] {
        let mut child = Command::new(BIN)
            .arg("--plan")
            .arg(&plan)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // like `| head` having read enough
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}

#[test]
fn analysis_lists_a_run_per_stage_entry() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(dir.path());
    let out = strangler(&plan, &["analysis", "students"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("no analysis run yet"),
        "{}",
        stdout(&out)
    );
    for args in [
        &["shadow", "students"][..],
        &["canary", "students", "10"],
        &["rollback", "students"],
    ] {
        let out = strangler(&plan, args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let out = strangler(&plan, &["analysis", "students", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = json["runs"].as_array().unwrap();
    let stages: Vec<&str> = runs.iter().map(|r| r["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["shadow", "canary 10%"]);
    assert!(
        runs.iter().all(|r| r["current"] == false),
        "rollback ended both: {json}"
    );
    // This plan's gate needs no comparisons: open, and ended by the rollback.
    assert_eq!(runs[0]["verdict"], "gate open; ended by canary 10%");
    assert_eq!(runs[1]["verdict"], "gate open; ended by legacy");
    let out = strangler(&plan, &["analysis", "nobody"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn rollback_needs_nothing_but_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(dir.path());
    for args in [&["shadow", "students"][..], &["canary", "students", "10"]] {
        let out = strangler(&plan, args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    // A proxy that is live but whose admin API does not answer and never confirms.
    let state = dir.path().join("state/strangler.db");
    let store = strangler_store::open(&strangler_plan::StoreLocation::File(state.clone())).unwrap();
    store
        .register_proxy(&strangler_store::ProxyRecord {
            id: "stuck-1".into(),
            pid: 1,
            listen: "127.0.0.1:9".into(),
            admin: "127.0.0.1:9".into(),
            generation: 1,
            applied_at_ms: strangler_store::now_ms(),
            started_at: strangler_store::timestamp(strangler_store::now_ms()),
            heartbeat_ms: strangler_store::now_ms() + 60_000,
        })
        .unwrap();
    // The plan file is broken.
    std::fs::write(&plan, "[proxy\nthis is not toml").unwrap();
    let out = strangler(&plan, &["rollback", "students"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--state"), "{}", stderr(&out));

    let out = strangler(
        &plan,
        &[
            "rollback",
            "students",
            "--state",
            state.to_str().unwrap(),
            "--wait",
            "300ms",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "stored, not confirmed: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("stuck-1"), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("canary 10% → legacy"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        store.stages().unwrap()["students"],
        strangler_plan::Stage::Legacy
    );
    let last = store.history(Some("students"), 1).unwrap().pop().unwrap();
    assert_eq!(last.actor, "tester");

    // STRANGLER_STATE serves too; nothing left to roll back.
    let out = Command::new(BIN)
        .args(["--plan", plan.to_str().unwrap(), "rollback", "--all"])
        .env("STRANGLER_STATE", &state)
        .env("USER", "tester")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("already in legacy"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn json_failures_are_json_with_the_same_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(dir.path());
    let out = strangler(&plan, &["cutover", "nobody", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["error"]["code"], "usage");
    assert_eq!(json["error"]["exit"], 2);
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nobody")
    );
    // A forced move says so.
    let out = strangler(&plan, &["retire", "students", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("retired")
    );
    let out = strangler(&plan, &["cutover", "students", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["forced"], false);

    // A usage error too.
    let out = strangler(&plan, &["canary", "students", "150", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["error"]["code"], "usage");
    assert!(json["error"]["message"].as_str().unwrap().contains("150"));

    let out = strangler(&plan, &["completions", "bash"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("_strangler"));
}

#[test]
fn store_copy_moves_a_sqlite_store_to_postgres_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(dir.path());
    for args in [&["shadow", "students"][..], &["canary", "students", "10"]] {
        let out = strangler(&plan, args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let sqlite = dir.path().join("state/strangler.db");
    let url = pg_fixture::server().fresh_database();
    let copy = |from: &str, to: &str, extra: &[&str]| {
        Command::new(BIN)
            .args(["store", "copy", "--from", from, "--to", to])
            .args(extra)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };

    let out = copy(sqlite.to_str().unwrap(), &url, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!(
            "copied 1 routes' stages (generation 3), 2 audit entries, 2 runs, 0 checkpoints from {} to {url}",
            sqlite.display()
        )
    );
    // The plan's commands read the copy through --state.
    let history = |state: &str| {
        let out = strangler(&plan, &["--state", state, "history", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert_eq!(history(&url), history(sqlite.to_str().unwrap()));

    // A target with state is refused unless --replace.
    let out = copy(sqlite.to_str().unwrap(), &url, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        format!("strangler: the state store {url} is not empty; pass --replace to overwrite it")
    );
    let out = copy(sqlite.to_str().unwrap(), &url, &["--replace"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // And back, to a new file.
    let back = dir.path().join("back.db");
    let out = copy(&url, back.to_str().unwrap(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(history(back.to_str().unwrap()), history(&url));
    let status = strangler(
        &plan,
        &["--state", back.to_str().unwrap(), "status", "--json"],
    );
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["routes"][0]["stage"], "canary");

    // An unreachable database: one line, its password not shown.
    let port = free_port();
    let out = copy(
        sqlite.to_str().unwrap(),
        &format!("postgres://app:secret@127.0.0.1:{port}/x"),
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!err.contains("secret"), "{err}");
    assert!(
        err.contains(&format!(
            "cannot reach the state store postgres://app:***@127.0.0.1:{port}/x"
        )),
        "{err}"
    );
    // A missing source is not created.
    let out = copy("missing.db", back.to_str().unwrap(), &["--replace"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!dir.path().join("missing.db").exists());
}
