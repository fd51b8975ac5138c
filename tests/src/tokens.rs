//! Tokens for the edge tests: JWTs signed with the throwaway keys under `tests/keys`, and a
//! JWKS served by a local server whose keys a test changes.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The folder of the test keys.
pub fn keys_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("keys")
}

/// A test key file's path, as a plan writes it.
pub fn key_file(name: &str) -> String {
    keys_dir().join(name).display().to_string()
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// Claims that pass a plan with issuer `https://id.test` and audience `school`, for
/// subject `sub`, valid for a minute.
pub fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": "https://id.test", "aud": "school", "exp": now() + 60})
}

/// A token over `claims` signed with the private key `key` (`rsa1`, `rsa2`, `ec1`) or,
/// for HS256, the shared secret; its header names `kid` when given.
pub fn sign(algorithm: Algorithm, key: &str, kid: Option<&str>, claims: &Value) -> String {
    let read = |name: &str| std::fs::read(keys_dir().join(name)).unwrap();
    let encoding = match algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&read(&format!("{key}.key"))).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&read(&format!("{key}.key"))).unwrap(),
        _ => EncodingKey::from_secret(&read("hs.secret")),
    };
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &encoding).unwrap()
}

/// A JWKS server on port 0 serving the public keys it is given (by test key name), and
/// counting how often it was fetched.
pub struct JwksServer {
    pub url: String,
    keys: Arc<Mutex<Vec<String>>>,
    fetches: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl JwksServer {
    pub async fn start(keys: &[&str]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let served: Arc<Mutex<Vec<String>>> =
            Arc::new(Mutex::new(keys.iter().map(|k| k.to_string()).collect()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (state, count) = (Arc::clone(&served), Arc::clone(&fetches));
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                count.fetch_add(1, Ordering::SeqCst);
                let names: Vec<String> = state.lock().unwrap().clone();
                async move {
                    let keys: Vec<Value> = names
                        .iter()
                        .map(|name| {
                            let text = std::fs::read_to_string(
                                keys_dir().join(format!("{name}.jwk.json")),
                            )
                            .unwrap();
                            serde_json::from_str(&text).unwrap()
                        })
                        .collect();
                    axum::Json(json!({ "keys": keys }))
                }
            }),
        );
        let (stop, server) = crate::spawn_server(listener, app);
        Self {
            url,
            keys: served,
            fetches,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// Serves these keys from now on.
    pub fn set(&self, keys: &[&str]) {
        *self.keys.lock().unwrap() = keys.iter().map(|k| k.to_string()).collect();
    }

    /// Times the set was fetched.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}
