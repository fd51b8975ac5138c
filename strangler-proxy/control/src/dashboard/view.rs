//! The pages, as maud templates (checked when the crate compiles; every value escaped).

use maud::{DOCTYPE, Markup, html};
use strangler_plan::Stage;
use strangler_store::{AuditEntry, ShadowMetric, timestamp};

use super::chart::{Series, chart};
use super::data::{Overview, RouteDetail, RouteRow};
use super::sample::{self, SampleView};
use crate::history::Point;

/// Samples listed on a route's page, newest first.
const SAMPLES_SHOWN: usize = 50;

fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "–".to_string(), |r| format!("{:.2} %", r * 100.0))
}

fn millis(ms: Option<f64>) -> String {
    ms.map_or_else(
        || "–".to_string(),
        |ms| {
            if ms < 10.0 {
                format!("{ms:.2} ms")
            } else {
                format!("{ms:.0} ms")
            }
        },
    )
}

fn ago(now_ms: i64, at_ms: i64) -> String {
    let secs = (now_ms - at_ms).max(0) / 1000;
    match secs {
        0..120 => format!("{secs} s ago"),
        120..7200 => format!("{} min ago", secs / 60),
        _ => format!("{} h ago", secs / 3600),
    }
}

/// Every page's head: its title, the embedded style sheet and script.
fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · strangler" }
            link rel="stylesheet" href="/assets/dashboard.css";
            script src="/assets/dashboard.js" defer {}
        }
    }
}

/// The page around every authorized view: the header with the actor, the notice line the
/// buttons report in, and the script.
pub fn layout(title: &str, actor: &str, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body data-actor=(actor) {
                header.top {
                    a.brand href="/" { "strangler" }
                    span.where { (title) }
                    span.who { "signed in as " strong #actor { (actor) } }
                    button #logout type="button" { "Sign out" }
                }
                div #notice role="status" hidden {}
                (main)
            }
        }
    }
}

/// The login form; with `#token=...` in the address the script fills the token in.
pub fn login() -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Sign in"))
            body.login {
                form #login {
                    h1 { "strangler" }
                    p { "The admin token is in " code { "$STRANGLER_ADMIN_TOKEN" } " or the token file beside the state store." }
                    label { "Admin token" input #token name="token" type="password" autocomplete="off" required; }
                    label { "Your name (the audit log records it)" input #actor-name name="actor" type="text" required; }
                    button type="submit" { "Sign in" }
                    p #login-error.error role="alert" hidden {}
                }
            }
        }
    }
}

fn stage_badge(route: &str, stage: Stage) -> Markup {
    html! {
        span.stage data-route=(route) data-stage=(stage.name()) { (stage.to_string()) }
    }
}

/// The buttons that move a route; each asks for confirmation first.
fn controls(route: &str, stage: Stage) -> Markup {
    let percent = match stage {
        Stage::Canary { percent } => percent.saturating_mul(2).clamp(5, 100),
        _ => 10,
    };
    html! {
        div.controls data-route=(route) {
            button.act type="button" data-move="shadow" { "Shadow" }
            span.canary {
                input.percent type="number" min="0" max="100" value=(percent) aria-label={ "canary percent for " (route) };
                button.act type="button" data-move="canary" { "Canary %" }
            }
            button.act type="button" data-move="cutover" { "Promote to cutover" }
            button.act.rollback type="button" data-move="rollback" { "Roll back" }
        }
    }
}

fn error_rate(errors: u64, served: u64) -> String {
    if served == 0 {
        return "–".to_string();
    }
    format!("{errors} ({:.2} %)", errors as f64 / served as f64 * 100.0)
}

fn verdicts(row: &RouteRow) -> Markup {
    html! {
        @if let Some(gate) = &row.gate {
            @match gate.refusal() {
                None => span.verdict.pass { "gate open" },
                Some(why) => span.verdict.fail title=(why) { "gate closed" },
            }
        }
        @for check in &row.checks {
            @let class = match check.passed { Some(true) => "pass", Some(false) => "fail", None => "none" };
            span class={ "verdict " (class) } title=(check.detail) { (check.metric) }
        }
    }
}

fn rollout(row: &RouteRow) -> Markup {
    html! {
        @if let Some(r) = &row.rollout {
            span.rollout title=(r.message) { "step " (r.step + 1) " · " (r.state.as_str()) }
        } @else {
            "–"
        }
    }
}

fn charts(row: &RouteRow, now_ms: i64) -> Markup {
    let legacy_errors = |p: &Point| p.error_rate_legacy.map(|r| r * 100.0);
    let new_errors = |p: &Point| p.error_rate_new.map(|r| r * 100.0);
    let legacy_p99 = |p: &Point| p.p99_legacy_ms;
    let new_p99 = |p: &Point| p.p99_new_ms;
    let matched = |p: &Point| p.match_rate.map(|r| r * 100.0);
    html! {
        div.charts {
            (chart("match rate %, last hour", &row.points, now_ms, Some(100.0), &[Series { class: "match", value: &matched }]))
            (chart("error rate % (legacy, new)", &row.points, now_ms, None, &[
                Series { class: "legacy", value: &legacy_errors },
                Series { class: "new", value: &new_errors },
            ]))
            (chart("p99 ms (legacy, new)", &row.points, now_ms, None, &[
                Series { class: "legacy", value: &legacy_p99 },
                Series { class: "new", value: &new_p99 },
            ]))
        }
    }
}

