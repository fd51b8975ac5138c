//! Shadow-diff reports: per route, how often the new service answered like the monolith and
//! on how many comparisons, where it differs, what is noise, sample diffs, and both sides'
//! latency. Rendered as text, Markdown, one self-contained HTML file, or JSON.
//!
//! API boundary: reads the store and judges with the control plane's gate; writes nothing.
#![forbid(unsafe_code)]

use std::fmt::Write as _;

use serde_json::{Value, json};

use strangler_control::rollout::GateVerdict;
use strangler_control::schedule::{self, ScheduleStatus};
use strangler_plan::Plan;
use strangler_store::{
    AnalysisRun, ShadowMetric, ShadowSummary, Store, StoreError, VerifyRecord, now_ms, timestamp,
};

/// One route's report.
#[derive(Debug, Clone)]
pub struct RouteReport {
    pub route: String,
    /// Everything the route's shadow ever recorded.
    pub summary: ShadowSummary,
    /// Its analysis runs, oldest first; the current one (if any) is open.
    pub runs: Vec<AnalysisRun>,
    /// The gate's judgement of the current run.
    pub gate: GateVerdict,
    /// The newest verify of each sync link of the route's service.
    pub verifies: Vec<VerifyRecord>,
    /// The `[[schedule]]`s that verify the route or one of its links.
    pub schedules: Vec<ScheduleStatus>,
}

/// The route's verifies and schedules in a few lines, for every format.
fn verify_lines(r: &RouteReport) -> Vec<String> {
    let mut lines: Vec<String> = r
        .verifies
        .iter()
        .map(|v| {
            let outcome = if v.passed {
                format!("{} entities equal", v.compared)
            } else {
                let kinds: Vec<String> = v
                    .by_kind
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect();
                format!(
                    "{} of {} differ ({} missing, {} extra, {} differing; {})",
                    v.missing + v.extra + v.differing,
                    v.compared,
                    v.missing,
                    v.extra,
                    v.differing,
                    kinds.join(", ")
                )
            };
            format!(
                "verify {} at {}: {outcome}",
                v.link,
                timestamp(v.finished_ms)
            )
        })
        .collect();
    for s in &r.schedules {
        lines.push(format!(
            "schedule {} {}: next due {}",
            s.verify,
            s.when,
            timestamp(s.next_due_ms)
        ));
    }
    lines
}

impl RouteReport {
    /// The run the gate judges, if one is open.
    pub fn current(&self) -> Option<&AnalysisRun> {
        self.runs.last().filter(|r| r.ended_at.is_none())
    }
}

fn run_line(r: &AnalysisRun) -> String {
    let compared = r.count(ShadowMetric::Compared);
    let matched =
        (compared > 0).then(|| 1.0 - r.count(ShadowMetric::Mismatched) as f64 / compared as f64);
    format!(
        "run {} ({}) since {}: compared {}, mismatched {}, shadow errors {}, match rate {}",
        r.id,
        r.stage,
        r.started_at,
        compared,
        r.count(ShadowMetric::Mismatched),
        r.count(ShadowMetric::Errors),
        rate(matched)
    )
}

fn run_json(r: &AnalysisRun) -> Value {
    let compared = r.count(ShadowMetric::Compared);
    json!({
        "id": r.id, "stage": r.stage, "started_at": r.started_at, "ended_at": r.ended_at,
        "verdict": r.verdict, "compared": compared,
        "mismatched": r.count(ShadowMetric::Mismatched),
        "shadow_errors": r.count(ShadowMetric::Errors),
        "match_rate": (compared > 0).then(|| 1.0 - r.count(ShadowMetric::Mismatched) as f64 / compared as f64),
    })
}

