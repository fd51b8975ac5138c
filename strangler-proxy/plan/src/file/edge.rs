//! Reading and checking the `[edge]` section, a route's `public` and `rate_limit`, and a
//! sidecar's policy file (nothing but `[edge]`). Key files are read and decoded here, so a
//! missing or malformed key is a `file:line` error before anything serves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, Uri};
use serde::Deserialize;
use toml::Spanned;

use super::{Ctx, PlanError};
use crate::edge::{
    Algorithm, AuthSpec, DEFAULT_JWKS_MIN_GAP, DEFAULT_JWKS_REFRESH, DEFAULT_LEEWAY,
    DEFAULT_MAX_KEYS, EdgeSpec, JwksSpec, KeySpec, RateKey, RateLimitSpec, RouteEdge,
};

/// Shortest HS256 secret accepted (RFC 7518 §3.2: a key as long as the hash).
const MIN_SECRET_BYTES: usize = 32;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEdge {
    auth: Option<Spanned<RawAuth>>,
    rate_limit: Option<Spanned<RawRateLimit>>,
    /// Read by [`crate::cache`]; a sidecar has no cache.
    pub(super) cache: Option<Spanned<crate::cache::RawCacheDefaults>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    issuer: Option<Spanned<String>>,
    audience: Option<Spanned<OneOrMany>>,
    leeway: Option<Spanned<String>>,
    #[serde(default)]
    keys: Vec<Spanned<RawKey>>,
    jwks_url: Option<Spanned<String>>,
    jwks_refresh: Option<Spanned<String>>,
    jwks_ca: Option<Spanned<String>>,
    #[serde(default)]
    claims: BTreeMap<String, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    kid: Option<String>,
    algorithm: Spanned<String>,
    file: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    rate: Spanned<String>,
    burst: Option<Spanned<i64>>,
    key: Option<Spanned<String>>,
    max_keys: Option<Spanned<i64>>,
}

/// A route's `rate_limit` table, read from a `toml::Value` (which keeps no spans: its
/// errors point at the table).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainRateLimit {
    rate: String,
    burst: Option<i64>,
    key: Option<String>,
    max_keys: Option<i64>,
}

impl PlainRateLimit {
    fn spanned(self, span: &std::ops::Range<usize>) -> RawRateLimit {
        let at = |v: i64| Spanned::new(span.clone(), v);
        RawRateLimit {
            rate: Spanned::new(span.clone(), self.rate),
            burst: self.burst.map(at),
            key: self.key.map(|k| Spanned::new(span.clone(), k)),
            max_keys: self.max_keys.map(at),
        }
    }
}

/// A sidecar's policy file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    edge: Option<Spanned<RawEdge>>,
}

/// Reads a sidecar's policy file: an `[edge]` section and nothing else.
pub fn load_policy(file: &Path) -> Result<EdgeSpec, PlanError> {
    parse_policy(file, &super::read_text(file, "the policy file")?)
}

/// Checks policy `text`, naming `file` in errors (key files are relative to its folder).
pub fn parse_policy(file: &Path, text: &str) -> Result<EdgeSpec, PlanError> {
    let ctx = Ctx { file, text };
    let raw: RawPolicy = ctx.deserialize()?;
    match &raw.edge {
        None => Ok(EdgeSpec::default()),
        Some(edge) => {
            if let Some(cache) = &edge.get_ref().cache {
                return Err(ctx.at(
                    cache,
                    "edge.cache",
                    "a sidecar has no response cache; only [edge.auth] and [edge.rate_limit] apply",
                ));
            }
            ctx.edge(edge.get_ref())
        }
    }
}

