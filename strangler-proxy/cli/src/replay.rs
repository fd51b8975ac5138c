//! `strangler replay DIR --against URL`: sends each captured request of a bundle again and
//! compares the answer with the monolith's (as captured, or from a live `--legacy`) under
//! the route's comparison rules. One result per case, as text, JSON or JUnit XML; exit 0
//! when every case matches, 1 when one does not (or got no answer).
//!
//! Writes carry `x-strangler-dry-run: 1`, the header the shadow leg sends, so a service
//! that honours it rolls them back.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use strangler_dataplane::capture::{Capturing, Case, Exchange};
use strangler_dataplane::routing::compile_rules;
use strangler_dataplane::shadow::error_chain;
use strangler_diff::{self as diff, Answer, Difference, Rules};
use strangler_plan::CaptureSpec;

use crate::bundle::{self, Bundle};
use crate::cli::{CliError, EXIT_FAILED, EXIT_USAGE};

/// The header that asks a participant to execute a write and roll it back.
const DRY_RUN: &str = "x-strangler-dry-run";
/// Largest answer read from a service.
const MAX_ANSWER: usize = 16 << 20;

/// How the report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplayFormat {
    Text,
    Json,
    Junit,
}

/// What `strangler replay` is asked.
#[derive(Debug, clap::Args)]
pub struct Replay {
    /// A bundle written by `strangler capture export`.
    pub dir: std::path::PathBuf,
    /// The service to check, e.g. a local build: http://127.0.0.1:7101.
    #[arg(long)]
    pub against: String,
    /// Compare with a live monolith's answers instead of the captured ones.
    #[arg(long)]
    pub legacy: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReplayFormat,
    /// Write the report to this file instead of standard output.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// A header set on every request, `NAME: VALUE` (one the capture redacted, say).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// How long each request may take.
    #[arg(long, default_value = "10s", value_parser = crate::cli::parse_wait)]
    pub timeout: Duration,
}

/// One case's result.
struct Outcome {
    name: String,
    method: String,
    uri: String,
    /// The monolith's status and the service's (if it answered).
    statuses: (Option<u16>, Option<u16>),
    differences: Vec<Difference>,
    /// Why there was nothing to compare.
    error: Option<String>,
}

impl Outcome {
    fn passed(&self) -> bool {
        self.error.is_none() && self.differences.is_empty()
    }
}

fn usage(message: String) -> CliError {
    CliError {
        code: EXIT_USAGE,
        message,
    }
}

