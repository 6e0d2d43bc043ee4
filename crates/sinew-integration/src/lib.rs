//! Shared kit for Sinew's integration tests: a proxy started in-process from YAML, upstream
//! servers that misbehave on command, and a plain HTTP client.
//!
//! Everything binds port 0 on loopback, so tests run in parallel and leave nothing behind.

pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub use upstream::Upstream;

/// A proxy running in this process.
pub struct TestProxy {
    pub proxy: Arc<sinew_proxy::Proxy>,
}

impl TestProxy {
    /// Starts a proxy on `yaml`; panics with the diagnostics if the config is refused.
    pub async fn start(yaml: &str) -> TestProxy {
        let loaded = sinew_config::load_str("test.yaml", yaml)
            .unwrap_or_else(|d| panic!("test config refused:\n{d}\n---\n{yaml}"));
        let proxy = sinew_proxy::Proxy::start(&loaded)
            .await
            .unwrap_or_else(|d| panic!("test config refused:\n{d}\n---\n{yaml}"));
        TestProxy { proxy }
    }

    /// The bound address of a listener.
    pub async fn addr(&self, listener: &str) -> SocketAddr {
        self.proxy
            .listener_address(listener)
            .await
            .unwrap_or_else(|| panic!("no listener named {listener}"))
    }

    /// Reloads with new YAML; returns the diagnostics if refused.
    pub async fn reload(&self, yaml: &str) -> Result<u64, String> {
        let loaded = sinew_config::load_str("test.yaml", yaml).map_err(|d| d.to_string())?;
        self.proxy.reload(&loaded).await.map_err(|d| d.to_string())
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An HTTP/1.1 (or, with `http2_only`, h2c prior-knowledge) client with keep-alive.
#[derive(Clone)]
pub struct TestClient {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl TestClient {
    pub fn http1() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub fn http2() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    /// GET `http://{addr}{path}` with the given extra headers (`Host` among them if set).
    pub async fn get(&self, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(Method::GET, addr, path, headers, Bytes::new())
            .await
    }

    pub async fn send(
        &self,
        method: Method,
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body)).expect("valid request");
        let resp = tokio::time::timeout(Duration::from_secs(20), self.client.request(req))
            .await
            .expect("request timed out")
            .expect("request failed");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        }
    }
}

/// Polls `check` every 20 ms until it holds or `deadline` passes.
pub async fn eventually(deadline: Duration, mut check: impl FnMut() -> bool) -> bool {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The release binary built by `scripts/test` (or `cargo build --release`).
pub fn sinew_binary() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("SINEW_BIN") {
        return p.into();
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let bin = target.join("release/sinew");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --release -p sinew` first (scripts/test does)",
        bin.display()
    );
    bin
}
