//! The migration plan (`migration-plan.toml`): topology and intent, versioned with the code.
//! Parsing keeps spans so that every error names the file, line and field.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, Method, Uri};
use serde::Deserialize;
use toml::Spanned;

mod edge;

pub use edge::{load_policy, parse_policy};

use crate::analysis::{AnalysisSpec, NotifyEvent, NotifyFormat, NotifySpec, Step};
use crate::edge::{EdgeSpec, RouteEdge};
use crate::location::{self, StoreLocation};
use crate::path::PathTemplate;
use crate::schedule::{Cron, ScheduleSpec, When};
use crate::stage::Stage;
use crate::sync::{
    LinkSource, LinkTarget, PgInbox, PgOutbox, PgTable, RawEndpoint, RawSnapshot, RawSync,
    SnapshotQueries, SyncLink, is_identifier, is_table_name,
};
use crate::transport::{RawTls, TlsFiles, UpstreamProtocol};

/// File read when no `--plan` or `STRANGLER_PLAN` names another.
pub const DEFAULT_PLAN: &str = "migration-plan.toml";
/// Upstream timeout of a route that sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request body forwarded when the plan sets none.
pub const DEFAULT_MAX_BODY: u64 = 10 * 1024 * 1024;
/// Time a client has to send its request headers when the plan sets none.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A data-plane thread busier than this (the moving average of the share of time it is
/// running or waiting for a core) sheds shadow legs.
pub const DEFAULT_SHADOW_MAX_BUSY: f64 = 0.8;
/// Longest pause between a request body's bytes when the plan sets none.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests a service is sent at once when the plan sets none.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1000;
/// Shortest interval a `[[schedule]]` may run at.
pub const MIN_SCHEDULE_EVERY: Duration = Duration::from_secs(1);

/// A plan that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    pub file: PathBuf,
    /// 1-based line, 0 when the error concerns the whole file.
    pub line: usize,
    pub column: usize,
    /// Dotted path of the offending field, e.g. `routes[2].service`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for PlanError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    proxy: Spanned<RawProxy>,
    services: Spanned<BTreeMap<String, Spanned<RawService>>>,
    #[serde(default)]
    routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    sync: Vec<Spanned<RawSync>>,
    /// Defaults of every route's cutover gate.
    gate: Option<Spanned<RawGate>>,
    /// Defaults of every route's analysis.
    analysis: Option<Spanned<RawAnalysis>>,
    #[serde(default)]
    notify: Vec<Spanned<RawNotify>>,
    #[serde(default)]
    schedule: Vec<Spanned<RawSchedule>>,
    telemetry: Option<Spanned<crate::telemetry::RawTelemetry>>,
    /// The edge policies' defaults: authentication, rate limits (before any service is
    /// called) and the response cache (`[edge.cache]`).
    edge: Option<Spanned<edge::RawEdge>>,
    #[serde(default)]
    aggregates: Vec<Spanned<crate::cache::RawAggregate>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    verify: Spanned<String>,
    every: Spanned<String>,
    #[serde(default)]
    types: Vec<Spanned<String>>,
    rate: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawAnalysis {
    interval: Option<Spanned<String>>,
    failure_limit: Option<Spanned<i64>>,
    max_error_rate: Option<Spanned<f64>>,
    max_p99_ratio: Option<Spanned<f64>>,
    max_mismatch_rate: Option<Spanned<f64>>,
    max_shadow_error_rate: Option<Spanned<f64>>,
    max_sync_lag: Option<Spanned<String>>,
    min_requests: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    canary: Option<Spanned<i64>>,
    #[serde(rename = "for")]
    hold: Option<Spanned<String>>,
    pause: Option<bool>,
    cutover: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    url: Spanned<String>,
    #[serde(default)]
    events: Vec<Spanned<String>>,
    token: Option<String>,
    format: Option<Spanned<String>>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawGate {
    min_comparisons: Option<Spanned<i64>>,
    max_mismatch_rate: Option<Spanned<f64>>,
    verify_within: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShadow {
    sample: Option<Spanned<f64>>,
    writes: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    max_in_flight: Option<Spanned<i64>>,
    max_body: Option<Spanned<String>>,
    noise_sample: Option<Spanned<f64>>,
    reverse_shadow: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompare {
    #[serde(default)]
    ignore: Vec<Spanned<String>>,
    tolerance: Option<Spanned<f64>>,
    #[serde(default)]
    sets: Vec<Spanned<String>>,
    #[serde(default)]
    keyed: BTreeMap<String, String>,
    headers: Option<Vec<String>>,
    numbers: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapture {
    mismatches: Spanned<i64>,
    #[serde(default)]
    redact: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    listen: Spanned<String>,
    admin_listen: Spanned<String>,
    state: Spanned<String>,
    last_known: Option<Spanned<String>>,
    served_by_headers: Option<bool>,
    max_body: Option<Spanned<String>>,
    header_read_timeout: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    body_read_timeout: Option<Spanned<String>>,
    #[serde(default)]
    trusted_proxies: Vec<Spanned<String>>,
    trailing_slash: Option<Spanned<String>>,
    case_sensitive: Option<bool>,
    shadow_max_busy: Option<Spanned<String>>,
    tls: Option<Spanned<RawTls>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    urls: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    legacy: bool,
    run: Option<Spanned<Vec<String>>>,
    max_in_flight: Option<Spanned<i64>>,
    protocol: Option<Spanned<String>>,
    ca: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Spanned<String>,
    paths: Spanned<Vec<Spanned<String>>>,
    methods: Option<Vec<Spanned<String>>>,
    service: Spanned<String>,
    stage: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    canary: Option<Spanned<RawCanary>>,
    shadow: Option<Spanned<RawShadow>>,
    compare: Option<Spanned<RawCompare>>,
    capture: Option<Spanned<RawCapture>>,
    gate: Option<Spanned<RawGate>>,
    #[serde(default)]
    fallback: bool,
    upgrades: Option<bool>,
    buffer_body_up_to: Option<Spanned<String>>,
    analysis: Option<Spanned<RawAnalysis>>,
    steps: Option<Spanned<Vec<Spanned<RawStep>>>>,
    translate: Option<Spanned<crate::translate::RawTranslate>>,
    cache: Option<Spanned<crate::cache::RawRouteCache>>,
    #[serde(default)]
    public: bool,
    rate_limit: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCanary {
    percent: Option<Spanned<i64>>,
    sticky: Option<Spanned<String>>,
}

/// A validated plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The file it was read from.
    pub file: PathBuf,
    pub proxy: ProxySettings,
    pub services: BTreeMap<String, ServiceSpec>,
    /// Name of the one service with `legacy = true`.
    pub legacy: String,
    pub routes: Vec<RouteSpec>,
    pub sync: Vec<SyncLink>,
    /// Webhooks told about stage changes, steps and automatic rollbacks.
    pub notify: Vec<NotifySpec>,
    /// Verifies the fleet's controller runs by itself (`[[schedule]]`).
    pub schedules: Vec<ScheduleSpec>,
    /// Where request spans are exported (`[telemetry]`; `None`: nowhere).
    pub telemetry: Option<crate::TelemetrySpec>,
    /// The proxy's response cache (`[edge.cache]`).
    pub cache: crate::cache::CacheSettings,
    /// Routes answered by fanning out to other routes (`[[aggregates]]`).
    pub aggregates: Vec<crate::cache::AggregateSpec>,
    /// Authentication and rate limits every route gets unless it says otherwise.
    pub edge: EdgeSpec,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxySettings {
    /// Data-plane listener.
    pub listen: SocketAddr,
    /// Admin API listener, never the same as `listen`.
    pub admin_listen: SocketAddr,
    /// The state store: a SQLite file (relative paths are relative to the plan's
    /// directory) or a PostgreSQL URL.
    pub state: StoreLocation,
    /// Where this proxy keeps its last-known route table, for starting while the store is
    /// unreachable (`[proxy] last_known`; by default beside a SQLite store, or
    /// `data/last-known-table.json` beside the plan).
    pub last_known: PathBuf,
    /// Whether responses carry `x-strangler-route` and `x-strangler-served-by`.
    pub served_by_headers: bool,
    /// Largest request body forwarded (413 above).
    pub max_body_bytes: u64,
    /// Time a client has to send its request headers.
    pub header_read_timeout: Duration,
    /// Upstream timeout of routes that set none, and of unmatched requests.
    pub default_timeout: Duration,
    /// Longest pause between a request body's bytes (408 after it).
    pub body_read_timeout: Duration,
    /// Peers whose forwarding headers (`X-Forwarded-For`, `Forwarded`, `X-Real-IP`,
    /// `X-Forwarded-Proto`) are kept and appended to; from anyone else they are replaced.
    pub trusted_proxies: Vec<Cidr>,
    /// How request paths meet route templates.
    pub matching: PathMatching,
    /// A data-plane thread busy (running or waiting for a core) more than this share of the
    /// time, on a moving average, sheds shadow legs until it is calm again (`None`: `"off"`,
    /// shadow never yields).
    pub shadow_max_busy: Option<f64>,
    /// TLS on the data-plane listener (`None`: plain TCP); either way it speaks HTTP/1.1
    /// and HTTP/2.
    pub tls: Option<TlsFiles>,
}

/// Where a proxy keeps its last-known route table when the plan does not say: beside a
/// SQLite store (`strangler.db.last-known.json`), else `data/last-known-table.json` in the
/// plan's directory.
pub fn default_last_known(state: &StoreLocation, plan_dir: &Path) -> PathBuf {
    match state.file() {
        Some(file) => {
            let mut name = file.file_name().unwrap_or_default().to_os_string();
            name.push(".last-known.json");
            file.with_file_name(name)
        }
        None => plan_dir.join("data").join("last-known-table.json"),
    }
}

/// How a request path meets the route templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathMatching {
    pub trailing_slash: TrailingSlash,
    /// Literal segments compare with letter case (the default); `false`: ASCII case is
    /// ignored, the path is forwarded as sent.
    pub case_sensitive: bool,
}

impl Default for PathMatching {
    fn default() -> Self {
        Self {
            trailing_slash: TrailingSlash::Strict,
            case_sensitive: true,
        }
    }
}

/// What a path that matches a route only without its trailing slash (`/students/7/`) gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrailingSlash {
    /// It does not match: it goes to legacy as unmatched (counted as a near miss).
    Strict,
    /// 308 to the path without the slash.
    Redirect,
    /// It matches, and is forwarded without the slash.
    Ignore,
}

/// An address range in CIDR notation (`10.0.0.0/8`, `::1/128`; a plain address is /32 or
/// /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(raw: &str) -> Option<Self> {
        let (addr, prefix) = match raw.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (raw.trim(), None),
        };
        let addr: std::net::IpAddr = addr.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|p| *p <= max)?
            }
            Some(_) => return None,
        };
        Some(Self { addr, prefix })
    }

    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as its IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    /// Base URLs of its instances (`http://host:port`), used round-robin.
    pub urls: Vec<Uri>,
    pub legacy: bool,
    /// Command line that starts it for `strangler up` (dev mode): program, then arguments,
    /// run in the plan's directory. Services without one are expected to be running.
    pub run: Option<Vec<String>>,
    /// Requests sent to it at once; beyond, the proxy answers 503 (`overloaded`).
    pub max_in_flight: usize,
    /// HTTP/1.1, h2c or h2 (TLS).
    pub protocol: UpstreamProtocol,
    /// Extra trust anchors (PEM) for an `h2` service's certificate, resolved against the
    /// plan's directory.
    pub ca: Option<PathBuf>,
}

/// How a canary keeps the same caller on the same side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    Header(HeaderName),
    Cookie(String),
    PathParam(String),
}

