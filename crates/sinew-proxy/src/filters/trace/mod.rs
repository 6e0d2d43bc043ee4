//! Distributed tracing for HTTP listeners with `tracing` configured: each request's
//! trace context is read (W3C or B3, see [`context`]), sampled at the listener's rate
//! unless the caller decided, propagated upstream with the proxy's span as parent, and,
//! when sampled, recorded as one SERVER span exported over OTLP (see [`export`]).
//!
//! An unsampled request costs an id, a header write and no span. A listener without
//! `tracing` has no [`Tracer`]: one `None` check per request.

pub mod context;
pub mod export;
pub mod zipkin;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderValue, Method, Request, Response, Version};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use sinew_config::model::Tracing;

use crate::stream::flags::ResponseFlags;
use crate::stream::upstream_info::UpstreamInfo;
use context::{Incoming, Outgoing};
use export::SpanQueue;

/// A listener's tracing, compiled.
pub struct Tracer {
    /// Trace ids whose low 64 bits, halved, fall under this are sampled: OpenTelemetry's
    /// `TraceIdRatioBased`, so every proxy and SDK using it agrees on the same trace.
    ratio_bound: u64,
    queue: Arc<SpanQueue>,
    scope: InstrumentationScope,
    /// Zipkin: B3 headers go upstream whatever the request carried, as Envoy's Zipkin
    /// tracer writes them.
    always_b3: bool,
    /// New traces get 64-bit ids (Zipkin without `trace_id_128bit`).
    short_trace_ids: bool,
}

impl Tracer {
    /// Compiles a listener's `tracing`; starts (or joins) the export task for its
    /// collector, which starts with the first sampled span. Needs no runtime.
    /// `collector_address` is the first endpoint of the cluster the exporter names.
    pub fn compile(
        config: &Tracing,
        collector_address: Option<&str>,
    ) -> Result<Arc<Tracer>, String> {
        let collector = match &config.zipkin {
            Some(zipkin) => export::Collector::Zipkin(zipkin),
            None => export::Collector::Otlp(&config.opentelemetry),
        };
        let queue = export::queue_for(
            collector,
            collector_address,
            &config.service_name,
            config.max_queued_spans,
        )?;
        Ok(Arc::new(Tracer {
            ratio_bound: ratio_bound(config.random_sampling / 100.0),
            always_b3: config.zipkin.is_some(),
            short_trace_ids: config.zipkin.as_ref().is_some_and(|z| !z.trace_id_128bit),
            queue,
            scope: InstrumentationScope::builder("sinew")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        }))
    }

    fn sample(&self, trace_id: u128) -> bool {
        ((trace_id as u64) >> 1) < self.ratio_bound
    }
}

fn ratio_bound(fraction: f64) -> u64 {
    (fraction.clamp(0.0, 1.0) * (1u64 << 63) as f64) as u64
}

/// A sampled request's span, open until its response head leaves.
pub(crate) struct ActiveSpan {
    trace_id: u128,
    span_id: u64,
    parent_span_id: u64,
    trace_state: Option<HeaderValue>,
    start: SystemTime,
    method: Method,
    path: String,
    host: Option<HeaderValue>,
    version: Version,
    peer: SocketAddr,
    tls: bool,
}

/// Reads the request's context, decides, and writes the proxy's span into the headers
/// the upstream will get. Returns the span to finish when sampled.
pub(crate) fn start<B>(
    tracer: &Tracer,
    req: &mut Request<B>,
    peer: SocketAddr,
    tls: bool,
) -> Option<ActiveSpan> {
    let mut incoming: Incoming = context::extract(req.headers());
    let trace_id = match incoming.parent {
        Some(parent) => parent.trace_id,
        None if tracer.short_trace_ids => {
            incoming.b3_short_trace_id = true;
            u128::from(nonzero_random_u64())
        }
        None => nonzero_random_u128(),
    };
    if tracer.always_b3 && !incoming.has_b3_single {
        incoming.has_b3_multi = true;
    }
    let sampled = incoming.sampled.unwrap_or_else(|| tracer.sample(trace_id));
    let span_id = nonzero_random_u64();
    context::inject(
        req.headers_mut(),
        &incoming,
        Outgoing {
            trace_id,
            span_id,
            sampled,
        },
    );
    if !sampled {
        return None;
    }
    let trace_state = match incoming.from_w3c {
        true => req.headers().get(&context::TRACESTATE).cloned(),
        false => None,
    };
    Some(ActiveSpan {
        trace_id,
        span_id,
        parent_span_id: incoming.parent.map_or(0, |p| p.span_id),
        trace_state,
        start: SystemTime::now(),
        method: req.method().clone(),
        path: req.uri().path().to_string(),
        host: req.headers().get(http::header::HOST).cloned().or_else(|| {
            req.uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        }),
        version: req.version(),
        peer,
        tls,
    })
}

