//! A sample as a person reads it: the request, both answers side by side with the lines
//! that differ marked, and the differences the comparer found. Reads both shapes the store
//! keeps: a shadow sample (`primary`/`candidate`, or `error` for a shadow error) and a
//! captured case (`request`/`legacy`/`new`, with the request headers as redacted).

use serde_json::Value;

/// One side's answer, as lines with a flag for those the other side does not have.
pub struct Side {
    pub status: String,
    pub lines: Vec<(String, bool)>,
}

/// A difference the comparer reported.
pub struct Difference {
    pub path: String,
    pub kind: String,
    pub left: String,
    pub right: String,
}

pub struct SampleView {
    /// `sample-3`, `case-12`: the anchor the page gives it.
    pub anchor: String,
    /// `shadow sample` or `captured case`.
    pub source: &'static str,
    /// The differing path it was kept for.
    pub path: String,
    pub method: String,
    pub uri: String,
    /// `None`: the shadow sample does not keep them.
    pub request_headers: Option<Vec<(String, String)>>,
    /// What the capture redacted, as the plan lists it.
    pub redacted: Vec<String>,
    /// Why the new service gave no answer (a shadow error).
    pub error: Option<String>,
    /// Monolith, new service.
    pub answers: Option<(Side, Side)>,
    pub differences: Vec<Difference>,
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn pairs(value: &Value) -> Vec<(String, String)> {
    value
        .as_array()
        .map(|headers| headers.iter().map(|h| (text(&h[0]), text(&h[1]))).collect())
        .unwrap_or_default()
}

/// A body as lines: a JSON document pretty-printed, text as it is.
fn body_text(body: &Value) -> String {
    let pretty = |doc: &Value| serde_json::to_string_pretty(doc).unwrap_or_default();
    match body {
        // A shadow sample keeps the decoded body as text.
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(doc @ (Value::Object(_) | Value::Array(_))) => pretty(&doc),
            _ => s.clone(),
        },
        // A captured case's `Body`: `"empty"`, `{"text": ..}`, `{"json": ..}`, `{"base64": ..}`.
        Value::Object(map) => {
            if let Some(doc) = map.get("json") {
                pretty(doc)
            } else if let Some(Value::String(s)) = map.get("text") {
                body_text(&Value::String(s.clone()))
            } else if let Some(Value::String(s)) = map.get("base64") {
                format!("(binary, base64) {s}")
            } else {
                String::new()
            }
        }
        _ => String::new(),
    }
}

/// Both answers' lines, each marked where the other side lacks it.
fn side_by_side(legacy: &Value, new: &Value) -> (Side, Side) {
    let left = body_text(&legacy["body"]);
    let right = body_text(&new["body"]);
    let mut left_lines = Vec::new();
    let mut right_lines = Vec::new();
    for change in similar::TextDiff::from_lines(&left, &right).iter_all_changes() {
        let line = change.value().trim_end_matches('\n').to_string();
        match change.tag() {
            similar::ChangeTag::Equal => {
                left_lines.push((line.clone(), false));
                right_lines.push((line, false));
            }
            similar::ChangeTag::Delete => left_lines.push((line, true)),
            similar::ChangeTag::Insert => right_lines.push((line, true)),
        }
    }
    let status = |side: &Value| text(&side["status"]);
    let changed_status = status(legacy) != status(new);
    let mark = |s: String| {
        if changed_status {
            format!("{s} (differs)")
        } else {
            s
        }
    };
    (
        Side {
            status: mark(status(legacy)),
            lines: left_lines,
        },
        Side {
            status: mark(status(new)),
            lines: right_lines,
        },
    )
}

fn differences(value: &Value) -> Vec<Difference> {
    value
        .as_array()
        .map(|all| {
            all.iter()
                .map(|d| Difference {
                    path: text(&d["path"]),
                    kind: text(&d["kind"]),
                    left: text(&d["left"]),
                    right: text(&d["right"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A shadow sample (`index` names it on the page).
pub fn from_sample(index: usize, path: &str, sample: &Value) -> SampleView {
    let error = sample.get("error").map(|e| {
        format!(
            "shadow error {}: {}",
            e["reason"].as_str().unwrap_or("unknown"),
            e["detail"].as_str().unwrap_or("")
        )
    });
    SampleView {
        anchor: format!("sample-{index}"),
        source: "shadow sample",
        path: path.to_string(),
        method: text(&sample["method"]),
        uri: text(&sample["uri"]),
        request_headers: None,
        redacted: Vec::new(),
        answers: error
            .is_none()
            .then(|| side_by_side(&sample["primary"], &sample["candidate"])),
        error,
        differences: differences(&sample["differences"]),
    }
}

/// A captured case.
pub fn from_case(id: i64, path: &str, case: &Value) -> SampleView {
    SampleView {
        anchor: format!("case-{id}"),
        source: "captured case",
        path: path.to_string(),
        method: text(&case["request"]["method"]),
        uri: text(&case["request"]["uri"]),
        request_headers: Some(pairs(&case["request"]["headers"])),
        redacted: case["redacted"]
            .as_array()
            .map(|r| r.iter().map(text).collect())
            .unwrap_or_default(),
        error: None,
        answers: Some(side_by_side(&case["legacy"], &case["new"])),
        differences: differences(&case["differences"]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_differing_lines_are_marked_on_each_side() {
        let sample = json!({
            "method": "GET", "uri": "/students/2",
            "primary": { "status": 200, "body": "{\"id\":2,\"name\":\"Ada\"}" },
            "candidate": { "status": 200, "body": "{\"id\":2,\"name\":\"Ada L.\"}" },
            "differences": [{ "path": "/name", "kind": "value_changed", "left": "Ada", "right": "Ada L." }],
        });
        let view = from_sample(0, "/name", &sample);
        let (legacy, new) = view.answers.unwrap();
        let marked = |side: &Side| {
            side.lines
                .iter()
                .filter(|(_, m)| *m)
                .map(|(l, _)| l.trim().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(marked(&legacy), vec!["\"name\": \"Ada\""]);
        assert_eq!(marked(&new), vec!["\"name\": \"Ada L.\""]);
        assert_eq!(view.differences[0].kind, "value_changed");
    }

    #[test]
    fn a_case_shows_its_redacted_request_and_a_shadow_error_its_reason() {
        let case = json!({
            "request": { "method": "POST", "uri": "/students", "headers": [["authorization", "(redacted)"]], "body": "empty" },
            "legacy": { "status": 201, "headers": [], "body": { "json": { "a": 1 } } },
            "new": { "status": 500, "headers": [], "body": { "text": "boom" } },
            "differences": [], "redacted": ["header:authorization"],
        });
        let view = from_case(7, "(status)", &case);
        assert_eq!(
            view.request_headers.unwrap(),
            vec![("authorization".to_string(), "(redacted)".to_string())]
        );
        assert_eq!(view.answers.unwrap().0.status, "201 (differs)");
        let error = json!({ "method": "GET", "uri": "/x", "error": { "reason": "timeout", "detail": "after 2s" } });
        let view = from_sample(1, "(error)", &error);
        assert_eq!(
            view.error.as_deref(),
            Some("shadow error timeout: after 2s")
        );
        assert!(view.answers.is_none());
    }
}
