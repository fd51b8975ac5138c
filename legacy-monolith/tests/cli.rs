//! The `legacy-monolith` binary as a user runs it: serve on a chosen address, seed through
//! the API, stop on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_legacy-monolith");

#[test]
fn serve_seed_and_stop_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nested/legacy.db");
    let mut server = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // The log names the bound address; read it, then keep draining the log.
    let stderr = server.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the monolith logs its address");
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let url = format!("http://{addr}");

    let seeded = Command::new(BIN)
        .args(["seed", "--url", &url, "--students", "40"])
        .output()
        .unwrap();
    assert!(
        seeded.status.success(),
        "seed failed: {}",
        String::from_utf8_lossy(&seeded.stderr)
    );
    let report = String::from_utf8_lossy(&seeded.stdout);
    assert!(report.starts_with("seeded 40 students"), "{report}");

    let conn = rusqlite::Connection::open(&db).unwrap();
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(count("SELECT COUNT(*) FROM students"), 40);
    assert!(count("SELECT COUNT(*) FROM enrollments") >= 40);
    assert!(count("SELECT COUNT(*) FROM invoices WHERE status = 'paid'") > 0);
    assert!(count("SELECT COUNT(*) FROM rewards WHERE idempotency_key LIKE 'seed:%'") > 0);

    let refused = Command::new(BIN)
        .args(["seed", "--url", "http://127.0.0.1:9", "--students", "1"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("seeding http://127.0.0.1:9 failed"));

    let term = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = server.wait().unwrap();
    assert!(status.success(), "graceful exit on SIGTERM: {status}");
}

#[test]
fn a_database_path_that_cannot_be_created_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(file.join("legacy.db"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot create directory"), "{stderr}");
}