/// Ends the span at the response head and queues it for export.
pub(crate) fn finish<B>(tracer: &Tracer, span: ActiveSpan, response: &Response<B>) {
    let status = response.status();
    let mut attributes = Vec::with_capacity(12);
    attributes.push(KeyValue::new(
        "http.request.method",
        method_name(&span.method),
    ));
    attributes.push(KeyValue::new("url.path", span.path));
    attributes.push(KeyValue::new(
        "url.scheme",
        if span.tls { "https" } else { "http" },
    ));
    if let Some(host) = span.host.as_ref().and_then(|h| h.to_str().ok()) {
        attributes.push(KeyValue::new("server.address", host.to_string()));
    }
    attributes.push(KeyValue::new(
        "network.protocol.version",
        protocol_version(span.version),
    ));
    attributes.push(KeyValue::new("client.address", span.peer.ip().to_string()));
    attributes.push(KeyValue::new(
        "http.response.status_code",
        i64::from(status.as_u16()),
    ));
    if let Some(upstream) = response.extensions().get::<UpstreamInfo>() {
        attributes.push(KeyValue::new(
            "upstream_cluster",
            upstream.cluster.to_string(),
        ));
        attributes.push(KeyValue::new("upstream_address", upstream.host.to_string()));
    }
    if let Some(flags) = response.extensions().get::<ResponseFlags>() {
        if *flags != ResponseFlags::default() {
            attributes.push(KeyValue::new("response_flags", flags.to_string()));
        }
    }
    let trace_state = span
        .trace_state
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<TraceState>().ok())
        .unwrap_or_default();
    tracer.queue.push(SpanData {
        span_context: SpanContext::new(
            TraceId::from(span.trace_id),
            SpanId::from(span.span_id),
            TraceFlags::SAMPLED,
            false,
            trace_state,
        ),
        parent_span_id: SpanId::from(span.parent_span_id),
        parent_span_is_remote: span.parent_span_id != 0,
        span_kind: SpanKind::Server,
        name: method_name(&span.method),
        start_time: span.start,
        end_time: SystemTime::now(),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        // OpenTelemetry's HTTP conventions: a server span is an error for 5xx only.
        status: if status.is_server_error() {
            Status::error(status.to_string())
        } else {
            Status::Unset
        },
        instrumentation_scope: tracer.scope.clone(),
    });
}

/// The span's name and method attribute: the method, borrowed for the standard ones.
fn method_name(method: &Method) -> Cow<'static, str> {
    const STANDARD: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::PATCH,
        Method::CONNECT,
        Method::TRACE,
    ];
    const NAMES: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
    ];
    match STANDARD.iter().position(|m| m == method) {
        Some(i) => Cow::Borrowed(NAMES[i]),
        None => Cow::Owned(method.as_str().to_string()),
    }
}

fn protocol_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

fn nonzero_random_u64() -> u64 {
    loop {
        let id = fastrand::u64(..);
        if id != 0 {
            return id;
        }
    }
}

fn nonzero_random_u128() -> u128 {
    loop {
        let id = fastrand::u128(..);
        if id != 0 {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_bounds_sample_nothing_everything_and_about_half() {
        assert_eq!(ratio_bound(0.0), 0);
        let all = ratio_bound(1.0);
        assert!((u64::MAX >> 1) < all, "every halved id is under the bound");
        let half = ratio_bound(0.5);
        let sampled = (0..10_000)
            .filter(|_| ((fastrand::u128(..) as u64) >> 1) < half)
            .count();
        assert!((4_500..5_500).contains(&sampled), "{sampled} of 10000");
    }

    #[test]
    fn standard_methods_are_borrowed() {
        assert!(matches!(method_name(&Method::GET), Cow::Borrowed("GET")));
        let custom = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(method_name(&custom), "PURGE");
    }
}