/// Reads the reports of `routes` (all of the plan's when empty).
pub fn gather(
    plan: &Plan,
    store: &dyn Store,
    only: Option<&str>,
) -> Result<Vec<RouteReport>, StoreError> {
    let mut out = Vec::new();
    let verifies = store.last_verifies()?;
    let schedules = schedule::statuses(plan, &verifies, now_ms());
    for route in plan
        .routes
        .iter()
        .filter(|r| only.is_none_or(|o| o == r.name))
    {
        out.push(RouteReport {
            route: route.name.clone(),
            gate: GateVerdict::judge(&store.run_summary(&route.name)?, &route.gate),
            summary: store.shadow_summary(&route.name)?,
            runs: store.runs(&route.name)?,
            verifies: verifies
                .iter()
                .filter(|v| {
                    plan.links_of(&route.name)
                        .unwrap_or_default()
                        .iter()
                        .any(|l| l.name() == v.link)
                })
                .cloned()
                .collect(),
            schedules: schedules
                .iter()
                .filter(|s| {
                    s.verify == route.name
                        || plan
                            .links_of(&route.name)
                            .unwrap_or_default()
                            .iter()
                            .any(|l| l.name() == s.verify)
                })
                .cloned()
                .collect(),
        });
    }
    Ok(out)
}

fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (values.len() as f64 - 1.0)).round() as usize;
    values.get(rank).copied()
}

/// (primary p50, p99, candidate p50, p99) in ms.
fn latencies(s: &ShadowSummary) -> Option<(f64, f64, f64, f64)> {
    let mut primary: Vec<f64> = s.latencies.iter().map(|l| l.0).collect();
    let mut candidate: Vec<f64> = s.latencies.iter().map(|l| l.1).collect();
    Some((
        percentile(&mut primary, 50.0)?,
        percentile(&mut primary, 99.0)?,
        percentile(&mut candidate, 50.0)?,
        percentile(&mut candidate, 99.0)?,
    ))
}

fn match_rate(s: &ShadowSummary) -> Option<f64> {
    s.mismatch_rate().map(|m| 1.0 - m)
}

fn unmirrored(s: &ShadowSummary) -> Vec<(String, i64)> {
    s.unmirrored()
        .into_iter()
        .map(|(reason, n)| (reason.as_str().to_string(), n))
        .collect()
}

fn pretty_body(side: &Value) -> String {
    let body = side["body"].as_str().unwrap_or_default();
    match serde_json::from_str::<Value>(body) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_else(|_| body.to_string()),
        Err(_) => body.to_string(),
    }
}

/// What a sample was asked: `GET /students/7`.
pub fn sample_request(sample: &Value) -> String {
    format!(
        "{} {}",
        sample["method"].as_str().unwrap_or("?"),
        sample["uri"].as_str().unwrap_or("?")
    )
}

/// Why the candidate gave no answer, for a shadow error's sample (`None`: a comparison).
pub fn sample_error(sample: &Value) -> Option<String> {
    let error = sample.get("error")?;
    Some(format!(
        "shadow error {}: {}",
        error["reason"].as_str().unwrap_or("unknown"),
        error["detail"].as_str().unwrap_or("")
    ))
}

/// A unified diff of a sample's two bodies (monolith first); for a shadow error, why.
pub fn sample_diff(sample: &Value) -> String {
    if let Some(error) = sample_error(sample) {
        return format!("{error}\n");
    }
    let a = format!(
        "status {}\n{}\n",
        sample["primary"]["status"],
        pretty_body(&sample["primary"])
    );
    let b = format!(
        "status {}\n{}\n",
        sample["candidate"]["status"],
        pretty_body(&sample["candidate"])
    );
    similar::TextDiff::from_lines(&a, &b)
        .unified_diff()
        .context_radius(3)
        .header("primary", "candidate")
        .to_string()
}

fn rate(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |r| format!("{:.2} %", r * 100.0))
}

