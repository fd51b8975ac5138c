//! JWT verification: a bearer token checked against the keys the plan gives (files, read
//! when the plan was) and a JWKS the [`super::jwks`] thread keeps current. The request path
//! reads the key set with one atomic load and never waits on the network: a token whose
//! `kid` is unknown is refused at once and asks for a fetch (at most one per `min_gap`).

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::HeaderMap;
use http::header::{AUTHORIZATION, HeaderName};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Map, Value};
use strangler_plan::edge::{Algorithm, AuthSpec};
use tokio::sync::mpsc;

/// Longest part of a token's `kid` repeated in a refusal.
const MAX_KID_SHOWN: usize = 64;

/// The verified token's claims.
pub type Claims = Map<String, Value>;

/// One verification key.
#[derive(Clone)]
pub struct Key {
    /// `None`: tried for any token of its algorithm.
    pub kid: Option<String>,
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

/// The keys a token may be signed with, swapped whole when a JWKS is fetched.
pub struct KeySet {
    pub keys: Vec<Key>,
    /// A JWKS is configured and has been fetched at least once (or none is configured).
    pub ready: bool,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer` token (401, no error code: RFC 6750 §3.1).
    Missing,
    /// A token that is not valid, and why (401 `invalid_token`).
    Invalid(String),
    /// The JWKS has not been fetched yet (503: the proxy cannot tell).
    KeysUnavailable,
}

/// Checks tokens for the routes that are not public.
pub struct Verifier {
    /// File keys plus the newest JWKS's.
    pub(crate) keys: ArcSwap<KeySet>,
    /// The file keys, which every JWKS fetch keeps.
    pub(crate) file_keys: Vec<Key>,
    /// One validation per accepted algorithm (issuer, audience, leeway, `exp` required).
    validations: [Validation; 3],
    /// Asks the JWKS thread for a fetch (capacity 1: asking again while one is pending is
    /// free); `None` without a JWKS.
    pub(crate) refetch: Option<mpsc::Sender<()>>,
}

fn slot(algorithm: Algorithm) -> usize {
    match algorithm {
        Algorithm::Hs256 => 0,
        Algorithm::Rs256 => 1,
        Algorithm::Es256 => 2,
    }
}

pub(crate) fn jwt_algorithm(algorithm: Algorithm) -> jsonwebtoken::Algorithm {
    match algorithm {
        Algorithm::Hs256 => jsonwebtoken::Algorithm::HS256,
        Algorithm::Rs256 => jsonwebtoken::Algorithm::RS256,
        Algorithm::Es256 => jsonwebtoken::Algorithm::ES256,
    }
}

fn accepted(algorithm: jsonwebtoken::Algorithm) -> Option<Algorithm> {
    match algorithm {
        jsonwebtoken::Algorithm::HS256 => Some(Algorithm::Hs256),
        jsonwebtoken::Algorithm::RS256 => Some(Algorithm::Rs256),
        jsonwebtoken::Algorithm::ES256 => Some(Algorithm::Es256),
        _ => None,
    }
}

impl Verifier {
    /// A verifier for `spec`; with a JWKS, the thread that fetches it is started too and
    /// ends when the verifier is dropped.
    pub fn start(spec: &AuthSpec) -> Arc<Self> {
        let file_keys: Vec<Key> = spec
            .keys
            .iter()
            .filter_map(|k| {
                let key = match k.algorithm {
                    Algorithm::Hs256 => Ok(DecodingKey::from_secret(&k.material)),
                    Algorithm::Rs256 => DecodingKey::from_rsa_pem(&k.material),
                    Algorithm::Es256 => DecodingKey::from_ec_pem(&k.material),
                };
                match key {
                    Ok(key) => Some(Key {
                        kid: k.kid.clone(),
                        algorithm: k.algorithm,
                        key,
                    }),
                    // The plan decoded it already; only a changed crate could get here.
                    Err(err) => {
                        tracing::error!(file = %k.file.display(), error = %err, "key dropped");
                        None
                    }
                }
            })
            .collect();
        let validation = |algorithm| {
            let mut v = Validation::new(jwt_algorithm(algorithm));
            v.leeway = spec.leeway.as_secs();
            v.validate_nbf = true;
            v.set_required_spec_claims(&["exp"]);
            match &spec.issuer {
                Some(issuer) => v.set_issuer(&[issuer]),
                None => v.iss = None,
            }
            if spec.audience.is_empty() {
                v.validate_aud = false;
            } else {
                v.set_audience(&spec.audience);
            }
            v
        };
        let (refetch, wanted) = match &spec.jwks {
            Some(_) => {
                let (tx, rx) = mpsc::channel(1);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let verifier = Arc::new(Self {
            keys: ArcSwap::from_pointee(KeySet {
                keys: file_keys.clone(),
                ready: spec.jwks.is_none(),
            }),
            file_keys,
            validations: [
                validation(Algorithm::Hs256),
                validation(Algorithm::Rs256),
                validation(Algorithm::Es256),
            ],
            refetch,
        });
        if let (Some(jwks), Some(wanted)) = (&spec.jwks, wanted) {
            super::jwks::start(jwks.clone(), Arc::downgrade(&verifier), wanted);
        }
        verifier
    }

    /// The bearer token's claims, or why there are none.
    pub fn verify(&self, headers: &HeaderMap) -> Result<Claims, Refusal> {
        let token = bearer(headers).ok_or(Refusal::Missing)?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Refusal::Invalid("the token is not a JWT".into()))?;
        let algorithm = accepted(header.alg).ok_or_else(|| {
            Refusal::Invalid(format!(
                "the token's algorithm {:?} is not accepted (HS256, RS256, ES256)",
                header.alg
            ))
        })?;
        let set = self.keys.load();
        let kid = header.kid.as_deref();
        let of_kind = |k: &&Key| k.algorithm == algorithm;
        let named: Vec<&Key> = set
            .keys
            .iter()
            .filter(of_kind)
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
            .collect();
        let candidates = if named.is_empty() {
            set.keys
                .iter()
                .filter(of_kind)
                .filter(|k| k.kid.is_none())
                .collect()
        } else {
            named
        };
        if candidates.is_empty() {
            if !set.ready {
                return Err(Refusal::KeysUnavailable);
            }
            if let Some(refetch) = &self.refetch {
                // Full: a fetch is already asked for.
                let _ = refetch.try_send(());
            }
            return Err(Refusal::Invalid(match kid {
                Some(kid) => format!(
                    "no {} key with kid `{}`",
                    algorithm.as_str(),
                    kid.chars().take(MAX_KID_SHOWN).collect::<String>()
                ),
                None => format!("no {} key", algorithm.as_str()),
            }));
        }
        let validation = &self.validations[slot(algorithm)];
        let mut last = None;
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, validation) {
                Ok(data) => return Ok(data.claims),
                // Another key of the same kind may have signed it.
                Err(err) if *err.kind() == ErrorKind::InvalidSignature => {
                    last.get_or_insert(err);
                }
                Err(err) => return Err(Refusal::Invalid(reason(err.kind()))),
            }
        }
        Err(Refusal::Invalid(last.map_or_else(
            || "the signature does not verify".into(),
            |e| reason(e.kind()),
        )))
    }
}

/// The token of `Authorization: Bearer TOKEN` (the scheme in any case).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// What the client is told about a token that does not verify.
fn reason(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidAudience => "the token is not for this audience".into(),
        ErrorKind::InvalidIssuer => "the token is from another issuer".into(),
        ErrorKind::InvalidSignature => "the signature does not verify".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no `{claim}` claim"),
        ErrorKind::InvalidAlgorithm => "the token's algorithm does not match its key".into(),
        _ => "the token is malformed".into(),
    }
}

/// The header value a claim is forwarded as (a string as it is, anything else as JSON).
pub(crate) fn claim_value(claims: &Claims, claim: &str) -> Option<http::HeaderValue> {
    let value = claims.get(claim)?;
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Null => return None,
        other => other.to_string(),
    };
    http::HeaderValue::from_str(&text).ok()
}

/// The names a route's claims are forwarded under.
pub(crate) type ClaimHeaders = Arc<[(String, HeaderName)]>;

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;
    use strangler_plan::edge::KeySpec;

    use super::*;

    fn keys() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/keys")
    }

    fn read(name: &str) -> Vec<u8> {
        std::fs::read(keys().join(name)).unwrap()
    }

    fn key(kid: Option<&str>, algorithm: Algorithm, file: &str) -> KeySpec {
        KeySpec {
            kid: kid.map(str::to_string),
            algorithm,
            material: read(file),
            file: keys().join(file),
        }
    }

    fn spec() -> AuthSpec {
        AuthSpec {
            issuer: Some("https://id.test".into()),
            audience: vec!["school".into()],
            leeway: Duration::from_secs(5),
            keys: vec![
                key(Some("rsa1"), Algorithm::Rs256, "rsa1.pub.pem"),
                key(None, Algorithm::Es256, "ec1.pub.pem"),
                key(None, Algorithm::Hs256, "hs.secret"),
            ],
            jwks: None,
            claims: vec![("sub".into(), HeaderName::from_static("x-user-id"))],
        }
    }

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn sign(alg: jsonwebtoken::Algorithm, kid: Option<&str>, claims: &Value) -> String {
        let key = match alg {
            jsonwebtoken::Algorithm::RS256 => EncodingKey::from_rsa_pem(&read("rsa1.key")),
            jsonwebtoken::Algorithm::ES256 => EncodingKey::from_ec_pem(&read("ec1.key")),
            _ => Ok(EncodingKey::from_secret(&read("hs.secret"))),
        }
        .unwrap();
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_string);
        encode(&header, claims, &key).unwrap()
    }

    fn good() -> Value {
        json!({"sub": "s-7", "iss": "https://id.test", "aud": "school", "exp": now() + 60})
    }

    fn headers(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        headers
    }

    #[test]
    fn tokens_of_each_algorithm_verify_and_give_their_claims() {
        let verifier = Verifier::start(&spec());
        for (alg, kid) in [
            (jsonwebtoken::Algorithm::RS256, Some("rsa1")),
            (jsonwebtoken::Algorithm::ES256, None),
            (jsonwebtoken::Algorithm::HS256, None),
        ] {
            let claims = verifier.verify(&headers(&sign(alg, kid, &good()))).unwrap();
            assert_eq!(claims["sub"], "s-7", "{alg:?}");
            assert_eq!(claim_value(&claims, "sub").unwrap(), "s-7");
        }
    }

    #[test]
    fn bad_tokens_are_refused_with_a_reason() {
        let verifier = Verifier::start(&spec());
        let rs = |claims: Value| sign(jsonwebtoken::Algorithm::RS256, Some("rsa1"), &claims);
        let mut expired = good();
        expired["exp"] = json!(now() - 60);
        let mut early = good();
        early["nbf"] = json!(now() + 60);
        let mut other_aud = good();
        other_aud["aud"] = json!("billing");
        let mut other_iss = good();
        other_iss["iss"] = json!("https://evil.test");
        let mut no_exp = good();
        no_exp.as_object_mut().unwrap().remove("exp");
        let cases = [
            (rs(expired), "expired"),
            (rs(early), "not valid yet"),
            (rs(other_aud), "audience"),
            (rs(other_iss), "issuer"),
            (rs(no_exp), "`exp`"),
            (
                sign(jsonwebtoken::Algorithm::RS256, Some("rsa9"), &good()),
                "kid `rsa9`",
            ),
            ("not.a.jwt".to_string(), "not a JWT"),
        ];
        for (token, words) in cases {
            match verifier.verify(&headers(&token)) {
                Err(Refusal::Invalid(why)) => assert!(why.contains(words), "{why} / {words}"),
                other => panic!("{words}: {other:?}"),
            }
        }
        // Within the leeway, an expired token still passes.
        let mut just = good();
        just["exp"] = json!(now() - 2);
        assert!(verifier.verify(&headers(&rs(just))).is_ok());
        assert_eq!(verifier.verify(&HeaderMap::new()), Err(Refusal::Missing));
        let mut basic = HeaderMap::new();
        basic.insert(AUTHORIZATION, "Basic dXNlcjpwdw==".parse().unwrap());
        assert_eq!(verifier.verify(&basic), Err(Refusal::Missing));
    }

    #[test]
    fn a_token_signed_by_another_key_of_the_same_kind_is_refused() {
        let mut spec = spec();
        spec.keys = vec![key(Some("rsa1"), Algorithm::Rs256, "rsa2.pub.pem")];
        let verifier = Verifier::start(&spec);
        let token = sign(jsonwebtoken::Algorithm::RS256, Some("rsa1"), &good());
        assert_eq!(
            verifier.verify(&headers(&token)),
            Err(Refusal::Invalid("the signature does not verify".into()))
        );
        // An HS256 token (signed with anything) is not checked against an RSA key.
        let token = sign(jsonwebtoken::Algorithm::HS256, Some("rsa1"), &good());
        assert!(matches!(
            verifier.verify(&headers(&token)),
            Err(Refusal::Invalid(_))
        ));
    }
}
