//! The shadow leg: while the primary side answers the client, a copy of the request goes to
//! the candidate and the two answers are compared, off the client's path. The request body is
//! teed while it streams to the primary, the primary's answer while it streams to the client
//! (each up to the route's cap); the leg has its own timeout and an in-flight cap per route,
//! and whatever goes wrong with it is counted, never passed to the client.
//!
//! Results go through a bounded channel ([`ResultSender`]) to the control plane's recorder,
//! which aggregates them and writes them to the state store (a full channel is counted as
//! `dropped`, never waited for): the data plane never touches the store.
//!
//! Comparing is the leg's CPU work, and it must not take the data plane's time when the
//! proxy is busy: answers that are byte-for-byte the same (most of them) are recognised
//! without parsing ([`diff::identical`]); the others go to one comparer thread at the lowest
//! priority of the normal class (nice 19: it runs at once on idle cores, and gets a sliver
//! of busy ones) through a bounded queue, and a comparison the queue cannot take is shed and counted
//! (`unmirrored:shed`), so the match rate stays honest about what was compared.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::protocols::Clients;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::capture::{self, Capturing, Kept};
use crate::routing::Service;
pub use crate::tee::{Captured, TeeBody};
use crate::trace::TRACEPARENT;
use crate::upstream::Upstream;
use strangler_diff::{self as diff, Answer, Difference};
use strangler_plan::{ShadowSpec, ShadowWrites};

/// Marks a mirrored request, so a candidate can tell it from real traffic.
pub const SHADOW_HEADER: HeaderName = HeaderName::from_static("x-strangler-shadow");
const DRY_RUN_HEADER: HeaderName = HeaderName::from_static("x-strangler-dry-run");
/// Results waiting for the recorder; beyond, results are dropped and counted.
const CHANNEL_CAPACITY: usize = 4096;
/// Longest a leg waits for the client's request body or for the client to read the primary's
/// answer; past it the leg gives its slot back (`incomplete`).
const CAPTURE_DEADLINE: Duration = Duration::from_secs(30);
/// Differences kept in a sample.
const SAMPLE_DIFFERENCES: usize = 50;
/// Bytes of each body kept in a sample.
const SAMPLE_BODY_BYTES: usize = 16 * 1024;
/// Comparisons waiting for the comparer thread; beyond, a comparison is shed.
const COMPARE_QUEUE: usize = 1024;

/// Why a request was not compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmirrored {
    /// Not in the route's sample.
    SampledOut,
    /// An unsafe method on a route whose writes are skipped.
    WriteSkipped,
    /// A body over the route's cap.
    TooLarge,
    /// The route's in-flight cap was reached.
    Busy,
    /// The client's request or the primary's answer did not complete.
    Incomplete,
    /// Both answered, but the comparer was behind (the proxy busy): shed, not compared.
    Shed,
    /// Not started: the data-plane thread was busy (over `[proxy] shadow_max_busy` of the
    /// time running or waiting for a core), so shadow yielded.
    Throttled,
}

/// Why the candidate gave no answer to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Nothing listens there (the connection was refused).
    ConnectRefused,
    /// Connecting failed otherwise (unreachable, no instance, DNS).
    Connect,
    /// No (whole) answer within the route's shadow timeout.
    Timeout,
    /// The connection was reset or closed before the answer was whole.
    Reset,
    /// An answer came that is not one: not HTTP, or a body over the shadow cap.
    BadAnswer,
}

impl Failure {
    /// The name samples and reports show.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::ConnectRefused => "connect_refused",
            Failure::Connect => "connect",
            Failure::Timeout => "timeout",
            Failure::Reset => "reset",
            Failure::BadAnswer => "bad_answer",
        }
    }
}

/// A candidate that gave no answer to compare: why, and what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegError {
    pub reason: Failure,
    pub detail: String,
}

impl LegError {
    fn new(reason: Failure, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }

    /// Classifies a failed exchange with the candidate by what its error chain holds.
    fn of(err: &(dyn std::error::Error + 'static)) -> Self {
        let mut reason = Failure::BadAnswer;
        let mut source = Some(err);
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                reason = match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => Failure::ConnectRefused,
                    std::io::ErrorKind::TimedOut => Failure::Timeout,
                    std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof => Failure::Reset,
                    _ => reason,
                };
                break;
            }
            if let Some(client) = e.downcast_ref::<hyper_util::client::legacy::Error>()
                && client.is_connect()
            {
                reason = Failure::Connect;
            }
            if let Some(h) = e.downcast_ref::<hyper::Error>() {
                if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                    reason = Failure::Reset;
                } else if h.is_timeout() {
                    reason = Failure::Timeout;
                }
            }
            source = e.source();
        }
        Self::new(reason, error_chain(err))
    }
}