fn figures(row: &RouteRow) -> Markup {
    let c = &row.counters;
    let (legacy_p50, legacy_p99) = RouteRow::latency(&c.latency_legacy);
    let (new_p50, new_p99) = RouteRow::latency(&c.latency_new);
    let p = row.stage.percent_new();
    let compared = row.run.as_ref().map(|r| r.count(ShadowMetric::Compared));
    html! {
        td { (100 - p) " / " (p) }
        td.num { (c.requests) }
        td.num { (c.served_legacy) " / " (c.served_new) }
        td.num { (error_rate(c.errors_legacy, c.served_legacy)) br; (error_rate(c.errors_new, c.served_new)) }
        td.num.match-rate { (percent(row.match_rate())) @if let Some(n) = compared { br; small { (n) " compared" } } }
        td.num { (millis(legacy_p50)) " / " (millis(legacy_p99)) }
        td.num { (millis(new_p50)) " / " (millis(new_p99)) }
        td { (rollout(row)) }
        td.verdicts { (verdicts(row)) }
    }
}

fn figure_headings() -> Markup {
    html! {
        th { "Legacy / new %" } th { "Requests" } th { "Served legacy / new" }
        th { "5xx legacy" br; "5xx new" } th { "Match rate (current run)" }
        th { "Legacy p50 / p99" } th { "New p50 / p99" } th { "Rollout" } th { "Verdicts" }
    }
}

fn store_note(error: Option<&str>) -> Markup {
    html! {
        @if let Some(why) = error {
            p.warning role="alert" { (why) }
        }
    }
}

fn audit_table(entries: &[AuditEntry]) -> Markup {
    html! {
        @if entries.is_empty() {
            p.empty { "No stage change yet." }
        } @else {
            table.audit {
                thead { tr { th { "At" } th { "Route" } th { "Change" } th { "Actor" } th { "Reason" } th { "Generation" } } }
                tbody {
                    @for e in entries {
                        tr {
                            td { (e.at) } td { (e.route) }
                            td { (e.from) " → " (e.to) @if e.forced { " " span.forced { "forced" } } }
                            td.actor { (e.actor) } td { (e.reason.as_deref().unwrap_or("")) } td.num { (e.generation) }
                        }
                    }
                }
            }
        }
    }
}

