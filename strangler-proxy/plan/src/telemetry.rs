//! The `[telemetry]` section: where a proxy exports its request spans (OpenTelemetry, OTLP
//! over HTTP with protobuf), which share of new traces it samples, and the name it reports.
//! Without the section a proxy exports nothing and leaves trace headers as they come.

use serde::Deserialize;
use toml::Spanned;

/// Name a proxy reports as `service.name` when the plan sets none.
pub const DEFAULT_SERVICE_NAME: &str = "strangler";

/// Where and how request spans are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySpec {
    /// The collector's base URL (`http://127.0.0.1:4318`, plain http); spans go to
    /// `/v1/traces` under it.
    pub otlp_endpoint: String,
    /// Share of traces started here that are sampled (0.0 to 1.0). A request that brings a
    /// `traceparent` follows its sampled flag instead.
    pub sample: f64,
    /// The `service.name` resource attribute of the exported spans.
    pub service_name: String,
}

impl TelemetrySpec {
    /// Where spans are posted: the endpoint's `/v1/traces`.
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.otlp_endpoint.trim_end_matches('/'))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTelemetry {
    pub otlp_endpoint: Spanned<String>,
    pub sample: Option<Spanned<String>>,
    pub service_name: Option<Spanned<String>>,
}

/// Reads `otlp_endpoint`: an `http://` URL with a host and no query. Spans go in the clear,
/// to a collector or agent beside the proxy (the exporter is built without TLS).
pub(crate) fn parse_endpoint(raw: &str) -> Result<String, String> {
    let bad = || format!("`{raw}` is not a collector URL like http://127.0.0.1:4318");
    let uri: http::Uri = raw.parse().map_err(|_| bad())?;
    if uri.scheme_str() == Some("https") {
        return Err(format!(
            "`{raw}`: spans are sent over plain http; run a collector or agent beside the proxy (http://127.0.0.1:4318) that forwards them over TLS"
        ));
    }
    if uri.scheme_str() != Some("http")
        || uri.host().is_none_or(str::is_empty)
        || uri.query().is_some()
    {
        return Err(bad());
    }
    Ok(raw.trim_end_matches('/').to_string())
}

/// Reads `sample`: a percentage (`"10%"`, `"0.5%"`, `"100%"`).
pub(crate) fn parse_sample(raw: &str) -> Result<f64, String> {
    raw.trim()
        .strip_suffix('%')
        .and_then(|n| n.trim().parse::<f64>().ok())
        .filter(|n| (0.0..=100.0).contains(n))
        .map(|n| n / 100.0)
        .ok_or_else(|| format!("`{raw}` is not a share like \"10%\" (0% to 100%)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_percentages() {
        assert_eq!(parse_sample("10%"), Ok(0.1));
        assert_eq!(parse_sample("100%"), Ok(1.0));
        assert_eq!(parse_sample(" 0.5 %"), Ok(0.005));
        for bad in ["10", "101%", "-1%", "ten%", "%"] {
            assert!(parse_sample(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoints_are_http_urls() {
        assert_eq!(
            parse_endpoint("http://127.0.0.1:4318/").as_deref(),
            Ok("http://127.0.0.1:4318")
        );
        for bad in [
            "127.0.0.1:4318",
            "ftp://x",
            "http://",
            "http://h/?a=1",
            "not a url",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }
}
