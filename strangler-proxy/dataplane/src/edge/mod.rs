//! The edge policies the admit phase applies: JWT authentication ([`jwt`], its keys kept
//! current by [`jwks`]) and rate limits ([`limit`]).
//!
//! A route's policies are compiled into an [`Admission`] when the table is built (`None`
//! when the plan has no `[edge]` policy that applies to it, so such a route pays one
//! branch). The verifier, the buckets and the counters live in an [`EdgeRegistry`] that the
//! table's [`crate::routing::Registry`] keeps across rebuilds: a stage change does not
//! refill anyone's bucket or fetch the JWKS again.

pub mod jwks;
pub mod jwt;
pub mod limit;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};
use http_body_util::{Either, Full};
use serde_json::json;
use strangler_plan::edge::{AuthSpec, EdgeSpec, RateKey, RateLimitSpec, RouteEdge};

use crate::forward::ClientBody;
use crate::metrics::Cause;
use crate::phase::admit::Admitted;
use crate::phase::{Answer, Step};
use jwt::{ClaimHeaders, Claims, Refusal, Verifier};
use limit::Limiter;

/// What the admit phase refused, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No bearer token (401).
    MissingToken,
    /// A token that does not verify (401).
    InvalidToken,
    /// The JWKS not fetched yet (503).
    KeysUnavailable,
    /// Over the rate (429).
    RateLimited,
}

impl Refused {
    pub const ALL: [Refused; 4] = [
        Self::MissingToken,
        Self::InvalidToken,
        Self::KeysUnavailable,
        Self::RateLimited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::InvalidToken => "invalid_token",
            Self::KeysUnavailable => "auth_keys_unavailable",
            Self::RateLimited => "rate_limited",
        }
    }
}

/// A route's refusals by [`Refused`], kept across table rebuilds.
#[derive(Debug, Default)]
pub struct EdgeCounters {
    pub refused: [AtomicU64; 4],
}

impl EdgeCounters {
    pub fn get(&self, reason: Refused) -> u64 {
        self.refused[reason as usize].load(Ordering::Relaxed)
    }
}

/// A route's edge policies, compiled.
pub struct Admission {
    /// `None`: the route is public, or the plan has no `[edge.auth]`.
    pub verifier: Option<Arc<Verifier>>,
    /// Claims forwarded as headers; the client's own copies are removed on every route.
    pub claims: ClaimHeaders,
    pub limit: Option<Arc<Limiter>>,
    pub counters: Arc<EdgeCounters>,
    /// The route's name, as the refusals' JSON says it.
    route: String,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("route", &self.route)
            .field("auth", &self.verifier.is_some())
            .field("limit", &self.limit.as_ref().map(|l| &l.spec))
            .finish()
    }
}

impl Admission {
    /// Applies the policies to the request from `peer`: its claim headers replaced by the
    /// token's, or the answer refusing it.
    pub fn check(&self, peer: SocketAddr, parts: &mut Parts) -> Step<Admitted> {
        for (_, name) in self.claims.iter() {
            parts.headers.remove(name);
        }
        let claims = match &self.verifier {
            None => None,
            Some(verifier) => match verifier.verify(&parts.headers) {
                Ok(claims) => Some(claims),
                Err(refusal) => return Step::Answer(self.refuse_token(refusal)),
            },
        };
        if let Some(claims) = &claims {
            for (claim, name) in self.claims.iter() {
                if let Some(value) = jwt::claim_value(claims, claim) {
                    parts.headers.insert(name.clone(), value);
                }
            }
        }
        if let Some(limit) = &self.limit {
            let wait = match &limit.spec.key {
                RateKey::Client => match peer.ip() {
                    std::net::IpAddr::V4(ip) => limit.check(&ip.octets()),
                    std::net::IpAddr::V6(ip) => limit.check(&ip.octets()),
                },
                RateKey::Header(name) => limit.check(
                    parts
                        .headers
                        .get(name)
                        .map_or(&[][..], HeaderValue::as_bytes),
                ),
                RateKey::Claim(claim) => limit.check(claim_key(claims.as_ref(), claim).as_bytes()),
            };
            if let Err(wait) = wait {
                return Step::Answer(self.refuse_rate(limit, wait));
            }
        }
        Step::Continue(Admitted)
    }

