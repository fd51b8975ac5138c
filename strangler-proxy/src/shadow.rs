//! The shadow leg: while the primary side answers the client, a copy of the request goes to
//! the candidate and the two answers are compared, off the client's path. The request body is
//! teed while it streams to the primary, the primary's answer while it streams to the client
//! (each up to the route's cap); the leg has its own timeout and an in-flight cap per route,
//! and whatever goes wrong with it is counted, never passed to the client.
//!
//! Results go through a bounded channel to a recorder task that aggregates them and writes
//! them to the state store (a full channel is counted as `dropped`, never waited for).

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::diff::{self, Answer, Difference};
use crate::plan::{ShadowSpec, ShadowWrites};
use crate::routing::Service;
use crate::store::{ShadowBatch, Store};
use crate::upstream::Upstream;

/// Marks a mirrored request, so a candidate can tell it from real traffic.
pub const SHADOW_HEADER: HeaderName = HeaderName::from_static("x-strangler-shadow");
const DRY_RUN_HEADER: HeaderName = HeaderName::from_static("x-strangler-dry-run");
/// Results waiting for the recorder; beyond, results are dropped and counted.
const CHANNEL_CAPACITY: usize = 4096;
/// How often the recorder writes to the store.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Longest a leg waits for the client's request body or for the client to read the primary's
/// answer; past it the leg gives its slot back (`incomplete`).
const CAPTURE_DEADLINE: Duration = Duration::from_secs(30);
/// Differences kept in a sample.
const SAMPLE_DIFFERENCES: usize = 50;
/// Bytes of each body kept in a sample.
const SAMPLE_BODY_BYTES: usize = 16 * 1024;

/// What a tee captured.
#[derive(Debug)]
pub enum Captured {
    Complete(Bytes),
    TooLarge,
    /// Not complete within the leg's deadline (a slow client, a long stream).
    Incomplete,
}

/// A body that passes every frame on and keeps a copy of the data up to a cap, delivered
/// when the stream ends. Without a receiver it copies nothing.
pub struct TeeBody<B: Body> {
    inner: B,
    copy: BytesMut,
    cap: usize,
    overflow: bool,
    done: Option<oneshot::Sender<Captured>>,
}

impl<B: Body> TeeBody<B> {
    /// Passes `inner` on unchanged.
    pub fn passthrough(inner: B) -> Self {
        Self {
            inner,
            copy: BytesMut::new(),
            cap: 0,
            overflow: false,
            done: None,
        }
    }

    /// Passes `inner` on and captures up to `cap` bytes of it.
    pub fn capture(inner: B, cap: usize) -> (Self, oneshot::Receiver<Captured>) {
        let (tx, rx) = oneshot::channel();
        (
            Self {
                inner,
                copy: BytesMut::new(),
                cap,
                overflow: false,
                done: Some(tx),
            },
            rx,
        )
    }
}

impl<B: Body> TeeBody<B> {
    /// Delivers the copy (once).
    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            let captured = if self.overflow {
                Captured::TooLarge
            } else {
                Captured::Complete(std::mem::take(&mut self.copy).freeze())
            };
            let _ = done.send(captured);
        }
    }
}

impl<B: Body> Drop for TeeBody<B> {
    fn drop(&mut self) {
        // A reader that stops at the declared length never polls for the end: the body is
        // complete all the same.
        if self.inner.is_end_stream() {
            self.finish();
        }
    }
}

impl<B> Body for TeeBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if this.done.is_some() {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref()
                        && !this.overflow
                    {
                        if this.copy.len() + data.len() > this.cap {
                            this.overflow = true;
                            this.copy = BytesMut::new();
                        } else {
                            this.copy.extend_from_slice(data);
                        }
                    }
                    if this.inner.is_end_stream() {
                        this.finish();
                    }
                }
                Poll::Ready(None) => this.finish(),
                // An error or an abandoned stream drops the sender: nothing to compare.
                Poll::Ready(Some(Err(_))) => this.done = None,
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

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
}

