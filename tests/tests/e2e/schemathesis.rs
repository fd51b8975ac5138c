//! schemathesis (an external OpenAPI fuzzer) finds nothing: every participant, and the
//! monolith through the proxy, answers what its document says for generated valid and
//! invalid requests. Runs `scripts/schemathesis` against servers started here, with the
//! pinned schemathesis in `target/schemathesis-venv` (created with python3 when missing).

use std::path::PathBuf;
use std::process::Command;

use e2e::Stack;
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_failure_on_any_server() {
    let stack = Stack::start().await;
    let target = |name: &str, url: &str, schema: &str| json!({ "name": name, "url": url, "schema": format!("{schema}/openapi.json") });
    let mut proxy = target("proxy", &stack.proxy.url, &stack.legacy.url);
    // The proxy answers 404 for every path starting with `/_`: the feed stays internal.
    proxy["exclude_path_regex"] = json!("^/_");
    let targets = json!([
        target("monolith", &stack.legacy.url, &stack.legacy.url),
        target("students-service", &stack.students.url, &stack.students.url),
        target("finance-service", &stack.finance.url, &stack.finance.url),
        target(
            "gamification-service",
            &stack.gamification.url,
            &stack.gamification.url
        ),
        target(
            "enrollment-service",
            &stack.enrollment.url,
            &stack.enrollment.url
        ),
        proxy,
    ]);
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.json");
    let mut command = Command::new("python3");
    command
        .arg(root().join("scripts/schemathesis"))
        .arg("--venv")
        .arg(root().join("target/schemathesis-venv"))
        .arg("--targets-json")
        .arg(targets.to_string())
        .arg("--summary-json")
        .arg(&summary);
    let ran = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap();
    let output = match ran {
        Ok(output) => output,
        Err(err) => panic!("cannot run python3 (needed to install and run schemathesis): {err}"),
    };
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Value = match std::fs::read_to_string(&summary) {
        Ok(text) => serde_json::from_str(&text).unwrap(),
        Err(_) => panic!("scripts/schemathesis did not run schemathesis:\n{printed}"),
    };
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 6, "{printed}");
    for result in results {
        let name = &result["name"];
        assert_eq!(result["failures"], 0, "{name} failed:\n{printed}");
        assert!(result["ok"].as_bool().unwrap(), "{name}:\n{printed}");
        // It really ran: operations were selected and test cases generated.
        assert!(
            result["operations"].as_u64().unwrap() >= 8,
            "{name}:\n{printed}"
        );
        assert!(
            result["test_cases"].as_u64().unwrap() >= 100,
            "{name}:\n{printed}"
        );
    }
    assert!(output.status.success(), "{printed}");
}