pub fn json(reports: &[RouteReport]) -> Value {
    let routes: Vec<Value> = reports
        .iter()
        .map(|r| {
            let s = &r.summary;
            let lat = latencies(s);
            json!({
                "route": r.route,
                "compared": s.count(ShadowMetric::Compared),
                "matched": s.count(ShadowMetric::Matched),
                "mismatched": s.count(ShadowMetric::Mismatched),
                "noisy_only": s.count(ShadowMetric::NoisyOnly),
                "shadow_errors": s.count(ShadowMetric::Errors),
                "match_rate": match_rate(s),
                "unmirrored": unmirrored(s).into_iter().collect::<std::collections::BTreeMap<_, _>>(),
                "mismatching_paths": s.paths.iter().filter(|p| !p.2).map(|(p, k, _, n)| json!({ "path": p, "kind": k, "count": n })).collect::<Vec<_>>(),
                "noisy_paths": s.paths.iter().filter(|p| p.2).map(|(p, _, _, _)| p.clone()).collect::<std::collections::BTreeSet<_>>(),
                "latency_ms": lat.map(|(a, b, c, d)| json!({ "primary": { "p50": a, "p99": b }, "candidate": { "p50": c, "p99": d } })),
                "samples": s.samples.iter().map(|(p, v)| json!({ "path": p, "request": sample_request(v), "error": v.get("error"), "sample": v, "diff": sample_diff(v) })).collect::<Vec<_>>(),
                "gate": match r.gate.refusal() { None => json!({ "open": true }), Some(why) => json!({ "open": false, "reason": why }) },
                "current_run": r.current().map(run_json),
                "runs": r.runs.iter().map(run_json).collect::<Vec<_>>(),
                "verifies": r.verifies,
                "schedules": r.schedules,
            })
        })
        .collect();
    json!({ "routes": routes })
}

/// Results the recorder could not take (its queue was full), over all routes.
pub fn dropped(store: &dyn Store) -> Result<i64, StoreError> {
    Ok(store.shadow_summary("")?.count(ShadowMetric::Dropped))
}

pub fn text(reports: &[RouteReport]) -> String {
    let mut out = String::new();
    for r in reports {
        let s = &r.summary;
        let _ = writeln!(out, "== {} ==", r.route);
        let _ = writeln!(
            out,
            "compared {}  matched {}  mismatched {}  noisy only {}  shadow errors {}  match rate {}",
            s.count(ShadowMetric::Compared),
            s.count(ShadowMetric::Matched),
            s.count(ShadowMetric::Mismatched),
            s.count(ShadowMetric::NoisyOnly),
            s.count(ShadowMetric::Errors),
            rate(match_rate(s))
        );
        let un = unmirrored(s);
        if !un.is_empty() {
            let listed: Vec<String> = un.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(out, "unmirrored: {}", listed.join(", "));
        }
        if let Some((a, b, c, d)) = latencies(s) {
            let _ = writeln!(
                out,
                "latency ms: monolith p50 {a:.1} p99 {b:.1} | service p50 {c:.1} p99 {d:.1}"
            );
        }
        match r.current() {
            Some(run) => {
                let _ = writeln!(out, "current {}", run_line(run));
            }
            None => out.push_str("current run: none (the route is in legacy)\n"),
        }
        let earlier = r.runs.len() - usize::from(r.current().is_some());
        if earlier > 0 {
            let _ = writeln!(
                out,
                "earlier runs: {earlier} (strangler analysis {})",
                r.route
            );
        }
        match r.gate.refusal() {
            None => out.push_str("gate: open\n"),
            Some(why) => {
                let _ = writeln!(out, "gate: closed: {why}");
            }
        }
        for line in verify_lines(r) {
            let _ = writeln!(out, "{line}");
        }
        for (p, k, noisy, n) in &s.paths {
            let _ = writeln!(
                out,
                "  {} {p} ({k}) ×{n}",
                if *noisy { "noise" } else { "DIFF " }
            );
        }
        for (p, sample) in &s.samples {
            let _ = writeln!(
                out,
                "sample at {p}: {} (request {}):",
                sample_request(sample),
                sample["request_id"].as_str().unwrap_or("-")
            );
            out.push_str(&sample_diff(sample));
        }
        out.push('\n');
    }
    out
}

/// Text safe inside a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('`', "'")
        .replace('\n', " ")
}