/// An `http(s)://host[:port][/prefix]` base URL, without its trailing slash.
fn base_url(flag: &str, raw: &str) -> Result<String, CliError> {
    let url = reqwest::Url::parse(raw).map_err(|err| {
        usage(format!(
            "{flag} `{raw}` is not a URL ({err}); give one like http://127.0.0.1:8080"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(usage(format!(
            "{flag} `{raw}` must be an http:// or https:// URL with a host"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(usage(format!(
            "{flag} `{raw}` must not have a query or fragment: the case's URI is added to it"
        )));
    }
    Ok(raw.trim_end_matches('/').to_string())
}

fn extra_headers(raw: &[String]) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, CliError> {
    raw.iter()
        .map(|h| {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| usage(format!("--header `{h}` must be NAME: VALUE")))?;
            let name = http::HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                usage(format!(
                    "--header `{h}`: `{}` is not a header name",
                    name.trim()
                ))
            })?;
            let value = http::HeaderValue::from_str(value.trim())
                .map_err(|_| usage(format!("--header `{h}`: the value is not a header value")))?;
            Ok((name, value))
        })
        .collect()
}

/// Runs the replay; the report goes to `out` or standard output.
pub async fn run(replay: Replay) -> Result<(), CliError> {
    let against = base_url("--against", &replay.against)?;
    let legacy = replay
        .legacy
        .as_deref()
        .map(|l| base_url("--legacy", l))
        .transpose()?;
    let headers = extra_headers(&replay.headers)?;
    let Bundle { index, cases } = bundle::read(&replay.dir)?;
    // Checked by `bundle::read`.
    let rules = compile_rules(&index.compare.spec().map_err(usage)?);
    let redaction = Capturing::new(&CaptureSpec {
        mismatches: 1,
        redact: index.redactions().map_err(usage)?,
    });
    let client = reqwest::Client::builder()
        .timeout(replay.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|err| CliError::failed(format!("cannot make an HTTP client: {err}")))?;
    let mut outcomes = Vec::with_capacity(cases.len());
    for (name, file) in &cases {
        let target = Target {
            client: &client,
            headers: &headers,
            redaction: &redaction,
        };
        outcomes.push(
            replay_one(
                &target,
                name,
                &file.case,
                &against,
                legacy.as_deref(),
                &rules,
            )
            .await,
        );
    }
    let report = match replay.format {
        ReplayFormat::Text => text(&index.route, &against, &outcomes),
        ReplayFormat::Json => {
            let mut out = serde_json::to_string_pretty(&json_report(
                &index.route,
                &against,
                legacy.as_deref(),
                &outcomes,
            ))
            .unwrap_or_default();
            out.push('\n');
            out
        }
        ReplayFormat::Junit => junit(&index.route, &outcomes),
    };
    match &replay.out {
        Some(path) => std::fs::write(path, &report)
            .map_err(|err| CliError::failed(format!("cannot write {}: {err}", path.display())))?,
        None => crate::say_raw!("{report}"),
    }
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    if failed == 0 {
        Ok(())
    } else {
        Err(CliError {
            code: EXIT_FAILED,
            // The report says which; under --out, one line says how many.
            message: if replay.out.is_some() {
                format!("{failed} of {} cases differ", outcomes.len())
            } else {
                String::new()
            },
        })
    }
}

/// Where requests go, what every one carries, and what is taken out of every answer.
struct Target<'a> {
    client: &'a reqwest::Client,
    headers: &'a [(http::HeaderName, http::HeaderValue)],
    redaction: &'a Capturing,
}

async fn replay_one(
    target: &Target<'_>,
    name: &str,
    case: &Case,
    against: &str,
    legacy: Option<&str>,
    rules: &Rules,
) -> Outcome {
    let mut outcome = Outcome {
        name: name.to_string(),
        method: case.request.method.clone(),
        uri: case.request.uri.clone(),
        statuses: (None, None),
        differences: Vec::new(),
        error: None,
    };
    let expected = match legacy {
        Some(base) => send(target, case, base)
            .await
            .map_err(|e| format!("legacy: {e}")),
        None => case
            .legacy
            .answer()
            .ok_or_else(|| "the case's legacy body is not valid base64".to_string()),
    };
    let got = send(target, case, against).await;
    match (expected, got) {
        (Ok(expected), Ok(got)) => {
            outcome.statuses = (Some(expected.status), Some(got.status));
            outcome.differences = diff::compare(&expected, &got, rules);
        }
        (Err(e), got) => {
            outcome.statuses.1 = got.as_ref().ok().map(|a| a.status);
            outcome.error = Some(e);
        }
        (Ok(expected), Err(e)) => {
            outcome.statuses.0 = Some(expected.status);
            outcome.error = Some(e);
        }
    }
    outcome
}

/// Sends the case's request to `base` and reads the answer.
async fn send(target: &Target<'_>, case: &Case, base: &str) -> Result<Answer, String> {
    let method = http::Method::from_bytes(case.request.method.as_bytes())
        .map_err(|_| format!("`{}` is not an HTTP method", case.request.method))?;
    let body = case
        .request
        .body
        .to_bytes()
        .ok_or_else(|| "the case's request body is not valid base64".to_string())?;
    let url = format!("{base}{}", case.request.uri);
    let mut request = target.client.request(method.clone(), &url);
    for (k, v) in &case.request.headers {
        // The client sets these for the connection it makes.
        if matches!(
            k.as_str(),
            "host" | "content-length" | "connection" | "transfer-encoding"
        ) {
            continue;
        }
        request = request.header(k.as_str(), v.as_str());
    }
    if !matches!(
        method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    ) {
        request = request.header(DRY_RUN, "1");
    }
    for (k, v) in target.headers {
        request = request.header(k, v);
    }
    let response = request
        .body(body)
        .send()
        .await
        .map_err(|err| error_chain(&err))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = Vec::new();
    let mut response = response;
    while let Some(chunk) = response.chunk().await.map_err(|err| error_chain(&err))? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(format!("{url}: answer over {} MiB", MAX_ANSWER >> 20));
        }
        body.extend_from_slice(&chunk);
    }
    // Taken out as the captured answers had it taken out, so the two compare.
    let mut kept = Exchange::of(&Answer {
        status,
        headers,
        body: body.into(),
    });
    target.redaction.redact_exchange(&mut kept);
    kept.answer()
        .ok_or_else(|| format!("{url}: an answer that cannot be kept"))
}

