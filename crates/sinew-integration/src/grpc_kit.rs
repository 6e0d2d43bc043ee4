//! A gRPC server and client for tests, built on tonic without code generation.
//!
//! One message type ([`Msg`]) and one service whose methods are chosen by the last path
//! segment, whatever the service name before it — so a route table can send
//! `/sinew.test.Echo/...` and `/sinew.test.Timed/...` to different clusters or timeouts
//! while the same server answers both:
//!
//! - `Unary`: answers `echo: <text>` after `n` milliseconds (`n` = 0: at once);
//! - `Fail`: answers the application error `FAILED_PRECONDITION` with message `app says no`
//!   and metadata `x-app-detail: 42`;
//! - `ServerStream`: answers `n` messages `item 0` … `item n-1`;
//! - `StreamThenFail`: answers `n` messages, then ends with `RESOURCE_EXHAUSTED` `enough`;
//! - `ClientStream`: answers one message: the texts it got, joined by `,`, and their count;
//! - `Bidi`: answers every message as it arrives with `echo: <text>`.
//!
//! Every response that ends with a trailers frame also carries the custom trailer
//! `x-trailer: <method>`, to show trailers cross the proxy intact.
//!
//! [`PythonHealthServer`] is a gRPC server written by others: Python's grpcio with the
//! standard health service of `grpcio-health-checking`, for health-check tests.

use std::convert::Infallible;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::uri::PathAndQuery;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::server::{
    ClientStreamingService, ServerStreamingService, StreamingService, UnaryService,
};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

/// The one message both ways.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(string, tag = "1")]
    pub text: String,
    #[prost(uint32, tag = "2")]
    pub n: u32,
}

impl Msg {
    pub fn new(text: impl Into<String>, n: u32) -> Self {
        Msg {
            text: text.into(),
            n,
        }
    }
}

type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;
type GrpcBody = UnsyncBoxBody<Bytes, Status>;