    fn count(&self, reason: Refused) {
        self.counters.refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn refuse_token(&self, refusal: Refusal) -> Answer {
        let (reason, status, message, challenge) = match refusal {
            Refusal::Missing => (
                Refused::MissingToken,
                StatusCode::UNAUTHORIZED,
                "this route needs an Authorization: Bearer token".to_string(),
                "Bearer realm=\"strangler\"".to_string(),
            ),
            Refusal::Invalid(why) => (
                Refused::InvalidToken,
                StatusCode::UNAUTHORIZED,
                why.clone(),
                format!(
                    "Bearer realm=\"strangler\", error=\"invalid_token\", error_description=\"{}\"",
                    header_text(&why)
                ),
            ),
            Refusal::KeysUnavailable => (
                Refused::KeysUnavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                "the proxy has not fetched the JWKS yet and cannot check tokens; try again"
                    .to_string(),
                String::new(),
            ),
        };
        self.count(reason);
        let mut response = json_answer(status, reason, &message, &self.route);
        let headers = response.headers_mut();
        if challenge.is_empty() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        } else {
            // A reason quoting what the token said may not be a valid header value.
            let value = HeaderValue::from_str(&challenge).unwrap_or(HeaderValue::from_static(
                "Bearer realm=\"strangler\", error=\"invalid_token\"",
            ));
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        Answer {
            response,
            cause: Some(if reason == Refused::KeysUnavailable {
                Cause::Proxy
            } else {
                Cause::Client
            }),
        }
    }

    fn refuse_rate(&self, limit: &Limiter, wait: std::time::Duration) -> Answer {
        self.count(Refused::RateLimited);
        let message = format!(
            "over the rate limit of {} requests per second (burst {}); retry in {} s",
            limit.spec.per_second(),
            limit.spec.burst,
            limit::seconds(wait)
        );
        let mut response = json_answer(
            StatusCode::TOO_MANY_REQUESTS,
            Refused::RateLimited,
            &message,
            &self.route,
        );
        let headers = response.headers_mut();
        headers.insert(header::RETRY_AFTER, HeaderValue::from(limit::seconds(wait)));
        headers.insert(RATELIMIT_POLICY, limit.policy.clone());
        headers.insert(RATELIMIT, limit.exhausted(wait));
        Answer {
            response,
            cause: Some(Cause::Client),
        }
    }
}

pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// `text` as a quoted-string's content: printable ASCII, no quote or backslash (a reason
/// may quote what the token said).
fn header_text(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if c == ' ' || c.is_ascii_graphic() => c,
            _ => '?',
        })
        .collect()
}

/// The bucket key of a claim (a missing claim is the empty key, one bucket).
fn claim_key(claims: Option<&Claims>, claim: &str) -> String {
    match claims.and_then(|c| c.get(claim)) {
        None => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The proxy's refusal as JSON, shaped like its other errors.
fn json_answer(
    status: StatusCode,
    reason: Refused,
    message: &str,
    route: &str,
) -> Response<ClientBody> {
    let body = json!({ "error": {
        "code": reason.as_str(),
        "message": message,
        "route": route,
    }});
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body.to_string()))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The edge's state that outlives a table: the verifier, each route's buckets and
/// counters.
#[derive(Default)]
pub struct EdgeRegistry {
    verifier: Option<(AuthSpec, Arc<Verifier>)>,
    limiters: HashMap<String, (RateLimitSpec, Arc<Limiter>)>,
    counters: HashMap<String, Arc<EdgeCounters>>,
}

impl std::fmt::Debug for EdgeRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeRegistry")
            .field("auth", &self.verifier.is_some())
            .field("limits", &self.limiters.len())
            .finish()
    }
}

