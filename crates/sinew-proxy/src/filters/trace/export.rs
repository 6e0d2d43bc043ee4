//! Getting finished spans to a collector without the request path ever waiting:
//! requests put spans on a bounded queue (dropping and counting them when it is full),
//! and one task per collector drains it in batches: to an OTLP collector through
//! `opentelemetry-otlp`'s exporter, over gRPC (tonic) or HTTP/protobuf (hyper), or to a
//! Zipkin collector as JSON v2 ([`super::zipkin`]).
//!
//! Listeners with the same collector share one queue, and a reload that keeps the
//! collector keeps the queue, so spans in flight across a reload are not lost. When the
//! last listener using a collector goes, its task sends what is left and ends.
//!
//! The export task starts with the queue's first span, not when the queue is made:
//! compiling a config only to check it (`sinew validate`, which has no runtime, or the
//! check before a reload) must not start exporters or connect anywhere.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use opentelemetry_sdk::Resource;
use sinew_config::model::{OtlpExporter, OtlpProtocol, ZipkinExporter};
use tokio::sync::mpsc;

/// Spans sent in one export at most (the SDK's batch processor default), and never more
/// than the queue holds, so at most twice `max_queued_spans` are in memory.
const MAX_BATCH: usize = 512;
/// How long the first span of a batch waits for company before the batch goes.
const BATCH_DELAY: Duration = Duration::from_millis(200);

/// One collector's queue, shared by every listener that exports to it.
pub struct SpanQueue {
    sender: mpsc::Sender<SpanData>,
    /// The export task's end of the queue until the first span starts that task.
    idle: Mutex<Option<(Key, mpsc::Receiver<SpanData>)>>,
    /// Set once the export task runs: after that a push costs one atomic load more.
    started: AtomicBool,
}

/// What happened to the process's spans, for `/metrics`.
pub static SPANS: SpanCounts = SpanCounts {
    dropped: AtomicU64::new(0),
    exported: AtomicU64::new(0),
    failed: AtomicU64::new(0),
};

#[derive(Debug)]
pub struct SpanCounts {
    /// Dropped because the queue was full (collector slow or down).
    pub dropped: AtomicU64,
    /// Sent and accepted by the collector.
    pub exported: AtomicU64,
    /// In batches the collector refused or that failed to reach it.
    pub failed: AtomicU64,
}

