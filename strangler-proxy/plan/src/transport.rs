//! The edge's transport settings: TLS on the listener (`[proxy] tls`) and the protocol a
//! service is spoken to in (`protocol`, `ca`).

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

/// `[proxy] tls = { cert = "cert.pem", key = "key.pem" }` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

/// The listener's certificate chain and private key (PEM files, relative paths resolved
/// against the plan's directory). Read at start and whenever either file changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How the proxy speaks to a service's instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 over `http://` (the default).
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge over `http://` (cleartext, what gRPC servers speak).
    H2c,
    /// HTTP/2 over TLS (`https://`), the certificate verified against the webpki roots and
    /// the service's `ca` file.
    H2,
}

impl UpstreamProtocol {
    /// The plan's spelling.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "http1" => Some(Self::Http1),
            "h2c" => Some(Self::H2c),
            "h2" => Some(Self::H2),
            _ => None,
        }
    }

    /// The URL scheme its instances are listed with.
    pub fn scheme(self) -> &'static str {
        match self {
            Self::Http1 | Self::H2c => "http",
            Self::H2 => "https",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http1 => "http1",
            Self::H2c => "h2c",
            Self::H2 => "h2",
        }
    }
}

impl fmt::Display for UpstreamProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::file::parse;

    const BASE: &str = r#"[proxy]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:8081"
state = "data/strangler.db"
"#;

    fn plan(proxy: &str, service: &str) -> Result<crate::Plan, crate::PlanError> {
        parse(
            Path::new("/etc/strangler/plan.toml"),
            &format!(
                "{BASE}{proxy}\n[services.legacy]\nurls = [\"http://127.0.0.1:7000\"]\nlegacy = true\n\n[services.grpc]\n{service}\n"
            ),
        )
    }

    #[test]
    fn tls_files_resolve_against_the_plan_and_protocols_default_to_http1() {
        let p = plan(
            "tls = { cert = \"tls/cert.pem\", key = \"/keys/key.pem\" }",
            "urls = [\"http://127.0.0.1:50051\"]\nprotocol = \"h2c\"",
        )
        .unwrap();
        assert_eq!(
            p.proxy.tls,
            Some(TlsFiles {
                cert: "/etc/strangler/tls/cert.pem".into(),
                key: "/keys/key.pem".into(),
            })
        );
        assert_eq!(p.services["grpc"].protocol, UpstreamProtocol::H2c);
        assert_eq!(p.services["legacy"].protocol, UpstreamProtocol::Http1);
        let h2 = plan(
            "",
            "urls = [\"https://127.0.0.1:8443\"]\nprotocol = \"h2\"\nca = \"ca.pem\"",
        )
        .unwrap();
        assert_eq!(h2.proxy.tls, None);
        assert_eq!(
            h2.services["grpc"].ca.as_deref(),
            Some(Path::new("/etc/strangler/ca.pem"))
        );
    }

    #[test]
    fn bad_edge_settings_name_their_line_and_field() {
        for (proxy, service, line, field, words) in [
            (
                "tls = { cert = \"\", key = \"k.pem\" }",
                "urls = [\"http://127.0.0.1:1\"]",
                5,
                "proxy.tls.cert",
                "file",
            ),
            (
                "tls = { cert = \"c.pem\" }",
                "urls = [\"http://127.0.0.1:1\"]",
                5,
                "",
                "missing field `key`",
            ),
            (
                "",
                "urls = [\"http://127.0.0.1:1\"]\nprotocol = \"http3\"",
                12,
                "services.grpc.protocol",
                "\"h2c\"",
            ),
            (
                "",
                "urls = [\"http://127.0.0.1:1\"]\nprotocol = \"h2\"",
                11,
                "services.grpc.urls[0]",
                "https://",
            ),
            (
                "",
                "urls = [\"https://127.0.0.1:1\"]",
                11,
                "services.grpc.urls[0]",
                "http://",
            ),
            (
                "",
                "urls = [\"http://127.0.0.1:1\"]\nca = \"ca.pem\"",
                12,
                "services.grpc.ca",
                "protocol = \"h2\"",
            ),
        ] {
            let err = plan(proxy, service).unwrap_err();
            assert_eq!(
                (err.line, err.field.as_str()),
                (line, field),
                "{proxy}/{service} → {err}"
            );
            assert!(err.message.contains(words), "{proxy}/{service} → {err}");
        }
    }
}