/// An error and its sources, one line (`error sending request: client error (Connect):
/// Connection refused (os error 111)`).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

/// What one mirrored request came to.
#[derive(Debug)]
pub enum Outcome {
    Unmirrored(Unmirrored),
    /// The candidate gave no answer to compare; the sample names the request and why.
    Error {
        error: LegError,
        sample: Value,
    },
    Compared {
        differences: Vec<Difference>,
        /// Group paths of the differences that are noise.
        noisy: Vec<String>,
        sample: Option<Value>,
        primary_ms: f64,
        candidate_ms: f64,
        /// The exchange, kept for replay (the route captures, and a difference counts).
        case: Option<Kept>,
    },
    /// Paths seen to differ between two answers of the primary to the same request.
    Noise(Vec<String>),
}

impl Outcome {
    /// What the leg came to, as its span says: `equal`, `different` (a difference that
    /// counts), `error` (no answer from the candidate) or `not_compared`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Compared {
                sample: Some(_), ..
            } => "different",
            Outcome::Compared { .. } => "equal",
            Outcome::Error { .. } => "error",
            Outcome::Unmirrored(_) | Outcome::Noise(_) => "not_compared",
        }
    }
}

/// Hands results to the control plane's recorder through a bounded channel; cheap to
/// clone. A full channel is counted (`dropped`), never waited for.
#[derive(Clone)]
pub struct ResultSender {
    tx: mpsc::Sender<(String, Outcome)>,
    dropped: Arc<AtomicU64>,
    /// Learned noisy group paths per route, shared with the recorder that learns them.
    noise: Arc<Mutex<NoiseMap>>,
}

/// Noisy group paths per route.
pub type NoiseMap = HashMap<String, HashSet<String>>;

/// The recorder's end of the results channel. The channel closes when every
/// [`ResultSender`] is gone (the data plane stopped), which is the recorder's signal to
/// write what is pending and end.
pub struct ResultReceiver {
    pub rx: mpsc::Receiver<(String, Outcome)>,
    /// Results the channel could not take since the recorder last looked.
    pub dropped: Arc<AtomicU64>,
    pub noise: Arc<Mutex<NoiseMap>>,
}

/// A results channel, starting with the noise already learned.
pub fn results_channel(noise: NoiseMap) -> (ResultSender, ResultReceiver) {
    results_channel_with_capacity(noise, CHANNEL_CAPACITY)
}

/// [`results_channel`] with another capacity (tests fill it).
pub fn results_channel_with_capacity(
    noise: NoiseMap,
    capacity: usize,
) -> (ResultSender, ResultReceiver) {
    let (tx, rx) = mpsc::channel(capacity);
    let dropped = Arc::new(AtomicU64::new(0));
    let noise = Arc::new(Mutex::new(noise));
    (
        ResultSender {
            tx,
            dropped: Arc::clone(&dropped),
            noise: Arc::clone(&noise),
        },
        ResultReceiver { rx, dropped, noise },
    )
}

