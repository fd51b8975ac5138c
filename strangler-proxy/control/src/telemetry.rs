//! Span export (`[telemetry]`): one task drains the data plane's span queue and posts
//! batches to the collector as OTLP/HTTP protobuf, with the maintained `opentelemetry-otlp`
//! exporter. The request path only ever hands a record to the bounded queue; a slow or
//! absent collector costs exported spans (counted), never a request's time.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use strangler_dataplane::trace::{self as dp, SpanQueue, SpanRecord, SpanSink};
use strangler_plan::TelemetrySpec;
use tokio::task::JoinHandle;

/// Most spans posted in one request to the collector.
const MAX_BATCH: usize = 512;
/// A batch smaller than `MAX_BATCH` waits at most this long for more spans.
const BATCH_WAIT: Duration = Duration::from_millis(500);
/// One post to the collector gives up after this.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the exporter did, for `/metrics`.
#[derive(Debug, Default)]
pub struct SpanCounts {
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans in batches the collector refused or did not answer for.
    pub failed: AtomicU64,
    /// Spans the queue could not take (the request path never waits for it).
    pub dropped: Arc<AtomicU64>,
}

impl SpanCounts {
    /// (exported, failed, dropped).
    pub fn read(&self) -> (u64, u64, u64) {
        (
            self.exported.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }
}

/// The running exporter.
pub struct SpanExport {
    /// What the data plane sends spans to.
    pub sink: SpanSink,
    pub counts: Arc<SpanCounts>,
    task: JoinHandle<()>,
}

impl SpanExport {
    /// Starts exporting to `spec`'s collector; the task ends, after a last batch, when every
    /// sink is gone (the data plane stopped, [`SpanExport::join`] called).
    pub fn start(spec: &TelemetrySpec) -> Result<Self, opentelemetry_otlp::ExporterBuildError> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(spec.traces_url())
            .with_timeout(EXPORT_TIMEOUT)
            .build()?;
        exporter.set_resource(
            &Resource::builder_empty()
                .with_service_name(spec.service_name.clone())
                .build(),
        );
        let (sink, queue) = dp::span_queue(spec.sample, dp::SPAN_QUEUE);
        let counts = Arc::new(SpanCounts {
            dropped: Arc::clone(&queue.dropped),
            ..SpanCounts::default()
        });
        let task = tokio::spawn(export_loop(exporter, queue, Arc::clone(&counts)));
        Ok(Self { sink, counts, task })
    }

    /// Waits for the last batch to be posted (a collector that does not answer is given
    /// up on after its timeout).
    pub async fn join(self) {
        drop(self.sink);
        let _ = tokio::time::timeout(2 * EXPORT_TIMEOUT, self.task).await;
    }
}

async fn export_loop(
    exporter: opentelemetry_otlp::SpanExporter,
    mut queue: SpanQueue,
    counts: Arc<SpanCounts>,
) {
    let scope = InstrumentationScope::builder("strangler")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    loop {
        let mut batch = Vec::new();
        if queue.rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            break;
        }
        // A short wait lets a batch fill, unless the queue closes.
        if batch.len() < MAX_BATCH {
            let deadline = tokio::time::sleep(BATCH_WAIT);
            tokio::pin!(deadline);
            while batch.len() < MAX_BATCH {
                let room = MAX_BATCH - batch.len();
                tokio::select! {
                    got = queue.rx.recv_many(&mut batch, room) => if got == 0 { break },
                    _ = &mut deadline => break,
                }
            }
        }
        {
            let n = batch.len() as u64;
            let spans = batch.into_iter().map(|r| span_data(r, &scope)).collect();
            match exporter.export(spans).await {
                Ok(()) => counts.exported.fetch_add(n, Ordering::Relaxed),
                Err(err) => {
                    tracing::warn!(error = %err, spans = n, "cannot export spans");
                    counts.failed.fetch_add(n, Ordering::Relaxed)
                }
            };
        }
    }
}

/// A data-plane record as the OpenTelemetry SDK exports it.
fn span_data(record: SpanRecord, scope: &InstrumentationScope) -> SpanData {
    let trace_id = TraceId::from_bytes(record.trace_id);
    let state = record
        .trace_state
        .as_deref()
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    let context = |span_id: [u8; 8], remote: bool| {
        SpanContext::new(
            trace_id,
            SpanId::from_bytes(span_id),
            TraceFlags::SAMPLED,
            remote,
            state.clone(),
        )
    };
    let (name, kind, links, parent_is_remote) = match record.kind {
        dp::SpanKind::Request => ("proxy request", SpanKind::Server, Vec::new(), true),
        dp::SpanKind::Shadow => {
            // The leg is the request span's child, and linked to it: it outlives it.
            let request = record.parent.unwrap_or_default();
            let link = Link::with_context(context(request, false));
            ("shadow leg", SpanKind::Client, vec![link], false)
        }
    };
    SpanData {
        span_context: context(record.span_id, false),
        parent_span_id: record.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
        parent_span_is_remote: parent_is_remote && record.parent.is_some(),
        span_kind: kind,
        name: Cow::Borrowed(name),
        start_time: record.start,
        end_time: record.end,
        attributes: record
            .attributes
            .into_iter()
            .map(|(k, v)| KeyValue::new(k, v))
            .collect(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: {
            // Non-exhaustive: filled, not built.
            let mut all = SpanLinks::default();
            all.links = links;
            all
        },
        status: Status::Unset,
        instrumentation_scope: scope.clone(),
    }
}
