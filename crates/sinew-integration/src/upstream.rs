//! An upstream HTTP server for tests that does what the request asks:
//!
//! - by default answers 200 with its name as the body;
//! - `x-test-status: N` answers status N;
//! - `x-test-delay-ms: N` waits N ms before answering;
//! - `x-test-close: 1` closes the connection without answering;
//! - `x-test-echo: 1` answers with the request head as text: the request line
//!   (`METHOD PATH-AND-QUERY VERSION`) then `name: value` lines, lowercase names;
//! - `x-test-body-bytes: N` answers N bytes of `x`.
//!
//! It counts connections and requests, and can stop accepting (`stop`) and start again
//! on the same port (`restart`), to play a dying endpoint.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[derive(Default)]
pub struct Counters {
    pub connections: AtomicUsize,
    pub requests: AtomicUsize,
}

pub struct Upstream {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Upstream {
    /// Starts on an ephemeral loopback port (HTTP/1.1 and h2c).
    pub async fn start(name: &'static str) -> Upstream {
        Self::start_on(name, "127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(name: &'static str, addr: SocketAddr) -> Upstream {
        let listener = TcpListener::bind(addr).await.expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(Counters::default());
        let accept = tokio::spawn(accept_loop(listener, name, counters.clone()));
        Upstream {
            name,
            addr,
            counters,
            accept: Mutex::new(Some(accept)),
        }
    }

    pub fn connections(&self) -> usize {
        self.counters.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.counters.requests.load(Ordering::SeqCst)
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
        )));
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(listener: TcpListener, name: &'static str, counters: Arc<Counters>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        counters.connections.fetch_add(1, Ordering::SeqCst);
        let counters = counters.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let counters = counters.clone();
                async move {
                    counters.requests.fetch_add(1, Ordering::SeqCst);
                    answer(name, req).await
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
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
    if let Some(ms) = header("x-test-delay-ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if header("x-test-close").is_some() {
        // An error from the service makes hyper drop the connection without a response.
        return Err(std::io::Error::other("closing as asked"));
    }
    let status = header("x-test-status")
        .and_then(|v| v.parse().ok())
        .and_then(|s: u16| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
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
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert("x-upstream", http::HeaderValue::from_static(name));
    Ok(resp)
}