impl Ctx<'_> {
    fn dir(&self) -> PathBuf {
        self.file.parent().unwrap_or(Path::new(".")).to_path_buf()
    }

    pub(super) fn edge(&self, raw: &RawEdge) -> Result<EdgeSpec, PlanError> {
        let auth = match &raw.auth {
            None => None,
            Some(auth) => Some(self.auth(auth)?),
        };
        let rate_limit = match &raw.rate_limit {
            None => None,
            Some(limit) => Some(self.rate_limit(limit.get_ref(), "edge.rate_limit")?),
        };
        Ok(EdgeSpec { auth, rate_limit })
    }

    fn auth(&self, spanned: &Spanned<RawAuth>) -> Result<AuthSpec, PlanError> {
        let raw = spanned.get_ref();
        let f = |name: &str| format!("edge.auth.{name}");
        let leeway = match &raw.leeway {
            None => DEFAULT_LEEWAY,
            Some(l) if l.get_ref().trim() == "0s" => Duration::ZERO,
            Some(l) => self.duration(l, &f("leeway"))?,
        };
        let audience = match raw.audience.as_ref().map(Spanned::get_ref) {
            None => Vec::new(),
            Some(OneOrMany::One(one)) => vec![one.clone()],
            Some(OneOrMany::Many(many)) => many.clone(),
        };
        let mut keys = Vec::new();
        for (i, key) in raw.keys.iter().enumerate() {
            keys.push(self.key(key.get_ref(), &f(&format!("keys[{i}]")))?);
        }
        let jwks = match &raw.jwks_url {
            None => None,
            Some(url) => {
                let parsed = url
                    .get_ref()
                    .parse::<Uri>()
                    .ok()
                    .filter(|u| {
                        matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
                    })
                    .ok_or_else(|| {
                        self.at(
                            url,
                            &f("jwks_url"),
                            "must be an http:// or https:// URL like \
                             https://id.example.com/.well-known/jwks.json",
                        )
                    })?;
                let ca = match &raw.jwks_ca {
                    None => None,
                    Some(ca) => Some(self.certificate_file(ca, &f("jwks_ca"))?),
                };
                let refresh = match &raw.jwks_refresh {
                    None => DEFAULT_JWKS_REFRESH,
                    Some(r) => self.duration(r, &f("jwks_refresh"))?,
                };
                Some(JwksSpec {
                    url: parsed,
                    ca,
                    refresh,
                    min_gap: DEFAULT_JWKS_MIN_GAP.min(refresh),
                })
            }
        };
        if let (None, Some(r)) = (&raw.jwks_url, &raw.jwks_refresh) {
            return Err(self.at(r, &f("jwks_refresh"), "needs a jwks_url"));
        }
        if let (None, Some(ca)) = (&raw.jwks_url, &raw.jwks_ca) {
            return Err(self.at(ca, &f("jwks_ca"), "needs a jwks_url"));
        }
        if keys.is_empty() && jwks.is_none() {
            return Err(self.at(
                spanned,
                "edge.auth",
                "needs keys (keys = [{ algorithm = \"RS256\", file = \"...\" }]) or a jwks_url",
            ));
        }
        let mut claims = Vec::new();
        for (claim, header) in &raw.claims {
            let name = HeaderName::from_bytes(header.get_ref().as_bytes())
                .ok()
                .filter(|h| !is_reserved(h))
                .ok_or_else(|| {
                    self.at(
                        header,
                        &f(&format!("claims.{claim}")),
                        format!(
                            "`{}` is not a header the proxy can set (a header name, not Host, \
                             Authorization or a hop-by-hop header)",
                            header.get_ref()
                        ),
                    )
                })?;
            claims.push((claim.clone(), name));
        }
        Ok(AuthSpec {
            issuer: raw.issuer.as_ref().map(|i| i.get_ref().clone()),
            audience,
            leeway,
            keys,
            jwks,
            claims,
        })
    }

    /// A PEM file of certificates, relative to the plan: read now, so a missing or empty one
    /// is an error with its line rather than a JWKS that never verifies.
    fn certificate_file(&self, raw: &Spanned<String>, field: &str) -> Result<PathBuf, PlanError> {
        let file = self.dir().join(raw.get_ref());
        let text = std::fs::read_to_string(&file)
            .map_err(|err| self.at(raw, field, format!("cannot read {}: {err}", file.display())))?;
        if !text.contains("-----BEGIN CERTIFICATE-----") {
            return Err(self.at(
                raw,
                field,
                format!("{} holds no PEM certificate", file.display()),
            ));
        }
        Ok(file)
    }

    fn key(&self, raw: &RawKey, field: &str) -> Result<KeySpec, PlanError> {
        let algorithm = Algorithm::parse(raw.algorithm.get_ref()).ok_or_else(|| {
            self.at(
                &raw.algorithm,
                &format!("{field}.algorithm"),
                "must be \"HS256\", \"RS256\" or \"ES256\"",
            )
        })?;
        let file = self.dir().join(raw.file.get_ref());
        let file_field = format!("{field}.file");
        let mut material = std::fs::read(&file).map_err(|err| {
            self.at(
                &raw.file,
                &file_field,
                format!("cannot read {}: {err}", file.display()),
            )
        })?;
        let decoded = match algorithm {
            Algorithm::Hs256 => {
                // A secret written with `echo` ends with a newline that is not part of it.
                while material.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    material.pop();
                }
                if material.len() < MIN_SECRET_BYTES {
                    Err(format!(
                        "an HS256 secret must be at least {MIN_SECRET_BYTES} bytes"
                    ))
                } else {
                    Ok(())
                }
            }
            Algorithm::Rs256 => jsonwebtoken::DecodingKey::from_rsa_pem(&material)
                .map(drop)
                .map_err(|e| format!("not an RSA public key in PEM: {e}")),
            Algorithm::Es256 => jsonwebtoken::DecodingKey::from_ec_pem(&material)
                .map(drop)
                .map_err(|e| format!("not an EC (P-256) public key in PEM: {e}")),
        };
        decoded.map_err(|m| self.at(&raw.file, &file_field, format!("{}: {m}", file.display())))?;
        Ok(KeySpec {
            kid: raw.kid.clone(),
            algorithm,
            material,
            file,
        })
    }

    fn rate_limit(&self, raw: &RawRateLimit, field: &str) -> Result<RateLimitSpec, PlanError> {
        let (requests, per) = parse_rate(raw.rate.get_ref()).ok_or_else(|| {
            self.at(
                &raw.rate,
                &format!("{field}.rate"),
                "must be requests per second, minute or hour, like \"100/s\", \"600/m\" or \"1000/h\"",
            )
        })?;
        let burst = match &raw.burst {
            None => requests,
            Some(b) => u32::try_from(*b.get_ref())
                .ok()
                .filter(|b| *b >= 1)
                .ok_or_else(|| {
                    self.at(b, &format!("{field}.burst"), "must be 1 or more requests")
                })?,
        };
        let key = match &raw.key {
            None => RateKey::Client,
            Some(k) => {
                RateKey::parse(k.get_ref()).map_err(|m| self.at(k, &format!("{field}.key"), m))?
            }
        };
        let max_keys = match &raw.max_keys {
            None => DEFAULT_MAX_KEYS,
            Some(m) => usize::try_from(*m.get_ref())
                .ok()
                .filter(|m| *m >= 1)
                .ok_or_else(|| self.at(m, &format!("{field}.max_keys"), "must be 1 or more"))?,
        };
        Ok(RateLimitSpec {
            requests,
            per,
            burst,
            key,
            max_keys,
        })
    }

    /// A route's `public` and `rate_limit` (a table like `[edge.rate_limit]`, or `false`).
    pub(super) fn route_edge(
        &self,
        public: bool,
        rate_limit: Option<&Spanned<toml::Value>>,
        field: &str,
    ) -> Result<RouteEdge, PlanError> {
        let field = format!("{field}.rate_limit");
        let rate_limit = match rate_limit {
            None => None,
            Some(value) => match value.get_ref() {
                toml::Value::Boolean(false) => Some(None),
                toml::Value::Table(table) => {
                    let raw = PlainRateLimit::deserialize(table.clone())
                        .map_err(|e| self.at(value, &field, e.message().replace('\n', " ")))?;
                    let raw = raw.spanned(&value.span());
                    Some(Some(self.rate_limit(&raw, &field)?))
                }
                _ => {
                    return Err(self.at(
                        value,
                        &field,
                        "must be a table ({ rate = \"10/s\" }) or false",
                    ));
                }
            },
        };
        Ok(RouteEdge { public, rate_limit })
    }
}

