//! The admin API's access log (`admin.access_log`; Envoy's `admin.access_log_path`): one
//! entry per admin request, written by the same sinks and formats as a listener's logs.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use http::header::HOST;
use http::Request;
use hyper::body::{Body, Incoming};

use super::{Admin, Reply};
use crate::filters::access_log::{AccessLogs, Entry};
use crate::stream::flags::ResponseFlags;

/// Answers `req` and records it in `logs`.
pub(super) async fn logged(
    admin: &Admin,
    req: Request<Incoming>,
    logs: &AccessLogs,
    peer: SocketAddr,
    local: SocketAddr,
) -> Reply {
    let start = SystemTime::now();
    let began = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path_and_query().cloned();
    let version = req.version();
    let authority = req.headers().get(HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
    });
    let request_headers = logs.capture_request_headers(req.headers());
    let bytes_received = req.body().size_hint().exact().unwrap_or(0);
    let reply = admin.handle(req).await;
    let bytes_sent = reply.body().size_hint().exact().unwrap_or(0);
    let took = began.elapsed();
    logs.record(Entry {
        start,
        method: Some(method),
        path,
        authority,
        tls: false,
        version: Some(version),
        protocol: None,
        status: Some(reply.status().as_u16()),
        flags: ResponseFlags::default(),
        details: None,
        bytes_received,
        bytes_sent,
        duration: took,
        response_duration: Some(took),
        upstream_host: None,
        upstream_cluster: None,
        downstream_remote: peer,
        downstream_local: local,
        peer_identity: None,
        request_headers,
        response_headers: logs.capture_response_headers(reply.headers()),
    });
    reply
}