impl fmt::Display for Sticky {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sticky::Header(h) => write!(f, "header:{h}"),
            Sticky::Cookie(c) => write!(f, "cookie:{c}"),
            Sticky::PathParam(p) => write!(f, "path:{p}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    pub name: String,
    pub paths: Vec<PathTemplate>,
    /// `None`: every method.
    pub methods: Option<Vec<Method>>,
    /// The service the route moves to.
    pub service: String,
    /// Stage when the store holds none for this route.
    pub initial_stage: Stage,
    pub timeout: Duration,
    pub sticky: Option<Sticky>,
    /// How the shadow leg mirrors this route.
    pub shadow: ShadowSpec,
    /// How its answers are compared.
    pub compare: CompareSpec,
    /// Which mismatching exchanges are kept for replay (`None`: none).
    pub capture: Option<CaptureSpec>,
    /// What `canary` and `cutover` require of its comparisons.
    pub gate: GateSpec,
    /// When the new service fails to connect or answers 502/503 on a body-less idempotent
    /// request, answer it from legacy instead.
    pub fallback: bool,
    /// Whether a request may upgrade the connection (WebSocket); refused with 403 if not.
    pub upgrades: bool,
    /// Request bodies up to this size are read whole before the upstream is called (so a
    /// body over `max_body` is refused before any byte reaches it); larger ones stream.
    pub buffer_body_up_to: Option<u64>,
    /// How it is judged while it moves, and when it is rolled back by itself.
    pub analysis: AnalysisSpec,
    /// Its progressive rollout (`strangler rollout start`); empty: none.
    pub steps: Vec<Step>,
    /// How the new service's requests and answers are translated (`None`: they are not).
    pub translate: Option<crate::TranslateSpec>,
    /// Its answers kept in the proxy's response cache (`None`: not cached).
    pub cache: Option<crate::cache::RouteCache>,
    /// Whether it is public, and its own rate limit.
    pub edge: RouteEdge,
}

/// How a route's answers are compared (its `compare` section), for the diff engine.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareSpec {
    /// JSON Pointer patterns (`*` for any one token) whose differences do not count.
    pub ignore: Vec<String>,
    /// Numbers closer than this are equal.
    pub tolerance: f64,
    /// Patterns of arrays whose order does not matter.
    pub sets: Vec<String>,
    /// Patterns of arrays whose elements are matched by a field: (pattern, field).
    pub keyed: Vec<(String, String)>,
    /// Headers compared besides the status and body (lower-case).
    pub headers: Vec<String>,
    /// `numbers = "exact"`: an integer never equals a float (`1` is not `1.0`); by default
    /// numbers compare by value.
    pub exact_numbers: bool,
}

impl Default for CompareSpec {
    fn default() -> Self {
        Self {
            ignore: Vec::new(),
            tolerance: 0.0,
            sets: Vec::new(),
            keyed: Vec::new(),
            headers: vec!["content-type".to_string()],
            exact_numbers: false,
        }
    }
}

/// Most cases a route may keep per differing path (`capture.mismatches`).
pub const MAX_CAPTURES_PER_PATH: usize = 100;

/// A route's `capture` section: mismatching exchanges kept in the store for
/// `strangler capture export` and `strangler replay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureSpec {
    /// Cases kept per differing path (the newest; older ones are evicted first).
    pub mismatches: usize,
    /// What is taken out of a case before it is stored.
    pub redact: Vec<Redaction>,
}

/// One thing `capture.redact` takes out of a captured case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redaction {
    /// `header:NAME`: the header (lower-case) is dropped from the request and both answers.
    Header(String),
    /// `query:NAME`: the query parameter's value is replaced.
    Query(String),
    /// A JSON Pointer pattern (`/password`, `/cards/*/number`): the value there in the
    /// request body and both answers' bodies is replaced.
    Body(String),
}

impl Redaction {
    /// Reads one `redact` entry.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if let Some(name) = raw.strip_prefix("header:") {
            return HeaderName::from_bytes(name.as_bytes())
                .map(|h| Redaction::Header(h.as_str().to_string()))
                .map_err(|_| format!("`{name}` is not a header name"));
        }
        if let Some(name) = raw.strip_prefix("query:") {
            return if name.is_empty() {
                Err("`query:` needs a parameter name".to_string())
            } else {
                Ok(Redaction::Query(name.to_string()))
            };
        }
        if raw.starts_with('/') {
            return Ok(Redaction::Body(raw.to_string()));
        }
        Err(format!(
            "`{raw}` is not header:NAME, query:NAME or a JSON Pointer like /password"
        ))
    }
}

impl fmt::Display for Redaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Redaction::Header(name) => write!(f, "header:{name}"),
            Redaction::Query(name) => write!(f, "query:{name}"),
            Redaction::Body(pattern) => f.write_str(pattern),
        }
    }
}

/// A comparison path pattern is a JSON Pointer (empty: the whole document) where `*`
/// stands for any one token.
pub fn check_pattern(raw: &str) -> Result<(), String> {
    if raw.is_empty() || raw.starts_with('/') {
        Ok(())
    } else {
        Err(format!("`{raw}` must be a JSON Pointer starting with /"))
    }
}

/// What happens to writes (unsafe methods) in shadow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowWrites {
    /// Not mirrored (counted as unmirrored `write_skipped`).
    Skip,
    /// Mirrored with `x-strangler-dry-run: 1`: executed and rolled back by the candidate.
    DryRun,
}

/// A route's shadow leg.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowSpec {
    /// Share of requests mirrored, 0–100 %.
    pub sample_percent: f64,
    pub writes: ShadowWrites,
    /// The candidate's own timeout.
    pub timeout: Duration,
    /// Mirrored requests in flight at once for this route; beyond, skipped (`busy`).
    pub max_in_flight: usize,
    /// Largest request or response body compared; beyond, skipped (`too_large`).
    pub max_body_bytes: usize,
    /// Share of mirrored safe requests also sent to the primary a second time, to learn
    /// which paths differ by themselves (noise).
    pub noise_percent: f64,
    /// In cutover, mirror to the monolith and compare the other way round.
    pub reverse: bool,
}

impl Default for ShadowSpec {
    fn default() -> Self {
        Self {
            sample_percent: 100.0,
            writes: ShadowWrites::Skip,
            timeout: Duration::from_secs(5),
            max_in_flight: 64,
            max_body_bytes: 1 << 20,
            noise_percent: 10.0,
            reverse: false,
        }
    }
}

/// The cutover gate of a route.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateSpec {
    pub min_comparisons: u64,
    /// Mismatched ÷ compared at most this (noise not counted).
    pub max_mismatch_rate: f64,
    /// A cutover also needs a passing `strangler verify` of every sync link of the route's
    /// service, covering every kind the link carries, finished no longer ago than this
    /// (`None`: no verify needed).
    pub verify_within: Option<Duration>,
}

impl Default for GateSpec {
    fn default() -> Self {
        Self {
            min_comparisons: 100,
            max_mismatch_rate: 0.001,
            verify_within: None,
        }
    }
}

impl RouteSpec {
    pub fn allows(&self, method: &Method) -> bool {
        self.methods.as_ref().is_none_or(|m| m.contains(method))
    }
}

/// Reads and validates the plan at `file`.
pub fn load(file: &Path) -> Result<Plan, PlanError> {
    parse(file, &read_text(file, "the plan")?)
}

/// The text of `file` (`what` it is, for the message).
fn read_text(file: &Path, what: &str) -> Result<String, PlanError> {
    std::fs::read_to_string(file).map_err(|err| PlanError {
        file: file.to_path_buf(),
        line: 0,
        column: 0,
        field: String::new(),
        message: format!("cannot read {what}: {err}"),
    })
}

/// Validates plan `text`, naming `file` in errors.
pub fn parse(file: &Path, text: &str) -> Result<Plan, PlanError> {
    let ctx = Ctx { file, text };
    ctx.validate(ctx.deserialize()?)
}