impl ResultSender {
    pub fn send(&self, route: &str, outcome: Outcome) {
        if self.tx.try_send((route.to_string(), outcome)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The learned noise, for the comparer to tell what counts when it captures.
    fn noise(&self) -> Arc<Mutex<NoiseMap>> {
        Arc::clone(&self.noise)
    }

    /// Which of `paths` are known noise on `route` (no copy of the learned set).
    fn noisy_among(&self, route: &str, paths: impl Iterator<Item = String>) -> Vec<String> {
        let known = self.noise.lock().unwrap_or_else(|p| p.into_inner());
        match known.get(route) {
            Some(set) if !set.is_empty() => paths.filter(|p| set.contains(p)).collect(),
            _ => Vec::new(),
        }
    }
}

/// Two answers to compare, and where the result goes.
struct CompareJob {
    a: Answer,
    b: Answer,
    rules: Arc<diff::Rules>,
    /// The request, when the route captures mismatches.
    capture: Option<Box<ToCapture>>,
    reply: oneshot::Sender<Compared>,
}

/// What the comparer needs to capture a mismatch: the request, and what is noise.
struct ToCapture {
    asked: capture::Asked,
    noise: Arc<Mutex<NoiseMap>>,
    /// Noisy paths the leg just learned.
    learned: Vec<String>,
}

/// Compares, and captures the exchange when a difference counts (not noise).
fn compare_and_capture(
    a: &Answer,
    b: &Answer,
    rules: &diff::Rules,
    capture: Option<&ToCapture>,
) -> (Vec<Difference>, Option<Box<Kept>>) {
    let differences = diff::compare(a, b, rules);
    let kept = match capture {
        Some(c) if !differences.is_empty() => {
            let known = c.noise.lock().unwrap_or_else(|p| p.into_inner());
            let route_noise = known.get(&c.asked.route);
            capture::build(&c.asked, a, b, &differences, |d| {
                let group = diff::group_path(&d.path);
                !c.learned.contains(&group) && !route_noise.is_some_and(|n| n.contains(&group))
            })
            .map(Box::new)
        }
        _ => None,
    };
    (differences, kept)
}

/// The comparer thread's queue, started on first use; one per process.
fn comparer() -> Option<&'static std::sync::mpsc::SyncSender<CompareJob>> {
    static COMPARER: std::sync::OnceLock<Option<std::sync::mpsc::SyncSender<CompareJob>>> =
        std::sync::OnceLock::new();
    COMPARER
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<CompareJob>(COMPARE_QUEUE);
            let started = std::thread::Builder::new()
                .name("strangler-compare".to_string())
                .spawn(move || {
                    lowest_priority();
                    while let Ok(job) = rx.recv() {
                        let (differences, kept) =
                            compare_and_capture(&job.a, &job.b, &job.rules, job.capture.as_deref());
                        let _ = job
                            .reply
                            .send(Compared::Done(differences, job.a, job.b, kept));
                    }
                });
            match started {
                Ok(_) => Some(tx),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot start the comparer thread; comparing on the leg's task");
                    None
                }
            }
        })
        .as_ref()
}

/// Gives the calling thread the lowest priority of the normal class (nice 19): when the
/// cores are busy, it gets a sliver of them (about 1.5 % against a thread at nice 0), so
/// comparisons fall behind and are shed rather than slow the data plane; when they are not,
/// it runs at once.
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
            thread_native_id,
        };
        if let Err(err) = set_thread_priority_and_policy(
            thread_native_id(),
            thread_priority::ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
        ) {
            tracing::debug!(error = ?err, "the comparer thread keeps its scheduling class");
        }
    }
}

/// What comparing two answers came to.
enum Compared {
    Done(Vec<Difference>, Answer, Answer, Option<Box<Kept>>),
    /// The comparer's queue was full.
    Shed,
}

/// Compares `a` and `b` (capturing a mismatch when `capture` says how): at once when they
/// are identical, else on the comparer thread.
async fn compare(
    a: Answer,
    b: Answer,
    rules: &Arc<diff::Rules>,
    capture: Option<Box<ToCapture>>,
) -> Compared {
    compare_on(comparer(), a, b, rules, capture).await
}

async fn compare_on(
    queue: Option<&std::sync::mpsc::SyncSender<CompareJob>>,
    a: Answer,
    b: Answer,
    rules: &Arc<diff::Rules>,
    capture: Option<Box<ToCapture>>,
) -> Compared {
    if diff::identical(&a, &b, rules) {
        return Compared::Done(Vec::new(), a, b, None);
    }
    let Some(queue) = queue else {
        let (differences, kept) = compare_and_capture(&a, &b, rules, capture.as_deref());
        return Compared::Done(differences, a, b, kept);
    };
    let (reply, answer) = oneshot::channel();
    let job = CompareJob {
        a,
        b,
        rules: Arc::clone(rules),
        capture,
        reply,
    };
    if queue.try_send(job).is_err() {
        return Compared::Shed;
    }
    answer.await.unwrap_or(Compared::Shed)
}

/// Everything a shadow leg needs from the request path.
pub struct Leg {
    pub route: String,
    pub spec: ShadowSpec,
    pub rules: Arc<diff::Rules>,
    pub method: Method,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub request_body: Option<oneshot::Receiver<Captured>>,
    pub primary: Service,
    pub candidate: Service,
    pub primary_answer: ResponseCapture,
    pub primary_ms: f64,
    pub request_id: String,
    pub permit: tokio::sync::OwnedSemaphorePermit,
    /// The route's `capture` section, if it has one.
    pub capture: Option<Arc<Capturing>>,
    /// Whether the primary (the side that answered the client) is the monolith.
    pub primary_is_legacy: bool,
    /// The leg's span, when the request's trace is sampled (`[telemetry]`).
    pub trace: Option<crate::trace::LegTrace>,
    /// The route's `translate` section, when the candidate is the new service: its request
    /// and answer are translated as the client's would be.
    pub translate: Option<crate::translate::Translation>,
}

