//! The control plane's admin API: `GET /status` (every node: what it was sent, what it
//! ACKed, its last NACK; and the catalog's problems) and `GET /ready` (503 until the
//! first build).

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
            tokio::spawn(async move {
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let (code, body) = match request.uri().path() {
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
                    let response = http::Response::builder()
                        .status(code)
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