/// The overview's live part: every route, link, proxy and the audit log.
pub fn overview(o: &Overview) -> Markup {
    html! {
        main #live data-live="overview" {
            p.fleet {
                "Proxy " code { (o.proxy_id) } " serves generation " strong #generation { (o.generation) }
                @if let Some(g) = o.store_generation { " (store: " (g) ")" }
                " · updated " (timestamp(o.now_ms))
            }
            (store_note(o.store_error.as_deref()))
            h2 { "Routes" }
            p.note { "Requests, errors and latency are this proxy's since it started; the match rate and verdicts are the fleet's current analysis run. Charts: one point every 10 s over the last hour." }
            table.routes {
                thead { tr { th { "Route" } th { "Stage" } (figure_headings()) } }
                tbody {
                    @for row in &o.routes {
                        tr.route id={ "route-" (row.name) } {
                            td { a href={ "/routes/" (row.name) } { (row.name) } br; small { "→ " (row.service) } }
                            td { (stage_badge(&row.name, row.stage)) }
                            (figures(row))
                        }
                        tr.chart-row data-route=(row.name) {
                            td colspan="11" { div.row-extra { (charts(row, o.now_ms)) (controls(&row.name, row.stage)) } }
                        }
                    }
                }
            }
            h2 { "Sync links" }
            @if o.links.is_empty() {
                p.empty { "No sync link has reported progress." }
            } @else {
                table.links {
                    thead { tr { th { "Link" } th { "Checkpoint / head" } th { "Lag" } th { "Applied" } th { "Rejected" } th { "Last error" } } }
                    tbody {
                        @for l in &o.links {
                            tr {
                                td { (l.link) } td.num { (l.checkpoint) " / " (l.head) }
                                td.num { (l.lag_events()) " events, " (format!("{:.1}", l.lag_seconds)) " s" }
                                td.num { (l.applied) } td.num { (l.rejected) }
                                td { (l.last_error.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
            h2 { "Live proxies" }
            @if o.proxies.is_empty() {
                p.empty { "No live proxy registered." }
            } @else {
                table.proxies {
                    thead { tr { th { "Proxy" } th { "Listen" } th { "Admin" } th { "Generation" } th { "Heartbeat" } } }
                    tbody {
                        @for p in &o.proxies {
                            @let behind = o.store_generation.is_some_and(|g| p.generation < g);
                            tr {
                                td { code { (p.id) } } td { (p.listen) } td { (p.admin) }
                                td.num { (p.generation) @if behind { " " span.verdict.fail { "behind" } } }
                                td { (ago(o.now_ms, p.heartbeat_ms)) }
                            }
                        }
                    }
                }
            }
            h2 { "Audit log" }
            (audit_table(&o.audit))
        }
    }
}

fn sample_view(s: &SampleView) -> Markup {
    html! {
        details.sample id=(s.anchor) {
            summary {
                span.method { (s.method) } " " span.uri { (s.uri) }
                " · " code { (s.path) } " · " small { (s.source) }
            }
            div.sample-body {
                @if let Some(headers) = &s.request_headers {
                    h4 { "Request headers" @if !s.redacted.is_empty() { " " small { "(redacted: " (s.redacted.join(", ")) ")" } } }
                    table.headers { tbody { @for (k, v) in headers { tr { td { (k) } td { (v) } } } } }
                }
                @if let Some(error) = &s.error {
                    p.shadow-error { (error) }
                }
                @if let Some((legacy, new)) = &s.answers {
                    div.sides {
                        div.side {
                            h4 { "Legacy · status " (legacy.status) }
                            pre { @for (line, changed) in &legacy.lines { span.line.del[*changed] { (line) } "\n" } }
                        }
                        div.side {
                            h4 { "New · status " (new.status) }
                            pre { @for (line, changed) in &new.lines { span.line.ins[*changed] { (line) } "\n" } }
                        }
                    }
                }
                @if !s.differences.is_empty() {
                    table.differences {
                        thead { tr { th { "Path" } th { "Kind" } th { "Legacy" } th { "New" } } }
                        tbody { @for d in &s.differences { tr { td { code { (d.path) } } td { (d.kind) } td { (d.left) } td { (d.right) } } } }
                    }
                }
            }
        }
    }
}

/// A route's page: its figures, charts, verdicts, differing paths and samples.
pub fn route(d: &RouteDetail) -> Markup {
    let row = &d.row;
    let mut samples: Vec<SampleView> = d
        .captures
        .iter()
        .rev()
        .map(|c| sample::from_case(c.id, &c.path, &c.case))
        .collect();
    samples.extend(
        d.summary
            .samples
            .iter()
            .enumerate()
            .rev()
            .map(|(i, (path, s))| sample::from_sample(i, path, s)),
    );
    samples.truncate(SAMPLES_SHOWN);
    html! {
        main #live data-route=(row.name) {
            h1 { (row.name) " " (stage_badge(&row.name, row.stage)) " " small { "→ " (row.service) } }
            (controls(&row.name, row.stage))
            (store_note(d.store_error.as_deref()))
            table.routes {
                thead { tr { (figure_headings()) } }
                tbody { tr { (figures(row)) } }
            }
            (charts(row, d.now_ms))
            @if let Some(why) = row.gate.as_ref().and_then(|g| g.refusal()) {
                p.gate-reason { "The cutover gate is closed: " (why) }
            }
            h2 { "Analysis runs" }
            table.runs {
                thead { tr { th { "Run" } th { "Stage" } th { "Started" } th { "Ended" } th { "Compared" } th { "Mismatched" } th { "Shadow errors" } th { "Verdict" } } }
                tbody {
                    @for r in d.runs.iter().rev() {
                        tr {
                            td.num { (r.id) } td { (r.stage) } td { (r.started_at) } td { (r.ended_at.as_deref().unwrap_or("running")) }
                            td.num { (r.count(ShadowMetric::Compared)) } td.num { (r.count(ShadowMetric::Mismatched)) }
                            td.num { (r.count(ShadowMetric::Errors)) } td { (r.verdict.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
            h2 { "Differing paths" }
            @if d.summary.paths.is_empty() {
                p.empty { "No difference recorded." }
            } @else {
                table.paths {
                    thead { tr { th { "Path" } th { "Kind" } th { "Count" } th { "Noise" } } }
                    tbody {
                        @for (path, kind, noisy, count) in &d.summary.paths {
                            tr.noisy[*noisy] {
                                td { code { (path) } } td { (kind) } td.num { (count) }
                                td { @if *noisy { span.noise { "noise" } } }
                            }
                        }
                    }
                }
            }
            h2 { "Samples" }
            @if samples.is_empty() {
                p.empty { "No sample kept yet." }
            }
            @for s in &samples { (sample_view(s)) }
            h2 { "Audit log" }
            (audit_table(&d.audit))
        }
    }
}

pub fn unknown_route(route: &str, known: &[String]) -> Markup {
    html! {
        main #live {
            h1 { "No route " code { (route) } }
            p { "Routes: " @for (i, k) in known.iter().enumerate() { @if i > 0 { ", " } a href={ "/routes/" (k) } { (k) } } }
        }
    }
}