/// The primary's answer, as the tee will deliver it.
pub struct ResponseCapture {
    pub status: u16,
    /// Its headers as they came (turned into text on the leg, off the client's path).
    pub headers: HeaderMap,
    pub body: oneshot::Receiver<Captured>,
}

pub fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn truncated(bytes: &[u8]) -> String {
    let end = bytes.len().min(SAMPLE_BODY_BYTES);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

async fn send(
    client: &Clients<Full<Bytes>>,
    service: &Service,
    method: &Method,
    path_and_query: &str,
    headers: HeaderMap,
    body: Bytes,
    spec: &ShadowSpec,
) -> Result<(Answer, f64), LegError> {
    let (_, instance) = service.upstream.pick().ok_or_else(|| {
        LegError::new(
            Failure::Connect,
            format!("service {} has no instance", service.upstream.name),
        )
    })?;
    let uri = Upstream::uri(instance, path_and_query)
        .map_err(|e| LegError::new(Failure::Connect, e.to_string()))?;
    let mut headers = headers;
    // The body is whole: its length is known (the client's may have been translated).
    if headers.contains_key(http::header::CONTENT_LENGTH) {
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    let started = Instant::now();
    let exchange = async {
        let response = client
            .request(service.upstream.protocol, request)
            .await
            .map_err(|e| LegError::of(&e))?;
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        let (parts, body) = response.into_parts();
        let collected = Limited::new(body, spec.max_body_bytes)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    LegError::new(
                        Failure::BadAnswer,
                        format!(
                            "answer body over the shadow cap of {} bytes",
                            spec.max_body_bytes
                        ),
                    )
                } else {
                    let e: &(dyn std::error::Error + 'static) = &*e;
                    let mut error = LegError::of(e);
                    error.detail = format!("answer body: {}", error.detail);
                    error
                }
            })?;
        Ok::<_, LegError>((
            Answer {
                status: parts.status.as_u16(),
                headers: header_pairs(&parts.headers),
                body: collected.to_bytes(),
            },
            elapsed,
        ))
    };
    tokio::time::timeout(spec.timeout, exchange)
        .await
        .map_err(|_| {
            LegError::new(
                Failure::Timeout,
                format!("no answer within {} ms", spec.timeout.as_millis()),
            )
        })?
}

/// Runs one shadow leg to its result. Never touches the client's answer.
pub async fn run(mut leg: Leg, client: Clients<Full<Bytes>>, recorder: ResultSender, roll: u64) {
    let trace = leg.trace.take().map(|trace| {
        leg.headers.insert(TRACEPARENT, trace.traceparent());
        (trace, leg.candidate.upstream.name.clone())
    });
    let (route, outcome) = mirror(leg, client, &recorder, roll).await;
    if let Some((trace, candidate)) = trace {
        trace.finish(&route, &candidate, outcome.label());
    }
    recorder.send(&route, outcome);
}

