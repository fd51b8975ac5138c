//! Support for the end-to-end tests: real servers on port 0 over real SQLite files in temp
//! directories, and a small JSON client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod tokens;

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
        let (stop, server) = spawn_server(listener, legacy_monolith::app(db));
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

/// Serves `app` on `listener` until the returned sender fires (or is dropped).
fn spawn_server(
    listener: tokio::net::TcpListener,
    app: axum::Router,
) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (stop, server)
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

/// A port free on `ip` now, for a process that must be told its address before it starts.
pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One sample's value (`name{labels}` exactly as written) from the `/metrics` of the admin
/// listener at `admin`; `None` while it does not answer or has no such sample.
pub async fn metric(
    client: &reqwest::Client,
    admin: &str,
    token: &str,
    sample: &str,
) -> Option<f64> {
    let text = client
        .get(format!("http://{admin}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// A stand-in upstream on port 0 that answers every request with what it received:
/// `{"service", "method", "path", "headers", "body_len"}`. `GET /slow/{ms}` waits first.
pub struct EchoUpstream {
    pub name: String,
    pub addr: SocketAddr,
    /// Requests received so far.
    hits: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl EchoUpstream {
    pub async fn start(name: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(name, listener).await
    }

    /// Serves on a given listener (e.g. to come back on the same port).
    pub async fn serve(name: &str, listener: tokio::net::TcpListener) -> Self {
        let addr = listener.local_addr().unwrap();
        let service = name.to_string();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let service = service.clone();
            counter.fetch_add(1, Ordering::SeqCst);
            async move { echo(service, request).await }
        });
        let (stop, server) = spawn_server(listener, app);
        Self {
            name: name.to_string(),
            addr,
            hits,
            stop: Some(stop),
            server: Some(server),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops serving and waits until the port is closed.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

async fn echo(service: String, request: axum::extract::Request) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    if let Some(ms) = path
        .strip_prefix("/slow/")
        .and_then(|ms| ms.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                Value::String(v.to_str().unwrap_or("?").to_string()),
            )
        })
        .collect();
    axum::Json(serde_json::json!({
        "service": service,
        "method": parts.method.as_str(),
        "path": path,
        "query": parts.uri.query(),
        "headers": headers,
        "body_len": body.len(),
    }))
    .into_response()
}

/// A plan for tests: listeners on port 0, the store in `dir`, the given services (the first
/// is the legacy one) and routes (TOML `[[routes]]` blocks).
pub fn plan_toml(dir: &std::path::Path, services: &[(&str, String)], extra: &str) -> String {
    // Tests move routes without shadowing them first: the gate is tested on its own.
    let mut plan = format!(
        "[gate]\nmin_comparisons = 0\nmax_mismatch_rate = 1.0\n\n[proxy]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstate = \"{}\"\n{extra}\n",
        dir.join("strangler.db").display()
    );
    for (i, (name, url)) in services.iter().enumerate() {
        plan.push_str(&format!("[services.{name}]\nurls = [{url}]\n"));
        if i == 0 {
            plan.push_str("legacy = true\n");
        }
    }
    plan
}

/// A proxy whose plan has two services, `legacy` and `new` (at the given upstreams' URLs),
/// `proxy_extra` lines in `[proxy]`, and `routes` (TOML `[[routes]]` blocks).
pub async fn two_sided_proxy(
    legacy: &EchoUpstream,
    new_urls: &str,
    proxy_extra: &str,
    routes: &str,
) -> TestProxy {
    two_sided_proxy_at(&legacy.url(), new_urls, proxy_extra, routes).await
}

/// [`two_sided_proxy`] with legacy at `legacy_url` (any stand-in).
pub async fn two_sided_proxy_at(
    legacy_url: &str,
    new_urls: &str,
    proxy_extra: &str,
    routes: &str,
) -> TestProxy {
    let dir = tempfile::tempdir().unwrap();
    let mut plan = plan_toml(
        dir.path(),
        &[
            ("legacy", format!("\"{legacy_url}\"")),
            ("new", new_urls.to_string()),
        ],
        proxy_extra,
    );
    plan.push_str(routes);
    TestProxy::start(dir, &plan).await
}

/// A proxy started in this process from a plan file in a temp dir.
pub struct TestProxy {
    pub proxy: Option<strangler_control::Proxy>,
    pub plan_path: PathBuf,
    pub url: String,
    pub admin_url: String,
    pub token: String,
    pub client: Client,
    pub dir: TempDir,
}

impl TestProxy {
    /// Writes `plan` (which must name its state inside `dir`) and starts a proxy on it.
    ///
    /// A plan without an `[analysis]` section gets one that checks once an hour (`60m`): the echo
    /// upstreams most tests use answer differently by design, so a canary that outlives
    /// three default checks (30 s, on a loaded machine) would be rolled back by the analysis
    /// in the middle of a test about something else. Tests of the analysis set their own.
    ///
    /// Likewise shadow never yields to load (`shadow_max_busy = "off"`) unless the plan says:
    /// tests count shadow results exactly, on machines busy with other tests.
    pub async fn start(dir: TempDir, plan: &str) -> Self {
        let plan_path = dir.path().join("migration-plan.toml");
        let mut plan = if plan.lines().any(|l| l.trim() == "[analysis]") {
            plan.to_string()
        } else {
            format!("{plan}\n[analysis]\ninterval = \"60m\"\n")
        };
        if !plan.contains("shadow_max_busy") {
            plan = plan.replacen("[proxy]\n", "[proxy]\nshadow_max_busy = \"off\"\n", 1);
        }
        std::fs::write(&plan_path, plan).unwrap();
        Self::start_on(dir, plan_path).await
    }

    pub async fn start_on(dir: TempDir, plan_path: PathBuf) -> Self {
        let plan = strangler_plan::load(&plan_path).unwrap();
        let proxy = strangler_control::Proxy::start(plan).await.unwrap();
        let url = format!("http://{}", proxy.listen);
        Self {
            admin_url: format!("http://{}", proxy.admin),
            token: proxy.token.clone(),
            client: Client::new(&url),
            url,
            proxy: Some(proxy),
            plan_path,
            dir,
        }
    }

    /// Another proxy on the same plan and store.
    pub async fn replica(&self) -> strangler_control::Proxy {
        let plan = strangler_plan::load(&self.plan_path).unwrap();
        strangler_control::Proxy::start(plan).await.unwrap()
    }

    /// Stops gracefully and starts again on the same plan and store.
    pub async fn restart(mut self) -> Self {
        if let Some(proxy) = self.proxy.take() {
            proxy.stop().await;
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Self::start_on(dir, self.plan_path.clone()).await
    }

    /// Runs a `strangler` command (in this process) against this proxy's plan.
    pub async fn strangler(&self, args: &[&str]) -> Result<(), strangler_cli::cli::CliError> {
        use clap::Parser;
        let mut argv = vec!["strangler", "--plan", self.plan_path.to_str().unwrap()];
        argv.extend_from_slice(args);
        let cli = strangler_cli::cli::Cli::try_parse_from(argv).unwrap();
        strangler_cli::cli::run(cli).await
    }

    /// The proxy's Prometheus metrics, as text.
    pub async fn metrics(&self) -> String {
        Client::new(&self.admin_url)
            .request(Method::GET, "/metrics")
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The shadow report of `route` read from this proxy's SQLite store, as
    /// `strangler report --json` gives it.
    pub fn shadow_report(&self, route: &str) -> Value {
        let store = strangler_store::open(&strangler_plan::StoreLocation::File(
            self.dir.path().join("strangler.db"),
        ))
        .unwrap();
        let plan = strangler_plan::load(&self.plan_path).unwrap();
        let reports = strangler_report::gather(&plan, &*store, Some(route)).unwrap();
        strangler_report::json(&reports)["routes"][0].clone()
    }

    /// One sample of the metrics (`name{labels}`), 0 when absent.
    pub async fn metric(&self, sample: &str) -> u64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// A request to the admin API, with or without the token.
    pub async fn admin(&self, method: Method, path: &str, with_token: bool) -> Answer {
        let admin = Client::new(&self.admin_url);
        let mut request = admin.request(method, path);
        if with_token {
            request = request.bearer_auth(&self.token);
        }
        admin.send(request).await
    }
}

/// Sends `raw` bytes as one HTTP/1.1 request on a new connection and returns the status
/// line's code, the headers (lower-cased names) and the body. For paths a URL library would
/// rewrite before sending.
pub async fn raw_request(addr: &str, raw: &str) -> (u16, Vec<(String, String)>, String) {
    raw_bytes(addr, raw.as_bytes()).await
}

/// [`raw_request`] with bytes that need not be text (a header a client library refuses).
pub async fn raw_bytes(addr: &str, raw: &[u8]) -> (u16, Vec<(String, String)>, String) {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    read_answer(stream).await
}

/// Reads one answer until the server closes the connection.
pub async fn read_answer(
    mut stream: tokio::net::TcpStream,
) -> (u16, Vec<(String, String)>, String) {
    use tokio::io::AsyncReadExt;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
        .await
        .expect("the server answers and closes")
        .unwrap();
    let text = String::from_utf8_lossy(&response).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// Builds a participant's HTTP API over the database at a path.
type MakeApp = Box<dyn Fn(&std::path::Path) -> axum::Router + Send + Sync>;

/// An extracted service served in this process on an ephemeral port (stoppable and
/// restartable on the same port and database, to play a service going down).
pub struct Service {
    pub name: String,
    pub url: String,
    pub addr: SocketAddr,
    pub db_path: PathBuf,
    pub client: Client,
    make: MakeApp,
    _dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl Service {
    async fn start_with(name: &str, make: MakeApp) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join(format!("{name}.db"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, server) = spawn_server(listener, make(&db_path));
        let url = format!("http://{addr}");
        Self {
            name: name.to_string(),
            client: Client::new(&url),
            url,
            addr,
            db_path,
            make,
            _dir: dir,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// A data service (students, finance, gamification).
    pub async fn data(service: &'static domains::service::DataService) -> Self {
        Self::start_with(
            service.origin,
            Box::new(move |path| service.app(service.open(path).unwrap())),
        )
        .await
    }

    /// The enrollment service, calling the given services.
    pub async fn enrollment(students: &str, finance: &str, gamification: &str) -> Self {
        let upstreams = enrollment_service::Upstreams {
            students: students.to_string(),
            finance: finance.to_string(),
            gamification: gamification.to_string(),
        };
        Self::start_with(
            "enrollment",
            Box::new(move |path| {
                enrollment_service::app(enrollment_service::open(path).unwrap(), upstreams.clone())
                    .unwrap()
            }),
        )
        .await
    }

    /// Stops serving (the port refuses connections until [`Service::resume`]).
    pub async fn halt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// Serves again on the same port and database.
    pub async fn resume(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        let (stop, server) = spawn_server(listener, (self.make)(&self.db_path));
        self.stop = Some(stop);
        self.server = Some(server);
    }

    pub fn sql(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(&self.db_path).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn
    }

    pub fn count(&self, table: &str) -> i64 {
        self.sql()
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }
}

/// The whole system in one process: the monolith, the four services, and a proxy whose plan
/// routes each domain and syncs data both ways, as the demo plan does.
pub struct Stack {
    pub legacy: Monolith,
    pub students: Service,
    pub finance: Service,
    pub gamification: Service,
    pub enrollment: Service,
    pub proxy: TestProxy,
}

/// The demo plan's routes and sync links (`migration-plan.toml` from `[[routes]]` on); the
/// services and proxy settings come from the test.
pub fn demo_routes_and_sync() -> String {
    let plan = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../migration-plan.toml"
    ))
    .expect("the demo plan");
    let start = plan.find("[[routes]]").expect("the demo plan has routes");
    plan[start..].to_string()
}

impl Stack {
    pub async fn start() -> Self {
        let legacy = Monolith::start().await;
        let students = Service::data(&students_service::SERVICE).await;
        let finance = Service::data(&finance_service::SERVICE).await;
        let gamification = Service::data(&gamification_service::SERVICE).await;
        let enrollment = Service::enrollment(&students.url, &finance.url, &gamification.url).await;
        let dir = tempfile::tempdir().unwrap();
        let quoted = |url: &str| format!("\"{url}\"");
        let mut plan = plan_toml(
            dir.path(),
            &[
                ("legacy", quoted(&legacy.url)),
                ("students", quoted(&students.url)),
                ("finance", quoted(&finance.url)),
                ("gamification", quoted(&gamification.url)),
                ("enrollment", quoted(&enrollment.url)),
            ],
            "",
        );
        plan.push_str(&demo_routes_and_sync());
        let proxy = TestProxy::start(dir, &plan).await;
        Self {
            legacy,
            students,
            finance,
            gamification,
            enrollment,
            proxy,
        }
    }

    /// Every link's progress from the store.
    pub fn links(&self) -> Vec<strangler_store::LinkProgress> {
        strangler_store::open(&strangler_plan::StoreLocation::File(
            self.proxy.dir.path().join("strangler.db"),
        ))
        .unwrap()
        .links()
        .unwrap()
    }

    /// Waits until every sync link has delivered everything its source has committed
    /// (checked against each source's feed head, not just the link's last read).
    pub async fn synced(&self) {
        let heads = [
            ("legacy", self.legacy.client.clone()),
            ("students", self.students.client.clone()),
            ("finance", self.finance.client.clone()),
            ("gamification", self.gamification.client.clone()),
            ("enrollment", self.enrollment.client.clone()),
        ];
        eventually(
            Duration::from_secs(30),
            "every sync link caught up",
            || async {
                let mut head_of = std::collections::HashMap::new();
                for (name, client) in &heads {
                    let page = client.get("/_events?after=0&limit=1").await.body;
                    head_of.insert(*name, page["head"].as_i64().unwrap_or(0));
                }
                let links = self.links();
                let all = links.len() == 8
                    && links.iter().all(|l| {
                        let from = l.link.split("->").next().unwrap_or_default();
                        l.last_error.is_none()
                            && l.checkpoint >= head_of.get(from).copied().unwrap_or(i64::MAX)
                    });
                all.then_some(())
            },
        )
        .await;
    }
}

/// What a scripted upstream answers: status, content type, body.
pub type Script = Arc<dyn Fn(&str, &[u8]) -> (u16, &'static str, Vec<u8>) + Send + Sync>;

/// A stand-in service whose answers a test scripts, which records what it received (path,
/// whether it was a dry run) and can answer slowly.
pub struct ScriptedUpstream {
    pub addr: SocketAddr,
    /// (method, path, dry-run header) of every request received.
    pub received: Arc<std::sync::Mutex<Vec<(String, String, bool)>>>,
    _stop: oneshot::Sender<()>,
}

impl ScriptedUpstream {
    pub async fn start(delay: Duration, script: Script) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let script = Arc::clone(&script);
            let log = Arc::clone(&log);
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .unwrap_or_default();
                let dry = parts.headers.get("x-strangler-dry-run").is_some();
                log.lock().unwrap().push((
                    parts.method.to_string(),
                    parts.uri.path().to_string(),
                    dry,
                ));
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let (status, content_type, out) = script(parts.uri.path(), &body);
                axum::response::Response::builder()
                    .status(status)
                    .header("content-type", content_type)
                    .body(axum::body::Body::from(out))
                    .unwrap()
            }
        });
        let (stop, _) = spawn_server(listener, app);
        Self {
            addr,
            received,
            _stop: stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<(String, String, bool)> {
        self.received.lock().unwrap().clone()
    }
}

/// A JSON answer for a [`Script`].
pub fn json_answer(value: Value) -> (u16, &'static str, Vec<u8>) {
    (200, "application/json", value.to_string().into_bytes())
}

/// What a webhook received: the `Authorization` header and the JSON body.
pub type Delivery = (Option<String>, Value);

/// A webhook receiver on port 0: keeps every JSON body posted to it, with its
/// `Authorization` header.
pub struct WebhookReceiver {
    pub addr: SocketAddr,
    received: Arc<std::sync::Mutex<Vec<Delivery>>>,
    _stop: oneshot::Sender<()>,
}

impl WebhookReceiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let log = Arc::clone(&log);
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .unwrap_or_default();
                let auth = parts
                    .headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                log.lock()
                    .unwrap()
                    .push((auth, serde_json::from_slice(&body).unwrap_or(Value::Null)));
                axum::http::StatusCode::NO_CONTENT
            }
        });
        let (stop, _) = spawn_server(listener, app);
        Self {
            addr,
            received,
            _stop: stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Every event received so far: (Authorization header, body).
    pub fn events(&self) -> Vec<Delivery> {
        self.received.lock().unwrap().clone()
    }
}