pub(crate) struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    /// The text as `T`, a syntax or shape error pointing at its place.
    fn deserialize<T: serde::de::DeserializeOwned>(&self) -> Result<T, PlanError> {
        toml::from_str(self.text).map_err(|err| {
            let span = err.span().unwrap_or(0..0);
            let message = err.message().replace('\n', " ");
            self.error(&span, "", message)
        })
    }

    fn error(&self, span: &Range<usize>, field: &str, message: impl Into<String>) -> PlanError {
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let column = start - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        PlanError {
            file: self.file.to_path_buf(),
            line,
            column,
            field: field.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn at<T>(
        &self,
        value: &Spanned<T>,
        field: &str,
        message: impl Into<String>,
    ) -> PlanError {
        self.error(&value.span(), field, message)
    }

    pub(crate) fn duration(
        &self,
        value: &Spanned<String>,
        field: &str,
    ) -> Result<Duration, PlanError> {
        parse_duration(value.get_ref()).ok_or_else(|| {
            self.at(
                value,
                field,
                "must be a duration like 250ms, 5s, 2m or 1h, above zero",
            )
        })
    }

    fn validate(&self, raw: RawPlan) -> Result<Plan, PlanError> {
        let proxy = self.proxy(raw.proxy.get_ref())?;
        let services = self.services(&raw.services)?;
        let legacy = services
            .values()
            .find(|s| s.legacy)
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let default_gate = self.gate(
            raw.gate.as_ref().map(|g| g.get_ref()),
            GateSpec::default(),
            "gate",
        )?;
        let default_analysis = self.analysis(
            raw.analysis.as_ref().map(|a| a.get_ref()),
            AnalysisSpec::default(),
            "analysis",
        )?;
        let mut routes = self.routes(
            &raw.routes,
            &services,
            &legacy,
            proxy.default_timeout,
            (default_gate, default_analysis),
        )?;
        let cache =
            self.cache_settings(raw.edge.as_ref().and_then(|e| e.get_ref().cache.as_ref()))?;
        for (i, (route, r)) in routes.iter_mut().zip(&raw.routes).enumerate() {
            if let Some(section) = &r.get_ref().cache {
                route.cache = Some(self.route_cache(section, route, i, &cache)?);
            }
        }
        let aggregates = self.aggregates(&raw.aggregates, &routes)?;
        if let (Some(_), Some(first)) = (&proxy.tls, raw.aggregates.first()) {
            return Err(self.at(
                first,
                "aggregates[0]",
                "an aggregate asks its parts of the proxy's own listener in plain HTTP, and with \
                 proxy.tls that listener speaks only TLS: aggregates need a plain listener",
            ));
        }
        let notify = self.notify(&raw.notify)?;
        let sync = self.sync(&raw.sync, &services)?;
        let telemetry = raw
            .telemetry
            .as_ref()
            .map(|t| self.telemetry(t.get_ref()))
            .transpose()?;
        let dir = self.file.parent().unwrap_or(Path::new("."));
        let state = proxy.state.clone().relative_to(dir);
        let last_known = if proxy.last_known.as_os_str().is_empty() {
            default_last_known(&state, dir)
        } else {
            dir.join(&proxy.last_known)
        };
        let mut plan = Plan {
            file: self.file.to_path_buf(),
            proxy: ProxySettings {
                state,
                last_known,
                ..proxy
            },
            services,
            legacy,
            routes,
            sync,
            notify,
            schedules: Vec::new(),
            telemetry,
            cache,
            aggregates,
            edge: match &raw.edge {
                None => EdgeSpec::default(),
                Some(edge) => self.edge(edge.get_ref())?,
            },
        };
        plan.schedules = self.schedules(&raw.schedule, &plan)?;
        Ok(plan)
    }

    fn telemetry(
        &self,
        raw: &crate::telemetry::RawTelemetry,
    ) -> Result<crate::TelemetrySpec, PlanError> {
        use crate::telemetry::{DEFAULT_SERVICE_NAME, parse_endpoint, parse_sample};
        let otlp_endpoint = parse_endpoint(raw.otlp_endpoint.get_ref())
            .map_err(|m| self.at(&raw.otlp_endpoint, "telemetry.otlp_endpoint", m))?;
        let sample = match &raw.sample {
            Some(s) => parse_sample(s.get_ref()).map_err(|m| self.at(s, "telemetry.sample", m))?,
            None => 1.0,
        };
        let service_name = match &raw.service_name {
            Some(n) if n.get_ref().trim().is_empty() => {
                return Err(self.at(n, "telemetry.service_name", "must not be empty"));
            }
            Some(n) => n.get_ref().clone(),
            None => DEFAULT_SERVICE_NAME.to_string(),
        };
        Ok(crate::TelemetrySpec {
            otlp_endpoint,
            sample,
            service_name,
        })
    }

    fn schedules(
        &self,
        raw: &[Spanned<RawSchedule>],
        plan: &Plan,
    ) -> Result<Vec<ScheduleSpec>, PlanError> {
        let mut schedules: Vec<ScheduleSpec> = Vec::new();
        for (i, spanned) in raw.iter().enumerate() {
            let s = spanned.get_ref();
            let f = |name: &str| format!("schedule[{i}].{name}");
            let verify = s.verify.get_ref();
            match plan.links_of(verify) {
                Some(links) if links.is_empty() => {
                    return Err(self.at(
                        &s.verify,
                        &f("verify"),
                        format!("route `{verify}`: no [[sync]] link goes to or from its service"),
                    ));
                }
                Some(_) => {}
                None => {
                    let or_none = |names: Vec<String>| {
                        if names.is_empty() {
                            "none".to_string()
                        } else {
                            names.join(", ")
                        }
                    };
                    return Err(self.at(
                        &s.verify,
                        &f("verify"),
                        format!(
                            "unknown link or route `{verify}` (links: {}; routes: {})",
                            or_none(plan.sync.iter().map(SyncLink::name).collect()),
                            or_none(plan.routes.iter().map(|r| r.name.clone()).collect()),
                        ),
                    ));
                }
            }
            if let Some(j) = schedules.iter().position(|o| &o.verify == verify) {
                return Err(self.at(
                    &s.verify,
                    &f("verify"),
                    format!("`{verify}` is already scheduled by schedule[{j}]"),
                ));
            }
            let every = s.every.get_ref();
            let when = match parse_duration(every) {
                Some(d) if d < MIN_SCHEDULE_EVERY => {
                    return Err(self.at(&s.every, &f("every"), "must be 1s or more"));
                }
                Some(d) => When::Every(d),
                None if every.split_whitespace().count() == 5 => When::Cron(
                    Cron::parse(every).map_err(|why| self.at(&s.every, &f("every"), why))?,
                ),
                None => {
                    return Err(self.at(
                        &s.every,
                        &f("every"),
                        "must be a duration like 30s or 1h, or a cron expression like \"0 3 * * *\" (UTC)",
                    ));
                }
            };
            let mut types = Vec::new();
            for (j, t) in s.types.iter().enumerate() {
                let p = t.get_ref();
                let kind = p.strip_suffix(".*").unwrap_or(p);
                if !(p == "*" || is_name(kind)) {
                    return Err(self.at(
                        t,
                        &f(&format!("types[{j}]")),
                        "must be an entity kind like `student`, `student.*` or `*`",
                    ));
                }
                types.push(p.clone());
            }
            let rate = match &s.rate {
                None => None,
                Some(v) => {
                    let n = match v.get_ref() {
                        toml::Value::Integer(n) => u32::try_from(*n).ok(),
                        toml::Value::String(t) => {
                            t.trim().trim_end_matches("/s").parse::<u32>().ok()
                        }
                        _ => None,
                    };
                    Some(n.filter(|n| *n > 0).ok_or_else(|| {
                        self.at(
                            v,
                            &f("rate"),
                            "must be entities per second above zero, like 500 or \"500/s\"",
                        )
                    })?)
                }
            };
            schedules.push(ScheduleSpec {
                verify: verify.clone(),
                when,
                types,
                rate,
            });
        }
        Ok(schedules)
    }

    fn analysis(
        &self,
        raw: Option<&RawAnalysis>,
        base: AnalysisSpec,
        field: &str,
    ) -> Result<AnalysisSpec, PlanError> {
        let Some(raw) = raw else {
            return Ok(base);
        };
        let mut spec = base;
        let f = |name: &str| format!("{field}.{name}");
        if let Some(v) = &raw.interval {
            spec.interval = self.duration(v, &f("interval"))?;
        }
        if let Some(v) = &raw.max_sync_lag {
            spec.max_sync_lag = Some(self.duration(v, &f("max_sync_lag"))?);
        }
        if let Some(n) = &raw.failure_limit {
            spec.failure_limit = u32::try_from(*n.get_ref())
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| self.at(n, &f("failure_limit"), "must be 1 or more"))?;
        }
        if let Some(n) = &raw.min_requests {
            spec.min_requests = u64::try_from(*n.get_ref())
                .map_err(|_| self.at(n, &f("min_requests"), "must be 0 or more"))?;
        }
        let fraction = |v: &Spanned<f64>, name: &str| {
            let x = *v.get_ref();
            if (0.0..=1.0).contains(&x) {
                Ok(Some(x))
            } else {
                Err(self.at(v, &f(name), "must be a fraction from 0 to 1 (0.05 is 5 %)"))
            }
        };
        if let Some(v) = &raw.max_error_rate {
            spec.max_error_rate = fraction(v, "max_error_rate")?;
        }
        if let Some(v) = &raw.max_mismatch_rate {
            spec.max_mismatch_rate = fraction(v, "max_mismatch_rate")?;
        }
        if let Some(v) = &raw.max_shadow_error_rate {
            spec.max_shadow_error_rate = fraction(v, "max_shadow_error_rate")?;
        }
        if let Some(v) = &raw.max_p99_ratio {
            let x = *v.get_ref();
            if !(x.is_finite() && x >= 1.0) {
                return Err(self.at(v, &f("max_p99_ratio"), "must be a ratio of 1 or more"));
            }
            spec.max_p99_ratio = Some(x);
        }
        Ok(spec)
    }

    fn steps(
        &self,
        raw: &Spanned<Vec<Spanned<RawStep>>>,
        field: &str,
    ) -> Result<Vec<Step>, PlanError> {
        let mut steps = Vec::new();
        for (i, spanned) in raw.get_ref().iter().enumerate() {
            let s = spanned.get_ref();
            let f = format!("{field}[{i}]");
            let step = match (&s.canary, s.pause, s.cutover) {
                (Some(p), None, None) => {
                    let percent = u8::try_from(*p.get_ref())
                        .ok()
                        .filter(|p| (1..=100).contains(p))
                        .ok_or_else(|| self.at(p, &format!("{f}.canary"), "must be 1 to 100"))?;
                    let hold = match &s.hold {
                        Some(d) => self.duration(d, &format!("{f}.for"))?,
                        None => {
                            return Err(self.at(
                                spanned,
                                &f,
                                "a canary step says how long it holds: { canary = 10, for = \"10m\" }",
                            ));
                        }
                    };
                    Step::Canary { percent, hold }
                }
                (None, Some(true), None) if s.hold.is_none() => Step::Pause,
                (None, None, Some(true)) if s.hold.is_none() => Step::Cutover,
                _ => {
                    return Err(self.at(
                        spanned,
                        &f,
                        "a step is { canary = N, for = \"10m\" }, { pause = true } or { cutover = true }",
                    ));
                }
            };
            if steps.last() == Some(&Step::Cutover) {
                return Err(self.at(spanned, &f, "nothing comes after the cutover step"));
            }
            steps.push(step);
        }
        if !steps.is_empty() && steps.last() != Some(&Step::Cutover) {
            return Err(self.at(raw, field, "a rollout ends with { cutover = true }"));
        }
        Ok(steps)
    }

    fn notify(&self, raw: &[Spanned<RawNotify>]) -> Result<Vec<NotifySpec>, PlanError> {
        let mut hooks = Vec::new();
        for (i, spanned) in raw.iter().enumerate() {
            let n = spanned.get_ref();
            let f = |name: &str| format!("notify[{i}].{name}");
            let url: http::Uri = n
                .url
                .get_ref()
                .parse()
                .ok()
                .filter(|u: &http::Uri| {
                    matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
                })
                .ok_or_else(|| self.at(&n.url, &f("url"), "must be an http:// or https:// URL"))?;
            let mut events = Vec::new();
            for (j, e) in n.events.iter().enumerate() {
                events.push(NotifyEvent::parse(e.get_ref()).ok_or_else(|| {
                    self.at(
                        e,
                        &f(&format!("events[{j}]")),
                        "must be stage_changed, step, paused, analysis_failed, rolled_back or verify_differed",
                    )
                })?);
            }
            if events.is_empty() {
                events = NotifyEvent::ALL.to_vec();
            }
            let format = match n.format.as_ref().map(|v| v.get_ref().as_str()) {
                None | Some("json") => NotifyFormat::Json,
                Some("slack") => NotifyFormat::Slack,
                Some(_) => {
                    return Err(self.at(
                        n.format.as_ref().unwrap_or(&n.url),
                        &f("format"),
                        "must be \"json\" or \"slack\"",
                    ));
                }
            };
            hooks.push(NotifySpec {
                url,
                events,
                token: n.token.clone(),
                format,
            });
        }
        Ok(hooks)
    }

    fn proxy(&self, raw: &RawProxy) -> Result<ProxySettings, PlanError> {
        let addr = |value: &Spanned<String>, field: &str| {
            value
                .get_ref()
                .parse::<SocketAddr>()
                .map_err(|_| self.at(value, field, "must be an address like 127.0.0.1:8080"))
        };
        let listen = addr(&raw.listen, "proxy.listen")?;
        let admin_listen = addr(&raw.admin_listen, "proxy.admin_listen")?;
        if listen == admin_listen && listen.port() != 0 {
            return Err(self.at(
                &raw.admin_listen,
                "proxy.admin_listen",
                "must differ from proxy.listen: the admin API never shares the data-plane port",
            ));
        }
        let state = StoreLocation::parse(raw.state.get_ref())
            .map_err(|reason| self.at(&raw.state, "proxy.state", &reason))?;
        let last_known = match &raw.last_known {
            Some(path) if path.get_ref().trim().is_empty() => {
                return Err(self.at(path, "proxy.last_known", "must name a file"));
            }
            Some(path) => PathBuf::from(path.get_ref()),
            None => PathBuf::new(),
        };
        let max_body_bytes = match &raw.max_body {
            None => DEFAULT_MAX_BODY,
            Some(value) => parse_size(value.get_ref()).ok_or_else(|| {
                self.at(
                    value,
                    "proxy.max_body",
                    "must be a size like 512KiB, 10MiB or 1048576",
                )
            })?,
        };
        let header_read_timeout = match &raw.header_read_timeout {
            None => DEFAULT_HEADER_READ_TIMEOUT,
            Some(value) => self.duration(value, "proxy.header_read_timeout")?,
        };
        let default_timeout = match &raw.timeout {
            None => DEFAULT_TIMEOUT,
            Some(value) => self.duration(value, "proxy.timeout")?,
        };
        let body_read_timeout = match &raw.body_read_timeout {
            None => DEFAULT_BODY_READ_TIMEOUT,
            Some(value) => self.duration(value, "proxy.body_read_timeout")?,
        };
        let mut trusted_proxies = Vec::new();
        for (i, value) in raw.trusted_proxies.iter().enumerate() {
            trusted_proxies.push(Cidr::parse(value.get_ref()).ok_or_else(|| {
                self.at(
                    value,
                    &format!("proxy.trusted_proxies[{i}]"),
                    "must be an address or a range like 10.0.0.0/8 or ::1",
                )
            })?);
        }
        let trailing_slash = match raw.trailing_slash.as_ref() {
            None => TrailingSlash::Strict,
            Some(value) => match value.get_ref().as_str() {
                "strict" => TrailingSlash::Strict,
                "redirect" => TrailingSlash::Redirect,
                "ignore" => TrailingSlash::Ignore,
                _ => {
                    return Err(self.at(
                        value,
                        "proxy.trailing_slash",
                        "must be \"strict\", \"redirect\" or \"ignore\"",
                    ));
                }
            },
        };
        let shadow_max_busy = match &raw.shadow_max_busy {
            None => Some(DEFAULT_SHADOW_MAX_BUSY),
            Some(value) if value.get_ref() == "off" => None,
            Some(value) => Some(
                value
                    .get_ref()
                    .strip_suffix('%')
                    .and_then(|n| n.trim().parse::<u8>().ok())
                    .filter(|n| (1..=100).contains(n))
                    .map(|n| f64::from(n) / 100.0)
                    .ok_or_else(|| {
                        self.at(
                            value,
                            "proxy.shadow_max_busy",
                            "must be a share like \"80%\" (1% to 100%), or \"off\"",
                        )
                    })?,
            ),
        };
        Ok(ProxySettings {
            listen,
            admin_listen,
            state,
            last_known,
            served_by_headers: raw.served_by_headers.unwrap_or(true),
            max_body_bytes,
            header_read_timeout,
            default_timeout,
            body_read_timeout,
            trusted_proxies,
            matching: PathMatching {
                trailing_slash,
                case_sensitive: raw.case_sensitive.unwrap_or(true),
            },
            shadow_max_busy,
            tls: match &raw.tls {
                None => None,
                Some(tls) => Some(self.tls(tls.get_ref())?),
            },
        })
    }

    /// A path to a file the plan names, relative to the plan's directory.
    fn plan_file(&self, value: &Spanned<String>, field: &str) -> Result<PathBuf, PlanError> {
        if value.get_ref().trim().is_empty() {
            return Err(self.at(value, field, "must name a file"));
        }
        let dir = self.file.parent().unwrap_or(Path::new("."));
        Ok(dir.join(value.get_ref()))
    }

    fn tls(&self, raw: &RawTls) -> Result<TlsFiles, PlanError> {
        Ok(TlsFiles {
            cert: self.plan_file(&raw.cert, "proxy.tls.cert")?,
            key: self.plan_file(&raw.key, "proxy.tls.key")?,
        })
    }

    fn services(
        &self,
        raw: &Spanned<BTreeMap<String, Spanned<RawService>>>,
    ) -> Result<BTreeMap<String, ServiceSpec>, PlanError> {
        let mut services = BTreeMap::new();
        for (name, service) in raw.get_ref() {
            let field = format!("services.{name}");
            if !is_name(name) {
                return Err(self.at(
                    service,
                    &field,
                    "a service name is lower-case letters, digits, - and _",
                ));
            }
            let svc = service.get_ref();
            if svc.urls.get_ref().is_empty() {
                return Err(self.at(
                    &svc.urls,
                    &format!("{field}.urls"),
                    "must list at least one URL",
                ));
            }
            let protocol = match &svc.protocol {
                None => UpstreamProtocol::default(),
                Some(p) => UpstreamProtocol::parse(p.get_ref()).ok_or_else(|| {
                    self.at(
                        p,
                        &format!("{field}.protocol"),
                        "must be \"http1\", \"h2c\" or \"h2\"",
                    )
                })?,
            };
            let ca = match &svc.ca {
                None => None,
                Some(ca) if protocol != UpstreamProtocol::H2 => {
                    return Err(self.at(
                        ca,
                        &format!("{field}.ca"),
                        "a `ca` is only for a service with protocol = \"h2\" (TLS)",
                    ));
                }
                Some(ca) => Some(self.plan_file(ca, &format!("{field}.ca"))?),
            };
            let mut urls = Vec::new();
            for (i, url) in svc.urls.get_ref().iter().enumerate() {
                let field = format!("{field}.urls[{i}]");
                urls.push(
                    parse_base_url(url.get_ref(), protocol).map_err(|m| self.at(url, &field, m))?,
                );
            }
            services.insert(
                name.clone(),
                ServiceSpec {
                    name: name.clone(),
                    urls,
                    legacy: svc.legacy,
                    run: match &svc.run {
                        None => None,
                        Some(run)
                            if run.get_ref().is_empty() || run.get_ref()[0].trim().is_empty() =>
                        {
                            return Err(self.at(
                                run,
                                &format!("{field}.run"),
                                "must start with the program to run",
                            ));
                        }
                        Some(run) => Some(run.get_ref().clone()),
                    },
                    max_in_flight: match &svc.max_in_flight {
                        None => DEFAULT_MAX_IN_FLIGHT,
                        Some(n) => usize::try_from(*n.get_ref())
                            .ok()
                            .filter(|n| *n > 0)
                            .ok_or_else(|| {
                                self.at(n, &format!("{field}.max_in_flight"), "must be 1 or more")
                            })?,
                    },
                    protocol,
                    ca,
                },
            );
        }
        let legacies: Vec<&String> = services
            .values()
            .filter(|s| s.legacy)
            .map(|s| &s.name)
            .collect();
        match legacies.len() {
            1 => Ok(services),
            0 => Err(self.at(
                raw,
                "services",
                "exactly one service needs `legacy = true` (the monolith)",
            )),
            _ => Err(self.at(
                raw,
                "services",
                format!(
                    "exactly one service may be the legacy one, found {}",
                    join(legacies)
                ),
            )),
        }
    }

    fn routes(
        &self,
        raw: &[Spanned<RawRoute>],
        services: &BTreeMap<String, ServiceSpec>,
        legacy: &str,
        default_timeout: Duration,
        (default_gate, default_analysis): (GateSpec, AnalysisSpec),
    ) -> Result<Vec<RouteSpec>, PlanError> {
        let mut routes: Vec<RouteSpec> = Vec::new();
        // shape → (route index, methods) of every template seen, to find ambiguity.
        let mut shapes: BTreeMap<String, Vec<TemplateOwner>> = BTreeMap::new();
        for (i, spanned) in raw.iter().enumerate() {
            let r = spanned.get_ref();
            let field = |f: &str| format!("routes[{i}].{f}");
            let name = r.name.get_ref().clone();
            if !is_name(&name) {
                return Err(self.at(
                    &r.name,
                    &field("name"),
                    "a route name is lower-case letters, digits, - and _",
                ));
            }
            if routes.iter().any(|other| other.name == name) {
                return Err(self.at(
                    &r.name,
                    &field("name"),
                    format!("route `{name}` is declared twice"),
                ));
            }
            let service = r.service.get_ref().clone();
            if !services.contains_key(&service) {
                return Err(self.at(
                    &r.service,
                    &field("service"),
                    format!(
                        "unknown service `{service}` (services: {})",
                        join(services.keys())
                    ),
                ));
            }
            if service == legacy {
                return Err(self.at(
                    &r.service,
                    &field("service"),
                    format!(
                        "`{service}` is the legacy service; a route targets the service it moves to"
                    ),
                ));
            }
            let methods = match &r.methods {
                None => None,
                Some(list) if list.is_empty() => None,
                Some(list) => {
                    let mut methods = Vec::new();
                    for (j, m) in list.iter().enumerate() {
                        let upper = m.get_ref().to_ascii_uppercase();
                        let method = Method::from_bytes(upper.as_bytes())
                            .ok()
                            .filter(|_| upper.bytes().all(|b| b.is_ascii_uppercase()))
                            .ok_or_else(|| {
                                self.at(
                                    m,
                                    &field(&format!("methods[{j}]")),
                                    "must be an HTTP method like GET",
                                )
                            })?;
                        if !methods.contains(&method) {
                            methods.push(method);
                        }
                    }
                    Some(methods)
                }
            };
            if r.paths.get_ref().is_empty() {
                return Err(self.at(
                    &r.paths,
                    &field("paths"),
                    "must list at least one path template",
                ));
            }
            let mut paths = Vec::new();
            for (j, p) in r.paths.get_ref().iter().enumerate() {
                let f = field(&format!("paths[{j}]"));
                let template = PathTemplate::parse(p.get_ref())
                    .map_err(|m| self.at(p, &f, format!("`{}` {m}", p.get_ref())))?;
                let entry = shapes.entry(template.shape()).or_default();
                for (other, other_methods) in entry.iter() {
                    if methods_overlap(methods.as_deref(), other_methods.as_deref()) {
                        let who = if *other == i {
                            "this route already lists it".to_string()
                        } else {
                            format!("route `{}` matches the same requests", routes[*other].name)
                        };
                        return Err(self.at(
                            p,
                            &f,
                            format!("`{}` is ambiguous: {who}", p.get_ref()),
                        ));
                    }
                }
                entry.push((i, methods.clone()));
                paths.push(template);
            }
            let timeout = match &r.timeout {
                None => default_timeout,
                Some(t) => self.duration(t, &field("timeout"))?,
            };
            let (percent, sticky) = match &r.canary {
                None => (None, None),
                Some(c) => {
                    let canary = c.get_ref();
                    let percent = match &canary.percent {
                        None => None,
                        Some(p) => Some(
                            u8::try_from(*p.get_ref())
                                .ok()
                                .filter(|p| *p <= 100)
                                .ok_or_else(|| {
                                    self.at(p, &field("canary.percent"), "must be 0 to 100")
                                })?,
                        ),
                    };
                    let sticky = match &canary.sticky {
                        None => None,
                        Some(s) => Some(
                            parse_sticky(s.get_ref(), &paths)
                                .map_err(|m| self.at(s, &field("canary.sticky"), m))?,
                        ),
                    };
                    (percent, sticky)
                }
            };
            let initial_stage = match &r.stage {
                None => Stage::Legacy,
                Some(s) => Stage::from_parts(s.get_ref(), percent).map_err(|m| {
                    let m = if s.get_ref() == "canary" {
                        format!("{m}: set canary = {{ percent = N }}")
                    } else {
                        m
                    };
                    self.at(s, &field("stage"), m)
                })?,
            };
            let shadow = match &r.shadow {
                None => ShadowSpec::default(),
                Some(raw) => self.shadow(raw.get_ref(), &field)?,
            };
            let compare = match &r.compare {
                None => CompareSpec::default(),
                Some(raw) => self.compare(raw.get_ref(), &field)?,
            };
            let capture = match &r.capture {
                None => None,
                Some(raw) => Some(self.capture(raw.get_ref(), &field)?),
            };
            let gate = self.gate(
                r.gate.as_ref().map(|g| g.get_ref()),
                default_gate,
                &field("gate"),
            )?;
            let buffer_body_up_to = match &r.buffer_body_up_to {
                None => None,
                Some(b) => Some(parse_size(b.get_ref()).ok_or_else(|| {
                    self.at(
                        b,
                        &field("buffer_body_up_to"),
                        "must be a size like 64KiB or 1MiB",
                    )
                })?),
            };
            let analysis = self.analysis(
                r.analysis.as_ref().map(|a| a.get_ref()),
                default_analysis,
                &field("analysis"),
            )?;
            let steps = match &r.steps {
                None => Vec::new(),
                Some(steps) => self.steps(steps, &field("steps"))?,
            };
            let translate = match &r.translate {
                None => None,
                Some(raw) => Some(crate::translate::read(raw.get_ref()).map_err(
                    |(span, f, m)| self.error(&span, &field(&format!("translate.{f}")), m),
                )?),
            };
            let edge = self.route_edge(r.public, r.rate_limit.as_ref(), &format!("routes[{i}]"))?;
            routes.push(RouteSpec {
                name,
                paths,
                methods,
                service,
                initial_stage,
                timeout,
                sticky,
                shadow,
                compare,
                capture,
                gate,
                fallback: r.fallback,
                upgrades: r.upgrades.unwrap_or(true),
                buffer_body_up_to,
                analysis,
                steps,
                translate,
                cache: None,
                edge,
            });
        }
        Ok(routes)
    }

    fn gate(
        &self,
        raw: Option<&RawGate>,
        base: GateSpec,
        field: &str,
    ) -> Result<GateSpec, PlanError> {
        let Some(raw) = raw else {
            return Ok(base);
        };
        let mut gate = base;
        if let Some(n) = &raw.min_comparisons {
            gate.min_comparisons = u64::try_from(*n.get_ref()).map_err(|_| {
                self.at(n, &format!("{field}.min_comparisons"), "must be 0 or more")
            })?;
        }
        if let Some(rate) = &raw.max_mismatch_rate {
            let r = *rate.get_ref();
            if !(0.0..=1.0).contains(&r) {
                return Err(self.at(
                    rate,
                    &format!("{field}.max_mismatch_rate"),
                    "must be a fraction from 0 to 1 (0.001 is 0.1 %)",
                ));
            }
            gate.max_mismatch_rate = r;
        }
        if let Some(v) = &raw.verify_within {
            gate.verify_within = Some(self.duration(v, &format!("{field}.verify_within"))?);
        }
        Ok(gate)
    }

    fn shadow(
        &self,
        raw: &RawShadow,
        field: &dyn Fn(&str) -> String,
    ) -> Result<ShadowSpec, PlanError> {
        let mut spec = ShadowSpec::default();
        let percent = |v: &Spanned<f64>, f: &str| {
            let p = *v.get_ref();
            if (0.0..=100.0).contains(&p) {
                Ok(p)
            } else {
                Err(self.at(v, &field(f), "must be a percentage from 0 to 100"))
            }
        };
        if let Some(v) = &raw.sample {
            spec.sample_percent = percent(v, "shadow.sample")?;
        }
        if let Some(v) = &raw.noise_sample {
            spec.noise_percent = percent(v, "shadow.noise_sample")?;
        }
        if let Some(w) = &raw.writes {
            spec.writes = match w.get_ref().as_str() {
                "skip" => ShadowWrites::Skip,
                "dry-run" => ShadowWrites::DryRun,
                _ => {
                    return Err(self.at(
                        w,
                        &field("shadow.writes"),
                        "must be \"skip\" or \"dry-run\"",
                    ));
                }
            };
        }
        if let Some(t) = &raw.timeout {
            spec.timeout = self.duration(t, &field("shadow.timeout"))?;
        }
        if let Some(n) = &raw.max_in_flight {
            spec.max_in_flight = usize::try_from(*n.get_ref())
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| self.at(n, &field("shadow.max_in_flight"), "must be 1 or more"))?;
        }
        if let Some(b) = &raw.max_body {
            spec.max_body_bytes = parse_size(b.get_ref())
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    self.at(
                        b,
                        &field("shadow.max_body"),
                        "must be a size like 256KiB or 1MiB",
                    )
                })?;
        }
        spec.reverse = raw.reverse_shadow.unwrap_or(false);
        Ok(spec)
    }

    fn compare(
        &self,
        raw: &RawCompare,
        field: &dyn Fn(&str) -> String,
    ) -> Result<CompareSpec, PlanError> {
        let mut spec = CompareSpec::default();
        for (i, p) in raw.ignore.iter().enumerate() {
            check_pattern(p.get_ref())
                .map_err(|m| self.at(p, &field(&format!("compare.ignore[{i}]")), m))?;
            spec.ignore.push(p.get_ref().clone());
        }
        for (i, p) in raw.sets.iter().enumerate() {
            check_pattern(p.get_ref())
                .map_err(|m| self.at(p, &field(&format!("compare.sets[{i}]")), m))?;
            spec.sets.push(p.get_ref().clone());
        }
        for (path, key) in &raw.keyed {
            check_pattern(path).map_err(|m| PlanError {
                file: self.file.to_path_buf(),
                line: 0,
                column: 0,
                field: field("compare.keyed"),
                message: m,
            })?;
            spec.keyed.push((path.clone(), key.clone()));
        }
        if let Some(t) = &raw.tolerance {
            // A range check, so NaN (every float would differ from itself) is refused too.
            if !(0.0..).contains(t.get_ref()) {
                return Err(self.at(t, &field("compare.tolerance"), "must be 0 or more"));
            }
            spec.tolerance = *t.get_ref();
        }
        if let Some(headers) = &raw.headers {
            spec.headers = headers.iter().map(|h| h.to_ascii_lowercase()).collect();
        }
        if let Some(numbers) = &raw.numbers {
            spec.exact_numbers = match numbers.get_ref().as_str() {
                "value" => false,
                "exact" => true,
                _ => {
                    return Err(self.at(
                        numbers,
                        &field("compare.numbers"),
                        "must be \"value\" (1 equals 1.0) or \"exact\"",
                    ));
                }
            };
            if spec.exact_numbers && spec.tolerance > 0.0 {
                return Err(self.at(
                    numbers,
                    &field("compare.numbers"),
                    "\"exact\" compares representations; it cannot have a tolerance",
                ));
            }
        }
        Ok(spec)
    }

    fn capture(
        &self,
        raw: &RawCapture,
        field: &dyn Fn(&str) -> String,
    ) -> Result<CaptureSpec, PlanError> {
        let mismatches = usize::try_from(*raw.mismatches.get_ref())
            .ok()
            .filter(|n| (1..=MAX_CAPTURES_PER_PATH).contains(n))
            .ok_or_else(|| {
                self.at(
                    &raw.mismatches,
                    &field("capture.mismatches"),
                    format!("must be 1 to {MAX_CAPTURES_PER_PATH} (cases kept per differing path)"),
                )
            })?;
        let mut redact = Vec::new();
        for (i, r) in raw.redact.iter().enumerate() {
            let redaction = Redaction::parse(r.get_ref())
                .and_then(|red| match &red {
                    Redaction::Body(pattern) => check_pattern(pattern).map(|()| red),
                    _ => Ok(red),
                })
                .map_err(|m| self.at(r, &field(&format!("capture.redact[{i}]")), m))?;
            redact.push(redaction);
        }
        Ok(CaptureSpec { mismatches, redact })
    }

    fn sync(
        &self,
        raw: &[Spanned<RawSync>],
        services: &BTreeMap<String, ServiceSpec>,
    ) -> Result<Vec<SyncLink>, PlanError> {
        let mut links: Vec<SyncLink> = Vec::new();
        for (i, link) in raw.iter().enumerate() {
            let l = link.get_ref();
            let f = |name: &str| format!("sync[{i}].{name}");
            let service = |span: Range<usize>, name: &str, field: &str| {
                if services.contains_key(name) {
                    Ok(name.to_string())
                } else {
                    Err(self.error(
                        &span,
                        field,
                        format!(
                            "unknown service `{name}` (services: {}), or a PostgreSQL table {{ postgres = \"postgres://...\", table = \"...\" }}",
                            join(services.keys())
                        ),
                    ))
                }
            };
            let from = match l.from.get_ref() {
                RawEndpoint::Name(name) => {
                    LinkSource::Service(service(l.from.span(), name, &f("from"))?)
                }
                RawEndpoint::Table(outbox) => {
                    let at = self.pg_table(&outbox.postgres, &outbox.table, &f("from"))?;
                    if !is_name(outbox.origin.get_ref()) {
                        return Err(self.at(
                            &outbox.origin,
                            &f("from.origin"),
                            "must name the participant the rows come from: lower-case letters, digits, - and _",
                        ));
                    }
                    let channel = match &outbox.notify {
                        Some(channel) if !is_identifier(channel.get_ref()) => {
                            return Err(self.at(
                                channel,
                                &f("from.notify"),
                                "must be a plain SQL identifier (letters, digits and _): the NOTIFY channel",
                            ));
                        }
                        Some(channel) => channel.get_ref().clone(),
                        None => at.unqualified().to_string(),
                    };
                    LinkSource::Outbox(PgOutbox {
                        at,
                        origin: outbox.origin.get_ref().clone(),
                        channel,
                        snapshot: self.snapshot(outbox.snapshot.as_ref(), &f("from.snapshot"))?,
                    })
                }
            };
            let to = match l.to.get_ref() {
                RawEndpoint::Name(name) => {
                    LinkTarget::Service(service(l.to.span(), name, &f("to"))?)
                }
                RawEndpoint::Table(inbox) => {
                    let at = self.pg_table(&inbox.postgres, &inbox.table, &f("to"))?;
                    let name = match &inbox.name {
                        Some(name) if !is_name(name.get_ref()) => {
                            return Err(self.at(
                                name,
                                &f("to.name"),
                                "must be lower-case letters, digits, - and _ (who the inbox belongs to)",
                            ));
                        }
                        Some(name) => name.get_ref().clone(),
                        None => format!(
                            "pg:{}/{}",
                            location::postgres_database(at.url()).unwrap_or_default(),
                            at.table
                        ),
                    };
                    let snapshot = self.snapshot(inbox.snapshot.as_ref(), &f("to.snapshot"))?;
                    LinkTarget::Inbox(PgInbox { at, name, snapshot })
                }
            };
            if from.name() == to.name() {
                return Err(self.at(
                    &l.to,
                    &f("to"),
                    format!(
                        "a link joins two different participants (both ends are `{}`)",
                        to.name()
                    ),
                ));
            }
            let mut types = Vec::new();
            for (j, t) in l.types.iter().enumerate() {
                let valid = t.get_ref() == "*"
                    || t.get_ref().split_once('.').is_some_and(|(kind, change)| {
                        is_name(kind) && (change == "*" || is_name(change))
                    });
                if !valid {
                    return Err(self.at(
                        t,
                        &f(&format!("types[{j}]")),
                        "must be an event type like `student.updated` or `student.*`",
                    ));
                }
                types.push(t.get_ref().clone());
            }
            let link = SyncLink { from, to, types };
            // The name keys the link's checkpoint and lease: two links sharing one would
            // move each other's checkpoint.
            if let Some(other) = links.iter().position(|o| o.name() == link.name()) {
                return Err(self.at(
                    &l.to,
                    &f("to"),
                    format!(
                        "link `{}` is declared twice (sync[{other}]): give the inbox its own `name`, or merge the links' types",
                        link.name()
                    ),
                ));
            }
            links.push(link);
        }
        Ok(links)
    }

    /// A link end's `postgres` URL (which must name a database) and `table`.
    /// A PostgreSQL end's snapshot queries: each key an entity kind, each query taking the
    /// key to read after (`$1`) and how many rows (`$2`).
    fn snapshot(
        &self,
        raw: Option<&RawSnapshot>,
        field: &str,
    ) -> Result<SnapshotQueries, PlanError> {
        let mut queries = SnapshotQueries::new();
        for (kind, query) in raw.into_iter().flatten() {
            if !is_name(kind.get_ref()) {
                return Err(self.at(
                    kind,
                    &format!("{field}.{}", kind.get_ref()),
                    "must be an entity kind: lower-case letters, digits, - and _ (`student`)",
                ));
            }
            let text = query.get_ref().trim();
            if !(text.contains("$1") && text.contains("$2")) {
                return Err(self.at(
                    query,
                    &format!("{field}.{}", kind.get_ref()),
                    "must be a query taking $1 (the key to read after) and $2 (how many rows), answering key, version and state in key order: SELECT id AS key, version, to_jsonb(s) - 'version' AS state FROM students s WHERE id > $1 ORDER BY id COLLATE \"C\" LIMIT $2",
                ));
            }
            queries.insert(kind.get_ref().clone(), text.to_string());
        }
        Ok(queries)
    }

    fn pg_table(
        &self,
        url: &Spanned<String>,
        table: &Spanned<String>,
        field: &str,
    ) -> Result<PgTable, PlanError> {
        let text = url.get_ref().trim();
        if !location::is_postgres_url(text) {
            return Err(self.at(
                url,
                &format!("{field}.postgres"),
                format!(
                    "`{}` is not a postgres:// URL (postgres://user:pass@host:5432/db)",
                    location::redact(text)
                ),
            ));
        }
        location::check_postgres_url(text)
            .map_err(|reason| self.at(url, &format!("{field}.postgres"), reason))?;
        if location::postgres_database(text).is_none() {
            return Err(self.at(
                url,
                &format!("{field}.postgres"),
                format!(
                    "{} names no database (postgres://user:pass@host:5432/db)",
                    location::redact(text)
                ),
            ));
        }
        if !is_table_name(table.get_ref()) {
            return Err(self.at(
                table,
                &format!("{field}.table"),
                "must be `table` or `schema.table`, plain SQL identifiers (letters, digits and _)",
            ));
        }
        Ok(PgTable::new(text.to_string(), table.get_ref().clone()))
    }
}