impl Unmirrored {
    pub fn metric(self) -> &'static str {
        match self {
            Unmirrored::SampledOut => "unmirrored:sampled_out",
            Unmirrored::WriteSkipped => "unmirrored:write_skipped",
            Unmirrored::TooLarge => "unmirrored:too_large",
            Unmirrored::Busy => "unmirrored:busy",
            Unmirrored::Incomplete => "unmirrored:incomplete",
        }
    }
}

/// What one mirrored request came to.
#[derive(Debug)]
pub enum Outcome {
    Unmirrored(Unmirrored),
    /// The candidate failed (connect, timeout, unreadable answer).
    Error(String),
    Compared {
        differences: Vec<Difference>,
        /// Group paths of the differences that are noise.
        noisy: Vec<String>,
        sample: Option<Value>,
        primary_ms: f64,
        candidate_ms: f64,
    },
    /// Paths seen to differ between two answers of the primary to the same request.
    Noise(Vec<String>),
}

/// Hands results to the recorder; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<(String, Outcome)>,
    dropped: Arc<AtomicU64>,
    /// Learned noisy group paths per route.
    noise: Arc<Mutex<HashMap<String, HashSet<String>>>>,
}

impl Recorder {
    /// Starts the recorder task writing to the store at `state`.
    pub fn start(state: &std::path::Path) -> Result<Self, crate::store::StoreError> {
        let store = Store::open(state)?;
        let noise = Arc::new(Mutex::new(store.noisy_paths()?));
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(record(rx, store, Arc::clone(&dropped), Arc::clone(&noise)));
        Ok(Self { tx, dropped, noise })
    }

