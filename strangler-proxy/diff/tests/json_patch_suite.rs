//! The public JSON Patch test suite (`json-patch-test-suite`, vendored with its licence in
//! `json-patch-test-suite/`): every record's patch applies to give its expected document, or
//! is refused when the record expects an error; and for every record with a document and an
//! expected one, the patch this crate makes from one to the other gives the expected one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use strangler_diff::{apply_patch, equal_by_value, json_patch};

fn records(file: &str) -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/json-patch-test-suite")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    match serde_json::from_str(&text).unwrap() {
        Value::Array(records) => records,
        other => panic!("{} is not a list of records: {other}", path.display()),
    }
}

fn name(record: &Value, n: usize) -> String {
    format!(
        "record {n} ({})",
        record["comment"].as_str().unwrap_or("no comment")
    )
}

/// Runs one file; answers how many records were applied, refused and diffed.
fn run(file: &str) -> (usize, usize, usize) {
    let (mut applied, mut refused, mut diffed) = (0, 0, 0);
    for (n, record) in records(file).iter().enumerate() {
        // Disabled records are ones the suite itself does not expect to hold (a patch with
        // two `op` members, which a JSON parser cannot see); a record with only a comment is a note.
        if record["disabled"] == Value::Bool(true) || record.get("patch").is_none() {
            continue;
        }
        let (doc, patch) = (&record["doc"], &record["patch"]);
        if let Some(expected) = record.get("expected") {
            let got = apply_patch(doc, patch)
                .unwrap_or_else(|err| panic!("{file} {}: {err}", name(record, n)));
            assert!(
                equal_by_value(&got, expected),
                "{file} {}: got {got}, expected {expected}",
                name(record, n)
            );
            applied += 1;
            let made = Value::Array(json_patch(doc, expected));
            let patched = apply_patch(doc, &made).unwrap_or_else(|err| {
                panic!("{file} {}: our patch {made}: {err}", name(record, n))
            });
            assert_eq!(
                &patched,
                expected,
                "{file} {}: our patch {made}",
                name(record, n)
            );
            diffed += 1;
        } else if let Some(error) = record.get("error") {
            assert!(
                apply_patch(doc, patch).is_err(),
                "{file} {}: expected an error ({error})",
                name(record, n)
            );
            refused += 1;
        }
    }
    (applied, refused, diffed)
}

#[test]
fn the_suite_passes() {
    let (applied, refused, diffed) = run("tests.json");
    // Every runnable record of the vendored version ran.
    assert_eq!((applied, refused, diffed), (50, 19, 50), "tests.json");
    let (applied, refused, diffed) = run("spec_tests.json");
    assert_eq!((applied, refused, diffed), (12, 4, 12), "spec_tests.json");
}