/// The leg's request to the candidate and what it came to, with the route's name.
async fn mirror(
    leg: Leg,
    client: Clients<Full<Bytes>>,
    recorder: &ResultSender,
    roll: u64,
) -> (String, Outcome) {
    let Leg {
        route,
        spec,
        rules,
        method,
        path_and_query,
        mut headers,
        request_body,
        primary,
        candidate,
        primary_answer,
        primary_ms,
        request_id,
        permit,
        capture,
        primary_is_legacy,
        trace: _,
        translate,
    } = leg;
    let body = match request_body {
        None => Bytes::new(),
        Some(rx) => match tokio::time::timeout(CAPTURE_DEADLINE, rx)
            .await
            .unwrap_or(Ok(Captured::Incomplete))
        {
            Ok(Captured::Incomplete) => {
                return (route, Outcome::Unmirrored(Unmirrored::Incomplete));
            }
            Ok(Captured::Complete(bytes)) => bytes,
            Ok(Captured::TooLarge) => {
                return (route, Outcome::Unmirrored(Unmirrored::TooLarge));
            }
            Err(_) => return (route, Outcome::Unmirrored(Unmirrored::Incomplete)),
        },
    };
    // The candidate is the new service: it is sent the request in its contract.
    let candidate_body = translate
        .as_ref()
        .and_then(|t| t.request(&headers, &body))
        .unwrap_or_else(|| body.clone());
    headers.insert(SHADOW_HEADER, HeaderValue::from_static("1"));
    let safe = matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe && spec.writes == ShadowWrites::DryRun {
        headers.insert(DRY_RUN_HEADER, HeaderValue::from_static("1"));
    }
    // The primary asked the same safe question twice tells noise; only then are the
    // headers needed again (without the shadow mark).
    let probe_headers = (safe && (roll as f64) < spec.noise_percent).then(|| {
        let mut again = headers.clone();
        again.remove(&SHADOW_HEADER);
        again
    });
    // The request as the candidate got it, only for a route that captures mismatches.
    let capture_headers = capture.as_ref().map(|_| headers.clone());
    let candidate_result = send(
        &client,
        &candidate,
        &method,
        &path_and_query,
        headers,
        candidate_body,
        &spec,
    )
    .await;
    let primary_body = match tokio::time::timeout(CAPTURE_DEADLINE, primary_answer.body)
        .await
        .unwrap_or(Ok(Captured::Incomplete))
    {
        Ok(Captured::Incomplete) => {
            return (route, Outcome::Unmirrored(Unmirrored::Incomplete));
        }
        Ok(Captured::Complete(bytes)) => bytes,
        Ok(Captured::TooLarge) => {
            return (route, Outcome::Unmirrored(Unmirrored::TooLarge));
        }
        Err(_) => return (route, Outcome::Unmirrored(Unmirrored::Incomplete)),
    };
    let primary_answer = Answer {
        status: primary_answer.status,
        headers: header_pairs(&primary_answer.headers),
        body: primary_body,
    };
    let (mut candidate_answer, candidate_ms) = match candidate_result {
        Ok(answer) => answer,
        Err(error) => {
            let sample = json!({
                "request_id": request_id,
                "method": method.as_str(),
                "uri": path_and_query,
                "error": { "reason": error.reason.as_str(), "detail": error.detail },
            });
            return (route, Outcome::Error { error, sample });
        }
    };
    // Compared as a client would get it.
    if let Some(t) = &translate {
        t.shadow_answer(&mut candidate_answer);
    }
    // Noise: the primary asked the same safe question twice; what differs is not a bug.
    let mut learned: Vec<String> = Vec::new();
    if let Some(again) = probe_headers
        && let Ok((second, _)) = send(
            &client,
            &primary,
            &method,
            &path_and_query,
            again,
            body.clone(),
            &spec,
        )
        .await
    {
        // Only two good answers of the same status say anything about noise.
        let comparable = second.status == primary_answer.status && primary_answer.status < 500;
        if comparable
            && let Compared::Done(differences, ..) =
                compare(primary_answer.clone(), second, &rules, None).await
        {
            learned = differences
                .iter()
                .map(|d| diff::group_path(&d.path))
                .filter(|p| p != "(status)")
                .collect();
        }
        if !learned.is_empty() {
            recorder.send(&route, Outcome::Noise(learned.clone()));
        }
    }
    let to_capture = match (capture, capture_headers) {
        (Some(capturing), Some(headers)) => Some(Box::new(ToCapture {
            asked: capture::Asked {
                capturing,
                route: route.clone(),
                request_id: request_id.clone(),
                method: method.clone(),
                uri: path_and_query.clone(),
                headers,
                body: body.clone(),
                primary_is_legacy,
            },
            noise: recorder.noise(),
            learned: learned.clone(),
        })),
        _ => None,
    };
    let (differences, primary_answer, candidate_answer, case) =
        match compare(primary_answer, candidate_answer, &rules, to_capture).await {
            Compared::Done(differences, a, b, case) => (differences, a, b, case),
            Compared::Shed => {
                return (route, Outcome::Unmirrored(Unmirrored::Shed));
            }
        };
    // Which differing paths are noise: learned just now, or known for the route (looked up
    // only when something differs).
    let mut noise: HashSet<String> = HashSet::new();
    if !differences.is_empty() {
        let groups = differences.iter().map(|d| diff::group_path(&d.path));
        noise.extend(recorder.noisy_among(&route, groups));
        noise.extend(learned);
    }
    let asked = Asked {
        request_id: &request_id,
        method: &method,
        path_and_query: &path_and_query,
        body: &body,
    };
    let mut outcome = compared(
        &asked,
        (&primary_answer, primary_ms),
        (&candidate_answer, candidate_ms),
        differences,
        &noise,
    );
    if let Outcome::Compared {
        sample: Some(_),
        case: slot,
        ..
    } = &mut outcome
    {
        *slot = case.map(|c| *c);
    }
    drop(permit);
    (route, outcome)
}