/// A code fence longer than any run of backticks in `text`.
fn fence(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

pub fn markdown(reports: &[RouteReport]) -> String {
    let mut out = String::from(
        "# Shadow-diff report\n\n| route | compared | match rate | mismatched | noisy only | shadow errors | gate |\n|---|---:|---:|---:|---:|---:|---|\n",
    );
    for r in reports {
        let s = &r.summary;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.route,
            s.count(ShadowMetric::Compared),
            rate(match_rate(s)),
            s.count(ShadowMetric::Mismatched),
            s.count(ShadowMetric::NoisyOnly),
            s.count(ShadowMetric::Errors),
            if r.gate.open { "open" } else { "closed" }
        );
    }
    for r in reports {
        let s = &r.summary;
        let _ = writeln!(out, "\n## {}\n", r.route);
        if let Some(why) = r.gate.refusal() {
            let _ = writeln!(out, "Gate closed: {why}\n");
        }
        for line in verify_lines(r) {
            let _ = writeln!(out, "- {}", cell(&line));
        }
        if let Some((a, b, c, d)) = latencies(s) {
            let _ = writeln!(
                out,
                "Latency (ms): monolith p50 {a:.1}, p99 {b:.1}; service p50 {c:.1}, p99 {d:.1}\n"
            );
        }
        if !s.paths.is_empty() {
            out.push_str("| path | kind | count | noise |\n|---|---|---:|---|\n");
            for (p, k, noisy, n) in &s.paths {
                let _ = writeln!(
                    out,
                    "| {} | {k} | {n} | {} |",
                    cell(p),
                    if *noisy { "yes" } else { "" }
                );
            }
        }
        for (p, sample) in &s.samples {
            let diff = sample_diff(sample);
            let f = fence(&diff);
            let _ = writeln!(
                out,
                "\nSample at {}: `{}`\n\n{f}diff\n{diff}{f}",
                cell(p),
                cell(&sample_request(sample))
            );
        }
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Bars of p50 and p99 for both sides, as inline SVG.
fn latency_svg(lat: (f64, f64, f64, f64)) -> String {
    let (a, b, c, d) = lat;
    let max = a.max(b).max(c).max(d).max(0.001);
    let bar = |y: u32, v: f64, label: &str, class: &str| {
        let w = (v / max * 300.0).max(1.0);
        format!(
            "<rect class=\"{class}\" x=\"110\" y=\"{y}\" width=\"{w:.1}\" height=\"14\"/><text x=\"0\" y=\"{}\">{label}</text><text x=\"{:.1}\" y=\"{}\">{v:.1} ms</text>",
            y + 11,
            115.0 + w,
            y + 11
        )
    };
    format!(
        "<svg class=\"latency\" width=\"480\" height=\"80\" role=\"img\" aria-label=\"latency\">{}{}{}{}</svg>",
        bar(0, a, "monolith p50", "primary"),
        bar(20, b, "monolith p99", "primary"),
        bar(40, c, "service p50", "candidate"),
        bar(60, d, "service p99", "candidate")
    )
}

pub fn html(reports: &[RouteReport]) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Shadow-diff report</title><style>\
         body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}\
         td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f3f3f3}\
         .open{color:#137333}.closed{color:#b3261e}pre.diff{background:#fafafa;padding:8px;overflow-x:auto}\
         .add{color:#137333;background:#e6f4ea}.del{color:#b3261e;background:#fce8e6}.hunk{color:#666}\
         svg.latency text{font-size:11px}rect.primary{fill:#7aa7e0}rect.candidate{fill:#e0a96d}</style></head><body>\n<h1>Shadow-diff report</h1>\n",
    );
    out.push_str("<table id=\"summary\"><thead><tr><th>route</th><th>compared</th><th>match rate</th><th>mismatched</th><th>noisy only</th><th>shadow errors</th><th>gate</th></tr></thead><tbody>\n");
    for r in reports {
        let s = &r.summary;
        let _ = writeln!(
            out,
            "<tr data-route=\"{0}\"><td>{0}</td><td>{1}</td><td>{2}</td><td>{3}</td><td>{4}</td><td>{5}</td><td class=\"{6}\">{6}</td></tr>",
            escape(&r.route),
            s.count(ShadowMetric::Compared),
            rate(match_rate(s)),
            s.count(ShadowMetric::Mismatched),
            s.count(ShadowMetric::NoisyOnly),
            s.count(ShadowMetric::Errors),
            if r.gate.open { "open" } else { "closed" }
        );
    }
    out.push_str("</tbody></table>\n");
    for r in reports {
        let s = &r.summary;
        let _ = writeln!(
            out,
            "<section id=\"route-{0}\"><h2>{0}</h2>",
            escape(&r.route)
        );
        match r.gate.refusal() {
            None => {
                out.push_str("<p class=\"open\">Gate open: canary and cutover are allowed.</p>\n")
            }
            Some(why) => {
                let _ = writeln!(out, "<p class=\"closed\">Gate closed: {}</p>", escape(&why));
            }
        }
        for line in verify_lines(r) {
            let _ = writeln!(out, "<p class=\"verify\">{}</p>", escape(&line));
        }
        if let Some(lat) = latencies(s) {
            out.push_str(&latency_svg(lat));
        }
        if !s.paths.is_empty() {
            out.push_str("<table class=\"paths\"><thead><tr><th>path</th><th>kind</th><th>count</th><th>noise</th></tr></thead><tbody>");
            for (p, k, noisy, n) in &s.paths {
                let _ = write!(
                    out,
                    "<tr><td><code>{}</code></td><td>{}</td><td>{n}</td><td>{}</td></tr>",
                    escape(p),
                    escape(k),
                    if *noisy { "noise" } else { "" }
                );
            }
            out.push_str("</tbody></table>\n");
        }
        for (p, sample) in &s.samples {
            let _ = writeln!(
                out,
                "<h3>Sample at <code>{}</code></h3><p class=\"request\"><code>{}</code> (request {})</p><pre class=\"diff\">",
                escape(p),
                escape(&sample_request(sample)),
                escape(sample["request_id"].as_str().unwrap_or("-"))
            );
            for line in sample_diff(sample).lines() {
                let class =
                    if line.starts_with("+++") || line.starts_with("---") || line.starts_with("@@")
                    {
                        "hunk"
                    } else if line.starts_with('+') {
                        "add"
                    } else if line.starts_with('-') {
                        "del"
                    } else {
                        ""
                    };
                let _ = writeln!(out, "<span class=\"{class}\">{}</span>", escape(line));
            }
            out.push_str("</pre>\n");
        }
        out.push_str("</section>\n");
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn report() -> Vec<RouteReport> {
        let summary = ShadowSummary {
            route: "students".into(),
            samples: vec![
                (
                    "/name".into(),
                    json!({ "request_id": "r-1", "method": "GET", "uri": "/students/7?x=<1>",
                            "primary": { "status": 200, "body": "{\"name\":\"Ada\"}" },
                            "candidate": { "status": 200, "body": "{\"name\":\"Ada L.\"}" } }),
                ),
                (
                    "(shadow error timeout)".into(),
                    json!({ "request_id": "r-2", "method": "POST", "uri": "/students",
                            "error": { "reason": "timeout", "detail": "no answer within 300 ms" } }),
                ),
            ],
            ..ShadowSummary::default()
        };
        vec![RouteReport {
            route: "students".into(),
            gate: GateVerdict::judge(&summary, &strangler_plan::GateSpec::default()),
            summary,
            runs: Vec::new(),
            verifies: Vec::new(),
            schedules: Vec::new(),
        }]
    }

    #[test]
    fn every_sample_shows_its_method_and_uri_and_an_error_its_reason() {
        let reports = report();
        let text = text(&reports);
        assert!(
            text.contains("sample at /name: GET /students/7?x=<1> (request r-1):"),
            "{text}"
        );
        assert!(text.contains("-  \"name\": \"Ada\""), "{text}");
        assert!(
            text.contains("sample at (shadow error timeout): POST /students (request r-2):\nshadow error timeout: no answer within 300 ms"),
            "{text}"
        );
        let html = html(&reports);
        assert!(
            html.contains("<code>GET /students/7?x=&lt;1&gt;</code> (request r-1)"),
            "{html}"
        );
        assert!(
            html.contains("shadow error timeout: no answer within 300 ms"),
            "{html}"
        );
        let md = markdown(&reports);
        assert!(
            md.contains("Sample at /name: `GET /students/7?x=<1>`"),
            "{md}"
        );
        let json = json(&reports);
        assert_eq!(json["routes"][0]["samples"][1]["request"], "POST /students");
        assert_eq!(
            json["routes"][0]["samples"][1]["error"]["reason"],
            "timeout"
        );
    }
}
