//! The edge policies (`[edge.auth]`, `[edge.rate_limit]` and a route's `public` and
//! `rate_limit`): what the proxy checks before a request reaches any service. Read and
//! validated by [`crate::file`] (in a plan, or alone in a sidecar's policy file).

use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, Uri};

/// Leeway on `exp` and `nbf` when the plan sets none (clocks of the issuer and the proxy
/// drift a little).
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// How often a JWKS is fetched again when the plan sets no `jwks_refresh`.
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);
/// Shortest gap between two fetches of a JWKS asked for by tokens with an unknown `kid`,
/// so that a flood of made-up key ids costs the issuer at most one fetch per gap.
pub const DEFAULT_JWKS_MIN_GAP: Duration = Duration::from_secs(10);
/// Keys a rate limit tracks at most (between two prunes) when the plan sets no `max_keys`.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// The plan's `[edge]` section: the defaults every route gets.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EdgeSpec {
    /// `[edge.auth]`: every route that is not `public` requires a valid JWT.
    pub auth: Option<AuthSpec>,
    /// `[edge.rate_limit]`: every route's limit unless it sets its own (or `false`).
    pub rate_limit: Option<RateLimitSpec>,
}

/// A route's own edge settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteEdge {
    /// `public = true`: no token required (claims headers from the client still removed).
    pub public: bool,
    /// `rate_limit`: `None` takes `[edge.rate_limit]`; `Some(None)` (`false`) has none.
    pub rate_limit: Option<Option<RateLimitSpec>>,
}

/// JWT authentication: where keys come from and what a token must say.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthSpec {
    /// `iss` a token must carry (`None`: not checked).
    pub issuer: Option<String>,
    /// One of these must be in `aud` (empty: not checked).
    pub audience: Vec<String>,
    /// Allowed clock difference on `exp` and `nbf`.
    pub leeway: Duration,
    /// Keys read from files when the plan was read.
    pub keys: Vec<KeySpec>,
    /// A JWKS fetched in the background.
    pub jwks: Option<JwksSpec>,
    /// Claims forwarded to the upstream: (claim, header); the client's own copies of these
    /// headers are removed on every route.
    pub claims: Vec<(String, HeaderName)>,
}

/// The signature algorithms accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Hs256,
    Rs256,
    Es256,
}

impl Algorithm {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "HS256" => Some(Self::Hs256),
            "RS256" => Some(Self::Rs256),
            "ES256" => Some(Self::Es256),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
        }
    }
}

/// One verification key from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySpec {
    /// The `kid` tokens signed with it carry (`None`: it is tried for tokens without one).
    pub kid: Option<String>,
    pub algorithm: Algorithm,
    /// The file's bytes: a PEM public key (RS256, ES256) or the shared secret (HS256).
    pub material: Vec<u8>,
    /// The file, for messages.
    pub file: PathBuf,
}

/// A JSON Web Key Set fetched from a URL.
#[derive(Debug, Clone, PartialEq)]
pub struct JwksSpec {
    /// `http://` or `https://` (the issuer's certificate verified against the webpki roots
    /// and `ca`).
    pub url: Uri,
    /// PEM certificates trusted for an `https://` JWKS besides the webpki roots.
    pub ca: Option<PathBuf>,
    /// Fetched again this often.
    pub refresh: Duration,
    /// Shortest gap between fetches asked for by an unknown `kid`.
    pub min_gap: Duration,
}

/// A token bucket per key.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitSpec {
    /// Requests per `per`, refilled evenly.
    pub requests: u32,
    pub per: Duration,
    /// Requests a key may make at once after a quiet spell (the bucket's size).
    pub burst: u32,
    /// What a bucket belongs to.
    pub key: RateKey,
    /// Keys tracked at most; see the README's "Rate limiting".
    pub max_keys: usize,
}

impl RateLimitSpec {
    /// Requests per second, for messages and headers.
    pub fn per_second(&self) -> f64 {
        f64::from(self.requests) / self.per.as_secs_f64()
    }
}

/// What a rate limit counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    /// The connection's peer address (its IP).
    Client,
    /// A request header's value (requests without it share one bucket).
    Header(HeaderName),
    /// A claim of the request's verified token (requests without one share one bucket).
    Claim(String),
}

impl RateKey {
    pub fn parse(raw: &str) -> Result<Self, String> {
        const EXPECTED: &str = "must be \"client\", \"header:NAME\" or \"claim:NAME\"";
        if raw == "client" {
            return Ok(Self::Client);
        }
        if let Some(name) = raw.strip_prefix("header:") {
            return HeaderName::from_bytes(name.as_bytes())
                .map(Self::Header)
                .map_err(|_| format!("`{name}` is not a header name"));
        }
        if let Some(name) = raw.strip_prefix("claim:")
            && !name.is_empty()
        {
            return Ok(Self::Claim(name.to_string()));
        }
        Err(EXPECTED.to_string())
    }
}
