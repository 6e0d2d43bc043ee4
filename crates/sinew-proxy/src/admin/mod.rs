//! The admin HTTP server (Envoy's admin interface): readiness, metrics, cluster state,
//! the running config, log levels and drain, on its own address (config `admin`).
//!
//! It runs apart from the data plane — its own accept loop, untouched by a drain — so an
//! operator can watch a drain finish through it. Endpoints are grouped one file each:
//! [`health`] (readiness, health-check failing, drain, server info), [`stats`] (`/metrics`,
//! `/stats`), [`clusters`], [`certs`], [`config_dump`], [`logging`], [`runtime`].
//!
//! Errors: a wrong method is 405 (with `Allow`), an unknown path 404, a bad query 400
//! with a message saying what was wrong.

mod access_log;
mod certs;
mod clusters;
mod config_dump;
mod health;
mod logging;
pub mod runtime;
pub mod scrape;
mod stats;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub use logging::LogControl;

use crate::Proxy;

/// What the admin server answers with.
pub(crate) type Reply = Response<Full<Bytes>>;

/// A running admin server.
pub struct AdminServer {
    pub address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Binds `address` and serves the admin API for `proxy`. `log` changes log levels for
    /// `/logging`; without it `/logging` answers 501.
    pub async fn start(
        proxy: Arc<Proxy>,
        address: SocketAddr,
        log: Option<Arc<dyn LogControl>>,
    ) -> std::io::Result<AdminServer> {
        Self::start_logged(proxy, address, log, &[]).await
    }

    /// As [`AdminServer::start`], writing one line per request to `access_log` (the
    /// config's `admin.access_log`, Envoy's `admin.access_log_path`).
    pub async fn start_logged(
        proxy: Arc<Proxy>,
        address: SocketAddr,
        log: Option<Arc<dyn LogControl>>,
        access_log: &[sinew_config::access_log::AccessLog],
    ) -> std::io::Result<AdminServer> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        tracing::info!(%address, "admin server listening");
        let access_logs = crate::filters::access_log::AccessLogs::compile(Some(access_log));
        let admin = Arc::new(Admin { proxy, log });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let admin = admin.clone();
                let access_logs = access_logs.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let admin = admin.clone();
                        let access_logs = access_logs.clone();
                        async move {
                            let reply = match access_logs {
                                None => admin.handle(req).await,
                                Some(logs) => {
                                    access_log::logged(&admin, req, &logs, peer, address).await
                                }
                            };
                            Ok::<_, Infallible>(reply)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(AdminServer { address, task })
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) struct Admin {
    pub proxy: Arc<Proxy>,
    pub log: Option<Arc<dyn LogControl>>,
}

impl Admin {
    async fn handle(&self, req: Request<Incoming>) -> Reply {
        let query = Query::parse(req.uri().query());
        let method = req.method().clone();
        let accept = req
            .headers()
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let path = req.uri().path();
        let (allowed, reply): (&[Method], Option<Reply>) = match path {
            "/" => (&[Method::GET], get(&method).then(index)),
            "/ready" => (&[Method::GET], get(&method).then(|| health::ready(self))),
            "/healthz" => (&[Method::GET], get(&method).then(|| health::healthz(self))),
            "/server_info" => (
                &[Method::GET],
                get(&method).then(|| health::server_info(self)),
            ),
            "/healthcheck/fail" => (
                &[Method::POST],
                (method == Method::POST).then(|| health::set_failed(self, true)),
            ),
            "/healthcheck/ok" => (
                &[Method::POST],
                (method == Method::POST).then(|| health::set_failed(self, false)),
            ),
            "/drain" => (
                &[Method::POST],
                (method == Method::POST).then(|| health::drain(self, &query)),
            ),
            "/metrics" | "/stats/prometheus" => (
                &[Method::GET],
                get(&method).then(|| stats::metrics(self, &accept, &query)),
            ),
            "/stats" => (&[Method::GET], get(&method).then(|| stats::json(self))),
            "/clusters" => (
                &[Method::GET],
                get(&method).then(|| clusters::clusters(self, &query)),
            ),
            "/certs" => (&[Method::GET], get(&method).then(|| certs::certs(self))),
            "/config_dump" => (
                &[Method::GET],
                get(&method).then(|| config_dump::config_dump(self)),
            ),
            "/logging" => (
                &[Method::GET, Method::POST],
                match method {
                    Method::GET | Method::HEAD => Some(logging::show(self)),
                    Method::POST => Some(logging::set(self, &query)),
                    _ => None,
                },
            ),
            "/runtime" => (&[Method::GET], get(&method).then(runtime::show)),
            "/runtime_modify" => (
                &[Method::POST],
                (method == Method::POST).then(|| runtime::modify(self, &query)),
            ),
            _ => {
                return text(
                    StatusCode::NOT_FOUND,
                    format!("no admin endpoint {path}; GET / lists them\n"),
                )
            }
        };
        match reply {
            Some(r) => r,
            None => {
                let allow: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
                let mut r = text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{path} takes {}\n", allow.join(", ")),
                );
                if let Ok(v) = allow.join(", ").parse() {
                    r.headers_mut().insert(ALLOW, v);
                }
                r
            }
        }
    }
}

fn get(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

fn index() -> Reply {
    text(
        StatusCode::OK,
        "GET  /ready              200 LIVE when serving, 503 when draining or failed\n\
         GET  /healthz            200 while the process runs\n\
         GET  /metrics            Prometheus text; OpenMetrics for Accept: application/openmetrics-text (?format=text|openmetrics)\n\
         GET  /stats              every metric as JSON\n\
         GET  /clusters           endpoints with health, weight, outlier state (?format=text)\n\
         GET  /config_dump        the running config as JSON, secrets redacted\n\
         GET  /server_info        version, uptime, config version, state\n\
         GET  /logging            the current log filter\n\
         POST /logging?level=L    set every module's level; ?MODULE=L for one module\n\
         GET  /runtime            an Envoy bootstrap's runtime: layers and values (JSON)\n\
         POST /runtime_modify?K=V set runtime key K in the admin layer (empty V removes it)\n\
         POST /healthcheck/fail   fail /ready (keep serving)\n\
         POST /healthcheck/ok     undo /healthcheck/fail\n\
         POST /drain              drain as SIGTERM does (?timeout=10s)\n"
            .to_string(),
    )
}

/// A query string as (name, value) pairs, percent-decoding not needed for the values the
/// admin API takes (levels, module paths, durations, format names).
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Query {
        Query(
            query
                .unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (p.to_string(), String::new()),
                })
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

pub(crate) fn text(status: StatusCode, body: String) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Reply {
    let mut body = serde_json::to_string_pretty(value).unwrap_or_default();
    body.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}