/// A tonic gRPC server on an ephemeral loopback port, HTTP/2 cleartext only.
pub struct GrpcServer {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl GrpcServer {
    pub async fn start() -> GrpcServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (c, r) = (connections.clone(), requests.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        r.fetch_add(1, Ordering::SeqCst);
                        dispatch(req)
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        GrpcServer {
            addr,
            connections,
            requests,
            accept,
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn add_trailer(method: &'static str) -> impl Fn(Frame<Bytes>) -> Frame<Bytes> + Send {
    move |mut frame| {
        if let Some(trailers) = frame.trailers_mut() {
            trailers.insert("x-trailer", http::HeaderValue::from_static(method));
        }
        frame
    }
}

async fn dispatch(req: http::Request<Incoming>) -> Result<http::Response<GrpcBody>, Infallible> {
    let method = req
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_string();
    let mut grpc = tonic::server::Grpc::new(ProstCodec::<Msg, Msg>::default());
    let (name, response): (&'static str, _) = match method.as_str() {
        "Unary" => ("Unary", grpc.unary(Unary(unary), req).await),
        "Fail" => ("Fail", grpc.unary(Unary(fail), req).await),
        "ServerStream" => (
            "ServerStream",
            grpc.server_streaming(ServerStreaming(server_stream), req)
                .await,
        ),
        "StreamThenFail" => (
            "StreamThenFail",
            grpc.server_streaming(ServerStreaming(stream_then_fail), req)
                .await,
        ),
        "ClientStream" => (
            "ClientStream",
            grpc.client_streaming(ClientStreaming(client_stream), req)
                .await,
        ),
        "Bidi" => ("Bidi", grpc.streaming(Bidi, req).await),
        _ => (
            "Unknown",
            Status::unimplemented(format!("no method {method}")).into_http(),
        ),
    };
    Ok(response.map(|b| b.map_frame(add_trailer(name)).boxed_unsync()))
}

async fn unary(req: Request<Msg>) -> Result<Response<Msg>, Status> {
    let msg = req.into_inner();
    if msg.n > 0 {
        tokio::time::sleep(Duration::from_millis(msg.n.into())).await;
    }
    Ok(Response::new(Msg::new(
        format!("echo: {}", msg.text),
        msg.n,
    )))
}

async fn fail(_req: Request<Msg>) -> Result<Response<Msg>, Status> {
    let mut metadata = MetadataMap::new();
    metadata.insert("x-app-detail", MetadataValue::from_static("42"));
    Err(Status::with_metadata(
        Code::FailedPrecondition,
        "app says no",
        metadata,
    ))
}

async fn server_stream(req: Request<Msg>) -> Result<Response<MsgStream>, Status> {
    let n = req.into_inner().n;
    let items = (0..n).map(|i| Ok(Msg::new(format!("item {i}"), i)));
    Ok(Response::new(Box::pin(futures_util::stream::iter(items))))
}

async fn stream_then_fail(req: Request<Msg>) -> Result<Response<MsgStream>, Status> {
    let n = req.into_inner().n;
    let items = (0..n)
        .map(|i| Ok(Msg::new(format!("item {i}"), i)))
        .chain(std::iter::once(Err(Status::resource_exhausted("enough"))));
    Ok(Response::new(Box::pin(futures_util::stream::iter(items))))
}

async fn client_stream(req: Request<Streaming<Msg>>) -> Result<Response<Msg>, Status> {
    let mut stream = req.into_inner();
    let mut texts = Vec::new();
    while let Some(msg) = stream.next().await {
        texts.push(msg?.text);
    }
    let count = texts.len() as u32;
    Ok(Response::new(Msg::new(texts.join(","), count)))
}

struct Unary<F>(F);

impl<F, Fut> UnaryService<Msg> for Unary<F>
where
    F: FnMut(Request<Msg>) -> Fut,
    Fut: Future<Output = Result<Response<Msg>, Status>>,
{
    type Response = Msg;
    type Future = Fut;
    fn call(&mut self, request: Request<Msg>) -> Fut {
        (self.0)(request)
    }
}

struct ServerStreaming<F>(F);

impl<F, Fut> ServerStreamingService<Msg> for ServerStreaming<F>
where
    F: FnMut(Request<Msg>) -> Fut,
    Fut: Future<Output = Result<Response<MsgStream>, Status>>,
{
    type Response = Msg;
    type ResponseStream = MsgStream;
    type Future = Fut;
    fn call(&mut self, request: Request<Msg>) -> Fut {
        (self.0)(request)
    }
}

struct ClientStreaming<F>(F);

impl<F, Fut> ClientStreamingService<Msg> for ClientStreaming<F>
where
    F: FnMut(Request<Streaming<Msg>>) -> Fut,
    Fut: Future<Output = Result<Response<Msg>, Status>>,
{
    type Response = Msg;
    type Future = Fut;
    fn call(&mut self, request: Request<Streaming<Msg>>) -> Fut {
        (self.0)(request)
    }
}

struct Bidi;

impl StreamingService<Msg> for Bidi {
    type Response = Msg;
    type ResponseStream = MsgStream;
    type Future = std::future::Ready<Result<Response<MsgStream>, Status>>;
    fn call(&mut self, request: Request<Streaming<Msg>>) -> Self::Future {
        let replies = request
            .into_inner()
            .map(|m| m.map(|m| Msg::new(format!("echo: {}", m.text), m.n)));
        std::future::ready(Ok(Response::new(Box::pin(replies) as MsgStream)))
    }
}

/// The HTTP/2 transport under [`GrpcClient`]: hyper's client, h2c prior knowledge.
type H2c = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    tonic::body::Body,
>;

/// A tonic client over h2c prior knowledge.
///
/// It runs on hyper's client rather than tonic's `Channel` on purpose: `Channel` enforces
/// `grpc-timeout` itself, which would hide whether the proxy honours it. With this client
/// a deadline is only ever enforced by the other side.
#[derive(Clone)]
pub struct GrpcClient {
    grpc: tonic::client::Grpc<H2c>,
}

impl GrpcClient {
    pub async fn connect(addr: SocketAddr) -> GrpcClient {
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
        let origin = http::Uri::try_from(format!("http://{addr}")).expect("origin");
        GrpcClient {
            grpc: tonic::client::Grpc::with_origin(client, origin),
        }
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unknown(format!("channel not ready: {e}")))
    }

    fn path(path: &str) -> PathAndQuery {
        PathAndQuery::try_from(path.to_string()).expect("valid gRPC path")
    }

    /// A unary call to `path` (e.g. `/sinew.test.Echo/Unary`).
    pub async fn unary(&mut self, path: &str, req: Request<Msg>) -> Result<Response<Msg>, Status> {
        self.ready().await?;
        self.grpc
            .unary(req, Self::path(path), ProstCodec::<Msg, Msg>::default())
            .await
    }

    pub async fn server_streaming(
        &mut self,
        path: &str,
        req: Request<Msg>,
    ) -> Result<Response<Streaming<Msg>>, Status> {
        self.ready().await?;
        self.grpc
            .server_streaming(req, Self::path(path), ProstCodec::<Msg, Msg>::default())
            .await
    }

    pub async fn client_streaming<S>(
        &mut self,
        path: &str,
        req: Request<S>,
    ) -> Result<Response<Msg>, Status>
    where
        S: Stream<Item = Msg> + Send + 'static,
    {
        self.ready().await?;
        self.grpc
            .client_streaming(req, Self::path(path), ProstCodec::<Msg, Msg>::default())
            .await
    }

    pub async fn streaming<S>(
        &mut self,
        path: &str,
        req: Request<S>,
    ) -> Result<Response<Streaming<Msg>>, Status>
    where
        S: Stream<Item = Msg> + Send + 'static,
    {
        self.ready().await?;
        self.grpc
            .streaming(req, Self::path(path), ProstCodec::<Msg, Msg>::default())
            .await
    }
}

/// `tests/grpc/health_server.py`: grpcio serving `grpc.health.v1.Health` (the
/// `grpcio-health-checking` package's servicer) for one service, and that service's
/// `Unary` method answering with the server's name (a `Msg` whose `text` is the name).
pub struct PythonHealthServer {
    pub addr: SocketAddr,
    stdin: std::process::ChildStdin,
    replies: std::io::Lines<BufReader<std::process::ChildStdout>>,
    _child: crate::ChildGuard,
}

impl PythonHealthServer {
    /// Starts it, SERVING `service`, and waits until it listens.
    pub fn start(name: &str, service: &str) -> PythonHealthServer {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc/health_server.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .args([name, service])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("python3 runs (Debian package python3)");
        let stdin = child.stdin.take().expect("stdin");
        let mut replies = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let child = crate::ChildGuard(child);
        let first = replies.next().and_then(Result::ok).unwrap_or_default();
        let port: u16 = first
            .strip_prefix("LISTENING ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "the Python gRPC health server did not start (got {first:?}); it needs \
                     `pip install grpcio grpcio-health-checking`, which scripts/test runs"
                )
            });
        PythonHealthServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            stdin,
            replies,
            _child: child,
        }
    }

    /// Sets the service's status to SERVING (`true`) or NOT_SERVING, and waits until the
    /// health service has it.
    pub fn set_serving(&mut self, serving: bool) {
        let status = if serving { "SERVING" } else { "NOT_SERVING" };
        writeln!(self.stdin, "{status}").expect("write to the health server");
        self.stdin.flush().expect("flush");
        let reply = self.replies.next().and_then(Result::ok).unwrap_or_default();
        assert_eq!(reply, format!("SET {status}"), "the health server's reply");
    }
}
