//! One call's life: routed by the listener's route table, sent to an endpoint of its
//! cluster, retried and timed out by its route, its response or the proxy's own error
//! returned with the client's request id.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use sinew_codec::rpc::{
    CallInfo, Frame, FrameKind, ProxyError, ResponseClass, REPLY_CONTEXT_BYTES,
};
use sinew_router::{Action, RequestView};
use sinew_upstream::Outcome;

use super::upstream::{connection, CallError};
use crate::config::snapshot::RpcProxy;

/// The HTTP status a response class counts as, for retry conditions (`5xx`,
/// `gateway-error`, `retriable-status-codes`) and outlier detection: a server that
/// cannot take the call is a 503, a timeout a 504, any other error a 500.
fn status_of(class: ResponseClass) -> StatusCode {
    match class {
        ResponseClass::Success => StatusCode::OK,
        ResponseClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ResponseClass::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ResponseClass::ServerError | ResponseClass::Error => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The headers routing sees: the call's own, then `version` and `group` when the
/// protocol carries them apart from its headers.
fn routing_headers(info: &CallInfo) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(info.headers.len() + 2);
    let mut add = |name: &str, value: &str| {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            if !headers.contains_key(&n) {
                headers.insert(n, v);
            }
        }
    };
    for (name, value) in &info.headers {
        add(name, value);
    }
    if !info.version.is_empty() {
        add("version", &info.version);
    }
    if !info.group.is_empty() {
        add("group", &info.group);
    }
    headers
}

/// Runs one call; returns what goes back to the client (nothing for a one-way call).
pub(super) async fn call(config: &RpcProxy, frame: Frame) -> Option<Bytes> {
    let codec = config.codec;
    let oneway = frame.kind == FrameKind::OneWay;
    let downstream_id = frame.request_id;
    let fail = |frame: &Frame, error: ProxyError, message: &str| {
        (!oneway).then(|| codec.error_reply(frame, error, message))
    };
    // What the proxy's own answers are made from, kept whatever happens to the frame.
    let head = Frame {
        kind: frame.kind,
        request_id: downstream_id,
        bytes: BytesMut::from(&frame.bytes[..frame.bytes.len().min(REPLY_CONTEXT_BYTES)]),
    };
    let info = codec.call_info(&frame);
    let headers = routing_headers(&info);
    let path = format!("/{}", info.method);
    let routes = &config.routes;
    let route = routes.table.virtual_host(&info.service).and_then(|vhost| {
        vhost.route(&RequestView {
            method: &Method::POST,
            path: &path,
            query: None,
            headers: &headers,
        })
    });
    let Some(route) = route else {
        tracing::debug!(service = %info.service, method = %info.method, "no RPC route");
        return fail(
            &head,
            ProxyError::NoRoute,
            "no route for this service and method",
        );
    };
    let target = match &route.action {
        Action::Cluster(t) => *t,
        Action::Weighted(w) => w.pick(),
        Action::Redirect(_) | Action::DirectResponse { .. } => {
            return fail(&head, ProxyError::NoRoute, "the route has no cluster");
        }
    };
    let (cluster, subset) = routes.target(target);
    let timeout = route.timeout.unwrap_or(config.request_timeout);
    let deadline = (!timeout.is_zero()).then(|| tokio::time::Instant::now() + timeout);
    let policy = route.retry.as_ref();
    let tries = 1 + policy.map_or(0, |p| p.num_retries);
    // Kept for a retry; without one the frame itself goes.
    let original: Option<Bytes> = policy.map(|_| Bytes::copy_from_slice(&frame.bytes));
    let mut frame = Some(frame);
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut last = (ProxyError::Unavailable, "no endpoint could take the call");
    for attempt in 0..tries {
        if attempt > 0 {
            let Some(p) = policy else { break };
            let Some(_retry_slot) = cluster.breakers().try_retry() else {
                break;
            };
            tokio::time::sleep(p.backoff(attempt)).await;
        }
        let this = match (frame.take(), &original) {
            (Some(f), _) => f,
            (None, Some(bytes)) => Frame {
                kind: if oneway {
                    FrameKind::OneWay
                } else {
                    FrameKind::Request
                },
                request_id: downstream_id,
                bytes: BytesMut::from(&bytes[..]),
            },
            (None, None) => break,
        };
        let Some(_request_slot) = cluster.breakers().try_request() else {
            last = (
                ProxyError::Overloaded,
                "the cluster's circuit breaker is open",
            );
            break;
        };
        let Some(endpoint) = cluster.pick(subset, None, &tried, 1) else {
            break;
        };
        tried.push(endpoint.state.address);
        let conn = match connection(&endpoint.state, codec).await {
            Ok(c) => c,
            Err(_) => {
                cluster.report(&endpoint, Outcome::ConnectFailure);
                last = (ProxyError::Unavailable, "the upstream could not be reached");
                frame = Some(this);
                if policy.is_some_and(|p| p.retry_on_connect_failure()) {
                    continue;
                }
                break;
            }
        };
        let sent = conn.call(this);
        let per_try = policy.and_then(|p| p.per_try_timeout);
        let limit = match (deadline, per_try) {
            (Some(d), Some(t)) => Some(d.min(tokio::time::Instant::now() + t)),
            (Some(d), None) => Some(d),
            (None, Some(t)) => Some(tokio::time::Instant::now() + t),
            (None, None) => None,
        };
        let answered = match limit {
            Some(at) => tokio::time::timeout_at(at, sent).await.ok(),
            None => Some(sent.await),
        };
        match answered {
            Some(Ok(None)) => return None,
            Some(Ok(Some(mut response))) => {
                let class = codec.response_class(&response);
                let status = status_of(class);
                cluster.report(&endpoint, Outcome::Status(status.as_u16()));
                let again = attempt + 1 < tries
                    && class != ResponseClass::Success
                    && policy.is_some_and(|p| p.retry_on_status(status));
                if !again {
                    codec.set_request_id(&mut response, downstream_id);
                    return Some(response.bytes.freeze());
                }
                last = (
                    ProxyError::Unavailable,
                    "the upstream answered with an error",
                );
            }
            Some(Err(CallError::Reset | CallError::Connect)) => {
                cluster.report(&endpoint, Outcome::Reset);
                last = (
                    ProxyError::Unavailable,
                    "the upstream connection closed before the response",
                );
                if !policy.is_some_and(|p| p.retry_on_reset()) {
                    break;
                }
            }
            None => {
                cluster.report(&endpoint, Outcome::Timeout);
                last = (
                    ProxyError::Timeout,
                    "no response within the route's timeout",
                );
                let overall = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
                if overall || !policy.is_some_and(|p| p.retry_on_per_try_timeout()) {
                    break;
                }
            }
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            last = (
                ProxyError::Timeout,
                "no response within the route's timeout",
            );
            break;
        }
    }
    fail(&head, last.0, last.1)
}
