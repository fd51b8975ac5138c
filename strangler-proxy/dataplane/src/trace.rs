//! Request spans (the plan's `[telemetry]`): the W3C trace context continued from a
//! client's `traceparent` (or started here), passed to the upstream with the proxy's span as
//! its parent, and one [`SpanRecord`] per request (and per shadow leg) handed to a bounded
//! queue. The control plane drains the queue and exports OTLP batches; nothing here waits
//! for it, and a record the queue cannot take is counted and dropped.
//!
//! Without `[telemetry]` a forwarder has no [`SpanSink`]: no header is read or written.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::mpsc;

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Span records waiting for the exporter; more are counted and dropped.
pub const SPAN_QUEUE: usize = 4096;

pub type TraceId = [u8; 16];
pub type SpanId = [u8; 8];

/// What the span of a request or a shadow leg says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpanKind {
    /// The proxy serving a client's request.
    Request,
    /// The shadow leg's request to the candidate, a child of the request's span linked to it.
    Shadow,
}

/// One finished span, as the request path hands it to the exporter.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub kind: SpanKind,
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The span this one is a child of: the client's (a request that came with a
    /// `traceparent`) or the request's (a shadow leg).
    pub parent: Option<SpanId>,
    /// The client's `tracestate`, kept with the trace.
    pub trace_state: Option<String>,
    pub start: SystemTime,
    pub end: SystemTime,
    /// `strangler.*` attributes, in a fixed order (route, stage, side, service, status, …).
    pub attributes: Vec<(&'static str, String)>,
}

/// Where spans go: the sampling share of new traces and the queue to the exporter. Cheap to
/// clone.
#[derive(Clone)]
pub struct SpanSink {
    tx: mpsc::Sender<SpanRecord>,
    /// Share of traces started here that are sampled (0 to 1).
    sample: f64,
    /// Records the queue could not take.
    pub dropped: Arc<AtomicU64>,
}

/// The exporter's end of the queue.
pub struct SpanQueue {
    pub rx: mpsc::Receiver<SpanRecord>,
    pub dropped: Arc<AtomicU64>,
}

/// A sink sampling `sample` of new traces, and the queue it feeds.
pub fn span_queue(sample: f64, capacity: usize) -> (SpanSink, SpanQueue) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let dropped = Arc::new(AtomicU64::new(0));
    (
        SpanSink {
            tx,
            sample,
            dropped: Arc::clone(&dropped),
        },
        SpanQueue { rx, dropped },
    )
}

