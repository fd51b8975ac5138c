//! The JWKS thread: fetches a JSON Web Key Set off the request path, every `refresh` and
//! when a token with an unknown `kid` asks (at most once per `min_gap`), and swaps the
//! verifier's key set whole, so a key the issuer removed stops verifying at the next
//! fetch. A failed fetch keeps the keys it had. The thread ends with its verifier.

use std::sync::Weak;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use serde::Deserialize;
use strangler_plan::edge::{Algorithm, JwksSpec};
use tokio::sync::mpsc;

use super::jwt::{Key, KeySet, Verifier};

/// Largest JWKS read (a set of a few keys is a few KiB).
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// A fetch that takes longer fails.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait before trying again after a failed fetch (and at least the gap once one succeeded).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Starts the thread for `verifier`; `wanted` receives the request path's asks.
pub(super) fn start(spec: JwksSpec, verifier: Weak<Verifier>, wanted: mpsc::Receiver<()>) {
    let started = std::thread::Builder::new()
        .name("strangler-jwks".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    tracing::error!(error = %err, "the JWKS thread cannot start a runtime");
                    return;
                }
            };
            runtime.block_on(run(spec, verifier, wanted));
        });
    if let Err(err) = started {
        tracing::error!(error = %err, "cannot start the JWKS thread; tokens will be refused");
    }
}

async fn run(spec: JwksSpec, verifier: Weak<Verifier>, mut wanted: mpsc::Receiver<()>) {
    // An https:// set is fetched with the issuer's certificate verified (webpki roots and
    // the plan's `jwks_ca`); a CA file that cannot be read leaves tokens answered 503.
    let tls = match crate::tls::client_config(spec.ca.as_deref()) {
        Ok(tls) => tls,
        Err(err) => {
            tracing::error!(error = %err, url = %spec.url, "cannot fetch the JWKS");
            return;
        }
    };
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    let client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(https);
    let mut last_fetch: Option<Instant> = None;
    // Until a fetch succeeds, tokens are answered 503: try every second meanwhile.
    let mut fetched_once = false;
    loop {
        // A fetch asked for soon after the last one waits for the gap.
        if let Some(last) = last_fetch.filter(|_| fetched_once) {
            let gap_end = last + spec.min_gap;
            tokio::time::sleep_until(gap_end.into()).await;
        }
        last_fetch = Some(Instant::now());
        let fetched = fetch(&client, &spec.url).await;
        // Asks made while this fetch ran are answered by it.
        while wanted.try_recv().is_ok() {}
        let wait = {
            let Some(verifier) = verifier.upgrade() else {
                return;
            };
            match fetched {
                Ok(keys) => {
                    fetched_once = true;
                    tracing::info!(url = %spec.url, keys = keys.len(), "JWKS fetched");
                    let mut all = verifier.file_keys.clone();
                    all.extend(keys);
                    verifier.keys.store(std::sync::Arc::new(KeySet {
                        keys: all,
                        ready: true,
                    }));
                    spec.refresh
                }
                Err(err) => {
                    tracing::warn!(url = %spec.url, error = %err, "cannot fetch the JWKS; keeping the keys it had");
                    RETRY_AFTER_FAILURE.min(spec.refresh)
                }
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            asked = wanted.recv() => {
                if asked.is_none() {
                    // The verifier is gone.
                    return;
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

/// The set's keys this proxy can use (others, such as encryption keys, are skipped).
async fn fetch(
    client: &Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    url: &Uri,
) -> Result<Vec<Key>, String> {
    let request = Request::get(url.clone())
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(FETCH_TIMEOUT, client.request(request))
        .await
        .map_err(|_| format!("no answer within {FETCH_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    let body = tokio::time::timeout(
        FETCH_TIMEOUT,
        Limited::new(response.into_body(), MAX_JWKS_BYTES).collect(),
    )
    .await
    .map_err(|_| format!("body not read within {FETCH_TIMEOUT:?}"))?
    .map_err(|e| e.to_string())?
    .to_bytes();
    let set: RawSet = serde_json::from_slice(&body).map_err(|e| format!("not a JWKS: {e}"))?;
    Ok(set
        .keys
        .into_iter()
        .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
        .filter_map(|jwk| key(&jwk))
        .collect())
}

/// A JWK as a verification key, when it is one of the accepted kinds.
fn key(jwk: &Jwk) -> Option<Key> {
    let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (_, Some(KeyAlgorithm::RS256)) | (AlgorithmParameters::RSA(_), None) => Algorithm::Rs256,
        (_, Some(KeyAlgorithm::ES256)) => Algorithm::Es256,
        (AlgorithmParameters::EllipticCurve(ec), None) if ec.curve == EllipticCurve::P256 => {
            Algorithm::Es256
        }
        (_, Some(KeyAlgorithm::HS256)) | (AlgorithmParameters::OctetKey(_), None) => {
            Algorithm::Hs256
        }
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key {
        kid: jwk.common.key_id.clone(),
        algorithm,
        key,
    })
}