impl SpanQueue {
    /// Hands a finished span over; never waits. The first span starts the export task
    /// (on the runtime of the thread that pushes it).
    pub fn push(&self, span: SpanData) {
        if !self.started.load(Ordering::Acquire) {
            self.start_exports();
        }
        if self.sender.try_send(span).is_err() {
            SPANS.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the export task has started (it has once a span was pushed).
    pub fn exporting(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    fn start_exports(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Outside a runtime nothing can export; the span is queued, and the first
            // push from inside one starts the task.
            return;
        };
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((key, receiver)) = idle.take() {
            runtime.spawn(run_exports(key, receiver));
        }
        self.started.store(true, Ordering::Release);
    }
}

#[derive(Clone, PartialEq)]
struct Key {
    url: String,
    sink: Sink,
    timeout: Duration,
    service_name: String,
    capacity: usize,
}

/// What a collector speaks.
#[derive(Clone, PartialEq)]
enum Sink {
    Otlp(OtlpProtocol),
    /// Zipkin JSON v2, with the `Host` to send.
    Zipkin {
        host: Option<String>,
    },
}

/// Where a listener's spans go: its `opentelemetry` or its `zipkin` collector.
#[derive(Clone, Copy)]
pub enum Collector<'a> {
    Otlp(&'a OtlpExporter),
    Zipkin(&'a ZipkinExporter),
}

/// Every live queue by its collector; locked only when a config compiles.
static QUEUES: Mutex<Vec<(Key, Weak<SpanQueue>)>> = Mutex::new(Vec::new());

/// The queue for this collector: the running one if a listener already exports there,
/// else a new one, whose export task starts with its first span. Needs no runtime.
/// `address` (`host:port`, a cluster's endpoint) stands in for the URL's own host and
/// port.
pub fn queue_for(
    collector: Collector,
    address: Option<&str>,
    service_name: &str,
    capacity: usize,
) -> Result<Arc<SpanQueue>, String> {
    let (url, sink, timeout) = match collector {
        Collector::Otlp(e) => (e.url()?, Sink::Otlp(e.protocol), e.timeout),
        Collector::Zipkin(z) => (
            z.url()?,
            Sink::Zipkin {
                host: z.hostname.clone(),
            },
            z.timeout,
        ),
    };
    let url = match address {
        Some(address) => sinew_config::trace::with_address(&url, address),
        None => url,
    };
    let key = Key {
        url,
        sink,
        timeout,
        service_name: service_name.to_string(),
        capacity,
    };
    let mut queues = QUEUES.lock().unwrap_or_else(|e| e.into_inner());
    queues.retain(|(_, q)| q.strong_count() > 0);
    if let Some(queue) = queues
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, q)| q.upgrade())
    {
        return Ok(queue);
    }
    let (sender, receiver) = mpsc::channel(capacity);
    let queue = Arc::new(SpanQueue {
        sender,
        idle: Mutex::new(Some((key.clone(), receiver))),
        started: AtomicBool::new(false),
    });
    queues.push((key, Arc::downgrade(&queue)));
    Ok(queue)
}

/// The export task: batches spans and sends them until every sender is gone, then sends
/// what is left.
async fn run_exports(key: Key, mut receiver: mpsc::Receiver<SpanData>) {
    let mut exporter = match &key.sink {
        Sink::Otlp(protocol) => match build_exporter(&key, *protocol) {
            Ok(mut e) => {
                e.set_resource(
                    &Resource::builder_empty()
                        .with_service_name(key.service_name.clone())
                        .build(),
                );
                Exporter::Otlp(Box::new(e))
            }
            Err(e) => {
                tracing::error!(collector = %key.url, "tracing: cannot build the OTLP exporter: {e}");
                // Keep draining so the queue reports drops rather than filling silently.
                while let Some(_span) = receiver.recv().await {
                    SPANS.failed.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        },
        Sink::Zipkin { .. } => Exporter::Zipkin,
    };
    let max_batch = MAX_BATCH.min(key.capacity);
    // Batches start small and grow: a full-size buffer per batch (over 100 KiB) is
    // allocated outside malloc's fast bins, at a cost callgrind shows per span.
    let first_capacity = max_batch.min(64);
    let mut batch = Vec::with_capacity(first_capacity);
    let mut failures_logged = 0u32;
    while let Some(first) = receiver.recv().await {
        batch.push(first);
        // Let the batch fill for a moment (or until full) rather than one export per span.
        let deadline = tokio::time::Instant::now() + BATCH_DELAY;
        while batch.len() < max_batch {
            let room = max_batch - batch.len();
            match tokio::time::timeout_at(deadline, receiver.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let spans = batch.len() as u64;
        let sent = std::mem::replace(&mut batch, Vec::with_capacity(first_capacity));
        // The exporter retries with backoff inside; the outer bound keeps a dead
        // collector from holding the queue for longer than one timeout and a bit.
        let result = tokio::time::timeout(key.timeout * 2, exporter.export(&key, sent)).await;
        match result {
            Ok(Ok(())) => {
                SPANS.exported.fetch_add(spans, Ordering::Relaxed);
                failures_logged = 0;
            }
            Ok(Err(e)) => {
                SPANS.failed.fetch_add(spans, Ordering::Relaxed);
                log_failure(&key, &mut failures_logged, &e);
            }
            Err(_) => {
                SPANS.failed.fetch_add(spans, Ordering::Relaxed);
                log_failure(&key, &mut failures_logged, "timed out");
            }
        }
    }
    if let Exporter::Otlp(e) = exporter {
        let _ = e.shutdown();
    }
}

/// A collector's client, for the life of its export task.
enum Exporter {
    Otlp(Box<opentelemetry_otlp::SpanExporter>),
    /// A connection per batch: batches are at least `BATCH_DELAY` apart.
    Zipkin,
}

impl Exporter {
    async fn export(&mut self, key: &Key, batch: Vec<SpanData>) -> Result<(), String> {
        match self {
            Exporter::Otlp(e) => e.export(batch).await.map_err(|e| e.to_string()),
            Exporter::Zipkin => {
                let host = match &key.sink {
                    Sink::Zipkin { host } => host.as_deref(),
                    Sink::Otlp(_) => None,
                };
                let body = super::zipkin::encode(&batch, &key.service_name);
                super::zipkin::post(&key.url, host, body, key.timeout).await
            }
        }
    }
}

/// A dead collector fails every batch: say so once, then every hundredth time.
fn log_failure(key: &Key, failures: &mut u32, error: &str) {
    if (*failures).is_multiple_of(100) {
        tracing::warn!(collector = %key.url, failures = *failures + 1, "tracing: export failed: {error}");
    }
    *failures += 1;
}

fn build_exporter(
    key: &Key,
    protocol: OtlpProtocol,
) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let built = match protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(key.url.clone())
            .with_timeout(key.timeout)
            .build(),
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(key.url.clone())
            .with_timeout(key.timeout)
            .build(),
    };
    built.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::time::{Instant, SystemTime};

    use opentelemetry::trace::{SpanContext, SpanKind, Status};
    use opentelemetry::InstrumentationScope;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    use super::*;

    fn span() -> SpanData {
        SpanData {
            span_context: SpanContext::empty_context(),
            parent_span_id: opentelemetry::trace::SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: "GET".into(),
            start_time: SystemTime::now(),
            end_time: SystemTime::now(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("test").build(),
        }
    }

    /// A loopback port standing in for the collector: it counts connection attempts.
    fn collector() -> (TcpListener, OtlpExporter) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let exporter = OtlpExporter {
            protocol: OtlpProtocol::HttpProtobuf,
            endpoint: Some(format!("http://{}", listener.local_addr().unwrap())),
            cluster: None,
            timeout: Duration::from_secs(2),
        };
        (listener, exporter)
    }

    /// `sinew validate` compiles a config with `tracing` outside any runtime: making the
    /// queue must neither panic (it did: "there is no reactor running") nor connect.
    #[test]
    fn a_queue_made_outside_a_runtime_starts_no_exporter() {
        let (listener, exporter) = collector();
        let queue = queue_for(Collector::Otlp(&exporter), None, "outside", 8).unwrap();
        assert!(!queue.exporting());
        std::thread::sleep(BATCH_DELAY * 2);
        assert!(
            listener.accept().is_err(),
            "the collector was contacted before any span"
        );
    }

    /// The export task starts with the first span and reaches the collector.
    #[test]
    fn the_first_span_starts_the_export() {
        let (listener, exporter) = collector();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let queue = runtime
            .block_on(async { queue_for(Collector::Otlp(&exporter), None, "inside", 8).unwrap() });
        assert!(!queue.exporting(), "compiling alone started the exporter");
        runtime.block_on(async {
            queue.push(span());
            assert!(queue.exporting());
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if listener.accept().is_ok() {
                    break;
                }
                assert!(Instant::now() < deadline, "the collector saw no connection");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
}