/// The mirrored request, as a sample shows it.
pub struct Asked<'a> {
    pub request_id: &'a str,
    pub method: &'a Method,
    pub path_and_query: &'a str,
    pub body: &'a [u8],
}

/// What a comparison of the primary's and the candidate's answers (each with its time in ms)
/// came to: which `differences` are known noise (their group path is in `noise`), and when
/// any other difference counts, a sample of the request and both answers.
pub fn compared(
    asked: &Asked<'_>,
    (primary, primary_ms): (&Answer, f64),
    (candidate, candidate_ms): (&Answer, f64),
    differences: Vec<Difference>,
    noise: &HashSet<String>,
) -> Outcome {
    let noisy: Vec<String> = differences
        .iter()
        .map(|d| diff::group_path(&d.path))
        .filter(|p| noise.contains(p))
        .collect();
    let counts = differences.len() > noisy.len();
    let sample = counts.then(|| {
        let side = |a: &Answer, ms: f64| {
            json!({ "status": a.status, "headers": a.headers, "body": truncated(&diff::decoded(a)), "ms": ms })
        };
        json!({
            "request_id": asked.request_id,
            "method": asked.method.as_str(),
            "uri": asked.path_and_query,
            "request_body": truncated(asked.body),
            "primary": side(primary, primary_ms),
            "candidate": side(candidate, candidate_ms),
            "differences": differences.iter().take(SAMPLE_DIFFERENCES).collect::<Vec<_>>(),
        })
    });
    Outcome::Compared {
        differences,
        noisy,
        sample,
        primary_ms,
        candidate_ms,
        case: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &str) -> Answer {
        Answer {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    #[tokio::test]
    async fn identical_answers_skip_the_queue_and_a_full_queue_sheds() {
        let rules = Arc::new(diff::Rules::with_default_headers());
        // A queue of one that nobody drains.
        let (tx, rx) = std::sync::mpsc::sync_channel::<CompareJob>(1);
        let same = compare_on(
            Some(&tx),
            answer(r#"{"a":1}"#),
            answer(r#"{"a":1}"#),
            &rules,
            None,
        )
        .await;
        assert!(matches!(same, Compared::Done(ref d, ..) if d.is_empty()));
        assert!(
            rx.try_recv().is_err(),
            "identical answers never reach the comparer"
        );
        // A differing pair goes to the queue and waits for the comparer's answer.
        let waiting = tokio::spawn({
            let (tx, rules) = (tx.clone(), Arc::clone(&rules));
            async move {
                compare_on(
                    Some(&tx),
                    answer(r#"{"a":1}"#),
                    answer(r#"{"a":2}"#),
                    &rules,
                    None,
                )
                .await
            }
        });
        let job = tokio::task::spawn_blocking(move || (rx.recv(), rx))
            .await
            .unwrap();
        let (job, rx) = (job.0.unwrap(), job.1);
        // While nobody drains it, a full queue sheds the next one.
        let (filler_reply, _) = oneshot::channel();
        tx.try_send(CompareJob {
            a: answer("1"),
            b: answer("2"),
            rules: Arc::clone(&rules),
            capture: None,
            reply: filler_reply,
        })
        .unwrap();
        let shed = compare_on(
            Some(&tx),
            answer(r#"{"b":1}"#),
            answer(r#"{"b":2}"#),
            &rules,
            None,
        )
        .await;
        assert!(matches!(shed, Compared::Shed), "a full queue sheds");
        drop(rx);
        // The comparer answers the job it took.
        let differences = diff::compare(&job.a, &job.b, &job.rules);
        assert_eq!(differences.len(), 1);
        assert!(
            job.reply
                .send(Compared::Done(differences, job.a, job.b, None))
                .is_ok()
        );
        assert!(matches!(waiting.await.unwrap(), Compared::Done(ref d, ..) if d.len() == 1));
    }

    #[tokio::test]
    async fn the_comparer_thread_compares_differing_answers() {
        let rules = Arc::new(diff::Rules::with_default_headers());
        let done = compare(
            answer(r#"{"a":1,"b":[1,2]}"#),
            answer(r#"{"a":1,"b":[1,3]}"#),
            &rules,
            None,
        )
        .await;
        let Compared::Done(differences, ..) = done else {
            panic!("an idle comparer sheds nothing");
        };
        assert_eq!(differences.len(), 1);
        assert_eq!(differences[0].path, "/b/1");
    }
}
