//! An upstream HTTP server for tests that does what the request asks:
//!
//! - by default answers 200 with its name as the body;
//! - `x-test-status: N` answers status N;
//! - `x-test-delay-ms: N` waits N ms before answering;
//! - `x-test-close: 1` closes the connection without answering;
//! - `x-test-echo: 1` answers with the request head as text: the request line
//!   (`METHOD PATH-AND-QUERY VERSION`) then `name: value` lines, lowercase names;
//! - `x-test-body-bytes: N` answers N bytes of `x`;
//! - `x-test-echo-body: 1` answers with the request body, byte for byte;
//! - `x-test-response-header: name: value` (repeatable) adds that header to the response;
//! - `x-test-target: NAME` limits the status, delay and close directives above to the
//!   upstream called NAME (the others answer normally), so one request can make one
//!   endpoint of a cluster fail while the rest work.
//!
//! [`UpstreamOptions`] set behaviour for every request (a fixed delay, an HTTP/2 stream
//! limit). It counts connections (opened and still open) and requests, and can stop
//! accepting (`stop`) and start again on the same port (`restart`), to play a dying
//! endpoint.
//!
//! For health checkers it answers, apart from the requests above (and not counted with
//! them, but in `health_checks`): `GET /healthz` with 200 (or 503 after
//! `set_healthy(false)`), and the gRPC call `grpc.health.v1.Health/Check` (h2c) with
//! `SERVING` (or `NOT_SERVING`), its message encoded by prost.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[derive(Default)]
pub struct Counters {
    /// Connections accepted so far.
    pub connections: AtomicUsize,
    /// Connections accepted and not yet closed.
    pub open: AtomicUsize,
    pub requests: AtomicUsize,
    /// Health checks answered (`/healthz` and gRPC `Health/Check`).
    pub health_checks: AtomicUsize,
    /// What health checks are told; true unless `set_healthy(false)`.
    pub healthy: AtomicBool,
}

impl Counters {
    fn new() -> Self {
        Counters {
            healthy: AtomicBool::new(true),
            ..Counters::default()
        }
    }
}

/// Behaviour of an [`Upstream`] for every request, whatever its headers say.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpstreamOptions {
    /// Wait this long before answering any request.
    pub delay: Option<Duration>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS sent to HTTP/2 clients.
    pub h2_max_concurrent_streams: Option<u32>,
}