impl EdgeRegistry {
    /// Route `route`'s admission under `edge` with its own settings `own` (`None`: no
    /// policy applies to it).
    pub fn admission(
        &mut self,
        edge: &EdgeSpec,
        route: &str,
        own: &RouteEdge,
    ) -> Option<Arc<Admission>> {
        let limit_spec = match &own.rate_limit {
            Some(own) => own.as_ref(),
            None => edge.rate_limit.as_ref(),
        };
        if edge.auth.is_none() && limit_spec.is_none() {
            return None;
        }
        let verifier = edge.auth.as_ref().map(|auth| match &self.verifier {
            Some((known, verifier)) if known == auth => Arc::clone(verifier),
            _ => {
                let verifier = Verifier::start(auth);
                self.verifier = Some((auth.clone(), Arc::clone(&verifier)));
                verifier
            }
        });
        let claims: ClaimHeaders = edge
            .auth
            .as_ref()
            .map(|a| a.claims.clone())
            .unwrap_or_default()
            .into();
        let limit = limit_spec.map(|spec| match self.limiters.get(route) {
            Some((known, limiter)) if known == spec => Arc::clone(limiter),
            _ => {
                let limiter = Limiter::start(route, spec);
                self.limiters
                    .insert(route.to_string(), (spec.clone(), Arc::clone(&limiter)));
                limiter
            }
        });
        Some(Arc::new(Admission {
            verifier: if own.public { None } else { verifier },
            claims,
            limit,
            counters: Arc::clone(self.counters.entry(route.to_string()).or_default()),
            route: route.to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::path::Path;
    use std::time::Duration;

    use jsonwebtoken::{EncodingKey, Header};
    use strangler_plan::edge::{Algorithm, KeySpec};

    use super::*;

    const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9);

    fn auth() -> EdgeSpec {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/keys/hs.secret");
        EdgeSpec {
            auth: Some(AuthSpec {
                issuer: None,
                audience: Vec::new(),
                leeway: Duration::ZERO,
                keys: vec![KeySpec {
                    kid: Some("k".into()),
                    algorithm: Algorithm::Hs256,
                    material: std::fs::read(&file).unwrap(),
                    file,
                }],
                jwks: None,
                claims: vec![("sub".into(), HeaderName::from_static("x-user-id"))],
            }),
            rate_limit: None,
        }
    }

    fn request(token: Option<String>) -> Parts {
        let mut builder = http::Request::builder()
            .uri("/x")
            .header("x-user-id", "spoofed");
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_refusal_always_carries_a_challenge_whatever_the_token_says() {
        let admission = EdgeRegistry::default()
            .admission(&auth(), "r", &RouteEdge::default())
            .unwrap();
        let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(format!("é\"{}", "x".repeat(500)));
        let claims =
            serde_json::json!({"sub": "s", "exp": jsonwebtoken::get_current_timestamp() + 60});
        let token =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(b"x")).unwrap();
        let Step::Answer(answer) = admission.check(PEER, &mut request(Some(token))) else {
            panic!("admitted")
        };
        assert_eq!(answer.response.status(), 401);
        let challenge = answer.response.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap();
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        assert!(challenge.len() < 300, "{challenge}");
    }

    #[test]
    fn a_public_route_admits_without_a_token_and_drops_spoofed_claims() {
        let mut registry = EdgeRegistry::default();
        let public = RouteEdge {
            public: true,
            rate_limit: None,
        };
        let admission = registry.admission(&auth(), "open", &public).unwrap();
        let mut parts = request(None);
        assert!(matches!(
            admission.check(PEER, &mut parts),
            Step::Continue(Admitted)
        ));
        assert!(parts.headers.get("x-user-id").is_none());
        // Without any policy, a route has no admission at all.
        assert!(
            registry
                .admission(&EdgeSpec::default(), "r", &public)
                .is_none()
        );
    }
}
