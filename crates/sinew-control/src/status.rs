//! The control plane's admin API: `GET /status` (every node: what it was sent, what it
//! ACKed, its last NACK; and the catalog's problems), `GET /ready` (503 until the
//! first build), `GET /ca` (the mesh CA: roots, counts, the last certificates issued;
//! 404 without a CA) and `GET /metrics` (the CA's counts in Prometheus text).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::task::JoinHandle;

use crate::server::Status;

pub async fn serve(
    address: SocketAddr,
    status: Arc<Status>,
    problems: Arc<Mutex<Vec<String>>>,
    built: tokio::sync::watch::Receiver<Arc<crate::snapshot::Built>>,
    ca: Option<Arc<crate::ca::MeshCa>>,
) -> Result<(SocketAddr, JoinHandle<()>), String> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address} for the admin API: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let status = status.clone();
            let problems = problems.clone();
            let built = built.clone();
            let ca = ca.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let mut content_type = "application/json";
                    let (code, body) = match request.uri().path() {
                        "/ca" => match &ca {
                            Some(ca) => (200, format!("{:#}\n", ca.view())),
                            None => (404, "no mesh CA is configured (ca:)\n".to_string()),
                        },
                        "/metrics" => {
                            content_type = "text/plain; version=0.0.4";
                            let mut text = String::new();
                            if let Some(ca) = &ca {
                                ca.metrics(&mut text);
                            }
                            (200, text)
                        }
                        "/status" => {
                            let problems = problems.lock().expect("problems lock").clone();
                            (
                                200,
                                json!({"nodes": status.snapshot(), "problems": problems})
                                    .to_string(),
                            )
                        }
                        // Ready once the first build is out (every registry heard from).
                        "/ready" if built.borrow().ready => (200, "LIVE\n".to_string()),
                        "/ready" => (503, "STARTING\n".to_string()),
                        _ => (404, "not found\n".to_string()),
                    };
                    if !body.starts_with('{') && content_type == "application/json" {
                        content_type = "text/plain";
                    }
                    let response = http::Response::builder()
                        .status(code)
                        .header(http::header::CONTENT_TYPE, content_type)
                        .body(Full::new(Bytes::from(body)))
                        .expect("a response");
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((bound, task))
}