pub struct Upstream {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
    options: UpstreamOptions,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Upstream {
    /// Starts on an ephemeral loopback port (HTTP/1.1 and h2c).
    pub async fn start(name: &'static str) -> Upstream {
        Self::start_on(name, "127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(name: &'static str, addr: SocketAddr) -> Upstream {
        Self::start_with_options(name, addr, UpstreamOptions::default()).await
    }

    /// Starts on an ephemeral loopback port, answering every request after `delay`.
    pub async fn start_with_delay(name: &'static str, delay: Duration) -> Upstream {
        let options = UpstreamOptions {
            delay: Some(delay),
            ..UpstreamOptions::default()
        };
        Self::start_with_options(name, "127.0.0.1:0".parse().unwrap(), options).await
    }

    pub async fn start_with_options(
        name: &'static str,
        addr: SocketAddr,
        options: UpstreamOptions,
    ) -> Upstream {
        let listener = TcpListener::bind(addr).await.expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(Counters::new());
        let accept = tokio::spawn(accept_loop(listener, name, counters.clone(), options));
        Upstream {
            name,
            addr,
            counters,
            options,
            accept: Mutex::new(Some(accept)),
        }
    }

    pub fn connections(&self) -> usize {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// Connections open right now (accepted and not yet closed by either side).
    pub fn open_connections(&self) -> usize {
        self.counters.open.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.counters.requests.load(Ordering::SeqCst)
    }

    /// Makes health checks pass (`true`) or fail: `/healthz` answers 503 and gRPC
    /// `Health/Check` answers `NOT_SERVING`. Other requests are not affected.
    pub fn set_healthy(&self, healthy: bool) {
        self.counters.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Health checks answered so far.
    pub fn health_checks(&self) -> usize {
        self.counters.health_checks.load(Ordering::SeqCst)
    }

    /// Stops accepting and frees the port (open connections are not touched).
    pub fn stop(&self) {
        if let Some(h) = self.accept.lock().unwrap().take() {
            h.abort();
        }
    }

    /// Accepts again on the same port.
    pub async fn restart(&self) {
        self.stop();
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("rebind {}: {e}", self.addr),
            }
        };
        *self.accept.lock().unwrap() = Some(tokio::spawn(accept_loop(
            listener,
            self.name,
            self.counters.clone(),
            self.options,
        )));
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Decrements the open-connection count when a connection's task ends.
struct OpenGuard(Arc<Counters>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn accept_loop(
    listener: TcpListener,
    name: &'static str,
    counters: Arc<Counters>,
    options: UpstreamOptions,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        counters.connections.fetch_add(1, Ordering::SeqCst);
        counters.open.fetch_add(1, Ordering::SeqCst);
        let guard = OpenGuard(counters.clone());
        let counters = counters.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let service = service_fn(move |req| {
                let counters = counters.clone();
                async move {
                    if let Some(reply) = answer_health_check(&req, &counters) {
                        return Ok(reply);
                    }
                    counters.requests.fetch_add(1, Ordering::SeqCst);
                    if let Some(delay) = options.delay {
                        tokio::time::sleep(delay).await;
                    }
                    let reply = answer(name, req).await?;
                    Ok::<_, std::io::Error>(
                        reply.map(|b| b.map_err(|never| match never {}).boxed()),
                    )
                }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            if let Some(n) = options.h2_max_concurrent_streams {
                builder.http2().max_concurrent_streams(n);
            }
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `HealthCheckResponse` of grpc.health.v1 (status: 1 SERVING, 2 NOT_SERVING).
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

type AnyBody = BoxBody<Bytes, std::io::Error>;

/// The answer to a health check, or `None` for any other request.
fn answer_health_check(req: &Request<Incoming>, counters: &Counters) -> Option<Response<AnyBody>> {
    let healthy = counters.healthy.load(Ordering::SeqCst);
    let reply = match req.uri().path() {
        "/healthz" => {
            let status = if healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let mut reply = Response::new(
                Full::new(Bytes::from_static(b"health\n"))
                    .map_err(|never| match never {})
                    .boxed(),
            );
            *reply.status_mut() = status;
            reply
        }
        "/grpc.health.v1.Health/Check" => {
            let message = prost::Message::encode_to_vec(&HealthCheckResponse {
                status: if healthy { 1 } else { 2 },
            });
            let mut frame = vec![0u8];
            frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
            frame.extend_from_slice(&message);
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
                Ok(Frame::data(Bytes::from(frame))),
                Ok(Frame::trailers(trailers)),
            ];
            let mut reply =
                Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed());
            reply.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            reply
        }
        _ => return None,
    };
    counters.health_checks.fetch_add(1, Ordering::SeqCst);
    Some(reply)
}

async fn answer(
    name: &'static str,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    // Directives addressed to another upstream are ignored here.
    let mine = header("x-test-target").is_none_or(|t| t == name);
    if let Some(ms) = header("x-test-delay-ms")
        .filter(|_| mine)
        .and_then(|v| v.parse().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if mine && header("x-test-close").is_some() {
        // An error from the service makes hyper drop the connection without a response.
        return Err(std::io::Error::other("closing as asked"));
    }
    let status = header("x-test-status")
        .filter(|_| mine)
        .and_then(|v| v.parse().ok())
        .and_then(|s: u16| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let extra: Vec<(http::HeaderName, http::HeaderValue)> = req
        .headers()
        .get_all("x-test-response-header")
        .iter()
        .filter_map(|v| {
            let (n, v) = v.to_str().ok()?.split_once(':')?;
            Some((n.trim().parse().ok()?, v.trim().parse().ok()?))
        })
        .collect();
    let finish = move |mut resp: Response<Full<Bytes>>| {
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert("x-upstream", http::HeaderValue::from_static(name));
        for (n, v) in extra {
            h.append(n, v);
        }
        resp
    };
    if header("x-test-echo-body").is_some() {
        let body = req
            .into_body()
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        return Ok(finish(Response::new(Full::new(body))));
    }
    let body = if header("x-test-echo").is_some() {
        let mut text = format!(
            "{} {} {:?}\n",
            req.method(),
            req.uri().path_and_query().map_or("/", |p| p.as_str()),
            req.version()
        );
        for (k, v) in req.headers() {
            let _ = writeln!(text, "{}: {}", k, v.to_str().unwrap_or("<binary>"));
        }
        Bytes::from(text)
    } else if let Some(n) = header("x-test-body-bytes").and_then(|v| v.parse().ok()) {
        Bytes::from(vec![b'x'; n])
    } else {
        Bytes::from(format!("{name}\n"))
    };
    // Drain the request body so keep-alive works.
    let _ = req.into_body().collect().await;
    Ok(finish(Response::new(Full::new(body))))
}
