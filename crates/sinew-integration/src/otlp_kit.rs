//! An OTLP trace collector for tests, on an ephemeral loopback port: it receives
//! `ExportTraceServiceRequest`s over gRPC (OpenTelemetry's generated tonic service, served
//! by hyper over h2c) or over HTTP/protobuf (`POST /v1/traces`), decodes them with
//! OpenTelemetry's own protobuf types, and keeps every span for the test to inspect.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A span as received, with its resource's `service.name`.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service_name: String,
    pub span: Span,
}

impl ReceivedSpan {
    pub fn trace_id_hex(&self) -> String {
        hex(&self.span.trace_id)
    }
    pub fn span_id_hex(&self) -> String {
        hex(&self.span.span_id)
    }
    pub fn parent_span_id_hex(&self) -> String {
        hex(&self.span.parent_span_id)
    }
    /// A string or integer attribute, as text.
    pub fn attribute(&self, key: &str) -> Option<String> {
        let kv = self.span.attributes.iter().find(|kv| kv.key == key)?;
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            Value::BoolValue(b) => Some(b.to_string()),
            Value::DoubleValue(d) => Some(d.to_string()),
            other => Some(format!("{other:?}")),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Default)]
struct Received {
    spans: Mutex<Vec<ReceivedSpan>>,
    requests: std::sync::atomic::AtomicUsize,
}

impl Received {
    fn take(&self, request: ExportTraceServiceRequest) {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.resource_spans {
            let service_name = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    spans.push(ReceivedSpan {
                        service_name: service_name.clone(),
                        span,
                    });
                }
            }
        }
    }
}

struct GrpcReceiver(Arc<Received>);

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.take(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Which OTLP transport the collector speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    HttpProtobuf,
}

pub struct Collector {
    pub addr: SocketAddr,
    received: Arc<Received>,
    task: JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Collector {
    pub async fn start(transport: Transport) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Received::default());
        let shared = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let received = shared.clone();
                tokio::spawn(async move {
                    let io = TokioIo::new(stream);
                    match transport {
                        Transport::Grpc => {
                            let server = TraceServiceServer::new(GrpcReceiver(received));
                            let service = service_fn(move |req: Request<Incoming>| {
                                let mut server = server.clone();
                                async move { tower_service::Service::call(&mut server, req).await }
                            });
                            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                .serve_connection(io, service)
                                .await;
                        }
                        Transport::HttpProtobuf => {
                            let service = service_fn(move |req: Request<Incoming>| {
                                let received = received.clone();
                                async move { Ok::<_, Infallible>(http_export(req, &received).await) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(io, service)
                                .await;
                        }
                    }
                });
            }
        });
        Collector {
            addr,
            received,
            task,
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.received.spans.lock().unwrap().clone()
    }

    /// Export requests received so far.
    pub fn export_requests(&self) -> usize {
        self.received
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until at least `n` spans have arrived (or `deadline` passes); returns them.
    pub async fn wait_for(&self, n: usize, deadline: Duration) -> Vec<ReceivedSpan> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let spans = self.spans();
            if spans.len() >= n || tokio::time::Instant::now() >= until {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// OTLP/HTTP: a protobuf `ExportTraceServiceRequest` in, an empty response out.
async fn http_export(req: Request<Incoming>, received: &Received) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: Bytes| {
        Response::builder()
            .status(status)
            .header("content-type", "application/x-protobuf")
            .body(Full::new(body))
            .unwrap()
    };
    if req.method() != http::Method::POST || req.uri().path() != "/v1/traces" {
        return reply(StatusCode::NOT_FOUND, Bytes::new());
    }
    if req.headers().get("content-type").map(|v| v.as_bytes()) != Some(b"application/x-protobuf") {
        return reply(StatusCode::UNSUPPORTED_MEDIA_TYPE, Bytes::new());
    }
    let Ok(body) = req.into_body().collect().await else {
        return reply(StatusCode::BAD_REQUEST, Bytes::new());
    };
    match ExportTraceServiceRequest::decode(body.to_bytes()) {
        Ok(request) => {
            received.take(request);
            let response = ExportTraceServiceResponse {
                partial_success: None,
            };
            reply(StatusCode::OK, response.encode_to_vec().into())
        }
        Err(_) => reply(StatusCode::BAD_REQUEST, Bytes::new()),
    }
}
