//! Spans to a Zipkin collector: the JSON v2 encoding (a list of spans, `POST`ed to
//! `/api/v2/spans`), and the one-request HTTP/1.1 client that sends a batch. Zipkin,
//! Jaeger's Zipkin port and OpenTelemetry's `zipkin` receiver all take this form.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::Value;
use opentelemetry_sdk::trace::SpanData;
use serde_json::{json, Map};

/// A batch as Zipkin's JSON v2: trace ids at 64 bits when their high half is zero (as
/// B3 writes them), ids in lower-case hex, times in microseconds since the epoch.
pub fn encode(spans: &[SpanData], service_name: &str) -> Vec<u8> {
    let list: Vec<serde_json::Value> = spans
        .iter()
        .map(|span| {
            let context = &span.span_context;
            let trace_id = u128::from_be_bytes(context.trace_id().to_bytes());
            let trace_hex = if trace_id >> 64 == 0 {
                format!("{:016x}", trace_id as u64)
            } else {
                format!("{trace_id:032x}")
            };
            let mut out = Map::new();
            out.insert("traceId".into(), json!(trace_hex));
            out.insert(
                "id".into(),
                json!(format!(
                    "{:016x}",
                    u64::from_be_bytes(context.span_id().to_bytes())
                )),
            );
            let parent = u64::from_be_bytes(span.parent_span_id.to_bytes());
            if parent != 0 {
                out.insert("parentId".into(), json!(format!("{parent:016x}")));
            }
            let kind = match span.span_kind {
                SpanKind::Client => "CLIENT",
                SpanKind::Producer => "PRODUCER",
                SpanKind::Consumer => "CONSUMER",
                _ => "SERVER",
            };
            out.insert("kind".into(), json!(kind));
            out.insert("name".into(), json!(span.name.to_lowercase()));
            let start = micros_since_epoch(span.start_time);
            out.insert("timestamp".into(), json!(start));
            // Zipkin reads a duration of 0 as "unknown"; a span took at least 1 µs.
            let end = micros_since_epoch(span.end_time);
            out.insert("duration".into(), json!(end.saturating_sub(start).max(1)));
            out.insert(
                "localEndpoint".into(),
                json!({ "serviceName": service_name }),
            );
            let mut tags = Map::new();
            for kv in &span.attributes {
                let text = match &kv.value {
                    Value::String(s) => s.as_str().to_string(),
                    other => other.to_string(),
                };
                tags.insert(kv.key.as_str().to_string(), json!(text));
            }
            if let Status::Error { description } = &span.status {
                tags.insert("error".into(), json!(description.to_string()));
            }
            out.insert("tags".into(), serde_json::Value::Object(tags));
            serde_json::Value::Object(out)
        })
        .collect();
    serde_json::to_vec(&list).unwrap_or_default()
}

fn micros_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Posts one encoded batch to `url` (`http://host:port/path`) with `Host: host`
/// (default the URL's), within `timeout`. A 2xx is success.
pub async fn post(
    url: &str,
    host: Option<&str>,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<(), String> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let send = async {
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("connect to {authority}: {e}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let request = http::Request::post(path)
            .header(http::header::HOST, host.unwrap_or(authority))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        // Read the answer to its end, so the collector is not cut off mid-reply.
        let _ = response.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the collector answered {status}"))
        }
    };
    tokio::time::timeout(timeout, send)
        .await
        .map_err(|_| "timed out".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry::{InstrumentationScope, KeyValue};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    fn span(trace_id: u128, parent: u64) -> SpanData {
        let start = UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_000);
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(trace_id),
                SpanId::from(0xabcu64),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::from(parent),
            parent_span_is_remote: parent != 0,
            span_kind: SpanKind::Server,
            name: "GET".into(),
            start_time: start,
            end_time: start + Duration::from_micros(1500),
            attributes: vec![
                KeyValue::new("url.path", "/x"),
                KeyValue::new("http.response.status_code", 503i64),
            ],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::error("503 Service Unavailable"),
            instrumentation_scope: InstrumentationScope::builder("t").build(),
        }
    }

    #[test]
    fn spans_encode_as_zipkin_json_v2() {
        let body = encode(&[span(0x1234, 0x99), span(1u128 << 64 | 7, 0)], "edge");
        let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let first = &list[0];
        assert_eq!(first["traceId"], "0000000000001234");
        assert_eq!(first["id"], "0000000000000abc");
        assert_eq!(first["parentId"], "0000000000000099");
        assert_eq!(first["kind"], "SERVER");
        assert_eq!(first["name"], "get");
        assert_eq!(first["timestamp"], 1_700_000_000_000_000u64);
        assert_eq!(first["duration"], 1500);
        assert_eq!(first["localEndpoint"]["serviceName"], "edge");
        assert_eq!(first["tags"]["url.path"], "/x");
        assert_eq!(first["tags"]["http.response.status_code"], "503");
        assert_eq!(first["tags"]["error"], "503 Service Unavailable");
        let second = &list[1];
        assert_eq!(second["traceId"], "00000000000000010000000000000007");
        assert!(
            second.get("parentId").is_none(),
            "a root span has no parent"
        );
    }
}