    pub fn send(&self, route: &str, outcome: Outcome) {
        if self.tx.try_send((route.to_string(), outcome)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn noisy(&self, route: &str) -> HashSet<String> {
        self.noise
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(route)
            .cloned()
            .unwrap_or_default()
    }
}

async fn record(
    mut rx: mpsc::Receiver<(String, Outcome)>,
    store: Store,
    dropped: Arc<AtomicU64>,
    noise: Arc<Mutex<HashMap<String, HashSet<String>>>>,
) {
    let store = Arc::new(Mutex::new(store));
    let mut batches: HashMap<String, ShadowBatch> = HashMap::new();
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    loop {
        tokio::select! {
            received = rx.recv() => {
                let Some((route, outcome)) = received else {
                    // The proxy is stopping: write what is pending before going.
                    let pending: Vec<ShadowBatch> = batches.drain().map(|(_, b)| b).collect();
                    let store = Arc::clone(&store);
                    let _ = tokio::task::spawn_blocking(move || {
                        let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
                        for batch in &pending {
                            if let Err(err) = store.record_shadow(batch) {
                                tracing::warn!(error = %err, "cannot record shadow results");
                            }
                        }
                    })
                    .await;
                    break;
                };
                let batch = batches.entry(route.clone()).or_insert_with(|| ShadowBatch { route: route.clone(), ..ShadowBatch::default() });
                add(batch, outcome, &noise, &route);
            }
            _ = tick.tick() => {
                let lost = dropped.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    let batch = batches.entry(String::new()).or_default();
                    *batch.counts.entry("dropped".to_string()).or_default() += lost as i64;
                }
                if batches.is_empty() {
                    continue;
                }
                let pending: Vec<ShadowBatch> = batches.drain().map(|(_, b)| b).collect();
                let store = Arc::clone(&store);
                let written = tokio::task::spawn_blocking(move || {
                    let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
                    for batch in &pending {
                        store.record_shadow(batch)?;
                    }
                    Ok::<_, crate::store::StoreError>(())
                })
                .await;
                if let Ok(Err(err)) = written {
                    tracing::warn!(error = %err, "cannot record shadow results");
                }
            }
        }
    }
}

fn add(
    batch: &mut ShadowBatch,
    outcome: Outcome,
    noise: &Mutex<HashMap<String, HashSet<String>>>,
    route: &str,
) {
    let mut count = |metric: &str| *batch.counts.entry(metric.to_string()).or_default() += 1;
    match outcome {
        Outcome::Unmirrored(reason) => count(reason.metric()),
        Outcome::Error(message) => {
            count("errors");
            tracing::debug!(route, error = %message, "shadow leg failed");
        }
        Outcome::Noise(paths) => {
            let mut known = noise.lock().unwrap_or_else(|p| p.into_inner());
            let set = known.entry(route.to_string()).or_default();
            for p in paths {
                if set.insert(p.clone()) {
                    *batch
                        .paths
                        .entry((p, "noise".to_string(), true))
                        .or_default() += 1;
                }
            }
        }
        Outcome::Compared {
            differences,
            noisy,
            sample,
            primary_ms,
            candidate_ms,
        } => {
            count("compared");
            let real: Vec<&Difference> = differences
                .iter()
                .filter(|d| !noisy.contains(&diff::group_path(&d.path)))
                .collect();
            if differences.is_empty() {
                count("matched");
            } else if real.is_empty() {
                count("noisy_only");
            } else {
                count("mismatched");
            }
            let mut groups = HashSet::new();
            for d in &differences {
                let group = diff::group_path(&d.path);
                let is_noise = noisy.contains(&group);
                if groups.insert((group.clone(), d.kind.code().to_string(), is_noise)) {
                    *batch
                        .paths
                        .entry((group, d.kind.code().to_string(), is_noise))
                        .or_default() += 1;
                }
            }
            if let (Some(sample), Some(first)) = (sample, real.first()) {
                batch
                    .samples
                    .push((diff::group_path(&first.path), sample.to_string()));
            }
            batch.latencies.push((primary_ms, candidate_ms));
        }
    }
}

/// Everything a shadow leg needs from the request path.
pub struct Leg {
    pub route: String,
    pub spec: ShadowSpec,
    pub rules: diff::Rules,
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
}

/// The primary's answer, as the tee will deliver it.
pub struct ResponseCapture {
    pub status: u16,
    pub headers: Vec<(String, String)>,
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
    client: &Client<HttpConnector, Full<Bytes>>,
    service: &Service,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
    spec: &ShadowSpec,
) -> Result<(Answer, f64), String> {
    let (_, instance) = service
        .upstream
        .pick()
        .ok_or_else(|| format!("service {} has no instance", service.upstream.name))?;
    let uri = Upstream::uri(instance, path_and_query).map_err(|e| e.to_string())?;
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = headers.clone();
    let started = Instant::now();
    let exchange = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        let (parts, body) = response.into_parts();
        let collected = Limited::new(body, spec.max_body_bytes)
            .collect()
            .await
            .map_err(|e| format!("answer body: {e}"))?;
        Ok::<_, String>((
            Answer {
                status: parts.status.as_u16(),
                headers: header_pairs(&parts.headers),
                body: collected.to_bytes().to_vec(),
            },
            elapsed,
        ))
    };
    tokio::time::timeout(spec.timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {} ms", spec.timeout.as_millis()))?
}

/// Runs one shadow leg to its result. Never touches the client's answer.
pub async fn run(
    leg: Leg,
    client: Client<HttpConnector, Full<Bytes>>,
    recorder: Recorder,
    roll: u64,
) {
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
    } = leg;
    let body = match request_body {
        None => Bytes::new(),
        Some(rx) => match tokio::time::timeout(CAPTURE_DEADLINE, rx)
            .await
            .unwrap_or(Ok(Captured::Incomplete))
        {
            Ok(Captured::Incomplete) => {
                return recorder.send(&route, Outcome::Unmirrored(Unmirrored::Incomplete));
            }
            Ok(Captured::Complete(bytes)) => bytes,
            Ok(Captured::TooLarge) => {
                return recorder.send(&route, Outcome::Unmirrored(Unmirrored::TooLarge));
            }
            Err(_) => return recorder.send(&route, Outcome::Unmirrored(Unmirrored::Incomplete)),
        },
    };
    headers.insert(SHADOW_HEADER, HeaderValue::from_static("1"));
    let safe = matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe && spec.writes == ShadowWrites::DryRun {
        headers.insert(DRY_RUN_HEADER, HeaderValue::from_static("1"));
    }
    let candidate_result = send(
        &client,
        &candidate,
        &method,
        &path_and_query,
        &headers,
        body.clone(),
        &spec,
    )
    .await;
    let primary_body = match tokio::time::timeout(CAPTURE_DEADLINE, primary_answer.body)
        .await
        .unwrap_or(Ok(Captured::Incomplete))
    {
        Ok(Captured::Incomplete) => {
            return recorder.send(&route, Outcome::Unmirrored(Unmirrored::Incomplete));
        }
        Ok(Captured::Complete(bytes)) => bytes,
        Ok(Captured::TooLarge) => {
            return recorder.send(&route, Outcome::Unmirrored(Unmirrored::TooLarge));
        }
        Err(_) => return recorder.send(&route, Outcome::Unmirrored(Unmirrored::Incomplete)),
    };
    let primary_answer = Answer {
        status: primary_answer.status,
        headers: primary_answer.headers,
        body: primary_body.to_vec(),
    };
    let (candidate_answer, candidate_ms) = match candidate_result {
        Ok(answer) => answer,
        Err(message) => return recorder.send(&route, Outcome::Error(message)),
    };
    // Noise: the primary asked the same safe question twice; what differs is not a bug.
    let mut noise = recorder.noisy(&route);
    if safe && (roll as f64) < spec.noise_percent {
        let mut again = headers.clone();
        again.remove(&SHADOW_HEADER);
        if let Ok((second, _)) = send(
            &client,
            &primary,
            &method,
            &path_and_query,
            &again,
            body.clone(),
            &spec,
        )
        .await
        {
            // Only two good answers of the same status say anything about noise.
            let comparable = second.status == primary_answer.status && primary_answer.status < 500;
            let (first, rules_for_noise) = (primary_answer.clone(), rules.clone());
            let paths: Vec<String> = if comparable {
                tokio::task::spawn_blocking(move || {
                    diff::compare(&first, &second, &rules_for_noise)
                })
                .await
                .unwrap_or_default()
                .iter()
                .map(|d| diff::group_path(&d.path))
                .filter(|p| p != "(status)")
                .collect()
            } else {
                Vec::new()
            };
            if !paths.is_empty() {
                noise.extend(paths.iter().cloned());
                recorder.send(&route, Outcome::Noise(paths));
            }
        }
    }
    // Comparing large bodies is CPU work: off the runtime's workers, which serve clients.
    let (differences, primary_answer, candidate_answer) = {
        let (a, b) = (primary_answer, candidate_answer);
        match tokio::task::spawn_blocking(move || (diff::compare(&a, &b, &rules), a, b)).await {
            Ok(done) => done,
            Err(err) => {
                return recorder.send(&route, Outcome::Error(format!("comparison failed: {err}")));
            }
        }
    };
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
            "request_id": request_id,
            "method": method.as_str(),
            "uri": path_and_query,
            "request_body": truncated(&body),
            "primary": side(&primary_answer, primary_ms),
            "candidate": side(&candidate_answer, candidate_ms),
            "differences": differences.iter().take(SAMPLE_DIFFERENCES).collect::<Vec<_>>(),
        })
    });
    recorder.send(
        &route,
        Outcome::Compared {
            differences,
            noisy,
            sample,
            primary_ms,
            candidate_ms,
        },
    );
    drop(permit);
}