/// A route (by index) that lists a template, and the methods it takes.
type TemplateOwner = (usize, Option<Vec<Method>>);

fn methods_overlap(a: Option<&[Method]>, b: Option<&[Method]>) -> bool {
    match (a, b) {
        (None, _) | (_, None) => true,
        (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
    }
}

pub(crate) fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn join<I: IntoIterator<Item = T>, T: fmt::Display>(items: I) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_base_url(raw: &str, protocol: UpstreamProtocol) -> Result<Uri, String> {
    let uri: Uri = raw
        .parse()
        .map_err(|_| format!("`{raw}` is not a URL like http://127.0.0.1:7000"))?;
    let scheme = protocol.scheme();
    if uri.scheme_str() != Some(scheme) {
        return Err(format!(
            "`{raw}`: a service with protocol = \"{protocol}\" is reached at {scheme}:// URLs"
        ));
    }
    if uri.authority().is_none_or(|a| a.port_u16().is_none()) {
        return Err(format!("`{raw}` needs an explicit host:port"));
    }
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err(format!("`{raw}`: a base URL has no path or query"));
    }
    Ok(uri)
}

fn parse_sticky(raw: &str, paths: &[PathTemplate]) -> Result<Sticky, String> {
    let (kind, name) = raw
        .split_once(':')
        .ok_or_else(|| format!("`{raw}` must be header:NAME, cookie:NAME or path:PARAM"))?;
    match kind {
        "header" => HeaderName::from_bytes(name.as_bytes())
            .map(Sticky::Header)
            .map_err(|_| format!("`{name}` is not a header name")),
        "cookie" if !name.is_empty() && !name.contains([';', '=', ' ']) => {
            Ok(Sticky::Cookie(name.to_string()))
        }
        "cookie" => Err(format!("`{name}` is not a cookie name")),
        "path" if paths.iter().any(|p| p.has_param(name)) => {
            Ok(Sticky::PathParam(name.to_string()))
        }
        "path" => Err(format!(
            "no path template of this route has a parameter `{name}`"
        )),
        _ => Err(format!(
            "`{raw}` must be header:NAME, cookie:NAME or path:PARAM"
        )),
    }
}

