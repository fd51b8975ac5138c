//! `json_patch(A, B)` applied to A gives B, checked with an independent implementation (the
//! `json-patch` crate), on a table of cases; and `strangler diff` as a user runs it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use strangler_diff::json_patch;

#[test]
fn applying_the_patch_to_a_gives_b() {
    let cases: Vec<(Value, Value)> = vec![
        (json!({}), json!({})),
        (json!({ "a": 1 }), json!({ "a": 2 })),
        (
            json!({ "a": { "b": { "c": [1, 2, 3] } } }),
            json!({ "a": { "b": { "c": [1, 2, 3, 4], "d": true } } }),
        ),
        (
            json!({ "list": [1, 2, 3, 4, 5] }),
            json!({ "list": [1, 9] }),
        ),
        (
            json!({ "list": [] }),
            json!({ "list": [{ "x": 1 }, { "y": [2] }] }),
        ),
        (json!({ "t": "1" }), json!({ "t": 1 })),
        (json!({ "t": [1] }), json!({ "t": { "0": 1 } })),
        (
            json!({ "a/b": 1, "m~n": 2, "~1": 3 }),
            json!({ "a/b": 4, "~01": 5 }),
        ),
        (
            json!({ "ünï": "çødé", "emoji 🎓": [1] }),
            json!({ "ünï": "code", "emoji 🎓": [] }),
        ),
        (json!([1, [2, [3, [4]]]]), json!([[[[4, 5]]]])),
        (json!(null), json!({ "now": "object" })),
        (json!("scalar"), json!(["array"])),
        (
            json!({ "keep": { "deep": [ { "a": 1 }, { "b": 2 } ] }, "drop": 0 }),
            json!({ "keep": { "deep": [ { "a": 1, "z": 0 } ] } }),
        ),
    ];
    for (a, b) in cases {
        let ops = json_patch(&a, &b);
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops.clone())).unwrap();
        let mut doc = a.clone();
        json_patch::patch(&mut doc, &patch)
            .unwrap_or_else(|e| panic!("{a} → {b}: {e} with {ops:?}"));
        assert_eq!(doc, b, "patch {ops:?} turns {a} into {doc}, not {b}");
        if a == b {
            assert!(ops.is_empty());
        }
    }
}

#[test]
fn the_diff_command_prints_differences_and_patches() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    std::fs::write(&a, r#"{"id": 1, "name": "Ada", "tags": ["x"]}"#).unwrap();
    std::fs::write(
        &b,
        r#"{"name": "Ada", "id": 1, "tags": ["x", "y"], "extra/field": true}"#,
    )
    .unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_strangler"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["diff", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "they differ");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("+ /tags/1: \"y\""),
        "one added element: {text}"
    );
    assert!(text.contains("+ /extra~1field: true"), "{text}");

    // The patch from A to B, which differ (exit 1).
    let patch_a_to_b = || {
        let out = run(&[
            "diff",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--format",
            "json-patch",
        ]);
        assert_eq!(out.status.code(), Some(1));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    assert_eq!(
        patch_a_to_b(),
        json!([
            { "op": "add", "path": "/tags/1", "value": "y" },
            { "op": "add", "path": "/extra~1field", "value": true },
        ])
    );

    let out = run(&["diff", a.to_str().unwrap(), a.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));

    // Documents nested 1,000 deep are compared and patched like any other.
    let deep = |leaf: &str| format!("{}{leaf}{}", "[".repeat(1000), "]".repeat(1000));
    std::fs::write(&a, deep("1")).unwrap();
    std::fs::write(&b, deep("2")).unwrap();
    let out = run(&["diff", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("~ {}", "/0".repeat(1000))),
        "{text}"
    );
    assert_eq!(patch_a_to_b()[0]["path"], "/0".repeat(1000));
    let out = run(&["diff", a.to_str().unwrap(), "/nonexistent.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent.json"));
}