/// `N/s`, `N/m` or `N/h` (N ≥ 1) as (N, the period).
fn parse_rate(raw: &str) -> Option<(u32, Duration)> {
    let (n, unit) = raw.trim().split_once('/')?;
    let n: u32 = n.trim().parse().ok().filter(|n| *n >= 1)?;
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return None,
    };
    Some((n, per))
}

/// Headers a claim may not be forwarded as.
fn is_reserved(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "authorization"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::parse;

    fn keys_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/keys")
    }

    const BASE: &str = "[proxy]\nlisten = \"127.0.0.1:8080\"\nadmin_listen = \"127.0.0.1:8081\"\nstate = \"s.db\"\n[services.legacy]\nurls = [\"http://127.0.0.1:7000\"]\nlegacy = true\n[services.students]\nurls = [\"http://127.0.0.1:7101\"]\n";

    fn check(extra: &str) -> Result<crate::Plan, PlanError> {
        parse(&keys_dir().join("plan.toml"), &format!("{BASE}{extra}"))
    }

    #[test]
    fn an_edge_section_with_keys_claims_and_limits_is_read() {
        let plan = check(
            r#"
[edge.auth]
issuer = "https://id.example"
audience = "school"
leeway = "5s"
keys = [{ kid = "rsa1", algorithm = "RS256", file = "rsa1.pub.pem" },
        { algorithm = "ES256", file = "ec1.pub.pem" },
        { algorithm = "HS256", file = "hs.secret" }]
claims = { sub = "x-user-id" }
[edge.rate_limit]
rate = "600/m"
burst = 20
key = "claim:sub"
[[routes]]
name = "students"
paths = ["/students"]
service = "students"
public = true
rate_limit = { rate = "5/s", key = "header:x-api-key" }
[[routes]]
name = "open"
paths = ["/open"]
service = "students"
rate_limit = false
"#,
        )
        .unwrap();
        let auth = plan.edge.auth.as_ref().unwrap();
        assert_eq!(auth.audience, ["school"]);
        assert_eq!(auth.leeway, Duration::from_secs(5));
        assert_eq!(auth.keys.len(), 3);
        assert_eq!(auth.claims[0].1.as_str(), "x-user-id");
        let limit = plan.edge.rate_limit.as_ref().unwrap();
        assert_eq!((limit.requests, limit.burst), (600, 20));
        assert_eq!(limit.per_second(), 10.0);
        assert_eq!(limit.key, RateKey::Claim("sub".into()));
        let route = &plan.routes[0].edge;
        assert!(route.public);
        let own = route.rate_limit.clone().unwrap().unwrap();
        assert_eq!((own.requests, own.burst), (5, 5));
        assert_eq!(plan.routes[1].edge.rate_limit, Some(None));
    }

    #[test]
    fn bad_edge_sections_name_line_and_field() {
        let cases = [
            (
                "[edge.auth]\nissuer = \"x\"\n",
                10,
                "edge.auth",
                "needs keys",
            ),
            (
                "[edge.auth]\nkeys = [{ algorithm = \"RS512\", file = \"rsa1.pub.pem\" }]\n",
                11,
                "edge.auth.keys[0].algorithm",
                "RS256",
            ),
            (
                "[edge.auth]\nkeys = [{ algorithm = \"RS256\", file = \"missing.pem\" }]\n",
                11,
                "edge.auth.keys[0].file",
                "cannot read",
            ),
            (
                "[edge.auth]\nkeys = [{ algorithm = \"RS256\", file = \"ec1.pub.pem\" }]\n",
                11,
                "edge.auth.keys[0].file",
                "not an RSA public key",
            ),
            (
                "[edge.auth]\nkeys = [{ algorithm = \"HS256\", file = \"ec1.jwk.json\" }]\nclaims = { sub = \"host\" }\n",
                12,
                "edge.auth.claims.sub",
                "not a header",
            ),
            (
                "[edge.auth]\njwks_url = \"ftp://id.example/jwks\"\n",
                11,
                "edge.auth.jwks_url",
                "https://",
            ),
            (
                "[edge.auth]\njwks_url = \"https://id.example/jwks\"\njwks_ca = \"missing-ca.pem\"\n",
                12,
                "edge.auth.jwks_ca",
                "cannot read",
            ),
            (
                "[edge.auth]\njwks_url = \"http://id.example/jwks\"\njwks_refresh = \"often\"\n",
                12,
                "edge.auth.jwks_refresh",
                "duration",
            ),
            (
                "[edge.rate_limit]\nrate = \"100 per second\"\n",
                11,
                "edge.rate_limit.rate",
                "100/s",
            ),
            (
                "[edge.rate_limit]\nrate = \"100/s\"\nburst = 0\n",
                12,
                "edge.rate_limit.burst",
                "1 or more",
            ),
            (
                "[edge.rate_limit]\nrate = \"100/s\"\nkey = \"cookie:x\"\n",
                12,
                "edge.rate_limit.key",
                "header:NAME",
            ),
            (
                "[[routes]]\nname = \"r\"\npaths = [\"/s\"]\nservice = \"students\"\nrate_limit = true\n",
                14,
                "routes[0].rate_limit",
                "or false",
            ),
            (
                "[[routes]]\nname = \"r\"\npaths = [\"/s\"]\nservice = \"students\"\nrate_limit = { rate = \"1/d\" }\n",
                14,
                "routes[0].rate_limit.rate",
                "100/s",
            ),
        ];
        for (extra, line, field, words) in cases {
            let err = check(extra).unwrap_err();
            assert_eq!(
                (err.line, err.field.as_str()),
                (line, field),
                "{extra}: {err}"
            );
            assert!(err.message.contains(words), "{extra}: {err}");
        }
    }

    #[test]
    fn a_policy_file_holds_only_the_edge() {
        let file = keys_dir().join("policy.toml");
        let spec = parse_policy(&file, "[edge.rate_limit]\nrate = \"10/s\"\n").unwrap();
        assert_eq!(spec.rate_limit.unwrap().requests, 10);
        let err = parse_policy(&file, "[edge.rate_limit]\nrate = \"10/s\"\n[proxy]\n").unwrap_err();
        assert_eq!(err.line, 3, "{err}");
        assert!(err.message.contains("unknown field `proxy`"), "{err}");
        // A plan's [edge.cache] is refused in a sidecar, which has no response cache.
        let err = parse_policy(&file, "[edge.cache]\nttl = \"5s\"\n").unwrap_err();
        assert_eq!((err.line, err.field.as_str()), (1, "edge.cache"), "{err}");
        assert!(err.message.contains("no response cache"), "{err}");
    }
}