/// Parses `250ms`, `5s`, `2m`, `1h` (must be above zero).
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = raw.split_at(split);
    let n: u64 = number.parse().ok()?;
    let d = match unit.trim() {
        "us" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    };
    (!d.is_zero()).then_some(d)
}

/// A duration as the plan writes it, in its largest whole unit: `1h`, `90m`, `5s`, `250ms`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        ms if ms > 0 && ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms > 0 && ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms > 0 && ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// Parses `1048576`, `512KiB`, `10MiB`, `1GiB` (must be above zero).
pub fn parse_size(raw: &str) -> Option<u64> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let n: u64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale).filter(|n| *n > 0)
}

impl Plan {
    /// The links `what` names: the link `from->to`, or every link to or from a route's
    /// service (`None` when `what` is neither a link nor a route).
    pub fn links_of(&self, what: &str) -> Option<Vec<&SyncLink>> {
        if let Some(link) = self.sync.iter().find(|l| l.name() == what) {
            return Some(vec![link]);
        }
        let route = self.routes.iter().find(|r| r.name == what)?;
        Some(
            self.sync
                .iter()
                .filter(|l| l.touches(&route.service))
                .collect(),
        )
    }
}

/// Names of the plan's routes, for messages.
pub fn route_names(plan: &Plan) -> String {
    join(plan.routes.iter().map(|r| &r.name))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A plan's proxy and services (`legacy`, `students`), for tests to add routes to.
    pub(crate) const BASE: &str = r#"[proxy]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:8081"
state = "data/strangler.db"

[services.legacy]
urls = ["http://127.0.0.1:7000"]
legacy = true

[services.students]
urls = ["http://127.0.0.1:7101", "http://127.0.0.1:7201"]
"#;

    /// [`BASE`] and `extra`, parsed.
    pub(crate) fn check(extra: &str) -> Result<Plan, PlanError> {
        parse(Path::new("plan.toml"), &format!("{BASE}{extra}"))
    }

    #[test]
    fn the_demo_plan_is_valid() {
        let plan =
            load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migration-plan.toml")).unwrap();
        assert_eq!(plan.legacy, "legacy");
        let names: Vec<&str> = plan.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["students", "finance", "gamification", "enrollment"]);
        assert!(plan.routes.iter().all(|r| r.initial_stage == Stage::Legacy));
        assert_eq!(plan.proxy.listen.to_string(), "127.0.0.1:8080");
        assert!(
            plan.proxy
                .state
                .file()
                .is_some_and(|f| f.ends_with("data/strangler.db"))
        );
        assert!(
            plan.proxy
                .last_known
                .ends_with("data/strangler.db.last-known.json")
        );
    }

    #[test]
    fn a_full_route_parses() {
        let plan = check(
            r#"
[[routes]]
name = "students"
paths = ["/students", "/students/{id}"]
methods = ["get", "POST"]
service = "students"
stage = "canary"
timeout = "250ms"
canary = { percent = 25, sticky = "path:id" }
"#,
        )
        .unwrap();
        let r = &plan.routes[0];
        assert_eq!(r.initial_stage, Stage::Canary { percent: 25 });
        assert_eq!(r.timeout, Duration::from_millis(250));
        assert_eq!(r.methods.as_deref(), Some(&[Method::GET, Method::POST][..]));
        assert_eq!(r.sticky, Some(Sticky::PathParam("id".into())));
        assert_eq!(plan.services["students"].urls.len(), 2);
    }

    #[test]
    fn translations_are_read_and_bad_ones_name_line_and_field() {
        let route = "[[routes]]\nname = \"students\"\npaths = [\"/s\"]\nservice = \"students\"\n[routes.translate]\n";
        let plan = check(&format!(
            "{route}request = [{{ rename = {{ from = \"/full_name\", to = \"/name\" }} }}]\n\
             response = [{{ drop = \"/internal\" }}, {{ set = {{ path = \"/v\", value = 1 }} }}]\n\
             status = {{ 201 = 200 }}\n"
        ))
        .unwrap();
        let spec = plan.routes[0].translate.as_ref().unwrap();
        assert_eq!((spec.request.len(), spec.response.len()), (1, 2));
        assert_eq!((spec.status(201), spec.status(404)), (200, 404));
        let first = BASE.lines().count() + route.lines().count() + 1;
        for (body, line, field, words) in [
            (
                "response = [{ drop = \"name\" }]",
                first,
                "routes[0].translate.response[0].drop",
                "JSON Pointer",
            ),
            (
                "response = [{ rename = { from = \"/a/b\", to = \"/c\" } }]",
                first,
                "routes[0].translate.response[0].rename.to",
                "use move",
            ),
            (
                "response = [\n  { drop = \"/a\" },\n  { rename = { from = \"/a\", to = \"/b\" } },\n]",
                first + 2,
                "routes[0].translate.response[1]",
                "already taken away by response[0]",
            ),
            (
                "request = [\n  { set = { path = \"/v\", value = 1 } },\n  { move = { from = \"/x\", to = \"/v\" } },\n]",
                first + 2,
                "routes[0].translate.request[1]",
                "already written by request[0]",
            ),
            (
                "request = [{ move = { from = \"/a\", to = \"/a/b\" } }]",
                first,
                "routes[0].translate.request[0].move.to",
                "into itself",
            ),
            (
                "response = [{ drop = \"/a\", set = { path = \"/b\", value = 1 } }]",
                first,
                "routes[0].translate.response[0]",
                "an edit is one of",
            ),
            (
                "status = { 201 = 999 }",
                first,
                "routes[0].translate.status.201",
                "HTTP status",
            ),
        ] {
            let err = check(&format!("{route}{body}\n")).unwrap_err();
            assert_eq!(
                (err.line, err.field.as_str()),
                (line, field),
                "{body} → {err}"
            );
            assert!(err.message.contains(words), "{body} → {err}");
        }
    }

    /// Each bad plan and the (line, field, words in the message) its error must name.
    #[test]
    fn bad_plans_name_line_and_field() {
        let route = |body: &str| {
            format!(
                "\n[[routes]]\nname = \"r\"\npaths = [\"/students\"]\nservice = \"students\"\n{body}"
            )
        };
        let cases: Vec<(String, usize, &str, &str)> = vec![
            (route("colour = \"red\""), 17, "", "unknown field `colour`"),
            ("\n[[routes]]\nname = \"r\"\npaths = [\"/s\"]\nservice = \"studnts\"\n".into(), 16, "routes[0].service", "unknown service `studnts`"),
            ("\n[[routes]]\nname = \"r\"\npaths = [\"/s\"]\nservice = \"legacy\"\n".into(), 16, "routes[0].service", "is the legacy service"),
            (route("stage = \"sideways\""), 17, "routes[0].stage", "unknown stage"),
            (route("stage = \"canary\""), 17, "routes[0].stage", "needs a percent"),
            (route("canary = { percent = 101 }"), 17, "routes[0].canary.percent", "0 to 100"),
            (route("canary = { sticky = \"path:nope\" }"), 17, "routes[0].canary.sticky", "no path template"),
            (route("canary = { sticky = \"body:x\" }"), 17, "routes[0].canary.sticky", "header:NAME"),
            (route("timeout = \"soon\""), 17, "routes[0].timeout", "duration"),
            (route("methods = [\"FETCH!\"]"), 17, "routes[0].methods[0]", "HTTP method"),
            (route("buffer_body_up_to = \"lots\""), 17, "routes[0].buffer_body_up_to", "size"),
            (route("gate = { verify_within = \"soon\" }"), 17, "routes[0].gate.verify_within", "duration"),
            ("\n[gate]\nverify_within = 3600\n".into(), 14, "", "invalid type"),
            (route("upgrades = \"maybe\""), 17, "", "invalid type"),
            ("\n[[routes]]\nname = \"r\"\npaths = [\"students\"]\nservice = \"students\"\n".into(), 15, "routes[0].paths[0]", "must start with /"),
            ("\n[[routes]]\nname = \"r\"\npaths = [\"/a/../b\"]\nservice = \"students\"\n".into(), 15, "routes[0].paths[0]", "normal form"),
            ("\n[[routes]]\nname = \"a\"\npaths = [\"/s/{id}\"]\nservice = \"students\"\n[[routes]]\nname = \"b\"\npaths = [\"/s/{sid}\"]\nservice = \"students\"\n".into(), 19, "routes[1].paths[0]", "ambiguous: route `a`"),
            ("\n[[routes]]\nname = \"a\"\npaths = [\"/s\"]\nservice = \"students\"\n[[routes]]\nname = \"a\"\npaths = [\"/t\"]\nservice = \"students\"\n".into(), 18, "routes[1].name", "declared twice"),
            ("\n[[sync]]\nfrom = \"legacy\"\nto = \"nobody\"\n".into(), 15, "sync[0].to", "unknown service"),
            ("\n[[sync]]\nfrom = \"legacy\"\nto = \"students\"\ntypes = [\"student\"]\n".into(), 16, "sync[0].types[0]", "event type"),
        ];
        for (extra, line, field, words) in cases {
            let err = check(&extra).unwrap_err();
            assert_eq!(err.file, Path::new("plan.toml"));
            assert_eq!(
                (err.line, err.field.as_str()),
                (line, field),
                "{extra}\n→ {err}"
            );
            assert!(err.message.contains(words), "{extra}\n→ {err}");
        }
    }

    #[test]
    fn a_cutover_can_require_a_recent_verify_by_default_and_per_route() {
        let plan = check(
            "\n[gate]\nverify_within = \"1h\"\n\n[[routes]]\nname = \"a\"\npaths = [\"/a\"]\nservice = \"students\"\n\n[[routes]]\nname = \"b\"\npaths = [\"/b\"]\nservice = \"students\"\ngate = { verify_within = \"10m\", min_comparisons = 5 }\n",
        )
        .unwrap();
        assert_eq!(
            plan.routes[0].gate.verify_within,
            Some(Duration::from_secs(3600))
        );
        let b = plan.routes[1].gate;
        assert_eq!(b.verify_within, Some(Duration::from_secs(600)));
        assert_eq!(b.min_comparisons, 5);
        let plain = check("\n[[routes]]\nname = \"a\"\npaths = [\"/a\"]\nservice = \"students\"\n")
            .unwrap();
        assert_eq!(
            plain.routes[0].gate.verify_within, None,
            "not required unless asked"
        );
    }

    #[test]
    fn sync_links_reach_postgres_tables() {
        let plan = check(
            r#"
[[sync]]
from = { postgres = "postgres://app:secret@db:5432/shop", table = "app.outbox", origin = "legacy" }
to = "students"
types = ["student.*"]

[[sync]]
from = "students"
to = { postgres = "postgresql://app:secret@db/shop?sslmode=require", table = "inbox", name = "legacy" }

[[sync]]
from = { postgres = "postgres://db/shop", table = "outbox", origin = "shop", notify = "shop_events" }
to = { postgres = "postgres://db/shop", table = "inbox" }
"#,
        )
        .unwrap();
        let names: Vec<String> = plan.sync.iter().map(SyncLink::name).collect();
        assert_eq!(
            names,
            [
                "legacy->students",
                "students->legacy",
                "shop->pg:shop/inbox"
            ]
        );
        let LinkSource::Outbox(outbox) = &plan.sync[0].from else {
            panic!("{:?}", plan.sync[0].from)
        };
        assert_eq!(outbox.at.url(), "postgres://app:secret@db:5432/shop");
        assert_eq!(outbox.channel, "outbox", "the table's name by default");
        assert_eq!(plan.sync[0].to.service(), Some("students"));
        let LinkSource::Outbox(outbox) = &plan.sync[2].from else {
            panic!("{:?}", plan.sync[2].from)
        };
        assert_eq!(outbox.channel, "shop_events");
        assert!(
            outbox.snapshot.is_empty(),
            "no snapshot queries unless given"
        );
        assert!(
            !format!("{plan:?}").contains("secret"),
            "a plan never prints a password"
        );
    }

    #[test]
    fn bad_sync_links_name_line_and_field() {
        let outbox = |keys: &str| format!("\n[[sync]]\nfrom = {{ {keys} }}\nto = \"students\"\n");
        let url = "postgres = \"postgres://app:secret@db:5432/shop\"";
        let cases: Vec<(String, &str, &str)> = vec![
            (outbox(&format!("{url}, table = \"outbox\", origin = \"legacy\", colour = 1")), "", "unknown field `colour`"),
            (outbox(&format!("{url}, table = \"outbox\"")), "", "missing field `origin`"),
            (outbox(&format!("{url}, origin = \"legacy\"")), "", "missing field `table`"),
            (outbox("postgres = \"mysql://app:secret@db/shop\", table = \"outbox\", origin = \"legacy\""), "sync[0].from.postgres", "not a postgres:// URL"),
            (outbox("postgres = \"postgres://app:secret@db:5432\", table = \"outbox\", origin = \"legacy\""), "sync[0].from.postgres", "names no database"),
            (outbox("postgres = \"postgres://app:secret@/shop\", table = \"outbox\", origin = \"legacy\""), "sync[0].from.postgres", "names no database server"),
            (outbox(&format!("{url}, table = \"outbox; DROP TABLE x\", origin = \"legacy\"")), "sync[0].from.table", "schema.table"),
            (outbox(&format!("{url}, table = \"a.b.c\", origin = \"legacy\"")), "sync[0].from.table", "schema.table"),
            (outbox(&format!("{url}, table = \"outbox\", origin = \"Leg acy\"")), "sync[0].from.origin", "participant"),
            (outbox(&format!("{url}, table = \"outbox\", origin = \"legacy\", notify = \"a-b\"")), "sync[0].from.notify", "identifier"),
            (outbox(&format!("{url}, table = \"outbox\", origin = \"students\"")), "sync[0].to", "two different participants"),
            ("\n[[sync]]\nfrom = \"legacy\"\nto = { postgres = \"postgres://db/shop\", table = \"inbox\", origin = \"x\" }\n".into(), "", "unknown field `origin`"),
            ("\n[[sync]]\nfrom = \"legacy\"\nto = { postgres = \"postgres://db/shop\", table = \"inbox\", name = \"Legacy!\" }\n".into(), "sync[0].to.name", "lower-case"),
            ("\n[[sync]]\nfrom = \"legacy\"\nto = 7\n".into(), "", "a service's name, or a table"),
            (outbox(&format!("{url}, table = \"outbox\", origin = \"legacy\", snapshot = {{ Student = \"SELECT $1, $2\" }}")), "sync[0].from.snapshot.Student", "entity kind"),
            (outbox(&format!("{url}, table = \"outbox\", origin = \"legacy\", snapshot = {{ student = \"SELECT * FROM students\" }}")), "sync[0].from.snapshot.student", "$1 (the key to read after)"),
            ("\n[[sync]]\nfrom = \"legacy\"\nto = { postgres = \"postgres://db/shop\", table = \"inbox\", snapshot = { student = \"SELECT 1\" } }\n".into(), "sync[0].to.snapshot.student", "$2 (how many rows)"),
            (outbox(&format!("{url}, table = \"outbox\", origin = \"legacy\", snapshot = {{ student = 1 }}")), "", "invalid type"),
            ("\n[[sync]]\nfrom = \"legacy\"\nto = \"students\"\ntypes = [\"student.*\"]\n[[sync]]\nfrom = \"legacy\"\nto = \"students\"\ntypes = [\"invoice.*\"]\n".into(), "sync[1].to", "declared twice"),
        ];
        for (extra, field, words) in cases {
            let err = check(&extra).unwrap_err();
            // Every error points into the link it is about.
            assert!(err.line >= 14, "{extra}\n→ {err}");
            assert_eq!(err.field, field, "{extra}\n→ {err}");
            assert!(err.message.contains(words), "{extra}\n→ {err}");
            assert!(!err.to_string().contains("secret"), "{err}");
        }
    }

    #[test]
    fn telemetry_is_read_and_bad_values_name_their_line() {
        assert_eq!(check("").unwrap().telemetry, None);
        let plan = check(
            "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318/\"\nsample = \"10%\"\n\
             service_name = \"edge\"\n",
        )
        .unwrap();
        let spec = plan.telemetry.unwrap();
        assert_eq!(spec.traces_url(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!((spec.sample, spec.service_name.as_str()), (0.1, "edge"));
        let lines = BASE.lines().count();
        for (body, field, words) in [
            (
                "otlp_endpoint = \"localhost:4318\"",
                "telemetry.otlp_endpoint",
                "collector URL",
            ),
            (
                "otlp_endpoint = \"http://c:4318\"\nsample = \"150%\"",
                "telemetry.sample",
                "0% to 100%",
            ),
            (
                "otlp_endpoint = \"http://c:4318\"\nservice_name = \" \"",
                "telemetry.service_name",
                "empty",
            ),
        ] {
            let err = check(&format!("[telemetry]\n{body}\n")).unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert_eq!(err.line, lines + 1 + body.lines().count(), "{err}");
            assert!(err.message.contains(words), "{err}");
        }
    }

    #[test]
    fn edge_settings_are_read_and_checked() {
        let with_proxy = |lines: &str| {
            parse(
                Path::new("plan.toml"),
                &BASE.replacen(
                    "state = \"data/strangler.db\"\n",
                    &format!("state = \"data/strangler.db\"\n{lines}\n"),
                    1,
                ),
            )
        };
        let plan = with_proxy(
            "trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\ntrailing_slash = \"redirect\"\ncase_sensitive = false\nbody_read_timeout = \"2s\"",
        )
        .unwrap();
        assert_eq!(plan.proxy.trusted_proxies.len(), 2);
        assert_eq!(plan.proxy.matching.trailing_slash, TrailingSlash::Redirect);
        assert!(!plan.proxy.matching.case_sensitive);
        assert_eq!(plan.proxy.body_read_timeout, Duration::from_secs(2));
        assert_eq!(
            plan.services["students"].max_in_flight,
            DEFAULT_MAX_IN_FLIGHT
        );
        let defaults = with_proxy("").unwrap();
        assert!(
            defaults.proxy.trusted_proxies.is_empty(),
            "trust nobody by default"
        );
        assert_eq!(defaults.proxy.matching, PathMatching::default());
        assert_eq!(
            defaults.proxy.shadow_max_busy,
            Some(DEFAULT_SHADOW_MAX_BUSY)
        );
        let busy = |v: &str| {
            with_proxy(&format!("shadow_max_busy = \"{v}\"")).map(|p| p.proxy.shadow_max_busy)
        };
        assert_eq!(busy("50%").unwrap(), Some(0.5));
        assert_eq!(busy("off").unwrap(), None);
        for (lines, line, field, words) in [
            (
                "trusted_proxies = [\"10.0.0.0/33\"]",
                5,
                "proxy.trusted_proxies[0]",
                "range",
            ),
            (
                "trusted_proxies = [\"lb.internal\"]",
                5,
                "proxy.trusted_proxies[0]",
                "address",
            ),
            (
                "trailing_slash = \"sometimes\"",
                5,
                "proxy.trailing_slash",
                "\"strict\"",
            ),
            (
                "body_read_timeout = \"0s\"",
                5,
                "proxy.body_read_timeout",
                "duration",
            ),
            (
                "shadow_max_busy = \"0%\"",
                5,
                "proxy.shadow_max_busy",
                "\"80%\"",
            ),
            (
                "shadow_max_busy = \"0.8\"",
                5,
                "proxy.shadow_max_busy",
                "\"off\"",
            ),
        ] {
            let err = with_proxy(lines).unwrap_err();
            assert_eq!(
                (err.line, err.field.as_str()),
                (line, field),
                "{lines} → {err}"
            );
            assert!(err.message.contains(words), "{lines} → {err}");
        }
        let err = check("max_in_flight = 0\n").unwrap_err();
        assert_eq!(err.field, "services.students.max_in_flight", "{err}");
    }

    #[test]
    fn schedules_are_read_and_checked_with_their_line() {
        const LINKS: &str = "[[routes]]\nname = \"students\"\npaths = [\"/s\"]\nservice = \"students\"\n\
             [[sync]]\nfrom = \"legacy\"\nto = \"students\"\ntypes = [\"student.*\"]\n";
        let plan = check(&format!(
            "{LINKS}[[schedule]]\nverify = \"legacy->students\"\nevery = \"1h\"\ntypes = [\"student\"]\nrate = \"200/s\"\n\
             [[schedule]]\nverify = \"students\"\nevery = \"0 3 * * 1-5\"\nrate = 50\n"
        ))
        .unwrap();
        assert_eq!(plan.schedules.len(), 2);
        assert_eq!(plan.schedules[0].verify, "legacy->students");
        assert_eq!(
            plan.schedules[0].when,
            When::Every(Duration::from_secs(3600))
        );
        assert_eq!(plan.schedules[0].types, ["student"]);
        assert_eq!(plan.schedules[0].rate, Some(200));
        assert!(matches!(plan.schedules[1].when, When::Cron(_)));
        assert_eq!(plan.schedules[1].rate, Some(50));
        // LINKS ends on line 19, so a schedule's `verify` is on line 24 and `every` on 25.
        for (schedule, line, field, words) in [
            (
                "verify = \"nobody\"\nevery = \"1h\"",
                24,
                "schedule[0].verify",
                "unknown link or route `nobody` (links: legacy->students; routes: students)",
            ),
            (
                "verify = \"students->legacy\"\nevery = \"1h\"",
                24,
                "schedule[0].verify",
                "unknown link",
            ),
            (
                "verify = \"legacy->students\"\nevery = \"soon\"",
                25,
                "schedule[0].every",
                "cron expression",
            ),
            (
                "verify = \"legacy->students\"\nevery = \"500ms\"",
                25,
                "schedule[0].every",
                "1s or more",
            ),
            (
                "verify = \"legacy->students\"\nevery = \"61 * * * *\"",
                25,
                "schedule[0].every",
                "minute field `61`",
            ),
            (
                "verify = \"legacy->students\"\nevery = \"1h\"\ntypes = [\"Student\"]",
                26,
                "schedule[0].types[0]",
                "entity kind",
            ),
            (
                "verify = \"legacy->students\"\nevery = \"1h\"\nrate = 0",
                26,
                "schedule[0].rate",
                "above zero",
            ),
            (
                "verify = \"legacy->students\"\nevery = \"1h\"\nrate = \"fast\"",
                26,
                "schedule[0].rate",
                "above zero",
            ),
            (
                "verify = \"legacy->students\"\nevery = \"1h\"\nrepair = true",
                26,
                "",
                "unknown field `repair`",
            ),
            ("every = \"1h\"", 23, "", "missing field `verify`"),
        ] {
            let err = check(&format!("{LINKS}\n\n\n[[schedule]]\n{schedule}\n")).unwrap_err();
            assert_eq!(
                (err.line, err.field.as_str()),
                (line, field),
                "{schedule} → {err}"
            );
            assert!(err.message.contains(words), "{schedule} → {err}");
        }
        let twice = "[[schedule]]\nverify = \"students\"\nevery = \"1h\"\n";
        let err = check(&format!("{LINKS}{twice}{twice}")).unwrap_err();
        assert_eq!(err.field, "schedule[1].verify", "{err}");
        assert!(
            err.message.contains("already scheduled by schedule[0]"),
            "{err}"
        );
        let lonely = "[[routes]]\nname = \"alone\"\npaths = [\"/a\"]\nservice = \"students\"\n\
             [[schedule]]\nverify = \"alone\"\nevery = \"1h\"\n";
        let err = check(lonely).unwrap_err();
        assert!(err.message.contains("no [[sync]] link"), "{err}");
    }

    #[test]
    fn analysis_steps_and_webhooks_are_read_and_checked() {
        let plan = check(
            "[analysis]\ninterval = \"2s\"\nfailure_limit = 2\nmax_error_rate = 0.1\n\
             [[notify]]\nurl = \"http://127.0.0.1:9/hook\"\nevents = [\"rolled_back\"]\nformat = \"slack\"\ntoken = \"t\"\n\
             [[notify]]\nurl = \"https://hooks.example/x\"\n\
             [[routes]]\nname = \"r\"\npaths = [\"/s\"]\nservice = \"students\"\n\
             analysis = { max_p99_ratio = 2.5, interval = \"1s\" }\n\
             steps = [{ canary = 5, for = \"10m\" }, { pause = true }, { canary = 50, for = \"30s\" }, { cutover = true }]\n",
        )
        .unwrap();
        let route = &plan.routes[0];
        assert_eq!(
            route.analysis.interval,
            Duration::from_secs(1),
            "the route's own"
        );
        assert_eq!(route.analysis.failure_limit, 2, "the plan's default");
        assert_eq!(route.analysis.max_error_rate, Some(0.1));
        assert_eq!(route.analysis.max_p99_ratio, Some(2.5));
        assert_eq!(
            route.steps,
            [
                Step::Canary {
                    percent: 5,
                    hold: Duration::from_secs(600)
                },
                Step::Pause,
                Step::Canary {
                    percent: 50,
                    hold: Duration::from_secs(30)
                },
                Step::Cutover,
            ]
        );
        assert_eq!(plan.notify.len(), 2);
        assert_eq!(plan.notify[0].events, [NotifyEvent::RolledBack]);
        assert_eq!(plan.notify[0].format, NotifyFormat::Slack);
        assert_eq!(
            plan.notify[1].events.len(),
            NotifyEvent::ALL.len(),
            "all by default"
        );
        let route = |body: &str| {
            format!(
                "\n[[routes]]\nname = \"r\"\npaths = [\"/students\"]\nservice = \"students\"\n{body}"
            )
        };
        for (extra, field, words) in [
            (
                route("steps = [{ canary = 5 }, { cutover = true }]"),
                "routes[0].steps[0]",
                "how long",
            ),
            (
                route("steps = [{ canary = 5, for = \"1m\" }]"),
                "routes[0].steps",
                "ends with",
            ),
            (
                route("steps = [{ cutover = true }, { pause = true }]"),
                "routes[0].steps[1]",
                "nothing comes after",
            ),
            (
                route("steps = [{ canary = 0, for = \"1m\" }, { cutover = true }]"),
                "routes[0].steps[0].canary",
                "1 to 100",
            ),
            (
                route("steps = [{ pause = true, cutover = true }]"),
                "routes[0].steps[0]",
                "a step is",
            ),
            (
                route("analysis = { max_error_rate = 2.0 }"),
                "routes[0].analysis.max_error_rate",
                "fraction",
            ),
            (
                route("analysis = { failure_limit = 0 }"),
                "routes[0].analysis.failure_limit",
                "1 or more",
            ),
            (
                route("analysis = { max_p99_ratio = 0.5 }"),
                "routes[0].analysis.max_p99_ratio",
                "ratio",
            ),
            (
                "\n[[notify]]\nurl = \"ftp://x\"\n".to_string(),
                "notify[0].url",
                "http",
            ),
            (
                "\n[[notify]]\nurl = \"http://x\"\nevents = [\"lunch\"]\n".to_string(),
                "notify[0].events[0]",
                "rolled_back",
            ),
        ] {
            let err = check(&extra).unwrap_err();
            assert_eq!(err.field, field, "{extra}\n→ {err}");
            assert!(err.message.contains(words), "{extra}\n→ {err}");
            assert!(err.line > 0, "{err}");
        }
    }

    #[test]
    fn cidr_ranges_contain_what_they_say() {
        let cases = [
            ("10.0.0.0/8", "10.200.1.1", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("127.0.0.1", "127.0.0.1", true),
            ("127.0.0.1", "127.0.0.2", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("::1", "::1", true),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("10.0.0.0/8", "::ffff:10.1.1.1", true),
            ("10.0.0.0/8", "::1", false),
        ];
        for (range, ip, inside) in cases {
            let cidr = Cidr::parse(range).unwrap();
            assert_eq!(cidr.contains(ip.parse().unwrap()), inside, "{range} ∋ {ip}");
        }
        for bad in ["10.0.0.0/", "10.0.0.0/x", "::1/129", "host", ""] {
            assert!(Cidr::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn disjoint_methods_on_one_path_are_not_ambiguous() {
        let plan = check(
            "\n[[routes]]\nname = \"reads\"\npaths = [\"/s/{id}\"]\nmethods = [\"GET\"]\nservice = \"students\"\n\
             [[routes]]\nname = \"writes\"\npaths = [\"/s/{id}\"]\nmethods = [\"POST\", \"PUT\"]\nservice = \"students\"\n",
        );
        assert!(plan.is_ok(), "{plan:?}");
    }

    #[test]
    fn topology_errors() {
        let no_legacy = BASE.replace("legacy = true\n", "");
        let err = parse(Path::new("p.toml"), &no_legacy).unwrap_err();
        assert!(err.message.contains("exactly one service"), "{err}");
        let same_port = BASE.replace("127.0.0.1:8081", "127.0.0.1:8080");
        let err = parse(Path::new("p.toml"), &same_port).unwrap_err();
        assert_eq!(err.field, "proxy.admin_listen");
        let https = BASE.replace("http://127.0.0.1:7101", "https://127.0.0.1:7101");
        let err = parse(Path::new("p.toml"), &https).unwrap_err();
        assert_eq!(err.field, "services.students.urls[0]");
        let err = parse(Path::new("p.toml"), "[proxy\nlisten=").unwrap_err();
        assert_eq!(err.line, 1);
        assert!(err.to_string().starts_with("p.toml:1:"), "{err}");
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/diff.rs`): TOML's `nan` passed the `< 0.0`
    /// check, and with a NaN tolerance the diff engine finds every float unequal to itself.
    #[test]
    fn capture_and_number_comparison_are_read_and_checked() {
        let plan = check(
            "\n[[routes]]\nname = \"r\"\npaths = [\"/students\"]\nservice = \"students\"\n\
             compare = { numbers = \"exact\" }\n\
             capture = { mismatches = 3, redact = [\"header:Authorization\", \"query:token\", \"/password\", \"/cards/*/number\"] }\n",
        )
        .unwrap();
        let route = &plan.routes[0];
        assert!(route.compare.exact_numbers);
        assert_eq!(
            route.capture,
            Some(CaptureSpec {
                mismatches: 3,
                redact: vec![
                    Redaction::Header("authorization".into()),
                    Redaction::Query("token".into()),
                    Redaction::Body("/password".into()),
                    Redaction::Body("/cards/*/number".into()),
                ],
            })
        );
        assert_eq!(
            route.capture.as_ref().unwrap().redact[0].to_string(),
            "header:authorization"
        );
        let route = |body: &str| {
            format!(
                "\n[[routes]]\nname = \"r\"\npaths = [\"/students\"]\nservice = \"students\"\n{body}"
            )
        };
        for (body, field, words) in [
            (
                "capture = { mismatches = 0 }",
                "routes[0].capture.mismatches",
                "1 to 100",
            ),
            (
                "capture = { mismatches = 101 }",
                "routes[0].capture.mismatches",
                "1 to 100",
            ),
            (
                "capture = { mismatches = 2, redact = [\"password\"] }",
                "routes[0].capture.redact[0]",
                "header:NAME, query:NAME",
            ),
            (
                "capture = { mismatches = 2, redact = [\"header:bad name\"] }",
                "routes[0].capture.redact[0]",
                "not a header name",
            ),
            (
                "capture = { mismatches = 2, redact = [\"query:\"] }",
                "routes[0].capture.redact[0]",
                "parameter name",
            ),
            (
                "compare = { numbers = \"loose\" }",
                "routes[0].compare.numbers",
                "\"value\"",
            ),
            (
                "compare = { tolerance = 0.5, numbers = \"exact\" }",
                "routes[0].compare.numbers",
                "cannot have a tolerance",
            ),
        ] {
            let err = check(&route(body)).unwrap_err();
            assert_eq!(
                (err.line, err.field.as_str()),
                (17, field),
                "{body}\n→ {err}"
            );
            assert!(err.message.contains(words), "{body}\n→ {err}");
        }
        let err = check(&route("capture = { redact = [] }")).unwrap_err();
        assert!(err.message.contains("missing field `mismatches`"), "{err}");
    }

    #[test]
    fn a_nan_tolerance_is_refused() {
        for tolerance in ["nan", "-nan", "-0.5"] {
            let err = check(&format!(
                "\n[[routes]]\nname = \"r\"\npaths = [\"/s\"]\nservice = \"students\"\n\
                 compare = {{ tolerance = {tolerance} }}\n"
            ))
            .unwrap_err();
            assert_eq!(
                err.field, "routes[0].compare.tolerance",
                "{tolerance}: {err}"
            );
            assert_eq!(err.line, 17, "{tolerance}: {err}");
        }
        let plan = check(
            "\n[[routes]]\nname = \"r\"\npaths = [\"/s\"]\nservice = \"students\"\n\
             compare = { tolerance = 0.5 }\n",
        )
        .unwrap();
        assert_eq!(plan.routes[0].compare.tolerance, 0.5);
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("10MiB"), Some(10 << 20));
        assert_eq!(parse_size("512KiB"), Some(512 << 10));
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size("1TB"), None);
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        for text in ["1h", "90m", "5s", "250ms"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("5"), None);
    }
}