impl SpanSink {
    /// Continues the client's trace (or starts one) for a request with `headers`, and sets
    /// the `traceparent` the upstream gets: the same trace, the proxy's span as parent.
    pub fn begin(&self, headers: &mut HeaderMap) -> Trace {
        let client = headers.get(&TRACEPARENT).and_then(parse_traceparent);
        let (trace_id, parent, sampled) = match client {
            Some((trace_id, parent, sampled)) => (trace_id, Some(parent), sampled),
            None => (random_trace_id(), None, roll() < self.sample),
        };
        let span_id = random_span_id();
        headers.insert(TRACEPARENT, traceparent(&trace_id, &span_id, sampled));
        let trace_state = match parent {
            Some(_) => headers
                .get(&TRACESTATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            // A tracestate without a traceparent belongs to no trace: not passed on.
            None => {
                headers.remove(&TRACESTATE);
                None
            }
        };
        Trace {
            sink: self.clone(),
            trace_id,
            span_id,
            parent,
            sampled,
            trace_state,
            start: SystemTime::now(),
        }
    }

    fn send(&self, record: SpanRecord) {
        if self.tx.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One request's place in its trace.
#[derive(Clone)]
pub struct Trace {
    sink: SpanSink,
    pub trace_id: TraceId,
    /// The proxy's span for this request.
    pub span_id: SpanId,
    /// The client's span, when it sent a `traceparent`.
    pub parent: Option<SpanId>,
    pub sampled: bool,
    trace_state: Option<String>,
    pub start: SystemTime,
}

impl Trace {
    /// Ends the request's span with `attributes` (nothing is recorded for a trace not
    /// sampled).
    pub fn finish(&self, attributes: Vec<(&'static str, String)>) {
        if self.sampled {
            self.sink.send(SpanRecord {
                kind: SpanKind::Request,
                trace_id: self.trace_id,
                span_id: self.span_id,
                parent: self.parent,
                trace_state: self.trace_state.clone(),
                start: self.start,
                end: SystemTime::now(),
                attributes,
            });
        }
    }

    /// A shadow leg of this request: its own span, a child of the request's.
    pub fn leg(&self) -> LegTrace {
        LegTrace {
            request: self.clone(),
            span_id: random_span_id(),
            start: SystemTime::now(),
        }
    }
}

/// A shadow leg's span.
pub struct LegTrace {
    request: Trace,
    span_id: SpanId,
    start: SystemTime,
}

impl LegTrace {
    /// The `traceparent` the candidate gets: the leg's span as parent.
    pub fn traceparent(&self) -> HeaderValue {
        traceparent(&self.request.trace_id, &self.span_id, self.request.sampled)
    }

    /// Ends the leg's span with what it came to (`outcome`).
    pub fn finish(self, route: &str, candidate: &str, outcome: &str) {
        if self.request.sampled {
            self.request.sink.send(SpanRecord {
                kind: SpanKind::Shadow,
                trace_id: self.request.trace_id,
                span_id: self.span_id,
                parent: Some(self.request.span_id),
                trace_state: self.request.trace_state.clone(),
                start: self.start,
                end: SystemTime::now(),
                attributes: vec![
                    ("strangler.route", route.to_string()),
                    ("strangler.service", candidate.to_string()),
                    ("strangler.shadow.outcome", outcome.to_string()),
                ],
            });
        }
    }
}

/// Reads a version-00 `traceparent` (`00-TRACE-SPAN-FLAGS`): trace id, parent span id,
/// sampled. All-zero ids and other versions' unknown shapes are refused (a new trace then).
pub fn parse_traceparent(value: &HeaderValue) -> Option<(TraceId, SpanId, bool)> {
    let text = value.to_str().ok()?.trim();
    let mut parts = text.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() {
        return None;
    }
    let trace_id: TraceId = hex(trace)?;
    let span_id: SpanId = hex(span)?;
    let [flags]: [u8; 1] = hex(flags)?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some((trace_id, span_id, flags & 1 == 1))
}

/// A version-00 `traceparent` value.
pub fn traceparent(trace_id: &TraceId, span_id: &SpanId, sampled: bool) -> HeaderValue {
    let text = format!(
        "00-{}-{}-{}",
        to_hex(trace_id),
        to_hex(span_id),
        if sampled { "01" } else { "00" }
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("00"))
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `N` bytes from exactly `2N` lower-case hex digits.
fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

thread_local! {
    /// Per thread: a splitmix64 state, seeded by the standard library's random hasher keys.
    static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(std::thread::current().id()));
}

fn next_u64() -> u64 {
    STATE.with(|s| {
        let x = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// A number in [0, 1).
fn roll() -> f64 {
    (next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn random_span_id() -> SpanId {
    loop {
        let id = next_u64().to_be_bytes();
        if id != [0; 8] {
            return id;
        }
    }
}

fn random_trace_id() -> TraceId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&random_span_id());
    id[8..].copy_from_slice(&next_u64().to_be_bytes());
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_client_trace_is_continued_with_the_proxy_as_parent() {
        let (sink, mut queue) = span_queue(0.0, 8);
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static(CLIENT));
        headers.insert(TRACESTATE, HeaderValue::from_static("vendor=1"));
        let trace = sink.begin(&mut headers);
        let (trace_id, parent, sampled) = parse_traceparent(&headers[TRACEPARENT]).unwrap();
        assert_eq!(to_hex(&trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            parent, trace.span_id,
            "the upstream's parent is the proxy's span"
        );
        assert!(sampled, "the client's flag wins over a 0% share");
        assert_eq!(headers[TRACESTATE], "vendor=1");
        trace.finish(vec![("strangler.route", "r".into())]);
        let record = queue.rx.try_recv().unwrap();
        assert_eq!(to_hex(&record.parent.unwrap()), "00f067aa0ba902b7");
        assert_eq!(record.trace_state.as_deref(), Some("vendor=1"));
    }

    #[test]
    fn a_new_trace_follows_the_share_and_unsampled_spans_are_not_queued() {
        let (sink, mut queue) = span_queue(0.0, 8);
        let mut headers = HeaderMap::new();
        let trace = sink.begin(&mut headers);
        assert!(!trace.sampled);
        assert!(headers[TRACEPARENT].to_str().unwrap().ends_with("-00"));
        trace.finish(Vec::new());
        assert!(queue.rx.try_recv().is_err());

        let (sink, mut queue) = span_queue(1.0, 1);
        let trace = sink.begin(&mut HeaderMap::new());
        trace.finish(Vec::new());
        trace.finish(Vec::new());
        assert!(queue.rx.try_recv().is_ok());
        assert_eq!(
            queue.dropped.load(Ordering::Relaxed),
            1,
            "a full queue counts"
        );
    }

    #[test]
    fn malformed_traceparents_start_a_new_trace() {
        for bad in [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert!(
                parse_traceparent(&HeaderValue::from_static(bad)).is_none(),
                "{bad}"
            );
        }
    }
}
