//! One call's life, in HTTP's order of policies: authorization (when the listener's
//! policies read requests), routing by the listener's route table, the route's local
//! rate limits, its fault injection, its `request_headers` edits (where the codec can
//! re-encode headers), copies to its mirrors, then an endpoint of its
//! cluster with its retries and timeouts; the response (or the proxy's own error) goes
//! back with the client's request id, and the call is counted and logged.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use sinew_codec::rpc::{
    CallInfo, Frame, FrameKind, ProxyError, ResponseClass, RpcCodec, REPLY_CONTEXT_BYTES,
};
use sinew_router::{Action, RequestView};
use sinew_upstream::Outcome;

use super::outcome::{abort_error, proxy_status, upstream_status, Ended};
use super::record::{Caller, Trail};
use super::upstream::{connection, CallError};
use crate::config::snapshot::RpcProxy;
use crate::filters::authz::{RbacDenied, Verdict};
use crate::stream::flags::ResponseFlags;

/// The headers routing (and authorization, rate-limit keys, fault headers, the access
/// log) see: the call's own, then `version` and `group` when the protocol carries them
/// apart from its headers.
pub(super) fn routing_headers(info: &CallInfo) -> HeaderMap {
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
pub(super) async fn call(config: &RpcProxy, caller: &Caller, frame: Frame) -> Option<Bytes> {
    let started = Instant::now();
    let received = frame.bytes.len();
    let info = config.codec.call_info(&frame);
    let headers = routing_headers(&info);
    let path = format!("/{}", info.method);
    let mut trail = Trail::new();
    let reply = serve(config, caller, frame, &info, &headers, &path, &mut trail).await;
    let sent = reply.as_ref().map_or(0, Bytes::len);
    super::record::finish(
        config,
        caller,
        super::record::Call {
            service: &info.service,
            path: &path,
            headers: &headers,
            started,
            received,
            sent,
        },
        trail,
    );
    reply
}

/// What the proxy's own answers are made from: the front of the request, kept whatever
/// happens to the frame.
struct Local {
    codec: &'static dyn RpcCodec,
    head: Frame,
    oneway: bool,
}

impl Local {
    /// The protocol's error for `error`, noted in `trail` with `status` and `flags`;
    /// nothing for a one-way call.
    fn error(
        &self,
        trail: &mut Trail<'_>,
        error: ProxyError,
        status: StatusCode,
        flags: ResponseFlags,
        message: &str,
    ) -> Option<Bytes> {
        trail.ended = Ended::Proxy(error);
        trail.status = status;
        trail.flags = trail.flags | flags;
        (!self.oneway).then(|| self.codec.error_reply(&self.head, error, message))
    }
}

async fn serve<'a>(
    config: &'a RpcProxy,
    caller: &Caller,
    mut frame: Frame,
    info: &CallInfo,
    headers: &HeaderMap,
    path: &str,
    trail: &mut Trail<'a>,
) -> Option<Bytes> {
    let codec = config.codec;
    let oneway = frame.kind == FrameKind::OneWay;
    let downstream_id = frame.request_id;
    let local = Local {
        codec,
        head: Frame {
            kind: frame.kind,
            request_id: downstream_id,
            bytes: BytesMut::from(&frame.bytes[..frame.bytes.len().min(REPLY_CONTEXT_BYTES)]),
        },
        oneway,
    };
    if let (Some(authz), true) = (&config.authorization, config.authorize_calls) {
        let verdict = authz.check_call(
            caller.peer,
            caller.local.port(),
            caller.identity.as_deref(),
            &info.service,
            path,
            headers,
        );
        if let Verdict::Denied(policy) = verdict {
            tracing::debug!(
                listener = %config.listener,
                policy = policy.as_deref().unwrap_or("-"),
                peer = %caller.peer,
                service = %info.service,
                method = %info.method,
                "RPC call denied by authorization"
            );
            trail.denied = Some(RbacDenied(policy));
            return local.error(
                trail,
                ProxyError::Denied,
                StatusCode::FORBIDDEN,
                ResponseFlags::RBAC_DENIED,
                "denied by authorization",
            );
        }
    }
    let routes = &config.routes;
    let routed = routes.table.virtual_host(&info.service).and_then(|vhost| {
        let route = vhost.route(&RequestView {
            method: &Method::POST,
            path,
            query: None,
            headers,
        })?;
        Some((vhost, route))
    });
    let Some((vhost, route)) = routed else {
        tracing::debug!(service = %info.service, method = %info.method, "no RPC route");
        return local.error(
            trail,
            ProxyError::NoRoute,
            StatusCode::NOT_FOUND,
            ResponseFlags::NO_ROUTE,
            "no route for this service and method",
        );
    };
    trail.route_id = Some(route.id);
    if let Some(limits) = &config.rate_limits {
        let checked = limits.check_call(
            routes.table.virtual_hosts(),
            vhost,
            route,
            headers,
            caller.peer.ip(),
        );
        if Box::pin(checked).await.is_err() {
            return local.error(
                trail,
                ProxyError::Overloaded,
                StatusCode::TOO_MANY_REQUESTS,
                ResponseFlags::RATE_LIMITED,
                "rate limited",
            );
        }
    }
    let target = match &route.action {
        Action::Cluster(t) => *t,
        Action::Weighted(w) => w.pick(),
        Action::Redirect(_) | Action::DirectResponse { .. } => {
            return local.error(
                trail,
                ProxyError::NoRoute,
                StatusCode::NOT_FOUND,
                ResponseFlags::NO_ROUTE,
                "the route has no cluster",
            );
        }
    };
    // Held until the delay is over or the abort answered: it counts towards
    // `max_active_faults`.
    if let Some(injection) = route.fault.as_ref().and_then(|f| f.decide(headers)) {
        if let Some(delay) = injection.delay {
            // Boxed: a timer inline would size every call's future, faulted or not.
            Box::pin(tokio::time::sleep(delay)).await;
            trail.flags = trail.flags | ResponseFlags::DELAY_INJECTED;
        }
        if let Some(abort) = injection.abort {
            let (error, status) = abort_error(abort);
            return local.error(
                trail,
                error,
                status,
                ResponseFlags::FAULT_INJECTED,
                "fault filter abort",
            );
        }
    }
    if !(route.request_headers.is_empty() && vhost.request_headers.is_empty()) {
        // The route's edits, then the virtual host's, as for HTTP.
        let edited = codec.edit_headers(&mut frame, &mut |pairs| {
            route.request_headers.apply_pairs(pairs);
            vhost.request_headers.apply_pairs(pairs);
        });
        if !edited {
            tracing::debug!(
                protocol = codec.name(),
                "request_headers not applied: the protocol cannot edit this call's headers"
            );
        }
    }
    let (cluster, subset) = routes.target(target);
    let timeout = route.timeout.unwrap_or(config.request_timeout);
    if !route.mirrors.is_empty() {
        super::mirror::send_copies(&route.mirrors, routes, &frame, codec, timeout);
    }
    let cluster_metrics = routes.metrics.as_ref().and_then(|m| m.target(target));
    let deadline = (!timeout.is_zero()).then(|| tokio::time::Instant::now() + timeout);
    let policy = route.retry.as_ref();
    let tries = 1 + policy.map_or(0, |p| p.num_retries);
    // Kept for a retry; without one the frame itself goes.
    let original: Option<Bytes> = policy.map(|_| Bytes::copy_from_slice(&frame.bytes));
    let mut frame = Some(frame);
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut last = (
        ProxyError::Unavailable,
        ResponseFlags::NO_HEALTHY_UPSTREAM,
        "no endpoint could take the call",
    );
    for attempt in 0..tries {
        if attempt > 0 {
            let Some(p) = policy else { break };
            let Some(_retry_slot) = cluster.breakers().try_retry() else {
                break;
            };
            if let Some(m) = cluster_metrics {
                m.retries.inc();
            }
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
                ResponseFlags::UPSTREAM_OVERFLOW,
                "the cluster's circuit breaker is open",
            );
            break;
        };
        let Some(endpoint) = cluster.pick(subset, None, &tried, 1) else {
            break;
        };
        tried.push(endpoint.state.address);
        trail.upstream = Some((endpoint.state.address, cluster));
        let conn = match connection(&endpoint.state, codec).await {
            Ok(c) => c,
            Err(_) => {
                cluster.report(&endpoint, Outcome::ConnectFailure);
                if let Some(m) = cluster_metrics {
                    m.connect_failures.inc();
                }
                last = (
                    ProxyError::Unavailable,
                    ResponseFlags::UPSTREAM_CONNECT_FAILURE,
                    "the upstream could not be reached",
                );
                frame = Some(this);
                if policy.is_some_and(|p| p.retry_on_connect_failure()) {
                    continue;
                }
                break;
            }
        };
        let sent_at = Instant::now();
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
            Some(Ok(None)) => {
                trail.ended = Ended::Sent;
                trail.status = StatusCode::OK;
                return None;
            }
            Some(Ok(Some(mut response))) => {
                let class = codec.response_class(&response);
                let status = upstream_status(class);
                cluster.report(&endpoint, Outcome::Status(status.as_u16()));
                if let Some(m) = cluster_metrics {
                    m.response(status, sent_at.elapsed());
                }
                let again = attempt + 1 < tries
                    && class != ResponseClass::Success
                    && policy.is_some_and(|p| p.retry_on_status(status));
                if !again {
                    codec.set_request_id(&mut response, downstream_id);
                    trail.ended = Ended::Upstream(class);
                    trail.status = status;
                    return Some(response.bytes.freeze());
                }
                last = (
                    ProxyError::Unavailable,
                    ResponseFlags::RETRY_LIMIT_EXCEEDED,
                    "the upstream answered with an error",
                );
            }
            Some(Err(CallError::Reset | CallError::Connect)) => {
                cluster.report(&endpoint, Outcome::Reset);
                last = (
                    ProxyError::Unavailable,
                    ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
                    "the upstream connection closed before the response",
                );
                if !policy.is_some_and(|p| p.retry_on_reset()) {
                    break;
                }
            }
            None => {
                cluster.report(&endpoint, Outcome::Timeout);
                if let Some(m) = cluster_metrics {
                    m.timeouts.inc();
                }
                last = (
                    ProxyError::Timeout,
                    ResponseFlags::UPSTREAM_TIMEOUT,
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
                ResponseFlags::UPSTREAM_TIMEOUT,
                "no response within the route's timeout",
            );
            break;
        }
    }
    let (error, flags, message) = last;
    local.error(trail, error, proxy_status(error), flags, message)
}