fn text(route: &str, against: &str, outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    for o in outcomes {
        if o.passed() {
            let _ = writeln!(out, "PASS {} {} {}", o.name, o.method, o.uri);
            continue;
        }
        match &o.error {
            Some(error) => {
                let _ = writeln!(out, "FAIL {} {} {}: {error}", o.name, o.method, o.uri);
            }
            None => {
                let _ = writeln!(
                    out,
                    "FAIL {} {} {}: {} difference{}",
                    o.name,
                    o.method,
                    o.uri,
                    o.differences.len(),
                    if o.differences.len() == 1 { "" } else { "s" }
                );
                for line in diff::render_text(&o.differences).lines() {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
    }
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    let _ = writeln!(
        out,
        "{route} against {against}: {} cases, {} passed, {failed} failed",
        outcomes.len(),
        outcomes.len() - failed
    );
    out
}

fn json_report(route: &str, against: &str, legacy: Option<&str>, outcomes: &[Outcome]) -> Value {
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    json!({
        "route": route,
        "against": against,
        "legacy": legacy.unwrap_or("captured"),
        "passed": outcomes.len() - failed,
        "failed": failed,
        "cases": outcomes.iter().map(|o| json!({
            "case": o.name,
            "method": o.method,
            "uri": o.uri,
            "passed": o.passed(),
            "status": { "legacy": o.statuses.0, "new": o.statuses.1 },
            "differences": o.differences,
            "error": o.error,
        })).collect::<Vec<_>>(),
    })
}

/// Text safe in XML content and attributes.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot hold at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn junit(route: &str, outcomes: &[Outcome]) -> String {
    let failures = outcomes
        .iter()
        .filter(|o| o.error.is_none() && !o.differences.is_empty())
        .count();
    let errors = outcomes.iter().filter(|o| o.error.is_some()).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuite name=\"strangler replay {}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\">",
        xml(route),
        outcomes.len()
    );
    for o in outcomes {
        let _ = write!(
            out,
            "  <testcase classname=\"strangler.replay.{}\" name=\"{} {} {}\"",
            xml(route),
            xml(&o.name),
            xml(&o.method),
            xml(&o.uri)
        );
        match (&o.error, o.differences.is_empty()) {
            (None, true) => out.push_str("/>\n"),
            (Some(error), _) => {
                let _ = writeln!(
                    out,
                    ">\n    <error message=\"{}\"/>\n  </testcase>",
                    xml(error)
                );
            }
            (None, false) => {
                let _ = writeln!(
                    out,
                    ">\n    <failure message=\"{} differences\">{}</failure>\n  </testcase>",
                    o.differences.len(),
                    xml(&diff::render_text(&o.differences))
                );
            }
        }
    }
    out.push_str("</testsuite>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_headers_are_checked() {
        assert_eq!(
            base_url("--against", "http://127.0.0.1:7101/").unwrap(),
            "http://127.0.0.1:7101"
        );
        assert_eq!(
            base_url("--against", "https://svc.local/api").unwrap(),
            "https://svc.local/api"
        );
        for bad in ["127.0.0.1:7101", "ftp://host", "not a url", "http://h/?q=1"] {
            let err = base_url("--against", bad).unwrap_err();
            assert_eq!(err.code, EXIT_USAGE, "{bad}");
            assert!(err.message.starts_with("--against"), "{}", err.message);
        }
        assert!(extra_headers(&["authorization: Bearer x".into()]).is_ok());
        assert_eq!(
            extra_headers(&["nocolon".into()]).unwrap_err().code,
            EXIT_USAGE
        );
        assert_eq!(
            extra_headers(&["bad name: x".into()]).unwrap_err().code,
            EXIT_USAGE
        );
    }

    #[test]
    fn xml_is_escaped_and_control_characters_replaced() {
        assert_eq!(xml("a<b>&\"'\u{1}"), "a&lt;b&gt;&amp;&quot;&apos;\u{fffd}");
    }
}
