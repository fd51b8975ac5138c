//! Support for the end-to-end tests: real servers on port 0 over real SQLite files in temp
//! directories, and a small JSON client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A monolith served in this process on an ephemeral port, with its database in a temp dir.
pub struct Monolith {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// The SQLite file, for tests that inspect or tamper with the database directly.
    pub db_path: PathBuf,
    pub client: Client,
    dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl Monolith {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("legacy.db");
        Self::start_on(dir, db_path).await
    }

    /// Starts a monolith over an existing database file in `dir`.
    pub async fn start_on(dir: TempDir, db_path: PathBuf) -> Self {
        let db = legacy_monolith::open(&db_path).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let app = legacy_monolith::app(db);
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        let url = format!("http://{addr}");
        Self {
            client: Client::new(&url),
            url,
            db_path,
            dir,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// Stops the server (finishing in-flight requests) and starts a new one on the same file.
    pub async fn restart(mut self) -> Self {
        self.shutdown().await;
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Self::start_on(dir, self.db_path.clone()).await
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }

    /// A direct connection to the database file.
    pub fn sql(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(&self.db_path).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn
    }

    /// `SELECT COUNT(*)` of `table`, read straight from the file.
    pub fn count(&self, table: &str) -> i64 {
        self.sql()
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }
}

/// An answer: status, headers and the body parsed as JSON (`Value::Null` when it is not).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    /// Asserts the status and returns the body.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "expected {status}, got {} with {}",
            self.status,
            self.body
        );
        self.body
    }

    /// Asserts an error answer: the status, the `{"error":{"code","message"}}` shape and
    /// the code; returns the message.
    #[track_caller]
    pub fn expect_error(self, status: u16, code: &str) -> String {
        let body = self.expect(status);
        let error = body
            .get("error")
            .unwrap_or_else(|| panic!("no error object in {body}"));
        assert_eq!(
            error.as_object().map(|o| o.len()),
            Some(2),
            "error has exactly code and message: {body}"
        );
        assert_eq!(error["code"], code, "{body}");
        error["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message in {body}"))
            .to_string()
    }
}

/// A JSON client bound to one base URL.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self {
            base: base.trim_end_matches('/').to_string(),
            http,
        }
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send(self.request(Method::DELETE, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(self.request(Method::POST, path).json(&body))
            .await
    }

    pub async fn put(&self, path: &str, body: Value) -> Answer {
        self.send(self.request(Method::PUT, path).json(&body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Answer {
        self.send(self.request(Method::PATCH, path).json(&body))
            .await
    }

    /// POST with raw bytes as the body.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Answer {
        self.send(
            self.request(Method::POST, path)
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    /// Registers a student and returns its id.
    pub async fn new_student(&self, email: &str) -> String {
        let body = self
            .post(
                "/students",
                serde_json::json!({ "email": email, "name": "Test Student" }),
            )
            .await
            .expect(201);
        body["id"].as_str().unwrap().to_string()
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
